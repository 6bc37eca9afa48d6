#!/usr/bin/env bash
# Debian's CPython under the shim with PYTHONMALLOC=malloc (every object is a malloc call).
# The workload (lib/python_workload.py) builds ~1M objects, json/pickle round trips, sorts,
# deletes, grows strings past 4 KiB by realloc, frees objects across threads and starts a child
# interpreter.  Checks:
#   1. the output (digests) is byte-identical without and with LD_PRELOAD=$ZNS_LIB;
#   2. the shim run exits 0 with nothing unexpected on stderr;
#   3. the shim wrote a stats document for the parent AND for the child interpreter (ZNS_STATS
#      with %p), each with totals.allocated > 500000 (plain CPython makes ~26M small
#      allocations here, the child ~1.7M; interpreter start-up alone is ~22k);
#   4. under ZNS_TIER (tests/run.sh runs it with uffd and madvise and a 50 ms cold window) slabs
#      went out and came back, with no eviction error, and the run still ends within the timeout.
#      The cycle collector reads the whole heap every few seconds; without the return governor
#      (tier/tier.cpp) one run took 178 s under uffd, but others 16 s (the paging feeds on its
#      own timing), so this is a backstop: tests/tier's `governor` scenario is the guard.
TEST_NAME=python
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
zns_make_tmp

N=${PROGTEST_PY_RECORDS:-100000}
MIN_ALLOC=500000
export PYTHONMALLOC=malloc PYTHONHASHSEED=0 PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
cd "$TMPD"

# the key: the workload, its argument and the interpreter (the output depends on nothing else)
PLAIN_KEY=python-$(zns_plain_key "$N" "$(sha256sum "$PROG_LIB/python_workload.py" /usr/bin/python3)")
if zns_plain_restore "$PLAIN_KEY" plain.out; then
  log "plain run: its output reused from the first run of this make test ($PROGTEST_PLAIN_CACHE/$PLAIN_KEY)"
else
  log "plain run: /usr/bin/python3 python_workload.py $N"
  t0=$SECONDS
  rc=0
  timeout 80 /usr/bin/python3 "$PROG_LIB/python_workload.py" "$N" >plain.out 2>plain.err || rc=$?
  [[ $rc == 0 ]] || { tail -n 30 plain.err; die "plain run failed (exit $rc): the workload itself is broken"; }
  log "plain run took $((SECONDS - t0))s"
  [[ "$(tail -n 2 plain.out | head -n 1)" == "done" ]] || die "plain run did not finish"
  zns_plain_save "$PLAIN_KEY" plain.out
fi

if [[ $SHIM == 0 ]]; then log "plain-only mode: done"; exit 0; fi

log "shim run: LD_PRELOAD=$ZNS_LIB /usr/bin/python3 python_workload.py $N"
t0=$SECONDS
rc=0
timeout 80 env LD_PRELOAD="$ZNS_LIB" ZNS_STATS="$TMPD/stats.%p.json" \
  /usr/bin/python3 "$PROG_LIB/python_workload.py" "$N" >shim.out 2>shim.err || rc=$?
log "shim run took $((SECONDS - t0))s, exit $rc"
if [[ $rc != 0 ]]; then
  tail -n 30 shim.err
  die "python3 under the shim exited $rc (124 = timeout, 134 = abort, 139 = SIGSEGV). Repro:
  cd /tmp && PYTHONMALLOC=malloc PYTHONHASHSEED=0 LD_PRELOAD=$ZNS_LIB /usr/bin/python3 $PROG_LIB/python_workload.py $N"
fi
if [[ -s shim.err ]]; then
  log "stderr of the shim run:"; head -n 20 shim.err
  die "python3 under the shim wrote to stderr (the plain run did not)"
fi
zns_same_output plain.out shim.out python
zns_check_stats "$MIN_ALLOC" 2 python "$TMPD"/stats.*.json
zns_check_tier python "$TMPD"/stats.*.json
log PASS
