// Randomised cross-check: sampler::distribution() against a naive reference pipeline written
// here (whole-row sorts, double arithmetic, no kernels) for random rows, random parameters and
// random orders (presets and custom). Cases where a decision sits within rounding distance of a
// threshold are skipped (counted; most cases must be checked).
// Semantics: kernels/reference.hpp (typical keeps the ties of its last entry, epsilon and eta the
// ties of the min_keep-th logit when fewer pass: docs/changes.md).
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_reference {

using namespace decodekit;

namespace {

struct ref_result {
    std::vector<token_id> tokens;
    std::vector<double> probs;
    bool ambiguous = false;  // a decision within rounding distance of its threshold
};

struct ref_pipeline {
    const std::vector<float>& x;
    const sampling_params& p;
    std::uint64_t sequence, step;
    std::vector<bool> alive;
    double t = 1.0;
    bool ambiguous = false;

    static constexpr double tol = 1e-5;

    void near_threshold(double a, double b) {
        if (std::fabs(a - b) <= tol * std::max(1.0, std::fabs(b))) ambiguous = true;
    }

    // alive ids by logit descending, ties by id
    std::vector<std::size_t> order() const {
        std::vector<std::size_t> o;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (alive[i]) o.push_back(i);
        std::sort(o.begin(), o.end(), [&](std::size_t a, std::size_t b) {
            return x[a] > x[b] || (x[a] == x[b] && a < b);
        });
        return o;
    }
    std::vector<double> probs(double temp) const {
        double m = -INFINITY;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (alive[i]) m = std::max(m, double(x[i]));
        std::vector<double> q(x.size(), 0.0);
        double z = 0;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (alive[i]) z += q[i] = std::exp((double(x[i]) - m) / temp);
        for (double& v : q) v /= z;
        return q;
    }
    std::size_t count() const { return std::size_t(std::count(alive.begin(), alive.end(), true)); }
    void keep_only(const std::vector<std::size_t>& o, std::size_t n) {
        std::fill(alive.begin(), alive.end(), false);
        for (std::size_t j = 0; j < n && j < o.size(); ++j) alive[o[j]] = true;
    }
    // keep entries passing `pass` (a prefix of the order), at least min_keep
    template <class Pass>
    void keep_prefix(Pass&& pass) {
        const auto o = order();
        std::size_t n = 0;
        while (n < o.size() && pass(o[n])) ++n;
        keep_only(o, std::max(n, std::min(p.min_keep, o.size())));
    }
    // keep entries passing `pass` (a prefix of the order); when fewer than min_keep pass, every
    // entry tied with or above the min_keep-th largest logit (epsilon and eta, as Hugging Face)
    template <class Pass>
    void keep_prefix_or_ties(Pass&& pass) {
        const auto o = order();
        std::size_t n = 0;
        while (n < o.size() && pass(o[n])) ++n;
        if (n < p.min_keep && p.min_keep <= o.size()) {
            n = p.min_keep;
            while (n < o.size() && x[o[n]] == x[o[p.min_keep - 1]]) ++n;
        }
        keep_only(o, std::max(n, std::min(p.min_keep, o.size())));
    }
    double entropy(const std::vector<double>& q) const {
        double h = 0;
        for (std::size_t i = 0; i < q.size(); ++i)
            if (alive[i] && q[i] > 0) h -= q[i] * std::log(q[i]);
        return h;
    }

    void apply(sampling_step st) {
        if (count() <= 1 && st != sampling_step::temperature) return;
        switch (st) {
            case sampling_step::temperature:
                t = p.temperature;
                break;
            case sampling_step::top_k: {
                const auto o = order();
                std::size_t n = std::size_t(p.top_k);
                if (n >= o.size()) return;
                if (p.top_k_ties == tie_policy::keep_ties)
                    while (n < o.size() && x[o[n]] == x[o[p.top_k - 1]]) ++n;
                keep_only(o, n);
                break;
            }
            case sampling_step::top_p: {
                const auto q = probs(t);
                const auto o = order();
                double before = 0;
                std::size_t n = 0;
                while (n < o.size()) {
                    near_threshold(before, p.top_p);
                    if (!(n < std::max<std::size_t>(1, p.min_keep) || before < double(p.top_p)))
                        break;
                    before += q[o[n]];
                    ++n;
                }
                keep_only(o, n);
                break;
            }
            case sampling_step::min_p: {
                if (p.min_p_mode == min_p_space::logits) {
                    const auto o = order();
                    const double thr = double(x[o[0]]) + std::log(double(p.min_p));
                    for (std::size_t i : o) near_threshold(x[i], thr);
                    keep_prefix([&](std::size_t i) { return double(x[i]) >= thr; });
                } else {
                    const auto q = probs(t);
                    const double qmax = *std::max_element(q.begin(), q.end());
                    for (std::size_t i : order()) near_threshold(q[i], p.min_p * qmax);
                    keep_prefix([&](std::size_t i) { return q[i] >= double(p.min_p) * qmax; });
                }
                break;
            }
            case sampling_step::typical: {
                const auto q = probs(t);
                const double h = entropy(q);
                auto o = order();
                std::vector<double> key(x.size());
                for (std::size_t i : o) key[i] = std::fabs(-std::log(q[i]) - h);
                for (std::size_t a : o)
                    for (std::size_t b : o)
                        if (x[a] != x[b] && std::fabs(key[a] - key[b]) < 1e-6) ambiguous = true;
                std::stable_sort(o.begin(), o.end(),
                                 [&](std::size_t a, std::size_t b) { return key[a] < key[b]; });
                // the prefix through the first entry whose mass reaches typical_p, then every
                // entry with that entry's score (Hugging Face), at least min_keep
                double before = 0;
                std::size_t n = 0;
                while (n < o.size()) {
                    near_threshold(before, p.typical_p);
                    if (!(n < 1 || before < double(p.typical_p))) break;
                    before += q[o[n]];
                    ++n;
                }
                while (n < o.size() && key[o[n]] == key[o[n - 1]]) ++n;
                keep_only(o, std::max(n, std::min(p.min_keep, o.size())));
                break;
            }
            case sampling_step::epsilon: {
                const auto q = probs(t);
                for (std::size_t i : order()) near_threshold(q[i], p.epsilon);
                keep_prefix_or_ties([&](std::size_t i) { return q[i] >= double(p.epsilon); });
                break;
            }
            case sampling_step::eta: {
                const auto q = probs(t);
                const double e = p.eta;
                const double thr = std::min(e, std::sqrt(e) * std::exp(-entropy(q)));
                for (std::size_t i : order()) near_threshold(q[i], thr);
                keep_prefix_or_ties([&](std::size_t i) { return q[i] >= thr; });
                break;
            }
            case sampling_step::top_n_sigma: {
                const auto o = order();
                double s = 0, sq = 0;
                for (std::size_t i : o) {
                    s += x[i];
                    sq += double(x[i]) * x[i];
                }
                const double n = double(o.size()), mean = s / n;
                const double thr = double(x[o[0]]) -
                                   p.top_n_sigma * std::sqrt(std::max(0.0, sq / n - mean * mean));
                for (std::size_t i : o) near_threshold(x[i], thr);
                keep_prefix([&](std::size_t i) { return double(x[i]) >= thr; });
                break;
            }
            case sampling_step::xtc: {
                rng_stream coin = make_stream({p.seed, sequence, step}, rng_purpose::filter);
                if (!(coin.uniform_float() < p.xtc_probability)) return;
                const auto q = probs(t);
                const auto o = order();
                std::size_t above = 0;
                for (std::size_t i : o) near_threshold(q[i], p.xtc_threshold);
                while (above < o.size() && q[o[above]] >= double(p.xtc_threshold)) ++above;
                if (above < 2 || o.size() - (above - 1) < p.min_keep) return;
                std::fill(alive.begin(), alive.end(), false);
                for (std::size_t j = above - 1; j < o.size(); ++j) alive[o[j]] = true;
                break;
            }
            case sampling_step::mirostat: {
                const auto q = probs(t);
                const double thr = std::exp2(-2.0 * double(p.mirostat_tau));
                for (std::size_t i : order()) near_threshold(q[i], thr);
                const auto o = order();
                std::size_t n = 0;
                while (n < o.size() && q[o[n]] >= thr) ++n;
                keep_only(o, std::max<std::size_t>(n, 1));
                break;
            }
        }
    }
};

ref_result reference_distribution(const std::vector<float>& x, const sampling_params& p,
                                  std::span<const sampling_step> steps, std::uint64_t sequence,
                                  std::uint64_t step) {
    ref_pipeline r{x, p, sequence, step, std::vector<bool>(x.size()), 1.0, false};
    for (std::size_t i = 0; i < x.size(); ++i) r.alive[i] = !std::isnan(x[i]) && x[i] != -INFINITY;
    ref_result out;
    if (r.count() == 0) return out;
    if (p.temperature == 0.f) {
        const auto o = r.order();
        out.tokens = {token_id(o[0])};
        out.probs = {1.0};
        return out;
    }
    for (sampling_step st : steps) {
        bool on = false;
        switch (st) {
            case sampling_step::temperature:
                on = true;
                break;
            case sampling_step::top_k:
                on = p.top_k > 0;
                break;
            case sampling_step::top_p:
                on = p.top_p < 1.f;
                break;
            case sampling_step::min_p:
                on = p.min_p > 0.f;
                break;
            case sampling_step::typical:
                on = p.typical_p < 1.f;
                break;
            case sampling_step::epsilon:
                on = p.epsilon > 0.f;
                break;
            case sampling_step::eta:
                on = p.eta > 0.f;
                break;
            case sampling_step::top_n_sigma:
                on = p.top_n_sigma > 0.f;
                break;
            case sampling_step::xtc:
                on = p.xtc_probability > 0.f && p.xtc_threshold <= 0.5f;
                break;
            case sampling_step::mirostat:
                on = p.mirostat;
                break;
        }
        if (on) r.apply(st);
    }
    const auto q = r.probs(r.t);
    const double qmax = *std::max_element(q.begin(), q.end());
    for (std::size_t i : r.order())
        if (float(q[i] / qmax) > 0) {  // the sampler keeps weights relative to the max in float
            out.tokens.push_back(token_id(i));
            out.probs.push_back(q[i]);
        }
    out.ambiguous = r.ambiguous;
    return out;
}

}  // namespace

TEST_CASE("distribution() equals a naive reference pipeline on random rows, params and orders",
          "[sampling][reference]") {
    std::mt19937_64 g(2024);
    auto unif = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(g); };
    auto coin = [&](double prob) { return unif(0, 1) < prob; };
    std::size_t checked = 0, skipped = 0;
    const std::size_t cases = 3000;
    for (std::size_t c = 0; c < cases; ++c) {
        const std::size_t v = std::vector<std::size_t>{1, 2, 5, 17, 64}[g() % 5];
        std::vector<float> x(v);
        const double sd = unif(0.3, 4.0);
        const bool discrete = coin(0.3);
        for (float& e : x) {
            double val = std::normal_distribution<double>(0, sd)(g);
            if (discrete) val = std::round(val * 2) / 2;
            e = float(val);
            if (coin(0.03)) e = -std::numeric_limits<float>::infinity();
            if (coin(0.03)) e = std::numeric_limits<float>::quiet_NaN();
        }
        sampling_params p;
        p.temperature = coin(0.05) ? 0.f : float(unif(0.3, 2.0));
        if (coin(0.5)) p.top_k = int(g() % (v + 3)) + 1;
        p.top_k_ties = coin(0.5) ? tie_policy::keep_ties : tie_policy::exactly_k;
        if (coin(0.5)) p.top_p = float(unif(0.0, 1.0));
        if (coin(0.5)) p.min_p = float(unif(0.0, 0.5));
        p.min_p_mode = coin(0.5) ? min_p_space::logits : min_p_space::probabilities;
        if (coin(0.2)) p.typical_p = float(unif(0.2, 1.0));
        if (coin(0.2)) p.epsilon = float(unif(0.0, 0.1));
        if (coin(0.2)) p.eta = float(unif(0.0, 0.1));
        if (coin(0.2)) p.top_n_sigma = float(unif(0.3, 3.0));
        if (coin(0.2)) {
            p.xtc_probability = float(unif(0.0, 1.0));
            p.xtc_threshold = float(unif(0.0, 0.5));
        }
        if (coin(0.1)) {
            p.mirostat = true;
            p.mirostat_tau = float(unif(0.5, 5.0));
        }
        p.min_keep = std::size_t(g() % 4) + 1;
        p.seed = g();
        const int o = int(g() % 4);
        p.order = sampling_order(o);
        if (p.order == sampling_order::custom) {
            std::vector<sampling_step> all = {
                sampling_step::temperature, sampling_step::top_k,       sampling_step::top_p,
                sampling_step::min_p,       sampling_step::typical,     sampling_step::epsilon,
                sampling_step::eta,         sampling_step::top_n_sigma, sampling_step::xtc,
                sampling_step::mirostat};
            std::shuffle(all.begin(), all.end(), g);
            all.resize(g() % all.size() + 1);
            p.custom_order = all;
        }
        REQUIRE_FALSE(p.check().has_value());
        sampler s(p, v);
        const std::uint64_t seq = g() % 100, step = g() % 100;
        const auto d = s.distribution(x, {.sequence = seq, .step = step});
        const std::span<const sampling_step> steps =
            p.order == sampling_order::custom ? std::span<const sampling_step>(p.custom_order)
                                              : preset_steps(p.order);
        const auto want = reference_distribution(x, p, steps, seq, step);
        if (want.ambiguous) {
            ++skipped;
            continue;
        }
        ++checked;
        INFO("case " << c << " V " << v << " order " << o << " T " << p.temperature << " k "
                     << p.top_k << " p " << p.top_p << " minp " << p.min_p << " typ " << p.typical_p
                     << " eps " << p.epsilon << " eta " << p.eta << " sigma " << p.top_n_sigma
                     << " xtc " << p.xtc_probability << "/" << p.xtc_threshold << " miro "
                     << p.mirostat << " min_keep " << p.min_keep);
        REQUIRE(std::vector<token_id>(d.tokens.begin(), d.tokens.end()) == want.tokens);
        for (std::size_t i = 0; i < want.probs.size(); ++i)
            REQUIRE(std::fabs(double(d.probs[i]) - want.probs[i]) <= 1e-5);
        // sample() draws from that set, and the result agrees with draw() on truncated pipelines
        const auto r = s.sample(x, {.sequence = seq, .step = step});
        if (want.tokens.empty()) {
            CHECK(r.status == sample_status::no_valid_token);
        } else {
            REQUIRE(r.ok());
            CHECK(std::find(want.tokens.begin(), want.tokens.end(), r.token) != want.tokens.end());
        }
    }
    INFO("checked " << checked << " skipped " << skipped);
    CHECK(checked > cases * 9 / 10);
}

TEST_CASE("sparse processors (no row copy) give the same distributions as the dense path",
          "[sampling][processors]") {
    // The dense path is forced by an allowed-token set holding every id (no effect on values).
    std::mt19937_64 g(77);
    auto unif = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(g); };
    for (int c = 0; c < 400; ++c) {
        const std::size_t v = std::vector<std::size_t>{3, 40, 300}[std::size_t(c) % 3];
        std::vector<float> x(v);
        for (float& e : x) e = float(std::round(std::normal_distribution<double>(0, 2)(g) * 4) / 4);
        if (c % 7 == 0) x[g() % v] = std::numeric_limits<float>::quiet_NaN();
        std::vector<token_id> history(g() % 40);
        for (auto& t : history) t = token_id(g() % (v + 2)) - 1;  // some out of range
        sampling_params p;
        switch (c % 4) {
            case 0:
                p.temperature = 0.f;
                break;
            case 1:
                p.top_k = int(g() % 8) + 1;
                p.top_k_ties = c % 8 == 1 ? tie_policy::keep_ties : tie_policy::exactly_k;
                break;
            case 2:
                p.min_p = float(unif(0.01, 0.9));
                p.min_keep = std::size_t(g() % 3) + 1;
                break;
            default:
                p.top_k = 5;
                p.top_p = 0.9f;
                p.min_p = 0.05f;
                p.temperature = 0.7f;
                break;
        }
        p.penalties = {.repetition = float(unif(0.5, 2.0)),
                       .frequency = float(unif(-0.5, 1.0)),
                       .presence = float(unif(-0.5, 1.0)),
                       .last_n = std::size_t(g() % 50)};
        if (c % 3 == 0)
            p.logit_biases = {{token_id(g() % v), float(unif(-5, 8))},
                              {token_id(g() % v), -INFINITY}};
        if (c % 5 == 0) p.banned_tokens = {token_id(g() % v)};
        if (c % 6 == 0) p.dry = {.multiplier = 0.8f};
        if (c % 4 == 0) p.no_repeat_ngram_size = 2;
        if (c % 9 == 0) {
            p.min_new_tokens = 100;
            p.eos_ids = {0};
        }
        sampling_params dense = p;
        dense.allowed_tokens.resize(v);
        std::iota(dense.allowed_tokens.begin(), dense.allowed_tokens.end(), token_id(0));
        sampler a(p, v), b(dense, v);
        const sample_context ctx{.sequence = 3,
                                 .step = std::uint64_t(c),
                                 .history = history,
                                 .prompt_length = history.size() / 2};
        for (int rep = 0; rep < 2; ++rep) {  // twice: marks must be clean between calls
            const auto da = a.distribution(x, ctx);
            const std::vector<token_id> ta(da.tokens.begin(), da.tokens.end());
            const std::vector<float> pa(da.probs.begin(), da.probs.end());
            const auto db = b.distribution(x, ctx);
            INFO("case " << c);
            REQUIRE(ta == std::vector<token_id>(db.tokens.begin(), db.tokens.end()));
            for (std::size_t i = 0; i < pa.size(); ++i)
                REQUIRE(std::fabs(pa[i] - db.probs[i]) <= 1e-6f);
            CHECK(a.sample(x, ctx).token == b.sample(x, ctx).token);
        }
    }
}

TEST_CASE(
    "sparse path at V = 50000: patched top entries leave the k best, raised ones enter, "
    "masked or not, and the workspace's bits are clean after every call",
    "[sampling][processors]") {
    // The first step selects the k best unpatched entries in one pass under a bitmask without
    // the patched ids; this row puts the patches where that matters: the 30 best entries are in
    // the history (penalised), some low entries are raised above them (logit bias), and ties
    // (logits on a 0.25 grid) sit at the k-th value.
    constexpr std::size_t v = 50000;
    std::mt19937_64 g(2026);
    std::vector<float> x(v);
    for (float& e : x) e = float(std::round(std::normal_distribution<double>(0, 2)(g) * 4) / 4);
    x[17] = std::numeric_limits<float>::quiet_NaN();
    std::vector<token_id> by_value(v);
    std::iota(by_value.begin(), by_value.end(), token_id(0));
    std::partial_sort(
        by_value.begin(), by_value.begin() + 64, by_value.end(), [&](token_id a, token_id b) {
            const float xa = std::isnan(x[std::size_t(a)]) ? -INFINITY : x[std::size_t(a)];
            const float xb = std::isnan(x[std::size_t(b)]) ? -INFINITY : x[std::size_t(b)];
            return xa > xb;
        });
    std::vector<token_id> history(by_value.begin(), by_value.begin() + 30);
    for (int i = 0; i < 2000; ++i) history.push_back(token_id(g() % v));
    std::vector<std::uint32_t> dense_mask(kernels::bitmask_words(v), 0u), sparse_mask = dense_mask;
    for (std::size_t i = 0; i < v; ++i) {
        if (g() % 10 != 0) dense_mask[i / 32] |= 1u << (i % 32);
        if (g() % 32 == 0 || i == std::size_t(by_value[40])) sparse_mask[i / 32] |= 1u << (i % 32);
    }
    const std::vector<std::uint32_t>* masks[] = {nullptr, &dense_mask, &sparse_mask};

    std::vector<sampling_params> ps;
    for (const int k : {1, 40, 300})
        for (const tie_policy t : {tie_policy::exactly_k, tie_policy::keep_ties})
            ps.push_back({.temperature = 0.9f, .top_k = k, .top_k_ties = t});
    ps.push_back({.temperature = 0.f});
    ps.push_back({.min_p = 0.02f, .min_keep = 50});
    sampling_workspace ws_a, ws_b;
    int m_index = 0;
    for (const auto* m : masks) {
        for (sampling_params p : ps) {
            p.penalties = {.repetition = 1.5f, .frequency = 0.3f};
            p.logit_biases = {{by_value[5000], 30.f}, {by_value[6000], 12.f}, {by_value[2], 0.25f}};
            sampling_params dense = p;  // an allowed set of every id forces the row copy
            dense.allowed_tokens.resize(v);
            std::iota(dense.allowed_tokens.begin(), dense.allowed_tokens.end(), token_id(0));
            sampler a(p, v), b(dense, v);
            for (int rep = 0; rep < 2; ++rep) {
                sample_context ctx{.sequence = 1,
                                   .step = std::uint64_t(rep),
                                   .history = history,
                                   .prompt_length = 10};
                if (m) ctx.mask = {.words = *m, .size = v};
                INFO("mask " << m_index << " top_k " << p.top_k << " ties " << int(p.top_k_ties)
                             << " temperature " << p.temperature << " min_p " << p.min_p);
                const auto da = a.distribution(x, ctx, ws_a);
                const std::vector<token_id> ta(da.tokens.begin(), da.tokens.end());
                const std::vector<float> pa(da.probs.begin(), da.probs.end());
                const auto db = b.distribution(x, ctx, ws_b);
                REQUIRE(!ta.empty());
                REQUIRE(ta == std::vector<token_id>(db.tokens.begin(), db.tokens.end()));
                for (std::size_t i = 0; i < pa.size(); ++i)
                    REQUIRE(std::fabs(pa[i] - db.probs[i]) <= 1e-6f);
                CHECK(a.sample(x, ctx, ws_a).token == b.sample(x, ctx, ws_b).token);
                // the sparse path's invariants between calls: no declared bit, no patched bit
                CHECK(std::all_of(ws_a.seen.begin(), ws_a.seen.end(),
                                  [](std::uint32_t w) { return w == 0u; }));
                CHECK(std::all_of(ws_a.unpatched.begin(), ws_a.unpatched.end(),
                                  [](std::uint32_t w) { return w == ~0u; }));
            }
        }
        ++m_index;
    }
    CHECK(ws_a.unpatched.size() == kernels::bitmask_words(v));  // the sparse path ran
}
}  // namespace dk_t_sampling_reference
