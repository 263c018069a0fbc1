#pragma once
/// \file decoding/contrastive.hpp
/// Contrastive search (Su et al. 2022) over a hidden_state_model. Semantics: ALGORITHMS.md
/// section 7. Per step: candidates = top-k of p = softmax(logits) (kernels::top_k, ties by lower
/// id); one batched look-ahead call (candidate i appended to the context, slot = i) returns each
/// candidate's last-layer hidden state h_i and its next logits; degeneration penalty
/// d_i = max_j cos(h_i, h_j) over every earlier position j, prompt included
/// (kernels::cosine_similarity); the chosen candidate maximises (1 - alpha) p_i - alpha d_i, ties
/// to the higher-ranked candidate. Its look-ahead logits and hidden state are kept, so each step
/// costs exactly one model call after the prompt's. alpha = 0 or k = 1 is greedy (then the
/// look-ahead has one candidate).

#include <decodekit/config.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/similarity.hpp>
#include <decodekit/model.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Contrastive search configuration.
struct contrastive_params {
    std::size_t top_k = 4;               ///< candidates per step, in [1, 1024]
    float alpha = 0.6f;                  ///< degeneration penalty weight, in [0, 1]
    std::size_t max_new_tokens = 64;     ///< >= 1
    std::vector<token_id> eos_ids = {};  ///< generation stops after emitting one of these

    /// The first invalid field, named with its allowed range; nullopt when valid.
    std::optional<std::string> check() const {
        if (top_k < 1 || top_k > 1024)
            return detail::range_message("contrastive_params.top_k", "in [1, 1024]", double(top_k));
        if (!(alpha >= 0.f && alpha <= 1.f))
            return detail::range_message("contrastive_params.alpha", "in [0, 1]", double(alpha));
        if (max_new_tokens < 1)
            return detail::range_message("contrastive_params.max_new_tokens", ">= 1",
                                         double(max_new_tokens));
        if (auto e = detail::check_stop_conditions("contrastive_params", eos_ids)) return e;
        return std::nullopt;
    }
    /// check(), reported through raise().
    void validate() const { raise_if(check()); }
};

/// What contrastive search returns.
struct contrastive_result {
    std::vector<token_id> tokens;  ///< generated tokens (prompt excluded), EOS included if any
    bool eos = false;              ///< stopped on an EOS token
    bool no_valid_token = false;   ///< stopped because a logits row had no valid entry
    std::size_t model_calls = 0;
    std::size_t model_rows = 0;  ///< logits rows computed (prompt rows + k per step)
};

/// Workspace and scorer of one contrastive step, sized once for (vocab, hidden, k).
class contrastive_scorer {
public:
    contrastive_scorer(std::size_t vocab_size, std::size_t hidden_size, std::size_t k)
        : cand_(vocab_size), hidden_(hidden_size), k_(k), probs_(k), sims_() {}

    /// The top-k candidates of `logits` (ids() ranked, ties by lower id) and their probabilities;
    /// returns how many (0 when no entry is valid).
    std::size_t candidates_of(std::span<const float> logits) noexcept {
        const double lse = kernels::logsumexp(logits);
        if (!(lse > -std::numeric_limits<double>::infinity())) {
            cand_.clear();
            return 0;
        }
        const std::size_t n = kernels::top_k(logits, k_, tie_policy::exactly_k, cand_);
        std::size_t n_inf = 0;
        if (std::isinf(lse))
            for (float v : logits) n_inf += (v == std::numeric_limits<float>::infinity());
        for (std::size_t i = 0; i < n; ++i) {
            const float x = cand_.logits()[i];
            probs_[i] = std::isinf(lse) ? (std::isinf(x) ? 1.0 / double(n_inf) : 0.0)
                                        : std::exp(double(x) - lse);
        }
        return n;
    }
    /// Candidate ids of the last candidates_of() call, ranked.
    std::span<const token_id> ids() const noexcept { return cand_.ids(); }
    /// Their probabilities under softmax(logits).
    std::span<const double> probs() const noexcept { return {probs_.data(), cand_.size()}; }

    /// Index (rank) of the candidate maximising (1 - alpha) p_i - alpha max_j cos(h_i, ctx_j);
    /// `cand_hidden`: one row of hidden_size per candidate; `context_hidden`: n_ctx rows.
    /// Ties go to the higher-ranked candidate. With n_ctx == 0 the penalty is 0.
    std::size_t select(std::span<const float> cand_hidden, std::span<const float> context_hidden,
                       float alpha) {
        const std::size_t H = hidden_, n = cand_.size(), n_ctx = H ? context_hidden.size() / H : 0;
        if (sims_.size() < n_ctx) sims_.resize(std::max(n_ctx, 2 * sims_.size()));
        std::size_t best = 0;
        double best_score = -std::numeric_limits<double>::infinity();
        for (std::size_t i = 0; i < n; ++i) {
            double pen = 0;
            if (n_ctx > 0 && alpha > 0) {
                std::span<float> s(sims_.data(), n_ctx);
                kernels::cosine_similarity(cand_hidden.subspan(i * H, H), context_hidden.data(), H,
                                           s);
                pen = *std::max_element(s.begin(), s.end());
            }
            const double score = (1.0 - double(alpha)) * probs_[i] - double(alpha) * pen;
            if (score > best_score) {
                best_score = score;
                best = i;
            }
        }
        return best;
    }

private:
    candidates cand_;
    std::size_t hidden_, k_;
    std::vector<double> probs_;
    std::vector<float> sims_;
};

/// Runs contrastive search on `model` from `prompt` (needs the hidden_state_model capability).
/// \pre !prompt.empty() (rejected with a message otherwise)
template <class M>
requires hidden_state_model<M> contrastive_result
contrastive_search(M& model, std::span<const token_id> prompt, const contrastive_params& params) {
    params.validate();
    if (prompt.empty()) raise("contrastive_search: prompt must not be empty (add a BOS token)");
    const std::size_t V = model.vocab_size(), H = model.hidden_size();
    const std::size_t k = params.alpha == 0.f ? 1 : std::min(params.top_k, V);
    contrastive_result res;
    res.tokens.reserve(std::min<std::size_t>(params.max_new_tokens, 16384));

    std::vector<token_id> seq(prompt.begin(), prompt.end());
    seq.reserve(prompt.size() + std::min<std::size_t>(params.max_new_tokens, 16384));
    std::vector<float> ctx_hidden(prompt.size() * H);
    ctx_hidden.reserve((prompt.size() + std::min<std::size_t>(params.max_new_tokens, 16384)) * H);
    std::vector<float> prompt_logits(prompt.size() * V);
    {
        const sequence_request r{seq, seq.size(), 0};
        model.logits_and_hidden(std::span<const sequence_request>(&r, 1), prompt_logits,
                                ctx_hidden);
        ++res.model_calls;
        res.model_rows += seq.size();
    }
    std::vector<float> logits(prompt_logits.end() - std::ptrdiff_t(V), prompt_logits.end());
    prompt_logits = {};

    contrastive_scorer scorer(V, H, k);
    std::vector<std::vector<token_id>> cand_seq(k);
    for (auto& s : cand_seq)
        s.reserve(prompt.size() + std::min<std::size_t>(params.max_new_tokens, 16384));
    std::vector<sequence_request> req(k);
    std::vector<float> la_logits(k * V), la_hidden(k * H);
    const stop_checker stop(params.eos_ids);

    while (res.tokens.size() < params.max_new_tokens) {
        const std::size_t n = scorer.candidates_of(logits);
        if (n == 0) {
            res.no_valid_token = true;
            break;
        }
        for (std::size_t i = 0; i < n; ++i) {
            cand_seq[i].assign(seq.begin(), seq.end());
            cand_seq[i].push_back(scorer.ids()[i]);
            req[i] = {cand_seq[i], 1, std::uint32_t(i)};
        }
        model.logits_and_hidden(std::span<const sequence_request>(req.data(), n),
                                std::span<float>(la_logits).first(n * V),
                                std::span<float>(la_hidden).first(n * H));
        ++res.model_calls;
        res.model_rows += n;
        const std::size_t best =
            scorer.select(std::span<const float>(la_hidden).first(n * H), ctx_hidden, params.alpha);
        const token_id t = scorer.ids()[best];
        seq.push_back(t);
        res.tokens.push_back(t);
        ctx_hidden.insert(ctx_hidden.end(), la_hidden.begin() + std::ptrdiff_t(best * H),
                          la_hidden.begin() + std::ptrdiff_t((best + 1) * H));
        std::copy_n(la_logits.begin() + std::ptrdiff_t(best * V), V, logits.begin());
        if (stop.is_eos(t)) {
            res.eos = true;
            break;
        }
    }
    return res;
}

DECODEKIT_END_NAMESPACE
