#pragma once
// Shared fixtures of the kernel tests: the row lengths (around every lane count and at the
// vocabulary sizes), a splitmix64 generator and the row kinds, and a loop over the enabled
// xsimd architectures.
#include <decodekit/decodekit.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

// DK_TEST_ARCHS_EDGES (CMake DECODEKIT_TEST_ARCHS=edges, set by the asan, single-header
// and -fno-exceptions presets): each_arch runs the narrowest and the best architecture only, not
// every one the build enables (see each_arch).
#ifndef DK_TEST_ARCHS_EDGES
#define DK_TEST_ARCHS_EDGES 0
#endif

namespace dk_rows {

namespace detail {
inline constexpr float inf = std::numeric_limits<float>::infinity();
inline constexpr float qnan = std::numeric_limits<float>::quiet_NaN();
}  // namespace detail

inline const std::vector<std::size_t> lengths = {
    1,  2,  3,   4,   5,   7,   8,    9,    15,   16,   17,    31,     32,     33,    63,
    64, 65, 100, 511, 512, 513, 1023, 1024, 1025, 4097, 32000, 128256, 151936, 256000};

inline std::uint64_t mix(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
inline double unit(std::uint64_t& s) { return (double(mix(s) >> 11) + 0.5) * 0x1p-53; }

/// Row kinds: 0 Gaussian bulk + heavy top; 1 rounded (many ties); 2 with NaN; 3 with -inf;
/// 4 huge magnitudes (1e30); 5 subnormals; 6 constant; 7 with +inf; 8 all -inf / NaN.
inline std::vector<float> make_row(std::size_t n, int kind, std::uint64_t seed) {
    std::uint64_t s = seed * 7919 + n;
    std::vector<float> x(n);
    for (auto& v : x) {
        const double g = std::sqrt(-2 * std::log(unit(s))) * std::cos(6.283185307179586 * unit(s));
        v = float(-2 + 3 * g);
    }
    for (std::size_t t = 0; t < 1 + n / 2000; ++t) x[mix(s) % n] = float(8 + 10 * unit(s));
    switch (kind) {
        case 1:
            for (auto& v : x) v = std::round(v);
            break;
        case 2:
            for (std::size_t i = mix(s) % 5; i < n; i += 5) x[i] = detail::qnan;
            break;
        case 3:
            for (std::size_t i = mix(s) % 3; i < n; i += 3) x[i] = -detail::inf;
            break;
        case 4:
            for (auto& v : x) v *= 1e29f;
            break;
        case 5:
            for (auto& v : x) v *= 1e-40f;
            break;
        case 6:
            for (auto& v : x) v = 1.5f;
            break;
        case 7:
            x[mix(s) % n] = detail::inf;
            x[mix(s) % n] = detail::inf;
            break;
        case 8:
            for (std::size_t i = 0; i < n; ++i) x[i] = i % 2 ? detail::qnan : -detail::inf;
            break;
        default:
            break;
    }
    return x;
}

namespace detail {
template <class... As>
struct arch_types {};
/// The last architecture with the fewest float lanes: xsimd's lists (8.1 and 14) are sorted best
/// first, so on x86 that is sse2 (xsimd 14's avx2_128 and the sse4 ones come before it). xsimd 14
/// has no version() on its architectures, hence the position.
template <class L>
struct narrowest {  // no architecture: each_arch calls nothing, as for_each_arch would
    using type = void;
};
template <class A>
struct narrowest<arch_types<A>> {
    using type = A;
};
template <class A, class B, class... R>
struct narrowest<arch_types<A, B, R...>>
    : narrowest<arch_types<
          std::conditional_t<(decodekit::simd::lanes<B> <= decodekit::simd::lanes<A>), B, A>,
          R...>> {};
/// The architectures of an arch list (xsimd's arch_list) as arch_types.
template <class L>
struct arch_types_of;
template <template <class...> class L, class... As>
struct arch_types_of<L<As...>> {
    using type = arch_types<As...>;
    static constexpr bool empty = sizeof...(As) == 0;
};
}  // namespace detail

/// Calls f(arch, name) for every xsimd architecture this build enables, or, with
/// DK_TEST_ARCHS_EDGES, for two of them: the best (simd::default_arch, the one sample() uses)
/// and the last one with the fewest float lanes (detail::narrowest: sse2 on x86, 4 lanes, no
/// FMA). Only the architectures called are instantiated: nine on an AVX2 build with xsimd 8.1, and
/// each instantiates every kernel the test calls (clang 14 ASan -O1, test_kernels_typical's
/// compile 74 -> 20 CPU-s). The sanitizer and -fno-exceptions builds need the lane widths' edges;
/// the test preset keeps every architecture's SIMD-vs-scalar check.
template <class F>
void each_arch(F&& f) {
#if DK_TEST_ARCHS_EDGES
    using list = detail::arch_types_of<decodekit::simd::supported_architectures>;
    if constexpr (!list::empty) {
        using best = decodekit::simd::default_arch;
        using low = typename detail::narrowest<typename list::type>::type;
        f(best{}, std::string(best::name()));
        if constexpr (!std::is_same_v<best, low>) f(low{}, std::string(low::name()));
    }
#else
    decodekit::simd::for_each_arch(
        [&](auto arch) { f(arch, std::string(decltype(arch)::name())); });
#endif
}

}  // namespace dk_rows
