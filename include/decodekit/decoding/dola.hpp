#pragma once
/// \file decoding/dola.hpp
/// DoLa, decoding by contrasting layers (Chuang et al. 2024), over a layer_logits_model.
/// Semantics: ALGORITHMS.md section 7. Per step, one layer_logits call reads the final layer N
/// and the candidate premature layers J at the last position; with q_l = softmax(layer l):
///   M = argmax_{j in J} JSD(q_N || q_j)              (first in J on ties)
///   V_head = {x : q_N(x) >= relative_top * max q_N}   (adaptive plausibility constraint)
///   score(x) = log q_N(x) - log q_M(x) on V_head, -inf elsewhere
/// then the repetition penalty (CTRL, over prompt + generated; 1.2 is the paper's
/// recommendation) and the draw of `sampling` (greedy by default, or any sampler setting).
/// Candidate layers: "low" = range(start, N/2, 2) if N <= 40 else range(start, 20, 2);
/// "high" = range(N/2, N, 2) if N <= 40 else range(N - 20, N, 2); start = 2 when the embeddings
/// are tied and N > 2 (1 when N == 2), else 0 (Hugging Face's rule); or an explicit list of
/// layers in [0, N). Layer 0 is the embedding output.
/// Parity switch: divergence::hf_mixture_kl uses Hugging Face's quantity
/// 0.5 [KL(m || q_N) + KL(m || q_j)] instead of the JSD (it can pick another layer). HF's other
/// quirks are backend matters (its early-layer logits skip the final norm) or change nothing here
/// (filtered premature log-probs set to -1e-3 still give -inf scores).

#include <decodekit/config.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/model.hpp>
#include <decodekit/processors/penalties.hpp>
#include <decodekit/sampling/sampler.hpp>
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

/// Which premature layers DoLa may contrast with.
enum class dola_layer_set : std::uint8_t {
    low,     ///< the lower half (every second layer)
    high,    ///< the upper half (every second layer)
    custom,  ///< dola_params::custom_layers
};

/// The divergence that picks the premature layer.
enum class dola_divergence : std::uint8_t {
    jsd,            ///< Jensen-Shannon divergence (the paper)
    hf_mixture_kl,  ///< Hugging Face: 0.5 [KL(m || q_N) + KL(m || q_j)], m = (q_N + q_j) / 2
};

/// DoLa configuration.
struct dola_params {
    dola_layer_set layers = dola_layer_set::high;
    std::vector<int> custom_layers = {};  ///< layers in [0, N) when layers == custom
    bool tied_embeddings = false;         ///< start the low/high ranges at 2 (N > 2)
    float relative_top = 0.1f;            ///< plausibility alpha, in [0, 1]; 0 keeps every token
    float repetition_penalty = 1.2f;      ///< CTRL theta on the contrast scores, > 0; 1 = off
    dola_divergence divergence = dola_divergence::jsd;
    sampling_params sampling = {.temperature = 0.f};  ///< the final draw (greedy by default)
    std::size_t max_new_tokens = 64;                  ///< >= 1
    std::vector<token_id> eos_ids = {};               ///< stop after emitting one of these
    std::uint64_t sequence = 0;                       ///< RNG key of sampled draws

    /// The first invalid field, named with its allowed range; nullopt when valid.
    std::optional<std::string> check() const {
        if (static_cast<unsigned>(layers) > 2u)
            return detail::range_message("dola_params.layers", "low, high or custom",
                                         double(layers));
        if (layers == dola_layer_set::custom && custom_layers.empty())
            return "dola_params.custom_layers must not be empty when layers == custom";
        for (int l : custom_layers)
            if (l < 0)
                return detail::range_message("dola_params.custom_layers", "entries >= 0",
                                             double(l));
        if (!(relative_top >= 0.f && relative_top <= 1.f))
            return detail::range_message("dola_params.relative_top", "in [0, 1]",
                                         double(relative_top));
        if (!(repetition_penalty > 0.f) || !std::isfinite(repetition_penalty))
            return detail::range_message("dola_params.repetition_penalty", "finite and > 0",
                                         double(repetition_penalty));
        if (static_cast<unsigned>(divergence) > 1u)
            return detail::range_message("dola_params.divergence", "jsd or hf_mixture_kl",
                                         double(divergence));
        if (auto e = sampling.check()) return "dola_params.sampling: " + *e;
        if (max_new_tokens < 1)
            return detail::range_message("dola_params.max_new_tokens", ">= 1",
                                         double(max_new_tokens));
        if (auto e = detail::check_stop_conditions("dola_params", eos_ids)) return e;
        return std::nullopt;
    }
    /// check(), reported through raise().
    void validate() const { raise_if(check()); }
};

/// The candidate premature layers for a model of `num_layers` layers (see the file comment);
/// custom: the given list, each checked to be in [0, num_layers) (raise() otherwise).
inline std::vector<int> dola_candidate_layers(const dola_params& p, std::size_t num_layers) {
    const int N = int(num_layers);
    std::vector<int> out;
    if (p.layers == dola_layer_set::custom) {
        for (int l : p.custom_layers) {
            if (l >= N)
                raise(detail::range_message("dola_params.custom_layers",
                                            "entries in [0, num_layers)", double(l)));
            out.push_back(l);
        }
        return out;
    }
    const int start = !p.tied_embeddings ? 0 : N > 2 ? 2 : N == 2 ? 1 : 0;
    int lo, hi;
    if (p.layers == dola_layer_set::low) {
        lo = start;
        hi = N <= 40 ? N / 2 : 20;
    } else {
        lo = N <= 40 ? N / 2 : N - 20;
        hi = N;
    }
    for (int l = lo; l < hi; l += 2) out.push_back(l);
    if (out.empty())
        raise("dola: no candidate premature layer for num_layers = " + std::to_string(N) +
              " (use dola_params.layers = custom)");
    return out;
}

/// Workspace and scorer of one DoLa step for a vocabulary of V entries and J candidate layers.
class dola_scorer {
public:
    dola_scorer(std::size_t vocab_size, std::size_t num_candidates)
        : V_(vocab_size), logq_((num_candidates + 1) * vocab_size) {}

    /// Writes the contrast scores into `scores` from `rows` = J premature rows then the final
    /// row (V floats each); returns the index in [0, J) of the chosen premature layer (npos when
    /// the final row has no valid entry: then every score is -inf).
    /// \pre rows.size() == (J + 1) * V, scores.size() == V
    std::size_t score(std::span<const float> rows, std::span<float> scores, float relative_top,
                      dola_divergence div) noexcept {
        const std::size_t J = rows.size() / V_ - 1;
        for (std::size_t j = 0; j <= J; ++j)
            kernels::log_softmax(rows.subspan(j * V_, V_),
                                 std::span<float>(logq_).subspan(j * V_, V_));
        const std::span<const float> lN = std::span<const float>(logq_).subspan(J * V_, V_);
        const float mx = kernels::max(lN);
        if (!(mx > -std::numeric_limits<float>::infinity())) {
            std::fill(scores.begin(), scores.end(), -std::numeric_limits<float>::infinity());
            return npos;
        }
        std::size_t best = 0;
        double best_d = -std::numeric_limits<double>::infinity();
        for (std::size_t j = 0; j < J; ++j) {
            const double d = divergence(lN, std::span<const float>(logq_).subspan(j * V_, V_), div);
            if (d > best_d) {
                best_d = d;
                best = j;
            }
        }
        const std::span<const float> lM = std::span<const float>(logq_).subspan(best * V_, V_);
        const float thr = relative_top > 0.f ? mx + std::log(relative_top)
                                             : -std::numeric_limits<float>::infinity();
        for (std::size_t x = 0; x < V_; ++x)
            scores[x] = (lN[x] >= thr && lN[x] > -std::numeric_limits<float>::infinity())
                            ? lN[x] - lM[x]
                            : -std::numeric_limits<float>::infinity();
        return best;
    }

    /// JSD(p || q) (or HF's mixture KL) from log-probabilities, in nats, in double.
    static double divergence(std::span<const float> lp, std::span<const float> lq,
                             dola_divergence div) noexcept {
        double a = 0, b = 0;
        for (std::size_t i = 0; i < lp.size(); ++i) {
            const double p = std::exp(double(lp[i])), q = std::exp(double(lq[i]));
            const double m = 0.5 * (p + q);
            if (m <= 0) continue;
            const double lm = std::log(m);
            if (div == dola_divergence::jsd) {
                if (p > 0) a += p * (double(lp[i]) - lm);
                if (q > 0) b += q * (double(lq[i]) - lm);
            } else {  // KL(m || p) + KL(m || q): +inf when p or q is 0 where m > 0
                a += m * (lm - double(lp[i]));
                b += m * (lm - double(lq[i]));
            }
        }
        return 0.5 * (a + b);
    }

private:
    std::size_t V_;
    std::vector<float> logq_;
};

/// What DoLa returns.
struct dola_result {
    std::vector<token_id> tokens;       ///< generated tokens, EOS included if any
    std::vector<int> premature_layers;  ///< the premature layer chosen at each step
    bool eos = false;
    bool no_valid_token = false;  ///< stopped: no token had a finite score
    std::size_t model_calls = 0;
};

/// Runs DoLa on `model` from `prompt` (needs the layer_logits_model capability).
/// \pre !prompt.empty() (rejected with a message otherwise)
template <class M>
requires layer_logits_model<M> dola_result dola_decode(M& model, std::span<const token_id> prompt,
                                                       const dola_params& params) {
    params.validate();
    if (prompt.empty()) raise("dola: prompt must not be empty (add a BOS token)");
    const stop_checker stop(params.eos_ids);
    const std::size_t V = model.vocab_size(), N = model.num_layers();
    std::vector<int> layers = dola_candidate_layers(params, N);
    const std::size_t J = layers.size();
    layers.push_back(int(N));
    dola_scorer scorer(V, J);
    sampler draw(params.sampling, V);
    const penalty_params pen{.repetition = params.repetition_penalty};
    penalty_workspace pws(params.repetition_penalty != 1.f ? V : 0);
    std::vector<float> rows((J + 1) * V), scores(V);
    std::vector<token_id> seq(prompt.begin(), prompt.end());
    seq.reserve(prompt.size() + std::min<std::size_t>(params.max_new_tokens, 16384));
    dola_result res;
    for (std::size_t step = 0; step < params.max_new_tokens; ++step) {
        const sequence_request r{seq, 1, 0};
        model.layer_logits(std::span<const sequence_request>(&r, 1), layers, rows);
        ++res.model_calls;
        const std::size_t m = scorer.score(rows, scores, params.relative_top, params.divergence);
        if (m == npos) {
            res.no_valid_token = true;
            break;
        }
        if (params.repetition_penalty != 1.f) apply_penalties(scores, seq, prompt.size(), pen, pws);
        const sample_result s = draw.sample(scores, sample_context{.sequence = params.sequence,
                                                                   .step = step,
                                                                   .history = seq,
                                                                   .prompt_length = prompt.size()});
        if (!s.ok()) {
            res.no_valid_token = true;
            break;
        }
        seq.push_back(s.token);
        res.tokens.push_back(s.token);
        res.premature_layers.push_back(layers[m]);
        if (stop.is_eos(s.token)) {
            res.eos = true;
            break;
        }
    }
    return res;
}

DECODEKIT_END_NAMESPACE
