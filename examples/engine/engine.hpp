#pragma once
/// \file engine/engine.hpp
/// A continuous-batching engine over the reference backend (examples/llama2), driving decodekit's
/// steppers the way an inference server does:
///   - requests arrive on a schedule (in engine steps) into a queue; the scheduler admits them
///     up to `max_batch` live requests: at any step (continuous batching), or only when the
///     previous batch has finished entirely (static batching);
///   - each engine step runs the draft calls of the requests in their propose stage (one call
///     per draft position, batched across every speculating request), then ONE target forward
///     for every live request: generation rows, every running beam, speculative verification
///     positions, concatenated into one model call (grouped by call kind; the workload's
///     strategies all need plain logits, so one call);
///   - KV slots are allocated per request from a free list and renamed in each call; a beam
///     step forks by parent index (the first child of a parent keeps its slot, the others get a
///     fresh slot the backend fills from the parent's cache); a finished or cancelled request
///     gives its slots back;
///   - each request can be replayed alone through its single-request driver (generate,
///     beam_search, speculative_decode): equal_alone says the tokens and stop reason match.
/// Requests are validated up front (their params' check(), a non-empty prompt): an invalid one
/// is rejected with the message and never runs.

#include <decodekit/decodekit.hpp>
#include <llama2/llama2.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dk_engine {

namespace dk = decodekit;
using dk::token_id;
using clock_type = std::chrono::steady_clock;
using model_type = dk_llama2::model;

/// The workload's request kinds.
enum class strategy : std::uint8_t {
    greedy,           ///< temperature 0
    llama_cpp,        ///< llama.cpp's chain: penalties, top-k, top-p, min-p, temperature
    hf,               ///< Hugging Face: repetition penalty, temperature, top-p
    logprobs,         ///< sampled, with the top-5 logprobs of every token
    stop_string,      ///< a text stop string held until min_new_tokens
    beam,             ///< beam search
    spec_ngram,       ///< speculative decoding, n-gram prompt-lookup drafts (greedy)
    spec_early_exit,  ///< speculative decoding, early-exit self-drafts (sampled, exact)
};
inline constexpr std::size_t strategy_count = 8;

inline const char* to_string(strategy s) noexcept {
    switch (s) {
        case strategy::greedy:
            return "greedy";
        case strategy::llama_cpp:
            return "llama_cpp_chain";
        case strategy::hf:
            return "hf_temp_top_p_rep";
        case strategy::logprobs:
            return "logprobs_top5";
        case strategy::stop_string:
            return "stop_string_min_new";
        case strategy::beam:
            return "beam";
        case strategy::spec_ngram:
            return "speculative_ngram";
        case strategy::spec_early_exit:
            return "speculative_early_exit";
    }
    return "unknown";
}

/// One request: its kind, prompt, arrival, and the params of its strategy (only the kind's own
/// params are used).
struct request_spec {
    std::size_t id = 0;
    strategy kind = strategy::greedy;
    std::vector<token_id> prompt;
    std::size_t arrival_step = 0;
    std::size_t cancel_after = 0;  ///< > 0: cancelled after this many engine steps live
    dk::generate_params gen = {};  ///< greedy, llama_cpp, hf, logprobs, stop_string
    dk::beam_search_params beam = {};
    dk::speculative_params spec = {};
    dk::basic_processing proc = {};    ///< speculative: target (and draft) processing
    dk::ngram_proposer ngram = {};     ///< spec_ngram
    int exit_layer = 1;                ///< spec_early_exit: the draft layer
    dk::draft_options draft_opt = {};  ///< spec_early_exit

    /// The first invalid field (named, with its range) or a bad prompt; nullopt when valid.
    std::optional<std::string> check(const model_type& m) const {
        if (prompt.empty()) return std::string("request.prompt: must not be empty");
        switch (kind) {
            case strategy::beam:
                return beam.check();
            case strategy::spec_ngram:
                if (auto e = spec.check()) return e;
                if (auto e = proc.check()) return e;
                return ngram.check();
            case strategy::spec_early_exit:
                if (auto e = spec.check()) return e;
                if (auto e = proc.check()) return e;
                if (exit_layer < 0 || std::size_t(exit_layer) > m.num_layers())
                    return dk::detail::range_message("request.exit_layer", "in [0, num_layers]",
                                                     double(exit_layer));
                return std::nullopt;
            default:
                return gen.check();
        }
    }
};

/// What a request produced.
struct outcome {
    std::vector<token_id> tokens;
    dk::stop_reason reason = dk::stop_reason::max_new_tokens;
    std::string text;                                               ///< streamed text
    std::vector<std::vector<dk::token_logprob>> top_logprobs = {};  ///< logprobs requests
};

/// A live request: its stepper behind one interface.
class live_request {
public:
    virtual ~live_request() = default;
    virtual dk::model_call next_call() const = 0;
    /// Consumes the call's rows; records the step's tokens and text.
    virtual dk::step_status advance(std::span<const float> rows, std::span<const float> hidden) = 0;
    virtual bool done() const = 0;
    virtual void cancel() = 0;
    virtual outcome result() const = 0;
    /// Runs the same request alone through its single-request driver.
    virtual outcome run_alone(model_type& m) const = 0;
    /// Beam search: the parents of the current requests() in the previous ones (empty else).
    virtual std::span<const std::uint32_t> parents() const { return {}; }
    /// Tokens emitted by the last advance() (beam: 1 per step while it runs).
    std::size_t step_tokens = 0;
    bool step_stopped = false;
};

namespace detail {

/// Generation (greedy and sampled kinds) through generation_stepper / generate().
class gen_request final : public live_request {
public:
    gen_request(const dk::generate_params& p, std::size_t V, std::span<const token_id> prompt)
        : p_(p), prompt_(prompt.begin(), prompt.end()), st_(p, V, prompt) {}
    dk::model_call next_call() const override { return st_.next_call(); }
    dk::step_status advance(std::span<const float> rows, std::span<const float>) override {
        const auto ev = st_.advance(rows);
        step_tokens = ev.tokens.size();
        step_stopped = ev.finished();
        text_.append(ev.text);
        if (p_.sampling.logprobs.top_n > 0 && step_tokens == 1) {
            const auto top = st_.last_sample().top;
            top_.emplace_back(top.begin(), top.end());
        }
        return ev.status;
    }
    bool done() const override { return st_.done(); }
    void cancel() override { text_.append(st_.cancel().text); }
    outcome result() const override {
        auto r = st_.result();
        return {std::move(r.tokens), r.reason, text_, top_};
    }
    outcome run_alone(model_type& m) const override {
        std::string text;
        auto r = dk::generate(m, prompt_, p_, [&](const dk::token_event& e) { text += e.text; });
        return {std::move(r.tokens), r.reason, std::move(text), {}};
    }

private:
    dk::generate_params p_;
    std::vector<token_id> prompt_;
    dk::generation_stepper st_;
    std::string text_;
    std::vector<std::vector<dk::token_logprob>> top_;
};

/// Beam search through beam_searcher / beam_search().
class beam_request final : public live_request {
public:
    beam_request(const dk::beam_search_params& p, std::size_t V, std::span<const token_id> prompt)
        : p_(p), prompt_(prompt.begin(), prompt.end()), st_(p, V, prompt) {}
    dk::model_call next_call() const override { return st_.next_call(); }
    dk::step_status advance(std::span<const float> rows, std::span<const float>) override {
        const auto ev = st_.advance(rows);
        parents_.assign(ev.parents.begin(), ev.parents.end());
        step_tokens = ev.status == dk::step_status::ok ? 1 : 0;
        step_stopped = ev.finished();
        return ev.status;
    }
    bool done() const override { return st_.done(); }
    void cancel() override {
        st_.cancel();
        parents_.clear();
    }
    outcome result() const override {
        auto r = st_.result();
        return {std::move(r.tokens), r.reason, {}, {}};
    }
    outcome run_alone(model_type& m) const override {
        auto r = dk::beam_search(m, prompt_, p_);
        return {std::move(r.tokens), r.reason, {}, {}};
    }
    std::span<const std::uint32_t> parents() const override { return parents_; }

private:
    dk::beam_search_params p_;
    std::vector<token_id> prompt_;
    dk::beam_searcher st_;
    std::vector<std::uint32_t> parents_;
};

/// Speculative decoding through speculative_stepper / speculative_decode(). The proposer and
/// processing live beside the stepper (it borrows them).
template <class Proposer>
class spec_request final : public live_request {
public:
    template <class MakeProposer>
    spec_request(const dk::speculative_params& p, const dk::basic_processing& proc, std::size_t V,
                 std::span<const token_id> prompt, MakeProposer make)
        : p_(p),
          proc0_(proc),
          proc_(proc),
          make_(make),
          prompt_(prompt.begin(), prompt.end()),
          proposer_(make(proc_)),
          st_(p, V, prompt, *proposer_, proc_) {}
    dk::model_call next_call() const override { return st_.next_call(); }
    dk::step_status advance(std::span<const float> rows, std::span<const float> hidden) override {
        const auto ev = st_.advance(rows, hidden);
        step_tokens = ev.tokens.size();
        step_stopped = ev.finished();
        text_.append(ev.text);
        return ev.status;
    }
    bool done() const override { return st_.done(); }
    void cancel() override { text_.append(st_.cancel().text); }
    outcome result() const override {
        auto r = st_.result();
        return {std::move(r.tokens), r.reason, text_, {}};
    }
    outcome run_alone(model_type& m) const override {
        dk::basic_processing proc = proc0_;
        auto proposer = make_(proc);
        std::string text;
        auto r = dk::speculative_decode(m, *proposer, prompt_, p_, proc,
                                        [&](const dk::token_event& e) { text += e.text; });
        return {std::move(r.tokens), r.reason, std::move(text), {}};
    }

private:
    using make_fn = std::function<std::unique_ptr<Proposer>(const dk::basic_processing&)>;
    dk::speculative_params p_;
    dk::basic_processing proc0_;
    dk::basic_processing proc_;
    make_fn make_;
    std::vector<token_id> prompt_;
    std::unique_ptr<Proposer> proposer_;
    dk::speculative_stepper<Proposer, dk::basic_processing> st_;
    std::string text_;
};

}  // namespace detail

using ee_proposer = dk::early_exit_proposer<model_type, dk::basic_processing>;

/// The stepper of a valid request. \pre spec.check(m) is nullopt
inline std::unique_ptr<live_request> make_live(const request_spec& spec, model_type& m) {
    const std::size_t V = m.vocab_size();
    switch (spec.kind) {
        case strategy::beam:
            return std::make_unique<detail::beam_request>(spec.beam, V, spec.prompt);
        case strategy::spec_ngram: {
            const dk::ngram_proposer ng = spec.ngram;
            return std::make_unique<detail::spec_request<dk::ngram_proposer>>(
                spec.spec, spec.proc, V, spec.prompt, [ng](const dk::basic_processing&) {
                    return std::make_unique<dk::ngram_proposer>(ng);
                });
        }
        case strategy::spec_early_exit: {
            const int layer = spec.exit_layer;
            const dk::draft_options opt = spec.draft_opt;
            model_type* mp = &m;
            return std::make_unique<detail::spec_request<ee_proposer>>(
                spec.spec, spec.proc, V, spec.prompt,
                [mp, layer, opt](const dk::basic_processing& proc) {
                    return std::make_unique<ee_proposer>(*mp, layer, proc, opt);
                });
        }
        default:
            return std::make_unique<detail::gen_request>(spec.gen, V, spec.prompt);
    }
}

/// A free list of the backend's slots.
class slot_pool {
public:
    explicit slot_pool(std::uint32_t capacity) : capacity_(capacity) {}
    /// A free slot, or nullopt when all `capacity` are taken.
    std::optional<std::uint32_t> take() {
        if (!free_.empty()) {
            const std::uint32_t s = free_.back();
            free_.pop_back();
            return s;
        }
        if (next_ < capacity_) return next_++;
        return std::nullopt;
    }
    void give(std::uint32_t s) { free_.push_back(s); }
    std::size_t in_use() const noexcept { return next_ - free_.size(); }
    std::uint32_t high_water() const noexcept { return next_; }

private:
    std::uint32_t capacity_;
    std::uint32_t next_ = 0;
    std::vector<std::uint32_t> free_;
};

enum class batching : std::uint8_t { continuous, static_batches };

struct engine_options {
    batching mode = batching::continuous;
    std::size_t max_batch = 8;  ///< live requests at most, in [1, 4096]

    /// The first invalid field, named with its range; nullopt when valid.
    std::optional<std::string> check() const {
        if (max_batch < 1 || max_batch > 4096)
            return dk::detail::range_message("engine_options.max_batch", "in [1, 4096]",
                                             double(max_batch));
        return std::nullopt;
    }
};

/// One request's record of a run.
struct request_record {
    const request_spec* spec = nullptr;
    std::optional<std::string> rejected;  ///< why it never ran (invalid request)
    outcome out;
    bool cancelled = false;
    double arrival = 0, first = -1, finish = 0;  ///< seconds since the run started
    std::size_t admitted_step = 0, finished_step = 0;
};

/// What a run measured.
struct run_stats {
    std::size_t steps = 0;                 ///< engine steps with work
    std::size_t target_calls = 0;          ///< target forwards
    std::size_t draft_calls = 0;           ///< draft calls (early exit)
    std::size_t largest_batch = 0;         ///< most live requests in one step
    std::size_t largest_rows = 0;          ///< most positions in one target call
    std::size_t largest_draft_rounds = 0;  ///< most draft calls of one kind in one step
    std::size_t slots_high_water = 0;
    double wall = 0;  ///< seconds from the first arrival to the last finish
    std::vector<double> step_seconds;
    /// Advances that did not return ok, or a backend slot used twice in one call (a finding).
    std::size_t bad_status = 0;
    std::uint64_t forwarded = 0, reused = 0;  ///< the backend's token forwards / cache hits
};

/// The engine: runs `specs` (sorted by arrival_step or not) on `m`.
class engine {
public:
    /// \pre o valid (rejected through decodekit::raise otherwise)
    engine(model_type& m, engine_options o)
        : m_(&m), o_(o), pool_(std::uint32_t(m.options().max_slots)) {
        dk::raise_if(o_.check());
    }

    std::vector<request_record> run(std::span<const request_spec> specs, run_stats& stats) {
        std::vector<request_record> rec(specs.size());
        std::vector<std::size_t> order(specs.size());
        for (std::size_t i = 0; i < specs.size(); ++i) {
            order[i] = i;
            rec[i].spec = &specs[i];
        }
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
            return specs[a].arrival_step < specs[b].arrival_step;
        });
        const auto counters0 = m_->counters();
        const auto t0 = clock_type::now();
        auto now = [&] { return std::chrono::duration<double>(clock_type::now() - t0).count(); };
        std::size_t next_arrival = 0, step = 0;
        std::deque<std::size_t> queue;
        live_.clear();
        stats = {};
        double first_arrival = -1, last_finish = 0;
        while (true) {
            // arrivals of this step
            while (next_arrival < order.size() && specs[order[next_arrival]].arrival_step <= step) {
                const std::size_t i = order[next_arrival++];
                rec[i].arrival = now();
                if (first_arrival < 0) first_arrival = rec[i].arrival;
                if (auto why = specs[i].check(*m_)) {
                    rec[i].rejected = std::move(why);
                    rec[i].first = rec[i].finish = rec[i].arrival;
                    continue;
                }
                queue.push_back(i);
            }
            // admission
            const bool may_admit = o_.mode == batching::continuous || live_.empty();
            while (may_admit && !queue.empty() && live_.size() < o_.max_batch) {
                const std::size_t i = queue.front();
                queue.pop_front();
                live_.push_back({i, make_live(specs[i], *m_), {}, {}, step});
                rec[i].admitted_step = step;
            }
            if (live_.empty()) {
                if (next_arrival == order.size() && queue.empty()) break;
                if (queue.empty()) step = specs[order[next_arrival]].arrival_step;  // idle
                continue;
            }
            const auto ts = clock_type::now();
            step_once(stats);
            stats.step_seconds.push_back(
                std::chrono::duration<double>(clock_type::now() - ts).count());
            stats.largest_batch = std::max(stats.largest_batch, live_.size());
            ++stats.steps;
            const double t = now();
            // first tokens, cancellations, retirements
            for (auto& l : live_) {
                request_record& r = rec[l.index];
                if (r.first < 0 && (l.req->step_tokens > 0 || l.req->done())) r.first = t;
                const request_spec& s = specs[l.index];
                if (!l.req->done() && s.cancel_after > 0 &&
                    step + 1 - l.admitted >= s.cancel_after) {
                    l.req->cancel();
                    r.cancelled = true;
                    if (r.first < 0) r.first = t;
                }
            }
            for (std::size_t k = 0; k < live_.size();) {
                if (!live_[k].req->done()) {
                    ++k;
                    continue;
                }
                request_record& r = rec[live_[k].index];
                r.out = live_[k].req->result();
                r.finish = t;
                r.finished_step = step;
                last_finish = std::max(last_finish, t);
                release(live_[k]);
                live_.erase(live_.begin() + std::ptrdiff_t(k));
            }
            ++step;
        }
        stats.slots_high_water = pool_.high_water();
        stats.forwarded = m_->counters().tokens_forwarded - counters0.tokens_forwarded;
        stats.reused = m_->counters().tokens_reused - counters0.tokens_reused;
        stats.wall = first_arrival < 0 ? 0 : last_finish - first_arrival;
        return rec;
    }

    /// Slots in use (0 after a run: every request gave its slots back).
    std::size_t slots_in_use() const noexcept { return pool_.in_use(); }

private:
    struct live_entry {
        std::size_t index;
        std::unique_ptr<live_request> req;
        std::vector<std::int64_t> phys;          // local slot -> backend slot (-1: none)
        std::vector<std::uint32_t> call_locals;  // local slots of the last call, in order
        std::size_t admitted = 0;
    };

    void release(live_entry& l) {
        for (auto& p : l.phys)
            if (p >= 0) pool_.give(std::uint32_t(p)), p = -1;
    }
    std::uint32_t phys_of(live_entry& l, std::uint32_t local) {
        if (local >= l.phys.size()) l.phys.resize(std::size_t(local) + 1, -1);
        if (l.phys[local] < 0) {
            const auto s = pool_.take();
            if (!s) dk::raise("engine: out of backend slots (raise max_slots)");
            l.phys[local] = *s;
        }
        return std::uint32_t(l.phys[local]);
    }
    /// After a beam step: the new beams inherit their parent's slot (first child) or get a fresh
    /// one; slots no child inherited go back to the pool.
    void fork_by_parents(live_entry& l) {
        const auto parents = l.req->parents();
        if (l.req->done()) return;
        const auto now_reqs = l.req->next_call().requests;
        std::vector<std::int64_t> next(l.phys.size(), -1);
        std::vector<char> inherited(l.call_locals.size(), 0);
        for (std::size_t i = 0; i < now_reqs.size() && i < parents.size(); ++i) {
            const std::uint32_t p = parents[i];
            const std::uint32_t local = now_reqs[i].slot;
            if (local >= next.size()) next.resize(std::size_t(local) + 1, -1);
            if (p < l.call_locals.size() && !inherited[p]) {
                inherited[p] = 1;
                next[local] = l.phys[l.call_locals[p]];
            }
        }
        for (std::size_t p = 0; p < l.call_locals.size(); ++p)
            if (!inherited[p]) pool_.give(std::uint32_t(l.phys[l.call_locals[p]]));
        l.phys = std::move(next);  // the other children take fresh slots in their next call
    }

    void step_once(run_stats& stats) {
        // 1. Draft phase: one call per draft position, batched across the speculating requests.
        for (std::size_t round = 0; round < 1024; ++round) {
            members_.clear();
            for (std::size_t k = 0; k < live_.size(); ++k) {
                const auto c = live_[k].req->next_call();
                if (!c.empty() && c.model == dk::model_role::draft) members_.push_back(k);
            }
            if (members_.empty()) break;
            call_groups(stats, true);
            stats.largest_draft_rounds = std::max(stats.largest_draft_rounds, round + 1);
        }
        // 2. Target phase: one forward for every live request.
        members_.clear();
        for (std::size_t k = 0; k < live_.size(); ++k) {
            live_[k].req->step_tokens = 0;
            const auto c = live_[k].req->next_call();
            if (!c.empty() && c.model == dk::model_role::target) members_.push_back(k);
        }
        call_groups(stats, false);
        // A live request that asked for nothing and is not done would never end: cancel it
        // (a finding; the steppers' contract says it cannot happen).
        for (auto& l : live_)
            if (!l.req->done() && l.req->next_call().empty()) {
                ++stats.bad_status;
                l.req->cancel();
            }
    }

    /// One model call per (kind, layers, heads) over members_.
    void call_groups(run_stats& stats, bool draft) {
        std::vector<char> used(members_.size(), 0);
        for (std::size_t a = 0; a < members_.size(); ++a) {
            if (used[a]) continue;
            const dk::model_call head = live_[members_[a]].req->next_call();
            group_.clear();
            for (std::size_t b = a; b < members_.size(); ++b) {
                if (used[b]) continue;
                const dk::model_call c = live_[members_[b]].req->next_call();
                if (c.kind == head.kind && c.heads == head.heads &&
                    std::equal(c.layers.begin(), c.layers.end(), head.layers.begin(),
                               head.layers.end())) {
                    used[b] = 1;
                    group_.push_back(members_[b]);
                }
            }
            call_one(group_, head, stats, draft);
        }
    }

    void call_one(const std::vector<std::size_t>& group, const dk::model_call& head,
                  run_stats& stats, bool draft) {
        merged_.clear();
        merged_mtp_.clear();
        calls_.clear();
        for (std::size_t k : group) {
            live_entry& l = live_[k];
            const dk::model_call c = l.req->next_call();
            calls_.push_back(c);
            l.call_locals.clear();
            for (auto r : c.requests) {
                l.call_locals.push_back(r.slot);
                r.slot = phys_of(l, r.slot);
                merged_.push_back(r);
            }
            for (auto r : c.mtp) {  // MTP module steps (mtp_logits calls) carry slots too
                r.slot = phys_of(l, r.slot);
                merged_mtp_.push_back(r);
            }
        }
        // Two sequences of one call never share a backend slot (each live sequence owns its own).
        seen_.assign(m_->options().max_slots, 0);
        for (const auto& r : merged_)
            if (r.slot < seen_.size() && seen_[r.slot]++) ++stats.bad_status;
        dk::model_call c = head;
        c.requests = merged_;
        c.mtp = merged_mtp_;
        const std::size_t V = m_->vocab_size(), H = m_->hidden_size();
        logits_.resize(c.logits_rows() * V);
        hidden_.resize(c.hidden_rows() * H);
        if (!dk::run_model_call(*m_, c, logits_, hidden_)) ++stats.bad_status;
        if (draft)
            ++stats.draft_calls;
        else {
            ++stats.target_calls;
            stats.largest_rows = std::max(stats.largest_rows, c.positions());
        }
        std::size_t row = 0, hrow = 0;
        for (std::size_t g = 0; g < group.size(); ++g) {
            live_entry& l = live_[group[g]];
            const std::size_t n = calls_[g].logits_rows(), nh = calls_[g].hidden_rows();
            const auto st =
                l.req->advance(std::span<const float>(logits_).subspan(row * V, n * V),
                               std::span<const float>(hidden_).subspan(hrow * H, nh * H));
            if (st != dk::step_status::ok) ++stats.bad_status;
            if (!l.req->parents().empty()) fork_by_parents(l);
            row += n;
            hrow += nh;
        }
    }

    model_type* m_;
    engine_options o_;
    slot_pool pool_;
    std::vector<live_entry> live_;
    std::vector<std::size_t> members_, group_;
    std::vector<dk::sequence_request> merged_;
    std::vector<dk::mtp_request> merged_mtp_;
    std::vector<dk::model_call> calls_;
    std::vector<float> logits_, hidden_;
    std::vector<char> seen_;
};

}  // namespace dk_engine
