#pragma once
/// \file decoding/decoding.hpp
/// Everything in decoding/ (the umbrella of this folder).

#include <decodekit/config.hpp>
