#pragma once
/// \file sampling/sampler.hpp
/// decodekit::sampler: configured once (sampling_params + vocabulary size), applied to a logits
/// row per token. It owns its whole workspace (allocated by the constructor; sample() and
/// distribution() allocate nothing) and never writes the caller's logits: when a processor is
/// active the row is copied into the workspace first; otherwise no copy is made.
///
/// Pipeline: processors -> the truncation steps in the order of params.order -> draw.
/// The working set starts as the whole row (never materialised); the first truncation step
/// compacts it into a candidate set (kernels::top_k / top_p / filter_at_least) and every later
/// step works on the survivors only. Temperature is lazy (a scale, no pass over the row).
///
/// Cost per call (V = vocabulary size, k = survivors of the first truncation):
///   greedy                      one argmax pass (no copy, no softmax)
///   first step top-k / min-p    one or two read passes, then O(k log k) on the survivors
///   first step top-p            one max+exp pass (the normaliser) + one threshold pass
///   no truncation (temperature) one max+exp pass in blocks of 2048, then one block's softmax
///   raw logprobs (opt-in)       + one max+exp pass, unless the draw already had the normaliser
///   processors                  sparse ones (all but allowed_tokens) patch a few entries with
///                               no row copy when the first step is greedy/top-k/min-p; else
///                               one copy of the row into the workspace
///   epsilon / eta / mirostat    first step: an exp_sum (+ entropy) pass, one threshold pass,
///                               then O(k log k) on the survivors
///   typical first               exp_sum + entropy passes, one compaction per widening of the
///                               logit interval, the survivors ordered by key lazily (no sort of
///                               the row)
///   XTC first (when it fires)   exp_sum pass, one compaction (the head, <= 1/threshold
///                               entries); if it drops tokens, one copy of the row with them
///                               at -inf, then the full-row draw
///   top-n-sigma first           materialises the valid row (sorting only when min_keep binds)
///
/// Randomness: a draw depends only on (seed, sequence, step, logits, params): its uniform comes
/// from make_stream({seed, sequence, step}, rng_purpose::sample) (uniform(): 2 words; with
/// logprobs.chosen off, a full-row draw uses kernels::draw_temperature instead: 5 words per
/// proposal, a variable number of proposals), XTC's coin
/// from rng_purpose::filter (uniform_float(): 1 word). Never on batch position or thread.
///
/// Special values (kernels/reference.hpp): NaN and -inf entries have probability 0 and are never
/// drawn; if an entry is +inf the distribution is uniform over the +inf entries; a row with no
/// valid entry (empty, all -inf/NaN, or everything banned) gives token -1 with
/// status no_valid_token; a row whose size is not vocab_size() gives status bad_input.
///
/// Processors take the history from the caller (sample_context::history = prompt + generated
/// so far, caller-owned); the sampler keeps no token history. Its only state is mirostat's mu
/// and the step counter of sample(logits): state() / restore() (speculative rollback).
///
/// Thread safety: a sampler is not shared between threads while sampling (its workspace is
/// mutable); distinct samplers are independent. batch.hpp runs one sampler per row.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/nucleus.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Outcome of one sample() call.
enum class sample_status : std::uint8_t {
    ok,              ///< a token was drawn
    no_valid_token,  ///< every entry NaN / -inf (or banned): token = -1
    bad_input,       ///< logits.size() != vocab_size(): token = -1
    /// the sampler was inside another call (another thread, or the same sampler re-entered):
    /// nothing was done, token = -1 (a sampler serves one call at a time)
    concurrent_use,
};

/// A token and a log-probability (top-n alternatives, requested ids).
struct token_logprob {
    token_id token = -1;
    float logprob = -std::numeric_limits<float>::infinity();
};

/// What sample() returns. The spans point into the sampler's workspace: valid until its next call.
struct sample_result {
    token_id token = -1;  ///< the drawn token; -1 unless ok()
    /// log of the probability the token was drawn with (after the whole pipeline; 0 for greedy;
    /// NaN when params.logprobs.chosen is off).
    float logprob = std::numeric_limits<float>::quiet_NaN();
    /// log-softmax of the caller's logits at the token (temperature 1, before processors);
    /// NaN unless params.logprobs.raw (opt-in: needs the full normaliser).
    float raw_logprob = std::numeric_limits<float>::quiet_NaN();
    /// 1-based rank of the token (see logprobs_request::rank); 0 unless requested.
    std::size_t rank = 0;
    sample_status status = sample_status::no_valid_token;
    std::span<const token_logprob> top = {};        ///< logprobs_request::top_n best, best first
    std::span<const token_logprob> requested = {};  ///< logprobs_request::ids, in request order

    bool ok() const noexcept { return status == sample_status::ok; }
};

/// The key and the token history of one sampling step.
struct sample_context {
    std::uint64_t sequence = 0;  ///< sequence (request) id: part of the RNG key
    std::uint64_t step = 0;      ///< step within the sequence: part of the RNG key
    /// prompt + generated so far, oldest first (caller-owned; read by the processors).
    std::span<const token_id> history = {};
    std::size_t prompt_length = 0;  ///< history[0, prompt_length) is the prompt
};

/// The mutable state of a sampler (save with state(), roll back with restore()).
struct sampler_state {
    float mirostat_mu = 0.f;      ///< mirostat v2's mu (2 * tau initially)
    std::uint64_t next_step = 0;  ///< the step sample(logits) uses next
    friend bool operator==(const sampler_state&, const sampler_state&) = default;
};

/// A sparse distribution: token ids and their probabilities (equal lengths, probabilities sum to 1,
/// descending probability, ties by ascending id; ascending id from
/// sampler::distribution_unordered()). Views into a sampler's workspace (valid until
/// its next call) or into caller storage.
struct distribution {
    std::span<const token_id> tokens = {};
    std::span<const float> probs = {};

    std::size_t size() const noexcept { return tokens.size(); }
    bool empty() const noexcept { return tokens.empty(); }
    /// Probability of token t (0 if absent). O(size()).
    float prob(token_id t) const noexcept {
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (tokens[i] == t) return probs[i];
        return 0.f;
    }
};

/// Inverse-CDF draw from `d` with the uniform u in [0, 1): the first entry (in d's order) whose
/// running probability sum exceeds u * sum(probs); the last positive entry if rounding leaves it
/// unreached. -1 if d has no positive probability.
inline token_id draw(const distribution& d, double u) noexcept {
    const std::size_t i = kernels::draw_inverse_cdf(d.probs, u);
    return i == npos ? token_id(-1) : d.tokens[i];
}

/// Draw from `d` with one uniform() (2 words) of `rng`. For a truncated pipeline (a step other
/// than temperature and XTC cut the row: without one, sample() draws over the row in id blocks),
/// with rng = make_stream({seed, sequence, step}, rng_purpose::sample) this returns the same token
/// as sampler::sample() on the row that gave `d` when `d` came from distribution() (descending
/// probability order; distribution_unordered() is in id order, so the same law but not the same
/// token), barring float rounding within ~1e-7 of a CDF step; in every case the same law.
inline token_id draw(const distribution& d, rng_stream& rng) noexcept {
    return draw(d, rng.uniform());
}

class sampler;

namespace detail {
inline constexpr float f_inf = std::numeric_limits<float>::infinity();

/// A flag set while a sampler is inside a call; copies are fresh, idle flags (so a sampler stays
/// copyable). One atomic exchange per call.
class in_use_flag {
public:
    in_use_flag() = default;
    in_use_flag(const in_use_flag&) noexcept {}
    in_use_flag& operator=(const in_use_flag&) noexcept { return *this; }
    /// True when the caller may enter (the flag was idle; it is now set).
    bool try_enter() noexcept { return !busy_.exchange(true, std::memory_order_acquire); }
    void leave() noexcept { busy_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> busy_{false};
};
/// Holds an in_use_flag for one scope (entered() tells whether it got it).
class in_use_scope {
public:
    explicit in_use_scope(in_use_flag& f) noexcept : f_(f), ok_(f.try_enter()) {}
    ~in_use_scope() {
        if (ok_) f_.leave();
    }
    in_use_scope(const in_use_scope&) = delete;
    in_use_scope& operator=(const in_use_scope&) = delete;
    bool entered() const noexcept { return ok_; }

private:
    in_use_flag& f_;
    bool ok_;
};
/// batch.hpp's access to a sampler's batch mark (one sampler in two rows of one call is
/// reported before anything is sampled).
struct sampler_batch_access {
    /// A fresh call id (never 0).
    static std::uint64_t next_call() noexcept {
        static std::atomic<std::uint64_t> counter{0};
        return counter.fetch_add(1, std::memory_order_relaxed) + 1;
    }
    /// Marks `s` as used by `call`; false when it already was (a duplicate row).
    static bool claim(sampler& s, std::uint64_t call) noexcept;
};

/// exp((x - m)/t) with the special-value rules (m = +inf: 1 for +inf entries, else 0).
inline double cand_weight(float x, float m, float t) noexcept {
    if (!(x > -f_inf)) return 0.0;  // NaN, -inf
    if (m == f_inf) return x == f_inf ? 1.0 : 0.0;
    return std::exp((double(x) - double(m)) / double(t));
}
struct scored {
    float logit;
    token_id id;
};
inline bool scored_before(const scored& a, const scored& b) noexcept {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
}  // namespace detail

/// A configured sampler. See the file comment for the pipeline, randomness and special values.
class sampler {
public:
    /// Validates `params` (decodekit::raise on error) and allocates the whole workspace.
    /// \pre vocab_size >= 1
    sampler(const sampling_params& params, std::size_t vocab_size)
        : params_(params), vocab_(vocab_size) {
        params_.validate();
        if (vocab_size == 0) raise("sampler: vocab_size must be >= 1, got 0");
        if (vocab_size > std::size_t(std::numeric_limits<token_id>::max()))
            raise(detail::range_message("sampler: vocab_size", "<= 2^31 - 1", double(vocab_size)));
        build_steps();
        cand_ = candidates(vocab_);
        sorted_.resize(vocab_);
        weights_.resize(vocab_);
        if (params_.typical_p < 1.f) {
            key_.resize(vocab_);
            perm_.resize(vocab_);
        }
        const std::size_t nblocks = (vocab_ + block - 1) / block;
        bmax_.resize(nblocks);
        bsum_.resize(nblocks);
        block_buf_.resize(block);
        processors_ = params_.has_processors();
        if (processors_ || xtc_on()) row_.resize(vocab_);  // XTC: the row minus its head
        if (processors_) {
            if (params_.penalties.enabled()) pen_ws_ = penalty_workspace(vocab_);
            if (params_.dry.enabled()) dry_ws_ = dry_workspace(vocab_);
            sparse_ok_ =
                params_.allowed_tokens.empty() &&
                (params_.greedy() || (n_steps_ > 0 && (steps_[0] == sampling_step::top_k ||
                                                       steps_[0] == sampling_step::min_p)));
            if (sparse_ok_) {
                mark_.assign(vocab_, 0);
                touched_.resize(vocab_);
                patches_.resize(vocab_);
            }
        }
        const logprobs_request& lr = params_.logprobs;
        if (lr.top_n > 0) {
            top_.resize(std::min(lr.top_n, vocab_));
            if (!lr.processed) alt_ = candidates(vocab_);
        }
        requested_.resize(lr.ids.size());
        state_.mirostat_mu = 2.f * params_.mirostat_tau;
    }

    const sampling_params& params() const noexcept { return params_; }
    std::size_t vocab_size() const noexcept { return vocab_; }
    /// The truncation steps this sampler applies, in order (disabled steps removed).
    std::span<const sampling_step> steps() const noexcept { return {steps_.data(), n_steps_}; }

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
        state_.mirostat_mu -= float(double(params_.mirostat_eta) *
                                    (-std::log2(double(q)) - double(params_.mirostat_tau)));
    }

    /// Draws a token for `logits` keyed by (params.seed, ctx.sequence, ctx.step).
    /// \pre logits.size() == vocab_size() (else status bad_input)
    /// status concurrent_use (nothing done) when the sampler is inside another call.
    sample_result sample(std::span<const float> logits, const sample_context& ctx) noexcept {
        const detail::in_use_scope guard(in_use_);
        if (!guard.entered()) return busy_result();
        return run(logits, ctx);
    }
    /// sample() with the key (sequence, step) and no history.
    sample_result sample(std::span<const float> logits, std::uint64_t sequence,
                         std::uint64_t step) noexcept {
        return sample(logits, sample_context{.sequence = sequence, .step = step});
    }
    /// sample() with sequence 0 and the sampler's own step counter (then incremented).
    sample_result sample(std::span<const float> logits) noexcept {
        const detail::in_use_scope guard(in_use_);
        if (!guard.entered()) return busy_result();
        const std::uint64_t step = state_.next_step++;
        return run(logits, sample_context{.sequence = 0, .step = step});
    }

    /// The final candidate set the draw of sample(logits, ctx) uses (same processors, steps, XTC
    /// coin and mirostat mu; mu is not updated). Greedy: the argmax with probability 1. Empty
    /// when no token is valid. Views into the workspace: valid until the next call.
    /// Without truncation this materialises and sorts the whole valid row (inspection, not hot).
    decodekit::distribution distribution(std::span<const float> logits,
                                         const sample_context& ctx = {}) noexcept {
        const detail::in_use_scope guard(in_use_);
        if (!guard.entered() || logits.size() != vocab_) return {};
        std::span<const float> x = process(logits, ctx);
        if (params_.greedy()) {
            float best = 0.f;
            const std::size_t a = greedy_argmax(x, best);
            if (a == npos) return {};
            cand_.clear();
            cand_.push_back(token_id(a), best);
            weights_[0] = 1.f;
            return {{cand_.id_storage(), 1}, {weights_.data(), 1}};
        }
        x = truncate(x, ctx);
        if (full_) materialise(x);
        if (cand_.empty()) return {};
        sort_cand();
        const double s = fill_weights();
        std::size_t n = cand_.size();  // sorted: zero weights (underflow, finite next to +inf) last
        while (n > 0 && !(weights_[n - 1] > 0)) --n;
        cand_.resize(n);
        for (std::size_t i = 0; i < n; ++i) weights_[i] = float(weights_[i] / s);  // in place
        return {{cand_.id_storage(), cand_.size()}, {weights_.data(), cand_.size()}};
    }

    /// distribution() as a set, in ascending id order: same ids and probabilities (up to the
    /// rounding of the normaliser, summed in another order). Never sorts by probability: without
    /// truncation one filter pass over the row plus one exp pass (for speculative verification,
    /// which needs no order). Views into the workspace: valid until the next call.
    decodekit::distribution distribution_unordered(std::span<const float> logits,
                                                   const sample_context& ctx = {}) noexcept {
        if (params_.greedy()) return distribution(logits, ctx);
        const detail::in_use_scope guard(in_use_);
        if (!guard.entered() || logits.size() != vocab_) return {};
        const std::span<const float> x = truncate(process(logits, ctx), ctx);
        if (full_) materialise(x);  // id order
        if (cand_.empty()) return {};
        if (!std::is_sorted(cand_.ids().begin(), cand_.ids().end())) {  // a truncated set
            const std::size_t n = cand_.size();
            const token_id* ids = cand_.id_storage();
            const float* lg = cand_.logit_storage();
            for (std::size_t i = 0; i < n; ++i) sorted_[i] = {lg[i], ids[i]};
            std::sort(sorted_.begin(), sorted_.begin() + std::ptrdiff_t(n),
                      [](const detail::scored& a, const detail::scored& b) { return a.id < b.id; });
            write_back(n);
            sorted_flag_ = false;
        }
        const double s = fill_weights();
        if (!(s > 0)) return {};
        const float* w = weights_.data();
        compact([w](std::size_t i) { return w[i] > 0; });  // underflow, finite next to +inf
        for (std::size_t i = 0; i < cand_.size(); ++i) weights_[i] = float(weights_[i] / s);
        return {{cand_.id_storage(), cand_.size()}, {weights_.data(), cand_.size()}};
    }

private:
    friend struct detail::sampler_batch_access;
    static constexpr std::size_t block = 2048;  // block of the full-row draw

    detail::in_use_flag in_use_;
    std::uint64_t batch_call_ = 0;  // the batched call that last claimed this sampler
    static sample_result busy_result() noexcept {
        sample_result r;
        r.status = sample_status::concurrent_use;
        return r;
    }

    sampling_params params_;
    std::size_t vocab_;
    std::array<sampling_step, 10> steps_{};
    std::size_t n_steps_ = 0;
    sampler_state state_{};
    bool processors_ = false;
    bool xtc_on() const noexcept {
        return params_.xtc_probability > 0.f && params_.xtc_threshold <= 0.5f;
    }

    // workspace
    std::vector<float> row_;          // processed copy of the row (with processors or XTC)
    bool sparse_ok_ = false;          // processors patch a few entries (see process_sparse)
    bool overlay_ = false;            // this call: caller row + patches_
    std::vector<std::uint8_t> mark_;  // 1 touched, 2 patched; all 0 between calls
    std::vector<token_id> touched_;
    std::vector<detail::scored> patches_;
    std::size_t n_patches_ = 0;
    penalty_workspace pen_ws_;
    dry_workspace dry_ws_;
    candidates cand_;                     // the working set once materialised
    std::vector<detail::scored> sorted_;  // sort scratch
    std::vector<float> weights_;     // exp weights of cand_ (relative to its max; sums in double);
                                     // distribution() normalises them in place
    std::vector<double> key_;        // typical's sort key
    std::vector<std::size_t> perm_;  // typical's order
    std::vector<float> bmax_;        // full-row draw: block maxima
    std::vector<double> bsum_;       //                block sums
    std::vector<float> block_buf_;   //                softmax of the chosen block
    candidates alt_;                 // raw top-n
    std::vector<token_logprob> top_, requested_;

    // per call
    bool full_ = true;  // working set = whole row
    bool sorted_flag_ = false;
    float t_ = 1.f;  // current temperature scale
    bool raw_lse_known_ = false;
    double raw_lse_ = 0;

    void build_steps() {
        std::span<const sampling_step> src =
            params_.order == sampling_order::custom
                ? std::span<const sampling_step>(params_.custom_order)
                : preset_steps(params_.order);
        const sampling_params& p = params_;
        for (sampling_step st : src) {
            bool on = false;
            switch (st) {
                case sampling_step::temperature:
                    on = p.temperature != 1.f && p.temperature > 0.f;
                    break;
                case sampling_step::top_k:
                    on = p.top_k > 0 && std::size_t(p.top_k) < vocab_;
                    break;
                case sampling_step::top_p:
                    on = p.top_p < 1.f;
                    break;
                case sampling_step::min_p:
                    on = p.min_p > 0.f;
                    break;
                case sampling_step::typical:
                    on = p.typical_p < 1.f;
                    break;
                case sampling_step::epsilon:
                    on = p.epsilon > 0.f;
                    break;
                case sampling_step::eta:
                    on = p.eta > 0.f;
                    break;
                case sampling_step::top_n_sigma:
                    on = p.top_n_sigma > 0.f;
                    break;
                case sampling_step::xtc:
                    on = xtc_on();
                    break;
                case sampling_step::mirostat:
                    on = p.mirostat;
                    break;
            }
            if (on) steps_[n_steps_++] = st;
        }
    }

    /// Applies the processors (into row_) if any; returns the row the pipeline reads.
    std::span<const float> process(std::span<const float> logits,
                                   const sample_context& ctx) noexcept {
        overlay_ = false;
        if (!processors_) return logits;
        if (sparse_ok_) return process_sparse(logits, ctx);
        std::copy(logits.begin(), logits.end(), row_.begin());
        return apply_processors(std::span<float>(row_), ctx);
    }

    /// The processors on x in place (every one, in the documented order).
    std::span<const float> apply_processors(std::span<float> x,
                                            const sample_context& ctx) noexcept {
        const sampling_params& p = params_;
        if (!p.allowed_tokens.empty()) apply_allowed_tokens(x, p.allowed_tokens);
        if (!p.banned_tokens.empty()) apply_banned_tokens(x, p.banned_tokens);
        if (!p.logit_biases.empty()) apply_logit_bias(x, p.logit_biases);
        if (p.min_new_tokens > 0 && !p.eos_ids.empty()) {
            const std::size_t generated =
                ctx.history.size() > ctx.prompt_length ? ctx.history.size() - ctx.prompt_length : 0;
            apply_min_length(x, generated, p.min_new_tokens, p.eos_ids);
        }
        if (p.penalties.enabled())
            apply_penalties(x, ctx.history, ctx.prompt_length, p.penalties, pen_ws_);
        if (p.dry.enabled()) apply_dry(x, ctx.history, p.dry, dry_ws_);
        if (p.no_repeat_ngram_size > 0)
            apply_no_repeat_ngram(x, ctx.history, p.no_repeat_ngram_size);
        if (!p.banned_sequences.empty()) apply_banned_sequences(x, ctx.history, p.banned_sequences);
        return x;
    }

    /// Sparse processors (no allowed-token set): every processor reads and writes only ids of
    /// the history and of its own lists, so only those entries are copied into row_; the
    /// pipeline then reads the caller's row plus the changed entries ("patches", marked 2 in
    /// mark_) and the first step (greedy argmax, top-k or min-p) merges them. No row copy.
    std::span<const float> process_sparse(std::span<const float> logits,
                                          const sample_context& ctx) noexcept {
        const sampling_params& p = params_;
        std::size_t n = 0;
        auto touch = [&](token_id t) noexcept {
            if (t < 0 || std::size_t(t) >= vocab_ || mark_[std::size_t(t)]) return;
            mark_[std::size_t(t)] = 1;
            touched_[n++] = t;
            row_[std::size_t(t)] = logits[std::size_t(t)];
        };
        for (token_id t : ctx.history) touch(t);
        for (token_id t : p.banned_tokens) touch(t);
        for (const logit_bias& b : p.logit_biases) touch(b.token);
        for (token_id t : p.eos_ids) touch(t);
        for (const auto& seq : p.banned_sequences)
            if (!seq.empty()) touch(seq.back());
        apply_processors(std::span<float>(row_), ctx);
        n_patches_ = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::size_t t = std::size_t(touched_[i]);
            if (std::bit_cast<std::uint32_t>(row_[t]) != std::bit_cast<std::uint32_t>(logits[t])) {
                patches_[n_patches_++] = {row_[t], token_id(t)};
                mark_[t] = 2;
            } else {
                mark_[t] = 0;
            }
        }
        overlay_ = n_patches_ > 0;
        return logits;
    }
    void clear_patch_marks() noexcept {
        for (std::size_t i = 0; i < n_patches_; ++i) mark_[std::size_t(patches_[i].id)] = 0;
        overlay_ = false;
    }
    bool patched(token_id t) const noexcept { return mark_[std::size_t(t)] == 2; }
    /// Drops the patched ids from cand_ and appends the patches with value >= thr (valid only).
    void merge_patches(float thr) noexcept {
        token_id* ids = cand_.id_storage();
        float* lg = cand_.logit_storage();
        std::size_t j = 0;
        for (std::size_t i = 0; i < cand_.size(); ++i)
            if (!patched(ids[i])) {
                ids[j] = ids[i];
                lg[j] = lg[i];
                ++j;
            }
        for (std::size_t i = 0; i < n_patches_; ++i) {
            const float v = patches_[i].logit;
            if (v > -detail::f_inf && v >= thr) {
                ids[j] = patches_[i].id;
                lg[j] = v;
                ++j;
            }
        }
        cand_.resize(j);
        sorted_flag_ = false;
    }
    /// The k best of the patched row (tie policy `ties`) into cand_, sorted. \pre overlay_
    void overlay_top_k(std::span<const float> x, std::size_t k, tie_policy ties) noexcept {
        kernels::top_k(x, std::min(vocab_, k + n_patches_), ties, cand_);
        merge_patches(-detail::f_inf);
        sort_cand();
        if (k < cand_.size()) {
            std::size_t n = k;
            if (ties == tie_policy::keep_ties)
                while (n < cand_.size() && cand_.logits()[n] == cand_.logits()[k - 1]) ++n;
            cand_.resize(n);
        }
    }
    /// Argmax of the processed row (lowest id on ties); npos if nothing is valid.
    std::size_t greedy_argmax(std::span<const float> x, float& best) noexcept {
        if (!overlay_) {
            const std::size_t a = kernels::argmax(x);
            if (a == npos || !(x[a] > -detail::f_inf)) return npos;
            best = x[a];
            return a;
        }
        overlay_top_k(x, 1, tie_policy::exactly_k);
        clear_patch_marks();
        if (cand_.empty()) return npos;
        best = cand_.logits()[0];
        return std::size_t(cand_.ids()[0]);
    }

    // ---- the working set ----

    void materialise(std::span<const float> x) noexcept {
        kernels::filter_at_least(x, -detail::f_inf, cand_);
        full_ = false;
        sorted_flag_ = false;
    }

    /// Sorts cand_ by logit descending, ties by ascending id.
    void sort_cand() noexcept {
        if (sorted_flag_) return;
        const std::size_t n = cand_.size();
        const token_id* ids = cand_.id_storage();
        const float* lg = cand_.logit_storage();
        for (std::size_t i = 0; i < n; ++i) sorted_[i] = {lg[i], ids[i]};
        std::sort(sorted_.begin(), sorted_.begin() + std::ptrdiff_t(n), detail::scored_before);
        write_back(n);
        sorted_flag_ = true;
    }
    void write_back(std::size_t n) noexcept {
        token_id* ids = cand_.id_storage();
        float* lg = cand_.logit_storage();
        for (std::size_t i = 0; i < n; ++i) {
            ids[i] = sorted_[i].id;
            lg[i] = sorted_[i].logit;
        }
        cand_.resize(n);
    }
    float cand_max() const noexcept {
        if (cand_.empty()) return -detail::f_inf;
        if (sorted_flag_) return cand_.logits()[0];
        float m = -detail::f_inf;
        for (float v : cand_.logits()) m = v > m ? v : m;
        return m;
    }
    /// weights_[i] = exp((x_i - max)/t_) over cand_; returns their sum.
    double fill_weights() noexcept {
        const float m = cand_max();
        double s = 0;
        const float* lg = cand_.logit_storage();
        for (std::size_t i = 0; i < cand_.size(); ++i) {
            weights_[i] = float(detail::cand_weight(lg[i], m, t_));
            s += double(weights_[i]);
        }
        return s;
    }
    /// Keeps the entries i with keep(i), preserving order.
    template <class Keep>
    void compact(Keep&& keep) noexcept {
        token_id* ids = cand_.id_storage();
        float* lg = cand_.logit_storage();
        std::size_t j = 0;
        for (std::size_t i = 0; i < cand_.size(); ++i)
            if (keep(i)) {
                ids[j] = ids[i];
                lg[j] = lg[i];
                weights_[j] = weights_[i];
                ++j;
            }
        cand_.resize(j);
    }
    /// Keeps entries with weights_ >= w_thr but at least min(min_keep, n) (the most probable).
    /// \pre cand_ sorted, weights_ filled.
    void keep_weight_at_least(double w_thr) noexcept {
        std::size_t n = 0;
        while (n < cand_.size() && weights_[n] >= w_thr) ++n;
        cand_.resize(std::max(n, std::min(params_.min_keep, cand_.size())));
    }

    // ---- the steps ----

    /// Runs the truncation steps; returns the row the working set now refers to (x, or row_
    /// when XTC dropped the head of the full row: see step_xtc).
    std::span<const float> truncate(std::span<const float> x, const sample_context& ctx) noexcept {
        full_ = true;
        sorted_flag_ = false;
        t_ = 1.f;
        raw_lse_known_ = false;
        const sampling_params& p = params_;
        for (std::size_t si = 0; si < n_steps_; ++si) {
            if (!full_ && cand_.size() <= 1 && steps_[si] != sampling_step::temperature) continue;
            switch (steps_[si]) {
                case sampling_step::temperature:
                    t_ = p.temperature;
                    break;
                case sampling_step::top_k:
                    step_top_k(x, std::size_t(p.top_k), p.top_k_ties);
                    break;
                case sampling_step::top_p:
                    step_top_p(x);
                    break;
                case sampling_step::min_p:
                    step_min_p(x);
                    break;
                case sampling_step::typical:
                    step_typical(x);
                    break;
                case sampling_step::epsilon:
                    step_epsilon(x, p.epsilon);
                    break;
                case sampling_step::eta:
                    step_eta(x);
                    break;
                case sampling_step::top_n_sigma:
                    step_top_n_sigma(x);
                    break;
                case sampling_step::xtc:
                    x = step_xtc(x, ctx);
                    break;
                case sampling_step::mirostat:
                    step_mirostat(x);
                    break;
            }
        }
        return x;
    }

    void step_top_k(std::span<const float> x, std::size_t k, tie_policy ties) noexcept {
        if (full_ && overlay_) {
            overlay_top_k(x, k, ties);
            clear_patch_marks();
            full_ = false;
            return;
        }
        if (full_) {
            kernels::top_k(x, k, ties, cand_);
            full_ = false;
            sorted_flag_ = true;
            return;
        }
        if (k >= cand_.size()) return;
        sort_cand();
        std::size_t n = k;
        if (ties == tie_policy::keep_ties)
            while (n < cand_.size() && cand_.logits()[n] == cand_.logits()[k - 1]) ++n;
        cand_.resize(n);
    }

    /// Full row: kernels::top_p (one max + exp pass, one compaction whose survivors provably
    /// hold the nucleus, survivors ordered lazily; equals reference::top_p). On an already
    /// truncated set: the same rule (sorted by probability, ties by id; keep j while the mass
    /// before it is < p; at least max(1, min_keep)) walked here over the sorted survivors with
    /// the set's own normaliser: they are already sorted and few and weights_ is needed anyway,
    /// whereas the kernel takes a row (it would re-sort and re-index them).
    void step_top_p(std::span<const float> x) noexcept {
        const float p = params_.top_p;
        if (full_) {
            kernels::top_p(x, p, t_, params_.min_keep, cand_);
            full_ = false;
            sorted_flag_ = true;
            return;
        }
        sort_cand();
        const double s = fill_weights();
        if (!(s > 0)) return;
        const std::size_t keep_at_least = std::max<std::size_t>(1, params_.min_keep);
        double before = 0;
        std::size_t n = 0;
        while (n < cand_.size() && (n < keep_at_least || before < double(p))) {
            before += weights_[n] / s;
            ++n;
        }
        cand_.resize(n);
    }

    void step_min_p(std::span<const float> x) noexcept {
        const float t_eff = params_.min_p_mode == min_p_space::logits ? 1.f : t_;
        if (full_ && overlay_) {
            overlay_top_k(x, 1, tie_policy::exactly_k);  // the max of the patched row
            const float m = cand_.empty() ? -detail::f_inf : cand_.logits()[0];
            const float thr = kernels::min_p_threshold(m, params_.min_p, t_eff);
            kernels::filter_at_least(x, thr, cand_);
            merge_patches(thr);
            if (cand_.size() < params_.min_keep)
                overlay_top_k(x, params_.min_keep, tie_policy::exactly_k);
            clear_patch_marks();
            full_ = false;
            return;
        }
        if (full_) {
            const std::size_t n =
                kernels::filter_min_p(x, params_.min_p, t_eff, cand_);  // one pass
            full_ = false;
            sorted_flag_ = false;
            if (n < params_.min_keep) {
                kernels::top_k(x, params_.min_keep, tie_policy::exactly_k, cand_);
                sorted_flag_ = true;
            }
            return;
        }
        const float thr = kernels::min_p_threshold(cand_max(), params_.min_p, t_eff);
        std::size_t count = 0;
        for (float v : cand_.logits()) count += v >= thr;
        if (count >= params_.min_keep) {
            const float* lg = cand_.logit_storage();
            compact([&](std::size_t i) { return lg[i] >= thr; });
        } else {
            sort_cand();
            cand_.resize(std::min(params_.min_keep, cand_.size()));
        }
    }

    /// Entropy (nats) of cand_ at t_; fills weights_; returns {sum, H}.
    std::pair<double, double> entropy_of_cand() noexcept {
        const double s = fill_weights();
        double h = 0;
        if (s > 0)
            for (std::size_t i = 0; i < cand_.size(); ++i)
                if (weights_[i] > 0) {
                    const double q = weights_[i] / s;
                    h -= q * std::log(q);
                }
        return {s, h};
    }

    /// Typical keeps a prefix in |-log p - H| order (ties: more probable first, then lower id).
    /// As a first step (full row) without sorting the row: with d_i = (x_i - m)/t, -log p_i =
    /// log S - d_i, so the key is |d_i - c| with c = log S - H (the p-weighted mean of d): the
    /// kept set is a logit interval around m + t c. S and H come from the vectorised kernels
    /// (exp_sum, entropy: equal to the materialised row's up to rounding, as for epsilon / eta);
    /// one compaction keeps x >= m + t (c - kappa), a superset of every entry with key <= kappa;
    /// the survivors are ordered by key lazily and walked; if the walk would pass kappa (or runs
    /// out of survivors) kappa widens and the compaction is redone (at the end: every valid
    /// entry, the materialised row). Only the survivors are ordered; only the kept ones sorted.
    void step_typical(std::span<const float> x) noexcept {
        if (full_ && typical_full_row(x)) return;
        if (full_) materialise(x);
        sort_cand();
        const auto [s, h] = entropy_of_cand();
        if (!(s > 0)) return;
        const std::size_t n = cand_.size();
        // order by |-log p - H| ascending (ties: more probable first, then lower id: the sorted
        // order)
        const token_id* ids = cand_.id_storage();
        const float* lg = cand_.logit_storage();
        for (std::size_t i = 0; i < n; ++i) {
            const double q = weights_[i] / s;
            key_[i] = q > 0 ? std::fabs(-std::log(q) - h) : std::numeric_limits<double>::infinity();
        }
        const std::vector<float>& w = weights_;
        perm_sort(n);  // positions by key; stable: equal keys keep the probability order
        double before = 0;
        std::size_t kept = 0;
        const std::size_t keep_at_least = std::max<std::size_t>(1, params_.min_keep);
        const double tau = params_.typical_p;
        std::size_t* perm = perm_.data();
        while (kept < n && (kept < keep_at_least || before < tau)) {
            before += w[perm[kept]] / s;
            ++kept;
        }
        // keep perm[0..kept) in probability order
        std::sort(perm, perm + kept);
        for (std::size_t j = 0; j < kept; ++j) {
            const std::size_t i = perm[j];
            sorted_[j] = {lg[i], ids[i]};
        }
        write_back(kept);
        sorted_flag_ = true;
    }
    /// step_typical on the full row (see its comment); false (nothing changed) for rows with
    /// +inf or no valid entry, which take the materialised path.
    bool typical_full_row(std::span<const float> x) noexcept {
        const auto st = kernels::exp_sum(x, t_);
        const float m = st.max;
        if (!(m > -detail::f_inf) || m == detail::f_inf || !(st.sum > 0)) return false;
        const double s = st.sum;
        const double h = kernels::entropy(x, t_);
        if (!std::isfinite(h)) return false;
        const double c = std::log(s) - h;  // <= 0 up to rounding
        const double tau = params_.typical_p;
        const std::size_t keep_at_least = std::max<std::size_t>(1, params_.min_keep);
        const token_id* ids = cand_.id_storage();
        const float* lg = cand_.logit_storage();
        double* key = key_.data();
        std::size_t* perm = perm_.data();
        // first guess: the interval reaches up to the row max
        for (double kappa = std::max(-c, 0.0) + 0.5;; kappa = 2 * kappa + 1) {
            // key <= kappa implies d >= c - kappa - 6e-8 (float rounding of the weight); below
            // d = -80 weights may be subnormal (rounding unbounded in log): take every entry
            const double lo_d = c - kappa - 1e-6;
            const bool all = lo_d < -80.0;
            float lo = -detail::f_inf;
            if (!all) {
                lo = std::nextafter(float(double(m) + double(t_) * lo_d), -detail::f_inf);
                lo = std::min(lo, m);
            }
            kernels::filter_at_least(x, lo, cand_);
            const std::size_t n = cand_.size();
            // key |d - c| (= |-log(w / S) - H| up to the float rounding of w, ~6e-8); where the
            // weight may be subnormal or 0 (d < -80, only when taking every entry) the exact form
            for (std::size_t i = 0; i < n; ++i) {
                const double d = (double(lg[i]) - double(m)) / double(t_);
                if (d >= -80.0) {
                    key[i] = std::fabs(d - c);
                } else {
                    const double q = double(float(std::exp(d))) / s;
                    key[i] = q > 0 ? std::fabs(-std::log(q) - h)
                                   : std::numeric_limits<double>::infinity();
                }
                perm[i] = i;
            }
            auto before_in_order = [key, lg, ids](std::size_t a, std::size_t b) {
                if (key[a] != key[b]) return key[a] < key[b];
                if (lg[a] != lg[b]) return lg[a] > lg[b];
                return ids[a] < ids[b];
            };
            std::size_t ordered = 0;  // perm[0, ordered) in final order
            auto ensure_ordered = [&](std::size_t upto) {
                if (upto <= ordered) return;
                upto = std::min(n, std::max({upto, ordered * 4, std::size_t(64)}));
                if (upto < n)
                    std::nth_element(perm + ordered, perm + (upto - 1), perm + n, before_in_order);
                std::sort(perm + ordered, perm + upto, before_in_order);
                ordered = upto;
            };
            double before = 0;
            std::size_t kept = 0;
            bool complete = true;  // every entry walked has key <= kappa
            while (kept < n && (kept < keep_at_least || before < tau)) {
                ensure_ordered(kept + 1);
                if (!all && !(key[perm[kept]] <= kappa)) {
                    complete = false;
                    break;
                }
                before += double(float(detail::cand_weight(lg[perm[kept]], m, t_))) / s;
                ++kept;
            }
            if (!all && (!complete || kept == n)) continue;  // widen
            full_ = false;
            for (std::size_t j = 0; j < kept; ++j) sorted_[j] = {lg[perm[j]], ids[perm[j]]};
            std::sort(sorted_.begin(), sorted_.begin() + std::ptrdiff_t(kept),
                      detail::scored_before);
            write_back(kept);
            sorted_flag_ = true;
            return true;
        }
    }
    void perm_sort(std::size_t n) noexcept {
        std::size_t* perm = perm_.data();
        for (std::size_t i = 0; i < n; ++i) perm[i] = i;
        const double* k = key_.data();
        // equal keys keep the probability order (index order); std::sort: no allocation
        std::sort(perm, perm + n, [k](std::size_t a, std::size_t b) {
            return k[a] < k[b] || (k[a] == k[b] && a < b);
        });
    }

    /// Full-row {max, S, H} at t_ from the vectorised kernels (exp_sum: 2 passes; entropy, only
    /// when `want_h`: 2 more). S equals the sum fill_weights() gives the materialised row up to
    /// rounding (float lanes, another summation order).
    struct row_stats {
        float max;
        double sum;
        double h;
    };
    row_stats full_row_stats(std::span<const float> x, bool want_h) const noexcept {
        const auto st = kernels::exp_sum(x, t_);
        return {st.max, st.sum, want_h && st.sum > 0 ? kernels::entropy(x, t_) : 0.0};
    }
    /// Full row, threshold steps (epsilon, eta, mirostat): keeps a superset of the entries with
    /// float weight >= w_thr (a logit threshold a little below the exact one; the row max always
    /// survives), sorted, weights filled; the caller then cuts exactly as on the materialised
    /// row. Returns false (cand_ untouched, still full_) when the shortcut does not apply:
    /// +inf max, non-finite threshold, or fewer survivors than `at_least`.
    bool threshold_candidates(std::span<const float> x, float m, double w_thr,
                              std::size_t at_least) noexcept {
        if (!(m > -detail::f_inf) || m == detail::f_inf || !(w_thr > 0)) return false;
        // float(exp(d)) >= w_thr implies d >= log(w_thr) - 2^-23 (relative rounding); 1e-4 slack
        const double thr_d = double(m) + double(t_) * (std::log(w_thr) - 1e-4);
        if (!std::isfinite(thr_d)) return false;
        float thr = std::nextafter(float(thr_d), -detail::f_inf);
        thr = std::min(thr, m);
        kernels::filter_at_least(x, thr, cand_);
        if (cand_.size() < at_least) return false;
        full_ = false;
        sorted_flag_ = false;
        sort_cand();
        fill_weights();  // same max as the full row: it survives
        return true;
    }
    std::size_t valid_count(std::span<const float> x) const noexcept {
        std::size_t n = 0;
        for (float v : x) n += v > -detail::f_inf;  // not NaN, not -inf (materialise drops them)
        return n;
    }
    std::size_t min_keep_of(std::span<const float> x) const noexcept {
        return params_.min_keep <= 1 ? params_.min_keep
                                     : std::min(params_.min_keep, valid_count(x));
    }

    void step_epsilon(std::span<const float> x, float eps) noexcept {
        if (full_) {
            const row_stats st = full_row_stats(x, false);
            if (st.sum > 0 &&
                threshold_candidates(x, st.max, double(eps) * st.sum, min_keep_of(x))) {
                keep_weight_at_least(double(eps) * st.sum);
                return;
            }
            materialise(x);
        }
        sort_cand();
        const double s = fill_weights();
        if (!(s > 0)) return;
        keep_weight_at_least(double(eps) * s);
    }

    void step_eta(std::span<const float> x) noexcept {
        const double e = params_.eta;
        if (full_) {
            const row_stats st = full_row_stats(x, true);
            const double w_thr = std::min(e, std::sqrt(e) * std::exp(-st.h)) * st.sum;
            if (st.sum > 0 && threshold_candidates(x, st.max, w_thr, min_keep_of(x))) {
                keep_weight_at_least(w_thr);
                return;
            }
            materialise(x);
        }
        sort_cand();
        const auto [s, h] = entropy_of_cand();
        if (!(s > 0)) return;
        keep_weight_at_least(std::min(e, std::sqrt(e) * std::exp(-h)) * s);
    }

    void step_top_n_sigma(std::span<const float> x) noexcept {
        if (full_) materialise(x);
        double sum = 0, sq = 0;
        std::size_t n = 0;
        for (float v : cand_.logits())
            if (std::isfinite(v)) {
                sum += v;
                sq += double(v) * v;
                ++n;
            }
        if (n == 0) return;
        const double mean = sum / double(n);
        const double var = std::max(0.0, sq / double(n) - mean * mean);
        const float m = cand_max();
        const float thr = float(double(m) - double(params_.top_n_sigma) * std::sqrt(var));
        std::size_t count = 0;
        for (float v : cand_.logits()) count += v >= thr;
        if (count >= params_.min_keep) {
            const float* lg = cand_.logit_storage();
            compact([&](std::size_t i) { return lg[i] >= thr; });
        } else {
            sort_cand();
            cand_.resize(std::min(params_.min_keep, cand_.size()));
        }
    }

    /// XTC drops the head (the tokens with p >= threshold but the least probable of them) and
    /// keeps the whole tail. As a first step (full row) that head is found without sorting the
    /// row: S from kernels::exp_sum, one compaction keeps a superset of the entries with
    /// p >= threshold (at most 1 / threshold of them, plus rounding), only those are sorted; the
    /// working set stays the full row, as a copy in row_ with the dropped entries set to -inf
    /// (returned: later steps and the draw read it). Returns the row the working set refers to.
    std::span<const float> step_xtc(std::span<const float> x, const sample_context& ctx) noexcept {
        rng_stream coin = make_stream({params_.seed, ctx.sequence, ctx.step}, rng_purpose::filter);
        if (!(coin.uniform_float() < params_.xtc_probability)) return x;
        if (full_) {
            if (const auto y = xtc_full_row(x)) return *y;
            materialise(x);
        }
        sort_cand();
        const double s = fill_weights();
        if (!(s > 0)) return x;
        const double w_thr = double(params_.xtc_threshold) * s;
        std::size_t above = 0;
        while (above < cand_.size() && weights_[above] >= w_thr) ++above;
        if (above < 2) return x;
        const std::size_t drop = above - 1;  // keep the least probable of them
        if (cand_.size() - drop < params_.min_keep) return x;
        const std::size_t n = cand_.size() - drop;
        for (std::size_t i = 0; i < n; ++i)
            sorted_[i] = {cand_.logits()[drop + i], cand_.ids()[drop + i]};
        write_back(n);
        return x;
    }
    /// step_xtc on the full row; nullopt (nothing changed) for rows with +inf or no valid entry
    /// and non-finite thresholds, which take the materialised path.
    std::optional<std::span<const float>> xtc_full_row(std::span<const float> x) noexcept {
        const auto st = kernels::exp_sum(x, t_);
        const float m = st.max;
        if (!(m > -detail::f_inf) || m == detail::f_inf || !(st.sum > 0)) return std::nullopt;
        const double w_thr = double(params_.xtc_threshold) * st.sum;
        if (!(w_thr > 0)) return std::nullopt;
        // float(exp(d)) >= w_thr implies d >= log(w_thr) - 2^-23: 1e-4 slack
        const double thr_d = double(m) + double(t_) * (std::log(w_thr) - 1e-4);
        if (!std::isfinite(thr_d)) return std::nullopt;
        const float thr = std::min(std::nextafter(float(thr_d), -detail::f_inf), m);
        kernels::filter_at_least(x, thr, cand_);
        sorted_flag_ = false;
        sort_cand();  // the head: few entries
        std::size_t above = 0;
        while (above < cand_.size() &&
               double(float(detail::cand_weight(cand_.logits()[above], m, t_))) >= w_thr)
            ++above;
        if (above < 2) return x;  // nothing dropped: still the full row
        const std::size_t drop = above - 1;
        if (params_.min_keep > 1 && valid_count(x) - drop < params_.min_keep) return x;
        float* y = row_.data();
        if (x.data() != y) std::copy(x.begin(), x.end(), y);
        for (std::size_t i = 0; i < drop; ++i) y[std::size_t(cand_.ids()[i])] = -detail::f_inf;
        return std::span<const float>(y, x.size());
    }

    void step_mirostat(std::span<const float> x) noexcept {
        // keep -log2 p <= mu, i.e. p >= 2^-mu; at least one
        const double f = std::exp2(-double(state_.mirostat_mu));
        if (full_) {
            const row_stats st = full_row_stats(x, false);
            if (st.sum > 0 && threshold_candidates(x, st.max, f * st.sum, 1)) {
                keep_weight_from_top(f * st.sum);
                return;
            }
            materialise(x);
        }
        sort_cand();
        const double s = fill_weights();
        if (!(s > 0)) return;
        keep_weight_from_top(f * s);
    }
    /// Keeps the leading entries with weights_ >= w_thr, at least one.  \pre sorted, weights
    void keep_weight_from_top(double w_thr) noexcept {
        std::size_t n = 0;
        while (n < cand_.size() && weights_[n] >= w_thr) ++n;
        cand_.resize(std::max<std::size_t>(n, 1));
    }

    // ---- the draw ----

    sample_result run(std::span<const float> logits, const sample_context& ctx) noexcept {
        sample_result r;
        raw_lse_known_ = false;
        if (logits.size() != vocab_) {
            r.status = sample_status::bad_input;
            return r;
        }
        std::span<const float> x = process(logits, ctx);
        if (params_.greedy()) {
            float best = 0.f;
            const std::size_t a = greedy_argmax(x, best);
            if (a == npos) return r;
            r.token = token_id(a);
            r.logprob = params_.logprobs.chosen ? 0.f : std::numeric_limits<float>::quiet_NaN();
            r.status = sample_status::ok;
            if (params_.logprobs.any()) fill_extras(r, logits, x, /*greedy*/ true);
            return r;
        }
        x = truncate(x, ctx);
        rng_stream rng = make_stream({params_.seed, ctx.sequence, ctx.step}, rng_purpose::sample);
        if (full_ && !params_.logprobs.chosen && !params_.logprobs.any()) {
            // no logprob wanted: no normaliser needed, no exponential per entry
            const std::size_t i = kernels::draw_temperature(x, t_, rng);
            if (i == npos) return r;
            r.token = token_id(i);
            r.status = sample_status::ok;
            return r;
        }
        const double u = rng.uniform();
        if (full_) {
            if (!draw_full_row(x, u, r)) return r;
        } else {
            if (cand_.empty()) return r;
            sort_cand();
            const double s = fill_weights();
            if (!(s > 0)) return r;
            const std::size_t pick =
                kernels::draw_inverse_cdf(std::span<const float>(weights_.data(), cand_.size()), u);
            if (pick == npos) return r;
            r.token = cand_.ids()[pick];
            r.logprob = float(std::log(double(weights_[pick])) - std::log(s));
            r.status = sample_status::ok;
            if (params_.mirostat) {
                const double surprise = -std::log2(double(weights_[pick]) / s);
                state_.mirostat_mu -=
                    float(double(params_.mirostat_eta) * (surprise - double(params_.mirostat_tau)));
            }
        }
        if (params_.logprobs.any()) fill_extras(r, logits, x, false);
        if (!params_.logprobs.chosen) r.logprob = std::numeric_limits<float>::quiet_NaN();
        return r;
    }

    /// Draw over the whole row at t_: per-block (max, exp-sum), pick a block by inverse CDF over
    /// the block masses, then the token inside it. One max+exp pass in all (the exp floor).
    bool draw_full_row(std::span<const float> x, double u, sample_result& r) noexcept {
        const std::size_t nb = bmax_.size();
        float m = -detail::f_inf;
        for (std::size_t b = 0; b < nb; ++b) {
            const std::size_t lo = b * block, len = std::min(block, vocab_ - lo);
            const auto st = kernels::exp_sum(x.subspan(lo, len), t_);
            bmax_[b] = st.max;
            bsum_[b] = st.sum;
            m = st.max > m ? st.max : m;
        }
        if (!(m > -detail::f_inf)) return false;
        double s = 0;
        for (std::size_t b = 0; b < nb; ++b) {
            double w;
            if (m == detail::f_inf)
                w = bmax_[b] == detail::f_inf ? bsum_[b] : 0.0;
            else
                w = bsum_[b] > 0 ? bsum_[b] * std::exp((double(bmax_[b]) - double(m)) / double(t_))
                                 : 0.0;
            bsum_[b] = w;  // now the block's mass relative to the global max
            s += w;
        }
        if (!(s > 0)) return false;
        const double target = u * s;
        double run = 0;
        std::size_t pick = npos;
        double before = 0;
        for (std::size_t b = 0; b < nb; ++b) {
            if (!(bsum_[b] > 0)) continue;
            before = run;
            run += bsum_[b];
            pick = b;
            if (run > target) break;
        }
        const std::size_t lo = pick * block, len = std::min(block, vocab_ - lo);
        double u2 = (target - before) / bsum_[pick];
        u2 = std::clamp(u2, 0.0, std::nextafter(1.0, 0.0));
        kernels::softmax(x.subspan(lo, len), std::span<float>(block_buf_.data(), len), t_);
        std::size_t i =
            kernels::draw_inverse_cdf(std::span<const float>(block_buf_.data(), len), u2);
        if (i == npos) return false;
        const std::size_t tok = lo + i;
        r.token = token_id(tok);
        const double w = detail::cand_weight(x[tok], m, t_);
        r.logprob = float(std::log(w) - std::log(s));
        r.status = sample_status::ok;
        if (!processors_ && t_ == 1.f && m != detail::f_inf) {
            raw_lse_known_ = true;
            raw_lse_ = double(m) + std::log(s);
        }
        return true;
    }

    /// logprob extras: raw logprob, rank, top-n, requested ids.
    void fill_extras(sample_result& r, std::span<const float> raw, std::span<const float> x,
                     bool greedy) noexcept {
        const logprobs_request& lr = params_.logprobs;
        const bool need_raw =
            lr.raw || (!lr.processed && (lr.rank || lr.top_n > 0 || !lr.ids.empty()));
        if (need_raw && !raw_lse_known_) {
            raw_lse_ = kernels::logsumexp(raw);
            raw_lse_known_ = true;
        }
        auto raw_lp = [&](std::size_t t) -> float {
            const float v = raw[t];
            if (!(v > -detail::f_inf)) return -detail::f_inf;
            if (std::isinf(raw_lse_)) return v == detail::f_inf ? 0.f : -detail::f_inf;  // +inf row
            return float(double(v) - raw_lse_);
        };
        if (lr.raw) r.raw_logprob = raw_lp(std::size_t(r.token));
        // processed: the final set is cand_ (sorted, weights_ filled) unless greedy / full row
        const bool processed_set = !greedy && !full_;
        auto proc_lp = [&](token_id t) -> float {
            if (greedy) return t == r.token ? 0.f : -detail::f_inf;
            if (full_) {  // whole row at t_
                const float v = x[std::size_t(t)];
                const float vt = x[std::size_t(r.token)];
                if (!(v > -detail::f_inf)) return -detail::f_inf;
                return float(double(r.logprob) + (double(v) - double(vt)) / double(t_));
            }
            double s = 0;
            for (std::size_t i = 0; i < cand_.size(); ++i) s += weights_[i];
            for (std::size_t i = 0; i < cand_.size(); ++i)
                if (cand_.ids()[i] == t) return float(std::log(double(weights_[i]) / s));
            return -detail::f_inf;
        };
        if (lr.rank) {
            std::size_t above = 0;
            if (!lr.processed) {
                const float v = raw[std::size_t(r.token)];
                for (float y : raw) above += y > v;
            } else if (processed_set) {
                for (std::size_t i = 0; i < cand_.size(); ++i)
                    if (cand_.ids()[i] == r.token) {
                        above = i;
                        break;
                    }
            } else if (!greedy) {
                const float v = x[std::size_t(r.token)];
                for (float y : x) above += y > v;
            }
            r.rank = above + 1;
        }
        if (lr.top_n > 0) {
            std::size_t n = 0;
            if (!lr.processed) {
                kernels::top_k(raw, top_.size(), tie_policy::exactly_k, alt_);
                for (std::size_t i = 0; i < alt_.size(); ++i)
                    top_[n++] = {alt_.ids()[i], raw_lp(std::size_t(alt_.ids()[i]))};
            } else if (greedy) {
                top_[n++] = {r.token, 0.f};
            } else if (processed_set) {
                for (std::size_t i = 0; i < cand_.size() && n < top_.size(); ++i)
                    top_[n++] = {cand_.ids()[i], proc_lp(cand_.ids()[i])};
            } else {
                kernels::top_k(x, top_.size(), tie_policy::exactly_k, cand_);
                for (std::size_t i = 0; i < cand_.size(); ++i)
                    top_[n++] = {cand_.ids()[i], proc_lp(cand_.ids()[i])};
            }
            r.top = {top_.data(), n};
        }
        if (!lr.ids.empty()) {
            for (std::size_t j = 0; j < lr.ids.size(); ++j) {
                const token_id t = lr.ids[j];
                float lp = -detail::f_inf;
                if (t >= 0 && std::size_t(t) < vocab_)
                    lp = lr.processed ? proc_lp(t) : raw_lp(std::size_t(t));
                requested_[j] = {t, lp};
            }
            r.requested = {requested_.data(), requested_.size()};
        }
    }
};

inline bool detail::sampler_batch_access::claim(sampler& s, std::uint64_t call) noexcept {
    if (s.batch_call_ == call) return false;
    s.batch_call_ = call;
    return true;
}

DECODEKIT_END_NAMESPACE
