#pragma once
/// \file sampling/steps/epsilon.hpp
/// Epsilon sampling: removes p_i < epsilon, keeping at least min_keep (the most probable).
/// Disabled at 0. Full set: one exp-sum pass, one threshold compaction, then the exact cut on the
/// survivors (see weight_threshold.hpp).

#include <decodekit/config.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/weight_threshold.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct epsilon_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.epsilon > 0.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float eps = c.params.epsilon;
        w.materialise_if_overlaid();
        if (w.full()) {
            const detail::row_stats st = detail::full_row_stats(w.row(), w.temperature(), false);
            if (st.sum > 0 &&
                detail::threshold_candidates(w, st.max, double(eps) * st.sum,
                                             detail::min_keep_of(w, c.params.min_keep))) {
                w.keep_weight_at_least(double(eps) * st.sum, c.params.min_keep);
                return;
            }
            w.materialise();
        }
        w.order();
        const double s = w.fill_weights();
        if (!(s > 0)) return;
        w.keep_weight_at_least(double(eps) * s, c.params.min_keep);
    }
};

DECODEKIT_END_NAMESPACE
