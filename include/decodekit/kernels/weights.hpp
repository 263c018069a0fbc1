#pragma once
/// \file kernels/weights.hpp
/// What the truncation kernels (nucleus.hpp, typical.hpp, thresholds.hpp, xtc.hpp) share: the
/// exponential pass that computes every weight of a row once, the error bounds that make their
/// float decisions exact, the double-precision pass of their rare second tier, and the
/// reference tier.
///
/// Weights: w_i = exp_nonpositive((x_i - m) * (1/T)) in float, m the row max (simd::
/// exp_nonpositive: 0 for NaN, -inf and d < -87). Against the real W_i = e^{(x_i - m)/T}:
///   |w_i - W_i| <= W_i (exp_error + arg_error |d_i|) + flush_error,
/// exp_error covering the polynomial (its largest relative error over every float d in [-87, 0],
/// measured exhaustively: 8.53e-8 with FMA, 8.31e-8 without, on every x86 architecture xsimd
/// offers; a test re-checks it on a sample), arg_error the rounding of d = fl(fl(x - m) * fl(1/T))
/// (three roundings: |d - D| <= 3 2^-24 |D|, which moves e^d by that much relative), flush_error
/// the weights below e^-87 that the polynomial flushes to 0.
/// Sums of float weights are accumulated in double lanes (every float widened), so they are
/// exact up to n 2^-53 relative, or (top-p's fused pass) in float trees of 8 vectors widened once,
/// whose rounding (3 2^-24 relative) row_sums::pair_error carries into the bounds; sums that only
/// feed a bound are accumulated in float blocks and inflated by their worst-case rounding.
/// The argument's rounding is not an error of unknown sign: corrected_pass recovers it for every
/// entry (delta_i = d_i - D_i in double) without an exponential, and w_i (1 - delta_i) is within
/// corrected_error (the exponential's error plus second-order terms) of W_i.

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

namespace detail {

/// Relative error bound of simd::exp_nonpositive (measured 8.53e-8, see the file comment).
inline constexpr double exp_error = 1.2e-7;
/// Relative error of e^d per unit of |d| from the rounding of d (3 2^-24 with slack).
inline constexpr double arg_error = 1.8e-7;
/// Absolute error per entry from the flush of weights below e^-87 (and subnormal rounding).
inline constexpr double flush_error = 2e-38;
/// Relative error bound of one double weight of double_pass (exp_nonpositive_double, measured
/// below 2.5e-16 by the tests) plus the rounding of its argument, per unit of |D| (3 2^-53).
inline constexpr double exp_error_double = 4e-16;
inline constexpr double arg_error_double = 3.4e-16;

/// Relative error of a sum of n non-negative double terms added in double (n 2^-53, with slack).
inline double sum_error(std::size_t n) noexcept { return double(n + 8) * 0x1p-52; }

/// How far the reference's double arithmetic may stray from real arithmetic on a row of n
/// entries, as an absolute error on a probability or on a mass in [0, 1]: its weights (a libm
/// exp of a rounded argument: (|D| + 2) 2^-52 each, |D| < 746 where the weight is not 0), its
/// sums in id order, the quotients W / Z and their running sum.
inline double reference_error(std::size_t n) noexcept { return double(2 * n + 800) * 0x1p-52; }

/// Upper bound of sum W_i |D_i| over `count` entries (W_i = e^{D_i} <= 1 the real weights) whose
/// float weights add up to `mass` (each within 1.6e-5 relative plus flush_error of W_i, the sum
/// within 1e-5 relative plus abs_err of theirs): by Jensen's inequality for the concave f(t) = -t
/// ln t on [0, 1], at most count * (the largest f over the interval of the real mean weight). Costs
/// no pass (no w |d| summed per entry); within a few percent of the sum on Gaussian and flat rows.
inline double wd_jensen_bound(double mass, std::size_t count, double abs_err = 0) noexcept {
    if (count == 0) return 0;
    const double k = double(count), slack = abs_err + k * flush_error;
    const double t_hi = std::min(1.0, (mass * (1 + 1e-4) + slack) / k);
    const double t_lo = std::max(0.0, (mass * (1 - 1e-4) - slack) / k);
    constexpr double inv_e = 0.36787944117144233;
    auto f = [](double t) { return t > 0 ? -t * std::log(t) : 0.0; };
    const double fmax = t_hi < inv_e ? f(t_hi) : t_lo > inv_e ? f(t_lo) : inv_e;
    // (f's rounding, and the flushed weights' W |D| <= 104 flush_error each)
    return k * fmax * (1 + 1e-9) + k * 104 * flush_error + 1e-300;
}

/// The float weights of a vector of logits (the one expression every pass uses, so that a weight
/// recomputed later is the stored one bit for bit).
template <class A>
inline simd::batch<A> weight_lanes(const simd::batch<A>& v, const simd::batch<A>& mb,
                                   const simd::batch<A>& tb) noexcept {
    return simd::exp_nonpositive<A>((v - mb) * tb);
}

/// weight_lanes for one logit.
template <class A>
inline float weight_one(float v, float m, float inv_t) noexcept {
    using B = simd::batch<A>;
    alignas(64) float buf[simd::lanes<A>];
    weight_lanes<A>(B(v), B(m), B(inv_t)).store_aligned(buf);
    return buf[0];
}

/// The sums of one exponential pass over a row.
struct row_sums {
    double sum = 0;  ///< sum of w_i, exact up to n 2^-53
    /// sum of w_i (m - x_i) / T in double (d clamped at -200 where w_i = 0; the float products
    /// w_i d_i added in double lanes); 0 from weigh_row (entropy.hpp's pass sets it)
    double wd = 0;
    /// upper bound of sum w_i |d_i| (float blocks, inflated by their rounding)
    double wd_bound = 0;
    /// upper bound of sum w_i d_i^2 (float blocks, inflated by their rounding); 0 from
    /// weigh_row (entropy.hpp's pass sets it)
    double wd2_bound = 0;
    /// relative rounding of float additions made before the double sums (entropy.hpp's paired
    /// pass: 2^-24, one per pair of vectors; nucleus.hpp's fused pass: 3 2^-24, trees of 8
    /// vectors; 0: every float widened)
    double pair_error = 0;

    /// Bound on |sum - sum of the real weights| (before the double additions' n 2^-53).
    double error(std::size_t n) const noexcept {
        return (exp_error * sum + arg_error * wd_bound) * (1 + 1e-6) + pair_error * sum +
               double(n) * flush_error;
    }
};

/// w + i where a pass stores its weights; nullptr where it does not (w may then be null, and an
/// offset from a null pointer is undefined even when nothing is written through it).
template <bool Store>
constexpr float* out_at(float* w, std::size_t i) noexcept {
    if constexpr (Store)
        return w + i;
    else
        return nullptr;
}

/// The block driver of the exponential passes (weigh_row, entropy.hpp's entropy_pass): over the
/// whole vectors of p[0, n), in blocks of 32 vectors, two(i) for each pair of vectors from i,
/// one(v, w + i) for a last single one, flush() after each block (the float accumulators go to
/// double); the tail padded with -inf into one vector (same lanes, same weights) through one(v,
/// buffer), its weights copied to w (Store), and a flush. With four (Quads): four(i) for two
/// pairs from i where a block has them (it must do what two(i), two(i + 2 L) would), two(i) for
/// a last pair.
template <class A, bool Store, bool Quads, class Four, class Two, class One, class Flush>
inline void exp_blocks_impl(const float* p, float* w, std::size_t n, Four&& four, Two&& two,
                            One&& one, Flush&& flush) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t nfull = n / L * L;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 32 * L);
        if constexpr (Quads)
            for (; i + 4 * L <= end; i += 4 * L) four(i);
        for (; i + 2 * L <= end; i += 2 * L) two(i);
        for (; i < end; i += L) one(B::load_unaligned(p + i), out_at<Store>(w, i));
        flush();
    }
    if (i < n) {
        alignas(64) float buf[L], wb[L];
        for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? p[i + j] : detail::neg_inf_f;
        one(B::load_aligned(buf), wb);
        if constexpr (Store)
            for (std::size_t j = 0; i + j < n; ++j) w[i + j] = wb[j];
        flush();
    }
}

/// exp_blocks_impl by pairs (the unpaired entropy_pass).
template <class A, bool Store, class Two, class One, class Flush>
inline void exp_blocks(const float* p, float* w, std::size_t n, Two&& two, One&& one,
                       Flush&& flush) noexcept {
    exp_blocks_impl<A, Store, false>(p, w, n, two, two, one, flush);
}

/// exp_blocks_impl by two pairs at a time (entropy_pass's paired pass, weigh_row).
template <class A, bool Store, class Four, class Two, class One, class Flush>
inline void exp_blocks(const float* p, float* w, std::size_t n, Four&& four, Two&& two, One&& one,
                       Flush&& flush) noexcept {
    exp_blocks_impl<A, Store, true>(p, w, n, four, two, one, flush);
}

/// One pass: w_i for every entry (stored to w when Store), their sum and wd_bound in row_sums
/// (entropy.hpp's entropy_pass also gives wd and wd2_bound).
/// \pre m finite (the row max), inv_t finite and > 0
template <class A, bool Store>
row_sums weigh_row(std::span<const float> x, float m, float inv_t, float* w) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size();
    const B mb(m), tb(inv_t), lo(-200.f);
    // two independent sets of accumulators (even and odd vectors): no add waits on the last one
    struct acc {
        D z0 = D(0.0), z1 = D(0.0);
        B fs = B(0.f);
    } a, b;
    double wd_f = 0;
    // one vector's weights e of arguments d: stored, added to s
    auto add = [&](const B& d, const B& e, acc& s, float* out) {
        if constexpr (Store) e.store_unaligned(out);
        simd::widen_add<A>(s.z0, s.z1, e);
        const B c = simd::max_ignore_nan<A>(lo, d);  // NaN, -inf: -200 (e is 0 there)
        const B f = e * c;
        s.fs += f;
    };
    auto one = [&](const B& v, acc& s, float* out) {
        const B d = (v - mb) * tb;
        add(d, simd::exp_nonpositive<A>(d), s, out);
    };
    auto flush = [&] {
        // float blocks: <= 32 additions per lane before they go to double
        wd_f -= double(simd::reduce_add<A>(a.fs + b.fs));
        a.fs = b.fs = B(0.f);
    };
    // Two pairs: their four exponentials in flight at once (simd::exp_nonpositive_n, the same
    // bits), then added as two() adds the pairs (even vectors to a, odd to b): the same weights
    // and sums bit for bit. One at a time left each ~60-cycle chain latency-bound: max and this
    // pass 95 -> 69 us at V = 128256 on Zen 3 AVX2; sample() of XTC 92 -> 78 us, epsilon and
    // mirostat (HF, T 1.5) 112-121 -> 95-104 us (min of 8 alternating runs). (weigh_logits the
    // same way made typical 8-16 % slower when GCC then stopped inlining typical_split_row's
    // per-vector step, now DECODEKIT_ALWAYS_INLINE; store_weights has four in flight.)
    auto four = [&](std::size_t i) {
        B d[4], e[4];
        for (std::size_t j = 0; j < 4; ++j)
            e[j] = d[j] = (B::load_unaligned(p + i + j * L) - mb) * tb;
        simd::exp_nonpositive_n<A, 4>(e);
        for (std::size_t j = 0; j < 4; ++j)
            add(d[j], e[j], j % 2 == 0 ? a : b, out_at<Store>(w, i + j * L));
    };
    exp_blocks<A, Store>(
        p, w, n, four,
        [&](std::size_t i) {
            one(B::load_unaligned(p + i), a, out_at<Store>(w, i));
            one(B::load_unaligned(p + i + L), b, out_at<Store>(w, i + L));
        },
        [&](const B& v, float* out) { one(v, a, out); }, flush);
    row_sums r;
    r.sum = simd::reduce_add<A>((a.z0 + a.z1) + (b.z0 + b.z1));
    // float blocks: <= 32 additions per lane, a 16-lane reduction and the products: 64 u
    constexpr double inflate = 1 + 64 * 0x1p-24;
    r.wd_bound = wd_f * inflate + 1e-300;
    return r;
}

/// The double-precision sums of double_pass.
struct double_sums {
    double sum = 0;       ///< sum of W_i
    double wd = 0;        ///< sum of W_i |D_i|
    double in_set = 0;    ///< sum of W_i over the entries the predicate selects
    double wd_bound = 0;  ///< sum W_i |D_i| inflated by its rounding

    /// Bound on |sum - sum of the real weights| (relative to nothing: absolute).
    double error(std::size_t n) const noexcept {
        return (exp_error_double + sum_error(n)) * sum + arg_error_double * wd_bound +
               double(n) * 1e-307;
    }
};

/// double_pass's in_set for a caller that needs no partial sum: no entry is counted.
inline constexpr auto no_partial_sum = []<class A>(const simd::batch<A>&, std::size_t) noexcept {
    return simd::batch_bool<A>(false);
};

/// One double-precision pass over the row: W_i = e^{D_i}, D_i = (x_i - m) / T computed as
/// (double(x_i) - m) * (1 / T) in double, by simd::exp_nonpositive_double; their sum, the sum of
/// W_i |D_i|, and the sum over the entries for which in_set(v, i) (a float mask for the vector v
/// of entries i .. i + L - 1; entries past the row are -inf and never counted) holds.
/// \pre m finite, temperature > 0 with 1 / T finite
template <class A, class InSet>
double_sums double_pass(std::span<const float> x, float m, float temperature,
                        InSet&& in_set) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size();
    const D md = D(double(m)), td = D(1.0 / double(temperature)), zero = D(0.0);
    D z(0.0), s(0.0), k(0.0);
    auto half = [&](const D& v, const D& sel) {
        const D d = (v - md) * td;
        const D e = simd::exp_nonpositive_double<A>(d);  // NaN, -inf: 0
        z += e;
        s += simd::select<A>(e > zero, e * d, zero);
        k += e * sel;
    };
    auto one = [&](const B& v, std::size_t i) {
        D lo, hi, slo, shi;
        simd::widen<A>(v, lo, hi);
        simd::widen<A>(simd::select<A>(in_set(v, i), B(1.f), B(0.f)), slo, shi);
        half(lo, slo);
        half(hi, shi);
    };
    std::size_t i = 0;
    // Two vectors (four double halves) at a time: their exponentials interleaved
    // (simd::exp_nonpositive_double_n, the same bits), then added in the order of one(), so the
    // sums are the same bit for bit. One half at a time left the degree-13 Horner chains
    // latency-bound.
    for (; i + 2 * L <= n; i += 2 * L) {
        const B v[2] = {B::load_unaligned(p + i), B::load_unaligned(p + i + L)};
        D dv[4], sel[4];
        for (std::size_t j = 0; j < 2; ++j) {
            simd::widen<A>(v[j], dv[2 * j], dv[2 * j + 1]);
            simd::widen<A>(simd::select<A>(in_set(v[j], i + j * L), B(1.f), B(0.f)), sel[2 * j],
                           sel[2 * j + 1]);
        }
        D d[4], e[4];
        for (std::size_t j = 0; j < 4; ++j) e[j] = d[j] = (dv[j] - md) * td;
        simd::exp_nonpositive_double_n<A, 4>(e);
        for (std::size_t j = 0; j < 4; ++j) {
            z += e[j];
            s += simd::select<A>(e[j] > zero, e[j] * d[j], zero);
            k += e[j] * sel[j];
        }
    }
    for (; i + L <= n; i += L) one(B::load_unaligned(p + i), i);
    if (i < n) {
        alignas(64) float buf[L];
        for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? p[i + j] : detail::neg_inf_f;
        one(B::load_aligned(buf), i);
    }
    double_sums r;
    r.sum = simd::reduce_add<A>(z);
    r.wd = -simd::reduce_add<A>(s);
    r.in_set = simd::reduce_add<A>(k);
    r.wd_bound = r.wd * (1 + sum_error(n)) + 1e-300;
    return r;
}

/// Relative error, against the real weight W_i = e^{D_i}, of a float weight corrected to first
/// order for its argument's rounding, w_i (1 - delta_i) with delta_i = d_i - D_i (corrected_pass):
/// W_i = w_i e^{-delta_i} / (1 + eps_i), |eps_i| <= exp_error the exponential's own error at the
/// float d_i; e^{-delta} = 1 - delta + g with 0 <= g <= delta^2 e^{|delta|} / 2, so
/// |W_i - w_i (1 - delta_i)| <= w_i ((1 + |delta_i|) exp_error + g) / (1 - exp_error). Where
/// w_i > 0, d_i >= -87 and |delta_i| <= 3 2^-24 |D_i| (the file comment) < 2e-5: (1 + 2e-5)
/// exp_error (1 + 1.3e-7) and g < 2.1e-10; delta_i is computed in double from the float d_i
/// (exact) and (double(x_i) - m) * (1 / T) (three roundings of 2^-53: 3.4e-16 |D_i| < 4e-14).
inline constexpr double corrected_error = exp_error * (1 + 3e-5) + 3e-10 + 4e-14;

/// The sums of corrected_pass.
struct corrected_sums {
    double sum = 0;     ///< sum of w_i over the row (every float weight widened to double)
    double fix = 0;     ///< sum of w_i delta_i over the row (delta_i = d_i - D_i)
    double in_sum = 0;  ///< sum of w_i over the entries with x_i >= hi
    double in_fix = 0;  ///< sum of w_i delta_i over them
};

/// One read pass (no exponential where the row's weights are stored) recovering the rounding of
/// every weight's argument: delta_i = d_i - D_i, d_i = fl(fl(x_i - m) * fl(1 / T)) the float
/// argument of weight_lanes and D_i = (x_i - m) / T computed in double; returns the sums of w_i
/// and of w_i delta_i over the row and over the entries with x_i >= hi (hi = +inf: none), in
/// double lanes. sum - fix is then the row's normaliser to corrected_error relative (plus the
/// sums' rounding, 2 sum_error(n) relative, and flush_error per entry whose weight is 0); likewise
/// in_sum - in_fix for the part at or above hi. w: the row's weights from `fresh` on (below,
/// recomputed). Entries of weight 0 (NaN, -inf, d < -87) add nothing.
/// \pre m finite (the row max), temperature > 0 with 1 / temperature finite
template <class A>
corrected_sums corrected_pass(std::span<const float> x, const float* w, std::size_t fresh, float m,
                              float temperature, float hi) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size();
    const float inv_t = 1.f / temperature;
    const B mb(m), tb(inv_t), zero(0.f);
    const D md = D(double(m)), td = D(1.0 / double(temperature)), hd = D(double(hi)), dz = D(0.0);
    // per half: the sums of w, w delta, and of both over x >= hi
    struct acc {
        D s = D(0.0), f = D(0.0), si = D(0.0), fi = D(0.0);
    } lo_acc, hi_acc;
    auto half = [&](const D& v, const D& d, const D& e, acc& a) DECODEKIT_ALWAYS_INLINE {
        const D delta = d - (v - md) * td;
        const auto in = v >= hd;
        a.s += e;
        a.f = simd::fma<A>(e, delta, a.f);
        const D ei = simd::select<A>(in, e, dz);
        a.si += ei;
        a.fi = simd::fma<A>(ei, delta, a.fi);
    };
    auto one = [&](B v, const B& e) DECODEKIT_ALWAYS_INLINE {
        v = simd::select<A>(e > zero, v, mb);  // weight 0: argument 0 (no NaN, no infinity)
        const B d = (v - mb) * tb;             // the weight's argument, bit for bit
        D vl, vh, dl, dh, el, eh;
        simd::widen<A>(v, vl, vh);
        simd::widen<A>(d, dl, dh);
        simd::widen<A>(e, el, eh);
        half(vl, dl, el, lo_acc);
        half(vh, dh, eh, hi_acc);
    };
    // the vectors below fresh with their weights computed, then the rest with theirs read: two
    // loops, so that the loop over the row holds no exponential (typical_split_row's note)
    const std::size_t nfull = n / L * L, recompute = std::min(nfull, (fresh + L - 1) / L * L);
    std::size_t i = 0;
    for (; i < recompute; i += L) {
        const B v = B::load_unaligned(p + i);
        one(v, weight_lanes<A>(v, mb, tb));
    }
    for (; i < nfull; i += L) one(B::load_unaligned(p + i), B::load_unaligned(w + i));
    if (i < n) {
        alignas(64) float buf[L], wb[L];
        for (std::size_t j = 0; j < L; ++j) {
            buf[j] = i + j < n ? p[i + j] : neg_inf_f;
            wb[j] = i + j < n && i + j >= fresh ? w[i + j] : 0.f;
        }
        const B v = B::load_aligned(buf);
        B e = B::load_aligned(wb);
        if (i < fresh) {  // (recomputed lanes below fresh; -inf padding weighs 0)
            const B r = weight_lanes<A>(v, mb, tb);
            alignas(64) float rb[L];
            r.store_aligned(rb);
            for (std::size_t j = 0; j < L; ++j)
                if (i + j < fresh) wb[j] = rb[j];
            e = B::load_aligned(wb);
        }
        one(v, e);
    }
    corrected_sums r;
    r.sum = simd::reduce_add<A>(lo_acc.s + hi_acc.s);
    r.fix = simd::reduce_add<A>(lo_acc.f + hi_acc.f);
    r.in_sum = simd::reduce_add<A>(lo_acc.si + hi_acc.si);
    r.in_fix = simd::reduce_add<A>(lo_acc.fi + hi_acc.fi);
    return r;
}

/// The rounding-corrected argument error of one entry, as corrected_pass computes it:
/// delta = d - D for d = fl(fl(v - m) * fl(1 / T)) and D = (v - m) / T in double; 0 for an entry
/// whose weight is 0 (w_v == 0).
inline double argument_delta(float v, float w_v, float m, float temperature) noexcept {
    if (!(w_v > 0)) return 0;
    const float d = (v - m) * (1.f / temperature);
    return double(d) - (double(v) - double(m)) * (1.0 / double(temperature));
}

/// Bound on |b / z - the reference's mass| for corrected masses (corrected_pass): b the prefix's
/// corrected mass (float weights summing to s_pre over `count` entries), z the row's (float
/// weights summing to s_tot over n entries). The prefix errs by e_b <= corrected_error s_pre +
/// count flush_error + its rounding (the pass's sums and the walk's additions, 3 sum_error(n)
/// s_pre); the rest of z by e_t <= corrected_error (s_tot - s_pre) + n flush_error + both sums'
/// rounding; b / z - B / Z = (T e_b' - B e_t') / (Z z) for the signed errors, so at most
/// ((t + e_t) e_b + (b + e_b) e_t) / ((z - e_b - e_t) z); plus the reference's own error and
/// the quotient's rounding.
inline double corrected_ratio_error(double b, double s_pre, std::size_t count, double z,
                                    double s_tot, std::size_t n) noexcept {
    const double t = std::max(0.0, z - b), se = sum_error(n);
    const double eb = (corrected_error + 3 * se) * s_pre + double(count) * flush_error;
    const double et = corrected_error * std::max(0.0, s_tot - s_pre) + double(n) * flush_error +
                      2 * se * s_tot + 3 * se * s_pre;
    const double den = (z - eb - et) * z;
    if (!(den > 0)) return std::numeric_limits<double>::infinity();
    return ((t + et) * eb + (b + eb) * et) / den * (1 + 1e-12) + 4 * se + reference_error(n);
}

/// Sorts out's entries by id (the reference's sets come in rank order). Key storage as scratch.
inline void sort_by_id(candidates& out) noexcept {
    const std::size_t c = out.size();
    std::uint64_t* keys = out.key_storage();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    for (std::size_t j = 0; j < c; ++j)
        keys[j] =
            (std::uint64_t(std::uint32_t(ids[j])) << 32) | std::bit_cast<std::uint32_t>(lg[j]);
    std::sort(keys, keys + c);
    for (std::size_t j = 0; j < c; ++j) {
        ids[j] = token_id(keys[j] >> 32);
        lg[j] = std::bit_cast<float>(std::uint32_t(keys[j]));
    }
}

/// The weights of the logits lg[0, c) (w_j = exp((lg_j - m) / T) by weight_lanes, so equal to a
/// row pass's) written to w[0, c); returns their double sum. \pre m finite, inv_t finite > 0
template <class A>
double weigh_logits(const float* lg, std::size_t c, float m, float inv_t, float* w) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B mb(m), tb(inv_t);
    D s0(0.0), s1(0.0);
    std::size_t j = 0;
    for (; j + L <= c; j += L) {
        const B e = weight_lanes<A>(B::load_unaligned(lg + j), mb, tb);
        e.store_unaligned(w + j);
        simd::widen_add<A>(s0, s1, e);
    }
    double s = simd::reduce_add<A>(s0 + s1);
    for (; j < c; ++j) {
        w[j] = weight_one<A>(lg[j], m, inv_t);
        s += double(w[j]);
    }
    return s;
}

/// weigh_logits without the sum (a restore of weights another pass overwrote): no double
/// additions, so nothing waits on the previous vector; the tail padded with -inf into one vector.
template <class A>
void store_weights(const float* lg, std::size_t c, float m, float inv_t, float* w) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B mb(m), tb(inv_t);
    std::size_t j = 0;
    // four vectors' exponentials in flight (simd::exp_nonpositive_n: weight_lanes' bits)
    for (; j + 4 * L <= c; j += 4 * L) {
        B e[4];
        for (std::size_t k = 0; k < 4; ++k) e[k] = (B::load_unaligned(lg + j + k * L) - mb) * tb;
        simd::exp_nonpositive_n<A, 4>(e);
        for (std::size_t k = 0; k < 4; ++k) e[k].store_unaligned(w + j + k * L);
    }
    for (; j + L <= c; j += L)
        weight_lanes<A>(B::load_unaligned(lg + j), mb, tb).store_unaligned(w + j);
    if (j < c) {
        alignas(64) float buf[L], wb[L];
        for (std::size_t q = 0; q < L; ++q) buf[q] = j + q < c ? lg[j + q] : neg_inf_f;
        weight_lanes<A>(B::load_aligned(buf), mb, tb).store_aligned(wb);
        for (std::size_t q = 0; j + q < c; ++q) w[j + q] = wb[q];
    }
}

}  // namespace detail
}  // namespace kernels
DECODEKIT_END_NAMESPACE
