#pragma once
/// \file kernels/select.hpp
/// top-k selection without sorting the vocabulary; threshold filters (min-p).
/// Semantics: kernels/reference.hpp (the scalar reference these must equal).
/// TODO(kernels): SIMD implementation; this forwards to the reference for now.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {


template <class A = simd::default_arch>
std::size_t top_k(std::span<const float> x, std::size_t k, tie_policy ties, candidates& out) noexcept { return reference::top_k(x, k, ties, out); }

template <class A = simd::default_arch>
std::size_t filter_at_least(std::span<const float> x, float threshold, candidates& out) noexcept { return reference::filter_at_least(x, threshold, out); }

using reference::min_p_threshold;

}  // namespace kernels
DECODEKIT_END_NAMESPACE
