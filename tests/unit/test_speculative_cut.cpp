// Speculative verification on a sampler's processed set (sampling/verify.hpp: weighted_set, a
// top-p cut over the row not compacted): the set is the sampler's distribution (same
// probabilities as distribution_unordered(), same draw as sample()), the verification rules on it
// decide as on the sparse distribution (up to the rounding of the normaliser), the emitted law is
// exactly p (chi-square, false-failure rate dk_test::false_failure_rate = 1e-7), and the stepper
// gives the same tokens through either path. Rows of 3000 entries: several blocks of every
// blocked walk (512 in the residual draw, 256 in draw_cut).
#include "dk_spec_rows.hpp"
#include "dk_test.hpp"
#include "toy_model.hpp"

#include <cmath>
#include <cstdint>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_speculative_cut {

using namespace decodekit;

namespace {

constexpr std::size_t V = 3000;

using dk_spec_rows::draft_row;
using dk_spec_rows::sparse_of;
std::vector<float> make_row(std::uint64_t seed, std::size_t n = V) {
    return dk_spec_rows::make_row(seed, n);
}

/// Dense probabilities of a sampler's distribution_unordered() (in its own workspace).
std::vector<double> dense_law(sampler& s, const std::vector<float>& row, const sample_context& c) {
    sampling_workspace ws(row.size());
    const distribution d = s.distribution_unordered(row, c, ws);
    std::vector<double> p(row.size(), 0.0);
    for (std::size_t i = 0; i < d.size(); ++i) p[std::size_t(d.tokens[i])] = d.probs[i];
    return p;
}

}  // namespace

TEST_CASE("processed_set is the sampler's distribution (cut or sparse)", "[speculative][cut]") {
    const auto row = make_row(1);
    struct config {
        const char* name;
        sampling_params params;
        bool cut;
    };
    const std::vector<config> configs = {
        {"top-p 0.9: a cut", {.top_p = 0.9f}, true},
        {"hf: temperature 0.7 then top-p 0.95: a cut",
         {.temperature = 0.7f, .top_p = 0.95f, .order = sampling_order::hf},
         true},
        {"top-k 50 then top-p: sparse", {.top_k = 50, .top_p = 0.9f}, false},
        {"min-p 0.2: sparse", {.min_p = 0.2f}, false},
        {"no truncation: sparse", {}, false},
        {"greedy: one entry", {.temperature = 0.f}, false},
    };
    for (const auto& c : configs) {
        SECTION(c.name) {
            sampler s(c.params, V);
            const auto law = dense_law(s, row, {});
            sampling_workspace ws(V);
            const weighted_set p = processed_set(s, row, {}, ws);
            CHECK(p.is_cut == c.cut);
            REQUIRE_FALSE(p.empty());
            double total = 0;
            std::size_t positive = 0;
            for (std::size_t t = 0; t < V; ++t) {
                const double pt = p.prob(token_id(t));
                INFO("token " << t);
                REQUIRE(std::fabs(pt - law[t]) <= 1e-6 * law[t] + 1e-12);
                total += pt;
                positive += pt > 0;
            }
            CHECK(std::fabs(total - 1.0) < 1e-6);
            CHECK(p.kept >= positive);
            CHECK(p.prob(-1) == 0.0);
            CHECK(p.prob(token_id(V)) == 0.0);
            // a walk over the index space gives the same weights as prob()
            std::vector<float> w(p.extent());
            p.weights_into(0, p.extent(), w.data());
            for (std::size_t i = 0; i < p.extent(); ++i)
                REQUIRE(double(w[i]) / p.sum == p.prob(p.token_at(i)));
        }
    }
}

TEST_CASE("processed_set: a wrong size, a short mask or a dead row give an empty set",
          "[speculative][cut]") {
    sampler s({.top_p = 0.9f}, V);
    const auto row = make_row(1);
    CHECK(processed_set(s, std::span<const float>(row).first(V - 1)).empty());
    const std::vector<std::uint32_t> short_mask(2, ~0u);
    CHECK(processed_set(s, row, {.mask = {.words = short_mask, .size = V}}).empty());
    const std::vector<float> dead(V, -INFINITY);
    const weighted_set none = processed_set(s, dead);
    CHECK(none.empty());
    CHECK(none.draw(0.5) == -1);
    CHECK(processed_set(s, row).draw(0.5) >= 0);
}

TEST_CASE("a weighted_set's draw is the sampler's draw", "[speculative][cut]") {
    const auto row = make_row(2);
    sampler s({.top_p = 0.9f, .seed = 5}, V);
    sampling_workspace ws(V);
    for (std::uint64_t step = 0; step < 2000; ++step) {
        const sample_context c{.sequence = 3, .step = step};
        const token_id want = s.sample(row, c).token;
        const weighted_set p = processed_set(s, row, c, ws);
        REQUIRE(p.is_cut);
        REQUIRE(p.draw(make_stream({5, 3, step}, rng_purpose::sample).uniform()) == want);
    }
}

TEST_CASE("verification on a weighted_set decides as on the sparse distribution",
          "[speculative][cut]") {
    const auto row = make_row(3);
    sampler ts({.top_p = 0.9f}, V), ds({.top_p = 0.9f}, V);
    const sparse_distribution q = sparse_of(ds, draft_row(row));
    REQUIRE(q.ascending);                                          // a cut p reads it by merging
    const sparse_dist_view q_scattered{q.tokens, q.probs, false};  // ... or scattered
    const sparse_distribution ps = sparse_of(ts, row);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    verify_workspace ws(V);
    constexpr std::size_t runs = 20000;
    std::size_t differ[6] = {}, rejected = 0;
    for (std::uint64_t r = 0; r < runs; ++r) {
        const rng_key key{1, r, 0};
        const token_id x = detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
        const verify_result a = verify_rejection(p, q, x, key, ws),
                            b = verify_rejection(ps, q, x, key, ws),
                            a2 = verify_rejection(p, q_scattered, x, key, ws);
        rejected += !b.accepted;
        differ[0] += a.token != b.token || a.accepted != b.accepted;
        differ[5] += a2.token != b.token || a2.accepted != b.accepted;
        // q merged along the cut or scattered into the dense row: the same block sums and
        // residuals, so the same token for every key
        REQUIRE(a2.token == a.token);
        REQUIRE(a2.accepted == a.accepted);
        const verify_result c = verify_one_hot(p, x, key), d = verify_one_hot(ps, x, key);
        differ[1] += c.token != d.token || c.accepted != d.accepted;
        differ[2] += draw_from(p, key) != draw_from(ps, key);
        const verify_result e = verify_typical(p, x, {}, key), f = verify_typical(ps, x, {}, key);
        differ[3] += e.token != f.token || e.accepted != f.accepted;
        differ[4] += verify_greedy(p, x).token != verify_greedy(ps, x).token;
    }
    INFO("rejected " << rejected);
    CHECK(rejected > runs / 20);  // the residual walk ran often
    // the two forms differ only in the rounding of the normaliser: a decision within ~1e-6 of
    // a boundary (a handful of runs at most)
    for (std::size_t k = 0; k < 6; ++k) {
        INFO("rule " << k);
        CHECK(differ[k] <= runs / 1000);
    }
    CHECK(verify_greedy(p, 2999).accepted);  // the row's head
    CHECK_FALSE(verify_greedy(p, 0).accepted);
}

TEST_CASE("a cut's residual block sum is the sum of its residuals (tied cut, tails, bad q)",
          "[speculative][cut]") {
    // a row of 17 levels: the top-p cut crosses a level held by ~180 ids, so the cut keeps a
    // prefix of those ties (lo_last inside the row: a block splits into segments); blocks of
    // every alignment and length (vector parts and scalar tails); q with negative, NaN and
    // +inf entries (a residual of 0 there)
    auto row = make_row(17);
    for (float& v : row)
        if (std::isfinite(v)) v = std::floor(v * 4.f) / 4.f;
    sampler ts({.top_p = 0.7f}, V);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    REQUIRE(p.cut.lo_last != npos);  // a tied level is cut inside the row
    std::vector<float> q(V), out(V);
    std::uint64_t s = 5;
    for (std::size_t i = 0; i < V; ++i) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        q[i] = float(double(s >> 11) / double(1ull << 53)) * 2.f / float(V);
        if (i % 7 == 0) q[i] = -q[i];
    }
    q[100] = NAN;
    q[101] = INFINITY;
    for (const auto& [b, c] :
         std::vector<std::pair<std::size_t, std::size_t>>{{0, 512},
                                                          {512, 512},
                                                          {1, 37},
                                                          {p.cut.lo_last - 20, 45},
                                                          {2999, 1},
                                                          {2488, 512},
                                                          {1000, 513},
                                                          {0, V}}) {
        INFO("block " << b << " + " << c);
        p.residual_into(b, c, q.data() + b, out.data());
        double want = 0;
        for (std::size_t i = 0; i < c; ++i) {
            REQUIRE(out[i] >= 0.f);  // (NaN reads 0)
            want += out[i];
        }
        const double got = p.residual_sum(b, c, q.data() + b);
        CHECK(std::fabs(got - want) <= 1e-5 * want + 1e-12);
    }
}

TEST_CASE("q's non-positive and NaN probabilities read 0 on every path of the residual",
          "[speculative][cut]") {
    // q over every id, ascending (the merge reads whole blocks of q), with every third
    // probability negative and one NaN: the merge, the block scatter and the dense scatter must
    // all read those as 0, so the three give the same token for every key
    const auto row = make_row(11);
    sampler ts({.top_p = 0.95f}, V);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    std::vector<token_id> ids(V);
    std::vector<float> probs(V);
    for (std::size_t i = 0; i < V; ++i) {
        ids[i] = token_id(i);
        probs[i] = i % 3 == 0 ? -0.01f : 1.f / float(V);
    }
    probs[1000] = NAN;
    const sparse_dist_view merged{ids, probs, true}, scattered{ids, probs, false};
    // a q missing one id: the merge scatters the blocks q does not fill
    std::vector<token_id> ids2(ids.begin() + 1, ids.end());
    std::vector<float> probs2(probs.begin() + 1, probs.end());
    const sparse_dist_view merged2{ids2, probs2, true}, scattered2{ids2, probs2, false};
    verify_workspace ws(V);
    std::size_t rejected = 0;
    for (std::uint64_t r = 0; r < 2000; ++r) {
        const rng_key key{2, r, 0};
        const token_id x = token_id(3 * (r % 1000) + 1);  // q(x) > 0
        const verify_result a = verify_rejection(p, merged, x, key, ws),
                            b = verify_rejection(p, scattered, x, key, ws);
        CHECK(a.token == b.token);
        CHECK(a.accepted == b.accepted);
        rejected += !a.accepted;
        const verify_result c = verify_rejection(p, merged2, x, key, ws),
                            d = verify_rejection(p, scattered2, x, key, ws);
        CHECK(c.token == d.token);
    }
    CHECK(rejected > 100);
}

TEST_CASE("a sparse q whose probabilities are fewer than its tokens: the extra tokens read 0",
          "[speculative]") {
    const auto row = make_row(13);
    sampler ts({.top_p = 0.9f}, V);
    const sparse_distribution ps = sparse_of(ts, row);
    const std::vector<token_id> ids = {2999, 5, 6, 7, 8, 9, 10, 11};
    const std::vector<float> probs = {0.5f, 0.5f};  // for 2999 and 5 only
    const sparse_dist_view q{ids, probs, false};
    CHECK(q.size() == 2);
    CHECK(detail::prob_of(q, 7) == 0.0);
    CHECK(detail::prob_of(q, 2999) == 0.5);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    verify_workspace ws(V);
    for (std::uint64_t r = 0; r < 50; ++r) {
        const verify_result a = verify_rejection(ps, q, 7, {3, r, 0}, ws);  // q(7) reads 0
        CHECK_FALSE(a.accepted);
        CHECK(a.token >= 0);
        const verify_result b = verify_rejection(p, q, 7, {3, r, 0}, ws);
        CHECK_FALSE(b.accepted);
        CHECK(b.token >= 0);
    }
}

#ifdef NDEBUG  // (Debug builds assert on the broken promise)
TEST_CASE("a q that breaks its ascending promise gives a token of p, never an access out of bounds",
          "[speculative][cut]") {
    // q's ids descending while q.ascending says ascending: the merge's ranges are wrong (a wrong
    // residual law, documented); under ASan this would catch a write outside the block
    const auto row = make_row(5);
    sampler ts({.top_p = 0.9f}, V), ds({.top_p = 0.9f}, V);
    const sparse_distribution q = sparse_of(ds, draft_row(row));
    std::vector<token_id> ids(q.tokens.rbegin(), q.tokens.rend());
    std::vector<float> probs(q.probs.rbegin(), q.probs.rend());
    const sparse_dist_view broken{ids, probs, true};
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    verify_workspace ws(V);
    for (std::uint64_t r = 0; r < 200; ++r) {
        const verify_result v = verify_rejection(p, broken, ids[r % ids.size()], {1, r, 0}, ws);
        REQUIRE(v.token >= 0);
        CHECK(p.prob(v.token) > 0);
    }
}
#endif

TEST_CASE("rejection verification on a cut emits exactly p", "[speculative][cut][statistical]") {
    constexpr std::size_t n = 1100, N = 200000;  // 3 residual blocks, 5 draw_cut blocks
    const auto row = make_row(4, n);
    sampler ts({.top_p = 0.8f}, n), ds({.top_p = 0.9f}, n);
    const sparse_distribution q = sparse_of(ds, draft_row(row));
    const auto law = dense_law(ts, row, {});
    sampling_workspace sws(n);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    std::vector<double> cdf(q.size());  // x ~ q by binary search (the test's own cost)
    double run = 0;
    for (std::size_t i = 0; i < q.size(); ++i) cdf[i] = run += q.probs[i];
    verify_workspace ws(n);
    std::size_t acc = 0;
    const auto counts = dk_test::histogram(n, N, [&](std::size_t r) {
        const rng_key key{7, r, 0};
        const double u = make_stream(key, rng_purpose::draft).uniform() * run;
        const std::size_t j = std::min<std::size_t>(
            q.size() - 1, std::size_t(std::upper_bound(cdf.begin(), cdf.end(), u) - cdf.begin()));
        const verify_result v = verify_rejection(p, q, q.tokens[j], key, ws);
        acc += v.accepted;
        return v.token;
    });
    dk_test::require_law(counts, law);
    CHECK(acc > N / 4);
    CHECK(acc < N - N / 20);  // both branches ran
}

namespace {
/// sampler_processing without processed(): the stepper verifies on its sparse output.
struct sparse_only {
    sampler_processing inner;
    void operator()(std::span<const float> x, const position_context& c,
                    sparse_distribution& out) const {
        inner(x, c, out);
    }
    void commit(token_id t, const sparse_distribution& p) const noexcept { inner.commit(t, p); }
};
}  // namespace

TEST_CASE("the stepper gives the same tokens on the set as on the sparse output",
          "[speculative][cut]") {
    const dk_test::toy_model_config tc{.vocab_size = 2048, .seed = 3, .scale = 1.5f};
    dk_test::toy_model target(tc);
    dk_test::toy_model draft = dk_test::toy_model::draft_of(tc, 0.5f);
    const std::vector<token_id> prompt = {1, 2, 3, 4};
    std::size_t differ = 0, runs = 0, cut_rows = 0;
    for (const sampling_params& sp :
         {sampling_params{.top_p = 0.9f}, sampling_params{.top_p = 0.9f, .mirostat = true}}) {
        for (std::uint64_t seq = 0; seq < 12; ++seq, ++runs) {
            sampler s1(sp, tc.vocab_size), s2(sp, tc.vocab_size), sd(sp, tc.vocab_size);
            const sampler_processing set_proc{s1};
            sparse_only sparse_proc{sampler_processing{s2}};
            sampler_processing dproc{sd};
            auto proposer = draft_model_proposer(draft, dproc, {.mode = draft_mode::sample});
            const speculative_params params{
                .max_new_tokens = 24, .seed = 9, .sequence = seq, .draft_length = 3};
            std::vector<float> lp1, lp2;
            const auto r1 =
                speculative_decode(target, proposer, prompt, params, set_proc,
                                   [&](const token_event& e) { lp1.push_back(e.logprob); });
            const auto r2 =
                speculative_decode(target, proposer, prompt, params, sparse_proc,
                                   [&](const token_event& e) { lp2.push_back(e.logprob); });
            cut_rows += set_proc.processed(target.logits_of(prompt), {}).is_cut;
            if (r1.tokens != r2.tokens) {
                ++differ;
                continue;
            }
            REQUIRE(lp1.size() == lp2.size());
            for (std::size_t i = 0; i < lp1.size(); ++i) CHECK(std::fabs(lp1[i] - lp2[i]) < 1e-4f);
            CHECK(r1.stats.accepted == r2.stats.accepted);
        }
    }
    CHECK(cut_rows > 0);  // the set path verified on cuts
    CHECK(differ <= 1);   // (rounding of the normaliser only)
}
}  // namespace dk_t_speculative_cut
