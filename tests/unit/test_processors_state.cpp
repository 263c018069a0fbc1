// The built-in processors as processor-concept types (processors/processor.hpp), driven through a
// history_tracker exactly as a pipeline drives them (sync, then reset or cut_back + append, then
// apply): each equals its free function on the same history after every kind of history change
// (append one or several tokens, cut back, replace, deep cut-back, rewrite, prompt change, reset,
// fork then diverge), for every penalty scope and window, on random histories; the incremental
// counts and n-gram index equal a recount; touched() covers every id apply() changes and apply()
// reads no other (NaN sentinels); Hugging Face's banned-words/EOS rule; and the per-call work
// (counted operations, not time) does not grow with the history length.
#include "dk_test.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <string_view>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_processors_state {

using namespace decodekit;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
constexpr float qnan = std::numeric_limits<float>::quiet_NaN();

bool same(float a, float b) {
    return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b) ||
           (std::isnan(a) && std::isnan(b));
}

/// A pipeline of one processor, as the processor stage drives it.
template <class P>
struct driver {
    P p;
    history_tracker tracker{64};  // a short journal: deep cut-backs take the rebuild path
    int rebuilds = 0;
    std::vector<token_id> seen{};  // the history of the previous call

    static processor_context context(std::span<const token_id> h, std::size_t prompt,
                                     std::size_t v) {
        return {.history = h, .prompt_length = prompt, .vocab_size = v};
    }
    void sync(const processor_context& c) {
        if constexpr (history_follower<P>) {
            history_change ch = tracker.sync(c.history);
            if (!ch.rebuild && !replays(ch, c.history)) {
                // the tracker's documented blind spot (a change deeper than its checked tail,
                // under an identical tail): callers that rewrite reset; so does this driver
                tracker.reset();
                ch = tracker.sync(c.history);
            }
            seen.assign(c.history.begin(), c.history.end());
            if (ch.rebuild) {
                p.reset(c);
                ++rebuilds;
            } else {
                p.cut_back(ch.keep, ch.removed, c);
                p.append(ch.added, c);
            }
        }
    }
    /// True when the reported change turns the previous history into `h`.
    bool replays(const history_change& ch, std::span<const token_id> h) const {
        if (ch.keep > seen.size() || ch.removed.size() != seen.size() - ch.keep) return false;
        if (!std::equal(ch.removed.begin(), ch.removed.end(),
                        seen.begin() + std::ptrdiff_t(ch.keep)))
            return false;
        std::vector<token_id> r(seen.begin(), seen.begin() + std::ptrdiff_t(ch.keep));
        r.insert(r.end(), ch.added.begin(), ch.added.end());
        return std::equal(r.begin(), r.end(), h.begin(), h.end());
    }
    std::vector<float> run(std::vector<float> x, const processor_context& c) {
        sync(c);
        p.apply(x, c);
        return x;
    }
};

/// The ids a processor declares for a call (ids outside [0, v) dropped, as a pipeline does).
template <class P>
std::vector<char> declared(const P& p, const processor_context& c) {
    std::vector<char> m(c.vocab_size, 0);
    token_sink sink(
        [](void* ctx, token_id t) noexcept {
            auto& v = *static_cast<std::vector<char>*>(ctx);
            if (t >= 0 && std::size_t(t) < v.size()) v[std::size_t(t)] = 1;
        },
        &m);
    p.touched(c, sink);
    return m;
}

/// A random history that changes in every way a sequence's history can.
struct walk {
    std::mt19937_64 rng;
    std::size_t vocab;
    token_id alphabet;
    std::vector<token_id> h;
    std::size_t prompt = 0;

    walk(std::uint64_t seed, std::size_t v, token_id a) : rng(seed), vocab(v), alphabet(a) {}
    token_id token() {
        switch (rng() % 40) {  // a few ids outside [0, V): compared, never written
            case 0:
                return -1;
            case 1:
                return token_id(vocab);
            case 2:
                return std::numeric_limits<token_id>::max();
            default:
                return token_id(rng() % std::uint64_t(alphabet));
        }
    }
    std::size_t below(std::size_t n) { return n == 0 ? 0 : std::size_t(rng() % n); }
    /// One change; returns what it was (for the failure message).
    const char* change() {
        const int op = int(rng() % 100);
        if (op < 35 || h.size() < 4) {
            h.push_back(token());
            return "append one";
        }
        if (op < 55) {
            for (std::size_t k = 2 + below(20); k > 0; --k) h.push_back(token());
            return "append several";
        }
        if (op < 70) {
            h.resize(h.size() - 1 - below(std::min<std::size_t>(h.size(), 30)));
            return "cut back";
        }
        if (op < 80) {
            const std::size_t k = 1 + below(std::min<std::size_t>(h.size(), 12));
            h.resize(h.size() - k);
            for (std::size_t i = 0; i < k + below(3); ++i) h.push_back(token());
            return "replace";
        }
        if (op < 84) {
            h.resize(h.size() - below(std::min<std::size_t>(h.size(), 200)));
            return "deep cut back";
        }
        if (op < 87) {  // a slot reused for another sequence: its caller resets (history.hpp)
            for (auto& t : h) t = token();
            return "rewrite";
        }
        if (op < 93) {
            prompt = below(h.size() + 3);
            return "prompt change";
        }
        if (op < 96) {
            h.clear();
            prompt = 0;
            return "empty";
        }
        return "same history";
    }
    std::vector<float> row() {
        std::vector<float> x(vocab);
        std::normal_distribution<float> g(0.f, 3.f);
        for (float& v : x) {
            switch (rng() % 50) {
                case 0:
                    v = qnan;
                    break;
                case 1:
                    v = inf;
                    break;
                case 2:
                    v = -inf;
                    break;
                case 3:
                    v = 0.f;
                    break;
                default:
                    v = g(rng);
            }
        }
        return x;
    }
};

/// One change of the walk, reported to the driver as a pipeline's caller would.
template <class P>
const char* change(driver<P>& d, walk& w) {
    const char* what = w.change();
    if (std::string_view(what) == "rewrite") d.tracker.reset();
    return what;
}

/// Checks one call: apply() equals the reference; touched() covers every changed id, and apply()
/// on a row holding NaN outside the declared ids gives the same declared entries.
template <class P, class Ref>
void check_call(driver<P>& d, walk& w, Ref&& ref, const char* what) {
    const processor_context c = driver<P>::context(w.h, w.prompt, w.vocab);
    const std::vector<float> x = w.row();
    const std::vector<float> got = d.run(x, c);
    std::vector<float> want = x;
    ref(std::span<float>(want), c);
    INFO("change: " << what << ", history " << w.h.size() << ", prompt " << w.prompt);
    std::size_t bad = npos;
    for (std::size_t i = 0; i < x.size() && bad == npos; ++i)
        if (!same(got[i], want[i])) bad = i;
    INFO("first difference at id " << bad);
    REQUIRE(bad == npos);
    if constexpr (sparse_logits_processor<P>) {
        const std::vector<char> m = declared(d.p, c);
        std::vector<float> sparse(x.size(), qnan);
        for (std::size_t i = 0; i < x.size(); ++i)
            if (m[i]) sparse[i] = x[i];
        d.p.apply(std::span<float>(sparse), c);
        std::size_t unread = npos, undeclared = npos;
        for (std::size_t i = 0; i < x.size(); ++i) {
            if (m[i] && !same(sparse[i], want[i]) && unread == npos) unread = i;
            if (!m[i] && !same(want[i], x[i]) && undeclared == npos) undeclared = i;
        }
        INFO("declared id whose result read an undeclared entry: " << unread);
        REQUIRE(unread == npos);
        INFO("undeclared id that apply() changed: " << undeclared);
        REQUIRE(undeclared == npos);
    }
}

/// Drives a processor over a random walk of history changes, with forks, against `ref`; after
/// each call `recount(p, c)` may check its state.
template <class P, class Ref, class Recount>
void walk_against(const P& proto, Ref ref, Recount recount, std::uint64_t seed, int steps,
                  std::size_t vocab = 40, token_id alphabet = 6) {
    walk w(seed, vocab, alphabet);
    driver<P> d{proto};
    for (int s = 0; s < steps; ++s) {
        const char* what = change(d, w);
        if (s % 97 == 50) {
            d.tracker.reset();  // a pipeline reset: the next sync rebuilds
            what = "reset";
        }
        check_call(d, w, ref, what);
        recount(d.p, driver<P>::context(w.h, w.prompt, w.vocab));
        if (s % 61 == 30) {  // fork: the copy and the original diverge, each stays exact
            driver<P> child = d;
            walk wc = w;
            wc.rng.seed(seed * 31 + std::uint64_t(s));
            for (int k = 0; k < 12; ++k) {
                const char* cw = change(child, wc);
                check_call(child, wc, ref, cw);
                recount(child.p, driver<P>::context(wc.h, wc.prompt, wc.vocab));
                if (k % 3 == 0) {
                    check_call(d, w, ref, change(d, w));
                    recount(d.p, driver<P>::context(w.h, w.prompt, w.vocab));
                }
            }
        }
    }
    if constexpr (history_follower<P>) CHECK(d.rebuilds > 0);  // the rebuild path was taken too
}

/// Naive counts of a penalty window.
std::map<token_id, std::uint32_t> recount_window(const processor_context& c, penalty_scope s,
                                                 std::size_t last_n) {
    std::map<token_id, std::uint32_t> m;
    for (token_id t : detail::penalty_window(c.history, c.prompt_length, s, last_n)) ++m[t];
    return m;
}
void check_counts(const token_counts* k, const std::map<token_id, std::uint32_t>& want) {
    REQUIRE(k != nullptr);
    REQUIRE(k->size() == want.size());
    for (auto [t, n] : want) REQUIRE(k->count(t) == n);
}

}  // namespace

TEST_CASE("token_counts equals a map under random adds and removes", "[processors][state]") {
    // Deletion by backward shift is the delicate part: many distinct keys at load up to 1/2, and
    // removals that empty entries in the middle of probe clusters.
    std::mt19937_64 rng(7);
    token_counts k;
    std::map<token_id, std::uint32_t> m;
    for (int it = 0; it < 200000; ++it) {
        const token_id t = token_id(rng() % 3000) - 1000;  // negative ids are keys like others
        if (rng() % 5 < 3) {
            k.add(t);
            ++m[t];
        } else {
            const bool had = m.count(t) != 0;
            REQUIRE(k.remove(t) == had);
            if (had && --m[t] == 0) m.erase(t);
        }
        if (it % 5000 == 0) {
            REQUIRE(k.size() == m.size());
            for (std::size_t i = 0; i < k.size(); ++i)
                REQUIRE(m.at(k.tokens()[i]) == k.counts()[i]);
            token_counts copy = k;  // copies are independent
            copy.add(-5000);
            REQUIRE(k.count(-5000) == 0);
            REQUIRE(copy.count(-5000) == 1);
        }
    }
    for (auto [t, n] : m) REQUIRE(k.count(t) == n);
    k.clear();
    CHECK(k.empty());
    CHECK(k.count(5) == 0);
}

TEST_CASE("penalties_processor equals apply_penalties after every history change, every scope",
          "[processors][state][penalties]") {
    const penalty_scope scopes[] = {penalty_scope::whole_history, penalty_scope::last_n,
                                    penalty_scope::output_only};
    std::uint64_t seed = 1;
    for (penalty_scope rs : scopes)
        for (penalty_scope fs : scopes)
            for (std::size_t last_n :
                 {std::size_t{0}, std::size_t{1}, std::size_t{5}, std::size_t{64}}) {
                if (rs != penalty_scope::last_n && fs != penalty_scope::last_n && last_n != 64)
                    continue;  // last_n matters only with a last_n scope
                for (int variant = 0; variant < 3; ++variant) {
                    penalty_params p{.repetition = variant == 1 ? 1.f : 1.3f,
                                     .frequency = variant == 2 ? 0.f : 0.4f,
                                     .presence = variant == 2 ? 0.f : -0.3f,
                                     .repetition_scope = rs,
                                     .frequency_scope = fs,
                                     .last_n = last_n};
                    INFO("scopes " << int(rs) << "/" << int(fs) << ", last_n " << last_n
                                   << ", variant " << variant);
                    auto ref = [p](std::span<float> x, const processor_context& c) {
                        penalty_workspace ws(x.size());
                        apply_penalties(x, c.history, c.prompt_length, p, ws);
                    };
                    auto recount = [p](const penalties_processor& q, const processor_context& c) {
                        if (p.repetition != 1.f)
                            check_counts(q.repetition_counts(),
                                         recount_window(c, p.repetition_scope, p.last_n));
                        else
                            CHECK(q.repetition_counts() == nullptr);
                        if (p.frequency != 0.f || p.presence != 0.f)
                            check_counts(q.frequency_counts(),
                                         recount_window(c, p.frequency_scope, p.last_n));
                        else
                            CHECK(q.frequency_counts() == nullptr);
                    };
                    walk_against(penalties_processor(p), ref, recount, seed++, 400);
                    // a large alphabet: mostly distinct tokens (tables grow and shrink)
                    walk_against(penalties_processor(p), ref, recount, seed++, 200, 600, 500);
                }
            }
}

TEST_CASE("no_repeat_ngram_processor equals apply_no_repeat_ngram after every history change",
          "[processors][state][ngram]") {
    std::uint64_t seed = 100;
    for (std::size_t n : {1, 2, 3, 4, 7}) {
        INFO("n = " << n);
        auto ref = [n](std::span<float> x, const processor_context& c) {
            apply_no_repeat_ngram(x, c.history, n);
        };
        auto recount = [n](const no_repeat_ngram_processor& q, const processor_context& c) {
            if (n == 1) {
                std::set<token_id> s(c.history.begin(), c.history.end());
                REQUIRE(q.seen().size() == s.size());
                return;
            }
            std::set<std::vector<token_id>> grams;
            for (std::size_t i = 0; i + n <= c.history.size(); ++i)
                grams.emplace(c.history.begin() + std::ptrdiff_t(i),
                              c.history.begin() + std::ptrdiff_t(i + n));
            REQUIRE(q.index().size() == grams.size());
        };
        walk_against(no_repeat_ngram_processor(n), ref, recount, seed++, 500);
        walk_against(no_repeat_ngram_processor(n), ref, recount, seed++, 300, 40, 2);
        walk_against(no_repeat_ngram_processor(n), ref, recount, seed++, 200, 300, 250);
    }
    // n = 0 is disabled: nothing is ever changed or declared
    walk_against(
        no_repeat_ngram_processor(0), [](std::span<float>, const processor_context&) {},
        [](const no_repeat_ngram_processor&, const processor_context&) {}, seed, 50);
}

TEST_CASE("dry_processor equals apply_dry with the same window", "[processors][state][dry]") {
    std::uint64_t seed = 200;
    for (std::size_t last_n : {0, 10}) {
        for (std::size_t max_history : {0, 16}) {
            dry_params p{.multiplier = 0.8f,
                         .base = 1.75f,
                         .allowed_length = 2,
                         .penalty_last_n = last_n,
                         .sequence_breakers = {3, -1},
                         .sequence_breaker_sequences = {{4, 5}, {}}};
            INFO("last_n " << last_n << ", max_history " << max_history);
            auto ref = [p, max_history](std::span<float> x, const processor_context& c) {
                dry_workspace ws(x.size(), max_history);
                apply_dry(x, c.history, p, ws);
            };
            walk_against(
                dry_processor(p, max_history), ref,
                [](const dry_processor&, const processor_context&) {}, seed++, 300);
        }
    }
    // the thread's workspace grows with the vocabulary: a larger row after a smaller one
    dry_params p{.multiplier = 1.f};
    const dry_processor q(p);
    std::vector<token_id> h{1, 2, 3, 1, 2, 3, 1, 2};
    for (std::size_t v : {8, 5000, 16}) {
        std::vector<float> x(v, 1.f), y(v, 1.f);
        q.apply(x, {.history = h, .vocab_size = v});
        dry_workspace ws(v);
        apply_dry(y, h, p, ws);
        CHECK(x == y);
        CHECK(x[3] < 1.f);
    }
}

TEST_CASE("banned_sequences_processor: Hugging Face's rule, EOS is never banned by a word list",
          "[processors][state][ngram]") {
    // HF's own case: vocabulary 5, EOS 4, bad words [[1], [4], [1, 0], [0, 1, 2], [1, 3, 1, 3]].
    const std::vector<std::vector<token_id>> words{{1}, {4}, {1, 0}, {0, 1, 2}, {1, 3, 1, 3}};
    const std::vector<token_id> eos{4};
    const banned_sequences_processor q(words, eos);
    auto bans = [&](std::vector<token_id> h, const auto& proc) {
        std::vector<float> x(5, 0.f);
        proc.apply(x, {.history = h, .vocab_size = 5});
        std::vector<bool> b;
        for (float v : x) b.push_back(v == -inf);
        return b;
    };
    CHECK(bans({0, 1, 3, 1}, q) == std::vector<bool>{true, true, false, true, false});
    CHECK(bans({0, 1, 0, 1}, q) == std::vector<bool>{true, true, true, false, false});
    // HF's edge case: a list holding only [EOS] changes nothing
    const banned_sequences_processor only_eos({{4}}, eos);
    CHECK(bans({0, 1, 0, 1}, only_eos) == std::vector<bool>(5, false));
    CHECK(only_eos.single_tokens().empty());
    // negative control: without EOS ids (or with the free function) [4] is banned
    const banned_sequences_processor no_eos(std::vector<std::vector<token_id>>{{4}});
    CHECK(bans({0, 1, 0, 1}, no_eos) == std::vector<bool>{false, false, false, false, true});
    std::vector<float> x(5, 0.f);
    apply_banned_sequences(x, std::vector<token_id>{0}, words);
    CHECK(x[4] == -inf);
    // only one-token sequences are dropped: a longer sequence ending in EOS still bans it
    const banned_sequences_processor longer({{2, 4}}, eos);
    CHECK(bans({0, 2}, longer) == std::vector<bool>{false, false, false, false, true});
    // banned_tokens stays a deliberate ban that may include EOS
    const banned_tokens_processor deliberate({4});
    CHECK(bans({0}, deliberate) == std::vector<bool>{false, false, false, false, true});
}

TEST_CASE("banned_sequences_processor equals the free function on the kept sequences",
          "[processors][state][ngram]") {
    const std::vector<std::vector<token_id>> seqs{{1},       {5},     {2, 3}, {3, 3, 1},       {},
                                                  {0, 2},    {-1, 4}, {5, 5}, {1, 2, 3, 4, 5}, {40},
                                                  {2, 1, 40}};
    const std::vector<token_id> eos{5, 9};
    std::vector<std::vector<token_id>> kept;
    for (const auto& s : seqs)
        if (!(s.size() == 1 && (s[0] == 5 || s[0] == 9))) kept.push_back(s);
    auto ref = [kept](std::span<float> x, const processor_context& c) {
        apply_banned_sequences(x, c.history, kept);
    };
    walk_against(
        banned_sequences_processor(seqs, eos), ref,
        [](const banned_sequences_processor&, const processor_context&) {}, 300, 300);
}

TEST_CASE("stateless list processors equal their free functions", "[processors][state]") {
    const std::vector<token_id> list{3, 0, 3, -2, 40, 17, std::numeric_limits<token_id>::min()};
    auto nothing = [](const auto&, const processor_context&) {};
    SECTION("banned tokens") {
        walk_against(
            banned_tokens_processor(list),
            [&](std::span<float> x, const processor_context&) { apply_banned_tokens(x, list); },
            nothing, 400, 100);
    }
    SECTION("allowed tokens (dense: no touched())") {
        static_assert(!sparse_logits_processor<allowed_tokens_processor>);
        walk_against(
            allowed_tokens_processor(list),
            [&](std::span<float> x, const processor_context&) { apply_allowed_tokens(x, list); },
            nothing, 401, 100);
    }
    SECTION("logit bias") {
        const std::vector<logit_bias> b{{1, 2.f}, {1, -0.5f}, {7, -inf}, {-3, 1.f}, {45, 1.f}};
        walk_against(
            logit_bias_processor(b),
            [&](std::span<float> x, const processor_context&) { apply_logit_bias(x, b); }, nothing,
            402, 100);
    }
    SECTION("min length: EOS banned and declared only while generated < min_new_tokens") {
        const std::vector<token_id> eos{2, 39, 40};
        walk_against(
            min_length_processor(6, eos),
            [&](std::span<float> x, const processor_context& c) {
                apply_min_length(x, c.generated(), 6, eos);
            },
            [&](const min_length_processor& q, const processor_context& c) {
                const auto m = declared(q, c);
                CHECK(bool(m[2]) == (c.generated() < 6));
            },
            403, 200);
    }
}

TEST_CASE("processors reject bad configuration naming the field", "[processors][state]") {
    DK_IF_EXCEPTIONS(CHECK_THROWS_WITH(penalties_processor({.repetition = 0.f}),
                                       "penalty_params.repetition must be finite and > 0, got 0"));
    DK_IF_EXCEPTIONS(CHECK_THROWS_WITH(penalties_processor({.frequency = qnan}),
                                       "penalty_params.frequency must be finite, got nan"));
    DK_IF_EXCEPTIONS(CHECK_THROWS_WITH(dry_processor({.multiplier = 1.f, .base = 0.5f}),
                                       "dry_params.base must be finite and >= 1, got 0.5"));
    DK_IF_EXCEPTIONS(
        CHECK_THROWS_WITH(logit_bias_processor({{1, 1.f}, {2, qnan}}),
                          "logit_bias_processor: biases[1].bias must be not NaN, got nan"));
    CHECK(penalties_processor({}).repetition_counts() == nullptr);  // defaults: disabled
}

TEST_CASE("processors driven without their hooks stay exact (safety net)", "[processors][state]") {
    // A caller that never reports changes (or reports wrong sizes): apply() rebuilds when the
    // history length is not the one its state belongs to; touched() then declares a superset.
    const penalty_params p{.repetition = 1.5f, .frequency = 0.25f};
    penalties_processor q(p);
    no_repeat_ngram_processor g(2);
    std::vector<token_id> h{1, 2, 3, 1};
    for (int round = 0; round < 3; ++round) {
        const processor_context c{.history = h, .vocab_size = 8};
        const std::vector<char> mq = declared(q, c), mg = declared(g, c);
        CHECK(mq[1]);
        CHECK(mg[2]);
        std::vector<float> x(8, 1.f), y = x, gx = x, gy = x;
        q.apply(x, c);
        penalty_workspace ws(8);
        apply_penalties(y, h, 0, p, ws);
        CHECK(x == y);
        g.apply(gx, c);
        apply_no_repeat_ngram(gy, h, 2);
        CHECK(gx == gy);
        h.push_back(token_id(round + 2));
    }
    // wrong sizes in the hooks: the state is rebuilt, the result stays exact
    const processor_context c{.history = h, .vocab_size = 8};
    q.append(std::vector<token_id>{1, 1, 1}, c);          // more than the history grew
    q.cut_back(100, std::vector<token_id>{5}, c);         // keep beyond the history
    g.cut_back(2, std::vector<token_id>{7, 7, 7, 7}, c);  // not what was removed
    std::vector<float> x(8, 1.f), y = x, gx = x, gy = x;
    q.apply(x, c);
    penalty_workspace ws(8);
    apply_penalties(y, h, 0, p, ws);
    CHECK(x == y);
    g.apply(gx, c);
    apply_no_repeat_ngram(gy, h, 2);
    CHECK(gx == gy);
}

namespace {

/// Operations per call over `calls` calls once the history holds `at` tokens, generating step by
/// step over ids that cycle through `distinct` values spread over the vocabulary.
template <class P>
double ops_per_call(const P& proto, std::size_t at, std::size_t distinct, std::size_t v,
                    std::size_t calls = 64) {
    driver<P> d{proto};
    d.tracker = history_tracker();
    std::vector<token_id> h;
    h.reserve(at + calls);
    auto next = [&] { return token_id((h.size() % distinct) * 7919 % v); };
    while (h.size() < at) h.push_back(next());
    std::vector<float> x(v, 1.f);
    d.run(x, driver<P>::context(h, 0, v));
    const std::uint64_t before = d.p.operations();
    for (std::size_t i = 0; i < calls; ++i) {
        h.push_back(next());
        std::fill(x.begin(), x.end(), 1.f);
        d.sync(driver<P>::context(h, 0, v));
        d.p.apply(x, driver<P>::context(h, 0, v));
    }
    return double(d.p.operations() - before) / double(calls);
}

}  // namespace

TEST_CASE("per-call work does not grow with the history (100000 tokens, counted operations)",
          "[processors][state][cost]") {
    constexpr std::size_t v = 32000, small = 300, big = 100000;
    SECTION("last-64 repetition + frequency: O(window)") {
        const penalties_processor q({.repetition = 1.1f,
                                     .frequency = 0.1f,
                                     .repetition_scope = penalty_scope::last_n,
                                     .frequency_scope = penalty_scope::last_n,
                                     .last_n = 64});
        const double a = ops_per_call(q, small, 2000, v), b = ops_per_call(q, big, 2000, v);
        INFO("ops per call: " << a << " at 300, " << b << " at 100000");
        CHECK(b <= 1.5 * a);
        CHECK(b < 4 * 64);
    }
    SECTION("whole-history repetition + frequency: O(distinct tokens), not O(history)") {
        const penalties_processor q({.repetition = 1.1f, .frequency = 0.1f});
        // the same 200 distinct ids in both histories: the work depends on them, not the length
        const double a = ops_per_call(q, small, 200, v), b = ops_per_call(q, big, 200, v);
        INFO("ops per call: " << a << " at 300, " << b << " at 100000");
        CHECK(b <= 1.5 * a);
        // 2000 distinct ids: proportional to them (apply visits each once), never to 100000
        const double c = ops_per_call(q, big, 2000, v);
        INFO("2000 distinct: " << c);
        CHECK(c < 4 * 2000);
    }
    SECTION("output-only frequency: O(distinct generated tokens)") {
        const penalties_processor q(
            {.frequency = 0.2f, .presence = 0.1f, .frequency_scope = penalty_scope::output_only});
        const double a = ops_per_call(q, small, 200, v), b = ops_per_call(q, big, 200, v);
        INFO("ops per call: " << a << " at 300, " << b << " at 100000");
        CHECK(b <= 1.5 * a);
    }
    SECTION("no-repeat-ngram(3): O(n) per new token and per ban") {
        const no_repeat_ngram_processor q(3);
        const double a = ops_per_call(q, small, 200, v), b = ops_per_call(q, big, 200, v);
        INFO("ops per call: " << a << " at 300, " << b << " at 100000");
        CHECK(b <= 1.5 * a);
        const double c = ops_per_call(q, big, 2000, v);
        INFO("2000 distinct: " << c);
        CHECK(c < 64);
    }
    SECTION("no-repeat-ngram(1): the seen tokens") {
        const no_repeat_ngram_processor q(1);
        const double a = ops_per_call(q, small, 200, v), b = ops_per_call(q, big, 200, v);
        INFO("ops per call: " << a << " at 300, " << b << " at 100000");
        CHECK(b <= 1.5 * a);
    }
    SECTION("DRY declares its window only") {
        const dry_processor q({.multiplier = 0.8f, .penalty_last_n = 256});
        std::vector<token_id> h(big);
        for (std::size_t i = 0; i < big; ++i) h[i] = token_id(i % 300);
        const processor_context c{.history = h, .vocab_size = v};
        std::size_t n = 0;
        token_sink count([](void* k, token_id) noexcept { ++*static_cast<std::size_t*>(k); }, &n);
        q.touched(c, count);
        CHECK(n == 256);
    }
}

TEST_CASE("any_processor carries the built-in processors and their state", "[processors][state]") {
    std::vector<any_processor> ps{penalties_processor({.repetition = 2.f}),
                                  no_repeat_ngram_processor(2),
                                  dry_processor({.multiplier = 1.f}),
                                  banned_sequences_processor({{1, 2}}, std::vector<token_id>{}),
                                  allowed_tokens_processor({0, 1, 2, 3}),
                                  banned_tokens_processor({0}),
                                  logit_bias_processor({{1, 1.f}}),
                                  min_length_processor(1, {3})};
    CHECK(ps[0].follows_history());
    CHECK(ps[1].follows_history());
    CHECK_FALSE(ps[2].follows_history());
    CHECK_FALSE(ps[4].sparse());
    CHECK(ps[5].sparse());
    history_tracker t;
    std::vector<token_id> h{2, 1};
    auto step = [&](std::vector<any_processor>& list) {
        const processor_context c{.history = h, .prompt_length = 2, .vocab_size = 5};
        const history_change ch = t.sync(h);
        std::vector<float> x(5, 1.f);
        for (any_processor& p : list) {
            if (p.follows_history()) {
                if (ch.rebuild) {
                    p.reset(c);
                } else {
                    p.cut_back(ch.keep, ch.removed, c);
                    p.append(ch.added, c);
                }
            }
            p.apply(x, c);
        }
        return x;
    };
    // history {2, 1}, all prompt: allowed {0..3} bans 4, banned 0, bias +1 on 1, EOS 3 banned
    // (nothing generated), 1 and 2 repeated (x / 2); no bigram starts with the tail 1; the
    // banned sequence (1, 2) bans 2 after the tail 1; DRY needs more than 2 tokens.
    const std::vector<float> x = step(ps);
    CHECK(x[0] == -inf);
    CHECK(x[1] == 1.5f);  // 1 / 2 (penalties come first in this list), then + 1
    CHECK(x[2] == -inf);
    CHECK(x[3] == -inf);
    CHECK(x[4] == -inf);
    CHECK(ps[0].get<penalties_processor>()->repetition_counts()->size() == 2);
}
}  // namespace dk_t_processors_state
