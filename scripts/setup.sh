#!/usr/bin/env bash
# Installs the Debian 12 packages decodekit's build, tests, benchmarks and demo need, when missing.
# As root it runs apt-get; otherwise it prints the command to run and fails.
set -euo pipefail

# libpcre2-dev: the regular-expression example (examples/regex, the demo's --regex); without it
# the rest still builds.
packages=(cmake ninja-build g++ clang libclang-rt-14-dev clang-format python3 git
          libxsimd-dev catch2 libbenchmark-dev libpcre2-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "decodekit setup: installing missing packages: ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
    echo "decodekit setup: not root. Run this once, then try again:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
