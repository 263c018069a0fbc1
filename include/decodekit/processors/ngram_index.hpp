#pragma once
/// \file processors/ngram_index.hpp
/// ngram_index: the distinct n-grams (n >= 2) of a history, kept up to date as the history grows
/// and is cut back, answering "which tokens followed earlier occurrences of the last n - 1
/// tokens?" (no-repeat-ngram's question) without scanning the history.
///
/// Each distinct n-gram is one entry: its count and the position of its first occurrence.
/// Entries are found through seeded 64-bit hashes of their context (the first n - 1 tokens) and of
/// the whole n-gram (processors/token_counts.hpp), and every hash match is verified against the
/// tokens themselves, so a collision can never produce a false answer (only cost a comparison).
/// The first occurrence of an entry stays in the history as long as the entry does: a cut-back
/// removes the latest occurrences first.
/// Costs: append and cut-back O(n) per token added or removed (hashing, and the comparison that
/// finds an existing entry); a query O(n) plus O(n) per distinct follower it reports. Memory about
/// 64 bytes per distinct n-gram. Allocation only while the tables grow (amortized).

#include <decodekit/config.hpp>
#include <decodekit/processors/token_counts.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// The distinct n-grams of a history (see the file comment). Copyable (a copy is O(entries)).
class ngram_index {
public:
    /// \pre n >= 2 (the index of 1-grams is a token_counts)
    explicit ngram_index(std::size_t n = 2) noexcept : n_(n < 2 ? 2 : n) {}

    std::size_t n() const noexcept { return n_; }
    /// Number of distinct n-grams.
    std::size_t size() const noexcept { return by_gram_.size(); }
    /// Hash slots probed and tokens compared since construction (a cost counter).
    std::uint64_t operations() const noexcept {
        return ops_ + by_gram_.probes() + by_ctx_.probes();
    }

    /// Forgets every n-gram (keeps the memory).
    void clear() noexcept {
        grams_.clear();
        free_.clear();
        by_gram_.clear();
        by_ctx_.clear();
    }

    /// The index held the n-grams of h[0, from); adds those ending in h[from, h.size()).
    void append(std::span<const token_id> h, std::size_t from) {
        const token_id* d = h.data();
        auto at = [d](std::size_t p) noexcept { return d[p]; };
        const std::size_t m = n_ - 1;
        for (std::size_t p = from < m ? m : from; p < h.size(); ++p) add(at, p - m);
    }

    /// The index held the n-grams of a history of keep + removed.size() tokens whose last ones
    /// were `removed`, and h[0, keep) its first ones; drops the n-grams that end in `removed`.
    /// Returns false if one of them was not there (the index did not follow that history: the
    /// caller rebuilds; the index is then unspecified until clear()).
    bool cut_back(std::span<const token_id> h, std::size_t keep,
                  std::span<const token_id> removed) {
        const token_id* d = h.data();
        const token_id* r = removed.data();
        auto at = [d, r, keep](std::size_t p) noexcept { return p < keep ? d[p] : r[p - keep]; };
        const std::size_t m = n_ - 1, old_n = keep + removed.size();
        const std::size_t lo = keep < m ? m : keep;
        for (std::size_t p = old_n; p-- > lo;)  // latest first
            if (!remove(at, p - m)) return false;
        return true;
    }

    /// Calls f(t) once for each distinct token t that followed an earlier occurrence of the last
    /// n - 1 tokens of h. \pre the index holds the n-grams of h
    template <class F>
    void for_each_follower(std::span<const token_id> h, F&& f) const {
        if (h.size() < n_) return;
        const token_id* d = h.data();
        const std::size_t m = n_ - 1, s = h.size() - m;
        auto at = [d](std::size_t p) noexcept { return d[p]; };
        const std::uint64_t hc = context_hash(at, s);
        ops_ += m;
        const std::uint32_t head = find_context(hc);
        for (std::uint32_t g = head; g != none; g = grams_[g].next) {
            const gram& e = grams_[g];
            if (e.context == hc && same(at, e.pos, s, m)) f(d[e.pos + m]);
        }
    }

private:
    static constexpr std::uint32_t none = detail::hash_slots::none;
    struct gram {
        std::uint64_t context = 0;  // hash of its first n - 1 tokens
        std::size_t pos = 0;        // start of its first occurrence
        std::uint32_t count = 0;    // occurrences (0: a free entry)
        std::uint32_t prev = none;  // list of the entries with the same context hash
        std::uint32_t next = none;
    };

    template <class At>
    std::uint64_t context_hash(At at, std::size_t i) const noexcept {
        std::uint64_t h = detail::mix64(detail::hash_seed() + 0x9E3779B97F4A7C15ull);
        for (std::size_t k = 0; k < n_ - 1; ++k)
            h = detail::mix64(h ^ static_cast<std::uint32_t>(at(i + k)));
        return h;
    }
    static std::uint64_t gram_hash(std::uint64_t context, token_id next) noexcept {
        return detail::mix64(context ^
                             (std::uint64_t{static_cast<std::uint32_t>(next)} << 32 | 0x5BD1E995u));
    }
    /// True when the `len` tokens at a and at b are equal.
    template <class At>
    bool same(At at, std::size_t a, std::size_t b, std::size_t len) const noexcept {
        std::size_t k = 0;
        while (k < len && at(a + k) == at(b + k)) ++k;
        ops_ += k + 1;
        return k == len;
    }
    std::uint32_t find_context(std::uint64_t hc) const noexcept {
        return by_ctx_.find(hc, [&](std::uint32_t g) noexcept { return grams_[g].context == hc; });
    }
    /// The entry of the n-gram starting at i, or none.
    template <class At>
    std::uint32_t find_gram(At at, std::uint64_t hc, std::uint64_t hg, std::size_t i) const {
        return by_gram_.find(hg, [&](std::uint32_t g) noexcept {
            return grams_[g].context == hc && same(at, grams_[g].pos, i, n_);
        });
    }

    template <class At>
    void add(At at, std::size_t i) {
        const std::uint64_t hc = context_hash(at, i);
        const std::uint64_t hg = gram_hash(hc, at(i + n_ - 1));
        ops_ += n_;
        const std::uint32_t found = find_gram(at, hc, hg, i);
        if (found != none) {
            ++grams_[found].count;
            return;
        }
        std::uint32_t g;
        if (!free_.empty()) {
            g = free_.back();
            free_.pop_back();
        } else {
            g = static_cast<std::uint32_t>(grams_.size());
            grams_.emplace_back();
            if (free_.capacity() < grams_.capacity()) free_.reserve(grams_.capacity());
        }
        grams_[g] = {.context = hc, .pos = i, .count = 1};
        by_gram_.insert(hg, g);
        const std::uint32_t head = find_context(hc);
        if (head == none) {
            by_ctx_.insert(hc, g);
        } else {  // link after the head (the head stays what by_ctx_ points to)
            gram& h = grams_[head];
            grams_[g].prev = head;
            grams_[g].next = h.next;
            if (h.next != none) grams_[h.next].prev = g;
            h.next = g;
        }
    }

    template <class At>
    bool remove(At at, std::size_t i) {
        const std::uint64_t hc = context_hash(at, i);
        const std::uint64_t hg = gram_hash(hc, at(i + n_ - 1));
        ops_ += n_;
        const std::uint32_t g = find_gram(at, hc, hg, i);
        if (g == none) return false;
        gram& e = grams_[g];
        if (--e.count > 0) return true;
        if (e.prev == none) {  // the head: its successor becomes the head
            if (e.next != none) {
                by_ctx_.relabel(hc, g, e.next);
                grams_[e.next].prev = none;
            } else {
                by_ctx_.erase(hc, g);
            }
        } else {
            grams_[e.prev].next = e.next;
            if (e.next != none) grams_[e.next].prev = e.prev;
        }
        e.prev = e.next = none;
        by_gram_.erase(hg, g);
        free_.push_back(g);  // reserved as grams_ grew (a copy may reallocate once)
        return true;
    }

    std::size_t n_;
    std::vector<gram> grams_;
    std::vector<std::uint32_t> free_;
    detail::hash_slots by_gram_;  // hash of the n-gram -> entry
    detail::hash_slots by_ctx_;   // hash of the context -> first entry of its list
    mutable std::uint64_t ops_ = 0;
};

DECODEKIT_END_NAMESPACE
