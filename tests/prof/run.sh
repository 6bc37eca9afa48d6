#!/usr/bin/env bash
# The heap profiler (libzns_slab_prof.so, ZNS_PROF): its figures against known allocation sites,
# read back by google-pprof; threads, signals and forks under it; python3 under it; the default
# library's answer to ZNS_PROF.  Run by tests/run.sh (`make test`), after `make test-build`.
set -euo pipefail
cd "$(dirname "$0")/../.."
B=build
PROF_LIB=$PWD/$B/libzns_slab_prof.so
LIB=$PWD/$B/libzns_slab.so
T=$(mktemp -d /tmp/zns-prof.XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
[ -e "$PROF_LIB" ] || fail "$PROF_LIB not built (libunwind-dev missing? make deps)"
command -v google-pprof >/dev/null || fail "google-pprof not installed (Debian: google-perftools; make deps-test)"

# MiB that google-pprof gives function $2 in its --text listing $1 (flat column; 0 if absent)
mib() { awk -v f="$2" '$6 == f { print $1; found = 1 } END { if (!found) print 0 }' "$1"; }
# is $1 within $3 percent of $2?
near() { awk -v a="$1" -v b="$2" -v pct="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(d <= b * pct / 100) }'; }

# ---- 1. known sites: the profile in the middle of the run (zns_prof_dump) and at exit ----------
echo "== prof_sites (ZNS_PROF_RATE=2048)"
ZNS_PROF="$T/exit.%p.prof" ZNS_PROF_RATE=2048 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_sites "$T/mid.prof" >"$T/sites.out"
grep -qx done "$T/sites.out" || fail "prof_sites did not finish"
exit_prof=$(ls "$T"/exit.*.prof)
[ "$(echo "$exit_prof" | wc -l)" = 1 ] || fail "expected one exit profile, found: $exit_prof"
for which in mid exit; do
  f=$T/mid.prof; [ $which = exit ] && f=$exit_prof
  head -1 "$f" | grep -Eq '^heap profile: [0-9]+: +[0-9]+ \[ *[0-9]+: +[0-9]+\] @ heap_v2/2048$' ||
    fail "$which: header: $(head -1 "$f")"
  grep -q '^MAPPED_LIBRARIES:' "$f" || fail "$which: no MAPPED_LIBRARIES section"
  google-pprof --text --inuse_space $B/tests/prof/prof_sites "$f" >"$T/$which.txt" 2>"$T/$which.err" ||
    { cat "$T/$which.err"; fail "$which: google-pprof could not read the profile"; }
  echo "-- $which"; head -8 "$T/$which.txt"
  # expected MiB (prof_sites.c's table): sampled, so within 30% (each is 200+ samples at this rate,
  # a standard deviation of 7% or less); keep_large's 64 KiB blocks are all but certain samples
  near "$(mib "$T/$which.txt" keep_large)" 2.50 8 || fail "$which: keep_large $(mib "$T/$which.txt" keep_large) MiB, expected 2.5"
  near "$(mib "$T/$which.txt" keep_small)" 0.95 30 || fail "$which: keep_small $(mib "$T/$which.txt" keep_small) MiB, expected 0.95"
  near "$(mib "$T/$which.txt" keep_calloc)" 0.92 30 || fail "$which: keep_calloc $(mib "$T/$which.txt" keep_calloc) MiB, expected 0.92"
  near "$(mib "$T/$which.txt" main)" 1.43 30 || fail "$which: main (its reallocs) $(mib "$T/$which.txt" main) MiB, expected 1.43"
  grep -q ' churn_freed$' "$T/$which.txt" && fail "$which: churn_freed's blocks were all freed, yet it is in the profile"
done
near "$(mib "$T/mid.txt" freed_later)" 3.81 30 || fail "mid: freed_later $(mib "$T/mid.txt" freed_later) MiB, expected 3.81"
grep -q ' freed_later$' "$T/exit.txt" && fail "exit: freed_later's blocks were freed before exit, yet it is in the profile"

# ---- 2. threads, cross-thread frees, signal handlers' frees, forks -----------------------------
echo "== prof_stress (ZNS_PROF_RATE=512)"
rm -f "$T"/*.prof
ZNS_PROF="$T/stress.%p.prof" ZNS_PROF_RATE=512 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_stress "$T/end.prof"
n=$(ls "$T"/stress.*.prof | wc -l)
[ "$n" = 7 ] || fail "expected 7 exit profiles (the program and its 6 children, %p in the path), found $n"
google-pprof --text --inuse_space $B/tests/prof/prof_stress "$T/end.prof" >"$T/end.txt" 2>/dev/null ||
  fail "google-pprof could not read prof_stress's profile"
if grep -Eq ' (stress_worker|handler_pool)$' "$T/end.txt"; then
  cat "$T/end.txt"; fail "prof_stress freed every block of its workers, yet samples of them are in the profile"
fi
# without %p a forked child writes nothing (the file is its parent's)
ZNS_PROF="$T/one.prof" ZNS_PROF_RATE=512 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_stress >/dev/null
google-pprof --text --inuse_space $B/tests/prof/prof_stress "$T/one.prof" >"$T/one.txt" 2>/dev/null ||
  fail "the exit profile without %p is not readable"

# ---- 3. edge cases that once hung or lied (tests/prof/prof_edge.c) --------------------------------
echo "== prof_edge"
for m in pipe realloc_fail handler; do
  timeout 60 env ZNS_PROF="$T/edge.prof" ZNS_PROF_RATE=1 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_edge $m ||
    fail "prof_edge $m (exit $?; 124: it hung)"
done
timeout 60 env ZNS_PROF="$T/shrink-full.prof" ZNS_PROF_RATE=4096 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_edge shrink_full ||
  fail "prof_edge shrink_full: a sample's shrink with no room left lost it"
ZNS_PROF="$T/shrink.prof" ZNS_PROF_RATE=16384 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_edge shrink
total=$(google-pprof --text --inuse_space $B/tests/prof/prof_edge "$T/shrink.prof" 2>/dev/null | awk '/^Total:/ { print $2 }')
# 100000 blocks of 16 B: 1.53 MiB (about 100 samples at this rate); 390 MiB when records kept the old size
awk -v t="${total:-0}" 'BEGIN { exit !(t >= 0.7 && t <= 3.0) }' || fail "prof_edge shrink: the profile says ${total:-nothing} MiB, 1.53 live"
# a FIFO as the path, nobody reading it: the program must run (the first claim opened it blocking)
mkfifo "$T/fifo"
out=$(timeout 10 env ZNS_PROF="$T/fifo" LD_PRELOAD="$PROF_LIB" /bin/echo hello 2>/dev/null) || fail "a FIFO without a reader as ZNS_PROF held the program up"
[ "$out" = hello ] || fail "a FIFO as ZNS_PROF: '$out'"

# a program built -no-pie that takes malloc's address: malloc's address is its PLT stub there, and
# a stack that started with it was charged to the symbol before the stub (_init), not to the caller
ZNS_PROF="$T/nopie.prof" ZNS_PROF_RATE=4096 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_nopie >/dev/null
google-pprof --text --inuse_space $B/tests/prof/prof_nopie "$T/nopie.prof" >"$T/nopie.txt" 2>/dev/null ||
  fail "prof_nopie's profile is not readable"
# 20000 blocks of 100 B from nopie_leaf: 1.91 MiB, sampled
near "$(mib "$T/nopie.txt" nopie_leaf)" 1.91 30 ||
  { head -5 "$T/nopie.txt"; fail "prof_nopie (no PIE): nopie_leaf has $(mib "$T/nopie.txt" nopie_leaf) MiB flat, expected 1.91"; }
# the same with a library without its debug information (strip --strip-debug, as packagers split
# it off): pprof then names frames from the symbol table alone, where a second name at malloc's
# address (c87c54b's alias) took every sample
strip --strip-debug -o "$T/libzns_slab_prof.so" "$PROF_LIB"
ZNS_PROF="$T/nodebug.prof" ZNS_PROF_RATE=4096 LD_PRELOAD="$T/libzns_slab_prof.so" $B/tests/prof/prof_nopie >/dev/null
google-pprof --text --inuse_space $B/tests/prof/prof_nopie "$T/nodebug.prof" >"$T/nodebug.txt" 2>/dev/null ||
  fail "prof_nopie's profile (library without debug information) is not readable"
near "$(mib "$T/nodebug.txt" nopie_leaf)" 1.91 30 ||
  { head -5 "$T/nodebug.txt"; fail "library without debug information: nopie_leaf has $(mib "$T/nodebug.txt" nopie_leaf) MiB flat, expected 1.91"; }

# a deep-bound dlopen (the shim's detour, shim/deepbind.cpp): the loader's allocations in it were
# charged through zns_deep_dlopen and the program's _init (the detour's `ret` byte), which
# libunwind walks through; every sample kept (rate 1)
ZNS_PROF="$T/deep.prof" ZNS_PROF_RATE=1 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_deepbind "$PWD/$B/tests/prof/libzt_prof_plugin.so" >/dev/null ||
  fail "prof_deepbind did not run"
google-pprof --text --inuse_objects $B/tests/prof/prof_deepbind "$T/deep.prof" >"$T/deep.txt" 2>/dev/null ||
  fail "prof_deepbind's profile is not readable"
if grep -Eq ' (_init|zns_[a-z_]*)( \(inline\))?$' "$T/deep.txt" || ! grep -Eq ' prof_open$' "$T/deep.txt"; then
  cat "$T/deep.txt"; fail "prof_deepbind: the loader's allocations in a deep-bound dlopen carry the shim's frames or _init, or not prof_open"
fi
google-pprof --text --inuse_space $B/tests/prof/prof_deepbind "$T/deep.prof" >"$T/deep.txt" 2>/dev/null
near "$(mib "$T/deep.txt" plugin_keep)" 1.91 5 ||
  { head -5 "$T/deep.txt"; fail "prof_deepbind: plugin_keep has $(mib "$T/deep.txt" plugin_keep) MiB flat, expected 1.91"; }

# ZNS_PROF=/dev/stdout into a file, by a program that closes its stdout at exit (ls): the program's
# lines stay, the profile after them (the file was emptied at the dump)
ZNS_PROF=/dev/stdout LD_PRELOAD="$PROF_LIB" ls "$T" >"$T/lsprof.txt" || fail "ls with ZNS_PROF=/dev/stdout failed"
grep -qx 'lsprof.txt' "$T/lsprof.txt" && grep -q '^heap profile:' "$T/lsprof.txt" ||
  { head -3 "$T/lsprof.txt"; fail "ZNS_PROF=/dev/stdout > file: ls's lines or the profile are missing"; }

# a daemon's descriptors (tests/prof/prof_fds.c): libunwind's memory check opens no pipe (the
# program's first free descriptor is 3), and reads or writes nothing of the program's after it
# closed everything and reused the numbers, nor with its socket over 5..600; also under a
# descriptor limit of 40.  (libunwind read a byte from the program's socket and wrote one into
# the next.)
for how in "" over; do
  for limit in $(ulimit -n) 40; do
    (ulimit -n $limit && ZNS_PROF="$T/fds.prof" ZNS_PROF_RATE=1024 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_fds $how) >"$T/fds.out" 2>&1 ||
      { cat "$T/fds.out"; fail "prof_fds $how (ulimit -n $limit): the program's descriptors were taken, read or written by the profiler"; }
  done
done
# ... and where libunwind made a real pipe before the profiler started (a library's constructor
# took a stack): that pipe is left alone, unused, and the program's 3 and 4 stay its own
ZNS_PROF="$T/early.prof" ZNS_PROF_RATE=1024 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_fds_early >"$T/fds.out" 2>&1 ||
  { cat "$T/fds.out"; fail "prof_fds_early: libunwind's early pipe read or wrote the program's descriptors"; }
# a dump's own descriptors (its file, the address map it copies) are above the program's numbers
# while it writes (tests/prof/prof_dumpfd.c: a dump into a FIFO of one page; with a limit of 40 too)
for limit in $(ulimit -n) 40; do
  rm -f "$T/dump.fifo"
  (ulimit -n $limit && ZNS_PROF="$T/dumpfd.prof" ZNS_PROF_RATE=1024 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_dumpfd "$T") >"$T/dumpfd.out" 2>&1 ||
    { cat "$T/dumpfd.out"; fail "prof_dumpfd (ulimit -n $limit): a dump wrote or read on one of the program's descriptor numbers"; }
done
# ... and with a thread closing everything while others sample (tests/prof/prof_fds_race.c, 3 s;
# with the pipe kept at 512 and looked at before each walk ~1% of rounds lost bytes)
ZNS_PROF="$T/race.prof" ZNS_PROF_RATE=512 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_fds_race 3 3 >"$T/race.out" 2>&1 ||
  { cat "$T/race.out"; fail "prof_fds_race: a thread's walk read, wrote or closed the program's descriptors"; }

# the stacks after the main thread's pthread_exit (the memory check must work for any thread):
# stdio's blocks charged to mainexit_leaf, not to malloc alone
ZNS_PROF="$T/mexit.prof" ZNS_PROF_RATE=4096 LD_PRELOAD="$PROF_LIB" $B/tests/prof/prof_mainexit || fail "prof_mainexit failed"
google-pprof --text --cum $B/tests/prof/prof_mainexit "$T/mexit.prof" >"$T/mexit.txt" 2>/dev/null ||
  fail "prof_mainexit's profile is not readable"
awk '$6 == "mainexit_leaf" { found = 1; exit !($5 + 0 >= 80) } END { if (!found) exit 1 }' "$T/mexit.txt" ||
  { head -8 "$T/mexit.txt"; fail "prof_mainexit: less than 80% of the live bytes charged to mainexit_leaf (stacks cut short)"; }

# ---- 4. a real program ----------------------------------------------------------------------------
echo "== python3"
cat >"$T/w.py" <<'EOF'
import json, subprocess, threading
d = {}
def work(k):
    for i in range(20000):
        d[(k, i)] = json.dumps({"k": k, "i": i, "s": "x" * (i % 50)})
ts = [threading.Thread(target=work, args=(k,)) for k in range(3)]
[t.start() for t in ts]; [t.join() for t in ts]
print(len(d), sum(len(v) for v in d.values()))
print(subprocess.run(["echo", "child"], capture_output=True, text=True).stdout.strip())
EOF
want=$(/usr/bin/python3 "$T/w.py")
got=$(ZNS_PROF="$T/py.%p.prof" ZNS_PROF_RATE=65536 LD_PRELOAD="$PROF_LIB" /usr/bin/python3 "$T/w.py")
[ "$got" = "$want" ] || fail "python3's output differs under the profiler: $got / $want"
py=$(ls -S "$T"/py.*.prof | head -1)
google-pprof --text --inuse_space /usr/bin/python3 "$py" >"$T/py.txt" 2>/dev/null || fail "python3's profile is not readable"
head -5 "$T/py.txt"
grep -Eq ' _?Py[A-Za-z_]+' "$T/py.txt" || { cat "$T/py.txt"; fail "no CPython function in python3's profile"; }

# ---- 5. ZNS_PROF_INTERVAL_MS: the profile every so often, PATH.1, PATH.2, ... ---------------------
echo "== interval dumps"
# The bytearrays are made, then the program waits for the second interval profile begun after
# them, and that one is checked: on a busy machine the first profiles came before python3 had
# made them, and the last one (a fixed sleep's) during its exit, after they were freed.
k=$(ZNS_PROF="$T/iv.prof" ZNS_PROF_INTERVAL_MS=100 ZNS_PROF_RATE=8192 LD_PRELOAD="$PROF_LIB" \
  /usr/bin/python3 -c '
import os, sys, time
keep = [bytearray(1000) for i in range(4000)]
d, b = os.path.split(sys.argv[1])
def top():
    return max([int(f[len(b) + 1:]) for f in os.listdir(d) if f.startswith(b + ".") and f[len(b) + 1:].isdigit()] or [0])
want, t0 = max(top() + 2, 3), time.time()
while top() < want and time.time() - t0 < 60: time.sleep(0.02)
print(want)' "$T/iv.prof") || fail "python3 failed under the profiler with ZNS_PROF_INTERVAL_MS"
[ -s "$T/iv.prof" ] || fail "no exit profile with ZNS_PROF_INTERVAL_MS"
for i in $(seq 1 "$k"); do
  [ -s "$T/iv.prof.$i" ] || { ls "$T"; fail "no interval profile iv.prof.$i (at 100 ms; python3 waited up to 60 s for iv.prof.$k)"; }
  google-pprof --text --inuse_space /usr/bin/python3 "$T/iv.prof.$i" >/dev/null 2>&1 || fail "iv.prof.$i is not readable"
done
# ~4 MB of bytearrays live since before iv.prof.$k began: it holds their samples
[ "$(head -1 "$T/iv.prof.$k" | awk '{print $3}' | tr -d :)" -gt 100 ] || fail "iv.prof.$k: $(head -1 "$T/iv.prof.$k")"

# ---- 6. a server that never exits: redis-server's interval profiles name its allocation sites -----
if command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null; then
  echo "== redis-server (ZNS_PROF_INTERVAL_MS=200)"
  port=$(/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  ZNS_PROF="$T/redis.prof" ZNS_PROF_INTERVAL_MS=200 LD_PRELOAD="$PROF_LIB" \
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no >"$T/redis.log" 2>&1 &
  rpid=$!
  for i in $(seq 50); do [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break; sleep 0.1; done
  # (the port was free when picked: the server there must be this one, not another test's)
  [ "$(redis-cli -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p')" = "$rpid" ] ||
    { kill $rpid 2>/dev/null; fail "the redis-server on port $port is not the one started here (pid $rpid)"; }
  redis-benchmark -p "$port" -q -n 50000 -r 100000 -t set -d 100 >/dev/null 2>&1 || { kill $rpid; fail "redis-benchmark"; }
  keys=$(redis-cli -p "$port" dbsize)
  sleep 0.5   # (two more interval profiles with the keys in)
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  wait $rpid || true
  # the highest number (not redis.prof.N.tmp, a dump cut short by the shutdown)
  last=$T/redis.prof.$(ls "$T" | sed -n 's/^redis\.prof\.\([0-9]*\)$/\1/p' | sort -n | tail -1)
  google-pprof --text --inuse_space "$(command -v redis-server)" "$last" >"$T/redis.txt" 2>/dev/null || fail "redis's profile $last is not readable"
  head -5 "$T/redis.txt"
  grep -q ' zmalloc' "$T/redis.txt" && grep -q 'sdsnewlen' "$T/redis.txt" ||
    { cat "$T/redis.txt"; fail "redis's interval profile ($keys keys) does not name zmalloc and sdsnewlen"; }
  [ -s "$T/redis.prof" ] || fail "no exit profile from redis-server"
fi

# ---- 6b. the profiler's files and waits never go through the program's symbols -----------------
# tests/api/wrap_lock's run "again" (its tracer wraps read, write, fstat, flock, rename, nanosleep,
# ...: a call of the library that reaches one fails it): churn and a cold heap, profiled at every
# 4 KiB with a dump every 10 ms (the floor) (f3b8b02's profiler library: its spin lock's sched_yield, then more)
echo "== wrapped C library calls"
# (timeout outside the preload: under it, timeout claimed the path first and wrote the profiles)
(cd "$T" && timeout 120 env ZNS_EXPECT=1 WRAP_LOCK_AGAIN=ZNS_PROF ZNS_PROF="$T/wl.prof" ZNS_PROF_INTERVAL_MS=10 \
  ZNS_PROF_RATE=4096 LD_PRELOAD="$PROF_LIB" "$OLDPWD/$B/tests/api/wrap_lock") || fail "wrap_lock under the profiler library"
[ -s "$T/wl.prof" ] && [ -s "$T/wl.prof.1" ] || { ls "$T"; fail "wrap_lock wrote no profiles"; }
grep -q 'wrap_lock' "$T/wl.prof" || { head -5 "$T/wl.prof"; fail "wl.prof is not wrap_lock's"; }

# ---- 7. the default library has no profiler, and says so -----------------------------------------
echo "== the default library"
if ZNS_PROF="$T/none.prof" LD_PRELOAD="$LIB" $B/tests/prof/prof_sites "$T/none-mid.prof" >/dev/null 2>"$T/none.err"; then
  fail "zns_prof_dump succeeded in the library without the profiler"
fi
grep -q 'ZNS_PROF is set, but this library has no heap profiler' "$T/none.err" || { cat "$T/none.err"; fail "no warning"; }
grep -q 'Function not implemented' "$T/none.err" || { cat "$T/none.err"; fail "zns_prof_dump's errno is not ENOSYS"; }
[ ! -e "$T/none.prof" ] && [ ! -e "$T/none-mid.prof" ] || fail "the default library wrote a profile"
echo "heap profiler: ok"
