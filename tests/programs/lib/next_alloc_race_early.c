/* tests/programs/next_alloc.sh, race: a library constructor (it runs before the shim's) starts
 * two threads that free and allocate blocks above 4 KiB until main stops them, so that some of
 * their calls straddle the shim's resolution of the next allocator: a block from the startup
 * functions must be remembered as theirs however the race went, and one from the next allocator
 * must not be. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "next_alloc.h"

atomic_int race_stop;
pthread_t race_threads[RACE_THREADS];
void *race_ring[RACE_THREADS][RACE_RING];

static void *churn(void *arg) {
  void **ring = arg;
  for (unsigned i = 0; !atomic_load(&race_stop); i++) {
    unsigned k = i % RACE_RING;
    free(ring[k]);
    size_t n = 5000 + (i * 4099u) % 300000;
    ring[k] = (i & 1) ? calloc(1, n) : malloc(n);
    if (!ring[k]) abort();
    memset(ring[k], 1, 64);
  }
  return NULL;
}

__attribute__((constructor)) static void race_start(void) {
  for (int t = 0; t < RACE_THREADS; t++) pthread_create(&race_threads[t], NULL, churn, race_ring[t]);
}
