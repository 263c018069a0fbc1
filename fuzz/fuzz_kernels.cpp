/// \file fuzz/fuzz_kernels.cpp
/// Every kernel on arbitrary rows (NaN, +-inf, huge, subnormal, ties), for every xsimd
/// architecture the build supports, checked against kernels/reference.hpp (the oracle):
/// exact for max/argmax/selections/draws, tight tolerances for reductions. A mismatch aborts.
/// Kernel 14: the truncation kernels (top-p, typical, epsilon, eta, mirostat's cut, top-n-sigma,
/// XTC's removal; their cuts; draw_cut), chosen by one more byte; top-p sometimes at a p whose
/// mass lands within half an ulp of a prefix mass (near_boundary_p: its exactness tiers).
/// Token bitmasks: about half the inputs run the masked kernels (random words, all-zero,
/// all-one, garbage bits past V, masks longer or shorter than the row) against the reference on
/// the masked copy of the row (reference::masked_copy), and the in-place apply against it.
/// Input: [arch][kernel][row...][T][mask][kernel arguments].
///
/// With DK_TEST_ARCHS_EDGES (CMake DECODEKIT_TEST_ARCHS=edges, which scripts/test.sh's short CI
/// run sets) the [arch] byte picks the best or the narrowest architecture only, as
/// dk_rows::each_arch runs them: a quarter of the compile; the test preset checks every one.

#include <decodekit/decodekit.hpp>
#include <decodekit/kernels/reference.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "dk_rows.hpp"  // each_arch: the architectures swept
#include "fuzz_common.hpp"

namespace dk = decodekit;
namespace ref = decodekit::reference;
using dk_fuzz::inf;

namespace {

bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

/// |a - b| within rel * |b| + abs, infinities and NaN equal to themselves.
bool close(double a, double b, double rel, double abs) {
    if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
    if (std::isinf(a) || std::isinf(b)) return a == b;
    return std::fabs(a - b) <= rel * std::fabs(b) + abs;
}

/// Rows where float-lane arithmetic may legitimately differ from the double reference (values so
/// large that the float lanes overflow).
bool has_huge(std::span<const float> x) {
    return std::any_of(x.begin(), x.end(),
                       [](float v) { return std::isfinite(v) && std::fabs(v) > 1e30f; });
}

void check_candidates(const dk::candidates& got, const dk::candidates& want, const char* what) {
    DK_FUZZ_CHECK(got.size() == want.size(), "%s: size %zu vs reference %zu", what, got.size(),
                  want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        DK_FUZZ_CHECK(got.ids()[i] == want.ids()[i], "%s: id[%zu] %d vs reference %d", what, i,
                      got.ids()[i], want.ids()[i]);
        DK_FUZZ_CHECK(same_float(got.logits()[i], want.logits()[i]),
                      "%s: logit[%zu] %g vs reference %g", what, i, got.logits()[i],
                      want.logits()[i]);
    }
}

/// The documented tolerance of draw_inverse_cdf (kernels/draw.hpp): the kernel and the reference
/// sum the same floats in a different order, so they may disagree when u * S lies within ~1e-12 S
/// of a boundary of the cumulative sum. True iff index i's cumulative interval [C(i-1), C(i)),
/// computed in long double over the positive entries, lies within 1e-12 S of u * S.
bool near_cdf_boundary(std::span<const float> w, double u, std::size_t i) {
    long double s = 0, before = 0;
    for (std::size_t j = 0; j < w.size(); ++j) {
        if (j == i) before = s;
        if (w[j] > 0) s += w[j];
    }
    const long double lo = before, hi = before + w[i], target = u * s, tol = 1e-12L * s;
    return w[i] > 0 && target >= lo - tol && target <= hi + tol;
}

/// got (id order) holds exactly want's entries (reference order).
void check_set(const dk::candidates& got, const dk::candidates& want, const char* what) {
    std::vector<std::pair<dk::token_id, float>> w;
    for (std::size_t i = 0; i < want.size(); ++i) w.emplace_back(want.ids()[i], want.logits()[i]);
    std::sort(w.begin(), w.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
    DK_FUZZ_CHECK(got.size() == w.size(), "%s: size %zu vs reference %zu", what, got.size(),
                  w.size());
    for (std::size_t i = 0; i < got.size(); ++i)
        DK_FUZZ_CHECK(got.ids()[i] == w[i].first && same_float(got.logits()[i], w[i].second),
                      "%s: entry %zu: id %d logit %g vs reference %d %g", what, i, got.ids()[i],
                      got.logits()[i], w[i].first, w[i].second);
}

/// The cut of a result selects exactly got's entries of the row.
void check_cut(std::span<const float> x, const dk::kernels::row_cut& cut, const dk::candidates& got,
               const char* what) {
    std::size_t j = 0;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (cut.contains(x[i], i)) {
            DK_FUZZ_CHECK(j < got.size() && got.ids()[j] == dk::token_id(i),
                          "%s: the cut keeps entry %zu, the set does not", what, i);
            ++j;
        }
    DK_FUZZ_CHECK(j == got.size(), "%s: the cut keeps %zu entries, the set %zu", what, j,
                  got.size());
}

/// A top-p whose decimal_floor lies within half an ulp of the reference's mass through the entry
/// where that mass first reaches p (the walk's decision within ~3e-8 of p: inside the float bound,
/// so the corrected, double and reference tiers of kernels/nucleus.hpp run); p itself when the
/// row has no finite max or the mass is not in (0, 1).
float near_boundary_p(std::span<const float> x, float t, float p) {
    const auto st = ref::exp_sum(x, t);
    if (!std::isfinite(st.max) || !(st.sum > 0)) return p;
    std::vector<std::size_t> idx;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (x[i] >= std::numeric_limits<float>::lowest()) idx.push_back(i);
    std::sort(idx.begin(), idx.end(),
              [&](std::size_t a, std::size_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
    double cum = 0;
    for (std::size_t i : idx) {
        cum += ref::weight(x[i], st.max, t) / st.sum;
        if (cum >= double(p)) break;
    }
    if (!(cum > 0 && cum < 1)) return p;
    const float c = float(cum);
    const float q = float(cum + (double(std::nextafter(c, inf)) - double(c)) / 2);
    return q > 0 && q < 1 ? q : p;
}

/// The truncation kernels against their references (kernel 13).
template <class A>
void truncation(FuzzedDataProvider& in, std::span<const float> x, float t) {
    namespace kn = dk::kernels;
    const std::size_t n = x.size();
    const int which = in.ConsumeIntegralInRange<int>(0, 7);
    const float p = dk_fuzz::consume_param(in, 0.f, 1.f);
    const std::size_t min_keep = in.ConsumeIntegralInRange<std::size_t>(0, 5);
    dk::candidates got(n), want(n), scratch(n);
    std::vector<float> w(n), wr(n);
    auto both = [&](const kn::truncation_result& r, const char* what) {
        DK_FUZZ_CHECK(r.ok(), "%s: status", what);
        DK_FUZZ_CHECK(r.kept == got.size(), "%s: kept %zu vs size %zu", what, r.kept, got.size());
        check_set(got, want, what);
        check_cut(x, r.cut, got, what);
    };
    switch (which) {
        case 0: {
            const float q = in.ConsumeBool() ? near_boundary_p(x, t, p) : p;
            ref::top_p(x, q, t, min_keep, want);
            both(kn::top_p_unordered<A>(x, q, t, min_keep, got, w), "top_p_unordered");
            const auto rc = kn::top_p_cut<A>(x, q, t, min_keep, scratch, wr);
            check_cut(x, rc.cut, got, "top_p_cut");
            break;
        }
        case 1:
        case 2: {
            const auto stop =
                which == 1 ? dk::typical_stop::reach_with_ties : dk::typical_stop::exceed;
            ref::typical(x, p, t, min_keep, stop, want);
            both(kn::typical_unordered<A>(x, p, t, min_keep, stop, got, w), "typical_unordered");
            const auto rc = kn::typical_cut<A>(x, p, t, min_keep, stop, scratch, wr);
            check_cut(x, rc.cut, got, "typical_cut");
            break;
        }
        case 3: {
            const float e = dk_fuzz::consume_param(in, 0.f, 0.2f);
            ref::epsilon(x, e, t, min_keep, want);
            both(kn::epsilon_unordered<A>(x, e, t, min_keep, got, w), "epsilon_unordered");
            const auto rc = kn::epsilon_cut<A>(x, e, t, min_keep, scratch, wr);
            check_cut(x, rc.cut, got, "epsilon_cut");
            DK_FUZZ_CHECK(rc.kept == got.size(), "epsilon_cut: kept %zu vs %zu", rc.kept,
                          got.size());
            break;
        }
        case 4: {
            const float e = dk_fuzz::consume_param(in, 0.f, 0.2f);
            ref::eta(x, e, t, min_keep, want);
            both(kn::eta_unordered<A>(x, e, t, min_keep, got, w), "eta_unordered");
            const auto rc = kn::eta_cut<A>(x, e, t, min_keep, scratch, wr);
            check_cut(x, rc.cut, got, "eta_cut");
            DK_FUZZ_CHECK(rc.kept == got.size(), "eta_cut: kept %zu vs %zu", rc.kept, got.size());
            break;
        }
        case 5: {
            const float mu = dk_fuzz::consume_param(in, 0.f, 30.f);
            ref::mirostat_cut(x, mu, t, want);
            both(kn::mirostat_cut_unordered<A>(x, mu, t, got, w), "mirostat_cut_unordered");
            const auto rc = kn::mirostat_cut<A>(x, mu, t, scratch, wr);
            check_cut(x, rc.cut, got, "mirostat_cut");
            DK_FUZZ_CHECK(rc.kept == got.size(), "mirostat_cut: kept %zu vs %zu", rc.kept,
                          got.size());
            break;
        }
        case 6: {
            const float ns = dk_fuzz::consume_param(in, 0.f, 5.f);
            ref::top_n_sigma(x, ns, min_keep, want);
            both(kn::top_n_sigma_unordered<A>(x, ns, t, min_keep, got, w), "top_n_sigma_unordered");
            break;
        }
        case 7: {
            ref::xtc_removed(x, p, t, min_keep, want);
            const auto r = kn::xtc_remove<A>(x, p, t, min_keep, got, w);
            if (!(r.ok() && r.kept == want.size())) {  // the case, for the report
                std::fprintf(stderr, "xtc case: n %zu threshold %.9g T %.9g min_keep %zu\n", n, p,
                             t, min_keep);
                for (std::size_t i = 0; i < n; ++i) std::fprintf(stderr, "%.9g,", x[i]);
                std::fprintf(stderr, "\ngot:");
                for (std::size_t i = 0; i < got.size(); ++i)
                    std::fprintf(stderr, " %d:%.9g", got.ids()[i], got.logits()[i]);
                std::fprintf(stderr, "\n");
            }
            DK_FUZZ_CHECK(r.ok() && r.kept == want.size(), "xtc_remove: removed %zu vs %zu", r.kept,
                          want.size());
            for (std::size_t i = 0; i < r.kept; ++i)
                DK_FUZZ_CHECK(got.ids()[i] == want.ids()[i], "xtc_remove: entry %zu: %d vs %d", i,
                              got.ids()[i], want.ids()[i]);
            for (std::size_t i = 0; i < r.kept; ++i)
                DK_FUZZ_CHECK(w[std::size_t(got.ids()[i])] == 0.f, "xtc_remove: weight kept");
            break;
        }
    }
    // draw_cut over a top-p cut equals draw_inverse_cdf over the compacted weights (up to the
    // documented summation-order tolerance)
    if (which == 0) {
        const auto rc = kn::top_p_cut<A>(x, p, t, min_keep, scratch, wr);
        const double u = in.ConsumeFloatingPointInRange<double>(0.0, std::nextafter(1.0, 0.0));
        const std::size_t a = kn::draw_cut<A>(x, wr, rc.cut, u);
        std::vector<float> kw(n);
        std::size_t k = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (rc.cut.contains(x[i], i)) kw[k++] = wr[i];
        const std::size_t b =
            dk::reference::draw_inverse_cdf(std::span<const float>(kw.data(), k), u);
        if (b != dk::npos && a != dk::npos) {
            std::size_t ia = 0, kk = 0;  // a's position among the kept entries
            for (std::size_t i = 0; i < a; ++i) kk += rc.cut.contains(x[i], i);
            ia = kk;
            DK_FUZZ_CHECK(
                ia == b || (near_cdf_boundary(std::span<const float>(kw.data(), k), u, ia) &&
                            near_cdf_boundary(std::span<const float>(kw.data(), k), u, b)),
                "draw_cut %zu vs reference %zu (u=%.17g)", ia, b, u);
        } else {
            DK_FUZZ_CHECK(a == b, "draw_cut %zu vs reference %zu", a, b);
        }
    }
}

template <class A>
void run(FuzzedDataProvider& in) {
    const int kernel = in.ConsumeIntegralInRange<int>(0, 14);
    std::vector<float> row = dk_fuzz::consume_row(in, 0, 700);
    // Sometimes repeat the row up to a large size: block boundaries (512, 1024), the top-k
    // reservoir, the 65536 bitmask blocks; repeats make ties.
    if (!row.empty() && in.ConsumeIntegralInRange<int>(0, 7) == 0) {
        const std::size_t target = in.ConsumeIntegralInRange<std::size_t>(row.size(), 70000);
        const std::size_t n0 = row.size();
        row.resize(target);
        for (std::size_t i = n0; i < target; ++i) row[i] = row[i % n0];
    }
    const std::span<const float> x(row);
    const std::size_t n = x.size();
    const float t = in.ConsumeBool() ? 1.f : dk_fuzz::consume_param(in, 1e-3f, 100.f);
    const bool t_ok = t > 0 && std::isfinite(t);  // precondition of the temperature kernels

    // The mask: none (modes 0-2), random words, all-zero, all-one, random with every bit past n
    // set and a size past n, or a short one (size and words below n).
    const int mask_mode = in.ConsumeIntegralInRange<int>(0, 7);
    const bool masked = mask_mode >= 3;
    std::vector<std::uint32_t> words(dk::kernels::bitmask_words(n) + (mask_mode == 6 ? 2 : 0));
    std::size_t mask_size = n;
    for (auto& w : words)
        w = mask_mode == 4 || mask_mode == 5 ? (mask_mode == 4 ? 0u : ~0u)
            : masked || kernel == 13         ? in.ConsumeIntegral<std::uint32_t>()
                                             : ~0u;
    if (mask_mode == 6) {
        for (std::size_t i = n; i < 32 * words.size(); ++i) words[i / 32] |= 1u << (i % 32);
        mask_size = n + in.ConsumeIntegralInRange<std::size_t>(0, 64);
    } else if (mask_mode == 7) {
        mask_size = in.ConsumeIntegralInRange<std::size_t>(0, n);
        words.resize(in.ConsumeIntegralInRange<std::size_t>(0, words.size()));
    }
    const dk::kernels::token_bitmask mask{.words = words, .size = mask_size};
    // What the unmasked reference sees: the masked copy of the row.
    const std::vector<float> masked_row = masked ? ref::masked_copy(x, mask) : row;
    const std::span<const float> y(masked_row);

    switch (kernel) {
        case 0: {
            const float a = masked ? dk::kernels::max<A>(x, mask) : dk::kernels::max<A>(x),
                        b = ref::max(y);
            DK_FUZZ_CHECK(same_float(a, b), "max %g vs reference %g (n=%zu)", a, b, n);
            break;
        }
        case 1: {
            const std::size_t a =
                masked ? dk::kernels::argmax<A>(x, mask) : dk::kernels::argmax<A>(x);
            const std::size_t b = masked ? ref::argmax(x, mask) : ref::argmax(x);
            if (masked && a != dk::npos)
                DK_FUZZ_CHECK(mask.allowed(a), "argmax: disallowed %zu", a);
            DK_FUZZ_CHECK(a == b, "argmax %zu vs reference %zu (n=%zu)", a, b, n);
            break;
        }
        case 2: {
            const double a = dk::kernels::sum<A>(x), b = ref::sum(x);
            if (!has_huge(x)) {
                double mag = 0;
                for (float v : x)
                    if (std::isfinite(v)) mag += std::fabs(v);
                DK_FUZZ_CHECK(close(a, b, 1e-6, 1e-6 * mag + 1e-30), "sum %.17g vs reference %.17g",
                              a, b);
            }
            break;
        }
        case 3: {
            if (!t_ok) break;
            const auto a =
                masked ? dk::kernels::exp_sum<A>(x, t, mask) : dk::kernels::exp_sum<A>(x, t);
            const auto b = ref::exp_sum(y, t);
            DK_FUZZ_CHECK(same_float(a.max, b.max), "exp_sum.max %g vs %g", a.max, b.max);
            DK_FUZZ_CHECK(close(a.sum, b.sum, 1e-5, 1e-30), "exp_sum.sum %.17g vs %.17g (T=%g)",
                          a.sum, b.sum, t);
            const double la =
                masked ? dk::kernels::logsumexp<A>(x, t, mask) : dk::kernels::logsumexp<A>(x, t);
            const double lb = ref::logsumexp(y, t);
            DK_FUZZ_CHECK(close(la, lb, 1e-5, 1e-5), "logsumexp %.17g vs %.17g (T=%g)", la, lb, t);
            break;
        }
        case 4: {
            if (!t_ok) break;
            std::vector<float> a(n), b(n);
            const auto sa =
                masked ? dk::kernels::softmax<A>(x, a, t, mask) : dk::kernels::softmax<A>(x, a, t);
            const auto sb = ref::softmax(y, b, t);
            DK_FUZZ_CHECK(same_float(sa.max, sb.max), "softmax max %g vs %g", sa.max, sb.max);
            double total = 0;
            for (std::size_t i = 0; i < n; ++i) {
                DK_FUZZ_CHECK(!std::isnan(a[i]) && a[i] >= 0.f && a[i] <= 1.f,
                              "softmax p[%zu] = %g not a probability", i, a[i]);
                DK_FUZZ_CHECK(close(a[i], b[i], 1e-4, 1e-7), "softmax p[%zu] %.9g vs %.9g (T=%g)",
                              i, a[i], b[i], t);
                total += a[i];
            }
            if (sb.sum > 0)
                DK_FUZZ_CHECK(std::fabs(total - 1) < 1e-4, "softmax sums to %.17g", total);
            break;
        }
        case 5: {
            if (!t_ok) break;
            std::vector<float> a(n), b(n);
            dk::kernels::log_softmax<A>(x, a, t);
            ref::log_softmax(x, b, t);
            for (std::size_t i = 0; i < n; ++i) {
                DK_FUZZ_CHECK(!std::isnan(a[i]) && a[i] <= 1e-5f, "log_softmax[%zu] = %g", i, a[i]);
                DK_FUZZ_CHECK(close(a[i], b[i], 1e-5, 1e-4), "log_softmax[%zu] %.9g vs %.9g (T=%g)",
                              i, a[i], b[i], t);
            }
            const double ha = dk::kernels::entropy<A>(x, t), hb = ref::entropy(x, t);
            DK_FUZZ_CHECK(!std::isnan(ha) && !std::isnan(hb), "entropy NaN: %g, reference %g", ha,
                          hb);
            DK_FUZZ_CHECK(close(ha, hb, 1e-4, 1e-4), "entropy %.17g vs %.17g (T=%g)", ha, hb, t);
            break;
        }
        case 6:
        case 7: {
            const std::size_t k = in.ConsumeIntegralInRange<std::size_t>(0, n + 2);
            const auto ties = kernel == 6 ? dk::tie_policy::exactly_k : dk::tie_policy::keep_ties;
            dk::candidates a(n), b(n);
            const std::size_t na = masked ? dk::kernels::top_k<A>(x, k, ties, a, mask)
                                          : dk::kernels::top_k<A>(x, k, ties, a);
            const std::size_t nb = ref::top_k(y, k, ties, b);
            DK_FUZZ_CHECK(na == a.size() && nb == b.size(), "top_k returned count != size");
            check_candidates(a, b, kernel == 6 ? "top_k(exactly_k)" : "top_k(keep_ties)");
            // top_k_unordered: the same set, in id order.
            DK_FUZZ_CHECK((masked ? dk::kernels::top_k_unordered<A>(x, k, ties, a, mask)
                                  : dk::kernels::top_k_unordered<A>(x, k, ties, a)) == nb,
                          "top_k_unordered count %zu vs reference %zu", a.size(), nb);
            std::vector<std::pair<dk::token_id, float>> want;
            for (std::size_t i = 0; i < nb; ++i) want.emplace_back(b.ids()[i], b.logits()[i]);
            std::sort(want.begin(), want.end(),
                      [](const auto& l, const auto& r) { return l.first < r.first; });
            for (std::size_t i = 0; i < nb; ++i)
                DK_FUZZ_CHECK(
                    a.ids()[i] == want[i].first && same_float(a.logits()[i], want[i].second),
                    "top_k_unordered[%zu]: id %d logit %g vs reference %d %g", i, a.ids()[i],
                    a.logits()[i], want[i].first, want[i].second);
            break;
        }
        case 8: {
            dk::candidates a(n), b(n);
            if (in.ConsumeBool()) {  // min-p in one call
                const float pb = dk_fuzz::consume_param(in, 0.f, 1.f);
                if (masked)
                    dk::kernels::filter_min_p<A>(x, pb, t, a, mask);
                else
                    dk::kernels::filter_min_p<A>(x, pb, t, a);
                ref::filter_min_p(y, pb, t, b);
                check_candidates(a, b, "filter_min_p");
                break;
            }
            const float thr = in.ConsumeBool()
                                  ? dk_fuzz::palette_value(in.ConsumeIntegral<std::uint8_t>())
                                  : dk::kernels::min_p_threshold(
                                        ref::max(y), dk_fuzz::consume_param(in, 0.f, 1.f), t);
            if (masked)
                dk::kernels::filter_at_least<A>(x, thr, a, mask);
            else
                dk::kernels::filter_at_least<A>(x, thr, a);
            ref::filter_at_least(y, thr, b);
            check_candidates(a, b, "filter_at_least");
            break;
        }
        case 9: {
            if (!t_ok) break;
            const float p = dk_fuzz::consume_param(in, 0.f, 1.f);
            const std::size_t min_keep = in.ConsumeIntegralInRange<std::size_t>(0, 4);
            dk::candidates a(n), b(n);
            dk::kernels::top_p<A>(x, p, t, min_keep, a);
            ref::top_p(x, p, t, min_keep, b);
            check_candidates(a, b, "top_p");
            break;
        }
        case 10: {
            const double u = in.ConsumeFloatingPointInRange<double>(0.0, std::nextafter(1.0, 0.0));
            const std::size_t a = dk::kernels::draw_inverse_cdf<A>(x, u);
            const std::size_t b = ref::draw_inverse_cdf(x, u);
            DK_FUZZ_CHECK(a == b || (a != dk::npos && b != dk::npos && near_cdf_boundary(x, u, a) &&
                                     near_cdf_boundary(x, u, b)),
                          "draw_inverse_cdf %zu vs reference %zu (u=%.17g)", a, b, u);
            if (a != dk::npos) DK_FUZZ_CHECK(a < n && x[a] > 0, "drew a non-positive weight");
            break;
        }
        case 11: {
            // cosine similarity: query = first dim entries, rows = the rest.
            if (n == 0) break;
            const std::size_t dim =
                in.ConsumeIntegralInRange<std::size_t>(1, std::min<std::size_t>(n, 64));
            const std::size_t nrows = (n - dim) / dim;
            std::vector<float> a(nrows), b(nrows);
            dk::kernels::cosine_similarity<A>(x.first(dim), x.data() + dim, dim, a);
            ref::cosine_similarity(x.first(dim), x.data() + dim, dim, b);
            // Float products (the SIMD kernel) under/overflow where the double reference does
            // not: |x| < 1e-15 or > 1e15 (reported); compare only in the ordinary range.
            const bool ordinary = std::all_of(x.begin(), x.end(), [](float v) {
                return v == 0 || std::isnan(v) || (std::fabs(v) >= 1e-15f && std::fabs(v) <= 1e15f);
            });
            if (ordinary)
                for (std::size_t r = 0; r < nrows; ++r)
                    DK_FUZZ_CHECK(close(a[r], b[r], 1e-4, 1e-5), "cosine[%zu] %g vs %g", r, a[r],
                                  b[r]);
            break;
        }
        case 12: {
            // draw_temperature is random: check its support, not its law (the law is the
            // chi-square tests' job): npos iff no entry is kept (valid, allowed, reaching the
            // threshold); a +inf row draws a +inf entry; otherwise a kept entry with positive
            // weight. Thresholds: none, an absolute floor, min-p's offset from the max, or both.
            if (!t_ok) break;
            dk::rng_stream rng =
                dk::make_stream({in.ConsumeIntegral<std::uint64_t>(), 0, 0}, dk::rng_purpose::user);
            dk::kernels::logit_threshold thr{};
            const int thr_mode = in.ConsumeIntegralInRange<int>(0, 3);
            if (thr_mode & 1)
                thr.at_least = dk_fuzz::palette_value(in.ConsumeIntegral<std::uint8_t>());
            if (thr_mode & 2)
                thr.from_max = ref::min_p_offset(dk_fuzz::consume_param(in, 0.f, 1.f), t);
            const std::size_t a =
                masked ? (thr_mode ? dk::kernels::draw_temperature<A>(x, t, rng, thr, mask)
                                   : dk::kernels::draw_temperature<A>(x, t, rng, mask))
                       : (thr_mode ? dk::kernels::draw_temperature<A>(x, t, rng, thr)
                                   : dk::kernels::draw_temperature<A>(x, t, rng));
            const float m = ref::max(y);
            const float th = ref::threshold_value(m, thr);
            const bool kept = !std::isnan(m) && m > -inf && th <= m;
            DK_FUZZ_CHECK((a == dk::npos) == !kept,
                          "draw_temperature %zu on a row with max %g, threshold %g", a, m, th);
            if (a == dk::npos) break;
            DK_FUZZ_CHECK(a < n, "draw_temperature index %zu >= %zu", a, n);
            DK_FUZZ_CHECK(!masked || mask.allowed(a), "draw_temperature drew disallowed %zu", a);
            DK_FUZZ_CHECK(y[a] >= th, "draw_temperature drew %g below the threshold %g", y[a], th);
            if (m == inf)
                DK_FUZZ_CHECK(y[a] == inf, "draw_temperature drew %g in a row with +inf", y[a]);
            else
                DK_FUZZ_CHECK(ref::weight(y[a], m, t) > 0,
                              "draw_temperature drew weight 0 (%g, max %g)", y[a], m);
            break;
        }
        case 13: {
            // apply_token_bitmask_inplace: the masked copy, and check()'s status.
            std::vector<float> a(x.begin(), x.end());
            const auto st = dk::kernels::apply_token_bitmask_inplace<A>(a, mask);
            DK_FUZZ_CHECK(st == dk::kernels::check(mask, n), "apply: status %d", int(st));
            DK_FUZZ_CHECK((st == dk::kernels::mask_status::ok) == (mask.covered() >= n),
                          "apply: status %d with %zu of %zu covered", int(st), mask.covered(), n);
            const auto b = ref::masked_copy(x, mask);
            for (std::size_t i = 0; i < n; ++i)
                DK_FUZZ_CHECK(same_float(a[i], b[i]), "apply[%zu] %g vs %g", i, a[i], b[i]);
            std::size_t allowed = 0;
            for (std::size_t i = 0; i < n; ++i) allowed += mask.allowed(i);
            DK_FUZZ_CHECK(dk::kernels::count_allowed(mask, n) == allowed,
                          "count_allowed %zu vs %zu", dk::kernels::count_allowed(mask, n), allowed);
            break;
        }
        case 14: {
            if (!t_ok) break;
            truncation<A>(in, x, t);
            break;
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const unsigned which = in.ConsumeIntegral<std::uint8_t>();
    unsigned index = 0, count = 0;
    dk_rows::each_arch([&](auto, const std::string&) { ++count; });
    if (count == 0) return 0;
    const unsigned chosen = which % count;
    dk_rows::each_arch([&](auto arch, const std::string&) {
        if (index++ == chosen) run<decltype(arch)>(in);
    });
    return 0;
}
