// decodekit-demo (placeholder until the reference backend lands): runs the kernels on a
// synthetic logits row and prints what it did.
#include <decodekit/decodekit.hpp>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
    const std::size_t vocab = 32000;
    std::vector<float> logits(vocab);
    for (std::size_t i = 0; i < vocab; ++i) logits[i] = 8.f * std::sin(float(i) * 0.37f);
    const std::size_t best = decodekit::kernels::argmax(std::span<const float>(logits));
    std::printf("synthetic row of %zu logits: greedy token %zu (logit %.3f)\n", vocab, best,
                logits[best]);
    return 0;
}
