#pragma once
/// \file decoding/contrastive.hpp
/// Contrastive search (Su et al. 2022) over a hidden_state_model: contrastive_stepper, which an
/// engine drives, and contrastive_search(), which drives it on one model. Per step: candidates =
/// top-k of p = softmax(logits) (kernels::logsumexp_top_k: the normaliser and the top k in two
/// passes over the row, ties by lower id); one batched look-ahead call
/// (candidate i appended to the context, slot = i) returns each candidate's last-layer hidden state
/// h_i and its next logits; degeneration penalty d_i = max_j cos(h_i, h_j) over every earlier
/// position j, prompt included (kernels::cosine_similarity); the chosen candidate maximises (1 -
/// alpha) p_i - alpha d_i, ties to the higher-ranked candidate. Its look-ahead logits and hidden
/// state are kept, so each step costs exactly one model call after the prompt's. alpha = 0 or k = 1
/// is greedy (then the look-ahead has one candidate). The first call scores the whole prompt
/// (logits and hidden states of every prompt position, slot 0). Stop rule, streaming and results:
/// decoding/contract.hpp (an EOS is not appended; token_event::logprob is log p of the chosen
/// candidate under softmax(logits), the processed logits when there are processors).
/// Processors (contrastive_params::processing, decoding/row_processors.hpp: penalties,
/// no_repeat_ngram, banned tokens / sequences, min_new_tokens, user processors) run on each
/// step's logits row, with the sequence's history, before the top-k candidates are chosen, as
/// Hugging Face does (its logits processors, then top-k of the softmax): p above is the processed
/// distribution, a banned token is never a candidate. min_new_tokens suppresses the EOS ids
/// (defaulting to eos_ids) and holds stop sequences / stop strings until that many tokens exist.

#include <decodekit/config.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/row_processors.hpp>
#include <decodekit/decoding/sequence_output.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
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
    std::vector<token_id> eos_ids = {};  ///< generation stops at one of these (not emitted)
    std::vector<std::vector<token_id>> stop_sequences = {};  ///< each non-empty
    std::vector<std::string> stop_strings = {};  ///< text stops (decoding/stop_strings.hpp)
    detokenize_fn detokenize = {};  ///< token -> bytes: streams text, needed by stop_strings
    /// The processors of the sequence: only the processor fields are read (penalties,
    /// no_repeat_ngram_size, banned tokens / sequences, logit biases, min_new_tokens, user
    /// processors; decoding/row_processors.hpp); its eos_ids default to this eos_ids.
    sampling_params processing = {};

    /// The first invalid field, named with its allowed range; nullopt when valid.
    std::optional<std::string> check() const {
        if (auto e = detail::check_row_processing(processing, "contrastive_params")) return e;
        if (top_k < 1 || top_k > 1024)
            return detail::range_message("contrastive_params.top_k", "in [1, 1024]", double(top_k));
        if (!(alpha >= 0.f && alpha <= 1.f))
            return detail::range_message("contrastive_params.alpha", "in [0, 1]", double(alpha));
        if (max_new_tokens < 1)
            return detail::range_message("contrastive_params.max_new_tokens", ">= 1",
                                         double(max_new_tokens));
        if (auto e = detail::check_stop_conditions("contrastive_params", eos_ids, stop_sequences))
            return e;
        return detail::check_stop_strings("contrastive_params", stop_strings, bool(detokenize));
    }
    /// check(), reported through raise().
    void validate() const { raise_if(check()); }
};

/// What contrastive search returns (tokens exclude the EOS).
struct contrastive_result : decoding_result {
    bool eos = false;             ///< reason == stop_reason::eos
    bool no_valid_token = false;  ///< reason == stop_reason::no_valid_token
    std::size_t model_calls = 0;
    std::size_t model_rows = 0;  ///< logits rows computed (prompt rows + k per step)
};

/// Workspace and scorer of one contrastive step, sized once for (vocab, hidden, k).
class contrastive_scorer {
public:
    contrastive_scorer(std::size_t vocab_size, std::size_t hidden_size, std::size_t k)
        : cand_(vocab_size),
          group_max_(kernels::logsumexp_top_k_scratch(vocab_size)),
          hidden_(hidden_size),
          k_(k),
          probs_(k),
          sims_() {}

    /// The top-k candidates of `logits` (ids() ranked, ties by lower id) and their probabilities;
    /// returns how many (0 when no entry is valid).
    std::size_t candidates_of(std::span<const float> logits) noexcept {
        const double lse =
            kernels::logsumexp_top_k(logits, k_, tie_policy::exactly_k, cand_, group_max_);
        if (!(lse > -std::numeric_limits<double>::infinity())) {
            cand_.clear();
            return 0;
        }
        const std::size_t n = cand_.size();
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
    std::vector<float> group_max_;  ///< kernels::logsumexp_top_k's scratch
    std::size_t hidden_, k_;
    std::vector<double> probs_;
    std::vector<float> sims_;
};

/// Contrastive search of one sequence, driven step by step: next_call() is a logits_and_hidden
/// call (first the whole prompt, then the k look-ahead sequences, slot = candidate rank);
/// advance() consumes its rows, picks the token and applies the stop rule.
class contrastive_stepper {
public:
    /// \pre params valid, !prompt.empty(), vocab_size >= 1 (each rejected with a message)
    contrastive_stepper(const contrastive_params& params, std::size_t vocab_size,
                        std::size_t hidden_size, std::span<const token_id> prompt)
        : alpha_(checked(params, vocab_size, prompt).alpha),
          V_(vocab_size),
          H_(hidden_size),
          k_(params.alpha == 0.f ? 1 : std::min(params.top_k, vocab_size)),
          scorer_(V_, H_, k_) {
        const std::size_t reserve = std::min<std::size_t>(params.max_new_tokens, 16384);
        seq_.assign(prompt.begin(), prompt.end());
        seq_.reserve(prompt.size() + reserve);
        ctx_hidden_.reserve((prompt.size() + reserve) * H_);
        logits_.resize(V_);
        cand_seq_.resize(k_);
        for (auto& c : cand_seq_) c.reserve(prompt.size() + reserve);
        req_.resize(k_);
        procs_ = detail::row_processors(params.processing, params.eos_ids);
        prompt_length_ = prompt.size();
        out_ = sequence_output(stop_conditions{.eos_ids = params.eos_ids,
                                               .stop_sequences = params.stop_sequences,
                                               .stop_strings = params.stop_strings,
                                               .detokenize = params.detokenize,
                                               .min_new_tokens = params.processing.min_new_tokens,
                                               .max_new_tokens = params.max_new_tokens},
                               prompt.size(), reserve);
        req_[0] = {seq_, seq_.size(), 0};
        n_ = 1;
    }
    contrastive_stepper(const contrastive_stepper&) = delete;
    contrastive_stepper& operator=(const contrastive_stepper&) = delete;
    contrastive_stepper(contrastive_stepper&&) = default;
    contrastive_stepper& operator=(contrastive_stepper&&) = default;

    /// logits_and_hidden of the prompt (first call) or of the look-ahead sequences.
    model_call next_call() const noexcept {
        if (done()) return {};
        return {.kind = call_kind::logits_and_hidden,
                .requests = std::span<const sequence_request>(req_.data(), n_)};
    }
    std::span<const sequence_request> requests() const noexcept { return next_call().requests; }
    bool done() const noexcept { return out_.done(); }
    std::size_t vocab_size() const noexcept { return V_; }
    std::size_t hidden_size() const noexcept { return H_; }

    /// Consumes next_call()'s rows: logits (positions x vocab_size) and hidden states
    /// (positions x hidden_size).
    /// \return status bad_input (nothing consumed) when either span is short
    template <class OnToken = detail::no_stream>
    requires token_callback<OnToken> step_events advance(std::span<const float> logits,
                                                         std::span<const float> hidden,
                                                         OnToken&& on_token = {}) {
        if (done()) return {.status = step_status::finished};
        const std::size_t rows = next_call().positions();
        if (logits.size() / V_ < rows || (H_ > 0 && hidden.size() / H_ < rows))
            return {.status = step_status::bad_input};
        out_.begin_step();
        ++calls_;
        rows_ += rows;
        if (prompt_phase_) {
            prompt_phase_ = false;
            ctx_hidden_.assign(hidden.begin(), hidden.begin() + std::ptrdiff_t(rows * H_));
            std::copy_n(logits.begin() + std::ptrdiff_t((rows - 1) * V_), V_, logits_.begin());
        } else {
            const std::size_t best = scorer_.select(hidden.first(n_ * H_), ctx_hidden_, alpha_);
            const token_id t = scorer_.ids()[best];
            const float lp = float(std::log(scorer_.probs()[best]));
            if (out_.is_eos(t)) {
                out_.finish(stop_reason::eos, on_token);
                return out_.events();
            }
            seq_.push_back(t);
            ctx_hidden_.insert(ctx_hidden_.end(), hidden.begin() + std::ptrdiff_t(best * H_),
                               hidden.begin() + std::ptrdiff_t((best + 1) * H_));
            std::copy_n(logits.begin() + std::ptrdiff_t(best * V_), V_, logits_.begin());
            if (!out_.emit(t, lp, on_token)) return out_.events();
        }
        prepare(on_token);
        return out_.events();
    }

    /// Ends the sequence now with stop_reason::cancelled (the held-back text is in the events).
    step_events cancel() {
        if (done()) return {.status = step_status::finished};
        out_.begin_step();
        out_.finish(stop_reason::cancelled);
        return out_.events();
    }

    /// The output so far (everything once done()).
    contrastive_result result() const {
        contrastive_result r;
        out_.fill(r);
        r.eos = r.reason == stop_reason::eos;
        r.no_valid_token = r.reason == stop_reason::no_valid_token;
        r.model_calls = r.stats.model_calls = calls_;
        r.model_rows = r.stats.model_rows = rows_;
        r.stats.finish();
        return r;
    }

private:
    static const contrastive_params& checked(const contrastive_params& p, std::size_t V,
                                             std::span<const token_id> prompt) {
        p.validate();
        if (prompt.empty()) raise("contrastive_search: prompt must not be empty (add a BOS token)");
        if (V == 0) raise("contrastive_search: vocab_size must be >= 1");
        return p;
    }
    /// The next step's candidates and look-ahead requests (or no_valid_token).
    template <class OnToken>
    void prepare(OnToken& on_token) {
        if (procs_.active())
            procs_.apply(logits_, sample_context{.step = out_.size(),
                                                 .history = seq_,
                                                 .prompt_length = prompt_length_});
        n_ = scorer_.candidates_of(logits_);
        if (n_ == 0) {
            out_.finish(stop_reason::no_valid_token, on_token);
            return;
        }
        for (std::size_t i = 0; i < n_; ++i) {
            cand_seq_[i].assign(seq_.begin(), seq_.end());
            cand_seq_[i].push_back(scorer_.ids()[i]);
            req_[i] = {cand_seq_[i], 1, std::uint32_t(i)};
        }
    }

    float alpha_;
    std::size_t V_, H_, k_;
    contrastive_scorer scorer_;
    std::vector<token_id> seq_;
    std::vector<float> ctx_hidden_, logits_;
    std::vector<std::vector<token_id>> cand_seq_;
    std::vector<sequence_request> req_;
    std::size_t n_ = 0;  // live requests
    bool prompt_phase_ = true;
    processor_pipeline procs_;  // the sequence's processors (inactive: none)
    std::size_t prompt_length_ = 0;
    sequence_output out_;
    std::size_t calls_ = 0, rows_ = 0;
};

/// Runs contrastive search on `model` from `prompt` (needs the hidden_state_model capability),
/// streaming through `on_token` (contract.hpp). A loop over contrastive_stepper.
/// \pre !prompt.empty() (rejected with a message otherwise)
template <hidden_state_model M, token_callback OnToken = detail::no_stream>
contrastive_result contrastive_search(M& model, std::span<const token_id> prompt,
                                      const contrastive_params& params, OnToken&& on_token = {}) {
    contrastive_stepper st(params, std::size_t(model.vocab_size()),
                           std::size_t(model.hidden_size()), prompt);
    const std::size_t rows = std::max(prompt.size(), std::min(params.top_k, st.vocab_size()));
    std::vector<float> logits(rows * st.vocab_size()), hidden(rows * st.hidden_size());
    while (!st.done()) {
        run_model_call(model, st.next_call(), logits, hidden);
        st.advance(logits, hidden, on_token);
    }
    return st.result();
}

DECODEKIT_END_NAMESPACE
