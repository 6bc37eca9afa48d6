/* A tracer in the program: its clock_gettime, mmap and madvise take the tracer's own mutex, free
 * the oldest of the lines it keeps and allocate a new one, then make the call.  The library took
 * the clock under its depot lock (on every slab handed out or returned) and mapped and purged
 * under its locks, through these symbols: thread A, holding the depot lock, waited in the wrapper
 * for the tracer's mutex while thread B, holding that mutex, waited in malloc for the depot lock
 * (lock-order inversion); and a lone thread's free in the wrapper waited for the depot lock it
 * held itself (a review, 2026-12-05).  The library now makes those calls without the C library's
 * symbols.  The tracer wraps syscall() too (libfaketime can): the library's first "raw" calls went
 * through it, and hung here as its mmap had (the next review).  The wrappers make the real call
 * with the instruction itself.  And a count: no call but the test's own may reach the wrappers
 * (39664c0's library: 1035 of its calls went through syscall() in the churn alone).  Two threads
 * churn blocks of many sizes (slabs come and go), call the clock themselves (the tracer logs it)
 * and trim; an alarm turns a hang into a failure. */
#include "tests/api/zns_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>

static pthread_mutex_t g_tracer = PTHREAD_MUTEX_INITIALIZER;
static __thread int t_in_tracer;
static char *g_lines[1024];
static unsigned g_next;
static unsigned long g_logged;
static __thread int t_own;                /* the test's own call (not the library's) */
static unsigned long g_library_calls;     /* calls that reached the wrappers from elsewhere */
static char g_library_last[32];
static __thread int t_slow; /* this thread's lines are slow to write out (a full pipe): 1 ms */

static void trace(const char *what) {
  if (t_in_tracer) return;
  t_in_tracer = 1;
  if (!t_own) {
    __atomic_fetch_add(&g_library_calls, 1, __ATOMIC_RELAXED);
    snprintf(g_library_last, sizeof g_library_last, "%s", what);
  }
  pthread_mutex_lock(&g_tracer);
  if (t_slow) usleep(1000);
  unsigned slot = g_next % 1024;
  free(g_lines[slot]); /* the oldest line goes */
  size_t n = 24 + (g_next++ * 136u) % 3800;
  g_lines[slot] = malloc(n); /* the new one: many classes */
  if (g_lines[slot]) snprintf(g_lines[slot], n, "%s", what);
  g_logged++;
  pthread_mutex_unlock(&g_tracer);
  t_in_tracer = 0;
}

static long raw6(long nr, long a, long b, long c, long d, long e, long f) {
#if defined(__x86_64__)
  register long r10 __asm__("r10") = d, r8 __asm__("r8") = e, r9 __asm__("r9") = f;
  long r;
  __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
#else
#error "wrap_lock: x86-64 only"
#endif
  if (r < 0 && r > -4096) {
    errno = (int)-r;
    return -1;
  }
  return r;
}
#define RAW(nr, a, b, c, d, e, f) raw6(nr, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

long syscall(long nr, ...) {
  va_list ap;
  va_start(ap, nr);
  long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long), d = va_arg(ap, long),
       e = va_arg(ap, long), f = va_arg(ap, long);
  va_end(ap);
  trace("syscall");
  return raw6(nr, a, b, c, d, e, f);
}
int clock_gettime(clockid_t c, struct timespec *ts) {
  trace("clock_gettime");
  return (int)RAW(SYS_clock_gettime, c, ts, 0, 0, 0, 0);
}
void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
  trace("mmap");
  return (void *)RAW(SYS_mmap, a, n, prot, flags, fd, off);
}
int madvise(void *a, size_t n, int advice) {
  trace("madvise");
  return (int)RAW(SYS_madvise, a, n, advice, 0, 0, 0);
}
int mprotect(void *a, size_t n, int prot) {
  trace("mprotect");
  return (int)RAW(SYS_mprotect, a, n, prot, 0, 0, 0);
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
    t_own = 1;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    t_own = 0;
    for (int i = 0; i < 256; i++) free(v[i]);
    if (it % 8 == 0) malloc_trim(0);
  }
  return NULL;
}

/* Phase 2: one thread grows the heap by ~140 MB (the depot commits and populates new groups under
 * its lock) while another makes traced system calls of its own, slowly, through syscall(). */
static volatile int g_grown;
static void *grower(void *arg) {
  enum { kBlocks = 1000000 };
  char **v = malloc(kBlocks * sizeof *v);
  REQUIRE(v);
  for (unsigned i = 0; i < kBlocks; i++) {
    v[i] = malloc(16 + (i * 37u) % 250);
    REQUIRE(v[i]);
    v[i][0] = 1;
  }
  for (unsigned i = 0; i < kBlocks; i++) free(v[i]);
  free(v);
  g_grown = 1;
  return arg;
}
static void *slow_caller(void *arg) {
  t_slow = 1;
  while (!g_grown) {
    t_own = 1;
    syscall(SYS_gettid);
    t_own = 0;
    usleep(200);
  }
  return arg;
}

int main(void) {
  alarm(120);
  int zns = zt_zns_mode();
  pthread_t t[2];
  for (long i = 0; i < 2; i++) REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(i + 1)) == 0);
  for (int i = 0; i < 2; i++) REQUIRE(pthread_join(t[i], NULL) == 0);
  CHECK(g_logged >= 6000, "the tracer logged %lu calls (the program's own clock calls: 6000)", g_logged);
  REQUIRE(pthread_create(&t[0], NULL, grower, NULL) == 0);
  REQUIRE(pthread_create(&t[1], NULL, slow_caller, NULL) == 0);
  for (int i = 0; i < 2; i++) REQUIRE(pthread_join(t[i], NULL) == 0);
  /* The C library's own calls use its internal entries, never these symbols: whatever reached
   * them and was not the test's came from the allocator (a count, not a race: deterministic). */
  CHECK(g_library_calls == 0, "%lu calls of the allocator went through the program's wrappers (the last: %s)",
        g_library_calls, g_library_last);
  zt_log("wrap_lock: %s, %lu calls traced, no hang", zns ? "zns" : "glibc", g_logged);
  return zt_finish("wrap_lock");
}
