#pragma once
/// \file processors/exponential_decay.hpp
/// Hugging Face's exponential_decay_length_penalty (ExponentialDecayLengthPenalty): after
/// `start` generated tokens, the EOS logits grow exponentially with the length, so that a
/// sequence tends to end near a length without a hard cut.
///
/// With n = c.generated() tokens generated before the position, and n > start:
///   m = decay_factor^(n - start) - 1      (computed in double, then rounded to float)
///   x = x + |x| * m                        (for each EOS logit x; product and sum in float)
/// and nothing at n <= start. HF's start_index is counted from the prompt's end as here, its
/// condition is the same (cur_len > start_index + prompt length), and its arithmetic is the
/// same (a float32 tensor times the double m rounded to float, then a float32 sum); it adds |x|
/// * m rather than x * m so that negative logits are raised too. decay_factor > 1 raises the EOS
/// logits, < 1 lowers them, 1 changes nothing.
/// Special values: NaN, -inf and +inf EOS logits are left as they are (HF turns -inf, an EOS
/// already banned, into NaN); a zero logit stays zero (HF: NaN when m overflows to +inf); a
/// finite logit whose result overflows float becomes +inf (or -inf below -FLT_MAX). EOS ids
/// outside [0, V) (negative ones too) are ignored; an id listed twice is penalised once (HF
/// assigns, not adds).
/// The product and the sum are each rounded to float, whatever the compiler's contraction
/// setting (GCC fuses a float multiply-add into one rounding by default, even in -std=c++20,
/// which changes the last bit): the product goes through a volatile (O(#EOS) per call).
///
/// Stateless; sparse: touched() declares the EOS ids while the penalty changes them (n > start
/// and m != 0), nothing before. O(#EOS) per call plus one pow(); a copy copies the EOS list.

#include <decodekit/config.hpp>
#include <decodekit/error.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/types.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <vector>

DECODEKIT_BEGIN_NAMESPACE

/// Configuration of exponential_decay_processor.
struct exponential_decay_params {
    std::size_t start = 0;      ///< generated tokens before the penalty applies (HF start_index)
    double decay_factor = 1.0;  ///< finite, > 0 (HF's decay_factor)
    /// At least one id; ids outside [0, V) are ignored (negative ids too, as every EOS list).
    std::vector<token_id> eos_ids = {};

    /// The first invalid field as a message, or nullopt.
    std::optional<std::string> check() const {
        if (!(decay_factor > 0.0) || !std::isfinite(decay_factor))
            return detail::range_message("exponential_decay_params.decay_factor", "finite and > 0",
                                         decay_factor);
        if (eos_ids.empty())
            return std::string(
                "exponential_decay_params.eos_ids must hold at least one id, got none");
        return std::nullopt;
    }
    /// Throws config_error (or calls the error handler) if check() finds a problem.
    void validate() const { raise_if(check()); }
};

/// m = decay_factor^(generated - start) - 1 rounded to float (+inf past float's range), or 0
/// when generated <= start.
inline float exponential_decay_multiplier(double decay_factor, std::size_t start,
                                          std::size_t generated) noexcept {
    if (generated <= start) return 0.f;
    const double m = std::pow(decay_factor, static_cast<double>(generated - start)) - 1.0;
    // doubles from FLT_MAX + half an ulp of it round to +inf (m >= -1: no lower bound needed)
    constexpr double overflow = static_cast<double>(std::numeric_limits<float>::max()) + 0x1p103;
    if (m >= overflow) return std::numeric_limits<float>::infinity();
    return static_cast<float>(m);
}

/// Hugging Face's exponential decay length penalty (see the file comment).
class exponential_decay_processor {
public:
    /// \pre params.check() is nullopt (validated here: config_error or the error handler)
    explicit exponential_decay_processor(const exponential_decay_params& params) : p_(params) {
        p_.validate();
        std::sort(p_.eos_ids.begin(), p_.eos_ids.end());
        p_.eos_ids.erase(std::unique(p_.eos_ids.begin(), p_.eos_ids.end()), p_.eos_ids.end());
    }

    /// The parameters (eos_ids sorted, each once).
    const exponential_decay_params& params() const noexcept { return p_; }
    /// The multiplier m at the position of `c` (0: no change).
    float multiplier(const processor_context& c) const noexcept {
        return exponential_decay_multiplier(p_.decay_factor, p_.start, c.generated());
    }

    void apply(std::span<float> logits, const processor_context& c) const noexcept {
        const float m = multiplier(c);
        if (m == 0.f) return;
        for (token_id t : p_.eos_ids) {
            if (t < 0 || static_cast<std::size_t>(t) >= logits.size()) continue;
            float& x = logits[static_cast<std::size_t>(t)];
            if (!std::isfinite(x) || x == 0.f) continue;
            // rounded to float before the sum, as HF's tensors (see the file comment)
            const volatile float penalty = std::fabs(x) * m;
            x = x + penalty;
        }
    }
    void touched(const processor_context& c, token_sink& out) const {
        if (multiplier(c) != 0.f) out(p_.eos_ids);
    }

private:
    exponential_decay_params p_;
};

DECODEKIT_END_NAMESPACE
