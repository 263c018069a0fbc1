#pragma once
/// \file sampling/steps/min_p.hpp
/// Min-p: keeps p_i >= min_p * p_max, i.e. x_i >= max + T ln(min_p) (kernels::min_p_threshold),
/// with T the current temperature (min_p_space::probabilities) or 1 (min_p_space::logits, as
/// llama.cpp: before temperature wherever temperature is in the order); at least min_keep (the
/// most probable). Disabled at min_p = 0.
/// Full set: one read pass (kernels::filter_min_p), honouring the overlay and the mask (the
/// threshold is set by the largest allowed entry; the min_keep fallback keeps allowed entries
/// only: the mask wins over min_keep). Narrowed set: a threshold over the survivors.
/// Min-p as the pipeline's only truncation (min-p and temperature steps, built in, min_keep 1:
/// detail::plan_min_p_envelope) on a full set with no logprob extra wanted is not run as a step:
/// the sampler draws with detail::draw_min_p_only (kernels::draw_min_p over the row: no
/// compaction of the kept set; the chosen logprob from the same pass).

#include <decodekit/config.hpp>
#include <decodekit/kernels/min_p.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/sampling/draw.hpp>
#include <decodekit/sampling/step.hpp>

#include <algorithm>
#include <limits>

DECODEKIT_BEGIN_NAMESPACE

struct min_p_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.min_p > 0.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const sampling_params& p = c.params;
        const float t_eff = p.min_p_mode == min_p_space::logits ? 1.f : w.temperature();
        candidates& kept = w.kept();
        if (w.full() && w.overlaid()) {
            w.overlay_top_k(1, tie_policy::exactly_k);  // the max of the patched row
            const float m = kept.empty() ? -detail::f_inf : kept.logits()[0];
            const float thr = kernels::min_p_threshold(m, p.min_p, t_eff);
            w.row_filter_at_least(thr, kept);
            w.merge_patches(thr);
            if (kept.size() < p.min_keep) w.overlay_top_k(p.min_keep, tie_policy::exactly_k);
            w.clear_patch_marks();
            w.set_narrowed();
            return;
        }
        if (w.full()) {
            const std::size_t n = w.row_filter_min_p(p.min_p, t_eff, kept);  // one pass
            w.set_kept(false);
            if (n < p.min_keep) {
                w.row_top_k(p.min_keep, tie_policy::exactly_k, kept);
                w.set_kept(true);
            }
            return;
        }
        const float thr = kernels::min_p_threshold(w.kept_max(), p.min_p, t_eff);
        std::size_t count = 0;
        for (float v : kept.logits()) count += v >= thr;
        if (count >= p.min_keep) {
            const float* lg = kept.logit_storage();
            w.keep_if([&](std::size_t i) { return lg[i] >= thr; });
        } else {
            w.order();
            w.keep_first(p.min_keep);
        }
    }
};

namespace detail {
/// The draw of a pipeline of min-p and temperature steps only, from the full set `w` (masked or
/// not) with the call's sample stream: kernels::draw_min_p with min-p's threshold taken at
/// t_min_p and the draw at t_draw; the same law as the step then draw_from (and, with a logprob
/// wanted, the same token for a given stream up to rounding; see kernels/min_p.hpp). The logprob
/// is NaN when not wanted. \pre w.full(), not overlaid, p_base > 0
inline set_draw draw_min_p_only(const working_set& w, float p_base, float t_min_p, float t_draw,
                                bool want_logprob, rng_stream& rng) noexcept {
    const kernels::logit_threshold thr{.from_max = kernels::min_p_offset(p_base, t_min_p)};
    const kernels::min_p_draw k =
        w.masked() ? kernels::draw_min_p(w.row(), t_draw, thr, want_logprob, rng, w.mask())
                   : kernels::draw_min_p(w.row(), t_draw, thr, want_logprob, rng);
    set_draw d;
    if (k.index == npos) return d;
    d.token = token_id(k.index);
    d.logprob = k.logprob;
    d.prob = k.prob;
    return d;
}
}  // namespace detail

DECODEKIT_END_NAMESPACE
