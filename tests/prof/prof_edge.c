// Edge cases of the heap profiler that once went wrong (tests/prof/run.sh runs each mode under
// libzns_slab_prof.so; the figures each mode checks are in its comment).  Usage: prof_edge MODE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <unistd.h>

int zns_prof_dump(const char *path) __attribute__((weak));

// The live samples a dump to a temporary file lists (its header's first count).
static long live_samples(void) {
  char path[] = "/tmp/zns-prof-edge.XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0 || zns_prof_dump(path) != 0) { perror("zns_prof_dump"); exit(1); }
  FILE *f = fdopen(fd, "r");
  long n = -1;
  if (!f || fscanf(f, "heap profile: %ld:", &n) != 1) { fprintf(stderr, "no header\n"); exit(1); }
  fclose(f);
  unlink(path);
  return n;
}

// pipe: a dump into a pipe that another thread of the program reads while it allocates (with
// ZNS_PROF_RATE=1, every allocation a sample).  The first version wrote under the table lock:
// the reader's sampled malloc waited for it, the dump for the reader.  Must finish.
static int fds[2];
static void *reader(void *a) {
  (void)a;
  size_t total = 0;
  for (;;) {
    char *chunk = malloc(4000);
    ssize_t r = read(fds[0], chunk, 4000);
    free(chunk);
    if (r <= 0) break;
    total += (size_t)r;
  }
  return (void *)total;
}
static int mode_pipe(void) {
  enum { kLive = 3000 };
  static void *keep[kLive];
  for (int i = 0; i < kLive; ++i) keep[i] = malloc(100);   // a profile far larger than a pipe
  if (pipe(fds) != 0) return 1;
  pthread_t t;
  pthread_create(&t, NULL, reader, NULL);
  char path[64];
  snprintf(path, sizeof path, "/dev/fd/%d", fds[1]);
  int r = zns_prof_dump(path);
  close(fds[1]);
  void *total;
  pthread_join(t, &total);
  printf("pipe: dump returned %d, %zu bytes read\n", r, (size_t)total);
  for (int i = 0; i < kLive; ++i) free(keep[i]);
  return r == 0 && (size_t)total > 3000 * 20 ? 0 : 1;
}

// realloc_fail: a large sample whose realloc fails stays a sample (the first version dropped its
// record before the realloc).  ZNS_PROF_RATE=1.
static int mode_realloc_fail(void) {
  enum { kN = 50 };
  void *v[kN];
  for (int i = 0; i < kN; ++i) v[i] = malloc(100000);
  long before = live_samples();
  for (int i = 0; i < kN; ++i)
    if (realloc(v[i], (size_t)1 << 50) != NULL) { fprintf(stderr, "a realloc of 2^50 bytes succeeded\n"); return 1; }
  long after = live_samples();
  printf("realloc_fail: %ld live samples before, %ld after\n", before, after);
  for (int i = 0; i < kN; ++i) free(v[i]);
  return after >= before && before >= kN ? 0 : 1;
}

// handler: a timer's handler allocates and frees while the thread is inside the profiler (its
// dumps) and must not stop the thread's sampling (the first versions left the countdown spent:
// no sample ever again on that thread).  ZNS_PROF_RATE=1: every one of 1000 later mallocs a sample.
static volatile sig_atomic_t g_ticks;
static void on_alarm(int sig) {
  (void)sig;
  free(malloc(64));
  ++g_ticks;
}
static int mode_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &sa, NULL);
  struct itimerval it = {{0, 200}, {0, 200}};
  setitimer(ITIMER_REAL, &it, NULL);
  while (g_ticks < 300) live_samples();
  struct itimerval off = {{0, 0}, {0, 0}};
  setitimer(ITIMER_REAL, &off, NULL);
  long base = live_samples();
  enum { kN = 1000 };
  static void *v[kN];
  for (int i = 0; i < kN; ++i) v[i] = malloc(4000);
  long now = live_samples();
  printf("handler: %d ticks; %ld of %d mallocs after them are samples\n", (int)g_ticks, now - base, kN);
  for (int i = 0; i < kN; ++i) free(v[i]);
  return now - base >= kN ? 0 : 1;
}

// shrink: 100000 blocks of 4 KiB realloc'ed to 16 B (1.6 MB live).  The profile must say about
// that (run.sh reads it through google-pprof), not what the blocks weighed before (410 MB: the
// first version kept a sample's record at the new size).
static int mode_shrink(void) {
  enum { kN = 100000 };
  static void *v[kN];
  for (int i = 0; i < kN; ++i) {
    v[i] = malloc(4096);
    memset(v[i], 1, 16);
  }
  for (int i = 0; i < kN; ++i) v[i] = realloc(v[i], 16);
  for (int i = 0; i < kN; ++i)
    if (((char *)v[i])[15] != 1) { fprintf(stderr, "realloc lost the contents\n"); return 1; }
  printf("shrink: done\n");
  return 0;   // (the exit profile is what run.sh reads)
}

// shrink_full: a slot sample (a small sampled block, page-aligned outside the heap) shrunk by
// realloc when no room is left must be kept, as the heap's own blocks are (049f4a6): the slot
// path returned NULL and ENOMEM, and `p = realloc(p, smaller)` lost the block (a review,
// 2026-12-06).  Run at ZNS_PROF_RATE=4096.
int zns_owns(const void *p) __attribute__((weak));
static int mode_shrink_full(void) {
  enum { kTry = 4000, kMaxFill = 20000000 };
  static char *v[kTry], *slot[kTry];
  static void *fill[kMaxFill];
  int slots = 0;
  for (int i = 0; i < kTry; i++) {
    v[i] = malloc(3000);
    memset(v[i], 0x5a, 3000);
    if (!zns_owns(v[i]) && ((uintptr_t)v[i] & 4095) == 0) slot[slots++] = v[i];
  }
  if (slots < 5) { fprintf(stderr, "shrink_full: only %d slot samples of %d blocks\n", slots, kTry); return 1; }
  FILE *f = fopen("/proc/self/status", "r");   // no room: RLIMIT_DATA at what is in use now
  char line[256];
  long kib = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmData:", 7)) kib = atol(line + 7);
  if (f) fclose(f);
  struct rlimit rl = {(rlim_t)(kib + 64) << 10, (rlim_t)(kib + 64) << 10};
  if (kib < 0 || setrlimit(RLIMIT_DATA, &rl) != 0) { perror("shrink_full: setrlimit"); return 1; }
  long n = 0;
  while (n < kMaxFill && (fill[n] = malloc(16)) != NULL) n++;
  int lost = 0;
  for (int i = 0; i < slots && i < 20; i++) {
    errno = 0;
    char *q = realloc(slot[i], 16);
    if (!q || errno != 0 || q[15] != 0x5a) lost++;
  }
  printf("shrink_full: %ld blocks filled the heap; %d of %d slot samples not kept by a shrink\n", n, lost,
         slots < 20 ? slots : 20);
  return lost ? 1 : 0;
}

int main(int argc, char **argv) {
  if (!zns_prof_dump) { fprintf(stderr, "zns_prof_dump not found: not under ZNS-Slab\n"); return 2; }
  const char *m = argc > 1 ? argv[1] : "";
  if (!strcmp(m, "pipe")) return mode_pipe();
  if (!strcmp(m, "realloc_fail")) return mode_realloc_fail();
  if (!strcmp(m, "handler")) return mode_handler();
  if (!strcmp(m, "shrink")) return mode_shrink();
  if (!strcmp(m, "shrink_full")) return mode_shrink_full();
  fprintf(stderr, "usage: prof_edge pipe|realloc_fail|handler|shrink|shrink_full\n");
  return 2;
}
