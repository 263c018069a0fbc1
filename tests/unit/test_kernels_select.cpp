// top_k, filter_at_least, filter_min_p and top_p against kernels/reference.hpp (exact equality:
// same ids, same logits, same order) for every xsimd architecture this build enables.
#include "dk_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_select {

namespace {

namespace dk = decodekit;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

using dk_rows::each_arch;
using dk_rows::lengths;
using dk_rows::make_row;
using dk_rows::mix;
using dk_rows::unit;

bool same(const dk::candidates& a, const dk::candidates& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a.ids()[i] != b.ids()[i] || !(a.logits()[i] == b.logits()[i])) return false;
    return true;
}

bool big(std::size_t n) { return n > 4097; }

/// `got` holds the same (id, logit) entries as `ref`, in id order (top_k_unordered's contract).
bool same_set_by_id(const dk::candidates& got, const dk::candidates& ref) {
    if (got.size() != ref.size()) return false;
    std::vector<std::pair<dk::token_id, float>> want;
    for (std::size_t i = 0; i < ref.size(); ++i) want.emplace_back(ref.ids()[i], ref.logits()[i]);
    std::sort(want.begin(), want.end(), [](auto a, auto b) { return a.first < b.first; });
    for (std::size_t i = 0; i < got.size(); ++i)
        if (got.ids()[i] != want[i].first || !(got.logits()[i] == want[i].second)) return false;
    return true;
}

/// top_k and top_k_unordered against the reference for architecture A.
template <class A>
void check_top_k(std::span<const float> x, std::size_t k, dk::tie_policy ties,
                 const dk::candidates& ref, std::size_t rn) {
    dk::candidates got(x.size());
    CHECK(dk::kernels::top_k<A>(x, k, ties, got) == rn);
    CHECK(same(got, ref));
    CHECK(dk::kernels::top_k_unordered<A>(x, k, ties, got) == rn);
    CHECK(same_set_by_id(got, ref));
}

/// check_top_k for both tie policies on every architecture.
void check_top_k_everywhere(std::span<const float> x, std::size_t k) {
    dk::candidates ref(x.size());
    for (auto ties : {dk::tie_policy::exactly_k, dk::tie_policy::keep_ties}) {
        const std::size_t rn = dk::reference::top_k(x, k, ties, ref);
        each_arch([&](auto arch, const std::string& name) {
            using A = decltype(arch);
            INFO("arch " << name << " ties " << int(ties));
            check_top_k<A>(x, k, ties, ref, rn);
        });
    }
}

}  // namespace

TEST_CASE("top_k and top_k_unordered equal the reference for both tie policies, every arch") {
    for (int kind = 0; kind <= 8; ++kind)
        for (std::size_t n : lengths) {
            if (big(n) && kind != 0 && kind != 1 && n != 128256) continue;
            const auto x = make_row(n, kind, 1);
            dk::candidates ref(n);
            for (std::size_t k : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(40),
                                  std::size_t(1024), n - 1, n, n + 3})
                for (auto ties : {dk::tie_policy::exactly_k, dk::tie_policy::keep_ties}) {
                    if (big(n) && k + 1 >= n) continue;
                    const std::size_t rn = dk::reference::top_k(x, k, ties, ref);
                    each_arch([&](auto arch, const std::string& name) {
                        using A = decltype(arch);
                        INFO("arch " << name << " n " << n << " kind " << kind << " k " << k
                                     << " ties " << int(ties));
                        check_top_k<A>(x, k, ties, ref, rn);
                    });
                }
        }
}

TEST_CASE("top_k edge cases: k = 0, k >= V, all ties, V = 1") {
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        std::vector<float> x(1000, 2.f);
        dk::candidates c(x.size());
        CHECK(dk::kernels::top_k<A>(x, 0, dk::tie_policy::keep_ties, c) == 0);
        CHECK(dk::kernels::top_k<A>(x, 5, dk::tie_policy::exactly_k, c) == 5);
        CHECK(c.ids()[4] == 4);
        CHECK(dk::kernels::top_k<A>(x, 5, dk::tie_policy::keep_ties, c) == 1000);
        CHECK(dk::kernels::top_k<A>(x, 5000, dk::tie_policy::exactly_k, c) == 1000);
        std::vector<float> one = {qnan};
        dk::candidates c1(1);
        CHECK(dk::kernels::top_k<A>(one, 1, dk::tie_policy::exactly_k, c1) == 0);
        one[0] = -3.f;
        CHECK(dk::kernels::top_k<A>(one, 1, dk::tie_policy::exactly_k, c1) == 1);
        CHECK(c1.ids()[0] == 0);
    });
}

TEST_CASE("filter_at_least and filter_min_p equal the reference") {
    for (int kind = 0; kind <= 8; ++kind)
        for (std::size_t n : lengths) {
            if (big(n) && kind != 0 && n != 128256) continue;
            const auto x = make_row(n, kind, 2);
            dk::candidates ref(n), got(n);
            for (float t : {-inf, -1e30f, -1.f, 0.f, 5.f, 12.f, inf, qnan}) {
                const std::size_t rn = dk::reference::filter_at_least(x, t, ref);
                each_arch([&](auto arch, const std::string& name) {
                    using A = decltype(arch);
                    INFO("arch " << name << " n " << n << " kind " << kind << " t " << t);
                    CHECK(dk::kernels::filter_at_least<A>(x, t, got) == rn);
                    CHECK(same(got, ref));
                });
            }
            for (float pb : {0.f, 1e-6f, 0.05f, 0.5f, 1.f, qnan})
                for (float temp : {0.5f, 1.f, 1.7f}) {
                    const std::size_t rn = dk::reference::filter_min_p(x, pb, temp, ref);
                    each_arch([&](auto arch, const std::string& name) {
                        using A = decltype(arch);
                        INFO("arch " << name << " n " << n << " kind " << kind << " p " << pb
                                     << " T " << temp);
                        CHECK(dk::kernels::filter_min_p<A>(x, pb, temp, got) == rn);
                        CHECK(same(got, ref));
                    });
                }
        }
}

TEST_CASE("top_p equals the reference (kept set and order), min_keep, p = 0 and p = 1") {
    for (int kind = 0; kind <= 8; ++kind)
        for (std::size_t n : lengths) {
            if (big(n) && !(kind == 0 || (kind == 1 && n == 128256))) continue;
            const auto x = make_row(n, kind, 3);
            dk::candidates ref(n), got(n);
            for (float p : {0.f, 0.3f, 0.9f, 0.95f, 0.999f, 1.f})
                for (float temp : {0.4f, 1.f, 2.5f})
                    for (std::size_t mk : {0u, 1u, 7u, 200u}) {
                        if (big(n) && !((p == 0.95f && temp == 1.f && mk == 0) ||
                                        (p == 0.9f && temp == 0.4f && mk == 7) ||
                                        (p == 0.3f && temp == 2.5f && mk == 0)))
                            continue;
                        const std::size_t rn = dk::reference::top_p(x, p, temp, mk, ref);
                        each_arch([&](auto arch, const std::string& name) {
                            using A = decltype(arch);
                            INFO("arch " << name << " n " << n << " kind " << kind << " p " << p
                                         << " T " << temp << " min_keep " << mk);
                            CHECK(dk::kernels::top_p<A>(x, p, temp, mk, got) == rn);
                            CHECK(same(got, ref));
                        });
                    }
        }
}

TEST_CASE("top_p: a tie group is split by id exactly like the reference; negative control") {
    // Four equal logits hold 4 x 0.2 of the mass: p = 0.5 keeps three of them (mass before the
    // third is 0.4 < 0.5), by ascending id.
    const float l = std::log(0.2f);
    std::vector<float> x(40, -inf);
    x[30] = l;
    x[3] = l;
    x[17] = l;
    x[9] = l;
    x[25] = std::log(0.2f);
    x[25] = std::log(0.1f);
    x[1] = std::log(0.1f);
    dk::candidates c(x.size()), r(x.size());
    dk::reference::top_p(x, 0.5f, 1.f, 0, r);
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        REQUIRE(dk::kernels::top_p<A>(x, 0.5f, 1.f, 0, c) == 3);
        CHECK(c.ids()[0] == 3);
        CHECK(c.ids()[1] == 9);
        CHECK(c.ids()[2] == 17);
        CHECK(same(c, r));
        dk::kernels::top_p<A>(x, 0.7f, 1.f, 0, c);
        CHECK_FALSE(same(c, r));  // negative control: a different p gives a different set
    });
}

TEST_CASE("top_k selection and sort: clustered rows, huge outliers, ties, signed zeros, small k") {
    // Rows that stress the k-th value search and the counting sort of the survivors: everything
    // in one bucket except an outlier (insertion sort falls back to std::sort), many exact ties
    // around the k-th value, +0 / -0 ties, few distinct values, and descending / ascending rows
    // (the reservoir cut runs on the ascending one). (The retries after a starting threshold
    // that is too high have their own tests below.)
    std::uint64_t s = 99;
    auto uni = [&] { return double(mix(s) >> 11) * 0x1p-53; };
    for (int shape = 0; shape < 7; ++shape)
        for (std::size_t n : {std::size_t(3000), std::size_t(40000)}) {
            std::vector<float> x(n);
            for (std::size_t i = 0; i < n; ++i) {
                const double u = uni();
                switch (shape) {
                    case 0:
                        x[i] = float(1.0 + 1e-4 * u);
                        break;  // one narrow cluster
                    case 1:
                        x[i] = float(std::floor(u * 8));
                        break;  // 8 values: huge ties
                    case 2:
                        x[i] = u < 0.5 ? 0.f : -0.f;
                        break;  // signed zeros only
                    case 3:
                        x[i] = float(-double(i));
                        break;  // descending
                    case 4:
                        x[i] = float(i);
                        break;  // ascending
                    case 5:
                        x[i] = float(u * 1e-30);
                        break;  // tiny, with denormals
                    default:
                        x[i] = float(std::floor(u * 3000) * 0.25);
                        break;
                }
            }
            if (shape == 0) x[n / 3] = 1e30f;  // an outlier above the cluster
            if (shape == 5) x[7] = -1e30f;
            dk::candidates ref(n), got(n);
            for (std::size_t k : {std::size_t(17), std::size_t(40), std::size_t(300),
                                  std::size_t(1024), n / 2, n - 5})
                for (auto ties : {dk::tie_policy::exactly_k, dk::tie_policy::keep_ties}) {
                    const std::size_t rn = dk::reference::top_k(x, k, ties, ref);
                    each_arch([&](auto arch, const std::string& name) {
                        using A = decltype(arch);
                        INFO("arch " << name << " shape " << shape << " n " << n << " k " << k
                                     << " ties " << int(ties));
                        check_top_k<A>(x, k, ties, ref, rn);
                    });
                }
        }
}

TEST_CASE("sort_smallest sorts the m smallest keys and keeps the m-th key's tie group") {
    std::uint64_t s = 7;
    std::vector<std::uint64_t> keys(5000), tmp(5000), want;
    for (int shape = 0; shape < 4; ++shape)
        for (std::size_t c : {std::size_t(17), std::size_t(100), std::size_t(5000)})
            for (std::size_t m : {std::size_t(1), std::size_t(17), c / 2, c}) {
                if (m == 0 || m > c) continue;
                for (std::size_t j = 0; j < c; ++j) {
                    const std::uint64_t r = mix(s);
                    const std::uint32_t hi = shape == 0   ? std::uint32_t(r >> 32)
                                             : shape == 1 ? std::uint32_t(r >> 60)  // ties
                                             : shape == 2 ? 0x80000000u + std::uint32_t(r % 50)
                                                          : (j == 3 ? 0u : 0xFFFFFF00u);
                    keys[j] = (std::uint64_t(hi) << 32) | std::uint32_t(j);
                }
                want.assign(keys.begin(), keys.begin() + std::ptrdiff_t(c));
                std::sort(want.begin(), want.end());
                const std::size_t kept =
                    dk::kernels::detail::sort_smallest(keys.data(), c, m, tmp.data());
                INFO("shape " << shape << " c " << c << " m " << m);
                REQUIRE(kept >= m);
                REQUIRE(kept <= c);
                CHECK(std::equal(tmp.begin(), tmp.begin() + std::ptrdiff_t(kept), want.begin()));
                if (kept < c) CHECK((want[kept] >> 32) != (want[m - 1] >> 32));
            }
}

TEST_CASE("top_k: a row that defeats the sampled threshold takes the pass without one") {
    // Only the entries at sampled_threshold's sample positions are large, so fewer than k
    // entries reach the sampled threshold (and the subrow holds too few of them to refine it):
    // top_k must repeat its pass without a starting threshold. The row is built from the sample
    // positions of kernels/select.hpp; the premise is checked, so a change of the sampling
    // scheme fails here instead of silently skipping the retry.
    using A = dk::simd::default_arch;
    const std::size_t n = 40000, S = 512, stride = n / S;
    for (std::size_t k : {std::size_t(200), std::size_t(2000)}) {
        std::vector<float> x(n, 0.f), scratch(n);
        for (std::size_t j = 0; j < S; ++j) {
            const std::uint64_t h = std::uint32_t(std::uint32_t(j + 1) * 2654435761u);
            x[j * stride + ((h * stride) >> 32)] = 1000.f + float(j);
        }
        const float t0 = dk::kernels::detail::sampled_threshold<A>(x, k, scratch.data());
        const auto above =
            std::size_t(std::count_if(x.begin(), x.end(), [&](float v) { return v >= t0; }));
        INFO("k " << k << " sampled threshold " << t0 << " entries above it " << above);
        REQUIRE(t0 > 0.f);
        REQUIRE(above < k);
        check_top_k_everywhere(x, k);
    }
}

TEST_CASE("top_k: a row whose subrow is unrepresentative falls back to the sampled threshold") {
    // Every entry of the subrow (one hashed vector per block of kernels/select.hpp) is large and
    // the rest is small, so the subrow's r-th largest is reached by fewer than k entries, while
    // the 512 samples (1/16 of them in the subrow) still give a threshold that k entries reach.
    // Both premises are checked for the default architecture (the subrow depends on the lane
    // count); every architecture must still equal the reference.
    using A = dk::simd::default_arch;
    constexpr std::size_t L = dk::simd::lanes<A>, G = dk::kernels::detail::subrow_block;
    const std::size_t n = 131072, nb = n / (G * L), k = 1000;
    std::vector<float> x(n), scratch(n);
    std::vector<dk::token_id> sids(n);
    std::uint64_t s = 5;
    for (std::size_t i = 0; i < n; ++i) x[i] = float(double(mix(s) >> 11) * 0x1p-53);
    for (std::size_t b = 0; b < nb; ++b)
        for (std::size_t l = 0; l < L; ++l)
            x[(b * G + dk::kernels::detail::subrow_vector(b)) * L + l] += 100.f;
    const float t0 = dk::kernels::detail::sampled_threshold<A>(x, k, scratch.data());
    const float t1 =
        dk::kernels::detail::refine_on_subrow<A>(x.data(), n, k, t0, sids.data(), scratch.data());
    auto reaching = [&](float t) {
        return std::size_t(std::count_if(x.begin(), x.end(), [&](float v) { return v >= t; }));
    };
    INFO("sampled " << t0 << " reached by " << reaching(t0) << ", refined " << t1 << " reached by "
                    << reaching(t1));
    REQUIRE(t1 > t0);
    REQUIRE(reaching(t1) < k);
    REQUIRE(reaching(t0) >= k);
    check_top_k_everywhere(x, k);
}

TEST_CASE("kth_largest equals nth_element; ge and gt count the entries reaching / above it") {
    std::uint64_t s = 11;
    std::vector<float> v, sorted;
    for (int shape = 0; shape < 6; ++shape)
        for (std::size_t c : {std::size_t(1), std::size_t(2), std::size_t(15), std::size_t(16),
                              std::size_t(17), std::size_t(100), std::size_t(4099)}) {
            v.resize(c);
            for (std::size_t j = 0; j < c; ++j) {
                const std::uint64_t r = mix(s);
                const double u = double(r >> 11) * 0x1p-53;
                switch (shape) {
                    case 0:
                        v[j] = float(u * 10 - 5);
                        break;  // distinct
                    case 1:
                        v[j] = float(std::floor(u * 4));
                        break;  // heavy ties
                    case 2:
                        v[j] = (r & 1) ? 0.f : -0.f;
                        break;  // signed zeros
                    case 3:
                        v[j] = (r & 3) == 0 ? inf : (r & 3) == 1 ? -inf : float(u);
                        break;
                    case 4:
                        v[j] = float(std::exp(40 * u - 20)) * ((r & 1) ? 1 : -1);
                        break;
                    default:
                        v[j] = j == c / 2 ? 3e38f : float(u * 1e-40);
                        break;  // denormals
                }
            }
            sorted = v;
            std::sort(sorted.begin(), sorted.end(), std::greater<float>());
            for (std::size_t k : {std::size_t(1), c / 3 + 1, c / 2 + 1, c}) {
                std::size_t ge = 0, gt = 0;
                each_arch([&](auto arch, const std::string& name) {
                    using A = decltype(arch);
                    const float got = dk::kernels::detail::kth_largest<A>(v.data(), c, k, ge, gt);
                    const float want = sorted[k - 1];
                    INFO("arch " << name << " shape " << shape << " c " << c << " k " << k);
                    CHECK(got == want);
                    CHECK(ge == std::size_t(std::count_if(v.begin(), v.end(),
                                                          [&](float x) { return x >= want; })));
                    if (ge > k)  // gt is exact when there are ties at the k-th (else only < k)
                        CHECK(gt == std::size_t(std::count_if(v.begin(), v.end(),
                                                              [&](float x) { return x > want; })));
                    CHECK(gt < k);
                    CHECK(k <= ge);
                });
            }
        }
}

TEST_CASE("logsumexp_top_k equals logsumexp and top_k (same value, same candidates in order)") {
    // Rows whose top entries sit in the tail after the last 512-entry group (n = 1025: the top
    // entry at 1024), rows with fewer groups than k (the fallback), NaN / -inf / +inf rows, ties.
    for (int kind = 0; kind <= 8; ++kind)
        for (std::size_t n : lengths) {
            if (big(n) && kind != 0 && kind != 1 && kind != 3 && n != 128256) continue;
            auto x = make_row(n, kind, 3);
            if (n == 1025 && kind == 0) x[1024] = 40.f;
            dk::candidates ref(n), got(n);
            for (std::size_t k : {std::size_t(0), std::size_t(1), std::size_t(2), std::size_t(8),
                                  std::size_t(16), std::size_t(40), n - 1, n, n + 3})
                for (auto ties : {dk::tie_policy::exactly_k, dk::tie_policy::keep_ties}) {
                    if (big(n) && k + 1 >= n) continue;
                    const std::size_t rn = dk::reference::top_k(x, k, ties, ref);
                    each_arch([&](auto arch, const std::string& name) {
                        using A = decltype(arch);
                        INFO("arch " << name << " n " << n << " kind " << kind << " k " << k
                                     << " ties " << int(ties));
                        std::vector<float> scratch(dk::kernels::logsumexp_top_k_scratch<A>(n));
                        const double lse =
                            dk::kernels::logsumexp_top_k<A>(x, k, ties, got, scratch);
                        const double want = dk::kernels::logsumexp<A>(x);
                        CHECK((lse == want || (std::isnan(lse) && std::isnan(want))));
                        CHECK(got.size() == rn);
                        CHECK(same(got, ref));
                    });
                }
        }
}

TEST_CASE("logsumexp_top_k: the k-th group maximum is -inf (fewer valid entries than k)") {
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        std::vector<float> x(4096, -inf);
        x[5] = 1.f;
        x[3000] = qnan;
        x[4095] = 2.f;
        dk::candidates got(x.size()), ref(x.size());
        std::vector<float> scratch(dk::kernels::logsumexp_top_k_scratch<A>(x.size()));
        const double lse =
            dk::kernels::logsumexp_top_k<A>(x, 3, dk::tie_policy::exactly_k, got, scratch);
        CHECK(lse == dk::kernels::logsumexp<A>(x));
        CHECK(dk::reference::top_k(x, 3, dk::tie_policy::exactly_k, ref) == 2);
        CHECK(same(got, ref));
        CHECK(got.ids()[0] == 4095);
    });
}
}  // namespace dk_t_kernels_select
