// The C++ snippets of README.md, compiled and run. scripts/check_docs.py (ctest docs_references)
// checks that every ```cpp block of the README appears here verbatim (paragraph by paragraph), so
// the README cannot drift from code that builds. The snippets sit between clang-format off/on so
// that they keep the README's layout.
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <vector>

// clang-format off
#include <decodekit/decodekit.hpp>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_readme_examples {
// clang-format on

namespace {
using decodekit::token_id;

// A row with a clear order: logit of id i is -0.05 i, with two peaks.
std::vector<float> demo_row(std::size_t v) {
    std::vector<float> x(v);
    for (std::size_t i = 0; i < v; ++i) x[i] = -0.05f * float(i);
    x[7] = 3.f;
    x[12] = 2.5f;
    return x;
}

// clang-format off
struct within_width {  // keeps the entries within `width` logits of the set's best
    float width;
    void apply(decodekit::working_set& w, const decodekit::step_context&) noexcept {
        w.materialise();  // the set as candidates (ids + logits)
        const float lowest = w.kept_max() - width;
        const float* lg = w.kept().logit_storage();
        w.keep_if([&](std::size_t i) { return lg[i] >= lowest; });
    }
};

struct boost {  // adds `by` to the listed tokens
    std::vector<decodekit::token_id> ids;
    float by;
    void apply(std::span<float> x, const decodekit::processor_context&) const noexcept {
        for (decodekit::token_id t : ids)
            if (t >= 0 && std::size_t(t) < x.size()) x[std::size_t(t)] += by;
    }
    void touched(const decodekit::processor_context&, decodekit::token_sink& out) const {
        out(ids);
    }
};

struct only_even {
    bool allowed(decodekit::token_id t, const decodekit::processor_context&) const noexcept {
        return t % 2 == 0;
    }
};
// clang-format on
}  // namespace

TEST_CASE("README: quick use of a sampler", "[readme]") {
    const std::size_t vocab_size = 64;
    const std::vector<float> logits_row = demo_row(vocab_size);
    const std::uint64_t request_id = 3, position = 5;
    // clang-format off
decodekit::sampler s({.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                      .seed = 1234}, vocab_size);
auto r = s.sample(logits_row, /*sequence=*/request_id, /*step=*/position);  // r.token, r.logprob
    // clang-format on
    REQUIRE(r.ok());
    CHECK(r.token >= 0);
    CHECK(r.logprob <= 0.f);
    // the same key gives the same token
    decodekit::sampler again(
        {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 1234},
        vocab_size);
    CHECK(again.sample(logits_row, request_id, position).token == r.token);
}

TEST_CASE("README: one sampler per request, one workspace per thread", "[readme]") {
    const std::size_t vocab_size = 64;
    const std::vector<float> row = demo_row(vocab_size);
    const decodekit::sampling_params params{.temperature = 0.f};
    const decodekit::sampling_params next_params{.top_k = 1};
    const std::vector<token_id> tokens{1, 2, 3};
    const std::size_t n = 2;
    const std::uint64_t id = 9, pos = 1;
    // clang-format off
decodekit::sampler req(params, vocab_size);  // no O(vocabulary) work
auto r = req.sample(row, {.sequence = id, .step = pos, .history = tokens, .prompt_length = n});

req.rearm(next_params);  // a slot reused for a new request: new params, fresh state

decodekit::sampling_workspace ws(vocab_size);  // or a workspace of your own
auto d = req.distribution(row, {.sequence = id, .step = pos}, ws);  // views into ws
    // clang-format on
    REQUIRE(r.ok());
    CHECK(r.token == 7);  // greedy
    CHECK(req.params().top_k == 1);
    REQUIRE(d.size() == 1);  // top-1 after rearm
    CHECK(d.tokens[0] == 7);
    CHECK(d.tokens.data() == ws.cand.id_storage());  // the view lives in ws
    CHECK(ws.vocab_size() >= vocab_size);
}

TEST_CASE("README: a user truncation step", "[readme]") {
    const std::size_t vocab_size = 64;
    const std::vector<float> row = demo_row(vocab_size);
    // clang-format off
decodekit::sampler s1({.top_k = 40, .steps = {{.position = 0, .step = within_width{3.f}}}},
                      vocab_size);  // position 0: before every built-in step
    // clang-format on
    // within 3 of the best (3.0): ids 7 (3.0), 12 (2.5) and ids 0..0 (0 >= 0): {0, 7, 12}
    const auto d = s1.distribution(row);
    std::vector<token_id> ids(d.tokens.begin(), d.tokens.end());
    std::sort(ids.begin(), ids.end());
    CHECK(ids == std::vector<token_id>{0, 7, 12});
    decodekit::sampler plain({.top_k = 40}, vocab_size);  // negative control
    CHECK(plain.distribution(row).size() == 40);
}

TEST_CASE("README: a user processor", "[readme]") {
    const std::size_t vocab_size = 64;
    const std::vector<float> row = demo_row(vocab_size);
    // clang-format off
decodekit::sampler s2({.processors = {{.before = decodekit::processor_slot::penalties,
                                       .processor = boost{{7, 9}, 2.f}}}},
                      vocab_size);
    // clang-format on
    // distribution() views live until the next call on the thread's workspace: copy them out
    const auto d = s2.distribution(row);
    const std::vector<float> probs(d.probs.begin(), d.probs.end());
    const std::vector<token_id> toks(d.tokens.begin(), d.tokens.end());
    const decodekit::distribution boosted{toks, probs};
    decodekit::sampler plain({}, vocab_size);
    const auto p = plain.distribution(row);
    // adding 2 to ids 7 and 9 multiplies their odds against any other id by e^2
    const double before = double(p.prob(9)) / double(p.prob(12));
    const double after = double(boosted.prob(9)) / double(boosted.prob(12));
    CHECK(after / before == dk_test::Approx(std::exp(2.0)).epsilon(1e-4));
    CHECK(row == demo_row(vocab_size));  // the caller's row is never written
}

TEST_CASE("README: a constraint", "[readme]") {
    const std::size_t vocab_size = 64;
    const std::vector<float> row = demo_row(vocab_size);
    // clang-format off
decodekit::sampler s3({.top_k = 40, .constraint = only_even{}}, vocab_size);
// nothing allowed: status sample_status::no_allowed_token (no valid entry: no_valid_token)
    // clang-format on
    for (std::uint64_t step = 0; step < 50; ++step) {
        const auto r = s3.sample(row, 0, step);
        REQUIRE(r.ok());
        CHECK(r.token % 2 == 0);
    }
    std::vector<float> odd_only(vocab_size, -std::numeric_limits<float>::infinity());
    odd_only[7] = 0.f;
    CHECK(s3.sample(odd_only, 0, 0).status == decodekit::sample_status::no_allowed_token);
    const std::vector<float> none(vocab_size, -std::numeric_limits<float>::infinity());
    CHECK(s3.sample(none, 0, 0).status == decodekit::sample_status::no_valid_token);
}

TEST_CASE("README: processors in beam search", "[readme]") {
    const token_id eos = 11;
    // clang-format off
decodekit::beam_search_params bp{.num_beams = 4, .eos_ids = {eos},
    .processing = {.min_new_tokens = 8, .penalties = {.repetition = 1.3f},
                   .no_repeat_ngram_size = 3}};
    // clang-format on
    REQUIRE_FALSE(bp.check());
    dk_test::toy_model m(
        {.vocab_size = 12, .seed = 5, .scale = 2.f, .eos_id = eos, .eos_bias = 2.f});
    bp.max_new_tokens = 12;
    bp.num_return = 4;
    const std::vector<token_id> prompt = {1, 2, 3};
    const auto r = decodekit::beam_search(m, prompt, bp);
    REQUIRE(!r.hypotheses.empty());
    for (const auto& h : r.hypotheses) {
        if (h.eos) CHECK(h.tokens.size() >= 8);  // EOS suppressed before min_new_tokens
        std::vector<token_id> seq = prompt;      // no trigram twice in prompt + tokens
        seq.insert(seq.end(), h.tokens.begin(), h.tokens.end());
        for (std::size_t i = 0; i + 3 <= seq.size(); ++i)
            for (std::size_t j = i + 1; j + 3 <= seq.size(); ++j)
                CHECK_FALSE(std::equal(seq.begin() + std::ptrdiff_t(i),
                                       seq.begin() + std::ptrdiff_t(i + 3),
                                       seq.begin() + std::ptrdiff_t(j)));
    }
}
}  // namespace dk_t_readme_examples
