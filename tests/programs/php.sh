#!/usr/bin/env bash
# PHP CLI (Debian's php-cli, with its default extensions: pdo, phar, tokenizer, ... are shared
# objects that PHP up to 8.4 opens with RTLD_DEEPBIND).  A deep-bound extension binds malloc and
# free to glibc's, so under any preloaded allocator it freed blocks the engine had allocated with
# the preloaded one: `php -v` aborted at startup ("double free or corruption", exit 134), under
# jemalloc, mimalloc and tcmalloc preloaded too (php-src#10670).  ZNS-Slab's dlopen rebinds the
# allocation calls of deep-bound libraries (shim/deepbind.cpp).
# Checks, each against the plain run: `php -v` and `php -m` print the same; lib/php_workload.php
# (arrays, strings, json, usort, preg, and calls into tokenizer, PDO, Phar, ctype, iconv,
# fileinfo, sodium) prints the same, exits 0 and writes nothing to stderr, under
#   - the defaults (the engine's own allocator serves most requests, extensions call malloc),
#   - USE_ZEND_ALLOC=0 (every allocation of the engine is a malloc; the extensions free them),
#   - ZNS_SECURE=1;
# and the USE_ZEND_ALLOC=0 run's stats show more than MIN_ALLOC allocations.
TEST_NAME=php
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
zns_make_tmp
command -v php >/dev/null || die "php missing (run: make deps-test)"
PHP=$(command -v php)
MIN_ALLOC=500000
WORK=$PROG_LIB/php_workload.php
export LC_ALL=C
cd "$TMPD"

run_php() {   # label [env assignments...] -- php args...
  local label=$1; shift
  local envs=()
  while [[ $1 != -- ]]; do envs+=("$1"); shift; done
  shift
  local rc=0 t0=$SECONDS
  rm -f w.phar
  timeout 120 env "${envs[@]}" "$PHP" "$@" >"$label.out" 2>"$label.err" || rc=$?
  log "$label took $((SECONDS - t0))s, exit $rc"
  if [[ $rc != 0 ]]; then
    tail -n 20 "$label.err"
    die "php ($label) exited $rc (124 = timeout, 134 = abort, 139 = SIGSEGV). Repro:
  ${envs[*]} $PHP $*"
  fi
  if [[ -s "$label.err" ]]; then head -n 20 "$label.err"; die "php ($label) wrote to stderr"; fi
}

run_php v.plain -- -v
run_php m.plain -- -m
run_php work.plain -- -d phar.readonly=0 "$WORK"
grep -q '^pdo ' work.plain.out || die "the workload did not reach PDO (plain run): $(tail -n 3 work.plain.out)"
if [[ $SHIM == 0 ]]; then log "plain-only mode: done"; exit 0; fi

run_php v.shim LD_PRELOAD="$ZNS_LIB" -- -v
zns_same_output v.plain.out v.shim.out "php -v"
run_php m.shim LD_PRELOAD="$ZNS_LIB" -- -m
zns_same_output m.plain.out m.shim.out "php -m"
run_php work.shim LD_PRELOAD="$ZNS_LIB" -- -d phar.readonly=0 "$WORK"
zns_same_output work.plain.out work.shim.out "php workload"
run_php work.nozend LD_PRELOAD="$ZNS_LIB" USE_ZEND_ALLOC=0 ZNS_STATS="$TMPD/stats.%p.json" -- -d phar.readonly=0 "$WORK"
zns_same_output work.plain.out work.nozend.out "php workload (USE_ZEND_ALLOC=0)"
run_php work.secure LD_PRELOAD="$ZNS_LIB" ZNS_SECURE=1 -- -d phar.readonly=0 "$WORK"
zns_same_output work.plain.out work.secure.out "php workload (ZNS_SECURE=1)"
zns_check_stats "$MIN_ALLOC" 1 php "$TMPD"/stats.*.json
log PASS
