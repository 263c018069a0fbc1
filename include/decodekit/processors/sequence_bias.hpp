#pragma once
/// \file processors/sequence_bias.hpp
/// Hugging Face's sequence_bias (SequenceBiasLogitsProcessor): an additive bias per token
/// sequence, given to the sequence's last token when the next token would complete it.
///
/// Rules:
///   - a one-token sequence {t} biases t at every position;
///   - a longer sequence {s_0, ..., s_m} biases s_m when the history ends with s_0 .. s_{m-1}
///     (the history is c.history: prompt + generated, as HF's input_ids);
///   - the biases of every sequence that applies to one token add up: the one-token bias first,
///     then the longer sequences in list order, summed in float, then added to the logit (HF's
///     order and rounding);
///   - a sequence listed twice keeps the last bias listed, at the first one's place in the
///     order (HF's mapping from sequence to bias);
///   - special values: a -inf bias is a ban, it writes -inf whatever the other biases and the
///     logit (NaN included); otherwise a NaN or -inf logit stays as it is (a +inf bias does not
///     revive a ban), and a +inf bias makes the sum +inf (HF gives NaN for -inf + +inf);
///   - token ids are compared like any other value (a prefix may hold ids outside [0, V)); a
///     last token outside [0, V) is never written.
/// One difference from HF on purpose: HF skips a sequence as long as it is longer than the
/// history, so a history of exactly s_0 .. s_{m-1} does not bias s_m there; here it does (the
/// history ends with the prefix), as banned sequences do (processors/ngram.hpp).
/// Configuration: every sequence non-empty and every bias not NaN (check() names the entry).
///
/// Stateless: no history hooks (nothing to follow). Each call looks only at the sequences
/// whose next-to-last token is the history's last token (a binary search in a table sorted by
/// it), so a call costs O(one-token sequences + log(longer sequences) + the prefix tokens
/// compared for those candidates), at most O(total sequence length). Sparse: touched()
/// declares the one-token sequences' tokens and the last tokens of the candidates (those that
/// could be biased at this position). The tables are shared between copies (a copy is O(1)).

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <numeric>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// A bias for a token sequence (see the file comment).
struct sequence_bias {
    std::vector<token_id> tokens;  ///< non-empty; the bias goes to tokens.back()
    float bias = 0.f;              ///< not NaN; -inf bans the last token after the prefix
};

/// Hugging Face's sequence bias (see the file comment).
class sequence_bias_processor {
public:
    /// The first invalid entry of `biases` as a message, or nullopt.
    static std::optional<std::string> check(std::span<const sequence_bias> biases) {
        for (std::size_t i = 0; i < biases.size(); ++i) {
            const std::string name = "sequence_bias_processor: biases[" + std::to_string(i) + "]";
            if (biases[i].tokens.empty())
                return name + ".tokens must hold at least one token, got none";
            if (std::isnan(biases[i].bias))
                return detail::range_message(name + ".bias", "not NaN",
                                             static_cast<double>(biases[i].bias));
        }
        return std::nullopt;
    }

    /// \pre check(biases) is nullopt (validated here: config_error or the error handler)
    explicit sequence_bias_processor(std::vector<sequence_bias> biases) {
        raise_if(check(biases));
        // identical sequences: the last bias at the first one's place (sort by sequence, then
        // by position; each run of equal sequences becomes one entry)
        std::vector<std::size_t> idx(biases.size());
        std::iota(idx.begin(), idx.end(), std::size_t{0});
        std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
            return biases[a].tokens != biases[b].tokens ? biases[a].tokens < biases[b].tokens
                                                        : a < b;
        });
        auto t = std::make_shared<tables>();
        for (std::size_t r = 0; r < idx.size();) {
            std::size_t e = r + 1;
            while (e < idx.size() && biases[idx[e]].tokens == biases[idx[r]].tokens) ++e;
            sequence_bias& s = biases[idx[r]];
            const float b = biases[idx[e - 1]].bias;
            if (s.tokens.size() == 1) {
                t->singles.push_back({s.tokens[0], b});
            } else {
                const std::size_t m = s.tokens.size() - 1;
                t->longers.push_back(
                    {s.tokens[m - 1], s.tokens[m], idx[r], b, std::move(s.tokens)});
            }
            r = e;
        }
        std::sort(t->singles.begin(), t->singles.end(),
                  [](const single& a, const single& b) { return a.token < b.token; });
        std::sort(t->longers.begin(), t->longers.end(), [](const longer& a, const longer& b) {
            if (a.before_last != b.before_last) return a.before_last < b.before_last;
            if (a.last != b.last) return a.last < b.last;
            return a.order < b.order;
        });
        t_ = std::move(t);
    }

    /// Number of distinct sequences of one token and of two tokens or more.
    std::size_t single_count() const noexcept { return t_->singles.size(); }
    std::size_t longer_count() const noexcept { return t_->longers.size(); }

    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        const std::span<const longer> cand = candidates(c.history);
        const std::size_t v = logits.size();
        auto valid = [v](token_id t) noexcept { return t >= 0 && static_cast<std::size_t>(t) < v; };
        for (const single& s : t_->singles) {
            if (!valid(s.token)) continue;
            bias_sum sum{s.bias};
            add_matches(sum, of_last(cand, s.token), c.history);
            sum.apply(logits[static_cast<std::size_t>(s.token)]);
        }
        // the candidates' last tokens without a one-token sequence (those were done above)
        for (std::size_t i = 0; i < cand.size();) {
            const token_id t = cand[i].last;
            std::size_t e = i + 1;
            while (e < cand.size() && cand[e].last == t) ++e;
            if (valid(t) && !has_single(t)) {
                bias_sum sum{};
                if (add_matches(sum, cand.subspan(i, e - i), c.history))
                    sum.apply(logits[static_cast<std::size_t>(t)]);
            }
            i = e;
        }
    }
    /// Declares the one-token sequences and the last token of every candidate.
    void touched(const processor_context& c, token_sink& out) const {
        for (const single& s : t_->singles) out(s.token);
        for (const longer& l : candidates(c.history)) out(l.last);
    }

private:
    struct single {
        token_id token;
        float bias;
    };
    struct longer {
        token_id before_last;  // tokens[size - 2]
        token_id last;         // tokens[size - 1]
        std::size_t order;     // place in the list (of its first occurrence)
        float bias;
        std::vector<token_id> tokens;
    };
    struct tables {
        std::vector<single> singles;  // by token
        std::vector<longer> longers;  // by (before_last, last, order)
    };
    /// A sum of biases in order; a -inf bias bans.
    struct bias_sum {
        float total = 0.f;
        bool ban = false;
        void add(float b) noexcept {
            if (b == -std::numeric_limits<float>::infinity())
                ban = true;
            else
                total += b;
        }
        explicit bias_sum(float first) noexcept { add(first); }
        bias_sum() noexcept = default;
        void apply(float& x) const noexcept {
            if (ban) {
                x = -std::numeric_limits<float>::infinity();
                return;
            }
            if (std::isnan(x) || x == -std::numeric_limits<float>::infinity()) return;
            x = x + total;
        }
    };

    /// The longer sequences whose next-to-last token is the history's last token.
    std::span<const longer> candidates(std::span<const token_id> h) const noexcept {
        if (h.empty()) return {};
        const std::vector<longer>& l = t_->longers;
        const token_id key = h.back();
        auto lo = std::lower_bound(l.begin(), l.end(), key,
                                   [](const longer& a, token_id k) { return a.before_last < k; });
        auto hi = std::upper_bound(lo, l.end(), key,
                                   [](token_id k, const longer& a) { return k < a.before_last; });
        return {l.data() + (lo - l.begin()), static_cast<std::size_t>(hi - lo)};
    }
    /// The candidates whose last token is t (they are sorted by it).
    static std::span<const longer> of_last(std::span<const longer> cand, token_id t) noexcept {
        auto lo = std::lower_bound(cand.begin(), cand.end(), t,
                                   [](const longer& a, token_id k) { return a.last < k; });
        auto hi = std::upper_bound(lo, cand.end(), t,
                                   [](token_id k, const longer& a) { return k < a.last; });
        return {cand.data() + (lo - cand.begin()), static_cast<std::size_t>(hi - lo)};
    }
    bool has_single(token_id t) const noexcept {
        const std::vector<single>& s = t_->singles;
        auto it = std::lower_bound(s.begin(), s.end(), t,
                                   [](const single& a, token_id k) { return a.token < k; });
        return it != s.end() && it->token == t;
    }
    /// Adds the bias of every sequence of `run` (in list order) whose prefix ends the history;
    /// true if one did.
    static bool add_matches(bias_sum& sum, std::span<const longer> run,
                            std::span<const token_id> h) noexcept {
        bool any = false;
        for (const longer& l : run) {
            const std::size_t m = l.tokens.size() - 1;  // prefix length; its last token matched
            if (m > h.size()) continue;
            const token_id* tail = h.data() + (h.size() - m);
            std::size_t j = m - 1;
            while (j > 0 && tail[j - 1] == l.tokens[j - 1]) --j;
            if (j == 0) {
                sum.add(l.bias);
                any = true;
            }
        }
        return any;
    }

    std::shared_ptr<const tables> t_;
};

DECODEKIT_END_NAMESPACE
