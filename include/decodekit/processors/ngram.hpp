#pragma once
/// \file processors/ngram.hpp
/// Hugging Face's no_repeat_ngram_size and bad_words_ids (banned token sequences).
///
/// Both ban by writing -inf. Token ids outside [0, V) are compared like any other value (an
/// n-gram or a sequence prefix may contain them) but are never written. Cost: no-repeat-ngram
/// O(N * n) over the history, banned sequences O(total sequence length); no allocation.
/// Statefulness: none; the caller passes the history (prompt included, as HF does) each call.

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <limits>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
inline void ban_token(std::span<float> logits, token_id t) noexcept {
    if (t >= 0 && static_cast<std::size_t>(t) < logits.size())
        logits[static_cast<std::size_t>(t)] = -std::numeric_limits<float>::infinity();
}
}  // namespace detail

/// Bans every token that would complete an n-gram already present in the history (n = 0:
/// disabled; n = 1 bans every token of the history; nothing is banned while the history is
/// shorter than n - 1).
inline void apply_no_repeat_ngram(std::span<float> logits, std::span<const token_id> history,
                                  std::size_t n) noexcept {
    if (n == 0) return;
    const std::size_t len = history.size();
    const std::size_t m = n - 1;  // length of the prefix that must match the history's tail
    if (len < n) return;          // no complete n-gram yet
    const token_id* const h = history.data();
    const token_id* const tail = h + (len - m);
    for (std::size_t i = 0; i + n <= len; ++i) {
        std::size_t j = 0;
        while (j < m && h[i + j] == tail[j]) ++j;
        if (j == m) detail::ban_token(logits, h[i + m]);
    }
}

/// Bans token sequences: a one-token sequence is always banned; a longer one bans its last
/// token when the history ends with the rest of it. Empty sequences are ignored.
inline void apply_banned_sequences(std::span<float> logits, std::span<const token_id> history,
                                   std::span<const std::vector<token_id>> sequences) noexcept {
    for (const std::vector<token_id>& s : sequences) {
        if (s.empty()) continue;
        const std::size_t m = s.size() - 1;
        if (m > history.size()) continue;
        const token_id* const tail = history.data() + (history.size() - m);
        std::size_t j = 0;
        while (j < m && tail[j] == s[j]) ++j;
        if (j == m) detail::ban_token(logits, s[m]);
    }
}

DECODEKIT_END_NAMESPACE
