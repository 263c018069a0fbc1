// Whole sampler::sample() calls for every setting of issue 12 on every row of the family
// (bench_rows.hpp), judged against the floors of the same row in the same run
// (bench_floors.cpp). Names: BM_sample/<setting>/<shape>/V:<vocab>.
//
// Every setting runs on the four shapes at V = 128256 (the bars); the settings marked
// `all_vocabs` also run on the peaked and flat rows at the other vocabulary sizes (cost linear in
// V). Settings marked `hf15` are also run as "<setting>_hf15": Hugging Face order at temperature
// 1.5 (truncation on the tempered, flatter distribution).
//
// One sampler per benchmark, warmed by one untimed call (the steady per-token cost; the cost of
// a new sampler per request is bench_request.cpp's). Every timed call starts from the sampler's
// initial state (restore()): mirostat's mu would otherwise drift with the draws (on the peaked
// row it grows until the whole row is kept), and the time per call with it. The counter `kept` is
// the size of the final candidate set (distribution_unordered(), outside the timing). A setting
// whose call does not return status ok is reported as an error, not timed.
// At V = 128256, the counters `tier_corrected`, `tier_double` and `tier_reference` are the share
// of the selection steps' runs (sampling_workspace::tiers) decided by top-p's corrected read pass
// or typical's compensated pass, by a double-precision pass and by the reference's own arithmetic
// (the exactness fallbacks), over one call on each of 32 more rows of the shape (salts 1..32),
// outside the timing.
//
// Settings with a mask percentage run under a token bitmask (sample_context::mask) allowing that
// percentage of the tokens at random (fixed seed): "<setting>_mask<percent>" (issue 14's bar:
// the llama.cpp chain with a mask against the chain without).
//
// distribution() and distribution_unordered() with top-p 0.95 on every shape are reported
// separately (BM_distribution[_unordered]/top_p95/<shape>/V:128256): distribution() sorts what
// it returns, so on a flat row its cost is O(n log n) in the nucleus by contract.

#include "bench_common.hpp"

#include <decodekit/sampling/sampling.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace {

using namespace decodekit;

struct setting {
    std::string name;
    sampling_params params;
    bool hf15 = false;        ///< also "<name>_hf15": order hf, temperature 1.5
    bool all_vocabs = false;  ///< also at every vocabulary size (peaked and flat rows)
    int mask_percent = 0;     ///< > 0: under a random token bitmask allowing this percentage
};

/// A fixed random mask over v tokens allowing `percent` % of them.
std::vector<std::uint32_t> mask_words(std::size_t v, int percent) {
    std::uint64_t s = 99 + std::uint64_t(percent);
    std::vector<std::uint32_t> w(kernels::bitmask_words(v), 0u);
    for (std::size_t i = 0; i < v; ++i)
        if (dk_bench::splitmix64(s) % 100 < std::uint64_t(percent)) w[i / 32] |= 1u << (i % 32);
    return w;
}

sampling_params no_chosen_logprob(sampling_params p) {
    p.logprobs.chosen = false;
    return p;
}

std::vector<setting> settings() {
    const sampling_params chain{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f};
    return {
        {.name = "greedy", .params = {.temperature = 0.f}, .all_vocabs = true},
        {.name = "temperature", .params = {.temperature = 0.8f}, .all_vocabs = true},
        {.name = "temperature_nolp", .params = no_chosen_logprob({.temperature = 0.8f})},
        {.name = "top_k40", .params = {.top_k = 40}, .all_vocabs = true},
        {.name = "llama_chain", .params = chain, .all_vocabs = true},
        {.name = "top_p95", .params = {.top_p = 0.95f}, .hf15 = true, .all_vocabs = true},
        {.name = "hf_t15_top_p99",
         .params = {.temperature = 1.5f, .top_p = 0.99f, .order = sampling_order::hf},
         .all_vocabs = true},
        {.name = "min_p05", .params = {.min_p = 0.05f}, .hf15 = true, .all_vocabs = true},
        {.name = "min_p05_nolp", .params = no_chosen_logprob({.min_p = 0.05f}), .hf15 = true},
        {.name = "typical90", .params = {.typical_p = 0.9f}, .hf15 = true, .all_vocabs = true},
        {.name = "epsilon3e-4", .params = {.epsilon = 3e-4f}, .hf15 = true},
        {.name = "eta3e-4", .params = {.eta = 3e-4f}, .hf15 = true},
        {.name = "top_n_sigma1", .params = {.top_n_sigma = 1.f}, .hf15 = true},
        {.name = "mirostat2", .params = {.mirostat = true}, .hf15 = true},
        {.name = "xtc", .params = {.xtc_probability = 1.f, .xtc_threshold = 0.1f}, .hf15 = true},
        {.name = "greedy_mask50", .params = {.temperature = 0.f}, .mask_percent = 50},
        {.name = "temperature_mask50", .params = {.temperature = 0.8f}, .mask_percent = 50},
        {.name = "temperature_nolp_mask50",
         .params = no_chosen_logprob({.temperature = 0.8f}),
         .mask_percent = 50},
        {.name = "top_k40_mask50", .params = {.top_k = 40}, .mask_percent = 50},
        {.name = "llama_chain_mask50", .params = chain, .mask_percent = 50},
        {.name = "llama_chain_mask1", .params = chain, .mask_percent = 1},
        {.name = "min_p05_mask50", .params = {.min_p = 0.05f}, .mask_percent = 50},
        {.name = "min_p05_nolp_mask50",
         .params = no_chosen_logprob({.min_p = 0.05f}),
         .mask_percent = 50},
        {.name = "typical90_mask50", .params = {.typical_p = 0.9f}, .mask_percent = 50},
    };
}

sampling_params hf15(sampling_params p) {
    p.order = sampling_order::hf;
    p.temperature = 1.5f;
    return p;
}

void run_sample(benchmark::State& state, const sampling_params& p, dk_bench::shape sh,
                std::size_t v, int mask_percent) {
    const auto& x = dk_bench::row(sh, v);
    const std::vector<std::uint32_t> words =
        mask_percent > 0 ? mask_words(v, mask_percent) : std::vector<std::uint32_t>{};
    sample_context ctx{.sequence = 1};
    if (mask_percent > 0) ctx.mask = {.words = words, .size = v};
    sampler s(p, v);
    const sampler_state initial = s.state();
    if (!s.sample(x, ctx).ok()) {
        state.SkipWithError("sample() did not return status ok");
        return;
    }
    for (auto _ : state) {
        s.restore(initial);
        ++ctx.step;
        benchmark::DoNotOptimize(s.sample(x, ctx));
    }
    s.restore(initial);
    dk_bench::set_items(state, v);
    ctx.step = 0;
    state.counters["kept"] = double(s.distribution_unordered(x, ctx).size());
    if (v == dk_bench::bar_vocab) {  // the fallback rate over 32 more rows of the shape
        static std::map<int, std::vector<std::vector<float>>> more;
        auto& rows = more[int(sh)];
        if (rows.empty())
            for (std::uint64_t salt = 1; salt <= 32; ++salt)
                rows.push_back(dk_bench::make_row(sh, v, salt));
        sampling_workspace& ws = sampling_workspace::this_thread();
        ws.tiers = {};
        for (const auto& y : rows) {
            s.restore(initial);
            benchmark::DoNotOptimize(s.sample(y, 1, 0));
        }
        s.restore(initial);
        const double runs = ws.tiers.runs > 0 ? double(ws.tiers.runs) : 1.0;
        state.counters["tier_corrected"] = double(ws.tiers.corrected) / runs;
        state.counters["tier_double"] = double(ws.tiers.double_pass) / runs;
        state.counters["tier_reference"] = double(ws.tiers.reference) / runs;
    }
}

enum class dist_kind { sorted, unordered };

void run_distribution(benchmark::State& state, const sampling_params& p, dist_kind kind,
                      dk_bench::shape sh, std::size_t v) {
    const auto& x = dk_bench::row(sh, v);
    sampler s(p, v);
    const sample_context ctx{.sequence = 1};
    const std::size_t kept = s.distribution_unordered(x, ctx).size();
    if (kept == 0) {
        state.SkipWithError("distribution_unordered() is empty");
        return;
    }
    for (auto _ : state) {
        const decodekit::distribution d =
            kind == dist_kind::sorted ? s.distribution(x, ctx) : s.distribution_unordered(x, ctx);
        benchmark::DoNotOptimize(d.probs.data());
    }
    dk_bench::set_items(state, v);
    state.counters["kept"] = double(kept);
}

void add(const std::string& name, const sampling_params& p, dk_bench::shape sh, std::size_t v,
         int mask_percent = 0) {
    benchmark::RegisterBenchmark(dk_bench::family_name("BM_sample/" + name, sh, v).c_str(),
                                 run_sample, p, sh, v, mask_percent);
}

[[maybe_unused]] const bool registered = [] {
    const auto all = settings();
    for (const std::int64_t vv : dk_bench::vocab_sizes) {
        const auto v = std::size_t(vv);
        for (const setting& st : all) {
            for (const dk_bench::shape sh : dk_bench::shapes) {
                const bool here = v == dk_bench::bar_vocab ||
                                  (st.all_vocabs &&
                                   (sh == dk_bench::shape::peaked || sh == dk_bench::shape::flat));
                if (!here) continue;
                add(st.name, st.params, sh, v, st.mask_percent);
                if (st.hf15 && v == dk_bench::bar_vocab)
                    add(st.name + "_hf15", hf15(st.params), sh, v);
            }
        }
    }
    const sampling_params top_p95{.top_p = 0.95f};
    for (const dk_bench::shape sh : dk_bench::shapes) {
        const std::size_t v = dk_bench::bar_vocab;
        benchmark::RegisterBenchmark(
            dk_bench::family_name("BM_distribution/top_p95", sh, v).c_str(), run_distribution,
            top_p95, dist_kind::sorted, sh, v);
        benchmark::RegisterBenchmark(
            dk_bench::family_name("BM_distribution_unordered/top_p95", sh, v).c_str(),
            run_distribution, top_p95, dist_kind::unordered, sh, v);
    }
    return true;
}();

}  // namespace
