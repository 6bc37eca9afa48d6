/* A program with an open() of its own that allocates (a tracer's log line, a copy of the path)
 * before it makes the call: the library must never call it, least of all while it holds a lock
 * its malloc needs.  heap_init read the NUMA node list with open() under its init lock from
 * fe9d876 until a review found it (the first malloc deadlocked in the wrapper's strdup), and the
 * tiers' backing file was opened so all along (ZNS_TIER=madvise or uffd deadlocked the same way).
 * The program also wraps mmap, mprotect, madvise and getrandom, which the library called under
 * its init lock (every one deadlocked at the first malloc until 2026-12-05): the memory calls are
 * raw system calls now (the wrappers never see them), and a malloc from inside getrandom is
 * served by the next allocator rather than wait for the lock.
 * The program runs itself again, in a child watched with a deadline, with no options, with each
 * tier, and with a .jsonl statistics file written by its interval thread; in each the open()
 * wrapper must have been called exactly once, by the program.  Runs preloaded and linked (the
 * program's functions interpose either way). */
#include "tests/api/zns_test.h"

#include <stdarg.h>
#include <sys/syscall.h>

static int g_opens; /* calls of the wrapper */

int open(const char *path, int flags, ...) {
  va_list ap;
  va_start(ap, flags);
  int mode = (flags & (O_CREAT | O_TMPFILE)) ? va_arg(ap, int) : 0;
  va_end(ap);
  char *copy = strdup(path); /* the wrapper allocates */
  if (!copy) return -1;
  __atomic_add_fetch(&g_opens, 1, __ATOMIC_RELAXED);
  int fd = (int)syscall(SYS_openat, AT_FDCWD, copy, flags, mode);
  free(copy);
  return fd;
}

/* The calls the library makes under its init lock (and elsewhere under its locks), wrapped the
 * same way: the library goes on calling these through the C library, so the wrappers run, and
 * their mallocs must not wait for a lock their own thread holds (served by the next allocator). */
static int g_wrapped; /* calls of the wrappers below */
#define WRAP_BEGIN()                                                                               \
  do {                                                                                             \
    char *c_ = strdup("a tracer's log line");                                                      \
    __atomic_add_fetch(&g_wrapped, 1, __ATOMIC_RELAXED);                                           \
    free(c_);                                                                                      \
  } while (0)
void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
  WRAP_BEGIN();
  return (void *)syscall(SYS_mmap, a, n, prot, flags, fd, off);
}
int mprotect(void *a, size_t n, int prot) {
  WRAP_BEGIN();
  return (int)syscall(SYS_mprotect, a, n, prot);
}
int madvise(void *a, size_t n, int advice) {
  WRAP_BEGIN();
  return (int)syscall(SYS_madvise, a, n, advice);
}
ssize_t getrandom(void *buf, size_t n, unsigned flags) {
  WRAP_BEGIN();
  return (ssize_t)syscall(SYS_getrandom, buf, n, flags);
}

static int child(int zns) {
  char *p = ZT_OPAQUE(malloc(100));
  REQUIRE(p);
  if (zns) CHECK(zns_owns(p), "malloc(100) not from the slab");
  free(p);
  for (int i = 0; i < 20000; i++) free(ZT_OPAQUE(malloc((size_t)(16 + i % 4000))));
  if (getenv("ZNS_STATS_INTERVAL_MS")) usleep(100 * 1000); /* a few lines from the interval thread */
  int fd = open("/proc/self/status", O_RDONLY);            /* the wrapper itself works */
  CHECK(fd >= 0, "open through the wrapper failed: %s", strerror(errno));
  if (fd >= 0) close(fd);
  CHECK(g_opens == 1, "the program's open() was called %d times (the library's own opens must not reach it)",
        g_opens);
  if (zns) CHECK(g_wrapped > 0, "the library made none of the wrapped calls (getrandom at start): test broken?");
  return zt_finish(getenv("OPEN_WRAP_SETUP"));
}

int main(int argc, char **argv) {
  (void)argc;
  int zns = zt_zns_mode();
  if (getenv("OPEN_WRAP_SETUP")) return child(zns);
  char jsonl[64];
  snprintf(jsonl, sizeof jsonl, "/tmp/open_wrap_%d.jsonl", (int)getpid());
  const char *setups[][3] = {{"plain", NULL, NULL},
                             {"tier-madvise", "ZNS_TIER=madvise", NULL},
                             {"tier-uffd", "ZNS_TIER=uffd", NULL},
                             {"stats-jsonl", "ZNS_STATS_INTERVAL_MS=10", jsonl}};
  for (int s = 0; s < 4; s++) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      setenv("OPEN_WRAP_SETUP", setups[s][0], 1);
      if (setups[s][1]) putenv((char *)setups[s][1]);
      if (setups[s][2]) setenv("ZNS_STATS", setups[s][2], 1);
      execv("/proc/self/exe", argv);
      _exit(127);
    }
    int st = 0, waited = 0;
    for (double t0 = zt_now(); !waited && zt_now() - t0 < 30;) {
      if (waitpid(pid, &st, WNOHANG) == pid) waited = 1;
      else usleep(10 * 1000);
    }
    if (!waited) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
    }
    CHECK(waited, "%s: hung (killed after 30 s): a lock held across the program's open()?", setups[s][0]);
    CHECK(!waited || (WIFEXITED(st) && WEXITSTATUS(st) == 0), "%s: exit status %#x", setups[s][0], st);
  }
  unlink(jsonl);
  return zt_finish("open_wrap");
}
