// Batch invariance and thread invariance: the token of a row depends only on (seed, sequence,
// step, logits, params), never on the batch composition, the row order or the thread count.
#include "dk_test.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_sampling_batch {

using namespace decodekit;

namespace {

constexpr std::size_t V = 3000;
constexpr std::size_t R = 24;

std::vector<float> matrix(std::size_t stride) {
    std::vector<float> m(R * stride, 123.f);  // padding beyond V must never be read
    std::mt19937 g(7);
    std::normal_distribution<float> n(0.f, 2.f);
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t i = 0; i < V; ++i) m[r * stride + i] = n(g);
    return m;
}

sampling_params params_for(std::size_t r) {
    switch (r % 6) {
        case 0:
            return {.temperature = 0.f};
        case 1:
            return {.temperature = 1.f, .seed = 3};
        case 2:
            return {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .seed = 4};
        case 3:
            return {.temperature = 0.7f, .top_p = 0.9f, .seed = 5, .order = sampling_order::hf};
        case 4:
            return {.temperature = 1.2f, .min_p = 0.1f, .seed = 6, .order = sampling_order::vllm};
        default:
            return {.temperature = 1.f,
                    .mirostat = true,
                    .seed = 7,
                    .penalties = {.repetition = 1.3f, .frequency = 0.2f}};
    }
}

std::vector<token_id> history = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};

std::vector<token_id> run(const std::vector<float>& m, std::size_t stride, std::size_t threads,
                          const std::vector<std::size_t>& order, std::uint64_t step) {
    std::vector<std::unique_ptr<sampler>> samplers;
    for (std::size_t r = 0; r < R; ++r)
        samplers.push_back(std::make_unique<sampler>(params_for(r), V));
    // batch row j holds original row order[j]
    std::vector<float> permuted(R * stride);
    std::vector<batch_row> rows(R);
    for (std::size_t j = 0; j < R; ++j) {
        std::copy_n(m.begin() + std::ptrdiff_t(order[j] * stride), stride,
                    permuted.begin() + std::ptrdiff_t(j * stride));
        rows[j] = {
            samplers[order[j]].get(),
            {.sequence = 1000 + order[j], .step = step, .history = history, .prompt_length = 4}};
    }
    std::vector<sample_result> out(R);
    batch_sampler pool(threads);
    pool.sample({permuted.data(), R, V, stride}, rows, out);
    std::vector<token_id> tokens(R);
    for (std::size_t j = 0; j < R; ++j) {
        REQUIRE(out[j].ok());
        tokens[order[j]] = out[j].token;
    }
    return tokens;
}

}  // namespace

TEST_CASE("batched results equal row-by-row sampling, for any row order and thread count",
          "[sampling][batch]") {
    const std::size_t stride = V + 5;
    const auto m = matrix(stride);
    std::vector<std::size_t> identity(R);
    std::iota(identity.begin(), identity.end(), std::size_t{0});
    for (std::uint64_t step = 0; step < 4; ++step) {
        // reference: each row alone with a fresh sampler
        std::vector<token_id> alone(R);
        for (std::size_t r = 0; r < R; ++r) {
            sampler s(params_for(r), V);
            alone[r] =
                s.sample(
                     std::span<const float>(m.data() + r * stride, V),
                     {.sequence = 1000 + r, .step = step, .history = history, .prompt_length = 4})
                    .token;
        }
        CHECK(run(m, stride, 1, identity, step) == alone);
        CHECK(run(m, stride, 2, identity, step) == alone);
        std::vector<std::size_t> shuffled = identity;
        std::shuffle(shuffled.begin(), shuffled.end(), std::mt19937(unsigned(step) + 1));
        CHECK(run(m, stride, 2, shuffled, step) == alone);
        CHECK(run(m, stride, 3, shuffled, step) == alone);
    }
    // negative control: changing the sequence ids changes some tokens
    std::vector<token_id> other(R);
    for (std::size_t r = 0; r < R; ++r) {
        sampler s(params_for(r), V);
        other[r] = s.sample(std::span<const float>(m.data() + r * stride, V), 5000 + r, 0).token;
    }
    CHECK(other != run(m, stride, 1, identity, 0));
}

TEST_CASE("sample_batch with a caller executor and serially agree with the pool",
          "[sampling][batch]") {
    const std::size_t stride = V;
    const auto m = matrix(stride);
    std::vector<std::unique_ptr<sampler>> a, b;
    std::vector<batch_row> ra(R), rb(R);
    for (std::size_t r = 0; r < R; ++r) {
        a.push_back(std::make_unique<sampler>(params_for(r), V));
        b.push_back(std::make_unique<sampler>(params_for(r), V));
        ra[r] = {a[r].get(), {.sequence = r, .step = 9}};
        rb[r] = {b[r].get(), {.sequence = r, .step = 9}};
    }
    std::vector<sample_result> oa(R), ob(R);
    sample_batch({m.data(), R, V, 0}, ra, oa);
    std::atomic<std::size_t> calls{0};
    auto reverse_exec = [&](std::size_t n, auto&& fn) {
        for (std::size_t i = n; i-- > 0;) {
            fn(i);
            ++calls;
        }
    };
    sample_batch({m.data(), R, V, 0}, rb, ob, reverse_exec);
    CHECK(calls == R);
    for (std::size_t r = 0; r < R; ++r) CHECK(oa[r].token == ob[r].token);
}

TEST_CASE("the pool is reusable across many calls", "[sampling][batch]") {
    batch_sampler pool(2);
    CHECK(pool.threads() == 2);
    std::vector<std::atomic<int>> hits(100);
    for (int call = 0; call < 200; ++call)
        pool.parallel_for(100, [&](std::size_t i) { ++hits[i]; });
    for (auto& h : hits) CHECK(h == 200);
}

TEST_CASE("stress: many small back-to-back calls with varying n", "[sampling][batch][thread]") {
    // Each call's job lives on this stack frame and dies when the call returns: a worker that
    // ran an item of an old call, claimed an item of the next call with the old job, or ran an
    // item twice / not at all would be caught by the checks (and by TSan/ASan as a race or a
    // dangling access).
    // idle_spin 0: every worker sleeps between calls (the wake-up path); 3 us: workers poll and
    // sometimes sleep (both paths mixed); the default: they poll.
    struct config {
        std::size_t threads;
        std::chrono::microseconds spin;
    };
    for (const config c :
         {config{2, std::chrono::microseconds(0)}, config{2, batch_sampler::default_idle_spin},
          config{3, std::chrono::microseconds(3)}, config{3, batch_sampler::default_idle_spin},
          config{4, std::chrono::microseconds(0)}, config{4, batch_sampler::default_idle_spin}}) {
        // 4: oversubscribed, workers often wake late
        const std::size_t threads = c.threads;
        INFO("threads " << threads << " idle_spin " << c.spin.count() << " us");
        batch_sampler pool(threads, c.spin);
        std::mt19937 g{unsigned(threads)};
        std::size_t bad = 0;
        std::atomic<std::size_t> out_of_range{0};  // Catch2 assertions are not thread-safe
        for (int call = 0; call < 50000; ++call) {
            const std::size_t n = 1 + g() % 7;  // often fewer items than threads
            const std::uint32_t tag = std::uint32_t(call) * 2654435761u;
            std::vector<std::uint32_t> out(n, 0);
            std::vector<std::atomic<int>> hits(n);
            pool.parallel_for(n, [&out, &hits, &out_of_range, tag, n](std::size_t i) {
                if (i >= n) {  // never an index of another call
                    ++out_of_range;
                    return;
                }
                out[i] = tag + std::uint32_t(i);
                ++hits[i];
            });
            for (std::size_t i = 0; i < n; ++i)
                bad += out[i] != tag + std::uint32_t(i) || hits[i].load() != 1;
        }
        CHECK(bad == 0);
        CHECK(out_of_range == 0);
    }
}

TEST_CASE("stress: back-to-back batched sampling of small batches", "[sampling][batch][thread]") {
    constexpr std::size_t v = 64;
    std::mt19937 g(11);
    std::normal_distribution<float> nd(0.f, 2.f);
    std::vector<float> m(8 * v);
    for (float& x : m) x = nd(g);
    std::vector<std::unique_ptr<sampler>> samplers;
    for (std::size_t r = 0; r < 8; ++r)
        samplers.push_back(std::make_unique<sampler>(sampling_params{.seed = 42}, v));
    // expected tokens for (row r, step) computed alone
    auto alone = [&](std::size_t r, std::uint64_t step) {
        sampler s(sampling_params{.seed = 42}, v);
        return s.sample(std::span<const float>(m.data() + r * v, v), r, step).token;
    };
    batch_sampler pool(3);
    std::size_t bad = 0;
    for (std::uint64_t step = 0; step < 2000; ++step) {
        const std::size_t n = 1 + step % 8;
        std::vector<batch_row> rows(n);
        for (std::size_t r = 0; r < n; ++r)
            rows[r] = {samplers[r].get(), {.sequence = r, .step = step}};
        std::vector<sample_result> out(n);
        pool.sample({m.data(), n, v, 0}, rows, out);
        if (step % 97 == 0)
            for (std::size_t r = 0; r < n; ++r) bad += out[r].token != alone(r, step);
        for (std::size_t r = 0; r < n; ++r) bad += !out[r].ok();
    }
    CHECK(bad == 0);
}
}  // namespace dk_t_sampling_batch
