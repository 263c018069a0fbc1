#pragma once
/// \file decoding/sequence_output.hpp
/// The output side of one sequence, shared by the single-sequence steppers (generation,
/// contrastive, DoLa, speculative): it appends tokens, applies the stop rule of
/// decoding/contract.hpp (EOS, stop sequences, stop strings, min_new_tokens, max_new_tokens, the
/// callback), streams token events with their text, and times the sequence.

#include <decodekit/config.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// The stop rule of one sequence (a copy of what its strategy's params say).
struct stop_conditions {
    std::vector<token_id> eos_ids = {};
    std::vector<std::vector<token_id>> stop_sequences = {};
    std::vector<std::string> stop_strings = {};
    detokenize_fn detokenize = {};    ///< set: text is streamed (and stop strings matched)
    std::size_t min_new_tokens = 0;   ///< stop sequences / strings before this count are ignored
    std::size_t max_new_tokens = 64;  ///< the budget (0: the sequence is over before it starts)
};

/// Tokens, stop rule, streaming and timing of one sequence.
class sequence_output {
public:
    sequence_output() = default;
    /// `reserve`: tokens reserved up front (callers cap it: min(max_new_tokens, 16384)).
    sequence_output(stop_conditions c, std::size_t prompt_length, std::size_t reserve)
        : c_(std::move(c)),
          matcher_(c_.stop_strings),
          prompt_length_(prompt_length),
          t0_(std::chrono::steady_clock::now()) {
        tokens_.reserve(reserve);
        if (c_.max_new_tokens == 0) done_ = true;
    }

    bool done() const noexcept { return done_; }
    stop_reason reason() const noexcept { return reason_; }
    std::span<const token_id> tokens() const noexcept { return tokens_; }
    std::size_t size() const noexcept { return tokens_.size(); }
    const stop_conditions& conditions() const noexcept { return c_; }
    /// True when t is one of the EOS ids.
    bool is_eos(token_id t) const noexcept { return stop_checker(c_.eos_ids).is_eos(t); }

    /// Starts a step: the step's tokens and text begin empty.
    void begin_step() noexcept {
        step_first_ = tokens_.size();
        step_text_.clear();
        step_stop_.reset();
    }

    /// Appends `t` (not an EOS id: check is_eos() first), applies the stop rule and streams it.
    /// Returns true to go on, false when the sequence ended (reason()).
    template <class OnToken>
    bool emit(token_id t, float logprob, OnToken& on_token) {
        if (done_) return false;
        mark_first_step();
        tokens_.push_back(t);
        const std::size_t n = tokens_.size();
        const bool active = n >= c_.min_new_tokens;
        std::optional<stop_reason> why;
        if (active && stop_checker(c_.eos_ids, c_.stop_sequences).ends_with_stop_sequence(tokens_))
            why = stop_reason::stop_sequence;
        std::string_view text;
        bool cut = false;
        if (c_.detokenize) {
            const auto r = matcher_.push(c_.detokenize(t), active);
            text = r.text;
            cut = r.matched;
            if (cut && !why) why = stop_reason::stop_string;
        }
        if (!why && n >= c_.max_new_tokens) why = stop_reason::max_new_tokens;
        if (why && !cut && c_.detokenize) text = append_tail(text);
        step_text_.append(text);
        const bool go_on = detail::call_stream(on_token, token_event{t, n - 1, logprob, text});
        if (!why && !go_on) why = stop_reason::callback;
        if (why) end(*why);
        return !why;
    }

    /// Ends the sequence with `why` (eos, no_valid_token, cancelled, ...) without a token; the
    /// held-back text goes out in one final event (token -1) when there is any. No-op when done.
    template <class OnToken>
    void finish(stop_reason why, OnToken& on_token) {
        if (done_) return;
        mark_first_step();
        if (c_.detokenize) {
            const std::string_view tail = matcher_.flush();
            if (!tail.empty()) {
                step_text_.append(tail);
                detail::call_stream(on_token,
                                    token_event{-1, tokens_.size(), 0.f, std::string_view(tail)});
            }
        }
        end(why);
    }
    /// finish() with no callback.
    void finish(stop_reason why) {
        detail::no_stream none;
        finish(why, none);
    }

    /// This step's events (status ok).
    step_events events() const noexcept {
        return {step_status::ok, std::span<const token_id>(tokens_).subspan(step_first_),
                std::string_view(step_text_), step_stop_};
    }

    /// Moves the tokens and fills the reason and the timing / count fields of `r`.
    void fill(decoding_result& r) const {
        r.tokens.assign(tokens_.begin(), tokens_.end());
        r.reason = reason_;
        fill_stats(r.stats);
    }
    /// Prompt / generated counts and times into `s` (rates via s.finish()).
    void fill_stats(generation_stats& s) const {
        s.prompt_tokens = prompt_length_;
        s.generated_tokens = tokens_.size();
        s.time_to_first_token = ttft_;
        s.total_time = done_ ? total_ : detail::seconds_since(t0_);
        s.finish();
    }
    double time_to_first_token() const noexcept { return ttft_; }
    double total_time() const noexcept { return done_ ? total_ : detail::seconds_since(t0_); }

private:
    void mark_first_step() noexcept {
        if (first_step_) return;
        first_step_ = true;
        ttft_ = detail::seconds_since(t0_);
    }
    /// `text` (the last push's release, possibly empty) extended by the held-back tail.
    std::string_view append_tail(std::string_view text) {
        const std::string_view tail = matcher_.flush();
        if (text.empty()) return tail;
        if (tail.empty()) return text;
        return std::string_view(text.data(), text.size() + tail.size());  // contiguous
    }
    void end(stop_reason why) noexcept {
        done_ = true;
        reason_ = why;
        step_stop_ = why;
        total_ = detail::seconds_since(t0_);
    }

    stop_conditions c_;
    stop_string_matcher matcher_;
    std::vector<token_id> tokens_;
    std::size_t prompt_length_ = 0;
    std::chrono::steady_clock::time_point t0_ = std::chrono::steady_clock::now();
    double ttft_ = 0, total_ = 0;
    bool first_step_ = false;
    bool done_ = false;
    stop_reason reason_ = stop_reason::max_new_tokens;
    std::size_t step_first_ = 0;
    std::string step_text_;
    std::optional<stop_reason> step_stop_;
};

DECODEKIT_END_NAMESPACE
