#pragma once
/// \file processors/dry.hpp
/// DRY ("don't repeat yourself") penalty with llama.cpp semantics (src/llama-sampling.cpp,
/// ported there from koboldcpp).
///
/// Window: the last `penalty_last_n` tokens of the history (0 = the whole history; llama.cpp's
/// -1), further limited to the workspace capacity (only the most recent tokens that fit are used).
/// For a candidate token t, n = the length of the longest suffix of the window that also occurs
/// earlier in the window immediately followed by t. If n >= allowed_length,
///   x_t -= multiplier * base^(n - allowed_length).
/// Sequence breakers: n is capped at the number of tokens after the last breaker occurrence in
/// the window (no penalty at all when that is < allowed_length). A breaker is a single token
/// (`sequence_breakers`) or a token sequence (`sequence_breaker_sequences`, as llama.cpp makes
/// from breaker strings; an occurrence must lie wholly in the window; the occurrence that starts
/// last wins, the longest breaker if several start at that position).
/// Single-token breakers are never penalised themselves; the tokens of longer breakers are.
/// The window must be longer than allowed_length for anything to happen.
/// Overflow: the exponent is clamped to floor(88.7228391 / ln(base)) as llama.cpp does, the
/// penalty to FLT_MAX, and a finite logit never becomes -inf (it saturates at -FLT_MAX).
/// Special values: NaN and +-inf logits are left as they are. Token ids outside [0, V) in the
/// history match other equal ids like any value but are never penalised; single-token breakers
/// outside [0, V), and breaker sequences whose first token is outside [0, V), are ignored. Cost
/// O(window) (reverse Z-algorithm), no allocation. Statefulness: none; the caller passes the
/// history each call.
/// dry_processor is the processor form (processors/processor.hpp): O(window) per call, no
/// per-sequence state beyond its parameters (shared between copies); its O(V) scratch is a
/// workspace per thread (see dry_processor).

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// DRY configuration; multiplier 0 (the default) disables it. Defaults are llama.cpp's.
struct dry_params {
    float multiplier = 0.f;                     ///< >= 0; 0 disables
    float base = 1.75f;                         ///< >= 1
    std::size_t allowed_length = 2;             ///< >= 1: repeats up to this length are free
    std::size_t penalty_last_n = 0;             ///< window length; 0 = whole history
    std::vector<token_id> sequence_breakers{};  ///< single-token breakers
    /// Multi-token breakers (empty ones ignored; one-token ones act as sequence_breakers).
    std::vector<std::vector<token_id>> sequence_breaker_sequences{};

    /// True when apply_dry can change logits.
    bool enabled() const noexcept { return multiplier > 0.f; }

    /// The first invalid field as a message, or nullopt.
    std::optional<std::string> check() const {
        if (!(multiplier >= 0.f) || !std::isfinite(multiplier))
            return detail::range_message("dry_params.multiplier", "finite and >= 0", multiplier);
        if (!(base >= 1.f) || !std::isfinite(base))
            return detail::range_message("dry_params.base", "finite and >= 1", base);
        if (allowed_length < 1)
            return detail::range_message("dry_params.allowed_length", ">= 1",
                                         static_cast<double>(allowed_length));
        return std::nullopt;
    }
    /// Throws config_error (or calls the error handler) if check() finds a problem.
    void validate() const { raise_if(check()); }
};

/// Caller-owned scratch for apply_dry, sized once; every call leaves it as it found it. One per
/// thread: concurrent calls must not share a workspace (params and history may be shared).
struct dry_workspace {
    /// Capacity used when the constructor is given max_history = 0.
    static constexpr std::size_t default_max_history = 8192;

    dry_workspace() = default;
    /// \param max_history the longest window apply_dry will look at (0 = default_max_history);
    ///        longer histories are cut to their most recent max_history tokens.
    explicit dry_workspace(std::size_t vocab_size, std::size_t max_history = 0)
        : z(max_history == 0 ? default_max_history : max_history, 0),
          max_repeat(vocab_size, 0),
          is_breaker(vocab_size, 0) {}

    /// Returns the vocabulary size the workspace was sized for.
    std::size_t vocab_size() const noexcept { return max_repeat.size(); }
    /// Returns the longest window the workspace can hold.
    std::size_t max_history() const noexcept { return z.size(); }

    std::vector<std::uint32_t> z;           ///< Z-values of the reversed window
    std::vector<std::uint32_t> max_repeat;  ///< per token, zero outside a call
    std::vector<std::uint8_t> is_breaker;   ///< per token: 1 single breaker, 2 sequence head
};

/// Applies the DRY penalty to `logits` in place.
/// \pre params.check() is nullopt; ws.vocab_size() >= logits.size() (ids beyond it are ignored).
/// \post ws.max_repeat and ws.is_breaker are all zero again. O(window + breakers) with single
/// tokens; breaker sequences add at most their total length per occurrence of their first token.
inline void apply_dry(std::span<float> logits, std::span<const token_id> history,
                      const dry_params& params, dry_workspace& ws) noexcept {
    DECODEKIT_ASSERT(ws.vocab_size() >= logits.size(),
                     "apply_dry: workspace smaller than the vocabulary");
    if (!(params.multiplier > 0.f) || !(params.base >= 1.f) || params.allowed_length < 1) return;
    const std::size_t v = logits.size() < ws.vocab_size() ? logits.size() : ws.vocab_size();
    auto valid = [v](token_id t) noexcept { return t >= 0 && static_cast<std::size_t>(t) < v; };

    std::size_t len = history.size();
    if (params.penalty_last_n != 0 && params.penalty_last_n < len) len = params.penalty_last_n;
    if (ws.max_history() < len) len = ws.max_history();
    const std::size_t allowed = params.allowed_length;
    if (len <= allowed) return;
    const token_id* const w = history.data() + (history.size() - len);
    // r(j): the window read backwards, r(0) = most recent token.
    auto r = [w, len](std::size_t j) noexcept { return w[len - 1 - j]; };

    constexpr std::uint8_t single = 1, head = 2;
    std::uint8_t* const brk = ws.is_breaker.data();
    for (token_id b : params.sequence_breakers)
        if (valid(b)) brk[b] |= single;
    for (const std::vector<token_id>& s : params.sequence_breaker_sequences)
        if (!s.empty() && valid(s[0])) brk[s[0]] |= s.size() == 1 ? single : head;
    auto unmark = [&]() noexcept {
        for (token_id b : params.sequence_breakers)
            if (valid(b)) brk[b] = 0;
        for (const std::vector<token_id>& s : params.sequence_breaker_sequences)
            if (!s.empty() && valid(s[0])) brk[s[0]] = 0;
    };

    // 1. The repeat length is capped by the number of tokens after the last breaker.
    std::size_t rep_limit = len;
    for (std::size_t i = 0; i < len; ++i) {
        const token_id t = r(i);
        if (!valid(t) || brk[t] == 0) continue;
        std::size_t longest = 0;  // tail length of the longest breaker starting here, plus one
        if (brk[t] & single) longest = 1;
        if (brk[t] & head) {
            for (const std::vector<token_id>& s : params.sequence_breaker_sequences) {
                if (s.size() < 2 || s[0] != t) continue;
                const std::size_t m = s.size() - 1;  // tail length
                if (m + 1 <= longest || m > i) continue;
                std::size_t o = 0;
                while (o < m && s[1 + o] == r(i - o - 1)) ++o;
                if (o == m) longest = m + 1;
            }
        }
        if (longest > 0) {
            rep_limit = i - (longest - 1);
            break;
        }
    }
    if (rep_limit < allowed) {
        unmark();
        return;
    }

    // 2. Z-algorithm on the reversed window: z[k] = length of the longest common prefix of r and
    //    r shifted by k = the longest suffix of the window also ending at position len-1-k.
    std::uint32_t* const z = ws.z.data();
    z[0] = static_cast<std::uint32_t>(len);
    for (std::size_t k = 1, lo = 0, hi = 0; k < len; ++k) {  // [lo, hi): rightmost Z-box
        std::size_t n = 0;
        if (k < hi) {
            n = hi - k;
            if (z[k - lo] < n) n = z[k - lo];
        }
        while (k + n < len && r(n) == r(k + n)) ++n;
        if (k + n > hi) {
            lo = k;
            hi = k + n;
        }
        z[k] = static_cast<std::uint32_t>(n);
    }

    // 3. The token that followed each earlier occurrence would extend the repeat: keep the
    //    longest repeat per token.
    std::uint32_t* const best = ws.max_repeat.data();
    for (std::size_t k = 1; k < len; ++k) {
        const std::size_t n = z[k] < rep_limit ? z[k] : rep_limit;
        if (n < allowed) continue;
        const token_id t = w[len - k];  // follows position len-1-k
        if (!valid(t) || (brk[t] & single) != 0) continue;
        if (best[t] < n) best[t] = static_cast<std::uint32_t>(n);
    }

    // 4. Penalise each such token once, resetting the workspace as we go.
    long max_exponent = 0;
    if (params.base > 1.000001f)
        max_exponent = static_cast<long>(88.7228391f / std::log(params.base));
    for (std::size_t k = 1; k < len; ++k) {
        const token_id t = w[len - k];
        if (!valid(t) || best[t] == 0) continue;
        long e = static_cast<long>(best[t]) - static_cast<long>(allowed);
        if (max_exponent > 0 && e > max_exponent) e = max_exponent;
        best[t] = 0;
        double penalty = static_cast<double>(params.multiplier) *
                         std::pow(static_cast<double>(params.base), static_cast<double>(e));
        if (!(penalty <= static_cast<double>(FLT_MAX))) penalty = FLT_MAX;
        float& x = logits[static_cast<std::size_t>(t)];
        if (!std::isfinite(x)) continue;
        const float y = x - static_cast<float>(penalty);
        x = y < -FLT_MAX ? -FLT_MAX : y;
    }
    unmark();
}

namespace detail {
/// This thread's DRY workspace, grown (never shrunk) to at least `vocab` entries and a window of
/// `window` tokens. Allocates only while it grows.
inline dry_workspace& thread_dry_workspace(std::size_t vocab, std::size_t window) {
    thread_local dry_workspace ws;
    if (ws.vocab_size() < vocab || ws.max_history() < window)
        ws = dry_workspace(std::max(vocab, ws.vocab_size()),
                           std::max({window, ws.max_history(), std::size_t{1}}));
    return ws;
}
}  // namespace detail

/// apply_dry as a processor: the same result as apply_dry with a workspace of `max_history`
/// tokens. Its O(V) scratch is not per sequence: apply() uses a workspace per thread
/// (thread_local, grown on demand to the largest vocabulary and window it has seen on that thread,
/// about 5 bytes per vocabulary entry plus 4 per window token; it allocates only while it grows,
/// and lives until the thread ends). Sparse: touched() declares the tokens of the window
/// (O(window)). Stateless between calls; the parameters are shared between copies (a copy is O(1)).
class dry_processor {
public:
    /// \param max_history the longest window looked at (0 = dry_workspace::default_max_history)
    /// \pre params.check() is nullopt (validated here: config_error or the error handler).
    explicit dry_processor(dry_params params, std::size_t max_history = 0)
        : max_history_(max_history == 0 ? dry_workspace::default_max_history : max_history) {
        params.validate();
        p_ = std::make_shared<const dry_params>(std::move(params));
    }
    const dry_params& params() const noexcept { return *p_; }
    std::size_t max_history() const noexcept { return max_history_; }

    void apply(std::span<float> logits, const processor_context& c) const {
        const std::size_t w = window(c);
        if (w == 0) return;
        apply_dry(logits, c.history.last(w), *p_, detail::thread_dry_workspace(logits.size(), w));
    }
    void touched(const processor_context& c, token_sink& out) const {
        out(c.history.last(window(c)));
    }

private:
    /// Length of the window apply_dry looks at (0 when it cannot change anything).
    std::size_t window(const processor_context& c) const noexcept {
        if (!p_->enabled()) return 0;
        std::size_t w = c.history.size();
        if (p_->penalty_last_n != 0 && p_->penalty_last_n < w) w = p_->penalty_last_n;
        if (max_history_ < w) w = max_history_;
        return w > p_->allowed_length ? w : 0;
    }

    std::shared_ptr<const dry_params> p_;
    std::size_t max_history_;
};

DECODEKIT_END_NAMESPACE
