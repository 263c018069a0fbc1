// Beam search against exhaustive search on the toy model, hand-computed trees, and the options.
#include "dk_test.hpp"
#include "naive_processors.hpp"
#include "toy_model.hpp"

#include <algorithm>
#include <cmath>
#include <map>
#include <tuple>
#include <vector>

// One namespace per test file: the unity groups (tests/CMakeLists.txt) compile several
// files as one translation unit.
namespace dk_t_beam_search {

using namespace decodekit;
using dk_test::toy_model;
using dk_test::toy_model_config;

namespace {

// |a - b| <= rel * max(1, |b|) (dk_test::Approx does not take scalars with Catch2 2.13 here).
bool near(double a, double b, double rel = 1e-6) {
    return std::abs(a - b) <= rel * std::max(1.0, std::abs(b));
}

// The EOS rule: hypotheses' tokens exclude a final EOS (the references below keep it).
std::vector<token_id> without_eos(std::vector<token_id> t, token_id eos) {
    if (!t.empty() && t.back() == eos) t.pop_back();
    return t;
}

// log-softmax in double, written independently of the library.
std::vector<double> log_probs(const std::vector<float>& x) {
    double m = -INFINITY;
    for (float v : x) m = std::max(m, double(v));
    double s = 0;
    for (float v : x) s += std::exp(double(v) - m);
    std::vector<double> out(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) out[i] = double(x[i]) - m - std::log(s);
    return out;
}

struct seq_score {
    std::vector<token_id> tokens;
    double sum;
    double score;
};

// Every complete sequence of at most max_new tokens (ending with EOS, or of length max_new
// without EOS), scored sum / len^lp; `pr`: the processors of every row (banned tokens: no
// sequence).
std::vector<seq_score> enumerate(const toy_model& m, const std::vector<token_id>& prompt,
                                 std::size_t max_new, token_id eos, double lp, bool with_prompt,
                                 const dk_test::naive_processors& pr = {}) {
    std::vector<seq_score> all;
    const std::size_t V = m.vocab_size();
    auto rec = [&](auto&& self, std::vector<token_id>& ctx, double sum, std::size_t gen) -> void {
        const auto lps = log_probs(pr(m.logits_of(ctx), ctx, prompt.size()));
        for (std::size_t v = 0; v < V; ++v) {
            if (std::isinf(lps[v])) continue;
            const double s = sum + lps[v];
            ctx.push_back(token_id(v));
            const std::size_t len = gen + 1;
            if (token_id(v) == eos || len == max_new) {
                const double L = double(len + (with_prompt ? prompt.size() : 0));
                all.push_back(
                    {std::vector<token_id>(ctx.begin() + std::ptrdiff_t(prompt.size()), ctx.end()),
                     s, s / std::pow(L, lp)});
            } else {
                self(self, ctx, s, len);
            }
            ctx.pop_back();
        }
    };
    std::vector<token_id> ctx = prompt;
    rec(rec, ctx, 0.0, 0);
    std::stable_sort(all.begin(), all.end(),
                     [](const seq_score& a, const seq_score& b) { return a.score > b.score; });
    return all;
}

std::vector<token_id> greedy(const toy_model& m, std::vector<token_id> ctx, std::size_t max_new,
                             token_id eos, const dk_test::naive_processors& pr = {}) {
    std::vector<token_id> out;
    const std::size_t prompt_length = ctx.size();
    for (std::size_t i = 0; i < max_new; ++i) {
        const auto x = pr(m.logits_of(ctx), ctx, prompt_length);
        if (!(*std::max_element(x.begin(), x.end()) > -INFINITY)) break;  // nothing allowed
        const token_id t = token_id(std::max_element(x.begin(), x.end()) - x.begin());
        out.push_back(t);
        ctx.push_back(t);
        if (t == eos) break;
    }
    return out;
}

}  // namespace

TEST_CASE("beam search equals the exhaustive optimum where it is guaranteed", "[beam]") {
    // V = 4, EOS = 3, 3 new tokens: at most 9 live prefixes, 36 candidates per step; 36 beams
    // prune nothing, so `never` (a true bound) must return the exhaustive n-best for every
    // length penalty, and `heuristic` too when lp <= 0 (its bound is then exact).
    const double lps[] = {-1.0, 0.0, 0.5, 1.0, 2.0};
    for (std::uint64_t seed : {1u, 2u, 3u}) {
        toy_model m({.vocab_size = 4, .seed = seed, .scale = 1.5f, .eos_id = 3, .eos_bias = 0.3f});
        const std::vector<token_id> prompt = {1, 0};
        for (double lp : lps)
            for (bool with_prompt : {false, true})
                for (early_stopping es :
                     {early_stopping::never, early_stopping::heuristic, early_stopping::first_n}) {
                    if (es == early_stopping::heuristic && lp > 0) continue;
                    const auto ex = enumerate(m, prompt, 3, 3, lp, with_prompt);
                    const auto r = beam_search(m, prompt,
                                               {.num_beams = 36,
                                                .num_return = 5,
                                                .max_new_tokens = 3,
                                                .length_penalty = float(lp),
                                                .length_includes_prompt = with_prompt,
                                                .stopping = es,
                                                .eos_ids = {3}});
                    INFO("seed " << seed << " lp " << lp << " prompt " << with_prompt << " es "
                                 << int(es));
                    REQUIRE(r.hypotheses.size() == 5);
                    for (std::size_t i = 0; i < 5; ++i) {
                        CHECK(r.hypotheses[i].tokens == without_eos(ex[i].tokens, 3));
                        CHECK(near(r.hypotheses[i].score, ex[i].score, 1e-5));
                        CHECK(near(r.hypotheses[i].sum_logprobs, ex[i].sum, 1e-5));
                        CHECK(r.hypotheses[i].eos == (ex[i].tokens.back() == 3));
                        CHECK(
                            r.hypotheses[i].reason ==
                            (r.hypotheses[i].eos ? stop_reason::eos : stop_reason::max_new_tokens));
                    }
                    CHECK(r.tokens == r.hypotheses[0].tokens);  // the result's best
                    CHECK(r.reason == r.hypotheses[0].reason);
                    CHECK(r.model_calls == r.steps);
                }
    }
}

namespace {
// An independent transcription of Hugging Face's beam search (BeamSearchScorer.process,
// BeamHypotheses.add / is_done, finalize) with one EOS id; `stop_early` = false runs every
// step to max_new (no early stopping at all).
struct ref_result {
    std::vector<seq_score> hyps;  // best first
    std::size_t steps = 0;
};
// `pr`: the processors of every beam row (on the logits, then log-softmax; banned tokens are
// no candidates).
ref_result reference_beam(const toy_model& m, const std::vector<token_id>& prompt, std::size_t B,
                          std::size_t max_new, double lp, bool with_prompt, early_stopping es,
                          token_id eos, bool stop_early, const dk_test::naive_processors& pr = {},
                          bool hf_input = false) {
    struct beam {
        std::vector<token_id> seq;
        double sum;
    };
    std::vector<beam> running = {{prompt, 0.0}};
    std::vector<seq_score> hyps;
    auto len = [&](std::size_t gen) { return double(gen + (with_prompt ? prompt.size() : 0)); };
    auto add = [&](const std::vector<token_id>& seq, double sum, std::size_t gen) {
        const double score = sum / std::pow(len(gen), lp);
        auto worst = std::min_element(hyps.begin(), hyps.end(),
                                      [](auto& a, auto& b) { return a.score < b.score; });
        if (hyps.size() < B || score > worst->score) {
            if (hyps.size() == B) hyps.erase(worst);
            hyps.push_back(
                {std::vector<token_id>(seq.begin() + std::ptrdiff_t(prompt.size()), seq.end()), sum,
                 score});
        }
    };
    bool done = false;
    std::size_t cur = 0;
    while (cur < max_new && !done && !running.empty()) {
        ++cur;
        std::vector<std::tuple<double, std::size_t, token_id>> c;
        for (std::size_t b = 0; b < running.size(); ++b) {
            // HF (hf_input): processors on the log-softmax, not renormalised
            const auto l =
                hf_input
                    ? pr(log_probs(m.logits_of(running[b].seq)), running[b].seq, prompt.size())
                    : log_probs(pr(m.logits_of(running[b].seq), running[b].seq, prompt.size()));
            for (std::size_t v = 0; v < l.size(); ++v)
                if (!std::isinf(l[v])) c.emplace_back(running[b].sum + l[v], b, token_id(v));
        }
        std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) {
            if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
            if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
            return std::get<2>(a) < std::get<2>(b);
        });
        c.resize(std::min(c.size(), 2 * B));
        std::vector<beam> next;
        for (std::size_t r = 0; r < c.size() && next.size() < B; ++r) {
            const auto& [sc, b, v] = c[r];
            auto seq = running[b].seq;
            seq.push_back(v);
            if (v == eos) {
                if (r < B) add(seq, sc, cur);
            } else {
                next.push_back({seq, sc});
            }
        }
        running = next;
        if (stop_early && hyps.size() >= B) {
            const double best = std::get<0>(c[0]);
            if (es == early_stopping::first_n)
                done = true;
            else {
                const std::size_t L = (es == early_stopping::never && lp > 0) ? max_new : cur;
                double worst = INFINITY;
                for (auto& h : hyps) worst = std::min(worst, h.score);
                done = worst >= best / std::pow(len(L), lp);
            }
        }
    }
    if (!done)
        for (auto& b : running) add(b.seq, b.sum, cur);
    std::stable_sort(hyps.begin(), hyps.end(),
                     [](const seq_score& a, const seq_score& b) { return a.score > b.score; });
    return {hyps, cur};
}
}  // namespace

TEST_CASE("beam search equals a transcription of HF's beam search; `never` equals no stopping",
          "[beam]") {
    // Narrow beams on deeper trees: pruning and early stopping both happen here.
    std::size_t stopped_early = 0, heuristic_differs = 0;
    for (std::uint64_t seed = 1; seed <= 12; ++seed)
        for (std::size_t B : {2u, 3u})
            for (double lp : {-0.5, 0.0, 1.0, 2.0})
                for (bool with_prompt : {false, true})
                    for (early_stopping es : {early_stopping::first_n, early_stopping::heuristic,
                                              early_stopping::never}) {
                        toy_model m({.vocab_size = 5,
                                     .seed = seed,
                                     .scale = 1.5f,
                                     .eos_id = 4,
                                     .eos_bias = 1.0f});
                        const std::vector<token_id> prompt = {2, 3, 1};
                        const auto ref =
                            reference_beam(m, prompt, B, 6, lp, with_prompt, es, 4, true);
                        const auto r = beam_search(m, prompt,
                                                   {.num_beams = B,
                                                    .num_return = B,
                                                    .max_new_tokens = 6,
                                                    .length_penalty = float(lp),
                                                    .length_includes_prompt = with_prompt,
                                                    .stopping = es,
                                                    .eos_ids = {4}});
                        INFO("seed " << seed << " B " << B << " lp " << lp << " prompt "
                                     << with_prompt << " es " << int(es));
                        CHECK(r.steps == ref.steps);
                        REQUIRE(r.hypotheses.size() == ref.hyps.size());
                        for (std::size_t i = 0; i < ref.hyps.size(); ++i) {
                            CHECK(r.hypotheses[i].tokens == without_eos(ref.hyps[i].tokens, 4));
                            CHECK(near(r.hypotheses[i].score, ref.hyps[i].score, 1e-5));
                        }
                        stopped_early += ref.steps < 6;
                        if (es == early_stopping::heuristic && lp > 0) {
                            const auto full =
                                reference_beam(m, prompt, B, 6, lp, with_prompt, es, 4, false);
                            for (std::size_t i = 0; i < full.hyps.size(); ++i)
                                heuristic_differs += r.hypotheses.at(i).tokens !=
                                                     without_eos(full.hyps[i].tokens, 4);
                        }
                        if (es == early_stopping::never) {  // a true bound: same as no stopping
                            const auto full =
                                reference_beam(m, prompt, B, 6, lp, with_prompt, es, 4, false);
                            REQUIRE(full.hyps.size() == r.hypotheses.size());
                            for (std::size_t i = 0; i < full.hyps.size(); ++i)
                                CHECK(r.hypotheses[i].tokens ==
                                      without_eos(full.hyps[i].tokens, 4));
                        }
                    }
    CHECK(stopped_early > 20);  // early stopping was exercised
    // Negative control: HF's heuristic (not a bound for lp > 0) does lose hypotheses here.
    INFO("heuristic differs from no stopping in " << heuristic_differs << " hypotheses");
    CHECK(heuristic_differs > 0);
}

namespace {
// Hugging Face's group (diverse) beam search, transcribed: groups in order; group g's
// log-probabilities are lowered by lambda times how often earlier groups chose each token at
// this step; each group is a beam search of width B / G with its own hypotheses; the n-best is
// taken over all groups' hypotheses.
std::vector<seq_score> reference_group_beam(const toy_model& m, const std::vector<token_id>& prompt,
                                            std::size_t B, std::size_t G, double lambda,
                                            std::size_t max_new, double lp, early_stopping es,
                                            token_id eos) {
    const std::size_t gs = B / G;
    struct beam {
        std::vector<token_id> seq;
        double sum;
    };
    struct group {
        std::vector<beam> running;
        std::vector<seq_score> hyps;
        bool done = false;
    };
    std::vector<group> groups(G);
    for (auto& g : groups) g.running = {{prompt, 0.0}};
    auto add = [&](group& g, const std::vector<token_id>& seq, double sum, std::size_t gen) {
        const double score = sum / std::pow(double(gen), lp);
        auto worst = std::min_element(g.hyps.begin(), g.hyps.end(),
                                      [](auto& a, auto& b) { return a.score < b.score; });
        if (g.hyps.size() < gs || score > worst->score) {
            if (g.hyps.size() == gs) g.hyps.erase(worst);
            g.hyps.push_back(
                {std::vector<token_id>(seq.begin() + std::ptrdiff_t(prompt.size()), seq.end()), sum,
                 score});
        }
    };
    std::size_t cur = 0;
    while (cur < max_new) {
        bool all_done = true;
        for (auto& g : groups) all_done = all_done && g.done;
        if (all_done) break;
        ++cur;
        std::vector<int> freq(m.vocab_size(), 0);
        for (auto& g : groups) {
            if (g.done) continue;
            std::vector<std::tuple<double, std::size_t, token_id>> c;
            for (std::size_t b = 0; b < g.running.size(); ++b) {
                const auto l = log_probs(m.logits_of(g.running[b].seq));
                for (std::size_t v = 0; v < l.size(); ++v)
                    c.emplace_back(g.running[b].sum + l[v] - lambda * freq[v], b, token_id(v));
            }
            std::sort(c.begin(), c.end(), [](const auto& a, const auto& b) {
                if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
                if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
                return std::get<2>(a) < std::get<2>(b);
            });
            c.resize(std::min(c.size(), 2 * gs));
            std::vector<beam> next;
            for (std::size_t r = 0; r < c.size() && next.size() < gs; ++r) {
                const auto& [sc, b, v] = c[r];
                auto seq = g.running[b].seq;
                seq.push_back(v);
                if (v == eos) {
                    if (r < gs) add(g, seq, sc, cur);
                } else {
                    next.push_back({seq, sc});
                }
            }
            for (auto& nb : next) ++freq[std::size_t(nb.seq.back())];
            g.running = next;
            if (g.running.empty())
                g.done = true;
            else if (g.hyps.size() >= gs) {
                if (es == early_stopping::first_n)
                    g.done = true;
                else {
                    const std::size_t L = (es == early_stopping::never && lp > 0) ? max_new : cur;
                    double worst = INFINITY;
                    for (auto& h : g.hyps) worst = std::min(worst, h.score);
                    g.done = worst >= std::get<0>(c[0]) / std::pow(double(L), lp);
                }
            }
        }
    }
    std::vector<seq_score> all;
    for (auto& g : groups) {
        if (!g.done)
            for (auto& b : g.running) add(g, b.seq, b.sum, cur);
        all.insert(all.end(), g.hyps.begin(), g.hyps.end());
    }
    std::stable_sort(all.begin(), all.end(),
                     [](const seq_score& a, const seq_score& b) { return a.score > b.score; });
    return all;
}
}  // namespace

TEST_CASE("diverse beam search equals a transcription of HF's group beam search", "[beam]") {
    for (std::uint64_t seed = 1; seed <= 10; ++seed)
        for (double lambda : {0.0, 0.5, 3.0})
            for (double lp : {0.0, 1.0})
                for (early_stopping es :
                     {early_stopping::first_n, early_stopping::heuristic, early_stopping::never}) {
                    toy_model m({.vocab_size = 6,
                                 .seed = seed,
                                 .scale = 1.5f,
                                 .eos_id = 5,
                                 .eos_bias = 0.8f});
                    const std::vector<token_id> prompt = {1, 2};
                    const auto ref = reference_group_beam(m, prompt, 4, 2, lambda, 5, lp, es, 5);
                    const auto r = beam_search(m, prompt,
                                               {.num_beams = 4,
                                                .num_return = 4,
                                                .max_new_tokens = 5,
                                                .length_penalty = float(lp),
                                                .stopping = es,
                                                .eos_ids = {5},
                                                .num_groups = 2,
                                                .diversity_penalty = float(lambda)});
                    INFO("seed " << seed << " lambda " << lambda << " lp " << lp << " es "
                                 << int(es));
                    REQUIRE(r.hypotheses.size() == std::min<std::size_t>(4, ref.size()));
                    for (std::size_t i = 0; i < r.hypotheses.size(); ++i) {
                        CHECK(r.hypotheses[i].tokens == without_eos(ref[i].tokens, 5));
                        CHECK(near(r.hypotheses[i].score, ref[i].score, 1e-5));
                    }
                }
}

TEST_CASE("negative control: a narrow beam misses the exhaustive n-best somewhere", "[beam]") {
    // The exhaustive comparison above can fail: with 2 beams, pruning loses some of the exact
    // 2-best on these trees (scores are never better than the exact ones).
    std::size_t misses = 0;
    for (std::uint64_t seed = 1; seed <= 30; ++seed)
        for (double lp : {0.0, 1.0}) {
            toy_model m(
                {.vocab_size = 4, .seed = seed, .scale = 1.5f, .eos_id = 3, .eos_bias = 0.3f});
            const std::vector<token_id> prompt = {1, 0};
            const auto ex = enumerate(m, prompt, 3, 3, lp, false);
            const auto r = beam_search(m, prompt,
                                       {.num_beams = 2,
                                        .num_return = 2,
                                        .max_new_tokens = 3,
                                        .length_penalty = float(lp),
                                        .stopping = early_stopping::never,
                                        .eos_ids = {3}});
            REQUIRE(r.hypotheses.size() == 2);
            for (std::size_t i = 0; i < 2; ++i) {
                misses += r.hypotheses[i].tokens != without_eos(ex[i].tokens, 3);
                CHECK(r.hypotheses[i].score <= ex[i].score + 1e-6);
            }
        }
    CHECK(misses > 0);
}

TEST_CASE("beam width 1 equals greedy decoding (first_n and heuristic)", "[beam]") {
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
        toy_model m({.vocab_size = 6, .seed = seed, .scale = 2.f, .eos_id = 5, .eos_bias = 0.5f});
        const std::vector<token_id> prompt = {2, 4, 1};
        const auto g = greedy(m, prompt, 12, 5);
        for (early_stopping es : {early_stopping::first_n, early_stopping::heuristic}) {
            const auto r = beam_search(
                m, prompt, {.num_beams = 1, .max_new_tokens = 12, .stopping = es, .eos_ids = {5}});
            REQUIRE(r.hypotheses.size() == 1);
            CHECK(r.hypotheses[0].tokens == without_eos(g, 5));
        }
    }
}

namespace {
// A hand-made tree over V = 3 (EOS = 2): from the prompt, p = {0.3, 0.2, 0.5}; after token 0,
// p(EOS) = 0.98; elsewhere uniform.
toy_model hand_tree() {
    toy_model m({.vocab_size = 3});
    m.set_logits_function([](std::span<const token_id> ctx, std::span<float> out) {
        if (ctx.size() == 2) {
            out[0] = std::log(0.3f), out[1] = std::log(0.2f), out[2] = std::log(0.5f);
        } else if (ctx.size() == 3 && ctx[2] == 0) {
            out[0] = std::log(0.01f), out[1] = std::log(0.01f), out[2] = std::log(0.98f);
        } else {
            out[0] = out[1] = out[2] = 0.f;
        }
    });
    return m;
}
}  // namespace

TEST_CASE("early stopping policies and prompt counting on a hand-computed tree", "[beam]") {
    toy_model m = hand_tree();
    const std::vector<token_id> prompt = {7, 7};
    beam_search_params p{
        .num_beams = 1, .max_new_tokens = 4, .length_penalty = 1.f, .eos_ids = {2}};
    // [EOS]: log 0.5 / 1 = -0.693; [0, EOS]: (log 0.3 + log 0.98) / 2 = -0.612.
    p.stopping = early_stopping::first_n;
    auto r = beam_search(m, prompt, p);
    CHECK(r.hypotheses[0].tokens.empty());  // [EOS]: the EOS is not returned
    CHECK(r.hypotheses[0].eos);
    CHECK(near(r.hypotheses[0].score, std::log(0.5)));
    CHECK(r.steps == 1);
    p.stopping = early_stopping::heuristic;  // bound = best candidate (the EOS) itself: stops
    r = beam_search(m, prompt, p);
    CHECK(r.hypotheses[0].tokens.empty());
    CHECK(r.reason == stop_reason::eos);
    p.stopping = early_stopping::never;  // bound at max length 4 keeps the 0-beam alive
    r = beam_search(m, prompt, p);
    CHECK(r.hypotheses[0].tokens == std::vector<token_id>{0});
    CHECK(near(r.hypotheses[0].score, (std::log(0.3) + std::log(0.98)) / 2));
    // After step 2 the bound is the best candidate sum (-1.224, the EOS) / 4 = -0.306 > -0.612:
    // go on; after step 3 it is (log 0.3 + log 0.01 + log 1/3) / 4 = -1.73 < -0.612: stop.
    CHECK(r.steps == 3);
    // Counting the prompt: [EOS] = -0.693 / 3 = -0.231 beats [0, EOS] = -1.224 / 4 = -0.306.
    p.length_includes_prompt = true;
    r = beam_search(m, prompt, p);
    CHECK(r.hypotheses[0].tokens.empty());
    CHECK(r.hypotheses[0].eos);
    CHECK(near(r.hypotheses[0].score, std::log(0.5) / 3));
    // An EOS ranked >= num_beams is not a hypothesis: with p(EOS) second, width 1 never
    // finishes on it (negative control of the rank rule: lp = 0 would prefer it).
    toy_model m2({.vocab_size = 3});
    m2.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        out[0] = std::log(0.6f), out[1] = std::log(0.0001f), out[2] = std::log(0.3999f);
    });
    r = beam_search(m2, prompt,
                    {.num_beams = 1,
                     .max_new_tokens = 3,
                     .length_penalty = 0.f,
                     .stopping = early_stopping::never,
                     .eos_ids = {2}});
    CHECK(r.hypotheses[0].tokens == std::vector<token_id>{0, 0, 0});
    CHECK_FALSE(r.hypotheses[0].eos);
}

TEST_CASE("beam search batches every beam in one model call, slot = beam index", "[beam]") {
    toy_model m({.vocab_size = 16, .seed = 9});
    const std::vector<token_id> prompt = {3};
    const auto r = beam_search(m, prompt, {.num_beams = 4, .num_return = 4, .max_new_tokens = 5});
    CHECK(m.calls == 5);
    CHECK(r.model_calls == 5);
    CHECK(m.sequences == 1 + 4 * 4);
    CHECK(m.last_slots == std::vector<std::uint32_t>{0, 1, 2, 3});
    REQUIRE(r.hypotheses.size() == 4);
    for (std::size_t i = 1; i < 4; ++i) CHECK(r.hypotheses[i - 1].score >= r.hypotheses[i].score);
    for (const auto& h : r.hypotheses) CHECK(h.tokens.size() == 5);
}

TEST_CASE("diverse beam search: groups differ under a diversity penalty", "[beam]") {
    for (std::uint64_t seed = 1; seed <= 10; ++seed) {
        toy_model m({.vocab_size = 8, .seed = seed});
        const std::vector<token_id> prompt = {1};
        beam_search_params p{.num_beams = 2,
                             .num_return = 2,
                             .max_new_tokens = 3,
                             .stopping = early_stopping::never,
                             .num_groups = 2};
        auto same = beam_search(m, prompt, p);  // penalty 0: both groups find the same beam
        REQUIRE(same.hypotheses.size() == 2);
        CHECK(same.hypotheses[0].tokens == same.hypotheses[1].tokens);
        p.diversity_penalty = 100.f;
        auto div = beam_search(m, prompt, p);
        REQUIRE(div.hypotheses.size() == 2);
        for (std::size_t t = 0; t < 3; ++t)
            CHECK(div.hypotheses[0].tokens[t] != div.hypotheses[1].tokens[t]);
        // Group 0 is unpenalised: its hypothesis is the width-1 greedy path.
        const auto g = greedy(m, prompt, 3, -1);
        CHECK((div.hypotheses[0].tokens == g || div.hypotheses[1].tokens == g));
    }
}

TEST_CASE("stochastic beams: the first token of one beam follows softmax(x / T)", "[beam]") {
    toy_model m({.vocab_size = 8, .seed = 4});
    const std::vector<token_id> prompt = {5, 6};
    const float T = 0.7f;
    const auto x = m.logits_of(prompt);
    std::vector<double> p(8);
    double z = 0;
    for (int i = 0; i < 8; ++i) z += p[i] = std::exp(double(x[i]) / T);
    for (auto& v : p) v /= z;
    const std::size_t n = 100000;
    auto counts = dk_test::histogram(8, n, [&](std::size_t i) {
        beam_searcher bs({.num_beams = 1,
                          .max_new_tokens = 1,
                          .stochastic = true,
                          .temperature = T,
                          .seed = 77,
                          .sequence = i},
                         8, prompt);
        bs.advance(x);
        return bs.result().hypotheses.at(0).tokens.at(0);
    });
    const auto gof = dk_test::chi_square(counts, dk_test::with_overflow_bin(p));
    CHECK(gof.p_value > dk_test::false_failure_rate);
    CHECK_FALSE(gof.impossible_draw);
    // Negative control: against T = 1 the same draws must be rejected.
    std::vector<double> q(8);
    z = 0;
    for (int i = 0; i < 8; ++i) z += q[i] = std::exp(double(x[i]));
    for (auto& v : q) v /= z;
    CHECK(dk_test::chi_square(counts, dk_test::with_overflow_bin(q)).p_value < 1e-3);
    // Reproducible by seed, distinct hypotheses without replacement.
    toy_model m4({.vocab_size = 8, .seed = 4});
    const beam_search_params sp{
        .num_beams = 4, .num_return = 4, .max_new_tokens = 4, .stochastic = true, .seed = 5};
    const auto a = beam_search(m4, prompt, sp), b = beam_search(m4, prompt, sp);
    REQUIRE(a.hypotheses.size() == 4);
    for (std::size_t i = 0; i < 4; ++i) CHECK(a.hypotheses[i].tokens == b.hypotheses[i].tokens);
    for (std::size_t i = 0; i < 4; ++i)
        for (std::size_t j = i + 1; j < 4; ++j)
            CHECK(a.hypotheses[i].tokens != a.hypotheses[j].tokens);
}

TEST_CASE("stochastic beams: different (step, group, beam) get different noise", "[beam]") {
    // The old key (cur << 20) | (g << 12) | b made (cur=0, g=256) == (cur=1, g=0) == (1, 256).
    const auto old_key = [](std::uint64_t c, std::uint64_t g, std::uint64_t b) {
        return (c << 20) | (g << 12) | b;
    };
    CHECK(old_key(0, 256, 0) == old_key(1, 0, 0));  // negative control: the collision existed
    CHECK(old_key(1, 256, 0) == old_key(1, 0, 0));
    CHECK(detail::stochastic_beam_step(0, 256, 0) != detail::stochastic_beam_step(1, 0, 0));
    CHECK(detail::stochastic_beam_step(1, 256, 0) != detail::stochastic_beam_step(1, 0, 0));
    const auto noise = [](std::size_t c, std::size_t g, std::size_t b) {
        rng_stream rs =
            make_stream({9, 3, detail::stochastic_beam_step(c, g, b)}, rng_purpose::gumbel);
        return std::vector<double>{rs.gumbel(), rs.gumbel(), rs.gumbel()};
    };
    CHECK(noise(0, 256, 0) != noise(1, 0, 0));
    CHECK(noise(1, 256, 0) != noise(2, 0, 0));
    CHECK(noise(1, 0, 4095) != noise(1, 1, 0));
    // Injective over a grid that crosses the old collision boundaries.
    std::vector<std::uint64_t> keys;
    for (std::size_t c : {0, 1, 2, 17, 4096, 1 << 20})
        for (std::size_t g : {0, 1, 255, 256, 257, 4095})
            for (std::size_t b : {0, 1, 4095})
                keys.push_back(detail::stochastic_beam_step(c, g, b));
    std::sort(keys.begin(), keys.end());
    CHECK(std::adjacent_find(keys.begin(), keys.end()) == keys.end());
}

TEST_CASE("beam_top_candidates equals a full sort of beam_score + logprob", "[beam]") {
    const auto [B, k] = GENERATE(std::pair<std::size_t, std::size_t>{3, 6},
                                 std::pair<std::size_t, std::size_t>{50, 4});
    // (V = 20000: 39 groups of 512 entries, kernels::logsumexp_top_k's group path with a tail)
    const std::size_t V = GENERATE(std::size_t(1000), std::size_t(20000));
    std::vector<float> rows(B * V);
    std::uint64_t s = 1;
    for (auto& v : rows) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        v = float((s >> 40) % 10000) / 1000.f;
    }
    std::vector<double> scores = {-0.5, -0.1, -2.0};
    for (std::size_t b = 3; b < B; ++b) scores.push_back(-0.01 * double(b));
    beam_step_workspace ws(V, B, k);
    std::vector<beam_candidate> out(k);
    REQUIRE(beam_top_candidates(rows, V, scores, out, ws) == k);
    std::vector<std::tuple<double, std::uint32_t, token_id>> all;
    for (std::size_t b = 0; b < B; ++b) {
        std::vector<float> row(rows.begin() + std::ptrdiff_t(b * V),
                               rows.begin() + std::ptrdiff_t((b + 1) * V));
        const auto lp = log_probs(row);
        for (std::size_t v = 0; v < V; ++v) all.emplace_back(scores[b] + lp[v], b, token_id(v));
    }
    // equal logits of one row (10 000 levels: V = 20000 has ties) rank by beam, then token
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) {
        if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
        return std::tie(std::get<1>(a), std::get<2>(a)) < std::tie(std::get<1>(b), std::get<2>(b));
    });
    for (std::size_t i = 0; i < k; ++i) {
        CHECK(out[i].beam == std::get<1>(all[i]));
        CHECK(out[i].token == std::get<2>(all[i]));
        CHECK(near(out[i].sum, std::get<0>(all[i]), 1e-6));
    }
}

TEST_CASE("beam_search_params rejects bad values naming the field", "[beam]") {
    auto msg = [](beam_search_params p) { return p.check().value_or(""); };
    CHECK(msg({}) == "");
    CHECK(msg({.num_beams = 0}).find("num_beams") != std::string::npos);
    CHECK(msg({.num_beams = 2, .num_return = 3}).find("num_return") != std::string::npos);
    CHECK(msg({.max_new_tokens = 0}).find("max_new_tokens") != std::string::npos);
    CHECK(msg({.length_penalty = NAN}).find("length_penalty") != std::string::npos);
    CHECK(msg({.num_beams = 4, .num_groups = 3}).find("num_groups") != std::string::npos);
    CHECK(msg({.diversity_penalty = -1}).find("diversity_penalty") != std::string::npos);
    CHECK(msg({.temperature = 0}).find("temperature") != std::string::npos);
    CHECK(msg({.eos_ids = {-2}}) == "");  // negative EOS ids are ignored (docs/bad-input.md)
    CHECK(msg({.stop_sequences = {{}}}).find("beam_search_params.stop_sequences") !=
          std::string::npos);
    CHECK(msg({.stop_strings = {"x"}}).find("beam_search_params.detokenize") != std::string::npos);
    CHECK(msg({.stop_strings = {""}, .detokenize = [](token_id) { return std::string_view(); }})
              .find("beam_search_params.stop_strings") != std::string::npos);
    DK_IF_EXCEPTIONS(toy_model m; const std::vector<token_id> empty;
                     CHECK_THROWS_AS(beam_search(m, empty, {}), config_error); CHECK_THROWS_AS(
                         beam_search(m, std::vector<token_id>{1}, {.num_beams = 0}), config_error);)
}

TEST_CASE("beam search special values: -inf rows end beams, +inf is uniform, NaN ignored",
          "[beam]") {
    const std::vector<token_id> prompt = {1};
    toy_model dead({.vocab_size = 5});
    dead.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        std::fill(out.begin(), out.end(), -INFINITY);
        out[0] = NAN;
    });
    auto r = beam_search(dead, prompt, {.num_beams = 3, .max_new_tokens = 4});
    // No beam has a valid entry: the running beam becomes a hypothesis flagged no_valid_token.
    REQUIRE(r.hypotheses.size() == 1);
    CHECK(r.hypotheses[0].tokens.empty());
    CHECK(r.hypotheses[0].reason == stop_reason::no_valid_token);
    CHECK(r.reason == stop_reason::no_valid_token);
    CHECK(r.tokens.empty());
    CHECK(r.model_calls == 1);
    // Two +inf entries (ids 2 and 4) and a NaN: both beams get log(1/2) per step, nothing else.
    toy_model inf({.vocab_size = 5});
    inf.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        out[0] = 1.f, out[1] = NAN, out[2] = INFINITY, out[3] = 0.f, out[4] = INFINITY;
    });
    r = beam_search(inf, prompt,
                    {.num_beams = 2, .num_return = 2, .max_new_tokens = 2, .length_penalty = 0.f});
    REQUIRE(r.hypotheses.size() == 2);
    for (const auto& h : r.hypotheses) {
        CHECK(near(h.sum_logprobs, 2 * std::log(0.5)));
        for (token_id t : h.tokens) CHECK((t == 2 || t == 4));
    }
}

TEST_CASE("beam search with several EOS ids keeps num_beams running beams", "[beam]") {
    // Three EOS ids dominate: HF's max(2, 1 + #eos) * beams candidates leave 2 non-EOS beams.
    toy_model m({.vocab_size = 6});
    m.set_logits_function([](std::span<const token_id>, std::span<float> out) {
        const float v[] = {0.f, 0.1f, 0.2f, 5.f, 5.1f, 5.2f};
        std::copy(std::begin(v), std::end(v), out.begin());
    });
    const auto r = beam_search(m, std::vector<token_id>{0},
                               {.num_beams = 2,
                                .num_return = 2,
                                .max_new_tokens = 3,
                                .stopping = early_stopping::never,
                                .eos_ids = {3, 4, 5}});
    CHECK(m.last_slots.size() == 2);
    REQUIRE(r.hypotheses.size() == 2);
}

// ---- processors in beam search (issue 14 item 2) ----

namespace {
const dk_test::naive_processors beam_processor_sets[] = {
    {.repetition = 1.6f},
    {.ngram = 2},
    {.ngram = 1},
    {.min_new = 4, .eos = 4},
    {.repetition = 1.3f, .ngram = 3, .min_new = 2, .eos = 4},
    {.eos = 4, .banned = {{0, 1}, {3}, {1, 2, 0}, {4}}},  // {4}: HF never bans the EOS alone
    {.min_new = 3, .eos = 4, .banned = {{2, 2}, {0, 3}}},
};
}  // namespace

TEST_CASE("beam search with processors equals a brute-force beam over the processed rows",
          "[beam][processors]") {
    // Every beam carries its own processor state (forked from its parent): the reference
    // recomputes each beam row's processors from the beam's whole history.
    std::size_t differs_from_plain = 0, runs = 0;
    for (std::uint64_t seed = 1; seed <= 8; ++seed)
        for (std::size_t B : {1u, 2u, 3u})
            for (const auto& pr : beam_processor_sets)
                for (early_stopping es : {early_stopping::heuristic, early_stopping::never}) {
                    toy_model m({.vocab_size = 5,
                                 .seed = seed,
                                 .scale = 1.5f,
                                 .eos_id = 4,
                                 .eos_bias = 1.0f});
                    const std::vector<token_id> prompt = {2, 3, 1};
                    const auto ref = reference_beam(m, prompt, B, 6, 1.0, false, es, 4, true, pr);
                    beam_search_params bp{.num_beams = B,
                                          .num_return = B,
                                          .max_new_tokens = 6,
                                          .stopping = es,
                                          .eos_ids = {4},
                                          .processing = pr.as_params()};
                    const auto r = beam_search(m, prompt, bp);
                    INFO("seed " << seed << " B " << B << " rep " << pr.repetition << " ngram "
                                 << pr.ngram << " min_new " << pr.min_new << " es " << int(es));
                    CHECK(r.steps == ref.steps);
                    REQUIRE(r.hypotheses.size() == ref.hyps.size());
                    for (std::size_t i = 0; i < ref.hyps.size(); ++i) {
                        CHECK(r.hypotheses[i].tokens == without_eos(ref.hyps[i].tokens, 4));
                        CHECK(near(r.hypotheses[i].score, ref.hyps[i].score, 1e-5));
                        CHECK(near(r.hypotheses[i].sum_logprobs, ref.hyps[i].sum, 1e-5));
                        // min_new_tokens: no hypothesis ends by EOS before min_new tokens
                        if (r.hypotheses[i].eos) CHECK(r.hypotheses[i].tokens.size() >= pr.min_new);
                    }
                    bp.processing = {};
                    const auto plain = beam_search(m, prompt, bp);
                    differs_from_plain +=
                        plain.hypotheses.front().tokens != r.hypotheses.front().tokens;
                    ++runs;
                }
    INFO(differs_from_plain << " of " << runs << " runs changed their best hypothesis");
    CHECK(differs_from_plain > runs / 4);  // the processors matter here (negative control)
}

TEST_CASE("beam search with processors equals the exhaustive optimum where it is guaranteed",
          "[beam][processors]") {
    // 36 beams over V = 4, 3 tokens prune nothing: `never` returns the exhaustive n-best of the
    // processed tree.
    for (std::uint64_t seed : {1u, 2u, 3u})
        for (const dk_test::naive_processors& pr :
             {dk_test::naive_processors{.repetition = 2.f},
              dk_test::naive_processors{.ngram = 2, .min_new = 2, .eos = 3}}) {
            toy_model m(
                {.vocab_size = 4, .seed = seed, .scale = 1.5f, .eos_id = 3, .eos_bias = 0.3f});
            const std::vector<token_id> prompt = {1, 0};
            const auto ex = enumerate(m, prompt, 3, 3, 1.0, false, pr);
            const auto r = beam_search(m, prompt,
                                       {.num_beams = 36,
                                        .num_return = 5,
                                        .max_new_tokens = 3,
                                        .stopping = early_stopping::never,
                                        .eos_ids = {3},
                                        .processing = pr.as_params()});
            INFO("seed " << seed << " rep " << pr.repetition << " ngram " << pr.ngram);
            REQUIRE(r.hypotheses.size() == std::min<std::size_t>(5, ex.size()));
            for (std::size_t i = 0; i < r.hypotheses.size(); ++i) {
                CHECK(r.hypotheses[i].tokens == without_eos(ex[i].tokens, 3));
                CHECK(near(r.hypotheses[i].score, ex[i].score, 1e-5));
            }
        }
}

TEST_CASE("beam width 1 with processors equals greedy generate() with the same processors",
          "[beam][processors]") {
    for (std::uint64_t seed = 1; seed <= 10; ++seed)
        for (const auto& pr : beam_processor_sets) {
            toy_model m(
                {.vocab_size = 6, .seed = seed, .scale = 2.f, .eos_id = 4, .eos_bias = 0.5f});
            const std::vector<token_id> prompt = {2, 4, 1};
            const auto r = beam_search(m, prompt,
                                       {.num_beams = 1,
                                        .max_new_tokens = 12,
                                        .stopping = early_stopping::first_n,
                                        .eos_ids = {4},
                                        .processing = pr.as_params()});
            sampling_params sp = pr.as_params();
            sp.temperature = 0.f;
            const auto g =
                generate(m, prompt, {.sampling = sp, .max_new_tokens = 12, .eos_ids = {4}});
            INFO("seed " << seed);
            REQUIRE(r.hypotheses.size() == 1);
            CHECK(r.hypotheses[0].tokens == g.tokens);
            CHECK(r.hypotheses[0].tokens == without_eos(greedy(m, prompt, 12, 4, pr), 4));
        }
}

TEST_CASE("beam search: processing fields beam search cannot honour are rejected by name",
          "[beam][processors]") {
    auto msg = [](sampling_params sp) {
        return beam_search_params{.processing = std::move(sp)}.check().value_or("");
    };
    CHECK(msg({.temperature = 0.5f}).find("beam_search_params.processing.temperature") !=
          std::string::npos);
    CHECK(msg({.top_k = 3}).find("beam_search_params.processing.top_k") != std::string::npos);
    CHECK(msg({.top_p = 0.5f}).find("beam_search_params.processing.top_p") != std::string::npos);
    CHECK(msg({.mirostat = true}).find("beam_search_params.processing.mirostat") !=
          std::string::npos);
    sampling_params bad;
    bad.penalties.repetition = -1.f;
    CHECK(msg(bad).find("beam_search_params.processing: sampling_params.penalties") !=
          std::string::npos);
    sampling_params ok;
    ok.penalties.repetition = 1.3f;
    ok.no_repeat_ngram_size = 2;
    ok.min_new_tokens = 3;
    ok.banned_sequences = {{1, 2}};
    CHECK_FALSE(beam_search_params{.processing = ok}.check());
    CHECK(contrastive_params{.processing = {.top_k = 2}}.check().value_or("").find(
              "contrastive_params.processing.top_k") != std::string::npos);
}

TEST_CASE("beam search with processor_input = logprobs equals HF's beam search with processors",
          "[beam][processors]") {
    // Hugging Face runs its processors on the log-softmax and does not renormalise.
    std::size_t differs_from_logits = 0, runs = 0;
    for (std::uint64_t seed = 1; seed <= 8; ++seed)
        for (std::size_t B : {2u, 3u})
            for (const auto& pr : beam_processor_sets) {
                toy_model m(
                    {.vocab_size = 5, .seed = seed, .scale = 1.5f, .eos_id = 4, .eos_bias = 1.0f});
                const std::vector<token_id> prompt = {2, 3, 1};
                const auto ref = reference_beam(m, prompt, B, 6, 1.0, false,
                                                early_stopping::heuristic, 4, true, pr, true);
                beam_search_params bp{.num_beams = B,
                                      .num_return = B,
                                      .max_new_tokens = 6,
                                      .eos_ids = {4},
                                      .processing = pr.as_params(),
                                      .processor_input = beam_processor_input::logprobs};
                const auto r = beam_search(m, prompt, bp);
                INFO("seed " << seed << " B " << B << " rep " << pr.repetition << " ngram "
                             << pr.ngram << " min_new " << pr.min_new);
                CHECK(r.steps == ref.steps);
                REQUIRE(r.hypotheses.size() == ref.hyps.size());
                for (std::size_t i = 0; i < ref.hyps.size(); ++i) {
                    CHECK(r.hypotheses[i].tokens == without_eos(ref.hyps[i].tokens, 4));
                    CHECK(near(r.hypotheses[i].score, ref.hyps[i].score, 1e-5));
                }
                bp.processor_input = beam_processor_input::logits;
                const auto l = beam_search(m, prompt, bp);
                for (std::size_t i = 0; i < r.hypotheses.size() && i < l.hypotheses.size(); ++i)
                    differs_from_logits += !near(l.hypotheses[i].score, r.hypotheses[i].score);
                ++runs;
            }
    INFO(differs_from_logits << " hypotheses scored differently in " << runs << " runs");
    CHECK(differs_from_logits > 0);  // the two inputs really differ
    // stochastic beams draw from the processed distribution: logits only
    CHECK(beam_search_params{.stochastic = true, .processor_input = beam_processor_input::logprobs}
              .check()
              .value_or("")
              .find("beam_search_params.processor_input") != std::string::npos);
}
}  // namespace dk_t_beam_search
