// Token bitmasks (kernels/mask.hpp): the lane-mask helper, the view's coverage rule, counting,
// the in-place apply, and every masked kernel (max, argmax, exp_sum, logsumexp, softmax, top_k,
// top_k_unordered, filter_at_least, filter_min_p) against the unmasked reference on the masked
// copy of the row, for every xsimd architecture this build enables. Masks: random, sparse,
// all-zero, all-one, tail words with garbage bits past V, short masks, and masks that remove the
// max, the whole top-k, or everything above the min-p threshold.
#include "dk_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <span>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_mask {

namespace {

namespace dk = decodekit;
namespace kn = decodekit::kernels;
constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

using dk_rows::each_arch;
using dk_rows::make_row;
using dk_rows::mix;

bool same_float(float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); }

bool same(const dk::candidates& a, const dk::candidates& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (a.ids()[i] != b.ids()[i] || !same_float(a.logits()[i], b.logits()[i])) return false;
    return true;
}

bool close(double a, double r, double rel, double abs = 0) {
    if (std::isinf(r) || std::isnan(r)) return a == r || (std::isnan(a) && std::isnan(r));
    return std::fabs(a - r) <= rel * std::fabs(r) + abs;
}

/// Mask kinds. 0 random 50 %; 1 sparse (~1 % allowed, as a JSON grammar state); 2 all-zero;
/// 3 all-one; 4 random with every bit past n set (garbage in the tail word and one extra word);
/// 5 random, the row's max removed; 6 random, the 40 largest removed; 7 random, every entry above
/// the min-p 0.05 threshold removed.
constexpr int mask_kinds = 8;

std::vector<std::uint32_t> make_mask(std::span<const float> x, int kind, std::uint64_t seed) {
    const std::size_t n = x.size();
    std::vector<std::uint32_t> w(kn::bitmask_words(n) + (kind == 4 ? 1 : 0), 0u);
    std::uint64_t s = seed * 31 + n;
    for (auto& v : w) {
        const std::uint64_t r = mix(s);
        switch (kind) {
            case 1: {
                std::uint32_t bits = 0;
                for (int b = 0; b < 32; ++b)
                    if (mix(s) % 100 == 0) bits |= 1u << b;
                v = bits;
                break;
            }
            case 2:
                v = 0;
                break;
            case 3:
                v = ~0u;
                break;
            default:
                v = std::uint32_t(r);
                break;
        }
    }
    auto clear = [&](std::size_t i) { w[i / 32] &= ~(1u << (i % 32)); };
    if (kind == 4) {
        for (std::size_t i = n; i < 32 * w.size(); ++i) w[i / 32] |= 1u << (i % 32);
    } else if (kind == 5) {
        const std::size_t a = dk::reference::argmax(x);
        if (a != dk::npos) clear(a);
    } else if (kind == 6) {
        dk::candidates top(n);
        dk::reference::top_k(x, 40, dk::tie_policy::keep_ties, top);
        for (auto id : top.ids()) clear(std::size_t(id));
    } else if (kind == 7) {
        const float t = dk::reference::min_p_threshold(dk::reference::max(x), 0.05f, 1.f);
        for (std::size_t i = 0; i < n; ++i)
            if (x[i] >= t) clear(i);
    }
    return w;
}

kn::token_bitmask view(const std::vector<std::uint32_t>& w, std::size_t n) {
    return {.words = w, .size = n};
}

const std::vector<std::size_t> mask_lengths = {1,  2,   7,   16,  17,   31,   32,    33,    63,
                                               64, 100, 511, 513, 1025, 4097, 32000, 128256};

}  // namespace

TEST_CASE("bitmask_lanes: lane j is bit (i + j) % 32 of word (i + j) / 32, every architecture") {
    std::uint64_t s = 3;
    std::vector<std::uint32_t> w(8);
    for (auto& v : w) v = std::uint32_t(mix(s));
    w[2] = 0;
    w[3] = ~0u;
    w[4] = 0x80000001u;
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        constexpr std::size_t L = dk::simd::lanes<A>;
        INFO("arch " << name);
        for (std::size_t i = 0; i + L <= 32 * w.size(); i += L) {
            const std::uint64_t got = dk::simd::to_mask<A>(dk::simd::bitmask_lanes<A>(w.data(), i));
            std::uint64_t want = 0;
            for (std::size_t j = 0; j < L; ++j)
                want |= std::uint64_t((w[(i + j) / 32] >> ((i + j) % 32)) & 1u) << j;
            CHECK(got == want);
        }
        // Bits above the lanes are ignored.
        CHECK(dk::simd::to_mask<A>(dk::simd::lanes_from_bits<A>(~0u)) ==
              (L == 64 ? ~0ull : (1ull << L) - 1));
        CHECK(dk::simd::to_mask<A>(dk::simd::lanes_from_bits<A>(1u << L)) == 0);
    });
}

TEST_CASE("token_bitmask: coverage, allowed, subview, check, count_allowed") {
    std::vector<std::uint32_t> w = {0xF0F0F0F0u, ~0u, 0x5u};
    const kn::token_bitmask m{.words = w, .size = 70};
    CHECK(m.covered() == 70);
    CHECK(kn::bitmask_words(70) == 3);
    CHECK(kn::bitmask_words(64) == 2);
    CHECK(kn::bitmask_words(0) == 0);
    CHECK_FALSE(m.allowed(0));
    CHECK(m.allowed(4));
    CHECK(m.allowed(64));
    CHECK_FALSE(m.allowed(65));
    CHECK(m.allowed(66));
    CHECK_FALSE(m.allowed(70));  // past size
    CHECK_FALSE(m.allowed(1000));
    CHECK(kn::check(m, 70) == kn::mask_status::ok);
    CHECK(kn::check(m, 60) == kn::mask_status::ok);
    CHECK(kn::check(m, 71) == kn::mask_status::short_mask);
    CHECK(kn::count_allowed(m, 70) == 16 + 32 + 2);
    CHECK(kn::count_allowed(m, 66) == 16 + 32 + 1);
    CHECK(kn::count_allowed(m, 1000) == 16 + 32 + 2);  // tokens without a bit: disallowed
    CHECK(kn::count_allowed(m, 0) == 0);
    // size beyond the words: the words bound the coverage.
    const kn::token_bitmask big{.words = w, .size = 1000};
    CHECK(big.covered() == 96);
    CHECK(kn::check(big, 97) == kn::mask_status::short_mask);
    CHECK(kn::count_allowed(big, 1000) == 16 + 32 + 2);
    // Subviews of whole words; a misaligned start covers nothing.
    const auto sub = m.subview(32, 100);
    CHECK(sub.size == 38);
    CHECK(sub.allowed(0));
    CHECK(sub.allowed(32));
    CHECK_FALSE(sub.allowed(33));
    CHECK(m.subview(64, 3).size == 3);
    CHECK(m.subview(96, 5).covered() == 0);
    CHECK(m.subview(33, 5).covered() == 0);
    CHECK(m.subview(128, 5).covered() == 0);
    CHECK(kn::check(m.subview(33, 5), 5) == kn::mask_status::short_mask);
    const kn::token_bitmask none{};
    CHECK(none.covered() == 0);
    CHECK(kn::check(none, 0) == kn::mask_status::ok);
    CHECK(kn::check(none, 1) == kn::mask_status::short_mask);
}

TEST_CASE("apply_token_bitmask_inplace equals the masked copy; short masks report their status") {
    for (std::size_t n : mask_lengths)
        for (int kind = 0; kind < mask_kinds; ++kind) {
            const auto x = make_row(n, kind % 3 == 0 ? 2 : 0, 5);  // with NaN sometimes
            const auto w = make_mask(x, kind, 1);
            const auto want = dk::reference::masked_copy(x, view(w, n));
            each_arch([&](auto arch, const std::string& name) {
                using A = decltype(arch);
                INFO("arch " << name << " n " << n << " kind " << kind);
                auto y = x, z = x;
                CHECK(kn::apply_token_bitmask_inplace<A>(y, view(w, n)) == kn::mask_status::ok);
                // A mask describing more tokens than the row: the bits past the row are ignored.
                CHECK(kn::apply_token_bitmask_inplace<A>(z, view(w, 32 * w.size())) ==
                      kn::mask_status::ok);
                bool equal = true;
                for (std::size_t i = 0; i < n; ++i)
                    equal = equal && same_float(y[i], want[i]) && same_float(z[i], want[i]);
                CHECK(equal);
            });
        }
    // A short mask: the tokens it has no bit for are set to -inf, and the status says so.
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        std::vector<float> y(100, 1.f);
        std::vector<std::uint32_t> w = {~0u, ~0u};
        CHECK(kn::apply_token_bitmask_inplace<A>(y, {.words = w, .size = 100}) ==
              kn::mask_status::short_mask);
        for (std::size_t i = 0; i < 100; ++i) CHECK(y[i] == (i < 64 ? 1.f : -inf));
        std::fill(y.begin(), y.end(), 2.f);
        CHECK(kn::apply_token_bitmask_inplace<A>(y, {.words = w, .size = 40}) ==
              kn::mask_status::short_mask);
        CHECK(y[39] == 2.f);
        CHECK(y[40] == -inf);
        CHECK(kn::apply_token_bitmask_inplace<A>(std::span<float>{}, {}) == kn::mask_status::ok);
    });
}

TEST_CASE(
    "masked max, argmax, exp_sum, logsumexp, softmax equal the reference on the masked copy") {
    for (int row_kind = 0; row_kind <= 8; ++row_kind)
        for (std::size_t n : mask_lengths) {
            if (n > 4097 && row_kind != 0 && row_kind != 2) continue;
            const auto x = make_row(n, row_kind, 7);
            for (int kind = 0; kind < mask_kinds; ++kind) {
                const auto w = make_mask(x, kind, 2);
                const auto m = view(w, n);
                const auto y = dk::reference::masked_copy(x, m);
                const float rmax = dk::reference::max(y);
                const std::size_t rarg = dk::reference::argmax(x, m);
                REQUIRE(same_float(dk::reference::max(x, m), rmax));
                std::vector<float> rp(n), p(n);
                each_arch([&](auto arch, const std::string& name) {
                    using A = decltype(arch);
                    INFO("arch " << name << " n " << n << " row " << row_kind << " mask " << kind);
                    CHECK(same_float(kn::max<A>(x, m), rmax));
                    CHECK(kn::argmax<A>(x, m) == rarg);
                    for (float t : {1.f, 0.6f}) {
                        const auto rst = dk::reference::exp_sum(y, t);
                        const auto st = kn::exp_sum<A>(x, t, m);
                        CHECK(same_float(st.max, rst.max));
                        CHECK(close(st.sum, rst.sum, 1e-6));
                        CHECK(close(kn::logsumexp<A>(x, t, m), dk::reference::logsumexp(y, t), 1e-6,
                                    1e-6));
                        dk::reference::softmax(y, rp, t);
                        std::fill(p.begin(), p.end(), qnan);
                        kn::softmax<A>(x, p, t, m);
                        std::size_t bad = 0;
                        for (std::size_t i = 0; i < n; ++i) bad += !close(p[i], rp[i], 1e-5, 1e-30);
                        CHECK(bad == 0);
                    }
                });
            }
        }
}

TEST_CASE("masked argmax never returns a disallowed entry; npos when nothing is allowed") {
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        for (std::size_t n : {5u, 16u, 40u, 1000u, 4097u}) {
            std::vector<float> x(n, -inf);
            x[0] = qnan;
            x[n - 1] = 5.f;  // the only finite entry: disallowed below
            std::vector<std::uint32_t> w(kn::bitmask_words(n), ~0u);
            w[(n - 1) / 32] &= ~(1u << ((n - 1) % 32));
            const kn::token_bitmask m{.words = w, .size = n};
            CHECK(kn::argmax<A>(x, m) == 1);  // the first allowed -inf
            CHECK(dk::reference::argmax(x, m) == 1);
            w[0] &= ~2u;  // 1 disallowed too
            CHECK(kn::argmax<A>(x, m) == (n > 2 ? 2u : dk::npos));
            std::fill(w.begin(), w.end(), 0u);
            CHECK(kn::argmax<A>(x, m) == dk::npos);
            CHECK(kn::max<A>(x, m) == -inf);
            CHECK(kn::exp_sum<A>(x, 1.f, m).sum == 0);
            CHECK(kn::logsumexp<A>(x, 1.f, m) == -std::numeric_limits<double>::infinity());
            std::vector<float> p(n, 1.f);
            kn::softmax<A>(x, p, 1.f, m);
            CHECK(std::all_of(p.begin(), p.end(), [](float v) { return v == 0.f; }));
        }
    });
}

TEST_CASE("masked top_k, top_k_unordered, filter_at_least, filter_min_p equal the reference") {
    for (int row_kind = 0; row_kind <= 8; ++row_kind)
        for (std::size_t n : mask_lengths) {
            if (n > 4097 && row_kind > 1) continue;
            const auto x = make_row(n, row_kind, 9);
            dk::candidates ref(n), got(n);
            for (int kind = 0; kind < mask_kinds; ++kind) {
                const auto w = make_mask(x, kind, 3);
                const auto m = view(w, n);
                const auto y = dk::reference::masked_copy(x, m);
                for (std::size_t k : {std::size_t(1), std::size_t(40), std::size_t(1024), n + 1})
                    for (auto ties : {dk::tie_policy::exactly_k, dk::tie_policy::keep_ties}) {
                        if (n > 4097 && k > n) continue;
                        const std::size_t rn = dk::reference::top_k(y, k, ties, ref);
                        each_arch([&](auto arch, const std::string& name) {
                            using A = decltype(arch);
                            INFO("arch " << name << " n " << n << " row " << row_kind << " mask "
                                         << kind << " k " << k << " ties " << int(ties));
                            CHECK(kn::top_k<A>(x, k, ties, got, m) == rn);
                            CHECK(same(got, ref));
                            CHECK(kn::top_k_unordered<A>(x, k, ties, got, m) == rn);
                            std::vector<dk::token_id> a(got.ids().begin(), got.ids().end()),
                                b(ref.ids().begin(), ref.ids().end());
                            std::sort(b.begin(), b.end());
                            CHECK(a == b);
                        });
                    }
                for (float t : {-inf, -1.f, 5.f, qnan}) {
                    const std::size_t rn = dk::reference::filter_at_least(y, t, ref);
                    each_arch([&](auto arch, const std::string& name) {
                        using A = decltype(arch);
                        INFO("arch " << name << " n " << n << " row " << row_kind << " mask "
                                     << kind << " t " << t);
                        CHECK(kn::filter_at_least<A>(x, t, got, m) == rn);
                        CHECK(same(got, ref));
                    });
                }
                for (float pb : {0.f, 0.05f, 0.5f})
                    for (float temp : {1.f, 0.7f}) {
                        const std::size_t rn = dk::reference::filter_min_p(y, pb, temp, ref);
                        each_arch([&](auto arch, const std::string& name) {
                            using A = decltype(arch);
                            INFO("arch " << name << " n " << n << " row " << row_kind << " mask "
                                         << kind << " p " << pb << " T " << temp);
                            CHECK(kn::filter_min_p<A>(x, pb, temp, got, m) == rn);
                            CHECK(same(got, ref));
                        });
                    }
            }
        }
}

TEST_CASE("masked selections: a mask that removes the whole top-k or everything above min-p") {
    // The premises of mask kinds 6 and 7 are checked, so the masks really remove what they say;
    // then the kernels must pick the next entries (negative control: the unmasked kernel differs).
    const std::size_t n = 128256;
    const auto x = make_row(n, 0, 11);
    dk::candidates full(n), got(n), ref(n);
    const auto w6 = make_mask(x, 6, 4), w7 = make_mask(x, 7, 4);
    const auto m6 = view(w6, n), m7 = view(w7, n);
    dk::reference::top_k(x, 40, dk::tie_policy::exactly_k, full);
    for (auto id : full.ids()) REQUIRE_FALSE(m6.allowed(std::size_t(id)));
    const float thr = dk::reference::min_p_threshold(dk::reference::max(x), 0.05f, 1.f);
    for (std::size_t i = 0; i < n; ++i)
        if (x[i] >= thr) REQUIRE_FALSE(m7.allowed(i));
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        dk::reference::top_k(dk::reference::masked_copy(x, m6), 40, dk::tie_policy::exactly_k, ref);
        CHECK(kn::top_k<A>(x, 40, dk::tie_policy::exactly_k, got, m6) == 40);
        CHECK(same(got, ref));
        CHECK_FALSE(same(got, full));
        for (auto id : got.ids()) CHECK(m6.allowed(std::size_t(id)));
        dk::reference::filter_min_p(dk::reference::masked_copy(x, m7), 0.05f, 1.f, ref);
        CHECK(kn::filter_min_p<A>(x, 0.05f, 1.f, got, m7) == ref.size());
        CHECK(same(got, ref));
        CHECK(got.size() > 0);
        for (auto id : got.ids()) CHECK(x[std::size_t(id)] < thr);
    });
}

TEST_CASE("masked filter_min_p: p_base stands for its decimal under a sparse mask too") {
    // 0.8f is 0.800000012: the threshold is max + T ln(decimal_floor(0.8f)) (reference.hpp), a
    // few float ulps below max + T ln(0.800000012). An entry exactly at the decimal threshold is
    // kept by the dense and the gathering (sparse mask: 2 of 4096 allowed) paths alike.
    const std::size_t n = 4096;
    const float thr = dk::reference::min_p_threshold(0.f, 0.8f, 1.f);
    REQUIRE(thr < float(std::log(double(0.8f))));  // the boundary the test is about
    std::vector<float> x(n, -20.f);
    x[7] = 0.f;
    x[900] = thr;
    std::vector<std::uint32_t> words((n + 31) / 32, 0u);
    words[7 / 32] |= 1u << (7 % 32);
    words[900 / 32] |= 1u << (900 % 32);
    const kn::token_bitmask sparse{.words = words, .size = n};
    const std::vector<std::uint32_t> all((n + 31) / 32, ~0u);
    const kn::token_bitmask dense{.words = all, .size = n};
    dk::candidates got(n);
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        CHECK(kn::filter_min_p<A>(x, 0.8f, 1.f, got, sparse) == 2);
        CHECK(kn::filter_min_p<A>(x, 0.8f, 1.f, got, dense) == 2);
        CHECK(kn::filter_min_p<A>(x, 0.8f, 1.f, got) == 2);
    });
}

TEST_CASE("masked kernels with a short mask treat the uncovered tokens as disallowed") {
    const std::size_t n = 1000;
    auto x = make_row(n, 0, 13);
    x[900] = 100.f;                               // the max, past the mask's coverage
    const std::vector<std::uint32_t> w(10, ~0u);  // 320 tokens
    const kn::token_bitmask m{.words = w, .size = n};
    REQUIRE(kn::check(m, n) == kn::mask_status::short_mask);
    const auto y = dk::reference::masked_copy(x, m);
    dk::candidates got(n), ref(n);
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        CHECK(kn::max<A>(x, m) == dk::reference::max(y));
        CHECK(kn::argmax<A>(x, m) < 320);
        CHECK(kn::top_k<A>(x, 5, dk::tie_policy::exactly_k, got, m) == 5);
        dk::reference::top_k(y, 5, dk::tie_policy::exactly_k, ref);
        CHECK(same(got, ref));
        kn::filter_min_p<A>(x, 0.1f, 1.f, got, m);
        dk::reference::filter_min_p(y, 0.1f, 1.f, ref);
        CHECK(same(got, ref));
        dk::rng_stream r = dk::make_stream({1, 2, 3});
        CHECK(kn::draw_temperature<A>(x, 1.f, r, m) < 320);
    });
}

TEST_CASE("allowed_at_most agrees with count_allowed at every limit, tail words and short masks") {
    for (std::size_t n : mask_lengths) {
        const auto x = make_row(n, 0, 17);
        for (int kind = 0; kind <= 4; ++kind) {
            const auto w = make_mask(x, kind, 5);
            // the view as given, and a short one (a word fewer than the tokens need)
            for (const std::size_t words : {w.size(), w.size() > 0 ? w.size() - 1 : 0}) {
                const kn::token_bitmask m{.words = std::span(w).first(words), .size = n};
                const std::size_t c = kn::count_allowed(m, n);
                INFO("n " << n << " mask " << kind << " words " << words << " allowed " << c);
                for (std::size_t limit :
                     {std::size_t(0), c / 2, c > 0 ? c - 1 : 0, c, c + 1, n, n / 16})
                    CHECK(kn::allowed_at_most(m, n, limit) == (c <= limit));
            }
        }
    }
    // The count stops early once past the limit, but never stops short of it: a mask whose
    // allowed tokens all sit in its last (partial) word.
    std::vector<std::uint32_t> w(kn::bitmask_words(4000), 0u);
    w.back() = ~0u;  // tokens 3968..3999 allowed, and garbage bits past 4000
    const kn::token_bitmask m{.words = w, .size = 4000};
    CHECK(kn::count_allowed(m, 4000) == 32);
    CHECK(kn::allowed_at_most(m, 4000, 32));
    CHECK_FALSE(kn::allowed_at_most(m, 4000, 31));
    CHECK(kn::allowed_at_most(m, 3990, 22));
    CHECK_FALSE(kn::allowed_at_most(m, 3990, 21));
}

TEST_CASE(
    "masked compact pass: any start and end, few or many hits per group, equal a scalar scan") {
    // compact_row over a masked row keeps, in id order, the allowed entries of [begin, end) that
    // pass the threshold. A group of 4 vectors with at most 4 allowed hits is written from its
    // bits, one with more by the vector compress; starts that are not a multiple of 4 vectors
    // run single vectors up to the first group.
    each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        constexpr std::size_t L = dk::simd::lanes<A>;
        const std::size_t n = 64 * L + 3 * L;
        auto x = make_row(n, 0, 21);
        std::vector<std::uint32_t> w(kn::bitmask_words(n), 0u);
        std::uint64_t s = 77;
        for (auto& v : w) v = std::uint32_t(mix(s));
        // Group 4 (entries [16L, 20L)): exactly 4 allowed hits at t = 50, and one disallowed.
        // Group 5 ([20L, 24L)): 5 allowed hits, one per vector and two in the last one.
        auto set = [&](std::size_t i, bool allowed) {
            x[i] = 60.f + float(i % 7);
            if (allowed)
                w[i / 32] |= 1u << (i % 32);
            else
                w[i / 32] &= ~(1u << (i % 32));
        };
        for (std::size_t i : {16 * L, 17 * L + 1, 18 * L + L - 1, 19 * L + 2}) set(i, true);
        set(16 * L + 1, false);
        for (std::size_t i : {20 * L, 21 * L + 3 % L, 22 * L, 23 * L, 23 * L + L - 1}) set(i, true);
        const kn::token_bitmask m{.words = w, .size = n};
        std::size_t nn = 0;
        const auto r = kn::detail::masked<A>(x, m, nn);
        REQUIRE(nn == n);
        std::vector<dk::token_id> ids(n + 2 * L);
        std::vector<float> lg(n + 2 * L);
        for (float t : {50.f, 0.f, -100.f})
            for (bool strict : {false, true})
                for (std::size_t begin = 0; begin <= 6 * L; begin += L)
                    for (std::size_t end : {begin, begin + L, 24 * L, n - 2 * L, n}) {
                        if (end < begin) continue;
                        std::vector<dk::token_id> want_ids;
                        std::vector<float> want_lg;
                        for (std::size_t i = begin; i < end; ++i)
                            if (m.allowed(i) && (strict ? x[i] > t : x[i] >= t)) {
                                want_ids.push_back(dk::token_id(i));
                                want_lg.push_back(x[i]);
                            }
                        INFO("arch " << name << " t " << t << " strict " << strict << " begin "
                                     << begin << " end " << end);
                        const std::size_t c = kn::detail::compact_row<A, true>(
                            r, begin, end, t, strict, 0, ids.data(), lg.data());
                        CHECK(std::vector<dk::token_id>(ids.begin(), ids.begin() + long(c)) ==
                              want_ids);
                        CHECK(std::vector<float>(lg.begin(), lg.begin() + long(c)) == want_lg);
                        // ids only, appended after 3 entries already there
                        const std::size_t c2 = kn::detail::compact_row<A, false>(
                            r, begin, end, t, strict, 3, ids.data(), nullptr);
                        CHECK(c2 == 3 + want_ids.size());
                        CHECK(std::vector<dk::token_id>(ids.begin() + 3, ids.begin() + long(c2)) ==
                              want_ids);
                    }
    });
}
}  // namespace dk_t_kernels_mask
