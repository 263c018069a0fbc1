#pragma once
// Checks shared by the truncation-kernel tests (test_kernels_truncation, _typical, _thresholds):
// the architectures to run a row on, set equality against the reference in any order, and the
// float weights' error bound.
#include "dk_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace dk_truncation {

namespace dk = decodekit;
namespace ref = decodekit::reference;
namespace kn = decodekit::kernels;

/// dk_rows::each_arch on rows up to 4097 entries; on longer ones the first architecture of each
/// lane count only (the kernels' code differs by lane count; the families themselves share it),
/// which keeps the tests fast.
template <class F>
void each_arch(F&& f, std::size_t n = 0) {
    unsigned seen = 0;
    dk_rows::each_arch([&](auto arch, const std::string& name) {
        const unsigned bit = unsigned(dk::simd::lanes<decltype(arch)>);
        if (n > 4097 && (seen & bit)) return;
        seen |= bit;
        f(arch, name);
    });
}

/// got (id order) holds exactly the entries of want (any order).
inline bool same_set(const dk::candidates& got, const dk::candidates& want) {
    std::vector<std::pair<dk::token_id, float>> w;
    for (std::size_t i = 0; i < want.size(); ++i) w.emplace_back(want.ids()[i], want.logits()[i]);
    std::sort(w.begin(), w.end(), [](auto a, auto b) { return a.first < b.first; });
    if (got.size() != w.size()) return false;
    for (std::size_t i = 0; i < got.size(); ++i)
        if (got.ids()[i] != w[i].first || !(got.logits()[i] == w[i].second)) return false;
    return true;
}

/// Each kept weight within the float weights' bound of exp((x - max) / T)
/// (kernels/weights.hpp: exp_error + arg_error |d|), kept_sum their double sum.
inline bool weights_ok(float temperature, const dk::candidates& got, std::span<const float> w,
                       const kn::truncation_result& r) {
    if (!std::isfinite(r.max)) return true;
    double ks = 0;
    for (std::size_t j = 0; j < got.size(); ++j) {
        const double want = ref::weight(got.logits()[j], r.max, temperature);
        const double d = (double(r.max) - got.logits()[j]) / temperature;
        if (!(std::fabs(double(w[j]) - want) <=
              (kn::detail::exp_error + kn::detail::arg_error * d) * want + 2e-38))
            return false;
        ks += double(w[j]);
    }
    return std::fabs(r.kept_sum - ks) <= 1e-6 * ks + 1e-300;
}

/// The reported weights and sums: weights_ok, the row's max, and sum the row's exp sum.
inline void check_weights(std::span<const float> x, float temperature, const dk::candidates& got,
                          std::span<const float> w, const kn::truncation_result& r) {
    REQUIRE(r.ok());
    REQUIRE(r.kept == got.size());
    CHECK(r.max == ref::max(x));
    if (!std::isfinite(r.max)) return;
    CHECK(weights_ok(temperature, got, w, r));
    if (!std::isnan(r.sum)) {
        const double z = ref::exp_sum(x, temperature).sum;
        CHECK(r.sum == dk_test::Approx(z).epsilon(2e-5));
    }
}

}  // namespace dk_truncation
