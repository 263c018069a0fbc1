/// \file fuzz/fuzz_sampler.cpp
/// sampling_params decoded from bytes + a logits row through decodekit::sampler.
/// Invalid params: check() must name a field, and constructing a sampler must throw
/// config_error with the same message (never construct-and-use). Valid params: sample() and
/// distribution() on arbitrary rows (NaN, +-inf, all -inf, wrong size) with arbitrary histories.
/// Oracles: status/token consistency; the token is in range, not NaN/-inf in the caller's row,
/// not banned, allowed, and inside distribution()'s support; distribution() is sorted, sums to 1;
/// sample() is reproducible for the same key and state; without processors a row with a valid
/// entry always gives a token. Then a token bitmask (random words, all-zero, all-one, tail bits
/// past the vocabulary, or short): a short mask gives bad_input; otherwise distribution() under
/// the mask equals distribution() of the masked row (same ids, probabilities within 1e-4), and
/// sample() draws an allowed token of its support, or reports no_allowed_token /
/// no_valid_token with an empty distribution. Input: [vocab][params...][row][history][key]
/// [mask].

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "fuzz_params.hpp"

namespace dk = decodekit;
using dk::token_id;

namespace {

/// The distribution as (id, prob) sorted by id.
std::vector<std::pair<token_id, float>> by_id(const dk::distribution& d) {
    std::vector<std::pair<token_id, float>> v;
    for (std::size_t i = 0; i < d.size(); ++i) v.emplace_back(d.tokens[i], d.probs[i]);
    std::sort(v.begin(), v.end());
    return v;
}

void check_mask(FuzzedDataProvider& in, dk::sampler& s, const std::vector<float>& row,
                dk::sample_context ctx) {
    if (in.remaining_bytes() == 0) return;
    const std::size_t vocab = row.size();
    const int kind = in.ConsumeIntegralInRange<int>(0, 4);  // random, zero, one, tail, short
    std::vector<std::uint32_t> words(dk::kernels::bitmask_words(vocab) + (kind == 3 ? 1 : 0));
    for (std::uint32_t& w : words)
        w = kind == 1 ? 0u : kind == 2 ? ~0u : in.ConsumeIntegral<std::uint32_t>();
    std::size_t size = kind == 3 ? 32 * words.size() : vocab;
    if (kind == 4) {
        if (in.ConsumeBool() || words.size() == 0)
            size = in.ConsumeIntegralInRange<std::size_t>(0, vocab - 1);
        else
            words.pop_back();
    }
    ctx.mask = {.words = words, .size = size};
    const dk::distribution dmv = s.distribution(row, ctx);
    const auto dm = by_id(dmv);
    const dk::sampler_state st = s.state();
    const dk::sample_result r = s.sample(row, ctx);
    if (kind == 4) {
        DK_FUZZ_CHECK(r.status == dk::sample_status::bad_input, "short mask: status %d",
                      int(r.status));
        DK_FUZZ_CHECK(dm.empty(), "short mask: distribution has %zu entries", dm.size());
        return;
    }
    std::vector<float> masked(row);
    dk::kernels::apply_token_bitmask_inplace(masked, ctx.mask);
    s.restore(st);
    dk::sample_context plain = ctx;
    plain.mask = {};
    const auto want = by_id(s.distribution(masked, plain));
    DK_FUZZ_CHECK(dm.size() == want.size(), "masked distribution: %zu entries, masked row %zu",
                  dm.size(), want.size());
    for (std::size_t i = 0; i < dm.size(); ++i) {
        DK_FUZZ_CHECK(dm[i].first == want[i].first, "masked distribution id %d vs %d", dm[i].first,
                      want[i].first);
        DK_FUZZ_CHECK(std::fabs(dm[i].second - want[i].second) <= 1e-4f,
                      "masked distribution prob %g vs %g (id %d)", dm[i].second, want[i].second,
                      dm[i].first);
        DK_FUZZ_CHECK(ctx.mask.allowed(std::size_t(dm[i].first)), "disallowed id %d in support",
                      dm[i].first);
    }
    if (!r.ok()) {
        DK_FUZZ_CHECK(r.status == dk::sample_status::no_allowed_token ||
                          r.status == dk::sample_status::no_valid_token,
                      "masked: status %d", int(r.status));
        DK_FUZZ_CHECK(dm.empty(), "masked: no token but %zu entries", dm.size());
        if (kind == 1 && std::any_of(row.begin(), row.end(),
                                     [](float v) { return !std::isnan(v) && v != -dk_fuzz::inf; }))
            DK_FUZZ_CHECK(r.status == dk::sample_status::no_allowed_token,
                          "all-zero mask: status %d", int(r.status));
        return;
    }
    DK_FUZZ_CHECK(ctx.mask.allowed(std::size_t(r.token)), "drew disallowed token %d", r.token);
    DK_FUZZ_CHECK(
        std::any_of(dm.begin(), dm.end(), [&](const auto& e) { return e.first == r.token; }),
        "masked token %d outside distribution()", r.token);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 40);
    if (in.ConsumeIntegralInRange<int>(0, 31) == 0)  // several 2048-entry draw blocks
        vocab = in.ConsumeIntegralInRange<std::size_t>(1, 9000);
    const dk::sampling_params p = dk_fuzz::consume_sampling_params(in, vocab);

    if (const auto problem = p.check()) {
        DK_FUZZ_CHECK(problem->find("sampling_params.") == 0, "message does not name the field: %s",
                      problem->c_str());
#if DECODEKIT_EXCEPTIONS
        bool thrown = false;
        try {
            dk::sampler s(p, vocab);
        } catch (const dk::config_error& e) {
            thrown = true;
            DK_FUZZ_CHECK(*problem == e.what(), "config_error '%s' != check() '%s'", e.what(),
                          problem->c_str());
        }
        DK_FUZZ_CHECK(thrown, "invalid params accepted by the constructor: %s", problem->c_str());
#endif
        return 0;
    }

    dk::sampler s(p, vocab);
    std::size_t n = vocab;
    if (in.ConsumeIntegralInRange<int>(0, 15) == 0)
        n = in.ConsumeIntegralInRange<std::size_t>(0, vocab + 2);
    std::vector<float> row;
    dk_fuzz::fill_row(in, row, std::min<std::size_t>(n, 64), in.ConsumeIntegralInRange<int>(0, 2));
    if (!row.empty()) {  // larger rows: repeat the fuzzed prefix
        const std::size_t n0 = row.size();
        row.resize(n);
        for (std::size_t i = n0; i < n; ++i) row[i] = row[i % n0];
    }
    const std::vector<token_id> history = dk_fuzz::consume_tokens(in, vocab, 40);
    dk::sample_context ctx;
    ctx.history = history;
    ctx.prompt_length = in.ConsumeIntegralInRange<std::size_t>(0, history.size() + 2);
    ctx.sequence = in.ConsumeIntegral<std::uint64_t>();
    ctx.step = in.ConsumeIntegral<std::uint64_t>();

    // distribution() first (it does not update mirostat's mu), copied out of the workspace.
    const dk::distribution d = s.distribution(row, ctx);
    DK_FUZZ_CHECK(d.tokens.size() == d.probs.size(), "distribution: %zu tokens, %zu probs",
                  d.tokens.size(), d.probs.size());
    const std::vector<token_id> dt(d.tokens.begin(), d.tokens.end());
    const std::vector<float> dp(d.probs.begin(), d.probs.end());
    double total = 0;
    for (std::size_t i = 0; i < dt.size(); ++i) {
        DK_FUZZ_CHECK(dt[i] >= 0 && std::size_t(dt[i]) < vocab, "distribution token %d", dt[i]);
        DK_FUZZ_CHECK(dp[i] >= 0 && dp[i] <= 1.0001f, "distribution prob %g", dp[i]);
        if (i > 0)
            // Non-increasing probabilities. (Equal float probabilities may come in either id
            // order: the sort is by processed logit, ties by id, and logits 0 and -2.8e-20 give
            // the same probability; noted in the report.)
            DK_FUZZ_CHECK(dp[i - 1] >= dp[i],
                          "distribution not sorted at %zu (%.9g,%d then %.9g,%d; logits %.9g %.9g; "
                          "T=%g, order %d, processors %d)",
                          i, dp[i - 1], dt[i - 1], dp[i], dt[i],
                          n == vocab ? row[std::size_t(dt[i - 1])] : 0.f,
                          n == vocab ? row[std::size_t(dt[i])] : 0.f, p.temperature, int(p.order),
                          int(p.has_processors()));
        total += dp[i];
    }
    if (!dt.empty()) DK_FUZZ_CHECK(std::fabs(total - 1) < 1e-3, "distribution sums to %.9g", total);

    const dk::sampler_state st = s.state();
    const dk::sample_result r = s.sample(row, ctx);
    if (n != vocab) {
        DK_FUZZ_CHECK(r.status == dk::sample_status::bad_input && r.token == -1,
                      "wrong-size row: status %d token %d", int(r.status), r.token);
        DK_FUZZ_CHECK(dt.empty(), "distribution of a wrong-size row is not empty");
        return 0;
    }
    DK_FUZZ_CHECK(r.status != dk::sample_status::bad_input, "bad_input for a right-size row");
    if (!r.ok()) {
        DK_FUZZ_CHECK(r.token == -1, "status no_valid_token with token %d", r.token);
        DK_FUZZ_CHECK(dt.empty(), "no token drawn but distribution has %zu entries", dt.size());
        if (!p.has_processors()) {
            const bool any_valid = std::any_of(row.begin(), row.end(), [](float v) {
                return !std::isnan(v) && v != -dk_fuzz::inf;
            });
            DK_FUZZ_CHECK(!any_valid, "a row with a valid entry gave no token (no processors)");
        }
        return 0;
    }
    const token_id t = r.token;
    DK_FUZZ_CHECK(t >= 0 && std::size_t(t) < vocab, "token %d out of range", t);
    DK_FUZZ_CHECK(!std::isnan(row[std::size_t(t)]) && row[std::size_t(t)] != -dk_fuzz::inf,
                  "drew token %d whose logit is %g", t, row[std::size_t(t)]);
    for (token_id b : p.banned_tokens) DK_FUZZ_CHECK(b != t, "drew banned token %d", t);
    if (!p.allowed_tokens.empty())
        DK_FUZZ_CHECK(std::find(p.allowed_tokens.begin(), p.allowed_tokens.end(), t) !=
                          p.allowed_tokens.end(),
                      "drew token %d outside the allowed set", t);
    if (p.logprobs.chosen)
        DK_FUZZ_CHECK(!std::isnan(r.logprob) && r.logprob <= 1e-4f, "logprob %g", r.logprob);
    else
        DK_FUZZ_CHECK(std::isnan(r.logprob) || r.logprob <= 1e-4f, "logprob %g (chosen off)",
                      r.logprob);
    const auto it = std::find(dt.begin(), dt.end(), t);
    DK_FUZZ_CHECK(it != dt.end(), "token %d is not in distribution() (%zu entries)", t, dt.size());
    DK_FUZZ_CHECK(dp[std::size_t(it - dt.begin())] > 0, "token %d has probability 0", t);
    if (p.logprobs.top_n > 0)
        DK_FUZZ_CHECK(r.top.size() <= p.logprobs.top_n, "too many top entries");
    DK_FUZZ_CHECK(r.requested.size() == p.logprobs.ids.size(), "requested: %zu for %zu ids",
                  r.requested.size(), p.logprobs.ids.size());
    if (p.logprobs.rank) DK_FUZZ_CHECK(r.rank >= 1 && r.rank <= vocab, "rank %zu", r.rank);

    // Reproducible: same key, same state -> same token.
    s.restore(st);
    const dk::sample_result r2 = s.sample(row, ctx);
    DK_FUZZ_CHECK(r2.token == t, "same key gave %d then %d", t, r2.token);
    check_mask(in, s, row, ctx);
    return 0;
}
