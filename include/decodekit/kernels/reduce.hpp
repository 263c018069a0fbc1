#pragma once
/// \file kernels/reduce.hpp
/// max, argmax, sum, logsumexp over a logits row (SIMD, one streaming pass each; logsumexp two).
/// Semantics: kernels/reference.hpp (the scalar reference these equal: max/argmax exactly, sum
/// and logsumexp within 1e-6 relative). No random numbers are consumed.
///
/// Passes over the row: max 1, argmax 1 (+ a rescan of one 512-entry block), sum 1,
/// logsumexp 2 (max; fused exp-and-sum). Rows with NaN, +inf or no valid entry take a simple
/// (slower, exact) path detected from the first pass.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
namespace detail {

inline constexpr float neg_inf_f = -std::numeric_limits<float>::infinity();
/// Entries per block of the blocked passes (argmax block, double-accumulation block).
inline constexpr std::size_t block_size = 512;

/// exp((x_i - m) * inv_t) summed over the row (4 float accumulators per 1024-entry block,
/// blocks added in double), with simd::exp_nonpositive: NaN and -inf entries give 0, entries
/// more than 87 below the max give 0. Stores the exponentials to out when Store. The tail is
/// padded into one vector so every entry goes through the same polynomial.
/// \pre m finite, inv_t finite and > 0.
template <class A, bool Store>
double exp_pass(std::span<const float> x, float m, float inv_t, float* out) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    const B mb(m), tb(inv_t);
    auto one = [&](std::size_t i) {
        const B e = simd::exp_nonpositive<A>((B::load_unaligned(p + i) - mb) * tb);
        if constexpr (Store) e.store_unaligned(out + i);
        return e;
    };
    double total = 0;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 2 * block_size);
        B s0(0.f), s1(0.f), s2(0.f), s3(0.f);
        for (; i + 4 * L <= end; i += 4 * L) {
            s0 += one(i);
            s1 += one(i + L);
            s2 += one(i + 2 * L);
            s3 += one(i + 3 * L);
        }
        for (; i < end; i += L) s0 += one(i);
        total += double(simd::reduce_add<A>((s0 + s1) + (s2 + s3)));
    }
    if (i < n) {
        alignas(64) float buf[L];
        for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? p[i + j] : neg_inf_f;
        const B e = simd::exp_nonpositive<A>((B::load_aligned(buf) - mb) * tb);
        e.store_aligned(buf);
        for (std::size_t j = 0; i + j < n; ++j) {
            if constexpr (Store) out[i + j] = buf[j];
            total += double(buf[j]);
        }
    }
    return total;
}

}  // namespace detail

/// Largest non-NaN entry; -inf if the span is empty or all NaN. One pass.
template <class A = simd::default_arch>
float max(std::span<const float> x) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size();
    B a0(detail::neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
    std::size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
        a0 = simd::max_ignore_nan<A>(a0, B::load_unaligned(p + i));
        a1 = simd::max_ignore_nan<A>(a1, B::load_unaligned(p + i + L));
        a2 = simd::max_ignore_nan<A>(a2, B::load_unaligned(p + i + 2 * L));
        a3 = simd::max_ignore_nan<A>(a3, B::load_unaligned(p + i + 3 * L));
    }
    for (; i + L <= n; i += L) a0 = simd::max_ignore_nan<A>(a0, B::load_unaligned(p + i));
    float m = simd::reduce_max<A>(simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3)));
    for (; i < n; ++i) m = p[i] > m ? p[i] : m;
    return m;
}

/// Lowest index of the largest non-NaN entry; npos if empty or all NaN.
/// One blocked pass: per 512-entry block a max over independent accumulators, the winning
/// block remembered (strictly greater than every earlier block), then that block rescanned for
/// its first entry equal to the max.
template <class A = simd::default_arch>
std::size_t argmax(std::span<const float> x) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    if (n == 0) return npos;
    B run(detail::neg_inf_f);
    float best = detail::neg_inf_f;
    std::size_t best_block = npos;
    for (std::size_t b0 = 0; b0 < nfull; b0 += detail::block_size) {
        const std::size_t end = std::min(nfull, b0 + detail::block_size);
        B a0(detail::neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
        std::size_t i = b0;
        for (; i + 4 * L <= end; i += 4 * L) {
            a0 = simd::max_ignore_nan<A>(a0, B::load_unaligned(p + i));
            a1 = simd::max_ignore_nan<A>(a1, B::load_unaligned(p + i + L));
            a2 = simd::max_ignore_nan<A>(a2, B::load_unaligned(p + i + 2 * L));
            a3 = simd::max_ignore_nan<A>(a3, B::load_unaligned(p + i + 3 * L));
        }
        for (; i < end; i += L) a0 = simd::max_ignore_nan<A>(a0, B::load_unaligned(p + i));
        const B bm = simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3));
        if (simd::any<A>(bm > run)) {
            best = simd::reduce_max<A>(bm);
            run = B(best);
            best_block = b0;
        }
    }
    std::size_t best_i = npos;
    if (best_block != npos) {
        const std::size_t end = std::min(nfull, best_block + detail::block_size);
        for (std::size_t i = best_block; i < end; i += L) {
            const std::uint64_t m = simd::to_mask<A>(B::load_unaligned(p + i) == run);
            if (m) {
                best_i = i + std::size_t(std::countr_zero(m));
                break;
            }
        }
    }
    for (std::size_t i = nfull; i < n; ++i)
        if (p[i] > best) {
            best = p[i];
            best_i = i;
        }
    if (best_i == npos)  // every entry is -inf or NaN: the first -inf, if any
        for (std::size_t i = 0; i < n; ++i)
            if (!std::isnan(p[i])) return i;
    return best_i;
}

/// Sum of the entries (float lanes over 1024-entry blocks, blocks summed in double). One pass.
template <class A = simd::default_arch>
double sum(std::span<const float> x) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    double total = 0;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 2 * detail::block_size);
        B s0(0.f), s1(0.f), s2(0.f), s3(0.f);
        for (; i + 4 * L <= end; i += 4 * L) {
            s0 += B::load_unaligned(p + i);
            s1 += B::load_unaligned(p + i + L);
            s2 += B::load_unaligned(p + i + 2 * L);
            s3 += B::load_unaligned(p + i + 3 * L);
        }
        for (; i < end; i += L) s0 += B::load_unaligned(p + i);
        total += double(simd::reduce_add<A>((s0 + s1) + (s2 + s3)));
    }
    for (; i < n; ++i) total += double(p[i]);
    return total;
}

/// Max and normaliser sum exp((x_i - max)/T) (see reference::exp_sum). Two passes: max, then
/// one fused exp-and-sum pass (NaN entries count 0 there).
/// \pre temperature > 0
template <class A = simd::default_arch>
reference::softmax_stats exp_sum(std::span<const float> x, float temperature = 1.f) noexcept {
    const float m = kernels::max<A>(x);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !std::isfinite(inv_t)) return reference::exp_sum(x, temperature);
    return {m, detail::exp_pass<A, false>(x, m, inv_t, nullptr)};
}

/// log sum exp(x_i / T); -inf when no entry has probability, +inf when an entry is +inf.
/// Two passes. \pre temperature > 0
template <class A = simd::default_arch>
double logsumexp(std::span<const float> x, float temperature = 1.f) noexcept {
    const reference::softmax_stats st = kernels::exp_sum<A>(x, temperature);
    if (st.sum == 0) return -std::numeric_limits<double>::infinity();
    if (std::isinf(st.max)) return std::numeric_limits<double>::infinity();
    return double(st.max) / temperature + std::log(st.sum);
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
