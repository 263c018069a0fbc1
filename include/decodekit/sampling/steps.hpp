#pragma once
/// \file sampling/steps.hpp
/// The built-in truncation steps, registered in one table: adding a built-in step is its file
/// under sampling/steps/ (a struct with enabled() and apply(), see sampling/step.hpp), its
/// sampling_step id, and one line here.

#include <decodekit/config.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/epsilon.hpp>
#include <decodekit/sampling/steps/eta.hpp>
#include <decodekit/sampling/steps/min_p.hpp>
#include <decodekit/sampling/steps/mirostat.hpp>
#include <decodekit/sampling/steps/temperature.hpp>
#include <decodekit/sampling/steps/top_k.hpp>
#include <decodekit/sampling/steps/top_n_sigma.hpp>
#include <decodekit/sampling/steps/top_p.hpp>
#include <decodekit/sampling/steps/typical.hpp>
#include <decodekit/sampling/steps/xtc.hpp>

#include <iterator>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
template <class S>
constexpr builtin_step entry(sampling_step id) noexcept {
    return {id, &S::enabled, &S::apply};
}
}  // namespace detail

/// Every built-in step, indexed by its sampling_step value.
inline constexpr builtin_step builtin_steps[] = {
    detail::entry<temperature_step>(sampling_step::temperature),
    detail::entry<top_k_step>(sampling_step::top_k),
    detail::entry<top_p_step>(sampling_step::top_p),
    detail::entry<min_p_step>(sampling_step::min_p),
    detail::entry<typical_step>(sampling_step::typical),
    detail::entry<epsilon_step>(sampling_step::epsilon),
    detail::entry<eta_step>(sampling_step::eta),
    detail::entry<top_n_sigma_step>(sampling_step::top_n_sigma),
    detail::entry<xtc_step>(sampling_step::xtc),
    detail::entry<mirostat_step>(sampling_step::mirostat),
};

static_assert(
    [] {
        for (std::size_t i = 0; i < std::size(builtin_steps); ++i)
            if (std::size_t(builtin_steps[i].id) != i) return false;
        return std::size(builtin_steps) == std::size_t(sampling_step::mirostat) + 1;
    }(),
    "builtin_steps is indexed by sampling_step");

/// The table entry of step `id`. \pre id is a sampling_step enumerator
inline const builtin_step& builtin_step_of(sampling_step id) noexcept {
    return builtin_steps[std::size_t(id)];
}

DECODEKIT_END_NAMESPACE
