// Constraints in callback form (sampling_params::constraint): the law of every pipeline is the
// pipeline's law on the masked row (chi-square, false-failure rate 1e-7 per check, fixed seeds),
// the queries are only those the law needs, the opt-in sample_then_check follows its own
// documented law, nothing allowed is its own status, and a constraint's state follows the
// history through the sampler's one mechanism.
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_constraint {

using namespace decodekit;

namespace {
constexpr float ninf = -std::numeric_limits<float>::infinity();

// Allows the ids of a fixed set (counts its own queries).
struct id_set {
    std::vector<bool> ok;
    bool allowed(token_id t, const processor_context&) const {
        return t >= 0 && std::size_t(t) < ok.size() && ok[std::size_t(t)];
    }
};

std::vector<float> row_of(std::size_t v, unsigned seed, double sd = 2.0) {
    std::mt19937 g(seed);
    std::normal_distribution<double> nd(0, sd);
    std::vector<float> x(v);
    for (float& f : x) f = float(nd(g));
    return x;
}
std::vector<bool> allow_every(std::size_t v, std::size_t k, std::size_t first = 0) {
    std::vector<bool> ok(v, false);
    for (std::size_t i = first; i < v; i += k) ok[i] = true;
    return ok;
}
// The law of `p` on x with the disallowed entries at -inf (an unconstrained sampler).
std::vector<double> masked_law(sampling_params p, std::vector<float> x,
                               const std::vector<bool>& ok) {
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!ok[i]) x[i] = ninf;
    p.constraint = {};
    sampler s(p, x.size());
    const auto d = s.distribution(x);
    std::vector<double> law(x.size(), 0.0);
    for (std::size_t i = 0; i < d.size(); ++i) law[std::size_t(d.tokens[i])] = d.probs[i];
    return law;
}
}  // namespace

TEST_CASE("a callback constraint gives the pipeline's law on the masked row", "[constraint][gof]") {
    const std::size_t V = 200;
    const auto x = row_of(V, 3);
    const auto ok = allow_every(V, 3, 1);
    const std::vector<sampling_params> ps = {
        {.temperature = 0.f},                // greedy walk
        {.temperature = 0.8f, .top_k = 10},  // top-k first
        {.temperature = 0.8f, .top_k = 10, .top_k_ties = tie_policy::keep_ties},
        {.temperature = 0.9f, .min_p = 0.05f, .order = sampling_order::vllm},  // min-p first
        {.temperature = 0.7f, .min_p = 0.1f, .min_keep = 5},
        {.temperature = 1.2f, .logprobs = {.chosen = false}},                // draw, check
        {.temperature = 1.2f},                                               // full mask
        {.temperature = 1.5f, .top_p = 0.9f, .order = sampling_order::hf},   // full mask
        {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f},  // llama.cpp chain
        // min-p then temperature with no logprob: draw, then check (up to 8 proposals)
        {.temperature = 0.8f, .min_p = 0.05f, .logprobs = {.chosen = false}},
        {.temperature = 1.3f,
         .min_p = 0.02f,
         .min_p_mode = min_p_space::logits,
         .logprobs = {.chosen = false}},
        {.min_p = 0.1f, .logprobs = {.chosen = false}},  // T 1: min-p alone
    };
    for (std::size_t k = 0; k < ps.size(); ++k) {
        INFO("params " << k);
        sampling_params p = ps[k];
        p.seed = 11 + k;
        p.constraint = id_set{ok};
        const auto law = masked_law(p, x, ok);
        sampler s(p, V);
        const std::size_t n = p.greedy() ? 50 : 30000;
        const auto counts = dk_test::histogram(V, n, [&](std::size_t i) {
            const auto r = s.sample(x, 5, i);
            REQUIRE(r.ok());
            REQUIRE(ok[std::size_t(r.token)]);
            return r.token;
        });
        dk_test::require_law(counts, law);
    }
}

TEST_CASE("a callback constraint is queried only where the law needs it", "[constraint]") {
    const std::size_t V = 5000;
    const auto x = row_of(V, 8);
    std::vector<bool> all(V, true);
    auto queries = [&](sampling_params p, const std::vector<bool>& ok) {
        p.constraint = id_set{ok};
        sampler s(p, V);
        std::size_t total = 0;
        for (std::uint64_t step = 0; step < 50; ++step) {
            const auto r = s.sample(x, 1, step);
            REQUIRE(r.ok());
            total += r.constraint_queries;
        }
        return double(total) / 50.0;
    };
    CHECK(queries({.temperature = 0.f}, all) == 1.0);  // the argmax is allowed
    CHECK(queries({.top_k = 40}, all) == 40.0);
    {  // the max, then each entry above the threshold max + ln(0.2)
        const float m = *std::max_element(x.begin(), x.end());
        const float thr = kernels::min_p_threshold(m, 0.2f, 1.f);
        const auto above =
            double(std::count_if(x.begin(), x.end(), [&](float v) { return v >= thr; }));
        // the walk's top allowed entry is not queried again by the filter
        CHECK(queries({.min_p = 0.2f}, all) == above);
        CHECK(above < 100.0);
    }
    CHECK(queries({.logprobs = {.chosen = false}}, all) == 1.0);  // draw, then check it
    {  // min-p with no logprob: the walk (1 query), then the drawn token unless it is the top
        const double qm = queries({.min_p = 0.05f, .logprobs = {.chosen = false}}, all);
        CHECK(qm >= 1.0);
        CHECK(qm <= 2.0);
    }
    CHECK(queries({.top_p = 0.9f}, all) == double(V));  // top-p needs the whole mask
    // a constraint that forbids the top of the row: the greedy walk goes down to the first
    // allowed entry
    std::vector<token_id> order(V);
    for (std::size_t i = 0; i < V; ++i) order[i] = token_id(i);
    std::sort(order.begin(), order.end(),
              [&](token_id a, token_id b) { return x[std::size_t(a)] > x[std::size_t(b)]; });
    std::vector<bool> no_top10(V, true);
    for (int i = 0; i < 10; ++i) no_top10[std::size_t(order[std::size_t(i)])] = false;
    CHECK(queries({.temperature = 0.f}, no_top10) == 11.0);
}

TEST_CASE("draw-then-check falls back to every verdict after 8 refusals, exact in law",
          "[constraint][gof]") {
    // A constraint that allows 1 token in 16 and none of the row's 12 best: most calls refuse
    // their 8 proposals and take the full verdicts (own stream); the law stays the masked one.
    const std::size_t V = 240;
    const auto x = row_of(V, 21, 1.0);
    std::vector<token_id> order(V);
    for (std::size_t i = 0; i < V; ++i) order[i] = token_id(i);
    std::sort(order.begin(), order.end(), [&](token_id a, token_id b) {
        return x[std::size_t(a)] > x[std::size_t(b)] ||
               (x[std::size_t(a)] == x[std::size_t(b)] && a < b);
    });
    auto ok = allow_every(V, 16, 5);
    for (std::size_t i = 0; i < 12; ++i) ok[std::size_t(order[i])] = false;
    for (const sampling_params& base :
         {sampling_params{.temperature = 0.9f, .min_p = 0.01f, .logprobs = {.chosen = false}},
          sampling_params{.temperature = 1.1f, .logprobs = {.chosen = false}}}) {
        sampling_params p = base;
        p.seed = 77;
        p.constraint = id_set{ok};
        const auto law = masked_law(p, x, ok);
        sampler s(p, V);
        std::size_t fallbacks = 0;
        const auto counts = dk_test::histogram(V, 30000, [&](std::size_t i) {
            const auto r = s.sample(x, 3, i);
            REQUIRE(r.ok());
            REQUIRE(ok[std::size_t(r.token)]);
            fallbacks += r.constraint_queries > 100;  // the full verdicts (walk + 8 < 100)
            return r.token;
        });
        dk_test::require_law(counts, law);
        CHECK(fallbacks > 3000);  // the fallback path carries a good part of the law
        CHECK(fallbacks < 30000);
        // reproducible: another sampler with the same params gives the same tokens
        sampler s2(p, V);
        for (std::uint64_t i = 0; i < 50; ++i)
            CHECK(s2.sample(x, 3, i).token == s.sample(x, 3, i).token);
    }
}

TEST_CASE("sample_then_check follows its documented law, not the masked one", "[constraint][gof]") {
    // P(t) = q(t) [t allowed] + P(reject) q'(t): q the unconstrained pipeline's law, q' the
    // masked pipeline's law
    const std::size_t V = 60;
    const auto x = row_of(V, 4, 1.5);
    const auto ok = allow_every(V, 2);
    sampling_params p{.temperature = 0.9f, .top_k = 8, .seed = 4};
    const auto q = masked_law(p, x, std::vector<bool>(V, true));
    const auto qm = masked_law(p, x, ok);
    double reject = 0;
    for (std::size_t i = 0; i < V; ++i)
        if (!ok[i]) reject += q[i];
    std::vector<double> law(V);
    for (std::size_t i = 0; i < V; ++i) law[i] = (ok[i] ? q[i] : 0.0) + reject * qm[i];
    p.constraint = id_set{ok};
    p.constraint_mode = constraint_check::sample_then_check;
    sampler s(p, V);
    const auto counts =
        dk_test::histogram(V, 40000, [&](std::size_t i) { return s.sample(x, 2, i).token; });
    dk_test::require_law(counts, law);
    // negative control: the exact mode's law is another one
    const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(qm));
    CHECK(g.p_value < dk_test::false_failure_rate);
}

TEST_CASE("nothing allowed is its own status; no valid entry stays no_valid_token",
          "[constraint]") {
    const std::vector<float> x{1.f, 2.f, 3.f, 4.f};
    for (const sampling_params& base :
         {sampling_params{.temperature = 0.f}, sampling_params{.top_k = 2},
          sampling_params{.min_p = 0.1f}, sampling_params{.logprobs = {.chosen = false}},
          sampling_params{.top_p = 0.5f}}) {
        sampling_params p = base;
        p.constraint = id_set{std::vector<bool>(4, false)};
        sampler s(p, 4);
        const auto r = s.sample(x, 0, 0);
        CHECK(r.status == sample_status::no_allowed_token);
        CHECK(r.token == -1);
        const std::vector<float> none{ninf, ninf, ninf, ninf};
        CHECK(s.sample(none, 0, 1).status == sample_status::no_valid_token);
    }
}

namespace {
// Allows only tokens not yet in the generated part of the history; its state (the seen set)
// follows the history through the hooks, and it records every call so the test can replay them.
struct no_repeat {
    std::multiset<token_id> seen;
    std::size_t resets = 0, follows = 0;
    bool allowed(token_id t, const processor_context&) const { return seen.count(t) == 0; }
    void append(std::span<const token_id> added, const processor_context&) {
        seen.insert(added.begin(), added.end());
        ++follows;
    }
    void cut_back(std::size_t, std::span<const token_id> removed, const processor_context&) {
        for (token_id t : removed) seen.erase(seen.find(t));
        ++follows;
    }
    void reset(const processor_context& c) {
        seen = std::multiset<token_id>(c.history.begin(), c.history.end());
        ++resets;
    }
};
}  // namespace

TEST_CASE("a constraint's state follows the history (append, cut back, fork)", "[constraint]") {
    const std::size_t V = 50;
    const auto x = row_of(V, 9);
    sampling_params p{.temperature = 0.f, .constraint = no_repeat{}};
    sampler s(p, V);
    std::vector<token_id> h{1, 2, 3}, last;
    for (std::uint64_t step = 0; step < 30; ++step) {
        last = h;  // the history the constraint's state follows after this call
        const auto r = s.sample(x, {.sequence = 0, .step = step, .history = h});
        REQUIRE(r.ok());
        CHECK(std::find(h.begin(), h.end(), r.token) == h.end());  // never a repeat
        h.push_back(r.token);
        if (step % 7 == 6) h.resize(h.size() - 3);  // a cut-back (speculative rejection)
    }
    sampler fork = s;  // a fork keeps the parent's state and follows its own history after
    std::vector<token_id> h2 = h;
    h2.push_back(0);
    const auto a = fork.sample(x, {.sequence = 0, .step = 99, .history = h2});
    REQUIRE(a.ok());
    CHECK(a.token != 0);
    const no_repeat* c = s.constraint<no_repeat>();
    REQUIRE(c != nullptr);
    CHECK(c->resets == 1);   // the first call only: every later change was followed
    CHECK(c->follows > 25);  // appends and cut-backs
    CHECK(c->seen == std::multiset<token_id>(last.begin(), last.end()));
    CHECK(fork.constraint<no_repeat>()->seen == std::multiset<token_id>(h2.begin(), h2.end()));
}
}  // namespace dk_t_sampling_constraint
