/// \file fuzz/fuzz_processors.cpp
/// Every logits processor with arbitrary token histories and lists (ids negative, == V, huge;
/// long histories; tiny workspaces), arbitrary rows (NaN, +-inf) and arbitrary valid parameters.
/// Oracles: naive re-implementations (bias, bans, allowed set, min length, no-repeat-ngram,
/// banned sequences), the documented special-value rules and workspace post-conditions
/// (penalties, DRY). Mode 8: the processor types (penalties, no-repeat-ngram, DRY, banned
/// sequences) driven through a history_tracker over a sequence of history changes (append,
/// cut back, replace, prompt change, rewrite + reset, fork), against the free functions on the
/// same history, with touched() covering every changed id and apply() reading no undeclared one.
/// Mode 9: Hugging Face's processors (forced BOS / EOS, suppress tokens at begin, exponential
/// decay length penalty, sequence bias, prefix-constrained allowed sets) driven the same way,
/// against naive oracles of HF's rules; invalid configurations must be exactly those check()
/// rejects. Mode 0 also compares a sampler with the penalties alone (the sparse path, deferred
/// patches when they only lower) with the dense path. A mismatch aborts. Input:
/// [processor][vocab][row][history][arguments].

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <span>
#include <vector>

#include "fuzz_common.hpp"

namespace dk = decodekit;
using dk::token_id;
using dk_fuzz::inf;

namespace {

bool same(float a, float b) { return (std::isnan(a) && std::isnan(b)) || a == b; }
bool valid_id(token_id t, std::size_t v) { return t >= 0 && std::size_t(t) < v; }

void check_rows(std::span<const float> got, std::span<const float> want, const char* what) {
    for (std::size_t i = 0; i < got.size(); ++i)
        DK_FUZZ_CHECK(same(got[i], want[i]), "%s: logit[%zu] %g, naive %g", what, i, got[i],
                      want[i]);
}

/// Applies a processor type after every history change decoded from the input, as a pipeline
/// drives it (sync, reset or cut_back + append, apply), and compares with `ref` (the free
/// function on the same history).
template <class P, class Ref>
void run_incremental(FuzzedDataProvider& in, const P& proto, Ref ref, std::vector<token_id> h0,
                     std::size_t prompt0, const std::vector<float>& row, std::size_t vocab) {
    struct lane {
        dk::any_processor p;  // as a pipeline holds it (hooks are no-ops for stateless ones)
        dk::history_tracker tracker;
        std::vector<token_id> h;
        std::size_t prompt;
        std::vector<token_id> seen{};  // the history of the previous call
    };
    std::vector<lane> lanes;
    lanes.push_back({dk::any_processor(proto),
                     dk::history_tracker(in.ConsumeIntegralInRange<std::size_t>(1, 64)), h0,
                     prompt0});
    const int steps = in.ConsumeIntegralInRange<int>(1, 24);
    for (int s = 0; s < steps; ++s) {
        std::size_t li = in.ConsumeIntegralInRange<std::size_t>(0, lanes.size() - 1);
        const int op = in.ConsumeIntegralInRange<int>(0, 6);
        if (op == 6 && lanes.size() < 4) {  // fork: the copy continues on its own
            lanes.push_back(lanes[li]);
            li = lanes.size() - 1;
        }
        lane& l = lanes[li];
        switch (op) {
            case 0:
                l.h.push_back(dk_fuzz::consume_token(in, vocab));
                break;
            case 1:
                for (token_id t : dk_fuzz::consume_tokens(in, vocab, 20)) l.h.push_back(t);
                break;
            case 2:
                l.h.resize(l.h.size() - in.ConsumeIntegralInRange<std::size_t>(0, l.h.size()));
                break;
            case 3: {
                const std::size_t k = in.ConsumeIntegralInRange<std::size_t>(0, l.h.size());
                l.h.resize(l.h.size() - k);
                for (token_id t : dk_fuzz::consume_tokens(in, vocab, 12)) l.h.push_back(t);
                break;
            }
            case 4:
                l.prompt = in.ConsumeIntegralInRange<std::size_t>(0, l.h.size() + 2);
                break;
            case 5:  // another sequence in the same slot: its caller resets
                l.h = dk_fuzz::consume_tokens(in, vocab, 96);
                l.tracker.reset();
                break;
            default:
                break;
        }
        const dk::processor_context c{
            .history = l.h, .prompt_length = l.prompt, .vocab_size = vocab};
        dk::history_change ch = l.tracker.sync(l.h);
        if (!ch.rebuild) {
            // The tracker checks only the tail (history.hpp): a change deeper than that, under an
            // identical tail, is its documented blind spot, which callers avoid by resetting.
            // Such inputs are replayed as that reset, so the oracle stays about the processors.
            std::vector<token_id> replay(
                l.seen.begin(), l.seen.begin() + std::ptrdiff_t(std::min(ch.keep, l.seen.size())));
            const bool removed_ok =
                ch.keep <= l.seen.size() &&
                std::equal(ch.removed.begin(), ch.removed.end(),
                           l.seen.begin() + std::ptrdiff_t(ch.keep), l.seen.end());
            replay.insert(replay.end(), ch.added.begin(), ch.added.end());
            if (!removed_ok || replay != l.h) {
                l.tracker.reset();
                ch = l.tracker.sync(l.h);
            }
        }
        l.seen = l.h;
        if (ch.rebuild) {
            l.p.reset(c);
        } else {
            l.p.cut_back(ch.keep, ch.removed, c);
            l.p.append(ch.added, c);
        }
        std::vector<float> got = row, want = row;
        l.p.apply(std::span<float>(got), c);
        ref(std::span<float>(want), c);
        check_rows(got, want, "processor type vs free function");
        if (!l.p.sparse()) continue;  // dense: it may touch any id
        std::vector<char> m(vocab, 0);
        dk::token_sink sink(
            [](void* ctx, token_id t) noexcept {
                auto& v = *static_cast<std::vector<char>*>(ctx);
                if (t >= 0 && std::size_t(t) < v.size()) v[std::size_t(t)] = 1;
            },
            &m);
        l.p.touched(c, sink);
        std::vector<float> sparse(vocab, dk_fuzz::nan);
        for (std::size_t i = 0; i < vocab; ++i)
            if (m[i]) sparse[i] = row[i];
        l.p.apply(std::span<float>(sparse), c);
        for (std::size_t i = 0; i < vocab; ++i) {
            if (m[i])
                DK_FUZZ_CHECK(same(sparse[i], want[i]), "declared id %zu read an undeclared entry",
                              i);
            else
                DK_FUZZ_CHECK(same(want[i], row[i]), "id %zu changed but not declared", i);
        }
    }
}

/// Naive forcing: every entry -inf, the forced ids in [0, V) 0.
void naive_force(std::span<float> y, const std::vector<token_id>& ids) {
    for (float& v : y) v = -inf;
    for (token_id t : ids)
        if (valid_id(t, y.size())) y[std::size_t(t)] = 0.f;
}

/// Naive sequence bias: HF's mapping (first place, last bias), the one-token bias first, then
/// the longer sequences in order, summed, then added; a -inf bias bans.
void naive_sequence_bias(std::span<float> y, std::span<const token_id> h,
                         const std::vector<dk::sequence_bias>& list) {
    std::vector<dk::sequence_bias> dict;
    for (const auto& s : list) {
        auto it = std::find_if(dict.begin(), dict.end(),
                               [&](const dk::sequence_bias& d) { return d.tokens == s.tokens; });
        if (it == dict.end())
            dict.push_back(s);
        else
            it->bias = s.bias;
    }
    std::map<token_id, std::pair<float, bool>> sum;
    auto add = [&](token_id t, float b) {
        auto& e = sum[t];
        if (b == -inf)
            e.second = true;
        else
            e.first += b;
    };
    for (const auto& s : dict)
        if (s.tokens.size() == 1) add(s.tokens[0], s.bias);
    for (const auto& s : dict) {
        const std::size_t m = s.tokens.size() - 1;
        if (m == 0 || m > h.size()) continue;
        if (std::equal(s.tokens.begin(), s.tokens.end() - 1, h.end() - std::ptrdiff_t(m)))
            add(s.tokens.back(), s.bias);
    }
    for (auto [t, e] : sum) {
        if (!valid_id(t, y.size())) continue;
        float& v = y[std::size_t(t)];
        if (e.second)
            v = -inf;
        else if (!std::isnan(v) && v != -inf)
            v = v + e.first;
    }
}

/// Hugging Face's processors (mode 9), each against its naive oracle through run_incremental.
void fuzz_hf(FuzzedDataProvider& in, std::vector<token_id> history, std::size_t prompt,
             const std::vector<float>& row, std::size_t vocab) {
    switch (in.ConsumeIntegralInRange<int>(0, 5)) {
        case 0: {  // forced BOS
            const token_id bos = dk_fuzz::consume_token(in, vocab);
            DK_FUZZ_CHECK(dk::forced_bos_processor::check(bos).has_value() == (bos < 0),
                          "forced_bos check(%d)", int(bos));
            if (bos < 0) break;
            run_incremental(
                in, dk::forced_bos_processor(bos),
                [&](std::span<float> y, const dk::processor_context& c) {
                    if (c.history.size() <= c.prompt_length) naive_force(y, {bos});
                },
                history, prompt, row, vocab);
            break;
        }
        case 1: {  // forced EOS
            dk::forced_eos_params p;
            p.max_length = in.ConsumeIntegralInRange<std::size_t>(0, 40);
            p.basis = dk::length_basis(in.ConsumeIntegralInRange<int>(0, 2));
            p.eos_ids = dk_fuzz::consume_tokens(in, vocab, 4);
            const bool bad = p.max_length == 0 || int(p.basis) > 1 || p.eos_ids.empty();
            DK_FUZZ_CHECK(p.check().has_value() == bad, "forced_eos check");
            if (bad) break;
            run_incremental(
                in, dk::forced_eos_processor(p),
                [&](std::span<float> y, const dk::processor_context& c) {
                    const std::size_t gen =
                        c.history.size() > c.prompt_length ? c.history.size() - c.prompt_length : 0;
                    const std::size_t len =
                        p.basis == dk::length_basis::total ? c.history.size() : gen;
                    if (len + 1 == p.max_length) naive_force(y, p.eos_ids);
                },
                history, prompt, row, vocab);
            break;
        }
        case 2: {  // suppress tokens at begin
            const auto tokens = dk_fuzz::consume_tokens(in, vocab, 8);
            const std::size_t at = in.ConsumeIntegralInRange<std::size_t>(0, 3);
            run_incremental(
                in, dk::suppress_tokens_at_begin_processor(tokens, at),
                [&](std::span<float> y, const dk::processor_context& c) {
                    const std::size_t gen =
                        c.history.size() > c.prompt_length ? c.history.size() - c.prompt_length : 0;
                    if (gen != at) return;
                    for (token_id t : tokens)
                        if (valid_id(t, y.size())) y[std::size_t(t)] = -inf;
                },
                history, prompt, row, vocab);
            break;
        }
        case 3: {  // exponential decay length penalty
            dk::exponential_decay_params p;
            p.start = in.ConsumeIntegralInRange<std::size_t>(0, 30);
            p.decay_factor = in.ConsumeBool() ? double(dk_fuzz::consume_param(in, 0.05f, 4.f))
                                              : double(dk_fuzz::consume_param(in, 1.f, 1e4f));
            p.eos_ids = dk_fuzz::consume_tokens(in, vocab, 4);
            const bool bad =
                !(p.decay_factor > 0.0) || !std::isfinite(p.decay_factor) || p.eos_ids.empty();
            DK_FUZZ_CHECK(p.check().has_value() == bad, "exponential_decay check");
            if (bad) break;
            run_incremental(
                in, dk::exponential_decay_processor(p),
                [&](std::span<float> y, const dk::processor_context& c) {
                    const std::size_t gen =
                        c.history.size() > c.prompt_length ? c.history.size() - c.prompt_length : 0;
                    if (gen <= p.start) return;
                    // float(m) as IEEE rounds it (a double past float's range becomes +inf)
                    const float m = float(std::pow(p.decay_factor, double(gen - p.start)) - 1.0);
                    std::set<token_id> ids(p.eos_ids.begin(), p.eos_ids.end());  // each once
                    for (token_id t : ids) {
                        if (!valid_id(t, y.size())) continue;
                        float& v = y[std::size_t(t)];
                        if (std::isnan(v) || std::isinf(v) || v == 0.f || m == 0.f) continue;
                        volatile float pen = std::fabs(v) * m;  // HF: float32 product, then sum
                        v = v + pen;
                    }
                },
                history, prompt, row, vocab);
            break;
        }
        case 4: {  // sequence bias
            std::vector<dk::sequence_bias> list(in.ConsumeIntegralInRange<std::size_t>(0, 6));
            for (auto& s : list) {
                s.tokens = dk_fuzz::consume_tokens(in, vocab, 4);
                s.bias = dk_fuzz::consume_param(in, -8.f, 8.f);
            }
            const bool bad = std::any_of(list.begin(), list.end(), [](const auto& s) {
                return s.tokens.empty() || std::isnan(s.bias);
            });
            DK_FUZZ_CHECK(dk::sequence_bias_processor::check(list).has_value() == bad,
                          "sequence_bias check");
            if (bad) break;
            run_incremental(
                in, dk::sequence_bias_processor(list),
                [&](std::span<float> y, const dk::processor_context& c) {
                    naive_sequence_bias(y, c.history, list);
                },
                history, prompt, row, vocab);
            break;
        }
        default: {  // prefix-constrained: an allowed list per history length modulo 3
            std::vector<std::vector<token_id>> sets(3);
            for (auto& s : sets) s = dk_fuzz::consume_tokens(in, vocab, 8);
            if (in.ConsumeBool()) {  // the large-list path (> 256 ids)
                for (std::size_t i = 0; i < 300; ++i)
                    sets[0].push_back(token_id((i * 7919u + 13u) % (vocab + 2)) - 1);
            }
            const int unrestricted = in.ConsumeIntegralInRange<int>(0, 3);  // 3: never
            auto fn = [sets, unrestricted](const dk::processor_context& c,
                                           std::vector<token_id>& allowed) {
                const std::size_t k = c.history.size() % 3;
                if (int(k) == unrestricted) return false;
                allowed = sets[k];
                return true;
            };
            run_incremental(
                in, dk::prefix_constrained_processor(fn),
                [&](std::span<float> y, const dk::processor_context& c) {
                    const std::size_t k = c.history.size() % 3;
                    if (int(k) == unrestricted) return;
                    std::vector<char> ok(y.size(), 0);
                    for (token_id t : sets[k])
                        if (valid_id(t, y.size())) ok[std::size_t(t)] = 1;
                    for (std::size_t i = 0; i < y.size(); ++i)
                        if (!ok[i]) y[i] = -inf;
                },
                history, prompt, row, vocab);
            break;
        }
    }
}

/// Repeats `h` up to `n` tokens (long histories from short inputs).
void stretch(std::vector<token_id>& h, std::size_t n) {
    if (h.empty()) return;
    const std::size_t n0 = h.size();
    for (std::size_t i = n0; i < n; ++i) h.push_back(h[i % n0]);
}

/// A sampler whose only processors are the penalties `p` (the sparse path: patches written, or
/// deferred to the first step when they only lower) against the dense path (an allowed set of
/// every id copies the row): the same set, the same probabilities, the same token, over a
/// growing, cut-back and regrown history.
void check_sparse_sampler(FuzzedDataProvider& in, const dk::penalty_params& p,
                          const std::vector<float>& row, const std::vector<token_id>& history) {
    const std::size_t v = row.size();
    dk::sampling_params sp;
    switch (in.ConsumeIntegralInRange<int>(0, 2)) {
        case 0:
            sp.temperature = 0.f;
            break;
        case 1:
            sp.top_k = in.ConsumeIntegralInRange<int>(1, 100);
            sp.top_k_ties =
                in.ConsumeBool() ? dk::tie_policy::keep_ties : dk::tie_policy::exactly_k;
            break;
        default:
            sp.min_p = dk_fuzz::consume_param(in, 0.01f, 0.9f);
            sp.min_keep = in.ConsumeIntegralInRange<std::size_t>(1, 8);
            break;
    }
    sp.penalties = p;
    dk::sampling_params dense = sp;
    for (std::size_t i = 0; i < v; ++i) dense.allowed_tokens.push_back(token_id(i));
    if (sp.check() || dense.check()) return;
    dk::sampler a(sp, v), b(dense, v);
    const std::size_t n = history.size();
    const std::size_t lengths[] = {n, n, n > 3 ? n - 3 : 0, n};
    for (std::size_t call = 0; call < 4; ++call) {
        const dk::sample_context ctx{
            .sequence = 1,
            .step = call,
            .history = std::span<const token_id>(history).first(lengths[call]),
            .prompt_length = n / 2};
        const auto da = a.distribution(row, ctx);
        const std::vector<token_id> ta(da.tokens.begin(), da.tokens.end());
        const std::vector<float> pa(da.probs.begin(), da.probs.end());
        const auto db = b.distribution(row, ctx);
        DK_FUZZ_CHECK(
            ta.size() == db.tokens.size() && std::equal(ta.begin(), ta.end(), db.tokens.begin()),
            "sparse penalties: %zu tokens, dense %zu (rep %g freq %g pres %g)", ta.size(),
            db.tokens.size(), p.repetition, p.frequency, p.presence);
        for (std::size_t i = 0; i < pa.size(); ++i)
            DK_FUZZ_CHECK(std::fabs(pa[i] - db.probs[i]) <= 1e-6f,
                          "sparse penalties: probability %g, dense %g", pa[i], db.probs[i]);
        const auto ra = a.sample(row, ctx), rb = b.sample(row, ctx);
        DK_FUZZ_CHECK(ra.status == rb.status && ra.token == rb.token,
                      "sparse penalties: token %d, dense %d", int(ra.token), int(rb.token));
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const int which = in.ConsumeIntegralInRange<int>(0, 9);
    std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(0, 64);
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
        vocab = in.ConsumeIntegralInRange<std::size_t>(0, 140000);
    std::vector<float> row;
    dk_fuzz::fill_row(in, row, std::min<std::size_t>(vocab, 64),
                      in.ConsumeIntegralInRange<int>(0, 2));
    row.resize(vocab, 0.5f);
    std::vector<token_id> history = dk_fuzz::consume_tokens(in, vocab, 96);
    if (in.ConsumeIntegralInRange<int>(0, 7) == 0)
        stretch(history, in.ConsumeIntegralInRange<std::size_t>(0, 20000));
    const std::vector<float> before = row;
    std::span<float> x(row);

    switch (which) {
        case 0: {  // repetition / frequency / presence penalties
            dk::penalty_params p;
            p.repetition = in.ConsumeBool() ? 1.f : dk_fuzz::consume_param(in, 1e-3f, 10.f);
            p.frequency = in.ConsumeBool() ? 0.f : dk_fuzz::consume_param(in, -4.f, 4.f);
            p.presence = in.ConsumeBool() ? 0.f : dk_fuzz::consume_param(in, -4.f, 4.f);
            p.repetition_scope = dk::penalty_scope(in.ConsumeIntegralInRange<int>(0, 3));
            p.frequency_scope = dk::penalty_scope(in.ConsumeIntegralInRange<int>(0, 3));
            p.last_n = in.ConsumeIntegralInRange<std::size_t>(0, 200);
            const std::size_t prompt_length =
                in.ConsumeIntegralInRange<std::size_t>(0, history.size() + 3);
            if (p.check()) break;  // invalid parameters are rejected by check(), never applied
            dk::penalty_workspace ws(vocab + in.ConsumeIntegralInRange<std::size_t>(0, 3));
            dk::apply_penalties(x, history, prompt_length, p, ws);
            for (std::uint32_t c : ws.counts) DK_FUZZ_CHECK(c == 0, "penalty workspace not reset");
            std::vector<char> in_history(vocab, 0);
            for (token_id t : history)
                if (valid_id(t, vocab)) in_history[std::size_t(t)] = 1;
            for (std::size_t i = 0; i < vocab; ++i) {
                if (!in_history[i])
                    DK_FUZZ_CHECK(same(x[i], before[i]), "penalty touched id %zu not in history",
                                  i);
                if (std::isnan(before[i]) || std::isinf(before[i]))
                    DK_FUZZ_CHECK(same(x[i], before[i]),
                                  "penalties changed special value %g into %g (id %zu; rep %g freq "
                                  "%g pres %g)",
                                  before[i], x[i], i, p.repetition, p.frequency, p.presence);
                else
                    DK_FUZZ_CHECK(!std::isnan(x[i]), "penalties made NaN from %g", before[i]);
            }
            if (vocab >= 2 && in.ConsumeBool()) check_sparse_sampler(in, p, before, history);
            break;
        }
        case 1: {  // DRY
            dk::dry_params p;
            p.multiplier = dk_fuzz::consume_param(in, 0.f, 4.f);
            p.base = dk_fuzz::consume_param(in, 1.f, 4.f);
            p.allowed_length = in.ConsumeIntegralInRange<std::size_t>(0, 6);
            p.penalty_last_n = in.ConsumeIntegralInRange<std::size_t>(0, 300);
            const std::size_t nb = in.ConsumeIntegralInRange<std::size_t>(0, 4);
            for (std::size_t i = 0; i < nb; ++i)
                p.sequence_breakers.push_back(dk_fuzz::consume_token(in, vocab));
            if (p.check()) break;
            const std::size_t max_history =
                in.ConsumeBool() ? 0 : in.ConsumeIntegralInRange<std::size_t>(1, 64);
            dk::dry_workspace ws(vocab + in.ConsumeIntegralInRange<std::size_t>(0, 3), max_history);
            dk::apply_dry(x, history, p, ws);
            for (std::uint32_t c : ws.max_repeat) DK_FUZZ_CHECK(c == 0, "dry max_repeat not reset");
            for (std::uint8_t c : ws.is_breaker) DK_FUZZ_CHECK(c == 0, "dry is_breaker not reset");
            for (std::size_t i = 0; i < vocab; ++i) {
                if (!std::isfinite(before[i])) {
                    DK_FUZZ_CHECK(same(x[i], before[i]), "dry changed special value %g", before[i]);
                } else {
                    DK_FUZZ_CHECK(std::isfinite(x[i]) && x[i] <= before[i],
                                  "dry made %g from finite %g (id %zu)", x[i], before[i], i);
                }
            }
            break;
        }
        case 2: {  // logit bias
            const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 12);
            std::vector<dk::logit_bias> biases;
            for (std::size_t i = 0; i < n; ++i)
                biases.push_back(
                    {dk_fuzz::consume_token(in, vocab), dk_fuzz::consume_param(in, -10.f, 10.f)});
            dk::apply_logit_bias(x, biases);
            std::vector<float> want = before;
            for (const auto& b : biases) {
                if (!valid_id(b.token, vocab) || std::isnan(b.bias)) continue;
                float& v = want[std::size_t(b.token)];
                if (std::isnan(v) || v == -inf) continue;
                v = b.bias == -inf ? -inf : v + b.bias;
            }
            check_rows(x, want, "logit_bias");
            break;
        }
        case 3: {  // banned tokens
            const auto banned = dk_fuzz::consume_tokens(in, vocab, 40);
            dk::apply_banned_tokens(x, banned);
            std::vector<float> want = before;
            for (token_id t : banned)
                if (valid_id(t, vocab)) want[std::size_t(t)] = -inf;
            check_rows(x, want, "banned_tokens");
            break;
        }
        case 4: {  // allowed set (small list path and >256 bitmask path)
            auto allowed = dk_fuzz::consume_tokens(in, vocab, 64);
            if (in.ConsumeBool()) {
                const std::size_t extra = in.ConsumeIntegralInRange<std::size_t>(0, 600);
                for (std::size_t i = 0; i < extra; ++i)
                    allowed.push_back(token_id((i * 7919u + 13u) % (vocab + 2)) - 1);
            }
            dk::apply_allowed_tokens(x, allowed);
            std::vector<float> want = before;
            if (!allowed.empty()) {
                std::vector<char> ok(vocab, 0);
                for (token_id t : allowed)
                    if (valid_id(t, vocab)) ok[std::size_t(t)] = 1;
                for (std::size_t i = 0; i < vocab; ++i)
                    if (!ok[i]) want[i] = -inf;
            }
            check_rows(x, want, "allowed_tokens");
            break;
        }
        case 5: {  // min length
            const auto eos = dk_fuzz::consume_tokens(in, vocab, 6);
            const std::size_t generated = in.ConsumeIntegralInRange<std::size_t>(0, 10);
            const std::size_t min_new = in.ConsumeIntegralInRange<std::size_t>(0, 10);
            dk::apply_min_length(x, generated, min_new, eos);
            std::vector<float> want = before;
            if (generated < min_new)
                for (token_id t : eos)
                    if (valid_id(t, vocab)) want[std::size_t(t)] = -inf;
            check_rows(x, want, "min_length");
            break;
        }
        case 6: {  // no-repeat-ngram
            const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 6);
            if (history.size() > 3000) history.resize(3000);  // the naive oracle is O(N n log N)
            dk::apply_no_repeat_ngram(x, history, n);
            std::vector<float> want = before;
            if (n > 0 && history.size() >= n) {
                const std::vector<token_id> tail(history.end() - std::ptrdiff_t(n - 1),
                                                 history.end());
                for (std::size_t i = 0; i + n <= history.size(); ++i)
                    if (std::equal(tail.begin(), tail.end(), history.begin() + std::ptrdiff_t(i)) &&
                        valid_id(history[i + n - 1], vocab))
                        want[std::size_t(history[i + n - 1])] = -inf;
            }
            check_rows(x, want, "no_repeat_ngram");
            break;
        }
        case 7: {  // banned sequences
            std::vector<std::vector<token_id>> seqs(in.ConsumeIntegralInRange<std::size_t>(0, 5));
            for (auto& s : seqs) s = dk_fuzz::consume_tokens(in, vocab, 5);
            dk::apply_banned_sequences(x, history, seqs);
            std::vector<float> want = before;
            for (const auto& s : seqs) {
                if (s.empty() || s.size() - 1 > history.size()) continue;
                if (std::equal(s.begin(), s.end() - 1,
                               history.end() - std::ptrdiff_t(s.size() - 1)) &&
                    valid_id(s.back(), vocab))
                    want[std::size_t(s.back())] = -inf;
            }
            check_rows(x, want, "banned_sequences");
            break;
        }
        case 8: {  // processor types with incremental state vs the free functions
            const std::size_t prompt = in.ConsumeIntegralInRange<std::size_t>(0, history.size());
            switch (in.ConsumeIntegralInRange<int>(0, 3)) {
                case 0: {
                    dk::penalty_params p;
                    p.repetition = in.ConsumeBool() ? 1.f : dk_fuzz::consume_param(in, 1e-3f, 10.f);
                    p.frequency = in.ConsumeBool() ? 0.f : dk_fuzz::consume_param(in, -4.f, 4.f);
                    p.presence = in.ConsumeBool() ? 0.f : dk_fuzz::consume_param(in, -4.f, 4.f);
                    p.repetition_scope = dk::penalty_scope(in.ConsumeIntegralInRange<int>(0, 2));
                    p.frequency_scope = dk::penalty_scope(in.ConsumeIntegralInRange<int>(0, 2));
                    p.last_n = in.ConsumeIntegralInRange<std::size_t>(0, 80);
                    if (p.check()) break;
                    run_incremental(
                        in, dk::penalties_processor(p),
                        [&](std::span<float> y, const dk::processor_context& c) {
                            dk::penalty_workspace ws(vocab);
                            dk::apply_penalties(y, c.history, c.prompt_length, p, ws);
                        },
                        history, prompt, before, vocab);
                    break;
                }
                case 1: {
                    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 6);
                    if (history.size() > 3000) history.resize(3000);
                    run_incremental(
                        in, dk::no_repeat_ngram_processor(n),
                        [&](std::span<float> y, const dk::processor_context& c) {
                            dk::apply_no_repeat_ngram(y, c.history, n);
                        },
                        history, prompt, before, vocab);
                    break;
                }
                case 2: {
                    dk::dry_params p;
                    p.multiplier = dk_fuzz::consume_param(in, 0.f, 4.f);
                    p.base = dk_fuzz::consume_param(in, 1.f, 4.f);
                    p.allowed_length = in.ConsumeIntegralInRange<std::size_t>(1, 6);
                    p.penalty_last_n = in.ConsumeIntegralInRange<std::size_t>(0, 300);
                    for (std::size_t i = in.ConsumeIntegralInRange<std::size_t>(0, 3); i > 0; --i)
                        p.sequence_breakers.push_back(dk_fuzz::consume_token(in, vocab));
                    if (in.ConsumeBool())
                        p.sequence_breaker_sequences.push_back(
                            dk_fuzz::consume_tokens(in, vocab, 3));
                    if (p.check()) break;
                    const std::size_t max_history = in.ConsumeIntegralInRange<std::size_t>(0, 64);
                    run_incremental(
                        in, dk::dry_processor(p, max_history),
                        [&](std::span<float> y, const dk::processor_context& c) {
                            dk::dry_workspace ws(vocab, max_history);
                            dk::apply_dry(y, c.history, p, ws);
                        },
                        history, prompt, before, vocab);
                    break;
                }
                default: {
                    std::vector<std::vector<token_id>> seqs(
                        in.ConsumeIntegralInRange<std::size_t>(0, 5));
                    for (auto& q : seqs) q = dk_fuzz::consume_tokens(in, vocab, 4);
                    const auto eos = dk_fuzz::consume_tokens(in, vocab, 3);
                    std::vector<std::vector<token_id>> kept;  // Hugging Face's EOS rule
                    for (const auto& q : seqs)
                        if (!(q.size() == 1 &&
                              std::find(eos.begin(), eos.end(), q[0]) != eos.end()))
                            kept.push_back(q);
                    run_incremental(
                        in, dk::banned_sequences_processor(seqs, eos),
                        [&](std::span<float> y, const dk::processor_context& c) {
                            dk::apply_banned_sequences(y, c.history, kept);
                        },
                        history, prompt, before, vocab);
                    break;
                }
            }
            break;
        }
        case 9: {                                             // Hugging Face's processors
            if (history.size() > 3000) history.resize(3000);  // the naive oracles are O(N)
            const std::size_t prompt = in.ConsumeIntegralInRange<std::size_t>(0, history.size());
            fuzz_hf(in, history, prompt, before, vocab);
            break;
        }
    }
    return 0;
}
