// sampler::sample() beyond the row family (bench_family.cpp has every setting on every shape),
// on the peaked row at each vocabulary size: raw logprobs on top of the llama.cpp chain, a batch
// of 64 rows (chain) on 1 and 2 threads (items = rows x V; wall time), the same batch on 1 and 2
// threads interleaved in one benchmark (the speed-up), and the pool's own per-call cost.

#include "bench_common.hpp"

#include <decodekit/sampling/sampling.hpp>

#include <chrono>
#include <memory>
#include <vector>

namespace {

using namespace decodekit;

void run_sampler(benchmark::State& state, const sampling_params& p) {
    const std::size_t v = std::size_t(state.range(0));
    const auto& x = dk_bench::logits(v);
    sampler s(p, v);
    std::uint64_t step = 0;
    for (auto _ : state) benchmark::DoNotOptimize(s.sample(x, 1, step++));
    dk_bench::set_items(state);
}

const sampling_params llama_chain{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f};

void BM_sampler_chain_raw_logprob(benchmark::State& state) {
    sampling_params p = llama_chain;
    p.logprobs.raw = true;
    run_sampler(state, p);
}
DK_BENCH_VOCAB(BM_sampler_chain_raw_logprob);

// A batch of 64 rows (the llama.cpp chain, one sampler per row, 64 distinct row copies: at
// V >= 128256 the matrix is DRAM-resident, as a fresh logits matrix mostly is).
struct batch64 {
    static constexpr std::size_t rows = 64;
    std::size_t v;
    std::vector<float> m;
    std::vector<std::unique_ptr<sampler>> samplers;
    std::vector<batch_row> br;
    std::vector<sample_result> out;
    std::uint64_t step = 0;

    explicit batch64(std::size_t v_) : v(v_), m(rows * v_), br(rows), out(rows) {
        const auto& x = dk_bench::logits(v);
        for (std::size_t r = 0; r < rows; ++r) {
            std::copy(x.begin(), x.end(), m.begin() + std::ptrdiff_t(r * v));
            samplers.push_back(std::make_unique<sampler>(llama_chain, v));
            br[r].row_sampler = samplers.back().get();
            br[r].ctx.sequence = r;
        }
    }
    void run(batch_sampler& pool) {
        for (auto& b : br) b.ctx.step = step;
        ++step;
        pool.sample({m.data(), rows, v, v}, br, out);
        benchmark::DoNotOptimize(out.data());
    }
};

// range(1) = threads. Wall time (UseRealTime); the CPU column is the whole process's CPU time
// (MeasureProcessCPUTime: the calling thread's alone says nothing about a threaded run).
void BM_sampler_batch64(benchmark::State& state) {
    batch64 b(std::size_t(state.range(0)));
    batch_sampler pool(std::size_t(state.range(1)));
    for (auto _ : state) b.run(pool);
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(b.rows * b.v));
}
BENCHMARK(BM_sampler_batch64)
    ->ArgsProduct({{32000, 128256, 151936, 256000}, {1, 2}})
    ->ArgNames({"V", "threads"})
    ->UseRealTime()
    ->MeasureProcessCPUTime();

// The 2-thread speed-up measured robustly: each iteration runs the same batch once on a
// 1-thread and once on a 2-thread pool (alternating which goes first), timing each call's wall
// time, so slow drifts of the machine's load hit both sides alike. Counters: t1_us / t2_us =
// mean wall time per batch, speedup = t1 / t2 (issue 4 bar: >= 1.8x). Reported time = both.
void BM_sampler_batch64_speedup(benchmark::State& state) {
    using clock = std::chrono::steady_clock;
    batch64 b(std::size_t(state.range(0)));
    batch_sampler one(1), two(2);
    double t1 = 0, t2 = 0;
    bool two_first = false;
    for (auto _ : state) {
        two_first = !two_first;
        const auto a = clock::now();
        b.run(two_first ? two : one);
        const auto c = clock::now();
        b.run(two_first ? one : two);
        const auto d = clock::now();
        const double first = std::chrono::duration<double>(c - a).count();
        const double second = std::chrono::duration<double>(d - c).count();
        (two_first ? t2 : t1) += first;
        (two_first ? t1 : t2) += second;
        state.SetIterationTime(first + second);
    }
    const double n = double(state.iterations());
    state.counters["t1_us"] = 1e6 * t1 / n;
    state.counters["t2_us"] = 1e6 * t2 / n;
    state.counters["speedup"] = t2 > 0 ? t1 / t2 : 0.0;
}
BENCHMARK(BM_sampler_batch64_speedup)->Apply(dk_bench::at_vocab_sizes)->UseManualTime();

// The pool's own cost per call: parallel_for over 64 empty items (what a call costs beyond
// its rows). threads = range(0).
void BM_batch_pool_call(benchmark::State& state) {
    batch_sampler pool(std::size_t(state.range(0)));
    std::vector<std::size_t> sink(64);
    for (auto _ : state) {
        pool.parallel_for(sink.size(), [&sink](std::size_t i) { sink[i] += i; });
        benchmark::DoNotOptimize(sink.data());
    }
}
BENCHMARK(BM_batch_pool_call)->Arg(1)->Arg(2)->ArgName("threads")->UseRealTime();

}  // namespace
