#pragma once
/// \file sampling/sampling.hpp
/// Everything in sampling/ (the umbrella of this folder).

#include <decodekit/config.hpp>
#include <decodekit/sampling/batch.hpp>
#include <decodekit/sampling/draw.hpp>
#include <decodekit/sampling/logprobs.hpp>
#include <decodekit/sampling/params.hpp>
#include <decodekit/sampling/processing.hpp>
#include <decodekit/sampling/result.hpp>
#include <decodekit/sampling/sampler.hpp>
#include <decodekit/sampling/step.hpp>
#include <decodekit/sampling/steps.hpp>
#include <decodekit/sampling/verify.hpp>
#include <decodekit/sampling/working_set.hpp>
#include <decodekit/sampling/workspace.hpp>
