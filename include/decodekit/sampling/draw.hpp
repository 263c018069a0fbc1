#pragma once
/// \file sampling/draw.hpp
/// The draw at the end of a sampler's pipeline, over whatever the working set holds:
///   - a narrowed set: one inverse-CDF draw over the kept entries' weights in ascending id order
///     (one read pass of the set when the selecting step left it in id order with its weights;
///     no sort by probability); a set left as a cut over the row (top-p on the full row) is
///     drawn by kernels::draw_cut on the row and its weights, the same entry for the same
///     uniform (up to the rounding of the double sums), with no compaction;
///   - the full row with logprobs.chosen on (or extras requested): per-block (max, exp-sum) over
///     blocks of 2048 entries, a block by inverse CDF over the block masses, then the token inside
///     it from that block's softmax: one max+exp pass in all (the exp floor);
///   - the full row with no logprob wanted: kernels::draw_temperature (block-max envelope
///     rejection, no exponential per entry).
/// A masked full set (working_set::masked()) draws among the allowed entries: the mask is read
/// inside the same passes (kernels' masked forms; a block's mask is a whole-word subview).
/// Randomness: one uniform() (2 words) of the call's rng_purpose::sample stream, or
/// draw_temperature's proposals (5 words each).

#include <decodekit/config.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

/// A token drawn from a working set.
struct set_draw {
    token_id token = -1;  ///< -1: the set has no valid entry
    double logprob = 0;   ///< log probability under the set's distribution (NaN: not computed)
    double prob = 0;      ///< that probability (mirostat's surprise)
    double row_lse = 0;   ///< log sum exp(x / t) of the full row when row_lse_known
    bool row_lse_known = false;
};

namespace detail {
/// Draw over the whole row at temperature t with the uniform u: per-block (max, exp-sum), a block
/// by inverse CDF over the block masses, then the token from the block's softmax. `mask`: the
/// allowed entries only (nullptr: every entry); row_lse is then the masked row's normaliser.
inline set_draw draw_full_row(std::span<const float> x, float t, double u, sampling_workspace& ws,
                              const kernels::token_bitmask* mask = nullptr) noexcept {
    set_draw d;
    constexpr std::size_t block = sampling_workspace::draw_block;
    const std::size_t n = x.size();
    const std::size_t nb = (n + block - 1) / block;
    float m = -f_inf;
    for (std::size_t b = 0; b < nb; ++b) {
        const std::size_t lo = b * block, len = std::min(block, n - lo);
        const auto st = mask ? kernels::exp_sum(x.subspan(lo, len), t, mask->subview(lo, len))
                             : kernels::exp_sum(x.subspan(lo, len), t);
        ws.bmax[b] = st.max;
        ws.bsum[b] = st.sum;
        m = st.max > m ? st.max : m;
    }
    if (!(m > -f_inf)) return d;
    double s = 0;
    for (std::size_t b = 0; b < nb; ++b) {
        double w;
        if (m == f_inf)
            w = ws.bmax[b] == f_inf ? ws.bsum[b] : 0.0;
        else
            w = ws.bsum[b] > 0 ? ws.bsum[b] * std::exp((double(ws.bmax[b]) - double(m)) / double(t))
                               : 0.0;
        ws.bsum[b] = w;  // now the block's mass relative to the global max
        s += w;
    }
    if (!(s > 0)) return d;
    const double target = u * s;
    double run = 0;
    std::size_t pick = npos;
    double before = 0;
    for (std::size_t b = 0; b < nb; ++b) {
        if (!(ws.bsum[b] > 0)) continue;
        before = run;
        run += ws.bsum[b];
        pick = b;
        if (run > target) break;
    }
    const std::size_t lo = pick * block, len = std::min(block, n - lo);
    double u2 = (target - before) / ws.bsum[pick];
    u2 = std::clamp(u2, 0.0, std::nextafter(1.0, 0.0));
    const std::span<float> probs(ws.block_buf.data(), len);
    if (mask)
        kernels::softmax(x.subspan(lo, len), probs, t, mask->subview(lo, len));
    else
        kernels::softmax(x.subspan(lo, len), probs, t);
    const std::size_t i =
        kernels::draw_inverse_cdf(std::span<const float>(ws.block_buf.data(), len), u2);
    if (i == npos) return d;
    const std::size_t tok = lo + i;
    const double w = cand_weight(x[tok], m, t);
    d.token = token_id(tok);
    d.logprob = std::log(w) - std::log(s);
    d.prob = w / s;
    if (m != f_inf) {
        d.row_lse = double(m) / double(t) + std::log(s);
        d.row_lse_known = true;
    }
    return d;
}
}  // namespace detail

/// Draws from the working set with the call's sample stream (see the file comment); `exact`:
/// a logprob is wanted (else a full set uses the envelope draw and logprob is NaN).
inline set_draw draw_from(working_set& w, rng_stream& rng, bool exact) noexcept {
    if (w.full() && !exact) {
        set_draw d;
        const std::size_t i =
            w.masked() ? kernels::draw_temperature(w.row(), w.temperature(), rng, w.mask())
                       : kernels::draw_temperature(w.row(), w.temperature(), rng);
        if (i != npos) d.token = token_id(i);
        d.logprob = std::numeric_limits<double>::quiet_NaN();
        return d;
    }
    const double u = rng.uniform();
    if (w.full())
        return detail::draw_full_row(w.row(), w.temperature(), u, w.workspace(),
                                     w.masked() ? &w.mask() : nullptr);
    set_draw d;
    if (w.cut_pending() && w.cut_temperature() == w.temperature()) {
        // a cut over the row (top-p): the same entry as the inverse CDF over the compacted set
        const std::span<const float> wt = w.cut_weights();
        const double s = w.cut_sum();
        const std::size_t pick = kernels::draw_cut(w.row(), wt, w.cut(), u, s);
        if (pick == npos) return d;
        d.token = token_id(pick);
        d.logprob = std::log(double(wt[pick])) - std::log(s);
        d.prob = double(wt[pick]) / s;
        return d;
    }
    if (w.kept().empty()) return d;
    w.order_by_id();
    const double s = w.ensure_weights();
    if (!(s > 0)) return d;
    const std::span<const float> wt = w.weights();
    const std::size_t pick = kernels::draw_inverse_cdf(wt, u);
    if (pick == npos) return d;
    d.token = w.kept().ids()[pick];
    d.logprob = std::log(double(wt[pick])) - std::log(s);
    d.prob = double(wt[pick]) / s;
    return d;
}

DECODEKIT_END_NAMESPACE
