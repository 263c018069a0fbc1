#pragma once
/// \file generate.hpp
/// Forwarding header: the generation driver lives in decodekit/decoding/generate.hpp (kept so
/// that `#include <decodekit/generate.hpp>` goes on working).

#include <decodekit/decoding/generate.hpp>
