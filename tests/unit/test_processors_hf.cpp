// The processors Hugging Face users expect, each a processor type inserted through
// sampling_params::processors: forced BOS / EOS, suppress tokens at the first generated
// position, exponential decay length penalty, multi-token sequence bias, and a per-step
// allowed-set function. Each on hand-computed inputs mirroring HF's own tests and docstring
// examples; through a sampler at a slot of the processor order (greedy, the exact distribution,
// and a chi-square of sampled draws against it); touched() covering every id apply() changes
// and apply() reading no undeclared id (NaN sentinels); special values; configuration errors
// naming the field.
#include "dk_test.hpp"
#include "hf_processors_fixtures.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <random>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_processors_hf {

using namespace decodekit;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

bool same(float a, float b) {
    return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b) ||
           (std::isnan(a) && std::isnan(b));
}

processor_context ctx(const std::vector<token_id>& h, std::size_t prompt, std::size_t v,
                      std::uint64_t sequence = 0) {
    return {.history = h, .prompt_length = prompt, .sequence = sequence, .vocab_size = v};
}

template <class P>
std::vector<float> applied(P p, std::vector<float> x, const processor_context& c) {
    p.apply(std::span<float>(x), c);
    return x;
}

/// The ids a sparse processor declares for a call (ids outside [0, V) dropped, as a pipeline
/// does).
template <class P>
std::vector<char> declared(const P& p, const processor_context& c) {
    std::vector<char> m(c.vocab_size, 0);
    token_sink sink(
        [](void* q, token_id t) noexcept {
            auto& v = *static_cast<std::vector<char>*>(q);
            if (t >= 0 && std::size_t(t) < v.size()) v[std::size_t(t)] = 1;
        },
        &m);
    p.touched(c, sink);
    return m;
}

/// touched() covers every id apply() changes, and apply() on a row holding NaN outside the
/// declared ids gives the same declared entries (it reads nothing else). Returns the number of
/// declared ids.
template <class P>
std::size_t check_declared(const P& p, const std::vector<float>& x, const processor_context& c) {
    const std::vector<float> want = applied(p, x, c);
    const std::vector<char> m = declared(p, c);
    std::vector<float> sparse(x.size(), qnan);
    for (std::size_t i = 0; i < x.size(); ++i)
        if (m[i]) sparse[i] = x[i];
    const std::vector<float> got = applied(p, sparse, c);
    std::size_t n = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        INFO("id " << i << " declared " << int(m[i]) << " x " << x[i] << " want " << want[i]
                   << " sparse result " << got[i]);
        if (m[i]) {
            ++n;
            REQUIRE(same(got[i], want[i]));
        } else {
            REQUIRE(same(want[i], x[i]));
        }
    }
    return n;
}

/// A random row with special values.
std::vector<float> random_row(std::mt19937_64& rng, std::size_t v) {
    std::vector<float> x(v);
    std::normal_distribution<float> g(0.f, 3.f);
    for (float& e : x) {
        switch (rng() % 24) {
            case 0:
                e = qnan;
                break;
            case 1:
                e = inf;
                break;
            case 2:
                e = -inf;
                break;
            case 3:
                e = 0.f;
                break;
            default:
                e = g(rng);
        }
    }
    return x;
}

/// The probabilities of a sampler's distribution by id.
std::vector<double> law(sampler& s, std::span<const float> x, const sample_context& c) {
    const auto d = s.distribution(x, c);
    std::vector<double> p(x.size(), 0.0);
    for (std::size_t i = 0; i < d.size(); ++i) p[std::size_t(d.tokens[i])] = d.probs[i];
    return p;
}

/// Checks `n` sampled draws against the sampler's distribution (chi-square; a false failure
/// has probability dk_test::false_failure_rate = 1e-7) and that distribution against `want`.
void check_sampled(sampler& s, std::span<const float> x, const sample_context& c,
                   const std::vector<double>& want, std::size_t n = 20000) {
    const std::vector<double> p = law(s, x, c);
    REQUIRE(p.size() == want.size());
    for (std::size_t i = 0; i < p.size(); ++i) {
        INFO("id " << i);
        CHECK(p[i] == dk_test::Approx(want[i]).margin(1e-6));
    }
    const auto counts = dk_test::histogram(x.size(), n, [&](std::size_t i) {
        sample_context ci = c;
        ci.step = i;
        const sample_result r = s.sample(x, ci);
        return r.ok() ? r.token : token_id(x.size());
    });
    dk_test::require_law(counts, want);
}

sample_context sctx(const std::vector<token_id>& h, std::size_t prompt, std::uint64_t seq = 0) {
    return {.sequence = seq, .step = 0, .history = h, .prompt_length = prompt};
}

}  // namespace

// ---- forced BOS / EOS ------------------------------------------------------------------------

TEST_CASE("forced BOS: HF's test, the first generated position only", "[processors][hf]") {
    const std::size_t v = 20;
    const std::vector<float> uniform(v, 1.f / float(v));
    const forced_bos_processor p(0);
    // HF: input_ids of length 1 (the decoder start) -> forced; here: nothing generated yet
    const std::vector<token_id> prompt{3, 7, 11};
    auto forced = applied(p, uniform, ctx(prompt, 3, v));
    CHECK(forced[0] == 0.f);
    for (std::size_t i = 1; i < v; ++i) CHECK(forced[i] == -inf);
    // HF: length 4 -> not forced; here: tokens generated
    const std::vector<token_id> later{3, 7, 11, 0, 5};
    CHECK(applied(p, uniform, ctx(later, 3, v)) == uniform);
    // the forced entry becomes 0 whatever it held; an id outside [0, V) forces nothing in
    for (float special : {qnan, -inf, inf}) {
        std::vector<float> x = uniform;
        x[0] = special;
        CHECK(applied(p, x, ctx(prompt, 3, v))[0] == 0.f);
    }
    const auto none = applied(forced_bos_processor(25), uniform, ctx(prompt, 3, v));
    CHECK(std::all_of(none.begin(), none.end(), [](float e) { return e == -inf; }));
    // touched(): every id when forcing, none after
    CHECK(check_declared(p, uniform, ctx(prompt, 3, v)) == v);
    CHECK(check_declared(p, uniform, ctx(later, 3, v)) == 0);
    CHECK(forced_bos_processor::check(-1).value_or("") ==
          "forced_bos_processor.bos_token must be >= 0, got -1");
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(forced_bos_processor(-3), config_error));
}

TEST_CASE("forced EOS: HF's test, max_length counted as HF does (total or generated)",
          "[processors][hf]") {
    const std::size_t v = 20;
    const std::vector<float> uniform(v, 1.f / float(v));
    // HF: max_length 5, eos 0: input_ids of length 4 forced, length 3 not
    const forced_eos_processor total({.max_length = 5, .eos_ids = {0}});
    const std::vector<token_id> four{1, 2, 3, 4}, three{1, 2, 3}, five{1, 2, 3, 4, 5};
    auto forced = applied(total, uniform, ctx(four, 2, v));
    CHECK(forced[0] == 0.f);
    for (std::size_t i = 1; i < v; ++i) CHECK(forced[i] == -inf);
    CHECK(applied(total, uniform, ctx(three, 2, v)) == uniform);
    CHECK(applied(total, uniform, ctx(five, 2, v)) == uniform);  // == max_length - 1 only
    // max_new_tokens: generated tokens only (HF's max_length = prompt + max_new_tokens)
    const forced_eos_processor gen(
        {.max_length = 3, .basis = length_basis::generated, .eos_ids = {19, 4, 99}});
    CHECK(!gen.forcing(ctx(four, 3, v)));  // 1 generated
    CHECK(gen.forcing(ctx(five, 3, v)));   // 2 generated: the last allowed position
    const auto two = applied(gen, uniform, ctx(five, 3, v));
    for (std::size_t i = 0; i < v; ++i) CHECK(two[i] == ((i == 4 || i == 19) ? 0.f : -inf));
    // max_length 1: the first position of all (total: an empty history)
    const forced_eos_processor one(
        {.max_length = 1, .basis = length_basis::generated, .eos_ids = {2}});
    CHECK(one.forcing(ctx(three, 3, v)));
    CHECK(check_declared(gen, uniform, ctx(five, 3, v)) == v);
    CHECK(check_declared(gen, uniform, ctx(four, 3, v)) == 0);

    forced_eos_params bad{.max_length = 0, .eos_ids = {0}};
    CHECK(bad.check().value_or("") == "forced_eos_params.max_length must be >= 1, got 0");
    bad.max_length = 4;
    bad.basis = length_basis(7);
    CHECK(bad.check().value_or("").find("forced_eos_params.basis") == 0);
    bad.basis = length_basis::total;
    bad.eos_ids = {};
    CHECK(bad.check().value_or("").find("forced_eos_params.eos_ids") == 0);
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(forced_eos_processor(bad), config_error));
    // negative EOS ids are accepted and ignored (one rule for every EOS list)
    const forced_eos_processor neg(
        {.max_length = 3, .basis = length_basis::generated, .eos_ids = {-2, 4}});
    const auto y = applied(neg, uniform, ctx(five, 3, v));
    for (std::size_t i = 0; i < v; ++i) CHECK(y[i] == (i == 4 ? 0.f : -inf));
}

TEST_CASE("forced BOS / EOS through a sampler: greedy, the law, sampled draws",
          "[processors][hf][sampler]") {
    const std::size_t v = 6;
    const std::vector<float> x{3.f, 1.f, 0.5f, 2.f, qnan, -1.f};
    const std::vector<token_id> prompt{1, 2}, two_more{1, 2, 5, 5};
    for (int top_k : {0, 4}) {  // dense path, and the sparse path (top-k merges patches)
        INFO("top_k " << top_k);
        sampling_params bos{.top_k = top_k,
                            .processors = {{processor_slot::logit_bias, forced_bos_processor(2)}}};
        bos.logit_biases = {{2, 5.f}};  // after the forcing: 0 + 5, still the only valid token
        sampler s(bos, v);
        CHECK(s.sample(x, sctx(prompt, 2)).token == 2);
        check_sampled(s, x, sctx(prompt, 2), {0, 0, 1, 0, 0, 0}, 2000);
        // after the first position the row is the model's (+ the bias)
        const double e3 = std::exp(3.0), e1 = std::exp(1.0), e55 = std::exp(5.5),
                     e2 = std::exp(2.0), em1 = std::exp(-1.0);
        if (top_k == 0) {
            const double z = e3 + e1 + e55 + e2 + em1;
            check_sampled(s, x, sctx(two_more, 2), {e3 / z, e1 / z, e55 / z, e2 / z, 0, em1 / z});
        }
        sampling_params greedy = bos;
        greedy.temperature = 0.f;
        sampler g(greedy, v);
        CHECK(g.sample(x, sctx(prompt, 2)).token == 2);
        CHECK(g.sample(x, sctx(two_more, 2)).token == 2);

        // forced EOS with two ids: uniform over them, only at the last position
        sampling_params eos{.top_k = top_k,
                            .processors = {{processor_slot::end,
                                            forced_eos_processor({.max_length = 3,
                                                                  .basis = length_basis::generated,
                                                                  .eos_ids = {5, 1}})}}};
        sampler se(eos, v);
        check_sampled(se, x, sctx(two_more, 2), {0, 0.5, 0, 0, 0, 0.5});
        if (top_k == 0) {  // 0 generated: not forced, the model's law
            const double z =
                std::exp(3.0) + std::exp(1.0) + std::exp(0.5) + std::exp(2.0) + std::exp(-1.0);
            CHECK(law(se, x, sctx(prompt, 2))[0] == dk_test::Approx(std::exp(3.0) / z));
        }
        eos.temperature = 0.f;
        sampler ge(eos, v);
        CHECK(ge.sample(x, sctx(two_more, 2)).token == 1);  // ties to the lowest id
        CHECK(ge.sample(x, sctx(prompt, 2)).token == 0);
        // a forced set with no id in [0, V): no valid token, a clear status
        sampling_params out{.top_k = top_k,
                            .processors = {{processor_slot::end,
                                            forced_eos_processor({.max_length = 3,
                                                                  .basis = length_basis::generated,
                                                                  .eos_ids = {6, 100}})}}};
        sampler so(out, v);
        CHECK(so.sample(x, sctx(two_more, 2)).status == sample_status::no_valid_token);
    }
}

// ---- suppress tokens at the first generated position -------------------------------------------

TEST_CASE("suppress tokens at begin: HF's Whisper example, at one position only",
          "[processors][hf]") {
    // HF's docstring: begin_suppress_tokens = [220, 50256] (50256 = EOS): EOS is -inf at the
    // first generated position and has its logit at the others. Scaled down: tokens {2, 5}.
    const std::size_t v = 8;
    const std::vector<float> x{0.5f, 1.f, 29.9f, -2.f, qnan, inf, 0.f, 3.f};
    const suppress_tokens_at_begin_processor p({5, 2, -1, 8, 2});
    const std::vector<token_id> prompt{1, 1, 1}, later{1, 1, 1, 7};
    auto first = applied(p, x, ctx(prompt, 3, v));
    std::vector<float> want = x;
    want[2] = -inf;
    want[5] = -inf;  // +inf banned too
    for (std::size_t i = 0; i < v; ++i) CHECK(same(first[i], want[i]));
    CHECK(applied(p, x, ctx(later, 3, v))[2] == 29.9f);
    // position 1 (after a forced BOS, as HF's begin_index + 1)
    const suppress_tokens_at_begin_processor q({2}, 1);
    CHECK(applied(q, x, ctx(prompt, 3, v))[2] == 29.9f);
    CHECK(applied(q, x, ctx(later, 3, v))[2] == -inf);
    CHECK(check_declared(p, x, ctx(prompt, 3, v)) == 2);
    CHECK(check_declared(p, x, ctx(later, 3, v)) == 0);
    // through a sampler, greedy and sampled: 2 is the argmax, except at the first position
    for (float t : {0.f, 1.f}) {
        sampler s({.temperature = t,
                   .top_k = 3,
                   .processors = {{processor_slot::banned_tokens,
                                   suppress_tokens_at_begin_processor({2, 5})}}},
                  v);
        const std::vector<float> row{0.5f, 1.f, 29.9f, -2.f, qnan, 4.f, 0.f, 3.f};
        if (t == 0.f) {
            CHECK(s.sample(row, sctx(prompt, 3)).token == 7);
            CHECK(s.sample(row, sctx(later, 3)).token == 2);
        } else {  // top-3 of what is left: 7, 1, 0
            const double z = std::exp(0.5) + std::exp(1.0) + std::exp(3.0);
            check_sampled(s, row, sctx(prompt, 3),
                          {std::exp(0.5) / z, std::exp(1.0) / z, 0, 0, 0, 0, 0, std::exp(3.0) / z});
        }
    }
}

// ---- exponential decay length penalty --------------------------------------------------------

TEST_CASE("exponential decay: HF's formula, test and special values", "[processors][hf]") {
    const std::size_t v = 4;
    auto run = [&](const exponential_decay_params& p, float x0, std::size_t generated) {
        std::vector<token_id> h(2 + generated, 1);
        return applied(exponential_decay_processor(p), {x0, 1.f, 1.f, 1.f}, ctx(h, 2, v))[0];
    };
    const exponential_decay_params p{.start = 1, .decay_factor = 1.5, .eos_ids = {0}};
    // at or before start: nothing; then x + |x| (1.5^(n - start) - 1)
    CHECK(run(p, 2.f, 0) == 2.f);
    CHECK(run(p, 2.f, 1) == 2.f);
    CHECK(run(p, 2.f, 2) == 3.f);    // m = 0.5
    CHECK(run(p, 2.f, 3) == 4.5f);   // m = 1.25
    CHECK(run(p, -2.f, 3) == 0.5f);  // |x|: negative logits are raised too
    CHECK(run(p, -8.f, 2) == -4.f);
    // a factor below 1 lowers the logits
    const exponential_decay_params low{.start = 0, .decay_factor = 0.5, .eos_ids = {0}};
    CHECK(run(low, 2.f, 1) == 1.f);
    CHECK(run(low, -2.f, 1) == -3.f);
    // HF's arithmetic: the float32 tensor times float(m), then a float32 sum (torch 1.13 gives
    // 0x1.a52ca0p+8 here; the product in double would give 0x1.a52c9ep+8)
    CHECK(same(run({.start = 0, .decay_factor = 1.6, .eos_ids = {0}}, 0x1.f61432p+3f, 7),
               0x1.a52ca0p+8f));
    CHECK(same(run({.start = 0, .decay_factor = 1.1, .eos_ids = {0}}, 3.3f, 7), 0x1.9b91acp+2f));
    // HF's test: start 5, factor 1.1, prompt 2, 18 generated: uniform scores go up, so do their
    // negatives
    const exponential_decay_params hf{.start = 5, .decay_factor = 1.1, .eos_ids = {0}};
    CHECK(run(hf, 0.05f, 3) == 0.05f);
    CHECK(run(hf, 0.05f, 18) > 0.05f);
    CHECK(run(hf, -0.05f, 18) > -0.05f);
    // special values: NaN, +-inf and 0 stay; overflow makes +inf
    for (float s : {qnan, inf, -inf, 0.f, -0.f}) CHECK(same(run(p, s, 5), s));
    const exponential_decay_params huge{.start = 0, .decay_factor = 10.0, .eos_ids = {0}};
    CHECK(exponential_decay_multiplier(10.0, 0, 100) == inf);
    CHECK(run(huge, 1e-30f, 100) == inf);
    CHECK(run(huge, 0.f, 100) == 0.f);  // HF: 0 * inf = NaN
    CHECK(exponential_decay_multiplier(10.0, 0, 38) < inf);
    CHECK(run(huge, 4.f, 38) == inf);  // finite m (1e38), the result overflows float
    // several EOS ids, each once (a repeated id is penalised once), ids >= V ignored
    const exponential_decay_processor two(
        {.start = 0, .decay_factor = 2.0, .eos_ids = {3, 1, 3, 9}});
    const std::vector<token_id> h{0, 0, 0};
    const auto y = applied(two, {1.f, 1.f, 1.f, -1.f}, ctx(h, 2, v));  // m = 1
    CHECK(y == std::vector<float>{1.f, 2.f, 1.f, 0.f});
    CHECK(check_declared(two, {1.f, 1.f, 1.f, -1.f}, ctx(h, 2, v)) == 2);
    CHECK(check_declared(two, {1.f, 1.f, 1.f, -1.f}, ctx(h, 3, v)) == 0);
    CHECK(check_declared(
              exponential_decay_processor({.start = 0, .decay_factor = 1.0, .eos_ids = {0}}),
              {1.f, 1.f, 1.f, -1.f}, ctx(h, 2, v)) == 0);  // factor 1: no change

    exponential_decay_params bad{.decay_factor = 0.0, .eos_ids = {0}};
    CHECK(bad.check().value_or("") ==
          "exponential_decay_params.decay_factor must be finite and > 0, got 0");
    for (double f : {-1.0, double(qnan), double(inf)}) {
        bad.decay_factor = f;
        CHECK(bad.check().value_or("").find("exponential_decay_params.decay_factor") == 0);
    }
    bad.decay_factor = 1.2;
    bad.eos_ids = {};
    CHECK(bad.check().value_or("").find("exponential_decay_params.eos_ids") == 0);
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(exponential_decay_processor(bad), config_error));
    // negative EOS ids are accepted and ignored (one rule for every EOS list)
    const exponential_decay_processor neg({.start = 0, .decay_factor = 2.0, .eos_ids = {-5, 1}});
    CHECK(applied(neg, {1.f, 1.f, 1.f, -1.f}, ctx(h, 2, v)) == std::vector<float>{1, 2, 1, -1});
}

TEST_CASE("exponential decay and sequence bias equal torch's float32 results bit for bit",
          "[processors][hf]") {
    // tests/support/hf_processors_fixtures.hpp: random rows computed with torch 1.13 in Hugging
    // Face's order of operations (scripts/gen_hf_fixtures.py); compared bit for bit
    const std::size_t v = 8, prompt = 3;
    for (std::size_t i = 0; i < hf_fixtures::exp_decay_cases.size(); ++i) {
        const auto& f = hf_fixtures::exp_decay_cases[i];
        const exponential_decay_processor p({.start = f.start,
                                             .decay_factor = f.decay_factor,
                                             .eos_ids = {f.eos.begin(), f.eos.end()}});
        const std::vector<token_id> h(prompt + f.generated, 1);
        const auto got = applied(p, f.row, ctx(h, prompt, v));
        for (std::size_t t = 0; t < v; ++t) {
            INFO("exp decay case " << i << " id " << t);
            CHECK(same(got[t], f.want[t]));
        }
    }
    for (std::size_t i = 0; i < hf_fixtures::seq_bias_cases.size(); ++i) {
        const auto& f = hf_fixtures::seq_bias_cases[i];
        std::vector<sequence_bias> list;
        for (std::size_t k = 0; k < f.sequences.size(); ++k)
            list.push_back({{f.sequences[k].begin(), f.sequences[k].end()}, f.biases[k]});
        const std::vector<token_id> h(f.history.begin(), f.history.end());
        const auto got = applied(sequence_bias_processor(list), f.row, ctx(h, 0, v));
        for (std::size_t t = 0; t < v; ++t) {
            INFO("sequence bias case " << i << " id " << t);
            CHECK(same(got[t], f.want[t]));
        }
    }
}

TEST_CASE("exponential decay through a sampler: the EOS probability grows with the length",
          "[processors][hf][sampler]") {
    const std::size_t v = 4;
    const std::vector<float> x{1.f, 1.f, 1.f, 1.f};
    const exponential_decay_processor p({.start = 2, .decay_factor = 2.0, .eos_ids = {3}});
    for (int top_k : {0, 4}) {
        sampler s({.top_k = top_k, .processors = {{processor_slot::min_length, p}}}, v);
        std::vector<token_id> h{0};
        // generated 0..2: uniform; 3: EOS logit 1 + 1 * (2 - 1) = 2; 4: 1 + 3 = 4
        for (std::size_t n = 0; n <= 4; ++n, h.push_back(1)) {
            INFO("generated " << n << " top_k " << top_k);
            const double e = n <= 2 ? std::exp(1.0) : n == 3 ? std::exp(2.0) : std::exp(4.0);
            const double z = 3 * std::exp(1.0) + e;
            const double o = std::exp(1.0) / z;
            check_sampled(s, x, sctx(h, 1), {o, o, o, e / z}, n == 4 ? 20000 : 2000);
        }
        // min length before it in the order bans EOS: -inf stays -inf (HF: NaN)
        sampler m({.top_k = top_k,
                   .min_new_tokens = 10,
                   .eos_ids = {3},
                   .processors = {{processor_slot::end, p}}},
                  v);
        std::vector<token_id> h5{0, 1, 1, 1, 1, 1};
        CHECK(law(m, x, sctx(h5, 1))[3] == 0.0);
        CHECK(m.sample(x, sctx(h5, 1)).ok());
    }
}

// ---- sequence bias ---------------------------------------------------------------------------

TEST_CASE("sequence bias: HF's test, sums, the last bias of a repeated sequence",
          "[processors][hf]") {
    const std::size_t v = 5;
    // HF's test_bias_dist_processor, scores 0
    const sequence_bias_processor p({{{1}, 100.f},
                                     {{4}, 100.f},
                                     {{1, 0}, -100.f},
                                     {{0, 1, 2}, -100.f},
                                     {{1, 3, 1, 3}, -100.f},
                                     {{1, 3, 1, 3, 1, 3}, -100.f}});
    const std::vector<float> zeros(v, 0.f);
    const std::vector<token_id> h1{0, 1, 3, 1}, h2{0, 1, 0, 1};
    CHECK(applied(p, zeros, ctx(h1, 0, v)) == std::vector<float>{-100, 100, 0, -100, 100});
    CHECK(applied(p, zeros, ctx(h2, 0, v)) == std::vector<float>{-100, 100, -100, 0, 100});
    CHECK(p.single_count() == 2);
    CHECK(p.longer_count() == 4);

    // several sequences for one token add up; the history must end with the whole prefix
    const sequence_bias_processor sum({{{3}, 1.f}, {{2, 3}, 2.f}, {{7, 2, 3}, 4.f}});
    const std::vector<float> ones(8, 1.f);
    const std::vector<token_id> a{5, 7, 2}, b{5, 6, 2}, c{5, 6, 7};
    CHECK(applied(sum, ones, ctx(a, 1, 8))[3] == 8.f);  // 1 + (1 + 2 + 4)
    CHECK(applied(sum, ones, ctx(b, 1, 8))[3] == 4.f);  // 1 + (1 + 2)
    CHECK(applied(sum, ones, ctx(c, 1, 8))[3] == 2.f);  // 1 + 1
    // HF's order and rounding: the biases summed first (1e8 - 1e8 + 1 = 1), then added
    const sequence_bias_processor order({{{2, 3}, -1e8f}, {{3}, 1e8f}, {{6, 2, 3}, 1.f}});
    const std::vector<token_id> d{6, 2};
    CHECK(applied(order, std::vector<float>(8, 0.5f), ctx(d, 0, 8))[3] == 1.5f);
    // a sequence listed twice: the last bias (HF's dict), once
    const sequence_bias_processor twice({{{2, 3}, 2.f}, {{5}, 1.f}, {{2, 3}, 10.f}, {{5}, 3.f}});
    CHECK(twice.longer_count() == 1);
    CHECK(twice.single_count() == 1);
    const auto t = applied(twice, ones, ctx(d, 0, 8));
    CHECK(t[3] == 11.f);
    CHECK(t[5] == 4.f);
    // a history that is exactly the prefix: biased (HF skips it; see the header)
    const std::vector<token_id> just{7, 2};
    CHECK(applied(sum, ones, ctx(just, 0, 8))[3] == 8.f);
    // an empty history: only the one-token sequences
    const std::vector<token_id> empty{};
    CHECK(applied(sum, ones, ctx(empty, 0, 8))[3] == 2.f);
}

TEST_CASE("sequence bias: special values, bad ids, touched(), configuration", "[processors][hf]") {
    const std::size_t v = 6;
    // -inf bans (over +inf biases, +inf and NaN logits); +inf raises; NaN and -inf logits stay
    const sequence_bias_processor p({{{0}, -inf},
                                     {{9, 0}, inf},
                                     {{1}, inf},
                                     {{2}, 3.f},
                                     {{3}, -1.f},
                                     {{-4, 9, 4}, 2.f},
                                     {{9, 6}, 5.f},
                                     {{9, -1}, 5.f}});
    const std::vector<token_id> h{-4, 9};
    const auto y = applied(p, {inf, 0.f, qnan, -inf, 1.f, 2.f}, ctx(h, 0, v));
    CHECK(y[0] == -inf);
    CHECK(y[1] == inf);
    CHECK(std::isnan(y[2]));
    CHECK(y[3] == -inf);
    CHECK(y[4] == 3.f);  // the prefix {-4, 9} matched: ids outside [0, V) compare like any other
    CHECK(y[5] == 2.f);
    const auto z = applied(p, {qnan, -inf, 0.f, 0.f, 0.f, 0.f}, ctx(h, 0, v));
    CHECK(z[0] == -inf);  // a ban writes over NaN
    CHECK(z[1] == -inf);  // +inf does not revive a ban
    // touched(): the one-token sequences and the candidates' last tokens
    std::mt19937_64 rng(7);
    for (int i = 0; i < 200; ++i) {
        const std::vector<float> x = random_row(rng, v);
        CHECK(check_declared(p, x, ctx(h, 0, v)) == 5);  // 0 1 2 3, and 4 (6, -1 outside)
    }
    const std::vector<token_id> h2{1, 2};
    CHECK(check_declared(p, std::vector<float>(v, 1.f), ctx(h2, 0, v)) == 4);

    std::vector<sequence_bias> bad{{{1, 2}, 1.f}, {{}, 1.f}};
    CHECK(sequence_bias_processor::check(bad).value_or("") ==
          "sequence_bias_processor: biases[1].tokens must hold at least one token, got none");
    bad[1] = {{3}, qnan};
    CHECK(sequence_bias_processor::check(bad).value_or("").find(
              "sequence_bias_processor: biases[1].bias must be not NaN") == 0);
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(sequence_bias_processor(bad), config_error));
}

namespace {
/// A naive sequence bias: HF's dictionary (first position, last bias), the one-token bias first,
/// then every longer sequence in order, summed, then added (a -inf bias bans).
std::vector<float> naive_sequence_bias(std::vector<float> x, const std::vector<token_id>& h,
                                       const std::vector<sequence_bias>& list) {
    std::vector<sequence_bias> dict;
    for (const sequence_bias& s : list) {
        auto it = std::find_if(dict.begin(), dict.end(),
                               [&](const sequence_bias& d) { return d.tokens == s.tokens; });
        if (it == dict.end())
            dict.push_back(s);
        else
            it->bias = s.bias;
    }
    std::map<token_id, std::pair<float, bool>> sum;  // token -> (total, banned)
    auto add = [&](token_id t, float b) {
        auto& e = sum[t];
        if (b == -inf)
            e.second = true;
        else
            e.first += b;
    };
    for (const sequence_bias& s : dict)
        if (s.tokens.size() == 1) add(s.tokens[0], s.bias);
    for (const sequence_bias& s : dict) {
        if (s.tokens.size() == 1 || s.tokens.size() - 1 > h.size()) continue;
        if (std::equal(s.tokens.begin(), s.tokens.end() - 1,
                       h.end() - std::ptrdiff_t(s.tokens.size() - 1)))
            add(s.tokens.back(), s.bias);
    }
    for (auto [t, e] : sum) {
        if (t < 0 || std::size_t(t) >= x.size()) continue;
        float& v = x[std::size_t(t)];
        if (e.second)
            v = -inf;
        else if (!std::isnan(v) && v != -inf)
            v = v + e.first;
    }
    return x;
}
}  // namespace

TEST_CASE("sequence bias equals a naive oracle on random lists and histories", "[processors][hf]") {
    std::mt19937_64 rng(11);
    const std::size_t v = 10;
    auto tok = [&] { return rng() % 16 == 0 ? token_id(v + rng() % 3) - 1 : token_id(rng() % 4); };
    for (int round = 0; round < 400; ++round) {
        std::vector<sequence_bias> list(1 + rng() % 8);
        for (auto& s : list) {
            s.tokens.resize(1 + rng() % 4);
            for (auto& t : s.tokens) t = tok();
            const int kind = int(rng() % 10);
            s.bias = kind == 0 ? -inf : kind == 1 ? inf : float(int(rng() % 11) - 5) * 0.75f;
        }
        const sequence_bias_processor p(list);
        std::vector<token_id> h(rng() % 7);
        for (auto& t : h) t = tok();
        const std::vector<float> x = random_row(rng, v);
        const auto got = applied(p, x, ctx(h, 0, v));
        const auto want = naive_sequence_bias(x, h, list);
        for (std::size_t i = 0; i < v; ++i) {
            INFO("round " << round << " id " << i);
            REQUIRE(same(got[i], want[i]));
        }
        check_declared(p, x, ctx(h, 0, v));
    }
}

TEST_CASE("sequence bias: overlapping prefixes (the automaton's fail and output links)",
          "[processors][hf]") {
    // prefixes {1 2 1 2}, {2 1 2}, {1 2}, {2}: after ... 1 2 1 2 every one of them ends the history
    const std::size_t v = 8;
    const sequence_bias_processor p({{{1, 2, 1, 2, 3}, 1.f},
                                     {{2, 1, 2, 3}, 2.f},
                                     {{1, 2, 4}, 4.f},
                                     {{2, 5}, 8.f},
                                     {{1, 2, 1, 6}, 16.f}});
    CHECK(p.longest_prefix() == 4);
    const std::vector<float> zeros(v, 0.f);
    const std::vector<token_id> a{7, 1, 2, 1, 2}, b{2, 1, 2}, c{1, 2, 1}, d{1, 1, 2, 2};
    CHECK(applied(p, zeros, ctx(a, 0, v)) == std::vector<float>{0, 0, 0, 3, 4, 8, 0, 0});
    CHECK(applied(p, zeros, ctx(b, 0, v)) == std::vector<float>{0, 0, 0, 2, 4, 8, 0, 0});
    CHECK(applied(p, zeros, ctx(c, 0, v)) == std::vector<float>{0, 0, 0, 0, 0, 0, 16, 0});
    CHECK(applied(p, zeros, ctx(d, 0, v)) == std::vector<float>{0, 0, 0, 0, 0, 8, 0, 0});
    CHECK(check_declared(p, zeros, ctx(a, 0, v)) == 3);
}

namespace {
/// A random walk of history changes (append, cut back, replace the generated part, fork) through
/// a processor_pipeline holding `proc` (its history hooks), each call's row checked against
/// `want(row, history)`.
template <class P, class Want>
void walk_pipeline(const P& proc, Want want, std::mt19937_64& rng, std::size_t v, int calls,
                   token_id alphabet) {
    sampling_params params{.processors = {{processor_slot::end, proc}}};
    processor_pipeline pipe(params);
    std::vector<token_id> h{token_id(rng() % std::uint64_t(alphabet))};
    const std::size_t prompt = 1;
    std::vector<processor_pipeline> forks;
    std::vector<std::vector<token_id>> fork_h;
    for (int i = 0; i < calls; ++i) {
        const int op = int(rng() % 10);
        if (op < 6) {
            for (std::size_t k = 1 + rng() % 3; k > 0; --k)
                h.push_back(token_id(rng() % std::uint64_t(alphabet)));
        } else if (op < 8) {
            h.resize(std::max<std::size_t>(prompt, h.size() - std::min(h.size(), 1 + rng() % 5)));
        } else if (op < 9) {
            h.resize(prompt);
            for (std::size_t k = rng() % 6; k > 0; --k)
                h.push_back(token_id(rng() % std::uint64_t(alphabet)));
        } else {
            forks.push_back(pipe);  // a fork carries the state; it continues on its own
            fork_h.push_back(h);
        }
        const std::vector<float> x = random_row(rng, v);
        std::vector<float> got = x;
        pipe.apply(got, sctx(h, prompt));
        const std::vector<float> w = want(x, h);
        for (std::size_t t = 0; t < v; ++t) {
            INFO("call " << i << " op " << op << " id " << t << " history " << h.size());
            REQUIRE(same(got[t], w[t]));
        }
        for (std::size_t f = 0; f < forks.size(); ++f) {
            fork_h[f].push_back(token_id(rng() % std::uint64_t(alphabet)));
            std::vector<float> g = x;
            forks[f].apply(g, sctx(fork_h[f], prompt));
            const std::vector<float> wf = want(x, fork_h[f]);
            for (std::size_t t = 0; t < v; ++t) REQUIRE(same(g[t], wf[t]));
        }
        if (forks.size() > 3) {
            forks.erase(forks.begin());
            fork_h.erase(fork_h.begin());
        }
    }
}
}  // namespace

TEST_CASE("sequence bias in a processor_pipeline: its state follows append, cut back, forks",
          "[processors][hf]") {
    std::mt19937_64 rng(23);
    const std::size_t v = 6;
    for (int round = 0; round < 60; ++round) {
        // a small alphabet and repeated tokens: many overlapping prefixes
        std::vector<sequence_bias> list(1 + rng() % 10);
        for (auto& s : list) {
            s.tokens.resize(1 + rng() % 6);
            for (auto& t : s.tokens) t = token_id(rng() % 3) + (rng() % 20 == 0 ? 6 : 0);
            s.bias = rng() % 12 == 0 ? -inf : float(int(rng() % 11) - 5) * 0.5f;
        }
        INFO("round " << round);
        walk_pipeline(
            sequence_bias_processor(list),
            [&](const std::vector<float>& x, const std::vector<token_id>& h) {
                return naive_sequence_bias(x, h, list);
            },
            rng, v, 80, 4);
    }
}

TEST_CASE("sequence bias in a sampler's sparse path follows cut-backs: the law of the biased row",
          "[processors][hf][sampler]") {
    // top-k merges patches (sparse path): touched() and apply() read the followed state
    std::mt19937_64 rng(41);
    const std::size_t v = 6;
    for (int round = 0; round < 20; ++round) {
        std::vector<sequence_bias> list(1 + rng() % 8);
        for (auto& s : list) {
            s.tokens.resize(1 + rng() % 5);
            for (auto& t : s.tokens) t = token_id(rng() % 3);
            s.bias = float(int(rng() % 9) - 4) * 0.75f;
        }
        sampler s(
            {.top_k = 4, .processors = {{processor_slot::end, sequence_bias_processor(list)}}}, v);
        sampler plain({.top_k = 4}, v);
        std::vector<token_id> h{0};
        for (int i = 0; i < 40; ++i) {
            if (rng() % 4 == 0)
                h.resize(std::max<std::size_t>(1, h.size() - std::min(h.size(), 1 + rng() % 4)));
            else
                h.push_back(token_id(rng() % 3));
            std::vector<float> x(v);
            for (float& e : x) e = float(int(rng() % 13) - 6) * 0.5f;
            const auto got = law(s, x, sctx(h, 1));
            const std::vector<float> biased = naive_sequence_bias(x, h, list);
            const auto want = law(plain, biased, sctx(h, 1));
            for (std::size_t t = 0; t < v; ++t) {
                INFO("round " << round << " call " << i << " id " << t);
                REQUIRE(got[t] == dk_test::Approx(want[t]).margin(1e-6));
            }
        }
    }
}

TEST_CASE("every HF processor in a processor_pipeline's apply() equals the processor alone",
          "[processors][hf]") {
    std::mt19937_64 rng(31);
    const std::size_t v = 7;
    auto alone = [](auto p) {
        return [p](const std::vector<float>& x, const std::vector<token_id>& h) {
            auto q = p;
            return applied(q, x, ctx(h, 1, 7));
        };
    };
    const forced_bos_processor bos(4);
    const forced_eos_processor eos({.max_length = 5, .eos_ids = {6, 2}});
    const suppress_tokens_at_begin_processor sup({1, 3}, 1);
    const exponential_decay_processor dec({.start = 2, .decay_factor = 1.3, .eos_ids = {6}});
    const prefix_constrained_processor pre(
        [](const processor_context& c, std::vector<token_id>& a) {
            if (c.history.back() % 2) return false;
            a = {token_id(c.history.size() % 7), 5};
            return true;
        });
    walk_pipeline(bos, alone(bos), rng, v, 200, 7);
    walk_pipeline(eos, alone(eos), rng, v, 200, 7);
    walk_pipeline(sup, alone(sup), rng, v, 200, 7);
    walk_pipeline(dec, alone(dec), rng, v, 200, 7);
    walk_pipeline(pre, alone(pre), rng, v, 200, 7);
}

TEST_CASE("sequence bias through a sampler: a continuation is favoured after its prefix",
          "[processors][hf][sampler]") {
    // HF's docstring, scaled down: "Donald" -> " Duck" gets +10 after " Donald" only
    const std::size_t v = 5;
    const token_id donald = 1, duck = 2, trump = 3;
    const std::vector<float> x{0.f, 0.f, 1.f, 4.f, 0.f};
    for (int top_k : {0, 3}) {
        sampling_params params{.top_k = top_k,
                               .processors = {{processor_slot::banned_sequences,
                                               sequence_bias_processor({{{donald, duck}, 10.f}})}}};
        params.temperature = 0.f;
        sampler g(params, v);
        const std::vector<token_id> after{0, donald}, other{0, 4};
        CHECK(g.sample(x, sctx(after, 1)).token == duck);
        CHECK(g.sample(x, sctx(other, 1)).token == trump);
        params.temperature = 1.f;
        sampler s(params, v);
        const double e11 = std::exp(11.0), e4 = std::exp(4.0);
        const double z = e11 + e4 + (top_k == 0 ? 3.0 : 1.0);
        const double o = 1.0 / z;
        if (top_k == 0)
            check_sampled(s, x, sctx(after, 1), {o, o, e11 / z, e4 / z, o});
        else  // top-3: duck, trump, then id 0 (ties to the lowest id)
            check_sampled(s, x, sctx(after, 1), {o, 0, e11 / z, e4 / z, 0});
    }
}

// ---- a per-step allowed-set function ---------------------------------------------------------

TEST_CASE("prefix-constrained: HF's test and docstring example", "[processors][hf]") {
    const std::size_t v = 5;
    const std::vector<float> uniform(v, 0.2f);
    // HF's test: batch 0 allows {0, 1}, batch 1 {2, 3} (the sequence id stands for the batch id)
    const prefix_constrained_processor p(
        [](const processor_context& c, std::vector<token_id>& allowed) {
            if (c.sequence == 0)
                allowed = {0, 1};
            else
                allowed = {2, 3};
            return true;
        });
    const std::vector<token_id> h1{0, 1, 3, 1}, h2{0, 1, 0, 1};
    CHECK(applied(p, uniform, ctx(h1, 0, v, 0)) ==
          std::vector<float>{0.2f, 0.2f, -inf, -inf, -inf});
    CHECK(applied(p, uniform, ctx(h2, 0, v, 1)) ==
          std::vector<float>{-inf, -inf, 0.2f, 0.2f, -inf});
    // an empty set bans everything (HF raises); false allows everything; NaN stays NaN
    const prefix_constrained_processor none(
        [](const processor_context&, std::vector<token_id>&) { return true; });
    const auto n = applied(none, uniform, ctx(h1, 0, v));
    CHECK(std::all_of(n.begin(), n.end(), [](float e) { return e == -inf; }));
    const prefix_constrained_processor all([](const processor_context&, std::vector<token_id>& a) {
        a = {0};  // ignored: false means no restriction
        return false;
    });
    CHECK(applied(all, uniform, ctx(h1, 0, v)) == uniform);
    const prefix_constrained_processor odd([](const processor_context&, std::vector<token_id>& a) {
        a = {4, -1, 5, 1, 1};
        return true;
    });
    const auto o = applied(odd, {qnan, qnan, 1.f, 1.f, inf}, ctx(h1, 0, v));
    CHECK(std::isnan(o[1]));
    CHECK(o[4] == inf);
    CHECK((o[0] == -inf && o[2] == -inf && o[3] == -inf));
    // more than 256 allowed ids (the bitmask path): every even id of 1000
    const prefix_constrained_processor even(
        [](const processor_context& c, std::vector<token_id>& a) {
            for (std::size_t i = 0; i < c.vocab_size; i += 2) a.push_back(token_id(i));
            return true;
        });
    const std::vector<float> wide(1000, 1.f);
    const auto w = applied(even, wide, ctx(h1, 0, 1000));
    for (std::size_t i = 0; i < w.size(); ++i) REQUIRE(w[i] == (i % 2 ? -inf : 1.f));

    std::function<bool(const processor_context&, std::vector<token_id>&)> empty_fn;
    CHECK(prefix_constrained_processor::check(empty_fn).value_or("").find(
              "prefix_constrained_processor.allowed_tokens_fn") == 0);
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(prefix_constrained_processor(empty_fn), config_error));
}

TEST_CASE("prefix-constrained through a sampler: HF's entity example, greedy and sampled",
          "[processors][hf][sampler]") {
    // HF's docstring: once "Bob" appears, force " Bob Marley" (3 tokens) to completion;
    // otherwise allow everything. Tokens: 0..7, the entity is {5, 6, 7}.
    const std::size_t v = 8;
    const std::vector<token_id> entity{5, 6, 7};
    int calls = 0;
    auto fn = [entity, &calls](const processor_context& c, std::vector<token_id>& allowed) {
        ++calls;
        const auto& h = c.history;
        if (!h.empty() && h.back() == entity[0]) {
            allowed.push_back(entity[1]);
            return true;
        }
        if (h.size() >= 2 && h[h.size() - 2] == entity[0] && h.back() == entity[1]) {
            allowed.push_back(entity[2]);
            return true;
        }
        return false;
    };
    const std::vector<float> x{0.f, 3.f, 1.f, 0.f, 0.f, 2.f, -1.f, -2.f};
    sampler g({.temperature = 0.f,
               .processors = {{processor_slot::allowed_tokens, prefix_constrained_processor(fn)}}},
              v);
    // greedy: 1 (argmax) unless the entity started; the generation after a prompt ending in 5
    std::vector<token_id> h{0, 5};
    for (int i = 0; i < 3; ++i) {
        const auto r = g.sample(x, sctx(h, 1));
        REQUIRE(r.ok());
        h.push_back(r.token);
    }
    CHECK(h == std::vector<token_id>{0, 5, 6, 7, 1});
    CHECK(calls == 3);
    // sampled: after 5 only 6; elsewhere the model's law
    sampler s({.processors = {{processor_slot::end, prefix_constrained_processor(fn)}}}, v);
    const std::vector<token_id> started{0, 5}, free{0, 1};
    check_sampled(s, x, sctx(started, 1), {0, 0, 0, 0, 0, 0, 1, 0}, 2000);
    double z = 0;
    for (float e : x) z += std::exp(double(e));
    std::vector<double> model;
    for (float e : x) model.push_back(std::exp(double(e)) / z);
    check_sampled(s, x, sctx(free, 1), model);
    // an empty set: no valid token, a clear status
    sampler e(
        {.processors = {{processor_slot::end, prefix_constrained_processor(
                                                  [](const processor_context&,
                                                     std::vector<token_id>&) { return true; })}}},
        v);
    CHECK(e.sample(x, sctx(free, 1)).status == sample_status::no_valid_token);
}

TEST_CASE("HF processors together: inserted at several slots, copied with a sampler",
          "[processors][hf][sampler]") {
    // forced BOS first, then suppress-at-begin at position 1, a sequence bias and a decay
    const std::size_t v = 6;
    const std::vector<float> x{2.f, 1.f, 0.f, 0.f, 0.f, 0.5f};
    sampling_params params{
        .temperature = 0.f,
        .processors = {
            {processor_slot::allowed_tokens, forced_bos_processor(3)},
            {processor_slot::end, suppress_tokens_at_begin_processor({0}, 1)},
            {processor_slot::end, sequence_bias_processor({{{3, 1}, 0.5f}, {{1, 4}, 5.f}})},
            {processor_slot::end,
             exponential_decay_processor({.start = 2, .decay_factor = 3.0, .eos_ids = {5}})},
            {processor_slot::end,
             forced_eos_processor(
                 {.max_length = 6, .basis = length_basis::generated, .eos_ids = {5}})}}};
    sampler s(params, v);
    const sampler copy = s;  // a copy carries every processor
    std::vector<token_id> h{2};
    std::vector<token_id> out;
    for (int i = 0; i < 6; ++i) {
        const auto r = s.sample(x, sctx(h, 1));
        REQUIRE(r.ok());
        out.push_back(r.token);
        h.push_back(r.token);
    }
    // 3 forced; 0 suppressed, so 1 (1 + 0.5 after 3); then 4 (0 + 5 after 1); then 0 (EOS at
    // 0.5 + 0.5 * 2 = 1.5 < 2); then EOS (0.5 + 0.5 * 8 = 4.5); at 5 generated EOS is forced
    CHECK(out == std::vector<token_id>{3, 1, 4, 0, 5, 5});
    sampler c2 = copy;
    CHECK(c2.sample(x, sctx({2}, 1)).token == 3);
}
}  // namespace dk_t_processors_hf
