#pragma once
// Shared rows of the speculative verification tests (test_speculative_cut,
// test_speculative_residual): a deterministic target row, a related draft row, and a sampler's
// processed distribution as the sparse q a proposer stores.
#include <decodekit/decodekit.hpp>

#include <cmath>
#include <cstdint>
#include <vector>

namespace dk_spec_rows {

/// A deterministic row of n entries (a spread of ~4 nats, a NaN, a -inf, a head at the last id).
inline std::vector<float> make_row(std::uint64_t seed, std::size_t n) {
    std::vector<float> x(n);
    std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    for (std::size_t i = 0; i < n; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = float(double(s >> 11) / double(1ull << 53)) * 4.f;
    }
    x[7] = -INFINITY;
    x[n / 2] = NAN;
    x[n - 1] = 6.f;
    return x;
}

/// The draft's row: related to the target's (0.8 target + 0.6 noise).
inline std::vector<float> draft_row(const std::vector<float>& t) {
    const auto n = make_row(99, t.size());
    std::vector<float> d(t.size());
    for (std::size_t i = 0; i < t.size(); ++i)
        d[i] = std::isfinite(t[i]) ? 0.8f * t[i] + 0.6f * n[i] : 0.f;
    return d;
}

/// The sampler's processed distribution of `row` (sampler_processing), sparse.
inline decodekit::sparse_distribution sparse_of(decodekit::sampler& s,
                                                const std::vector<float>& row) {
    decodekit::sparse_distribution out;
    decodekit::sampler_processing{s}(row, {}, out);
    return out;
}

}  // namespace dk_spec_rows
