#pragma once
/// \file kernels/mask.hpp
/// Token bitmasks in the layout grammar engines emit (xgrammar, llguidance): 32-bit words, bit
/// i % 32 of word i / 32 set when token i is allowed. The view, its coverage rule, counting the
/// allowed tokens and applying a mask to a row in place (SIMD).
///
/// Coverage rule (every masked kernel): a token the mask has no bit for (i >= size, or a word
/// past words.size()) is disallowed; bits at or past size, and past the row, are ignored. So a
/// short mask never reads past its end and never allows more than it says; check() reports it
/// as mask_status::short_mask, which callers turn into their own status.
///
/// The masked kernels (max, argmax, exp_sum, logsumexp, softmax, top_k, filter_at_least,
/// filter_min_p, draw_temperature) read the mask inside their passes: a disallowed entry is
/// -inf there, with no separate pass over the row. Their result equals the unmasked kernel on
/// a copy of the row with apply_token_bitmask_inplace applied (argmax: see its comment).

#include <decodekit/config.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

/// Number of 32-bit words a mask over `vocab` tokens needs.
inline constexpr std::size_t bitmask_words(std::size_t vocab) noexcept { return (vocab + 31) / 32; }

/// A view of a packed token bitmask: `words` (not owned) and the number of tokens `size` it
/// describes. Aggregate: token_bitmask{.words = w, .size = vocab}.
struct token_bitmask {
    std::span<const std::uint32_t> words;
    std::size_t size = 0;  ///< tokens described; bits at or past it are ignored

    /// Tokens that have a bit: min(size, 32 words.size()).
    std::size_t covered() const noexcept { return std::min(size, words.size() * 32); }
    /// True iff token i has a set bit (false past covered()).
    bool allowed(std::size_t i) const noexcept {
        return i < covered() && ((words[i / 32] >> (i % 32)) & 1u) != 0;
    }
    /// The tokens [first, first + count) as their own mask (token first becomes token 0).
    /// first must be a multiple of 32 (a mask of whole words); otherwise, or when first is past
    /// the words, the view covers nothing (every token disallowed; check() reports it).
    token_bitmask subview(std::size_t first, std::size_t count) const noexcept {
        if (first % 32 != 0 || first / 32 > words.size()) return {};
        return {.words = words.subspan(first / 32),
                .size = std::min(count, size > first ? size - first : 0)};
    }
};

/// Whether a mask covers a row of n tokens.
enum class mask_status : std::uint8_t {
    ok,          ///< every token of the row has a bit
    short_mask,  ///< tokens [covered(), n) have no bit: they are treated as disallowed
};

/// mask_status::ok iff the mask has a bit for each of n tokens.
inline mask_status check(const token_bitmask& mask, std::size_t n) noexcept {
    return mask.covered() >= n ? mask_status::ok : mask_status::short_mask;
}

/// Number of allowed tokens among [0, n) (tokens without a bit count as disallowed).
inline std::size_t count_allowed(const token_bitmask& mask, std::size_t n) noexcept {
    const std::size_t c = std::min(n, mask.covered()), full = c / 32;
    std::size_t total = 0;
    for (std::size_t w = 0; w < full; ++w) total += std::size_t(std::popcount(mask.words[w]));
    if (c % 32) total += std::size_t(std::popcount(mask.words[full] & ((1u << (c % 32)) - 1u)));
    return total;
}

/// True iff at most `limit` of the tokens [0, n) are allowed (tokens without a bit count as
/// disallowed). Stops counting once the limit is passed: reads about limit / density bits.
inline bool allowed_at_most(const token_bitmask& mask, std::size_t n, std::size_t limit) noexcept {
    const std::size_t c = std::min(n, mask.covered()), full = c / 32;
    constexpr std::size_t block = 64;  // words between checks of the running count
    std::size_t total = 0;
    for (std::size_t w0 = 0; w0 < full; w0 += block) {
        const std::size_t w1 = std::min(full, w0 + block);
        for (std::size_t w = w0; w < w1; ++w) total += std::size_t(std::popcount(mask.words[w]));
        if (total > limit) return false;
    }
    if (c % 32) total += std::size_t(std::popcount(mask.words[full] & ((1u << (c % 32)) - 1u)));
    return total <= limit;
}

/// Sets every disallowed entry of `row` to -inf (allowed entries are left as they are, NaN
/// included); tokens the mask has no bit for are disallowed. Returns check(mask, row.size()).
/// One pass over the mask, none over the row: per 32-token word, nothing when all are allowed,
/// else -inf stored to the disallowed entries (AVX-512: masked stores, no load of the row).
template <class A = simd::default_arch>
mask_status apply_token_bitmask_inplace(std::span<float> row, const token_bitmask& mask) noexcept {
    constexpr float ninf = -std::numeric_limits<float>::infinity();
    const std::size_t n = row.size(), c = std::min(n, mask.covered()), full = c / 32;
    float* p = row.data();
    const std::uint32_t* w = mask.words.data();
    for (std::size_t k = 0; k < full; ++k)
        if (w[k] != ~0u) simd::store_where_clear<A>(p + 32 * k, w[k], ninf);
    for (std::size_t i = 32 * full; i < c; ++i)
        if (!((w[i / 32] >> (i % 32)) & 1u)) p[i] = ninf;
    std::fill(p + c, p + n, ninf);
    return check(mask, n);
}

namespace detail {

/// Row-load policies: the kernels' passes are templates on one of these, so each kernel has one
/// implementation with and without a mask. load(i) is the vector of entries [i, i + L) with
/// disallowed entries at -inf, raw(i) the same vector unmasked, bits(i) its lanes' allowed bits
/// (bit j for lane j; all set for a plain row), group_bits(i) the same for the 4 vectors
/// [i, i + 4L) (bit j for entry i + j; \pre i % 4L == 0, 4L <= 64), at(i) one entry, -inf when
/// disallowed (\pre i % L == 0 and i + L <= n for the vector forms). Passes that compact
/// survivors of a threshold read raw() and clear the disallowed survivors with bits() or
/// group_bits(), so the mask costs nothing where no entry passes; max-like passes read the mask
/// only in vectors that could raise their running max.
template <class A>
struct plain_row {
    static constexpr bool masked = false;
    const float* p;
    simd::batch<A> load(std::size_t i) const noexcept { return raw(i); }
    simd::batch<A> raw(std::size_t i) const noexcept {
        return simd::batch<A>::load_unaligned(p + i);
    }
    std::uint64_t bits(std::size_t) const noexcept { return ~0ull; }
    std::uint64_t group_bits(std::size_t) const noexcept { return ~0ull; }
    float at(std::size_t i) const noexcept { return p[i]; }
};

template <class A>
struct masked_row {
    static constexpr bool masked = true;
    const float* p;
    const std::uint32_t* words;
    simd::batch<A> load(std::size_t i) const noexcept {
        return simd::select<A>(simd::bitmask_lanes<A>(words, i), raw(i),
                               simd::batch<A>(-std::numeric_limits<float>::infinity()));
    }
    simd::batch<A> raw(std::size_t i) const noexcept {
        return simd::batch<A>::load_unaligned(p + i);
    }
    std::uint64_t bits(std::size_t i) const noexcept { return simd::bitmask_bits<A>(words, i); }
    std::uint64_t group_bits(std::size_t i) const noexcept {
        constexpr std::size_t G = 4 * simd::lanes<A>;
        static_assert(G <= 64 && (G >= 32 ? G % 32 == 0 : 32 % G == 0));
        if constexpr (G == 64) {  // two whole words (i % 64 == 0)
            return std::uint64_t(words[i / 32]) | (std::uint64_t(words[i / 32 + 1]) << 32);
        } else {
            return std::uint64_t(words[i / 32] >> (i % 32)) & ((std::uint64_t(1) << G) - 1);
        }
    }
    float at(std::size_t i) const noexcept {
        return ((words[i / 32] >> (i % 32)) & 1u) ? p[i] : -std::numeric_limits<float>::infinity();
    }
};

/// The masked row over the tokens the mask covers: the kernels run on x[0, n) with
/// n = min(x.size(), mask.covered()) (the rest is disallowed, so it never changes a result).
template <class A>
masked_row<A> masked(std::span<const float> x, const token_bitmask& mask, std::size_t& n) noexcept {
    n = std::min(x.size(), mask.covered());
    return {x.data(), mask.words.data()};
}

}  // namespace detail
}  // namespace kernels
DECODEKIT_END_NAMESPACE
