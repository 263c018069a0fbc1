// The processor types (processors/*.hpp) driven as a pipeline drives them, at V = 128256: one
// history_tracker sync per call, the history hooks, touched(), apply() on a row whose declared
// entries are restored afterwards (the sparse path: nothing O(V) per call). The history grows one
// token per call (generation step by step) over ids that cycle through 2 000 distinct values
// spread over the vocabulary; every 256 calls it is cut back to its starting length outside the
// timed region. The argument is the history length: 300 vs 100 000 shows whether a call has a
// term in the history length (bars: <= 1.5x, issue 12); 4 000 vs 100 000 compares histories that
// hold the same 2 000 distinct ids (a whole-history window costs O(distinct ids), which are fewer
// than 2 000 at 300).
//   penalties_last64    repetition 1.1 + frequency 0.1 over the last 64 tokens (llama.cpp)
//   penalties_whole     repetition 1.1 + frequency 0.1 over the whole history (Hugging Face)
//   ngram3              no-repeat-ngram of size 3
//   free_penalties_whole  apply_penalties (stateless, O(history)) on the same histories, for scale

#include "bench_common.hpp"

#include <decodekit/processors/processors.hpp>

#include <vector>

namespace {

using namespace decodekit;

constexpr std::size_t bench_vocab = 128256;
constexpr std::size_t distinct_ids = 2000;
constexpr std::size_t regrow = 256;

token_id cycle_id(std::size_t position) {
    return token_id((position % distinct_ids) * 7919 % bench_vocab);
}

template <class P>
void run_steps(benchmark::State& state, P p) {
    const std::size_t start = std::size_t(state.range(0));
    const std::vector<float>& source = dk_bench::logits(bench_vocab);
    std::vector<float> row = source;
    std::vector<token_id> h;
    h.reserve(start + regrow);
    while (h.size() < start) h.push_back(cycle_id(h.size()));
    history_tracker tracker;
    std::vector<token_id> ids;
    ids.reserve(4096);
    token_sink sink(
        [](void* v, token_id t) noexcept {
            if (t >= 0 && std::size_t(t) < bench_vocab)
                static_cast<std::vector<token_id>*>(v)->push_back(t);
        },
        &ids);
    auto call = [&] {
        const processor_context c{.history = h, .vocab_size = bench_vocab};
        const history_change ch = tracker.sync(h);
        if (ch.rebuild) {
            p.reset(c);
        } else {
            p.cut_back(ch.keep, ch.removed, c);
            p.append(ch.added, c);
        }
        ids.clear();
        p.touched(c, sink);
        p.apply(row, c);
        benchmark::DoNotOptimize(row.data());
        for (token_id t : ids) row[std::size_t(t)] = source[std::size_t(t)];
    };
    call();  // the first call builds the state from the whole history (not timed)
    for (auto _ : state) {
        if (h.size() == start + regrow) {
            state.PauseTiming();
            h.resize(start);
            call();
            state.ResumeTiming();
        }
        h.push_back(cycle_id(h.size()));
        call();
    }
    state.counters["declared"] = double(ids.size());
}

void history_args(benchmark::internal::Benchmark* b) {
    b->Arg(300)->Arg(4000)->Arg(100000)->ArgName("history");
}

void BM_proc_penalties_last64(benchmark::State& state) {
    run_steps(state, penalties_processor({.repetition = 1.1f,
                                          .frequency = 0.1f,
                                          .repetition_scope = penalty_scope::last_n,
                                          .frequency_scope = penalty_scope::last_n,
                                          .last_n = 64}));
}
BENCHMARK(BM_proc_penalties_last64)->Apply(history_args);

void BM_proc_penalties_whole(benchmark::State& state) {
    run_steps(state, penalties_processor({.repetition = 1.1f, .frequency = 0.1f}));
}
BENCHMARK(BM_proc_penalties_whole)->Apply(history_args);

void BM_proc_ngram3(benchmark::State& state) { run_steps(state, no_repeat_ngram_processor(3)); }
BENCHMARK(BM_proc_ngram3)->Apply(history_args);

// For scale: the stateless free function at the same history lengths (O(history) per call).
void BM_proc_free_penalties_whole(benchmark::State& state) {
    const std::size_t n = std::size_t(state.range(0));
    const std::vector<float>& source = dk_bench::logits(bench_vocab);
    std::vector<float> row = source;
    std::vector<token_id> h(n);
    for (std::size_t i = 0; i < n; ++i) h[i] = cycle_id(i);
    const penalty_params p{.repetition = 1.1f, .frequency = 0.1f};
    penalty_workspace ws(bench_vocab);
    for (auto _ : state) {
        apply_penalties(row, h, 0, p, ws);
        benchmark::DoNotOptimize(row.data());
        for (std::size_t i = 0; i < distinct_ids && i < n; ++i) {
            const std::size_t t = std::size_t(cycle_id(i));
            row[t] = source[t];
        }
    }
}
BENCHMARK(BM_proc_free_penalties_whole)->Apply(history_args);

}  // namespace
