#pragma once
/// \file sampling/steps/xtc.hpp
/// XTC (exclude top choices): with probability xtc_probability (one uniform_float() of the call's
/// rng_purpose::filter stream), when at least two entries have p >= xtc_threshold, removes all of
/// them but the least probable; skipped when that would leave fewer than min_keep. Disabled at
/// probability 0 or threshold > 0.5.
/// Full set: the head is found without sorting the row (exp_sum, one compaction of a superset of
/// the entries with p >= threshold, at most 1 / threshold of them, then only those sorted); the
/// set stays full, over a copy of the row with the dropped entries at -inf.

#include <decodekit/config.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/sampling/step.hpp>

#include <algorithm>
#include <cmath>

DECODEKIT_BEGIN_NAMESPACE

struct xtc_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.xtc_probability > 0.f && p.xtc_threshold <= 0.5f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        const sampling_params& p = c.params;
        rng_stream coin = c.stream(rng_purpose::filter);
        if (!(coin.uniform_float() < p.xtc_probability)) return;
        w.materialise_if_overlaid();
        if (w.full()) {
            if (full_row(w, c)) return;
            w.materialise();
        }
        w.order();
        const double s = w.fill_weights();
        if (!(s > 0)) return;
        const double w_thr = double(p.xtc_threshold) * s;
        const std::span<const float> wt = w.weights();
        std::size_t above = 0;
        while (above < wt.size() && wt[above] >= w_thr) ++above;
        if (above < 2) return;
        const std::size_t drop = above - 1;  // keep the least probable of them
        candidates& kept = w.kept();
        if (kept.size() - drop < p.min_keep) return;
        const std::size_t n = kept.size() - drop;
        sampling_workspace& ws = w.workspace();
        for (std::size_t i = 0; i < n; ++i)
            ws.sorted[i] = {kept.logits()[drop + i], kept.ids()[drop + i]};
        w.write_back(n);
    }

private:
    /// The full-row path; false (nothing changed) for rows with +inf or no valid entry and
    /// non-finite thresholds, which take the materialised path.
    static bool full_row(working_set& w, const step_context& c) noexcept {
        const std::span<const float> x = w.row();
        const float t = w.temperature();
        const auto st = kernels::exp_sum(x, t);
        const float m = st.max;
        if (!(m > -detail::f_inf) || m == detail::f_inf || !(st.sum > 0)) return false;
        const double w_thr = double(c.params.xtc_threshold) * st.sum;
        if (!(w_thr > 0)) return false;
        // float(exp(d)) >= w_thr implies d >= log(w_thr) - 2^-23: 1e-4 slack
        const double thr_d = double(m) + double(t) * (std::log(w_thr) - 1e-4);
        if (!std::isfinite(thr_d)) return false;
        const float thr = std::min(std::nextafter(float(thr_d), -detail::f_inf), m);
        candidates& head = w.kept();
        kernels::filter_at_least(x, thr, head);
        w.set_kept(false);  // the head, ordered next (few entries)
        w.order();
        std::size_t above = 0;
        while (above < head.size() &&
               double(float(detail::cand_weight(head.logits()[above], m, t))) >= w_thr)
            ++above;
        w.set_full();  // the working set is the whole row again (minus the head, below)
        if (above < 2) return true;  // nothing dropped: still the full row
        const std::size_t drop = above - 1;
        if (c.params.min_keep > 1 && w.valid_count() - drop < c.params.min_keep) return true;
        const std::span<float> y = w.workspace().row_copy();
        if (x.data() != y.data()) std::copy(x.begin(), x.end(), y.begin());
        for (std::size_t i = 0; i < drop; ++i) y[std::size_t(head.ids()[i])] = -detail::f_inf;
        w.set_row(std::span<const float>(y.data(), x.size()));
        return true;
    }
};

DECODEKIT_END_NAMESPACE
