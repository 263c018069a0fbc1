// The reference backend (examples/llama2) on a random-weight model with stories260K's shape
// (dim 64, hidden 172, 5 layers, 8 heads, 4 KV heads, vocab 512, context 512): the cost of a
// decode step with the KV cache, without it (the whole sequence recomputed), and of a prefill.
// Random weights cost exactly what the real ones do, and need no model file.
#include "../examples/llama2/llama2.hpp"

#include <benchmark/benchmark.h>

#include <vector>

namespace {

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

// Greedy decoding of state.range(0) tokens from BOS; cached or recomputing everything per step.
void run_decode(benchmark::State& state, bool cached) {
    auto& m = stories260k_shaped();
    const std::size_t n = std::size_t(state.range(0));
    std::vector<float> row(m.vocab_size());
    std::vector<decodekit::token_id> seq;
    for (auto _ : state) {
        seq.assign(1, dk_llama2::bos_id);
        m.clear_cache();
        for (std::size_t i = 0; i < n; ++i) {
            if (!cached) m.clear_cache();
            const decodekit::sequence_request r{seq, 1, 0};
            m.logits(std::span(&r, 1), row);
            seq.push_back(
                decodekit::token_id(decodekit::kernels::argmax(std::span<const float>(row))));
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
    std::vector<decodekit::token_id> seq(std::size_t(state.range(0)), 300);
    seq[0] = dk_llama2::bos_id;
    std::vector<float> row(m.vocab_size());
    for (auto _ : state) {
        m.clear_cache();
        const decodekit::sequence_request r{seq, 1, 0};
        m.logits(std::span(&r, 1), row);
        benchmark::DoNotOptimize(row.data());
    }
    state.SetItemsProcessed(state.iterations() * state.range(0));
}

}  // namespace

BENCHMARK(BM_llama2_decode_cached)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_decode_uncached)->Arg(64)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_llama2_prefill)->Arg(128)->Arg(512)->Unit(benchmark::kMillisecond);
