/* Shared helpers for the tests/api and tests/stress programs (plain C/C++, no framework).
 *
 * Every program runs in three setups:
 *   - LD_PRELOAD=build/libzns_slab.so          (ZNS_EXPECT=1 from tests/run.sh)
 *   - linked with libzns_slab.a (-DZNS_LINKED)  (ZNS_EXPECT=1 from tests/run.sh)
 *   - plain glibc, no shim                      (ZNS-specific checks are skipped)
 * The project API is declared weak: zns_owns == NULL means "no ZNS-Slab in this process".
 *
 * CHECK(cond [, fmt, args...])   records a failure (file:line, expression, values) and goes on.
 * REQUIRE(cond [, fmt, args...]) the same, then _exit(1) at once (use when going on would crash,
 *                                 and in threads).
 * Messages are formatted on the stack and written with write(2): no allocation on the error path.
 *
 * This header is not a test itself (tests.mk only picks up *.c / *.cpp).  Note that tests.mk
 * does not list it as a prerequisite: after editing it, rebuild the tests with `make -B ...`. */
#ifndef ZNS_TEST_H
#define ZNS_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shim/zns_slab.h"

#ifdef __cplusplus
extern "C" {
#endif
/* Weak re-declarations: resolve to NULL when ZNS-Slab is neither preloaded nor linked. */
int zns_owns(const void *p) __attribute__((weak));
size_t zns_block_size(const void *p) __attribute__((weak));
int zns_stats_print(int fd, int json) __attribute__((weak));
void zns_trim(void) __attribute__((weak));
/* glibc's own allocator, reachable even when malloc is interposed ("foreign" blocks). */
void *__libc_malloc(size_t n);
void *__libc_calloc(size_t n, size_t m);
void *__libc_realloc(void *p, size_t n);
void *__libc_memalign(size_t align, size_t n);
void __libc_free(void *p);
#ifdef __cplusplus
}
#endif

#define ZT_MAX_SMALL 4096u /* largest request / alignment served by the slab */
#define ZT_GROUP_SHIFT 17  /* a slab's group is 1 << this bytes (kGroupShift, core/size_class.h) */
#define ZT_UNUSED __attribute__((unused))

/* ---- failure reporting ----------------------------------------------------------------------- */
static int zt_failures;       /* updated atomically */
static long zt_checks;        /* approximate (not atomic) */
static int zt_quiet_after = 40; /* stop printing after this many failures (keep counting) */

static ZT_UNUSED void zt_write_all(int fd, const char *s, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, s, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return;
    }
    s += w;
    n -= (size_t)w;
  }
}

static ZT_UNUSED __attribute__((format(printf, 1, 2))) void zt_log(const char *fmt, ...) {
  char buf[1024];
  int saved = errno;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  if (n == 0 || buf[n - 1] != '\n') buf[n++] = '\n';
  zt_write_all(2, buf, (size_t)n);
  errno = saved;
}

static ZT_UNUSED __attribute__((format(printf, 4, 5))) void
zt_fail(const char *file, int line, const char *expr, const char *fmt, ...) {
  int saved = errno;
  int k = __atomic_add_fetch(&zt_failures, 1, __ATOMIC_RELAXED);
  if (k > zt_quiet_after) {
    errno = saved;
    return;
  }
  char buf[1536];
  int n = snprintf(buf, sizeof buf, "FAIL %s:%d: CHECK(%s)", file, line, expr);
  if (n < 0) n = 0;
  if (fmt && *fmt == ' ') fmt++; /* CHECK passes " " fmt: a leading space keeps -Wformat quiet */
  if (fmt && *fmt && n < (int)sizeof buf - 8) {
    n += snprintf(buf + n, sizeof buf - (size_t)n, " -- ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(buf + n, sizeof buf - (size_t)n, fmt, ap);
    va_end(ap);
    if (m > 0) n += m;
  }
  if (n > (int)sizeof buf - 2) n = (int)sizeof buf - 2;
  buf[n++] = '\n';
  zt_write_all(2, buf, (size_t)n);
  if (k == zt_quiet_after) zt_log("(further failures are counted but not printed)");
  errno = saved;
}

#define CHECK(cond, ...)                                                                          \
  do {                                                                                            \
    zt_checks++;                                                                                  \
    if (__builtin_expect(!(cond), 0)) zt_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);         \
  } while (0)

#define REQUIRE(cond, ...)                                                                        \
  do {                                                                                            \
    zt_checks++;                                                                                  \
    if (__builtin_expect(!(cond), 0)) {                                                           \
      zt_quiet_after = 1000000;                                                                   \
      zt_fail(__FILE__, __LINE__, #cond, " " __VA_ARGS__);                                         \
      zt_log("aborting the test program after a fatal check");                                    \
      _exit(1);                                                                                   \
    }                                                                                             \
  } while (0)

/* End of main: print a summary line, return the exit status. */
static ZT_UNUSED int zt_finish(const char *name) {
  int f = __atomic_load_n(&zt_failures, __ATOMIC_RELAXED);
  if (f) {
    zt_log("%s: FAILED (%d failed checks of ~%ld)", name, f, zt_checks);
    return 1;
  }
  zt_log("%s: ok (~%ld checks)", name, zt_checks);
  return 0;
}

/* ---- mode ------------------------------------------------------------------------------------ */
/* 1 when ZNS-Slab is in the process (zns_owns resolved), 0 under plain glibc.  Fails the test
 * when ZNS_EXPECT=1 but the shim is missing. */
static ZT_UNUSED int zt_zns_mode(void) {
  const char *e = getenv("ZNS_EXPECT");
  int expect = e && strcmp(e, "1") == 0;
  int active = zns_owns != NULL;
  if (expect)
    REQUIRE(active, "ZNS_EXPECT=1 but zns_owns is not resolved: libzns_slab is not preloaded/linked");
  if (active) {
    REQUIRE(zns_block_size != NULL && zns_stats_print != NULL && zns_trim != NULL,
            "zns_owns resolved but not the rest of the API: block_size=%p stats=%p trim=%p",
            (void *)zns_block_size, (void *)zns_stats_print, (void *)zns_trim);
  }
  return active;
}

static ZT_UNUSED const char *zt_mode_name(void) {
#ifdef ZNS_LINKED
  return zns_owns ? "linked (libzns_slab.a)" : "linked?? (zns_owns missing)";
#else
  return zns_owns ? "preload (libzns_slab.so)" : "plain glibc (ZNS checks skipped)";
#endif
}

/* Hide a pointer's provenance from the optimizer (no malloc/free pair elision, no folding of
 * loads from calloc'ed memory to 0, no "malloc result is never NULL"-style assumptions). */
#define ZT_OPAQUE(p) ({ __typeof__(p) zt_o_ = (p); __asm__ volatile("" : "+r"(zt_o_) : : "memory"); zt_o_; })
static ZT_UNUSED size_t zt_opaque_size(size_t n) {
  __asm__ volatile("" : "+r"(n));
  return n;
}
/* A block's address for alignment checks: GCC knows the alignment that malloc, memalign and
 * friends promise (alloc_align, MALLOC_ABI_ALIGNMENT) and folds "p % align == 0" to true. */
#define zt_addr(p) ((uintptr_t)ZT_OPAQUE((const void *)(p)))
/* errno, read for real (GCC may assume that some builtins, e.g. free, leave errno alone). */
static ZT_UNUSED __attribute__((noinline)) int zt_errno(void) {
  int *e = &errno;
  __asm__ volatile("" : "+r"(e) : : "memory");
  return *e;
}
/* posix_memalign through an opaque pointer: as a builtin, GCC assumes things about *memptr on
 * failure (it folded "p == sentinel" to true), which would hide an allocator that writes it. */
typedef int (*zt_posix_memalign_fn)(void **, size_t, size_t);
static ZT_UNUSED int zt_posix_memalign(void **out, size_t align, size_t n) {
  zt_posix_memalign_fn f = posix_memalign;
  __asm__ volatile("" : "+r"(f));
  int rc = f(out, align, n);
  __asm__ volatile("" : : "r"(out) : "memory");
  return rc;
}

/* Expected ownership of a request of n bytes with alignment align (0/1 = plain malloc). */
static ZT_UNUSED int zt_should_own(size_t n, size_t align) { return n <= ZT_MAX_SMALL && align <= ZT_MAX_SMALL; }

/* ---- byte patterns --------------------------------------------------------------------------- */
static inline uint64_t zt_mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
#define ZT_PAT_K 0x9E3779B97F4A7C15ULL
/* Byte i of the pattern depends on (key, i) only, so a prefix of a pattern is a pattern. */
static inline void zt_fill(void *p, size_t n, uint64_t key) {
  __asm__ volatile("" : : "r"(p) : "memory"); /* p escapes: no malloc/free pair elision */
  unsigned char *c = (unsigned char *)p;
  uint64_t v = zt_mix64(key) | 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = v + (uint64_t)i * ZT_PAT_K;
    memcpy(c + i, &w, 8);
  }
  if (i < n) {
    uint64_t w = v + (uint64_t)i * ZT_PAT_K;
    memcpy(c + i, &w, n - i);
  }
}
/* Returns -1 when the n bytes at p hold the pattern of key, else the first bad offset. */
static inline long zt_verify(const void *p, size_t n, uint64_t key) {
  __asm__ volatile("" : : "r"(p) : "memory"); /* the bytes must really be read */
  const unsigned char *c = (const unsigned char *)p;
  uint64_t v = zt_mix64(key) | 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = v + (uint64_t)i * ZT_PAT_K, g;
    memcpy(&g, c + i, 8);
    if (g != w) {
      for (size_t j = 0; j < 8; j++)
        if (((g >> (8 * j)) & 0xff) != ((w >> (8 * j)) & 0xff)) return (long)(i + j);
    }
  }
  if (i < n) {
    uint64_t w = v + (uint64_t)i * ZT_PAT_K, g = 0;
    memcpy(&g, c + i, n - i);
    for (size_t j = 0; j < n - i; j++)
      if (((g >> (8 * j)) & 0xff) != ((w >> (8 * j)) & 0xff)) return (long)(i + j);
  }
  return -1;
}
/* Returns -1 when all n bytes are zero, else the first non-zero offset. */
static inline long zt_first_nonzero(const void *p, size_t n) {
  __asm__ volatile("" : : "r"(p) : "memory"); /* no folding of calloc'ed bytes to 0 */
  const unsigned char *c = (const unsigned char *)p;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t g;
    memcpy(&g, c + i, 8);
    if (g) break;
  }
  for (; i < n; i++)
    if (c[i]) return (long)i;
  return -1;
}

/* xorshift64* PRNG */
static inline uint64_t zt_rand(uint64_t *s) {
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* ---- process info ---------------------------------------------------------------------------- */
/* Field `field` of /proc/self/statm (0: the virtual size, 1: the resident set) in bytes, read
 * without allocating; 0 if it cannot be read. */
static ZT_UNUSED size_t zt_statm_bytes(int field) {
  char buf[256];
  int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = 0;
  char *s = buf;
  for (int i = 0; i < field; i++) {
    while (*s && *s != ' ') s++;
    if (*s) s++;
  }
  unsigned long pages = strtoul(s, NULL, 10);
  return (size_t)pages * (size_t)sysconf(_SC_PAGESIZE);
}
/* Resident set size in bytes. */
static ZT_UNUSED size_t zt_rss_bytes(void) { return zt_statm_bytes(1); }
/* Virtual size (VmSize) in bytes: what RLIMIT_AS counts. */
static ZT_UNUSED size_t zt_vm_bytes(void) { return zt_statm_bytes(0); }

static ZT_UNUSED double zt_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static ZT_UNUSED void zt_no_core_dumps(void) {
  struct rlimit rl = {0, 0};
  setrlimit(RLIMIT_CORE, &rl);
}

/* Reads fd until EOF or until cap bytes; returns how many. */
static ZT_UNUSED size_t zt_read_all(int fd, void *buf, size_t cap) {
  size_t len = 0;
  while (len < cap) {
    ssize_t r = read(fd, (char *)buf + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
  }
  return len;
}

/* Runs fn() in a forked child for a misuse test: no core dumps, SIGABRT and SIGSEGV at their
 * defaults, a 20 s alarm (a hang shows up as SIGALRM), stderr into a pipe.  The child gets a second
 * pipe in *info_fd to tell the parent things (the address it is about to misuse); if fn returns, the
 * child runs after() (if any) and exits 42.  The parent gets the child's stderr in out (NUL-ended,
 * cap bytes at most), what came through the info pipe in info (*info_len bytes), and the wait status. */
static ZT_UNUSED int zt_run_child(void (*fn)(void), void (*after)(void), int *info_fd, char *out, size_t cap,
                                  void *info, size_t info_cap, size_t *info_len) {
  int errp[2], infop[2];
  REQUIRE(pipe(errp) == 0 && pipe(infop) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    close(errp[0]);
    close(infop[0]);
    *info_fd = infop[1];
    zt_no_core_dumps();
    signal(SIGABRT, SIG_DFL);
    signal(SIGSEGV, SIG_DFL);
    alarm(20);
    dup2(errp[1], 2); /* everything the child prints goes to the pipe */
    close(errp[1]);
    fn();
    if (after) after();
    _exit(42);
  }
  close(errp[1]);
  close(infop[1]);
  out[zt_read_all(errp[0], out, cap - 1)] = 0;
  *info_len = zt_read_all(infop[0], info, info_cap);
  close(errp[0]);
  close(infop[0]);
  int st = 0;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return st;
}

#endif /* ZNS_TEST_H */
