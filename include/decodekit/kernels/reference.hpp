#pragma once
/// \file kernels/reference.hpp
/// Scalar reference implementations: the executable definition of every kernel's semantics.
/// The SIMD kernels in kernels/ must equal these (exactly for selections and ids, within a tight
/// relative tolerance for reductions); tests compare them. Simple, obviously correct, slow.
///
/// Special values, for every kernel: NaN entries are ignored (never selected, never drawn,
/// probability 0); -inf entries have probability 0 and are never selected; +inf entries win:
/// when any entry is +inf, the distribution is uniform over the +inf entries.
///
/// Truncation steps (top_k, top_p, min_p, typical, epsilon, eta, top_n_sigma, mirostat's cut,
/// XTC's removal) take a row whose entries outside the working set are -inf, compute in double
/// (weights W_i = weight(x_i, max, T), Z = their sum in id order, p_i = W_i / Z) and return
/// their set in reference order: logit descending, ties by ascending id.
/// A probability parameter given as a float (top_p, typical_p, min_p, epsilon, eta,
/// xtc_threshold) stands for the decimal the user wrote: a mass or probability that reaches
/// decimal_floor(p), the lowest real that rounds to p, has reached p (so 0.8f, held as
/// 0.800000012, is reached by the masses 0.5 + 0.3 of a row whose double sum lands a rounding
/// error below 0.8); "strictly exceeds p" means exceeds decimal_ceil(p).
/// Token bitmasks (kernels/mask.hpp): a masked kernel is the unmasked one on the row with every
/// disallowed entry at -inf (masked_copy); the masked functions here read the mask entry by
/// entry (masked_entry) and allocate nothing, except masked_copy.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/random.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <numeric>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE
namespace reference {

inline constexpr float neg_inf = -std::numeric_limits<float>::infinity();

/// The lowest real that rounds to the float p: the midpoint between p and the next float below
/// (exact in double). NaN for NaN.
inline double decimal_floor(float p) noexcept {
    return (double(p) + double(std::nextafter(p, neg_inf))) / 2;
}
/// The highest real that rounds to the float p: the midpoint between p and the next float above.
inline double decimal_ceil(float p) noexcept {
    return (double(p) + double(std::nextafter(p, -neg_inf))) / 2;
}

using kernels::token_bitmask;

/// x[i] when the mask allows token i, else -inf (a token without a bit is disallowed).
inline float masked_entry(std::span<const float> x, const token_bitmask& mask,
                          std::size_t i) noexcept {
    return mask.allowed(i) ? x[i] : neg_inf;
}

/// The row with every disallowed entry at -inf: what a masked kernel sees.
inline std::vector<float> masked_copy(std::span<const float> x, const token_bitmask& mask) {
    std::vector<float> y(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) y[i] = masked_entry(x, mask, i);
    return y;
}

/// Largest non-NaN entry; -inf if the span is empty or all NaN.
inline float max(std::span<const float> x) noexcept {
    float m = neg_inf;
    for (float v : x)
        if (v > m) m = v;
    return m;
}

/// Lowest index of the largest non-NaN entry; npos if empty or all NaN.
inline std::size_t argmax(std::span<const float> x) noexcept {
    std::size_t best = npos;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isnan(x[i]) && (best == npos || x[i] > x[best])) best = i;
    return best;
}

/// Largest allowed non-NaN entry; -inf if there is none. (= max(masked_copy(x, mask)))
inline float max(std::span<const float> x, const token_bitmask& mask) noexcept {
    float m = neg_inf;
    for (std::size_t i = 0; i < x.size(); ++i) m = std::max(m, masked_entry(x, mask, i));
    return m;
}

/// Lowest index of the largest allowed non-NaN entry; npos if no allowed entry is non-NaN. A
/// disallowed entry is never returned (argmax(masked_copy(x, mask)) would return the first
/// disallowed entry of a row whose allowed entries are all -inf).
inline std::size_t argmax(std::span<const float> x, const token_bitmask& mask) noexcept {
    std::size_t best = npos;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (mask.allowed(i) && !std::isnan(x[i]) && (best == npos || x[i] > x[best])) best = i;
    return best;
}

/// Sum of the entries in double (the read floor's work).
inline double sum(std::span<const float> x) noexcept {
    double s = 0;
    for (float v : x) s += v;
    return s;
}

/// Max and normaliser of the tempered distribution.
struct softmax_stats {
    float max;   ///< largest non-NaN logit (-inf if none)
    double sum;  ///< sum over entries of exp((x_i - max) / T); 0 if no entry has probability
};

/// Weight of one entry: exp((x - m) / T), with the special-value rules (+inf max: 1 for +inf
/// entries, 0 otherwise; NaN or -inf: 0).
inline double weight(float x, float m, float temperature) noexcept {
    if (std::isnan(x) || x == neg_inf) return 0.0;
    if (std::isinf(m)) return x == m ? 1.0 : 0.0;
    return std::exp((double(x) - double(m)) / double(temperature));
}

/// max and sum of exp((x_i - max)/T).  \pre temperature > 0
inline softmax_stats exp_sum(std::span<const float> x, float temperature = 1.f) noexcept {
    const float m = max(x);
    double s = 0;
    for (float v : x) s += weight(v, m, temperature);
    return {m, s};
}

/// exp_sum over the allowed entries (= exp_sum(masked_copy(x, mask), T)).
inline softmax_stats exp_sum(std::span<const float> x, float temperature,
                             const token_bitmask& mask) noexcept {
    const float m = max(x, mask);
    double s = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
        s += weight(masked_entry(x, mask, i), m, temperature);
    return {m, s};
}

/// log Z from exp_sum's stats: -inf when no entry has probability, +inf when the max is +inf.
inline double log_normaliser(const softmax_stats& st, float temperature) noexcept {
    if (st.sum == 0) return -std::numeric_limits<double>::infinity();
    if (std::isinf(st.max)) return std::numeric_limits<double>::infinity();
    return double(st.max) / temperature + std::log(st.sum);
}

/// log sum exp(x_i / T); -inf when no entry has probability, +inf when an entry is +inf.
inline double logsumexp(std::span<const float> x, float temperature = 1.f) noexcept {
    return log_normaliser(exp_sum(x, temperature), temperature);
}

/// logsumexp over the allowed entries.
inline double logsumexp(std::span<const float> x, float temperature,
                        const token_bitmask& mask) noexcept {
    return log_normaliser(exp_sum(x, temperature, mask), temperature);
}

/// out_i = p_i = exp((x_i - m)/T) / Z. All zeros when no entry has probability (stats.sum == 0).
/// \pre out.size() == x.size(), temperature > 0
inline softmax_stats softmax(std::span<const float> x, std::span<float> out,
                             float temperature = 1.f) noexcept {
    const softmax_stats st = exp_sum(x, temperature);
    for (std::size_t i = 0; i < x.size(); ++i)
        out[i] = st.sum > 0 ? float(weight(x[i], st.max, temperature) / st.sum) : 0.f;
    return st;
}

/// softmax over the allowed entries: disallowed entries get 0.
/// \pre out.size() == x.size(), temperature > 0
inline softmax_stats softmax(std::span<const float> x, std::span<float> out, float temperature,
                             const token_bitmask& mask) noexcept {
    const softmax_stats st = exp_sum(x, temperature, mask);
    for (std::size_t i = 0; i < x.size(); ++i)
        out[i] = st.sum > 0 ? float(weight(masked_entry(x, mask, i), st.max, temperature) / st.sum)
                            : 0.f;
    return st;
}

/// out_i = log p_i = (x_i - m)/T - log Z; -inf for entries of probability 0 (NaN included).
/// All -inf when no entry has probability.
inline softmax_stats log_softmax(std::span<const float> x, std::span<float> out,
                                 float temperature = 1.f) noexcept {
    const softmax_stats st = exp_sum(x, temperature);
    const double log_z = st.sum > 0 ? std::log(st.sum) : 0.0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double w = weight(x[i], st.max, temperature);
        if (st.sum == 0 || w == 0)
            out[i] = neg_inf;
        else if (std::isinf(st.max))
            out[i] = float(-log_z);
        else
            out[i] = float((double(x[i]) - st.max) / temperature - log_z);
    }
    return st;
}

/// Orders candidate indices: larger logit first, ties by lower id.
inline bool before(float a, token_id ia, float b, token_id ib) noexcept {
    return a > b || (a == b && ia < ib);
}

/// Sorts a candidate set: logit descending, ties by ascending id.
inline void sort_candidates(candidates& c) noexcept {
    std::vector<std::size_t> order(c.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    auto ids = c.ids();
    auto lg = c.logits();
    std::sort(order.begin(), order.end(),
              [&](std::size_t a, std::size_t b) { return before(lg[a], ids[a], lg[b], ids[b]); });
    std::vector<token_id> i2(c.size());
    std::vector<float> l2(c.size());
    for (std::size_t j = 0; j < order.size(); ++j) {
        i2[j] = ids[order[j]];
        l2[j] = lg[order[j]];
    }
    std::copy(i2.begin(), i2.end(), ids.begin());
    std::copy(l2.begin(), l2.end(), lg.begin());
}

/// Every entry with probability > 0 (not NaN, not -inf), in id order.
inline void valid_entries(std::span<const float> x, candidates& out) noexcept {
    out.clear();
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isnan(x[i]) && x[i] != neg_inf) out.push_back(token_id(i), x[i]);
}

/// Top-k: the k largest valid entries (NaN and -inf never selected), sorted by logit descending,
/// ties by ascending id. exactly_k keeps min(k, #valid); keep_ties also keeps every entry equal to
/// the k-th kept logit. k == 0 gives an empty set.  \pre out.capacity() >= x.size()
inline std::size_t top_k(std::span<const float> x, std::size_t k, tie_policy ties,
                         candidates& out) noexcept {
    valid_entries(x, out);
    sort_candidates(out);
    std::size_t n = std::min(k, out.size());
    if (ties == tie_policy::keep_ties && n > 0)
        while (n < out.size() && out.logits()[n] == out.logits()[n - 1]) ++n;
    out.resize(n);
    return n;
}

/// Every valid entry with x_i >= threshold, in id order. \pre out.capacity() >= x.size()
inline std::size_t filter_at_least(std::span<const float> x, float threshold,
                                   candidates& out) noexcept {
    out.clear();
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isnan(x[i]) && x[i] != neg_inf && x[i] >= threshold)
            out.push_back(token_id(i), x[i]);
    return out.size();
}

/// Min-p in logit space: the logit threshold max + T ln(decimal_floor(p_base)) (p_i >= p_base *
/// p_max at temperature T, p_base standing for its decimal), rounded to float. p_base <= 0 gives
/// -inf (keeps everything).
inline float min_p_threshold(float max_logit, float p_base, float temperature = 1.f) noexcept {
    if (p_base <= 0) return neg_inf;
    return float(double(max_logit) + double(temperature) * std::log(decimal_floor(p_base)));
}

/// Min-p in one call: every valid entry with x_i >= min_p_threshold(max(x), p_base, T), in id
/// order. \pre out.capacity() >= x.size()
inline std::size_t filter_min_p(std::span<const float> x, float p_base, float temperature,
                                candidates& out) noexcept {
    return filter_at_least(x, min_p_threshold(max(x), p_base, temperature), out);
}

/// Min-p with min_keep: filter_min_p, and when fewer than min_keep entries pass, the min_keep
/// largest valid entries instead (top_k exactly_k: ties at the min_keep-th by lowest id). Output
/// sorted like top_k. \pre out.capacity() >= x.size()
inline std::size_t min_p(std::span<const float> x, float p_base, float temperature,
                         std::size_t min_keep, candidates& out) noexcept {
    if (filter_min_p(x, p_base, temperature, out) < min_keep)
        return top_k(x, min_keep, tie_policy::exactly_k, out);
    sort_candidates(out);
    return out.size();
}

/// The entries a thresholded draw keeps (kernels::draw_temperature): x_i >= at_least and, when
/// from_max is not -inf, x_i >= float(double(max) + from_max), max the row's largest (allowed)
/// entry. min-p's kept set is {.from_max = min_p_offset(p_base, T)}. A NaN field keeps nothing.
struct logit_threshold {
    float at_least = neg_inf;                                    ///< absolute logit floor
    double from_max = -std::numeric_limits<double>::infinity();  ///< offset from the max (<= 0)
};

/// min-p's offset from the max in logit space: T ln(decimal_floor(p_base)); -inf (no threshold) for
/// p_base <= 0, NaN for a NaN p_base. min_p_threshold(m, p, T) == float(double(m) + offset).
inline double min_p_offset(float p_base, float temperature = 1.f) noexcept {
    if (p_base <= 0) return -std::numeric_limits<double>::infinity();
    return double(temperature) * std::log(decimal_floor(p_base));
}

/// The single logit threshold of `thr` for a row whose largest (allowed) entry is max_logit;
/// NaN (nothing kept) when a field is NaN.
inline float threshold_value(float max_logit, const logit_threshold& thr) noexcept {
    float t = thr.at_least;
    if (std::isnan(thr.from_max)) return std::numeric_limits<float>::quiet_NaN();
    if (thr.from_max > -std::numeric_limits<double>::infinity()) {
        const float r = float(double(max_logit) + thr.from_max);
        t = std::isnan(r) || std::isnan(t) ? std::numeric_limits<float>::quiet_NaN()
                                           : std::max(t, r);
    }
    return t;
}

/// The law of the thresholded, masked draw: out_i proportional to weight(x_i, m, T) over the
/// allowed entries with x_i >= threshold_value(m, thr), m the largest allowed entry; 0
/// elsewhere; all zeros when no entry is kept. \pre out.size() == x.size(), temperature > 0
inline softmax_stats truncated_softmax(std::span<const float> x, std::span<float> out,
                                       float temperature, const logit_threshold& thr,
                                       const token_bitmask& mask) noexcept {
    const float m = max(x, mask);
    const float t = threshold_value(m, thr);
    double s = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const float v = masked_entry(x, mask, i);
        s += v >= t ? weight(v, m, temperature) : 0.0;
    }
    for (std::size_t i = 0; i < x.size(); ++i) {
        const float v = masked_entry(x, mask, i);
        out[i] = s > 0 && v >= t ? float(weight(v, m, temperature) / s) : 0.f;
    }
    return {m, s};
}

/// truncated_softmax without a mask.
inline softmax_stats truncated_softmax(std::span<const float> x, std::span<float> out,
                                       float temperature, const logit_threshold& thr) noexcept {
    const std::vector<std::uint32_t> all(kernels::bitmask_words(x.size()), ~0u);
    return truncated_softmax(x, out, temperature, thr, {.words = all, .size = x.size()});
}

/// Top-p (nucleus) over the whole row at temperature T: sort valid entries by probability
/// descending (ties by id); keep entry j iff the probability mass strictly before it is below
/// decimal_floor(p) (the smallest prefix whose mass reaches p, the crossing entry included), and
/// at least max(1, min_keep) entries. p >= 1 keeps every valid entry; p <= 0 (or NaN) keeps
/// max(1, min_keep). Masses are p_i = W_i / Z added in double in that order. Output sorted like
/// top_k.  \pre out.capacity() >= x.size(), temperature > 0
inline std::size_t top_p(std::span<const float> x, float p, float temperature, std::size_t min_keep,
                         candidates& out) noexcept {
    valid_entries(x, out);
    sort_candidates(out);
    if (out.empty() || p >= 1) return out.size();
    const softmax_stats st = exp_sum(x, temperature);
    const std::size_t keep_at_least = std::max<std::size_t>(1, min_keep);
    const double target = decimal_floor(p);
    double before_mass = 0;
    std::size_t n = 0;
    while (n < out.size() && (n < keep_at_least || before_mass < target)) {
        before_mass += weight(out.logits()[n], st.max, temperature) / st.sum;
        ++n;
    }
    out.resize(n);
    return n;
}

/// Entropy H = -sum p log p (nats) of the tempered distribution; 0 when no entry has probability.
inline double entropy(std::span<const float> x, float temperature = 1.f) noexcept {
    const softmax_stats st = exp_sum(x, temperature);
    if (st.sum == 0) return 0;
    double h = 0;
    for (float v : x) {
        const double w = weight(v, st.max, temperature);
        if (w > 0) {
            const double p = w / st.sum;
            if (p > 0) h -= p * std::log(p);  // a subnormal w can underflow p to 0 (0 log 0 = 0)
        }
    }
    return h;
}

/// Entries with p_i >= threshold (p_i = W_i / Z in double), sorted like top_k; when fewer than
/// min_keep pass, the entries tied with or above the min_keep-th largest logit instead (top_k
/// keep_ties). The rule of epsilon and eta. \pre out.capacity() >= x.size(), temperature > 0
inline std::size_t probable_or_top(std::span<const float> x, double threshold, float temperature,
                                   std::size_t min_keep, candidates& out) noexcept {
    const softmax_stats st = exp_sum(x, temperature);
    out.clear();
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isnan(x[i]) && x[i] != neg_inf &&
            weight(x[i], st.max, temperature) / st.sum >= threshold)
            out.push_back(token_id(i), x[i]);
    if (out.size() < min_keep) return top_k(x, min_keep, tie_policy::keep_ties, out);
    sort_candidates(out);
    return out.size();
}

/// Epsilon sampling: keep p_i >= decimal_floor(epsilon); when fewer than min_keep pass, every
/// entry tied with or above the min_keep-th largest logit (Hugging Face). epsilon <= 0 keeps
/// every valid entry. \pre out.capacity() >= x.size(), temperature > 0
inline std::size_t epsilon(std::span<const float> x, float eps, float temperature,
                           std::size_t min_keep, candidates& out) noexcept {
    if (!(eps > 0)) return top_k(x, x.size(), tie_policy::keep_ties, out);
    return probable_or_top(x, decimal_floor(eps), temperature, min_keep, out);
}

/// The eta threshold: min(e, sqrt(e) exp(-H)) with e = decimal_floor(eta) and H = entropy(x, T).
inline double eta_threshold(std::span<const float> x, float eta_param, float temperature) noexcept {
    const double e = decimal_floor(eta_param);
    return std::min(e, std::sqrt(e) * std::exp(-entropy(x, temperature)));
}

/// Eta sampling: keep p_i >= eta_threshold(x, eta, T); the min_keep rule of epsilon. eta <= 0
/// keeps every valid entry. \pre out.capacity() >= x.size(), temperature > 0
inline std::size_t eta(std::span<const float> x, float eta_param, float temperature,
                       std::size_t min_keep, candidates& out) noexcept {
    if (!(eta_param > 0)) return top_k(x, x.size(), tie_policy::keep_ties, out);
    return probable_or_top(x, eta_threshold(x, eta_param, temperature), temperature, min_keep, out);
}

/// Mirostat v2's truncation: keep p_i >= 2^-mu (exp2(-mu) in double); when none passes, the most
/// probable entry (the lowest id among tied maxima). \pre out.capacity() >= x.size()
inline std::size_t mirostat_cut(std::span<const float> x, float mu, float temperature,
                                candidates& out) noexcept {
    return probable_or_top(x, std::exp2(-double(mu)), temperature, 0, out) > 0
               ? out.size()
               : top_k(x, 1, tie_policy::exactly_k, out);
}

/// Locally typical sampling at temperature T. Score s_i = |-log p_i - H| (p_i = W_i / Z,
/// H = entropy(x, T); +inf where p_i is 0 in double); order: score ascending, ties by logit
/// descending then id ascending, except between two entries more probable than typical
/// (-log p_i < H) with different logits: the lower logit first. Such ties come only from
/// rounding (logits closer than the double resolution of (x - max) / T); the exception keeps the
/// kept set an interval of logits (the entry nearer the typical point first). reach_with_ties keeps
/// the prefix through the first entry whose inclusive mass reaches decimal_floor(p) (at least one
/// entry), then every entry whose score equals that entry's (Hugging Face); exceed keeps the prefix
/// through the first entry whose inclusive mass exceeds decimal_ceil(p) (llama.cpp). Either way at
/// least min(min_keep, #valid) entries (a prefix of the order, no tie rule); p >= 1 keeps every
/// valid entry. Output sorted like top_k. \pre out.capacity() >= x.size(), temperature > 0
inline std::size_t typical(std::span<const float> x, float p, float temperature,
                           std::size_t min_keep, typical_stop stop, candidates& out) noexcept {
    valid_entries(x, out);
    const std::size_t n = out.size();
    if (n == 0 || p >= 1) {
        sort_candidates(out);
        return n;
    }
    const softmax_stats st = exp_sum(x, temperature);
    const double h = entropy(x, temperature);
    struct scored {
        double score, prob;
        float logit;
        token_id id;
        bool above;  // more probable than typical: -log p < H
    };
    std::vector<scored> e(n);
    for (std::size_t j = 0; j < n; ++j) {
        const float v = out.logits()[j];
        const double q = weight(v, st.max, temperature) / st.sum;
        const double s = q > 0 ? -std::log(q) - h : std::numeric_limits<double>::infinity();
        e[j] = {std::fabs(s), q, v, out.ids()[j], s < 0};
    }
    // (a strict weak order: `above` holds on an upper set of logits, s being non-increasing in
    // the logit)
    std::sort(e.begin(), e.end(), [](const scored& a, const scored& b) {
        if (a.score != b.score) return a.score < b.score;
        if (a.above && b.above && a.logit != b.logit) return a.logit < b.logit;
        return before(a.logit, a.id, b.logit, b.id);
    });
    double mass = 0;
    std::size_t k = 0;
    if (stop == typical_stop::reach_with_ties) {
        const double target = decimal_floor(p);
        do mass += e[k++].prob;
        while (k < n && mass < target);
        while (k < n && e[k].score == e[k - 1].score) ++k;
    } else {
        const double target = decimal_ceil(p);
        do mass += e[k++].prob;
        while (k < n && !(mass > target));
    }
    k = std::max(k, std::min(min_keep, n));
    out.clear();
    for (std::size_t j = 0; j < k; ++j) out.push_back(e[j].id, e[j].logit);
    sort_candidates(out);
    return k;
}

/// Top-n-sigma: keep x_i >= max - n sigma (compared in double), where max is the largest valid
/// entry and sigma the population standard deviation of the finite entries: mean = (sum x) / F
/// and var = (sum (x - mean)^2) / F over the F finite entries in id order, in double (sigma = 0
/// when F = 0). Independent of the temperature. When fewer than min_keep pass, the min_keep
/// largest (top_k exactly_k). n <= 0 or NaN keeps every valid entry. Output sorted like top_k.
/// \pre out.capacity() >= x.size()
inline std::size_t top_n_sigma(std::span<const float> x, float n, std::size_t min_keep,
                               candidates& out) noexcept {
    if (!(n > 0)) return top_k(x, x.size(), tie_policy::keep_ties, out);
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
    const double threshold = double(max(x)) - double(n) * std::sqrt(var);
    out.clear();
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isnan(x[i]) && x[i] != neg_inf && double(x[i]) >= threshold)
            out.push_back(token_id(i), x[i]);
    if (out.size() < min_keep) return top_k(x, min_keep, tie_policy::exactly_k, out);
    sort_candidates(out);
    return out.size();
}

/// XTC's removal, given that its coin fired: the head is the valid entries with
/// p_i >= decimal_floor(threshold) in reference order; when it holds at least two, every head
/// entry but the last (the least probable, the highest id among its ties) is removed, unless
/// fewer than min_keep valid entries would remain (then none). Returns the removed entries,
/// sorted like top_k. \pre out.capacity() >= x.size(), temperature > 0
inline std::size_t xtc_removed(std::span<const float> x, float threshold, float temperature,
                               std::size_t min_keep, candidates& out) noexcept {
    const softmax_stats st = exp_sum(x, temperature);
    const double t = decimal_floor(threshold);
    std::size_t valid = 0;
    out.clear();
    for (std::size_t i = 0; i < x.size(); ++i) {
        if (std::isnan(x[i]) || x[i] == neg_inf) continue;
        ++valid;
        if (weight(x[i], st.max, temperature) / st.sum >= t) out.push_back(token_id(i), x[i]);
    }
    sort_candidates(out);
    const std::size_t removed = out.size() >= 2 ? out.size() - 1 : 0;
    out.resize(valid - removed >= min_keep ? removed : 0);
    return out.size();
}

/// Inverse-CDF draw from unnormalised non-negative weights with one uniform u in [0, 1):
/// target t = u * S (S the double sum); returns the first index whose running sum exceeds t among
/// entries with w > 0; when rounding leaves t unreached, the last entry with w > 0.
/// Negative, NaN and zero weights are never drawn. npos if no weight is positive.
inline std::size_t draw_inverse_cdf(std::span<const float> w, double u) noexcept {
    double s = 0;
    for (float v : w)
        if (v > 0) s += v;
    if (!(s > 0)) return npos;
    const double target = u * s;
    double run = 0;
    std::size_t last = npos;
    for (std::size_t i = 0; i < w.size(); ++i) {
        if (!(w[i] > 0)) continue;
        run += w[i];
        last = i;
        if (run > target) return i;
    }
    return last;
}

/// Exponential race (Gumbel-max) over logits at temperature T: argmax_i w_i / E_i with
/// w_i = exp((x_i - m)/T) and E_i = exponentials[i] > 0. Equivalent to a categorical draw from
/// softmax(x / T). npos if no entry has probability.
inline std::size_t draw_exponential_race(std::span<const float> x, float temperature,
                                         std::span<const double> exponentials) noexcept {
    const float m = max(x);
    std::size_t best = npos;
    double best_score = -1;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double w = weight(x[i], m, temperature);
        if (w <= 0) continue;
        const double score = w / exponentials[i];
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    return best;
}

/// Exponential race with its own exponentials: E_i = rng.exponential() for every entry i in
/// order (exactly 2 words per entry, 2 * x.size() in all, whatever the entries), then the race
/// above. npos if no entry has probability.
inline std::size_t draw_exponential_race(std::span<const float> x, float temperature,
                                         rng_stream& rng) noexcept {
    const float m = max(x);
    std::size_t best = npos;
    double best_score = -1;
    for (std::size_t i = 0; i < x.size(); ++i) {
        const double e = rng.exponential();
        const double w = weight(x[i], m, temperature);
        if (w <= 0) continue;
        const double score = w / e;
        if (score > best_score) {
            best_score = score;
            best = i;
        }
    }
    return best;
}

/// Cosine similarity of `query` (length dim) against each of n = out.size() rows stored
/// row-major with `stride` floats between rows. 0 for a zero-norm row or query.
inline void cosine_similarity(std::span<const float> query, const float* rows, std::size_t stride,
                              std::span<float> out) noexcept {
    const std::size_t dim = query.size();
    double qq = 0;
    for (float v : query) qq += double(v) * v;
    for (std::size_t r = 0; r < out.size(); ++r) {
        const float* row = rows + r * stride;
        double dot = 0, rr = 0;
        for (std::size_t j = 0; j < dim; ++j) {
            dot += double(query[j]) * row[j];
            rr += double(row[j]) * row[j];
        }
        out[r] = (qq > 0 && rr > 0) ? float(dot / std::sqrt(qq * rr)) : 0.f;
    }
}

}  // namespace reference
DECODEKIT_END_NAMESPACE
