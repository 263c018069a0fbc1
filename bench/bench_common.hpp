#pragma once
// Shared benchmark helpers: the vocabulary sizes, the row family of bench_rows.hpp built once
// per (shape, V) and shared by every benchmark of a run, and registration helpers.
//
// Benchmark names follow one scheme, which scripts/bench_report.py parses:
//   BM_<what>[/<setting>]/<shape>/V:<vocab>   (shape: peaked, zipf, gauss, flat)
// Benchmarks that predate the family run on the peaked row and keep their names
// (BM_<what>/V:<vocab>[/...]).

#include "bench_rows.hpp"

#include <benchmark/benchmark.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace dk_bench {

/// The vocabulary sizes every benchmark runs at (Llama 2, Llama 3, Qwen 2, Gemma).
inline constexpr std::array<std::int64_t, 4> vocab_sizes = {32000, 128256, 151936, 256000};
/// The vocabulary size the bars are judged at (Llama 3).
inline constexpr std::size_t bar_vocab = 128256;

/// The shared row of shape `s` and size v (built on first use, then reused by every benchmark).
inline const std::vector<float>& row(shape s, std::size_t v) {
    static std::map<std::pair<shape, std::size_t>, std::vector<float>> rows;
    auto it = rows.find({s, v});
    if (it == rows.end()) it = rows.emplace(std::pair{s, v}, make_row(s, v)).first;
    return it->second;
}

/// The shared peaked row of size v (the row of the benchmarks that predate the family).
inline const std::vector<float>& logits(std::size_t v) { return row(shape::peaked, v); }

/// "<prefix>/<shape>/V:<v>", the family's benchmark name.
inline std::string family_name(const std::string& prefix, shape s, std::size_t v) {
    return prefix + "/" + std::string(shape_name(s)) + "/V:" + std::to_string(v);
}

/// Registers one benchmark argument per vocabulary size (use with ->Apply).
inline void at_vocab_sizes(benchmark::internal::Benchmark* b) {
    for (std::int64_t v : vocab_sizes) b->Arg(v);
    b->ArgName("V");
}

/// Reports throughput as logits per second.
inline void set_items(benchmark::State& state) {
    state.SetItemsProcessed(std::int64_t(state.iterations()) * state.range(0));
}
/// Reports throughput as logits per second for a row of v entries.
inline void set_items(benchmark::State& state, std::size_t v) {
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(v));
}

}  // namespace dk_bench

/// Registers `fn(benchmark::State&)` at every vocabulary size (state.range(0) is V).
#define DK_BENCH_VOCAB(fn) BENCHMARK(fn)->Apply(dk_bench::at_vocab_sizes)
