#include <decodekit/decodekit.hpp>

std::size_t odr_b(std::span<const float> x);

int main() {
    const float x[] = {0.5f, 2.0f, -1.0f};
    const std::size_t a = decodekit::kernels::argmax(std::span<const float>(x));
    return (a == 1 && odr_b(x) == 1) ? 0 : 1;
}
