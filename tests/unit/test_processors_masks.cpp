// No-repeat-ngram, banned sequences, logit bias, banned / allowed tokens and min length: hand
// examples, out-of-range ids, special values, and both paths of the allowed-token set.
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <set>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_processors_masks {

using namespace decodekit;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr token_id big = std::numeric_limits<token_id>::max();
constexpr token_id small = std::numeric_limits<token_id>::min();

std::vector<float> iota_row(std::size_t v) {
    std::vector<float> x(v);
    for (std::size_t i = 0; i < v; ++i) x[i] = static_cast<float>(i) + 0.5f;
    return x;
}

// The ids set to -inf, every other entry must be unchanged.
std::set<token_id> banned_ids(const std::vector<float>& got, const std::vector<float>& before) {
    std::set<token_id> s;
    for (std::size_t i = 0; i < got.size(); ++i) {
        if (got[i] == -inf && before[i] != -inf)
            s.insert(static_cast<token_id>(i));
        else
            CHECK((got[i] == before[i] || (std::isnan(got[i]) && std::isnan(before[i]))));
    }
    return s;
}

std::set<token_id> ngram_bans(const std::vector<token_id>& h, std::size_t n, std::size_t v = 10) {
    const auto before = iota_row(v);
    auto x = before;
    apply_no_repeat_ngram(x, h, n);
    return banned_ids(x, before);
}

std::set<token_id> seq_bans(const std::vector<token_id>& h,
                            const std::vector<std::vector<token_id>>& seqs, std::size_t v = 10) {
    const auto before = iota_row(v);
    auto x = before;
    apply_banned_sequences(x, h, seqs);
    return banned_ids(x, before);
}

}  // namespace

TEST_CASE("no_repeat_ngram: Hugging Face no_repeat_ngram_size", "[processors][ngram]") {
    using S = std::set<token_id>;
    // Bigrams (1,2) (2,3) (3,1); the last token 1 started (1,2): ban 2.
    CHECK(ngram_bans({1, 2, 3, 1}, 2) == S{2});
    // Trigrams (1,2,3) (2,3,1) (3,1,2); the tail (1,2) started (1,2,3): ban 3.
    CHECK(ngram_bans({1, 2, 3, 1, 2}, 3) == S{3});
    // Bigrams (1,2) (2,1) (1,2): tail 2 -> ban 1.
    CHECK(ngram_bans({1, 2, 1, 2}, 2) == S{1});
    // n = 1 bans every token of the history.
    CHECK(ngram_bans({4, 7, 4}, 1) == S{4, 7});
    // A tail that started two different n-grams bans both continuations.
    CHECK(ngram_bans({5, 1, 5, 2, 5}, 2) == S{1, 2});
    // Disabled, empty history, history too short for a complete n-gram, no match.
    CHECK(ngram_bans({1, 2, 3, 1}, 0).empty());
    CHECK(ngram_bans({}, 1).empty());
    CHECK(ngram_bans({}, 3).empty());
    CHECK(ngram_bans({1, 1}, 3).empty());
    CHECK(ngram_bans({1, 2, 3, 4}, 2).empty());
    CHECK(ngram_bans({1, 2, 3, 4, 1, 2, 3}, 5).empty());
}

TEST_CASE("no_repeat_ngram: ids outside [0, V) match but are never written",
          "[processors][ngram]") {
    using S = std::set<token_id>;
    // (-1, 3) and (3, -1) exist; tail -1 bans 3; tail 3 would ban -1 (ignored).
    CHECK(ngram_bans({-1, 3, -1}, 2) == S{3});
    CHECK(ngram_bans({3, -1, 3}, 2).empty());
    CHECK(ngram_bans({big, 10, small, big}, 2).empty());
    CHECK(ngram_bans({big, 10, small, 9, 100}, 1) == S{9});
}

TEST_CASE("no_repeat_ngram: random histories match a set of n-grams", "[processors][ngram]") {
    std::mt19937 gen(5);
    for (int trial = 0; trial < 500; ++trial) {
        const std::size_t v = 2 + gen() % 5, n = gen() % 5;
        std::vector<token_id> h(gen() % 30);
        for (auto& t : h) t = static_cast<token_id>(gen() % (v + 2)) - 1;
        // Reference: every n-gram as a vector; ban the last token of those whose first n-1
        // tokens equal the history's last n-1.
        std::set<token_id> want;
        if (n > 0 && h.size() >= n) {
            std::set<std::vector<token_id>> grams;
            for (std::size_t i = 0; i + n <= h.size(); ++i)
                grams.insert(std::vector<token_id>(h.begin() + static_cast<std::ptrdiff_t>(i),
                                                   h.begin() + static_cast<std::ptrdiff_t>(i + n)));
            const std::vector<token_id> tail(h.end() - static_cast<std::ptrdiff_t>(n - 1), h.end());
            for (const auto& g : grams)
                if (std::equal(tail.begin(), tail.end(), g.begin()) && g.back() >= 0 &&
                    static_cast<std::size_t>(g.back()) < v)
                    want.insert(g.back());
        }
        INFO("trial " << trial);
        CHECK(ngram_bans(h, n, v) == want);
    }
}

TEST_CASE("banned sequences: Hugging Face bad_words_ids", "[processors][ngram]") {
    using S = std::set<token_id>;
    const std::vector<std::vector<token_id>> seqs = {
        {5}, {1, 2, 3}, {2, 4}, {}, {7, -1}, {1, 99}, {0, 0, 0, 0, 9}, {big}, {small, 6}};
    // {5} always; {1,2,3}: history ends with 1 2 -> 3; {2,4}: ends with 2 -> 4.
    CHECK(seq_bans({0, 1, 2}, seqs) == S{3, 4, 5});
    // Ends with 1: {1, 99} would ban 99 (out of range, ignored).
    CHECK(seq_bans({2, 1}, seqs) == S{5});
    // Empty history: only single-token sequences.
    CHECK(seq_bans({}, seqs) == S{5});
    // A prefix longer than the history never matches; a full match elsewhere does not count.
    CHECK(seq_bans({0, 0, 0}, {{0, 0, 0, 0, 9}}).empty());
    CHECK(seq_bans({0, 0, 0, 0}, {{0, 0, 0, 0, 9}}) == S{9});
    CHECK(seq_bans({1, 2, 3, 0}, {{1, 2, 3}}).empty());
    // Out-of-range prefix ids compare like values.
    CHECK(seq_bans({small}, seqs) == S{5, 6});
    CHECK(seq_bans({0, 1, 2}, {}).empty());
}

TEST_CASE("logit bias: adds, bans, ignores bad ids and NaN biases", "[processors][bias]") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::vector<float> x = {0.f, 1.f, 2.f, 3.f, nan, -inf, inf, 7.f};
    const std::vector<logit_bias> b = {{0, 1.5f},  {1, -inf},    {2, 0.25f}, {2, 0.25f}, {3, nan},
                                       {4, 1.f},   {5, inf},     {6, -inf},  {-1, 5.f},  {8, 5.f},
                                       {big, 1.f}, {small, 1.f}, {7, -2.f}};
    apply_logit_bias(x, b);
    CHECK(x[0] == 1.5f);
    CHECK(x[1] == -inf);
    CHECK(x[2] == 2.5f);  // two biases add up
    CHECK(x[3] == 3.f);   // NaN bias ignored
    CHECK(std::isnan(x[4]));
    CHECK(x[5] == -inf);  // +inf bias does not revive a ban (and makes no NaN)
    CHECK(x[6] == -inf);  // -inf bias bans even +inf
    CHECK(x[7] == 5.f);
    std::vector<float> y = {1.f};
    apply_logit_bias(y, {});
    CHECK(y[0] == 1.f);
}

TEST_CASE("banned tokens and min length", "[processors][bias]") {
    const auto before = iota_row(8);
    auto x = before;
    const std::vector<token_id> banned = {1, 6, -3, 8, big, 1};
    apply_banned_tokens(x, banned);
    CHECK(banned_ids(x, before) == std::set<token_id>{1, 6});

    const std::vector<token_id> eos = {2, 7, -1, 100};
    x = before;
    apply_min_length(x, 3, 4, eos);  // 3 < 4: suppressed
    CHECK(banned_ids(x, before) == std::set<token_id>{2, 7});
    x = before;
    apply_min_length(x, 4, 4, eos);  // reached: unchanged
    CHECK(x == before);
    apply_min_length(x, 0, 0, eos);
    CHECK(x == before);
    apply_min_length(x, 0, 5, {});
    CHECK(x == before);
}

TEST_CASE("allowed tokens: small and large lists", "[processors][bias]") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    SECTION("small list, duplicates, bad ids, NaN kept") {
        auto x = iota_row(8);
        x[3] = nan;
        const std::vector<token_id> allowed = {3, 5, 5, -1, 8, big, 0};
        apply_allowed_tokens(x, allowed);
        CHECK(x[0] == 0.5f);
        CHECK(std::isnan(x[3]));
        CHECK(x[5] == 5.5f);
        for (std::size_t i : {1u, 2u, 4u, 6u, 7u}) CHECK(x[i] == -inf);
    }
    SECTION("empty list: no restriction; only bad ids: everything banned") {
        auto x = iota_row(8);
        apply_allowed_tokens(x, {});
        CHECK(x == iota_row(8));
        apply_allowed_tokens(x, std::vector<token_id>{-5, 9});
        for (float e : x) CHECK(e == -inf);
    }
    SECTION("both paths (<= 256 ids and larger, several bitmask blocks) equal a naive mask") {
        std::mt19937 gen(7);
        for (std::size_t v : {1u, 300u, 65536u, 65537u, 140000u}) {
            for (std::size_t count : {1u, 200u, 256u, 257u, 5000u}) {
                std::vector<token_id> allowed(count);
                for (auto& t : allowed)
                    t = static_cast<token_id>(gen() % (v + 10)) - 5;  // some out of range
                std::vector<float> x = iota_row(v), want(v, -inf);
                for (token_id t : allowed)
                    if (t >= 0 && static_cast<std::size_t>(t) < v)
                        want[static_cast<std::size_t>(t)] = x[static_cast<std::size_t>(t)];
                apply_allowed_tokens(x, allowed);
                INFO("v = " << v << ", count = " << count);
                CHECK(x == want);
            }
        }
    }
}
}  // namespace dk_t_processors_masks
