// DoLa against an independent recomputation of its formula on the toy model.
#include "dk_test.hpp"
#include "naive_processors.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_dola {

using namespace decodekit;
using dk_test::toy_model;

namespace {

std::vector<double> log_softmax(const std::vector<float>& x) {
    double m = -INFINITY, z = 0;
    for (float v : x) m = std::max(m, double(v));
    for (float v : x) z += std::exp(double(v) - m);
    std::vector<double> out;
    for (float v : x) out.push_back(double(v) - m - std::log(z));
    return out;
}

double jsd(const std::vector<double>& lp, const std::vector<double>& lq, bool hf) {
    double s = 0;
    for (std::size_t i = 0; i < lp.size(); ++i) {
        const double p = std::exp(lp[i]), q = std::exp(lq[i]), m = (p + q) / 2;
        if (!hf)
            s += 0.5 * (p * std::log(p / m) + q * std::log(q / m));
        else
            s += 0.5 * (m * std::log(m / p) + m * std::log(m / q));
    }
    return s;
}

struct expect_t {
    std::vector<token_id> tokens;
    std::vector<int> layers;
};

// The DoLa formula of docs/semantics.md#dola, greedy, written from scratch.
// `pr`: the sampler's processors on the final scores (after DoLa's repetition penalty); an EOS
// (pr.eos) ends the output.
expect_t expected(const toy_model& m, std::vector<token_id> seq, const std::vector<int>& cand,
                  double rel_top, double rep, std::size_t max_new, bool hf,
                  const dk_test::naive_processors& pr = {}) {
    expect_t e;
    const std::size_t prompt_len = seq.size();
    for (std::size_t step = 0; step < max_new; ++step) {
        const auto lN = log_softmax(m.logits_of(seq));
        int best = -1;
        double best_d = -INFINITY;
        for (int l : cand) {
            const double d = jsd(lN, log_softmax(m.layer_logits_of(seq, l)), hf);
            if (d > best_d) best_d = d, best = l;
        }
        const auto lM = log_softmax(m.layer_logits_of(seq, best));
        const double mx = *std::max_element(lN.begin(), lN.end());
        std::vector<double> score(lN.size(), -INFINITY);
        for (std::size_t x = 0; x < lN.size(); ++x)
            if (lN[x] >= mx + std::log(rel_top) - 1e-6) score[x] = lN[x] - lM[x];
        std::set<token_id> seen(seq.begin(), seq.end());
        for (token_id t : seen)
            if (std::isfinite(score[std::size_t(t)]))
                score[std::size_t(t)] = score[std::size_t(t)] > 0 ? score[std::size_t(t)] / rep
                                                                  : score[std::size_t(t)] * rep;
        score = pr(score, seq, prompt_len);
        const token_id t = token_id(std::max_element(score.begin(), score.end()) - score.begin());
        if (t == pr.eos) break;
        seq.push_back(t);
        e.tokens.push_back(t);
        e.layers.push_back(best);
    }
    return e;
}

}  // namespace

TEST_CASE("DoLa candidate layers follow the low/high/tied rules", "[dola]") {
    auto L = [](dola_layer_set s, bool tied, std::size_t n) {
        return dola_candidate_layers({.layers = s, .tied_embeddings = tied}, n);
    };
    using v = std::vector<int>;
    CHECK(L(dola_layer_set::low, false, 32) == v{0, 2, 4, 6, 8, 10, 12, 14});
    CHECK(L(dola_layer_set::low, true, 32) == v{2, 4, 6, 8, 10, 12, 14});
    CHECK(L(dola_layer_set::high, false, 32) == v{16, 18, 20, 22, 24, 26, 28, 30});
    CHECK(L(dola_layer_set::high, true, 32) == v{16, 18, 20, 22, 24, 26, 28, 30});
    CHECK(L(dola_layer_set::low, false, 80) == v{0, 2, 4, 6, 8, 10, 12, 14, 16, 18});
    CHECK(L(dola_layer_set::low, true, 80) == v{2, 4, 6, 8, 10, 12, 14, 16, 18});
    CHECK(L(dola_layer_set::high, false, 80) == v{60, 62, 64, 66, 68, 70, 72, 74, 76, 78});
    CHECK(L(dola_layer_set::high, false, 41) == v{21, 23, 25, 27, 29, 31, 33, 35, 37, 39});
    CHECK(L(dola_layer_set::low, false, 4) == v{0});
    CHECK(L(dola_layer_set::high, false, 4) == v{2});
}

TEST_CASE("DoLa picks what its formula gives", "[dola]") {
    std::size_t layer_choices = 0, parity_differs = 0;
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        toy_model m({.vocab_size = 12, .num_layers = 8, .seed = seed, .scale = 2.f});
        const std::vector<token_id> prompt = {1, 5, 9};
        for (bool hf : {false, true})
            for (double rep : {1.0, 1.2})
                for (double rel : {0.1, 0.3}) {
                    const std::vector<int> cand = {0, 2, 5, 7};
                    m.reset_counters();
                    const auto r = dola_decode(
                        m, prompt,
                        {.layers = dola_layer_set::custom,
                         .custom_layers = cand,
                         .relative_top = float(rel),
                         .repetition_penalty = float(rep),
                         .divergence = hf ? dola_divergence::hf_mixture_kl : dola_divergence::jsd,
                         .max_new_tokens = 8});
                    const auto e = expected(m, prompt, cand, rel, rep, 8, hf);
                    INFO("seed " << seed << " hf " << hf << " rep " << rep << " rel " << rel);
                    CHECK(r.tokens == e.tokens);
                    CHECK(r.premature_layers == e.layers);
                    CHECK(r.model_calls == 8);
                    CHECK(m.calls == 8);
                    for (int l : r.premature_layers) layer_choices |= 1u << l;
                    if (hf && expected(m, prompt, cand, rel, rep, 8, false).layers != e.layers)
                        ++parity_differs;
                }
    }
    CHECK(__builtin_popcount(unsigned(layer_choices)) >= 2);  // the choice is data-dependent
    INFO("HF's mixture KL picked another layer than the JSD in " << parity_differs << " runs");
    CHECK(parity_differs > 0);
}

TEST_CASE("DoLa's adaptive plausibility constraint: only V_head tokens are emitted", "[dola]") {
    toy_model m({.vocab_size = 16, .num_layers = 4, .seed = 7, .scale = 3.f});
    const std::vector<token_id> prompt = {2};
    // Sampled (temperature 1) DoLa: every emitted token has q_N >= 0.1 max q_N at its step.
    for (std::uint64_t s = 0; s < 50; ++s) {
        const auto r = dola_decode(m, prompt,
                                   {.layers = dola_layer_set::low,
                                    .sampling = {.temperature = 1.f, .seed = s},
                                    .max_new_tokens = 4});
        REQUIRE(r.tokens.size() == 4);
        std::vector<token_id> seq = prompt;
        for (token_id t : r.tokens) {
            const auto lN = log_softmax(m.logits_of(seq));
            const double mx = *std::max_element(lN.begin(), lN.end());
            CHECK(lN[std::size_t(t)] >= mx + std::log(0.1) - 1e-6);
            seq.push_back(t);
        }
        const auto again = dola_decode(m, prompt,
                                       {.layers = dola_layer_set::low,
                                        .sampling = {.temperature = 1.f, .seed = s},
                                        .max_new_tokens = 4});
        CHECK(again.tokens == r.tokens);  // reproducible by seed
    }
}

TEST_CASE("DoLa: EOS, bad configuration", "[dola]") {
    toy_model e({.vocab_size = 8, .num_layers = 4, .eos_id = 3, .eos_bias = 40.f});
    // EOS dominates the final layer, and the contrast against a layer without the bias is large.
    const auto r = dola_decode(e, std::vector<token_id>{1},
                               {.repetition_penalty = 1.f, .max_new_tokens = 5, .eos_ids = {3}});
    CHECK(r.tokens.empty());  // the EOS rule: the EOS is not part of the output
    CHECK(r.premature_layers.empty());
    CHECK(r.eos);
    CHECK(r.reason == stop_reason::eos);
    auto msg = [](dola_params p) { return p.check().value_or(""); };
    CHECK(msg({}) == "");
    CHECK(msg({.layers = dola_layer_set::custom}).find("custom_layers") != std::string::npos);
    CHECK(msg({.custom_layers = {-1}}).find("custom_layers") != std::string::npos);
    CHECK(msg({.relative_top = 2.f}).find("relative_top") != std::string::npos);
    CHECK(msg({.repetition_penalty = 0.f}).find("repetition_penalty") != std::string::npos);
    CHECK(msg({.sampling = {.temperature = -1.f}}).find("dola_params.sampling") !=
          std::string::npos);
    CHECK(msg({.max_new_tokens = 0}).find("max_new_tokens") != std::string::npos);
    DK_IF_EXCEPTIONS(
        toy_model m; CHECK_THROWS_AS(dola_decode(m, std::vector<token_id>{}, {}), config_error);
        CHECK_THROWS_AS(dola_decode(m, std::vector<token_id>{1},
                                    {.layers = dola_layer_set::custom, .custom_layers = {4}}),
                        config_error);
        CHECK_THROWS_AS(
            dola_candidate_layers({.layers = dola_layer_set::low, .tied_embeddings = true}, 5),
            config_error);)
}

TEST_CASE("DoLa: a final layer with no valid entry stops with a flag", "[dola]") {
    toy_model m({.vocab_size = 6, .num_layers = 4});
    m.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), NAN);
    });
    const auto r = dola_decode(m, std::vector<token_id>{1}, {.max_new_tokens = 3});
    CHECK(r.tokens.empty());
    CHECK(r.no_valid_token);
    CHECK(r.reason == stop_reason::no_valid_token);
}

TEST_CASE("DoLa's processors run on the final distribution (no_repeat_ngram, min_new_tokens)",
          "[dola][processors]") {
    // dola_params::sampling's processors run inside DoLa's sampler, on the contrast scores after
    // DoLa's own repetition penalty; min_new_tokens suppresses the EOS ids (DoLa's by default).
    const dk_test::naive_processors sets[] = {{.ngram = 2, .eos = 11},
                                              {.ngram = 1, .eos = 11},
                                              {.min_new = 5, .eos = 11},
                                              {.ngram = 2, .min_new = 3, .eos = 11}};
    std::size_t differs = 0, runs = 0;
    for (std::uint64_t seed = 1; seed <= 10; ++seed)
        for (const auto& pr : sets) {
            toy_model m({.vocab_size = 12,
                         .num_layers = 8,
                         .seed = seed,
                         .scale = 2.f,
                         .eos_id = 11,
                         .eos_bias = 2.f});
            const std::vector<token_id> prompt = {1, 5, 9};
            const std::vector<int> cand = {0, 2, 5};
            sampling_params sp = pr.as_params();
            sp.temperature = 0.f;
            dola_params dp{.layers = dola_layer_set::custom,
                           .custom_layers = cand,
                           .relative_top = 0.f,
                           .repetition_penalty = 1.2f,
                           .sampling = sp,
                           .max_new_tokens = 10,
                           .eos_ids = {11}};
            const auto r = dola_decode(m, prompt, dp);
            const auto e = expected(m, prompt, cand, 0.0, 1.2, 10, false, pr);
            INFO("seed " << seed << " ngram " << pr.ngram << " min_new " << pr.min_new);
            CHECK(r.tokens == e.tokens);
            if (r.reason == stop_reason::eos) CHECK(r.tokens.size() >= pr.min_new);
            dp.sampling = {.temperature = 0.f};
            differs += dola_decode(m, prompt, dp).tokens != r.tokens;
            ++runs;
        }
    INFO(differs << " of " << runs << " runs changed");
    CHECK(differs > runs / 3);  // negative control: the processors matter
}
}  // namespace dk_t_dola
