#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs each CMake workflow preset
# (configure + build + ctest). Default presets: test (g++), asan (clang ASan+UBSan),
# single-header-noexcept (the suite against single_include/ built with -fno-exceptions: the
# `noexcept` and `single-header` presets in one build, to keep CI under 25 minutes), tsan (the
# threaded tests under ThreadSanitizer), and `fuzz`: a short run of every libFuzzer target
# (scripts/fuzz.sh, DECODEKIT_FUZZ_SECONDS each, default 7: CI time is kept under 25 minutes; one
# fuzzer per CPU at once) with the fixed libFuzzer seed
# DECODEKIT_FUZZ_SEED (default 1) so that the suite is reproducible, fuzz_kernels on the best and
# the narrowest xsimd architecture (DECODEKIT_FUZZ_ARCHS, default edges here: the test preset
# checks every architecture against the reference); see scripts/fuzz.sh; and
# `soak`: a short soak of the engine example's loop (scripts/soak.sh DECODEKIT_SOAK_SECONDS,
# default 20, per run: one under ASan + UBSan, one unsanitized checking RSS), seed
# DECODEKIT_SOAK_SEED (default 1).
# Override with DECODEKIT_TEST_PRESETS="test asan" or arguments: scripts/test.sh test tsan
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then presets=("$@"); else
  read -r -a presets <<< "${DECODEKIT_TEST_PRESETS:-test asan single-header-noexcept tsan fuzz soak}"
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
total=0
for p in "${presets[@]}"; do
  echo "==== decodekit: workflow preset '$p'"
  start=$SECONDS
  if [ "$p" = fuzz ]; then
    DECODEKIT_FUZZ_SEED="${DECODEKIT_FUZZ_SEED:-1}" DECODEKIT_FUZZ_ARCHS="${DECODEKIT_FUZZ_ARCHS:-edges}" \
      bash scripts/fuzz.sh "${DECODEKIT_FUZZ_SECONDS:-7}"
  elif [ "$p" = soak ]; then
    # reuse the engine the asan and test presets built in this run (same flags), if they ran
    soak_env=()
    for q in "${presets[@]}"; do
      [ "$q" = asan ] && soak_env+=("DECODEKIT_SOAK_ASAN_DIR=build/asan")
      [ "$q" = test ] && soak_env+=("DECODEKIT_SOAK_DIR=build/test")
    done
    env "${soak_env[@]}" DECODEKIT_SOAK_SEED="${DECODEKIT_SOAK_SEED:-1}" \
      bash scripts/soak.sh "${DECODEKIT_SOAK_SECONDS:-20}"
  else
    cmake --workflow --preset "$p" 2>&1 | tee "$log"
    n="$(grep -oE 'tests passed, 0 tests failed out of [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1)"
    total=$((total + ${n:-0}))
  fi
  echo "==== decodekit: preset '$p' passed in $((SECONDS - start)) s"
done
# The closing line CI reads: ctest entries over every preset (fuzz targets not counted).
echo "tests: ${total} passed, 0 failed"
