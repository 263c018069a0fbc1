#pragma once
/// \file regex/regex_generate.hpp
/// Regular-expression constrained generation: a decoding loop in which a decodekit::sampler
/// applies a regex_constraint (sampling_params::constraint), so the sampler queries it only where
/// the law of its pipeline depends on it (sampling/constrained.hpp: greedy walks down from the
/// top, min-p or top-k first query the few tokens they keep, temperature-only draws check the
/// drawn token; any other pipeline queries every valid token).
///
/// Stop rules, checked before each step on the driver's own copy of the constraint (it follows
/// the same history with one append per token):
///   - the text is a full match that no token extends: stop_reason constraint_done (no model
///     call is wasted on a row in which only EOS is allowed);
///   - the sampler finds no allowed token (an impossible pattern, a dead end): constraint_done,
///     with complete == false;
///   - EOS drawn (allowed only at a full match): eos (the EOS rule of every strategy: not part of
///     the tokens);
///   - max_new_tokens reached (the text is then a viable prefix, complete or not);
///   - a row with no valid entry at all (the model's fault): no_valid_token.
/// So an output that ends with constraint_done and complete, or with eos, matches the pattern in
/// full.

#include "regex_constraint.hpp"

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace dk_regex {

/// What a constrained generation gives back.
struct generation {
    std::vector<token_id> tokens;  ///< generated tokens (EOS excluded)
    dk::stop_reason reason = dk::stop_reason::max_new_tokens;
    bool complete = false;  ///< the text is a full match of the pattern
    std::string text;       ///< the generated text (the constraint's bytes)
    std::size_t steps = 0;  ///< sampling calls (one model call each)
    /// Constraint queries the sampler made (sample_result::constraint_queries, summed).
    std::uint64_t queries = 0;
    /// Tokens the stop rule tried (can_extend() on the driver's copy, at full matches only).
    std::uint64_t extension_checks = 0;
    std::size_t vocab_size = 0;
    double time_to_first_token = 0;  ///< seconds until the first step ended (steady_clock)

    /// Mean sampler queries per sampling call.
    double queries_per_step() const noexcept {
        return steps ? double(queries) / double(steps) : 0.0;
    }
    /// queries_per_step() as a fraction of the vocabulary.
    double query_fraction() const noexcept {
        return vocab_size ? queries_per_step() / double(vocab_size) : 0.0;
    }
};

/// Where and how to generate.
struct generate_options {
    std::size_t max_new_tokens = 128;
    std::uint64_t sequence = 0;  ///< the RNG key's sequence id
    std::uint32_t slot = 0;      ///< the model's cache slot
};

/// Generates from `prompt` under `constraint` with sampling `params` (its constraint field is
/// replaced by `constraint`; validated by the sampler: decodekit's config_error, or its error
/// handler with -fno-exceptions). See the file comment for the stop rules. The constraint's
/// vocabulary should be the model's: tokens past its end are refused. A prompt the model rejects
/// (empty: the reference backend's rows are then NaN) ends with no_valid_token.
template <dk::language_model M>
generation generate(M& model, std::span<const token_id> prompt, const regex_constraint& constraint,
                    dk::sampling_params params, const generate_options& opt = {}) {
    const auto t0 = std::chrono::steady_clock::now();
    generation g;
    const std::size_t V = model.vocab_size();
    g.vocab_size = V;
    params.constraint = constraint;
    dk::sampler s(params, V);
    regex_constraint mine = constraint;  // the stop rule's copy
    std::vector<token_id> history(prompt.begin(), prompt.end());
    const std::size_t pl = history.size();
    mine.reset({.history = history, .prompt_length = pl, .vocab_size = V});
    const auto& eos = constraint.vocab().eos_ids;
    const std::uint64_t checks0 = mine.stats().extension_checks;
    std::vector<float> row(V);
    for (;;) {
        if (mine.is_complete() && !mine.can_extend()) {
            g.reason = dk::stop_reason::constraint_done;
            break;
        }
        if (g.tokens.size() >= opt.max_new_tokens) {
            g.reason = dk::stop_reason::max_new_tokens;
            break;
        }
        const dk::sequence_request req{history, 1, opt.slot};
        model.logits(std::span(&req, 1), row);
        const dk::sample_result r = s.sample(
            row,
            {.sequence = opt.sequence, .step = g.steps, .history = history, .prompt_length = pl});
        if (++g.steps == 1)
            g.time_to_first_token =
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        g.queries += r.constraint_queries;
        if (r.status == dk::sample_status::no_allowed_token) {
            g.reason = dk::stop_reason::constraint_done;
            break;
        }
        if (!r.ok()) {
            g.reason = dk::stop_reason::no_valid_token;
            break;
        }
        if (std::find(eos.begin(), eos.end(), r.token) != eos.end()) {
            g.reason = dk::stop_reason::eos;
            break;
        }
        history.push_back(r.token);
        g.tokens.push_back(r.token);
        mine.append(std::span(&history.back(), 1),
                    {.history = history, .prompt_length = pl, .vocab_size = V});
    }
    g.complete = mine.is_complete();
    g.text = std::string(mine.text());
    g.extension_checks = mine.stats().extension_checks - checks0;
    return g;
}

}  // namespace dk_regex
