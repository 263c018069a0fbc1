#pragma once
/// \file decoding/stop_strings.hpp
/// Text-level stop strings: the engine's detokenizer turns each generated token into bytes, and
/// a stop_string_matcher finds a stop string that may span any number of tokens while releasing
/// text as early as it is safe to stream.
///
/// Release rule: after each token, every byte is released except (a) the longest suffix of the
/// text that is a proper prefix of some stop string (it may still become a stop string) and (b)
/// an incomplete UTF-8 sequence at the end (a multi-byte character split across tokens). Held
/// bytes are released as soon as they can no longer begin a stop string (the match failed) or
/// complete their character. On a match, the text up to the start of the stop string is
/// released; the stop string and anything after it never are. Among stop strings completing in
/// the same token, the one that ends first in the text wins (ties: the longest); so of "ab" and
/// "abc", "ab" always stops first. At the end of generation, flush() releases what is held.
/// Bytes that are not valid UTF-8 are released as they are (never held forever).
///
/// Matching is one Knuth-Morris-Pratt automaton per stop string: O(bytes x stop strings) per
/// token, O(stop strings) state. Limits (checked by the params' check()): at most
/// max_stop_strings strings of 1 to max_stop_string_bytes bytes each.
///
/// The detokenizer must be a pure function of the token id (beam search calls it for candidate
/// tokens too) returning the token's bytes; the view must stay valid until the next call. Engines
/// whose tokenizer has context-dependent pieces (a leading space after BOS) pass the bytes they
/// would print.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// The engine's detokenizer: token id -> its bytes (valid until the next call).
using detokenize_fn = std::function<std::string_view(token_id)>;

/// Most stop strings a request may have.
inline constexpr std::size_t max_stop_strings = 64;
/// Longest stop string, in bytes.
inline constexpr std::size_t max_stop_string_bytes = 256;

namespace detail {
/// First problem with stop strings (too many, empty, too long, no detokenizer), fields named
/// "<owner>.stop_strings" / "<owner>.detokenize"; nullopt when valid.
inline std::optional<std::string> check_stop_strings(std::string_view owner,
                                                     std::span<const std::string> strings,
                                                     bool has_detokenizer) {
    const std::string o(owner);
    if (strings.size() > max_stop_strings)
        return range_message(o + ".stop_strings", "at most 64 strings", double(strings.size()));
    for (const auto& s : strings)
        if (s.empty() || s.size() > max_stop_string_bytes)
            return range_message(o + ".stop_strings", "strings of 1 to 256 bytes",
                                 double(s.size()));
    if (!strings.empty() && !has_detokenizer)
        return o + ".detokenize must be set when stop_strings is not empty";
    return std::nullopt;
}

/// Length of an incomplete UTF-8 sequence at the end of `s` (0 to 3 bytes): a lead byte
/// followed by fewer continuation bytes than it announces. Invalid bytes count as complete.
inline std::size_t incomplete_utf8_tail(std::string_view s) noexcept {
    const std::size_t n = s.size();
    for (std::size_t back = 1; back <= 4 && back <= n; ++back) {
        const auto c = static_cast<unsigned char>(s[n - back]);
        if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
        const std::size_t need = (c & 0xE0) == 0xC0   ? 2
                                 : (c & 0xF0) == 0xE0 ? 3
                                 : (c & 0xF8) == 0xF0 ? 4
                                                      : 1;  // ASCII or an invalid lead
        return back < need ? back : 0;
    }
    return 0;  // only continuation bytes (invalid): release them
}
}  // namespace detail

/// A compiled, immutable set of stop strings (the KMP failure tables), shared by matchers.
class stop_string_set {
public:
    explicit stop_string_set(std::span<const std::string> strings)
        : strings_(strings.begin(), strings.end()) {
        fail_.resize(strings_.size());
        for (std::size_t i = 0; i < strings_.size(); ++i) {
            const std::string& s = strings_[i];
            std::vector<std::uint16_t>& f = fail_[i];
            f.assign(s.size() + 1, 0);  // f[q]: longest proper border of s[0, q)
            std::size_t k = 0;
            for (std::size_t q = 1; q < s.size(); ++q) {
                while (k > 0 && s[q] != s[k]) k = f[k];
                if (s[q] == s[k]) ++k;
                f[q + 1] = std::uint16_t(k);
            }
        }
    }
    std::size_t size() const noexcept { return strings_.size(); }
    const std::string& operator[](std::size_t i) const noexcept { return strings_[i]; }
    /// The automaton of string i: from state q (matched prefix length), read byte c.
    std::size_t next(std::size_t i, std::size_t q, char c) const noexcept {
        const std::string& s = strings_[i];
        if (q == s.size()) q = fail_[i][q];  // a full match continues from its border
        while (q > 0 && s[q] != c) q = fail_[i][q];
        return s[q] == c ? q + 1 : 0;
    }
    /// The longest proper prefix of string i that state q leaves as a suffix of the text (q
    /// itself, or the border of a full match).
    std::size_t held_prefix(std::size_t i, std::size_t q) const noexcept {
        return q == strings_[i].size() ? fail_[i][q] : q;
    }

private:
    std::vector<std::string> strings_;
    std::vector<std::vector<std::uint16_t>> fail_;
};

/// Stop-string matching and safe text release for one sequence. Copyable (beam search forks it
/// with its beam): the compiled set is shared, the state is O(stop strings + held bytes).
class stop_string_matcher {
public:
    /// No stop strings: text passes through, only incomplete UTF-8 is held.
    stop_string_matcher() = default;
    explicit stop_string_matcher(std::span<const std::string> stop_strings)
        : set_(stop_strings.empty() ? nullptr
                                    : std::make_shared<const stop_string_set>(stop_strings)),
          state_(stop_strings.size(), 0) {}

    /// What push() released.
    struct released {
        std::string_view text;  ///< bytes now safe to stream (valid until the next call)
        bool matched = false;   ///< a stop string completed: text ends right before it
    };

    /// Appends one token's bytes. `stops_active` false (before min_new_tokens): a completed stop
    /// string is ignored and its bytes are released as ordinary text. After a match, further
    /// pushes release nothing.
    released push(std::string_view bytes, bool stops_active = true) {
        buf_.erase(0, released_);
        released_ = 0;
        if (matched_) return {{}, true};
        const std::size_t old = buf_.size();
        buf_.append(bytes.data(), bytes.size());
        std::size_t hold = 0;  // longest suffix that is a proper prefix of a stop string
        if (set_) {
            for (std::size_t pos = old; pos < buf_.size(); ++pos) {
                std::size_t best_len = 0;  // a stop string ending at pos (the longest)
                for (std::size_t i = 0; i < set_->size(); ++i) {
                    state_[i] = std::uint16_t(set_->next(i, state_[i], buf_[pos]));
                    if (state_[i] == (*set_)[i].size())
                        best_len = std::max<std::size_t>(best_len, state_[i]);
                }
                if (best_len > 0 && stops_active) {
                    matched_ = true;
                    released_ = buf_.size();  // everything is consumed by the next call
                    return {std::string_view(buf_).substr(0, pos + 1 - best_len), true};
                }
            }
            for (std::size_t i = 0; i < set_->size(); ++i)
                hold = std::max(hold, set_->held_prefix(i, state_[i]));
        }
        std::size_t end = buf_.size() - std::min(hold, buf_.size());
        end -= detail::incomplete_utf8_tail(std::string_view(buf_).substr(0, end));
        released_ = end;
        return {std::string_view(buf_).substr(0, end), false};
    }

    /// Releases every held byte (the end of generation without a match). The view directly
    /// follows the last push()'s text in the same buffer. Nothing after a match.
    std::string_view flush() noexcept {
        if (matched_) return {};
        const std::size_t from = released_;
        released_ = buf_.size();
        for (auto& q : state_) q = 0;
        return std::string_view(buf_).substr(from);
    }

    /// True once a stop string matched.
    bool matched() const noexcept { return matched_; }
    /// Bytes currently held back (not yet released).
    std::size_t held() const noexcept { return matched_ ? 0 : buf_.size() - released_; }

private:
    std::shared_ptr<const stop_string_set> set_;
    std::vector<std::uint16_t> state_;  // per stop string: matched prefix length
    std::string buf_;                   // [released by the last call | held]
    std::size_t released_ = 0;
    bool matched_ = false;
};

DECODEKIT_END_NAMESPACE
