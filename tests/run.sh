#!/usr/bin/env bash
# Runs every test and ends with the line "N passed, N failed".
# Usage: tests/run.sh [FILTER]   (FILTER: a substring of test names to run)
set -u
cd "$(dirname "$0")/.."
B=build
LIB=$PWD/$B/libzns_slab.so
FILTER=${1:-}
pass=0; fail=0; failed=()
LOGDIR=$B/test-logs; mkdir -p "$LOGDIR"

run_one() {   # name, command...
  local name=$1; shift
  [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && return
  local log="$LOGDIR/${name//\//_}.log" t0=$SECONDS
  if timeout 600 "$@" >"$log" 2>&1; then
    pass=$((pass+1)); printf 'PASS %-40s %3ss\n' "$name" $((SECONDS-t0))
  else
    local rc=$?
    fail=$((fail+1)); failed+=("$name"); printf 'FAIL %-40s (exit %s) log: %s\n' "$name" "$rc" "$log"
    tail -n 15 "$log" | sed 's/^/     | /'
  fi
}

# A test started in the background, reported (run_one's way) by bg_report: for long ones whose time
# limits leave room for a busy machine, while the serial ones use the other core.  They form one
# lane: each starts when the one started before it has ended (its status file is there).
bg_start() {   # name, command...
  local name=$1; shift
  [[ -n "$FILTER" && "$name" != *"$FILTER"* ]] && return
  local log="$LOGDIR/${name//\//_}.log" prev=$bg_prev prev_pid=
  [ ${#bg_pids[@]} -gt 0 ] && prev_pid=${bg_pids[-1]}
  bg_names+=("$name"); rm -f "$log.status"
  # (the one before ended: its status file, or its process gone without one, e.g. killed)
  ( if [ -n "$prev" ]; then while [ ! -e "$prev" ] && kill -0 "$prev_pid" 2>/dev/null; do sleep 1; done; fi
    t0=$SECONDS; timeout 600 "$@" >"$log" 2>&1; echo "$? $((SECONDS-t0))" >"$log.status" ) &
  bg_pids+=($!); bg_prev=$log.status
}
# An interrupted run ends its lane too (a subshell in the background ignores the terminal's
# SIGINT, and `timeout` runs in a process group of its own).  The last job first, each subshell
# before its child (`timeout`, or the `sleep` of its wait): else a waiting job starts when the
# one before it is killed.
bg_stop() {
  local i kids
  for ((i = ${#bg_pids[@]} - 1; i >= 0; i--)); do
    kids=$(pgrep -P "${bg_pids[$i]}")
    kill "${bg_pids[$i]}" 2>/dev/null
    [ -n "$kids" ] && kill -TERM $kids 2>/dev/null
  done
}
trap 'bg_stop; exit 130' INT
trap 'bg_stop; exit 143' TERM
bg_report() {
  local i name log rc secs
  for i in "${!bg_pids[@]}"; do
    name=${bg_names[$i]}; log="$LOGDIR/${name//\//_}.log"
    wait "${bg_pids[$i]}"
    read -r rc secs <"$log.status" 2>/dev/null || { rc=1; secs=?; }
    if [ "$rc" = 0 ]; then
      pass=$((pass+1)); printf 'PASS %-40s %3ss (in the background)\n' "$name" "$secs"
    else
      fail=$((fail+1)); failed+=("$name"); printf 'FAIL %-40s (exit %s) log: %s\n' "$name" "$rc" "$log"
      tail -n 15 "$log" | sed 's/^/     | /'
    fi
  done
}
bg_names=(); bg_pids=(); bg_prev=

export ZNS_LIB=$LIB ZNS_EXPECT=1
# plain reference runs shared by the modes of one test (tests/programs/lib/common.bash)
export PROGTEST_PLAIN_CACHE=$PWD/$B/plain-cache; rm -rf "$PROGTEST_PLAIN_CACHE"; mkdir -p "$PROGTEST_PLAIN_CACHE"
# The background lane, beside the serial tests below (on this 2-core machine the serial lane alone
# kept one core busy half the time, and took ~18 min): the aarch64 build under qemu-user (~4 min),
# then the tier's scenarios (~3 min; their time limits have room for a busy machine: they passed
# beside helpers' loads), the heap profiler, the fuzzer and the other compilers' builds.
# (What the lanes' builds install, installed first, once: two apt-get runs side by side would meet
# at dpkg's lock.  `make test` has done it already; this is for tests/run.sh run by hand, in full.)
if [ -z "$FILTER" ]; then
  env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory deps-test deps-hardening >&2 || exit 2
fi
bg_start cross/aarch64 bash tests/cross/run.sh
bg_start tier bash tests/tier/run.sh                         # issue 5: uffd and madvise, every scenario
bg_start prof bash tests/prof/run.sh                         # the heap profiler (libzns_slab_prof.so)
bg_start fuzz/heap_fuzz bash tests/fuzz/run.sh 40          # libFuzzer + ASan/UBSan, shadow model
bg_start "fuzz/heap_fuzz(secure)" env ZNS_SECURE=1 bash tests/fuzz/run.sh 20
bg_start programs/other_builds bash tests/programs/other_builds.sh   # clang, -flto
run_one unit $B/tests/unit_tests
# the same tests in 20 shuffled orders: a test must not depend on what the ones before it left
# behind (a stale slab flag once made four of them fail in some orders)
# (the failing run's own output: a second run may pass)
run_one "unit(shuffled)" bash -c 'for s in $(seq 1 20); do
  out=$("$0" --order-by=rand --rand-seed=$s 2>&1) || { echo "unit tests fail in order --rand-seed=$s:"; printf "%s\n" "$out" | grep -v "^\[doctest\] \(doctest version\|run with\)" | tail -40; exit 1; }
done; echo "20 shuffled orders pass"' $B/tests/unit_tests
for src in tests/api/*.c tests/api/*.cpp tests/stress/*.c tests/stress/*.cpp; do
  [ -e "$src" ] || continue
  n=${src%.*}; n=${n#tests/}
  run_one "$n(preload)" env LD_PRELOAD="$LIB" "$B/tests/$n"
  run_one "$n(linked)" "$B/tests/$n.static"
  # linked with -static (libzns_slab_static.a; not the programs that dlopen plugins)
  [ -e "$B/tests/$n.fullstatic" ] && run_one "$n(-static)" "$B/tests/$n.fullstatic"
done
# LD_DYNAMIC_WEAK=1 makes the loader prefer a strong definition to a weak one: the shim's dlopen
# must stay global in the shared library (weak, glibc's won, and deep-bound libraries aborted)
run_one "api/deepbind(LD_DYNAMIC_WEAK)" env LD_DYNAMIC_WEAK=1 LD_PRELOAD="$LIB" "$B/tests/api/deepbind"
# ZNS_SECURE=1 (issue 6): the stress programs and the real programs again in the hardened mode
# (tests/api/secure.c checks the mode's own promises, in both runs of the loop above)
for src in tests/stress/*.c tests/stress/*.cpp; do
  n=${src%.*}; n=${n#tests/}
  # (fork_mt: 20 forks instead of 50; its children's checks take ~0.4 s a fork in this mode)
  scale=1; [ "$n" = stress/fork_mt ] && scale=0.4
  run_one "$n(secure)" env ZNS_SECURE=1 ZT_SCALE=$scale LD_PRELOAD="$LIB" "$B/tests/$n"
done
for p in python sqlite redis postgres; do
  run_one "programs/$p(secure)" env ZNS_SECURE=1 bash "tests/programs/$p.sh"
done
# The tier (issue 5) under real programs with a 50 ms cold window: redis's heap goes out and comes
# back, and it forks (BGSAVE) with slabs out; python's cycle collector reads its whole heap every
# few seconds (the return governor keeps that from burying the run in paging)
for t in uffd madvise; do
  run_one "programs/redis($t)" env ZNS_TIER=$t ZNS_TIER_COLD_MS=50 bash tests/programs/redis.sh
  run_one "programs/python($t)" env ZNS_TIER=$t ZNS_TIER_COLD_MS=50 bash tests/programs/python.sh
done
# PostgreSQL's work happens in forked backends, each with a tier of its own (the server runs as
# the `postgres` user, who gets madvise)
run_one "programs/postgres(madvise)" env ZNS_TIER=madvise ZNS_TIER_COLD_MS=50 ZNS_TIER_CHILD_MS=200 bash tests/programs/postgres.sh
for s in tests/perf/*.sh; do   # instruction and page-fault counts (not times)
  n=${s%.sh}; n=${n#tests/}
  run_one "$n" bash "$s"
done
run_one stress_long bash tests/stress_long/run.sh 20       # `make stress` for 20 s
# The TSan build of the thread-churn driver (make check-sanitize runs all of them, with ASan too):
# its stretched timing found a false "double free" that no native test here reproduced.
run_one "sanitize/tsan-churn" bash -c 'env -u MAKEFLAGS -u MFLAGS make -s --no-print-directory deps-hardening build/sanitize/tsan/churn >&2 && SAN_FLAVOURS=tsan SAN_UNIT=0 tests/sanitize/run.sh churn'
for s in tests/programs/*.sh; do
  [ -e "$s" ] || continue
  n=${s%.sh}; n=${n#tests/}
  [ "$n" = programs/other_builds ] && continue   # (in the background lane)
  run_one "$n" bash "$s"
done
bg_report
echo
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
