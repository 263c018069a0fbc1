#pragma once
/// \file sampling/workspace.hpp
/// sampling_workspace: the O(vocabulary) scratch a sampling call works in (the candidate arrays,
/// their weights, a processed copy of the row, the full-row draw's block sums, ...). It holds no
/// state between calls: one workspace serves any number of samplers, one call at a time. A
/// sampler uses its thread's workspace (this_thread()) unless a call is given one, so what a
/// live request holds is O(its params) plus its history state, not O(vocabulary).
/// Buffers grow on demand to the largest vocabulary seen and never shrink; growing is the only
/// allocation, so a warm workspace makes sampling allocation-free.
/// Views a call returns into a workspace (sampler::distribution()) stay valid until the next call
/// on that workspace: on the default workspace, the next sampler call on the same thread.
/// A call that finds its workspace inside another call (a sampler called from a processor or
/// step of another sampler on the same thread, or one workspace passed to two threads) does
/// nothing and reports sample_status::concurrent_use: give such a call its own workspace.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/processors/dry.hpp>
#include <decodekit/processors/penalties.hpp>
#include <decodekit/types.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

namespace detail {
/// A flag set while an object is inside a call; copies are fresh, idle flags (so its owner stays
/// copyable). One atomic exchange per call.
class in_use_flag {
public:
    in_use_flag() = default;
    in_use_flag(const in_use_flag&) noexcept {}
    in_use_flag& operator=(const in_use_flag&) noexcept { return *this; }
    /// True when the caller may enter (the flag was idle; it is now set).
    bool try_enter() noexcept { return !busy_.exchange(true, std::memory_order_acquire); }
    void leave() noexcept { busy_.store(false, std::memory_order_release); }

private:
    std::atomic<bool> busy_{false};
};
/// Holds an in_use_flag for one scope (entered() tells whether it got it).
class in_use_scope {
public:
    explicit in_use_scope(in_use_flag& f) noexcept : f_(f), ok_(f.try_enter()) {}
    ~in_use_scope() {
        if (ok_) f_.leave();
    }
    in_use_scope(const in_use_scope&) = delete;
    in_use_scope& operator=(const in_use_scope&) = delete;
    bool entered() const noexcept { return ok_; }

private:
    in_use_flag& f_;
    bool ok_;
};
/// Grows `v` to at least n elements (value-initialised), never shrinks.
template <class T>
void grow(std::vector<T>& v, std::size_t n) {
    if (v.size() < n) v.resize(n);
}
}  // namespace detail

/// How often the selection steps' exactness tiers decided a kept set (sampling/steps/
/// selection.hpp; kernels::exactness_tier): every selection step's run adds 1 to `runs` and to
/// the counter of its tier when that is not the first (float_bound). Diagnostics for benchmarks
/// (the fallback rate per row shape); they accumulate until reset by the caller.
struct selection_counters {
    std::uint64_t runs = 0;
    std::uint64_t corrected = 0;    ///< a read pass with no exponential decided (top-p's
                                    ///< corrected pass, typical's compensated pass)
    std::uint64_t double_pass = 0;  ///< a double-precision pass over the set decided
    std::uint64_t reference = 0;    ///< the reference's own arithmetic decided
};

/// Scratch of sampling calls (see the file comment). Not thread-safe: one call at a time.
class sampling_workspace {
public:
    /// Entries of one block of the full-row draw.
    static constexpr std::size_t draw_block = 2048;

    sampling_workspace() = default;
    /// A workspace already sized for `vocab_size`.
    explicit sampling_workspace(std::size_t vocab_size) { reserve(vocab_size); }

    /// The calling thread's workspace (created empty on first use, freed at thread exit).
    static sampling_workspace& this_thread() noexcept {
        thread_local sampling_workspace ws;
        return ws;
    }

    /// Sizes the buffers every call uses for rows of `vocab_size` entries (no-op when large
    /// enough). The feature buffers (the selection steps' second set, the sparse marks, the raw
    /// top-n, the penalty and DRY scratch) grow when first used.
    void reserve(std::size_t vocab_size) {
        if (vocab_size <= vocab_) return;
        vocab_ = vocab_size;
        cand = candidates(vocab_size);
        detail::grow(sorted, vocab_size);
        detail::grow(weights, vocab_size);
        const std::size_t nblocks = (vocab_size + draw_block - 1) / draw_block;
        detail::grow(bmax, nblocks);
        detail::grow(bsum, nblocks);
        detail::grow(block_buf, draw_block);
    }
    /// The vocabulary size the every-call buffers are sized for.
    std::size_t vocab_size() const noexcept { return vocab_; }

    /// The selection steps' second candidate set (a kernel's output when it runs on the kept
    /// entries; sampling/steps/selection.hpp), grown on first use.
    candidates& selection() {
        if (sel.capacity() < vocab_) sel = candidates(vocab_);
        return sel;
    }
    /// The processed-row copy.
    std::span<float> row_copy() {
        detail::grow(row, vocab_);
        return {row.data(), vocab_};
    }
    /// The sparse processors' buffers: the declared-id bits (all 0 between calls), touched list,
    /// patches and the unpatched bits (all 1 between calls).
    void reserve_sparse() {
        const std::size_t words = (vocab_ + 31) / 32;
        if (seen.size() < words) seen.resize(words, 0u);
        if (unpatched.size() < words) unpatched.resize(words, ~0u);
        detail::grow(touched, vocab_);
        detail::grow(patches, vocab_);
    }
    /// The raw top-n candidates.
    candidates& raw_top() {
        if (alt.capacity() < vocab_) alt = candidates(vocab_);
        return alt;
    }
    /// The penalty counters (all 0 between calls).
    penalty_workspace& penalties() {
        if (pen.vocab_size() < vocab_) pen = penalty_workspace(vocab_);
        return pen;
    }
    /// The DRY scratch.
    dry_workspace& dry() {
        if (dry_.vocab_size() < vocab_) dry_ = dry_workspace(vocab_);
        return dry_;
    }

    // The buffers (scratch; contents unspecified between calls).
    candidates cand;                       ///< the working set's entries once materialised
    std::vector<detail::scored> sorted;    ///< sort scratch
    std::vector<float> weights;            ///< exp weights of cand (relative to its max)
    candidates sel;                        ///< the selection steps' second set (selection())
    std::vector<float> bmax;               ///< full-row draw: block maxima
    std::vector<double> bsum;              ///<                block sums
    std::vector<float> block_buf;          ///<                softmax of the chosen block
    std::vector<float> row;                ///< processed copy of the row
    std::vector<std::uint32_t> seen;       ///< sparse processors: declared ids (bits), 0 between
                                           ///< calls
    std::vector<token_id> touched;         ///< sparse processors: ids copied into row
    std::vector<detail::scored> patches;   ///< sparse processors: changed entries
    std::vector<std::uint32_t> unpatched;  ///< sparse processors: a token bitmask, clear for
                                           ///< the patched ids, all ones between calls
    candidates alt;                        ///< raw top-n
    detail::in_use_flag in_use;            ///< set while a call works in it
    selection_counters tiers;              ///< the selection steps' tiers (diagnostics)

private:
    std::size_t vocab_ = 0;
    penalty_workspace pen;
    dry_workspace dry_;
};

DECODEKIT_END_NAMESPACE
