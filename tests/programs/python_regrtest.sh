#!/usr/bin/env bash
# CPython's own regression tests under the shim, with PYTHONMALLOC=malloc (every object a malloc
# call): 35 modules that allocate hard or exercise what an allocator must survive (threads,
# fork and subprocess, signals, ctypes, mmap, weakrefs and the GC, pickling, big containers).
# Debian ships them in libpython3.X-testsuite (make deps-test installs it).
# Checks:
#   1. `python3 -m test` exits 0 under LD_PRELOAD=$ZNS_LIB (every listed module passes);
#   2. the shim really served the interpreters: of the stats documents (ZNS_STATS with %p, one per
#      process, children such as /bin/sh included), at least 3 report totals.allocated > 1M (the
#      parent and regrtest's two workers make tens of millions of small allocations).
# Checked by hand on 2026-12-03: the whole suite under the shim with PYTHONMALLOC=malloc, 400
# modules pass and 25 are skipped (resources, other platforms); left out were 7 that fail or hang
# without the shim too in this VM (test_socket's vsock cases, test_cmd_line, test_compileall,
# test_cppext, test_ensurepip, test_idle; test_sqlite3 is not in Debian's package).
# Again on 2026-12-05 (git d8a3dba, pyenv's 3.11.7, `-j2`, all 460 modules): under the shim only
# modules that fail or hang without it too (test_cmd_line, test_compileall, test_threading,
# test_regrtest, test__xxsubinterpreters, test_interpreters, test_socket's vsock case); then under
# ZNS_TIER=uffd with ZNS_TIER_COLD_MS=200 every fork of test_os and test_logging hung (glibc's nss
# state in an armed slab: tests/tier nss-fork); with that fixed (3319671) 420 pass there, and
# only test_subprocess's test_pass_fds_redirected fails (it sees the tier's two descriptors);
# under ZNS_SECURE=1 all 421 pass.
TEST_NAME=python_regrtest
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
zns_make_tmp

VER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ -f /usr/lib/python$VER/test/regrtest.py ]] ||
  die "CPython's test suite is missing (apt-get install libpython$VER-testsuite; make deps-test does)"

MODULES=(test_dict test_set test_list test_tuple test_bytes test_unicode test_json test_pickle
         test_re test_gc test_weakref test_threading test_thread test_threading_local test_queue
         test_subprocess test_signal test_mmap test_ctypes test_decimal test_sort test_collections
         test_itertools test_functools test_os test_fork1 test_struct test_array test_deque
         test_heapq test_bisect test_hashlib test_zlib test_csv test_xml_etree)

if [[ $SHIM == 0 ]]; then
  log "plain-only mode: running the modules without the shim"
  cd "$TMPD" && PYTHONMALLOC=malloc timeout 600 "$PY" -m test -j2 --timeout 300 "${MODULES[@]}"
  exit
fi

export PYTHONMALLOC=malloc PYTHONDONTWRITEBYTECODE=1 LC_ALL=C.UTF-8
unset PYTHONPATH PYTHONHOME PYTHONSTARTUP
cd "$TMPD"
log "LD_PRELOAD=$ZNS_LIB PYTHONMALLOC=malloc $PY -m test -j2 ${#MODULES[@]} modules"
t0=$SECONDS
rc=0
timeout 600 env LD_PRELOAD="$ZNS_LIB" ZNS_STATS="$TMPD/stats.%p.json" \
  "$PY" -m test -j2 --timeout 300 "${MODULES[@]}" >out.txt 2>&1 || rc=$?
log "took $((SECONDS - t0))s, exit $rc"
if [[ $rc != 0 ]]; then
  grep -E "failed|crashed|Timeout|Fatal|zns-slab" out.txt | head -n 30 || true
  tail -n 20 out.txt
  die "CPython's tests failed under the shim (exit $rc; 124 = timeout). Repro:
  cd /tmp && PYTHONMALLOC=malloc LD_PRELOAD=$ZNS_LIB $PY -m test -v <module>"
fi
grep -q "Tests result: SUCCESS" out.txt || { tail -n 20 out.txt; die "regrtest did not report SUCCESS"; }
grep -q "^${#MODULES[@]} tests OK" out.txt || grep -q "All ${#MODULES[@]} tests OK" out.txt ||
  { grep -E "tests OK|skipped" out.txt; die "not all ${#MODULES[@]} modules ran and passed"; }
big=$("$PY" - "$TMPD" <<'PYEOF'
import glob, json, sys
n = 0
for f in glob.glob(sys.argv[1] + "/stats.*.json"):
    try:
        n += json.load(open(f))["totals"]["allocated"] > 1000000
    except Exception as e:
        print("bad stats document %s: %s" % (f, e), file=sys.stderr)
        sys.exit(1)
print(n)
PYEOF
) || die "a stats document is not valid JSON with totals.allocated"
log "processes with more than 1M allocations from the shim: $big"
[[ $big -ge 3 ]] || die "fewer than 3 interpreters were served by the shim (ZNS_STATS documents with > 1M allocations: $big)"
log PASS
