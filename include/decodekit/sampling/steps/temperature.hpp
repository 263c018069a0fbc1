#pragma once
/// \file sampling/steps/temperature.hpp
/// Temperature: divides the logits by `temperature`, lazily (the working set carries the scale;
/// no pass over the row). Steps after it see the tempered distribution, steps before it the
/// distribution at temperature 1. Disabled at 1 (and at 0, which is greedy: no step runs).

#include <decodekit/config.hpp>
#include <decodekit/sampling/step.hpp>

DECODEKIT_BEGIN_NAMESPACE

struct temperature_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.temperature != 1.f && p.temperature > 0.f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        w.set_temperature(c.params.temperature);
    }
};

DECODEKIT_END_NAMESPACE
