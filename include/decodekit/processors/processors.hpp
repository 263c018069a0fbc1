#pragma once
/// \file processors/processors.hpp
/// Everything in processors/ (the umbrella of this folder): logits processors that modify a
/// mutable logits row in place, noexcept, without allocation.

#include <decodekit/config.hpp>
#include <decodekit/processors/bias.hpp>
#include <decodekit/processors/dry.hpp>
#include <decodekit/processors/min_length.hpp>
#include <decodekit/processors/ngram.hpp>
#include <decodekit/processors/penalties.hpp>
