// The same tiny program for every consumer test: sample one token from a logits row.
#include <decodekit/decodekit.hpp>

#include <cstdio>
#include <vector>

int main() {
    std::vector<float> logits(1000, 0.f);
    logits[123] = 10.f;
    const std::size_t best = decodekit::kernels::argmax(std::span<const float>(logits));
    std::printf("decodekit %d.%d.%d: argmax = %zu\n", DECODEKIT_VERSION_MAJOR,
                DECODEKIT_VERSION_MINOR, DECODEKIT_VERSION_PATCH, best);
    return best == 123 ? 0 : 1;
}
