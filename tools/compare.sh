#!/usr/bin/env bash
# compare.sh: run a workload under glibc malloc and under ZNS-Slab, interleaved, and compare.
#
# Usage: tools/compare.sh WORKLOAD [ARGS...]
#
# Runs WORKLOAD (with ARGS) ROUNDS times under each allocator, interleaved (glibc, zns, glibc, zns,
# ...), measures wall time, user+sys CPU time and peak RSS of each run, checks that every run
# exited 0 and printed the same "checksum: ..." line, and prints a table of medians with the
# ratio to glibc, plus a one-line verdict.
#
# Environment:
#   ZNS_LIB=PATH              the ZNS-Slab library (default: build/libzns_slab.so in this repo)
#   ZNS_COMPARE_ROUNDS=N      rounds per allocator (default 3)
#   ZNS_COMPARE_PEERS=1       also run jemalloc, mimalloc and tcmalloc when their .so files exist
#   ZNS_COMPARE_KEEP=1        keep the per-run logs (always kept when something fails)
#   ZNS_COMPARE_TIMER=python  measure with the python3 wrapper even when /usr/bin/time exists
#
# Exit status: 0 all runs ok and checksums equal; 1 a run failed or the checksums differ;
#              2 bad usage or the library is missing.
set -uo pipefail

prog=${0##*/}
usage() {
    sed -n '2,/^set -uo/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"
}
die_usage() { echo "$prog: $*" >&2; echo "usage: $prog WORKLOAD [ARGS...]   ($prog --help for more)" >&2; exit 2; }

case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") die_usage "missing WORKLOAD" ;;
    --) shift; [ $# -ge 1 ] || die_usage "missing WORKLOAD" ;;
esac

ROOT=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
LIB=${ZNS_LIB:-$ROOT/build/libzns_slab.so}
ROUNDS=${ZNS_COMPARE_ROUNDS:-3}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die_usage "ZNS_COMPARE_ROUNDS must be a positive integer (got '$ROUNDS')"

WORKLOAD=$1; shift
if [[ "$WORKLOAD" != */* ]] && ! [ -e "$WORKLOAD" ]; then
    resolved=$(command -v -- "$WORKLOAD" 2>/dev/null) || die_usage "workload '$WORKLOAD' not found"
    WORKLOAD=$resolved
fi
[ -f "$WORKLOAD" ] || die_usage "workload '$WORKLOAD' does not exist (build it first, e.g. 'make build/bench/workload')"
[ -x "$WORKLOAD" ] || die_usage "workload '$WORKLOAD' is not executable"
WORKLOAD=$(readlink -f -- "$WORKLOAD")

if ! [ -f "$LIB" ]; then
    echo "$prog: the ZNS-Slab library is not built: $LIB does not exist." >&2
    echo "$prog: build it first: (cd $ROOT && make)   [or point ZNS_LIB at a built copy]" >&2
    exit 2
fi
LIB=$(readlink -f -- "$LIB")
command -v python3 >/dev/null || { echo "$prog: python3 is needed for the summary" >&2; exit 2; }

# Allocators: name and preload library ("" = none).  glibc first: it is the baseline.
names=(glibc zns); libs=("" "$LIB")
if [ "${ZNS_COMPARE_PEERS:-0}" = 1 ]; then
    for peer in jemalloc:/usr/lib/x86_64-linux-gnu/libjemalloc.so.2:libjemalloc2 \
                mimalloc:/usr/lib/x86_64-linux-gnu/libmimalloc.so.2:libmimalloc2.0 \
                tcmalloc:/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4:libtcmalloc-minimal4; do
        IFS=: read -r pname plib ppkg <<<"$peer"
        if [ -f "$plib" ]; then names+=("$pname"); libs+=("$plib")
        else echo "$prog: $pname not installed ($plib missing; apt-get install $ppkg), skipped" >&2; fi
    done
fi

TIMER=gnu
[ -x /usr/bin/time ] && [ "${ZNS_COMPARE_TIMER:-}" != python ] || TIMER=python

LOGDIR=$(mktemp -d "${TMPDIR:-/tmp}/zns-compare.XXXXXX")
RESULTS=$LOGDIR/results.tsv
: >"$RESULTS"
keep_logs=${ZNS_COMPARE_KEEP:-0}
cleanup() { if [ "$keep_logs" = 1 ]; then echo "$prog: logs kept in $LOGDIR" >&2; else rm -rf "$LOGDIR"; fi; }
trap cleanup EXIT
trap 'keep_logs=1; echo; echo "$prog: interrupted" >&2; exit 130' INT TERM

# A tiny timer for machines without GNU time: fork, exec, wait4; writes "ZNSTIME wall user sys maxrss_kb".
# (Linux carries the pre-exec peak over exec, so its peak RSS has a floor of python's own, ~10 MiB.)
PYTIMER='
import os, sys, time
out, argv = sys.argv[1], sys.argv[2:]
t0 = time.monotonic()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        sys.stderr.write("%s: %s\n" % (argv[0], e)); os._exit(127)
_, status, ru = os.wait4(pid, 0)
wall = time.monotonic() - t0
with open(out, "w") as f:
    f.write("ZNSTIME %.3f %.3f %.3f %d\n" % (wall, ru.ru_utime, ru.ru_stime, ru.ru_maxrss))
sys.exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
'

signame() { local n=$1; kill -l "$n" 2>/dev/null | sed 's/^/SIG/'; }

# run_one NAME LIB ROUND: one measured run; appends a line to $RESULTS, or reports and exits 1.
run_one() {
    local name=$1 lib=$2 round=$3
    shift 3
    local base="$LOGDIR/$name.$round" rc
    local -a envcmd
    if [ -n "$lib" ]; then envcmd=(env LD_PRELOAD="$lib"); else envcmd=(env -u LD_PRELOAD); fi
    if [ "$TIMER" = gnu ]; then
        /usr/bin/time -f "ZNSTIME %e %U %S %M" -o "$base.time" \
            "${envcmd[@]}" "$WORKLOAD" "$@" >"$base.out" 2>"$base.err" </dev/null
        rc=$?
    else
        python3 -c "$PYTIMER" "$base.time" "${envcmd[@]}" "$WORKLOAD" "$@" >"$base.out" 2>"$base.err" </dev/null
        rc=$?
    fi
    local t; t=$(grep '^ZNSTIME ' "$base.time" 2>/dev/null | tail -n1)
    local sum; sum=$(sed -n 's/^checksum: *\([0-9a-fA-Fx]*\).*/\1/p' "$base.out" | tail -n1)
    local repro="cd $PWD && ${lib:+LD_PRELOAD=$lib }$WORKLOAD${*:+ $*}"
    local problem=""
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -gt 128 ] && [ -n "$(signame $((rc - 128)))" ]; then
            problem="was killed by signal $((rc - 128)) ($(signame $((rc - 128))))"
        else
            problem="exited with status $rc"
        fi
    elif [ -n "$lib" ] && grep -q 'cannot be preloaded' "$base.err"; then
        problem="the dynamic loader refused to preload $lib (the run used glibc malloc)"
    elif [ -z "$sum" ]; then
        problem="printed no 'checksum:' line"
    elif [ -z "$t" ]; then
        problem="no timing recorded"
    fi
    if [ -n "$problem" ]; then
        keep_logs=1
        echo >&2
        if [ "$name" != glibc ] && [ "$name" != zns ]; then
            # a peer is only for reference: note it, drop it from the remaining rounds, go on
            echo "$prog: peer $name failed in round $round (the workload $problem); dropped from the comparison" >&2
            echo "  repro: $repro" >&2
            tail -n 3 "$base.err" | sed 's/^/  | /' >&2
            peer_failed[$name]="round $round: $problem"
            return 1
        fi
        echo "$prog: FAILED: $name, round $round: the workload $problem" >&2
        echo "  repro: $repro" >&2
        echo "  --- last lines of stderr ($base.err):" >&2
        tail -n 15 "$base.err" | sed 's/^/  | /' >&2
        echo "  --- last lines of stdout ($base.out):" >&2
        tail -n 8 "$base.out" | sed 's/^/  | /' >&2
        exit 1
    fi
    read -r _ wall user sys rss <<<"$t"
    # phase timings: "phase NAME  SECONDS s ..." lines, kept as name=seconds pairs
    local phases; phases=$(awk '$1 == "phase" && $4 == "s" { printf "%s%s=%s", sep, $2, $3; sep="," }' "$base.out")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$wall" "$user" "$sys" "$rss" "$sum" "$phases" >>"$RESULTS"
    printf '  round %d/%d %-9s wall %7.2f s  user+sys %7.2f s  peak RSS %8.1f MiB  checksum %s\n' \
        "$round" "$ROUNDS" "$name" "$wall" "$(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')" \
        "$(awk -v k="$rss" 'BEGIN{print k/1024}')" "$sum" >&2
}

echo "compare: $WORKLOAD${*:+ $*}" >&2
echo "compare: ${#names[@]} allocators x $ROUNDS rounds, interleaved; zns = $LIB; timer: $TIMER" >&2
declare -A peer_failed=()
for ((r = 1; r <= ROUNDS; r++)); do
    for i in "${!names[@]}"; do
        [ -n "${peer_failed[${names[$i]}]:-}" ] && continue
        run_one "${names[$i]}" "${libs[$i]}" "$r" "$@"
    done
done
# peers that failed: their earlier rounds are left out of the table
for n in "${!peer_failed[@]}"; do
    awk -F'\t' -v n="$n" '$1 != n' "$RESULTS" >"$RESULTS.tmp" && mv "$RESULTS.tmp" "$RESULTS"
    printf '%s\t%s\n' "$n" "${peer_failed[$n]}" >>"$LOGDIR/peer_failures.tsv"
done

summary_rc=0
python3 - "$RESULTS" "$LOGDIR/peer_failures.tsv" <<'PY' || summary_rc=$?
import sys, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
order, runs = [], {}
for name, rnd, wall, user, sys_, rss, csum, phases in rows:
    if name not in runs:
        order.append(name); runs[name] = []
    ph = dict(p.split("=", 1) for p in phases.split(",") if "=" in p)
    runs[name].append(dict(wall=float(wall), cpu=float(user) + float(sys_), rss=int(rss) / 1024.0,
                           csum=csum, phases={k: float(v) for k, v in ph.items()}))

med = lambda xs: statistics.median(xs)
stats = {n: {k: med([r[k] for r in runs[n]]) for k in ("wall", "cpu", "rss")} for n in order}
spread = {n: (min(r["wall"] for r in runs[n]), max(r["wall"] for r in runs[n])) for n in order}
base = stats["glibc"]

sums = sorted({r["csum"] for n in order for r in runs[n]})
nruns = sum(len(runs[n]) for n in order)

print()
print("%-10s %12s %14s %15s   %-28s" % ("allocator", "median wall", "median usr+sys", "median peak RSS", "ratio to glibc (wall/cpu/rss)"))
print("-" * 86)
for n in order:
    s = stats[n]
    ratio = "(baseline)" if n == "glibc" else "%.3f / %.3f / %.3f" % (s["wall"] / base["wall"], s["cpu"] / base["cpu"], s["rss"] / base["rss"])
    print("%-10s %10.3f s %12.3f s %11.1f MiB   %-28s" % (n, s["wall"], s["cpu"], s["rss"], ratio))
try:
    for line in open(sys.argv[2]):
        n, why = line.rstrip("\n").split("\t", 1)
        print("%-10s FAILED (%s); not compared" % (n, why))
except FileNotFoundError:
    pass

phase_names = []
for n in order:
    for r in runs[n]:
        for p in r["phases"]:
            if p not in phase_names:
                phase_names.append(p)
if phase_names:
    print()
    print("median phase times (s):")
    print("%-10s " % "allocator" + " ".join("%10s" % p for p in phase_names))
    for n in order:
        vals = []
        for p in phase_names:
            xs = [r["phases"][p] for r in runs[n] if p in r["phases"]]
            vals.append("%10.3f" % med(xs) if xs else "%10s" % "-")
        print("%-10s " % n + " ".join(vals))
    if "zns" in order:
        vals = []
        for p in phase_names:
            a = [r["phases"][p] for r in runs["zns"] if p in r["phases"]]
            b = [r["phases"][p] for r in runs["glibc"] if p in r["phases"]]
            vals.append("%10.3f" % (med(a) / med(b)) if a and b and med(b) > 0 else "%10s" % "-")
        print("%-10s " % "zns/glibc" + " ".join(vals))

print()
if len(sums) != 1:
    print("CHECKSUM MISMATCH across runs:")
    for n in order:
        print("  %-10s %s" % (n, " ".join(r["csum"] for r in runs[n])))
    print("verdict: FAIL - the workload's checksum differs between runs/allocators (%d distinct values)" % len(sums))
    sys.exit(1)

def describe(ratio, lo_word, hi_word, noise):
    if abs(ratio - 1.0) <= noise:
        return "on par with glibc (%.2fx)" % ratio
    if ratio < 1.0:
        return "%.2fx glibc, %.0f%% %s" % (ratio, (1 - ratio) * 100, lo_word)
    return "%.2fx glibc, %.0f%% %s" % (ratio, (ratio - 1) * 100, hi_word)

z = stats["zns"]
# noise band for wall time: the relative spread of the glibc runs, at least 3%
lo, hi = spread["glibc"]
noise = max(0.03, (hi - lo) / base["wall"] if base["wall"] > 0 else 0.03)
print("verdict: checksums match (%d runs, %s); ZNS-Slab wall %s, CPU %s, peak RSS %s"
      % (nruns, sums[0],
         describe(z["wall"] / base["wall"], "faster", "slower", noise),
         describe(z["cpu"] / base["cpu"], "less", "more", 0.03),
         describe(z["rss"] / base["rss"], "smaller", "larger", 0.02)))
PY
if [ "$summary_rc" -ne 0 ]; then keep_logs=1; exit 1; fi
exit 0
