// Batched compute in the reference backend (examples/llama2): one call over several requests and
// positions gives, bit for bit, what the same requests give one at a time and what token-by-token
// decoding gives, whatever the cache states (fresh, appended, cut back, forked), the outputs
// (logits, hidden states, layer read-outs, heads), the chunking (max_batch_positions) and the
// invalid requests mixed in; bad sizes have a defined outcome; a steady-state call allocates
// nothing. Runs on tiny random checkpoints and on the shipped stories260K.
#include "dk_test.hpp"
#include "llama2_naive.hpp"

#include <llama2/llama2.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

// Every allocation of this test executable is counted (the steady-state test reads the count
// around model calls only). Not inlined: GCC would otherwise see free() meet operator new and
// warn (-Wmismatched-new-delete).
namespace {
std::atomic<std::size_t> g_allocations{0};
}  // namespace

[[gnu::noinline]] void* operator new(std::size_t n) {
    ++g_allocations;
    if (void* p = std::malloc(n ? n : 1)) return p;
    std::abort();  // this test never runs out of memory; -fno-exceptions-safe
}
[[gnu::noinline]] void* operator new[](std::size_t n) { return operator new(n); }
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
// The nothrow forms too: every form of new and delete here must pair malloc with free.
[[gnu::noinline]] void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
    ++g_allocations;
    return std::malloc(n ? n : 1);
}
[[gnu::noinline]] void* operator new[](std::size_t n, const std::nothrow_t& t) noexcept {
    return operator new(n, t);
}
[[gnu::noinline]] void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

using decodekit::sequence_request;
using decodekit::token_id;
using dk_llama2::checkpoint;
using tokens = std::vector<token_id>;

checkpoint tiny_checkpoint(bool shared, std::uint64_t seed) {
    auto cfg = dk_llama2::tiny_config();
    cfg.shared_classifier = shared;
    auto ck = dk_llama2::parse_checkpoint(dk_llama2::make_random_checkpoint(cfg, seed));
    REQUIRE(ck.ok());
    return std::move(ck.value());
}

std::vector<std::pair<std::string, checkpoint>> test_checkpoints() {
    std::vector<std::pair<std::string, checkpoint>> v;
    v.emplace_back("tiny (shared classifier)", tiny_checkpoint(true, 7));
    v.emplace_back("tiny (separate classifier)", tiny_checkpoint(false, 11));
    auto ck = dk_llama2::load_checkpoint(std::string(DK_MODELS_DIR) + "/stories260K.bin");
    REQUIRE(ck.ok());  // shipped in examples/models: a missing file is a failure, not a skip
    v.emplace_back("stories260K", std::move(ck.value()));
    return v;
}

tokens some_tokens(std::size_t n, std::size_t vocab, std::uint64_t seed) {
    dk_llama2::splitmix64 r{seed};
    tokens t{dk_llama2::bos_id};
    while (t.size() < n) t.push_back(token_id(3 + r.next() % std::uint64_t(vocab - 3)));
    return t;
}

tokens concat(const tokens& a, std::size_t keep, const tokens& more) {
    tokens t(a.begin(), a.begin() + std::ptrdiff_t(keep));
    t.insert(t.end(), more.begin(), more.end());
    return t;
}

bool same_bits(std::span<const float> a, std::span<const float> b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

bool all_nan(std::span<const float> a) {
    for (float x : a)
        if (!std::isnan(x)) return false;
    return true;
}

float max_abs_diff(std::span<const float> a, std::span<const float> b) {
    REQUIRE(a.size() == b.size());
    float m = 0;
    for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
    return m;
}

// What a call returns: output rows (per_pos rows per wanted position) and hidden rows.
struct outputs {
    std::vector<float> rows, hidden;
};

enum class call_kind { logits, hidden, layers, early_exit };

// One call of `kind` over `reqs`.
outputs call(dk_llama2::model& m, call_kind kind, std::span<const sequence_request> reqs,
             std::span<const int> layers) {
    const std::size_t V = m.vocab_size(), D = m.hidden_size();
    const std::size_t n = decodekit::rows_needed(reqs);
    outputs o;
    switch (kind) {
        case call_kind::logits:
            o.rows.assign(n * V, 0.f);
            m.logits(reqs, o.rows);
            break;
        case call_kind::hidden:
            o.rows.assign(n * V, 0.f);
            o.hidden.assign(n * D, 0.f);
            m.logits_and_hidden(reqs, o.rows, o.hidden);
            break;
        case call_kind::layers:
        case call_kind::early_exit:
            o.rows.assign(n * layers.size() * V, 0.f);
            m.layer_logits(reqs, layers, o.rows);
            break;
    }
    return o;
}

// The same requests, one call each, outputs concatenated in request order.
outputs call_one_by_one(dk_llama2::model& m, call_kind kind, std::span<const sequence_request> reqs,
                        std::span<const int> layers) {
    outputs all;
    for (const auto& r : reqs) {
        const auto o = call(m, kind, std::span(&r, 1), layers);
        all.rows.insert(all.rows.end(), o.rows.begin(), o.rows.end());
        all.hidden.insert(all.hidden.end(), o.hidden.begin(), o.hidden.end());
    }
    return all;
}

// The valid-request rows of `a` and `b` are bit-identical and the invalid ones all NaN.
void check_rows(const outputs& a, const outputs& b, std::span<const sequence_request> reqs,
                const std::vector<bool>& valid, std::size_t per_pos, std::size_t V, std::size_t D) {
    REQUIRE(a.rows.size() == b.rows.size());
    REQUIRE(a.hidden.size() == b.hidden.size());
    std::size_t row = 0;
    for (std::size_t i = 0; i < reqs.size(); ++i) {
        INFO("request " << i);
        const std::size_t n = reqs[i].n_last;
        const auto ra = std::span<const float>(a.rows).subspan(row * per_pos * V, n * per_pos * V);
        const auto rb = std::span<const float>(b.rows).subspan(row * per_pos * V, n * per_pos * V);
        if (valid[i]) {
            CHECK(same_bits(ra, rb));
            CHECK_FALSE(all_nan(ra));
        } else {
            CHECK(all_nan(ra));
            CHECK(all_nan(rb));
        }
        if (!a.hidden.empty()) {
            const auto ha = std::span<const float>(a.hidden).subspan(row * D, n * D);
            const auto hb = std::span<const float>(b.hidden).subspan(row * D, n * D);
            CHECK((valid[i] ? same_bits(ha, hb) : all_nan(ha) && all_nan(hb)));
        }
        row += n;
    }
}

// Three slots with cached sequences, then one call mixing every cache state and invalid requests.
struct scenario {
    tokens a, b, c, appended, cut, forked, fresh, bad_token, too_long;
    std::vector<sequence_request> history, step;
    std::vector<bool> valid;
    std::uint64_t forwarded = 0;  // positions the step must compute

    scenario(std::size_t V, std::size_t seq_len) {
        a = some_tokens(20, V, 1);
        b = some_tokens(30, V, 2);
        c = some_tokens(25, V, 3);
        appended = concat(a, 20, {5, 6, 7});          // slot 0 grows by 3; outputs of 4
        cut = concat(b, 22, {8, 9});                  // slot 1 rejects 8 tokens, adds 2
        forked = concat(a, 15, {10, 11, 12, 13});     // slot 3 forks slot 0's prefix
        fresh = some_tokens(10, V, 4);                // slot 4: every position wanted
        bad_token = concat(a, 5, {token_id(V), 3});   // slot 5: token out of range
        too_long = tokens(seq_len + 1, token_id(3));  // slot 6: longer than seq_len
        history = {{a, 1, 0}, {b, 1, 1}, {c, 1, 2}};
        step = {{appended, 4, 0},  {cut, 2, 1}, {forked, 1, 3},  {fresh, 10, 4},
                {bad_token, 2, 5}, {c, 3, 2},   {too_long, 1, 6}};
        valid = {true, true, true, true, false, true, false};
        forwarded = 4 + 2 + 4 + 10 + 3;
    }
};

}  // namespace

TEST_CASE("llama2 one batched call equals the requests one at a time, bit for bit",
          "[llama2][batch]") {
    for (auto& [name, ck] : test_checkpoints()) {
        const std::size_t V = std::size_t(ck.cfg.vocab_size), D = std::size_t(ck.cfg.dim);
        const int L = ck.cfg.n_layers;
        const std::vector<int> layers = {L, 0, 1, L - 1, 1};  // a repeated layer too
        const std::vector<int> early = {1};
        for (call_kind kind :
             {call_kind::logits, call_kind::hidden, call_kind::layers, call_kind::early_exit}) {
            INFO(name << ", call kind " << int(kind));
            const std::span<const int> ls = kind == call_kind::layers       ? std::span(layers)
                                            : kind == call_kind::early_exit ? std::span(early)
                                                                            : std::span<int>();
            const std::size_t per_pos = ls.empty() ? 1 : ls.size();
            dk_llama2::model batched(ck), single(ck);
            const scenario s(V, std::size_t(ck.cfg.seq_len));
            call_one_by_one(batched, call_kind::logits, s.history, {});
            call_one_by_one(single, call_kind::logits, s.history, {});

            const auto f0 = batched.counters().tokens_forwarded;
            const auto b = call(batched, kind, s.step, ls);
            CHECK(batched.counters().tokens_forwarded - f0 == s.forwarded);
            CHECK_FALSE(batched.last_error().empty());  // the invalid requests are reported
            const auto f1 = single.counters().tokens_forwarded;
            const auto one = call_one_by_one(single, kind, s.step, ls);
            CHECK(single.counters().tokens_forwarded - f1 == s.forwarded);
            check_rows(b, one, s.step, s.valid, per_pos, V, D);

            // Not vacuous: rows agree with the independent naive implementation.
            const std::size_t li = kind == call_kind::layers ? 1 : 0;  // layer 0 when layered
            const auto res_fork = dk_naive::residuals(ck, s.forked);
            const auto res_fresh = dk_naive::residuals(ck, s.fresh);
            const std::size_t at = kind == call_kind::layers       ? 0
                                   : kind == call_kind::early_exit ? 1
                                                                   : std::size_t(L);
            const std::size_t fork_row = 4 + 2, fresh_row = fork_row + 1;  // rows before them
            CHECK(max_abs_diff(std::span(b.rows).subspan((fork_row * per_pos + li) * V, V),
                               dk_naive::readout(ck, res_fork[at].back())) < 1e-4f);
            for (std::size_t p : {std::size_t(0), std::size_t(9)})
                CHECK(
                    max_abs_diff(std::span(b.rows).subspan(((fresh_row + p) * per_pos + li) * V, V),
                                 dk_naive::readout(ck, res_fresh[at][p])) < 1e-4f);

            // The next engine step: every valid request appends one token.
            std::vector<tokens> next;
            std::vector<sequence_request> step2;
            std::vector<bool> valid2;
            for (std::size_t i = 0; i < s.step.size(); ++i) {
                if (!s.valid[i]) continue;
                next.emplace_back(s.step[i].tokens.begin(), s.step[i].tokens.end());
                next.back().push_back(token_id(20 + i));
            }
            std::uint32_t slot = 0;
            for (const auto& t : next) {
                step2.push_back({t, 1, slot++});
                valid2.push_back(true);
            }
            const auto g0 = batched.counters().tokens_forwarded;
            const auto b2 = call(batched, kind, step2, ls);
            CHECK(batched.last_error().empty());
            const auto one2 = call_one_by_one(single, kind, step2, ls);
            check_rows(b2, one2, step2, valid2, per_pos, V, D);
            // kinds reading at the last layer reuse the caches: slots were renumbered, so the
            // forks are taken over or copied, never recomputed beyond the new position
            if (kind == call_kind::logits || kind == call_kind::hidden)
                CHECK(batched.counters().tokens_forwarded - g0 == step2.size());
        }
    }
}

TEST_CASE("llama2 a call computes its positions like token-by-token decoding, bit for bit",
          "[llama2][batch]") {
    for (auto& [name, ck] : test_checkpoints()) {
        INFO(name);
        const std::size_t V = std::size_t(ck.cfg.vocab_size);
        const auto seq = some_tokens(40, V, 9);
        // reference: one position per call
        dk_llama2::model step(ck);
        std::vector<float> ref(seq.size() * V);
        for (std::size_t n = 1; n <= seq.size(); ++n) {
            const sequence_request r{std::span(seq).first(n), 1, 0};
            step.logits(std::span(&r, 1), std::span(ref).subspan((n - 1) * V, V));
        }
        CHECK(step.counters().tokens_forwarded == seq.size());
        // every position in one call, in chunks of any size (1 = one position per chunk)
        for (std::size_t chunk :
             {std::size_t(256), std::size_t(1), std::size_t(3), std::size_t(7), std::size_t(40)}) {
            INFO("max_batch_positions " << chunk);
            dk_llama2::model m(ck, {.max_batch_positions = chunk});
            CHECK(m.options().max_batch_positions == chunk);
            std::vector<float> out(seq.size() * V);
            const sequence_request r{seq, seq.size(), 0};
            m.logits(std::span(&r, 1), out);
            CHECK(m.last_error().empty());
            CHECK(same_bits(out, ref));
            // a verification-like call: 5 new positions after the cached 35
            const sequence_request v{seq, 5, 1};
            const sequence_request warm{std::span(seq).first(35), 1, 1};
            std::vector<float> w(V), last5(5 * V);
            m.logits(std::span(&warm, 1), w);
            const auto f0 = m.counters().tokens_forwarded;
            m.logits(std::span(&v, 1), last5);
            CHECK(m.counters().tokens_forwarded - f0 == 5);
            CHECK(same_bits(last5, std::span(ref).subspan(35 * V)));
        }
        // negative control: another sequence gives other bits
        dk_llama2::model m(ck);
        const auto other = some_tokens(40, V, 10);
        std::vector<float> out(V);
        const sequence_request r{other, 1, 0};
        m.logits(std::span(&r, 1), out);
        CHECK_FALSE(same_bits(out, std::span(ref).subspan(39 * V)));
    }
}

TEST_CASE("llama2 chunked batches equal one batch, every output kind", "[llama2][batch]") {
    auto ck = tiny_checkpoint(false, 11);
    const std::size_t V = std::size_t(ck.cfg.vocab_size), D = std::size_t(ck.cfg.dim);
    const std::vector<int> layers = {3, 0, 2, 2};
    for (call_kind kind : {call_kind::logits, call_kind::hidden, call_kind::layers}) {
        const std::span<const int> ls =
            kind == call_kind::layers ? std::span(layers) : std::span<int>();
        const std::size_t per_pos = ls.empty() ? 1 : ls.size();
        const scenario s(V, std::size_t(ck.cfg.seq_len));
        dk_llama2::model whole(ck);
        call_one_by_one(whole, call_kind::logits, s.history, {});
        const auto ref = call(whole, kind, s.step, ls);
        // chunks cut requests and the classifier queue anywhere (1, 2, 5 positions per batch)
        for (std::size_t chunk : {std::size_t(1), std::size_t(2), std::size_t(5)}) {
            INFO("call kind " << int(kind) << ", max_batch_positions " << chunk);
            dk_llama2::model m(ck, {.max_batch_positions = chunk});
            call_one_by_one(m, call_kind::logits, s.history, {});
            check_rows(call(m, kind, s.step, ls), ref, s.step, s.valid, per_pos, V, D);
        }
    }
}

TEST_CASE("llama2 head_logits batched over requests equals one at a time", "[llama2][batch]") {
    for (auto& [name, ck] : test_checkpoints()) {
        INFO(name);
        const std::size_t V = std::size_t(ck.cfg.vocab_size), H = 3;
        const auto a = some_tokens(12, V, 5), b = some_tokens(7, V, 6);
        const tokens bad = {1, token_id(V)};
        const tokens full(std::size_t(ck.cfg.seq_len), token_id(3));  // no room for heads 1, 2
        const std::vector<sequence_request> reqs = {
            {a, 1, 0}, {bad, 1, 1}, {b, 1, 2}, {full, 1, 3}, {a, 1, 4}};
        dk_llama2::model batched(ck, {.num_heads = H}), single(ck, {.num_heads = H});
        std::vector<float> out(reqs.size() * H * V), one(H * V), ref;
        const auto c0 = batched.counters().calls;
        batched.head_logits(reqs, out);
        CHECK(batched.counters().calls - c0 == 1);
        CHECK_FALSE(batched.last_error().empty());
        for (const auto& r : reqs) {
            single.head_logits(std::span(&r, 1), one);
            ref.insert(ref.end(), one.begin(), one.end());
        }
        for (std::size_t r = 0; r < reqs.size(); ++r) {
            for (std::size_t h = 0; h < H; ++h) {
                INFO("request " << r << ", head " << h);
                const auto row = std::span<const float>(out).subspan((r * H + h) * V, V);
                const bool valid = r != 1 && (r != 3 || h == 0);
                CHECK((valid ? !all_nan(row) : all_nan(row)));
                CHECK((valid ? same_bits(row, std::span(ref).subspan((r * H + h) * V, V))
                             : all_nan(std::span(ref).subspan((r * H + h) * V, V))));
            }
        }
        // head h = the next token after greedily appending heads < h (naive reference)
        auto ext = a;
        for (std::size_t h = 0; h < H; ++h) {
            const auto want = dk_naive::logits(ck, ext).back();
            CHECK(max_abs_diff(std::span(out).subspan(h * V, V), want) < 1e-4f);
            ext.push_back(dk_naive::argmax(want));
        }
    }
}

TEST_CASE("llama2 wrong output sizes and bad options have a defined outcome", "[llama2][batch]") {
    auto ck = tiny_checkpoint(true, 7);
    dk_llama2::model m(ck);
    const std::size_t V = m.vocab_size(), D = m.hidden_size();
    const auto seq = some_tokens(8, V, 3);
    const std::vector<sequence_request> two = {{seq, 2, 0}, {seq, 1, 1}};
    // too small: nothing written, an error naming the rows needed
    std::vector<float> small(3 * V - 1, 7.f);
    m.logits(two, small);
    CHECK(m.last_error().find("need 3 rows") != std::string::npos);
    CHECK(std::all_of(small.begin(), small.end(), [](float x) { return x == 7.f; }));
    std::vector<float> out(3 * V, 7.f), hid(3 * D - 1, 7.f);
    m.logits_and_hidden(two, out, hid);
    CHECK_FALSE(m.last_error().empty());
    CHECK(std::all_of(out.begin(), out.end(), [](float x) { return x == 7.f; }));
    // an empty hidden span means "logits only"
    m.logits_and_hidden(two, out, {});
    CHECK(m.last_error().empty());
    CHECK(std::isfinite(out[0]));
    // row counts that overflow size_t are rejected before anything is written
    const std::vector<sequence_request> huge = {{seq, std::numeric_limits<std::size_t>::max(), 0},
                                                {seq, 2, 1}};
    std::fill(out.begin(), out.end(), 7.f);
    m.logits(huge, out);
    CHECK(m.last_error().find("overflow") != std::string::npos);
    CHECK(out[0] == 7.f);
    const std::vector<int> many_layers(std::size_t(1) << 20, 1);
    const std::vector<sequence_request> big = {
        {seq, std::numeric_limits<std::size_t>::max() / 4, 0}};
    m.layer_logits(big, many_layers, out);
    CHECK(m.last_error().find("overflow") != std::string::npos);
    CHECK(out[0] == 7.f);
    // head_logits: too small an output is refused
    std::vector<float> heads(V - 1, 7.f);
    const sequence_request one{seq, 1, 0};
    m.head_logits(std::span(&one, 1), heads);
    CHECK(m.last_error().find("head_logits") != std::string::npos);
    CHECK(heads[0] == 7.f);
    // bad options: check() names the field and its range; the constructor refuses them
    const dk_llama2::model_options zero{.max_batch_positions = 0};
    REQUIRE(zero.check().has_value());
    CHECK(zero.check()->find("max_batch_positions must be in [1, 65536]") != std::string::npos);
    CHECK_FALSE(dk_llama2::model_options{.max_batch_positions = 65536}.check().has_value());
    CHECK(dk_llama2::model_options{.max_batch_positions = 65537}.check().has_value());
    DK_IF_EXCEPTIONS(CHECK_THROWS_AS(dk_llama2::model(ck, zero), decodekit::config_error);)
}

TEST_CASE("llama2 steady-state calls allocate nothing", "[llama2][batch]") {
    auto ck = tiny_checkpoint(true, 7);
    dk_llama2::model m(ck, {.num_heads = 2});
    const std::size_t V = m.vocab_size(), D = m.hidden_size();
    // an engine: 4 requests decoding, one verifying 4 drafts, one early-exit drafting
    std::vector<tokens> seqs;
    for (std::uint64_t i = 0; i < 6; ++i) seqs.push_back(some_tokens(10 + i, V, 30 + i));
    std::vector<float> out(16 * V), hidden(16 * D), heads(2 * V);
    const std::vector<int> layer = {1};
    std::vector<sequence_request> reqs(6);
    auto one_step = [&](std::size_t step) {
        for (std::size_t i = 0; i < 6; ++i) {
            seqs[i].push_back(token_id(3 + (step * 7 + i) % (V - 3)));  // capacity reserved below
            reqs[i] = {seqs[i], i == 4 ? std::size_t(5) : std::size_t(1), std::uint32_t(i)};
        }
        m.logits(std::span(reqs).first(5), out);
        m.logits_and_hidden(std::span(reqs).first(5), out, hidden);
        m.layer_logits(std::span(reqs).subspan(5), layer, out);
        m.head_logits(std::span(reqs).first(1), heads);
    };
    for (auto& s : seqs) s.reserve(64);
    one_step(0);  // sizes the caches and the scratch
    one_step(1);
    REQUIRE(m.last_error().empty());
    const std::size_t before = g_allocations.load();
    for (std::size_t step = 2; step < 12; ++step) one_step(step);
    const std::size_t allocations = g_allocations.load() - before;
    CHECK(m.last_error().empty());
    CHECK(allocations == 0);
    // negative control: a call that needs a new cache (a new slot) is seen allocating
    const std::size_t c0 = g_allocations.load();
    const sequence_request fresh{seqs[0], 1, 7};
    m.logits(std::span(&fresh, 1), std::span(out).first(V));
    CHECK(g_allocations.load() - c0 >= 1);
}
