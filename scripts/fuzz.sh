#!/usr/bin/env bash
# Builds every libFuzzer target (clang, -fsanitize=fuzzer,address,undefined; build dir
# build/fuzz via the `fuzz` preset) and runs each for SECONDS (default 60) on a temporary copy of
# its seed corpus fuzz/corpus/<target>/ (the committed corpus never grows). Prints the executions
# reached per target; exits non-zero on any finding (crash, sanitizer report, failed oracle,
# timeout, leak, OOM), leaving the reproducer in the temporary directory it prints.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 30, scripts/fuzz.sh 600 fuzz_sampler
# (with TARGETs only those are built). fuzz_regex_* is skipped, and said so, when the build has no
# PCRE2 (or -DDECODEKIT_WITH_PCRE2=OFF).
# Environment: DECODEKIT_FUZZ_JOBS (build jobs, default 2), DECODEKIT_FUZZ_PARALLEL (fuzzers run at
# once, default the number of CPUs: each gets one core), DECODEKIT_FUZZ_ARGS (extra libFuzzer
# flags), DECODEKIT_FUZZ_KEEP=1 (keep the temporary directory even on success),
# DECODEKIT_FUZZ_SEED (libFuzzer -seed; default 0 = a fresh random seed per run, for exploration),
# DECODEKIT_FUZZ_ARCHS (all, the default: fuzz_kernels runs every xsimd architecture the build
# enables; edges: the best and the narrowest only, a quarter of its compile; fuzz/CMakeLists.txt;
# scripts/test.sh sets edges: replay its run with DECODEKIT_FUZZ_ARCHS=edges).
# scripts/test.sh (CI) passes a fixed seed: for a given binary, corpus and seed libFuzzer's
# mutations are reproducible (up to the order of equal-size corpus files, which follows the
# directory listing), so a short CI run mostly replays what a longer local run with that seed
# already explored and flags regressions rather than luck. Long random-seed runs
# (scripts/fuzz.sh 600) are where new bugs are looked for.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"
shift || true
command -v clang++ > /dev/null || { echo "fuzz.sh: clang++ is required (apt-get install clang)" >&2; exit 2; }

cmake --preset fuzz -DDECODEKIT_TEST_ARCHS="${DECODEKIT_FUZZ_ARCHS:-all}" > /dev/null
# build/fuzz/fuzz/fuzzers.txt: the fuzzers this configuration defines (fuzz_regex_* only with
# PCRE2), so a binary left over from an earlier configuration is never run.
configured=" $(tr '\n' ' ' < build/fuzz/fuzz/fuzzers.txt) "
if [ $# -gt 0 ]; then targets=("$@"); else
  targets=()
  for src in fuzz/fuzz_*.cpp; do targets+=("$(basename "$src" .cpp)"); done
fi
build=()
for t in "${targets[@]}"; do
  if [[ "$configured" == *" $t "* ]]; then build+=("$t")
  elif [[ "$t" != fuzz_regex* ]]; then echo "fuzz.sh: no fuzzer $t" >&2; exit 2; fi
done
if [ $# -gt 0 ]; then
  [ ${#build[@]} -eq 0 ] || cmake --build build/fuzz --target "${build[@]}" -j "${DECODEKIT_FUZZ_JOBS:-2}"
else
  cmake --build build/fuzz --target decodekit_fuzzers -j "${DECODEKIT_FUZZ_JOBS:-2}"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/decodekit-fuzz.XXXXXX")"
# run_one TARGET: one fuzzer for SECONDS; writes its summary line to $work/TARGET/line and
# leaves $work/TARGET/finding when it found something.
run_one() {
  local t="$1" bin="build/fuzz/fuzz/$1" start=$SECONDS rc execs line
  mkdir -p "$work/$t/corpus" "$work/$t/artifacts"
  if [ -d "fuzz/corpus/$t" ]; then cp -r "fuzz/corpus/$t/." "$work/$t/corpus/"; fi
  set +e
  # -timeout: one input taking > 10 s is a hang; -rss_limit_mb: absurd allocations are findings.
  # shellcheck disable=SC2086
  "$bin" -seed="${DECODEKIT_FUZZ_SEED:-0}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2560 -print_final_stats=1 \
    -artifact_prefix="$work/$t/artifacts/" ${DECODEKIT_FUZZ_ARGS:-} "$work/$t/corpus" \
    > "$work/$t/log" 2>&1
  rc=$?
  set -e
  execs="$( (grep -o 'stat::number_of_executed_units: [0-9]*' "$work/$t/log" || true) | awk '{print $2}' | tail -1)"
  line="$t: ${execs:-?} executions in $((SECONDS - start)) s"
  if [ $rc -ne 0 ] || ls "$work/$t/artifacts/"* > /dev/null 2>&1; then
    line="$line  FINDING (exit $rc): $(ls "$work/$t/artifacts/" 2>/dev/null | tr '\n' ' ')"
    { grep -E 'fuzz check failed|ERROR: |runtime error|SUMMARY' "$work/$t/log" | head -5 || true
      echo "     log: $work/$t/log"; } > "$work/$t/finding"
  fi
  echo "$line" > "$work/$t/line"
}
# Up to DECODEKIT_FUZZ_PARALLEL fuzzers at once (default: the number of CPUs): each libFuzzer run
# is single-threaded, so every target still gets SECONDS of one core.
parallel="${DECODEKIT_FUZZ_PARALLEL:-$(nproc 2>/dev/null || echo 1)}"
[ "$parallel" -ge 1 ] 2>/dev/null || parallel=1
running=0
for t in "${targets[@]}"; do
  if [[ "$configured" != *" $t "* ]]; then  # fuzz_regex_*: needs PCRE2 (libpcre2-dev)
    echo "==== fuzz: $t skipped: built without PCRE2"
    mkdir -p "$work/$t"
    echo "$t: skipped (no PCRE2)" > "$work/$t/line"
    continue
  fi
  [ -x "build/fuzz/fuzz/$t" ] || { echo "fuzz.sh: no fuzzer build/fuzz/fuzz/$t" >&2; exit 2; }
  if [ "$running" -ge "$parallel" ]; then wait -n || true; running=$((running - 1)); fi
  echo "==== fuzz: $t for ${seconds}s"
  run_one "$t" &
  running=$((running + 1))
done
wait
status=0
summary=()
for t in "${targets[@]}"; do
  if [ -f "$work/$t/finding" ]; then status=1; cat "$work/$t/finding"; fi
  summary+=("$(cat "$work/$t/line" 2>/dev/null || echo "$t: no result")")
  [ -f "$work/$t/line" ] || status=1
done
echo "==== fuzz summary (${seconds}s per target)"
printf '  %s\n' "${summary[@]}"
if [ $status -eq 0 ] && [ "${DECODEKIT_FUZZ_KEEP:-0}" != 1 ]; then rm -rf "$work"; else echo "work dir: $work"; fi
exit $status
