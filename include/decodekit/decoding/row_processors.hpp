#pragma once
/// \file decoding/row_processors.hpp
/// The processors of the strategies that score logits rows themselves (beam search, contrastive
/// search). They are configured as a sampling_params of which only the processor fields are read
/// (allowed / banned tokens, logit biases, min_new_tokens with eos_ids, penalties, DRY,
/// no_repeat_ngram_size, banned_sequences, user processors): the request parameters an engine
/// already has, and the same processor_pipeline (sampling/processing.hpp) a sampler runs, so a
/// processor behaves the same in every strategy. The fields such a strategy cannot honour
/// (temperature, truncation, user steps, a constraint, logprob extras) are rejected up front
/// with a message naming the field, rather than silently ignored. The EOS ids of min_new_tokens
/// and banned_sequences default to the strategy's eos_ids when the processing's are empty.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/processing.hpp>
#include <decodekit/types.hpp>

#include <optional>
#include <span>
#include <string>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
/// The first problem of `p` used as the processors of strategy parameters `who` (a message such
/// as "beam_search_params.processing.top_k: ..."), or nullopt.
inline std::optional<std::string> check_row_processing(const sampling_params& p, const char* who) {
    const std::string field = std::string(who) + ".processing";
    if (auto e = p.check()) return field + ": " + *e;
    auto unused = [&](const char* name, const char* value) {
        return field + "." + name + " must be " + value + ": " + who +
               " reads only the processor fields of sampling_params";
    };
    if (p.temperature != 1.f) return unused("temperature", "1");
    if (p.top_k > 0) return unused("top_k", "<= 0");
    if (p.top_p != 1.f) return unused("top_p", "1");
    if (p.min_p != 0.f) return unused("min_p", "0");
    if (p.typical_p != 1.f) return unused("typical_p", "1");
    if (p.epsilon != 0.f) return unused("epsilon", "0");
    if (p.eta != 0.f) return unused("eta", "0");
    if (p.top_n_sigma != 0.f) return unused("top_n_sigma", "0");
    if (p.xtc_probability != 0.f) return unused("xtc_probability", "0");
    if (p.mirostat) return unused("mirostat", "false");
    if (!p.steps.empty()) return unused("steps", "empty");
    if (p.constraint) return unused("constraint", "empty");
    if (p.logprobs.any()) return unused("logprobs", "without extras");
    return std::nullopt;
}

/// The pipeline of `p` (checked with check_row_processing), its EOS ids defaulting to `eos_ids`;
/// an empty pipeline (active() false) when no processor is configured.
inline processor_pipeline row_processors(const sampling_params& p,
                                         std::span<const token_id> eos_ids) {
    if (p.eos_ids.empty() && !eos_ids.empty() &&
        (p.min_new_tokens > 0 || !p.banned_sequences.empty())) {
        sampling_params q = p;
        q.eos_ids.assign(eos_ids.begin(), eos_ids.end());
        return processor_pipeline(q);
    }
    return p.has_processors() ? processor_pipeline(p) : processor_pipeline();
}
}  // namespace detail

DECODEKIT_END_NAMESPACE
