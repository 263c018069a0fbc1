#pragma once
/// \file regex/regex_generate.hpp
/// Regular-expression constrained generation: a thin loop over decodekit's generation_stepper
/// (decoding/generate.hpp) whose sampler applies a regex_constraint (sampling_params::constraint),
/// so the sampler queries it only where the law of its pipeline depends on it
/// (sampling/constrained.hpp: greedy walks down from the top, min-p or top-k first query the few
/// tokens they keep, temperature-only draws check the drawn token; any other pipeline queries
/// every valid token). The stepper applies decodekit's stop rule (decoding/contract.hpp); this
/// loop adds one rule, checked before each step on its own copy of the constraint (it follows the
/// stepper's output with one append per token):
///   - the text is a full match that no token extends: stop_reason constraint_done, without a
///     model call (the stepper is cancelled; no call is wasted on a row in which only EOS is
///     allowed).
/// The stepper's own outcomes:
///   - the sampler finds no allowed token (an impossible pattern, a dead end): constraint_done,
///     with complete == false;
///   - EOS drawn (allowed only at a full match): eos (not part of the tokens);
///   - max_new_tokens reached (the text is then a viable prefix, complete or not; when the last
///     token of the budget also completes the match, max_new_tokens with complete == true);
///   - a row with no valid entry at all (the model's fault: the reference backend's NaN rows for
///     a token id out of range): no_valid_token;
///   - an empty prompt: rejected like decodekit::generate (config_error, or decodekit's error
///     handler with -fno-exceptions).
/// So an output that ends with constraint_done and complete, or with eos, matches the pattern in
/// full.

#include "regex_constraint.hpp"

#include <decodekit/decodekit.hpp>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dk_regex {

/// What a constrained generation gives back.
struct generation {
    std::vector<token_id> tokens;  ///< generated tokens (EOS excluded)
    dk::stop_reason reason = dk::stop_reason::max_new_tokens;
    bool complete = false;  ///< the text is a full match of the pattern
    std::string text;       ///< the generated text (the constraint's bytes)
    std::size_t steps = 0;  ///< sampling calls (one model call each)
    /// Constraint queries the sampler made (generation_stats::constraint_queries).
    std::uint64_t queries = 0;
    /// Tokens the stop rule tried (can_extend() on the loop's copy, at full matches only).
    std::uint64_t extension_checks = 0;
    std::size_t vocab_size = 0;
    dk::generation_stats stats;  ///< the stepper's statistics (times, calls)

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
    std::size_t max_new_tokens = 128;  ///< >= 1 (generate_params' range)
    std::uint64_t sequence = 0;        ///< the RNG key's sequence id
    std::uint32_t slot = 0;            ///< the model's cache slot
};

/// Generates from `prompt` under `constraint` with sampling `params` (its constraint field is
/// replaced by `constraint`; EOS ids are the constraint vocabulary's). Parameters are validated
/// by generation_stepper (decodekit's config_error, or its error handler with -fno-exceptions).
/// See the file comment for the stop rules. The constraint's vocabulary should be the model's:
/// tokens past its end are refused.
template <dk::language_model M>
generation generate(M& model, std::span<const token_id> prompt, const regex_constraint& constraint,
                    dk::sampling_params params, const generate_options& opt = {}) {
    const std::size_t V = model.vocab_size();
    params.constraint = constraint;
    dk::generation_stepper st({.sampling = std::move(params),
                               .max_new_tokens = opt.max_new_tokens,
                               .eos_ids = constraint.vocab().eos_ids,
                               .sequence = opt.sequence,
                               .slot = opt.slot},
                              V, prompt);
    regex_constraint mine = constraint;  // the stop rule's copy
    std::vector<token_id> history(prompt.begin(), prompt.end());
    const std::size_t pl = history.size();
    mine.reset({.history = history, .prompt_length = pl, .vocab_size = V});
    const std::uint64_t checks0 = mine.stats().extension_checks;
    bool finished = false;  // the match is complete and cannot grow
    std::vector<float> row(V);
    while (!st.done()) {
        if (mine.is_complete() && !mine.can_extend()) {
            st.cancel();
            finished = true;
            break;
        }
        dk::run_model_call(model, st.next_call(), row);
        const dk::step_events ev = st.advance(row);
        if (ev.status != dk::step_status::ok) {  // (never: the rows are full, the sampler ours)
            st.cancel();
            break;
        }
        if (ev.tokens.empty()) continue;  // EOS or no token: the stepper is done
        history.insert(history.end(), ev.tokens.begin(), ev.tokens.end());
        mine.append(ev.tokens, {.history = history, .prompt_length = pl, .vocab_size = V});
    }
    dk::generation_result r = st.result();
    generation g;
    g.tokens = std::move(r.tokens);
    g.reason = finished ? dk::stop_reason::constraint_done : r.reason;
    g.complete = mine.is_complete();
    g.text = std::string(mine.text());
    g.steps = r.stats.model_calls;
    g.queries = r.stats.constraint_queries;
    g.extension_checks = mine.stats().extension_checks - checks0;
    g.vocab_size = V;
    g.stats = std::move(r.stats);
    return g;
}

}  // namespace dk_regex
