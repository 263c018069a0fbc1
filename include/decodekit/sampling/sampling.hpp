#pragma once
/// \file sampling/sampling.hpp
/// Everything in sampling/ (the umbrella of this folder).

#include <decodekit/config.hpp>
