// What a request costs beyond its draws, at V = 128256 on the peaked row:
//
//   BM_history/<kind>/H:<n>   a sampler with processors, generating step by step: each call
//       sees the history of the previous call plus one token (ids cycling through 2 000 distinct
//       ids, as a long generation repeats itself). Exactly 256 timed steps per repetition,
//       starting at history n - 128 (so n is the mean history of the timed steps), after one
//       untimed call at the starting history (the request's prefill). Reported per step.
//       kind: last64   llama.cpp chain + repetition 1.1 and frequency 0.1 over the last 64 tokens
//             whole    llama.cpp chain + repetition 1.1 and frequency 0.1 over the whole history
//             ngram3   llama.cpp chain + no-repeat-ngram of size 3
//             whole_300ids  whole, over a history cycling through 300 distinct ids instead: the
//                      same distinct tokens at both lengths, so any term in the history length
//                      shows (whole's H = 100000 row has 2 000 distinct ids against 300: its ratio
//                      includes the O(distinct tokens) work the penalties must do)
//             whole_hot     whole, over a history cycling through the row's 2 000 best ids:
//                      the penalties move the row's best entries (the first step cannot decide
//                      without the patches: processing.hpp's back-off)
//       Bars (issue 12): time at H = 100000 <= 1.5x the time at H = 300.
//   BM_history_stage/<kind>/H:<n>   the processor stage and the first step, as BM_history (the
//       sampler's processor_pipeline::run on the sparse path, patches deferred where the
//       penalties only lower, then the working set's top-k 40 over the overlay and its restore
//       of the workspace's bits): what the processors cost per step with the selection they
//       ride on (compare with BM_history_stage/none, the selection alone); the rest of a
//       BM_history step is the sampler's later steps and draw. Counters: patches written per
//       step (0 while the first step decides without them).
//   BM_request/<setting>/new    a new sampler + its first draw (+ its destruction) per iteration,
//                               as an engine makes one per request;
//   BM_request/<setting>/warm   a draw with a sampler made before the timing.
//       Bar: new <= 2x warm.
//   BM_memory/<setting>   heap bytes held per idle request: 16 samplers made and each drawn once
//       with a 300-token history, then the growth of the heap in use (glibc mallinfo2: bytes in
//       use in the main arena plus mmapped chunks) divided by 16 (counter bytes_per_sampler,
//       the sampler object included: each is made with make_unique; sizeof_sampler is the
//       object alone). One sampler is made and drawn before the measure, so memory shared per
//       thread is not counted. Bar: <= 4 KiB plus the params' own heap and the history state
//       (O(distinct tokens seen)).

#include "bench_common.hpp"

#include <decodekit/sampling/sampling.hpp>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace {

using namespace decodekit;

constexpr std::size_t V = dk_bench::bar_vocab;

const sampling_params llama_chain{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f};

sampling_params with_penalties(sampling_params p, penalty_scope scope) {
    p.penalties = {.repetition = 1.1f,
                   .frequency = 0.1f,
                   .repetition_scope = scope,
                   .frequency_scope = scope,
                   .last_n = 64};
    return p;
}

/// Token i of a benchmark history: `distinct` ids spread over the vocabulary, cycling (2 000
/// unless said otherwise).
token_id history_token(std::size_t i, std::size_t distinct = 2000) {
    return token_id((std::size_t(i % distinct) * 7919 + 13) % V);  // 7919 is prime: distinct ids
}

std::vector<token_id> make_history(std::size_t n, std::size_t distinct = 2000, bool hot = false) {
    std::vector<token_id> h(n);
    for (std::size_t i = 0; i < n; ++i) h[i] = history_token(i, distinct);
    if (hot) {  // the row's `distinct` best ids instead
        const auto& x = dk_bench::logits(V);
        std::vector<token_id> best(V);
        for (std::size_t i = 0; i < V; ++i) best[i] = token_id(i);
        std::partial_sort(
            best.begin(), best.begin() + std::ptrdiff_t(distinct), best.end(),
            [&](token_id a, token_id b) { return x[std::size_t(a)] > x[std::size_t(b)]; });
        for (std::size_t i = 0; i < n; ++i) h[i] = best[i % distinct];
    }
    return h;
}

constexpr std::size_t history_steps = 256;

void run_history(benchmark::State& state, const sampling_params& p, std::size_t mean_history,
                 std::size_t distinct, bool hot) {
    const auto& x = dk_bench::logits(V);
    const std::size_t start = mean_history - history_steps / 2;
    std::vector<token_id> h = make_history(start + history_steps + 1, distinct, hot);
    sampler s(p, V);
    std::size_t n = start;
    const auto ctx = [&] {
        return sample_context{.sequence = 1,
                              .step = n - start,
                              .history = std::span<const token_id>(h.data(), n),
                              .prompt_length = start};
    };
    if (!s.sample(x, ctx()).ok()) {  // the request's first call (prefill): untimed
        state.SkipWithError("sample() did not return status ok");
        return;
    }
    for (auto _ : state) {
        ++n;  // the history grows by one token per step
        benchmark::DoNotOptimize(s.sample(x, ctx()));
    }
    dk_bench::set_items(state, V);
}

/// run_history's steps through the processor stage and the first step (top-k 40, the sparse
/// path a top-k-first sampler takes).
void run_history_stage(benchmark::State& state, const sampling_params& p, std::size_t mean_history,
                       std::size_t distinct, bool hot) {
    const auto& x = dk_bench::logits(V);
    const std::size_t start = mean_history - history_steps / 2;
    std::vector<token_id> h = make_history(start + history_steps + 1, distinct, hot);
    processor_pipeline procs(p, /*sparse_first_step=*/true);
    sampling_workspace& ws = sampling_workspace::this_thread();
    ws.reserve(V);
    std::size_t n = start, patches = 0;
    const auto step = [&] {
        const sample_context ctx{.sequence = 1,
                                 .step = n - start,
                                 .history = std::span<const token_id>(h.data(), n),
                                 .prompt_length = start};
        const processed_row pr = procs.run(x, ctx, ws, /*defer=*/true);
        working_set w(pr.row, ws, pr.patches, pr.overlay, pr.deferred);
        if (w.overlaid())
            w.overlay_top_k(40, tie_policy::exactly_k);
        else
            w.row_top_k(40, tie_policy::exactly_k, ws.cand);
        const std::size_t written = w.patch_count();
        w.clear_patch_marks();  // (the destructor would): restores the workspace's bits
        return written;
    };
    step();  // the request's first call (prefill): untimed
    for (auto _ : state) {
        ++n;
        patches = step();
        benchmark::DoNotOptimize(patches);
    }
    state.counters["patches"] = double(patches);
    dk_bench::set_items(state, V);
}

void run_request(benchmark::State& state, const sampling_params& p, bool fresh) {
    const auto& x = dk_bench::logits(V);
    const std::vector<token_id> h = make_history(300);
    const sample_context ctx{.sequence = 1, .history = h, .prompt_length = 300};
    sampler warm(p, V);
    if (!warm.sample(x, ctx).ok()) {
        state.SkipWithError("sample() did not return status ok");
        return;
    }
    if (fresh) {
        for (auto _ : state) {
            sampler s(p, V);
            benchmark::DoNotOptimize(s.sample(x, ctx));
        }
    } else {
        for (auto _ : state) benchmark::DoNotOptimize(warm.sample(x, ctx));
    }
    dk_bench::set_items(state, V);
}

/// Heap bytes in use (glibc); -1 where unknown.
double heap_in_use() {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
    const struct mallinfo2 mi = mallinfo2();
    return double(mi.uordblks) + double(mi.hblkhd);
#else
    return -1;
#endif
}

/// True when heap_in_use() sees a 1 MiB allocation (not under a sanitizer's allocator, which
/// glibc's statistics do not see).
bool heap_statistics_work() {
    const double before = heap_in_use();
    if (before < 0) return false;
    auto block = std::make_unique<char[]>(std::size_t(1) << 20);
    benchmark::DoNotOptimize(block.get());
    return heap_in_use() - before >= double(std::size_t(1) << 20);
}

void run_memory(benchmark::State& state, const sampling_params& p) {
    constexpr std::size_t n = 16;
    const auto& x = dk_bench::logits(V);
    const std::vector<token_id> h = make_history(300);
    const sample_context ctx{.sequence = 1, .history = h, .prompt_length = 300};
    if (!heap_statistics_work()) {
        state.SkipWithError("no heap statistics here (glibc >= 2.33 mallinfo2, no sanitizer)");
        return;
    }
    double bytes = 0;
    for (auto _ : state) {
        {
            sampler first(p, V);  // warms whatever a thread shares between samplers
            benchmark::DoNotOptimize(first.sample(x, ctx));
        }
        std::vector<std::unique_ptr<sampler>> live;
        live.reserve(n);
        const double before = heap_in_use();
        for (std::size_t i = 0; i < n; ++i) {
            live.push_back(std::make_unique<sampler>(p, V));
            benchmark::DoNotOptimize(live.back()->sample(x, ctx));
        }
        bytes = (heap_in_use() - before) / double(n);
    }
    state.counters["bytes_per_sampler"] = bytes;
    state.counters["sizeof_sampler"] = double(sizeof(sampler));
}

struct request_setting {
    std::string name;
    sampling_params params;
};

std::vector<request_setting> request_settings() {
    sampling_params hf{.temperature = 0.7f, .top_p = 0.9f, .order = sampling_order::hf};
    hf.penalties.repetition = 1.1f;
    sampling_params vllm{.temperature = 0.7f, .min_p = 0.05f, .order = sampling_order::vllm};
    vllm.penalties = {.frequency = 0.2f,
                      .presence = 0.2f,
                      .repetition_scope = penalty_scope::whole_history,
                      .frequency_scope = penalty_scope::output_only};
    vllm.logprobs.top_n = 5;
    return {
        {"greedy", {.temperature = 0.f}},
        {"llama_chain", llama_chain},
        {"llama_chain_pen64", with_penalties(llama_chain, penalty_scope::last_n)},
        {"hf_top_p_rep", hf},
        {"vllm_min_p_logprobs5", vllm},
    };
}

[[maybe_unused]] const bool registered = [] {
    sampling_params ngram = llama_chain;
    ngram.no_repeat_ngram_size = 3;
    struct history_kind {
        const char* name;
        sampling_params params;
        std::size_t distinct;
        bool hot = false;
    };
    const history_kind kinds[] = {
        {"last64", with_penalties(llama_chain, penalty_scope::last_n), 2000},
        {"whole", with_penalties(llama_chain, penalty_scope::whole_history), 2000},
        {"ngram3", ngram, 2000},
        {"whole_300ids", with_penalties(llama_chain, penalty_scope::whole_history), 300},
        {"whole_hot", with_penalties(llama_chain, penalty_scope::whole_history), 2000, true},
    };
    for (const auto& k : kinds)
        for (const std::size_t hist : {std::size_t(300), std::size_t(100000)})
            benchmark::RegisterBenchmark(
                ("BM_history/" + std::string(k.name) + "/H:" + std::to_string(hist)).c_str(),
                run_history, k.params, hist, k.distinct, k.hot)
                ->Iterations(history_steps);
    for (const auto& k : kinds)
        for (const std::size_t hist : {std::size_t(300), std::size_t(100000)})
            benchmark::RegisterBenchmark(
                ("BM_history_stage/" + std::string(k.name) + "/H:" + std::to_string(hist)).c_str(),
                run_history_stage, k.params, hist, k.distinct, k.hot)
                ->Iterations(history_steps);
    benchmark::RegisterBenchmark("BM_history_stage/none/H:300", run_history_stage, llama_chain,
                                 std::size_t(300), std::size_t(2000), false)
        ->Iterations(history_steps);
    for (const request_setting& r : request_settings()) {
        benchmark::RegisterBenchmark(("BM_request/" + r.name + "/new").c_str(), run_request,
                                     r.params, true);
        benchmark::RegisterBenchmark(("BM_request/" + r.name + "/warm").c_str(), run_request,
                                     r.params, false);
        benchmark::RegisterBenchmark(("BM_memory/" + r.name).c_str(), run_memory, r.params)
            ->Iterations(1);
    }
    return true;
}();

}  // namespace
