#!/usr/bin/env bash
# The library built other ways than the default, each into its own build directory:
#   - with link-time optimisation (OPT="-O2 -flto=auto", as distributions' build flags add): the
#     .so needed __cxa_begin_catch at load until 2026-12-06 (LTO moved the top-level asm that makes
#     the C++ runtime's symbols weak away from their references) and the archive did not link
#     (the stub's references to zns_real_dlopen and zns_deep_dlopen were dropped);
#   - with clang (CXX=clang++ CC=clang): the .so needed std::terminate at load (clang's
#     __clang_call_terminate), so no C program could preload it.
# For each: no strong undefined C++ runtime symbol; the .so loads into /bin/echo and serves
# python3 (PYTHONMALLOC=malloc: the heap hands out > 100000 blocks); the archive links into a C
# program, which runs, and so does a program with a dlopen of its own (tests/api/own_dlopen.c).
TEST_NAME=other_builds
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
[[ $SHIM == 1 ]] || { log "plain-only mode: nothing to do without the library"; exit 0; }
zns_make_tmp
cd "$TMPD"
ROOT=$(cd "$PROG_DIR/../.." && pwd)
printf '#include <stdio.h>\n#include <stdlib.h>\nint main(void) { char *p = malloc(100); p[0] = 1; free(p); puts("linked"); return 0; }\n' >c.c
want=$("$PY" -c 'print(sum(len(str(i) * 3) for i in range(200000)))')

check_build() {   # name, make variables...
  local name=$1; shift
  local B=$TMPD/build-$name
  env -u MAKEFLAGS -u MFLAGS make -s -C "$ROOT" -j"$(nproc)" BUILD="$B" "$@" \
    "$B/libzns_slab.so" "$B/libzns_slab.a" >"make-$name.log" 2>&1 || { tail -20 "make-$name.log"; die "$name: the build failed"; }
  local strong
  strong=$(nm -D --undefined-only "$B/libzns_slab.so" | awk '$1 == "U" && $2 ~ /^(__cxa|__gxx|_ZS|_ZN)/ { print $2 }')
  [[ -z $strong ]] || die "$name: the library needs the C++ runtime at load: $strong"
  local out
  out=$(LD_PRELOAD="$B/libzns_slab.so" /bin/echo loaded 2>&1) && [[ $out == loaded ]] ||
    die "$name: the library does not load into /bin/echo: $out"
  out=$(env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/py-$name.json" LD_PRELOAD="$B/libzns_slab.so" "$PY" -c 'print(sum(len(str(i) * 3) for i in range(200000)))') ||
    die "$name: python3 under the library failed"
  [[ $out == "$want" ]] || die "$name: python3 under the library: $out, expected $want"
  "$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["totals"]["allocated"] < 100000)' "$TMPD/py-$name.json" ||
    die "$name: python3: the heap served fewer than 100000 blocks (not interposed?)"
  cc -O1 c.c -o "c-$name" -Wl,--whole-archive "$B/libzns_slab.a" -Wl,--no-whole-archive -pthread -ldl >"cc-$name.log" 2>&1 ||
    { tail -5 "cc-$name.log"; die "$name: a C program does not link with the archive"; }
  [[ $("./c-$name") == linked ]] || die "$name: the C program linked with the archive did not run"
  # the archive's dlopen is weak whatever the build (objcopy --weaken-symbol did not reach the
  # symbol of an -flto object: "multiple definition of dlopen" again)
  cc -O1 -I"$ROOT" "$ROOT/tests/api/own_dlopen.c" -o "own-$name" -Wl,--whole-archive "$B/libzns_slab.a" \
    -Wl,--no-whole-archive -pthread -ldl >"own-$name.log" 2>&1 ||
    { tail -5 "own-$name.log"; die "$name: a program with a dlopen of its own does not link with the archive"; }
  env ZNS_EXPECT=1 "./own-$name" >"own-$name.out" 2>&1 || { cat "own-$name.out"; die "$name: own_dlopen failed"; }
  log "$name: the library loads into C programs and serves python3; the archive links and runs"
}

check_build lto OPT="-O2 -flto=auto"
if command -v clang++ >/dev/null && command -v clang >/dev/null; then
  check_build clang CXX=clang++ CC=clang
else
  log "clang: not installed (make deps-hardening): skipped"
fi
log PASS
