#pragma once
/// \file kernels/select.hpp
/// top-k selection without sorting the vocabulary; threshold filters (min-p).
/// Semantics: kernels/reference.hpp (equal exactly: same ids, same logits, same order).
/// No random numbers are consumed.
///
/// top_k: one pass. A conservative starting threshold from 512 or 1024 samples of the row, then one
/// compare-and-compact pass (AVX-512: register vcompressps + whole-vector stores; other ISAs:
/// movemask and a walk over the set bits) into the `out` storage, which works as a reservoir:
/// whenever it holds more than max(4k, k + 256) survivors, the k-th best is found with
/// nth_element over those few and the threshold rises to it. If the sampled threshold was too
/// high (fewer than k survive) the pass is repeated without it (rare). Finally the c <= 4k
/// survivors are ordered by 64-bit keys (float image << 32 | id): for k > 16 a counting sort into
/// ~2c buckets of the float image that keeps only the buckets up to the k-th key, then an
/// insertion sort of the nearly sorted rest (O(c) for rows whose survivors spread over the
/// buckets; std::sort beyond 8 moves per key); for k <= 16 nth_element + std::sort. Cost is one
/// read of the row plus O(c).
/// filter_at_least: one compare-and-compact pass, output in id order.
///
/// Scratch: sorting needs 16 bytes per survivor (8 when 2c > capacity, then nth_element + sort);
/// it is the output candidates' key storage
/// (candidates::key_storage(), capacity() keys, sized at construction): no allocation.

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
namespace detail {

inline constexpr float lowest_f = std::numeric_limits<float>::lowest();

/// Sort key: larger key = larger logit, then smaller id (reference::before order). -0 == +0.
inline std::uint64_t rank_key(float logit, token_id id) noexcept {
    std::uint32_t u = std::bit_cast<std::uint32_t>(logit);
    if (u == 0x80000000u) u = 0;
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (std::uint64_t(u) << 32) | std::uint64_t(~std::uint32_t(id));
}
inline token_id key_id(std::uint64_t key) noexcept { return token_id(~std::uint32_t(key)); }

/// Compare-and-compact of x[begin, end) (whole batches only): appends every entry with
/// x_i >= t (or > t when strict) to ids/logits at index c; returns the new count.
/// \pre room for (end - begin) + lanes entries after c.
template <class A>
std::size_t compact_batches(const float* p, std::size_t begin, std::size_t end, float t,
                            bool strict, std::size_t c, token_id* ids, float* lg) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B tb(t);
    auto pass = [&](const B& v) { return strict ? (v > tb) : (v >= tb); };
    std::size_t i = begin;
    for (; i + 4 * L <= end; i += 4 * L) {
        const B v0 = B::load_unaligned(p + i), v1 = B::load_unaligned(p + i + L);
        const B v2 = B::load_unaligned(p + i + 2 * L), v3 = B::load_unaligned(p + i + 3 * L);
        const auto m0 = pass(v0), m1 = pass(v1), m2 = pass(v2), m3 = pass(v3);
        if (!simd::any<A>((m0 | m1) | (m2 | m3))) continue;
        if (const std::uint64_t m = simd::to_mask<A>(m0))
            c += simd::compress_store<A>(v0, m, token_id(i), lg + c, ids + c);
        if (const std::uint64_t m = simd::to_mask<A>(m1))
            c += simd::compress_store<A>(v1, m, token_id(i + L), lg + c, ids + c);
        if (const std::uint64_t m = simd::to_mask<A>(m2))
            c += simd::compress_store<A>(v2, m, token_id(i + 2 * L), lg + c, ids + c);
        if (const std::uint64_t m = simd::to_mask<A>(m3))
            c += simd::compress_store<A>(v3, m, token_id(i + 3 * L), lg + c, ids + c);
    }
    for (; i < end; i += L) {
        const B v = B::load_unaligned(p + i);
        if (const std::uint64_t m = simd::to_mask<A>(pass(v)))
            c += simd::compress_store<A>(v, m, token_id(i), lg + c, ids + c);
    }
    return c;
}

/// Threshold from S samples (one at a hashed offset in each of S equal strides; S = 1024 for
/// k >= 256, else 512: survivors cost more than samples only when k is large): the r-th largest,
/// r = mu + 3 sqrt(mu) + 2 where mu = S k / n is the expected number of samples among the k best,
/// so that fewer than k entries reach it only rarely (the caller then repeats the pass without
/// it). The lowest finite float when the row is small or k large.
inline float sampled_threshold(std::span<const float> x, std::size_t k) noexcept {
    const std::size_t S = k >= 256 ? 1024 : 512;
    const std::size_t n = x.size();
    if (n < 8 * S || k * 16 > n) return lowest_f;
    const double mu = double(k) * double(S) / double(n);  // <= 64
    const std::size_t r = std::size_t(mu + 3 * std::sqrt(mu)) + 2;
    float best[96];  // the r largest samples so far, descending
    std::size_t nb = 0;
    const std::uint64_t stride = n / S;
    for (std::size_t j = 0; j < S; ++j) {
        const std::uint64_t h = std::uint32_t(std::uint32_t(j + 1) * 2654435761u);
        const float v = x[j * stride + ((h * stride) >> 32)];
        if (!(v > lowest_f)) continue;  // NaN and -inf
        if (nb == r && !(v > best[r - 1])) continue;
        std::size_t q = nb < r ? nb++ : r - 1;
        for (; q > 0 && best[q - 1] < v; --q) best[q] = best[q - 1];
        best[q] = v;
    }
    return nb == r ? best[r - 1] : lowest_f;
}

/// Sorts the m smallest of c keys (ascending): counting sort into at most 4096 buckets of the high
/// 32 bits (the buckets past the one holding the m-th key are dropped), then an insertion sort of
/// the kept keys, which are nearly sorted (std::sort if that takes more than 8 moves per key).
/// Writes tmp[0, kept) and returns kept >= m: every key whose high half equals the m-th key's is
/// kept. \pre 0 < m <= c, tmp has room for c keys, keys and tmp do not overlap.
inline std::size_t sort_smallest(const std::uint64_t* keys, std::size_t c, std::size_t m,
                                 std::uint64_t* tmp) noexcept {
    std::uint32_t lo = ~0u, hi = 0;
    for (std::size_t j = 0; j < c; ++j) {
        const std::uint32_t u = std::uint32_t(keys[j] >> 32);
        lo = u < lo ? u : lo;
        hi = u > hi ? u : hi;
    }
    constexpr int max_bits = 12;
    const int b = std::clamp(int(std::bit_width(c)) + 1, 4, max_bits);
    const int s = std::max(0, int(std::bit_width(hi - lo)) - b);  // bucket = (u - lo) >> s < 2^b
    const std::size_t nbk = std::size_t(1) << b;
    std::uint32_t cnt[(std::size_t(1) << max_bits) + 16];
    std::memset(cnt, 0, nbk * sizeof(std::uint32_t));
    const std::uint64_t base = std::uint64_t(lo) << 32;
    const int shift = 32 + s;
    for (std::size_t j = 0; j < c; ++j) ++cnt[(keys[j] - base) >> shift];
    std::size_t kept = 0, last = 0;  // exclusive offsets up to the bucket holding the m-th key
    for (;; ++last) {
        const std::size_t nq = cnt[last];
        cnt[last] = std::uint32_t(kept);
        kept += nq;
        if (kept >= m) break;
    }
    // Dropped keys all go to slot `kept` (< c) through 16 rotating counters that never advance,
    // so no store-to-load chain forms on one counter; no branch on keep.
    std::uint32_t* drop = cnt + last + 1;
    for (int q = 0; q < 16; ++q) drop[q] = std::uint32_t(kept);
    for (std::size_t j = 0; j < c; ++j) {
        const std::uint64_t key = keys[j];
        const std::size_t d = std::size_t((key - base) >> shift);
        const bool keep = d <= last;
        std::uint32_t* ctr = keep ? cnt + d : drop + (j & 15);
        const std::uint32_t pos = *ctr;
        tmp[pos] = key;
        *ctr = pos + std::uint32_t(keep);
    }
    std::size_t moves = 0, i = 1;
    for (; i < kept; ++i) {
        const std::uint64_t v = tmp[i];
        std::size_t j = i;
        for (; j > 0 && tmp[j - 1] > v; --j) tmp[j] = tmp[j - 1];
        tmp[j] = v;
        moves += i - j;
        if (moves > 8 * kept) break;
    }
    if (i < kept) std::sort(tmp, tmp + kept);
    return kept;
}

/// Writes the top m of c survivor keys (and, with keep_ties, every further survivor tied with
/// the m-th) to out in rank order, logits taken from x; returns the count. \pre keys has room
/// for 2 c keys when 2 c <= room (the bucket sort's scratch), else c.
inline std::size_t emit_sorted(std::span<const float> x, std::uint64_t* keys, std::size_t c,
                               std::size_t m, tie_policy ties, candidates& out,
                               std::size_t room) noexcept {
    m = std::min(m, c);
    if (m == 0) {
        out.resize(0);
        return 0;
    }
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    if (2 * c <= room && m > 16) {
        // Ascending keys ~rank_key = (descending image << 32) | id: sort the m smallest.
        for (std::size_t j = 0; j < c; ++j) keys[j] = ~keys[j];
        std::uint64_t* sorted = keys + c;
        const std::size_t kept = sort_smallest(keys, c, m, sorted);
        std::size_t total = m;
        if (ties == tie_policy::keep_ties)
            while (total < kept && (sorted[total] >> 32) == (sorted[m - 1] >> 32)) ++total;
        for (std::size_t j = 0; j < total; ++j) {
            ids[j] = token_id(std::uint32_t(sorted[j]));
            lg[j] = x[std::size_t(ids[j])];
        }
        out.resize(total);
        return total;
    }
    if (m < c) std::nth_element(keys, keys + (m - 1), keys + c, std::greater<std::uint64_t>());
    std::sort(keys, keys + m, std::greater<std::uint64_t>());
    std::size_t total = m;
    if (ties == tie_policy::keep_ties) {
        const float vk = x[std::size_t(key_id(keys[m - 1]))];
        std::uint64_t* mid = std::partition(keys + m, keys + c, [&](std::uint64_t key) {
            return x[std::size_t(key_id(key))] == vk;
        });
        std::sort(keys + m, mid, std::greater<std::uint64_t>());
        total = std::size_t(mid - keys);
    }
    for (std::size_t j = 0; j < total; ++j) {
        ids[j] = key_id(keys[j]);
        lg[j] = x[std::size_t(ids[j])];
    }
    out.resize(total);
    return total;
}

}  // namespace detail

/// Top-k: the k largest valid entries sorted by logit descending, ties by ascending id;
/// exactly_k keeps min(k, #valid), keep_ties also every entry equal to the k-th. k == 0 gives
/// an empty set. One pass over the row (see the file comment). \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t top_k(std::span<const float> x, std::size_t k, tie_policy ties,
                  candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(), "top_k: out.capacity() must be >= x.size()");
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t n = x.size(), nfull = n / L * L;
    out.clear();
    if (k == 0 || n == 0) return 0;
    k = std::min(k, n);
    const float* p = x.data();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t cap = std::min(n, std::max(4 * k, k + 256));
    const std::size_t chunk = 64 * L;  // entries between reservoir checks
    float t0 = detail::sampled_threshold(x, k);
    for (;;) {
        float t = t0;
        bool strict = false;
        std::size_t c = 0;
        auto shrink = [&] {
            // c > cap: keep the k best (exactly_k, then only strictly better may enter) or
            // every entry >= the k-th value (keep_ties).
            std::uint64_t* keys = out.key_storage();
            for (std::size_t j = 0; j < c; ++j) keys[j] = detail::rank_key(lg[j], ids[j]);
            std::nth_element(keys, keys + (k - 1), keys + c, std::greater<std::uint64_t>());
            const std::uint64_t kk = keys[k - 1];
            const float vk = p[std::size_t(detail::key_id(kk))];
            std::size_t w = 0;
            for (std::size_t j = 0; j < c; ++j) {
                const bool keep = ties == tie_policy::exactly_k
                                      ? detail::rank_key(lg[j], ids[j]) >= kk
                                      : lg[j] >= vk;
                if (keep) {
                    ids[w] = ids[j];
                    lg[w] = lg[j];
                    ++w;
                }
            }
            c = w;
            t = vk;
            strict = ties == tie_policy::exactly_k;
            if (c * 2 > cap) cap = std::min(n, 2 * c + 256);  // many ties: let it grow
        };
        for (std::size_t i = 0; i < nfull; i += chunk) {
            c = detail::compact_batches<A>(p, i, std::min(nfull, i + chunk), t, strict, c, ids, lg);
            if (c > cap) shrink();
        }
        for (std::size_t i = nfull; i < n; ++i)
            if (strict ? p[i] > t : p[i] >= t) {
                ids[c] = token_id(i);
                lg[c] = p[i];
                ++c;
            }
        if (c < k && t0 > detail::lowest_f) {
            t0 = detail::lowest_f;  // the sampled threshold was too high: once more without it
            continue;
        }
        std::uint64_t* keys = out.key_storage();
        for (std::size_t j = 0; j < c; ++j) keys[j] = detail::rank_key(lg[j], ids[j]);
        return detail::emit_sorted(x, keys, c, k, ties, out, out.capacity());
    }
}

/// Every valid entry with x_i >= threshold, in id order. One compare-and-compact pass.
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t filter_at_least(std::span<const float> x, float threshold, candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "filter_at_least: out.capacity() must be >= x.size()");
    constexpr std::size_t L = simd::lanes<A>;
    out.clear();
    if (std::isnan(threshold)) return 0;
    const float t = std::max(threshold, detail::lowest_f);  // never -inf entries
    const std::size_t n = x.size(), nfull = n / L * L;
    const float* p = x.data();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t c = detail::compact_batches<A>(p, 0, nfull, t, false, 0, ids, lg);
    for (std::size_t i = nfull; i < n; ++i)
        if (p[i] >= t) {
            ids[c] = token_id(i);
            lg[c] = p[i];
            ++c;
        }
    out.resize(c);
    return c;
}

using reference::min_p_threshold;

/// Min-p in one pass: every valid entry with x_i >= min_p_threshold(max(x), p_base, T), in id
/// order (equals reference::filter_min_p). The max is found in the same pass: entries are
/// compacted against the threshold of the running max (a lower bound, started from 256 strided
/// samples), and the few survivors are filtered again with the final threshold.
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t filter_min_p(std::span<const float> x, float p_base, float temperature,
                         candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "filter_min_p: out.capacity() must be >= x.size()");
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    out.clear();
    const std::size_t n = x.size(), nfull = n / L * L;
    if (n == 0) return 0;
    if (p_base <= 0) return kernels::filter_at_least<A>(x, detail::neg_inf_f, out);
    const double shift = double(temperature) * std::log(double(p_base));
    if (std::isnan(shift)) return 0;
    const float* p = x.data();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    auto threshold = [&](float m) {
        return std::max(float(double(m) + shift), detail::lowest_f);  // never -inf entries
    };
    float m = detail::neg_inf_f;
    for (std::size_t j = 0, stride = std::max<std::size_t>(1, n / 256); j < n; j += stride)
        m = p[j] > m ? p[j] : m;
    std::size_t c = 0;
    const std::size_t chunk = 64 * L;
    for (std::size_t i0 = 0; i0 < nfull; i0 += chunk) {
        const std::size_t end = std::min(nfull, i0 + chunk);
        const B tb(threshold(m));
        B a0(m), a1(m);
        std::size_t i = i0;
        auto one = [&](std::size_t j, B& acc) {
            const B v = B::load_unaligned(p + j);
            acc = simd::max_ignore_nan<A>(acc, v);
            return v;
        };
        for (; i + 2 * L <= end; i += 2 * L) {
            const B v0 = one(i, a0), v1 = one(i + L, a1);
            const auto m0 = v0 >= tb, m1 = v1 >= tb;
            if (!simd::any<A>(m0 | m1)) continue;
            if (const std::uint64_t k = simd::to_mask<A>(m0))
                c += simd::compress_store<A>(v0, k, token_id(i), lg + c, ids + c);
            if (const std::uint64_t k = simd::to_mask<A>(m1))
                c += simd::compress_store<A>(v1, k, token_id(i + L), lg + c, ids + c);
        }
        for (; i < end; i += L) {
            const B v = one(i, a0);
            if (const std::uint64_t k = simd::to_mask<A>(v >= tb))
                c += simd::compress_store<A>(v, k, token_id(i), lg + c, ids + c);
        }
        m = simd::reduce_max<A>(simd::max<A>(a0, a1));
    }
    for (std::size_t i = nfull; i < n; ++i) {
        m = p[i] > m ? p[i] : m;
        if (p[i] >= threshold(m)) {
            ids[c] = token_id(i);
            lg[c] = p[i];
            ++c;
        }
    }
    const float t = threshold(m);
    std::size_t w = 0;
    for (std::size_t j = 0; j < c; ++j)
        if (lg[j] >= t) {
            ids[w] = ids[j];
            lg[w] = lg[j];
            ++w;
        }
    out.resize(w);
    return w;
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
