#pragma once
/// \file processors/token_counts.hpp
/// The small hash tables per-sequence processor state is kept in: hash_slots (an open-addressing
/// index from a 64-bit hash to 32-bit values, linear probing, deletion by backward shift) and
/// token_counts (token -> count over the distinct tokens seen, dense, O(distinct tokens)).
///
/// Hashes are seeded once per process (from addresses that ASLR randomises and the clock), so a
/// client that chooses token histories cannot aim them at one probe chain. Only the table layout
/// depends on the seed: the iteration order of token_counts (insertion order, with swap-remove)
/// and every result are deterministic. Growth doubles the slots at load 3/4 (amortized O(1) per
/// insert; 8 bytes a slot, so 10.7 to 21 bytes of slots per value); nothing shrinks, so a table
/// reused across cut-backs and rebuilds stops allocating once it reached its largest size. Not safe
/// to share between threads, const lookups included: they update a probe counter (like the
/// processors built on these tables, one object serves one sequence, one call at a time).

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {

/// A bijective 64-bit mixer (the splitmix64 finalizer).
inline std::uint64_t mix64(std::uint64_t z) noexcept {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/// The process's hash seed (fixed after the first call).
inline std::uint64_t hash_seed() noexcept {
    static const std::uint64_t seed = [] {
        static const char anchor = 0;
        const char local = 0;
        const auto ticks =
            static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
        return mix64(reinterpret_cast<std::uintptr_t>(&anchor) ^
                     mix64(reinterpret_cast<std::uintptr_t>(&local) ^ mix64(ticks)));
    }();
    return seed;
}

/// The seeded hash of one token.
inline std::uint64_t token_hash(token_id t) noexcept {
    return mix64(hash_seed() ^ static_cast<std::uint32_t>(t));
}

/// Open-addressing index: 64-bit hashes to 32-bit values (several values may share a hash; the
/// caller tells them apart with a predicate). Slots hold the hash's low 32 bits and the value.
/// Every probe is counted in probes() (a cost counter for tests and monitoring).
class hash_slots {
public:
    static constexpr std::uint32_t none = 0xFFFFFFFFu;

    /// Number of values held.
    std::size_t size() const noexcept { return size_; }
    /// Slots probed since construction.
    std::uint64_t probes() const noexcept { return probes_; }

    /// The first value whose hash is `h` and for which match(value) holds, or none.
    template <class Match>
    std::uint32_t find(std::uint64_t h, Match&& match) const {
        if (slots_.empty()) return none;
        const std::uint32_t frag = static_cast<std::uint32_t>(h);
        for (std::size_t i = frag & mask_;; i = (i + 1) & mask_) {
            ++probes_;
            const slot& s = slots_[i];
            if (s.value == none) return none;
            if (s.frag == frag && match(s.value)) return s.value;
        }
    }
    /// Adds (h, value). \pre value != none
    void insert(std::uint64_t h, std::uint32_t value) {
        if ((size_ + 1) * 4 > slots_.size() * 3) grow();
        place(static_cast<std::uint32_t>(h), value);
        ++size_;
    }
    /// Removes (h, value) if present.
    void erase(std::uint64_t h, std::uint32_t value) noexcept {
        std::size_t i = locate(h, value);
        if (i == npos) return;
        for (std::size_t j = (i + 1) & mask_;; j = (j + 1) & mask_) {
            ++probes_;
            if (slots_[j].value == none) break;
            const std::size_t home = slots_[j].frag & mask_;
            // slot j may move back to i unless its home lies cyclically in (i, j]
            const bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
            if (stays) continue;
            slots_[i] = slots_[j];
            i = j;
        }
        slots_[i].value = none;
        --size_;
    }
    /// Changes the value of (h, from) to `to` if present.
    void relabel(std::uint64_t h, std::uint32_t from, std::uint32_t to) noexcept {
        const std::size_t i = locate(h, from);
        if (i != npos) slots_[i].value = to;
    }
    /// Removes every value (keeps the slots' memory). O(slots).
    void clear() noexcept {
        for (slot& s : slots_) s.value = none;
        size_ = 0;
    }

private:
    struct slot {
        std::uint32_t frag = 0;
        std::uint32_t value = none;
    };
    std::size_t locate(std::uint64_t h, std::uint32_t value) const noexcept {
        if (slots_.empty()) return npos;
        const std::uint32_t frag = static_cast<std::uint32_t>(h);
        for (std::size_t i = frag & mask_;; i = (i + 1) & mask_) {
            ++probes_;
            if (slots_[i].value == none) return npos;
            if (slots_[i].frag == frag && slots_[i].value == value) return i;
        }
    }
    void place(std::uint32_t frag, std::uint32_t value) noexcept {
        std::size_t i = frag & mask_;
        while (slots_[i].value != none) {
            ++probes_;
            i = (i + 1) & mask_;
        }
        slots_[i] = {frag, value};
    }
    void grow() {
        std::vector<slot> old;
        old.swap(slots_);
        slots_.assign(old.empty() ? 16 : old.size() * 2, slot{});
        mask_ = slots_.size() - 1;
        for (const slot& s : old)
            if (s.value != none) place(s.frag, s.value);
    }

    std::vector<slot> slots_;
    std::size_t mask_ = 0;
    std::size_t size_ = 0;
    mutable std::uint64_t probes_ = 0;
};

}  // namespace detail

/// Counts of tokens (any token_id value): the distinct tokens with a count > 0, in a dense array
/// (iteration O(distinct)), and a hash index to them. add/remove are O(1) expected; memory is
/// 8 bytes per distinct token in the arrays (up to twice that after a doubling) plus 10.7 to 21
/// in the index (about 22 at 300 tokens). Copyable (a copy is O(distinct)).
class token_counts {
public:
    /// Adds one occurrence of t.
    void add(token_id t) {
        const std::uint64_t h = detail::token_hash(t);
        const std::uint32_t i = find(h, t);
        if (i != detail::hash_slots::none) {
            ++counts_[i];
            return;
        }
        index_.insert(h, static_cast<std::uint32_t>(keys_.size()));
        keys_.push_back(t);
        counts_.push_back(1);
    }
    /// Removes one occurrence of t; returns false (and changes nothing) if t has none.
    bool remove(token_id t) noexcept {
        const std::uint64_t h = detail::token_hash(t);
        const std::uint32_t i = find(h, t);
        if (i == detail::hash_slots::none) return false;
        if (--counts_[i] > 0) return true;
        index_.erase(h, i);
        const std::uint32_t last = static_cast<std::uint32_t>(keys_.size() - 1);
        if (i != last) {  // move the last entry into the hole
            index_.relabel(detail::token_hash(keys_[last]), last, i);
            keys_[i] = keys_[last];
            counts_[i] = counts_[last];
        }
        keys_.pop_back();
        counts_.pop_back();
        return true;
    }
    /// The count of t (0 if unseen).
    std::uint32_t count(token_id t) const noexcept {
        const std::uint32_t i = find(detail::token_hash(t), t);
        return i == detail::hash_slots::none ? 0u : counts_[i];
    }
    /// Forgets every token (keeps the memory).
    void clear() noexcept {
        keys_.clear();
        counts_.clear();
        index_.clear();
    }
    /// Number of distinct tokens with a count > 0.
    std::size_t size() const noexcept { return keys_.size(); }
    bool empty() const noexcept { return keys_.empty(); }
    /// The distinct tokens, and their counts at the same positions.
    std::span<const token_id> tokens() const noexcept { return keys_; }
    std::span<const std::uint32_t> counts() const noexcept { return counts_; }
    /// Hash slots probed since construction (a cost counter).
    std::uint64_t probes() const noexcept { return index_.probes(); }

private:
    std::uint32_t find(std::uint64_t h, token_id t) const noexcept {
        return index_.find(h, [&](std::uint32_t i) noexcept { return keys_[i] == t; });
    }

    std::vector<token_id> keys_;
    std::vector<std::uint32_t> counts_;
    detail::hash_slots index_;
};

DECODEKIT_END_NAMESPACE
