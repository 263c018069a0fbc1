// Plugging a custom backend into decodekit's model concept: three members make a
// decodekit::language_model, and every strategy that needs only that capability works with it.
#include <decodekit/decodekit.hpp>

#include <cstdio>
#include <vector>

// A toy "model": the next token is likely (previous token + 1) mod V. Stateless, so it ignores
// request.slot; a real backend keeps a KV cache per slot and reuses the longest common prefix
// of request.tokens with what it cached (see the sequence contract in decodekit/model.hpp).
struct counting_model {
    std::size_t vocab = 8;
    std::size_t vocab_size() const { return vocab; }
    void logits(std::span<const decodekit::sequence_request> requests, std::span<float> out) {
        std::size_t row = 0;
        for (const auto& r : requests)
            for (std::size_t p = r.tokens.size() - r.n_last; p < r.tokens.size(); ++p, ++row)
                for (std::size_t v = 0; v < vocab; ++v)
                    out[row * vocab + v] = v == (std::size_t(r.tokens[p]) + 1) % vocab ? 2.f : 0.f;
    }
};
static_assert(decodekit::language_model<counting_model>);

int main() {
    counting_model m;
    const std::vector<decodekit::token_id> prompt = {3};
    decodekit::generate_params gp;
    gp.max_new_tokens = 6;
    gp.sampling.temperature = 0.f;  // greedy
    const auto g = decodekit::generate(m, prompt, gp);
    std::printf("greedy:");
    for (auto t : g.tokens) std::printf(" %d", t);
    decodekit::beam_search_params bp;
    bp.num_beams = 2;
    bp.max_new_tokens = 6;
    const auto b = decodekit::beam_search(m, prompt, bp);
    std::printf("\nbeam (score %.3f):", b.hypotheses.front().score);
    for (auto t : b.hypotheses.front().tokens) std::printf(" %d", t);
    std::printf("\n");
}
