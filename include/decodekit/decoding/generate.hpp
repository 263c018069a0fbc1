#pragma once
/// \file decoding/generate.hpp
/// Greedy or sampled generation through decodekit::sampler (temperature 0 = greedy): the
/// generation_stepper, which an engine drives, and generate(), which drives it on one model.
/// Stop rule, streaming, results and steppers: decoding/contract.hpp.
///
/// - One model call per token: the request is the whole sequence (prompt + generated, n_last 1,
///   slot generate_params::slot), which grows by appending (a caching backend reuses its prefix).
/// - Empty prompt: rejected with a message, unless generate_params::bos_token >= 0, in which case
///   the prompt is {bos_token}.
/// - EOS: generate_params::eos_ids are also the sampler's eos_ids when those are empty, so
///   sampling.min_new_tokens suppresses them; sampling.min_new_tokens also holds stop sequences
///   and stop strings (the contract's rule).
/// - Allocation: everything is sized by the constructor; nothing is allocated per token (the
///   sequence and output are reserved for min(max_new_tokens, 16384) tokens, so an absurd budget
///   cannot exhaust memory up front).
/// - A row with no valid token ends with stop_reason::no_valid_token; a sampling constraint
///   (sampling_params' constraint or mask) that allows no valid token ends with
///   stop_reason::constraint_done.
/// - Randomness: the draw of step i (i-th generated token) uses rng_key{sampling.seed,
///   generate_params::sequence, i}; same seed and sequence give the same tokens, alone or in any
///   batch.

#include <decodekit/config.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/sequence_output.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
#include <decodekit/error.hpp>
#include <decodekit/model.hpp>
#include <decodekit/sampling/sampler.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Configuration of generate() and generation_stepper.
struct generate_params {
    sampling_params sampling = {};       ///< the sampler (temperature 0 = greedy)
    std::size_t max_new_tokens = 128;    ///< >= 1
    std::vector<token_id> eos_ids = {};  ///< also given to the sampler when its eos_ids is empty
    std::vector<std::vector<token_id>> stop_sequences = {};  ///< each non-empty
    token_id bos_token = -1;                     ///< the prompt used when it is empty (-1: reject)
    std::uint64_t sequence = 0;                  ///< RNG key: sequence id
    std::uint32_t slot = 0;                      ///< the model slot of the sequence
    std::vector<std::string> stop_strings = {};  ///< text stops (decoding/stop_strings.hpp)
    detokenize_fn detokenize = {};  ///< token -> bytes: streams text, needed by stop_strings

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
        return detail::check_stop_strings("generate_params", stop_strings, bool(detokenize));
    }
    /// check(), reported through raise().
    void validate() const { raise_if(check()); }
};

/// What generate() returns.
using generation_result = decoding_result;

namespace detail {
/// The prompt generate() runs: `prompt`, or {bos} when it is empty and bos >= 0; raise() else.
inline std::vector<token_id> effective_prompt(std::span<const token_id> prompt, token_id bos,
                                              const char* who) {
    if (!prompt.empty()) return {prompt.begin(), prompt.end()};
    if (bos >= 0) return {bos};
    raise(std::string(who) + ": prompt must not be empty (or set generate_params.bos_token)");
}
/// Tokens reserved up front for a budget of n new tokens.
inline std::size_t capped_reserve(std::size_t n) noexcept {
    return std::min<std::size_t>(n, 16384);
}
}  // namespace detail

/// Greedy or sampled generation of one sequence, driven step by step: next_call() is one
/// logits row of the whole sequence; advance() samples, applies the stop rule and streams.
class generation_stepper {
public:
    /// \pre params valid, prompt non-empty or params.bos_token >= 0, vocab_size >= 1 (each
    /// rejected with a message otherwise)
    generation_stepper(const generate_params& params, std::size_t vocab_size,
                       std::span<const token_id> prompt)
        : smp_(validated(params).sampling.eos_ids.empty() ? with_eos(params) : params.sampling,
               vocab_size),
          greedy_(params.sampling.greedy()),
          sequence_(params.sequence),
          slot_(params.slot) {
        seq_ = detail::effective_prompt(prompt, params.bos_token, "generate");
        prompt_length_ = seq_.size();
        const std::size_t reserve = detail::capped_reserve(params.max_new_tokens);
        seq_.reserve(prompt_length_ + reserve);
        out_ = sequence_output(stop_conditions{.eos_ids = params.eos_ids,
                                               .stop_sequences = params.stop_sequences,
                                               .stop_strings = params.stop_strings,
                                               .detokenize = params.detokenize,
                                               .min_new_tokens = params.sampling.min_new_tokens,
                                               .max_new_tokens = params.max_new_tokens},
                               prompt_length_, reserve);
        request_ = {seq_, 1, slot_};
    }
    generation_stepper(const generation_stepper&) = delete;
    generation_stepper& operator=(const generation_stepper&) = delete;
    generation_stepper(generation_stepper&&) = default;
    generation_stepper& operator=(generation_stepper&&) = default;

    /// One logits row of the whole sequence (slot generate_params::slot); empty when done().
    model_call next_call() const noexcept {
        if (done()) return {};
        return {.requests = std::span<const sequence_request>(&request_, 1)};
    }
    std::span<const sequence_request> requests() const noexcept { return next_call().requests; }
    bool done() const noexcept { return out_.done(); }
    std::size_t vocab_size() const noexcept { return smp_.vocab_size(); }

    /// Consumes the logits row of next_call(): samples the next token, applies the stop rule,
    /// calls `on_token` for an output token (see contract.hpp).
    /// \return status bad_input (nothing consumed) when logits.size() < vocab_size(), or when
    /// the stepper's sampler is in use by another thread (sample_status::concurrent_use)
    template <class OnToken = detail::no_stream>
    requires token_callback<OnToken> step_events advance(std::span<const float> logits,
                                                         OnToken&& on_token = {}) {
        if (done()) return {.status = step_status::finished};
        const std::size_t V = smp_.vocab_size();
        if (logits.size() < V) return {.status = step_status::bad_input};
        const sample_result s =
            smp_.sample(logits.first(V), sample_context{.sequence = sequence_,
                                                        .step = out_.size(),
                                                        .history = seq_,
                                                        .prompt_length = prompt_length_});
        if (s.status == sample_status::concurrent_use) return {.status = step_status::bad_input};
        out_.begin_step();
        ++calls_;
        queries_ += s.constraint_queries;
        if (!s.ok()) {
            out_.finish(stop_reason_of_no_token(s.status == sample_status::no_allowed_token),
                        on_token);
        } else if (out_.is_eos(s.token)) {
            out_.finish(stop_reason::eos, on_token);
        } else {
            seq_.push_back(s.token);
            out_.emit(s.token, greedy_ ? 0.f : s.logprob, on_token);
            request_ = {seq_, 1, slot_};  // seq_ may have reallocated
        }
        return out_.events();
    }
    /// advance() for engines that pass hidden rows to every stepper (ignored here).
    template <class OnToken = detail::no_stream>
    requires token_callback<OnToken> step_events advance(std::span<const float> logits,
                                                         std::span<const float> /*hidden*/,
                                                         OnToken&& on_token = {}) {
        return advance(logits, on_token);
    }

    /// Ends the sequence now with stop_reason::cancelled (the held-back text is in the events).
    step_events cancel() {
        if (done()) return {.status = step_status::finished};
        out_.begin_step();
        out_.finish(stop_reason::cancelled);
        return out_.events();
    }

    /// The output so far (everything once done()).
    generation_result result() const {
        generation_result r;
        out_.fill(r);
        r.stats.model_calls = calls_;
        r.stats.model_rows = calls_;
        r.stats.constraint_queries = queries_;
        r.stats.finish();
        return r;
    }

private:
    static const generate_params& validated(const generate_params& p) {
        p.validate();
        return p;
    }
    static sampling_params with_eos(const generate_params& p) {
        sampling_params sp = p.sampling;
        sp.eos_ids = p.eos_ids;
        return sp;
    }

    sampler smp_;
    bool greedy_ = false;
    std::uint64_t sequence_ = 0;
    std::uint32_t slot_ = 0;
    std::vector<token_id> seq_;
    std::size_t prompt_length_ = 0;
    sequence_output out_;
    sequence_request request_;
    std::size_t calls_ = 0;
    std::size_t queries_ = 0;  // the sampler's constraint queries
};

/// Generates from `prompt` with greedy or sampled decoding, calling `on_token` (signature
/// bool(const token_event&) or bool(token_id); return false to stop, or return void) for every
/// output token; returns the tokens, the stop reason and statistics. A loop over
/// generation_stepper.
/// \pre params valid (validated here); prompt non-empty or params.bos_token >= 0
template <language_model M, token_callback OnToken = detail::no_stream>
generation_result generate(M& model, std::span<const token_id> prompt,
                           const generate_params& params, OnToken&& on_token = {}) {
    generation_stepper st(params, std::size_t(model.vocab_size()), prompt);
    std::vector<float> logits(st.vocab_size());
    while (!st.done()) {
        run_model_call(model, st.next_call(), logits);
        st.advance(logits, on_token);
    }
    return st.result();
}

DECODEKIT_END_NAMESPACE
