#pragma once
/// \file simd/xsimd_compat.hpp
/// The only header that names xsimd. A tiny shim over the API differences between
/// xsimd 8.1 (Debian 12) and xsimd 14 (vcpkg, Conan):
///   8.1: hadd, no reduce_max/reduce_min, no batch_bool::mask()
///   >= 9: reduce_add/reduce_max/reduce_min; >= 10: batch_bool::mask(); hadd later removed.
/// Everything here is a template on the architecture tag `A` so translation units built with
/// different -m flags never merge one symbol (the SIMD ODR hazard).

#include <decodekit/config.hpp>

#include <xsimd/xsimd.hpp>

#include <cstddef>
#include <cstdint>

#ifndef XSIMD_VERSION_MAJOR
#error "decodekit: could not determine the xsimd version"
#endif
#if XSIMD_VERSION_MAJOR < 8 || (XSIMD_VERSION_MAJOR == 8 && XSIMD_VERSION_MINOR < 1)
#error "decodekit needs xsimd 8.1 or newer"
#endif

DECODEKIT_BEGIN_NAMESPACE
namespace simd {

/// The architecture decodekit kernels use unless told otherwise: the best one the compiler
/// flags of this translation unit enable (xsimd::default_arch).
using default_arch = xsimd::default_arch;

/// Every architecture the compiler flags of this translation unit enable (for tests).
using supported_architectures = xsimd::supported_architectures;

template <class A>
using batch = xsimd::batch<float, A>;
template <class A>
using batch_bool = xsimd::batch_bool<float, A>;
template <class A>
using ibatch = xsimd::batch<std::int32_t, A>;

/// Number of float lanes of architecture A.
template <class A>
inline constexpr std::size_t lanes = xsimd::batch<float, A>::size;

/// Horizontal sum of the lanes.
template <class A>
inline float reduce_add(const batch<A>& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_add(v);
#else
    return xsimd::hadd(v);
#endif
}

/// Horizontal maximum of the lanes (NaN lanes must be removed by the caller).
template <class A>
inline float reduce_max(const batch<A>& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_max(v);
#else
    alignas(64) float tmp[lanes<A>];
    v.store_aligned(tmp);
    float m = tmp[0];
    for (std::size_t i = 1; i < lanes<A>; ++i) m = tmp[i] > m ? tmp[i] : m;
    return m;
#endif
}

/// Horizontal minimum of the lanes.
template <class A>
inline float reduce_min(const batch<A>& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_min(v);
#else
    alignas(64) float tmp[lanes<A>];
    v.store_aligned(tmp);
    float m = tmp[0];
    for (std::size_t i = 1; i < lanes<A>; ++i) m = tmp[i] < m ? tmp[i] : m;
    return m;
#endif
}

/// Bit i set iff lane i of `b` is true.
template <class A>
inline std::uint64_t to_mask(const batch_bool<A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 10
    return b.mask();
#else
    alignas(64) bool tmp[lanes<A>];
    b.store_aligned(tmp);
    std::uint64_t m = 0;
    for (std::size_t i = 0; i < lanes<A>; ++i) m |= std::uint64_t(tmp[i]) << i;
    return m;
#endif
}

/// Calls f(A{}) for every architecture in supported_architectures.
template <class F>
inline void for_each_arch(F&& f) {
    supported_architectures::for_each(static_cast<F&&>(f));
}

}  // namespace simd
DECODEKIT_END_NAMESPACE
