// A continuous-batching loop: requests join and leave the batch at any step; each step makes
// ONE batched model call for every active sequence and samples every row with its own sampler
// (own parameters, seed and step), on a persistent 2-thread pool. Results do not depend on the
// batch composition: a request's tokens are the same whether it runs alone or batched.
#include <decodekit/decodekit.hpp>
#include <llama2/llama2.hpp>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace dk = decodekit;

struct request {
    std::string prompt;
    dk::sampling_params params;
    std::size_t max_new = 40;
    std::vector<dk::token_id> seq = {};
    std::size_t prompt_len = 0, generated = 0;
    std::unique_ptr<dk::sampler> smp = {};
    bool done = false;
};

int main(int argc, char** argv) {
    const std::string dir = argc > 1 ? argv[1] : dk_llama2::default_models_dir();
    auto ck = dk_llama2::load_checkpoint(dir + "/stories260K.bin");
    auto tok = dk_llama2::tokenizer::load(dir + "/tok512.bin", 512);
    if (!ck || !tok) {
        std::printf("needs stories260K.bin + tok512.bin in %s (pass the folder as argument): %s\n",
                    dir.c_str(), (!ck ? ck.error() : tok.error()).c_str());
        return 1;
    }
    dk_llama2::model m(std::move(ck.value()));
    std::vector<request> reqs;
    reqs.push_back({"Once upon a time", {.temperature = 0.f}});
    reqs.push_back({"Tom had a red ball", {.temperature = 0.8f, .top_k = 40, .seed = 1}});
    reqs.push_back({"The sun was", {.temperature = 1.0f, .top_p = 0.9f, .seed = 2}});
    reqs.push_back({"Lily and her dog", {.temperature = 0.7f, .min_p = 0.05f, .seed = 3}});
    dk::batch_sampler pool(2);
    std::vector<float> logits;
    std::size_t admitted = 0;
    for (std::size_t step = 0;; ++step) {
        if (admitted < reqs.size() && step % 5 == 0) {  // a new request joins every 5 steps
            request& r = reqs[admitted++];
            r.seq = tok->encode(r.prompt);
            r.prompt_len = r.seq.size();
            r.smp = std::make_unique<dk::sampler>(r.params, m.vocab_size());
        }
        std::vector<std::size_t> active;
        std::vector<dk::sequence_request> calls;
        for (std::size_t i = 0; i < admitted; ++i)
            if (!reqs[i].done) {
                active.push_back(i);
                calls.push_back({reqs[i].seq, 1, std::uint32_t(i)});  // slot = request: cache reuse
            }
        if (active.empty() && admitted == reqs.size()) break;
        if (active.empty()) continue;
        logits.resize(calls.size() * m.vocab_size());
        m.logits(calls, logits);  // one batched call
        std::vector<dk::batch_row> rows;
        for (std::size_t i : active) {
            const request& r = reqs[i];
            rows.push_back({r.smp.get(),
                            {.sequence = i,
                             .step = r.generated,
                             .history = r.seq,
                             .prompt_length = r.prompt_len}});
        }
        std::vector<dk::sample_result> out(rows.size());
        pool.sample({logits.data(), rows.size(), m.vocab_size()}, rows, out);
        for (std::size_t k = 0; k < active.size(); ++k) {
            request& r = reqs[active[k]];
            const dk::token_id t = out[k].token;
            if (t < 0 || t == dk_llama2::bos_id || t == dk_llama2::eos_id) {
                r.done = true;  // no valid token, or end of text
                continue;
            }
            r.seq.push_back(t);
            if (++r.generated >= r.max_new) r.done = true;
        }
    }
    for (const auto& r : reqs) {
        const auto gen = std::span(r.seq).subspan(r.prompt_len);
        std::printf("[%s] %s%s\n\n", r.params.temperature == 0.f ? "greedy" : "sampled",
                    r.prompt.c_str(), tok->decode(gen, r.seq[r.prompt_len - 1]).c_str());
    }
}
