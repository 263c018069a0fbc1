// The selection steps (top-p, typical, epsilon, eta, mirostat, top-n-sigma, XTC) in the sampler
// against kernels/reference.hpp: distribution_unordered()'s set equals the reference's set on the
// row family (peaked, Zipf, Gaussian, near-uniform) at the four vocabulary sizes, at temperature 1
// and (HF order) 1.5, on a full row and on a set narrowed by top-k (both tie policies); rows with
// ties and special values; the exact inputs at the sampler level; the typical_mode switch.
#include "dk_family.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_selection {

using namespace decodekit;
namespace ref = decodekit::reference;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

/// A step under test: its params and its reference on a row at temperature t.
struct step_case {
    std::string name;
    sampling_step step;
    std::function<void(sampling_params&)> set;
    std::function<void(std::span<const float>, float, std::size_t, candidates&)> reference;
};

std::vector<step_case> step_cases() {
    return {
        {"top_p 0.95", sampling_step::top_p, [](sampling_params& p) { p.top_p = 0.95f; },
         [](auto x, float t, std::size_t mk, candidates& out) {
             ref::top_p(x, 0.95f, t, mk, out);
         }},
        {"top_p 0.99", sampling_step::top_p, [](sampling_params& p) { p.top_p = 0.99f; },
         [](auto x, float t, std::size_t mk, candidates& out) {
             ref::top_p(x, 0.99f, t, mk, out);
         }},
        {"typical 0.9", sampling_step::typical, [](sampling_params& p) { p.typical_p = 0.9f; },
         [](auto x, float t, std::size_t mk, candidates& out) {
             ref::typical(x, 0.9f, t, mk, typical_stop::reach_with_ties, out);
         }},
        {"typical 0.9 exceed", sampling_step::typical,
         [](sampling_params& p) {
             p.typical_p = 0.9f;
             p.typical_mode = typical_stop::exceed;
         },
         [](auto x, float t, std::size_t mk, candidates& out) {
             ref::typical(x, 0.9f, t, mk, typical_stop::exceed, out);
         }},
        {"epsilon 3e-4", sampling_step::epsilon, [](sampling_params& p) { p.epsilon = 3e-4f; },
         [](auto x, float t, std::size_t mk, candidates& out) {
             ref::epsilon(x, 3e-4f, t, mk, out);
         }},
        {"eta 3e-4", sampling_step::eta, [](sampling_params& p) { p.eta = 3e-4f; },
         [](auto x, float t, std::size_t mk, candidates& out) { ref::eta(x, 3e-4f, t, mk, out); }},
        {"mirostat tau 5", sampling_step::mirostat,
         [](sampling_params& p) {
             p.mirostat = true;
             p.mirostat_tau = 5.f;  // mu = 10 before the first draw
         },
         [](auto x, float t, std::size_t, candidates& out) { ref::mirostat_cut(x, 10.f, t, out); }},
        {"top_n_sigma 1", sampling_step::top_n_sigma,
         [](sampling_params& p) { p.top_n_sigma = 1.f; },
         [](auto x, float, std::size_t mk, candidates& out) { ref::top_n_sigma(x, 1.f, mk, out); }},
        {"xtc 0.1", sampling_step::xtc,
         [](sampling_params& p) {
             p.xtc_probability = 1.f;  // the coin always fires
             p.xtc_threshold = 0.1f;
         },
         [](auto x, float t, std::size_t mk, candidates& out) {
             // the set that remains: every valid entry but the removed ones
             candidates removed(x.size());
             ref::xtc_removed(x, 0.1f, t, mk, removed);
             std::vector<float> y(x.begin(), x.end());
             for (token_id id : removed.ids()) y[std::size_t(id)] = -inf;
             ref::top_k(y, y.size(), tie_policy::keep_ties, out);
         }},
    };
}

/// The ids of a reference set with positive weight at temperature t (the sampler's distribution
/// drops entries whose float weight relative to the max is 0), ascending.
std::vector<token_id> ref_ids(std::span<const float> x, const candidates& set, float t) {
    float m = -inf;
    for (float v : set.logits()) m = v > m ? v : m;
    std::vector<token_id> ids;
    for (std::size_t i = 0; i < set.size(); ++i) {
        const float v = set.logits()[i];
        if (m == inf ? v == inf : float(std::exp((double(v) - double(m)) / double(t))) > 0)
            ids.push_back(set.ids()[i]);
    }
    std::sort(ids.begin(), ids.end());
    (void)x;
    return ids;
}

std::vector<token_id> got_ids(const distribution& d) {
    std::vector<token_id> ids(d.tokens.begin(), d.tokens.end());
    return ids;
}

/// Runs `order` over x with params p and compares distribution_unordered()'s set (and
/// distribution()'s, on small rows) with `want` (ascending ids).
void check_set(const sampling_params& p, std::span<const float> x,
               const std::vector<token_id>& want) {
    REQUIRE_FALSE(p.check().has_value());
    sampler s(p, x.size());
    const distribution d = s.distribution_unordered(x);
    REQUIRE(std::is_sorted(d.tokens.begin(), d.tokens.end()));
    REQUIRE(got_ids(d) == want);
    double total = 0;
    for (float q : d.probs) total += q;
    CHECK(std::fabs(total - 1) < 1e-4);
    // sample() draws from that set
    const sample_result r = s.sample(x);
    REQUIRE(r.ok());
    CHECK(std::binary_search(want.begin(), want.end(), r.token));
}

}  // namespace

TEST_CASE("each selection step equals its reference on the row family at four vocabulary sizes",
          "[sampling][selection]") {
    for (const std::size_t v : {32000u, 128256u, 151936u, 256000u})
        for (const auto sh : dk_family::shapes) {
            const std::vector<float> x = dk_family::make_row(sh, v, 7);
            candidates want(v);
            for (const step_case& sc : step_cases())
                for (const float t : {1.f, 1.5f}) {
                    if (v != 128256 && t != 1.f) continue;  // keep the test fast
                    INFO(sc.name << " shape " << dk_family::name(sh) << " V " << v << " T " << t);
                    sampling_params p;
                    p.temperature = t;
                    sc.set(p);
                    p.order = sampling_order::custom;
                    p.custom_order = {sampling_step::temperature, sc.step};  // HF: tempered first
                    sc.reference(x, t, p.min_keep, want);
                    check_set(p, x, ref_ids(x, want, t));
                }
        }
}

TEST_CASE("each selection step equals its reference on a set narrowed by top-k (both tie policies)",
          "[sampling][selection]") {
    for (const auto sh : dk_family::shapes)
        for (const tie_policy ties : {tie_policy::exactly_k, tie_policy::keep_ties})
            for (const int k : {40, 5000}) {
                // a row with many ties: logits rounded to a grid
                std::vector<float> x = dk_family::make_row(sh, 32000, 3);
                if (ties == tie_policy::keep_ties)
                    for (float& e : x) e = std::round(e * 4) / 4;
                candidates top(x.size()), want(x.size());
                ref::top_k(x, std::size_t(k), ties, top);
                std::vector<float> y(x.size(), -inf);  // the row restricted to the top-k set
                for (std::size_t i = 0; i < top.size(); ++i)
                    y[std::size_t(top.ids()[i])] = top.logits()[i];
                for (const step_case& sc : step_cases()) {
                    INFO(sc.name << " shape " << dk_family::name(sh) << " k " << k << " ties "
                                 << int(ties));
                    sampling_params p;
                    p.temperature = 0.8f;
                    sc.set(p);
                    p.top_k = k;
                    p.top_k_ties = ties;
                    p.min_keep = 3;
                    p.order = sampling_order::custom;
                    p.custom_order = {sampling_step::top_k, sampling_step::temperature, sc.step};
                    sc.reference(y, 0.8f, p.min_keep, want);
                    check_set(p, x, ref_ids(y, want, 0.8f));
                }
            }
}

TEST_CASE("selection steps on rows with ties, NaN and infinities equal their references",
          "[sampling][selection]") {
    std::uint64_t seed = 99;
    for (int c = 0; c < 200; ++c) {
        const std::size_t v = std::size_t(1 + dk_family::splitmix64(seed) % 300);
        std::vector<float> x(v);
        for (float& e : x) {
            const std::uint64_t r = dk_family::splitmix64(seed) % 100;
            e = r < 5    ? std::numeric_limits<float>::quiet_NaN()
                : r < 10 ? -inf
                         : float(std::round(dk_family::normal01(seed) * 4) / 2);
        }
        if (c % 10 == 0) x[std::size_t(dk_family::splitmix64(seed) % v)] = inf;
        bool any_valid = false;
        for (float e : x) any_valid |= e > -inf;
        if (!any_valid) continue;
        candidates want(v);
        for (const step_case& sc : step_cases()) {
            for (const std::size_t mk : {std::size_t(1), std::size_t(4)}) {
                INFO("case " << c << " " << sc.name << " V " << v << " min_keep " << mk);
                sampling_params p;
                sc.set(p);
                p.min_keep = mk;
                p.order = sampling_order::custom;
                p.custom_order = {sc.step};
                sc.reference(x, 1.f, mk, want);
                check_set(p, x, ref_ids(x, want, 1.f));
            }
        }
    }
}

TEST_CASE("the issue's inputs through the sampler: decimal top-p, HF ties, llama.cpp's stop",
          "[sampling][selection]") {
    auto logs = [](std::vector<double> probs) {
        std::vector<float> x;
        for (double q : probs) x.push_back(float(std::log(q)));
        return x;
    };
    auto kept = [](const sampling_params& p, std::span<const float> x) {
        sampler s(p, x.size());
        return got_ids(s.distribution_unordered(x));
    };
    using ids = std::vector<token_id>;
    // top-p 0.8 on [0.3, 0.1, 0.1, 0.5] keeps {0.5, 0.3} (0.8f is held as 0.800000012)
    CHECK(kept({.top_p = 0.8f}, logs({0.3, 0.1, 0.1, 0.5})) == ids{0, 3});
    // epsilon: every token below epsilon, 8 tied at the top: min_keep 1 keeps the 8
    {
        std::vector<float> x(64, -3.f);
        for (int i = 0; i < 8; ++i) x[std::size_t(10 + i)] = 0.f;
        const ids want = {10, 11, 12, 13, 14, 15, 16, 17};
        CHECK(kept({.epsilon = 0.5f}, x) == want);
        CHECK(kept({.epsilon = 0.5f, .min_keep = 3}, x) == want);
        CHECK(kept({.epsilon = 0.5f, .min_keep = 9}, x).size() == 64);  // the 9th: all tied
    }
    // typical on a uniform row of 5 with min_keep 3 keeps the 5 (equal scores)
    CHECK(kept({.typical_p = 0.5f, .min_keep = 3}, std::vector<float>(5, 1.f)) ==
          ids{0, 1, 2, 3, 4});
    // typical, mass landing exactly on typical_p: llama.cpp's stop keeps one token more. Row
    // [0.25, 0.5, 0.125, 0.125] (H = 1.2130): scores 0.17 (id 0), 0.52 (id 1), 0.87 (ids 2, 3):
    // order 0, 1, 2, 3 with masses 0.25, 0.75, 0.875, 1.
    {
        const std::vector<float> x = logs({0.25, 0.5, 0.125, 0.125});
        const ids reach = kept({.typical_p = 0.75f}, x);
        const ids exceed = kept({.typical_p = 0.75f, .typical_mode = typical_stop::exceed}, x);
        CHECK(reach == ids{0, 1});
        CHECK(exceed == ids{0, 1, 2});
    }
}

TEST_CASE("sampling_params.typical_mode is validated", "[sampling][selection]") {
    sampling_params p;
    p.typical_mode = typical_stop(7);
    const auto e = p.check();
    REQUIRE(e.has_value());
    CHECK(e->find("sampling_params.typical_mode") == 0);
    p.typical_mode = typical_stop::exceed;
    CHECK_FALSE(p.check().has_value());
}

namespace {
struct allow_all {
    bool allowed(token_id, const processor_context&) const { return true; }
};
}  // namespace

TEST_CASE("top_k_min_keep: top-k keeps max(top_k, min_keep), Hugging Face's top-k warper",
          "[sampling][selection]") {
    // Four near-equal logits on top, the rest far below.
    std::vector<float> x(32, -20.f);
    for (int i = 0; i < 4; ++i) x[std::size_t(3 + 5 * i)] = 1.f - 0.01f * float(i);
    using ids = std::vector<token_id>;
    auto kept = [&](const sampling_params& p) {
        sampler s(p, x.size());
        return got_ids(s.distribution_unordered(x));
    };
    CHECK(kept({.top_k = 2, .min_keep = 4}) == ids{3, 8});  // llama.cpp / vLLM: top_k alone
    CHECK(kept({.top_k = 2, .top_k_min_keep = true, .min_keep = 4}) == ids{3, 8, 13, 18});
    CHECK(kept({.top_k = 5, .top_k_min_keep = true, .min_keep = 4}).size() == 5);  // top_k wins
    // The same k on the constraint's top-k-first walk (sample(): 400 draws see all four; the
    // chance that one of four near-equal tokens is never drawn is below 4 (0.76)^400 < 1e-40).
    for (bool hf : {false, true}) {
        sampler s({.top_k = 2, .top_k_min_keep = hf, .min_keep = 4, .constraint = allow_all{}},
                  x.size());
        std::vector<bool> seen(x.size(), false);
        for (std::uint64_t step = 0; step < 400; ++step) {
            const auto r = s.sample(x, {.sequence = 1, .step = step});
            REQUIRE(r.token >= 0);
            seen[std::size_t(r.token)] = true;
        }
        std::size_t n = 0;
        for (bool b : seen) n += b;
        CHECK(n == (hf ? 4u : 2u));
    }
}

namespace {

/// For 40 keys: sample()'s token is the inverse CDF over distribution_unordered() (the compacted
/// set in id order) with the same uniform, its chosen logprob that entry's log probability.
void check_draws_match(const std::vector<float>& x, sampling_params p, std::uint64_t seed) {
    p.seed = seed;
    p.logprobs.chosen = true;
    sampler s(p, x.size());
    for (std::uint64_t step = 0; step < 40; ++step) {
        const auto d = s.distribution_unordered(x, {.sequence = 3, .step = step});
        REQUIRE(d.tokens.size() > 0);
        rng_stream g = make_stream({p.seed, 3, step}, rng_purpose::sample);
        const std::size_t i = kernels::draw_inverse_cdf(d.probs, g.uniform());
        REQUIRE(i != npos);
        // (d is a view into the thread's workspace: read before sample() reuses it)
        const token_id want = d.tokens[i];
        const double want_lp = std::log(double(d.probs[i]));
        const auto r = s.sample(x, {.sequence = 3, .step = step});
        REQUIRE(r.ok());
        CHECK(r.token == want);
        CHECK(std::abs(double(r.logprob) - want_lp) < 1e-5);
    }
}

}  // namespace

TEST_CASE(
    "top-p on the full row draws from its cut without compacting it: the token of the "
    "compacted draw for the same key",
    "[sampling][selection][draw]") {
    // sample() leaves top-p's set as a cut over the row and draws with kernels::draw_cut; the
    // token for a key must be the inverse CDF over distribution_unordered() (the compacted set in
    // id order) with the same uniform, and the chosen logprob that entry's log probability.
    // A step after top-p (temperature in llama.cpp's order, min-p in HF's) compacts the cut
    // first: the same check holds there.
    const std::size_t v = 32000;
    for (const auto sh : dk_family::shapes) {
        const std::vector<float> x = dk_family::make_row(sh, v, 11);
        const sampling_params settings[] = {
            {.top_p = 0.95f},
            {.temperature = 1.5f, .top_p = 0.99f, .order = sampling_order::hf},
            {.temperature = 1.5f, .top_p = 0.95f, .order = sampling_order::hf},
            {.temperature = 0.7f, .top_p = 0.9f, .order = sampling_order::llama_cpp},
            {.top_p = 0.95f, .min_p = 0.001f, .order = sampling_order::hf},
        };
        std::uint64_t seed = 5;
        for (const sampling_params& p : settings) {
            INFO("shape " << dk_family::name(sh) << " top_p " << p.top_p << " T " << p.temperature);
            check_draws_match(x, p, seed++);
        }
    }
}

TEST_CASE(
    "top-p's sets of fewer than V / 16 entries stay a cut in sample() and are compacted for "
    "verification",
    "[sampling][selection][draw]") {
    // top-p leaves even a small set as a cut (the draw reads a quarter of the row on average;
    // compacting 3.7k of 128k entries cost more on AVX2): the peaked rows at T 1 and, in HF
    // order, T 1.5 keep fewer than V / 16 entries, and their draws are checked against the
    // compacted draw by the test above. processed_set() still compacts such a set (a sparse
    // target makes verification's residual cheap): not a cut, the same ids as
    // distribution_unordered().
    const std::size_t v = 32000;
    const std::vector<float> x = dk_family::make_row(dk_family::shapes[0], v, 11);  // peaked
    const sampling_params settings[] = {
        {.top_p = 0.95f},
        {.temperature = 1.5f, .top_p = 0.95f, .order = sampling_order::hf},
    };
    for (const sampling_params& p : settings) {
        INFO("T " << p.temperature);
        sampler s(p, v);
        const distribution d = s.distribution_unordered(x);
        const std::vector<token_id> want(d.tokens.begin(), d.tokens.end());
        REQUIRE(want.size() > 0);
        CHECK(want.size() * 16 < v);
        const weighted_set w = processed_set(s, x);
        CHECK_FALSE(w.is_cut);
        REQUIRE(w.kept == want.size());
        CHECK(std::vector<token_id>(w.ids.begin(), w.ids.end()) == want);
    }
}

TEST_CASE(
    "eta, epsilon and mirostat on the full row draw from their cut: the token of the "
    "compacted draw",
    "[sampling][selection][draw]") {
    // With a threshold that does not bound the kept set below V / 16 entries (eta on a
    // high-entropy row, epsilon < 16 / V, 2^mu > V / 16) sample() leaves the set as a cut over
    // the row and draws with kernels::draw_cut: the token for a key must be the inverse CDF over
    // distribution_unordered() (the compacted set in id order) with the same uniform, the chosen
    // logprob that entry's. Steps after the cut (min-p, temperature in llama.cpp's order)
    // compact it first; mirostat's mu moves the same way (distribution_unordered() leaves it).
    const std::size_t v = 32000;
    for (const auto sh : dk_family::shapes) {
        const std::vector<float> x = dk_family::make_row(sh, v, 13);
        const sampling_params settings[] = {
            {.eta = 3e-4f},
            {.temperature = 1.5f, .eta = 3e-4f, .order = sampling_order::hf},
            {.temperature = 0.7f, .eta = 3e-4f, .order = sampling_order::llama_cpp},
            {.min_p = 0.001f, .eta = 3e-4f, .order = sampling_order::llama_cpp},
            {.epsilon = 1e-4f},
            {.epsilon = 1e-5f},
            {.epsilon = 1e-5f, .eta = 1e-5f, .order = sampling_order::hf},
            {.mirostat = true, .mirostat_tau = 8.f},
        };
        std::uint64_t seed = 21;
        for (const sampling_params& p : settings) {
            INFO("shape " << dk_family::name(sh) << " eta " << p.eta << " epsilon " << p.epsilon
                          << " mirostat " << p.mirostat << " T " << p.temperature);
            check_draws_match(x, p, seed++);
        }
    }
}

TEST_CASE("selection_counters count each tier that decided a selection step, corrected included",
          "[sampling][selection]") {
    // The peaked rows at V = 128256 in HF order at T 1.5, top-p 0.99 (the benchmark's hardest
    // shape for top-p's float bound): the workspace's counters after one sample() per row equal
    // the tiers top_p_cut reports on the same rows, and the corrected tier decides some of them
    // (its own counter, not the float bound's).
    const std::size_t v = 128256;
    const sampling_params p{.temperature = 1.5f, .top_p = 0.99f, .order = sampling_order::hf};
    REQUIRE_FALSE(p.check().has_value());
    sampler s(p, v);
    sampling_workspace ws(v);
    candidates scratch(v);
    std::vector<float> w(v);
    selection_counters want;
    for (std::uint64_t salt = 1; salt <= 6; ++salt) {
        const std::vector<float> x = dk_family::make_row(dk_family::shape::peaked, v, salt);
        const kernels::truncation_result r = kernels::top_p_cut(x, 0.99f, 1.5f, 1, scratch, w);
        REQUIRE(r.ok());
        ++want.runs;
        want.corrected += r.tier == kernels::exactness_tier::corrected;
        want.double_pass += r.tier == kernels::exactness_tier::double_pass;
        want.reference += r.tier == kernels::exactness_tier::reference;
        REQUIRE(s.sample(x, sample_context{.sequence = 0, .step = salt}, ws).ok());
    }
    INFO("corrected " << want.corrected << " double " << want.double_pass << " reference "
                      << want.reference);
    CHECK(want.corrected > 0);
    CHECK(ws.tiers.runs == want.runs);
    CHECK(ws.tiers.corrected == want.corrected);
    CHECK(ws.tiers.double_pass == want.double_pass);
    CHECK(ws.tiers.reference == want.reference);
}
}  // namespace dk_t_sampling_selection
