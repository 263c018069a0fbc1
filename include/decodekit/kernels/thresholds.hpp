#pragma once
/// \file kernels/thresholds.hpp
/// The truncation steps that keep the entries above a threshold, found by one filter pass (no
/// sort): epsilon, eta and mirostat v2's cut (a probability threshold), top-n-sigma (a logit
/// threshold from the max and the standard deviation); and weigh(), the weights of a kept set.
/// Semantics: kernels/reference.hpp (the same set exactly). Output in id order. No random
/// numbers are consumed.
///
/// Probability thresholds (epsilon, eta, mirostat_cut), passes: max; the exponential pass storing
/// every weight (Z, and for eta the entropy: H = log Z + sum w |d| / Z in the same pass, with
/// entropy.hpp's bound); one compaction pass keeping x_i >= a logit threshold a little below the
/// exact one; the kept set's smallest value (its cut, and whether any kept entry is undecided).
/// Entries whose float probability w_i / Z is within its error bound of the threshold (relative:
/// the exponential's, the argument's, Z's, eta's H; see kernels/weights.hpp) are decided again in
/// double: Z (and H) from a double-precision pass and the entry's weight the reference's (tier
/// double_pass), and if still within ~1e-10, with the reference's own Z and H (tier reference).
/// Fewer than min_keep kept: top_k_unordered's set (the ties of the min_keep-th kept, for epsilon
/// and eta; one entry for mirostat), its weights recomputed. Eta's exponential pass is
/// entropy.hpp's paired one (two vectors added in float before widening; its rounding in the
/// bounds). Cut form (epsilon_cut, eta_cut, mirostat_cut; kept_form): instead of the compaction,
/// one read pass counts the entries >= the lower logit threshold, sums their weights and finds the
/// smallest; undecided entries (below the upper threshold) are decided in place in a pass that
/// skips the vectors without one; the kept set stays {x >= its smallest value} over the row's
/// weights.
///
/// top_n_sigma_unordered, passes: one SIMD pass for the max, the count and the first two moments
/// of the finite entries (in double lanes, shifted by a sampled centre so that no cancellation
/// arises); one compaction pass; the weights of the kept entries (one exponential each). Entries
/// within the moments' rounding bound of the threshold are decided with the reference's own mean
/// and variance (tier reference, one scalar pass; rare: the band is ~1e-15 of sigma wide).

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/cut.hpp>
#include <decodekit/kernels/entropy.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/kernels/weights.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {
/// How a probability-threshold kernel (epsilon_cut, eta_cut, mirostat_cut) hands over its kept
/// set: compacted into `out` (ids, logits in id order, weights[0, kept) theirs: the _unordered
/// kernels' form), or as a cut over the row (truncation_result::cut; `out` left empty, weights
/// [0, V) the row's weights), or either: the cut unless the threshold bounds the kept set below
/// V / 16 entries (p_i >= theta for at most 1 / theta of them) or 256 strided entries of the row
/// estimate it below ~V / 20, where compacting writes little and costs less than the cut's read
/// pass. Which one came out: out.size() == kept (compacted;
/// also when nothing is kept) or not (a cut).
enum class kept_form : std::uint8_t { compact, cut, either };

namespace detail {

/// Which probability threshold a threshold kernel applies.
enum class prob_rule : std::uint8_t { epsilon, eta, mirostat };

/// The reference's threshold for a rule, given the row's Z and H in double.
inline double rule_threshold(prob_rule rule, float param, double h) noexcept {
    switch (rule) {
        case prob_rule::epsilon:
            return reference::decimal_floor(param);
        case prob_rule::eta: {
            const double e = reference::decimal_floor(param);
            return std::min(e, std::sqrt(e) * std::exp(-h));
        }
        case prob_rule::mirostat:
            return std::exp2(-double(param));
    }
    return 0;
}

/// What a threshold keeps before its undecided band is decided: the entries x_i >= lo.
struct kept_scan {
    std::size_t count = 0;  ///< how many
    double sum = 0;         ///< their weights' sum (float blocks of 32 vectors, then double)
    float min = std::numeric_limits<float>::infinity();  ///< their smallest value
};

/// One read-only pass over the row and its weights: kept_scan of {x_i >= lo} (NaN never).
template <class A>
kept_scan scan_at_least(const float* p, const float* w, std::size_t n, float lo) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    constexpr float pinf = std::numeric_limits<float>::infinity();
    const std::size_t nfull = n / L * L;
    const B lb(lo), inf(pinf), zero(0.f);
    B s0(0.f), s1(0.f), m0(pinf), m1(pinf);
    kept_scan r;
    auto one = [&](std::size_t i, B& s, B& mn) {
        const B v = B::load_unaligned(p + i);
        const auto keep = v >= lb;
        r.count += std::size_t(std::popcount(simd::to_mask<A>(keep)));
        s += simd::select<A>(keep, B::load_unaligned(w + i), zero);
        mn = simd::min<A>(mn, simd::select<A>(keep, v, inf));
    };
    std::size_t i = 0;
    while (i < nfull) {  // float blocks: <= 32 additions per lane before they go to double
        const std::size_t end = std::min(nfull, i + 32 * L);
        for (; i + 2 * L <= end; i += 2 * L) {
            one(i, s0, m0);
            one(i + L, s1, m1);
        }
        for (; i < end; i += L) one(i, s0, m0);
        r.sum += double(simd::reduce_add<A>(s0 + s1));
        s0 = s1 = zero;
    }
    r.min = simd::reduce_min<A>(simd::min<A>(m0, m1));
    for (; i < n; ++i)
        if (p[i] >= lo) {
            ++r.count;
            r.sum += double(w[i]);
            r.min = p[i] < r.min ? p[i] : r.min;
        }
    return r;
}

/// The shared body of epsilon, eta and mirostat_cut (see the file comment), its kept set in
/// `form` (see kept_form).
template <class A>
truncation_result keep_probable(std::span<const float> x, prob_rule rule, float param,
                                float temperature, std::size_t min_keep, candidates& out,
                                std::span<float> weights, kept_form form) noexcept {
    truncation_result r = sized(x, out, weights);
    const std::size_t n = x.size();
    if (!r.ok() || n == 0) return r;
    float* w = weights.data();
    const bool miro = rule == prob_rule::mirostat;
    const float m = kernels::max<A>(x);
    r.max = m;
    if (m == detail::neg_inf_f) {
        if (form != kept_form::compact) std::fill(w, w + n, 0.f);
        return r;
    }
    const float inv_t = 1.f / temperature;
    auto reference_set = [&](candidates& o) {
        if (rule == prob_rule::epsilon)
            reference::epsilon(x, param, temperature, min_keep, o);
        else if (rule == prob_rule::eta)
            reference::eta(x, param, temperature, min_keep, o);
        else
            reference::mirostat_cut(x, param, temperature, o);
    };
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t) || !(temperature > 0)) {
        if (form == kept_form::compact) return via_reference(x, temperature, out, w, reference_set);
        // the cut over the reference's weights of the row
        r.tier = exactness_tier::reference;
        r.sum = reference_weights(x, temperature, w);
        reference_set(out);
        r.kept = out.size();
        r.cut = prefix_cut(out);
        for (std::size_t j = 0; j < r.kept; ++j) r.kept_sum += double(w[std::size_t(out.ids()[j])]);
        out.clear();
        return r;
    }
    const bool eta = rule == prob_rule::eta;
    const row_sums rs = eta ? entropy_pass<A, true, true>(x, m, temperature, w)
                            : weigh_row<A, true>(x, m, inv_t, w);
    const double z = rs.sum;
    r.sum = z;
    constexpr float pinf = std::numeric_limits<float>::infinity();
    const std::size_t need = miro ? 1 : min_keep;
    // the kept set {x >= lo}, all decided: compacted, or counted and summed as a cut
    bool as_cut = form == kept_form::cut;
    auto finish = [&](float lo) {
        if (as_cut) {
            const kept_scan s = scan_at_least<A>(x.data(), w, n, lo);
            r.kept = s.count;
            r.kept_sum = s.sum;
            r.cut = s.count > 0 ? row_cut{s.min, pinf, npos, npos} : row_cut{};
        } else {
            r.kept =
                compact_cut_from<A>(x, w, {lo, pinf, npos, npos}, m, inv_t, out, 0, r.kept_sum);
            r.cut = r.kept > 0
                        ? row_cut{min_value<A>(out.logit_storage(), r.kept), pinf, npos, npos}
                        : row_cut{};
        }
    };
    // Fewer than min_keep kept: top_k_unordered's set (its weights: recomputed, or the row's)
    auto ensure_min_keep = [&] {
        if (r.kept >= need) return r;
        const tie_policy ties = miro ? tie_policy::exactly_k : tie_policy::keep_ties;
        r.kept = kernels::top_k_unordered<A>(x, need, ties, out);
        r.cut = top_k_cut(out, ties);
        if (as_cut) {
            r.kept_sum = cut_sum<A>(x.data(), w, r.cut, 0, n);
            out.clear();
        } else {
            r.kept_sum = weigh_logits<A>(out.logit_storage(), r.kept, m, inv_t, w);
        }
        return r;
    };
    if (!miro && !(param > 0)) {  // disabled: every valid entry
        as_cut = form != kept_form::compact;
        finish(lowest_f);
        return r;
    }
    // The threshold, with its relative error bound.
    const double beta_z = (rs.error(n) + sum_error(n) * z) / z;  // Z's relative error
    double h = 0, dh = 0;
    if (eta) {  // H = log Z - E_p[d], E_p[d]'s error bound from entropy.hpp
        const weighted_mean mean = mean_of_d(rs, n);
        h = std::log(z) + mean.c;
        dh = beta_z * (1 + beta_z) + mean.dc + 1e-15 * (std::fabs(h) + 1);
    }
    const double theta = rule_threshold(rule, param, h);
    if (form == kept_form::either)  // p_i >= theta for at most 1 / theta entries
        as_cut = !(theta > 0) || (1.01 / theta + double(need)) * 16 >= double(n);
    if (std::isnan(theta)) {  // (mirostat's mu NaN) no entry reaches it: min_keep's set
        r.cut = {};
        return ensure_min_keep();
    }
    if (!(theta > 0)) {  // every valid entry
        finish(lowest_f);
        return r;
    }
    // Keep p_i >= theta: x_i >= m + T ln(theta Z). An entry's float probability errs by
    // exp_error + arg_error |d_i| + beta_z, the threshold by dh, the reference by its own.
    const double ln_t = std::log(theta * z);  // d threshold (<= 0 for a kept max)
    const double d_thr = std::min(0.0, ln_t);
    const double rel =
        (exp_error + arg_error * (std::fabs(d_thr) + 1e-3) + beta_z + dh + reference_error(n)) *
            1.01 +
        1e-12;
    // band in d: [ln_t - rel', ln_t + rel'] (ln(1 + e) <= e); and the float rounding of x
    const double t_lo = double(m) + double(temperature) * (ln_t - 2 * rel);
    const double t_hi = double(m) + double(temperature) * (ln_t + 2 * rel);
    const float lo = t_lo <= double(lowest_f) ? lowest_f : std::nextafter(float(t_lo), neg_inf_f);
    const float hi = t_hi >= double(std::numeric_limits<float>::max())
                         ? pinf
                         : std::nextafter(float(t_hi), pinf);
    if (form == kept_form::either && as_cut && n >= 4096) {
        // the bound allows a large set: 256 strided entries estimate it (a set below ~V / 20 is
        // compacted; the choice costs time, never exactness)
        const std::size_t stride = n / 256;
        std::size_t hits = 0;
        for (std::size_t j = stride / 2; j < n; j += stride) hits += x[j] >= lo;
        as_cut = hits >= 13;
    }
    finish(lo);
    // Entries below hi are undecided (the kept set's smallest value is below hi exactly when
    // some entry is): decide them (double, then the reference).
    if (r.kept > 0 && r.cut.lo < hi) {
        r.tier = exactness_tier::double_pass;
        const double_sums ds = double_pass<A>(x, m, temperature, no_partial_sum);
        const double zd = ds.sum;
        const double hd = std::log(zd) + ds.wd / zd;
        const double thd = rule_threshold(rule, param, hd);
        // q = W / zd and thd against the reference's: zd's bound, the reference's own rounding,
        // and for eta H's (its double sums, generously)
        const double ed = (2 * ds.error(n) / zd + reference_error(n)) * 1.01 + (eta ? 1e-11 : 0.0);
        bool exact = false;
        double z_ref = 0, th_ref = 0;
        auto keep = [&](float v) {
            if (v >= hi) return true;
            const double wr = reference::weight(v, m, temperature);
            const double q = wr / zd;
            if (!exact && std::fabs(q / thd - 1) <= ed) {
                // tier reference: the reference's own Z and threshold
                exact = true;
                r.tier = exactness_tier::reference;
                z_ref = reference::exp_sum(x, temperature).sum;
                th_ref =
                    rule_threshold(rule, param, eta ? reference::entropy(x, temperature) : 0.0);
            }
            return exact ? wr / z_ref >= th_ref : q >= thd;
        };
        float kept_min = pinf;
        std::size_t kept = 0;
        double removed = 0;
        if (as_cut) {
            // the row's entries in [lo, hi) decided, the smallest entry >= hi found (the set
            // stays {x >= its smallest value}): vectors without an undecided entry are skipped
            using B = simd::batch<A>;
            constexpr std::size_t L = simd::lanes<A>;
            const float* p = x.data();
            const B lb(lo), hb(hi), inf(pinf);
            B mh(pinf);
            std::size_t dropped = 0;
            auto lane = [&](std::size_t i) {
                const float v = p[i];
                if (!(v >= lo) || v >= hi) return;
                if (keep(v)) {
                    kept_min = v < kept_min ? v : kept_min;
                } else {
                    ++dropped;
                    removed += double(w[i]);
                }
            };
            std::size_t i = 0;
            for (; i + L <= n; i += L) {
                const B v = B::load_unaligned(p + i);
                const auto high = v >= hb;
                mh = simd::min<A>(mh, simd::select<A>(high, v, inf));
                if (simd::to_mask<A>((v >= lb) & (v < hb)))
                    for (std::size_t j = 0; j < L; ++j) lane(i + j);
            }
            float min_hi = simd::reduce_min<A>(mh);
            for (; i < n; ++i) {
                lane(i);
                if (p[i] >= hi) min_hi = p[i] < min_hi ? p[i] : min_hi;
            }
            kept = r.kept - dropped;
            kept_min = min_hi < kept_min ? min_hi : kept_min;
        } else {
            token_id* ids = out.id_storage();
            float* lg = out.logit_storage();
            for (std::size_t j = 0; j < r.kept; ++j) {
                const bool k = keep(lg[j]);
                ids[kept] = ids[j];
                lg[kept] = lg[j];
                w[kept] = w[j];
                kept += k;
                if (k)
                    kept_min = lg[j] < kept_min ? lg[j] : kept_min;
                else
                    removed += double(w[j]);
            }
            out.resize(kept);
        }
        r.kept = kept;
        r.kept_sum -= removed;
        // the kept set is {x >= its smallest value} (the probability is monotone in the logit)
        r.cut = kept > 0 ? row_cut{kept_min, pinf, npos, npos} : row_cut{};
    }
    return ensure_min_keep();
}

}  // namespace detail

/// Epsilon sampling, unordered: the set of reference::epsilon (p_i >= decimal_floor(epsilon);
/// fewer than min_keep: the ties of the min_keep-th largest) in id order, weights[0, kept) the
/// kept entries' weights (weights: the whole row's scratch). See the file comment.
/// Status bad_size when out.capacity() or weights.size() < x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result epsilon_unordered(std::span<const float> x, float epsilon, float temperature,
                                    std::size_t min_keep, candidates& out,
                                    std::span<float> weights) noexcept {
    return detail::keep_probable<A>(x, detail::prob_rule::epsilon, epsilon, temperature, min_keep,
                                    out, weights, kept_form::compact);
}

/// Eta sampling, unordered: the set of reference::eta (p_i >= min(e, sqrt(e) exp(-H)),
/// e = decimal_floor(eta); the min_keep rule of epsilon). As epsilon_unordered.
template <class A = simd::default_arch>
truncation_result eta_unordered(std::span<const float> x, float eta, float temperature,
                                std::size_t min_keep, candidates& out,
                                std::span<float> weights) noexcept {
    return detail::keep_probable<A>(x, detail::prob_rule::eta, eta, temperature, min_keep, out,
                                    weights, kept_form::compact);
}

/// Mirostat v2's cut, unordered: the set of reference::mirostat_cut (p_i >= 2^-mu, at least the
/// most probable entry). As epsilon_unordered.
template <class A = simd::default_arch>
truncation_result mirostat_cut_unordered(std::span<const float> x, float mu, float temperature,
                                         candidates& out, std::span<float> weights) noexcept {
    return detail::keep_probable<A>(x, detail::prob_rule::mirostat, mu, temperature, 1, out,
                                    weights, kept_form::compact);
}

/// Epsilon sampling's set as a cut over the row (`form`: kept_form::cut) or, with
/// kept_form::either, compacted instead when the threshold bounds it below V / 16 entries (see
/// kept_form): the set of epsilon_unordered. As a cut: truncation_result::cut keeps exactly the
/// set ({x >= its smallest value}, or top_k's cut under min_keep), kept and kept_sum its size and
/// weights' sum, weights[0, V) the row's weights exp((x_i - max) / T) (as top_p_cut leaves
/// them; the reference's where the reference decides a row with +inf entries), `scratch` empty.
/// Passes beyond epsilon_unordered's exponential pass: one read pass (count, sum, smallest kept
/// value) instead of the compaction. Status bad_size when scratch.capacity() or weights.size() <
/// x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result epsilon_cut(std::span<const float> x, float epsilon, float temperature,
                              std::size_t min_keep, candidates& scratch, std::span<float> weights,
                              kept_form form = kept_form::cut) noexcept {
    return detail::keep_probable<A>(x, detail::prob_rule::epsilon, epsilon, temperature, min_keep,
                                    scratch, weights, form);
}

/// Eta sampling's set as a cut over the row: eta_unordered's set in the form of epsilon_cut.
template <class A = simd::default_arch>
truncation_result eta_cut(std::span<const float> x, float eta, float temperature,
                          std::size_t min_keep, candidates& scratch, std::span<float> weights,
                          kept_form form = kept_form::cut) noexcept {
    return detail::keep_probable<A>(x, detail::prob_rule::eta, eta, temperature, min_keep, scratch,
                                    weights, form);
}

/// Mirostat v2's cut as a cut over the row: mirostat_cut_unordered's set in the form of
/// epsilon_cut.
template <class A = simd::default_arch>
truncation_result mirostat_cut(std::span<const float> x, float mu, float temperature,
                               candidates& scratch, std::span<float> weights,
                               kept_form form = kept_form::cut) noexcept {
    return detail::keep_probable<A>(x, detail::prob_rule::mirostat, mu, temperature, 1, scratch,
                                    weights, form);
}

/// The weights of a kept set's logits: w_j = exp((logits_j - max) / T) (float, as the
/// truncation kernels compute them) to w[0, logits.size()); returns their sum (double lanes).
/// NaN and -inf give 0. Status: w.size() < logits.size() returns NaN and writes nothing.
/// \pre max finite (the row max), temperature > 0 with 1 / T finite
template <class A = simd::default_arch>
double weigh(std::span<const float> logits, float max, float temperature,
             std::span<float> w) noexcept {
    if (w.size() < logits.size()) return std::numeric_limits<double>::quiet_NaN();
    return detail::weigh_logits<A>(logits.data(), logits.size(), max, 1.f / temperature, w.data());
}

namespace detail {

/// max, count and shifted moments of the finite entries in one pass (double lanes).
struct finite_moments {
    float max = neg_inf_f;  ///< largest valid entry (+inf if any)
    std::size_t finite = 0;
    double centre = 0;  ///< the shift s
    double s1 = 0;      ///< sum (x - s)
    double s2 = 0;      ///< sum (x - s)^2
    double abs1 = 0;    ///< sum |x - s| (for the rounding bound)
};

template <class A>
finite_moments moments(std::span<const float> x) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    finite_moments r;
    // centre: the mean of up to 64 strided finite entries
    {
        double s = 0;
        std::size_t k = 0;
        const std::size_t stride = std::max<std::size_t>(1, n / 64);
        for (std::size_t i = 0; i < n; i += stride)
            if (std::isfinite(p[i])) {
                s += p[i];
                ++k;
            }
        r.centre = k ? s / double(k) : 0.0;
    }
    // the centre as a float: invalid lanes are replaced by it, so they add exactly 0
    const float cf = float(r.centre);
    r.centre = double(cf);
    const D cd = D(r.centre);
    const B cfb(cf), fzero(0.f);
    B mx(neg_inf_f);
    D a1(0.0), a2(0.0), aa(0.0), b1(0.0), b2(0.0), ba(0.0);
    std::size_t i = 0;
    auto add = [&](const B& v, D& s1, D& s2, D& sa) {
        mx = simd::max_ignore_nan<A>(mx, v);
        const auto fin = (v - v) == fzero;  // false for NaN and +-inf
        r.finite += std::size_t(std::popcount(simd::to_mask<A>(fin)));
        D lo, hi;
        simd::widen<A>(simd::select<A>(fin, v, cfb), lo, hi);
        lo = lo - cd;
        hi = hi - cd;
        s1 += lo + hi;
        s2 = simd::fma<A>(lo, lo, simd::fma<A>(hi, hi, s2));
        sa += simd::abs<A>(lo) + simd::abs<A>(hi);
    };
    for (; i + 2 * L <= nfull; i += 2 * L) {
        add(B::load_unaligned(p + i), a1, a2, aa);
        add(B::load_unaligned(p + i + L), b1, b2, ba);
    }
    if (i < nfull) {
        add(B::load_unaligned(p + i), a1, a2, aa);
        i += L;
    }
    a1 += b1;
    a2 += b2;
    aa += ba;
    r.max = simd::reduce_max<A>(mx);
    r.s1 = simd::reduce_add<A>(a1);
    r.s2 = simd::reduce_add<A>(a2);
    r.abs1 = simd::reduce_add<A>(aa);
    for (; i < n; ++i) {
        const float v = p[i];
        r.max = v > r.max ? v : r.max;
        if (!std::isfinite(v)) continue;
        const double d = double(v) - r.centre;
        r.s1 += d;
        r.s2 += d * d;
        r.abs1 += std::fabs(d);
        ++r.finite;
    }
    return r;
}

/// The reference's own top-n-sigma threshold (reference::top_n_sigma's arithmetic).
inline double top_n_sigma_threshold_exact(std::span<const float> x, float m, float nsig) noexcept {
    double sum = 0;
    std::size_t f = 0;
    for (float v : x)
        if (std::isfinite(v)) {
            sum += v;
            ++f;
        }
    double var = 0;
    if (f > 0) {
        const double mean = sum / double(f);
        for (float v : x)
            if (std::isfinite(v)) var += (double(v) - mean) * (double(v) - mean);
        var /= double(f);
    }
    return double(m) - double(nsig) * std::sqrt(var);
}

}  // namespace detail

/// Top-n-sigma, unordered: the set of reference::top_n_sigma (x_i >= max - n sigma over the
/// finite entries; fewer than min_keep: the min_keep largest, ties by lowest id; n <= 0 keeps
/// every valid entry) in id order; weights[0, kept) the kept entries' weights at temperature T
/// (the step itself does not depend on T); sum is NaN (not computed). See the file comment.
/// Status bad_size when out.capacity() or weights.size() < x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result top_n_sigma_unordered(std::span<const float> x, float n_sigma, float temperature,
                                        std::size_t min_keep, candidates& out,
                                        std::span<float> weights) noexcept {
    truncation_result r = detail::sized(x, out, weights);
    if (!r.ok()) return r;
    r.sum = std::numeric_limits<double>::quiet_NaN();
    const std::size_t n = x.size();
    if (n == 0) return r;
    float* w = weights.data();
    const float inv_t = 1.f / temperature;
    const detail::finite_moments mo = detail::moments<A>(x);
    const float m = mo.max;
    r.max = m;
    if (m == detail::neg_inf_f) return r;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t) || !(temperature > 0)) {
        auto rr = detail::via_reference(x, temperature, out, w, [&](candidates& o) {
            reference::top_n_sigma(x, n_sigma, min_keep, o);
        });
        rr.sum = r.sum;
        return rr;
    }
    auto weigh_kept = [&] {
        r.kept = out.size();
        r.kept_sum = detail::weigh_logits<A>(out.logit_storage(), r.kept, m, inv_t, w);
        return r;
    };
    if (!(n_sigma > 0)) {
        kernels::filter_at_least<A>(x, detail::lowest_f, out);
        r.cut = {detail::lowest_f, std::numeric_limits<float>::infinity(), npos, npos};
        return weigh_kept();
    }
    double thr = double(m);
    double band = 0;
    if (mo.finite > 0) {
        const double f = double(mo.finite);
        const double mean_shift = mo.s1 / f;
        const double var = std::max(0.0, mo.s2 / f - mean_shift * mean_shift);
        const double sigma = std::sqrt(var);
        thr = double(m) - double(n_sigma) * sigma;
        // Rounding of the sums (n 2^-53 of their magnitudes) and of the reference's own two
        // passes, carried to sigma (d sigma <= d var / (2 sigma), or sqrt(d var) near 0).
        const double e2 =
            detail::sum_error(mo.finite) *
            (mo.s2 + 2 * std::fabs(mean_shift) * mo.abs1 + mean_shift * mean_shift * f) / f * 4;
        const double dsig =
            sigma > 0 ? std::min(std::sqrt(e2), e2 / (2 * sigma) + 1e-300) : std::sqrt(e2);
        band = double(n_sigma) * (dsig + 4 * detail::sum_error(mo.finite) * sigma) +
               std::fabs(thr) * 0x1p-50 + 1e-300;
    }
    const float lo =
        std::max(detail::lowest_f, std::nextafter(float(thr - band), detail::neg_inf_f));
    const double hi = thr + band;
    kernels::filter_at_least<A>(x, std::min(lo, m), out);
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    // entries > hi are decided: count those >= the float after hi rounded up
    const float hi_f = std::nextafter(float(hi), std::numeric_limits<float>::infinity());
    const std::size_t undecided =
        out.size() - detail::count_reaching<A>(lg, out.size(), std::max(hi_f, detail::lowest_f));
    if (undecided > 0) {
        // entries within the band (or all of them when the band is wide): the exact threshold
        // decides those near it
        bool exact = false;
        double t_ref = thr;
        std::size_t k = 0;
        for (std::size_t j = 0; j < out.size(); ++j) {
            const double v = double(lg[j]);
            bool keep = v > hi;
            if (!keep) {
                if (!exact && v >= thr - band) {
                    exact = true;
                    r.tier = exactness_tier::reference;
                    t_ref = detail::top_n_sigma_threshold_exact(x, m, n_sigma);
                }
                keep = exact ? v >= t_ref : v >= thr;
            }
            ids[k] = ids[j];
            lg[k] = lg[j];
            k += keep;
        }
        out.resize(k);
    }
    if (out.size() < min_keep) {
        kernels::top_k_unordered<A>(x, min_keep, tie_policy::exactly_k, out);
        r.cut = detail::top_k_cut(out, tie_policy::exactly_k);
    } else if (!out.empty()) {
        r.cut = {detail::min_value<A>(out.logit_storage(), out.size()),
                 std::numeric_limits<float>::infinity(), npos, npos};
    }
    return weigh_kept();
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
