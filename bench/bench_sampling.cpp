// Whole sampler::sample() calls at each vocabulary size, on the shared rows of bench_common.hpp,
// judged against BM_floor_read / BM_floor_exp of bench_floors.cpp (same binary, same run).
//   greedy, full temperature, top-k(40), top-p(0.95), min-p(0.05), the llama.cpp chain
//   (top-k 40, top-p 0.95, min-p 0.05, temperature 0.8), the chain with penalties over a
//   64-token window, raw logprobs on top of the chain, and a batch of 64 rows (chain) on 1 and
//   2 threads (items = rows x V).

#include "bench_common.hpp"

#include <decodekit/sampling/sampling.hpp>

#include <memory>
#include <vector>

namespace {

using namespace decodekit;

void run_sampler(benchmark::State& state, const sampling_params& p, bool with_history = false) {
    const std::size_t v = std::size_t(state.range(0));
    const auto& x = dk_bench::logits(v);
    sampler s(p, v);
    std::vector<token_id> history(256);
    std::uint64_t h = 99;
    for (auto& t : history) t = token_id(dk_bench::splitmix64(h) % v);
    std::uint64_t step = 0;
    for (auto _ : state) {
        sample_context ctx{.sequence = 1, .step = step++};
        if (with_history) {
            ctx.history = history;
            ctx.prompt_length = 128;
        }
        benchmark::DoNotOptimize(s.sample(x, ctx));
    }
    dk_bench::set_items(state);
}

const sampling_params llama_chain{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f};

void BM_sampler_greedy(benchmark::State& state) { run_sampler(state, {.temperature = 0.f}); }
DK_BENCH_VOCAB(BM_sampler_greedy);

void BM_sampler_temperature(benchmark::State& state) { run_sampler(state, {.temperature = 0.8f}); }
DK_BENCH_VOCAB(BM_sampler_temperature);

void BM_sampler_top_k40(benchmark::State& state) { run_sampler(state, {.top_k = 40}); }
DK_BENCH_VOCAB(BM_sampler_top_k40);

void BM_sampler_top_p95(benchmark::State& state) { run_sampler(state, {.top_p = 0.95f}); }
DK_BENCH_VOCAB(BM_sampler_top_p95);

void BM_sampler_min_p05(benchmark::State& state) { run_sampler(state, {.min_p = 0.05f}); }
DK_BENCH_VOCAB(BM_sampler_min_p05);

void BM_sampler_llama_chain(benchmark::State& state) { run_sampler(state, llama_chain); }
DK_BENCH_VOCAB(BM_sampler_llama_chain);

void BM_sampler_chain_penalties64(benchmark::State& state) {
    sampling_params p = llama_chain;
    p.penalties = {.repetition = 1.1f,
                   .frequency = 0.1f,
                   .presence = 0.1f,
                   .repetition_scope = penalty_scope::last_n,
                   .frequency_scope = penalty_scope::last_n,
                   .last_n = 64};
    run_sampler(state, p, true);
}
DK_BENCH_VOCAB(BM_sampler_chain_penalties64);

void BM_sampler_chain_raw_logprob(benchmark::State& state) {
    sampling_params p = llama_chain;
    p.logprobs.raw = true;
    run_sampler(state, p);
}
DK_BENCH_VOCAB(BM_sampler_chain_raw_logprob);

// 64 rows, the llama.cpp chain, one sampler per row; range(1) = threads.
void BM_sampler_batch64(benchmark::State& state) {
    constexpr std::size_t rows = 64;
    const std::size_t v = std::size_t(state.range(0));
    const auto& x = dk_bench::logits(v);
    std::vector<float> m(rows * v);
    for (std::size_t r = 0; r < rows; ++r)
        std::copy(x.begin(), x.end(), m.begin() + std::ptrdiff_t(r * v));
    std::vector<std::unique_ptr<sampler>> samplers;
    std::vector<batch_row> br(rows);
    for (std::size_t r = 0; r < rows; ++r) {
        samplers.push_back(std::make_unique<sampler>(llama_chain, v));
        br[r].row_sampler = samplers.back().get();
        br[r].ctx.sequence = r;
    }
    std::vector<sample_result> out(rows);
    batch_sampler pool(std::size_t(state.range(1)));
    std::uint64_t step = 0;
    for (auto _ : state) {
        for (auto& b : br) b.ctx.step = step;
        ++step;
        pool.sample({m.data(), rows, v, v}, br, out);
        benchmark::DoNotOptimize(out.data());
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(rows * v));
}
BENCHMARK(BM_sampler_batch64)
    ->ArgsProduct({{32000, 128256, 151936, 256000}, {1, 2}})
    ->ArgNames({"V", "threads"})
    ->UseRealTime();

}  // namespace
