#pragma once
/// \file types.hpp
/// Vocabulary types shared by every layer.

#include <decodekit/config.hpp>

#include <cstddef>
#include <cstdint>

DECODEKIT_BEGIN_NAMESPACE

/// A token id: an index into the vocabulary.
using token_id = std::int32_t;

/// "No index": returned by argmax/draw kernels when no entry can be chosen (empty span, every
/// entry NaN or -inf).
inline constexpr std::size_t npos = static_cast<std::size_t>(-1);

/// How top-k treats tokens tied with the k-th value.
enum class tie_policy : std::uint8_t {
    /// keep exactly k; decodekit breaks ties at the k-th logit by lowest id, so the set is
    /// deterministic (llama.cpp, CTranslate2 and onnxruntime-genai also keep exactly k, but
    /// which of the tied tokens they keep is left to their partial sort: arbitrary)
    exactly_k,
    keep_ties,  ///< keep every token whose logit is >= the k-th logit (Hugging Face, vLLM,
                ///< FlashInfer)
};

/// Where locally typical sampling ends its set (tokens in order of |-log p - H|).
enum class typical_stop : std::uint8_t {
    /// stop at the first token whose cumulative mass reaches typical_p, then also keep every
    /// token whose score equals that token's (Hugging Face)
    reach_with_ties,
    /// stop at the first token whose cumulative mass strictly exceeds typical_p; a prefix of
    /// the order, no tie rule: one token more than reach_with_ties when the mass lands exactly
    /// on typical_p (llama.cpp)
    exceed,
};

DECODEKIT_END_NAMESPACE
