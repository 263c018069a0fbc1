// typical_unordered and typical_cut against reference::typical: the same set (exactly), in id
// order, with the float weights and sums they report, both stop rules, for every xsimd
// architecture this build enables, on the benchmark row family at the four vocabulary sizes, rows
// with ties / NaN / +-inf, tiny rows, and rows built to force each exactness tier; the draw from
// typical_cut's cut (kernels::draw_cut, as sample() draws it) is the compacted set's draw.
#include "dk_family.hpp"
#include "dk_rows.hpp"
#include "dk_test.hpp"
#include "dk_truncation.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <tuple>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_typical {

namespace {

namespace dk = decodekit;
namespace ref = decodekit::reference;
namespace kn = decodekit::kernels;
constexpr float inf = std::numeric_limits<float>::infinity();

using dk_truncation::check_weights;
using dk_truncation::each_arch;
using dk_truncation::same_set;

/// typical_unordered and typical_cut on every architecture against reference::typical; returns
/// the tiers seen.
unsigned check_typical(std::span<const float> x, float p, float temperature, std::size_t min_keep,
                       dk::typical_stop stop) {
    dk::candidates want(x.size()), got(x.size()), scratch(x.size());
    std::vector<float> w(x.size()), wr(x.size());
    ref::typical(x, p, temperature, min_keep, stop, want);
    unsigned tiers = 0;
    each_arch(
        [&](auto arch, const std::string& name) {
            using A = decltype(arch);
            INFO("arch " << name << " n " << x.size() << " typical_p " << p << " T " << temperature
                         << " min_keep " << min_keep << " stop " << int(stop));
            const auto r = kn::typical_unordered<A>(x, p, temperature, min_keep, stop, got, w);
            CHECK(same_set(got, want));
            check_weights(x, temperature, got, w, r);
            tiers |= 1u << unsigned(r.tier);
            const auto rc = kn::typical_cut<A>(x, p, temperature, min_keep, stop, scratch, wr);
            std::size_t in = 0;
            bool cut_ok = true;
            for (std::size_t i = 0; i < x.size(); ++i)
                if (rc.cut.contains(x[i], i))
                    cut_ok = cut_ok && in < got.size() && got.ids()[in++] == dk::token_id(i);
            CHECK((cut_ok && in == got.size()));
            CHECK(rc.kept == got.size());
            // the draw from the cut (the row's weights, the kept sum the kernel reports) is the
            // compacted draw's entry for the same uniform (the edges u = 0 and u -> 1 included);
            // a row max of +inf or no positive kept weight is compacted by the sampler instead
            if (std::isfinite(rc.max) && rc.kept_sum > 0 && std::isfinite(rc.kept_sum)) {
                std::uint64_t s = 17;
                for (int t = 0; t < 12; ++t) {
                    const double u = t == 0   ? 0.0
                                     : t == 1 ? std::nextafter(1.0, 0.0)
                                              : dk_rows::unit(s);
                    const std::size_t a = kn::draw_cut<A>(x, wr, rc.cut, u, rc.kept_sum);
                    const std::size_t b =
                        kn::draw_inverse_cdf<A>(std::span<const float>(w.data(), got.size()), u);
                    REQUIRE(b != dk::npos);
                    CHECK(a == std::size_t(got.ids()[b]));
                }
            }
        },
        x.size());
    return tiers;
}

constexpr std::size_t vocab_sizes[] = {32000, 128256, 151936, 256000};

}  // namespace

TEST_CASE("typical_unordered equals the reference on the row family at every vocabulary size") {
    for (std::size_t v : vocab_sizes)
        for (auto sh : dk_family::shapes) {
            const auto x = dk_family::make_row(sh, v);
            INFO("shape " << dk_family::name(sh));
            check_typical(x, 0.9f, 1.f, 1, dk::typical_stop::reach_with_ties);
            if (v == 128256) {
                check_typical(x, 0.9f, 1.f, 1, dk::typical_stop::exceed);
                check_typical(x, 0.5f, 1.5f, 1, dk::typical_stop::reach_with_ties);
                check_typical(x, 0.99f, 0.7f, 1, dk::typical_stop::exceed);
            }
        }
}

TEST_CASE("typical: the bracket from the heavy entries (rows whose dropped mass sits on a few)") {
    // When the sample leaves the low side open and z < 2048, the bracket's first bounds come
    // from the heavy entries (w > z / 2048) taken exactly and a sample of the rest
    // (typical_bounds' second stage): Zipf rows at temperature 1.5 (HF order:
    // typical drops the head, ~66 tokens at V = 128256), and rows of a Gaussian bulk under k
    // heavy tokens (the crossing among the heavy entries, at their edge, or in the bulk), both
    // stop rules; the set must stay the reference's.
    for (std::size_t v : {std::size_t(32000), std::size_t(128256)}) {
        const auto x = dk_family::make_row(dk_family::shape::zipf, v);
        for (auto stop : {dk::typical_stop::reach_with_ties, dk::typical_stop::exceed})
            for (float p : {0.5f, 0.9f, 0.99f}) check_typical(x, p, 1.5f, 1, stop);
    }
    std::uint64_t s = 3;
    for (std::size_t k : {1u, 7u, 60u, 400u, 1500u})
        for (double sd : {0.5, 2.0}) {
            std::vector<float> x(20011);
            for (float& e : x) e = float(sd * dk_family::normal01(s));
            for (std::size_t j = 0; j < k; ++j)
                x[std::size_t(dk_family::splitmix64(s) % x.size())] =
                    float(9 + 3 * dk_family::uniform01(s));
            INFO("heavy " << k << " bulk sd " << sd);
            for (auto stop : {dk::typical_stop::reach_with_ties, dk::typical_stop::exceed})
                for (float p : {0.3f, 0.9f, 0.999f}) check_typical(x, p, 1.f, 1, stop);
        }
}

TEST_CASE(
    "typical: a crossing next to a narrowed bracket's bound is decided without the reference") {
    // Zipf rows at T 1.5 at V = 128256 (HF order's benchmark setting): the narrowing leaves the
    // crossing (among the head entries typical drops) as the bracket's last entry, its key too
    // close to the bracket's bound for the bounds to order the entries outside it. The bracket
    // is then split again from the row around that key (one pass); it used to be decided by the
    // reference (O(V log V), ~27 ms) on the first of these rows (salt 0, the benchmark row).
    using A = dk::simd::default_arch;
    for (std::uint64_t salt = 0; salt < 6; ++salt) {
        const auto x = dk_family::make_row(dk_family::shape::zipf, 128256, salt);
        INFO("salt " << salt);
        const unsigned tiers = check_typical(x, 0.9f, 1.5f, 1, dk::typical_stop::reach_with_ties);
        CHECK((tiers & (1u << unsigned(kn::exactness_tier::reference))) == 0);
        dk::candidates c(x.size());
        std::vector<float> w(x.size());
        const auto r =
            kn::typical_cut<A>(x, 0.9f, 1.5f, 1, dk::typical_stop::reach_with_ties, c, w);
        CHECK(r.tier != kn::exactness_tier::reference);
    }
}

/// A family row at V = 128256 with what typical_bounds takes (default architecture): the
/// paired entropy pass's weights and sums, the key, z and the mass to reach for typical p, and
/// the crossing (the smallest key of reference::typical's kept set; +inf without it).
struct bounds_row {
    using A = dk::simd::default_arch;
    std::vector<float> x, w;
    kn::detail::row_sums rs;
    kn::detail::typical_key<A> key;
    double z, rmass;
    float crossing;
};

bounds_row make_bounds_row(std::vector<float> x, float t, float p, bool with_crossing = true) {
    using A = bounds_row::A;
    const std::size_t v = x.size();
    std::vector<float> w(v);
    const float m = kn::max<A>(x);
    const auto rs = kn::detail::entropy_pass<A, true, true>(x, m, t, w.data());
    const auto mean = kn::detail::mean_of_d(rs, v);
    const kn::detail::typical_key<A> key{m, 1.f / t, float(-mean.c), 0.f};
    float crossing = inf;
    if (with_crossing) {
        dk::candidates want(v);
        ref::typical(x, p, t, 1, dk::typical_stop::reach_with_ties, want);
        REQUIRE(want.size() > 0);
        for (float e : want.logits()) crossing = std::min(crossing, key(e));
    }
    const double z = rs.sum;
    return {std::move(x), std::move(w), rs, key, z, ref::decimal_floor(p) * z, crossing};
}

bounds_row make_bounds_row(dk_family::shape sh, std::uint64_t salt, float t, float p,
                           bool with_crossing = true) {
    return make_bounds_row(dk_family::make_row(sh, 128256, salt), t, p, with_crossing);
}

/// typical_bounds on a bounds_row (refine: its refinement on): the bracket [lo, hi), the inner
/// bounds, and how many of the row's entries the bracket holds.
struct bounds_out {
    float lo = 0, hi = 0, ilo = 0, ihi = 0;
    std::size_t inside = 0;
};

bounds_out run_bounds(const bounds_row& r, bool refine = true) {
    dk::candidates scratch(r.x.size());
    bounds_out o;
    kn::detail::typical_bounds<bounds_row::A>(
        r.x, r.w.data(), r.key, r.z, r.rmass, scratch.key_storage(), scratch.logit_storage(),
        scratch.id_storage(), o.lo, o.hi, nullptr, &o.ilo, &o.ihi, refine);
    for (float e : r.x) o.inside += r.key(e) >= o.lo && r.key(e) < o.hi;
    return o;
}

TEST_CASE("typical_bounds: the low bound stays below the crossing when heavy entries are dropped") {
    // Zipf rows at T 1.5 (typical drops the head): a first-stage sample that misses the heavy
    // head underestimates the mass below its bounds and closes the low side above the crossing;
    // the heavy entries' keys below the low bound send the row to the second stage (heavy entries
    // exactly). Before, the low bound was above the crossing's key on 4 of these 12 rows (salts
    // 2, 4, 7, 10: one more split pass over the row, a bracket of 13000-65000 entries).
    using A = bounds_row::A;
    for (std::uint64_t salt = 0; salt < 12; ++salt) {
        INFO("salt " << salt);
        const auto r = make_bounds_row(dk_family::shape::zipf, salt, 1.5f, 0.9f);
        dk::candidates scratch(r.x.size());
        float lo = 0, hi = 0;
        kn::detail::typical_bounds<A>(r.x, r.w.data(), r.key, r.z, r.rmass, scratch.key_storage(),
                                      scratch.logit_storage(), scratch.id_storage(), lo, hi);
        CHECK(lo <= r.crossing);
        CHECK(hi > r.crossing);
    }
}

TEST_CASE(
    "typical_checked_bracket: a first bracket that misses widens to the wide bounds, then on") {
    // typical_bounds' inner bounds (typical_inner_sds) lie within its wide ones; a first bracket
    // that misses the crossing widens the failed side to the wide bound, and when that misses
    // too, to the end of the row: the narrowed bracket holds the crossing either way.
    using A = bounds_row::A;
    for (std::uint64_t salt = 0; salt < 4; ++salt) {
        INFO("salt " << salt);
        const auto r = make_bounds_row(dk_family::shape::gauss, salt, 1.5f, 0.9f);
        const auto& [x, w0, rs, key, z, rmass, crossing] = r;
        const std::size_t v = x.size();
        dk::candidates scratch(v);
        const double z_error = rs.error(v) + kn::detail::sum_error(v) * z;
        float lo = 0, hi = 0, ilo = 0, ihi = 0;
        std::vector<float> w = w0;
        kn::detail::typical_bounds<A>(x, w.data(), key, z, rmass, scratch.key_storage(),
                                      scratch.logit_storage(), scratch.id_storage(), lo, hi,
                                      nullptr, &ilo, &ihi);
        CHECK(lo <= ilo);
        CHECK(ilo < ihi);
        CHECK(ihi <= hi);
        REQUIRE(lo <= crossing);
        REQUIRE(hi > crossing);
        // a first bracket wholly above the crossing (its low side fails)
        const float band = std::isfinite(hi) ? crossing + (hi - crossing) / 2 : crossing / 2;
        const float band_hi = std::nextafter(band, inf);
        REQUIRE(band > crossing);
        for (const float wide : {lo, band}) {  // the wide bound holds; it misses too
            INFO("wide " << wide);
            w = w0;
            double above_error = 0;
            const auto b = kn::detail::typical_checked_bracket<A>(
                x, w.data(), key, rmass, z, z_error, band, band_hi, wide, hi, scratch.id_storage(),
                scratch.logit_storage(), above_error);
            CHECK(b.lo <= crossing);
            CHECK(crossing < b.hi);
            CHECK(b.above < rmass);
            CHECK(b.above + b.mass >= rmass * (1 - 1e-6));
        }
    }
}

TEST_CASE(
    "typical_bounds: inner bounds on flat rows, none on Gaussian rows (a few heavy samples)") {
    // typical_inner_max_heavy_share: the flat rows' sampled w^2 is spread (share ~0.008), the
    // Gaussian rows' held by a few samples (>= 0.066 at T 1 and 1.5): their inner bounds are the
    // wide ones, the flat rows' lie strictly within them.
    using A = bounds_row::A;
    int checked = 0;  // the rows of that branch (2 Gaussian T 1 rows are not: z 2043.8 ...)
    for (const float t : {1.f, 1.5f})
        for (const auto sh : {dk_family::shape::gauss, dk_family::shape::flat})
            for (std::uint64_t salt = 0; salt < 4; ++salt) {
                INFO("t " << t << " flat " << (sh == dk_family::shape::flat) << " salt " << salt);
                const auto r = make_bounds_row(sh, salt, t, 0.9f, false);
                if (!(r.z >= 2048)) continue;  // (a weight above z / 2048: the other branch)
                ++checked;
                dk::candidates scratch(r.x.size());
                float lo = 0, hi = 0, ilo = 0, ihi = 0;
                kn::detail::typical_bounds<A>(r.x, r.w.data(), r.key, r.z, r.rmass,
                                              scratch.key_storage(), scratch.logit_storage(),
                                              scratch.id_storage(), lo, hi, nullptr, &ilo, &ihi);
                if (sh == dk_family::shape::gauss) {
                    CHECK(ilo == lo);
                    CHECK(ihi == hi);
                } else {
                    CHECK(lo <= ilo);
                    CHECK(ihi <= hi);
                    CHECK((lo < ilo || ihi < hi));
                }
            }
    CHECK(checked == 14);
}

TEST_CASE("typical_bounds: the refinement narrows the bracket and keeps the crossing") {
    // The refinement (the L entries of each sampled position's vector, the mass below the first
    // bracket a lump) gives bounds within the first stages' that hold far fewer entries of the
    // row and still the crossing on these rows (a lump left out, or samples above the bracket
    // counted, moves them off it); where the first stages' bracket missed the crossing, the
    // refined one holds it. Rows: Zipf and flat at T 1 (first stage only), Gaussian at
    // T 1 (the heavy entries exact) and 1.5; Zipf at T 1.5 (a bracket of a few heavy entries) and
    // peaked rows (no high bound) are not refined.
    struct row_case {
        dk_family::shape sh;
        float t;
        bool refined;
    };
    const row_case cases[] = {
        {dk_family::shape::zipf, 1.f, true},   {dk_family::shape::flat, 1.f, true},
        {dk_family::shape::gauss, 1.f, true},  {dk_family::shape::gauss, 1.5f, true},
        {dk_family::shape::zipf, 1.5f, false}, {dk_family::shape::peaked, 1.f, false}};
    std::size_t before = 0, after = 0;  // entries in the refined rows' brackets, summed
    int held[2] = {0, 0};               // the refined rows whose bracket holds the crossing
    for (const row_case& rc : cases)
        for (std::uint64_t salt = 0; salt < 4; ++salt) {
            INFO("shape " << int(rc.sh) << " t " << rc.t << " salt " << salt);
            const auto row = make_bounds_row(rc.sh, salt, rc.t, 0.9f);
            const auto& [x, w, rs, key, z, rmass, crossing] = row;
            float lo[2], hi[2], ilo[2], ihi[2];
            std::size_t in[2] = {0, 0};
            for (int r = 0; r < 2; ++r) {
                const bounds_out o = run_bounds(row, r == 1);
                lo[r] = o.lo, hi[r] = o.hi, ilo[r] = o.ilo, ihi[r] = o.ihi, in[r] = o.inside;
                CHECK(lo[r] <= ilo[r]);
                CHECK(ilo[r] < ihi[r]);
                CHECK(ihi[r] <= hi[r]);
            }
            const bool first_held = lo[0] <= crossing && hi[0] > crossing;
            if (first_held || !rc.refined) {
                CHECK(lo[0] <= lo[1]);
                CHECK(hi[1] <= hi[0]);
            } else {  // the first stages missed: refined again with the missed side open
                CHECK(lo[1] <= crossing);
                CHECK(hi[1] > crossing);
            }
            if (!rc.refined) {
                CHECK(lo[1] == lo[0]);
                CHECK(hi[1] == hi[0]);
                continue;
            }
            if (first_held) {
                before += in[0];
                after += in[1];
                CHECK(in[1] < in[0]);
            } else {  // (the missed side widened to the row's end: ~45000 entries)
                CHECK(in[1] < x.size() / 4);
            }
            for (int r = 0; r < 2; ++r) held[r] += lo[r] <= crossing && hi[r] > crossing;
        }
    // measured over the 15 rows the first stages held: 204 372 -> 71 977 entries at 8 lanes
    // (AVX2), -> 102 478 at 4 (SSE4.2, NEON: half the refinement's samples); the crossing held on
    // all 16 refined rows (the Gaussian T 1 row of salt 2: its first bracket lies above the
    // crossing and the refinement, finding it below, sorts that side too; kept at the first
    // bound, its bracket missed and widened to the end of the row)
    CHECK(after * 9 < before * 5);
    CHECK(held[0] == 15);
    CHECK(held[1] == 16);
}

TEST_CASE("weight_key: ordered by key, the key and the weight come back") {
    // typical_bounds sorts weight_key(key, weight) and reads both back from the sorted keys:
    // a smaller key sorts first whatever the weights, ties by ascending weight, and the key
    // comes back bit for bit (-0 as +0, equal to it), the weight exactly.
    const float keys[] = {
        kn::detail::lowest_f, -1e30f, -20.5f, -1.f, -1e-30f, -0.f, 0.f, 1e-30f, 0.5f, 3.f};
    const float weights[] = {0.f, 1e-40f, 1e-12f, 0.25f, 1.f, 2048.f};
    for (const float y : keys)
        for (const float wy : weights) {
            INFO("key " << y << " weight " << wy);
            const std::uint64_t k = kn::detail::weight_key(y, wy);
            const float back = kn::detail::weight_key_key(k);
            CHECK(back == y);
            if (y != 0)
                CHECK(std::bit_cast<std::uint32_t>(back) == std::bit_cast<std::uint32_t>(y));
            CHECK(std::bit_cast<float>(std::uint32_t(k)) == wy);
            for (const float y2 : keys)
                for (const float w2 : weights) {
                    const std::uint64_t k2 = kn::detail::weight_key(y2, w2);
                    if (y < y2) CHECK(k < k2);
                    if (y == y2) CHECK((k < k2) == (wy < w2));
                }
        }
}

TEST_CASE("typical_bounds: Gaussian rows at T 1 refine from the first stage's bracket") {
    // On Gaussian rows whose z >= 2048 the refinement starts from the first stage's bracket
    // (with the second stage's heavy entries exact) and skips the second stage's sample and
    // estimate; when its bounds do not close within that bracket (salt 29 of the family's rows
    // at V 128256, 1 of the 25 such rows of salts 0-39) the second stage runs and the refinement
    // starts from its bracket, as before. Both ways the bracket holds the crossing here (a
    // shortcut kept when it fails moves salt 29's low bound above it) and the sets stay the
    // reference's.
    const float p = 0.9f;
    int rows = 0;
    for (const std::uint64_t salt : {0, 1, 3, 29}) {
        INFO("salt " << salt);
        const auto r = make_bounds_row(dk_family::shape::gauss, salt, 1.f, p);
        const auto& [x, w, rs, key, z, rmass, crossing] = r;
        if (!(z >= 2048)) continue;
        ++rows;
        const bounds_out o = run_bounds(r);
        CHECK(o.lo <= crossing);
        CHECK(o.hi > crossing);
        CHECK(o.inside < 12000);
        check_typical(x, p, 1.f, 1, dk::typical_stop::reach_with_ties);
    }
    CHECK(rows >= 2);
}

TEST_CASE("typical_bounds: the refinement sorts ~3/4 of its keys, all when its walk needs more") {
    // The refinement's estimate first sorts ~3/4 of the keys in its bracket (the smallest, whole
    // buckets: the full sort's prefix); when the walk's high bound is not 3 keys within them it
    // sorts them all and walks again. These rows (V 128256, T 1) take that second walk (2 Zipf
    // and 6 flat rows of salts 0-39): its bounds close both sides within the first stage's
    // (without the second walk the high side stays the first stage's) and hold the crossing.
    using A = bounds_row::A;
    for (const auto& [sh, salt] : {std::pair{dk_family::shape::zipf, std::uint64_t(29)},
                                   std::pair{dk_family::shape::zipf, std::uint64_t(33)},
                                   std::pair{dk_family::shape::flat, std::uint64_t(6)},
                                   std::pair{dk_family::shape::flat, std::uint64_t(18)}}) {
        INFO("shape " << int(sh) << " salt " << salt);
        const auto r = make_bounds_row(sh, salt, 1.f, 0.9f);
        dk::candidates scratch(r.x.size());
        float lo[2], hi[2];
        for (int k = 0; k < 2; ++k)
            kn::detail::typical_bounds<A>(r.x, r.w.data(), r.key, r.z, r.rmass,
                                          scratch.key_storage(), scratch.logit_storage(),
                                          scratch.id_storage(), lo[k], hi[k], nullptr, nullptr,
                                          nullptr, k == 1);
        CHECK(lo[0] < lo[1]);
        CHECK(hi[1] < hi[0]);
        CHECK(lo[1] <= r.crossing);
        CHECK(hi[1] > r.crossing);
    }
}

TEST_CASE("typical_bounds: Gaussian rows at T 1 take their highest entries exactly") {
    // On a Gaussian sd 1 row at T 1 the dropped mass above the typical point sits on ~0.4 % of
    // the entries at ~13x the mean weight, which the 512 samples mostly miss: the first stage's
    // bracket held 33420 entries on the benchmark row (salt 0), 29000 on average over 40 rows.
    // With the highest ~1000 entries taken exactly it holds 5330 there (~11000 on average). The
    // bounds are a 2.5-standard-deviation estimate: they miss the crossing on ~1 in 40 rows (one
    // more split pass, never a different set), 1 of these 12 (fixed rows, hashed sample
    // positions: deterministic); the sets stay the reference's.
    const float p = 0.9f;
    int missed = 0;
    for (float t : {1.f, 1.5f})
        for (std::uint64_t salt = 0; salt < 6; ++salt) {
            INFO("T " << t << " salt " << salt);
            const auto r = make_bounds_row(dk_family::shape::gauss, salt, t, p);
            const auto& [x, w, rs, key, z, rmass, crossing] = r;
            const bounds_out o = run_bounds(r);
            missed += !(o.lo <= crossing && o.hi > crossing);
            if (t == 1.f && salt == 0) CHECK(o.inside < 8000);  // (33420 before)
            check_typical(x, p, t, 1, dk::typical_stop::reach_with_ties);
        }
    CHECK(missed <= 1);
}

TEST_CASE("entropy_pass (Heavy): the entries above the planned threshold, as a pass would find") {
    // typical_heavy_plan predicts typical_bounds' second stage on Gaussian-like rows (its
    // threshold from the same sampled weights, recomputed before the pass); the pass collects
    // the entries whose stored weight exceeds it, ids ascending (or overflows past cap), and
    // typical_bounds uses them only under its own threshold. Same sums as the plain pass.
    using A = dk::simd::default_arch;
    const std::size_t v = 128256;
    for (float t : {1.f, 1.5f})
        for (auto sh : dk_family::shapes) {
            const auto x = dk_family::make_row(sh, v);
            INFO("shape " << dk_family::name(sh) << " T " << t);
            const float m = kn::max<A>(x);
            std::vector<dk::token_id> ids(v);
            kn::detail::heavy_entries h;
            const bool plan = kn::detail::typical_heavy_plan<A>(x, m, 1.f / t, ids.data(), h);
            // the premise: the Gaussian row at T 1 (z ~ 2100, the second stage's row) is planned
            if (sh == dk_family::shape::gauss && t == 1.f) CHECK(plan);
            if (!plan) continue;
            std::vector<float> w(v), w2(v);
            const auto rs = kn::detail::entropy_pass<A, true, true, true>(x, m, t, w.data(), &h);
            const auto r2 = kn::detail::entropy_pass<A, true, true>(x, m, t, w2.data());
            CHECK(rs.sum == r2.sum);
            CHECK(rs.wd == r2.wd);
            CHECK(w == w2);
            std::vector<dk::token_id> want;
            for (std::size_t i = 0; i < v; ++i)
                if (w[i] > h.thr) want.push_back(dk::token_id(i));
            REQUIRE(!h.overflow);
            CHECK(std::vector<dk::token_id>(ids.begin(), ids.begin() + long(h.count)) == want);
            // typical_bounds from the collected entries: the bounds of its own pass
            const auto mean = kn::detail::mean_of_d(rs, v);
            const kn::detail::typical_key<A> key{m, 1.f / t, float(-mean.c), 0.f};
            dk::candidates scratch(v);
            std::vector<float> lg(v);
            float lo1 = 0, hi1 = 0, lo2 = 0, hi2 = 0;
            const double rmass = ref::decimal_floor(0.9f) * rs.sum;
            kn::detail::typical_bounds<A>(x, w.data(), key, rs.sum, rmass, scratch.key_storage(),
                                          lg.data(), ids.data(), lo1, hi1, &h);
            kn::detail::typical_bounds<A>(x, w.data(), key, rs.sum, rmass, scratch.key_storage(),
                                          scratch.logit_storage(), scratch.id_storage(), lo2, hi2);
            CHECK(lo1 == lo2);
            CHECK(hi1 == hi2);
            if (sh == dk_family::shape::gauss && t == 1.f) CHECK(hi1 < inf);  // (a closed bracket)
            // overflow: a cap below the count
            kn::detail::heavy_entries small{
                .thr = h.thr, .ids = ids.data(), .cap = want.size() - 1};
            kn::detail::entropy_pass<A, true, true, true>(x, m, t, w.data(), &small);
            CHECK(small.overflow);
            check_typical(x, 0.9f, t, 1, dk::typical_stop::reach_with_ties);
        }
    // a row whose length is not a whole number of pairs of vectors (the entries after the last
    // pair are compared after the pass)
    const auto x = dk_family::make_row(dk_family::shape::gauss, 40000 + 13);
    const float m = kn::max<A>(x);
    std::vector<dk::token_id> ids(4096);
    kn::detail::heavy_entries h{.thr = 0.2f, .ids = ids.data(), .cap = 4096};
    std::vector<float> w(x.size());
    kn::detail::entropy_pass<A, true, true, true>(x, m, 1.f, w.data(), &h);
    std::vector<dk::token_id> want;
    for (std::size_t i = 0; i < x.size(); ++i)
        if (w[i] > h.thr) want.push_back(dk::token_id(i));
    REQUIRE(!h.overflow);
    REQUIRE(want.size() > 100);
    CHECK(std::vector<dk::token_id>(ids.begin(), ids.begin() + long(h.count)) == want);
}

TEST_CASE("typical_bounds: a planned row whose z < 2048 filters the collected entries") {
    // typical_heavy_plan estimates z from the samples (>= 1024): a Gaussian row at T 1 whose z
    // turns out < 2048 takes the second stage at z / 2048, above the planned threshold, and
    // typical_bounds keeps the collected entries above it (a subset, ids ascending) instead of
    // its own pass over the weights: the same bounds as that pass, with and without refinement.
    using A = dk::simd::default_arch;
    const std::size_t v = 128256;
    int filtered = 0;
    for (std::uint64_t salt = 0; salt < 12; ++salt) {
        const auto x = dk_family::make_row(dk_family::shape::gauss, v, salt);
        INFO("salt " << salt);
        const float m = kn::max<A>(x);
        std::vector<dk::token_id> ids(v);
        kn::detail::heavy_entries h;
        if (!kn::detail::typical_heavy_plan<A>(x, m, 1.f, ids.data(), h)) continue;
        std::vector<float> w(v);
        const auto rs = kn::detail::entropy_pass<A, true, true, true>(x, m, 1.f, w.data(), &h);
        if (!(rs.sum < 2048) || h.overflow || !(double(h.thr) < rs.sum / 2048)) continue;
        ++filtered;
        const auto mean = kn::detail::mean_of_d(rs, v);
        const kn::detail::typical_key<A> key{m, 1.f, float(-mean.c), 0.f};
        const double rmass = ref::decimal_floor(0.9f) * rs.sum;
        for (bool refine : {false, true}) {
            INFO("refine " << refine);
            std::vector<dk::token_id> ids1 = ids;
            dk::candidates scratch(v);
            std::vector<float> lg(v);
            float lo1 = 0, hi1 = 0, lo2 = 0, hi2 = 0;
            kn::detail::heavy_entries pre = h;
            pre.ids = ids1.data();
            kn::detail::typical_bounds<A>(x, w.data(), key, rs.sum, rmass, scratch.key_storage(),
                                          lg.data(), ids1.data(), lo1, hi1, &pre, nullptr, nullptr,
                                          refine);
            kn::detail::typical_bounds<A>(x, w.data(), key, rs.sum, rmass, scratch.key_storage(),
                                          scratch.logit_storage(), scratch.id_storage(), lo2, hi2,
                                          nullptr, nullptr, nullptr, refine);
            CHECK(lo1 == lo2);
            CHECK(hi1 == hi2);
            // the second stage's heavy entries, left in ids / lg: those above z / 2048
            std::vector<dk::token_id> want;
            for (std::size_t i = 0; i < v; ++i)
                if (double(w[i]) > double(float(rs.sum / 2048))) want.push_back(dk::token_id(i));
            REQUIRE(!want.empty());
            CHECK(std::vector<dk::token_id>(ids1.begin(), ids1.begin() + long(want.size())) ==
                  want);
            for (std::size_t j = 0; j < want.size(); ++j)
                CHECK(lg[j] == key(x[std::size_t(want[j])]));
        }
        check_typical(x, 0.9f, 1.f, 1, dk::typical_stop::reach_with_ties);
    }
    CHECK(filtered >= 2);  // (the premise: such rows among the family's)
}

/// entropy_pass<A, true, true>'s sums computed one exponential at a time (simd::exp_nonpositive
/// per vector), in the pass's order: pairs of vectors added in float then widened, the float
/// blocks of 32 vectors, the last single vectors and the -inf padded tail one by one.
template <class A>
kn::detail::row_sums paired_sums_one_at_a_time(std::span<const float> x, float m, float t) {
    using B = dk::simd::batch<A>;
    using D = dk::simd::dbatch<A>;
    constexpr std::size_t L = dk::simd::lanes<A>;
    const B mb(m), tb(1.f / t), lo(-200.f);
    D z0(0.0), z1(0.0), s0(0.0), s1(0.0);
    B fa2(0.f), fb2(0.f);
    double wd2 = 0;
    auto single = [&](const B& v) {
        const B d = (v - mb) * tb;
        const B e = dk::simd::exp_nonpositive<A>(d);
        dk::simd::widen_add<A>(z0, z1, e);
        const B c = dk::simd::max_ignore_nan<A>(lo, d);
        const B f = e * c;
        fa2 = dk::simd::fma<A>(f, c, fa2);
        dk::simd::widen_add<A>(s0, s1, f);
    };
    auto flush = [&] {
        wd2 += double(dk::simd::reduce_add<A>(fa2 + fb2));
        fa2 = fb2 = B(0.f);
    };
    const std::size_t n = x.size(), nfull = n / L * L;
    std::size_t i = 0;
    while (i < nfull) {
        const std::size_t end = std::min(nfull, i + 32 * L);
        for (; i + 2 * L <= end; i += 2 * L) {
            const B da = (B::load_unaligned(x.data() + i) - mb) * tb;
            const B db = (B::load_unaligned(x.data() + i + L) - mb) * tb;
            const B ea = dk::simd::exp_nonpositive<A>(da), eb = dk::simd::exp_nonpositive<A>(db);
            const B ca = dk::simd::max_ignore_nan<A>(lo, da),
                    cb = dk::simd::max_ignore_nan<A>(lo, db);
            const B fa = ea * ca, fb = eb * cb;
            fa2 = dk::simd::fma<A>(fa, ca, fa2);
            fb2 = dk::simd::fma<A>(fb, cb, fb2);
            dk::simd::widen_add<A>(z0, z1, ea + eb);
            dk::simd::widen_add<A>(s0, s1, fa + fb);
        }
        for (; i < end; i += L) single(B::load_unaligned(x.data() + i));
        flush();
    }
    if (i < n) {
        alignas(64) float buf[L];
        for (std::size_t j = 0; j < L; ++j) buf[j] = i + j < n ? x[i + j] : -inf;
        single(B::load_aligned(buf));
        flush();
    }
    kn::detail::row_sums r;
    r.sum = dk::simd::reduce_add<A>((z0 + z1) + (D(0.0) + D(0.0)));
    r.wd = -dk::simd::reduce_add<A>((s0 + s1) + (D(0.0) + D(0.0)));
    r.wd2_bound = wd2;
    return r;
}

TEST_CASE("entropy_pass (Paired): the sums of one exponential at a time, bit for bit") {
    // The pass computes two pairs' exponentials at once (simd::exp_nonpositive_n: four chains in
    // flight) and adds them as one vector's at a time would: the same weights (the thresholds
    // test compares them with weight_one) and the same sums, so typical's and eta's sets and
    // logprobs do not depend on the scheduling. Every architecture, the four shapes, T 0.7 / 1 /
    // 1.5, lengths with partial blocks, remainder vectors and a tail; NaN and -inf entries.
    dk_family::for_each_pass_row(
        11, {37, 1003, 4097, 40037}, [&](const auto& x, auto sh, float t, std::size_t v) {
            each_arch(
                [&](auto arch, const std::string& name) {
                    using A = decltype(arch);
                    INFO(name << " shape " << int(sh) << " T " << t << " n " << v);
                    float m = -inf;
                    for (float y : x) m = y > m ? y : m;
                    std::vector<float> w(v);
                    const auto rs = kn::detail::entropy_pass<A, true, true>(x, m, t, w.data());
                    const auto want = paired_sums_one_at_a_time<A>(x, m, t);
                    CHECK(std::bit_cast<std::uint64_t>(rs.sum) ==
                          std::bit_cast<std::uint64_t>(want.sum));
                    CHECK(std::bit_cast<std::uint64_t>(rs.wd) ==
                          std::bit_cast<std::uint64_t>(want.wd));
                    constexpr double inflate = 1 + 64 * 0x1p-24;
                    CHECK(rs.wd2_bound == want.wd2_bound * inflate * inflate + 1e-300);
                    bool same_w = true;
                    for (std::size_t i = 0; i < v; ++i)
                        same_w = same_w && std::bit_cast<std::uint32_t>(w[i]) ==
                                               std::bit_cast<std::uint32_t>(
                                                   kn::detail::weight_one<A>(x[i], m, 1.f / t));
                    CHECK(same_w);
                },
                v);
        });
}

TEST_CASE("typical: more heavy entries than the pass collects (overflow), the set still exact") {
    // The plan's threshold is the 4th largest sampled weight; a row whose sampled positions hold
    // 4 high entries and otherwise low ones, while 1 in 20 of the others sits above them, has
    // ~6400 entries above it: entropy_pass overflows its 2048 ids, and typical_bounds, whose
    // own threshold is the same, keeps the first stage's bounds (as its own pass would).
    using A = dk::simd::default_arch;
    const std::size_t v = 128256, stride = v / 512;
    std::vector<char> sampled(v);
    for (std::size_t j = 0; j < 512; ++j) {
        const std::uint64_t h = std::uint32_t(std::uint32_t(j + 1) * 2654435761u);
        sampled[j * stride + ((h * stride) >> 32)] = 1;
    }
    std::vector<float> x = dk_family::make_row(dk_family::shape::gauss, v, 3);
    std::uint64_t s = 5;
    int high = 0;
    for (std::size_t i = 0; i < v; ++i) {
        if (sampled[i] != 0)
            x[i] = high++ < 4 ? 2.9f : x[i] * 0.5f - 1.f;
        else if (dk_rows::unit(s) < 0.05)
            x[i] = 3.f;
    }
    const float m = kn::max<A>(x);
    std::vector<dk::token_id> ids(v);
    kn::detail::heavy_entries h;
    REQUIRE(kn::detail::typical_heavy_plan<A>(x, m, 1.f, ids.data(), h));
    std::vector<float> w(v);
    kn::detail::entropy_pass<A, true, true, true>(x, m, 1.f, w.data(), &h);
    CHECK(h.overflow);
    for (float p : {0.5f, 0.9f, 0.95f})
        for (auto stop : {dk::typical_stop::reach_with_ties, dk::typical_stop::exceed})
            check_typical(x, p, 1.f, 1, stop);
}

TEST_CASE("typical_split_row: split<Row, Track>'s partition, its sums within their bounds") {
    // The cheaper split from the row (float pairs of vectors for the mass above, no w |d|, the
    // inner logit range as the interval of keys reaching hi, compress by lane orders on AVX2)
    // against nucleus.hpp's split<A, true, true> on the same row, bounds and weights: the same
    // bracket (ids, logits, weights, in order), count and mass above; the above sum within the
    // returned pair bound; split's w |d| within the bound from the inner range's ends and within
    // 128 u (the walk's allowance) of inner_wd's over that range after the split; the
    // inner range holding every entry above and no other entry of the row. Every architecture, the
    // four shapes, T 1 / 1.5, with a tail (n not a multiple of 64) and with the first entries'
    // weights to recompute: none, 300, and on a row of an odd number of whole vectors (split's
    // last single vector) up to inside that vector, past the whole vectors, and the whole row.
    for (auto sh : dk_family::shapes)
        for (float t : {1.f, 1.5f})
            for (std::size_t v : {std::size_t(40000), std::size_t(40029)})
                each_arch(
                    [&](auto arch, const std::string& name) {
                        using A = decltype(arch);
                        const auto x = dk_family::make_row(sh, v, 7);
                        INFO(name << " shape " << int(sh) << " T " << t << " n " << v);
                        std::vector<float> w0(v);
                        const float m = kn::max<A>(x);
                        const auto rs = kn::detail::entropy_pass<A, true, true>(x, m, t, w0.data());
                        const auto mean = kn::detail::mean_of_d(rs, v);
                        const kn::detail::typical_key<A> key{m, 1.f / t, float(-mean.c), 0.f};
                        // bounds around a key 2 standard deviations of the keys out
                        std::vector<float> keys(v);
                        for (std::size_t i = 0; i < v; ++i) keys[i] = key(x[i]);
                        std::vector<float> sorted = keys;
                        std::sort(sorted.begin(), sorted.end());
                        const float lo = sorted[v / 20], hi = sorted[v / 4];
                        constexpr std::size_t L = dk::simd::lanes<A>;
                        const std::size_t nfull = v / L * L;
                        std::vector<std::size_t> freshes = {0, 300};
                        if (v % 2 == 1)
                            freshes.insert(freshes.end(), {nfull - L + 1, nfull + 1, v});
                        for (const std::size_t fresh : freshes) {
                            std::vector<float> wa = w0, wb = w0;
                            dk::candidates ca(v), cb(v);
                            kn::detail::weighted_bracket ba, bb;
                            ba.dirty = bb.dirty = fresh;
                            for (std::size_t i = 0; i < fresh; ++i) wa[i] = wb[i] = -1.f;
                            kn::detail::split<A, true, true>(x.data(), wa.data(), v, lo, hi, m,
                                                             1.f / t, key, ca.id_storage(),
                                                             ca.logit_storage(), ba);
                            const double err = kn::detail::typical_split_row<A>(
                                x, wb.data(), lo, hi, key, cb.id_storage(), cb.logit_storage(), bb);
                            REQUIRE(ba.size == bb.size);
                            CHECK(ba.above_count == bb.above_count);
                            CHECK(bb.dirty == ba.dirty);
                            bool same = true;
                            for (std::size_t j = 0; j < ba.size; ++j)
                                same = same && ca.id_storage()[j] == cb.id_storage()[j] &&
                                       ca.logit_storage()[j] == cb.logit_storage()[j] &&
                                       wa[j] == wb[j];
                            CHECK(same);
                            CHECK(std::fabs(ba.mass - bb.mass) <= 1e-5 * ba.mass + 1e-300);
                            // ba.above: the exact double sum up to n 2^-53
                            CHECK(std::fabs(ba.above - bb.above) <= err + 1e-12 * ba.above);
                            // no w |d| summed; inner_wd's sum over the inner range (the row's
                            // weights from bb.dirty on) within 128 u of split's, the same count,
                            // and the bound from the range's ends holding it
                            std::size_t wd_count = 0;
                            const double wd =
                                kn::detail::inner_wd<A>(x, wb.data(), bb.dirty, m, 1.f / t,
                                                        bb.inner_lo, bb.inner_hi, wd_count);
                            CHECK(wd_count == bb.above_count);
                            CHECK(std::fabs(ba.above_wd - wd) <=
                                  128 * 0x1p-24 * ba.above_wd + 1e-300);
                            const auto [wd_lo, wd_hi] =
                                kn::detail::typical_above_wd_bounds(bb, m, 1.f / t);
                            CHECK(ba.above_wd >= wd_lo);
                            CHECK(ba.above_wd <= wd_hi);
                            if (bb.above_count > 0) {
                                CHECK(bb.inner_lo <= ba.inner_lo);
                                CHECK(bb.inner_hi >= ba.inner_hi);
                                std::size_t within = 0;
                                for (std::size_t i = 0; i < v; ++i)
                                    within += x[i] >= bb.inner_lo && x[i] <= bb.inner_hi;
                                CHECK(within == bb.above_count);
                            }
                        }
                    },
                    v);
}

TEST_CASE("typical_above_wd_bounds and inner_wd after typical_bracket's narrowing") {
    // typical_search's state: the entries above the checked and narrowed bracket (the row split's
    // and those the narrowing moved above, Track) are the logits [inner_lo, inner_hi], their
    // w |d| within typical_above_wd_bounds and inner_wd's sum over that interval (the weights
    // recomputed below b.dirty) within 128 u of it, with their count. Four shapes, T 1 / 1.5.
    using A = bounds_row::A;
    for (auto sh : dk_family::shapes)
        for (float t : {1.f, 1.5f})
            for (std::uint64_t salt = 0; salt < 3; ++salt) {
                INFO("shape " << int(sh) << " t " << t << " salt " << salt);
                const auto row = make_bounds_row(sh, salt, t, 0.9f, false);
                const std::size_t n = row.x.size();
                const float m = row.key.m, inv_t = 1.f / t;
                std::vector<float> w = row.w;
                dk::candidates scratch(n);
                double above_error = 0;
                const kn::detail::weighted_bracket b = kn::detail::typical_bracket<A>(
                    row.x, w.data(), row.key, row.rmass, row.z,
                    row.rs.error(n) + kn::detail::sum_error(n) * row.z, scratch.key_storage(),
                    scratch.id_storage(), scratch.logit_storage(), above_error);
                std::size_t count = 0;
                double exact = 0;
                for (std::size_t i = 0; i < n; ++i)
                    if (row.key(row.x[i]) >= b.hi) {
                        ++count;
                        exact += double(row.w[i]) * (double(m) - double(row.x[i])) / double(t);
                    }
                CHECK(count == b.above_count);
                const auto [lo, hi] = kn::detail::typical_above_wd_bounds(b, m, inv_t);
                CHECK(lo <= exact);
                CHECK(exact <= hi);
                std::size_t wd_count = 0;
                const double wd = kn::detail::inner_wd<A>(row.x, w.data(), b.dirty, m, inv_t,
                                                          b.inner_lo, b.inner_hi, wd_count);
                CHECK(wd_count == b.above_count);
                CHECK(std::fabs(wd - exact) <= 128 * 0x1p-24 * exact + 1e-300);
            }
}

TEST_CASE(
    "typical_key: the scalar key is the vector key's lane, bit for bit (every architecture)") {
    // typical_split_row counts entries above a bound by the vector key and finds their logit
    // range by the scalar one: they must round alike. Written as scalar arithmetic, clang with FMA
    // contracted (v - m) * inv_t - c into one operation and left xsimd's vector operators apart,
    // so the keys differed on ~40 % of these values and the row below (hi at an entry's own vector
    // key) was cut without that entry while its count held it (review).
    each_arch(
        [&](auto arch, const std::string& name) {
            using A = decltype(arch);
            using B = dk::simd::batch<A>;
            constexpr std::size_t L = dk::simd::lanes<A>;
            INFO(name);
            std::mt19937 g(7);
            std::uniform_real_distribution<float> u(-12.f, 0.f);
            std::size_t differ = 0;
            for (int it = 0; it < 4000; ++it) {
                const float m = 3.f, inv_t = 1.f / (0.5f + 1.3f * float(it % 7) / 7.f);
                const float c = -2.718f - 0.001f * float(it % 13);
                const kn::detail::typical_key<A> key{m, inv_t, c, 0.f};
                alignas(64) float v[L], y[L], t[L];
                for (auto& e : v) e = m + u(g);
                key(B::load_aligned(v)).store_aligned(y);
                key.centred(B::load_aligned(v)).store_aligned(t);
                for (std::size_t j = 0; j < L; ++j)
                    differ += y[j] != key(v[j]) || t[j] != key.centred(v[j]);
                // an entry exactly on hi (its own vector key): counted above and inside the range
                if (it % 400 == 0) {
                    std::vector<float> x = {v[0],   m,      m - 30, m - 31,
                                            m - 32, m - 33, m - 34, m - 35};
                    std::vector<float> w(x.size());
                    for (std::size_t i = 0; i < x.size(); ++i)
                        w[i] = kn::detail::weight_one<A>(x[i], m, inv_t);
                    dk::candidates cs(x.size());
                    kn::detail::weighted_bracket b;
                    kn::detail::typical_split_row<A>(x, w.data(), kn::detail::lowest_f, y[0], key,
                                                     cs.id_storage(), cs.logit_storage(), b);
                    std::size_t within = 0;
                    for (float e : x) within += e >= b.inner_lo && e <= b.inner_hi;
                    CHECK(within == b.above_count);
                }
            }
            CHECK(differ == 0);
        },
        std::size_t(64));
}

TEST_CASE("typical_split_row: the logit intervals give the keys' partition, bit for bit") {
    // typical_split_row finds the entries above hi and in [lo, hi) as logit intervals before its
    // pass (typical_reach_interval) instead of computing each entry's key: against the key form
    // (Keys = true) on the four shapes, rows with NaN, -inf, +-0 and tied entries, bounds at
    // quantiles of the keys, on entries' own keys, next to them, and +-inf, lowest, NaN, > 0,
    // lo == hi, lo > hi: the same bracket (ids, logits, weights), count, sums (same lanes, same
    // order: equal), inner range (by value) and dirty, with and without the sums above.
    std::vector<std::vector<float>> rows;
    for (auto sh : dk_family::shapes)
        rows.push_back(dk_family::make_row(sh, 4037, 11));  // (a tail: 4037 % 64 = 5)
    {
        auto x = dk_family::make_row(dk_family::shapes[2], 3001, 5);
        for (std::size_t i = 0; i < x.size(); i += 7)
            x[i] = std::numeric_limits<float>::quiet_NaN();
        for (std::size_t i = 3; i < x.size(); i += 11) x[i] = -inf;
        for (std::size_t i = 5; i < x.size(); i += 13) x[i] = x[i / 2];  // ties
        x[1] = 0.f;
        x[2] = -0.f;
        rows.push_back(x);
    }
    std::size_t calls = 0;
    each_arch(
        [&](auto arch, const std::string& name) {
            using A = decltype(arch);
            for (std::size_t r = 0; r < rows.size(); ++r) {
                const auto& x = rows[r];
                const std::size_t v = x.size();
                std::vector<float> wa(v), wb(v);
                dk::candidates ca(v), cb(v);
                const float m = kn::max<A>(x);
                for (float t : {1.f, 1.5f}) {
                    std::vector<float> w0(v);
                    for (std::size_t i = 0; i < v; ++i)
                        w0[i] = x[i] == x[i] ? kn::detail::weight_one<A>(x[i], m, 1.f / t) : 0.f;
                    for (float c : {-2.5f, 0.f}) {
                        const kn::detail::typical_key<A> key{m, 1.f / t, c, 0.f};
                        std::vector<float> keys;
                        for (float e : x)
                            if (e == e) keys.push_back(key(e));
                        std::sort(keys.begin(), keys.end());
                        const float k = keys.size();
                        std::vector<float> bs = {
                            -inf, inf, kn::detail::lowest_f,
                            1.f,  0.f, std::numeric_limits<float>::quiet_NaN()};
                        for (float q : {0.01f, 0.2f, 0.5f, 0.99f}) {
                            const float y = keys[std::size_t(q * (k - 1))];
                            bs.push_back(y);
                            bs.push_back(std::nextafter(y, inf));
                            bs.push_back(std::nextafter(y, -inf));
                        }
                        for (float lo : bs)
                            for (float hi : bs)
                                for (std::size_t fresh : {std::size_t(0), std::size_t(300)}) {
                                    std::copy(w0.begin(), w0.end(), wa.begin());
                                    std::copy(w0.begin(), w0.end(), wb.begin());
                                    kn::detail::weighted_bracket ba, bb;
                                    ba.dirty = bb.dirty = fresh;
                                    for (std::size_t i = 0; i < fresh; ++i) wa[i] = wb[i] = -1.f;
                                    const double ea = kn::detail::typical_split_row<A, true, true>(
                                        x, wa.data(), lo, hi, key, ca.id_storage(),
                                        ca.logit_storage(), ba);
                                    const double eb = kn::detail::typical_split_row<A>(
                                        x, wb.data(), lo, hi, key, cb.id_storage(),
                                        cb.logit_storage(), bb);
                                    // (one check per call, named only when it fails: the time)
                                    bool same = ba.size == bb.size;
                                    for (std::size_t j = 0; same && j < ba.size; ++j)
                                        same =
                                            same && ca.id_storage()[j] == cb.id_storage()[j] &&
                                            std::bit_cast<std::uint32_t>(ca.logit_storage()[j]) ==
                                                std::bit_cast<std::uint32_t>(
                                                    cb.logit_storage()[j]) &&
                                            wa[j] == wb[j];
                                    auto bits = [](double d) {
                                        return std::bit_cast<std::uint64_t>(d);
                                    };
                                    same = same && ba.above_count == bb.above_count &&
                                           bits(ba.mass) == bits(bb.mass) &&
                                           bits(ba.above) == bits(bb.above) &&
                                           bits(ea) == bits(eb) && ba.dirty == bb.dirty &&
                                           // (by value: the key form's search gives +0 where m
                                           // is -0)
                                           ba.inner_lo == bb.inner_lo && ba.inner_hi == bb.inner_hi;
                                    if (!same) {
                                        INFO(name << " row " << r << " T " << t << " c " << c
                                                  << " lo " << lo << " hi " << hi << " fresh "
                                                  << fresh);
                                        CHECK(same);
                                    }
                                    ++calls;
                                }
                    }
                }
            }
        },
        std::size_t(4037));
    CHECK(calls > 0);
}

TEST_CASE("compress_store_permuted: compress_store's result for every 8-lane mask") {
    dk_rows::each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        constexpr std::size_t L = dk::simd::lanes<A>;
        INFO(name);
        alignas(64) float v[L], w[L];
        alignas(64) std::int32_t id[L];
        for (std::size_t j = 0; j < L; ++j) {
            v[j] = float(j) + 0.5f;
            w[j] = -float(j);
            id[j] = std::int32_t(100 + j);
        }
        const auto vb = dk::simd::batch<A>::load_aligned(v),
                   wb = dk::simd::batch<A>::load_aligned(w);
        const auto ib = dk::simd::ibatch<A>::load_aligned(id);
        bool same = true;
        for (std::uint64_t m = 0; m < 256; ++m) {
            const std::uint64_t mk = L >= 64 ? m : m & ((std::uint64_t(1) << L) - 1);
            float va[2 * L], wa[2 * L], vp[2 * L], wp[2 * L];
            std::int32_t ia[2 * L], ip[2 * L];
            const std::size_t na = dk::simd::compress_store<A>(vb, wb, ib, mk, va, wa, ia);
            const std::size_t np = dk::simd::compress_store_permuted<A>(vb, wb, ib, mk, vp, wp, ip);
            same = same && na == np && na == std::size_t(std::popcount(mk));
            for (std::size_t j = 0; j < na && j < np; ++j)
                same = same && va[j] == vp[j] && wa[j] == wp[j] && ia[j] == ip[j];
        }
        CHECK(same);
    });
}

TEST_CASE("typical_unordered: small rows, special values, ties, p = 0 / 1, min_keep") {
    for (int kind = 0; kind <= 8; ++kind)
        for (std::size_t n : dk_rows::lengths) {
            if (n > 4097) continue;
            const auto x = dk_rows::make_row(n, kind, 7);
            INFO("kind " << kind);
            for (float p : {0.f, 0.3f, 0.9f, 1.f})
                for (auto stop : {dk::typical_stop::reach_with_ties, dk::typical_stop::exceed})
                    for (std::size_t mk : {1u, 5u}) {
                        if (n >= 4097 && mk == 5) continue;
                        check_typical(x, p, 1.f, mk, stop);
                    }
        }
    // the uniform row of 5 and the landing row of the reference tests, on a long row
    const std::vector<float> u(5, 1.f);
    check_typical(u, 0.5f, 1.f, 3, dk::typical_stop::reach_with_ties);
    check_typical(u, 0.5f, 1.f, 3, dk::typical_stop::exceed);
    for (std::size_t n : {std::size_t(1000), std::size_t(100000)}) {
        auto r = dk_family::make_row(dk_family::shape::gauss, n, 2);
        for (auto& e : r) e = std::round(e * 4) / 4;  // big tie groups on both sides of c
        for (float p : {0.2f, 0.6f, 0.95f})
            for (auto stop : {dk::typical_stop::reach_with_ties, dk::typical_stop::exceed})
                check_typical(r, p, 1.f, 1, stop);
    }
}

TEST_CASE("typical_unordered: refined rows of odd lengths, with NaN / -inf and tie groups") {
    // Rows long enough for typical_bounds' refinement (n >= 2 (H + S L), a first bracket of
    // >= 2048 entries closed on both sides) whose length no vector width divides (the last
    // sampled vector clamped to the row's end), plain, with NaN and -inf sprinkled (keyless
    // entries in the lump and among the light samples), and quantised (tie groups): the sets of
    // every architecture against the reference. The refinement must have narrowed most of these
    // rows' brackets (bounds with and without it, default architecture), else the test would not
    // reach it.
    using A = bounds_row::A;
    int rows = 0, refined = 0;
    for (const std::size_t n : {std::size_t(65541), std::size_t(100003)})
        for (const auto sh :
             {dk_family::shape::zipf, dk_family::shape::gauss, dk_family::shape::flat})
            for (int variant = 0; variant < 3; ++variant) {
                auto x = dk_family::make_row(sh, n, 21);
                if (variant == 1) {
                    dk_family::sprinkle_nan(x);
                    dk_family::sprinkle_neg_inf(x);
                }
                if (variant == 2)
                    for (auto& e : x) e = std::round(e * 8) / 8;
                INFO("n " << n << " shape " << int(sh) << " variant " << variant);
                for (float p : {0.5f, 0.9f})
                    check_typical(x, p, 1.f, 1, dk::typical_stop::reach_with_ties);
                const auto r = make_bounds_row(x, 1.f, 0.9f, false);
                dk::candidates scratch(n);
                float lo[2], hi[2];
                for (int k = 0; k < 2; ++k)
                    kn::detail::typical_bounds<A>(r.x, r.w.data(), r.key, r.z, r.rmass,
                                                  scratch.key_storage(), scratch.logit_storage(),
                                                  scratch.id_storage(), lo[k], hi[k], nullptr,
                                                  nullptr, nullptr, k == 1);
                ++rows;
                refined += lo[1] != lo[0] || hi[1] != hi[0];
            }
    CHECK(2 * refined > rows);  // 16 of 18 on AVX2
}

TEST_CASE("typical: ties that only rounding makes keep the set an interval of logits") {
    // (found by fuzz_kernels) at T = 75 the logits +-1.6e-40 have the same double probability, so
    // the same score, on the side more probable than typical; min_keep 3 takes one of them: the
    // lower logit (nearer the typical point), else the set {-1.875, -1.5, +1.6e-40} would skip
    // -1.6e-40 and no interval of logits could carry it. Both id orders of the pair.
    const float d = 0x1.16c2p-133f;
    for (bool swap : {false, true}) {
        std::vector<float> x = {-0x1.ep+0f,
                                -0x1.68p+2f,
                                0x1.6p+2f,
                                -0x1.6p+2f,
                                -15.f,
                                -15.f,
                                -15.f,
                                -15.f,
                                -15.f,
                                -15.f,
                                -15.f,
                                -d,
                                d,
                                0x1.2p+0f,
                                0x1.88p+3f,
                                -0x1.84p+3f,
                                0x1.ccp+3f,
                                0x1.44p+3f,
                                -0x1.ff933cp+127f,
                                0x1.cp+0f,
                                0x1.8cp+3f,
                                -0x1.c4p+3f,
                                -0x1.64p+3f,
                                -0x1.18p+2f,
                                -0x1.88p+3f,
                                0x1.2p+1f,
                                0x1.18p+2f,
                                0x1.64p+3f,
                                0x1.7cp+3f,
                                -0x1.08p+2f,
                                0x1.08p+3f};
        for (int i = 0; i < 16; ++i) x.push_back(-inf);
        for (float v :
             {-0x1.54p+3f, -0x1.ap+2f, -inf, 0x1.1p+2f, 0x1.3p+2f, 0x1.d8p+3f, -1.5f, -0x1.84p+3f})
            x.push_back(v);
        if (swap) std::swap(x[11], x[12]);
        INFO("swap " << swap);
        const float p = 0x1.ff1f9cp-6f, t = 0x1.2bc486p+6f;
        for (auto stop : {dk::typical_stop::reach_with_ties, dk::typical_stop::exceed})
            for (std::size_t mk : {0u, 1u, 2u, 3u, 4u}) {
                dk::candidates want(x.size());
                ref::typical(x, p, t, mk, stop, want);
                if (mk == 3) {  // {-1.875, -1.5, -d}
                    CHECK(want.size() == 3);
                    CHECK(std::count(want.logits().begin(), want.logits().end(), -d) == 1);
                    CHECK(std::count(want.logits().begin(), want.logits().end(), d) == 0);
                }
                // an interval: every valid entry between the kept extremes is kept
                const auto mm = std::minmax_element(want.logits().begin(), want.logits().end());
                const float lo = *mm.first, hi = *mm.second;
                const auto inside =
                    std::count_if(x.begin(), x.end(), [&](float v) { return v >= lo && v <= hi; });
                CHECK(std::size_t(inside) == want.size());
                check_typical(x, p, t, mk, stop);
            }
    }
}

TEST_CASE("typical_unordered: each exactness tier, forced, with its premise") {
    using A = dk::simd::default_arch;
    // double_pass: a uniform row of 10 at p = 0.3 (exceed): the mass of three lands 2e-8 below
    // decimal_ceil(0.3f), inside the float bound.
    {
        const std::vector<float> u(10, 1.f);
        CHECK(check_typical(u, 0.3f, 1.f, 1, dk::typical_stop::exceed) ==
              1u << unsigned(kn::exactness_tier::double_pass));
    }
    // reference: min_keep binding (the kept set is smaller than min_keep)
    {
        const auto x = dk_family::make_row(dk_family::shape::peaked, 32000);
        dk::candidates c(x.size());
        std::vector<float> w(x.size());
        const auto r1 = kn::typical_unordered<A>(x, 0.01f, 1.f, 1, dk::typical_stop::exceed, c, w);
        REQUIRE(r1.kept < 5);  // the premise
        CHECK(check_typical(x, 0.01f, 1.f, 5, dk::typical_stop::exceed) ==
              1u << unsigned(kn::exactness_tier::reference));
    }
    // corrected: the compensated pass (entropy.hpp compensate(), no exponential where the
    // weights are kept) decides (the float keys and the double scores with the first pass's c
    // left the crossing's order open), reported as top-p's read pass is; on architectures
    // without an exact fma it computes nothing and a later tier decides
    for (const auto& [sh, t, p, stop] :
         {std::tuple{dk_family::shape::gauss, 1.f, 0.9f, dk::typical_stop::reach_with_ties},
          std::tuple{dk_family::shape::flat, 1.5f, 0.6f, dk::typical_stop::exceed}}) {
        const auto x = dk_family::make_row(sh, 32000, 42);
        INFO("shape " << dk_family::name(sh));
        check_typical(x, p, t, 1, stop);
        dk::candidates c(x.size());
        std::vector<float> w(x.size());
        const auto r = kn::typical_unordered<A>(x, p, t, 1, stop, c, w);
        if (kn::detail::exact_fma<A>) CHECK(r.tier == kn::exactness_tier::corrected);
    }
    // float_bound on a family row
    {
        const auto x = dk_family::make_row(dk_family::shape::zipf, 32000);
        CHECK(check_typical(x, 0.9f, 1.f, 1, dk::typical_stop::reach_with_ties) ==
              1u << unsigned(kn::exactness_tier::float_bound));
    }
}

TEST_CASE(
    "typical_unordered: the compensated float tier, on rows whose float keys leave the "
    "crossing's order open") {
    // Gaussian and near-uniform rows put entries from both ends of the interval next to the
    // crossing's score; their float keys (3 roundings each, c's bound) often cannot order them,
    // the compensated tier (entropy.hpp) decides with c to ~exp_error sigma and double scores.
    using A = dk::simd::default_arch;
    unsigned double_rows = 0, rows = 0;
    for (auto sh : {dk_family::shape::gauss, dk_family::shape::flat})
        for (float t : {1.f, 1.5f})
            for (std::uint64_t salt = 0; salt < 12; ++salt) {
                const auto x = dk_family::make_row(sh, 32000, 40 + salt);
                INFO("shape " << dk_family::name(sh) << " T " << t << " salt " << salt);
                const unsigned tiers =
                    check_typical(x, 0.9f, t, 1, dk::typical_stop::reach_with_ties);
                check_typical(x, 0.6f, t, 1, dk::typical_stop::exceed);
                dk::candidates c(x.size());
                std::vector<float> w(x.size());
                const auto r = kn::typical_unordered<A>(x, 0.9f, t, 1,
                                                        dk::typical_stop::reach_with_ties, c, w);
                double_rows += r.tier != kn::exactness_tier::float_bound &&
                               r.tier != kn::exactness_tier::corrected;
                ++rows;
                (void)tiers;
            }
    INFO(double_rows << " of " << rows << " rows past the float tiers");
    // deterministic rows; without the compensated tier (or with an arch without exact fma)
    // about half of the Gaussian rows need the double pass
    if (kn::detail::exact_fma<A>) CHECK(double_rows * 6 <= rows);
}

TEST_CASE(
    "typical_unordered: double scores with the exponential pass's c, on rows whose float keys "
    "leave the crossing's order open") {
    // Rows (32000 entries) where the float keys' order check fails and the bracket re-sorted by
    // double scores |d - c| (c the paired pass's, within its bound) decides without the
    // compensated pass (found with an instrumented build when the step was added; the order
    // check is then against c's bound alone, so a wrong bound or order there changes the set).
    struct row {
        dk_family::shape sh;
        float t, p;
        dk::typical_stop stop;
        std::uint64_t salt;
    };
    constexpr auto g = dk_family::shape::gauss, f = dk_family::shape::flat;
    constexpr auto hf = dk::typical_stop::reach_with_ties, ex = dk::typical_stop::exceed;
    const row rows[] = {{g, 1.f, 0.9f, hf, 12},  {g, 1.f, 0.6f, ex, 20},  {g, 1.5f, 0.6f, ex, 4},
                        {g, 1.5f, 0.6f, ex, 15}, {f, 1.f, 0.9f, hf, 9},   {f, 1.f, 0.9f, hf, 14},
                        {f, 1.f, 0.6f, ex, 28},  {f, 1.5f, 0.6f, ex, 14}, {f, 1.5f, 0.9f, hf, 36}};
    for (const row& r : rows) {
        const auto x = dk_family::make_row(r.sh, 32000, 40 + r.salt);
        INFO("shape " << dk_family::name(r.sh) << " T " << r.t << " salt " << r.salt);
        // the same set as the reference; decided by a float tier (no double pass, no reference)
        CHECK(check_typical(x, r.p, r.t, 1, r.stop) ==
              1u << unsigned(kn::exactness_tier::float_bound));
    }
}
}  // namespace dk_t_kernels_typical
