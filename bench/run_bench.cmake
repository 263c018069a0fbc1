# Runs decodekit_bench once (medians of repetitions, JSON out) and turns its JSON into the tables
# of bench/RESULTS.md. Called by the bench workflow's test step (bench/CMakeLists.txt):
#   cmake -DBENCH=... -DPYTHON=... -DSOURCE_DIR=... -DOUT=bench.json -DTABLES=bench-tables.md
#         -P run_bench.cmake
# Environment: DK_BENCH_FILTER (a --benchmark_filter regex; default all), DK_BENCH_REPETITIONS
# (default 5).
foreach(_v BENCH PYTHON SOURCE_DIR OUT TABLES)
  if(NOT DEFINED ${_v})
    message(FATAL_ERROR "run_bench.cmake: -D${_v}=... is required")
  endif()
endforeach()

set(_reps 5)
if(DEFINED ENV{DK_BENCH_REPETITIONS})
  set(_reps "$ENV{DK_BENCH_REPETITIONS}")
endif()
if(NOT _reps MATCHES "^[1-9][0-9]*$")
  message(FATAL_ERROR "DK_BENCH_REPETITIONS must be a positive integer, got '${_reps}'")
endif()
set(_filter "")
if(DEFINED ENV{DK_BENCH_FILTER})
  set(_filter "--benchmark_filter=$ENV{DK_BENCH_FILTER}")
endif()

# The commit and the repetitions, recorded in the JSON's context (the binary adds the CPU model,
# the compiler and the flags: bench_context.cpp). A context value holds no ',' or '='.
set(_commit "unknown")
find_package(Git QUIET)
if(GIT_FOUND)
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SOURCE_DIR}" log -1 "--format=%h %cI"
                  OUTPUT_VARIABLE _commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  execute_process(COMMAND "${GIT_EXECUTABLE}" -C "${SOURCE_DIR}" status --porcelain
                          --untracked-files=no
                  OUTPUT_VARIABLE _dirty ERROR_QUIET)
  if(NOT _dirty STREQUAL "")
    string(APPEND _commit " (uncommitted changes)")
  endif()
endif()
set(_context "")
string(REGEX REPLACE "[,=]" " " _commit "${_commit}")
foreach(_pair "commit=${_commit}" "repetitions=${_reps}")
  list(APPEND _context "${_pair}")
endforeach()
list(JOIN _context "," _context)

message(STATUS "decodekit_bench: ${_reps} repetitions, JSON to ${OUT} ${_filter}")
execute_process(
  COMMAND "${BENCH}" "--benchmark_repetitions=${_reps}" --benchmark_report_aggregates_only=true
          "--benchmark_out=${OUT}" --benchmark_out_format=json "--benchmark_context=${_context}"
          ${_filter}
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "decodekit_bench failed (${_rc})")
endif()
execute_process(
  COMMAND "${PYTHON}" "${SOURCE_DIR}/scripts/bench_report.py" "${OUT}" -o "${TABLES}"
  RESULT_VARIABLE _rc)
if(NOT _rc EQUAL 0)
  message(FATAL_ERROR "scripts/bench_report.py failed (${_rc})")
endif()
message(STATUS "tables: ${TABLES} (python3 scripts/bench_report.py ${OUT} --update bench/RESULTS.md)")
