#pragma once
/// \file kernels/reduce.hpp
/// max, argmax, sum, logsumexp over a logits row.
/// Semantics: kernels/reference.hpp (the scalar reference these must equal).
/// TODO(kernels): SIMD implementation; this forwards to the reference for now.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {


template <class A = simd::default_arch>
float max(std::span<const float> x) noexcept { return reference::max(x); }

template <class A = simd::default_arch>
std::size_t argmax(std::span<const float> x) noexcept { return reference::argmax(x); }

template <class A = simd::default_arch>
double sum(std::span<const float> x) noexcept { return reference::sum(x); }

template <class A = simd::default_arch>
double logsumexp(std::span<const float> x, float temperature = 1.f) noexcept { return reference::logsumexp(x, temperature); }

}  // namespace kernels
DECODEKIT_END_NAMESPACE
