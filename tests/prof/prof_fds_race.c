/* A daemon's descriptors under the profiler, with threads (tests/prof/run.sh).  The main thread
   closes every descriptor above 2 (close_range), opens a socketpair (3 and 4) and writes to it,
   round after round, while other threads allocate through stdio at stacks of varying depth (walks
   that make libunwind check addresses: its memory check used a pipe of its own, which the close
   took away mid-walk; libunwind then re-opened it over the program's numbers, read the socket's
   bytes, wrote into it and closed it: a review found ~1% of rounds hit with the pipe kept at 512
   and looked at before each walk).  Each round checks that the socketpair is the same and holds
   exactly what was written.  Exit 0 when every round held; a line gives the counts.
   Usage: prof_fds_race [seconds] [threads] */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile int stop;
static char text[] = "1 2 3 4 5 6\n";

__attribute__((noinline)) static void stdio_once(void) {   /* fgets mallocs its buffer */
  FILE *f = fmemopen(text, sizeof text - 1, "r");
  char line[64];
  if (f && fgets(line, sizeof line, f)) (void)line[0];
  if (f) fclose(f);
}
__attribute__((noinline)) static void at_depth(unsigned pages) {   /* new stack pages: new checks */
  volatile char *pad = __builtin_alloca(4096 * (1 + pages));
  pad[0] = 1;
  stdio_once();
  __asm__ volatile("" ::: "memory");
}
static void *sampler(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  for (int i = 0; i < 64; i++) at_depth(rand_r(&seed) % 60);
  return NULL;
}
static void *spawner(void *arg) {   /* fresh threads: fresh stacks */
  while (!stop) {
    pthread_t t;
    if (pthread_create(&t, NULL, sampler, arg) == 0) pthread_join(t, NULL);
  }
  return NULL;
}

int main(int argc, char **argv) {
  int secs = argc > 1 ? atoi(argv[1]) : 3, n = argc > 2 ? atoi(argv[2]) : 3;
  signal(SIGPIPE, SIG_IGN);   /* (count a write into a gone peer instead of dying) */
  pthread_t th[16];
  if (n > 16) n = 16;
  for (int i = 0; i < n; i++) pthread_create(&th[i], NULL, spawner, (void *)(uintptr_t)(i + 1));
  long rounds = 0, lost = 0, added = 0, replaced = 0;
  time_t end = time(NULL) + secs;
  while (time(NULL) < end) {
    syscall(SYS_close_range, 3, ~0U, 0);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) { perror("socketpair"); return 2; }
    struct stat a, b, a2, b2;
    fstat(sv[0], &a);
    fstat(sv[1], &b);
    rounds++;
    if (write(sv[1], "HELLO", 5) != 5) {   /* (closed or replaced under the program already) */
      replaced++;
      continue;
    }
    for (volatile int k = 0; k < 200000; k++) {}
    char buf[16];
    if (fstat(sv[0], &a2) || fstat(sv[1], &b2) || a.st_ino != a2.st_ino || b.st_ino != b2.st_ino) replaced++;
    if (read(sv[0], buf, sizeof buf) != 5) lost++;
    if (read(sv[1], buf, sizeof buf) > 0) added++;   /* a byte written into sv[0] shows on sv[1] */
  }
  stop = 1;
  for (int i = 0; i < n; i++) pthread_join(th[i], NULL);
  printf("%ld rounds: bytes lost in %ld, added in %ld, descriptor closed or replaced in %ld: %s\n", rounds, lost, added,
         replaced, lost || added || replaced ? "BROKEN" : "ok");
  return lost || added || replaced;
}
