#pragma once
/// \file kernels/min_p.hpp
/// Min-p's draw over a whole row, with the chosen token's logprob, and no compaction of the kept
/// set: a token from softmax(x / T) restricted to the entries reaching a logit threshold
/// (reference::truncated_softmax; min-p's kept set with thr = {.from_max = min_p_offset(p_base,
/// T_min_p)}), optionally among the entries a token_bitmask allows (the threshold then set by the
/// largest allowed entry).
///
/// Passes: one read pass storing the maximum of each block of B contiguous entries (B a multiple
/// of 64, >= 256, at most 1024 blocks: 256 at V = 128256); the threshold t from the row max m;
/// then, in the blocks whose maximum reaches t only, one pass computing the float weights
/// w_i = exp_nonpositive((x_i - m) / T) (weights.hpp's expression) of the kept entries (a pair of
/// vectors with no kept entry is skipped), four vectors' exponentials in flight at once where
/// the kept set is dense (simd::exp_nonpositive_n: the same bits), added in float accumulators
/// that go to double lanes every 16 vectors (256 entries with AVX-512, 128 with AVX2); one
/// uniform u (2 words of `rng`);
/// the group where u * S falls by inverse CDF over the group sums (S their sum; a group is 4
/// blocks); the token by a scan of that group in id order (the same weights, bit for bit, added
/// in double: a vector's sum at once, its lanes one by one in the vector that crosses). So the law
/// is the inverse CDF over the kept entries in id order (reference::draw_inverse_cdf of their float
/// weights: the draw of sampling/draw.hpp on the compacted set), with the same token for a given u
/// unless u * S lies within the rounding of the float block sums (relative error <= 9 2^-24 per
/// sum, about 1e-9 of S over a near-uniform row of 128k entries, whose boundaries are 8e-6 S apart)
/// of a boundary of the running sum. A row whose kept set is a handful of entries (a confident
/// model) costs about one read pass (only the few blocks holding them are weighed); a near-uniform
/// row, whose kept set is the whole row, costs the exp floor (max, then one exp-and-sum pass: what
/// an exact logprob over that set needs).
///
/// Without a logprob wanted (want_logprob false) the first pass stops as soon as max(8, blocks /
/// 4) blocks reach the threshold of the running max (a large kept set), and the
/// token is drawn by kernels::draw_temperature with the threshold instead (no exponential per
/// entry; its own random words); otherwise the exact draw above (fewer exponentials than the
/// envelope's block scans on a small kept set). Both are exact draws of the same law.
///
/// Logprob: log(w_tok) - log(S) in double. Against the exact log p_tok of the reference (double
/// weights e^{-d_i}, d_i = (m - x_i) / T, over the same kept set) its error is at most
/// logprob_error(d_tok, d_max, n) (below): the float weights' relative error (weights.hpp:
/// exp_error + arg_error d) on w_tok and on S, the float block sums in S (9 2^-24), and the double
/// sums; d_max <= -T_min_p ln(min_p) / T (3.0 for min-p 0.05 at T_min_p = T: the bound is then
/// below 2e-6).
///
/// Special rows (as reference::truncated_softmax): NaN and -inf entries (and disallowed ones) are
/// never kept; a row with +inf entries draws uniformly among them (logprob -log(count)); no valid
/// entry, a NaN threshold or an empty row: index npos (no random word consumed). +inf rows and a
/// temperature whose reciprocal is not finite take a scalar path with the reference's double
/// weights. No allocation; 16 KiB of stack.
///
/// With a logprob wanted, the first pass also takes the block minima while every block so far
/// lies wholly above the running threshold (a near-uniform row): those blocks are weighed with no
/// compare and no select (a NaN entry makes its chunk's sum NaN: that chunk is weighed again
/// with them). Measured on the flat row at V = 128256, AVX2: 68.9 -> 62.4 us (T 1.5 in HF order
/// 71.0 -> 65.5); other rows take the minima of their first block only. \pre temperature > 0

#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/weights.hpp>
#include <decodekit/random.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

/// A token drawn by draw_min_p.
struct min_p_draw {
    std::size_t index = npos;  ///< the entry drawn; npos: no entry is kept
    /// log of its probability in the kept set; NaN when no logprob was wanted
    double logprob = std::numeric_limits<double>::quiet_NaN();
    double prob = std::numeric_limits<double>::quiet_NaN();  ///< that probability (same rule)
};

/// Bound on |draw_min_p's logprob - the exact log p_tok| on a row of n entries, d_tok = (m -
/// x_tok) / T for the drawn entry and d_max the largest d_i of the kept set (see the file
/// comment).
inline double min_p_logprob_error(double d_tok, double d_max, std::size_t n) noexcept {
    return (2 * detail::exp_error + detail::arg_error * (d_tok + d_max) + 9 * 0x1p-24 +
            detail::sum_error(n) + double(n) * detail::flush_error) *
               (1 + 1e-6) +
           1e-15;
}

namespace detail {

inline constexpr std::size_t min_p_max_blocks = 1024;
inline constexpr float pos_inf_f = std::numeric_limits<float>::infinity();
/// Blocks per group: the draw's inverse CDF walks group sums, then scans one group.
inline constexpr std::size_t min_p_group = 4;

/// Entries per block of draw_min_p: a multiple of 64 (so of every lane count), at least 256,
/// giving at most min_p_max_blocks blocks.
inline std::size_t min_p_block(std::size_t n) noexcept {
    return std::max<std::size_t>(256, (n / min_p_max_blocks + 64) / 64 * 64);
}

/// Block maxima of r[0, n) (NaN ignored) into bmax; the row max into m. Stops early (returns
/// false) when `cutoff` blocks or more reach the threshold of the running max: counted as the
/// blocks come (an over-count: the running threshold only rises), recounted against the current
/// one before giving up. With Min, also the block minima (NaN ignored) into bmin while every
/// block so far has its minimum at or above the threshold of the running max (a near-uniform row:
/// all its blocks are then weighed without compares), -inf from the first block that has not (the
/// threshold only rises: no later block can use it either; other rows pay one block's minima).
/// The minima cost ~3.6 us per row at V = 128256 on AVX2 (8.7 -> 12.3 us on a peaked row when
/// taken on every block).
template <class A, bool Min, class Row>
bool min_p_block_maxima(const Row r, std::size_t n, std::size_t blk, const logit_threshold& thr,
                        std::size_t cutoff, float* bmax, float* bmin, float& m) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    m = neg_inf_f;
    std::size_t live = 0;
    bool track = Min;
    // the block [lo, hi): its max into mb, with WithMin its min (NaN ignored) into nb
    auto block = [&]<bool WithMin>(std::size_t lo, std::size_t hi, float& mb, float& nb) {
        B a0(neg_inf_f), a1 = a0, a2 = a0, a3 = a0;
        B n0(pos_inf_f), n1 = n0, n2 = n0, n3 = n0;
        std::size_t i = lo;
        for (; i + 4 * L <= hi; i += 4 * L) {
            const B v0 = r.load(i), v1 = r.load(i + L), v2 = r.load(i + 2 * L),
                    v3 = r.load(i + 3 * L);
            a0 = simd::max_ignore_nan<A>(a0, v0);
            a1 = simd::max_ignore_nan<A>(a1, v1);
            a2 = simd::max_ignore_nan<A>(a2, v2);
            a3 = simd::max_ignore_nan<A>(a3, v3);
            if constexpr (WithMin) {
                n0 = simd::min_ignore_nan<A>(n0, v0);
                n1 = simd::min_ignore_nan<A>(n1, v1);
                n2 = simd::min_ignore_nan<A>(n2, v2);
                n3 = simd::min_ignore_nan<A>(n3, v3);
            }
        }
        for (; i + L <= hi; i += L) {
            const B v = r.load(i);
            a0 = simd::max_ignore_nan<A>(a0, v);
            if constexpr (WithMin) n0 = simd::min_ignore_nan<A>(n0, v);
        }
        mb = simd::reduce_max<A>(simd::max<A>(simd::max<A>(a0, a1), simd::max<A>(a2, a3)));
        nb = WithMin ? simd::reduce_min<A>(simd::min<A>(simd::min<A>(n0, n1), simd::min<A>(n2, n3)))
                     : neg_inf_f;
        for (; i < hi; ++i) {
            const float v = r.at(i);
            mb = v > mb ? v : mb;
            if constexpr (WithMin) nb = v < nb ? v : nb;
        }
    };
    for (std::size_t b = 0, lo = 0; lo < n; ++b, lo += blk) {
        const std::size_t hi = std::min(n, lo + blk);
        float mb = neg_inf_f, nb = neg_inf_f;
        if (track)
            block.template operator()<true>(lo, hi, mb, nb);
        else
            block.template operator()<false>(lo, hi, mb, nb);
        bmax[b] = mb;
        if constexpr (Min) {
            const float run = mb > m ? mb : m;
            track = track && nb >= reference::threshold_value(run, thr);
            bmin[b] = track ? nb : neg_inf_f;
        }
        m = mb > m ? mb : m;
        if (cutoff == 0) continue;  // no early stop
        if (!(mb >= reference::threshold_value(m, thr))) continue;
        if (++live < cutoff) continue;
        const float t = reference::threshold_value(m, thr);
        live = 0;
        for (std::size_t c = 0; c <= b; ++c) live += bmax[c] >= t;
        if (live >= cutoff) return false;
    }
    return true;
}

/// The float weights of draw_min_p for the lanes in `keep` (0 elsewhere): weight_lanes(v, m,
/// 1/T) bit for bit. UnitT: T = 1 (the product by 1, exact, is skipped); InRange: every kept lane
/// has d >= -87 (checked once from the threshold), so exp_nonpositive's range handling is too.
template <class A, bool UnitT, bool InRange>
struct min_p_weigher {
    using B = simd::batch<A>;
    B mb, ib;
    /// The weights of every lane (NaN lanes: NaN or 0).
    B all(const B& v) const noexcept {
        B d = v - mb;
        if constexpr (!UnitT) d = d * ib;
        if constexpr (InRange)
            return simd::exp_nonpositive_in_range<A>(d);
        else
            return simd::exp_nonpositive<A>(d);
    }
    B operator()(const B& v, const simd::batch_bool<A>& keep) const noexcept {
        B d = v - mb;
        if constexpr (!UnitT) d = d * ib;
        if constexpr (InRange)
            return simd::select<A>(keep, simd::exp_nonpositive_in_range<A>(d), B(0.f));
        else
            return simd::select<A>(keep, simd::exp_nonpositive<A>(d), B(0.f));
    }
    /// all() of K vectors at once into w (the same bits; simd::exp_nonpositive_n).
    template <std::size_t K>
    void all_n(const B (&v)[K], B (&w)[K]) const noexcept {
        for (std::size_t j = 0; j < K; ++j) {
            w[j] = v[j] - mb;
            if constexpr (!UnitT) w[j] = w[j] * ib;
        }
        if constexpr (InRange)
            simd::exp_nonpositive_in_range_n<A, K>(w);
        else
            simd::exp_nonpositive_n<A, K>(w);
    }
    /// operator() of K vectors at once into w (the same bits), the lanes reaching tb kept.
    template <std::size_t K>
    void kept_n(const B (&v)[K], const B& tb, B (&w)[K]) const noexcept {
        all_n<K>(v, w);
        for (std::size_t j = 0; j < K; ++j) w[j] = simd::select<A>(v[j] >= tb, w[j], B(0.f));
    }
};

/// Sum of the weights of the entries reaching t in the live blocks (bmax[b] >= t) among blocks
/// [b0, b1) of r[0, n) (blocks of blk entries). Where every pair so far held a kept entry (and in
/// near-uniform blocks), G = 4 vectors at a time (the weigher's K-vector forms: four
/// exponentials in flight; Gaussian row at T 1.5, V = 128256, AVX2: 69 -> 63 us per call);
/// otherwise pairs (2 in flight), a pair with no kept entry skipped. The weights are added in
/// float accumulators that go to double lanes every 16 vectors (at most 9 additions per lane:
/// relative error <= 9 2^-24; typically ~1e-9 over a row).
/// \pre m finite, inv_t finite
template <class A, class Row, class W>
double min_p_group_sum(const Row r, std::size_t n, std::size_t blk, std::size_t b0, std::size_t b1,
                       const float* bmax, const float* bmin, float t, float m, float inv_t,
                       const W& weigh) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>, G = 4, chunk = 16 * L;
    const B tb(t);
    D s0(0.0), s1(0.0);
    double tail = 0;
    // After a chunk with no empty step, the next 3 are weighed without the test (an empty step
    // adds +0: the same sums bit for bit). On a row whose kept set is dense (Gaussian at T 1.5:
    // 46 % kept), the test and its branch were ~10 % of this pass.
    unsigned dense = 0;
    B v[G], w[G], f[G];
    auto load = [&](std::size_t i) {
        for (std::size_t j = 0; j < G; ++j) v[j] = r.load(i + j * L);
    };
    auto add = [&] {
        for (std::size_t j = 0; j < G; ++j) f[j] += w[j];
    };
    for (std::size_t b = b0; b < b1; ++b) {
        if (!(bmax[b] >= t)) continue;
        const std::size_t hi = std::min(n, b * blk + blk);
        std::size_t i = b * blk;
        // every entry of the block is kept but NaN ones: no compare, no select (the same
        // weights bit for bit); a chunk whose sum is NaN is weighed again with the compares
        const bool full = bmin != nullptr && bmin[b] >= t;
        while (i + G * L <= hi) {
            const std::size_t end = std::min(hi, i + chunk);
            for (std::size_t j = 0; j < G; ++j) f[j] = B(0.f);
            if (full) {
                const std::size_t i0 = i;
                for (; i + G * L <= end; i += G * L) {
                    load(i);
                    weigh.template all_n<G>(v, w);
                    add();
                }
                const B s = (f[0] + f[1]) + (f[2] + f[3]);
                if (!simd::any<A>(!(s == s))) {  // (xsimd 8.1: != is ordered, false on NaN)
                    simd::widen_add<A>(s0, s1, s);
                    continue;
                }
                i = i0;
                for (std::size_t j = 0; j < G; ++j) f[j] = B(0.f);
                dense = 0;
            }
            if (dense > 0) {
                --dense;
                for (; i + G * L <= end; i += G * L) {
                    load(i);
                    weigh.template kept_n<G>(v, tb, w);
                    add();
                }
            } else {
                // pairs here: steps of 4 vectors are empty less often (min-p 0.05 at T 1 on the
                // Gaussian row, 5.5 % kept: 48.8 -> 57.1 us with steps of 4)
                bool empty = false;
                for (; i + 2 * L <= end; i += 2 * L) {
                    const B p[2] = {r.load(i), r.load(i + L)};
                    if (!simd::any<A>((p[0] >= tb) | (p[1] >= tb))) {
                        empty = true;
                        continue;
                    }
                    B q[2];
                    weigh.template kept_n<2>(p, tb, q);
                    f[0] += q[0];
                    f[1] += q[1];
                }
                dense = empty ? 0 : 3;
            }
            simd::widen_add<A>(s0, s1, (f[0] + f[1]) + (f[2] + f[3]));
        }
        for (; i + L <= hi; i += L) {
            const B x = r.load(i);
            simd::widen_add<A>(s0, s1, weigh(x, x >= tb));
        }
        for (; i < hi; ++i) {
            const float x = r.at(i);
            if (x >= t) tail += double(weight_one<A>(x, m, inv_t));
        }
    }
    return simd::reduce_add<A>(s0 + s1) + tail;
}

/// Scans r[lo, hi) in order, adding the positive weights of the entries reaching t to `run`:
/// the first entry at which run exceeds target (its weight in w, run before it in `before`),
/// else npos with `last` / `w` the block's last entry of positive weight (unchanged when it has
/// none). A vector's weights are added at once (their sum in double) unless that crosses target;
/// then its lanes one by one, from the same run. (One entry at a time cost a dependent double
/// add and an unpredictable branch per lane: ~3.8 us per draw on the Gaussian row at T 1.5,
/// V = 128256, AVX2, where 46 % of the entries are kept; run differs from the sequential sum by
/// rounding only, 2^-52 relative per vector.)
template <class A, class Row, class W>
std::size_t min_p_scan(const Row r, std::size_t lo, std::size_t hi, float t, float m, float inv_t,
                       const W& weigh, double target, double& run, double& before,
                       std::size_t& last, float& w) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B tb(t);
    alignas(64) float buf[L];
    auto lane = [&](std::size_t i, float e) {
        if (!(e > 0)) return false;
        before = run;
        run += double(e);
        last = i;
        w = e;
        return run > target;
    };
    std::size_t i = lo;
    for (; i + L <= hi; i += L) {
        const B v = r.load(i);
        const auto k = v >= tb;
        if (!simd::any<A>(k)) continue;
        const B e = weigh(v, k);
        D s0(0.0), s1(0.0);
        simd::widen_add<A>(s0, s1, e);
        const double vs = simd::reduce_add<A>(s0 + s1);
        e.store_aligned(buf);
        if (!(run + vs > target)) {
            // (a kept lane may weigh 0: far below the max; its last positive lane for `last`)
            if (const std::uint64_t pos = simd::to_mask<A>(e > B(0.f))) {
                const std::size_t j = std::size_t(63 - std::countl_zero(pos));
                last = i + j;
                w = buf[j];
            }
            run += vs;
            continue;
        }
        for (std::size_t j = 0; j < L; ++j)
            if (lane(i + j, buf[j])) return i + j;
    }
    for (; i < hi; ++i) {
        const float v = r.at(i);
        if (v >= t && lane(i, weight_one<A>(v, m, inv_t))) return i;
    }
    return npos;
}

/// The exact draw of draw_min_p once the block maxima and the threshold are known: the
/// inverse CDF over the group sums, then over one group's entries in order.
template <class A, class Row, class W>
min_p_draw min_p_exact(const Row r, std::size_t n, std::size_t blk, const float* bmax,
                       const float* bmin, float t, float m, float inv_t, bool want_logprob,
                       rng_stream& rng, const W& weigh) noexcept {
    min_p_draw d;
    const std::size_t nb = (n + blk - 1) / blk, ng = (nb + min_p_group - 1) / min_p_group;
    double gsum[min_p_max_blocks / min_p_group];
    double s = 0;
    for (std::size_t g = 0; g < ng; ++g) {
        const std::size_t b0 = g * min_p_group, b1 = std::min(nb, b0 + min_p_group);
        gsum[g] = min_p_group_sum<A>(r, n, blk, b0, b1, bmax, bmin, t, m, inv_t, weigh);
        s += gsum[g];
    }
    if (!(s > 0)) return d;  // defensive: the max entry weighs 1
    const double target = rng.uniform() * s;
    float w = 0.f;
    double run = 0, before = 0;
    std::size_t last_g = npos, last = npos;
    // a group's live blocks scanned in order (adding their weights to run when it misses)
    auto scan = [&](std::size_t g, double tgt, double& acc) {
        for (std::size_t b = g * min_p_group; b < std::min(nb, g * min_p_group + min_p_group); ++b)
            if (bmax[b] >= t)
                if (const std::size_t i = min_p_scan<A>(r, b * blk, std::min(n, b * blk + blk), t,
                                                        m, inv_t, weigh, tgt, acc, before, last, w);
                    i != npos)
                    return i;
        return npos;
    };
    for (std::size_t g = 0; g < ng && d.index == npos; ++g) {
        if (!(gsum[g] > 0)) continue;
        last_g = g;
        if (run + gsum[g] > target)
            d.index = scan(g, target, run);
        else
            run += gsum[g];
    }
    if (d.index == npos) {  // rounding left the target unreached: the last entry of weight > 0
        double skip = 0;
        scan(last_g, std::numeric_limits<double>::infinity(), skip);
        d.index = last;
    }
    if (want_logprob) {
        d.logprob = std::log(double(w)) - std::log(s);
        d.prob = double(w) / s;
    }
    return d;
}

/// The scalar path of draw_min_p (a +inf max, or 1 / T not finite): the reference's double
/// weights. \pre m > -inf, t <= m
template <class Row>
min_p_draw min_p_draw_reference(const Row r, std::size_t n, float m, float t, float temperature,
                                bool want_logprob, rng_stream& rng) noexcept {
    min_p_draw d;
    auto weight = [&](std::size_t i) {
        const float v = r.at(i);
        return v >= t ? reference::weight(v, m, temperature) : 0.0;
    };
    double s = 0;
    for (std::size_t i = 0; i < n; ++i) s += weight(i);
    if (!(s > 0)) return d;
    const double target = rng.uniform() * s;
    double run = 0, w = 0;
    for (std::size_t i = 0; i < n; ++i) {
        const double wi = weight(i);
        if (!(wi > 0)) continue;
        run += wi;
        d.index = i;
        w = wi;
        if (run > target) break;
    }
    if (want_logprob) {
        d.logprob = std::log(w) - std::log(s);
        d.prob = w / s;
    }
    return d;
}

/// draw_min_p over r[0, n); `envelope` is the unrestricted row for the draw_temperature fallback.
template <class A, class Row, class Envelope>
min_p_draw draw_min_p_of(const Row r, std::size_t n, float temperature, const logit_threshold& thr,
                         bool want_logprob, rng_stream& rng, Envelope&& envelope) noexcept {
    min_p_draw d;
    if (n == 0) return d;
    const std::size_t blk = min_p_block(n), nb = (n + blk - 1) / blk;
    alignas(64) float bmax[min_p_max_blocks], bmin_store[min_p_max_blocks];
    float* const bmin = want_logprob ? bmin_store : nullptr;
    const std::size_t cutoff = want_logprob ? 0 : std::max<std::size_t>(8, nb / 4);
    float m = neg_inf_f;
    // (the block minima only with a logprob wanted: the exact draw over a large kept set then)
    if (!(want_logprob ? min_p_block_maxima<A, true>(r, n, blk, thr, cutoff, bmax, bmin, m)
                       : min_p_block_maxima<A, false>(r, n, blk, thr, cutoff, bmax, nullptr, m))) {
        d.index = envelope();
        return d;
    }
    if (m == neg_inf_f) return d;
    float t = reference::threshold_value(m, thr);
    if (!(t <= m)) return d;  // a NaN threshold, or one above every entry
    t = std::max(t, std::numeric_limits<float>::lowest());  // never a -inf entry
    const float inv_t = 1.f / temperature;
    if (std::isinf(m) || !detail::float_inv_temperature(inv_t))
        return min_p_draw_reference(r, n, m, t, temperature, want_logprob, rng);
    using B = simd::batch<A>;
    const B mb(m), ib(inv_t);
    auto exact = [&](const auto& weigh) {
        return min_p_exact<A>(r, n, blk, bmax, bmin, t, m, inv_t, want_logprob, rng, weigh);
    };
    // the smallest kept d = (x - m) / T, as the lanes compute it (both roundings are monotone)
    const bool unit = inv_t == 1.f, in_range = (unit ? t - m : (t - m) * inv_t) >= -87.f;
    if (unit)
        return in_range ? exact(min_p_weigher<A, true, true>{mb, ib})
                        : exact(min_p_weigher<A, true, false>{mb, ib});
    return in_range ? exact(min_p_weigher<A, false, true>{mb, ib})
                    : exact(min_p_weigher<A, false, false>{mb, ib});
}

}  // namespace detail

/// Draws from softmax(x / T) restricted to the entries reaching threshold_value(max(x), thr)
/// (see the file comment); with want_logprob, the token's logprob in that set. \pre temperature > 0
template <class A = simd::default_arch>
min_p_draw draw_min_p(std::span<const float> x, float temperature, const logit_threshold& thr,
                      bool want_logprob, rng_stream& rng) noexcept {
    return detail::draw_min_p_of<A>(detail::plain_row<A>{x.data()}, x.size(), temperature, thr,
                                    want_logprob, rng,
                                    [&] { return draw_temperature<A>(x, temperature, rng, thr); });
}

/// draw_min_p among the entries `mask` allows (the law of the unmasked one on
/// reference::masked_copy(x, mask); the threshold set by the largest allowed entry).
/// \pre temperature > 0
template <class A = simd::default_arch>
min_p_draw draw_min_p(std::span<const float> x, float temperature, const logit_threshold& thr,
                      bool want_logprob, rng_stream& rng, const token_bitmask& mask) noexcept {
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    return detail::draw_min_p_of<A>(r, n, temperature, thr, want_logprob, rng, [&] {
        return draw_temperature<A>(x, temperature, rng, thr, mask);
    });
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
