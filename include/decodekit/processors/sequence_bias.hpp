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
/// State: the sequences' prefixes form an automaton (Aho-Corasick); the per-sequence state is
/// the automaton's node at the history's end (the longest suffix of the history that begins a
/// prefix), and it follows the history through the hooks of processors/history.hpp: append
/// advances it over the added tokens (amortised O(1) per token), cut back and reset recompute it
/// from the last longest_prefix() tokens (the node is never deeper), never from the whole
/// history. A call then visits only the sequences whose prefix ends the history (the node's
/// output chain): O(one-token sequences + matches log matches). Used without a pipeline (no
/// hooks, or a history whose length differs from the one the hooks reported), it computes the
/// node from that window at each call instead. Sparse: touched() declares the one-token
/// sequences' tokens and the last tokens of the matching sequences. The tables are shared
/// between copies (a copy, a beam fork, is O(1) plus its state).

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
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
        t_ = std::make_shared<const tables>(build(std::move(biases)));
    }

    /// Number of distinct sequences of one token and of two tokens or more.
    std::size_t single_count() const noexcept { return t_->singles.size(); }
    std::size_t longer_count() const noexcept { return t_->entries.size(); }
    /// The longest prefix (tokens before the biased one) of the sequences: the depth of the
    /// window a cut-back or a rebuild rescans.
    std::size_t longest_prefix() const noexcept { return t_->depth; }

    // ---- the history hooks (processors/history.hpp) ----
    /// Rebuilds the state from the last longest_prefix() tokens of c.history.
    void reset(const processor_context& c) noexcept { follow(state_from(c.history), c); }
    /// The history lost its tokens from `keep` on: the state is recomputed from the window
    /// before `keep` (O(longest_prefix())).
    void cut_back(std::size_t keep, std::span<const token_id>,
                  const processor_context& c) noexcept {
        keep = std::min(keep, c.history.size());
        state_ = state_from(c.history.first(keep));
        len_ = keep;
    }
    /// Advances the state over the added tokens (amortised O(1) per token).
    void append(std::span<const token_id> added, const processor_context& c) noexcept {
        if (!synced_) return reset(c);
        for (token_id t : added) state_ = t_->next(state_, t);
        len_ = c.history.size();
    }

    void apply(std::span<float> logits, const processor_context& c) {
        const std::uint32_t s = state(c);
        // the matching longer sequences, sorted by (last token, place in the list): each
        // token's biases are then summed in HF's order
        matches_.clear();
        t_->for_each_match(s, [&](const entry& e) { matches_.push_back(&e); });
        std::sort(matches_.begin(), matches_.end(), [](const entry* a, const entry* b) {
            return a->last != b->last ? a->last < b->last : a->order < b->order;
        });
        const std::size_t v = logits.size();
        auto write = [&](token_id t, const bias_sum& sum) noexcept {
            if (t >= 0 && static_cast<std::size_t>(t) < v)
                sum.apply(logits[static_cast<std::size_t>(t)]);
        };
        // merge the one-token sequences (sorted by token) with the matches' groups
        const std::vector<single>& singles = t_->singles;
        std::size_t i = 0, j = 0;
        while (i < singles.size() || j < matches_.size()) {
            const token_id t = j == matches_.size() ? singles[i].token
                               : i == singles.size()
                                   ? matches_[j]->last
                                   : std::min(singles[i].token, matches_[j]->last);
            bias_sum sum{};
            if (i < singles.size() && singles[i].token == t) sum.add(singles[i++].bias);
            for (; j < matches_.size() && matches_[j]->last == t; ++j) sum.add(matches_[j]->bias);
            write(t, sum);
        }
    }
    /// Declares the one-token sequences and the last token of every matching longer sequence.
    void touched(const processor_context& c, token_sink& out) const {
        for (const single& s : t_->singles) out(s.token);
        t_->for_each_match(state(c), [&](const entry& e) { out(e.last); });
    }

private:
    struct single {
        token_id token;
        float bias;
    };
    /// A sequence of two tokens or more.
    struct entry {
        token_id last;        // the biased token
        std::uint32_t order;  // place in the list (of its first occurrence)
        float bias;
    };
    /// The automaton over the prefixes (Aho-Corasick): node 0 is the empty prefix; a node is a
    /// prefix of some sequence's prefix; fail is the node of its longest proper suffix that is a
    /// node; out is the nearest node along the fail chain that ends a prefix (0: none).
    struct node {
        std::uint32_t first_edge = 0, edges = 0;     // edges_[first_edge, + edges), by token
        std::uint32_t first_entry = 0, entries = 0;  // entries whose prefix is this node
        std::uint32_t fail = 0, out = 0;
    };
    struct edge {
        token_id token;
        std::uint32_t to;
    };
    struct tables {
        std::vector<single> singles;  // by token
        std::vector<entry> entries;   // grouped by prefix node
        std::vector<node> nodes;
        std::vector<edge> edges;
        std::size_t depth = 0;  // the longest prefix

        /// The child of `n` by `t`, or 0.
        std::uint32_t child(std::uint32_t n, token_id t) const noexcept {
            const node& x = nodes[n];
            const edge* b = edges.data() + x.first_edge;
            const edge* e = b + x.edges;
            const edge* it = std::lower_bound(
                b, e, t, [](const edge& a, token_id k) noexcept { return a.token < k; });
            return it != e && it->token == t ? it->to : 0u;
        }
        /// The state after `t` from state `n`: the longest suffix of (path(n), t) that is a node.
        std::uint32_t next(std::uint32_t n, token_id t) const noexcept {
            for (;;) {
                if (const std::uint32_t c = child(n, t)) return c;
                if (n == 0) return 0;
                n = nodes[n].fail;
            }
        }
        /// Calls f(entry) for every sequence whose prefix ends the path of state `n`.
        template <class F>
        void for_each_match(std::uint32_t n, F&& f) const {
            for (n = nodes[n].entries ? n : nodes[n].out; n != 0; n = nodes[n].out)
                for (std::uint32_t k = 0; k < nodes[n].entries; ++k)
                    f(entries[nodes[n].first_entry + k]);
        }
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
        void apply(float& x) const noexcept {
            if (ban) {
                x = -std::numeric_limits<float>::infinity();
                return;
            }
            if (std::isnan(x) || x == -std::numeric_limits<float>::infinity()) return;
            x = x + total;
        }
    };

    static tables build(std::vector<sequence_bias> biases) {
        // identical sequences: the last bias at the first one's place (sort by sequence, then by
        // position; each run of equal sequences becomes one)
        std::vector<std::size_t> idx(biases.size());
        std::iota(idx.begin(), idx.end(), std::size_t{0});
        std::sort(idx.begin(), idx.end(), [&](std::size_t a, std::size_t b) {
            return biases[a].tokens != biases[b].tokens ? biases[a].tokens < biases[b].tokens
                                                        : a < b;
        });
        tables t;
        // the trie of the prefixes, children kept per node while building
        std::vector<std::vector<edge>> kids(1);
        std::vector<std::pair<std::uint32_t, entry>> at;  // (prefix node, entry)
        for (std::size_t r = 0; r < idx.size();) {
            std::size_t e = r + 1;
            while (e < idx.size() && biases[idx[e]].tokens == biases[idx[r]].tokens) ++e;
            const std::vector<token_id>& s = biases[idx[r]].tokens;
            const float b = biases[idx[e - 1]].bias;
            if (s.size() == 1) {
                t.singles.push_back({s[0], b});
            } else {
                std::uint32_t n = 0;
                for (std::size_t k = 0; k + 1 < s.size(); ++k) {
                    auto it = std::find_if(kids[n].begin(), kids[n].end(),
                                           [&](const edge& x) { return x.token == s[k]; });
                    if (it != kids[n].end()) {
                        n = it->to;
                    } else {
                        const auto m = static_cast<std::uint32_t>(kids.size());
                        kids[n].push_back({s[k], m});
                        kids.emplace_back();
                        n = m;
                    }
                }
                t.depth = std::max(t.depth, s.size() - 1);
                at.push_back({n, {s.back(), static_cast<std::uint32_t>(idx[r]), b}});
            }
            r = e;
        }
        std::sort(t.singles.begin(), t.singles.end(),
                  [](const single& a, const single& b) { return a.token < b.token; });
        std::stable_sort(at.begin(), at.end(),
                         [](const auto& a, const auto& b) { return a.first < b.first; });
        t.nodes.resize(kids.size());
        for (std::uint32_t n = 0; n < kids.size(); ++n) {
            std::sort(kids[n].begin(), kids[n].end(),
                      [](const edge& a, const edge& b) { return a.token < b.token; });
            t.nodes[n].first_edge = static_cast<std::uint32_t>(t.edges.size());
            t.nodes[n].edges = static_cast<std::uint32_t>(kids[n].size());
            t.edges.insert(t.edges.end(), kids[n].begin(), kids[n].end());
        }
        for (const auto& [n, e] : at) {
            if (t.nodes[n].entries == 0)
                t.nodes[n].first_entry = static_cast<std::uint32_t>(t.entries.size());
            ++t.nodes[n].entries;
            t.entries.push_back(e);
        }
        // fail and out links, breadth first (a node's fail link is shallower than the node)
        std::vector<std::uint32_t> queue{0};
        for (std::size_t q = 0; q < queue.size(); ++q) {
            const std::uint32_t u = queue[q];
            for (std::uint32_t k = 0; k < t.nodes[u].edges; ++k) {
                const edge& x = t.edges[t.nodes[u].first_edge + k];
                node& v = t.nodes[x.to];
                v.fail = u == 0 ? 0u : t.next(t.nodes[u].fail, x.token);
                const node& f = t.nodes[v.fail];
                v.out = f.entries ? v.fail : f.out;
                queue.push_back(x.to);
            }
        }
        return t;
    }

    /// The state of a history: the automaton run over its last longest_prefix() tokens (the
    /// state's depth is at most that, so the window gives the same node as the whole history).
    std::uint32_t state_from(std::span<const token_id> h) const noexcept {
        std::uint32_t s = 0;
        for (token_id t : h.last(std::min(h.size(), t_->depth))) s = t_->next(s, t);
        return s;
    }
    void follow(std::uint32_t s, const processor_context& c) noexcept {
        state_ = s;
        len_ = c.history.size();
        synced_ = true;
    }
    /// The state at c's position: the followed one when the hooks brought it to c's length,
    /// else computed from the window (a processor used without a pipeline).
    std::uint32_t state(const processor_context& c) const noexcept {
        return synced_ && len_ == c.history.size() ? state_ : state_from(c.history);
    }

    std::shared_ptr<const tables> t_;
    std::vector<const entry*> matches_;  // scratch of apply(): grows to the most matches seen
    std::uint32_t state_ = 0;            // the automaton's node at the history's end
    std::size_t len_ = 0;                // the history length state_ is for
    bool synced_ = false;                // state_ follows the hooks
};

DECODEKIT_END_NAMESPACE
