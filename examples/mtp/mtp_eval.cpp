// decodekit-mtp-eval: measures the MTP module of stories260K on the held-out prompts
// (examples/mtp/prompts_eval.txt, none used in training): acceptance of the first draft token
// (DeepSeek-V3's "second token": the first is the target's own), per draft position and overall,
// greedy and sampled at temperature 0.8; emitted tokens per target call; and wall-clock tokens/s
// of MTP speculative decoding (speculative_decode + mtp_module_proposer) against plain greedy
// decoding (medians of --reps runs). speculative_decode verifies a round's k + 1 positions in one
// logits_and_hidden call (the backend computes them together, matrix-matrix) and hands the hidden
// row of the last verified position to the proposer: a round costs one main call + k module
// steps (the first round one more main call, for h(0, i) of the prompt).
#include <decodekit/decodekit.hpp>
#include <llama2/llama2.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace dk = decodekit;
using dk::token_id;

namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
    return std::chrono::duration<double>(clock_type::now() - t0).count();
}
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v[v.size() / 2];
}

const std::vector<token_id> stops = {dk_llama2::bos_id, dk_llama2::eos_id};

struct prompt_set {
    std::vector<std::string> text;
    std::vector<std::vector<token_id>> tokens;
};

}  // namespace

int main(int argc, char** argv) {
    std::string model_path, tok_path, mtp_path, prompts_path;
    std::size_t max_new = 160, reps = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string a = argv[i], v = argv[i + 1];
        if (a == "--model")
            model_path = v;
        else if (a == "--tokenizer")
            tok_path = v;
        else if (a == "--mtp")
            mtp_path = v;
        else if (a == "--prompts")
            prompts_path = v;
        else if (a == "--max-tokens")
            max_new = std::strtoul(v.c_str(), nullptr, 10);
        else if (a == "--reps")
            reps = std::max<std::size_t>(1, std::strtoul(v.c_str(), nullptr, 10));
        else {
            std::fprintf(stderr,
                         "usage: decodekit-mtp-eval [--model PATH] [--tokenizer PATH] [--mtp PATH] "
                         "[--prompts FILE] [--max-tokens N] [--reps N]\n");
            return 2;
        }
    }
    const std::string dir = dk_llama2::default_models_dir();
    if (model_path.empty()) model_path = dir + "/stories260K.bin";
    if (tok_path.empty()) tok_path = dir + "/tok512.bin";
    if (mtp_path.empty()) mtp_path = dir + "/stories260K-mtp.bin";
    if (prompts_path.empty()) prompts_path = std::string(DK_EXAMPLES_DIR) + "/mtp/prompts_eval.txt";
    auto ck = dk_llama2::load_checkpoint(model_path);
    if (!ck) return std::fprintf(stderr, "%s\n", ck.error().c_str()), 1;
    auto tok = dk_llama2::tokenizer::load(tok_path, ck->cfg.vocab_size);
    if (!tok) return std::fprintf(stderr, "%s\n", tok.error().c_str()), 1;
    auto w = dk_llama2::load_mtp_module(mtp_path, ck->cfg);
    if (!w) return std::fprintf(stderr, "%s\n", w.error().c_str()), 1;
    dk_llama2::model m(std::move(ck.value()));
    if (auto why = m.set_mtp_module(std::move(w.value())))
        return std::fprintf(stderr, "%s\n", why->c_str()), 1;
    prompt_set ps;
    {
        auto bytes = dk_llama2::read_file_bytes(prompts_path);
        if (!bytes) return std::fprintf(stderr, "%s\n", bytes.error().c_str()), 1;
        std::string line;
        for (unsigned char c : bytes.value()) {
            if (c != '\n') {
                line += char(c);
                continue;
            }
            if (!line.empty() && line[0] != '#') {
                ps.text.push_back(line);
                ps.tokens.push_back(tok->encode(line, true, false));
            }
            line.clear();
        }
    }
    std::printf("MTP module: %zu modules; %zu held-out prompts (%s), %zu new tokens each\n",
                m.mtp_depth(), ps.text.size(), prompts_path.c_str(), max_new);

    // Greedy references and their time.
    std::vector<std::vector<token_id>> greedy(ps.tokens.size());
    std::vector<double> t_greedy;
    std::size_t greedy_tokens = 0;
    for (std::size_t rep = 0; rep < reps; ++rep) {
        greedy_tokens = 0;
        const auto t0 = clock_type::now();
        for (std::size_t p = 0; p < ps.tokens.size(); ++p) {
            m.clear_cache();
            greedy[p] = dk::generate(m, ps.tokens[p],
                                     dk::generate_params{.sampling = {.temperature = 0.f},
                                                         .max_new_tokens = max_new,
                                                         .eos_ids = stops})
                            .tokens;
            greedy_tokens += greedy[p].size();
        }
        t_greedy.push_back(seconds_since(t0));
    }
    const double greedy_tps = double(greedy_tokens) / median(t_greedy);
    std::printf("greedy: %zu tokens, %.0f tokens/s (median of %zu)\n\n", greedy_tokens, greedy_tps,
                reps);

    dk::basic_processing greedy_proc{.temperature = 0.f}, t08{.temperature = 0.8f};
    std::printf("%-34s %7s %7s %7s %7s %7s %9s %10s %8s\n", "run", "acc@1", "acc@2", "acc@3",
                "acc@4", "accept", "tok/call", "tokens/s", "vs greedy");
    auto report = [&](const char* name, const dk::speculative_stats& s, double tps) {
        std::printf("%-34s", name);
        for (std::size_t i = 0; i < 4; ++i) {
            if (i < s.drafted_at.size() && s.drafted_at[i])
                std::printf(" %7.3f", s.acceptance_rate_at(i));
            else
                std::printf(" %7s", "-");
        }
        std::printf(" %7.3f %9.2f", s.acceptance_rate(), s.mean_tokens_per_target_call());
        if (tps > 0)
            std::printf(" %10.0f %7.2fx\n", tps, tps / greedy_tps);
        else
            std::printf(" %10s %8s\n", "-", "-");
    };
    auto add = [](dk::speculative_stats& total, const dk::speculative_stats& s) {
        total.target_calls += s.target_calls;
        total.draft_calls += s.draft_calls;
        total.drafted += s.drafted;
        total.accepted += s.accepted;
        total.emitted += s.emitted;
        total.drafted_at.resize(std::max(total.drafted_at.size(), s.drafted_at.size()));
        total.accepted_at.resize(total.drafted_at.size());
        for (std::size_t i = 0; i < s.drafted_at.size(); ++i) {
            total.drafted_at[i] += s.drafted_at[i];
            total.accepted_at[i] += s.accepted_at[i];
        }
    };
    bool all_equal = true;
    for (std::size_t k : {1, 2, 3, 4}) {
        for (int sampled = 0; sampled < 2; ++sampled) {
            dk::speculative_stats total;
            std::vector<double> times;
            for (std::size_t rep = 0; rep < (sampled ? 1 : reps); ++rep) {
                total = {};
                const auto t0 = clock_type::now();
                for (std::size_t p = 0; p < ps.tokens.size(); ++p) {
                    m.clear_cache();
                    auto& proc = sampled ? t08 : greedy_proc;
                    dk::mtp_module_proposer<dk_llama2::model> draft(
                        m, proc,
                        {.mode = sampled ? dk::draft_mode::sample : dk::draft_mode::greedy});
                    const auto r = dk::speculative_decode(
                        m, draft, ps.tokens[p],
                        {.max_new_tokens = max_new,
                         .eos_ids = stops,
                         .seed = 8,
                         .sequence = p,
                         .rule = sampled ? dk::verification::rejection : dk::verification::greedy,
                         .draft_length = k,
                         .max_draft_length = 8},
                        proc);
                    if (!sampled && r.tokens != greedy[p]) all_equal = false;
                    add(total, r.stats);
                }
                times.push_back(seconds_since(t0));
            }
            char name[64];
            std::snprintf(name, sizeof name, "%s, k = %zu", sampled ? "sampled T 0.8" : "greedy",
                          k);
            report(name, total, sampled ? 0 : double(total.emitted) / median(times));
        }
    }
    std::printf(
        "\nacc@j = accepted / verified drafts at draft position j (acc@1: the second token "
        "of DeepSeek-V3's count); accept = over all positions; tok/call = emitted tokens "
        "per target call\ngreedy runs give greedy's tokens: %s\n",
        all_equal ? "yes" : "NO");
    return all_equal ? 0 : 1;
}
