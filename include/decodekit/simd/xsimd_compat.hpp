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

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

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
template <class A>
using dbatch = xsimd::batch<double, A>;

// Thin wrappers so that kernels never name xsimd (same semantics as the xsimd functions).

/// x * y + z per lane (fused where the architecture has FMA).
template <class A>
inline batch<A> fma(const batch<A>& x, const batch<A>& y, const batch<A>& z) noexcept {
    return xsimd::fma(x, y, z);
}
/// Per lane: c ? a : b.
template <class A>
inline batch<A> select(const batch_bool<A>& c, const batch<A>& a, const batch<A>& b) noexcept {
    return xsimd::select(c, a, b);
}
/// Per-lane maximum (xsimd semantics for NaN; use max_ignore_nan to skip NaN).
template <class A>
inline batch<A> max(const batch<A>& a, const batch<A>& b) noexcept {
    return xsimd::max(a, b);
}
/// Per-lane minimum (xsimd semantics for NaN).
template <class A>
inline batch<A> min(const batch<A>& a, const batch<A>& b) noexcept {
    return xsimd::min(a, b);
}
/// True if any lane of the mask is set.
template <class A>
inline bool any(const batch_bool<A>& b) noexcept {
    return xsimd::any(b);
}

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
inline float reduce_max(const batch<A>& v) noexcept;

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

/// Which x86 register family architecture A uses (0: other / generic code paths).
template <class A>
inline constexpr int x86_family =
#if defined(__AVX512F__)
    std::is_base_of_v<xsimd::avx512f, A> ? 512 :
#endif
#if defined(__AVX__)
    std::is_base_of_v<xsimd::avx, A> ? 256
    :
#endif
#if defined(__SSE2__)
    std::is_base_of_v<xsimd::sse2, A> ? 128
                                      :
#endif
                                      0;

template <class A>
inline float reduce_max(const batch<A>& v) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __m512 x = static_cast<__m512>(v);
        const __m256 h =
            _mm256_max_ps(_mm512_castps512_ps256(x),
                          _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
        __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        q = _mm_max_ps(q, _mm_movehl_ps(q, q));
        q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
        return _mm_cvtss_f32(q);
    } else
#endif
#if defined(__AVX__)
        if constexpr (x86_family<A> == 256) {
        const __m256 h = static_cast<__m256>(v);
        __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        q = _mm_max_ps(q, _mm_movehl_ps(q, q));
        q = _mm_max_ss(q, _mm_shuffle_ps(q, q, 1));
        return _mm_cvtss_f32(q);
    } else
#endif
    {
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
}

/// Bit i set iff lane i of `b` is true (one instruction on x86: kmov / movmskps).
template <class A>
inline std::uint64_t to_mask(const batch_bool<A>& b) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        return std::uint64_t(std::uint16_t(static_cast<__mmask16>(b)));
    } else
#endif
#if defined(__AVX__)
        if constexpr (x86_family<A> == 256) {
        return std::uint64_t(unsigned(_mm256_movemask_ps(static_cast<__m256>(b))));
    } else
#endif
#if defined(__SSE2__)
        if constexpr (x86_family<A> == 128) {
        return std::uint64_t(unsigned(_mm_movemask_ps(static_cast<__m128>(b))));
    } else
#endif
    {
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
}

/// Lane j is true iff bit j of `bits` is set (bits at or above lanes<A> are ignored).
/// AVX-512: the low 16 bits are the kmask itself; AVX2 / SSE2: the bits broadcast, masked by
/// {1, 2, 4, ...} per lane and compared for equality; other architectures: the same test in
/// int32 lanes, converted to float lanes and compared with 0. \pre lanes<A> <= 32
template <class A>
inline batch_bool<A> lanes_from_bits(std::uint32_t bits) noexcept {
    static_assert(lanes<A> <= 32, "a 32-bit word holds the bits of one vector");
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        return batch_bool<A>(__mmask16(bits));
    } else
#endif
#if defined(__AVX2__)
        if constexpr (x86_family<A> == 256) {
        const __m256i pow2 = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
        const __m256i b = _mm256_and_si256(_mm256_set1_epi32(int(bits)), pow2);
        return batch_bool<A>(_mm256_castsi256_ps(_mm256_cmpeq_epi32(b, pow2)));
    } else
#endif
#if defined(__SSE2__)
        if constexpr (x86_family<A> == 128) {
        const __m128i pow2 = _mm_setr_epi32(1, 2, 4, 8);
        const __m128i b = _mm_and_si128(_mm_set1_epi32(int(bits)), pow2);
        return batch_bool<A>(_mm_castsi128_ps(_mm_cmpeq_epi32(b, pow2)));
    } else
#endif
    {
        alignas(64) std::int32_t pow2[lanes<A>];
        for (std::size_t j = 0; j < lanes<A>; ++j) pow2[j] = std::int32_t(1u << j);
        const ibatch<A> b = ibatch<A>(std::int32_t(bits)) & ibatch<A>::load_aligned(pow2);
        return xsimd::batch_cast<float>(b) != batch<A>(0.f);
    }
}

/// The lanes of a packed token bitmask for the vector of entries [i, i + lanes<A>): lane j is
/// true iff bit (i + j) % 32 of words[(i + j) / 32] is set (the layout of xgrammar and
/// llguidance). One word read. AVX-512: the word broadcast from memory and tested against
/// {1, 2, 4, ...} << (i % 32) (vptestmd: no general-purpose to mask register move, which costs
/// more on some cores). \pre i % lanes<A> == 0 (the lanes' bits lie in one word), words[i / 32]
/// readable.
template <class A>
inline batch_bool<A> bitmask_lanes(const std::uint32_t* words, std::size_t i) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __m512i pow2 = _mm512_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                               4096, 8192, 16384, 32768);
        const __m512i b = _mm512_set1_epi32(int(words[i / 32]));
        return batch_bool<A>(
            _mm512_test_epi32_mask(b, (i & 16) ? _mm512_slli_epi32(pow2, 16) : pow2));
    } else
#endif
    {
        return lanes_from_bits<A>(words[i / 32] >> (i % 32));
    }
}

/// The lane bits (bit j for lane j, as to_mask) of a packed token bitmask for the vector of
/// entries [i, i + lanes<A>). \pre as bitmask_lanes.
template <class A>
inline std::uint64_t bitmask_bits(const std::uint32_t* words, std::size_t i) noexcept {
    constexpr std::uint64_t all = lanes<A> >= 64 ? ~0ull : (1ull << lanes<A>)-1;
    return std::uint64_t(words[i / 32] >> (i % 32)) & all;
}

/// Writes `value` to the entries of p[0, 32) whose bit in `word` is clear (the others are
/// neither read nor written). AVX-512: two masked stores, no load of the row; other
/// architectures: a blend per vector.
template <class A>
inline void store_where_clear(float* p, std::uint32_t word, float value) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __m512i pow2 = _mm512_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048,
                                               4096, 8192, 16384, 32768);
        const __m512i b = _mm512_set1_epi32(int(word));
        const __m512 v = _mm512_set1_ps(value);
        _mm512_mask_storeu_ps(p, _mm512_testn_epi32_mask(b, pow2), v);
        _mm512_mask_storeu_ps(p + 16, _mm512_testn_epi32_mask(b, _mm512_slli_epi32(pow2, 16)), v);
    } else
#endif
    {
        constexpr std::size_t L = lanes<A>;
        const batch<A> v(value);
        for (std::size_t j = 0; j < 32; j += L)
            xsimd::select(lanes_from_bits<A>(word >> j), batch<A>::load_unaligned(p + j), v)
                .store_unaligned(p + j);
    }
}

/// Lane-wise max(acc, x) where a NaN lane of `x` leaves `acc` unchanged (x86 max returns its
/// second operand when either is NaN). \pre acc has no NaN lane.
template <class A>
inline batch<A> max_ignore_nan(const batch<A>& acc, const batch<A>& x) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        return batch<A>(_mm512_max_ps(static_cast<__m512>(x), static_cast<__m512>(acc)));
    } else
#endif
#if defined(__AVX__)
        if constexpr (x86_family<A> == 256) {
        return batch<A>(_mm256_max_ps(static_cast<__m256>(x), static_cast<__m256>(acc)));
    } else
#endif
#if defined(__SSE2__)
        if constexpr (x86_family<A> == 128) {
        return batch<A>(_mm_max_ps(static_cast<__m128>(x), static_cast<__m128>(acc)));
    } else
#endif
    {
        return xsimd::select(x > acc, x, acc);
    }
}

/// Lane-wise min(acc, x) where a NaN lane of `x` leaves `acc` unchanged (as max_ignore_nan).
/// \pre acc has no NaN lane.
template <class A>
inline batch<A> min_ignore_nan(const batch<A>& acc, const batch<A>& x) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        return batch<A>(_mm512_min_ps(static_cast<__m512>(x), static_cast<__m512>(acc)));
    } else
#endif
#if defined(__AVX__)
        if constexpr (x86_family<A> == 256) {
        return batch<A>(_mm256_min_ps(static_cast<__m256>(x), static_cast<__m256>(acc)));
    } else
#endif
#if defined(__SSE2__)
        if constexpr (x86_family<A> == 128) {
        return batch<A>(_mm_min_ps(static_cast<__m128>(x), static_cast<__m128>(acc)));
    } else
#endif
    {
        return xsimd::select(x < acc, x, acc);
    }
}

/// Adds the lanes of `x` into two double accumulators (low half into lo, high half into hi),
/// so that sums of floats are exact to double precision per element.
template <class A>
inline void widen_add(xsimd::batch<double, A>& lo, xsimd::batch<double, A>& hi,
                      const batch<A>& x) noexcept {
    using D = xsimd::batch<double, A>;
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __m512 v = static_cast<__m512>(x);
        lo += D(_mm512_cvtps_pd(_mm512_castps512_ps256(v)));
        hi += D(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    } else
#endif
#if defined(__AVX__)
        if constexpr (x86_family<A> == 256) {
        const __m256 v = static_cast<__m256>(x);
        lo += D(_mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        hi += D(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    } else
#endif
#if defined(__SSE2__)
        if constexpr (x86_family<A> == 128) {
        const __m128 v = static_cast<__m128>(x);
        lo += D(_mm_cvtps_pd(v));
        hi += D(_mm_cvtps_pd(_mm_movehl_ps(v, v)));
    } else
#endif
    {
        constexpr std::size_t n = lanes<A>, h = D::size;
        alignas(64) float f[n];
        alignas(64) double d[2 * h];
        x.store_aligned(f);
        for (std::size_t i = 0; i < 2 * h; ++i) d[i] = i < n ? double(f[i]) : 0.0;
        lo += D::load_aligned(d);
        hi += D::load_aligned(d + h);
    }
}

/// Adds the lanes of `x` selected by `sel` into (in_lo, in_hi) and the others into
/// (out_lo, out_hi), as widen_add does (low half to *_lo, high half to *_hi): on AVX-512 one
/// conversion of x and masked adds, so that a sum and its part cost about one widen_add.
template <class A>
inline void widen_add_split(xsimd::batch<double, A>& in_lo, xsimd::batch<double, A>& in_hi,
                            xsimd::batch<double, A>& out_lo, xsimd::batch<double, A>& out_hi,
                            const batch<A>& x, const batch_bool<A>& sel) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        using D =
            xsimd::batch<double, A>;  // (here: unused without AVX-512, -Wunused-local-typedefs)
        const __m512 v = static_cast<__m512>(x);
        const __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
        const __m512d hi =
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
        const unsigned k = unsigned(to_mask<A>(sel));
        const __mmask8 klo = __mmask8(k), khi = __mmask8(k >> 8);
        const __m512d il = static_cast<__m512d>(in_lo), ih = static_cast<__m512d>(in_hi);
        const __m512d ol = static_cast<__m512d>(out_lo), oh = static_cast<__m512d>(out_hi);
        in_lo = D(_mm512_mask_add_pd(il, klo, il, lo));
        in_hi = D(_mm512_mask_add_pd(ih, khi, ih, hi));
        out_lo = D(_mm512_mask_add_pd(ol, __mmask8(~klo), ol, lo));
        out_hi = D(_mm512_mask_add_pd(oh, __mmask8(~khi), oh, hi));
    } else
#endif
    {
        const batch<A> zero(0.f);
        widen_add<A>(in_lo, in_hi, xsimd::select(sel, x, zero));
        widen_add<A>(out_lo, out_hi, xsimd::select(sel, zero, x));
    }
}

/// Horizontal sum of double lanes.
template <class A>
inline double reduce_add(const xsimd::batch<double, A>& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_add(v);
#else
    return xsimd::hadd(v);
#endif
}

/// Widens the float lanes of `x` to double: the low half to `lo`, the high half to `hi`.
template <class A>
inline void widen(const batch<A>& x, xsimd::batch<double, A>& lo,
                  xsimd::batch<double, A>& hi) noexcept {
    using D = xsimd::batch<double, A>;
    lo = D(0.0);
    hi = D(0.0);
    widen_add<A>(lo, hi, x);
}

/// The double-lane counterparts of fma, select and abs (same xsimd semantics).
template <class A>
inline dbatch<A> fma(const dbatch<A>& x, const dbatch<A>& y, const dbatch<A>& z) noexcept {
    return xsimd::fma(x, y, z);
}
template <class A>
inline dbatch<A> select(const xsimd::batch_bool<double, A>& c, const dbatch<A>& a,
                        const dbatch<A>& b) noexcept {
    return xsimd::select(c, a, b);
}
template <class A>
inline dbatch<A> abs(const dbatch<A>& x) noexcept {
    return xsimd::abs(x);
}

/// exp(d) in double for d <= 0 (the double-precision counterpart of exp_nonpositive, for the
/// rare passes that need weights to ~1e-15): k = round(d / ln 2) by the shifter trick,
/// r = d - k ln 2 by a two-constant Cody-Waite reduction (|r| <= 0.35), the Taylor polynomial
/// of degree 13 (truncation below 6e-18), 2^k from the exponent bits. Returns 0 for d < -708
/// (those weights are below 1e-307) and for NaN lanes. Relative error a few ulp (the tests
/// bound it by 4e-16 against std::exp).
template <class A>
inline xsimd::batch<double, A> exp_nonpositive_double(const xsimd::batch<double, A>& d) noexcept {
    using D = xsimd::batch<double, A>;
    using I = xsimd::batch<std::int64_t, A>;
    const D lo(-708.0);
    const D dc = xsimd::max(d, lo);
    const D shifter(6755399441055744.0 + 1023.0);  // 1.5 * 2^52 + exponent bias
    const D t = xsimd::fma(dc, D(1.4426950408889634), shifter);
    const D k = t - shifter;  // round(dc / ln 2), exact
    D r = xsimd::fnma(k, D(6.93147180369123816490e-01), dc);
    r = xsimd::fnma(k, D(1.90821492927058770002e-10), r);
    // Horner: 1/13!, 1/12!, ..., 1/2!, then r * q + r + 1.
    D q(1.0 / 6227020800.0);
    q = xsimd::fma(q, r, D(1.0 / 479001600.0));
    q = xsimd::fma(q, r, D(1.0 / 39916800.0));
    q = xsimd::fma(q, r, D(1.0 / 3628800.0));
    q = xsimd::fma(q, r, D(1.0 / 362880.0));
    q = xsimd::fma(q, r, D(1.0 / 40320.0));
    q = xsimd::fma(q, r, D(1.0 / 5040.0));
    q = xsimd::fma(q, r, D(1.0 / 720.0));
    q = xsimd::fma(q, r, D(1.0 / 120.0));
    q = xsimd::fma(q, r, D(1.0 / 24.0));
    q = xsimd::fma(q, r, D(1.0 / 6.0));
    q = xsimd::fma(q, r, D(0.5));
    const D e = xsimd::fma(q * r, r, r) + D(1.0);
#if XSIMD_VERSION_MAJOR >= 11
    const D scale = xsimd::bitwise_cast<double>(xsimd::bitwise_cast<std::int64_t>(t) << 52);
#else
    const D scale = xsimd::bitwise_cast<D>(xsimd::bitwise_cast<I>(t) << 52);
#endif
    static_cast<void>(sizeof(I));
    return xsimd::select(d >= lo, e * scale, D(0.0));
}

/// exp_nonpositive_double of K vectors in place: the same operations lane for lane (so the same
/// bits), stage by stage across the K vectors so that K dependency chains (~70 cycles each: the
/// degree-13 Horner) are in flight (see exp_nonpositive_in_range_n).
template <class A, std::size_t K>
inline void exp_nonpositive_double_n(xsimd::batch<double, A> (&d)[K]) noexcept {
    using D = xsimd::batch<double, A>;
    using I = xsimd::batch<std::int64_t, A>;
    const D lo(-708.0), shifter(6755399441055744.0 + 1023.0);  // as exp_nonpositive_double
    D t[K], r[K], q[K];
    for (std::size_t j = 0; j < K; ++j)
        t[j] = xsimd::fma(xsimd::max(d[j], lo), D(1.4426950408889634), shifter);
    for (std::size_t j = 0; j < K; ++j)
        r[j] = xsimd::fnma(t[j] - shifter, D(6.93147180369123816490e-01), xsimd::max(d[j], lo));
    for (std::size_t j = 0; j < K; ++j)
        r[j] = xsimd::fnma(t[j] - shifter, D(1.90821492927058770002e-10), r[j]);
    for (std::size_t j = 0; j < K; ++j)
        q[j] = xsimd::fma(D(1.0 / 6227020800.0), r[j], D(1.0 / 479001600.0));
    for (const double c : {1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0, 1.0 / 40320.0,
                           1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5})
        for (std::size_t j = 0; j < K; ++j) q[j] = xsimd::fma(q[j], r[j], D(c));
    for (std::size_t j = 0; j < K; ++j) {
        const D e = xsimd::fma(q[j] * r[j], r[j], r[j]) + D(1.0);
#if XSIMD_VERSION_MAJOR >= 11
        const D scale = xsimd::bitwise_cast<double>(xsimd::bitwise_cast<std::int64_t>(t[j]) << 52);
#else
        const D scale = xsimd::bitwise_cast<D>(xsimd::bitwise_cast<I>(t[j]) << 52);
#endif
        d[j] = xsimd::select(d[j] >= lo, e * scale, D(0.0));
    }
    static_cast<void>(sizeof(I));
}

/// Compress-store of a (logit, id) pair of batches: writes the lanes of `v` selected by the bit
/// mask `m` (bit i = lane i), in lane order, to logits_out[0..) and the same lanes of `ids` to
/// ids_out[0..); returns how many. May write up to lanes<A> entries past the count (callers leave
/// that room): AVX-512 compresses in registers (vcompressps; not the microcoded memory form) and
/// stores whole vectors; other architectures walk the set bits.
template <class A>
inline std::size_t compress_store(const batch<A>& v, const ibatch<A>& ids, std::uint64_t m,
                                  float* logits_out, std::int32_t* ids_out) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __mmask16 k = __mmask16(m);
        _mm512_storeu_ps(logits_out, _mm512_maskz_compress_ps(k, static_cast<__m512>(v)));
        _mm512_storeu_si512(ids_out, _mm512_maskz_compress_epi32(k, static_cast<__m512i>(ids)));
        return std::size_t(std::popcount(unsigned(k)));
    } else
#endif
    {
        alignas(64) float f[lanes<A>];
        alignas(64) std::int32_t d[lanes<A>];
        v.store_aligned(f);
        ids.store_aligned(d);
        std::size_t n = 0;
        while (m) {
            const int i = std::countr_zero(m);
            m &= m - 1;
            logits_out[n] = f[i];
            ids_out[n] = d[i];
            ++n;
        }
        return n;
    }
}

/// compress_store of three arrays at once: the lanes of `v` and `w` selected by `m` to
/// v_out / w_out and the same lanes of `ids` to ids_out, in lane order; returns how many. May
/// write up to lanes<A> entries past the count of each output.
template <class A>
inline std::size_t compress_store(const batch<A>& v, const batch<A>& w, const ibatch<A>& ids,
                                  std::uint64_t m, float* v_out, float* w_out,
                                  std::int32_t* ids_out) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __mmask16 k = __mmask16(m);
        _mm512_storeu_ps(v_out, _mm512_maskz_compress_ps(k, static_cast<__m512>(v)));
        _mm512_storeu_ps(w_out, _mm512_maskz_compress_ps(k, static_cast<__m512>(w)));
        _mm512_storeu_si512(ids_out, _mm512_maskz_compress_epi32(k, static_cast<__m512i>(ids)));
        return std::size_t(std::popcount(unsigned(k)));
    } else
#endif
    {
        alignas(64) float f[lanes<A>], g[lanes<A>];
        alignas(64) std::int32_t d[lanes<A>];
        v.store_aligned(f);
        w.store_aligned(g);
        ids.store_aligned(d);
        std::size_t n = 0;
        while (m) {
            const int i = std::countr_zero(m);
            m &= m - 1;
            v_out[n] = f[i];
            w_out[n] = g[i];
            ids_out[n] = d[i];
            ++n;
        }
        return n;
    }
}

/// The lane orders of compress_store_permuted's AVX2 path: for each 8-lane mask, the indices of
/// its set lanes in order, then 0s.
struct compress_orders {
    alignas(32) std::int32_t idx[256][8];
};
inline constexpr compress_orders make_compress_orders() noexcept {
    compress_orders t{};
    for (int m = 0; m < 256; ++m) {
        int k = 0;
        for (int j = 0; j < 8; ++j)
            if ((m >> j) & 1) t.idx[m][k++] = j;
        for (; k < 8; ++k) t.idx[m][k] = 0;
    }
    return t;
}
inline constexpr compress_orders compress_order_table = make_compress_orders();

/// compress_store of three arrays (same result and contract: may write up to lanes<A> entries
/// past the count of each output) with no branch on the mask's lanes where the ISA has no
/// compress instruction: on AVX2 one permutation of each vector by the mask's lane order (an
/// 8 KB table), where compress_store's loop over the set lanes mispredicts on masks whose lanes
/// fall at random (typical's split from the row on a Gaussian row at T 1.5: ~15 % of the entries
/// compacted, ~3/4 of the vectors). Elsewhere compress_store.
template <class A>
inline std::size_t compress_store_permuted(const batch<A>& v, const batch<A>& w,
                                           const ibatch<A>& ids, std::uint64_t m, float* v_out,
                                           float* w_out, std::int32_t* ids_out) noexcept {
#if defined(__AVX2__)
    if constexpr (x86_family<A> == 256 && std::is_base_of_v<xsimd::avx2, A>) {
        const __m256i o = _mm256_load_si256(
            reinterpret_cast<const __m256i*>(compress_order_table.idx[std::size_t(m & 0xFF)]));
        _mm256_storeu_ps(v_out, _mm256_permutevar8x32_ps(static_cast<__m256>(v), o));
        _mm256_storeu_ps(w_out, _mm256_permutevar8x32_ps(static_cast<__m256>(w), o));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(ids_out),
                            _mm256_permutevar8x32_epi32(static_cast<__m256i>(ids), o));
        return std::size_t(std::popcount(unsigned(m & 0xFF)));
    } else
#endif
    {
        return compress_store<A>(v, w, ids, m, v_out, w_out, ids_out);
    }
}

/// first_id, first_id + 1, ... in the lanes.
template <class A>
inline ibatch<A> iota(std::int32_t first_id) noexcept {
    alignas(64) static constexpr std::int32_t seq[64] = {
        0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
        22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43,
        44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
    static_assert(lanes<A> <= 64);
    return ibatch<A>::load_aligned(seq) + ibatch<A>(first_id);
}

/// compress_store of `v` with the ids first_id + lane.
template <class A>
inline std::size_t compress_store(const batch<A>& v, std::uint64_t m, std::int32_t first_id,
                                  float* logits_out, std::int32_t* ids_out) noexcept {
    return compress_store<A>(v, iota<A>(first_id), m, logits_out, ids_out);
}

/// compress_store without the values: writes first_id + i for each set bit i of `m`, in order,
/// to ids_out[0..); returns how many. May write up to lanes<A> entries past the count.
template <class A>
inline std::size_t compress_ids(std::uint64_t m, std::int32_t first_id,
                                std::int32_t* ids_out) noexcept {
#if defined(__AVX512F__)
    if constexpr (x86_family<A> == 512) {
        const __mmask16 k = __mmask16(m);
        _mm512_storeu_si512(
            ids_out, _mm512_maskz_compress_epi32(k, static_cast<__m512i>(iota<A>(first_id))));
        return std::size_t(std::popcount(unsigned(k)));
    } else
#endif
    {
        std::size_t n = 0;
        while (m) {
            ids_out[n++] = first_id + std::countr_zero(m);
            m &= m - 1;
        }
        return n;
    }
}

/// Reinterprets float lanes as int32 lanes (and back): xsimd::bitwise_cast, whose template
/// parameter is the whole batch type up to xsimd 10 and the element type from xsimd 11.
template <class A>
inline ibatch<A> as_int(const batch<A>& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::bitwise_cast<std::int32_t>(v);
#else
    return xsimd::bitwise_cast<ibatch<A> >(v);
#endif
}
template <class A>
inline batch<A> as_float(const ibatch<A>& v) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::bitwise_cast<float>(v);
#else
    return xsimd::bitwise_cast<batch<A> >(v);
#endif
}

/// exp_nonpositive's arithmetic without its range handling: meaningful for lanes with d in
/// [-87, 0] only (there it is exp_nonpositive(d), bit for bit); other lanes give garbage, for
/// callers that discard them (a select on a condition that implies d >= -87).
template <class A>
inline batch<A> exp_nonpositive_in_range(const batch<A>& d) noexcept {
    using B = batch<A>;
    const B shifter(12582912.f + 127.f);  // 1.5 * 2^23 + exponent bias
    const B t = xsimd::fma(d, B(1.44269504088896341f), shifter);
    const B k = t - shifter;  // round(d / ln 2), exact
    B r = xsimd::fnma(k, B(0.693359375f), d);
    r = xsimd::fnma(k, B(-2.12194440e-4f), r);
    B q = B(1.9875691500e-4f);
    q = xsimd::fma(q, r, B(1.3981999507e-3f));
    q = xsimd::fma(q, r, B(8.3334519073e-3f));
    q = xsimd::fma(q, r, B(4.1665795894e-2f));
    q = xsimd::fma(q, r, B(1.6666665459e-1f));
    q = xsimd::fma(q, r, B(5.0000001201e-1f));
    const B e = xsimd::fma(q * r, r, r) + B(1.f);
    const B scale = as_float<A>(as_int<A>(t) << 23);  // (k + 127) << 23 = 2^k
    return e * scale;
}

/// exp_nonpositive_in_range of K vectors in place: the same operations lane for lane (so the same
/// bits), written stage by stage across the K vectors so that K independent dependency chains are
/// in flight (GCC does not interleave the one-vector calls of an unrolled loop; the chain of one
/// vector is ~60 cycles long). Summing the exponentials of the Gaussian row at V = 128256 on Zen 3
/// AVX2: one vector at a time 59.2 us, K = 2 54.7, K = 4 46.5 (min of 6 runs).
template <class A, std::size_t K>
inline void exp_nonpositive_in_range_n(batch<A> (&d)[K]) noexcept {
    using B = batch<A>;
    const B shifter(12582912.f + 127.f);  // as exp_nonpositive_in_range
    B t[K], r[K], q[K];
    for (std::size_t j = 0; j < K; ++j) t[j] = xsimd::fma(d[j], B(1.44269504088896341f), shifter);
    for (std::size_t j = 0; j < K; ++j) r[j] = xsimd::fnma(t[j] - shifter, B(0.693359375f), d[j]);
    for (std::size_t j = 0; j < K; ++j)
        r[j] = xsimd::fnma(t[j] - shifter, B(-2.12194440e-4f), r[j]);
    for (std::size_t j = 0; j < K; ++j)
        q[j] = xsimd::fma(B(1.9875691500e-4f), r[j], B(1.3981999507e-3f));
    for (std::size_t j = 0; j < K; ++j) q[j] = xsimd::fma(q[j], r[j], B(8.3334519073e-3f));
    for (std::size_t j = 0; j < K; ++j) q[j] = xsimd::fma(q[j], r[j], B(4.1665795894e-2f));
    for (std::size_t j = 0; j < K; ++j) q[j] = xsimd::fma(q[j], r[j], B(1.6666665459e-1f));
    for (std::size_t j = 0; j < K; ++j) q[j] = xsimd::fma(q[j], r[j], B(5.0000001201e-1f));
    for (std::size_t j = 0; j < K; ++j) q[j] = xsimd::fma(q[j] * r[j], r[j], r[j]) + B(1.f);
    for (std::size_t j = 0; j < K; ++j) d[j] = q[j] * as_float<A>(as_int<A>(t[j]) << 23);
}

/// exp_nonpositive of K vectors in place (exp_nonpositive_in_range_n with the range handling of
/// exp_nonpositive: the same bits as K calls of it).
template <class A, std::size_t K>
inline void exp_nonpositive_n(batch<A> (&d)[K]) noexcept {
    using B = batch<A>;
    const B lo(-87.f);
    B c[K];
    for (std::size_t j = 0; j < K; ++j) {
        c[j] = d[j];
        d[j] = xsimd::max(d[j], lo);
    }
    exp_nonpositive_in_range_n<A, K>(d);
    for (std::size_t j = 0; j < K; ++j) d[j] = xsimd::select(c[j] >= lo, d[j], B(0.f));
}

/// exp(d) for d <= 0 (the max-subtracted logits of a softmax): k = round(d / ln 2) by the
/// shifter trick, Cody-Waite reduction, the Cephes degree-5 polynomial (relative error below
/// 1e-7), 2^k from the exponent bits. Returns 0 for d < -87 (below float's normal range; such
/// entries carry < 1e-37 of the mass) and for NaN lanes (the NaN policy: probability 0), so no
/// special-value pass is needed. Same operations on every architecture (fused multiply-adds
/// where the ISA has FMA, separately rounded otherwise).
template <class A>
inline batch<A> exp_nonpositive(const batch<A>& d) noexcept {
    using B = batch<A>;
    const B lo(-87.f);
    return xsimd::select(d >= lo, exp_nonpositive_in_range<A>(xsimd::max(d, lo)), B(0.f));
}

/// Calls f(A{}) for every architecture in supported_architectures.
template <class F>
inline void for_each_arch(F&& f) {
    supported_architectures::for_each(static_cast<F&&>(f));
}

}  // namespace simd
DECODEKIT_END_NAMESPACE
