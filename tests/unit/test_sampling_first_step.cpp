// typical and XTC as the FIRST step of the chain (on the full row) work without sorting the row
// (a logit interval / a compaction of the head). They must give the result of the old path,
// which materialised and sorted the whole row: that path is still the one they take on an
// already materialised set, so the old result is obtained by putting a step that keeps every
// valid entry in front (top-n-sigma with a huge n materialises the row and drops nothing).
// Rows at all four benchmark vocabulary sizes: a realistic LM-head row (Gaussian bulk plus ~64
// heavy tokens, as bench_common.hpp) with a few NaN / -inf entries, and a flat Gaussian row
// (large typical sets). Sets must match exactly on the realistic rows; on flat rows S and H
// come from the vectorised kernels (rounding ~1e-7), so a token at the crossing may differ.
// typical on the full row leaves its set as a cut over the row (drawn without compacting it):
// sample() must give the compacted draw's token for the same key on the benchmark row family.
#include "dk_family.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_first_step {

using namespace decodekit;

namespace {

std::uint64_t splitmix(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
double unif(std::uint64_t& s) { return (double(splitmix(s) >> 11) + 0.5) * 0x1p-53; }

// kind 0: Gaussian bulk (mean -2, sd 2.5) + 64 heavy tokens in [8, 18] + a few NaN / -inf;
// kind 1: flat Gaussian (sd 1).
std::vector<float> make_row(std::size_t v, int kind, std::uint64_t seed) {
    std::uint64_t s = seed * 7919 + v;
    std::vector<float> x(v);
    const double mean = kind == 0 ? -2.0 : 0.0, sd = kind == 0 ? 2.5 : 1.0;
    for (float& e : x) {
        const double g =
            std::sqrt(-2.0 * std::log(unif(s))) * std::cos(6.283185307179586 * unif(s));
        e = float(mean + sd * g);
    }
    if (kind == 0) {
        for (int t = 0; t < 64; ++t) x[splitmix(s) % v] = float(8.0 + 10.0 * unif(s));
        x[splitmix(s) % v] = std::numeric_limits<float>::quiet_NaN();
        x[splitmix(s) % v] = -std::numeric_limits<float>::infinity();
    }
    return x;
}

// The same params with a first step that materialises the row and keeps every valid entry.
sampling_params old_path(sampling_params p) {
    std::vector<sampling_step> steps =
        p.order == sampling_order::custom
            ? p.custom_order
            : std::vector<sampling_step>(preset_steps(p.order).begin(),
                                         preset_steps(p.order).end());
    // in front of the first truncation step (after a leading temperature)
    auto at = steps.begin();
    while (at != steps.end() && *at == sampling_step::temperature) ++at;
    steps.erase(std::remove(steps.begin(), steps.end(), sampling_step::top_n_sigma), steps.end());
    at = steps.begin();
    while (at != steps.end() && *at == sampling_step::temperature) ++at;
    steps.insert(at, sampling_step::top_n_sigma);
    p.order = sampling_order::custom;
    p.custom_order = steps;
    p.top_n_sigma = 1e6f;  // m - 1e6 sd: below every finite logit here
    return p;
}

struct compared {
    std::size_t sym_diff = 0;  // tokens in one set only
    double tv = 0;             // total variation between the two distributions
    bool same_order = true;
};

compared compare(const distribution& a, const distribution& b) {
    compared c;
    std::vector<std::pair<token_id, double>> pa, pb;
    for (std::size_t i = 0; i < a.size(); ++i) pa.push_back({a.tokens[i], a.probs[i]});
    for (std::size_t i = 0; i < b.size(); ++i) pb.push_back({b.tokens[i], b.probs[i]});
    c.same_order =
        a.size() == b.size() && std::equal(a.tokens.begin(), a.tokens.end(), b.tokens.begin());
    std::sort(pa.begin(), pa.end());
    std::sort(pb.begin(), pb.end());
    std::size_t i = 0, j = 0;
    while (i < pa.size() || j < pb.size()) {
        if (j == pb.size() || (i < pa.size() && pa[i].first < pb[j].first)) {
            c.tv += pa[i++].second;
            ++c.sym_diff;
        } else if (i == pa.size() || pb[j].first < pa[i].first) {
            c.tv += pb[j++].second;
            ++c.sym_diff;
        } else {
            c.tv += std::fabs(pa[i++].second - pb[j++].second);
        }
    }
    c.tv /= 2;
    return c;
}

const std::vector<std::size_t> vocab_sizes = {32000, 128256, 151936, 256000};

}  // namespace

TEST_CASE("typical-first and XTC-first chains equal the old materialise-and-sort path",
          "[sampling][typical][xtc]") {
    std::vector<sampling_params> ps = {
        {.typical_p = 0.2f},
        {.typical_p = 0.5f, .seed = 1},
        {.temperature = 0.7f, .typical_p = 0.9f, .seed = 2, .order = sampling_order::hf},
        {.temperature = 1.5f,
         .typical_p = 0.95f,
         .min_keep = 5,
         .seed = 3,
         .order = sampling_order::vllm},
        {.temperature = 0.8f, .min_p = 0.01f, .typical_p = 0.9f, .seed = 4},  // typical, then min-p
        {.xtc_probability = 1.f, .xtc_threshold = 0.1f, .seed = 5},
        {.xtc_probability = 1.f, .xtc_threshold = 0.02f, .seed = 6},
        {.temperature = 0.6f,
         .xtc_probability = 1.f,
         .xtc_threshold = 0.05f,
         .seed = 7,
         .order = sampling_order::hf},
        {.xtc_probability = 1.f, .xtc_threshold = 0.3f, .min_keep = 4, .seed = 8},
        {.temperature = 1.2f,
         .xtc_probability = 1.f,
         .xtc_threshold = 0.01f,
         .mirostat = true,
         .seed = 9,
         .order = sampling_order::hf},  // XTC, then mirostat on the remaining row
    };
    std::size_t exact = 0, cases = 0, xtc_dropped = 0;
    for (std::size_t v : vocab_sizes)
        for (int kind : {0, 1})
            for (std::size_t k = 0; k < ps.size(); ++k) {
                if (kind == 1 && (v == 128256 || v == 256000)) continue;  // time
                const sampling_params& p = ps[k];
                const auto x = make_row(v, kind, k);
                sampler fresh(p, v), old(old_path(p), v);
                auto first_cut = [](const sampler& s) {  // the first step after temperature
                    for (sampling_step st : s.steps())
                        if (st != sampling_step::temperature) return st;
                    return sampling_step::temperature;
                };
                REQUIRE((first_cut(fresh) == sampling_step::typical ||
                         first_cut(fresh) == sampling_step::xtc));
                REQUIRE(first_cut(old) == sampling_step::top_n_sigma);
                const sample_context ctx{.sequence = 3, .step = k};
                const auto d_old = old.distribution(x, ctx);
                const auto d_new = fresh.distribution(x, ctx);
                INFO("V " << v << " kind " << kind << " params " << k << " sizes " << d_old.size()
                          << " / " << d_new.size());
                REQUIRE(!d_new.empty());
                const compared c = compare(d_new, d_old);
                ++cases;
                if (kind == 0) {
                    CHECK(c.same_order);
                    CHECK(c.sym_diff == 0);
                    CHECK(c.tv < 1e-5);
                } else {  // flat rows: at most a couple of tokens at the crossing
                    CHECK(c.sym_diff <= 2);
                    CHECK(c.tv < 1e-4);
                }
                exact += c.sym_diff == 0;
                xtc_dropped += p.xtc_probability > 0 && d_new.size() + 1 < v - 2;
                // the token sample() draws lies in the distribution; on truncated (typical)
                // chains it is the old path's token for the same key
                std::vector<token_id> support(d_new.tokens.begin(), d_new.tokens.end());
                std::sort(support.begin(), support.end());
                const auto r_new = fresh.sample(x, ctx);  // (d_new is now invalid)
                REQUIRE(r_new.ok());
                CHECK(std::binary_search(support.begin(), support.end(), r_new.token));
                if (p.typical_p < 1.f && c.sym_diff == 0)
                    CHECK(r_new.token == old.sample(x, ctx).token);
            }
    INFO("exact " << exact << " of " << cases << ", XTC cases that dropped a head " << xtc_dropped);
    CHECK(exact >= cases * 9 / 10);
    CHECK(xtc_dropped >= 8);  // the XTC cases exercise the drop, not only the no-op
}

TEST_CASE("typical-first: negative control and special rows", "[sampling][typical]") {
    const auto x = make_row(32000, 0, 1);
    sampler a({.typical_p = 0.5f}, x.size()), b({.typical_p = 0.9f}, x.size());
    CHECK(a.distribution(x).size() != b.distribution(x).size());
    // +inf entries, all -inf: the materialised path (uniform over +inf; empty)
    std::vector<float> y(5000, -1.f);
    y[10] = y[4000] = std::numeric_limits<float>::infinity();
    sampler t({.typical_p = 0.5f}, y.size()), u({.xtc_probability = 1.f}, y.size());
    for (sampler* s : {&t, &u}) {
        const auto d = s->distribution(y);
        REQUIRE(!d.empty());
        for (std::size_t i = 0; i < d.size(); ++i)
            CHECK((d.tokens[i] == 10 || d.tokens[i] == 4000));
        std::vector<float> z(5000, -std::numeric_limits<float>::infinity());
        CHECK(s->distribution(z).empty());
        CHECK(s->sample(z).status == sample_status::no_valid_token);
    }
}

TEST_CASE(
    "typical on the full row draws from its cut without compacting it: the token of the "
    "compacted draw for the same key",
    "[sampling][typical][draw]") {
    // sample() leaves typical's set as a cut over the row and draws with kernels::draw_cut; the
    // token for a key must be the inverse CDF over distribution_unordered() (the compacted set in
    // id order) with the same uniform, and the chosen logprob that entry's log probability. Both
    // stop rules, typical after temperature (HF order) and a step after typical (min-p in HF's
    // order compacts the cut first), on the four shapes of the benchmark family.
    const std::size_t v = 32000;
    for (const auto sh : dk_family::shapes) {
        const std::vector<float> x = dk_family::make_row(sh, v, 13);
        const sampling_params settings[] = {
            {.typical_p = 0.9f},
            {.typical_p = 0.5f, .typical_mode = typical_stop::exceed},
            {.temperature = 1.5f, .typical_p = 0.9f, .order = sampling_order::hf},
            {.temperature = 0.7f, .typical_p = 0.95f, .order = sampling_order::hf},
            {.min_p = 0.001f, .typical_p = 0.9f, .order = sampling_order::hf},
        };
        std::uint64_t seed = 21;
        for (const sampling_params& p0 : settings) {
            sampling_params p = p0;
            p.seed = seed++;
            p.logprobs.chosen = true;
            sampler s(p, v);
            INFO("shape " << dk_family::name(sh) << " typical_p " << p.typical_p << " T "
                          << p.temperature << " mode " << int(p.typical_mode));
            for (std::uint64_t step = 0; step < 40; ++step) {
                const auto d = s.distribution_unordered(x, {.sequence = 4, .step = step});
                REQUIRE(d.tokens.size() > 0);
                rng_stream g = make_stream({p.seed, 4, step}, rng_purpose::sample);
                const std::size_t i = kernels::draw_inverse_cdf(d.probs, g.uniform());
                REQUIRE(i != npos);
                // (d is a view into the thread's workspace: read before sample() reuses it)
                const token_id want = d.tokens[i];
                const double want_lp = std::log(double(d.probs[i]));
                const auto r = s.sample(x, {.sequence = 4, .step = step});
                REQUIRE(r.ok());
                CHECK(r.token == want);
                CHECK(std::abs(double(r.logprob) - want_lp) < 1e-5);
            }
        }
    }
}
}  // namespace dk_t_sampling_first_step
