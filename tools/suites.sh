#!/usr/bin/env bash
# The real test suites of redis and SQLite, under the shim: by hand, not part of `make test` (a
# redis run takes 10-20 minutes on 2 cores, SQLite's "veryquick" set 5-10; both download source).
#
#   tools/suites.sh redis|sqlite [default|secure|uffd|madvise]
#
# Fetches the source of the redis-server / sqlite3 that Debian installed here (the .orig tarball
# from deb.debian.org: the same release), builds redis with MALLOC=libc (so that its malloc is the
# shim's, not its bundled jemalloc) or SQLite's `testfixture`, and runs the project's own suite
# (`./runtest`; `testfixture test/veryquick.test`) with a private copy of build/libzns_slab.so
# preloaded into every process, in the mode given:
#   default  LD_PRELOAD only
#   secure   ZNS_SECURE=1
#   uffd     ZNS_TIER=uffd with a 200 ms cold window (slabs go out and back while the suite runs)
#   madvise  ZNS_TIER=madvise, the same
# Every process writes its statistics (ZNS_STATS=DIR/%p.json) and the script sums what the tier
# moved, so a run that never paged anything out says so.  Work files: $SUITES_DIR (default
# build/suites).  SQLite's suite refuses to run as root: as root it runs as the user `nobody`
# (uffd then falls back to madvise unless vm.unprivileged_userfaultfd=1; the library says so).
# Exit 0 when the suite passed.  Results by hand on 2026-12-05: README.md ("Tests").
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE=${1:-}
MODE=${2:-default}
[[ $SUITE == redis || $SUITE == sqlite ]] || { echo "usage: $0 redis|sqlite [default|secure|uffd|madvise]" >&2; exit 2; }
LIB=$PWD/build/libzns_slab.so
[[ -f $LIB ]] || { echo "$LIB missing: run make" >&2; exit 2; }
DIR=$(realpath -m "${SUITES_DIR:-build/suites}")
mkdir -p "$DIR"
RUN=$DIR/run-$SUITE-$MODE
rm -rf "$RUN"
mkdir -p "$RUN/stats" "$RUN/tier"
cp "$LIB" "$RUN/libzns_slab.so"   # (a rebuild during the run must not change it under the suite)
chmod -R a+rwX "$RUN"
ENVV=(LD_PRELOAD="$RUN/libzns_slab.so" ZNS_STATS="$RUN/stats/%p.json")
case $MODE in
  default) ;;
  secure) ENVV+=(ZNS_SECURE=1) ;;
  uffd | madvise) ENVV+=(ZNS_TIER=$MODE ZNS_TIER_DIR="$RUN/tier" ZNS_TIER_COLD_MS=200) ;;
  *) echo "unknown mode $MODE" >&2; exit 2 ;;
esac

# The source of the installed package's upstream release.
fetch() {   # package binary -> unpacked directory
  local pkg=$1 bin=$2 ver src
  command -v "$bin" >/dev/null || { echo "$bin is not installed (make deps-test)" >&2; exit 2; }
  src=$(dpkg-query -W -f '${source:Package}' "$pkg")
  ver=$(dpkg-query -W -f '${source:Upstream-Version}' "$pkg")
  local tarball="$DIR/${src}_$ver.orig.tar" url
  if ! ls "$tarball".* >/dev/null 2>&1; then
    for ext in xz gz; do
      url="http://deb.debian.org/debian/pool/main/${src:0:1}/$src/${src}_$ver.orig.tar.$ext"
      if curl -sfSL -o "$tarball.$ext.part" "$url"; then mv "$tarball.$ext.part" "$tarball.$ext"; break; fi
      rm -f "$tarball.$ext.part"
    done
  fi
  ls "$tarball".* >/dev/null 2>&1 || { echo "could not download the source of $src $ver" >&2; exit 1; }
  local out="$DIR/$src-$ver"
  if [[ ! -d $out ]]; then
    mkdir -p "$out.tmp"
    tar xf "$tarball".* -C "$out.tmp" --strip-components=1
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

stats_summary() {
  python3 - "$RUN/stats" <<'EOF'
import glob, json, sys
n = alloc = out = 0
for f in glob.glob(sys.argv[1] + "/*.json"):
    try:
        d = json.load(open(f))
    except Exception:
        continue
    n += 1
    alloc += d.get("totals", {}).get("allocated", 0)
    out += (d.get("tier") or {}).get("slabs_out", 0)
print("processes with a statistics dump: %d; blocks allocated in all: %d; slabs paged out in all: %d" % (n, alloc, out))
EOF
}

rc=0
if [[ $SUITE == redis ]]; then
  SRC=$(fetch redis-server redis-server)
  [[ -x $SRC/src/redis-server ]] || make -C "$SRC" MALLOC=libc -j"$(nproc)" >"$DIR/redis-build.log" 2>&1 ||
    { tail -n 20 "$DIR/redis-build.log"; exit 1; }
  command -v tclsh >/dev/null || { echo "tclsh missing (make deps-test)" >&2; exit 2; }
  # unit/oom-score-adj needs to lower its own score (root in some containers only): left out
  (cd "$SRC" && rm -rf tests/tmp/* && env "${ENVV[@]}" ./runtest --clients 4 --skipunit unit/oom-score-adj) \
    2>&1 | tee "$RUN/suite.log" | grep --line-buffered -a -E '\[(err|exception)\]|All tests passed|\[[0-9]+/[0-9]+ .*done' || true
  grep -aq 'All tests passed without errors' "$RUN/suite.log" || rc=1
else
  SRC=$(fetch sqlite3 sqlite3)
  if [[ ! -x $SRC/bld/testfixture ]]; then
    mkdir -p "$SRC/bld"
    (cd "$SRC/bld" && ../configure --enable-all >"$DIR/sqlite-configure.log" 2>&1 &&
      make -j"$(nproc)" testfixture >"$DIR/sqlite-build.log" 2>&1) || { tail -n 20 "$DIR/sqlite-build.log"; exit 1; }
  fi
  AS=()
  if [[ $(id -u) == 0 ]]; then
    chmod -R a+rwX "$SRC"
    AS=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
  fi
  (cd "$SRC/bld" && "${AS[@]}" env HOME=/tmp "${ENVV[@]}" ./testfixture ../test/veryquick.test) \
    >"$RUN/suite.log" 2>&1 || true
  grep -a -E 'errors out of|\*\*\*\*' "$RUN/suite.log" | tail -n 3
  grep -aq '^0 errors out of' "$RUN/suite.log" || rc=1
fi
stats_summary
echo "log: $RUN/suite.log"
[[ $rc == 0 ]] && echo "$SUITE ($MODE): passed" || echo "$SUITE ($MODE): FAILED"
exit $rc
