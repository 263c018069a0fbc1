// Speculative decoding benchmarks.
//   BM_spec_verify_*: verification cost per draft token on precomputed processed distributions
//     (target p and draft q over the whole vocabulary, or after top-k 40), at V = 32000 and
//     128256; compare with BM_floor_read of bench_floors.cpp (same binary, same V). Items = V.
//   BM_spec_family/<shape>/V:128256: one verified draft token on the row family as a speculating
//     engine pays it: the target's processing of its row (a sampler with top-p 0.95 through
//     sampler_processing::processed(), the weighted_set the stepper verifies on: the top-p cut
//     over the row, not compacted) and verify_rejection against the draft's distribution (the
//     same processing of a related draft row, 0.8 * target + 0.6 * another row of the shape, as
//     the sparse q a proposer stores; computed once, as the drafter's cost is not the
//     verifier's). Judged against the exp floor of the shape, as top-p is (issue 12:
//     verification gets the same treatment). Counters: accept (acceptance rate), kept (target
//     set), cut (1 when the target set stayed a cut), rejected (rejections per token: each one
//     draws from the residual by rejection from p, ~1 / TV proposals drawn on the cut, the
//     exact pass over the cut with q merged along it after 32 refusals). Also at V = 256000
//     (no O(V) clear or copy beyond the pass: the time scales with V, not with V^2 or a memset).
//   BM_spec_processed/<shape>/V:<V>: the target's processing alone (the same call as in
//     BM_spec_family, no verification): BM_spec_family minus this is what the verification
//     adds per token (p(x), q(x) on acceptance; the residual's proposals on rejection).
//   BM_spec_toy_*: speculative_decode on the deterministic toy models of the tests, one run of 64
//     new tokens per iteration; counters: mean accepted draft tokens per round, tokens per target
//     call, acceptance rate. (Toy model calls are nearly free, so time here is the loop's own
//     overhead, not a speedup; the demo measures speedup on the reference backend.)

#include "bench_common.hpp"

#include <decodekit/decodekit.hpp>

#include "../tests/support/toy_model.hpp"

#include <cstdint>
#include <map>
#include <vector>

namespace {

namespace dk = decodekit;

struct verify_inputs {
    dk::sparse_distribution p, q, pk, qk;        // full; top-k 40
    std::vector<dk::token_id> drafts, drafts_k;  // sampled from q / qk
};

/// Target row = the shared bench row; draft row = 0.8 * target + 0.6 * noise (a related draft).
const verify_inputs& inputs(std::size_t v) {
    static std::map<std::size_t, verify_inputs> cache;
    auto it = cache.find(v);
    if (it != cache.end()) return it->second;
    verify_inputs in;
    const auto& t = dk_bench::logits(v);
    const auto noise = dk_bench::make_logits(v, 777);
    std::vector<float> d(v);
    for (std::size_t i = 0; i < v; ++i) d[i] = 0.8f * t[i] + 0.6f * noise[i];
    dk::basic_processing full{}, topk{.top_k = 40};
    full(t, {}, in.p);
    full(d, {}, in.q);
    topk(t, {}, in.pk);
    topk(d, {}, in.qk);
    for (std::uint64_t i = 0; i < 256; ++i) {
        in.drafts.push_back(dk::detail::draw_sparse(
            in.q, dk::make_stream({3, 0, i}, dk::rng_purpose::draft).uniform()));
        in.drafts_k.push_back(dk::detail::draw_sparse(
            in.qk, dk::make_stream({3, 0, i}, dk::rng_purpose::draft).uniform()));
    }
    return cache.emplace(v, std::move(in)).first->second;
}

void at_two_sizes(benchmark::internal::Benchmark* b) { b->Arg(32000)->Arg(128256)->ArgName("V"); }

template <class F>
void verify_loop(benchmark::State& state, F&& f) {
    std::uint64_t i = 0, acc = 0;
    for (auto _ : state) {
        const dk::verify_result r = f(i);
        acc += r.accepted;
        benchmark::DoNotOptimize(r);
        ++i;
    }
    dk_bench::set_items(state);
    state.counters["accept"] = i ? double(acc) / double(i) : 0.0;
}

void BM_spec_verify_rejection_full(benchmark::State& state) {
    const std::size_t v = std::size_t(state.range(0));
    const auto& in = inputs(v);
    dk::verify_workspace ws(v);
    verify_loop(state, [&](std::uint64_t i) {
        return dk::verify_rejection(in.p, in.q, in.drafts[i & 255], {1, 0, i}, ws);
    });
}
BENCHMARK(BM_spec_verify_rejection_full)->Apply(at_two_sizes);

void BM_spec_verify_one_hot_full(benchmark::State& state) {
    const auto& in = inputs(std::size_t(state.range(0)));
    verify_loop(state, [&](std::uint64_t i) {
        return dk::verify_one_hot(in.p, in.drafts[i & 255], {1, 0, i});
    });
}
BENCHMARK(BM_spec_verify_one_hot_full)->Apply(at_two_sizes);

void BM_spec_verify_greedy_full(benchmark::State& state) {
    const auto& in = inputs(std::size_t(state.range(0)));
    verify_loop(state,
                [&](std::uint64_t i) { return dk::verify_greedy(in.p, in.drafts[i & 255]); });
}
BENCHMARK(BM_spec_verify_greedy_full)->Apply(at_two_sizes);

void BM_spec_verify_rejection_topk40(benchmark::State& state) {
    const std::size_t v = std::size_t(state.range(0));
    const auto& in = inputs(v);
    dk::verify_workspace ws(v);
    verify_loop(state, [&](std::uint64_t i) {
        return dk::verify_rejection(in.pk, in.qk, in.drafts_k[i & 255], {1, 0, i}, ws);
    });
}
BENCHMARK(BM_spec_verify_rejection_topk40)->Apply(at_two_sizes);

struct family_inputs {
    std::vector<float> draft_row;
    dk::sparse_distribution q;
    std::vector<dk::token_id> drafts;  // sampled from q
};

void run_spec_family(benchmark::State& state, dk_bench::shape sh, std::size_t v, bool verify) {
    const auto& t = dk_bench::row(sh, v);
    const auto other = dk_bench::make_row(sh, v, 777);
    const dk::sampling_params target_params{.top_p = 0.95f};
    family_inputs in;
    in.draft_row.resize(v);
    for (std::size_t i = 0; i < v; ++i) in.draft_row[i] = 0.8f * t[i] + 0.6f * other[i];
    dk::sampler draft_sampler(target_params, v);
    const dk::sampler_processing draft(draft_sampler);
    draft(in.draft_row, {}, in.q);
    const dk::distribution qd{in.q.tokens, in.q.probs};
    for (std::uint64_t i = 0; i < 256; ++i)
        in.drafts.push_back(
            dk::draw(qd, dk::make_stream({3, 0, i}, dk::rng_purpose::draft).uniform()));
    dk::sampler target_sampler(target_params, v);
    const dk::sampler_processing target(target_sampler);
    dk::verify_workspace ws(v);
    const dk::weighted_set p0 = target.processed(t, {});
    const std::size_t kept = p0.kept;
    const bool is_cut = p0.is_cut;
    if (p0.empty() || in.q.size() == 0 || in.drafts[0] < 0) {
        state.SkipWithError("empty target or draft distribution");
        return;
    }
    std::uint64_t i = 0, acc = 0;
    if (!verify) {  // the target's processing alone
        for (auto _ : state) {
            const dk::weighted_set p =
                target.processed(t, {.sequence = 1, .step = i, .history = {}});
            benchmark::DoNotOptimize(p);
            ++i;
        }
        dk_bench::set_items(state, v);
        state.counters["kept"] = double(kept);
        return;
    }
    for (auto _ : state) {
        const dk::weighted_set p = target.processed(t, {.sequence = 1, .step = i, .history = {}});
        const dk::verify_result r =
            dk::verify_rejection(p, in.q, in.drafts[i & 255], {1, 0, i}, ws);
        acc += r.accepted;
        benchmark::DoNotOptimize(r);
        ++i;
    }
    dk_bench::set_items(state, v);
    state.counters["accept"] = i ? double(acc) / double(i) : 0.0;
    state.counters["rejected"] = i ? double(i - acc) / double(i) : 0.0;
    state.counters["kept"] = double(kept);
    state.counters["cut"] = is_cut ? 1.0 : 0.0;
}

[[maybe_unused]] const bool spec_family_registered = [] {
    for (const std::size_t v : {dk_bench::bar_vocab, std::size_t(256000)})
        for (const dk_bench::shape sh : dk_bench::shapes)
            benchmark::RegisterBenchmark(dk_bench::family_name("BM_spec_family", sh, v).c_str(),
                                         run_spec_family, sh, v, true);
    for (const std::size_t v : {dk_bench::bar_vocab, std::size_t(256000)})
        for (const dk_bench::shape sh : dk_bench::shapes)
            benchmark::RegisterBenchmark(dk_bench::family_name("BM_spec_processed", sh, v).c_str(),
                                         run_spec_family, sh, v, false);
    return true;
}();

// ---- mean accepted length per proposer on the toy models

constexpr std::size_t toy_vocab = 64;

dk_test::toy_model_config toy_cfg() {
    return {.vocab_size = toy_vocab, .num_layers = 8, .num_heads = 4, .seed = 11, .scale = 3.f};
}

template <class MakeProposer>
void toy_run(benchmark::State& state, MakeProposer&& make, float temperature) {
    dk_test::toy_model target(toy_cfg());
    std::vector<dk::token_id> prompt;
    for (int i = 0; i < 24; ++i) prompt.push_back(dk::token_id((i * 7) % 13));
    for (int i = 0; i < 8; ++i) prompt.push_back(prompt[std::size_t(i)]);  // some repetition
    dk::basic_processing proc{.temperature = temperature};
    auto proposer = make(target, proc);
    std::size_t rounds = 0, accepted = 0, drafted = 0, emitted = 0, calls = 0;
    std::uint64_t seq = 0;
    for (auto _ : state) {
        const auto r = dk::speculative_decode(
            target, proposer, prompt,
            {.max_new_tokens = 64, .seed = 1, .sequence = seq++, .draft_length = 4}, proc);
        rounds += r.stats.rounds;
        accepted += r.stats.accepted;
        drafted += r.stats.drafted;
        emitted += r.stats.emitted;
        calls += r.stats.target_calls;
    }
    state.counters["accepted_per_round"] = double(accepted) / double(rounds);
    state.counters["tokens_per_target_call"] = double(emitted) / double(calls);
    state.counters["acceptance"] = drafted ? double(accepted) / double(drafted) : 0.0;
}

dk_test::toy_model& toy_draft() {
    static dk_test::toy_model d = dk_test::toy_model::draft_of(toy_cfg(), 0.5f);
    return d;
}

void BM_spec_toy_draft_model(benchmark::State& state) {
    toy_run(
        state,
        [](auto&, auto& proc) {
            return dk::draft_model_proposer(toy_draft(), proc, {.mode = dk::draft_mode::sample});
        },
        float(state.range(0)) / 10.f);
}
BENCHMARK(BM_spec_toy_draft_model)->Arg(0)->Arg(10)->ArgName("Tx10");

void BM_spec_toy_early_exit(benchmark::State& state) {
    toy_run(
        state,
        [](auto& target, auto& proc) {
            return dk::early_exit_proposer(target, 6, proc, {.mode = dk::draft_mode::sample});
        },
        float(state.range(0)) / 10.f);
}
BENCHMARK(BM_spec_toy_early_exit)->Arg(0)->Arg(10)->ArgName("Tx10");

void BM_spec_toy_mtp_parallel(benchmark::State& state) {
    toy_run(
        state,
        [](auto& target, auto& proc) {
            return dk::mtp_proposer(target, 0, proc, {.mode = dk::draft_mode::sample, .slot = 1});
        },
        float(state.range(0)) / 10.f);
}
BENCHMARK(BM_spec_toy_mtp_parallel)->Arg(0)->Arg(10)->ArgName("Tx10");

void BM_spec_toy_ngram(benchmark::State& state) {
    toy_run(
        state, [](auto&, auto&) { return dk::ngram_proposer{.min_n = 1, .max_n = 3}; },
        float(state.range(0)) / 10.f);
}
BENCHMARK(BM_spec_toy_ngram)->Arg(0)->Arg(10)->ArgName("Tx10");

}  // namespace
