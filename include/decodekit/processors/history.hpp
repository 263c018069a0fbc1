#pragma once
/// \file processors/history.hpp
/// How per-sequence state follows its sequence's history: one mechanism for every stateful part
/// (penalty counts, the n-gram index, user processors, constraints, MTP module caches).
///
/// A stateful component sees the history of its sequence through the calls it gets (prompt +
/// generated so far). Between two calls the history normally grows by a few tokens (append); a
/// speculative rejection cuts it back; a beam fork or a new request replaces it. history_tracker
/// compares each call's history with what it saw last and reports the change as
///   keep   : tokens [0, keep) are unchanged,
///   removed: the tokens that were at [keep, old length) (oldest first),
///   added  : history[keep, new length),
/// or as a rebuild when it cannot follow (the first call, a change deeper than its journal, or
/// after reset()). The component then applies cut_back(removed) and append(added) to its state,
/// or rebuilds it from the whole history. Cost per call: O(added + removed) plus a comparison of
/// the journal window (at most journal_size() tokens), never a rescan of the history; a rebuild
/// is O(history).
///
/// The comparison is a safety net, not a proof: a caller that rewrites tokens older than the
/// journal while keeping the journal's tokens is not detected. Callers that rewrite histories
/// (a slot reused for another request) call reset() or use a fresh component.
///
/// A fork (a beam taking its parent's sequence) copies the parent's component: the copy's
/// tracker then follows the child's history from the parent's.

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// The difference between a history and the one a tracker saw last.
struct history_change {
    bool rebuild = true;                  ///< cannot follow: rebuild from the whole history
    std::size_t keep = 0;                 ///< tokens [0, keep) unchanged (0 when rebuild)
    std::span<const token_id> removed{};  ///< tokens that were at [keep, old length), in order
    std::span<const token_id> added{};    ///< history[keep, new length) (the whole history when
                                          ///< rebuild)
};

/// Follows one sequence's history across calls with a journal of its last journal_size() tokens.
/// Copyable (a fork copies it). Memory: 4 bytes per journal entry.
class history_tracker {
public:
    /// The shortest journal.
    static constexpr std::size_t min_journal = 8;
    /// Default journal length: the deepest cut-back followed without a rebuild (a speculative
    /// round verifies at most 256 drafts).
    static constexpr std::size_t default_journal = 512;

    /// A tracker with a journal of `journal` tokens (allocated on the first sync()).
    explicit history_tracker(std::size_t journal = default_journal)
        : journal_(std::max<std::size_t>(journal, min_journal)) {}

    /// Compares `history` with the last one seen, records it as seen, and returns the change.
    /// The spans of the result view `history` and the tracker's own scratch: valid until the next
    /// call. Allocates only while the removed-token scratch grows (bounded by the journal).
    history_change sync(std::span<const token_id> history) {
        if (ring_.empty()) ring_.resize(journal_);
        const std::size_t n = history.size(), s = len_;
        history_change ch;
        if (seen_) {
            const std::size_t lo = from_;  // first position still in the journal
            const std::size_t c = std::min(n, s);
            // where the histories part, within the journal window (O(journal), never
            // O(history)); a change reaching the journal's first position, or a history that
            // ends before the window, cannot be followed
            const std::size_t d = c >= lo ? first_difference(history, lo, c) : c;
            if (c >= lo && !(d == lo && lo > 0)) {
                removed_.clear();
                for (std::size_t p = d; p < s; ++p) removed_.push_back(at(p));
                ch.rebuild = false;
                ch.keep = d;
                ch.removed = removed_;
                ch.added = history.subspan(d);
            }
        }
        const std::size_t first_kept = n > ring_.size() ? n - ring_.size() : 0;
        if (ch.rebuild) {
            ch.keep = 0;
            ch.added = history;
            from_ = first_kept;
        } else {
            // positions below the old window stay lost after a cut-back: the window only shrinks
            from_ = std::min(std::max(from_, first_kept), n);
        }
        for (std::size_t p = std::max(ch.keep, first_kept); p < n; ++p) at(p) = history[p];
        len_ = n;
        seen_ = true;
        return ch;
    }

    /// Forgets what was seen: the next sync() is a rebuild.
    void reset() noexcept {
        seen_ = false;
        len_ = 0;
        from_ = 0;
    }
    /// Length of the history seen last (0 before the first sync or after reset()).
    std::size_t length() const noexcept { return len_; }
    /// The most tokens a cut-back may remove without a rebuild (fewer after earlier cut-backs,
    /// until appends refill the journal).
    std::size_t journal_size() const noexcept { return journal_; }

private:
    token_id& at(std::size_t pos) noexcept { return ring_[pos % ring_.size()]; }
    token_id at(std::size_t pos) const noexcept { return ring_[pos % ring_.size()]; }
    /// First position in [lo, c) where the journal and `h` differ (c if none): the ring's two
    /// contiguous runs compared in order (one division per call, not one per position).
    std::size_t first_difference(std::span<const token_id> h, std::size_t lo,
                                 std::size_t c) const noexcept {
        std::size_t p = lo, i = lo % ring_.size();
        while (p < c) {
            const std::size_t run = std::min(c - p, ring_.size() - i);
            const token_id* r = ring_.data() + i;
            const token_id* q = h.data() + p;
            for (std::size_t j = 0; j < run; ++j)
                if (r[j] != q[j]) return p + j;
            p += run;
            i = 0;
        }
        return c;
    }

    std::size_t journal_;
    std::vector<token_id> ring_;     // ring_[p % size]: token at position p, for the last size
    std::vector<token_id> removed_;  // scratch of the last change's removed tokens
    std::size_t len_ = 0;
    std::size_t from_ = 0;  // ring_ holds the tokens of positions [from_, len_)
    bool seen_ = false;
};

DECODEKIT_END_NAMESPACE
