#!/usr/bin/env bash
# A program whose main thread ends with pthread_exit (lib/main_exit.c) must end when its last
# thread does, with status 0 and its stdout flushed, whatever threads the library runs: the
# statistics' and the profiler's interval threads, the tier's (uffd, madvise).  glibc counts
# them as threads too, so until 2026-12-06 such a program never ended under any of them, and took
# no signal either (its main thread gone, the library's blocking them all): `timeout` could not
# stop it (a review).  The library now ends the process once only its own threads are left
# (core/platform.h, end_process_if_alone).
TEST_NAME=main_exit
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
zns_make_tmp
[[ $SHIM == 1 ]] || exit 0
PROF_LIB=$(dirname "$ZNS_LIB")/libzns_slab_prof.so
cd "$TMPD"
cc -O1 -pthread "$PROG_LIB/main_exit.c" -o main_exit || die "cannot compile main_exit.c"
check() {   # label env...
  local label=$1; shift
  local rc=0 out
  out=$(timeout -k 2 20 env "$@" ./main_exit) || rc=$?
  [[ $rc == 0 && $out == "worker done atexit ok" ]] ||
    die "$label: exit status $rc (124/137: it did not end), stdout '$out' (expected 0, 'worker done atexit ok': the atexit handler needs 200 KB of stack and its signal)"
  log "$label: ended, status 0, stdout flushed"
}
check "no thread of the library's" LD_PRELOAD="$ZNS_LIB"
check "ZNS_STATS_INTERVAL_MS" LD_PRELOAD="$ZNS_LIB" ZNS_STATS="$TMPD/s.jsonl" ZNS_STATS_INTERVAL_MS=50
check "ZNS_TIER=uffd" LD_PRELOAD="$ZNS_LIB" ZNS_TIER=uffd ZNS_TIER_DIR="$TMPD"
check "ZNS_TIER=madvise" LD_PRELOAD="$ZNS_LIB" ZNS_TIER=madvise ZNS_TIER_DIR="$TMPD"
if [[ -f $PROF_LIB ]]; then
  check "ZNS_PROF_INTERVAL_MS" LD_PRELOAD="$PROF_LIB" ZNS_PROF="$TMPD/p.prof" ZNS_PROF_INTERVAL_MS=50
fi
log PASS
