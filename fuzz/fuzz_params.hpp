#pragma once
/// \file fuzz/fuzz_params.hpp
/// decodekit::sampling_params decoded from fuzz input: each field usually valid, sometimes out
/// of range (NaN, inf, negative, enumerators beyond the last), so check() is exercised on both
/// sides. Used by fuzz_sampler and fuzz_batch.

#include <decodekit/decodekit.hpp>

#include "fuzz_common.hpp"

namespace dk_fuzz {

/// A float field: default (often), a value in [lo, hi], or anything.
inline float field(FuzzedDataProvider& in, float def, float lo, float hi) {
    return in.ConsumeIntegralInRange<int>(0, 2) == 0 ? def : consume_param(in, lo, hi);
}

inline decodekit::sampling_params consume_sampling_params(FuzzedDataProvider& in,
                                                          std::size_t vocab) {
    namespace dk = decodekit;
    dk::sampling_params p;
    p.temperature = in.ConsumeIntegralInRange<int>(0, 5) == 0 ? 0.f : field(in, 1.f, 0.05f, 3.f);
    p.top_k = in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<int>(-2, int(vocab) + 2);
    p.top_k_ties = dk::tie_policy(in.ConsumeIntegralInRange<int>(0, 1));
    p.top_p = field(in, 1.f, 0.f, 1.f);
    p.min_p = field(in, 0.f, 0.f, 1.f);
    p.min_p_mode = dk::min_p_space(in.ConsumeIntegralInRange<int>(0, 1));
    const std::uint8_t rare = in.ConsumeIntegral<std::uint8_t>();  // bit mask of rarer steps
    if (rare & 1) p.typical_p = consume_param(in, 0.f, 1.f);
    if (rare & 2) p.epsilon = consume_param(in, 0.f, 0.5f);
    if (rare & 4) p.eta = consume_param(in, 0.f, 0.5f);
    if (rare & 8) p.top_n_sigma = consume_param(in, 0.f, 4.f);
    if (rare & 16) {
        p.xtc_probability = consume_param(in, 0.f, 1.f);
        p.xtc_threshold = consume_param(in, 0.f, 1.f);
    }
    if (rare & 32) {
        p.mirostat = true;
        p.mirostat_tau = consume_param(in, 0.1f, 10.f);
        p.mirostat_eta = consume_param(in, 0.01f, 1.f);
    }
    p.min_keep = in.ConsumeIntegralInRange<std::size_t>(0, 4);
    p.seed = in.ConsumeIntegral<std::uint64_t>();
    const int order = in.ConsumeIntegralInRange<int>(0, 4);
    p.order = dk::sampling_order(order);
    if (order == 3 || in.ConsumeIntegralInRange<int>(0, 31) == 0) {
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 11);
        for (std::size_t i = 0; i < n; ++i) {
            const std::uint8_t b = in.ConsumeIntegral<std::uint8_t>();
            p.custom_order.push_back(dk::sampling_step(b < 240 ? b % 10 : b));
        }
    }
    // processors
    const std::uint8_t procs = in.ConsumeIntegral<std::uint8_t>();
    if (procs & 1) p.allowed_tokens = consume_tokens(in, vocab, 8);
    if (procs & 2) p.banned_tokens = consume_tokens(in, vocab, 8);
    if (procs & 4) {
        const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 6);
        for (std::size_t i = 0; i < n; ++i)
            p.logit_biases.push_back({consume_token(in, vocab), consume_param(in, -5.f, 5.f)});
    }
    if (procs & 8) {
        p.min_new_tokens = in.ConsumeIntegralInRange<std::size_t>(0, 8);
        p.eos_ids = consume_tokens(in, vocab, 3);
    }
    if (procs & 16) {
        p.penalties.repetition = field(in, 1.f, 0.5f, 2.f);
        p.penalties.frequency = field(in, 0.f, -1.f, 1.f);
        p.penalties.presence = field(in, 0.f, -1.f, 1.f);
        p.penalties.repetition_scope = dk::penalty_scope(in.ConsumeIntegralInRange<int>(0, 3));
        p.penalties.frequency_scope = dk::penalty_scope(in.ConsumeIntegralInRange<int>(0, 2));
        p.penalties.last_n = in.ConsumeIntegralInRange<std::size_t>(0, 64);
    }
    if (procs & 32) {
        p.dry.multiplier = field(in, 0.8f, 0.f, 3.f);
        p.dry.base = field(in, 1.75f, 1.f, 3.f);
        p.dry.allowed_length = in.ConsumeIntegralInRange<std::size_t>(0, 4);
        p.dry.penalty_last_n = in.ConsumeIntegralInRange<std::size_t>(0, 64);
        p.dry.sequence_breakers = consume_tokens(in, vocab, 3);
    }
    if (procs & 64) p.no_repeat_ngram_size = in.ConsumeIntegralInRange<std::size_t>(0, 4);
    if (procs & 128) {
        p.banned_sequences.resize(in.ConsumeIntegralInRange<std::size_t>(0, 3));
        for (auto& s : p.banned_sequences) s = consume_tokens(in, vocab, 3);
    }
    // logprobs
    const std::uint8_t lp = in.ConsumeIntegral<std::uint8_t>();
    p.logprobs.raw = lp & 1;
    p.logprobs.rank = lp & 2;
    p.logprobs.processed = lp & 4;
    if (lp & 8) p.logprobs.top_n = in.ConsumeIntegralInRange<std::size_t>(0, vocab + 3);
    if (lp & 16) p.logprobs.ids = consume_tokens(in, vocab, 5);
    p.logprobs.chosen = !(lp & 32);  // off: full-row draws take kernels::draw_temperature
    return p;
}

}  // namespace dk_fuzz
