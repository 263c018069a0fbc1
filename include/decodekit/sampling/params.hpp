#pragma once
/// \file sampling/params.hpp
/// sampling_params: everything a sampler is configured with, as one aggregate with defaults
/// (designated-initializer friendly), validated once by check() / validate().
///
/// The processing order is data (`order`): processors first (allowed set, banned tokens, logit
/// bias, min length, penalties, DRY, no-repeat-ngram, banned sequences, and user processors at
/// chosen positions), then the truncation steps in the order of the preset (and user steps at
/// chosen positions), then the draw. Temperature is a step too: steps before it see the
/// distribution at temperature 1, steps after it the tempered one.
///
// clang-format off
/// Presets (docs/semantics.md#presets; a disabled step is skipped):
///   - hf        : temperature, top_k, top_p, min_p, typical, epsilon, eta, top_n_sigma, xtc,
///                 mirostat
///   - llama_cpp : top_n_sigma, top_k, typical, epsilon, eta, top_p, min_p, xtc, temperature,
///                 mirostat
///   - vllm      : temperature, min_p, top_k, top_p, typical, epsilon, eta, top_n_sigma, xtc,
///                 mirostat
///   - custom    : `custom_order` (each step at most once; steps not listed are not applied)
// clang-format on
/// The default is llama_cpp (temperature last: truncation runs on the raw logits and temperature
/// only touches the survivors, the fastest order). Presets choose the order only; the other
/// switches (top_k_ties, min_p_mode, typical_mode, min_keep) are separate fields: for llama.cpp's
/// own rules set top_k_ties = exactly_k, min_p_mode = logits and typical_mode = exceed.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/types.hpp>

#include <decodekit/processors/bias.hpp>
#include <decodekit/processors/dry.hpp>
#include <decodekit/processors/min_length.hpp>
#include <decodekit/processors/ngram.hpp>
#include <decodekit/processors/penalties.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/sampling/any_step.hpp>
#include <decodekit/sampling/constraint.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// One step of the truncation pipeline.
enum class sampling_step : std::uint8_t {
    temperature,  ///< divide logits by `temperature` (lazily: no pass over the row)
    top_k,        ///< keep the `top_k` largest (`top_k_ties`)
    top_p,        ///< nucleus: smallest prefix whose mass reaches `top_p`
    min_p,        ///< keep p_i >= min_p * p_max (`min_p_space`)
    typical,      ///< locally typical set of mass `typical_p`
    epsilon,      ///< remove p_i < epsilon
    eta,          ///< remove p_i < min(eta, sqrt(eta) * exp(-H))
    top_n_sigma,  ///< keep x_i >= max - top_n_sigma * std(x) (finite logits)
    xtc,          ///< exclude top choices (random, `xtc_probability`)
    mirostat,     ///< mirostat v2 (stateful: mu)
};

/// The processing order presets (see the file comment).
enum class sampling_order : std::uint8_t { hf, llama_cpp, vllm, custom };

/// Where min-p's threshold is computed.
enum class min_p_space : std::uint8_t {
    /// p_i >= min_p * p_max on the distribution current at that point of the order (after
    /// temperature when temperature comes before min_p: Hugging Face, vLLM).
    probabilities,
    /// x_i >= max + ln(min_p) on the logits before temperature, wherever temperature is in the
    /// order (llama.cpp). Same set as `probabilities` when temperature comes after min_p.
    logits,
};

/// What a sample() call reports besides the token (all opt-in: each costs work).
struct logprobs_request {
    /// Fill sample_result::raw_logprob (log-softmax of the caller's logits, before processors
    /// and temperature). Needs the full normaliser: one exp pass over the row unless the draw
    /// already computed it. Off: raw_logprob is NaN.
    bool raw = false;
    /// Fill sample_result::rank: 1 + the number of tokens whose (raw, or processed when
    /// `processed` is set) logit is larger than the chosen token's; one read pass.
    bool rank = false;
    /// Number of top alternatives reported in sample_result::top (0: none).
    std::size_t top_n = 0;
    /// Token ids whose logprobs are reported in sample_result::requested.
    std::vector<token_id> ids = {};
    /// false: rank, top and requested use the raw log-softmax of the caller's logits (vLLM's
    /// default); true: the final processed distribution (-inf outside it, no extra pass).
    bool processed = false;
    /// Fill sample_result::logprob (the chosen token's log-probability under the final
    /// distribution). Off: logprob is NaN, and when nothing else is requested a draw over the
    /// whole row (no truncation step cut it: temperature only, or XTC as the only step)
    /// uses kernels::draw_temperature, which needs no exponential per entry (block-max envelope
    /// rejection). That draw reads the key's sample stream differently, so for one key it may
    /// give another token than with `chosen` on (same law; distribution() unchanged).
    bool chosen = true;

    /// True when any extra (raw, rank, top_n, ids) is requested; `chosen` is not an extra.
    bool any() const noexcept { return raw || rank || top_n > 0 || !ids.empty(); }
};

/// A user step at a position of the order (sampling/step.hpp says what a step is).
struct step_insertion {
    /// Index in the order list (the preset's steps, or custom_order) of the step it runs
    /// before: 0 runs it first; the list's size (or more) runs it after the last.
    std::size_t position = 0;
    any_step step;
};

/// The built-in processors in the order they run (the positions of processor_insertion).
enum class processor_slot : std::uint8_t {
    allowed_tokens,
    banned_tokens,
    logit_bias,
    min_length,
    penalties,
    dry,
    no_repeat_ngram,
    banned_sequences,
    end,  ///< after every built-in processor
};

/// A user processor at a position of the processor order (processors/processor.hpp says what a
/// processor is).
struct processor_insertion {
    /// The built-in processor it runs before (end: after all of them).
    processor_slot before = processor_slot::end;
    any_processor processor;
};

/// The configuration of a decodekit::sampler.
struct sampling_params {
    // ---- the draw ----
    /// Temperature; 0 = greedy (argmax of the processed row, ties to the lowest id; no softmax,
    /// no randomness; the truncation steps are skipped: the argmax survives each of them, XTC
    /// is not applied).
    float temperature = 1.f;

    // ---- truncation ----
    int top_k = 0;  ///< <= 0 disabled
    tie_policy top_k_ties =
        tie_policy::exactly_k;  ///< exactly k (llama.cpp) or keep ties (HF, vLLM)
    /// Top-k keeps max(top_k, min_keep) (Hugging Face's top-k warper) instead of top_k (llama.cpp,
    /// vLLM). Not set by the order presets: Hugging Face's behaviour is order = hf with
    /// top_k_ties = keep_ties and top_k_min_keep = true.
    bool top_k_min_keep = false;
    /// in [0, 1]; 1 disabled; 0 keeps the top token. A float probability (top_p, typical_p,
    /// min_p, epsilon, eta, xtc_threshold) stands for the decimal written: a mass reaching the
    /// lowest real that rounds to it has reached it (0.8f is reached by 0.5 + 0.3)
    float top_p = 1.f;
    float min_p = 0.f;  ///< in [0, 1]; 0 disabled
    min_p_space min_p_mode = min_p_space::probabilities;
    float typical_p = 1.f;  ///< in [0, 1]; 1 disabled
    /// Where typical's set ends: reach_with_ties (Hugging Face: the first token whose mass
    /// reaches typical_p, and every token with its score) or exceed (llama.cpp: the first token
    /// whose mass strictly exceeds typical_p; one token more when the mass lands exactly on it).
    /// Like top_k_ties and min_p_mode, not set by the order presets: llama.cpp's behaviour is
    /// order = llama_cpp with typical_mode = exceed.
    typical_stop typical_mode = typical_stop::reach_with_ties;
    float epsilon = 0.f;          ///< in [0, 1); 0 disabled
    float eta = 0.f;              ///< in [0, 1); 0 disabled
    float top_n_sigma = 0.f;      ///< >= 0; 0 disabled
    float xtc_probability = 0.f;  ///< in [0, 1]; 0 disabled
    float xtc_threshold = 0.1f;   ///< in [0, 1]; > 0.5 disables XTC
    bool mirostat = false;        ///< mirostat v2 on
    float mirostat_tau = 5.f;     ///< target surprise (bits), > 0 (checked when mirostat is on)
    float mirostat_eta = 0.1f;    ///< learning rate, > 0 (checked when mirostat is on)
    /// Every truncation step (except top_k unless top_k_min_keep, and mirostat which keeps >= 1)
    /// keeps at least this many.
    std::size_t min_keep = 1;

    // ---- randomness ----
    std::uint64_t seed = 0;

    // ---- processors (applied first, in this order: allowed set, banned tokens, logit bias,
    //      min length, penalties, DRY, no-repeat-ngram, banned sequences). Processors take the
    //      history from the caller (sample_context::history = prompt + generated so far). ----
    std::vector<token_id> allowed_tokens = {};  ///< non-empty: every other token is banned
    std::vector<token_id> banned_tokens = {};
    std::vector<logit_bias> logit_biases = {};
    std::size_t min_new_tokens = 0;  ///< suppress eos_ids until this many generated
    std::vector<token_id> eos_ids = {};
    penalty_params penalties = {};
    dry_params dry = {};
    std::size_t no_repeat_ngram_size = 0;  ///< 0 disabled; <= 1024 (each token costs O(n))
    std::vector<std::vector<token_id>> banned_sequences = {};

    /// User processors, each inserted before a built-in processor (same position: in list
    /// order). Each sampler owns a copy (its per-sequence state).
    std::vector<processor_insertion> processors = {};
    /// A constraint in callback form (structured output; sampling/constraint.hpp): only allowed
    /// tokens are drawn, and the law is the pipeline's on the masked row. Each sampler owns a copy
    /// (its per-sequence state). Empty: none. (A packed bitmask is given per call instead:
    /// sample_context::mask.)
    any_constraint constraint = {};
    /// How the constraint is queried: exact (default) or llama.cpp's sample-then-check (opt-in).
    constraint_check constraint_mode = constraint_check::exact;

    // ---- order and outputs ----
    sampling_order order = sampling_order::llama_cpp;
    std::vector<sampling_step> custom_order = {};  ///< used when order == custom
    /// User steps, each inserted at a position of the order (same position: in list order).
    /// Each sampler owns a copy (its per-sequence state).
    std::vector<step_insertion> steps = {};
    logprobs_request logprobs = {};

    /// The first problem (message naming the field and its allowed range), or nullopt.
    std::optional<std::string> check() const;
    /// check(), reported through decodekit::raise().
    void validate() const { raise_if(check()); }

    /// True when temperature == 0 (argmax).
    bool greedy() const noexcept { return temperature == 0.f; }
    /// True when any processor would change the logits (the sampler then copies the row).
    bool has_processors() const noexcept;
};

/// The steps of a preset, in order (custom: empty; see sampling_params::custom_order).
inline std::span<const sampling_step> preset_steps(sampling_order order) noexcept {
    using s = sampling_step;
    static constexpr sampling_step hf[] = {s::temperature, s::top_k,   s::top_p, s::min_p,
                                           s::typical,     s::epsilon, s::eta,   s::top_n_sigma,
                                           s::xtc,         s::mirostat};
    static constexpr sampling_step llama[] = {s::top_n_sigma, s::top_k,   s::typical, s::epsilon,
                                              s::eta,         s::top_p,   s::min_p,   s::xtc,
                                              s::temperature, s::mirostat};
    static constexpr sampling_step vllm[] = {s::temperature, s::min_p,   s::top_k, s::top_p,
                                             s::typical,     s::epsilon, s::eta,   s::top_n_sigma,
                                             s::xtc,         s::mirostat};
    switch (order) {
        case sampling_order::hf:
            return hf;
        case sampling_order::llama_cpp:
            return llama;
        case sampling_order::vllm:
            return vllm;
        default:
            return {};
    }
}

inline bool sampling_params::has_processors() const noexcept {
    return !allowed_tokens.empty() || !banned_tokens.empty() || !logit_biases.empty() ||
           (min_new_tokens > 0 && !eos_ids.empty()) || penalties.repetition != 1.f ||
           penalties.frequency != 0.f || penalties.presence != 0.f || dry.multiplier != 0.f ||
           no_repeat_ngram_size > 0 || !banned_sequences.empty() || !processors.empty();
}

namespace detail {
inline bool in_closed(float v, float lo, float hi) noexcept { return v >= lo && v <= hi; }
}  // namespace detail

inline std::optional<std::string> sampling_params::check() const {
    using detail::range_message;
    if (!(temperature >= 0.f) || std::isinf(temperature))
        return range_message("sampling_params.temperature", "finite and >= 0 (0 = greedy)",
                             temperature);
    if (!detail::in_closed(top_p, 0.f, 1.f))
        return range_message("sampling_params.top_p", "in [0, 1]", top_p);
    if (!detail::in_closed(min_p, 0.f, 1.f))
        return range_message("sampling_params.min_p", "in [0, 1]", min_p);
    if (!detail::in_closed(typical_p, 0.f, 1.f))
        return range_message("sampling_params.typical_p", "in [0, 1]", typical_p);
    if (unsigned(typical_mode) > unsigned(typical_stop::exceed))
        return range_message("sampling_params.typical_mode", "reach_with_ties or exceed",
                             double(unsigned(typical_mode)));
    if (!(epsilon >= 0.f && epsilon < 1.f))
        return range_message("sampling_params.epsilon", "in [0, 1)", epsilon);
    if (!(eta >= 0.f && eta < 1.f)) return range_message("sampling_params.eta", "in [0, 1)", eta);
    if (!(top_n_sigma >= 0.f) || std::isinf(top_n_sigma))
        return range_message("sampling_params.top_n_sigma", "finite and >= 0 (0 = disabled)",
                             top_n_sigma);
    if (!detail::in_closed(xtc_probability, 0.f, 1.f))
        return range_message("sampling_params.xtc_probability", "in [0, 1]", xtc_probability);
    if (!detail::in_closed(xtc_threshold, 0.f, 1.f))
        return range_message("sampling_params.xtc_threshold", "in [0, 1]", xtc_threshold);
    if (mirostat && (!(mirostat_tau > 0.f) || std::isinf(mirostat_tau)))
        return range_message("sampling_params.mirostat_tau", "finite and > 0", mirostat_tau);
    if (mirostat && (!(mirostat_eta > 0.f) || std::isinf(mirostat_eta)))
        return range_message("sampling_params.mirostat_eta", "finite and > 0", mirostat_eta);
    if (min_keep < 1) return range_message("sampling_params.min_keep", ">= 1", double(min_keep));
    if (order == sampling_order::custom) {
        unsigned seen = 0;
        for (sampling_step st : custom_order) {
            if (unsigned(st) > unsigned(sampling_step::mirostat))
                return range_message("sampling_params.custom_order",
                                     "a list of sampling_step values", double(unsigned(st)));
            const unsigned bit = 1u << unsigned(st);  // after the range check: st < 32
            if (seen & bit)
                return range_message("sampling_params.custom_order",
                                     "a list with each sampling_step at most once (repeated step)",
                                     double(unsigned(st)));
            seen |= bit;
        }
    } else if (!custom_order.empty()) {
        return std::string(
            "sampling_params.custom_order must be empty unless order == "
            "sampling_order::custom");
    } else if (unsigned(order) > unsigned(sampling_order::custom)) {
        return range_message("sampling_params.order", "hf, llama_cpp, vllm or custom",
                             double(unsigned(order)));
    }
    if (no_repeat_ngram_size > 1024)
        return range_message("sampling_params.no_repeat_ngram_size", "<= 1024 (0 disabled)",
                             double(no_repeat_ngram_size));
    if (auto e = penalties.check()) return "sampling_params.penalties: " + *e;
    if (auto e = dry.check()) return "sampling_params.dry: " + *e;
    for (const logit_bias& b : logit_biases)
        if (std::isnan(b.bias))
            return range_message("sampling_params.logit_biases[].bias", "not NaN", b.bias);
    for (const step_insertion& st : steps)
        if (!st.step) return std::string("sampling_params.steps[].step must hold a step");
    if (unsigned(constraint_mode) > unsigned(constraint_check::sample_then_check))
        return range_message("sampling_params.constraint_mode", "exact or sample_then_check",
                             double(unsigned(constraint_mode)));
    for (const processor_insertion& pi : processors) {
        if (!pi.processor)
            return std::string("sampling_params.processors[].processor must hold a processor");
        if (unsigned(pi.before) > unsigned(processor_slot::end))
            return range_message("sampling_params.processors[].before", "a processor_slot (0..8)",
                                 double(unsigned(pi.before)));
    }
    return std::nullopt;
}

namespace detail {
/// The k the top-k step keeps: top_k, or max(top_k, min_keep) with top_k_min_keep (0: off).
inline std::size_t effective_top_k(const sampling_params& p) noexcept {
    if (p.top_k <= 0) return 0;
    const std::size_t k = std::size_t(p.top_k);
    return p.top_k_min_keep && p.min_keep > k ? p.min_keep : k;
}
}  // namespace detail

DECODEKIT_END_NAMESPACE
