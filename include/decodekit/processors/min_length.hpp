#pragma once
/// \file processors/min_length.hpp
/// Minimum length: suppress end-of-sequence tokens until enough tokens were generated.
///
/// HF's MinNewTokensLengthLogitsProcessor (count generated tokens only). For HF's min_length
/// (prompt included), pass generated_tokens = history length and min_new_tokens = min_length.
/// EOS ids outside [0, V) are ignored. Statefulness: none.

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

/// Sets every EOS id's logit to -inf while generated_tokens < min_new_tokens.
inline void apply_min_length(std::span<float> logits, std::size_t generated_tokens,
                             std::size_t min_new_tokens,
                             std::span<const token_id> eos_ids) noexcept {
    if (generated_tokens >= min_new_tokens) return;
    for (token_id t : eos_ids)
        if (t >= 0 && static_cast<std::size_t>(t) < logits.size())
            logits[static_cast<std::size_t>(t)] = -std::numeric_limits<float>::infinity();
}

DECODEKIT_END_NAMESPACE
