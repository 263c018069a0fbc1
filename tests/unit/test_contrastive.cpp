// Contrastive search against an independent recomputation of its formula on the toy model.
#include "dk_test.hpp"
#include "naive_processors.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_contrastive {

using namespace decodekit;
using dk_test::toy_model;

namespace {

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
    double ab = 0, aa = 0, bb = 0;
    for (std::size_t i = 0; i < a.size(); ++i) {
        ab += double(a[i]) * b[i];
        aa += double(a[i]) * a[i];
        bb += double(b[i]) * b[i];
    }
    return ab / std::sqrt(aa * bb);
}

// The formula of docs/semantics.md#contrastive-search, written from scratch with the toy model's
// helpers. `pr`: processors applied to each step's logits before the candidates are chosen.
std::vector<token_id> expected(const toy_model& m, std::vector<token_id> seq, std::size_t k,
                               double alpha, std::size_t max_new, token_id eos,
                               const dk_test::naive_processors& pr = {}) {
    const std::size_t prompt_length = seq.size();
    std::vector<std::vector<float>> ctx;
    for (std::size_t t = 1; t <= seq.size(); ++t)
        ctx.push_back(m.hidden_of(std::span<const token_id>(seq).first(t)));
    std::vector<token_id> out;
    for (std::size_t step = 0; step < max_new; ++step) {
        const auto x = pr(m.logits_of(seq), seq, prompt_length);
        double mx = -INFINITY, z = 0;
        for (float v : x) mx = std::max(mx, double(v));
        for (float v : x) z += std::exp(double(v) - mx);
        std::vector<int> ids(x.size());
        std::iota(ids.begin(), ids.end(), 0);
        std::stable_sort(ids.begin(), ids.end(), [&](int a, int b) { return x[a] > x[b]; });
        int best = -1;
        double best_score = -INFINITY;
        for (std::size_t r = 0; r < std::min(k, x.size()); ++r) {
            const double p = std::exp(double(x[ids[r]]) - mx) / z;
            auto ext = seq;
            ext.push_back(ids[r]);
            const auto h = m.hidden_of(ext);
            double pen = -INFINITY;
            for (const auto& c : ctx) pen = std::max(pen, cosine(h, c));
            const double score = (1 - alpha) * p - alpha * pen;
            if (score > best_score) best_score = score, best = ids[r];
        }
        if (best == eos) break;  // the EOS rule: not part of the output
        seq.push_back(best);
        out.push_back(best);
        ctx.push_back(m.hidden_of(seq));
    }
    return out;
}

std::vector<token_id> greedy(const toy_model& m, std::vector<token_id> seq, std::size_t max_new) {
    std::vector<token_id> out;
    for (std::size_t i = 0; i < max_new; ++i) {
        const auto x = m.logits_of(seq);
        const token_id t = token_id(std::max_element(x.begin(), x.end()) - x.begin());
        out.push_back(t);
        seq.push_back(t);
    }
    return out;
}

}  // namespace

TEST_CASE("contrastive search picks what its formula gives", "[contrastive]") {
    std::size_t differs_from_greedy = 0;
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        toy_model m({.vocab_size = 12, .hidden_size = 5, .seed = seed, .scale = 1.5f});
        const std::vector<token_id> prompt = {3, 1, 4, 1, 5};
        for (std::size_t k : {1u, 3u, 5u})
            for (double alpha : {0.3, 0.6, 0.9}) {
                m.reset_counters();
                const auto r = contrastive_search(
                    m, prompt, {.top_k = k, .alpha = float(alpha), .max_new_tokens = 10});
                INFO("seed " << seed << " k " << k << " alpha " << alpha);
                CHECK(r.tokens == expected(m, prompt, k, alpha, 10, -1));
                CHECK(r.model_calls == 11);  // the prompt, then one look-ahead per step
                CHECK(m.calls == 11);
                CHECK(r.model_rows == prompt.size() + 10 * k);
                if (k > 1 && r.tokens != greedy(m, prompt, 10)) ++differs_from_greedy;
            }
    }
    CHECK(differs_from_greedy > 10);  // the penalty matters (negative control)
}

TEST_CASE("contrastive search with alpha = 0 or k = 1 is greedy", "[contrastive]") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        toy_model m({.vocab_size = 16, .seed = seed});
        const std::vector<token_id> prompt = {7};
        const auto g = greedy(m, prompt, 12);
        CHECK(contrastive_search(m, prompt, {.top_k = 6, .alpha = 0.f, .max_new_tokens = 12})
                  .tokens == g);
        CHECK(contrastive_search(m, prompt, {.top_k = 1, .alpha = 0.7f, .max_new_tokens = 12})
                  .tokens == g);
    }
}

TEST_CASE("contrastive search: batched look-ahead, slots, EOS and bad input", "[contrastive]") {
    toy_model m({.vocab_size = 10, .seed = 3});
    const std::vector<token_id> prompt = {2, 2};
    auto r = contrastive_search(m, prompt, {.top_k = 4, .alpha = 0.5f, .max_new_tokens = 3});
    CHECK(m.last_slots == std::vector<std::uint32_t>{0, 1, 2, 3});
    CHECK(m.sequences == 1 + 3 * 4);
    // EOS: stops; the EOS is not part of the output (the contract's EOS rule).
    toy_model e({.vocab_size = 10, .seed = 3, .eos_id = 9, .eos_bias = 30.f});
    r = contrastive_search(e, prompt,
                           {.top_k = 4, .alpha = 0.2f, .max_new_tokens = 8, .eos_ids = {9}});
    CHECK(r.tokens.empty());
    CHECK(r.eos);
    CHECK(r.reason == stop_reason::eos);
    // A row with no valid entry stops with a flag, never token 0.
    toy_model bad({.vocab_size = 4});
    bad.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), -INFINITY);
    });
    r = contrastive_search(bad, prompt, {.max_new_tokens = 4});
    CHECK(r.tokens.empty());
    CHECK(r.no_valid_token);
    CHECK(r.reason == stop_reason::no_valid_token);
    auto msg = [](contrastive_params p) { return p.check().value_or(""); };
    CHECK(msg({}) == "");
    CHECK(msg({.top_k = 0}).find("top_k") != std::string::npos);
    CHECK(msg({.alpha = 1.5f}).find("alpha") != std::string::npos);
    CHECK(msg({.alpha = NAN}).find("alpha") != std::string::npos);
    CHECK(msg({.max_new_tokens = 0}).find("max_new_tokens") != std::string::npos);
    CHECK(msg({.eos_ids = {-1}}) == "");  // negative EOS ids are ignored (docs/bad-input.md)
    DK_IF_EXCEPTIONS(
        CHECK_THROWS_AS(contrastive_search(m, std::vector<token_id>{}, {}), config_error);)
}

TEST_CASE(
    "cosine_similarity: tiny and huge vectors give the reference's value (no float "
    "underflow / overflow of the squared norms)",
    "[contrastive][kernels]") {
    // Float squares underflow below |x| ~ 1e-19 (to 0 below ~ 1e-23) and overflow above ~ 1.8e19;
    // the double reference does neither. Scales cover both sides, subnormals and FLT_MAX / 64.
    const float scales[] = {1e-45f, 1e-40f, 1e-30f, 1e-22f,
                            1e-19f, 1e-10f, 1.f,    1e10f,
                            1e19f,  1e25f,  1e37f,  std::numeric_limits<float>::max() / 64};
    for (std::size_t dim : {1u, 7u, 16u, 17u, 64u, 288u}) {
        std::vector<float> base(dim), other(dim);
        for (std::size_t j = 0; j < dim; ++j) {
            base[j] = float(std::sin(0.7 * double(j) + 1.0));
            other[j] = float(std::cos(1.3 * double(j)));
        }
        for (float sq : scales)
            for (float sr : {sq, 1.f, 1e-30f, 1e30f}) {
                std::vector<float> q(dim);
                for (std::size_t j = 0; j < dim; ++j) q[j] = base[j] * sq;
                const std::size_t rows = 4, stride = dim + 1;
                std::vector<float> m(rows * stride, 0.f);
                for (std::size_t j = 0; j < dim; ++j) {
                    m[0 * stride + j] = base[j] * sr;   // parallel: cosine 1 (unless subnormal)
                    m[1 * stride + j] = -base[j] * sr;  // anti-parallel: -1
                    m[2 * stride + j] = other[j] * sr;  // something in between
                    m[3 * stride + j] = 0.f;            // zero row: 0
                }
                std::vector<float> ref(rows), got(rows);
                reference::cosine_similarity(q, m.data(), stride, ref);
                kernels::cosine_similarity(q, m.data(), stride, got);
                INFO("dim " << dim << " query scale " << sq << " row scale " << sr);
                for (std::size_t i = 0; i < rows; ++i)
                    CHECK(std::fabs(double(got[i]) - double(ref[i])) <= 1e-6);
                if (sq >= 1e-30f && sr >= 1e-30f && sq <= 1e25f && sr <= 1e25f) {
                    // the reference itself is exact here: the kernel must be too
                    CHECK(got[0] == dk_test::Approx(1.0).epsilon(1e-6));
                    CHECK(got[1] == dk_test::Approx(-1.0).epsilon(1e-6));
                }
                CHECK(got[3] == 0.f);
            }
    }
    // Negative control: a row that differs gives a different similarity.
    const std::vector<float> q = {1e-21f, 2e-21f}, m = {2e-21f, 1e-21f};
    std::vector<float> got(1);
    kernels::cosine_similarity(q, m.data(), 2, got);
    CHECK(got[0] == dk_test::Approx(0.8).epsilon(1e-6));
    CHECK(got[0] != dk_test::Approx(1.0).epsilon(1e-3));
}

TEST_CASE("contrastive search with processors picks what its formula gives on processed rows",
          "[contrastive][processors]") {
    // HF's order: logits processors, then the top-k of the softmax; each step's processors see
    // the whole sequence so far.
    const dk_test::naive_processors sets[] = {
        {.repetition = 1.8f},
        {.ngram = 2},
        {.ngram = 1},
        {.min_new = 6, .eos = 11},
        {.repetition = 1.3f, .ngram = 3, .min_new = 3, .eos = 11},
        {.eos = 11, .banned = {{1, 5}, {7}, {5, 2, 9}}},
    };
    std::size_t differs = 0, runs = 0, eos_seen = 0;
    for (std::uint64_t seed = 1; seed <= 10; ++seed)
        for (const auto& pr : sets)
            for (std::size_t k : {1u, 4u}) {
                toy_model m({.vocab_size = 12,
                             .hidden_size = 5,
                             .seed = seed,
                             .scale = 1.5f,
                             .eos_id = 11,
                             .eos_bias = 1.5f});
                const std::vector<token_id> prompt = {3, 1, 4, 1, 5};
                contrastive_params cp{.top_k = k,
                                      .alpha = 0.5f,
                                      .max_new_tokens = 10,
                                      .eos_ids = {11},
                                      .processing = pr.as_params()};
                const auto r = contrastive_search(m, prompt, cp);
                INFO("seed " << seed << " k " << k << " rep " << pr.repetition << " ngram "
                             << pr.ngram << " min_new " << pr.min_new);
                CHECK(r.tokens == expected(m, prompt, k, 0.5, 10, 11, pr));
                if (r.reason == stop_reason::eos) {
                    CHECK(r.tokens.size() >= pr.min_new);
                    ++eos_seen;
                }
                cp.processing = {};
                differs += contrastive_search(m, prompt, cp).tokens != r.tokens;
                ++runs;
            }
    INFO(differs << " of " << runs << " runs changed; " << eos_seen << " ended by EOS");
    CHECK(differs > runs / 3);  // negative control: the processors matter
    CHECK(eos_seen > 0);
}

TEST_CASE(
    "contrastive candidates at a large vocabulary: the ranked top k and softmax probabilities",
    "[contrastive]") {
    // V = 20000 takes kernels::logsumexp_top_k's grouped path (the toy models above are below
    // one 512-entry group per candidate and take its fallback); checked against an independent
    // double softmax and a sort by (logit desc, id asc).
    const std::size_t V = 20000;
    for (const std::size_t k : {std::size_t(1), std::size_t(4), std::size_t(16)}) {
        contrastive_scorer sc(V, 8, k);
        for (std::uint32_t seed = 1; seed <= 6; ++seed) {
            std::vector<float> x(V);
            std::uint32_t h = seed * 2654435761u;
            for (auto& v : x) {
                h = h * 1664525u + 1013904223u;
                v = float(h >> 8) * 0x1p-24f * 8.f - 4.f;  // U[-4, 4)
            }
            if (seed % 2 == 0) x[V - 3] = x[7] = 9.f;  // a tie at the top, one in the tail
            if (seed == 5)
                for (std::size_t i = 0; i < V; i += 3) x[i] = -INFINITY;
            const std::size_t n = sc.candidates_of(x);
            REQUIRE(n == k);
            std::vector<token_id> ord(V);
            std::iota(ord.begin(), ord.end(), token_id(0));
            std::sort(ord.begin(), ord.end(), [&](token_id a, token_id b) {
                return x[a] > x[b] || (x[a] == x[b] && a < b);
            });
            double mx = -INFINITY, z = 0;
            for (float v : x) mx = std::max(mx, double(v));
            for (float v : x) z += std::exp(double(v) - mx);
            const double lse = kernels::logsumexp(x);  // the scorer's normaliser, bit for bit
            for (std::size_t i = 0; i < k; ++i) {
                CHECK(sc.ids()[i] == ord[i]);
                CHECK(sc.probs()[i] == std::exp(double(x[ord[i]]) - lse));
                CHECK(sc.probs()[i] == dk_test::Approx(std::exp(double(x[ord[i]]) - mx) / z)
                                           .epsilon(1e-6));  // float exp pass
            }
        }
    }
    contrastive_scorer sc(V, 8, 4);
    std::vector<float> none(V, -INFINITY);
    CHECK(sc.candidates_of(none) == 0);
}
}  // namespace dk_t_contrastive
