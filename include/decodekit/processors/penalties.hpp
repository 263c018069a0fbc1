#pragma once
/// \file processors/penalties.hpp
/// Repetition (CTRL), frequency and presence (OpenAI) penalties over a window of the history.
///
/// Semantics (docs/semantics.md#penalties):
///   repetition: for every token seen in the repetition window, `x > 0 ? x / theta : x * theta`
///               (applied once per distinct token, whatever its count);
///   frequency / presence: `x -= count * a_f + (count > 0) * a_p`, count = occurrences of the
///               token in the frequency window.
/// Repetition is applied first, then frequency/presence (the order of llama.cpp and vLLM; the
/// order matters only when both penalties hit the same token).
/// Windows (penalty_scope), which is where the engines differ:
///   whole_history -- the whole history, prompt included (Hugging Face);
///   last_n        -- the last `last_n` tokens of the history, prompt included (llama.cpp,
///                    penalty_last_n = 64); last_n = 0 is an empty window (no effect);
///   output_only   -- the generated part, history[prompt_length:] (vLLM's frequency/presence).
/// vLLM = {repetition_scope = whole_history, frequency_scope = output_only}.
/// Special values: NaN logits stay NaN, -inf stays -inf, +inf stays +inf, whatever the penalties
/// (also when count * frequency overflows float); a finite logit whose penalty overflows float
/// becomes +-inf. Token ids outside [0, V) in the history are ignored, where V is
/// min(logits.size(), workspace vocabulary size) for apply_penalties and logits.size() for
/// penalties_processor.
///
/// Two forms with the same results:
///   apply_penalties   -- stateless: the caller passes the history each call; O(window) per call
///                        (the whole history for whole_history and output_only), and an O(V)
///                        workspace.
///   penalties_processor -- per sequence (the processor concept, processors/processor.hpp): keeps
///                        the counts of each scope (token -> count over the distinct tokens in
///                        the window, never O(V)), updated from the history hooks by the tokens
///                        added and removed since the previous call. Per call: O(added + removed)
///                        in the hooks (last_n: O(min(removed, last_n)) on a cut-back), and
///                        O(distinct tokens in the windows) in apply() and touched(). When the
///                        penalties are a sparse pipeline's only processor and share one
///                        window, patch() replaces touched() + apply(): one pass over the count
///                        arrays writing the patches (about 2 ns per distinct token at
///                        V = 128256). When they also only lower logits (lowers_only()), a
///                        sampler's first step asks penalise() for the values of the entries it
///                        selects instead (O(k) hash lookups per call, whatever the number of
///                        distinct tokens; sampling/working_set.hpp, deferred patches; 0.1 us
///                        more per call at H = 100 000 than at 300 in bench/bench_request.cpp
///                        BM_history, against 3.4 us with patch()).

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/processors/token_counts.hpp>
#include <decodekit/types.hpp>

#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Which part of the history a penalty looks at.
enum class penalty_scope : std::uint8_t {
    whole_history,  ///< prompt + output (Hugging Face; vLLM's repetition penalty)
    last_n,         ///< the last `last_n` tokens, prompt included (llama.cpp)
    output_only,    ///< history[prompt_length:] (vLLM's frequency and presence penalties)
};

/// Penalty configuration; the defaults disable every penalty.
struct penalty_params {
    float repetition = 1.f;  ///< CTRL theta, > 0; 1 disables
    float frequency = 0.f;   ///< subtracted per occurrence; 0 disables
    float presence = 0.f;    ///< subtracted once if present; 0 disables
    penalty_scope repetition_scope = penalty_scope::whole_history;
    penalty_scope frequency_scope = penalty_scope::whole_history;  ///< also for presence
    std::size_t last_n = 64;  ///< window length of penalty_scope::last_n

    /// True when some penalty changes logits.
    bool enabled() const noexcept {
        return repetition != 1.f || frequency != 0.f || presence != 0.f;
    }

    /// The first invalid field as a message, or nullopt.
    std::optional<std::string> check() const {
        if (!(repetition > 0.f) || !std::isfinite(repetition))
            return detail::range_message("penalty_params.repetition", "finite and > 0", repetition);
        if (!std::isfinite(frequency))
            return detail::range_message("penalty_params.frequency", "finite", frequency);
        if (!std::isfinite(presence))
            return detail::range_message("penalty_params.presence", "finite", presence);
        if (static_cast<unsigned>(repetition_scope) > 2u)
            return detail::range_message("penalty_params.repetition_scope",
                                         "a penalty_scope enumerator (0..2)",
                                         static_cast<double>(repetition_scope));
        if (static_cast<unsigned>(frequency_scope) > 2u)
            return detail::range_message("penalty_params.frequency_scope",
                                         "a penalty_scope enumerator (0..2)",
                                         static_cast<double>(frequency_scope));
        return std::nullopt;
    }
    /// Throws config_error (or calls the error handler) if check() finds a problem.
    void validate() const { raise_if(check()); }
};

/// Caller-owned scratch for apply_penalties: one counter per vocabulary entry, all zero between
/// calls (each call resets what it touched, O(window)). One per thread: concurrent calls must
/// not share a workspace (params and history may be shared read-only).
struct penalty_workspace {
    penalty_workspace() = default;
    explicit penalty_workspace(std::size_t vocab_size) : counts(vocab_size, 0u) {}
    /// Returns the vocabulary size the workspace was sized for.
    std::size_t vocab_size() const noexcept { return counts.size(); }

    std::vector<std::uint32_t> counts;  ///< zero outside a call
};

namespace detail {
/// The part of the history a scope selects.
inline std::span<const token_id> penalty_window(std::span<const token_id> history,
                                                std::size_t prompt_length, penalty_scope scope,
                                                std::size_t last_n) noexcept {
    switch (scope) {
        case penalty_scope::last_n:
            return last_n >= history.size() ? history : history.last(last_n);
        case penalty_scope::output_only:
            return prompt_length >= history.size() ? history.last(0)
                                                   : history.subspan(prompt_length);
        case penalty_scope::whole_history:
        default:
            return history;
    }
}

/// The frequency/presence penalty of a token seen `count` times (count > 0): infinite and NaN
/// logits are left as they are (an overflowing count * af would turn -inf into NaN).
inline void frequency_penalize(float& x, std::uint32_t count, float af, float ap) noexcept {
    if (std::isfinite(x)) x -= static_cast<float>(count) * af + ap;
}
}  // namespace detail

/// Applies the repetition, then the frequency/presence penalties to `logits` in place.
/// \pre params.check() is nullopt; ws.vocab_size() >= logits.size() (ids beyond it are ignored).
/// \post ws.counts is all zero again. O(window), no allocation.
inline void apply_penalties(std::span<float> logits, std::span<const token_id> history,
                            std::size_t prompt_length, const penalty_params& params,
                            penalty_workspace& ws) noexcept {
    DECODEKIT_ASSERT(ws.vocab_size() >= logits.size(),
                     "apply_penalties: workspace smaller than the vocabulary");
    const std::size_t v = logits.size() < ws.vocab_size() ? logits.size() : ws.vocab_size();
    std::uint32_t* const counts = ws.counts.data();
    auto valid = [v](token_id t) noexcept { return t >= 0 && static_cast<std::size_t>(t) < v; };

    const float theta = params.repetition;
    if (theta != 1.f && theta > 0.f) {
        const auto w =
            detail::penalty_window(history, prompt_length, params.repetition_scope, params.last_n);
        for (token_id t : w) {
            if (!valid(t) || counts[t] != 0) continue;
            counts[t] = 1;
            float& x = logits[static_cast<std::size_t>(t)];
            x = x > 0.f ? x / theta : x * theta;
        }
        for (token_id t : w)
            if (valid(t)) counts[t] = 0;
    }

    const float af = params.frequency, ap = params.presence;
    if (af != 0.f || ap != 0.f) {
        const auto w =
            detail::penalty_window(history, prompt_length, params.frequency_scope, params.last_n);
        for (token_id t : w)
            if (valid(t)) ++counts[t];
        for (token_id t : w) {
            if (!valid(t) || counts[t] == 0) continue;
            detail::frequency_penalize(logits[static_cast<std::size_t>(t)], counts[t], af, ap);
            counts[t] = 0;
        }
    }
}

namespace detail {

/// The counts of one penalty window, following the history through its hooks.
class penalty_window_counts {
public:
    penalty_window_counts() = default;
    penalty_window_counts(penalty_scope scope, std::size_t last_n) noexcept
        : scope_(scope), last_n_(last_n) {}

    penalty_scope scope() const noexcept { return scope_; }
    const token_counts& counts() const noexcept { return counts_; }
    /// Tokens added or removed by the hooks since construction (a cost counter).
    std::uint64_t operations() const noexcept { return ops_ + counts_.probes(); }

    /// Counts the window of h (prompt length `prompt`).
    void rebuild(std::span<const token_id> h, std::size_t prompt) {
        counts_.clear();
        const auto w = penalty_window(h, prompt, scope_, last_n_);
        for (token_id t : w) counts_.add(t);
        ops_ += w.size();
    }
    /// The counts were those of h[0, from); h[from, size) were added.
    void append(std::span<const token_id> h, std::size_t from, std::size_t prompt) {
        const std::size_t n = h.size();
        switch (scope_) {
            case penalty_scope::whole_history:
                for (std::size_t p = from; p < n; ++p) counts_.add(h[p]);
                break;
            case penalty_scope::output_only:
                for (std::size_t p = from < prompt ? prompt : from; p < n; ++p) counts_.add(h[p]);
                break;
            case penalty_scope::last_n:
                if (last_n_ == 0) break;
                for (std::size_t p = from; p < n; ++p) {
                    counts_.add(h[p]);
                    if (p >= last_n_) counts_.remove(h[p - last_n_]);  // leaves the window
                }
                break;
        }
        ops_ += n - from;
    }
    /// The counts were those of a history of keep + removed.size() tokens whose last ones were
    /// `removed`; they become those of its first `keep` tokens, which h[0, keep) holds.
    /// Returns false if the counts were not those of that history (the caller rebuilds). May
    /// allocate (last_n: tokens re-enter the window).
    bool cut_back(std::span<const token_id> h, std::size_t keep, std::span<const token_id> removed,
                  std::size_t prompt) {
        const std::size_t old_n = keep + removed.size();
        std::size_t from = keep;  // removed positions [from, old_n) leave the window
        if (scope_ == penalty_scope::output_only && from < prompt) from = prompt;
        if (scope_ == penalty_scope::last_n) {
            if (last_n_ == 0) return true;
            const std::size_t old_start = old_n > last_n_ ? old_n - last_n_ : 0;
            if (from < old_start) from = old_start;
        }
        bool ok = true;
        for (std::size_t p = from; p < old_n; ++p) ok &= counts_.remove(removed[p - keep]);
        ops_ += from < old_n ? old_n - from : 0;
        if (scope_ == penalty_scope::last_n) {  // positions [keep - L, old_n - L) re-enter
            const std::size_t new_start = keep > last_n_ ? keep - last_n_ : 0;
            const std::size_t old_start = old_n > last_n_ ? old_n - last_n_ : 0;
            const std::size_t end = old_start < keep ? old_start : keep;
            for (std::size_t p = new_start; p < end; ++p) counts_.add(h[p]);
            ops_ += end > new_start ? end - new_start : 0;
        }
        return ok;
    }

private:
    penalty_scope scope_ = penalty_scope::whole_history;
    std::size_t last_n_ = 0;
    token_counts counts_;
    std::uint64_t ops_ = 0;
};

}  // namespace detail

/// The penalties of apply_penalties as a per-sequence processor with incremental counts (see the
/// file comment). Sparse: touched() declares the counted ids. Follows the history: the hooks
/// (append / cut_back / reset) update the counts; a change of prompt_length rebuilds the
/// output_only counts. Copying it copies its counts: O(distinct tokens in its windows).
///
/// Safety net: the processor records the history length (and prompt length) its counts belong
/// to. A hook whose sizes do not fit that record (a caller that skipped a call or passed another
/// sequence) rebuilds from c.history; apply() on a history of another length rebuilds first, and
/// touched() then declares every id of the windows (O(window)). Results stay exact; only the cost
/// changes.
/// One call at a time: even the const members update cost counters (operations()).
class penalties_processor {
public:
    /// \pre params.check() is nullopt (validated here: config_error or the error handler).
    explicit penalties_processor(const penalty_params& params) : p_(params) {
        p_.validate();
        if (p_.repetition != 1.f) rep_ = add_window(p_.repetition_scope);
        if (p_.frequency != 0.f || p_.presence != 0.f) freq_ = add_window(p_.frequency_scope);
    }

    const penalty_params& params() const noexcept { return p_; }

    /// Applies the repetition, then the frequency/presence penalties (as apply_penalties).
    void apply(std::span<float> logits, const processor_context& c) {
        if (nw_ == 0) return;
        if (!in_sync(c)) reset(c);
        const std::size_t v = logits.size();
        auto valid = [v](token_id t) noexcept { return t >= 0 && static_cast<std::size_t>(t) < v; };
        if (rep_ >= 0 && rep_ == freq_) {  // one set of counts: one pass, same results
            const float theta = p_.repetition, af = p_.frequency, ap = p_.presence;
            const token_counts& k = w_[std::size_t(rep_)].counts();
            const auto ids = k.tokens();
            const auto counts = k.counts();
            for (std::size_t i = 0; i < ids.size(); ++i) {
                if (!valid(ids[i])) continue;
                float& x = logits[static_cast<std::size_t>(ids[i])];
                x = x > 0.f ? x / theta : x * theta;
                detail::frequency_penalize(x, counts[i], af, ap);
            }
            ops_ += ids.size();
            return;
        }
        if (rep_ >= 0) {
            const float theta = p_.repetition;
            const auto ids = w_[std::size_t(rep_)].counts().tokens();
            for (token_id t : ids) {
                if (!valid(t)) continue;
                float& x = logits[static_cast<std::size_t>(t)];
                x = x > 0.f ? x / theta : x * theta;
            }
            ops_ += ids.size();
        }
        if (freq_ >= 0) {
            const float af = p_.frequency, ap = p_.presence;
            const token_counts& k = w_[std::size_t(freq_)].counts();
            const auto ids = k.tokens();
            const auto counts = k.counts();
            for (std::size_t i = 0; i < ids.size(); ++i) {
                if (!valid(ids[i])) continue;
                detail::frequency_penalize(logits[static_cast<std::size_t>(ids[i])], counts[i], af,
                                           ap);
            }
            ops_ += ids.size();
        }
    }

    /// True when patch() can stand for touched() + apply(): one set of counts (the penalties
    /// that are on share their window).
    bool patches_directly() const noexcept { return nw_ == 1; }
    /// The sparse pipeline's path when these penalties are its only processor: brings the
    /// counts in step with c.history (as apply()), then writes each counted id in [0,
    /// logits.size()) whose penalised value differs (bitwise) from logits[id] as {value, id} to
    /// out, in the counts' order (each id once), and clears its bit in `marks` (a token
    /// bitmask, bit t of word t / 32), without writing the row. Returns the number written.
    /// The values are those apply() leaves in a copy of logits. Without patches_directly() it
    /// writes nothing and returns 0 (the caller uses touched() + apply() instead).
    /// \pre out has room for min(distinct counted ids, logits.size()) entries; marks has a bit
    /// for every id < logits.size()
    /// O(distinct ids in the window): one branch-free pass over the counts' arrays and a random
    /// read of the row per id (no hash probe, no copy of the row, no declared-id bits).
    std::size_t patch(std::span<const float> logits, const processor_context& c,
                      detail::scored* out, std::uint32_t* marks) {
        if (nw_ != 1) return 0;
        sync(c);
        return patch_synced(logits, out, marks);
    }

    /// Brings the counts in step with c.history (a rebuild when out of step; nothing when they
    /// are), as apply() and patch() do first.
    void sync(const processor_context& c) {
        if (nw_ != 0 && !in_sync(c)) reset(c);
    }
    /// patch() without its sync. \pre sync() with this call's context since the last hook
    std::size_t patch_synced(std::span<const float> logits, detail::scored* out,
                             std::uint32_t* marks) noexcept {
        if (nw_ != 1) return 0;
        const token_counts& k = w_[0].counts();
        ops_ += k.size();
        if (rep_ >= 0 && freq_ >= 0) return patch_pass<true, true>(logits, k, out, marks);
        if (rep_ >= 0) return patch_pass<true, false>(logits, k, out, marks);
        return patch_pass<false, true>(logits, k, out, marks);
    }

    /// True when the penalties can only lower a logit or leave it as it is (repetition >= 1,
    /// frequency >= 0 and presence >= 0): a penalised value is never above the logit (NaN stays
    /// NaN, +inf stays +inf, -inf stays -inf; rounding is monotonic). Negative or raising
    /// penalties are legal; they make this false.
    bool lowers_only() const noexcept {
        return p_.repetition >= 1.f && p_.frequency >= 0.f && p_.presence >= 0.f;
    }
    /// Replaces lg[i], the logit of ids[i], by its penalised value (the value apply() would
    /// leave there), for i < n: one hash lookup per id, O(n) whatever the number of counted
    /// ids. \pre patches_directly(); sync() with this call's context since the last hook
    void penalise(const token_id* ids, float* lg, std::size_t n) noexcept {
        if (nw_ != 1) return;
        const token_counts& k = w_[0].counts();
        const float theta = p_.repetition, af = p_.frequency, ap = p_.presence;
        const bool rep = rep_ >= 0, freq = freq_ >= 0;
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint32_t count = k.count(ids[i]);
            if (count == 0) continue;
            float y = lg[i];
            if (rep) y = y > 0.f ? y / theta : y * theta;
            if (freq) detail::frequency_penalize(y, count, af, ap);
            lg[i] = y;
        }
        ops_ += n;
    }

    /// Declares the counted ids (every id of the windows of c.history if out of step).
    void touched(const processor_context& c, token_sink& out) const {
        for (int i = 0; i < nw_; ++i) {
            const auto& w = w_[std::size_t(i)];
            if (in_sync(c))
                out(w.counts().tokens());
            else
                out(detail::penalty_window(c.history, c.prompt_length, w.scope(), p_.last_n));
        }
    }

    /// History hooks (processors/processor.hpp).
    void append(std::span<const token_id> added, const processor_context& c) {
        if (nw_ == 0) return;
        if (!built_ || len_ + added.size() != c.history.size() || !same_prompt(c)) {
            reset(c);
            return;
        }
        for (int i = 0; i < nw_; ++i) w_[std::size_t(i)].append(c.history, len_, prompt_);
        len_ = c.history.size();
    }
    void cut_back(std::size_t keep, std::span<const token_id> removed, const processor_context& c) {
        if (nw_ == 0) return;
        if (!built_ || keep + removed.size() != len_ || keep > c.history.size()) {
            built_ = false;  // the next append or apply rebuilds
            return;
        }
        if (!same_prompt(c)) {  // output_only follows prompt_length: rebuild h[0, keep)
            prompt_ = c.prompt_length;
            for (int i = 0; i < nw_; ++i)
                w_[std::size_t(i)].rebuild(c.history.first(keep), prompt_);
        } else {
            for (int i = 0; i < nw_; ++i)
                if (!w_[std::size_t(i)].cut_back(c.history, keep, removed, prompt_)) built_ = false;
        }
        len_ = keep;
    }
    void reset(const processor_context& c) {
        if (nw_ == 0) return;
        for (int i = 0; i < nw_; ++i) w_[std::size_t(i)].rebuild(c.history, c.prompt_length);
        len_ = c.history.size();
        prompt_ = c.prompt_length;
        built_ = true;
    }

    /// The counts of the repetition window and of the frequency/presence window (the same object
    /// when the scopes are equal; nullptr when that penalty is off), as of the last hook.
    const token_counts* repetition_counts() const noexcept {
        return rep_ >= 0 ? &w_[std::size_t(rep_)].counts() : nullptr;
    }
    const token_counts* frequency_counts() const noexcept {
        return freq_ >= 0 ? &w_[std::size_t(freq_)].counts() : nullptr;
    }
    /// Work done since construction: tokens handled by the hooks, entries visited by apply()
    /// and hash slots probed (a cost counter for tests and monitoring; touched() not included).
    std::uint64_t operations() const noexcept {
        std::uint64_t n = ops_;
        for (int i = 0; i < nw_; ++i) n += w_[std::size_t(i)].operations();
        return n;
    }

private:
    template <bool Rep, bool Freq>
    std::size_t patch_pass(std::span<const float> logits, const token_counts& k,
                           detail::scored* out, std::uint32_t* marks) const noexcept {
        const token_id* ids = k.tokens().data();
        const std::uint32_t* counts = k.counts().data();
        const std::size_t n = k.size(), v = logits.size();
        const float theta = p_.repetition, af = p_.frequency, ap = p_.presence;
        std::size_t m = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const auto u = static_cast<std::uint32_t>(ids[i]);  // a negative id wraps past v
            if (u >= v) continue;
            const float x = logits[u];
            float y = x;
            if constexpr (Rep) {  // both computed, then a select: no branch on the sign
                const float q = y / theta, r = y * theta;
                y = y > 0.f ? q : r;
            }
            if constexpr (Freq) detail::frequency_penalize(y, counts[i], af, ap);
            const bool changed = std::bit_cast<std::uint32_t>(y) != std::bit_cast<std::uint32_t>(x);
            out[m] = {y, token_id(u)};  // overwritten by the next id when unchanged
            m += changed;
            marks[u / 32] &= ~(std::uint32_t(changed) << (u % 32));
        }
        return m;
    }
    int add_window(penalty_scope s) {
        for (int i = 0; i < nw_; ++i)
            if (w_[std::size_t(i)].scope() == s) return i;  // one set of counts per scope
        w_[std::size_t(nw_)] = detail::penalty_window_counts(s, p_.last_n);
        if (s == penalty_scope::output_only) uses_prompt_ = true;
        return nw_++;
    }
    bool same_prompt(const processor_context& c) const noexcept {
        return !uses_prompt_ || prompt_ == c.prompt_length;
    }
    bool in_sync(const processor_context& c) const noexcept {
        return built_ && len_ == c.history.size() && same_prompt(c);
    }

    penalty_params p_;
    std::array<detail::penalty_window_counts, 2> w_{};
    int nw_ = 0, rep_ = -1, freq_ = -1;
    bool uses_prompt_ = false;
    bool built_ = false;
    std::size_t len_ = 0;     // history length the counts belong to
    std::size_t prompt_ = 0;  // prompt length they were built with
    std::uint64_t ops_ = 0;
};

DECODEKIT_END_NAMESPACE
