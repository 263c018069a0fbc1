// The generation driver: greedy/sampled decoding, stop conditions, streaming, statistics.
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_generate {

using namespace decodekit;
using dk_test::toy_model;

namespace {

std::vector<token_id> greedy(const toy_model& m, std::vector<token_id> seq, std::size_t max_new,
                             token_id eos = -1) {
    std::vector<token_id> out;
    for (std::size_t i = 0; i < max_new; ++i) {
        const auto x = m.logits_of(seq);
        const token_id t = token_id(std::max_element(x.begin(), x.end()) - x.begin());
        if (t == eos) break;
        out.push_back(t);
        seq.push_back(t);
    }
    return out;
}

const generate_params greedy_params{.sampling = {.temperature = 0.f}, .max_new_tokens = 12};

}  // namespace

TEST_CASE("generate: greedy decoding equals the argmax loop, one model call per token",
          "[generate]") {
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        toy_model m({.vocab_size = 16, .seed = seed});
        const std::vector<token_id> prompt = {1, 2, 3};
        const auto r = generate(m, prompt, greedy_params);
        CHECK(r.tokens == greedy(m, prompt, 12));
        CHECK(r.reason == stop_reason::max_new_tokens);
        CHECK(m.calls == 12);
        CHECK(m.positions == 12);
        CHECK(r.stats.model_calls == 12);
        CHECK(r.stats.model_rows == 12);
        CHECK(m.last_slots == std::vector<std::uint32_t>{0});
    }
}

TEST_CASE("generate: EOS stops (and is not output), EOS in the prompt is ignored", "[generate]") {
    std::size_t stopped_early = 0;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        toy_model m({.vocab_size = 8, .seed = seed, .eos_id = 7, .eos_bias = 1.2f});
        const std::vector<token_id> prompt = {7, 7, 1};  // EOS inside the prompt
        generate_params p = greedy_params;
        p.eos_ids = {7};
        const auto r = generate(m, prompt, p);
        const auto g = greedy(m, prompt, 12, 7);
        CHECK(r.tokens == g);
        CHECK(std::find(r.tokens.begin(), r.tokens.end(), 7) == r.tokens.end());
        CHECK(r.reason == (g.size() < 12 ? stop_reason::eos : stop_reason::max_new_tokens));
        if (g.size() < 12) {
            ++stopped_early;
            CHECK(m.calls == g.size() + 1);
        }
    }
    CHECK(stopped_early >= 3);
    // Without eos_ids the same token is an ordinary token.
    toy_model m({.vocab_size = 8, .seed = 1, .eos_id = 7, .eos_bias = 50.f});
    const auto r = generate(m, std::vector<token_id>{7}, greedy_params);
    CHECK(r.tokens == std::vector<token_id>(12, 7));
}

TEST_CASE("generate: stop sequences match generated tokens only", "[generate]") {
    toy_model m({.vocab_size = 16, .seed = 5});
    const std::vector<token_id> prompt = {4, 9};
    const auto g = greedy(m, prompt, 12);
    generate_params p = greedy_params;
    p.stop_sequences = {{g[4], g[5]}};
    // First place where the pair completes (searching generated tokens only).
    std::size_t end = 0;
    for (std::size_t i = 1; i < g.size(); ++i)
        if (g[i - 1] == g[4] && g[i] == g[5]) {
            end = i + 1;
            break;
        }
    auto r = generate(m, prompt, p);
    CHECK(r.reason == stop_reason::stop_sequence);
    CHECK(r.tokens == std::vector<token_id>(g.begin(), g.begin() + std::ptrdiff_t(end)));
    // A stop sequence spanning the prompt/output boundary does not stop generation.
    p.stop_sequences = {{prompt.back(), g[0]}};
    r = generate(m, prompt, p);
    bool inside = false;
    for (std::size_t i = 1; i < g.size(); ++i)
        inside |= (g[i - 1] == prompt.back() && g[i] == g[0]);
    if (!inside) {
        CHECK(r.reason == stop_reason::max_new_tokens);
        CHECK(r.tokens == g);
    }
    // Single-token stop sequence = the first token.
    p.stop_sequences = {{g[0]}};
    r = generate(m, prompt, p);
    CHECK(r.tokens == std::vector<token_id>{g[0]});
}

TEST_CASE("generate: streaming callback sees every token and can stop", "[generate]") {
    toy_model m({.vocab_size = 16, .seed = 2});
    const std::vector<token_id> prompt = {3};
    std::vector<token_id> seen;
    std::vector<std::size_t> idx;
    auto r = generate(m, prompt, greedy_params, [&](const token_event& e) {
        seen.push_back(e.token);
        idx.push_back(e.index);
        return true;
    });
    CHECK(seen == r.tokens);
    CHECK(idx == std::vector<std::size_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
    seen.clear();
    r = generate(m, prompt, greedy_params, [&](token_id t) {
        seen.push_back(t);
        return seen.size() < 3;
    });
    CHECK(r.reason == stop_reason::callback);
    CHECK(r.tokens.size() == 3);
    CHECK(seen == r.tokens);
    std::size_t n = 0;
    r = generate(m, prompt, greedy_params, [&](token_id) { ++n; });  // void callback
    CHECK(n == 12);
}

TEST_CASE("generate: empty prompt is rejected unless a BOS token is given", "[generate]") {
    toy_model m({.vocab_size = 16, .seed = 2});
    const std::vector<token_id> empty;
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(generate(m, empty, greedy_params), config_error);)
    generate_params p = greedy_params;
    p.bos_token = 1;
    const auto r = generate(m, empty, p);
    CHECK(r.tokens == greedy(m, {1}, 12));
    CHECK(r.stats.prompt_tokens == 1);
}

TEST_CASE("generate: statistics are non-zero and consistent", "[generate]") {
    toy_model m({.vocab_size = 4096, .seed = 3});  // big enough for measurable times
    const auto r = generate(m, std::vector<token_id>{1, 2},
                            {.sampling = {.temperature = 0.f}, .max_new_tokens = 40});
    const auto& s = r.stats;
    CHECK(s.generated_tokens == 40);
    CHECK(s.prompt_tokens == 2);
    CHECK(s.model_calls == 40);
    CHECK(s.time_to_first_token > 0);
    CHECK(s.total_time >= s.time_to_first_token);
    CHECK(s.tokens_per_second > 0);
    CHECK(std::abs(s.tokens_per_second * s.total_time - 40) < 1e-6);
    CHECK(std::abs(s.time_per_output_token * 39 - (s.total_time - s.time_to_first_token)) < 1e-9);
    CHECK(s.tokens_per_model_call == 1.0);
    CHECK(s.acceptance_rate() == 0.0);
}

TEST_CASE("generate: sampled decoding follows softmax(x / T) and is reproducible", "[generate]") {
    toy_model m({.vocab_size = 8, .seed = 6});
    const std::vector<token_id> prompt = {2, 2};
    const float T = 0.8f;
    const auto x = m.logits_of(prompt);
    auto probs = [&](double t) {
        std::vector<double> p(8);
        double z = 0;
        for (int i = 0; i < 8; ++i) z += p[i] = std::exp(double(x[i]) / t);
        for (auto& v : p) v /= z;
        return p;
    };
    const std::size_t n = 100000;
    const auto counts = dk_test::histogram(8, n, [&](std::size_t i) {
        return generate(
                   m, prompt,
                   {.sampling = {.temperature = T, .seed = 11}, .max_new_tokens = 1, .sequence = i})
            .tokens.at(0);
    });
    const auto gof = dk_test::chi_square(counts, dk_test::with_overflow_bin(probs(T)));
    CHECK(gof.p_value > dk_test::false_failure_rate);
    CHECK_FALSE(gof.impossible_draw);
    CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(probs(1.0))).p_value < 1e-3);
    const generate_params sp{.sampling = {.temperature = 1.f, .seed = 3}, .max_new_tokens = 20};
    CHECK(generate(m, prompt, sp).tokens == generate(m, prompt, sp).tokens);
    generate_params sp2 = sp;
    sp2.sampling.seed = 4;
    CHECK(generate(m, prompt, sp).tokens != generate(m, prompt, sp2).tokens);
}

TEST_CASE("generate: a row with no valid token stops; bad params are named", "[generate]") {
    toy_model bad({.vocab_size = 4});
    bad.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), NAN);
    });
    const auto r = generate(bad, std::vector<token_id>{1}, greedy_params);
    CHECK(r.reason == stop_reason::no_valid_token);
    CHECK(r.tokens.empty());
    auto msg = [](generate_params p) { return p.check().value_or(""); };
    CHECK(msg({}) == "");
    CHECK(msg({.max_new_tokens = 0}).find("generate_params.max_new_tokens") != std::string::npos);
    CHECK(msg({.eos_ids = {-3}}) == "");  // negative EOS ids are ignored (docs/bad-input.md)
    CHECK(msg({.stop_strings = {"a"}}).find("generate_params.detokenize") != std::string::npos);
    CHECK(msg({.stop_sequences = {{}}}).find("stop_sequences") != std::string::npos);
    CHECK(msg({.bos_token = -5}).find("bos_token") != std::string::npos);
    CHECK(msg({.sampling = {.temperature = -1.f}}).find("generate_params.sampling") !=
          std::string::npos);
}

TEST_CASE("generate: the sampler's min_new_tokens suppresses generate's EOS ids", "[generate]") {
    toy_model m({.vocab_size = 8, .seed = 4, .eos_id = 7, .eos_bias = 50.f});
    generate_params p = greedy_params;
    p.eos_ids = {7};
    auto r = generate(m, std::vector<token_id>{1}, p);
    CHECK(r.tokens.empty());
    CHECK(r.reason == stop_reason::eos);
    p.sampling.min_new_tokens = 3;
    r = generate(m, std::vector<token_id>{1}, p);
    CHECK(r.tokens.size() == 3);
    CHECK(r.reason == stop_reason::eos);
    CHECK(std::find(r.tokens.begin(), r.tokens.end(), 7) == r.tokens.end());
}

TEST_CASE("stop_checker: EOS ids and stop sequences over spans", "[generate]") {
    const std::vector<token_id> eos = {2, 7};
    const std::vector<std::vector<token_id>> stops = {{4, 5}, {9}};
    const stop_checker s(eos, stops);
    CHECK(s.is_eos(7));
    CHECK_FALSE(s.is_eos(3));  // negative control
    const std::vector<token_id> a = {1, 4, 5}, b = {4, 5, 1}, c = {5};
    CHECK(s.ends_with_stop_sequence(a));
    CHECK_FALSE(s.ends_with_stop_sequence(b));
    CHECK_FALSE(s.ends_with_stop_sequence(c));  // shorter than {4, 5}, not {9}
    const stop_checker none(std::span<const token_id>{});
    CHECK_FALSE(none.is_eos(0));
    CHECK_FALSE(none.ends_with_stop_sequence(a));
    CHECK(detail::check_stop_conditions("x", eos, stops) == std::nullopt);
    const std::vector<token_id> negative = {-3};
    CHECK(detail::check_stop_conditions("x", negative) == std::nullopt);  // ignored, not an error
    const std::vector<std::vector<token_id>> bad = {{1, -3}};
    CHECK(detail::check_stop_conditions("x", eos, bad)->find("x.stop_sequences") !=
          std::string::npos);
}
}  // namespace dk_t_generate
