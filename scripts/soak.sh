#!/usr/bin/env bash
# The soak test: decodekit-engine --soak drives the engine example's continuous-batching loop
# with random requests (random and adversarial parameters, invalid ones rejected up front, long
# prompts, prompts with out-of-range ids, stop sequences and strings, cancellations, requests
# joining and leaving) and replays each served request alone through its driver (equal, or a
# prefix when cancelled). Two runs of SECONDS each (default 120):
#   1. under ASan + UBSan (clang, -DNDEBUG as users ship; build/soak-asan): any sanitizer report,
#      leak or finding fails;
#   2. unsanitized (g++ -O2 -DNDEBUG; build/soak): RSS at the end must be <= 1.1x RSS after
#      warm-up (ASan's quarantine grows RSS on its own, hence a second run).
# Each run prints requests served, tokens, findings, the slowest engine step against the median
# and RSS. Both runs are single-threaded and run at once (DECODEKIT_SOAK_PARALLEL=0: one by one). DECODEKIT_SOAK_SEED (default 1) picks the request stream (reproducible).
# Usage: scripts/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-120}"
seed="${DECODEKIT_SOAK_SEED:-1}"
jobs="${DECODEKIT_SOAK_JOBS:-2}"

configure() {  # dir, extra cmake args...
  local dir="$1"; shift
  if [ ! -f "$dir/build.ninja" ]; then
    cmake -S . -B "$dir" -G Ninja -DDECODEKIT_BUILD_EXAMPLES=ON -DDECODEKIT_BUILD_TESTS=OFF \
      -DCMAKE_BUILD_TYPE=Release "$@" > "$dir.configure.log" 2>&1 ||
      { cat "$dir.configure.log"; exit 1; }
  fi
  cmake --build "$dir" --target decodekit-engine -j"$jobs"
}

# DECODEKIT_SOAK_ASAN_DIR / DECODEKIT_SOAK_DIR: an already configured build directory with the
# same kind of build (scripts/test.sh passes build/asan and build/test, whose presets build the
# examples with these sanitizer flags and -O2), so the suite does not compile the engine twice.
asan_dir="${DECODEKIT_SOAK_ASAN_DIR:-build/soak-asan}"
plain_dir="${DECODEKIT_SOAK_DIR:-build/soak}"
mkdir -p build
configure "$asan_dir" -DCMAKE_CXX_COMPILER=clang++ \
  "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -g -DNDEBUG" \
  "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
configure "$plain_dir" -DCMAKE_CXX_COMPILER=g++ "-DCMAKE_CXX_FLAGS_RELEASE=-O2 -DNDEBUG"

# The two runs are single-threaded: they run side by side (one core each; output after both),
# unless DECODEKIT_SOAK_PARALLEL=0.
logs="$(mktemp -d "${TMPDIR:-/tmp}/decodekit-soak.XXXXXX")"
trap 'rm -rf "$logs"' EXIT
run_asan() {
  echo "==== soak 1/2: ASan + UBSan, ${seconds} s ($asan_dir)"
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
    "$asan_dir/examples/decodekit-engine" --soak "$seconds" --seed "$seed"
}
run_plain() {
  echo "==== soak 2/2: unsanitized, ${seconds} s, RSS at the end <= 1.1x after warm-up ($plain_dir)"
  "$plain_dir/examples/decodekit-engine" --soak "$seconds" --seed "$seed" --rss-limit 1.1
}
if [ "${DECODEKIT_SOAK_PARALLEL:-1}" != 0 ]; then
  run_asan > "$logs/asan" 2>&1 &
  asan_pid=$!
  rc_plain=0
  run_plain > "$logs/plain" 2>&1 || rc_plain=$?
  rc_asan=0
  wait "$asan_pid" || rc_asan=$?
  cat "$logs/asan" "$logs/plain"
  [ "$rc_asan" -eq 0 ] || { echo "soak: the ASan + UBSan run failed (exit $rc_asan)" >&2; exit 1; }
  [ "$rc_plain" -eq 0 ] || { echo "soak: the unsanitized run failed (exit $rc_plain)" >&2; exit 1; }
else
  run_asan
  run_plain
fi
echo "soak: passed (2 runs of ${seconds} s, seed ${seed})"
