// Thread safety (docs/thread-safety.md): the batched sampler on 2 threads, concurrent calls into
// one pool, kernels sharing a const row (each thread its own candidates), distinct samplers sharing
// const params and logits, RNG streams as values. The tsan preset runs this file (its name
// matches "thread") under ThreadSanitizer; every case also checks results against a serial run,
// so it can fail without TSan too.
#include "dk_test.hpp"

#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_thread_safety {

using namespace decodekit;

namespace {

constexpr std::size_t V = 2000;

std::vector<float> make_rows(std::size_t rows, std::uint64_t seed) {
    std::vector<float> m(rows * V);
    rng_stream r = make_stream({seed, 0, 0}, rng_purpose::sample);
    for (float& v : m) v = 8.f * r.uniform_float() - 4.f;
    return m;
}

sampling_params params_of(std::size_t i) {
    switch (i % 5) {
        case 0:
            return {.seed = i};
        case 1:
            return {.temperature = 0.7f, .top_k = 40, .seed = i};
        case 2:
            return {.top_p = 0.9f, .min_p = 0.05f, .seed = i, .order = sampling_order::hf};
        case 3:
            return {
                .temperature = 0.f, .penalties = {.repetition = 1.3f}, .dry = {.multiplier = 0.8f}};
        default:
            return {.temperature = 0.9f, .typical_p = 0.8f, .seed = i};
    }
}

struct batch {
    std::vector<float> logits;
    std::vector<std::vector<token_id>> histories;
    std::vector<std::unique_ptr<sampler>> samplers;
    std::vector<batch_row> rows;
    std::vector<sample_result> out;

    batch(std::size_t n, std::uint64_t seed) : logits(make_rows(n, seed)), histories(n), out(n) {
        for (std::size_t i = 0; i < n; ++i) {
            for (std::size_t j = 0; j < 64; ++j)
                histories[i].push_back(token_id((i * 31 + j * 7) % V));
            samplers.push_back(std::make_unique<sampler>(params_of(i), V));
        }
        for (std::size_t i = 0; i < n; ++i)
            rows.push_back({samplers[i].get(),
                            {.sequence = seed * 1000 + i, .step = i, .history = histories[i]}});
    }
    logits_matrix matrix() const { return {logits.data(), rows.size(), V, V}; }
    std::vector<token_id> tokens() const {
        std::vector<token_id> t;
        for (const auto& r : out) t.push_back(r.token);
        return t;
    }
};

}  // namespace

TEST_CASE("thread safety: batched sampling on 2 threads equals the serial run", "[thread][batch]") {
    batch serial(64, 1), pooled(64, 1);
    sample_batch(serial.matrix(), serial.rows, serial.out);
    batch_sampler pool(2);
    REQUIRE(pool.threads() == 2);
    for (int round = 0; round < 20; ++round) {  // the pool is reused: no thread per call
        pool.sample(pooled.matrix(), pooled.rows, pooled.out);
        REQUIRE(pooled.tokens() == serial.tokens());
        for (std::size_t i = 0; i < pooled.out.size(); ++i) REQUIRE(pooled.out[i].ok());
    }
    // Negative control: a different step changes some tokens (the check can fail).
    for (auto& r : pooled.rows) r.ctx.step += 1;
    pool.sample(pooled.matrix(), pooled.rows, pooled.out);
    CHECK(pooled.tokens() != serial.tokens());
}

TEST_CASE("thread safety: two threads calling one batch_sampler are serialised",
          "[thread][batch]") {
    batch a_serial(32, 2), b_serial(32, 3), a(32, 2), b(32, 3);
    sample_batch(a_serial.matrix(), a_serial.rows, a_serial.out);
    sample_batch(b_serial.matrix(), b_serial.rows, b_serial.out);
    batch_sampler pool(2);
    for (int round = 0; round < 10; ++round) {
        std::thread t1([&] { pool.sample(a.matrix(), a.rows, a.out); });
        std::thread t2([&] { pool.sample(b.matrix(), b.rows, b.out); });
        t1.join();
        t2.join();
        REQUIRE(a.tokens() == a_serial.tokens());
        REQUIRE(b.tokens() == b_serial.tokens());
    }
}

TEST_CASE("thread safety: distinct samplers share const params and const logits", "[thread]") {
    const std::vector<float> logits = make_rows(1, 4);
    const sampling_params shared{.temperature = 0.8f, .top_k = 50, .top_p = 0.95f, .seed = 9};
    std::vector<token_id> want(200);
    {
        sampler s(shared, V);
        for (std::size_t i = 0; i < want.size(); ++i) want[i] = s.sample(logits, 7, i).token;
    }
    std::vector<token_id> got1(200), got2(200);
    auto work = [&](std::vector<token_id>& got) {
        sampler s(shared, V);  // one sampler per thread
        for (std::size_t i = 0; i < got.size(); ++i) got[i] = s.sample(logits, 7, i).token;
    };
    std::thread t1(work, std::ref(got1)), t2(work, std::ref(got2));
    t1.join();
    t2.join();
    CHECK(got1 == want);
    CHECK(got2 == want);
}

TEST_CASE("thread safety: kernels are pure (caller-owned scratch), RNG streams are values",
          "[thread]") {
    const std::vector<float> row = make_rows(1, 5);
    candidates ref(V);
    kernels::top_k(row, 300, tie_policy::keep_ties, ref);
    const std::vector<token_id> want(ref.ids().begin(), ref.ids().end());
    const rng_stream base = make_stream({1, 2, 3}, rng_purpose::sample);
    rng_stream copy_for_check = base;
    const double u0 = copy_for_check.uniform();
    auto work = [&](bool& ok) {
        ok = true;
        candidates c(V);
        for (int i = 0; i < 50; ++i) {
            kernels::top_k(row, 300, tie_policy::keep_ties, c);
            ok = ok && std::vector<token_id>(c.ids().begin(), c.ids().end()) == want;
            ok = ok && kernels::argmax(row) == std::size_t(want[0]);
            rng_stream mine = base;  // a copy: the saved state
            ok = ok && mine.uniform() == u0;
        }
    };
    bool ok1 = false, ok2 = false;
    std::thread t1(work, std::ref(ok1)), t2(work, std::ref(ok2));
    t1.join();
    t2.join();
    CHECK(ok1);
    CHECK(ok2);
}
}  // namespace dk_t_thread_safety
