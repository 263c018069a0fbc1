// The regular-expression constraint (examples/regex/regex_constraint.hpp) on its own: what it
// allows on small hand-made vocabularies (viable prefixes, EOS only at a full match, BOS never,
// the space dropped after BOS, bytes not characters, lazy quantifiers, dead ends), how it
// refuses bad configuration and bad use, its limits, and its history hooks against a
// recomputation on the shipped tok512 vocabulary.
#include "dk_test.hpp"

#include <llama2/llama2.hpp>
#include <regex/llama2_vocabulary.hpp>
#include <regex/regex_constraint.hpp>

#include <algorithm>
#include <random>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_regex_constraint {

namespace {

namespace dk = decodekit;
using dk::token_id;
using dk_regex::regex_constraint;
using dk_regex::vocabulary;

// 0 "", 1 BOS, 2 EOS, then ordinary pieces.
vocabulary small_vocab(std::vector<std::string> pieces) {
    vocabulary v;
    v.bytes = {"", "<s>", "</s>"};
    for (auto& p : pieces) v.bytes.push_back(std::move(p));
    v.bos_id = 1;
    v.eos_ids = {2};
    v.bytes_after_bos = v.bytes;  // the leading space dropped after BOS, as llama2.c does
    for (auto& b : v.bytes_after_bos)
        if (!b.empty() && b.front() == ' ') b.erase(0, 1);
    return v;
}

regex_constraint make(std::string_view pattern, vocabulary v, dk_regex::regex_options o = {}) {
    auto c = regex_constraint::compile(pattern, std::move(v), o);
    INFO(c.error());
    REQUIRE(c.ok());
    return std::move(c.value());
}

// A sequence and the context the constraint sees for it.
struct sequence {
    std::vector<token_id> history;
    std::size_t prompt_length = 0;
    dk::processor_context ctx() const {
        return {.history = history, .prompt_length = prompt_length, .vocab_size = 0};
    }
};

// The tokens allowed now, in id order.
std::vector<token_id> allowed_set(const regex_constraint& c, const sequence& s) {
    std::vector<token_id> out;
    for (token_id t = 0; t < token_id(c.vocab().bytes.size()); ++t)
        if (c.allowed(t, s.ctx())) out.push_back(t);
    return out;
}

// The text run.c's decoder prints for the generated part, BOS and EOS left out.
std::string decoded(const dk_llama2::tokenizer& tok, const sequence& s) {
    std::string text;
    for (std::size_t p = s.prompt_length; p < s.history.size(); ++p) {
        const token_id t = s.history[p];
        if (t == dk_llama2::bos_id || t == dk_llama2::eos_id) continue;
        text += tok.decode(p ? s.history[p - 1] : dk_llama2::eos_id, t);
    }
    return text;
}

// An oracle without the constraint's caches and state: PCRE2 run directly on the whole text.
class direct_matcher {
public:
    explicit direct_matcher(const std::string& pattern) {
        const std::string wrapped = "(?:" + pattern + ")\\z";
        int err = 0;
        PCRE2_SIZE off = 0;
        code_ = pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(wrapped.data()), wrapped.size(),
                                PCRE2_ANCHORED | PCRE2_NEVER_UTF, &err, &off, nullptr);
        md_ = pcre2_match_data_create_8(1, nullptr);
        REQUIRE(code_);
    }
    direct_matcher(const direct_matcher&) = delete;
    direct_matcher& operator=(const direct_matcher&) = delete;
    ~direct_matcher() {
        pcre2_match_data_free_8(md_);
        pcre2_code_free_8(code_);
    }
    /// PCRE2's verdict on s: 1 partial, 2 full match, 0 neither.
    int run(const std::string& s, bool partial) const {
        const int r = pcre2_match_8(code_, reinterpret_cast<PCRE2_SPTR8>(s.data()), s.size(), 0,
                                    partial ? PCRE2_PARTIAL_HARD : 0, md_, nullptr);
        return r == PCRE2_ERROR_PARTIAL ? 1 : r >= 0 ? 2 : 0;
    }

private:
    pcre2_code_8* code_ = nullptr;
    pcre2_match_data_8* md_ = nullptr;
};

void push(regex_constraint& c, sequence& s, token_id t) {
    s.history.push_back(t);
    const auto ctx = s.ctx();
    c.append(std::span(&s.history.back(), 1), ctx);
}

}  // namespace

TEST_CASE("regex constraint: viable prefixes, EOS only at a full match, BOS never",
          "[regex][constraint]") {
    // 3 c, 4 a, 5 t, 6 ca, 7 cat, 8 cats, 9 dog, 10 " cat", 11 x, 12 s
    auto c = make("(cat|dog)s?",
                  small_vocab({"c", "a", "t", "ca", "cat", "cats", "dog", " cat", "x", "s"}));
    sequence s{{1}, 1};  // the prompt is BOS alone
    c.reset(s.ctx());
    CHECK(c.text().empty());
    CHECK(!c.is_complete());
    CHECK(c.can_extend());
    // " cat" right after BOS loses its space, as llama2.c's decoder prints it
    CHECK(allowed_set(c, s) == std::vector<token_id>{3, 6, 7, 8, 9, 10});
    push(c, s, 7);  // "cat"
    CHECK(c.text() == "cat");
    CHECK(c.is_complete());
    CHECK(c.can_extend());
    CHECK(!c.finished());
    CHECK(allowed_set(c, s) == std::vector<token_id>{2, 12});  // EOS or "s"
    push(c, s, 12);                                            // "cats"
    CHECK(c.is_complete());
    CHECK(!c.can_extend());
    CHECK(c.finished());
    CHECK(allowed_set(c, s) == std::vector<token_id>{2});
    // after another token than BOS the space stays: " cat" is refused
    sequence u{{1, 11}, 2};
    c.reset(u.ctx());
    CHECK(!c.allowed(10, u.ctx()));
    CHECK(c.allowed(7, u.ctx()));
}

TEST_CASE("regex constraint: the text is the generated part only, tokens are bytes",
          "[regex][constraint]") {
    // 3 "é" (2 bytes), 4 0xC3, 5 0xA9, 6 "e", 7 "ab"
    // a quantifier after a multi-byte character repeats its last byte: group it
    auto c = make("(?:é){2}e", small_vocab({"é", "\xC3", "\xA9", "e", "ab"}));
    sequence s{{1, 7, 7}, 3};  // the prompt's "abab" is not part of the text
    c.reset(s.ctx());
    CHECK(c.text().empty());
    CHECK(allowed_set(c, s) == std::vector<token_id>{3, 4});  // "é" or its first byte
    push(c, s, 4);                                            // half a character
    CHECK(allowed_set(c, s) == std::vector<token_id>{5});
    push(c, s, 5);
    push(c, s, 3);
    CHECK(c.text() == "éé");
    CHECK(allowed_set(c, s) == std::vector<token_id>{6});
    push(c, s, 6);
    CHECK(c.finished());
    // `.` is one byte: "é" is two of them
    auto d = make("..", small_vocab({"é", "\xC3", "\xA9", "e", "ab"}));
    sequence t{{1}, 1};
    d.reset(t.ctx());
    push(d, t, 3);
    CHECK(d.is_complete());
    CHECK(!d.can_extend());
}

TEST_CASE("regex constraint: lazy quantifiers and alternation order do not hide longer matches",
          "[regex][constraint]") {
    // PCRE2 finds "dog" first for dog(sbody)?? and "a" first for a|abc: the constraint must still
    // see the longer matches
    auto c = make("dog(sbody)??|a|abc", small_vocab({"dog", "sbody", "a", "b", "c", "s"}));
    sequence s{{1}, 1};
    c.reset(s.ctx());
    push(c, s, 3);
    CHECK(c.is_complete());
    CHECK(c.can_extend());
    CHECK(allowed_set(c, s) == std::vector<token_id>{2, 4, 8});  // EOS, "sbody", "s"
    sequence u{{1}, 1};
    c.reset(u.ctx());
    push(c, u, 5);  // "a"
    CHECK(c.is_complete());
    CHECK(allowed_set(c, u) == std::vector<token_id>{2, 6});  // EOS, "b"
    push(c, u, 6);
    CHECK(!c.is_complete());
    CHECK(allowed_set(c, u) == std::vector<token_id>{7});
}

TEST_CASE("regex constraint: an impossible pattern allows nothing; a dead end is reported",
          "[regex][constraint]") {
    auto v = small_vocab({"a", "b", "c"});
    auto none = make("[^\\x00-\\xff]", v);
    sequence s{{1}, 1};
    none.reset(s.ctx());
    CHECK(allowed_set(none, s).empty());
    CHECK(!none.is_complete());
    CHECK(!none.can_extend());
    // a lookahead at the end of the text is a partial match that leads nowhere: "a" is allowed
    // (PCRE2 cannot see ahead), then nothing is
    auto dead = make("a(?=b)c", v);
    dead.reset(s.ctx());
    CHECK(allowed_set(dead, s) == std::vector<token_id>{3});
    push(dead, s, 3);
    CHECK(allowed_set(dead, s).empty());
    CHECK(!dead.is_complete());
    CHECK(!dead.can_extend());
    CHECK(!dead.finished());
}

TEST_CASE("regex constraint: bad configuration is refused with a message", "[regex][constraint]") {
    const auto v = small_vocab({"a"});
    // the message compile() gives (empty when it compiled)
    auto msg = [&](std::string_view p, dk_regex::regex_options o = {}, vocabulary w = {}) {
        if (w.bytes.empty()) w = v;
        auto c = regex_constraint::compile(p, w, o);
        CHECK(!c.ok());
        return c.error();
    };
    auto has = [](const std::string& m, const char* part) {
        INFO(m);
        return m.find(part) != std::string::npos;
    };
    CHECK(has(msg("(a"), "missing closing parenthesis at offset 2"));
    CHECK(has(msg("a)|(b"), "at offset 1"));
    CHECK(has(msg("(?x)a # comment"), "(?x) comment"));
    CHECK(has(msg("\\Qa"), "\\Q quote"));
    CHECK(has(msg("(*UTF)a"), "UTF"));
    CHECK(has(msg(std::string(5000, 'a')), "max_pattern_bytes = 4096"));
    CHECK(has(msg("a", {.backtrack_limit = 0}),
              "regex_options.backtrack_limit: 0, must be in [1, 100000000]"));
    CHECK(has(msg("a", {.dfa_workspace_kib = 2}), "regex_options.dfa_workspace_kib"));
    CHECK(has(msg("a", {.heap_limit_kib = 1}), "regex_options.heap_limit_kib"));
    CHECK(has(msg("a", {.jit_stack_kib = 1}), "regex_options.jit_stack_kib"));
    CHECK(has(msg("a", {.max_pattern_bytes = 0}), "regex_options.max_pattern_bytes"));
    auto w = v;
    w.bos_id = 99;
    CHECK(has(msg("a", {}, w), "vocabulary.bos_id: 99"));
    w = v;
    w.eos_ids = {-3};
    CHECK(has(msg("a", {}, w), "vocabulary.eos_ids: -3"));
    w = v;
    w.eos_ids = {1};  // BOS
    CHECK(has(msg("a", {}, w), "vocabulary.eos_ids: 1"));
    w = v;
    w.bytes[3] = std::string(70000, 'x');
    CHECK(has(msg("a", {}, w), "vocabulary.bytes[3]"));
    // leading option settings stay in front of the wrapping group
    CHECK(regex_constraint::compile("(*LIMIT_MATCH=1000)(*CR)a+", v).ok());
}

TEST_CASE("regex constraint: bad use is refused, never answered for another text",
          "[regex][constraint]") {
    auto c = make("a+", small_vocab({"a", "b"}));
    sequence s{{1}, 1};
    c.reset(s.ctx());
    CHECK(c.allowed(3, s.ctx()));
    CHECK(!c.allowed(-1, s.ctx()));
    CHECK(!c.allowed(5, s.ctx()));
    // a history the hooks did not follow: refused and counted
    sequence other{{1, 3}, 1};
    CHECK(!c.allowed(3, other.ctx()));
    sequence moved{{1}, 0};  // another prompt length
    CHECK(!c.allowed(3, moved.ctx()));
    CHECK(c.stats().out_of_sync == 2);
    CHECK(c.stats().queries == 5);
    // a history whose last token differs at the same length
    sequence a{{1, 3}, 1}, b{{1, 4}, 1};
    c.reset(a.ctx());
    CHECK(c.allowed(3, a.ctx()));
    CHECK(!c.allowed(3, b.ctx()));
    // hooks given a history that does not continue the followed one rebuild from it
    sequence far{{1, 3, 3, 3}, 1};
    c.append(std::span(far.history).last(1), far.ctx());
    CHECK(c.text() == "aaa");
    CHECK(c.follows(far.ctx()));
}

TEST_CASE("regex constraint: past its backtracking budget a match runs on the DFA matcher",
          "[regex][constraint]") {
    // nested quantifiers: "aaaa...a" + "b" fails only after trying every split of the a's
    const auto v = small_vocab({"a", "b", std::string(20, 'a'), "c"});
    auto tight = make("(a|aa)+c", v, {.backtrack_limit = 1000});
    auto roomy = make("(a|aa)+c", v);
    for (auto* c : {&tight, &roomy}) {
        sequence s{{1}, 1};
        c->reset(s.ctx());
        push(*c, s, 5);
        CHECK(allowed_set(*c, s) == std::vector<token_id>{3, 5, 6});
        CHECK(c->stats().match_errors == 0);
    }
    CHECK(roomy.stats().dfa_matches == 0);
    CHECK(tight.stats().dfa_matches > 0);  // the same answers, in polynomial time
    // a copy made later starts on the DFA matcher (learnt once per pattern)
    regex_constraint later = tight;
    later.clear_stats();
    sequence s{{1}, 1};
    later.reset(s.ctx());
    CHECK(later.allowed(3, s.ctx()));
    CHECK(later.stats().dfa_matches == later.stats().matches);
    // a back reference: the DFA matcher cannot run it, so past the budget the token is refused
    // and counted (fail closed)
    auto backref = make("(a|aa)+(c)\\2", v, {.backtrack_limit = 1000});
    sequence t{{1}, 1};
    backref.reset(t.ctx());
    push(backref, t, 5);
    push(backref, t, 6);
    CHECK(backref.allowed(6, t.ctx()));  // the first path matches at once
    CHECK(backref.stats().match_errors == 0);
    CHECK(!backref.allowed(4, t.ctx()));  // every split fails at \2: over the budget
    CHECK(backref.stats().match_errors >= 1);
}

TEST_CASE("regex constraint: copies keep the state and are independent", "[regex][constraint]") {
    auto c = make("[ab]{0,4}", small_vocab({"a", "b"}));
    sequence s{{1}, 1};
    c.reset(s.ctx());
    push(c, s, 3);
    regex_constraint d = c;
    sequence s2 = s;
    push(d, s2, 4);
    CHECK(c.text() == "a");
    CHECK(d.text() == "ab");
    CHECK(c.allowed(3, s.ctx()));
    CHECK(d.allowed(3, s2.ctx()));
    d = c;
    CHECK(d.text() == "a");
    CHECK(d.follows(s.ctx()));
}

// The state follows append / cut back / reset in O(change): after every random operation it
// equals a constraint rebuilt from the whole history (text, every allowed() answer, complete,
// extendable) and the text is what the tokenizer decodes.
TEST_CASE("regex constraint: history hooks against a recomputation (tok512)",
          "[regex][constraint][history]") {
    auto tok = dk_llama2::tokenizer::load(std::string(DK_MODELS_DIR) + "/tok512.bin", 512);
    REQUIRE(tok.ok());
    const auto vocab = dk_regex::llama2_vocabulary(tok.value());
    // viable for many random sequences: mostly lower-case words, at most three digits
    const char* patterns[] = {"[a-z .,'\\n]*(?:[0-9][a-z .,'\\n]*){0,3}", "( [A-Za-z]+[,.!?]?)+",
                              "(Once|Lily|Tom)( [a-z]+){1,12}\\."};
    for (const char* pattern : patterns) {
        DYNAMIC_SECTION(pattern) {
            auto c = make(pattern, vocab);
            const direct_matcher direct(pattern);
            std::mt19937_64 rng(20240611);
            for (int round = 0; round < 30; ++round) {
                sequence s;
                s.history = tok->encode(round % 3 ? "Once upon a time" : "", true, false);
                s.prompt_length = s.history.size();
                c.reset(s.ctx());
                for (int op = 0; op < 40; ++op) {
                    const auto r = rng() % 10;
                    if (r < 6) {  // append 1-3 tokens, mostly allowed ones
                        const std::size_t k = 1 + rng() % 3;
                        for (std::size_t i = 0; i < k; ++i) {
                            // the next token: one allowed after what is already there, mostly
                            auto probe = make(pattern, vocab);
                            probe.reset(s.ctx());
                            const auto ok = allowed_set(probe, s);
                            token_id t = token_id(rng() % 512);
                            if (!ok.empty() && rng() % 4) t = ok[rng() % ok.size()];
                            s.history.push_back(t);
                        }
                        c.append(std::span(s.history).last(k), s.ctx());
                    } else if (r < 9) {  // cut back into the generated part (or the prompt)
                        const std::size_t keep = rng() % (s.history.size() + 1);
                        const std::vector<token_id> removed(s.history.begin() + long(keep),
                                                            s.history.end());
                        s.history.resize(keep);
                        if (keep < s.prompt_length) s.prompt_length = keep;
                        if (keep < s.prompt_length || rng() % 2)
                            c.reset(s.ctx());
                        else
                            c.cut_back(keep, removed, s.ctx());
                    } else {  // replace the last token: cut back one, append one
                        if (s.history.size() <= s.prompt_length) continue;
                        const token_id old = s.history.back();
                        s.history.back() = token_id(3 + rng() % 509);
                        c.cut_back(s.history.size() - 1, std::span(&old, 1), s.ctx());
                        c.append(std::span(s.history).last(1), s.ctx());
                    }
                    INFO("round " << round << " op " << op << " history " << s.history.size());
                    auto fresh = make(pattern, vocab);
                    fresh.reset(s.ctx());
                    REQUIRE(c.text() == decoded(tok.value(), s));
                    REQUIRE(c.text() == fresh.text());
                    REQUIRE(c.follows(s.ctx()));
                    REQUIRE(c.is_complete() == fresh.is_complete());
                    REQUIRE(c.can_extend() == fresh.can_extend());
                    const auto allowed = allowed_set(c, s);
                    REQUIRE(allowed == allowed_set(fresh, s));
                    // every answer against PCRE2 run on the whole text, without the caches
                    const std::string text = decoded(tok.value(), s);
                    const bool complete = direct.run(text, false) == 2;
                    REQUIRE(c.is_complete() == complete);
                    std::vector<token_id> expected;
                    if (complete) expected.push_back(dk_llama2::eos_id);
                    for (token_id t = 3; t < 512; ++t) {
                        const token_id prev = s.history.empty() ? -1 : s.history.back();
                        const std::string piece = tok->decode(prev, t);
                        if (!piece.empty() && direct.run(text + piece, true) != 0)
                            expected.push_back(t);
                    }
                    std::sort(expected.begin(), expected.end());
                    INFO("text [" << text << "]");
                    REQUIRE(allowed == expected);
                    REQUIRE(c.can_extend() ==
                            (expected.size() > (complete ? std::size_t(1) : std::size_t(0))));
                }
            }
            CHECK(c.stats().out_of_sync == 0);
            CHECK(c.stats().match_errors == 0);
        }
    }
}
}  // namespace dk_t_regex_constraint
