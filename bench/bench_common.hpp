#pragma once
// Shared benchmark helpers: the vocabulary sizes, a deterministic synthetic logits row per size
// (the same row for every benchmark of one run), and registration at each size.

#include <benchmark/benchmark.h>

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

namespace dk_bench {

/// The vocabulary sizes every benchmark runs at (Llama 2, Llama 3, Qwen 2, Gemma).
inline constexpr std::array<std::int64_t, 4> vocab_sizes = {32000, 128256, 151936, 256000};

/// splitmix64: a tiny deterministic generator (same numbers on every platform and library).
inline std::uint64_t splitmix64(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
inline double uniform01(std::uint64_t& s) { return (double(splitmix64(s) >> 11) + 0.5) * 0x1p-53; }

/// A realistic logits row of size v: a Gaussian bulk (mean -2, sd 2.5, as LM heads give) and a
/// heavy top of ~64 tokens between 8 and 18 at pseudo-random positions. Fixed seed.
inline std::vector<float> make_logits(std::size_t v, std::uint64_t seed = 20240601) {
    std::uint64_t s = seed ^ (0xD1B54A32D192ED03ull * v);
    std::vector<float> x(v);
    for (std::size_t i = 0; i < v; ++i) {
        const double u1 = uniform01(s), u2 = uniform01(s);
        const double g = std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
        x[i] = float(-2.0 + 2.5 * g);
    }
    for (int t = 0; t < 64; ++t) {
        const std::size_t i = std::size_t(splitmix64(s) % v);
        x[i] = float(8.0 + 10.0 * uniform01(s));
    }
    return x;
}

/// The shared row of size v (built once per run, then reused by every benchmark).
inline const std::vector<float>& logits(std::size_t v) {
    static std::map<std::size_t, std::vector<float>> rows;
    auto it = rows.find(v);
    if (it == rows.end()) it = rows.emplace(v, make_logits(v)).first;
    return it->second;
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

}  // namespace dk_bench

/// Registers `fn(benchmark::State&)` at every vocabulary size (state.range(0) is V).
#define DK_BENCH_VOCAB(fn) BENCHMARK(fn)->Apply(dk_bench::at_vocab_sizes)
