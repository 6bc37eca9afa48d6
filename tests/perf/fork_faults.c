/* Page faults a fork costs: N forks of a child that _exits at once, with some blocks live; prints
   the parent's and the children's minor faults per fork (getrusage), then the process's mappings
   (lines of /proc/self/maps), which each fork copies and each exit tears down.  tests/perf/fork_faults.sh
   runs it with and without the library and compares (faults, not time: the count is the kernel's
   and does not move with the machine's load). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv) {
  int n = argc > 1 ? atoi(argv[1]) : 200;
  static void *keep[5000];
  for (int i = 0; i < 5000; i++) {   /* (8..1600 B: every class with a bitmap pool, to 240 B) */
    keep[i] = malloc(8 + (size_t)(i % 200) * 8);
    memset(keep[i], 1, 16);
  }
  for (int i = 0; i < 3; i++) {   // (the first forks: the loader's first calls, lazily bound)
    pid_t p = fork();
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
  }
  struct rusage self0, kids0, self1, kids1;
  getrusage(RUSAGE_SELF, &self0);
  getrusage(RUSAGE_CHILDREN, &kids0);
  for (int i = 0; i < n; i++) {
    pid_t p = fork();
    if (p < 0) { perror("fork"); return 2; }
    if (p == 0) _exit(0);
    waitpid(p, NULL, 0);
  }
  getrusage(RUSAGE_SELF, &self1);
  getrusage(RUSAGE_CHILDREN, &kids1);
  int maps = 0;
  FILE *f = fopen("/proc/self/maps", "r");
  if (!f) { perror("/proc/self/maps"); return 2; }
  for (int c; (c = getc(f)) != EOF;) maps += c == '\n';
  fclose(f);
  printf("%.1f %.1f %d\n", (double)(self1.ru_minflt - self0.ru_minflt) / n,
         (double)(kids1.ru_minflt - kids0.ru_minflt) / n, maps);
  return 0;
}
