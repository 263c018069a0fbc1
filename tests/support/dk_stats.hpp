#pragma once
// Goodness-of-fit helpers for the statistical tests.
//
// chi_square(): Pearson's statistic of observed counts against expected probabilities, bins with
// expected count < 5 pooled into one, and its p-value from the regularised upper incomplete gamma
// function Q(df/2, stat/2). A test asserts p_value > dk_test::false_failure_rate: with a correct
// sampler that assertion fails with probability 1e-7 (seeds are fixed, so a given build either
// always passes or always fails; the rate is the chance that a fixed seed is unlucky).
// A draw of a token whose expected probability is 0 is an immediate failure (infinite statistic).

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

namespace dk_test {

inline constexpr double false_failure_rate = 1e-7;

/// Regularised upper incomplete gamma Q(a, x) (Numerical Recipes' series / continued fraction).
inline double gamma_q(double a, double x) {
    if (x <= 0) return 1.0;
    const double gln = std::lgamma(a);
    if (x < a + 1) {
        double ap = a, sum = 1.0 / a, del = sum;
        for (int n = 0; n < 10000; ++n) {
            ap += 1;
            del *= x / ap;
            sum += del;
            if (std::fabs(del) < std::fabs(sum) * 1e-15) break;
        }
        return 1.0 - sum * std::exp(-x + a * std::log(x) - gln);
    }
    double b = x + 1 - a, c = 1.0 / 1e-300, d = 1.0 / b, h = d;
    for (int i = 1; i < 10000; ++i) {
        const double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (std::fabs(d) < 1e-300) d = 1e-300;
        c = b + an / c;
        if (std::fabs(c) < 1e-300) c = 1e-300;
        d = 1.0 / d;
        const double del = d * c;
        h *= del;
        if (std::fabs(del - 1.0) < 1e-15) break;
    }
    return std::exp(-x + a * std::log(x) - gln) * h;
}

struct gof_result {
    double statistic = 0;
    int df = 0;
    double p_value = 1;
    double total_variation = 0;    ///< 0.5 * sum |observed/n - expected|
    bool impossible_draw = false;  ///< a draw landed where the expected probability is 0
    bool size_mismatch = false;    ///< counts and expected differ in size (a test bug): p = 0
};

/// Pearson chi-square of `counts` (n draws in all) against probabilities `expected`.
/// \pre counts.size() == expected.size(); otherwise reports size_mismatch with p_value 0.
inline gof_result chi_square(const std::vector<std::uint64_t>& counts,
                             const std::vector<double>& expected) {
    gof_result r;
    if (counts.size() != expected.size()) {
        // Usually a forgotten with_overflow_bin(): fail loudly instead of reading out of bounds.
        std::fprintf(stderr,
                     "dk_test::chi_square: %zu counts but %zu expected probabilities (forgot "
                     "with_overflow_bin?)\n",
                     counts.size(), expected.size());
        r.size_mismatch = true;
        r.statistic = std::numeric_limits<double>::infinity();
        r.p_value = 0;
        return r;
    }
    double n = 0;
    for (auto c : counts) n += double(c);
    double pooled_obs = 0, pooled_exp = 0;
    int bins = 0;
    for (std::size_t i = 0; i < counts.size(); ++i) {
        const double e = expected[i] * n;
        r.total_variation += 0.5 * std::fabs(double(counts[i]) / n - expected[i]);
        if (expected[i] <= 0) {
            if (counts[i] > 0) r.impossible_draw = true;
            continue;
        }
        if (e < 5) {
            pooled_obs += double(counts[i]);
            pooled_exp += e;
            continue;
        }
        const double d = double(counts[i]) - e;
        r.statistic += d * d / e;
        ++bins;
    }
    if (pooled_exp > 0) {
        const double d = pooled_obs - pooled_exp;
        r.statistic += d * d / pooled_exp;
        ++bins;
    }
    r.df = bins > 1 ? bins - 1 : 1;
    r.p_value = r.impossible_draw ? 0.0 : gamma_q(r.df / 2.0, r.statistic / 2.0);
    return r;
}

/// Counts of `n` draws of `draw(i)` (i = 0..n-1) over `v` outcomes; out-of-range draws counted in
/// an extra last bin (which has expected probability 0).
template <class Draw>
std::vector<std::uint64_t> histogram(std::size_t v, std::size_t n, Draw&& draw) {
    std::vector<std::uint64_t> counts(v + 1, 0);
    for (std::size_t i = 0; i < n; ++i) {
        const auto t = static_cast<std::size_t>(draw(i));
        ++counts[t < v ? t : v];
    }
    return counts;
}

/// Pads an expected-probability vector with the zero-probability "out of range" bin.
inline std::vector<double> with_overflow_bin(std::vector<double> p) {
    p.push_back(0.0);
    return p;
}

#ifdef REQUIRE  // Catch2 included first (dk_test.hpp)
/// REQUIREs that `counts` (a histogram() with its overflow bin) follows `law` (without the overflow
/// bin): no impossible draw and p_value > false_failure_rate; the statistics go to INFO.
inline void require_law(const std::vector<std::uint64_t>& counts, const std::vector<double>& law) {
    const auto g = chi_square(counts, with_overflow_bin(law));
    INFO("chi2 " << g.statistic << " df " << g.df << " p_value " << g.p_value << " tv "
                 << g.total_variation);
    REQUIRE_FALSE(g.size_mismatch);
    REQUIRE_FALSE(g.impossible_draw);
    REQUIRE(g.p_value > false_failure_rate);
}
#endif

}  // namespace dk_test
