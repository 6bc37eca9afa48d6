# Shared helpers for tests/programs/*.sh (sourced, not run; the .bash suffix keeps run.sh from
# picking it up as a test).
#
# Contract with tests/run.sh: ZNS_LIB=/abs/path/libzns_slab.so is set; exit 0 = pass.
# Developer escape hatch (never used by run.sh): PROGTEST_PLAIN_ONLY=1 runs only the plain (unshimmed)
# half of each test, for working on the workloads while the library does not build.
set -euo pipefail

PROG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG_LIB=$PROG_DIR/lib
# The workloads use Debian's interpreter (a pyenv shim on PATH could be anything); so do the
# drivers, which are never run under the shim.
PY=/usr/bin/python3
# No test reads the caller's stdin (CI has none); programs that want input get it explicitly.
exec </dev/null

log()  { printf '[%s] %s\n' "${TEST_NAME:-programs}" "$*"; }
die()  { printf '[%s] FAIL: %s\n' "${TEST_NAME:-programs}" "$*" >&2; exit 1; }

# Make a private scratch directory, removed on exit (unless PROGTEST_KEEP_TMP=1).  Sets $TMPD.
# Tests that need their own EXIT work call zns_cleanup_tmp from their trap.
zns_make_tmp() {
  TMPD=$(mktemp -d "${TMPDIR:-/tmp}/zns-${TEST_NAME:-prog}.XXXXXX")
  trap zns_cleanup_tmp EXIT
}
zns_cleanup_tmp() {
  if [[ "${PROGTEST_KEEP_TMP:-0}" == 1 ]]; then log "kept scratch dir $TMPD"; return; fi
  [[ -n "${TMPD:-}" && -d "$TMPD" ]] && rm -rf -- "$TMPD"
  return 0
}

# Decide whether the shim half runs.  Sets SHIM=1/0.
zns_require_lib() {
  [[ -x "$PY" ]] || die "$PY missing (run: make deps-test)"
  if [[ "${PROGTEST_PLAIN_ONLY:-0}" == 1 ]]; then
    SHIM=0; log "PROGTEST_PLAIN_ONLY=1: running the plain half only (NOT a real pass)"; return
  fi
  [[ -n "${ZNS_LIB:-}" ]] || die "ZNS_LIB is not set (tests/run.sh sets it; or PROGTEST_PLAIN_ONLY=1)"
  [[ "$ZNS_LIB" == /* ]] || ZNS_LIB=$PWD/$ZNS_LIB
  [[ -f "$ZNS_LIB" ]] || die "ZNS_LIB=$ZNS_LIB does not exist (run make)"
  SHIM=1
}

# A plain (unshimmed) reference run does not depend on the library or its mode, and tests/run.sh
# runs some of these scripts four times (plain settings, ZNS_SECURE, two tiers).  With
# PROGTEST_PLAIN_CACHE set (run.sh sets it to a directory it empties first), the files of the first
# plain run are kept under a key, and later runs with the same key reuse them.
# zns_plain_restore KEY FILE...: 0 and the files copied into the cwd when KEY is cached.
# zns_plain_save KEY FILE...: keep the files (after a plain run that passed its checks).
zns_plain_key() { printf '%s' "$*" | sha256sum | cut -c1-16; }
zns_plain_restore() {
  local d=${PROGTEST_PLAIN_CACHE:-}/$1 f; shift
  [[ -n "${PROGTEST_PLAIN_CACHE:-}" && -f "$d/.complete" ]] || return 1
  for f in "$@"; do cp -- "$d/$f" "$f" || return 1; done
}
zns_plain_save() {
  local d=${PROGTEST_PLAIN_CACHE:-}/$1 f; shift
  [[ -n "${PROGTEST_PLAIN_CACHE:-}" ]] || return 0
  mkdir -p "$d" && for f in "$@"; do cp -- "$f" "$d/$f"; done && touch "$d/.complete"
}

# zns_check_stats MIN_ALLOCATED EXPECTED_FILES LABEL FILE...
#   Every file must be a stats JSON document with totals.allocated > MIN_ALLOCATED; at least
#   EXPECTED_FILES of them must exist.
zns_check_stats() {
  local min=$1 nfiles=$2 label=$3; shift 3
  "$PY" "$PROG_LIB/check_stats.py" --min-allocated "$min" --min-files "$nfiles" \
        --label "$label" -- "$@"
}

# zns_check_tier LABEL FILE...
#   Under ZNS_TIER (uffd or madvise): at least one of the stats JSON documents shows slabs that went
#   out to the tier and came back, and none shows an eviction error.  Nothing to check otherwise.
zns_check_tier() {
  local label=$1; shift
  [[ -n "${ZNS_TIER:-}" && "${ZNS_TIER}" != off ]] || return 0
  "$PY" - "$@" <<'PYEOF' || die "$label: ZNS_TIER=$ZNS_TIER: no slab went out to the tier and back, or an eviction failed"
import json, sys
ok, errors = False, 0
for f in sys.argv[1:]:
    t = json.load(open(f))["tier"]
    if t["mode"] == "off" and t["slabs_out"] == 0:
        continue   # a forked child whose own tier never started (ZNS_TIER_CHILD_MS)
    print("    tier: " + ", ".join(f"{k}={t[k]}" for k in
          ("mode", "slabs_out", "slabs_in", "thrash", "pressure", "evict_errors")))
    ok |= t["slabs_out"] > 0 and t["slabs_in"] > 0
    errors += t["evict_errors"]
sys.exit(0 if ok and errors == 0 else 1)
PYEOF
}

# Compare two output files; on mismatch print a diff and fail.
zns_same_output() {   # plain shim label
  if ! cmp -s "$1" "$2"; then
    log "output differs between plain run ($1) and shim run ($2):"
    diff -u "$1" "$2" | head -n 40 || true
    die "$3: output under the shim differs from the plain run"
  fi
  log "$3: output identical with and without the shim ($(wc -l <"$1") lines)"
}

# zns_check_bindings LABEL PROGRAM [ARGS...]
#   Runs PROGRAM ARGS under the shim with LD_DEBUG=bindings and checks that every object's
#   references to the pointer-handling malloc family bound to libzns_slab.so (glibc's manual:
#   a replacement must provide malloc/free/calloc/realloc and should provide aligned_alloc,
#   malloc_usable_size, memalign, posix_memalign, pvalloc, valloc).  Anything else (e.g.
#   jemalloc's mallctl/nallocx) is listed for information.  Best on BIND_NOW binaries or a run
#   that calls the functions; prints what it saw.
zns_check_bindings() {
  local label=$1; shift
  local out="$TMPD/ldbind.$label"
  rm -f "$out".*
  timeout 30 env LD_DEBUG=bindings LD_DEBUG_OUTPUT="$out" LD_PRELOAD="$ZNS_LIB" "$@" \
    >/dev/null 2>&1 || true
  ls "$out".* >/dev/null 2>&1 || die "$label: LD_DEBUG produced no output for: $*"
  local syms='malloc|free|calloc|realloc|malloc_usable_size|posix_memalign|aligned_alloc|memalign|valloc|pvalloc'
  local other='reallocarray|cfree|malloc_trim|mallopt|mallinfo|mallinfo2|malloc_info|malloc_stats|mallctl|mallctlnametomib|mallctlbymib|nallocx|mallocx|rallocx|xallocx|sallocx|dallocx|sdallocx|malloc_stats_print|je_[a-z_]*'
  local me bad info n_ok
  me=$(basename "$ZNS_LIB" | sed 's/[.[\*^$]/\\&/g')   # as LD_DEBUG prints it: the preload path
  bad=$(grep -h -E "normal symbol \`($syms)'" "$out".* | grep -v -E "to [^ ]*/$me \[" \
        | grep -v -E "binding file [^ ]*/$me \[" | sed 's/^ *[0-9]*:[[:space:]]*//' | sort -u || true)
  info=$(grep -h -E "normal symbol \`($other)'" "$out".* \
         | grep -v -E 'binding file [^ ]*libjemalloc[^ ]* \[[0-9]+\] to [^ ]*libjemalloc' \
         | sed 's/^ *[0-9]*:[[:space:]]*//' | sort -u || true)
  n_ok=$(grep -h -E "normal symbol \`($syms)'" "$out".* | grep -c -E "to [^ ]*/$me \[" || true)
  log "$label: $n_ok malloc-family bindings resolved to $ZNS_LIB"
  if [[ -n "$info" ]]; then
    log "$label: other allocator symbols (information):"; sed 's/^/    /' <<<"$info"
  fi
  if [[ -n "$bad" ]]; then
    log "$label: malloc-family symbols NOT bound to $ZNS_LIB:"; sed 's/^/    /' <<<"$bad"
    die "$label: pointers from the shim would reach another allocator (see above). Repro:
  LD_DEBUG=bindings LD_PRELOAD=$ZNS_LIB $* 2>&1 | grep -E 'normal symbol .($syms).'"
  fi
  [[ $n_ok -gt 0 ]] || die "$label: no malloc-family symbol bound to $ZNS_LIB"
}
