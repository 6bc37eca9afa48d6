#!/usr/bin/env bash
# PostgreSQL 15 (Debian's) under LD_PRELOAD=$ZNS_LIB: a server of many processes, each a fork
# without exec of a postmaster that had already allocated (palloc's memory contexts sit on
# malloc), talking through shared memory.  Only the server side runs under the shim (initdb and
# postgres); psql and pgbench are plain drivers.  It listens on a Unix socket in the scratch
# directory only (no TCP port, so nothing collides with other jobs).  As root, the server runs as
# the `postgres` user (it refuses root).
# Checks:
#   1. initdb under the shim (postgres in bootstrap and single-user mode, many times) succeeds;
#   2. the postmaster and a backend (a fork of it) have libzns_slab.so mapped;
#   3. a fixed set of queries (sorts, hash aggregates, jsonb, recursion, a hash join, text of
#      every length) gives byte-identical output under the shim and under a plain server started
#      on the same data directory;
#   4. pgbench (scale 2; 4 clients, 2 threads, 6 s of TPC-B-like transactions) reports no failed
#      transaction, and afterwards the books balance: the sums of the accounts', tellers' and
#      branches' balances each equal the sum of the history's deltas, and the history has one
#      row per transaction pgbench counted;
#   5. amcheck verifies every B-tree index of the pgbench tables (bt_index_parent_check with
#      heapallindexed: each index entry against its heap tuple);
#   6. the server log has no crash (a process terminated by a signal), no PANIC and no line from
#      zns-slab, and `pg_ctl stop` shuts it down cleanly;
#   7. stats documents of the server's processes (ZNS_STATS, one per pid: the backends are forks
#      and start from the postmaster's counts) are valid, and the backend that ran the queries
#      allocated more than 100000 blocks from the heap;
#   8. under ZNS_TIER (the stats): slabs went out to the tier and came back, none failed, and also
#      in a backend: a forked child gets a tier of its own once it has lived ZNS_TIER_CHILD_MS
#      (tests/run.sh: madvise, the mode the `postgres` user gets, with 50 ms and 200 ms).
TEST_NAME=postgres
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[[ -n "$PGBIN" && -x "$PGBIN/postgres" ]] || die "PostgreSQL server missing (run: make deps-test)"
for b in psql pgbench; do command -v $b >/dev/null || die "$b missing (run: make deps-test)"; done
export LC_ALL=C
zns_make_tmp
chmod 755 "$TMPD"
PGD=$TMPD/data
SOCK=$TMPD
PORT=5432   # names the socket file only (listen_addresses is empty)

# The server's user: ourselves, or `postgres` when we are root.
AS=()
if [[ $(id -u) == 0 ]]; then
  id postgres >/dev/null 2>&1 || die "no postgres user (run: make deps-test)"
  chown postgres "$TMPD"
  AS=(runuser -u postgres --)
fi
[[ $SHIM == 1 ]] && { "${AS[@]}" test -r "$ZNS_LIB" || die "the server's user cannot read $ZNS_LIB"; }

SHIM_ENV=()
[[ $SHIM == 1 ]] && SHIM_ENV=(LD_PRELOAD="$ZNS_LIB" ZNS_STATS="$TMPD/stats.%p.json")
UP=""
pg_start() {   # label, env...
  local label=$1; shift
  "${AS[@]}" env "$@" "$PGBIN/pg_ctl" -D "$PGD" -l "$TMPD/$label.log" -w -t 60 \
    -o "-c listen_addresses= -c unix_socket_directories=$SOCK -p $PORT -c fsync=off -c max_connections=20" \
    start >/dev/null || { tail -n 30 "$TMPD/$label.log"; die "$label: the server did not start"; }
  UP=$label
}
pg_stop() {
  "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGD" -m fast -w -t 60 stop >/dev/null || die "$UP: pg_ctl stop failed"
  UP=""
}
cleanup() {
  local rc=$?
  if [[ -n "$UP" ]]; then
    "${AS[@]}" "$PGBIN/pg_ctl" -D "$PGD" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
    if [[ $rc != 0 && -f "$TMPD/$UP.log" ]]; then
      log "last lines of the $UP server log:"; tail -n 30 "$TMPD/$UP.log" | sed 's/^/    /'
    fi
  fi
  zns_cleanup_tmp
  exit $rc
}
trap cleanup EXIT
PSQL=(psql -h "$SOCK" -p "$PORT" -U postgres -X -q -v ON_ERROR_STOP=1)

# 1. initdb (bootstrap: postgres runs in single-user mode several times)
"${AS[@]}" env ${SHIM_ENV[0]+"${SHIM_ENV[0]}"} "$PGBIN/initdb" -D "$PGD" -A trust -U postgres --no-sync >"$TMPD/initdb.log" 2>&1 \
  || { tail -n 30 "$TMPD/initdb.log"; die "initdb failed under the shim"; }
log "initdb under the shim: ok"

cat >"$TMPD/q.sql" <<'EOF'
select md5(string_agg(x::text || repeat('z', x % 50), ',' order by x)) from generate_series(1, 200000) x;
select count(*), md5(string_agg(k, ',' order by k))
  from (select (a.x::bigint * 7919 % 100003)::text as k from generate_series(1, 300000) a(x) group by 1) t;
select md5(jsonb_agg(jsonb_build_object('k', x, 'v', repeat('a', x % 30), 'l', array[x, x + 1]))::text)
  from generate_series(1, 100000) x;
with recursive r(n, s) as (select 1, ''::text union all select n + 1, left(s || n, 40) from r where n < 100000)
  select sum(n), md5(string_agg(s, '' order by n)) from r;
select count(*), sum(length(a.t)) from (select x, md5(x::text) t from generate_series(1, 100000) x) a
  join (select x from generate_series(1, 100000, 3) x) b on a.x = b.x;
select md5(string_agg(w, ' ' order by w)) from (select distinct regexp_split_to_table(
  repeat('lorem ipsum dolor sit amet consectetur adipiscing elit ', 2000) || string_agg(x::text, ' '), ' ') w
  from generate_series(1, 20000) x) s;
EOF

# 3. the queries under a plain server, then under the shim (same data directory)
pg_start plain
"${PSQL[@]}" -At -f "$TMPD/q.sql" >"$TMPD/plain.out" || die "the queries failed on the plain server"
pg_stop

pg_start shim "${SHIM_ENV[@]}"
if [[ $SHIM == 1 ]]; then   # 2. the shim is in the postmaster and in a backend
  PM=$(head -n 1 "$PGD/postmaster.pid")
  grep -q "$(basename "$(readlink -f "$ZNS_LIB")")" "/proc/$PM/maps" || die "the postmaster (pid $PM) does not map $ZNS_LIB"
  BMAPS=$("${PSQL[@]}" -At -c "select count(*) from regexp_split_to_table(pg_read_file('/proc/' || pg_backend_pid() || '/maps'), E'\\n') l where l like '%$(basename "$(readlink -f "$ZNS_LIB")")'") \
    || die "could not read a backend's maps"
  [[ "$BMAPS" -gt 0 ]] || die "a backend does not map $ZNS_LIB"
  log "the postmaster ($PM) and a backend map the shim"
fi
"${PSQL[@]}" -At -f "$TMPD/q.sql" >"$TMPD/shim.out" || die "the queries failed under the shim"
zns_same_output "$TMPD/plain.out" "$TMPD/shim.out" queries

# 4. pgbench, and the books
pgbench -h "$SOCK" -p "$PORT" -U postgres -i -s 2 -q postgres >"$TMPD/pgbench-init.log" 2>&1 \
  || { cat "$TMPD/pgbench-init.log"; die "pgbench -i failed"; }
pgbench -h "$SOCK" -p "$PORT" -U postgres -c 4 -j 2 -T 6 postgres >"$TMPD/pgbench.log" 2>&1 \
  || { cat "$TMPD/pgbench.log"; die "pgbench failed"; }
grep -E '^(number of (transactions actually processed|failed transactions)|tps)' "$TMPD/pgbench.log" | sed 's/^/    /'
TX=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$TMPD/pgbench.log")
grep -q '^number of failed transactions: 0 ' "$TMPD/pgbench.log" || die "pgbench reports failed transactions"
[[ -n "$TX" && "$TX" -gt 100 ]] || die "pgbench processed too few transactions ($TX)"
BOOKS=$("${PSQL[@]}" -At -F ' ' -c "select (select sum(abalance) from pgbench_accounts), (select sum(tbalance) from pgbench_tellers),
  (select sum(bbalance) from pgbench_branches), (select coalesce(sum(delta), 0) from pgbench_history), (select count(*) from pgbench_history)")
read -r A T B H N <<<"$BOOKS"
log "books: accounts $A, tellers $T, branches $B, history $H in $N rows ($TX transactions)"
[[ "$A" == "$H" && "$T" == "$H" && "$B" == "$H" ]] || die "the balances do not add up: $BOOKS"
[[ "$N" == "$TX" ]] || die "the history has $N rows for $TX transactions"

# 5. amcheck: every index entry of the pgbench tables against the heap
"${PSQL[@]}" -At -c "create extension if not exists amcheck" \
  -c "select count(bt_index_parent_check(c.oid, true)) from pg_index i join pg_class c on c.oid = i.indexrelid
      join pg_class t on t.oid = i.indrelid where t.relname like 'pgbench_%'" >"$TMPD/amcheck.out" \
  || die "amcheck found a corrupt index: $(cat "$TMPD/amcheck.out")"
log "amcheck: $(cat "$TMPD/amcheck.out") indexes verified with their heaps"
pg_stop

# 6. the logs
for l in shim; do
  if grep -E 'terminated by signal|PANIC|zns-slab' "$TMPD/$l.log"; then die "$l: the server log shows a crash or a message from zns-slab"; fi
done
grep -q 'database system is shut down' "$TMPD/shim.log" || die "the server under the shim did not shut down cleanly"

# 7, 8. stats
if [[ $SHIM == 1 ]]; then
  shopt -s nullglob
  files=("$TMPD"/stats.*.json)
  zns_check_stats 0 3 postgres "${files[@]}" >"$TMPD/stats.check" || { cat "$TMPD/stats.check"; die "stats"; }
  MAX=$("$PY" -c 'import json, sys; print(max(json.load(open(f))["totals"]["allocated"] for f in sys.argv[1:]))' "${files[@]}")
  [[ "$MAX" -gt 100000 ]] || die "no process of the server allocated more than 100000 blocks from the heap (at most $MAX)"
  zns_check_tier postgres "${files[@]}"
  if [[ -n "${ZNS_TIER:-}" && "${ZNS_TIER}" != off ]]; then   # and in a backend, by its own tier
    BOUT=$("$PY" -c 'import json, sys
pm = sys.argv[1]
print(sum(1 for f in sys.argv[2:] if not f.endswith(".%s.json" % pm)
          and json.load(open(f))["tier"]["slabs_out"] > 0 and json.load(open(f))["tier"]["slabs_in"] > 0))' "$PM" "${files[@]}")
    [[ "$BOUT" -gt 0 ]] || die "ZNS_TIER=$ZNS_TIER: no backend (a forked child) paged a slab out and back with a tier of its own"
    log "$BOUT backend(s) paged slabs out and back with a tier of their own"
  fi
  log "${#files[@]} stats documents (postmaster, backends, helpers): at most $MAX blocks allocated by one"
fi
log "PASS"
