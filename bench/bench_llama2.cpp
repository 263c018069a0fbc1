// The reference backend (examples/llama2).
//   BM_llama2_decode_* / BM_llama2_prefill: a random-weight model with stories260K's shape (dim
//     64, hidden 172, 5 layers, 8 heads, 4 KV heads, vocab 512, context 512): a decode step with
//     the KV cache, without it (the whole sequence recomputed), and a prefill.
//   BM_llama2_score/model:M/positions:P: ONE call scoring P new positions (logits of all P, as a
//     speculative verification does) on a warm cache of 64 tokens. M = 0: stories260K (the
//     shipped file; compute-bound: its 1 MB of weights stay in cache); M = 1: a memory-bound
//     random-weight configuration (dim 768, 12 layers, hidden 2048, 12 heads, 12 KV heads, vocab
//     32000, context 1024: 440 MB of weights read per forward).
//   BM_llama2_draft_call/model:M: one early-exit draft call (layer_logits at n_layers - 1, one
//     new position on a warm 64-token cache).
//   BM_llama2_requests/model:M/batched:B: 8 requests x 1 new position (each on its own warm
//     64-token cache) in ONE call (B = 1) or in 8 separate calls (B = 0).
//   BM_llama2_speculative/draft:D: greedy decoding on stories260K with the demo's settings
//     ("Once upon a time", 160 new tokens, stop at BOS/EOS): D = 0 plain greedy (generate), 1
//     greedy speculative decoding with n-gram prompt lookup (n 3..1), 2 with the early-exit
//     self-draft at layer n_layers - 1; draft length 4, adaptive. Items = generated tokens;
//     counters: acceptance (accepted / verified drafts), tokens per target call.
// Random weights cost exactly what real ones do. The stories260K file is found through
// DECODEKIT_MODELS_DIR, else examples/models beside this file's source tree (skipped with an
// error message when missing).
#include "../examples/llama2/llama2.hpp"

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

namespace dk = decodekit;

dk_llama2::model& stories260k_shaped() {
    static dk_llama2::model m = [] {
        dk_llama2::config c;
        c.dim = 64;
        c.hidden_dim = 172;
        c.n_layers = 5;
        c.n_heads = 8;
        c.n_kv_heads = 4;
        c.vocab_size = 512;
        c.seq_len = 512;
        auto ck = dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(c, 1));
        return dk_llama2::model(std::move(ck.value()));
    }();
    return m;
}

std::string models_dir() {
    if (const char* env = std::getenv("DECODEKIT_MODELS_DIR"); env && *env) return env;
    std::string here = __FILE__;  // <source>/bench/bench_llama2.cpp
    const auto cut = here.rfind("bench/bench_llama2.cpp");
    return (cut == std::string::npos ? std::string() : here.substr(0, cut)) + "examples/models";
}

/// stories260K from the shipped file, or nullptr when it cannot be loaded.
dk_llama2::model* stories260k() {
    static std::unique_ptr<dk_llama2::model> m = []() -> std::unique_ptr<dk_llama2::model> {
        auto ck = dk_llama2::load_checkpoint(models_dir() + "/stories260K.bin");
        if (!ck) return nullptr;
        return std::make_unique<dk_llama2::model>(std::move(ck.value()));
    }();
    return m.get();
}

/// The memory-bound configuration (built on first use: ~1 s, 440 MB of weights).
dk_llama2::model& memory_bound() {
    static dk_llama2::model m = [] {
        dk_llama2::config c;
        c.dim = 768;
        c.hidden_dim = 2048;
        c.n_layers = 12;
        c.n_heads = 12;
        c.n_kv_heads = 12;
        c.vocab_size = 32000;
        c.seq_len = 1024;
        auto ck = dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(c, 3));
        return dk_llama2::model(std::move(ck.value()));
    }();
    return m;
}

dk_llama2::model* model_arg(benchmark::State& state) {
    dk_llama2::model* m = state.range(0) == 0 ? stories260k() : &memory_bound();
    if (!m) state.SkipWithError(("cannot load " + models_dir() + "/stories260K.bin").c_str());
    return m;
}

/// A deterministic token sequence: BOS, then ids in [3, vocab).
std::vector<dk::token_id> bench_tokens(std::size_t n, std::size_t vocab, std::uint64_t seed) {
    dk_llama2::splitmix64 r{seed};
    std::vector<dk::token_id> t{dk_llama2::bos_id};
    while (t.size() < n) t.push_back(dk::token_id(3 + r.next() % (vocab - 3)));
    return t;
}

constexpr std::size_t warm_tokens = 64;

// Greedy decoding of state.range(0) tokens from BOS; cached or recomputing everything per step.
void run_decode(benchmark::State& state, bool cached) {
    auto& m = stories260k_shaped();
    const std::size_t n = std::size_t(state.range(0));
    std::vector<float> row(m.vocab_size());
    std::vector<dk::token_id> seq;
    for (auto _ : state) {
        seq.assign(1, dk_llama2::bos_id);
        m.clear_cache();
        for (std::size_t i = 0; i < n; ++i) {
            if (!cached) m.clear_cache();
            const dk::sequence_request r{seq, 1, 0};
            m.logits(std::span(&r, 1), row);
            seq.push_back(dk::token_id(dk::kernels::argmax(std::span<const float>(row))));
        }
        benchmark::DoNotOptimize(seq.data());
    }
    state.SetItemsProcessed(state.iterations() * std::int64_t(n));  // generated tokens
}

void BM_llama2_decode_cached(benchmark::State& state) { run_decode(state, true); }
void BM_llama2_decode_uncached(benchmark::State& state) { run_decode(state, false); }

// One call over a whole sequence of state.range(0) tokens (last position's logits only).
void BM_llama2_prefill(benchmark::State& state) {
    auto& m = stories260k_shaped();
    std::vector<dk::token_id> seq(std::size_t(state.range(0)), 300);
    seq[0] = dk_llama2::bos_id;
    std::vector<float> row(m.vocab_size());
    for (auto _ : state) {
        m.clear_cache();
        const dk::sequence_request r{seq, 1, 0};
        m.logits(std::span(&r, 1), row);
        benchmark::DoNotOptimize(row.data());
    }
    state.SetItemsProcessed(state.iterations() * state.range(0));
}

// One call scoring P new positions after a warm 64-token cache. Every call recomputes exactly
// the P positions (their outputs are requested; the 64-token prefix is reused), as a speculative
// verification of P - 1 drafts does.
void BM_llama2_score(benchmark::State& state) {
    dk_llama2::model* m = model_arg(state);
    if (!m) return;
    const std::size_t P = std::size_t(state.range(1)), V = m->vocab_size();
    const auto seq = bench_tokens(warm_tokens + P, V, 5);
    std::vector<float> out(P * V);
    m->clear_cache();
    const dk::sequence_request warm{std::span(seq).first(warm_tokens), 1, 0};
    m->logits(std::span(&warm, 1), std::span(out).first(V));
    const dk::sequence_request r{seq, P, 0};
    m->logits(std::span(&r, 1), out);  // scratch sized before timing
    const auto f0 = m->counters().tokens_forwarded;
    for (auto _ : state) {
        m->logits(std::span(&r, 1), out);
        benchmark::DoNotOptimize(out.data());
    }
    if (m->counters().tokens_forwarded - f0 != std::uint64_t(state.iterations()) * P)
        state.SkipWithError("the backend did not compute exactly P positions per call");
    state.SetItemsProcessed(state.iterations() * std::int64_t(P));
}

// One early-exit draft call: the layer_logits read-out at layer n_layers - 1 (the demo's
// self-draft) of 1 new position on a warm 64-token cache of its own (shallow) slot.
void BM_llama2_draft_call(benchmark::State& state) {
    dk_llama2::model* m = model_arg(state);
    if (!m) return;
    const std::size_t V = m->vocab_size();
    const std::vector<int> layer = {int(m->num_layers()) - 1};
    const auto seq = bench_tokens(warm_tokens + 1, V, 5);
    std::vector<float> out(V);
    m->clear_cache();
    const dk::sequence_request warm{std::span(seq).first(warm_tokens), 1, 1};
    m->layer_logits(std::span(&warm, 1), layer, out);
    const dk::sequence_request r{seq, 1, 1};
    m->layer_logits(std::span(&r, 1), layer, out);
    const auto f0 = m->counters().tokens_forwarded;
    for (auto _ : state) {
        m->layer_logits(std::span(&r, 1), layer, out);
        benchmark::DoNotOptimize(out.data());
    }
    if (m->counters().tokens_forwarded - f0 != std::uint64_t(state.iterations()))
        state.SkipWithError("the backend did not compute exactly one position per call");
    state.SetItemsProcessed(state.iterations());
}

// 8 requests x 1 new position on their own warm caches: one call, or one call per request.
void BM_llama2_requests(benchmark::State& state) {
    dk_llama2::model* m = model_arg(state);
    if (!m) return;
    const bool batched = state.range(1) != 0;
    constexpr std::size_t R = 8;
    const std::size_t V = m->vocab_size();
    std::vector<std::vector<dk::token_id>> seqs;
    std::vector<dk::sequence_request> reqs;
    std::vector<float> out(R * V);
    m->clear_cache();
    for (std::size_t i = 0; i < R; ++i) {
        seqs.push_back(bench_tokens(warm_tokens + 1, V, 100 + i));
        const dk::sequence_request warm{std::span(seqs[i]).first(warm_tokens), 1, std::uint32_t(i)};
        m->logits(std::span(&warm, 1), std::span(out).first(V));
    }
    for (std::size_t i = 0; i < R; ++i) reqs.push_back({seqs[i], 1, std::uint32_t(i)});
    m->logits(reqs, out);
    const auto f0 = m->counters().tokens_forwarded;
    for (auto _ : state) {
        if (batched) {
            m->logits(reqs, out);
        } else {
            for (std::size_t i = 0; i < R; ++i)
                m->logits(std::span(&reqs[i], 1), std::span(out).subspan(i * V, V));
        }
        benchmark::DoNotOptimize(out.data());
    }
    if (m->counters().tokens_forwarded - f0 != std::uint64_t(state.iterations()) * R)
        state.SkipWithError("the backend did not compute exactly one position per request");
    state.SetItemsProcessed(state.iterations() * std::int64_t(R));
}

// Greedy decoding on stories260K with the demo's settings: plain, or speculative with a draft.
void BM_llama2_speculative(benchmark::State& state) {
    dk_llama2::model* m = stories260k();
    if (!m) {
        state.SkipWithError(("cannot load " + models_dir() + "/stories260K.bin").c_str());
        return;
    }
    auto tok = dk_llama2::tokenizer::load(models_dir() + "/tok512.bin", int(m->vocab_size()));
    if (!tok) {
        state.SkipWithError(tok.error().c_str());
        return;
    }
    const auto prompt = tok->encode("Once upon a time");
    const std::size_t max_new = 160;
    const std::vector<dk::token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};
    const int draft = int(state.range(0));
    dk::basic_processing greedy_proc{.temperature = 0.f};
    dk::speculative_params spp;
    spp.max_new_tokens = max_new;
    spp.eos_ids = stops;
    spp.rule = dk::verification::greedy;
    spp.draft_length = 4;
    spp.adaptive = true;
    dk::generate_params gp;
    gp.max_new_tokens = max_new;
    gp.eos_ids = stops;
    gp.sampling.temperature = 0.f;
    std::size_t tokens = 0, drafted = 0, accepted = 0, target_calls = 0;
    std::vector<dk::token_id> first;
    for (auto _ : state) {
        m->clear_cache();
        std::vector<dk::token_id> out;
        if (draft == 0) {
            out = dk::generate(*m, prompt, gp).tokens;
            target_calls += out.size();
        } else {
            dk::speculative_result res;
            if (draft == 1) {
                dk::ngram_proposer p{.min_n = 1, .max_n = 3};
                res = dk::speculative_decode(*m, p, prompt, spp, greedy_proc);
            } else {
                dk::early_exit_proposer<dk_llama2::model> p(*m, int(m->num_layers()) - 1,
                                                            greedy_proc);
                res = dk::speculative_decode(*m, p, prompt, spp, greedy_proc);
            }
            drafted += res.stats.drafted;
            accepted += res.stats.accepted;
            target_calls += res.stats.target_calls;
            out = std::move(res.tokens);
        }
        tokens += out.size();
        if (first.empty()) first = out;
        if (out != first) state.SkipWithError("greedy output changed between iterations");
    }
    state.SetItemsProcessed(std::int64_t(tokens));
    state.counters["acceptance"] = drafted ? double(accepted) / double(drafted) : 0.0;
    state.counters["tok_per_target_call"] =
        target_calls ? double(tokens) / double(target_calls) : 0.0;
    state.counters["new_tokens"] = double(first.size());
}

}  // namespace

BENCHMARK(BM_llama2_decode_cached)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_decode_uncached)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_prefill)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_score)
    ->ArgNames({"model", "positions"})
    ->ArgsProduct({{0, 1}, {1, 5}})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_draft_call)->ArgName("model")->DenseRange(0, 1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_requests)
    ->ArgNames({"model", "batched"})
    ->ArgsProduct({{0, 1}, {0, 1}})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_speculative)->ArgName("draft")->DenseRange(0, 2)->Unit(benchmark::kMillisecond);
