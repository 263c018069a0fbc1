# Settings for decodekit's own tests, benchmarks and examples (never applied to consumers).

# The library under test: the include/ tree, or the generated single header.
add_library(decodekit_under_test INTERFACE)
if(DECODEKIT_TEST_SINGLE_HEADER)
  target_include_directories(decodekit_under_test INTERFACE "${PROJECT_SOURCE_DIR}/single_include")
  target_compile_features(decodekit_under_test INTERFACE cxx_std_20)
  target_link_libraries(decodekit_under_test INTERFACE xsimd)
else()
  target_link_libraries(decodekit_under_test INTERFACE decodekit::decodekit)
endif()
separate_arguments(_dk_arch_flags UNIX_COMMAND "${DECODEKIT_ARCH_FLAGS}")
target_compile_options(decodekit_under_test INTERFACE ${_dk_arch_flags})
if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
  target_compile_options(decodekit_under_test INTERFACE -Wall -Wextra -Wpedantic -Wshadow
    -Werror=return-type)
endif()
set(CMAKE_CXX_EXTENSIONS OFF)

if(CMAKE_CXX_FLAGS MATCHES "-fno-exceptions")
  set(DECODEKIT_EXCEPTIONS_ENABLED OFF)
else()
  set(DECODEKIT_EXCEPTIONS_ENABLED ON)
endif()

# GCC 12 reports false "__Y may be used uninitialized" warnings inside its own AVX-512 intrinsics
# (_mm512_undefined_ps, GCC bug 105593, fixed in GCC 13) wherever they are inlined; hundreds of
# them hide real warnings.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  target_compile_options(decodekit_under_test INTERFACE -Wno-maybe-uninitialized -Wno-uninitialized)
endif()

# DECODEKIT_TEST_ARCHS: the xsimd architectures the kernel tests and fuzz_kernels run a kernel on
# (tests/support/dk_rows.hpp each_arch): `all` that the compiler flags enable, or `edges`, the
# best and the narrowest (tests/CMakeLists.txt and fuzz/CMakeLists.txt say which presets set it).
# decodekit_test_archs(<target> <scope>) gives <target> the definition that selects it.
set(DECODEKIT_TEST_ARCHS "all" CACHE STRING
    "xsimd architectures the kernel tests and fuzz_kernels sweep: all (every enabled one) or edges (best + narrowest)")
set_property(CACHE DECODEKIT_TEST_ARCHS PROPERTY STRINGS all edges)
if(NOT DECODEKIT_TEST_ARCHS MATCHES "^(all|edges)$")
  message(FATAL_ERROR "DECODEKIT_TEST_ARCHS must be all or edges, not '${DECODEKIT_TEST_ARCHS}'")
endif()
function(decodekit_test_archs target scope)
  if(DECODEKIT_TEST_ARCHS STREQUAL "edges")
    target_compile_definitions(${target} ${scope} DK_TEST_ARCHS_EDGES=1)
  endif()
endfunction()
