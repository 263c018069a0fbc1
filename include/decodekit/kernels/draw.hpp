#pragma once
/// \file kernels/draw.hpp
/// categorical draws: inverse CDF over weights, exponential race over logits.
/// Semantics: kernels/reference.hpp (the scalar reference these must equal).
/// TODO(kernels): SIMD implementation; this forwards to the reference for now.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {


template <class A = simd::default_arch>
std::size_t draw_inverse_cdf(std::span<const float> w, double u) noexcept { return reference::draw_inverse_cdf(w, u); }

}  // namespace kernels
DECODEKIT_END_NAMESPACE
