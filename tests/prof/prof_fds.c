/* A daemon's way with descriptors under the profiler (libunwind's memory check, shim/prof.cpp).
   Without an argument:
   1. Allocate (samples: the first walks); the lowest free descriptor must still be 3 (the pipe
      libunwind opens at its set-up used to take 3 and 4).
   2. Close every descriptor above 2, open a socketpair (3 and 4), write to it, allocate, with
      stdio called from main (walks from fgets through an optimised main are ones that make
      libunwind check addresses through its pipe; from a function of their own they were not);
      the socketpair must be the same and hold what was written.  Before the fix libunwind read a
      byte from 3 and wrote one into 4 ("ELLO" read back).
   With "over": the same, but the program's socket is then put at every number from 5 to 600
   (over libunwind's, wherever they are): nothing may be read from or written into it.
   Built with -DPROF_EARLY (prof_fds_early), linked with tests/prof/prof_early_lib.c, whose
   constructor had libunwind make its real pipe before the profiler started: the pipe stays open
   (the first free descriptor is 5), and the rest must hold as well.
   Exit 0 when all hold; a line says what was seen. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static void churn(int n) {
  for (int i = 0; i < n; i++) {
    char *p = malloc(64 + (size_t)(i % 4000));
    memset(p, 1, 8);
    free(p);
  }
}

#ifdef PROF_EARLY
extern int prof_early_frames;
#endif

int main(int argc, char **argv) {
  int over = argc > 1 && !strcmp(argv[1], "over");
#ifdef PROF_EARLY
  int early = prof_early_frames > 0;
#else
  int early = 0;
#endif
  churn(20000);
  int first = open("/dev/null", O_RDONLY);
  for (int fd = 3; fd < 1024; fd++) close(fd);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 2; }
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);   /* (no read waits) */
  fcntl(sv[1], F_SETFL, fcntl(sv[1], F_GETFL) | O_NONBLOCK);
  if (over)
    for (int fd = 5; fd <= 600; fd++) dup2(sv[1], fd);
  struct stat a, b, a2, b2;
  fstat(sv[0], &a);
  fstat(sv[1], &b);
  if (write(sv[1], "HELLO", 5) != 5) return 2;
  churn(20000);
  for (int i = 0; i < 100; i++) {   /* stdio from main: its buffers are malloc'ed under fgets */
    FILE *f = fopen("/proc/self/stat", "r");
    char line[256];
    if (f && fgets(line, sizeof line, f)) (void)line[0];
    if (f) fclose(f);
  }
  int same = fstat(sv[0], &a2) == 0 && fstat(sv[1], &b2) == 0 && a.st_ino == a2.st_ino && b.st_ino == b2.st_ino;
  char buf[64] = {0};
  ssize_t n = read(sv[0], buf, sizeof buf - 1);
  if (over)
    for (int fd = 5; fd <= 600; fd++) close(fd);
  int ok = (over || early || first == 3) && same && n == 5 && !memcmp(buf, "HELLO", 5);
  printf("first free descriptor %d; after the close: socketpair %d,%d %s%s, read back %zd bytes '%.*s': %s\n",
         first, sv[0], sv[1], over ? "(also at 5..600) " : "", same ? "kept" : "REPLACED", n, n > 0 ? (int)n : 0,
         buf, ok ? "ok" : "BROKEN");
  return !ok;
}
