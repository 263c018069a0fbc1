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

/// Extra prediction heads, Medusa style (multi-token prediction): from one forward over each
/// sequence, logits
/// for the next num_heads() positions of its last position: head 0 predicts t+1 (the ordinary
/// next token), head h predicts t+1+h given the sequence only (heads in parallel, none sees the
/// tokens drafted before it). Rows ordered [request][head]. For sequential modules see
/// mtp_module_model.
/// Each request must have n_last == 1.
template <class M>
concept multi_token_model = language_model<M> &&
    requires(M& m, const M& cm, std::span<const sequence_request> requests, std::span<float> out) {
    { cm.num_heads() } -> std::convertible_to<std::size_t>;
    m.head_logits(requests, out);
};

/// One step of a sequential multi-token-prediction module for one sequence (mtp_module_model).
/// Module k at position i reads `hidden` (h(k-1, i): depth k-1's state at position i) and the
/// token t(i+k), and predicts t(i+k+1).
struct mtp_request {
    std::span<const float> hidden;  ///< hidden_size() floats: h(depth - 1, i)
    token_id token = 0;             ///< t(i + depth): the token after position i + depth - 1
    std::size_t depth = 1;          ///< the module, in [1, mtp_depth()]
    std::size_t position = 0;       ///< position of `token` in the sequence: i + depth
    std::uint32_t slot = 0;         ///< the sequence's slot (for modules with per-sequence state)
};

/// Sequential multi-token-prediction modules (DeepSeek-V3 style): a chain of mtp_depth() small
/// modules beside the main model, module k predicting the token k + 1 positions ahead from the
/// previous depth's hidden state and the token in between. Drafting k tokens after a verified
/// position costs the main forward that verified it plus k module calls.
///
/// ## The contract (for backend authors)
///   - Depth 0 is the main model: h(0, i) is the hidden state logits_and_hidden() returns for
///     position i (the final-normed state fed to the output head), from the same forward whose
///     logits verified t(i+1). So after a round that verified up to position i and emitted
///     t(i+1), module 1 takes h(0, i) and t(i+1) and drafts t(i+2); no extra main forward.
///   - mtp_logits(requests, logits_out, hidden_out) runs one module step per request (requests
///     are independent; one call may serve many sequences and mix depths). Row r of logits_out
///     (vocab_size() floats) is module requests[r].depth's next-token logits; row r of
///     hidden_out (hidden_size() floats) is h(depth, i), the input of depth + 1. hidden_out may
///     be empty (no state wanted). Both hold requests.size() rows.
///   - Chaining: drafting token j (1-based) after position i uses module min(j, mtp_depth())
///     with the hidden state the previous step returned (j = 1: h(0, i)); beyond mtp_depth()
///     the last module is reused on its own output (see mtp_module_for()).
///   - Per-sequence state: a module whose block attends to earlier positions keeps, per slot and
///     depth, state over every verified position; `position` places `token`, and a request at a
///     position at or before one already seen is a cut-back after rejected drafts: the module
///     drops its state from there (model.hpp's sequence contract, applied to the module). A
///     stateless module (its output a function of hidden, token and depth only) ignores
///     position and slot, so a cut-back needs nothing. The backend documents which it is.
///   - Invalid requests (hidden of the wrong size, token out of range, depth outside
///     [1, mtp_depth()]) must not read out of bounds; what their rows hold is the backend's
///     documented choice (the reference backend: NaN rows and last_error()).
/// mtp_depth() == 0 means no module is available: every request is invalid.
template <class M>
concept mtp_module_model = hidden_state_model<M> &&
    requires(M& m, const M& cm, std::span<const mtp_request> requests, std::span<float> logits_out,
             std::span<float> hidden_out) {
    { cm.mtp_depth() } -> std::convertible_to<std::size_t>;
    m.mtp_logits(requests, logits_out, hidden_out);
};

/// The module that drafts token `j` (1-based) of a chain on a model with `mtp_depth` modules:
/// min(j, mtp_depth) (0 when j or mtp_depth is 0).
constexpr std::size_t mtp_module_for(std::size_t j, std::size_t mtp_depth) noexcept {
    return j < mtp_depth ? j : mtp_depth;
}

DECODEKIT_END_NAMESPACE
