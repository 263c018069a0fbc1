#pragma once
/// \file kernels/nucleus.hpp
/// top-p (nucleus) selection without a full sort.
/// Semantics: kernels/reference.hpp (equal exactly: same kept set, same order). No random
/// numbers are consumed.
///
/// Passes over the row: 3 (max; fused exp-and-sum giving Z; one compare-and-compact pass), then
/// work on the survivors only. The compaction keeps x_i >= tau with
/// tau = m + T ln(0.5 (1 - p) Z / V): everything below tau holds less than half of the mass
/// 1 - p that top-p may drop, so the crossing token is always among the survivors. The survivors
/// are ordered lazily (nth_element + sort of the first 64, then 4x more each time the mass has
/// not reached p yet) and the rule is applied in double with the reference's own weights.
/// Exactness: Z from the SIMD pass is within ~1e-5 relative of the reference's double sum; when
/// a decision of the rule lies within 1e-4 (relative) of p, Z is recomputed exactly as the
/// reference does (one scalar pass, rare) so the kept set is identical.
/// Rows with +inf or no valid entry, and p >= 1, fall back to simple exact paths.

#include <decodekit/candidates.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <span>

DECODEKIT_BEGIN_NAMESPACE
namespace kernels {

/// Top-p (nucleus) at temperature T: sorted by probability descending (ties by id), keep entry
/// j iff the mass strictly before it is below decimal_floor(p), and at least max(1, min_keep)
/// entries; p >= 1 keeps every valid entry; output sorted like top_k; equals reference::top_p. \pre
/// out.capacity() >= x.size(), temperature > 0
template <class A = simd::default_arch>
std::size_t top_p(std::span<const float> x, float p, float temperature, std::size_t min_keep,
                  candidates& out) noexcept {
    DECODEKIT_ASSERT(out.capacity() >= x.size(), "top_p: out.capacity() must be >= x.size()");
    constexpr std::size_t L = simd::lanes<A>;
    out.clear();
    const std::size_t n = x.size(), nfull = n / L * L;
    if (n == 0) return 0;
    const std::size_t keep = std::max<std::size_t>(1, min_keep);
    if (!(p > 0)) return kernels::top_k<A>(x, keep, tie_policy::exactly_k, out);
    if (p >= 1) return kernels::top_k<A>(x, n, tie_policy::keep_ties, out);  // every valid entry
    const double target = reference::decimal_floor(p);
    const float m = kernels::max<A>(x);
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !std::isfinite(inv_t))
        return reference::top_p(x, p, temperature, min_keep, out);
    const double z_fast = detail::exp_pass<A, false>(x, m, inv_t, nullptr);

    // Survivor threshold (see the file comment); the lowest finite float keeps every valid entry.
    float tau = detail::lowest_f;
    if (p < 1) {
        const double td = double(m) + double(temperature) *
                                          std::log(0.5 * (1.0 - double(p)) * z_fast / double(n));
        if (td > double(detail::lowest_f)) tau = std::nextafter(float(td), detail::neg_inf_f);
    }
    const float* xp = x.data();
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    for (;;) {
        std::size_t c = detail::compact_batches<A>(xp, 0, nfull, tau, false, 0, ids, lg);
        for (std::size_t i = nfull; i < n; ++i)
            if (xp[i] >= tau) {
                ids[c] = token_id(i);
                lg[c] = xp[i];
                ++c;
            }
        std::uint64_t* keys = out.key_storage();
        for (std::size_t j = 0; j < c; ++j) keys[j] = detail::rank_key(lg[j], ids[j]);
        std::size_t sorted = 0;  // keys[0, sorted) are in final order
        auto ensure_sorted = [&](std::size_t upto) {
            if (upto <= sorted) return;
            upto = std::max(upto, std::min(c, sorted * 4));
            upto = std::min(upto, c);
            if (upto < c)
                std::nth_element(keys + sorted, keys + (upto - 1), keys + c,
                                 std::greater<std::uint64_t>());
            std::sort(keys + sorted, keys + upto, std::greater<std::uint64_t>());
            sorted = upto;
        };
        ensure_sorted(std::min<std::size_t>(c, std::max<std::size_t>(64, keep)));
        // The reference's loop, over the survivors, with normaliser z. Returns the kept count;
        // `borderline` is set when a deciding comparison is within 1e-4 of p.
        auto walk = [&](double z, bool& borderline) {
            borderline = false;
            double before = 0;
            std::size_t k = 0;
            while (k < c) {
                const bool forced = k < keep;
                if (!forced && !(before < target)) break;
                if (!forced && std::abs(before - target) <= 1e-4 * target) borderline = true;
                ensure_sorted(k + 1);
                before +=
                    reference::weight(xp[std::size_t(detail::key_id(keys[k]))], m, temperature) / z;
                ++k;
            }
            if (k < c && k >= keep && std::abs(before - target) <= 1e-4 * target) borderline = true;
            return k;
        };
        bool borderline = false;
        std::size_t kept = walk(z_fast, borderline);
        if (borderline) kept = walk(reference::exp_sum(x, temperature).sum, borderline);
        if (kept == c && tau > detail::lowest_f) {
            tau = detail::lowest_f;  // ran out of survivors (rounding): once more with all
            continue;
        }
        for (std::size_t j = 0; j < kept; ++j) {
            ids[j] = detail::key_id(keys[j]);
            lg[j] = xp[std::size_t(ids[j])];
        }
        out.resize(kept);
        return kept;
    }
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
