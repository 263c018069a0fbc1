// Bad input at the decoding entries (docs/bad-input.md), in every build type: absurd budgets,
// rows with no valid entry, negative EOS ids, proposers that break their contract.
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <cmath>
#include <limits>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_decoding_bad_input {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

TEST_CASE("decoding bad input: an absurd max_new_tokens reserves a capped amount",
          "[bad-input][speculative]") {
    // The first greedy token is EOS: the run ends at once. It used to reserve max_new_tokens
    // tokens up front (length_error / bad_alloc, an abort without exceptions).
    toy_model m({.vocab_size = 8, .seed = 2, .eos_id = 3, .eos_bias = 50.f});
    const std::vector<token_id> prompt = {1, 2};
    const std::size_t huge = std::numeric_limits<std::size_t>::max() / 8;
    basic_processing greedy{.temperature = 0.f};
    ngram_proposer ng{};
    const auto r =
        speculative_decode(m, ng, prompt, {.max_new_tokens = huge, .eos_ids = {3}}, greedy);
    CHECK(r.reason == stop_reason::eos);
    CHECK(r.tokens.empty());
    // The other drivers cap the same way.
    CHECK(generate(m, prompt,
                   {.sampling = {.temperature = 0.f}, .max_new_tokens = huge, .eos_ids = {3}})
              .reason == stop_reason::eos);
    CHECK(
        contrastive_search(m, prompt, {.alpha = 0.f, .max_new_tokens = huge, .eos_ids = {3}}).eos);
    CHECK(dola_decode(m, prompt, {.max_new_tokens = huge, .eos_ids = {3}}).eos);
}

TEST_CASE("decoding bad input: beam search on rows of NaN flags no_valid_token",
          "[bad-input][beam]") {
    toy_model nan_model({.vocab_size = 5});
    nan_model.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), std::numeric_limits<float>::quiet_NaN());
    });
    const auto r = beam_search(nan_model, std::vector<token_id>{1}, {.num_beams = 3});
    CHECK(r.reason == stop_reason::no_valid_token);  // it used to be an empty result, no flag
    REQUIRE(r.hypotheses.size() == 1);
    CHECK(r.hypotheses[0].reason == stop_reason::no_valid_token);
    CHECK(r.tokens.empty());
}

TEST_CASE("decoding bad input: negative EOS ids are accepted and ignored everywhere",
          "[bad-input]") {
    const std::vector<token_id> neg = {-1, std::numeric_limits<token_id>::min()};
    CHECK_FALSE(sampling_params{.eos_ids = neg}.check());
    CHECK_FALSE(generate_params{.eos_ids = neg}.check());
    CHECK_FALSE(beam_search_params{.eos_ids = neg}.check());
    CHECK_FALSE(contrastive_params{.eos_ids = neg}.check());
    CHECK_FALSE(dola_params{.eos_ids = neg}.check());
    CHECK_FALSE(speculative_params{.eos_ids = neg}.check());
    // ... and change nothing: the outputs equal those without EOS ids.
    toy_model m({.vocab_size = 12, .seed = 5});
    const std::vector<token_id> prompt = {3, 1};
    const generate_params g{.sampling = {.temperature = 0.f}, .max_new_tokens = 10};
    generate_params gn = g;
    gn.eos_ids = neg;
    CHECK(generate(m, prompt, gn).tokens == generate(m, prompt, g).tokens);
    const auto b = beam_search(m, prompt, {.max_new_tokens = 6});
    const auto bn = beam_search(m, prompt, {.max_new_tokens = 6, .eos_ids = neg});
    CHECK(bn.tokens == b.tokens);
    CHECK(bn.hypotheses.front().score == b.hypotheses.front().score);
    basic_processing greedy{.temperature = 0.f};
    ngram_proposer ng{};
    CHECK(
        speculative_decode(m, ng, prompt, {.max_new_tokens = 10, .eos_ids = neg}, greedy).tokens ==
        generate(m, prompt, g).tokens);
    // Stop sequences still reject negative ids and empty sequences (a client bug).
    CHECK(generate_params{.stop_sequences = {{2, -1}}}.check()->find("stop_sequences") !=
          std::string::npos);
}

TEST_CASE("decoding bad input: a proposer claiming q's it did not give is cut, never read",
          "[bad-input][speculative]") {
    struct lying_proposer {
        void propose(const draft_request&, draft_buffer& out) {
            out.has_distributions = true;  // but no q
            out.tokens = {1, 2, 3};
        }
    } lp;
    toy_model m({.vocab_size = 8, .seed = 4});
    basic_processing proc{};
    const auto r = speculative_decode(m, lp, std::vector<token_id>{1},
                                      {.max_new_tokens = 6, .draft_length = 3}, proc);
    CHECK(r.tokens.size() == 6);
    CHECK(r.stats.drafted == 0);  // the drafts without a q were dropped
    CHECK(r.stats.proposed == 0);
}
}  // namespace dk_t_decoding_bad_input
