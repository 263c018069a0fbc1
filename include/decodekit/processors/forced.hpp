#pragma once
/// \file processors/forced.hpp
/// Forced tokens at a position: Hugging Face's forced_bos_token_id and forced_eos_token_id.
///
/// Forcing a set S of ids writes -inf into every entry of the row and 0 into each id of S (so
/// the draw is uniform over S and the forced ids' log-probability is -log |S|). The forced ids
/// become 0 whatever they held (NaN, -inf, +inf included): forcing wins over every processor
/// before it. Ids of S outside [0, V) are ignored, so a set with no id in [0, V) leaves every
/// entry -inf (the sampler reports sample_status::no_valid_token).
///
///   forced_bos_processor -- forces one token at the first generated position (c.generated()
///       == 0), as HF's ForcedBOSTokenLogitsProcessor (HF counts the decoder's start token: its
///       `cur_len == 1` is our first generated position).
///   forced_eos_processor -- forces the EOS ids at the last position a length limit allows: the
///       position where the length is max_length - 1, so that the token drawn there makes the
///       length max_length. The length is counted as HF counts max_length, prompt + generated
///       (length_basis::total, the default), or as its max_new_tokens, generated tokens only
///       (length_basis::generated). As HF, it forces at that one position only (== , not >=):
///       a driver that goes past the limit gets unforced rows after it.
///
/// Both are stateless (no history hooks) and sparse: touched() declares nothing at the other
/// positions (no work, no row copy), and every id in [0, V) at the forced position, where they
/// are dense (O(V) per call, one write per entry).

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Sets every logit to -inf, then the logits of the `forced` ids in [0, V) to 0.
inline void apply_forced_tokens(std::span<float> logits,
                                std::span<const token_id> forced) noexcept {
    std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
    for (token_id t : forced)
        if (t >= 0 && static_cast<std::size_t>(t) < logits.size())
            logits[static_cast<std::size_t>(t)] = 0.f;
}

namespace detail {
/// Declares every id of a vocabulary of `v` entries (a processor that writes the whole row).
inline void declare_all(std::size_t v, token_sink& out) {
    for (std::size_t i = 0; i < v; ++i) out(static_cast<token_id>(i));
}
}  // namespace detail

/// Forces `bos_token` at the first generated position (c.generated() == 0). Sparse (see the file
/// comment); stateless; a copy is O(1).
class forced_bos_processor {
public:
    /// The problem with `bos_token` as a message (it must be >= 0), or nullopt.
    static std::optional<std::string> check(token_id bos_token) {
        if (bos_token < 0)
            return detail::range_message("forced_bos_processor.bos_token", ">= 0",
                                         static_cast<double>(bos_token));
        return std::nullopt;
    }
    /// \pre check(bos_token) is nullopt (validated here: config_error or the error handler)
    explicit forced_bos_processor(token_id bos_token) : bos_(bos_token) {
        raise_if(check(bos_token));
    }

    token_id bos_token() const noexcept { return bos_; }
    /// True when the position of `c` is forced.
    static bool forcing(const processor_context& c) noexcept { return c.generated() == 0; }

    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        if (forcing(c)) apply_forced_tokens(logits, std::span<const token_id>(&bos_, 1));
    }
    void touched(const processor_context& c, token_sink& out) const {
        if (forcing(c)) detail::declare_all(c.vocab_size, out);
    }

private:
    token_id bos_;
};

/// What a length limit counts.
enum class length_basis : std::uint8_t {
    total,      ///< prompt + generated, c.history.size() (Hugging Face's max_length)
    generated,  ///< generated tokens only, c.generated() (Hugging Face's max_new_tokens)
};

/// Configuration of forced_eos_processor.
struct forced_eos_params {
    /// The length limit, >= 1: the EOS ids are forced where the length is max_length - 1.
    std::size_t max_length = 0;
    length_basis basis = length_basis::total;  ///< what max_length counts
    /// At least one id; ids outside [0, V) are ignored (negative ids too, as every EOS list:
    /// docs/bad-input.md), so a list with no id in [0, V) leaves the forced row all -inf.
    std::vector<token_id> eos_ids = {};

    /// The first invalid field as a message, or nullopt.
    std::optional<std::string> check() const {
        if (max_length < 1)
            return detail::range_message("forced_eos_params.max_length", ">= 1",
                                         static_cast<double>(max_length));
        if (static_cast<unsigned>(basis) > 1u)
            return detail::range_message("forced_eos_params.basis",
                                         "a length_basis enumerator (0..1)",
                                         static_cast<double>(basis));
        if (eos_ids.empty())
            return std::string("forced_eos_params.eos_ids must hold at least one id, got none");
        return std::nullopt;
    }
    /// Throws config_error (or calls the error handler) if check() finds a problem.
    void validate() const { raise_if(check()); }
};

/// Forces the EOS ids at the position where the length (params.basis) is max_length - 1. Sparse
/// (see the file comment); stateless; a copy copies the EOS list.
class forced_eos_processor {
public:
    /// \pre params.check() is nullopt (validated here: config_error or the error handler)
    explicit forced_eos_processor(forced_eos_params params) : p_(std::move(params)) {
        p_.validate();
    }

    const forced_eos_params& params() const noexcept { return p_; }
    /// The length of `c` as params().basis counts it.
    std::size_t length(const processor_context& c) const noexcept {
        return p_.basis == length_basis::total ? c.history.size() : c.generated();
    }
    /// True when the position of `c` is forced.
    bool forcing(const processor_context& c) const noexcept {
        return length(c) == p_.max_length - 1;
    }

    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        if (forcing(c)) apply_forced_tokens(logits, p_.eos_ids);
    }
    void touched(const processor_context& c, token_sink& out) const {
        if (forcing(c)) detail::declare_all(c.vocab_size, out);
    }

private:
    forced_eos_params p_;
};

DECODEKIT_END_NAMESPACE
