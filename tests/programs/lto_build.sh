#!/usr/bin/env bash
# The library built with link-time optimisation (OPT="-O2 -flto=auto", as distributions' build
# flags add), into its own build directory: the preloaded library loads into a C program (it
# needed __cxa_begin_catch at load until 2026-12-06: LTO moved the top-level asm that makes the
# C++ runtime's symbols weak away from their references) and serves python3; the archive links
# into a C program (the stub's references to zns_real_dlopen and zns_deep_dlopen were dropped:
# "undefined reference"), which runs; the library has no undefined C++ runtime symbol but weak ones.
TEST_NAME=lto_build
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
[[ $SHIM == 1 ]] || { log "plain-only mode: nothing to do without the library"; exit 0; }
zns_make_tmp
cd "$TMPD"
ROOT=$(cd "$PROG_DIR/../.." && pwd)
B=$TMPD/build
env -u MAKEFLAGS -u MFLAGS make -s -C "$ROOT" -j"$(nproc)" BUILD="$B" OPT="-O2 -flto=auto" \
  "$B/libzns_slab.so" "$B/libzns_slab.a" >make.log 2>&1 || { tail -20 make.log; die "the build with -flto failed"; }
strong=$(nm -D --undefined-only "$B/libzns_slab.so" | awk '$1 == "U" && $2 ~ /^(__cxa|__gxx|_ZS)/ { print $2 }')
[[ -z $strong ]] || die "the -flto library needs the C++ runtime at load: $strong"
out=$(LD_PRELOAD="$B/libzns_slab.so" /bin/echo loaded 2>&1) && [[ $out == loaded ]] ||
  die "the -flto library does not load into /bin/echo: $out"
want=$("$PY" -c 'print(sum(len(str(i) * 3) for i in range(200000)))')
got=$(env PYTHONMALLOC=malloc ZNS_STATS="$TMPD/py.json" LD_PRELOAD="$B/libzns_slab.so" "$PY" -c 'print(sum(len(str(i) * 3) for i in range(200000)))') ||
  die "python3 under the -flto library failed"
[[ $got == "$want" ]] || die "python3 under the -flto library: $got, expected $want"
"$PY" -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["totals"]["allocated"] < 100000)' "$TMPD/py.json" ||
  die "python3 under the -flto library: the heap served fewer than 100000 blocks (not interposed?)"
printf '#include <stdio.h>\n#include <stdlib.h>\nint main(void) { char *p = malloc(100); p[0] = 1; free(p); puts("linked"); return 0; }\n' >c.c
cc -O1 c.c -o c_linked -Wl,--whole-archive "$B/libzns_slab.a" -Wl,--no-whole-archive -pthread -ldl >cc.log 2>&1 ||
  { tail -5 cc.log; die "a C program does not link with the -flto archive"; }
[[ $(./c_linked) == linked ]] || die "the C program linked with the -flto archive did not run"
log "built with -flto: the library loads into C programs and serves python3; the archive links and runs"
log PASS
