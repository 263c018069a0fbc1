#pragma once
/// \file kernels/similarity.hpp
/// Cosine similarity of one vector against many (contrastive search).
/// Semantics: kernels/reference.hpp (within 1e-6 absolute). One pass over the query and one
/// over each row (dot product and squared norm fused); products accumulated with FMA in two
/// float accumulators per 64-entry block, blocks added in double. No random numbers.
/// Range: float squares underflow below |x| ~ 1e-19 and overflow above ~ 1.8e19, where the double
/// reference does not. A vector whose float squared norm falls outside [1e-20, 1e20] (or is not
/// finite) is therefore redone in double, scalar, exactly as the reference: tiny and huge vectors
/// get the reference's answer, ordinary ones keep the SIMD path.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <cmath>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
namespace detail {
/// True when a squared norm summed from float squares can be trusted: no square of an entry that
/// matters underflowed, none overflowed (false for 0, which underflow can fake, and NaN).
inline bool float_norm_safe(double sq) noexcept { return sq >= 1e-20 && sq <= 1e20; }
/// Dot product and squared norm of `row` in double (the reference's arithmetic).
inline void dot_norm_double(const float* q, const float* row, std::size_t dim, double& dot,
                            double& rr) noexcept {
    dot = 0;
    rr = 0;
    for (std::size_t j = 0; j < dim; ++j) {
        dot += double(q[j]) * row[j];
        rr += double(row[j]) * row[j];
    }
}
}  // namespace detail

/// Cosine similarity of `query` (length dim) against each of n = out.size() rows stored
/// row-major with `stride` floats between rows; 0 for a zero-norm row or query. Tiny (|x| down
/// to the smallest subnormal) and huge (up to FLT_MAX) entries give the reference's value.
template <class A = simd::default_arch>
void cosine_similarity(std::span<const float> query, const float* rows, std::size_t stride,
                       std::span<float> out) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    constexpr std::size_t blk = 64;
    const std::size_t dim = query.size(), nfull = dim / L * L;
    const float* q = query.data();
    double qq = 0;
    for (std::size_t i = 0; i < nfull;) {
        const std::size_t e = std::min(nfull, i + blk);
        B a(0.f);
        for (; i < e; i += L) {
            const B v = B::load_unaligned(q + i);
            a = simd::fma<A>(v, v, a);
        }
        qq += double(simd::reduce_add<A>(a));
    }
    for (std::size_t i = nfull; i < dim; ++i) qq += double(q[i]) * q[i];
    // A query outside the float range (0 included: its squares may all have underflowed): every
    // row in double (the float dot products would be off too).
    const bool q_double = !detail::float_norm_safe(qq);
    if (q_double) {
        qq = 0;
        for (std::size_t j = 0; j < dim; ++j) qq += double(q[j]) * q[j];
    }
    for (std::size_t r = 0; r < out.size(); ++r) {
        const float* row = rows + r * stride;
        double dot = 0, rr = 0;
        if (q_double) {
            detail::dot_norm_double(q, row, dim, dot, rr);
            out[r] = (qq > 0 && rr > 0) ? float(dot / std::sqrt(qq * rr)) : 0.f;
            continue;
        }
        for (std::size_t i = 0; i < nfull;) {
            const std::size_t e = std::min(nfull, i + blk);
            B d0(0.f), d1(0.f), n0(0.f), n1(0.f);
            for (; i + 2 * L <= e; i += 2 * L) {
                const B v0 = B::load_unaligned(row + i), v1 = B::load_unaligned(row + i + L);
                d0 = simd::fma<A>(B::load_unaligned(q + i), v0, d0);
                d1 = simd::fma<A>(B::load_unaligned(q + i + L), v1, d1);
                n0 = simd::fma<A>(v0, v0, n0);
                n1 = simd::fma<A>(v1, v1, n1);
            }
            for (; i < e; i += L) {
                const B v = B::load_unaligned(row + i);
                d0 = simd::fma<A>(B::load_unaligned(q + i), v, d0);
                n0 = simd::fma<A>(v, v, n0);
            }
            dot += double(simd::reduce_add<A>(d0 + d1));
            rr += double(simd::reduce_add<A>(n0 + n1));
        }
        for (std::size_t i = nfull; i < dim; ++i) {
            dot += double(q[i]) * row[i];
            rr += double(row[i]) * row[i];
        }
        if (!detail::float_norm_safe(rr))  // tiny (0 included), huge, inf or NaN row: redo
            detail::dot_norm_double(q, row, dim, dot, rr);
        out[r] = (qq > 0 && rr > 0) ? float(dot / std::sqrt(qq * rr)) : 0.f;
    }
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
