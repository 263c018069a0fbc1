#pragma once
/// \file kernels/similarity.hpp
/// cosine similarity of one vector against many (contrastive search).
/// Semantics: kernels/reference.hpp (the scalar reference these must equal).
/// TODO(kernels): SIMD implementation; this forwards to the reference for now.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {


template <class A = simd::default_arch>
void cosine_similarity(std::span<const float> query, const float* rows, std::size_t stride, std::span<float> out) noexcept { reference::cosine_similarity(query, rows, stride, out); }

}  // namespace kernels
DECODEKIT_END_NAMESPACE
