#pragma once
// The benchmark row family of issue 12 for the kernel tests: peaked (a Gaussian bulk, mean -2,
// sd 2.5, plus 64 heavy logits in [8, 18]), permuted Zipf(1.1) (logit = -1.1 ln rank), Gaussian
// sd 1 and near-uniform (Gaussian sd 0.01); deterministic per (shape, V, salt). The same
// definitions as the benchmarks' rows (bench/bench_rows.hpp once the family lands there).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

namespace dk_family {

enum class shape : std::uint8_t { peaked, zipf, gauss, flat };
inline constexpr shape shapes[] = {shape::peaked, shape::zipf, shape::gauss, shape::flat};
inline const char* name(shape s) {
    return s == shape::peaked  ? "peaked"
           : s == shape::zipf  ? "zipf"
           : s == shape::gauss ? "gauss"
                               : "flat";
}

inline std::uint64_t splitmix64(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
inline double uniform01(std::uint64_t& s) { return (double(splitmix64(s) >> 11) + 0.5) * 0x1p-53; }
inline double normal01(std::uint64_t& s) {
    const double u1 = uniform01(s), u2 = uniform01(s);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
}

/// The row of shape `sh`, size v; salt 0 is the benchmark's row.
inline std::vector<float> make_row(shape sh, std::size_t v, std::uint64_t salt = 0) {
    std::vector<float> x(v);
    if (sh == shape::peaked) {
        std::uint64_t s = (20240601 + salt) ^ (0xD1B54A32D192ED03ull * v);
        for (auto& e : x) e = float(-2.0 + 2.5 * normal01(s));
        if (v == 0) return x;
        for (int t = 0; t < 64; ++t) {
            const std::size_t i = std::size_t(splitmix64(s) % v);
            x[i] = float(8.0 + 10.0 * uniform01(s));
        }
        return x;
    }
    std::uint64_t s = (0x5851F42D4C957F2Dull * (std::uint64_t(sh) + 1)) ^
                      (0xD1B54A32D192ED03ull * v) ^ (0x9E3779B97F4A7C15ull * (salt + 1));
    switch (sh) {
        case shape::zipf: {
            std::vector<std::uint32_t> rank(v);
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

}  // namespace dk_family
