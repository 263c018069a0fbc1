#pragma once
/// \file candidates.hpp
/// The working set after truncation: token ids and their logits, struct of arrays, with a
/// capacity fixed once (the vocabulary size) so filling it never allocates.

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
/// A candidate entry as one value (sort scratch; the sparse processors' patches).
struct scored {
    float logit;
    token_id id;
};
/// Logit descending, ties by ascending id.
inline bool scored_before(const scored& a, const scored& b) noexcept {
    return a.logit > b.logit || (a.logit == b.logit && a.id < b.id);
}
}  // namespace detail

/// Token ids and logits of a candidate set. Capacity is set at construction; size() <= capacity().
/// Also owns a scratch of capacity() 64-bit sort keys that the selection kernels use, so they
/// never allocate.
class candidates {
public:
    candidates() = default;
    explicit candidates(std::size_t capacity)
        : ids_(capacity), logits_(capacity), keys_(capacity) {}

    std::size_t size() const noexcept { return size_; }
    std::size_t capacity() const noexcept { return ids_.size(); }
    bool empty() const noexcept { return size_ == 0; }

    void clear() noexcept { size_ = 0; }
    /// \pre size() < capacity()
    void push_back(token_id id, float logit) noexcept {
        DECODEKIT_ASSERT(size_ < ids_.size(), "candidates: capacity exceeded");
        ids_[size_] = id;
        logits_[size_] = logit;
        ++size_;
    }
    /// Sets the size after the caller wrote ids()/logits() storage directly.
    /// \pre n <= capacity()
    void resize(std::size_t n) noexcept {
        DECODEKIT_ASSERT(n <= ids_.size(), "candidates: resize beyond capacity");
        size_ = n;
    }

    std::span<token_id> ids() noexcept { return {ids_.data(), size_}; }
    std::span<const token_id> ids() const noexcept { return {ids_.data(), size_}; }
    std::span<float> logits() noexcept { return {logits_.data(), size_}; }
    std::span<const float> logits() const noexcept { return {logits_.data(), size_}; }

    /// Whole storage, for kernels that write then call resize().
    token_id* id_storage() noexcept { return ids_.data(); }
    float* logit_storage() noexcept { return logits_.data(); }
    /// Kernel scratch of capacity() 64-bit keys (contents unspecified between calls).
    std::uint64_t* key_storage() noexcept { return keys_.data(); }

private:
    std::vector<token_id> ids_;
    std::vector<float> logits_;
    std::vector<std::uint64_t> keys_;
    std::size_t size_ = 0;
};

DECODEKIT_END_NAMESPACE
