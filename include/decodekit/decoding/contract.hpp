#pragma once
/// \file decoding/contract.hpp
/// The decoding contract shared by every strategy (generate, beam search, contrastive search,
/// DoLa, speculative decoding), by their steppers and by their single-request drivers.
///
/// ## Results
/// Every strategy returns its tokens (prompt excluded), a stop_reason and statistics:
/// decoding_result, or a struct derived from it that adds the strategy's own fields
/// (beam_search_result::hypotheses, dola_result::premature_layers, ...). speculative_result keeps
/// its speculative_stats (stats.as_generation_stats() gives generate()'s shape).
///
/// ## The EOS rule (every strategy)
/// A generated EOS id ends the sequence with stop_reason::eos. The EOS token is NOT part of the
/// returned tokens and is never streamed (beam hypotheses: tokens exclude it, eos = true; the
/// length used for the beam score still counts it, as Hugging Face). EOS ids inside the prompt
/// are ordinary tokens. Negative EOS ids are accepted and ignored (they can never be generated).
///
/// ## Stop sequences and stop strings (every strategy)
/// Checked on generated tokens only (never across the prompt/output boundary). A completed stop
/// sequence ends the sequence with stop_reason::stop_sequence and its tokens stay in the output
/// (they were streamed as they came). A stop string (decoding/stop_strings.hpp) is matched on the
/// detokenized text and ends the sequence with stop_reason::stop_string: the tokens that
/// completed it stay in the output and were streamed, but the streamed text stops right before
/// the stop string (the stop string and anything after it is never released). When both
/// complete on the same token the reason is stop_sequence (the text is still cut).
///
/// ## min_new_tokens (one rule: every stop is held until min_new_tokens tokens exist)
/// Like vLLM's min_tokens: before min_new_tokens tokens are generated no stop can end the
/// sequence. EOS is held by suppression (the sampler's min_new_tokens sets the EOS logits to
/// -inf, so it cannot be drawn); a stop sequence or stop string completing at a token whose count
/// is below min_new_tokens is ignored (its text is released as ordinary text) and matching goes
/// on. Every strategy takes it from the sampling_params that configure its processors:
/// generate_params::sampling, dola_params::sampling, beam_search_params::processing,
/// contrastive_params::processing (the EOS ids to suppress default to the strategy's eos_ids),
/// and for speculative decoding the sampler of its sampler_processing (whose eos_ids must list
/// speculative_params::eos_ids).
///
/// ## Processors (every strategy, one pipeline)
/// Logits processors (penalties, no_repeat_ngram, banned tokens and sequences, logit biases,
/// min_new_tokens, DRY, user processors) are one type, processor_pipeline
/// (sampling/processing.hpp), with per-sequence state that follows the history
/// (processors/history.hpp). generate and DoLa run it inside their sampler (DoLa: on the contrast
/// scores, after its own repetition penalty); beam search runs one per beam on the beam's logits
/// row (a new beam forks its parent's); contrastive search on each step's row before the top-k;
/// speculative decoding inside its processing, position by position with the accepted history.
///
/// ## Streaming (every strategy)
/// A callback `bool(const token_event&)` or `bool(token_id)` (or returning void) sees every
/// output token once, in order; returning false stops with stop_reason::callback after that
/// token (the token stays in the output; held-back text is dropped). Beam search streams its
/// best hypothesis instead (beam_event). With a detokenizer, token_event::text carries the text
/// released with the token, and when the sequence ends for another reason than a stop string,
/// the held-back tail comes with the last token's event, or in one final event with token -1
/// (only `token_event` callbacks see that one) when the last step emitted no token (EOS,
/// no_valid_token, cancellation).
///
/// ## Steppers (engine-driven decoding)
/// Each strategy has a stepper (generation_stepper, beam_searcher, contrastive_stepper,
/// dola_stepper, speculative_stepper) constructed from its params, the vocabulary size and the
/// prompt. `next_call()` says what the model must compute next (decoding/model_call.hpp);
/// `advance(rows...)` consumes the rows and returns the step's events; `done()`, `result()`,
/// `cancel()`. A stepper calls no model: an engine concatenates the next_call() of many steppers
/// into one model call (renaming slots), splits the rows back and advances each. A request gives
/// the same tokens driven alone or inside any batch, in any order: randomness is keyed by
/// (seed, sequence, step) only. The single-request functions are loops over their stepper.
/// Size checks are always on (every build type): rows shorter than next_call() needs give
/// step_status::bad_input and change nothing; advancing a finished stepper gives
/// step_status::finished.

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <type_traits>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Why a sequence ended. Append-only: values keep their meaning across versions.
enum class stop_reason : std::uint8_t {
    max_new_tokens,   ///< the token budget was reached
    eos,              ///< an EOS id was generated (not part of the output)
    stop_sequence,    ///< a stop sequence was completed (its tokens are in the output)
    callback,         ///< the streaming callback returned false
    no_valid_token,   ///< a logits row had no valid entry (all -inf / NaN / banned)
    stop_string,      ///< a stop string was completed in the detokenized text
    cancelled,        ///< the request was cancelled between steps (stepper cancel())
    constraint_done,  ///< a constraint finished or allows no token (constrained decoding)
};

/// The stop reason of a sampler status that drew no token: no_allowed_token (a constraint, or
/// the call's mask, allows no valid token) -> constraint_done; anything else -> no_valid_token.
constexpr stop_reason stop_reason_of_no_token(bool constraint) noexcept {
    return constraint ? stop_reason::constraint_done : stop_reason::no_valid_token;
}

/// The enumerator's name ("eos", "stop_string", ...); "unknown" past the last one.
inline const char* to_string(stop_reason r) noexcept {
    switch (r) {
        case stop_reason::max_new_tokens:
            return "max_new_tokens";
        case stop_reason::eos:
            return "eos";
        case stop_reason::stop_sequence:
            return "stop_sequence";
        case stop_reason::callback:
            return "callback";
        case stop_reason::no_valid_token:
            return "no_valid_token";
        case stop_reason::stop_string:
            return "stop_string";
        case stop_reason::cancelled:
            return "cancelled";
        case stop_reason::constraint_done:
            return "constraint_done";
    }
    return "unknown";
}

/// Statistics of one generation. An aggregate: strategies add fields (speculative decoding fills
/// the draft / acceptance fields); times in seconds, measured with std::chrono::steady_clock from
/// the construction of the stepper (the driver's call).
struct generation_stats {
    std::size_t prompt_tokens = 0;
    std::size_t generated_tokens = 0;  ///< tokens in the output
    std::size_t model_calls = 0;       ///< calls of the (target) model
    std::size_t model_rows = 0;        ///< logits rows the (target) model computed
    double time_to_first_token = 0;    ///< until the first step that emitted or stopped
    double total_time = 0;             ///< until the sequence ended
    double time_per_output_token = 0;  ///< (total - first) / (generated - 1); 0 if < 2 tokens
    double tokens_per_second = 0;      ///< generated / total_time
    double tokens_per_model_call = 0;  ///< generated / model_calls
    // speculative decoding (0 elsewhere)
    std::size_t draft_calls = 0;                      ///< calls of the draft model / proposer
    std::size_t drafted_tokens = 0;                   ///< draft tokens proposed
    std::size_t accepted_tokens = 0;                  ///< draft tokens accepted
    std::vector<double> acceptance_by_position = {};  ///< acceptance rate at draft position i
    // constrained decoding (generate and DoLa with sampling_params::constraint; 0 elsewhere)
    std::size_t constraint_queries = 0;  ///< the sampler's constraint queries, summed over steps

    /// accepted / drafted (0 when nothing was drafted).
    double acceptance_rate() const noexcept {
        return drafted_tokens ? double(accepted_tokens) / double(drafted_tokens) : 0.0;
    }
    /// Fills the derived fields (rates) from the counts and the two times.
    void finish() noexcept {
        tokens_per_second = total_time > 0 ? double(generated_tokens) / total_time : 0.0;
        tokens_per_model_call = model_calls ? double(generated_tokens) / double(model_calls) : 0.0;
        time_per_output_token =
            generated_tokens > 1 ? (total_time - time_to_first_token) / double(generated_tokens - 1)
                                 : 0.0;
    }
};

/// What every strategy returns: tokens, why it stopped, statistics. Strategies derive from it.
struct decoding_result {
    std::vector<token_id> tokens;  ///< generated tokens, prompt and EOS excluded
    stop_reason reason = stop_reason::max_new_tokens;
    generation_stats stats;
};

/// One streamed token.
struct token_event {
    token_id token = -1;         ///< -1 only in the final event that carries the held-back text
    std::size_t index = 0;       ///< position in the output (0 = first generated token)
    float logprob = 0;           ///< log-probability it was chosen with (0 for greedy; NaN when the
                                 ///< sampler's params.logprobs.chosen is off)
    std::string_view text = {};  ///< text released with this token (with a detokenizer); valid
                                 ///< during the callback only
};

/// A streaming callback: `bool(const token_event&)`, `bool(token_id)`, or the same returning
/// void (never stops).
template <class F>
concept token_callback = std::invocable<F&, const token_event&> || std::invocable<F&, token_id>;

/// Outcome of one stepper advance().
enum class step_status : std::uint8_t {
    ok,         ///< the rows were consumed
    bad_input,  ///< rows (or hidden rows) shorter than next_call() needs: nothing consumed,
                ///< the stepper is unchanged (advance again with the right rows, or cancel())
    finished,   ///< the stepper was already done: nothing consumed
};

/// What one stepper advance() produced.
struct step_events {
    step_status status = step_status::ok;
    std::span<const token_id> tokens = {};  ///< tokens appended to the output by this step
    std::string_view text = {};             ///< text released by this step (with a detokenizer)
    std::optional<stop_reason> stop = {};   ///< set on the step where the sequence ended
    /// Views stay valid until the stepper's next advance() / cancel().
    bool finished() const noexcept { return stop.has_value(); }
};

namespace detail {
/// Calls a token_callback; true = go on. Events with token -1 (the final text) reach only
/// callbacks that take a token_event.
template <class F>
bool call_stream(F& f, const token_event& e) {
    if constexpr (std::is_invocable_r_v<bool, F&, const token_event&>)
        return f(e);
    else if constexpr (std::is_invocable_v<F&, const token_event&>)
        return f(e), true;
    else if constexpr (std::is_invocable_r_v<bool, F&, token_id>)
        return e.token < 0 ? true : f(e.token);
    else
        return e.token < 0 ? true : (f(e.token), true);
}
/// The callback that streams nowhere.
struct no_stream {
    bool operator()(const token_event&) const noexcept { return true; }
};
/// Seconds since t0 on the steady clock.
inline double seconds_since(std::chrono::steady_clock::time_point t0) noexcept {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace detail

DECODEKIT_END_NAMESPACE
