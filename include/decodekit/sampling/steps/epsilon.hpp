#pragma once
/// \file sampling/steps/epsilon.hpp
/// Epsilon sampling: keeps p_i >= epsilon (the float standing for its decimal); when fewer than
/// min_keep pass, every entry tied with or above the min_keep-th largest logit (Hugging Face).
/// Disabled at 0. The set is kernels::epsilon_unordered's (= reference::epsilon): one
/// exponential pass and one filter pass (see selection.hpp), in id order with its weights. On a
/// full set with epsilon < 16 / V (a kept set that may exceed V / 16 entries) the set stays a
/// cut over the row (kernels::epsilon_cut, as eta.hpp).

#include <decodekit/config.hpp>
#include <decodekit/kernels/thresholds.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct epsilon_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.epsilon > 0.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float e = c.params.epsilon, t = w.temperature();
        const std::size_t min_keep = c.params.min_keep;
        // a full set: a large kept set stays a cut over the row (the draw reads the row)
        if (detail::select_cut(w, [&](std::span<const float> x, candidates& s,
                                      std::span<float> wt) {
                return kernels::epsilon_cut(x, e, t, min_keep, s, wt, kernels::kept_form::either);
            }))
            return;
        detail::select_kept(w, [&](std::span<const float> x, candidates& out, std::span<float> wt) {
            return kernels::epsilon_unordered(x, e, t, min_keep, out, wt);
        });
    }
};

DECODEKIT_END_NAMESPACE
