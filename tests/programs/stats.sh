#!/usr/bin/env bash
# Heap statistics (ZNS_STATS) of a program that leaves a known number of live blocks per size
# class at exit (lib/stats_prog.c, compiled here with cc; it prints the numbers it expects).
# Checks (lib/stats_check.py does the JSON arithmetic):
#   1. ZNS_STATS=PATH.json: runs with N=0, 1, 2: each document is complete and consistent
#      (allocated - freed == live per class, the ledger adds up, totals == sum of the rows,
#      overhead_pct); against N=0, `live` and `allocated` per class grow by exactly what the
#      program did (N*1000 blocks in class 32, N*500 in 112, N*7 in 3072, some made in a second
#      thread, some freed by the other thread), every other class is unchanged, and
#      fallback_allocs/bytes grow by the program's > 4 KiB blocks; %p in the path is the pid;
#   2. ZNS_STATS=1: the text table on stderr names the classes of size 32, 112 and 3072 with the
#      counts of the JSON dump, and its ledger line says "(adds up)";
#   3. ZNS_STATS=PATH.jsonl + ZNS_STATS_INTERVAL_MS=50 while the program runs ~600 ms: >= 5
#      complete lines, time_ms increasing, the last line with the counts the program leaves;
#      without ZNS_STATS_INTERVAL_MS a .jsonl gets exactly one line (at exit);
#   4. tools/zns-stat renders the .json and the .jsonl (class rows, "adds up", --check), draws
#      both with --plot (PNG; skipped with a message when no python3 has matplotlib), and exits 2
#      with a message for a missing file, broken JSON, a .jsonl with a bad line (named), and a
#      document without "classes"/"totals";
#   5. an unknown ZNS_ variable (ZNS_STATZ=1, and ZNS_STATS_INTERVAL, a prefix of a real one)
#      gives exactly one warning line naming it; a bad value (ZNS_DECAY_MS=abc) one message naming
#      it and a normal run with the right counts; known variables with good values no message,
#      nor empty ones (the default);
#   6. the N=0/N=1 comparison of 1. with the program linked with libzns_slab.a instead (when the
#      archive sits next to ZNS_LIB).
#   8. the dump among programs that are not kind to it: one that closes every descriptor and opens
#      a file of its own (which got the dump's number until 2026-12-05: the lines went into it),
#      one started with stderr closed (the dump took fd 2 and the program's messages went into
#      it), a parent whose fork+exec'ed child has the same ZNS_STATS (its O_TRUNC erased the
#      parent's lines; now the child says so in a line and writes nothing), a child forked before
#      the program's first malloc (appended to its parent's file), a program that waits for its
#      child's SIGCHLD in sigsuspend (the interval thread took the signal: it waited forever), a
#      dump at exit, whose descriptor must be above the program's numbers while it writes (a FIFO
#      of one page holds it there while its number is looked at; it was the lowest free one), a
#      setuid program run by another user (ZNS_STATS overwrote a file it may write: now ignored,
#      with a line; as root only), options out of range (a line each, naming them), a warning
#      longer than its buffer (kept its newline), and zns-stat on values no dump holds (exit 2).
#   7. under a file-size limit (ulimit -f 1) a .json dump, a .jsonl series, and the table or a
#      warning on a stderr file are cut at the limit: the program exits 0 (not killed by SIGXFSZ),
#      with one line saying which file was cut short and why (and a child forked after that, with
#      %p, still writes a series of its own); the table into a stderr pipe whose reader has gone:
#      exit 0 (not killed by SIGPIPE).
#   9. ZNS_NUMA_NODES=2: the text's numa line (two nodes, simulated), the JSON's numa section
#      (takes and empty bytes by node, within the totals), zns-stat's numa lines; none with one
#      node (this VM) or ZNS_NUMA=0; as root, in a mount namespace whose
#      /sys/devices/system/node/{online,has_cpu} say 0,2-3: three nodes and their ids, and a line
#      saying why the depot is not node-aware (this kernel's cpuset allows one node's memory, an
#      interleave policy, a bind to one node, ZNS_NUMA=0); a node of memory only does not count.
# Every run of the program under the shim must exit 0, print its "done", and (but for 5.) leave
# stderr empty.
TEST_NAME=stats
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
[[ $SHIM == 1 ]] || { log "plain-only mode: nothing to do without the library"; exit 0; }
zns_make_tmp
ROOT=$(cd "$PROG_DIR/../.." && pwd)
ZNS_STAT_TOOL=$ROOT/tools/zns-stat
CHECK=("$PY" "$PROG_LIB/stats_check.py")
export LC_ALL=C
# The test decides every ZNS_ setting itself (ZNS_LIB and ZNS_EXPECT belong to the harness).
for v in $(compgen -e | grep '^ZNS_' || true); do
  [[ $v == ZNS_LIB || $v == ZNS_EXPECT ]] || unset "$v"
done
cd "$TMPD"

command -v cc >/dev/null || die "cc missing (run: make deps)"
cc -O1 -g -fno-builtin -pthread -Wall -Werror "$PROG_LIB/stats_prog.c" -o stats_prog \
  || die "cannot compile $PROG_LIB/stats_prog.c"
PROG=$TMPD/stats_prog
PRELOAD=(LD_PRELOAD="$ZNS_LIB")

# [RUN_FSIZE=N] run LABEL [VAR=value...] -- ARGS...: the program under the shim (with RUN_FSIZE,
# under ulimit -f N); LABEL.out / LABEL.err.  Fails unless it exits 0 and prints "done"; the
# caller checks stderr.
run() {
  local label=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  local rc=0
  (if [[ -n ${RUN_FSIZE:-} ]]; then ulimit -f "$RUN_FSIZE" || exit 99; fi
   exec timeout 60 env "${envs[@]}" "${PRELOAD[@]}" "$PROG" "$@") >"$label.out" 2>"$label.err" \
    || rc=$?
  if [[ $rc != 0 || "$(tail -n 1 "$label.out")" != "done" ]]; then
    sed 's/^/    stderr: /' "$label.err" | head -n 20
    die "$label: stats_prog $* exited $rc${RUN_FSIZE:+ under ulimit -f $RUN_FSIZE} (124 = timeout, 134 = abort,
  139 = SIGSEGV, 153 = SIGXFSZ) or did not finish.
  Repro: ${envs[*]} ${PRELOAD[*]} $PROG $*   (built from $PROG_LIB/stats_prog.c)"
  fi
}
quiet() {   # LABEL: stderr of the run must be empty
  if [[ -s "$1.err" ]]; then
    sed 's/^/    stderr: /' "$1.err" | head -n 20
    die "$1: unexpected output on stderr (above)"
  fi
}
# check LABEL stats_check.py-args...: run a check and show its output.  A failed check is
# recorded and the test goes on (the end lists them), so one wrong number does not hide the rest.
FAILED_CHECKS=()
check() {
  local label=$1; shift
  local out rc=0
  out=$(cd "$TMPD" && "${CHECK[@]}" "$@" 2>&1) || rc=$?
  [[ -n "$out" ]] && sed 's/^/    /' <<<"$out"
  if [[ $rc == 0 ]]; then log "$label: ok"; return; fi
  log "$label: FAILED (above): ${CHECK[*]##*/} $*"
  FAILED_CHECKS+=("$label")
}

# ---- 1. JSON at exit ---------------------------------------------------------------------------
run live0 ZNS_STATS="$TMPD/s0.json" -- live 0;            quiet live0
run live1 ZNS_STATS="$TMPD/s1.%p.json" -- live 1;         quiet live1
run live2 ZNS_STATS="$TMPD/s2.json" -- live 2;            quiet live2
[[ -s s0.json && -s s2.json ]] || die "ZNS_STATS=PATH.json wrote no file (s0.json / s2.json)"
shopt -s nullglob
s1=(s1.*.json)
shopt -u nullglob
[[ ${#s1[@]} == 1 ]] || die "ZNS_STATS=$TMPD/s1.%p.json: expected one file s1.<pid>.json, found: ${s1[*]:-none}"
pid=${s1[0]#s1.}; pid=${pid%.json}
[[ $pid =~ ^[0-9]+$ ]] || die "%p did not become a pid: ${s1[0]}"
mv "${s1[0]}" s1.json
grep -q "\"pid\":${pid}[,}]" s1.json || die "s1.json: its \"pid\" is not $pid (the %p of its name)"
log "json: %p -> $pid, the document's pid"
check "json N=0" doc s0.json
check "json N=1 vs N=0" diff s0.json s1.json live1.out
check "json N=2 vs N=0" diff s0.json s2.json live2.out

# The same, linked with the static archive (the README's link line), when it sits next to ZNS_LIB.
AR=${ZNS_LIB%.so}.a
if [[ -f $AR ]]; then
  cc -O1 -g -fno-builtin -pthread -Wall -Werror "$PROG_LIB/stats_prog.c" -o stats_prog.static \
    -Wl,--whole-archive "$AR" -Wl,--no-whole-archive -lstdc++ -ldl \
    || die "cannot link $PROG_LIB/stats_prog.c with $AR"
  PROG=$TMPD/stats_prog.static PRELOAD=()
  run static0 ZNS_STATS="$TMPD/st0.json" -- live 0; quiet static0
  run static1 ZNS_STATS="$TMPD/st1.json" -- live 1; quiet static1
  check "json N=1 vs N=0, linked with $(basename "$AR")" diff st0.json st1.json static1.out
  PROG=$TMPD/stats_prog PRELOAD=(LD_PRELOAD="$ZNS_LIB")
  # the dump at exit comes after the program's own destructor functions (linked, the library's
  # ran first: the blocks those free were counted live), as preloaded
  cat >dtor_frees.c <<'CEOF'
#include <stdlib.h>
static void *keep[3000];
__attribute__((constructor)) static void take(void) { for (int i = 0; i < 3000; i++) keep[i] = malloc(200); }
__attribute__((destructor)) static void give(void) { for (int i = 0; i < 3000; i++) free(keep[i]); }
int main(void) { return 0; }
CEOF
  for how in preload linked; do
    if [[ $how == linked ]]; then
      cc -O1 -Wall -Werror dtor_frees.c -o dtor_frees -Wl,--whole-archive "$AR" -Wl,--no-whole-archive -lstdc++ -ldl
      env ZNS_STATS="$TMPD/dtor.json" ./dtor_frees || die "dtor_frees ($how) failed"
    else
      cc -O1 -Wall -Werror dtor_frees.c -o dtor_frees
      env ZNS_STATS="$TMPD/dtor.json" LD_PRELOAD="$ZNS_LIB" ./dtor_frees || die "dtor_frees ($how) failed"
    fi
    live=$("$PY" -c 'import json,sys; print(sum(c["live"] for c in json.load(open(sys.argv[1]))["classes"] if c["size"] == 208))' dtor.json)
    [[ $live -lt 100 ]] || die "dtor_frees ($how): $live blocks of 208 B live at the dump; the program's destructor freed its 3000 before exit ended"
  done
  log "the dump comes after the program's destructor functions, preloaded and linked"
else
  log "no $AR: the linked variant is not checked"
fi

# ---- 2. text table on stderr -------------------------------------------------------------------
run text ZNS_STATS=1 -- live 1
log "text: ZNS_STATS=1 wrote $(wc -l <text.err) lines on stderr"
check "text table" text text.err s1.json live1.out
run text2 ZNS_STATS=stderr -- live 1
grep -q '(adds up)$' text2.err || die "ZNS_STATS=stderr: no '(adds up)' ledger line on stderr"

# ---- 3. JSON lines -----------------------------------------------------------------------------
t0=$(date +%s%N)
run jsonl ZNS_STATS="$TMPD/s.jsonl" ZNS_STATS_INTERVAL_MS=50 -- interval 1 600; quiet jsonl
log "jsonl: the program ran $(( ($(date +%s%N) - t0) / 1000000 )) ms"
[[ -s s.jsonl ]] || die "ZNS_STATS=PATH.jsonl with ZNS_STATS_INTERVAL_MS=50 wrote no file"
# The program churns >= 600 ms after the library started the clock (CLOCK_MONOTONIC_COARSE: a
# few ms of slack).
check "jsonl (interval 50 ms)" jsonl s.jsonl s0.json live1.out 5 590
run jsonl1 ZNS_STATS="$TMPD/once.jsonl" -- live 1; quiet jsonl1
[[ $(wc -l <once.jsonl) == 1 ]] || die "ZNS_STATS=PATH.jsonl without an interval: expected exactly one line (at exit), got $(wc -l <once.jsonl)"
check "jsonl (at exit only)" jsonl once.jsonl s0.json live1.out 1 0

# ---- 4. tools/zns-stat -------------------------------------------------------------------------
[[ -x $ZNS_STAT_TOOL ]] || die "$ZNS_STAT_TOOL is missing or not executable"
zstat() {   # LABEL ARGS...: zns-stat must exit 0; output in LABEL.zs
  local label=$1; shift
  local rc=0
  timeout 120 "$ZNS_STAT_TOOL" "$@" >"$label.zs" 2>&1 || rc=$?
  if [[ $rc != 0 ]]; then
    sed 's/^/    /' "$label.zs" | head -n 30
    die "zns-stat $* exited $rc"
  fi
}
has_rows() {   # LABEL FILE.zs: the class rows of stats_prog (size, live for N=1) are in the table
  local size live size_live
  for size_live in 32:1000 112:500 3072:7; do
    size=${size_live%:*}; live=${size_live#*:}
    grep -Eq "^ *[0-9]+ +$size +[0-9]+ +[0-9]+ +$live +[0-9]+ " "$2" \
      || { cat "$2"; die "$1: no table row for the class of size $size with $live live blocks"; }
  done
  grep -q 'adds up$' "$2" || { cat "$2"; die "$1: no ledger line saying it adds up"; }
}
zstat zs-json --check s1.json;  has_rows "zns-stat s1.json" zs-json.zs
zstat zs-jsonl --check s.jsonl; has_rows "zns-stat s.jsonl" zs-jsonl.zs
n_lines=$(wc -l <s.jsonl)
grep -q "^series: $n_lines samples over " zs-jsonl.zs \
  || { cat zs-jsonl.zs; die "zns-stat s.jsonl: no 'series: $n_lines samples over ...' summary"; }
grep -Eq '^  peak RSS +[0-9]+' zs-jsonl.zs || die "zns-stat s.jsonl: no peak RSS in the summary"
zstat zs-help --help
grep -q -- '--plot' zs-help.zs || die "zns-stat --help does not mention --plot"
log "zns-stat: tables of s1.json and s.jsonl ($n_lines samples) ok"

png_ok() {   # FILE: exists, non-empty, PNG signature
  [[ -s $1 ]] && [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]]
}
if python3 -c 'import matplotlib' 2>/dev/null || /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  zstat zs-plot1 s1.json --plot "$TMPD/json.png"
  png_ok json.png || die "zns-stat s1.json --plot json.png: no PNG written"
  zstat zs-plot2 s.jsonl --plot "$TMPD/jsonl.png"
  png_ok jsonl.png || die "zns-stat s.jsonl --plot jsonl.png: no PNG written"
  log "zns-stat --plot: json.png $(stat -c %s json.png) B, jsonl.png $(stat -c %s jsonl.png) B"
else
  log "SKIP zns-stat --plot: no python3 here can import matplotlib (make deps-test installs python3-matplotlib)"
fi

bad() {   # LABEL FILE PATTERN: zns-stat FILE exits 2 with a message matching PATTERN
  local rc=0
  "$ZNS_STAT_TOOL" "$2" >bad.out 2>bad.err || rc=$?
  [[ $rc == 2 ]] || { cat bad.out bad.err; die "zns-stat on $1 exited $rc, expected 2"; }
  grep -Eq "$3" bad.err || { cat bad.err; die "zns-stat on $1: message does not match /$3/"; }
  log "zns-stat on $1: exit 2, $(head -n 1 bad.err)"
}
head -c 300 s1.json >broken.json
bad "a truncated .json" broken.json '^zns-stat: broken\.json: invalid JSON'
{ head -n 2 s.jsonl; echo '{"version":1,"pid":1,"classes":[{'; tail -n 1 s.jsonl; } >broken.jsonl
bad "a .jsonl with a bad line 3" broken.jsonl '^zns-stat: broken\.jsonl:3: invalid JSON'
echo '{"version":1,"pid":1,"totals":{}}' >noclasses.json
bad "a document without classes" noclasses.json "^zns-stat: noclasses\.json: .*'classes'"
echo '{"version":1,"pid":1,"classes":[]}' >nototals.json
bad "a document without totals" nototals.json "^zns-stat: nototals\.json: .*'totals'"
bad "a missing file" "$TMPD/nonexistent.json" 'nonexistent\.json: no such file'

# ---- 5. option warnings ------------------------------------------------------------------------
one_line_naming() {   # LABEL WORD...: LABEL.err is exactly one line, containing each WORD
  local label=$1 n w
  shift
  n=$(wc -l <"$label.err")
  [[ $n == 1 ]] || { cat "$label.err"; die "$label: expected exactly one line on stderr, got $n"; }
  for w in "$@"; do
    grep -qF -- "$w" "$label.err" || die "$label: the stderr line does not name '$w': $(cat "$label.err")"
  done
  log "$label: $(cat "$label.err")"
}
run unknown ZNS_STATZ=1 -- live 1
one_line_naming unknown ZNS_STATZ
# a path that cannot be opened: the line names the path tried, %p expanded (it printed "%p")
run nodir ZNS_STATS="$TMPD/nodir/n.%p.json" -- live 0
one_line_naming nodir "cannot write statistics to $TMPD/nodir/n." "no such"
! grep -qF '%p' nodir.err || die "nodir: the line names the path with %p unexpanded: $(cat nodir.err)"
run unknown2 ZNS_STATS_INTERVAL=50 -- live 0      # a prefix of a real name
one_line_naming unknown2 ZNS_STATS_INTERVAL
run badval ZNS_DECAY_MS=abc ZNS_STATS="$TMPD/badval.json" -- live 1
one_line_naming badval ZNS_DECAY_MS abc
check "json with ZNS_DECAY_MS=abc" diff s0.json badval.json live1.out
run known ZNS_DECAY_MS=500 ZNS_DIRTY_MAX_KB=1024 ZNS_REGION_GB=8 ZNS_STATS=0 -- live 1
quiet known
log "known variables with good values: no warning"
run emptyval ZNS_DECAY_MS= ZNS_DIRTY_MAX_KB= ZNS_TIER_DIR= ZNS_STATS="$TMPD/emptyval.json" -- live 1
quiet emptyval
check "json with empty ZNS_DECAY_MS, ZNS_DIRTY_MAX_KB" diff s0.json emptyval.json live1.out
log "empty values (as README: the default): no warning"

# ---- 7. a file-size limit -----------------------------------------------------------------------
# Under `ulimit -f 1` (1 KiB) no dump fits.  The write fails with EFBIG and raises SIGXFSZ, whose
# default action ends the program (exit 153: at exit, or mid-run from the interval thread): the
# program must exit 0 as it would without ZNS_STATS, and stderr say in one line that the file was
# cut short and why.
RUN_FSIZE=1 run fsize-json ZNS_STATS="$TMPD/f.json" -- live 1
one_line_naming fsize-json "$TMPD/f.json" "cut short" "file size limit"
[[ $(stat -c %s f.json) == 1024 ]] || die "f.json: $(stat -c %s f.json) bytes, expected the 1024 the limit lets through"
RUN_FSIZE=1 run fsize-jsonl ZNS_STATS="$TMPD/f.jsonl" ZNS_STATS_INTERVAL_MS=50 -- interval 1 600
one_line_naming fsize-jsonl "$TMPD/f.jsonl" "cut short" "file size limit"   # (no line after the first failure)
# The text table to stderr, a file that already holds 1000 bytes (so the table, some hundred
# bytes, crosses the limit).
head -c 1000 /dev/zero | tr '\0' 'x' >fsize-stderr.err
rc=0
(ulimit -f 1 && exec timeout 60 env ZNS_STATS=1 "${PRELOAD[@]}" "$PROG" live 1) >fsize-stderr.out 2>>fsize-stderr.err || rc=$?
[[ $rc == 0 && "$(tail -n 1 fsize-stderr.out)" == done ]] \
  || die "ZNS_STATS=1 with stderr a file at the size limit: exited $rc (153 = killed by SIGXFSZ)"
[[ $(stat -c %s fsize-stderr.err) == 1024 ]] \
  || die "ZNS_STATS=1 with stderr a file: $(stat -c %s fsize-stderr.err) bytes in it, expected the 1024 the limit lets through"
log "fsize-stderr: the text table cut at the limit, exit 0"
# A warning at start (an unknown variable) to the same stderr at the limit.
head -c 1000 /dev/zero | tr '\0' 'x' >fsize-warn.err
rc=0
(ulimit -f 1 && exec timeout 60 env ZNS_STATZ=1 "${PRELOAD[@]}" "$PROG" live 0) >fsize-warn.out 2>>fsize-warn.err || rc=$?
[[ $rc == 0 && "$(tail -n 1 fsize-warn.out)" == done ]] \
  || die "a warning to a stderr file at the size limit: exited $rc (153 = killed by SIGXFSZ)"
log "fsize-warn: the warning cut at the limit, exit 0"
# And the table into a pipe whose reader has gone: EPIPE, and a SIGPIPE that would end the program
# (exit 141).
rm -f pipe.rc
{ sleep 0.3; rc=0; env ZNS_STATS=1 "${PRELOAD[@]}" "$PROG" live 0 >pipe.out || rc=$?; echo "$rc" >pipe.rc; } 2>&1 | true
for _ in $(seq 100); do [[ -s pipe.rc ]] && break; sleep 0.1; done
[[ "$(cat pipe.rc 2>/dev/null)" == 0 && "$(tail -n 1 pipe.out)" == done ]] \
  || die "ZNS_STATS=1 into a closed pipe: exited $(cat pipe.rc 2>/dev/null || echo '?') (141 = killed by SIGPIPE)"
log "pipe: the table into a closed pipe, exit 0"
# A forked child (with %p: a series of its own) of a parent whose series was cut short must still
# write its own lines: the child lifts its soft limit and runs 400 ms with a 20 ms interval.
cat >fork_cut.py <<'PYEOF'
import os, resource, time
time.sleep(0.3)                       # the parent's first lines cross the 1 KiB soft limit
pid = os.fork()
if pid == 0:
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    keep = []
    t0 = time.time()
    while time.time() - t0 < 0.4:
        keep.append(str(len(keep)) * 3)
    os._exit(0)
_, st = os.waitpid(pid, 0)
print("child", pid, "status", st)
PYEOF
rc=0
(ulimit -S -f 1 && exec timeout 60 env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/fk.%p.jsonl" ZNS_STATS_INTERVAL_MS=20 \
   "${PRELOAD[@]}" /usr/bin/python3 fork_cut.py) >fork_cut.out 2>fork_cut.err || rc=$?
child=$(sed -n 's/^child \([0-9]*\) status 0$/\1/p' fork_cut.out)
[[ $rc == 0 && -n $child ]] || { cat fork_cut.out fork_cut.err; die "fork_cut.py: exited $rc, or its child failed"; }
n=$(wc -l <"fk.$child.jsonl" 2>/dev/null || echo 0)
[[ $n -ge 5 ]] || die "a child forked after its parent's series was cut short wrote $n lines to fk.$child.jsonl (expected >= 5 in 400 ms at 20 ms)"
log "fork after a cut: the child's own series has $n lines"
# A forked child with %p gets its file in the fork handler, with the identity it had then: one
# that drops privileges before its first line still writes it (a version that made the file at
# the first line, so that a child ending in _exit left none, lost these: "permission denied"),
# and one that exits writes its line.
cat >fork_priv.py <<'PYEOF'
import os, sys
a = os.fork()
if a == 0:
    os.setgid(65534); os.setuid(65534)
    keep = [str(i) * 3 for i in range(1000)]
    sys.exit(0)
b = os.fork()
if b == 0:
    sys.exit(0)
for c in (a, b):
    _, st = os.waitpid(c, 0)
    assert st == 0, st
print(a, b)
PYEOF
mkdir -p fp && rm -f fp/*
rc=0
env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/fp/x.%p.jsonl" "${PRELOAD[@]}" /usr/bin/python3 fork_priv.py >fork_priv.out 2>fork_priv.err || rc=$?
read -r ca cb <fork_priv.out || true
[[ $rc == 0 && -n $ca && -n $cb && ! -s fork_priv.err ]] || { cat fork_priv.out fork_priv.err; die "fork_priv.py: exited $rc, or said something"; }
for c in $ca $cb; do
  [[ $(wc -l <fp/x.$c.jsonl 2>/dev/null) == 1 ]] || die "forked child $c: fp/x.$c.jsonl has $(wc -l <fp/x.$c.jsonl 2>/dev/null || echo no) lines, expected 1"
done
log "fork: a child that dropped privileges and one that did not each wrote their line"

# ---- 8. programs that are not kind to the dump --------------------------------------------------
valid_series() {   # FILE PID MIN: every line a whole document of PID, at least MIN lines
  "$PY" - "$@" <<'PYEOF' || die "$1: not a clean series of pid $2 (above)"
import json, sys
path, pid, least = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
bad = []
for i, l in enumerate(lines, 1):
    try:
        d = json.loads(l)
        if d.get("pid") != pid: bad.append(f"line {i}: pid {d.get('pid')}")
    except ValueError:
        bad.append(f"line {i} is not JSON: {l[:60]!r}")
if len(lines) < least: bad.append(f"{len(lines)} lines, expected >= {least}")
if bad: print("\n".join(bad[:5])); sys.exit(1)
PYEOF
}
# a. every descriptor closed, then a file of the program's own
cat >closefds.py <<'PYEOF'
import os, sys, time
os.closerange(3, 4096)
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
keep = []
for i in range(6):
    os.write(fd, b"RECORD-%d\n" % i)
    keep.append("x" * (i * 50 + 20)); time.sleep(0.06)
print(os.getpid())
PYEOF
rc=0
env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/cf.jsonl" ZNS_STATS_INTERVAL_MS=20 "${PRELOAD[@]}" /usr/bin/python3 closefds.py "$TMPD/own.txt" >cf.out 2>cf.err || rc=$?
[[ $rc == 0 ]] || { cat cf.err; die "closefds.py exited $rc"; }
[[ "$(cat own.txt)" == "$(printf 'RECORD-%d\n' 0 1 2 3 4 5)" ]] || { head -c 300 own.txt; die "the program's own file holds more than its records (the dump wrote into it)"; }
valid_series cf.jsonl "$(cat cf.out)" 5
quiet cf
log "closed descriptors: the program's file holds its records only, cf.jsonl $(wc -l <cf.jsonl) whole lines"
# ... and the same, with the file deleted meanwhile: one line says the series stopped
cat >closegone.py <<'PYEOF'
import os, sys, time
os.closerange(3, 4096)
os.unlink(sys.argv[1])
keep = [str(i) * 30 for i in range(2000)]
time.sleep(0.1)
PYEOF
rc=0
env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/cg.jsonl" ZNS_STATS_INTERVAL_MS=20 "${PRELOAD[@]}" /usr/bin/python3 closegone.py "$TMPD/cg.jsonl" >cg.out 2>cg.err || rc=$?
[[ $rc == 0 ]] || { cat cg.err; die "closegone.py exited $rc"; }
one_line_naming cg "cg.jsonl" "cannot be opened again"
# ... and the same into a FIFO whose reader has gone: the reopen must not wait for a reader
# (it held the print lock, and the program never exited)
mkfifo fifo.jsonl
cat fifo.jsonl >fifo.out &
rc=0
timeout 20 env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/fifo.jsonl" ZNS_STATS_INTERVAL_MS=20 "${PRELOAD[@]}" /usr/bin/python3 -c '
import os, time
time.sleep(0.1)
os.closerange(3, 4096)
keep = [str(i) * 30 for i in range(2000)]
time.sleep(0.1)' >fifo.py.out 2>fifo.err || rc=$?
wait
[[ $rc == 0 ]] || { cat fifo.err; die "a program that closed its .jsonl FIFO exited $rc (124: it hung reopening it)"; }
# (the reader sees its end of file unless the library opened the FIFO again first: then the
# series went on into it, to the exit line)
grep -Eq "cannot be opened again|no reader on the FIFO" fifo.err || "$PY" -c 'import json,sys; sys.exit(json.loads(open(sys.argv[1]).read().splitlines()[-1])["time_ms"] < 150)' fifo.out \
  || { cat fifo.err; die "a .jsonl FIFO without a reader: no line saying the series stopped, and the reader did not get it whole"; }
log "a .jsonl FIFO closed by the program: exit 0, $(wc -l <fifo.out) lines read, then $(cat fifo.err || true)"
# ... and when a reader comes back (a collector restarted), the series goes on there
rm -f fifo.jsonl; mkfifo fifo.jsonl
cat fifo.jsonl >fifo1.out &
cat1=$!
rc=0
timeout 20 env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/fifo.jsonl" ZNS_STATS_INTERVAL_MS=20 "${PRELOAD[@]}" /usr/bin/python3 -c '
import os, time
time.sleep(0.1)
os.closerange(3, 4096)
keep = [str(i) * 30 for i in range(2000)]
time.sleep(1.0)' >fifo.py.out 2>fifo2.err &
pypid=$!
wait $cat1 || true   # (the first reader ends when the program closes its end)
sleep 0.3
cat fifo.jsonl >fifo2.out &
catpid=$!
wait $pypid || rc=$?
sleep 0.2; kill $catpid 2>/dev/null || true   # (a reader that never met a writer would wait forever)
wait
[[ $rc == 0 ]] || { cat fifo2.err; die "a program whose .jsonl FIFO reader came back exited $rc"; }
! grep -q "cannot be opened again" fifo2.err || { cat fifo2.err; die "a .jsonl FIFO whose reader came back: the series stopped"; }
grep -v "no reader on the FIFO; lines are skipped until one opens it" fifo2.err | grep -q . \
  && { cat fifo2.err; die "a .jsonl FIFO whose reader came back: unexpected lines on stderr"; }
n1=$(wc -l <fifo1.out); n2=$(wc -l <fifo2.out)   # (the first reader may have kept it: see above)
[[ $((n1 + n2)) -ge 10 ]] || die "a .jsonl FIFO whose reader came back: $n1 + $n2 lines (expected a line every 20 ms for a second)"
log "a .jsonl FIFO whose reader came back: $n1 lines for the first reader, $n2 for the new one${n2:+ (}$(head -c 60 fifo2.err)${n2:+)}"
# ... and the dump at exit holds its file above the program's numbers while it writes (the
# program's other threads run on: a dup2 onto the number would have closed it under the dump):
# a .json dump (~6 KiB) into a FIFO of one page waits there, and its descriptor is looked at
cat >pipedump.py <<'PYEOF'
import fcntl, os, resource, subprocess, sys, time
fifo, cmd = sys.argv[1], sys.argv[2:]
os.mkfifo(fifo)
rd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
fcntl.fcntl(rd, fcntl.F_SETPIPE_SZ, 4096)
floor = min(512, resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2)
child = subprocess.Popen(cmd)
seen = None
for _ in range(1000):
    try:
        for fd in os.listdir("/proc/%d/fd" % child.pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (child.pid, fd)) == fifo: seen = int(fd)
            except OSError: pass
    except OSError: pass
    if seen is not None or child.poll() is not None: break
    time.sleep(0.01)
os.set_blocking(rd, True)
data = b""
while True:
    b = os.read(rd, 65536)
    if not b: break
    data += b
rc = child.wait()
if rc != 0: sys.exit("the program exited %d" % rc)
if seen is None: sys.exit("the dump (%d bytes) was never seen waiting: nothing looked at" % len(data))
if seen < floor: sys.exit("the dump at exit wrote from descriptor %d, among the program's numbers (below %d)" % (seen, floor))
if not data.rstrip().endswith(b"}"): sys.exit("the dump read from the FIFO is not whole: ...%r" % data[-60:])
print("the dump at exit (%d bytes) wrote from descriptor %d" % (len(data), seen))
PYEOF
for lim in $(ulimit -n) 40; do
  rm -f pipe.json
  (ulimit -n $lim && exec env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/pipe.json" "$PY" pipedump.py "$TMPD/pipe.json" env "${PRELOAD[@]}" /usr/bin/python3 -c 'x = [str(i) for i in range(1000)]') >pipe.out 2>&1 \
    || { cat pipe.out; die "the dump at exit (ulimit -n $lim) held its file at one of the program's numbers"; }
  log "$(cat pipe.out) (ulimit -n $lim)"
done
# b. stderr closed: the dump must not take fd 2
rc=0
env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/c2.jsonl" "${PRELOAD[@]}" /usr/bin/python3 -c '
import os
try: os.write(2, b"a message for stderr\n")
except OSError: pass
print(os.getpid())' >c2.out 2>&- || rc=$?
[[ $rc == 0 ]] || die "python3 with stderr closed exited $rc"
valid_series c2.jsonl "$(cat c2.out)" 1
rc=0   # (with 512 descriptors at most the dump cannot go to 512 up: it must still leave fd 2)
(ulimit -n 512 && exec env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/c3.jsonl" "${PRELOAD[@]}" /usr/bin/python3 -c '
import os
try: os.write(2, b"a message for stderr\n")
except OSError: pass
print(os.getpid())') >c3.out 2>&- || rc=$?
[[ $rc == 0 ]] || die "python3 with stderr closed and ulimit -n 512 exited $rc"
valid_series c3.jsonl "$(cat c3.out)" 1
log "stderr closed: c2.jsonl (and c3.jsonl, ulimit -n 512) hold only the dump"
# c. a fork+exec'ed child with the same ZNS_STATS
cat >execchild.py <<'PYEOF'
import os, subprocess, time
keep = []
t0 = time.time()
while time.time() - t0 < 0.3: keep.append("y" * 40); time.sleep(0.005)
subprocess.run(["/bin/true"])
while time.time() - t0 < 0.6: keep.append("z" * 40); time.sleep(0.005)
print(os.getpid())
PYEOF
rc=0
env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/ex.jsonl" ZNS_STATS_INTERVAL_MS=50 "${PRELOAD[@]}" /usr/bin/python3 execchild.py >ex.out 2>ex.err || rc=$?
[[ $rc == 0 ]] || { cat ex.err; die "execchild.py exited $rc"; }
valid_series ex.jsonl "$(cat ex.out)" 8
"$PY" -c 'import json,sys; t=[json.loads(l)["time_ms"] for l in open(sys.argv[1])]; sys.exit(0 if t[0] < 200 else 1)' ex.jsonl \
  || die "ex.jsonl: the parent's first lines are gone (first time_ms $(head -c 200 ex.jsonl | grep -o '"time_ms":[0-9]*'))"
grep -q "another process writes its statistics there" ex.err || { cat ex.err; die "the exec'ed child did not say why it writes no statistics"; }
log "fork+exec with the same path: the parent's $(wc -l <ex.jsonl) lines kept; the child: $(head -n 1 ex.err)"
# d. a child forked before the program's first malloc, and e. SIGCHLD awaited in sigsuspend
cat >early_fork.c <<'CEOF'
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t got, on_main;
static pid_t main_tid;
static void on_chld(int s) { (void)s; got = 1; on_main = gettid() == main_tid; }
static void run_ms(int ms) {   /* allocate for ms milliseconds */
  struct timespec t0, t;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  do {
    void *p = malloc(64); memset(p, 1, 64); free(p);
    usleep(1000);
    clock_gettime(CLOCK_MONOTONIC, &t);
  } while ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000 < ms);
}
int main(int argc, char **argv) {
  main_tid = gettid();
  if (!strcmp(argv[1], "fork")) {   /* no malloc of ours before this fork */
    pid_t c = fork();
    if (c == 0) { run_ms(150); exit(0); }   /* exit: the library's exit path runs */
    run_ms(300);
    int st;
    waitpid(c, &st, 0);
    printf("%d\n", (int)getpid());
    return st == 0 ? 0 : 1;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_chld;
  sigaction(SIGCHLD, &sa, 0);
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGCHLD);
  sigprocmask(SIG_BLOCK, &block, &old);
  alarm(10);   /* the SIGALRM ends a run that waits forever (exit 142) */
  run_ms(100);
  for (int i = 0; i < 5; i++) {
    got = 0;
    pid_t c = fork();
    if (c == 0) _exit(0);
    run_ms(5);   /* the SIGCHLD comes while it is blocked: it must stay pending for sigsuspend */
    while (!got) sigsuspend(&old);
    if (!on_main) { printf("SIGCHLD handled off the main thread\n"); return 1; }
    waitpid(c, 0, 0);
  }
  printf("%d\n", (int)getpid());
  return 0;
}
CEOF
cc -O1 -Wall -Werror early_fork.c -o early_fork || die "cannot compile early_fork.c"
rc=0
env ZNS_STATS="$TMPD/ef.jsonl" "${PRELOAD[@]}" ./early_fork fork >ef.out 2>ef.err || rc=$?   # (no interval
[[ $rc == 0 ]] || { cat ef.err; die "early_fork fork exited $rc"; }                           #  thread: it would allocate)
valid_series ef.jsonl "$(cat ef.out)" 1
quiet ef
log "a child forked before the first malloc: ef.jsonl is the parent's alone ($(wc -l <ef.jsonl) line)"
rc=0
env ZNS_STATS="$TMPD/sg.jsonl" ZNS_STATS_INTERVAL_MS=5 "${PRELOAD[@]}" ./early_fork sigsuspend >sg.out 2>sg.err || rc=$?
[[ $rc == 0 ]] || { cat sg.out sg.err; die "SIGCHLD awaited in sigsuspend under ZNS_STATS_INTERVAL_MS: exited $rc (142: it waited forever)"; }
log "sigsuspend: SIGCHLD reached the main thread 5 times with the interval thread running"
# f. a setuid program run by another user (as root only)
if [[ $(id -u) == 0 ]] && id nobody >/dev/null 2>&1 && [[ -f ${ZNS_LIB%.so}.a ]]; then
  SUID_DIR=$(mktemp -d /tmp/zns-suid.XXXXXX); chmod 755 "$SUID_DIR"
  echo "root's file" >victim; chmod 600 victim
  if grep -qw nosuid <<<"$(findmnt -no OPTIONS -T "$SUID_DIR" 2>/dev/null)"; then
    log "SKIP setuid: $SUID_DIR is on a nosuid mount"
  else
    # (the loader ignores LD_PRELOAD for a setuid program: the archive is linked in, as a setuid
    # tool would have it)
    cc -O1 -g -fno-builtin -pthread "$PROG_LIB/stats_prog.c" -o "$SUID_DIR/prog" \
      -Wl,--whole-archive "${ZNS_LIB%.so}.a" -Wl,--no-whole-archive -lstdc++ -ldl || die "cannot link the setuid program"
    chown root "$SUID_DIR/prog"; chmod 4755 "$SUID_DIR/prog"
    rc=0
    su nobody -s /bin/sh -c "ZNS_STATS='$TMPD/victim' '$SUID_DIR/prog' live 0" >suid.out 2>suid.err || rc=$?
    [[ $rc == 0 ]] || { cat suid.err; die "the setuid program exited $rc"; }
    [[ "$(cat victim)" == "root's file" ]] || die "a setuid program run by nobody with ZNS_STATS=victim wrote into root's file"
    one_line_naming suid "AT_SECURE" "ZNS_STATS"
  fi
  rm -rf "$SUID_DIR"
else
  log "SKIP setuid: not root, no user nobody, or no archive next to ZNS_LIB"
fi
# g. options out of range, a long warning, an interval without a .jsonl
run range ZNS_REGION_GB=0 ZNS_DIRTY_PERCENT=500 ZNS_DECAY_MS=99999999999 -- live 0
[[ $(wc -l <range.err) == 3 ]] || { cat range.err; die "three options out of range: expected three lines"; }
for w in "ZNS_REGION_GB=0 is out of range (1..4096), using 1" "ZNS_DIRTY_PERCENT=500 is out of range (0..100), using 100" \
         "ZNS_DECAY_MS=99999999999 is out of range"; do
  grep -qF "$w" range.err || { cat range.err; die "no line '$w'"; }
done
long=$(printf 'v%.0s' $(seq 300))
run longwarn "ZNS_FOO=$long" ZNS_BAR=1 -- live 0
[[ $(wc -l <longwarn.err) == 2 ]] && grep -q '^zns-slab: unknown variable ignored: ZNS_BAR=1$' longwarn.err \
  || { cat longwarn.err; die "a long warning ran into the next one"; }
run interval-json ZNS_STATS="$TMPD/ij.json" ZNS_STATS_INTERVAL_MS=50 -- live 0
one_line_naming interval-json ZNS_STATS_INTERVAL_MS "is ignored"
log "options out of range, a long warning, a useless interval: a line each"
# h. zns-stat on values no dump holds
"$PY" - s0.json <<'PYEOF'
import json, sys
d = json.load(open(sys.argv[1]))
d["tier"] = {"mode": "uffd", "slabs_out": 1, "pressure": -1}
json.dump(d, open("negpressure.json", "w"))
PYEOF
bad "a negative governor pressure" negpressure.json '^zns-stat: negpressure\.json: .*pressure'
{ cat s.jsonl; echo '{"version":1,"pid":1,"classes":[],"totals":{}}'; } >lastbare.jsonl
rc=0; "$ZNS_STAT_TOOL" lastbare.jsonl >lastbare.out 2>&1 || rc=$?
[[ $rc == 0 || $rc == 2 ]] && ! grep -q Traceback lastbare.out || { cat lastbare.out; die "zns-stat on a .jsonl whose last line has no totals: exit $rc"; }
log "zns-stat: values no dump holds: exit 2 or a table, never a traceback"

# ---- 9. NUMA: the depot's nodes in the text, the JSON and zns-stat ------------------------------
run numa2 ZNS_STATS=1 ZNS_NUMA_NODES=2 -- live 1
grep -Eq '^numa: 2 nodes \(simulated, ZNS_NUMA_NODES\); slabs handed out by node: [0-9]+ [0-9]+, of them another node.s empty slab 0; empty resident bytes by node: [0-9]+ [0-9]+$' numa2.err \
  || { cat numa2.err; die "ZNS_NUMA_NODES=2: no numa line of two nodes in the text"; }
grep -q '(adds up)$' numa2.err || die "ZNS_NUMA_NODES=2: the ledger does not add up"
run numa2j ZNS_STATS="$TMPD/n2.json" ZNS_NUMA_NODES=2 -- live 1
"$PY" - n2.json <<'PYEOF' || die "ZNS_NUMA_NODES=2: the JSON's numa section (above)"
import json, sys
d = json.load(open(sys.argv[1]))
n, t = d["numa"], d["totals"]
ok = (n["nodes"] == 2 and n["machine_nodes"] == 0 and len(n["takes"]) == 2 and len(n["depot_bytes"]) == 2
      and sum(n["takes"]) > 0 and sum(n["depot_bytes"]) <= t["depot_bytes"] and n["cross_node_takes"] == 0)
print(n, "depot_bytes", t["depot_bytes"])
sys.exit(0 if ok else 1)
PYEOF
"$ZNS_STAT_TOOL" n2.json >n2.out || die "zns-stat n2.json failed"
grep -q '^numa: 2 nodes (simulated: ZNS_NUMA_NODES)' n2.out && grep -q '^  node 1: slabs handed out' n2.out \
  || { cat n2.out; die "zns-stat: no numa lines for two nodes"; }
online=$(cat /sys/devices/system/node/online 2>/dev/null || echo 0)
if [[ $online == 0 ]]; then   # one node: no line, one node in the JSON
  grep -q '^numa' text.err && die "one node: the text has a numa line"
  "$PY" -c 'import json,sys; sys.exit(json.load(open("s1.json"))["numa"]["nodes"] != 1)' || die "one node: numa.nodes != 1"
fi
run numa0 ZNS_STATS=1 ZNS_NUMA=0 ZNS_NUMA_NODES=2 -- live 1
grep -q '^numa' numa0.err && die "ZNS_NUMA=0: the text has a numa line"
log "numa: two simulated nodes in the text, the JSON and zns-stat; none with one node or ZNS_NUMA=0"
# The machine's nodes as the library reads them (/sys/devices/system/node/online), shown a list of
# its own in a mount namespace (root only), and a memory policy that does not place pages where
# they are first touched (interleave, set before an exec: it is inherited)
cat >policy.c <<'CEOF'
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
int main(int argc, char **argv) {   /* policy MODE PROG ARGS...: a memory policy over node 0, then exec */
  unsigned long mask = 1;
  if (argc < 3 || syscall(SYS_set_mempolicy, atoi(argv[1]), &mask, 64UL) != 0) { perror("set_mempolicy"); return 99; }
  execv(argv[2], argv + 2);
  perror("execv");
  return 98;
}
CEOF
cc -O1 -Wall -Werror policy.c -o policy || die "cannot compile policy.c"
echo '0,2-3' >nodes3; echo '0-1' >online2; echo '0' >cpu0
N=/sys/devices/system/node
real=$(cat $N/has_cpu 2>/dev/null || cat $N/online 2>/dev/null || echo none)
if [[ $(id -u) == 0 && $real == 0 && -e $N/has_cpu ]] && unshare -m true 2>/dev/null; then
  unshare -m bash -c 'N=/sys/devices/system/node
    mount --bind nodes3 $N/online && mount --bind nodes3 $N/has_cpu &&
    env ZNS_STATS=1 LD_PRELOAD="$0" "$1" live 0 >sys3.out 2>sys3.err &&
    env ZNS_STATS=1 LD_PRELOAD="$0" ./policy 3 "$1" live 0 >pol.out 2>pol.err &&
    env ZNS_STATS=1 LD_PRELOAD="$0" ./policy 2 "$1" live 0 >bind.out 2>bind.err &&
    env ZNS_STATS=1 ZNS_NUMA=0 LD_PRELOAD="$0" "$1" live 0 >off.out 2>off.err &&
    umount $N/online && umount $N/has_cpu &&
    mount --bind online2 $N/online && mount --bind cpu0 $N/has_cpu &&
    env ZNS_STATS=1 LD_PRELOAD="$0" "$1" live 0 >memonly.out 2>memonly.err' "$ZNS_LIB" "$PROG" \
    || die "runs with a node list of 0,2-3 failed: $(cat sys3.err pol.err bind.err off.err memonly.err 2>/dev/null | head -5)"
  # this kernel has one node: its cpuset allows memory of node 0 only, whatever the lists say
  grep -q '^numa: not node-aware on 3 nodes (ids 0 2 3): the process may have memory of one node only (its cpuset.s mems)$' sys3.err \
    || { cat sys3.err; die "nodes 0,2-3 with CPUs, memory of node 0 only: no line naming 3 nodes, their ids and the cpuset"; }
  for f in pol bind; do
    grep -q '^numa: not node-aware on 3 nodes (ids 0 2 3): the memory policy does not place pages where they are first touched$' $f.err \
      || { cat $f.err; die "a policy of interleave or a bind to one node ($f): no line saying the depot is not node-aware"; }
  done
  grep -q '^numa: not node-aware on 3 nodes (ids 0 2 3): ZNS_NUMA=0$' off.err || { cat off.err; die "ZNS_NUMA=0 on 3 nodes: no line saying so"; }
  grep -q '^numa' memonly.err && { cat memonly.err; die "a node of memory only (online 0-1, CPUs on node 0): a numa line"; }
  log "numa: nodes 0,2-3 with CPUs read as 3 (ids said), off for one node's memory (cpuset), an interleave policy, a bind to one node and ZNS_NUMA=0, each said; a node of memory only does not count"
else
  log "numa: the node lists' parsing skipped (needs root, a mount namespace and a one-node kernel with has_cpu)"
fi

# 10. paths that are not kind (a review, 2026-12-06): a FIFO nobody reads (the .jsonl open at
# start hung the program before main; a text file at exit hung its exit), the program's own
# stdout or stderr file (O_TRUNC erased what the program had written there), and a forked child
# without %p (a child's dump at exit took its parent's text or JSON file over; ZNS_STATS=1
# printed a table per subshell)
mkfifo nobody.jsonl nobody.txt
rc=0; timeout 20 env ZNS_STATS="$TMPD/nobody.jsonl" "${PRELOAD[@]}" /bin/true 2>nobody1.err || rc=$?
[[ $rc == 0 ]] || die "ZNS_STATS=a .jsonl FIFO nobody reads: exit $rc (124: the program hung)"
grep -q 'nobody.jsonl: no reader on the FIFO at exit' nobody1.err || { cat nobody1.err; die "a .jsonl FIFO nobody reads: no line saying so"; }
rc=0; timeout 20 env ZNS_STATS="$TMPD/nobody.txt" "${PRELOAD[@]}" /bin/true 2>nobody2.err || rc=$?
[[ $rc == 0 ]] || die "ZNS_STATS=a text FIFO nobody reads: exit $rc (124: the exit hung)"
grep -q 'nobody.txt: no reader on the FIFO at exit' nobody2.err || { cat nobody2.err; die "a text FIFO nobody reads: no line saying so"; }
for dev in stdout stderr; do
  for kind in "" .jsonl; do
    fd=1; [[ $dev == stderr ]] && fd=2
    rc=0; env ZNS_STATS=/dev/$dev$kind "${PRELOAD[@]}" /usr/bin/python3 -c 'import sys
print("precious out"); print("precious err", file=sys.stderr)' >own.out 2>own.err || rc=$?
    [[ $kind == .jsonl ]] && continue   # (/dev/stdout.jsonl is no device: a file in /dev, not made)
    f=own.out; [[ $fd == 2 ]] && f=own.err
    grep -qx "precious ${dev#std}" $f && grep -q 'zns-slab heap statistics' $f ||
      { cat own.out own.err; die "ZNS_STATS=/dev/$dev into a file: the program's own line or the table is missing (emptied)"; }
  done
done
# ... and by a program that closes its stdout before the dump (coreutils, at exit): the file it was
# at start still counts as its output (emptied before: ls's lines gone; stdin closed too, so that
# the dump's descriptor is not number 1 again, which hid it)
env ZNS_STATS="$TMPD/lsout.txt" "${PRELOAD[@]}" ls "$TMPD" >lsout.txt <&- || die "ls with its stdout as ZNS_STATS failed"
grep -qx 'lsout.txt' lsout.txt && grep -q 'zns-slab heap statistics' lsout.txt ||
  { cat lsout.txt; die "ZNS_STATS=the file ls writes its stdout to: ls's lines or the table are missing"; }
# ... but a program started with stdout closed has no output file: the dump, given number 1, was
# taken for it and appended to its file instead of emptying it
echo OLDCONTENT >closed1.txt
env ZNS_STATS="$TMPD/closed1.txt" "${PRELOAD[@]}" /bin/true >&- || die "a program started with stdout closed failed"
grep -q OLDCONTENT closed1.txt && { head -2 closed1.txt; die "ZNS_STATS=FILE, stdout closed at start: the file was appended to, not emptied"; }
# the .jsonl onto the program's own stdout file, by its name
rc=0; env ZNS_STATS="$TMPD/own.jsonl" "${PRELOAD[@]}" /usr/bin/python3 -c 'print("precious out")' >own.jsonl || rc=$?
grep -qx "precious out" own.jsonl && grep -q '"classes"' own.jsonl ||
  { cat own.jsonl; die "ZNS_STATS=PATH.jsonl where PATH is the program's stdout file: its line or the dump is missing"; }
cat >forky.py <<'PYEOF'
import os, sys, time
keep = [bytearray(100) for i in range(1000)]
r, w = os.pipe()
if os.fork() == 0:           # outlives its parent: its dump at exit comes last
    os.close(w)
    os.read(r, 1)            # (the parent's end of file: it has exited)
    time.sleep(0.1)
    sys.exit(0)              # (exit: atexit handlers and the library's dump run in the child)
print(os.getpid())
PYEOF
for f in fk.json fk.txt; do
  # (the child holds stdout open until it exits: $(...) waits for it)
  pid=$(env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/$f" "${PRELOAD[@]}" /usr/bin/python3 forky.py) || die "forky.py ($f) failed"
  grep -Eq "\"pid\": ?$pid[,}]|statistics \(pid $pid\)" $f || { head -3 $f; die "ZNS_STATS=$f: not the parent's (pid $pid) dump: a forked child's took the file over"; }
done
n=$(env ZNS_STATS=1 "${PRELOAD[@]}" bash -c 'for i in 1 2 3; do x=$(echo hi); done' 2>&1 | grep -c 'zns-slab heap statistics')
[[ $n == 1 ]] || die "ZNS_STATS=1 in a shell whose subshells exit: $n tables (expected the shell's one)"
# the main thread gone (pthread_exit) before the dump: /proc/self/statm reads zeros then, and the
# dump said rss_bytes 0
cat >main_exit.c <<'CEOF'
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void *worker(void *a) {
  (void)a;
  usleep(100000);            /* the main thread has gone by now */
  for (int i = 0; i < 20000; i++) memset(malloc(256), 1, 256);
  return NULL;               /* the last thread: the process exits here, dump included */
}
int main(void) {
  pthread_t t;
  pthread_create(&t, NULL, worker, NULL);
  pthread_exit(NULL);
}
CEOF
cc -O1 -Wall -Werror -pthread main_exit.c -o main_exit || die "cannot compile main_exit.c"
env ZNS_STATS="$TMPD/mexit.json" "${PRELOAD[@]}" ./main_exit || die "main_exit failed"
rss=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["totals"]["rss_bytes"])' mexit.json)
[[ $rss -gt 5000000 ]] || die "the dump after the main thread's pthread_exit says rss_bytes $rss (5 MB of blocks live)"
# coreutils close stderr in an atexit handler, before the library's destructor: the table and the
# lines at exit went nowhere (EBADF)
env ZNS_STATS=1 "${PRELOAD[@]}" ls / 2>ls.err >/dev/null || die "ls under ZNS_STATS=1 failed"
grep -q 'zns-slab heap statistics' ls.err || { cat ls.err; die "ZNS_STATS=1 ls: no table on stderr (ls closes it at exit)"; }
# (ZNS_STATS=/dev/stderr is the same: its link led nowhere once fd 2 was closed)
env ZNS_STATS=/dev/stderr "${PRELOAD[@]}" ls / 2>ls.err >/dev/null || die "ls under ZNS_STATS=/dev/stderr failed"
grep -q 'zns-slab heap statistics' ls.err || { cat ls.err; die "ZNS_STATS=/dev/stderr ls: no table on stderr (ls closes it at exit)"; }
# ... and a path takes no copy (a descriptor more failed CPython's test_subprocess): only the
# program's own descriptors and the copy's absence
n=$(env ZNS_STATS="$TMPD/fds.json" "${PRELOAD[@]}" /usr/bin/python3 -c 'import os; print(len([f for f in os.listdir("/proc/self/fd") if int(f) >= 512]))')
[[ $n == 0 ]] || die "ZNS_STATS=PATH.json: the program sees $n descriptors of 512 up (expected none)"
# a relative path is the start directory's, for every form (the text and JSON dumps at exit went
# to the directory the program had chdir'ed to; the .jsonl was already the start's)
mkdir -p sub
for f in rel.txt rel.json rel.jsonl; do
  env ZNS_STATS="$f" "${PRELOAD[@]}" /usr/bin/python3 -c 'import os; os.chdir("sub")' || die "chdir program ($f) failed"
  [[ -s $f && ! -e sub/$f ]] || { ls -R; die "ZNS_STATS=$f (relative) with a chdir: not written in the start directory"; }
done
# ... and from a directory whose path is too long for that (574 bytes): relative as before (it
# said "path too long" and wrote nothing)
long=$TMPD; for i in $(seq 1 9); do long=$long/$(printf 'd%.0s' $(seq 1 60)); done
mkdir -p "$long"
(cd "$long" && env ZNS_STATS=long.txt "${PRELOAD[@]}" /bin/true) 2>long.err || die "a program in a long directory failed"
[[ -s $long/long.txt ]] || { cat long.err; die "ZNS_STATS=long.txt (relative) in a ${#long}-byte directory: not written"; }
# the suffix in any case (heap.JSON was a text table)
env ZNS_STATS="$TMPD/upper.JSON" "${PRELOAD[@]}" /bin/true || die "ZNS_STATS=upper.JSON: the program failed"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' upper.JSON || die "ZNS_STATS=upper.JSON is not JSON"
# a file under a read lease (as Samba or an NFS server hold them): the open waits for the break
# (a non-blocking one gave EWOULDBLOCK and the dump was lost, with a line blaming another process)
cat >lease.c <<'CEOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>
static void on_break(int s) { (void)s; }
int main(int argc, char **argv) {   /* holds a read lease on argv[1], gives it up 0.3 s after the break */
  int fd = open(argv[1], O_RDONLY);
  signal(SIGIO, on_break);
  if (argc < 2 || fd < 0 || fcntl(fd, F_SETLEASE, F_RDLCK) != 0) { perror("lease"); return 1; }
  puts("leased"); fflush(stdout);
  pause(); usleep(300000);
  fcntl(fd, F_SETLEASE, F_UNLCK);
  return 0;
}
CEOF
cc -O1 -Wall -Werror lease.c -o lease || die "cannot compile lease.c"
echo old >leased.txt
./lease "$TMPD/leased.txt" >lease.out 2>lease.err &
lease_pid=$!
for i in $(seq 1 50); do grep -q leased lease.out && break; sleep 0.1; done
if grep -q leased lease.out; then
  env ZNS_STATS="$TMPD/leased.txt" "${PRELOAD[@]}" /bin/true 2>leased.err || die "ZNS_STATS on a leased file: the program failed"
  wait $lease_pid
  grep -q 'zns-slab heap statistics' leased.txt || { cat leased.err; die "ZNS_STATS on a file under a lease: the dump was not written (not waited out)"; }
else
  kill $lease_pid 2>/dev/null; log "leases: cannot take one here ($(cat lease.err)): skipped"
fi
# ... but no copy of a pipe: a program that detaches without forking (0, 1, 2 to /dev/null) kept
# its caller's $(...) waiting for the pipe's end until it exited
cat >detach.c <<'CEOF'
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {   /* argv[1]: a file made as it ends */
  printf("%d\n", (int)getpid()); fflush(stdout);
  int n = open("/dev/null", O_RDWR);
  dup2(n, 0); dup2(n, 1); dup2(n, 2); close(n);
  for (int i = 0; i < 50; i++) free(malloc(100));
  sleep(3);
  close(open(argv[1], O_WRONLY | O_CREAT, 0644));
  return 0;
}
CEOF
cc -O1 -Wall -Werror detach.c -o detach || die "cannot compile detach.c"
rm -f detach.ended
dpid=$(env ZNS_STATS=1 "${PRELOAD[@]}" ./detach "$TMPD/detach.ended" 2>&1 &)
[[ ! -e detach.ended ]] || die "ZNS_STATS=1, stderr a pipe: \$(...) waited for a detached program's end (a copy of the pipe held)"
kill "$dpid" 2>/dev/null || true
log "a FIFO nobody reads (.jsonl, text): no hang, a line each; /dev/stdout, /dev/stderr and the stdout file by name keep the program's output; forked children without %p leave the file to their parent"

if [[ ${#FAILED_CHECKS[@]} -gt 0 ]]; then
  die "${#FAILED_CHECKS[@]} check(s) failed: $(printf '%s; ' "${FAILED_CHECKS[@]}")
  scratch files: PROGTEST_KEEP_TMP=1 bash $0 keeps $TMPD"
fi
log PASS
