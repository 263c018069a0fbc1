// Philox4x32-10 known-answer vectors (Random123 tests/kat_vectors) and the stream contract.
#include "dk_test.hpp"

#include <random>
#include <set>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_random {

using namespace decodekit;

TEST_CASE("philox4x32_10 matches the Random123 known-answer vectors", "[random]") {
    using u4 = std::array<std::uint32_t, 4>;
    using u2 = std::array<std::uint32_t, 2>;
    CHECK(philox4x32_10(u4{0, 0, 0, 0}, u2{0, 0}) ==
          u4{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
    CHECK(philox4x32_10(u4{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
                        u2{0xffffffff, 0xffffffff}) ==
          u4{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
    CHECK(philox4x32_10(u4{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
                        u2{0xa4093822, 0x299f31d0}) ==
          u4{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
    static_assert(philox4x32_10(u4{0, 0, 0, 0}, u2{0, 0})[0] == 0x6627e8d5);
}

TEST_CASE("rng_stream is a uniform_random_bit_generator keyed by (seed, sequence, step)",
          "[random]") {
    static_assert(std::uniform_random_bit_generator<rng_stream>);
    rng_stream a = make_stream({.seed = 42, .sequence = 7, .step = 3});
    rng_stream b = make_stream({.seed = 42, .sequence = 7, .step = 3});
    for (int i = 0; i < 10; ++i) CHECK(a() == b());
    CHECK(a.words_used() == 10);

    // Changing any key part or the purpose changes the stream.
    std::set<std::uint32_t> firsts;
    firsts.insert(make_stream({42, 7, 3})());
    firsts.insert(make_stream({43, 7, 3})());
    firsts.insert(make_stream({42, 8, 3})());
    firsts.insert(make_stream({42, 7, 4})());
    firsts.insert(make_stream({42, 7, 3}, rng_purpose::accept)());
    firsts.insert(make_stream({42, 7ull << 32, 3})());
    firsts.insert(make_stream({42, 7, 3ull << 32})());
    CHECK(firsts.size() == 7);
}

TEST_CASE("rng_stream state saves and restores by copy", "[random]") {
    rng_stream s = make_stream({1, 2, 3});
    for (int i = 0; i < 5; ++i) s();
    const rng_stream saved = s;
    const auto x = s(), y = s(), z = s();
    s = saved;
    CHECK(s() == x);
    CHECK(s() == y);
    CHECK(s() == z);
}

TEST_CASE("uniform variates lie in the open interval and are uniform", "[random][stats]") {
    rng_stream s = make_stream({2024, 0, 0});
    const std::size_t bins = 64, n = 200000;
    std::vector<std::uint64_t> counts(bins, 0), counts_f(bins, 0);
    for (std::size_t i = 0; i < n; ++i) {
        const double u = s.uniform();
        const float f = s.uniform_float();
        REQUIRE(u > 0.0);
        REQUIRE(u < 1.0);
        REQUIRE(f > 0.f);
        REQUIRE(f < 1.f);
        ++counts[std::size_t(u * bins)];
        ++counts_f[std::size_t(f * bins)];
    }
    const std::vector<double> expected(bins, 1.0 / bins);
    CHECK(dk_test::chi_square(counts, expected).p_value > dk_test::false_failure_rate);
    CHECK(dk_test::chi_square(counts_f, expected).p_value > dk_test::false_failure_rate);
    // The test can fail: a constant generator would put every draw in one bin.
    std::vector<std::uint64_t> degenerate(bins, 0);
    degenerate[3] = n;
    CHECK(dk_test::chi_square(degenerate, expected).p_value < dk_test::false_failure_rate);
}
}  // namespace dk_t_random
