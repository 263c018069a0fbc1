#pragma once
/// \file sampling/steps/top_p.hpp
/// Top-p (nucleus): sorted by probability (ties by id), keeps entry j while the mass strictly
/// before it is < top_p, and at least max(1, min_keep) entries. Disabled at top_p = 1.
/// Full set: kernels::top_p (one max + exp pass, one compaction whose survivors provably hold the
/// nucleus, survivors ordered lazily; equals reference::top_p). Narrowed set: the same rule
/// walked over the ordered survivors with the set's own normaliser.

#include <decodekit/config.hpp>
#include <decodekit/kernels/nucleus.hpp>
#include <decodekit/sampling/step.hpp>

#include <algorithm>

DECODEKIT_BEGIN_NAMESPACE

struct top_p_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept { return p.top_p < 1.f; }
    static void apply(working_set& w, const step_context& c) noexcept {
        const float p = c.params.top_p;
        if (w.full()) w.materialise_if_overlaid();
        if (w.full()) {
            kernels::top_p(w.row(), p, w.temperature(), c.params.min_keep, w.kept());
            w.set_kept(true);
            return;
        }
        w.order();
        const double s = w.fill_weights();
        if (!(s > 0)) return;
        const std::size_t keep_at_least = std::max<std::size_t>(1, c.params.min_keep);
        const std::span<const float> wt = w.weights();
        double before = 0;
        std::size_t n = 0;
        while (n < wt.size() && (n < keep_at_least || before < double(p))) {
            before += wt[n] / s;
            ++n;
        }
        w.keep_first(n);
    }
};

DECODEKIT_END_NAMESPACE
