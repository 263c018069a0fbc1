#pragma once
/// \file kernels/entropy.hpp
/// The p-weighted mean of d = (x - m) / T (the entropy's part beyond log Z: H = log Z - E_p[d])
/// from one precise exponential pass (entropy_pass: weights.hpp's pass with sum w d in double
/// lanes and a bound of sum w d^2), with a rigorous
/// bound of its error against real arithmetic. Shared by eta (thresholds.hpp: its threshold
/// needs H) and typical (typical.hpp: its scores are distances to E_p[d]).
///
/// The computed c = sum f_i / sum w_i (f_i = fl(w_i d_i), d_i the float argument, w_i its float
/// weight) against C = sum W_i D_i / Z (real weights and arguments). Split as
///   c - C = sum w (d - D) / sum w + sum w d rho / sum w + sum (w - W)(D - C) / sum w,
/// the first two bounded by the argument's and the product's rounding ((arg_error + 2^-24) times
/// sum w |d| / sum w), the last, centred one (sum W (D - C) = 0), by
///   (Z / sum w) (exp_error E|D - C| + arg_error E[|D| |D - C|])
///     <= (1 + beta_Z) (exp_error sigma + arg_error sqrt(E[D^2]) sigma)   (Cauchy-Schwarz),
/// sigma^2 = E[D^2] - C^2 bounded from above with the pass's bound of sum w d^2 and the coarse
/// bound (every weight's error times |d|, as if none cancelled) for C. Centring is what makes it
/// tight: on a high-entropy row E|D| is large (~3.5 on a Gaussian row of 128256) while sigma is
/// ~1, so the coarse bound (~2 E[D^2] arg_error) is ~5x the centred one. Both are valid; the
/// smaller is used.
///
/// compensate() is a second, cheaper pass (no exponential where the row's weights are still
/// stored) for when that is not tight enough: on architectures with an exact fused
/// multiply-add, the rounding of every argument and product, recovered exactly in float (the
/// subtraction's by TwoSum, the products' by fma, the float 1 / T's as the factor gamma of
/// 1 / (T fl(1 / T)) = 1 + gamma): eps_i = D_i - d_i to ~1e-14 |D_i|, so that the weights
/// w_i (1 + eps_i) differ from the real ones by the polynomial's error only (plus eps_i^2). Its
/// mean then errs by (1 + beta_Z) exp_error sigma (+ second-order terms): ~1.2e-7 instead of
/// ~1.6e-6 on that Gaussian row, the difference between typical deciding its crossing in float
/// and a double pass on half of the rows. Without an exact fma it computes nothing (the
/// uncompensated bound stands).

#include <decodekit/config.hpp>
#include <decodekit/kernels/weights.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
namespace detail {

/// Whether simd::fma on architecture A is one fused (exactly rounded once) operation, so that
/// fma(a, b, -fl(a b)) is the product's rounding error exactly.
template <class A>
inline constexpr bool exact_fma =
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
    std::is_base_of_v<xsimd::avx512f, A> || std::is_base_of_v<xsimd::fma3<xsimd::avx2>, A> ||
    std::is_base_of_v<xsimd::fma3<xsimd::avx>, A> ||
    std::is_base_of_v<xsimd::fma3<xsimd::sse4_2>, A>;
#else
    false;
#endif

/// The entries whose weight exceeds thr, collected by entropy_pass (Heavy) as it stores the
/// weights: their ids ascending in ids[0, count) (the set a later pass comparing the stored
/// weights with thr would find, in the same order), overflow when more than cap exceed thr
/// (ids[0, count) is then some of them only). typical.hpp's heavy entries (typical_bounds):
/// one compare per pair of vectors in the pass instead of one more pass over the weights.
struct heavy_entries {
    float thr = 0;
    token_id* ids = nullptr;
    std::size_t cap = 0;
    std::size_t count = 0;
    bool overflow = false;
};

/// One precise pass over the row: w_i to w (Store), their sum and the moments of d (row_sums:
/// sum, wd in double lanes, wd_bound from wd, wd2_bound from float blocks). Paired: the weights
/// and the products of two vectors are added in float before they are widened (half the
/// conversions, the pass's bottleneck: ~25 % faster on AVX-512), which costs one rounding of
/// 2^-24 relative per pair (row_sums::pair_error, carried by row_sums::error and mean_of_d; no
/// compensation then: compensate() does not recover it).
/// Heavy (with Store and Paired): the entries whose stored weight exceeds heavy->thr collected
/// to *heavy (see heavy_entries).
/// \pre m finite (the row max), temperature > 0 with fl(1 / temperature) finite
template <class A, bool Store, bool Paired = false, bool Heavy = false>
row_sums entropy_pass(std::span<const float> x, float m, float temperature, float* w,
                      heavy_entries* heavy = nullptr) noexcept {
    static_assert(!Heavy || (Store && Paired));
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size();
    const B mb(m), tb(1.f / temperature), lo(-200.f);
    struct acc {
        D z0 = D(0.0), z1 = D(0.0), s0 = D(0.0), s1 = D(0.0);
        B f2 = B(0.f);
    } a, b;
    double wd2_f = 0;
    std::size_t covered = 0;  // (Heavy) the pairs' entries [0, covered) are collected
    [[maybe_unused]] const B hb(Heavy ? heavy->thr : 0.f);
    // (Heavy) the entries of [i, i + bits) whose bit is set in mk, ids ascending
    auto collect = [&](std::size_t i, std::uint64_t mk) {
        const auto k = std::size_t(std::popcount(mk));
        if (heavy->count + k > heavy->cap) {
            heavy->overflow = true;
            return;
        }
        for (; mk != 0; mk &= mk - 1)
            heavy->ids[heavy->count++] = token_id(i + std::size_t(std::countr_zero(mk)));
    };
    auto step = [&](const B& v, acc& s, float* out) {
        const B d = (v - mb) * tb;
        const B e = simd::exp_nonpositive<A>(d);
        if constexpr (Store) e.store_unaligned(out);
        simd::widen_add<A>(s.z0, s.z1, e);
        const B c = simd::max_ignore_nan<A>(lo, d);  // NaN, -inf: -200 (e is 0 there)
        const B f = e * c;
        s.f2 = simd::fma<A>(f, c, s.f2);
        simd::widen_add<A>(s.s0, s.s1, f);
    };
    auto flush = [&] {  // float blocks: <= 32 additions per lane before they go to double
        wd2_f += double(simd::reduce_add<A>(a.f2 + b.f2));
        a.f2 = b.f2 = B(0.f);
    };
    // Paired: two vectors' weights and products added in float, then widened once; sums(i, ...)
    // adds the pair from i given its arguments and weights
    auto sums = [&](std::size_t i, const B& da, const B& db, const B& ea, const B& eb) {
        if constexpr (Store) {
            ea.store_unaligned(w + i);
            eb.store_unaligned(w + i + L);
        }
        if constexpr (Heavy) {
            // one branch per pair: ~1000 entries above thr on a Gaussian row of 128256 (a pair
            // holds one in ~8 pairs)
            const std::uint64_t mk = simd::to_mask<A>(ea > hb) | (simd::to_mask<A>(eb > hb) << L);
            if (mk != 0 && !heavy->overflow) collect(i, mk);
            covered = i + 2 * L;
        }
        const B ca = simd::max_ignore_nan<A>(lo, da), cb = simd::max_ignore_nan<A>(lo, db);
        const B fa = ea * ca, fb = eb * cb;
        a.f2 = simd::fma<A>(fa, ca, a.f2);
        b.f2 = simd::fma<A>(fb, cb, b.f2);
        simd::widen_add<A>(a.z0, a.z1, ea + eb);
        simd::widen_add<A>(a.s0, a.s1, fa + fb);
    };
    auto pair = [&](std::size_t i) {
        const B va = B::load_unaligned(p + i), vb = B::load_unaligned(p + i + L);
        const B da = (va - mb) * tb, db = (vb - mb) * tb;
        sums(i, da, db, simd::exp_nonpositive<A>(da), simd::exp_nonpositive<A>(db));
    };
    // Two pairs: their four exponentials in flight at once (simd::exp_nonpositive_n, the same
    // bits), then the pairs added in order as pair() adds them: the same weights and the same
    // sums bit for bit. (One exponential at a time left its ~60-cycle chain latency-bound:
    // this pass 94 -> 83 us at V = 128256 on Zen 3 AVX2, typical's sample() 4-7 % less.)
    auto quad = [&](std::size_t i) {
        B d[4], e[4];
        for (std::size_t j = 0; j < 4; ++j)
            e[j] = d[j] = (B::load_unaligned(p + i + j * L) - mb) * tb;
        simd::exp_nonpositive_n<A, 4>(e);
        sums(i, d[0], d[1], e[0], e[1]);
        sums(i + 2 * L, d[2], d[3], e[2], e[3]);
    };
    auto two = [&](std::size_t i) {
        if constexpr (Paired) {
            pair(i);
        } else {
            step(B::load_unaligned(p + i), a, out_at<Store>(w, i));
            step(B::load_unaligned(p + i + L), b, out_at<Store>(w, i + L));
        }
    };
    auto one = [&](const B& v, float* out) { step(v, a, out); };
    if constexpr (Paired)
        exp_blocks<A, Store>(p, w, n, quad, two, one, flush);
    else
        exp_blocks<A, Store>(p, w, n, two, one, flush);
    if constexpr (Heavy)  // the entries after the last pair (< 2 vectors and the tail)
        for (std::size_t i = covered; i < n && !heavy->overflow; ++i)
            if (w[i] > heavy->thr) collect(i, 1);
    row_sums r;
    r.sum = simd::reduce_add<A>((a.z0 + a.z1) + (b.z0 + b.z1));
    r.wd = -simd::reduce_add<A>((a.s0 + a.s1) + (b.s0 + b.s1));
    r.pair_error = Paired ? 0x1p-24 : 0.0;
    // sum w |d| <= sum |f| / (1 - 2^-24), f added in double lanes (n 2^-53) (and in float
    // pairs: sum |f| <= wd / (1 - 2^-24))
    r.wd_bound = r.wd * (1 + 0x1p-23) * (1 + 2 * r.pair_error) * (1 + sum_error(n)) + 1e-300;
    // float blocks: <= 32 additions per lane, a 16-lane reduction and the products: 64 u
    constexpr double inflate = 1 + 64 * 0x1p-24;
    r.wd2_bound = wd2_f * inflate * inflate + 1e-300;
    return r;
}

/// The corrections of compensate(): sum w_i eps_i and sum (w_i d_i - f_i) + w_i eps_i (1 + d_i)
/// (signed: d <= 0); `valid` false where the architecture has no exact fma (nothing computed).
struct corrections {
    bool valid = false;
    double z = 0;
    double wd = 0;
    double sum = 0;     ///< sum of w_i, every weight widened to double (no float pairs)
    double wd_sum = 0;  ///< -sum of f_i = fl(w_i max(d_i, -200)), likewise (>= 0)
};

/// The row_sums of an unpaired entropy_pass from compensate()'s own sums (its sum and wd, and
/// wd_bound from them; wd2_bound: the paired pass's, which has no pairs). For a paired pass
/// (pair_error > 0), whose mean mean_of_d cannot compensate. \pre k.valid
inline row_sums unpaired_sums(const row_sums& paired, const corrections& k,
                              std::size_t n) noexcept {
    row_sums r = paired;
    r.sum = k.sum;
    r.wd = k.wd_sum;
    r.pair_error = 0;
    r.wd_bound = r.wd * (1 + 0x1p-23) * (1 + sum_error(n)) + 1e-300;
    return r;
}

/// One pass recovering every argument's and product's rounding of entropy_pass (see the file
/// comment): w holds the row's weights from `from` on (below, they are recomputed).
/// \pre as entropy_pass
template <class A>
corrections compensate(std::span<const float> x, float m, float temperature, const float* w,
                       std::size_t from) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    corrections r;
    if constexpr (exact_fma<A>) {
        const float* p = x.data();
        const std::size_t n = x.size(), nfull = n / L * L;
        const float inv_t = 1.f / temperature;
        // 1 / T = fl(1 / T) (1 + gamma); T fl(1 / T) is exact in double
        const float gamma = float(1.0 / (double(temperature) * double(inv_t)) - 1.0);
        const B mb(m), nmb(-m), tb(inv_t), gb(gamma), lo(-200.f), zero(0.f), one(1.f);
        B cz(0.f), cw(0.f);
        using D = simd::dbatch<A>;
        D s0(0.0), s1(0.0), f0(0.0), f1(0.0);  // the unpaired sums of w and f
        auto step = [&](const B& v, const B& e) {
            const B sv = v - mb;
            const B d = sv * tb;
            const B bb = sv - v;  // TwoSum(v, -m): v - m = sv + e1 exactly
            const B e1 = (v - (sv - bb)) + (nmb - bb);
            const B e2 = simd::fma<A>(sv, tb, zero - d);  // sv fl(1/T) = d + e2 exactly
            const B eps = simd::fma<A>(d, gb, simd::fma<A>(e1, tb, e2));
            const B we = simd::select<A>(e > zero, e * eps, zero);  // NaN, -inf lanes: 0
            const B c = simd::max_ignore_nan<A>(lo, d);
            const B f = e * c;
            const B e3 = simd::fma<A>(e, c, zero - f);  // e c = f + e3 exactly
            cz += we;
            cw += simd::fma<A>(we, c + one, e3);
            simd::widen_add<A>(s0, s1, e);
            simd::widen_add<A>(f0, f1, f);
        };
        std::size_t i = 0;
        while (i < nfull) {
            const std::size_t end = std::min(nfull, i + 32 * L);
            for (; i < end; i += L) {
                const B v = B::load_unaligned(p + i);
                step(v, i >= from ? B::load_unaligned(w + i) : weight_lanes<A>(v, mb, tb));
            }
            r.z += double(simd::reduce_add<A>(cz));
            r.wd += double(simd::reduce_add<A>(cw));
            cz = cw = zero;
        }
        if (i < n) {
            alignas(64) float buf[L];
            for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? p[i + j] : detail::neg_inf_f;
            const B v = B::load_aligned(buf);
            step(v, weight_lanes<A>(v, mb, tb));
            r.z += double(simd::reduce_add<A>(cz));
            r.wd += double(simd::reduce_add<A>(cw));
        }
        r.sum = simd::reduce_add<A>(s0 + s1);
        r.wd_sum = -simd::reduce_add<A>(f0 + f1);
        r.valid = true;
    }
    return r;
}

/// The p-weighted mean of d of one precise pass and the bounds that come with it.
struct weighted_mean {
    double z = 0;       ///< sum of the float weights (rs.sum)
    double beta_z = 0;  ///< relative error bound of z against the real Z (n 2^-53 included)
    double c = 0;       ///< -E_p[d] = rs.wd / z (>= 0: d <= 0)
    double dc = 0;      ///< bound of |c - the real -E_p[D]|
};

/// The mean of d of an entropy_pass over n entries with its error bound, compensated when k is
/// valid (see the file comment). \pre rs.sum > 0
inline weighted_mean mean_of_d(const row_sums& rs, std::size_t n,
                               const corrections& k = {}) noexcept {
    weighted_mean r;
    const double z = rs.sum;
    r.z = z;
    const double z_error = rs.error(n) + sum_error(n) * z;
    r.beta_z = z_error / z;
    const double c = rs.wd / z;
    r.c = c;
    // coarse: every weight's error times its |d| (no cancellation assumed), and Z's
    const double coarse = (2 * exp_error * rs.wd_bound +
                           arg_error * (2 * rs.wd2_bound + rs.wd_bound * c) + 4 * 0x1p-24 * rs.wd) /
                              z * (1 + 1e-6) +
                          c * r.beta_z + 2 * rs.pair_error * c;
    r.dc = coarse;
    const double zl = z - z_error;
    if (!(zl > 0) || !std::isfinite(coarse)) return r;
    // E[D^2] from above: sum w d^2 (its float-block bound) against sum W D^2 (weights within
    // exp_error + arg_error 87 of each other where not flushed, d^2 within 7 2^-24 of D^2), the
    // flushed entries' W D^2 <= e^-87 87^2 each
    const double m2 = (rs.wd2_bound * (1 + 2e-5) + double(n) * 1.3e-34) / zl;
    const double c_lo = std::max(0.0, c - coarse);
    const double var = std::max(0.0, m2 - c_lo * c_lo);
    const double sigma = std::sqrt(var);
    const double centred =
        (1 + r.beta_z) * (exp_error * sigma + arg_error * std::sqrt(m2) * sigma) * (1 + 1e-6) +
        double(n) * flush_error * (87 + c + coarse) / zl;
    // (the products' and the arguments' rounding, the double sums', and the float pairs' of the
    // paired pass: wd's, and z's carried into c)
    const double rounding = (arg_error + 0x1p-24) * (1 + 1e-6) * rs.wd_bound / z +
                            2 * sum_error(n) * c + 2 * rs.pair_error * c * (1 + 1e-6) + 1e-300;
    r.dc = std::min(coarse, centred + rounding);
    if (!k.valid || rs.pair_error > 0) return r;  // (compensate() does not recover the pairs')
    // compensated: the weights w (1 + eps) err by exp_error (1 + 2 exp_error) + eps^2 relative,
    // eps^2 <= arg_error^2 87 |D| where w > 0; the numerator misses sum w eps^2 (<= arg_error^2
    // sum w d^2); the float-block corrections (terms <= ~1.8e-7 w |d| (|d| + 1), summed in float
    // blocks: ~36 roundings, 2.2e-6 of their magnitude) err by < 4e-13 (sum w d^2 + sum w |d|),
    // and k.z's rounding moves cc by < 4e-13 c E|d| <= 4e-13 E[d^2]: 1e-12 of each covers both
    const double zc = z + k.z;
    const double cc = (rs.wd - k.wd) / zc;
    const double dcc =
        (1 + r.beta_z) * (1 + 1e-6) *
            (exp_error * (1 + 1e-6) * sigma + arg_error * arg_error * 87 * std::sqrt(m2) * sigma) +
        double(n) * flush_error * (87 + c + coarse) / zl +
        arg_error * arg_error * m2 * (1 + r.beta_z) + 1e-12 * (rs.wd_bound + 2 * rs.wd2_bound) / z +
        4 * sum_error(n) * cc + 1e-300;
    if (std::isfinite(cc) && std::isfinite(dcc) && dcc < r.dc && zc > 0) {
        r.c = cc;
        r.dc = dcc;
    }
    return r;
}

}  // namespace detail
}  // namespace kernels
DECODEKIT_END_NAMESPACE
