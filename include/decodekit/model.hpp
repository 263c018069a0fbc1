#pragma once
/// \file model.hpp
/// The model callback concepts: how strategies (beam, contrastive, DoLa, speculative, MTP) call a
/// model. A backend implements the core concept plus the capabilities the strategies it wants
/// need; each strategy states them in a `requires` clause, so a missing capability is a compile
/// error that names the concept.
///
/// ## The sequence contract (for backend authors)
/// Every call passes whole token sequences (prompt + generated so far) and asks for the logits of
/// their last `n_last` positions. decodekit owns no KV cache; between calls a sequence only
///   - grows by appending tokens (the next step of the same slot),
///   - branches (a beam fork: a new slot whose tokens share a prefix with an existing slot), or
///   - is cut back (rejected speculative drafts: the next call's tokens are a prefix of the
///     cached ones plus new tokens).
/// `slot` is a stable small integer naming the sequence across calls (beam index, draft/target
/// lane). A backend may recompute everything (correct, slow) or keep a cache per slot and reuse
/// the longest common prefix between the cached tokens of that slot and the new sequence;
/// decodekit never assumes which. Sequences of one call are independent and may be batched.
///
/// Output layout: `out` is row-major, one row of `vocab_size()` floats per requested position,
/// requests in order, positions in sequence order (the last row of a request is its newest
/// position). Use rows_needed() to size it.

#include <decodekit/config.hpp>
#include <decodekit/types.hpp>

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

/// One sequence in a model call.
struct sequence_request {
    std::span<const token_id> tokens;  ///< the whole sequence, prompt included; non-empty
    std::size_t n_last = 1;            ///< logits wanted for the last n_last positions (<= size)
    std::uint32_t slot = 0;            ///< stable name of the sequence for cache reuse
};

/// Total number of output rows a call produces for `requests`.
inline std::size_t rows_needed(std::span<const sequence_request> requests) noexcept {
    std::size_t n = 0;
    for (const auto& r : requests) n += r.n_last;
    return n;
}

/// Core capability (every strategy): the vocabulary size and logits for the last n positions of
/// one or several sequences in one call.
template <class M>
concept language_model = requires(M& m, const M& cm, std::span<const sequence_request> requests,
                                  std::span<float> out) {
    { cm.vocab_size() } -> std::convertible_to<std::size_t>;
    m.logits(requests, out);  ///< out: rows_needed(requests) x vocab_size()
};

/// Last-layer hidden states (contrastive search): logits and, for the same positions, the hidden
/// state fed to the classifier (after the final norm), hidden_size() floats per row.
template <class M>
concept hidden_state_model = language_model<M> &&
    requires(M& m, const M& cm, std::span<const sequence_request> requests,
             std::span<float> logits_out, std::span<float> hidden_out) {
    { cm.hidden_size() } -> std::convertible_to<std::size_t>;
    m.logits_and_hidden(requests, logits_out, hidden_out);
};

/// Logits read out at intermediate layers (DoLa, early-exit self-drafting): the final norm and
/// classifier applied to the residual stream after layer `l` (1-based; l == num_layers() is the
/// ordinary output; l == 0 is the embedding output). Rows ordered [request][position][layer in
/// the order of `layers`].
template <class M>
concept layer_logits_model = language_model<M> &&
    requires(M& m, const M& cm, std::span<const sequence_request> requests,
             std::span<const int> layers, std::span<float> out) {
    { cm.num_layers() } -> std::convertible_to<std::size_t>;
    m.layer_logits(requests, layers, out);
};

/// Extra prediction heads (multi-token prediction): from one forward over each sequence, logits
/// for the next num_heads() positions of its last position: head 0 predicts t+1 (the ordinary
/// next token), head h predicts t+1+h given the sequence only. Rows ordered [request][head].
/// Each request must have n_last == 1.
template <class M>
concept multi_token_model = language_model<M> &&
    requires(M& m, const M& cm, std::span<const sequence_request> requests, std::span<float> out) {
    { cm.num_heads() } -> std::convertible_to<std::size_t>;
    m.head_logits(requests, out);
};

DECODEKIT_END_NAMESPACE
