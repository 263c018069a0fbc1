# Configures, builds and runs one consumer project (ctest runs this with cmake -P).
# MODE: find_package | add_subdirectory | single_header
cmake_minimum_required(VERSION 3.25)
file(REMOVE_RECURSE "${WORK_DIR}")
set(consumer_src "${SOURCE_DIR}/tests/consumer/${MODE}")

function(run)
  execute_process(COMMAND ${ARGV} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "consumer ${MODE}: command failed (${rc}): ${ARGV}")
  endif()
endfunction()

set(extra "")
if(MODE STREQUAL "find_package")
  # Install decodekit into a staging prefix inside the build tree, then consume it from there.
  run("${CMAKE_COMMAND}" --install "${BINARY_DIR}" --prefix "${WORK_DIR}/staging")
  list(APPEND COMMON "-DCMAKE_PREFIX_PATH=${WORK_DIR}/staging")
elseif(MODE STREQUAL "add_subdirectory")
  list(APPEND extra "-DDECODEKIT_SOURCE_DIR=${SOURCE_DIR}")
elseif(MODE STREQUAL "single_header")
  list(APPEND extra "-DDECODEKIT_SOURCE_DIR=${SOURCE_DIR}")
endif()
list(FILTER COMMON EXCLUDE REGEX "^-DCMAKE_PREFIX_PATH=$")
run("${CMAKE_COMMAND}" -S "${consumer_src}" -B "${WORK_DIR}/build" ${COMMON} ${extra})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}/build")
run("${WORK_DIR}/build/consumer")
