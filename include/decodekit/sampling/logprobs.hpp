#pragma once
/// \file sampling/logprobs.hpp
/// The logprob extras of a sample() call (logprobs_request): the raw logprob of the drawn token,
/// its rank, the top-n alternatives and the logprobs of requested ids, raw (log-softmax of the
/// caller's logits; one max+exp pass for the normaliser unless the draw had it) or processed
/// (the final distribution the token was drawn from; -inf outside it). Under a token mask
/// (sample_context::mask) the processed logprobs are those of the masked distribution (-inf for
/// a disallowed token) and the raw ones stay raw (the caller's logits, mask ignored).

#include <decodekit/config.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/working_set.hpp>

#include <cmath>
#include <cstddef>
#include <span>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// A sampler's storage for the extras it returns (its own: sized by its params, O(top_n + ids)).
struct logprob_storage {
    std::vector<token_logprob> top, requested;

    explicit logprob_storage(const logprobs_request& lr = {}, std::size_t vocab_size = 0)
        : top(std::min(lr.top_n, vocab_size)), requested(lr.ids.size()) {}
};

/// Fills the extras of `r` (token drawn) from the raw row `raw`, the working set `w` the token
/// was drawn from (greedy: `greedy`), and the raw normaliser when the draw knew it.
inline void fill_logprob_extras(sample_result& r, const logprobs_request& lr,
                                std::span<const float> raw, working_set& w, bool greedy,
                                double raw_lse, bool raw_lse_known, logprob_storage& out) noexcept {
    const bool need_raw = lr.raw || (!lr.processed && (lr.rank || lr.top_n > 0 || !lr.ids.empty()));
    if (need_raw && !raw_lse_known) {
        raw_lse = kernels::logsumexp(raw);
        raw_lse_known = true;
    }
    auto raw_lp = [&](std::size_t t) -> float {
        const float v = raw[t];
        if (!(v > -detail::f_inf)) return -detail::f_inf;
        if (std::isinf(raw_lse)) return v == detail::f_inf ? 0.f : -detail::f_inf;  // +inf row
        return float(double(v) - raw_lse);
    };
    if (lr.raw) r.raw_logprob = raw_lp(std::size_t(r.token));
    const std::span<const float> x = w.row();
    const float t_cur = w.temperature();
    // processed: the final set is kept() (id order, weights as the draw left them) unless
    // greedy / full row
    const bool full = w.full();
    const bool processed_set = !greedy && !full;
    const double kept_sum = processed_set ? w.ensure_weights() : 0.0;
    auto proc_lp = [&](token_id t) -> float {
        if (greedy) return t == r.token ? 0.f : -detail::f_inf;
        if (full) {  // whole row at the temperature
            const float v = x[std::size_t(t)];
            const float vt = x[std::size_t(r.token)];
            if (!(v > -detail::f_inf) || !w.allowed(std::size_t(t))) return -detail::f_inf;
            return float(double(r.logprob) + (double(v) - double(vt)) / double(t_cur));
        }
        const std::span<const float> wt = w.weights();
        const std::span<const token_id> ids = w.kept().ids();
        for (std::size_t i = 0; i < ids.size(); ++i)
            if (ids[i] == t) return float(std::log(double(wt[i]) / kept_sum));
        return -detail::f_inf;
    };
    if (lr.rank) {
        std::size_t above = 0;
        if (!lr.processed) {
            const float v = raw[std::size_t(r.token)];
            for (float y : raw) above += y > v;
        } else if (processed_set) {
            const std::span<const token_id> ids = w.kept().ids();
            const std::span<const float> lg = w.kept().logits();
            float v = -detail::f_inf;
            for (std::size_t i = 0; i < ids.size(); ++i)
                if (ids[i] == r.token) v = lg[i];
            for (float y : lg) above += y > v;
        } else if (!greedy) {
            const float v = x[std::size_t(r.token)];
            for (std::size_t i = 0; i < x.size(); ++i) above += x[i] > v && w.allowed(i);
        }
        r.rank = above + 1;
    }
    if (lr.top_n > 0) {
        std::size_t n = 0;
        std::vector<token_logprob>& top = out.top;
        if (!lr.processed) {
            candidates& alt = w.workspace().raw_top();
            kernels::top_k(raw, top.size(), tie_policy::exactly_k, alt);
            for (std::size_t i = 0; i < alt.size(); ++i)
                top[n++] = {alt.ids()[i], raw_lp(std::size_t(alt.ids()[i]))};
        } else if (greedy) {
            top[n++] = {r.token, 0.f};
        } else if (processed_set) {
            // the best of the kept set: a selection over its logits (positions map to ids)
            candidates& best = w.workspace().raw_top();
            kernels::top_k(w.kept().logits(), top.size(), tie_policy::exactly_k, best);
            const std::span<const token_id> ids = w.kept().ids();
            for (std::size_t i = 0; i < best.size(); ++i) {
                const token_id id = ids[std::size_t(best.ids()[i])];
                top[n++] = {id, proc_lp(id)};
            }
        } else {
            candidates& kept = w.kept();
            w.row_top_k(top.size(), tie_policy::exactly_k, kept);
            for (std::size_t i = 0; i < kept.size(); ++i)
                top[n++] = {kept.ids()[i], proc_lp(kept.ids()[i])};
        }
        r.top = {top.data(), n};
    }
    if (!lr.ids.empty()) {
        const std::size_t vocab = raw.size();
        for (std::size_t j = 0; j < lr.ids.size(); ++j) {
            const token_id t = lr.ids[j];
            float lp = -detail::f_inf;
            if (t >= 0 && std::size_t(t) < vocab)
                lp = lr.processed ? proc_lp(t) : raw_lp(std::size_t(t));
            out.requested[j] = {t, lp};
        }
        r.requested = {out.requested.data(), out.requested.size()};
    }
}

DECODEKIT_END_NAMESPACE
