#pragma once
/// \file sampling/steps/xtc.hpp
/// XTC (exclude top choices): with probability xtc_probability (one uniform_float() of the call's
/// rng_purpose::filter stream), when at least two entries have p >= xtc_threshold (the float
/// standing for its decimal), removes all of them but the least probable (the highest id among
/// its ties); skipped when that would leave fewer than min_keep. Disabled at probability 0 or
/// threshold > 0.5. The removed entries are kernels::xtc_remove's (= reference::xtc_removed):
/// one exponential pass, one filter pass keeping the head (at most 1 / threshold entries), only
/// those sorted.
/// Full set: it stays full, over a copy of the row with the removed entries at -inf (the draw
/// then needs no exponential per entry when no logprob is wanted). Narrowed set: the removed
/// entries (a prefix of the reference order) are dropped from kept(), whose order is kept.
/// XTC as the pipeline's only truncation (XTC and temperature steps, built in, the temperature
/// the same at XTC and at the draw: detail::plan_xtc_only) on a full unmasked set with no logprob
/// extra wanted is not run as a step: the sampler draws with detail::draw_xtc_only (the weights
/// xtc_remove computes, the removed ones at 0, drawn by inverse CDF: no row copy, no second
/// exponential pass).

#include <decodekit/config.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/xtc.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/draw.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

#include <algorithm>
#include <cmath>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
/// The full set `w` minus the entries of `removed` (XTC's head): a copy of the row with them at
/// -inf in the workspace, still a full set. \pre w.full(), not overlaid
inline void xtc_drop_from_row(working_set& w, const candidates& removed) noexcept {
    const std::span<const float> x = w.row();
    const std::span<float> y = w.workspace().row_copy();
    if (x.data() != y.data()) std::copy(x.begin(), x.end(), y.begin());
    for (token_id id : removed.ids()) y[std::size_t(id)] = -f_inf;
    w.set_row(std::span<const float>(y.data(), x.size()));
    w.set_full();
}
}  // namespace detail

struct xtc_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.xtc_probability > 0.f && p.xtc_threshold <= 0.5f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        const sampling_params& p = c.params;
        rng_stream coin = c.stream(rng_purpose::filter);
        if (!(coin.uniform_float() < p.xtc_probability)) return;
        w.materialise_if_overlaid();
        sampling_workspace& ws = w.workspace();
        candidates& removed = ws.selection();
        if (w.full()) {
            const std::span<const float> x = w.row();
            const auto r =
                kernels::xtc_remove(x, p.xtc_threshold, w.temperature(), p.min_keep, removed,
                                    std::span<float>(ws.weights.data(), x.size()));
            if (!r.ok()) return;
            detail::count_tier(ws, r);
            if (removed.empty()) return;  // nothing removed: still the full row
            detail::xtc_drop_from_row(w, removed);
            return;
        }
        if (!w.ordered() && !w.id_ordered()) w.order_by_id();  // ties by position = by id
        const bool was_ordered = w.ordered();
        const std::span<const float> x = w.kept().logits();
        const auto r = kernels::xtc_remove(x, p.xtc_threshold, w.temperature(), p.min_keep, removed,
                                           std::span<float>(ws.weights.data(), x.size()));
        if (!r.ok()) return;
        detail::count_tier(ws, r);
        if (removed.empty()) return;
        // the removed entries are the first ones of the reference order: down to the last one
        const float lo = removed.logits()[removed.size() - 1];
        const std::size_t last = std::size_t(removed.ids()[removed.size() - 1]);
        const float* lg = w.kept().logit_storage();
        w.keep_if([&](std::size_t i) { return lg[i] < lo || (lg[i] == lo && i > last); });
        w.set_kept(was_ordered);  // the kernel used the weights as scratch: recompute them
    }
};

namespace detail {
/// When a pipeline is XTC and temperature steps only (see the file comment): on, and the
/// temperature of XTC and of the draw.
struct xtc_only_plan {
    bool on = false;
    float t = 1.f;
};

inline xtc_only_plan plan_xtc_only(std::span<const sampling_step> steps, const sampling_params& p,
                                   bool user_steps) noexcept {
    xtc_only_plan e;
    if (user_steps || p.greedy()) return e;
    std::size_t n_xtc = 0;
    float t = 1.f, t_xtc = 1.f;
    for (const sampling_step s : steps) {
        if (s == sampling_step::temperature) {
            t = p.temperature;
        } else if (s == sampling_step::xtc) {
            ++n_xtc;
            t_xtc = t;
        } else {
            return e;
        }
    }
    e.on = n_xtc == 1 && t_xtc == t;
    e.t = t;
    return e;
}

/// The draw of such a pipeline from the full set `w` with the call's sample stream `rng`: XTC's
/// coin (the step's: one uniform_float() of the rng_purpose::filter stream); when it fires,
/// kernels::xtc_remove's weights of the row (the removed entries at 0) drawn by
/// kernels::draw_inverse_cdf with one uniform() (the law of the step then draw_from, and the
/// same token for a given stream up to rounding); logprob log(w_tok) - log(kept weight), NaN
/// when not wanted. When the coin does not fire, or the weight left is below 2^-20 of the row's
/// (a head holding nearly all the mass: float weights relative to the row max would lose the
/// rest's precision), the step's route instead (draw_from). \pre w.full(), not overlaid, not
/// masked, plan.on
inline set_draw draw_xtc_only(working_set& w, const sampling_params& p, const sample_context& call,
                              const xtc_only_plan& plan, bool want_logprob,
                              rng_stream& rng) noexcept {
    w.set_temperature(plan.t);
    rng_stream coin = make_stream({p.seed, call.sequence, call.step}, rng_purpose::filter);
    if (!(coin.uniform_float() < p.xtc_probability)) return draw_from(w, rng, want_logprob);
    sampling_workspace& ws = w.workspace();
    candidates& removed = ws.selection();
    const std::span<const float> x = w.row();
    const std::span<float> wt(ws.weights.data(), x.size());
    const auto r = kernels::xtc_remove(x, p.xtc_threshold, plan.t, p.min_keep, removed, wt);
    if (!r.ok()) return draw_from(w, rng, want_logprob);
    count_tier(ws, r);
    if (!(r.kept_sum >= r.sum * 0x1p-20) || !std::isfinite(r.kept_sum)) {
        if (!removed.empty()) xtc_drop_from_row(w, removed);
        return draw_from(w, rng, want_logprob);
    }
    set_draw d;
    d.logprob = std::numeric_limits<double>::quiet_NaN();
    const std::size_t i = kernels::draw_inverse_cdf(std::span<const float>(wt), rng.uniform());
    if (i == npos) return d;
    d.token = token_id(i);
    if (want_logprob) {
        d.logprob = std::log(double(wt[i])) - std::log(r.kept_sum);
        d.prob = double(wt[i]) / r.kept_sum;
    }
    return d;
}
}  // namespace detail

DECODEKIT_END_NAMESPACE
