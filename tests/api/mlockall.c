/* mlockall(MCL_CURRENT | MCL_FUTURE), as cryptsetup and real-time programs call it: every page of
 * every accessible mapping is made resident and locked, now and later.  The heap's reservations
 * must not be among them: the region is inaccessible until committed and of the metadata only the
 * lines are readable before, so only what is committed (what the heap uses, and one commit step
 * ahead) and the lines (64 B per 128 KiB of region) become resident.  While the region was
 * reserved writable, a 2 GiB region made the process 2.2 GB resident here (the default 64 GiB one
 * would take the machine); while all the metadata was reserved readable, a program with a second
 * thread (then the kernel populates read-only mappings with real pages) went to 190 MB here and
 * 5.6 GB with the default region, 4.7 s inside mlockall.  So a thread is started first.  The
 * program re-executes itself with ZNS_REGION_GB=2 so that a regression costs 2 GB, not the
 * machine.  Needs the right to lock (root, or a large RLIMIT_MEMLOCK: it counts reserved address
 * space); skipped otherwise, and under plain glibc. */
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

static void *idle_thread(void *arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}

#include "tests/api/zns_test.h"

int main(int argc, char **argv) {
  (void)argc;
  if (!zt_zns_mode()) {
    zt_log("mlockall: skipped under plain glibc");
    return 0;
  }
  const char *r = getenv("ZNS_REGION_GB");
  if (!r || strcmp(r, "2") != 0) {
    setenv("ZNS_REGION_GB", "2", 1);
    execv("/proc/self/exe", argv);
    zt_log("mlockall: re-exec failed: %s", strerror(errno));
    return 1;
  }
  pthread_t idle;
  REQUIRE(pthread_create(&idle, NULL, idle_thread, NULL) == 0);
  if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
    zt_log("mlockall: skipped: mlockall refused here (errno %d; needs root or RLIMIT_MEMLOCK)", errno);
    return 0;
  }
  size_t rss0 = zt_rss_bytes();
  enum { N = 100000 };
  static char *b[N];
  for (int i = 0; i < N; ++i) {
    b[i] = malloc(100 + (size_t)(i % 7) * 100);
    REQUIRE(b[i]);
    memset(b[i], i & 0xff, 100);
  }
  size_t rss1 = zt_rss_bytes();
  int owned = 0;
  for (int i = 0; i < N; ++i) {
    CHECK(b[i][99] == (char)(i & 0xff), "block %d lost its bytes", i);
    owned += zns_owns(b[i]);
    free(b[i]);
  }
  zt_log("mlockall: resident %zu MiB after mlockall, %zu MiB with %d blocks (%d from the heap)", rss0 >> 20,
         rss1 >> 20, N, owned);
  CHECK(owned == N, "the heap served %d of %d blocks", owned, N);
  CHECK(rss0 < ((size_t)64 << 20), "mlockall made %zu MiB resident: the heap's reservations were locked in", rss0 >> 20);
  CHECK(rss1 < ((size_t)400 << 20), "%zu MiB resident for ~40 MiB of blocks under mlockall", rss1 >> 20);
  return zt_finish("mlockall");
}
