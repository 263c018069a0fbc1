#pragma once
/// \file decoding/decoding.hpp
/// Everything in decoding/ (the umbrella of this folder).

#include <decodekit/config.hpp>
#include <decodekit/decoding/beam_search.hpp>
#include <decodekit/decoding/contract.hpp>
#include <decodekit/decoding/contrastive.hpp>
#include <decodekit/decoding/dola.hpp>
#include <decodekit/decoding/generate.hpp>
#include <decodekit/decoding/model_call.hpp>
#include <decodekit/decoding/proposers.hpp>
#include <decodekit/decoding/row_processors.hpp>
#include <decodekit/decoding/sequence_output.hpp>
#include <decodekit/decoding/speculative.hpp>
#include <decodekit/decoding/stop.hpp>
#include <decodekit/decoding/stop_strings.hpp>
