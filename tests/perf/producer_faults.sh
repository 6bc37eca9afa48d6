#!/usr/bin/env bash
# A busy producer's parked slabs stay resident while its consumer frees them (DESIGN "Parked
# slabs", an idle owner): tests/perf/producer_faults.c's 1 KiB producer at 20k blocks a second for
# 2 s cycles ~312 slabs of 128 blocks; were each one given back by the consumer's completing free
# and faulted in again, that is ~32 faults a slab (~10,000).  At 2026-12-07: ~100.  The bound
# leaves room for the producer's stalls on a loaded machine (a stall past kParkIdleMs, 10 ms, is
# idleness, rightly: a few slabs each).  Counts the kernel's faults, not time.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIB=${ZNS_LIB:-$PWD/build/libzns_slab.so}
for v in $(compgen -e | grep '^ZNS_' || true); do unset "$v"; done   # (the library's defaults)
BIN=build/tests/perf/producer_faults
mkdir -p build/tests/perf
cc -O2 -pthread -o "$BIN" tests/perf/producer_faults.c
read -r faults blocks < <(LD_PRELOAD=$LIB "$BIN" 20000 2)
echo "producer/consumer, $blocks blocks of 1 KiB: $faults page faults (at most 2500)"
if [ "$faults" -gt 2500 ]; then
  echo "FAIL: the consumer's frees give a busy producer's parked slabs back to the OS (parked_purge),"
  echo "      and the producer faults them in again: see last_refill_ms and kParkIdleMs (core/heap.h)"
  exit 1
fi
