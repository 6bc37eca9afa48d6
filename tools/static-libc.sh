#!/usr/bin/env bash
# Makes the copy of glibc's malloc.o that build/libzns_slab_static.a carries (Makefile, "the
# archive for -static programs").  Usage: tools/static-libc.sh CC OUT SHIM_OBJECTS...
# Every global name that both the shim's objects and glibc's malloc.o define (malloc, free,
# realloc, calloc, memalign, malloc_usable_size, malloc_trim, mallinfo2, ...) is made weak in the
# copy, so a -static link takes the shim's; glibc's malloc stays reachable by its internal names
# (__libc_malloc, __libc_free, ...), which the shim's static build calls for blocks over 4 KiB.
# The copy also defines what the rest of libc.a needs from malloc.o (__malloc_fork_lock_parent,
# __malloc_arena_thread_freeres, ...), so the link never takes the original.
set -euo pipefail
cc=$1 out=$2; shift 2
libc_a=$($cc -print-file-name=libc.a)
if [ ! -f "$libc_a" ]; then
  echo "static-libc.sh: $cc has no libc.a (install libc6-dev): cannot build the archive for -static programs" >&2
  exit 1
fi
# binutils of the target: a cross compiler's (aarch64-linux-gnu-gcc: aarch64-linux-gnu-objcopy)
case $(basename "$cc") in *-gcc) pre=$(dirname "$cc")/$(basename "$cc" gcc); pre=${pre#./} ;; *) pre= ;; esac
ar() { command "${pre}ar" "$@"; }
nm() { command "${pre}nm" "$@"; }
objcopy() { command "${pre}objcopy" "$@"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && ar x "$libc_a" malloc.o) || { echo "static-libc.sh: $libc_a has no malloc.o" >&2; exit 1; }
# global names the shim defines, strong or weak (nm -g --defined-only: "ADDR TYPE NAME")
nm -g --defined-only "$@" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/ours"
nm -g --defined-only "$tmp/malloc.o" | awk 'NF == 3 { print $3 }' | sort -u >"$tmp/theirs"
comm -12 "$tmp/ours" "$tmp/theirs" >"$tmp/both"
grep -qx malloc "$tmp/both" || { echo "static-libc.sh: glibc's malloc.o does not define malloc?" >&2; exit 1; }
objcopy $(sed 's/^/--weaken-symbol=/' "$tmp/both") "$tmp/malloc.o" "$tmp/glibc_malloc.o"
# check: no name is now defined strongly by both
nm -g --defined-only "$tmp/glibc_malloc.o" | awk 'NF == 3 && $2 ~ /^[TDBR]$/ { print $3 }' | sort -u >"$tmp/strong"
nm -g --defined-only "$@" | awk 'NF == 3 && $2 ~ /^[TDBR]$/ { print $3 }' | sort -u >"$tmp/ours_strong"
if clash=$(comm -12 "$tmp/strong" "$tmp/ours_strong") && [ -n "$clash" ]; then
  echo "static-libc.sh: still defined by both: $clash" >&2; exit 1
fi
mv "$tmp/glibc_malloc.o" "$out"
