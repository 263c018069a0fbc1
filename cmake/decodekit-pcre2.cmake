# Finds PCRE2's 8-bit library for the regular-expression example (examples/regex) without
# pkg-config (a bare Debian has none): `pcre2-config --prefix` gives a hint when that script
# exists, then find_path / find_library look for pcre2.h and pcre2-8. Defines the imported target
# decodekit_pcre2 when found (PCRE2 >= 10.30); otherwise sets DECODEKIT_PCRE2_FOUND to OFF and
# says what the build leaves out. Examples and fuzzers only: the library does not use PCRE2.
# Override with -DPCRE2_INCLUDE_DIR=... -DPCRE2_8_LIBRARY=...; -DDECODEKIT_WITH_PCRE2=OFF leaves the
# regex parts out even when PCRE2 is installed (how a build without it is checked).
if(TARGET decodekit_pcre2)
  set(DECODEKIT_PCRE2_FOUND ON)
  return()
endif()
set(DECODEKIT_PCRE2_FOUND OFF)
if(DEFINED DECODEKIT_WITH_PCRE2 AND NOT DECODEKIT_WITH_PCRE2)
  message(STATUS "decodekit: DECODEKIT_WITH_PCRE2 is OFF: the regex example (examples/regex), "
                 "its tests, benchmark and fuzzer and the demo's --regex are left out")
  return()
endif()
find_program(PCRE2_CONFIG_EXECUTABLE pcre2-config)
set(_dk_pcre2_hints "")
if(PCRE2_CONFIG_EXECUTABLE)
  execute_process(COMMAND "${PCRE2_CONFIG_EXECUTABLE}" --prefix OUTPUT_VARIABLE _dk_pcre2_prefix
                  OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE _dk_pcre2_rc)
  if(_dk_pcre2_rc EQUAL 0 AND _dk_pcre2_prefix)
    list(APPEND _dk_pcre2_hints "${_dk_pcre2_prefix}")
  endif()
endif()
find_path(PCRE2_INCLUDE_DIR pcre2.h HINTS ${_dk_pcre2_hints} PATH_SUFFIXES include)
find_library(PCRE2_8_LIBRARY NAMES pcre2-8 HINTS ${_dk_pcre2_hints} PATH_SUFFIXES lib lib64)
if(EXISTS "${PCRE2_INCLUDE_DIR}/pcre2.h" AND EXISTS "${PCRE2_8_LIBRARY}")
  file(STRINGS "${PCRE2_INCLUDE_DIR}/pcre2.h" _dk_pcre2_ver REGEX "#define PCRE2_(MAJOR|MINOR) +[0-9]+")
  string(REGEX MATCH "PCRE2_MAJOR +([0-9]+)" _ "${_dk_pcre2_ver}")
  set(_dk_pcre2_major "${CMAKE_MATCH_1}")
  string(REGEX MATCH "PCRE2_MINOR +([0-9]+)" _ "${_dk_pcre2_ver}")
  set(_dk_pcre2_version "${_dk_pcre2_major}.${CMAKE_MATCH_1}")
  if(_dk_pcre2_version VERSION_LESS 10.30)
    message(STATUS "decodekit: PCRE2 ${_dk_pcre2_version} found in ${PCRE2_INCLUDE_DIR} is older "
                   "than 10.30: the regex example, its tests and the demo's --regex are left out")
  else()
    add_library(decodekit_pcre2 UNKNOWN IMPORTED)
    set_target_properties(decodekit_pcre2 PROPERTIES
      IMPORTED_LOCATION "${PCRE2_8_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${PCRE2_INCLUDE_DIR}"
      INTERFACE_COMPILE_DEFINITIONS "PCRE2_CODE_UNIT_WIDTH=8")
    set(DECODEKIT_PCRE2_FOUND ON)
    message(STATUS "decodekit: PCRE2 ${_dk_pcre2_version}: ${PCRE2_8_LIBRARY}")
  endif()
else()
  message(STATUS "decodekit: PCRE2 (8-bit) not found: the regex example (examples/regex), its "
                 "tests and the demo's --regex are left out. Debian: apt-get install libpcre2-dev "
                 "(scripts/setup.sh installs it)")
endif()
unset(_dk_pcre2_hints)
unset(_dk_pcre2_prefix)
unset(_dk_pcre2_rc)
unset(_dk_pcre2_ver)
unset(_dk_pcre2_major)
unset(_dk_pcre2_version)
