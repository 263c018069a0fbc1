#pragma once
/// \file kernels/typical.hpp
/// Locally typical sampling by selection: its kept set is the logit interval around the row's
/// entropy point, found by the weighted cut of nucleus.hpp on the key |d - c| wherever it sits
/// in the order, without sorting anything but a bracket of <= 64 entries.
/// Semantics: reference::typical (the same set exactly). No random numbers are consumed.
///
/// With d_i = (x_i - m) / T, -log p_i - H = c - d_i... precisely |-log p_i - H| = |d_i - c| with
/// c = log Z - H = sum p_i d_i, the p-weighted mean of d: the score of every entry is its
/// distance to c, so the kept set (the scores up to the crossing's) is an interval of logits
/// around m + T c. The exponential pass (entropy.hpp's paired pass: two vectors' weights and
/// products added in float before they are widened, that rounding carried in row_sums::pair_error
/// into every bound) gives Z and sum w |d| in double lanes (so c), and the weighted cut runs on
/// the float key -|d - c| (larger first); its first bracket is a sampled estimate in mass (see
/// typical_bounds), where the sample misses the few heavy entries holding the dropped mass (Zipf
/// rows at T > 1: typical drops the head; the highest ~1 % of a Gaussian row at T 1, whose
/// variance they dominate) with the heavy entries taken exactly (one more pass over the weights,
/// only then). When the narrowed bracket leaves the crossing's key too close to one
/// of its bounds for them to order the entries outside it (the crossing its last entry), the
/// bracket is split once more from the row around that key and walked again (one pass; it was
/// the reference's O(V log V) walk). The walk over the bracket
/// (sorted by key, then logit descending, then id) decides the crossing (its mass bound takes the
/// w |d| of the entries above the bracket from their logit interval, and sums it in one read
/// pass, inner_wd, only when that bound alone leaves the crossing open) and checks, against a
/// rigorous bound on the float keys (the rounding of d, of c and of d - c; c's error from the
/// exponential pass), that no entry of another logit has a key so close to the crossing's that
/// the reference could order them differently or find them tied (c's error: entropy.hpp's
/// centred bound). When only that order check fails, the bracket's scores in double with the same
/// c (no pass: the float keys' own rounding is about half of their bound; reported as
/// float_bound), then the compensated float tier (reported as exactness_tier::corrected, as
/// top-p's read pass): entropy.hpp's compensate() pass (which also sums the weights and
/// products unpaired, unpaired_sums) gives c to ~exp_error sigma, the bracket's scores
/// are taken in double from it and walked again (on the Gaussian row of the benchmark family the
/// float keys leave the order open on ~90 % of rows, the compensated tier on ~6 %). Then, as in
/// nucleus.hpp: a double-precision pass (Z, c and the mass inside the bracket in double, the
/// bracket's keys and weights in double); the reference itself (O(V log V), allocating) when even
/// that is within its bound, when min_keep binds, and for rows with +inf entries or a subnormal
/// temperature or one above 2^120.

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/cut.hpp>
#include <decodekit/kernels/entropy.hpp>
#include <decodekit/kernels/nucleus.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/kernels/weights.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <type_traits>
#include <utility>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
namespace detail {

/// typical's order as a float key: -|d - c| (larger first), d = (x - m) * (1 / T).
template <class A>
struct typical_key {
    float m, inv_t, c;
    float err;  ///< bound of a key's error (bracket bounds stay 4 of them away from its keys)
    /// (v - m) / T - c as the key computes it (nondecreasing in v; the key is -|centred(v)|)
    simd::batch<A> centred(const simd::batch<A>& v) const noexcept {
        using B = simd::batch<A>;
        return (v - B(m)) * B(inv_t) - B(c);
    }
    simd::batch<A> operator()(const simd::batch<A>& v) const noexcept {
        using B = simd::batch<A>;
        const B t = centred(v);
        return simd::min<A>(t, B(0.f) - t);  // -|t|; NaN stays NaN
    }
    /// The scalar forms are lane 0 of the vector ones: the same instructions, so the same
    /// rounding. Written as scalar arithmetic, clang with FMA contracts (v - m) * inv_t - c into
    /// one fused operation where it leaves xsimd's vector operators apart: the keys then differ by
    /// an ulp on ~40 % of entries, and an entry the vector pass counted above a bound could fall
    /// outside the inner range found from the scalar key (review of typical_split_row).
    float centred(float v) const noexcept {
        alignas(64) float o[simd::lanes<A>];
        centred(simd::batch<A>(v)).store_aligned(o);
        return o[0];
    }
    float operator()(float v) const noexcept {
        const float t = centred(v);
        return std::min(t, 0.f - t);
    }
    /// Upper bound of |d| over the entries whose key is >= y (|d - c| <= -y).
    double d_bound(float y) const noexcept {
        return std::min(200.0, std::fabs(double(c)) - double(y));
    }
    float margin() const noexcept { return 4 * err; }
};

/// The row_cut of a set that is an interval of logits whose boundary groups are cut by id (the
/// reference's typical set): its smallest and largest logit, each cut at the set's largest id of
/// that value when the row has more of it.
inline row_cut interval_cut(std::span<const float> x, const candidates& set) noexcept {
    row_cut k;
    if (set.empty()) return k;
    for (float v : set.logits()) {
        k.lo = v < k.lo ? v : k.lo;
        k.hi = v > k.hi ? v : k.hi;
    }
    std::size_t in_lo = 0, in_hi = 0, last_lo = 0, last_hi = 0;
    for (std::size_t j = 0; j < set.size(); ++j) {
        const float v = set.logits()[j];
        const std::size_t id = std::size_t(set.ids()[j]);
        if (v == k.lo) {
            ++in_lo;
            last_lo = std::max(last_lo, id);
        }
        if (v == k.hi) {
            ++in_hi;
            last_hi = std::max(last_hi, id);
        }
    }
    std::size_t row_lo = 0, row_hi = 0;
    for (float v : x) {
        row_lo += v == k.lo;
        row_hi += v == k.hi;
    }
    if (in_lo < row_lo) k.lo_last = last_lo;
    if (in_hi < row_hi) k.hi_last = last_hi;
    return k;
}

/// typical_bounds' sort key of an entry: its key's order (rank_key's image) in the high half, its
/// weight's bits in the low half (weights are >= 0: ties in the key by ascending weight), so that
/// the estimate reads the weights in the sorted order instead of w at each entry's row (random
/// reads of a 512 KB array at V 128256: ~1000-2500 per row, most of them L2 misses).
inline std::uint64_t weight_key(float y, float wy) noexcept {
    return (rank_key(y, 0) >> 32 << 32) | std::uint64_t(std::bit_cast<std::uint32_t>(wy));
}
/// The key of a weight_key (rank_key's image inverted; -0 comes back +0).
inline float weight_key_key(std::uint64_t k) noexcept {
    const auto u = std::uint32_t(k >> 32);
    return std::bit_cast<float>((u & 0x80000000u) != 0 ? u & 0x7FFFFFFFu : ~u);
}

/// The standard deviations of typical_bounds' inner bounds, the first bracket split from the row
/// (its 2.5 the bounds a failed side widens to, then -inf / +inf: typical_checked_bracket). Every
/// bracket entry costs the split its compaction (three streams, ~16-21 of its 46-60 us on the
/// benchmark rows) and the narrowing after it, so a narrower first bracket pays while a miss
/// costs one more split, not a bracket widened to the end of the row. Measured (AVX2, V 128256,
/// 40 salts per row): first brackets ~35 % smaller (Zipf T 1 10369 -> 6846 entries on average,
/// Gaussian HF T 1.5 17152 -> 11306), misses (one more split) 0-6 of 40 rows where 2.5 had 0-4;
/// sample() on the benchmark rows (salt 0; minima of 6 alternating runs): typical 0.9 Zipf
/// 193 -> 182 us, flat 190 -> 178, Gaussian 187 -> 186; HF T 1.5 Gaussian 212 -> 199, flat
/// 193 -> 181; 2.0 gave about half of that, 1.0 was slower. The mean of sample() over salts 0-39
/// (minimum of 4 alternating runs) moves less and not everywhere the same way: Zipf T 1 -9 %,
/// flat T 1 -8 %, HF flat -5 %, HF Zipf -2 %, but Gaussian T 1 +8.5 % and HF Gaussian +3.7 %
/// (their misses; those means hold rows of the slower tiers, ~300 us, and are noisy): Gaussian
/// rows with z >= 2048 keep 2.5 (typical_inner_max_heavy_share); the few with z < 2048 (two of
/// four Gaussian T 1 rows in the test) take the heavy-entries branch, which keeps these bounds.
inline constexpr double typical_inner_sds = 1.5;

/// The inner bounds only where the first stage's estimate is not held by a few samples: on rows
/// with no weight above z / 2048 (z >= 2048: Gaussian-like, flat) whose r largest sampled weights
/// (r = 512 * 1024 / n: 4 at n = 128256, 16 at n = 32000) hold more
/// than this share of the samples' sum of w^2, the first bracket is the wide one (2.5 sd). The
/// share, at V 128256 over salts 0-39: flat rows 0.008 (T 1 and 1.5), Gaussian T 1.5 0.066-0.202,
/// Gaussian T 1 0.124-0.517; on those Gaussian rows the 1.5 sd bracket missed more often (40
/// salts: T 1 4 -> 5 rows, T 1.5 2 -> 6) and their means rose (+8.5 %, +3.7 %), on flat rows it
/// did not. With this share the Gaussian rows of z >= 2048 split as before typical_inner_sds. Means
/// over salts 0-39 against 2.5 everywhere (minima of 5 alternating runs): Zipf T 1 192 -> 176 us,
/// flat 216 -> 207, HF flat 231 -> 220, Gaussian T 1 307 -> 291, HF Gaussian 308 -> 306, HF Zipf
/// 160 -> 160 (the Gaussian ones the same work: noise).
inline constexpr double typical_inner_max_heavy_share = 0.04;

/// typical_bounds refines a bracket of at least this many entries (estimated from the samples
/// between its bounds; the Zipf rows at T 1.5 whose bracket is a few heavy entries are not: on
/// those refining cost 162 -> 168 us). The refinement: 4096 samples (AVX2) instead of 512, so
/// the estimate's sd ~1 / sqrt(8) and the first bracket ~2.8x fewer entries: measured (AVX2,
/// V 128256, 40 salts) mean first bracket Zipf T 1 6846 -> 1985 entries, flat 7385 -> 2256,
/// Gaussian 11429 -> 3842, HF T 1.5 Gaussian 17153 -> 6165, flat 7468 -> 2310; rows that missed
/// (one more split) 0 -> 1, 1 -> 2, 4 -> 5, 2 -> 2, 1 -> 2 of 40. Each bracket entry costs the
/// split's compaction, the narrowing and the restore. Drawn first as 4096 spread positions (one
/// sample per cache line): the bracket as narrow, but the 8192 lines read back cost ~17 us (the
/// HF Zipf row, not narrowed, 161 -> 178); hence one vector at each of the 512 positions.
/// sample() at V 128256 (minima of 8 alternating runs, salt 0): typical 0.9 Zipf 182 -> 174 us,
/// flat 177 -> 168, Gaussian 194 -> 191; HF T 1.5 Gaussian 212 -> 183, flat 181 -> 172, Zipf
/// and peaked (not refined) within noise; means over salts 0-39 (minima of 4 alternating runs):
/// Zipf T 1 -5 %, Gaussian -8 %, flat -8 %, HF Gaussian -16 %, HF flat -8 %, HF Zipf +0.1 %.
/// At V 32000 within noise (+-3 %). The inner bounds stay off on Gaussian rows
/// (typical_inner_max_heavy_share): with them after the refinement HF Gaussian rows missed 2 -> 6
/// of 40 and the mean moved < 1 %.
inline constexpr double typical_refine_min_entries = 2048;

/// Bounds [lo, hi) of typical's crossing on the key, from the row's weights w (every entry's; z
/// their sum), in up to three stages. First 512 entries at hashed positions (as find_bracket's),
/// sorted by key, their weights (scaled by n / 512) summed from the smallest key (the most
/// atypical) up to the mass the cut drops, z - rmass; the bounds where that sum, in mass, is 2.5
/// of its standard deviations below and above the drop (scale sqrt(sum w^2) over the samples
/// summed), 3 samples further out and key.margin() beyond the keys they come from. When z < 2048
/// (else no entry is heavy: the weights are at most 1) and that leaves the low side open (the
/// crossing among the first samples) or a heavy entry's key may lie below the low bound (either
/// way the dropped mass sits on a few heavy entries the sample mostly misses, as on Zipf rows at a
/// temperature > 1, where typical drops the head): the heavy entries (w > z / 2048, at most 2048)
/// taken exactly, in one more pass over the weights, and the same estimate with the samples' light
/// entries scaled to the rest of the row. When z >= 2048 (Gaussian-like rows) and the 4 largest
/// sampled weights (at n = 128256; 512 * 1024 / n) hold > 15 % of the samples' sum of w^2, the
/// entries above the smallest of them (~1024 expected, at most 2048) likewise. Then, when that
/// bracket is closed on both sides and holds >= typical_refine_min_entries entries (estimated),
/// the refinement (rows of n >= 2 (2048 + 512 L)): the same estimate from L x the samples (8 x on
/// AVX2: the L entries of the vector at each sampled position, aligned by row index: ~the same
/// cache lines the first stage read, so ~no new memory traffic),
/// sorting only those in the bracket; the mass below it a lump of scaled samples (their w^2 in
/// the variance), those above it ignored; the heavy entries exact as before; a side it leaves
/// open keeps the first bound, unless its estimate puts the crossing itself beyond that bound:
/// then refined again with that side open to the row's end (refine false: none; for tests). On rows
/// of z >= 2048 whose second stage runs, the refinement first starts from the first stage's bracket
/// (the second stage's heavy entries exact) and the second stage's estimate runs only when that
/// leaves a side open. Rows of <= 4096 entries: no estimate (the whole row). buf: >= x.size() keys
/// of scratch; lg, ids: >= x.size() entries of scratch (the heavy entries' keys and ids). pre
/// (optional): the entries above some threshold collected by the exponential pass
/// (typical_heavy_plan): when that threshold is the second stage's and pre->ids is ids, they
/// replace its pass over the weights (the same entries in the same order); when it is below the
/// second stage's (and pre did not overflow), those of them above it do.
template <class A, class Key>
void typical_bounds(std::span<const float> x, const float* w, const Key& key, double z,
                    double rmass, std::uint64_t* buf, float* lg, token_id* ids, float& lo,
                    float& hi, const heavy_entries* pre = nullptr, float* inner_lo = nullptr,
                    float* inner_hi = nullptr, bool refine = true) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>, S = 512, H = 2048;
    constexpr float pinf = std::numeric_limits<float>::infinity();
    const std::size_t n = x.size();
    lo = lowest_f;
    hi = pinf;
    float ilo = lowest_f, ihi = pinf;  // the inner bounds (typical_inner_sds)
    bool inner = true;                 // false: the inner bounds are the outer ones
    struct publish {                   // (on every return)
        float &ilo, &ihi, &lo, &hi, *lo_out, *hi_out;
        const bool& inner;
        ~publish() {
            if (lo_out != nullptr) *lo_out = inner ? ilo : lo;
            if (hi_out != nullptr) *hi_out = inner ? ihi : hi;
        }
    } pub{ilo, ihi, lo, hi, inner_lo, inner_hi, inner};
    if (n <= 4096) return;
    std::uint64_t* tmp = buf + (H + S);  // (n > 4096 >= H + S; the second stage needs 2 (H + S))
    std::size_t c = 0;                   // buf[0, c): weight keys (key, weight)
    double base = 0, base2 = 0;          // the estimate's start: mass (and light w^2) below buf
    float olo = lowest_f, ohi = pinf;    // the estimate's bounds stay within [olo, ohi]
    double span = 0;                     // the entries between its wide bounds (estimated)
    double walked = 0;                   // the last estimate's mass through its walk's end
    auto add = [&](std::size_t i, float wi) {
        const float y = key(x[i]);
        if (y >= lowest_f) buf[c++] = weight_key(y, wi);  // (NaN, -inf: no key)
    };
    const std::uint64_t stride = n / S;
    auto sample = [&](float thr) {  // the samples below thr; returns how many positions
        std::size_t k = 0;
        for (std::size_t j = 0; j < S; ++j) {
            const std::size_t q = sample_position(j, stride);
            const float wq = w[q];
            if (!(wq > thr)) {
                add(q, wq);
                ++k;
            }
        }
        return k;
    };
    // The estimate over buf[0, c): entries with w > thr count their weight, the others theirs
    // times scale. Returns false when the low side stays open. part (> 0): first only the
    // smallest ~part keys sorted (whole buckets of sort_smallest), all of them when the walk
    // needs more (the high bound 3 past the last sorted one, or none).
    auto estimate = [&](float thr, double scale, std::size_t part = 0) {
        if (c == 0) return true;
        // ascending: the most atypical first
        std::size_t sorted = c;
        if (part > 0 && part < c)
            sorted = sort_smallest(buf, c, part, tmp);
        else
            sort_smallest(buf, c, c, tmp);
        auto w_at = [&](std::size_t j) { return std::bit_cast<float>(std::uint32_t(tmp[j])); };
        const double drop = z - rmass;
        // The estimate of the mass below sample j (inclusive: light samples scaled, heavy ones
        // exact) errs by about scale sqrt(sum of the light samples' w^2 through j): the low bound
        // is the last sample whose estimate stays 2.5 of those below drop, the high bound the
        // first 2.5 of them above it, each 3 samples further out. (In mass, not in samples of the
        // crossing's weight: a crossing among heavy entries, or a light one among heavy samples,
        // says nothing of the density of mass around it. 2.5, not 4: a bound that fails the check
        // costs one more split pass, and the narrower bracket saves more than that on average:
        // 33 rows of each shape of the benchmark family, T 1 and 1.5, 2-11 us less per row.)
        const double sds = 2.5, sdi = typical_inner_sds;
        std::size_t jl = npos, jh = npos;  // npos: none (that side open)
        std::size_t il = npos, ih = npos;  // the same at sdi standard deviations
        auto walk = [&] {
            double below = base, below2 = base2;
            jl = jh = il = ih = npos;
            for (std::size_t j = 0; j < sorted; ++j) {
                const double wq = double(w_at(j));
                const bool light = !(wq > double(thr));
                if (light) below2 += wq * wq;
                below += light ? scale * wq : wq;
                // below -+ sds scale sqrt(below2) against drop, squared
                const double var = sds * sds * scale * scale * below2, gap = drop - below;
                const double vari = sdi * sdi * scale * scale * below2;
                if (gap > 0 && gap * gap > vari) il = j;
                if (gap < 0 && gap * gap > vari && ih == npos) ih = j;
                if (gap > 0 && gap * gap > var) jl = j;
                if (gap < 0 && gap * gap > var) {
                    jh = j;
                    break;
                }
            }
            walked = below;
        };
        walk();
        if (sorted < c && (jh == npos || jh + 3 >= sorted)) {  // (the same walk over every key)
            sort_smallest(buf, c, c, tmp);
            sorted = c;
            walk();
        }
        auto key_at = [&](std::size_t j) { return weight_key_key(tmp[j]); };
        hi = jh != npos && jh + 3 < sorted ? std::min(ohi, key_at(jh + 3) + key.margin()) : ohi;
        lo = jl != npos && jl >= 3 ? std::max(olo, key_at(jl - 3) - key.margin()) : olo;
        if (!(lo < hi)) lo = olo;
        if (!(lo < hi)) hi = ohi;  // (the refinement: keys tied at lo1, a margin of 0)
        // the inner bounds, within [lo, hi] (sdi < sds: il >= jl, ih <= jh)
        ihi = ih != npos && ih + 3 < sorted ? std::min(hi, key_at(ih + 3) + key.margin()) : hi;
        ilo = il != npos && il >= 3 ? std::max(lo, key_at(il - 3) - key.margin()) : lo;
        if (!(ilo < ihi)) ilo = lo, ihi = hi;
        // the entries the samples between the wide bounds stand for (only when both are
        // closed, the refinement's condition: not a loop over every sample of an open side)
        span = 0;
        if (lo > olo && hi < ohi)
            for (std::size_t j = jl - 3; j <= jh + 3; ++j)
                span += double(w_at(j)) > double(thr) ? 1.0 : scale;
        return lo > lowest_f;
    };
    float thr2 = pinf;           // the refinement's light threshold (the second stage's, if it ran)
    std::size_t heavy_n = 0;     // lg / ids[0, heavy_n): the second stage's heavy entries
    std::size_t heavy_keys = 0;  // (those with a key)
    bool refined = false;        // refined from the first stage's bracket (see below)
    // the refinement's condition on the bracket [lo, hi) the last estimate left
    auto refines = [&] {
        return refine && 2 * (H + S * L) <= n && lo > lowest_f && hi != pinf && z > 0 &&
               span >= typical_refine_min_entries;
    };
    // the refinement: at each of the S sampled positions the L entries of its vector (aligned by
    // row index, the last one clamped to the row's end: ~the cache lines the first stage read),
    // those in [lo, hi) sorted (the heavy entries there exact), the mass below lo a lump (its light
    // samples' w^2 to the variance), those above hi ignored. Returns whether its estimate closed
    // both sides within [lo, hi).
    auto refine_in = [&]() -> bool {
        const float lo1 = lo, hi1 = hi;
        std::uint64_t* const tmp0 = tmp;
        base = 0;  // (no estimate, as when there is no light sample: no side retried)
        walked = std::numeric_limits<double>::infinity();
        double lump_heavy = 0;
        c = 0;
        for (std::size_t j = 0; j < heavy_n; ++j) {
            const float y = lg[j];
            if (!(y >= lowest_f)) continue;
            const float wj = w[std::size_t(ids[j])];
            if (y < lo1)
                lump_heavy += double(wj);
            else if (y < hi1)
                buf[c++] = weight_key(y, wj);
        }
        const B lob(lo1), hib(hi1), thb(thr2), lowb(lowest_f), zero(0.f);
        B lw(0.f), lw2(0.f);
        std::size_t light = 0;
        for (std::size_t j = 0; j < S; ++j) {
            const std::size_t q = std::min(sample_position(j, stride) / L * L, n - L);
            const B wq = B::load_unaligned(w + q);
            const auto lt = !(wq > thb);
            const B y = key(B::load_unaligned(x.data() + q));
            const auto below = lt & (y >= lowb) & (y < lob);
            lw += simd::select<A>(below, wq, zero);
            lw2 += simd::select<A>(below, wq * wq, zero);
            light += std::size_t(std::popcount(simd::to_mask<A>(lt)));
            std::uint64_t in = simd::to_mask<A>(lt & (y >= lob) & (y < hib));
            if (in == 0) continue;
            alignas(64) float ys[L], ws[L];
            y.store_aligned(ys);
            wq.store_aligned(ws);
            for (; in != 0; in &= in - 1) {
                const std::size_t k = std::size_t(std::countr_zero(in));
                buf[c++] = weight_key(ys[k], ws[k]);
            }
        }
        const double lump = double(simd::reduce_add<A>(lw)),
                     lump2 = double(simd::reduce_add<A>(lw2));
        if (light == 0) return false;
        const double scale = double(n - heavy_keys) / double(light);
        tmp = buf + (H + S * L);
        base = lump_heavy + scale * lump;
        base2 = lump2;
        olo = lo1;
        ohi = hi1;
        // the walk ends 2.5 sd past the crossing, which lies within the bracket: ~3/4 of its
        // keys sorted (measured: typical_bounds on the Gaussian T 1 row 23.2 -> 21.8 us, the same
        // bounds on every row of salts 0-39, all shapes, T 1 and HF T 1.5)
        estimate(thr2, scale, c * 3 / 4);
        tmp = tmp0;
        return lo > lo1 && hi < hi1;
    };
    [&] {  // the first two stages
        sample(pinf);
        const bool closed = estimate(pinf, double(n) / double(S));
        if (!(z > 0) || n <= 2 * (S + H) + L) return;
        float thr = 0;
        if (z < double(H)) {
            // The heavy entries (w > z / H: d in [log(z / H), 0]) have keys of at least heavy_key.
            // When one may sit below the low bound, the sample (which mostly misses them)
            // underestimated the mass below it and the bound is likely too high: on Zipf rows at
            // T 1.5 (typical drops the head) it was on half of the benchmark family's rows (one
            // more split pass over the row and a bracket of 13000-65000 entries, ~2.3x the time).
            // The heavy entries are then taken exactly.
            const float heavy_key =
                std::min(key(key.m),
                         key(float(double(key.m) + std::log(z / double(H)) / double(key.inv_t))));
            if (closed && heavy_key >= lo) return;
            thr = float(z / double(H));
        } else {
            // No entry holds z / H (weights <= 1), but on a Gaussian-like row a few of the highest
            // entries carry most of the estimate's variance (Gaussian sd 1: the dropped mass above
            // the typical point sits on ~0.4 % of the entries at ~13x the mean weight; the first
            // stage's bracket held ~30000 entries on the benchmark's row). When the r largest
            // sampled weights hold more than 15 % of the samples' sum of w^2, the entries above the
            // r-th largest (~H / 2 expected, r = 4 at n = 128256) are taken exactly. (Flat
            // rows: ~1 %; Gaussian rows at T 1.5, whose bracket is narrower already: mostly
            // below, where the second stage, ~10 us, saves less than it costs.)
            const std::size_t r = std::max<std::size_t>(1, S * (H / 2) / n);
            if (c <= 4 * r) return;
            float top[S];
            double all2 = 0;
            for (std::size_t j = 0; j < c; ++j) {
                top[j] = std::bit_cast<float>(std::uint32_t(buf[j]));
                all2 += double(top[j]) * double(top[j]);
            }
            std::nth_element(top, top + (r - 1), top + c, std::greater<float>());
            thr = top[r - 1];
            double heavy2 = 0;
            for (std::size_t j = 0; j < r; ++j) heavy2 += double(top[j]) * double(top[j]);
            inner = !(heavy2 > typical_inner_max_heavy_share * all2);
            if (!(heavy2 > 0.15 * all2)) return;
        }
        // the second stage: the heavy entries exactly
        const float low_lo = lo, low_hi = hi, low_ilo = ilo, low_ihi = ihi;
        // the heavy entries' keys and ids compacted to lg / ids (scratch), then their weight keys
        const B tb(thr);
        std::size_t h = 0, i = 0;
        bool overflow = false;
        if (pre != nullptr && pre->ids == ids && pre->thr == thr) {  // collected by the pass
            overflow = pre->overflow;
            h = pre->count;
            for (std::size_t j = 0; j < h && !overflow; ++j) lg[j] = key(x[std::size_t(ids[j])]);
            i = n;
        } else if (pre != nullptr && pre->ids == ids && !pre->overflow && pre->thr < thr) {
            // The pass collected every entry above a lower threshold, ids ascending: those above
            // thr are among them, in the pass's order. (Gaussian rows at T 1 whose z < H: the
            // plan's z estimate only needs H / 2, and their second stage is the z / H one; 11 of
            // 40 benchmark rows at V 128256. Measured, AVX2, minima of 8 alternating runs: those
            // rows' sample() 286.5 -> 278.2 us on average, the other 29 247.5 -> 247.3.)
            for (std::size_t j = 0; j < pre->count; ++j) {
                const token_id id = ids[j];
                if (w[std::size_t(id)] > thr) {
                    lg[h] = key(x[std::size_t(id)]);
                    ids[h++] = id;
                }
            }
            i = n;
        }
        for (; i + L <= n; i += L) {
            const std::uint64_t mk = simd::to_mask<A>(B::load_unaligned(w + i) > tb);
            if (mk == 0) continue;
            if (h + std::size_t(std::popcount(mk)) > H) {
                overflow = true;
                break;
            }
            h += simd::compress_store<A>(key(B::load_unaligned(x.data() + i)),
                                         simd::iota<A>(token_id(i)), mk, lg + h, ids + h);
        }
        for (; i < n && !overflow; ++i)
            if (w[i] > thr) {
                if (h == H) {
                    overflow = true;
                } else {
                    lg[h] = key(x[i]);
                    ids[h++] = token_id(i);
                }
            }
        auto first_bounds = [&] {  // back to the first stage's bracket
            lo = low_lo;
            hi = low_hi;
            ilo = low_ilo;
            ihi = low_ihi;
        };
        if (overflow) {  // (more than H entries above thr) the first stage's bounds
            first_bounds();
            return;
        }
        thr2 = thr;
        heavy_n = h;
        heavy_keys = 0;
        for (std::size_t j = 0; j < h; ++j) heavy_keys += lg[j] >= lowest_f;
        // On Gaussian-like rows (z >= H) the first stage's bracket holds the crossing as a rule
        // (its variance counts the heavy samples' w^2), only wide: refined from it with these
        // heavy entries exact, the second stage's sample and estimate are not needed. When the
        // refined bounds do not close within it (1 of the 25 such Gaussian T 1 rows of salts
        // 0-39 at V 128256), the second stage runs and the refinement starts from its bracket.
        // Measured (AVX2, V 128256, rdtsc around typical_bounds, minima of 90 calls per row):
        // Gaussian T 1 salt 0 24.6 -> 23.5 us, mean over salts 0-39 26.9 -> 26.2, HF T 1.5
        // Gaussian 16.5 -> 14.9; rows that missed (one more split) 5 -> 4 of 40, mean first
        // bracket 3842 -> 3853 entries. (Rows of z < H: their first bracket is biased by the
        // heavy entries it misses: from it all 18 HF T 1.5 Zipf rows that take the second stage
        // failed.)
        if (z >= double(H) && closed && refines()) {
            if (refine_in()) {
                refined = true;
                return;
            }
            first_bounds();
            base = base2 = span = 0;
            olo = lowest_f;
            ohi = pinf;
        }
        c = 0;
        for (std::size_t j = 0; j < h; ++j)
            if (lg[j] >= lowest_f)  // (NaN, -inf: no key)
                buf[c++] = weight_key(lg[j], w[std::size_t(ids[j])]);
        const std::size_t heavy = c;  // (== heavy_keys)
        const std::size_t light = sample(thr);
        // each light sample stands for (n - heavy) / light entries
        estimate(thr, light > 0 ? double(n - heavy) / double(light) : 0.0);
    }();
    if (!refined && refines()) {
        // A side the refinement leaves open keeps its first bound. Where its estimate puts the
        // crossing itself beyond that bound (the mass below the bracket already above the
        // dropped mass, or the whole bracket's below it), the bracket split from these bounds
        // would miss on that side and widen it to the end of the row (Gaussian T 1 rows: ~45000
        // entries narrowed in four rounds, ~2.5x the row's time): refined again instead with
        // that side open to the row's end (its samples there sorted too). Where only the 2.5 sd
        // band reaches past the bound, the bound stays (opened, the bracket grew: on one row
        // 11963 -> 16809 entries, +80 us).
        const float lo1 = lo, hi1 = hi;
        if (!refine_in()) {
            const double drop = z - rmass;
            const bool low = !(lo > lo1) && base > drop, high = !(hi < hi1) && walked < drop;
            if (low) lo = lowest_f;
            if (high) hi = pinf;
            if (low || high) refine_in();
        }
    }
}

/// The threshold of typical_bounds' second stage on a Gaussian-like row (z >= 2048: the r-th
/// largest sampled weight) from the same 512 sampled positions before the exponential pass
/// (their weights recomputed: weight_lanes, the stored weights bit for bit), and whether that
/// stage will likely run (the r largest hold > 15 % of the samples' sum of w^2), so that
/// entropy_pass collects the entries above it (Heavy) and typical_bounds skips its pass over
/// the weights. The decision is only a prediction: typical_bounds uses the collected entries
/// only when its own threshold is >= this one (else its own pass). ids: >= 2048 entries of scratch
/// (typical_bounds' ids). Returns false when nothing is to be collected.
/// Measured (AVX2, V 128256, Gaussian row T 1): that pass over the weights was ~14 % of
/// sample()'s perf samples (a branch per vector, mispredicted, and the weights' 512 KB read back
/// from L3); sample() 214 -> 204 us (min of 5 alternated runs; the other rows, not planned,
/// within the machine's +-5 % noise). Planning more rows does not pay: with the second stage's
/// trigger at 4 % instead of 15 % (so that Gaussian rows at T 1.5 take it too), the flat row at
/// T 1 was 24 % slower and the Gaussian one at T 1.5 6 %.
template <class A>
bool typical_heavy_plan(std::span<const float> x, float m, float inv_t, token_id* ids,
                        heavy_entries& h) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>, S = 512, H = 2048;
    const std::size_t n = x.size();
    if (n <= 2 * (S + H) + L) return false;
    alignas(64) float v[S];
    const std::uint64_t stride = n / S;
    for (std::size_t j = 0; j < S; ++j) v[j] = x[sample_position(j, stride)];  // (its positions)
    const B mb(m), tb(inv_t);
    for (std::size_t j = 0; j < S; j += L)
        weight_lanes<A>(B::load_aligned(v + j), mb, tb).store_aligned(v + j);
    const std::size_t r = std::max<std::size_t>(1, S * (H / 2) / n);
    if (S <= 4 * r || r > 8) return false;
    float top[8];  // the r largest, descending
    std::size_t k = 0;
    double all = 0, all2 = 0;
    for (std::size_t j = 0; j < S; ++j) {
        const float e = v[j];
        if (!(e > 0)) continue;
        all += double(e);
        all2 += double(e) * double(e);
        if (k < r || e > top[k - 1]) {
            std::size_t q = k < r ? k++ : k - 1;
            for (; q > 0 && top[q - 1] < e; --q) top[q] = top[q - 1];
            top[q] = e;
        }
    }
    // z >= 2048 is that stage's condition; z estimated from the samples (peaked and Zipf rows:
    // z ~ 1-30, their estimate lower still; the Gaussian row at T 1: z ~ 2300)
    if (k < r || !(all * double(n) / double(S) >= double(H) / 2)) return false;
    double heavy2 = 0;
    for (std::size_t j = 0; j < r; ++j) heavy2 += double(top[j]) * double(top[j]);
    if (!(heavy2 > 0.15 * all2)) return false;
    h = {.thr = top[r - 1], .ids = ids, .cap = H};
    return true;
}

/// The logits whose key reaches y (key(v) >= y) as an interval [first, last] of floats (first
/// NaN: none; a NaN logit is in no interval). Why it is exact: key(v) = min(t, 0 - t) with
/// t = key.centred(v), so for t not NaN key(v) >= y <=> t >= y and t <= -y (0 - t is -t exactly);
/// t is nondecreasing in v when m, c are finite and 0 < inv_t < inf (v - m, the product by
/// inv_t > 0 and - c each round monotonically, as does a fused (v - m) * inv_t - c; +-inf give
/// +-inf, never NaN), so {t >= y} is a suffix of the ordered floats and {t <= -y} a prefix, and
/// binary searches over the ordered images of [-inf, +inf] find their ends. The scalar key is the
/// vector key's lane 0, bit for bit (typical_key; tested), so an entry is in [first, last] exactly
/// when the vector key typical_split_row computed before reached y.
template <class A>
void typical_reach_interval(const typical_key<A>& key, float y, float& first,
                            float& last) noexcept {
    constexpr float inf = std::numeric_limits<float>::infinity();
    const float none = std::numeric_limits<float>::quiet_NaN();
    const std::int64_t top = ordered_image(inf);
    auto first_true = [&](auto&& pred) {  // pred false then true over the images; none: NaN
        const std::int64_t a = first_image_where(ordered_image(neg_inf_f), top + 1, pred);
        return a > top ? none : from_ordered_image(std::int32_t(a));
    };
    first = first_true([&](float v) { return key.centred(v) >= y; });
    const float past = first_true([&](float v) { return key.centred(v) > -y; });
    last = past != past ? inf : past == neg_inf_f ? none : std::nextafter(past, neg_inf_f);
}

/// The split of typical's bracket from the row: split<A, true, true>'s partition (the entries whose
/// key reaches hi join b.above, those in [lo, hi) are compacted with their weights to ids/lg/w from
/// index 0; w holds the row's weights from b.dirty on) with cheaper sums: the weights above hi of
/// two vectors added in float before they are widened to double (as entropy_pass's pairs: one
/// rounding, 2^-24; trees of 8 vectors, 3 2^-24 as nucleus.hpp's weigh_split_row, were as fast on
/// AVX2 but their bound, added to the walk's, sent 3 more of 32 Gaussian rows at T 1.5 to the
/// double pass (7 against 4; pairs: 5)), no w |d| (typical_search bounds theirs from the inner
/// logit range, and sums it, inner_wd, only when that bound leaves the crossing open), the inner
/// logit range (b.inner_lo / inner_hi) not tracked per vector but
/// found afterwards as the logit interval whose keys reach hi (key.centred is nondecreasing in v;
/// that interval holds no entry of the row that is not above: the same cut), and the bracket
/// compacted by simd::compress_store_permuted (no branch per lane on AVX2). Returns the bound of
/// the pairs' rounding on b.above (absolute: 2^-24 of the mass they summed; the walk adds it to its
/// bound). Measured on AVX2 (no AVX-512 on the machine), V 128256, the split alone, before the
/// permuted compress: Gaussian T 1 73 -> 51 us, Zipf T 1 176 -> 63 us, Gaussian T 1.5 90 -> 76 us.
/// hi = +inf (nothing above: the peaked row, whose bracket holds the whole head) skips the sums
/// above (Above false): without that the peaked row's sample() was ~+10 us, with it 170 -> 158 us.
/// The partition is read from logit intervals found before the pass (typical_reach_interval: the
/// same sets as the keys, bit for bit, tested against Keys = true, the per-vector key form kept
/// for NaN bounds and non-finite key parameters): typical 0.9 sample() at V 128256, minima of
/// 10 and 12 alternating runs (two runs), peaked 162/159 -> 155/157, Zipf 211/210 -> 202/204,
/// Gaussian 204/201 -> 193/195, flat 207/204 -> 202/199 us; HF T 1.5 Gaussian 238/229 ->
/// 221/225, flat 210/209 -> 203/203 us (2-7 %). (The w |d| sum it had, 5 operations per
/// vector, cost typical 0.9 5-9 us per row: see typical_search.)
template <class A, bool Above = true, bool Keys = false>
double typical_split_row(std::span<const float> x, float* w, float lo, float hi,
                         const typical_key<A>& key, token_id* ids, float* lg,
                         weighted_bracket& b) noexcept {
    if constexpr (Above)
        if (hi == std::numeric_limits<float>::infinity())  // nothing above: no sums above
            return typical_split_row<A, false, Keys>(x, w, lo, hi, key, ids, lg, b);
    // the intervals need t(v) nondecreasing (finite m, c and 0 < inv_t < inf) and bounds that
    // are not NaN (key < NaN is false where the interval form reads it as "not above")
    if constexpr (!Keys)
        if (!(std::isfinite(key.m) && std::isfinite(key.c) && key.inv_t > 0 &&
              key.inv_t < std::numeric_limits<float>::infinity() && lo == lo && hi == hi))
            return typical_split_row<A, Above, true>(x, w, lo, hi, key, ids, lg, b);
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>, G = 8;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L, fresh = b.dirty;
    const B mb(key.m), tb(key.inv_t), lob(lo), hib(hi), zero(0.f);
    // Keys false: the entries above are the logits [ulo, uhi], those in the bracket [blo, bhi]
    // less [ulo, uhi] (typical_reach_interval), two compares per interval instead of the key
    // (5 operations) and 3 compares per vector
    float ulo = 0, uhi = 0, blo = 0, bhi = 0;
    if constexpr (!Keys) {
        typical_reach_interval(key, hi, ulo, uhi);
        typical_reach_interval(key, lo, blo, bhi);
    }
    const B ulob(ulo), uhib(uhi), blob(blo), bhib(bhi);
    auto split_masks = [&](const B& v) {
        if constexpr (Keys) {
            const B y = key(v);
            return std::pair{y >= hib, (y >= lob) & (y < hib)};
        } else {
            const auto up = (v >= ulob) & (v <= uhib);
            return std::pair{up, simd::batch_bool<A>((v >= blob) & (v <= bhib)) & ~up};
        }
    };
    D a0(0.0), a1(0.0), a2(0.0), a3(0.0);  // the weights above hi (pairs; single vectors)
    B bm(0.f);                             // float blocks: the bracket's weights
    double bmass = 0, tail = 0;
    std::size_t cnt = 0, c = 0;
    // one vector: its weights above hi (0 elsewhere) to `above`, the bracket's part compacted;
    // its weights computed (computed: std::true_type) or read from w
    auto one = [&](auto computed, std::size_t i, B& above) DECODEKIT_ALWAYS_INLINE {
        const B v = B::load_unaligned(p + i);
        const B e = [&] {
            // (the weight as split computes it: the same expression, so the same contraction)
            if constexpr (decltype(computed)::value)
                return weight_lanes<A>(v, mb, tb);
            else
                return B::load_unaligned(w + i);
        }();
        const auto [up, in] = split_masks(v);
        if constexpr (Above) {
            cnt += std::size_t(std::popcount(simd::to_mask<A>(up)));
            above = simd::select<A>(up, e, zero);
        } else {
            above = zero;
        }
        if (const std::uint64_t mi = simd::to_mask<A>(in)) {
            bm += simd::select<A>(in, e, zero);
            c += simd::compress_store_permuted<A>(v, e, simd::iota<A>(token_id(i)), mi, lg + c,
                                                  w + c, ids + c);
        }
    };
    // the whole vectors [i, stop), in blocks of 32 (float sums of <= 32 additions per lane)
    auto blocks = [&](auto computed, std::size_t i, std::size_t stop) DECODEKIT_ALWAYS_INLINE {
        while (i < stop) {
            const std::size_t end = std::min(stop, i + 32 * L);
            for (; i + G * L <= end; i += G * L) {
                B u[G];
                for (std::size_t k = 0; k < G; ++k) one(computed, i + k * L, u[k]);
                if constexpr (Above)
                    for (std::size_t k = 0; k < G; k += 2)
                        simd::widen_add<A>(a0, a1, u[k] + u[k + 1]);
            }
            for (; i < end; i += L) {  // the block's last < 8 vectors, widened one by one
                B u;
                one(computed, i, u);
                if constexpr (Above) simd::widen_add<A>(a2, a3, u);
            }
            bmass += double(simd::reduce_add<A>(bm));
            bm = zero;
        }
    };
    // Two loops: the vectors below b.dirty (where w no longer holds the row's weights: a
    // re-split's first ones, none on a first split) with their weights computed, then the rest
    // with their weights read (recomputed weights are the stored ones bit for bit). Chosen per
    // vector in one loop, the exponential sat in the loop over the whole row, as a call where
    // GCC did not inline it (every vector register is caller-saved), and the code GCC made of
    // that loop depended on the translation unit: in decodekit_bench's (ten large ones; GCC also
    // left `one` a call per vector there) typical 0.9's sample() took 10-20 % longer than in a
    // one-file program on the same rows. With the two loops and `one` always inlined, A/B in
    // decodekit_bench (V 128256, AVX2, minima of 6 alternating runs): Zipf 202 -> 181 us,
    // Gaussian 225 -> 196, flat 204 -> 175; HF T 1.5 Zipf 202 -> 163, Gaussian 216 -> 186,
    // flat 206 -> 185; peaked -1.5 %. The one-file driver: within 2 %.
    const std::size_t recompute = std::min(nfull, (fresh + L - 1) / L * L);
    blocks(std::true_type{}, 0, recompute);
    blocks(std::false_type{}, recompute, nfull);
    std::size_t i = nfull;
    for (; i < n; ++i) {  // the tail, one entry at a time (the same keys and weights)
        const float v = p[i];
        const float y = key(v);
        const float wi = i < fresh ? weight_one<A>(v, key.m, key.inv_t) : w[i];
        if (Keys ? y >= hi : v >= ulo && v <= uhi) {
            tail += double(wi);
            ++cnt;
        } else if (Keys ? y >= lo : v >= blo && v <= bhi) {
            ids[c] = token_id(i);
            lg[c] = v;
            w[c] = wi;
            bmass += double(wi);
            ++c;
        }
    }
    const double pairs = simd::reduce_add<A>(a0 + a1);
    b.mass = bmass;
    b.above += (pairs + simd::reduce_add<A>(a2 + a3)) + tail;
    b.above_count += cnt;
    if (!Keys && cnt > 0) {
        // [ulo, uhi] clamped to [lowest, m] (every entry above lies there): the interval the
        // search below finds
        b.inner_lo = std::min(b.inner_lo, std::max(ulo, lowest_f));
        b.inner_hi = std::max(b.inner_hi, std::min(uhi, key.m));
    } else if (cnt > 0) {
        // [vlo, vhi]: the logits whose key reaches hi, hi <= t(v) <= -hi (t nondecreasing in v;
        // searched over the ordered images of [lowest, m], where every entry above lies)
        auto t_of = [&](float v) { return key.centred(v); };
        auto first_true = [&](auto&& pred) {  // pred false then true over the images
            return from_ordered_image(std::int32_t(
                first_image_where(ordered_image(lowest_f), ordered_image(key.m), pred)));
        };
        const float vlo = first_true([&](float v) { return t_of(v) >= hi; });
        const float past = first_true([&](float v) { return t_of(v) > -hi; });
        const float vhi = t_of(past) > -hi ? std::nextafter(past, neg_inf_f) : past;
        b.inner_lo = std::min(b.inner_lo, vlo);
        b.inner_hi = std::max(b.inner_hi, vhi);
    }
    b.size = c;
    b.lo = lo;
    b.hi = hi;
    // (the compress-stores write up to a vector past the count: that much is no longer the row's)
    b.dirty = std::max(b.dirty, std::min(n, c + L));
    return 0x1p-24 * (1 + 1e-6) * pairs;
}

/// checked_bracket_by (nucleus.hpp) for typical's key, its row splits by typical_split_row,
/// widened in two steps: the bracket [lo, hi) split from the row and checked; a side that fails
/// widens to the wide bound (lo_wide <= lo, hi_wide >= hi: typical_bounds' 2.5 standard
/// deviations; lo_wide >= lowest_f), then to -inf / +inf; then narrowed. above_error: the bound
/// of b.above's pair rounding (typical_split_row's).
template <class A>
weighted_bracket typical_checked_bracket(std::span<const float> x, float* w,
                                         const typical_key<A>& key, double rmass, double z,
                                         double z_error, float lo, float hi, float lo_wide,
                                         float hi_wide, token_id* ids, float* lg,
                                         double& above_error) noexcept {
    return checked_bracket_by<A, true, false>(
        x.size(), w, key.m, key.inv_t, key, rmass, z, z_error, lo_wide, hi_wide, lo, hi, ids, lg,
        [&](float l, float h, weighted_bracket& b) {
            above_error = typical_split_row<A>(x, w, l, h, key, ids, lg, b);
        });
}

/// The bracket of typical's cut: the check-widen-narrow (typical_checked_bracket) from
/// typical_bounds' estimate; above_error as typical_checked_bracket's.
template <class A>
weighted_bracket typical_bracket(std::span<const float> x, float* w, const typical_key<A>& key,
                                 double rmass, double z, double z_error, std::uint64_t* buf,
                                 token_id* ids, float* lg, double& above_error,
                                 const heavy_entries* pre = nullptr) noexcept {
    float lo = lowest_f, hi = std::numeric_limits<float>::infinity(), ilo = lo, ihi = hi;
    typical_bounds<A>(x, w, key, z, rmass, buf, lg, ids, lo, hi, pre, &ilo, &ihi);
    return typical_checked_bracket<A>(x, w, key, rmass, z, z_error, ilo, ihi, lo, hi, ids, lg,
                                      above_error);
}

/// Bounds [lo, hi] of the sum of w |d| over the entries above typical's bracket b
/// (typical_split_row sums none), from their logit interval [b.inner_lo, b.inner_hi]: each |d| = (m
/// - v) / T lies within that of the interval's ends, the weights sum to b.above (1e-6 covers the
/// float d, the pairs' rounding of b.above and fl(1 / T)). Both 0 when nothing is above.
inline std::pair<double, double> typical_above_wd_bounds(const weighted_bracket& b, float m,
                                                         float inv_t) noexcept {
    if (b.above_count == 0) return {0.0, 0.0};
    const double dlo = std::max(0.0, (double(m) - double(b.inner_hi)) * double(inv_t));
    const double dhi = (double(m) - double(b.inner_lo)) * double(inv_t);
    return {b.above * dlo * (1 - 1e-6), b.above * dhi * (1 + 1e-6) + 1e-300};
}

/// The sum of w |d| over the row's entries with logit in [lo, hi] (d = (m - v) * inv_t in float
/// and w its weight_lanes weight; the products in float, summed in float blocks of <= 32
/// additions per lane, the lanes' reduction, then in double: within 1 +- 40 u of the exact sum of
/// those products), and their number in `count`. w: the row's weights from `fresh` on (below,
/// recomputed bit for bit). NaN logits are in no interval. For the entries above typical's
/// bracket (an interval of logits whose keys are finite and >= lowest_f: d finite, w d <= 1 / e)
/// nothing overflows; a sum that did (+inf, NaN) would leave the walk open. typical_search sums
/// them here only when the bound from the interval's ends leaves the crossing open
/// (typical_above_wd_bounds).
template <class A>
double inner_wd(std::span<const float> x, const float* w, std::size_t fresh, float m, float inv_t,
                float lo, float hi, std::size_t& count) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    const B mb(m), tb(inv_t), lob(lo), hib(hi), zero(0.f);
    B acc(0.f);
    double sum = 0;
    std::size_t cnt = 0;
    auto blocks = [&](auto computed, std::size_t i, std::size_t stop) DECODEKIT_ALWAYS_INLINE {
        while (i < stop) {
            const std::size_t end = std::min(stop, i + 32 * L);
            for (; i < end; i += L) {
                const B v = B::load_unaligned(p + i);
                const B e = [&] {
                    if constexpr (decltype(computed)::value)
                        return weight_lanes<A>(v, mb, tb);
                    else
                        return B::load_unaligned(w + i);
                }();
                const auto in = (v >= lob) & (v <= hib);
                cnt += std::size_t(std::popcount(simd::to_mask<A>(in)));
                acc += simd::select<A>(in, e * ((mb - v) * tb), zero);
            }
            sum += double(simd::reduce_add<A>(acc));
            acc = zero;
        }
    };
    // (two loops, as typical_split_row's)
    const std::size_t recompute = std::min(nfull, (fresh + L - 1) / L * L);
    blocks(std::true_type{}, 0, recompute);
    blocks(std::false_type{}, recompute, nfull);
    for (std::size_t i = nfull; i < n; ++i) {
        const float v = p[i];
        if (!(v >= lo && v <= hi)) continue;
        const float wi = i < fresh ? weight_one<A>(v, m, inv_t) : w[i];
        sum += double(wi * ((m - v) * inv_t));
        ++cnt;
    }
    count = cnt;
    return sum;
}

/// The search of typical_cut / typical_unordered (see the file comment); w holds the row's
/// weights from `dirty` on, `out` is scratch.
template <class A>
truncation_result typical_search(std::span<const float> x, float p, float temperature,
                                 std::size_t min_keep, typical_stop stop, candidates& out, float* w,
                                 std::size_t& dirty) noexcept {
    constexpr float pinf = std::numeric_limits<float>::infinity();
    truncation_result r;
    dirty = 0;
    const std::size_t n = x.size();
    const float m = kernels::max<A>(x);
    r.max = m;
    if (m == neg_inf_f) {
        std::fill(w, w + n, 0.f);
        return r;
    }
    const float inv_t = 1.f / temperature;
    auto by_reference = [&](bool have_weights) {
        r.tier = exactness_tier::reference;
        if (!have_weights) {
            r.sum = reference_weights(x, temperature, w);
            dirty = 0;
        }
        r.kept = reference::typical(x, p, temperature, min_keep, stop, out);
        r.cut = interval_cut(x, out);
        r.kept_sum = 0;
        for (std::size_t j = 0; j < r.kept; ++j) {
            const std::size_t i = std::size_t(out.ids()[j]);
            r.kept_sum += double(have_weights ? weight_one<A>(x[i], m, inv_t) : w[i]);
        }
        return r;
    };
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t) || !(temperature > 0))
        return by_reference(false);
    heavy_entries heavy;
    const bool collect = p < 1 && typical_heavy_plan<A>(x, m, inv_t, out.id_storage(), heavy);
    const row_sums rs = collect ? entropy_pass<A, true, true, true>(x, m, temperature, w, &heavy)
                                : entropy_pass<A, true, true>(x, m, temperature, w);
    const double z = rs.sum;
    r.sum = z;
    if (p >= 1) {
        r.cut = {lowest_f, pinf, npos, npos};
        r.kept = count_reaching<A>(x.data(), n, lowest_f);
        r.kept_sum = z;
        return r;
    }
    const bool strict = stop == typical_stop::exceed;
    // the crossing: the first entry whose inclusive mass reaches (exceeds) the target
    const double target = strict ? reference::decimal_ceil(p) : reference::decimal_floor(p);
    const double rmass = std::max(0.0, target) * z;
    const double z_error = rs.error(n) + sum_error(n) * z;
    const weighted_mean mean = mean_of_d(rs, n);
    const double cd = -mean.c;  // c = sum p d (<= 0)
    const double dc = mean.dc;  // its error (entropy.hpp)
    const float cf = float(cd);
    // A float key's error against the reference's score, for entries with |d| <= dmax.
    // (c_error: a bound of |cf - the real c|)
    auto key_error = [&](double dmax, double c_error) {
        return 3.1 * 0x1p-24 * dmax + c_error + 0x1p-24 * (dmax - cd) +
               1e-13 * (dmax + std::fabs(std::log(z)) + 1);
    };
    const double cf_error = dc + std::fabs(cd - double(cf));
    const typical_key<A> key{m, inv_t, cf, float(key_error(std::min(200.0, 20 - cd), cf_error))};
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    double above_error = 0;  // the bound of b.above's float pairs (typical_split_row)
    weighted_bracket b = typical_bracket<A>(x, w, key, rmass, z, z_error, out.key_storage(), ids,
                                            lg, above_error, collect ? &heavy : nullptr);
    // Round 1 (rare): the crossing's key was too close to a bound of the narrowed bracket for
    // the bounds to certainly order the entries outside it; the bracket is then split again
    // from the row around that key, wide enough for the check, and walked again.
    for (int round = 0;; ++round) {
        dirty = b.dirty;
        const std::size_t c = b.size;
        // ---- the walk: the bracket by key descending, then logit descending, then id ----
        std::uint64_t* keys = out.key_storage();  // bracket positions in walk order
        for (std::size_t j = 0; j < c; ++j) keys[j] = j;
        // sorts the bracket by a score (smaller first: the key's negation), then as the reference
        auto sort_by = [&](auto&& score) {
            std::sort(keys, keys + c, [&](std::uint64_t a, std::uint64_t bb) {
                const auto sa = score(a), sb = score(bb);
                if (sa != sb) return sa < sb;
                if (lg[a] != lg[bb]) return lg[a] > lg[bb];
                return a < bb;
            });
        };
        sort_by([&](std::size_t q) { return -key(lg[q]); });
        // The crossing: the first walk position whose inclusive mass reaches (strict: exceeds) the
        // target; `certain` when both of its decisions hold beyond e_mass. kept: the inclusive
        // mass.
        auto walk = [&](auto&& weight_of, auto&& d_of, double above, double total, auto&& e_mass,
                        std::size_t& q_end, bool& certain_out) {
            const double goal = target * total;
            double before = above, wd_before = 0;
            for (std::size_t j = 0; j < c; ++j) {
                const std::size_t q = std::size_t(keys[j]);
                const double wj = weight_of(q);
                const bool reached = strict ? before + wj > goal : before + wj >= goal;
                if (reached) {
                    const double wdj = wj * d_of(q);
                    const double r1 = before / total, r2 = (before + wj) / total;
                    const double e1 = e_mass(before, wd_before),
                                 e2 = e_mass(before + wj, wd_before + wdj);
                    certain_out = strict ? (r1 + e1 <= target && r2 - e2 > target)
                                         : (r1 + e1 < target && r2 - e2 >= target);
                    q_end = j;
                    return before + wj;
                }
                before += wj;
                wd_before += wj * d_of(q);
            }
            certain_out = false;
            q_end = c;
            return before;
        };
        std::size_t qc = c;
        bool certain = false;
        // The walk in float weights (mass decisions against the float pass's bounds). The w |d|
        // of the entries above (their weights' error, arg_error |d| relative) is first bounded
        // from their logit interval (typical_above_wd_bounds). Only when that leaves the crossing
        // open, and the walk with the interval's ends swapped (the bound's smallest for any sum
        // within it: the prefix's error grows with its w |d| and the rest's shrinks) would close
        // it, is the sum taken (inner_wd, one read pass) and the walk run again. The interval's
        // bound is up to ~1.5x the sum on Gaussian rows at T 1 (d from ~1.6 to ~5 around c ~ 3.3)
        // and alone left the float walk open on 11 % more of them (V 128256, 200 rows: 37
        // against 15 to the double pass); the pass runs on 4 of salts 0-39 at T 1, 5 at T 1.5,
        // none elsewhere. Summed in the split instead (5 operations per vector), it cost every
        // row: typical 0.9 sample() Gaussian T 1 183 -> 176 us without it, Zipf 169 -> 159.
        auto float_walk_with = [&](double wd_lo, double wd_hi) {
            return walk(
                [&](std::size_t q) { return double(w[q]); },
                [&](std::size_t q) { return std::min(200.0, double(m - lg[q]) * double(inv_t)); },
                b.above, z,
                [&](double bm, double wdb) {
                    // + the paired pass's rounding of z (pair_error relative), which moves z
                    // alone, and the split's float pairs in b.above (above_error), which move
                    // the prefix alone (the rest of bm is an exact double sum of float weights)
                    return prefix_ratio_error(bm, wd_lo + wdb, wd_hi + wdb * (1 + 1e-6), n, z,
                                              rs.wd_bound, n) +
                           bm / z * rs.pair_error * (1 + 1e-6) + above_error / z * (1 + 1e-6);
                },
                qc, certain);
        };
        bool wd_summed = false;
        double wd_above = 0;
        auto float_walk = [&] {
            if (!wd_summed) {
                const auto [wd_lo, wd_hi] = typical_above_wd_bounds(b, m, inv_t);
                const double kept = float_walk_with(wd_lo, wd_hi);
                if (certain || qc >= c || b.above_count == 0) return kept;
                float_walk_with(wd_hi, wd_lo);  // (the ends swapped: no sum would close it)
                if (!certain) return kept;
                std::size_t cnt = 0;
                wd_above = inner_wd<A>(x, w, b.dirty, m, inv_t, b.inner_lo, b.inner_hi, cnt);
                wd_summed = true;
                // (a count that is not the split's: no w |d| to rely on, the walk stays open)
                if (cnt != b.above_count) wd_above = std::numeric_limits<double>::quiet_NaN();
            }
            return float_walk_with(wd_above * (1 - 128 * 0x1p-24),
                                   wd_above * (1 + 128 * 0x1p-24) + 1e-300);
        };
        double kept_sum = float_walk();
        // Order and boundary checks on the float keys (see the file comment).
        auto order_certain = [&](std::size_t q_last, double e) {
            const std::size_t qpos = std::size_t(keys[q_last]);
            const float yc = key(lg[qpos]), xc = lg[qpos];
            // the bracket's bounds: inner entries certainly before, outer ones certainly after
            if (!(double(b.hi) - double(yc) > 2 * e)) return false;
            if (b.lo > lowest_f && !(double(yc) - double(b.lo) > 2 * e)) return false;
            // An entry on the crossing's side of c (d - c of one sign: certain where |key| > e)
            // is ordered against it by its logit whatever c's error (the key is monotone in the
            // logit on each side, so distinct float keys are in the real order), unless the
            // reference's own rounding (ref_e) could tie the two scores; only an entry across c
            // needs its key 2 e away from the crossing's.
            const bool sided = double(yc) < -4 * e;
            const double side_q = double(lg[qpos] - m) * double(inv_t) - double(cf);
            const double ref_e =
                1e-12 * (std::fabs(double(yc)) + std::fabs(cd) + std::fabs(std::log(z)) + 1);
            for (std::size_t j = 0; j < c; ++j) {
                const std::size_t q = std::size_t(keys[j]);
                if (q == qpos || lg[q] == xc) continue;
                const float yq = key(lg[q]);
                if (!(std::fabs(double(yq) - double(yc)) <= 2 * e)) continue;
                const double side = double(lg[q] - m) * double(inv_t) - double(cf);
                const bool same_side = sided && (side < 0) == (side_q < 0);
                if (!same_side || yq == yc ||
                    !(std::fabs(double(lg[q]) - double(xc)) / double(temperature) > 2 * ref_e))
                    return false;
            }
            return true;
        };
        std::size_t q_last = qc;  // walk position of the last kept entry
        // the tie rule: every entry of the crossing's logit (equal scores) is kept
        auto extend_ties = [&] {
            q_last = qc;
            if (!strict)
                while (q_last + 1 < c && lg[keys[q_last + 1]] == lg[keys[qc]]) {
                    ++q_last;
                    kept_sum += double(w[std::size_t(keys[q_last])]);
                }
        };
        // Whether the crossing's key lies too close to a bound of the bracket for the bounds to
        // order the entries outside it; if so, the bracket split again from the row around it
        // (2 pad + the keys' margin either side: the bound checks then hold for this crossing).
        auto resplit_near_bound = [&] {
            const float yc = key(lg[std::size_t(keys[q_last])]);
            const double pad = 2 * key_error(-cd - double(yc) + 1e-6, cf_error);
            const bool near_hi = !(double(b.hi) - double(yc) > pad);
            const bool near_lo = b.lo > lowest_f && !(double(yc) - double(b.lo) > pad);
            if (!near_hi && !near_lo) return false;
            const double wide = 2 * pad + double(key.margin());
            const float lo2 =
                b.lo > lowest_f ? std::max(lowest_f, float(double(yc) - wide)) : lowest_f;
            const float hi2 = std::max(float(double(yc) + wide), std::nextafter(yc, pinf));
            const std::size_t was_dirty = b.dirty;
            b = {};
            b.dirty = was_dirty;
            above_error = typical_split_row<A>(x, w, lo2, hi2, key, ids, lg, b);
            r.tier = exactness_tier::float_bound;
            return true;
        };
        bool order_failed = false;
        if (qc < c) {
            extend_ties();
            if (round == 0 && certain && resplit_near_bound()) continue;
            const double dmax = -cd - double(key(lg[keys[qc]])) + 1e-6;
            if (certain && !order_certain(q_last, key_error(dmax, cf_error))) {
                certain = false;
                order_failed = true;
            }
        }
        // The bracket re-sorted by double scores |d - c2| (d from the logit in double; c2 within
        // dc2 of the real c), the float weights' walk again in that order and its order and bound
        // checks: true when they hold (`certain`).
        auto double_key_walk = [&](double cd2, double dc2) {
            auto dkey = [&](std::size_t q) {
                return std::fabs((double(lg[q]) - double(m)) / double(temperature) - cd2);
            };
            sort_by(dkey);
            kept_sum = float_walk();
            if (!certain || qc >= c) return false;
            extend_ties();
            const std::size_t qpos = std::size_t(keys[q_last]);
            const double kc = dkey(qpos);
            // the double scores' error: c's, and the arithmetic's (as the double tier's)
            const double ed = dc2 + 1e-12 * (kc + std::fabs(cd2) + std::fabs(std::log(z)) + 1);
            for (std::size_t j = 0; j < c; ++j) {
                const std::size_t q = std::size_t(keys[j]);
                if (q != qpos && lg[q] != lg[qpos] && std::fabs(dkey(q) - kc) <= 2 * ed)
                    return false;
            }
            // the bracket's bounds (float keys, their c error now through cd2's bound)
            const float yc = key(lg[qpos]);
            const double ef = key_error(-cd - double(yc) + 1e-6,
                                        std::min(cf_error, std::fabs(cd2 - double(cf)) + dc2));
            if (!(double(b.hi) - double(yc) > 2 * ef)) return false;
            if (b.lo > lowest_f && !(double(yc) - double(b.lo) > 2 * ef)) return false;
            return true;
        };
        if (order_failed) {
            // The float keys' own rounding (of d, of cf and of d - c) is about half of their
            // bound (c's error dc the rest): first the same c (cd, within dc) with the bracket's
            // scores in double, no pass. (Gaussian rows at T 1.5, V 128256, 25 rows: the float
            // keys left the order open on 6, these double scores decided 2 of them, the
            // benchmark's row among them: ~30 us, the compensated pass, less.)
            certain = double_key_walk(cd, dc);
        }
        if (order_failed && !certain) {
            // Compensated float tier (entropy.hpp): c from the weights with every argument's
            // rounding recovered (one pass, no exponential where the row's weights are kept), the
            // bracket's scores in double from it; the float weights' walk again in that order.
            const corrections k = compensate<A>(x, m, temperature, w, dirty);
            const weighted_mean mc =
                k.valid ? mean_of_d(unpaired_sums(rs, k, n), n, k) : weighted_mean{};
            certain = k.valid && mc.dc < dc && double_key_walk(-mc.c, mc.dc);
            // (a read pass over the row and its weights recovering the arguments' rounding, as
            // top-p's corrected tier: reported as that tier)
            if (certain) r.tier = exactness_tier::corrected;
        }
        if (!certain && qc < c) {
            // the double pass: Z, c and the inner mass in double; the bracket's keys and weights
            // too
            r.tier = exactness_tier::double_pass;
            const float hi = b.hi;
            const double_sums ds = double_pass<A>(
                x, m, temperature,
                [&](const simd::batch<A>& v, std::size_t) { return key(v) >= simd::batch<A>(hi); });
            const double zd = ds.sum, c2 = -ds.wd / zd;
            // re-sort the bracket by the double keys
            auto dkey = [&](std::size_t q) {
                return std::fabs((double(lg[q]) - double(m)) / double(temperature) - c2);
            };
            std::sort(keys, keys + c, [&](std::uint64_t a, std::uint64_t bb) {
                const double ka = dkey(a), kb = dkey(bb);
                if (ka != kb) return ka < kb;
                if (lg[a] != lg[bb]) return lg[a] > lg[bb];
                return a < bb;
            });
            const double e = 2 * ds.error(n) / zd + reference_error(n);
            double fbefore = 0;
            walk([&](std::size_t q) { return reference::weight(lg[q], m, temperature); },
                 [](std::size_t) { return 0.0; }, ds.in_set, zd, [&](double, double) { return e; },
                 qc, certain);
            if (qc < c) {
                q_last = qc;
                if (!strict)
                    while (q_last + 1 < c && lg[keys[q_last + 1]] == lg[keys[qc]]) ++q_last;
                // order: the double keys' error (~1e-12 of their magnitude), the bounds: the
                // float's
                const std::size_t qpos = std::size_t(keys[q_last]);
                const double kcd = dkey(qpos),
                             ed = 1e-12 * (kcd + std::fabs(c2) + std::fabs(std::log(zd)) + 1);
                for (std::size_t j = 0; certain && j < c; ++j) {
                    const std::size_t q = std::size_t(keys[j]);
                    if (q != qpos && lg[q] != lg[qpos] && std::fabs(dkey(q) - kcd) <= 2 * ed)
                        certain = false;
                }
                const double dmax = -cd - double(key(lg[qpos])) + 1e-6;
                const double ef = key_error(dmax, cf_error);
                const float yc = key(lg[qpos]);
                if (!(double(b.hi) - double(yc) > 2 * ef)) certain = false;
                if (b.lo > lowest_f && !(double(yc) - double(b.lo) > 2 * ef)) certain = false;
                // the kept weights' sum in float weights
                fbefore = b.above;
                for (std::size_t j = 0; j <= q_last; ++j)
                    fbefore += double(w[std::size_t(keys[j])]);
                kept_sum = fbefore;
            } else {
                certain = false;
            }
        }
        if (!certain && round == 0 && qc < c && resplit_near_bound()) continue;
        if (!certain) return by_reference(true);
        // the kept set: the inner entries and the walked bracket entries through q_last
        float lo = b.inner_lo, hi = b.inner_hi;
        for (std::size_t j = 0; j <= q_last; ++j) {
            const float v = lg[keys[j]];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        r.cut = {lo, hi, npos, npos};
        if (strict) {
            // the crossing's group is kept up to the crossing's id (id ascending within a logit)
            const std::size_t qpos = std::size_t(keys[qc]);
            const float xc = lg[qpos];
            bool whole = true;
            for (std::size_t j = qc + 1; j < c; ++j)
                if (lg[keys[j]] == xc) whole = false;
            if (!whole) {
                if (xc == lo) r.cut.lo_last = std::size_t(ids[qpos]);
                if (xc == hi) r.cut.hi_last = std::size_t(ids[qpos]);
            }
        }
        r.kept = b.above_count + q_last + 1;
        r.kept_sum = kept_sum;
        if (r.kept < min_keep && r.kept < count_reaching<A>(x.data(), n, lowest_f))
            return by_reference(true);  // min_keep binds: the reference (rare configuration)
        return r;
    }
}

/// typical_cut (Compact false: the cut, every entry's weight restored) and typical_unordered
/// (Compact: the kept set compacted to out with its weights).
template <class A, bool Compact>
truncation_result typical_run(std::span<const float> x, float p, float temperature,
                              std::size_t min_keep, typical_stop stop, candidates& out,
                              std::span<float> weights) noexcept {
    if (const truncation_result s = detail::sized(x, out, weights); !s.ok() || x.empty()) return s;
    std::size_t dirty = 0;
    truncation_result r =
        typical_search<A>(x, p, temperature, min_keep, stop, out, weights.data(), dirty);
    if constexpr (Compact) {
        if (r.max == neg_inf_f) return r;
        double sum = 0;
        const bool finite = std::isfinite(r.max);
        r.kept = compact_cut_from<A>(x, weights.data(), r.cut, finite ? r.max : 0.f,
                                     finite ? 1.f / temperature : 1.f, out, dirty, sum);
        r.kept_sum = sum;
    } else {
        if (dirty > 0) store_weights<A>(x.data(), dirty, r.max, 1.f / temperature, weights.data());
        out.clear();
    }
    return r;
}

}  // namespace detail

/// Locally typical sampling at temperature T as a cut over the row: the set of
/// reference::typical(x, p, T, min_keep, stop) (scores |-log p_i - H|; reach_with_ties: the
/// prefix through the first entry whose inclusive mass reaches decimal_floor(p) and every entry
/// with that entry's score (Hugging Face); exceed: the prefix through the first entry whose
/// inclusive mass exceeds decimal_ceil(p) (llama.cpp); at least min(min_keep, #valid); p >= 1
/// every valid entry) as truncation_result::cut (an interval of logits), weights every entry's
/// weight (see top_p_cut; the file comment for the method). Status bad_size when
/// scratch.capacity() or weights.size() < x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result typical_cut(std::span<const float> x, float p, float temperature,
                              std::size_t min_keep, typical_stop stop, candidates& scratch,
                              std::span<float> weights) noexcept {
    return detail::typical_run<A, false>(x, p, temperature, min_keep, stop, scratch, weights);
}

/// Locally typical sampling, unordered: the set of typical_cut written to `out` in id order (one
/// compaction pass), weights[0, kept) the kept entries' weights. See typical_cut.
template <class A = simd::default_arch>
truncation_result typical_unordered(std::span<const float> x, float p, float temperature,
                                    std::size_t min_keep, typical_stop stop, candidates& out,
                                    std::span<float> weights) noexcept {
    return detail::typical_run<A, true>(x, p, temperature, min_keep, stop, out, weights);
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
