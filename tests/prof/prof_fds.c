/* A daemon's way with descriptors under the profiler: allocate (samples are taken), close every
   descriptor above 2, open its own (a socketpair: 3 and 4), allocate again, then check that its
   descriptors are the ones it opened and hold what it wrote.  libunwind 1.6, which took the
   stacks until 2026-12-06, opened a pipe for its memory checks at the lowest free descriptors and,
   after the program closed it, read a byte from the program's descriptor 3 and wrote one into 4
   ("ELLO" read back); GNU screen's server lost its listening socket.  Exit 0 when intact. */
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

int main(void) {
  churn(20000);                                   /* samples: the unwinder's first walks */
  int first = open("/dev/null", O_RDONLY);        /* the lowest free number before the close */
  for (int fd = 3; fd < 1024; fd++) close(fd);    /* a daemon closes everything */
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) { perror("socketpair"); return 2; }
  struct stat a, b, a2, b2;
  fstat(sv[0], &a);
  fstat(sv[1], &b);
  if (write(sv[1], "HELLO", 5) != 5) return 2;
  churn(20000);                                   /* more samples, with the program's 3 and 4 */
  int same = fstat(sv[0], &a2) == 0 && fstat(sv[1], &b2) == 0 && a.st_ino == a2.st_ino && b.st_ino == b2.st_ino;
  char buf[16] = {0};
  fcntl(sv[0], F_SETFL, fcntl(sv[0], F_GETFL) | O_NONBLOCK);
  ssize_t n = read(sv[0], buf, sizeof buf);
  int ok = same && n == 5 && !memcmp(buf, "HELLO", 5) && first == 3;
  printf("first free descriptor %d; socketpair %d,%d %s; read back %zd bytes '%.*s': %s\n", first, sv[0], sv[1],
         same ? "kept" : "REPLACED", n, n > 0 ? (int)n : 0, buf, ok ? "ok" : "BROKEN");
  return !ok;
}
