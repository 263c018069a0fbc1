// Sequential MTP modules (mtp_module_model) and mtp_module_proposer on the toy model: depth
// chaining (module min(j, mtp_depth()) drafts token j from the previous step's hidden state),
// where h(0, i) comes from, a cut-back after rejected drafts, several requests in one call, the
// edge cases, greedy equivalence, and the exact law of sampled MTP speculative decoding (with a
// negative control).
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_mtp_module {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {

token_id argmax_of(const std::vector<float>& row) {
    return token_id(std::max_element(row.begin(), row.end()) - row.begin());
}

/// The greedy drafts of a chain of n module steps from (hidden, context), recomputed with the toy's
/// pure mtp_of(): token j drafted by module min(j, depth) from the previous step's hidden state.
std::vector<token_id> expected_chain(const toy_model& m, std::vector<float> hidden, token_id last,
                                     std::size_t n) {
    std::vector<token_id> out;
    std::vector<float> row(m.vocab_size()), next(m.hidden_size());
    for (std::size_t j = 1; j <= n; ++j) {
        m.mtp_of(hidden, last, mtp_module_for(j, m.mtp_depth()), row, next);
        last = argmax_of(row);
        out.push_back(last);
        hidden = next;
    }
    return out;
}

/// Records every round's context and drafts of the proposer it wraps.
template <class P>
struct recording_proposer {
    P* inner;
    std::vector<std::vector<token_id>> contexts, drafts;
    std::size_t vocab_size() const { return inner->vocab_size(); }
    void propose(const draft_request& r, draft_buffer& out) {
        inner->propose(r, out);
        contexts.emplace_back(r.context.begin(), r.context.end());
        drafts.push_back(out.tokens);
    }
};

constexpr std::size_t V = 8;
constexpr std::size_t N = 100000;

/// Law of the first two emitted tokens under processing `proc`: p1(a) * p2(b | a).
std::vector<double> pair_law(const toy_model& target, const std::vector<token_id>& prompt,
                             basic_processing& proc) {
    std::vector<double> law(V * V, 0.0);
    sparse_distribution p1, p2;
    proc(target.logits_of(prompt), position_context{0, 0, prompt, prompt.size()}, p1);
    for (std::size_t i = 0; i < p1.size(); ++i) {
        std::vector<token_id> ctx = prompt;
        ctx.push_back(p1.tokens[i]);
        proc(target.logits_of(ctx), position_context{0, 1, ctx, prompt.size()}, p2);
        for (std::size_t j = 0; j < p2.size(); ++j)
            law[std::size_t(p1.tokens[i]) * V + std::size_t(p2.tokens[j])] +=
                double(p1.probs[i]) * double(p2.probs[j]);
    }
    return law;
}

}  // namespace

TEST_CASE("mtp_module_proposer chains the modules on their own hidden states", "[mtp]") {
    toy_model m({.vocab_size = 16, .hidden_size = 6, .seed = 5, .mtp_depth = 2});
    const std::vector<token_id> ctx = {1, 7, 3, 9};
    basic_processing greedy{.temperature = 0.f};
    mtp_module_proposer prop(m, greedy);
    const auto h0 = m.hidden_of(std::span<const token_id>(ctx).first(ctx.size() - 1));

    SECTION("from a given h(0, i): module min(j, mtp_depth()) drafts token j") {
        draft_buffer out;
        m.reset_counters();
        prop.propose(draft_request{ctx, 5, {}, 2}, h0, out);
        REQUIRE(out.tokens == expected_chain(m, h0, ctx.back(), 5));
        CHECK(out.model_calls == 5);
        CHECK_FALSE(out.has_distributions);
        REQUIRE(m.mtp_log.size() == 5);
        const std::size_t depths[] = {1, 2, 2, 2, 2};  // beyond mtp_depth(): the last module
        for (std::size_t j = 0; j < 5; ++j) {
            CHECK(m.mtp_log[j].depth == depths[j]);
            CHECK(m.mtp_log[j].position == ctx.size() - 1 + j);  // where its token sits
            CHECK(m.mtp_log[j].token == (j == 0 ? ctx.back() : out.tokens[j - 1]));
            CHECK(m.mtp_log[j].slot == 0);
        }
    }
    SECTION("speculative_decode's entry computes h(0, i) with one logits_and_hidden call") {
        draft_buffer a, b;
        prop.propose(draft_request{ctx, 3, {}, 2}, h0, a);
        m.reset_counters();
        prop.propose(draft_request{ctx, 3, {}, 2}, b);
        CHECK(b.tokens == a.tokens);
        CHECK(b.model_calls == 4);  // the extra main forward + 3 module steps
        CHECK(m.calls == 4);
        CHECK(m.sequences == 1);  // the one main call: the context without its last token
        CHECK(m.tokens == ctx.size() - 1);
    }
    SECTION("a single module (mtp_depth 1) is reused on its own output") {
        toy_model one({.vocab_size = 16, .hidden_size = 6, .seed = 5, .mtp_depth = 1});
        mtp_module_proposer p1(one, greedy);
        draft_buffer out;
        p1.propose(draft_request{ctx, 3, {}, 2}, h0, out);
        CHECK(out.tokens == expected_chain(one, h0, ctx.back(), 3));
        for (const auto& q : one.mtp_log) CHECK(q.depth == 1);
    }
    SECTION("edge cases: nothing drafted, nothing called") {
        draft_buffer out;
        m.reset_counters();
        const std::vector<token_id> bos = {1};
        prop.propose(draft_request{bos, 4, {}, 1}, out);  // no position before the last token
        CHECK(out.tokens.empty());
        prop.propose(draft_request{ctx, 4, {}, 2}, std::span<const float>(h0).first(5), out);
        CHECK(out.tokens.empty());  // hidden of the wrong size
        prop.propose(draft_request{ctx, 0, {}, 2}, out);
        CHECK(out.tokens.empty());  // budget 0
        CHECK(m.mtp_log.empty());
        CHECK(m.calls == 0);
        CHECK(out.model_calls == 0);
        DK_IF_EXCEPTIONS(toy_model none({.vocab_size = 16, .hidden_size = 6, .mtp_depth = 0});
                         CHECK_THROWS_AS(mtp_module_proposer(none, greedy), config_error);)
    }
    SECTION("a module row with no valid token stops drafting") {
        // A model claiming more modules than the toy has: the toy answers the depth-2 request
        // with a NaN row, which has no valid token.
        struct nan_module : toy_model {
            using toy_model::toy_model;
            std::size_t mtp_depth() const noexcept { return 3; }  // more than the toy has
        } nm({.vocab_size = 16, .hidden_size = 6, .seed = 5, .mtp_depth = 1});
        mtp_module_proposer pn(nm, greedy);
        draft_buffer out;
        pn.propose(draft_request{ctx, 4, {}, 2}, h0, out);
        CHECK(out.tokens.size() == 1);  // depth 2 is NaN in the toy: the chain stops there
    }
}

TEST_CASE("mtp_logits: several requests in one call equal each alone", "[mtp]") {
    toy_model m({.vocab_size = 16, .hidden_size = 6, .seed = 9, .mtp_depth = 3});
    const std::size_t Vm = 16, H = 6;
    std::vector<std::vector<float>> hs = {m.hidden_of(std::vector<token_id>{1, 2}),
                                          m.hidden_of(std::vector<token_id>{1, 5, 4}),
                                          m.hidden_of(std::vector<token_id>{3})};
    const std::vector<mtp_request> reqs = {{hs[0], 4, 1, 2, 0},
                                           {hs[1], 7, 3, 6, 1},
                                           {hs[2], 2, 2, 3, 2},
                                           {hs[0], 4, 4, 9, 3}};  // depth 4 > 3: invalid
    std::vector<float> logits(reqs.size() * Vm), hidden(reqs.size() * H);
    m.mtp_logits(reqs, logits, hidden);
    for (std::size_t r = 0; r < 3; ++r) {
        std::vector<float> l1(Vm), h1(H);
        m.mtp_logits(std::span(&reqs[r], 1), l1, h1);
        CHECK(std::equal(l1.begin(), l1.end(), logits.begin() + std::ptrdiff_t(r * Vm)));
        CHECK(std::equal(h1.begin(), h1.end(), hidden.begin() + std::ptrdiff_t(r * H)));
    }
    for (std::size_t i = 0; i < Vm; ++i) CHECK(std::isnan(logits[3 * Vm + i]));
}

TEST_CASE("MTP speculative decoding: greedy equivalence and cut-backs after rejection", "[mtp]") {
    const toy_model_config tc{
        .vocab_size = 16, .hidden_size = 6, .seed = 17, .scale = 2.f, .mtp_depth = 2};
    toy_model target(tc);
    const std::vector<token_id> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
    constexpr std::size_t n = 40;
    basic_processing greedy{.temperature = 0.f};
    const auto expected = [&] {
        std::vector<token_id> ctx = prompt, out;
        for (std::size_t i = 0; i < n; ++i) {
            out.push_back(argmax_of(target.logits_of(ctx)));
            ctx.push_back(out.back());
        }
        return out;
    }();
    for (auto rule : {verification::greedy, verification::rejection}) {
        mtp_module_proposer prop(target, greedy);
        recording_proposer<decltype(prop)> rec{&prop, {}, {}};
        target.reset_counters();
        const auto r = speculative_decode(
            target, rec, prompt, {.max_new_tokens = n, .rule = rule, .draft_length = 3}, greedy);
        CHECK(r.tokens == expected);
        CHECK(r.stats.drafted > r.stats.accepted);  // there were rejections (cut-backs)
        CHECK(r.stats.target_calls + r.stats.draft_calls == target.calls);
        // Every round's drafts are a function of its context alone: what a fresh proposer on
        // a fresh model drafts there. Nothing of a rejected draft survives into the next round.
        REQUIRE(rec.contexts.size() == r.stats.rounds);
        for (std::size_t i = 0; i < rec.contexts.size(); ++i) {
            const auto& c = rec.contexts[i];
            const auto h0 = target.hidden_of(std::span<const token_id>(c).first(c.size() - 1));
            const auto want = expected_chain(target, h0, c.back(), rec.drafts[i].size());
            CHECK(rec.drafts[i] == want);
            // and each round's context is prompt + the greedy tokens so far (cut back to them)
            CHECK(std::equal(c.begin() + std::ptrdiff_t(prompt.size()), c.end(), expected.begin()));
        }
    }
}

TEST_CASE("sampled MTP speculative decoding follows the target's law exactly",
          "[mtp][statistical]") {
    // Two tokens per run, N runs: chi-square against p1(a) p2(b | a); each REQUIRE fails with
    // probability dk_test::false_failure_rate (1e-7) for a correct implementation.
    const toy_model_config tc{.vocab_size = V, .seed = 3, .scale = 1.2f, .mtp_depth = 2};
    toy_model target(tc);
    const std::vector<token_id> prompt = {1, 4, 2};
    basic_processing proc{};
    const auto law = pair_law(target, prompt, proc);
    auto counts = [&](mtp_module_proposer<toy_model>& p, speculative_params params,
                      speculative_stats* total) {
        params.max_new_tokens = 2;
        return dk_test::histogram(V * V, N, [&](std::size_t r) {
            params.sequence = r;
            const auto res = speculative_decode(target, p, prompt, params, proc);
            REQUIRE(res.tokens.size() == 2);
            if (total) {
                total->drafted += res.stats.drafted;
                total->accepted += res.stats.accepted;
            }
            return std::size_t(res.tokens[0]) * V + std::size_t(res.tokens[1]);
        });
    };
    mtp_module_proposer sampled(target, proc, {.mode = draft_mode::sample});
    for (std::size_t gamma : {1, 3}) {
        speculative_stats st;
        dk_test::require_law(counts(sampled, {.seed = 21, .draft_length = gamma}, &st), law);
        CHECK(st.accepted > 0);
        CHECK(st.accepted < st.drafted);
    }
    mtp_module_proposer greedy_drafts(target, proc, {.mode = draft_mode::greedy});
    dk_test::require_law(counts(greedy_drafts, {.seed = 22, .draft_length = 2}, nullptr), law);

    SECTION("negative control: the same drafts under typical acceptance (LOSSY) are detected") {
        const auto c = counts(sampled,
                              {.seed = 23,
                               .rule = verification::typical,
                               .typical = {.epsilon = 0.3f, .delta = 0.6f},
                               .draft_length = 2},
                              nullptr);
        const auto g = dk_test::chi_square(c, dk_test::with_overflow_bin(law));
        INFO("typical: p_value " << g.p_value << " tv " << g.total_variation);
        CHECK(g.p_value < dk_test::false_failure_rate);
    }
}
}  // namespace dk_t_mtp_module
