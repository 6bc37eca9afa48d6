#!/usr/bin/env bash
# Debian's redis-server (7.0, linked against libjemalloc.so.2 with unprefixed symbols) under
# LD_PRELOAD=$ZNS_LIB, on 127.0.0.1 and a free random high port, no automatic persistence
# (check 7 writes two dumps by BGSAVE into the scratch directory).
# Only redis-server runs under the shim; redis-cli / redis-benchmark are plain drivers.
# Checks:
#   1. dynamic bindings: redis-server's (and every library's) malloc, free, calloc, realloc and
#      malloc_usable_size resolve to libzns_slab.so.  Redis calls malloc_usable_size
#      (zmalloc_size) on every pointer it allocates or frees; if that reached jemalloc with a
#      shim pointer it would crash or corrupt used_memory.  jemalloc-only entry points
#      (mallctl, nallocx, malloc_stats_print) are listed;
#   2. the running server has libzns_slab.so mapped (/proc/PID/maps);
#   3. ~35k known writes through `redis-cli --pipe` (strings 1 B .. 1 MiB, exact 4 KiB edges,
#      APPEND growth across 4 KiB, hashes, lists, zsets, sets, counters, binary values) and a 1 MiB
#      value through `redis-cli -x`, read back exactly, before and after the benchmarks;
#   4. redis-benchmark (set,get,lpush,incr -n 100000 -d 100 -r 100000, then a pipelined mix)
#      completes with every test reporting requests per second;
#   5. EVAL (Lua allocates through zmalloc), MEMORY USAGE / MALLOC-STATS / PURGE, INFO memory
#      (used_memory >= the payload written and not absurd), UNLINK + FLUSHALL ASYNC (objects
#      freed by the lazyfree thread), then `shutdown nosave`: exit status 0;
#   6. the stats document written at exit has totals.allocated > 100000 (redis makes millions of
#      small allocations here);
#   7. fork: BGSAVE while redis-benchmark writes, then a quiescent BGSAVE whose dump a plain
#      redis-server (no shim) loads with the same DEBUG DIGEST as the server under the shim;
#   8. under ZNS_TIER (tests/run.sh runs it with uffd and madvise and a 50 ms cold window) the
#      stats say that slabs went out to the tier and came back.
TEST_NAME=redis
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
for b in redis-server redis-cli redis-benchmark; do
  command -v $b >/dev/null || die "$b missing (run: make deps-test)"
done
REDIS_SERVER=$(command -v redis-server)   # argv[0] must say redis-server
REDIS_BIN=$(readlink -f "$REDIS_SERVER")  # the ELF file (Debian: redis-check-rdb)
MIN_ALLOC=100000
export LC_ALL=C

SRV=""      # pid of `timeout ... redis-server` (our child)
RPID=""     # pid of redis-server itself
PORT=""
cleanup() {
  local rc=$?
  if [[ -n "$SRV" ]] && kill -0 "$SRV" 2>/dev/null; then
    log "cleanup: stopping the server (port $PORT)"
    timeout 5 redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
    for _ in $(seq 50); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$SRV" 2>/dev/null; then
      kill -TERM "$SRV" 2>/dev/null || true
      [[ -n "$RPID" ]] && kill -TERM "$RPID" 2>/dev/null || true
      sleep 1
      kill -KILL "$SRV" 2>/dev/null || true
      [[ -n "$RPID" ]] && kill -KILL "$RPID" 2>/dev/null || true
    fi
    wait "$SRV" 2>/dev/null || true
  fi
  if [[ $rc != 0 && -n "${TMPD:-}" && -f "$TMPD/redis.log" ]]; then
    log "last lines of the redis log:"; tail -n 40 "$TMPD/redis.log" | sed 's/^/    /'
  fi
  zns_cleanup_tmp
  exit $rc
}
TMPD=$(mktemp -d "${TMPDIR:-/tmp}/zns-redis.XXXXXX")
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$TMPD"

rcli() { timeout 60 redis-cli -h 127.0.0.1 -p "$PORT" "$@"; }
info_field() {  # section field
  rcli info "$1" | tr -d '\r' | sed -n "s/^$2://p"
}

# ---- what redis-server links, and where its allocator symbols bind -------------------------
log "redis-server: $REDIS_SERVER -> $REDIS_BIN ($("$REDIS_SERVER" --version))"
log "linked allocator: $(ldd "$REDIS_BIN" | awk '/jemalloc|tcmalloc|mimalloc/ {print $3}' | tr '\n' ' ')"
log "allocator symbols redis-server imports: $(nm -D --undefined-only "$REDIS_BIN" \
     | grep -o -E '\b(malloc|calloc|realloc|free|malloc_usable_size|posix_memalign|aligned_alloc|memalign|valloc|mallctl[a-z]*|nallocx|mallocx|rallocx|xallocx|sallocx|dallocx|sdallocx|malloc_stats_print|je_[a-z_]+)(@[A-Z0-9_.]+)?$' \
     | sort -u | tr '\n' ' ')"
if [[ $SHIM == 1 ]]; then
  zns_check_bindings redis-server "$REDIS_SERVER" --version
fi

# ---- start the server ------------------------------------------------------------------------
port_free() {
  ss -Htln "sport = :$1" 2>/dev/null | grep -q . && return 1
  "$PY" -c 'import socket,sys
s=socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.close()' "$1" 2>/dev/null
}
start_server() {
  local env_shim=()
  [[ $SHIM == 1 ]] && env_shim=(LD_PRELOAD="$ZNS_LIB" ZNS_STATS="$TMPD/stats.%p.json")
  : >"$TMPD/redis.log"
  timeout 300 env "${env_shim[@]}" "$REDIS_SERVER" --port "$PORT" --bind 127.0.0.1 \
    --protected-mode yes --save '' --appendonly no --dir "$TMPD" --logfile "$TMPD/redis.log" \
    --daemonize no --loglevel notice --databases 2 --lazyfree-lazy-user-del yes \
    --enable-debug-command yes \
    >"$TMPD/redis.stdout" 2>&1 &
  SRV=$!
  for _ in $(seq 150); do
    kill -0 "$SRV" 2>/dev/null || { wait "$SRV" || true; SRV=""; return 1; }
    [[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" == PONG ]] && return 0
    sleep 0.1
  done
  return 1
}
started=0
for attempt in 1 2 3 4 5; do
  PORT=""
  for _ in $(seq 40); do
    p=$((20000 + RANDOM % 40000))
    if port_free "$p"; then PORT=$p; break; fi
  done
  [[ -n "$PORT" ]] || die "found no free port"
  log "starting redis-server on 127.0.0.1:$PORT (attempt $attempt)"
  if start_server; then started=1; break; fi
  if grep -q -i 'address already in use' "$TMPD/redis.log" "$TMPD/redis.stdout" 2>/dev/null; then
    log "port $PORT was taken meanwhile; retrying"; continue
  fi
  tail -n 20 "$TMPD/redis.stdout" 2>/dev/null || true
  die "redis-server did not start. Repro:
  LD_PRELOAD=${ZNS_LIB:-} $REDIS_SERVER --port 6390 --bind 127.0.0.1 --save '' --appendonly no"
done
[[ $started == 1 ]] || die "could not start redis-server"
RPID=$(info_field server process_id)
[[ "$RPID" =~ ^[0-9]+$ ]] || die "INFO server gave no process_id"
grep -q redis "/proc/$RPID/cmdline" || die "pid $RPID is not redis-server"
# It must be ours (a child of our `timeout`), not some other server that took the port.
[[ "$(awk '{print $4}' "/proc/$RPID/stat")" == "$SRV" ]] || die "the redis on port $PORT (pid $RPID) is not the one we started"
log "redis-server pid $RPID, $(info_field server redis_version), mem_allocator=$(info_field memory mem_allocator)"

if [[ $SHIM == 1 ]]; then
  LIBREAL=$(readlink -f "$ZNS_LIB")
  grep -q -F "$LIBREAL" "/proc/$RPID/maps" || die "$LIBREAL is not mapped in redis-server (pid $RPID)"
  log "$LIBREAL is mapped in pid $RPID ($(grep -c -F "$LIBREAL" /proc/$RPID/maps) mappings);" \
      "libjemalloc mapped too: $(grep -q libjemalloc /proc/$RPID/maps && echo yes || echo no)"
fi

# ---- known data ------------------------------------------------------------------------------
"$PY" "$PROG_LIB/redis_data.py" gen "$TMPD" | sed 's/^/    /'
PAYLOAD=$(cat "$TMPD/payload_bytes")
t0=$SECONDS
timeout 120 redis-cli -h 127.0.0.1 -p "$PORT" --pipe <"$TMPD/mass.resp" >pipe.out 2>&1 \
  || { cat pipe.out; die "redis-cli --pipe failed"; }
grep -q 'errors: 0,' pipe.out || { cat pipe.out; die "redis-cli --pipe reported errors"; }
log "mass insert: $(grep -o 'errors: .*' pipe.out) in $((SECONDS - t0))s"
[[ "$(rcli -x set zt:x1m <"$TMPD/x1m.dat")" == OK ]] || die "redis-cli -x set zt:x1m failed"

verify_known() {  # tag
  local t0=$SECONDS
  timeout 120 redis-cli -h 127.0.0.1 -p "$PORT" --raw <"$TMPD/reads.txt" >"reads.$1.out" 2>&1 \
    || die "reading the known keys failed ($1)"
  if ! cmp -s "reads.$1.out" "$TMPD/expected.txt"; then
    cmp "reads.$1.out" "$TMPD/expected.txt" || true
    "$PY" - "reads.$1.out" "$TMPD/expected.txt" "$TMPD/reads.txt" <<'PYEOF'
import sys
got = open(sys.argv[1], "rb").read().split(b"\n")
exp = open(sys.argv[2], "rb").read().split(b"\n")
for i, (g, e) in enumerate(zip(got, exp)):
    if g != e:
        print(f"    first differing reply line {i}: got {g[:120]!r} (len {len(g)}), "
              f"expected {e[:120]!r} (len {len(e)})")
        break
PYEOF
    die "known keys read back wrong ($1)"
  fi
  local n
  for f in "$TMPD"/bin.*.dat; do
    n=${f##*/bin.}; n=${n%.dat}
    rcli --raw get "zt:bin:$n" >"bin.$n.got"
    printf '\n' | cat "$f" - | cmp -s - "bin.$n.got" || die "binary value zt:bin:$n read back wrong ($1)"
  done
  log "known keys verified ($1): $(wc -l <"$TMPD/reads.txt") reads, $(wc -c <"$TMPD/expected.txt") bytes, 5 binary values, in $((SECONDS - t0))s"
}
verify_known initial

# ---- benchmarks ------------------------------------------------------------------------------
bench() {  # label, args...
  local label=$1; shift
  local t0=$SECONDS rc=0
  timeout 150 redis-benchmark -h 127.0.0.1 -p "$PORT" "$@" -q --csv >"bench.$label.csv" 2>"bench.$label.err" || rc=$?
  if [[ $rc != 0 ]]; then
    tail -n 5 "bench.$label.err"; die "redis-benchmark ($label) exited $rc"
  fi
  "$PY" - "bench.$label.csv" "$label" <<'PYEOF' || die "redis-benchmark ($label): bad results"
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
rows = [r for r in rows if r and r[0] != "test"]
bad = [r for r in rows if len(r) < 2 or float(r[1]) <= 0]
print("    " + sys.argv[2] + ": " + ", ".join(f"{r[0].split(' ')[0]} {float(r[1]):.0f}/s" for r in rows))
sys.exit(1 if not rows or bad else 0)
PYEOF
  log "benchmark $label done in $((SECONDS - t0))s"
}
bench basic -t set,get,lpush,incr -n 100000 -d 100 -r 100000
bench mixed -t lpush,lpop,sadd,hset,zadd,lrange_100 -n 50000 -d 300 -r 50000 -P 16
bench big -t set,get -n 20000 -d 6000 -r 5000 -P 4
kill -0 "$SRV" 2>/dev/null || die "redis-server died during the benchmarks"
verify_known after-benchmarks

# ---- fork: BGSAVE while the parent writes, then a quiescent one read back by a plain redis --------
# The child serialises the heap it inherited (under the madvise tier, the private copy the child
# makes first) while the parent goes on writing; the second, quiescent save must hold exactly what
# the server holds: a plain redis-server (no shim) loads it and must report the same DEBUG DIGEST.
bgsave_wait() {  # label
  local s
  for _ in $(seq 600); do
    [[ "$(info_field persistence rdb_bgsave_in_progress)" == 0 ]] && break
    sleep 0.1
  done
  s=$(info_field persistence rdb_last_bgsave_status)
  [[ "$s" == ok ]] || die "BGSAVE ($1) ended with rdb_last_bgsave_status=$s (the forked child failed)"
}
t0=$SECONDS
[[ "$(rcli bgsave)" == "Background saving started" ]] || die "BGSAVE did not start"
timeout 150 redis-benchmark -h 127.0.0.1 -p "$PORT" -t set,lpush,hset -n 30000 -r 30000 -d 150 -q \
  >bench.during-save.out 2>&1 || die "redis-benchmark during BGSAVE failed"
bgsave_wait during-writes
fork_usec=$(info_field stats latest_fork_usec)
[[ "$(rcli bgsave)" == "Background saving started" ]] || die "the second BGSAVE did not start"
bgsave_wait quiescent
digest=$(rcli debug digest)
[[ "$digest" =~ ^[0-9a-f]{40}$ && "$digest" != 0000000000000000000000000000000000000000 ]] \
  || die "DEBUG DIGEST gave '$digest'"
PORT2=""
for _ in $(seq 40); do p=$((20000 + RANDOM % 40000)); [[ $p != "$PORT" ]] && port_free "$p" && { PORT2=$p; break; }; done
[[ -n "$PORT2" ]] || die "found no free port for the plain reader"
mkdir -p "$TMPD/reader"
timeout 120 "$REDIS_SERVER" --port "$PORT2" --bind 127.0.0.1 --protected-mode yes --save '' \
  --appendonly no --dir "$TMPD" --dbfilename dump.rdb --logfile "$TMPD/reader/redis.log" \
  --daemonize no --databases 2 --enable-debug-command yes >"$TMPD/reader/stdout" 2>&1 &
READER=$!
digest2=""
for _ in $(seq 300); do
  kill -0 "$READER" 2>/dev/null || break
  [[ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$PORT2" ping 2>/dev/null)" == PONG ]] \
    && { digest2=$(timeout 10 redis-cli -h 127.0.0.1 -p "$PORT2" debug digest); break; }
  sleep 0.1
done
keys2=$(timeout 10 redis-cli -h 127.0.0.1 -p "$PORT2" dbsize 2>/dev/null || true)
timeout 10 redis-cli -h 127.0.0.1 -p "$PORT2" shutdown nosave >/dev/null 2>&1 || true
wait "$READER" 2>/dev/null || true
[[ -n "$digest2" ]] || { tail -n 5 "$TMPD/reader/redis.log"; die "the plain redis did not load the dump"; }
[[ "$digest2" == "$digest" ]] \
  || die "the dump a forked child wrote differs from the server's data (DEBUG DIGEST $digest2 against $digest)"
log "BGSAVE x2 (the first while writing; fork took ${fork_usec} us): a plain redis loaded $keys2 keys of db 0 from the dump, same DEBUG DIGEST, in $((SECONDS - t0))s"
rm -f "$TMPD/dump.rdb"
verify_known after-bgsave

# ---- Lua, MEMORY, INFO -------------------------------------------------------------------------
lua=$(rcli eval "local t = {} for i = 1, 20000 do t[i] = string.rep('x', i % 300) .. i end
  local n = 0 for i = 1, #t do n = n + #t[i] end
  redis.call('set', KEYS[1], table.concat(t, ',', 1, 2000)) return n" 1 zt:lua)
[[ "$lua" == 3069094 ]] || die "EVAL returned '$lua', expected 3069094"
[[ "$(rcli strlen zt:lua)" == 298092 ]] || die "EVAL-written key has the wrong length ($(rcli strlen zt:lua))"
mu=$(rcli memory usage zt:x1m)
[[ "$mu" =~ ^[0-9]+$ && $mu -ge 1048576 ]] || die "MEMORY USAGE zt:x1m = '$mu' (expected >= 1048576)"
mu_small=$(rcli memory usage zt:s:1)
[[ "$mu_small" =~ ^[0-9]+$ && $mu_small -gt 0 && $mu_small -lt 4096 ]] || die "MEMORY USAGE zt:s:1 = '$mu_small'"
rcli memory malloc-stats >malloc-stats.txt || die "MEMORY MALLOC-STATS failed"
[[ "$(rcli memory purge)" == OK ]] || die "MEMORY PURGE failed"
rcli info memory | tr -d '\r' >info-memory.txt
used=$(sed -n 's/^used_memory://p' info-memory.txt)
rss=$(sed -n 's/^used_memory_rss://p' info-memory.txt)
alloc_alloc=$(sed -n 's/^allocator_allocated://p' info-memory.txt)
log "INFO memory: used_memory=$used used_memory_rss=$rss allocator_allocated=$alloc_alloc" \
    "mem_fragmentation_ratio=$(sed -n 's/^mem_fragmentation_ratio://p' info-memory.txt)" \
    "payload=$PAYLOAD; MEMORY USAGE zt:x1m=$mu zt:s:1=$mu_small"
[[ "$used" =~ ^[0-9]+$ && "$rss" =~ ^[0-9]+$ ]] || die "INFO memory lacks used_memory/used_memory_rss"
[[ $used -ge $PAYLOAD ]] || die "used_memory ($used) < payload written ($PAYLOAD): zmalloc_size/malloc_usable_size is wrong"
[[ $used -le $((PAYLOAD * 20 + 200000000)) ]] || die "used_memory ($used) is absurd for $PAYLOAD payload bytes"
[[ $rss -gt 0 ]] || die "used_memory_rss is 0"

# ---- frees from another thread, then shut down ----------------------------------------------
rcli unlink zt:x1m zt:edge:1048576 zt:edge:65536 >/dev/null
[[ "$(rcli flushall async)" == OK ]] || die "FLUSHALL ASYNC failed"
for _ in $(seq 100); do
  [[ "$(info_field memory lazyfree_pending_objects)" == 0 && "$(rcli dbsize)" == 0 ]] && break
  sleep 0.1
done
[[ "$(rcli dbsize)" == 0 ]] || die "FLUSHALL ASYNC did not empty the database"
used_after=$(info_field memory used_memory)
log "after FLUSHALL ASYNC: used_memory=$used_after (was $used)"
[[ $used_after -lt $((used / 2)) ]] || die "used_memory did not drop after FLUSHALL ($used -> $used_after)"
[[ "$(rcli set zt:final ok)" == OK && "$(rcli get zt:final)" == ok ]] || die "server unusable after FLUSHALL"

log "shutdown nosave"
rcli shutdown nosave >/dev/null 2>&1 || true
rc=0
for _ in $(seq 150); do kill -0 "$SRV" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SRV" 2>/dev/null && die "redis-server did not exit within 15s of SHUTDOWN"
wait "$SRV" || rc=$?
SRV=""
[[ $rc == 0 ]] || die "redis-server exited with status $rc (134 = abort, 139 = SIGSEGV)"
grep -q 'bye bye' "$TMPD/redis.log" || die "redis log has no clean 'bye bye' exit"
if grep -q -E 'crashed by signal|ASSERTION FAILED|Guru Meditation' "$TMPD/redis.log"; then
  die "redis log reports a crash"
fi
[[ -s "$TMPD/redis.stdout" ]] && { log "redis-server stdout/stderr:"; head -n 20 "$TMPD/redis.stdout"; }
if [[ $SHIM == 1 ]]; then
  [[ -s "$TMPD/redis.stdout" ]] && die "redis-server under the shim wrote to stdout/stderr"
  zns_check_stats "$MIN_ALLOC" 1 redis "$TMPD/stats.$RPID.json"
  zns_check_tier redis "$TMPD/stats.$RPID.json"
fi
log PASS
