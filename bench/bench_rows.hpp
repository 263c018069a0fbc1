#pragma once
// The benchmark row family (issue 12): four deterministic logits rows per vocabulary size, from
// the peaked row a real model gives on a confident token to the flat rows of creative sampling,
// temperatures above 1 and small models. Every sampler setting is measured on all four, and its
// bar is judged on the worst. Plain C++ (no Google Benchmark), so tests can use the same rows.
//
//   peaked  Gaussian bulk (mean -2, sd 2.5) plus ~64 heavy logits in [8, 18] at pseudo-random
//           positions: the row of every earlier run (bench/RESULTS.md), bit for bit.
//   zipf    permuted Zipf(1.1): logit_i = -1.1 ln(rank_i), ranks 1..V in a fixed random order.
//   gauss   Gaussian, mean 0, sd 1.
//   flat    near-uniform: Gaussian, mean 0, sd 0.01.
//
// Each row depends only on (shape, V, salt): the same numbers in every run and on every
// platform with an IEEE libm (the generator is splitmix64; log and cos may differ by an ulp
// between libms, which moves a logit by at most one float ulp).

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <string_view>
#include <utility>
#include <vector>

namespace dk_bench {

/// The four row shapes of the family.
enum class shape : std::uint8_t { peaked, zipf, gauss, flat };

/// Every shape, in report order.
inline constexpr std::array<shape, 4> shapes = {shape::peaked, shape::zipf, shape::gauss,
                                                shape::flat};

/// The shape's name in benchmark names and reports.
inline constexpr std::string_view shape_name(shape s) noexcept {
    switch (s) {
        case shape::peaked:
            return "peaked";
        case shape::zipf:
            return "zipf";
        case shape::gauss:
            return "gauss";
        case shape::flat:
            return "flat";
    }
    return "?";
}

/// splitmix64: a tiny deterministic generator (same numbers on every platform and library).
inline std::uint64_t splitmix64(std::uint64_t& s) noexcept {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
/// A uniform double in (0, 1) (never 0, so its log is finite).
inline double uniform01(std::uint64_t& s) noexcept {
    return (double(splitmix64(s) >> 11) + 0.5) * 0x1p-53;
}
/// A standard normal variate (Box-Muller, cosine branch: two uniforms per variate).
inline double normal01(std::uint64_t& s) noexcept {
    const double u1 = uniform01(s), u2 = uniform01(s);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

/// The peaked row of size v with a given seed: a Gaussian bulk (mean -2, sd 2.5, as LM heads
/// give) and a heavy top of 64 draws in [8, 18] at pseudo-random positions (a position drawn
/// twice keeps the later value). make_logits(v) is the row of every earlier benchmark run.
inline std::vector<float> make_logits(std::size_t v, std::uint64_t seed = 20240601) {
    std::uint64_t s = seed ^ (0xD1B54A32D192ED03ull * v);
    std::vector<float> x(v);
    for (std::size_t i = 0; i < v; ++i) x[i] = float(-2.0 + 2.5 * normal01(s));
    if (v == 0) return x;
    for (int t = 0; t < 64; ++t) {
        const std::size_t i = std::size_t(splitmix64(s) % v);
        x[i] = float(8.0 + 10.0 * uniform01(s));
    }
    return x;
}

/// The row of shape `sh` and size v; `salt` gives independent rows of the same shape (salt 0:
/// the shared benchmark row; beams and drafts use other salts).
inline std::vector<float> make_row(shape sh, std::size_t v, std::uint64_t salt = 0) {
    if (sh == shape::peaked) return make_logits(v, 20240601 + salt);
    std::uint64_t s = (0x5851F42D4C957F2Dull * (std::uint64_t(sh) + 1)) ^
                      (0xD1B54A32D192ED03ull * v) ^ (0x9E3779B97F4A7C15ull * (salt + 1));
    std::vector<float> x(v);
    switch (sh) {
        case shape::zipf: {
            std::vector<std::uint32_t> rank(v);  // a uniform random permutation of 1..v
            std::iota(rank.begin(), rank.end(), 1u);
            for (std::size_t i = v; i > 1; --i) {
                const std::size_t j = std::size_t(splitmix64(s) % i);
                std::swap(rank[i - 1], rank[j]);
            }
            for (std::size_t i = 0; i < v; ++i) x[i] = float(-1.1 * std::log(double(rank[i])));
            break;
        }
        case shape::gauss:
            for (auto& e : x) e = float(normal01(s));
            break;
        case shape::flat:
            for (auto& e : x) e = float(0.01 * normal01(s));
            break;
        case shape::peaked:
            break;
    }
    return x;
}

}  // namespace dk_bench
