#!/usr/bin/env bash
# The library built for aarch64 (Debian's cross compiler) and run under qemu-user: the code paths
# that only another architecture compiles (raw_syscall's `svc 0`, the system calls aarch64 lacks
# (poll, stat, open, rename: ppoll, fstatat, openat, renameat2), deepbind's relocation types, the
# spin and counter instructions) are built and exercised, so they cannot rot unseen.  Nothing is
# timed.  Exit status 0 when everything passed; each step prints one line.
#
# Under qemu-user, and only there, some tests cannot run, and are left out (not "expected to
# fail"): a program cannot exec another aarch64 program without binfmt_misc (the tests that re-run
# themselves), qemu aborts in a fork child of a multithreaded process (its own assertion,
# cpu == current_cpu), it ignores MADV_DONTNEED's zeroing and refuses MADV_POPULATE_WRITE, it
# prints a line of its own at a fatal signal (bad_free counts lines), and RSS and RLIMIT_AS
# include the emulator's own memory.  Preloaded, dlopen(RTLD_DEEPBIND) of a library found through
# the caller's RUNPATH is not tested: on aarch64 the shim's call to the real dlopen is its own
# (DESIGN "RTLD_DEEPBIND"); linked in, the program is the caller, and api/deepbind runs.
set -u
cd "$(dirname "$0")/../.."
B=build/aarch64
CROSS=aarch64-linux-gnu-
SYSROOT=/usr/aarch64-linux-gnu
if ! command -v ${CROSS}g++ >/dev/null || ! command -v qemu-aarch64 >/dev/null; then
  echo "cross: needs ${CROSS}g++ and qemu-aarch64 (Debian: g++-aarch64-linux-gnu qemu-user; make deps-test)"
  [ "${ZNS_EXPECT:-0}" = 1 ] && exit 1
  exit 0
fi
API="cancel cxx_late cxx_new deepbind early_init foreign malloc_basic memalign own_dlopen sized_delete"
STRESS="prodcons remote_buffer"
targets=($B/libzns_slab.so $B/libzns_slab.a $B/libzns_slab_static.a $B/tests/unit_tests test-plugins)
for t in $API; do
  [ $t = deepbind ] || targets+=($B/tests/api/$t)
  targets+=($B/tests/api/$t.static)
done
for t in $STRESS; do targets+=($B/tests/stress/$t $B/tests/stress/$t.static); done
t0=$SECONDS
mkdir -p "$(dirname "$B")"   # (its log goes beside the build: a fresh clone has no build/ yet)
# (a make of its own: not the jobserver of the `make test` that runs this)
if ! env -u MAKEFLAGS -u MFLAGS make -s -j"$(nproc)" --no-print-directory BUILD=$B CC=${CROSS}gcc CXX=${CROSS}g++ \
    "${targets[@]}" >$B.log 2>&1; then
  echo "FAIL cross: the aarch64 build failed"; grep -v "warning: Using 'get" $B.log | tail -20; exit 1
fi
echo "ok   cross/build                 $((SECONDS - t0))s  libzns_slab.so, both archives and the test programs for aarch64"
LIB=$PWD/$B/libzns_slab.so
fails=0
run() {   # name, qemu arguments...
  local name=$1; shift
  local t=$SECONDS out
  out=$(timeout 300 qemu-aarch64 -L $SYSROOT -E ZNS_EXPECT=1 "$@" 2>&1)
  local rc=$?
  if [ $rc = 0 ]; then
    printf 'ok   %-36s %3ss\n' "$name" $((SECONDS - t))
  else
    fails=$((fails + 1)); printf 'FAIL %-36s (exit %s)\n' "$name" "$rc"
    printf '%s\n' "$out" | tail -15 | sed 's/^/   | /'
  fi
}
# the unit tests but those qemu cannot host (above): forks of a threaded process, the madvise
# and populate checks
run cross/unit $B/tests/unit_tests --test-case-exclude='*fork*,*purge runs over clean groups*,*mapped ahead*' \
  --no-intro --minimal
for t in $API; do
  [ $t = deepbind ] || run "cross/api/$t(preload)" -E LD_PRELOAD=$LIB $B/tests/api/$t
  run "cross/api/$t(linked)" $B/tests/api/$t.static
done
for t in $STRESS; do
  run "cross/stress/$t(preload)" -E LD_PRELOAD=$LIB $B/tests/stress/$t
  run "cross/stress/$t(linked)" $B/tests/stress/$t.static
done
echo "cross: $fails failed"
[ $fails = 0 ]
