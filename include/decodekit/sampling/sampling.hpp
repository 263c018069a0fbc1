#pragma once
/// \file sampling/sampling.hpp
/// Everything in sampling/ (the umbrella of this folder).

#include <decodekit/config.hpp>
#include <decodekit/sampling/batch.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/sampler.hpp>
