// Categorical draws (inverse CDF, exponential race) and cosine similarity against
// kernels/reference.hpp, and goodness of fit of the draws against softmax.
#include "dk_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_draw {

namespace {

namespace dk = decodekit;
using dk_rows::each_arch;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

std::vector<float> weights(std::size_t n, std::uint64_t seed) {
    dk::rng_stream r = dk::make_stream({seed, 0, 0}, dk::rng_purpose::user);
    std::vector<float> w(n);
    for (std::size_t i = 0; i < n; ++i) w[i] = float(r.exponential());
    for (std::size_t i = 0; i < n; i += 5) w[i] = 0.f;
    if (n > 10) {
        w[3] = qnan;
        w[7] = -1.f;
        w[8] = -inf;
    }
    return w;
}

std::vector<float> logits(std::size_t n, std::uint64_t seed) {
    dk::rng_stream r = dk::make_stream({seed, 1, 0}, dk::rng_purpose::user);
    std::vector<float> x(n);
    for (auto& v : x) v = float(3 * r.uniform() - 1);
    return x;
}

/// Reference cumulative sums (the reference's own order) to locate boundaries.
std::vector<double> cumulative(const std::vector<float>& w) {
    std::vector<double> c(w.size());
    double run = 0;
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (w[i] > 0) run += w[i];
        c[i] = run;
    }
    return c;
}

}  // namespace

TEST_CASE("draw_inverse_cdf equals the reference except within 1e-12 of a boundary") {
    for (std::size_t n : {1u, 2u, 7u, 8u, 9u, 15u, 16u, 17u, 33u, 255u, 256u, 257u, 1000u, 4097u,
                          32000u, 128256u}) {
        const auto w = weights(n, n);
        const auto cum = cumulative(w);
        const double s = cum.back();
        dk::rng_stream r = dk::make_stream({7, n, 0}, dk::rng_purpose::user);
        std::vector<double> us = {0.0, 0.5, 1.0 - 1e-16};
        for (int i = 0; i < 300; ++i) us.push_back(r.uniform());
        // targets exactly at boundaries
        for (std::size_t i = 0; i < n && i < 50; ++i)
            if (s > 0) us.push_back(cum[i] / s);
        for (double u : us) {
            const std::size_t ref = dk::reference::draw_inverse_cdf(w, u);
            each_arch([&](auto arch, const std::string& name) {
                using A = decltype(arch);
                const std::size_t got = dk::kernels::draw_inverse_cdf<A>(w, u);
                if (got != ref) {
                    INFO("arch " << name << " n " << n << " u " << u);
                    REQUIRE(ref != dk::npos);
                    REQUIRE(got != dk::npos);
                    const double t = u * s;
                    const std::size_t lo = std::min(got, ref);
                    CHECK(std::fabs(t - cum[lo]) <= 1e-12 * s);
                }
                CHECK((got == dk::npos || w[got] > 0));
            });
        }
    }
}

TEST_CASE("draw_inverse_cdf: no positive weight gives npos") {
    each_arch([&](auto arch, const std::string&) {
        using A = decltype(arch);
        std::vector<float> z(37, 0.f);
        z[5] = qnan;
        z[6] = -2.f;
        CHECK(dk::kernels::draw_inverse_cdf<A>(z, 0.3) == dk::npos);
        CHECK(dk::kernels::draw_inverse_cdf<A>(std::span<const float>{}, 0.3) == dk::npos);
        z[36] = 1e-45f;  // a subnormal weight is still a weight
        CHECK(dk::kernels::draw_inverse_cdf<A>(z, 0.99) == 36);
    });
}

TEST_CASE("draw_exponential_race equals the reference and uses 2 words per entry") {
    for (std::size_t n : {1u, 5u, 16u, 17u, 1000u, 4097u}) {
        auto x = logits(n, n);
        if (n > 4) {
            x[1] = qnan;
            x[2] = -inf;
        }
        for (std::uint64_t step = 0; step < 20; ++step) {
            const auto start = dk::make_stream({42, n, step});
            dk::rng_stream rr = start;
            const std::size_t ref = dk::reference::draw_exponential_race(x, 0.8f, rr);
            each_arch([&](auto arch, const std::string& name) {
                using A = decltype(arch);
                INFO("arch " << name << " n " << n);
                dk::rng_stream r = start;
                CHECK(dk::kernels::draw_exponential_race<A>(x, 0.8f, r) == ref);
                CHECK(r == rr);
                CHECK(r.words_used() == 2 * n);
            });
        }
    }
    std::vector<float> none = {-inf, qnan};
    dk::rng_stream r = dk::make_stream({1, 1, 1});
    CHECK(dk::kernels::draw_exponential_race(none, 1.f, r) == dk::npos);
    CHECK(r.words_used() == 4);
}

TEST_CASE("draws match softmax over 200000 draws (chi-square), with a negative control") {
    const std::size_t v = 64;
    auto x = logits(v, 99);
    x[10] = -inf;
    x[11] = qnan;
    x[12] = 4.f;
    const float temp = 0.9f;
    std::vector<float> p(v);
    dk::reference::softmax(x, p, temp);
    std::vector<double> expected(p.begin(), p.end());
    std::vector<double> wrong = expected;  // negative control: slightly hotter distribution
    {
        std::vector<float> q(v);
        dk::reference::softmax(x, q, temp * 1.1f);
        wrong.assign(q.begin(), q.end());
    }
    const std::size_t draws = 200000;
    SECTION("inverse CDF") {
        std::vector<float> e(v);
        dk::kernels::softmax(x, e, temp);
        auto counts = dk_test::histogram(v, draws, [&](std::size_t i) {
            dk::rng_stream r = dk::make_stream({2024, 0, i});
            return dk::kernels::draw_inverse_cdf(e, r.uniform());
        });
        const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
        CHECK(g.p_value > dk_test::false_failure_rate);
        CHECK_FALSE(g.impossible_draw);
        CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
              dk_test::false_failure_rate);
    }
    SECTION("exponential race") {
        auto counts = dk_test::histogram(v, draws, [&](std::size_t i) {
            dk::rng_stream r = dk::make_stream({2025, 0, i}, dk::rng_purpose::gumbel);
            return dk::kernels::draw_exponential_race(x, temp, r);
        });
        const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
        CHECK(g.p_value > dk_test::false_failure_rate);
        CHECK_FALSE(g.impossible_draw);
        CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
              dk_test::false_failure_rate);
    }
}

TEST_CASE("draw_temperature (envelope rejection) matches softmax; 5 words per proposal") {
    // Rows of several blocks, with NaN / -inf entries and a heavy top, on every architecture.
    for (std::size_t v : {5u, 1000u, 128256u}) {
        auto x = logits(v, v + 1);
        for (std::size_t t = 0; t < 8 && v > 100; ++t) x[(t * 7919) % v] = 3.f + 0.3f * float(t);
        if (v > 10) {
            x[3] = qnan;
            x[4] = -inf;
        }
        const float temp = 0.8f;
        std::vector<float> p(v), q(v);
        dk::reference::softmax(x, p, temp);
        dk::reference::softmax(x, q, temp * 1.3f);
        const std::vector<double> expected(p.begin(), p.end()), wrong(q.begin(), q.end());
        each_arch([&](auto arch, const std::string& name) {
            using A = decltype(arch);
            if (v > 1000 && name != std::string(dk::simd::default_arch::name())) return;
            INFO("arch " << name << " V " << v);
            const std::size_t draws = v > 1000 ? 100000 : 200000;
            bool words_ok = true;
            auto counts = dk_test::histogram(v, draws, [&](std::size_t i) {
                dk::rng_stream r = dk::make_stream({77, v, i});
                const auto k = dk::kernels::draw_temperature<A>(x, temp, r);
                if (r.words_used() % 5 != 0 || r.words_used() == 0) words_ok = false;
                return k;
            });
            CHECK(words_ok);
            const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
            CHECK(g.p_value > dk_test::false_failure_rate);
            CHECK_FALSE(g.impossible_draw);
            CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
                  dk_test::false_failure_rate);
        });
    }
}

TEST_CASE("draw_temperature special rows: +inf uniform, no valid entry npos") {
    std::vector<float> x(300, 1.f);
    x[10] = inf;
    x[250] = inf;
    x[11] = qnan;
    std::size_t hits[2] = {0, 0};
    for (std::uint64_t i = 0; i < 2000; ++i) {
        dk::rng_stream r = dk::make_stream({3, 0, i});
        const auto k = dk::kernels::draw_temperature(x, 1.f, r);
        REQUIRE((k == 10 || k == 250));
        ++hits[k == 250];
        CHECK(r.words_used() == 2);
    }
    CHECK(hits[0] > 800);
    CHECK(hits[1] > 800);
    std::vector<float> none(100, -inf);
    none[7] = qnan;
    dk::rng_stream r = dk::make_stream({3, 0, 0});
    CHECK(dk::kernels::draw_temperature(none, 1.f, r) == dk::npos);
    CHECK(r.words_used() == 0);
}

TEST_CASE("cosine_similarity equals the reference within 1e-6") {
    for (std::size_t dim : {1u, 3u, 8u, 15u, 16u, 17u, 64u, 100u, 288u, 4096u}) {
        const auto q = logits(dim, dim);
        const std::size_t rows = 5, stride = dim + 3;
        std::vector<float> m(rows * stride);
        dk::rng_stream r = dk::make_stream({5, dim, 0}, dk::rng_purpose::user);
        for (auto& v : m) v = float(r.uniform() - 0.5);
        for (std::size_t j = 0; j < dim; ++j) m[2 * stride + j] = 0.f;         // zero row
        for (std::size_t j = 0; j < dim; ++j) m[3 * stride + j] = 2.f * q[j];  // parallel
        std::vector<float> ref(rows), got(rows);
        dk::reference::cosine_similarity(q, m.data(), stride, ref);
        each_arch([&](auto arch, const std::string& name) {
            using A = decltype(arch);
            INFO("arch " << name << " dim " << dim);
            dk::kernels::cosine_similarity<A>(q, m.data(), stride, got);
            for (std::size_t i = 0; i < rows; ++i) CHECK(std::fabs(got[i] - ref[i]) <= 1e-6);
            CHECK(got[2] == 0.f);
            CHECK(got[3] == dk_test::Approx(1.0).epsilon(1e-6));
        });
    }
}

TEST_CASE("draw_temperature with a subnormal or tiny temperature: uniform over the max's ties") {
    // T = 1e-40 makes 1/T = +inf (no envelope); T = FLT_MIN keeps 1/T finite but huge. The max
    // sits in early blocks (the hang of the old loop), tied at two places; the reference gives
    // every other entry weight exp(-huge) = 0.
    for (const float temp : {1e-40f, std::numeric_limits<float>::min()}) {
        for (std::size_t v : {300u, 5000u}) {
            auto x = logits(v, 11);
            x[3] = qnan;
            x[4] = -inf;
            x[10] = 2.5f;
            x[40] = 2.5f;
            INFO("T " << temp << " V " << v);
            std::size_t hits[2] = {0, 0};
            bool only_ties = true;
            for (std::uint64_t i = 0; i < 4000; ++i) {
                dk::rng_stream r = dk::make_stream({5, v, i});
                const auto k = dk::kernels::draw_temperature(x, temp, r);
                if (k != 10 && k != 40) only_ties = false;
                ++hits[k == 40];
            }
            CHECK(only_ties);
            CHECK(hits[0] > 1700);
            CHECK(hits[1] > 1700);
            // The reference agrees: only the ties have weight.
            const float m = dk::reference::max(x);
            for (std::size_t i = 0; i < v; ++i)
                if (i != 10 && i != 40) REQUIRE(dk::reference::weight(x[i], m, temp) == 0.0);
        }
    }
    // A single max in the first block of a long row.
    std::vector<float> x(4096, 0.f);
    x[0] = 1.f;
    dk::rng_stream r = dk::make_stream({6, 0, 0});
    CHECK(dk::kernels::draw_temperature(x, 1e-40f, r) == 0);
    CHECK(dk::kernels::draw_temperature(x, std::numeric_limits<float>::min(), r) == 0);
}

TEST_CASE("draw_temperature refined blocks: dominant entries, tied maxima, NaN; few proposals") {
    // A heavy-top row (a bulk plus 40 dominant entries, as bench/bench_common.hpp): the heaviest
    // blocks are refined (max entry and the rest get separate envelopes). Some dominant entries
    // share a block with an equal entry (tied maxima) or with NaN / -inf, so the refined
    // envelopes' tie and NaN handling is exercised. Exact law: chi-square against softmax.
    const std::size_t v = 40000;
    std::vector<float> x = logits(v, 4242);
    std::uint64_t s = 5;
    for (int t = 0; t < 40; ++t) x[dk_rows::mix(s) % v] = float(6.0 + 4.0 * dk_rows::unit(s));
    // Entries 4096 + {0, 16, 32, 48} share one lane-strided block for 4, 8 and 16 lanes (the
    // chunk, L g, divides 4096 and exceeds 48 here): a tied row maximum, a NaN and a -inf.
    x[4096] = 11.f;
    x[4112] = 11.f;
    x[4128] = qnan;
    x[4144] = -inf;
    const float temp = 0.7f;
    std::vector<float> pr(v), q(v);
    dk::reference::softmax(x, pr, temp);
    dk::reference::softmax(x, q, temp * 1.1f);
    const std::vector<double> expected(pr.begin(), pr.end()), wrong(q.begin(), q.end());
    const std::size_t draws = 100000;
    std::size_t words = 0;
    auto counts = dk_test::histogram(v, draws, [&](std::size_t i) {
        dk::rng_stream r = dk::make_stream({91, 3, i});
        const auto k = dk::kernels::draw_temperature(x, temp, r);
        words += r.words_used();
        return k;
    });
    const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(expected));
    CHECK(g.p_value > dk_test::false_failure_rate);
    CHECK_FALSE(g.impossible_draw);
    CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
          dk_test::false_failure_rate);
    CHECK(counts[4096] > 0);  // both tied maxima are drawn
    CHECK(counts[4112] > 0);
    // Proposals per draw (5 words each): well below g = 32 (V = 40000 on 4, 8 or 16 lanes),
    // which one envelope per block needs when each heavy block holds one dominant entry (10.9
    // measured on 16 lanes).
    INFO("proposals per draw " << double(words) / 5.0 / double(draws));
    CHECK(double(words) / 5.0 / double(draws) <
          (dk::simd::lanes<dk::simd::default_arch> == 16 ? 20.0 : 32.0));
}

namespace {

/// Rows for the thresholded and masked draws: 0 heavy top over a bulk, 1 Zipf(1.1) permuted,
/// 2 Gaussian sd 1, 3 near-uniform (sd 0.1); NaN and -inf entries in each.
std::vector<float> draw_row(std::size_t v, int shape, std::uint64_t seed) {
    std::uint64_t s = seed * 977 + v;
    std::vector<float> x(v);
    auto gauss = [&] {
        return std::sqrt(-2 * std::log(dk_rows::unit(s))) *
               std::cos(6.283185307179586 * dk_rows::unit(s));
    };
    switch (shape) {
        case 0:
            for (auto& e : x) e = float(3 * gauss());
            for (int t = 0; t < 20; ++t) x[dk_rows::mix(s) % v] = float(10 + 10 * dk_rows::unit(s));
            break;
        case 1: {
            std::vector<std::size_t> rank(v);
            for (std::size_t i = 0; i < v; ++i) rank[i] = i + 1;
            for (std::size_t i = v; i-- > 1;) std::swap(rank[i], rank[dk_rows::mix(s) % (i + 1)]);
            for (std::size_t i = 0; i < v; ++i) x[i] = float(-1.1 * std::log(double(rank[i])));
            break;
        }
        case 2:
            for (auto& e : x) e = float(gauss());
            break;
        default:
            for (auto& e : x) e = float(0.1 * gauss());
            break;
    }
    if (v > 20) {
        x[dk_rows::mix(s) % v] = qnan;
        x[dk_rows::mix(s) % v] = -inf;
    }
    return x;
}

/// A random mask over v tokens with about `percent` % allowed and garbage bits past v.
std::vector<std::uint32_t> draw_mask(std::size_t v, unsigned percent, std::uint64_t seed) {
    std::uint64_t s = seed;
    std::vector<std::uint32_t> w(dk::kernels::bitmask_words(v), 0u);
    for (std::size_t i = 0; i < 32 * w.size(); ++i)
        if (i >= v || dk_rows::mix(s) % 100 < percent) w[i / 32] |= 1u << (i % 32);
    return w;
}

}  // namespace

TEST_CASE("draw_temperature with a threshold and a mask follows the truncated softmax") {
    // Exact law (reference::truncated_softmax: softmax(x / T) over the allowed entries reaching
    // the threshold, which the largest allowed entry sets), chi-square per case with false-failure
    // rate dk_test::false_failure_rate (1e-7) each, and a negative control per case (the law
    // without the threshold, or without the mask, must be rejected). Every architecture on small
    // rows, the default one at V = 128256; 5 random words per proposal.
    struct draw_case {
        std::size_t v;
        int shape;
        float temp;
        dk::kernels::logit_threshold thr;
        unsigned percent;  // of tokens allowed; 100: no mask
    };
    const std::vector<draw_case> cases = {
        {300, 2, 1.f, {.from_max = dk::kernels::min_p_offset(0.05f, 1.f)}, 100},
        {300, 1, 0.8f, {.from_max = dk::kernels::min_p_offset(0.05f, 0.8f)}, 50},
        {1000, 3, 1.f, {.at_least = 0.05f}, 50},
        {1000, 0, 1.f, {.at_least = 0.f, .from_max = dk::kernels::min_p_offset(0.001f)}, 30},
        {5000, 1, 1.f, {.from_max = dk::kernels::min_p_offset(0.05f)}, 100},
        {5000, 2, 0.7f, {.from_max = dk::kernels::min_p_offset(0.2f, 0.7f)}, 50},
        {128256, 0, 1.f, {.from_max = dk::kernels::min_p_offset(0.05f)}, 100},
        {128256, 1, 1.f, {.from_max = dk::kernels::min_p_offset(0.05f)}, 50},
        {128256, 2, 1.f, {.from_max = dk::kernels::min_p_offset(0.05f)}, 100},
        {128256, 3, 1.f, {.from_max = dk::kernels::min_p_offset(0.05f)}, 1},
    };
    for (std::size_t c = 0; c < cases.size(); ++c) {
        const auto& k = cases[c];
        const auto x = draw_row(k.v, k.shape, c);
        const auto w = draw_mask(k.v, k.percent, c);
        const dk::kernels::token_bitmask mask{.words = w, .size = k.v};
        std::vector<float> p(k.v), q(k.v);
        dk::reference::truncated_softmax(x, p, k.temp, k.thr, mask);
        // Negative controls: with a mask, the law under a mask allowing every other token it
        // allows (draws of the others are impossible there); without one, the law without the
        // threshold.
        auto half = w;
        for (std::size_t i = 0, allowed = 0; i < k.v; ++i)
            if (mask.allowed(i) && allowed++ % 2) half[i / 32] &= ~(1u << (i % 32));
        if (k.percent < 100)
            dk::reference::truncated_softmax(x, q, k.temp, k.thr, {.words = half, .size = k.v});
        else
            dk::reference::softmax(x, q, k.temp);
        const std::vector<double> law(p.begin(), p.end()), wrong(q.begin(), q.end());
        REQUIRE(std::count_if(p.begin(), p.end(), [](float v) { return v > 0; }) > 1);
        each_arch([&](auto arch, const std::string& name) {
            using A = decltype(arch);
            if (k.v > 5000 && name != std::string(dk::simd::default_arch::name())) return;
            INFO("arch " << name << " case " << c << " V " << k.v << " shape " << k.shape);
            const std::size_t draws = 60000;
            bool words_ok = true;
            auto counts = dk_test::histogram(k.v, draws, [&](std::size_t i) {
                dk::rng_stream r = dk::make_stream({55, c, i});
                const auto t = k.percent < 100
                                   ? dk::kernels::draw_temperature<A>(x, k.temp, r, k.thr, mask)
                                   : dk::kernels::draw_temperature<A>(x, k.temp, r, k.thr);
                if (r.words_used() % 5 != 0 || r.words_used() == 0) words_ok = false;
                return t;
            });
            CHECK(words_ok);
            dk_test::require_law(counts, law);
            CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
                  dk_test::false_failure_rate);
        });
    }
}

TEST_CASE("draw_temperature on the four row shapes at V = 128256: law and proposals per draw") {
    // The benchmark family's shapes (heavy top over a bulk, permuted Zipf(1.1), Gaussian sd 1,
    // near-uniform) at T = 0.8: the exact law (chi-square, false-failure rate
    // dk_test::false_failure_rate per shape) and the proposals per draw of the refined envelope
    // (5 words each, fixed keys: deterministic). Bounds about twice the counts measured on 16
    // lanes (4.2 / 19 / 10.4 / 1.3): one envelope per block (no refinement) takes ~g = 64 on the
    // first two; the 512 blocks and 16 refinements before took ~26 and ~74 on the benchmark's
    // rows. Per token, the near-uniform row's draws are too few for a chi-square (every bin
    // merges into the overflow bin), so the law is also checked per block of 64 (chunk of 1024
    // ids, lane id % 16: the kernel's blocks on 16 lanes), where the envelope's block choice acts.
    const std::size_t v = 128256, draws = 40000;
    const double bound[4] = {10, 36, 20, 2};
    for (int shape = 0; shape < 4; ++shape) {
        const auto x = draw_row(v, shape, 9);
        std::vector<float> p(v), q(v);
        dk::reference::softmax(x, p, 0.8f);
        dk::reference::softmax(x, q, 0.9f);
        const std::vector<double> law(p.begin(), p.end()), wrong(q.begin(), q.end());
        std::uint64_t words = 0;
        auto counts = dk_test::histogram(v, draws, [&](std::size_t i) {
            dk::rng_stream r = dk::make_stream({57, std::uint64_t(shape), i});
            const auto k = dk::kernels::draw_temperature(x, 0.8f, r);
            words += r.words_used();
            return k;
        });
        const double proposals = double(words) / 5.0 / double(draws);
        INFO("shape " << shape << " proposals per draw " << proposals);
        dk_test::require_law(counts, law);
        auto block = [](std::size_t i) { return i / 1024 * 16 + i % 16; };
        std::vector<std::uint64_t> bc(block(v - 1) + 2, 0);  // + the overflow bin
        std::vector<double> bl(bc.size() - 1, 0.0);
        for (std::size_t i = 0; i < v; ++i) {
            bc[block(i)] += counts[i];
            bl[block(i)] += law[i];
        }
        bc.back() = counts[v];
        dk_test::require_law(bc, bl);
        if (shape < 3)  // T 0.9 is a different law except on the near-uniform row
            CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
                  dk_test::false_failure_rate);
        if (dk::simd::lanes<dk::simd::default_arch> == 16) CHECK(proposals < bound[shape]);
        CHECK(proposals < 64.0);
    }
}

TEST_CASE("draw_temperature with a mask alone follows softmax over the allowed entries") {
    // The law of the unthresholded draw on the masked copy, with a mask that removes the row's
    // heaviest entries (so the envelope's block maxima must come from allowed entries only).
    const std::size_t v = 4000;
    auto x = draw_row(v, 0, 77);
    auto w = draw_mask(v, 60, 78);
    for (std::size_t i = 0; i < v; ++i)
        if (x[i] > 9.f) w[i / 32] &= ~(1u << (i % 32));
    const dk::kernels::token_bitmask mask{.words = w, .size = v};
    std::vector<float> p(v), q(v);
    dk::reference::softmax(x, p, 0.9f, mask);
    dk::reference::softmax(x, q, 0.9f);
    const std::vector<double> law(p.begin(), p.end()), wrong(q.begin(), q.end());
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        auto counts = dk_test::histogram(v, 100000, [&](std::size_t i) {
            dk::rng_stream r = dk::make_stream({56, 0, i});
            return dk::kernels::draw_temperature<A>(x, 0.9f, r, mask);
        });
        dk_test::require_law(counts, law);
        CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(wrong)).p_value <
              dk_test::false_failure_rate);
    });
}

TEST_CASE("draw_temperature thresholds and masks: npos, +inf rows, NaN thresholds, min-p's set") {
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        auto x = draw_row(3000, 2, 5);
        const float m = dk::reference::max(x);
        auto draw = [&](dk::kernels::logit_threshold thr, std::size_t& words) {
            dk::rng_stream r = dk::make_stream({9, 9, 9});
            const auto i = dk::kernels::draw_temperature<A>(x, 1.f, r, thr);
            words = r.words_used();
            return i;
        };
        std::size_t words = 0;
        // Nothing kept: npos, no random word.
        CHECK(draw({.at_least = m + 1.f}, words) == dk::npos);
        CHECK(words == 0);
        CHECK(draw({.at_least = qnan}, words) == dk::npos);
        CHECK(draw({.from_max = std::numeric_limits<double>::quiet_NaN()}, words) == dk::npos);
        CHECK(draw({.from_max = 1.0}, words) == dk::npos);  // min-p with p > 1
        // Only the max kept.
        CHECK(draw({.at_least = m}, words) == dk::reference::argmax(x));
        CHECK(draw({.from_max = 0.0}, words) == dk::reference::argmax(x));
        // An all-zero mask: npos, no random word.
        const std::vector<std::uint32_t> zero(dk::kernels::bitmask_words(x.size()), 0u);
        const dk::kernels::token_bitmask none{.words = zero, .size = x.size()};
        dk::rng_stream r = dk::make_stream({9, 9, 10});
        CHECK(dk::kernels::draw_temperature<A>(x, 1.f, r, none) == dk::npos);
        CHECK(dk::kernels::draw_temperature<A>(x, 1.f, r, {.at_least = -1e30f}, none) == dk::npos);
        CHECK(r.words_used() == 0);
        // +inf entries: uniform over the allowed ones, whatever the threshold.
        x[10] = inf;
        x[2000] = inf;
        std::vector<std::uint32_t> w(dk::kernels::bitmask_words(x.size()), ~0u);
        const dk::kernels::token_bitmask all{.words = w, .size = x.size()};
        std::size_t hits[2] = {0, 0};
        for (std::uint64_t i = 0; i < 400; ++i) {
            dk::rng_stream s = dk::make_stream({8, 0, i});
            const auto k = dk::kernels::draw_temperature<A>(
                x, 1.f, s, {.from_max = dk::kernels::min_p_offset(0.5f)}, all);
            REQUIRE((k == 10 || k == 2000));
            ++hits[k == 2000];
        }
        CHECK(hits[0] > 100);
        CHECK(hits[1] > 100);
        w[0] &= ~(1u << 10);  // disallow one of them
        for (std::uint64_t i = 0; i < 50; ++i) {
            dk::rng_stream s = dk::make_stream({8, 1, i});
            CHECK(dk::kernels::draw_temperature<A>(x, 1.f, s, all) == 2000);
        }
    });
    // The min-p offset gives exactly min-p's kept set (the support of the truncated law).
    for (int shape = 0; shape < 4; ++shape)
        for (float pb : {0.05f, 0.3f})
            for (float temp : {1.f, 0.6f}) {
                const auto x = draw_row(5000, shape, 17);
                const std::vector<std::uint32_t> all(dk::kernels::bitmask_words(x.size()), ~0u);
                std::vector<float> p(x.size());
                dk::reference::truncated_softmax(x, p, 1.f,
                                                 {.from_max = dk::kernels::min_p_offset(pb, temp)});
                dk::candidates c(x.size());
                dk::reference::filter_min_p(x, pb, temp, c);
                std::vector<dk::token_id> support;
                for (std::size_t i = 0; i < x.size(); ++i)
                    if (p[i] > 0) support.push_back(dk::token_id(i));
                INFO("shape " << shape << " p " << pb << " T " << temp);
                CHECK(std::vector<dk::token_id>(c.ids().begin(), c.ids().end()) == support);
            }
}
}  // namespace dk_t_kernels_draw
