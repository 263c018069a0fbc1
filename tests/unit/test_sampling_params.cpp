// sampling_params: defaults, check() messages naming the field and range, validate() through
// the sampler's constructor, and the order presets.
#include "dk_test.hpp"

#include <limits>
#include <string>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_params {

using namespace decodekit;

namespace {
std::string problem(const sampling_params& p) { return p.check().value_or(""); }
}  // namespace

TEST_CASE("default sampling_params are valid and documented", "[sampling][params]") {
    const sampling_params p;
    CHECK_FALSE(p.check().has_value());
    CHECK(p.temperature == 1.f);
    CHECK(p.top_k == 0);
    CHECK(p.top_p == 1.f);
    CHECK(p.min_p == 0.f);
    CHECK(p.min_keep == 1);
    CHECK(p.order == sampling_order::llama_cpp);
    CHECK_FALSE(p.has_processors());
    CHECK_FALSE(p.logprobs.any());
    sampler s(p, 10);
    CHECK(s.steps().empty());  // nothing to truncate, temperature 1
}

TEST_CASE("check() names the field and its allowed range", "[sampling][params]") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    CHECK(problem({.temperature = -1.f}) ==
          "sampling_params.temperature must be finite and >= 0 (0 = greedy), got -1");
    CHECK(problem({.temperature = nan}).find("sampling_params.temperature") == 0);
    CHECK(problem({.top_p = 1.5f}) == "sampling_params.top_p must be in [0, 1], got 1.5");
    CHECK(problem({.min_p = -0.1f}).find("sampling_params.min_p must be in [0, 1]") == 0);
    CHECK(problem({.typical_p = 2.f}).find("sampling_params.typical_p") == 0);
    CHECK(problem({.epsilon = 1.f}).find("sampling_params.epsilon must be in [0, 1)") == 0);
    CHECK(problem({.eta = -1.f}).find("sampling_params.eta") == 0);
    CHECK(problem({.top_n_sigma = -1.f}).find("sampling_params.top_n_sigma") == 0);
    CHECK(problem({.xtc_probability = 2.f}).find("sampling_params.xtc_probability") == 0);
    CHECK(problem({.xtc_threshold = nan}).find("sampling_params.xtc_threshold") == 0);
    CHECK(problem({.mirostat = true, .mirostat_tau = 0.f})
              .find("sampling_params.mirostat_tau must be finite and > 0") == 0);
    CHECK(problem({.mirostat = true, .mirostat_eta = -1.f}).find("sampling_params.mirostat_eta") ==
          0);
    // mirostat's fields are not checked while it is off (a client's default 0 is not an error)
    CHECK(problem({.mirostat_tau = 0.f, .mirostat_eta = 0.f}).empty());
    CHECK(problem({.min_keep = 0}) == "sampling_params.min_keep must be >= 1, got 0");
    CHECK(problem({.no_repeat_ngram_size = 1025}).find("sampling_params.no_repeat_ngram_size") ==
          0);
    CHECK(problem({.no_repeat_ngram_size = 1024}).empty());
    CHECK(problem({.penalties = {.repetition = 0.f}}).find("sampling_params.penalties: ") == 0);
    CHECK(problem({.dry = {.multiplier = 1.f, .base = 0.5f}})
              .find("sampling_params.dry: dry_params.base") == 0);
    CHECK(problem({.logit_biases = {{1, nan}}}).find("sampling_params.logit_biases[].bias") == 0);
    CHECK(problem({.custom_order = {sampling_step::top_k}}).find("sampling_params.custom_order") ==
          0);
    CHECK(problem({.order = sampling_order::custom,
                   .custom_order = {sampling_step::top_k, sampling_step::top_k}})
              .find("sampling_params.custom_order") == 0);
    // in-range edge values are accepted
    CHECK_FALSE(
        sampling_params{.temperature = 0.f, .top_p = 0.f, .min_p = 1.f, .typical_p = 0.f}.check());
}

TEST_CASE("the sampler constructor validates", "[sampling][params]") {
    DK_IF_EXCEPTIONS(REQUIRE_THROWS_AS(sampler({.top_p = 2.f}, 10), config_error));
    DK_IF_EXCEPTIONS(REQUIRE_THROWS_WITH(sampler({.top_p = 2.f}, 10),
                                         "sampling_params.top_p must be in [0, 1], got 2"));
    DK_IF_EXCEPTIONS(REQUIRE_THROWS_WITH(sampler({.min_keep = 0}, 10),
                                         "sampling_params.min_keep must be >= 1, got 0"));
    DK_IF_EXCEPTIONS(
        REQUIRE_THROWS_WITH(sampler({}, 0), "sampler: vocab_size must be >= 1, got 0"));
    DK_IF_EXCEPTIONS(REQUIRE_NOTHROW(sampler({.temperature = 0.f}, 1)));
}

TEST_CASE("order presets and custom order", "[sampling][params]") {
    using s = sampling_step;
    const sampling_params all{.temperature = 0.7f,
                              .top_k = 40,
                              .top_p = 0.9f,
                              .min_p = 0.05f,
                              .typical_p = 0.9f,
                              .epsilon = 0.01f,
                              .eta = 0.01f,
                              .top_n_sigma = 2.f,
                              .xtc_probability = 0.5f,
                              .mirostat = true};
    auto steps_of = [&](sampling_order o, std::vector<sampling_step> custom = {}) {
        sampling_params p = all;
        p.order = o;
        p.custom_order = std::move(custom);
        sampler sm(p, 100);
        return std::vector<sampling_step>(sm.steps().begin(), sm.steps().end());
    };
    CHECK(steps_of(sampling_order::hf) ==
          std::vector<sampling_step>{s::temperature, s::top_k, s::top_p, s::min_p, s::typical,
                                     s::epsilon, s::eta, s::top_n_sigma, s::xtc, s::mirostat});
    CHECK(steps_of(sampling_order::llama_cpp) ==
          std::vector<sampling_step>{s::top_n_sigma, s::top_k, s::typical, s::epsilon, s::eta,
                                     s::top_p, s::min_p, s::xtc, s::temperature, s::mirostat});
    CHECK(steps_of(sampling_order::vllm) ==
          std::vector<sampling_step>{s::temperature, s::min_p, s::top_k, s::top_p, s::typical,
                                     s::epsilon, s::eta, s::top_n_sigma, s::xtc, s::mirostat});
    CHECK(steps_of(sampling_order::custom, {s::top_k, s::temperature}) ==
          std::vector<sampling_step>{s::top_k, s::temperature});
    // disabled steps are skipped
    sampler plain({.temperature = 0.8f, .top_k = 40}, 100);
    CHECK(std::vector<sampling_step>(plain.steps().begin(), plain.steps().end()) ==
          std::vector<sampling_step>{s::top_k, s::temperature});
    // a custom order that omits a configured step does not apply it
    sampler only_k(
        {.top_k = 0, .top_p = 0.1f, .order = sampling_order::custom, .custom_order = {s::top_k}},
        10);
    CHECK(only_k.steps().empty());
}
}  // namespace dk_t_sampling_params
