// C loops for instruction counts under callgrind (DESIGN "Known limits"): not built by make.
//   gcc -O2 -pthread -o /tmp/churn bench/loops/churn.c
//   LD_PRELOAD=build/libzns_slab.so valgrind --tool=callgrind --callgrind-out-file=/dev/null /tmp/churn 1 2000000
//   (the same with 1000000 ops; the difference / 1e6 = instructions an op, the loop's own ~30 in it)
// T threads, each a ring of 8192 live blocks of 16..4096 B; OPS frees + mallocs per thread; prints ns/op.
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
static long OPS;
static void *worker(void *arg) {
  uint64_t x = 88172645463325252ull ^ (uintptr_t)arg;
  enum { N = 8192 };
  void **ring = calloc(N, sizeof(void *));
  for (int i = 0; i < N; ++i) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ring[i] = malloc(16 + x % 4081); }
  for (long k = 0; k < OPS; ++k) {
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    unsigned i = x % N; free(ring[i]); ring[i] = malloc(16 + (x >> 20) % 4081); ((volatile char *)ring[i])[0] = 1;
  }
  for (int i = 0; i < N; ++i) free(ring[i]);
  free(ring);
  return 0;
}
int main(int argc, char **argv) {
  int T = atoi(argv[1]); OPS = atol(argv[2]);
  pthread_t t[8]; struct timespec a, b; clock_gettime(CLOCK_MONOTONIC, &a);
  for (int i = 0; i < T; ++i) pthread_create(&t[i], 0, worker, (void *)(uintptr_t)(i + 1));
  for (int i = 0; i < T; ++i) pthread_join(t[i], 0);
  clock_gettime(CLOCK_MONOTONIC, &b);
  printf("%d threads: %.2f ns/op (wall per op per thread)\n", T, ((b.tv_sec - a.tv_sec) * 1e9 + (b.tv_nsec - a.tv_nsec)) / OPS);
}
