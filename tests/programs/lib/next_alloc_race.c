/* tests/programs/next_alloc.sh, race: stop the early library's threads (their last blocks may come
 * from either allocator), then ask each block's size and free it: a block sent to the wrong
 * allocator crashes (SIGSEGV, abort) or reports a size below 64 B.  Prints "ok" and exits 0. */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "next_alloc.h"

extern atomic_int race_stop;
extern pthread_t race_threads[RACE_THREADS];
extern void *race_ring[RACE_THREADS][RACE_RING];

int main(void) {
  usleep(2000);
  atomic_store(&race_stop, 1);
  for (int t = 0; t < RACE_THREADS; t++) pthread_join(race_threads[t], NULL);
  int bad = 0;
  for (int t = 0; t < RACE_THREADS; t++)
    for (int k = 0; k < RACE_RING; k++)
      if (race_ring[t][k]) {
        size_t u = malloc_usable_size(race_ring[t][k]);
        if (u < 5000 || u > (size_t)1 << 20) bad++;
        free(race_ring[t][k]);
      }
  for (int i = 0; i < 1000; i++) free(malloc(100000));
  if (bad) {
    fprintf(stderr, "FAIL: %d blocks with a wrong malloc_usable_size\n", bad);
    return 1;
  }
  printf("ok: race\n");
  return 0;
}
