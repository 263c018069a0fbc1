#!/usr/bin/env bash
# Fails when a C++ file of the tree is not formatted by .clang-format (clang-format 14).
# Exit 77 (ctest: skipped) when clang-format is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format not found: format check skipped"; exit 77; }
mapfile -t files < <(git ls-files -- 'include/*.hpp' 'tests/*.cpp' 'tests/*.hpp' 'bench/*.cpp' \
  'bench/*.hpp' 'examples/*.cpp' 'examples/*.hpp' 'fuzz/*.cpp' 2>/dev/null || true)
[ ${#files[@]} -gt 0 ] || { echo "no files to check"; exit 0; }
clang-format --dry-run -Werror "${files[@]}"
echo "format: ${#files[@]} files clean"
