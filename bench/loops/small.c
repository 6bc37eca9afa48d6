// C loop: 8192 live blocks of 16..256 B churned (bench/latency small); steps and refills under callgrind:
//   gcc -O2 -o /tmp/small bench/loops/small.c
//   LD_PRELOAD=build/libzns_slab.so valgrind --tool=callgrind --callgrind-out-file=/tmp/cgs /tmp/small 2000000
//   callgrind_annotate --inclusive=yes --tree=caller /tmp/cgs | grep -A1 alloc_step
#include <stdint.h>
#include <stdlib.h>
int main(int argc, char **argv) {
  long ops = atol(argv[1]); enum { N = 8192 }; static void *ring[N];
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < N; ++i) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; ring[i] = malloc(16 + x % 241); }
  for (long k = 0; k < ops; ++k) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; unsigned i = x % N; free(ring[i]); ring[i] = malloc(16 + (x >> 20) % 241); ((volatile char *)ring[i])[0] = 1; }
  return 0;
}
