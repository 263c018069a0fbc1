#pragma once
/// \file decoding/proposers.hpp
/// Draft proposers for speculative_decode (decoding/speculative.hpp):
///   - draft_model_proposer: any second language_model drafting gamma tokens, greedy (one-hot
///     proposals) or sampled (q kept for exact rejection sampling);
///   - early_exit_proposer: the target itself read out at an intermediate layer
///     (layer_logits_model), drafting the same way;
///   - mtp_proposer: multi-token-prediction heads (multi_token_model): heads_per_call heads of
///     one forward draft that many tokens (head h predicts t+1+h), chained on its own output when
///     the round wants more (heads_per_call = 1: one head chained token by token);
///   - mtp_module_proposer: sequential MTP modules (mtp_module_model, DeepSeek-V3 style): the
///     main model's hidden state at the last verified position and k module steps draft k
///     tokens, module min(j, mtp_depth()) drafting token j;
///   - ngram_proposer: prompt lookup, copying the continuation of the most recent earlier
///     occurrence of the context's suffix (n from max_n down to min_n); one-hot proposals.
/// The model-based proposers are stepwise (stepwise_proposer in decoding/speculative.hpp): an
/// engine runs their draft calls batched across requests; propose() runs them itself.
/// A proposer's draft distribution q is the processed distribution actually sampled from (pass the
/// same processing as the target's); drafting stops early when the draft is unsure: the largest
/// probability of q is below min_confidence. (Deciding on max q, a function of the prefix, and
/// not on q(x) of the drawn x keeps sampled drafting exact: a stop that depended on the drawn
/// token would change the law of the proposals that are kept.)

#include <decodekit/config.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/speculative.hpp>
#include <decodekit/model.hpp>
#include <decodekit/random.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// How a model-based proposer picks its draft tokens.
enum class draft_mode : std::uint8_t {
    greedy,  ///< argmax of q (ties to the lowest id): deterministic, verified one-hot
    sample,  ///< x ~ q with the rng_purpose::draft stream of the drafted token's step
};

/// Options shared by the model-based proposers.
struct draft_options {
    draft_mode mode = draft_mode::greedy;
    float min_confidence = 0.f;  ///< stop drafting when max q of the next position is below this
    std::uint32_t slot = 1;      ///< slot of the draft sequence in model calls
};

namespace detail {
/// Largest probability of q (0 when empty).
inline float max_prob(const sparse_distribution& q) noexcept {
    float m = 0.f;
    for (float p : q.probs) m = p > m ? p : m;
    return m;
}
/// Picks a draft token from q (already processed) at generation step `step`; -1 if q is empty.
inline token_id pick_draft(const sparse_distribution& q, draft_mode mode, rng_key key) noexcept {
    if (mode == draft_mode::greedy) return detail::argmax(q);
    rng_stream s = make_stream(key, rng_purpose::draft);
    return detail::draw_sparse(q, s.uniform());
}

/// One draft position: processes `row` (the logits after `ext`) into out.next_q(), picks the
/// draft token of step r.key.step + out.size() and appends it to out and ext. False (nothing
/// appended) when q is empty or less confident than o.min_confidence: drafting stops.
template <class Processing>
bool draft_one(std::span<const float> row, const draft_request& r, draft_buffer& out,
               Processing& proc, const draft_options& o, std::vector<token_id>& ext) {
    const std::uint64_t step = r.key.step + out.tokens.size();
    sparse_distribution& q = out.next_q();
    proc(row,
         position_context{r.key.sequence, step, std::span<const token_id>(ext), r.prompt_length},
         q);
    const token_id x = pick_draft(q, o.mode, rng_key{r.key.seed, r.key.sequence, step});
    if (x < 0 || detail::max_prob(q) < o.min_confidence) return false;
    out.tokens.push_back(x);
    ext.push_back(x);
    return true;
}

/// A stepwise proposer drafting token by token, one draft position per model call (the row
/// after the context + drafts so far). Source says which call: `kind` and `layers()` of the
/// call, `model()` the model it runs on, `vocab_size()`. draft_model_proposer and
/// early_exit_proposer are this with their sources.
template <class Source, class Processing>
class chained_proposer {
public:
    chained_proposer(Source source, Processing processing, draft_options options)
        : src_(std::move(source)),
          proc_(std::move(processing)),
          opt_(options),
          row_(std::size_t(src_.vocab_size())) {}

    /// The drafting model's vocabulary size.
    std::size_t vocab_size() const { return std::size_t(src_.vocab_size()); }

    /// Starts drafting a round of up to r.max_tokens tokens (stepwise_proposer).
    void begin(const draft_request& r, draft_buffer& out) {
        req_ = r;
        ext_.assign(r.context.begin(), r.context.end());
        out.has_distributions = opt_.mode == draft_mode::sample;
        active_ = out.tokens.size() < r.max_tokens;
        request_ = {std::span<const token_id>(ext_), 1, opt_.slot};
    }
    /// The next draft position's call (one row after the context + drafts); empty when done.
    model_call draft_call() const noexcept {
        if (!active_) return {};
        return {.kind = src_.kind,
                .model = model_role::draft,
                .requests = std::span<const sequence_request>(&request_, 1),
                .layers = src_.layers()};
    }
    /// Consumes draft_call()'s row: picks the next draft token or stops drafting (q empty or
    /// under min_confidence, the budget reached, or a row shorter than vocab_size()).
    void advance(std::span<const float> rows, draft_buffer& out) {
        if (!active_) return;
        const std::size_t V = row_.size();
        ++out.model_calls;
        if (rows.size() < V || !draft_one(rows.first(V), req_, out, proc_, opt_, ext_) ||
            out.tokens.size() >= req_.max_tokens) {
            active_ = false;
            return;
        }
        request_ = {std::span<const token_id>(ext_), 1, opt_.slot};
    }
    /// The model draft_call() runs on.
    auto& draft_model() const noexcept { return src_.model(); }

    /// Drafts up to r.max_tokens tokens at once, one model call each (the same steps).
    void propose(const draft_request& r, draft_buffer& out) {
        begin(r, out);
        while (active_) {
            run_model_call(draft_model(), draft_call(), std::span<float>(row_));
            advance(std::span<const float>(row_), out);
        }
    }

private:
    Source src_;
    Processing proc_;
    draft_options opt_;
    std::vector<float> row_;
    std::vector<token_id> ext_;
    draft_request req_{};
    sequence_request request_{};
    bool active_ = false;
};

/// Source: a language model's logits after the sequence.
template <language_model Model>
struct final_rows {
    Model* m;
    static constexpr call_kind kind = call_kind::logits;
    auto vocab_size() const { return m->vocab_size(); }
    Model& model() const noexcept { return *m; }
    std::span<const int> layers() const noexcept { return {}; }
};

/// Source: a layer_logits_model read out at one layer.
template <layer_logits_model Model>
struct layer_rows {
    Model* m;
    int layer[1];
    static constexpr call_kind kind = call_kind::layer_logits;
    auto vocab_size() const { return m->vocab_size(); }
    Model& model() const noexcept { return *m; }
    std::span<const int> layers() const noexcept { return {layer, 1}; }
};
}  // namespace detail

/// A second model as the draft. \pre draft.vocab_size() equals the target's (checked by
/// speculative_decode).
template <language_model Draft, distribution_processing Processing = basic_processing>
class draft_model_proposer
    : public detail::chained_proposer<detail::final_rows<Draft>, Processing> {
public:
    draft_model_proposer(Draft& draft, Processing processing = {}, draft_options options = {})
        : detail::chained_proposer<detail::final_rows<Draft>, Processing>(
              detail::final_rows<Draft>{&draft}, std::move(processing), options) {}
};

/// Early-exit self-draft: the target read out at layer `layer` (0..num_layers()).
template <layer_logits_model Model, distribution_processing Processing = basic_processing>
class early_exit_proposer : public detail::chained_proposer<detail::layer_rows<Model>, Processing> {
public:
    early_exit_proposer(Model& model, int layer, Processing processing = {},
                        draft_options options = {})
        : detail::chained_proposer<detail::layer_rows<Model>, Processing>(
              detail::layer_rows<Model>{&model, {checked_layer(model, layer)}},
              std::move(processing), options) {}

private:
    static int checked_layer(Model& model, int layer) {
        if (layer < 0 || std::size_t(layer) > std::size_t(model.num_layers()))
            raise(detail::range_message("early_exit_proposer.layer", "in [0, num_layers()]",
                                        double(layer)));
        return layer;
    }
};

/// Multi-token prediction: one head_logits call drafts heads_per_call tokens (0 = all heads;
/// head h predicts t+1+h), chained on its own output until the round has enough. Stepwise: each
/// call is one head_logits call (model_role::draft, on the target model).
template <multi_token_model Model, distribution_processing Processing = basic_processing>
class mtp_proposer {
public:
    mtp_proposer(Model& model, std::size_t heads_per_call = 0, Processing processing = {},
                 draft_options options = {.slot = 0})
        : model_(&model),
          proc_(std::move(processing)),
          opt_(options),
          heads_(std::size_t(model.num_heads())),
          per_call_(heads_per_call == 0 ? heads_ : std::min(heads_per_call, heads_)),
          rows_(heads_ * std::size_t(model.vocab_size())) {
        if (heads_ == 0)
            raise("mtp_proposer: the model has no prediction heads (num_heads() == 0)");
    }

    std::size_t vocab_size() const { return std::size_t(model_->vocab_size()); }

    /// Starts drafting a round (stepwise_proposer).
    void begin(const draft_request& r, draft_buffer& out) {
        req_ = r;
        ext_.assign(r.context.begin(), r.context.end());
        out.has_distributions = opt_.mode == draft_mode::sample;
        active_ = out.tokens.size() < r.max_tokens;
        request_ = {std::span<const token_id>(ext_), 1, opt_.slot};
    }
    /// One head_logits call after the context + drafts so far; empty when done.
    model_call draft_call() const noexcept {
        if (!active_) return {};
        return {.kind = call_kind::head_logits,
                .model = model_role::draft,
                .requests = std::span<const sequence_request>(&request_, 1),
                .heads = heads_};
    }
    /// Consumes the heads' rows (num_heads() x vocab_size()): drafts up to heads_per_call tokens.
    void advance(std::span<const float> rows, draft_buffer& out) {
        if (!active_) return;
        const std::size_t V = std::size_t(model_->vocab_size());
        ++out.model_calls;
        const std::size_t n = std::min(per_call_, req_.max_tokens - out.tokens.size());
        active_ = rows.size() >= n * V;
        for (std::size_t h = 0; h < n && active_; ++h)
            active_ = detail::draft_one(rows.subspan(h * V, V), req_, out, proc_, opt_, ext_);
        if (out.tokens.size() >= req_.max_tokens) active_ = false;
        request_ = {std::span<const token_id>(ext_), 1, opt_.slot};
    }
    /// The model draft_call() runs on (the target itself).
    Model& draft_model() const noexcept { return *model_; }

    /// Drafts up to r.max_tokens tokens, ceil(max_tokens / heads_per_call) calls.
    void propose(const draft_request& r, draft_buffer& out) {
        begin(r, out);
        while (active_) {
            run_model_call(*model_, draft_call(), std::span<float>(rows_));
            advance(std::span<const float>(rows_), out);
        }
    }

private:
    Model* model_;
    Processing proc_;
    draft_options opt_;
    std::size_t heads_, per_call_;
    std::vector<float> rows_;
    std::vector<token_id> ext_;
    draft_request req_{};
    sequence_request request_{};
    bool active_ = false;
};

/// Sequential multi-token prediction (mtp_module_model): drafts token j of a round with module
/// mtp_module_for(j, mtp_depth()), from the hidden state the previous step returned (j = 1: the
/// main model's h(0, i) at the position i before the context's last token) and the token before
/// the drafted one; one module step per draft token. The module's own state, if any, follows
/// `position` (model.hpp); the proposer keeps none between rounds. It is a
/// target_hidden_proposer (decoding/speculative.hpp): speculative_decode and speculative_stepper
/// verify with logits_and_hidden and hand it h(0, i) of the last verified position, so a round
/// costs no main forward beyond its verification (the first round, with no verified position
/// yet, computes h(0, i) with one logits_and_hidden call over the context without its last
/// token). It is stepwise: each draft call is one mtp_logits call (model_role::draft, on the
/// target model, one module step), so an engine batches the module steps of every speculating
/// request into one call; advance() takes that call's logits and hidden rows. The target must be
/// `model` (the module reads its states).
template <mtp_module_model Model, distribution_processing Processing = basic_processing>
class mtp_module_proposer {
public:
    /// \pre model.mtp_depth() >= 1 (raises otherwise)
    mtp_module_proposer(Model& model, Processing processing = {},
                        draft_options options = {.slot = 0})
        : model_(&model),
          proc_(std::move(processing)),
          opt_(options),
          depth_(std::size_t(model.mtp_depth())),
          hidden_size_(std::size_t(model.hidden_size())),
          row_(std::size_t(model.vocab_size())),
          h_(hidden_size_),
          call_h_(hidden_size_) {
        if (depth_ == 0)
            raise("mtp_module_proposer: the model has no MTP module (mtp_depth() == 0)");
    }
    std::size_t vocab_size() const { return std::size_t(model_->vocab_size()); }
    /// target_hidden_proposer: the verify call returns hidden states of hidden_size() floats.
    bool needs_target_hidden() const noexcept { return true; }
    std::size_t hidden_size() const noexcept { return hidden_size_; }
    /// target_hidden_proposer: keeps h(0, i) of the last verified position for the next round
    /// (whose context is `context`).
    void observe_target_hidden(std::span<const float> hidden, std::span<const token_id> context) {
        given_h_.assign(hidden.begin(), hidden.end());
        given_for_ = context.size();
        given_last_ = context.empty() ? -1 : context.back();
    }

    /// Starts drafting a round of up to r.max_tokens tokens (stepwise_proposer): from h(0, i)
    /// handed over by observe_target_hidden() for this context (used once), else the round's
    /// first call computes it (logits_and_hidden over the context without its last token, slot
    /// options.slot; with the target's slot a caching backend recomputes one position). Nothing
    /// is drafted when r.context has fewer than 2 tokens or r.max_tokens is 0.
    void begin(const draft_request& r, draft_buffer& out) {
        req_ = r;
        out.has_distributions = opt_.mode == draft_mode::sample;
        phase_ = phase::idle;
        j_ = 1;
        if (r.context.size() < 2 || out.tokens.size() >= r.max_tokens) return;
        ext_.assign(r.context.begin(), r.context.end());
        if (given_for_ == r.context.size() && given_last_ == r.context.back() &&
            given_h_.size() == hidden_size_) {
            given_for_ = 0;  // used once
            h_.assign(given_h_.begin(), given_h_.end());
            phase_ = phase::module;
        } else {
            phase_ = phase::prefill;
        }
    }
    /// The round's next call: the prefill (logits_and_hidden, one position) or one module step
    /// (mtp_logits); empty when drafting is over.
    model_call draft_call() const noexcept {
        rebind();
        switch (phase_) {
            case phase::prefill:
                return {.kind = call_kind::logits_and_hidden,
                        .model = model_role::draft,
                        .requests = std::span<const sequence_request>(&prefill_, 1)};
            case phase::module:
                return {.kind = call_kind::mtp_logits,
                        .model = model_role::draft,
                        .mtp = std::span<const mtp_request>(&step_, 1)};
            default:
                return {};
        }
    }
    /// Consumes draft_call()'s rows (one logits row, one hidden row): the prefill's h(0, i), or
    /// a module step's logits (the next draft token, or the end of drafting: q empty or under
    /// min_confidence, the budget reached) and h(depth, i). Short rows end drafting.
    void advance(std::span<const float> rows, std::span<const float> hidden, draft_buffer& out) {
        if (phase_ == phase::idle) return;
        const std::size_t V = row_.size();
        ++out.model_calls;
        if (rows.size() < V || hidden.size() < hidden_size_) {
            phase_ = phase::idle;
            return;
        }
        if (phase_ == phase::module) {
            if (!detail::draft_one(rows.first(V), req_, out, proc_, opt_, ext_) ||
                out.tokens.size() >= req_.max_tokens) {
                phase_ = phase::idle;
                return;
            }
            ++j_;
        }
        h_.assign(hidden.begin(), hidden.begin() + std::ptrdiff_t(hidden_size_));
        phase_ = phase::module;
    }
    /// stepwise_proposer's advance without hidden rows: drafting cannot go on, so it ends.
    void advance(std::span<const float> rows, draft_buffer& out) { advance(rows, {}, out); }
    /// The model draft_call() runs on (the target itself).
    Model& draft_model() const noexcept { return *model_; }

    /// Drafts up to r.max_tokens tokens from `hidden` = h(0, i), i = r.context.size() - 2: the
    /// main model's hidden state at the position before the context's last token, as the forward
    /// that verified (or prefilled) that token returned it from logits_and_hidden: one module
    /// call per draft token, no main forward. Proposes nothing when r.context has fewer than 2
    /// tokens or hidden.size() != hidden_size().
    void propose(const draft_request& r, std::span<const float> hidden, draft_buffer& out) {
        out.has_distributions = opt_.mode == draft_mode::sample;
        if (hidden.size() != hidden_size_) return;
        observe_target_hidden(hidden, r.context);
        propose(r, out);
    }
    /// The draft_proposer entry: the stepwise calls run on the model here (the same drafts).
    void propose(const draft_request& r, draft_buffer& out) {
        begin(r, out);
        while (phase_ != phase::idle) {
            run_model_call(*model_, draft_call(), std::span<float>(row_),
                           std::span<float>(call_h_));
            advance(std::span<const float>(row_), std::span<const float>(call_h_), out);
        }
    }

private:
    enum class phase : std::uint8_t { idle, prefill, module };
    /// Points the pending call at this object's buffers (done by draft_call(), so copies and
    /// moves need nothing special).
    void rebind() const noexcept {
        if (phase_ == phase::prefill)
            prefill_ = {std::span<const token_id>(ext_).first(ext_.size() - 1), 1, opt_.slot};
        else if (phase_ == phase::module)
            step_ = {std::span<const float>(h_), ext_.back(), mtp_module_for(j_, depth_),
                     ext_.size() - 1, opt_.slot};
    }

    Model* model_;
    Processing proc_;
    draft_options opt_;
    std::size_t depth_, hidden_size_;
    std::vector<float> row_, h_, call_h_, given_h_;
    std::size_t given_for_ = 0;  // context size given_h_ belongs to (0: none)
    token_id given_last_ = -1;   // and the context's last token (a cheap consistency check)
    std::vector<token_id> ext_;
    draft_request req_{};
    phase phase_ = phase::idle;
    std::size_t j_ = 1;                   // the draft token the next module step predicts (1-based)
    mutable sequence_request prefill_{};  // the pending call, written by draft_call()
    mutable mtp_request step_{};
};

/// Prompt lookup / n-gram drafting: for n = max_n down to min_n, find the most recent earlier
/// occurrence of the context's last n tokens and propose the tokens that followed it (up to the
/// round's budget). No model calls; deterministic (one-hot) proposals.
struct ngram_proposer {
    std::size_t min_n = 1;   ///< >= 1
    std::size_t max_n = 3;   ///< >= min_n
    std::size_t window = 0;  ///< search only the last `window` tokens (0 = the whole context)

    /// First problem with the fields, or nullopt.
    std::optional<std::string> check() const {
        if (min_n < 1) return detail::range_message("ngram_proposer.min_n", ">= 1", double(min_n));
        if (max_n < min_n)
            return detail::range_message("ngram_proposer.max_n", ">= min_n", double(max_n));
        return std::nullopt;
    }
    void validate() const { raise_if(check()); }

    /// Writes the proposal; O(window * max_n).
    void propose(const draft_request& r, draft_buffer& out) const {
        out.has_distributions = false;
        const auto c = r.context;
        const std::size_t L = c.size();
        const std::size_t lo = window && window < L ? L - window : 0;
        for (std::size_t n = std::min(max_n, L > 0 ? L - 1 : 0); n >= min_n && n > 0; --n) {
            const auto suffix = c.subspan(L - n, n);
            // most recent earlier start j with j + n < L (the match must end before the suffix
            // ends so that a continuation exists)
            for (std::size_t j = L - n; j-- > lo;) {
                if (!std::equal(suffix.begin(), suffix.end(), c.begin() + std::ptrdiff_t(j)))
                    continue;
                const std::size_t from = j + n;
                const std::size_t to = std::min(L, from + r.max_tokens);
                out.tokens.assign(c.begin() + std::ptrdiff_t(from), c.begin() + std::ptrdiff_t(to));
                return;
            }
        }
    }
};

DECODEKIT_END_NAMESPACE
