#pragma once
/// \file kernels/similarity.hpp
/// Cosine similarity of one vector against many (contrastive search).
/// Semantics: kernels/reference.hpp (within 1e-6 absolute). One pass over the query and one
/// over each row (dot product and squared norm fused); products accumulated with FMA in two
/// float accumulators per 64-entry block, blocks added in double. No random numbers.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <cmath>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

/// Cosine similarity of `query` (length dim) against each of n = out.size() rows stored
/// row-major with `stride` floats between rows; 0 for a zero-norm row or query.
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
    for (std::size_t r = 0; r < out.size(); ++r) {
        const float* row = rows + r * stride;
        double dot = 0, rr = 0;
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
        out[r] = (qq > 0 && rr > 0) ? float(dot / std::sqrt(qq * rr)) : 0.f;
    }
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
