#pragma once
/// \file processors/bias.hpp
/// Logit bias, banned tokens and an allowed-token set.
///
/// Token ids outside [0, V) are ignored. Bans write -inf (also over NaN entries: both mean
/// probability 0). No allocation; the allowed set works with a small stack buffer or a stack
/// bitmask over blocks of the vocabulary.
/// Statefulness: none. Each has a processor form (processors/processor.hpp) holding its list,
/// shared between copies (a copy is O(1)): logit_bias_processor and banned_tokens_processor are
/// sparse (touched() declares their list, O(list) per call); allowed_tokens_processor is dense
/// (it writes every entry outside its list, O(V) per call).

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// One additive bias: logits[token] += bias (bias = -inf bans the token).
struct logit_bias {
    token_id token;
    float bias;
};

/// Adds each bias to its token's logit (several biases for one token add up).
/// Rules for special values: a NaN bias is ignored; a NaN logit stays NaN; bias -inf makes the
/// logit -inf (even +inf); a -inf logit stays -inf (a +inf bias does not revive a ban).
inline void apply_logit_bias(std::span<float> logits, std::span<const logit_bias> biases) noexcept {
    constexpr float inf = std::numeric_limits<float>::infinity();
    for (const logit_bias& b : biases) {
        if (b.token < 0 || static_cast<std::size_t>(b.token) >= logits.size()) continue;
        if (std::isnan(b.bias)) continue;
        float& x = logits[static_cast<std::size_t>(b.token)];
        if (std::isnan(x) || x == -inf) continue;
        x = b.bias == -inf ? -inf : x + b.bias;
    }
}

/// Sets the logit of every listed token to -inf.
inline void apply_banned_tokens(std::span<float> logits,
                                std::span<const token_id> banned) noexcept {
    constexpr float inf = std::numeric_limits<float>::infinity();
    for (token_id t : banned)
        if (t >= 0 && static_cast<std::size_t>(t) < logits.size())
            logits[static_cast<std::size_t>(t)] = -inf;
}

/// Sets every logit whose token is not in `allowed` to -inf; allowed logits are unchanged (NaN
/// included). An empty `allowed` means no restriction. Ids outside [0, V) are ignored, so a list
/// holding only such ids bans everything.
/// Cost: O(V + A) for A <= 256 (save, fill, restore); otherwise O(V + A * ceil(V / 65536)).
inline void apply_allowed_tokens(std::span<float> logits,
                                 std::span<const token_id> allowed) noexcept {
    constexpr float inf = std::numeric_limits<float>::infinity();
    if (allowed.empty()) return;
    const std::size_t v = logits.size();
    auto valid = [v](token_id t) noexcept { return t >= 0 && static_cast<std::size_t>(t) < v; };

    constexpr std::size_t small = 256;
    if (allowed.size() <= small) {
        float saved[small];
        for (std::size_t i = 0; i < allowed.size(); ++i)
            saved[i] = valid(allowed[i]) ? logits[static_cast<std::size_t>(allowed[i])] : 0.f;
        std::fill(logits.begin(), logits.end(), -inf);
        for (std::size_t i = 0; i < allowed.size(); ++i)
            if (valid(allowed[i])) logits[static_cast<std::size_t>(allowed[i])] = saved[i];
        return;
    }

    // Large lists: a bitmask of the allowed ids, one block of the vocabulary at a time.
    constexpr std::size_t block = 65536;
    std::uint64_t mask[block / 64];
    for (std::size_t lo = 0; lo < v; lo += block) {
        const std::size_t hi = std::min(v, lo + block);
        std::fill(std::begin(mask), std::begin(mask) + (hi - lo + 63) / 64, std::uint64_t{0});
        for (token_id t : allowed) {
            if (!valid(t)) continue;
            const std::size_t u = static_cast<std::size_t>(t);
            if (u < lo || u >= hi) continue;
            mask[(u - lo) / 64] |= std::uint64_t{1} << ((u - lo) % 64);
        }
        for (std::size_t i = lo; i < hi; ++i)
            if (!((mask[(i - lo) / 64] >> ((i - lo) % 64)) & 1u)) logits[i] = -inf;
    }
}

/// apply_logit_bias as a processor. Sparse: touched() declares the biased ids.
class logit_bias_processor {
public:
    /// \pre no bias is NaN (validated here, naming the entry: config_error or the error handler)
    explicit logit_bias_processor(std::vector<logit_bias> biases) {
        for (std::size_t i = 0; i < biases.size(); ++i)
            if (std::isnan(biases[i].bias))
                raise(detail::range_message(
                    "logit_bias_processor: biases[" + std::to_string(i) + "].bias", "not NaN",
                    static_cast<double>(biases[i].bias)));
        b_ = std::make_shared<const std::vector<logit_bias>>(std::move(biases));
    }
    std::span<const logit_bias> biases() const noexcept { return *b_; }
    void apply(std::span<float> logits, const processor_context&) const noexcept {
        apply_logit_bias(logits, *b_);
    }
    void touched(const processor_context&, token_sink& out) const {
        for (const logit_bias& b : *b_) out(b.token);
    }

private:
    std::shared_ptr<const std::vector<logit_bias>> b_;
};

/// apply_banned_tokens as a processor (a deliberate ban: EOS ids included if listed). Sparse:
/// touched() declares the list.
class banned_tokens_processor {
public:
    explicit banned_tokens_processor(std::vector<token_id> banned)
        : t_(std::make_shared<const std::vector<token_id>>(std::move(banned))) {}
    std::span<const token_id> tokens() const noexcept { return *t_; }
    void apply(std::span<float> logits, const processor_context&) const noexcept {
        apply_banned_tokens(logits, *t_);
    }
    void touched(const processor_context&, token_sink& out) const { out(*t_); }

private:
    std::shared_ptr<const std::vector<token_id>> t_;
};

/// apply_allowed_tokens as a processor (an empty list allows everything). Dense: it writes every
/// entry outside its list, so it has no touched().
class allowed_tokens_processor {
public:
    explicit allowed_tokens_processor(std::vector<token_id> allowed)
        : t_(std::make_shared<const std::vector<token_id>>(std::move(allowed))) {}
    std::span<const token_id> tokens() const noexcept { return *t_; }
    void apply(std::span<float> logits, const processor_context&) const noexcept {
        apply_allowed_tokens(logits, *t_);
    }

private:
    std::shared_ptr<const std::vector<token_id>> t_;
};

DECODEKIT_END_NAMESPACE
