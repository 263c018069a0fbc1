#pragma once
/// \file processors/processors.hpp
/// Everything in processors/ (the umbrella of this folder).

#include <decodekit/config.hpp>
