#pragma once
/// \file sampling/processing.hpp
/// The processor stage of a sampler: the processors configured in sampling_params, applied in
/// the documented order (allowed set, banned tokens, logit bias, min length, penalties, DRY,
/// no-repeat-ngram, banned sequences) to the row before the truncation steps.
///
/// Dense path: the row is copied into the workspace and every processor runs on the copy.
/// Sparse path (when every processor declares the ids it may touch and the first step can merge
/// patches: greedy, top-k, min-p): only those entries are copied; the entries the processors
/// changed become patches over the caller's row (no row copy; see working_set.hpp).

#include <decodekit/config.hpp>
#include <decodekit/processors/bias.hpp>
#include <decodekit/processors/dry.hpp>
#include <decodekit/processors/history.hpp>
#include <decodekit/processors/min_length.hpp>
#include <decodekit/processors/ngram.hpp>
#include <decodekit/processors/penalties.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/sampling/constraint.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/workspace.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

/// What the processor stage hands to the working set.
struct processed_row {
    std::span<const float> row;  ///< the row the steps read (the caller's, or the copy)
    std::size_t patches = 0;     ///< patches in the workspace (sparse path)
    bool overlay = false;        ///< row is the caller's and the patches apply over it
};

/// The processor stage of one sampler (see the file comment).
class processor_stage {
public:
    processor_stage() = default;
    /// The stage for `params`; `sparse_first_step`: the pipeline's first step can merge patches.
    /// A constraint makes the stage dense (the constrained paths read a plain row).
    processor_stage(const sampling_params& params, bool sparse_first_step)
        : active_(params.has_processors()),
          sparse_(active_ && params.allowed_tokens.empty() && sparse_first_step &&
                  !params.constraint),
          constraint_(params.constraint) {}

    /// True when some processor changes the logits.
    bool active() const noexcept { return active_; }
    /// True when the stage patches instead of copying.
    bool sparse() const noexcept { return sparse_; }
    /// The sampler's copy of the constraint (empty: none).
    any_constraint& constraint() noexcept { return constraint_; }
    /// The processor context of a call.
    static processor_context context(const sample_context& ctx, std::size_t vocab) noexcept {
        return {ctx.history, ctx.prompt_length, ctx.sequence, ctx.step, vocab};
    }

    /// Brings the per-sequence state up to date with ctx.history (history.hpp), then applies
    /// the processors of `p` for a call with context `ctx` (see processed_row).
    processed_row run(const sampling_params& p, std::span<const float> logits,
                      const sample_context& ctx, sampling_workspace& ws) noexcept {
        follow_history(context(ctx, logits.size()));
        if (!active_) return {logits};
        const std::span<float> row = ws.row_copy();  // grows once per workspace
        if (sparse_) return run_sparse(p, logits, ctx, ws, row);
        std::copy(logits.begin(), logits.end(), row.begin());
        apply_all(p, row.first(logits.size()), ctx, ws);
        return {std::span<const float>(row.data(), logits.size())};
    }

    /// The processors of `p` once more on `row` (a fresh copy of the caller's row), without
    /// following the history again (a redraw within one call).
    void reapply(const sampling_params& p, std::span<float> row, const sample_context& ctx,
                 sampling_workspace& ws) noexcept {
        if (active_) apply_all(p, row, ctx, ws);
    }

private:
    bool active_ = false;
    bool sparse_ = false;
    any_constraint constraint_;
    history_tracker tracker_{};

    /// One sync of the history for every component whose state follows it.
    void follow_history(const processor_context& c) {
        if (!constraint_.follows_history()) return;
        const history_change ch = tracker_.sync(c.history);
        if (ch.rebuild) {
            constraint_.reset(c);
            return;
        }
        if (!ch.removed.empty()) constraint_.cut_back(ch.keep, ch.removed, c);
        if (!ch.added.empty()) constraint_.append(ch.added, c);
    }

    /// Every processor on x in place, in the documented order.
    static void apply_all(const sampling_params& p, std::span<float> x, const sample_context& ctx,
                          sampling_workspace& ws) noexcept {
        if (!p.allowed_tokens.empty()) apply_allowed_tokens(x, p.allowed_tokens);
        if (!p.banned_tokens.empty()) apply_banned_tokens(x, p.banned_tokens);
        if (!p.logit_biases.empty()) apply_logit_bias(x, p.logit_biases);
        if (p.min_new_tokens > 0 && !p.eos_ids.empty()) {
            const std::size_t generated =
                ctx.history.size() > ctx.prompt_length ? ctx.history.size() - ctx.prompt_length : 0;
            apply_min_length(x, generated, p.min_new_tokens, p.eos_ids);
        }
        if (p.penalties.enabled())
            apply_penalties(x, ctx.history, ctx.prompt_length, p.penalties, ws.penalties());
        if (p.dry.enabled()) apply_dry(x, ctx.history, p.dry, ws.dry());
        if (p.no_repeat_ngram_size > 0)
            apply_no_repeat_ngram(x, ctx.history, p.no_repeat_ngram_size);
        if (!p.banned_sequences.empty()) apply_banned_sequences(x, ctx.history, p.banned_sequences);
    }

    /// Sparse processors (no allowed-token set): every processor reads and writes only ids of
    /// the history and of its own lists, so only those entries are copied into the row copy;
    /// the entries that changed become patches (marked 2 in ws.mark).
    static processed_row run_sparse(const sampling_params& p, std::span<const float> logits,
                                    const sample_context& ctx, sampling_workspace& ws,
                                    std::span<float> row) noexcept {
        ws.reserve_sparse();
        const std::size_t vocab = logits.size();
        std::size_t n = 0;
        auto touch = [&](token_id t) noexcept {
            if (t < 0 || std::size_t(t) >= vocab || ws.mark[std::size_t(t)]) return;
            ws.mark[std::size_t(t)] = 1;
            ws.touched[n++] = t;
            row[std::size_t(t)] = logits[std::size_t(t)];
        };
        for (token_id t : ctx.history) touch(t);
        for (token_id t : p.banned_tokens) touch(t);
        for (const logit_bias& b : p.logit_biases) touch(b.token);
        for (token_id t : p.eos_ids) touch(t);
        for (const auto& seq : p.banned_sequences)
            if (!seq.empty()) touch(seq.back());
        apply_all(p, row.first(vocab), ctx, ws);
        std::size_t patches = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t t = std::size_t(ws.touched[i]);
            if (std::bit_cast<std::uint32_t>(row[t]) != std::bit_cast<std::uint32_t>(logits[t])) {
                ws.patches[patches++] = {row[t], token_id(t)};
                ws.mark[t] = 2;
            } else {
                ws.mark[t] = 0;
            }
        }
        return {logits, patches, patches > 0};
    }
};

DECODEKIT_END_NAMESPACE
