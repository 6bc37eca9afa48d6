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
 * and trim; an alarm turns a hang into a failure.  Then the file, signal and wait calls the
 * library made through the C library until 2026-12-06 (read, write, fstat, poll, nanosleep, ...:
 * libfaketime wraps stat, fstat, poll and nanosleep): the program runs itself again with the stats
 * thread writing every 5 ms and the tier (uffd, then madvise) paging a cold heap out and back, and
 * counts again (f3b8b02's library: the tier's handler thread's poll and read, its pwrite and
 * pread, the stats file's write, fstat and flock reached them). */
#include "tests/api/zns_test.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

static pthread_mutex_t g_tracer = PTHREAD_MUTEX_INITIALIZER;
static __thread int t_in_tracer;
static char *g_lines[1024];
static unsigned g_next;
static unsigned long g_logged;
static __thread int t_own;                /* the test's own call (not the library's) */
static unsigned long g_library_calls;     /* calls that reached the wrappers from elsewhere */
static char g_library_last[32];
static __thread int t_slow; /* this thread's lines are slow to write out (a full pipe): 1 ms */

static int g_again;                       /* a run again (WRAP_LOCK_AGAIN=label: see run_again) */
static const char *g_again_label;
static long raw6(long nr, long a, long b, long c, long d, long e, long f);
static void raw_write2(const char *m, size_t n) { raw6(SYS_write, 2, (long)m, (long)n, 0, 0, 0); }

static void trace_from(const char *what, const void *caller) {
  if (t_in_tracer) return;
  t_in_tracer = 1;
  Dl_info where;
  if (!t_own && !(dladdr(caller, &where) && where.dli_fname && strstr(where.dli_fname, "libunwind"))) {
    __atomic_fetch_add(&g_library_calls, 1, __ATOMIC_RELAXED);
    snprintf(g_library_last, sizeof g_library_last, "%s", what);
    if (g_again) {   /* (also after main: the stats' last dump at exit) */
      char m[128];
      int n = snprintf(m, sizeof m, "FAIL wrap_lock (again, %s): the allocator called %s() through the program's symbol\n",
                       g_again_label, what);
      raw_write2(m, (size_t)n);
      _exit(3);
    }
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

/* The library's calls are made with its locks held; the profiler library's unwinder (libunwind)
 * makes its own (mmap, msync, ...) while a sampled request's stack is taken, which holds none
 * (prof_take's capture): those are not counted. */
#define trace(what) trace_from(what, __builtin_return_address(0))

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

/* The rest of what the library called through the C library before 2026-12-06. */
#define WRAP(ret, name, params, ...)        \
  ret name params {                         \
    trace(#name);                           \
    return (ret)RAW(__VA_ARGS__);           \
  }
#define Z 0
WRAP(ssize_t, read, (int fd, void *b, size_t n), SYS_read, fd, b, n, Z, Z, Z)
ssize_t write(int fd, const void *b, size_t n) {   /* fd 2: the test's own reports (zt_log) */
  if (fd != 2) trace("write");
  return (ssize_t)RAW(SYS_write, fd, b, n, 0, 0, 0);
}
WRAP(ssize_t, pread, (int fd, void *b, size_t n, off_t o), SYS_pread64, fd, b, n, o, Z, Z)
WRAP(ssize_t, pwrite, (int fd, const void *b, size_t n, off_t o), SYS_pwrite64, fd, b, n, o, Z, Z)
WRAP(int, close, (int fd), SYS_close, fd, Z, Z, Z, Z, Z)
WRAP(off_t, lseek, (int fd, off_t o, int w), SYS_lseek, fd, o, w, Z, Z, Z)
WRAP(int, ftruncate, (int fd, off_t n), SYS_ftruncate, fd, n, Z, Z, Z, Z)
WRAP(int, fallocate, (int fd, int m, off_t o, off_t n), SYS_fallocate, fd, m, o, n, Z, Z)
WRAP(int, flock, (int fd, int op), SYS_flock, fd, op, Z, Z, Z, Z)
WRAP(int, fstat, (int fd, struct stat *st), SYS_fstat, fd, st, Z, Z, Z, Z)
WRAP(int, stat, (const char *path, struct stat *st), SYS_newfstatat, AT_FDCWD, path, st, Z, Z, Z)
WRAP(int, unlink, (const char *path), SYS_unlinkat, AT_FDCWD, path, Z, Z, Z, Z)
WRAP(int, rename, (const char *a, const char *b), SYS_renameat, AT_FDCWD, a, AT_FDCWD, b, Z, Z)
WRAP(int, pipe2, (int fds[2], int fl), SYS_pipe2, fds, fl, Z, Z, Z, Z)
WRAP(ssize_t, sendfile, (int o, int i, off_t *off, size_t n), SYS_sendfile, o, i, off, n, Z, Z)
WRAP(int, mincore, (void *p, size_t n, unsigned char *v), SYS_mincore, p, n, v, Z, Z, Z)
WRAP(int, msync, (void *p, size_t n, int fl), SYS_msync, p, n, fl, Z, Z, Z)
WRAP(ssize_t, process_vm_readv,
     (pid_t pid, const struct iovec *l, unsigned long nl, const struct iovec *r, unsigned long nr, unsigned long fl),
     SYS_process_vm_readv, pid, l, nl, r, nr, fl)
WRAP(pid_t, getpid, (void), SYS_getpid, Z, Z, Z, Z, Z, Z)
WRAP(int, sched_yield, (void), SYS_sched_yield, Z, Z, Z, Z, Z, Z)
WRAP(int, nanosleep, (const struct timespec *q, struct timespec *m), SYS_nanosleep, q, m, Z, Z, Z, Z)
WRAP(int, poll, (struct pollfd *f, nfds_t n, int t), SYS_poll, f, n, t, Z, Z, Z)
WRAP(int, sigpending, (sigset_t *set), SYS_rt_sigpending, set, 8, Z, Z, Z, Z)
WRAP(int, sigtimedwait, (const sigset_t *set, siginfo_t *i, const struct timespec *t), SYS_rt_sigtimedwait, set, i, t,
     8, Z, Z)
/* fcntl and ioctl: a descriptor, a command and one optional argument */
#define WRAP_FD_CMD(name, cmd_type, nr)             \
  int name(int fd, cmd_type cmd, ...) {             \
    va_list ap;                                     \
    va_start(ap, cmd);                              \
    long a = va_arg(ap, long);                      \
    va_end(ap);                                     \
    trace(#name);                                   \
    return (int)RAW(nr, fd, cmd, a, 0, 0, 0);       \
  }
WRAP_FD_CMD(fcntl, int, SYS_fcntl)
WRAP_FD_CMD(ioctl, unsigned long, SYS_ioctl)
int prctl(int op, ...) {
  va_list ap;
  va_start(ap, op);
  long a = va_arg(ap, long), b = va_arg(ap, long), c = va_arg(ap, long), d = va_arg(ap, long);
  va_end(ap);
  trace("prctl");
  return (int)RAW(SYS_prctl, op, a, b, c, d, 0);
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

/* A heap that goes cold: ~24 MB of blocks left alone long enough for the tier to page them out,
 * then read back and freed (fault-ins). */
static void cold_heap(void) {
  enum { kBlocks = 40000 };
  char **v = malloc(kBlocks * sizeof *v);
  REQUIRE(v);
  for (unsigned i = 0; i < kBlocks; i++) {
    size_t n = 64 + (i * 97u) % 1100;
    v[i] = malloc(n);
    REQUIRE(v[i]);
    memset(v[i], (int)(i & 0xff), n);
  }
  usleep(400 * 1000);
  /* A fork with the heap out: the tier's fork handlers (the madvise tier copies the heap for the
   * child: sendfile, pwrite, pipes) and the child's reads of slabs that were out. */
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    unsigned bad = 0;
    for (unsigned i = 0; i < kBlocks; i += 7) bad += (unsigned char)v[i][0] != (i & 0xff);
    void *x = malloc(300);
    free(x);
    _exit(bad ? 4 : 0);
  }
  int st;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child forked with the heap out: status %#x", st);
  for (unsigned i = 0; i < kBlocks; i++) {
    CHECK((unsigned char)v[i][0] == (i & 0xff), "block %u lost its contents", i);
    free(v[i]);
  }
  free(v);
}

/* The same program again, under one of the environments below (a child of its own; tests/prof
 * runs it so under the profiler library too). */
static const char *const kAgain[][5] = {
    {"ZNS_TIER=uffd", "ZNS_TIER_COLD_MS=20", "ZNS_STATS=%s/wrap_lock.%%p.jsonl", "ZNS_STATS_INTERVAL_MS=5", NULL},
    {"ZNS_TIER=madvise", "ZNS_TIER_COLD_MS=20", "ZNS_STATS=%s/wrap_lock.%%p.json", NULL, NULL},
};
static void run_again(char **argv, unsigned config) {
  char dir[256];   /* the stats files go there, and go */
  snprintf(dir, sizeof dir, "%s/zns-wrap-lock.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  REQUIRE(mkdtemp(dir));
  char vars[5][256], *envp[64];
  unsigned n = 0;
  for (unsigned i = 0; kAgain[config][i] && i < 4; i++) {
    snprintf(vars[i], sizeof vars[i], kAgain[config][i], dir);
    envp[n++] = vars[i];
  }
  snprintf(vars[4], sizeof vars[4], "WRAP_LOCK_AGAIN=%s", kAgain[config][0]);
  envp[n++] = vars[4];
  for (char **e = environ; *e && n < 63; e++)
    if (strncmp(*e, "ZNS_", 4) != 0) envp[n++] = *e;
  envp[n] = NULL;
  t_own = 1;   /* (the test's own fork and wait) */
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    execve("/proc/self/exe", argv, envp);
    _exit(127);
  }
  int st;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  DIR *d = opendir(dir);   /* (the run's and its forked child's: %p) */
  REQUIRE(d);
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (e->d_name[0] != '.') unlinkat(dirfd(d), e->d_name, 0);
  closedir(d);
  CHECK(rmdir(dir) == 0, "%s: %s", dir, strerror(errno));
  t_own = 0;
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the run with %s %s exited with status %#x", vars[0], vars[2], st);
}

int main(int argc, char **argv) {
  (void)argc;
  alarm(120);
  int zns = zt_zns_mode();
  const char *again = getenv("WRAP_LOCK_AGAIN");
  if (again) {   /* the tier and the stats thread at work: churn, a cold heap, the count */
    g_again = 1;
    g_again_label = again;
    pthread_t t[2];
    for (long i = 0; i < 2; i++) REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(i + 3)) == 0);
    for (int i = 0; i < 2; i++) REQUIRE(pthread_join(t[i], NULL) == 0);
    cold_heap();
    CHECK(g_library_calls == 0, "%s: %lu calls of the allocator went through the program's wrappers (the last: %s)",
          again, g_library_calls, g_library_last);
    return zt_finish("wrap_lock (again)");
  }
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
  if (zns)
    for (unsigned c = 0; c < sizeof kAgain / sizeof kAgain[0]; c++) run_again(argv, c);
  zt_log("wrap_lock: %s, %lu calls traced, no hang", zns ? "zns" : "glibc", g_logged);
  return zt_finish("wrap_lock");
}
