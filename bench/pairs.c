/* Instruction count of a malloc+free pair, for valgrind --tool=callgrind (deterministic).
 *
 *   pairs N [SIZE]      one warm-up pair, then N pairs of malloc(SIZE) (default 64) + free
 *
 * The harness runs N = 1000000 and N = 0 under the same allocator and divides the difference of
 * the two instruction totals by N: the steady-state cost of one pair, including the ~4 loop
 * instructions, without process start-up or the allocator's first-use slow path.  Last, it prints
 * the file `malloc` was bound to (both runs alike, so the difference does not see it): the harness
 * checks that the preload took effect. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s N [SIZE]\n", argv[0]);
    return 2;
  }
  long n = atol(argv[1]);
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
  void *warm = malloc(size);
  __asm__ volatile("" : : "g"(warm) : "memory");
  free(warm);
  for (long i = 0; i < n; ++i) {
    void *p = malloc(size);
    __asm__ volatile("" : : "g"(p) : "memory");
    free(p);
  }
  Dl_info info;
  void *(*volatile f)(size_t) = &malloc;
  printf("malloc_from: %s\n", dladdr((void *)f, &info) && info.dli_fname ? info.dli_fname : "?");
  return 0;
}
