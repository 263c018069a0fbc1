#pragma once
// The benchmark row family of issue 12 for the tests: bench/bench_rows.hpp's rows (peaked,
// permuted Zipf(1.1), Gaussian sd 1, near-uniform), deterministic per (shape, V, salt), under the
// tests' names.
#include "../../bench/bench_rows.hpp"

namespace dk_family {

using dk_bench::make_row;
using dk_bench::normal01;
using dk_bench::shape;
using dk_bench::shapes;
using dk_bench::splitmix64;
using dk_bench::uniform01;

/// The shape's name (a string literal).
inline const char* name(shape s) noexcept { return dk_bench::shape_name(s).data(); }

}  // namespace dk_family
