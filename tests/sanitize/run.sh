#!/usr/bin/env bash
# Runs the sanitizer builds (`make check-sanitize` builds them first): the unit tests and every
# driver in tests/sanitize/, under ASan+UBSan, then under TSan.  Fails on any sanitizer report
# (exit status, or a report line in the output, e.g. from a forked child) or failed check.
# Logs: build/sanitize/logs/.   Usage: tests/sanitize/run.sh DRIVER...
# SAN_FLAVOURS="asan tsan" (default) picks the builds; SAN_UNIT=0 skips the unit tests (make test
# runs the TSan churn driver alone this way).
set -u
cd "$(dirname "$0")/../.."
S=build/sanitize
LOGS=$S/logs
mkdir -p "$LOGS"
supp=$PWD/tests/sanitize/tsan.supp
export SAN_SCALE=${SAN_SCALE:-4}   # the drivers' amount of work (about 40 s for all of them)
# halt_on_error: stop at the first report (ASan always does); exitcode: what TSan exits with when
# it reported anything; die_after_fork=0: the unit tests' misuse check starts a thread in a forked
# child, which TSan refuses by default (the drivers never do).
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TSAN_OPTIONS="halt_on_error=0:exitcode=66:second_deadlock_stack=1:die_after_fork=0:suppressions=$supp"
pattern='ERROR: AddressSanitizer|ERROR: LeakSanitizer|WARNING: ThreadSanitizer|ThreadSanitizer: reported|runtime error:'
pass=0; fail=0; failed=()
# Each driver runs twice: as is, and with ZNS_SECURE=1 (the hardened mode's paths: quarantine,
# random slots, zeroing).  The unit tests check the default mode's behaviour and run once.
units=unit_tests
[ "${SAN_UNIT:-1}" = 0 ] && units=
for flavour in ${SAN_FLAVOURS:-asan tsan}; do
  for name in $units "$@" $(printf '%s+secure ' "$@"); do
    bin=$S/$flavour/${name%+secure} log=$LOGS/$flavour-$name.log t0=$SECONDS
    if [ ! -x "$bin" ]; then echo "missing $bin (run make sanitize-build)"; exit 2; fi
    if [[ $name == *+secure ]]; then secure=1; else secure=0; fi
    ZNS_SECURE=$secure timeout 300 "$bin" >"$log" 2>&1
    rc=$?
    if [ $rc -eq 0 ] && ! grep -qE "$pattern" "$log"; then
      pass=$((pass+1)); printf 'PASS %-24s %3ss\n' "$flavour/$name" $((SECONDS-t0))
    else
      fail=$((fail+1)); failed+=("$flavour/$name")
      printf 'FAIL %-24s (exit %s) log: %s\n' "$flavour/$name" "$rc" "$log"
      grep -nE "$pattern" "$log" | head -5 | sed 's/^/     | /'
      tail -n 12 "$log" | sed 's/^/     | /'
    fi
  done
done
echo
[ ${#failed[@]} -gt 0 ] && echo "failed: ${failed[*]}"
echo "sanitizers: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
