#pragma once
/// \file decoding/stop.hpp
/// Token-level stop conditions shared by every strategy: EOS ids and stop sequences, checked on
/// generated tokens only (decoding/contract.hpp has the rules). Negative EOS ids are accepted and
/// ignored (no generated token is negative), as sampling_params accepts them.

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
/// First problem with stop conditions (an empty stop sequence or a negative id in one), named
/// "<owner>.stop_sequences"; nullopt when valid. EOS ids are never a problem: negative ones are
/// ignored (they cannot be generated).
inline std::optional<std::string> check_stop_conditions(
    std::string_view owner, std::span<const token_id> /*eos_ids*/,
    std::span<const std::vector<token_id>> stop_sequences = {}) {
    const std::string o(owner);
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
    /// True when `generated` followed by `next` ends with one of the stop sequences.
    bool completes_stop_sequence(std::span<const token_id> generated,
                                 token_id next) const noexcept {
        for (const auto& s : stop_)
            if (!s.empty() && s.back() == next && s.size() - 1 <= generated.size() &&
                std::equal(s.begin(), s.end() - 1, generated.end() - std::ptrdiff_t(s.size() - 1)))
                return true;
        return false;
    }
    /// True when there is at least one stop sequence.
    bool has_stop_sequences() const noexcept { return !stop_.empty(); }

private:
    std::span<const token_id> eos_;
    std::span<const std::vector<token_id>> stop_;
};

DECODEKIT_END_NAMESPACE
