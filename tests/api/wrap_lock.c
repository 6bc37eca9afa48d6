/* A tracer in the program: its clock_gettime, mmap and madvise take the tracer's own mutex, free
 * the oldest of the lines it keeps and allocate a new one, then make the call.  The library took
 * the clock under its depot lock (on every slab handed out or returned) and mapped and purged
 * under its locks, through these symbols: thread A, holding the depot lock, waited in the wrapper
 * for the tracer's mutex while thread B, holding that mutex, waited in malloc for the depot lock
 * (lock-order inversion); and a lone thread's free in the wrapper waited for the depot lock it
 * held itself (a review, 2026-12-05).  The library now makes those calls without the C library's
 * symbols.  Two threads churn blocks of many sizes (slabs come and go), call the clock themselves
 * (the tracer logs it) and trim; an alarm turns a hang into a failure. */
#include "tests/api/zns_test.h"

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static pthread_mutex_t g_tracer = PTHREAD_MUTEX_INITIALIZER;
static __thread int t_in_tracer;
static char *g_lines[1024];
static unsigned g_next;
static unsigned long g_logged;

static void trace(const char *what) {
  if (t_in_tracer) return;
  t_in_tracer = 1;
  pthread_mutex_lock(&g_tracer);
  unsigned slot = g_next % 1024;
  free(g_lines[slot]); /* the oldest line goes */
  size_t n = 24 + (g_next++ * 136u) % 3800;
  g_lines[slot] = malloc(n); /* the new one: many classes */
  if (g_lines[slot]) snprintf(g_lines[slot], n, "%s", what);
  g_logged++;
  pthread_mutex_unlock(&g_tracer);
  t_in_tracer = 0;
}

int clock_gettime(clockid_t c, struct timespec *ts) {
  trace("clock_gettime");
  return (int)syscall(SYS_clock_gettime, c, ts);
}
void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
  trace("mmap");
  return (void *)syscall(SYS_mmap, a, n, prot, flags, fd, off);
}
int madvise(void *a, size_t n, int advice) {
  trace("madvise");
  return (int)syscall(SYS_madvise, a, n, advice);
}

static void *worker(void *arg) {
  uint64_t seed = (uint64_t)(uintptr_t)arg;
  for (int it = 0; it < 3000; it++) {
    void *v[256];
    for (int i = 0; i < 256; i++) {
      v[i] = malloc(16 + zt_rand(&seed) % 4000);
      REQUIRE(v[i]);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    for (int i = 0; i < 256; i++) free(v[i]);
    if (it % 8 == 0) malloc_trim(0);
  }
  return NULL;
}

int main(void) {
  alarm(120);
  int zns = zt_zns_mode();
  pthread_t t[2];
  for (long i = 0; i < 2; i++) REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(i + 1)) == 0);
  for (int i = 0; i < 2; i++) REQUIRE(pthread_join(t[i], NULL) == 0);
  CHECK(g_logged >= 6000, "the tracer logged %lu calls (the program's own clock calls: 6000)", g_logged);
  zt_log("wrap_lock: %s, %lu calls traced, no hang", zns ? "zns" : "glibc", g_logged);
  return zt_finish("wrap_lock");
}
