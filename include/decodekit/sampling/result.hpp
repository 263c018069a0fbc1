#pragma once
/// \file sampling/result.hpp
/// What a sampling call takes besides the row (sample_context) and what it gives back
/// (sample_result, distribution), plus the inverse-CDF draw over a distribution.

#include <decodekit/config.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/random.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

/// Outcome of one sample() call.
enum class sample_status : std::uint8_t {
    ok,              ///< a token was drawn
    no_valid_token,  ///< every entry NaN / -inf (or banned): token = -1
    bad_input,       ///< logits.size() != vocab_size(): token = -1
    /// the sampler was inside another call (another thread, or the same sampler re-entered):
    /// nothing was done, token = -1 (a sampler serves one call at a time)
    concurrent_use,
    /// the constraint (or the call's token mask) allows no valid token: token = -1
    no_allowed_token,
};

/// A token and a log-probability (top-n alternatives, requested ids).
struct token_logprob {
    token_id token = -1;
    float logprob = -std::numeric_limits<float>::infinity();
};

/// What sample() returns. The spans point into the sampler (its own storage): valid until its
/// next call.
struct sample_result {
    token_id token = -1;  ///< the drawn token; -1 unless ok()
    /// log of the probability the token was drawn with (after the whole pipeline; 0 for greedy;
    /// NaN when params.logprobs.chosen is off).
    float logprob = std::numeric_limits<float>::quiet_NaN();
    /// log-softmax of the caller's logits at the token (temperature 1, before processors);
    /// NaN unless params.logprobs.raw (opt-in: needs the full normaliser).
    float raw_logprob = std::numeric_limits<float>::quiet_NaN();
    /// 1-based rank of the token (see logprobs_request::rank); 0 unless requested.
    std::size_t rank = 0;
    sample_status status = sample_status::no_valid_token;
    std::span<const token_logprob> top = {};        ///< logprobs_request::top_n best, best first
    std::span<const token_logprob> requested = {};  ///< logprobs_request::ids, in request order
    /// Queries of the callback constraint this call made (0 without one).
    std::size_t constraint_queries = 0;

    bool ok() const noexcept { return status == sample_status::ok; }
};

/// The key and the token history of one sampling step.
struct sample_context {
    std::uint64_t sequence = 0;  ///< sequence (request) id: part of the RNG key
    std::uint64_t step = 0;      ///< step within the sequence: part of the RNG key
    /// prompt + generated so far, oldest first (caller-owned; read by the processors).
    std::span<const token_id> history = {};
    std::size_t prompt_length = 0;  ///< history[0, prompt_length) is the prompt
    /// The step's token bitmask (kernels/mask.hpp; caller-owned, e.g. a grammar engine's): only
    /// the tokens it allows can be drawn. Default (no words, size 0): no mask. A mask that does
    /// not cover the vocabulary (covered() < vocab_size()) gives status bad_input; bits past the
    /// vocabulary are ignored. See sampler.hpp for the outcomes.
    kernels::token_bitmask mask = {};
};

/// The mutable state of a sampler (save with state(), roll back with restore()).
struct sampler_state {
    float mirostat_mu = 0.f;      ///< mirostat v2's mu (2 * tau initially)
    std::uint64_t next_step = 0;  ///< the step sample(logits) uses next
    friend bool operator==(const sampler_state&, const sampler_state&) = default;
};

/// A sparse distribution: token ids and their probabilities (equal lengths, probabilities sum to 1,
/// descending probability, ties by ascending id; ascending id from
/// sampler::distribution_unordered()). Views into a sampler's workspace (valid until
/// its next call) or into caller storage.
struct distribution {
    std::span<const token_id> tokens = {};
    std::span<const float> probs = {};

    std::size_t size() const noexcept { return tokens.size(); }
    bool empty() const noexcept { return tokens.empty(); }
    /// Probability of token t (0 if absent). O(size()).
    float prob(token_id t) const noexcept {
        for (std::size_t i = 0; i < tokens.size(); ++i)
            if (tokens[i] == t) return probs[i];
        return 0.f;
    }
};

/// Inverse-CDF draw from `d` with the uniform u in [0, 1): the first entry (in d's order) whose
/// running probability sum exceeds u * sum(probs); the last positive entry if rounding leaves it
/// unreached. -1 if d has no positive probability.
inline token_id draw(const distribution& d, double u) noexcept {
    const std::size_t i = kernels::draw_inverse_cdf(d.probs, u);
    return i == npos ? token_id(-1) : d.tokens[i];
}

/// Draw from `d` with one uniform() (2 words) of `rng`. For a truncated pipeline (a step other
/// than temperature and XTC cut the row: without one, sample() draws over the row in id blocks),
/// with rng = make_stream({seed, sequence, step}, rng_purpose::sample) this returns the same token
/// as sampler::sample() on the row that gave `d` when `d` came from distribution() (descending
/// probability order; distribution_unordered() is in id order, so the same law but not the same
/// token), barring float rounding within ~1e-7 of a CDF step; in every case the same law.
inline token_id draw(const distribution& d, rng_stream& rng) noexcept {
    return draw(d, rng.uniform());
}

DECODEKIT_END_NAMESPACE
