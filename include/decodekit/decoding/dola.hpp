#pragma once
/// \file decoding/dola.hpp
/// DoLa, decoding by contrasting layers (Chuang et al. 2024), over a layer_logits_model:
/// dola_stepper, which an engine drives, and dola_decode(), which drives it on one model.
/// Per step, one layer_logits call (slot 0) reads the final layer N
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
/// Stop rule, streaming and results: decoding/contract.hpp (an EOS is not appended; the
/// sampler's min_new_tokens suppresses the EOS ids, which default to dola_params::eos_ids, and
/// holds stop sequences and stop strings). Randomness: the draw of step i uses
/// rng_key{sampling.seed, dola_params::sequence, i}.

#include <decodekit/config.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/sequence_output.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
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
    sampling_params sampling = {.temperature = 0.f};         ///< the final draw (greedy by default)
    std::size_t max_new_tokens = 64;                         ///< >= 1
    std::vector<token_id> eos_ids = {};                      ///< stop at one of these (not emitted)
    std::uint64_t sequence = 0;                              ///< RNG key of sampled draws
    std::vector<std::vector<token_id>> stop_sequences = {};  ///< each non-empty
    std::vector<std::string> stop_strings = {};  ///< text stops (decoding/stop_strings.hpp)
    detokenize_fn detokenize = {};  ///< token -> bytes: streams text, needed by stop_strings

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
        if (auto e = detail::check_stop_conditions("dola_params", eos_ids, stop_sequences))
            return e;
        return detail::check_stop_strings("dola_params", stop_strings, bool(detokenize));
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

/// What DoLa returns (tokens exclude the EOS).
struct dola_result : decoding_result {
    std::vector<int> premature_layers;  ///< the premature layer chosen for each output token
    bool eos = false;                   ///< reason == stop_reason::eos
    bool no_valid_token = false;        ///< reason == stop_reason::no_valid_token
    std::size_t model_calls = 0;
};

/// DoLa of one sequence, driven step by step: next_call() is a layer_logits call of the last
/// position (layers: the candidate premature layers, then N); advance() consumes its rows.
class dola_stepper {
public:
    /// \pre params valid, !prompt.empty(), vocab_size >= 1, the layers exist for num_layers
    /// (each rejected with a message otherwise)
    dola_stepper(const dola_params& params, std::size_t vocab_size, std::size_t num_layers,
                 std::span<const token_id> prompt)
        : p_(checked(params, vocab_size, prompt)),
          V_(vocab_size),
          layers_(dola_candidate_layers(p_, num_layers)),
          J_(layers_.size()),
          scorer_(V_, J_),
          draw_(with_eos(p_), V_),
          pws_(p_.repetition_penalty != 1.f ? V_ : 0) {
        layers_.push_back(int(num_layers));
        const std::size_t reserve = std::min<std::size_t>(p_.max_new_tokens, 16384);
        seq_.assign(prompt.begin(), prompt.end());
        seq_.reserve(prompt.size() + reserve);
        prompt_length_ = prompt.size();
        scores_.resize(V_);
        premature_.reserve(reserve);
        out_ = sequence_output(stop_conditions{.eos_ids = p_.eos_ids,
                                               .stop_sequences = p_.stop_sequences,
                                               .stop_strings = p_.stop_strings,
                                               .detokenize = p_.detokenize,
                                               .min_new_tokens = p_.sampling.min_new_tokens,
                                               .max_new_tokens = p_.max_new_tokens},
                               prompt.size(), reserve);
        request_ = {seq_, 1, 0};
    }
    dola_stepper(const dola_stepper&) = delete;
    dola_stepper& operator=(const dola_stepper&) = delete;
    dola_stepper(dola_stepper&&) = default;
    dola_stepper& operator=(dola_stepper&&) = default;

    /// layer_logits of the last position at layers(); empty when done().
    model_call next_call() const noexcept {
        if (done()) return {};
        return {.kind = call_kind::layer_logits,
                .requests = std::span<const sequence_request>(&request_, 1),
                .layers = layers_};
    }
    std::span<const sequence_request> requests() const noexcept { return next_call().requests; }
    /// The layers read out per position: the candidate premature layers, then num_layers.
    std::span<const int> layers() const noexcept { return layers_; }
    bool done() const noexcept { return out_.done(); }
    std::size_t vocab_size() const noexcept { return V_; }

    /// Consumes next_call()'s rows (layers().size() rows of vocab_size, in layers() order).
    /// \return status bad_input (nothing consumed) when rows is short
    template <class OnToken = detail::no_stream>
    requires token_callback<OnToken> step_events advance(std::span<const float> rows,
                                                         OnToken&& on_token = {}) {
        if (done()) return {.status = step_status::finished};
        if (rows.size() / V_ < J_ + 1) return {.status = step_status::bad_input};
        out_.begin_step();
        ++calls_;
        const std::size_t m =
            scorer_.score(rows.first((J_ + 1) * V_), scores_, p_.relative_top, p_.divergence);
        if (m == npos) {
            out_.finish(stop_reason::no_valid_token, on_token);
            return out_.events();
        }
        if (p_.repetition_penalty != 1.f)
            apply_penalties(scores_, seq_, prompt_length_,
                            penalty_params{.repetition = p_.repetition_penalty}, pws_);
        const sample_result s =
            draw_.sample(scores_, sample_context{.sequence = p_.sequence,
                                                 .step = out_.size(),
                                                 .history = seq_,
                                                 .prompt_length = prompt_length_});
        queries_ += s.constraint_queries;
        if (!s.ok()) {  // (the stepper's own sampler is never in concurrent use)
            out_.finish(stop_reason_of_no_token(s.status == sample_status::no_allowed_token),
                        on_token);
        } else if (out_.is_eos(s.token)) {
            out_.finish(stop_reason::eos, on_token);
        } else {
            seq_.push_back(s.token);
            premature_.push_back(layers_[m]);
            out_.emit(s.token, p_.sampling.greedy() ? 0.f : s.logprob, on_token);
            request_ = {seq_, 1, 0};
        }
        return out_.events();
    }
    /// advance() for engines that pass hidden rows to every stepper (ignored here).
    template <class OnToken = detail::no_stream>
    requires token_callback<OnToken> step_events advance(std::span<const float> rows,
                                                         std::span<const float> /*hidden*/,
                                                         OnToken&& on_token = {}) {
        return advance(rows, on_token);
    }

    /// Ends the sequence now with stop_reason::cancelled (the held-back text is in the events).
    step_events cancel() {
        if (done()) return {.status = step_status::finished};
        out_.begin_step();
        out_.finish(stop_reason::cancelled);
        return out_.events();
    }

    /// The output so far (everything once done()).
    dola_result result() const {
        dola_result r;
        out_.fill(r);
        r.premature_layers = premature_;
        r.eos = r.reason == stop_reason::eos;
        r.no_valid_token = r.reason == stop_reason::no_valid_token;
        r.model_calls = r.stats.model_calls = calls_;
        r.stats.model_rows = calls_ * (J_ + 1);
        r.stats.constraint_queries = queries_;
        r.stats.finish();
        return r;
    }

private:
    static const dola_params& checked(const dola_params& p, std::size_t V,
                                      std::span<const token_id> prompt) {
        p.validate();
        if (prompt.empty()) raise("dola: prompt must not be empty (add a BOS token)");
        if (V == 0) raise("dola: vocab_size must be >= 1");
        return p;
    }
    static sampling_params with_eos(const dola_params& p) {
        sampling_params sp = p.sampling;
        if (sp.eos_ids.empty()) sp.eos_ids = p.eos_ids;
        return sp;
    }

    dola_params p_;
    std::size_t V_;
    std::vector<int> layers_;
    std::size_t J_;
    dola_scorer scorer_;
    sampler draw_;
    penalty_workspace pws_;
    std::vector<float> scores_;
    std::vector<token_id> seq_;
    std::size_t prompt_length_ = 0;
    std::vector<int> premature_;
    sequence_output out_;
    sequence_request request_;
    std::size_t calls_ = 0;
    std::size_t queries_ = 0;  // the sampler's constraint queries
};

/// Runs DoLa on `model` from `prompt` (needs the layer_logits_model capability), streaming
/// through `on_token` (contract.hpp). A loop over dola_stepper.
/// \pre !prompt.empty() (rejected with a message otherwise)
template <layer_logits_model M, token_callback OnToken = detail::no_stream>
dola_result dola_decode(M& model, std::span<const token_id> prompt, const dola_params& params,
                        OnToken&& on_token = {}) {
    dola_stepper st(params, std::size_t(model.vocab_size()), std::size_t(model.num_layers()),
                    prompt);
    std::vector<float> rows(st.layers().size() * st.vocab_size());
    while (!st.done()) {
        run_model_call(model, st.next_call(), rows);
        st.advance(rows, on_token);
    }
    return st.result();
}

DECODEKIT_END_NAMESPACE
