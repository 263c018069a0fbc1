#pragma once
/// \file processors/min_length.hpp
/// Minimum length: suppress end-of-sequence tokens until enough tokens were generated.
///
/// HF's MinNewTokensLengthLogitsProcessor (count generated tokens only). For HF's min_length
/// (prompt included), pass generated_tokens = history length and min_new_tokens = min_length.
/// EOS ids outside [0, V) are ignored. Statefulness: none. min_length_processor is the processor
/// form (processors/processor.hpp): it counts c.generated(), O(#eos) per call.

#include <decodekit/config.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <limits>
#include <span>
#include <utility>
#include <vector>

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

/// apply_min_length as a processor: bans the EOS ids while c.generated() < min_new_tokens.
/// Sparse: touched() declares the EOS ids while it bans them (nothing afterwards).
class min_length_processor {
public:
    min_length_processor(std::size_t min_new_tokens, std::vector<token_id> eos_ids)
        : min_(min_new_tokens), eos_(std::move(eos_ids)) {}
    std::size_t min_new_tokens() const noexcept { return min_; }
    std::span<const token_id> eos_ids() const noexcept { return eos_; }
    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        apply_min_length(logits, c.generated(), min_, eos_);
    }
    void touched(const processor_context& c, token_sink& out) const {
        if (c.generated() < min_) out(eos_);
    }

private:
    std::size_t min_;
    std::vector<token_id> eos_;  // a few ids: copied with the processor
};

DECODEKIT_END_NAMESPACE
