// history_tracker: how per-sequence state follows its history (append, cut back, replace,
// rebuild), and any_processor's type erasure of the processor concept.
#include "dk_test.hpp"

#include <random>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_processors_history {

using namespace decodekit;

namespace {
std::vector<token_id> v(std::span<const token_id> s) { return {s.begin(), s.end()}; }
}  // namespace

TEST_CASE("history_tracker reports appends, cut-backs and replacements", "[history]") {
    history_tracker t(16);
    std::vector<token_id> h{1, 2, 3};
    auto c = t.sync(h);
    CHECK(c.rebuild);  // first call
    CHECK(v(c.added) == h);
    h.insert(h.end(), {4, 5});
    c = t.sync(h);
    CHECK_FALSE(c.rebuild);
    CHECK(c.keep == 3);
    CHECK(c.removed.empty());
    CHECK(v(c.added) == std::vector<token_id>{4, 5});
    c = t.sync(h);  // unchanged
    CHECK_FALSE(c.rebuild);
    CHECK(c.keep == 5);
    CHECK(c.added.empty());
    CHECK(c.removed.empty());
    h.resize(2);  // cut back (speculative rejection) and regrow
    h.push_back(9);
    c = t.sync(h);
    CHECK_FALSE(c.rebuild);
    CHECK(c.keep == 2);
    CHECK(v(c.removed) == std::vector<token_id>{3, 4, 5});
    CHECK(v(c.added) == std::vector<token_id>{9});
    h = {7, 7};  // a shorter, different history: every token replaced
    c = t.sync(h);
    CHECK_FALSE(c.rebuild);
    CHECK(c.keep == 0);
    CHECK(v(c.removed) == std::vector<token_id>{1, 2, 9});
    CHECK(v(c.added) == h);
    t.reset();
    CHECK(t.sync(h).rebuild);
}

TEST_CASE("history_tracker rebuilds when a change goes deeper than its journal", "[history]") {
    history_tracker t(16);
    std::vector<token_id> h(100);
    for (std::size_t i = 0; i < h.size(); ++i) h[i] = token_id(i);
    t.sync(h);
    std::vector<token_id> shorter(h.begin(), h.begin() + 90);  // cut back 10 <= journal
    auto c = t.sync(shorter);
    CHECK_FALSE(c.rebuild);
    CHECK(c.removed.size() == 10);
    t.sync(h);
    std::vector<token_id> deep(h.begin(), h.begin() + 50);  // 50 > journal: cannot follow
    CHECK(t.sync(deep).rebuild);
    t.sync(h);
    std::vector<token_id> edited = h;
    edited[95] = -3;  // inside the checked tail: found, and only the tail after it is replayed
    c = t.sync(edited);
    CHECK_FALSE(c.rebuild);
    CHECK(c.keep == 95);
    CHECK(v(c.removed) == std::vector<token_id>{95, 96, 97, 98, 99});
}

TEST_CASE("history_tracker: replaying its changes reproduces every history", "[history]") {
    // A shadow copy updated only through the reported changes must equal each new history.
    // Rewrites use other ids than appends, so a rewrite always differs at the journal's start
    // (rewrites the check cannot see are the documented limit, not tested here).
    std::mt19937 rng(5);
    history_tracker t(64);
    std::vector<token_id> h(150), shadow;
    for (auto& x : h) x = token_id(rng() % 7);
    std::size_t rebuilds = 0, follows = 0;
    token_id rewrite = 100;
    for (int it = 0; it < 3000; ++it) {
        const int op = int(rng() % 10);
        if (op < 6 || h.size() < 100) {
            for (int k = int(rng() % 12); k >= 0; --k) h.push_back(token_id(rng() % 7));
        } else if (op < 9) {
            h.resize(h.size() - std::min<std::size_t>(h.size(), rng() % 80));
        } else {
            for (auto& x : h) x = rewrite;
            ++rewrite;
        }
        const auto c = t.sync(h);
        if (c.rebuild) {
            shadow = v(c.added);
            ++rebuilds;
        } else {
            REQUIRE(c.keep <= shadow.size());
            REQUIRE(v(c.removed) ==
                    std::vector<token_id>(shadow.begin() + std::ptrdiff_t(c.keep), shadow.end()));
            shadow.resize(c.keep);
            shadow.insert(shadow.end(), c.added.begin(), c.added.end());
            ++follows;
        }
        REQUIRE(shadow == h);
    }
    CHECK(follows > 2000);  // most changes are followed, not rebuilt
    CHECK(rebuilds > 100);  // deep cut-backs and rewrites are rebuilt
}

namespace {
struct counting {
    int n = 0;
    void apply(std::span<float> x, const processor_context&) { x[0] += float(n); }
    void touched(const processor_context&, token_sink& s) const { s(token_id(0)); }
    void append(std::span<const token_id> a, const processor_context&) { n += int(a.size()); }
    void cut_back(std::size_t, std::span<const token_id> r, const processor_context&) {
        n -= int(r.size());
    }
    void reset(const processor_context& c) { n = int(c.history.size()); }
};
struct plain {
    void apply(std::span<float> x, const processor_context&) { x[1] = -1.f; }
};
}  // namespace

TEST_CASE("any_processor holds any processor; copies clone its state", "[processor]") {
    static_assert(logits_processor<counting> && sparse_logits_processor<counting> &&
                  history_follower<counting>);
    static_assert(logits_processor<plain> && !sparse_logits_processor<plain> &&
                  !history_follower<plain>);
    any_processor a = counting{}, b = plain{};
    CHECK(a.sparse());
    CHECK(a.follows_history());
    CHECK_FALSE(b.sparse());
    CHECK_FALSE(b.follows_history());
    const std::vector<token_id> h{1, 2, 3};
    const processor_context c{.history = h, .vocab_size = 2};
    a.reset(c);
    any_processor copy = a;
    a.append(h, c);
    CHECK(a.get<counting>()->n == 6);
    CHECK(copy.get<counting>()->n == 3);  // the copy kept its own state
    CHECK(copy.get<plain>() == nullptr);
    std::vector<float> x{0.f, 0.f};
    copy.apply(x, c);
    b.apply(x, c);
    CHECK(x == std::vector<float>{3.f, -1.f});
}
}  // namespace dk_t_processors_history
