// Kernel benchmarks against their floors (bench_floors.cpp, same binary, same rows) and a naive
// std:: baseline for each; the masked kernels (token bitmasks, 50 % and 1 % allowed) beside the
// unmasked ones; the thresholded draw on the row family. See bench/RESULTS.md.
// The truncation kernels (top-p, typical, epsilon, eta, mirostat's cut, top-n-sigma, XTC, min-p)
// run on the row family (BM_trunc_<kernel>/<setting>/<shape>/V:<vocab>) beside the read and exp
// floors measured on the same rows (BM_trunc_floor_<read|exp>/<shape>/V:<vocab>), with counters:
// kept (the kept set's size on the benchmark row) and, at V = 128256 over 32 more rows of the
// shape, the share decided by each exactness tier after the float bound (tier_corrected: top-p
// only; tier_double, tier_reference).

#include "bench_common.hpp"

#include "bench_rows.hpp"

#include <decodekit/kernels/kernels.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <map>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace {

namespace dk = decodekit;

std::span<const float> row(benchmark::State& s) {
    return dk_bench::logits(std::size_t(s.range(0)));
}

// ---- argmax ----
void BM_argmax(benchmark::State& s) {
    auto x = row(s);
    for (auto _ : s) benchmark::DoNotOptimize(dk::kernels::argmax(x));
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_argmax);

void BM_argmax_std(benchmark::State& s) {
    auto x = row(s);
    for (auto _ : s) benchmark::DoNotOptimize(std::max_element(x.begin(), x.end()) - x.begin());
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_argmax_std);

// ---- logsumexp / softmax ----
void BM_logsumexp_std(benchmark::State& s) {
    auto x = row(s);
    for (auto _ : s) {
        const float m = *std::max_element(x.begin(), x.end());
        double z = 0;
        for (float v : x) z += std::exp(double(v) - m);
        benchmark::DoNotOptimize(m + std::log(z));
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_logsumexp_std);

void BM_logsumexp(benchmark::State& s) {
    auto x = row(s);
    for (auto _ : s) benchmark::DoNotOptimize(dk::kernels::logsumexp(x, 1.f));
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_logsumexp);

void BM_softmax(benchmark::State& s) {
    auto x = row(s);
    std::vector<float> out(x.size());
    for (auto _ : s) {
        benchmark::DoNotOptimize(dk::kernels::softmax(x, out, 0.8f));
        benchmark::ClobberMemory();
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_softmax);

void BM_softmax_std(benchmark::State& s) {
    auto x = row(s);
    std::vector<float> out(x.size());
    for (auto _ : s) {
        const float m = *std::max_element(x.begin(), x.end());
        double z = 0;
        for (std::size_t i = 0; i < x.size(); ++i) z += out[i] = std::exp((x[i] - m) / 0.8f);
        for (float& v : out) v = float(v / z);
        benchmark::ClobberMemory();
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_softmax_std);

// ---- top-k ----
template <std::size_t K>
void BM_top_k(benchmark::State& s) {
    auto x = row(s);
    dk::candidates c(x.size());
    for (auto _ : s)
        benchmark::DoNotOptimize(dk::kernels::top_k(x, K, dk::tie_policy::exactly_k, c));
    dk_bench::set_items(s);
}
BENCHMARK(BM_top_k<40>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_top_k<1024>)->Apply(dk_bench::at_vocab_sizes);

// The selection alone (the same set in id order, no sort): the cost that must be flat in k.
template <std::size_t K>
void BM_top_k_unordered(benchmark::State& s) {
    auto x = row(s);
    dk::candidates c(x.size());
    for (auto _ : s)
        benchmark::DoNotOptimize(dk::kernels::top_k_unordered(x, K, dk::tie_policy::exactly_k, c));
    dk_bench::set_items(s);
}
BENCHMARK(BM_top_k_unordered<40>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_top_k_unordered<1024>)->Apply(dk_bench::at_vocab_sizes);

template <std::size_t K>
void BM_top_k_std_partial_sort(benchmark::State& s) {
    auto x = row(s);
    std::vector<int> idx(x.size());
    for (auto _ : s) {
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + K, idx.end(),
                          [&](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
        benchmark::DoNotOptimize(idx.data());
    }
    dk_bench::set_items(s);
}
BENCHMARK(BM_top_k_std_partial_sort<40>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_top_k_std_partial_sort<1024>)->Apply(dk_bench::at_vocab_sizes);

template <std::size_t K>
void BM_top_k_std_nth_element(benchmark::State& s) {
    auto x = row(s);
    std::vector<int> idx(x.size());
    for (auto _ : s) {
        std::iota(idx.begin(), idx.end(), 0);
        auto cmp = [&](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
        std::nth_element(idx.begin(), idx.begin() + (K - 1), idx.end(), cmp);
        std::sort(idx.begin(), idx.begin() + K, cmp);
        benchmark::DoNotOptimize(idx.data());
    }
    dk_bench::set_items(s);
}
BENCHMARK(BM_top_k_std_nth_element<40>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_top_k_std_nth_element<1024>)->Apply(dk_bench::at_vocab_sizes);

// Baseline of the unordered selection: nth_element alone.
template <std::size_t K>
void BM_top_k_std_nth_element_only(benchmark::State& s) {
    auto x = row(s);
    std::vector<int> idx(x.size());
    for (auto _ : s) {
        std::iota(idx.begin(), idx.end(), 0);
        std::nth_element(idx.begin(), idx.begin() + (K - 1), idx.end(),
                         [&](int a, int b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
        benchmark::DoNotOptimize(idx.data());
    }
    dk_bench::set_items(s);
}
BENCHMARK(BM_top_k_std_nth_element_only<40>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_top_k_std_nth_element_only<1024>)->Apply(dk_bench::at_vocab_sizes);

// ---- min-p threshold filter ----
void BM_min_p_filter(benchmark::State& s) {
    auto x = row(s);
    dk::candidates c(x.size());
    for (auto _ : s) benchmark::DoNotOptimize(dk::kernels::filter_min_p(x, 0.05f, 1.f, c));
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_min_p_filter);

void BM_min_p_filter_std(benchmark::State& s) {
    auto x = row(s);
    std::vector<int> ids;
    ids.reserve(x.size());
    for (auto _ : s) {
        ids.clear();
        const float t = *std::max_element(x.begin(), x.end()) + std::log(0.05f);
        for (std::size_t i = 0; i < x.size(); ++i)
            if (x[i] >= t) ids.push_back(int(i));
        benchmark::DoNotOptimize(ids.data());
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_min_p_filter_std);

// ---- top-p ----
void BM_top_p(benchmark::State& s) {
    auto x = row(s);
    dk::candidates c(x.size());
    for (auto _ : s) benchmark::DoNotOptimize(dk::kernels::top_p(x, 0.95f, 1.f, 1, c));
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_top_p);

void BM_top_p_std_sort(benchmark::State& s) {
    auto x = row(s);
    std::vector<float> p(x.size());
    std::vector<int> idx(x.size());
    for (auto _ : s) {
        const float m = *std::max_element(x.begin(), x.end());
        double z = 0;
        for (std::size_t i = 0; i < x.size(); ++i) z += p[i] = std::exp(x[i] - m);
        std::iota(idx.begin(), idx.end(), 0);
        std::sort(idx.begin(), idx.end(),
                  [&](int a, int b) { return p[a] > p[b] || (p[a] == p[b] && a < b); });
        double before = 0;
        std::size_t n = 0;
        while (n < idx.size() && before < 0.95 * z) before += p[idx[n++]];
        benchmark::DoNotOptimize(n);
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_top_p_std_sort);

// ---- inverse-CDF draw over the whole row's (unnormalised) weights ----
void BM_draw_inverse_cdf(benchmark::State& s) {
    auto x = row(s);
    std::vector<float> w(x.size());
    dk::kernels::softmax(x, w, 1.f);
    double u = 0.1;
    for (auto _ : s) {
        u = u + 0.61803398874989485 < 1 ? u + 0.61803398874989485 : u - 0.38196601125010515;
        benchmark::DoNotOptimize(dk::kernels::draw_inverse_cdf(w, u));
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_draw_inverse_cdf);

void BM_draw_inverse_cdf_std(benchmark::State& s) {
    auto x = row(s);
    std::vector<float> w(x.size());
    dk::kernels::softmax(x, w, 1.f);
    std::vector<double> cdf(x.size());
    double u = 0.1;
    for (auto _ : s) {
        u = u + 0.61803398874989485 < 1 ? u + 0.61803398874989485 : u - 0.38196601125010515;
        std::partial_sum(w.begin(), w.end(), cdf.begin(), std::plus<double>());
        benchmark::DoNotOptimize(std::upper_bound(cdf.begin(), cdf.end(), u * cdf.back()) -
                                 cdf.begin());
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_draw_inverse_cdf_std);

// ---- temperature draw without a per-entry exponential (block-max envelope rejection) ----
void BM_draw_temperature(benchmark::State& s) {
    auto x = row(s);
    std::uint64_t step = 0;
    for (auto _ : s) {
        dk::rng_stream r = dk::make_stream({1, 2, step++});
        benchmark::DoNotOptimize(dk::kernels::draw_temperature(x, 0.8f, r));
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_draw_temperature);

void BM_draw_temperature_std(benchmark::State& s) {  // softmax weights + std::partial_sum draw
    auto x = row(s);
    std::vector<float> w(x.size());
    std::vector<double> cdf(x.size());
    std::uint64_t step = 0;
    for (auto _ : s) {
        dk::rng_stream r = dk::make_stream({1, 2, step++});
        const float m = *std::max_element(x.begin(), x.end());
        for (std::size_t i = 0; i < x.size(); ++i) w[i] = std::exp((x[i] - m) / 0.8f);
        std::partial_sum(w.begin(), w.end(), cdf.begin(), std::plus<double>());
        benchmark::DoNotOptimize(
            std::upper_bound(cdf.begin(), cdf.end(), r.uniform() * cdf.back()) - cdf.begin());
    }
    dk_bench::set_items(s);
}
DK_BENCH_VOCAB(BM_draw_temperature_std);

// ---- token bitmasks (kernels/mask.hpp) ----
// Masks over the shared row: 50 % of the tokens allowed at random, or ~1 % (a JSON grammar state
// allows few tokens); fixed seeds.
const std::vector<std::uint32_t>& mask_words(std::size_t v, int percent) {
    static std::map<std::pair<std::size_t, int>, std::vector<std::uint32_t>> masks;
    auto it = masks.find({v, percent});
    if (it == masks.end()) {
        std::uint64_t s = 77 + std::uint64_t(percent);
        std::vector<std::uint32_t> w(dk::kernels::bitmask_words(v), 0u);
        for (std::size_t i = 0; i < v; ++i)
            if (dk_bench::splitmix64(s) % 100 < std::uint64_t(percent)) w[i / 32] |= 1u << (i % 32);
        it = masks.emplace(std::make_pair(v, percent), std::move(w)).first;
    }
    return it->second;
}
dk::kernels::token_bitmask mask_of(benchmark::State& s, int percent) {
    const auto v = std::size_t(s.range(0));
    return {.words = mask_words(v, percent), .size = v};
}

// In-place apply on a private copy of the row (applying twice writes the same values, so every
// iteration does the same work).
template <int Percent>
void BM_mask_apply(benchmark::State& s) {
    auto x = row(s);
    std::vector<float> y(x.begin(), x.end());
    const auto m = mask_of(s, Percent);
    for (auto _ : s) {
        benchmark::DoNotOptimize(dk::kernels::apply_token_bitmask_inplace(y, m));
        benchmark::ClobberMemory();
    }
    dk_bench::set_items(s);
}
BENCHMARK(BM_mask_apply<50>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_mask_apply<1>)->Apply(dk_bench::at_vocab_sizes);

template <int Percent>
void BM_argmax_masked(benchmark::State& s) {
    auto x = row(s);
    const auto m = mask_of(s, Percent);
    for (auto _ : s) benchmark::DoNotOptimize(dk::kernels::argmax(x, m));
    dk_bench::set_items(s);
}
BENCHMARK(BM_argmax_masked<50>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_argmax_masked<1>)->Apply(dk_bench::at_vocab_sizes);

template <int Percent>
void BM_top_k40_masked(benchmark::State& s) {
    auto x = row(s);
    const auto m = mask_of(s, Percent);
    dk::candidates c(x.size());
    for (auto _ : s)
        benchmark::DoNotOptimize(dk::kernels::top_k(x, 40, dk::tie_policy::exactly_k, c, m));
    dk_bench::set_items(s);
}
BENCHMARK(BM_top_k40_masked<50>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_top_k40_masked<1>)->Apply(dk_bench::at_vocab_sizes);

template <int Percent>
void BM_min_p_filter_masked(benchmark::State& s) {
    auto x = row(s);
    const auto m = mask_of(s, Percent);
    dk::candidates c(x.size());
    for (auto _ : s) benchmark::DoNotOptimize(dk::kernels::filter_min_p(x, 0.05f, 1.f, c, m));
    dk_bench::set_items(s);
}
BENCHMARK(BM_min_p_filter_masked<50>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_min_p_filter_masked<1>)->Apply(dk_bench::at_vocab_sizes);

template <int Percent>
void BM_draw_temperature_masked(benchmark::State& s) {
    auto x = row(s);
    const auto m = mask_of(s, Percent);
    std::uint64_t step = 0;
    for (auto _ : s) {
        dk::rng_stream r = dk::make_stream({1, 2, step++});
        benchmark::DoNotOptimize(dk::kernels::draw_temperature(x, 0.8f, r, m));
    }
    dk_bench::set_items(s);
}
BENCHMARK(BM_draw_temperature_masked<50>)->Apply(dk_bench::at_vocab_sizes);
BENCHMARK(BM_draw_temperature_masked<1>)->Apply(dk_bench::at_vocab_sizes);

// ---- the thresholded draw (min-p 0.05, then temperature 1, no logprob) on the row family ----
// BM_draw/<setting>/<shape>/V:<vocab>: min_p05 is draw_temperature with min-p's threshold (one
// read pass, no exponential per entry); temperature is the same draw without the threshold;
// min_p05_filter_then_draw is what a sampler does without the thresholded draw (the min-p filter,
// then an exponential per survivor and an inverse CDF). Counter `proposals`: envelope proposals
// per draw.
enum class draw_kind { min_p05, temperature, filter_then_draw };

void run_draw(benchmark::State& s, draw_kind kind, dk_bench::shape sh, std::size_t v) {
    const auto& x = dk_bench::row(sh, v);
    const dk::kernels::logit_threshold thr{.from_max = dk::kernels::min_p_offset(0.05f)};
    dk::candidates c(v);
    std::vector<float> w(v);
    std::uint64_t step = 0, words = 0;
    for (auto _ : s) {
        dk::rng_stream r = dk::make_stream({1, 3, step++});
        if (kind == draw_kind::min_p05) {
            benchmark::DoNotOptimize(dk::kernels::draw_temperature(x, 1.f, r, thr));
        } else if (kind == draw_kind::temperature) {
            benchmark::DoNotOptimize(dk::kernels::draw_temperature(x, 1.f, r));
        } else {
            dk::kernels::filter_min_p(x, 0.05f, 1.f, c);
            const float m = dk::kernels::max(c.logits());
            for (std::size_t i = 0; i < c.size(); ++i) w[i] = std::exp(c.logits()[i] - m);
            benchmark::DoNotOptimize(dk::kernels::draw_inverse_cdf(
                std::span<const float>(w.data(), c.size()), r.uniform()));
        }
        words += r.words_used();
    }
    if (kind != draw_kind::filter_then_draw)
        s.counters["proposals"] = double(words) / 5.0 / double(std::max<std::uint64_t>(1, step));
    dk_bench::set_items(s, v);
}

[[maybe_unused]] const bool registered_draws = [] {
    const std::pair<const char*, draw_kind> kinds[] = {
        {"BM_draw/min_p05", draw_kind::min_p05},
        {"BM_draw/temperature", draw_kind::temperature},
        {"BM_draw/min_p05_filter_then_draw", draw_kind::filter_then_draw}};
    for (const std::int64_t v : dk_bench::vocab_sizes)
        for (const dk_bench::shape sh : dk_bench::shapes)
            for (const auto& [name, kind] : kinds)
                benchmark::RegisterBenchmark(
                    dk_bench::family_name(name, sh, std::size_t(v)).c_str(), run_draw, kind, sh,
                    std::size_t(v));
    return true;
}();

// ---- the truncation kernels on the row family ----

const std::vector<float>& family_row(dk_bench::shape sh, std::size_t v) {
    static std::map<std::pair<int, std::size_t>, std::vector<float>> rows;
    auto it = rows.find({int(sh), v});
    if (it == rows.end()) it = rows.emplace(std::pair{int(sh), v}, dk_bench::make_row(sh, v)).first;
    return it->second;
}

// The floors of bench_floors.cpp, on the family's rows.
float trunc_floor_read(std::span<const float> x) {
    using A = dk::simd::default_arch;
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    B a0(0.f), a1(0.f), a2(0.f), a3(0.f);
    std::size_t i = 0;
    for (; i + 4 * L <= x.size(); i += 4 * L) {
        a0 += B::load_unaligned(x.data() + i);
        a1 += B::load_unaligned(x.data() + i + L);
        a2 += B::load_unaligned(x.data() + i + 2 * L);
        a3 += B::load_unaligned(x.data() + i + 3 * L);
    }
    for (; i + L <= x.size(); i += L) a0 += B::load_unaligned(x.data() + i);
    float s = dk::simd::reduce_add<A>((a0 + a1) + (a2 + a3));
    for (; i < x.size(); ++i) s += x[i];
    return s;
}
float trunc_floor_exp(std::span<const float> x) {
    using A = dk::simd::default_arch;
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    B m0(-1e30f), m1(-1e30f);
    std::size_t i = 0;
    for (; i + 2 * L <= x.size(); i += 2 * L) {
        m0 = dk::simd::max<A>(m0, B::load_unaligned(x.data() + i));
        m1 = dk::simd::max<A>(m1, B::load_unaligned(x.data() + i + L));
    }
    for (; i + L <= x.size(); i += L) m0 = dk::simd::max<A>(m0, B::load_unaligned(x.data() + i));
    float m = dk::simd::reduce_max<A>(dk::simd::max<A>(m0, m1));
    for (; i < x.size(); ++i) m = x[i] > m ? x[i] : m;
    const B mb(m);
    B s0(0.f);
    i = 0;
    for (; i + L <= x.size(); i += L)
        s0 += dk::simd::exp_nonpositive<A>(B::load_unaligned(x.data() + i) - mb);
    float s = dk::simd::reduce_add<A>(s0);
    for (; i < x.size(); ++i) s += std::exp(x[i] - m);
    return s;
}

/// A truncation kernel run: (row, candidates, weights) -> result.
using trunc_fn = std::function<dk::kernels::truncation_result(std::span<const float>,
                                                              dk::candidates&, std::span<float>)>;

void trunc_loop(benchmark::State& state, trunc_fn f, dk_bench::shape sh, std::size_t v) {
    const auto& x = family_row(sh, v);
    dk::candidates c(v);
    std::vector<float> w(v);
    dk::kernels::truncation_result r;
    for (auto _ : state) {
        r = f(x, c, w);
        benchmark::DoNotOptimize(r);
        benchmark::ClobberMemory();
    }
    state.counters["kept"] = double(r.kept);
    if (v == 128256) {  // the tiers over 32 more rows of the shape (generated once)
        static std::map<int, std::vector<std::vector<float>>> more;
        auto& rows = more[int(sh)];
        if (rows.empty())
            for (std::uint64_t salt = 1; salt <= 32; ++salt)
                rows.push_back(dk_bench::make_row(sh, v, salt));
        double t0 = 0, t1 = 0, t2 = 0;
        for (const auto& y : rows) {
            const auto ry = f(y, c, w);
            t0 += ry.tier == dk::kernels::exactness_tier::corrected;
            t1 += ry.tier == dk::kernels::exactness_tier::double_pass;
            t2 += ry.tier == dk::kernels::exactness_tier::reference;
        }
        state.counters["tier_corrected"] = t0 / double(rows.size());
        state.counters["tier_double"] = t1 / double(rows.size());
        state.counters["tier_reference"] = t2 / double(rows.size());
    }
    state.SetItemsProcessed(std::int64_t(state.iterations()) * std::int64_t(v));
}

[[maybe_unused]] const bool trunc_registered = [] {
    namespace kn = dk::kernels;
    using A = dk::simd::default_arch;
    const std::pair<std::string, trunc_fn> kernels[] = {
        {"top_p_cut/p0.95",
         [](auto x, auto& c, auto w) { return kn::top_p_cut<A>(x, 0.95f, 1.f, 1, c, w); }},
        {"top_p_cut/hf_t1.5_p0.99",
         [](auto x, auto& c, auto w) { return kn::top_p_cut<A>(x, 0.99f, 1.5f, 1, c, w); }},
        {"top_p_unordered/p0.95",
         [](auto x, auto& c, auto w) { return kn::top_p_unordered<A>(x, 0.95f, 1.f, 1, c, w); }},
        {"top_p_unordered/hf_t1.5_p0.99",
         [](auto x, auto& c, auto w) { return kn::top_p_unordered<A>(x, 0.99f, 1.5f, 1, c, w); }},
        {"typical_cut/0.9",
         [](auto x, auto& c, auto w) {
             return kn::typical_cut<A>(x, 0.9f, 1.f, 1, dk::typical_stop::reach_with_ties, c, w);
         }},
        {"typical_unordered/0.9",
         [](auto x, auto& c, auto w) {
             return kn::typical_unordered<A>(x, 0.9f, 1.f, 1, dk::typical_stop::reach_with_ties, c,
                                             w);
         }},
        {"epsilon/3e-4",
         [](auto x, auto& c, auto w) { return kn::epsilon_unordered<A>(x, 3e-4f, 1.f, 1, c, w); }},
        {"eta/3e-4",
         [](auto x, auto& c, auto w) { return kn::eta_unordered<A>(x, 3e-4f, 1.f, 1, c, w); }},
        {"mirostat_cut/mu10",
         [](auto x, auto& c, auto w) { return kn::mirostat_cut_unordered<A>(x, 10.f, 1.f, c, w); }},
        {"top_n_sigma/1",
         [](auto x, auto& c, auto w) {
             return kn::top_n_sigma_unordered<A>(x, 1.f, 1.f, 1, c, w);
         }},
        {"xtc/0.1",
         [](auto x, auto& c, auto w) { return kn::xtc_remove<A>(x, 0.1f, 1.f, 1, c, w); }},
        {"min_p_filter/0.05",
         [](auto x, auto& c, auto) {
             kn::truncation_result r;
             r.kept = kn::filter_min_p<A>(x, 0.05f, 1.f, c);
             return r;
         }},
        {"top_p_sorted_before/p0.95",  // the kernel these replace (sorted, exact fallback)
         [](auto x, auto& c, auto) {
             kn::truncation_result r;
             r.kept = kn::top_p<A>(x, 0.95f, 1.f, 1, c);
             return r;
         }},
    };
    for (const std::size_t v : {std::size_t(128256), std::size_t(256000)})
        for (const auto sh : dk_bench::shapes) {
            const std::string tail = std::string("/") + std::string(dk_bench::shape_name(sh)) +
                                     "/V:" + std::to_string(v);
            benchmark::RegisterBenchmark(("BM_trunc_floor_read" + tail).c_str(),
                                         [sh, v](benchmark::State& st) {
                                             const auto& x = family_row(sh, v);
                                             for (auto _ : st)
                                                 benchmark::DoNotOptimize(trunc_floor_read(x));
                                         });
            benchmark::RegisterBenchmark(("BM_trunc_floor_exp" + tail).c_str(),
                                         [sh, v](benchmark::State& st) {
                                             const auto& x = family_row(sh, v);
                                             for (auto _ : st)
                                                 benchmark::DoNotOptimize(trunc_floor_exp(x));
                                         });
            for (const auto& [name, f] : kernels) {
                if (v != 128256 && name.rfind("top_p_sorted_before", 0) == 0) continue;
                benchmark::RegisterBenchmark(("BM_trunc_" + name + tail).c_str(), trunc_loop, f, sh,
                                             v);
            }
            // the draw over a top-p cut (after top_p_cut, which it does not include)
            benchmark::RegisterBenchmark(
                ("BM_trunc_draw_cut/p0.95" + tail).c_str(), [sh, v](benchmark::State& st) {
                    const auto& x = family_row(sh, v);
                    dk::candidates c(v);
                    std::vector<float> w(v);
                    const auto r = kn::top_p_cut<A>(x, 0.95f, 1.f, 1, c, w);
                    double u = 0.1;
                    for (auto _ : st) {
                        u = u + 0.618 < 1 ? u + 0.618 : u - 0.382;
                        benchmark::DoNotOptimize(kn::draw_cut<A>(x, w, r.cut, u));
                    }
                });
        }
    return true;
}();

}  // namespace
