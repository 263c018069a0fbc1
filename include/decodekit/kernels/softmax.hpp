#pragma once
/// \file kernels/softmax.hpp
/// softmax, log-softmax and the normaliser, temperature fused (no scaling pass); entropy.
/// Semantics: kernels/reference.hpp (within 1e-6 relative for sums, 1e-5 relative per
/// probability). No random numbers are consumed.
///
/// Passes: exp_sum 2 (max; fused exp-and-sum), softmax 3 (max; exp, store and sum; scale by
/// 1/Z), log_softmax 3 (max; exp-sum; write (x - m)/T - log Z), entropy 2 (max; one pass summing
/// w and w * (x - m)/T). Sums use 4 float accumulators per 1024-entry block, blocks added in
/// double; exponentials by simd::exp_nonpositive (about 2 ulp; 0 below max - 87 T, 0 for NaN).
/// Rows with +inf, no valid entry, or a subnormal temperature or one above 2^120 use the reference
/// path. softmax also takes a token_bitmask (kernels/mask.hpp), read inside its passes.

#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

using reference::softmax_stats;

namespace detail {

/// softmax of r[0, n) into out[0, n); see kernels::softmax. \pre m = max of r, finite;
/// inv_t finite.
template <class A, class Row>
double softmax_of(const Row r, std::size_t n, float m, float inv_t, float* o) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const double s = detail::exp_pass<A, true>(r, n, m, inv_t, o);
    const float rs = float(1.0 / s);
    const B rb(rs);
    std::size_t i = 0;
    for (; i + L <= n; i += L) (B::load_unaligned(o + i) * rb).store_unaligned(o + i);
    for (; i < n; ++i) o[i] *= rs;
    return s;
}

}  // namespace detail

/// out_i = p_i = exp((x_i - m)/T) / Z; all zeros when no entry has probability.
/// \pre out.size() == x.size(), temperature > 0
template <class A = simd::default_arch>
softmax_stats softmax(std::span<const float> x, std::span<float> out,
                      float temperature = 1.f) noexcept {
    DECODEKIT_ASSERT(out.size() == x.size(), "softmax: out.size() must equal x.size()");
    const float m = kernels::max<A>(x);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
        return reference::softmax(x, out, temperature);
    return {m,
            detail::softmax_of<A>(detail::plain_row<A>{x.data()}, x.size(), m, inv_t, out.data())};
}

/// softmax over the allowed entries (reference::softmax(x, out, T, mask)): disallowed entries
/// get 0; all zeros when no allowed entry has probability. Same three passes, the mask read in
/// the first two. \pre out.size() == x.size(), temperature > 0
template <class A = simd::default_arch>
softmax_stats softmax(std::span<const float> x, std::span<float> out, float temperature,
                      const token_bitmask& mask) noexcept {
    DECODEKIT_ASSERT(out.size() == x.size(), "softmax: out.size() must equal x.size()");
    std::size_t n = 0;
    const auto r = detail::masked<A>(x, mask, n);
    const float m = detail::max_of<A>(r, n);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
        return reference::softmax(x, out, temperature, mask);
    std::fill(out.begin() + std::ptrdiff_t(n), out.end(), 0.f);
    return {m, detail::softmax_of<A>(r, n, m, inv_t, out.data())};
}

/// out_i = exp((x_i - m)/T), the unnormalised softmax weights (m the max; when an entry is +inf:
/// 1 for the +inf entries, 0 elsewhere; 0 for NaN and -inf entries, and below m - 87 T); returns
/// {m, sum of out}. Two passes (max; fused exp, store and sum).
/// \pre out.size() == x.size(), temperature > 0
template <class A = simd::default_arch>
softmax_stats exp_weights(std::span<const float> x, float temperature,
                          std::span<float> out) noexcept {
    DECODEKIT_ASSERT(out.size() == x.size(), "exp_weights: out.size() must equal x.size()");
    const float m = kernels::max<A>(x);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t)) {
        double s = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            out[i] = m > -std::numeric_limits<float>::infinity()
                         ? float(reference::weight(x[i], m, temperature))
                         : 0.f;
            s += double(out[i]);
        }
        return {m, s};
    }
    return {m, detail::exp_pass<A, true>(x, m, inv_t, out.data())};
}

/// out_i = log p_i = (x_i - m)/T - log Z; -inf for entries of probability 0 (NaN included).
/// \pre out.size() == x.size(), temperature > 0
template <class A = simd::default_arch>
softmax_stats log_softmax(std::span<const float> x, std::span<float> out,
                          float temperature = 1.f) noexcept {
    DECODEKIT_ASSERT(out.size() == x.size(), "log_softmax: out.size() must equal x.size()");
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float m = kernels::max<A>(x);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
        return reference::log_softmax(x, out, temperature);
    const double s = detail::exp_pass<A, false>(x, m, inv_t, nullptr);
    const float lz = float(std::log(s));
    // exp((x - m)/T) underflows to 0 in double below this: the reference says -inf there.
    constexpr float underflow = -745.13f;
    const B mb(m), tb(inv_t), lzb(lz), ub(underflow), ninf(detail::neg_inf_f);
    const float* p = x.data();
    float* o = out.data();
    const std::size_t n = x.size();
    std::size_t i = 0;
    for (; i + L <= n; i += L) {
        const B d = (B::load_unaligned(p + i) - mb) * tb;
        simd::select<A>(d >= ub, d - lzb, ninf).store_unaligned(o + i);  // NaN fails >=: -inf
    }
    for (; i < n; ++i) {
        const float d = (p[i] - m) * inv_t;
        o[i] = d >= underflow ? d - lz : detail::neg_inf_f;
    }
    return {m, s};
}

/// Entropy H = -sum p log p (nats) of the tempered distribution; 0 when no entry has
/// probability. Two passes: H = log Z - (sum w_i d_i) / Z with d_i = (x_i - m)/T, w_i = exp(d_i).
/// \pre temperature > 0
template <class A = simd::default_arch>
double entropy(std::span<const float> x, float temperature = 1.f) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float m = kernels::max<A>(x);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
        return reference::entropy(x, temperature);
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    const B mb(m), tb(inv_t), lo(-200.f);
    double sw = 0, swd = 0;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 2 * detail::block_size);
        B s0(0.f), s1(0.f), t0(0.f), t1(0.f);
        auto add = [&](const B& d0, const B& w, B& s, B& t) {
            const B d = simd::max_ignore_nan<A>(lo, d0);  // -inf, NaN -> -200: w * d = 0
            s += w;
            t = simd::fma<A>(w, d, t);
        };
        auto one = [&](std::size_t j, B& s, B& t) {
            const B d0 = (B::load_unaligned(p + j) - mb) * tb;
            add(d0, simd::exp_nonpositive<A>(d0), s, t);  // NaN, -inf: 0
        };
        // four vectors' exponentials in flight (simd::exp_nonpositive_n, the same bits), added
        // as two rounds of the pair loop below add them: the same sums bit for bit (one at a time
        // left each exponential's chain latency-bound: 69 -> 63 us at V = 128256, Zen 3 AVX2)
        for (; i + 4 * L <= end; i += 4 * L) {
            B d[4], w[4];
            for (std::size_t j = 0; j < 4; ++j)
                w[j] = d[j] = (B::load_unaligned(p + i + j * L) - mb) * tb;
            simd::exp_nonpositive_n<A, 4>(w);
            add(d[0], w[0], s0, t0);
            add(d[1], w[1], s1, t1);
            add(d[2], w[2], s0, t0);
            add(d[3], w[3], s1, t1);
        }
        for (; i + 2 * L <= end; i += 2 * L) {
            one(i, s0, t0);
            one(i + L, s1, t1);
        }
        for (; i < end; i += L) one(i, s0, t0);
        sw += double(simd::reduce_add<A>(s0 + s1));
        swd += double(simd::reduce_add<A>(t0 + t1));
    }
    for (; i < n; ++i) {
        if (std::isnan(p[i])) continue;
        const float d = std::max((p[i] - m) * inv_t, -200.f);
        const float w = d >= -87.f ? std::exp(d) : 0.f;
        sw += double(w);
        swd += double(w) * double(d);
    }
    if (!(sw > 0)) return 0;
    return std::log(sw) - swd / sw;
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
