#pragma once
/// \file regex/regex_constraint.hpp
/// A regular-expression constraint for decodekit's samplers (sampling/constraint.hpp): the text
/// generated after the prompt must stay a prefix of a full match of PATTERN. Built on PCRE2's
/// partial matching (Debian: libpcre2-dev).
///
/// ## What it decides
/// The constraint's text is the generated part of the history (history[prompt_length:]) turned
/// into bytes with the backend's token pieces (a vocabulary: bytes per token, and after BOS when
/// they differ there, as llama2.c's decoder drops a piece's leading space). For a token t:
///   - an ordinary token is allowed when text + bytes(t) is a viable prefix: some byte string
///     extends it to a full match of PATTERN (anchored at the start and at the end);
///   - an EOS id is allowed only when the text itself is a full match (it adds no text);
///   - BOS is never allowed, nor a token whose text is empty (so every allowed token advances).
/// is_complete() says whether the text is a full match; can_extend() whether any ordinary token
/// keeps it viable. A driver stops with stop_reason::constraint_done when the text is complete
/// and cannot be extended, and when nothing is allowed at all (an impossible pattern, or a dead
/// end: see "Exactness").
///
/// ## Bytes, not characters
/// Matching is on bytes (PCRE2 8-bit, UTF mode refused: PCRE2_NEVER_UTF, PCRE2_NEVER_UCP). A token
/// that holds half of a UTF-8 character (byte-fallback tokens <0xE2>) is judged on its bytes, so
/// tokens that split characters work. For patterns this means: `.` and `[^x]` match one byte (a
/// multi-byte character is several `.`), classes hold bytes (`[é]` is the class of é's two
/// bytes, not the character: write `é` or `(?:é|è)` outside a class), \w \d \s and case-less
/// matching are ASCII only, `\xHH` is a byte, and a quantifier after a multi-byte character
/// repeats its last byte (`é+` is C3 A9+: write `(?:é)+`). ASCII patterns behave as usual.
///
/// ## How (PCRE2)
/// PCRE2 refuses partial matching together with PCRE2_ENDANCHORED, so the pattern is compiled
/// anchored as `(?:PATTERN)\z` (leading `(*...)` option settings are kept in front; the pattern
/// must compile on its own first, so its parentheses cannot leak out of the group; one that ends
/// inside a `(?x)` comment or an unterminated `\Q` quote is refused with a message).
///   viable(s)   : a PCRE2_PARTIAL_HARD match of s returns PCRE2_ERROR_PARTIAL (hard partial
///                 matching reports a partial match whenever a path reaches the end of s, and `\z`
///                 at the end always does), or a match ending at the end of s ((*ACCEPT));
///   complete(s) : an ordinary match of s ends at the end of s.
/// Matches run on the backtracking matcher (with PCRE2's JIT when available: PCRE2_JIT_COMPLETE
/// | PARTIAL_HARD) within a step budget (regex_options::backtrack_limit). Ambiguous patterns
/// (nested quantifiers such as `( ?[a-z]+)+`) backtrack exponentially when no path reaches the
/// end: a match over the budget is run again on PCRE2's DFA matcher (pcre2_dfa_match: every path
/// at once, time O(text length x pattern states), no blow-up), and from then on every match of
/// that pattern (all copies) goes to the DFA matcher. The DFA matcher does not run back
/// references, (*ACCEPT), \K or conditions on groups: for such patterns a match over the budget
/// refuses the token (counted: regex_stats::match_errors).
///
/// ## Cost per query
/// One query costs one match over text + bytes(t), O(text length) for unambiguous patterns:
/// measured here (g++ -O2, AVX-512 laptop core) about 0.1 us with the JIT for a 130-byte text,
/// 5-7 us on the DFA matcher. A first-byte cache makes most refusals O(1): viability is
/// prefix-closed (if text + b has no partial match, no string starting with b has one), so the
/// 256 answers for text + one byte are computed on demand once per state and every token whose
/// first byte is not viable is refused without matching. The state follows the history through
/// the history hooks in O(change): append adds the tokens' bytes, cut_back drops the recorded
/// byte lengths of the removed tokens, reset rebuilds (O(history)); each change clears the
/// caches (256 bytes).
///
/// ## Exactness
/// Hard partial matching is exact for patterns built from literals, classes, alternation,
/// groups, greedy / lazy / possessive quantifiers and atomic groups (PCRE2's own semantics of the
/// last two; the DFA matcher locks the longest match of an atomic group where backtracking locks
/// the first, so `(?>a|ab)c` accepts "abc" only there). It over-approximates where PCRE2 cannot
/// see ahead: a lookahead, \b, \B or $ at the end of the text, and a class that matches no byte
/// (`a[^\x00-\xff]`), report a partial match that may lead nowhere. The output is then still a
/// viable prefix at every step, but generation can reach a dead end (nothing allowed, the text
/// not complete): the driver stops there with constraint_done and is_complete() false.
/// (*ACCEPT) before the end of the pattern can refuse tokens the pattern would allow (the
/// constraint is then stricter, never looser). Back references work on the backtracking
/// matcher.
///
/// ## Bad input and limits (every build type)
/// regex_constraint::compile() validates the options (regex_options::check(): field and range),
/// the vocabulary and the pattern (PCRE2's message and offset) up front and returns an error
/// instead of a constraint. Every match runs under PCRE2's match, depth and heap limits, a
/// bounded JIT stack and a bounded DFA workspace (regex_options): a match that fails for any
/// reason other than "no match" refuses the token and is counted (regex_stats::match_errors):
/// fail closed. A token id outside the vocabulary is refused. allowed() refuses every token
/// (counted in regex_stats::out_of_sync) when the context's history is not the one the hooks
/// followed (length, prompt length, last token), instead of answering for another text.
///
/// ## Threads and copies
/// allowed() is const but uses per-object scratch (match data, caches): one object serves one
/// thread at a time, as a sampler does. Copies share the compiled pattern and the vocabulary
/// (immutable but for the atomic "use the DFA matcher" flag) and own their state and scratch.

#ifndef PCRE2_CODE_UNIT_WIDTH
#define PCRE2_CODE_UNIT_WIDTH 8
#endif
#include <pcre2.h>

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#if PCRE2_MAJOR < 10 || (PCRE2_MAJOR == 10 && PCRE2_MINOR < 30)
#error "dk_regex needs PCRE2 >= 10.30 (depth and heap limits)"
#endif

namespace dk_regex {

namespace dk = decodekit;
using dk::token_id;

/// How tokens become bytes: the backend's detokenizer in table form.
struct vocabulary {
    std::vector<std::string> bytes;  ///< bytes[t]: the text token t adds (after a non-BOS token)
    /// The text token t adds right after BOS when it differs (llama2.c / SentencePiece drop the
    /// leading space of a piece there): empty, or one entry per token.
    std::vector<std::string> bytes_after_bos;
    token_id bos_id = -1;           ///< never allowed (-1: none)
    std::vector<token_id> eos_ids;  ///< allowed only when the text is a full match; add no text

    /// Why the vocabulary cannot be used, or nothing.
    std::optional<std::string> check() const {
        if (bytes.empty() || bytes.size() > max_tokens)
            return "dk_regex::vocabulary.bytes: " + std::to_string(bytes.size()) +
                   " tokens, must be in [1, 4194304]";
        for (std::size_t t = 0; t < bytes.size(); ++t)
            if (bytes[t].size() > max_token_bytes)
                return "dk_regex::vocabulary.bytes[" + std::to_string(t) +
                       "]: " + std::to_string(bytes[t].size()) + " bytes, must be in [0, 65536]";
        if (!bytes_after_bos.empty() && bytes_after_bos.size() != bytes.size())
            return "dk_regex::vocabulary.bytes_after_bos: " +
                   std::to_string(bytes_after_bos.size()) + " entries, must be 0 or " +
                   std::to_string(bytes.size()) + " (one per token)";
        for (std::size_t t = 0; t < bytes_after_bos.size(); ++t)
            if (bytes_after_bos[t].size() > max_token_bytes)
                return "dk_regex::vocabulary.bytes_after_bos[" + std::to_string(t) +
                       "]: " + std::to_string(bytes_after_bos[t].size()) +
                       " bytes, must be in [0, 65536]";
        if (bos_id < -1 || bos_id >= token_id(bytes.size()))
            return "dk_regex::vocabulary.bos_id: " + std::to_string(bos_id) +
                   ", must be -1 or in [0, " + std::to_string(bytes.size()) + ")";
        for (token_id e : eos_ids)
            if (e < 0 || e >= token_id(bytes.size()) || e == bos_id)
                return "dk_regex::vocabulary.eos_ids: " + std::to_string(e) + ", must be in [0, " +
                       std::to_string(bytes.size()) + ") and not bos_id";
        return std::nullopt;
    }
    static constexpr std::size_t max_tokens = std::size_t(1) << 22;
    static constexpr std::size_t max_token_bytes = 65536;
};

/// Limits of a regex constraint (every query runs under them).
struct regex_options {
    std::size_t max_pattern_bytes = 4096;  ///< [1, 65536]
    /// Backtracking budget per match (PCRE2's match and depth limits), [1, 10^8]: a match that
    /// exceeds it is run again by the DFA matcher, which then serves every later match.
    std::uint32_t backtrack_limit = 100'000;
    std::uint32_t heap_limit_kib = 16384;  ///< PCRE2 heap limit per match in KiB, [64, 2^20]
    std::uint32_t jit_stack_kib = 1024;    ///< JIT stack per constraint copy in KiB, [32, 65536]
    /// Largest DFA workspace per constraint copy in KiB, [4, 2^20] (it starts at 4 KiB).
    std::uint32_t dfa_workspace_kib = 1024;
    bool jit = true;  ///< use PCRE2's JIT when the platform has it

    /// The first field out of range (named, with its range), or nothing.
    std::optional<std::string> check() const {
        auto bad = [](const char* f, double v, const char* range) {
            return std::string("dk_regex::regex_options.") + f + ": " +
                   std::to_string((long long)v) + ", must be in " + range;
        };
        if (max_pattern_bytes < 1 || max_pattern_bytes > 65536)
            return bad("max_pattern_bytes", double(max_pattern_bytes), "[1, 65536]");
        if (backtrack_limit < 1 || backtrack_limit > 100'000'000)
            return bad("backtrack_limit", backtrack_limit, "[1, 100000000]");
        if (heap_limit_kib < 64 || heap_limit_kib > (1u << 20))
            return bad("heap_limit_kib", heap_limit_kib, "[64, 1048576]");
        if (jit_stack_kib < 32 || jit_stack_kib > 65536)
            return bad("jit_stack_kib", jit_stack_kib, "[32, 65536]");
        if (dfa_workspace_kib < 4 || dfa_workspace_kib > (1u << 20))
            return bad("dfa_workspace_kib", dfa_workspace_kib, "[4, 1048576]");
        return std::nullopt;
    }
};

/// What a constraint has done (per object; copies start from the copied counts).
struct regex_stats {
    std::uint64_t queries = 0;           ///< allowed() calls
    std::uint64_t extension_checks = 0;  ///< tokens can_extend() tried
    std::uint64_t matches = 0;           ///< matches run (cache hits run none)
    std::uint64_t dfa_matches = 0;       ///< of which by the DFA matcher
    std::uint64_t match_errors = 0;      ///< matches that failed (a limit, no memory): refused
    std::uint64_t out_of_sync = 0;       ///< allowed() calls on a history not followed: refused
};

/// A value or the message saying why there is none.
template <class T>
class result {
public:
    result(T v) : value_(std::move(v)) {}  // NOLINT(google-explicit-constructor)
    static result failure(std::string message) {
        result r;
        r.error_ = std::move(message);
        return r;
    }
    bool ok() const noexcept { return value_.has_value(); }
    explicit operator bool() const noexcept { return ok(); }
    /// The value. \pre ok()
    T& value() & noexcept { return *value_; }
    const T& value() const& noexcept { return *value_; }
    T&& value() && noexcept { return std::move(*value_); }
    T* operator->() noexcept { return &*value_; }
    const T* operator->() const noexcept { return &*value_; }
    /// Why there is no value (empty when ok()).
    const std::string& error() const noexcept { return error_; }

private:
    result() = default;
    std::optional<T> value_;
    std::string error_;
};

namespace detail {

struct code_free {
    void operator()(pcre2_code_8* c) const noexcept { pcre2_code_free_8(c); }
};
struct match_data_free {
    void operator()(pcre2_match_data_8* m) const noexcept { pcre2_match_data_free_8(m); }
};
struct match_context_free {
    void operator()(pcre2_match_context_8* m) const noexcept { pcre2_match_context_free_8(m); }
};
struct jit_stack_free {
    void operator()(pcre2_jit_stack_8* s) const noexcept { pcre2_jit_stack_free_8(s); }
};
struct compile_context_free {
    void operator()(pcre2_compile_context_8* c) const noexcept { pcre2_compile_context_free_8(c); }
};

/// PCRE2's message for an error code.
inline std::string pcre2_message(int code) {
    PCRE2_UCHAR8 buf[256];
    const int n = pcre2_get_error_message_8(code, buf, sizeof buf);
    return n > 0 ? std::string(reinterpret_cast<const char*>(buf), std::size_t(n))
                 : "PCRE2 error " + std::to_string(code);
}

/// Compile options: anchored, bytes only (no UTF, no Unicode properties).
inline constexpr std::uint32_t compile_options =
    PCRE2_ANCHORED | PCRE2_NEVER_UTF | PCRE2_NEVER_UCP | PCRE2_NEVER_BACKSLASH_C;

/// Splits the leading start-of-pattern settings `(*NAME)` / `(*NAME=n)` off a pattern (they
/// must stay first when the pattern is wrapped); backtracking verbs stay in the body.
inline std::size_t leading_settings(std::string_view p) noexcept {
    std::size_t at = 0;
    while (p.substr(at, 2) == "(*") {
        const std::size_t close = p.find(')', at + 2);
        if (close == std::string_view::npos) break;
        const std::string_view name = p.substr(at + 2, close - at - 2);
        const std::string_view base = name.substr(0, name.find('='));
        bool upper = !name.empty();
        for (char ch : name)
            upper = upper && ((ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                              ch == '=');
        const bool verb = base == "ACCEPT" || base == "FAIL" || base == "F" || base == "COMMIT" ||
                          base == "PRUNE" || base == "SKIP" || base == "THEN";
        if (!upper || verb) break;
        at = close + 1;
    }
    return at;
}

/// What every copy of a constraint shares (immutable after compile()).
struct compiled {
    std::string pattern;
    std::unique_ptr<pcre2_code_8, code_free> code;
    bool jit = false;  ///< the JIT compiled both modes
    regex_options options;
    vocabulary vocab;
    std::vector<std::uint8_t> kind;   ///< per token: 0 ordinary, 1 never (BOS, empty), 2 EOS
    std::vector<token_id> by_length;  ///< ordinary tokens, shortest text first (can_extend)
    std::size_t longest = 0;          ///< longest token text in bytes
    /// Learnt by any copy: backtracking exceeded its budget once (so the DFA matcher runs), or
    /// the DFA matcher cannot run this pattern (back references, (*ACCEPT), ...).
    mutable std::atomic<bool> use_dfa{false}, dfa_unusable{false};
};

}  // namespace detail

/// The regular-expression constraint (see the file comment). Models decodekit's token_constraint
/// with history hooks; build it with compile().
class regex_constraint {
public:
    /// Compiles `pattern` against `vocab`. Fails (with a message naming the field and its
    /// range, or PCRE2's message and offset) on bad options, a bad vocabulary or a bad pattern.
    static result<regex_constraint> compile(std::string_view pattern, vocabulary vocab,
                                            const regex_options& options = {}) {
        using R = result<regex_constraint>;
        if (auto e = options.check()) return R::failure(*e);
        if (auto e = vocab.check()) return R::failure(*e);
        if (pattern.size() > options.max_pattern_bytes)
            return R::failure("dk_regex: pattern: " + std::to_string(pattern.size()) +
                              " bytes, must be in [0, regex_options.max_pattern_bytes = " +
                              std::to_string(options.max_pattern_bytes) + "]");
        std::unique_ptr<pcre2_compile_context_8, detail::compile_context_free> cctx(
            pcre2_compile_context_create_8(nullptr));
        if (!cctx) return R::failure("dk_regex: out of memory (compile context)");
        int err = 0;
        PCRE2_SIZE offset = 0;
        auto try_compile = [&](std::string_view p) {
            return std::unique_ptr<pcre2_code_8, detail::code_free>(
                pcre2_compile_8(reinterpret_cast<PCRE2_SPTR8>(p.data()), p.size(),
                                detail::compile_options, &err, &offset, cctx.get()));
        };
        // The pattern alone first: its errors are reported at its own offsets, and a pattern
        // that compiles alone cannot close the wrapping group early.
        if (!try_compile(pattern))
            return R::failure("dk_regex: pattern: " + detail::pcre2_message(err) + " at offset " +
                              std::to_string(offset));
        const std::size_t lead = detail::leading_settings(pattern);
        std::string wrapped(pattern.substr(0, lead));
        wrapped += "(?:";
        wrapped += pattern.substr(lead);
        wrapped += ")\\z";
        auto shared = std::make_shared<detail::compiled>();
        shared->code = try_compile(wrapped);
        if (!shared->code)
            return R::failure(
                err == PCRE2_ERROR_MISSING_CLOSING_PARENTHESIS
                    ? std::string("dk_regex: pattern: ends inside a (?x) comment or a \\Q quote "
                                  "(end the comment with a newline, the quote with \\E)")
                    : "dk_regex: pattern: " + detail::pcre2_message(err));
        shared->jit =
            options.jit && pcre2_jit_compile_8(shared->code.get(),
                                               PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_HARD) == 0;
        shared->pattern = std::string(pattern);
        shared->options = options;
        shared->kind.assign(vocab.bytes.size(), 0);
        if (vocab.bos_id >= 0) shared->kind[std::size_t(vocab.bos_id)] = 1;
        for (token_id e : vocab.eos_ids) shared->kind[std::size_t(e)] = 2;
        for (std::size_t t = 0; t < vocab.bytes.size(); ++t) {
            shared->longest = std::max(shared->longest, vocab.bytes[t].size());
            if (!vocab.bytes_after_bos.empty())
                shared->longest = std::max(shared->longest, vocab.bytes_after_bos[t].size());
            if (shared->kind[t] == 0 && vocab.bytes[t].empty()) shared->kind[t] = 1;
            if (shared->kind[t] == 0) shared->by_length.push_back(token_id(t));
        }
        std::stable_sort(
            shared->by_length.begin(), shared->by_length.end(), [&](token_id a, token_id b) {
                return vocab.bytes[std::size_t(a)].size() < vocab.bytes[std::size_t(b)].size();
            });
        shared->vocab = std::move(vocab);
        regex_constraint c(std::move(shared));
        if (!c.scratch_ok()) return R::failure("dk_regex: out of memory (match data)");
        return R(std::move(c));
    }

    regex_constraint(const regex_constraint& o)
        : shared_(o.shared_),
          text_(o.text_),
          lens_(o.lens_),
          prompt_length_(o.prompt_length_),
          length_(o.length_),
          prev_(o.prev_),
          stats_(o.stats_) {
        make_scratch();
        reserve_text();
    }
    regex_constraint(regex_constraint&&) noexcept = default;
    regex_constraint& operator=(const regex_constraint& o) {
        if (this != &o) *this = regex_constraint(o);
        return *this;
    }
    regex_constraint& operator=(regex_constraint&&) noexcept = default;

    // ---- the token_constraint interface

    /// True when token t may come next (see the file comment); counts a query.
    bool allowed(token_id t, const dk::processor_context& c) const noexcept {
        ++stats_.queries;
        if (t < 0 || std::size_t(t) >= shared_->kind.size()) return false;
        if (!follows(c)) {
            ++stats_.out_of_sync;
            return false;
        }
        return allowed_now(t);
    }

    /// History hook: c.history[size - added.size(), size) were appended. O(added bytes).
    void append(std::span<const token_id> added, const dk::processor_context& c) {
        const std::size_t n = c.history.size();
        if (added.size() > n || n - added.size() != length_ || c.prompt_length != prompt_length_) {
            reset(c);  // not the history followed so far: rebuild
            return;
        }
        for (std::size_t p = length_; p < n; ++p) push(c.history, p);
        changed();
    }
    /// History hook: the history was cut back to its first `keep` tokens (c.history is the new
    /// history, possibly longer again: append follows). O(removed).
    void cut_back(std::size_t keep, std::span<const token_id> removed,
                  const dk::processor_context& c) {
        if (keep > length_ || keep > c.history.size() || removed.size() != length_ - keep ||
            c.prompt_length != prompt_length_) {
            reset(c);
            return;
        }
        const std::size_t g = keep > prompt_length_ ? keep - prompt_length_ : 0;
        std::size_t drop = 0;
        for (std::size_t i = g; i < lens_.size(); ++i) drop += lens_[i];
        text_.resize(text_.size() - drop);
        lens_.resize(g);
        length_ = keep;
        prev_ = keep ? c.history[keep - 1] : -1;
        changed();
    }
    /// History hook: rebuilds the state from c.history. O(history).
    void reset(const dk::processor_context& c) {
        prompt_length_ = c.prompt_length;
        text_.clear();
        lens_.clear();
        length_ = 0;
        prev_ = -1;
        for (std::size_t p = 0; p < c.history.size(); ++p) push(c.history, p);
        changed();
    }

    // ---- state

    /// True when the text is a full match of the pattern (EOS is then allowed).
    bool is_complete() const noexcept {
        if (complete_ < 0) complete_ = run({}, false) ? 1 : 0;
        return complete_ == 1;
    }
    /// True when some ordinary token keeps the text viable. Cached per state; costs at most 256
    /// matches (the first-byte cache) plus one match per token whose first byte is viable,
    /// shortest tokens first (with byte tokens in the vocabulary: a few queries when it can).
    bool can_extend() const noexcept {
        if (extend_ < 0) {
            extend_ = 0;
            for (token_id t : shared_->by_length) {
                ++stats_.extension_checks;
                if (allowed_now(t)) {
                    extend_ = 1;
                    break;
                }
            }
        }
        return extend_ == 1;
    }
    /// True when the text is a full match that no token extends: generation is over.
    bool finished() const noexcept { return is_complete() && !can_extend(); }
    /// True when the history in `c` is the one the hooks followed (what allowed() checks).
    bool follows(const dk::processor_context& c) const noexcept {
        return c.history.size() == length_ && c.prompt_length == prompt_length_ &&
               (length_ == 0 || c.history[length_ - 1] == prev_);
    }

    /// The text so far (the generated part of the history, as bytes).
    std::string_view text() const noexcept { return text_; }
    /// Bytes token t adds after the current history (BOS / EOS: none).
    std::string_view token_text(token_id t) const noexcept {
        if (t < 0 || std::size_t(t) >= shared_->kind.size() || shared_->kind[std::size_t(t)] == 2)
            return {};
        return bytes_after(prev_, t);
    }
    const std::string& pattern() const noexcept { return shared_->pattern; }
    /// True when PCRE2's JIT runs the queries.
    bool jit() const noexcept { return shared_->jit; }
    const vocabulary& vocab() const noexcept { return shared_->vocab; }
    const regex_stats& stats() const noexcept { return stats_; }
    void clear_stats() noexcept { stats_ = {}; }

private:
    explicit regex_constraint(std::shared_ptr<const detail::compiled> s) : shared_(std::move(s)) {
        make_scratch();
        reserve_text();
    }

    bool scratch_ok() const noexcept { return md_ && mctx_; }
    void make_scratch() {
        md_.reset(pcre2_match_data_create_8(1, nullptr));
        mctx_.reset(pcre2_match_context_create_8(nullptr));
        if (!mctx_) return;
        const regex_options& o = shared_->options;
        pcre2_set_match_limit_8(mctx_.get(), o.backtrack_limit);
        pcre2_set_depth_limit_8(mctx_.get(), o.backtrack_limit);
        pcre2_set_heap_limit_8(mctx_.get(), o.heap_limit_kib);
        if (shared_->jit) {
            jit_stack_.reset(
                pcre2_jit_stack_create_8(32 * 1024, std::size_t(o.jit_stack_kib) * 1024, nullptr));
            if (jit_stack_) pcre2_jit_stack_assign_8(mctx_.get(), nullptr, jit_stack_.get());
        }
    }
    /// Queries append at most `longest` bytes: keep that room so they never allocate.
    void reserve_text() { text_.reserve(text_.size() + shared_->longest); }

    std::string_view bytes_after(token_id prev, token_id t) const noexcept {
        const vocabulary& v = shared_->vocab;
        if (prev >= 0 && prev == v.bos_id && !v.bytes_after_bos.empty())
            return v.bytes_after_bos[std::size_t(t)];
        return v.bytes[std::size_t(t)];
    }
    /// Follows history[p] (p == length_).
    void push(std::span<const token_id> history, std::size_t p) {
        const token_id t = history[p];
        if (p >= prompt_length_) {
            std::size_t n = 0;
            if (t >= 0 && std::size_t(t) < shared_->kind.size() &&
                shared_->kind[std::size_t(t)] != 2 && t != shared_->vocab.bos_id) {
                const std::string_view b = bytes_after(p ? history[p - 1] : -1, t);
                text_.append(b);
                n = b.size();
            }
            lens_.push_back(std::uint32_t(n));
        }
        length_ = p + 1;
        prev_ = t;
    }
    void changed() {
        first_.fill(0);
        complete_ = extend_ = -1;
        reserve_text();
    }

    /// allowed() on the followed history.
    bool allowed_now(token_id t) const noexcept {
        const std::uint8_t k = shared_->kind[std::size_t(t)];
        if (k == 2) return is_complete();
        if (k == 1) return false;
        const std::string_view b = bytes_after(prev_, t);
        if (b.empty()) return false;  // after BOS " " is empty
        const std::size_t f = static_cast<unsigned char>(b.front());
        if (first_[f] == 0) first_[f] = run(b.substr(0, 1), true) ? 1 : 2;
        if (first_[f] == 2) return false;
        return b.size() == 1 || run(b, true);
    }

    /// Matches text_ + suffix: viability (partial) or a full match. The text keeps room for the
    /// longest token, so this allocates only when the DFA workspace grows (nothrow).
    bool run(std::string_view suffix, bool partial) const noexcept {
        if (!md_ || !mctx_) {
            ++stats_.match_errors;
            return false;
        }
        ++stats_.matches;
        const std::size_t n = text_.size();
        text_.append(suffix);
        const int r = match(partial);
        const std::size_t len = text_.size();
        text_.resize(n);
        if (r >= 0) return pcre2_get_ovector_pointer_8(md_.get())[1] == len;  // (*ACCEPT) early
        if (r == PCRE2_ERROR_PARTIAL && partial) return true;
        if (r != PCRE2_ERROR_NOMATCH && r != PCRE2_ERROR_PARTIAL) ++stats_.match_errors;
        return false;
    }
    /// One match of text_ (PCRE2's result code): backtracking (JIT) within its budget, else the
    /// DFA matcher.
    int match(bool partial) const noexcept {
        const auto subject = reinterpret_cast<PCRE2_SPTR8>(text_.data());
        const std::uint32_t how = partial ? PCRE2_PARTIAL_HARD : 0;
        const detail::compiled& c = *shared_;
        const bool dfa_ok = !c.dfa_unusable.load(std::memory_order_relaxed);
        if (!dfa_ok || !c.use_dfa.load(std::memory_order_relaxed)) {
            const int r =
                pcre2_match_8(c.code.get(), subject, text_.size(), 0, how, md_.get(), mctx_.get());
            const bool over = r == PCRE2_ERROR_MATCHLIMIT || r == PCRE2_ERROR_DEPTHLIMIT ||
                              r == PCRE2_ERROR_HEAPLIMIT || r == PCRE2_ERROR_JIT_STACKLIMIT;
            if (!over || !dfa_ok) return r;
            c.use_dfa.store(true, std::memory_order_relaxed);
        }
        ++stats_.dfa_matches;
        for (;;) {
            if (dfa_ws_size_ == 0 && !grow_dfa_workspace()) return PCRE2_ERROR_NOMEMORY;
            const int r = pcre2_dfa_match_8(c.code.get(), subject, text_.size(), 0, how, md_.get(),
                                            mctx_.get(), dfa_ws_.get(), dfa_ws_size_);
            if (r == PCRE2_ERROR_DFA_WSSIZE && grow_dfa_workspace()) continue;
            if (r == PCRE2_ERROR_DFA_UITEM || r == PCRE2_ERROR_DFA_UCOND ||
                r == PCRE2_ERROR_DFA_UFUNC)
                c.dfa_unusable.store(true, std::memory_order_relaxed);  // backtracking again
            return r == 0 ? 1 : r;  // 0: a match that did not fit the ovector
        }
    }
    /// Doubles the DFA workspace (from 4 KiB) up to regex_options::dfa_workspace_kib; false at
    /// the limit or without memory.
    bool grow_dfa_workspace() const noexcept {
        const std::size_t limit = std::size_t(shared_->options.dfa_workspace_kib) * 256;
        const std::size_t next = dfa_ws_size_ ? dfa_ws_size_ * 2 : 1024;
        if (next > limit) return false;
        std::unique_ptr<int[]> w(new (std::nothrow) int[next]);
        if (!w) return false;
        dfa_ws_ = std::move(w);
        dfa_ws_size_ = next;
        return true;
    }

    std::shared_ptr<const detail::compiled> shared_;
    // state: the text of the followed history and the byte length of each generated token
    mutable std::string text_;  // mutable: queries append a token and take it off again
    std::vector<std::uint32_t> lens_;
    std::size_t prompt_length_ = 0;
    std::size_t length_ = 0;  // history length followed
    token_id prev_ = -1;      // its last token
    // caches of the current state and per-object scratch
    mutable std::array<std::uint8_t, 256> first_{};  // 0 unknown, 1 viable, 2 not
    mutable std::int8_t complete_ = -1, extend_ = -1;
    mutable regex_stats stats_;
    std::unique_ptr<pcre2_match_data_8, detail::match_data_free> md_;
    std::unique_ptr<pcre2_match_context_8, detail::match_context_free> mctx_;
    std::unique_ptr<pcre2_jit_stack_8, detail::jit_stack_free> jit_stack_;
    mutable std::unique_ptr<int[]> dfa_ws_;  // the DFA matcher's workspace, grown on demand
    mutable std::size_t dfa_ws_size_ = 0;
};

static_assert(dk::token_constraint<regex_constraint>);
static_assert(dk::history_follower<regex_constraint>);

}  // namespace dk_regex
