// Engine-driven decoding: every strategy's stepper inside a continuous-batching loop gives the
// tokens of its single-request driver whatever the interleaving and batch order; batched
// drafting; beam parent indices; the EOS rule, streaming, cancellation and size checks of every
// stepper.
#include "dk_test.hpp"
#include "engine_loop.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_steppers {

using namespace decodekit;
using dk_test::engine_loop;
using dk_test::job_of;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {

/// One request of the interleaving test: start() builds its stepper and returns its job;
/// check() compares the stepper's result with its driver run alone.
struct request_case {
    std::function<dk_test::engine_job(std::size_t start)> start;
    std::function<void()> check;
};

request_case generate_case(toy_model& m, std::vector<token_id> prompt, generate_params p) {
    auto st = std::make_shared<std::unique_ptr<generation_stepper>>();
    return {[=, &m](std::size_t start) {
                *st = std::make_unique<generation_stepper>(p, m.vocab_size(), prompt);
                return job_of(**st, start);
            },
            [=, &m] {
                const auto want = generate(m, prompt, p);
                const auto got = (*st)->result();
                CHECK((*st)->done());
                CHECK(got.tokens == want.tokens);
                CHECK(got.reason == want.reason);
                CHECK(got.stats.model_calls == want.stats.model_calls);
            }};
}

request_case beam_case(toy_model& m, std::vector<token_id> prompt, beam_search_params p) {
    auto st = std::make_shared<std::unique_ptr<beam_searcher>>();
    return {[=, &m](std::size_t start) {
                *st = std::make_unique<beam_searcher>(p, m.vocab_size(), prompt);
                return job_of(**st, start);
            },
            [=, &m] {
                const auto want = beam_search(m, prompt, p);
                const auto got = (*st)->result();
                CHECK(got.steps == want.steps);
                CHECK(got.tokens == want.tokens);
                CHECK(got.reason == want.reason);
                REQUIRE(got.hypotheses.size() == want.hypotheses.size());
                for (std::size_t i = 0; i < got.hypotheses.size(); ++i) {
                    CHECK(got.hypotheses[i].tokens == want.hypotheses[i].tokens);
                    CHECK(got.hypotheses[i].score == want.hypotheses[i].score);
                    CHECK(got.hypotheses[i].reason == want.hypotheses[i].reason);
                }
            }};
}

request_case contrastive_case(toy_model& m, std::vector<token_id> prompt, contrastive_params p) {
    auto st = std::make_shared<std::unique_ptr<contrastive_stepper>>();
    return {[=, &m](std::size_t start) {
                *st = std::make_unique<contrastive_stepper>(p, m.vocab_size(), m.hidden_size(),
                                                            prompt);
                return job_of(**st, start);
            },
            [=, &m] {
                const auto want = contrastive_search(m, prompt, p);
                const auto got = (*st)->result();
                CHECK(got.tokens == want.tokens);
                CHECK(got.reason == want.reason);
                CHECK(got.model_rows == want.model_rows);
            }};
}

request_case dola_case(toy_model& m, std::vector<token_id> prompt, dola_params p) {
    auto st = std::make_shared<std::unique_ptr<dola_stepper>>();
    return {[=, &m](std::size_t start) {
                *st = std::make_unique<dola_stepper>(p, m.vocab_size(), m.num_layers(), prompt);
                return job_of(**st, start);
            },
            [=, &m] {
                const auto want = dola_decode(m, prompt, p);
                const auto got = (*st)->result();
                CHECK(got.tokens == want.tokens);
                CHECK(got.premature_layers == want.premature_layers);
                CHECK(got.reason == want.reason);
            }};
}

template <class Proposer>
request_case speculative_case(toy_model& target, std::vector<token_id> prompt, speculative_params p,
                              basic_processing proc, std::function<Proposer()> make,
                              const void* draft_model = nullptr) {
    struct state {
        basic_processing proc;
        std::optional<Proposer> proposer;
        std::unique_ptr<speculative_stepper<Proposer, basic_processing>> st;
    };
    auto s = std::make_shared<state>();
    return {[=, &target](std::size_t start) {
                s->proc = proc;
                s->proposer.emplace(make());
                s->st = std::make_unique<speculative_stepper<Proposer, basic_processing>>(
                    p, target.vocab_size(), prompt, *s->proposer, s->proc);
                return job_of(*s->st, start, draft_model);
            },
            [=, &target] {
                basic_processing proc2 = proc;
                Proposer proposer2 = make();
                const auto want = speculative_decode(target, proposer2, prompt, p, proc2);
                const auto got = s->st->result();
                CHECK(got.tokens == want.tokens);
                CHECK(got.reason == want.reason);
                CHECK(got.stats.rounds == want.stats.rounds);
                CHECK(got.stats.drafted == want.stats.drafted);
                CHECK(got.stats.accepted == want.stats.accepted);
                CHECK(got.stats.draft_calls == want.stats.draft_calls);
            }};
}

/// Speculative decoding whose target processing is a sampler with processors (penalties,
/// no_repeat_ngram, min_new_tokens): the stepper in the loop equals the driver.
template <class Proposer>
request_case speculative_sampler_case(toy_model& target, std::vector<token_id> prompt,
                                      speculative_params p, sampling_params sp,
                                      std::function<Proposer()> make,
                                      const void* draft_model = nullptr) {
    struct state {
        std::optional<sampler> smp;
        std::optional<sampler_processing> proc;
        std::optional<Proposer> proposer;
        std::unique_ptr<speculative_stepper<Proposer, sampler_processing>> st;
    };
    auto s = std::make_shared<state>();
    return {[=, &target](std::size_t start) {
                s->smp.emplace(sp, target.vocab_size());
                s->proc.emplace(*s->smp);
                s->proposer.emplace(make());
                s->st = std::make_unique<speculative_stepper<Proposer, sampler_processing>>(
                    p, target.vocab_size(), prompt, *s->proposer, *s->proc);
                return job_of(*s->st, start, draft_model);
            },
            [=, &target] {
                sampler smp2(sp, target.vocab_size());
                sampler_processing proc2(smp2);
                Proposer proposer2 = make();
                const auto want = speculative_decode(target, proposer2, prompt, p, proc2);
                const auto got = s->st->result();
                CHECK(got.tokens == want.tokens);
                CHECK(got.reason == want.reason);
                CHECK(got.stats.drafted == want.stats.drafted);
                CHECK(got.stats.accepted == want.stats.accepted);
            }};
}

const toy_model_config tc{.vocab_size = 16,
                          .hidden_size = 5,
                          .num_layers = 4,
                          .num_heads = 3,
                          .seed = 21,
                          .scale = 2.f,
                          .eos_id = 15,
                          .eos_bias = 0.5f};

std::vector<request_case> mixed_requests(toy_model& target, toy_model& draft) {
    const std::vector<token_id> p1 = {1, 2, 3}, p2 = {4, 4, 9, 1}, p3 = {7};
    const std::vector<token_id> rep = {3, 1, 4, 1, 5, 3, 1, 4, 1, 5, 3, 1};
    using dmp = draft_model_proposer<toy_model, basic_processing>;
    using eep = early_exit_proposer<toy_model, basic_processing>;
    using mtp = mtp_proposer<toy_model, basic_processing>;
    const basic_processing sampled{.temperature = 0.9f, .top_k = 6};
    const basic_processing greedy{.temperature = 0.f};
    toy_model* t = &target;
    toy_model* d = &draft;
    return {
        generate_case(target, p1,
                      {.sampling = {.temperature = 0.f}, .max_new_tokens = 14, .eos_ids = {15}}),
        generate_case(target, p2,
                      {.sampling = {.temperature = 0.9f, .top_k = 5, .seed = 3},
                       .max_new_tokens = 20,
                       .stop_sequences = {{2, 2}},
                       .sequence = 11}),
        generate_case(target, p3,
                      {.sampling = {.temperature = 1.1f, .top_p = 0.9f, .seed = 4},
                       .max_new_tokens = 9,
                       .eos_ids = {15},
                       .sequence = 12}),
        beam_case(target, p1,
                  {.num_beams = 3, .num_return = 3, .max_new_tokens = 8, .eos_ids = {15}}),
        beam_case(target, p3,
                  {.num_beams = 4,
                   .num_return = 2,
                   .max_new_tokens = 6,
                   .eos_ids = {15},
                   .num_groups = 2,
                   .diversity_penalty = 0.5f}),
        beam_case(target, p2,
                  {.num_beams = 3,
                   .num_return = 3,
                   .max_new_tokens = 5,
                   .stochastic = true,
                   .seed = 9,
                   .sequence = 2}),
        beam_case(target, rep,  // processors per beam (forked with the beam)
                  {.num_beams = 3,
                   .num_return = 2,
                   .max_new_tokens = 8,
                   .eos_ids = {15},
                   .processing = {.min_new_tokens = 3,
                                  .penalties = {.repetition = 1.4f},
                                  .no_repeat_ngram_size = 2}}),
        beam_case(target, p2,
                  {.num_beams = 4,
                   .num_return = 2,
                   .max_new_tokens = 6,
                   .num_groups = 2,
                   .diversity_penalty = 0.3f,
                   .processing = {.no_repeat_ngram_size = 1, .banned_sequences = {{4, 9}}}}),
        contrastive_case(target, p2, {.top_k = 3, .alpha = 0.6f, .max_new_tokens = 10}),
        contrastive_case(target, rep,
                         {.top_k = 3,
                          .alpha = 0.5f,
                          .max_new_tokens = 10,
                          .eos_ids = {15},
                          .processing = {.min_new_tokens = 4,
                                         .penalties = {.repetition = 1.5f},
                                         .no_repeat_ngram_size = 2}}),
        dola_case(target, rep,
                  {.layers = dola_layer_set::custom,
                   .custom_layers = {0, 2},
                   .sampling = {.temperature = 0.8f,
                                .seed = 3,
                                .min_new_tokens = 3,
                                .no_repeat_ngram_size = 2},
                   .max_new_tokens = 9,
                   .eos_ids = {15},
                   .sequence = 4}),
        contrastive_case(target, p1,
                         {.top_k = 4, .alpha = 0.4f, .max_new_tokens = 12, .eos_ids = {15}}),
        dola_case(target, p3,
                  {.layers = dola_layer_set::custom,
                   .custom_layers = {0, 2},
                   .sampling = {.temperature = 1.f, .seed = 8},
                   .max_new_tokens = 10,
                   .sequence = 5}),
        dola_case(target, p1,
                  {.layers = dola_layer_set::low, .max_new_tokens = 8, .eos_ids = {15}}),
        speculative_case<dmp>(
            target, p2, {.max_new_tokens = 16, .seed = 31, .sequence = 3, .draft_length = 3},
            sampled, [d, sampled] { return dmp(*d, sampled, {.mode = draft_mode::sample}); }, d),
        speculative_case<dmp>(
            target, p1,
            {.max_new_tokens = 18,
             .eos_ids = {15},
             .rule = verification::greedy,
             .draft_length = 2,
             .adaptive = true},
            greedy, [d, greedy] { return dmp(*d, greedy, {.slot = 1}); }, d),
        speculative_case<eep>(
            target, p3, {.max_new_tokens = 12, .seed = 5, .sequence = 6, .draft_length = 2},
            sampled, [t, sampled] { return eep(*t, 2, sampled, {.mode = draft_mode::sample}); }),
        speculative_case<mtp>(
            target, p1, {.max_new_tokens = 10, .rule = verification::greedy, .draft_length = 3},
            greedy, [t, greedy] { return mtp(*t, 0, greedy, {.slot = 1}); }),
        speculative_sampler_case<dmp>(
            target, rep,
            {.max_new_tokens = 14, .eos_ids = {15}, .seed = 7, .sequence = 8, .draft_length = 3},
            {.temperature = 0.9f,
             .seed = 7,
             .min_new_tokens = 4,
             .eos_ids = {15},
             .penalties = {.repetition = 1.5f},
             .no_repeat_ngram_size = 2},
            [d, sampled] { return dmp(*d, sampled, {.mode = draft_mode::sample}); }, d),
        speculative_sampler_case<ngram_proposer>(
            target, rep, {.max_new_tokens = 12, .rule = verification::greedy, .draft_length = 4},
            {.temperature = 0.f, .penalties = {.repetition = 1.3f}, .no_repeat_ngram_size = 3},
            [] { return ngram_proposer{.max_n = 2}; }),
        speculative_case<ngram_proposer>(target, rep,
                                         {.max_new_tokens = 12, .seed = 2, .draft_length = 4},
                                         sampled, [] { return ngram_proposer{.max_n = 2}; }),
    };
}

}  // namespace

TEST_CASE("steppers: every request gets its driver's tokens, whatever the interleaving",
          "[steppers]") {
    toy_model target(tc);
    toy_model draft = toy_model::draft_of(tc, 0.6f);
    std::size_t mixed = 0;
    for (std::uint64_t seed = 1; seed <= 8; ++seed) {
        INFO("shuffle seed " << seed);
        auto cases = mixed_requests(target, draft);
        engine_loop<toy_model> loop(target, &draft, seed);
        std::mt19937_64 rng(seed * 7919);
        for (auto& c : cases) loop.add(c.start(seed == 1 ? 0 : rng() % 6));  // joins at a step
        loop.run();
        mixed += loop.largest_batch() >= 4;
        for (auto& c : cases) c.check();
    }
    CHECK(mixed == 8);  // the batches really mixed several requests
}

TEST_CASE("steppers: one draft-model call per draft position serves every speculating request",
          "[steppers][speculative]") {
    toy_model target(tc);
    const basic_processing greedy{.temperature = 0.f};
    using dmp = draft_model_proposer<toy_model, basic_processing>;
    constexpr std::size_t n = 5;
    for (float w : {0.f, 0.8f}) {  // a perfect draft (lockstep), then an imperfect one
        INFO("draft perturbation " << w);
        toy_model draft = toy_model::draft_of(tc, w);
        std::vector<std::unique_ptr<dmp>> proposers;
        std::vector<basic_processing> procs(n, greedy);
        std::vector<std::unique_ptr<speculative_stepper<dmp, basic_processing>>> st;
        engine_loop<toy_model> loop(target, &draft, 3);
        for (std::size_t i = 0; i < n; ++i) {
            proposers.push_back(std::make_unique<dmp>(draft, greedy));
            const std::vector<token_id> prompt = {token_id(i), token_id(2 * i % 16), 5};
            st.push_back(std::make_unique<speculative_stepper<dmp, basic_processing>>(
                speculative_params{.max_new_tokens = 13, .draft_length = 3}, 16, prompt,
                *proposers[i], procs[i]));
            loop.add(job_of(*st[i], 0, &draft));
        }
        target.reset_counters();
        draft.reset_counters();
        const std::size_t steps = loop.run();
        std::size_t sum_draft_calls = 0, max_steps = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const auto r = st[i]->result();
            CHECK(r.tokens.size() == 13);
            sum_draft_calls += r.stats.draft_calls;
            max_steps = std::max(max_steps, r.stats.draft_calls + r.stats.rounds);
        }
        CHECK(draft.sequences == sum_draft_calls);  // every draft position was computed once
        // Each request needs one call per engine step; the loop makes at most one draft call
        // and one target call per step, whatever mix of stages its requests are in.
        CHECK(steps == max_steps);
        CHECK(draft.calls <= steps);
        CHECK(target.calls <= steps);
        CHECK(draft.calls < sum_draft_calls);
        CHECK(loop.largest_batch() == n);
        if (w == 0.f) {  // all accepted: 4 + 4 + 4 + 1 tokens, in lockstep
            const auto r0 = st[0]->result();
            CHECK(r0.stats.rounds == 4);
            CHECK(r0.stats.draft_calls == 9);
            CHECK(target.calls == 4);  // one target call verifies every request
            CHECK(draft.calls == 9);   // one draft call per position serves all five
        }
    }
}

TEST_CASE("steppers: one MTP module call per draft position serves every speculating request",
          "[steppers][speculative][mtp]") {
    toy_model m(tc);
    REQUIRE(m.mtp_depth() >= 1);
    const basic_processing greedy{.temperature = 0.f};
    using mp = mtp_module_proposer<toy_model>;
    static_assert(stepwise_proposer<mp> && target_hidden_proposer<mp>);
    constexpr std::size_t n = 5;
    const speculative_params sp{.max_new_tokens = 17, .draft_length = 3};
    std::vector<std::vector<token_id>> prompts;
    std::vector<speculative_result> alone;
    std::size_t sum_module_steps = 0;
    for (std::size_t i = 0; i < n; ++i) {
        prompts.push_back({token_id(i), token_id(3 * i % 16), 5, token_id(i % 4)});
        mp p(m, greedy);
        basic_processing proc = greedy;
        m.reset_counters();
        alone.push_back(speculative_decode(m, p, prompts[i], sp, proc));
        sum_module_steps += m.mtp_log.size();
    }
    REQUIRE(sum_module_steps > 2 * n);
    std::vector<std::unique_ptr<mp>> proposers;
    std::vector<basic_processing> procs(n, greedy);
    std::vector<std::unique_ptr<speculative_stepper<mp, basic_processing>>> st;
    engine_loop<toy_model> loop(m, nullptr, 11);
    for (std::size_t i = 0; i < n; ++i) {
        proposers.push_back(std::make_unique<mp>(m, greedy));
        st.push_back(std::make_unique<speculative_stepper<mp, basic_processing>>(
            sp, 16, prompts[i], *proposers[i], procs[i]));
        loop.add(job_of(*st[i], i % 2));
    }
    m.reset_counters();
    loop.run();
    for (std::size_t i = 0; i < n; ++i) {
        const auto r = st[i]->result();
        CHECK(r.tokens == alone[i].tokens);
        CHECK(r.stats.draft_calls == alone[i].stats.draft_calls);
        CHECK(r.stats.accepted == alone[i].stats.accepted);
    }
    // every module step was computed once, in fewer calls than steps (batched across requests)
    CHECK(m.mtp_log.size() == sum_module_steps);
    CHECK(loop.calls_of(call_kind::mtp_logits) < sum_module_steps);
    CHECK(loop.calls_of(call_kind::mtp_logits) > 0);
}

TEST_CASE("mtp_module_proposer: a short hidden row ends the round's drafting",
          "[steppers][speculative][mtp]") {
    toy_model m(tc);
    const basic_processing greedy{.temperature = 0.f};
    mtp_module_proposer<toy_model> p(m, greedy);
    const std::vector<token_id> ctx = {1, 2, 3};
    draft_buffer out;
    p.begin(draft_request{ctx, 3, rng_key{}, 3}, out);
    REQUIRE(p.draft_call().kind == call_kind::logits_and_hidden);  // no handed-over h(0, i)
    const std::vector<float> row(16, 0.f), hidden(m.hidden_size(), 0.f);
    p.advance(row, hidden, out);
    REQUIRE(p.draft_call().kind == call_kind::mtp_logits);
    CHECK(p.draft_call().mtp.size() == 1);
    CHECK(p.draft_call().hidden_rows() == 1);
    p.advance(row, std::span<const float>(hidden).first(1), out);  // short: drafting ends
    CHECK(p.draft_call().empty());
    CHECK(out.tokens.empty());
}

TEST_CASE("steppers: beam parent indices replay to the same sequences and hypotheses",
          "[steppers][beam]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {2, 7};
    const beam_search_params variants[] = {
        {.num_beams = 4, .num_return = 4, .max_new_tokens = 9, .eos_ids = {15}},
        {.num_beams = 6,
         .num_return = 3,
         .max_new_tokens = 7,
         .num_groups = 3,
         .diversity_penalty = 1.f},
        {.num_beams = 3, .num_return = 3, .max_new_tokens = 8, .stochastic = true, .seed = 4},
        {.num_beams = 5,
         .num_return = 2,
         .max_new_tokens = 8,
         .eos_ids = {15},
         .stop_sequences = {{3, 3}, {11}}},
    };
    for (const auto& p : variants) {
        beam_searcher bs(p, m.vocab_size(), prompt);
        // The engine's copy of each request's sequence, forked from the parent at each step.
        std::vector<std::vector<token_id>> cache;
        for (const auto& r : bs.requests()) cache.emplace_back(r.tokens.begin(), r.tokens.end());
        std::size_t forks = 0;
        while (!bs.done()) {
            std::vector<float> rows;
            for (const auto& r : bs.requests()) {
                const auto x = m.logits_of(r.tokens);
                rows.insert(rows.end(), x.begin(), x.end());
            }
            const auto ev = bs.advance(rows);
            REQUIRE(ev.status == step_status::ok);
            REQUIRE(ev.parents.size() == bs.requests().size());
            std::vector<std::vector<token_id>> next;
            for (std::size_t i = 0; i < bs.requests().size(); ++i) {
                REQUIRE(ev.parents[i] < cache.size());
                auto seq = cache[ev.parents[i]];  // fork the parent's sequence
                seq.push_back(bs.requests()[i].tokens.back());
                CHECK(std::equal(seq.begin(), seq.end(), bs.requests()[i].tokens.begin(),
                                 bs.requests()[i].tokens.end()));
                forks += ev.parents[i] != i;
                next.push_back(std::move(seq));
            }
            cache = std::move(next);
        }
        CHECK(forks > 0);  // beams really moved between parents
        const auto r = bs.result();
        const auto want = beam_search(m, prompt, p);
        REQUIRE(r.hypotheses.size() == want.hypotheses.size());
        for (std::size_t i = 0; i < r.hypotheses.size(); ++i)
            CHECK(r.hypotheses[i].tokens == want.hypotheses[i].tokens);
    }
}

TEST_CASE("steppers: the EOS rule holds for every strategy", "[steppers][eos]") {
    // EOS (15) is likely: every strategy meets it within the budget for some prompt.
    toy_model_config c = tc;
    c.eos_bias = 2.5f;
    toy_model m(c);
    std::size_t eos_seen[5] = {};
    for (token_id first = 0; first < 8; ++first) {
        const std::vector<token_id> prompt = {first, 15, 3};  // EOS in the prompt is ordinary
        std::vector<token_id> streamed;
        auto stream = [&](token_id t) { streamed.push_back(t); };
        auto no_eos = [](const std::vector<token_id>& t) {
            return std::find(t.begin(), t.end(), 15) == t.end();
        };
        {
            streamed.clear();
            const auto r = generate(
                m, prompt,
                {.sampling = {.temperature = 0.f}, .max_new_tokens = 12, .eos_ids = {15}}, stream);
            CHECK(no_eos(r.tokens));
            CHECK(streamed == r.tokens);
            eos_seen[0] += r.reason == stop_reason::eos;
        }
        {
            streamed.clear();
            const auto r = contrastive_search(
                m, prompt, {.top_k = 3, .alpha = 0.3f, .max_new_tokens = 12, .eos_ids = {15}},
                stream);
            CHECK(no_eos(r.tokens));
            CHECK(streamed == r.tokens);
            CHECK(r.eos == (r.reason == stop_reason::eos));
            eos_seen[1] += r.eos;
        }
        {
            streamed.clear();
            const auto r = dola_decode(
                m, prompt, {.layers = dola_layer_set::high, .max_new_tokens = 12, .eos_ids = {15}},
                stream);
            CHECK(no_eos(r.tokens));
            CHECK(streamed == r.tokens);
            CHECK(r.premature_layers.size() == r.tokens.size());
            eos_seen[2] += r.eos;
        }
        {
            streamed.clear();
            basic_processing proc{.temperature = 0.f};
            ngram_proposer ng{};
            const auto r = speculative_decode(
                m, ng, prompt, {.max_new_tokens = 12, .eos_ids = {15}}, proc, stream);
            CHECK(no_eos(r.tokens));
            CHECK(streamed == r.tokens);
            eos_seen[3] += r.reason == stop_reason::eos;
        }
        {
            const auto r = beam_search(
                m, prompt,
                {.num_beams = 3, .num_return = 3, .max_new_tokens = 12, .eos_ids = {15}});
            for (const auto& h : r.hypotheses) {
                CHECK(no_eos(h.tokens));
                CHECK(h.eos == (h.reason == stop_reason::eos));
                eos_seen[4] += h.eos;
            }
        }
    }
    for (std::size_t i = 0; i < 5; ++i) {
        INFO("strategy " << i);
        CHECK(eos_seen[i] > 0);  // the rule was exercised
    }
}

TEST_CASE("steppers: cancel() ends each strategy between steps", "[steppers][cancel]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {5, 6};
    auto drive = [&](auto& st, std::size_t steps) {
        for (std::size_t i = 0; i < steps && !st.done(); ++i) {
            const model_call c = st.next_call();
            std::vector<float> rows(c.logits_rows() * m.vocab_size()),
                hidden(c.hidden_rows() * m.hidden_size());
            REQUIRE(run_model_call(m, c, rows, hidden));
            REQUIRE(st.advance(rows, hidden).status == step_status::ok);
        }
    };
    auto check_cancelled = [&](auto& st) {
        const auto ev = st.cancel();
        CHECK(ev.status == step_status::ok);
        CHECK(st.done());
        CHECK(st.next_call().empty());
        CHECK(st.cancel().status == step_status::finished);
        const std::vector<float> rows(64 * m.vocab_size(), 0.f);
        CHECK(st.advance(rows, rows).status == step_status::finished);
        return st.result();
    };
    {
        const generate_params p{.sampling = {.temperature = 0.f}, .max_new_tokens = 10};
        generation_stepper st(p, 16, prompt);
        drive(st, 3);
        const auto r = check_cancelled(st);
        CHECK(r.reason == stop_reason::cancelled);
        const auto full = generate(m, prompt, p);
        CHECK(r.tokens == std::vector<token_id>(full.tokens.begin(), full.tokens.begin() + 3));
    }
    {
        contrastive_stepper st({.top_k = 3, .max_new_tokens = 10}, 16, m.hidden_size(), prompt);
        drive(st, 4);  // the prompt call, then 3 tokens
        const auto r = check_cancelled(st);
        CHECK(r.reason == stop_reason::cancelled);
        CHECK(r.tokens.size() == 3);
    }
    {
        dola_stepper st({.max_new_tokens = 10}, 16, m.num_layers(), prompt);
        drive(st, 2);
        const auto r = check_cancelled(st);
        CHECK(r.reason == stop_reason::cancelled);
        CHECK(r.tokens.size() == 2);
    }
    {
        basic_processing proc{.temperature = 0.f};
        toy_model draft = toy_model::draft_of(tc, 0.5f);
        draft_model_proposer<toy_model, basic_processing> dp(draft, proc);
        speculative_stepper st(speculative_params{.max_new_tokens = 20}, 16, prompt, dp, proc);
        CHECK(st.current_stage() == decltype(st)::stage::propose);
        const auto r = check_cancelled(st);  // between a draft call and its target call
        CHECK(r.reason == stop_reason::cancelled);
        CHECK(r.tokens.empty());
    }
    {
        beam_searcher bs({.num_beams = 3, .num_return = 3, .max_new_tokens = 10}, 16, prompt);
        drive(bs, 4);
        const auto r = check_cancelled(bs);
        CHECK(r.reason == stop_reason::cancelled);
        REQUIRE(r.hypotheses.size() == 3);
        for (const auto& h : r.hypotheses) {
            CHECK(h.reason == stop_reason::cancelled);
            CHECK(h.tokens.size() == 4);
        }
    }
}

TEST_CASE("steppers: short rows give bad_input and change nothing, in every build type",
          "[steppers][bad-input]") {
    toy_model m(tc);
    toy_model draft = toy_model::draft_of(tc, 0.5f);
    const std::vector<token_id> prompt = {1, 8, 3};
    // Drives `st` to the end, first offering every call a row one float short (must be
    // refused without effect), then the right rows; returns the result.
    auto drive = [&](auto& st, auto& draft_model) {
        std::size_t refused = 0;
        while (!st.done()) {
            const model_call c = st.next_call();
            auto& model = c.model == model_role::draft ? draft_model : m;
            std::vector<float> rows(c.logits_rows() * m.vocab_size()),
                hidden(c.hidden_rows() * m.hidden_size());
            REQUIRE(run_model_call(model, c, rows, hidden));
            const std::span<const float> all(rows), h(hidden);
            CHECK(st.advance(all.first(all.size() - 1), h).status == step_status::bad_input);
            if (!hidden.empty())
                CHECK(st.advance(all, h.first(h.size() - 1)).status == step_status::bad_input);
            CHECK(st.advance(std::span<const float>{}, h).status == step_status::bad_input);
            ++refused;
            REQUIRE(st.advance(all, h).status == step_status::ok);
        }
        CHECK(refused > 1);
        return st.result();
    };
    {
        const generate_params p{.sampling = {.temperature = 0.7f, .seed = 3}, .max_new_tokens = 9};
        generation_stepper st(p, 16, prompt);
        CHECK(drive(st, m).tokens == generate(m, prompt, p).tokens);
    }
    {
        const beam_search_params p{.num_beams = 3, .num_return = 3, .max_new_tokens = 6};
        beam_searcher st(p, 16, prompt);
        const auto r = drive(st, m);
        CHECK(r.hypotheses.size() == 3);
        CHECK(r.tokens == beam_search(m, prompt, p).tokens);
    }
    {
        const contrastive_params p{.top_k = 3, .max_new_tokens = 7};
        contrastive_stepper st(p, 16, m.hidden_size(), prompt);
        CHECK(drive(st, m).tokens == contrastive_search(m, prompt, p).tokens);
    }
    {
        const dola_params p{.max_new_tokens = 7};
        dola_stepper st(p, 16, m.num_layers(), prompt);
        CHECK(drive(st, m).tokens == dola_decode(m, prompt, p).tokens);
    }
    {
        basic_processing proc{.temperature = 0.8f}, proc2 = proc;
        draft_model_proposer<toy_model, basic_processing> dp(draft, proc,
                                                             {.mode = draft_mode::sample}),
            dp2 = dp;
        const speculative_params p{.max_new_tokens = 12, .seed = 4, .draft_length = 3};
        speculative_stepper st(p, 16, prompt, dp, proc);
        const auto r = drive(st, draft);
        CHECK(r.tokens == speculative_decode(m, dp2, prompt, p, proc2).tokens);
        CHECK(r.stats.draft_calls > 0);
    }
    // run_model_call refuses short spans too.
    std::vector<float> small(m.vocab_size() - 1);
    const sequence_request rq{prompt, 1, 0};
    CHECK_FALSE(run_model_call(m, {.requests = std::span(&rq, 1)}, small));
    std::vector<float> row(m.vocab_size());
    CHECK(run_model_call(m, {.requests = std::span(&rq, 1)}, row));
}

namespace {
/// A proposer drafting from the target's hidden state (the MTP-module hook): records what the
/// stepper hands it, drafts the draft model's greedy tokens.
struct hidden_probe_proposer {
    toy_model* draft;
    std::size_t H;
    std::vector<std::vector<float>> hidden;
    std::vector<std::vector<token_id>> context;
    bool needs_target_hidden() const { return true; }
    std::size_t hidden_size() const { return H; }
    std::size_t vocab_size() const { return draft->vocab_size(); }
    void observe_target_hidden(std::span<const float> h, std::span<const token_id> ctx) {
        hidden.emplace_back(h.begin(), h.end());
        context.emplace_back(ctx.begin(), ctx.end());
    }
    void propose(const draft_request& r, draft_buffer& out) {
        std::vector<token_id> ext(r.context.begin(), r.context.end());
        for (std::size_t i = 0; i < r.max_tokens && i < 2; ++i) {
            const auto x = draft->logits_of(ext);
            ext.push_back(token_id(std::max_element(x.begin(), x.end()) - x.begin()));
            out.tokens.push_back(ext.back());
        }
    }
};
static_assert(target_hidden_proposer<hidden_probe_proposer>);
}  // namespace

TEST_CASE("steppers: a target_hidden_proposer gets the last verified position's hidden row",
          "[steppers][speculative]") {
    toy_model m(tc);
    toy_model draft = toy_model::draft_of(tc, 0.7f);
    const std::vector<token_id> prompt = {4, 2, 9};
    basic_processing greedy{.temperature = 0.f};
    hidden_probe_proposer probe{&draft, m.hidden_size(), {}, {}};
    speculative_stepper st(speculative_params{.max_new_tokens = 15, .rule = verification::greedy},
                           16, prompt, probe, greedy);
    CHECK(st.next_call().kind == call_kind::logits_and_hidden);
    CHECK(st.hidden_size() == m.hidden_size());
    m.reset_counters();
    const auto r = speculative_decode(m, probe, prompt,
                                      {.max_new_tokens = 15, .rule = verification::greedy}, greedy);
    CHECK(r.tokens == generate(m, prompt, {.sampling = {.temperature = 0.f}, .max_new_tokens = 15})
                          .tokens);                      // greedy verification: plain greedy output
    REQUIRE(probe.hidden.size() + 1 == r.stats.rounds);  // every round but the last
    std::size_t rejected_rounds = 0;
    for (std::size_t i = 0; i < probe.hidden.size(); ++i) {
        const auto& ctx = probe.context[i];
        // the row of position ctx.size() - 2, the one whose logits chose ctx.back()
        CHECK(probe.hidden[i] == m.hidden_of(std::span<const token_id>(ctx).first(ctx.size() - 1)));
        CHECK(std::equal(prompt.begin(), prompt.end(), ctx.begin()));
        rejected_rounds += i > 0 && ctx.size() - probe.context[i - 1].size() < 3;
    }
    CHECK(rejected_rounds > 0);  // rows other than the bonus row were handed over
}

TEST_CASE("steppers: streaming everywhere (beam streams its best hypothesis)", "[steppers]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {3, 3};
    std::vector<token_event> ev;
    auto rec = [&](const token_event& e) { ev.push_back(e); };
    auto check = [&](const std::vector<token_id>& tokens) {
        REQUIRE(ev.size() == tokens.size());
        for (std::size_t i = 0; i < ev.size(); ++i) {
            CHECK(ev[i].token == tokens[i]);
            CHECK(ev[i].index == i);
        }
        ev.clear();
    };
    check(contrastive_search(m, prompt, {.top_k = 3, .max_new_tokens = 9}, rec).tokens);
    const auto d = dola_decode(m, prompt, {.sampling = {.temperature = 1.f, .seed = 1}}, rec);
    for (const auto& e : ev) CHECK(e.logprob <= 0.f);  // sampled: log-probabilities
    check(d.tokens);
    // Beam: one event per step; the last one is the result's best.
    std::vector<beam_event> best;
    std::vector<std::vector<token_id>> best_tokens;
    const auto b =
        beam_search(m, prompt, {.num_beams = 3, .max_new_tokens = 6}, [&](const beam_event& e) {
            best.push_back(e);
            best_tokens.emplace_back(e.tokens.begin(), e.tokens.end());
        });
    REQUIRE(best.size() == b.steps);
    CHECK(best_tokens.back() == b.tokens);
    CHECK(best.back().finished);
    for (std::size_t i = 0; i < best.size(); ++i) CHECK(best[i].step == i + 1);
    // A beam callback returning false stops: running beams become hypotheses (callback).
    std::size_t calls = 0;
    const auto stopped = beam_search(m, prompt, {.num_beams = 3, .max_new_tokens = 6},
                                     [&](const beam_event&) { return ++calls < 2; });
    CHECK(stopped.steps == 2);
    CHECK(stopped.reason == stop_reason::callback);
    CHECK(stopped.tokens.size() == 2);
}

TEST_CASE("steppers: stop sequences in beam, contrastive and DoLa; min_new_tokens holds them",
          "[steppers][stop]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {6, 1};
    // Beam width 1 with first_n stopping is greedy decoding: with a stop sequence too.
    const auto g = generate(m, prompt, {.sampling = {.temperature = 0.f}, .max_new_tokens = 20});
    REQUIRE(g.tokens.size() == 20);
    const std::vector<token_id> stop = {g.tokens[3], g.tokens[4]};
    const auto gs = generate(
        m, prompt,
        {.sampling = {.temperature = 0.f}, .max_new_tokens = 20, .stop_sequences = {stop}});
    CHECK(gs.reason == stop_reason::stop_sequence);
    CHECK(gs.tokens.size() <= 5);
    const auto b = beam_search(m, prompt,
                               {.num_beams = 1,
                                .max_new_tokens = 20,
                                .stopping = early_stopping::first_n,
                                .stop_sequences = {stop}});
    CHECK(b.tokens == gs.tokens);
    CHECK(b.reason == stop_reason::stop_sequence);
    CHECK(b.hypotheses[0].reason == stop_reason::stop_sequence);
    const auto c = contrastive_search(
        m, prompt, {.alpha = 0.f, .max_new_tokens = 20, .stop_sequences = {stop}});
    CHECK(c.tokens == gs.tokens);
    CHECK(c.reason == stop_reason::stop_sequence);
    const auto d = dola_decode(m, prompt, {.max_new_tokens = 20});
    REQUIRE(d.tokens.size() == 20);
    const auto ds = dola_decode(
        m, prompt, {.max_new_tokens = 20, .stop_sequences = {{d.tokens[5], d.tokens[6]}}});
    CHECK(ds.reason == stop_reason::stop_sequence);
    CHECK(ds.tokens.size() <= 7);
    CHECK(std::equal(ds.tokens.begin(), ds.tokens.end(), d.tokens.begin()));
    // min_new_tokens holds every stop: a stop sequence completed before it is ignored.
    const std::vector<token_id> first = {g.tokens[0], g.tokens[1]};
    auto held = generate(m, prompt,
                         {.sampling = {.temperature = 0.f, .min_new_tokens = 2},
                          .max_new_tokens = 20,
                          .stop_sequences = {first}});
    CHECK(held.reason == stop_reason::stop_sequence);  // completes at the 2nd token: 2 >= 2
    CHECK(held.tokens.size() == 2);
    held = generate(m, prompt,
                    {.sampling = {.temperature = 0.f, .min_new_tokens = 3},
                     .max_new_tokens = 20,
                     .stop_sequences = {first}});
    CHECK(held.tokens.size() > 2);  // held: the first completion is ignored
    CHECK(std::equal(held.tokens.begin(), held.tokens.end(), g.tokens.begin()));
}

TEST_CASE("steppers: min_new_tokens holds EOS and stop sequences in beam and contrastive search",
          "[steppers][stop][processors]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {6, 1};
    const auto g = generate(m, prompt, {.sampling = {.temperature = 0.f}, .max_new_tokens = 20});
    REQUIRE(g.tokens.size() == 20);
    const std::vector<token_id> first = {g.tokens[0], g.tokens[1]};
    for (std::size_t min_new : {2u, 3u}) {
        const auto gs = generate(m, prompt,
                                 {.sampling = {.temperature = 0.f, .min_new_tokens = min_new},
                                  .max_new_tokens = 20,
                                  .stop_sequences = {first}});
        const auto b = beam_search(m, prompt,
                                   {.num_beams = 1,
                                    .max_new_tokens = 20,
                                    .stopping = early_stopping::first_n,
                                    .stop_sequences = {first},
                                    .processing = {.min_new_tokens = min_new}});
        const auto c = contrastive_search(m, prompt,
                                          {.alpha = 0.f,
                                           .max_new_tokens = 20,
                                           .stop_sequences = {first},
                                           .processing = {.min_new_tokens = min_new}});
        INFO("min_new " << min_new);
        CHECK(b.tokens == gs.tokens);
        CHECK(c.tokens == gs.tokens);
        CHECK((gs.tokens.size() == 2) == (min_new == 2));  // held at 3
    }
    // EOS (15, likely in tc) is suppressed until min_new_tokens: never an EOS hypothesis before
    const auto b = beam_search(m, prompt,
                               {.num_beams = 3,
                                .num_return = 3,
                                .max_new_tokens = 12,
                                .eos_ids = {15},
                                .processing = {.min_new_tokens = 6}});
    for (const auto& h : b.hypotheses)
        if (h.eos) CHECK(h.tokens.size() >= 6);
    const auto c = contrastive_search(
        m, prompt,
        {.top_k = 3, .max_new_tokens = 12, .eos_ids = {15}, .processing = {.min_new_tokens = 6}});
    if (c.reason == stop_reason::eos) CHECK(c.tokens.size() >= 6);
    for (token_id t : c.tokens) CHECK(t != 15);
}

TEST_CASE("steppers: beam search with every row NaN reports no_valid_token", "[steppers][beam]") {
    toy_model nan_model({.vocab_size = 6});
    nan_model.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), NAN);
    });
    for (bool stochastic : {false, true}) {
        const auto r = beam_search(nan_model, std::vector<token_id>{1},
                                   {.num_beams = 2, .max_new_tokens = 5, .stochastic = stochastic});
        CHECK(r.reason == stop_reason::no_valid_token);
        CHECK(r.tokens.empty());
        REQUIRE(r.hypotheses.size() == 1);
        CHECK(r.hypotheses[0].reason == stop_reason::no_valid_token);
    }
    // Rows that turn NaN after two steps: the running beams end there, flagged.
    toy_model late({.vocab_size = 6});
    late.set_logits_function([](std::span<const token_id> ctx, std::span<float> out) {
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = ctx.size() >= 3 ? NAN : float(i % 3);
    });
    const auto r = beam_search(late, std::vector<token_id>{1},
                               {.num_beams = 2, .num_return = 2, .max_new_tokens = 5});
    CHECK(r.reason == stop_reason::no_valid_token);
    REQUIRE(r.hypotheses.size() == 2);
    for (const auto& h : r.hypotheses) CHECK(h.tokens.size() == 2);
}

namespace {
/// Allows tokens < 4 for two tokens, then nothing (a grammar that is complete).
struct two_then_done {
    bool allowed(token_id t, const processor_context& c) const {
        return c.generated() < 2 && t < 4;
    }
};
/// two_then_done counting its queries in a counter shared by its copies.
struct counted_two_then_done {
    std::size_t* queries;
    bool allowed(token_id t, const processor_context& c) const {
        ++*queries;
        return c.generated() < 2 && t < 4;
    }
};
}  // namespace

TEST_CASE("steppers: a constraint that allows nothing more ends with constraint_done",
          "[steppers][constraint]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {9, 9};
    generate_params p{.sampling = {.temperature = 0.f}, .max_new_tokens = 8};
    p.sampling.constraint = two_then_done{};
    const auto r = generate(m, prompt, p);
    CHECK(r.reason == stop_reason::constraint_done);
    REQUIRE(r.tokens.size() == 2);
    for (token_id t : r.tokens) CHECK(t < 4);
    dola_params d{.max_new_tokens = 8};
    d.sampling.constraint = two_then_done{};
    const auto rd = dola_decode(m, prompt, d);
    CHECK(rd.reason == stop_reason::constraint_done);  // (DoLa's plausible set may allow fewer)
    CHECK(rd.tokens.size() <= 2);
    for (token_id t : rd.tokens) CHECK(t < 4);
    // Negative control: an unconstrained row with no valid entry is no_valid_token.
    toy_model dead({.vocab_size = 4});
    dead.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), NAN);
    });
    CHECK(generate(dead, prompt, {.sampling = {.temperature = 0.f}}).reason ==
          stop_reason::no_valid_token);
}

TEST_CASE("steppers: generate and DoLa count the sampler's constraint queries",
          "[steppers][constraint]") {
    toy_model m(tc);
    const std::vector<token_id> prompt = {9, 9};
    for (float temperature : {0.f, 1.f}) {
        INFO("temperature " << temperature);
        std::size_t n = 0;
        generate_params p{.sampling = {.temperature = temperature}, .max_new_tokens = 8};
        p.sampling.constraint = counted_two_then_done{&n};
        const auto r = generate(m, prompt, p);
        CHECK(r.reason == stop_reason::constraint_done);
        CHECK(n > 0);
        CHECK(r.stats.constraint_queries == n);
        std::size_t nd = 0;
        dola_params d{.max_new_tokens = 8};
        d.sampling.temperature = temperature;
        d.sampling.constraint = counted_two_then_done{&nd};
        const auto rd = dola_decode(m, prompt, d);
        CHECK(nd > 0);
        CHECK(rd.stats.constraint_queries == nd);
    }
    // without a constraint: none
    CHECK(generate(m, prompt, {.max_new_tokens = 4}).stats.constraint_queries == 0);
}

TEST_CASE("steppers: the MTP-module proposer drafts from the verify call's hidden row",
          "[steppers][speculative][mtp]") {
    toy_model m(tc);
    REQUIRE(m.mtp_depth() >= 1);
    const std::vector<token_id> prompt = {3, 1, 4, 1, 5};
    basic_processing greedy{.temperature = 0.f};
    using mp = mtp_module_proposer<toy_model>;
    static_assert(target_hidden_proposer<mp>);
    /// The same proposer seen only through propose(): recomputes h(0, i) every round.
    struct propose_only {
        mp* p;
        std::size_t vocab_size() const { return p->vocab_size(); }
        void propose(const draft_request& r, draft_buffer& out) { p->propose(r, out); }
    };
    static_assert(!target_hidden_proposer<propose_only>);
    const speculative_params sp{.max_new_tokens = 30, .draft_length = 3};
    mp direct(m, greedy), inner(m, greedy);
    propose_only wrapped{&inner};
    {
        speculative_stepper st(sp, 16, prompt, direct, greedy);
        CHECK(st.next_call().kind == call_kind::logits_and_hidden);
    }
    m.reset_counters();
    const auto a = speculative_decode(m, direct, prompt, sp, greedy);
    const std::size_t calls_a = m.calls;
    m.reset_counters();
    const auto b = speculative_decode(m, wrapped, prompt, sp, greedy);
    const std::size_t calls_b = m.calls;
    CHECK(a.tokens == b.tokens);  // the same drafts, the same law
    CHECK(a.stats.drafted == b.stats.drafted);
    CHECK(a.stats.accepted == b.stats.accepted);
    CHECK(a.stats.rounds > 3);
    // one main forward per drafting round saved (all but the first)
    CHECK(calls_b - calls_a == b.stats.draft_calls - a.stats.draft_calls);
    CHECK(calls_b - calls_a + 2 >= a.stats.rounds);
}

TEST_CASE("generation_stepper::last_sample gives each drawn token's logprob extras",
          "[steppers][generate]") {
    // A row whose top-3 (raw log-softmax) is known: ids 5 > 2 > 9, the rest far below.
    std::vector<float> row(16, -10.f);
    row[5] = 3.f;
    row[2] = 2.f;
    row[9] = 1.f;
    const generate_params p{.sampling = {.temperature = 0.7f, .seed = 3, .logprobs = {.top_n = 3}},
                            .max_new_tokens = 4};
    const std::vector<token_id> prompt = {1, 2};
    generation_stepper st(p, row.size(), prompt);
    CHECK(st.last_sample().status == sample_status::no_valid_token);
    CHECK(st.last_sample().top.empty());
    double lse = 0;
    for (float x : row) lse += std::exp(double(x));
    lse = std::log(lse);
    for (int step = 0; step < 4; ++step) {
        const auto ev = st.advance(row);
        REQUIRE(ev.status == step_status::ok);
        REQUIRE(ev.tokens.size() == 1);
        const sample_result& s = st.last_sample();
        CHECK(s.token == ev.tokens[0]);
        REQUIRE(s.top.size() == 3);
        CHECK(s.top[0].token == 5);
        CHECK(s.top[1].token == 2);
        CHECK(s.top[2].token == 9);
        CHECK(s.top[0].logprob == dk_test::Approx(3.0 - lse).margin(1e-5));
        CHECK(s.top[2].logprob == dk_test::Approx(1.0 - lse).margin(1e-5));
    }
    CHECK(st.done());
}
}  // namespace dk_t_steppers
