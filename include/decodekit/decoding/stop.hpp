#pragma once
/// \file decoding/stop.hpp
/// Stop conditions shared by the decoding drivers (generate, speculative, beam search,
/// contrastive, DoLa): EOS ids and stop sequences, checked on generated tokens only.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
/// First problem with stop conditions (negative EOS id, empty stop sequence or negative id in
/// one), fields named "<owner>.eos_ids" / "<owner>.stop_sequences"; nullopt when valid.
inline std::optional<std::string> check_stop_conditions(
    std::string_view owner, std::span<const token_id> eos_ids,
    std::span<const std::vector<token_id>> stop_sequences = {}) {
    const std::string o(owner);
    for (token_id e : eos_ids)
        if (e < 0) return range_message(o + ".eos_ids", "non-negative ids", double(e));
    for (const auto& s : stop_sequences) {
        if (s.empty()) return o + ".stop_sequences: every sequence must be non-empty";
        for (token_id t : s)
            if (t < 0) return range_message(o + ".stop_sequences", "non-negative ids", double(t));
    }
    return std::nullopt;
}
}  // namespace detail

/// EOS ids and stop sequences, usable by any driver. Borrows the spans (they must outlive it).
class stop_checker {
public:
    explicit stop_checker(std::span<const token_id> eos_ids,
                          std::span<const std::vector<token_id>> stop_sequences = {}) noexcept
        : eos_(eos_ids), stop_(stop_sequences) {}
    /// True when t is an EOS id.
    bool is_eos(token_id t) const noexcept {
        return std::find(eos_.begin(), eos_.end(), t) != eos_.end();
    }
    /// True when `generated` ends with one of the stop sequences (generated tokens only).
    bool ends_with_stop_sequence(std::span<const token_id> generated) const noexcept {
        for (const auto& s : stop_)
            if (s.size() <= generated.size() &&
                std::equal(s.begin(), s.end(), generated.end() - std::ptrdiff_t(s.size())))
                return true;
        return false;
    }

private:
    std::span<const token_id> eos_;
    std::span<const std::vector<token_id>> stop_;
};

DECODEKIT_END_NAMESPACE
