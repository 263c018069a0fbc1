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
    exactly_k,  ///< keep exactly k, ties broken by lowest id (llama.cpp, CTranslate2,
                ///< onnxruntime-genai)
    keep_ties,  ///< keep every token whose logit is >= the k-th logit (Hugging Face, vLLM,
                ///< FlashInfer)
};

DECODEKIT_END_NAMESPACE
