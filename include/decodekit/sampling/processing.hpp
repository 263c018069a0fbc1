#pragma once
/// \file sampling/processing.hpp
/// processor_pipeline, the processor stage of a sampler (and of the strategies that score rows
/// themselves): the built-in processors configured in sampling_params, in
/// the documented order (allowed set, banned tokens, logit bias, min length, penalties, DRY,
/// no-repeat-ngram, banned sequences), with the user processors inserted at their slots
/// (sampling_params::processors), applied to the row before the truncation steps. Built-in
/// and user processors are the same kind of object (processors/processor.hpp).
///
/// Per-sequence state: once per call the stage compares the call's history with the one it saw
/// last (history_tracker, processors/history.hpp) and reports the change to every processor and
/// to the constraint whose state follows the history (append, cut back, or rebuild). So a
/// stateful processor costs what changed (penalty counts, the n-gram index), never a rescan.
///
/// Dense path: the row is copied into the workspace and every processor runs on the copy.
/// Sparse path (every processor declares the ids it may touch, and the first step can merge
/// patches: greedy, top-k, min-p): only the declared entries are copied; the entries the
/// processors changed become patches over the caller's row (no row copy; see working_set.hpp).
/// Its cost is O(declared ids) (each once per call) plus the first step's pass over the row,
/// which excludes the patched ids with a bitmask instead of selecting k + patches entries.
/// Penalties alone that only lower logits (penalties_processor::lowers_only()), for a caller
/// that asks for it (run()'s `defer`), write no patch at all: the working set's first step asks
/// for the processed values of the entries it selects (working_set.hpp, deferred patches), so
/// a call costs O(k) lookups instead of O(distinct ids in the window). When the selection cannot
/// decide without the patches they are written after all (one extra pass); a sequence where that
/// keeps happening backs off to writing them directly (defer_turn()).

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
#include <decodekit/sampling/working_set.hpp>
#include <decodekit/sampling/workspace.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// What the processor stage hands to the working set.
struct processed_row {
    std::span<const float> row;  ///< the row the steps read (the caller's, or the copy)
    std::size_t patches = 0;     ///< patches in the workspace (sparse path)
    bool overlay = false;        ///< row is the caller's and the patches apply over it
    /// Patches not written yet (overlay, patches == 0): the working set computes them (only
    /// with run()'s `defer`).
    detail::deferred_patches deferred{};
};

/// The processors of one sequence (see the file comment): the stage a sampler runs before its
/// steps, and what strategies that score rows themselves (beam search, contrastive search) run
/// on each sequence's row. Copy it to fork a sequence (a beam taking its parent's history): the
/// copy carries the parent's per-sequence state.
class processor_pipeline {
public:
    processor_pipeline() = default;
    /// The processors (and constraint) of `params`; the sampling fields are not used.
    /// `sparse_first_step`: the caller can merge patches over its row (a sampler whose first
    /// step is greedy, top-k or min-p); false for a plain processed copy. A constraint makes it
    /// dense (the constrained paths read a plain row).
    explicit processor_pipeline(const sampling_params& params, bool sparse_first_step = false)
        : constraint_(params.constraint) {
        build(params);
        bool all_sparse = true, follows = constraint_.follows_history();
        for (const any_processor& p : procs_) {
            all_sparse = all_sparse && p.sparse();
            follows = follows || p.follows_history();
        }
        sparse_ = !procs_.empty() && all_sparse && sparse_first_step && !params.constraint;
        follows_ = follows;
    }

    /// True when some processor changes the logits.
    bool active() const noexcept { return !procs_.empty(); }
    /// True when the stage patches instead of copying.
    bool sparse() const noexcept { return sparse_; }
    /// The sampler's copy of the constraint (empty: none).
    any_constraint& constraint() noexcept { return constraint_; }
    /// The stage's copy of user processor `index` (sampling_params::processors) when it is a P.
    template <class P>
    P* user_processor(std::size_t index) noexcept {
        return index < user_.size() ? procs_[user_[index]].get<P>() : nullptr;
    }
    /// The processor context of a call.
    static processor_context context(const sample_context& ctx, std::size_t vocab) noexcept {
        return {ctx.history, ctx.prompt_length, ctx.sequence, ctx.step, vocab};
    }

    /// Brings the per-sequence state up to date with ctx.history (history.hpp), then applies
    /// the processors for a call with context `ctx` (see processed_row). `defer`: the caller
    /// hands the result to a working_set (with processed_row::deferred) before anything else
    /// reads the patches, so the penalties may leave them deferred (see the file comment); the
    /// pipeline must then outlive that working set's use of them (its call).
    processed_row run(std::span<const float> logits, const sample_context& ctx,
                      sampling_workspace& ws, bool defer = false) noexcept {
        const processor_context pc = context(ctx, logits.size());
        if (follows_) follow_history(pc);
        if (procs_.empty()) return {logits};
        const std::span<float> row = ws.row_copy().first(logits.size());  // grows once
        if (sparse_) return run_sparse(logits, pc, ws, row, defer);
        std::copy(logits.begin(), logits.end(), row.begin());
        for (any_processor& p : procs_) p.apply(row, pc);
        return {std::span<const float>(row.data(), row.size())};
    }

    /// Brings the per-sequence state up to date with ctx.history and applies the processors to
    /// `row` in place (strategies that keep their own rows). \pre row.size() is the vocabulary
    void apply(std::span<float> row, const sample_context& ctx) noexcept {
        const processor_context pc = context(ctx, row.size());
        if (follows_) follow_history(pc);
        for (any_processor& p : procs_) p.apply(row, pc);
    }

    /// The processors once more on `row` (a fresh copy of the caller's row), without following
    /// the history again (a redraw within one call).
    void reapply(std::span<float> row, const sample_context& ctx) noexcept {
        const processor_context pc = context(ctx, row.size());
        for (any_processor& p : procs_) p.apply(row, pc);
    }

private:
    std::vector<any_processor> procs_;  // built-in and user processors, in order
    std::vector<std::uint32_t> user_;   // index in procs_ of each user processor
    any_constraint constraint_;
    history_tracker tracker_{};
    bool sparse_ = false;
    bool follows_ = false;
    // deferred penalty patches (defer_turn()): calls left to write them directly, deferrals in a
    // row that had to write them, and whether the last call deferred / had to write them
    std::uint8_t defer_skip_ = 0, defer_misses_ = 0;
    bool defer_pending_ = false, defer_missed_ = false;

    /// The processors of `p` in order: the user processors of each slot before its built-in.
    void build(const sampling_params& p) {
        user_.assign(p.processors.size(), 0);
        for (unsigned slot = 0; slot <= unsigned(processor_slot::end); ++slot) {
            for (std::size_t u = 0; u < p.processors.size(); ++u)
                if (unsigned(p.processors[u].before) == slot) {
                    user_[u] = std::uint32_t(procs_.size());
                    procs_.push_back(p.processors[u].processor);
                }
            switch (processor_slot(slot)) {
                case processor_slot::allowed_tokens:
                    if (!p.allowed_tokens.empty())
                        procs_.push_back(allowed_tokens_processor(p.allowed_tokens));
                    break;
                case processor_slot::banned_tokens:
                    if (!p.banned_tokens.empty())
                        procs_.push_back(banned_tokens_processor(p.banned_tokens));
                    break;
                case processor_slot::logit_bias:
                    if (!p.logit_biases.empty())
                        procs_.push_back(logit_bias_processor(p.logit_biases));
                    break;
                case processor_slot::min_length:
                    if (p.min_new_tokens > 0 && !p.eos_ids.empty())
                        procs_.push_back(min_length_processor(p.min_new_tokens, p.eos_ids));
                    break;
                case processor_slot::penalties:
                    if (p.penalties.enabled()) procs_.push_back(penalties_processor(p.penalties));
                    break;
                case processor_slot::dry:
                    if (p.dry.enabled()) procs_.push_back(dry_processor(p.dry));
                    break;
                case processor_slot::no_repeat_ngram:
                    if (p.no_repeat_ngram_size > 0)
                        procs_.push_back(no_repeat_ngram_processor(p.no_repeat_ngram_size));
                    break;
                case processor_slot::banned_sequences:
                    if (!p.banned_sequences.empty())
                        procs_.push_back(banned_sequences_processor(p.banned_sequences, p.eos_ids));
                    break;
                case processor_slot::end:
                    break;
            }
        }
    }

    /// One sync of the history for every component whose state follows it.
    void follow_history(const processor_context& c) {
        const history_change ch = tracker_.sync(c.history);
        auto notify = [&](auto& x) {
            if (!x.follows_history()) return;
            if (ch.rebuild) {
                x.reset(c);
                return;
            }
            if (!ch.removed.empty()) x.cut_back(ch.keep, ch.removed, c);
            if (!ch.added.empty()) x.append(ch.added, c);
        };
        for (any_processor& p : procs_) notify(p);
        notify(constraint_);
    }

    /// True when this call may defer the penalties' patches. Back-off: a call whose deferred
    /// patches had to be written after all (many of the best entries penalised, or a step that
    /// merges patches) makes the next 2^b - 1 calls write them directly, b the number of such
    /// calls in a row (at most 6: one deferral in 64 calls); a deferral that decided without
    /// them ends the back-off. So a sequence whose rows keep defeating the selection pays its
    /// extra pass at most once in 64 calls.
    bool defer_turn() noexcept {
        if (defer_pending_ && !defer_missed_) defer_misses_ = 0;
        defer_pending_ = false;
        if (defer_skip_ == 0) return true;
        --defer_skip_;
        return false;
    }
    /// The deferred patches of the penalties alone (procs_[0]), sync()-ed with the call's history.
    detail::deferred_patches deferred_penalties() noexcept {
        defer_pending_ = true;
        defer_missed_ = false;
        return {.owner = this,
                .values =
                    [](void* o, const token_id* ids, float* lg, std::size_t n) noexcept {
                        auto& self = *static_cast<processor_pipeline*>(o);
                        self.procs_[0].get<penalties_processor>()->penalise(ids, lg, n);
                    },
                .write =
                    [](void* o, std::span<const float> x, detail::scored* out,
                       std::uint32_t* marks) noexcept {
                        auto& self = *static_cast<processor_pipeline*>(o);
                        self.defer_missed_ = true;
                        if (self.defer_misses_ < 6) ++self.defer_misses_;
                        self.defer_skip_ = std::uint8_t((1u << self.defer_misses_) - 1);
                        return self.procs_[0].get<penalties_processor>()->patch_synced(x, out,
                                                                                       marks);
                    }};
    }

    struct sink_state {
        std::uint32_t* seen;  // ws.seen: one bit per token, all 0 between calls
        token_id* touched;    // ws.touched
        std::size_t vocab;
        std::size_t n;
    };
    /// Sparse processors: the ids they declare (each once: a bit per token, 16 KiB at V = 128256)
    /// are gathered into the row copy; the entries that changed become patches, and their bits
    /// in ws.unpatched are cleared (the working set restores them). Per call: O(declared ids),
    /// in tight passes (declare, gather, apply, compare). The penalties alone (the common
    /// sparse stage) skip all that: penalties_processor::patch() reads the caller's row at the
    /// counted ids and writes the patches in one pass over its count arrays.
    processed_row run_sparse(std::span<const float> logits, const processor_context& pc,
                             sampling_workspace& ws, std::span<float> row, bool defer) noexcept {
        ws.reserve_sparse();
        if (procs_.size() == 1)  // the penalties alone: patches straight from the counts
            if (penalties_processor* pen = procs_[0].get<penalties_processor>();
                pen && pen->patches_directly()) {
                if (defer && pen->lowers_only() && defer_turn()) {  // no patch written yet
                    pen->sync(pc);
                    return {.row = logits,
                            .patches = 0,
                            .overlay = true,
                            .deferred = deferred_penalties()};
                }
                const std::size_t patches =
                    pen->patch(logits, pc, ws.patches.data(), ws.unpatched.data());
                return {logits, patches, patches > 0};
            }
        sink_state st{ws.seen.data(), ws.touched.data(), logits.size(), 0};
        token_sink sink(
            [](void* p, std::span<const token_id> ids) noexcept {
                auto& s = *static_cast<sink_state*>(p);
                std::size_t n = s.n;
                for (const token_id t : ids) {
                    const auto u = std::uint32_t(t);  // a negative id wraps past the vocabulary
                    if (u >= s.vocab) continue;
                    const std::uint32_t bit = 1u << (u % 32);
                    std::uint32_t& w = s.seen[u / 32];
                    if (w & bit) continue;
                    w |= bit;
                    s.touched[n++] = t;
                }
                s.n = n;
            },
            &st);
        for (const any_processor& p : procs_) p.touched(pc, sink);
        const std::size_t n = st.n;
        const token_id* touched = ws.touched.data();
        detail::scored* const patch = ws.patches.data();
        for (std::size_t i = 0; i < n; ++i) {  // gather; the original values kept in order
            const token_id t = touched[i];
            const float x = logits[std::size_t(t)];
            row[std::size_t(t)] = x;
            patch[i] = {x, t};
        }
        for (any_processor& p : procs_) p.apply(row, pc);
        std::size_t patches = 0;
        for (std::size_t i = 0; i < n; ++i) {  // the changed entries, compacted in place
            const auto t = std::uint32_t(patch[i].id);
            const float y = row[t];
            ws.seen[t / 32] &= ~(1u << (t % 32));
            if (std::bit_cast<std::uint32_t>(y) != std::bit_cast<std::uint32_t>(patch[i].logit)) {
                patch[patches++] = {y, token_id(t)};
                ws.unpatched[t / 32] &= ~(1u << (t % 32));
            }
        }
        return {logits, patches, patches > 0};
    }
};

DECODEKIT_END_NAMESPACE
