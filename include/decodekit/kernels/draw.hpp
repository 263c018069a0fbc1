#pragma once
/// \file kernels/draw.hpp
/// Categorical draws: inverse CDF over unnormalised weights, exponential race over logits, and
/// the exact temperature draw with no exponential per entry (draw_temperature; optionally
/// restricted to the entries reaching a logit threshold, such as min-p's, and to the tokens a
/// token_bitmask allows). Semantics: kernels/reference.hpp.
///
/// draw_inverse_cdf: no random words (the caller passes u); one SIMD pass storing the sums of
/// the positive weights of <= 1024 blocks (>= 256 entries each) in double lanes (every float
/// widened to double, so each is the exact double sum up to reassociation), a walk over the
/// block sums, and a sequential double scan inside the one block where the target u * S falls.
/// Agreement with the reference: both sum the same floats in double, in a different order; the
/// partial sums differ by at most a few ulp of S (~1e-15 S), so the chosen index is the reference's
/// unless u * S lies within ~1e-12 S of a boundary of the cumulative sum (tested).
/// block_sums / sum_blocks / draw_block_sums / draw_blocked: inverse-CDF draws over weights that
/// are never stored (a caller writes a block of them on demand: a speculative rejection's
/// residual max(0, p - q), a cut of a row): the sums of blocks of 512 weights built once, then
/// any number of draws from them, each a walk of at most 64 sums and one block scanned. Same
/// rule as draw_inverse_cdf; the chosen entry follows the block sums the caller gives.
/// draw_exponential_race: exactly 2 random words per entry (2 * x.size() per draw, NaN / -inf
/// entries included, so the stream position after a draw never depends on the logits); equal to
/// reference::draw_exponential_race(x, T, rng) by construction (same weights and exponentials in
/// double). Parity / testing only: it needs V random numbers and V logarithms.

#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/random.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
namespace detail {

/// Double sum of the positive entries of w[begin, end) (whole batches), in double lanes.
template <class A>
double positive_sum(const float* w, std::size_t begin, std::size_t end) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B zero(0.f);
    D a0(0.0), a1(0.0), a2(0.0), a3(0.0);
    std::size_t i = begin;
    for (; i + 2 * L <= end; i += 2 * L) {
        const B v0 = B::load_unaligned(w + i), v1 = B::load_unaligned(w + i + L);
        simd::widen_add<A>(a0, a1, simd::select<A>(v0 > zero, v0, zero));  // NaN, <= 0: 0
        simd::widen_add<A>(a2, a3, simd::select<A>(v1 > zero, v1, zero));
    }
    for (; i < end; i += L) {
        const B v = B::load_unaligned(w + i);
        simd::widen_add<A>(a0, a1, simd::select<A>(v > zero, v, zero));
    }
    return simd::reduce_add<A>((a0 + a1) + (a2 + a3));
}

/// Exact inverse-CDF draw from softmax(x / T) restricted to the entries of r[0, n) reaching t,
/// with the reference's double weights (two passes, an exponential per entry, 2 random words);
/// npos if no such entry has weight. \pre m = max of r, finite.
template <class Row>
std::size_t draw_exact(const Row r, std::size_t n, float m, float temperature, float t,
                       rng_stream& rng) noexcept {
    auto w = [&](std::size_t i) {
        const float v = r.at(i);
        return v >= t ? reference::weight(v, m, temperature) : 0.0;
    };
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += w(i);
    const double target = rng.uniform() * s;
    if (!(s > 0)) return npos;
    double run = 0;
    std::size_t last = npos;
    for (std::size_t i = 0; i < n; ++i) {
        const double wi = w(i);
        if (!(wi > 0)) continue;
        run += wi;
        last = i;
        if (run > target) return i;
    }
    return last;
}

/// Top-2 of the lane-strided block r[first], r[first + L], ... below end: its max m1 (first index
/// a of it), and m2, the largest of the others (m1 again when the max is tied). Branch-free, two
/// independent chains; NaN entries are ignored.
template <std::size_t L, class Row>
void block_top2(const Row& r, std::size_t first, std::size_t end, float& m1, float& m2,
                std::size_t& a) noexcept {
    float p1 = neg_inf_f, p2 = neg_inf_f, q1 = neg_inf_f, q2 = neg_inf_f;
    std::size_t pa = first, qa = first;
    auto step = [](float v, std::size_t i, float& t1, float& t2, std::size_t& ta) {
        const bool gt = v > t1;
        const float lo = v > t2 ? v : t2;
        t2 = gt ? t1 : lo;
        ta = gt ? i : ta;
        t1 = gt ? v : t1;
    };
    std::size_t i = first;
    for (; i + L < end; i += 2 * L) {
        step(r.at(i), i, p1, p2, pa);
        step(r.at(i + L), i + L, q1, q2, qa);
    }
    if (i < end) step(r.at(i), i, p1, p2, pa);
    if (q1 > p1) {
        m1 = q1;
        m2 = p1 > q2 ? p1 : q2;
        a = qa;
    } else {
        m1 = p1;
        m2 = q1 > p2 ? q1 : p2;
        a = pa;
    }
}

/// The envelope-rejection draw of kernels::draw_temperature over r[0, n) (see its comment).
template <class A, class Row>
std::size_t draw_envelope(const Row r, std::size_t n, float temperature,
                          const reference::logit_threshold& thr, rng_stream& rng) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    constexpr std::size_t max_blocks = 2048;
    constexpr std::size_t group = 16;  // chunks per group of the proposals' 3-level search
    static_assert(max_blocks % L == 0);
    if (n == 0) return npos;
    std::size_t g = 16;
    int lg = 4;
    while ((n + L * g - 1) / (L * g) * L > max_blocks) {
        g *= 2;
        ++lg;
    }
    const std::size_t chunk = L * g, nq = (n + chunk - 1) / chunk, nb = nq * L;
    alignas(64) float bmax[max_blocks + 64];
    for (std::size_t q = 0; q < nq; ++q) {
        const std::size_t base = q * chunk, e = std::min(n, base + chunk);
        std::size_t i = base;
        B a0(neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
        for (; i + 4 * L <= e; i += 4 * L) {
            a0 = simd::max_ignore_nan<A>(a0, r.load(i));
            a1 = simd::max_ignore_nan<A>(a1, r.load(i + L));
            a2 = simd::max_ignore_nan<A>(a2, r.load(i + 2 * L));
            a3 = simd::max_ignore_nan<A>(a3, r.load(i + 3 * L));
        }
        for (; i + L <= e; i += L) a0 = simd::max_ignore_nan<A>(a0, r.load(i));
        float* bm = bmax + q * L;
        simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3)).store_aligned(bm);
        for (; i < e; ++i) {  // the row's last partial vector: lane (i - base) % L
            float& t = bm[(i - base) % L];
            const float v = r.at(i);
            t = v > t ? v : t;
        }
    }
    B mv(neg_inf_f);  // no NaN in bmax: the maxima ignore NaN
    for (std::size_t b = 0; b < nb; b += L) mv = simd::max<A>(mv, B::load_aligned(bmax + b));
    const float m = simd::reduce_max<A>(mv);
    if (m == neg_inf_f) return npos;
    const float t = reference::threshold_value(m, thr);
    if (!(t <= m)) return npos;  // a NaN threshold, or one above every entry: nothing kept
    if (std::isinf(m)) {         // uniform over the +inf entries (all reach any threshold <= m)
        std::size_t c = 0;
        for (std::size_t i = 0; i < n; ++i) c += r.at(i) == m;
        std::size_t k = std::min(c - 1, std::size_t(rng.uniform() * double(c)));
        for (std::size_t i = 0; i < n; ++i)
            if (r.at(i) == m && k-- == 0) return i;
        return npos;
    }
    const float inv_t = 1.f / temperature;
    // (M_b - m) * inf would be 0 * inf = NaN for the max's block: no usable envelope.
    if (!detail::float_inv_temperature(inv_t)) return draw_exact(r, n, m, temperature, t, rng);
    // Heights: exp((M_b - m)/T) for blocks whose max reaches t, 0 (no mass) for the others;
    // a chunk's blocks are one vector of heights, summed into the chunk's total.
    const B mb(m), tb(inv_t), thb(t);
    B zv(0.f);
    constexpr std::size_t max_chunks = max_blocks / L;
    float ctot[max_chunks];  // per chunk: the float sum of its heights
    for (std::size_t q = 0; q < nq; ++q) {
        const B bm = B::load_aligned(bmax + q * L);
        const B h = simd::select<A>(bm >= thb, simd::exp_nonpositive<A>((bm - mb) * tb), B(0.f));
        h.store_aligned(bmax + q * L);
        zv += h;
        ctot[q] = simd::reduce_add<A>(h);
    }
    // zlow: the sum of the heights, about the weight of the blocks' max entries (<= Z, the row's
    // mass, up to the heights' rounding).
    const float zlow = simd::reduce_add<A>(zv);
    // Refinement: a block whose mass is one dominant entry costs ~g proposals per visit. A block's
    // max entry a_b gets its own exact envelope hA_b = w(M_b) and the block's other entries
    // hB_b = w(M2_b) (M2_b the largest of them; 0 when it is below t). A refinement (a strided
    // scan of g entries, about g / 64 proposals' time) saves about (g - 1) h_b / Z >= what it
    // costs when h_b >= zlow / 64 (as Z >= zlow, this refines a little more than it saves on rows
    // whose mass is not at the blocks' maxima); at most 64 blocks qualify.
    constexpr std::size_t max_refined = 64;
    const float bar = zlow * (1.f / 64.f);
    std::size_t rb[max_refined], ra[max_refined], nr = 0;
    for (std::size_t b = 0; b < nb && nr < max_refined; b += L) {
        const B h = B::load_aligned(bmax + b);
        if (!simd::any<A>(h >= B(bar))) continue;
        for (std::size_t j = b; j < b + L && nr < max_refined; ++j)
            if (bmax[j] >= bar && bmax[j] > 0) rb[nr++] = j;
    }
    double ra_w[max_refined], rb_w[max_refined];
    std::uint8_t refined[max_blocks] = {};  // slot + 1 of a refined block, else 0
    for (std::size_t k = 0; k < nr; ++k) {
        const std::size_t b = rb[k], first = b / L * chunk + b % L;
        float m1 = neg_inf_f, m2 = neg_inf_f;
        block_top2<L>(r, first, std::min(n, first + chunk - b % L), m1, m2, ra[k]);
        ra_w[k] = reference::weight(m1, m, temperature);
        rb_w[k] = m2 >= t ? reference::weight(m2, m, temperature) : 0.0;
        refined[b] = std::uint8_t(k + 1);
    }
    // A block's mass: g h_b inflated by 3e-5 (the float exp's error), or a refined block's
    // hA_b + g hB_b; a proposal sums its chunk's block masses in block order (double).
    const double gscale = (1.0 + 3e-5) * double(g);
    auto mass = [&](std::size_t j) {
        const std::size_t k = refined[j];
        return k ? ra_w[k - 1] + double(g) * rb_w[k - 1] : double(bmax[j]) * gscale;
    };
    // Chunk masses: the float sum of its heights scaled and raised by L 2^-22 (>= the double sum
    // of its block masses, a float sum of L terms erring by < L 2^-24), so the proposal's running
    // sum never overshoots its chunk (the gap, < 1e-5 of it, is a rejected proposal); a chunk with
    // a refined block sums its masses exactly. Chunks' masses as running sums within each group
    // of 16 chunks, and the groups' totals accumulated: a proposal finds its group and chunk by
    // counting the sums <= the target (branch-free; O(groups + 16) per proposal).
    double cm[max_chunks];
    const double craise = gscale * (1.0 + double(L) * 0x1p-22);
    for (std::size_t q = 0; q < nq; ++q) cm[q] = double(ctot[q]) * craise;
    for (std::size_t k = 0; k < nr; ++k) {
        const std::size_t q = rb[k] / L;
        double s = 0;
        for (std::size_t j = q * L; j < q * L + L; ++j) s += mass(j);
        cm[q] = s;
    }
    const std::size_t ng = (nq + group - 1) / group;
    double ccum[max_chunks + group], gcum[max_chunks / group + 1];
    double total = 0;
    for (std::size_t c = 0; c < ng; ++c) {
        double run = 0;
        for (std::size_t q = c * group; q < c * group + group; ++q) {
            run += q < nq ? cm[q] : 0.0;
            ccum[q] = q < nq ? run : std::numeric_limits<double>::infinity();  // never counted
        }
        total += run;
        gcum[c] = total;
    }
    if (!(total > 0)) return draw_exact(r, n, m, temperature, t, rng);  // defensive
    const std::size_t max_proposals = std::max<std::size_t>(64 * g, 4096);
    for (std::size_t proposal = 0; proposal < max_proposals; ++proposal) {
        const double u0 = rng.uniform();
        const double target = u0 * total;
        const std::size_t slot = std::size_t(rng() >> (32 - lg));
        const double u = rng.uniform();
        // The first group whose running sum exceeds the target, then the first chunk of it, then
        // the first block of that chunk whose running mass exceeds the rest (a block of mass 0
        // never does). When rounding leaves a target unreached, the proposal is rejected.
        std::size_t c = 0;
        for (std::size_t k = 0; k < ng; ++k) c += gcum[k] <= target;
        if (c == ng) continue;
        const double rest1 = target - (c ? gcum[c - 1] : 0.0);
        std::size_t dq = 0;
        for (std::size_t k = 0; k < group; ++k) dq += ccum[c * group + k] <= rest1;
        const std::size_t q = c * group + dq;
        if (dq == group || q >= nq) continue;
        // The first block of the chunk whose running mass exceeds the rest (a block of mass 0
        // never does); past the chunk's blocks (its mass's gap): rejected.
        const double rest = rest1 - (dq ? ccum[q - 1] : 0.0);
        double run = 0, before = 0;
        std::size_t b = q * L;
        for (; b < q * L + L; ++b) {
            before = run;
            run += mass(b);
            if (run > rest) break;
        }
        if (b == q * L + L) continue;
        std::size_t i = b / L * chunk + b % L + L * slot;
        double e = double(bmax[b]) * (1.0 + 3e-5);
        if (const std::size_t k = refined[b]) {
            // Component A (the max entry) for the first hA_b of the block's mass, else B.
            if (rest - before < ra_w[k - 1]) i = ra[k - 1];
            e = (i == ra[k - 1] ? ra_w[k - 1] : 0.0) + rb_w[k - 1];
        }
        if (i >= n || !(e > 0)) continue;
        const float v = r.at(i);
        if (!(v >= t)) continue;  // below the threshold, NaN or disallowed: weight 0
        if (u * e < reference::weight(v, m, temperature)) return i;
    }
    return draw_exact(r, n, m, temperature, t, rng);  // bounded loop: still exact
}

}  // namespace detail

/// Inverse-CDF draw from unnormalised non-negative weights with one uniform u in [0, 1): the
/// first index whose running sum exceeds u * S among entries with w > 0 (the last such entry if
/// rounding leaves u * S unreached); npos if no weight is positive. Consumes no random words.
template <class A = simd::default_arch>
std::size_t draw_inverse_cdf(std::span<const float> w, double u) noexcept {
    constexpr std::size_t L = simd::lanes<A>;
    constexpr std::size_t max_blocks = 1024;
    const float* p = w.data();
    const std::size_t n = w.size(), nfull = n / L * L;
    // Block size: a multiple of 64 (so of every lane count) giving at most 1024 blocks.
    const std::size_t blk = std::max<std::size_t>(256, (n / max_blocks + 64) / 64 * 64);
    double bsum[max_blocks];
    std::size_t nb = 0;
    double s = 0;
    for (std::size_t i = 0; i < nfull; i += blk, ++nb) {
        bsum[nb] = detail::positive_sum<A>(p, i, std::min(nfull, i + blk));
        s += bsum[nb];
    }
    for (std::size_t i = nfull; i < n; ++i)
        if (p[i] > 0) s += p[i];
    if (!(s > 0)) return npos;
    const double target = u * s;
    double run = 0;
    auto scan = [&](std::size_t b, std::size_t e) {
        for (std::size_t i = b; i < e; ++i) {
            if (!(p[i] > 0)) continue;
            run += p[i];
            if (run > target) return i;
        }
        return npos;
    };
    for (std::size_t b = 0; b < nb; ++b) {
        if (run + bsum[b] > target) {
            const std::size_t i = b * blk;
            if (const std::size_t hit = scan(i, std::min(nfull, i + blk)); hit != npos) return hit;
        } else {
            run += bsum[b];
        }
    }
    if (const std::size_t hit = scan(nfull, n); hit != npos) return hit;
    for (std::size_t j = n; j-- > 0;)  // target unreached: the last positive entry
        if (p[j] > 0) return j;
    return npos;
}

/// The block sums of n non-negative weights that are never stored (a caller computes them
/// blockwise: the residual max(0, p - q) of a speculative rejection, a cut of a row), for
/// inverse-CDF draws over them with draw_block_sums: built once (sum_blocks, or the caller writes
/// sums[] and calls finish()), then drawn from any number of times, each draw a walk of at most
/// max_blocks / group + group sums and one block of weights scanned. sums[b] is the sum of the
/// weights of block b, [b block, min(n, (b + 1) block)); total is the sum of every block's sum
/// in block order (a NaN one makes it NaN: nothing is drawn); the walk skips blocks whose sum is
/// not positive. ~8.5 KB: a caller keeps one on its stack (uninitialised storage: no cost until
/// it is built). Only n <= 524 288 weights fit (fits(n)): for more, sum_blocks returns false and
/// finish() leaves s empty, without writing past sums[] (draw_blocked walks recomputed sums).
struct block_sums {
    static constexpr std::size_t block = 512;        ///< entries per block
    static constexpr std::size_t max_blocks = 1024;  ///< blocks kept: n <= 524 288
    static constexpr std::size_t group = 32;         ///< blocks per group of the walk's first level

    std::size_t n = 0;        ///< weights covered
    std::size_t count = 0;    ///< blocks: blocks(n)
    std::size_t last = npos;  ///< the last block whose sum is positive (npos: none)
    double total = 0;         ///< the block sums' total, in block order
    double sums[max_blocks];  ///< sums[0, count): the block sums
    /// ends[g]: the walk's running sum (positive block sums in block order) after group g, the
    /// blocks [g group, (g + 1) group)
    double ends[max_blocks / group];

    /// Blocks of n weights.
    static constexpr std::size_t blocks(std::size_t n) noexcept { return (n + block - 1) / block; }
    /// Whether the sums of n weights can be kept.
    static constexpr bool fits(std::size_t n) noexcept { return n <= block * max_blocks; }
    /// Entries of block b.
    std::size_t size_of(std::size_t b) const noexcept { return std::min(block, n - b * block); }
    /// Sets n and the totals (total, last, ends) from sums[0, blocks(n)), which the caller wrote.
    /// n that does not fit leaves s empty (n 0, total 0, no block: every draw gives npos).
    void finish(std::size_t weights) noexcept {
        n = fits(weights) ? weights : 0;
        count = blocks(n);
        total = 0;
        last = npos;
        double run = 0;
        for (std::size_t b = 0; b < count; ++b) {
            const double s = sums[b];
            total += s;
            if (s > 0) {
                run += s;
                last = b;
            }
            if (b % group == group - 1 || b + 1 == count) ends[b / group] = run;
        }
    }
};

/// Builds s over n weights: sums[b] = block_sum(b * block_sums::block, count of block b), called
/// once per block in ascending order, then s.finish(n); true. n that does not fit
/// (block_sums::fits): false, block_sum is not called and s is left empty (draws give npos).
template <class Sum>
bool sum_blocks(std::size_t n, Sum&& block_sum, block_sums& s) noexcept {
    if (!block_sums::fits(n)) {
        s.finish(n);
        return false;
    }
    const std::size_t nb = block_sums::blocks(n);
    for (std::size_t b = 0; b < nb; ++b)
        s.sums[b] = block_sum(b * block_sums::block,
                              std::min(block_sums::block, n - b * block_sums::block));
    s.finish(n);
    return true;
}

namespace detail {
/// The walk of an inverse-CDF draw over block sums sum_at(b) from block `first` with the running
/// sum `run` (the positive block sums before it), to the target: blocks whose sum keeps the
/// running sum <= target are passed, the first one that does not (or the last positive block)
/// is scanned entry by entry from fill(begin, count, out) in double, into the next blocks if the
/// block sum overshot its entries' sum. The first positive weight whose running sum exceeds the
/// target, else the last positive weight scanned (npos: none).
template <class SumAt, class Fill>
std::size_t walk_block_sums(std::size_t n, std::size_t first, std::size_t last_block, double run,
                            double target, SumAt&& sum_at, Fill&& fill) noexcept {
    constexpr std::size_t blk = block_sums::block;
    alignas(64) float buf[blk];
    std::size_t last = npos;  // the last positive weight scanned
    for (std::size_t b = first; b <= last_block; ++b) {
        const double s = sum_at(b);
        if (!(s > 0)) continue;
        if (run + s <= target && b != last_block) {  // the target lies beyond this block
            run += s;
            continue;
        }
        const std::size_t c = std::min(blk, n - b * blk);
        fill(b * blk, c, buf);
        for (std::size_t j = 0; j < c; ++j) {
            if (!(buf[j] > 0.f)) continue;
            run += buf[j];
            last = b * blk + j;
            if (run > target) return last;
        }
    }
    return last;  // the last positive block is always scanned: its last positive weight
}
}  // namespace detail

/// Inverse-CDF draw with one uniform u in [0, 1) over the weights s was built from, written by
/// fill(begin, count, out) for the block it scans (count <= block_sums::block floats): the first
/// positive weight whose running sum exceeds u * s.total (the reference's rule: blocks passed by
/// their sums, then the block where u * s.total falls scanned in double, into the next ones if
/// its sum overshot its weights), the last positive weight scanned when rounding leaves the
/// target unreached; npos when s.total is not positive (or NaN) or no block sum is. The block
/// sums' rounding (~1e-7 of the total with float-lane sums) can move the chosen entry across a
/// block boundary relative to an all-double running sum. Cost: the first positive group end
/// above the target found among <= 32 (ends[]), then <= 32 block sums walked, one block filled
/// and scanned. No state changes: s serves any number of draws.
template <class Fill>
std::size_t draw_block_sums(const block_sums& s, Fill&& fill, double u) noexcept {
    if (!(s.total > 0) || s.last == npos) return npos;
    const double target = u * s.total;
    // Every block of a group whose end does not pass the target is passed by the walk (the
    // running sums only grow): start at the first group whose end does, or at the last positive
    // block's group, with the running sum the walk would have there (the same additions).
    const std::size_t glast = s.last / block_sums::group;
    std::size_t g = 0;
    while (g < glast && !(s.ends[g] > target)) ++g;
    return detail::walk_block_sums(
        s.n, g * block_sums::group, s.last, g ? s.ends[g - 1] : 0.0, target,
        [&](std::size_t b) noexcept { return s.sums[b]; }, fill);
}

/// Inverse-CDF draw over n weights that are never stored, with the block sums given by
/// block_sum(begin, count) (computed once per block, kept in `scratch`) and the weights of the
/// blocks it scans by fill(begin, count, out): sum_blocks then draw_block_sums (same rule), plus
/// a floor: npos when the total is not above `floor`. When n does not fit (block_sums::fits:
/// more than 524 288 weights) the sums are not kept: one pass for the total, then the same walk
/// calling block_sum again (from the first block). Calls block_sum in ascending blocks, fill
/// only on the blocks it scans. scratch is left holding the sums when n fits.
template <class Sum, class Fill>
std::size_t draw_blocked(std::size_t n, Sum&& block_sum, Fill&& fill, double u, double floor,
                         block_sums& scratch) noexcept {
    if (block_sums::fits(n)) {
        sum_blocks(n, block_sum, scratch);
        return scratch.total > floor ? draw_block_sums(scratch, fill, u) : npos;
    }
    const std::size_t nb = block_sums::blocks(n);
    auto count = [&](std::size_t b) {
        return std::min(block_sums::block, n - b * block_sums::block);
    };
    double total = 0;
    std::size_t last_block = npos;
    for (std::size_t b = 0; b < nb; ++b) {
        const double s = block_sum(b * block_sums::block, count(b));
        if (s > 0) last_block = b;
        total += s;
    }
    if (!(total > floor) || last_block == npos) return npos;
    return detail::walk_block_sums(
        n, 0, last_block, 0.0, u * total,
        [&](std::size_t b) noexcept { return block_sum(b * block_sums::block, count(b)); }, fill);
}

/// Exponential-race (Gumbel-max) draw from softmax(x / T): argmax_i w_i / E_i with
/// w_i = exp((x_i - m)/T) and E_i = rng.exponential() for every entry in order; npos if no entry
/// has probability. Consumes exactly 2 * x.size() random words. \pre temperature > 0
template <class A = simd::default_arch>
std::size_t draw_exponential_race(std::span<const float> x, float temperature,
                                  rng_stream& rng) noexcept {
    // The per-entry exponential dominates (two logs and a Philox word pair per entry): there is
    // nothing for SIMD to win, so this is the reference, kept as a kernel for parity tests and
    // for callers that want the Gumbel-max form.
    return reference::draw_exponential_race(x, temperature, rng);
}

using reference::logit_threshold;
using reference::min_p_offset;

/// Exact draw from softmax(x / T) with no exponential per entry (block-max envelope rejection,
/// docs/semantics.md#draw).
/// Blocks are lane-strided: the row is cut into chunks of L g entries (L = SIMD lanes; g the
/// smallest power of two >= 16 giving at most 2048 blocks: 64 at V = 128256 with 16 lanes) and
/// block (chunk q, lane j) holds the g entries q L g + j + L s, s < g, so one SIMD pass of
/// vertical maxima gives L block maxima per chunk with no horizontal reduction. Each block gets
/// the envelope height h_b >= exp((M_b - m)/T) (a SIMD exp of the block maxima, inflated by 3e-5
/// to cover float rounding). The blocks with h_b >= sum_b h_b / 64 (at most 64; where a
/// refinement saves about as many proposals as it costs) are refined by one strided scan of
/// their g entries: their max entry a_b gets its own exact envelope hA_b = w(M_b) and the other
/// entries hB_b = w(M2_b), M2_b the largest of them; a refined block's mass is hA_b + g hB_b, any
/// other block's g h_b. Proposals: a block with probability mass / H (2 words; inverse CDF over
/// groups of 16 chunks, then the chunk, each by a branch-free count of running sums, then a
/// running sum over the chunk's L blocks; a chunk's mass is its blocks' float sum raised by
/// L 2^-22, the gap a rejected proposal), a slot s uniformly (1 word; for a refined block, a_b
/// instead when the same uniform falls in its first hA_b), accepted with probability w_i / e_i
/// (2 words), e_i = h_b, or for a refined block hB_b (+ hA_b when i = a_b), w_i the reference's
/// double weight; slots past the row's end are rejected. Random words: 5 per proposal; the
/// number of proposals is geometric with mean H / Z <= g (about 1 for flat rows and for rows
/// whose mass sits in a few dominant entries; ~20 on a permuted Zipf(1.1) row at T = 0.8, ~10 on
/// a Gaussian one, at V = 128256). A row with +inf entries draws uniformly among them (2 words);
/// no valid entry: npos (0 words). Exact except that entries in blocks whose max is more than
/// 87 T below the row max (total probability < V e^-87) are never drawn. When 1/T is not finite
/// (subnormal T), and after max(64 g, 4096) rejected proposals (probability < e^-64), the draw is
/// an exact inverse CDF over the reference's double weights instead (2 more words, V
/// exponentials); both keep the draw exact. Cost: one read pass of the row, <= 2048 block
/// exponentials, <= 64 strided block scans, O(chunks / 16 + 16 + L) work per proposal.
/// \pre temperature > 0
template <class A = simd::default_arch>
std::size_t draw_temperature(std::span<const float> x, float temperature,
                             rng_stream& rng) noexcept {
    return detail::draw_envelope<A>(detail::plain_row<A>{x.data()}, x.size(), temperature, {}, rng);
}

/// Exact draw from softmax(x / T) restricted to the entries reaching the threshold
/// (reference::truncated_softmax): x_i >= threshold_value(max(x), thr); min-p's kept set with
/// thr = {.from_max = min_p_offset(p_base, T_min_p)}, so min-p then a temperature draw cost one
/// read pass and no exponential per entry. The same envelope draw with the same guarantees
/// (exact; 5 words per proposal; +inf rows uniform over their +inf entries; npos when nothing is
/// kept, 0 words): blocks whose max is below the threshold get no mass (no exponential, never
/// proposed, never refined), proposals below it are rejected. The expected number of proposals
/// is at most g as before (each block with mass holds a kept entry at its max).
/// \pre temperature > 0
template <class A = simd::default_arch>
std::size_t draw_temperature(std::span<const float> x, float temperature, rng_stream& rng,
                             const logit_threshold& thr) noexcept {
    return detail::draw_envelope<A>(detail::plain_row<A>{x.data()}, x.size(), temperature, thr,
                                    rng);
}

/// draw_temperature among the allowed entries (the law of the unmasked draw on
/// reference::masked_copy(x, mask)); disallowed entries are excluded from the block maxima
/// (read as -inf in the same pass) and rejected as proposals. npos when no allowed entry is
/// valid (an all-zero mask). \pre temperature > 0
template <class A = simd::default_arch>
std::size_t draw_temperature(std::span<const float> x, float temperature, rng_stream& rng,
                             const token_bitmask& mask) noexcept {
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    return detail::draw_envelope<A>(r, n, temperature, {}, rng);
}

/// The thresholded draw among the allowed entries: the threshold is set by the largest allowed
/// entry (min-p under a mask). \pre temperature > 0
template <class A = simd::default_arch>
std::size_t draw_temperature(std::span<const float> x, float temperature, rng_stream& rng,
                             const logit_threshold& thr, const token_bitmask& mask) noexcept {
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    return detail::draw_envelope<A>(r, n, temperature, thr, rng);
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
