#!/usr/bin/env bash
# Pins the instruction count of the malloc+free fast path (callgrind is deterministic): counts the
# instructions of N pairs minus 0 pairs at a few sizes and compares with tests/perf/fastpath.pin.
# A change that grows the fast path fails here.  To change the pin on purpose:
#     tests/perf/fastpath.sh --update     (and say why in the commit message)
set -euo pipefail
cd "$(dirname "$0")/../.."
LIB=${ZNS_LIB:-$PWD/build/libzns_slab.so}
PIN=tests/perf/fastpath.pin
BIN=build/tests/perf/fastpath_loop
mkdir -p build/tests/perf
cc -O2 -o "$BIN" tests/perf/fastpath_loop.c
command -v valgrind >/dev/null || { echo "valgrind is missing (make deps-test installs it)"; exit 1; }
N=200000
count() {   # size pairs -> instructions
  local out; out=$(mktemp)
  LD_PRELOAD=$LIB valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN" "$2" "$1" >/dev/null 2>&1
  local ir; ir=$(grep -E '^(summary|totals):' "$out" | head -1 | awk '{print $2}')
  rm -f "$out"; echo "$ir"
}
declare -A measured
for size in 16 64 256 1024 4096; do
  a=$(count "$size" 0); b=$(count "$size" $N)
  measured[$size]=$(( (b - a + N / 2) / N ))
  echo "size $size: ${measured[$size]} instructions per malloc+free pair"
done
if [[ "${1:-}" == "--update" ]]; then
  { echo "# size instructions-per-pair (tests/perf/fastpath.sh --update rewrites this)";
    for size in 16 64 256 1024 4096; do echo "$size ${measured[$size]}"; done; } > "$PIN"
  echo "pin updated: $PIN"; exit 0
fi
[ -f "$PIN" ] || { echo "no pin file $PIN: run tests/perf/fastpath.sh --update"; exit 1; }
fail=0
while read -r size pinned; do
  [[ "$size" == \#* || -z "$size" ]] && continue
  got=${measured[$size]:-}
  # 2 instructions of slack: alignment of the loop and code layout may move one or two.
  if [ -z "$got" ] || [ "$got" -gt $((pinned + 2)) ]; then
    echo "FAIL size $size: $got instructions per pair, pinned at $pinned."
    echo "     The malloc/free fast path grew. If that is intended, run tests/perf/fastpath.sh --update"
    echo "     and say why in the commit message."
    fail=1
  elif [ "$got" -lt $((pinned - 2)) ]; then
    echo "note: size $size got faster ($got < $pinned): tighten the pin with --update"
  fi
done < "$PIN"
exit $fail
