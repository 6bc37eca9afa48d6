/* Limits on memory that a 64 GiB region (ZNS_REGION_GB's default) must live with:
 *   - an address-space limit (RLIMIT_AS, `ulimit -v`) with room for a few hundred MiB: the heap
 *     reserves a smaller region and serves small requests itself (zns_owns), with no word on
 *     stderr;
 *   - one with room for no region at all: one line on stderr says that every allocation goes to
 *     the next allocator, and the program runs on it;
 *   - the data limit (RLIMIT_DATA, `ulimit -d`; what vm.overcommit_memory=2 charges too): the
 *     region and its metadata are reserved without write access and committed as slabs are
 *     taken, so the process's VmData stays near what it uses, and when the limit refuses more
 *     the heap falls through to the next allocator (malloc returns NULL once that one is refused
 *     too; freeing makes room again).
 * A limit must hold before the first allocation, which happens before main: the program
 * re-executes itself under it, reading the child's stderr through a pipe.  Skipped under glibc. */
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include "tests/api/zns_test.h"

/* Address space of this process without the heap's reservations (the slab region and its
 * metadata, which the child will not have before its heap starts): what the child needs.  Files,
 * and anonymous writable mappings below 64 MiB (the heap's reservations are large, or not
 * writable where they are not committed yet). */
static size_t baseline_bytes(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  REQUIRE(f);
  char line[512];
  size_t total = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long lo, hi, inode;
    char perms[8];
    if (sscanf(line, "%lx-%lx %7s %*s %*s %lu", &lo, &hi, perms, &inode) == 4 &&
        (inode != 0 || (perms[1] == 'w' && hi - lo < ((size_t)64 << 20))))
      total += hi - lo;
  }
  fclose(f);
  return total;
}

static long vmdata_kib(void) {
  FILE *f = fopen("/proc/self/status", "r");
  REQUIRE(f);
  char line[256];
  long kib = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmData: %ld", &kib) == 1) break;
  fclose(f);
  return kib;
}

/* Allocate 1000-byte blocks until malloc says no (at most 1M): how many, how many owned. */
static int child_fill(void) {
  enum { MAX = 1000000 };
  static char *b[MAX];
  int n = 0, owned = 0;
  while (n < MAX && (b[n] = malloc(1000)) != NULL) {
    memset(b[n], n & 0xff, 1000);
    owned += zns_owns(b[n]);
    n++;
  }
  int big = n;
  while (n < MAX && (b[n] = malloc(16)) != NULL) b[n++][0] = 1;   /* the last room, to 16 B */
  /* A shrink needs no room: glibc shrinks in place (the library's realloc returned NULL and
   * ENOMEM here until 2026-12-06, and `p = realloc(p, smaller)` lost the block). */
  static const size_t shrink[] = {16, 100, 400, 480};   /* (each at most half: a new block) */
  for (int i = 0; i < 4 && i < big; ++i) {
    errno = 0;
    char *q = realloc(b[i], shrink[i]);
    CHECK(q != NULL && errno == 0, "realloc(1000-byte block, %zu) with no room left: %p, errno %d", shrink[i], q, errno);
    if (q) b[i] = q;
  }
  for (int i = 0; i < big; ++i) CHECK(b[i][0] == (char)(i & 0xff), "block %d lost its bytes", i);
  for (int i = 4; i < big; ++i) CHECK(b[i][500] == (char)(i & 0xff), "block %d lost its bytes", i);
  for (int i = 0; i < n; ++i) free(b[i]);
  void *again = malloc(1000);   /* room again */
  CHECK(again != NULL && zns_owns(again), "after freeing everything, malloc(1000) = %p", again);
  printf("%d %d\n", owned, big);
  return zt_failures ? 1 : 0;
}

/* 150k blocks of 1000 B from the heap, all freed (and trimmed if `trim`); then a request of
 * 200 MiB, which the data limit (256 MiB above the program) has room for only if the heap's empty
 * groups no longer count; then the blocks again, from the heap.  Prints the blocks the heap owned
 * the second time, and VmData in KiB after the frees (and the trim). */
static int child_release(int trim) {
  enum { N = 150000 };
  static char *b[N];
  for (int i = 0; i < N; ++i) {
    b[i] = malloc(1000);
    REQUIRE(b[i], "malloc #%d returned NULL under the limit", i);
    memset(b[i], i & 0xff, 1000);
  }
  long full = vmdata_kib();
  for (int i = 0; i < N; ++i) free(b[i]);
  if (trim) malloc_trim(0);
  long after = vmdata_kib();
  size_t big = (size_t)200 << 20;
  errno = 0;
  char *p = malloc(big);
  int e = errno;
  CHECK(p != NULL, "malloc(200 MiB) after 150 MB of small blocks were freed%s: NULL (VmData %ld KiB with the "
        "blocks, %ld after)", trim ? " and trimmed" : "", full, after);
  CHECK(p == NULL || e == 0, "malloc(200 MiB) served with errno %d left behind", e);
  if (p) {
    for (size_t o = 0; o < big; o += 4096) p[o] = (char)o;
    free(p);
  }
  int owned = 0;
  for (int i = 0; i < N; ++i) {
    b[i] = malloc(1000);
    REQUIRE(b[i], "malloc #%d returned NULL the second time", i);
    memset(b[i], ~i & 0xff, 1000);
    owned += zns_owns(b[i]);
  }
  for (int i = 0; i < N; ++i) {
    CHECK(b[i][0] == (char)(~i & 0xff) && b[i][999] == (char)(~i & 0xff), "block %d lost its bytes", i);
    free(b[i]);
  }
  printf("%d %ld\n", owned, after);
  return zt_failures ? 1 : 0;
}

/* A heap that grows by 4 MiB of blocks a cycle, trimmed after each (its commit ahead of the bump
 * pointer goes back each time): VmData must follow the heap, not step further ahead after every
 * trim (it reached 1 GB for 42 MiB live: helper-96's review).  Prints the blocks and VmData's
 * growth in KiB. */
static int child_cycles(void) {
  enum { PER = 4096, CYCLES = 12 };
  static char *b[PER * CYCLES];
  long start = vmdata_kib();
  int n = 0;
  for (int c = 0; c < CYCLES; ++c) {
    for (int i = 0; i < PER; ++i, ++n) {
      b[n] = malloc(1000);
      REQUIRE(b[n], "malloc #%d returned NULL", n);
      memset(b[n], n & 0xff, 1000);
    }
    malloc_trim(0);
  }
  long grew = vmdata_kib() - start;
  for (int i = 0; i < n; ++i) {
    CHECK(b[i][999] == (char)(i & 0xff), "block %d lost its bytes", i);
    free(b[i]);
  }
  printf("%d %ld\n", n, grew);
  return zt_failures ? 1 : 0;
}

/* N blocks of 1000 B; then the program's own mapping of map_mib MiB must still fit. */
static int child(int N, int map_mib) {
  static char *b[200000];
  REQUIRE(N <= 200000);
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
  if (map_mib) {
    void *m = mmap(NULL, (size_t)map_mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    CHECK(m != MAP_FAILED, "the program's own %d MiB mapping did not fit beside the heap (errno %d)", map_mib, errno);
  }
  printf("%d %ld\n", owned, vmdata_kib());
  return zt_failures ? 1 : 0;
}

/* Runs this program's child (`blocks` blocks of 1000 B, or "fill") under limit `res` at `extra`
 * bytes above the baseline; returns how many blocks the heap owned, the second figure the child
 * printed in *second (VmData in KiB, or the blocks allocated in all), its stderr in `err`. */
static int run_limited(char **argv, int res, size_t extra, const char *blocks, const char *map_mib, long *second,
                       char *err, size_t errcap) {
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
    if (setrlimit(res, &rl) != 0) _exit(90);
    char *args[] = {argv[0], "child", (char *)blocks, (char *)map_mib, NULL};
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
  int owned = 0;
  *second = -1;
  sscanf(buf, "%d %ld", &owned, second);
  return owned;
}

int main(int argc, char **argv) {
  if (argc > 3 && !strcmp(argv[1], "child")) {
    if (!strcmp(argv[2], "fill")) return child_fill();
    if (!strcmp(argv[2], "release")) return child_release(atoi(argv[3]));
    if (!strcmp(argv[2], "cycles")) return child_cycles();
    return child(atoi(argv[2]), atoi(argv[3]));
  }
  if (!zt_zns_mode()) {
    zt_log("addr_limit: skipped under plain glibc");
    return 0;
  }
  char err[4096];
  /* 800 MiB of room: a smaller region serves, and it leaves the program room for a mapping of
   * its own of half that (the region and its metadata take at most a quarter of the limit; the
   * largest region that fitted, 512 MiB, left python under `ulimit -v 300000` unable to start). */
  long second;
  int owned = run_limited(argv, RLIMIT_AS, (size_t)800 << 20, "100000", "400", &second, err, sizeof err);
  CHECK(owned == 100000, "with 800 MiB of address space the heap owned %d of 100000 blocks", owned);
  CHECK(err[0] == 0, "a word on stderr where the heap works: %s", err);
  /* Room for the program, not for the smallest region (64 MiB): the next allocator serves, and
   * one line says so. */
  owned = run_limited(argv, RLIMIT_AS, (size_t)40 << 20, "10000", "0", &second, err, sizeof err);
  CHECK(owned == 0, "with 40 MiB of address space the heap owned %d of 10000 blocks", owned);
  CHECK(strstr(err, "zns-slab: cannot reserve address space for the heap") != NULL,
        "no word on stderr that the heap is not in use: '%s'", err);
  const char *nl = strchr(err, '\n');
  CHECK(nl && nl[1] == 0, "more than one line on stderr: '%s'", err);
  /* RLIMIT_DATA with room for 200 MiB: 150 MiB of blocks, all from the heap, and VmData near
   * that.  (While the region and its metadata were writable mappings, they counted whole: the
   * region that fitted was 128 MiB, and the rest went to the next allocator.) */
  owned = run_limited(argv, RLIMIT_DATA, (size_t)200 << 20, "150000", "0", &second, err, sizeof err);
  CHECK(owned == 150000, "with RLIMIT_DATA 200 MiB above the program the heap owned %d of 150000 blocks", owned);
  CHECK(second > 0 && second < 250 * 1024, "VmData %ld KiB for 150 MiB of blocks", second);
  CHECK(err[0] == 0, "a word on stderr where the heap works: %s", err);
  /* The same under the uffd tier (root: a full userfaultfd): the region it registers is
   * committed on demand too. */
  if (geteuid() == 0) {
    char dir[] = "/tmp/zns-addr-limit.XXXXXX";
    REQUIRE(mkdtemp(dir));
    setenv("ZNS_TIER", "uffd", 1);
    setenv("ZNS_TIER_DIR", dir, 1);
    owned = run_limited(argv, RLIMIT_DATA, (size_t)200 << 20, "150000", "0", &second, err, sizeof err);
    unsetenv("ZNS_TIER");
    unsetenv("ZNS_TIER_DIR");
    rmdir(dir);
    CHECK(owned == 150000, "ZNS_TIER=uffd, RLIMIT_DATA 200 MiB above the program: the heap owned %d of 150000 blocks", owned);
    CHECK(err[0] == 0, "ZNS_TIER=uffd: a word on stderr: %s", err);
  }
  /* RLIMIT_DATA with room for 64 MiB: the heap serves until the limit refuses a commit, then the
   * next allocator until it is refused too; NULL, not a crash; all bytes intact. */
  owned = run_limited(argv, RLIMIT_DATA, (size_t)64 << 20, "fill", "0", &second, err, sizeof err);
  CHECK(owned > 20000 && owned < 70000, "the heap owned %d blocks under a 64 MiB data limit", owned);
  CHECK(second >= owned && second < 1000000, "malloc stopped after %ld blocks", second);
  /* A big heap freed under RLIMIT_DATA: its empty groups' commit goes back, at malloc_trim or when
   * the next allocator is refused (it is asked once more), and the heap takes them again. */
  long vm_trimmed, vm_freed;
  int again = run_limited(argv, RLIMIT_DATA, (size_t)256 << 20, "release", "1", &vm_trimmed, err, sizeof err);
  CHECK(again == 150000, "after a trim and a 200 MiB request the heap owned %d of 150000 blocks", again);
  CHECK(vm_trimmed > 0 && vm_trimmed < 100 * 1024, "VmData %ld KiB after 150 MB of blocks were freed and trimmed",
        vm_trimmed);
  CHECK(err[0] == 0, "a word on stderr: %s", err);
  again = run_limited(argv, RLIMIT_DATA, (size_t)256 << 20, "release", "0", &vm_freed, err, sizeof err);
  CHECK(again == 150000, "after a 200 MiB request (no trim) the heap owned %d of 150000 blocks", again);
  CHECK(err[0] == 0, "a word on stderr: %s", err);
  /* 48 MiB of blocks built in 12 steps, trimmed after each, under a 1 GiB data limit: VmData grows
   * with the heap (its commit runs at most 64 MiB ahead), not by a step more after every trim. */
  long vm_grew;
  int cycled = run_limited(argv, RLIMIT_DATA, (size_t)1 << 30, "cycles", "0", &vm_grew, err, sizeof err);
  CHECK(cycled == 4096 * 12, "the cycles child allocated %d blocks", cycled);
  CHECK(vm_grew > 0 && vm_grew < (48 + 64 + 16) * 1024, "VmData grew %ld KiB for 48 MiB of blocks trimmed 12 times",
        vm_grew);
  zt_log("addr_limit: a smaller region under 800 MiB of address space; one line and glibc under 40 MiB; "
         "RLIMIT_DATA: VmData %s; %d blocks from the heap under 64 MiB, %ld in all; 200 MiB after a heap was "
         "freed (VmData %ld KiB trimmed, %ld KiB not); VmData +%ld KiB for 48 MiB built between trims", "checked",
         owned, second, vm_trimmed, vm_freed, vm_grew);
  return zt_finish("addr_limit");
}
