#!/usr/bin/env bash
# The page faults a fork costs with the library loaded, against the same program without it (a
# child's first store into a page copies it, ~11 us on this VM: DESIGN "fork", its cost).  The
# library may add at most 4 per fork in the parent and 8 in the child (at 2026-12-06: 2 and 5;
# before, with its locks, notes and handlers spread over many pages: 5 and 16).  Counts, not
# times: they do not move with the machine's load.  And the mappings it adds, which a fork copies
# and an exit tears down: at most 40 (at 2026-12-06: 25; before, with a committed part and a
# reserved rest per bitmap pool and half of the metadata: ~90; a fork took as long with either (DESIGN "fork"),
# but each is a VMA the kernel copies, and a commit step an mprotect per part).
set -euo pipefail
cd "$(dirname "$0")/../.."
LIB=${ZNS_LIB:-$PWD/build/libzns_slab.so}
# (the library's defaults: a tier or a statistics series in the environment has a child do more)
for v in $(compgen -e | grep '^ZNS_' || true); do unset "$v"; done
BIN=build/tests/perf/fork_faults
mkdir -p build/tests/perf
cc -O2 -o "$BIN" tests/perf/fork_faults.c
read -r p0 c0 m0 < <("$BIN" 200)
read -r p1 c1 m1 < <(LD_PRELOAD=$LIB "$BIN" 200)
echo "faults per fork: parent $p0 -> $p1, child $c0 -> $c1; mappings $m0 -> $m1 (without -> with the library)"
awk -v p0="$p0" -v p1="$p1" -v c0="$c0" -v c1="$c1" -v m0="$m0" -v m1="$m1" 'BEGIN {
  bad = 0
  if (p1 - p0 > 4) { printf "the parent takes %.1f more page faults per fork with the library (at most 4)\n", p1 - p0; bad = 1 }
  if (c1 - c0 > 8) { printf "the child takes %.1f more page faults per fork with the library (at most 8)\n", c1 - c0; bad = 1 }
  if (bad) print "a fork writes or reads more of the library'\''s pages than before: see DESIGN \"fork\", its cost (ForkPage, ZNS_FORK_CODE)"
  if (m1 - m0 > 40) { printf "the library adds %d mappings (at most 40): see DESIGN \"The region and ownership\" (the bitmap pools in chunks)\n", m1 - m0; bad = 1 }
  exit bad }'
