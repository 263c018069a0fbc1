// The two floors every kernel and sampler is judged against, measured in the same binary and on
// the same rows as everything else (see bench/RESULTS.md):
//   BM_floor_read: one SIMD sum over the row (4 independent accumulators), no other work.
//   BM_floor_exp:  a max pass plus one xsimd::exp-and-sum pass, written plainly.

#include "bench_common.hpp"

#include <decodekit/simd/xsimd_compat.hpp>

#include <span>

namespace {

namespace simd = decodekit::simd;
using A = simd::default_arch;
using B = simd::batch<A>;
constexpr std::size_t L = simd::lanes<A>;

float floor_read(std::span<const float> x) {
    B a0(0.f), a1(0.f), a2(0.f), a3(0.f);
    std::size_t i = 0;
    for (; i + 4 * L <= x.size(); i += 4 * L) {
        a0 += B::load_unaligned(x.data() + i);
        a1 += B::load_unaligned(x.data() + i + L);
        a2 += B::load_unaligned(x.data() + i + 2 * L);
        a3 += B::load_unaligned(x.data() + i + 3 * L);
    }
    for (; i + L <= x.size(); i += L) a0 += B::load_unaligned(x.data() + i);
    float s = simd::reduce_add<A>((a0 + a1) + (a2 + a3));
    for (; i < x.size(); ++i) s += x[i];
    return s;
}

float floor_exp(std::span<const float> x) {
    B m0(-1e30f), m1(-1e30f);
    std::size_t i = 0;
    for (; i + 2 * L <= x.size(); i += 2 * L) {
        m0 = xsimd::max(m0, B::load_unaligned(x.data() + i));
        m1 = xsimd::max(m1, B::load_unaligned(x.data() + i + L));
    }
    for (; i + L <= x.size(); i += L) m0 = xsimd::max(m0, B::load_unaligned(x.data() + i));
    float m = simd::reduce_max<A>(xsimd::max(m0, m1));
    for (; i < x.size(); ++i) m = x[i] > m ? x[i] : m;
    const B mb(m);
    B s0(0.f);
    i = 0;
    for (; i + L <= x.size(); i += L) s0 += xsimd::exp(B::load_unaligned(x.data() + i) - mb);
    float s = simd::reduce_add<A>(s0);
    for (; i < x.size(); ++i) s += std::exp(x[i] - m);
    return s;
}

void BM_floor_read(benchmark::State& state) {
    const auto& x = dk_bench::logits(std::size_t(state.range(0)));
    for (auto _ : state) benchmark::DoNotOptimize(floor_read(x));
    dk_bench::set_items(state);
}
DK_BENCH_VOCAB(BM_floor_read);

void BM_floor_exp(benchmark::State& state) {
    const auto& x = dk_bench::logits(std::size_t(state.range(0)));
    for (auto _ : state) benchmark::DoNotOptimize(floor_exp(x));
    dk_bench::set_items(state);
}
DK_BENCH_VOCAB(BM_floor_exp);

}  // namespace
