#!/usr/bin/env bash
# Runs the heap fuzzer for SECONDS (default 40) on the corpus in build/fuzz/corpus; exits non-zero
# on any crash, failed check, leak, timeout or out-of-memory (libFuzzer's exit status).  Brings the
# fuzzer up to date first (`make fuzz-build`: a no-op when it is).
# Usage: tests/fuzz/run.sh [SECONDS]      (`make fuzz` = 300 s, `make fuzz-short` = 40 s)
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${1:-40}
bin=build/fuzz/heap_fuzz
corpus=build/fuzz/corpus
artifacts=build/fuzz/artifacts
env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory fuzz-build >&2
mkdir -p "$corpus" "$artifacts"
# A few random seeds when the corpus is empty (libFuzzer would also start from nothing).
if [ -z "$(ls -A "$corpus")" ]; then
  for i in 1 2 3 4 5 6 7 8; do head -c $((i * 256)) /dev/urandom >"$corpus/seed$i"; done
fi
echo "heap_fuzz: ${secs}s, corpus $corpus ($(ls "$corpus" | wc -l) inputs), crashes go to $artifacts/"
# -timeout: one input taking more than 20 s is a hang (a deadlock in the heap).
# -rss_limit_mb: the heap purges empty slabs; 2 GiB means memory is not coming back.
# Exit status: 0 when the time is up; non-zero on any failure (77: crash, failed check or sanitizer
# report, 70: timeout; the input is saved in build/fuzz/artifacts/, replay: build/fuzz/heap_fuzz FILE).
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
exec "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=4096 \
  -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus"
