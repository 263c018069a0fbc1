#pragma once
/// \file sampling/access.hpp
/// detail::sampler_access<Tag>: the sampler's friend, specialised by each header that reaches into
/// its internals (batch.hpp: the batch mark; verify.hpp: the working set after the steps). Not
/// public API.

#include <decodekit/config.hpp>

DECODEKIT_BEGIN_NAMESPACE
namespace detail {
template <class Tag>
struct sampler_access;
}  // namespace detail
DECODEKIT_END_NAMESPACE
