#pragma once
// Test support: Catch2 2.13 (Debian) and Catch2 3 (vcpkg/Conan) behind one include, plus the
// library under test (include/ or single_include/, chosen by the build) and shared helpers.

#if __has_include(<catch2/catch_all.hpp>)
#include <catch2/catch_all.hpp>
#define DK_CATCH_VERSION 3
#else
#include <catch2/catch.hpp>
#define DK_CATCH_VERSION 2
#endif

#include <decodekit/decodekit.hpp>

#include "dk_stats.hpp"

// The scalar Approx is Catch::Detail::Approx in Catch2 2 and Catch::Approx in Catch2 3
// (where Catch::Approx in Catch2 2 is the vector matcher): dk_test::Approx works with both.
namespace dk_test {
#if DK_CATCH_VERSION == 3
using Catch::Approx;
#else
using Catch::Detail::Approx;
#endif
}  // namespace dk_test

// Tests that need exceptions (REQUIRE_THROWS...) are compiled only when they are enabled.
#if DECODEKIT_EXCEPTIONS
#define DK_IF_EXCEPTIONS(...) __VA_ARGS__
#else
#define DK_IF_EXCEPTIONS(...)
#endif
