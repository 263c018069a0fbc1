/// \file fuzz/fuzz_strategies.cpp
/// The multi-row strategies on a fuzzed model (fuzz_model.hpp: logits, hidden states and layer
/// logits derived from the input, NaN / +-inf / ties included): generate() (greedy and sampled),
/// beam search, contrastive search and DoLa, with fuzzed parameters and prompts (empty, ids out
/// of range). Invalid parameters / empty prompts must raise config_error naming the field (never
/// run). Oracles: every call the model sees respects the concept (checked by fuzz_model);
/// generated ids are in range and had probability > 0 given their prefix; lengths within
/// max_new_tokens; scores not NaN and sorted; no EOS in any output (the EOS rule).
/// Mode 4: stop_string_matcher on fuzzed stop strings and byte pieces against a naive oracle
/// (the earliest-ending match, the held-back suffix, incomplete UTF-8). Mode 5: several steppers
/// of different strategies driven in one loop in a fuzzed order, offered short rows (must be
/// refused: bad_input) and sometimes cancelled; each must equal its driver run alone.

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

/// Incomplete UTF-8 tail of s (0..3 bytes), written independently of the library's.
std::size_t utf8_tail(const std::string& s) {
    for (std::size_t back = 1; back <= 4 && back <= s.size(); ++back) {
        const auto c = static_cast<unsigned char>(s[s.size() - back]);
        if (c >= 0x80 && c < 0xC0) continue;
        const std::size_t need = c >= 0xF0 && c < 0xF8   ? 4
                                 : c >= 0xE0 && c < 0xF0 ? 3
                                 : c >= 0xC0             ? 2
                                                         : 1;
        return back < need ? back : 0;
    }
    return 0;
}

/// Mode 4: the matcher against the oracle.
void fuzz_stop_strings(FuzzedDataProvider& in) {
    static const char alphabet[] = {'a', 'b', 'c', '\xC3', '\xA9', '\xE4', '\x80', '\xF0'};
    auto byte = [&] { return alphabet[in.ConsumeIntegralInRange<int>(0, 7)]; };
    std::vector<std::string> stops(in.ConsumeIntegralInRange<std::size_t>(0, 4));
    for (auto& st : stops) {
        st.resize(in.ConsumeIntegralInRange<std::size_t>(1, 5));
        for (char& c : st) c = byte();
    }
    dk::stop_string_matcher m(stops);
    std::string text, released;
    const std::size_t n = in.ConsumeIntegralInRange<std::size_t>(0, 16);
    for (std::size_t i = 0; i < n; ++i) {
        std::string piece(in.ConsumeIntegralInRange<std::size_t>(0, 5), 'a');
        for (char& c : piece) c = byte();
        const bool active = in.ConsumeIntegralInRange<int>(0, 3) != 0;
        const std::size_t before = text.size();
        text += piece;
        const auto r = m.push(piece, active);
        released += r.text;
        // the earliest-ending occurrence that ends inside this piece (ties: the longest)
        std::size_t end = dk::npos, len = 0;
        for (const auto& st : stops)
            for (std::size_t pos = text.find(st); pos != std::string::npos;
                 pos = text.find(st, pos + 1))
                if (pos + st.size() > before) {
                    if (pos + st.size() < end || (pos + st.size() == end && st.size() > len))
                        end = pos + st.size(), len = st.size();
                    break;
                }
        if (active && end != dk::npos) {
            DK_FUZZ_CHECK(r.matched, "stop string missed");
            DK_FUZZ_CHECK(released == text.substr(0, end - len), "bad text before a match");
            DK_FUZZ_CHECK(m.flush().empty() && m.push("abc").text.empty(), "text after a match");
            return;
        }
        DK_FUZZ_CHECK(!r.matched, "false stop string match");
        // hold: the longest suffix that is a proper prefix of a stop string, then UTF-8
        std::size_t hold = 0;
        for (const auto& st : stops)
            for (std::size_t l = std::min(st.size() - 1, text.size()); l > hold; --l)
                if (text.compare(text.size() - l, l, st, 0, l) == 0) {
                    hold = l;
                    break;
                }
        std::string keep = text.substr(0, text.size() - hold);
        keep.resize(keep.size() - utf8_tail(keep));
        DK_FUZZ_CHECK(released == keep, "released %zu bytes, expected %zu", released.size(),
                      keep.size());
    }
    released += m.flush();
    DK_FUZZ_CHECK(released == text, "flush lost text");
}

/// Mode 5: steppers interleaved in a fuzzed order equal their drivers.
void fuzz_interleaved(FuzzedDataProvider& in, dk_fuzz::fuzz_model& m,
                      const std::vector<token_id>& prompt, const std::vector<token_id>& eos) {
    if (prompt.empty()) return;
    for (token_id t : prompt)
        if (t < 0 || std::size_t(t) >= m.vocab_size()) return;  // the model checks generated ids
    const std::size_t V = m.vocab_size(), max_new = in.ConsumeIntegralInRange<std::size_t>(1, 8);
    std::vector<std::vector<token_id>> stop_seqs = {dk_fuzz::consume_tokens(in, V, 2)};
    for (token_id& t : stop_seqs[0]) t = token_id(std::uint32_t(t) % V);  // valid ids
    const bool use_stop = !stop_seqs[0].empty() && in.ConsumeBool();
    dk::generate_params gp;
    gp.sampling.temperature =
        in.ConsumeBool() ? 0.f : in.ConsumeFloatingPointInRange<float>(0.2f, 2.f);
    gp.sampling.seed = in.ConsumeIntegral<std::uint64_t>();
    gp.max_new_tokens = max_new;
    gp.eos_ids = eos;
    if (use_stop) gp.stop_sequences = stop_seqs;
    gp.sequence = 1;
    dk::beam_search_params bp;
    bp.num_beams = in.ConsumeIntegralInRange<std::size_t>(1, 4);
    bp.num_return = 1;
    bp.max_new_tokens = max_new;
    bp.eos_ids = eos;
    bp.stochastic = in.ConsumeBool();
    bp.seed = gp.sampling.seed;
    if (use_stop) bp.stop_sequences = stop_seqs;
    dk::contrastive_params cp;
    cp.top_k = in.ConsumeIntegralInRange<std::size_t>(1, 4);
    cp.max_new_tokens = max_new;
    cp.eos_ids = eos;
    dk::dola_params dp;
    dp.layers = dk::dola_layer_set::custom;
    dp.custom_layers = {0};
    dp.max_new_tokens = max_new;
    dp.eos_ids = eos;
    dk::speculative_params sp;
    sp.max_new_tokens = max_new;
    sp.eos_ids = eos;
    sp.seed = gp.sampling.seed;
    sp.draft_length = in.ConsumeIntegralInRange<std::size_t>(1, 4);
    sp.rule = dk::verification(in.ConsumeIntegralInRange<int>(0, 2));
    if (use_stop) sp.stop_sequences = stop_seqs;
    dk::basic_processing proc{.temperature = gp.sampling.temperature};
    dk::basic_processing proc_ee = proc, proc2 = proc;
    const int layer = in.ConsumeIntegralInRange<int>(0, int(m.num_layers()));
    using ee_t = dk::early_exit_proposer<dk_fuzz::fuzz_model, dk::basic_processing>;
    ee_t ee(m, layer, proc_ee, {.mode = dk::draft_mode(in.ConsumeIntegralInRange<int>(0, 1))});
    ee_t ee_alone = ee;

    dk::generation_stepper g(gp, V, prompt);
    dk::beam_searcher b(bp, V, prompt);
    dk::contrastive_stepper c(cp, V, m.hidden_size(), prompt);
    dk::dola_stepper d(dp, V, m.num_layers(), prompt);
    dk::speculative_stepper s(sp, V, prompt, ee, proc);
    std::vector<float> rows, hidden;
    auto drive = [&](auto& st) {  // one step, maybe first offered short rows or cancelled
        const dk::model_call call = st.next_call();
        if (call.empty()) return;
        rows.assign(call.logits_rows() * V, 0.f);
        hidden.assign(call.hidden_rows() * m.hidden_size(), 0.f);
        DK_FUZZ_CHECK(dk::run_model_call(m, call, rows, hidden), "run_model_call refused");
        const std::span<const float> r(rows), h(hidden);
        if (in.ConsumeIntegralInRange<int>(0, 3) == 0)
            DK_FUZZ_CHECK(st.advance(r.first(r.size() - 1), h).status == dk::step_status::bad_input,
                          "short rows accepted");
        const auto ev = st.advance(r, h);
        DK_FUZZ_CHECK(ev.status == dk::step_status::ok, "advance refused the right rows");
    };
    int cancelled = -1;  // the stepper cancelled (it then only equals a prefix of its driver)
    for (int guard = 0; guard < 200; ++guard) {
        const int pick = in.ConsumeIntegralInRange<int>(0, 4);
        if (in.ConsumeIntegralInRange<int>(0, 31) == 0 && cancelled < 0) cancelled = pick;
        switch (pick) {
            case 0:
                cancelled == 0 ? void(g.cancel()) : drive(g);
                break;
            case 1:
                cancelled == 1 ? void(b.cancel()) : drive(b);
                break;
            case 2:
                cancelled == 2 ? void(c.cancel()) : drive(c);
                break;
            case 3:
                cancelled == 3 ? void(d.cancel()) : drive(d);
                break;
            default:
                cancelled == 4 ? void(s.cancel()) : drive(s);
        }
        if (in.remaining_bytes() == 0) break;
    }
    // finish everything in a fixed order
    while (!g.done() || !b.done() || !c.done() || !d.done() || !s.done()) {
        drive(g), drive(b), drive(c), drive(d), drive(s);
    }
    auto prefix = [](const std::vector<token_id>& a, const std::vector<token_id>& full) {
        return a.size() <= full.size() && std::equal(a.begin(), a.end(), full.begin());
    };
    auto same = [&](int who, const std::vector<token_id>& got, dk::stop_reason why,
                    const std::vector<token_id>& want, dk::stop_reason want_why, const char* name) {
        if (cancelled == who) {
            DK_FUZZ_CHECK(why == dk::stop_reason::cancelled ? prefix(got, want) : got == want,
                          "%s: cancelled output is not a prefix", name);
            return;
        }
        DK_FUZZ_CHECK(got == want && why == want_why, "%s: stepper differs from its driver", name);
        for (token_id t : got) DK_FUZZ_CHECK(!contains(eos, t), "%s: EOS in the output", name);
    };
    const auto gr = g.result(), gw = dk::generate(m, prompt, gp);
    same(0, gr.tokens, gr.reason, gw.tokens, gw.reason, "generate");
    const auto br = b.result(), bw = dk::beam_search(m, prompt, bp);
    if (cancelled != 1) same(1, br.tokens, br.reason, bw.tokens, bw.reason, "beam");
    const auto cr = c.result(), cw = dk::contrastive_search(m, prompt, cp);
    same(2, cr.tokens, cr.reason, cw.tokens, cw.reason, "contrastive");
    const auto dr = d.result(), dw = dk::dola_decode(m, prompt, dp);
    same(3, dr.tokens, dr.reason, dw.tokens, dw.reason, "dola");
    const auto sr = s.result(), sw = dk::speculative_decode(m, ee_alone, prompt, sp, proc2);
    same(4, sr.tokens, sr.reason, sw.tokens, sw.reason, "speculative");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    FuzzedDataProvider in(data, size);
    const int strategy = in.ConsumeIntegralInRange<int>(0, 5);
    if (strategy == 4) {
        fuzz_stop_strings(in);
        return 0;
    }
    const std::size_t vocab = in.ConsumeIntegralInRange<std::size_t>(1, 12);
    dk_fuzz::fuzz_model m(in, vocab);
    std::vector<token_id> prompt = dk_fuzz::consume_tokens(in, vocab, 6);
    m.prompt = prompt;
    const std::size_t max_new = in.ConsumeIntegralInRange<std::size_t>(0, 8);
    std::vector<token_id> eos = dk_fuzz::consume_tokens(in, vocab, 2);
    const std::size_t N = m.num_layers();
    if (strategy == 5) {
        fuzz_interleaved(in, m, prompt, eos);
        return 0;
    }

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
                for (token_id t : h.tokens)
                    DK_FUZZ_CHECK(!contains(eos, t), "beam: EOS %d in a hypothesis", t);
                DK_FUZZ_CHECK(h.eos == (h.reason == dk::stop_reason::eos), "beam: eos flag");
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
            for (token_id t : r.tokens)
                DK_FUZZ_CHECK(!contains(eos, t), "contrastive: EOS %d in the output", t);
            DK_FUZZ_CHECK(r.eos == (r.reason == dk::stop_reason::eos), "contrastive: eos flag");
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
            for (token_id t : r.tokens)
                DK_FUZZ_CHECK(!contains(eos, t), "dola: EOS %d in the output", t);
            for (int l : r.premature_layers)
                DK_FUZZ_CHECK(l >= 0 && std::size_t(l) < N, "dola: premature layer %d of %zu", l,
                              N);
            if (!p.sampling.has_processors()) check_path(m, prompt, r.tokens, N, "dola");
            break;
        }
    }
    return 0;
}
