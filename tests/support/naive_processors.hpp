#pragma once
/// \file naive_processors.hpp
/// The processors the strategy tests need (repetition penalty over the whole history,
/// no_repeat_ngram, min_new_tokens), written from their definitions without the library: a
/// rescan of the whole history per row, the obvious way. The strategies' outputs with
/// processors are compared with recomputations that call this on every row.

#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <set>
#include <vector>

namespace dk_test {

/// Which processors to apply (defaults: none).
struct naive_processors {
    float repetition = 1.f;        ///< CTRL theta over prompt + generated
    std::size_t ngram = 0;         ///< no_repeat_ngram_size (HF, prompt included)
    std::size_t min_new = 0;       ///< EOS suppressed while fewer tokens were generated
    decodekit::token_id eos = -1;  ///< the EOS id of min_new (and of banned's EOS rule)
    /// Banned sequences (HF bad_words_ids): the last token is banned when the history ends with
    /// the others; a one-token sequence equal to eos is not banned.
    std::vector<std::vector<decodekit::token_id>> banned = {};

    /// The same configuration as the library's sampling_params processor fields.
    decodekit::sampling_params as_params() const {
        decodekit::sampling_params p;
        p.penalties.repetition = repetition;
        p.penalties.repetition_scope = decodekit::penalty_scope::whole_history;
        p.no_repeat_ngram_size = ngram;
        p.min_new_tokens = min_new;
        p.banned_sequences = banned;
        return p;  // eos_ids: the strategy's
    }

    /// `x` processed for the next token after `history` (whose first prompt_length tokens are
    /// the prompt).
    template <class T>
    std::vector<T> operator()(std::vector<T> x, const std::vector<decodekit::token_id>& history,
                              std::size_t prompt_length) const {
        constexpr T ninf = -std::numeric_limits<T>::infinity();
        const std::size_t V = x.size();
        if (history.size() - prompt_length < min_new && eos >= 0 && std::size_t(eos) < V)
            x[std::size_t(eos)] = ninf;
        if (repetition != 1.f)
            for (decodekit::token_id t :
                 std::set<decodekit::token_id>(history.begin(), history.end())) {
                T& v = x[std::size_t(t)];
                v = v > 0 ? T(float(v) / repetition) : T(float(v) * repetition);
            }
        const std::size_t n = ngram, L = history.size();
        if (n > 0 && L + 1 >= n) {
            // ban the token after every earlier occurrence of the last n - 1 tokens
            for (std::size_t i = 0; i + n <= L; ++i) {
                bool same = true;
                for (std::size_t j = 0; j + 1 < n && same; ++j)
                    same = history[i + j] == history[L - (n - 1) + j];
                if (same) x[std::size_t(history[i + n - 1])] = ninf;
            }
        }
        for (const auto& seq : banned) {
            if (seq.empty() || (seq.size() == 1 && seq[0] == eos)) continue;
            const std::size_t m = seq.size() - 1;
            if (m <= L && std::equal(seq.begin(), seq.end() - 1, history.end() - std::ptrdiff_t(m)))
                x[std::size_t(seq.back())] = ninf;
        }
        return x;
    }
};

}  // namespace dk_test
