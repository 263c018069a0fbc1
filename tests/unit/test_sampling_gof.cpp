// Goodness of fit: >= 100000 draws of sampler::sample() from fixed logits against the analytic
// post-truncation distribution computed here independently (plain double arithmetic, sort the
// whole row), one (sequence, step) key per draw.
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_gof {

using namespace decodekit;

namespace {

constexpr std::size_t n_draws = 100000;

// A fixed row with a spread of probabilities, a NaN and a -inf (never drawable).
std::vector<float> test_row(std::size_t v) {
    std::vector<float> x(v);
    for (std::size_t i = 0; i < v; ++i)
        x[i] = float(std::sin(double(i) * 1.7) * 2.0 + double(i % 7) * 0.3);
    x[3] = std::numeric_limits<float>::quiet_NaN();
    x[5] = -std::numeric_limits<float>::infinity();
    return x;
}

// Softmax at temperature t over the entries with keep[i] (others 0).
std::vector<double> softmax_over(const std::vector<float>& x, const std::vector<bool>& keep,
                                 double t) {
    double m = -INFINITY;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (keep[i]) m = std::max(m, double(x[i]));
    std::vector<double> p(x.size(), 0.0);
    double s = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (keep[i]) s += p[i] = std::exp((double(x[i]) - m) / t);
    for (double& q : p) q /= s;
    return p;
}

std::vector<bool> valid(const std::vector<float>& x) {
    std::vector<bool> k(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) k[i] = !std::isnan(x[i]) && x[i] != -INFINITY;
    return k;
}

// Ids by probability descending, ties by id.
std::vector<std::size_t> by_prob(const std::vector<double>& p) {
    std::vector<std::size_t> o(p.size());
    std::iota(o.begin(), o.end(), std::size_t{0});
    std::stable_sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) { return p[a] > p[b]; });
    return o;
}

std::vector<bool> top_k_set(const std::vector<double>& p, std::size_t k) {
    std::vector<bool> keep(p.size(), false);
    auto o = by_prob(p);
    for (std::size_t j = 0; j < k && j < o.size(); ++j) keep[o[j]] = p[o[j]] > 0;
    return keep;
}

std::vector<bool> top_p_set(const std::vector<double>& p, double top_p) {
    std::vector<bool> keep(p.size(), false);
    double before = 0;
    for (std::size_t i : by_prob(p)) {
        if (p[i] <= 0) break;
        if (before >= top_p && before > 0) break;
        keep[i] = true;
        before += p[i];
    }
    return keep;
}

std::vector<bool> min_p_set(const std::vector<double>& p, double min_p) {
    const double pmax = *std::max_element(p.begin(), p.end());
    std::vector<bool> keep(p.size());
    for (std::size_t i = 0; i < p.size(); ++i) keep[i] = p[i] > 0 && p[i] >= min_p * pmax;
    return keep;
}

void check_fit(sampling_params params, const std::vector<float>& x,
               const std::vector<double>& expected) {
    sampler s(params, x.size());
    auto counts = dk_test::histogram(x.size(), n_draws, [&](std::size_t i) {
        const sample_result r = s.sample(x, /*sequence*/ i % 997, /*step*/ i / 997);
        REQUIRE(r.ok());
        return std::size_t(r.token);
    });
    const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
    INFO("chi2 " << g.statistic << " df " << g.df << " p " << g.p_value << " tv "
                 << g.total_variation);
    CHECK_FALSE(g.impossible_draw);
    CHECK(g.p_value > dk_test::false_failure_rate);
}

}  // namespace

TEST_CASE("temperature sampling over the whole row fits softmax(x / T)", "[sampling][gof]") {
    const double t = GENERATE(1.0, 0.7, 1.6);
    auto x = test_row(40);
    check_fit({.temperature = float(t), .seed = 11}, x, softmax_over(x, valid(x), t));
}

TEST_CASE("the blocked full-row draw (V > 2048) fits softmax", "[sampling][gof]") {
    std::vector<float> x(5000, -30.f);
    // mass spread over three blocks, plus a long flat tail
    for (std::size_t i = 0; i < 5000; i += 97) x[i] = float(i % 5) - 1.f;
    x[10] = 3.f;
    x[2100] = 3.5f;
    x[4999] = 2.5f;
    x[4500] = std::numeric_limits<float>::quiet_NaN();
    check_fit({.temperature = 1.f, .seed = 5}, x, softmax_over(x, valid(x), 1.0));
}

TEST_CASE("temperature sampling without the chosen logprob (no exp per entry) fits softmax",
          "[sampling][gof]") {
    // logprobs.chosen = false: the full-row draw is kernels::draw_temperature (envelope
    // rejection); same law, logprob NaN
    const double t = GENERATE(1.0, 0.7);
    auto x = test_row(40);
    sampling_params p{.temperature = float(t), .seed = 12};
    p.logprobs.chosen = false;
    check_fit(p, x, softmax_over(x, valid(x), t));
    std::vector<float> y(5000, -30.f);
    for (std::size_t i = 0; i < 5000; i += 97) y[i] = float(i % 5) - 1.f;
    y[10] = 3.f;
    y[2100] = 3.5f;
    y[4500] = std::numeric_limits<float>::quiet_NaN();
    check_fit(p, y, softmax_over(y, valid(y), t));
    sampler s(p, x.size());
    const auto r = s.sample(x, 1, 2);
    REQUIRE(r.ok());
    CHECK(std::isnan(r.logprob));
    // truncated chains and greedy: logprob NaN too; with chosen on, finite
    for (sampling_params q : {sampling_params{.top_k = 5}, sampling_params{.temperature = 0.f}}) {
        q.logprobs.chosen = false;
        sampler a(q, x.size());
        CHECK(std::isnan(a.sample(x, 1, 2).logprob));
        q.logprobs.chosen = true;
        sampler b(q, x.size());
        CHECK(std::isfinite(b.sample(x, 1, 2).logprob));
    }
}

TEST_CASE("top-k fits the renormalised k best", "[sampling][gof]") {
    const int k = GENERATE(1, 5, 17);
    auto x = test_row(40);
    const double t = 0.9;
    auto p = softmax_over(x, valid(x), 1.0);
    check_fit({.temperature = float(t), .top_k = k, .seed = 3}, x,
              softmax_over(x, top_k_set(p, std::size_t(k)), t));
}

TEST_CASE("top-p fits the renormalised nucleus", "[sampling][gof]") {
    const double top_p = GENERATE(0.5, 0.9, 0.95);
    auto x = test_row(40);
    // llama_cpp order: top-p on the untempered distribution, temperature on the survivors
    auto p = softmax_over(x, valid(x), 1.0);
    check_fit({.temperature = 0.8f, .top_p = float(top_p), .seed = 4}, x,
              softmax_over(x, top_p_set(p, top_p), 0.8));
    // hf order: temperature first, then top-p on the tempered distribution
    auto pt = softmax_over(x, valid(x), 0.8);
    check_fit({.temperature = 0.8f, .top_p = float(top_p), .seed = 4, .order = sampling_order::hf},
              x, softmax_over(x, top_p_set(pt, top_p), 0.8));
}

TEST_CASE("min-p fits p_i >= min_p * p_max", "[sampling][gof]") {
    const double min_p = GENERATE(0.05, 0.2);
    auto x = test_row(40);
    auto p = softmax_over(x, valid(x), 1.0);
    check_fit({.temperature = 1.3f, .min_p = float(min_p), .seed = 9}, x,
              softmax_over(x, min_p_set(p, min_p), 1.3));
}

TEST_CASE("the llama.cpp chain fits top-k -> top-p -> min-p -> temperature", "[sampling][gof]") {
    auto x = test_row(64);
    auto p = softmax_over(x, valid(x), 1.0);
    auto keep = top_k_set(p, 40);
    p = softmax_over(x, keep, 1.0);
    keep = top_p_set(p, 0.95);
    p = softmax_over(x, keep, 1.0);
    keep = min_p_set(p, 0.05);
    check_fit({.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 1}, x,
              softmax_over(x, keep, 0.8));
}

TEST_CASE("typical, epsilon and eta fit their sets", "[sampling][gof]") {
    auto x = test_row(40);
    const auto v = valid(x);
    auto p = softmax_over(x, v, 1.0);
    SECTION("epsilon") {
        std::vector<bool> keep(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) keep[i] = p[i] >= 0.02;
        check_fit({.epsilon = 0.02f, .seed = 2}, x, softmax_over(x, keep, 1.0));
    }
    SECTION("eta") {
        double h = 0;
        for (double q : p)
            if (q > 0) h -= q * std::log(q);
        const double eta = std::min(0.05, std::sqrt(0.05) * std::exp(-h));
        std::vector<bool> keep(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) keep[i] = p[i] > 0 && p[i] >= eta;
        check_fit({.eta = 0.05f, .seed = 2}, x, softmax_over(x, keep, 1.0));
    }
    SECTION("typical") {
        double h = 0;
        for (double q : p)
            if (q > 0) h -= q * std::log(q);
        std::vector<std::size_t> o;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (p[i] > 0) o.push_back(i);
        std::stable_sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) {
            return std::fabs(-std::log(p[a]) - h) < std::fabs(-std::log(p[b]) - h);
        });
        std::vector<bool> keep(x.size(), false);
        double before = 0;
        for (std::size_t i : o) {
            if (before >= 0.5) break;
            keep[i] = true;
            before += p[i];
        }
        check_fit({.typical_p = 0.5f, .seed = 2}, x, softmax_over(x, keep, 1.0));
    }
    SECTION("top-n-sigma") {
        double sum = 0, sq = 0, m = -INFINITY;
        int n = 0;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (v[i]) {
                sum += x[i];
                sq += double(x[i]) * x[i];
                m = std::max(m, double(x[i]));
                ++n;
            }
        const double sd = std::sqrt(sq / n - (sum / n) * (sum / n));
        std::vector<bool> keep(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) keep[i] = v[i] && double(x[i]) >= m - 1.0 * sd;
        check_fit({.top_n_sigma = 1.f, .seed = 2}, x, softmax_over(x, keep, 1.0));
    }
}

TEST_CASE("XTC with probability 1 removes every top choice but the least probable",
          "[sampling][gof]") {
    std::vector<float> x = {2.f, 1.9f, 1.5f, 0.f, -1.f, -2.f};
    auto p = softmax_over(x, valid(x), 1.0);
    std::vector<bool> keep(x.size(), true);
    // p >= 0.15: tokens 0, 1, 2 -> drop 0 and 1
    REQUIRE(p[2] >= 0.15);
    REQUIRE(p[3] < 0.15);
    keep[0] = keep[1] = false;
    check_fit({.xtc_probability = 1.f, .xtc_threshold = 0.15f, .seed = 8}, x,
              softmax_over(x, keep, 1.0));
    // probability 0.5: a mixture of both
    auto q_all = softmax_over(x, valid(x), 1.0), q_xtc = softmax_over(x, keep, 1.0);
    std::vector<double> mix(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) mix[i] = 0.5 * q_all[i] + 0.5 * q_xtc[i];
    check_fit({.xtc_probability = 0.5f, .xtc_threshold = 0.15f, .seed = 8}, x, mix);
}

TEST_CASE("negative control: a wrong expectation is detected", "[sampling][gof]") {
    auto x = test_row(40);
    sampler s({.temperature = 1.f, .seed = 11}, x.size());
    auto counts = dk_test::histogram(
        x.size(), n_draws, [&](std::size_t i) { return std::size_t(s.sample(x, i, 0).token); });
    // expectation at the wrong temperature
    const auto g =
        dk_test::chi_square(counts, dk_test::with_overflow_bin(softmax_over(x, valid(x), 1.1)));
    CHECK(g.p_value < dk_test::false_failure_rate);
}

TEST_CASE("mirostat v2 (mu held fixed by restore) fits the renormalised p >= 2^-mu set",
          "[sampling][gof]") {
    auto x = test_row(40);
    const sampling_params p{.temperature = 0.9f, .mirostat = true, .mirostat_tau = 2.f, .seed = 12};
    auto q = softmax_over(x, valid(x), 0.9);
    std::vector<bool> keep(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) keep[i] = q[i] > 0 && q[i] >= std::exp2(-4.0);
    const auto expected = softmax_over(x, keep, 0.9);
    sampler s(p, x.size());
    const sampler_state fresh = s.state();
    auto counts = dk_test::histogram(x.size(), n_draws, [&](std::size_t i) {
        s.restore(fresh);
        return std::size_t(s.sample(x, i, 0).token);
    });
    const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
    INFO("chi2 " << g.statistic << " df " << g.df << " p " << g.p_value);
    CHECK_FALSE(g.impossible_draw);
    CHECK(g.p_value > dk_test::false_failure_rate);
}

TEST_CASE("vLLM order and penalties (sparse processor path) fit their analytic sets",
          "[sampling][gof]") {
    auto x = test_row(40);
    // vLLM: temperature 0.7, then min-p 0.1 in probability space, then top-k 6
    auto q = softmax_over(x, valid(x), 0.7);
    auto keep = min_p_set(q, 0.1);
    q = softmax_over(x, keep, 0.7);
    keep = top_k_set(q, 6);
    check_fit(
        {.temperature = 0.7f, .top_k = 6, .min_p = 0.1f, .seed = 21, .order = sampling_order::vllm},
        x, softmax_over(x, keep, 0.7));
    // presence penalty 1.5 on the history's tokens, then top-k 10 (llama.cpp order): the sampler
    // patches those entries without copying the row
    const std::vector<token_id> history = {0, 1, 2, 7, 7, 12};
    std::vector<float> y = x;
    for (token_id t : {0, 1, 2, 7, 12}) y[std::size_t(t)] -= 1.5f;
    const auto expected = softmax_over(y, top_k_set(softmax_over(y, valid(y), 1.0), 10), 1.0);
    sampler s({.top_k = 10, .seed = 5, .penalties = {.presence = 1.5f}}, x.size());
    auto counts = dk_test::histogram(x.size(), n_draws, [&](std::size_t i) {
        return std::size_t(s.sample(x, {.sequence = i, .step = 1, .history = history}).token);
    });
    const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
    CHECK_FALSE(g.impossible_draw);
    CHECK(g.p_value > dk_test::false_failure_rate);
}
}  // namespace dk_t_sampling_gof
