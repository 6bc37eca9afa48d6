// C loop: rounds of 1000 mallocs of 64 B, then their 1000 frees in order (bench/micro batch/1000).
//   gcc -O2 -o /tmp/batch bench/loops/batch.c
//   LD_PRELOAD=build/libzns_slab.so valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/batch 2000
//   (minus 1000 rounds, / 1e6 = instructions an item, the loop's own ~14 in it)
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  long rounds = atol(argv[1]); enum { N = 1000 }; static void *v[N];
  for (long r = 0; r < rounds; ++r) {
    for (int i = 0; i < N; ++i) { v[i] = malloc(64); ((volatile char *)v[i])[0] = 1; }
    __asm__ volatile("" ::: "memory");
    for (int i = 0; i < N; ++i) free(v[i]);
  }
  return 0;
}
