#pragma once
/// \file kernels/cut.hpp
/// Using a kept set given as a row_cut over the row's weights: compact_cut writes it as
/// candidates (ids, logits, id order) with their weights (one pass), draw_cut draws from it by
/// inverse CDF without compacting it (the kept sum, then the blocks up to the drawn one; with the
/// sum known, from the nearer end: a quarter of a pass on average).
/// No random numbers are consumed (draw_cut takes the uniform).
///
/// A row_cut splits the ids into at most three segments (before, between and after its two id
/// cuts), each with one closed logit interval ("x == lo with id > lo_last" is "x >= the float
/// after lo"), so both passes are SIMD compares on whole vectors plus a few scalar entries
/// where a segment starts or ends inside a vector.

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/kernels/weights.hpp>
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

/// Calls f(s, e, a, b) for the segments [s, e) of [begin, end) in which the cut keeps exactly
/// the entries with a <= x_i <= b (NaN never).
template <class F>
void for_each_segment(const row_cut& k, std::size_t begin, std::size_t end, F&& f) noexcept {
    constexpr float pinf = std::numeric_limits<float>::infinity();
    const std::size_t e_lo = k.lo_last == npos ? end : std::min(end, k.lo_last + 1);
    const std::size_t e_hi = k.hi_last == npos ? end : std::min(end, k.hi_last + 1);
    const float up = std::nextafter(k.lo, pinf), down = std::nextafter(k.hi, -pinf);
    const std::size_t e1 = std::clamp(std::min(e_lo, e_hi), begin, end);
    const std::size_t e2 = std::clamp(std::max(e_lo, e_hi), begin, end);
    auto run = [&](std::size_t s, std::size_t e) {
        if (s >= e) return;
        // past a cut of an infinite bound nothing of that value remains: the segment is empty
        if ((s >= e_lo && k.lo == pinf) || (s >= e_hi && k.hi == -pinf)) return;
        f(s, e, s >= e_lo ? up : k.lo, s >= e_hi ? down : k.hi);
    };
    run(begin, e1);
    run(e1, e2);
    run(e2, end);
}

/// Keeps the entries of x[begin, end) (whole vectors) with a <= x_i <= b: appends their ids,
/// logits and weights (read from w[i], recomputed for i < recompute_below; written to w[c]: in
/// place, as each vector is read before a store reaches it) at index c and returns the new
/// count; adds their weights to ksum (float lanes per block of 32 vectors, then double).
template <class A>
std::size_t compact_interval(const float* p, float* w, std::size_t begin, std::size_t end, float a,
                             float b, std::size_t recompute_below, std::size_t c, token_id* ids,
                             float* lg, float m, float inv_t, double& ksum) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B ab(a), bb(b), mb(m), tb(inv_t), zero(0.f);
    B acc(0.f);
    std::size_t since = 0;
    for (std::size_t i = begin; i < end; i += L) {
        const B v = B::load_unaligned(p + i);
        const auto keep = (v >= ab) & (v <= bb);
        if (const std::uint64_t mk = simd::to_mask<A>(keep)) {
            const B wv =
                i < recompute_below ? weight_lanes<A>(v, mb, tb) : B::load_unaligned(w + i);
            c += simd::compress_store<A>(v, wv, simd::iota<A>(token_id(i)), mk, lg + c, w + c,
                                         ids + c);
            acc += simd::select<A>(keep, wv, zero);
        }
        if (++since == 32) {
            ksum += double(simd::reduce_add<A>(acc));
            acc = zero;
            since = 0;
        }
    }
    ksum += double(simd::reduce_add<A>(acc));
    return c;
}

/// Sum of w[i] over the kept entries of [begin, end) (double lanes).
template <class A>
double cut_sum(const float* p, const float* w, const row_cut& k, std::size_t begin,
               std::size_t end) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    double s = 0;
    for_each_segment(k, begin, end, [&](std::size_t sb, std::size_t se, float a, float b) {
        const std::size_t vb = std::min(se, (sb + L - 1) / L * L), ve = std::max(vb, se / L * L);
        for (std::size_t i = sb; i < vb; ++i)
            if (p[i] >= a && p[i] <= b) s += double(w[i]);
        const B ab(a), bb(b), zero(0.f);
        D s0(0.0), s1(0.0);
        for (std::size_t i = vb; i < ve; i += L) {
            const B v = B::load_unaligned(p + i);
            simd::widen_add<A>(
                s0, s1, simd::select<A>((v >= ab) & (v <= bb), B::load_unaligned(w + i), zero));
        }
        s += simd::reduce_add<A>(s0 + s1);
        for (std::size_t i = ve; i < se; ++i)
            if (p[i] >= a && p[i] <= b) s += double(w[i]);
    });
    return s;
}

/// compact_cut with the weights recomputed below recompute_below (the kernels' own use).
template <class A>
std::size_t compact_cut_from(std::span<const float> x, float* w, const row_cut& k, float m,
                             float inv_t, candidates& out, std::size_t recompute_below,
                             double& sum) noexcept {
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t c = 0;
    sum = 0;
    for_each_segment(k, 0, x.size(), [&](std::size_t s, std::size_t e, float a, float b) {
        auto scalar = [&](std::size_t i0, std::size_t i1) {
            for (std::size_t i = i0; i < i1; ++i) {
                const float v = p[i];
                if (!(v >= a && v <= b)) continue;
                const float wi = i < recompute_below ? weight_one<A>(v, m, inv_t) : w[i];
                ids[c] = token_id(i);
                lg[c] = v;
                w[c] = wi;
                ++c;
                sum += double(wi);
            }
        };
        const std::size_t vb = std::min(e, (s + L - 1) / L * L), ve = std::max(vb, e / L * L);
        scalar(s, vb);
        if (ve > vb)
            c = compact_interval<A>(p, w, vb, ve, a, b, recompute_below, c, ids, lg, m, inv_t, sum);
        scalar(ve, e);
    });
    out.resize(c);
    return c;
}

/// The smallest of v[0, c) (+inf when c == 0; no NaN). SIMD.
template <class A>
float min_value(const float* v, std::size_t c) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    B b0(std::numeric_limits<float>::infinity()), b1 = b0;
    std::size_t j = 0;
    for (; j + 2 * L <= c; j += 2 * L) {
        b0 = simd::min<A>(b0, B::load_unaligned(v + j));
        b1 = simd::min<A>(b1, B::load_unaligned(v + j + L));
    }
    float r = simd::reduce_min<A>(simd::min<A>(b0, b1));
    for (; j < c; ++j) r = v[j] < r ? v[j] : r;
    return r;
}

/// The row_cut of a set given in reference order (logit descending, ties by id) that is a prefix
/// of that order: everything down to its last entry.
inline row_cut prefix_cut(const candidates& sorted) noexcept {
    row_cut k;
    if (sorted.empty()) return k;
    k.lo = sorted.logits()[sorted.size() - 1];
    k.lo_last = std::size_t(sorted.ids()[sorted.size() - 1]);
    k.hi = std::numeric_limits<float>::infinity();
    return k;
}

/// The row_cut of a top_k_unordered(x, k, ties) set (id order): its smallest value, cut at its
/// largest id of that value (exactly_k) or the whole group (keep_ties).
inline row_cut top_k_cut(const candidates& set, tie_policy ties) noexcept {
    row_cut k;
    if (set.empty()) return k;
    k.lo = std::numeric_limits<float>::infinity();
    for (float v : set.logits()) k.lo = v < k.lo ? v : k.lo;  // (k entries: min_keep, few)
    k.hi = std::numeric_limits<float>::infinity();
    if (ties == tie_policy::exactly_k)
        for (std::size_t j = 0; j < set.size(); ++j)
            if (set.logits()[j] == k.lo) k.lo_last = std::size_t(set.ids()[j]);
    return k;
}

/// Writes every weight of the row as the reference tier gives it (float of reference::weight)
/// to w and returns their double sum.
inline double reference_weights(std::span<const float> x, float temperature, float* w) noexcept {
    const reference::softmax_stats st = reference::exp_sum(x, temperature);
    for (std::size_t i = 0; i < x.size(); ++i)
        w[i] = float(reference::weight(x[i], st.max, temperature));
    return st.sum;
}

/// A truncation kernel's answer from the reference: `ref(out)` writes the reference's kept set
/// (rank order, a prefix of it); returned in id order with its cut, weights float(reference::
/// weight) in w[0, kept) and the reference's normaliser. Rows with +inf entries, subnormal
/// temperatures or temperatures above 2^120 (detail::float_inv_temperature).
template <class Ref>
truncation_result via_reference(std::span<const float> x, float temperature, candidates& out,
                                float* w, Ref&& ref) noexcept {
    ref(out);
    const row_cut cut = prefix_cut(out);
    sort_by_id(out);
    const reference::softmax_stats st = reference::exp_sum(x, temperature);
    truncation_result r;
    r.kept = out.size();
    r.max = st.max;
    r.sum = st.sum;
    r.tier = exactness_tier::reference;
    r.cut = cut;
    for (std::size_t j = 0; j < r.kept; ++j) {
        w[j] = float(reference::weight(out.logits()[j], st.max, temperature));
        r.kept_sum += double(w[j]);
    }
    return r;
}

}  // namespace detail

/// Writes the kept set `cut` of the row x to out (ids, logits, in id order) and moves its weights
/// to w[0, kept) (read from w[i], the row's weights, in place: w no longer holds the row's
/// weights afterwards). Returns the kept count; `sum` receives the kept weights' sum (float
/// blocks added in double). One pass. Status: out.capacity() or w.size() < x.size() keeps nothing
/// and returns npos.
template <class A = simd::default_arch>
std::size_t compact_cut(std::span<const float> x, std::span<float> w, const row_cut& cut,
                        candidates& out, double& sum) noexcept {
    out.clear();
    sum = 0;
    if (out.capacity() < x.size() || w.size() < x.size()) return npos;
    return detail::compact_cut_from<A>(x, w.data(), cut, 0.f, 1.f, out, 0, sum);
}

namespace detail {

/// draw_cut's scan with the kept sum S known, for the target t = u S: from the front when
/// t <= S / 2, blocks of the row whose kept weights are summed (cut_sum) until the running sum
/// passes t, then that block entry by entry (the first kept entry whose running sum exceeds t;
/// the last kept positive entry when t is never passed); otherwise from the back, the same
/// with the suffix sums and S - t (the last kept entry whose suffix sum reaches S - t; the
/// first kept positive entry when S - t is never reached). Both give the entry i with
/// prefix(i - 1) <= t < prefix(i) up to the rounding of the double sums, and read at most half
/// of the row (a quarter on average). npos when no kept entry has a positive weight.
template <class A>
std::size_t draw_cut_scan(const float* p, const float* wp, std::size_t n, const row_cut& cut,
                          double sum, double target) noexcept {
    const std::size_t blk = 256;
    auto kept = [&](std::size_t i) { return wp[i] > 0 && cut.contains(p[i], i); };
    if (target <= 0.5 * sum) {
        double run = 0;
        for (std::size_t b0 = 0; b0 < n; b0 += blk) {
            const std::size_t e = std::min(n, b0 + blk);
            const double bs = cut_sum<A>(p, wp, cut, b0, e);
            if (!(run + bs > target)) {
                run += bs;
                continue;
            }
            for (std::size_t i = b0; i < e; ++i) {
                if (!kept(i)) continue;
                run += double(wp[i]);
                if (run > target) return i;
            }
        }
        for (std::size_t i = n; i-- > 0;)  // target unreached: the last kept positive entry
            if (kept(i)) return i;
        return npos;
    }
    const double back = sum - target;  // > 0: the suffix from the chosen entry on reaches it
    double run = 0;
    for (std::size_t e = n; e > 0;) {
        const std::size_t b0 = (e - 1) / blk * blk;
        const double bs = cut_sum<A>(p, wp, cut, b0, e);
        if (!(run + bs >= back)) {
            run += bs;
            e = b0;
            continue;
        }
        for (std::size_t i = e; i-- > b0;) {
            if (!kept(i)) continue;
            run += double(wp[i]);
            if (run >= back) return i;
        }
        e = b0;
    }
    for (std::size_t i = 0; i < n; ++i)  // suffix short of S - t: the first kept positive entry
        if (kept(i)) return i;
    return npos;
}

}  // namespace detail

/// Inverse-CDF draw over the kept set `cut` of the row x with the weights w (the row's, as a
/// truncation kernel leaves them), with one uniform u in [0, 1): the same entry as
/// draw_inverse_cdf over the kept entries' weights in id order (the first whose running sum
/// exceeds u S, S their double sum; the last kept entry with a positive weight if rounding leaves
/// u S unreached; entries with w <= 0 never), up to the rounding of the double sums (their order
/// differs: an entry within ~1e-12 S of a boundary), returned as a row index; npos when no kept
/// entry has a positive weight or w.size() < x.size(). One pass storing the sums of at most 1024
/// blocks (double lanes), then one block scanned.
template <class A = simd::default_arch>
std::size_t draw_cut(std::span<const float> x, std::span<const float> w, const row_cut& cut,
                     double u) noexcept {
    constexpr std::size_t max_blocks = 1024;
    const std::size_t n = x.size();
    if (w.size() < n || n == 0) return npos;
    const float* p = x.data();
    const float* wp = w.data();
    const std::size_t blk = std::max<std::size_t>(256, (n / max_blocks + 64) / 64 * 64);
    double bsum[max_blocks];
    std::size_t nb = 0;
    double s = 0;
    for (std::size_t b0 = 0; b0 < n; b0 += blk, ++nb) {
        bsum[nb] = detail::cut_sum<A>(p, wp, cut, b0, std::min(n, b0 + blk));
        s += bsum[nb];
    }
    if (!(s > 0)) return npos;
    const double target = u * s;
    double run = 0;
    std::size_t last = npos;
    for (std::size_t b = 0; b < nb; ++b) {
        if (!(run + bsum[b] > target)) {
            run += bsum[b];
            continue;
        }
        const std::size_t e = std::min(n, (b + 1) * blk);
        for (std::size_t i = b * blk; i < e; ++i) {
            if (!(wp[i] > 0) || !cut.contains(p[i], i)) continue;
            run += double(wp[i]);
            last = i;
            if (run > target) return i;
        }
    }
    if (last != npos) return last;
    for (std::size_t i = n; i-- > 0;)  // target unreached: the last kept positive entry
        if (wp[i] > 0 && cut.contains(p[i], i)) return i;
    return npos;
}

/// draw_cut with the kept weights' sum S already known (a truncation kernel's
/// truncation_result::kept_sum for this cut and these weights: the sum the compacted draw would
/// use): one partial pass from the nearer end of the row, the blocks up to the one where u S
/// falls (from the front when u <= 1/2, else from the back against S - u S): at most half a
/// pass, a quarter on average. npos when S is not positive or w.size() < x.size().
template <class A = simd::default_arch>
std::size_t draw_cut(std::span<const float> x, std::span<const float> w, const row_cut& cut,
                     double u, double sum) noexcept {
    const std::size_t n = x.size();
    if (w.size() < n || n == 0 || !(sum > 0)) return npos;
    return detail::draw_cut_scan<A>(x.data(), w.data(), n, cut, sum, u * sum);
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
