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
