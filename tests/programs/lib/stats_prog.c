/* A program that leaves a known number of live blocks per size class at exit, for
 * tests/programs/stats.sh (compiled there with cc; run under LD_PRELOAD=libzns_slab.so).
 *
 * Usage: stats_prog live N          allocate, free, exit
 *        stats_prog interval N MS   the same, then churn for about MS milliseconds (allocations
 *                                   that are all freed again) before it exits
 *
 * With 0 <= N <= MAX_N, the blocks still allocated at exit, beyond what N=0 leaves, are exactly
 *   N*1000 blocks of  24 B (size class  32): 600 from main, 400 from a second (exited) thread
 *   N* 500 blocks of 100 B (size class 112): 200 malloc + 50 realloc(20 -> 100) from main,
 *                                            250 calloc from the second thread
 *   N*   7 blocks of 3000 B (size class 3072): 4 from main, 3 from the second thread
 *   N*   3 blocks of 10000 B (> 4 KiB: the next allocator, "fallback")
 * and the allocations made (and freed again) on the way are
 *   class 32:  N*300 freed by main; N*150 made by the thread and freed by main after the join;
 *              N*50 given up by realloc(20 -> 100)                    -> allocated N*1500
 *   class 112: N*200 made by main and freed by the thread             -> allocated N*700
 *   class 3072: none                                                  -> allocated N*7
 *   fallback: N*2 blocks of 5000 B freed by main     -> fallback_allocs N*5, fallback_bytes N*40000
 * Every run does the same calls in the same order whatever N is (loops just run 0 times), so the
 * statistics of N=0 and N=1 differ by exactly the numbers above.  The counts are printed on
 * stdout (write(2), no stdio: nothing allocates but the calls listed) as "key value" lines.
 * The interval mode's churn is also identical for every N, and frees all it allocates.
 * Built without builtins so the compiler cannot drop a malloc/free pair. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_N 8

static void *keep32[MAX_N * 600], *tmp32[MAX_N * 300], *keep112[MAX_N * 250];
static void *keep3072[MAX_N * 4], *big_keep[MAX_N * 3], *big_tmp[MAX_N * 2];
static void *t_keep32[MAX_N * 400], *t_keep112[MAX_N * 250], *t_keep3072[MAX_N * 3];
static void *t_made32[MAX_N * 150];      /* made by the thread, freed by main */
static void *m_made112[MAX_N * 200];     /* made by main, freed by the thread */
static int n_arg;

static void put(const char *s) {
  size_t n = strlen(s);
  while (n) {
    ssize_t w = write(1, s, n);
    if (w <= 0) return;
    s += w; n -= (size_t)w;
  }
}
static void put_u(const char *key, unsigned long v) {
  char buf[64], *p = buf + sizeof buf;
  *--p = 0; *--p = '\n';
  do { *--p = (char)('0' + v % 10); v /= 10; } while (v);
  put(key); put(" "); put(p);
}
static void fail(const char *what) {
  put("stats_prog: "); put(what); put("\n");
  _exit(3);
}
static void *must(void *p, const char *what) {
  if (!p) fail(what);
  return p;
}

static void *thread_main(void *arg) {
  int n = n_arg, i;
  (void)arg;
  for (i = 0; i < n * 400; ++i) memset(t_keep32[i] = must(malloc(24), "malloc(24)"), 0x11, 24);
  for (i = 0; i < n * 250; ++i) t_keep112[i] = must(calloc(1, 100), "calloc(1, 100)");
  for (i = 0; i < n * 3; ++i) memset(t_keep3072[i] = must(malloc(3000), "malloc(3000)"), 0x33, 3000);
  for (i = 0; i < n * 150; ++i) memset(t_made32[i] = must(malloc(24), "malloc(24)"), 0x44, 24);
  /* remote frees: blocks of main's slabs */
  for (i = 0; i < n * 200; ++i) { free(m_made112[i]); m_made112[i] = 0; }
  return 0;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}
static long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* About `ms` milliseconds of allocations that are all freed again (the same for every N). */
static void churn(long ms) {
  static void *ring[256];
  static const size_t sizes[] = {24, 100, 3000, 48, 512};
  long end = now_ms() + ms;
  unsigned k = 0, i;
  while (now_ms() < end) {
    for (i = 0; i < 256; ++i) {
      if (ring[i]) free(ring[i]);
      ring[i] = must(malloc(sizes[(k + i) % 5]), "malloc (churn)");
      memset(ring[i], (int)k, 8);
    }
    ++k;
    sleep_ms(5);
  }
  for (i = 0; i < 256; ++i) { free(ring[i]); ring[i] = 0; }
}

int main(int argc, char **argv) {
  int interval = 0, n, i;
  long ms = 0;
  pthread_t th;
  if (argc >= 3 && !strcmp(argv[1], "live")) interval = 0;
  else if (argc >= 4 && !strcmp(argv[1], "interval")) { interval = 1; ms = atol(argv[3]); }
  else fail("usage: stats_prog live N | stats_prog interval N MS");
  n = atoi(argv[2]);
  if (n < 0 || n > MAX_N) fail("N out of range (0..8)");
  n_arg = n;

  /* main thread, class 32: kept, and freed again (local frees) */
  for (i = 0; i < n * 600; ++i) memset(keep32[i] = must(malloc(24), "malloc(24)"), 0x55, 24);
  for (i = 0; i < n * 300; ++i) memset(tmp32[i] = must(malloc(24), "malloc(24)"), 0x66, 24);
  /* class 112: 200 kept, 200 for the thread to free, 50 by realloc from class 32 */
  for (i = 0; i < n * 200; ++i) memset(keep112[i] = must(malloc(100), "malloc(100)"), 0x77, 100);
  for (i = 0; i < n * 200; ++i) memset(m_made112[i] = must(malloc(100), "malloc(100)"), 0x78, 100);
  for (i = 0; i < n * 50; ++i) {
    char *p = must(malloc(20), "malloc(20)");
    memset(p, 0x79, 20);
    p = must(realloc(p, 100), "realloc(p, 100)");
    memset(p + 20, 0x7a, 80);
    keep112[n * 200 + i] = p;
  }
  /* class 3072: 2 malloc, 2 calloc */
  for (i = 0; i < n * 4; ++i)
    keep3072[i] = must(i & 1 ? calloc(3, 1000) : malloc(3000), "malloc/calloc(3000)");
  /* > 4 KiB */
  for (i = 0; i < n * 3; ++i) memset(big_keep[i] = must(malloc(10000), "malloc(10000)"), 0x7b, 10000);
  for (i = 0; i < n * 2; ++i) memset(big_tmp[i] = must(malloc(5000), "malloc(5000)"), 0x7c, 5000);

  if (pthread_create(&th, 0, thread_main, 0) != 0) fail("pthread_create");
  if (pthread_join(th, 0) != 0) fail("pthread_join");

  for (i = 0; i < n * 300; ++i) { free(tmp32[i]); tmp32[i] = 0; }
  for (i = 0; i < n * 150; ++i) { free(t_made32[i]); t_made32[i] = 0; }  /* into the exited thread's slabs */
  for (i = 0; i < n * 2; ++i) { free(big_tmp[i]); big_tmp[i] = 0; }

  if (interval) churn(ms);

  put_u("n", (unsigned long)n);
  put_u("live_32", (unsigned long)n * 1000);
  put_u("live_112", (unsigned long)n * 500);
  put_u("live_3072", (unsigned long)n * 7);
  put_u("allocated_32", (unsigned long)n * 1500);
  put_u("allocated_112", (unsigned long)n * 700);
  put_u("allocated_3072", (unsigned long)n * 7);
  put_u("fallback_allocs", (unsigned long)n * 5);
  put_u("fallback_bytes", (unsigned long)n * (3 * 10000 + 2 * 5000));
  put("done\n");
  return 0;
}
