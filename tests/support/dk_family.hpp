#pragma once
// The benchmark row family of issue 12 for the tests: bench/bench_rows.hpp's rows (peaked,
// permuted Zipf(1.1), Gaussian sd 1, near-uniform), deterministic per (shape, V, salt), under the
// tests' names.
#include "../../bench/bench_rows.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <vector>

namespace dk_family {

using dk_bench::make_row;
using dk_bench::normal01;
using dk_bench::shape;
using dk_bench::shapes;
using dk_bench::splitmix64;
using dk_bench::uniform01;

/// The shape's name (a string literal).
inline const char* name(shape s) noexcept { return dk_bench::shape_name(s).data(); }

/// NaN at every 61st entry from 3 (positions no vector width divides evenly).
inline void sprinkle_nan(std::vector<float>& x) {
    for (std::size_t i = 3; i < x.size(); i += 61) x[i] = std::nanf("");
}

/// -inf at every 53rd entry from 7.
inline void sprinkle_neg_inf(std::vector<float>& x) {
    for (std::size_t i = 7; i < x.size(); i += 53) x[i] = -std::numeric_limits<float>::infinity();
}

/// f(x, shape, t, v) for the rows of the exponential passes' bit-for-bit tests: every shape, T
/// 0.7 / 1 / 1.5, each length (make_row(shape, v, salt)); the rows of length 4097 with NaN and
/// -inf sprinkled.
template <class F>
void for_each_pass_row(std::uint64_t salt, std::initializer_list<std::size_t> lengths, F f) {
    for (auto sh : shapes)
        for (float t : {0.7f, 1.f, 1.5f})
            for (std::size_t v : lengths) {
                auto x = make_row(sh, v, salt);
                if (v == 4097) {
                    sprinkle_nan(x);
                    sprinkle_neg_inf(x);
                }
                f(x, sh, t, v);
            }
}

}  // namespace dk_family
