/* An address-space limit (RLIMIT_AS, `ulimit -v`) below the default region (ZNS_REGION_GB=64):
 *   - a limit with room for a few hundred MiB: the heap reserves a smaller region and serves small
 *     requests itself (zns_owns), with no word on stderr;
 *   - a limit with room for no region at all: one line on stderr says that every allocation goes
 *     to the next allocator, and the program runs on it.
 * The limit must hold before the first allocation, which happens before main: the program
 * re-executes itself under it, reading the child's stderr through a pipe.  Skipped under glibc. */
#include <sys/resource.h>
#include <sys/wait.h>

#include "tests/api/zns_test.h"

/* Address space of this process without its large reservations (the slab region and its
 * metadata, which the child will not have before its heap starts): what the child needs. */
static size_t baseline_bytes(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  REQUIRE(f);
  char line[512];
  size_t total = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi;
    if (sscanf(line, "%lx-%lx", &lo, &hi) == 2 && hi - lo < ((size_t)64 << 20)) total += hi - lo;
  }
  fclose(f);
  return total;
}

static int child(int N) {   /* N blocks of 1000 B */
  static char *b[100000];
  REQUIRE(N <= 100000);
  int owned = 0;
  for (int i = 0; i < N; ++i) {
    b[i] = malloc(1000);
    REQUIRE(b[i], "malloc #%d returned NULL under the limit", i);
    memset(b[i], i & 0xff, 1000);
    owned += zns_owns(b[i]);
  }
  for (int i = 0; i < N; ++i) {
    CHECK(b[i][999] == (char)(i & 0xff) && b[i][0] == (char)(i & 0xff), "block %d lost its bytes", i);
    free(b[i]);
  }
  printf("%d\n", owned);
  return zt_failures ? 1 : 0;
}

/* Runs this program under a limit of `extra` bytes above the baseline; returns how many of the
 * child's `blocks` blocks the heap owned, and its stderr in `err`. */
static int run_limited(char **argv, size_t extra, const char *blocks, char *err, size_t errcap) {
  int out[2], er[2];
  REQUIRE(pipe(out) == 0 && pipe(er) == 0);
  size_t limit = baseline_bytes() + extra;
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct rlimit rl = {limit, limit};
    dup2(out[1], 1);
    dup2(er[1], 2);
    close(out[0]); close(er[0]); close(out[1]); close(er[1]);
    if (setrlimit(RLIMIT_AS, &rl) != 0) _exit(90);
    char *args[] = {argv[0], "child", (char *)blocks, NULL};
    execv("/proc/self/exe", args);
    _exit(91);
  }
  close(out[1]);
  close(er[1]);
  char buf[64] = {0};
  size_t n = 0, e = 0;
  ssize_t k;
  while ((k = read(out[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)k;
  while ((k = read(er[0], err + e, errcap - 1 - e)) > 0) e += (size_t)k;
  err[e] = 0;
  close(out[0]);
  close(er[0]);
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child under a limit of %zu MiB: status %d; stderr: %s",
        limit >> 20, st, err);
  return atoi(buf);
}

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "child")) return child(atoi(argv[2]));
  if (!zt_zns_mode()) {
    zt_log("addr_limit: skipped under plain glibc");
    return 0;
  }
  char err[4096];
  /* Room for a 512 MiB region and its metadata, not for 1 GiB: the smaller region serves. */
  int owned = run_limited(argv, (size_t)800 << 20, "100000", err, sizeof err);
  CHECK(owned == 100000, "with 800 MiB of address space the heap owned %d of 100000 blocks", owned);
  CHECK(err[0] == 0, "a word on stderr where the heap works: %s", err);
  /* Room for the program, not for the smallest region (64 MiB): the next allocator serves, and
   * one line says so. */
  owned = run_limited(argv, (size_t)40 << 20, "10000", err, sizeof err);
  CHECK(owned == 0, "with 40 MiB of address space the heap owned %d of 10000 blocks", owned);
  CHECK(strstr(err, "zns-slab: cannot reserve address space for the heap") != NULL,
        "no word on stderr that the heap is not in use: '%s'", err);
  const char *nl = strchr(err, '\n');
  CHECK(nl && nl[1] == 0, "more than one line on stderr: '%s'", err);
  zt_log("addr_limit: a smaller region under 800 MiB of address space; one line and glibc under 40 MiB");
  return zt_finish("addr_limit");
}
