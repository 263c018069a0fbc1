#pragma once
/// \file sampling/steps/top_k.hpp
/// Top-k: keeps the k = detail::effective_top_k(params) largest logits (top_k, or
/// max(top_k, min_keep) with top_k_min_keep; tie_policy top_k_ties: exactly k, ties by lowest id,
/// or every entry tied with the k-th). Disabled for top_k <= 0 or k >= V.
/// Full set: kernels::top_k (selection flat in k, then an O(k) sort), honouring the overlay and
/// the mask (read inside the selection's passes).
/// Narrowed set: the first k of the ordered set.

#include <decodekit/config.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/sampling/step.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct top_k_step {
    static bool enabled(const sampling_params& p, std::size_t vocab_size) noexcept {
        const std::size_t k = detail::effective_top_k(p);
        return k > 0 && k < vocab_size;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        const std::size_t k = detail::effective_top_k(c.params);
        const tie_policy ties = c.params.top_k_ties;
        if (w.full() && w.overlaid()) {
            w.overlay_top_k(k, ties);
            w.clear_patch_marks();
            w.set_kept(true);
            return;
        }
        if (w.full()) {
            w.row_top_k(k, ties, w.kept());
            w.set_kept(true);
            return;
        }
        candidates& kept = w.kept();
        if (k >= kept.size()) return;
        w.order();
        std::size_t n = k;
        if (ties == tie_policy::keep_ties)
            while (n < kept.size() && kept.logits()[n] == kept.logits()[k - 1]) ++n;
        w.keep_first(n);
    }
};

DECODEKIT_END_NAMESPACE
