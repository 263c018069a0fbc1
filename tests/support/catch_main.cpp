// Catch2 2 needs one translation unit to provide main(); Catch2 3 links Catch2::Catch2WithMain.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
