#pragma once
/// \file sampling/steps/top_p.hpp
/// Top-p (nucleus): by probability descending (ties by id), keeps entry j while the mass strictly
/// before it is below top_p (the float standing for its decimal: a mass reaching
/// reference::decimal_floor(top_p) has reached it), and at least max(1, min_keep) entries.
/// Disabled at top_p = 1. The set is kernels::top_p_unordered's (= reference::top_p): found by
/// a weighted selection of the cut, never by sorting (see selection.hpp), in id order with its
/// weights. On a full set (top-p first, or after temperature only) the set stays a cut over the
/// row with the row's weights (kernels::top_p_cut; working_set::set_cut): a draw right after it
/// reads the row once with the cut instead of compacting up to the whole row. Even a set of fewer
/// than V / 16 entries stays a cut (select_cut's compact_small off; the other cut steps compact
/// it at once): on AVX2 (Zen 3, V = 128256) compacting the peaked row's 3.7k kept entries in HF
/// order at T 1.5 cost ~40 us (one branch per vector holding one, mispredicted) against ~12 us
/// for the draw's average quarter pass; sample() 188 -> 137 us there, 144 -> 134 us on the
/// peaked row at T 1 (20 kept), other rows unchanged (min of 9 interleaved runs).
/// processed_set() (verification) still compacts such a set.

#include <decodekit/config.hpp>
#include <decodekit/kernels/nucleus.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps/selection.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct top_p_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.top_p < 1.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float p = c.params.top_p, t = w.temperature();
        const std::size_t min_keep = c.params.min_keep;
        // a full set: the cut over the row, nothing compacted (the draw reads the row)
        if (detail::select_cut(
                w,
                [&](std::span<const float> x, candidates& s, std::span<float> wt) {
                    return kernels::top_p_cut(x, p, t, min_keep, s, wt);
                },
                false))
            return;
        detail::select_kept(w, [&](std::span<const float> x, candidates& out, std::span<float> wt) {
            return kernels::top_p_unordered(x, p, t, min_keep, out, wt);
        });
    }
};

DECODEKIT_END_NAMESPACE
