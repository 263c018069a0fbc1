// Token masks per verified position in speculative_stepper (set_masks): a toy "grammar" whose
// allowed set depends on the previous token. Every emitted token is allowed in its context, the
// joint law of the first two tokens is masked sampling's (chi-square, false-failure rate 1e-7
// per check, 2 checks), short mask spans give bad_input with nothing consumed, and a position
// whose mask allows nothing ends with constraint_done.
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <cstdint>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_speculative_mask {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {
const toy_model_config tc{.vocab_size = 16, .hidden_size = 5, .num_layers = 4, .seed = 21};
constexpr std::size_t V = 16;

// The grammar: after token a, token t is allowed iff (t + a) % 3 != 0.
bool allowed(token_id t, token_id prev) { return (t + prev) % 3 != 0; }

std::uint32_t word_after(token_id prev) {
    std::uint32_t w = 0;
    for (token_id t = 0; t < token_id(V); ++t)
        if (allowed(t, prev)) w |= 1u << t;
    return w;
}

// One mask per verified position: position i follows context + drafts[0, i).
std::vector<std::uint32_t> masks_for(std::vector<token_id> ctx, std::span<const token_id> drafts) {
    std::vector<std::uint32_t> w;
    for (std::size_t i = 0; i <= drafts.size(); ++i) {
        w.push_back(word_after(ctx.back()));
        if (i < drafts.size()) ctx.push_back(drafts[i]);
    }
    return w;
}

// Drives `st` to the end with the grammar's masks (or `fixed` masks when non-empty).
template <class Stepper>
speculative_result drive(Stepper& st, toy_model& target, toy_model& draft,
                         const std::vector<token_id>& prompt, bool check_short = false,
                         const std::vector<std::uint32_t>& fixed = {}) {
    std::vector<token_id> ctx = prompt;
    while (!st.done()) {
        const model_call c = st.next_call();
        auto& model = c.model == model_role::draft ? draft : target;
        std::vector<float> rows(c.logits_rows() * V);
        REQUIRE(run_model_call(model, c, rows));
        std::vector<std::uint32_t> masks;
        if (st.current_stage() == Stepper::stage::verify) {
            std::vector<token_id> now = prompt;
            const auto done = st.result().tokens;
            now.insert(now.end(), done.begin(), done.end());
            masks = fixed.empty() ? masks_for(now, st.drafts()) : fixed;
            if (check_short && masks.size() > 1) {  // (an empty span is "no masks")
                st.set_masks(std::span<const std::uint32_t>(masks).first(masks.size() - 1));
                REQUIRE(st.advance(rows).status == step_status::bad_input);
            }
            st.set_masks(masks);
        }
        REQUIRE(st.advance(rows).status == step_status::ok);
    }
    return st.result();
}
}  // namespace

TEST_CASE("speculative_stepper with a mask per position: allowed tokens, masked law") {
    toy_model m(tc);
    toy_model draft = toy_model::draft_of(tc, 0.6f);
    const std::vector<token_id> prompt = {4, 2, 9};
    basic_processing proc{.temperature = 0.9f};
    // the law of the first two tokens under the grammar: masked softmax at 0.9, twice
    sampler s({.temperature = 0.9f, .order = sampling_order::hf}, V);
    std::vector<double> law(V * V, 0.0);
    {
        const std::uint32_t w0 = word_after(prompt.back());
        const auto p0 = m.logits_of(prompt);
        const distribution d0 = s.distribution(
            p0, {.mask = {.words = std::span<const std::uint32_t>(&w0, 1), .size = V}});
        const std::vector<token_id> t0(d0.tokens.begin(), d0.tokens.end());
        const std::vector<float> q0(d0.probs.begin(), d0.probs.end());
        for (std::size_t i = 0; i < t0.size(); ++i) {
            std::vector<token_id> c = prompt;
            c.push_back(t0[i]);
            const std::uint32_t w1 = word_after(t0[i]);
            const distribution d1 = s.distribution(
                m.logits_of(c),
                {.mask = {.words = std::span<const std::uint32_t>(&w1, 1), .size = V}});
            for (std::size_t j = 0; j < d1.size(); ++j)
                law[std::size_t(t0[i]) * V + std::size_t(d1.tokens[j])] =
                    double(q0[i]) * double(d1.probs[j]);
        }
    }
    for (const draft_mode mode : {draft_mode::sample, draft_mode::greedy}) {
        INFO("mode " << int(mode));
        const auto counts = dk_test::histogram(V * V, 20000, [&](std::size_t i) {
            draft_model_proposer<toy_model, basic_processing> dp(draft, proc, {.mode = mode});
            const speculative_params p{.max_new_tokens = 2, .seed = i, .draft_length = 2};
            speculative_stepper st(p, V, prompt, dp, proc);
            const auto r = drive(st, m, draft, prompt, i < 20);
            REQUIRE(r.tokens.size() == 2);
            return std::size_t(r.tokens[0]) * V + std::size_t(r.tokens[1]);
        });
        dk_test::require_law(counts, law);
    }
    // longer runs: every token allowed after its predecessor
    for (std::uint64_t seed = 0; seed < 50; ++seed) {
        draft_model_proposer<toy_model, basic_processing> dp(draft, proc,
                                                             {.mode = draft_mode::sample});
        const speculative_params p{.max_new_tokens = 24, .seed = seed, .draft_length = 4};
        speculative_stepper st(p, V, prompt, dp, proc);
        const auto r = drive(st, m, draft, prompt);
        REQUIRE(r.tokens.size() == 24);
        token_id prev = prompt.back();
        for (const token_id t : r.tokens) {
            CHECK(allowed(t, prev));
            prev = t;
        }
    }
}

TEST_CASE("speculative_stepper: a position whose mask allows nothing ends with constraint_done") {
    toy_model m(tc);
    toy_model draft = toy_model::draft_of(tc, 0.6f);
    const std::vector<token_id> prompt = {4, 2, 9};
    basic_processing proc{.temperature = 0.9f};
    draft_model_proposer<toy_model, basic_processing> dp(draft, proc, {.mode = draft_mode::sample});
    speculative_stepper st(speculative_params{.max_new_tokens = 8, .seed = 1, .draft_length = 3}, V,
                           prompt, dp, proc);
    const std::vector<std::uint32_t> zero(9, 0u);  // enough words for every position
    const auto r = drive(st, m, draft, prompt, false, zero);
    CHECK(r.tokens.empty());
    CHECK(r.reason == stop_reason::constraint_done);
}
}  // namespace dk_t_speculative_mask
