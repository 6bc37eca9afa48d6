# Shared helpers for tests/programs/*.sh (sourced, not run; the .bash suffix keeps run.sh from
# picking it up as a test).
#
# Contract with tests/run.sh: ZNS_LIB=/abs/path/libzns_slab.so is set; exit 0 = pass.
# Developer escape hatch (never used by run.sh): ZNS_PLAIN_ONLY=1 runs only the plain (unshimmed)
# half of each test, for working on the workloads while the library does not build.
set -euo pipefail

PROG_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROG_LIB=$PROG_DIR/lib
# The workloads use Debian's interpreter (a pyenv shim on PATH could be anything); so do the
# drivers, which are never run under the shim.
PY=/usr/bin/python3

log()  { printf '[%s] %s\n' "${TEST_NAME:-programs}" "$*"; }
die()  { printf '[%s] FAIL: %s\n' "${TEST_NAME:-programs}" "$*" >&2; exit 1; }

# Make a private scratch directory, removed on exit (unless ZNS_KEEP_TMP=1).  Sets $TMPD.
# Tests that need their own EXIT work call zns_cleanup_tmp from their trap.
zns_make_tmp() {
  TMPD=$(mktemp -d "${TMPDIR:-/tmp}/zns-${TEST_NAME:-prog}.XXXXXX")
  trap zns_cleanup_tmp EXIT
}
zns_cleanup_tmp() {
  if [[ "${ZNS_KEEP_TMP:-0}" == 1 ]]; then log "kept scratch dir $TMPD"; return; fi
  [[ -n "${TMPD:-}" && -d "$TMPD" ]] && rm -rf -- "$TMPD"
  return 0
}

# Decide whether the shim half runs.  Sets SHIM=1/0.
zns_require_lib() {
  [[ -x "$PY" ]] || die "$PY missing (run: make deps-test)"
  if [[ "${ZNS_PLAIN_ONLY:-0}" == 1 ]]; then
    SHIM=0; log "ZNS_PLAIN_ONLY=1: running the plain half only (NOT a real pass)"; return
  fi
  [[ -n "${ZNS_LIB:-}" ]] || die "ZNS_LIB is not set (tests/run.sh sets it; or ZNS_PLAIN_ONLY=1)"
  [[ "$ZNS_LIB" == /* ]] || ZNS_LIB=$PWD/$ZNS_LIB
  [[ -f "$ZNS_LIB" ]] || die "ZNS_LIB=$ZNS_LIB does not exist (run make)"
  SHIM=1
}

# zns_env_shim STATS_PATTERN : prints the env assignments that put a program under the shim.
# Use as: env $(zns_env_shim "$TMPD/x.%p.json") prog ...   (paths have no spaces: mktemp -d)
zns_env_shim() { printf 'LD_PRELOAD=%s ZNS_STATS=%s' "$ZNS_LIB" "$1"; }

# zns_check_stats MIN_ALLOCATED EXPECTED_FILES LABEL FILE...
#   Every file must be a stats JSON document with totals.allocated > MIN_ALLOCATED; at least
#   EXPECTED_FILES of them must exist.
zns_check_stats() {
  local min=$1 nfiles=$2 label=$3; shift 3
  "$PY" "$PROG_LIB/check_stats.py" --min-allocated "$min" --min-files "$nfiles" \
        --label "$label" -- "$@"
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
