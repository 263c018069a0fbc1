#!/usr/bin/env bash
# The whole test suite: installs what is missing, then runs each CMake workflow preset
# (configure + build + ctest). Default presets: test (g++), asan (clang ASan+UBSan),
# noexcept (-fno-exceptions), single-header (the suite against single_include/).
# Override with DECODEKIT_TEST_PRESETS="test asan" or arguments: scripts/test.sh test tsan
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ $# -gt 0 ]; then presets=("$@"); else
  read -r -a presets <<< "${DECODEKIT_TEST_PRESETS:-test asan noexcept single-header}"
fi
for p in "${presets[@]}"; do
  echo "==== decodekit: workflow preset '$p'"
  start=$SECONDS
  cmake --workflow --preset "$p"
  echo "==== decodekit: preset '$p' passed in $((SECONDS - start)) s"
done
