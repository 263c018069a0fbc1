#pragma once
/// \file random.hpp
/// Counter-based randomness: Philox4x32-10 (Salmon et al., SC'11) keyed by
/// (seed, sequence id, step, purpose), so a draw never depends on batch composition, row
/// order or thread count.
///
/// Counter layout (128 bits): ctr = {block index, purpose, step low 32, sequence low 32};
/// key (64 bits) = seed, with the high 32 bits of step and of sequence folded in by odd
/// multipliers. Distinct (seed, sequence, step, purpose) below 2^32 in step and sequence give
/// disjoint streams; each stream has 2^32 blocks of four 32-bit words.

#include <decodekit/config.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

DECODEKIT_BEGIN_NAMESPACE

/// Philox4x32-10: one block of four 32-bit outputs from a 128-bit counter and a 64-bit key.
/// \post Matches the Random123 known-answer vectors (tests/unit/test_random.cpp).
constexpr std::array<std::uint32_t, 4> philox4x32_10(std::array<std::uint32_t, 4> ctr,
                                                     std::array<std::uint32_t, 2> key) noexcept {
    constexpr std::uint32_t m0 = 0xD2511F53u, m1 = 0xCD9E8D57u;
    constexpr std::uint32_t w0 = 0x9E3779B9u, w1 = 0xBB67AE85u;
    for (int round = 0; round < 10; ++round) {
        const std::uint64_t p0 = std::uint64_t(m0) * ctr[0];
        const std::uint64_t p1 = std::uint64_t(m1) * ctr[2];
        ctr = {std::uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], std::uint32_t(p1),
               std::uint32_t(p0 >> 32) ^ ctr[3] ^ key[1], std::uint32_t(p0)};
        key[0] += w0;
        key[1] += w1;
    }
    return ctr;
}

/// What a stream of random numbers is used for; part of the counter so the uses of one
/// sampling step never share numbers.
enum class rng_purpose : std::uint32_t {
    sample = 0,      ///< the categorical draw of a sampling step
    accept = 1,      ///< speculative acceptance tests
    residual = 2,    ///< speculative residual / bonus draws
    filter = 3,      ///< stochastic filters (XTC's coin)
    gumbel = 4,      ///< per-token noise (Gumbel / exponential race, stochastic beams)
    draft = 5,       ///< draft-model sampling
    constraint = 6,  ///< the redraw of a constrained step after its first draw was not allowed
    user = 0x100,    ///< first value free for callers
};

/// The key of one sampling step.
struct rng_key {
    std::uint64_t seed = 0;
    std::uint64_t sequence = 0;
    std::uint64_t step = 0;
};

/// A stream of 32-bit random words for one (seed, sequence, step, purpose): a small value type;
/// copying it saves its state, assigning the copy back restores it. Satisfies
/// std::uniform_random_bit_generator.
class rng_stream {
public:
    using result_type = std::uint32_t;

    constexpr rng_stream() noexcept : rng_stream(rng_key{}, rng_purpose::sample) {}
    constexpr rng_stream(rng_key k, rng_purpose purpose) noexcept
        : key_{std::uint32_t(k.seed) ^ std::uint32_t(k.step >> 32) * 0x9E3779B1u,
               std::uint32_t(k.seed >> 32) ^ std::uint32_t(k.sequence >> 32) * 0x85EBCA77u},
          ctr_{0u, std::uint32_t(purpose), std::uint32_t(k.step), std::uint32_t(k.sequence)} {}

    static constexpr result_type min() noexcept { return 0; }
    static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

    /// The next 32-bit word.
    constexpr result_type operator()() noexcept {
        if (used_ == 4) {
            block_ = philox4x32_10(ctr_, key_);
            ++ctr_[0];
            used_ = 0;
        }
        return block_[used_++];
    }

    /// Uniform float in the open interval (0, 1): ((bits >> 8) + 0.5) * 2^-24.
    constexpr float uniform_float() noexcept { return (float((*this)() >> 8) + 0.5f) * 0x1p-24f; }
    /// Uniform double in the open interval (0, 1) from 64 bits (53 used).
    constexpr double uniform() noexcept {
        const std::uint64_t hi = (*this)(), lo = (*this)();
        return (double(((hi << 32) | lo) >> 11) + 0.5) * 0x1p-53;
    }
    /// Standard exponential variate, -log1p(-u) in double.
    double exponential() noexcept { return -std::log1p(-uniform()); }
    /// Standard Gumbel variate, -log(E).
    double gumbel() noexcept { return -std::log(exponential()); }

    /// Number of 32-bit words consumed so far (for documenting and testing RNG use).
    constexpr std::uint64_t words_used() const noexcept {
        return std::uint64_t(ctr_[0]) * 4 - (4 - used_);
    }

    friend constexpr bool operator==(const rng_stream&, const rng_stream&) noexcept = default;

private:
    std::array<std::uint32_t, 2> key_;
    std::array<std::uint32_t, 4> ctr_;
    std::array<std::uint32_t, 4> block_{};
    std::uint32_t used_ = 4;
};

/// The stream for (key, purpose): the one way decodekit derives randomness.
constexpr rng_stream make_stream(rng_key k, rng_purpose purpose = rng_purpose::sample) noexcept {
    return rng_stream(k, purpose);
}

DECODEKIT_END_NAMESPACE
