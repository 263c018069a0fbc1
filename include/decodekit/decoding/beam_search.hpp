#pragma once
/// \file decoding/beam_search.hpp
/// Beam search over a language_model: n-best with scores, length penalty (prompt counted or not),
/// early stopping {first_n, heuristic, never}, EOS handling, max length; diverse (group) beam
/// search and stochastic beams (Gumbel top-k) as options; stop sequences and stop strings;
/// beam_searcher, the stepper an engine drives (parent beam indices for paged KV caches, the
/// best hypothesis for streaming), and beam_search(), which drives it on one model.
///
/// Per step (per group of g = num_beams / num_groups beams): the top 2g candidates of
/// `beam_score + logprob` over (running beams of the group) x V (max(2, 1 + #eos_ids) * g with
/// several EOS ids, as Hugging Face), found without sorting V (kernels::logsumexp_top_k of each
/// beam row: its normaliser and top k in two passes; then a merge of the g * 2g survivors). In rank
/// order, a finishing candidate (an EOS id, or a token that completes a stop sequence or a stop
/// string of its beam) becomes a finished hypothesis only if its rank is < g; other candidates fill
/// the g running beams. A hypothesis' score is `sum_logprobs / length^length_penalty` where length
/// = generated tokens, EOS included
/// (+ the prompt length when length_includes_prompt). Returned tokens exclude the EOS
/// (decoding/contract.hpp's EOS rule; beam_hypothesis::eos says it was there) and include the
/// tokens of a stop sequence / stop string.
/// Stopping (per group, once it holds g finished hypotheses): first_n stops at once (HF
/// early_stopping=True); heuristic stops when the worst finished score >= best candidate sum /
/// (its length)^lp (HF False: exact for lp <= 0, a heuristic for lp > 0); never uses the
/// true bound (best sum / max_length^lp when lp > 0), so it returns the exact n-best of the
/// sequences the beam kept. At max_new_tokens, running beams become hypotheses.
/// All running beams (every group) go to the model in one call, slot = beam index.
/// Processors (beam_search_params::processing, decoding/row_processors.hpp): every beam has its
/// own processor state (a processor_pipeline following that beam's history); a new beam takes a
/// copy of its parent's (the fork), so penalties, no_repeat_ngram, banned sequences and
/// min_new_tokens see each beam's own tokens. They run on each beam's LOGITS row, and the
/// log-softmax of the processed row is the beam's logprob (the scores are log-probabilities of
/// the processed distribution, as a sampler with the same processors draws from). Hugging Face
/// runs its processors on the log-softmax instead and does not renormalise; we process logits
/// because then a processor means the same thing in every strategy (CTRL's repetition penalty
/// divides positive logits, which log-probabilities never are), num_beams = 1 equals greedy
/// generate() with the same processors, and the scores of different beams stay comparable
/// log-probabilities. The two agree on which tokens are banned (-inf) and differ in the scores
/// of the others; beam_processor_input::logprobs gives Hugging Face's behaviour for parity.
/// min_new_tokens holds EOS (suppressed) and stop sequences / stop strings (not matched before that
/// many tokens), decoding/contract.hpp's rule. Special rows: a beam whose row has no valid entry
/// (all -inf / NaN) ends; when no running beam of a group has one, its running beams become
/// hypotheses with reason no_valid_token (their tokens so far), so a model of NaN rows gives one
/// empty hypothesis and stop_reason::no_valid_token.

#include <decodekit/config.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/row_processors.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/model.hpp>
#include <decodekit/random.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// When beam search stops once a group holds num_beams / num_groups finished hypotheses.
enum class early_stopping : std::uint8_t {
    first_n,    ///< stop at once (Hugging Face early_stopping=True)
    heuristic,  ///< stop when no running beam can beat the worst at its current length (HF False)
    never,      ///< stop only when no running beam can beat the worst ever (a true bound)
};

/// What beam search's processors run on (beam_search_params::processing).
enum class beam_processor_input : std::uint8_t {
    /// The logits; the beam's logprobs are the log-softmax of the processed row (default: the
    /// scores are log-probabilities of the processed distribution, as a sampler draws from).
    logits,
    /// Hugging Face: the log-softmax of the logits; the processed values are the logprobs as
    /// they are (not renormalised). For parity with transformers' beam search.
    logprobs,
};

/// Beam search configuration.
struct beam_search_params {
    std::size_t num_beams = 4;            ///< beam width, >= 1
    std::size_t num_return = 1;           ///< n-best size, in [1, num_beams]
    std::size_t max_new_tokens = 64;      ///< generated tokens per hypothesis, >= 1
    float length_penalty = 1.f;           ///< exponent of the length in the score, finite
    bool length_includes_prompt = false;  ///< false: HF (generated only); true: vLLM, ORT-genai
    early_stopping stopping = early_stopping::heuristic;
    std::vector<token_id> eos_ids = {};  ///< tokens that finish a hypothesis (negative: ignored)
    std::size_t num_groups = 1;          ///< diverse beam search: divides num_beams
    float diversity_penalty = 0.f;       ///< subtracted per earlier-group choice of a token, >= 0
    bool stochastic = false;             ///< Gumbel top-k stochastic beams (Kool et al. 2019)
    float temperature = 1.f;             ///< of the stochastic beams' distribution, > 0
    std::uint64_t seed = 0;              ///< stochastic beams: rng_key{seed, sequence, step}
    std::uint64_t sequence = 0;
    std::vector<std::vector<token_id>> stop_sequences = {};  ///< finish a hypothesis (kept)
    std::vector<std::string> stop_strings =
        {};                         ///< finish a hypothesis (decoding/stop_strings.hpp)
    detokenize_fn detokenize = {};  ///< token -> bytes, needed by stop_strings
    /// The processors of every beam: only the processor fields are read (penalties,
    /// no_repeat_ngram_size, banned tokens / sequences, logit biases, min_new_tokens, user
    /// processors; decoding/row_processors.hpp); its eos_ids default to this eos_ids.
    sampling_params processing = {};
    /// What the processors run on (the file comment says why logits is the default).
    beam_processor_input processor_input = beam_processor_input::logits;

    /// The first invalid field, named with its allowed range; nullopt when valid.
    std::optional<std::string> check() const {
        if (auto e = detail::check_row_processing(processing, "beam_search_params")) return e;
        if (unsigned(processor_input) > 1u)
            return detail::range_message("beam_search_params.processor_input", "logits or logprobs",
                                         double(unsigned(processor_input)));
        if (stochastic && processor_input == beam_processor_input::logprobs)
            return std::string(
                "beam_search_params.processor_input must be logits with stochastic beams");
        if (num_beams < 1 || num_beams > 4096)
            return detail::range_message("beam_search_params.num_beams", "in [1, 4096]",
                                         double(num_beams));
        if (num_return < 1 || num_return > num_beams)
            return detail::range_message("beam_search_params.num_return", "in [1, num_beams]",
                                         double(num_return));
        if (max_new_tokens < 1)
            return detail::range_message("beam_search_params.max_new_tokens", ">= 1",
                                         double(max_new_tokens));
        if (!std::isfinite(length_penalty))
            return detail::range_message("beam_search_params.length_penalty", "finite",
                                         double(length_penalty));
        if (num_groups < 1 || num_beams % num_groups != 0)
            return detail::range_message("beam_search_params.num_groups",
                                         ">= 1 and a divisor of num_beams", double(num_groups));
        if (!(diversity_penalty >= 0.f) || !std::isfinite(diversity_penalty))
            return detail::range_message("beam_search_params.diversity_penalty", "finite and >= 0",
                                         double(diversity_penalty));
        if (!(temperature > 0.f) || !std::isfinite(temperature))
            return detail::range_message("beam_search_params.temperature", "finite and > 0",
                                         double(temperature));
        if (auto e = detail::check_stop_conditions("beam_search_params", eos_ids, stop_sequences))
            return e;
        return detail::check_stop_strings("beam_search_params", stop_strings, bool(detokenize));
    }
    /// check(), reported through raise().
    void validate() const { raise_if(check()); }
};

/// One finished hypothesis.
struct beam_hypothesis {
    std::vector<token_id> tokens;  ///< generated tokens (prompt and EOS excluded)
    double score = 0;              ///< sum_logprobs / length^length_penalty
    double sum_logprobs = 0;       ///< including diversity penalties (diverse beam search)
    bool eos = false;              ///< finished by an EOS token (excluded from tokens)
    stop_reason reason = stop_reason::max_new_tokens;  ///< why it finished
};

/// What beam search returns: tokens / reason of the best hypothesis, and the n-best.
struct beam_search_result : decoding_result {
    std::vector<beam_hypothesis> hypotheses;  ///< n-best, best first (score desc)
    std::size_t steps = 0;                    ///< decoding steps run
    std::size_t model_calls = 0;              ///< model.logits calls (= stats.model_calls)
    std::size_t model_rows = 0;               ///< logits rows requested in total
};

/// One candidate of a beam step: parent beam, token and scores.
struct beam_candidate {
    double key = 0;          ///< ranking key (sum, or the Gumbel key of stochastic beams)
    double sum = 0;          ///< parent sum + logprob (- diversity penalty)
    std::uint32_t beam = 0;  ///< parent row
    token_id token = 0;
};

namespace detail {
inline bool beam_candidate_before(const beam_candidate& a, const beam_candidate& b) noexcept {
    if (a.key != b.key) return a.key > b.key;
    if (a.beam != b.beam) return a.beam < b.beam;
    return a.token < b.token;
}
/// Keeps the pool O(k) whatever the number of rows: past 2k entries, only the best k stay.
inline void prune_pool(std::vector<beam_candidate>& pool, std::size_t k) {
    if (k == 0 || pool.size() <= 2 * k) return;
    std::nth_element(pool.begin(), pool.begin() + std::ptrdiff_t(k - 1), pool.end(),
                     beam_candidate_before);
    pool.resize(k);
}
/// Copies the best min(out.size(), pool.size()) candidates of `pool` (beam_candidate_before
/// order) to the front of `out`; returns how many.
inline std::size_t take_best(std::vector<beam_candidate>& pool,
                             std::span<beam_candidate> out) noexcept {
    const std::size_t m = std::min(out.size(), pool.size());
    std::partial_sort(pool.begin(), pool.begin() + std::ptrdiff_t(m), pool.end(),
                      beam_candidate_before);
    std::copy_n(pool.begin(), m, out.begin());
    return m;
}
/// log(1 - exp(-a)) for a > 0, stable.
inline double log1mexp(double a) noexcept {
    return a < 0.6931471805599453 ? std::log(-std::expm1(-a)) : std::log1p(-std::exp(-a));
}
/// rng_key.step of the Gumbel noise of beam b of group g at step cur (stochastic beams):
/// (cur << 24) | (g << 12) | b, injective since g, b < 4096 (num_beams <= 4096).
/// \pre g < 4096, b < 4096, cur < 2^40
inline std::uint64_t stochastic_beam_step(std::size_t cur, std::size_t g, std::size_t b) noexcept {
    DECODEKIT_ASSERT(g < 4096 && b < 4096 && std::uint64_t(cur) < (std::uint64_t(1) << 40),
                     "stochastic_beam_step: g, b < 4096 and cur < 2^40");
    return (std::uint64_t(cur) << 24) | (std::uint64_t(g) << 12) | std::uint64_t(b);
}
}  // namespace detail

/// Workspace of beam_top_candidates: sized once for (vocab_size, rows, k).
struct beam_step_workspace {
    candidates row_top;                ///< capacity vocab_size
    std::vector<beam_candidate> pool;  ///< rows * k merge pool
    std::vector<float> group_max;      ///< kernels::logsumexp_top_k's scratch
    explicit beam_step_workspace(std::size_t vocab_size = 0, std::size_t rows = 0,
                                 std::size_t k = 0)
        : row_top(vocab_size), group_max(kernels::logsumexp_top_k_scratch(vocab_size)) {
        pool.reserve(std::min(rows, std::size_t(3)) * k);  // at most 2k + one row's k
    }
};

/// The top `out.size()` candidates (rank order) of `beam_scores[b] + log_softmax(row b)[v]` over
/// rows x V (row-major `rows`), without sorting V: kernels::logsumexp_top_k per row (the max
/// pass, the exp pass and a selection in the groups the max pass marked), then a merge.
/// `penalty` (optional, size V): subtracted from the logprob of each token (diversity penalty).
/// `logprob_rows`: the rows already are the logprobs (used as they are, not renormalised:
/// Hugging Face's processed log-softmax). Returns the number written (fewer when rows have fewer
/// valid entries).
/// \pre rows.size() == beam_scores.size() * vocab_size, ws sized for (vocab_size, rows, k)
inline std::size_t beam_top_candidates(std::span<const float> rows, std::size_t vocab_size,
                                       std::span<const double> beam_scores,
                                       std::span<beam_candidate> out, beam_step_workspace& ws,
                                       std::span<const float> penalty = {}, std::size_t extra_k = 0,
                                       bool logprob_rows = false) noexcept {
    const std::size_t k = out.size();
    ws.pool.clear();
    if (k == 0) return 0;
    for (std::size_t b = 0; b < beam_scores.size(); ++b) {
        const std::span<const float> row = rows.subspan(b * vocab_size, vocab_size);
        // log-softmax rows: logsumexp and top_k in two passes (max with group maxima, exp)
        const double lse = !logprob_rows
                               ? kernels::logsumexp_top_k(row, k + extra_k, tie_policy::exactly_k,
                                                          ws.row_top, ws.group_max)
                           : kernels::max(row) > -std::numeric_limits<float>::infinity()
                               ? 0.0
                               : -std::numeric_limits<double>::infinity();
        if (!(lse > -std::numeric_limits<double>::infinity())) continue;  // no valid entry
        const std::size_t n =
            logprob_rows ? kernels::top_k(row, k + extra_k, tie_policy::exactly_k, ws.row_top)
                         : ws.row_top.size();
        double inf_logp = 0;
        if (std::isinf(lse)) {  // +inf entries: uniform over them
            std::size_t n_inf = 0;
            for (float v : row) n_inf += (v == std::numeric_limits<float>::infinity());
            inf_logp = -std::log(double(n_inf));
        }
        for (std::size_t i = 0; i < n; ++i) {
            const float x = ws.row_top.logits()[i];
            const token_id t = ws.row_top.ids()[i];
            double lp = std::isinf(lse)
                            ? (std::isinf(x) ? inf_logp : -std::numeric_limits<double>::infinity())
                            : double(x) - lse;
            if (!penalty.empty()) lp -= penalty[std::size_t(t)];
            if (lp == -std::numeric_limits<double>::infinity()) continue;
            const double s = beam_scores[b] + lp;
            ws.pool.push_back({s, s, std::uint32_t(b), t});
        }
        detail::prune_pool(ws.pool, k);
    }
    return detail::take_best(ws.pool, out);
}

/// The best hypothesis so far: beam search's streaming event.
struct beam_event {
    std::span<const token_id> tokens = {};  ///< its generated tokens (EOS excluded); valid until
                                            ///< the searcher's next advance() / cancel()
    double score = 0;       ///< finished: its score; running: sum / (current length)^lp
    bool finished = false;  ///< a finished hypothesis (else a running beam)
    std::size_t step = 0;   ///< steps taken so far
};

/// What one beam_searcher::advance() produced.
struct beam_step_events {
    step_status status = step_status::ok;
    /// For each request of the new requests(): the index, in the requests() this step consumed,
    /// of the beam it extends by one token (a paged KV cache forks that sequence). Valid until
    /// the next advance(); empty once done.
    std::span<const std::uint32_t> parents = {};
    std::optional<stop_reason> stop = {};  ///< set when the search ended (the best's reason)
    bool finished() const noexcept { return stop.has_value(); }
};

/// A beam streaming callback: `bool(const beam_event&)` (false stops: running beams become
/// hypotheses with reason callback) or `void(const beam_event&)`.
template <class F>
concept beam_callback = std::invocable<F&, const beam_event&>;

namespace detail {
struct no_beam_stream {
    void operator()(const beam_event&) const noexcept {}
};
template <class F>
bool call_best(F& f, const beam_event& e) {
    if constexpr (std::is_invocable_r_v<bool, F&, const beam_event&>)
        return f(e);
    else
        return f(e), true;
}
}  // namespace detail

/// A beam search in progress, driven step by step (beam_search() below runs it on a model):
/// next_call() names the running beams' sequences (slot = beam index); advance() consumes one
/// logits row per request and reports each new beam's parent; best() is the best hypothesis so
/// far (stream it); result() the n-best. Not copyable (its requests point into it); movable.
class beam_searcher {
public:
    /// \pre params valid (validated here), !prompt.empty(), vocab_size >= 1 (each rejected with
    /// a message otherwise)
    beam_searcher(const beam_search_params& params, std::size_t vocab_size,
                  std::span<const token_id> prompt)
        : p_(params),
          vocab_(vocab_size),
          prompt_(prompt.begin(), prompt.end()),
          t0_(std::chrono::steady_clock::now()) {
        p_.validate();
        if (prompt_.empty()) raise("beam_search: prompt must not be empty (add a BOS token)");
        if (vocab_ == 0) raise("beam_search: vocab_size must be >= 1");
        gs_ = p_.num_beams / p_.num_groups;
        // HF keeps max(2, 1 + #eos) * g so that g non-EOS candidates always remain.
        const std::size_t k =
            std::max<std::size_t>(2, 1 + std::min(p_.eos_ids.size(), vocab_)) * gs_;
        text_on_ = !p_.stop_strings.empty();
        const stop_string_matcher text0 =
            text_on_ ? stop_string_matcher(p_.stop_strings) : stop_string_matcher();
        processor_pipeline procs0 = detail::row_processors(p_.processing, p_.eos_ids);
        procs_on_ = procs0.active();
        hf_input_ = procs_on_ && p_.processor_input == beam_processor_input::logprobs;
        min_new_ = p_.processing.min_new_tokens;
        groups_.resize(p_.num_groups);
        for (std::size_t g = 0; g < p_.num_groups; ++g) {
            groups_[g].running.push_back({prompt_, 0.0, 0.0, 0, text0, procs0});
            groups_[g].nr = 1;
        }
        if (procs_on_) {
            processed_.resize(gs_ * vocab_);
            last_child_.resize(gs_);
        }
        ws_ = beam_step_workspace(vocab_, gs_, k + (p_.num_groups > 1 ? p_.num_beams : 0));
        top_.resize(k);
        if (p_.num_groups > 1 && p_.diversity_penalty > 0) penalty_.assign(vocab_, 0.f);
        if (p_.stochastic) gumbel_row_.resize(vocab_);
        rebuild_requests();
    }
    beam_searcher(const beam_searcher&) = delete;
    beam_searcher& operator=(const beam_searcher&) = delete;
    beam_searcher(beam_searcher&&) = default;
    beam_searcher& operator=(beam_searcher&&) = default;

    /// One logits row per running beam (every group), slot = beam index; empty when done().
    model_call next_call() const noexcept { return {.requests = requests_}; }
    /// Sequences to score now (prompt + generated), slot = beam index; empty when done().
    std::span<const sequence_request> requests() const noexcept { return requests_; }
    /// For each request of requests(): the index of its parent in the previous requests()
    /// (0 before the first step).
    std::span<const std::uint32_t> parents() const noexcept { return parents_; }
    /// True when every group stopped or max_new_tokens was reached.
    bool done() const noexcept { return requests_.empty(); }
    /// Steps taken so far (= generated length of the running beams).
    std::size_t steps() const noexcept { return step_; }
    std::size_t vocab_size() const noexcept { return vocab_; }

    /// Consumes one logits row per request of requests() (rows_needed(requests()) rows, in
    /// order) and advances.
    /// \return status bad_input (nothing consumed) when logits.size() < requests().size() *
    /// vocab_size(); finished when already done()
    beam_step_events advance(std::span<const float> logits) {
        if (done()) return {.status = step_status::finished};
        if (logits.size() / vocab_ < requests_.size()) return {.status = step_status::bad_input};
        ++calls_;
        rows_ += requests_.size();
        const std::size_t cur = step_ + 1;  // generated length of this step's candidates
        std::size_t row0 = 0;
        if (!penalty_.empty())
            for (token_id t : chosen_) penalty_[std::size_t(t)] = 0.f;
        chosen_.clear();
        const stop_checker stops(p_.eos_ids, p_.stop_sequences);
        for (std::size_t g = 0; g < groups_.size(); ++g) {
            group& G = groups_[g];
            if (G.done) continue;
            const std::size_t nb = G.nr, base = row0;
            std::span<const float> rows = logits.subspan(row0 * vocab_, nb * vocab_);
            row0 += nb;
            if (procs_on_) rows = process_rows(G, rows);
            scores_.clear();
            for (std::size_t b = 0; b < nb; ++b)
                scores_.push_back(p_.stochastic ? G.running[b].key : G.running[b].sum);
            const std::size_t n =
                p_.stochastic ? stochastic_candidates(G, rows, cur)
                              : beam_top_candidates(rows, vocab_, scores_, top_, ws_, penalty_,
                                                    penalty_.empty() ? 0 : chosen_.size(),
                                                    procs_on_ && hf_input_);
            G.nn = 0;
            if (n == 0) {  // no running beam of the group has a valid entry
                for (std::size_t b = 0; b < G.nr; ++b)
                    add_finished(G, G.running[b], -1, G.running[b].sum, step_,
                                 stop_reason::no_valid_token);
                G.nr = 0;
                G.done = true;
                continue;
            }
            double best_sum = -std::numeric_limits<double>::infinity();
            for (std::size_t r = 0; r < n; ++r) best_sum = std::max(best_sum, top_[r].sum);
            for (std::size_t r = 0; r < n && G.nn < gs_; ++r) {
                const beam_candidate& c = top_[r];
                const beam& parent = G.running[c.beam];
                if (stops.is_eos(c.token)) {
                    if (r < gs_) add_finished(G, parent, -1, c.sum, cur, stop_reason::eos);
                    continue;
                }
                std::optional<stop_reason> fin;
                const bool stops_active = cur >= min_new_;  // min_new_tokens holds every stop
                if (stops_active && stops.has_stop_sequences() &&
                    stops.completes_stop_sequence(generated(parent), c.token)) {
                    fin = stop_reason::stop_sequence;
                } else if (text_on_) {
                    scratch_ = parent.text;
                    if (scratch_.push(p_.detokenize(c.token), stops_active).matched)
                        fin = stop_reason::stop_string;
                }
                if (fin) {
                    if (r < gs_) add_finished(G, parent, c.token, c.sum, cur, *fin);
                    continue;
                }
                beam& nb2 = next_slot(G);
                nb2.tokens.assign(parent.tokens.begin(), parent.tokens.end());
                nb2.tokens.push_back(c.token);
                nb2.sum = c.sum;
                nb2.key = c.key;
                nb2.parent = std::uint32_t(base + c.beam);
                if (text_on_) nb2.text = std::move(scratch_);
            }
            if (procs_on_) fork_processors(G, base);
            for (std::size_t r = 0; r < G.nn; ++r) note_chosen(G.next[r].tokens.back());
            std::swap(G.running, G.next);
            std::swap(G.nr, G.nn);
            if (G.nr == 0)
                G.done = true;
            else if (!p_.stochastic)
                G.done = group_is_done(G, best_sum, cur);
            else if (p_.stopping == early_stopping::first_n)
                G.done = G.finished.size() >= gs_;
        }
        ++step_;
        if (step_ == 1) ttft_ = detail::seconds_since(t0_);
        if (step_ >= p_.max_new_tokens) end_running(stop_reason::max_new_tokens);
        rebuild_requests();
        return events();
    }
    /// advance() for engines that pass hidden rows to every stepper (ignored here).
    beam_step_events advance(std::span<const float> logits, std::span<const float> /*hidden*/) {
        return advance(logits);
    }

    /// Ends the search now: running beams become hypotheses with reason `why` (cancelled, or
    /// callback when a streaming callback stopped it). Finished when already done().
    beam_step_events cancel(stop_reason why = stop_reason::cancelled) {
        if (done()) return {.status = step_status::finished};
        end_running(why);
        rebuild_requests();
        return events();
    }

    /// The best hypothesis so far: the best finished one, or a running beam scored as if it
    /// finished now when that is better (ties: finished first, then earlier).
    beam_event best() const noexcept {
        beam_event e{.step = step_};
        bool have = false;
        for (const auto& G : groups_)
            for (const auto& h : G.finished)
                if (!have || h.score > e.score) {
                    e.tokens = h.tokens;
                    e.score = h.score;
                    e.finished = have = true;
                }
        for (const auto& G : groups_) {
            if (G.done) continue;
            for (std::size_t b = 0; b < G.nr; ++b) {
                const double s = normalise(G.running[b].sum, step_);
                if (!have || s > e.score) {
                    e.tokens = generated(G.running[b]);
                    e.score = s;
                    e.finished = false;
                    have = true;
                }
            }
        }
        return e;
    }

    /// The n-best over every group, best first (ties: earlier finished first); tokens and
    /// reason are the best hypothesis' (no_valid_token when there is none).
    beam_search_result result() const {
        beam_search_result res;
        std::vector<const beam_hypothesis*> all;
        for (const auto& G : groups_)
            for (const auto& h : G.finished) all.push_back(&h);
        std::stable_sort(
            all.begin(), all.end(),
            [](const beam_hypothesis* a, const beam_hypothesis* b) { return a->score > b->score; });
        for (std::size_t i = 0; i < all.size() && i < p_.num_return; ++i)
            res.hypotheses.push_back(*all[i]);
        res.steps = step_;
        res.model_calls = calls_;
        res.model_rows = rows_;
        if (!res.hypotheses.empty()) {
            res.tokens = res.hypotheses.front().tokens;
            res.reason = res.hypotheses.front().reason;
        } else {
            res.reason = stop_reason::no_valid_token;
        }
        res.stats.prompt_tokens = prompt_.size();
        res.stats.generated_tokens = res.tokens.size();
        res.stats.model_calls = calls_;
        res.stats.model_rows = rows_;
        res.stats.time_to_first_token = ttft_;
        res.stats.total_time = done() ? total_ : detail::seconds_since(t0_);
        res.stats.finish();
        return res;
    }

private:
    struct beam {
        std::vector<token_id> tokens;  // prompt + generated
        double sum = 0;
        double key = 0;            // stochastic: the Gumbel key G
        std::uint32_t parent = 0;  // index in the previous requests of the beam it extends
        stop_string_matcher text;  // with stop strings: the beam's text state
        processor_pipeline procs;  // with processors: the beam's processor state
    };
    struct group {
        std::vector<beam> running, next;        // storage reused across steps
        std::size_t nr = 0, nn = 0;             // live entries of running / next
        std::vector<beam_hypothesis> finished;  // at most gs_
        bool done = false;
    };

    std::span<const token_id> generated(const beam& b) const noexcept {
        return std::span<const token_id>(b.tokens).subspan(prompt_.size());
    }
    beam& next_slot(group& G) {
        if (G.nn == G.next.size()) G.next.emplace_back();
        return G.next[G.nn++];
    }
    void note_chosen(token_id t) {
        if (penalty_.empty()) return;
        penalty_[std::size_t(t)] += p_.diversity_penalty;
        chosen_.push_back(t);
    }
    double length_of(std::size_t generated) const noexcept {
        return double(generated + (p_.length_includes_prompt ? prompt_.size() : 0));
    }
    double normalise(double sum, std::size_t generated) const noexcept {
        // sum == 0 (every step certain) scores 0 even when length^lp under/overflows (0/0).
        if (sum == 0) return 0.0;
        return sum / std::pow(length_of(generated), double(p_.length_penalty));
    }
    /// A hypothesis from beam `b` (+ `last` when >= 0), `generated` tokens long for its score.
    void add_finished(group& G, const beam& b, token_id last, double sum, std::size_t generated,
                      stop_reason why) {
        const double score = normalise(sum, generated);
        if (G.finished.size() >= gs_) {
            auto worst =
                std::min_element(G.finished.begin(), G.finished.end(),
                                 [](const auto& a, const auto& c) { return a.score < c.score; });
            if (!(score > worst->score)) return;
            G.finished.erase(worst);
        }
        beam_hypothesis h;
        h.tokens.assign(b.tokens.begin() + std::ptrdiff_t(prompt_.size()), b.tokens.end());
        if (last >= 0) h.tokens.push_back(last);
        h.score = score;
        h.sum_logprobs = sum;
        h.eos = why == stop_reason::eos;
        h.reason = why;
        G.finished.push_back(std::move(h));
    }
    /// Every group still running ends: its running beams become hypotheses with reason `why`.
    void end_running(stop_reason why) {
        for (auto& G : groups_)
            if (!G.done) {
                for (std::size_t b = 0; b < G.nr; ++b)
                    add_finished(G, G.running[b], -1, G.running[b].sum, step_, why);
                G.done = true;
            }
    }
    bool group_is_done(const group& G, double best_sum, std::size_t cur) const noexcept {
        if (G.finished.size() < gs_) return false;
        if (p_.stopping == early_stopping::first_n) return true;
        double worst = std::numeric_limits<double>::infinity();
        for (const auto& h : G.finished) worst = std::min(worst, h.score);
        const std::size_t len = (p_.stopping == early_stopping::never && p_.length_penalty > 0)
                                    ? p_.max_new_tokens
                                    : cur;
        return worst >= normalise(best_sum, len);
    }
    beam_step_events events() noexcept {
        beam_step_events e{.parents = parents_};
        if (done()) {
            if (!ended_) {
                ended_ = true;
                total_ = detail::seconds_since(t0_);
            }
            bool have = false;
            double best = 0;
            stop_reason why = stop_reason::no_valid_token;
            for (const auto& G : groups_)
                for (const auto& h : G.finished)
                    if (!have || h.score > best) {
                        best = h.score;
                        why = h.reason;
                        have = true;
                    }
            e.stop = why;
        }
        return e;
    }

    /// The processed copy of each running beam's row (its processors, its history).
    std::span<const float> process_rows(group& G, std::span<const float> rows) {
        const std::size_t nb = G.nr;
        for (std::size_t b = 0; b < nb; ++b) {
            const std::span<float> row = std::span<float>(processed_).subspan(b * vocab_, vocab_);
            const std::span<const float> raw = rows.subspan(b * vocab_, vocab_);
            if (hf_input_)
                kernels::log_softmax(raw, row);
            else
                std::copy(raw.begin(), raw.end(), row.begin());
            G.running[b].procs.apply(row, sample_context{.sequence = p_.sequence,
                                                         .step = step_,
                                                         .history = G.running[b].tokens,
                                                         .prompt_length = prompt_.size()});
        }
        return std::span<const float>(processed_).first(nb * vocab_);
    }
    /// Each new beam takes its parent's processor state: a copy, or the parent's own when it is
    /// the parent's last child (the parent is not used after this step).
    void fork_processors(group& G, std::size_t base) {
        for (std::size_t i = 0; i < G.nn; ++i) last_child_[G.next[i].parent - base] = i;
        for (std::size_t i = 0; i < G.nn; ++i) {
            beam& parent = G.running[G.next[i].parent - base];
            if (last_child_[G.next[i].parent - base] == i)
                G.next[i].procs = std::move(parent.procs);
            else
                G.next[i].procs = parent.procs;
        }
    }

    /// Stochastic beams: child key G_c = -log(exp(-G_parent) - exp(-Z) + exp(-G~_c)) with
    /// G~_c = phi_c + Gumbel, Z = max_c G~_c (Kool et al. 2019, stable form); top 2g by key.
    std::size_t stochastic_candidates(group& G, std::span<const float> rows, std::size_t cur) {
        const std::size_t k = top_.size();
        ws_.pool.clear();
        for (std::size_t b = 0; b < G.nr; ++b) {
            const std::span<const float> row = rows.subspan(b * vocab_, vocab_);
            const double lse = kernels::logsumexp(row, p_.temperature);
            if (!std::isfinite(lse)) continue;
            rng_stream rs = make_stream(
                {p_.seed, p_.sequence,
                 detail::stochastic_beam_step(cur, std::size_t(&G - groups_.data()), b)},
                rng_purpose::gumbel);
            const double inv_t = 1.0 / double(p_.temperature);
            double z = -std::numeric_limits<double>::infinity();
            for (std::size_t v = 0; v < vocab_; ++v) {
                const float x = row[v];
                const double g = rs.gumbel();
                if (std::isnan(x) || x == -std::numeric_limits<float>::infinity()) {
                    gumbel_row_[v] = -std::numeric_limits<float>::infinity();
                    continue;
                }
                const double phi = G.running[b].sum + double(x) * inv_t - lse;
                gumbel_row_[v] = float(phi + g);
                z = std::max(z, double(gumbel_row_[v]));
            }
            const std::size_t n = kernels::top_k(std::span<const float>(gumbel_row_), k,
                                                 tie_policy::exactly_k, ws_.row_top);
            const double gp = G.running[b].key;
            for (std::size_t i = 0; i < n; ++i) {
                const token_id t = ws_.row_top.ids()[i];
                const double gt = ws_.row_top.logits()[i];
                // G_c = gp - v+ - log1p(exp(-|v|)), v = gp - gt + log1mexp(z - gt)
                double key;
                if (gt >= z)
                    key = gp;
                else {
                    const double v = gp - gt + detail::log1mexp(z - gt);
                    key = gp - std::max(v, 0.0) - std::log1p(std::exp(-std::abs(v)));
                }
                const double sum = G.running[b].sum + double(row[std::size_t(t)]) * inv_t - lse;
                ws_.pool.push_back({key, sum, std::uint32_t(b), t});
            }
            detail::prune_pool(ws_.pool, k);
        }
        return detail::take_best(ws_.pool, top_);
    }

    void rebuild_requests() {
        requests_.clear();
        parents_.clear();
        for (std::size_t g = 0; g < groups_.size(); ++g) {
            if (groups_[g].done) continue;
            for (std::size_t i = 0; i < groups_[g].nr; ++i) {
                requests_.push_back({groups_[g].running[i].tokens, 1, std::uint32_t(g * gs_ + i)});
                parents_.push_back(groups_[g].running[i].parent);
            }
        }
    }

    beam_search_params p_;
    std::size_t vocab_;
    std::vector<token_id> prompt_;
    std::size_t gs_ = 1;
    std::size_t step_ = 0;
    std::vector<group> groups_;
    beam_step_workspace ws_;
    std::vector<beam_candidate> top_;
    std::vector<double> scores_;
    std::vector<float> penalty_;
    std::vector<token_id> chosen_;
    std::vector<float> gumbel_row_;
    std::vector<sequence_request> requests_;
    std::vector<std::uint32_t> parents_;
    bool text_on_ = false;
    stop_string_matcher scratch_;
    bool procs_on_ = false;
    bool hf_input_ = false;  // processors on the log-softmax (beam_processor_input::logprobs)
    std::size_t min_new_ = 0;
    std::vector<float> processed_;         // with processors: the group's processed rows
    std::vector<std::size_t> last_child_;  // with processors: per parent, its last new beam
    std::size_t calls_ = 0, rows_ = 0;
    std::chrono::steady_clock::time_point t0_;
    double ttft_ = 0, total_ = 0;
    bool ended_ = false;
};

/// An engine's name for the beam stepper.
using beam_stepper = beam_searcher;

/// Runs beam search on `model` from `prompt`; returns the n-best hypotheses (best first), the
/// best one's tokens and reason, and statistics. `on_best` (optional) sees the best hypothesis
/// after every step (beam_event); returning false ends the search (reason callback). A loop
/// over beam_searcher.
/// \pre !prompt.empty() (rejected with a message otherwise)
template <language_model M, class OnBest = detail::no_beam_stream>
requires beam_callback<OnBest> beam_search_result beam_search(M& model,
                                                              std::span<const token_id> prompt,
                                                              const beam_search_params& params,
                                                              OnBest&& on_best = {}) {
    beam_searcher bs(params, std::size_t(model.vocab_size()), prompt);
    std::vector<float> logits(params.num_beams * bs.vocab_size());
    while (!bs.done()) {
        run_model_call(model, bs.next_call(), logits);
        bs.advance(logits);
        if constexpr (!std::is_same_v<std::remove_cvref_t<OnBest>, detail::no_beam_stream>)
            if (!detail::call_best(on_best, bs.best())) bs.cancel(stop_reason::callback);
    }
    return bs.result();
}

DECODEKIT_END_NAMESPACE
