#pragma once
/// \file kernels/xtc.hpp
/// XTC's removal (exclude top choices), given that its coin fired: the head (p_i >= threshold,
/// at most 1 / threshold entries) found by one filter pass, then a sort of that handful only.
/// Semantics: reference::xtc_removed (the same entries). No random numbers are consumed.
///
/// Passes: max; the exponential pass storing every weight (Z); one compaction pass keeping the
/// logits above a threshold a little below the exact one; a count of the valid entries when
/// min_keep > 1 and something would be removed. Entries within the float bound of the threshold
/// are decided in double, then by the reference's own arithmetic (tiers as in thresholds.hpp).

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/thresholds.hpp>
#include <decodekit/kernels/weights.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <functional>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

/// XTC's removal, given that its coin fired: writes to `out` the entries reference::xtc_removed
/// removes (the head p_i >= decimal_floor(threshold) but its least probable entry, when the head
/// holds two or more and at least min_keep valid entries remain; else none), sorted like
/// reference::top_k (logit descending, ties by id). weights (the whole row's scratch) receive the
/// weights of every entry of the row, the removed ones set to 0: the working set that remains,
/// ready for a draw over the row. truncation_result: kept is the number removed (out.size()),
/// sum the row's normaliser, kept_sum the weight that remains (sum minus the removed weights).
/// Status bad_size when out.capacity() or weights.size() < x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result xtc_remove(std::span<const float> x, float threshold, float temperature,
                             std::size_t min_keep, candidates& out,
                             std::span<float> weights) noexcept {
    truncation_result r = detail::sized(x, out, weights);
    const std::size_t n = x.size();
    if (!r.ok() || n == 0) return r;
    float* w = weights.data();
    const float m = kernels::max<A>(x);
    r.max = m;
    if (m == detail::neg_inf_f) {
        std::fill(w, w + n, 0.f);
        return r;
    }
    const float inv_t = 1.f / temperature;
    auto remaining = [&](double z) {
        // zero the removed entries' weights; the rest of the row keeps its weights
        double removed = 0;
        for (std::size_t j = 0; j < out.size(); ++j) {
            float& e = w[std::size_t(out.ids()[j])];
            removed += double(e);
            e = 0.f;
        }
        r.kept = out.size();
        r.sum = z;
        r.kept_sum = z - removed;
        return r;
    };
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t) || !(temperature > 0)) {
        reference::xtc_removed(x, threshold, temperature, min_keep, out);
        const reference::softmax_stats st = reference::exp_sum(x, temperature);
        for (std::size_t i = 0; i < n; ++i)
            w[i] = float(reference::weight(x[i], st.max, temperature));
        r.tier = exactness_tier::reference;
        return remaining(st.sum);
    }
    const detail::row_sums rs = detail::weigh_row<A, true>(x, m, inv_t, w);
    const double z = rs.sum;
    const double theta = reference::decimal_floor(threshold);
    if (!(theta > 0)) {
        // every valid entry is in the head: removal of all but the least probable
        reference::xtc_removed(x, threshold, temperature, min_keep, out);
        r.tier = exactness_tier::reference;
        return remaining(z);
    }
    const double beta_z = (rs.error(n) + detail::sum_error(n) * z) / z;
    const double ln_t = std::log(theta * z);
    const double rel = (detail::exp_error + detail::arg_error * (std::fabs(ln_t) + 1e-3) + beta_z +
                        detail::reference_error(n)) *
                           1.01 +
                       1e-12;
    const double t_lo = double(m) + double(temperature) * (ln_t - 2 * rel);
    const double t_hi = double(m) + double(temperature) * (ln_t + 2 * rel);
    const float lo = t_lo <= double(detail::lowest_f)
                         ? detail::lowest_f
                         : std::nextafter(float(t_lo), detail::neg_inf_f);
    // entries at or above hi are in the head: the float above t_hi (t_hi = m + T (...) rounds to
    // m when |m| dwarfs the band, e.g. m = 1e30, and the head must then be decided in double)
    const float hi = t_hi >= double(std::numeric_limits<float>::max())
                         ? std::numeric_limits<float>::infinity()
                         : std::nextafter(float(t_hi), std::numeric_limits<float>::infinity());
    kernels::filter_at_least<A>(x, lo, out);  // the head and the undecided: few entries
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    std::size_t k = 0;
    bool doubled = false, exact = false;
    double zd = 0, z_ref = 0;
    double ed = 0;
    for (std::size_t j = 0; j < out.size(); ++j) {
        bool keep = lg[j] >= hi;
        if (!keep) {
            const double wr = reference::weight(lg[j], m, temperature);
            if (!doubled) {
                doubled = true;
                r.tier = exactness_tier::double_pass;
                const detail::double_sums ds =
                    detail::double_pass<A>(x, m, temperature, detail::no_partial_sum);
                zd = ds.sum;
                ed = (2 * ds.error(n) / zd + detail::reference_error(n)) * 1.01;
            }
            if (!exact && std::fabs(wr / zd / theta - 1) <= ed) {
                exact = true;
                r.tier = exactness_tier::reference;
                z_ref = reference::exp_sum(x, temperature).sum;
            }
            keep = exact ? wr / z_ref >= theta : wr / zd >= theta;
        }
        ids[k] = ids[j];
        lg[k] = lg[j];
        k += keep;
    }
    out.resize(k);
    if (k < 2) {
        out.clear();
        return remaining(z);
    }
    // the head, sorted (a handful: at most 1 / threshold entries)
    std::uint64_t* keys = out.key_storage();
    for (std::size_t j = 0; j < k; ++j) keys[j] = detail::rank_key(lg[j], ids[j]);
    std::sort(keys, keys + k, std::greater<std::uint64_t>());
    const std::size_t removed = k - 1;
    if (min_keep > 1) {
        const std::size_t valid = detail::count_reaching<A>(x.data(), n, detail::lowest_f);
        if (valid - removed < min_keep) {
            out.clear();
            return remaining(z);
        }
    }
    for (std::size_t j = 0; j < removed; ++j) {
        ids[j] = detail::key_id(keys[j]);
        lg[j] = x[std::size_t(ids[j])];
    }
    out.resize(removed);
    return remaining(z);
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
