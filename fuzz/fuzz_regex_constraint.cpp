/// \file fuzz/fuzz_regex_constraint.cpp
/// The regular-expression constraint (examples/regex) with random patterns from a small regular
/// grammar (letters, classes, `.`, groups, alternation, ? * + {m,n} and their lazy forms),
/// random vocabularies (short strings, the empty string, BOS, EOS, text that differs after BOS)
/// and random histories followed through append / cut back / reset (and out-of-sync contexts).
/// Oracles: a Thompson NFA built from the same syntax tree (viable = some state left after the
/// text can still reach acceptance; complete = acceptance reached) for every allowed() answer,
/// is_complete() and can_extend(); a constraint rebuilt from the whole history for the
/// incremental state; and a decodekit::sampler applying the constraint to a fuzzed row, whose
/// token must be allowed (or no token allowed at all). Sometimes with a backtracking budget of
/// a few steps, so the DFA matcher answers. Input: [pattern][vocabulary][operations].

#include <regex/regex_constraint.hpp>

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <bitset>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.hpp"

namespace dk = decodekit;
using dk::token_id;

namespace {

// ---- a Thompson NFA over bytes

struct nfa {
    struct edge {
        std::size_t to;
        std::bitset<256> bytes;  // none set: an epsilon edge
        bool eps;
    };
    std::vector<std::vector<edge>> out;
    std::size_t start = 0, accept = 0;
    std::vector<bool> live;  // states from which acceptance is reachable

    std::size_t add() {
        out.emplace_back();
        return out.size() - 1;
    }
    void eps(std::size_t a, std::size_t b) { out[a].push_back({b, {}, true}); }
    void on(std::size_t a, std::size_t b, const std::bitset<256>& s) {
        out[a].push_back({b, s, false});
    }
    void close(std::vector<bool>& set) const {
        std::vector<std::size_t> stack;
        for (std::size_t i = 0; i < set.size(); ++i)
            if (set[i]) stack.push_back(i);
        while (!stack.empty()) {
            const std::size_t s = stack.back();
            stack.pop_back();
            for (const edge& e : out[s])
                if (e.eps && !set[e.to]) {
                    set[e.to] = true;
                    stack.push_back(e.to);
                }
        }
    }
    void finish() {  // live = co-reachable from accept over edges whose byte set is not empty
        live.assign(out.size(), false);
        live[accept] = true;
        for (bool changed = true; changed;) {
            changed = false;
            for (std::size_t s = 0; s < out.size(); ++s)
                for (const edge& e : out[s])
                    if (!live[s] && live[e.to] && (e.eps || e.bytes.any()))
                        live[s] = changed = true;
        }
    }
    /// 0: dead, 1: viable, 2: complete (and viable).
    int judge(const std::string& text) const {
        std::vector<bool> cur(out.size(), false);
        cur[start] = true;
        close(cur);
        for (unsigned char b : text) {
            std::vector<bool> next(out.size(), false);
            for (std::size_t s = 0; s < out.size(); ++s)
                if (cur[s])
                    for (const edge& e : out[s])
                        if (!e.eps && e.bytes[b]) next[e.to] = true;
            close(next);
            cur.swap(next);
        }
        if (cur[accept]) return 2;
        for (std::size_t s = 0; s < out.size(); ++s)
            if (cur[s] && live[s]) return 1;
        return 0;
    }
};

// ---- patterns from a small grammar: the PCRE2 syntax and the NFA fragment at once

struct fragment {
    std::size_t in, out;
};

class pattern_builder {
public:
    pattern_builder(FuzzedDataProvider& in, nfa& a) : in_(in), a_(a) {}

    fragment alternation(int depth) {
        fragment f = sequence(depth);
        while (budget_ > 0 && in_.ConsumeIntegralInRange<int>(0, 5) == 5) {
            --budget_;
            text_ += '|';
            const fragment g = sequence(depth);
            const std::size_t s = a_.add(), e = a_.add();
            a_.eps(s, f.in);
            a_.eps(s, g.in);
            a_.eps(f.out, e);
            a_.eps(g.out, e);
            f = {s, e};
        }
        return f;
    }
    std::string text() const { return text_; }

private:
    fragment sequence(int depth) {
        const std::size_t s = a_.add();
        fragment f{s, s};
        const int n = in_.ConsumeIntegralInRange<int>(0, 4);
        for (int i = 0; i < n && budget_ > 0; ++i) {
            const fragment g = quantified(depth);
            a_.eps(f.out, g.in);
            f.out = g.out;
        }
        return f;
    }
    fragment quantified(int depth) {
        --budget_;
        const fragment base = atom(depth);
        const int q = in_.ConsumeIntegralInRange<int>(0, 9);
        if (q < 5) return base;
        auto lazy = [&] {
            if (in_.ConsumeBool()) text_ += '?';
        };
        if (q == 5 || q == 6 || q == 7) {  // ? * +
            text_ += "?*+"[q - 5];
            lazy();
            const std::size_t s = a_.add(), e = a_.add();
            a_.eps(s, base.in);
            a_.eps(base.out, e);
            if (q != 7) a_.eps(s, e);               // may skip
            if (q != 5) a_.eps(base.out, base.in);  // may repeat
            return {s, e};
        }
        // {m,n}: the NFA repeats a copy of the atom's graph
        const int m = in_.ConsumeIntegralInRange<int>(0, 2);
        const int n = m + in_.ConsumeIntegralInRange<int>(0, 2);
        text_ += "{" + std::to_string(m) + "," + std::to_string(n) + "}";
        lazy();
        const std::size_t s = a_.add(), e = a_.add();
        std::size_t at = s;
        for (int i = 0; i < n; ++i) {
            const fragment c = i == 0 ? base : copy(base);
            a_.eps(at, c.in);
            if (i >= m) a_.eps(at, e);
            at = c.out;
        }
        a_.eps(at, e);
        return {s, e};
    }
    /// A copy of the states reachable from f.in up to f.out (fragments are self-contained).
    fragment copy(fragment f) {
        std::vector<std::size_t> map(a_.out.size(), SIZE_MAX), order{f.in};
        map[f.in] = a_.add();
        for (std::size_t i = 0; i < order.size(); ++i) {
            const std::size_t s = order[i];
            if (s == f.out) continue;
            for (const nfa::edge& e : a_.out[s])
                if (map[e.to] == SIZE_MAX) {
                    map[e.to] = a_.add();
                    order.push_back(e.to);
                }
        }
        for (std::size_t s : order) {
            if (s == f.out) continue;
            for (const nfa::edge& e : std::vector<nfa::edge>(a_.out[s]))
                a_.out[map[s]].push_back({map[e.to], e.bytes, e.eps});
        }
        return {map[f.in], map[f.out]};
    }
    fragment atom(int depth) {
        const std::size_t s = a_.add(), e = a_.add();
        std::bitset<256> set;
        switch (in_.ConsumeIntegralInRange<int>(0, depth < 3 ? 7 : 5)) {
            case 0:
            case 1:
            case 2: {  // a letter
                const char c = char('a' + in_.ConsumeIntegralInRange<int>(0, 3));
                text_ += c;
                set.set(static_cast<unsigned char>(c));
                break;
            }
            case 3: {  // a class of letters, maybe negated
                const bool neg = in_.ConsumeBool();
                text_ += neg ? "[^" : "[";
                for (int i = 0; i < 4; ++i)
                    if (in_.ConsumeBool() || i == 0) {
                        text_ += char('a' + i);
                        set.set(std::size_t('a' + i));
                    }
                text_ += ']';
                if (neg) set.flip();
                break;
            }
            case 4:  // any byte but a newline
                text_ += '.';
                set.set();
                set.reset('\n');
                break;
            case 5:  // an escaped byte
                text_ += "\\x20";
                set.set(0x20);
                break;
            default: {  // a group
                text_ += in_.ConsumeBool() ? "(" : "(?:";
                const fragment g = alternation(depth + 1);
                text_ += ')';
                a_.eps(s, g.in);
                a_.eps(g.out, e);
                return {s, e};
            }
        }
        a_.on(s, e, set);
        return {s, e};
    }

    FuzzedDataProvider& in_;
    nfa& a_;
    std::string text_;
    int budget_ = 12;
};

// ---- the checks

struct sequence {
    std::vector<token_id> history;
    std::size_t prompt_length = 0;
    dk::processor_context ctx(std::size_t V) const {
        return {.history = history, .prompt_length = prompt_length, .vocab_size = V};
    }
};

std::string oracle_text(const dk_regex::vocabulary& v, const sequence& s) {
    std::string text;
    for (std::size_t p = s.prompt_length; p < s.history.size(); ++p) {
        const token_id t = s.history[p];
        if (t == v.bos_id || std::find(v.eos_ids.begin(), v.eos_ids.end(), t) != v.eos_ids.end())
            continue;
        const bool after_bos = p > 0 && s.history[p - 1] == v.bos_id;
        text += after_bos ? v.bytes_after_bos[std::size_t(t)] : v.bytes[std::size_t(t)];
    }
    return text;
}

/// Every answer of `c` for sequence `s` against the NFA.
void check_state(const dk_regex::regex_constraint& c, const nfa& a, const sequence& s,
                 const dk_regex::vocabulary& v, const std::string& pattern) {
    const std::size_t V = v.bytes.size();
    const std::string text = oracle_text(v, s);
    DK_FUZZ_CHECK(c.text() == text, "/%s/: text [%s], expected [%s]", pattern.c_str(),
                  std::string(c.text()).c_str(), text.c_str());
    const int now = a.judge(text);
    DK_FUZZ_CHECK(c.is_complete() == (now == 2), "/%s/ [%s]: is_complete %d, NFA %d",
                  pattern.c_str(), text.c_str(), int(c.is_complete()), now);
    bool extend = false;
    const token_id prev = s.history.empty() ? -1 : s.history.back();
    for (token_id t = 0; t < token_id(V); ++t) {
        bool want;
        if (t == v.bos_id) {
            want = false;
        } else if (std::find(v.eos_ids.begin(), v.eos_ids.end(), t) != v.eos_ids.end()) {
            want = now == 2;
        } else {
            const std::string& b =
                prev == v.bos_id ? v.bytes_after_bos[std::size_t(t)] : v.bytes[std::size_t(t)];
            want = !b.empty() && a.judge(text + b) != 0;
            extend = extend || want;
        }
        const bool got = c.allowed(t, s.ctx(V));
        DK_FUZZ_CHECK(got == want, "/%s/ [%s]: allowed(%d) %d, NFA %d", pattern.c_str(),
                      text.c_str(), t, int(got), int(want));
    }
    DK_FUZZ_CHECK(c.can_extend() == extend, "/%s/ [%s]: can_extend %d, NFA %d", pattern.c_str(),
                  text.c_str(), int(c.can_extend()), int(extend));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    nfa a;
    pattern_builder pb(in, a);
    const fragment f = pb.alternation(0);
    a.start = f.in;
    a.accept = f.out;
    a.finish();
    const std::string pattern = pb.text();

    // the vocabulary: 0 "", 1 BOS, 2 EOS, the four letters and " ", then short random strings
    dk_regex::vocabulary v;
    v.bytes = {"", "<s>", "</s>", "a", "b", "c", "d", " "};
    const int extra = in.ConsumeIntegralInRange<int>(0, 12);
    for (int i = 0; i < extra; ++i) {
        std::string w;
        for (int k = in.ConsumeIntegralInRange<int>(0, 3); k > 0; --k)
            w += " abcde"[in.ConsumeIntegralInRange<int>(0, 5)];
        v.bytes.push_back(w);
    }
    v.bos_id = 1;
    v.eos_ids = {2};
    v.bytes_after_bos = v.bytes;
    for (auto& b : v.bytes_after_bos)
        if (!b.empty() && b.front() == ' ') b.erase(0, 1);
    const std::size_t V = v.bytes.size();

    dk_regex::regex_options opt;
    if (in.ConsumeBool()) opt.backtrack_limit = in.ConsumeIntegralInRange<std::uint32_t>(1, 50);
    opt.jit = in.ConsumeBool();
    auto compiled = dk_regex::regex_constraint::compile(pattern, v, opt);
    DK_FUZZ_CHECK(compiled.ok(), "/%s/ does not compile: %s", pattern.c_str(),
                  compiled.error().c_str());
    dk_regex::regex_constraint c = std::move(compiled.value());

    sequence s;
    s.history = {1};  // BOS
    if (in.ConsumeBool())
        s.history.push_back(token_id(in.ConsumeIntegralInRange<std::size_t>(3, V - 1)));
    s.prompt_length = s.history.size();
    c.reset(s.ctx(V));
    check_state(c, a, s, v, pattern);

    std::vector<float> row;
    for (int op = 0; op < 24 && in.remaining_bytes() > 0; ++op) {
        switch (in.ConsumeIntegralInRange<int>(0, 9)) {
            case 0:
            case 1:
            case 2:
            case 3: {  // append 1-3 tokens (allowed ones mostly), followed in one of three ways
                const std::size_t k = in.ConsumeIntegralInRange<std::size_t>(1, 3);
                dk_regex::regex_constraint probe = c;
                for (std::size_t i = 0; i < k; ++i) {
                    std::vector<token_id> ok;
                    for (token_id t = 3; t < token_id(V); ++t)
                        if (probe.allowed(t, s.ctx(V))) ok.push_back(t);
                    token_id t = token_id(in.ConsumeIntegralInRange<std::size_t>(0, V - 1));
                    if (!ok.empty() && in.ConsumeIntegralInRange<int>(0, 3) != 0)
                        t = ok[in.ConsumeIntegralInRange<std::size_t>(0, ok.size() - 1)];
                    s.history.push_back(t);
                    probe.append(std::span(s.history).last(1), s.ctx(V));
                }
                const int how = in.ConsumeIntegralInRange<int>(0, 2);
                if (how == 0) c.append(std::span(s.history).last(k), s.ctx(V));
                if (how == 1) c.reset(s.ctx(V));
                if (how == 2) c = probe;
                break;
            }
            case 4:
            case 5: {  // cut back
                const std::size_t keep =
                    in.ConsumeIntegralInRange<std::size_t>(s.prompt_length, s.history.size());
                const std::vector<token_id> removed(s.history.begin() + long(keep),
                                                    s.history.end());
                s.history.resize(keep);
                c.cut_back(keep, removed, s.ctx(V));
                break;
            }
            case 6: {  // a context the hooks did not follow: every token refused, state kept
                sequence other = s;
                other.history.push_back(3);
                for (token_id t = 0; t < token_id(V); ++t)
                    DK_FUZZ_CHECK(!c.allowed(t, other.ctx(V)), "out of sync: allowed(%d)", t);
                break;
            }
            case 7: {  // a copy follows on its own
                dk_regex::regex_constraint d = c;
                check_state(d, a, s, v, pattern);
                break;
            }
            default: {  // the sampler applies the constraint to a fuzzed row
                dk::sampling_params sp;
                const int kind = in.ConsumeIntegralInRange<int>(0, 5);
                if (kind == 0) sp.temperature = 0.f;
                if (kind == 1 || kind == 4) sp.min_p = 0.2f;
                if (kind == 2) sp.top_k = 3;
                if (kind >= 4) sp.logprobs.chosen = false;  // draw, then check
                sp.seed = in.ConsumeIntegral<std::uint8_t>();
                sp.constraint = c;
                dk::sampler smp(sp, V);
                dk_fuzz::fill_row(in, row, V, 0);
                const auto r = smp.sample(row, {.sequence = 0,
                                                .step = std::uint64_t(op),
                                                .history = s.history,
                                                .prompt_length = s.prompt_length});
                bool any = false;
                for (token_id t = 0; t < token_id(V); ++t)
                    any = any ||
                          (row[std::size_t(t)] > -dk_fuzz::inf &&
                           !(row[std::size_t(t)] != row[std::size_t(t)]) && c.allowed(t, s.ctx(V)));
                if (r.ok())
                    DK_FUZZ_CHECK(c.allowed(r.token, s.ctx(V)),
                                  "/%s/: the sampler drew %d, not allowed", pattern.c_str(),
                                  r.token);
                else
                    DK_FUZZ_CHECK(!any, "/%s/: sampler status %d with an allowed valid token",
                                  pattern.c_str(), int(r.status));
                break;
            }
        }
        check_state(c, a, s, v, pattern);
    }
    DK_FUZZ_CHECK(c.stats().out_of_sync <= c.stats().queries, "stats");
    return 0;
}
