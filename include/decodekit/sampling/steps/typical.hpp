#pragma once
/// \file sampling/steps/typical.hpp
/// Locally typical sampling: keeps a prefix in |-log p - H| order (ties: more probable first,
/// then lower id) whose mass reaches typical_p, at least max(1, min_keep). Disabled at 1.
///
/// Full set, without sorting the row: with d_i = (x_i - m)/T, -log p_i = log S - d_i, so the key
/// is |d_i - c| with c = log S - H (the p-weighted mean of d): the kept set is a logit interval
/// around m + T c. S and H come from the vectorised kernels (exp_sum, entropy); one compaction
/// keeps x >= m + T (c - kappa), a superset of every entry with key <= kappa; the survivors are
/// ordered by key lazily and walked; if the walk would pass kappa (or runs out of survivors)
/// kappa widens and the compaction is redone (at the end: every valid entry). Rows with +inf or
/// no valid entry take the narrowed-set path on the materialised row.

#include <decodekit/config.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/sampling/step.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

DECODEKIT_BEGIN_NAMESPACE

struct typical_step {
    static bool enabled(const sampling_params& p, std::size_t) noexcept {
        return p.typical_p < 1.f;
    }
    static void apply(working_set& w, const step_context& c) noexcept {
        w.workspace().reserve_typical();
        w.materialise_if_overlaid();
        if (w.full() && full_row(w, c)) return;
        w.materialise();
        w.order();
        candidates& kept = w.kept();
        sampling_workspace& ws = w.workspace();
        const double s = w.fill_weights();
        if (!(s > 0)) return;
        double h = 0;
        const std::span<const float> wt = w.weights();
        for (float v : wt)
            if (v > 0) {
                const double q = v / s;
                h -= q * std::log(q);
            }
        const std::size_t n = kept.size();
        // order by |-log p - H| ascending (ties: more probable first, then lower id: the
        // ordered order)
        const token_id* ids = kept.id_storage();
        const float* lg = kept.logit_storage();
        double* key = ws.key.data();
        std::size_t* perm = ws.perm.data();
        for (std::size_t i = 0; i < n; ++i) {
            const double q = wt[i] / s;
            key[i] = q > 0 ? std::fabs(-std::log(q) - h) : std::numeric_limits<double>::infinity();
            perm[i] = i;
        }
        // equal keys keep the probability order (index order); std::sort: no allocation
        std::sort(perm, perm + n, [key](std::size_t a, std::size_t b) {
            return key[a] < key[b] || (key[a] == key[b] && a < b);
        });
        double before = 0;
        std::size_t kept_n = 0;
        const std::size_t keep_at_least = std::max<std::size_t>(1, c.params.min_keep);
        const double tau = c.params.typical_p;
        while (kept_n < n && (kept_n < keep_at_least || before < tau)) {
            before += wt[perm[kept_n]] / s;
            ++kept_n;
        }
        // keep perm[0..kept) in probability order
        std::sort(perm, perm + kept_n);
        for (std::size_t j = 0; j < kept_n; ++j) {
            const std::size_t i = perm[j];
            ws.sorted[j] = {lg[i], ids[i]};
        }
        w.write_back(kept_n);
    }

private:
    /// The full-row path (see the file comment); false (nothing changed) for rows with +inf or
    /// no valid entry.
    static bool full_row(working_set& w, const step_context& c) noexcept {
        const std::span<const float> x = w.row();
        const float t = w.temperature();
        const auto st = kernels::exp_sum(x, t);
        const float m = st.max;
        if (!(m > -detail::f_inf) || m == detail::f_inf || !(st.sum > 0)) return false;
        const double s = st.sum;
        const double h = kernels::entropy(x, t);
        if (!std::isfinite(h)) return false;
        const double cc = std::log(s) - h;  // <= 0 up to rounding
        const double tau = c.params.typical_p;
        const std::size_t keep_at_least = std::max<std::size_t>(1, c.params.min_keep);
        sampling_workspace& ws = w.workspace();
        candidates& kept = w.kept();
        const token_id* ids = kept.id_storage();
        const float* lg = kept.logit_storage();
        double* key = ws.key.data();
        std::size_t* perm = ws.perm.data();
        // first guess: the interval reaches up to the row max
        for (double kappa = std::max(-cc, 0.0) + 0.5;; kappa = 2 * kappa + 1) {
            // key <= kappa implies d >= c - kappa - 6e-8 (float rounding of the weight); below
            // d = -80 weights may be subnormal (rounding unbounded in log): take every entry
            const double lo_d = cc - kappa - 1e-6;
            const bool all = lo_d < -80.0;
            float lo = -detail::f_inf;
            if (!all) {
                lo = std::nextafter(float(double(m) + double(t) * lo_d), -detail::f_inf);
                lo = std::min(lo, m);
            }
            kernels::filter_at_least(x, lo, kept);
            const std::size_t n = kept.size();
            // key |d - c| (= |-log(w / S) - H| up to the float rounding of w, ~6e-8); where the
            // weight may be subnormal or 0 (d < -80, only when taking every entry) the exact form
            for (std::size_t i = 0; i < n; ++i) {
                const double d = (double(lg[i]) - double(m)) / double(t);
                if (d >= -80.0) {
                    key[i] = std::fabs(d - cc);
                } else {
                    const double q = double(float(std::exp(d))) / s;
                    key[i] = q > 0 ? std::fabs(-std::log(q) - h)
                                   : std::numeric_limits<double>::infinity();
                }
                perm[i] = i;
            }
            auto before_in_order = [key, lg, ids](std::size_t a, std::size_t b) {
                if (key[a] != key[b]) return key[a] < key[b];
                if (lg[a] != lg[b]) return lg[a] > lg[b];
                return ids[a] < ids[b];
            };
            std::size_t ordered = 0;  // perm[0, ordered) in final order
            auto ensure_ordered = [&](std::size_t upto) {
                if (upto <= ordered) return;
                upto = std::min(n, std::max({upto, ordered * 4, std::size_t(64)}));
                if (upto < n)
                    std::nth_element(perm + ordered, perm + (upto - 1), perm + n, before_in_order);
                std::sort(perm + ordered, perm + upto, before_in_order);
                ordered = upto;
            };
            double before = 0;
            std::size_t kept_n = 0;
            bool complete = true;  // every entry walked has key <= kappa
            while (kept_n < n && (kept_n < keep_at_least || before < tau)) {
                ensure_ordered(kept_n + 1);
                if (!all && !(key[perm[kept_n]] <= kappa)) {
                    complete = false;
                    break;
                }
                before += double(float(detail::cand_weight(lg[perm[kept_n]], m, t))) / s;
                ++kept_n;
            }
            if (!all && (!complete || kept_n == n)) continue;  // widen
            for (std::size_t j = 0; j < kept_n; ++j) ws.sorted[j] = {lg[perm[j]], ids[perm[j]]};
            std::sort(ws.sorted.begin(), ws.sorted.begin() + std::ptrdiff_t(kept_n),
                      detail::scored_before);
            w.write_back(kept_n);
            w.set_kept(true);
            return true;
        }
    }
};

DECODEKIT_END_NAMESPACE
