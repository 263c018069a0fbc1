#pragma once
/// \file kernels/kernels.hpp
/// All kernels.

#include <decodekit/kernels/cut.hpp>
#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/kernels/nucleus.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/similarity.hpp>
#include <decodekit/kernels/softmax.hpp>
#include <decodekit/kernels/thresholds.hpp>
#include <decodekit/kernels/truncation.hpp>
#include <decodekit/kernels/typical.hpp>
#include <decodekit/kernels/weights.hpp>
#include <decodekit/kernels/xtc.hpp>
