/* timeit OUT CMD [ARGS...]: run CMD, wait for it, and write one line to OUT:
 *     wall_s user_s sys_s maxrss_kb status
 * (status: the exit code, or 128+signal).  Exits with the same status.
 *
 * Why not os.wait4 in the Python harness directly: Linux carries the peak RSS of the process image
 * that called exec over into the new program's ru_maxrss, so a child forked from the harness would
 * report at least the harness's own RSS.  This tiny program is the one that forks, so the floor is
 * its own few hundred KiB. */
#define _GNU_SOURCE 1
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s OUT CMD [ARGS...]\n", argv[0]);
    return 2;
  }
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t pid = fork();
  if (pid < 0) { perror("fork"); return 2; }
  if (pid == 0) {
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    _exit(127);
  }
  int status;
  struct rusage ru;
  while (wait4(pid, &status, 0, &ru) < 0) {}
  clock_gettime(CLOCK_MONOTONIC, &t1);
  int rc = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
  FILE *f = fopen(argv[1], "w");
  if (!f) { perror(argv[1]); return 2; }
  fprintf(f, "%.6f %.6f %.6f %ld %d\n", (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9,
          ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6, ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6,
          ru.ru_maxrss, rc);
  fclose(f);
  return rc;
}
