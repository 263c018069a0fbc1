#pragma once
/// \file kernels/softmax.hpp
/// softmax, log-softmax and the normaliser, temperature fused; entropy.
/// Semantics: kernels/reference.hpp (the scalar reference these must equal).
/// TODO(kernels): SIMD implementation; this forwards to the reference for now.

#include <decodekit/kernels/reference.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {


using reference::softmax_stats;

template <class A = simd::default_arch>
softmax_stats exp_sum(std::span<const float> x, float temperature = 1.f) noexcept { return reference::exp_sum(x, temperature); }

template <class A = simd::default_arch>
softmax_stats softmax(std::span<const float> x, std::span<float> out, float temperature = 1.f) noexcept { return reference::softmax(x, out, temperature); }

template <class A = simd::default_arch>
softmax_stats log_softmax(std::span<const float> x, std::span<float> out, float temperature = 1.f) noexcept { return reference::log_softmax(x, out, temperature); }

template <class A = simd::default_arch>
double entropy(std::span<const float> x, float temperature = 1.f) noexcept { return reference::entropy(x, temperature); }

}  // namespace kernels
DECODEKIT_END_NAMESPACE
