// A sampler whose only truncation is min-p or XTC draws over the row in one go
// (steps/min_p.hpp draw_min_p_only, steps/xtc.hpp draw_xtc_only): the token of sample() is
// draw(distribution_unordered(), stream) (the step route's set and law), and the chosen logprob
// is that distribution's, on every shape of the benchmark family, masked or not, in the orders
// that place temperature before or after the step.
#include "dk_family.hpp"
#include "dk_test.hpp"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_min_p_xtc {

namespace {

namespace dk = decodekit;
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();
constexpr float inf = std::numeric_limits<float>::infinity();

std::vector<float> family_row(dk_family::shape sh, std::size_t v, std::uint64_t salt) {
    auto x = dk_family::make_row(sh, v, salt);
    x[(salt * 7 + 3) % v] = qnan;
    x[(salt * 13 + 5) % v] = -inf;
    return x;
}

/// Checks sample() against draw(distribution_unordered()) for `keys` keys; returns the number of
/// keys whose tokens differ (0 expected: a difference needs u * S within rounding of a boundary).
std::size_t compare(const dk::sampling_params& p, const std::vector<float>& x,
                    const dk::kernels::token_bitmask& mask, std::uint64_t keys) {
    dk::sampler s(p, x.size());
    std::size_t differ = 0;
    for (std::uint64_t step = 0; step < keys; ++step) {
        const dk::sample_context ctx{.sequence = 3, .step = step, .mask = mask};
        const auto r = s.sample(x, ctx);
        REQUIRE(r.ok());
        const auto d = s.distribution_unordered(x, ctx);
        dk::rng_stream g = dk::make_stream({p.seed, 3, step}, dk::rng_purpose::sample);
        const dk::token_id t = dk::draw(d, g);
        differ += t != r.token;
        const float q = d.prob(r.token);
        REQUIRE(q > 0.f);  // the token is in the step route's set
        CHECK(double(r.logprob) == dk_test::Approx(std::log(double(q))).margin(4e-6));
    }
    return differ;
}

}  // namespace

TEST_CASE("min-p alone: sample() is draw(distribution_unordered()) with its logprob") {
    using dk::sampling_order;
    const std::vector<dk::sampling_params> params = {
        {.min_p = 0.05f, .seed = 1},
        {.temperature = 1.5f, .min_p = 0.05f, .seed = 2, .order = sampling_order::hf},
        {.temperature = 0.7f, .min_p = 0.1f, .seed = 3, .order = sampling_order::llama_cpp},
        {.temperature = 1.3f,
         .min_p = 0.02f,
         .min_p_mode = dk::min_p_space::logits,
         .seed = 4,
         .order = sampling_order::hf},
    };
    for (const std::size_t v : {std::size_t(4097), std::size_t(128256)})
        for (const auto sh : dk_family::shapes) {
            const auto x = family_row(sh, v, v);
            std::vector<std::uint32_t> words(dk::kernels::bitmask_words(v), 0x5555'5555u);
            for (const auto& p : params)
                for (const bool masked : {false, true}) {
                    INFO("shape " << dk_family::name(sh) << " V " << v << " seed " << p.seed
                                  << " masked " << masked);
                    const dk::kernels::token_bitmask mask =
                        masked ? dk::kernels::token_bitmask{.words = words, .size = v}
                               : dk::kernels::token_bitmask{};
                    CHECK(compare(p, x, mask, v > 5000 ? 40 : 150) == 0);
                }
        }
}

TEST_CASE("XTC alone: sample() is draw(distribution_unordered()) with its logprob") {
    using dk::sampling_order;
    const std::vector<dk::sampling_params> params = {
        {.xtc_probability = 1.f, .xtc_threshold = 0.1f, .seed = 1},
        {.temperature = 1.5f,
         .xtc_probability = 1.f,
         .xtc_threshold = 0.01f,
         .seed = 2,
         .order = sampling_order::hf},
        {.xtc_probability = 0.5f, .xtc_threshold = 0.05f, .seed = 3},  // the coin both ways
        {.xtc_probability = 1.f, .xtc_threshold = 0.f, .seed = 4},     // all but the least
        {.xtc_probability = 1.f, .xtc_threshold = 0.001f, .min_keep = 5, .seed = 5},
    };
    for (const std::size_t v : {std::size_t(300), std::size_t(4097), std::size_t(128256)})
        for (const auto sh : dk_family::shapes) {
            auto x = family_row(sh, v, v + 1);
            for (std::size_t i = 0; i < 3; ++i) x[(i * 97) % v] = 30.f;  // a head of three
            for (const auto& p : params) {
                INFO("shape " << dk_family::name(sh) << " V " << v << " seed " << p.seed);
                CHECK(compare(p, x, {}, v > 5000 ? 40 : 150) == 0);
            }
        }
}

TEST_CASE("XTC alone: a head holding nearly all the mass leaves the rest exact") {
    // Threshold 0 removes every valid entry but the least probable one: its weight relative to
    // the row max (e^-80 here) is far below 2^-20 of the row's, so the step route draws it, with
    // logprob 0. Then a head of one entry removed from a row whose tail weighs e^-40 each: the
    // one-draw route, never the removed entry, logprobs of the step route's distribution.
    std::vector<float> x(1000, -70.f);
    for (std::size_t i = 0; i < 1000; i += 3) x[i] = 0.f;
    x[500] = -80.f;
    x[501] = qnan;
    dk::sampler s({.xtc_probability = 1.f, .xtc_threshold = 0.f}, x.size());
    for (std::uint64_t step = 0; step < 20; ++step) {
        const auto r = s.sample(x, 1, step);
        REQUIRE(r.ok());
        CHECK(r.token == 500);
        CHECK(r.logprob == dk_test::Approx(0.0).margin(1e-6));
    }
    std::vector<float> y(1000, -40.f);
    y[10] = 0.f;
    y[20] = -0.5f;
    dk::sampler t({.xtc_probability = 1.f, .xtc_threshold = 0.1f}, y.size());
    const auto d = t.distribution_unordered(y);
    REQUIRE(d.size() == 999);                 // 10 removed; 20 and the tail kept
    std::vector<double> prob(y.size(), 0.0);  // d's views live until the next call: copied
    for (std::size_t i = 0; i < y.size(); ++i) prob[i] = double(d.prob(dk::token_id(i)));
    for (std::uint64_t step = 0; step < 50; ++step) {
        const auto r = t.sample(y, 1, step);
        REQUIRE(r.ok());
        CHECK(r.token != 10);
        CHECK(double(r.logprob) ==
              dk_test::Approx(std::log(prob[std::size_t(r.token)])).margin(1e-5));
    }
}
}  // namespace dk_t_sampling_min_p_xtc
