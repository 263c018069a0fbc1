// The open pipeline: user steps and user processors inserted at chosen positions of the order,
// against hand-computed distributions; built-in steps through the same table.
#include "dk_test.hpp"

#include <cmath>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_pipeline {

using namespace decodekit;

namespace {
// Removes the most probable entry of the set (keeps at least one).
struct drop_top {
    int calls = 0;
    void apply(working_set& w, const step_context&) {
        ++calls;
        w.materialise();
        w.order();
        if (w.kept().size() < 2) return;
        // ordered: entry 0 is the most probable; keep the rest
        w.keep_if([](std::size_t i) { return i > 0; });
    }
};
std::vector<std::pair<token_id, double>> dist(sampler& s, std::span<const float> x) {
    const auto d = s.distribution(x);
    std::vector<std::pair<token_id, double>> v;
    for (std::size_t i = 0; i < d.size(); ++i) v.emplace_back(d.tokens[i], d.probs[i]);
    return v;
}
bool near(double a, double b) { return std::fabs(a - b) <= 1e-6; }
}  // namespace

TEST_CASE("a user step runs at its position of the order", "[pipeline][step]") {
    const std::vector<float> x{3.f, 2.f, 1.f, 0.f};
    const double e2 = std::exp(2.0), e1 = std::exp(1.0), e0 = 1.0;
    SECTION("before top-k (llama.cpp order: position 0 is before every step)") {
        sampler s({.top_k = 2, .steps = {{.position = 0, .step = drop_top{}}}}, 4);
        const auto d = dist(s, x);  // drop id 0, then top-2 of {1, 2, 3} = {1, 2}
        REQUIRE(d.size() == 2);
        CHECK(d[0].first == 1);
        CHECK(near(d[0].second, e2 / (e2 + e1)));
        CHECK(d[1].first == 2);
    }
    SECTION("after top-k (position 2 of top_n_sigma, top_k, ...)") {
        sampler s({.top_k = 2, .steps = {{.position = 2, .step = drop_top{}}}}, 4);
        const auto d = dist(s, x);  // top-2 = {0, 1}, then drop id 0
        REQUIRE(d.size() == 1);
        CHECK(d[0].first == 1);
        CHECK(d[0].second == 1.f);
    }
    SECTION("past the end: after every built-in step; two user steps keep their list order") {
        sampler s(
            {.top_k = 3,
             .steps = {{.position = 99, .step = drop_top{}}, {.position = 99, .step = drop_top{}}}},
            4);
        const auto d = dist(s, x);  // top-3 = {0, 1, 2}, drop 0, drop 1
        REQUIRE(d.size() == 1);
        CHECK(d[0].first == 2);
    }
    SECTION("HF order, temperature first: the step sees the tempered set") {
        sampler s({.temperature = 0.5f,
                   .order = sampling_order::hf,
                   .steps = {{.position = 1, .step = drop_top{}}}},
                  4);
        const auto d = dist(s, x);  // {1, 2, 3} at temperature 0.5
        const double a = std::exp(4.0), b = std::exp(2.0), c = e0;
        REQUIRE(d.size() == 3);
        CHECK(near(d[0].second, a / (a + b + c)));
    }
    SECTION("greedy runs the user steps, then takes the argmax") {
        sampler s({.temperature = 0.f, .steps = {{.position = 0, .step = drop_top{}}}}, 4);
        const auto r = s.sample(x, 0, 0);
        REQUIRE(r.ok());
        CHECK(r.token == 1);
        sampler plain({.temperature = 0.f}, 4);
        CHECK(plain.sample(x, 0, 0).token == 0);  // negative control
    }
    SECTION("each sampler owns its copy of the step (its state)") {
        sampling_params p{.steps = {{.position = 0, .step = drop_top{}}}};
        sampler a(p, 4), b(p, 4);
        (void)a.sample(x, 0, 0);
        (void)a.sample(x, 0, 1);
        (void)b.sample(x, 0, 0);
        // a's copy ran twice, b's once; the params' prototype never ran
        auto* pa = a.user_step<drop_top>(0);
        auto* pb = b.user_step<drop_top>(0);
        REQUIRE(pa != nullptr);
        REQUIRE(pb != nullptr);
        CHECK(pa->calls == 2);
        CHECK(pb->calls == 1);
        CHECK(p.steps[0].step.get<drop_top>()->calls == 0);
        CHECK(a.user_step<drop_top>(1) == nullptr);
    }
    SECTION("an empty step is a configuration error naming the field") {
        sampling_params p{.steps = {{.position = 0, .step = {}}}};
        CHECK(p.check().value_or("").find("sampling_params.steps") == 0);
    }
}

namespace {
// Sets token `id` to `value` (declares it: sparse).
struct set_logit {
    token_id id;
    float value;
    void apply(std::span<float> x, const processor_context&) { x[std::size_t(id)] = value; }
    void touched(const processor_context&, token_sink& s) const { s(id); }
};
// Adds `delta` to every entry (dense: no touched()).
struct shift_all {
    float delta;
    void apply(std::span<float> x, const processor_context&) {
        for (float& v : x) v += delta;
    }
};
}  // namespace

TEST_CASE("a user processor runs at its slot of the processor order", "[pipeline][processor]") {
    const std::vector<float> x{0.f, 0.f, 0.f, 0.f};
    const double e = std::exp(1.0);
    auto prob1 = [&](const sampling_params& p) {
        sampler s(p, 4);
        return double(s.distribution(x).prob(1));
    };
    // token 1 set to 5 before / after a +1 bias on it: 6 or 5
    const sampling_params before{.logit_biases = {{1, 1.f}},
                                 .processors = {{processor_slot::logit_bias, set_logit{1, 5.f}}}};
    const sampling_params after{.logit_biases = {{1, 1.f}},
                                .processors = {{processor_slot::end, set_logit{1, 5.f}}}};
    const double e6 = std::exp(6.0), e5 = std::exp(5.0);
    CHECK(near(prob1(before), e6 / (e6 + 3)));
    CHECK(near(prob1(after), e5 / (e5 + 3)));
    // a ban wins over a processor before it, not over one after it
    const sampling_params banned_first{.banned_tokens = {1},
                                       .processors = {{processor_slot::end, set_logit{1, 1.f}}}};
    const sampling_params banned_last{
        .banned_tokens = {1}, .processors = {{processor_slot::allowed_tokens, set_logit{1, 1.f}}}};
    CHECK(near(prob1(banned_first), e / (e + 3)));
    CHECK(prob1(banned_last) == 0.0);
    // sparse (declared ids, no row copy with top-k first) and dense processors agree with the
    // hand-computed law
    for (const sampling_params& p :
         {sampling_params{.top_k = 3, .processors = {{processor_slot::end, set_logit{2, 1.f}}}},
          sampling_params{.top_k = 3,
          .processors = {{processor_slot::end, set_logit{2, 1.f}},
                         {processor_slot::end, shift_all{-2.f}}}}}) {
        sampler s(p, 4);
        const auto d = s.distribution(x);
        REQUIRE(d.size() == 3);  // token 2 (1 after the processors) and the first two of the zeros
        CHECK(d.tokens[0] == 2);
        CHECK(near(d.probs[0], e / (e + 2)));
        CHECK(d.prob(3) == 0.f);  // top-3 exactly: ties by lowest id
    }
    // the sampler owns its copy
    sampler s(before, 4);
    CHECK(s.user_processor<set_logit>(0) != nullptr);
    CHECK(s.user_processor<shift_all>(0) == nullptr);
}

namespace {
// Calls back into a sampler from inside a call (the only deterministic way to overlap calls).
struct reenter {
    sampler* target = nullptr;
    sampling_workspace* ws = nullptr;
    sample_status* seen = nullptr;
    void apply(std::span<float> x, const processor_context&) {
        if (target) *seen = ws ? target->sample(x, {}, *ws).status : target->sample(x, 0, 0).status;
    }
};
}  // namespace

TEST_CASE("a sampler or a workspace inside another call reports concurrent_use",
          "[pipeline][thread]") {
    const std::vector<float> x{1.f, 2.f, 3.f, 4.f};
    sample_status seen = sample_status::ok;
    SECTION("the same sampler re-entered") {
        sampler s({.processors = {{processor_slot::end, reenter{}}}}, 4);
        s.user_processor<reenter>(0)->target = &s;
        s.user_processor<reenter>(0)->seen = &seen;
        CHECK(s.sample(x, 0, 0).ok());  // the outer call is unaffected
        CHECK(seen == sample_status::concurrent_use);
    }
    SECTION("another sampler on the thread's (busy) workspace, then on its own") {
        sampler inner({}, 4);
        sampler s({.processors = {{processor_slot::end, reenter{&inner, nullptr, &seen}}}}, 4);
        CHECK(s.sample(x, 0, 0).ok());
        CHECK(seen == sample_status::concurrent_use);
        sampling_workspace own;
        s.user_processor<reenter>(0)->ws = &own;
        CHECK(s.sample(x, 0, 1).ok());
        CHECK(seen == sample_status::ok);  // given its own workspace, the inner call works
    }
}
}  // namespace dk_t_sampling_pipeline
