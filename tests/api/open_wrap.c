/* A program with an open() of its own that allocates (a tracer's log line, a copy of the path)
 * before it makes the call: the library must not call it while it holds a lock its malloc needs.
 * heap_init read the NUMA node list with open() under its init lock from fe9d876 until a review
 * found it: the first malloc deadlocked in the wrapper's strdup.  An alarm turns a hang into a
 * failure.  Runs preloaded and linked (the program's open() interposes either way). */
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

int main(void) {
  alarm(20);
  int zns = zt_zns_mode();
  char *p = ZT_OPAQUE(malloc(100));
  REQUIRE(p);
  strcpy(p, "ok");
  if (zns) CHECK(zns_owns(p), "malloc(100) not from the slab");
  free(p);
  /* the wrapper itself works */
  int fd = open("/proc/self/status", O_RDONLY);
  CHECK(fd >= 0, "open through the wrapper failed: %s", strerror(errno));
  if (fd >= 0) close(fd);
  CHECK(g_opens == 1, "the program's open() was called %d times", g_opens);
  return zt_finish("open_wrap");
}
