#pragma once
/// \file sampling/token_mask.hpp
/// How a sampler applies the call's token bitmask (sample_context::mask; kernels/mask.hpp), and
/// its min-p envelope plan.
///
/// Outcomes (every build type):
///   - no mask (the default: no words, size 0): nothing changes;
///   - a mask that does not cover the vocabulary (covered() < vocab_size()): bad_input, nothing
///     done (processors not run); bits past the vocabulary are ignored;
///   - the law is the unmasked pipeline's on the masked row M(x) (every disallowed entry -inf),
///     applied after the processors: the mask wins over min_keep (a fallback keeps allowed
///     entries only); with a constraint, the mask first and the constraint on what it allows;
///   - no token drawn: no_allowed_token when the caller's row has a valid entry, else
///     no_valid_token (an all-zero mask gives no_allowed_token);
///   - logprobs: processed ones are those of the masked distribution, raw ones stay raw.
///
/// Where the mask is read: fused into the kernels' passes (masked entries skipped inside them,
/// no separate pass over the row) when the first step that reads the row is greedy's argmax,
/// top-k, min-p or the temperature-only draw (also min-p's envelope draw below), with no user
/// step and no constraint. Any other pipeline gets a masked copy of the processed row in the
/// workspace (one copy + one kernels::apply_token_bitmask_inplace), and runs unmasked on it.
///
/// Min-p envelope plan (plan_min_p_envelope): when the pipeline is min-p and temperature steps
/// only (built-in, no user step, min_keep 1), min-p is not run as a step: the sampler draws over
/// the row under min-p's logit threshold (x_i >= max + T_min_p ln(min_p), the same kept set as
/// the step's, the max the largest allowed entry) at the final temperature
/// (steps/min_p.hpp's draw_min_p_only: one read pass without the chosen logprob, one exp pass
/// of the kept blocks with it); the same law as the step then the draw.

#include <decodekit/config.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/draw.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/processing.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/working_set.hpp>
#include <decodekit/sampling/workspace.hpp>

#include <algorithm>
#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace detail {

/// True when the call carries a mask (anything but the default token_bitmask{}).
inline bool has_mask(const kernels::token_bitmask& m) noexcept {
    return !(m.words.empty() && m.size == 0);
}

/// False when the call's mask does not cover a vocabulary of `vocab` tokens (bad_input).
inline bool mask_covers(const kernels::token_bitmask& m, std::size_t vocab) noexcept {
    return !has_mask(m) || kernels::check(m, vocab) == kernels::mask_status::ok;
}

/// True when the mask can be read inside the first row pass of this pipeline (`steps`: the
/// built-in steps in order, `user_steps`: any user step).
inline bool mask_fusable(std::span<const sampling_step> steps, bool greedy,
                         bool user_steps) noexcept {
    if (user_steps) return false;
    if (greedy) return true;
    for (const sampling_step s : steps)
        if (s != sampling_step::temperature)
            return s == sampling_step::top_k || s == sampling_step::min_p;
    return true;  // temperature only: the draw
}

/// The min-p envelope draw's plan (see the file comment).
struct min_p_envelope {
    bool on = false;
    float t_min_p = 1.f;  ///< the temperature min-p's threshold is taken at
    float t_draw = 1.f;   ///< the final temperature
};

inline min_p_envelope plan_min_p_envelope(std::span<const sampling_step> steps,
                                          const sampling_params& p, bool user_steps) noexcept {
    min_p_envelope e;
    if (user_steps || p.greedy() || p.min_keep > 1) return e;
    std::size_t n_min_p = 0;
    float t = 1.f;
    for (const sampling_step s : steps) {
        if (s == sampling_step::temperature) {
            t = p.temperature;
        } else if (s == sampling_step::min_p) {
            ++n_min_p;
            e.t_min_p = p.min_p_mode == min_p_space::logits ? 1.f : t;
        } else {
            return e;
        }
    }
    e.on = n_min_p == 1;
    e.t_draw = t;
    return e;
}

/// The copy path: the processed row `pr` (the caller's plus patches when overlaid) written to
/// the workspace's row copy with the mask applied; `pr` then refers to it (no overlay, and the
/// patch marks cleared). \pre the mask covers logits.size()
inline void mask_into_copy(std::span<const float> logits, const kernels::token_bitmask& mask,
                           processed_row& pr, sampling_workspace& ws) noexcept {
    const std::span<float> copy = ws.row_copy().first(logits.size());
    if (pr.row.data() != copy.data()) std::copy(pr.row.begin(), pr.row.end(), copy.begin());
    if (pr.overlay)
        for (std::size_t i = 0; i < pr.patches; ++i) {
            const auto t = std::uint32_t(ws.patches[i].id);
            copy[t] = ws.patches[i].logit;
            ws.unpatched[t / 32] |= 1u << (t % 32);  // all ones again (the workspace's invariant)
        }
    kernels::apply_token_bitmask_inplace(copy, mask);
    pr = processed_row{.row = copy, .patches = 0, .overlay = false};
}

/// The status of a masked or constrained call that drew nothing: no_allowed_token when `row`
/// has a valid entry, else no_valid_token.
inline sample_status none_allowed(std::span<const float> row) noexcept {
    for (const float v : row)
        if (v > -std::numeric_limits<float>::infinity()) return sample_status::no_allowed_token;
    return sample_status::no_valid_token;
}

}  // namespace detail
DECODEKIT_END_NAMESPACE
