// What a request's sampler costs in memory: construction is O(params) (no O(vocabulary)
// allocation), re-arming reuses the sampler's storage, and sampling allocates nothing once the
// thread's workspace is warm. Allocations are counted by replacing the global operator new in
// this test executable (bytes and calls, not time).
#include "dk_test.hpp"

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <random>
#include <vector>

namespace {
std::atomic<std::size_t> g_bytes{0}, g_calls{0};
std::atomic<std::ptrdiff_t> g_live{0};  // bytes allocated and not yet freed
}  // namespace

// Every replaceable non-aligned form is replaced, so a pointer never meets a deallocation of
// another family (AddressSanitizer checks alloc-dealloc pairs; Catch2 uses the nothrow form).
// GCC cannot see that the replaced operators pair malloc with free.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
// Each block starts with a header holding its size (16 bytes keep malloc's alignment), so a
// deallocation knows what it frees (g_live).
constexpr std::size_t header = 16;
void* counted_alloc(std::size_t n) noexcept {
    g_bytes += n;
    ++g_calls;
    auto* p = static_cast<unsigned char*>(std::malloc(n + header));
    if (!p) return nullptr;
    *reinterpret_cast<std::size_t*>(p) = n;
    g_live += std::ptrdiff_t(n);
    return p + header;
}
void counted_free(void* q) noexcept {
    if (!q) return;
    // through an integer: g++ 12 -O2 otherwise reads `q - header` as out of the bounds of the
    // object being deleted (-Warray-bounds) once operator delete is inlined at a call site
    auto* p = reinterpret_cast<unsigned char*>(reinterpret_cast<std::uintptr_t>(q) - header);
    g_live -= std::ptrdiff_t(*reinterpret_cast<std::size_t*>(p));
    std::free(p);
}
}  // namespace
void* operator new(std::size_t n) {
    if (void* p = counted_alloc(n)) return p;
#if defined(__cpp_exceptions)
    throw std::bad_alloc();
#else
    std::abort();
#endif
}
void* operator new[](std::size_t n) {
    if (void* p = counted_alloc(n)) return p;
#if defined(__cpp_exceptions)
    throw std::bad_alloc();
#else
    std::abort();
#endif
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n); }
void operator delete(void* p) noexcept { counted_free(p); }
void operator delete[](void* p) noexcept { counted_free(p); }
void operator delete(void* p, std::size_t) noexcept { counted_free(p); }
void operator delete[](void* p, std::size_t) noexcept { counted_free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { counted_free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { counted_free(p); }

using namespace decodekit;

namespace {
struct counter {
    std::size_t bytes0 = g_bytes, calls0 = g_calls;
    std::ptrdiff_t live0 = g_live;
    std::size_t bytes() const { return g_bytes - bytes0; }
    std::size_t calls() const { return g_calls - calls0; }
    /// Bytes allocated since construction and still held.
    std::ptrdiff_t held() const { return g_live - live0; }
};
std::vector<float> row(std::size_t v, unsigned seed) {
    std::mt19937 g(seed);
    std::normal_distribution<float> nd(0.f, 2.f);
    std::vector<float> x(v);
    for (float& f : x) f = nd(g);
    return x;
}
}  // namespace

TEST_CASE("a sampler costs O(params), not O(vocabulary)", "[sampling][memory]") {
    const std::size_t V = 1'000'000;
    for (const sampling_params& p :
         {sampling_params{}, sampling_params{.temperature = 0.f},
          sampling_params{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f},
          sampling_params{.typical_p = 0.9f, .xtc_probability = 0.5f},
          sampling_params{.penalties = {.repetition = 1.1f}, .logprobs = {.top_n = 5}}}) {
        const counter c;
        sampler s(p, V);
        INFO("bytes " << c.bytes());
        CHECK(c.bytes() <= 4096);  // params copy and logprob storage only
        CHECK(sizeof(sampler) <= 1024);
    }
}

TEST_CASE("sampling allocates nothing once the workspace is warm; rearm reuses storage",
          "[sampling][memory]") {
    const std::size_t V = 32000;
    const auto x = row(V, 3);
    const std::vector<sampling_params> ps = {
        {.temperature = 0.f},
        {.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f},
        {.temperature = 1.5f, .top_p = 0.99f, .order = sampling_order::hf},
        {.temperature = 1.f, .logprobs = {.chosen = false}},
        {.typical_p = 0.9f},
        {.epsilon = 3e-4f},
        {.xtc_probability = 1.f, .xtc_threshold = 0.01f},
        {.top_k = 40, .penalties = {.repetition = 1.2f}, .logprobs = {.raw = true, .top_n = 3}},
    };
    for (std::size_t k = 0; k < ps.size(); ++k) {
        INFO("params " << k);
        sampler s(ps[k], V);
        const std::vector<token_id> hist = {5, 6, 7};
        const sample_context ctx{.sequence = 1, .history = hist};
        REQUIRE(s.sample(x, ctx).ok());  // warms the thread's workspace for this path
        const counter c;
        for (std::uint64_t step = 0; step < 20; ++step) {
            const sample_context cs{.sequence = 1, .step = step, .history = hist};
            REQUIRE(s.sample(x, cs).ok());
        }
        CHECK(c.calls() == 0);
    }
    sampler s(ps[1], V);
    const counter c;
    s.rearm(ps[2]);
    s.rearm(ps[1]);
    CHECK(c.calls() <= 2);  // params copies only (their vectors are empty here)
    REQUIRE(s.sample(x, 0, 0).ok());
    sampler fresh(ps[1], V);
    CHECK(fresh.sample(x, 0, 0).token == s.sample(x, 0, 0).token);
}

TEST_CASE("an idle request holds 4 KiB plus 32 bytes per distinct token it has seen, at most",
          "[sampling][memory]") {
    // What a live request's sampler holds on the heap after a draw (its own storage: params,
    // processors, penalty counts, the history journal), the shared workspace excluded: the bar
    // of bench_request's BM_memory (4 KiB + the history state, judged as 32 bytes per distinct
    // token), here exactly, with operator new counted.
    const std::size_t V = 128256;
    const auto x = row(V, 5);
    sampling_params hf{.temperature = 0.7f, .top_p = 0.9f, .order = sampling_order::hf};
    hf.penalties.repetition = 1.1f;
    sampling_params chain{.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f};
    chain.penalties = {.repetition = 1.1f,
                       .frequency = 0.1f,
                       .repetition_scope = penalty_scope::whole_history,
                       .frequency_scope = penalty_scope::whole_history};
    for (const std::size_t distinct : {std::size_t(1), std::size_t(300), std::size_t(2000)}) {
        std::vector<token_id> h(std::max<std::size_t>(distinct, 300));
        for (std::size_t i = 0; i < h.size(); ++i)
            h[i] = token_id((i % distinct) * 7919 % V);  // 7919 is prime: distinct ids
        const sample_context ctx{.sequence = 1, .history = h, .prompt_length = h.size()};
        for (const sampling_params& p : {hf, chain}) {
            {
                sampler warm(p, V);  // grows the thread's workspace for this path
                REQUIRE(warm.sample(x, ctx).ok());
            }
            const counter c;
            auto s = std::make_unique<sampler>(p, V);
            REQUIRE(s->sample(x, ctx).ok());
            const std::ptrdiff_t allowed = std::ptrdiff_t(4096 + 32 * distinct + sizeof(sampler));
            INFO("distinct " << distinct << " order " << int(p.order) << " held " << c.held());
            CHECK(c.held() <= allowed);
            CHECK(c.held() >= std::ptrdiff_t(sizeof(sampler) + 8 * distinct));  // counts exist
        }
    }
}
