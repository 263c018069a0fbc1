#pragma once
/// \file decoding/model_call.hpp
/// What a stepper asks the model to compute next: which capability of model.hpp (logits,
/// logits and hidden states, layer read-outs, extra heads), on which model (the target, or the
/// speculative proposer's draft model), for which sequences. An engine concatenates the calls of
/// many steppers that share (model, kind, layers) into one model call, giving each stepper's
/// sequences slots of its own (a stepper numbers its slots from 0; the engine adds an offset),
/// then hands each stepper its rows: logits rows in request order, `logits_rows()` of them, and
/// `hidden_rows()` hidden rows (logits_and_hidden, mtp_logits). An mtp_logits call carries its
/// module steps in `mtp` (not `requests`): the engine concatenates those.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/model.hpp>
#include <decodekit/types.hpp>

#include <cstddef>
#include <cstdint>
#include <span>

DECODEKIT_BEGIN_NAMESPACE

/// Which model method a call needs. Append-only.
enum class call_kind : std::uint8_t {
    logits,             ///< language_model::logits
    logits_and_hidden,  ///< hidden_state_model::logits_and_hidden
    layer_logits,       ///< layer_logits_model::layer_logits with model_call::layers
    head_logits,        ///< multi_token_model::head_logits (model_call::heads rows per request)
    mtp_logits,         ///< mtp_module_model::mtp_logits on model_call::mtp (one logits row and
                        ///< one hidden row per module request)
};

/// Which model a call is for.
enum class model_role : std::uint8_t {
    target,  ///< the model being decoded
    draft,   ///< a speculative proposer's model (a draft model, or the target itself read out
             ///< early: early exit and multi-token heads)
};

/// One model call a stepper needs. The spans point into the stepper (or its proposer): valid
/// until its next advance(), cancel(), or move.
struct model_call {
    call_kind kind = call_kind::logits;
    model_role model = model_role::target;
    std::span<const sequence_request> requests = {};  ///< empty: nothing to compute
    std::span<const int> layers = {};                 ///< layer_logits: layers per position
    std::size_t heads = 0;                            ///< head_logits: rows per request
    std::span<const mtp_request> mtp = {};  ///< mtp_logits: the module steps (requests empty)

    bool empty() const noexcept { return requests.empty() && mtp.empty(); }
    /// Positions the call scores: rows_needed(requests), or one per module step (mtp_logits).
    std::size_t positions() const noexcept {
        return kind == call_kind::mtp_logits ? mtp.size() : rows_needed(requests);
    }
    /// Logits rows (of vocab_size floats) the call writes.
    std::size_t logits_rows() const noexcept {
        switch (kind) {
            case call_kind::layer_logits:
                return positions() * layers.size();
            case call_kind::head_logits:
                return requests.size() * heads;
            default:
                return positions();
        }
    }
    /// Hidden rows (of hidden_size floats) the call writes: positions() for logits_and_hidden
    /// and mtp_logits (a module step's h(depth, i)), else 0.
    std::size_t hidden_rows() const noexcept {
        return kind == call_kind::logits_and_hidden || kind == call_kind::mtp_logits ? positions()
                                                                                     : 0;
    }
};

/// Runs `call` on `model`: logits into `logits` (logits_rows() x vocab_size()), hidden states
/// into `hidden` (hidden_rows() x hidden_size()). Returns false and calls nothing when a span is
/// too short; a kind the model does not implement is a configuration error (raise()).
template <language_model M>
bool run_model_call(M& model, const model_call& call, std::span<float> logits,
                    std::span<float> hidden = {}) {
    if (call.empty()) return true;
    const std::size_t V = std::size_t(model.vocab_size());
    if (logits.size() / (V ? V : 1) < call.logits_rows()) return false;
    logits = logits.first(call.logits_rows() * V);
    switch (call.kind) {
        case call_kind::logits:
            model.logits(call.requests, logits);
            return true;
        case call_kind::logits_and_hidden:
            if constexpr (hidden_state_model<M>) {
                const std::size_t H = std::size_t(model.hidden_size());
                if (hidden.size() / (H ? H : 1) < call.hidden_rows()) return false;
                model.logits_and_hidden(call.requests, logits,
                                        hidden.first(call.hidden_rows() * H));
                return true;
            } else {
                raise("run_model_call: the call needs hidden states (hidden_state_model)");
            }
        case call_kind::layer_logits:
            if constexpr (layer_logits_model<M>) {
                model.layer_logits(call.requests, call.layers, logits);
                return true;
            } else {
                raise("run_model_call: the call needs layer read-outs (layer_logits_model)");
            }
        case call_kind::head_logits:
            if constexpr (multi_token_model<M>) {
                if (call.heads != std::size_t(model.num_heads())) return false;
                model.head_logits(call.requests, logits);
                return true;
            } else {
                raise("run_model_call: the call needs prediction heads (multi_token_model)");
            }
        case call_kind::mtp_logits:
            if constexpr (mtp_module_model<M>) {
                const std::size_t H = std::size_t(model.hidden_size());
                if (hidden.size() / (H ? H : 1) < call.hidden_rows()) return false;
                model.mtp_logits(call.mtp, logits, hidden.first(call.hidden_rows() * H));
                return true;
            } else {
                raise("run_model_call: the call needs MTP modules (mtp_module_model)");
            }
    }
    return false;
}

DECODEKIT_END_NAMESPACE
