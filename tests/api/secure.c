/* ZNS_SECURE=1, the hardened mode (issue 6).  Run without ZNS_SECURE, the program first checks
 * that the default mode does NOT do what secure mode promises (so every check below can fail),
 * then runs itself again with ZNS_SECURE=1 and checks each promise:
 *   - slot order within a slab is random;
 *   - a freed block is zeroed at once and not handed out again for a while (quarantine);
 *   - misuse aborts with one line naming the address: a write after free (caught when the block
 *     leaves the quarantine or is handed out again), a double free while the block sits in this or
 *     another thread's quarantine, realloc / malloc_usable_size of a quarantined block;
 *   - a linear overflow or underflow runs into a guard page (SIGSEGV) within one group of slabs,
 *     where the default mode lets it run on.
 * Misuse cases run in forked children. */
#include "tests/api/zns_test.h" /* first: defines _GNU_SOURCE */

#include <pthread.h>
#include <semaphore.h>

#define GROUP_BYTES (128 * 4096) /* kGuardGroup pages (core/heap.h) */

static int secure_on(void) {
  const char *e = getenv("ZNS_SECURE");
  return e && strcmp(e, "1") == 0;
}

/* Of n consecutive mallocs of `size`, the fraction whose address is below the previous one. */
static double descents(size_t size, int n) {
  void **v = (void **)__libc_malloc(sizeof(void *) * (size_t)n);
  int down = 0;
  for (int i = 0; i < n; i++) {
    v[i] = ZT_OPAQUE(malloc(size));
    if (i && (uintptr_t)v[i] < (uintptr_t)v[i - 1]) down++;
  }
  for (int i = 0; i < n; i++) free(v[i]);
  __libc_free(v);
  return (double)down / (n - 1);
}

/* Is p handed out again within the next n mallocs of the same size? (all kept live meanwhile) */
static int reused_within(void *p, size_t size, int n) {
  void **v = (void **)__libc_malloc(sizeof(void *) * (size_t)n);
  int hit = 0;
  for (int i = 0; i < n; i++) {
    v[i] = ZT_OPAQUE(malloc(size));
    if (v[i] == p) hit = 1;
  }
  for (int i = 0; i < n; i++) free(v[i]);
  __libc_free(v);
  return hit;
}

/* Bytes [8, n) of a block just freed, read back: how many are still the pattern 0xa5. */
static size_t pattern_left_after_free(size_t n) {
  unsigned char *p = (unsigned char *)ZT_OPAQUE(malloc(n));
  memset(p, 0xa5, n);
  uintptr_t a = zt_addr(p);
  free(p);
  const volatile unsigned char *q = (const volatile unsigned char *)a;
  size_t left = 0;
  for (size_t i = 8; i < n; i++) left += q[i] == 0xa5;
  return left;
}

/* ---- misuse, in children ---------------------------------------------------------------------- */
static int g_info_fd = -1;
static void announce(void *bad) {
  uintptr_t a = (uintptr_t)bad;
  zt_write_all(g_info_fd, (const char *)&a, sizeof a);
}

static void case_write_after_free(void) {
  char *p = (char *)ZT_OPAQUE(malloc(64));
  uintptr_t a = zt_addr(p);
  free(p);
  ((volatile char *)a)[30] = 1; /* the bug */
  announce((void *)a);
  zns_trim(); /* the quarantine is released (and checked) now */
}
static void case_write_after_free_reuse(void) { /* caught when the slot is handed out again */
  char *p = (char *)ZT_OPAQUE(malloc(80));
  uintptr_t a = zt_addr(p);
  free(p);
  zns_trim(); /* out of the quarantine: free in its slab */
  ((volatile char *)a)[70] = 7;
  announce((void *)a);
  for (int i = 0; i < 100000; i++) (void)ZT_OPAQUE(malloc(80)); /* until the slot comes round */
}
static void case_double_free_quarantined(void) {
  void *p = ZT_OPAQUE(malloc(48)), *again = ZT_OPAQUE(p);
  free(p);
  announce(again);
  free(again);
}
static sem_t g_freed, g_done;
static void *free_and_wait(void *p) {
  free(p);
  sem_post(&g_freed);
  sem_wait(&g_done); /* stays alive: the block stays in this thread's quarantine */
  return NULL;
}
static void case_double_free_other_quarantine(void) {
  sem_init(&g_freed, 0, 0);
  sem_init(&g_done, 0, 0);
  void *p = ZT_OPAQUE(malloc(200));
  pthread_t t;
  pthread_create(&t, NULL, free_and_wait, p);
  sem_wait(&g_freed);
  announce(p);
  free(ZT_OPAQUE(p));
  sem_post(&g_done);
  pthread_join(t, NULL);
}
static void case_realloc_quarantined(void) {
  void *p = ZT_OPAQUE(malloc(100)), *again = ZT_OPAQUE(p);
  free(p);
  announce(again);
  (void)ZT_OPAQUE(realloc(again, 200));
}
static void case_usable_quarantined(void) {
  void *p = ZT_OPAQUE(malloc(1000)), *again = ZT_OPAQUE(p);
  free(p);
  announce(again);
  (void)ZT_OPAQUE(malloc_usable_size(again));
}
/* A block of a class nothing else uses, after 2 MiB of others: in the default mode the overflow
 * and the underflow below stay inside the region (no fault), so only a guard can stop them. */
static volatile char *deep_block(void) {
  for (int i = 0; i < 512; i++) (void)ZT_OPAQUE(malloc(4096));
  return (volatile char *)ZT_OPAQUE(malloc(3000));
}
static void case_overflow(void) { /* writes forward from a block, a cache line at a time */
  volatile char *p = deep_block();
  announce((void *)p);
  for (size_t off = 0; off < GROUP_BYTES + 8192; off += 64) p[off] = 0x41;
}
static void case_underflow(void) {
  volatile char *p = deep_block();
  announce((void *)p);
  for (size_t off = 0; off < GROUP_BYTES + 8192; off += 64) p[-(ptrdiff_t)off - 1] = 0x41;
}

typedef struct {
  const char *name;
  void (*fn)(void);
  int sig;          /* expected signal in secure mode */
  const char *what; /* expected in the stderr line (SIGABRT cases) */
} sec_case;

static const sec_case cases[] = {
    {"write after free, caught when the quarantine lets go", case_write_after_free, SIGABRT, "write after free"},
    {"write after free, caught when the slot is handed out", case_write_after_free_reuse, SIGABRT, "write after free"},
    {"double free while in this thread's quarantine", case_double_free_quarantined, SIGABRT, "double free"},
    {"double free while in another thread's quarantine", case_double_free_other_quarantine, SIGABRT, "double free"},
    {"realloc of a quarantined block", case_realloc_quarantined, SIGABRT, "freed block"},
    {"malloc_usable_size of a quarantined block", case_usable_quarantined, SIGABRT, "freed block"},
    {"linear overflow from a block runs into a guard page", case_overflow, SIGSEGV, NULL},
    {"linear underflow from a block runs into a guard page", case_underflow, SIGSEGV, NULL},
};

static void check_case(const sec_case *c) {
  char out[4096], hex[32];
  uintptr_t addr = 0;
  size_t ilen = 0;
  int st = zt_run_child(c->fn, NULL, &g_info_fd, out, sizeof out, &addr, sizeof addr, &ilen);
  if (ilen != sizeof addr) addr = 0;
  int before = zt_failures;
  if (!secure_on()) { /* the default mode: overflows run on; no guard */
    if (c->sig == SIGSEGV)
      CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 42, "%s: default mode, want no fault (no guard pages), status %#x [%s]",
            c->name, st, out);
    zt_log("  %s  (default) %s: %s", zt_failures == before ? "ok  " : "FAIL", c->name,
           WIFEXITED(st) ? "ran on" : "stopped");
    return;
  }
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == c->sig, "%s: want signal %d (%s), got status %#x (exit %d, signal %d) [%s]",
        c->name, c->sig, strsignal(c->sig), st, WIFEXITED(st) ? WEXITSTATUS(st) : -1,
        WIFSIGNALED(st) ? WTERMSIG(st) : -1, out);
  if (c->sig == SIGABRT) {
    int lines = 0;
    for (const char *s = out; *s; s++) lines += *s == '\n';
    snprintf(hex, sizeof hex, "%lx)", (unsigned long)addr);
    CHECK(lines == 1 && strstr(out, "zns-slab: ") != NULL, "%s: want one zns-slab line, got [%s]", c->name, out);
    CHECK(strstr(out, c->what) != NULL, "%s: want \"%s\" in [%s]", c->name, c->what, out);
    CHECK(addr && strstr(out, hex) != NULL, "%s: want the address %#lx in [%s]", c->name, (unsigned long)addr, out);
  }
  zt_log("  %s  %s: %s", zt_failures == before ? "ok  " : "FAIL", c->name,
         c->sig == SIGSEGV ? "SIGSEGV\n" : out);
}

int main(int argc, char **argv) {
  (void)argc;
  if (!zt_zns_mode()) {
    zt_log("secure: skipped under plain glibc");
    return 0;
  }
  int sec = secure_on();
  zt_log("secure: mode %s, ZNS_SECURE=%d", zt_mode_name(), sec);

  double d = descents(48, 400);
  void *p = ZT_OPAQUE(malloc(96));
  free(p);
  int reused = reused_within(p, 96, 200);
  size_t left = pattern_left_after_free(200);
  if (sec) {
    CHECK(d > 0.25, "slot order: %.0f%% of consecutive mallocs go down in address, want > 25%% (random order)", d * 100);
    CHECK(!reused, "a freed block came back within 200 mallocs of its size (want delayed reuse)");
    CHECK(left == 0, "a freed block still holds %zu of 192 pattern bytes (want zeroed at free)", left);
  } else { /* what the default mode does: shows the checks above can fail */
    CHECK(d < 0.1, "default mode: %.0f%% of consecutive mallocs go down in address (want ascending)", d * 100);
    CHECK(reused, "default mode: a freed block did not come straight back");
    CHECK(left == 192, "default mode: a freed block lost its contents (%zu of 192 pattern bytes left)", left);
  }
  zt_log("  slot order: %.0f%% descents; freed block reused within 200: %s; pattern bytes left after free: %zu",
         d * 100, reused ? "yes" : "no", left);

  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i]);

  /* the stats dump says which mode runs */
  char path[] = "/tmp/zns-secure-stats-XXXXXX", doc[256] = {0};
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  unlink(path);
  CHECK(zns_stats_print(fd, 1) == 0, "zns_stats_print failed");
  ssize_t got = pread(fd, doc, sizeof doc - 1, 0);
  close(fd);
  CHECK(got > 0 && strstr(doc, sec ? "\"secure\":1" : "\"secure\":0") != NULL,
        "stats JSON does not say \"secure\":%d: [%.80s]", sec, doc);

  if (!sec) { /* now the same program in secure mode */
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      setenv("ZNS_SECURE", "1", 1);
      execv("/proc/self/exe", argv);
      _exit(127);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the ZNS_SECURE=1 run failed (status %#x)", st);
  }
  return zt_finish(sec ? "secure (ZNS_SECURE=1)" : "secure");
}
