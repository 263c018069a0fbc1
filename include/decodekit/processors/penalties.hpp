#pragma once
/// \file processors/penalties.hpp
/// Repetition (CTRL), frequency and presence (OpenAI) penalties over a window of the history.
///
/// Semantics (../shared/ALGORITHMS.md section 2):
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
/// min(logits.size(), workspace vocabulary size).
/// Statefulness: none; the caller passes the history (prompt + generated, oldest first) each call.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/types.hpp>

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

DECODEKIT_END_NAMESPACE
