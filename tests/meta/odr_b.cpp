#include <decodekit/decodekit.hpp>

std::size_t odr_b(std::span<const float> x) { return decodekit::kernels::argmax(x); }
