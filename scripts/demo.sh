#!/usr/bin/env bash
# Builds and runs the demo (examples/demo): installs what is missing, builds in build/release,
# then runs decodekit-demo with the arguments given (see decodekit-demo --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target decodekit-demo
exec build/release/examples/decodekit-demo "$@"
