// The benchmark row family (bench/bench_rows.hpp): every bar of bench/RESULTS.md is judged on
// these rows, so their shapes are pinned here. The rows are deterministic, so nothing here can
// fail by chance; the statistical tolerances are >= 7 standard errors of the statistic, so a
// generator of the same law with other numbers would still pass (false-failure rate < 1e-11).
#include "../../bench/bench_rows.hpp"

#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_bench_rows {

namespace {

using dk_bench::make_row;
using dk_bench::shape;

struct moments {
    double mean = 0, sd = 0;
};
moments moments_of(const std::vector<float>& x) {
    double s = 0, s2 = 0;
    for (float v : x) s += v;
    const double mean = s / double(x.size());
    for (float v : x) s2 += (v - mean) * (v - mean);
    return {mean, std::sqrt(s2 / double(x.size()))};
}

}  // namespace

TEST_CASE("bench rows: deterministic per (shape, V, salt), finite, distinct across salts") {
    std::set<std::string> names;
    for (const shape s : dk_bench::shapes) {
        names.insert(std::string(dk_bench::shape_name(s)));
        for (const std::size_t v : {std::size_t(1), std::size_t(1000), std::size_t(32000)}) {
            const auto a = make_row(s, v);
            REQUIRE(a.size() == v);
            CHECK(a == make_row(s, v));
            CHECK(std::all_of(a.begin(), a.end(), [](float x) { return std::isfinite(x); }));
            if (v > 1) CHECK(a != make_row(s, v, 1));
        }
        CHECK(make_row(s, 0).empty());
    }
    CHECK(names.size() == dk_bench::shapes.size());
}

TEST_CASE("bench rows: peaked is the row of every earlier run (bulk + ~64 heavy logits)") {
    constexpr std::size_t v = 128256;
    const auto x = make_row(shape::peaked, v);
    CHECK(x == dk_bench::make_logits(v));
    // 64 heavy draws in [8, 18] (a repeated position keeps one) plus the bulk's rare tail above
    // 8 (4 sd: ~4 entries expected at this V).
    const auto heavy = std::count_if(x.begin(), x.end(), [](float e) { return e >= 8.f; });
    CHECK(heavy >= 60);
    CHECK(heavy <= 80);
    CHECK(*std::max_element(x.begin(), x.end()) <= 18.f);
    std::vector<float> bulk;
    for (float e : x)
        if (e < 8.f) bulk.push_back(e);
    const moments m = moments_of(bulk);
    CHECK(std::abs(m.mean + 2.0) < 0.05);  // standard error 2.5 / sqrt(V) = 0.007
    CHECK(std::abs(m.sd - 2.5) < 0.05);
}

TEST_CASE("bench rows: zipf is -1.1 ln(rank) over a permutation of the ranks") {
    for (const std::size_t v : {std::size_t(7), std::size_t(32000), std::size_t(128256)}) {
        auto x = make_row(shape::zipf, v);
        CHECK_FALSE(std::is_sorted(x.begin(), x.end(), std::greater<>()));  // permuted
        std::sort(x.begin(), x.end(), std::greater<>());
        bool exact = true;
        for (std::size_t r = 1; r <= v; ++r)
            exact = exact && x[r - 1] == float(-1.1 * std::log(double(r)));
        CHECK(exact);
    }
}

TEST_CASE("bench rows: gauss is N(0, 1) and flat is N(0, 0.01^2)") {
    constexpr std::size_t v = 128256;  // standard error of the mean: sd / 358
    const moments g = moments_of(make_row(shape::gauss, v));
    CHECK(std::abs(g.mean) < 0.02);
    CHECK(std::abs(g.sd - 1.0) < 0.02);
    const auto f = make_row(shape::flat, v);
    const moments m = moments_of(f);
    CHECK(std::abs(m.mean) < 0.0002);
    CHECK(std::abs(m.sd - 0.01) < 0.0002);
    const auto [lo, hi] = std::minmax_element(f.begin(), f.end());
    CHECK(*hi - *lo < 0.12f);  // near-uniform: every probability within e^0.12 of another
}
}  // namespace dk_t_bench_rows
