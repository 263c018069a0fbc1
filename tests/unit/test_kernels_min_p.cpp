// kernels::draw_min_p (kernels/min_p.hpp): the law against reference::truncated_softmax, the
// chosen logprob against the double reference to min_p_logprob_error, the token against the
// inverse CDF over the compacted kept set, and the special rows, on the benchmark row family
// (peaked, Zipf, Gaussian, near-uniform) and on the kernel tests' row kinds.
#include "dk_family.hpp"
#include "dk_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_min_p {

namespace {

namespace dk = decodekit;
namespace kn = decodekit::kernels;
using dk_rows::each_arch;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

/// A row of the family with a NaN and a -inf entry.
std::vector<float> family_row(dk_family::shape sh, std::size_t v, std::uint64_t salt) {
    auto x = dk_family::make_row(sh, v, salt);
    if (v > 20) {
        x[(salt * 7 + 3) % v] = qnan;
        x[(salt * 13 + 5) % v] = -inf;
    }
    return x;
}

/// A random mask over v tokens with about `percent` % allowed (bits past v set).
std::vector<std::uint32_t> mask_words(std::size_t v, unsigned percent, std::uint64_t seed) {
    std::uint64_t s = seed;
    std::vector<std::uint32_t> w(kn::bitmask_words(v), 0u);
    for (std::size_t i = 0; i < 32 * w.size(); ++i)
        if (i >= v || dk_rows::mix(s) % 100 < percent) w[i / 32] |= 1u << (i % 32);
    return w;
}

/// The reference's kept set and weights: m the largest allowed valid entry, t the threshold
/// (clamped as the kernels do), W_i = reference::weight over the kept entries (0 elsewhere).
struct kept_ref {
    float m = -inf, t = -inf;
    std::vector<double> w;
    double sum = 0, d_max = 0;
};

kept_ref reference_kept(const std::vector<float>& x, float temp, const kn::logit_threshold& thr,
                        const kn::token_bitmask* mask) {
    kept_ref k;
    auto allowed = [&](std::size_t i) { return !mask || mask->allowed(i); };
    for (std::size_t i = 0; i < x.size(); ++i)
        if (allowed(i) && x[i] > k.m) k.m = x[i];
    k.w.assign(x.size(), 0.0);
    if (k.m == -inf) return k;
    k.t = std::max(dk::reference::threshold_value(k.m, thr), std::numeric_limits<float>::lowest());
    for (std::size_t i = 0; i < x.size(); ++i)
        if (allowed(i) && x[i] >= k.t) {
            k.w[i] = dk::reference::weight(x[i], k.m, temp);
            k.sum += k.w[i];
            if (std::isfinite(k.m) && k.w[i] > 0)
                k.d_max = std::max(k.d_max, (double(k.m) - double(x[i])) / double(temp));
        }
    return k;
}

}  // namespace

TEST_CASE("draw_min_p follows the truncated softmax, with and without a logprob and a mask") {
    // Exact law: chi-square against reference::truncated_softmax per case, false-failure rate
    // dk_test::false_failure_rate (1e-7) each, with a negative control (the law without the
    // threshold, or without the most probable entry when the threshold keeps all, must be
    // rejected). Without a logprob the near-uniform rows go through the
    // envelope draw (5 words per proposal), the others through the exact draw (2 words).
    struct draw_case {
        std::size_t v;
        dk_family::shape shape;
        float temp, min_p, t_min_p;
        unsigned percent;  // allowed; 100: no mask
    };
    using dk_family::shape;
    const std::vector<draw_case> cases = {
        {300, shape::peaked, 1.f, 0.05f, 1.f, 100},  {300, shape::zipf, 0.8f, 0.05f, 0.8f, 50},
        {300, shape::gauss, 1.5f, 0.05f, 1.5f, 100}, {300, shape::flat, 1.f, 0.05f, 1.f, 100},
        {5000, shape::peaked, 1.f, 0.01f, 1.f, 50},  {5000, shape::zipf, 1.5f, 0.05f, 1.f, 100},
        {5000, shape::gauss, 0.7f, 0.2f, 0.7f, 100}, {5000, shape::flat, 1.3f, 0.05f, 1.3f, 50},
        {5000, shape::gauss, 1.f, 1e-38f, 1.f, 100},  // threshold more than 87 below the max
    };
    for (std::size_t c = 0; c < cases.size(); ++c) {
        const auto& k = cases[c];
        const auto x = family_row(k.shape, k.v, c);
        const auto words = mask_words(k.v, k.percent, c);
        const kn::token_bitmask mask{.words = words, .size = k.v};
        const kn::logit_threshold thr{.from_max = kn::min_p_offset(k.min_p, k.t_min_p)};
        std::vector<float> p(k.v), q(k.v);
        dk::reference::truncated_softmax(x, p, k.temp, thr, mask);
        dk::reference::softmax(x, q, k.temp);
        const auto kept = std::count_if(p.begin(), p.end(), [](float e) { return e > 0; });
        if (std::count_if(q.begin(), q.end(), [](float e) { return e > 0; }) == kept) {
            // the threshold keeps every entry: the control is the law without its most
            // probable entry (drawn ~100 times in 30000 draws here)
            q = p;
            q[std::size_t(std::max_element(q.begin(), q.end()) - q.begin())] = 0.f;
        }
        const std::vector<double> law(p.begin(), p.end()), wrong(q.begin(), q.end());
        for (const bool lp : {true, false})
            each_arch([&](auto arch, const std::string& name) {
                using A = decltype(arch);
                INFO("arch " << name << " case " << c << " logprob " << lp);
                bool words_ok = true;
                auto counts = dk_test::histogram(k.v, 30000, [&](std::size_t i) {
                    dk::rng_stream r = dk::make_stream({21, c, i});
                    const auto d = k.percent < 100 ? kn::draw_min_p<A>(x, k.temp, thr, lp, r, mask)
                                                   : kn::draw_min_p<A>(x, k.temp, thr, lp, r);
                    if (lp ? r.words_used() != 2 : r.words_used() % 5 != 0 && r.words_used() != 2)
                        words_ok = false;
                    if (lp != !std::isnan(d.logprob)) words_ok = false;
                    return d.index;
                });
                CHECK(words_ok);
                dk_test::require_law(counts, law);
                CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
                      dk_test::false_failure_rate);
            });
    }
}

TEST_CASE("draw_min_p at V = 128256: every shape, both routes, only kept entries") {
    // The full-size rows: without a logprob the flat and Gaussian rows stop the first pass early
    // and take the envelope draw, the peaked and Zipf rows the exact one; every draw is kept.
    for (const auto sh : dk_family::shapes) {
        const auto x = family_row(sh, 128256, 1);
        const kn::logit_threshold thr{.from_max = kn::min_p_offset(0.05f)};
        const kept_ref ref = reference_kept(x, 1.f, thr, nullptr);
        std::size_t kept = 0;
        for (double w : ref.w) kept += w > 0;
        for (const bool lp : {true, false}) {
            std::size_t envelope = 0;
            for (std::uint64_t key = 0; key < 200; ++key) {
                dk::rng_stream r = dk::make_stream({3, key, 0});
                const auto d = kn::draw_min_p(x, 1.f, thr, lp, r);
                INFO("shape " << dk_family::name(sh) << " logprob " << lp << " key " << key);
                REQUIRE(d.index < x.size());
                CHECK(ref.w[d.index] > 0);
                envelope += r.words_used() != 2;
            }
            INFO("shape " << dk_family::name(sh) << " kept " << kept);
            if (lp || kept < 1000)
                CHECK(envelope == 0);
            else
                CHECK(envelope == 200);
        }
    }
}

TEST_CASE("draw_min_p's logprob equals the double reference to min_p_logprob_error") {
    // On every shape of the family and every row kind of the kernel tests (ties, NaN, -inf,
    // huge, subnormal, constant, +inf rows), at several lengths, temperatures (including one
    // whose reciprocal overflows: the scalar path), min-p values (including one whose threshold
    // is more than 87 T below the max) and under a mask.
    std::size_t checked = 0;
    auto check_row = [&](const std::vector<float>& x, const char* what) {
        const std::size_t v = x.size();
        const auto words = mask_words(v, 60, v + 1);
        const kn::token_bitmask mask{.words = words, .size = v};
        for (const float temp : {1.f, 0.7f, 1.5f, 1e-40f})
            for (const float mp : {0.05f, 0.5f, 1.f, 1e-38f})
                for (const bool masked : {false, true}) {
                    const kn::logit_threshold thr{.from_max = kn::min_p_offset(mp, temp)};
                    const kept_ref ref = reference_kept(x, temp, thr, masked ? &mask : nullptr);
                    for (std::uint64_t key = 0; key < 8; ++key) {
                        dk::rng_stream r = dk::make_stream({5, key, v});
                        const auto d = masked ? kn::draw_min_p(x, temp, thr, true, r, mask)
                                              : kn::draw_min_p(x, temp, thr, true, r);
                        INFO(what << " V " << v << " T " << temp << " min_p " << mp << " masked "
                                  << masked << " key " << key);
                        if (!(ref.sum > 0)) {
                            CHECK(d.index == dk::npos);
                            CHECK(r.words_used() == 0);
                            continue;
                        }
                        REQUIRE(d.index < v);
                        REQUIRE(ref.w[d.index] > 0);
                        const double exact = std::log(ref.w[d.index] / ref.sum);
                        const double d_tok =
                            std::isfinite(ref.m)
                                ? (double(ref.m) - double(x[d.index])) / double(temp)
                                : 0.0;
                        const double bound = kn::min_p_logprob_error(d_tok, ref.d_max, v);
                        INFO("logprob " << d.logprob << " exact " << exact << " bound " << bound);
                        CHECK(std::fabs(d.logprob - exact) <= bound);
                        CHECK(std::fabs(d.prob - std::exp(exact)) <= 2 * bound * std::exp(exact));
                        ++checked;
                    }
                }
    };
    for (const auto sh : dk_family::shapes)
        for (const std::size_t v : {std::size_t(17), std::size_t(5000), std::size_t(128256)})
            check_row(family_row(sh, v, v), dk_family::name(sh));
    for (int kind = 0; kind <= 8; ++kind)
        for (const std::size_t v : {1u, 15u, 17u, 300u, 4097u})
            check_row(dk_rows::make_row(v, kind, 3), ("kind " + std::to_string(kind)).c_str());
    CHECK(checked > 4000);
}

TEST_CASE("draw_min_p's token is the inverse CDF over the compacted kept set") {
    // The token for a given stream is reference::draw_inverse_cdf over the kept entries' float
    // weights in id order (what sampling/draw.hpp does after the min-p step) with the same
    // uniform, unless u * S falls within rounding of a boundary: none of these keys does.
    for (const auto sh : dk_family::shapes)
        for (const std::size_t v : {std::size_t(300), std::size_t(128256)})
            for (const float temp : {1.f, 1.5f}) {
                const auto x = family_row(sh, v, 9);
                const kn::logit_threshold thr{.from_max = kn::min_p_offset(0.05f, temp)};
                const kept_ref ref = reference_kept(x, temp, thr, nullptr);
                std::vector<float> kept_logits;
                std::vector<std::size_t> ids;
                for (std::size_t i = 0; i < v; ++i)
                    if (x[i] >= ref.t && x[i] > -inf) {
                        kept_logits.push_back(x[i]);
                        ids.push_back(i);
                    }
                std::vector<float> w(kept_logits.size());
                kn::exp_weights(kept_logits, temp, w);
                std::size_t differ = 0;
                for (std::uint64_t key = 0; key < 300; ++key) {
                    dk::rng_stream r = dk::make_stream({8, key, v}), copy = r;
                    const auto d = kn::draw_min_p(x, temp, thr, true, r);
                    const std::size_t j = dk::reference::draw_inverse_cdf(w, copy.uniform());
                    differ += j >= ids.size() || ids[j] != d.index;
                }
                INFO("shape " << dk_family::name(sh) << " V " << v << " T " << temp);
                CHECK(differ == 0);
            }
}

TEST_CASE("draw_min_p: empty and invalid rows, +inf rows, an all-zero mask") {
    const kn::logit_threshold thr{.from_max = kn::min_p_offset(0.1f)};
    for (const bool lp : {true, false}) {
        dk::rng_stream r = dk::make_stream({1, 2, 3});
        CHECK(kn::draw_min_p(std::vector<float>{}, 1.f, thr, lp, r).index == dk::npos);
        const std::vector<float> bad(100, -inf);
        std::vector<float> nan_row(100, qnan);
        CHECK(kn::draw_min_p(bad, 1.f, thr, lp, r).index == dk::npos);
        CHECK(kn::draw_min_p(nan_row, 1.f, thr, lp, r).index == dk::npos);
        CHECK(r.words_used() == 0);
        std::vector<float> x(1000, 0.f);
        const std::vector<std::uint32_t> none(kn::bitmask_words(1000), 0u);
        CHECK(kn::draw_min_p(x, 1.f, thr, lp, r, {.words = none, .size = 1000}).index == dk::npos);
        CHECK(r.words_used() == 0);
        // a NaN threshold keeps nothing
        CHECK(kn::draw_min_p(x, 1.f, {.from_max = double(qnan)}, lp, r).index == dk::npos);
        // +inf entries: uniform among them, logprob -log(2)
        x[10] = inf;
        x[700] = inf;
        std::size_t hits10 = 0;
        for (std::uint64_t key = 0; key < 400; ++key) {
            dk::rng_stream s = dk::make_stream({2, key, 0});
            const auto d = kn::draw_min_p(x, 1.f, thr, lp, s);
            REQUIRE((d.index == 10 || d.index == 700));
            hits10 += d.index == 10;
            if (lp) CHECK(d.logprob == dk_test::Approx(-std::log(2.0)).epsilon(1e-12));
        }
        CHECK(hits10 > 120);  // binomial(400, 1/2): P(<= 120) < 1e-15
        CHECK(hits10 < 280);
    }
}

TEST_CASE("min_p_scan: whole vectors added at once; the crossing entry and the last positive one") {
    // A vector's weights are added as one double sum unless it crosses the target; then its
    // lanes one by one. Against a sequential scan of weight_one: the same crossing entry for
    // targets away from the boundaries, and with no target (the rounding fallback) the last
    // entry of positive weight: entries 293.. weigh 0 (d < -87) or are NaN / below t.
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        using B = dk::simd::batch<A>;
        INFO("arch " << name);
        std::uint64_t s = 5;
        std::vector<float> x(300);
        for (auto& v : x) v = float(-5 * dk_rows::unit(s));
        x[0] = 0.f;
        x[17] = -2000.f;  // below t: not kept
        x[40] = qnan;
        for (std::size_t i = 293; i < 300; ++i) x[i] = -200.f;  // kept, weight 0
        const float m = 0.f, t = -1000.f, inv_t = 1.f / 1.3f;
        const kn::detail::min_p_weigher<A, false, false> weigh{B(m), B(inv_t)};
        const kn::detail::plain_row<A> r{x.data()};
        std::vector<double> cum(x.size());
        double acc = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            if (x[i] >= t) acc += double(kn::detail::weight_one<A>(x[i], m, inv_t));
            cum[i] = acc;
        }
        for (double f : {0.0, 0.1, 0.37, 0.5, 0.9, 0.999}) {
            const double target = f * acc;
            std::size_t want = 0;
            while (!(cum[want] > target)) ++want;
            double run = 0, before = 0;
            std::size_t last = dk::npos;
            float w = 0.f;
            const std::size_t got = kn::detail::min_p_scan<A>(r, 0, x.size(), t, m, inv_t, weigh,
                                                              target, run, before, last, w);
            INFO("f " << f);
            CHECK(got == want);
            CHECK(w == kn::detail::weight_one<A>(x[want], m, inv_t));
        }
        double run = 0, before = 0;
        std::size_t last = dk::npos;
        float w = 0.f;
        CHECK(kn::detail::min_p_scan<A>(r, 0, x.size(), t, m, inv_t, weigh,
                                        std::numeric_limits<double>::infinity(), run, before, last,
                                        w) == dk::npos);
        CHECK(last == 292);
        CHECK(w == kn::detail::weight_one<A>(x[292], m, inv_t));
        CHECK(std::abs(run - acc) <= 1e-12 * acc);
    });
}

TEST_CASE("draw_min_p: a near-uniform row's blocks weighed without compares, NaN entries in them") {
    // Every block of a near-uniform row has its minimum above the threshold: weighed without
    // compares; a block holding a NaN entry (and no -inf, which would lower its minimum) gives a
    // NaN chunk sum and is weighed again with the compares. The logprob within its bound and
    // the token the inverse CDF over the kept entries' float weights, as on the other rows.
    for (const float temp : {1.f, 1.5f}) {
        auto x = dk_family::make_row(dk_family::shape::flat, 20000, 4);
        for (std::size_t i = 300; i < x.size(); i += 2900) x[i] = qnan;
        const kn::logit_threshold thr{.from_max = kn::min_p_offset(0.05f, temp)};
        const kept_ref ref = reference_kept(x, temp, thr, nullptr);
        std::vector<float> kept_logits;
        std::vector<std::size_t> ids;
        for (std::size_t i = 0; i < x.size(); ++i)
            if (x[i] >= ref.t && x[i] > -inf) {
                kept_logits.push_back(x[i]);
                ids.push_back(i);
            }
        REQUIRE(ids.size() == x.size() - 7);  // every entry but the NaN ones
        std::vector<float> w(kept_logits.size());
        kn::exp_weights(kept_logits, temp, w);
        for (std::uint64_t key = 0; key < 100; ++key) {
            dk::rng_stream r = dk::make_stream({8, key, 7}), copy = r;
            const auto d = kn::draw_min_p(x, temp, thr, true, r);
            const std::size_t j = dk::reference::draw_inverse_cdf(w, copy.uniform());
            INFO("T " << temp << " key " << key);
            REQUIRE(j < ids.size());
            CHECK(ids[j] == d.index);
            const double exact = std::log(ref.w[d.index] / ref.sum);
            const double d_tok = (double(ref.m) - double(x[d.index])) / double(temp);
            CHECK(std::fabs(d.logprob - exact) <=
                  kn::min_p_logprob_error(d_tok, ref.d_max, x.size()));
        }
    }
}
}  // namespace dk_t_kernels_min_p
