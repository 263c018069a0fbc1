#pragma once
/// \file processors/processors.hpp
/// Everything in processors/ (the umbrella of this folder): logits processors that modify a
/// mutable logits row in place, the processor concept they share (processor.hpp) and the
/// mechanism their per-sequence state follows the history with (history.hpp).

#include <decodekit/config.hpp>
#include <decodekit/processors/bias.hpp>
#include <decodekit/processors/dry.hpp>
#include <decodekit/processors/exponential_decay.hpp>
#include <decodekit/processors/forced.hpp>
#include <decodekit/processors/history.hpp>
#include <decodekit/processors/min_length.hpp>
#include <decodekit/processors/ngram.hpp>
#include <decodekit/processors/ngram_index.hpp>
#include <decodekit/processors/penalties.hpp>
#include <decodekit/processors/prefix_constrained.hpp>
#include <decodekit/processors/processor.hpp>
#include <decodekit/processors/sequence_bias.hpp>
#include <decodekit/processors/suppress_at_begin.hpp>
#include <decodekit/processors/token_counts.hpp>
