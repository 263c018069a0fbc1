#pragma once
/// \file kernels/select.hpp
/// top-k selection without sorting the vocabulary; threshold filters (min-p).
/// Semantics: kernels/reference.hpp (equal exactly: same ids, same logits, same order).
/// No random numbers are consumed.
///
/// top_k_unordered: the selection, flat in k.
///  1. A conservative threshold from 512 samples of the row (the r-th largest sample, r above
///     the samples' expected share of the k best by three standard deviations).
///  2. Refined on the subrow (one vector at a hashed position in each block of 16, so 1/16 of
///     the row) by the same rule with mu = k/16: about 1.6 k survivors instead of the samples'
///     ~3 k for k = 1024 at V = 128256.
///  3. One compare-and-compact pass of the ids (AVX-512: register vpcompressd + whole-vector
///     stores; other ISAs: movemask and a walk over the set bits) into the `out` storage, which
///     works as a reservoir: whenever it holds more than max(4k, k + 256) survivors, it is cut to
///     the k best and the threshold rises to the k-th.
///  4. The exact k-th value of the survivors (kth_largest: a search on the float's integer image,
///     each step one SIMD count), then one SIMD filter pass.
/// Survivors stay in id order throughout. If fewer than k entries reach the starting threshold,
/// the pass is repeated from the next safer one: the sampled threshold, then none (rare; a test
/// forces each). Cost: one read of the row, 1/16 of it again, plus O(survivors).
/// top_k: the same set, then ordered (logit descending, id ascending) by 64-bit keys
/// (float image << 32 | id): a counting sort into ~2c buckets of the float image, then an
/// insertion sort of the nearly sorted rest (std::sort beyond 8 moves per key, and for c <= 16).
/// The sort is O(k) extra work on top of the selection.
/// filter_at_least: one compare-and-compact pass, output in id order.
/// logsumexp_top_k: logsumexp and top_k together in two passes (the max pass keeps group maxima
/// that bound the k-th value; only the groups reaching it are compacted).
/// Every kernel here also takes a token_bitmask (kernels/mask.hpp) and equals itself on the
/// masked copy of the row: the mask is read inside the same passes (the samples, the subrow, the
/// compact pass), a disallowed entry is -inf there; no separate pass over the row. A sparse mask
/// (at most 1/16 of the tokens allowed, as a grammar state usually is) is walked instead: the
/// allowed entries are gathered by their set bits and selected among (no read of the row).
///
/// Scratch: the output candidates' storage and key storage (candidates::key_storage(),
/// capacity() keys, sized at construction): no allocation.

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

/// The j-th of the S spread positions the sampled estimates read in a row of n entries (stride =
/// n / S): one per stride, at a hashed offset within it (Knuth's multiplicative hash of j + 1).
/// Every sampled estimate (top-k's threshold, top-p's and typical's brackets, typical's heavy
/// plan) reads these same positions.
inline constexpr std::size_t sample_position(std::size_t j, std::uint64_t stride) noexcept {
    const std::uint64_t h = std::uint32_t(std::uint32_t(j + 1) * 2654435761u);
    return std::size_t(j * stride + ((h * stride) >> 32));
}

inline constexpr float lowest_f = std::numeric_limits<float>::lowest();

/// Sort key: larger key = larger logit, then smaller id (reference::before order). -0 == +0.
inline std::uint64_t rank_key(float logit, token_id id) noexcept {
    std::uint32_t u = std::bit_cast<std::uint32_t>(logit);
    if (u == 0x80000000u) u = 0;
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return (std::uint64_t(u) << 32) | std::uint64_t(~std::uint32_t(id));
}
inline token_id key_id(std::uint64_t key) noexcept { return token_id(~std::uint32_t(key)); }

/// Compare-and-compact of r[begin, end) (whole batches only; r a row-load policy of
/// kernels/mask.hpp): appends every entry with x_i >= t (or > t when strict) to ids/logits at
/// index c; returns the new count. With Logits = false only the ids are written (lg unused): one
/// vpcompressd per vector instead of two compresses on AVX-512.
/// Masked rows: the compares are unmasked (a disallowed entry is then cleared from the 4L hits of
/// a group by r.group_bits(), read only for a group with a hit); the few allowed hits of a group
/// (at most 4, as in a selection pass) are written one by one from their bits, more of them by
/// the per-vector compress. Both avoid a branch per vector on mask bits, which mispredicts for a
/// half-allowed row: twice as many groups hit as survive, and each hit cost about two mispredicts.
/// \pre room for (end - begin) + lanes entries after c; begin a multiple of the lanes;
/// t >= the lowest finite float (never NaN).
template <class A, bool Logits = true, class Row>
std::size_t compact_row(const Row r, std::size_t begin, std::size_t end, float t, bool strict,
                        std::size_t c, token_id* ids, float* lg) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B tb(t);
    auto pass = [&](const B& v) { return strict ? (v > tb) : (v >= tb); };
    auto emit = [&](const B& v, std::uint64_t m, std::size_t i) {
        if constexpr (Logits)
            c += simd::compress_store<A>(v, m, token_id(i), lg + c, ids + c);
        else
            c += simd::compress_ids<A>(m, token_id(i), ids + c);
    };
    std::size_t i = begin;
    if constexpr (Row::masked) {
        // Groups of 4 vectors start at multiples of 4L (group_bits' precondition).
        for (; i % (4 * L) != 0 && i + L <= end; i += L) {
            const B v = r.raw(i);
            if (const std::uint64_t m = simd::to_mask<A>(pass(v)) & r.bits(i)) emit(v, m, i);
        }
    }
    for (; i + 4 * L <= end; i += 4 * L) {
        // Unmasked compares; a mask clears its disallowed survivors (t >= the lowest finite
        // float, so a masked entry, -inf, never passes).
        const B v0 = r.raw(i), v1 = r.raw(i + L);
        const B v2 = r.raw(i + 2 * L), v3 = r.raw(i + 3 * L);
        const auto m0 = pass(v0), m1 = pass(v1), m2 = pass(v2), m3 = pass(v3);
        if (!simd::any<A>((m0 | m1) | (m2 | m3))) continue;
        if constexpr (Row::masked) {
            constexpr std::uint64_t lane_all = L >= 64 ? ~0ull : (std::uint64_t(1) << L) - 1;
            std::uint64_t h =
                (simd::to_mask<A>(m0) | (simd::to_mask<A>(m1) << L) |
                 (simd::to_mask<A>(m2) << (2 * L)) | (simd::to_mask<A>(m3) << (3 * L))) &
                r.group_bits(i);
            if (std::popcount(h) <= 4) {
                for (; h != 0; h &= h - 1) {
                    const std::size_t j = i + std::size_t(std::countr_zero(h));
                    ids[c] = token_id(j);
                    if constexpr (Logits) lg[c] = r.p[j];
                    ++c;
                }
                continue;
            }
            if (const std::uint64_t m = h & lane_all) emit(v0, m, i);
            if (const std::uint64_t m = (h >> L) & lane_all) emit(v1, m, i + L);
            if (const std::uint64_t m = (h >> (2 * L)) & lane_all) emit(v2, m, i + 2 * L);
            if (const std::uint64_t m = (h >> (3 * L)) & lane_all) emit(v3, m, i + 3 * L);
        } else {
            if (const std::uint64_t m = simd::to_mask<A>(m0)) emit(v0, m, i);
            if (const std::uint64_t m = simd::to_mask<A>(m1)) emit(v1, m, i + L);
            if (const std::uint64_t m = simd::to_mask<A>(m2)) emit(v2, m, i + 2 * L);
            if (const std::uint64_t m = simd::to_mask<A>(m3)) emit(v3, m, i + 3 * L);
        }
    }
    for (; i < end; i += L) {
        const B v = r.raw(i);
        if (const std::uint64_t m = simd::to_mask<A>(pass(v)) & r.bits(i)) emit(v, m, i);
    }
    return c;
}

/// compact_row over a plain row.
template <class A, bool Logits = true>
std::size_t compact_batches(const float* p, std::size_t begin, std::size_t end, float t,
                            bool strict, std::size_t c, token_id* ids, float* lg) noexcept {
    return compact_row<A, Logits>(plain_row<A>{p}, begin, end, t, strict, c, ids, lg);
}

/// Order-preserving integer image of a non-NaN float (-0 has +0's image), and its inverse.
inline std::int32_t ordered_image(float v) noexcept {
    const auto b = std::bit_cast<std::int32_t>(v);
    return b == std::numeric_limits<std::int32_t>::min() ? 0 : b < 0 ? b ^ 0x7FFFFFFF : b;
}
inline float from_ordered_image(std::int32_t i) noexcept {
    return std::bit_cast<float>(i < 0 ? i ^ 0x7FFFFFFF : i);
}
/// The first ordered image in [a, z) whose float satisfies pred, for a pred false then true over
/// the images (a binary search); z when none does.
template <class Pred>
std::int64_t first_image_where(std::int64_t a, std::int64_t z, Pred&& pred) noexcept {
    while (a < z) {
        const std::int64_t mid = a + (z - a) / 2;
        if (pred(from_ordered_image(std::int32_t(mid))))
            z = mid;
        else
            a = mid + 1;
    }
    return a;
}

/// How many of v[0, c) are >= t. SIMD compare and popcount.
template <class A>
std::size_t count_reaching(const float* v, std::size_t c, float t) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B tb(t);
    auto ones = [&](std::size_t j) {
        return std::popcount(simd::to_mask<A>(B::load_unaligned(v + j) >= tb));
    };
    std::size_t n = 0, j = 0;
    for (; j + 2 * L <= c; j += 2 * L) n += std::size_t(ones(j) + ones(j + L));
    for (; j < c; ++j) n += v[j] >= t;
    return n;
}

/// The k-th largest of v[0, c) (1 <= k <= c, no NaN), found on ordered_image between the
/// smallest and the largest value: each step counts the entries reaching a trial value (one
/// count_reaching) and keeps the half that holds the k-th. Trial values are interpolated from the
/// counts at both ends, with a bisection after any step that did not halve the interval (at most
/// ~66 steps; 2 to 17 on the benchmark rows); it stops as soon as a step counts exactly k (the
/// k-th is then the smallest value reaching the step). Also gives ge = #entries >= the k-th and
/// gt = #entries > it (gt < k <= ge).
template <class A>
float kth_largest(const float* v, std::size_t c, std::size_t k, std::size_t& ge,
                  std::size_t& gt) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    constexpr float inf = std::numeric_limits<float>::infinity();
    // The smallest value >= t (c entries reach t = -inf).
    auto min_reaching = [&](float t) {
        const B tb(t);
        B m(inf);
        std::size_t j = 0;
        for (; j + L <= c; j += L) {
            const B x = B::load_unaligned(v + j);
            m = simd::min<A>(m, simd::select<A>(x >= tb, x, B(inf)));
        }
        float r = simd::reduce_min<A>(m);
        for (; j < c; ++j) r = v[j] >= t && v[j] < r ? v[j] : r;
        return r;
    };
    B bmn(v[0]), bmx(v[0]);  // the smallest and the largest value, one pass
    std::size_t j = 0;
    for (; j + L <= c; j += L) {
        const B x = B::load_unaligned(v + j);
        bmn = simd::min<A>(bmn, x);
        bmx = simd::max<A>(bmx, x);
    }
    float mn = simd::reduce_min<A>(bmn), mx = simd::reduce_max<A>(bmx);
    for (; j < c; ++j) {
        mn = v[j] < mn ? v[j] : mn;
        mx = v[j] > mx ? v[j] : mx;
    }
    // Invariant: nlo = count(>= lo) >= k > nhi = count(>= hi).
    std::int64_t lo = ordered_image(mn), hi = std::int64_t(ordered_image(mx)) + 1;
    std::size_t nlo = c, nhi = 0;
    bool bisect = false;
    while (hi - lo > 1 && nlo > k) {
        const std::int64_t width = hi - lo;
        std::int64_t mid = lo + width / 2;
        if (!bisect) {
            const double f = (double(nlo - k) + 0.5) / double(nlo - nhi);
            mid = std::clamp(lo + std::int64_t(f * double(width)), lo + 1, hi - 1);
        }
        const float t = from_ordered_image(std::int32_t(mid));
        const std::size_t n = count_reaching<A>(v, c, t);
        if (n == k) {
            ge = k;
            gt = k - 1;  // (only gt < k matters to callers when ge == k)
            return min_reaching(t);
        }
        if (n > k) {
            lo = mid;
            nlo = n;
        } else {
            hi = mid;
            nhi = n;
        }
        bisect = !bisect && 2 * (hi - lo) > width;
    }
    ge = nlo;
    if (nlo == k) {
        gt = k - 1;
        return min_reaching(from_ordered_image(std::int32_t(lo)));
    }
    gt = nhi;  // hi == lo + 1: count(>= hi) = count(> the k-th)
    return from_ordered_image(std::int32_t(lo));
}

/// Threshold from S = 512 samples (one at a hashed offset in each of S equal strides): the r-th
/// largest, r = mu + 3 sqrt(mu) + 2 where mu = S k / n is the expected number of samples among
/// the k best, so that fewer than k entries reach it only rarely. The valid samples (neither NaN
/// nor -inf, nor disallowed under a mask) are copied without a branch to scratch[0, 512) and
/// ranked by kth_largest. The lowest finite float when the row is small (n < 4096), k large
/// (k > n / 16), or fewer than r samples are valid.
template <class A, class Row>
float sampled_threshold_of(const Row x, std::size_t n, std::size_t k, float* scratch) noexcept {
    constexpr std::size_t S = 512;
    if (n < 8 * S || k * 16 > n) return lowest_f;
    const double mu = double(k) * double(S) / double(n);  // <= 32
    const std::size_t r = std::size_t(mu + 3 * std::sqrt(mu)) + 2;
    float* s = scratch;
    const std::uint64_t stride = n / S;
    // Only the valid samples are kept: the r-th largest is the same, and kth_largest's search
    // range is not stretched down to -inf (a masked row's disallowed samples: half of them
    // under a 50 % mask, each step of the search then a bisection).
    std::size_t c = 0;
    for (std::size_t j = 0; j < S; ++j) {
        const float v = x.at(sample_position(j, stride));
        s[c] = v;
        c += v >= lowest_f;  // NaN and -inf dropped
    }
    if (c < r) return lowest_f;
    std::size_t ge = 0, gt = 0;
    const float t = kth_largest<A>(s, c, r, ge, gt);
    return t > lowest_f ? t : lowest_f;
}

/// sampled_threshold_of over a plain row.
template <class A>
float sampled_threshold(std::span<const float> x, std::size_t k, float* scratch) noexcept {
    return sampled_threshold_of<A>(plain_row<A>{x.data()}, x.size(), k, scratch);
}

/// Cuts the c survivors ids[0, c) (id order, logits in lg) to the k best of them, in id order:
/// exactly_k keeps those above the k-th value and, of those equal to it, the lowest ids;
/// keep_ties keeps every one reaching it. Returns the new count; kth receives the k-th value.
/// \pre 1 <= k <= c
template <class A>
std::size_t keep_k_best(token_id* ids, float* lg, std::size_t c, std::size_t k, tie_policy ties,
                        float& kth) noexcept {
    std::size_t ge = 0, gt = 0;
    const float vk = kth_largest<A>(lg, c, k, ge, gt);
    kth = vk;
    std::size_t w = 0;
    if (ties == tie_policy::keep_ties || ge == k) {
        // In place: the whole-vector stores at w <= j reach no entry not yet loaded.
        using B = simd::batch<A>;
        constexpr std::size_t L = simd::lanes<A>;
        const B tb(vk);
        std::size_t j = 0;
        for (; j + L <= c; j += L) {
            const B v = B::load_unaligned(lg + j);
            if (const std::uint64_t m = simd::to_mask<A>(v >= tb))
                w += simd::compress_store<A>(v, simd::ibatch<A>::load_unaligned(ids + j), m, lg + w,
                                             ids + w);
        }
        for (; j < c; ++j) {
            const float v = lg[j];
            ids[w] = ids[j];
            lg[w] = v;
            w += v >= vk;
        }
        return w;
    }
    std::size_t ties_left = k - gt;
    for (std::size_t j = 0; j < c; ++j) {
        const float v = lg[j];
        const bool tie = v == vk, keep = v > vk || (tie && ties_left > 0);
        ids[w] = ids[j];
        lg[w] = v;
        w += keep;
        ties_left -= tie && keep;
    }
    return w;
}

/// The subrow that refines the sampled threshold: the row split into blocks of 16 vectors, one
/// vector of each block at a hashed position (so that no period of the row lines up with it;
/// another multiplier than the samples', which would otherwise all fall in the subrow when their
/// stride equals the block).
inline constexpr std::size_t subrow_block = 16;
inline std::size_t subrow_vector(std::size_t block) noexcept {
    return std::uint32_t(std::uint32_t(block + 1) * 2246822519u) >> 28;
}

/// The sampled threshold t0 refined on the subrow (see the file comment); t0 itself when the row
/// has fewer than 64 blocks or fewer than r subrow entries reach t0. Uses ids[0, n/16 + lanes)
/// and lg[0, n/16 + lanes) as scratch. \pre t0 > lowest finite float
template <class A, class Row>
float refine_on_subrow_of(const Row row, std::size_t n, std::size_t k, float t0, token_id* ids,
                          float* lg) noexcept {
    constexpr std::size_t L = simd::lanes<A>, G = subrow_block;
    const std::size_t nb = n / (G * L);
    if (nb < 64) return t0;
    const simd::batch<A> tb(t0);
    std::size_t c = 0;
    for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t j = (b * G + subrow_vector(b)) * L;
        const auto v = row.load(j);  // 1/16 of the row: the mask read before the branch
        if (const std::uint64_t m = simd::to_mask<A>(v >= tb))
            c += simd::compress_store<A>(v, m, token_id(j), lg + c, ids + c);
    }
    const double mu = double(k) * double(nb * L) / double(n);
    const std::size_t r = std::size_t(mu + 3 * std::sqrt(mu)) + 2;
    if (c < r) return t0;
    std::size_t ge = 0, gt = 0;
    return std::max(t0, kth_largest<A>(lg, c, r, ge, gt));
}

/// refine_on_subrow_of over a plain row.
template <class A>
float refine_on_subrow(const float* p, std::size_t n, std::size_t k, float t0, token_id* ids,
                       float* lg) noexcept {
    return refine_on_subrow_of<A>(plain_row<A>{p}, n, k, t0, ids, lg);
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

/// Orders out's c candidates by logit descending, ties by ascending id (logits re-read from x,
/// so -0 stays -0): the counting sort of sort_smallest when c > 16 and the key storage holds 2c
/// keys, std::sort otherwise.
inline void sort_by_rank(std::span<const float> x, candidates& out) noexcept {
    const std::size_t c = out.size();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::uint64_t* keys = out.key_storage();
    if (c < 2) return;
    if (c > 16 && 2 * c <= out.capacity()) {
        // Ascending keys ~rank_key = (descending image << 32) | id.
        for (std::size_t j = 0; j < c; ++j) keys[j] = ~rank_key(lg[j], ids[j]);
        sort_smallest(keys, c, c, keys + c);
        for (std::size_t j = 0; j < c; ++j) ids[j] = token_id(std::uint32_t(keys[c + j]));
    } else {
        for (std::size_t j = 0; j < c; ++j) keys[j] = rank_key(lg[j], ids[j]);
        std::sort(keys, keys + c, std::greater<std::uint64_t>());
        for (std::size_t j = 0; j < c; ++j) ids[j] = key_id(keys[j]);
    }
    for (std::size_t j = 0; j < c; ++j) lg[j] = x[std::size_t(ids[j])];
}

/// top_k_unordered over r[0, n) (see kernels::top_k_unordered). Survivors pass a threshold
/// >= the lowest finite float, so they are valid (and allowed) entries: their logits are read
/// from r.p directly.
template <class A, class Row>
std::size_t top_k_unordered_of(const Row r, std::size_t n, std::size_t k, tie_policy ties,
                               candidates& out) noexcept {
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t nfull = n / L * L;
    out.clear();
    if (k == 0 || n == 0) return 0;
    k = std::min(k, n);
    const float* p = r.p;
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t cap = std::min(n, std::max(4 * k, k + 256));
    const std::size_t chunk = 512 * L;  // entries between reservoir checks
    const float t_sampled = sampled_threshold_of<A>(r, n, k, lg);
    const float t_refined =
        t_sampled > lowest_f ? refine_on_subrow_of<A>(r, n, k, t_sampled, ids, lg) : t_sampled;
    // Starting thresholds, tightest first; the next is tried only if fewer than k entries
    // reached the previous one.
    const float starts[3] = {t_refined, t_sampled, lowest_f};
    for (int attempt = t_refined > t_sampled ? 0 : 1;; ++attempt) {
        float t = starts[attempt];
        bool strict = false;
        std::size_t c = 0;
        auto gather = [&] {
            for (std::size_t j = 0; j < c; ++j) lg[j] = p[std::size_t(ids[j])];
        };
        for (std::size_t i = 0; i < nfull; i += chunk) {
            c = compact_row<A, false>(r, i, std::min(nfull, i + chunk), t, strict, c, ids, nullptr);
            if (c > cap) {
                // Reservoir full: keep the k best so far; with exactly_k, later entries equal to
                // the k-th have larger ids and can no longer enter.
                gather();
                c = keep_k_best<A>(ids, lg, c, k, ties, t);
                strict = ties == tie_policy::exactly_k;
                if (c * 2 > cap) cap = std::min(n, 2 * c + 256);  // many ties: let it grow
            }
        }
        for (std::size_t i = nfull; i < n; ++i) {
            const float v = r.at(i);
            if (strict ? v > t : v >= t) ids[c++] = token_id(i);
        }
        if (c < k && starts[attempt] > lowest_f) continue;
        gather();
        if (c > k) c = keep_k_best<A>(ids, lg, c, k, ties, t);
        out.resize(c);
        return c;
    }
}

/// filter_at_least over r[0, n).
template <class A, class Row>
std::size_t filter_at_least_of(const Row r, std::size_t n, float threshold,
                               candidates& out) noexcept {
    constexpr std::size_t L = simd::lanes<A>;
    out.clear();
    if (std::isnan(threshold)) return 0;
    const float t = std::max(threshold, lowest_f);  // never -inf entries
    const std::size_t nfull = n / L * L;
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t c = compact_row<A>(r, 0, nfull, t, false, 0, ids, lg);
    for (std::size_t i = nfull; i < n; ++i) {
        const float v = r.at(i);
        if (v >= t) {
            ids[c] = token_id(i);
            lg[c] = v;
            ++c;
        }
    }
    out.resize(c);
    return c;
}

/// filter_min_p over r[0, n) (see kernels::filter_min_p).
template <class A, class Row>
std::size_t filter_min_p_of(const Row r, std::size_t n, float p_base, float temperature,
                            candidates& out) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    out.clear();
    const std::size_t nfull = n / L * L;
    if (n == 0) return 0;
    if (p_base <= 0) return filter_at_least_of<A>(r, n, neg_inf_f, out);
    const double shift = double(temperature) * std::log(reference::decimal_floor(p_base));
    if (std::isnan(shift)) return 0;
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    auto threshold = [&](float m) {
        return std::max(float(double(m) + shift), lowest_f);  // never -inf entries
    };
    float m = neg_inf_f;
    for (std::size_t j = 0, stride = std::max<std::size_t>(1, n / 256); j < n; j += stride) {
        const float v = r.at(j);
        m = v > m ? v : m;
    }
    std::size_t c = 0;
    const std::size_t chunk = 64 * L;
    for (std::size_t i0 = 0; i0 < nfull; i0 += chunk) {
        const std::size_t end = std::min(nfull, i0 + chunk);
        const B tb(threshold(m));
        B a0(m), a1(m);
        std::size_t i = i0;
        if constexpr (!Row::masked) {
            auto one = [&](std::size_t j, B& acc) {
                const B v = r.raw(j);
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
        } else {
            // The mask is read only for vectors with an entry above the running max or reaching
            // the threshold (any other vector changes neither): unmasked compares first.
            for (; i + 2 * L <= end; i += 2 * L) {
                const B v0 = r.raw(i), v1 = r.raw(i + L);
                const auto m0 = v0 >= tb, m1 = v1 >= tb;
                if (!simd::any<A>((m0 | m1) | ((v0 > a0) | (v1 > a1)))) continue;
                a0 = simd::max_ignore_nan<A>(a0, r.load(i));
                a1 = simd::max_ignore_nan<A>(a1, r.load(i + L));
                if (const std::uint64_t k = simd::to_mask<A>(m0) & r.bits(i))
                    c += simd::compress_store<A>(v0, k, token_id(i), lg + c, ids + c);
                if (const std::uint64_t k = simd::to_mask<A>(m1) & r.bits(i + L))
                    c += simd::compress_store<A>(v1, k, token_id(i + L), lg + c, ids + c);
            }
        }
        for (; i < end; i += L) {
            const B v = r.load(i);
            a0 = simd::max_ignore_nan<A>(a0, v);
            if (const std::uint64_t k = simd::to_mask<A>(v >= tb))
                c += simd::compress_store<A>(v, k, token_id(i), lg + c, ids + c);
        }
        m = simd::reduce_max<A>(simd::max<A>(a0, a1));
    }
    for (std::size_t i = nfull; i < n; ++i) {
        const float v = r.at(i);
        m = v > m ? v : m;
        if (v >= threshold(m)) {
            ids[c] = token_id(i);
            lg[c] = v;
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

/// A mask allowing at most 1/16 of the row's n tokens: the masked kernels below then gather the
/// allowed entries (a walk over the set bits, O(n / 32 + allowed)) instead of reading the row.
inline bool sparse_mask(const token_bitmask& mask, std::size_t n) noexcept {
    return allowed_at_most(mask, n, n / 16);
}

/// The allowed valid entries (neither NaN nor -inf) of x[0, n), in id order, into ids / lg;
/// returns their count. \pre n <= mask.covered()
inline std::size_t gather_allowed(const float* p, const token_bitmask& mask, std::size_t n,
                                  token_id* ids, float* lg) noexcept {
    std::size_t c = 0;
    for (std::size_t w = 0; w * 32 < n; ++w) {
        std::uint32_t b = mask.words[w];
        if (n - w * 32 < 32) b &= (1u << (n - w * 32)) - 1u;
        while (b) {
            const std::size_t i = w * 32 + std::size_t(std::countr_zero(b));
            b &= b - 1;
            const float v = p[i];
            ids[c] = token_id(i);
            lg[c] = v;
            c += v >= lowest_f;
        }
    }
    return c;
}

/// Keeps the entries of out's storage [0, c) with lg >= t (t >= the lowest finite float), in
/// order; sets out's size.
inline std::size_t keep_reaching(candidates& out, std::size_t c, float t) noexcept {
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t w = 0;
    for (std::size_t j = 0; j < c; ++j) {
        ids[w] = ids[j];
        lg[w] = lg[j];
        w += lg[j] >= t;
    }
    out.resize(w);
    return w;
}

}  // namespace detail

/// The top-k set, in id order: the k largest valid entries (exactly_k: min(k, #valid) of them,
/// ties at the k-th value resolved to the lower ids; keep_ties: also every entry equal to the
/// k-th). k == 0 gives an empty set. The same set as top_k, without its ordering; cost flat in k
/// (see the file comment). \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t top_k_unordered(std::span<const float> x, std::size_t k, tie_policy ties,
                            candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "top_k_unordered: out.capacity() must be >= x.size()");
    return detail::top_k_unordered_of<A>(detail::plain_row<A>{x.data()}, x.size(), k, ties, out);
}

/// top_k_unordered among the allowed entries (= the unmasked one on masked_copy(x, mask)): the
/// mask is read inside the sampled threshold, the subrow refinement and the compact pass.
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t top_k_unordered(std::span<const float> x, std::size_t k, tie_policy ties,
                            candidates& out, const token_bitmask& mask) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "top_k_unordered: out.capacity() must be >= x.size()");
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    if (!detail::sparse_mask(mask, n)) return detail::top_k_unordered_of<A>(r, n, k, ties, out);
    out.clear();
    if (k == 0) return 0;
    std::size_t c =
        detail::gather_allowed(x.data(), mask, n, out.id_storage(), out.logit_storage());
    float kth = 0;
    if (c > k) c = detail::keep_k_best<A>(out.id_storage(), out.logit_storage(), c, k, ties, kth);
    out.resize(c);
    return c;
}

/// Top-k: the k largest valid entries sorted by logit descending, ties by ascending id;
/// exactly_k keeps min(k, #valid), keep_ties also every entry equal to the k-th. k == 0 gives
/// an empty set. top_k_unordered, then the O(k) sort of the file comment.
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t top_k(std::span<const float> x, std::size_t k, tie_policy ties,
                  candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(), "top_k: out.capacity() must be >= x.size()");
    top_k_unordered<A>(x, k, ties, out);
    detail::sort_by_rank(x, out);
    return out.size();
}

/// top_k among the allowed entries (= the unmasked one on masked_copy(x, mask)).
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t top_k(std::span<const float> x, std::size_t k, tie_policy ties, candidates& out,
                  const token_bitmask& mask) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(), "top_k: out.capacity() must be >= x.size()");
    top_k_unordered<A>(x, k, ties, out, mask);
    detail::sort_by_rank(x, out);  // the survivors are allowed: their logits are x's
    return out.size();
}

namespace detail {
/// Entries per group of max_with_group_maxima (a multiple of every lane count).
inline constexpr std::size_t top_k_group = 512;

/// kernels::max(x) (the same value; a -0 max may come out as +0 or the reverse) in one pass that
/// also stores, for each full group of top_k_group entries (x.size() / top_k_group groups), the
/// per-lane maximum of its vectors (NaN ignored; -inf when every entry of the lane is NaN or
/// -inf) to gm[L g, L g + L): each stored value is the maximum of its own set of entries, so at
/// least j entries of the row reach the j-th largest stored value. The entries after the last
/// full group are in the max only. \pre gm holds x.size() / top_k_group * L floats
template <class A>
float max_with_group_maxima(std::span<const float> x, float* gm) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>, G = top_k_group;
    const float* p = x.data();
    const std::size_t n = x.size(), ng = n / G;
    B g(neg_inf_f);
    for (std::size_t b = 0; b < ng; ++b) {
        const float* q = p + b * G;
        B a0(neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
        for (std::size_t i = 0; i < G; i += 4 * L) {
            a0 = simd::max_ignore_nan<A>(a0, B::load_unaligned(q + i));
            a1 = simd::max_ignore_nan<A>(a1, B::load_unaligned(q + i + L));
            a2 = simd::max_ignore_nan<A>(a2, B::load_unaligned(q + i + 2 * L));
            a3 = simd::max_ignore_nan<A>(a3, B::load_unaligned(q + i + 3 * L));
        }
        const B v = simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3));
        v.store_unaligned(gm + b * L);
        g = simd::max<A>(g, v);
    }
    const float m = simd::reduce_max<A>(g), t = max_of<A>(plain_row<A>{p + ng * G}, n - ng * G);
    return t > m ? t : m;
}
}  // namespace detail

/// Floats of scratch logsumexp_top_k needs for a row of n entries.
template <class A = simd::default_arch>
constexpr std::size_t logsumexp_top_k_scratch(std::size_t n) noexcept {
    return n / detail::top_k_group * simd::lanes<A>;
}

/// logsumexp(x) (the same value) and top_k(x, k, ties, out) (the same candidates, same order) in
/// two passes over the row instead of four: the max pass also keeps the per-lane maxima of
/// 512-entry groups (detail::max_with_group_maxima); the k-th largest of those, tau, is reached
/// by at least k entries, so the top k are among the entries >= tau, which lie in the groups
/// whose maxima reach tau (about k groups): only those are compacted (from cache-cold memory,
/// but ~k * 512 entries), then cut to the k best and ordered as top_k does. The exp pass is
/// logsumexp's own. Rows with a non-finite max, fewer than k groups, or fewer than k valid
/// entries in the groups take logsumexp then top_k. Measured on the beam step (4 rows of
/// V = 128256, k = 8, AVX2 Zen 3, minimum of 5 alternating runs): 82.5 -> 73-74 us per row on
/// every shape of the benchmark family (the exp floor 55-58 us in the same runs): top_k's own
/// read pass (~9 us), its sampled thresholds and subrow refinement (~3 us) are gone. \pre
/// out.capacity() >= x.size(), scratch.size() >= logsumexp_top_k_scratch<A>(x.size())
template <class A = simd::default_arch>
double logsumexp_top_k(std::span<const float> x, std::size_t k, tie_policy ties, candidates& out,
                       std::span<float> scratch) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "logsumexp_top_k: out.capacity() must be >= x.size()");
    DECODEKIT_ASSERT(scratch.size() >= logsumexp_top_k_scratch<A>(x.size()),
                     "logsumexp_top_k: scratch too small");
    constexpr std::size_t L = simd::lanes<A>, G = detail::top_k_group;
    const std::size_t n = x.size(), ng = n / G, c_g = ng * L;
    auto fallback = [&] {
        top_k<A>(x, k, ties, out);
        return logsumexp<A>(x);
    };
    if (k == 0 || c_g < k) return fallback();
    float* gm = scratch.data();
    const float m = detail::max_with_group_maxima<A>(x, gm);
    if (!std::isfinite(m)) return fallback();
    const double lse = detail::log_of_stats(
        {m, detail::exp_pass<A, false>(detail::plain_row<A>{x.data()}, n, m, 1.f, nullptr)}, 1.f);
    std::size_t ge = 0, gt = 0;
    const float tau = detail::kth_largest<A>(gm, c_g, k, ge, gt);
    if (!(tau >= detail::lowest_f)) {  // fewer than k valid entries in the groups
        top_k<A>(x, k, ties, out);
        return lse;
    }
    using B = simd::batch<A>;
    const B tb(tau);
    const detail::plain_row<A> r{x.data()};
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t c = 0;
    for (std::size_t g = 0; g < ng; ++g)
        if (simd::any<A>(B::load_unaligned(gm + g * L) >= tb))
            c = detail::compact_row<A>(r, g * G, g * G + G, tau, false, c, ids, lg);
    const std::size_t nfull = n / L * L;
    c = detail::compact_row<A>(r, ng * G, nfull, tau, false, c, ids, lg);
    for (std::size_t i = nfull; i < n; ++i)
        if (x[i] >= tau) {
            ids[c] = token_id(i);
            lg[c] = x[i];
            ++c;
        }
    float kth = 0;
    if (c > k) c = detail::keep_k_best<A>(ids, lg, c, k, ties, kth);
    out.resize(c);
    detail::sort_by_rank(x, out);
    return lse;
}

/// Every valid entry with x_i >= threshold, in id order. One compare-and-compact pass.
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t filter_at_least(std::span<const float> x, float threshold, candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "filter_at_least: out.capacity() must be >= x.size()");
    return detail::filter_at_least_of<A>(detail::plain_row<A>{x.data()}, x.size(), threshold, out);
}

/// filter_at_least among the allowed entries (= the unmasked one on masked_copy(x, mask)).
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t filter_at_least(std::span<const float> x, float threshold, candidates& out,
                            const token_bitmask& mask) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "filter_at_least: out.capacity() must be >= x.size()");
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    if (!detail::sparse_mask(mask, n)) return detail::filter_at_least_of<A>(r, n, threshold, out);
    out.clear();
    if (std::isnan(threshold)) return 0;
    const std::size_t c =
        detail::gather_allowed(x.data(), mask, n, out.id_storage(), out.logit_storage());
    return detail::keep_reaching(out, c, std::max(threshold, detail::lowest_f));
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
    return detail::filter_min_p_of<A>(detail::plain_row<A>{x.data()}, x.size(), p_base, temperature,
                                      out);
}

/// Min-p among the allowed entries (= the unmasked one on masked_copy(x, mask)): the threshold
/// is set by the largest allowed entry. The same single pass, the mask read inside it.
/// \pre out.capacity() >= x.size()
template <class A = simd::default_arch>
std::size_t filter_min_p(std::span<const float> x, float p_base, float temperature, candidates& out,
                         const token_bitmask& mask) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(),
                     "filter_min_p: out.capacity() must be >= x.size()");
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    if (!detail::sparse_mask(mask, n))
        return detail::filter_min_p_of<A>(r, n, p_base, temperature, out);
    out.clear();
    const std::size_t c =
        detail::gather_allowed(x.data(), mask, n, out.id_storage(), out.logit_storage());
    if (p_base <= 0) return detail::keep_reaching(out, c, detail::lowest_f);
    const double shift = double(temperature) * std::log(reference::decimal_floor(p_base));
    if (std::isnan(shift)) return 0;
    float m = detail::neg_inf_f;
    for (std::size_t j = 0; j < c; ++j) m = std::max(m, out.logit_storage()[j]);
    return detail::keep_reaching(out, c, std::max(float(double(m) + shift), detail::lowest_f));
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
