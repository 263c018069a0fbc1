#pragma once
/// \file sampling/steps/eta.hpp
/// Eta sampling: keeps p_i >= min(eta, sqrt(eta) exp(-H)) (H the entropy in nats; eta the
/// decimal its float stands for); the min_keep rule of epsilon (every entry tied with the
/// min_keep-th largest logit). Disabled at 0. The set is kernels::eta_unordered's
/// (= reference::eta): one exponential pass giving Z and H, one filter pass (see selection.hpp),
/// in id order with its weights. On a full set whose threshold does not bound the kept set
/// below V / 16 entries (a high-entropy row keeps most of it) the set stays a cut over the row
/// (kernels::eta_cut; working_set::set_cut): the filter pass only reads, and a draw right after
/// reads the row once with the cut instead of compacting up to the whole row.

#include <decodekit/config.hpp>
#include <decodekit/kernels/thresholds.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct eta_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.eta > 0.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float e = c.params.eta, t = w.temperature();
        const std::size_t min_keep = c.params.min_keep;
        // a full set: a large kept set stays a cut over the row (the draw reads the row)
        if (detail::select_cut(
                w, [&](std::span<const float> x, candidates& s, std::span<float> wt) {
                    return kernels::eta_cut(x, e, t, min_keep, s, wt, kernels::kept_form::either);
                }))
            return;
        detail::select_kept(w, [&](std::span<const float> x, candidates& out, std::span<float> wt) {
            return kernels::eta_unordered(x, e, t, min_keep, out, wt);
        });
    }
};

DECODEKIT_END_NAMESPACE
