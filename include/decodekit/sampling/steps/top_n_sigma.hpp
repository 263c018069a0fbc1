#pragma once
/// \file sampling/steps/top_n_sigma.hpp
/// Top-n-sigma: keeps x_i >= max - top_n_sigma * sigma (compared in double), sigma the
/// population standard deviation of the finite logits of the set (two-pass formula in double:
/// reference::top_n_sigma; invariant to temperature); when fewer than min_keep pass, the
/// min_keep largest (ties by lowest id). Disabled at 0. The set is
/// kernels::top_n_sigma_unordered's: one moments pass and one filter pass (see selection.hpp),
/// in id order with its weights.

#include <decodekit/config.hpp>
#include <decodekit/kernels/thresholds.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct top_n_sigma_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.top_n_sigma > 0.f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float n = c.params.top_n_sigma, t = w.temperature();
        const std::size_t min_keep = c.params.min_keep;
        detail::select_kept(w, [&](std::span<const float> x, candidates& out, std::span<float> wt) {
            return kernels::top_n_sigma_unordered(x, n, t, min_keep, out, wt);
        });
    }
};

DECODEKIT_END_NAMESPACE
