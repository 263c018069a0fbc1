// The threshold truncation kernels (epsilon_unordered, eta_unordered, mirostat_cut_unordered,
// top_n_sigma_unordered; epsilon_cut, eta_cut, mirostat_cut in both forms that may answer with a
// cut), XTC's removal (xtc_remove) and the cut helpers (compact_cut, draw_cut)
// against kernels/reference.hpp: the same set exactly, in id order, with their weights and cut,
// for every xsimd architecture this build enables; the row family at the four vocabulary sizes,
// ties, special values, tiny rows, and rows built to force each exactness tier.
#include "dk_family.hpp"
#include "dk_rows.hpp"
#include "dk_test.hpp"
#include "dk_truncation.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_thresholds {

namespace {

namespace dk = decodekit;
namespace ref = decodekit::reference;
namespace kn = decodekit::kernels;
constexpr float inf = std::numeric_limits<float>::infinity();

using dk_truncation::each_arch;
using dk_truncation::same_set;
using dk_truncation::weights_ok;
constexpr std::size_t vocab_sizes[] = {32000, 128256, 151936, 256000};

/// The result's cut selects exactly the kept entries of the row.
bool cut_matches(std::span<const float> x, const kn::row_cut& cut, const dk::candidates& got) {
    std::size_t j = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (cut.contains(x[i], i)) {
            if (j >= got.size() || got.ids()[j] != dk::token_id(i)) return false;
            ++j;
        }
    return j == got.size();
}

using kernel_fn =
    std::function<kn::truncation_result(std::span<const float>, dk::candidates&, std::span<float>)>;

/// Runs `kernel` (built for one architecture by make) on x against `want`; returns the tiers.
template <class Make>
unsigned check(std::span<const float> x, float temperature, const dk::candidates& want,
               Make&& make) {
    dk::candidates got(x.size());
    std::vector<float> w(x.size());
    unsigned tiers = 0;
    each_arch(
        [&](auto arch, const std::string& name) {
            INFO("arch " << name << " n " << x.size());
            const kn::truncation_result r = make(arch)(x, got, w);
            REQUIRE(r.ok());
            CHECK(r.kept == got.size());
            CHECK(same_set(got, want));
            CHECK(cut_matches(x, r.cut, got));
            CHECK(weights_ok(temperature, got, w, r));
            tiers |= 1u << unsigned(r.tier);
        },
        x.size());
    return tiers;
}

using cut_fn = std::function<kn::truncation_result(std::span<const float>, dk::candidates&,
                                                   std::span<float>, kn::kept_form)>;

/// Runs a cut kernel (epsilon_cut, eta_cut, mirostat_cut; built by make) in both forms that may
/// answer with a cut: a cut keeps exactly `want` (scratch left empty) with the row's weights in w
/// (compacted from them: the kept entries' weights and kept_sum); kept_form::either may also
/// answer compacted (scratch.size() == kept), then as the _unordered kernel. Returns the tiers.
template <class Make>
unsigned check_cut(std::span<const float> x, float temperature, const dk::candidates& want,
                   Make&& make) {
    dk::candidates got(x.size()), set(x.size());
    std::vector<float> w(x.size()), wc(x.size());
    unsigned tiers = 0;
    each_arch(
        [&](auto arch, const std::string& name) {
            for (const kn::kept_form form : {kn::kept_form::cut, kn::kept_form::either}) {
                INFO("arch " << name << " n " << x.size() << " form " << int(form));
                const kn::truncation_result r = make(arch)(x, got, w, form);
                REQUIRE(r.ok());
                CHECK(r.kept == want.size());
                if (got.size() == r.kept && (form == kn::kept_form::either || r.kept == 0)) {
                    CHECK(same_set(got, want));  // compacted
                    CHECK(cut_matches(x, r.cut, got));
                    CHECK(weights_ok(temperature, got, w, r));
                } else {
                    CHECK(got.empty());
                    wc = w;
                    double sum = 0;
                    const std::size_t k = kn::compact_cut(x, wc, r.cut, set, sum);
                    CHECK(k == r.kept);
                    CHECK(same_set(set, want));
                    CHECK(weights_ok(temperature, set, wc, r));
                }
                tiers |= 1u << unsigned(r.tier);
            }
        },
        x.size());
    return tiers;
}

/// The compacting and the cut forms reach the same tiers (the same decisions).
unsigned same_tiers(unsigned compacting, unsigned cut) {
    CHECK(compacting == cut);
    return compacting;
}

unsigned check_epsilon(std::span<const float> x, float eps, float t, std::size_t mk) {
    dk::candidates want(x.size());
    ref::epsilon(x, eps, t, mk, want);
    INFO("epsilon " << eps << " T " << t << " min_keep " << mk);
    return same_tiers(check(x, t, want,
                            [&](auto arch) {
                                using A = decltype(arch);
                                return kernel_fn([=](std::span<const float> y, dk::candidates& o,
                                                     std::span<float> w) {
                                    return kn::epsilon_unordered<A>(y, eps, t, mk, o, w);
                                });
                            }),
                      check_cut(x, t, want, [&](auto arch) {
                          using A = decltype(arch);
                          return cut_fn([=](std::span<const float> y, dk::candidates& o,
                                            std::span<float> w, kn::kept_form f) {
                              return kn::epsilon_cut<A>(y, eps, t, mk, o, w, f);
                          });
                      }));
}
unsigned check_eta(std::span<const float> x, float eta, float t, std::size_t mk) {
    dk::candidates want(x.size());
    ref::eta(x, eta, t, mk, want);
    INFO("eta " << eta << " T " << t << " min_keep " << mk);
    return same_tiers(
        check(x, t, want,
              [&](auto arch) {
                  using A = decltype(arch);
                  return kernel_fn(
                      [=](std::span<const float> y, dk::candidates& o, std::span<float> w) {
                          return kn::eta_unordered<A>(y, eta, t, mk, o, w);
                      });
              }),
        check_cut(x, t, want, [&](auto arch) {
            using A = decltype(arch);
            return cut_fn([=](std::span<const float> y, dk::candidates& o, std::span<float> w,
                              kn::kept_form f) { return kn::eta_cut<A>(y, eta, t, mk, o, w, f); });
        }));
}
unsigned check_mirostat(std::span<const float> x, float mu, float t) {
    dk::candidates want(x.size());
    ref::mirostat_cut(x, mu, t, want);
    INFO("mu " << mu << " T " << t);
    return same_tiers(
        check(x, t, want,
              [&](auto arch) {
                  using A = decltype(arch);
                  return kernel_fn(
                      [=](std::span<const float> y, dk::candidates& o, std::span<float> w) {
                          return kn::mirostat_cut_unordered<A>(y, mu, t, o, w);
                      });
              }),
        check_cut(x, t, want, [&](auto arch) {
            using A = decltype(arch);
            return cut_fn([=](std::span<const float> y, dk::candidates& o, std::span<float> w,
                              kn::kept_form f) { return kn::mirostat_cut<A>(y, mu, t, o, w, f); });
        }));
}
unsigned check_sigma(std::span<const float> x, float ns, float t, std::size_t mk) {
    dk::candidates want(x.size());
    ref::top_n_sigma(x, ns, mk, want);
    INFO("n sigma " << ns << " min_keep " << mk);
    return check(x, t, want, [&](auto arch) {
        using A = decltype(arch);
        return kernel_fn([=](std::span<const float> y, dk::candidates& o, std::span<float> w) {
            return kn::top_n_sigma_unordered<A>(y, ns, t, mk, o, w);
        });
    });
}

/// xtc_remove against reference::xtc_removed (the removed entries, in reference order) and its
/// weights: the row's with the removed ones at 0.
unsigned check_xtc(std::span<const float> x, float thr, float t, std::size_t mk) {
    dk::candidates want(x.size()), got(x.size());
    std::vector<float> w(x.size());
    ref::xtc_removed(x, thr, t, mk, want);
    unsigned tiers = 0;
    each_arch(
        [&](auto arch, const std::string& name) {
            using A = decltype(arch);
            INFO("arch " << name << " n " << x.size() << " threshold " << thr << " min_keep "
                         << mk);
            const auto r = kn::xtc_remove<A>(x, thr, t, mk, got, w);
            REQUIRE(r.ok());
            CHECK(r.kept == want.size());
            bool same = got.size() == want.size();
            for (std::size_t j = 0; same && j < got.size(); ++j)
                same = got.ids()[j] == want.ids()[j] && got.logits()[j] == want.logits()[j];
            CHECK(same);
            bool zeroed = true;
            double rest = 0;
            for (std::size_t j = 0; j < got.size(); ++j)
                zeroed = zeroed && w[std::size_t(got.ids()[j])] == 0.f;
            for (float e : w) rest += double(e);
            CHECK(zeroed);
            CHECK(r.kept_sum == dk_test::Approx(rest).epsilon(1e-9));
            tiers |= 1u << unsigned(r.tier);
        },
        x.size());
    return tiers;
}

}  // namespace

TEST_CASE("epsilon, eta and mirostat's cut equal the reference on the row family") {
    for (std::size_t v : vocab_sizes)
        for (auto sh : dk_family::shapes) {
            const auto x = dk_family::make_row(sh, v);
            INFO("shape " << dk_family::name(sh));
            check_epsilon(x, 3e-4f, 1.f, 1);
            check_eta(x, 3e-4f, 1.f, 1);
            check_mirostat(x, 10.f, 1.f);
            if (v == 128256) {
                check_epsilon(x, 1e-6f, 1.5f, 1);
                check_epsilon(x, 0.05f, 0.7f, 7);
                check_eta(x, 1e-5f, 1.5f, 3);
                check_mirostat(x, 20.f, 1.5f);
                check_mirostat(x, 0.5f, 1.f);
            }
        }
}

TEST_CASE("threshold kernels: small rows, special values, disabled and min_keep") {
    for (int kind = 0; kind <= 8; ++kind)
        for (std::size_t n : dk_rows::lengths) {
            if (n > 4097) continue;
            const auto x = dk_rows::make_row(n, kind, 5);
            INFO("kind " << kind);
            for (std::size_t mk : {1u, 4u}) {
                check_epsilon(x, 1e-3f, 1.f, mk);
                check_epsilon(x, 0.f, 1.f, mk);
                check_eta(x, 1e-3f, 0.8f, mk);
                check_sigma(x, 1.f, 1.f, mk);
                check_sigma(x, 0.f, 1.f, mk);
                check_xtc(x, 0.1f, 1.f, mk);
            }
            check_mirostat(x, 3.f, 1.f);
            // a NaN mu: no entry reaches the threshold, the most probable one is kept (fuzz)
            check_mirostat(x, std::numeric_limits<float>::quiet_NaN(), 1.f);
        }
}

TEST_CASE("epsilon: all below epsilon with 8 tied at the top keeps the 8 (issue 12)") {
    std::vector<float> x(100000, -1.f);
    for (std::size_t i : {5u, 17u, 90u, 91u, 300u, 512u, 777u, 99999u}) x[i] = 0.f;
    CHECK(check_epsilon(x, 0.01f, 1.f, 1) != 0);
    dk::candidates c(x.size());
    std::vector<float> w(x.size());
    CHECK(kn::epsilon_unordered(x, 0.01f, 1.f, 1, c, w).kept == 8);
}

TEST_CASE("top_n_sigma_unordered equals the reference on the row family") {
    for (std::size_t v : vocab_sizes)
        for (auto sh : dk_family::shapes) {
            auto x = dk_family::make_row(sh, v);
            INFO("shape " << dk_family::name(sh));
            check_sigma(x, 1.f, 1.f, 1);
            if (v == 128256) {
                check_sigma(x, 2.5f, 1.5f, 1);
                check_sigma(x, 0.1f, 1.f, 20);
                for (auto& e : x) e += 100.f;  // an offset: no cancellation in the moments
                check_sigma(x, 1.f, 1.f, 1);
            }
        }
}

TEST_CASE("xtc_remove equals the reference's removal") {
    for (auto sh : dk_family::shapes) {
        const auto x = dk_family::make_row(sh, 128256);
        INFO("shape " << dk_family::name(sh));
        for (float thr : {0.01f, 0.1f, 0.3f}) check_xtc(x, thr, 1.f, 1);
        check_xtc(x, 0.05f, 0.5f, 128250);
    }
    // a head of three of a small row: the two most probable go
    const std::vector<float> y = {float(std::log(0.3)), float(std::log(0.05)), float(std::log(0.4)),
                                  float(std::log(0.2)), float(std::log(0.05))};
    CHECK(check_xtc(y, 0.15f, 1.f, 1) != 0);
    // two maxima at 1e30 (p = 0.5 each) under a threshold a little above 0.5: m + T ln(theta Z)
    // rounds to m in double, yet neither is in the head (found by fuzz_kernels)
    std::vector<float> z(208, -5.f);
    z[190] = z[203] = 1e30f;
    z[0] = -3.4e38f;
    dk::candidates removed(z.size());
    CHECK(ref::xtc_removed(z, 0.506665826f, 79.9558716f, 2, removed) == 0);
    check_xtc(z, 0.506665826f, 79.9558716f, 2);  // the kernels remove none either
    CHECK(ref::xtc_removed(z, 0.49f, 79.9558716f, 2, removed) == 1);
    check_xtc(z, 0.49f, 79.9558716f, 2);
}

TEST_CASE("threshold kernels: each exactness tier, forced, with its premise") {
    using A = dk::simd::default_arch;
    // double_pass: a uniform row of 10, epsilon 0.1: p = 0.1 is 2e-9 above decimal_floor(0.1f),
    // inside the float bound, far outside the double one.
    {
        const std::vector<float> u(10, 0.5f);
        CHECK(check_epsilon(u, 0.1f, 1.f, 1) == 1u << unsigned(kn::exactness_tier::double_pass));
        dk::candidates c(10);
        std::vector<float> w(10);
        CHECK(kn::epsilon_unordered<A>(u, 0.1f, 1.f, 1, c, w).kept == 10);
    }
    // reference: a uniform row of 8 at mu = 3: p = 2^-3 exactly equals the threshold.
    {
        const std::vector<float> u(8, 2.f);
        CHECK(check_mirostat(u, 3.f, 1.f) == 1u << unsigned(kn::exactness_tier::reference));
    }
    // top-n-sigma's reference tier: a constant row (sigma 0, every entry on the threshold).
    {
        const std::vector<float> u(100, 1.5f);
        CHECK(check_sigma(u, 1.f, 1.f, 1) == 1u << unsigned(kn::exactness_tier::reference));
    }
    // float_bound on a family row
    {
        const auto x = dk_family::make_row(dk_family::shape::gauss, 32000);
        CHECK(check_eta(x, 3e-4f, 1.f, 1) == 1u << unsigned(kn::exactness_tier::float_bound));
    }
}

TEST_CASE("threshold kernels: undecided entries spread over whole vectors, kept and dropped") {
    // 640 entries at 1 but for two one ulp below (ids 100 and 333): p = 1/640 (decimal 0.0015625
    // = epsilon) within ~1e-10 relative for the entries at 1 (kept, p a little above), 6e-8 below
    // for the two (dropped): all inside the float bound, decided in double. The cut form decides
    // them in its pass over the row's vectors; min_keep 700 (more than the row): every entry.
    std::vector<float> x(640, 1.f);
    x[100] = x[333] = std::nextafter(1.f, 0.f);
    CHECK(check_epsilon(x, 0.0015625f, 1.f, 1) == 1u << unsigned(kn::exactness_tier::double_pass));
    CHECK(check_epsilon(x, 0.0015625f, 1.f, 700) != 0);
    dk::candidates c(x.size());
    std::vector<float> w(x.size());
    const auto r = kn::epsilon_cut(x, 0.0015625f, 1.f, 1, c, w);
    CHECK(r.kept == 638);
    CHECK(r.cut.lo == 1.f);
}

TEST_CASE("compact_cut and draw_cut: the kept set of a cut, and the draw over it") {
    using A = dk::simd::default_arch;
    const auto x = dk_family::make_row(dk_family::shape::gauss, 40000, 3);
    dk::candidates scratch(x.size()), kept(x.size());
    std::vector<float> w(x.size());
    const auto r = kn::top_p_cut<A>(x, 0.9f, 1.2f, 1, scratch, w);
    REQUIRE(r.ok());
    // draw_cut over the row's weights equals draw_inverse_cdf over the compacted ones
    std::vector<float> wc = w;
    double sum = 0;
    const std::size_t k = kn::compact_cut<A>(x, wc, r.cut, kept, sum);
    REQUIRE(k == r.kept);
    CHECK(sum == dk_test::Approx(r.kept_sum).epsilon(1e-6));
    std::uint64_t s = 3;
    for (int t = 0; t < 2000; ++t) {
        const double u = dk_rows::unit(s);
        const std::size_t a = kn::draw_cut<A>(x, w, r.cut, u);
        const std::size_t b = kn::draw_inverse_cdf<A>(std::span<const float>(wc.data(), k), u);
        REQUIRE(b != dk::npos);
        CHECK(a == std::size_t(kept.ids()[b]));
    }
    // empty cut: npos; bad sizes: npos
    CHECK(kn::draw_cut<A>(x, w, kn::row_cut{}, 0.5) == dk::npos);
    CHECK(kn::draw_cut<A>(x, std::span<const float>(w.data(), 10), r.cut, 0.5) == dk::npos);
    dk::candidates small(10);
    CHECK(kn::compact_cut<A>(x, wc, r.cut, small, sum) == dk::npos);
}

namespace {

/// -E_p[D] of the row at temperature T in long double (64-bit significand: ~1e-18 relative, far
/// below the bounds under test).
double exact_minus_mean_d(std::span<const float> x, float temperature) {
    long double m = -std::numeric_limits<long double>::infinity();
    for (float v : x)
        if (v == v) m = std::max<long double>(m, v);
    long double z = 0, s = 0;
    for (float v : x) {
        if (!(v == v) || v == -inf) continue;
        const long double d = ((long double)v - m) / (long double)temperature;
        const long double e = std::exp(d);
        z += e;
        s += e * d;
    }
    return double(-s / z);
}

/// entropy.hpp's mean of d against the exact one on a row: both bounds hold; returns the
/// uncompensated and the compensated bound (0 when the architecture has no exact fma).
template <class A>
std::pair<double, double> check_mean_of_d(std::span<const float> x, float temperature) {
    std::vector<float> w(x.size());
    const float m = kn::max<A>(x);
    const auto rs = kn::detail::entropy_pass<A, true>(x, m, temperature, w.data());
    const double exact = exact_minus_mean_d(x, temperature);
    const auto plain = kn::detail::mean_of_d(rs, x.size());
    CHECK(std::fabs(plain.c - exact) <= plain.dc);
    // the stored weights are the kernels' weights, bit for bit
    for (std::size_t i = 0; i < x.size(); i += 97)
        REQUIRE(w[i] == kn::detail::weight_one<A>(x[i], m, 1.f / temperature));
    // the paired pass (eta's): the same weights, its mean and its sum within their bounds
    {
        std::vector<float> w2(x.size());
        const auto rp = kn::detail::entropy_pass<A, true, true>(x, m, temperature, w2.data());
        CHECK(w2 == w);
        CHECK(rp.pair_error > 0);
        const auto paired = kn::detail::mean_of_d(rp, x.size());
        CHECK(std::fabs(paired.c - exact) <= paired.dc);
        const double z = ref::exp_sum(x, temperature).sum;
        CHECK(std::fabs(rp.sum - z) <= rp.error(x.size()) + kn::detail::sum_error(x.size()) * z +
                                           kn::detail::reference_error(x.size()) * z);
    }
    const auto k = kn::detail::compensate<A>(x, m, temperature, w.data(), x.size() / 3);
    CHECK(k.valid == kn::detail::exact_fma<A>);
    if (!k.valid) return {plain.dc, 0.0};
    const auto comp = kn::detail::mean_of_d(rs, x.size(), k);
    CHECK(std::fabs(comp.c - exact) <= comp.dc);
    CHECK(comp.dc <= plain.dc);
    // a paired pass compensated (typical's): compensate()'s own unpaired sums stand for the
    // unpaired pass's (the same weights and products, each widened to double)
    {
        std::vector<float> w2(x.size());
        const auto rp = kn::detail::entropy_pass<A, true, true>(x, m, temperature, w2.data());
        const auto ru = kn::detail::unpaired_sums(rp, k, x.size());
        const double se = 2 * kn::detail::sum_error(x.size());
        CHECK(ru.pair_error == 0);
        CHECK(std::fabs(ru.sum - rs.sum) <= se * rs.sum);
        CHECK(std::fabs(ru.wd - rs.wd) <= se * rs.wd);
        CHECK(ru.wd_bound >= ru.wd);
        const auto cp = kn::detail::mean_of_d(ru, x.size(), k);
        CHECK(std::fabs(cp.c - exact) <= cp.dc);
        CHECK(cp.dc <= kn::detail::mean_of_d(rp, x.size()).dc);
    }
    return {plain.dc, comp.dc};
}

}  // namespace

TEST_CASE("entropy.hpp: E_p[d] within its bounds, compensated and not, on the row family") {
    each_arch(
        [&](auto arch, const std::string& name) {
            using A = decltype(arch);
            for (auto sh : dk_family::shapes)
                for (float t : {1.f, 1.5f, 0.7f}) {
                    INFO("arch " << name << " shape " << dk_family::name(sh) << " T " << t);
                    const auto x = dk_family::make_row(sh, 32000, 5);
                    const auto [plain, comp] = check_mean_of_d<A>(x, t);
                    // the premise of typical's compensated tier: an order of magnitude tighter
                    // where the Gaussian and near-uniform rows need it
                    if (kn::detail::exact_fma<A> &&
                        (sh == dk_family::shape::gauss || sh == dk_family::shape::flat))
                        CHECK(comp * 4 < plain);
                }
            // special values: NaN and -inf entries carry no weight and no correction
            std::vector<float> x = dk_family::make_row(dk_family::shape::gauss, 4099, 9);
            x[3] = std::numeric_limits<float>::quiet_NaN();
            x[1000] = -inf;
            x[4098] = -inf;
            check_mean_of_d<A>(x, 1.f);
            check_mean_of_d<A>(x, 1.3f);
        },
        32000);
}
}  // namespace dk_t_kernels_thresholds
