#!/usr/bin/env bash
# Runs tests/stress_long/long_stress.cpp under LD_PRELOAD=build/libzns_slab.so for SECONDS
# (default 180; `make stress STRESS_SECONDS=20` is the short version that `make test` runs).
# Brings it (and the library) up to date first (`make stress-build`).
# Environment: STRESS_THREADS (16), STRESS_RSS_MB (768), STRESS_STATS=1 (heap statistics every 10 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-${STRESS_SECONDS:-180}}
bin=build/tests/stress_long/long_stress
lib=$PWD/build/libzns_slab.so
env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory stress-build >&2
export ZNS_EXPECT=1 STRESS_SECONDS=$secs
exec env LD_PRELOAD="$lib" "$bin"
