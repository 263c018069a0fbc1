#pragma once
/// \file fuzz/fuzz_common.hpp
/// Helpers shared by decodekit's libFuzzer targets: decoding logits rows, token lists and
/// parameters from the fuzz input (FuzzedDataProvider), and a check that aborts with a message
/// (a finding) when an oracle disagrees.

#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <vector>

#include <decodekit/types.hpp>

namespace dk_fuzz {

/// Aborts (a libFuzzer finding) with `what` when `cond` is false.
#define DK_FUZZ_CHECK(cond, ...)                                                               \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            std::fprintf(stderr, "%s:%d: fuzz check failed: %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                                 \
            std::fprintf(stderr, "\n");                                                        \
            std::abort();                                                                      \
        }                                                                                      \
    } while (0)

inline constexpr float inf = std::numeric_limits<float>::infinity();
inline constexpr float nan = std::numeric_limits<float>::quiet_NaN();

/// One logit from one byte: mostly small values on a 1/8 grid (many ties), sometimes a special
/// value (NaN, +-inf, +-huge, subnormal, +-0).
inline float palette_value(std::uint8_t b) noexcept {
    static constexpr float specials[16] = {nan,    inf,     -inf,     -inf,   -inf,    1e30f,
                                           -1e30f, 3.4e38f, -3.4e38f, 1e-40f, -1e-40f, -0.f,
                                           0.f,    1e-30f,  88.f,     -88.f};
    if (b >= 240) return specials[b - 240];
    return (float(b) - 120.f) / 8.f;
}

/// A logits row of `n` entries decoded from the input. mode 0: palette bytes; mode 1: raw float
/// bits (anything, NaN payloads included); mode 2: palette scaled by a fuzzed factor.
inline void fill_row(FuzzedDataProvider& in, std::vector<float>& row, std::size_t n, int mode) {
    row.resize(n);
    const float scale = mode == 2 ? in.ConsumeFloatingPointInRange<float>(-1e4f, 1e4f) : 1.f;
    for (std::size_t i = 0; i < n; ++i) {
        if (mode == 1) {
            const std::uint32_t bits = in.ConsumeIntegral<std::uint32_t>();
            float f;
            static_assert(sizeof f == sizeof bits);
            __builtin_memcpy(&f, &bits, 4);
            row[i] = f;
        } else {
            float v = palette_value(in.ConsumeIntegral<std::uint8_t>());
            row[i] = mode == 2 ? v * scale : v;
        }
    }
}

/// A row whose size is chosen from the input, in [min_n, max_n].
inline std::vector<float> consume_row(FuzzedDataProvider& in, std::size_t min_n,
                                      std::size_t max_n) {
    std::vector<float> row;
    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(min_n, max_n);
    const int mode = in.ConsumeIntegralInRange<int>(0, 2);
    fill_row(in, row, n, mode);
    return row;
}

/// A token id: usually in [0, vocab), sometimes out of range (negative, == vocab, huge).
inline decodekit::token_id consume_token(FuzzedDataProvider& in, std::size_t vocab) {
    const std::uint8_t kind = in.ConsumeIntegral<std::uint8_t>();
    if (kind < 224 && vocab > 0)
        return decodekit::token_id(in.ConsumeIntegralInRange<std::size_t>(0, vocab - 1));
    switch (kind & 7) {
        case 0:
            return -1;
        case 1:
            return decodekit::token_id(vocab);
        case 2:
            return std::numeric_limits<decodekit::token_id>::max();
        case 3:
            return std::numeric_limits<decodekit::token_id>::min();
        case 4:
            return decodekit::token_id(vocab + 1);
        default:
            return in.ConsumeIntegral<decodekit::token_id>();
    }
}

/// A token list of length in [0, max_len] (ids mostly small so that repeats occur).
inline std::vector<decodekit::token_id> consume_tokens(FuzzedDataProvider& in, std::size_t vocab,
                                                       std::size_t max_len) {
    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, max_len);
    std::vector<decodekit::token_id> t;
    t.reserve(n);
    // A small alphabet makes repeated n-grams (DRY, no-repeat-ngram) likely.
    const std::size_t alphabet =
        vocab == 0 ? 1 : in.ConsumeIntegralInRange<std::size_t>(1, vocab < 6 ? vocab : 6);
    for (std::size_t i = 0; i < n && in.remaining_bytes() > 0; ++i) {
        const std::uint8_t b = in.ConsumeIntegral<std::uint8_t>();
        if (b < 200)
            t.push_back(decodekit::token_id(b % alphabet));
        else
            t.push_back(consume_token(in, vocab));
    }
    return t;
}

/// A float parameter: usually in [lo, hi], sometimes anything (NaN, inf, negative, huge).
inline float consume_param(FuzzedDataProvider& in, float lo, float hi) {
    const std::uint8_t kind = in.ConsumeIntegral<std::uint8_t>();
    if (kind < 200) return in.ConsumeFloatingPointInRange<float>(lo, hi);
    if (kind < 210) return lo;
    if (kind < 220) return hi;
    return palette_value(std::uint8_t(240 + (kind & 15)));
}

}  // namespace dk_fuzz
