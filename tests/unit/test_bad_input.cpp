// Bad input: the rows of docs/bad-input.md that other test files do not already check (that
// document names the tests covering the other rows). Every outcome here is a documented one:
// a config_error naming the field, a status in the result, or an input ignored by rule; never a
// crash, an out-of-bounds access (the asan preset runs this file) or a silent token 0.
#include "dk_test.hpp"

#include <algorithm>
#include "toy_model.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_bad_input {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();
constexpr token_id big = std::numeric_limits<token_id>::max();

bool names(const std::optional<std::string>& problem, const std::string& field) {
    return problem && problem->find(field) != std::string::npos;
}

std::vector<std::pair<token_id, float>> dist_of(sampler& s, std::span<const float> row,
                                                const sample_context& ctx = {}) {
    const auto d = s.distribution(row, ctx);
    std::vector<std::pair<token_id, float>> v;
    for (std::size_t i = 0; i < d.size(); ++i) v.emplace_back(d.tokens[i], d.probs[i]);
    return v;
}
}  // namespace

TEST_CASE("bad input: a logits row whose size is not the sampler's vocabulary", "[bad_input]") {
    for (sampling_params p :
         {sampling_params{}, sampling_params{.temperature = 0.f}, sampling_params{.top_k = 2},
          sampling_params{.top_p = 0.5f}, sampling_params{.banned_tokens = {1}}}) {
        sampler s(p, 4);
        for (std::size_t n : {0u, 1u, 3u, 5u, 100u}) {
            const std::vector<float> row(n, 1.f);
            const auto r = s.sample(row);
            CHECK(r.status == sample_status::bad_input);
            CHECK(r.token == -1);  // never a silent token 0
            CHECK_FALSE(r.ok());
            CHECK(s.distribution(row).empty());
        }
        const std::vector<float> good{1.f, 2.f, 3.f, 4.f};
        CHECK(s.sample(good).ok());  // negative control: the right size works
    }
    SECTION("a refused call does not advance the sampler's own step counter") {
        const std::vector<float> good{1.f, 2.f, 3.f, 4.f}, bad(3, 1.f);
        for (std::uint64_t seed = 0; seed < 64; ++seed) {
            sampler fresh({.seed = seed}, 4), refused({.seed = seed}, 4);
            REQUIRE(refused.sample(bad).status == sample_status::bad_input);
            // the first good call of each is keyed by step 0, the second by step 1
            CHECK(refused.sample(good).token == fresh.sample(good).token);
            CHECK(refused.sample(good).token == fresh.sample(good).token);
            CHECK(fresh.sample(good).token == refused.sample(good, 0, 2).token);
        }
    }
    SECTION("batched: a matrix narrower than a row's sampler gives bad_input for that row only") {
        sampler a({}, 4), b({}, 3);
        const std::vector<float> m{1.f, 2.f, 3.f, 4.f, 1.f, 2.f, 3.f, 4.f};
        const batch_row rows[2] = {{&a, {.sequence = 1}}, {&b, {.sequence = 2}}};
        std::vector<sample_result> out(2);
        sample_batch(logits_matrix{m.data(), 2, 4, 4}, rows, out);
        CHECK(out[0].ok());
        CHECK(out[1].status == sample_status::bad_input);
        CHECK(out[1].token == -1);
    }
}

TEST_CASE("bad input: empty spans", "[bad_input]") {
    const std::span<const float> empty;
    SECTION("kernels") {
        CHECK(kernels::max(empty) == -inf);
        CHECK(kernels::argmax(empty) == npos);
        CHECK(kernels::sum(empty) == 0.0);
        CHECK(kernels::logsumexp(empty) == -std::numeric_limits<double>::infinity());
        CHECK(kernels::entropy(empty) == 0.0);
        std::vector<float> out;
        CHECK(kernels::softmax(empty, out).sum == 0.0);
        candidates c(0);
        CHECK(kernels::top_k(empty, 5, tie_policy::keep_ties, c) == 0);
        CHECK(kernels::filter_at_least(empty, 0.f, c) == 0);
        CHECK(kernels::top_p(empty, 0.9f, 1.f, 1, c) == 0);
        CHECK(kernels::draw_inverse_cdf(empty, 0.5) == npos);
    }
    SECTION("processors with ids but no logits write nothing") {
        // An empty view at the start of a guard buffer: a write past the view lands in the guard,
        // so the check below fails in a plain build too, not only under ASan.
        std::vector<float> guard(8, 7.f);
        std::span<float> none(guard.data(), 0);
        const std::vector<token_id> ids{0, 1, 2, -1, big};
        apply_banned_tokens(none, ids);
        apply_allowed_tokens(none, ids);
        apply_min_length(none, 0, 5, ids);
        apply_no_repeat_ngram(none, ids, 2);
        const logit_bias biases[] = {{0, 1.f}, {big, -inf}};
        apply_logit_bias(none, biases);
        penalty_workspace pw(0);
        apply_penalties(none, ids, 0, {.repetition = 1.3f, .frequency = 0.5f}, pw);
        dry_workspace dw(0);
        apply_dry(none, ids, {.multiplier = 0.8f}, dw);
        CHECK(std::all_of(guard.begin(), guard.end(), [](float v) { return v == 7.f; }));
    }
    SECTION("an empty history or allowed list is no restriction") {
        sampler s({.allowed_tokens = {}, .penalties = {.repetition = 1.5f}}, 3);
        const std::vector<float> row{1.f, 2.f, 3.f};
        CHECK(s.distribution(row, {.history = {}}).size() == 3);
    }
    SECTION("a sampler over an empty vocabulary is a configuration error") {
        DK_IF_EXCEPTIONS(CHECK_THROWS_AS(sampler({}, 0), config_error);)
    }
}

TEST_CASE("bad input: token ids out of range in parameters, histories and requests",
          "[bad_input]") {
    const std::vector<float> row{0.5f, 2.f, 1.f, -1.f};
    sampler plain({}, 4);
    const auto want = dist_of(plain, row);
    REQUIRE(want.size() == 4);
    SECTION("banned ids, biases and EOS ids outside [0, V) are ignored") {
        sampler s({.banned_tokens = {-1, 4, big, std::numeric_limits<token_id>::min()},
                   .logit_biases = {{-3, -inf}, {4, 100.f}, {big, 5.f}},
                   .min_new_tokens = 10,
                   .eos_ids = {-2, 7}},
                  4);
        CHECK(dist_of(s, row) == want);
    }
    SECTION("an allowed list holding only out-of-range ids bans everything: no_valid_token") {
        sampler s({.allowed_tokens = {-1, 4, big}}, 4);
        const auto r = s.sample(row);
        CHECK(r.status == sample_status::no_valid_token);
        CHECK(r.token == -1);
        sampler t({.allowed_tokens = {-1, 2, big}}, 4);  // control: the valid id survives
        CHECK(t.sample(row).token == 2);
    }
    SECTION("penalty histories: out-of-range ids are ignored") {
        sampler s({.penalties = {.repetition = 1.5f, .frequency = 0.3f, .presence = 0.2f}}, 4);
        const std::vector<token_id> dirty{1, -1, 4, big, 1, 2, -7};
        const std::vector<token_id> clean{1, 1, 2};
        CHECK(dist_of(s, row, {.history = dirty}) == dist_of(s, row, {.history = clean}));
        CHECK(dist_of(s, row, {.history = clean}) != want);  // control: the penalty acts
    }
    SECTION("DRY, no-repeat-ngram and banned sequences with out-of-range ids never write them") {
        sampler s({.dry = {.multiplier = 1.f, .allowed_length = 1, .sequence_breakers = {-1, 9}},
                   .no_repeat_ngram_size = 2,
                   .banned_sequences = {{big, -1}, {-1}, {4, 4, 4}}},
                  4);
        const std::vector<token_id> h{-1, 4, -1, 4, -1, big, 7, -1};
        const auto d = dist_of(s, row, {.history = h});
        CHECK(d == want);  // nothing in range was hit
    }
    SECTION("requested logprobs of out-of-range ids are -inf, in request order") {
        sampler s({.logprobs = {.ids = {-1, 1, 4, big}}}, 4);
        const auto r = s.sample(row);
        REQUIRE(r.requested.size() == 4);
        CHECK(r.requested[0].logprob == -inf);
        CHECK(r.requested[1].logprob > -inf);
        CHECK(r.requested[2].logprob == -inf);
        CHECK(r.requested[3].logprob == -inf);
        CHECK(r.requested[3].token == big);
    }
}

TEST_CASE("bad input: zero-length prompts", "[bad_input]") {
    toy_model m;
    const std::vector<token_id> empty;
    DK_IF_EXCEPTIONS(
        CHECK_THROWS_AS(contrastive_search(m, empty, {}), config_error);
        CHECK_THROWS_AS(dola_decode(m, empty, {.layers = dola_layer_set::low}), config_error);
        basic_processing proc; ngram_proposer ng{};
        CHECK_THROWS_AS(speculative_decode(m, ng, empty, {}, proc), config_error);
        CHECK_THROWS_AS(beam_search(m, empty, {}), config_error);)
    // generate() accepts an empty prompt when a BOS token is given (test_generate covers it);
    // the strategies above need the caller to put BOS in the prompt.
    const std::vector<token_id> bos{1};
    CHECK(contrastive_search(m, bos, {.max_new_tokens = 2}).tokens.size() <= 2);  // control
}

TEST_CASE("bad input: absurd sizes are rejected before anything is allocated", "[bad_input]") {
    CHECK(names(beam_search_params{.num_beams = 1000000}.check(), "beam_search_params.num_beams"));
    CHECK(names(contrastive_params{.top_k = 1u << 30}.check(), "contrastive_params.top_k"));
    CHECK(names(speculative_params{.max_draft_length = 1u << 20}.check(),
                "speculative_params.max_draft_length"));
    CHECK(names(generate_params{.max_new_tokens = 0}.check(), "generate_params.max_new_tokens"));
    DK_IF_EXCEPTIONS(
        // 2^31 and SIZE_MAX entries: a range error from the constructor, no allocation attempt.
        CHECK_THROWS_AS(sampler({}, std::size_t(1) << 31), config_error);
        CHECK_THROWS_AS(sampler({}, std::numeric_limits<std::size_t>::max()), config_error);
        try { sampler s({}, std::size_t(1) << 31); } catch (const config_error& e) {
            CHECK(std::string(e.what()).find("vocab_size") != std::string::npos);
        })
    // Long histories are fine: DRY looks at most at its workspace capacity, penalties at their
    // window; a 200000-token history costs O(window).
    std::vector<token_id> longh(200000);
    for (std::size_t i = 0; i < longh.size(); ++i) longh[i] = token_id(i % 3);
    sampler s({.penalties = {.repetition = 1.2f, .repetition_scope = penalty_scope::last_n},
               .dry = {.multiplier = 0.8f},
               .no_repeat_ngram_size = 3},
              4);
    const std::vector<float> row{0.5f, 2.f, 1.f, -1.f};
    CHECK(s.sample(row, {.history = longh}).ok());
}

TEST_CASE("bad input: NaN and infinite parameters are named by check()", "[bad_input]") {
    auto sp = [](auto set) {
        sampling_params p;
        set(p);
        return p.check();
    };
    CHECK(names(sp([](auto& p) { p.temperature = qnan; }), "sampling_params.temperature"));
    CHECK(names(sp([](auto& p) { p.temperature = inf; }), "sampling_params.temperature"));
    CHECK(names(sp([](auto& p) { p.top_p = qnan; }), "sampling_params.top_p"));
    CHECK(names(sp([](auto& p) { p.min_p = qnan; }), "sampling_params.min_p"));
    CHECK(names(sp([](auto& p) { p.typical_p = qnan; }), "sampling_params.typical_p"));
    CHECK(names(sp([](auto& p) { p.epsilon = qnan; }), "sampling_params.epsilon"));
    CHECK(names(sp([](auto& p) { p.eta = qnan; }), "sampling_params.eta"));
    CHECK(names(sp([](auto& p) { p.top_n_sigma = inf; }), "sampling_params.top_n_sigma"));
    CHECK(names(sp([](auto& p) { p.xtc_probability = qnan; }), "sampling_params.xtc_probability"));
    CHECK(names(sp([](auto& p) { p.xtc_threshold = qnan; }), "sampling_params.xtc_threshold"));
    CHECK(names(sp([](auto& p) { p.mirostat = true, p.mirostat_tau = qnan; }),
                "sampling_params.mirostat_tau"));
    CHECK(names(sp([](auto& p) { p.mirostat = true, p.mirostat_eta = inf; }),
                "sampling_params.mirostat_eta"));
    CHECK(names(sp([](auto& p) { p.penalties.repetition = qnan; }), "penalties"));
    CHECK(names(sp([](auto& p) { p.penalties.frequency = inf; }), "penalties"));
    CHECK(names(sp([](auto& p) { p.dry.multiplier = qnan; }), "dry"));
    CHECK(names(sp([](auto& p) { p.dry.base = inf; }), "dry"));
    CHECK(names(sp([](auto& p) { p.logit_biases = {{0, qnan}}; }), "logit_biases"));
    // Enumerators beyond the last one (from an untrusted integer): named, and a step value
    // >= 32 must not be shifted by (regression: UB shift in check(), found by fuzz_sampler).
    CHECK(names(sp([](auto& p) {
                    p.order = sampling_order::custom;
                    p.custom_order = {sampling_step(200)};
                }),
                "sampling_params.custom_order"));
    CHECK(names(sp([](auto& p) { p.order = sampling_order(9); }), "sampling_params.order"));
    CHECK(names(penalty_params{.repetition_scope = penalty_scope(7)}.check(), "repetition_scope"));
    CHECK(names(beam_search_params{.length_penalty = qnan}.check(), "length_penalty"));
    CHECK(names(beam_search_params{.temperature = inf}.check(), "temperature"));
    CHECK(names(contrastive_params{.alpha = qnan}.check(), "contrastive_params.alpha"));
    CHECK(names(dola_params{.relative_top = qnan}.check(), "dola_params.relative_top"));
    CHECK(names(basic_processing{.temperature = qnan}.check(), "basic_processing.temperature"));
    CHECK(names(basic_processing{.top_p = 0.f}.check(), "basic_processing.top_p"));
    CHECK_FALSE(sampling_params{}.check());  // control
}

TEST_CASE("bad input: special logits (regressions found by fuzzing)", "[bad_input]") {
    SECTION("entropy with a subnormal weight is finite (reference and kernel)") {
        const std::vector<float> x{0.f, -745.f, 0.f};
        CHECK(std::isfinite(reference::entropy(x)));
        CHECK(reference::entropy(x) == dk_test::Approx(std::log(2.0)));
        CHECK(kernels::entropy(x) == dk_test::Approx(std::log(2.0)));
    }
    SECTION("beam search: certain steps with an extreme length penalty score 0, not NaN") {
        toy_model m(toy_model_config{.vocab_size = 4});
        m.set_logits_function([](std::span<const token_id> ctx, std::span<float> out) {
            for (float& v : out) v = -inf;
            out[ctx.size() % out.size()] = 1.f;  // one valid token per step: logprob 0
        });
        const std::vector<token_id> prompt{1};
        for (float lp : {-1e30f, 1e30f, -1000.f}) {
            const auto r = beam_search(m, prompt,
                                       {.num_beams = 2,
                                        .max_new_tokens = 5,
                                        .length_penalty = lp,
                                        .length_includes_prompt = true});
            REQUIRE_FALSE(r.hypotheses.empty());
            for (const auto& h : r.hypotheses) {
                CHECK_FALSE(std::isnan(h.score));
                CHECK(h.sum_logprobs == 0.0);
            }
        }
    }
    SECTION("rows of NaN / -inf / +inf through the sampler never give token 0 silently") {
        sampler s({}, 3);
        CHECK(s.sample(std::vector<float>{qnan, qnan, qnan}).token == -1);
        CHECK(s.sample(std::vector<float>{-inf, -inf, -inf}).token == -1);
        CHECK(s.sample(std::vector<float>{-inf, qnan, inf}).token == 2);
    }
}

// These checks hold in every build type: the asan preset builds this file with NDEBUG, where
// DECODEKIT_ASSERT is compiled out, so a missing check would read or write out of bounds there.
TEST_CASE("bad input: batched calls check their sizes, the matrix and distinct samplers",
          "[bad_input][batch]") {
    sampler a({.seed = 1}, 4), b({.seed = 2}, 4);
    const std::vector<float> m{1.f, 2.f, 3.f, 4.f, 4.f, 3.f, 2.f, 1.f};
    const batch_row two[2] = {{&a, {.sequence = 1}}, {&b, {.sequence = 2}}};
    batch_sampler pool(2);
    auto both = [&](const logits_matrix& mat, std::span<const batch_row> rows,
                    std::span<sample_result> out) {
        const batch_status s1 = sample_batch(mat, rows, out);
        const batch_status s2 = pool.sample(mat, rows, out);
        CHECK(s1 == s2);
        return s1;
    };
    SECTION("fewer results than rows: nothing written past them") {
        std::vector<sample_result> out(1);
        CHECK(both(logits_matrix::view(m, 2, 4), two, out) == batch_status::size_mismatch);
        CHECK(out[0].status == sample_status::bad_input);
    }
    SECTION("fewer rows than the matrix, or more") {
        std::vector<sample_result> out(2);
        CHECK(both(logits_matrix::view(m, 2, 4), std::span(two, 1), out) ==
              batch_status::size_mismatch);
        CHECK(both(logits_matrix::view(m, 1, 4), two, out) == batch_status::size_mismatch);
    }
    SECTION("a span too short for its rows, a stride below cols, no data") {
        std::vector<sample_result> out(2);
        CHECK(both(logits_matrix::view(std::span(m).first(7), 2, 4), two, out) ==
              batch_status::bad_matrix);
        CHECK(both(logits_matrix::view(m, 2, 4, 8), two, out) == batch_status::bad_matrix);
        CHECK(both(logits_matrix{m.data(), 2, 4, 3}, two, out) == batch_status::bad_matrix);
        CHECK(both(logits_matrix{nullptr, 2, 4, 4}, two, out) == batch_status::bad_matrix);
        const std::size_t huge = std::numeric_limits<std::size_t>::max() / 2;
        std::vector<batch_row> three(3, two[0]);
        three[1].row_sampler = &b;
        sampler c({}, 4);
        three[2].row_sampler = &c;
        std::vector<sample_result> out3(3);
        CHECK(both(logits_matrix::view(m, 3, 4, huge), three, out3) ==
              batch_status::bad_matrix);  // (rows - 1) * stride overflows: rejected, not wrapped
    }
    SECTION("the same sampler in two rows, or none") {
        std::vector<sample_result> out(2);
        const batch_row dup[2] = {{&a, {.sequence = 1}}, {&a, {.sequence = 2}}};
        CHECK(both(logits_matrix::view(m, 2, 4), dup, out) == batch_status::duplicate_sampler);
        CHECK(out[0].status == sample_status::bad_input);
        const batch_row none[2] = {{&a, {}}, {nullptr, {}}};
        CHECK(both(logits_matrix::view(m, 2, 4), none, out) == batch_status::null_sampler);
    }
    SECTION("negative control: a good call samples every row, twice in a row") {
        std::vector<sample_result> out(2);
        CHECK(both(logits_matrix::view(m, 2, 4), two, out) == batch_status::ok);
        CHECK(both(logits_matrix::view(m, 2, 4), two, out) == batch_status::ok);
        CHECK(out[0].ok());
        CHECK(out[1].ok());
    }
}
}  // namespace dk_t_bad_input
