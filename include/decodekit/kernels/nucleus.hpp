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
#include <decodekit/kernels/cut.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/kernels/weights.hpp>
#include <decodekit/simd/xsimd_compat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <functional>
#include <span>
#include <type_traits>
#include <utility>

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
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t))
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

namespace detail {

/// The order a weighted cut walks, as a float key per logit: larger key first (ties: larger
/// logit, then lower id). Top-p's key is the logit itself.
template <class A>
struct logit_key {
    float m, inv_t;  ///< the row max and 1 / T (for d_bound)
    simd::batch<A> operator()(const simd::batch<A>& v) const noexcept { return v; }
    float operator()(float v) const noexcept { return v; }
    /// Upper bound of |d| = (m - x) / T over the entries whose key is >= y.
    double d_bound(float y) const noexcept {
        return std::min(200.0, std::max(0.0, double(m - y) * double(inv_t)));
    }
    /// How far a bracket bound must stay from the keys inside it (the keys' error: none here).
    float margin() const noexcept { return 0.f; }
};

/// The state of a weighted cut: the crossing lies in the bracket [lo, hi) of keys (its ids,
/// logits and weights at [0, size) of the output's id and logit storage and of the weights
/// scratch); the entries with key >= hi come before it (their weights' sum, exact up to the
/// double additions; their sum of w |d| in float blocks, where summed (typical's cut does not:
/// typical_search bounds it from inner_lo / inner_hi); their count); inner_lo / inner_hi: the
/// smallest and largest logit among them (when tracked). The weights scratch holds the row's
/// weights from `dirty` on (below it, bracket weights: recompute there).
struct weighted_bracket {
    float lo = 0, hi = 0;
    std::size_t size = 0;
    double mass = 0;  ///< the bracket's weights summed in float blocks (provisional)
    double above = 0;
    /// sum of w |d| over the entries before the bracket, within 1 +- 128 u (typical's brackets:
    /// 0, not summed)
    double above_wd = 0;
    std::size_t above_count = 0;
    float inner_lo = std::numeric_limits<float>::infinity();
    float inner_hi = -std::numeric_limits<float>::infinity();
    std::size_t dirty = 0;
};

/// One pass over entries: those with key >= hi join b.above, those with key in [lo, hi) are
/// compacted (ids, logits, weights) to ids/lg/w from index 0 (in place: each vector is read
/// before a store reaches it) and become the bracket [lo, hi). Row: the source is the row (ids
/// are positions; weights read from w, recomputed below b.dirty); otherwise the current bracket
/// (ids/lg/w[0, count)). Track: also the smallest and largest logit joining b.above. Wd: their
/// w |d| summed into b.above_wd (false: not summed, b.above_wd left as it was).
template <class A, bool Row, bool Track, class Key, bool Wd = true>
void split(const float* src, float* w, std::size_t count, float lo, float hi, float m, float inv_t,
           const Key& key, token_id* ids, float* lg, weighted_bracket& b) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    constexpr float pinf = std::numeric_limits<float>::infinity();
    const std::size_t nfull = count / L * L;
    const std::size_t fresh = Row ? b.dirty : 0;  // Row: weights below are recomputed
    const B lob(lo), hib(hi), mb(m), tb(inv_t), zero(0.f), cap(200.f);
    // two sets of accumulators (even and odd vectors), so that no add waits on the previous one
    struct acc {
        D a0 = D(0.0), a1 = D(0.0);
        B bm = B(0.f), wd = B(0.f);
    } ea, oa;
    B tlo(pinf), thi(-pinf);
    std::size_t cnt = 0, c = 0, since = 0;
    double tail = 0, bmass = 0, wd_sum = 0;
    // one vector, its weights computed (computed: std::true_type) or read
    auto one = [&](auto computed, std::size_t i, acc& s) DECODEKIT_ALWAYS_INLINE {
        const B v = B::load_unaligned(src + i);
        const B y = key(v);
        const auto up = y >= hib;
        const auto in = (y >= lob) & (y < hib);
        const B wv = [&] {
            if constexpr (decltype(computed)::value)
                return weight_lanes<A>(v, mb, tb);
            else
                return B::load_unaligned(w + i);
        }();
        if (const std::uint64_t mu = simd::to_mask<A>(up)) {
            const B wu = simd::select<A>(up, wv, zero);
            simd::widen_add<A>(s.a0, s.a1, wu);
            if constexpr (Wd)
                s.wd = simd::fma<A>(wu, simd::min<A>(simd::select<A>(up, (mb - v) * tb, zero), cap),
                                    s.wd);
            cnt += std::size_t(std::popcount(mu));
            if constexpr (Track) {
                tlo = simd::min<A>(tlo, simd::select<A>(up, v, B(pinf)));
                thi = simd::max<A>(thi, simd::select<A>(up, v, B(-pinf)));
            }
        }
        if (const std::uint64_t mi = simd::to_mask<A>(in)) {
            s.bm += simd::select<A>(in, wv, zero);
            simd::ibatch<A> iv;
            if constexpr (Row)
                iv = simd::iota<A>(token_id(i));
            else
                iv = simd::ibatch<A>::load_unaligned(ids + i);
            c += simd::compress_store<A>(v, wv, iv, mi, lg + c, w + c, ids + c);
        }
    };
    std::size_t i = 0;
    // pairs of vectors up to stop (a multiple of 2 L)
    auto pairs = [&](auto computed, std::size_t stop) DECODEKIT_ALWAYS_INLINE {
        for (; i < stop; i += 2 * L) {
            one(computed, i, ea);
            one(computed, i + L, oa);
            if (++since == 16) {  // <= 32 float additions per lane before they go to double
                bmass += double(simd::reduce_add<A>(ea.bm + oa.bm));
                wd_sum += double(simd::reduce_add<A>(ea.wd + oa.wd));
                ea.bm = oa.bm = ea.wd = oa.wd = zero;
                since = 0;
            }
        }
    };
    // the pairs that reach below fresh with their weights computed (recomputed weights are the
    // stored ones bit for bit), then the rest with theirs read: two loops, so that the loop over
    // the row holds no exponential (typical_split_row's note)
    const std::size_t npairs = nfull / (2 * L) * (2 * L);
    pairs(std::true_type{}, std::min(npairs, (fresh + 2 * L - 1) / (2 * L) * (2 * L)));
    pairs(std::false_type{}, npairs);
    if (i < nfull) {
        if (i < fresh)
            one(std::true_type{}, i, ea);
        else
            one(std::false_type{}, i, ea);
    }
    D a0 = ea.a0 + oa.a0, a1 = ea.a1 + oa.a1;
    B bm = ea.bm + oa.bm, wd = ea.wd + oa.wd;
    float flo = simd::reduce_min<A>(tlo), fhi = simd::reduce_max<A>(thi);
    for (std::size_t q = nfull; q < count; ++q) {
        const float v = src[q];
        const float y = key(v);
        const token_id id = Row ? token_id(q) : ids[q];
        const float wi = q < fresh ? weight_one<A>(v, m, inv_t) : w[q];
        if (y >= hi) {
            tail += double(wi);
            if constexpr (Wd) wd_sum += double(wi) * std::min(200.0, double((m - v) * inv_t));
            ++cnt;
            flo = v < flo ? v : flo;
            fhi = v > fhi ? v : fhi;
        } else if (y >= lo) {
            ids[c] = id;
            lg[c] = v;
            w[c] = wi;
            bmass += double(wi);
            ++c;
        }
    }
    bmass += double(simd::reduce_add<A>(bm));
    wd_sum += double(simd::reduce_add<A>(wd));
    b.mass = bmass;
    b.above += simd::reduce_add<A>(a0 + a1) + tail;
    b.above_wd += wd_sum;
    b.above_count += cnt;
    if constexpr (Track) {
        b.inner_lo = std::min(b.inner_lo, flo);
        b.inner_hi = std::max(b.inner_hi, fhi);
    }
    b.size = c;
    b.lo = lo;
    b.hi = hi;
    // (the compress-stores write up to a vector past the count: that much is no longer the row's)
    if constexpr (Row) b.dirty = std::max(b.dirty, std::min(count, c + L));
}

/// Smallest and largest key of the logits v[0, c). \pre c > 0, no NaN key
template <class A, class Key>
std::pair<float, float> key_min_max(const float* v, std::size_t c, const Key& key) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    float mn = key(v[0]), mx = mn;
    std::size_t j = 0;
    if (c >= L) {
        B bmn = key(B::load_unaligned(v)), bmx = bmn;
        for (j = L; j + L <= c; j += L) {
            const B y = key(B::load_unaligned(v + j));
            bmn = simd::min<A>(bmn, y);
            bmx = simd::max<A>(bmx, y);
        }
        mn = simd::reduce_min<A>(bmn);
        mx = simd::reduce_max<A>(bmx);
    }
    for (; j < c; ++j) {
        const float y = key(v[j]);
        mn = y < mn ? y : mn;
        mx = y > mx ? y : mx;
    }
    return {mn, mx};
}

/// A weighted cut's provisional error on a mass of the form `above + part of the bracket`
/// (float weights of entries with |d| <= d_bound), as an absolute error against the reference's
/// arithmetic: generous, as it only decides where to keep looking (a wrong "uncertain" keeps a
/// wider bracket).
inline double cut_provisional_error(double mass, double d_bound, double z, double z_error,
                                    std::size_t n) noexcept {
    return (exp_error + arg_error * d_bound + 128 * 0x1p-24) * mass + 2 * z_error +
           (reference_error(n) + 4 * sum_error(n)) * z + double(n) * flush_error;
}

/// One narrowing round over the bracket (ids/lg/w[0, b.size), its keys within [mn, mx]): 7
/// thresholds around the crossing's estimate from a strided sample of min(256, max(64, size / 4))
/// bracket entries (sorted by key; their weights, scaled to the bracket's mass, added from the top
/// until b.above reaches rmass: sample rank j; thresholds at ranks j -+ 3, 10, 24 and at j), or
/// split evenly in the ordered image of [mn, mx] when that estimate does not narrow anything; one
/// pass sums the bracket's weights at or above each threshold (float blocks); the part between
/// the highest threshold that the mass above certainly reaches and the lowest one it certainly
/// does not stays the bracket (split in place; Wd: as split). False when no threshold was certain
/// (the bracket stays).
template <class A, bool Track, class Key, bool Wd = true>
bool narrow(token_id* ids, float* lg, float* w, float mn, float mx, float m, float inv_t,
            const Key& key, double rmass, double z, double z_error, std::size_t n, bool even,
            weighted_bracket& b) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>, K = 7;
    const std::size_t c = b.size;
    float t[K + 2];
    t[0] = mn;
    t[K + 1] = b.hi;
    if (!even) {
        constexpr std::size_t S = 256;
        const std::size_t ns = std::min(S, std::max<std::size_t>(64, c / 4));
        std::uint64_t sk[S];
        for (std::size_t q = 0; q < ns; ++q) {
            const std::size_t j = q * c / ns;
            sk[q] = (std::uint64_t(std::uint32_t(ordered_image(key(lg[j])) ^ 0x80000000u)) << 32) |
                    std::uint32_t(j);
        }
        std::sort(sk, sk + ns, std::greater<std::uint64_t>());
        // ratio estimate: the sample's share of the bracket's (provisional) mass
        double ws = 0;
        for (std::size_t q = 0; q < ns; ++q) ws += double(w[std::size_t(std::uint32_t(sk[q]))]);
        const double scale = ws > 0 ? b.mass / ws : 0.0;
        double acc = b.above;
        std::size_t j = 0;
        for (; j < ns; ++j) {
            acc += scale * double(w[std::size_t(std::uint32_t(sk[j]))]);
            if (acc >= rmass) break;
        }
        auto key_at = [&](std::ptrdiff_t r) {
            r = std::clamp<std::ptrdiff_t>(r, 0, std::ptrdiff_t(ns) - 1);
            return key(lg[std::size_t(std::uint32_t(sk[std::size_t(r)]))]);
        };
        constexpr std::ptrdiff_t off[K] = {24, 10, 3, 0, -3, -10, -24};  // ascending keys
        for (std::size_t k = 0; k < K; ++k) t[k + 1] = key_at(std::ptrdiff_t(j) + off[k]);
    } else {
        const std::int64_t i0 = ordered_image(mn), i1 = ordered_image(mx);
        for (std::size_t k = 1; k <= K; ++k)
            t[k] = from_ordered_image(std::int32_t(i0 + (i1 - i0) * std::int64_t(k) / (K + 1)));
    }
    double mass[K + 2] = {};
    {
        const B zero(0.f);
        B tk[K];
        for (std::size_t k = 0; k < K; ++k) tk[k] = B(t[k + 1]);
        const std::size_t cfull = c / L * L;
        std::size_t j = 0;
        while (j < cfull) {
            const std::size_t end = std::min(cfull, j + 32 * L);
            B acc[K];
            for (std::size_t k = 0; k < K; ++k) acc[k] = zero;
            for (; j < end; j += L) {
                const B y = key(B::load_unaligned(lg + j));
                const B wv = B::load_unaligned(w + j);
                for (std::size_t k = 0; k < K; ++k) acc[k] += simd::select<A>(y >= tk[k], wv, zero);
            }
            for (std::size_t k = 0; k < K; ++k) mass[k + 1] += double(simd::reduce_add<A>(acc[k]));
        }
        for (; j < c; ++j) {
            const float y = key(lg[j]);
            for (std::size_t k = 1; k <= K; ++k)
                if (y >= t[k]) mass[k] += double(w[j]);
        }
    }
    const double db = key.d_bound(mn);
    std::size_t a = 0, e = K + 1;
    for (std::size_t k = K; k >= 1; --k) {
        const double tot = b.above + mass[k];
        if (tot - rmass > cut_provisional_error(tot, db, z, z_error, n)) {
            a = k;
            break;
        }
    }
    for (std::size_t k = a + 1; k <= K; ++k) {
        const double tot = b.above + mass[k];
        if (rmass - tot > cut_provisional_error(tot, db, z, z_error, n)) {
            e = k;
            break;
        }
    }
    // bounds kept key.margin() away from the keys they enclose (an inexact key's error)
    const float lo2 = std::max(mn, t[a] - key.margin()), hi2 = std::min(b.hi, t[e] + key.margin());
    if (!(lo2 < hi2) || (lo2 <= mn && hi2 >= b.hi)) return false;
    split<A, false, Track, Key, Wd>(lg, w, c, lo2, hi2, m, inv_t, key, ids, lg, b);
    return true;
}

/// Narrows the bracket b (ids/lg/w[0, b.size)) to at most 64 entries or one key: rounds of
/// narrow() with sampled thresholds; a round that does not shrink the bracket to half is followed
/// by one with even thresholds (which always shrink the key range), and a round that cannot
/// decide anything ends the narrowing.
template <class A, bool Track, class Key, bool Wd = true>
void narrow_bracket(token_id* ids, float* lg, float* w, float m, float inv_t, const Key& key,
                    double rmass, double z, double z_error, std::size_t n,
                    weighted_bracket& b) noexcept {
    bool even = false;
    while (b.size > 64) {
        const auto [mn, mx] = key_min_max<A>(lg, b.size, key);
        if (!(mn < mx)) break;
        const std::size_t before = b.size;
        if (!narrow<A, Track, Key, Wd>(ids, lg, w, mn, mx, m, inv_t, key, rmass, z, z_error, n,
                                       even, b)) {
            if (even) break;
            even = true;
            continue;
        }
        even = 2 * b.size > before;
    }
}

/// The crossing's estimate from `valid` sampled entries sorted by key (larger first;
/// weight_at(q) the weight of the q-th), each standing for `scale` entries of the row: their
/// weights summed from the bottom until the scaled sum passes `drop` (the mass the cut drops)
/// give the crossing's sample rank j (samples [j, valid) lie below it); delta, the bracket's
/// half-width in samples, is 4 standard deviations of that tail estimate (scale sqrt(sum w^2),
/// in samples of the crossing's weight; at most 512) plus 3. Returns {j, delta}.
template <class W>
std::pair<std::size_t, std::size_t> sampled_crossing(std::size_t valid, double scale, double drop,
                                                     W&& weight_at) noexcept {
    constexpr double cap = 512;
    double below = 0, below2 = 0, wj = 0;
    std::size_t j = valid;
    while (j > 0) {
        wj = weight_at(j - 1);
        below += scale * wj;
        below2 += wj * wj;
        if (below > drop) break;
        --j;
    }
    const double sd = wj > 0 ? std::sqrt(below2) / wj : cap;
    return {j, std::size_t(std::min(cap, 4 * sd)) + 3};
}

/// The bracket [lo, hi) of a weighted cut from an estimate: split the row at it (split_row(lo,
/// hi, b) fills b from the row), check it (the mass above certainly below rmass, the mass of the
/// bracket and above certainly reaching it; else widened: hi to `ceiling` then to +inf, lo to
/// `floor` then to -inf; at most five passes, three with ceiling +inf), then narrow it (7
/// thresholds a round) to at most 64 entries or one key. Wd: the narrowing sums the w |d| of the
/// entries it moves above into b.above_wd (false: it does not; split_row decides for its own).
template <class A, bool Track, bool Wd = true, class Key, class SplitRow>
weighted_bracket checked_bracket_by(std::size_t n, float* w, float m, float inv_t, const Key& key,
                                    double rmass, double z, double z_error, float floor,
                                    float ceiling, float lo, float hi, token_id* ids, float* lg,
                                    SplitRow&& split_row) noexcept {
    weighted_bracket b;
    for (;;) {
        const std::size_t dirty = b.dirty;
        b = {};
        b.dirty = dirty;
        split_row(lo, hi, b);
        const double db = key.d_bound(lo);
        const bool hi_ok = hi == std::numeric_limits<float>::infinity() ||
                           rmass - b.above > cut_provisional_error(b.above, db, z, z_error, n);
        const double ge_lo = b.above + b.mass;
        const bool lo_ok =
            lo == lowest_f || ge_lo - rmass > cut_provisional_error(ge_lo, db, z, z_error, n);
        if (hi_ok && lo_ok) break;
        if (!hi_ok) hi = hi < ceiling ? ceiling : std::numeric_limits<float>::infinity();
        if (!lo_ok) lo = lo > floor ? std::max(floor, lowest_f) : lowest_f;
    }
    narrow_bracket<A, Track, Key, Wd>(ids, lg, w, m, inv_t, key, rmass, z, z_error, n, b);
    return b;
}

/// checked_bracket_by with the row split by split (find_bracket, top-p's sampled search).
template <class A, bool Track, class Key>
weighted_bracket checked_bracket(std::span<const float> x, float* w, float m, float inv_t,
                                 const Key& key, double rmass, double z, double z_error,
                                 float floor, float lo, float hi, token_id* ids,
                                 float* lg) noexcept {
    const std::size_t n = x.size();
    return checked_bracket_by<A, Track>(
        n, w, m, inv_t, key, rmass, z, z_error, floor, std::numeric_limits<float>::infinity(), lo,
        hi, ids, lg, [&](float l, float h, weighted_bracket& b) {
            split<A, true, Track>(x.data(), w, n, l, h, m, inv_t, key, ids, lg, b);
        });
}

/// The bracket of a weighted cut over the keys of the row (see weighted_bracket): the entries
/// in key order (larger first) whose prefix mass through the crossing first reaches rmass.
/// Sampled bounds (512 entries at hashed positions; their weights summed from the bottom up to
/// the mass the cut drops, scaled by n / 512, give the crossing's sample rank j; the bracket
/// spans j -+ (4 standard deviations of that tail estimate + 3) samples), at least `floor` (a key
/// below which the cut certainly does not go; -inf: none), checked (the mass above certainly below
/// rmass, the mass of the bracket and above certainly reaching it; else widened: at most three
/// passes), then narrowed (7 thresholds a round) to at most 64 entries or one key. w: the row's
/// weights on entry; the bracket's weights at [0, size) on return (the row's from b.dirty on).
template <class A, bool Track, class Key>
weighted_bracket find_bracket(std::span<const float> x, float* w, float m, float inv_t,
                              const Key& key, double rmass, double z, double z_error, float floor,
                              token_id* ids, float* lg) noexcept {
    const std::size_t n = x.size();
    float lo = std::max(floor, lowest_f), hi = std::numeric_limits<float>::infinity();
    if (n > 4096) {
        constexpr std::size_t S = 512;
        std::uint64_t keys[S], tmp[S];
        const std::uint64_t stride = n / S;
        std::size_t valid = 0;
        for (std::size_t j = 0; j < S; ++j) {
            const std::size_t i = sample_position(j, stride);
            const float y = key(x[i]);
            if (!(y >= lowest_f)) continue;             // NaN, -inf
            keys[valid++] = ~rank_key(y, token_id(i));  // ascending = larger key first
        }
        if (valid > 0) {
            sort_smallest(keys, valid, valid, tmp);
            const double scale = double(n) / double(S), drop = z - rmass;
            const auto [j, delta] = sampled_crossing(valid, scale, drop, [&](std::size_t q) {
                return double(w[std::size_t(key_id(~tmp[q]))]);
            });
            auto key_at = [&](std::size_t q) { return key(x[std::size_t(key_id(~tmp[q]))]); };
            if (j > delta) hi = key_at(j - delta) + key.margin();
            if (j + delta < valid) lo = std::max(lo, key_at(j + delta) - key.margin());
            if (!(lo < hi)) lo = std::max(floor, lowest_f);
        }
    }
    return checked_bracket<A, Track>(x, w, m, inv_t, key, rmass, z, z_error, floor, lo, hi, ids,
                                     lg);
}

/// The share of the value-space estimate's bracket (top_p_bounds, 2.5 standard deviations of
/// the crossing's estimate a side) that the fused pass compacts: its inner band, ~1.5 standard
/// deviations a side (taken in value: inner_band). Every vector of the row holding a bracket
/// entry costs the fused pass a compaction (and mostly a mispredicted branch), so the outer bands
/// are only looked at when the inner band misses (top_p_search: compact_band, one read of the
/// row). Measured over 60 rows per shape and setting (p 0.95 T 1 / 1.5, p 0.99 T 1.5), every
/// set exact: at V = 128256 the inner band held on 57-60 of 60 rows (Zipf p 0.95 T 1: 57, its
/// bracket 10.8k -> 6.5k entries on average), at V = 256000 on 53-60; the outer band then held on
/// all but 3 of the 1440 (those took the sampled search, as before). top_p_search on the
/// benchmark rows (A/B interleaved in one process, minimum of 12-20 rounds: the machine was
/// shared): 0-15 % faster at V = 128256 (Zipf p 0.95 T 1 -15 %, T 1.5 -7..-15 %, Gauss -3..-8 %),
/// 4-22 % at 256000 (its Zipf p 0.95 T 1 row misses and recovers: -4 %). 0.4 missed 7 of 30 Zipf
/// rows (the benchmark's among them: +15 % there); 0.7 gave Zipf p 0.95 T 1 -11 %. Those figures
/// are AVX-512's (a compaction is one vcompressps a vector). Without it (AVX2: a branch per set
/// lane) a compaction costs more and a narrower band pays: on a Zen 3 guest, top_p_search over
/// 24 rows per shape and setting (salts 0-23, mean time, minimum of 7 interleaved rounds, misses
/// and fallbacks included), 0.55 against 0.6 at V = 128256: Zipf -3.8 % (p 0.95 T 1), -1.8 %
/// (T 1.5), -2 % (p 0.99 T 1.5), peaked T 1.5 -3.6 %, the others -1..+1 %; at 256000 -1..-4 %;
/// the inner band held on the same rows as with 0.6 but one. 0.45 was 1-4 % faster again on
/// that mean but missed 4 of the 24 Zipf rows at p 0.95 T 1, the benchmark's among them (a miss
/// there: +32 % for that row's sample(), the outer band's compaction); 0.5 missed it too.
inline constexpr float top_p_inner_band =
    simd::x86_family<simd::default_arch> == 512 ? 0.6f : 0.55f;

/// The inner band [ilo, ihi) of a bracket [lo, hi) around the crossing's estimate y, in value:
/// the share f of each side (the mass below a logit is near linear in it across the bracket); a
/// side open (lowest / +inf) stays open; f = 0: a band one float wide below y (tests: nearly
/// always a miss). \pre lo < hi
inline void inner_band(float y, float f, float lo, float hi, float& ilo, float& ihi) noexcept {
    constexpr float pinf = std::numeric_limits<float>::infinity();
    y = std::clamp(y, lo, hi);
    ihi = hi == pinf ? pinf : std::clamp(float(double(y) + f * (double(hi) - double(y))), y, hi);
    ilo = lo == lowest_f ? lo : std::clamp(float(double(y) - f * (double(y) - double(lo))), lo, y);
    if (!(ilo < ihi)) {  // (an empty band: f = 0, or rounding) one value wide below y
        ihi = y;
        ilo = std::max(lo, std::nextafter(y, neg_inf_f));
        if (!(ilo < ihi)) ilo = lo, ihi = hi;
    }
}
/// Rows longer than this get top_p_bounds' estimate.
inline constexpr std::size_t top_p_estimate_min = 4096;
/// Where in the weights' scratch w the max pass leaves its block maxima for top_p_bounds (after
/// the heavy entries' room, before the sample's: w[2048, 2048 + n / 8) with n > 4096).
inline constexpr std::size_t top_p_block_maxima_at = 2048;

/// Where top_p_bounds' estimate came from.
enum class top_p_estimate : std::uint8_t {
    none,     ///< no estimate (a short row, no valid sampled entry, too many heavy entries)
    sampled,  ///< from sampled entries at hashed positions (no entry heavy)
    heavy,    ///< from the heavy entries taken exactly, the rest sampled
};

/// The estimate's walk over c entries by rank (0: the largest logit): mass_at(r) the mass of the
/// entry of rank r (its weight, times the entries it stands for when it is a sample), sampled_at(r)
/// its weight when it is a sample standing for light_scale entries (else 0: those add to the
/// estimate's variance). The masses summed from the bottom first pass `drop` (the mass the cut
/// drops, (1 - target) Z with Z estimated from the same samples) at the crossing; sd =
/// light_scale sqrt(target^2 (the sampled weights squared up to it) + (1 - target)^2 (those
/// above it)) is the standard deviation of where the crossing falls. Returns the bracket's ranks
/// {a, b}: a the rank 3 above the one where the sum first passes drop + 3 sd (0 when none: the
/// bracket open above), b the rank 3 below the one where it first passes drop - 3 sd (c when none:
/// open below). Where every entry is a sample of like weight this is find_bracket's
/// sampled_crossing with 3 standard deviations instead of 4; where exact entries sit beside the
/// samples, the bracket spans the mass the error allows, not a count of entries. (3 sd, measured
/// before the spread counted the drop's own error, over 200 rows per shape and setting of the
/// benchmark family at V = 128256, top-p 0.95 T 1 and 1.5, 0.99 T 1.5: the fused bracket held on
/// 197-200 of 200 rows per shape (4 sd: 200), and the narrower bracket made every shape 2-6 %
/// faster on average, misses included: a miss costs one sampled search.)
template <class Mass, class Sampled>
std::pair<std::size_t, std::size_t> estimate_crossing(std::size_t c, double drop, double target,
                                                      double light_scale, Mass&& mass_at,
                                                      Sampled&& sampled_at) noexcept {
    double below = 0, below2 = 0, all2 = 0;
    for (std::size_t r = 0; r < c; ++r) {
        const double ws = sampled_at(r);
        all2 += ws * ws;
    }
    std::size_t j = c;  // the crossing: rank j - 1
    while (j > 0) {
        below += mass_at(j - 1);
        const double ws = sampled_at(j - 1);
        below2 += ws * ws;
        if (below > drop) break;
        --j;
    }
    // (drop = (1 - target) Z is estimated from the same samples: see top_p_bounds)
    const double sd = light_scale * std::sqrt(target * target * below2 +
                                              (1 - target) * (1 - target) * (all2 - below2));
    const double low = drop - 3 * sd, high = drop + 3 * sd;
    std::size_t a = 0, b = c;
    below = 0;
    bool found_low = !(low >= 0);  // (a negative low: open below)
    for (std::size_t r = c; r > 0; --r) {
        below += mass_at(r - 1);
        if (!found_low && below > low) {
            found_low = true;
            b = std::min(c, r - 1 + 3);
        }
        if (below > high) {
            a = r - 1 >= 3 ? r - 1 - 3 : 0;
            return {a, b};
        }
    }
    return {0, b};
}

/// The sampled weights below a logit: their sum f, the sum of their squares g (when Sq), and how
/// many sampled logits lie below it.
struct sample_mass {
    double f = 0, g = 0;
    std::size_t count = 0;
};

/// sample_mass of the sampled logits sl[0, c) (weights sw) below y (float sums per lane).
template <class A>
sample_mass sample_mass_below(const float* sl, const float* sw, std::size_t c, float y,
                              bool sq) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B yb(y), zero(0.f);
    B f(0.f), g(0.f);
    std::size_t cnt = 0, j = 0;
    for (; j + L <= c; j += L) {
        const auto below = B::load_unaligned(sl + j) < yb;
        const B wv = simd::select<A>(below, B::load_unaligned(sw + j), zero);
        f += wv;
        if (sq) g = simd::fma<A>(wv, wv, g);
        cnt += std::size_t(std::popcount(simd::to_mask<A>(below)));
    }
    sample_mass r;
    for (; j < c; ++j)
        if (sl[j] < y) {
            r.f += double(sw[j]);
            r.g += double(sw[j]) * double(sw[j]);
            ++cnt;
        }
    r.f += double(simd::reduce_add<A>(f));
    if (sq) r.g += double(simd::reduce_add<A>(g));
    r.count = cnt;
    return r;
}

/// The sampled weights below each of K logits y[0, K) in one pass over sl[0, c) (weights sw):
/// f[k] their sum, g[k] the sum of their squares (when Sq; else g untouched), as
/// sample_mass_below's f and g (float sums per lane).
template <class A, std::size_t K, bool Sq>
void sample_masses_below(const float* sl, const float* sw, std::size_t c, const float (&y)[K],
                         double (&f)[K], double (&g)[K]) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const B zero(0.f);
    B yb[K], fb[K], gb[K];
    for (std::size_t k = 0; k < K; ++k) {
        yb[k] = B(y[k]);
        fb[k] = gb[k] = zero;
        f[k] = 0;
        if constexpr (Sq) g[k] = 0;
    }
    std::size_t j = 0;
    for (; j + L <= c; j += L) {
        const B v = B::load_unaligned(sl + j), wv = B::load_unaligned(sw + j);
        for (std::size_t k = 0; k < K; ++k) {
            const B wb = simd::select<A>(v < yb[k], wv, zero);
            fb[k] += wb;
            if constexpr (Sq) gb[k] = simd::fma<A>(wb, wb, gb[k]);
        }
    }
    for (; j < c; ++j)
        for (std::size_t k = 0; k < K; ++k)
            if (sl[j] < y[k]) {
                f[k] += double(sw[j]);
                if constexpr (Sq) g[k] += double(sw[j]) * double(sw[j]);
            }
    for (std::size_t k = 0; k < K; ++k) {
        f[k] += double(simd::reduce_add<A>(fb[k]));
        if constexpr (Sq) g[k] += double(simd::reduce_add<A>(gb[k]));
    }
}

/// Bounds [lo, hi) of top-p's crossing estimated before the exponential pass. S entries at
/// hashed positions (S = 2048 on rows of at least 32768 entries, else 512; kept in the scratch's
/// last entries, not on the stack) are weighed here and give an estimate of the row's normaliser
/// Z; the heavy entries, those with a weight above t = (1 + that estimate without its 4 largest
/// sampled weights) / H (H = 1536: t stands for Z / H; a sampled heavy entry would inflate the
/// estimate), are found by a compare over the blocks whose maxima (bm) reach t (no exponential;
/// a tenth of a Zipf row's blocks or fewer; skipped when t >= 1, as no weight exceeds 1) and
/// weighed exactly; the sample's entries below t stand for the rest
/// of the row. With S = 2048, when the bracket lies among the light entries: the logit y where
/// the scaled sampled mass below y passes the estimated mass the cut drops (D) is searched in
/// value space (3 rounds of 7 thresholds, one SIMD pass over the sample per round: no sort), and
/// the bounds sit where that mass passes D -+ (2.5 standard deviations of the crossing's estimate
/// + 3 samples' mass at the crossing; D is estimated from the same samples, so a light sample
/// below the crossing moves it by target times its weight, one above by (1 - target) times): four
/// times the sample of the walk below, so half the bracket's width on Zipf, Gauss and flat rows;
/// [ilo, ihi), the inner band the fused pass compacts, is top_p_inner_band of each side of it
/// (inner: the share; inner_band). Otherwise (S = 512, or the bracket reaching the heavy entries: a
/// quarter of the sample), over the heavy entries and the sample in logit order (the heavy entries
/// sorted only when the walk or a bound reaches them), the masses are summed from the bottom (a
/// heavy entry's weight, a sample's weight times the entries it stands for) and the bounds sit 3
/// entries beyond where that sum passes D -+ 3 standard deviations of the crossing's estimate
/// (estimate_crossing; the inner band is the whole bracket). Rows whose mass sits on a few heavy
/// logits or a heavy tail (peaked, Zipf) are estimated as well as the others: their normaliser and
/// the mass near the crossing no longer hinge on whether the sample hit a heavy entry. Returns
/// where the estimate came from: none when the row is short
/// (<= 4096), has no valid sampled entry, or has more than H heavy entries; sampled when no entry
/// is heavy. bm: the row's block maxima (max_with_block_maxima; the compare pass reads only the
/// blocks reaching t), in w[top_p_block_maxima_at, ...). ids, lg, w, keys: scratch of x.size()
/// entries each (contents unspecified afterwards). heavy: how many heavy entries were taken (set
/// when the estimate is not none). \pre m finite (the row max), inv_t finite and
/// > 0
template <class A>
top_p_estimate top_p_bounds(std::span<const float> x, float m, float inv_t, double target,
                            const float* bm, token_id* ids, float* lg, float* w,
                            std::uint64_t* keys, float& lo, float& hi, float& ilo, float& ihi,
                            std::size_t& heavy, float inner = top_p_inner_band) noexcept {
    constexpr std::size_t H = 1536, K = max_block<A>, L = simd::lanes<A>;
    static_assert(H + K + L <= top_p_block_maxima_at);
    const std::size_t n = x.size();
    if (n <= top_p_estimate_min) return top_p_estimate::none;  // (n > 2 H: room for the sort)
    // the sample in the scratch's last entries: logits sl, weights sw (lg, w), keys sk, tmp; the
    // heavy entries use ids/lg/w[0, H + K + L) and keys[0, 2 H) at most, bm is w[2048, 2048 +
    // n / 8) at most (n > 4096: disjoint)
    const std::size_t S = n >= 32768 ? 2048 : 512;
    float* const sl = lg + (n - S);
    float* const sw = w + (n - S);
    std::uint64_t* const sk = keys + (n - 2 * S);
    std::uint64_t* const tmp = keys + (n - S);
    const std::uint64_t stride = n / S;
    std::size_t valid = 0;
    for (std::size_t j = 0; j < S; ++j) {
        const std::size_t i = sample_position(j, stride);
        const float y = x[i];
        if (!(y >= lowest_f)) continue;  // NaN, -inf
        sl[valid++] = y;
    }
    if (valid == 0) return top_p_estimate::none;
    const double zs = weigh_logits<A>(sl, valid, m, inv_t, sw);
    constexpr float pinf_f = std::numeric_limits<float>::infinity();
    float top[4] = {};  // the 4 largest sampled weights (descending)
    for (std::size_t q = 0; q < valid; ++q) {
        float v = sw[q];
        if (!(v > top[3])) continue;
        for (float& e : top)
            if (v > e) std::swap(v, e);
    }
    const double rest = std::max(0.0, zs - (double(top[0]) + top[1] + top[2] + top[3]));
    const double t = (1 + rest * double(n) / double(S)) / double(H);
    // the heavy entries (x >= xh) to ids/lg[0, c), their weights to w[0, c)
    std::size_t c = 0;
    float xh = std::numeric_limits<float>::infinity();
    if (t < 1) {
        const double xd = double(m) + std::log(t) / double(inv_t);
        if (!(xd > double(lowest_f))) return top_p_estimate::none;
        xh = float(xd);
        // (only the blocks whose maxima reach xh are read: a tenth of a Zipf row's or fewer)
        const float* p = x.data();
        const std::size_t nb = n / K, nfull = n / L * L;
        const simd::batch<A> xb(xh);
        for (std::size_t b = 0; b < nb && c <= H; ++b)
            if (simd::any<A>(simd::batch<A>::load_unaligned(bm + b * L) >= xb))
                c = compact_batches<A>(p, b * K, b * K + K, xh, false, c, ids, lg);
        if (c <= H) c = compact_batches<A>(p, nb * K, nfull, xh, false, c, ids, lg);
        for (std::size_t i = nfull; i < n && c <= H; ++i)
            if (p[i] >= xh) {
                ids[c] = token_id(i);
                lg[c] = p[i];
                ++c;
            }
        if (c > H) return top_p_estimate::none;
    }
    heavy = c;
    const double zh = weigh_logits<A>(lg, c, m, inv_t, w);
    lo = ilo = lowest_f;
    hi = ihi = std::numeric_limits<float>::infinity();
    // The light samples (below xh), on a large sample: the tail's mass below a logit y, scaled
    // (each light sample stands for ls entries), found by searching y in value space (no sort);
    // when the bracket would reach the heavy entries, the walk below on a quarter of the sample.
    std::size_t step = 1;
    if (S > 512) {
        const auto [ymin, ymax] = key_min_max<A>(sl, valid, logit_key<A>{m, inv_t});
        const float top_y = xh < pinf_f ? xh : std::nextafter(ymax, pinf_f);
        const sample_mass all = sample_mass_below<A>(sl, sw, valid, top_y, true);
        const std::size_t light = S - (valid - all.count);
        const double ls = light > 0 ? double(n - c) / double(light) : 0.0;
        const double zl = ls * all.f;
        const double drop = (1 - target) * (zh + zl);
        // (below m - 104 T every weight is 0: the search starts there)
        const float y0 = std::max(ymin, float(double(m) - 104.0 / double(inv_t)));
        if (drop > 0 && drop < zl && y0 < top_y) {
            // [a, b): ls F(a) < mass <= ls F(b), F the sampled weight below y; 3 rounds of 7
            // thresholds evenly spaced in value (one pass over the sample each); g_at_b: the
            // sampled weights squared below b (Sq; else left as it was)
            auto search = [&](auto sq, double mass, double& g_at_b) {
                constexpr bool Sq = decltype(sq)::value;
                float a = y0, b = top_y;
                for (int round = 0; round < 3; ++round) {
                    float y[7];
                    for (int k = 1; k <= 7; ++k)
                        y[k - 1] = float(double(a) + (double(b) - double(a)) * k / 8.0);
                    double f[7], g[7];
                    sample_masses_below<A, 7, Sq>(sl, sw, valid, y, f, g);
                    // (thresholds not strictly inside (a, b) or not increasing, from rounding:
                    // skipped; F is monotone, so the first one reaching mass is the bound)
                    float na = a, nb = b;
                    for (int k = 0; k < 7; ++k) {
                        if (!(y[k] > na && y[k] < nb)) continue;
                        if (ls * f[k] < mass) {
                            na = y[k];
                        } else {
                            nb = y[k];
                            if constexpr (Sq) g_at_b = g[k];
                            break;
                        }
                    }
                    a = na;
                    b = nb;
                }
                return std::pair<float, float>{a, b};
            };
            double g = all.g;
            const auto [ca, cb] = search(std::true_type{}, drop, g);
            (void)ca;
            // the estimate's error: the crossing is where target (mass below y) equals
            // (1 - target) (mass above y), both scaled sampled sums: a light sample below the
            // crossing moves it by target times its weight (g: their weights squared), one above
            // it by (1 - target) times its weight (all.g - g). Without the second term (the
            // estimated drop's own error) the bounds missed 6 of 60 Zipf rows at V = 256000.
            // 2.5 standard deviations: at most 1 miss in 60 rows per shape and setting (p 0.95
            // T 1 / 1.5, p 0.99 T 1.5; V = 128256 and 256000); 3 would miss none but widen the
            // Zipf bracket at V = 128256 by a fifth (a miss costs a sampled search).
            const double sd =
                ls * std::sqrt(target * target * g + (1 - target) * (1 - target) * (all.g - g));
            const double pad = 3 * ls * double(weight_one<A>(cb, m, inv_t));
            const double m_hi = drop + 2.5 * sd + pad, m_lo = drop - 2.5 * sd - pad;
            if (m_hi < zl) {
                double unused = 0;
                hi = search(std::false_type{}, m_hi, unused).second;
                if (m_lo > 0) lo = search(std::false_type{}, m_lo, unused).first;
                if (!(lo < hi)) lo = lowest_f;
                inner_band(cb, inner, lo, hi, ilo, ihi);
                return c > 0 ? top_p_estimate::heavy : top_p_estimate::sampled;
            }
        }
        step = S / 512;
    }
    double z = zh;
    // the sampled positions below xh (every step-th) stand for the n - c entries below it (an
    // invalid one for itself: weight 0), sorted by logit (larger first)
    std::size_t nl = 0, nsub = 0;
    double zl = 0;
    // (keys: (m - x) / T in fixed point, capped at 104 where every weight is 0, then the sample's
    // index: ascending = larger logit first, in buckets linear in the logit for sort_smallest)
    for (std::size_t q = 0; q < valid; q += step) {
        ++nsub;
        if (sl[q] < xh) {
            const float d = std::min(104.f, std::max(0.f, (m - sl[q]) * inv_t));
            sk[nl++] = (std::uint64_t(std::uint32_t(d * 4.0e7f)) << 32) | q;
            zl += double(sw[q]);
        }
    }
    const std::size_t light = S / step - std::min(S / step, nsub - nl);
    const double ls = light > 0 ? double(n - c) / double(light) : 0.0;
    z += ls * zl;
    if (nl > 0) sort_smallest(sk, nl, nl, tmp);  // (none when every sampled entry is heavy)
    bool heavy_sorted = false;
    auto at = [&](std::size_t r) {  // the entry of rank r: index into lg/w (heavy) or sl/sw
        if (r >= c) return std::size_t(std::uint32_t(tmp[r - c]));
        if (!heavy_sorted) {
            for (std::size_t e = 0; e < c; ++e) keys[e] = ~rank_key(lg[e], token_id(e));
            sort_smallest(keys, c, c, keys + c);
            heavy_sorted = true;
        }
        return std::size_t(key_id(~keys[c + r]));
    };
    const auto [a, b] = estimate_crossing(
        c + nl, (1 - target) * z, target, ls,
        [&](std::size_t r) { return r < c ? double(w[at(r)]) : ls * double(sw[at(r)]); },
        [&](std::size_t r) { return r < c ? 0.0 : double(sw[at(r)]); });
    auto key_at = [&](std::size_t r) { return r < c ? lg[at(r)] : sl[at(r)]; };
    if (a > 0) hi = key_at(a);
    if (b < c + nl) lo = key_at(b);
    if (!(lo < hi)) lo = lowest_f;
    ilo = lo;
    ihi = hi;
    return c > 0 ? top_p_estimate::heavy : top_p_estimate::sampled;
}

/// The exponential pass fused with the first split of top-p's bracket: every weight
/// w_i = weight_lanes(x_i) stored to w (as weigh_row<A, true>), the row's sum as the sum above hi
/// plus the sum below it, and the split of split<A, true, false> on the fly: the entries with
/// x >= hi summed into b.above, those in [lo, hi) compacted (ids, logits, weights) to ids/lg/w
/// from index 0 (in place: w[0, b.dirty) then holds bracket weights, the row's weights from
/// b.dirty on); their count in b.above_count, their float-block sum in b.mass (provisional).
/// The two sums (above hi, below it) add each group of 8 vectors as a float tree of depth 3 before
/// widening it to double lanes: each within 3 2^-24 (1 + 1e-6) of the exact sum of its float
/// weights, returned as row_sums::pair_error (the remainder vectors are widened one by one).
/// No w |d| is summed: b.above_wd = 0 and row_sums::wd_bound = wd_jensen_bound(sum, n), the
/// caller bounds the prefix's w |d| by wd_jensen_bound too. \pre m finite (the row max), inv_t
/// finite and > 0
template <class A>
row_sums weigh_split_row(std::span<const float> x, float m, float inv_t, float* w, float lo,
                         float hi, token_id* ids, float* lg, weighted_bracket& b) noexcept {
    using B = simd::batch<A>;
    using D = simd::dbatch<A>;
    constexpr std::size_t L = simd::lanes<A>, G = 8;
    const float* p = x.data();
    const std::size_t n = x.size(), nfull = n / L * L;
    const B mb(m), tb(inv_t), lob(lo), hib(hi), zero(0.f);
    // double lanes: a (at or above hi), z (below it: NaN, -inf have weight 0); two sets of each
    D a0(0.0), a1(0.0), a2(0.0), a3(0.0), z0(0.0), z1(0.0), z2(0.0), z3(0.0);
    B bm(0.f);
    double bmass = 0;
    std::size_t cnt = 0, c = 0;
    // one vector from i given its weights e: e stored, the bracket's part compacted; returns e
    // and the mask of the lanes at or above hi
    auto keep = [&](std::size_t i, const B& v, const B& e, simd::batch_bool<A>& up) {
        e.store_unaligned(w + i);
        up = v >= hib;
        cnt += std::size_t(std::popcount(simd::to_mask<A>(up)));
        const auto in = (v >= lob) & ~up;  // (NaN: in neither)
        if (const std::uint64_t mi = simd::to_mask<A>(in)) {
            bm += simd::select<A>(in, e, zero);
            c += simd::compress_store<A>(v, e, simd::iota<A>(token_id(i)), mi, lg + c, w + c,
                                         ids + c);
        }
        return e;
    };
    auto one = [&](std::size_t i, simd::batch_bool<A>& up) {
        const B v = B::load_unaligned(p + i);
        return keep(i, v, simd::exp_nonpositive<A>((v - mb) * tb), up);  // = weight_lanes(v)
    };
    // two pairs of vectors from i (four exponentials in flight: simd::exp_nonpositive_n, the
    // same bits, then kept in order as one() keeps them: the same stores and compaction): their
    // weights above hi and below it, each pair's summed in float (one rounding each). This pass
    // 94 -> 80 us at V = 128256 on Zen 3 AVX2 (top-p's sample() 7-13 % less).
    auto pairs = [&](std::size_t i, B* above, B* below) {
        B v[4], e[4];
        simd::batch_bool<A> u[4];
        for (std::size_t j = 0; j < 4; ++j) {
            v[j] = B::load_unaligned(p + i + j * L);
            e[j] = (v[j] - mb) * tb;
        }
        simd::exp_nonpositive_n<A, 4>(e);
        for (std::size_t j = 0; j < 4; ++j) keep(i + j * L, v[j], e[j], u[j]);
        for (std::size_t k = 0; k < 2; ++k) {
            const std::size_t j = 2 * k;
            above[k] =
                simd::select<A>(u[j], e[j], zero) + simd::select<A>(u[j + 1], e[j + 1], zero);
            below[k] =
                simd::select<A>(u[j], zero, e[j]) + simd::select<A>(u[j + 1], zero, e[j + 1]);
        }
    };
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 32 * L);
        for (; i + G * L <= end; i += G * L) {
            B pa[4], pb[4];
            pairs(i, pa, pb);
            pairs(i + 4 * L, pa + 2, pb + 2);
            simd::widen_add<A>(a0, a1, (pa[0] + pa[1]) + (pa[2] + pa[3]));
            simd::widen_add<A>(z0, z1, (pb[0] + pb[1]) + (pb[2] + pb[3]));
        }
        for (; i < end; i += L) {  // the block's last < 8 vectors, widened one by one
            simd::batch_bool<A> up;
            const B e = one(i, up);
            simd::widen_add_split<A>(a2, a3, z2, z3, e, up);
        }
        bmass += double(simd::reduce_add<A>(bm));  // float blocks of <= 32 additions per lane
        bm = zero;
    }
    double z_tail = 0, tail_above = 0;
    for (; i < n; ++i) {  // the tail, one entry at a time (the same weights)
        const float v = p[i];
        const float e = weight_one<A>(v, m, inv_t);
        w[i] = e;
        z_tail += double(e);  // (NaN, -inf: weight 0, in no range)
        if (v >= hi) {
            tail_above += double(e);
            ++cnt;
        } else if (v >= lo) {
            ids[c] = token_id(i);
            lg[c] = v;
            w[c] = e;
            bmass += double(e);
            ++c;
        }
    }
    row_sums r;
    const double above_v = simd::reduce_add<A>((a0 + a1) + (a2 + a3));
    r.sum = (above_v + simd::reduce_add<A>((z0 + z1) + (z2 + z3))) + z_tail;
    r.pair_error = 3 * 0x1p-24 * (1 + 1e-6);  // the float trees (depth 3)
    r.wd_bound = wd_jensen_bound(r.sum, n, r.pair_error * r.sum);
    b.mass = bmass;
    b.above = above_v + tail_above;
    b.above_wd = 0;
    b.above_count = cnt;
    b.size = c;
    b.lo = lo;
    b.hi = hi;
    b.dirty = std::max(b.dirty, std::min(n, c + L));
    return r;
}

/// Top-p's recovery when the fused pass's inner bracket missed the crossing: the row's entries
/// in [lo, hi) (an outer band, or it and the inner band) compacted with their weights (read from w,
/// recomputed below `fresh`, where w holds the inner bracket) to ids/lg/w from index 0
/// (in place: each vector is read before a store reaches it). No sums, no exponential beyond
/// the band's entries below `fresh`: a read of the row and a compare. Returns the count.
template <class A>
std::size_t compact_band(const float* x, std::size_t n, float* w, std::size_t fresh, float lo,
                         float hi, float m, float inv_t, token_id* ids, float* lg) noexcept {
    using B = simd::batch<A>;
    constexpr std::size_t L = simd::lanes<A>;
    const std::size_t nfull = n / L * L;
    const B lob(lo), hib(hi), mb(m), tb(inv_t);
    std::size_t c = 0, i = 0;
    for (; i < nfull; i += L) {
        const B v = B::load_unaligned(x + i);
        if (const std::uint64_t mi = simd::to_mask<A>((v >= lob) & (v < hib))) {
            const B wv = i < fresh ? weight_lanes<A>(v, mb, tb) : B::load_unaligned(w + i);
            c += simd::compress_store<A>(v, wv, simd::iota<A>(token_id(i)), mi, lg + c, w + c,
                                         ids + c);
        }
    }
    for (; i < n; ++i)
        if (x[i] >= lo && x[i] < hi) {
            const float wi = i < fresh ? weight_one<A>(x[i], m, inv_t) : w[i];
            ids[c] = token_id(i);
            lg[c] = x[i];
            w[c] = wi;
            ++c;
        }
    return c;
}

/// The crossing of a weighted cut: the last entry of the prefix (logit, id), its rank (0-based)
/// and whether it was decided.
struct crossing {
    float value = 0;
    token_id id = 0;
    std::size_t rank = 0;
    bool found = false;
};

/// The reference's own top-p walk (the last tier): every valid entry in rank order (std::sort
/// of their keys in key storage), masses W / Z_ref added in double as reference::top_p does, Z_ref
/// the reference's sum. Exact by construction.
inline crossing nucleus_reference_walk(std::span<const float> x, double target, float temperature,
                                       std::uint64_t* keys) noexcept {
    const reference::softmax_stats st = reference::exp_sum(x, temperature);
    std::size_t c = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (x[i] >= lowest_f) keys[c++] = rank_key(x[i], token_id(i));
    std::sort(keys, keys + c, std::greater<std::uint64_t>());
    double before = 0;
    crossing cr;
    for (std::size_t j = 0; j < c; ++j) {
        if (!(before < target)) break;
        const token_id id = key_id(keys[j]);
        cr = {x[std::size_t(id)], id, j, true};
        before += reference::weight(x[std::size_t(id)], st.max, temperature) / st.sum;
    }
    return cr;
}

/// Bound on |b / z - the reference's mass| for a prefix mass b of float weights (sum of
/// w |d| over the prefix within [wd_lo, wd_hi], count entries) of a row of n entries whose float
/// weights sum to z (their w |d| to at most wd_total): errors common to the prefix and to z
/// cancel in the ratio (b / (b + t) moves by at most (t e_b + b e_t) / z^2).
inline double prefix_ratio_error(double b, double wd_lo, double wd_hi, std::size_t count, double z,
                                 double wd_total, std::size_t n) noexcept {
    const double t = std::max(0.0, z - b);
    const double eb = exp_error * b + arg_error * wd_hi + double(count) * flush_error;
    const double et =
        exp_error * t + arg_error * std::max(0.0, wd_total - wd_lo) + double(n) * flush_error;
    return (t * eb + b * et) / (z * z) * (1 + 1e-6) + 4 * sum_error(n) + reference_error(n);
}

/// prefix_ratio_error with the w |d| of the prefix and of the rest bounded directly (wd_pre_hi,
/// wd_rest_hi) and absolute errors of the sums beyond the double additions: err_pre on the part
/// of the prefix that z shares (moves b and z alike), err_rest on the rest of z (moves z only).
inline double prefix_ratio_error_split(double b, double wd_pre_hi, std::size_t count, double z,
                                       double wd_rest_hi, std::size_t n, double err_pre,
                                       double err_rest) noexcept {
    const double t = std::max(0.0, z - b);
    const double eb = exp_error * b + arg_error * wd_pre_hi + double(count) * flush_error;
    const double et = exp_error * t + arg_error * wd_rest_hi + double(n) * flush_error;
    return (t * (eb + err_pre) + b * (et + err_rest)) / (z * z) * (1 + 1e-6) + 4 * sum_error(n) +
           reference_error(n);
}

/// Which route a top_p_search took (for tests and measurements).
struct top_p_trace {
    top_p_estimate estimate = top_p_estimate::none;  ///< the bounds the fused pass split at
    bool fused_held = false;  ///< the fused split's bracket enclosed the crossing (no search)
    /// the float bound could not decide and the corrected tier ran (it decided when the result's
    /// tier is corrected); not run when the float walk's margin was below half its bound
    bool corrected = false;
    std::size_t heavy = 0;  ///< the heavy entries the estimate took exactly
    /// the fused split's bracket (the estimate's inner band) missed and the outer band's held
    /// (compact_band)
    bool recovered = false;
};

/// The search of top_p_cut / top_p_unordered: the result with its cut, kept, sums and tier;
/// w holds the row's weights from `dirty` on (below: scratch), `out` is scratch. trace: when
/// given, receives the route taken.
template <class A>
truncation_result top_p_search(std::span<const float> x, float p, float temperature,
                               std::size_t min_keep, candidates& out, float* w, std::size_t& dirty,
                               top_p_trace* trace = nullptr,
                               float inner = top_p_inner_band) noexcept {
    constexpr float pinf = std::numeric_limits<float>::infinity();
    truncation_result r;
    dirty = 0;
    const std::size_t n = x.size();
    const std::size_t keep = std::max<std::size_t>(1, min_keep);
    // 0 < p < 1 on a long row (top_p_bounds estimates the bracket): the max pass also keeps the
    // maxima of blocks, so the heavy entries' compare reads only the blocks that hold one
    const bool estimate = p > 0 && p < 1 && n > top_p_estimate_min;
    float* const bm = estimate ? w + top_p_block_maxima_at : nullptr;
    const float m = estimate ? max_with_block_maxima<A>(x, bm) : kernels::max<A>(x);
    r.max = m;
    if (m == neg_inf_f) {  // no valid entry: nothing kept
        std::fill(w, w + n, 0.f);
        return r;
    }
    const float inv_t = 1.f / temperature;
    if (!std::isfinite(m) || !detail::float_inv_temperature(inv_t) || !(temperature > 0)) {
        r.tier = exactness_tier::reference;
        r.sum = reference_weights(x, temperature, w);
        r.kept = reference::top_p(x, p, temperature, min_keep, out);
        r.cut = prefix_cut(out);
        for (std::size_t j = 0; j < r.kept; ++j) r.kept_sum += double(w[std::size_t(out.ids()[j])]);
        return r;
    }
    token_id* ids = out.id_storage();
    float* lg = out.logit_storage();
    // 0 < p < 1 on a long row: the bracket's bounds estimated first (on every row shape: the
    // heavy entries exactly where a sample would miss them), its split fused with the
    // exponential pass (no pass over the row's weights afterwards when the bounds hold)
    float elo = lowest_f, ehi = pinf, ilo = lowest_f, ihi = pinf;
    std::size_t heavy = 0;
    const top_p_estimate est =
        estimate ? top_p_bounds<A>(x, m, inv_t, reference::decimal_floor(p), bm, ids, lg, w,
                                   out.key_storage(), elo, ehi, ilo, ihi, heavy, inner)
                 : top_p_estimate::none;
    const bool fused = est != top_p_estimate::none;
    if (trace) *trace = {.estimate = est, .heavy = heavy};
    weighted_bracket fb;
    const row_sums rs = fused ? weigh_split_row<A>(x, m, inv_t, w, ilo, ihi, ids, lg, fb)
                              : weigh_row<A, true>(x, m, inv_t, w);
    dirty = fb.dirty;
    const double z = rs.sum;
    r.sum = z;
    auto top_keep = [&] {
        r.kept = kernels::top_k_unordered<A>(x, keep, tie_policy::exactly_k, out);
        r.cut = top_k_cut(out, tie_policy::exactly_k);
        r.kept_sum = 0;
        for (std::size_t j = 0; j < r.kept; ++j) {
            const std::size_t i = std::size_t(out.ids()[j]);
            r.kept_sum += double(i < dirty ? weight_one<A>(x[i], m, inv_t) : w[i]);
        }
        return r;
    };
    if (p >= 1) {  // every valid entry
        r.cut = {lowest_f, pinf, npos, npos};
        r.kept = count_reaching<A>(x.data(), n, lowest_f);
        r.kept_sum = z;
        return r;
    }
    if (!(p > 0)) return top_keep();
    const double target = reference::decimal_floor(p);
    const double rmass = target * z;  // the mass through the crossing reaches this
    const double z_error = rs.error(n) + sum_error(n) * z;
    // A rigorous lower bound of the crossing: below tau the whole tail holds less than half of
    // the mass top-p may drop (n weights of at most e^{(tau - m)/T} each).
    float tau = lowest_f;
    {
        const double drop = z - rmass;
        const double td = double(m) + double(temperature) * std::log(0.5 * drop / double(n));
        if (drop > 0 && td > double(lowest_f))
            tau = std::min(m, std::nextafter(float(td), neg_inf_f));
    }
    const logit_key<A> key{m, inv_t};
    weighted_bracket b;
    bool bracketed = false, fused_b = false;  // fused_b: the bracket's sums are the fused pass's
    // whether a split's bracket [b.lo, b.hi) certainly encloses the crossing
    auto encloses = [&](const weighted_bracket& s) {
        const double db = key.d_bound(s.lo);
        const bool hi_ok =
            s.hi == pinf || rmass - s.above > cut_provisional_error(s.above, db, z, z_error, n);
        const double ge_lo = s.above + s.mass;
        const bool lo_ok =
            s.lo == lowest_f || ge_lo - rmass > cut_provisional_error(ge_lo, db, z, z_error, n);
        return std::pair<bool, bool>{hi_ok, lo_ok};
    };
    if (fused) {  // the fused split's bracket, when its bounds certainly enclose the crossing
        const auto [hi_ok, lo_ok] = encloses(fb);
        if (hi_ok && lo_ok) {
            b = fb;
            // (no w |d| summed: the walk bounds the fused bracket's by Jensen's bound alone)
            narrow_bracket<A, false, logit_key<A>, false>(ids, lg, w, m, inv_t, key, rmass, z,
                                                          z_error, n, b);
            bracketed = fused_b = true;
            if (trace) trace->fused_held = true;
        } else {
            // The inner bracket missed on one side: the estimate's outer band on that side
            // becomes the bracket (compact_band: one read of the row, no sums; each vector
            // holding a bracket entry costs a compaction, so the band alone), or, when the
            // crossing lies within the check's error of the inner band's bound, the outer band
            // and the inner band (a second read; 1 row in 96 of the heavy-headed test's). The
            // sums stay the fused pass's: the mass above the bracket is fb.above, plus the inner
            // bracket's mass (summed in double before the band overwrites it) when the bracket
            // lies below it, less the compacted entries' at or above fb.hi; so the fused tree's
            // error on fb.above still moves the prefix and z alike.
            std::size_t band_dirty = 0;
            if (hi_ok != lo_ok && (hi_ok ? elo < fb.lo : ehi > fb.hi)) {
                double inner_mass = 0;
                for (std::size_t j = 0; j < fb.size; ++j) inner_mass += double(w[j]);
                for (int attempt = 0; attempt < 2 && !bracketed; ++attempt) {
                    weighted_bracket rb = fb;
                    rb.lo = hi_ok ? elo : attempt == 0 ? fb.hi : fb.lo;
                    rb.hi = hi_ok ? (attempt == 0 ? fb.lo : fb.hi) : ehi;
                    const std::size_t fresh = std::max(fb.dirty, band_dirty);
                    rb.size =
                        compact_band<A>(x.data(), n, w, fresh, rb.lo, rb.hi, m, inv_t, ids, lg);
                    double mass = 0, up = 0;
                    std::size_t up_count = 0;
                    for (std::size_t j = 0; j < rb.size; ++j) {
                        mass += double(w[j]);
                        if (lg[j] >= fb.hi) {
                            up += double(w[j]);
                            ++up_count;
                        }
                    }
                    const bool below = rb.hi == fb.lo;  // (the inner band above the bracket)
                    rb.mass = mass;
                    rb.above = fb.above + (below ? inner_mass : 0.0) - up;
                    rb.above_count = fb.above_count + (below ? fb.size : 0) - up_count;
                    rb.dirty = band_dirty = std::max(fresh, std::min(n, rb.size + simd::lanes<A>));
                    const auto [hi2, lo2] = encloses(rb);
                    if (hi2 && lo2) {
                        b = rb;
                        narrow_bracket<A, false, logit_key<A>, false>(ids, lg, w, m, inv_t, key,
                                                                      rmass, z, z_error, n, b);
                        bracketed = fused_b = true;
                        if (trace) trace->recovered = true;
                    } else if (hi_ok ? !lo2 : !hi2) {
                        break;  // (the far side failed: the outer band missed too)
                    }
                }
            }
            if (!bracketed) {  // the row's weights back where the brackets lived; the search
                store_weights<A>(x.data(), std::max(fb.dirty, band_dirty), m, inv_t, w);
                dirty = 0;
            }
        }
    }
    if (!bracketed)
        b = find_bracket<A, false>(x, w, m, inv_t, key, rmass, z, z_error, tau, ids, lg);
    dirty = b.dirty;
    // ---- the walk: the bracket in rank order (keys carry the bracket position, whose order is
    // the id order) ----
    std::uint64_t* keys = out.key_storage();
    const std::size_t c = b.size;
    for (std::size_t j = 0; j < c; ++j) keys[j] = rank_key(lg[j], token_id(j));
    if (c > 0) {
        const auto [mn, mx] = key_min_max<A>(lg, c, key);
        if (mn < mx) std::sort(keys, keys + c, std::greater<std::uint64_t>());
        // (one value: the bracket is in id order, which is rank order)
    }
    crossing cr;
    double kept_sum = 0;
    // whether the corrected tier may decide what the float bound could not: not when the float
    // walk's margin is below half the corrected bound (its masses move by the argument's
    // rounding only, typically far less than that; then straight to the double pass)
    bool try_corrected = true;
    {
        // The fused pass's sums (float trees, row_sums::pair_error): the part above its bracket
        // moves the prefix and z alike, the rest z only; after the sampled search instead, the
        // whole of z's tree error moves z only (the sums above came from split's double lanes).
        const double err_pre = fused_b ? rs.pair_error * fb.above : 0.0;
        const double err_rest = rs.pair_error * (fused_b ? std::max(0.0, z - fb.above) : z);
        // sum of w |d| above the bracket (float blocks: within 1 +- 128 u; none summed by the
        // fused pass: Jensen's bound alone), at most Jensen's bound on the prefix and the rest
        const double wd_above_lo = b.above_wd * (1 - 128 * 0x1p-24);
        const double wd_above_hi = b.above_wd * (1 + 128 * 0x1p-24) + 1e-300;
        const double pinf_d = std::numeric_limits<double>::infinity();
        auto ratio_error = [&](double pb, double wd_lo, double wd_hi, std::size_t k) {
            const double pre =
                std::min(fused_b ? pinf_d : wd_hi, wd_jensen_bound(pb, k, err_pre + 1e-300));
            const double rest = std::min(fused_b ? pinf_d : std::max(0.0, rs.wd_bound - wd_lo),
                                         wd_jensen_bound(std::max(0.0, z - pb), n - std::min(n, k),
                                                         err_pre + err_rest + 1e-300));
            return prefix_ratio_error_split(pb, pre, k, z, rest, n, err_pre, err_rest);
        };
        double before = b.above, wd_before = 0;
        for (std::size_t j = 0; j < c; ++j) {
            const std::size_t q = std::size_t(key_id(keys[j]));
            const double wj = double(w[q]);
            const double wdj = wj * key.d_bound(lg[q]);
            if (before + wj >= rmass || j + 1 == c) {
                cr = {lg[q], ids[q], b.above_count + j, before + wj >= rmass};
                const double e1 =
                    ratio_error(before, wd_above_lo + wd_before, wd_above_hi + wd_before, cr.rank);
                const double e2 = ratio_error(before + wj, wd_above_lo + wd_before + wdj,
                                              wd_above_hi + wd_before + wdj, cr.rank + 1);
                if (!(before / z + e1 < target && (before + wj) / z - e2 >= target)) {
                    cr.found = false;
                    const double g = std::min(target - before / z, (before + wj) / z - target);
                    const double ec = std::max(
                        corrected_ratio_error(before, before, cr.rank, z, z, n),
                        corrected_ratio_error(before + wj, before + wj, cr.rank + 1, z, z, n));
                    try_corrected = g >= 0.5 * ec;
                }
                kept_sum = before + wj;
                break;
            }
            before += wj;
            wd_before += wdj;
        }
    }
    if (!cr.found && c > 0 && try_corrected) {
        // The corrected tier: the float weights with their arguments' rounding recovered
        // (corrected_pass: Z and the mass above the bracket, in double lanes; the bracket's
        // entries one by one), so that only the exponential's own error is left.
        if (trace) trace->corrected = true;
        r.tier = exactness_tier::corrected;  // (a later tier overwrites it when this one fails)
        const corrected_sums cs = corrected_pass<A>(x, w, dirty, m, temperature, b.hi);
        const double zc = cs.sum - cs.fix;
        double before = cs.in_sum - cs.in_fix, spre = cs.in_sum, fbefore = b.above;
        for (std::size_t j = 0; j < c; ++j) {
            const std::size_t q = std::size_t(key_id(keys[j]));
            const double wf = double(w[q]);
            const double wj = wf * (1 - argument_delta(lg[q], w[q], m, temperature));
            if (before + wj >= target * zc || j + 1 == c) {
                cr = {lg[q], ids[q], b.above_count + j, true};
                const std::size_t k = b.above_count + j;
                const double e1 = corrected_ratio_error(before, spre, k, zc, cs.sum, n);
                const double e2 =
                    corrected_ratio_error(before + wj, spre + wf, k + 1, zc, cs.sum, n);
                if (!(before / zc + e1 < target && (before + wj) / zc - e2 >= target))
                    cr.found = false;
                kept_sum = fbefore + wf;
                break;
            }
            before += wj;
            spre += wf;
            fbefore += wf;
        }
    }
    if (!cr.found && c > 0) {
        // Z and the mass above the bracket in double, the bracket's weights the reference's.
        r.tier = exactness_tier::double_pass;
        const float hi = b.hi;
        const double_sums ds = double_pass<A>(
            x, m, temperature,
            [hi](const simd::batch<A>& v, std::size_t) { return v >= simd::batch<A>(hi); });
        const double e = 2 * ds.error(n) / ds.sum + reference_error(n);
        double before = ds.in_set, fbefore = b.above;
        for (std::size_t j = 0; j < c; ++j) {
            const std::size_t q = std::size_t(key_id(keys[j]));
            const double wj = reference::weight(lg[q], m, temperature);
            if ((before + wj) / ds.sum >= target || j + 1 == c) {
                cr = {lg[q], ids[q], b.above_count + j, true};
                if (!(before / ds.sum + e < target && (before + wj) / ds.sum - e >= target))
                    cr.found = false;
                kept_sum = fbefore + double(w[q]);
                break;
            }
            before += wj;
            fbefore += double(w[q]);
        }
    }
    if (!cr.found) {
        r.tier = exactness_tier::reference;
        cr = nucleus_reference_walk(x, target, temperature, keys);
        kept_sum = std::numeric_limits<double>::quiet_NaN();  // (summed below)
    }
    if (cr.rank + 1 < keep) return top_keep();
    r.cut = {cr.value, pinf, std::size_t(cr.id), npos};
    r.kept = cr.rank + 1;
    if (std::isnan(kept_sum)) {
        // the reference tier: the kept weights' sum over the row (w below dirty: recomputed)
        kept_sum = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (r.cut.contains(x[i], i))
                kept_sum += double(i < dirty ? weight_one<A>(x[i], m, inv_t) : w[i]);
    }
    r.kept_sum = kept_sum;
    return r;
}

}  // namespace detail

/// Top-p (nucleus) at temperature T as a cut over the row: the set of reference::top_p (sorted by
/// probability descending, ties by id, the prefix whose mass before each kept entry is below
/// decimal_floor(p); at least max(1, min_keep); p >= 1 every valid entry) as
/// truncation_result::cut (hi = +inf: a prefix of the order logit descending / id ascending),
/// found by selection without ordering anything but a bracket of <= 64 entries around the cut;
/// weights receive every entry's weight exp((x_i - max) / T) (float), ready for draw_cut (no
/// compaction: sample() over a flat row needs none) or compact_cut. `scratch`: the kernel's
/// working storage (capacity >= x.size(); contents unspecified afterwards). kept and kept_sum:
/// the kept set's size and the sum of its weights (float weights added in double).
///
/// Passes (V entries), on a row of more than 4096 entries: max (keeping the maxima of blocks of 8
/// vectors); the bracket's bounds estimated (detail::top_p_bounds: 2048 sampled entries (512 on
/// rows shorter than 32768), plus, on rows whose mass sits on a few heavy logits or a heavy tail,
/// the heavy entries collected by a compare over the blocks whose maxima reach them, weighed
/// exactly); one exponential pass storing every weight fused with the split
/// (detail::weigh_split_row: Z and the mass above the upper bound in float trees of 8 vectors, no w
/// |d| summed; the entries of the estimate's inner band, the bracket, compacted with their
/// weights: detail::top_p_inner_band); when that band misses the crossing (a few rows in 60), the
/// estimate's outer band on the side it lies becomes the bracket (detail::compact_band: one read
/// of the row and its weights, no exponential); when the outer bounds do not certainly enclose it
/// either (rare: see the unit tests), the split again from a sampled search over the weights (the
/// lower bound never below the logit under which the whole tail holds less than half of what top-p
/// drops; the sums above it exact in double lanes). Then narrowing rounds on the bracket (7
/// thresholds placed from a sample of it, one pass over the bracket each) until
/// <= 64 entries or one value; the bracket sorted and walked; the bracket's part of the weights
/// recomputed. Shorter rows: no estimate (the exponential pass, then the sampled search's split).
/// Exactness, in tiers (truncation_result::tier): the walk's two decisions (the mass before the
/// crossing entry is below decimal_floor(p), the mass through it is not) are taken from the float
/// weights when their distance to p exceeds a rigorous bound on the float computation (the
/// exponential's measured error, the rounding of its argument bounded through sum w |d| (summed,
/// or Jensen's bound from a mass and a count: detail::wd_jensen_bound), the sums (double lanes,
/// or the fused pass's float trees of 8 vectors); errors common to a prefix and to Z cancel:
/// detail::prefix_ratio_error_split); otherwise the corrected tier (corrected): one
/// read pass over the row and its stored weights, no exponential (detail::corrected_pass),
/// recovers the rounding delta_i of every weight's argument in double and corrects the weights
/// to first order, w_i (1 - delta_i), in Z and in the mass above the bracket (their sums in
/// double lanes), so that the bound keeps the exponential's own error only
/// (detail::corrected_ratio_error; on rows at temperature 1.5 the argument's rounding was ~15x
/// that; skipped when the float margin is below half that bound, as the correction moves the
/// masses by far less); otherwise a double-precision
/// exponential pass over the row recomputes Z and the mass above the bracket, the bracket's
/// weights the reference's own (double_pass); when even that margin is within ~1e-10, the
/// reference's own walk (reference; O(V log V), allocation-free). Rows with +inf entries or a
/// subnormal temperature: the reference (which allocates). Status bad_size (nothing done) when
/// scratch.capacity() or weights.size() < x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result top_p_cut(std::span<const float> x, float p, float temperature,
                            std::size_t min_keep, candidates& scratch,
                            std::span<float> weights) noexcept {
    if (const truncation_result s = detail::sized(x, scratch, weights); !s.ok() || x.empty())
        return s;
    std::size_t dirty = 0;
    truncation_result r =
        detail::top_p_search<A>(x, p, temperature, min_keep, scratch, weights.data(), dirty);
    if (dirty > 0)  // restore the row's weights where the bracket lived
        detail::store_weights<A>(x.data(), dirty, r.max, 1.f / temperature, weights.data());
    scratch.clear();
    return r;
}

/// Top-p (nucleus) at temperature T, unordered: the set of top_p_cut written to `out` in id order
/// (one compaction pass), weights[0, kept) the kept entries' weights (weights: the whole row's
/// scratch). See top_p_cut. Status bad_size (nothing done) when out.capacity() or
/// weights.size() < x.size(). \pre temperature > 0
template <class A = simd::default_arch>
truncation_result top_p_unordered(std::span<const float> x, float p, float temperature,
                                  std::size_t min_keep, candidates& out,
                                  std::span<float> weights) noexcept {
    if (const truncation_result s = detail::sized(x, out, weights); !s.ok() || x.empty()) return s;
    std::size_t dirty = 0;
    truncation_result r =
        detail::top_p_search<A>(x, p, temperature, min_keep, out, weights.data(), dirty);
    double sum = 0;
    if (r.max == detail::neg_inf_f) return r;
    const float inv_t = std::isfinite(r.max) ? 1.f / temperature : 1.f;
    r.kept = detail::compact_cut_from<A>(
        x, weights.data(), r.cut, std::isfinite(r.max) ? r.max : 0.f, inv_t, out, dirty, sum);
    r.kept_sum = sum;
    return r;
}

}  // namespace kernels
DECODEKIT_END_NAMESPACE
