#pragma once
/// \file processors/prefix_constrained.hpp
/// Hugging Face's prefix_allowed_tokens_fn (PrefixConstrainedLogitsProcessor): a user function
/// gives the set of tokens allowed at each position, from the history; every other token is
/// banned (-inf).
///
/// The function is called as fn(c, allowed) with `allowed` empty: it appends the allowed ids and
/// returns true, or returns false to allow every token at this position (the row is left as it
/// is; HF's functions return the whole vocabulary for that). c carries what HF passes and more:
/// c.history (HF's input_ids), c.sequence (in place of HF's batch id), c.prompt_length, c.step.
/// Returning true with no id in [0, V) bans every token (the sampler then reports
/// sample_status::no_valid_token; HF raises an error for an empty list). Ids outside [0, V) are
/// ignored, duplicates are harmless, allowed entries keep their logits (NaN stays NaN).
/// The function must not throw (it runs inside noexcept sampling calls: an exception
/// terminates the program) and must give the same set for the same context: a sampler may apply
/// its processors twice in one call (a redraw under a constraint with XTC). Its captured state
/// is copied with the processor (a beam fork copies it).
///
/// Cost per call: the function's own, plus O(V + A) to apply A allowed ids (A <= 256; O(V + A *
/// ceil(V / 65536)) above, apply_allowed_tokens in processors/bias.hpp). It is dense (it may
/// write any entry, no touched()): a sampler copies the whole row, O(V), at every position,
/// also where the function returns false. For large vocabularies prefer a constraint in callback
/// form (sampling_params::constraint, sampling/constraint.hpp): the sampler asks it whether
/// token t is allowed only where the law depends on it (greedy needs the highest allowed token,
/// top-k the k highest, a temperature-only draw the drawn token), with no O(V) pass when the
/// model's choices are mostly allowed.
/// Validation: the function must not be empty (check() names it).

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/bias.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Restricts each position to the tokens a user function allows (see the file comment).
class prefix_constrained_processor {
public:
    /// Appends the ids allowed at the position of `c` to `allowed` (given empty) and returns
    /// true, or returns false to allow every token.
    using allowed_fn =
        std::function<bool(const processor_context& c, std::vector<token_id>& allowed)>;

    /// The problem with `fn` as a message (it must hold a function), or nullopt.
    static std::optional<std::string> check(const allowed_fn& fn) {
        if (!fn)
            return std::string(
                "prefix_constrained_processor.allowed_tokens_fn must hold a function, got an "
                "empty std::function");
        return std::nullopt;
    }
    /// \pre check(fn) is nullopt (validated here: config_error or the error handler)
    explicit prefix_constrained_processor(allowed_fn fn) : fn_(std::move(fn)) {
        raise_if(check(fn_));
    }

    /// Bans every token the function does not allow at the position of `c`.
    void apply(std::span<float> logits, const processor_context& c) {
        allowed_.clear();
        if (fn_(c, allowed_)) {
            if (allowed_.empty())  // apply_allowed_tokens reads an empty list as "no restriction"
                std::fill(logits.begin(), logits.end(), -std::numeric_limits<float>::infinity());
            else
                apply_allowed_tokens(logits, allowed_);
        }
        allowed_.clear();  // keeps its capacity; copies of the processor copy no ids
    }

private:
    allowed_fn fn_;
    std::vector<token_id> allowed_;  // reused each call: allocates only while it grows
};

DECODEKIT_END_NAMESPACE
