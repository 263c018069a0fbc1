#pragma once
/// \file sampling/steps/mirostat.hpp
/// Mirostat v2: keeps the entries with surprise -log2 p <= mu (p >= 2^-mu), at least the most
/// probable one; mu starts at 2 tau and moves after each draw by -eta (surprise of the drawn
/// token - tau) (the sampler updates it: see sampler::sample and sampler::observe). The set is
/// kernels::mirostat_cut_unordered's (= reference::mirostat_cut): one exponential pass and one
/// filter pass (see selection.hpp), in id order with its weights. On a full set with 2^mu > V / 16
/// (a kept set that may exceed V / 16 entries) the set stays a cut over the row
/// (kernels::mirostat_cut, as eta.hpp).

#include <decodekit/config.hpp>
#include <decodekit/kernels/thresholds.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct mirostat_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.mirostat; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float mu = c.state.mirostat_mu, t = w.temperature();
        // a full set: a large kept set stays a cut over the row (the draw reads the row)
        if (detail::select_cut(
                w, [&](std::span<const float> x, candidates& s, std::span<float> wt) {
                    return kernels::mirostat_cut(x, mu, t, s, wt, kernels::kept_form::either);
                }))
            return;
        detail::select_kept(w, [&](std::span<const float> x, candidates& out, std::span<float> wt) {
            return kernels::mirostat_cut_unordered(x, mu, t, out, wt);
        });
    }
};

DECODEKIT_END_NAMESPACE
