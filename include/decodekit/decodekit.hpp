#pragma once
/// \file decodekit.hpp
/// The umbrella header: everything decodekit offers.

#include <decodekit/candidates.hpp>
#include <decodekit/config.hpp>
#include <decodekit/decoding/decoding.hpp>
#include <decodekit/error.hpp>
#include <decodekit/kernels/kernels.hpp>
#include <decodekit/model.hpp>
#include <decodekit/processors/processors.hpp>
#include <decodekit/random.hpp>
#include <decodekit/sampling/sampling.hpp>
#include <decodekit/types.hpp>
#include <decodekit/version.hpp>
