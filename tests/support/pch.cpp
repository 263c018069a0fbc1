// The translation unit that builds the unit tests' precompiled support/dk_test.hpp
// (tests/CMakeLists.txt): the header comes in through the precompiled-header option.
