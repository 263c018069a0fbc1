#pragma once
/// \file kernels/kernels.hpp
/// All kernels.

#include <decodekit/kernels/draw.hpp>
#include <decodekit/kernels/mask.hpp>
#include <decodekit/kernels/nucleus.hpp>
#include <decodekit/kernels/reduce.hpp>
#include <decodekit/kernels/reference.hpp>
#include <decodekit/kernels/select.hpp>
#include <decodekit/kernels/similarity.hpp>
#include <decodekit/kernels/softmax.hpp>
