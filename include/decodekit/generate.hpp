#pragma once
/// \file generate.hpp
/// The generation driver: prompt tokens in, tokens out, over any language_model, with greedy or
/// sampled decoding through decodekit::sampler (temperature 0 = greedy), stop conditions, a
/// streaming callback and statistics.
///
/// - Stop conditions, checked on generated tokens only (EOS ids or stop sequences inside the
///   prompt are ignored): an EOS id (the EOS token is NOT appended to the output nor streamed;
///   the result's reason says eos); a stop sequence completed by the generated tokens (its
///   tokens are in the output: they were streamed as they came); max_new_tokens; the streaming
///   callback returning false (the token it saw is in the output); a logits row with no valid
///   token (reason no_valid_token, nothing appended).
/// - Empty prompt: rejected with a message, unless generate_params::bos_token >= 0, in which case
///   the prompt is {bos_token}.
/// - One model call per token: the request is the whole sequence (prompt + generated, n_last 1,
///   slot generate_params::slot), which grows by appending (a caching backend reuses its prefix).
/// - Allocation: the logits row, the sequence and the sampler's workspace are sized once before
///   the loop; nothing is allocated per token (the sequence and output vectors are reserved up
///   front for min(max_new_tokens, 16384) tokens, so an absurd budget cannot exhaust memory).
/// - Randomness: the draw of step i (i-th generated token) uses rng_key{sampling.seed,
///   generate_params::sequence, i}; same seed and sequence give the same tokens.

#include <decodekit/config.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/error.hpp>
#include <decodekit/model.hpp>
#include <decodekit/sampling/sampler.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Why generation ended.
enum class stop_reason : std::uint8_t {
    max_new_tokens,  ///< the token budget was reached
    eos,             ///< an EOS id was generated
    stop_sequence,   ///< a stop sequence was completed
    callback,        ///< the streaming callback returned false
    no_valid_token,  ///< a logits row had no valid entry (all -inf / NaN / banned)
};

/// Statistics of one generation. An aggregate: strategies add fields (speculative decoding fills
/// the draft / acceptance fields); times in seconds, measured with std::chrono::steady_clock.
struct generation_stats {
    std::size_t prompt_tokens = 0;
    std::size_t generated_tokens = 0;  ///< tokens in the output
    std::size_t model_calls = 0;       ///< calls of the (target) model
    std::size_t model_rows = 0;        ///< logits rows the (target) model computed
    double time_to_first_token = 0;    ///< from the call to the first generated token
    double total_time = 0;             ///< the whole call
    double time_per_output_token = 0;  ///< (total - first) / (generated - 1); 0 if < 2 tokens
    double tokens_per_second = 0;      ///< generated / total_time
    double tokens_per_model_call = 0;  ///< generated / model_calls
    // speculative decoding (0 elsewhere)
    std::size_t draft_calls = 0;                      ///< calls of the draft model / proposer
    std::size_t drafted_tokens = 0;                   ///< draft tokens proposed
    std::size_t accepted_tokens = 0;                  ///< draft tokens accepted
    std::vector<double> acceptance_by_position = {};  ///< acceptance rate at draft position i

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

/// Configuration of generate().
struct generate_params {
    sampling_params sampling = {};       ///< the sampler (temperature 0 = greedy)
    std::size_t max_new_tokens = 128;    ///< >= 1
    std::vector<token_id> eos_ids = {};  ///< also given to the sampler when its eos_ids is empty
    std::vector<std::vector<token_id>> stop_sequences = {};  ///< each non-empty
    token_id bos_token = -1;     ///< the prompt used when it is empty (-1: reject)
    std::uint64_t sequence = 0;  ///< RNG key: sequence id
    std::uint32_t slot = 0;      ///< the model slot of the sequence

    /// The first invalid field, named with its allowed range; nullopt when valid.
    std::optional<std::string> check() const {
        if (auto e = sampling.check()) return "generate_params.sampling: " + *e;
        if (max_new_tokens < 1)
            return detail::range_message("generate_params.max_new_tokens", ">= 1",
                                         double(max_new_tokens));
        if (auto e = detail::check_stop_conditions("generate_params", eos_ids, stop_sequences))
            return e;
        if (bos_token < -1)
            return detail::range_message("generate_params.bos_token", ">= 0, or -1 for none",
                                         double(bos_token));
        return std::nullopt;
    }
    /// check(), reported through raise().
    void validate() const { raise_if(check()); }
};

/// What generate() returns.
struct generation_result {
    std::vector<token_id> tokens;  ///< generated tokens (EOS excluded), prompt excluded
    stop_reason reason = stop_reason::max_new_tokens;
    generation_stats stats;
};

/// One streamed token.
struct token_event {
    token_id token = -1;
    std::size_t index = 0;  ///< position in the output (0 = first generated token)
    float logprob = 0;      ///< log-probability it was drawn with (0 for greedy; NaN when the
                            ///< sampler's params.logprobs.chosen is off)
};

namespace detail {
template <class F>
bool call_stream(F& f, const token_event& e) {
    if constexpr (std::is_invocable_r_v<bool, F&, const token_event&>)
        return f(e);
    else if constexpr (std::is_invocable_r_v<bool, F&, token_id>)
        return f(e.token);
    else if constexpr (std::is_invocable_v<F&, const token_event&>)
        return f(e), true;
    else
        return f(e.token), true;
}
struct no_stream {
    bool operator()(const token_event&) const noexcept { return true; }
};
/// The prompt generate() runs: `prompt`, or {bos} when it is empty and bos >= 0; raise() else.
inline std::vector<token_id> effective_prompt(std::span<const token_id> prompt, token_id bos,
                                              const char* who) {
    if (!prompt.empty()) return {prompt.begin(), prompt.end()};
    if (bos >= 0) return {bos};
    raise(std::string(who) + ": prompt must not be empty (or set generate_params.bos_token)");
}
}  // namespace detail

namespace detail {
/// The stop check shared by generate() and speculative_decode() after a token was appended to
/// `generated` and streamed (`go_on`: what the callback returned): a completed stop sequence
/// first (the token is kept), then the callback; nullopt: go on.
inline std::optional<stop_reason> stop_after_emit(const stop_checker& stop,
                                                  std::span<const token_id> generated,
                                                  bool go_on) noexcept {
    if (stop.ends_with_stop_sequence(generated)) return stop_reason::stop_sequence;
    if (!go_on) return stop_reason::callback;
    return std::nullopt;
}
}  // namespace detail

/// Generates from `prompt` with greedy or sampled decoding, calling `on_token` (signature
/// bool(const token_event&) or bool(token_id); return false to stop, or return void) for every
/// output token; returns the tokens, the stop reason and statistics.
/// \pre params valid (validated here); prompt non-empty or params.bos_token >= 0
template <class M, class OnToken = detail::no_stream>
requires language_model<M> &&(std::invocable<OnToken&, const token_event&> ||
                              std::invocable<OnToken&, token_id>)generation_result
    generate(M& model, std::span<const token_id> prompt, const generate_params& params,
             OnToken&& on_token = {}) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    params.validate();
    const std::size_t V = model.vocab_size();
    std::vector<token_id> seq = detail::effective_prompt(prompt, params.bos_token, "generate");
    const std::size_t prompt_len = seq.size();
    sampling_params sp = params.sampling;
    if (sp.eos_ids.empty()) sp.eos_ids = params.eos_ids;
    sampler smp(sp, V);
    std::vector<float> logits(V);
    seq.reserve(prompt_len + std::min<std::size_t>(params.max_new_tokens, 16384));
    const stop_checker stop(params.eos_ids, params.stop_sequences);

    generation_result res;
    res.tokens.reserve(std::min<std::size_t>(params.max_new_tokens, 16384));
    res.stats.prompt_tokens = prompt_len;
    res.reason = stop_reason::max_new_tokens;
    for (std::size_t step = 0; step < params.max_new_tokens; ++step) {
        const sequence_request r{seq, 1, params.slot};
        model.logits(std::span<const sequence_request>(&r, 1), logits);
        ++res.stats.model_calls;
        ++res.stats.model_rows;
        const sample_result s = smp.sample(logits, sample_context{.sequence = params.sequence,
                                                                  .step = step,
                                                                  .history = seq,
                                                                  .prompt_length = prompt_len});
        if (step == 0)
            res.stats.time_to_first_token =
                std::chrono::duration<double>(clock::now() - t0).count();
        if (!s.ok()) {
            res.reason = stop_reason::no_valid_token;
            break;
        }
        if (stop.is_eos(s.token)) {
            res.reason = stop_reason::eos;
            break;
        }
        seq.push_back(s.token);
        res.tokens.push_back(s.token);
        const bool go_on =
            detail::call_stream(on_token, token_event{s.token, res.tokens.size() - 1,
                                                      params.sampling.greedy() ? 0.f : s.logprob});
        if (const auto why = detail::stop_after_emit(stop, res.tokens, go_on)) {
            res.reason = *why;
            break;
        }
    }
    res.stats.generated_tokens = res.tokens.size();
    res.stats.total_time = std::chrono::duration<double>(clock::now() - t0).count();
    res.stats.finish();
    return res;
}

DECODEKIT_END_NAMESPACE
