#pragma once
/// \file sampling/steps/typical.hpp
/// Locally typical sampling: entries in order of |-log p - H| (ties: more probable first, then
/// lower id; ties made by rounding above the typical point: see reference::typical); typical_mode
/// reach_with_ties (default, Hugging Face) keeps the prefix through the first entry whose inclusive
/// mass reaches typical_p (the float standing for its decimal) and every entry with that entry's
/// score; exceed (llama.cpp) the prefix through the first entry whose inclusive mass strictly
/// exceeds it. At least min_keep. Disabled at typical_p = 1. The set is
/// kernels::typical_unordered's (= reference::typical): a logit interval around the entropy's
/// point, found by a weighted selection wherever it sits in the order, never by sorting (see
/// selection.hpp), in id order with its weights. On a full set (typical first, or after temperature
/// only) the set stays a cut over the row with the row's weights (kernels::typical_cut;
/// working_set::set_cut): a draw right after it reads the row once with the cut instead of
/// compacting up to the whole row (typical's sets hold most of a high-entropy row).

#include <decodekit/config.hpp>
#include <decodekit/kernels/typical.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct typical_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.typical_p < 1.f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float p = c.params.typical_p, t = w.temperature();
        const std::size_t min_keep = c.params.min_keep;
        const typical_stop stop = c.params.typical_mode;
        // a full set: the cut over the row, nothing compacted (the draw reads the row)
        if (detail::select_cut(w,
                               [&](std::span<const float> x, candidates& s, std::span<float> wt) {
                                   return kernels::typical_cut(x, p, t, min_keep, stop, s, wt);
                               }))
            return;
        detail::select_kept(w, [&](std::span<const float> x, candidates& out, std::span<float> wt) {
            return kernels::typical_unordered(x, p, t, min_keep, stop, out, wt);
        });
    }
};

DECODEKIT_END_NAMESPACE
