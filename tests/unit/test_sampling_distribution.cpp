// distribution() against hand-computed references for each preset, including the documented
// disagreements between engines (order presets, min-p space, top-k ties), special values,
// processors, logprobs and mirostat state.
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <utility>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_distribution {

using namespace decodekit;

namespace {

// |a - b| <= rel * max(1, |b|) (dk_test::Approx does not take scalars with Catch2 2.13 here).
bool near(double a, double b, double rel = 1e-5) {
    return std::fabs(a - b) <= rel * std::max(1.0, std::fabs(b));
}

struct expected_entry {
    token_id token;
    double prob;
};

void check_dist(sampling_params p, const std::vector<float>& x,
                const std::vector<expected_entry>& want, const sample_context& ctx = {}) {
    sampler s(p, x.size());
    const auto d = s.distribution(x, ctx);
    REQUIRE(d.tokens.size() == want.size());
    REQUIRE(d.probs.size() == want.size());
    double sum = 0;
    for (std::size_t i = 0; i < want.size(); ++i) {
        INFO("entry " << i);
        CHECK(d.tokens[i] == want[i].token);
        CHECK(near(d.probs[i], want[i].prob, 1e-5));
        sum += d.probs[i];
    }
    CHECK(near(sum, 1.0, 1e-6));
    // sample() only ever returns a token of the distribution (a copy: distribution views live
    // until the next call on the thread's workspace)
    const std::vector<token_id> kept(d.tokens.begin(), d.tokens.end());
    for (std::uint64_t step = 0; step < 200; ++step) {
        const auto r = s.sample(x, sample_context{.sequence = 1,
                                                  .step = step,
                                                  .history = ctx.history,
                                                  .prompt_length = ctx.prompt_length});
        REQUIRE(r.ok());
        CHECK(std::find(kept.begin(), kept.end(), r.token) != kept.end());
    }
}

std::vector<float> ln(std::vector<double> p) {
    std::vector<float> x;
    for (double q : p) x.push_back(float(std::log(q)));
    return x;
}

constexpr float inf = std::numeric_limits<float>::infinity();
const float qnan = std::numeric_limits<float>::quiet_NaN();

}  // namespace

TEST_CASE("order presets: top-p before or after temperature gives different sets",
          "[sampling][order]") {
    // p = (0.5, 0.3, 0.2), T = 0.5, top_p = 0.6.
    const auto x = ln({0.5, 0.3, 0.2});
    // llama.cpp: top-p at T = 1 keeps {0, 1} (mass before token 1 is 0.5 < 0.6), then T = 0.5:
    // 0.25 : 0.09
    check_dist({.temperature = 0.5f, .top_p = 0.6f, .order = sampling_order::llama_cpp}, x,
               {{0, 0.25 / 0.34}, {1, 0.09 / 0.34}});
    // HF and vLLM: T = 0.5 first gives (0.658, 0.237, 0.105); the mass before token 1 is 0.658 >=
    // 0.6
    check_dist({.temperature = 0.5f, .top_p = 0.6f, .order = sampling_order::hf}, x, {{0, 1.0}});
    check_dist({.temperature = 0.5f, .top_p = 0.6f, .order = sampling_order::vllm}, x, {{0, 1.0}});
    // the default is llama_cpp
    check_dist({.temperature = 0.5f, .top_p = 0.6f}, x, {{0, 0.25 / 0.34}, {1, 0.09 / 0.34}});
}

TEST_CASE("min-p in probability space vs logit space", "[sampling][order]") {
    // p = (0.5, 0.3, 0.2), T = 2, min_p = 0.5, temperature first (hf).
    const auto x = ln({0.5, 0.3, 0.2});
    const double a = std::sqrt(0.5), b = std::sqrt(0.3), c = std::sqrt(0.2);
    // probabilities: at T = 2, p / p_max = (1, 0.775, 0.632) >= 0.5: all kept
    check_dist({.temperature = 2.f,
                .min_p = 0.5f,
                .min_p_mode = min_p_space::probabilities,
                .order = sampling_order::hf},
               x, {{0, a / (a + b + c)}, {1, b / (a + b + c)}, {2, c / (a + b + c)}});
    // logits (llama.cpp): threshold on the untempered logits, p / p_max = (1, 0.6, 0.4): {0, 1}
    check_dist({.temperature = 2.f,
                .min_p = 0.5f,
                .min_p_mode = min_p_space::logits,
                .order = sampling_order::hf},
               x, {{0, a / (a + b)}, {1, b / (a + b)}});
    // with temperature last both spaces agree
    for (auto space : {min_p_space::logits, min_p_space::probabilities})
        check_dist({.temperature = 2.f, .min_p = 0.5f, .min_p_mode = space}, x,
                   {{0, a / (a + b)}, {1, b / (a + b)}});
    // vLLM order: temperature then min-p (probability space) keeps everything
    check_dist({.temperature = 2.f, .min_p = 0.5f, .order = sampling_order::vllm}, x,
               {{0, a / (a + b + c)}, {1, b / (a + b + c)}, {2, c / (a + b + c)}});
}

TEST_CASE("top-k tie policies", "[sampling][switches]") {
    const std::vector<float> x = {1.f, 3.f, 3.f, 2.f, 3.f};
    check_dist({.top_k = 2, .top_k_ties = tie_policy::exactly_k}, x, {{1, 0.5}, {2, 0.5}});
    check_dist({.top_k = 2, .top_k_ties = tie_policy::keep_ties}, x,
               {{1, 1 / 3.}, {2, 1 / 3.}, {4, 1 / 3.}});
    // on a candidate set (after min-p, vLLM order) too
    check_dist({.top_k = 2,
                .top_k_ties = tie_policy::keep_ties,
                .min_p = 0.01f,
                .order = sampling_order::vllm},
               x, {{1, 1 / 3.}, {2, 1 / 3.}, {4, 1 / 3.}});
    check_dist({.top_k = 2,
                .top_k_ties = tie_policy::exactly_k,
                .min_p = 0.01f,
                .order = sampling_order::vllm},
               x, {{1, 0.5}, {2, 0.5}});
}

TEST_CASE("min_keep and the degenerate thresholds", "[sampling][switches]") {
    const auto x = ln({0.1, 0.5, 0.25, 0.15});
    // top_p = 0 keeps the top token, min_keep = 2 the top two
    check_dist({.top_p = 0.f}, x, {{1, 1.0}});
    check_dist({.top_p = 0.f, .min_keep = 2}, x, {{1, 0.5 / 0.75}, {2, 0.25 / 0.75}});
    // min-p = 1 keeps the max only; min_keep = 3 the top three
    check_dist({.min_p = 1.f}, x, {{1, 1.0}});
    check_dist({.min_p = 1.f, .min_keep = 3}, x,
               {{1, 0.5 / 0.9}, {2, 0.25 / 0.9}, {3, 0.15 / 0.9}});
    // epsilon 0.2 removes 0.1 and 0.15
    check_dist({.epsilon = 0.2f}, x, {{1, 0.5 / 0.75}, {2, 0.25 / 0.75}});
    // top_k >= V is a no-op; ties by id in the output
    check_dist({.top_k = 10}, ln({0.25, 0.25, 0.5}), {{2, 0.5}, {0, 0.25}, {1, 0.25}});
}

TEST_CASE("temperature 0 is greedy: argmax, ties to the lowest id", "[sampling][switches]") {
    check_dist({.temperature = 0.f}, {1.f, 4.f, 2.f, 4.f}, {{1, 1.0}});
    sampler s({.temperature = 0.f, .top_k = 1}, 4);
    const auto r = s.sample(std::vector<float>{1.f, qnan, 2.f, 2.f});
    CHECK(r.token == 2);
    CHECK(r.logprob == 0.f);
}

TEST_CASE("special values: NaN, -inf, +inf and rows with no valid token", "[sampling][special]") {
    // NaN and -inf have probability 0
    check_dist({}, {qnan, 0.f, -inf, 0.f}, {{1, 0.5}, {3, 0.5}});
    // +inf entries: uniform over them
    check_dist({}, {1.f, inf, 3.f, inf}, {{1, 0.5}, {3, 0.5}});
    check_dist({.top_k = 3}, {1.f, inf, 3.f, inf}, {{1, 0.5}, {3, 0.5}});
    check_dist({.min_p = 0.1f}, {1.f, inf, 3.f, inf}, {{1, 0.5}, {3, 0.5}});
    // no valid token: empty distribution, token -1, status no_valid_token, for every path
    for (sampling_params p : {sampling_params{}, sampling_params{.temperature = 0.f},
                              sampling_params{.top_k = 5}, sampling_params{.top_p = 0.5f},
                              sampling_params{.min_p = 0.1f}, sampling_params{.typical_p = 0.5f},
                              sampling_params{.temperature = 0.7f, .mirostat = true}}) {
        for (const std::vector<float>& row :
             {std::vector<float>{qnan, qnan, qnan}, std::vector<float>{-inf, -inf, -inf},
              std::vector<float>{qnan, -inf, qnan}}) {
            sampler s(p, 3);
            CHECK(s.distribution(row).empty());
            const auto r = s.sample(row);
            CHECK_FALSE(r.ok());
            CHECK(r.status == sample_status::no_valid_token);
            CHECK(r.token == -1);
        }
    }
    // wrong row length: bad_input, no read out of bounds
    sampler s({}, 4);
    const auto r = s.sample(std::vector<float>{1.f, 2.f});
    CHECK(r.status == sample_status::bad_input);
    CHECK(r.token == -1);
}

TEST_CASE("processors run first, on a copy of the row", "[sampling][processors]") {
    const std::vector<float> x = {0.f, 0.f, 0.f, 0.f};
    const std::vector<float> before = x;
    // banned token, bias and allowed set
    check_dist({.banned_tokens = {0}}, x, {{1, 1 / 3.}, {2, 1 / 3.}, {3, 1 / 3.}});
    check_dist({.allowed_tokens = {2, 3}}, x, {{2, 0.5}, {3, 0.5}});
    check_dist({.logit_biases = {{3, std::log(2.f)}}}, x, {{3, 0.4}, {0, 0.2}, {1, 0.2}, {2, 0.2}});
    // min new tokens: EOS 1 suppressed while fewer than 2 tokens were generated
    const std::vector<token_id> h1 = {0, 2, 3};  // prompt of 2, one generated
    check_dist({.min_new_tokens = 2, .eos_ids = {1}}, x, {{0, 1 / 3.}, {2, 1 / 3.}, {3, 1 / 3.}},
               {.history = h1, .prompt_length = 2});
    check_dist({.min_new_tokens = 2, .eos_ids = {1}}, x,
               {{0, 0.25}, {1, 0.25}, {2, 0.25}, {3, 0.25}}, {.history = h1, .prompt_length = 1});
    // presence penalty ln 2 on tokens of the history: {2, 3} seen -> weights 1, 1, .5, .5
    const std::vector<token_id> h2 = {2, 3};
    check_dist({.penalties = {.presence = std::log(2.f)}}, x,
               {{0, 1 / 3.}, {1, 1 / 3.}, {2, 1 / 6.}, {3, 1 / 6.}}, {.history = h2});
    // no-repeat-ngram 2: history (1, 2, 1) bans 2
    const std::vector<token_id> h3 = {1, 2, 1};
    check_dist({.no_repeat_ngram_size = 2}, x, {{0, 1 / 3.}, {1, 1 / 3.}, {3, 1 / 3.}},
               {.history = h3});
    check_dist({.banned_sequences = {{2, 1, 3}}}, x, {{0, 1 / 3.}, {1, 1 / 3.}, {2, 1 / 3.}},
               {.history = h3});
    CHECK(x == before);
    // everything banned: no valid token
    sampler s({.allowed_tokens = {0}, .banned_tokens = {0}}, 4);
    CHECK(s.sample(x).status == sample_status::no_valid_token);
}

TEST_CASE("logprobs: processed, raw (opt-in), rank, top-n and requested ids",
          "[sampling][logprobs]") {
    const std::vector<float> x = {1.f, 3.f, 2.f, 0.5f, -1.f};
    double z = 0;
    for (float v : x) z += std::exp(double(v));
    auto raw = [&](std::size_t i) { return double(x[i]) - std::log(z); };
    SECTION("defaults: processed only") {
        sampler s({.top_k = 2}, x.size());
        const auto r = s.sample(x, 0, 0);
        REQUIRE(r.ok());
        CHECK(std::isnan(r.raw_logprob));
        CHECK(r.rank == 0);
        CHECK(r.top.empty());
        const auto d = s.distribution(x);
        CHECK(near(r.logprob, std::log(d.prob(r.token)), 1e-5));
    }
    SECTION("raw logprobs and extras") {
        for (auto params :
             {sampling_params{.temperature = 0.7f, .top_k = 3}, sampling_params{.temperature = 1.f},
              sampling_params{.temperature = 0.f}, sampling_params{.temperature = 1.3f},
              sampling_params{.top_p = 0.9f}, sampling_params{.temperature = 0.5f, .top_p = 0.9f},
              // XTC drops the head into a row copy, then draws over the full row at t = 1: the
              // raw normaliser must still be the caller's row's, not the copy's
              sampling_params{.xtc_probability = 1.f, .xtc_threshold = 0.1f}}) {
            params.logprobs = {.raw = true, .rank = true, .top_n = 2, .ids = {4, 0, 99}};
            sampler s(params, x.size());
            for (std::uint64_t step = 0; step < 50; ++step) {
                const auto r = s.sample(x, 0, step);
                REQUIRE(r.ok());
                const auto t = std::size_t(r.token);
                CHECK(near(r.raw_logprob, raw(t), 1e-5));
                std::size_t rank = 1;
                for (float v : x) rank += v > x[t];
                CHECK(r.rank == rank);
                REQUIRE(r.top.size() == 2);
                CHECK(r.top[0].token == 1);
                CHECK(near(r.top[0].logprob, raw(1), 1e-5));
                CHECK(r.top[1].token == 2);
                REQUIRE(r.requested.size() == 3);
                CHECK(r.requested[0].token == 4);
                CHECK(near(r.requested[0].logprob, raw(4), 1e-5));
                CHECK(near(r.requested[1].logprob, raw(0), 1e-5));
                CHECK(r.requested[2].logprob == -inf);  // out of range
                // processed logprob of the chosen token
                const auto d = s.distribution(x);
                CHECK(near(r.logprob, std::log(d.prob(r.token)), 1e-5));
            }
        }
    }
    SECTION("processed alternatives") {
        sampler s(
            {.top_k = 2, .logprobs = {.rank = true, .top_n = 3, .ids = {2, 4}, .processed = true}},
            x.size());
        const auto r = s.sample(x, 0, 1);
        const double a = std::exp(3.0), b = std::exp(2.0);
        REQUIRE(r.top.size() == 2);  // only two tokens survive
        CHECK(r.top[0].token == 1);
        CHECK(near(r.top[0].logprob, std::log(a / (a + b)), 1e-5));
        CHECK(near(r.requested[0].logprob, std::log(b / (a + b)), 1e-5));
        CHECK(r.requested[1].logprob == -inf);
        CHECK(r.rank == (r.token == 1 ? 1u : 2u));
    }
}

TEST_CASE("mirostat v2: mu updates on sample(), state() / restore() roll it back",
          "[sampling][mirostat]") {
    std::vector<float> x(50);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = -0.2f * float(i);
    sampler s({.temperature = 1.f,
               .mirostat = true,
               .mirostat_tau = 3.f,
               .mirostat_eta = 0.1f,
               .seed = 1},
              x.size());
    CHECK(s.state().mirostat_mu == 6.f);
    // distribution with mu = 6: keep p >= 2^-6
    const auto view = s.distribution(x);  // valid until the next call: copy it
    const std::vector<token_id> d_tokens(view.tokens.begin(), view.tokens.end());
    const std::vector<float> d_probs(view.probs.begin(), view.probs.end());
    const decodekit::distribution d{d_tokens, d_probs};
    double z = 0;
    for (float v : x) z += std::exp(double(v));
    std::size_t expect_n = 0;
    for (float v : x) expect_n += std::exp(double(v)) / z >= std::exp2(-6.0);
    CHECK(d.size() == expect_n);
    CHECK(s.state().mirostat_mu == 6.f);  // distribution() does not update
    const auto saved = s.state();
    const auto r1 = s.sample(x);
    const double surprise = -std::log2(d.prob(r1.token));
    CHECK(near(s.state().mirostat_mu, 6.0 - 0.1 * (surprise - 3.0), 1e-5));
    const auto r2 = s.sample(x);
    s.restore(saved);
    CHECK(s.state() == saved);
    CHECK(s.sample(x).token == r1.token);
    CHECK(s.sample(x).token == r2.token);
    // observe(): the same mu update for a token drawn outside the sampler
    s.restore(saved);
    s.observe(d, r1.token);
    sampler t({.temperature = 1.f,
               .mirostat = true,
               .mirostat_tau = 3.f,
               .mirostat_eta = 0.1f,
               .seed = 1},
              x.size());
    t.sample(x);
    CHECK(near(s.state().mirostat_mu, t.state().mirostat_mu));
}

TEST_CASE("draw(distribution_unordered, stream) matches sample() on truncated pipelines",
          "[sampling][draw]") {
    // sample() draws over the kept set in id order: the order of distribution_unordered()
    std::vector<float> x(300);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = float(std::cos(double(i)) * 3);
    sampler s({.temperature = 0.9f, .top_k = 50, .min_p = 0.02f, .seed = 77}, x.size());
    std::size_t differs_from_ordered = 0;
    for (std::uint64_t step = 0; step < 100; ++step) {
        const auto d = s.distribution_unordered(x, {.sequence = 4, .step = step});
        rng_stream g = make_stream({77, 4, step}, rng_purpose::sample);
        const token_id t = draw(d, g);
        const auto o = s.distribution(x, {.sequence = 4, .step = step});
        rng_stream g2 = make_stream({77, 4, step}, rng_purpose::sample);
        differs_from_ordered += draw(o, g2) != t;  // the same law, another order
        CHECK(s.sample(x, 4, step).token == t);
    }
    CHECK(differs_from_ordered > 10);  // the order matters for a given key
    // the same key gives the same token; another key a different stream
    CHECK(s.sample(x, 1, 2).token == s.sample(x, 1, 2).token);
}

TEST_CASE("full-row top-p: heavy tails take the safe threshold and still give the exact nucleus",
          "[sampling][top_p]") {
    // 10 heads at 0 and a long tail at -9 (ties by id): the first threshold guess misses mass,
    // the safe one keeps the nucleus. Reference: sort everything in double.
    for (const float tail : {-9.f, -3.f, -20.f}) {
        std::vector<float> x(20000, tail);
        for (std::size_t i = 0; i < 10; ++i) x[i * 1999] = 0.f;
        const double wt = std::exp(double(tail));
        const double z = 10 + 19990 * wt;
        sampler s({.top_p = 0.95f}, x.size());
        const auto d = s.distribution(x);
        // expected: 10 heads, then tail tokens in id order while the mass before is < 0.95
        double before = 10 / z;
        std::size_t n_tail = 0;
        while (n_tail < 19990 && before < double(0.95f)) {
            before += wt / z;
            ++n_tail;
        }
        if (before < double(0.95f)) n_tail = 19990;
        INFO("tail " << tail);
        REQUIRE(d.size() == 10 + n_tail);
        for (std::size_t i = 0; i < 10; ++i) CHECK(d.tokens[i] == token_id(i * 1999));
        const double kept = 10 + double(n_tail) * wt;
        CHECK(near(d.probs[0], 1 / kept));
        if (n_tail > 0) {
            CHECK(d.tokens[10] == 1);  // lowest id of the tail
            CHECK(near(d.probs[10], wt / kept));
        }
    }
}

TEST_CASE("edge cases: V = 1, huge magnitudes, tiny temperature, min_keep and k beyond V",
          "[sampling][special]") {
    // V = 1
    for (sampling_params p :
         {sampling_params{}, sampling_params{.temperature = 0.f}, sampling_params{.top_k = 1},
          sampling_params{.top_p = 0.1f}, sampling_params{.min_p = 0.9f},
          sampling_params{.typical_p = 0.2f}, sampling_params{.xtc_probability = 1.f}}) {
        sampler s(p, 1);
        CHECK(s.sample(std::vector<float>{-3.f}).token == 0);
        CHECK(s.sample(std::vector<float>{qnan}).token == -1);
    }
    // huge magnitudes: no overflow, the large ones win
    check_dist({}, {1e30f, -1e30f, 1e30f, 0.f}, {{0, 0.5}, {2, 0.5}});
    check_dist({.top_p = 0.9f}, {1e30f, -1e30f, 1e30f, 0.f}, {{0, 0.5}, {2, 0.5}});
    check_dist({.min_p = 0.5f, .min_keep = 3}, {1e30f, -1e30f, 1e30f, 0.f}, {{0, 0.5}, {2, 0.5}});
    // tiny temperature: the max (ties split), no NaN
    check_dist({.temperature = 1e-20f}, {1.f, 2.f, 2.f, 1.999f}, {{1, 0.5}, {2, 0.5}});
    check_dist({.temperature = 1e-20f, .top_k = 3}, {1.f, 2.f, 2.f, 1.999f}, {{1, 0.5}, {2, 0.5}});
    // min_keep and top_k beyond V
    check_dist({.top_k = 100, .top_p = 0.f, .min_keep = 100}, ln({0.5, 0.3, 0.2}),
               {{0, 0.5}, {1, 0.3}, {2, 0.2}});
    check_dist({.min_p = 1.f, .min_keep = 7}, ln({0.5, 0.3, 0.2}), {{0, 0.5}, {1, 0.3}, {2, 0.2}});
    // denormal logits are ordinary values
    const float d = std::numeric_limits<float>::denorm_min();
    check_dist({.top_k = 2}, {d, 0.f, -d}, {{0, 0.5}, {1, 0.5}});
}

TEST_CASE("distribution_unordered equals distribution as a set, in id order",
          "[sampling][distribution]") {
    std::vector<float> x(5000);
    std::mt19937 g(21);
    std::normal_distribution<float> nd(0.f, 3.f);
    for (float& v : x) v = nd(g);
    x[17] = -inf;
    x[99] = qnan;
    std::vector<sampling_params> ps = {
        {.temperature = 1.f},
        {.temperature = 0.7f},
        {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f},
        {.temperature = 1.f, .top_p = 0.9f, .order = sampling_order::hf},
        {.temperature = 1.2f, .min_p = 0.05f, .order = sampling_order::vllm},
        {.temperature = 1.f, .epsilon = 3e-4f},
        {.temperature = 1.f, .mirostat = true},
        {.temperature = 0.f},
        {.temperature = 1.f, .penalties = {.repetition = 1.3f}},
    };
    const std::vector<token_id> hist = {1, 2, 3, 500, 501};
    for (std::size_t k = 0; k < ps.size(); ++k) {
        INFO("params " << k);
        sampler s(ps[k], x.size());
        const sample_context ctx{.sequence = 3, .step = 7, .history = hist};
        const auto d = s.distribution(x, ctx);
        std::vector<std::pair<token_id, float>> a;
        for (std::size_t i = 0; i < d.size(); ++i) a.push_back({d.tokens[i], d.probs[i]});
        std::sort(a.begin(), a.end());
        const auto u = s.distribution_unordered(x, ctx);
        REQUIRE(u.size() == a.size());
        REQUIRE(!u.empty());
        double sum = 0;
        for (std::size_t i = 0; i < u.size(); ++i) {
            CHECK(u.tokens[i] == a[i].first);  // ascending id, same ids
            CHECK(near(u.probs[i], a[i].second, 1e-5));
            CHECK(u.probs[i] > 0.f);
            sum += u.probs[i];
            if (i > 0) CHECK(u.tokens[i - 1] < u.tokens[i]);
        }
        CHECK(near(sum, 1.0, 1e-5));
        CHECK(u.prob(17) == 0.f);
        CHECK(u.prob(99) == 0.f);
    }
    // negative control: another temperature gives another set of probabilities
    // (distribution views live until the next call on the workspace: copy the first)
    sampler s1({.temperature = 1.f}, x.size()), s2({.temperature = 0.5f}, x.size());
    const auto da = s1.distribution_unordered(x);
    const std::vector<float> a(da.probs.begin(), da.probs.end());
    const auto b = s2.distribution_unordered(x);
    REQUIRE(a.size() == b.size());
    bool differs = false;
    for (std::size_t i = 0; i < a.size(); ++i) differs |= !near(a[i], b.probs[i], 1e-3);
    CHECK(differs);
}
}  // namespace dk_t_sampling_distribution
