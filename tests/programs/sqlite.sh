#!/usr/bin/env bash
# The sqlite3 CLI (Debian's libsqlite3: SYSTEM_MALLOC, no lookaside, so every allocation is a
# malloc call) runs lib/sqlite_workload.sql on a temporary file database: 100k rows with text and
# blob columns (some > 4 KiB) via recursive CTEs, indexes, updates, deletes with cascade,
# GROUP BY / ORDER BY / window / json / FTS5 queries, a multi-threaded sorter, VACUUM into a new
# page size, ANALYZE, integrity_check, and SHA3 digests of the table contents.
# Checks:
#   1. the output is byte-identical without and with LD_PRELOAD=$ZNS_LIB (each run on a fresh DB);
#   2. integrity_check says ok in both runs; the shim run exits 0 with an empty stderr;
#   3. the database files written by the two runs are identical when dumped (.dump);
#   4. the shim's stats document has totals.allocated > 200000 (plain sqlite3 makes ~1.9M small
#      allocations here; start-up alone is ~230).
TEST_NAME=sqlite
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
zns_make_tmp
command -v sqlite3 >/dev/null || die "sqlite3 missing (run: make deps-test)"
SQLITE=$(command -v sqlite3)
MIN_ALLOC=200000
SQL=$PROG_LIB/sqlite_workload.sql
export LC_ALL=C
cd "$TMPD"

run_sqlite() {   # label db [env assignments...]
  local label=$1 db=$2; shift 2
  local rc=0 t0=$SECONDS
  rm -f "$db" "$db-journal"
  timeout 60 env "$@" "$SQLITE" -batch "$db" <"$SQL" >"$label.out" 2>"$label.err" || rc=$?
  log "$label run took $((SECONDS - t0))s, exit $rc"
  if [[ $rc != 0 ]]; then
    tail -n 20 "$label.err"; tail -n 5 "$label.out"
    die "sqlite3 ($label) exited $rc (124 = timeout, 134 = abort, 139 = SIGSEGV). Repro:
  rm -f /tmp/zns.db; $* $SQLITE -batch /tmp/zns.db < $SQL"
  fi
  if [[ -s "$label.err" ]]; then head -n 20 "$label.err"; die "sqlite3 ($label) wrote to stderr"; fi
  grep -qx ok "$label.out" || die "sqlite3 ($label): integrity_check did not print ok"
}

run_sqlite plain "$TMPD/plain.db"
if [[ $SHIM == 0 ]]; then log "plain-only mode: done"; exit 0; fi
run_sqlite shim "$TMPD/shim.db" LD_PRELOAD="$ZNS_LIB" ZNS_STATS="$TMPD/stats.%p.json"
zns_same_output plain.out shim.out sqlite

# The files themselves: dump both with a plain sqlite3 and compare.
d_plain=$("$SQLITE" -batch plain.db .dump | sha256sum)
d_shim=$("$SQLITE" -batch shim.db .dump | sha256sum)
[[ "$d_plain" == "$d_shim" ]] || die "the database written under the shim differs from the plain one (.dump)"
log "database dumps identical (sha256 ${d_plain%% *})"

zns_check_stats "$MIN_ALLOC" 1 sqlite "$TMPD"/stats.*.json
log PASS
