#pragma once
/// \file sampling/steps/weight_threshold.hpp
/// What the weight-threshold steps (epsilon, eta, mirostat) share: the full row's statistics and
/// the compaction of the entries that may pass a weight threshold (detail, not a step).

#include <decodekit/config.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <algorithm>
#include <cmath>

DECODEKIT_BEGIN_NAMESPACE
namespace detail {

/// Full-row {max, S, H} at temperature t from the vectorised kernels (exp_sum: 2 passes;
/// entropy, only when `want_h`: 2 more). S equals the sum fill_weights() gives the materialised
/// row up to rounding (float lanes, another summation order).
struct row_stats {
    float max;
    double sum;
    double h;
};
inline row_stats full_row_stats(std::span<const float> x, float t, bool want_h) noexcept {
    const auto st = kernels::exp_sum(x, t);
    return {st.max, st.sum, want_h && st.sum > 0 ? kernels::entropy(x, t) : 0.0};
}

/// Full row: keeps a superset of the entries with float weight >= w_thr (a logit threshold a
/// little below the exact one; the row max always survives), ordered, weights filled; the
/// caller then cuts exactly as on the materialised row. Returns false (the set still full) when
/// the shortcut does not apply: +inf max, non-finite threshold, or fewer survivors than
/// `at_least`.
inline bool threshold_candidates(working_set& w, float m, double w_thr,
                                 std::size_t at_least) noexcept {
    if (!(m > -f_inf) || m == f_inf || !(w_thr > 0)) return false;
    // float(exp(d)) >= w_thr implies d >= log(w_thr) - 2^-23 (relative rounding); 1e-4 slack
    const double thr_d = double(m) + double(w.temperature()) * (std::log(w_thr) - 1e-4);
    if (!std::isfinite(thr_d)) return false;
    float thr = std::nextafter(float(thr_d), -f_inf);
    thr = std::min(thr, m);
    kernels::filter_at_least(w.row(), thr, w.kept());
    if (w.kept().size() < at_least) return false;
    w.set_kept(false);
    w.order();
    w.fill_weights();  // same max as the full row: it survives
    return true;
}

/// min(min_keep, valid entries of the row): one count pass only when min_keep > 1.
inline std::size_t min_keep_of(const working_set& w, std::size_t min_keep) noexcept {
    return min_keep <= 1 ? min_keep : std::min(min_keep, w.valid_count());
}

}  // namespace detail
DECODEKIT_END_NAMESPACE
