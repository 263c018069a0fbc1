#pragma once
/// \file sampling/steps/selection.hpp
/// What the selection steps (top-p, typical, epsilon, eta, mirostat, top-n-sigma, XTC) share:
/// running a truncation kernel (kernels/nucleus.hpp, typical.hpp, thresholds.hpp, xtc.hpp) on
/// the working set, full or narrowed, so that each kept set is found by selection, never by
/// sorting it (detail, not a step).
///
/// Full set: the kernel runs on the row; its kept entries (ids = positions) land in kept() in id
/// order with their weights (exp((x - max) / T) at the set's temperature, max the row's), which
/// the draw then reads in one pass. Narrowed set: the kernel runs on the kept logits as a row of
/// their own (its probabilities are the set's), into the workspace's second set; positions map
/// back to ids. The kept entries are first put in id order unless they already are in id order
/// or ordered (logit descending, ties by id): in both, positions ascend with ids inside every
/// group of tied logits, so the kernels' ties (lowest position first) are the reference's
/// (lowest id first), and the result keeps the input's order.
/// Each run is counted in the workspace's selection_counters by its exactness tier.
/// A kernel that reports bad_size (a workspace smaller than the row: not reachable through the
/// sampler, which sizes it) leaves the set unchanged.
/// Cut form (select_cut: top-p and typical on a full set; epsilon, eta and mirostat on a full set
/// when their threshold does not bound the kept set below V / 16 entries): the kernel's cut and the
/// row's weights become the working set's pending cut (working_set::set_cut), compacted only if
/// something after it needs the entries; the draw reads the row with the cut.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <cmath>
#include <span>
#include <utility>

DECODEKIT_BEGIN_NAMESPACE
namespace detail {

/// Counts a selection kernel's run in ws.tiers.
inline void count_tier(sampling_workspace& ws, const kernels::truncation_result& r) noexcept {
    ++ws.tiers.runs;
    ws.tiers.corrected += r.tier == kernels::exactness_tier::corrected;
    ws.tiers.double_pass += r.tier == kernels::exactness_tier::double_pass;
    ws.tiers.reference += r.tier == kernels::exactness_tier::reference;
}

/// Runs `kernel(x, out, weights) -> kernels::truncation_result` (an unordered truncation kernel:
/// its kept set to out in position order, weights[0, kept) their weights) on the working set
/// and makes its kept set the set's (see the file comment). Returns the kernel's result (its ids
/// are the row's when the set was full).
template <class Kernel>
kernels::truncation_result select_kept(working_set& w, Kernel&& kernel) noexcept {
    w.materialise_if_overlaid();
    sampling_workspace& ws = w.workspace();
    kernels::truncation_result r;
    if (w.full()) {
        const std::span<const float> x = w.row();
        r = kernel(x, ws.cand, std::span<float>(ws.weights.data(), x.size()));
        if (!r.ok()) return r;
        w.set_kept(false);  // id order
    } else {
        if (!w.ordered() && !w.id_ordered()) w.order_by_id();
        const bool was_ordered = w.ordered();
        candidates& in = ws.cand;
        candidates& out = ws.selection();
        const std::span<const float> x = in.logits();
        r = kernel(x, out, std::span<float>(ws.weights.data(), x.size()));
        if (!r.ok()) return r;
        token_id* ids = out.id_storage();
        const token_id* from = in.id_storage();
        for (std::size_t j = 0; j < out.size(); ++j) ids[j] = from[std::size_t(ids[j])];
        std::swap(ws.cand, ws.sel);
        w.set_kept(was_ordered);
    }
    count_tier(ws, r);
    // the kernel's weights of the kept entries (none when they all rounded to 0: recomputed
    // relative to the kept max when needed)
    if (r.kept == w.kept().size() && r.kept_sum > 0 && std::isfinite(r.kept_sum))
        w.set_weights(r.kept_sum);
    return r;
}

/// Runs `kernel(x, scratch, weights) -> kernels::truncation_result` (a cut kernel: its kept set
/// as truncation_result::cut over x, an interval of logits with id limits at its ends (a prefix
/// of the row's order for top-p and the thresholds), weights[0, V) the row's weights
/// exp((x_i - max) / T), scratch left empty) on a full set and leaves the set as that cut,
/// nothing compacted (working_set::set_cut: the draw reads the row with the cut). A kernel that
/// may answer compacted instead (kernels::kept_form::either: scratch.size() == kept, weights
/// [0, kept) theirs) has its set taken as select_kept takes it. Returns false, doing nothing,
/// when the set is not full and plain (overlaid or masked), so the caller runs the compacting
/// form; a kernel's answer that the cut form cannot carry (a row max of +inf, no positive kept
/// weight) or, when compact_small, a set of fewer than V / 16 entries is compacted on the spot
/// (the same set).
template <class Kernel>
bool select_cut(working_set& w, Kernel&& kernel, bool compact_small = true) noexcept {
    if (!w.full() || w.overlaid() || w.masked()) return false;  // (the cut kernels read no mask)
    sampling_workspace& ws = w.workspace();
    const std::span<const float> x = w.row();
    const kernels::truncation_result r =
        kernel(x, ws.cand, std::span<float>(ws.weights.data(), x.size()));
    if (!r.ok()) return true;  // (not reachable: the workspace is sized) the set stays
    count_tier(ws, r);
    if (ws.cand.size() == r.kept) {  // compacted (or empty)
        w.set_kept(false);           // id order
        if (r.kept_sum > 0 && std::isfinite(r.kept_sum)) w.set_weights(r.kept_sum);
        return true;
    }
    w.set_cut(r.cut, r.kept, std::isfinite(r.max) ? r.max : 0.f, r.kept_sum);
    // A small set is compacted at once: that pass reads the row and only the few weights it
    // keeps, cheaper than the draw's walk over the row's weights.
    if (!std::isfinite(r.max) || !(r.kept_sum > 0) || !std::isfinite(r.kept_sum) ||
        (compact_small && r.kept * 16 < x.size()))
        w.settle();
    return true;
}

}  // namespace detail
DECODEKIT_END_NAMESPACE
