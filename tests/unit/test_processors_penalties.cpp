// Repetition / frequency / presence penalties: the three engine scopes (HF, llama.cpp, vLLM) on
// a hand-checked row, bad ids, special values, workspace reset, and a randomized cross-check
// against a naive map-based reference.
#include "dk_test.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_processors_penalties {

using namespace decodekit;

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();

// |a - b| <= 1e-5 * max(1, |b|) (dk_test::Approx does not take scalars with Catch2 2.13).
bool close(float a, float b) { return std::abs(a - b) <= 1e-5f * std::max(1.f, std::abs(b)); }

bool all_zero(const penalty_workspace& ws) {
    for (auto c : ws.counts)
        if (c != 0) return false;
    return true;
}

// Naive reference: counts with a std::map over explicit windows.
std::vector<float> naive(std::vector<float> x, const std::vector<token_id>& h, std::size_t prompt,
                         const penalty_params& p) {
    auto window = [&](penalty_scope s) {
        std::vector<token_id> w;
        std::size_t begin = 0;
        if (s == penalty_scope::last_n) begin = h.size() > p.last_n ? h.size() - p.last_n : 0;
        if (s == penalty_scope::output_only) begin = prompt < h.size() ? prompt : h.size();
        for (std::size_t i = begin; i < h.size(); ++i) w.push_back(h[i]);
        return w;
    };
    const auto v = static_cast<token_id>(x.size());
    std::map<token_id, int> seen, count;
    for (token_id t : window(p.repetition_scope))
        if (t >= 0 && t < v) seen[t] = 1;
    for (token_id t : window(p.frequency_scope))
        if (t >= 0 && t < v) ++count[t];
    for (auto [t, one] : seen) {
        float& y = x[static_cast<std::size_t>(t)];
        y = y > 0 ? y / p.repetition : y * p.repetition;
    }
    for (auto [t, c] : count)
        x[static_cast<std::size_t>(t)] -= static_cast<float>(c) * p.frequency + p.presence;
    return x;
}

std::vector<float> run(std::vector<float> x, const std::vector<token_id>& h, std::size_t prompt,
                       const penalty_params& p) {
    penalty_workspace ws(x.size());
    apply_penalties(x, h, prompt, p, ws);
    CHECK(all_zero(ws));
    return x;
}

void check_row(const std::vector<float>& got, const std::vector<float>& want) {
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("token " << i);
        CHECK(close(got[i], want[i]));
    }
}

// Logits of the hand example: V = 8.
const std::vector<float> row = {0.5f, 1.0f, -1.0f, 2.0f, 0.0f, 3.0f, -2.0f, 4.0f};
// Prompt {1, 2, 2}, output {3, 3, 4}.
const std::vector<token_id> hist = {1, 2, 2, 3, 3, 4};
constexpr std::size_t prompt_len = 3;

}  // namespace

TEST_CASE("penalties: the three engine scopes on a hand-checked row", "[processors][penalties]") {
    penalty_params p{.repetition = 2.f, .frequency = 0.5f, .presence = 0.25f};

    SECTION("Hugging Face: whole history, prompt included") {
        // 1: 1/2 - (0.5+0.25); 2: -1*2 - (2*0.5+0.25); 3: 2/2 - 1.25; 4: 0*2 - 0.75
        check_row(run(row, hist, prompt_len, p),
                  {0.5f, -0.25f, -3.25f, -0.25f, -0.75f, 3.0f, -2.0f, 4.0f});
    }
    SECTION("llama.cpp: last_n = 2 tokens, i.e. {3, 4}") {
        p.repetition_scope = p.frequency_scope = penalty_scope::last_n;
        p.last_n = 2;
        check_row(run(row, hist, prompt_len, p),
                  {0.5f, 1.0f, -1.0f, 0.25f, -0.75f, 3.0f, -2.0f, 4.0f});
    }
    SECTION("vLLM: repetition over prompt+output, frequency/presence over output {3, 3, 4}") {
        p.frequency_scope = penalty_scope::output_only;
        check_row(run(row, hist, prompt_len, p),
                  {0.5f, 0.5f, -2.0f, -0.25f, -0.75f, 3.0f, -2.0f, 4.0f});
    }
    SECTION("output_only repetition: the prompt's tokens 1 and 2 untouched") {
        p = {.repetition = 2.f, .repetition_scope = penalty_scope::output_only};
        check_row(run(row, hist, prompt_len, p),
                  {0.5f, 1.0f, -1.0f, 1.0f, 0.0f, 3.0f, -2.0f, 4.0f});
    }
    SECTION("repetition is applied once per distinct token, whatever its count") {
        p = {.repetition = 3.f};
        const auto y = run(row, {2, 2, 2, 2}, 0, p);
        CHECK(y[2] == -3.f);  // not -81
    }
    SECTION("negative control: the scopes really differ") {
        penalty_params q = p;
        q.frequency_scope = penalty_scope::output_only;
        CHECK(run(row, hist, prompt_len, p) != run(row, hist, prompt_len, q));
    }
}

TEST_CASE("penalties: windows at their edges", "[processors][penalties]") {
    const penalty_params base{.repetition = 2.f, .frequency = 1.f};
    SECTION("empty history changes nothing") { CHECK(run(row, {}, 0, base) == row); }
    SECTION("last_n = 0 is an empty window") {
        penalty_params p = base;
        p.repetition_scope = p.frequency_scope = penalty_scope::last_n;
        p.last_n = 0;
        CHECK(run(row, hist, prompt_len, p) == row);
    }
    SECTION("last_n beyond the history is the whole history") {
        penalty_params p = base, q = base;
        p.repetition_scope = p.frequency_scope = penalty_scope::last_n;
        p.last_n = 1000;
        CHECK(run(row, hist, prompt_len, p) == run(row, hist, prompt_len, q));
    }
    SECTION("prompt_length beyond the history: output_only is empty") {
        penalty_params p = base;
        p.repetition_scope = p.frequency_scope = penalty_scope::output_only;
        CHECK(run(row, hist, 100, p) == row);
        CHECK(run(row, hist, hist.size(), p) == row);
    }
    SECTION("disabled params change nothing") {
        CHECK_FALSE(penalty_params{}.enabled());
        CHECK(run(row, hist, prompt_len, penalty_params{}) == row);
    }
}

TEST_CASE("penalties: ids outside [0, V) are ignored", "[processors][penalties]") {
    const penalty_params p{.repetition = 2.f, .frequency = 1.f, .presence = 1.f};
    const std::vector<token_id> bad = {
        -1, 8, 100, 3, std::numeric_limits<token_id>::max(), std::numeric_limits<token_id>::min()};
    std::vector<float> want = row;
    want[3] = 2.f / 2.f - 2.f;
    check_row(run(row, bad, 0, p), want);

    SECTION("a workspace larger than the row: ids in [V, workspace size) ignored too") {
        std::vector<float> x = row;
        penalty_workspace ws(16);
        apply_penalties(x, std::vector<token_id>{10, 15, 3}, 0, p, ws);
        check_row(x, want);
        CHECK(all_zero(ws));
    }
}

TEST_CASE("penalties: NaN, -inf and +inf logits are left as they are", "[processors][penalties]") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const penalty_params p{.repetition = 1.5f, .frequency = 2.f, .presence = -1.f};
    const auto y = run({nan, -inf, inf, 1.f}, {0, 1, 2, 3, 0, 1, 2, 3}, 0, p);
    CHECK(std::isnan(y[0]));
    CHECK(y[1] == -inf);
    CHECK(y[2] == inf);
    CHECK(close(y[3], 1.f / 1.5f - 2.f * 2.f + 1.f));
}

TEST_CASE("penalties: infinite logits stay infinite when count * frequency overflows",
          "[processors][penalties]") {
    // Found by fuzzing: count 2 * frequency -3.4e38 overflows to -inf, and -inf - (-inf) was NaN.
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const penalty_params p{.repetition = 7.4f, .frequency = -3.4e38f, .presence = -3.4e38f};
    const auto y = run({-inf, inf, nan, 1.f}, {0, 0, 1, 1, 2, 2, 3, 3}, 0, p);
    CHECK(y[0] == -inf);
    CHECK(y[1] == inf);
    CHECK(std::isnan(y[2]));
    CHECK(y[3] == inf);  // a finite logit whose reward overflows float: +inf, never NaN
    const penalty_params q{.frequency = 3.4e38f, .presence = 3.4e38f};
    const auto z = run({-inf, inf, 1.f}, {0, 0, 1, 1, 2, 2}, 0, q);
    CHECK(z[0] == -inf);
    CHECK(z[1] == inf);
    CHECK(z[2] == -inf);
}

TEST_CASE("penalties: the workspace reset makes repeated calls independent",
          "[processors][penalties]") {
    const penalty_params p{.repetition = 1.3f, .frequency = 0.4f, .presence = 0.2f};
    penalty_workspace ws(row.size());
    std::vector<float> a = row, b = row, c = row;
    apply_penalties(a, hist, prompt_len, p, ws);
    apply_penalties(b, std::vector<token_id>{7, 7, 7, 0}, 1, p, ws);
    CHECK(all_zero(ws));
    apply_penalties(c, hist, prompt_len, p, ws);  // same as the first call
    CHECK(a == c);
    CHECK(b == run(row, {7, 7, 7, 0}, 1, p));
}

TEST_CASE("penalties: random histories match a naive reference", "[processors][penalties]") {
    std::mt19937 gen(1234);
    std::uniform_real_distribution<float> logit(-5.f, 5.f);
    const penalty_scope scopes[] = {penalty_scope::whole_history, penalty_scope::last_n,
                                    penalty_scope::output_only};
    for (int trial = 0; trial < 300; ++trial) {
        const std::size_t v = 1 + gen() % 40;
        std::vector<float> x(v);
        for (auto& e : x) e = logit(gen);
        std::vector<token_id> h(gen() % 100);
        for (auto& t : h) t = static_cast<token_id>(gen() % (v + 4)) - 2;  // some out of range
        const penalty_params p{.repetition = 0.5f + static_cast<float>(gen() % 30) / 10.f,
                               .frequency = static_cast<float>(static_cast<int>(gen() % 5) - 2),
                               .presence = static_cast<float>(gen() % 3) * 0.5f,
                               .repetition_scope = scopes[gen() % 3],
                               .frequency_scope = scopes[gen() % 3],
                               .last_n = gen() % 70};
        const std::size_t prompt = gen() % 120;
        check_row(run(x, h, prompt, p), naive(x, h, prompt, p));
    }
}

TEST_CASE("penalty_params: check() names the field and range", "[processors][penalties]") {
    CHECK_FALSE(penalty_params{}.check());
    CHECK(penalty_params{.repetition = 1.2f, .frequency = -2.f, .presence = 2.f}.enabled());
    const auto r = penalty_params{.repetition = 0.f}.check();
    REQUIRE(r);
    CHECK(r->find("penalty_params.repetition") != std::string::npos);
    CHECK(r->find("> 0") != std::string::npos);
    CHECK(penalty_params{.repetition = inf}.check());
    CHECK(penalty_params{.repetition = -1.f}.check());
    CHECK(penalty_params{.frequency = std::nanf("")}.check()->find("frequency") !=
          std::string::npos);
    CHECK(penalty_params{.presence = -inf}.check()->find("presence") != std::string::npos);
    CHECK(penalty_params{.frequency_scope = static_cast<penalty_scope>(7)}.check());
    DK_IF_EXCEPTIONS(REQUIRE_THROWS_AS(penalty_params{.repetition = 0.f}.validate(), config_error);)
    DK_IF_EXCEPTIONS(REQUIRE_NOTHROW(penalty_params{.repetition = 1.1f}.validate());)
}

namespace {
/// The row a sparse pipeline hands on (caller's row + patches), as a dense row; checks the
/// workspace's bits: clear exactly at the patched ids during the call, all ones after it.
std::vector<float> sparse_stage_row(processor_pipeline& procs, const std::vector<float>& x,
                                    const sample_context& ctx, sampling_workspace& ws) {
    const processed_row pr = procs.run(x, ctx, ws);
    std::vector<float> y(pr.row.begin(), pr.row.end());
    std::vector<char> patched(x.size(), 0);
    for (std::size_t i = 0; i < pr.patches; ++i) {
        const auto t = std::size_t(ws.patches[i].id);
        REQUIRE(t < x.size());
        CHECK(patched[t] == 0);  // each id once
        patched[t] = 1;
        y[t] = ws.patches[i].logit;
    }
    for (std::size_t t = 0; t < x.size(); ++t)
        CHECK(((ws.unpatched[t / 32] >> (t % 32)) & 1u) == (patched[t] ? 0u : 1u));
    {
        const working_set w(pr.row, ws, pr.patches, pr.overlay);  // restores the bits
    }
    for (std::uint32_t word : ws.unpatched) CHECK(word == ~0u);
    for (std::uint32_t word : ws.seen) CHECK(word == 0u);
    return y;
}
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (std::bit_cast<std::uint32_t>(a[i]) != std::bit_cast<std::uint32_t>(b[i])) return false;
    return true;
}
}  // namespace

TEST_CASE(
    "penalties alone on the sparse path (patches straight from the counts) equal apply_penalties "
    "bit for bit, through appends, cut-backs and replaced histories",
    "[processors][penalties]") {
    // A row with NaN, +-inf, +-0 and both signs; histories with negative and out-of-range ids;
    // every penalty alone and together, in each scope (one set of counts: the direct path), and
    // vLLM's two scopes (two sets: the declared-ids path), both must equal the dense result.
    constexpr std::size_t v = 3000;
    std::mt19937_64 g(7);
    std::vector<float> x(v);
    for (float& e : x) e = float(std::normal_distribution<double>(0, 3)(g));
    x[1] = std::numeric_limits<float>::quiet_NaN();
    x[2] = inf;
    x[3] = -inf;
    x[4] = 0.f;
    x[5] = -0.f;
    std::vector<penalty_params> ps;
    for (const penalty_scope s :
         {penalty_scope::whole_history, penalty_scope::last_n, penalty_scope::output_only}) {
        ps.push_back({.repetition = 1.3f, .repetition_scope = s, .last_n = 40});
        ps.push_back({.frequency = 0.4f, .frequency_scope = s, .last_n = 40});
        ps.push_back({.presence = -0.7f, .frequency_scope = s, .last_n = 40});
        ps.push_back({.repetition = 0.8f,
                      .frequency = 0.25f,
                      .presence = 0.5f,
                      .repetition_scope = s,
                      .frequency_scope = s,
                      .last_n = 40});
    }
    ps.push_back({.repetition = 1.2f,
                  .frequency = 0.2f,
                  .presence = 0.2f,
                  .repetition_scope = penalty_scope::whole_history,
                  .frequency_scope = penalty_scope::output_only});
    std::vector<token_id> h;
    for (int i = 0; i < 1500; ++i) h.push_back(token_id(g() % 900));  // repeats: counts > 1
    for (const token_id t : {1, 2, 3, 4, 5, 1, 2, 3, 4, 5, -4, 3000, 3001, -1}) h.push_back(t);
    const std::size_t prompt = 700;
    for (const penalty_params& p : ps) {
        sampling_params sp{};
        sp.penalties = p;
        processor_pipeline procs(sp, /*sparse_first_step=*/true);
        REQUIRE(procs.sparse());
        sampling_workspace ws(v);
        ws.reserve_sparse();
        // the direct path never declares ids: ws.touched keeps a sentinel (the other path
        // writes the declared ids there)
        std::fill(ws.touched.begin(), ws.touched.end(), token_id(-7));
        penalty_workspace pw(v);
        // lengths: grow, grow by several, cut back (speculative rejection), regrow; then a
        // replaced history (the tracker rebuilds)
        std::vector<std::size_t> lengths = {prompt,       prompt + 1, prompt + 40,  prompt + 25,
                                            prompt + 300, h.size(),   h.size() - 3, h.size()};
        for (std::size_t step = 0; step < lengths.size(); ++step) {
            const std::span<const token_id> hist(h.data(), lengths[step]);
            const sample_context ctx{
                .sequence = 1, .step = step, .history = hist, .prompt_length = prompt};
            std::vector<float> want = x;
            apply_penalties(want, hist, prompt, p, pw);
            CHECK(same_bits(sparse_stage_row(procs, x, ctx, ws), want));
        }
        std::vector<token_id> other(h.rbegin(), h.rend());
        const sample_context ctx{
            .sequence = 1, .step = 9, .history = other, .prompt_length = prompt};
        std::vector<float> want = x;
        apply_penalties(want, other, prompt, p, pw);
        CHECK(same_bits(sparse_stage_row(procs, x, ctx, ws), want));
        const bool one_window = p.repetition == 1.f || (p.frequency == 0.f && p.presence == 0.f) ||
                                p.repetition_scope == p.frequency_scope;
        CHECK((ws.touched[0] == token_id(-7)) == one_window);
    }
}

TEST_CASE("penalties_processor::patch writes nothing without one set of counts",
          "[processors][penalties]") {
    const penalties_processor two({.repetition = 1.2f,
                                   .frequency = 0.2f,
                                   .repetition_scope = penalty_scope::whole_history,
                                   .frequency_scope = penalty_scope::output_only});
    CHECK_FALSE(two.patches_directly());
    penalties_processor q = two;
    const std::vector<token_id> h = {1, 2, 2};
    const std::vector<float> x = {1.f, 2.f, 3.f};
    std::vector<detail::scored> out(3, detail::scored{-1.f, -1});
    std::uint32_t marks = ~0u;
    CHECK(q.patch(x, {.history = h, .prompt_length = 1, .vocab_size = 3}, out.data(), &marks) == 0);
    CHECK(marks == ~0u);
    CHECK(out[0].id == -1);
    const penalties_processor one({.repetition = 1.2f, .frequency = 0.2f});
    CHECK(one.patches_directly());
}

namespace {
/// The ids of x by value, largest first (NaN last).
std::vector<token_id> ids_by_value(const std::vector<float>& x) {
    std::vector<token_id> by(x.size());
    std::iota(by.begin(), by.end(), token_id(0));
    const auto key = [&](token_id t) {
        const float v = x[std::size_t(t)];
        return std::isnan(v) ? -inf : v;
    };
    std::stable_sort(by.begin(), by.end(), [&](token_id a, token_id b) { return key(a) > key(b); });
    return by;
}
}  // namespace

TEST_CASE("penalties that only lower, deferred to the first step, equal the dense path",
          "[processors][penalties][sampling]") {
    // (top-k with both tie policies, greedy, min-p, the llama.cpp chain; masks, special values,
    // every kind of history change)
    // The sparse path with lowering penalties selects k + max(k, 16) entries of the caller's row
    // and penalises only those; it must give the dense path's sets and probabilities (a sampler
    // with an allowed set of every id copies the row) whatever the history holds: none of the
    // best entries, the k-th one, the best 30, or the best 400 (more than the selection: the
    // written-patches fallback), with ties at the k-th value (logits on a 0.25 grid), NaN, +-inf
    // entries, raising penalties (never deferred), and frequencies that overflow to -inf.
    constexpr std::size_t v = 50000;
    std::mt19937_64 g(4242);
    std::vector<float> base(v);
    for (float& e : base) e = float(std::round(std::normal_distribution<double>(0, 2)(g) * 4) / 4);
    base[17] = std::numeric_limits<float>::quiet_NaN();
    base[18] = -inf;
    std::vector<float> with_inf = base;
    with_inf[20] = inf;
    with_inf[21] = inf;
    const std::vector<float>* rows[] = {&base, &with_inf};

    std::vector<penalty_params> pens = {
        {.repetition = 1.5f, .frequency = 0.3f},
        {.repetition = 1.1f,
         .frequency = 0.1f,
         .repetition_scope = penalty_scope::last_n,
         .frequency_scope = penalty_scope::last_n,
         .last_n = 64},
        {.presence = 2.f, .frequency_scope = penalty_scope::output_only},
        {.frequency = 1e38f},                      // count * frequency overflows: -inf
        {.repetition = 0.8f},                      // raises negative logits: not deferred
        {.repetition = 1.2f, .frequency = -0.3f},  // a negative frequency: not deferred
    };
    std::vector<sampling_params> steps;
    for (const int k : {1, 40, 300})
        for (const tie_policy t : {tie_policy::exactly_k, tie_policy::keep_ties})
            steps.push_back({.temperature = 0.9f, .top_k = k, .top_k_ties = t});
    steps.push_back({.temperature = 0.f});
    steps.push_back({.min_p = 0.02f, .min_keep = 50});
    steps.push_back({.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f});

    std::vector<std::uint32_t> mask(kernels::bitmask_words(v), 0u);
    for (std::size_t i = 0; i < v; ++i)
        if (g() % 10 != 0) mask[i / 32] |= 1u << (i % 32);
    sampling_workspace ws_a, ws_b;
    std::size_t checked = 0;
    for (const auto* r : rows) {
        const std::vector<float>& x = *r;
        const std::vector<token_id> by = ids_by_value(x);
        // histories: random ids only; the 40th best; the best 30; the best 400; each followed by
        // 2 000 random ids (repeats: counts > 1)
        std::vector<std::vector<token_id>> heads = {
            {},
            {by[39]},
            std::vector<token_id>(by.begin(), by.begin() + 30),
            std::vector<token_id>(by.begin(), by.begin() + 400)};
        for (const auto& head : heads) {
            std::vector<token_id> h = head;
            for (int i = 0; i < 2000; ++i) h.push_back(token_id(g() % v));
            for (const penalty_params& pen : pens) {
                for (sampling_params p : steps) {
                    p.penalties = pen;
                    sampling_params dense = p;
                    dense.allowed_tokens.resize(v);
                    std::iota(dense.allowed_tokens.begin(), dense.allowed_tokens.end(),
                              token_id(0));
                    sampler a(p, v), b(dense, v);
                    // lengths: whole, +0 (same call again), cut back by 5, regrow, then the
                    // history reversed (a rebuild)
                    const std::vector<std::size_t> lengths = {h.size() - 10, h.size() - 10,
                                                              h.size() - 15, h.size()};
                    std::vector<token_id> reversed(h.rbegin(), h.rend());
                    for (std::size_t call = 0; call <= lengths.size(); ++call) {
                        const bool rev = call == lengths.size();
                        const std::span<const token_id> hs =
                            rev ? std::span<const token_id>(reversed)
                                : std::span<const token_id>(h.data(), lengths[call]);
                        sample_context ctx{
                            .sequence = 5, .step = call, .history = hs, .prompt_length = 100};
                        if (call % 2 == 1) ctx.mask = {.words = mask, .size = v};
                        INFO("inf row " << (r == &with_inf) << " head " << head.size() << " rep "
                                        << pen.repetition << " freq " << pen.frequency << " k "
                                        << p.top_k << " ties " << int(p.top_k_ties) << " T "
                                        << p.temperature << " min_p " << p.min_p << " call "
                                        << call);
                        const auto da = a.distribution(x, ctx, ws_a);
                        const std::vector<token_id> ta(da.tokens.begin(), da.tokens.end());
                        const std::vector<float> pa(da.probs.begin(), da.probs.end());
                        const auto db = b.distribution(x, ctx, ws_b);
                        REQUIRE(ta == std::vector<token_id>(db.tokens.begin(), db.tokens.end()));
                        for (std::size_t i = 0; i < pa.size(); ++i)
                            REQUIRE(std::fabs(pa[i] - db.probs[i]) <= 1e-6f);
                        const auto ra = a.sample(x, ctx, ws_a), rb = b.sample(x, ctx, ws_b);
                        CHECK(ra.status == rb.status);
                        CHECK(ra.token == rb.token);
                        CHECK(std::all_of(ws_a.unpatched.begin(), ws_a.unpatched.end(),
                                          [](std::uint32_t w) { return w == ~0u; }));
                        ++checked;
                    }
                }
            }
        }
    }
    CHECK(checked == 2 * 4 * pens.size() * steps.size() * 5);
}

namespace {
/// A lowering stage for working_set tests: subtracts `drop` from the listed ids, counting how
/// often its values are asked for and its patches written.
struct fake_lowering {
    std::vector<char> hit;
    float drop = 0;
    std::size_t lookups = 0, writes = 0;

    detail::deferred_patches hook() {
        return {.owner = this,
                .values =
                    [](void* o, const token_id* ids, float* lg, std::size_t n) noexcept {
                        auto& f = *static_cast<fake_lowering*>(o);
                        f.lookups += n;
                        for (std::size_t i = 0; i < n; ++i)
                            if (f.hit[std::size_t(ids[i])]) lg[i] -= f.drop;
                    },
                .write =
                    [](void* o, std::span<const float> x, detail::scored* out,
                       std::uint32_t* marks) noexcept {
                        auto& f = *static_cast<fake_lowering*>(o);
                        ++f.writes;
                        std::size_t m = 0;
                        for (std::size_t t = 0; t < x.size(); ++t)
                            if (f.hit[t]) {
                                out[m++] = {x[t] - f.drop, token_id(t)};
                                marks[t / 32] &= ~(1u << (t % 32));
                            }
                        return m;
                    }};
    }
};
}  // namespace

TEST_CASE("deferred patches: none written while the selection decides",
          "[processors][penalties][sampling]") {
    // ... and written when too many of the best entries are lowered
    constexpr std::size_t v = 20000;
    std::mt19937_64 g(99);
    std::vector<float> x(v);
    for (float& e : x) e = float(std::normal_distribution<double>(0, 2)(g));
    const std::vector<token_id> by = ids_by_value(x);
    sampling_workspace ws(v);
    ws.reserve_sparse();
    const auto top_k_of = [&](fake_lowering& f, std::size_t k) {
        std::vector<float> y = x;  // the processed row
        for (std::size_t t = 0; t < v; ++t)
            if (f.hit[t]) y[t] -= f.drop;
        candidates want(v);
        kernels::top_k(y, k, tie_policy::exactly_k, want);
        working_set w(x, ws, 0, false, f.hook());
        CHECK(w.overlaid());
        w.overlay_top_k(k, tie_policy::exactly_k);
        const candidates& got = w.kept();
        CHECK(std::vector<token_id>(got.ids().begin(), got.ids().end()) ==
              std::vector<token_id>(want.ids().begin(), want.ids().end()));
        CHECK(std::vector<float>(got.logits().begin(), got.logits().end()) ==
              std::vector<float>(want.logits().begin(), want.logits().end()));
    };
    fake_lowering f{.hit = std::vector<char>(v, 0), .drop = 3.f};
    for (std::size_t i = 1000; i < 3000; ++i) f.hit[std::size_t(by[i])] = 1;  // none of the best
    f.hit[std::size_t(by[5])] = 1;                                            // and the 6th
    top_k_of(f, 40);
    CHECK(f.writes == 0);
    CHECK(f.lookups == 80);  // k + max(k, 16) values asked for, not 2 001
    for (std::size_t i = 0; i < 60; ++i) f.hit[std::size_t(by[i])] = 1;  // 60 of the best 80
    top_k_of(f, 40);
    CHECK(f.writes == 1);  // fewer than 40 stay above the selection's lowest: patches written
    for (std::uint32_t w : ws.unpatched) CHECK(w == ~0u);
}

TEST_CASE("deferred penalty patches back off while the selection cannot decide without them",
          "[processors][penalties][sampling]") {
    // A history holding the 400 best entries: every deferral has to write its patches (a
    // miss); after the b-th miss in a row the next 2^b - 1 calls write them directly (b <= 6).
    // A history without the best entries: a deferral decides alone, and ends the back-off.
    constexpr std::size_t v = 5000;
    std::mt19937_64 g(5);
    std::vector<float> x(v);
    for (float& e : x) e = float(std::normal_distribution<double>(0, 2)(g));
    const std::vector<token_id> by = ids_by_value(x);
    const std::vector<token_id> hits(by.begin(), by.begin() + 400);
    const std::vector<token_id> misses(by.end() - 400, by.end());
    sampling_params p{.top_k = 40};
    p.penalties = {.repetition = 1.3f, .frequency = 2.f};
    processor_pipeline procs(p, /*sparse_first_step=*/true);
    sampling_workspace ws(v);
    std::string pattern;
    const auto call = [&](const std::vector<token_id>& h) {
        const processed_row pr =
            procs.run(x, {.sequence = 1, .history = h, .prompt_length = 0}, ws, /*defer=*/true);
        working_set w(pr.row, ws, pr.patches, pr.overlay, pr.deferred);
        REQUIRE(w.overlaid());
        w.overlay_top_k(40, tie_policy::exactly_k);
        pattern += pr.deferred ? (w.deferred() ? 'd' : 'm') : 'w';  // decided, missed, written
    };
    for (int i = 0; i < 16; ++i) call(hits);
    CHECK(pattern == "mwmwwwmwwwwwwwmw");
    pattern.clear();
    for (int i = 0; i < 20; ++i) call(misses);  // 14 more written, then deferrals that decide
    CHECK(pattern == "wwwwwwwwwwwwwwdddddd");
    pattern.clear();
    for (int i = 0; i < 4; ++i) call(hits);  // the back-off starts again from one call
    CHECK(pattern == "mwmw");
    for (std::uint32_t w : ws.unpatched) CHECK(w == ~0u);
}
}  // namespace dk_t_processors_penalties
