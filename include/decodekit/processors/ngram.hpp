#pragma once
/// \file processors/ngram.hpp
/// Hugging Face's no_repeat_ngram_size and bad_words_ids (banned token sequences).
///
/// Both ban by writing -inf. Token ids outside [0, V) are compared like any other value (an
/// n-gram or a sequence prefix may contain them) but are never written.
///
/// Two forms each:
///   apply_no_repeat_ngram, apply_banned_sequences -- stateless: the caller passes the history
///       (prompt included, as HF does) each call. No-repeat-ngram O(N * n) over the history,
///       banned sequences O(total sequence length); no allocation.
///   no_repeat_ngram_processor -- per sequence (processors/processor.hpp): an incremental index
///       of the history's n-grams (processors/ngram_index.hpp; n = 1: the counts of the seen
///       tokens) updated by the history hooks, O(n) per token added or removed; apply() and
///       touched() cost O(n) plus O(n) per token banned, whatever the history length.
///   banned_sequences_processor -- stateless; O(total sequence length) per call; with Hugging
///       Face's rule that a one-token sequence equal to an EOS id is not banned (a word list
///       cannot forbid ending; banned_tokens_processor can).

#include <decodekit/config.hpp>
#include <decodekit/processors/ngram_index.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/processors/token_counts.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <utility>
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

/// Hugging Face's no_repeat_ngram_size as a per-sequence processor with an incremental n-gram
/// index (see the file comment). Gives apply_no_repeat_ngram's result on c.history. Sparse:
/// touched() declares the tokens it bans. Follows the history through the hooks; copying it
/// copies its index (O(distinct n-grams)).
///
/// Safety net: the processor records the history length its index belongs to. A hook whose sizes
/// do not fit that record rebuilds from c.history; apply() on a history of another length
/// rebuilds first (O(history * n)), and touched() then declares every id of c.history. Results
/// stay exact; only the cost changes.
/// One call at a time: even the const members update cost counters (operations()).
class no_repeat_ngram_processor {
public:
    /// n = 0 disables it; n = 1 bans every token of the history.
    explicit no_repeat_ngram_processor(std::size_t n) noexcept : n_(n), index_(n) {}

    std::size_t n() const noexcept { return n_; }
    /// The index of the n-grams (n >= 2) and the seen tokens (n = 1), as of the last hook.
    const ngram_index& index() const noexcept { return index_; }
    const token_counts& seen() const noexcept { return seen_; }

    /// Bans every token that would complete an n-gram already in c.history.
    void apply(std::span<float> logits, const processor_context& c) {
        if (n_ == 0) return;
        if (!in_sync(c)) reset(c);
        for_each_ban(c, [&](token_id t) noexcept { detail::ban_token(logits, t); });
    }
    /// Declares the tokens apply() bans (every id of c.history if out of step).
    void touched(const processor_context& c, token_sink& out) const {
        if (n_ == 0) return;
        if (!in_sync(c)) {
            out(c.history);
            return;
        }
        for_each_ban(c, [&](token_id t) noexcept { out(t); });
    }

    /// History hooks (processors/processor.hpp).
    void append(std::span<const token_id> added, const processor_context& c) {
        if (n_ == 0) return;
        if (!built_ || len_ + added.size() != c.history.size()) {
            reset(c);
            return;
        }
        if (n_ == 1) {
            for (token_id t : added) seen_.add(t);
        } else {
            index_.append(c.history, len_);
        }
        ops_ += added.size();
        len_ = c.history.size();
    }
    void cut_back(std::size_t keep, std::span<const token_id> removed, const processor_context& c) {
        if (n_ == 0) return;
        if (!built_ || keep + removed.size() != len_ || keep > c.history.size()) {
            built_ = false;  // the next append or apply rebuilds
            return;
        }
        bool ok = true;
        if (n_ == 1) {
            for (token_id t : removed) ok &= seen_.remove(t);
        } else {
            ok = index_.cut_back(c.history, keep, removed);
        }
        ops_ += removed.size();
        built_ = ok;
        len_ = keep;
    }
    void reset(const processor_context& c) {
        if (n_ == 0) return;
        seen_.clear();
        index_.clear();
        if (n_ == 1) {
            for (token_id t : c.history) seen_.add(t);
        } else {
            index_.append(c.history, 0);
        }
        ops_ += c.history.size();
        len_ = c.history.size();
        built_ = true;
    }

    /// Work done since construction: tokens handled by the hooks, hash slots probed, tokens
    /// compared and entries visited (a cost counter for tests and monitoring).
    std::uint64_t operations() const noexcept {
        return ops_ + seen_.probes() + index_.operations();
    }

private:
    bool in_sync(const processor_context& c) const noexcept {
        return built_ && len_ == c.history.size();
    }
    template <class F>
    void for_each_ban(const processor_context& c, F&& f) const {
        if (n_ == 1) {
            for (token_id t : seen_.tokens()) f(t);
            ops_ += seen_.size();
        } else {
            index_.for_each_follower(c.history, [&](token_id t) {
                ++ops_;
                f(t);
            });
        }
    }

    std::size_t n_;
    token_counts seen_;  // n == 1
    ngram_index index_;  // n >= 2
    bool built_ = false;
    std::size_t len_ = 0;  // history length the index belongs to
    mutable std::uint64_t ops_ = 0;
};

/// apply_banned_sequences as a processor, with Hugging Face's EOS rule: a one-token sequence
/// equal to one of `eos_ids` is dropped (bad_words_ids never forbids ending). Empty sequences are
/// ignored. Stateless; sparse: touched() declares the last token of every kept sequence. The
/// lists are shared between copies (a copy is O(1)). O(total sequence length) per call.
class banned_sequences_processor {
public:
    explicit banned_sequences_processor(std::vector<std::vector<token_id>> sequences,
                                        std::span<const token_id> eos_ids = {}) {
        auto l = std::make_shared<lists>();
        for (std::vector<token_id>& s : sequences) {
            if (s.empty()) continue;
            if (s.size() == 1) {
                if (std::find(eos_ids.begin(), eos_ids.end(), s[0]) == eos_ids.end())
                    l->singles.push_back(s[0]);
            } else {
                l->longer.push_back(std::move(s));
            }
        }
        l_ = std::move(l);
    }

    /// The one-token sequences kept (banned whatever the history).
    std::span<const token_id> single_tokens() const noexcept { return l_->singles; }
    /// The sequences of two tokens or more.
    std::span<const std::vector<token_id>> longer_sequences() const noexcept { return l_->longer; }

    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        for (token_id t : l_->singles) detail::ban_token(logits, t);
        apply_banned_sequences(logits, c.history, l_->longer);
    }
    void touched(const processor_context&, token_sink& out) const {
        out(l_->singles);
        for (const std::vector<token_id>& s : l_->longer) out(s.back());
    }

private:
    struct lists {
        std::vector<token_id> singles;
        std::vector<std::vector<token_id>> longer;
    };
    std::shared_ptr<const lists> l_;
};

DECODEKIT_END_NAMESPACE
