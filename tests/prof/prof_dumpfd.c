/* The descriptors a heap-profile dump holds while it writes (zns_prof_dump(path), and every
   ZNS_PROF_INTERVAL_MS dump: shim/prof.cpp dump_path, dump_to) must be above the program's own
   numbers: a dump takes milliseconds, and a program thread that dup2's onto a number it had (a
   shell's `exec 3>file`) closed the dump's file under it, whose rest then went into the program's
   file; a dump in the middle of reading /proc/self/maps read the program's file instead.
   How: the dump goes to a FIFO whose pipe holds one page, so the writer blocks in the middle of
   the dump (the address map is made long with a few hundred mappings); meanwhile main looks at
   /proc/self/fd for the descriptors that name the FIFO (other than its own reading end) and the
   maps file (reading a page now and then until the dump is in the map's part), and each must be at or above the library's floor (512, or half the descriptor limit
   when that is lower).  Then it reads the dump to its end.  Exit 0 when all hold; a line says
   what was seen.  Usage: prof_dumpfd DIR (a directory for the FIFO). */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int zns_prof_dump(const char *path) __attribute__((weak));   // (the preloaded profiler's)

static char g_fifo[4096];
static int g_rc = -2, g_err;

static void *dumper(void *arg) {
  (void)arg;
  g_rc = zns_prof_dump(g_fifo);
  if (g_rc != 0) g_err = errno;
  return NULL;
}

static void nap_ms(int ms) {
  struct timespec ts = {0, ms * 1000000L};
  nanosleep(&ts, NULL);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: prof_dumpfd DIR\n");
    return 2;
  }
  if (!zns_prof_dump) {
    fprintf(stderr, "zns_prof_dump not found: not under ZNS-Slab's profiler\n");
    return 2;
  }
  // some allocations, so that the profile has samples
  for (int i = 0; i < 2000; i++) {
    char *p = malloc(1024);
    memset(p, 1, 16);
    if (i % 3) free(p);
  }
  // a long address map: every other page of an area read-only, each a line of its own
  long page = sysconf(_SC_PAGESIZE);
  char *area = mmap(NULL, 600 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (area == MAP_FAILED) {
    perror("mmap");
    return 2;
  }
  for (int i = 0; i < 600; i += 2) mprotect(area + i * page, page, PROT_READ);

  snprintf(g_fifo, sizeof g_fifo, "%s/dump.fifo", argv[1]);
  if (mkfifo(g_fifo, 0600) != 0) {
    perror("mkfifo");
    return 2;
  }
  int rd = open(g_fifo, O_RDONLY | O_NONBLOCK);
  if (rd < 0 || fcntl(rd, F_SETPIPE_SZ, (int)page) < 0) {
    perror("the FIFO's reading end");
    return 2;
  }
  struct rlimit rl;
  int floor = 512;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur / 2 < 512) floor = (int)(rl.rlim_cur / 2);

  pthread_t t;
  pthread_create(&t, NULL, dumper, NULL);
  // the dump's descriptors while it waits for room in the pipe
  int fifo_fd = -1, maps_fd = -1, bad = 0;
  for (int tries = 0; tries < 400 && (fifo_fd < 0 || maps_fd < 0); tries++) {
    nap_ms(10);
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d))) {
      int fd = atoi(e->d_name);
      if (e->d_name[0] == '.' || fd == rd || fd == dirfd(d)) continue;
      char link[64], target[4200];
      snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
      ssize_t n = readlink(link, target, sizeof target - 1);
      if (n < 0) continue;
      target[n] = 0;
      const char *what = NULL;
      if (!strcmp(target, g_fifo)) what = "the dump's file", fifo_fd = fd;
      else if (n > 5 && !strcmp(target + n - 5, "/maps")) what = "the address map", maps_fd = fd;
      if (what && fd < floor && !(bad & (what[4] == 'd' ? 1 : 2))) {   // (each said once)
        printf("%s is descriptor %d, among the program's numbers (below %d)\n", what, fd, floor);
        bad |= what[4] == 'd' ? 1 : 2;
      }
    }
    if (d) closedir(d);
    // waiting in the samples' part: a page read on, towards the map (about 24 KiB long)
    if (fifo_fd >= 0 && maps_fd < 0) {
      char skip[4096];
      if (read(rd, skip, sizeof skip) < 0 && errno != EAGAIN) break;
    }
  }
  // read the dump to its end
  fcntl(rd, F_SETFL, 0);
  char buf[65536];
  size_t total = 0;
  for (ssize_t r; (r = read(rd, buf, sizeof buf)) != 0;) {
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) break;
    total += (size_t)r;
  }
  pthread_join(t, NULL);
  if (g_rc != 0) {
    printf("zns_prof_dump answered %d (%s)\n", g_rc, strerror(g_err));
    return 1;
  }
  if (fifo_fd < 0 || maps_fd < 0) {
    printf("the dump (%zu bytes) never waited with %s open: nothing was looked at\n", total,
           fifo_fd < 0 ? "its file" : "the address map");
    return 1;
  }
  if (bad) return 1;
  printf("the dump (%zu bytes) wrote from descriptor %d and read the map from %d\n", total, fifo_fd, maps_fd);
  return 0;
}
