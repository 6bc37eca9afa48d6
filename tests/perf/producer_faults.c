/* A producer thread that allocates 1 KiB blocks at a steady pace (RATE a second, in ticks of 1 ms)
   and a consumer thread that frees them (remote frees).  Prints the process's minor page faults
   over the run (getrusage).  tests/perf/producer_faults.sh bounds them: a producer that keeps
   refilling is not idle, so its consumer's frees that complete its parked slabs must not give
   their pages back (parked_purge) only for the producer to fault them in again when it reuses
   them.  (2026-12-07: a refill that read the clock at every 16th refill only made such a producer
   look idle: 12,297 faults in 4 s at 20k/s instead of 169.)
   Usage: producer_faults [RATE [SECS]] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

enum { RING = 1 << 16, SIZE = 1024 };
static void *ring[RING];
static unsigned long head, tail;
static int stop;

static void *consumer(void *arg) {
  (void)arg;
  for (;;) {
    unsigned long t = tail, h = __atomic_load_n(&head, __ATOMIC_ACQUIRE);
    if (t == h) {
      if (__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) break;
      usleep(50);
      continue;
    }
    for (; t != h; ++t) free(ring[t % RING]);
    __atomic_store_n(&tail, t, __ATOMIC_RELEASE);
  }
  return NULL;
}

int main(int argc, char **argv) {
  long rate = argc > 1 ? atol(argv[1]) : 20000;
  double secs = argc > 2 ? atof(argv[2]) : 2;
  pthread_t c;
  if (pthread_create(&c, NULL, consumer, NULL) != 0) return 2;
  struct timespec next;
  clock_gettime(CLOCK_MONOTONIC, &next);
  long per_tick = rate / 1000, ticks = (long)(secs * 1000);
  struct rusage r0, r1;
  getrusage(RUSAGE_SELF, &r0);
  for (long k = 0; k < ticks; ++k) {
    for (long i = 0; i < per_tick; ++i) {
      while (head - __atomic_load_n(&tail, __ATOMIC_ACQUIRE) >= RING) usleep(10);
      char *p = malloc(SIZE);
      if (!p) return 2;
      memset(p, 1, SIZE);   /* (every page of the block: a purged page faults again) */
      ring[head % RING] = p;
      __atomic_store_n(&head, head + 1, __ATOMIC_RELEASE);
    }
    next.tv_nsec += 1000000;
    if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
  }
  __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
  pthread_join(c, NULL);
  getrusage(RUSAGE_SELF, &r1);
  printf("%ld %ld\n", r1.ru_minflt - r0.ru_minflt, (long)(rate * secs));
  return 0;
}
