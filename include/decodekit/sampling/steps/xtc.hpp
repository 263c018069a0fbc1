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

#include <decodekit/config.hpp>
#include <decodekit/kernels/xtc.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

#include <algorithm>
#include <span>

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
            const std::span<float> y = ws.row_copy();
            if (x.data() != y.data()) std::copy(x.begin(), x.end(), y.begin());
            for (token_id id : removed.ids()) y[std::size_t(id)] = -detail::f_inf;
            w.set_row(std::span<const float>(y.data(), x.size()));
            w.set_full();
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

DECODEKIT_END_NAMESPACE
