// speculative_decode end to end on the toy models: the law of the first TWO emitted tokens is
// exactly the target's (every proposer, several draft lengths, truncation), greedy speculative
// output equals plain greedy output for every proposer, and the edge cases of the loop.
#include "dk_test.hpp"
#include "naive_processors.hpp"
#include "toy_model.hpp"

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_speculative_loop {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {

constexpr std::size_t V = 8;
constexpr std::size_t N = 100000;

/// Expected law of (first, second) emitted token: p1(a) * p2(b | a), index a * V + b.
template <class Processing>
std::vector<double> pair_law(const toy_model& target, const std::vector<token_id>& prompt,
                             Processing& proc) {
    std::vector<double> law(V * V, 0.0);
    sparse_distribution p1, p2;
    const auto l1 = target.logits_of(prompt);
    proc(l1, position_context{0, 0, prompt, prompt.size()}, p1);
    for (std::size_t i = 0; i < p1.size(); ++i) {
        std::vector<token_id> ctx = prompt;
        ctx.push_back(p1.tokens[i]);
        const auto l2 = target.logits_of(ctx);
        proc(l2, position_context{0, 1, ctx, prompt.size()}, p2);
        for (std::size_t j = 0; j < p2.size(); ++j)
            law[std::size_t(p1.tokens[i]) * V + std::size_t(p2.tokens[j])] +=
                double(p1.probs[i]) * double(p2.probs[j]);
    }
    return law;
}

template <class Proposer, class Processing>
std::vector<std::uint64_t> pair_counts(toy_model& target, Proposer& proposer,
                                       const std::vector<token_id>& prompt,
                                       speculative_params params, Processing& proc,
                                       speculative_stats* total = nullptr) {
    params.max_new_tokens = 2;
    return dk_test::histogram(V * V, N, [&](std::size_t r) {
        params.sequence = r;
        const auto res = speculative_decode(target, proposer, prompt, params, proc);
        REQUIRE(res.tokens.size() == 2);
        if (total) {
            total->drafted += res.stats.drafted;
            total->accepted += res.stats.accepted;
        }
        return std::size_t(res.tokens[0]) * V + std::size_t(res.tokens[1]);
    });
}

using dk_test::require_law;

std::vector<token_id> plain_greedy(const toy_model& m, std::vector<token_id> ctx, std::size_t n,
                                   const std::vector<token_id>& eos = {}) {
    std::vector<token_id> out;
    for (std::size_t i = 0; i < n; ++i) {
        const auto l = m.logits_of(ctx);
        const auto t = token_id(std::max_element(l.begin(), l.end()) - l.begin());
        out.push_back(t);
        ctx.push_back(t);
        if (std::find(eos.begin(), eos.end(), t) != eos.end()) break;
    }
    return out;
}

/// Proposes fixed tokens, ignoring the budget (the loop must truncate); records the request.
struct fixed_proposer {
    std::vector<token_id> drafts;
    std::size_t asked = 0, calls = 0;
    void propose(const draft_request& r, draft_buffer& out) {
        asked = r.max_tokens;
        ++calls;
        out.tokens = drafts;
    }
};

/// self_draft: the proposer calls the target model too (early exit, MTP heads).
void check_stats(const speculative_result& r, const toy_model& target, bool self_draft = false) {
    const auto& s = r.stats;
    CHECK(s.proposed >= s.drafted);
    CHECK(s.emitted == r.tokens.size());
    CHECK(s.accepted <= s.drafted);
    CHECK(s.target_calls == s.rounds);
    CHECK(s.target_calls + (self_draft ? s.draft_calls : 0) == target.calls);
    std::size_t d = 0, a = 0;
    for (std::size_t i = 0; i < s.drafted_at.size(); ++i) {
        d += s.drafted_at[i];
        a += s.accepted_at[i];
        CHECK(s.accepted_at[i] <= s.drafted_at[i]);
    }
    CHECK(d == s.drafted);
    CHECK(a == s.accepted);
    // every round emits its accepted drafts plus at most one more token
    CHECK(s.emitted <= s.accepted + s.rounds);
    CHECK(s.emitted >= s.accepted);
    CHECK(s.seconds >= 0);
}

#if DECODEKIT_EXCEPTIONS
/// The message of the config_error thrown by f ("" if none).
template <class F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const config_error& e) {
        return e.what();
    }
    return "";
}
#endif

}  // namespace

TEST_CASE("the first two emitted tokens follow the target's law exactly",
          "[speculative][statistical]") {
    const toy_model_config tc{.vocab_size = V, .seed = 3, .scale = 1.2f};
    toy_model target(tc);
    toy_model draft = toy_model::draft_of(tc, 1.5f);
    const std::vector<token_id> prompt = {1, 4, 2};
    basic_processing proc{};

    SECTION("draft model, sampled drafting, gamma 1 / 3 / adaptive") {
        const auto law = pair_law(target, prompt, proc);
        draft_model_proposer dp(draft, proc, {.mode = draft_mode::sample});
        for (std::size_t gamma : {1, 3}) {
            speculative_stats st;
            auto counts =
                pair_counts(target, dp, prompt,
                            {.seed = 5, .draft_length = gamma, .max_draft_length = 4}, proc, &st);
            require_law(counts, law);
            CHECK(st.accepted > 0);
            CHECK(st.accepted < st.drafted);  // q really differs from p
        }
        auto counts =
            pair_counts(target, dp, prompt, {.seed = 6, .draft_length = 2, .adaptive = true}, proc);
        require_law(counts, law);
    }
    SECTION("draft model, greedy drafting (one-hot), confidence threshold") {
        const auto law = pair_law(target, prompt, proc);
        draft_model_proposer dp(draft, proc, {.mode = draft_mode::greedy, .min_confidence = 0.3f});
        require_law(pair_counts(target, dp, prompt, {.seed = 7, .draft_length = 2}, proc), law);
    }
    SECTION("sampled drafting with a confidence threshold") {
        const auto law = pair_law(target, prompt, proc);
        draft_model_proposer dp(draft, proc, {.mode = draft_mode::sample, .min_confidence = 0.35f});
        require_law(pair_counts(target, dp, prompt, {.seed = 8, .draft_length = 3}, proc), law);
    }
    SECTION("truncated p and q (top-k 3, temperature 0.7)") {
        basic_processing tp{.temperature = 0.7f, .top_k = 3};
        const auto law = pair_law(target, prompt, tp);
        draft_model_proposer dp(draft, tp, {.mode = draft_mode::sample});
        require_law(pair_counts(target, dp, prompt, {.seed = 9, .draft_length = 2}, tp), law);
    }
    SECTION("through decodekit::sampler (top-p 0.8, temperature 0.9)") {
        sampler ts(sampling_params{.temperature = 0.9f, .top_p = 0.8f}, V);
        sampler ds(sampling_params{.temperature = 0.9f, .top_p = 0.8f}, V);
        sampler_processing tp(ts), dproc(ds);
        const auto law = pair_law(target, prompt, tp);
        draft_model_proposer dp(draft, dproc, {.mode = draft_mode::sample});
        require_law(pair_counts(target, dp, prompt, {.seed = 10, .draft_length = 2}, tp), law);
    }
    SECTION("processors (repetition penalty, no_repeat_ngram) in p, with and without them in q") {
        // The law written independently: softmax of the naively processed logits at each step.
        const dk_test::naive_processors pr{.repetition = 2.f, .ngram = 1};
        auto softmax = [](const std::vector<float>& x) {
            double m = -INFINITY, z = 0;
            for (float v : x) m = std::max(m, double(v));
            for (float v : x) z += std::exp(double(v) - m);
            std::vector<double> p;
            for (float v : x) p.push_back(std::exp(double(v) - m) / z);
            return p;
        };
        std::vector<double> law(V * V, 0.0);
        const auto p1 = softmax(pr(target.logits_of(prompt), prompt, prompt.size()));
        for (std::size_t a = 0; a < V; ++a) {
            std::vector<token_id> ctx = prompt;
            ctx.push_back(token_id(a));
            const auto p2 = softmax(pr(target.logits_of(ctx), ctx, prompt.size()));
            for (std::size_t b = 0; b < V; ++b) law[a * V + b] += p1[a] * p2[b];
        }
        sampler ts(pr.as_params(), V), ds(pr.as_params(), V), plain(sampling_params{}, V);
        sampler_processing tp(ts), dproc(ds), qplain(plain);
        draft_model_proposer same_procs(draft, dproc, {.mode = draft_mode::sample});
        speculative_stats st;
        require_law(
            pair_counts(target, same_procs, prompt, {.seed = 11, .draft_length = 2}, tp, &st), law);
        CHECK(st.accepted > 0);
        CHECK(st.accepted < st.drafted);
        // a draft without the processors proposes banned tokens: they must be rejected
        draft_model_proposer no_procs(draft, qplain, {.mode = draft_mode::sample});
        require_law(pair_counts(target, no_procs, prompt, {.seed = 12, .draft_length = 3}, tp),
                    law);
    }
    SECTION("stateful target pipeline: mirostat v2 through sampler::observe()") {
        const sampling_params mp{.mirostat = true, .mirostat_tau = 1.5f, .mirostat_eta = 1.f};
        // expected: p1 with the initial mu; p2 after observing the first token
        std::vector<double> law(V * V, 0.0);
        {
            sampler s1(mp, V);
            const auto d1 =
                s1.distribution(target.logits_of(prompt), {0, 0, prompt, prompt.size()});
            const std::vector<token_id> t1(d1.tokens.begin(), d1.tokens.end());
            const std::vector<float> p1(d1.probs.begin(), d1.probs.end());
            for (std::size_t i = 0; i < t1.size(); ++i) {
                sampler s2(mp, V);
                s2.observe(decodekit::distribution{t1, p1}, t1[i]);
                std::vector<token_id> ctx = prompt;
                ctx.push_back(t1[i]);
                const auto d2 = s2.distribution(target.logits_of(ctx), {0, 1, ctx, prompt.size()});
                for (std::size_t j = 0; j < d2.size(); ++j)
                    law[std::size_t(t1[i]) * V + std::size_t(d2.tokens[j])] +=
                        double(p1[i]) * double(d2.probs[j]);
            }
        }
        std::size_t nonzero = 0;
        for (double v : law) nonzero += v > 0;
        CHECK(nonzero < V * V);  // mirostat really truncates
        auto counts = dk_test::histogram(V * V, N, [&](std::size_t r) {
            sampler ts(mp, V), ds(mp, V);  // fresh state per run
            sampler_processing tp(ts), dproc(ds);
            draft_model_proposer dp(draft, dproc, {.mode = draft_mode::sample});
            const auto res = speculative_decode(
                target, dp, prompt,
                {.max_new_tokens = 2, .seed = 15, .sequence = r, .draft_length = 2}, tp);
            REQUIRE(res.tokens.size() == 2);
            return std::size_t(res.tokens[0]) * V + std::size_t(res.tokens[1]);
        });
        require_law(counts, law);
    }
    SECTION("n-gram lookup (one-hot proposals)") {
        const std::vector<token_id> rep = {1, 4, 2, 5, 1, 4, 2, 5, 1, 4};
        const auto law = pair_law(target, rep, proc);
        ngram_proposer ng{.min_n = 1, .max_n = 3};
        require_law(pair_counts(target, ng, rep, {.seed = 11, .draft_length = 3}, proc), law);
    }
    SECTION("MTP heads (sampled) and early exit (sampled)") {
        const auto law = pair_law(target, prompt, proc);
        mtp_proposer mtp(target, 0, proc, {.mode = draft_mode::sample, .slot = 1});
        require_law(pair_counts(target, mtp, prompt, {.seed = 12, .draft_length = 3}, proc), law);
        early_exit_proposer ee(target, 2, proc, {.mode = draft_mode::sample});
        require_law(pair_counts(target, ee, prompt, {.seed = 13, .draft_length = 2}, proc), law);
    }
    SECTION("negative control: typical acceptance (LOSSY) is detected") {
        const auto law = pair_law(target, prompt, proc);
        draft_model_proposer dp(draft, proc, {.mode = draft_mode::sample});
        auto counts = pair_counts(target, dp, prompt,
                                  {.seed = 14,
                                   .rule = verification::typical,
                                   .typical = {.epsilon = 0.3f, .delta = 0.6f},
                                   .draft_length = 2},
                                  proc);
        const auto g = dk_test::chi_square(counts, dk_test::with_overflow_bin(law));
        INFO("typical: p_value " << g.p_value << " tv " << g.total_variation);
        CHECK(g.p_value < dk_test::false_failure_rate);
    }
}

TEST_CASE("greedy speculative output equals plain greedy output, for every proposer",
          "[speculative]") {
    const toy_model_config tc{
        .vocab_size = 16, .num_layers = 4, .num_heads = 3, .seed = 17, .scale = 2.f};
    toy_model target(tc);
    toy_model draft = toy_model::draft_of(tc, 0.4f);
    const std::vector<token_id> prompt = {3, 1, 4, 1, 5, 9, 2, 6, 3, 1, 4, 1};
    constexpr std::size_t n = 40;
    const auto expected = plain_greedy(target, prompt, n);
    basic_processing greedy{.temperature = 0.f};

    auto run = [&](auto& proposer, speculative_params params, bool self_draft = false) {
        params.max_new_tokens = n;
        target.reset_counters();
        const auto r = speculative_decode(target, proposer, prompt, params, greedy);
        CHECK(r.tokens == expected);
        CHECK(r.reason == stop_reason::max_new_tokens);
        check_stats(r, target, self_draft);
        return r;
    };
    for (auto rule : {verification::rejection, verification::greedy}) {
        DYNAMIC_SECTION("rule " << int(rule)) {
            const speculative_params base{.rule = rule, .draft_length = 4};
            draft_model_proposer dp(draft, greedy);
            const auto r1 = run(dp, base);
            CHECK(r1.stats.accepted > 0);
            CHECK(r1.stats.draft_calls == r1.stats.proposed);
            draft_model_proposer ds(draft, greedy, {.mode = draft_mode::sample});
            run(ds, base);
            speculative_params adaptive = base;
            adaptive.adaptive = true;
            adaptive.min_draft_length = 1;
            adaptive.max_draft_length = 6;
            run(dp, adaptive);
            early_exit_proposer ee(target, 3, greedy);
            run(ee, base, true);
            mtp_proposer parallel(target, 0, greedy);
            const auto rp = run(parallel, base, true);
            CHECK(rp.stats.acceptance_rate_at(0) == 1.0);  // head 0 is the model itself
            mtp_proposer chained(target, 1, greedy);
            run(chained, base, true);
            ngram_proposer ng{};
            run(ng, base);
            toy_model same(tc);  // draft == target: everything accepted
            draft_model_proposer perfect(same, greedy);
            const auto rs = run(perfect, base);
            CHECK(rs.stats.accepted == rs.stats.drafted);
            CHECK(rs.stats.mean_tokens_per_target_call() > 4.0);
        }
    }
    SECTION("through decodekit::sampler with temperature 0") {
        sampler ts(sampling_params{.temperature = 0.f}, 16),
            dsm(sampling_params{.temperature = 0.f}, 16);
        sampler_processing tp(ts), dproc(dsm);
        draft_model_proposer dp(draft, dproc);
        target.reset_counters();
        const auto r =
            speculative_decode(target, dp, prompt, {.max_new_tokens = n, .draft_length = 3}, tp);
        CHECK(r.tokens == expected);
        const auto gen = generate(
            target, prompt, generate_params{.sampling = {.temperature = 0.f}, .max_new_tokens = n});
        CHECK(gen.tokens == expected);
        // statistics in generate()'s shape
        const generation_stats gs = r.stats.as_generation_stats();
        CHECK(gs.generated_tokens == n);
        CHECK(gs.model_calls == r.stats.target_calls);
        CHECK(gs.acceptance_rate() == r.stats.acceptance_rate());
        CHECK(std::fabs(gs.tokens_per_model_call - r.stats.mean_tokens_per_target_call()) < 1e-12);
        CHECK(gs.prompt_tokens == prompt.size());
    }
}

TEST_CASE("speculative_decode edge cases", "[speculative]") {
    const toy_model_config tc{.vocab_size = V, .seed = 23, .scale = 2.f};
    toy_model target(tc);
    const std::vector<token_id> prompt = {2, 7, 1};
    basic_processing greedy{.temperature = 0.f};
    const auto g = plain_greedy(target, prompt, 12);

    SECTION("an accepted EOS ends the output, no bonus") {
        const token_id eos = g[1];
        fixed_proposer fp{{g[0], g[1], g[2], g[3]}};
        const auto r =
            speculative_decode(target, fp, prompt,
                               {.max_new_tokens = 10, .eos_ids = {eos}, .draft_length = 4}, greedy);
        std::vector<token_id> streamed;
        const auto r2 = speculative_decode(
            target, fp, prompt, {.max_new_tokens = 10, .eos_ids = {eos}, .draft_length = 4}, greedy,
            [&](token_id t) { streamed.push_back(t); });
        REQUIRE(r2.tokens == std::vector<token_id>{g[0]});  // as generate(): EOS not appended
        CHECK(streamed == r2.tokens);                       // nor streamed
        CHECK(r2.reason == stop_reason::eos);
        CHECK(r2.stats.accepted == 2);  // the EOS draft was accepted
        CHECK(r2.stats.emitted == 1);
        CHECK(r2.stats.target_calls == 1);
        // generate() agrees
        const auto gen =
            generate(target, prompt,
                     generate_params{
                         .sampling = {.temperature = 0.f}, .max_new_tokens = 10, .eos_ids = {eos}});
        CHECK(gen.tokens == r2.tokens);
        CHECK(gen.reason == r2.reason);
    }
    SECTION("the draft proposes EOS and the target rejects it") {
        const token_id eos = token_id((g[0] + 1) % V);
        fixed_proposer fp{{eos, 0, 0}};
        const auto r = speculative_decode(
            target, fp, prompt, {.max_new_tokens = 1, .eos_ids = {eos}, .draft_length = 3}, greedy);
        CHECK(r.tokens == std::vector<token_id>{g[0]});
        CHECK(fp.calls == 0);  // budget 1: no room for drafts
        const auto r2 = speculative_decode(
            target, fp, prompt, {.max_new_tokens = 2, .eos_ids = {eos}, .draft_length = 3}, greedy);
        CHECK(r2.tokens == std::vector<token_id>{g[0], g[1]});
        CHECK(r2.stats.drafted == 1);
        CHECK(r2.stats.accepted == 0);
    }
    SECTION("gamma = 0 is plain decoding: one target call per token, no draft call") {
        fixed_proposer fp{{1, 2, 3}};
        target.reset_counters();
        const auto r = speculative_decode(
            target, fp, prompt, {.max_new_tokens = 12, .draft_length = 0, .min_draft_length = 0},
            greedy);
        CHECK(r.tokens == g);
        CHECK(fp.calls == 0);
        CHECK(r.stats.drafted == 0);
        CHECK(r.stats.target_calls == 12);
        check_stats(r, target);
    }
    SECTION("a draft longer than the remaining budget is truncated") {
        fixed_proposer fp{std::vector<token_id>(g.begin(), g.begin() + 8)};
        target.reset_counters();
        const auto r = speculative_decode(target, fp, prompt,
                                          {.max_new_tokens = 3, .draft_length = 8}, greedy);
        CHECK(fp.asked == 2);  // room for 2 drafts + 1 bonus
        CHECK(r.tokens == std::vector<token_id>(g.begin(), g.begin() + 3));
        CHECK(r.stats.drafted == 2);
        CHECK(r.stats.target_calls == 1);
        CHECK(r.reason == stop_reason::max_new_tokens);
        CHECK(target.positions == 3);  // n_last = drafts + 1
        const auto r0 = speculative_decode(target, fp, prompt, {.max_new_tokens = 0}, greedy);
        CHECK(r0.tokens.empty());
    }
    SECTION("q(x) = 0 for the proposed token: rejected, the target decides") {
        // a 'sampled' proposal claiming q = delta_{y} for a token x != y
        struct lying_proposer {
            void propose(const draft_request&, draft_buffer& out) {
                out.has_distributions = true;
                out.next_q().clear();
                out.q[0].push(5, 1.f);
                out.tokens.push_back(4);
            }
        } lp;
        basic_processing proc{};
        const auto r = speculative_decode(target, lp, prompt,
                                          {.max_new_tokens = 1 + 1, .draft_length = 1}, proc);
        CHECK(r.stats.accepted == 0);
        CHECK(r.stats.drafted == 1);
    }
    SECTION("the sequence contract: target slot 0, draft slot 1, target sequences cut back") {
        toy_model draft = toy_model::draft_of(tc, 1.f);
        draft_model_proposer dp(draft, greedy);
        target.reset_counters();
        const auto r = speculative_decode(target, dp, prompt,
                                          {.max_new_tokens = 10, .draft_length = 3}, greedy);
        CHECK(r.tokens == std::vector<token_id>(g.begin(), g.begin() + 10));
        CHECK(target.last_slots == std::vector<std::uint32_t>{0});
        CHECK(draft.last_slots == std::vector<std::uint32_t>{1});
        CHECK(r.stats.draft_calls == draft.calls);
    }
    SECTION("stop conditions: callback, stop sequence, empty target distribution") {
        ngram_proposer ng{};
        std::vector<token_id> streamed;
        const auto r =
            speculative_decode(target, ng, prompt, {.max_new_tokens = 10}, greedy, [&](token_id t) {
                streamed.push_back(t);
                return streamed.size() < 3;
            });
        CHECK(r.tokens.size() == 3);
        CHECK(streamed == r.tokens);
        std::vector<token_event> events;
        basic_processing proc{};
        const auto re = speculative_decode(target, ng, prompt, {.max_new_tokens = 6}, proc,
                                           [&](const token_event& e) { events.push_back(e); });
        REQUIRE(events.size() == re.tokens.size());
        for (std::size_t i = 0; i < events.size(); ++i) {
            CHECK(events[i].index == i);
            CHECK(events[i].token == re.tokens[i]);
            CHECK(events[i].logprob < 0.f);
        }
        CHECK(r.reason == stop_reason::callback);
        const auto r2 = speculative_decode(
            target, ng, prompt, {.max_new_tokens = 10, .stop_sequences = {{g[2], g[3]}}}, greedy);
        CHECK(r2.tokens == std::vector<token_id>(g.begin(), g.begin() + 4));
        CHECK(r2.reason == stop_reason::stop_sequence);
        toy_model dead(tc);
        dead.set_logits_function([](std::span<const token_id>, std::span<float> out) {
            for (auto& v : out) v = -INFINITY;
        });
        const auto r3 = speculative_decode(dead, ng, prompt, {.max_new_tokens = 4}, greedy);
        CHECK(r3.tokens.empty());
        CHECK(r3.reason == stop_reason::no_valid_token);
    }
    SECTION("reruns reproduce; a different seed differs") {
        toy_model draft = toy_model::draft_of(tc, 1.f);
        basic_processing proc{};
        draft_model_proposer dp(draft, proc, {.mode = draft_mode::sample});
        const speculative_params sp{.max_new_tokens = 30, .seed = 99, .draft_length = 3};
        const auto a = speculative_decode(target, dp, prompt, sp, proc);
        const auto b = speculative_decode(target, dp, prompt, sp, proc);
        CHECK(a.tokens == b.tokens);
        speculative_params sp2 = sp;
        sp2.seed = 100;
        CHECK(speculative_decode(target, dp, prompt, sp2, proc).tokens != a.tokens);
    }
#if DECODEKIT_EXCEPTIONS
    SECTION("bad input is rejected clearly") {
        toy_model big(toy_model_config{.vocab_size = V + 2});
        draft_model_proposer dp(big, greedy);
        try {
            speculative_decode(target, dp, prompt, {}, greedy);
            FAIL("vocabulary mismatch not detected");
        } catch (const config_error& e) {
            const std::string m = e.what();
            CHECK(m.find("vocabulary mismatch") != std::string::npos);
            CHECK(m.find("10") != std::string::npos);
            CHECK(m.find("8") != std::string::npos);
        }
        ngram_proposer ng{};
        REQUIRE_THROWS_AS(speculative_decode(target, ng, std::vector<token_id>{}, {}, greedy),
                          config_error);
        CHECK(error_of([] {
                  speculative_params{.draft_length = 9}.validate();
              }).find("draft_length") != std::string::npos);
        CHECK(error_of([] {
                  speculative_params{.min_draft_length = 5, .max_draft_length = 3}.validate();
              }).find("min_draft_length") != std::string::npos);
        REQUIRE_THROWS_AS(early_exit_proposer(target, 9, greedy), config_error);
        REQUIRE_THROWS_AS((ngram_proposer{.min_n = 0}.validate()), config_error);
        // The processing and the proposer are validated by speculative_decode itself.
        basic_processing neg_t{.temperature = -1.f};
        CHECK(error_of([&] {
                  speculative_decode(target, ng, prompt, {}, neg_t);
              }).find("basic_processing.temperature") != std::string::npos);
        basic_processing bad_p{.top_p = 0.f};
        REQUIRE_THROWS_AS(speculative_decode(target, ng, prompt, {}, bad_p), config_error);
        ngram_proposer bad_ng{.min_n = 0};
        REQUIRE_THROWS_AS(speculative_decode(target, bad_ng, prompt, {}, greedy), config_error);
        // Same stop-condition checks as generate_params (negative EOS ids are ignored).
        CHECK(error_of([] { speculative_params{.eos_ids = {-1}}.validate(); }).empty());
        CHECK(error_of([] {
                  speculative_params{.stop_sequences = {{1, -2}}}.validate();
              }).find("speculative_params.stop_sequences") != std::string::npos);
        CHECK(error_of([] {
                  speculative_params{.stop_sequences = {{}}}.validate();
              }).find("speculative_params.stop_sequences") != std::string::npos);
        CHECK(speculative_decode(target, ng, prompt, {.max_new_tokens = 3, .eos_ids = {-1}}, greedy)
                  .tokens.size() == 3);
        CHECK(speculative_params{.eos_ids = {0}, .stop_sequences = {{0, 1}}}.check() ==
              std::nullopt);  // negative control
    }
#endif
}

namespace {
// A backend that counts ids outside [0, V) the target is sent after the prompt.
struct range_checking_model {
    std::size_t prompt_size = 0;
    int bad = 0;
    std::size_t vocab_size() const { return 4; }
    void logits(std::span<const sequence_request> rq, std::span<float> out) {
        for (const auto& r : rq)
            for (std::size_t i = prompt_size; i < r.tokens.size(); ++i)
                if (r.tokens[i] < 0 || r.tokens[i] >= 4) ++bad;
        for (std::size_t i = 0; i < out.size(); ++i) out[i] = float(i % 4);
    }
};
}  // namespace

TEST_CASE("draft ids outside the vocabulary never reach the target", "[speculative][bad-input]") {
    // n-gram lookup copies the 9 that follows the earlier 0 in the prompt into its draft.
    const std::vector<token_id> prompt{0, 9, 0};
    range_checking_model m{.prompt_size = prompt.size()};
    ngram_proposer ng{.min_n = 1, .max_n = 1};
    basic_processing proc{.temperature = 0.f};
    const auto r = speculative_decode(m, ng, prompt, speculative_params{.max_new_tokens = 4}, proc);
    CHECK(m.bad == 0);
    CHECK(r.tokens.size() == 4);
}

TEST_CASE("greedy speculative decoding with processors equals generate() with them",
          "[speculative][processors]") {
    // Each draft position's row is processed with the history accepted so far; rejected drafts
    // never reach the processors' state (and the draft's own processors are cut back by their
    // history tracker). Greedy: token equality with generate() and with a naive recomputation.
    const toy_model_config tc{.vocab_size = 16,
                              .num_layers = 4,
                              .num_heads = 3,
                              .seed = 17,
                              .scale = 2.f,
                              .eos_id = 15,
                              .eos_bias = 0.5f};
    toy_model target(tc);
    toy_model draft = toy_model::draft_of(tc, 0.4f);
    const std::vector<token_id> prompt = {3, 1, 4, 1, 5, 9, 2, 6, 3, 1, 4, 1};
    const dk_test::naive_processors sets[] = {
        {.repetition = 1.5f},
        {.ngram = 1},
        {.ngram = 3, .min_new = 10, .eos = 15},
        {.repetition = 1.3f, .ngram = 2, .min_new = 6, .eos = 15},
    };
    std::size_t accepted = 0, rejected = 0, runs = 0;
    for (const auto& pr : sets)
        for (auto rule : {verification::rejection, verification::greedy}) {
            sampling_params sp = pr.as_params();
            sp.temperature = 0.f;
            sp.eos_ids = {15};
            const auto want =
                generate(target, prompt, {.sampling = sp, .max_new_tokens = 30, .eos_ids = {15}});
            // the naive recomputation
            std::vector<token_id> ctx = prompt, naive;
            for (std::size_t i = 0; i < 30; ++i) {
                const auto x = pr(target.logits_of(ctx), ctx, prompt.size());
                const auto t = token_id(std::max_element(x.begin(), x.end()) - x.begin());
                if (t == 15) break;
                naive.push_back(t);
                ctx.push_back(t);
            }
            CHECK(want.tokens == naive);
            const speculative_params params{
                .max_new_tokens = 30, .eos_ids = {15}, .rule = rule, .draft_length = 3};
            auto check_run = [&](auto& proposer, sampler_processing& tp) {
                const auto r = speculative_decode(target, proposer, prompt, params, tp);
                INFO("rep " << pr.repetition << " ngram " << pr.ngram << " min_new " << pr.min_new
                            << " rule " << int(rule));
                CHECK(r.tokens == want.tokens);
                CHECK(r.reason == want.reason);
                accepted += r.stats.accepted;
                rejected += r.stats.drafted - r.stats.accepted;
                ++runs;
            };
            {  // a draft model with the same processors
                sampler ts(sp, 16), ds(sp, 16);
                sampler_processing tp(ts), dp(ds);
                draft_model_proposer proposer(draft, dp);
                check_run(proposer, tp);
            }
            {  // a draft model without processors (its drafts break the bans: rejected)
                sampler ts(sp, 16), ds(sampling_params{.temperature = 0.f}, 16);
                sampler_processing tp(ts), dp(ds);
                draft_model_proposer proposer(draft, dp);
                check_run(proposer, tp);
            }
            {  // n-gram lookup (copies the prompt's repeats, which no_repeat_ngram forbids)
                sampler ts(sp, 16);
                sampler_processing tp(ts);
                ngram_proposer proposer{};
                check_run(proposer, tp);
            }
            const auto plain =
                generate(target, prompt,
                         {.sampling = {.temperature = 0.f}, .max_new_tokens = 30, .eos_ids = {15}});
            INFO("set " << (&pr - sets) << ": " << want.tokens.size() << " tokens with processors, "
                        << plain.tokens.size() << " without");
            CHECK(want.tokens != plain.tokens);  // negative control: the processors matter
        }
    INFO(accepted << " accepted, " << rejected << " rejected drafts in " << runs << " runs");
    CHECK(accepted > 0);
    CHECK(rejected > 0);  // the rollback path ran
}

TEST_CASE("speculative min_new_tokens comes from the processing sampler (EOS ids checked)",
          "[speculative][processors]") {
    const toy_model_config tc{
        .vocab_size = 8, .seed = 4, .scale = 1.f, .eos_id = 7, .eos_bias = 4.f};
    toy_model target(tc);
    const std::vector<token_id> prompt = {1, 2};
    ngram_proposer ng{};
    // EOS is very likely: without min_new_tokens the output is short
    sampler s0(sampling_params{.temperature = 0.f}, 8);
    sampler_processing p0(s0);
    const auto r0 =
        speculative_decode(target, ng, prompt, {.max_new_tokens = 20, .eos_ids = {7}}, p0);
    REQUIRE(r0.reason == stop_reason::eos);
    REQUIRE(r0.tokens.size() < 5);
    sampler s1(sampling_params{.temperature = 0.f, .min_new_tokens = 5, .eos_ids = {7}}, 8);
    sampler_processing p1(s1);
    const auto r1 =
        speculative_decode(target, ng, prompt, {.max_new_tokens = 20, .eos_ids = {7}}, p1);
    CHECK(r1.tokens.size() >= 5);
    // a stop sequence completed before min_new_tokens is held (the contract's rule)
    const std::vector<token_id> first2(r1.tokens.begin(), r1.tokens.begin() + 2);
    const auto r2 = speculative_decode(
        target, ng, prompt, {.max_new_tokens = 20, .eos_ids = {7}, .stop_sequences = {first2}}, p1);
    CHECK(r2.tokens.size() > 2);
    DK_IF_EXCEPTIONS({
        // the sampler must know the EOS ids it has to suppress
        sampler s2(sampling_params{.temperature = 0.f, .min_new_tokens = 5}, 8);
        sampler_processing p2(s2);
        const std::string msg = error_of([&] {
            speculative_decode(target, ng, prompt, {.max_new_tokens = 20, .eos_ids = {7}}, p2);
        });
        CHECK(msg.find("eos_ids") != std::string::npos);
    })
}
}  // namespace dk_t_speculative_loop
