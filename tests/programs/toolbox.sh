#!/usr/bin/env bash
# Everyday programs under the shim, in the modes that have broken real programs before: git,
# perl, gcc, cmake driving ninja (cmake forks from a threaded process to run it), sort with
# threads, xz with threads, tar, openssl, jq and tclsh, each on a small fixed workload.
# Each runs once plain (glibc) and then under LD_PRELOAD=$ZNS_LIB with
#   - the defaults,
#   - ZNS_SECURE=1,
#   - ZNS_TIER=madvise and =uffd with a 50 ms cold window (slabs go out and come back while the
#     program runs; cmake's children copy the madvise tier's heap at fork).
# Checks: every run exits 0, and its output is byte-identical to the plain run's.
# Then libfaketime preloaded with the shim (both orders; default, secure, madvise tier): date and
# python3 print the faked date (they hung at their first malloc until 2026-12-05).
# (A 2026-12-03 sweep of this kind found cmake's children dying of SIGBUS under the madvise
# tier: tier/tier.cpp, tier_fork_child.)
TEST_NAME=toolbox
source "$(dirname "$0")/lib/common.bash"
zns_require_lib
zns_make_tmp
export LC_ALL=C
cd "$TMPD"

for p in git perl gcc cmake ninja sort xz tar openssl jq tclsh; do
  command -v $p >/dev/null || die "$p missing (run: make deps-test)"
done

# inputs
awk 'BEGIN { srand(7); for (i = 1; i <= 100000; i++) print int(rand() * 1000000) " line" i }' >data.txt
cat >hello.c <<'EOF'
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
struct n { struct n *next; char s[40]; };
int main(void) {
  struct n *h = 0;
  for (int i = 0; i < 100000; i++) { struct n *x = malloc(sizeof *x); snprintf(x->s, sizeof x->s, "%d", i); x->next = h; h = x; }
  long t = 0;
  while (h) { t += (long)strlen(h->s); struct n *x = h->next; free(h); h = x; }
  printf("%ld\n", t);
  return 0;
}
EOF
mkdir -p cm && printf 'cmake_minimum_required(VERSION 3.10)\nproject(x C)\nadd_executable(h ../hello.c)\n' >cm/CMakeLists.txt

declare -A CMD=(
  [git]='rm -rf g && git init -q g && cd g && for i in $(seq 1 100); do echo $i >f$i; done && git add . &&
         git -c user.email=a@b -c user.name=n commit -qm x && git gc -q && git log --oneline | wc -l && git fsck 2>&1 | wc -l'
  [perl]='perl -e '"'"'my %h; for my $i (1..200000) { $h{"k$i"} = [$i, "v" x ($i % 50)]; } my $t = 0;
          for (keys %h) { $t += length $h{$_}[1] } print "$t\n"; delete $h{$_} for keys %h; print scalar(keys %h), "\n"'"'"
  [gcc]='gcc -O2 -o hello_c hello.c && ./hello_c'
  [cmake]='rm -rf cm/b && cmake -G Ninja -S cm -B cm/b >/dev/null && ninja -C cm/b >/dev/null && ./cm/b/h'
  [sort]='sort -n data.txt | md5sum && sort --parallel=2 -S 4M data.txt | md5sum'
  [xz]='xz -T2 -c data.txt | xz -d | md5sum'
  [tar]='tar cf - data.txt hello.c | tar tf - | wc -l'
  [openssl]='openssl dgst -sha256 data.txt | cut -d" " -f2 && openssl enc -aes-256-cbc -pbkdf2 -pass pass:x -S 0102030405060708 -in data.txt | md5sum'
  [jq]='seq 1 30000 | jq -s "map({key: tostring, value: .}) | from_entries | length"'
  [tcl]='echo "set d [dict create]; for {set i 0} {\$i < 100000} {incr i} { dict set d k\$i \$i }; puts [dict size \$d]" | tclsh'
)
NAMES="git perl gcc cmake sort xz tar openssl jq tcl"

run() {   # label name env...
  local label=$1 name=$2; shift 2
  local rc=0
  timeout 120 env "$@" bash -c "${CMD[$name]}" >"$name.$label.out" 2>"$name.$label.err" || rc=$?
  if [[ $rc != 0 ]]; then
    tail -n 15 "$name.$label.err"
    die "$name ($label) exited $rc (124 = timeout, 134 = abort, 135 = SIGBUS, 139 = SIGSEGV)"
  fi
}

for name in $NAMES; do run plain "$name"; done
if [[ $SHIM == 0 ]]; then log "plain-only mode: done"; exit 0; fi

T=(ZNS_TIER_DIR=$TMPD ZNS_TIER_COLD_MS=50 ZNS_TIER_SCAN_MS=20)
for mode in default secure madvise uffd; do
  case $mode in
    default) E=(LD_PRELOAD=$ZNS_LIB) ;;
    secure)  E=(LD_PRELOAD=$ZNS_LIB ZNS_SECURE=1) ;;
    madvise) E=(LD_PRELOAD=$ZNS_LIB ZNS_TIER=madvise "${T[@]}") ;;
    uffd)    E=(LD_PRELOAD=$ZNS_LIB ZNS_TIER=uffd "${T[@]}") ;;
  esac
  t0=$SECONDS
  for name in $NAMES; do
    run "$mode" "$name" "${E[@]}"
    cmp -s "$name.plain.out" "$name.$mode.out" || { diff -u "$name.plain.out" "$name.$mode.out" | head -20;
      die "$name ($mode): output differs from the plain run"; }
  done
  log "$mode: $(echo $NAMES | wc -w) programs, outputs identical to glibc's ($((SECONDS - t0)) s)"
done

# libfaketime (a preloaded library whose clock_gettime calls dlsym, which allocates) with the shim,
# in both preload orders: every program hung at its first malloc until 2026-12-05 (the shim took
# the time under its init lock, and the nested malloc waited for that lock).
FT=$(ls /usr/lib/*/faketime/libfaketime.so.1 2>/dev/null | head -n 1)
[[ -n $FT ]] || die "libfaketime missing (run: make deps-test)"
for mode in default secure madvise; do
  case $mode in
    default) E=() ;;
    secure)  E=(ZNS_SECURE=1) ;;
    madvise) E=(ZNS_TIER=madvise "${T[@]}") ;;
  esac
  for order in "$ZNS_LIB:$FT" "$FT:$ZNS_LIB"; do
    for cmd in "date -u +%F" "$PY -c 'import time; print(time.strftime(\"%F\", time.gmtime()))'"; do
      out=$(timeout 60 env "${E[@]}" LD_PRELOAD="$order" FAKETIME="@2020-01-01 12:00:00" bash -c "$cmd" 2>&1) ||
        die "libfaketime ($mode, LD_PRELOAD=$order): '$cmd' exited $? (124 = hung): $out"
      [[ $out == 2020-01-01 ]] || die "libfaketime ($mode, LD_PRELOAD=$order): '$cmd' printed '$out', not the faked date"
    done
  done
done
log "libfaketime with the shim (both preload orders; default, secure, madvise tier): the faked date"
