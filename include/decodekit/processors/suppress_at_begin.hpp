#pragma once
/// \file processors/suppress_at_begin.hpp
/// Tokens banned at one position only: Hugging Face's begin_suppress_tokens
/// (SuppressTokensAtBeginLogitsProcessor), by default at the first generated position.
///
/// HF counts that position as a total length, begin_index (the prompt length, plus one after a
/// forced BOS token); here it is the number of tokens generated before it, `position` (0 by
/// default; 1 after a forced_bos_processor, as HF's generate does). Bans write -inf (over NaN
/// and +inf too). Ids outside [0, V) are ignored. No configuration is invalid: an empty list
/// bans nothing.
///
/// Banning tokens at every position (HF's SuppressTokensLogitsProcessor, suppress_tokens) is
/// banned_tokens_processor (processors/bias.hpp), or sampling_params::banned_tokens.
///
/// Stateless; sparse: touched() declares the list at that position and nothing at the others,
/// O(list) at that position and O(1) elsewhere. The list is shared between copies (O(1) copy).

#include <decodekit/config.hpp>
#include <decodekit/processors/bias.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Bans `tokens` at the position after `position` generated tokens (see the file comment).
class suppress_tokens_at_begin_processor {
public:
    explicit suppress_tokens_at_begin_processor(std::vector<token_id> tokens,
                                                std::size_t position = 0)
        : t_(std::make_shared<const std::vector<token_id>>(std::move(tokens))), at_(position) {}

    std::span<const token_id> tokens() const noexcept { return *t_; }
    /// The number of generated tokens before the position it bans at.
    std::size_t position() const noexcept { return at_; }
    /// True when the position of `c` is the one it bans at.
    bool active(const processor_context& c) const noexcept { return c.generated() == at_; }

    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        if (active(c)) apply_banned_tokens(logits, *t_);
    }
    void touched(const processor_context& c, token_sink& out) const {
        if (active(c)) out(*t_);
    }

private:
    std::shared_ptr<const std::vector<token_id>> t_;
    std::size_t at_;
};

DECODEKIT_END_NAMESPACE
