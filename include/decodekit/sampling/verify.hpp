#pragma once
/// \file sampling/verify.hpp
/// A sampler's processed distribution as its draw would read it, for callers that need a few of
/// its probabilities and at most one draw (speculative verification): processed_set() runs the
/// sampler's processors and steps on a row and returns a weighted_set, never compacting what the
/// steps left as a cut (top-p on a full row: working_set::cut_pending()).
///
/// A weighted_set is one of two forms over an index space:
///   - cut: the entries i of `row` with cut.contains(row[i], i), weight weights[i] (the row's
///     weights: weights.size() == row.size()); index = token id;
///   - sparse: the entries ids[j] (ascending) with weight weights[j]; index j.
/// p(t) = weight(t) / sum. prob() is O(1) on a cut and O(log kept) on a sparse set; a walk over
/// the set (weights_into: blocks of weights, 0 outside the cut) is one pass over the row (cut) or
/// the kept entries (sparse), in ascending id order either way: the order of
/// sampler::distribution_unordered() and of the sampler's draw, so an inverse-CDF draw over it is
/// the draw over that distribution (up to the rounding of the sums).
/// Cost of processed_set: the sampler's processors and steps, as sample() pays them before its
/// draw; then a compacted set (any step but a pending cut) is put in id order with its weights.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/kernels/cut.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/sampling/access.hpp>
#include <decodekit/sampling/sampler.hpp>
#include <decodekit/sampling/working_set.hpp>
#include <decodekit/sampling/workspace.hpp>
#include <decodekit/simd/xsimd_compat.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
/// out[i - b], for i in [b, e): max(0, w[i] * scale - q[i - b]) (Minus; else w[i] * scale) for
/// the entries the cut keeps (x[i] in their segment's interval), 0 for the others. SIMD.
template <bool Minus, class A = simd::default_arch>
void cut_block(const float* x, const float* w, const kernels::row_cut& cut, std::size_t b,
               std::size_t e, float scale, const float* q, float* out) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    std::fill(out, out + (e - b), 0.f);
    kernels::detail::for_each_segment(
        cut, b, e, [&](std::size_t s, std::size_t se, float lo, float hi) noexcept {
            const B lb(lo), hb(hi), sb(scale), zero(0.f);
            std::size_t i = s;
            for (; i + L <= se; i += L) {
                const B v = B::load_unaligned(x + i);
                B r = B::load_unaligned(w + i) * sb;
                if constexpr (Minus) {  // (q <= 0 or NaN reads 0, as on every other path)
                    const B qv = B::load_unaligned(q + (i - b));
                    r = simd::max<A>(r - simd::select<A>(qv > zero, qv, zero), zero);
                }
                simd::select<A>((v >= lb) & (v <= hb), r, zero).store_unaligned(out + (i - b));
            }
            for (; i < se; ++i) {
                float r = w[i] * scale;
                if constexpr (Minus) {
                    const float qi = q[i - b] > 0.f ? q[i - b] : 0.f;
                    r = r - qi > 0.f ? r - qi : 0.f;
                }
                out[i - b] = x[i] >= lo && x[i] <= hi ? r : 0.f;
            }
        });
}
/// The sum of max(0, w[i] * scale - q[i - b]) over the entries i in [b, e) the cut keeps (q <= 0
/// or NaN reads 0): cut_block<true>'s outputs summed without storing them (float lanes; the
/// vector part's lanes, then the tail, added in that order). SIMD.
template <class A = simd::default_arch>
float cut_residual_sum(const float* x, const float* w, const kernels::row_cut& cut, std::size_t b,
                       std::size_t e, float scale, const float* q) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    B acc(0.f);
    float tail = 0.f;
    kernels::detail::for_each_segment(
        cut, b, e, [&](std::size_t s, std::size_t se, float lo, float hi) noexcept {
            const B lb(lo), hb(hi), sb(scale), zero(0.f);
            std::size_t i = s;
            for (; i + L <= se; i += L) {
                const B v = B::load_unaligned(x + i);
                const B qv = B::load_unaligned(q + (i - b));
                const B r = simd::max<A>(
                    B::load_unaligned(w + i) * sb - simd::select<A>(qv > zero, qv, zero), zero);
                acc += simd::select<A>((v >= lb) & (v <= hb), r, zero);
            }
            for (; i < se; ++i) {
                const float qi = q[i - b] > 0.f ? q[i - b] : 0.f;
                const float r = w[i] * scale - qi;
                if (x[i] >= lo && x[i] <= hi && r > 0.f) tail += r;
            }
        });
    return simd::reduce_add<A>(acc) + tail;
}
}  // namespace detail

/// A processed distribution as weights over a cut of a row or over sparse ids (see the file
/// comment). Views into a sampling_workspace (processed_set): valid until its next call. Empty
/// (sum 0, no entry) when the row had no valid entry or the call was refused.
struct weighted_set {
    std::span<const float> row = {};      ///< cut form: the (processed) row the cut is over
    kernels::row_cut cut = {};            ///< cut form: which entries of row are kept
    std::span<const token_id> ids = {};   ///< sparse form: the kept ids, ascending
    std::span<const float> weights = {};  ///< cut: the row's weights; sparse: the kept ones'
    double sum = 0;                       ///< the kept weights' sum (> 0 unless empty)
    std::size_t kept = 0;                 ///< kept entries (some may have weight 0)
    bool is_cut = false;

    /// True when no entry has a positive weight.
    bool empty() const noexcept { return !(sum > 0); }
    /// The index space: row.size() (cut) or ids.size() (sparse).
    std::size_t extent() const noexcept { return is_cut ? row.size() : ids.size(); }
    /// The token at index i. \pre i < extent()
    token_id token_at(std::size_t i) const noexcept { return is_cut ? token_id(i) : ids[i]; }
    /// The index of token t (npos when t is not kept). O(1) (cut) or O(log kept) (sparse).
    std::size_t index_of(token_id t) const noexcept {
        if (t < 0) return npos;
        const auto u = std::size_t(t);
        if (is_cut) return u < row.size() && cut.contains(row[u], u) ? u : npos;
        const auto it = std::lower_bound(ids.begin(), ids.end(), t);
        return it != ids.end() && *it == t ? std::size_t(it - ids.begin()) : npos;
    }
    /// p(t) = weight / sum (0 when t is not kept or the set is empty).
    double prob(token_id t) const noexcept {
        const std::size_t i = index_of(t);
        return i == npos || empty() || !(weights[i] > 0.f) ? 0.0 : double(weights[i]) / sum;
    }
    /// Writes the weights of indices [b, b + c) to out[0, c) (0 outside the cut).
    /// \pre b + c <= extent()
    void weights_into(std::size_t b, std::size_t c, float* out) const noexcept {
        if (!is_cut) {
            std::copy_n(weights.data() + b, c, out);
            return;
        }
        detail::cut_block<false>(row.data(), weights.data(), cut, b, b + c, 1.f, nullptr, out);
    }
    /// Writes max(0, p(i) - q[i - b]) for the indices i in [b, b + c) of a cut set to out[0, c)
    /// (0 outside the cut): q[0, c) is q over the block's ids (index = id on a cut).
    /// \pre is_cut, !empty(), b + c <= extent()
    void residual_into(std::size_t b, std::size_t c, const float* q, float* out) const noexcept {
        detail::cut_block<true>(row.data(), weights.data(), cut, b, b + c, float(1.0 / sum), q,
                                out);
    }
    /// The sum of residual_into's c outputs, computed without storing them (the block sums of a
    /// residual draw; within float rounding of summing residual_into's outputs).
    /// \pre is_cut, !empty(), b + c <= extent()
    float residual_sum(std::size_t b, std::size_t c, const float* q) const noexcept {
        return detail::cut_residual_sum(row.data(), weights.data(), cut, b, b + c, float(1.0 / sum),
                                        q);
    }
    /// Inverse-CDF draw with u in [0, 1): the token (-1 when empty). kernels::draw_cut with the
    /// known sum (cut) or kernels::draw_inverse_cdf over the weights (sparse).
    token_id draw(double u) const noexcept {
        if (empty()) return -1;
        const std::size_t i = is_cut ? kernels::draw_cut(row, weights, cut, u, sum)
                                     : kernels::draw_inverse_cdf(weights, u);
        return i == npos ? token_id(-1) : token_at(i);
    }
};

namespace detail {
struct verify_access_tag;
/// verify.hpp's access to a sampler: its processors and steps on a working set.
template <>
struct sampler_access<verify_access_tag> {
    static weighted_set processed(sampler& s, std::span<const float> logits,
                                  const sample_context& ctx, sampling_workspace& ws) noexcept {
        const in_use_scope guard(s.in_use_), ws_guard(ws.in_use);
        const bool masked = has_mask(ctx.mask);
        if (!guard.entered() || !ws_guard.entered() || logits.size() != s.vocab_ ||
            !mask_covers(ctx.mask, s.vocab_))
            return {};
        ws.reserve(s.vocab_);
        processed_row pr = s.procs_.run(logits, ctx, ws);
        if (masked && !s.mask_fused_) mask_into_copy(logits, ctx.mask, pr, ws);
        working_set w(pr.row, ws, pr.patches, pr.overlay);
        if (masked && s.mask_fused_) w.set_mask(ctx.mask);
        candidates& kept = ws.cand;
        if (s.params_.greedy()) {  // the argmax with weight 1
            float best = 0.f;
            const std::size_t a = s.greedy_argmax(w, ctx, best);
            w.clear_patch_marks();
            if (a == npos) return {};
            kept.clear();
            kept.push_back(token_id(a), best);
            ws.weights[0] = 1.f;
            return {.ids = kept.ids(), .weights = {ws.weights.data(), 1}, .sum = 1.0, .kept = 1};
        }
        s.truncate(w, ctx);
        // a small set (top-p leaves one as a cut for sample()'s draw) is compacted: the sparse
        // target makes the residual of a rejection cheap
        if (w.cut_pending() && w.size() * 16 < w.row().size()) w.settle();
        if (w.cut_pending() && w.cut_temperature() == w.temperature()) {
            w.clear_patch_marks();  // (a cut is never overlaid: select_cut refuses such a set)
            return {.row = w.row(),
                    .cut = w.cut(),
                    .weights = w.cut_weights(),
                    .sum = w.cut_sum(),
                    .kept = w.size(),
                    .is_cut = true};
        }
        w.materialise();  // every valid entry when nothing narrowed the set (merges the patches)
        w.clear_patch_marks();
        if (w.kept().empty()) return {};
        w.order_by_id();
        const double sum = w.ensure_weights();
        if (!(sum > 0)) return {};
        return {.ids = kept.ids(), .weights = w.weights(), .sum = sum, .kept = kept.size()};
    }
};
}  // namespace detail

/// The distribution s.sample(logits, ctx) would draw from (same processors, steps, mask, XTC coin
/// and mirostat mu; mu is not updated), as a weighted_set in `ws` (see the file comment). Greedy:
/// the argmax with weight 1. Empty (status in every build type) when logits.size() !=
/// s.vocab_size(), the mask does not cover the row, no entry is valid, or the sampler or `ws` is
/// inside another call.
inline weighted_set processed_set(
    sampler& s, std::span<const float> logits, const sample_context& ctx = {},
    sampling_workspace& ws = sampling_workspace::this_thread()) noexcept {
    return detail::sampler_access<detail::verify_access_tag>::processed(s, logits, ctx, ws);
}

DECODEKIT_END_NAMESPACE
