// The sampler under a token bitmask (sample_context::mask): its law is the pipeline's on the
// masked row (distribution() equal, and sample()'s draws by chi-square against it, for every
// preset order, with logprobs.chosen on and off); bad sizes; all-zero masks; min_keep; logprobs;
// a mask with a constraint; the min-p envelope draw. Chi-square checks fail with probability
// dk_test::false_failure_rate (1e-7) each for a correct sampler; this file makes about 80 of
// them, so a fixed seed is unlucky with probability < 1e-5.
#include "dk_test.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_mask {

using namespace decodekit;

namespace {
constexpr float ninf = -std::numeric_limits<float>::infinity();
constexpr std::size_t V = 100;  // not a multiple of 32: a tail word

std::vector<float> row_of(unsigned seed, double sd = 1.5) {
    std::mt19937 g(seed);
    std::normal_distribution<double> nd(0, sd);
    std::vector<float> x(V);
    for (float& v : x) v = float(nd(g));
    x[7] = std::numeric_limits<float>::quiet_NaN();
    x[11] = ninf;
    return x;
}

// Words of a mask over V tokens allowing each token with probability `percent` / 100; bits past
// V set (they must be ignored).
std::vector<std::uint32_t> mask_words(unsigned seed, int percent) {
    std::mt19937 g(seed);
    std::vector<std::uint32_t> w(kernels::bitmask_words(V), 0u);
    for (std::size_t i = 0; i < 32 * w.size(); ++i)
        if (i >= V || int(g() % 100) < percent) w[i / 32] |= 1u << (i % 32);
    return w;
}

kernels::token_bitmask view(const std::vector<std::uint32_t>& w) { return {.words = w, .size = V}; }

std::vector<float> masked(std::vector<float> x, const std::vector<std::uint32_t>& w) {
    kernels::apply_token_bitmask_inplace(x, view(w));
    return x;
}

// The law of a distribution as a dense vector over V.
std::vector<double> dense(const distribution& d) {
    std::vector<double> p(V, 0.0);
    for (std::size_t i = 0; i < d.size(); ++i) p[std::size_t(d.tokens[i])] = double(d.probs[i]);
    return p;
}

struct config {
    std::string name;
    sampling_params p;
};

// Parameter sets covering the fused paths (greedy, top-k, min-p, temperature only, min-p's
// envelope) and the copy path (top-p, typical, the full chain, sparse processors).
std::vector<config> configs(sampling_order order) {
    std::vector<config> c;
    auto add = [&](std::string name, sampling_params p) {
        p.order = order;
        c.push_back({std::move(name), std::move(p)});
    };
    add("temperature", {.temperature = 0.8f});
    add("top_k", {.temperature = 1.2f, .top_k = 12});
    add("min_p", {.temperature = 0.9f, .min_p = 0.1f});
    add("top_p", {.temperature = 1.3f, .top_p = 0.9f});
    add("typical", {.typical_p = 0.8f});
    add("chain", {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f});
    add("penalties+top_k",
        {.temperature = 1.1f, .top_k = 20, .penalties = {.repetition = 1.3f, .frequency = 0.2f}});
    add("penalties+min_p", {.min_p = 0.05f, .penalties = {.repetition = 1.3f}});
    add("min_keep", {.min_p = 0.6f, .min_keep = 30});
    return c;
}

const std::vector<token_id> history = {1, 2, 3, 2, 40, 41, 99, 98, 2};

sample_context ctx_of(std::uint64_t step, const std::vector<std::uint32_t>* w) {
    sample_context c{.sequence = 5, .step = step, .history = history, .prompt_length = 2};
    if (w) c.mask = view(*w);
    return c;
}

const sampling_order orders[] = {sampling_order::llama_cpp, sampling_order::hf,
                                 sampling_order::vllm};
}  // namespace

TEST_CASE("masked distribution() equals the pipeline on the masked row, every preset order") {
    const auto x = row_of(1);
    for (const int percent : {50, 10, 3}) {
        // the first seed from 10 whose mask allows at least 2 valid entries
        std::vector<std::uint32_t> w;
        std::vector<float> xm;
        for (unsigned seed = 10;; ++seed) {
            w = mask_words(seed, percent);
            xm = masked(x, w);
            std::size_t allowed_valid = 0;
            for (const float v : xm) allowed_valid += v > ninf;
            if (allowed_valid >= 2) break;
        }
        for (const sampling_order order : orders)
            for (config& c : configs(order)) {
                INFO(c.name << " order " << int(order) << " percent " << percent);
                sampler s(c.p, V);
                const distribution dm = s.distribution(x, ctx_of(3, &w));
                const std::vector<token_id> t(dm.tokens.begin(), dm.tokens.end());
                const std::vector<float> pr(dm.probs.begin(), dm.probs.end());
                const distribution d = s.distribution(xm, ctx_of(3, nullptr));
                REQUIRE(t.size() == d.size());
                for (std::size_t i = 0; i < t.size(); ++i) {
                    REQUIRE(t[i] == d.tokens[i]);
                    REQUIRE(view(w).allowed(std::size_t(t[i])));
                    REQUIRE(pr[i] == dk_test::Approx(d.probs[i]).epsilon(1e-5));
                }
                // greedy: the same argmax
                sampling_params g = c.p;
                g.temperature = 0.f;
                sampler sg(g, V);
                const sample_result a = sg.sample(x, ctx_of(0, &w));
                const sample_result b = sg.sample(xm, ctx_of(0, nullptr));
                REQUIRE(a.status == b.status);
                REQUIRE(a.token == b.token);
            }
    }
}

TEST_CASE("masked sample() follows the pipeline's law on the masked row (chi-square)") {
    const auto x = row_of(2);
    const auto w = mask_words(21, 40);
    const auto xm = masked(x, w);
    constexpr std::size_t n = 20000;
    for (const sampling_order order : orders)
        for (config& c : configs(order))
            for (const bool chosen : {true, false}) {
                INFO(c.name << " order " << int(order) << " chosen " << chosen);
                c.p.logprobs.chosen = chosen;
                sampler s(c.p, V);
                const std::vector<double> law = dense(s.distribution(xm, ctx_of(0, nullptr)));
                const auto counts = dk_test::histogram(V, n, [&](std::size_t i) {
                    const sample_result r = s.sample(x, ctx_of(i, &w));
                    return r.ok() ? std::size_t(r.token) : V;
                });
                dk_test::require_law(counts, law);
            }
}

TEST_CASE("min-p's envelope draw (logprobs off) follows min-p then temperature, masked or not") {
    for (const double sd : {0.3, 1.5, 6.0}) {
        const auto x = row_of(3, sd);
        const auto w = mask_words(31, 60);
        for (const sampling_order order : orders)
            for (const float mp : {0.05f, 0.3f})
                for (const bool use_mask : {false, true}) {
                    INFO("sd " << sd << " order " << int(order) << " min_p " << mp << " mask "
                               << use_mask);
                    sampling_params p{.temperature = 0.7f, .min_p = mp, .order = order};
                    sampler exact(p, V);
                    p.logprobs.chosen = false;
                    sampler envelope(p, V);
                    const auto xm = use_mask ? masked(x, w) : x;
                    const std::vector<double> law =
                        dense(exact.distribution(xm, ctx_of(0, nullptr)));
                    const auto counts = dk_test::histogram(V, 20000, [&](std::size_t i) {
                        const sample_result r =
                            envelope.sample(x, ctx_of(i, use_mask ? &w : nullptr));
                        REQUIRE(std::isnan(r.logprob));
                        return r.ok() ? std::size_t(r.token) : V;
                    });
                    dk_test::require_law(counts, law);
                }
    }
}

TEST_CASE("masks that do not cover the vocabulary give bad_input; longer masks are fine") {
    const auto x = row_of(4);
    std::vector<std::uint32_t> w = mask_words(41, 50);
    for (const sampling_order order : orders)
        for (config& c : configs(order)) {
            INFO(c.name);
            sampler s(c.p, V);
            sample_context ctx = ctx_of(0, nullptr);
            ctx.mask = {.words = std::span<const std::uint32_t>(w).first(w.size() - 1), .size = V};
            CHECK(s.sample(x, ctx).status == sample_status::bad_input);
            CHECK(s.distribution(x, ctx).empty());
            ctx.mask = {.words = w, .size = V - 1};  // describes V - 1 tokens
            CHECK(s.sample(x, ctx).status == sample_status::bad_input);
            ctx.mask = {.words = {}, .size = V};  // no words: not "no mask"
            CHECK(s.sample(x, ctx).status == sample_status::bad_input);
            std::vector<std::uint32_t> longer(w);
            longer.push_back(~0u);
            ctx.mask = {.words = longer, .size = 32 * longer.size()};
            for (std::uint64_t step = 0; step < 200; ++step) {
                ctx.step = step;
                const sample_result r = s.sample(x, ctx);
                REQUIRE(r.ok());
                REQUIRE(std::size_t(r.token) < V);
                REQUIRE(view(w).allowed(std::size_t(r.token)));
            }
        }
}

TEST_CASE("a mask allowing no valid token: no_allowed_token (no_valid_token for an empty row)") {
    const auto x = row_of(5);
    const std::vector<std::uint32_t> zero(kernels::bitmask_words(V), 0u);
    std::vector<std::uint32_t> only_invalid(zero);  // allows the NaN and the -inf entry only
    only_invalid[0] = (1u << 7) | (1u << 11);
    const std::vector<float> dead(V, ninf);
    for (const sampling_order order : orders)
        for (config& c : configs(order))
            for (const bool greedy : {false, true})
                for (const bool chosen : {true, false}) {
                    INFO(c.name << " greedy " << greedy << " chosen " << chosen);
                    if (greedy) c.p.temperature = 0.f;
                    c.p.logprobs.chosen = chosen;
                    sampler s(c.p, V);
                    const sample_result r = s.sample(x, ctx_of(0, &zero));
                    CHECK(r.status == sample_status::no_allowed_token);
                    CHECK(r.token == -1);
                    CHECK(s.sample(x, ctx_of(1, &only_invalid)).status ==
                          sample_status::no_allowed_token);
                    CHECK(s.sample(dead, ctx_of(2, &zero)).status == sample_status::no_valid_token);
                    CHECK(s.distribution(x, ctx_of(3, &zero)).empty());
                }
}

TEST_CASE("the mask wins over min_keep") {
    const auto x = row_of(6);
    std::vector<std::uint32_t> w(kernels::bitmask_words(V), 0u);
    w[0] = (1u << 3) | (1u << 20);  // two tokens
    w[2] = 1u << 1;                 // token 65
    for (const sampling_order order : orders) {
        sampler s({.temperature = 1.f, .min_p = 0.9f, .min_keep = 10, .order = order}, V);
        const distribution d = s.distribution(x, ctx_of(0, &w));
        CHECK(d.size() <= 3);
        CHECK(!d.empty());
        for (const token_id t : d.tokens) CHECK(view(w).allowed(std::size_t(t)));
        sampler k({.top_k = 50, .min_keep = 10, .order = order}, V);
        CHECK(k.distribution(x, ctx_of(0, &w)).size() == 3);
    }
}

TEST_CASE("logprobs under a mask: processed ones of the masked law, raw ones raw") {
    const auto x = row_of(7);
    const auto w = mask_words(71, 30);
    const auto xm = masked(x, w);
    token_id disallowed = -1;
    for (std::size_t i = 0; i < V && disallowed < 0; ++i)
        if (!view(w).allowed(i) && std::isfinite(x[i])) disallowed = token_id(i);
    REQUIRE(disallowed >= 0);
    double lse = 0, m = ninf;
    for (float v : x)
        if (std::isfinite(v)) m = std::max(m, double(v));
    for (float v : x)
        if (std::isfinite(v)) lse += std::exp(double(v) - m);
    lse = m + std::log(lse);
    for (const sampling_order order : orders)
        for (config& c : configs(order)) {
            INFO(c.name);
            c.p.logprobs = {.raw = true, .top_n = 5, .ids = {disallowed}, .processed = true};
            sampler s(c.p, V);
            const std::vector<double> law = dense(s.distribution(xm, ctx_of(0, nullptr)));
            for (std::uint64_t step = 0; step < 20; ++step) {
                const sample_result r = s.sample(x, ctx_of(step, &w));
                REQUIRE(r.ok());
                const std::size_t t = std::size_t(r.token);
                REQUIRE(view(w).allowed(t));
                CHECK(r.logprob == dk_test::Approx(std::log(law[t])).margin(1e-4));
                CHECK(r.raw_logprob == dk_test::Approx(double(x[t]) - lse).margin(1e-4));
                for (const token_logprob& a : r.top) CHECK(view(w).allowed(std::size_t(a.token)));
                REQUIRE(r.requested.size() == 1);
                CHECK(r.requested[0].logprob == ninf);
            }
            c.p.logprobs.processed = false;  // raw extras ignore the mask
            sampler raw(c.p, V);
            const sample_result r = raw.sample(x, ctx_of(0, &w));
            REQUIRE(r.ok());
            CHECK(r.requested[0].logprob ==
                  dk_test::Approx(double(x[std::size_t(disallowed)]) - lse).margin(1e-4));
        }
}

namespace {
// Allows the ids of a fixed set.
struct id_set {
    std::vector<bool> ok;
    bool allowed(token_id t, const processor_context&) const {
        return t >= 0 && std::size_t(t) < ok.size() && ok[std::size_t(t)];
    }
};
}  // namespace

TEST_CASE("a mask and a constraint: the mask first, the constraint on what it allows") {
    const auto x = row_of(8);
    const auto w = mask_words(81, 50);
    std::vector<bool> ok(V);
    std::mt19937 g(82);
    for (std::size_t i = 0; i < V; ++i) ok[i] = g() % 2 == 0;
    std::vector<float> both = masked(x, w);
    for (std::size_t i = 0; i < V; ++i)
        if (!ok[i]) both[i] = ninf;
    for (const sampling_order order : orders)
        for (config& c : configs(order)) {
            INFO(c.name);
            sampler plain(c.p, V);
            const std::vector<double> law = dense(plain.distribution(both, ctx_of(0, nullptr)));
            c.p.constraint = id_set{ok};
            sampler s(c.p, V);
            const auto counts = dk_test::histogram(V, 20000, [&](std::size_t i) {
                const sample_result r = s.sample(x, ctx_of(i, &w));
                return r.ok() ? std::size_t(r.token) : V;
            });
            dk_test::require_law(counts, law);
            const std::vector<std::uint32_t> zero(kernels::bitmask_words(V), 0u);
            CHECK(s.sample(x, ctx_of(0, &zero)).status == sample_status::no_allowed_token);
        }
}
}  // namespace dk_t_sampling_mask
