/// \file fuzz/fuzz_strategies.cpp
/// The multi-row strategies on a fuzzed model (fuzz_model.hpp: logits, hidden states and layer
/// logits derived from the input, NaN / +-inf / ties included): generate() (greedy and sampled),
/// beam search, contrastive search and DoLa, with fuzzed parameters and prompts (empty, ids out
/// of range). Invalid parameters / empty prompts must raise config_error naming the field (never
/// run). Oracles: every call the model sees respects the concept (checked by fuzz_model);
/// generated ids are in range and had probability > 0 given their prefix; lengths within
/// max_new_tokens; scores not NaN and sorted; EOS flags consistent.

#include <decodekit/decodekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "fuzz_model.hpp"
#include "fuzz_params.hpp"

namespace dk = decodekit;
using dk::token_id;

namespace {

bool contains(const std::vector<token_id>& v, token_id t) {
    return std::find(v.begin(), v.end(), t) != v.end();
}

/// Runs `f`; when `problem` is set it must throw config_error (with exceptions) and f is not run
/// otherwise. Returns true when f ran normally.
/// `may_raise_prefix`: a problem only the run can see (it depends on the model), so a
/// config_error starting with this prefix is accepted too.
template <class F>
bool run_checked(const std::optional<std::string>& problem, F&& f,
                 const char* may_raise_prefix = nullptr) {
#if DECODEKIT_EXCEPTIONS
    try {
        f();
    } catch (const dk::config_error& e) {
        const bool allowed =
            may_raise_prefix != nullptr && std::string(e.what()).rfind(may_raise_prefix, 0) == 0;
        DK_FUZZ_CHECK(problem.has_value() || allowed, "unexpected config_error: %s", e.what());
        return false;
    }
    DK_FUZZ_CHECK(!problem.has_value(), "invalid input accepted: %s", problem->c_str());
    return true;
#else
    if (problem) return false;
    f();
    return true;
#endif
}

/// Each generated token had probability > 0 after prompt + the tokens before it.
void check_path(const dk_fuzz::fuzz_model& m, const std::vector<token_id>& prompt,
                const std::vector<token_id>& toks, std::size_t layer, const char* who) {
    std::vector<token_id> ctx = prompt;
    for (token_id t : toks) {
        DK_FUZZ_CHECK(dk_fuzz::valid_choice(m, ctx, t, layer),
                      "%s emitted token %d with probability 0 (logit %g) at position %zu", who, t,
                      (t >= 0 && std::size_t(t) < m.vocab_size())
                          ? m.row_of(ctx, layer)[std::size_t(t)]
                          : 0.f,
                      ctx.size());
        ctx.push_back(t);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const int strategy = in.ConsumeIntegralInRange<int>(0, 3);
    const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 12);
    dk_fuzz::fuzz_model m(in, vocab);
    std::vector<token_id> prompt = dk_fuzz::consume_tokens(in, vocab, 6);
    m.prompt = prompt;
    const std::size_t max_new = in.ConsumeIntegralInRange<std::size_t>(0, 8);
    std::vector<token_id> eos = dk_fuzz::consume_tokens(in, vocab, 2);
    const std::size_t N = m.num_layers();

    switch (strategy) {
        case 0: {  // generate(): greedy or sampled, through the sampler
            dk::generate_params p;
            p.sampling = dk_fuzz::consume_sampling_params(in, vocab);
            p.max_new_tokens = max_new;
            p.eos_ids = eos;
            if (in.ConsumeBool()) p.stop_sequences.push_back(dk_fuzz::consume_tokens(in, vocab, 2));
            p.bos_token = in.ConsumeIntegralInRange<token_id>(-2, token_id(vocab));
            if (prompt.empty() && p.bos_token >= 0) m.prompt = {p.bos_token};
            std::optional<std::string> problem = p.check();
            if (!problem && prompt.empty() && p.bos_token < 0) problem = "empty prompt";
            dk::generation_result r;
            if (!run_checked(problem, [&] { r = dk::generate(m, prompt, p); })) break;
            DK_FUZZ_CHECK(r.tokens.size() <= max_new, "generate: %zu tokens > %zu", r.tokens.size(),
                          max_new);
            for (token_id t : r.tokens)
                DK_FUZZ_CHECK(!contains(eos, t), "generate: EOS %d in the output", t);
            if (!p.sampling.has_processors()) check_path(m, m.prompt, r.tokens, N, "generate");
            break;
        }
        case 1: {  // beam search
            dk::beam_search_params p;
            p.num_beams = in.ConsumeIntegralInRange<std::size_t>(0, 6);
            p.num_return = in.ConsumeIntegralInRange<std::size_t>(0, 6);
            p.max_new_tokens = max_new;
            p.length_penalty = dk_fuzz::field(in, 1.f, -2.f, 2.f);
            p.length_includes_prompt = in.ConsumeBool();
            p.stopping = dk::early_stopping(in.ConsumeIntegralInRange<int>(0, 2));
            p.eos_ids = eos;
            p.num_groups = in.ConsumeIntegralInRange<std::size_t>(0, 3);
            p.diversity_penalty = dk_fuzz::field(in, 0.f, 0.f, 2.f);
            p.stochastic = in.ConsumeBool();
            p.temperature = dk_fuzz::field(in, 1.f, 0.1f, 3.f);
            p.seed = in.ConsumeIntegral<std::uint64_t>();
            std::optional<std::string> problem = p.check();
            if (!problem && prompt.empty()) problem = "empty prompt";
            if (problem && problem->find("beam_search_params.") != 0 && !prompt.empty())
                DK_FUZZ_CHECK(false, "message does not name the field: %s", problem->c_str());
            dk::beam_search_result r;
            if (!run_checked(problem, [&] { r = dk::beam_search(m, prompt, p); })) break;
            DK_FUZZ_CHECK(r.hypotheses.size() <= p.num_return, "beam: %zu hypotheses > %zu",
                          r.hypotheses.size(), p.num_return);
            for (std::size_t i = 0; i < r.hypotheses.size(); ++i) {
                const auto& h = r.hypotheses[i];
                DK_FUZZ_CHECK(
                    !std::isnan(h.score) && !std::isnan(h.sum_logprobs),
                    "beam: NaN score (score %g, sum %g, %zu tokens, eos %d; beams %zu "
                    "groups %zu lp %g incl_prompt %d prompt %zu stochastic %d T %g div %g)",
                    h.score, h.sum_logprobs, h.tokens.size(), int(h.eos), p.num_beams, p.num_groups,
                    p.length_penalty, int(p.length_includes_prompt), prompt.size(),
                    int(p.stochastic), p.temperature, p.diversity_penalty);
                if (i > 0) DK_FUZZ_CHECK(r.hypotheses[i - 1].score >= h.score, "beam: not sorted");
                DK_FUZZ_CHECK(h.tokens.size() <= max_new, "beam: %zu tokens", h.tokens.size());
                if (h.eos)
                    DK_FUZZ_CHECK(!h.tokens.empty() && contains(eos, h.tokens.back()),
                                  "beam: eos flag");
                if (!p.stochastic || true) check_path(m, prompt, h.tokens, N, "beam search");
            }
            break;
        }
        case 2: {  // contrastive search
            dk::contrastive_params p;
            p.top_k = in.ConsumeIntegralInRange<std::size_t>(0, vocab + 2);
            p.alpha = dk_fuzz::field(in, 0.6f, 0.f, 1.f);
            p.max_new_tokens = max_new;
            p.eos_ids = eos;
            std::optional<std::string> problem = p.check();
            if (!problem && prompt.empty()) problem = "empty prompt";
            dk::contrastive_result r;
            if (!run_checked(problem, [&] { r = dk::contrastive_search(m, prompt, p); })) break;
            DK_FUZZ_CHECK(r.tokens.size() <= max_new, "contrastive: %zu tokens", r.tokens.size());
            if (r.eos)
                DK_FUZZ_CHECK(!r.tokens.empty() && contains(eos, r.tokens.back()),
                              "contrastive: eos flag");
            check_path(m, prompt, r.tokens, N, "contrastive search");
            break;
        }
        case 3: {  // DoLa
            dk::dola_params p;
            p.layers = dk::dola_layer_set(in.ConsumeIntegralInRange<int>(0, 3));
            if (p.layers == dk::dola_layer_set::custom ||
                in.ConsumeIntegralInRange<int>(0, 7) == 0) {
                const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 3);
                for (std::size_t i = 0; i < n; ++i)
                    p.custom_layers.push_back(in.ConsumeIntegralInRange<int>(-1, int(N) + 1));
            }
            p.tied_embeddings = in.ConsumeBool();
            p.relative_top = dk_fuzz::field(in, 0.1f, 0.f, 1.f);
            p.repetition_penalty = dk_fuzz::field(in, 1.2f, 0.5f, 2.f);
            p.divergence = dk::dola_divergence(in.ConsumeIntegralInRange<int>(0, 2));
            if (in.ConsumeBool()) p.sampling = dk_fuzz::consume_sampling_params(in, vocab);
            p.max_new_tokens = max_new;
            p.eos_ids = eos;
            std::optional<std::string> problem = p.check();
            if (!problem && prompt.empty()) problem = "empty prompt";
            dk::dola_result r;
            // Layer choices are checked against the model at run time (custom layers >= N, no
            // candidate layer for a shallow model): a config_error naming dola is fine.
            if (!run_checked(
                    problem, [&] { r = dk::dola_decode(m, prompt, p); }, "dola"))
                break;
            DK_FUZZ_CHECK(r.tokens.size() <= max_new, "dola: %zu tokens", r.tokens.size());
            for (int l : r.premature_layers)
                DK_FUZZ_CHECK(l >= 0 && std::size_t(l) < N, "dola: premature layer %d of %zu", l,
                              N);
            if (!p.sampling.has_processors()) check_path(m, prompt, r.tokens, N, "dola");
            break;
        }
    }
    return 0;
}
