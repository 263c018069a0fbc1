// SIMD reductions (max, argmax, sum, exp_sum, logsumexp, softmax, log_softmax, entropy) against
// kernels/reference.hpp, for every xsimd architecture this build enables, at lengths around each
// lane count and at the four vocabulary sizes, plus special values.
#include "dk_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_reduce {

namespace {

namespace dk = decodekit;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

using dk_rows::each_arch;
using dk_rows::lengths;
using dk_rows::make_row;
using dk_rows::mix;
using dk_rows::unit;

bool same_float(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

bool close(double a, double r, double rel, double abs = 0) {
    if (std::isinf(r) || std::isnan(r)) return a == r || (std::isnan(a) && std::isnan(r));
    return std::fabs(a - r) <= rel * std::fabs(r) + abs;
}

}  // namespace

TEST_CASE("max, argmax, sum equal the reference on every architecture") {
    for (int kind = 0; kind <= 6; ++kind)
        for (std::size_t n : lengths) {
            if (n > 4097 && kind >= 4) continue;
            const auto x = make_row(n, kind, 1);
            const float rmax = dk::reference::max(x);
            const std::size_t rarg = dk::reference::argmax(x);
            const double rsum = dk::reference::sum(x);
            double abs_sum = 0;
            for (float v : x) abs_sum += std::isfinite(v) ? std::fabs(double(v)) : 0.0;
            each_arch([&](auto arch, const std::string& name) {
                using A = decltype(arch);
                INFO("arch " << name << " n " << n << " kind " << kind);
                CHECK(same_float(dk::kernels::max<A>(x), rmax));
                CHECK(dk::kernels::argmax<A>(x) == rarg);
                if (kind != 2 && kind != 3) {
                    CHECK(close(dk::kernels::sum<A>(x), rsum, 0, 1e-6 * abs_sum + 1e-300));
                }
            });
        }
}

TEST_CASE("max_with_block_maxima: the max, and each full block's per-lane maxima") {
    // The fused pass top-p's bounds use: the same max as kernels::max, and per block of 8 vectors
    // the maximum of each lane (NaN skipped, -inf when a lane holds no valid entry), so a compare
    // on the block maxima finds every block holding an entry >= t. Entries after the last full
    // block are in the max only (a row whose max sits there is among the lengths and kinds).
    for (int kind = 0; kind <= 6; ++kind)
        for (std::size_t n : lengths) {
            auto x = make_row(n, kind, 3);
            if (n > 0 && kind == 0) x[n - 1] = 1e6f;  // the max in the tail or the last block
            const float rmax = dk::reference::max(x);
            each_arch([&](auto arch, const std::string& name) {
                using A = decltype(arch);
                constexpr std::size_t L = dk::simd::lanes<A>, K = dk::kernels::detail::max_block<A>;
                INFO("arch " << name << " n " << n << " kind " << kind);
                std::vector<float> bm(n / K * L + 1, 7.f);
                CHECK(
                    same_float(dk::kernels::detail::max_with_block_maxima<A>(x, bm.data()), rmax));
                CHECK(bm.back() == 7.f);  // nothing written past n / K blocks
                bool ok = true;
                for (std::size_t b = 0; b < n / K; ++b)
                    for (std::size_t l = 0; l < L; ++l) {
                        float want = -inf;
                        for (std::size_t v = 0; v < 8; ++v) {
                            const float e = x[b * K + v * L + l];
                            if (e > want) want = e;
                        }
                        ok = ok && bm[b * L + l] == want;
                    }
                CHECK(ok);
            });
        }
}

TEST_CASE("argmax: ties resolve to the lowest index, NaN never wins, npos for no entry") {
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        for (std::size_t n : {1u, 7u, 16u, 17u, 1000u, 4097u}) {
            std::vector<float> x(n, 0.f);
            x[n - 1] = 3.f;
            if (n > 2) x[n / 2] = 3.f;
            CHECK(dk::kernels::argmax<A>(x) == (n > 2 ? n / 2 : n - 1));
            std::vector<float> nan_row(n, qnan);
            CHECK(dk::kernels::argmax<A>(nan_row) == dk::npos);
            CHECK(std::isinf(dk::kernels::max<A>(nan_row)));
            std::vector<float> ninf(n, -inf);
            ninf[0] = qnan;
            CHECK(dk::kernels::argmax<A>(ninf) == (n > 1 ? 1u : dk::npos));
            std::vector<float> pinf(n, 1.f);
            if (n > 1) pinf[0] = qnan;
            pinf[n - 1] = inf;
            CHECK(dk::kernels::argmax<A>(pinf) == n - 1);
            CHECK(dk::kernels::max<A>(pinf) == inf);
        }
        CHECK(dk::kernels::argmax<A>(std::span<const float>{}) == dk::npos);
        CHECK(dk::kernels::max<A>(std::span<const float>{}) == -inf);
        CHECK(dk::kernels::sum<A>(std::span<const float>{}) == 0.0);
    });
}

TEST_CASE("exp_sum, logsumexp, softmax, log_softmax, entropy equal the reference") {
    for (int kind = 0; kind <= 6; ++kind)
        for (std::size_t n : lengths) {
            if (n > 1025 && n != 128256 && n != 256000 && n != 4097 && kind != 0) continue;
            const auto x = make_row(n, kind, 2);
            for (float t : {1.f, 0.7f, 2.f, 1e-3f}) {
                if (n > 4097 && t != 1.f && t != 0.7f) continue;
                const auto rst = dk::reference::exp_sum(x, t);
                const double rlse = dk::reference::logsumexp(x, t);
                const double rent = dk::reference::entropy(x, t);
                std::vector<float> rp(n), rl(n), p(n), l(n);
                dk::reference::softmax(x, rp, t);
                dk::reference::log_softmax(x, rl, t);
                each_arch([&](auto arch, const std::string& name) {
                    using A = decltype(arch);
                    INFO("arch " << name << " n " << n << " kind " << kind << " T " << t);
                    const auto st = dk::kernels::exp_sum<A>(x, t);
                    CHECK(same_float(st.max, rst.max));
                    CHECK(close(st.sum, rst.sum, 1e-6));
                    CHECK(close(dk::kernels::logsumexp<A>(x, t), rlse, 1e-6, 1e-6));
                    CHECK(close(dk::kernels::entropy<A>(x, t), rent, 1e-6, 1e-6));
                    dk::kernels::softmax<A>(x, p, t);
                    dk::kernels::log_softmax<A>(x, l, t);
                    std::size_t bad_p = 0, bad_l = 0;
                    double total = 0;
                    for (std::size_t i = 0; i < n; ++i) {
                        total += p[i];
                        if (!close(p[i], rp[i], 1e-5, 1e-30)) ++bad_p;
                        if (!close(l[i], rl[i], 1e-5, 1e-5)) ++bad_l;
                    }
                    CHECK(bad_p == 0);
                    CHECK(bad_l == 0);
                    CHECK(std::fabs(total - 1.0) <= 1e-5);
                });
            }
        }
}

namespace {

/// detail::exp_pass's sum computed one exponential at a time (simd::exp_nonpositive per vector),
/// in the pass's order: blocks of 1024 entries, groups of four vectors to four float
/// accumulators, a block's last vectors to the first, the -inf padded tail entry by entry; the
/// exponentials stored to out.
template <class A>
double exp_pass_one_at_a_time(const std::vector<float>& x, float m, float inv_t, float* out) {
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const std::size_t n = x.size(), nfull = n / L * L;
    const B mb(m), tb(inv_t);
    auto one = [&](std::size_t i) {
        const B e = dk::simd::exp_nonpositive<A>((B::load_unaligned(x.data() + i) - mb) * tb);
        e.store_unaligned(out + i);
        return e;
    };
    double total = 0;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 1024);
        B s[4] = {B(0.f), B(0.f), B(0.f), B(0.f)};
        for (; i + 4 * L <= end; i += 4 * L)
            for (std::size_t j = 0; j < 4; ++j) s[j] += one(i + j * L);
        for (; i < end; i += L) s[0] += one(i);
        total += double(dk::simd::reduce_add<A>((s[0] + s[1]) + (s[2] + s[3])));
    }
    if (i < n) {
        alignas(64) float buf[L];
        for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? x[i + j] : -inf;
        dk::simd::exp_nonpositive<A>((B::load_aligned(buf) - mb) * tb).store_aligned(buf);
        for (std::size_t j = 0; i + j < n; ++j) {
            out[i + j] = buf[j];
            total += double(buf[j]);
        }
    }
    return total;
}

/// kernels::entropy computed one exponential at a time, in its order (blocks of 1024 entries,
/// pairs of vectors to two pairs of float accumulators, the tail in scalar).
template <class A>
double entropy_one_at_a_time(const std::vector<float>& x, float m, float inv_t) {
    using B = dk::simd::batch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const std::size_t n = x.size(), nfull = n / L * L;
    const B mb(m), tb(inv_t), lo(-200.f);
    double sw = 0, swd = 0;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 1024);
        B s[2] = {B(0.f), B(0.f)}, t[2] = {B(0.f), B(0.f)};
        auto one = [&](std::size_t j, std::size_t k) {
            const B d0 = (B::load_unaligned(x.data() + j) - mb) * tb;
            const B w = dk::simd::exp_nonpositive<A>(d0);
            s[k] += w;
            t[k] = dk::simd::fma<A>(w, dk::simd::max_ignore_nan<A>(lo, d0), t[k]);
        };
        for (; i + 2 * L <= end; i += 2 * L) {
            one(i, 0);
            one(i + L, 1);
        }
        for (; i < end; i += L) one(i, 0);
        sw += double(dk::simd::reduce_add<A>(s[0] + s[1]));
        swd += double(dk::simd::reduce_add<A>(t[0] + t[1]));
    }
    for (; i < n; ++i) {
        if (std::isnan(x[i])) continue;
        const float d = std::max((x[i] - m) * inv_t, -200.f);
        const float w = d >= -87.f ? std::exp(d) : 0.f;
        sw += double(w);
        swd += double(w) * double(d);
    }
    if (!(sw > 0)) return 0;
    return std::log(sw) - swd / sw;
}

bool same_bits(double a, double b) {
    return std::bit_cast<std::uint64_t>(a) == std::bit_cast<std::uint64_t>(b);
}

}  // namespace

TEST_CASE(
    "exp_pass (exp_sum, softmax, log_softmax, exp_weights) and entropy: one exponential at "
    "a time, bit for bit") {
    // The passes compute four vectors' exponentials at once (simd::exp_nonpositive_n: four
    // chains in flight) and add them as one vector at a time would: the same stored weights and
    // the same sums, so normalisers and logprobs do not depend on the scheduling. Every
    // architecture, rows with NaN and -inf, T 0.7 / 1 / 1.5, lengths with partial blocks,
    // remainder groups and vectors and a tail; a token_bitmask (disallowed entries read as -inf).
    for (int kind : {0, 2, 3})
        for (std::size_t n : {std::size_t(37), std::size_t(1003), std::size_t(1024 + 40),
                              std::size_t(2048 + 24), std::size_t(4097), std::size_t(40037)}) {
            const auto x = make_row(n, kind, 9);
            std::vector<std::uint32_t> words((n + 31) / 32);
            std::uint64_t s = 3;
            for (auto& wd : words) wd = std::uint32_t(mix(s));
            const dk::kernels::token_bitmask mask{.words = words, .size = n};
            std::vector<float> xm(x);
            for (std::size_t i = 0; i < n; ++i)
                if (!mask.allowed(i)) xm[i] = -inf;
            for (float t : {0.7f, 1.f, 1.5f})
                each_arch([&](auto arch, const std::string& name) {
                    using A = decltype(arch);
                    INFO("arch " << name << " n " << n << " kind " << kind << " T " << t);
                    const float m = dk::kernels::max<A>(x), mm = dk::kernels::max<A>(xm);
                    std::vector<float> want(n), wm(n), got(n, -1.f), p(n);
                    const double z = exp_pass_one_at_a_time<A>(x, m, 1.f / t, want.data());
                    const double zm = exp_pass_one_at_a_time<A>(xm, mm, 1.f / t, wm.data());
                    const auto ew = dk::kernels::exp_weights<A>(x, t, got);
                    CHECK(same_bits(ew.sum, z));
                    CHECK(std::memcmp(got.data(), want.data(), n * sizeof(float)) == 0);
                    CHECK(same_bits(dk::kernels::exp_sum<A>(x, t).sum, z));
                    CHECK(same_bits(dk::kernels::exp_sum<A>(x, t, mask).sum, zm));
                    CHECK(same_bits(dk::kernels::softmax<A>(x, p, t).sum, z));
                    CHECK(same_bits(dk::kernels::softmax<A>(x, p, t, mask).sum, zm));
                    CHECK(same_bits(dk::kernels::log_softmax<A>(x, p, t).sum, z));
                    CHECK(same_bits(dk::kernels::entropy<A>(x, t),
                                    entropy_one_at_a_time<A>(x, m, 1.f / t)));
                });
        }
}

TEST_CASE("softmax special values: +inf uniform, NaN and -inf zero, all -inf all zero") {
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        std::vector<float> x = {1.f, inf, qnan, -inf, inf, 2.f, 0.f, 3.f, 1.f,
                                1.f, 1.f, 1.f,  1.f,  1.f, 1.f, 1.f, 1.f, 1.f};
        std::vector<float> p(x.size()), l(x.size());
        dk::kernels::softmax<A>(x, p, 1.f);
        for (std::size_t i = 0; i < x.size(); ++i) CHECK(p[i] == (x[i] == inf ? 0.5f : 0.f));
        CHECK(dk::kernels::logsumexp<A>(x) == std::numeric_limits<double>::infinity());
        std::vector<float> y(x.size(), 0.5f);
        y[3] = qnan;
        y[5] = -inf;
        dk::kernels::softmax<A>(y, p, 0.9f);
        dk::kernels::log_softmax<A>(y, l, 0.9f);
        CHECK(p[3] == 0.f);
        CHECK(p[5] == 0.f);
        CHECK(l[3] == -inf);
        CHECK(l[5] == -inf);
        CHECK(p[0] == dk_test::Approx(1.0 / 16).epsilon(1e-6));
        std::vector<float> z(x.size(), -inf);
        z[2] = qnan;
        const auto st = dk::kernels::softmax<A>(z, p, 1.f);
        CHECK(st.sum == 0);
        for (float v : p) CHECK(v == 0.f);
        CHECK(dk::kernels::logsumexp<A>(z) == -std::numeric_limits<double>::infinity());
        CHECK(dk::kernels::entropy<A>(z) == 0);
        dk::kernels::log_softmax<A>(z, l, 1.f);
        for (float v : l) CHECK(v == -inf);
    });
}

TEST_CASE("softmax of 256000 logits sums to 1 within 1e-5; a negative control fails") {
    const auto x = make_row(256000, 0, 3);
    std::vector<float> p(x.size());
    dk::kernels::softmax(x, p, 1.f);
    double total = 0;
    for (float v : p) total += v;
    CHECK(std::fabs(total - 1.0) <= 1e-5);
    // Negative control: the check detects a perturbation of 1e-4 in one probability.
    std::vector<float> q(x.size());
    dk::kernels::softmax(x, q, 1.f);
    q[123] += 1e-4f;
    double t2 = 0;
    for (float v : q) t2 += v;
    CHECK_FALSE(std::fabs(t2 - 1.0) <= 1e-5);
}

TEST_CASE("widen_add_split adds each lane to exactly one pair of double accumulators") {
    // Lane by lane, the split sums equal widen_add of the selected lanes and of the others (the
    // same double additions: adding 0 changes nothing), so in + out is the whole sum; masks
    // empty, full and random, values of mixed signs and magnitudes (their sums not exact in
    // float, so a lane sent to the wrong side or rounded through float would show).
    each_arch([](auto arch, const std::string& name) {
        using A = decltype(arch);
        using B = dk::simd::batch<A>;
        using D = dk::simd::dbatch<A>;
        constexpr std::size_t L = dk::simd::lanes<A>;
        INFO("arch " << name);
        std::uint64_t s = 5;
        D il(0.0), ih(0.0), ol(0.0), oh(0.0), wl(0.0), wh(0.0), xl(0.0), xh(0.0);
        alignas(64) float v[L], t[L];
        for (int r = 0; r < 200; ++r) {
            for (std::size_t j = 0; j < L; ++j) {
                v[j] = float((unit(s) - 0.3) * std::ldexp(1.0, int(unit(s) * 40) - 20));
                t[j] = r % 3 == 0 ? 1.f : r % 3 == 1 ? -1.f : float(unit(s) - 0.5);
            }
            const B x = B::load_aligned(v);
            const auto sel = B::load_aligned(t) >= B(0.f);
            dk::simd::widen_add_split<A>(il, ih, ol, oh, x, sel);
            dk::simd::widen_add<A>(wl, wh, xsimd::select(sel, x, B(0.f)));
            dk::simd::widen_add<A>(xl, xh, xsimd::select(sel, B(0.f), x));
        }
        alignas(64) double a[D::size], b[D::size];
        const std::pair<D, D> pairs[] = {{il, wl}, {ih, wh}, {ol, xl}, {oh, xh}};
        for (const auto& [got, want] : pairs) {
            got.store_aligned(a);
            want.store_aligned(b);
            for (std::size_t j = 0; j < D::size; ++j) CHECK(a[j] == b[j]);
        }
    });
}
}  // namespace dk_t_kernels_reduce
