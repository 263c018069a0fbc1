// Sample from a logits array: configure a sampler once, draw per step.
#include <decodekit/decodekit.hpp>

#include <cstdio>
#include <vector>

int main() {
    const std::vector<float> logits = {1.0f, 3.5f, 2.0f, -1.0f, 3.4f, 0.5f};  // from your model
    decodekit::sampler s({.temperature = 0.8f, .top_k = 3, .top_p = 0.95f, .seed = 42},
                         logits.size());
    for (std::uint64_t step = 0; step < 5; ++step) {
        const auto r =
            s.sample(logits, /*sequence=*/0, step);  // keyed: reproducible, batch-invariant
        std::printf("step %llu: token %d (logprob %.3f)\n", (unsigned long long)step, r.token,
                    r.logprob);
    }
    const auto d = s.distribution(logits);  // what the draws sample from
    for (std::size_t i = 0; i < d.tokens.size(); ++i)
        std::printf("p(%d) = %.3f\n", d.tokens[i], d.probs[i]);
}
