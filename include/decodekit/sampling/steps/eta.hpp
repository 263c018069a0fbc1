#pragma once
/// \file sampling/steps/eta.hpp
/// Eta sampling: removes p_i < min(eta, sqrt(eta) exp(-H)) (H the entropy in nats), keeping at
/// least min_keep (the most probable). Disabled at 0. Full set: exp-sum and entropy passes, one
/// threshold compaction, then the exact cut on the survivors (see weight_threshold.hpp).

#include <decodekit/config.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/weight_threshold.hpp>

#include <cmath>

DECODEKIT_BEGIN_NAMESPACE

struct eta_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.eta > 0.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const double e = c.params.eta;
        w.materialise_if_overlaid();
        if (w.full()) {
            const detail::row_stats st = detail::full_row_stats(w.row(), w.temperature(), true);
            const double w_thr = std::min(e, std::sqrt(e) * std::exp(-st.h)) * st.sum;
            if (st.sum > 0 && detail::threshold_candidates(
                                  w, st.max, w_thr, detail::min_keep_of(w, c.params.min_keep))) {
                w.keep_weight_at_least(w_thr, c.params.min_keep);
                return;
            }
            w.materialise();
        }
        w.order();
        const double s = w.fill_weights();
        if (!(s > 0)) return;
        double h = 0;
        for (float v : w.weights())
            if (v > 0) {
                const double q = v / s;
                h -= q * std::log(q);
            }
        w.keep_weight_at_least(std::min(e, std::sqrt(e) * std::exp(-h)) * s, c.params.min_keep);
    }
};

DECODEKIT_END_NAMESPACE
