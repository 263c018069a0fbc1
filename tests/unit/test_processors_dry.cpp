// DRY: hand-worked examples from llama.cpp's definition, sequence breakers, windows, overflow
// clamping, bad ids, special values, workspace reset, and a randomized cross-check against an
// O(N^2) reference written straight from the definition.
#include "dk_test.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_processors_dry {

using namespace decodekit;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

bool close(float a, float b) { return std::abs(a - b) <= 1e-5f * std::max(1.f, std::abs(b)); }

bool clean(const dry_workspace& ws) {
    return std::all_of(ws.max_repeat.begin(), ws.max_repeat.end(), [](auto c) { return c == 0; }) &&
           std::all_of(ws.is_breaker.begin(), ws.is_breaker.end(), [](auto c) { return c == 0; });
}

std::vector<float> run(const std::vector<token_id>& h, const dry_params& p, std::size_t v = 10,
                       std::size_t capacity = 0) {
    std::vector<float> x(v, 0.f);
    dry_workspace ws(v, capacity);
    apply_dry(x, h, p, ws);
    CHECK(clean(ws));
    return x;
}

// O(N^2) reference: for every earlier position p, n = the common suffix length of w[..p] and the
// whole window; the token after p would extend that repeat.
std::vector<float> naive(std::vector<float> x, const std::vector<token_id>& h, const dry_params& p,
                         std::size_t capacity) {
    std::size_t len = h.size();
    if (p.penalty_last_n) len = std::min(len, p.penalty_last_n);
    len = std::min(len, capacity);
    if (len <= p.allowed_length) return x;
    std::vector<token_id> w(h.end() - static_cast<std::ptrdiff_t>(len), h.end());
    const auto v = static_cast<token_id>(x.size());
    auto breaker = [&](token_id t) {  // single-token breaker
        if (t < 0 || t >= v) return false;
        if (std::find(p.sequence_breakers.begin(), p.sequence_breakers.end(), t) !=
            p.sequence_breakers.end())
            return true;
        for (const auto& s : p.sequence_breaker_sequences)
            if (s.size() == 1 && s[0] == t) return true;
        return false;
    };
    // A breaker occurrence: a single breaker at w[j], or a sequence s with s[0] == w[j] (in
    // range) and s[1..] == w[j+1..]; the one starting last wins, the longest there.
    auto head_ok = [&](token_id t) { return t >= 0 && t < v; };
    std::size_t rep_limit = len;
    for (std::size_t j = len; j-- > 0;) {
        std::size_t longest = 0;  // breaker length
        if (breaker(w[j])) longest = 1;
        for (const auto& s : p.sequence_breaker_sequences) {
            if (s.empty() || !head_ok(s[0]) || j + s.size() > len) continue;
            if (std::equal(s.begin(), s.end(), w.begin() + static_cast<std::ptrdiff_t>(j)))
                longest = std::max(longest, s.size());
        }
        if (longest > 0) {
            rep_limit = len - j - longest;
            break;
        }
    }
    if (rep_limit < p.allowed_length) return x;
    std::map<token_id, std::size_t> best;
    for (std::size_t q = 0; q + 1 < len; ++q) {
        std::size_t n = 0;
        while (n <= q && w[q - n] == w[len - 1 - n]) ++n;
        n = std::min(n, rep_limit);
        const token_id t = w[q + 1];
        if (n >= p.allowed_length && t >= 0 && t < v && !breaker(t)) best[t] = std::max(best[t], n);
    }
    for (auto [t, n] : best) {
        double e = static_cast<double>(n - p.allowed_length);
        if (p.base > 1.000001f) e = std::min(e, std::floor(88.7228391 / std::log(p.base)));
        x[static_cast<std::size_t>(t)] -= static_cast<float>(p.multiplier * std::pow(p.base, e));
    }
    return x;
}

std::vector<float> zeros_except(std::map<std::size_t, float> m, std::size_t v = 10) {
    std::vector<float> x(v, 0.f);
    for (auto [i, y] : m) x[i] = y;
    return x;
}

void check_row(const std::vector<float>& got, const std::vector<float>& want) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("token " << i << ": got " << got[i] << ", want " << want[i]);
        CHECK(close(got[i], want[i]));
    }
}

}  // namespace

TEST_CASE("dry: hand-worked examples (llama.cpp definition)", "[processors][dry]") {
    SECTION("1 2 3 4 1 2 3: the suffix 1 2 3 (n = 3) was followed by 4 -> 1.75^(3-2)") {
        check_row(run({1, 2, 3, 4, 1, 2, 3}, {.multiplier = 1.f}), zeros_except({{4, -1.75f}}));
    }
    SECTION("llama.cpp's comment example a b c c b c y a b c") {
        // a=1 b=2 c=3 y=7. Repeat counts 0 0 3 1 0 2 0 0 0 0: c follows a repeat of 3, b of 1,
        // y of 2. allowed 2, multiplier 0.8: c -0.8*1.75, y -0.8*1.75^0, b free (1 < 2).
        const std::vector<token_id> h = {1, 2, 3, 3, 2, 3, 7, 1, 2, 3};
        check_row(run(h, {.multiplier = 0.8f}), zeros_except({{3, -1.4f}, {7, -0.8f}}));
        // allowed 1, base 2: c 2^(3-1), b 2^0, y 2^(2-1).
        check_row(run(h, {.multiplier = 1.f, .base = 2.f, .allowed_length = 1}),
                  zeros_except({{3, -4.f}, {2, -1.f}, {7, -2.f}}));
    }
    SECTION("a long run of one token: n = len - 1") {
        // 5 5 5 5 5 5: the suffix of length 5 occurred ending one position earlier, followed by 5.
        check_row(run({5, 5, 5, 5, 5, 5}, {.multiplier = 1.f, .base = 2.f}),
                  zeros_except({{5, -8.f}}));
    }
    SECTION("window no longer than allowed_length: nothing") {
        check_row(run({4, 4}, {.multiplier = 1.f}), zeros_except({}));
        check_row(run({}, {.multiplier = 1.f}), zeros_except({}));
    }
    SECTION("disabled by default") {
        CHECK_FALSE(dry_params{}.enabled());
        check_row(run({1, 2, 3, 4, 1, 2, 3}, {}), zeros_except({}));
    }
    SECTION("base 1: every penalty equals the multiplier") {
        check_row(run({1, 2, 3, 4, 1, 2, 3, 9, 1, 2, 3}, {.multiplier = 0.5f, .base = 1.f}),
                  zeros_except({{4, -0.5f}, {9, -0.5f}}));
    }
}

TEST_CASE("dry: sequence breakers", "[processors][dry]") {
    const std::vector<token_id> h = {1, 2, 3, 4, 1, 2, 3};
    SECTION("a breaker 2 tokens from the end caps n at 2 -> 1.75^0") {
        check_row(run(h, {.multiplier = 1.f, .sequence_breakers = {1}}), zeros_except({{4, -1.f}}));
    }
    SECTION("a breaker is never penalised itself") {
        check_row(run(h, {.multiplier = 1.f, .sequence_breakers = {4}}), zeros_except({}));
    }
    SECTION("a breaker as the last token: fewer than allowed_length tokens after it") {
        check_row(run(h, {.multiplier = 1.f, .sequence_breakers = {3}}), zeros_except({}));
    }
    SECTION("breakers absent from the window change nothing; out-of-range ones are ignored") {
        check_row(run(h, {.multiplier = 1.f, .sequence_breakers = {8, -1, 10, 1000}}),
                  zeros_except({{4, -1.75f}}));
    }
}

TEST_CASE("dry: multi-token sequence breakers", "[processors][dry]") {
    // 7 8 1 2 3 4 7 8 1 2 3: the suffix 7 8 1 2 3 (n = 5) was followed by 4.
    const std::vector<token_id> h = {7, 8, 1, 2, 3, 4, 7, 8, 1, 2, 3};
    auto pen = [&](dry_params p) {
        p.multiplier = 1.f;
        return run(h, p)[4];
    };
    CHECK(close(pen({}), -1.75f * 1.75f * 1.75f));  // 1.75^(5-2)
    // Breaker 7 8 ends 3 tokens from the end: n capped at 3 -> 1.75^1.
    CHECK(close(pen({.sequence_breaker_sequences = {{7, 8}}}), -1.75f));
    // Single breaker 7 (4 tokens from the end): n capped at 4 -> 1.75^2.
    CHECK(close(pen({.sequence_breakers = {7}}), -1.75f * 1.75f));
    CHECK(close(pen({.sequence_breaker_sequences = {{7}}}), -1.75f * 1.75f));
    // Both start at the same place: the longer wins.
    CHECK(close(pen({.sequence_breakers = {7}, .sequence_breaker_sequences = {{7, 8}}}), -1.75f));
    // A tail that does not match breaks nothing; empty sequences and bad heads are ignored.
    CHECK(close(pen({.sequence_breaker_sequences = {{7, 9}, {}, {-1, 8}, {50, 8}}}),
                -1.75f * 1.75f * 1.75f));
    // The first token of a longer breaker is penalised like any token (4 9 never occurs).
    CHECK(close(pen({.sequence_breaker_sequences = {{4, 9}}}), -1.75f * 1.75f * 1.75f));
    // A breaker ending the window: rep_limit 0, nothing.
    CHECK(pen({.sequence_breaker_sequences = {{2, 3}}}) == 0.f);
    // A breaker longer than the window suffix it would need is not found.
    CHECK(close(pen({.sequence_breaker_sequences = {{3, 5, 6}}}), -1.75f * 1.75f * 1.75f));
}

TEST_CASE("dry: window limits (penalty_last_n and workspace capacity)", "[processors][dry]") {
    const std::vector<token_id> h = {1, 2, 3, 4, 1, 2, 3};
    // Last 6 = 2 3 4 1 2 3: suffix 2 3 (n = 2) followed by 4 -> 1.75^0.
    check_row(run(h, {.multiplier = 1.f, .penalty_last_n = 6}), zeros_except({{4, -1.f}}));
    // Last 5 = 3 4 1 2 3: suffix 3 (n = 1 < 2) -> nothing.
    check_row(run(h, {.multiplier = 1.f, .penalty_last_n = 5}), zeros_except({}));
    // A workspace for 6 tokens uses the most recent 6.
    check_row(run(h, {.multiplier = 1.f}, 10, 6), zeros_except({{4, -1.f}}));
    CHECK(dry_workspace(10).max_history() == dry_workspace::default_max_history);
}

TEST_CASE("dry: the penalty never overflows", "[processors][dry]") {
    const std::vector<token_id> h(1000, 5);  // n = 999, exponent 997: 1.75^997 overflows
    auto x = run(h, {.multiplier = 1.f});
    CHECK(std::isfinite(x[5]));
    CHECK(x[5] < -1e38f);  // clamped exponent floor(88.72 / ln 1.75) = 158: 1.75^158 ~ 2.7e38
    x = run(h, {.multiplier = 100.f});
    CHECK(x[5] == -FLT_MAX);  // penalty clamped to FLT_MAX, logit saturates
    std::vector<float> y(10, -1e38f);
    dry_workspace ws(10);
    apply_dry(y, h, {.multiplier = 1.f}, ws);
    CHECK(y[5] == -FLT_MAX);  // finite - huge stays finite
}

TEST_CASE("dry: ids outside [0, V) in the history are never penalised", "[processors][dry]") {
    // -3 takes part in matching like any value: suffix 1 2 -3 (n = 3) was followed by 1.
    check_row(run({1, 2, -3, 1, 2, -3}, {.multiplier = 1.f}), zeros_except({{1, -1.75f}}));
    // The token that would extend the repeat is 50 (>= V): nothing to penalise, no crash.
    check_row(run({1, 2, 50, 1, 2}, {.multiplier = 1.f}), zeros_except({}));
    check_row(run({std::numeric_limits<token_id>::min(), 7, std::numeric_limits<token_id>::max(),
                   std::numeric_limits<token_id>::min(), 7},
                  {.multiplier = 1.f}),
              zeros_except({}));
}

TEST_CASE("dry: NaN and infinite logits are left as they are", "[processors][dry]") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    // 5 0 5 1 5 2 5 3 5, allowed 1: the suffix 5 (n = 1) was followed by 0, 1, 2 and 3, each
    // penalised by the multiplier; 0, 1, 2 hold NaN, +inf, -inf and keep them.
    const std::vector<token_id> h = {5, 0, 5, 1, 5, 2, 5, 3, 5};
    std::vector<float> x = {nan, inf, -inf, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    dry_workspace ws(10);
    apply_dry(x, h, {.multiplier = 1.f, .allowed_length = 1}, ws);
    CHECK(std::isnan(x[0]));
    CHECK(x[1] == inf);
    CHECK(x[2] == -inf);
    CHECK(x[3] == -1.f);  // control: a finite logit is penalised
    CHECK(x[4] == 0.f);
    CHECK(x[5] == 0.f);
    CHECK(clean(ws));
}

TEST_CASE("dry: the workspace reset makes repeated calls independent", "[processors][dry]") {
    const dry_params p{.multiplier = 0.7f, .sequence_breakers = {9}};
    dry_workspace ws(10);
    const std::vector<token_id> a = {1, 2, 3, 4, 1, 2, 3}, b = {9, 5, 6, 5, 6, 5, 6};
    std::vector<float> xa(10, 0.f), xb(10, 0.f), xa2(10, 0.f);
    apply_dry(xa, a, p, ws);
    apply_dry(xb, b, p, ws);
    CHECK(clean(ws));
    apply_dry(xa2, a, p, ws);
    CHECK(xa == xa2);
    CHECK(xb == run(b, p));
    CHECK(xa != xb);  // negative control: the two histories do differ
}

TEST_CASE("dry: random histories match the O(N^2) definition", "[processors][dry]") {
    std::mt19937 gen(99);
    for (int trial = 0; trial < 400; ++trial) {
        const std::size_t v = 2 + gen() % 6;  // small alphabets: many repeats
        std::vector<token_id> h(gen() % 60);
        for (auto& t : h) t = static_cast<token_id>(gen() % (v + 2)) - 1;
        dry_params p{.multiplier = 0.25f + static_cast<float>(gen() % 8) / 4.f,
                     .base = 1.f + static_cast<float>(gen() % 4) / 4.f,
                     .allowed_length = 1 + gen() % 4,
                     .penalty_last_n = gen() % 3 == 0 ? 0 : gen() % 70};
        if (gen() % 2) p.sequence_breakers.push_back(static_cast<token_id>(gen() % v));
        for (int b = static_cast<int>(gen() % 3); b > 0; --b) {
            std::vector<token_id> s(gen() % 4);
            for (auto& t : s) t = static_cast<token_id>(gen() % (v + 1));
            p.sequence_breaker_sequences.push_back(s);
        }
        const std::size_t capacity = gen() % 4 == 0 ? 1 + gen() % 50 : 128;
        std::vector<float> x(v);
        for (auto& e : x) e = static_cast<float>(static_cast<int>(gen() % 21) - 10) / 4.f;
        std::vector<float> got = x;
        dry_workspace ws(v, capacity);
        apply_dry(got, h, p, ws);
        CHECK(clean(ws));
        INFO("trial " << trial);
        check_row(got, naive(x, h, p, capacity));
    }
}

TEST_CASE("dry_params: check() names the field and range", "[processors][dry]") {
    CHECK_FALSE(dry_params{}.check());
    CHECK_FALSE(dry_params{.multiplier = 0.8f}.check());
    CHECK(dry_params{.multiplier = 0.8f}.enabled());
    const auto m = dry_params{.multiplier = -1.f}.check();
    REQUIRE(m);
    CHECK(m->find("dry_params.multiplier") != std::string::npos);
    CHECK(dry_params{.multiplier = inf}.check());
    CHECK(dry_params{.base = 0.5f}.check()->find("dry_params.base") != std::string::npos);
    CHECK(dry_params{.allowed_length = 0}.check()->find("allowed_length") != std::string::npos);
    DK_IF_EXCEPTIONS(REQUIRE_THROWS_AS(dry_params{.base = 0.f}.validate(), config_error);)
}
}  // namespace dk_t_processors_dry
