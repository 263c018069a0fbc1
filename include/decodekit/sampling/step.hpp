#pragma once
/// \file sampling/step.hpp
/// The truncation-step concept that built-in and user steps share (sampling_step_type and
/// any_step are in any_step.hpp), the context a step runs with, and the entry type of the
/// built-in steps' table.
///
/// A step narrows the working set (sampling/working_set.hpp) or changes its temperature:
///   void apply(working_set& w, const step_context& c)
/// It must not throw (it runs inside noexcept sampling calls). It sees the set after every step
/// before it in the order; a full set means nothing has narrowed it yet. It must keep at least
/// one entry when the set has one (an empty set means "no valid token"). Randomness comes from
/// c.stream(purpose) (keyed by the call's seed, sequence and step: never by batch position).
/// A step object is per sampler (a sampler owns a copy): per-sequence state may live in it.

#include <decodekit/config.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/any_step.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <cstddef>

DECODEKIT_BEGIN_NAMESPACE

/// What a step runs with besides the working set.
struct step_context {
    const sampling_params& params;  ///< the sampler's configuration
    const sample_context& call;     ///< the call's key and history
    sampler_state& state;           ///< the sampler's mutable state (mirostat's mu)

    /// The call's random stream for `purpose` (keyed by seed, sequence and step).
    rng_stream stream(rng_purpose purpose) const noexcept {
        return make_stream({params.seed, call.sequence, call.step}, purpose);
    }
};

/// One built-in step in the registration table (sampling/steps.hpp): its id, whether the
/// params enable it for a vocabulary, and its apply function.
struct builtin_step {
    sampling_step id;
    bool (*enabled)(const sampling_params&, std::size_t vocab_size) noexcept;
    void (*apply)(working_set&, const step_context&) noexcept;
};

DECODEKIT_END_NAMESPACE
