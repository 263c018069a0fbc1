// A rejection's residual draw (verify_rejection / verify_one_hot, on a weighted_set and on a
// sparse p): proposals y ~ p kept with probability max(0, p(y) - q(y)) / p(y), the exact pass
// after 32 refusals (detail::propose_residual). The token emitted on rejection follows
// norm(max(0, p - q)) exactly on every shape of the inputs: a cut with q merged (ascending) or
// scattered, a cut inside a tied level, q with mass outside the cut, TV ~ 1 (residual = p) and
// TV tiny (the exact pass runs on most rejections), a sparse p; the one-hot residual is p
// without x; and the verified token's law is p (the speculative identity) when the exact pass
// runs. Chi-square, each with false-failure rate dk_test::false_failure_rate = 1e-7. Rows of
// 3000 entries: several blocks of every blocked walk (512 in the residual, 256 in draw_cut).
#include "dk_rows.hpp"
#include "dk_spec_rows.hpp"
#include "dk_test.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iterator>
#include <memory>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_speculative_residual {

using namespace decodekit;

namespace {

constexpr std::size_t V = 3000;

using dk_spec_rows::draft_row;
using dk_spec_rows::sparse_of;
std::vector<float> make_row(std::uint64_t seed, std::size_t n = V) {
    return dk_spec_rows::make_row(seed, n);
}

/// p(t) over the ids, as the verification reads it (weight / sum).
std::vector<double> law_of(const weighted_set& p) {
    std::vector<double> out(V, 0.0);
    for (std::size_t t = 0; t < V; ++t) out[t] = p.prob(token_id(t));
    return out;
}

/// norm(max(0, p - q)) over the ids; *tv receives its mass.
std::vector<double> residual_law(const std::vector<double>& p, sparse_dist_view q,
                                 double* tv = nullptr) {
    std::vector<double> r = p;
    for (std::size_t i = 0; i < q.size(); ++i)
        if (q.probs[i] > 0.f) r[std::size_t(q.tokens[i])] -= double(q.probs[i]);
    double s = 0;
    for (double& v : r) s += v = v > 0 ? v : 0.0;
    for (double& v : r) v /= s;
    if (tv) *tv = s;
    return r;
}

/// The tokens verify(key) emits on rejection, over keys {seed, r, 0}, until n rejections.
template <class Verify>
std::vector<std::uint64_t> rejected_tokens(std::size_t n, std::uint64_t seed, Verify&& verify) {
    std::vector<std::uint64_t> counts(V + 1, 0);
    std::size_t got = 0;
    for (std::uint64_t r = 0; got < n; ++r) {
        REQUIRE(r < 100 * n);  // (rejections are not rare in these tests: never a hang)
        const verify_result v = verify(rng_key{seed, r, 0});
        if (v.accepted) continue;
        const auto t = std::size_t(v.token);
        ++counts[t < V ? t : V];
        ++got;
    }
    return counts;
}

/// q = p's kept ids with probabilities p(t) (1 +- 1 %), alternating, normalised (ascending): a
/// draft almost equal to the target, TV ~ 0.005.
sparse_distribution near_copy(const weighted_set& p) {
    sparse_distribution q;
    double s = 0;
    int k = 0;
    for (std::size_t t = 0; t < V; ++t) {
        const double pt = p.prob(token_id(t));
        if (!(pt > 0)) continue;
        const double v = pt * (k++ % 2 ? 1.01 : 0.99);
        q.push(token_id(t), float(v));
        s += v;
    }
    for (float& v : q.probs) v = float(double(v) / s);
    q.ascending = true;
    return q;
}

}  // namespace

TEST_CASE("the residual on a cut follows norm(max(0, p - q)), q merged or scattered",
          "[speculative][residual][statistical]") {
    const auto row = make_row(3);
    sampler ts({.top_p = 0.9f}, V), ds({.top_p = 0.9f}, V);
    const sparse_distribution q = sparse_of(ds, draft_row(row));
    REQUIRE(q.ascending);
    const sparse_dist_view scattered{q.tokens, q.probs, false};
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    double tv = 0;
    const auto want = residual_law(law_of(p), q, &tv);
    INFO("tv " << tv);
    CHECK(tv > 0.05);
    verify_workspace ws(V);
    const auto counts = rejected_tokens(100000, 1, [&](rng_key key) {
        const token_id x = detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
        const verify_result a = verify_rejection(p, q, x, key, ws);
        // q by a binary search or scattered into the dense row: the same values, so the same
        // proposals and decisions; and the same key gives the same token again
        const verify_result b = verify_rejection(p, scattered, x, key, ws);
        REQUIRE(a.token == b.token);
        REQUIRE(a.accepted == b.accepted);
        REQUIRE(verify_rejection(p, q, x, key, ws).token == a.token);
        return a;
    });
    dk_test::require_law(counts, want);
}

TEST_CASE("the residual on a cut inside a tied level follows norm(max(0, p - q))",
          "[speculative][residual][statistical]") {
    auto row = make_row(17);
    for (float& v : row)
        if (std::isfinite(v)) v = std::floor(v * 4.f) / 4.f;
    sampler ts({.top_p = 0.7f}, V), ds({.top_p = 0.9f}, V);
    const sparse_distribution q = sparse_of(ds, draft_row(row));
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    REQUIRE(p.cut.lo_last != npos);  // a tied level is cut inside the row
    const auto want = residual_law(law_of(p), q);
    verify_workspace ws(V);
    const auto counts = rejected_tokens(100000, 2, [&](rng_key key) {
        const token_id x = detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
        return verify_rejection(p, q, x, key, ws);
    });
    dk_test::require_law(counts, want);
}

TEST_CASE("the residual with q's mass outside the cut, and with TV ~ 1 (residual = p)",
          "[speculative][residual][statistical]") {
    const auto row = make_row(5);
    sampler ts({.top_p = 0.8f}, V), ds({.temperature = 1.f}, V);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    const auto pl = law_of(p);
    verify_workspace ws(V);
    SECTION("q over the whole row (ascending)") {
        const sparse_distribution q = sparse_of(ds, draft_row(row));
        double outside = 0;
        for (std::size_t i = 0; i < q.size(); ++i)
            if (!(pl[std::size_t(q.tokens[i])] > 0)) outside += q.probs[i];
        INFO("q outside the cut " << outside);
        CHECK(outside > 0.1);
        const auto counts = rejected_tokens(100000, 3, [&](rng_key key) {
            const token_id x =
                detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
            return verify_rejection(p, q, x, key, ws);
        });
        dk_test::require_law(counts, residual_law(pl, q));
    }
    SECTION("q only outside the cut (TV = 1), in descending id order (scattered)") {
        sparse_distribution q;
        for (std::size_t t = V; t-- > 0;)
            if (!(pl[t] > 0) && t % 3 == 0) q.push(token_id(t), 1.f);
        for (float& v : q.probs) v /= float(q.size());
        const auto counts = rejected_tokens(100000, 4, [&](rng_key key) {
            return verify_rejection(p, q, q.tokens[key.sequence % q.size()], key, ws);
        });
        dk_test::require_law(counts, pl);  // p(x) = 0: every draft rejected, residual = p
    }
}

TEST_CASE("a tiny TV: the exact pass after 32 refused proposals keeps the residual's law",
          "[speculative][residual][statistical]") {
    const auto row = make_row(6);
    sampler ts({.top_p = 0.95f}, V);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    const sparse_distribution q = near_copy(p);
    double tv = 0;
    const auto want = residual_law(law_of(p), q, &tv);
    INFO("tv " << tv);
    REQUIRE(tv < 0.01);  // (1 - tv)^32 > 0.72: most rejections end in the exact pass
    // the proposals alone refuse on most keys (the exact pass is the path under test)
    std::size_t refused = 0;
    kernels::block_sums sums;
    for (std::uint64_t r = 0; r < 1000; ++r) {
        rng_stream s = make_stream({8, r, 0}, rng_purpose::residual);
        refused +=
            detail::propose_set(
                p, s,
                [&](std::size_t i) noexcept { return float(detail::prob_of(q, token_id(i))); },
                sums) == npos;
    }
    CHECK(refused > 600);
    CHECK(refused < 1000);  // and some proposals are kept
    verify_workspace ws(V);
    // draft 7 (-inf in the row, not in q): q(x) = 0 rejects every time, the residual unchanged
    REQUIRE(detail::prob_of(q, 7) == 0.0);
    const auto counts =
        rejected_tokens(30000, 5, [&](rng_key key) { return verify_rejection(p, q, 7, key, ws); });
    dk_test::require_law(counts, want);
}

TEST_CASE("the verified token follows p when the exact pass runs (tiny TV)",
          "[speculative][residual][statistical]") {
    const auto row = make_row(7);
    sampler ts({.top_p = 0.95f}, V);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    const sparse_distribution q = near_copy(p);
    // the speculative identity through the exact pass; rejections are ~0.5 % of the drafts, so
    // this catches a fallback that emits a wrong token family (x itself, tokens outside p), not
    // a residual law off by a little (the test above checks that law on rejections alone)
    verify_workspace ws(V);
    std::size_t rejected = 0;
    const auto counts = dk_test::histogram(V, 300000, [&](std::size_t r) {
        const rng_key key{9, r, 0};
        const token_id x = detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
        const verify_result v = verify_rejection(p, q, x, key, ws);
        rejected += !v.accepted;
        return v.token;
    });
    dk_test::require_law(counts, law_of(p));
    CHECK(rejected > 500);
}

TEST_CASE("the residual over a sparse p (sparse view and compacted set) follows its law",
          "[speculative][residual][statistical]") {
    const auto row = make_row(8);
    sampler ts({.top_p = 0.9f}, V), ds({.top_p = 0.9f}, V);
    const sparse_distribution ps = sparse_of(ts, row);
    const sparse_distribution q = sparse_of(ds, draft_row(row));
    std::vector<double> pl(V, 0.0);
    for (std::size_t i = 0; i < ps.size(); ++i) pl[std::size_t(ps.tokens[i])] = ps.probs[i];
    const auto want = residual_law(pl, q);
    verify_workspace ws(V);
    SECTION("sparse_dist_view p, q scattered") {
        const auto counts = rejected_tokens(100000, 10, [&](rng_key key) {
            const token_id x =
                detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
            return verify_rejection(ps, q, x, key, ws);
        });
        dk_test::require_law(counts, want);
    }
    SECTION("sparse_dist_view p, q on the same ids (elementwise)") {
        sparse_distribution qa;  // q read along p's ids
        for (std::size_t i = 0; i < ps.size(); ++i)
            qa.push(ps.tokens[i], float(detail::prob_of(q, ps.tokens[i])));
        const auto counts = rejected_tokens(100000, 11, [&](rng_key key) {
            return verify_rejection(ps, qa, ps.tokens[key.sequence % ps.size()], key, ws);
        });
        dk_test::require_law(counts, residual_law(pl, qa));
    }
    SECTION("a compacted weighted_set (top-k: not a cut)") {
        sampler tk({.top_k = 400}, V);
        sampling_workspace sws(V);
        const weighted_set p = processed_set(tk, row, {}, sws);
        REQUIRE_FALSE(p.is_cut);
        REQUIRE(p.kept == 400);
        const auto counts = rejected_tokens(100000, 12, [&](rng_key key) {
            const token_id x =
                detail::draw_sparse(q, make_stream(key, rng_purpose::draft).uniform());
            return verify_rejection(p, q, x, key, ws);
        });
        dk_test::require_law(counts, residual_law(law_of(p), q));
    }
}

TEST_CASE("the one-hot residual is p without x (cut and sparse p)",
          "[speculative][residual][statistical]") {
    // x = the row's head: p(x) ~ 0.01 (the proposals decide), or ~0.98 (head logit 14, top-p
    // 0.99: the proposals refuse 32 times on about half the rejections, the exact pass decides)
    for (const float head : {6.f, 14.f}) {
        auto row = make_row(9);
        row[V - 1] = head;
        sampler ts({.top_p = 0.99f}, V);
        sampling_workspace sws(V);
        const weighted_set p = processed_set(ts, row, {}, sws);
        REQUIRE(p.is_cut);
        const sparse_distribution ps = sparse_of(ts, row);
        auto want = law_of(p);
        const token_id x = token_id(V - 1);
        INFO("head " << head << " p(x) " << want[V - 1]);
        REQUIRE(want[V - 1] > 0.005);
        REQUIRE(want[V - 1] < 0.99);
        want[V - 1] = 0;
        double s = 0;
        for (double v : want) s += v;
        for (double& v : want) v /= s;
        const std::size_t n = head > 10.f ? 20000 : 100000;
        const auto cut_counts =
            rejected_tokens(n, 13, [&](rng_key key) { return verify_one_hot(p, x, key); });
        dk_test::require_law(cut_counts, want);
        const auto sparse_counts =
            rejected_tokens(n, 14, [&](rng_key key) { return verify_one_hot(ps, x, key); });
        dk_test::require_law(sparse_counts, want);
    }
}

TEST_CASE("a cut's block sums (one pass) equal the sums of its blocks' weights",
          "[speculative][residual]") {
    // tied cuts (a segment boundary inside a vector and inside a block) at two levels, and the
    // row's tail block (3000 = 5 * 512 + 440)
    auto row = make_row(17);
    for (float& v : row)
        if (std::isfinite(v)) v = std::floor(v * 4.f) / 4.f;
    for (const float top_p : {0.7f, 0.95f}) {
        sampler ts({.top_p = top_p}, V);
        sampling_workspace sws(V);
        const weighted_set p = processed_set(ts, row, {}, sws);
        REQUIRE(p.is_cut);
        INFO("top_p " << top_p << " lo_last " << p.cut.lo_last);
        dk_rows::each_arch([&](auto arch, const std::string& name) {
            using A = decltype(arch);
            INFO("arch " << name);
            kernels::block_sums bs;
            detail::cut_block_sums<A>(p, bs);
            const double* sums = bs.sums;
            CHECK(bs.n == V);
            CHECK(bs.count == (V + detail::spec_block - 1) / detail::spec_block);
            std::vector<float> out(detail::spec_block);
            double total = 0;
            for (std::size_t b = 0; b < V; b += detail::spec_block) {
                const std::size_t c = std::min(detail::spec_block, V - b);
                p.weights_into(b, c, out.data());
                double want = 0;
                for (std::size_t i = 0; i < c; ++i) want += out[i];
                CHECK(std::fabs(sums[b / detail::spec_block] - want) <= 1e-6 * want + 1e-30);
                total += sums[b / detail::spec_block];
            }
            CHECK(std::fabs(total - p.sum) <= 1e-6 * p.sum);
            CHECK(bs.total == total);  // finish(): the same additions in the same order
        });
    }
}

namespace {
/// The blocked draw as it was before its block sums were split from the draw (one function
/// building the sums into its own array, then the walk, per call): the split functions must give
/// its token for every uniform.
template <class Sum, class Fill>
std::size_t fused_blocked_draw(std::size_t n, Sum&& block_sum, Fill&& fill, double u,
                               double floor) {
    constexpr std::size_t blk = kernels::block_sums::block;
    std::vector<float> buf(blk);
    std::vector<double> sums;
    const std::size_t nb = (n + blk - 1) / blk;
    auto count = [&](std::size_t b) { return std::min(blk, n - b * blk); };
    double total = 0;
    std::size_t last_block = npos;
    for (std::size_t b = 0; b < nb; ++b) {
        const double s = block_sum(b * blk, count(b));
        sums.push_back(s);
        if (s > 0) last_block = b;
        total += s;
    }
    if (!(total > floor) || last_block == npos) return npos;
    const double target = u * total;
    double run = 0;
    std::size_t last = npos;
    for (std::size_t b = 0; b <= last_block; ++b) {
        const double s = sums[b];
        if (!(s > 0)) continue;
        if (run + s <= target && b != last_block) {
            run += s;
            continue;
        }
        fill(b * blk, count(b), buf.data());
        for (std::size_t j = 0; j < count(b); ++j) {
            if (!(buf[j] > 0.f)) continue;
            run += buf[j];
            last = b * blk + j;
            if (run > target) return last;
        }
    }
    return last;
}

/// Small integer weights (every partial sum exact in float and double): n entries, pattern 0
/// random in [0, 4], 1 the first 60 % zero (whole groups of blocks skipped), 2 one entry in 997,
/// 3 all zero.
std::vector<float> integer_weights(std::size_t n, int pattern, std::uint64_t seed) {
    std::vector<float> w(n);
    for (std::size_t i = 0; i < n; ++i) {
        w[i] = float(dk_rows::mix(seed) % 5);
        if (pattern == 1 && i < n * 3 / 5) w[i] = 0.f;
        if (pattern == 2) w[i] = i % 997 == 3 ? 1.f : 0.f;
        if (pattern == 3) w[i] = 0.f;
    }
    return w;
}
}  // namespace

TEST_CASE("block sums built once and drawn from give the fused blocked draw's token",
          "[speculative][residual]") {
    // kernels::sum_blocks + kernels::draw_block_sums (the proposals: one build, many draws) and
    // kernels::draw_blocked (the exact pass) against the fused draw above and, the sums being
    // exact, reference::draw_inverse_cdf; on every architecture (the block sums are kernels::sum
    // over the arch's lanes). Lengths around a block (512) and a group of 32 blocks (16384), and
    // several groups (79 and 137 blocks).
    std::size_t checked = 0;
    dk_rows::each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        for (const std::size_t n : {1u, 511u, 512u, 513u, 16383u, 16384u, 16385u, 40000u, 70000u}) {
            for (int pattern = 0; pattern < 4; ++pattern) {
                INFO("arch " << name << " n " << n << " pattern " << pattern);
                const auto w = integer_weights(n, pattern, n + std::uint64_t(pattern));
                auto block_sum = [&](std::size_t b, std::size_t c) noexcept {
                    return kernels::sum<A>(std::span<const float>(w.data() + b, c));
                };
                auto fill = [&](std::size_t b, std::size_t c, float* out) noexcept {
                    std::copy_n(w.data() + b, c, out);
                };
                kernels::block_sums s;
                kernels::sum_blocks(n, block_sum, s);
                REQUIRE(s.count == (n + 511) / 512);
                const double total = s.total;
                kernels::block_sums scratch;
                for (int j = 0; j <= 400; ++j) {
                    // a grid, and u on the cumulative sums' integers (targets on a boundary)
                    const double u = j < 200     ? (j + 0.5) / 200
                                     : total > 0 ? std::floor((j - 200) * total / 201) / total
                                                 : 0.0;
                    const std::size_t want = fused_blocked_draw(n, block_sum, fill, u, 0.0);
                    CHECK(kernels::draw_block_sums(s, fill, u) == want);
                    CHECK(kernels::draw_blocked(n, block_sum, fill, u, 0.0, scratch) == want);
                    CHECK(want == reference::draw_inverse_cdf(w, u));
                    ++checked;
                }
                CHECK(s.total == total);  // draws leave the sums as built
                CHECK((total > 0) == (kernels::draw_block_sums(s, fill, 0.5) != npos));
                CHECK((pattern == 3) <= (total == 0));  // (all zero: nothing to draw)
                // the floor: npos when the total is not above it
                CHECK(kernels::draw_blocked(n, block_sum, fill, 0.5, total, scratch) == npos);
            }
        }
    });
    CHECK(checked > 0);
}

TEST_CASE("the block-sum walk continues past a block whose sum overshot its weights",
          "[speculative][residual]") {
    // Weights all 1; the sum of one block is reported 0.75 too high (what float rounding does on
    // a smaller scale). A target inside that excess is not reached in the block: the scan goes
    // on into the next block, whose first entry is drawn. Hand-checked, also across a group
    // boundary (block 31 is the last of the first group of 32), and equal to the fused draw.
    for (const std::size_t over : {1u, 31u}) {
        const std::size_t n = 40 * 512;
        const std::vector<float> w(n, 1.f);
        auto block_sum = [&](std::size_t b, std::size_t c) noexcept {
            return double(c) + (b / 512 == over ? 0.75 : 0.0);
        };
        auto fill = [&](std::size_t b, std::size_t c, float* out) noexcept {
            std::copy_n(w.data() + b, c, out);
        };
        kernels::block_sums s;
        kernels::sum_blocks(n, block_sum, s);
        REQUIRE(s.total == double(n) + 0.75);
        const double edge = double((over + 1) * 512);  // the overshooting block's true end
        struct probe {
            double target;
            std::size_t want;
        };
        const probe probes[] = {
            {edge - 0.5, (over + 1) * 512 - 1},  // in the block: its last entry
            {edge + 0.5, (over + 1) * 512},      // in the excess: the next block's first entry
            {edge + 2.0, (over + 1) * 512 + 1},  // past the excess: the block is passed with
                                                 // its reported sum (run edge + 0.75), then
                                                 // the next block's second entry
            {20000.25, 19999},                   // a later group, past the excess
        };
        for (const probe& pr : probes) {
            const double u = pr.target / s.total;
            INFO("block " << over << " target " << pr.target << " u " << u);
            REQUIRE(std::fabs(u * s.total - pr.target) < 0.01);  // (0.25 from every boundary)
            CHECK(kernels::draw_block_sums(s, fill, u) == pr.want);
            CHECK(fused_blocked_draw(n, block_sum, fill, u, 0.0) == pr.want);
        }
    }
}

TEST_CASE("the blocked draw beyond the kept block sums (n > 524288) walks recomputed sums",
          "[speculative][residual]") {
    CHECK(kernels::block_sums::fits(512 * 1024));
    CHECK(!kernels::block_sums::fits(512 * 1024 + 1));
    const std::size_t n = 600000;
    const auto w = integer_weights(n, 0, 5);
    std::size_t calls = 0;
    auto block_sum = [&](std::size_t b, std::size_t c) noexcept {
        ++calls;
        return kernels::sum(std::span<const float>(w.data() + b, c));
    };
    auto fill = [&](std::size_t b, std::size_t c, float* out) noexcept {
        std::copy_n(w.data() + b, c, out);
    };
    kernels::block_sums scratch;
    for (const double u : {0.0, 0.1, 0.5, 0.9999}) {
        INFO("u " << u);
        CHECK(kernels::draw_blocked(n, block_sum, fill, u, 0.0, scratch) ==
              reference::draw_inverse_cdf(w, u));
        CHECK(fused_blocked_draw(n, block_sum, fill, u, 0.0) == reference::draw_inverse_cdf(w, u));
    }
    CHECK(calls > 4 * kernels::block_sums::blocks(n));  // (the total's pass, then the walk's)
}

TEST_CASE("block sums over more weights than fit are left empty and never written past",
          "[speculative][residual]") {
    // kernels::sum_blocks and block_sums::finish with n > 524288 (a public kernel called with a
    // wrong size): no block sum is asked for and nothing is written past sums[] (the struct sits
    // in a padded heap object, so a write past it would show in the padding, not the stack);
    // s is left empty and every draw from it gives npos. Then a fitting n builds as usual.
    struct padded {
        kernels::block_sums s;
        double pad[2048];
    };
    auto g = std::make_unique<padded>();
    std::fill(std::begin(g->pad), std::end(g->pad), -1.0);
    const std::size_t n = 512 * 1024 + 1;
    std::size_t calls = 0;
    auto block_sum = [&](std::size_t, std::size_t c) noexcept {
        ++calls;
        return double(c);
    };
    auto fill = [&](std::size_t, std::size_t c, float* out) noexcept { std::fill_n(out, c, 1.f); };
    CHECK(!kernels::sum_blocks(n, block_sum, g->s));
    CHECK(calls == 0);
    CHECK(g->s.n == 0);
    CHECK(g->s.count == 0);
    CHECK(g->s.total == 0);
    CHECK(kernels::draw_block_sums(g->s, fill, 0.5) == npos);
    CHECK(std::all_of(std::begin(g->pad), std::end(g->pad), [](double v) { return v == -1.0; }));
    // finish() with a size that does not fit: empty as well (it reads no sums past the array)
    g->s.finish(n);
    CHECK(g->s.count == 0);
    CHECK(kernels::draw_block_sums(g->s, fill, 0.5) == npos);
    // at the limit: built
    CHECK(kernels::sum_blocks(n - 1, block_sum, g->s));
    CHECK(calls == 1024);
    CHECK(g->s.total == double(n - 1));
    CHECK(kernels::draw_block_sums(g->s, fill, 0.5) == (n - 1) / 2);
    CHECK(std::all_of(std::begin(g->pad), std::end(g->pad), [](double v) { return v == -1.0; }));
}

TEST_CASE("a cut's proposals from its block sums give the fused draw's token",
          "[speculative][residual]") {
    // propose_residual's draws on a cut: cut_block_sums then draw_block_sums with the cut's
    // weights, against the fused draw over the same block sums, on every architecture.
    const auto row = make_row(23);
    sampler ts({.top_p = 0.9f}, V);
    sampling_workspace sws(V);
    const weighted_set p = processed_set(ts, row, {}, sws);
    REQUIRE(p.is_cut);
    auto fill = [&](std::size_t b, std::size_t c, float* out) noexcept {
        p.weights_into(b, c, out);
    };
    dk_rows::each_arch([&](auto arch, const std::string& name) {
        using A = decltype(arch);
        INFO("arch " << name);
        kernels::block_sums s;
        detail::cut_block_sums<A>(p, s);
        auto block_sum = [&](std::size_t b, std::size_t) noexcept { return s.sums[b / 512]; };
        std::size_t mismatches = 0, kept = 0;
        for (int j = 0; j < 1000; ++j) {
            const double u = (j + 0.5) / 1000;
            const std::size_t i = kernels::draw_block_sums(s, fill, u);
            mismatches += i != fused_blocked_draw(V, block_sum, fill, u, 0.0);
            kept += i < V && p.prob(token_id(i)) > 0;
        }
        CHECK(mismatches == 0);
        CHECK(kept == 1000);
    });
}
}  // namespace dk_t_speculative_residual
