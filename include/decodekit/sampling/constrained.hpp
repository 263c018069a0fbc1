#pragma once
/// \file sampling/constrained.hpp
/// How a sampler applies a callback constraint (sampling/constraint.hpp) exactly, querying it
/// only where the law of the pipeline on the masked row depends on it. Proof sketches, with
/// M(x) the row with every disallowed entry at -inf:
///   - greedy: argmax M(x) is the first allowed entry of x in descending order (ties by id), so
///     the walk down x's order stops at the first allowed entry it meets.
///   - top-k first: the k largest of M(x) are the first k allowed entries of x's order (with
///     keep_ties, also the allowed entries tied with the k-th); the later steps then see exactly
///     top_k(M(x)).
///   - min-p first: max M(x) is the first allowed entry m of x's order (the walk); min-p keeps
///     {i : M(x)_i >= thr(m)} = A n K with K = {i : x_i >= thr(m)}, A the allowed tokens. The
///     entries the walk passed before m are known refused and m known allowed: none is queried
///     again. Then:
///       * min-p then temperature steps only, min_keep 1, no logprob asked (logprobs.chosen
///         off, no extras): draw-then-check. A proposal t is drawn from softmax(x_K / T) (T the
///         final temperature; kernels::draw_temperature with the absolute floor thr(m), one read
///         pass) and accepted when allowed; at most max_constraint_proposals proposals (one
///         rng_purpose::sample stream, continued; a refused token drawn again stops them), then
///         the full verdicts below (rng_purpose::constraint). With q the law on K, Q = q(A) > 0
///         (m is in A n K) and R the number of proposals made (its stopping rule depends on the
///         refused proposals only, each proposal allowed with probability Q whatever came
///         before), an allowed t is returned with probability q(t) E[R] + (1 - Q E[R]) q(t)/Q
///         = q(t)/Q: the law of the pipeline on M(x) (softmax of A n K at T). A token refused once
///         is not queried again (kept in the call's refused_tokens).
///       * otherwise (other steps after min-p, min_keep > 1, or a logprob asked: the chosen
///         logprob needs the masked normaliser, the mass of A n K, hence every verdict in K):
///         every entry of K is queried (except those known from the walk), then the pipeline
///         on the allowed ones (the min_keep fallback walks on, as top-k).
///   - temperature only, no logprob asked: the same draw-then-check over the whole row
///     (K = every valid entry), then the full mask with its own stream; with the chosen logprob
///     on, the full mask at once.
///   - any other pipeline: the full mask (every valid entry queried once), then the pipeline on
///     M(x).
/// Walks read x's order in growing prefixes from kernels::top_k (8, 64, 512, ... entries), so a
/// walk costs a few read passes plus O(entries walked). A draw-then-check proposal costs one read
/// pass (draw_temperature): on a row whose top mostly satisfies the constraint, min-p sampling
/// queries about 2 tokens per call instead of |K|.

#include <decodekit/config.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/constraint.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/processing.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/token_mask.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <algorithm>
#include <array>
#include <cstddef>
#include <limits>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace detail {

/// One call's queries of a constraint (counted).
struct constraint_queries {
    const any_constraint& constraint;
    const processor_context& context;
    std::size_t count = 0;

    bool operator()(token_id t) {
        ++count;
        return constraint.allowed(t, context);
    }
};

/// Proposals of a draw-then-check path before it falls back to the full verdicts.
inline constexpr std::size_t max_constraint_proposals = 8;

/// The tokens one call's draw-then-check refused (never queried again in that call).
struct refused_tokens {
    std::array<token_id, max_constraint_proposals> ids{};
    std::size_t size = 0;
    bool contains(token_id t) const noexcept {
        return std::find(ids.begin(), ids.begin() + std::ptrdiff_t(size), t) !=
               ids.begin() + std::ptrdiff_t(size);
    }
    void add(token_id t) noexcept {
        if (size < ids.size() && !contains(t)) ids[size++] = t;
    }
};

/// Whether a constraint's min-p-first path may draw, then check (see the file comment): min-p
/// first, then built-in temperature steps only, min_keep 1, no logprob asked; the temperature
/// of that draw (the last temperature step's, else 1).
struct min_p_proposals {
    bool on = false;
    float temperature = 1.f;
};

inline min_p_proposals plan_min_p_proposals(std::span<const sampling_step> steps,
                                            const sampling_params& p, bool user_steps) noexcept {
    min_p_proposals r;
    const logprobs_request& lr = p.logprobs;
    if (user_steps || p.greedy() || p.min_keep > 1 || lr.chosen || lr.any() || steps.empty() ||
        steps[0] != sampling_step::min_p)
        return r;
    for (const sampling_step s : steps.subspan(1)) {
        if (s != sampling_step::temperature) return r;
        r.temperature = p.temperature;
    }
    r.on = true;
    return r;
}

/// The result of a token drawn without a logprob (draw-then-check paths: logprobs are off).
inline sample_result drawn_result(std::size_t token) noexcept {
    sample_result r;
    r.token = token_id(token);
    r.status = sample_status::ok;
    r.logprob = std::numeric_limits<float>::quiet_NaN();
    return r;
}

/// Draw-then-check (see the file comment): up to max_constraint_proposals proposals from
/// `draw()` (an index, or npos when nothing can be drawn), the first with `allowed(t)` returned;
/// a refused token is remembered in `refused` and never passed to `allowed` again, and drawing a
/// refused token again stops the proposals (most of the mass is refused: the full verdicts are
/// cheaper than more passes). npos when the proposals stopped without an allowed token or the
/// first could not be drawn (`drawn` false then). Exact under any stopping rule that depends on
/// the refused proposals only: an allowed t comes out with probability
/// q(t) E[proposals made] + P(stop) q(t) / Q, and P(stop) = 1 - Q E[proposals made].
template <class Draw, class Allowed>
std::size_t draw_then_check(Draw&& draw, Allowed&& allowed, refused_tokens& refused,
                            bool& drawn) noexcept {
    drawn = false;
    for (std::size_t j = 0; j < max_constraint_proposals; ++j) {
        const std::size_t i = draw();
        if (i == npos) return npos;
        drawn = true;
        const token_id t = token_id(i);
        if (refused.contains(t)) return npos;  // a refused token again: stop (see above)
        if (allowed(t)) return i;
        refused.add(t);
    }
    return npos;
}

/// The `need` first allowed entries of the row's descending order (logit descending, ties by
/// id), plus with keep_ties the allowed entries tied with the need-th, written to w.kept()
/// (ordered). Returns how many (fewer when the row has fewer allowed entries). \pre w.full(),
/// not overlaid
inline std::size_t walk_allowed(working_set& w, std::size_t need, tie_policy ties,
                                constraint_queries& q) noexcept {
    const std::span<const float> x = w.row();
    sampling_workspace& ws = w.workspace();
    candidates& list = ws.raw_top();
    std::size_t found = 0, walked = 0;
    float last = 0.f;
    bool done = need == 0;
    for (std::size_t k = std::min<std::size_t>(x.size(), std::max<std::size_t>(8, 2 * need)); !done;
         k = std::min(x.size(), k * 8)) {
        kernels::top_k(x, k, tie_policy::exactly_k, list);  // prefix-stable as k grows
        for (; walked < list.size(); ++walked) {
            const token_id t = list.ids()[walked];
            const float v = list.logits()[walked];
            if (found >= need && !(ties == tie_policy::keep_ties && v == last)) {
                done = true;
                break;
            }
            if (!q(t)) continue;
            ws.sorted[found++] = {v, t};
            last = v;
        }
        if (list.size() < k || k == x.size()) break;  // every valid entry walked
    }
    w.write_back(found, true);
    w.set_narrowed();
    return found;
}

/// Writes the full mask into `row` (a writable copy of the set's row): every valid entry the
/// constraint does not allow becomes -inf (`refused` ones without a query). Returns the number
/// of allowed valid entries; `valid` receives the number of valid entries.
inline std::size_t mask_row(std::span<float> row, constraint_queries& q, std::size_t& valid,
                            const refused_tokens& refused = {}) noexcept {
    std::size_t allowed = 0;
    valid = 0;
    for (std::size_t i = 0; i < row.size(); ++i) {
        if (!(row[i] > -std::numeric_limits<float>::infinity())) continue;  // NaN, -inf
        ++valid;
        if (!refused.contains(token_id(i)) && q(token_id(i)))
            ++allowed;
        else
            row[i] = -std::numeric_limits<float>::infinity();
    }
    return allowed;
}

/// A writable copy of the processed row `row` in the workspace for the full mask (the
/// processors' copy itself when they made one; when a step may have written into it (`rerun`:
/// XTC), the processors run again on the caller's `logits`, and the call's token mask again).
inline std::span<float> writable_copy(std::span<const float> logits, std::span<const float> row,
                                      const sample_context& ctx, sampling_workspace& ws,
                                      processor_pipeline& procs, bool rerun) noexcept {
    const std::span<float> copy = ws.row_copy().first(logits.size());
    if (row.data() != copy.data()) {
        std::copy(row.begin(), row.end(), copy.begin());
    } else if (rerun) {
        std::copy(logits.begin(), logits.end(), copy.begin());
        procs.reapply(copy, ctx);
        if (has_mask(ctx.mask)) kernels::apply_token_bitmask_inplace(copy, ctx.mask);
    }
    return copy;
}

/// What constrained_min_p leaves: a token drawn and allowed (draw-then-check), or npos with
/// the allowed kept set in w.kept() (`proposed`: proposals were drawn, so the draw that follows
/// takes rng_purpose::constraint's stream).
struct min_p_first {
    std::size_t token = npos;
    bool proposed = false;
};

/// Min-p first under a constraint (see the file comment): w.kept()[0] is the top allowed entry
/// m (walk_allowed); `t` the set's temperature. Draws then checks when `plan.on`; otherwise, or
/// after max_constraint_proposals refusals, min-p's set {x >= thr(m)} restricted to the allowed
/// entries (the walk's verdicts and refused proposals are not queried again), at least
/// p.min_keep (the walk goes on). \pre !w.kept().empty(), w full before the walk
inline min_p_first constrained_min_p(working_set& w, std::span<const float> row,
                                     const sampling_params& p, const min_p_proposals& plan, float t,
                                     const sample_context& ctx, constraint_queries& q) noexcept {
    const float top = w.kept().logits()[0];
    const token_id top_id = w.kept().ids()[0];
    const float t_eff = p.min_p_mode == min_p_space::logits ? 1.f : t;
    const float thr = kernels::min_p_threshold(top, p.min_p, t_eff);
    // the walk's verdicts: the entries before the top allowed one in x's order were refused,
    // the top allowed one allowed; the others are queried once
    refused_tokens refused;
    auto allowed = [&](token_id c) {
        if (c == top_id) return true;
        const float v = row[std::size_t(c)];
        if (v > top || (v == top && c < top_id)) return false;
        return !refused.contains(c) && q(c);
    };
    min_p_first r;
    if (plan.on) {
        rng_stream rng = make_stream({p.seed, ctx.sequence, ctx.step}, rng_purpose::sample);
        const kernels::logit_threshold floor{.at_least = thr};
        r.token = draw_then_check(
            [&] { return kernels::draw_temperature(row, plan.temperature, rng, floor); }, allowed,
            refused, r.proposed);
        if (r.token != npos) return r;
    }
    candidates& kept = w.kept();
    kernels::filter_at_least(row, thr, kept);
    w.set_kept(false);
    const token_id* ids = kept.id_storage();
    w.keep_if([&](std::size_t i) { return allowed(ids[i]); });
    if (kept.size() < p.min_keep) walk_allowed(w, p.min_keep, tie_policy::exactly_k, q);
    return r;
}

}  // namespace detail
DECODEKIT_END_NAMESPACE
