#pragma once
/// \file version.hpp
/// The version triple: the single source read by CMake and by the Conan recipe.

#define DECODEKIT_VERSION_MAJOR 0
#define DECODEKIT_VERSION_MINOR 2
#define DECODEKIT_VERSION_PATCH 0

#define DECODEKIT_VERSION \
    (DECODEKIT_VERSION_MAJOR * 10000 + DECODEKIT_VERSION_MINOR * 100 + DECODEKIT_VERSION_PATCH)

/// The ABI inline namespace: bumped with the major version (0.x uses v0).
#define DECODEKIT_ABI_NAMESPACE v0
