// Temperatures so large that x - m overflows in float while (x - m) / T does not (logits of
// opposite signs near FLT_MAX, T 1e38): the float weight of such an entry would be 0 where its
// real weight is ~e^-6. Every kernel that weighs a row in float takes the reference's route
// beyond T = 2^120 (kernels::detail::float_inv_temperature), so its sets, sums and draws equal
// the reference's; at T = 2^120 itself the float path runs and an overflowed x - m is more than
// 255 below the max (weight 0 within flush_error). Found by review: top-p kept 2498 entries
// where the reference keeps 3989 (p 0.999), typical 2500 of 5000.
#include "dk_test.hpp"
#include "dk_truncation.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_huge_temperature {

namespace {

namespace dk = decodekit;
namespace ref = decodekit::reference;
namespace kn = decodekit::kernels;

/// n logits alternating near +3e38 and -3e38, 7 levels on each side.
std::vector<float> wide_row(std::size_t n) {
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i)
        x[i] = (i % 2 ? -3e38f : 3e38f) * (1 - 1e-6f * float(i % 7));
    return x;
}

const float temperatures[] = {1e38f, 3e36f, 0x1p121f, 0x1p120f, 1e30f};

}  // namespace

TEST_CASE("float_inv_temperature: the float weights' range of temperatures", "[kernels][bad]") {
    CHECK(kn::detail::float_inv_temperature(1.f));
    CHECK(kn::detail::float_inv_temperature(1.f / 0x1p120f));
    CHECK_FALSE(kn::detail::float_inv_temperature(1.f / 0x1p121f));
    CHECK_FALSE(kn::detail::float_inv_temperature(1.f / 1e38f));
    CHECK_FALSE(kn::detail::float_inv_temperature(0.f));
    CHECK_FALSE(kn::detail::float_inv_temperature(1.f / 1e-45f));  // subnormal T: 1 / T = inf
    CHECK_FALSE(kn::detail::float_inv_temperature(std::nanf("")));
}

TEST_CASE("top-p, typical, epsilon, eta and XTC at huge temperatures equal the reference",
          "[kernels][bad]") {
    for (const std::size_t n : {std::size_t(1000), std::size_t(5000)}) {
        const auto x = wide_row(n);
        dk::candidates want(n), got(n);
        std::vector<float> w(n);
        for (const float t : temperatures) {
            INFO("n " << n << " T " << t);
            for (const float p : {0.5f, 0.9f, 0.999f, 0.9999f}) {
                INFO("p " << p);
                ref::top_p(x, p, t, 1, want);
                const auto r = kn::top_p_unordered(x, p, t, 1, got, w);
                CHECK(dk_truncation::same_set(got, want));
                dk_truncation::check_weights(x, t, got, w, r);
                ref::typical(x, p, t, 1, dk::typical_stop{}, want);
                kn::typical_unordered(x, p, t, 1, dk::typical_stop{}, got, w);
                CHECK(dk_truncation::same_set(got, want));
            }
            for (const float e : {1e-5f, 3e-4f}) {
                INFO("epsilon / eta " << e);
                ref::epsilon(x, e, t, 1, want);
                kn::epsilon_unordered(x, e, t, 1, got, w);
                CHECK(dk_truncation::same_set(got, want));
                ref::eta(x, e, t, 1, want);
                kn::eta_unordered(x, e, t, 1, got, w);
                CHECK(dk_truncation::same_set(got, want));
            }
            for (const float th : {0.0001f, 0.1f}) {
                INFO("xtc " << th);
                ref::xtc_removed(x, th, t, 1, want);
                kn::xtc_remove(x, th, t, 1, got, w);
                CHECK(got.size() == want.size());
            }
            const auto es = kn::exp_sum(x, t);
            const auto rs = ref::exp_sum(x, t);
            CHECK(es.sum == Approx(rs.sum).epsilon(1e-6));
            CHECK(kn::entropy(x, t) == Approx(ref::entropy(x, t)).epsilon(1e-6));
        }
    }
}

TEST_CASE(
    "a sampler's top-p at temperature 1e38 on logits near +-FLT_MAX keeps the reference's set",
    "[kernels][bad]") {
    const std::size_t n = 5000;
    const auto x = wide_row(n);
    dk::sampler s({.temperature = 1e38f, .top_p = 0.999f, .order = dk::sampling_order::hf}, n);
    const auto d = s.distribution_unordered(x, dk::sample_context{});
    dk::candidates want(n);
    ref::top_p(x, 0.999f, 1e38f, 1, want);
    CHECK(d.size() == want.size());
}
}  // namespace dk_t_kernels_huge_temperature
