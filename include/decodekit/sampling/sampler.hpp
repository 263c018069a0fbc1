#pragma once
/// \file sampling/sampler.hpp
/// decodekit::sampler: configured once (sampling_params + vocabulary size), applied to a logits
/// row per token. It never writes the caller's logits: when a processor is active the row is
/// copied into the workspace first (or only the entries processors touch are patched).
///
/// Pipeline: processors (processing.hpp) -> the truncation steps in the order of params.order
/// (one file each under steps/, registered in steps.hpp; they narrow a working_set) -> the draw
/// (draw.hpp) -> the logprob extras (logprobs.hpp). Greedy (temperature 0) is one argmax of the
/// processed row: no step, no draw.
///
/// Cost per call (V = vocabulary size, k = survivors of the first truncation):
///   greedy                      one argmax pass (no copy, no softmax)
///   first step top-k / min-p    one or two read passes, then O(k log k) on the survivors
///   min-p alone (+ temperature) one read pass of block maxima, then exponentials in the blocks
///                               holding kept entries only (the exp floor on a near-uniform row,
///                               ~ a read pass on a peaked one): kernels/min_p.hpp
///   XTC alone (+ temperature)   max + one exp pass storing the weights + one filter pass, then
///                               one read pass for the draw (steps/xtc.hpp)
///   first step top-p            one max+exp pass (the normaliser) + one threshold pass
///   no truncation (temperature) one max+exp pass in blocks of 2048, then one block's softmax
///   raw logprobs (opt-in)       + one max+exp pass, unless the draw already had the normaliser
///   processors                  sparse ones (all but allowed_tokens) patch a few entries with
///                               no row copy when the first step is greedy/top-k/min-p; else
///                               one copy of the row into the workspace
///   the other steps             see their files under sampling/steps/
///
/// Randomness: a draw depends only on (seed, sequence, step, logits, params): its uniform comes
/// from make_stream({seed, sequence, step}, rng_purpose::sample) (uniform(): 2 words; with
/// logprobs.chosen off, a full-row draw uses kernels::draw_temperature instead: 5 words per
/// proposal, a variable number of proposals), XTC's coin from rng_purpose::filter
/// (uniform_float(): 1 word). Never on batch position or thread.
///
/// Special values (kernels/reference.hpp): NaN and -inf entries have probability 0 and are never
/// drawn; if an entry is +inf the distribution is uniform over the +inf entries; a row with no
/// valid entry (empty, all -inf/NaN, or everything banned) gives token -1 with
/// status no_valid_token; a row whose size is not vocab_size() gives status bad_input.
///
/// Token masks (sample_context::mask), where they are read: token_mask.hpp. Min-p or XTC as the
/// only truncation is one draw over the row, not a step then a draw: steps/min_p.hpp,
/// steps/xtc.hpp.
///
/// Processors take the history from the caller (sample_context::history = prompt + generated
/// so far, caller-owned). The sampler's state is mirostat's mu and the step counter of
/// sample(logits): state() / restore() (speculative rollback).
///
/// Memory: a sampler holds its params, its state and the storage of what it returns (top-n and
/// requested logprobs): O(params). Calls work in a shared sampling_workspace (the thread's, or
/// one passed in; see workspace.hpp), so distribution() views live until the next call on that
/// workspace, while sample_result's spans are the sampler's own.
///
/// Thread safety: a sampler serves one call at a time (a second concurrent call gets
/// sample_status::concurrent_use); distinct samplers are independent. batch.hpp runs one sampler
/// per row.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/access.hpp>
#include <decodekit/sampling/constrained.hpp>
#include <decodekit/sampling/draw.hpp>
#include <decodekit/sampling/logprobs.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/processing.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps.hpp>
#include <decodekit/sampling/token_mask.hpp>
#include <decodekit/sampling/working_set.hpp>
#include <decodekit/sampling/workspace.hpp>
#include <decodekit/types.hpp>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// A configured sampler. See the file comment for the pipeline, randomness and special values.
class sampler {
public:
    /// Validates `params` (decodekit::raise on error). O(params): no O(vocabulary) work or
    /// memory (calls work in a shared workspace: see workspace.hpp).
    /// \pre vocab_size >= 1
    sampler(const sampling_params& params, std::size_t vocab_size) : vocab_(vocab_size) {
        if (vocab_size == 0) raise("sampler: vocab_size must be >= 1, got 0");
        if (vocab_size > std::size_t(std::numeric_limits<token_id>::max()))
            raise(detail::range_message("sampler: vocab_size", "<= 2^31 - 1", double(vocab_size)));
        rearm(params);
    }

    /// Re-arms the sampler with new params for the same vocabulary (a new request in a slot):
    /// validates them, resets the state; reuses the sampler's storage (no O(vocabulary) work).
    void rearm(const sampling_params& params) {
        params.validate();
        params_ = params;
        build_pipeline();
        const bool sparse_first =
            params_.greedy() ||
            (!pipeline_.empty() && pipeline_[0].user == no_user &&
             (pipeline_[0].id == sampling_step::top_k || pipeline_[0].id == sampling_step::min_p));
        procs_ = processor_pipeline(params_, sparse_first);
        defer_patches_ =
            params_.greedy() || pipeline_.empty() || pipeline_[0].id != sampling_step::min_p;
        mask_fused_ =
            detail::mask_fusable(steps(), params_.greedy(), user_steps_) && !procs_.constraint();
        envelope_ = detail::plan_min_p_envelope(steps(), params_, user_steps_);
        proposals_ = detail::plan_min_p_proposals(steps(), params_, user_steps_);
        xtc_only_ = detail::plan_xtc_only(steps(), params_, user_steps_);
        extras_.top.resize(std::min(params_.logprobs.top_n, vocab_));
        extras_.requested.resize(params_.logprobs.ids.size());
        state_ = {};
        state_.mirostat_mu = 2.f * params_.mirostat_tau;
    }

    const sampling_params& params() const noexcept { return params_; }
    std::size_t vocab_size() const noexcept { return vocab_; }
    /// The built-in truncation steps this sampler applies, in order (disabled steps removed;
    /// user steps not listed).
    std::span<const sampling_step> steps() const noexcept { return {steps_.data(), n_steps_}; }

    /// The sampler's own copy of user step `index` (sampling_params::steps) when it is an S,
    /// else nullptr: its per-sequence state.
    template <class S>
    S* user_step(std::size_t index) noexcept {
        return index < params_.steps.size() ? params_.steps[index].step.get<S>() : nullptr;
    }

    /// The sampler's own copy of user processor `index` (sampling_params::processors) when it
    /// is a P, else nullptr: its per-sequence state.
    template <class P>
    P* user_processor(std::size_t index) noexcept {
        return procs_.user_processor<P>(index);
    }

    /// The sampler's own copy of the constraint when it is a C, else nullptr: its per-sequence
    /// state.
    template <class C>
    C* constraint() noexcept {
        return procs_.constraint().get<C>();
    }

    /// Mirostat's mu and the step counter of sample(logits).
    sampler_state state() const noexcept { return state_; }
    /// Restores a state saved by state() (speculative rollback).
    void restore(const sampler_state& s) noexcept { state_ = s; }

    /// Advances the sampler's state as if sample() had drawn `emitted` from `d` (d from this
    /// sampler's distribution() for that row): mirostat's mu moves by -eta * (-log2 d(emitted) -
    /// tau). For callers that draw themselves (speculative decoding); no-op without mirostat or
    /// when d(emitted) = 0.
    void observe(const decodekit::distribution& d, token_id emitted) noexcept {
        if (!params_.mirostat) return;
        const float q = d.prob(emitted);
        if (!(q > 0.f)) return;
        update_mirostat(double(q));
    }

    /// Draws a token for `logits` keyed by (params.seed, ctx.sequence, ctx.step), working in
    /// `ws` (default: the thread's workspace).
    /// \pre logits.size() == vocab_size() (else status bad_input); status concurrent_use (nothing
    /// done) when the sampler or the workspace is inside another call.
    sample_result sample(std::span<const float> logits, const sample_context& ctx,
                         sampling_workspace& ws = sampling_workspace::this_thread()) noexcept {
        const detail::in_use_scope guard(in_use_), ws_guard(ws.in_use);
        if (!guard.entered() || !ws_guard.entered())
            return status_result(sample_status::concurrent_use);
        return run(logits, ctx, ws);
    }
    /// sample() with the key (sequence, step) and no history.
    sample_result sample(std::span<const float> logits, std::uint64_t sequence,
                         std::uint64_t step) noexcept {
        return sample(logits, sample_context{.sequence = sequence, .step = step});
    }
    /// sample() with sequence 0 and the sampler's own step counter (then incremented; a call
    /// refused with bad_input or concurrent_use does not advance it).
    sample_result sample(std::span<const float> logits) noexcept {
        sampling_workspace& ws = sampling_workspace::this_thread();
        const detail::in_use_scope guard(in_use_), ws_guard(ws.in_use);
        if (!guard.entered() || !ws_guard.entered())
            return status_result(sample_status::concurrent_use);
        if (logits.size() != vocab_) return status_result(sample_status::bad_input);
        const std::uint64_t step = state_.next_step++;
        return run(logits, sample_context{.sequence = 0, .step = step}, ws);
    }

    /// The final candidate set the draw of sample(logits, ctx) uses (same processors, steps, XTC
    /// coin and mirostat mu; mu is not updated), by descending probability (ties by id). Greedy:
    /// the argmax with probability 1. Empty when no token is valid (or the sampler or workspace
    /// is inside another call). Views into `ws`: valid until its next call. Without truncation
    /// this materialises and sorts the whole valid row (inspection, not hot).
    decodekit::distribution distribution(
        std::span<const float> logits, const sample_context& ctx = {},
        sampling_workspace& ws = sampling_workspace::this_thread()) noexcept {
        return distribution_of(logits, ctx, true, ws);
    }

    /// distribution() as a set, in ascending id order: same ids and probabilities (up to the
    /// rounding of the normaliser, summed in another order). Never sorts by probability: without
    /// truncation one filter pass over the row plus one exp pass (for speculative verification,
    /// which needs no order). Views into `ws`: valid until its next call.
    decodekit::distribution distribution_unordered(
        std::span<const float> logits, const sample_context& ctx = {},
        sampling_workspace& ws = sampling_workspace::this_thread()) noexcept {
        return distribution_of(logits, ctx, params_.greedy(), ws);
    }

private:
    template <class Tag>
    friend struct detail::sampler_access;

    sampling_params params_;
    std::size_t vocab_;
    static constexpr std::uint32_t no_user = std::uint32_t(-1);
    struct pipeline_entry {
        sampling_step id;    // the built-in step (when user == no_user)
        std::uint32_t user;  // index in params_.steps of a user step, or no_user
    };
    std::vector<pipeline_entry> pipeline_;  // built-in and user steps, in order
    std::array<sampling_step, 10> steps_{};
    std::size_t n_steps_ = 0;
    bool user_steps_ = false;
    bool mask_fused_ = false;            // the call's mask is read inside the first row pass
    bool defer_patches_ = true;          // not before min-p, which merges every patch anyway
    detail::min_p_envelope envelope_;    // min-p + temperature: one draw (steps/min_p.hpp)
    detail::xtc_only_plan xtc_only_;     // XTC + temperature: one draw (steps/xtc.hpp)
    detail::min_p_proposals proposals_;  // constraint, min-p first: draw, then check
    sampler_state state_{};
    processor_pipeline procs_;
    logprob_storage extras_;
    detail::in_use_flag in_use_;
    std::uint64_t batch_call_ = 0;  // the batched call that last claimed this sampler

    static sample_result status_result(sample_status s) noexcept {
        sample_result r;
        r.status = s;
        return r;
    }

    /// The order list with its disabled built-in steps removed and the user steps inserted.
    void build_pipeline() {
        const std::span<const sampling_step> src =
            params_.order == sampling_order::custom
                ? std::span<const sampling_step>(params_.custom_order)
                : preset_steps(params_.order);
        pipeline_.clear();
        n_steps_ = 0;
        user_steps_ = !params_.steps.empty();
        for (std::size_t pos = 0; pos <= src.size(); ++pos) {
            for (std::size_t u = 0; u < params_.steps.size(); ++u)
                if (std::min(params_.steps[u].position, src.size()) == pos)
                    pipeline_.push_back({sampling_step::temperature, std::uint32_t(u)});
            if (pos < src.size() && builtin_step_of(src[pos]).enabled(params_, vocab_)) {
                pipeline_.push_back({src[pos], no_user});
                steps_[n_steps_++] = src[pos];
            }
        }
    }

    void update_mirostat(double prob) noexcept {
        const double surprise = -std::log2(prob);
        state_.mirostat_mu -=
            float(double(params_.mirostat_eta) * (surprise - double(params_.mirostat_tau)));
    }

    /// Runs the pipeline's steps on `w` (only the user steps when greedy: the built-in ones keep
    /// the argmax). A step is skipped once the set is down to one entry (temperature excepted).
    /// User steps never see the overlay (the set is materialised for them).
    void truncate(working_set& w, const sample_context& ctx, std::size_t first = 0) noexcept {
        const step_context sc{params_, ctx, state_};
        const bool greedy = params_.greedy();
        for (std::size_t i = first; i < pipeline_.size(); ++i) {
            const pipeline_entry& e = pipeline_[i];
            const bool user = e.user != no_user;
            if (greedy && !user) continue;
            if (!w.full() && w.size() <= 1 && (user || e.id != sampling_step::temperature))
                continue;
            if (user) {
                w.materialise_if_overlaid();
                params_.steps[e.user].step.apply(w, sc);
            } else {
                builtin_step_of(e.id).apply(w, sc);
            }
        }
    }

    /// Argmax of the processed row after the user steps (lowest id on ties); npos if nothing is
    /// valid.
    std::size_t greedy_argmax(working_set& w, const sample_context& ctx, float& best) noexcept {
        if (user_steps_) truncate(w, ctx);
        if (!w.full()) {
            const candidates& kept = w.kept();
            std::size_t a = npos;
            for (std::size_t i = 0; i < kept.size(); ++i)
                if (a == npos || kept.logits()[i] > kept.logits()[a] ||
                    (kept.logits()[i] == kept.logits()[a] && kept.ids()[i] < kept.ids()[a]))
                    a = i;
            if (a == npos || !(kept.logits()[a] > -detail::f_inf)) return npos;
            best = kept.logits()[a];
            return std::size_t(kept.ids()[a]);
        }
        if (!w.overlaid()) {
            const std::size_t a = w.row_argmax();
            if (a == npos || !(w.row()[a] > -detail::f_inf)) return npos;
            best = w.row()[a];
            return a;
        }
        w.overlay_top_k(1, tie_policy::exactly_k);
        w.clear_patch_marks();
        if (w.kept().empty()) return npos;
        best = w.kept().logits()[0];
        return std::size_t(w.kept().ids()[0]);
    }

    sample_result run(std::span<const float> logits, const sample_context& ctx,
                      sampling_workspace& ws) noexcept {
        const bool masked = detail::has_mask(ctx.mask);
        if (logits.size() != vocab_ || !detail::mask_covers(ctx.mask, vocab_))
            return status_result(sample_status::bad_input);
        ws.reserve(vocab_);
        // (the mask's copy path reads the patches: none deferred for it)
        processed_row pr = procs_.run(logits, ctx, ws, defer_patches_ && (!masked || mask_fused_));
        if (masked && !mask_fused_) detail::mask_into_copy(logits, ctx.mask, pr, ws);
        working_set w(pr.row, ws, pr.patches, pr.overlay, pr.deferred);
        if (masked && mask_fused_) w.set_mask(ctx.mask);
        sample_result r = run_unmasked(logits, ctx, w, pr);
        if (masked && r.status == sample_status::no_valid_token)
            r.status = detail::none_allowed(logits);
        return r;
    }

    sample_result run_unmasked(std::span<const float> logits, const sample_context& ctx,
                               working_set& w, const processed_row& pr) noexcept {
        if (procs_.constraint()) {
            const processor_context pc = processor_pipeline::context(ctx, vocab_);
            detail::constraint_queries q{procs_.constraint(), pc};
            sample_result r = run_constrained(logits, ctx, w, pr.row, q);
            r.constraint_queries = q.count;
            return r;
        }
        return finish(logits, ctx, w, rng_purpose::sample);
    }

    /// The pipeline from its first step, then the greedy pick or the draw, then the extras.
    sample_result finish(std::span<const float> logits, const sample_context& ctx, working_set& w,
                         rng_purpose purpose, std::size_t first_step = 0) noexcept {
        sample_result r;
        const logprobs_request& lr = params_.logprobs;
        if (params_.greedy()) {
            float best = 0.f;
            const std::size_t a = greedy_argmax(w, ctx, best);
            w.clear_patch_marks();
            if (a == npos) return r;
            r.token = token_id(a);
            r.logprob = lr.chosen ? 0.f : std::numeric_limits<float>::quiet_NaN();
            r.status = sample_status::ok;
            if (lr.any()) fill_logprob_extras(r, lr, logits, w, true, 0, false, extras_);
            return r;
        }
        // min-p or XTC as the only truncation: one draw over the row (no step, no compaction)
        const bool whole = first_step == 0 && w.full() && !w.overlaid() && !lr.any();
        const bool min_p_only = whole && envelope_.on;
        const bool xtc_only = whole && xtc_only_.on && !w.masked();
        if (!min_p_only && !xtc_only) truncate(w, ctx, first_step);
        w.clear_patch_marks();
        rng_stream rng = make_stream({params_.seed, ctx.sequence, ctx.step}, purpose);
        const set_draw d = min_p_only ? detail::draw_min_p_only(w, params_.min_p, envelope_.t_min_p,
                                                                envelope_.t_draw, lr.chosen, rng)
                           : xtc_only
                               ? detail::draw_xtc_only(w, params_, ctx, xtc_only_, lr.chosen, rng)
                               : draw_from(w, rng, lr.chosen || lr.any());
        if (d.token < 0) return r;
        r.token = d.token;
        r.logprob = float(d.logprob);
        r.status = sample_status::ok;
        if (params_.mirostat && !w.full()) update_mirostat(d.prob);
        // the draw's normaliser is the raw one when the set's row is the caller's at t = 1
        const bool raw_known = d.row_lse_known && w.row().data() == logits.data() &&
                               w.temperature() == 1.f && !w.masked();
        if (lr.any()) fill_logprob_extras(r, lr, logits, w, false, d.row_lse, raw_known, extras_);
        if (!lr.chosen) r.logprob = std::numeric_limits<float>::quiet_NaN();
        return r;
    }

    /// True when the pipeline is temperature steps only (a draw over the whole row).
    bool temperature_only() const noexcept {
        for (const pipeline_entry& e : pipeline_)
            if (e.user != no_user || e.id != sampling_step::temperature) return false;
        return true;
    }

    /// The constrained paths (sampling/constrained.hpp); `row` is the processed row.
    sample_result run_constrained(std::span<const float> logits, const sample_context& ctx,
                                  working_set& w, std::span<const float> row,
                                  detail::constraint_queries& q) noexcept {
        const logprobs_request& lr = params_.logprobs;
        const bool exact = params_.constraint_mode == constraint_check::exact;
        const bool greedy = params_.greedy();
        if (exact && greedy && !user_steps_) {
            if (detail::walk_allowed(w, 1, tie_policy::exactly_k, q) == 0)
                return status_result(detail::none_allowed(row));
            return finish(logits, ctx, w, rng_purpose::sample);
        }
        const pipeline_entry* first = pipeline_.empty() ? nullptr : &pipeline_[0];
        if (exact && !greedy && first && first->user == no_user &&
            first->id == sampling_step::top_k) {
            if (detail::walk_allowed(w, detail::effective_top_k(params_), params_.top_k_ties, q) ==
                0)
                return status_result(detail::none_allowed(row));
            return finish(logits, ctx, w, rng_purpose::sample, 1);
        }
        if (exact && !greedy && first && first->user == no_user &&
            first->id == sampling_step::min_p) {
            if (detail::walk_allowed(w, 1, tie_policy::exactly_k, q) == 0)
                return status_result(detail::none_allowed(row));
            const detail::min_p_first r =
                detail::constrained_min_p(w, row, params_, proposals_, w.temperature(), ctx, q);
            if (r.token != npos) return detail::drawn_result(r.token);
            const bool proposed = r.proposed;
            return finish(logits, ctx, w, proposed ? rng_purpose::constraint : rng_purpose::sample,
                          1);
        }
        detail::refused_tokens refused;
        if (exact && !greedy && temperature_only() && !lr.chosen && !lr.any()) {
            truncate(w, ctx);
            rng_stream rng =
                make_stream({params_.seed, ctx.sequence, ctx.step}, rng_purpose::sample);
            bool drawn = false;
            const std::size_t t = detail::draw_then_check(
                [&] { return kernels::draw_temperature(row, w.temperature(), rng); },
                [&](token_id c) { return q(c); }, refused, drawn);
            if (t != npos) return detail::drawn_result(t);
            if (!drawn) return status_result(sample_status::no_valid_token);
        } else if (!exact) {
            // llama.cpp's shortcut: the unconstrained pipeline, then a check of its token
            const sample_result r = finish(logits, ctx, w, rng_purpose::sample);
            if (r.ok() && q(r.token)) return r;
            if (r.status != sample_status::ok && r.status != sample_status::no_valid_token)
                return r;
        }
        // the full mask: every valid entry queried, the pipeline on the masked row (a redraw,
        // after a first draw that was not allowed, uses its own stream)
        const bool redraw = !exact || temperature_only();
        const std::span<float> m = detail::writable_copy(logits, row, ctx, w.workspace(), procs_,
                                                         xtc_step::enabled(params_, vocab_));
        std::size_t valid = 0;
        if (detail::mask_row(m, q, valid, refused) == 0)
            return status_result(valid > 0 ? sample_status::no_allowed_token
                                           : sample_status::no_valid_token);
        working_set wm(std::span<const float>(m.data(), m.size()), w.workspace());
        return finish(logits, ctx, wm, redraw ? rng_purpose::constraint : rng_purpose::sample);
    }

    decodekit::distribution distribution_of(std::span<const float> logits,
                                            const sample_context& ctx, bool ordered,
                                            sampling_workspace& ws) noexcept {
        const detail::in_use_scope guard(in_use_), ws_guard(ws.in_use);
        const bool masked = detail::has_mask(ctx.mask);
        if (!guard.entered() || !ws_guard.entered() || logits.size() != vocab_ ||
            !detail::mask_covers(ctx.mask, vocab_))
            return {};
        ws.reserve(vocab_);
        // (the mask's copy path reads the patches: none deferred for it)
        processed_row pr = procs_.run(logits, ctx, ws, defer_patches_ && (!masked || mask_fused_));
        if (masked && !mask_fused_) detail::mask_into_copy(logits, ctx.mask, pr, ws);
        working_set w(pr.row, ws, pr.patches, pr.overlay, pr.deferred);
        if (masked && mask_fused_) w.set_mask(ctx.mask);
        candidates& kept = w.kept();
        if (params_.greedy()) {
            float best = 0.f;
            const std::size_t a = greedy_argmax(w, ctx, best);
            w.clear_patch_marks();
            if (a == npos) return {};
            kept.clear();
            kept.push_back(token_id(a), best);
            ws.weights[0] = 1.f;
            return {{kept.id_storage(), 1}, {ws.weights.data(), 1}};
        }
        truncate(w, ctx);
        w.materialise();  // every valid entry when nothing narrowed the set
        if (kept.empty()) return {};
        if (ordered)
            w.order();
        else
            w.order_by_id();
        const double s = w.ensure_weights();
        if (!(s > 0)) return {};
        const float* wt = ws.weights.data();
        w.keep_if([wt](std::size_t i) { return wt[i] > 0; });  // underflow, finite next to +inf
        for (std::size_t i = 0; i < kept.size(); ++i) ws.weights[i] = float(ws.weights[i] / s);
        return {{kept.id_storage(), kept.size()}, {ws.weights.data(), kept.size()}};
    }
};

DECODEKIT_END_NAMESPACE
