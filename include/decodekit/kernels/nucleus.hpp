#pragma once
/// \file kernels/nucleus.hpp
/// top-p (nucleus) selection without a full sort.
/// Semantics: kernels/reference.hpp (the scalar reference these must equal).
/// TODO(kernels): SIMD implementation; this forwards to the reference for now.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {


template <class A = simd::default_arch>
std::size_t top_p(std::span<const float> x, float p, float temperature, std::size_t min_keep, candidates& out) noexcept { return reference::top_p(x, p, temperature, min_keep, out); }

}  // namespace kernels
DECODEKIT_END_NAMESPACE
