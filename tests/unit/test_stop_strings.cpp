// Text-level stop strings: the matcher against a naive oracle (stop strings spanning tokens, a
// stop string that is a prefix of another, UTF-8 split across tokens, held-back text released
// when the match fails), and stop strings with streamed text in every strategy.
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <random>
#include <string>
#include <string_view>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_stop_strings {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {

/// Pushes `pieces` into a matcher for `stops`; returns the text released after each piece and
/// the index of the piece that matched (-1: none).
struct run_result {
    std::vector<std::string> released;
    int matched_at = -1;
    std::string all() const {
        std::string s;
        for (const auto& r : released) s += r;
        return s;
    }
};
run_result run(const std::vector<std::string>& stops, const std::vector<std::string>& pieces,
               bool active = true) {
    stop_string_matcher m(stops);
    run_result r;
    for (std::size_t i = 0; i < pieces.size(); ++i) {
        const auto p = m.push(pieces[i], active);
        r.released.emplace_back(p.text);
        if (p.matched) {
            r.matched_at = int(i);
            break;
        }
    }
    return r;
}

/// The oracle: the earliest-ending occurrence of any stop string in `text` (ties: the longest);
/// returns {end, length} or {npos, 0}.
std::pair<std::size_t, std::size_t> first_match(const std::vector<std::string>& stops,
                                                const std::string& text) {
    std::size_t best_end = npos, best_len = 0;
    for (const auto& s : stops)
        for (std::size_t pos = text.find(s); pos != std::string::npos;
             pos = text.find(s, pos + 1)) {
            const std::size_t end = pos + s.size();
            if (end < best_end || (end == best_end && s.size() > best_len))
                best_end = end, best_len = s.size();
            break;  // the first occurrence of s ends first
        }
    return {best_end, best_len};
}
/// The oracle's hold: the longest suffix of `text` that is a proper prefix of a stop string.
std::size_t hold_of(const std::vector<std::string>& stops, const std::string& text) {
    std::size_t h = 0;
    for (const auto& s : stops)
        for (std::size_t l = std::min(s.size() - 1, text.size()); l > h; --l)
            if (text.compare(text.size() - l, l, s, 0, l) == 0) {
                h = l;
                break;
            }
    return h;
}

bool valid_utf8(std::string_view s) {
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        const std::size_t n = c < 0x80         ? 1
                              : (c >> 5) == 6  ? 2
                              : (c >> 4) == 14 ? 3
                              : (c >> 3) == 30 ? 4
                                               : 0;
        if (n == 0 || i + n > s.size()) return false;
        for (std::size_t j = 1; j < n; ++j)
            if ((static_cast<unsigned char>(s[i + j]) & 0xC0) != 0x80) return false;
        i += n;
    }
    return true;
}

}  // namespace

TEST_CASE("stop strings: a stop string spanning 1 to 4 tokens", "[stop_strings]") {
    const std::vector<std::string> stops = {"STOP"};
    auto r = run(stops, {"one STOP two"});
    CHECK(r.matched_at == 0);
    CHECK(r.all() == "one ");
    r = run(stops, {"one ST", "OP two"});
    CHECK(r.matched_at == 1);
    CHECK(r.released[0] == "one ");  // "ST" held: it may begin "STOP"
    CHECK(r.all() == "one ");
    r = run(stops, {"x S", "T", "OP"});
    CHECK(r.matched_at == 2);
    CHECK(r.released == std::vector<std::string>{"x ", "", ""});
    r = run(stops, {"S", "T", "O", "P", "more"});
    CHECK(r.matched_at == 3);
    CHECK(r.all().empty());
    // Negative control: the same pieces without the last letter never match.
    r = run(stops, {"S", "T", "O", "Q"});
    CHECK(r.matched_at == -1);
    CHECK(r.all() == "STOQ");  // released when the match failed
}

TEST_CASE("stop strings: held-back text is released when the match fails", "[stop_strings]") {
    stop_string_matcher m(std::vector<std::string>{"STOP", "<end>"});
    CHECK(m.push("abc ST").text == "abc ");
    CHECK(m.held() == 2);
    CHECK(m.push("A").text == "STA");  // "STA" can begin no stop string
    CHECK(m.held() == 0);
    CHECK(m.push("<e").text == "");
    CHECK(m.push("nx").text == "<enx");
    CHECK(m.push("x <").text == "x ");
    CHECK(m.flush() == "<");  // the end of generation releases what is held
    CHECK(m.held() == 0);
    CHECK_FALSE(m.matched());
}

TEST_CASE("stop strings: a stop string that is a prefix of another stops first", "[stop_strings]") {
    auto r = run({"ab", "abc"}, {"xa", "bc"});
    CHECK(r.matched_at == 1);
    CHECK(r.all() == "x");
    r = run({"abc", "ab"}, {"xabc"});  // order does not matter: "ab" ends first
    CHECK(r.all() == "x");
    r = run({"abc", "b"}, {"zab"});  // "b" ends before "abc" could
    CHECK(r.all() == "za");
    r = run({"abcd", "bc"}, {"ab", "cd"});
    CHECK(r.matched_at == 1);
    CHECK(r.all() == "a");
    r = run({"abab"}, {"abaab", "ab"});  // overlapping partial matches (KMP borders)
    CHECK(r.matched_at == 1);
    CHECK(r.all() == "aba");
    // Two strings ending at the same byte: the longer one (earlier start) cuts the text.
    r = run({"bc", "abc"}, {"xab", "c"});
    CHECK(r.all() == "x");
}

TEST_CASE("stop strings: UTF-8 split across tokens is held until complete", "[stop_strings]") {
    // é = C3 A9, 中 = E4 B8 AD, 😀 = F0 9F 98 80
    auto r = run({"STOP"}, {"caf\xC3", "\xA9!", "\xE4", "\xB8", "\xAD", "\xF0\x9F", "\x98\x80"});
    CHECK(r.matched_at == -1);
    CHECK(r.released == std::vector<std::string>{"caf", "\xC3\xA9!", "", "", "\xE4\xB8\xAD", "",
                                                 "\xF0\x9F\x98\x80"});
    for (const auto& s : r.released) CHECK(valid_utf8(s));
    // A stop string made of multi-byte characters, split inside a character.
    r = run({"\xE4\xB8\xAD\xE6\x96\x87"}, {"a\xE4\xB8", "\xAD\xE6", "\x96\x87z"});
    CHECK(r.matched_at == 2);
    CHECK(r.all() == "a");
    // Invalid bytes are never held forever.
    r = run({"STOP"}, {"\x80\x80", "\xFF", "a\xC3"});
    CHECK(r.released[0] == "\x80\x80");
    CHECK(r.released[1] == "\xFF");
    CHECK(r.released[2] == "a");  // an incomplete lead byte at the end is held
    stop_string_matcher m;        // no stop strings: only UTF-8 is held
    CHECK(m.push("x\xE4\xB8").text == "x");
    CHECK(m.flush() == "\xE4\xB8");
}

TEST_CASE("stop strings: inactive (before min_new_tokens) matches are released as text",
          "[stop_strings]") {
    stop_string_matcher m(std::vector<std::string>{"aa", "STOP"});
    auto p = m.push("xSTOP", false);
    CHECK_FALSE(p.matched);
    CHECK(p.text == "xSTOP");
    p = m.push("aa", false);  // "aa" ignored; its border "a" may still begin "aa"
    CHECK(p.text == "a");
    p = m.push("a", true);  // a new occurrence ending now counts
    CHECK(p.matched);
    CHECK(p.text.empty());               // text "aaa": the match is the held "a" and the new one
    CHECK(m.push("more").text.empty());  // nothing after a match
    CHECK(m.flush().empty());
}

TEST_CASE("stop strings: the matcher equals a naive oracle on random texts and splits",
          "[stop_strings]") {
    std::mt19937_64 rng(12345);
    auto rnd = [&](std::size_t n) { return std::size_t(rng() % n); };
    std::size_t matches = 0, holds = 0;
    for (int trial = 0; trial < 3000; ++trial) {
        std::vector<std::string> stops(1 + rnd(3));
        for (auto& s : stops) {
            s.resize(1 + rnd(4));
            for (char& c : s) c = char('a' + rnd(3));
        }
        std::string text(rnd(24), 'a');
        for (char& c : text) c = char('a' + rnd(3));
        std::vector<std::string> pieces;
        for (std::size_t i = 0; i < text.size();) {
            const std::size_t n = std::min(text.size() - i, rnd(5));  // empty pieces too
            pieces.push_back(text.substr(i, n));
            i += n;
        }
        INFO("trial " << trial << " text " << text);
        stop_string_matcher m(stops);
        std::string seen, released;
        bool matched = false;
        for (const auto& piece : pieces) {
            seen += piece;
            const auto p = m.push(piece);
            released += p.text;
            const auto [end, len] = first_match(stops, seen);
            if (end != npos) {
                REQUIRE(p.matched);
                CHECK(released == seen.substr(0, end - len));
                matched = true;
                ++matches;
                break;
            }
            REQUIRE_FALSE(p.matched);
            const std::size_t h = hold_of(stops, seen);
            holds += h > 0;
            CHECK(released == seen.substr(0, seen.size() - h));
            CHECK(m.held() == h);
        }
        if (!matched) CHECK(released + std::string(m.flush()) == seen);
    }
    CHECK(matches > 500);
    CHECK(holds > 500);
}

TEST_CASE("stop strings: checked configuration", "[stop_strings]") {
    const detokenize_fn d = [](token_id) { return std::string_view("x"); };
    CHECK(generate_params{.stop_strings = {"a"}, .detokenize = d}.check() == std::nullopt);
    CHECK(generate_params{.stop_strings = {"a"}}.check()->find("generate_params.detokenize") !=
          std::string::npos);
    CHECK(generate_params{.stop_strings = {""}, .detokenize = d}.check()->find(
              "generate_params.stop_strings") != std::string::npos);
    CHECK(
        contrastive_params{.stop_strings = {std::string(257, 'a')}, .detokenize = d}.check()->find(
            "contrastive_params.stop_strings") != std::string::npos);
    CHECK(dola_params{.stop_strings = std::vector<std::string>(65, "a"), .detokenize = d}
              .check()
              ->find("dola_params.stop_strings") != std::string::npos);
    CHECK(speculative_params{.stop_strings = {"a"}}.check()->find(
              "speculative_params.detokenize") != std::string::npos);
    CHECK(beam_search_params{.stop_strings = {std::string(256, 'a')}, .detokenize = d}.check() ==
          std::nullopt);
}

namespace {
// A detokenizer for V = 16: tokens spell pieces of text, some of them split UTF-8.
const char* const pieces16[16] = {"a", "b",    "c",        "ab", " ",  "\xC3", "\xA9", "STO",
                                  "P", "\xE4", "\xB8\xAD", "x",  "yz", "ST",   "OP",   "!"};
std::string_view piece(token_id t) { return pieces16[std::size_t(t) % 16]; }
std::string text_of(const std::vector<token_id>& t) {
    std::string s;
    for (token_id x : t) s += piece(x);
    return s;
}
/// The expected outcome of stop strings over greedy `tokens`: the number of tokens up to the one
/// that completed a stop string (all when none) and the text before the stop string.
std::pair<std::size_t, std::string> cut(const std::vector<token_id>& tokens,
                                        const std::vector<std::string>& stops) {
    std::string s;
    for (std::size_t i = 0; i < tokens.size(); ++i) {
        s += piece(tokens[i]);
        const auto [end, len] = first_match(stops, s);
        if (end != npos) return {i + 1, s.substr(0, end - len)};
    }
    return {tokens.size(), s};
}
}  // namespace

TEST_CASE("stop strings in every strategy: tokens kept, text cut before the stop string",
          "[stop_strings]") {
    const toy_model_config tc{.vocab_size = 16, .hidden_size = 4, .seed = 3, .scale = 2.f};
    const detokenize_fn detok = piece;
    std::size_t stopped = 0;
    for (std::uint64_t seed = 1; seed <= 12; ++seed) {
        toy_model_config c = tc;
        c.seed = seed;
        toy_model m(c);
        const std::vector<token_id> prompt = {1, 2};
        const auto g =
            generate(m, prompt, {.sampling = {.temperature = 0.f}, .max_new_tokens = 24});
        const std::vector<std::string> stops = {"STOP", "ab", "yzx"};
        const auto [n, text] = cut(g.tokens, stops);
        const std::vector<token_id> want(g.tokens.begin(), g.tokens.begin() + std::ptrdiff_t(n));
        const stop_reason why = n < g.tokens.size() || text.size() < text_of(want).size()
                                    ? stop_reason::stop_string
                                    : stop_reason::max_new_tokens;
        stopped += why == stop_reason::stop_string;
        INFO("seed " << seed);
        std::string streamed;
        std::size_t events = 0;
        auto rec = [&](const token_event& e) {
            streamed += e.text;
            ++events;
        };
        // generate
        streamed.clear();
        const auto r = generate(m, prompt,
                                {.sampling = {.temperature = 0.f},
                                 .max_new_tokens = 24,
                                 .stop_strings = stops,
                                 .detokenize = detok},
                                rec);
        CHECK(r.tokens == want);
        CHECK(r.reason == why);
        CHECK(streamed == text);
        // contrastive search with alpha 0 is greedy
        streamed.clear();
        const auto rc = contrastive_search(
            m, prompt,
            {.alpha = 0.f, .max_new_tokens = 24, .stop_strings = stops, .detokenize = detok}, rec);
        CHECK(rc.tokens == want);
        CHECK(rc.reason == why);
        CHECK(streamed == text);
        // greedy speculative decoding (several tokens per step)
        streamed.clear();
        basic_processing greedy{.temperature = 0.f};
        toy_model draft = toy_model::draft_of(c, 0.3f);
        draft_model_proposer<toy_model, basic_processing> dp(draft, greedy);
        const auto rs = speculative_decode(
            m, dp, prompt,
            {.max_new_tokens = 24, .draft_length = 4, .stop_strings = stops, .detokenize = detok},
            greedy, rec);
        CHECK(rs.tokens == want);
        CHECK(rs.reason == why);
        CHECK(streamed == text);
        // beam width 1, first_n: greedy
        const auto rb = beam_search(m, prompt,
                                    {.num_beams = 1,
                                     .max_new_tokens = 24,
                                     .stopping = early_stopping::first_n,
                                     .stop_strings = stops,
                                     .detokenize = detok});
        CHECK(rb.tokens == want);
        CHECK(rb.reason == why);
        // DoLa: its own tokens, cut the same way
        const auto d =
            dola_decode(m, prompt, {.layers = dola_layer_set::low, .max_new_tokens = 24});
        const auto [dn, dtext] = cut(d.tokens, stops);
        streamed.clear();
        const auto rd = dola_decode(m, prompt,
                                    {.layers = dola_layer_set::low,
                                     .max_new_tokens = 24,
                                     .stop_strings = stops,
                                     .detokenize = detok},
                                    rec);
        CHECK(rd.tokens ==
              std::vector<token_id>(d.tokens.begin(), d.tokens.begin() + std::ptrdiff_t(dn)));
        CHECK(streamed == dtext);
    }
    CHECK(stopped >= 3);
    CHECK(stopped < 12);  // both outcomes exercised
}

TEST_CASE("stop strings: the tail after EOS comes in a final event; min_new_tokens holds",
          "[stop_strings]") {
    // Token 7 ("STO") then 3 ("ab")... a model whose greedy path is fixed: 7, 13 ("ST"), EOS 15.
    toy_model m({.vocab_size = 16});
    m.set_logits_function([](std::span<const token_id> ctx, std::span<float> out) {
        std::fill(out.begin(), out.end(), 0.f);
        const token_id path[] = {11, 13, 15};  // "x", "ST", EOS
        out[std::size_t(path[std::min<std::size_t>(ctx.size() - 1, 2)])] = 5.f;
    });
    const detokenize_fn detok = piece;
    struct event {
        token_id token;
        std::size_t index;
        std::string text;  // a copy: token_event::text is valid during the callback only
    };
    std::vector<event> ev;
    auto record = [&](const token_event& e) {
        ev.push_back({e.token, e.index, std::string(e.text)});
    };
    std::vector<token_id> ids;
    const auto r = generate(m, std::vector<token_id>{4},
                            {.sampling = {.temperature = 0.f},
                             .max_new_tokens = 8,
                             .eos_ids = {15},
                             .stop_strings = {"STOP"},
                             .detokenize = detok},
                            record);
    CHECK(r.tokens == std::vector<token_id>{11, 13});
    CHECK(r.reason == stop_reason::eos);
    REQUIRE(ev.size() == 3);
    CHECK(ev[0].text == "x");
    CHECK(ev[1].text == "");   // "ST" held: it may begin "STOP"
    CHECK(ev[2].token == -1);  // the final event releases it
    CHECK(ev[2].index == 2);
    CHECK(ev[2].text == "ST");
    generate(m, std::vector<token_id>{4},
             {.sampling = {.temperature = 0.f},
              .max_new_tokens = 8,
              .eos_ids = {15},
              .stop_strings = {"STOP"},
              .detokenize = detok},
             [&](token_id t) { ids.push_back(t); });
    CHECK(ids == r.tokens);  // token-id callbacks never see the final event
    // max_new_tokens: the tail comes with the last token's event.
    ev.clear();
    generate(m, std::vector<token_id>{4},
             {.sampling = {.temperature = 0.f},
              .max_new_tokens = 2,
              .stop_strings = {"STOP"},
              .detokenize = detok},
             record);
    REQUIRE(ev.size() == 2);
    CHECK(ev[1].text == "ST");
    // min_new_tokens holds stop strings: "x" + "ST" ... with a stop string "xS" completing at
    // token 2, min_new_tokens 3 ignores it (its text is released), 2 does not.
    toy_model loop_model({.vocab_size = 16});
    loop_model.set_logits_function([](std::span<const token_id> ctx, std::span<float> out) {
        std::fill(out.begin(), out.end(), 0.f);
        out[ctx.size() % 2 ? 11 : 13] = 5.f;  // x, ST, x, ST, ...
    });
    auto held = generate(loop_model, std::vector<token_id>{4},
                         {.sampling = {.temperature = 0.f, .min_new_tokens = 2},
                          .max_new_tokens = 6,
                          .stop_strings = {"xS"},
                          .detokenize = detok});
    CHECK(held.reason == stop_reason::stop_string);
    CHECK(held.tokens.size() == 2);
    std::string text;
    held = generate(loop_model, std::vector<token_id>{4},
                    {.sampling = {.temperature = 0.f, .min_new_tokens = 3},
                     .max_new_tokens = 6,
                     .stop_strings = {"xS"},
                     .detokenize = detok},
                    [&](const token_event& e) { text += e.text; });
    CHECK(held.reason == stop_reason::stop_string);
    CHECK(held.tokens.size() == 4);  // the next "xS" completes at token 4
    CHECK(text == "xST");  // the held "x" of token 3 begins the stop string: never released
}
}  // namespace dk_t_stop_strings
