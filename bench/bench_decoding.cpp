// Search decoders: the per-step cost without model cost (precomputed logits rows).
//   BM_beam_step      beam_top_candidates: top 2B of beam_score + logprob over B rows x V
//                     (logsumexp + kernels::top_k per row, then a merge). Compare with
//                     B x BM_floor_read (read floor per beam) and B x BM_floor_exp.
//   BM_beam_advance   a whole beam_searcher::advance (selection + beam bookkeeping).
//   BM_beam_family/<shape>/V:128256  beam_top_candidates for 4 beams whose rows are 4 distinct
//                     rows of one shape of the family (bench_rows.hpp). Bar (issue 12): time / 4
//                     <= 1.5x the exp floor of that shape (an exact beam score needs each row's
//                     normaliser).
//   BM_contrastive_step  one contrastive step outside the model: top-k candidates with their
//                     probabilities (logsumexp + top_k over V) and the degeneration penalty of k
//                     candidates against a 128-position context of hidden size 768; and the
//                     two parts alone (BM_contrastive_candidates, BM_contrastive_penalty).
#include "bench_common.hpp"

#include <decodekit/decoding/beam_search.hpp>
#include <decodekit/decoding/contrastive.hpp>

#include <vector>

namespace {

std::vector<float> beam_rows(std::size_t beams, std::size_t v) {
    std::vector<float> rows;
    rows.reserve(beams * v);
    for (std::size_t b = 0; b < beams; ++b) {
        const auto r = dk_bench::make_logits(v, 1000 + b);
        rows.insert(rows.end(), r.begin(), r.end());
    }
    return rows;
}

void beam_args(benchmark::internal::Benchmark* b) {
    for (std::int64_t v : {32000, 128256})
        for (std::int64_t beams : {4, 8}) b->Args({v, beams});
    b->ArgNames({"V", "beams"});
}

void BM_beam_step(benchmark::State& state) {
    const std::size_t V = std::size_t(state.range(0)), B = std::size_t(state.range(1));
    const auto rows = beam_rows(B, V);
    std::vector<double> scores(B);
    for (std::size_t b = 0; b < B; ++b) scores[b] = -0.25 * double(b);
    decodekit::beam_step_workspace ws(V, B, 2 * B);
    std::vector<decodekit::beam_candidate> out(2 * B);
    for (auto _ : state) {
        benchmark::DoNotOptimize(decodekit::beam_top_candidates(rows, V, scores, out, ws));
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(B * V));
}
BENCHMARK(BM_beam_step)->Apply(beam_args);

void BM_beam_advance(benchmark::State& state) {
    const std::size_t V = std::size_t(state.range(0)), B = std::size_t(state.range(1));
    const auto rows = beam_rows(B, V);
    const std::vector<decodekit::token_id> prompt(32, 1);
    const decodekit::beam_search_params p{.num_beams = B, .max_new_tokens = 1u << 20};
    auto fresh = [&] {
        decodekit::beam_searcher s(p, V, prompt);
        s.advance(rows);  // first step: one row -> B beams
        return s;
    };
    auto s = fresh();
    std::size_t n = 0;
    for (auto _ : state) {
        if (++n % 256 == 0) {  // keep sequences short: bookkeeping cost of a ~150-token context
            state.PauseTiming();
            s = fresh();
            state.ResumeTiming();
        }
        s.advance(rows);
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(B * V));
}
BENCHMARK(BM_beam_advance)->Apply(beam_args);

void run_beam_family(benchmark::State& state, dk_bench::shape sh, std::size_t V) {
    constexpr std::size_t B = 4;
    std::vector<float> rows;
    rows.reserve(B * V);
    for (std::size_t b = 0; b < B; ++b) {
        const auto r = dk_bench::make_row(sh, V, 1 + b);
        rows.insert(rows.end(), r.begin(), r.end());
    }
    const std::vector<double> scores = {0.0, -0.25, -0.5, -0.75};
    decodekit::beam_step_workspace ws(V, B, 2 * B);
    std::vector<decodekit::beam_candidate> out(2 * B);
    if (decodekit::beam_top_candidates(rows, V, scores, out, ws) != out.size()) {
        state.SkipWithError("beam_top_candidates returned fewer candidates than asked");
        return;
    }
    for (auto _ : state) {
        benchmark::DoNotOptimize(decodekit::beam_top_candidates(rows, V, scores, out, ws));
        benchmark::ClobberMemory();
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(B * V));
    state.counters["beams"] = double(B);
}

[[maybe_unused]] const bool beam_family_registered = [] {
    for (const dk_bench::shape sh : dk_bench::shapes)
        benchmark::RegisterBenchmark(
            dk_bench::family_name("BM_beam_family", sh, dk_bench::bar_vocab).c_str(),
            run_beam_family, sh, dk_bench::bar_vocab);
    return true;
}();

void contrastive_args(benchmark::internal::Benchmark* b) {
    for (std::int64_t v : {32000, 128256})
        for (std::int64_t k : {4, 8}) b->Args({v, k});
    b->ArgNames({"V", "k"});
}

// Hidden states of k candidates and of a context of n positions (uniform in [-0.5, 0.5)).
struct hidden_fixture {
    std::vector<float> cand, ctx;
    hidden_fixture(std::size_t k, std::size_t h, std::size_t n) : cand(k * h), ctx(n * h) {
        std::uint64_t seed = 7;
        for (auto& x : cand) x = float(dk_bench::uniform01(seed) - 0.5);
        for (auto& x : ctx) x = float(dk_bench::uniform01(seed) - 0.5);
    }
};

// One whole contrastive step outside the model, GPT-2-small shapes (hidden 768, 128 positions
// of context, as in the paper): candidates (logsumexp + top_k over V) + penalty.
void BM_contrastive_step(benchmark::State& state) {
    const std::size_t V = std::size_t(state.range(0)), k = std::size_t(state.range(1));
    const auto& logits = dk_bench::logits(V);
    const hidden_fixture hf(k, 768, 128);
    decodekit::contrastive_scorer sc(V, 768, k);
    for (auto _ : state) {
        benchmark::DoNotOptimize(sc.candidates_of(logits));
        benchmark::DoNotOptimize(sc.select(hf.cand, hf.ctx, 0.6f));
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(V));
}
BENCHMARK(BM_contrastive_step)->Apply(contrastive_args);

// The two parts separately: candidates only (V-bound) ...
void BM_contrastive_candidates(benchmark::State& state) {
    const std::size_t V = std::size_t(state.range(0)), k = std::size_t(state.range(1));
    const auto& logits = dk_bench::logits(V);
    decodekit::contrastive_scorer sc(V, 1, k);
    for (auto _ : state) benchmark::DoNotOptimize(sc.candidates_of(logits));
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(V));
}
BENCHMARK(BM_contrastive_candidates)->Apply(contrastive_args);

// ... and the degeneration penalty alone: k x n cosine similarities of dimension h
// (items = k * n * h multiply-adds).
void BM_contrastive_penalty(benchmark::State& state) {
    const std::size_t k = std::size_t(state.range(0)), h = std::size_t(state.range(1)),
                      n = std::size_t(state.range(2));
    const auto& logits = dk_bench::logits(32000);
    const hidden_fixture hf(k, h, n);
    decodekit::contrastive_scorer sc(32000, h, k);
    sc.candidates_of(logits);
    for (auto _ : state) benchmark::DoNotOptimize(sc.select(hf.cand, hf.ctx, 0.6f));
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(k * n * h));
}
BENCHMARK(BM_contrastive_penalty)
    ->Args({4, 768, 128})
    ->Args({8, 768, 128})
    ->Args({4, 4096, 512})
    ->ArgNames({"k", "hidden", "ctx"});

}  // namespace
