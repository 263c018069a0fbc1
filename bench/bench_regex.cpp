// The regular-expression constraint of examples/regex (PCRE2; this file is built only when PCRE2
// is found): the cost of one allowed() query after a 130-byte text, for a token that needs a
// match (backtracking with the JIT, or the DFA matcher) and for one the first-byte cache refuses,
// and the cost of every token's verdict after a state change (what a sampler pays when its
// pipeline needs the full mask) for 512 and 32000 tokens. Items are queries.
#include "../examples/regex/regex_constraint.hpp"

#include <benchmark/benchmark.h>

#include <string>
#include <vector>

namespace {

using decodekit::token_id;

// Tokens: 0 "", 1 BOS, 2 EOS, 3..258 the bytes, then " " + lowercase words (deterministic).
dk_regex::vocabulary words(std::size_t n) {
    dk_regex::vocabulary v;
    v.bytes = {"", "<s>", "</s>"};
    for (int b = 0; b < 256; ++b) v.bytes.push_back(std::string(1, char(b)));
    std::uint64_t x = 88172645463325252ull;
    while (v.bytes.size() < n) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        std::string w = " ";
        for (std::size_t k = 1 + x % 8; k > 0; --k) w += char('a' + (x >> (5 * k)) % 26);
        v.bytes.push_back(w);
    }
    v.bos_id = 1;
    v.eos_ids = {2};
    return v;
}

const char* story =
    ", in a small house, there lived a little boy named Tim. Tim loved to play in the store with "
    "his mommy. He would run and jump, and";

// A constraint whose text is `story` (the prompt is BOS), on `pattern`.
struct fixture {
    dk_regex::regex_constraint c;
    std::vector<token_id> history;
    decodekit::processor_context ctx() const { return {.history = history, .prompt_length = 1}; }
};

fixture make(const char* pattern, std::size_t vocab, std::uint32_t backtrack_limit = 100'000) {
    auto v = words(vocab);
    // the story as byte tokens (ids 3 + byte)
    std::vector<token_id> h{1};
    for (const char* p = story; *p; ++p) h.push_back(token_id(3 + static_cast<unsigned char>(*p)));
    auto c = dk_regex::regex_constraint::compile(pattern, std::move(v),
                                                 {.backtrack_limit = backtrack_limit});
    fixture f{std::move(c.value()), std::move(h)};
    f.c.reset(f.ctx());
    return f;
}

const char* plain = ",( [A-Za-z]+[,.!?]?)+";        // unambiguous: one path
const char* ambiguous = ", ( ?[A-Za-z]+[,.!?]?)+";  // words may split: the DFA matcher

// A token that needs a match: " little" (a word token) after the text.
void run_query(benchmark::State& state, const char* pattern, std::uint32_t limit) {
    fixture f = make(pattern, 512, limit);
    token_id t = 259;
    while (f.c.vocab().bytes[std::size_t(t)].size() < 4) ++t;  // a word of 3+ letters
    const auto ctx = f.ctx();
    for (auto _ : state) benchmark::DoNotOptimize(f.c.allowed(t, ctx));
    state.SetItemsProcessed(state.iterations());
    state.counters["allowed"] = f.c.allowed(t, ctx);
}

void BM_regex_query_match(benchmark::State& state) { run_query(state, plain, 100'000); }
void BM_regex_query_match_dfa(benchmark::State& state) { run_query(state, ambiguous, 1); }

// A token refused by the first-byte cache ("5").
void BM_regex_query_cached_refusal(benchmark::State& state) {
    fixture f = make(plain, 512);
    const auto ctx = f.ctx();
    const token_id five = 3 + '5';
    for (auto _ : state) benchmark::DoNotOptimize(f.c.allowed(five, ctx));
    state.SetItemsProcessed(state.iterations());
}

// Every token's verdict after a state change (the text rebuilt, caches cleared).
void BM_regex_full_mask(benchmark::State& state) {
    const std::size_t V = std::size_t(state.range(0));
    fixture f = make(state.range(1) ? ambiguous : plain, V, state.range(1) ? 1 : 100'000);
    const auto ctx = f.ctx();
    std::size_t allowed = 0;
    for (auto _ : state) {
        f.c.reset(ctx);
        allowed = 0;
        for (token_id t = 0; t < token_id(V); ++t) allowed += f.c.allowed(t, ctx);
        benchmark::DoNotOptimize(allowed);
    }
    state.SetItemsProcessed(state.iterations() * std::int64_t(V));
    state.counters["allowed"] = double(allowed);
}

}  // namespace

BENCHMARK(BM_regex_query_match);
BENCHMARK(BM_regex_query_match_dfa);
BENCHMARK(BM_regex_query_cached_refusal);
BENCHMARK(BM_regex_full_mask)
    ->ArgNames({"V", "dfa"})
    ->Args({512, 0})
    ->Args({32000, 0})
    ->Args({32000, 1})
    ->Unit(benchmark::kMicrosecond);
