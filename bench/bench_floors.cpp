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

// Both floors on every row of the family at every vocabulary size: ratios are taken against the
// floor of the same row (BM_floor_<read|exp>/<shape>/V:<vocab>).
template <float (*F)(std::span<const float>)>
void floor_loop(benchmark::State& state, dk_bench::shape sh, std::size_t v) {
    const auto& x = dk_bench::row(sh, v);
    for (auto _ : state) benchmark::DoNotOptimize(F(x));
    dk_bench::set_items(state, v);
}

[[maybe_unused]] const bool registered = [] {
    for (const std::int64_t v : dk_bench::vocab_sizes)
        for (const dk_bench::shape sh : dk_bench::shapes) {
            benchmark::RegisterBenchmark(
                dk_bench::family_name("BM_floor_read", sh, std::size_t(v)).c_str(),
                floor_loop<floor_read>, sh, std::size_t(v));
            benchmark::RegisterBenchmark(
                dk_bench::family_name("BM_floor_exp", sh, std::size_t(v)).c_str(),
                floor_loop<floor_exp>, sh, std::size_t(v));
        }
    return true;
}();

}  // namespace
