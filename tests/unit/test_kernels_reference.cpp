// The reference semantics of the truncation steps (kernels/reference.hpp) on the exact inputs of
// issue 12 ("Semantics found while measuring") and on small rows whose answer is known by hand.
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_kernels_reference {

namespace {

namespace dk = decodekit;
namespace ref = decodekit::reference;
constexpr float inf = std::numeric_limits<float>::infinity();

/// Logits whose softmax is the given probabilities (log of each, as float).
std::vector<float> logits_of(std::initializer_list<double> probs) {
    std::vector<float> x;
    for (double p : probs) x.push_back(float(std::log(p)));
    return x;
}

/// The ids of a candidate set, ascending.
std::vector<dk::token_id> ids_of(const dk::candidates& c) {
    std::vector<dk::token_id> v(c.ids().begin(), c.ids().end());
    std::sort(v.begin(), v.end());
    return v;
}

using ids = std::vector<dk::token_id>;

}  // namespace

TEST_CASE("decimal_floor and decimal_ceil bracket the reals that round to a float") {
    for (float p : {0.8f, 0.6f, 0.3f, 0.5f, 1.f, 1e-30f, 0.95f}) {
        const double lo = ref::decimal_floor(p), hi = ref::decimal_ceil(p);
        CHECK(lo < double(p));
        CHECK(hi > double(p));
        // the midpoints themselves round to even (either neighbour); just inside them, to p
        CHECK(float(std::nextafter(lo, 2.0)) == p);
        CHECK(float(std::nextafter(hi, 0.0)) == p);
        CHECK(float(std::nextafter(lo, 0.0)) != p);
        CHECK(float(std::nextafter(hi, 2.0)) != p);
    }
    CHECK(ref::decimal_floor(0.8f) <= 0.8);  // the decimal the user wrote reaches it
    CHECK(ref::decimal_ceil(0.8f) >= 0.8);
    CHECK(std::isnan(ref::decimal_floor(std::numeric_limits<float>::quiet_NaN())));
}

TEST_CASE("top_p: a mass that lands on the decimal p has reached it (issue 12 row)") {
    // [0.3, 0.1, 0.1, 0.5] at top-p 0.8: 0.5 + 0.3 reaches 0.8, so {0.5, 0.3} (HF); 0.8f is held
    // as 0.800000012, which the double mass of the two falls short of.
    const auto x = logits_of({0.3, 0.1, 0.1, 0.5});
    dk::candidates c(x.size());
    CHECK(ref::top_p(x, 0.8f, 1.f, 1, c) == 2);
    CHECK(ids_of(c) == ids{0, 3});
    CHECK(c.ids()[0] == 3);  // reference order: most probable first
    // The other decimal probes of the issue on a uniform row of ten: p = 0.3 keeps 3, 0.6 keeps 6.
    const std::vector<float> u(10, 0.f);
    dk::candidates cu(u.size());
    CHECK(ref::top_p(u, 0.3f, 1.f, 1, cu) == 3);
    CHECK(ref::top_p(u, 0.6f, 1.f, 1, cu) == 6);
    CHECK(ref::top_p(u, 0.8f, 1.f, 1, cu) == 8);
    // Negative control: a float just above the decimal keeps one more.
    CHECK(ref::top_p(u, std::nextafter(0.6f, 1.f), 1.f, 1, cu) == 7);
    // p = 1 keeps every valid entry (also the ones whose mass rounds away), p = 0 keeps min_keep.
    const std::vector<float> tail = {0.f, -700.f, -inf, -800.f};
    dk::candidates ct(tail.size());
    CHECK(ref::top_p(tail, 1.f, 1.f, 1, ct) == 3);
    CHECK(ref::top_p(tail, 0.f, 1.f, 2, ct) == 2);
}

TEST_CASE("min_p: the threshold stands for the decimal min_p") {
    // p_1 / p_0 = 0.4 up to the float rounding of the logit: kept at min_p 0.4 (HF compares
    // 0.4 * p_max in float and keeps it); ln(0.4f) would put the threshold one float above.
    const std::vector<float> x = {0.f, float(std::log(0.4))};
    dk::candidates c(x.size());
    CHECK(ref::filter_min_p(x, 0.4f, 1.f, c) == 2);
    CHECK(float(std::log(double(0.4f))) > x[1]);  // the premise: the float's own log is above
    CHECK(ref::filter_min_p(x, std::nextafter(0.4f, 1.f), 1.f, c) == 1);  // negative control
    // min_keep: fewer pass than min_keep -> the min_keep largest, ties by lowest id.
    const std::vector<float> y = {3.f, 0.f, 0.f, 0.f, -5.f};
    dk::candidates cy(y.size());
    CHECK(ref::min_p(y, 0.5f, 1.f, 1, cy) == 1);
    CHECK(ref::min_p(y, 0.5f, 1.f, 3, cy) == 3);
    CHECK(ids_of(cy) == ids{0, 1, 2});
}

TEST_CASE("epsilon and eta: the min_keep fallback keeps the ties of the min_keep-th (HF)") {
    // Every token below epsilon, 8 tied at the top: HF keeps the 8.
    std::vector<float> x(1000, -1.f);
    for (std::size_t i : {5u, 17u, 90u, 91u, 300u, 512u, 777u, 999u}) x[i] = 0.f;
    dk::candidates c(x.size());
    CHECK(ref::epsilon(x, 0.01f, 1.f, 1, c) == 8);
    CHECK(ref::epsilon(x, 0.01f, 1.f, 9, c) == 1000);  // the 9th largest ties with 992 others
    CHECK(ref::epsilon(x, 0.0001f, 1.f, 1, c) == 1000);
    // Eta: the top always passes (its threshold is at most sqrt(eta) p_max); two on top, six tied
    // below them that fail: min_keep 3 keeps 2 + 6.
    std::vector<float> y(400, -20.f);
    y[10] = y[20] = 4.f;
    for (std::size_t i : {1u, 2u, 3u, 30u, 40u, 50u}) y[i] = 0.f;
    dk::candidates cy(y.size());
    const double thr = ref::eta_threshold(y, 0.05f, 1.f);
    const double p_mid = std::exp(-4.0) / (2 + 6 * std::exp(-4.0) + 392 * std::exp(-24.0));
    REQUIRE(p_mid < thr);  // the premise: the six fail
    CHECK(ref::eta(y, 0.05f, 1.f, 1, cy) == 2);
    CHECK(ref::eta(y, 0.05f, 1.f, 3, cy) == 8);
    CHECK(ref::eta(y, 0.f, 1.f, 3, cy) == 400);  // disabled
}

TEST_CASE("typical: ties with the last kept score (HF) and the strict llama.cpp form") {
    // A uniform row of 5, min_keep 3: every score is 0, so HF keeps all 5.
    const std::vector<float> u(5, 1.f);
    dk::candidates c(u.size());
    CHECK(ref::typical(u, 0.5f, 1.f, 3, dk::typical_stop::reach_with_ties, c) == 5);
    CHECK(ref::typical(u, 0.5f, 1.f, 3, dk::typical_stop::exceed, c) == 3);
    // [0.5, 0.25, 0.125, 0.125]: H = 1.75 ln 2, scores (in ln 2) 0.75, 0.25, 1.25, 1.25, so the
    // order is ids 1, 0, then 2, 3; masses 0.25, 0.75, 0.875. At typical_p 0.75 the mass lands
    // exactly on p at id 0: HF stops there ({0, 1}), llama.cpp takes one more ({0, 1, 2}: its
    // strict > keeps going; the tie 2 / 3 is broken by id).
    const auto x = logits_of({0.5, 0.25, 0.125, 0.125});
    dk::candidates cx(x.size());
    CHECK(ref::typical(x, 0.75f, 1.f, 1, dk::typical_stop::reach_with_ties, cx) == 2);
    CHECK(ids_of(cx) == ids{0, 1});
    CHECK(ref::typical(x, 0.75f, 1.f, 1, dk::typical_stop::exceed, cx) == 3);
    CHECK(ids_of(cx) == ids{0, 1, 2});
    // reach_with_ties past the landing point takes the tied pair 2, 3 together.
    CHECK(ref::typical(x, 0.8f, 1.f, 1, dk::typical_stop::reach_with_ties, cx) == 4);
    CHECK(ref::typical(x, 0.8f, 1.f, 1, dk::typical_stop::exceed, cx) == 3);
    // p = 0: the first entry by score and its ties (HF), one entry (llama.cpp); p = 1: all.
    CHECK(ref::typical(x, 0.f, 1.f, 1, dk::typical_stop::reach_with_ties, cx) == 1);
    CHECK(ids_of(cx) == ids{1});
    CHECK(ref::typical(u, 0.f, 1.f, 1, dk::typical_stop::reach_with_ties, c) == 5);
    CHECK(ref::typical(u, 0.f, 1.f, 1, dk::typical_stop::exceed, c) == 1);
    CHECK(ref::typical(x, 1.f, 1.f, 1, dk::typical_stop::exceed, cx) == 4);
}

TEST_CASE("mirostat_cut keeps p >= 2^-mu, at least the most probable") {
    const auto x = logits_of({0.5, 0.25, 0.125, 0.0625, 0.0625});
    dk::candidates c(x.size());
    CHECK(ref::mirostat_cut(x, 2.5f, 1.f, c) == 2);  // 2^-2.5 = 0.177
    CHECK(ref::mirostat_cut(x, 0.1f, 1.f, c) == 1);  // none passes: the max
    CHECK(c.ids()[0] == 0);
    const std::vector<float> tie = {1.f, 2.f, 2.f};
    dk::candidates ct(tie.size());
    CHECK(ref::mirostat_cut(tie, 0.1f, 1.f, ct) == 1);
    CHECK(ct.ids()[0] == 1);  // the lowest id among tied maxima
}

TEST_CASE("top_n_sigma: max - n sigma over the finite entries, population sigma") {
    // finite entries 0, 2, 4, 6 (and +-inf / NaN ignored for sigma): mean 3, var 5.
    const std::vector<float> x = {0.f, 2.f, -inf, 4.f, std::numeric_limits<float>::quiet_NaN(),
                                  6.f};
    dk::candidates c(x.size());
    const double sigma = std::sqrt(5.0);
    CHECK(ref::top_n_sigma(x, 1.f, 1, c) == 2);  // 6 - 2.236 = 3.76: {4, 6}
    CHECK(ids_of(c) == ids{3, 5});
    CHECK(ref::top_n_sigma(x, float(6 / sigma), 1, c) == 4);  // threshold 0 (up to rounding)
    CHECK(ref::top_n_sigma(x, 0.1f, 3, c) == 3);              // min_keep
    CHECK(ref::top_n_sigma(x, 0.f, 1, c) == 4);               // disabled
    // a +inf entry: the threshold is +inf, only it is kept.
    const std::vector<float> y = {0.f, inf, 3.f};
    dk::candidates cy(y.size());
    CHECK(ref::top_n_sigma(y, 1.f, 1, cy) == 1);
    CHECK(cy.ids()[0] == 1);
}

TEST_CASE("xtc_removed: all of the head but its least probable, unless min_keep forbids") {
    const auto x = logits_of({0.3, 0.05, 0.4, 0.2, 0.05});
    dk::candidates c(x.size());
    CHECK(ref::xtc_removed(x, 0.15f, 1.f, 1, c) == 2);  // head {0.4, 0.3, 0.2}
    CHECK(c.ids()[0] == 2);
    CHECK(c.ids()[1] == 0);
    CHECK(ref::xtc_removed(x, 0.35f, 1.f, 1, c) == 0);  // a head of one: nothing
    CHECK(ref::xtc_removed(x, 0.15f, 1.f, 4, c) == 0);  // 3 would remain < 4
    CHECK(ref::xtc_removed(x, 0.15f, 1.f, 3, c) == 2);
    CHECK(ref::xtc_removed(x, 0.6f, 1.f, 1, c) == 0);
}
}  // namespace dk_t_kernels_reference
