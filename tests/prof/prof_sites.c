// Allocation sites with known live bytes, for the heap profiler (tests/prof/run.sh).  Run under
// libzns_slab_prof.so with ZNS_PROF set; argv[1]: the path of a mid-run profile (zns_prof_dump).
//   keep_small   20000 blocks of 100 B, of which main reallocs half (below)  (1,000,000 B)
//   main         10000 reallocs of those: 5000 to 100 B, 5000 to 200 B       (1,500,000 B)
//   keep_large   40 blocks of 64 KiB (the next allocator's), live         (2,621,440 B)
//   keep_calloc  20000 blocks of calloc(48, 1), live                       (  960,000 B)
//   churn_freed  20000 blocks of 100 B, all freed before the dump         (0 B)
//   freed_later  20000 blocks of 200 B, live at the dump, freed before exit (4,000,000 B, then 0)
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zns_prof_dump(const char *path) __attribute__((weak));

static void *volatile sink;
enum { N = 20000 };
// (not static, and every block written: the compiler may not drop an allocation)
void *small_blocks[N], *later_blocks[N], *calloc_blocks[N], *large_blocks[40];

__attribute__((noinline)) void keep_small(void) {
  for (int i = 0; i < N; ++i) memset(small_blocks[i] = malloc(100), 1, 100);
}
__attribute__((noinline)) void keep_large(void) {
  for (int i = 0; i < 40; ++i) memset(large_blocks[i] = malloc(65536), 2, 64);
}
__attribute__((noinline)) void keep_calloc(void) {
  for (int i = 0; i < N; ++i) calloc_blocks[i] = calloc(48, 1);
}
__attribute__((noinline)) void churn_freed(void) {
  for (int i = 0; i < N; ++i) {
    void *p = malloc(100);
    memset(p, 3, 100);
    sink = p;
    free(p);
  }
}
__attribute__((noinline)) void freed_later(void) {
  for (int i = 0; i < N; ++i) memset(later_blocks[i] = malloc(200), 4, 200);
}

int main(int argc, char **argv) {
  if (!zns_prof_dump) { fprintf(stderr, "zns_prof_dump not found: not under ZNS-Slab\n"); return 2; }
  keep_small();
  keep_large();
  keep_calloc();
  churn_freed();
  freed_later();
  for (int i = 0; i < N; ++i)   // every calloc'ed block reads as zero, sampled or not
    for (int k = 0; k < 48; ++k)
      if (((char *)calloc_blocks[i])[k]) { fprintf(stderr, "calloc block %d not zero\n", i); return 1; }
  // realloc: for the profiler an allocation of n bytes by main, sampled anew (half of them grow)
  for (int i = 0; i < N; i += 2) {
    small_blocks[i] = realloc(small_blocks[i], 100 + (i & 2) * 50);
    if (((char *)small_blocks[i])[99] != 1) { fprintf(stderr, "realloc lost the contents\n"); return 1; }
  }
  if (argc > 1 && zns_prof_dump(argv[1]) != 0) { perror("zns_prof_dump"); return 1; }
  for (int i = 0; i < N; ++i) free(later_blocks[i]);
  printf("done\n");
  return 0;   // the exit profile: keep_* only
}
