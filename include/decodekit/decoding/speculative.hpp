#pragma once
/// \file decoding/speculative.hpp
/// Speculative decoding: verification rules on sparse distributions and the speculative loop.
///
/// ## Verification (p = target, q = draft, both after the same processing pipeline)
/// Every rule works on sparse distributions (token ids + probabilities summing to 1, any order,
/// no duplicate ids): exactly what a draw uses, after temperature and truncation.
///   - verify_rejection (exact, Leviathan et al. / Chen et al.): accept the draft x iff
///     u * q(x) < p(x); otherwise emit y ~ norm(max(0, p - q)). q(x) = 0 always rejects (as vLLM;
///     an honest proposer never proposes outside q's support); p(x) = 0 always rejects. The
///     residual is drawn by rejection from p: proposals y ~ p, each kept with probability
///     max(0, p(y) - q(y)) / p(y) (~1 / TV proposals, TV = the residual's mass), and after 32
///     refusals one exact pass over p (detail::propose_residual); a residual whose mass is below
///     1e-9 (rounding only) falls back to p in that pass.
///   - verify_one_hot (exact, deterministic proposals: greedy drafts, n-gram lookup): q = delta_x,
///     accept iff u < p(x); residual = p with x removed. Same as verify_rejection with q = delta_x.
///   - verify_greedy (exact for greedy decoding): accept iff x is the target argmax (highest
///     probability, ties to the lowest id); otherwise emit the argmax.
///   - verify_typical (Medusa typical acceptance): LOSSY. Accept iff
///     p(x) > min(epsilon, delta * exp(-H(p))); otherwise emit y ~ p. Emitted tokens do NOT follow
///     p (tests/unit/test_speculative.cpp shows the difference). Use only when speed matters more
///     than fidelity.
///   - draw_from (the bonus token after a fully accepted draft): y ~ p.
///
/// ## Randomness (what holds)
/// The decision for the token at generation step n (n = number of tokens generated before it,
/// prompt excluded) uses only two streams keyed by rng_key{seed, sequence, n}:
/// rng_purpose::accept (exactly one uniform() per verified draft token, consumed even when the
/// outcome is certain) and rng_purpose::residual (one uniform() per bonus draw; a residual draw
/// takes two per proposal, then one for the exact pass if the proposals were all refused).
/// Sampled drafting uses rng_purpose::draft at the step of the drafted token. Hence:
///   - a rerun with the same seed, sequence, parameters and proposer gives the same tokens;
///   - the randomness used for step n never depends on how many drafts the round proposed or on
///     which round step n falls in; the token at step n is a function of the prefix, of the
///     proposal at n (or its absence: a bonus / plain step) and of the streams of step n. So
///     changing the draft length (or adaptive drafting) changes which steps are verified and which
///     are bonus steps, hence the output (each variant exactly distributed as sampling from p);
///     draft_length = 0 is plain sampling with the residual stream;
///   - greedy verification uses no randomness.
/// Exactness: every emitted token is, conditionally on the prefix, distributed as p at its step,
/// because the streams of step n are independent of everything that decided the prefix.
///
/// ## The loop: speculative_stepper (engines) and speculative_decode (one request)
/// Each round has three stages. Propose: the proposer drafts up to gamma tokens; a stepwise
/// proposer (draft model, early exit, multi-token heads) asks for its model calls through
/// next_call() (model_role::draft), one draft position per call, so an engine drafts every
/// speculating request in one call per position; other proposers (n-gram) draft at once. Verify:
/// one target call scores the drafts (n_last = drafts + 1, slot params.target_slot) and
/// params.rule accepts a prefix. Commit: the accepted tokens plus one residual or bonus token
/// are emitted (stop rule of decoding/contract.hpp), the proposer's commit() sees them, and the
/// target sequence is cut back after a rejection (model.hpp's sequence contract). Processing is
/// applied lazily in emission order, so a stateful processing step (commit()) only ever sees
/// emitted tokens: nothing to roll back on the target side (no sampler state()/restore() needed).
///
/// ## Processors (penalties, no_repeat_ngram, banned sequences, min_new_tokens, user processors)
/// They live in the processing (sampler_processing over a sampler configured with them). The row
/// of draft position i is processed with the history prompt + emitted tokens + the round's tokens
/// accepted before i, i.e. exactly the history plain sampling would have at that step: the
/// processors' state (processors/history.hpp) advances by one accepted token per position, and
/// since a position is processed only after the previous one was accepted, the rejected drafts
/// never enter it (the rollback on rejection is free: the state never moved past the emitted
/// tokens). Hence, for the same processors, greedy speculative output equals greedy generate()
/// token for token, and sampled output follows the same law. A proposer's own processing
/// follows its drafts and is cut back by its history tracker when a round rejects them.
/// min_new_tokens comes from the processing (sampler_processing: the sampler's
/// sampling_params::min_new_tokens, whose eos_ids must list speculative_params::eos_ids, checked
/// up front): EOS is suppressed in p, stop sequences and stop strings are held until then.
/// How p is read: a processing with processed() (set_processing: sampler_processing,
/// basic_processing) gives the target's distribution as a weighted_set (sampling/verify.hpp), a
/// top-p cut over the row never compacted: p(x) is one lookup, a rejection's residual ~1 / TV
/// proposals drawn on the cut (two draw_cut's, then block sums of the cut: one pass) with q read
/// at each (a binary search when q.ascending, else q scattered into verify_workspace's dense
/// row), the bonus a draw_cut. Other processings are verified on their sparse output.
/// A proposer that drafts from the target's hidden state (an MTP module: needs_target_hidden())
/// makes the verify call logits_and_hidden and receives the hidden row of the last verified
/// position after each round (target_hidden_proposer).

#include <decodekit/config.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/sequence_output.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/model.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/sampler.hpp>
#include <decodekit/sampling/verify.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

// ------------------------------------------------------------------------------------------------
// Sparse distributions

/// A read-only sparse distribution: ids and probabilities of equal length (sum 1, no duplicate
/// ids, any order). Spans of different lengths: the entries past the shorter one are ignored
/// (every function here reads the view through detail::trimmed), never read out of bounds.
struct sparse_dist_view {
    std::span<const token_id> tokens;
    std::span<const float> probs;
    /// The caller's promise that tokens are strictly ascending (the built-in processings' output):
    /// verification then reads q along p's ids (a merge) instead of scattering it. A broken
    /// promise gives a wrong residual law (Debug builds assert), never an access out of bounds.
    bool ascending = false;
    std::size_t size() const noexcept { return std::min(tokens.size(), probs.size()); }
};

/// An owned sparse distribution; clear() keeps the capacity (no allocation once warm).
struct sparse_distribution {
    std::vector<token_id> tokens;
    std::vector<float> probs;
    bool ascending = false;  ///< see sparse_dist_view::ascending (clear() resets it)

    void clear() noexcept {
        tokens.clear();
        probs.clear();
        ascending = false;
    }
    void reserve(std::size_t n) {
        tokens.reserve(n);
        probs.reserve(n);
    }
    void push(token_id t, float p) {
        tokens.push_back(t);
        probs.push_back(p);
    }
    std::size_t size() const noexcept { return tokens.size(); }
    /// The view of this distribution.
    sparse_dist_view view() const noexcept { return {tokens, probs, ascending}; }
    operator sparse_dist_view() const noexcept { return view(); }
};

/// A view of any object with contiguous `tokens` and float `probs` members (e.g. a sampler's
/// distribution()).
template <class D>
requires requires(const D& d) {
    std::span<const token_id>(d.tokens);
    std::span<const float>(d.probs);
}
sparse_dist_view as_dist_view(const D& d) noexcept {
    return {std::span<const token_id>(d.tokens), std::span<const float>(d.probs)};
}

namespace detail {
inline constexpr std::size_t spec_block = kernels::block_sums::block;  // blocks of the walks

/// Index of token `x` in `ids` (npos if absent). O(1) when ids[x] == x (full id-ordered rows),
/// O(log n) when x is found by a binary search (ids in ascending order: distribution_unordered()),
/// otherwise a linear search (any order: a sampler's distribution() is sorted by probability,
/// drafts are found early).
inline std::size_t find_token(std::span<const token_id> ids, token_id x) noexcept {
    if (x < 0) return npos;
    if (std::size_t(x) < ids.size() && ids[std::size_t(x)] == x) return std::size_t(x);
    std::size_t lo = 0, hi = ids.size();  // (well defined on any order; exact when ascending)
    while (lo < hi) {
        const std::size_t mid = lo + (hi - lo) / 2;
        if (ids[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < ids.size() && ids[lo] == x) return lo;
    const auto it = std::find(ids.begin(), ids.end(), x);
    return it == ids.end() ? npos : std::size_t(it - ids.begin());
}
/// `d` with both spans cut to the shorter one's length (see sparse_dist_view).
inline sparse_dist_view trimmed(sparse_dist_view d) noexcept {
    const std::size_t n = d.size();
    return {d.tokens.first(n), d.probs.first(n), d.ascending};
}
/// Probability of `x` in `d` (0 if absent or not positive). O(log n) when d.ascending (a binary
/// search, no linear fallback: a broken promise may read an x that is there as absent).
inline double prob_of(sparse_dist_view d, token_id x) noexcept {
    d = trimmed(d);
    std::size_t i = npos;
    if (!d.ascending)
        i = find_token(d.tokens, x);
    else if (x >= 0) {
        const auto it = std::lower_bound(d.tokens.begin(), d.tokens.end(), x);
        if (it != d.tokens.end() && *it == x) i = std::size_t(it - d.tokens.begin());
    }
    return i != npos && d.probs[i] > 0.f ? double(d.probs[i]) : 0.0;
}
/// Most probable token (ties to the lowest id); -1 when no entry has positive probability.
/// Two vectorised passes: the max, then the lowest id holding it.
inline token_id argmax(sparse_dist_view d) noexcept {
    d = trimmed(d);
    const float m = kernels::max(d.probs);
    if (!(m > 0.f)) return -1;
    token_id best = std::numeric_limits<token_id>::max();
    const std::size_t n = d.tokens.size();
    for (std::size_t b = 0; b < n; b += 256) {  // rescan only blocks holding the max (usually one)
        const std::size_t e = std::min(n, b + 256);
        int hit = 0;
        for (std::size_t i = b; i < e; ++i) hit |= int(d.probs[i] == m);
        if (hit)
            for (std::size_t i = b; i < e; ++i)
                if (d.probs[i] == m && d.tokens[i] < best) best = d.tokens[i];
    }
    return best;
}
/// True when a and b list the same ids in the same order (then q can be read elementwise).
inline bool same_ids(std::span<const token_id> a, std::span<const token_id> b) noexcept {
    if (a.size() != b.size()) return false;
    if (a.data() == b.data()) return true;
    return std::equal(a.begin(), a.end(), b.begin());
}

/// kernels::draw_blocked with the block sums taken over fill's output (kernels::sum: float lanes,
/// blocks in double), kept in `scratch`: the exact pass of a rejection's residual, whose weights
/// max(0, p - q) are computed blockwise and never stored (no V-sized write and re-read per
/// rejection), which is why this is not kernels::draw_inverse_cdf (that one takes materialised
/// weights; draw_sparse below uses it). npos when the total is not above `floor` (the callers
/// then fall back to p).
template <class Fill>
std::size_t draw_blocked(std::size_t n, Fill&& fill, double u, double floor,
                         kernels::block_sums& scratch) noexcept {
    return kernels::draw_blocked(
        n,
        [&](std::size_t b, std::size_t c) noexcept {
            alignas(64) float buf[kernels::block_sums::block];
            fill(b, c, buf);
            return kernels::sum(std::span<const float>(buf, c));
        },
        fill, u, floor, scratch);
}
/// draw_blocked with block sums of its own (~8.5 KB of stack).
template <class Fill>
std::size_t draw_blocked(std::size_t n, Fill&& fill, double u, double floor) noexcept {
    kernels::block_sums scratch;
    return draw_blocked(n, fill, u, floor, scratch);
}
/// Inverse-CDF draw from a sparse distribution (kernels::draw_inverse_cdf over its
/// probabilities: sums in double); -1 if no positive probability.
inline token_id draw_sparse(sparse_dist_view d, double u) noexcept {
    d = trimmed(d);
    const std::size_t i = kernels::draw_inverse_cdf(d.probs, u);
    return i == npos ? token_id(-1) : d.tokens[i];
}
/// Entropy -sum p ln p (natural log).
inline double entropy(sparse_dist_view d) noexcept {
    d = trimmed(d);
    double h = 0;
    for (float p : d.probs)
        if (p > 0.f) h -= double(p) * std::log(double(p));
    return h;
}
inline constexpr double residual_floor = 1e-9;

/// Proposals y ~ p tried for a rejection's residual before the exact pass (propose_residual).
inline constexpr int spec_residual_proposals = 32;

/// The residual draw of a rejection by rejection from p: proposals y ~ p (inverse CDF over p's
/// entries in ascending index order, with one uniform() of `res` each) are accepted with
/// probability max(0, p(y) - q(y)) / p(y) (a second uniform() each, accept(i, a)); the first
/// accepted proposal has the law max(0, p - q) / TV (TV = that residual's mass), and the
/// expected number of proposals is 1 / TV. Returns its index, or npos after
/// spec_residual_proposals refusals (or when a proposal finds no entry): then the caller draws
/// from the residual with the exact pass and the next uniform() of `res`. That is still exact:
/// the proposals are independent of that pass, so conditionally on the refusals its law is
/// unchanged. The fallback fires with probability (1 - TV)^32 (TV = 0.3: 1e-5; TV = 0.1: 3 %).
/// The first `row_draws` proposals are drawn by row_draw(u) (a caller with a cheaper draw than
/// one pass: draw_cut with the kept sum known reads a quarter of the row on average); the later
/// ones by kernels::draw_block_sums over the block sums of p's weights, built once into `sums`
/// by build(sums) (one pass; kernels::sum_blocks or cut_block_sums), and fill(b, c, out) of the
/// block where u falls: a walk of <= 64 sums and one block scanned per proposal. When n does not
/// fit kernels::block_sums (more than 524 288 entries) no sums are built: only the row_draws
/// proposals are tried. `sums` is left holding p's block sums if they were built (the caller's
/// scratch, reused by its exact pass).
template <class RowDraw, class Build, class Fill, class Accept>
std::size_t propose_residual(std::size_t n, rng_stream& res, int row_draws, RowDraw&& row_draw,
                             Build&& build, Fill&& fill, Accept&& accept,
                             kernels::block_sums& sums) noexcept {
    const int tries = kernels::block_sums::fits(n) ? spec_residual_proposals
                                                   : std::min(row_draws, spec_residual_proposals);
    bool built = false;
    for (int k = 0; k < tries; ++k) {
        const double u = res.uniform(), a = res.uniform();
        std::size_t i;
        if (k < row_draws) {
            i = row_draw(u);
        } else {
            if (!built) {
                build(sums);
                built = true;
            }
            i = kernels::draw_block_sums(sums, fill, u);
        }
        if (i == npos) return npos;
        if (accept(i, a)) return i;
    }
    return npos;
}
/// propose_residual's test: accept y with probability max(0, py - qy) / py (a uniform in
/// [0, 1)); py > 0 for every proposal (draws never return a weight that is not positive), q's
/// non-positive and NaN probabilities read 0.
inline bool residual_accepts(double py, float qy, double a) noexcept {
    const double r = py - (qy > 0.f ? double(qy) : 0.0);
    return r > 0 && a * py < r;
}
/// propose_residual over a sparse p (its positive probabilities as weights; index j of p), q
/// read by q_at(j), block sums in `sums`: the index of the accepted proposal or npos.
template <class QAt>
std::size_t propose_sparse(sparse_dist_view p, rng_stream& res, QAt&& q_at,
                           kernels::block_sums& sums) noexcept {
    auto fill = [&](std::size_t b, std::size_t c, float* out) noexcept {
        for (std::size_t i = 0; i < c; ++i) out[i] = p.probs[b + i] > 0.f ? p.probs[b + i] : 0.f;
    };
    return propose_residual(
        p.size(), res, 0, [](double) noexcept { return npos; },
        [&](kernels::block_sums& s) noexcept {
            kernels::sum_blocks(
                p.size(),
                [&](std::size_t b, std::size_t c) noexcept {
                    alignas(64) float buf[spec_block];
                    fill(b, c, buf);
                    return kernels::sum(std::span<const float>(buf, c));
                },
                s);
        },
        fill,
        [&](std::size_t i, double a) noexcept {
            return residual_accepts(double(p.probs[i]), q_at(i), a);
        },
        sums);
}
/// The block sums of a cut's kept weights over its row (blocks of kernels::block_sums::block
/// entries) into s, finished: one pass over the row (float lanes per block, added in double); a
/// row that does not fit kernels::block_sums leaves s empty (draws give npos). \pre p.is_cut
template <class A = simd::default_arch>
void cut_block_sums(const weighted_set& p, kernels::block_sums& s) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t n = p.extent();
    const float* x = p.row.data();
    const float* w = p.weights.data();
    if (!kernels::block_sums::fits(n)) return s.finish(n);  // (empty)
    double* sums = s.sums;
    std::fill_n(sums, kernels::block_sums::blocks(n), 0.0);
    kernels::detail::for_each_segment(
        p.cut, 0, n, [&](std::size_t sb, std::size_t e, float lo, float hi) noexcept {
            std::size_t i = sb;
            for (; i < e && i % L != 0; ++i)  // (to a vector boundary: no vector crosses a block)
                if (x[i] >= lo && x[i] <= hi) sums[i / spec_block] += double(w[i]);
            const B lb(lo), hb(hi), zero(0.f);
            while (i + L <= e) {
                const std::size_t blk = i / spec_block, be = std::min((blk + 1) * spec_block, e);
                B acc(0.f);
                for (; i + L <= be; i += L) {
                    const B v = B::load_unaligned(x + i);
                    acc += simd::select<A>((v >= lb) & (v <= hb), B::load_unaligned(w + i), zero);
                }
                sums[blk] += double(simd::reduce_add<A>(acc));
            }
            for (; i < e; ++i)
                if (x[i] >= lo && x[i] <= hi) sums[i / spec_block] += double(w[i]);
        });
    s.finish(n);
}
/// propose_residual over a weighted_set (index space: the row for a cut, else the kept ids), q
/// read by q_at(index), block sums in `sums`: the index of the accepted proposal or npos. A
/// cut's first two proposals are draw_cut's with the kept sum known (a quarter of the row on
/// average); then block sums. \pre !p.empty()
template <class QAt>
std::size_t propose_set(const weighted_set& p, rng_stream& res, QAt&& q_at,
                        kernels::block_sums& sums) noexcept {
    return propose_residual(
        p.extent(), res, p.is_cut ? 2 : 0,
        [&](double du) noexcept { return kernels::draw_cut(p.row, p.weights, p.cut, du, p.sum); },
        [&](kernels::block_sums& s) noexcept {
            if (p.is_cut) return cut_block_sums(p, s);
            kernels::sum_blocks(
                p.extent(),
                [&](std::size_t b, std::size_t c) noexcept {
                    return kernels::sum(p.weights.subspan(b, c));
                },
                s);
        },
        [&](std::size_t b, std::size_t c, float* out) noexcept { p.weights_into(b, c, out); },
        [&](std::size_t i, double a) noexcept {
            return residual_accepts(double(p.weights[i]) / p.sum, q_at(i), a);
        },
        sums);
}
}  // namespace detail

// ------------------------------------------------------------------------------------------------
// Verification

/// The result of verifying one draft token.
struct verify_result {
    token_id token = -1;    ///< the emitted token (the draft when accepted); -1: p has no token
    bool accepted = false;  ///< the draft token was accepted
};

/// Workspace of the verification functions for a vocabulary of `vocab_size` tokens: a dense
/// scratch row (kept all-zero between calls) where q is scattered. Allocated once (4 bytes per
/// token); a residual's weights are never stored (block sums on the stack, kernels::block_sums).
class verify_workspace {
public:
    verify_workspace() = default;
    explicit verify_workspace(std::size_t vocab_size) : dense_(vocab_size, 0.f) {}
    std::size_t vocab_size() const noexcept { return dense_.size(); }
    /// Writes q's positive probabilities at their ids into dense_ (an id past it is skipped: a
    /// Debug assertion) and returns dense_'s data.
    float* scatter(sparse_dist_view q) noexcept {
        float* dense = dense_.data();
        for (std::size_t i = 0; i < q.tokens.size(); ++i) {
            const auto t = std::size_t(q.tokens[i]);
            DECODEKIT_ASSERT(t < dense_.size(),
                             "verify_rejection: q token id >= workspace vocab_size");
            if (t < dense_.size() && q.probs[i] > 0.f) dense[t] = q.probs[i];
        }
        return dense;
    }
    /// Zeroes what scatter(q) wrote: dense_ all zero again.
    void unscatter(sparse_dist_view q) noexcept {
        for (std::size_t i = 0; i < q.tokens.size(); ++i) {
            const auto t = std::size_t(q.tokens[i]);
            if (t < dense_.size()) dense_[t] = 0.f;
        }
    }

    std::vector<float> dense_;  ///< scattered q; all zero outside a call
};

/// Medusa's typical acceptance thresholds (LOSSY rule): accept iff
/// p(x) > min(epsilon, delta * exp(-H(p))).
struct typical_acceptance {
    float epsilon = 0.09f;  ///< posterior threshold, (0, 1]
    float delta = 0.3f;     ///< posterior alpha, >= 0

    /// First problem with the fields, or nullopt.
    std::optional<std::string> check() const {
        if (!(epsilon > 0.f && epsilon <= 1.f))
            return detail::range_message("typical_acceptance.epsilon", "in (0, 1]", epsilon);
        if (!(delta >= 0.f && std::isfinite(delta)))
            return detail::range_message("typical_acceptance.delta", "finite and >= 0", delta);
        return std::nullopt;
    }
    void validate() const { raise_if(check()); }
};

/// y ~ p with one uniform() of the residual stream at `key` (the bonus token); -1 if p is empty.
inline token_id draw_from(sparse_dist_view p, rng_key key) noexcept {
    rng_stream s = make_stream(key, rng_purpose::residual);
    return detail::draw_sparse(p, s.uniform());
}

/// Exact rejection step for draft token `x` drawn from q: accept iff u * q(x) < p(x), else
/// y ~ norm(max(0, p - q)) (p when that mass is below 1e-9). q(x) = 0 or p(x) = 0 rejects.
/// The residual is drawn by rejection from p (detail::propose_residual: block sums of p once,
/// then ~1 / TV cheap proposals), the exact pass over p only after 32 refusals.
/// \pre q's ids < ws.vocab_size(). Cost O(|p| + |q|), no allocation.
inline verify_result verify_rejection(sparse_dist_view p, sparse_dist_view q, token_id x,
                                      rng_key key, verify_workspace& ws) noexcept {
    p = detail::trimmed(p);
    q = detail::trimmed(q);
    rng_stream acc = make_stream(key, rng_purpose::accept);
    const double u = acc.uniform();
    const double px = detail::prob_of(p, x), qx = detail::prob_of(q, x);
    if (qx > 0 && u * qx < px) return {x, true};
    rng_stream res = make_stream(key, rng_purpose::residual);
    // Residual max(0, p - q) over p's support (zero elsewhere): q read elementwise (aligned
    // rows) or scattered into the dense scratch row and read along p.
    const bool aligned = detail::same_ids(p.tokens, q.tokens);
    const float* dense = aligned ? nullptr : ws.scatter(q);
    const std::size_t dv = ws.dense_.size();
    auto q_at = [&](std::size_t i) noexcept -> float {
        if (aligned) return q.probs[i];
        const auto t = std::size_t(p.tokens[i]);
        return t < dv ? dense[t] : 0.f;
    };
    kernels::block_sums sums;  // p's block sums for the proposals, then the exact pass's
    std::size_t j = detail::propose_sparse(p, res, q_at, sums);
    if (j != npos) {
        if (dense) ws.unscatter(q);
        return {p.tokens[j], false};
    }
    const double v = res.uniform();  // the exact pass (see detail::propose_residual)
    j = detail::draw_blocked(
        p.size(),
        [&](std::size_t b, std::size_t c, float* out) noexcept {
            for (std::size_t i = 0; i < c; ++i) {
                const float qt = q_at(b + i);
                const float r = p.probs[b + i] - (qt > 0.f ? qt : 0.f);
                out[i] = r > 0.f ? r : 0.f;
            }
        },
        v, detail::residual_floor, sums);
    if (dense) ws.unscatter(q);
    if (j == npos) return {detail::draw_sparse(p, v), false};  // residual ~0: fall back to p
    return {p.tokens[j], false};
}

/// Exact verification of a deterministic proposal x (q = delta_x): accept iff u < p(x), else
/// y ~ p without x (p when that mass is below 1e-9). Same law and RNG use as
/// verify_rejection with q = delta_x (the residual by rejection from p: a proposal other than x
/// is kept). Cost O(|p|), no allocation.
inline verify_result verify_one_hot(sparse_dist_view p, token_id x, rng_key key) noexcept {
    p = detail::trimmed(p);
    rng_stream acc = make_stream(key, rng_purpose::accept);
    const double u = acc.uniform();
    const std::size_t ix = detail::find_token(p.tokens, x);
    const double px = ix != npos && p.probs[ix] > 0.f ? double(p.probs[ix]) : 0.0;
    if (u < px) return {x, true};
    rng_stream res = make_stream(key, rng_purpose::residual);
    constexpr float never = std::numeric_limits<float>::infinity();  // q(x) = 1: x never kept
    kernels::block_sums sums;  // p's block sums for the proposals, then the exact pass's
    std::size_t j = detail::propose_sparse(
        p, res, [&](std::size_t i) noexcept { return i == ix ? never : 0.f; }, sums);
    if (j != npos) return {p.tokens[j], false};
    const double v = res.uniform();  // the exact pass (see detail::propose_residual)
    j = detail::draw_blocked(
        p.size(),
        [&](std::size_t b, std::size_t c, float* out) noexcept {
            for (std::size_t i = 0; i < c; ++i) {
                const float w = p.probs[b + i];
                out[i] = w > 0.f ? w : 0.f;
            }
            if (ix != npos && ix >= b && ix < b + c) out[ix - b] = 0.f;
        },
        v, detail::residual_floor, sums);
    if (j == npos) return {detail::draw_sparse(p, v), false};
    return {p.tokens[j], false};
}

/// Greedy verification: accept iff x is p's argmax (ties to the lowest id); otherwise emit the
/// argmax. No randomness.
inline verify_result verify_greedy(sparse_dist_view p, token_id x) noexcept {
    const token_id a = detail::argmax(p);
    return {a, a == x && a >= 0};
}

/// LOSSY (Medusa typical acceptance): accept iff p(x) > min(epsilon, delta * exp(-H(p))),
/// otherwise emit y ~ p (residual stream). The emitted law is NOT p.
inline verify_result verify_typical(sparse_dist_view p, token_id x, typical_acceptance t,
                                    rng_key key) noexcept {
    const double px = detail::prob_of(p, x);
    const double threshold =
        std::min(double(t.epsilon), double(t.delta) * std::exp(-detail::entropy(p)));
    if (px > threshold) return {x, true};
    return {draw_from(p, key), false};
}

// ------------------------------------------------------------------------------------------------
// Verification on a weighted_set (sampling/verify.hpp: a sampler's processed set, a top-p cut
// not compacted). Same rules, randomness and law as the sparse forms above; p(x) is read in O(1)
// (cut) or O(log kept), and the residual of a rejection is one pass over the set's index space
// (the row for a cut) in ascending id order, as the sparse forms walk distribution_unordered().

namespace detail {
/// Calls f(buf, c, b) for the blocks [b, b + c) of p's weights (spec_block entries each).
template <class F>
void for_each_weight_block(const weighted_set& p, F&& f) noexcept {
    alignas(64) float buf[spec_block];
    const std::size_t n = p.extent();
    for (std::size_t b = 0; b < n; b += spec_block) {
        const std::size_t c = std::min(spec_block, n - b);
        p.weights_into(b, c, buf);
        f(buf, c, b);
    }
}
/// Most probable token of p (ties to the lowest id); -1 when empty.
inline token_id argmax(const weighted_set& p) noexcept {
    if (p.empty()) return -1;
    float best = 0.f;
    std::size_t at = npos;
    for_each_weight_block(p, [&](const float* w, std::size_t c, std::size_t b) noexcept {
        const float m = kernels::max(std::span<const float>(w, c));
        if (!(m > best)) return;  // (ascending ids: a tie keeps the earlier entry)
        best = m;
        at = b + std::size_t(std::find(w, w + c, m) - w);
    });
    return at == npos ? token_id(-1) : p.token_at(at);
}
/// Entropy -sum p ln p of p (natural log) = ln S - sum w ln w / S.
inline double entropy(const weighted_set& p) noexcept {
    if (p.empty()) return 0.0;
    double s = 0;
    for_each_weight_block(p, [&](const float* w, std::size_t c, std::size_t) noexcept {
        for (std::size_t i = 0; i < c; ++i)
            if (w[i] > 0.f) s += double(w[i]) * std::log(double(w[i]));
    });
    return std::log(p.sum) - s / p.sum;
}
}  // namespace detail

/// y ~ p with one uniform() of the residual stream at `key` (the bonus token); -1 if p is empty.
inline token_id draw_from(const weighted_set& p, rng_key key) noexcept {
    rng_stream s = make_stream(key, rng_purpose::residual);
    return p.draw(s.uniform());
}

/// verify_rejection with p a weighted_set: accept iff u * q(x) < p(x), else y ~ norm(max(0, p -
/// q)) over p's support (p when that mass is below 1e-9). \pre q's ids < ws.vocab_size() (larger
/// ids count as q = 0, and assert in debug builds); the index space of a cut p (its row) no larger
/// than ws.vocab_size() (beyond it q reads 0). Cost: O(1) + O(log |q|) on acceptance. On
/// rejection the residual is drawn by rejection from p (detail::propose_residual, ~1 / TV
/// proposals, each an O(log |q|) lookup of q, or O(1) when q is scattered: a q that is not
/// ascending costs two passes over q): on a cut, two draw_cut proposals (a quarter of the row
/// each on average), then one pass of block sums and proposals of one block each; the exact
/// pass over p's index space (q merged along it) only after 32 refusals. No allocation.
inline verify_result verify_rejection(const weighted_set& p, sparse_dist_view q, token_id x,
                                      rng_key key, verify_workspace& ws) noexcept {
    q = detail::trimmed(q);
    rng_stream acc = make_stream(key, rng_purpose::accept);
    const double u = acc.uniform();
    const double px = p.prob(x), qx = detail::prob_of(q, x);
    if (qx > 0 && u * qx < px) return {x, true};
    rng_stream res = make_stream(key, rng_purpose::residual);
    if (p.empty()) return {-1, false};
    const float inv = float(1.0 / p.sum);
    const bool aligned = !p.is_cut && detail::same_ids(p.ids, q.tokens);
    // q at the proposals: elementwise (aligned), a binary search (ascending), else scattered
    // into the dense scratch row (once; the exact pass below reads it too)
    const float* dense = nullptr;
    const std::size_t dv = ws.dense_.size();
    if (!aligned && !q.ascending) dense = ws.scatter(q);
    auto q_at = [&](std::size_t i) noexcept -> float {
        if (aligned) return q.probs[i];
        const token_id t = p.token_at(i);
        if (dense) return std::size_t(t) < dv ? dense[std::size_t(t)] : 0.f;
        return float(detail::prob_of(q, t));
    };
    kernels::block_sums sums;  // p's block sums for the proposals, then the exact pass's
    std::size_t j = detail::propose_set(p, res, q_at, sums);
    if (j != npos) {
        if (dense) ws.unscatter(q);
        return {p.token_at(j), false};
    }
    const double v = res.uniform();  // the exact pass (see detail::propose_residual)
    if (aligned) {                   // aligned sets: elementwise
        j = detail::draw_blocked(
            p.extent(),
            [&](std::size_t b, std::size_t c, float* out) noexcept {
                const float* qq = q.probs.data() + b;
                p.weights_into(b, c, out);
                for (std::size_t i = 0; i < c; ++i) {
                    const float r = out[i] * inv - (qq[i] > 0.f ? qq[i] : 0.f);
                    out[i] = r > 0.f ? r : 0.f;
                }
            },
            v, detail::residual_floor, sums);
    } else if (p.is_cut && q.ascending) {  // q's entries of each block are a range of q
        DECODEKIT_ASSERT(std::adjacent_find(q.tokens.begin(), q.tokens.end(),
                                            std::greater_equal<>{}) == q.tokens.end(),
                         "verify_rejection: q.ascending but its tokens are not strictly ascending");
        const token_id* ids = q.tokens.data();
        const float* qp = q.probs.data();
        const std::size_t qn = q.size();
        // q over the ids [b, b + c): q's own probabilities when q holds every id of the block,
        // else its entries of the block scattered into qb (an id outside the block, only on a
        // broken promise, lands in the spare slot qb[c]: a wrong law, never a write outside qb).
        // Blocks come in ascending order during the sums: the range [k0, k1) of the block
        // starts where the previous one ended and holds at most c entries, so k1 is searched
        // among c entries (log2 512 steps), not the whole of q.
        alignas(64) float qb[detail::spec_block + 1];
        std::size_t next_b = 0, next_k = 0;
        auto q_block = [&](std::size_t b, std::size_t c) noexcept -> const float* {
            const std::size_t k0 =
                b == next_b ? next_k
                            : std::size_t(std::lower_bound(ids, ids + qn, token_id(b)) - ids);
            const std::size_t k1 = std::size_t(
                std::lower_bound(ids + k0, ids + std::min(qn, k0 + c), token_id(b + c)) - ids);
            next_b = b + c;
            next_k = k1;
            if (k1 - k0 == c) return qp + k0;  // (contiguous: q's probabilities themselves)
            std::fill_n(qb, c, 0.f);
            const auto slot = [&](std::size_t k) noexcept {
                return std::min(std::size_t(std::uint32_t(ids[k]) - std::uint32_t(b)), c);
            };
            std::size_t k = k0;
            for (; k + 4 <= k1; k += 4) {  // (unrolled: the scatter is a store per entry)
                const std::size_t s0 = slot(k), s1 = slot(k + 1), s2 = slot(k + 2),
                                  s3 = slot(k + 3);
                qb[s0] = qp[k];
                qb[s1] = qp[k + 1];
                qb[s2] = qp[k + 2];
                qb[s3] = qp[k + 3];
            }
            for (; k < k1; ++k) qb[slot(k)] = qp[k];
            return qb;
        };
        j = kernels::draw_blocked(
            p.extent(),
            [&](std::size_t b, std::size_t c) noexcept {
                return double(p.residual_sum(b, c, q_block(b, c)));
            },
            [&](std::size_t b, std::size_t c, float* out) noexcept {
                p.residual_into(b, c, q_block(b, c), out);
            },
            v, detail::residual_floor, sums);
    } else if (p.is_cut && p.extent() <= ws.dense_.size()) {  // scatter q into the dense row
        if (!dense) dense = ws.scatter(q);
        // (index = id: q over a block is dense[b, b + c); the same block sums and residuals as
        // the merge above, so both give the same token)
        j = kernels::draw_blocked(
            p.extent(),
            [&](std::size_t b, std::size_t c) noexcept {
                return double(p.residual_sum(b, c, dense + b));
            },
            [&](std::size_t b, std::size_t c, float* out) noexcept {
                p.residual_into(b, c, dense + b, out);
            },
            v, detail::residual_floor, sums);
    } else {  // scatter q into the dense scratch row, read it along p
        if (!dense) dense = ws.scatter(q);
        j = detail::draw_blocked(
            p.extent(),
            [&](std::size_t b, std::size_t c, float* out) noexcept {
                p.weights_into(b, c, out);
                for (std::size_t i = 0; i < c; ++i) {
                    const auto t = std::size_t(p.token_at(b + i));
                    const float r = out[i] * inv - (t < dv ? dense[t] : 0.f);
                    out[i] = r > 0.f ? r : 0.f;
                }
            },
            v, detail::residual_floor, sums);
    }
    if (dense) ws.unscatter(q);
    if (j == npos) return {p.draw(v), false};  // residual ~0: fall back to p
    return {p.token_at(j), false};
}

/// verify_one_hot with p a weighted_set: accept iff u < p(x), else y ~ p without x (p when that
/// mass is below 1e-9). Cost: O(1) on acceptance (O(log kept) sparse); on rejection the
/// residual by rejection from p (verify_rejection's proposals, a proposal other than x is kept:
/// on a cut ~1 / (1 - p(x)) draw_cut proposals, then block sums), the exact pass over p's index
/// space only after 32 refusals; no allocation.
inline verify_result verify_one_hot(const weighted_set& p, token_id x, rng_key key) noexcept {
    rng_stream acc = make_stream(key, rng_purpose::accept);
    const double u = acc.uniform();
    const std::size_t ix = p.index_of(x);
    if (u < p.prob(x)) return {x, true};
    rng_stream res = make_stream(key, rng_purpose::residual);
    if (p.empty()) return {-1, false};
    constexpr float never = std::numeric_limits<float>::infinity();  // q(x) = 1: x never kept
    kernels::block_sums sums;  // p's block sums for the proposals, then the exact pass's
    std::size_t j = detail::propose_set(
        p, res, [&](std::size_t i) noexcept { return i == ix ? never : 0.f; }, sums);
    if (j != npos) return {p.token_at(j), false};
    const double v = res.uniform();  // the exact pass (see detail::propose_residual)
    j = detail::draw_blocked(
        p.extent(),
        [&](std::size_t b, std::size_t c, float* out) noexcept {
            p.weights_into(b, c, out);
            if (ix != npos && ix >= b && ix < b + c) out[ix - b] = 0.f;
        },
        v, detail::residual_floor * p.sum, sums);
    if (j == npos) return {p.draw(v), false};
    return {p.token_at(j), false};
}

/// verify_greedy with p a weighted_set: accept iff x is p's argmax (ties to the lowest id).
inline verify_result verify_greedy(const weighted_set& p, token_id x) noexcept {
    const token_id a = detail::argmax(p);
    return {a, a == x && a >= 0};
}

/// verify_typical (LOSSY) with p a weighted_set.
inline verify_result verify_typical(const weighted_set& p, token_id x, typical_acceptance t,
                                    rng_key key) noexcept {
    const double threshold =
        std::min(double(t.epsilon), double(t.delta) * std::exp(-detail::entropy(p)));
    if (p.prob(x) > threshold) return {x, true};
    return {draw_from(p, key), false};
}

/// Which verification rule the loop applies.
enum class verification : std::uint8_t {
    rejection,  ///< exact: rejection sampling with the proposer's q (one-hot if it has none)
    greedy,     ///< exact for greedy decoding: accept while the draft equals the target argmax
    typical,    ///< LOSSY: Medusa typical acceptance
};

// ------------------------------------------------------------------------------------------------
// Processing: logits row -> sparse distribution (the same pipeline for target and draft)

/// Where a processed distribution is computed (mirrors the sampler's sample_context).
struct position_context {
    std::uint64_t sequence = 0;         ///< sequence id (rng key)
    std::uint64_t step = 0;             ///< generated tokens before this position
    std::span<const token_id> history;  ///< prompt + tokens before this position
    std::size_t prompt_length = 0;      ///< how much of history is prompt
    /// The position's token bitmask (speculative_stepper::set_masks; default: none). A
    /// processing must honour it (the built-in ones pass it to the sampler as
    /// sample_context::mask): p is then the masked distribution.
    kernels::token_bitmask mask = {};
};

/// A processing step: `proc(logits, ctx, out)` writes the processed sparse distribution of a
/// logits row into `out` (clearing it first). Optional: `proc.commit(token, p)` is called for
/// every emitted token, in order, with the target distribution it was emitted under (stateful
/// pipelines such as mirostat; see sampler_processing). Proposers' processing is never committed:
/// a stateful draft keeps its state, which is still exact because q is what the draft drew from.
template <class P>
concept distribution_processing = requires(P& p, std::span<const float> logits,
                                           const position_context& c, sparse_distribution& out) {
    p(logits, c, out);
};

/// A processing that also gives its distribution as a weighted_set (sampling/verify.hpp):
/// `proc.processed(logits, ctx)`, the same distribution as proc(logits, ctx, out), viewed where
/// the sampler left it (valid until the next call on that processing's workspace). The stepper
/// verifies on it (a top-p cut is never compacted); other processings are verified on their
/// sparse output.
template <class P>
concept set_processing = requires(P& p, std::span<const float> logits, const position_context& c) {
    { p.processed(logits, c) } -> std::same_as<weighted_set>;
};

/// The built-in pipeline: temperature (0 = greedy: one-hot argmax, ties to the lowest id) ->
/// top-k (exactly k, ties by lowest id; 0 = off) -> top-p (smallest prefix in descending order
/// reaching p, crossing token kept; 1 = off). NaN / -inf logits have probability 0.
/// Computed by a decodekit::sampler with exactly these steps (sampling_params: order hf,
/// top_k_ties exactly_k, no processors) through sampler::distribution_unordered(): the output is
/// in ascending id order, and what the sampler's own draw would use. For drafts, tests and
/// backends that only need these three knobs; sampler_processing takes a full sampler.
struct basic_processing {
    float temperature = 1.f;  ///< >= 0
    std::size_t top_k = 0;    ///< 0 = off
    float top_p = 1.f;        ///< (0, 1]
    /// The sampler, built on the first call for the row's size and rebuilt when a field or the
    /// row size changes (no allocation per call once warm; do not share one object between
    /// threads); not configuration.
    mutable std::optional<sampler> sampler_ = {};

    /// First problem with the fields, or nullopt.
    std::optional<std::string> check() const {
        if (!(temperature >= 0.f && std::isfinite(temperature)))
            return detail::range_message("basic_processing.temperature", "finite and >= 0",
                                         temperature);
        if (!(top_p > 0.f && top_p <= 1.f))
            return detail::range_message("basic_processing.top_p", "in (0, 1]", top_p);
        return std::nullopt;
    }
    void validate() const { raise_if(check()); }

    /// The sampler configuration of these fields for rows of `vocab_size` entries.
    sampling_params as_sampling_params(std::size_t vocab_size) const {
        sampling_params sp;
        sp.temperature = temperature;
        sp.top_k = top_k == 0 || top_k >= vocab_size ? 0 : int(top_k);  // k >= V: off
        sp.top_k_ties = tie_policy::exactly_k;
        sp.top_p = top_p;
        sp.order = sampling_order::hf;
        return sp;
    }

    /// Writes the processed distribution of `x` into `out` (empty for an empty row or a row
    /// with no valid entry). Raises (config_error) when check() fails.
    void operator()(std::span<const float> x, const position_context& c,
                    sparse_distribution& out) const {
        out.clear();
        if (x.empty()) return;
        const decodekit::distribution d = armed(x.size()).distribution_unordered(
            x, sample_context{c.sequence, c.step, c.history, c.prompt_length, c.mask});
        out.tokens.assign(d.tokens.begin(), d.tokens.end());
        out.probs.assign(d.probs.begin(), d.probs.end());
        out.ascending = true;
    }
    /// The same distribution as a weighted_set in the thread's sampling workspace (empty for an
    /// empty row). Raises (config_error) when check() fails.
    weighted_set processed(std::span<const float> x, const position_context& c) const {
        if (x.empty()) return {};
        return processed_set(
            armed(x.size()), x,
            sample_context{c.sequence, c.step, c.history, c.prompt_length, c.mask});
    }

private:
    /// The sampler for rows of `n` entries with these fields (built or rebuilt when needed).
    sampler& armed(std::size_t n) const {
        const sampling_params want = as_sampling_params(n);
        if (!sampler_ || sampler_->vocab_size() != n ||
            sampler_->params().temperature != want.temperature ||
            sampler_->params().top_k != want.top_k || sampler_->params().top_p != want.top_p) {
            validate();  // errors name basic_processing's fields, not sampling_params'
            sampler_.emplace(want, n);
        }
        return *sampler_;
    }
};

/// Processing through a decodekit::sampler: p and q are exactly what the sampler's draw would use
/// (processors with the history, truncation order, temperature), from
/// sampler::distribution_unordered() (ascending id order, no sort by probability). The sampler
/// is borrowed.
/// commit() advances the sampler's state (mirostat's mu) with sampler::observe() for each emitted
/// token and the distribution it was emitted under, so mirostat stays exact: the distribution of
/// step n + 1 follows the token emitted at step n, as with plain sampling.
class sampler_processing {
public:
    explicit sampler_processing(sampler& s) noexcept : s_(&s) {}
    void operator()(std::span<const float> logits, const position_context& c,
                    sparse_distribution& out) const {
        const decodekit::distribution d = s_->distribution_unordered(
            logits, sample_context{c.sequence, c.step, c.history, c.prompt_length, c.mask});
        out.tokens.assign(d.tokens.begin(), d.tokens.end());
        out.probs.assign(d.probs.begin(), d.probs.end());
        out.ascending = true;
    }
    /// The same distribution as a weighted_set (sampler::processed_set in the thread's workspace).
    weighted_set processed(std::span<const float> logits, const position_context& c) const {
        return processed_set(
            *s_, logits, sample_context{c.sequence, c.step, c.history, c.prompt_length, c.mask});
    }
    /// Advances the sampler as if it had drawn `t` from `p`.
    void commit(token_id t, const sparse_distribution& p) const noexcept {
        s_->observe(decodekit::distribution{p.tokens, p.probs}, t);
    }
    /// commit() with p as a weighted_set.
    void commit(token_id t, const weighted_set& p) const noexcept {
        const float pt = float(p.prob(t));
        s_->observe(decodekit::distribution{{&t, 1}, {&pt, 1}}, t);
    }
    /// The sampler's min_new_tokens (the stepper holds its stops until then).
    std::size_t min_new_tokens() const noexcept { return s_->params().min_new_tokens; }
    /// The EOS ids the sampler suppresses before min_new_tokens.
    std::span<const token_id> eos_ids() const noexcept { return s_->params().eos_ids; }

private:
    sampler* s_;
};

// ------------------------------------------------------------------------------------------------
// Proposers

/// What a proposer is asked for in a round.
struct draft_request {
    std::span<const token_id> context;  ///< prompt + emitted tokens
    std::size_t max_tokens = 0;         ///< propose at most this many (may be 0)
    rng_key key;                        ///< key.step = generation step of the first draft token
    std::size_t prompt_length = 0;
};

/// What a proposer returns: draft tokens, and for stochastic proposals the draft distribution q
/// each was drawn from (the distribution actually sampled from). Reused across rounds.
struct draft_buffer {
    std::vector<token_id> tokens;
    std::vector<sparse_distribution> q;  ///< q[i] for tokens[i]; only the first size() are valid
    bool has_distributions = false;      ///< false: deterministic proposals (verified one-hot)
    std::size_t model_calls = 0;         ///< draft model calls made for this round

    void clear() noexcept {
        tokens.clear();
        has_distributions = false;
        model_calls = 0;
    }
    std::size_t size() const noexcept { return tokens.size(); }
    /// The distribution slot of the next draft token (grows q once, then reuses it).
    sparse_distribution& next_q() {
        if (q.size() <= tokens.size()) q.resize(tokens.size() + 1);
        return q[tokens.size()];
    }
};

/// A proposer: `propose(request, out)` fills `out` (already cleared) with at most
/// request.max_tokens drafts. Optional: `vocab_size()` (checked against the target's) and
/// `commit(std::span<const token_id> emitted)` called after each round with its emitted tokens
/// (e.g. to update an n-gram index).
template <class P>
concept draft_proposer = requires(P& p, const draft_request& r, draft_buffer& out) {
    p.propose(r, out);
};

/// A proposer whose model calls the caller makes, so that an engine batches the drafting of
/// many requests (one draft-model call per draft position for every speculating request):
///   p.begin(r, out)       starts a round (out cleared by the caller; r as for propose());
///   p.draft_call()        the call its model must compute next (model_role::draft); empty: the
///                         round's drafting is over;
///   p.advance(rows, out)  consumes draft_call()'s rows (logits_rows() x vocab_size);
///   p.draft_model()       the model draft_call() is for (speculative_decode runs it there).
/// draft_model_proposer, early_exit_proposer and mtp_proposer are stepwise; their propose() runs
/// the same steps on their own model, so both paths draft the same tokens.
template <class P>
concept stepwise_proposer = requires(P& p, const P& cp, const draft_request& r, draft_buffer& out,
                                     std::span<const float> rows) {
    p.begin(r, out);
    { cp.draft_call() } -> std::convertible_to<model_call>;
    p.advance(rows, out);
    p.draft_model();
};

/// A proposer that drafts from the target's hidden state (a multi-token-prediction module):
/// when `needs_target_hidden()` is true (read once, when the stepper is constructed) every
/// verify call is logits_and_hidden (hidden_size() floats per row), and after each round that
/// leaves the sequence running the stepper calls `observe_target_hidden(hidden_row, context)`:
/// hidden_row is the target's hidden state at the last verified position (the position whose logits
/// chose the round's last emitted token); context is prompt + emitted tokens, so that position is
/// context.size() - 2 and the token it chose is context.back(). The first round has no hidden state
/// yet (draft nothing, or from the context alone).
template <class P>
concept target_hidden_proposer = requires(P& p, const P& cp, std::span<const float> hidden,
                                          std::span<const token_id> context) {
    { cp.needs_target_hidden() } -> std::convertible_to<bool>;
    { cp.hidden_size() } -> std::convertible_to<std::size_t>;
    p.observe_target_hidden(hidden, context);
};

// ------------------------------------------------------------------------------------------------
// The loop

/// Parameters of speculative_decode and speculative_stepper.
struct speculative_params {
    std::size_t max_new_tokens = 64;     ///< never emits more (0: emits nothing)
    std::vector<token_id> eos_ids = {};  ///< drawing one ends the output (EOS is not appended)
    std::vector<std::vector<token_id>> stop_sequences = {};  ///< output ending with one stops
    std::uint64_t seed = 0;
    std::uint64_t sequence = 0;  ///< rng key sequence id
    verification rule = verification::rejection;
    typical_acceptance typical{};  ///< thresholds of the LOSSY typical rule
    std::size_t draft_length = 4;  ///< gamma of the first round, in [min, max]
    std::size_t min_draft_length = 1;
    std::size_t max_draft_length = 8;  ///< <= 256 (the loop holds max + 1 logits rows)
    bool adaptive = false;  ///< +1 after a fully accepted round, -1 when less than half accepted
    std::uint32_t target_slot = 0;               ///< slot of the target sequence in model calls
    std::vector<std::string> stop_strings = {};  ///< text stops (decoding/stop_strings.hpp)
    detokenize_fn detokenize = {};  ///< token -> bytes: streams text, needed by stop_strings

    /// First problem with the fields, or nullopt.
    std::optional<std::string> check() const {
        if (max_draft_length > 256)
            return detail::range_message("speculative_params.max_draft_length", "<= 256",
                                         double(max_draft_length));
        if (min_draft_length > max_draft_length)
            return detail::range_message("speculative_params.min_draft_length",
                                         "<= max_draft_length", double(min_draft_length));
        if (draft_length < min_draft_length || draft_length > max_draft_length)
            return detail::range_message("speculative_params.draft_length",
                                         "in [min_draft_length, max_draft_length]",
                                         double(draft_length));
        if (auto e = detail::check_stop_conditions("speculative_params", eos_ids, stop_sequences))
            return e;
        if (auto e = typical.check()) return e;
        return detail::check_stop_strings("speculative_params", stop_strings, bool(detokenize));
    }
    void validate() const { raise_if(check()); }
};

/// Statistics of one speculative run.
struct speculative_stats {
    std::size_t target_calls = 0;  ///< target model calls (one per round)
    std::size_t draft_calls = 0;   ///< model calls made by the proposer
    std::size_t rounds = 0;
    std::size_t proposed = 0;              ///< draft tokens proposed (after budget truncation)
    std::size_t drafted = 0;               ///< draft tokens verified (none after a rejection)
    std::size_t accepted = 0;              ///< draft tokens accepted
    std::size_t emitted = 0;               ///< tokens emitted (accepted + residual/bonus)
    std::vector<std::size_t> drafted_at;   ///< [i]: drafts verified at draft position i
    std::vector<std::size_t> accepted_at;  ///< [i]: drafts accepted at draft position i
    std::size_t prompt_tokens = 0;
    std::size_t target_rows = 0;     ///< logits rows the target computed
    double seconds = 0;              ///< wall-clock time of the run
    double time_to_first_token = 0;  ///< seconds until the first emitted token

    /// accepted / drafted (0 when nothing was drafted).
    double acceptance_rate() const noexcept {
        return drafted ? double(accepted) / double(drafted) : 0.0;
    }
    /// Acceptance rate at draft position i (0-based).
    double acceptance_rate_at(std::size_t i) const noexcept {
        return i < drafted_at.size() && drafted_at[i]
                   ? double(accepted_at[i]) / double(drafted_at[i])
                   : 0.0;
    }
    /// Emitted tokens per target call.
    double mean_tokens_per_target_call() const noexcept {
        return target_calls ? double(emitted) / double(target_calls) : 0.0;
    }
    /// Accepted draft tokens per round.
    double mean_accepted_length() const noexcept {
        return rounds ? double(accepted) / double(rounds) : 0.0;
    }
    /// Emitted tokens per second.
    double tokens_per_second() const noexcept { return seconds > 0 ? emitted / seconds : 0.0; }

    /// The same run as generate()'s generation_stats (model_calls / model_rows are the target's;
    /// drafted_tokens = verified drafts, so acceptance_rate() agrees).
    generation_stats as_generation_stats() const {
        generation_stats g;
        g.prompt_tokens = prompt_tokens;
        g.generated_tokens = emitted;
        g.model_calls = target_calls;
        g.model_rows = target_rows;
        g.time_to_first_token = time_to_first_token;
        g.total_time = seconds;
        g.draft_calls = draft_calls;
        g.drafted_tokens = drafted;
        g.accepted_tokens = accepted;
        for (std::size_t i = 0; i < drafted_at.size() && drafted_at[i]; ++i)
            g.acceptance_by_position.push_back(acceptance_rate_at(i));
        g.finish();
        return g;
    }
};

/// Output of speculative_decode.
struct speculative_result {
    std::vector<token_id> tokens;  ///< generated tokens (prompt and EOS excluded)
    stop_reason reason = stop_reason::max_new_tokens;
    speculative_stats stats;
};

/// Speculative decoding of one sequence, driven stage by stage (see the file comment): in the
/// propose stage next_call() is the proposer's draft call (model_role::draft; stepwise proposers
/// only), in the verify stage the target call (logits, or logits_and_hidden for a
/// target_hidden_proposer); advance() consumes that call's rows. The verify advance also
/// commits: it emits the round's tokens (events, stop rule) and starts the next round.
/// Borrows `proposer` and `processing` (they must outlive it; give each concurrently running
/// stepper its own: they hold the round's drafting state and stateful pipelines). Randomness:
/// the keys of the file comment, so a request gives the same tokens alone or in any batch.
template <class Proposer, distribution_processing Processing>
requires(draft_proposer<Proposer> || stepwise_proposer<Proposer>) class speculative_stepper {
public:
    /// The stage the next call belongs to.
    enum class stage : std::uint8_t { propose, verify, done };

    /// \pre params, processing and proposer valid (validated here, through their validate()
    /// when they have one); prompt non-empty; the proposer's vocab_size(), when it has one,
    /// equals vocab_size (each rejected with a message otherwise)
    speculative_stepper(const speculative_params& params, std::size_t vocab_size,
                        std::span<const token_id> prompt, Proposer& proposer,
                        Processing& processing)
        : p_(checked(params, vocab_size, prompt, proposer, processing)),
          V_(vocab_size),
          prompt_length_(prompt.size()),
          proposer_(&proposer),
          processing_(&processing),
          ws_(vocab_size) {
        const std::size_t reserve = std::min<std::size_t>(p_.max_new_tokens, 16384);
        ctx_.assign(prompt.begin(), prompt.end());
        ctx_.reserve(prompt.size() + reserve + p_.max_draft_length + 1);
        if constexpr (!set_processing<Processing>) dist_.reserve(V_);
        gamma_ = p_.draft_length;
        st_.drafted_at.assign(p_.max_draft_length, 0);
        st_.accepted_at.assign(p_.max_draft_length, 0);
        st_.prompt_tokens = prompt.size();
        if constexpr (target_hidden_proposer<Proposer>)
            if (proposer_->needs_target_hidden()) H_ = std::size_t(proposer_->hidden_size());
        std::size_t min_new = 0;
        if constexpr (requires { processing.min_new_tokens(); })
            min_new = processing.min_new_tokens();
        out_ = sequence_output(stop_conditions{.eos_ids = p_.eos_ids,
                                               .stop_sequences = p_.stop_sequences,
                                               .stop_strings = p_.stop_strings,
                                               .detokenize = p_.detokenize,
                                               .min_new_tokens = min_new,
                                               .max_new_tokens = p_.max_new_tokens},
                               prompt.size(), reserve);
        if (out_.done())
            stage_ = stage::done;
        else
            begin_round();
    }
    speculative_stepper(const speculative_stepper&) = delete;
    speculative_stepper& operator=(const speculative_stepper&) = delete;
    speculative_stepper(speculative_stepper&&) = default;
    speculative_stepper& operator=(speculative_stepper&&) = default;

    /// propose: the proposer's draft call; verify: the target's (drafts + 1 positions); empty
    /// when done().
    model_call next_call() const noexcept {
        switch (stage_) {
            case stage::propose:
                if constexpr (stepwise_proposer<Proposer>) return proposer_->draft_call();
                return {};
            case stage::verify:
                return {.kind = H_ ? call_kind::logits_and_hidden : call_kind::logits,
                        .requests = std::span<const sequence_request>(&request_, 1)};
            default:
                return {};
        }
    }
    std::span<const sequence_request> requests() const noexcept { return next_call().requests; }
    stage current_stage() const noexcept { return stage_; }
    bool done() const noexcept { return stage_ == stage::done; }
    /// The round's drafts (complete in the verify stage).
    std::span<const token_id> drafts() const noexcept { return drafts_.tokens; }
    std::size_t vocab_size() const noexcept { return V_; }
    /// Hidden-state width the verify call needs (0: a plain logits call).
    std::size_t hidden_size() const noexcept { return H_; }

    /// Token masks for this verify round (structured output): the mask of verified position i
    /// (0 .. drafts().size(); the last is the bonus position) is words[i W, (i + 1) W), W =
    /// kernels::bitmask_words(vocab_size()), in the layout grammar engines fill one row per
    /// position (xgrammar's and llguidance's bitmask tensors): position i's mask is the grammar's
    /// state after drafts()[0, i). The target's distribution at each position is then the
    /// masked one, so the output law is masked sampling's (a disallowed draft is rejected, the
    /// residual is drawn from the masked distribution). Call in the verify stage, before
    /// advance(); the words are borrowed until that advance() and forgotten after it (each
    /// round needs its own; an empty span: no masks). A non-empty span shorter than
    /// (drafts + 1) W makes advance() return bad_input (nothing consumed); a position whose
    /// mask leaves no token ends the sequence with stop_reason::constraint_done.
    void set_masks(std::span<const std::uint32_t> words) noexcept { masks_ = words; }

    /// Consumes next_call()'s rows: the draft model's rows in the propose stage (no token is
    /// emitted), the target's logits (drafts + 1 rows) and, for a target_hidden_proposer, hidden
    /// rows in the verify stage (emits the round's tokens through `on_token`).
    /// \return status bad_input (nothing consumed) when a span is short (rows, hidden, masks)
    template <class OnToken = detail::no_stream>
    requires token_callback<OnToken> step_events advance(std::span<const float> rows,
                                                         std::span<const float> hidden = {},
                                                         OnToken&& on_token = {}) {
        if (done()) return {.status = step_status::finished};
        if (stage_ == stage::propose) return draft_step(rows, hidden);
        const std::size_t n = drafts_.tokens.size() + 1;
        if (rows.size() / V_ < n || (H_ > 0 && hidden.size() / H_ < n) ||
            (!masks_.empty() && masks_.size() < n * kernels::bitmask_words(V_)))
            return {.status = step_status::bad_input};
        out_.begin_step();
        verify_and_commit(rows, hidden, on_token);
        masks_ = {};
        return out_.events();
    }
    /// advance() without hidden rows.
    template <class OnToken>
    requires token_callback<OnToken> step_events advance(std::span<const float> rows,
                                                         OnToken&& on_token) {
        return advance(rows, {}, on_token);
    }

    /// Ends the sequence now with stop_reason::cancelled (the held-back text is in the events).
    step_events cancel() {
        if (done()) return {.status = step_status::finished};
        out_.begin_step();
        out_.finish(stop_reason::cancelled);
        stage_ = stage::done;
        return out_.events();
    }

    /// The output so far (everything once done()).
    speculative_result result() const {
        speculative_result r;
        r.tokens.assign(out_.tokens().begin(), out_.tokens().end());
        r.reason = out_.reason();
        r.stats = st_;
        r.stats.seconds = out_.total_time();
        r.stats.time_to_first_token = out_.time_to_first_token();
        return r;
    }

private:
    static const speculative_params& checked(const speculative_params& params, std::size_t V,
                                             std::span<const token_id> prompt, Proposer& proposer,
                                             Processing& processing) {
        params.validate();
        if constexpr (requires { processing.validate(); }) processing.validate();
        if constexpr (requires { proposer.validate(); }) proposer.validate();
        if (prompt.empty()) raise("speculative_decode: the prompt must be non-empty");
        if (V == 0) raise("speculative_decode: vocab_size must be >= 1");
        if constexpr (requires {
                          processing.min_new_tokens();
                          processing.eos_ids();
                      }) {
            // min_new_tokens suppresses EOS in the processing: it must know every EOS id
            if (processing.min_new_tokens() > 0)
                for (token_id e : params.eos_ids) {
                    const auto ids = processing.eos_ids();
                    if (e >= 0 && std::find(ids.begin(), ids.end(), e) == ids.end())
                        raise("speculative_decode: the processing sampler's min_new_tokens is " +
                              std::to_string(processing.min_new_tokens()) +
                              " but its sampling_params.eos_ids lacks the EOS id " +
                              std::to_string(e) +
                              " of speculative_params.eos_ids (it could not be suppressed)");
                }
        }
        if constexpr (requires { proposer.vocab_size(); }) {
            const std::size_t dv = std::size_t(proposer.vocab_size());
            if (dv != V)
                raise("speculative_decode: vocabulary mismatch: the draft vocab_size is " +
                      std::to_string(dv) + " but the target vocab_size is " + std::to_string(V) +
                      "; draft and target must share one tokenizer");
        }
        return params;
    }

    /// Propose stage: asks the proposer for the round's drafts (at once, or stepwise).
    void begin_round() {
        n0_ = out_.size();
        const std::size_t remaining = p_.max_new_tokens - n0_;
        cap_ = std::min(gamma_, remaining - 1);
        base_ = ctx_.size();
        drafts_.clear();
        if (cap_ > 0) {
            const draft_request req{ctx_, cap_, rng_key{p_.seed, p_.sequence, n0_}, prompt_length_};
            if constexpr (stepwise_proposer<Proposer>) {
                proposer_->begin(req, drafts_);
                if (!proposer_->draft_call().empty()) {
                    stage_ = stage::propose;
                    return;
                }
            } else {
                proposer_->propose(req, drafts_);
            }
        }
        end_proposal();
    }
    /// One draft call's rows (and hidden rows, for a call that returns them) into the stepwise
    /// proposer.
    step_events draft_step(std::span<const float> rows, std::span<const float> hidden) {
        if constexpr (stepwise_proposer<Proposer>) {
            const model_call c = proposer_->draft_call();
            if (rows.size() / V_ < c.logits_rows()) return {.status = step_status::bad_input};
            if constexpr (requires { proposer_->advance(rows, hidden, drafts_); }) {
                const std::size_t H = proposer_->hidden_size(), nh = c.hidden_rows() * H;
                if (hidden.size() < nh) return {.status = step_status::bad_input};
                out_.begin_step();
                proposer_->advance(rows.first(c.logits_rows() * V_), hidden.first(nh), drafts_);
            } else {
                out_.begin_step();
                proposer_->advance(rows.first(c.logits_rows() * V_), drafts_);
            }
            if (proposer_->draft_call().empty()) end_proposal();
            return out_.events();
        } else {
            return {.status = step_status::bad_input};  // never: no propose stage
        }
    }
    /// The drafts are in: cut them to the budget, to ids in [0, V) and (sampled drafts) to the
    /// q's the proposer gave, then build the verify call.
    void end_proposal() {
        auto& d = drafts_.tokens;
        if (d.size() > cap_) d.resize(cap_);
        // A draft is cut at its first id outside [0, V): the target never sees an invalid id,
        // whatever the proposer (n-gram lookup copies prompt ids, which may be out of range).
        d.erase(std::find_if(d.begin(), d.end(),
                             [&](token_id t) { return t < 0 || std::size_t(t) >= V_; }),
                d.end());
        // A proposer that claims distributions but gave fewer q's than drafts: drafts without
        // a q are dropped (never read past q).
        if (drafts_.has_distributions && drafts_.q.size() < d.size()) d.resize(drafts_.q.size());
        st_.draft_calls += drafts_.model_calls;
        st_.proposed += d.size();
        ctx_.insert(ctx_.end(), d.begin(), d.end());
        request_ = {std::span<const token_id>(ctx_), d.size() + 1, p_.target_slot};
        stage_ = stage::verify;
    }

    /// Verify stage: the old loop body; emits through out_, then the next round.
    template <class OnToken>
    void verify_and_commit(std::span<const float> rows, std::span<const float> hidden,
                           OnToken& on_token) {
        const std::size_t g = drafts_.tokens.size();
        ++st_.target_calls;
        st_.target_rows += g + 1;
        ++st_.rounds;
        const std::size_t emitted_before = out_.size();
        ctx_.resize(base_);  // from here ctx holds prompt + emitted tokens only
        std::size_t accepted_round = 0, last_row = 0;
        bool all_accepted = true, running = true;
        for (std::size_t i = 0; i < g && running; ++i) {
            const token_id x = drafts_.tokens[i];
            const rng_key key{p_.seed, p_.sequence, n0_ + i};
            const verify_result v = with_target(rows, i, [&](const auto& p) noexcept {
                switch (p_.rule) {
                    case verification::greedy:
                        return verify_greedy(p, x);
                    case verification::typical:
                        return verify_typical(p, x, p_.typical, key);
                    default:
                        return drafts_.has_distributions
                                   ? verify_rejection(p, drafts_.q[i], x, key, ws_)
                                   : verify_one_hot(p, x, key);
                }
            });
            ++st_.drafted;
            ++st_.drafted_at[i];
            last_row = i;
            if (v.accepted) {
                ++st_.accepted;
                ++st_.accepted_at[i];
                ++accepted_round;
                running = emit(x, on_token);
                continue;
            }
            all_accepted = false;
            if (v.token < 0) {
                out_.finish(stop_reason_of_no_token(!masks_.empty()), on_token);
                running = false;
            } else {
                running = emit(v.token, on_token);
            }
            break;
        }
        if (running && all_accepted) {  // bonus token from the target's last row
            last_row = g;
            const token_id y = with_target(rows, g, [&](const auto& p) noexcept {
                return p_.rule == verification::greedy
                           ? detail::argmax(p)
                           : draw_from(p, rng_key{p_.seed, p_.sequence, n0_ + g});
            });
            if (y < 0) {
                out_.finish(stop_reason_of_no_token(!masks_.empty()), on_token);
                running = false;
            } else {
                running = emit(y, on_token);
            }
        }
        if constexpr (requires { proposer_->commit(std::span<const token_id>{}); })
            proposer_->commit(out_.tokens().subspan(emitted_before));
        if (p_.adaptive && g > 0) {
            if (accepted_round == g && g == gamma_)
                gamma_ = std::min(gamma_ + 1, p_.max_draft_length);
            else if (2 * accepted_round < g && gamma_ > p_.min_draft_length)
                --gamma_;
        }
        if (!running) {
            stage_ = stage::done;
            return;
        }
        if constexpr (target_hidden_proposer<Proposer>)
            if (H_ > 0)
                proposer_->observe_target_hidden(hidden.subspan(last_row * H_, H_),
                                                 std::span<const token_id>(ctx_));
        begin_round();
    }
    /// The mask of verified position i (none without set_masks()).
    kernels::token_bitmask mask_at(std::size_t i) const noexcept {
        if (masks_.empty()) return {};
        const std::size_t w = kernels::bitmask_words(V_);
        return {.words = masks_.subspan(i * w, w), .size = V_};
    }
    /// Processes verified position i (prompt + emitted tokens as its history) and returns
    /// f(p): p is the processing's weighted_set (set_processing: kept in set_) or its sparse
    /// output (dist_).
    template <class F>
    auto with_target(std::span<const float> rows, std::size_t i, F&& f) {
        const position_context c{p_.sequence, n0_ + i, std::span<const token_id>(ctx_),
                                 prompt_length_, mask_at(i)};
        if constexpr (set_processing<Processing>) {
            set_ = processing_->processed(rows.subspan(i * V_, V_), c);
            return f(std::as_const(set_));
        } else {
            (*processing_)(rows.subspan(i * V_, V_), c, dist_);
            return f(dist_.view());
        }
    }
    /// p(t) under the last processed target distribution.
    double target_prob(token_id t) const noexcept {
        if constexpr (set_processing<Processing>)
            return set_.prob(t);
        else
            return detail::prob_of(dist_, t);
    }
    /// Emits one token (not an EOS: that ends the sequence) chosen under the last processed
    /// target distribution; false when the sequence ended.
    template <class OnToken>
    bool emit(token_id t, OnToken& on_token) {
        if (out_.is_eos(t)) {
            out_.finish(stop_reason::eos, on_token);
            return false;
        }
        ctx_.push_back(t);
        ++st_.emitted;
        const double prob = target_prob(t);
        if constexpr (set_processing<Processing>) {
            if constexpr (requires { processing_->commit(t, set_); }) processing_->commit(t, set_);
        } else {
            if constexpr (requires { processing_->commit(t, dist_); })
                processing_->commit(t, dist_);
        }
        const float lp =
            p_.rule == verification::greedy || !(prob > 0) ? 0.f : float(std::log(prob));
        return out_.emit(t, lp, on_token);
    }

    speculative_params p_;
    std::size_t V_, H_ = 0;
    std::size_t prompt_length_;
    Proposer* proposer_;
    Processing* processing_;
    std::span<const std::uint32_t> masks_{};  // set_masks(): this verify round's masks
    verify_workspace ws_;
    std::vector<token_id> ctx_;  // prompt + emitted (+ the round's drafts while verifying)
    draft_buffer drafts_;
    sparse_distribution dist_;  // the target's distribution at the verified position (sparse)
    weighted_set set_;          // ... or as a set (set_processing; views the thread's workspace)
    speculative_stats st_;
    sequence_output out_;
    sequence_request request_;
    stage stage_ = stage::propose;
    std::size_t gamma_ = 0, n0_ = 0, cap_ = 0, base_ = 0;
};

/// Generates up to params.max_new_tokens tokens after `prompt` with speculative decoding:
/// each round the proposer drafts gamma tokens, ONE target call returns the logits of the
/// gamma + 1 positions, and params.rule verifies them (see the file comment). Stop conditions
/// (decoding/contract.hpp): an EOS id (not appended, not streamed; an accepted EOS ends the
/// round, no bonus), a stop sequence or stop string completed by generated tokens (kept), the
/// budget (drafts are truncated to the remaining budget minus one), on_token returning false
/// (token kept), or a target distribution with no token (reason no_valid_token). on_token takes
/// a token_event or a token_id, returning bool (false = stop) or void; token_event::logprob is
/// log p(token) under the processed target distribution (0 with greedy verification). A loop
/// over speculative_stepper; a stepwise proposer's draft calls run on proposer.draft_model().
/// \pre prompt non-empty (raises otherwise); the proposer's vocab_size(), when it has one, equals
/// the target's (raises otherwise, naming both). params, processing and proposer are validated
/// first (each through its validate() when it has one).
template <language_model Target, class Proposer, distribution_processing Processing,
          token_callback OnToken = detail::no_stream>
requires(draft_proposer<Proposer> || stepwise_proposer<Proposer>) speculative_result
    speculative_decode(Target& target, Proposer& proposer, std::span<const token_id> prompt,
                       const speculative_params& params, Processing& processing,
                       OnToken&& on_token = {}) {
    const std::size_t V = std::size_t(target.vocab_size());
    speculative_stepper<Proposer, Processing> st(params, V, prompt, proposer, processing);
    std::vector<float> rows((params.max_draft_length + 1) * V), draft_rows, draft_hidden;
    std::vector<float> hidden((params.max_draft_length + 1) * st.hidden_size());
    while (!st.done()) {
        const model_call c = st.next_call();
        if (c.model == model_role::draft) {
            if constexpr (stepwise_proposer<Proposer>) {
                if (draft_rows.size() < c.logits_rows() * V) draft_rows.resize(c.logits_rows() * V);
                if (c.hidden_rows() > 0) {
                    if constexpr (requires { proposer.hidden_size(); })
                        draft_hidden.resize(c.hidden_rows() * proposer.hidden_size());
                }
                run_model_call(proposer.draft_model(), c, draft_rows, draft_hidden);
                st.advance(draft_rows, draft_hidden, on_token);
            }
        } else {
            run_model_call(target, c, rows, hidden);
            st.advance(rows, hidden, on_token);
        }
    }
    return st.result();
}

DECODEKIT_END_NAMESPACE
