#pragma once
/// \file sampling/steps/mirostat.hpp
/// Mirostat v2: keeps the entries with surprise -log2 p <= mu (p >= 2^-mu), at least one; mu
/// starts at 2 tau and moves after each draw by -eta (surprise of the drawn token - tau) (the
/// sampler updates it: see sampler::sample and sampler::observe). Full set: one exp-sum pass,
/// one threshold compaction, then the exact cut (see weight_threshold.hpp).

#include <decodekit/config.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/weight_threshold.hpp>

#include <cmath>

DECODEKIT_BEGIN_NAMESPACE

struct mirostat_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.mirostat; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const double f = std::exp2(-double(c.state.mirostat_mu));
        w.materialise_if_overlaid();
        if (w.full()) {
            const detail::row_stats st = detail::full_row_stats(w.row(), w.temperature(), false);
            if (st.sum > 0 && detail::threshold_candidates(w, st.max, f * st.sum, 1)) {
                w.keep_weight_from_top(f * st.sum);
                return;
            }
            w.materialise();
        }
        w.order();
        const double s = w.fill_weights();
        if (!(s > 0)) return;
        w.keep_weight_from_top(f * s);
    }
};

DECODEKIT_END_NAMESPACE
