#pragma once
/// \file kernels/reduce.hpp
/// max, argmax, sum, logsumexp over a logits row (SIMD, one streaming pass each; logsumexp two).
/// Semantics: kernels/reference.hpp (the scalar reference these equal: max/argmax exactly, sum
/// and logsumexp within 1e-6 relative). No random numbers are consumed.
///
/// Passes over the row: max 1, argmax 1 (+ a rescan of one 512-entry block), sum 1,
/// logsumexp 2 (max; fused exp-and-sum). Rows with NaN, +inf or no valid entry take a simple
/// (slower, exact) path detected from the first pass.
///
/// max, argmax, exp_sum and logsumexp also take a token_bitmask (kernels/mask.hpp): the mask is
/// read inside the same passes (a disallowed entry is -inf there), no separate pass.

#include <decodekit/kernels/mask.hpp>
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

/// Whether the float weight passes may run at inverse temperature inv_t = 1 / T: finite (T not
/// subnormal) and at least 2^-120 (T at most 2^120 ~ 1.3e36). Beyond that, x - m can overflow to
/// -inf in float (a weight of 0) while (x - m) / T is still above -87 (a real weight the error
/// bounds assume is not flushed: logits of opposite signs near FLT_MAX at T 1e38); below it,
/// an overflowed x - m means (x - m) / T < -255. The kernels take the reference's route
/// otherwise (kernels/reference.hpp: double arithmetic).
inline bool float_inv_temperature(float inv_t) noexcept {
    return inv_t >= 0x1p-120f && inv_t <= std::numeric_limits<float>::max();
}

/// exp((x_i - m) * inv_t) summed over the row r[0, n) (4 float accumulators per 1024-entry
/// block, blocks added in double), with simd::exp_nonpositive: NaN and -inf entries give 0,
/// entries more than 87 below the max give 0. Stores the exponentials to out when Store. The
/// tail is padded into one vector so every entry goes through the same polynomial.
/// \pre m finite, inv_t finite and > 0.
template <class A, bool Store, class Row>
double exp_pass(const Row r, std::size_t n, float m, float inv_t, float* out) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t nfull = n / L * L;
    const B mb(m), tb(inv_t);
    auto one = [&](std::size_t i) {
        const B e = simd::exp_nonpositive<A>((r.load(i) - mb) * tb);
        if constexpr (Store) e.store_unaligned(out + i);
        return e;
    };
    double total = 0;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 2 * block_size);
        B s0(0.f), s1(0.f), s2(0.f), s3(0.f);
        // Four vectors' exponentials in flight at once (simd::exp_nonpositive_n: the same bits
        // as one() four times), stored and added in one()'s order: the same sums bit for bit.
        // One at a time left each ~60-cycle chain latency-bound (GCC does not interleave them):
        // at V = 128256 on Zen 3 AVX2 logsumexp 66 -> 54 us, softmax 81 -> 67 us, a temperature
        // sample() with its logprob 69 -> 56 us (min of 8 alternating runs).
        for (; i + 4 * L <= end; i += 4 * L) {
            B e[4];
            for (std::size_t j = 0; j < 4; ++j) e[j] = (r.load(i + j * L) - mb) * tb;
            simd::exp_nonpositive_n<A, 4>(e);
            if constexpr (Store)
                for (std::size_t j = 0; j < 4; ++j) e[j].store_unaligned(out + i + j * L);
            s0 += e[0];
            s1 += e[1];
            s2 += e[2];
            s3 += e[3];
        }
        for (; i < end; i += L) s0 += one(i);
        total += double(simd::reduce_add<A>((s0 + s1) + (s2 + s3)));
    }
    if (i < n) {
        alignas(64) float buf[L];
        for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? r.at(i + j) : neg_inf_f;
        const B e = simd::exp_nonpositive<A>((B::load_aligned(buf) - mb) * tb);
        e.store_aligned(buf);
        for (std::size_t j = 0; i + j < n; ++j) {
            if constexpr (Store) out[i + j] = buf[j];
            total += double(buf[j]);
        }
    }
    return total;
}

/// exp_pass over a whole span (no mask).
template <class A, bool Store>
double exp_pass(std::span<const float> x, float m, float inv_t, float* out) noexcept {
    return exp_pass<A, Store>(plain_row<A>{x.data()}, x.size(), m, inv_t, out);
}

/// max over r[0, n): see kernels::max. A masked row reads the mask only in vectors with an
/// entry above the running max of their accumulator (unmasked compares first).
template <class A, class Row>
float max_of(const Row r, std::size_t n) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    B a0(neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
    std::size_t i = 0;
    for (; i + 4 * L <= n; i += 4 * L) {
        if constexpr (Row::masked) {
            const B v0 = r.raw(i), v1 = r.raw(i + L), v2 = r.raw(i + 2 * L), v3 = r.raw(i + 3 * L);
            if (!simd::any<A>(((v0 > a0) | (v1 > a1)) | ((v2 > a2) | (v3 > a3)))) continue;
        }
        a0 = simd::max_ignore_nan<A>(a0, r.load(i));
        a1 = simd::max_ignore_nan<A>(a1, r.load(i + L));
        a2 = simd::max_ignore_nan<A>(a2, r.load(i + 2 * L));
        a3 = simd::max_ignore_nan<A>(a3, r.load(i + 3 * L));
    }
    for (; i + L <= n; i += L) a0 = simd::max_ignore_nan<A>(a0, r.load(i));
    float m = simd::reduce_max<A>(simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3)));
    for (; i < n; ++i) {
        const float v = r.at(i);
        m = v > m ? v : m;
    }
    return m;
}

/// Entries per block of max_with_block_maxima: 8 vectors.
template <class A>
inline constexpr std::size_t max_block = 8 * simd::lanes<A>;

/// kernels::max(x) (the same value; a -0 max may come out as +0 or the reverse) in the same one
/// pass, which also stores, for each full block of max_block<A> entries (x.size() /
/// max_block<A> blocks), the per-lane maximum of its 8 vectors (NaN ignored; -inf when every
/// entry of the lane is NaN or -inf) to bm[L b, L b + L) (L = simd::lanes<A>): an entry of block
/// b reaches t iff some lane of its vector does. The entries after the last full block are in
/// the max only. \pre bm holds x.size() / max_block<A> * L floats (an eighth of the row)
template <class A>
float max_with_block_maxima(std::span<const float> x, float* bm) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>, K = max_block<A>;
    const float* p = x.data();
    const std::size_t n = x.size(), nb = n / K;
    B g(neg_inf_f);
    for (std::size_t b = 0; b < nb; ++b) {
        const float* q = p + b * K;
        const B a0 = simd::max_ignore_nan<A>(B(neg_inf_f), B::load_unaligned(q));
        const B a1 = simd::max_ignore_nan<A>(B(neg_inf_f), B::load_unaligned(q + L));
        const B a2 = simd::max_ignore_nan<A>(B(neg_inf_f), B::load_unaligned(q + 2 * L));
        const B a3 = simd::max_ignore_nan<A>(B(neg_inf_f), B::load_unaligned(q + 3 * L));
        const B c0 = simd::max_ignore_nan<A>(a0, B::load_unaligned(q + 4 * L));
        const B c1 = simd::max_ignore_nan<A>(a1, B::load_unaligned(q + 5 * L));
        const B c2 = simd::max_ignore_nan<A>(a2, B::load_unaligned(q + 6 * L));
        const B c3 = simd::max_ignore_nan<A>(a3, B::load_unaligned(q + 7 * L));
        const B v = simd::max<A>(simd::max<A>(c0, c1), simd::max<A>(c2, c3));
        v.store_unaligned(bm + b * L);
        g = simd::max<A>(g, v);
    }
    const float m = simd::reduce_max<A>(g), t = max_of<A>(plain_row<A>{p + nb * K}, n - nb * K);
    return t > m ? t : m;
}

/// argmax over r[0, n): see kernels::argmax. A masked row's disallowed entries are never
/// returned, even when every allowed entry is -inf.
template <class A, class Row>
std::size_t argmax_of(const Row r, std::size_t n) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t nfull = n / L * L;
    if (n == 0) return npos;
    B run(neg_inf_f);
    float best = neg_inf_f;
    std::size_t best_block = npos;
    for (std::size_t b0 = 0; b0 < nfull; b0 += block_size) {
        const std::size_t end = std::min(nfull, b0 + block_size);
        // A masked row starts the block's accumulators at the best so far (the block wins only
        // if an entry exceeds it, as before) and reads the mask only in vectors that exceed them.
        B a0 = Row::masked ? run : B(neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
        std::size_t i = b0;
        for (; i + 4 * L <= end; i += 4 * L) {
            if constexpr (Row::masked) {
                const B v0 = r.raw(i), v1 = r.raw(i + L), v2 = r.raw(i + 2 * L),
                        v3 = r.raw(i + 3 * L);
                if (!simd::any<A>(((v0 > a0) | (v1 > a1)) | ((v2 > a2) | (v3 > a3)))) continue;
            }
            a0 = simd::max_ignore_nan<A>(a0, r.load(i));
            a1 = simd::max_ignore_nan<A>(a1, r.load(i + L));
            a2 = simd::max_ignore_nan<A>(a2, r.load(i + 2 * L));
            a3 = simd::max_ignore_nan<A>(a3, r.load(i + 3 * L));
        }
        for (; i < end; i += L) a0 = simd::max_ignore_nan<A>(a0, r.load(i));
        const B bm = simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3));
        if (simd::any<A>(bm > run)) {
            best = simd::reduce_max<A>(bm);
            run = B(best);
            best_block = b0;
        }
    }
    std::size_t best_i = npos;
    if (best_block != npos) {
        const std::size_t end = std::min(nfull, best_block + block_size);
        for (std::size_t i = best_block; i < end; i += L) {
            const std::uint64_t m = simd::to_mask<A>(r.load(i) == run);
            if (m) {
                best_i = i + std::size_t(std::countr_zero(m));
                break;
            }
        }
    }
    for (std::size_t i = nfull; i < n; ++i) {
        const float v = r.at(i);
        if (v > best) {
            best = v;
            best_i = i;
        }
    }
    if (best_i == npos)  // every entry is -inf or NaN: the first -inf (allowed), if any
        for (std::size_t i = 0; i < n; ++i) {
            if constexpr (Row::masked)
                if (!((r.words[i / 32] >> (i % 32)) & 1u)) continue;
            if (!std::isnan(r.p[i])) return i;
        }
    return best_i;
}

}  // namespace detail

/// Largest non-NaN entry; -inf if the span is empty or all NaN. One pass.
template <class A = simd::default_arch>
float max(std::span<const float> x) noexcept {
    return detail::max_of<A>(detail::plain_row<A>{x.data()}, x.size());
}

/// Largest allowed non-NaN entry; -inf if there is none. One pass (mask read inside it).
template <class A = simd::default_arch>
float max(std::span<const float> x, const token_bitmask& mask) noexcept {
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    return detail::max_of<A>(r, n);
}

/// Lowest index of the largest non-NaN entry; npos if empty or all NaN.
/// One blocked pass: per 512-entry block a max over independent accumulators, the winning
/// block remembered (strictly greater than every earlier block), then that block rescanned for
/// its first entry equal to the max.
template <class A = simd::default_arch>
std::size_t argmax(std::span<const float> x) noexcept {
    return detail::argmax_of<A>(detail::plain_row<A>{x.data()}, x.size());
}

/// Lowest index of the largest allowed non-NaN entry (reference::argmax(x, mask)); npos if no
/// allowed entry is non-NaN. A disallowed entry is never returned. Same pass as argmax(x).
template <class A = simd::default_arch>
std::size_t argmax(std::span<const float> x, const token_bitmask& mask) noexcept {
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    return detail::argmax_of<A>(r, n);
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
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
        return reference::exp_sum(x, temperature);
    return {
        m, detail::exp_pass<A, false>(detail::plain_row<A>{x.data()}, x.size(), m, inv_t, nullptr)};
}

/// exp_sum over the allowed entries (reference::exp_sum(x, T, mask)): max is the largest
/// allowed entry; disallowed entries count 0. The same two passes, the mask read inside them.
/// \pre temperature > 0
template <class A = simd::default_arch>
reference::softmax_stats exp_sum(std::span<const float> x, float temperature,
                                 const token_bitmask& mask) noexcept {
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    const float m = detail::max_of<A>(r, n);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
        return reference::exp_sum(x, temperature, mask);
    return {m, detail::exp_pass<A, false>(r, n, m, inv_t, nullptr)};
}

namespace detail {
inline double log_of_stats(const reference::softmax_stats& st, float temperature) noexcept {
    if (st.sum == 0) return -std::numeric_limits<double>::infinity();
    if (std::isinf(st.max)) return std::numeric_limits<double>::infinity();
    return double(st.max) / temperature + std::log(st.sum);
}
}  // namespace detail

/// log sum exp(x_i / T); -inf when no entry has probability, +inf when an entry is +inf.
/// Two passes. \pre temperature > 0
template <class A = simd::default_arch>
double logsumexp(std::span<const float> x, float temperature = 1.f) noexcept {
    return detail::log_of_stats(kernels::exp_sum<A>(x, temperature), temperature);
}

/// logsumexp over the allowed entries; -inf when no allowed entry has probability.
/// \pre temperature > 0
template <class A = simd::default_arch>
double logsumexp(std::span<const float> x, float temperature, const token_bitmask& mask) noexcept {
    return detail::log_of_stats(kernels::exp_sum<A>(x, temperature, mask), temperature);
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
