#pragma once
/// \file sampling/steps/top_n_sigma.hpp
/// Top-n-sigma: keeps x_i >= max - top_n_sigma * sigma, sigma the population standard deviation
/// of the finite logits of the set (invariant to temperature); at least min_keep (the most
/// probable). Disabled at 0.

#include <decodekit/config.hpp>
#include <decodekit/sampling/step.hpp>

#include <algorithm>
#include <cmath>

DECODEKIT_BEGIN_NAMESPACE

struct top_n_sigma_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.top_n_sigma > 0.f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        w.materialise();
        candidates& kept = w.kept();
        double sum = 0, sq = 0;
        std::size_t n = 0;
        for (float v : kept.logits())
            if (std::isfinite(v)) {
                sum += v;
                sq += double(v) * v;
                ++n;
            }
        if (n == 0) return;
        const double mean = sum / double(n);
        const double var = std::max(0.0, sq / double(n) - mean * mean);
        const float m = w.kept_max();
        const float thr = float(double(m) - double(c.params.top_n_sigma) * std::sqrt(var));
        std::size_t count = 0;
        for (float v : kept.logits()) count += v >= thr;
        if (count >= c.params.min_keep) {
            const float* lg = kept.logit_storage();
            w.keep_if([&](std::size_t i) { return lg[i] >= thr; });
        } else {
            w.order();
            w.keep_first(c.params.min_keep);
        }
    }
};

DECODEKIT_END_NAMESPACE
