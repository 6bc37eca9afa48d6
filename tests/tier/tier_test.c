/* The tier under test (issue 5).  One program, one scenario per subcommand; tests/tier/run.sh runs
 * each under ZNS_TIER=uffd and ZNS_TIER=madvise with LD_PRELOAD=build/libzns_slab.so.
 *
 *   integrity THREADS SECONDS  workers write, verify, free and replace blocks while a pager thread
 *                              pages every eligible slab out again and again: every byte checked
 *   syscalls                   write(2) from and read(2) into blocks of paged-out slabs
 *   fork                       fork with paged-out slabs: the child sees every byte, and its stores
 *                              stay its own
 *   fork-each-slab             fork after each new slab of classes shorter than their group: the
 *                              child reads the whole heap, also where a slab ends at the end of
 *                              the backing file (madvise: the group's tail is past the file's end)
 *   child-tier                 (run with ZNS_TIER_CHILD_MS=300 ZNS_TIER_SCAN_MS=50) a forked child that lives on and
 *                              allocates gets a tier of its own after that long, not before: its
 *                              slabs (its own and those it inherited) leave RAM and come back
 *                              intact, its stores never reach the parent, and a grandchild forked
 *                              with the child's slabs out reads every byte
 *   child-tier-large HOW       (run with ZNS_TIER_CHILD_MS=300 ZNS_TIER_SCAN_MS=50) a forked child that
 *                              makes only calls for blocks above 4 KiB once its tier is due (HOW:
 *                              malloc, calloc, realloc, memalign; vfork: the first one in a vfork
 *                              child) gets its tier all the same; free: frees alone do not start it
 *   child-seccomp              (run with ZNS_TIER_CHILD_MS=300) a forked child that installs a
 *                              seccomp filter (killing on userfaultfd and clone) allocates on:
 *                              its tier is not tried, and it lives
 *   falloc-refused             (madvise) a seccomp filter refuses fallocate (EPERM): first on one
 *                              thread only (the others keep taking slabs), then on all: new memory
 *                              comes from the next allocator, nothing is lost, and each thread
 *                              tries once, not at every allocation
 *   poll-refused [read]        (uffd) a seccomp filter for every thread refuses poll (EPERM) after
 *                              the tier started: faults on paged-out slabs are still served (the
 *                              tier thread reads its userfaultfd without waiting in poll), every
 *                              byte comes back, and the program does not hang.  read: the filter
 *                              refuses read instead, so no fault can be served: the program must
 *                              end (SIGABRT) with a line that says why, not hang (run.sh checks)
 *   quarantine-fork            (run with ZNS_SECURE=1) fork while another thread holds freed blocks
 *                              in its quarantine: the child's release of that dead thread's
 *                              quarantine must not reach the parent, whose thread later checks the
 *                              blocks' marks (with madvise the heap is a shared file mapping until
 *                              the child's private copy)
 *   metadata                   free() and malloc_usable_size() of blocks in paged-out slabs do not
 *                              bring them back
 *   policy                     with a short cold window the heap pages an idle heap out by itself
 *                              (RSS drops), and a slab read over and over backs off (bounded thrash)
 *   budget                     ZNS_TIER_MAX_RESIDENT: live slabs beyond the budget leave RAM
 *   clean                      (uffd) a slab read back and not stored to leaves again without a
 *                              write to the file; one stored to after it came back is written
 *                              again, and its new bytes are what comes back next; a slab a
 *                              store brings back comes back writable (no second fault)
 *   governor windup [long]     (ZNS_TIER_COLD_MS=2000, long: 5000; ZNS_TIER_MAX_RETURNS=40) a heap
 *                              paged out once comes back at twice the budget for 1.6 s: one raise,
 *                              not one per tick (the returns are of slabs that left before the
 *                              raise); long: at 1.6 times for 6 s, longer than a 4 s cap on the
 *                              hold (until 2026-12-04) let it be: still one raise
 *   ksm                        (uffd; run.sh starts ksmd for it) KSM merges pages of slabs that
 *                              came back by a read: the merged page has lost its write
 *                              protection, so the store after it copies the page without a
 *                              fault.  The next eviction must still write the slab: every store
 *                              comes back (a review lost 3.8 MB here, 2026-12-03)
 *   governor on|off            the whole heap is read every 300 ms (python's cycle collector
 *                              does this), far longer than the 20 ms cold window run.sh sets, so
 *                              each slab looks cold between passes and per-slab backoff never
 *                              fires.  on (ZNS_TIER_MAX_RETURNS=40): the return governor
 *                              lengthens every window and the slabs stop coming back; off (=0):
 *                              they come back on every pass (shows that the scenario thrashes)
 *   governor relax             (ZNS_TIER_MAX_RETURNS=40) the same for a second, so the governor
 *                              raises the windows; then the program leaves its heap alone, and
 *                              the windows must come down again (a tier that thrashed once must
 *                              not stay timid for good)
 *   errors [default-signal [stderr-full]]
 *                              the backing file refuses writes (RLIMIT_FSIZE): slabs stay in RAM,
 *                              errors are counted, every byte is intact; default-signal: SIGXFSZ
 *                              keeps its default action (ending the program), and the program
 *                              must live; stderr-full: and stderr is a file already at the limit
 *                              (the tier's line about the failure cannot be written either)
 *   full                       the backing file's file system is full (ENOSPC): the same
 *   thread-error               (uffd, ZNS_TIER_COLD_MS=100) the tier thread's own evictions meet a
 *                              file-size limit: its one line reaches the program's stderr (the
 *                              thread has a descriptor table of its own, without stderr)
 *   mlock block|all            the program locks one page in the middle of a slab (mlock of a
 *                              key's block), or all its memory (mlockall): the kernel drops the
 *                              slab's pages before the locked one and refuses the rest.  Every
 *                              byte must stay (the dropped pages come back from the file), one
 *                              line says why, and such a slab is not tried again; the others
 *                              still leave
 *   fork-full DIR              (madvise, ZNS_TIER_CHILD_MS set; DIR: the backing file's file
 *                              system, XFS in run.sh) fork,
 *                              fill the file system, then parent and child rewrite every block:
 *                              neither may die of SIGBUS (a reflinked copy of the heap would)
 *   closefd                    the program closes every descriptor and reuses the numbers: slabs
 *                              out before come back intact, the tier stops evicting and never
 *                              writes into the program's file; a fork (with slabs out)
 *                              after that gives the child its heap (not the program's file) and
 *                              leaves the program's descriptors open
 *   closefd-forks              (uffd) the same, slabs out, then two threads fork at once, 20 times
 *                              each: no deadlock, no byte lost
 *   no-close-range SCENARIO    run SCENARIO where close_range(2) is refused (ENOSYS)
 *   fallback                   run where userfaultfd is not allowed: a warning, and the program runs
 *   mode                       print the tier's mode (0 off, 1 uffd, 2 madvise)
 */
#define _GNU_SOURCE 1
#include <dirent.h>
#include <malloc.h>
#include <pthread.h>
#include <pwd.h>
#include <sys/mman.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "tests/api/zns_test.h"

void zns_tier_stats(struct zns_tier_stats *out) __attribute__((weak));
size_t zns_tier_pageout(void) __attribute__((weak));

static struct zns_tier_stats tier(void) {
  struct zns_tier_stats s;
  memset(&s, 0, sizeof s);
  zns_tier_stats(&s);
  return s;
}

/* A block whose bytes are a function of (seed, offset). */
static uint64_t mix64(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}
static void fill(unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; ++i) p[i] = (unsigned char)(mix64(seed + i / 8) >> (8 * (i % 8)));
}
static int intact(const unsigned char *p, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != (unsigned char)(mix64(seed + i / 8) >> (8 * (i % 8)))) return 0;
  return 1;
}

static size_t rss_bytes(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) { if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0; fclose(f); }
  return (size_t)rss * 4096;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct blk { unsigned char *p; size_t n; uint64_t seed; };

/* n blocks of sizes 16..size_max, filled; the caller frees them. */
static struct blk *make_blocks(size_t n, size_t size_max, uint64_t salt) {
  struct blk *b = __libc_calloc(n, sizeof *b);   /* the table itself stays out of the tier */
  REQUIRE(b != NULL);
  for (size_t i = 0; i < n; ++i) {
    b[i].n = 16 + mix64(salt + i) % (size_max - 15);
    b[i].seed = mix64(salt ^ (i * 7919));
    b[i].p = malloc(b[i].n);
    REQUIRE(b[i].p != NULL);
    fill(b[i].p, b[i].n, b[i].seed);
  }
  return b;
}
static long count_bad(struct blk *b, size_t n) {
  long bad = 0;
  for (size_t i = 0; i < n; ++i) if (b[i].p && !intact(b[i].p, b[i].n, b[i].seed)) bad++;
  return bad;
}

/* The heap's geometry (core/size_class.h), which the scenarios are sized by: every slab sits at
 * the start of its own aligned group of 32 pages (128 KiB, kGroupPages) and fills most of it;
 * 64 B blocks fill it exactly, SLAB64 of them.  (The 64 B scenarios count slabs as blocks /
 * SLAB64; a change of the geometry must change these.) */
enum { GROUP_BYTES = 32 * 4096, SLAB64 = GROUP_BYTES / 64 };

/* n blocks of 64 B (SLAB64 to a slab, in allocation order), block i filled with `fill`, or with
 * i & 0xff when fill is 0; the table itself stays out of the tier. */
static unsigned char **blocks64(size_t n, int fill) {
  unsigned char **b = __libc_calloc(n, sizeof *b);
  REQUIRE(b != NULL);
  for (size_t i = 0; i < n; ++i) {
    b[i] = malloc(64);
    REQUIRE(b[i] != NULL);
    memset(b[i], fill ? fill : (int)(i & 0xff), 64);
  }
  return b;
}
static void free_blocks64(unsigned char **b, size_t n) {
  for (size_t i = 0; i < n; ++i) free(b[i]);
  __libc_free(b);
}

/* ---- integrity ------------------------------------------------------------------------------ */
static volatile int g_stop;
static long g_pageouts;

struct worker { int id; size_t n; long ops, bad; };

static void *pager(void *arg) {
  (void)arg;
  while (!g_stop) {
    __atomic_add_fetch(&g_pageouts, (long)zns_tier_pageout(), __ATOMIC_RELAXED);
    usleep(2000);
  }
  return NULL;
}

static void *work(void *arg) {
  struct worker *w = arg;
  struct blk *b = make_blocks(w->n, 600, 1000003u * (uint64_t)(w->id + 1));
  uint64_t r = 12345 + w->id;
  while (!g_stop) {
    size_t i = (size_t)(mix64(++r) % w->n);
    if (!intact(b[i].p, b[i].n, b[i].seed)) w->bad++;
    switch (mix64(r * 3) % 4) {
      case 0:   /* rewrite in place */
        b[i].seed = mix64(r * 5);
        fill(b[i].p, b[i].n, b[i].seed);
        break;
      case 1:   /* replace */
        free(b[i].p);
        b[i].n = 16 + mix64(r * 7) % 1000;
        b[i].p = malloc(b[i].n);
        REQUIRE(b[i].p != NULL);
        b[i].seed = mix64(r * 11);
        fill(b[i].p, b[i].n, b[i].seed);
        break;
      case 2: {  /* realloc: the copy reads the old block, maybe from the tier */
        size_t m = 16 + mix64(r * 13) % 1500, keep = m < b[i].n ? m : b[i].n;
        unsigned char *q = realloc(b[i].p, m);
        REQUIRE(q != NULL);
        if (!intact(q, keep, b[i].seed)) w->bad++;
        b[i].p = q; b[i].n = m;
        b[i].seed = mix64(r * 17);
        fill(q, m, b[i].seed);
        break;
      }
      default:  /* just read */
        break;
    }
    w->ops++;
  }
  w->bad += count_bad(b, w->n);
  for (size_t i = 0; i < w->n; ++i) free(b[i].p);
  __libc_free(b);
  return NULL;
}

static int integrity(int threads, double seconds) {
  pthread_t th[64], pg;
  struct worker w[64];
  if (threads > 64) threads = 64;
  for (int t = 0; t < threads; ++t) {
    w[t] = (struct worker){t, 20000, 0, 0};
    REQUIRE(pthread_create(&th[t], NULL, work, &w[t]) == 0);
  }
  REQUIRE(pthread_create(&pg, NULL, pager, NULL) == 0);
  usleep((useconds_t)(seconds * 1e6));
  g_stop = 1;
  long ops = 0, bad = 0;
  for (int t = 0; t < threads; ++t) { pthread_join(th[t], NULL); ops += w[t].ops; bad += w[t].bad; }
  pthread_join(pg, NULL);
  struct zns_tier_stats s = tier();
  zt_log("integrity: %d threads, %ld ops, %ld slabs paged out by the pager; tier: out %llu in %llu, "
         "write hits %llu, errors %llu, fault-in p50 %llu ns p99 %llu ns max %llu ns",
         threads, ops, g_pageouts, s.slabs_out, s.slabs_in, s.write_hits, s.evict_errors,
         s.fault_p50_ns, s.fault_p99_ns, s.fault_max_ns);
  CHECK(bad == 0, "%ld blocks lost or changed bytes", bad);
  CHECK(g_pageouts > 100, "only %ld slabs were paged out: the test did not exercise the tier", g_pageouts);
  CHECK(s.evict_errors == 0);
  if (s.mode == 1) CHECK(s.slabs_in > 100, "only %llu slabs faulted back in", s.slabs_in);
  return zt_finish("integrity");
}

/* ---- cancel ---------------------------------------------------------------------------------- */
/* A thread with a pthread_cancel pending allocates fresh slabs (madvise: room in the file is made
 * with fallocate, under the grow lock) and forks with slabs paged out (uffd: the prepare handler
 * reads them back with pread, holding the tier lock): malloc and fork are not cancellation points,
 * so it must return normally, and the process must allocate and fork afterwards.  Until
 * 2026-12-05 the thread was cancelled inside them and the next fresh slab or fork waited forever
 * (the step's timeout). */
static volatile int cancel_stage;
static pid_t cancel_child = -1;
static void *cancel_worker(void *arg) {
  (void)arg;
  enum { M = 20000 };
  static void *keep[M];
  for (int i = 0; i < M; i++) { keep[i] = malloc(200); memset(keep[i], 7, 200); }
  __atomic_store_n(&cancel_stage, 1, __ATOMIC_SEQ_CST);
  while (__atomic_load_n(&cancel_stage, __ATOMIC_SEQ_CST) != 2) {}   /* the request is pending */
  zns_tier_pageout();
  cancel_child = fork();
  if (cancel_child == 0) _exit(0);   /* (main waits for it: waitpid is a cancellation point) */
  for (int i = 0; i < 300000; i++) {   /* fresh slabs: 60 MB of 200 B blocks */
    void *q = malloc(200);
    if (!q) break;
    memset(q, 9, 200);
    if (i < M) { free(keep[i]); keep[i] = q; }
  }
  return (void *)42;
}
static int cancel_test(void) {
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, cancel_worker, NULL) == 0);
  while (__atomic_load_n(&cancel_stage, __ATOMIC_SEQ_CST) != 1) {}
  REQUIRE(pthread_cancel(t) == 0);
  __atomic_store_n(&cancel_stage, 2, __ATOMIC_SEQ_CST);
  void *r;
  REQUIRE(pthread_join(t, &r) == 0);
  CHECK(r == (void *)42, "a thread with a cancel pending was %s inside fork() or malloc()",
        r == PTHREAD_CANCELED ? "cancelled" : "lost");
  int st;
  CHECK(cancel_child > 0 && waitpid(cancel_child, &st, 0) == cancel_child && WIFEXITED(st) && WEXITSTATUS(st) == 0,
        "the thread's forked child");
  void *fresh[20000];   /* fresh slabs and a fork in this thread */
  for (int i = 0; i < 20000; i++) { fresh[i] = malloc(1000); REQUIRE(fresh[i] != NULL); memset(fresh[i], 3, 1000); }
  pid_t p = fork();
  REQUIRE(p >= 0);
  if (p == 0) _exit(0);
  CHECK(waitpid(p, &st, 0) == p && WIFEXITED(st) && WEXITSTATUS(st) == 0);
  for (int i = 0; i < 20000; i++) free(fresh[i]);
  zt_log("cancel: the thread returned from fork() and malloc(); this one allocated and forked after it");
  return zt_finish("cancel");
}

/* ---- syscalls ------------------------------------------------------------------------------- */
static int syscalls(void) {
  enum { N = 8000 };   /* 16..900 B, ~3.7 MB: a few slabs full behind the current one of each class */
  struct blk *b = make_blocks(N, 900, 77);
  /* write(2) from cold blocks into a file, then read(2) back into other cold blocks */
  char path[] = "/tmp/zns-tier-syscallsXXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  unlink(path);
  size_t out = zns_tier_pageout();
  CHECK(out > 10, "paged out %zu slabs", out);
  size_t total = 0;
  for (size_t i = 0; i < N; ++i) {
    ssize_t w = write(fd, b[i].p, b[i].n);
    CHECK(w == (ssize_t)b[i].n, "write(2) from a paged-out block: %zd, errno %d", w, errno);
    total += b[i].n;
  }
  /* fresh targets, filled with junk, then paged out, then read(2) into */
  struct blk *d = make_blocks(N, 900, 99);
  for (size_t i = 0; i < N; ++i) {   /* same sizes as b */
    free(d[i].p);
    d[i].p = malloc(b[i].n);
    d[i].n = b[i].n;
    memset(d[i].p, 0xAB, d[i].n);
  }
  out = zns_tier_pageout();
  CHECK(out > 5, "paged out %zu slabs", out);
  off_t off = 0;
  for (size_t i = 0; i < N; ++i) {
    ssize_t r = pread(fd, d[i].p, d[i].n, off);
    CHECK(r == (ssize_t)d[i].n, "read(2) into a paged-out block: %zd, errno %d", r, errno);
    off += (off_t)d[i].n;
    d[i].seed = b[i].seed;
  }
  CHECK(count_bad(d, N) == 0, "read(2) into cold blocks lost bytes");
  CHECK(count_bad(b, N) == 0, "the source blocks changed");
  close(fd);
  struct zns_tier_stats s = tier();
  zt_log("syscalls: %zu bytes through write(2)/read(2); tier: out %llu in %llu", total, s.slabs_out, s.slabs_in);
  return zt_finish("syscalls");
}

/* ---- fork --------------------------------------------------------------------------------- */
/* A forked child's part: its copy of the n blocks intact (exit 3 if not), then every block
 * overwritten (which must not reach the parent) and some allocation of its own.  0 when intact. */
static int child_checks_and_writes(struct blk *b, size_t n) {
  long bad = count_bad(b, n);
  for (size_t i = 0; i < n; ++i) memset(b[i].p, 0x5A, b[i].n);
  for (int i = 0; i < 10000; ++i) free(malloc(16 + i % 2000));
  return bad == 0 ? 0 : 3;
}

static int fork_test(void) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 700, 555);
  size_t out = zns_tier_pageout();
  CHECK(out > 10, "paged out %zu slabs", out);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) _exit(child_checks_and_writes(b, N));
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child saw changed bytes (status %d)", st);
  CHECK(count_bad(b, N) == 0, "the child's stores reached the parent, or the parent lost bytes");
  /* and the parent's tier still works after the fork */
  out = zns_tier_pageout();
  CHECK(count_bad(b, N) == 0);
  zt_log("fork: child verified %d blocks; parent paged out %zu slabs after the fork", N, out);
  return zt_finish("fork");
}

/* ---- fork-as-limit: a child whose address space has no room for a second copy of the heap ------ */
/* madvise: the heap is a shared file mapping, so a forked child makes it private before it returns
 * from fork (without ZNS_TIER_CHILD_MS: a private anonymous copy).  Made in one piece, that copy
 * needs address space for a second heap; under a lowered RLIMIT_AS it is made in place, a chunk at
 * a time (tier.cpp, child_private_in_place).  Before 2026-12-07 the child aborted: "tier: no memory
 * for the forked child's copy of the heap".  The soft limit goes down to 8 MiB above what is mapped
 * (again after each lowering: the heap gives the reservation's unused tail back), with ~30 MB of
 * blocks, some of them paged out; the child checks that it cannot map their size, then its bytes,
 * writes every block and allocates; the parent's bytes must stay as they were. */
static int fork_as_limit(void) {
  enum { N = 40000 };
  struct blk *b = make_blocks(N, 1500, 4242);
  size_t payload = 0;
  for (size_t i = 0; i < N; ++i) payload += b[i].n;
  size_t out = zns_tier_pageout();
  CHECK(out > 10, "paged out %zu slabs", out);
  struct rlimit rl;
  REQUIRE(getrlimit(RLIMIT_AS, &rl) == 0);
  size_t vm = 0;
  for (int i = 0; i < 8 && vm != zt_vm_bytes(); ++i) {
    vm = zt_vm_bytes();
    rl.rlim_cur = vm + (8 << 20);
    REQUIRE(setrlimit(RLIMIT_AS, &rl) == 0);
  }
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    void *room = mmap(NULL, payload, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (room != MAP_FAILED) _exit(4);   /* the limit left room: the test did not test */
    _exit(child_checks_and_writes(b, N));
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(!(WIFEXITED(st) && WEXITSTATUS(st) == 4), "the child could map %zu bytes under the limit: not tested", payload);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status %d)", st);
  CHECK(count_bad(b, N) == 0, "the child's stores reached the parent, or the parent lost bytes");
  zt_log("fork-as-limit: %zu MiB of blocks, RLIMIT_AS %zu MiB (VmSize + 8 MiB)",
         payload >> 20, (size_t)(rl.rlim_cur >> 20));
  return zt_finish("fork-as-limit");
}

/* ---- errno: a successful malloc or free leaves errno as it was ---------------------------------- */
/* Rounds of blocks of every small size, allocated and freed, in turn three ways: everything freed
 * and left to the depot's own limits (it gives the pages of some back at once: helper-93's case);
 * everything freed and malloc_trim; every 8th block kept, the slabs it leaves partly full paged
 * out (zns_tier_pageout), and those blocks freed first thing in the next round (their slabs come
 * back).  So the heap takes slabs back from holes and from the tier (tier_take: under uffd a
 * UFFDIO_COPY of zeros over pages of which some may be there, which answers EEXIST; under madvise
 * room in the file).  errno is set to a value no call returns before each malloc and free, and
 * must read the same after (zt_errno: GCC may assume free leaves errno alone).  Before 2026-12-07
 * a malloc under uffd left EEXIST (17) behind. */
static int errno_kept(void) {
  enum { N = 20000, ROUNDS = 15, MARK = 4242, KEEP = 8 };
  static void *v[N];
  long changed = 0, first_at = -1, seen = 0, out = 0;
  size_t given_back = 0;
#define ZT_ERRNO_CALL(call, at)                                                  \
  do {                                                                           \
    errno = MARK;                                                                \
    call;                                                                        \
    int e_ = zt_errno();                                                         \
    if (e_ != MARK && changed++ == 0) { first_at = (at); seen = e_; }            \
  } while (0)
  for (int r = 0; r < ROUNDS; ++r) {
    int way = r % 3;   /* 0: free all; 1: free all, trim; 2: keep every KEEPth, page out */
    if (way == 0 && r > 0)   /* the last round's kept blocks, their slabs paged out */
      for (int i = 0; i < N; i += KEEP) ZT_ERRNO_CALL(free(v[i]), (long)r * N + i);
    for (int i = 0; i < N; ++i) {
      ZT_ERRNO_CALL(v[i] = malloc((size_t)((i * 2654435761u + (unsigned)r) % 4096) + 1), (long)r * N + i);
      REQUIRE(v[i] != NULL);
      memset(v[i], r, 1);
    }
    for (int i = 0; i < N; ++i)
      if (way != 2 || i % KEEP) ZT_ERRNO_CALL(free(v[i]), (long)r * N + i);
    if (way == 1) {
      size_t rss = zt_rss_bytes();
      malloc_trim(0);
      size_t after = zt_rss_bytes();
      given_back += rss > after ? rss - after : 0;
    }
    if (way == 2) out += (long)zns_tier_pageout();
    usleep(60 * 1000);   /* (and past ZNS_TIER_COLD_MS) */
  }
  if ((ROUNDS - 1) % 3 == 2)
    for (int i = 0; i < N; i += KEEP) ZT_ERRNO_CALL(free(v[i]), (long)ROUNDS * N + i);
#undef ZT_ERRNO_CALL
  CHECK(changed == 0, "%ld calls changed errno (the first, call %ld: errno %ld)", changed, first_at, seen);
  CHECK(given_back > ((size_t)ROUNDS << 20) / 3, "malloc_trim gave back only %zu KiB: nothing tested", given_back >> 10);
  CHECK(out > 100, "only %ld slabs paged out: nothing tested", out);
  zt_log("errno: %d mallocs; %zu MiB given back by malloc_trim, %ld slabs paged out", N * ROUNDS,
         given_back >> 20, out);
  return zt_finish("errno");
}

/* ---- nss-fork: fork while glibc's own heap block is cold -------------------------------------- */
/* glibc's fork() takes the lock in its nss database state (a heap block, made by the first
 * getpwuid and the like) after the atfork handlers ran, while the tier's handler holds the tier
 * lock.  Under uffd that slab is write-protected once the fork's prepare brought it back from the
 * file, or once the policy armed it: the store waited for the tier thread, which waited for the
 * lock, and the fork never returned (found with CPython's test_os, 2026-12-05).  Three forks:
 * after a pageout, after an idle wait in which the policy armed or paged out the slabs again (run
 * with ZNS_TIER_COLD_MS=200; which of the two depends on the backoff, so not checked), after
 * another pageout; each child looks the user up again.  Under uffd the pageout forks must have
 * served the store as a write-protect fault (write_hits), or the test did not test this. */
static int nss_fork(void) {
  enum { N = 20000 };
  REQUIRE(getpwuid(0) != NULL);
  /* every class's current slab filled past its end (more blocks than a group holds), so that the
   * nss state's slab is parked */
  for (size_t sz = 16; sz <= 4096; sz += 16)
    for (size_t k = 0; k < GROUP_BYTES / sz + 2; ++k) {
      char *p = malloc(sz);
      REQUIRE(p != NULL);
      p[0] = 1;
    }
  struct blk *b = make_blocks(N, 300, 97);
  int uffd = tier().mode == 1;
  alarm(60);   /* a hung fork is a failure, not a stuck run */
  for (int i = 0; i < 3; ++i) {
    size_t out = 0;
    if (i == 1) usleep(1500 * 1000);   /* idle: the policy arms (uffd) or pages out the slabs */
    else out = zns_tier_pageout();
    unsigned long long w0 = tier().write_hits;
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(getpwuid(0) != NULL && count_bad(b, N) == 0 ? 0 : 3);
    unsigned long long hits = tier().write_hits - w0;
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork %d: the child failed (status %d)", i, st);
    if (i == 0) CHECK(out > 10, "fork %d: paged out %zu slabs", i, out);   /* (then the policy may have) */
    if (uffd && i != 1) CHECK(hits >= 1, "fork %d: no write-protect fault during the fork (%llu): nothing tested", i, hits);
    zt_log("nss-fork: fork %d after %s: %zu slabs out, %llu write-protect faults served", i,
           i == 1 ? "an idle wait (armed or out by the policy)" : "a pageout", out, hits);
  }
  alarm(0);
  CHECK(count_bad(b, N) == 0, "the parent's blocks changed");
  return zt_finish("nss-fork");
}

/* ---- fork-signals: a signal handler that stores into the heap while its thread forks ---------- */
/* The forking thread holds the tier lock from the prepare to the parent handler.  A handler that
 * stores into a slab that is out or armed meanwhile (a profiler's SIGPROF recording into a heap
 * buffer) waits for the tier thread, which waits for the lock unless the fork's window is open:
 * so the forker blocks signals while it holds the lock outside its window (uffd; found in review:
 * every run hung at its first fork before).  The same for a thread in zns_tier_pageout, which
 * takes the lock slab by slab.  A helper thread signals the main thread every 20 us; the handler
 * stores only while a fork (flag set by atfork handlers registered after the heap's, so around
 * the tier's) or a pageout is under way. */
enum { FS_N = 100000, FS_SIZE = 256 };
static unsigned char *g_fs_blk[FS_N];
static volatile sig_atomic_t g_fs_active;
static volatile unsigned g_fs_at, g_fs_stores;
static volatile int g_fs_stop;
static pthread_t g_fs_forker;
static void fs_on_signal(int sig) {
  (void)sig;
  if (!g_fs_active) return;
  g_fs_at = (g_fs_at + 61) % FS_N;
  g_fs_blk[g_fs_at][1]++;   /* the block's pattern is restored below, after the fork */
  g_fs_stores++;
}
static void fs_enter(void) { g_fs_active = 1; }
static void fs_leave(void) { g_fs_active = 0; }
static void *fs_kicker(void *arg) {
  (void)arg;
  while (!g_fs_stop) { pthread_kill(g_fs_forker, SIGUSR1); usleep(20); }
  return NULL;
}
static int fork_signals(void) {
  for (int i = 0; i < FS_N; ++i) {
    g_fs_blk[i] = malloc(FS_SIZE);
    REQUIRE(g_fs_blk[i] != NULL);
    memset(g_fs_blk[i], i & 0xFF, FS_SIZE);
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = fs_on_signal;
  sa.sa_flags = SA_RESTART;
  REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
  REQUIRE(pthread_atfork(fs_enter, fs_leave, fs_leave) == 0);
  g_fs_forker = pthread_self();
  pthread_t kicker;
  REQUIRE(pthread_create(&kicker, NULL, fs_kicker, NULL) == 0);
  alarm(60);   /* a hung fork is a failure, not a stuck run */
  unsigned stores = 0, pageout_stores = 0;
  size_t outs = 0;
  for (int r = 0; r < 10; ++r) {
    unsigned p0 = g_fs_stores;
    g_fs_active = 1;   /* zns_tier_pageout holds the lock too, slab by slab */
    outs += zns_tier_pageout();
    g_fs_active = 0;
    pageout_stores += g_fs_stores - p0;
    unsigned s0 = g_fs_stores;
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(0);
    int st = 0;
    while (waitpid(pid, &st, 0) < 0) REQUIRE(errno == EINTR);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork %d: child status %d", r, st);
    stores += g_fs_stores - s0;
  }
  g_fs_stop = 1;
  pthread_join(kicker, NULL);
  alarm(0);
  CHECK(outs > 100, "paged out %zu slabs over 10 forks", outs);
  CHECK(stores > 0, "no handler stored during a fork: nothing tested");
  CHECK(pageout_stores > 0, "no handler stored during a pageout: nothing tested");
  long bad = 0;   /* every byte but [1] (the handler's counter) as written */
  for (int i = 0; i < FS_N; ++i) {
    g_fs_blk[i][1] = (unsigned char)(i & 0xFF);
    for (int j = 0; j < FS_SIZE; ++j) bad += g_fs_blk[i][j] != (unsigned char)(i & 0xFF);
  }
  CHECK(bad == 0, "%ld bytes changed", bad);
  zt_log("fork-signals: 10 forks with %zu slabs paged out in all, %u handler stores into the heap during them, %u during the pageouts",
         outs, stores, pageout_stores);
  return zt_finish("fork-signals");
}

/* ---- fork-mask: a fork keeps the forking thread's signal mask ----------------------------------- */
/* (uffd, run with ZNS_TIER_CHILD_MS=20) The tier's prepare blocks every signal while it holds the
 * lock outside the fork's window, and puts the thread's mask back.  In a forked child whose own
 * tier starts (child_start, under the same lock) while one of its threads forks, the prepare once
 * decided from the tier's mode before the lock and restored by it after: the thread's mask was
 * lost (6 of 200 runs; found in review), or every signal stayed blocked when the start failed.
 * Each run: a child process with a thread that allocates (so its tier starts) and a thread that
 * blocks SIGUSR2 and forks for 60 ms; the mask must survive in the forker and in each grandchild. */
static volatile int g_fm_stop;
static void *fm_allocator(void *arg) {
  (void)arg;
  for (size_t n = 0; !g_fm_stop; ++n) {
    char *p = malloc(16 + (n % 200) * 8);
    if (p) p[0] = 1;
    if (n % 64 == 0) usleep(1);
  }
  return NULL;
}
static void *fm_forker(void *arg) {
  (void)arg;
  sigset_t s, cur;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  long bad = 0;
  for (double t0 = now_s(); now_s() - t0 < 0.06 && !bad;) {
    pid_t pid = fork();
    if (pid == 0) {
      pthread_sigmask(SIG_SETMASK, NULL, &cur);
      _exit(sigismember(&cur, SIGUSR2) ? 0 : 3);
    }
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid) bad = 4;
    else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) bad = 2;
    pthread_sigmask(SIG_SETMASK, NULL, &cur);
    if (!sigismember(&cur, SIGUSR2) || sigismember(&cur, SIGINT)) bad = 1;
  }
  g_fm_stop = 1;
  return (void *)bad;
}
static int fork_mask(void) {
  enum { RUNS = 150 };
  int lost[5] = {0};
  for (int r = 0; r < RUNS; ++r) {
    pid_t c = fork();
    REQUIRE(c >= 0);
    if (c == 0) {
      pthread_t a, b;
      void *res = NULL;
      if (pthread_create(&b, NULL, fm_allocator, NULL) != 0 || pthread_create(&a, NULL, fm_forker, NULL) != 0) _exit(4);
      pthread_join(a, &res);
      pthread_join(b, NULL);
      _exit((int)(long)res);
    }
    int st = 0;
    REQUIRE(waitpid(c, &st, 0) == c);
    CHECK(WIFEXITED(st), "run %d: status %d", r, st);
    if (WIFEXITED(st) && WEXITSTATUS(st) < 5) lost[WEXITSTATUS(st)]++;
  }
  CHECK(lost[1] == 0 && lost[2] == 0 && lost[4] == 0,
        "of %d runs: the forker's mask changed by a fork in %d, a grandchild's in %d, a fork or thread failed in %d",
        RUNS, lost[1], lost[2], lost[4]);
  zt_log("fork-mask: %d children whose tier started while a thread forked", RUNS);
  return zt_finish("fork-mask");
}

/* ---- child-tier ------------------------------------------------------------------------------ */
static long stats_field(const char *name);

/* A forked child that lives on: mallocs and frees of 16..3000 B until `secs` after t0, or, with
 * until_scans, until its tier thread has scanned.  Returns the seconds since t0 at which it had (0:
 * never).  A child's own tier starts in a slow path (a miss: the class's bitmap word in use has no
 * free block), so the churn keeps enough blocks live that misses keep coming: KEEP of them, ~65 of
 * each class 256 B wide (2304, 2560, 2816 B: 48, 48, 32 blocks a slab, one bitmap word) and ~51
 * of 3072 B (40 a slab).  (With fewer live than its word has blocks, a class never misses: its
 * frees put back the bits its mallocs take.) */
static double churn_until(double t0, double secs, int until_scans) {
  enum { KEEP = 768 };
  unsigned char *keep[KEEP] = {0};
  double at = 0;
  for (unsigned i = 0; now_s() - t0 < secs; ++i) {
    unsigned k = i % KEEP;
    free(keep[k]);
    keep[k] = malloc(16 + (i * 37) % 3000);
    REQUIRE(keep[k] != NULL);
    keep[k][0] = (unsigned char)i;
    if (i % 1024 == 0) {
      if (until_scans && stats_field("scans") > 0) { at = now_s() - t0; break; }
      usleep(1000);
    }
  }
  for (unsigned k = 0; k < KEEP; ++k) free(keep[k]);
  return at;
}

static int child_tier(void) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 700, 777);
  size_t out = zns_tier_pageout();
  CHECK(out > 10, "paged out %zu slabs", out);
  int mode = tier().mode;
  double t0 = now_s();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct zns_tier_stats s = tier();
    /* uffd: off until due (the parent's userfaultfd does not serve the child); madvise: the
     * child's heap is a file of its own at once, scanned once due.  Counts start from zero. */
    CHECK(s.mode == (mode == 1 ? 0 : 2), "child right after the fork: tier mode %d", s.mode);
    CHECK(s.slabs_out == 0 && s.slabs_in == 0 && stats_field("scans") == 0, "child's counts inherited: out %llu in %llu scans %ld",
          s.slabs_out, s.slabs_in, stats_field("scans"));
    double on_at = churn_until(t0, 10, 1);   /* live and allocate until the child's tier runs */
    CHECK(on_at >= 0.25, "the child's tier started %.3f s after the fork (ZNS_TIER_CHILD_MS=300; 0: not in 10 s)", on_at);
    CHECK(tier().mode == mode, "the child's tier did not start: mode %d", tier().mode);
    struct blk *c = make_blocks(N, 700, 999);
    size_t cout = zns_tier_pageout();
    CHECK(cout > 10, "the child's tier paged out %zu slabs", cout);
    CHECK(count_bad(b, N) == 0, "the child lost inherited bytes under its own tier");
    CHECK(count_bad(c, N) == 0, "the child lost its own bytes under its own tier");
    s = tier();
    CHECK(mode != 1 || s.slabs_in > 0, "uffd: no slab came back through the child's own handler (in %llu)", s.slabs_in);
    for (size_t i = 0; i < N; ++i) memset(b[i].p, 0x5A, b[i].n);   /* must not reach the parent */
    /* a grandchild forked with the child's slabs out reads every byte */
    CHECK(zns_tier_pageout() > 10, "the child paged nothing out before its fork");
    pid_t g = fork();
    REQUIRE(g >= 0);
    if (g == 0) _exit(count_bad(c, N) == 0 ? 0 : 3);
    int gst = 0;
    REQUIRE(waitpid(g, &gst, 0) == g);
    CHECK(WIFEXITED(gst) && WEXITSTATUS(gst) == 0, "the grandchild saw changed bytes (status %d)", gst);
    CHECK(count_bad(c, N) == 0);
    zt_log("child-tier: the child's own tier ran %.2f s after the fork; it paged out %zu and %llu slabs in all, %llu came back",
           on_at, cout, tier().slabs_out, tier().slabs_in);
    _exit(zt_failures ? 3 : 0);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status %d)", st);
  CHECK(count_bad(b, N) == 0, "the child's stores reached the parent, or the parent lost bytes");
  out = zns_tier_pageout();
  CHECK(out > 10, "the parent's tier paged out %zu slabs after the child", out);
  CHECK(count_bad(b, N) == 0);
  return zt_finish("child-tier");
}

/* ---- child-tier-large ------------------------------------------------------------------------ */
/* A forked child that, once its tier is due, makes calls for blocks above 4 KiB only (a worker
 * whose small objects come from pools it allocates in large chunks): `how` names the one call it
 * makes (malloc, calloc, realloc or memalign).  Its own tier starts all the same, not before it is
 * due, and its inherited bytes stay intact.  (Until 2026-12-06 only the heap's slow path looked,
 * and such a child never started one.)  `vfork`: once due, the child first vforks, and the vfork
 * child makes the first large call (opendir's block, as a loop that closes descriptors before
 * exec does) and execs; the tier must then start in the forked child, not in the vfork child (it
 * did, on 52b1529: the forked child was left with a tier mode and no thread, file or fault
 * handler).  Frees never start it (a free may run under glibc's stack-cache lock, which the
 * start's pthread_create takes): `free` checks that 2 s of large frees after the delay do not. */
static int child_tier_large(const char *how) {
  enum { N = 10000, K = 4000 };   /* N blocks of 16..700 B, ~3.6 MB: a few slabs full behind the current ones */
  struct blk *b = make_blocks(N, 700, 777);
  CHECK(zns_tier_pageout() > 10, "nothing paged out before the fork");
  int mode = tier().mode;
  static void *big[K];
  for (unsigned k = 0; k < K; ++k) REQUIRE((big[k] = malloc(5000 + k)) != NULL);   /* (for "free") */
  int do_vfork = !strcmp(how, "vfork"), do_malloc = !strcmp(how, "malloc") || do_vfork, do_calloc = !strcmp(how, "calloc"),
      do_realloc = !strcmp(how, "realloc"), do_memalign = !strcmp(how, "memalign"), do_free = !strcmp(how, "free");
  REQUIRE(do_malloc + do_calloc + do_realloc + do_memalign + do_free == 1, "child-tier-large malloc|calloc|realloc|memalign|vfork|free");
  double t0 = now_s();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    double at = 0;
    void *r = big[0];
    if (do_vfork) {
      while (now_s() - t0 < 0.4) usleep(10000);   /* due, and nothing called since the fork */
      pid_t v = vfork();
      REQUIRE(v >= 0);
      if (v == 0) {
        DIR *d = opendir("/proc/self/fd");   /* a block above 4 KiB, in the vfork child */
        if (d) closedir(d);
        execl("/bin/true", "true", (char *)NULL);
        _exit(127);
      }
      int vst = 0;
      REQUIRE(waitpid(v, &vst, 0) == v);
    }
    for (unsigned i = 0, k = 1; now_s() - t0 < (do_free ? 2 : 5) && k < K; ++i, ++k) {
      size_t n = 5000 + (i * 4099u) % 60000;
      if (do_malloc) REQUIRE((big[k] = malloc(n)) != NULL);           /* kept: a free would look too */
      if (do_calloc) REQUIRE((big[k] = calloc(n, 1)) != NULL);
      if (do_memalign) REQUIRE(posix_memalign(&big[k], 4096, n) == 0);
      if (do_realloc) REQUIRE((r = realloc(r, n)) != NULL);
      if (do_free) { free(big[k]); big[k] = NULL; }
      if (mode == 1 ? tier().mode == 1 : stats_field("scans") > 0) { at = now_s() - t0; break; }
      usleep(1000);
    }
    if (do_free) {   /* frees alone must not start it */
      CHECK(at == 0, "free: the child's tier started %.3f s after the fork, from a free", at);
      _exit(zt_failures ? 3 : 0);
    }
    CHECK(at > 0, "%s: the child's tier never started (5 s, ZNS_TIER_CHILD_MS=300)", how);
    CHECK(at == 0 || at >= 0.25, "%s: the child's tier started %.3f s after the fork (ZNS_TIER_CHILD_MS=300)", how, at);
    CHECK(count_bad(b, N) == 0, "%s: the child lost inherited bytes", how);
    if (at > 0) {   /* (madvise: the inherited slabs may be out already; these are new) */
      struct blk *c = make_blocks(N, 700, 999);
      CHECK(zns_tier_pageout() > 10, "%s: the child's tier paged nothing out", how);
      CHECK(count_bad(b, N) == 0, "%s: the child lost inherited bytes under its own tier", how);
      CHECK(count_bad(c, N) == 0, "%s: the child lost its own bytes under its own tier", how);
      CHECK(mode != 1 || tier().slabs_in > 0, "%s: uffd: no slab came back through the child's own handler", how);
    }
    zt_log("child-tier-large %s: the child's own tier ran %.2f s after the fork", how, at);
    _exit(zt_failures ? 3 : 0);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child failed (status %d)", st);
  CHECK(count_bad(b, N) == 0, "the parent lost bytes");
  return zt_finish("child-tier-large");
}

/* A seccomp filter on this thread (all threads with SECCOMP_FILTER_FLAG_TSYNC) under which system
 * call nr fails with err and every other is allowed.  0, or -1 with errno. */
static int refuse_syscall(int nr, int err, unsigned flags) {
  struct sock_filter f[] = {
    BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (unsigned)err),
    BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {sizeof f / sizeof f[0], f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
}

/* ---- falloc-refused ---------------------------------------------------------------------------- */
/* A program that sandboxes itself with a filter that refuses fallocate (EPERM), as one written for
 * what the program itself calls would: the madvise tier cannot reserve room in its file for new
 * slabs.  The program goes on (the next allocator serves) with every byte, and a refused thread
 * stops asking (tier_room_refused): each of its allocations that wanted a new slab made three
 * refused calls and a purge of the span, 74304 tries here.  A filter is the thread's own unless
 * installed for all (TSYNC): a worker's does not stop the main thread's new slabs (a process-wide
 * latch, tried first on 2026-12-06, did: 0 of 20000 blocks from the heap). */
static size_t owned_of(struct blk *b, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) k += zns_owns(b[i].p) != 0;
  return k;
}
static struct blk *g_worker_blocks;
static void *refused_worker(void *arg) {
  REQUIRE(refuse_syscall(__NR_fallocate, EPERM, 0) == 0);   /* this thread only */
  g_worker_blocks = make_blocks((size_t)(uintptr_t)arg, 700, 4949);
  return NULL;
}
static int falloc_refused(void) {
  enum { N = 20000 };
  struct blk *a = make_blocks(N, 700, 5151);   /* before any filter: from the heap */
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, refused_worker, (void *)(uintptr_t)N) == 0 && pthread_join(th, NULL) == 0);
  struct blk *m = make_blocks(N, 700, 5252);   /* the main thread, no filter: new slabs */
  size_t owned_m = owned_of(m, N), owned_w = owned_of(g_worker_blocks, N);
  REQUIRE(refuse_syscall(__NR_fallocate, EPERM, SECCOMP_FILTER_FLAG_TSYNC) == 0);
  struct blk *b[4];
  for (int r = 0; r < 4; ++r) b[r] = make_blocks(N, 700, 6000 + r);   /* ~28 MB more: new slabs */
  unsigned long long errs = tier().evict_errors;
  for (int r = 0; r < 4; ++r) CHECK(count_bad(b[r], N) == 0, "round %d: bytes lost", r);
  CHECK(count_bad(a, N) == 0 && count_bad(m, N) == 0 && count_bad(g_worker_blocks, N) == 0, "bytes lost");
  if (tier().mode == 2) {
    CHECK(owned_m > N / 2, "the main thread got %zu of %d blocks from the heap after a worker's filter", owned_m, N);
    CHECK(owned_w < N / 2, "the refused worker got %zu of %d blocks from the heap", owned_w, N);
    CHECK(errs >= 1 && errs <= 4, "%llu refused fallocate tries counted (one per refused thread)", errs);
  }
  for (int r = 0; r < 4; ++r)
    for (size_t i = 0; i < N; ++i) free(b[r][i].p);
  for (size_t i = 0; i < N; ++i) { free(a[i].p); free(m[i].p); free(g_worker_blocks[i].p); }
  zt_log("falloc-refused: %llu refused tries; main thread %zu, refused worker %zu of %d blocks from the heap",
         errs, owned_m, owned_w, N);
  return zt_finish("falloc-refused");
}

/* ---- poll-refused ------------------------------------------------------------------------------ */
/* A program that locks itself down after start with a filter for all its threads (TSYNC) that
 * refuses poll, which it never calls itself: the uffd tier's thread waits for faults in poll.
 * Until 2026-12-06 it then spun on the failing poll without reading a fault, and the first touch
 * of a paged-out slab hung for good (a review's seccomp sweep); with read refused too it still
 * hangs, where it now ends with a line (its fatal line had gone to the tier thread's own
 * descriptor table, which has no stderr).  Timed by run.sh's timeout. */
static int poll_refused(int read_too) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 700, 3131);
  REQUIRE(refuse_syscall(read_too ? __NR_read : __NR_poll, EPERM, SECCOMP_FILTER_FLAG_TSYNC) == 0);
  usleep(100 * 1000);   /* the tier thread meets the filter in its next poll */
  size_t out = zns_tier_pageout();
  unsigned long long in0 = tier().slabs_in;
  double t0 = now_s();
  CHECK(out > 10, "paged out %zu slabs", out);
  CHECK(count_bad(b, N) == 0, "bytes lost in slabs brought back without poll");
  double back = now_s() - t0;
  struct zns_tier_stats s = tier();
  if (s.mode == 1) CHECK(s.slabs_in > in0, "no slab came back (%llu)", s.slabs_in);
  struct blk *c = make_blocks(N, 700, 3232);   /* the program goes on */
  CHECK(count_bad(c, N) == 0 && count_bad(b, N) == 0);
  for (size_t i = 0; i < N; ++i) { free(b[i].p); free(c[i].p); }
  zt_log("poll-refused: %zu slabs out, %llu back in %.3f s", out, s.slabs_in - in0, back);
  return zt_finish("poll-refused");
}

/* ---- child-seccomp ---------------------------------------------------------------------------- */
/* A forked worker that sandboxes itself (a seccomp filter that kills on userfaultfd and on thread
 * creation, as a strict allowlist would) and goes on allocating past ZNS_TIER_CHILD_MS: its own
 * tier must not be tried.  Without the check it dies of SIGSYS inside malloc. */
static int child_seccomp(void) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 700, 4242);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 3, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_clone3, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    REQUIRE(prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0);
    churn_until(now_s(), 0.8, 0);   /* past ZNS_TIER_CHILD_MS=300 */
    _exit(count_bad(b, N) == 0 && stats_field("scans") == 0 ? 0 : 3);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the sandboxed child %s %d",
        WIFSIGNALED(st) ? "died of signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  zt_log("child-seccomp: a sandboxed child allocated past its tier's start, without one");
  return zt_finish("child-seccomp");
}

/* ---- fork-each-slab ------------------------------------------------------------------------- */
/* Slabs of 2304 B blocks span 27 pages of their 32-page group, of 3072 B 30, of 288 B 27.  A fork
 * after each new slab puts the end of the heap at every slab's end in turn, also where that is
 * exactly the backing file's end (the file grows in steps that start at a slab's end): a fork
 * every PER blocks, half a slab of 2304 B (48 blocks: the fork after its last block is one),
 * less than a slab of 3072 B (40) or 288 B (384).  FORKS forks a class: 20 slabs of 2304 B, 24 of
 * 3072 B, 2.5 of 288 B. */
static int fork_each_slab(void) {
  static const size_t sizes[] = {2304, 3072, 288};
  enum { FORKS = 40, PER = 24 };
  static char *blocks[3][FORKS * PER];
  int forks = 0;
  for (int c = 0; c < 3; ++c) {
    size_t n = sizes[c];
    for (int i = 0; i < FORKS * PER; ++i) {
      blocks[c][i] = malloc(n);
      REQUIRE(blocks[c][i]);
      memset(blocks[c][i], (int)(i * 7 + c), n);
      if (i % PER != PER - 1) continue;
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {   /* every byte so far, then the child's own heap work */
        for (int cc = 0; cc <= c; ++cc)
          for (int j = 0; j < (cc < c ? FORKS * PER : i + 1); ++j)
            for (size_t k = 0; k < sizes[cc]; ++k)
              if (blocks[cc][j][k] != (char)(j * 7 + cc)) _exit(3);
        for (int j = 0; j < 200; ++j) free(malloc(16 + (size_t)j * 20));
        _exit(0);
      }
      int st = 0;
      REQUIRE(waitpid(pid, &st, 0) == pid);
      forks++;
      CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child of fork %d (%zu B, block %d) %s %d",
            forks, n, i, WIFSIGNALED(st) ? "died of signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      if (zt_failures) return zt_finish("fork-each-slab");
    }
  }
  zt_log("fork-each-slab: %d children read every block", forks);
  return zt_finish("fork-each-slab");
}

/* ---- quarantine-fork ------------------------------------------------------------------------ */
static volatile int qf_go, qf_ready;
static void *qf_thread(void *arg) {
  enum { N = 200 };
  void *v[N];
  for (int i = 0; i < N; i++) v[i] = malloc(64 + (size_t)(i % 4) * 64);
  for (int i = 0; i < N; i++) free(v[i]);   /* into this thread's quarantine (ZNS_SECURE=1) */
  qf_ready = 1;
  while (!qf_go) usleep(1000);
  return arg;   /* its exit releases the quarantine: each block's mark is checked */
}
static int inaccessible_mappings(void) {   /* PROT_NONE lines of /proc/self/maps (the guards) */
  FILE *f = fopen("/proc/self/maps", "r");
  REQUIRE(f);
  char line[512];
  int n = 0;
  while (fgets(line, sizeof line, f))
    if (strstr(line, " ---p ") || strstr(line, " ---s ")) n++;
  fclose(f);
  return n;
}
static int quarantine_fork(void) {
  REQUIRE(getenv("ZNS_SECURE") && atoi(getenv("ZNS_SECURE")) == 1, "run with ZNS_SECURE=1");
  pthread_t th;
  REQUIRE(pthread_create(&th, NULL, qf_thread, NULL) == 0);
  while (!qf_ready) usleep(1000);
  int guards = inaccessible_mappings();
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    for (int i = 0; i < 1000; ++i) free(malloc(16 + i % 500));
    /* the heap's guard pages are still there (the madvise tier remaps the heap in the child) */
    _exit(inaccessible_mappings() >= guards ? 0 : 4);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child failed (status %d)", st);
  qf_go = 1;
  pthread_join(th, NULL);   /* aborted ("write after free") when the child's release reached us */
  zt_log("quarantine-fork: the parent's quarantine survived the child's release of it");
  return zt_finish("quarantine-fork");
}

/* ---- metadata ------------------------------------------------------------------------------- */
static int metadata(void) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 300, 4242);
  size_t out = zns_tier_pageout();
  CHECK(out > 10, "paged out %zu slabs", out);
  struct zns_tier_stats s0 = tier();
  size_t sum = 0;
  for (size_t i = 0; i < N; i += 2) { sum += malloc_usable_size(b[i].p); free(b[i].p); b[i].p = NULL; }
  for (size_t i = 1; i < N; i += 2) sum += malloc_usable_size(b[i].p);
  struct zns_tier_stats s1 = tier();
  CHECK(s1.slabs_in == s0.slabs_in, "free/malloc_usable_size brought %llu slabs back",
        s1.slabs_in - s0.slabs_in);
  CHECK(count_bad(b, N) == 0);
  zt_log("metadata: %d frees and %d usable-size queries on cold blocks, %llu fault-ins (sum %zu)",
         N / 2, N, s1.slabs_in - s0.slabs_in, sum);
  return zt_finish("metadata");
}

/* ---- policy (ZNS_TIER_COLD_MS small, set by run.sh) ----------------------------------------- */
static int policy(void) {
  enum { N = 60000 };
  struct blk *b = make_blocks(N, 256, 31337);   /* ~8 MiB live */
  size_t rss0 = rss_bytes();
  /* one block's slab stays read-hot: read it every 20 ms */
  double t0 = now_s();
  struct zns_tier_stats s0 = tier();
  volatile unsigned sink = 0;
  while (now_s() - t0 < 3.0) {
    for (int k = 0; k < 64; ++k) sink += b[k].p[0];
    usleep(20000);
  }
  struct zns_tier_stats s1 = tier();
  size_t rss1 = rss_bytes();
  zt_log("policy: RSS %zu -> %zu KiB after 3 s idle; tier: out %llu slabs (%llu KiB on tier), in %llu, "
         "thrash %llu, write hits %llu", rss0 >> 10, rss1 >> 10, s1.slabs_out, s1.bytes_on_tier >> 10,
         s1.slabs_in - s0.slabs_in, s1.thrash, s1.write_hits);
  CHECK(s1.bytes_on_tier > 4u << 20, "an idle heap of ~8 MiB: only %llu bytes left RAM", s1.bytes_on_tier);
  CHECK(rss1 + (3u << 20) < rss0, "RSS did not drop: %zu -> %zu", rss0, rss1);
  /* The read-hot slabs came back a bounded number of times: each return within the cold window
   * doubles the slab's window (300, 600, 1200, 2400 ms), so in 3 s a slab leaves at most 3 times;
   * without the backoff it would be ~10.  Distinct pages bound the number of slabs. */
  uintptr_t pages[64];
  unsigned npages = 0;
  for (int k = 0; k < 64; ++k) {
    uintptr_t pg = (uintptr_t)b[k].p >> 12;
    int seen = 0;
    for (unsigned j = 0; j < npages; ++j) seen |= pages[j] == pg;
    if (!seen) pages[npages++] = pg;
  }
  unsigned long long ins = s1.slabs_in - s0.slabs_in;
  zt_log("policy: %u pages read-hot, %llu fault-ins (%.1f per page)", npages, ins, (double)ins / npages);
  CHECK(ins <= 4ull * npages, "%llu fault-ins for %u read-hot pages: thrashing", ins, npages);
  CHECK(s1.thrash > 0, "read-hot slabs were never seen to come back too soon: no feedback");
  CHECK(count_bad(b, N) == 0);
  (void)sink;
  return zt_finish("policy");
}

/* ---- budget (ZNS_TIER_MAX_RESIDENT=2M and a long cold window, set by run.sh) ---------------- */
static int budget(void) {
  enum { N = 80000 };
  struct blk *b = make_blocks(N, 256, 2718);   /* ~11 MiB live */
  usleep(1500000);                               /* a few scans */
  struct zns_tier_stats s = tier();
  zt_log("budget: %llu KiB on the tier, %llu slabs out", s.bytes_on_tier >> 10, s.slabs_out);
  CHECK(s.bytes_on_tier > 6u << 20, "over budget, but only %llu bytes left RAM", s.bytes_on_tier);
  CHECK(count_bad(b, N) == 0);
  return zt_finish("budget");
}

/* ---- governor (ZNS_TIER_COLD_MS=20 ZNS_TIER_MAX_RETURNS=40 or 0, set by run.sh) ------------- */
/* A number field of the JSON stats ("pressure", "slabs_out_clean"), or -1. */
static long stats_field(const char *name) {
  char buf[8192], key[64];
  int fd = memfd_create("zns-stats", 0);
  REQUIRE(fd >= 0);
  REQUIRE(zns_stats_print(fd, 1) == 0);
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  snprintf(key, sizeof key, "\"%s\":", name);
  const char *p = strstr(buf, key);
  return p ? atol(p + strlen(key)) : -1;
}

static int governor(int on) {
  enum { N = 128 * SLAB64 };   /* 64 B blocks: 128 slabs of 32 pages, 16 MiB */
  unsigned char **b = blocks64(N, 0);
  const unsigned slabs = N / SLAB64;
  struct zns_tier_stats s0 = tier(), s_mid = s0;
  double t0 = now_s();
  unsigned passes = 0, late_passes = 0;
  int mid_taken = 0;
  long bad = 0;
  while (now_s() - t0 < 5.0) {
    usleep(300000);
    if (!mid_taken && now_s() - t0 >= 3.0) { s_mid = tier(); mid_taken = 1; }
    for (size_t i = 0; i < N; ++i) bad += b[i][i % 64] != (unsigned char)(i & 0xff);
    passes++;
    late_passes += mid_taken;
  }
  struct zns_tier_stats s1 = tier();
  unsigned long long ins = s1.slabs_in - s0.slabs_in, late = s1.slabs_in - s_mid.slabs_in;
  long pressure = stats_field("pressure");
  zt_log("governor: %u passes over %u slabs; %llu returns (%.1f per slab), %llu in the last %u passes; "
         "%llu evictions; pressure %ld", passes, slabs, ins, (double)ins / slabs, late, late_passes,
         s1.slabs_out - s0.slabs_out, pressure);
  CHECK(bad == 0, "%ld bytes changed", bad);
  if (on) {
    /* The first passes bring the heap back (each return comes long after its window: nothing
     * per slab is wrong), and the governor raises every window.  Reads are invisible to the
     * policy (uffd and madvise alike), so a read-hot slab still leaves once per window; by 3 s
     * the windows are longer than 2 s, so in the last 2 s each slab comes back at most once
     * (plus slack for the tick).  Without the governor each slab comes back on every pass. */
    CHECK(late <= slabs + 60ull, "%llu returns in the last %u passes over %u slabs: the governor did "
          "not stop the heap thrashing", late, late_passes, slabs);
    CHECK(pressure > 0, "the governor never raised the cold windows (pressure %ld)", pressure);
  } else {
    CHECK(late * 2 >= (unsigned long long)slabs * late_passes, "only %llu returns in the last %u passes over %u slabs without the "
          "governor: the scenario no longer thrashes, so the governed run proves nothing", late,
          late_passes, slabs);
    CHECK(pressure == 0, "ZNS_TIER_MAX_RETURNS=0, yet pressure %ld", pressure);
  }
  free_blocks64(b, N);
  return zt_finish("governor");
}

/* ---- clean (uffd): evictions of slabs unchanged since they came back write nothing ------------ */
static int clean(void) {
  enum { N = 64 * SLAB64 };   /* 64 B blocks: 64 slabs */
  unsigned char **b = blocks64(N, 0);
  long c0 = stats_field("slabs_out_clean");
  size_t out1 = zns_tier_pageout();                 /* first time out: written */
  long c1 = stats_field("slabs_out_clean");
  long bad = 0;
  for (size_t i = 0; i < N; ++i) bad += b[i][i % 64] != (unsigned char)(i & 0xff);   /* read back */
  size_t out2 = zns_tier_pageout();                 /* unchanged: nothing to write */
  long c2 = stats_field("slabs_out_clean");
  unsigned long long w0 = tier().write_hits;
  for (size_t i = 0; i < N; i += 2) memset(b[i], (int)(~i & 0xff), 64);   /* half the blocks change */
  unsigned long long store_hits = tier().write_hits - w0;
  size_t out3 = zns_tier_pageout();                 /* every slab was stored to: written */
  long c3 = stats_field("slabs_out_clean");
  for (size_t i = 0; i < N; ++i)
    bad += b[i][i % 64] != (unsigned char)((i % 2 ? i : ~i) & 0xff);
  size_t out4 = zns_tier_pageout();                 /* read back only: clean again */
  long c4 = stats_field("slabs_out_clean");
  for (size_t i = 0; i < N; ++i)                    /* and what comes back is the new bytes */
    for (size_t j = 0; j < 64; ++j) bad += b[i][j] != (unsigned char)((i % 2 ? i : ~i) & 0xff);
  zt_log("clean: out %zu (clean %ld), read, out %zu (clean %ld), stored, out %zu (clean %ld), read, "
         "out %zu (clean %ld)", out1, c1 - c0, out2, c2 - c1, out3, c3 - c2, out4, c4 - c3);
  CHECK(bad == 0, "%ld bytes differ after the round trips", bad);
  const size_t most = N / SLAB64 - 4;   /* (the current slab, and a few) */
  CHECK(out1 >= most && out2 >= most && out3 >= most && out4 >= most, "a pageout left slabs behind");
  CHECK(c1 - c0 == 0, "%ld slabs never written before were evicted without a write", c1 - c0);
  CHECK(c2 - c1 >= (long)out2 - 2, "only %ld of %zu unchanged slabs left without a write", c2 - c1, out2);
  CHECK(c3 - c2 <= 1, "%ld slabs stored to were evicted without a write: their stores are lost", c3 - c2);
  /* A slab a store brings back comes back writable: one fault, not a second (write-protect) one. */
  CHECK(store_hits <= 2, "%llu write-protect faults after stores brought %zu slabs back", store_hits, out2);
  CHECK(c4 - c3 >= (long)out4 - 2, "only %ld of %zu unchanged slabs left without a write", c4 - c3, out4);
  free_blocks64(b, N);
  return zt_finish("clean");
}

/* longer = 0: 128 slabs read back over 1.6 s, 80 a second (twice the budget; run with a 2 s
 * window); longer = 1: 384 slabs over 6 s, 64 a second (1.6 times the budget, so that the first
 * raise is one step; run with a 5 s window, longer than the raise's hold once was). */
static int governor_windup(int longer) {
  const size_t N = (longer ? 384 : 128) * SLAB64, steps = longer ? 48 : 16;   /* 8 slabs a step */
  const unsigned period_us = longer ? 125000 : 100000;
  unsigned char **b = blocks64(N, 0);
  size_t out = zns_tier_pageout();
  usleep(700000);   /* the governor's first tick has been */
  long bad = 0;
  for (size_t k = 0; k < steps; ++k) {
    for (size_t i = k * (N / steps); i < (k + 1) * (N / steps); ++i) bad += b[i][i % 64] != (unsigned char)(i & 0xff);
    usleep(period_us);
  }
  usleep(600000);
  long p = stats_field("pressure"), raises = stats_field("pressure_raises");
  zt_log("governor: %zu slabs paged out, read back over %.1f s at %.1f times the budget: pressure %ld "
         "(%ld raises)", out, steps * period_us / 1e6, 8e6 / period_us / 40, p, raises);
  CHECK(out >= N / SLAB64 - 28, "only %zu slabs paged out", out);
  CHECK(p >= 1, "returns at twice the budget did not raise the pressure at all");
  CHECK(p <= (longer ? 1 : 2), "pressure %ld: it wound up on returns of slabs that left before its first raise", p);
  CHECK(bad == 0, "%ld bytes changed", bad);
  free_blocks64(b, N);
  return zt_finish("governor");
}

static int governor_relax(void) {
  enum { N = 32 * SLAB64 };   /* 32 slabs: over the budget of 20 returns a tick, not far over */
  unsigned char **b = blocks64(N, 0);
  long bad = 0, peak = 0;
  for (int pass = 0; pass < 4; ++pass) {   /* 1.2 s of passes: the heap comes back, twice or more */
    usleep(300000);
    for (size_t i = 0; i < N; ++i) bad += b[i][i % 64] != (unsigned char)(i & 0xff);
    long p = stats_field("pressure");
    if (p > peak) peak = p;
  }
  usleep(600000);                          /* the last tick of the busy phase */
  long p = stats_field("pressure");
  if (p > peak) peak = p;
  /* Quiet: nothing is touched, so nothing comes back.  After a window's worth of quiet ticks
   * (20 ms << pressure, at least 2 s) the pressure falls one step, and again after the next. */
  double t0 = now_s();
  long low = peak;
  while (now_s() - t0 < 6.0) {
    usleep(250000);
    p = stats_field("pressure");
    if (p < low) low = p;
  }
  zt_log("governor: pressure rose to %ld in 1.2 s of passes, fell to %ld after 6 s of quiet",
         peak, low);
  CHECK(peak >= 2, "the passes raised the pressure to %ld only: the scenario proves nothing", peak);
  CHECK(low < peak, "6 s without a single return, and the pressure is still %ld", low);
  for (size_t i = 0; i < N; ++i) bad += b[i][i % 64] != (unsigned char)(i & 0xff);
  CHECK(bad == 0, "%ld bytes changed", bad);
  free_blocks64(b, N);
  return zt_finish("governor");
}

/* ---- ksm (run.sh turns ksmd on for the run and restores it) --------------------------------- */
static long read_long(const char *path, const char *key) {
  FILE *f = fopen(path, "r");
  char line[256];
  long v = -1;
  if (!f) return -1;
  while (fgets(line, sizeof line, f))
    if (!key) { v = atol(line); break; }
    else if (!strncmp(line, key, strlen(key))) { v = atol(line + strlen(key)); break; }
  fclose(f);
  return v;
}

static int ksm(void) {
  enum { N = 32 * SLAB64, ROUNDS = 2 };   /* 64 B blocks of equal bytes: 32 slabs, 1024 pages KSM can merge */
  if (prctl(67 /* PR_SET_MEMORY_MERGE */, 1, 0, 0, 0) != 0) {
    zt_log("ksm: skipped: PR_SET_MEMORY_MERGE not supported here (errno %d)", errno);
    return 0;
  }
  unsigned char **b = blocks64(N, 0xab);
  long bad = 0, merged_min = -1;
  unsigned char v = 0xab;
  for (int r = 0; r < ROUNDS; ++r) {
    zns_tier_pageout();
    for (size_t i = 0; i < N; ++i) bad += b[i][i % 64] != v;   /* back by reads: write-protected */
    long merged = 0;   /* this process's merged pages */
    for (int t = 0; t < 150 && (merged = read_long("/proc/self/ksm_stat", "ksm_merging_pages ")) < 900; ++t)
      usleep(100000);
    if (merged_min < 0 || merged < merged_min) merged_min = merged;
    v = (unsigned char)(0x11 * (r + 2));
    for (size_t i = 0; i < N; ++i) memset(b[i], v, 64);       /* stores into merged pages */
    zns_tier_pageout();                                        /* must write them */
    for (size_t i = 0; i < N; ++i)
      for (size_t j = 0; j < 64; ++j) bad += b[i][j] != v;
  }
  zt_log("ksm: %d rounds; fewest pages merged before the stores %ld; %ld bytes lost", ROUNDS,
         merged_min, bad);
  CHECK(merged_min >= 900, "ksmd merged only %ld pages: the scenario proves nothing (is ksmd on?)",
        merged_min);
  CHECK(bad == 0, "%ld bytes lost: stores into KSM-merged pages of a slab that came back by a read "
        "were dropped by its next eviction", bad);
  free_blocks64(b, N);
  return zt_finish("ksm");
}

/* ---- errors: writes to the backing file fail ------------------------------------------------- */
static int errors(int default_signal, int stderr_full) {
  enum { N = 20000 };
  int saved_stderr = -1, full = -1;
  if (stderr_full) {   /* fd 2: a file of exactly the limit (1 MiB) in ZNS_TIER_DIR, until the
                        * tier's failures are behind us (this test's own lines go to fd 2 too, so
                        * a REQUIRE failing in between ends it silently with 153) */
    char path[4096];
    snprintf(path, sizeof path, "%s/stderr.full", getenv("ZNS_TIER_DIR") ? getenv("ZNS_TIER_DIR") : "/tmp");
    full = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    if (full >= 0) unlink(path);
    saved_stderr = dup(2);
    REQUIRE(full >= 0 && saved_stderr >= 0 && ftruncate(full, 1 << 20) == 0 && dup2(full, 2) == 2);
  }
  struct blk *b = make_blocks(N, 500, 8080);
  /* No file may grow (pwrite says EFBIG); default-signal: none past 1 MiB, so that this program's
   * own output (a file, under run.sh) still fits.  With the signal's default action, a SIGXFSZ of
   * the tier's writes (pageout's on this thread, madvise's room for new slabs, its messages)
   * would end the program: the tier must take it back. */
  struct rlimit rl = {default_signal ? 1 << 20 : 0, RLIM_INFINITY};
  REQUIRE(setrlimit(RLIMIT_FSIZE, &rl) == 0);
  if (!default_signal) signal(SIGXFSZ, SIG_IGN);
  size_t out = zns_tier_pageout();
  struct blk *extra = NULL;
  if (stderr_full) {
    struct stat st;
    extra = make_blocks(N, 500, 7070);   /* madvise: new slabs, whose room in the file fails now */
    REQUIRE(dup2(saved_stderr, 2) == 2);
    CHECK(fstat(full, &st) == 0 && st.st_size == 1 << 20, "stderr grew past the limit (%lld bytes)", (long long)st.st_size);
    zt_log("errors: the tier's lines met a stderr at the limit, and the program lived");
  }
  struct zns_tier_stats s = tier();
  zt_log("errors: paged out %zu, eviction errors %llu", out, s.evict_errors);
  if (s.mode == 1) {
    CHECK(default_signal || out == 0, "%zu slabs left RAM though the file refused every write", out);
    CHECK(s.evict_errors > 0, "no eviction error counted");
  }
  CHECK(count_bad(b, N) == 0, "bytes lost after failed evictions");
  /* the program runs on: more memory, more frees */
  struct blk *c = make_blocks(N, 500, 9090);
  CHECK(count_bad(c, N) == 0);
  for (size_t i = 0; i < N; ++i) { free(b[i].p); free(c[i].p); }
  if (extra) {
    CHECK(count_bad(extra, N) == 0);
    for (size_t i = 0; i < N; ++i) free(extra[i].p);
  }
  return zt_finish("errors");
}

/* ---- thread-error: an error met by the tier thread reaches stderr ----------------------------- */
/* (uffd, ZNS_TIER_COLD_MS=100) The thread has a descriptor table of its own (no stderr in it): its
 * one line about a failed write must still reach the program's stderr.  run.sh wants the line. */
static int thread_error(void) {
  enum { N = 20000 };
  struct rlimit rl = {1 << 20, RLIM_INFINITY};   /* the file takes 1 MiB, the heap is 6 */
  REQUIRE(setrlimit(RLIMIT_FSIZE, &rl) == 0);
  struct blk *b = make_blocks(N, 600, 3131);
  double t0 = now_s();
  while (tier().evict_errors == 0 && now_s() - t0 < 10) usleep(50000);   /* the thread's scans */
  struct zns_tier_stats s = tier();
  zt_log("thread-error: %llu slabs out, %llu eviction errors, by the tier thread", s.slabs_out, s.evict_errors);
  CHECK(s.evict_errors > 0, "the tier thread met no error");
  CHECK(count_bad(b, N) == 0);
  return zt_finish("thread-error");
}

/* ---- full: the backing file's file system is full (run.sh mounts a 256 KiB tmpfs) ------------ */
static int full(void) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 500, 6060);   /* madvise: most of it cannot get room in the file */
  size_t out = zns_tier_pageout();              /* uffd: most evictions meet ENOSPC */
  struct blk *c = make_blocks(N, 500, 7070);
  out += zns_tier_pageout();
  struct zns_tier_stats s = tier();
  zt_log("full: paged out %zu, errors %llu", out, s.evict_errors);
  CHECK(s.evict_errors > 0, "a full file system and no error counted");
  CHECK(count_bad(b, N) == 0 && count_bad(c, N) == 0, "bytes lost on a full file system");
  for (size_t i = 0; i < N; ++i) { free(b[i].p); free(c[i].p); }
  return zt_finish("full");
}

/* ---- fork-full: fork, then the backing file's file system fills up (madvise) -------------------- */
/* The heap is a shared file mapping with room reserved in the file: a store must never need a new
 * block.  A child's copy of the heap that shared the parent's blocks (a reflink, XFS or btrfs)
 * would make every store of either process a copy-on-write of a block: SIGBUS once the disk is
 * full.  run.sh runs it on an XFS image where it can make one. */
static void fill_disk(const char *dir) {
  char path[600];
  snprintf(path, sizeof path, "%s/zns-filler", dir);
  int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0600);
  REQUIRE(fd >= 0, "cannot create %s", path);
  static char buf[1 << 16];
  memset(buf, 1, sizeof buf);
  while (write(fd, buf, sizeof buf) > 0) {}
  while (write(fd, buf, 512) > 0) {}
  fsync(fd);
  close(fd);
}
static int fork_full(const char *dir) {
  enum { N = 60000 };
  struct blk *b = make_blocks(N, 1000, 8080);
  int ready[2];
  REQUIRE(pipe(ready) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {   /* stores into every block once the disk is full */
    char c;
    close(ready[1]);   /* (a parent that died first: end of file, not a wait for ever) */
    REQUIRE(read(ready[0], &c, 1) == 1);
    long bad = count_bad(b, N);
    if (tier().mode != 2) _exit(4);   /* (ZNS_TIER_CHILD_MS set: its heap is a file of its own) */
    for (size_t i = 0; i < N; ++i) { b[i].seed ^= 0x77; fill(b[i].p, b[i].n, b[i].seed); }
    _exit(bad == 0 && count_bad(b, N) == 0 ? 0 : 3);
  }
  fill_disk(dir);
  REQUIRE(write(ready[1], "x", 1) == 1);
  for (size_t i = 0; i < N; ++i) { b[i].seed ^= 0x99; fill(b[i].p, b[i].n, b[i].seed); }   /* SIGBUS here? */
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child %s %d after the disk filled",
        WIFSIGNALED(st) ? "died of signal" : "exited with", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  CHECK(count_bad(b, N) == 0, "the parent's blocks changed");
  zt_log("fork-full: %d blocks rewritten by the parent and by its child on a full file system", N);
  return zt_finish("fork-full");
}

/* ---- closefd: the program closes every descriptor (daemons do) and reuses the numbers --------- */
static int closefd(void) {
  enum { N = 20000 };
  struct blk *b = make_blocks(N, 300, 1234);
  struct blk *early = make_blocks(N, 300, 5678);   /* out before the descriptors go */
  size_t early_out = zns_tier_pageout();
  CHECK(early_out > 10, "paged out %zu slabs", early_out);
  for (size_t i = 0; i < N; ++i) b[i].p[0] = b[i].p[0];   /* b's slabs back: the late pageout's */
  char path[] = "/tmp/zns-tier-victimXXXXXX";
  int v = mkstemp(path);
  REQUIRE(v >= 0);
  unlink(path);
  for (int fd = 3; fd < 1024; ++fd) if (fd != v) close(fd);
  for (int fd = 3; fd < 1024; ++fd) if (fd != v) dup2(v, fd);   /* every number now names the victim */
  /* slabs that left before: still there (uffd: the tier's userfaultfd must outlive the close) */
  CHECK(count_bad(early, N / 2) == 0, "slabs paged out before the descriptors were closed came back changed");
  size_t out = zns_tier_pageout();
  off_t size = lseek(v, 0, SEEK_END);
  zt_log("closefd: paged out %zu before and %zu after the descriptors were replaced; the victim file has %ld bytes",
         early_out, out, (long)size);
  CHECK(size == 0, "the tier wrote %ld bytes into a file of the program's", (long)size);
  CHECK(count_bad(b, N) == 0);
  /* A fork now: the child's copy of the heap must not come from the victim (madvise), nor may the
   * child close the program's descriptors that took the tier's numbers. */
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {   /* (the second half of `early` was still out at the fork) */
    int closed = 0;
    for (int fd = 3; fd < 1024; ++fd) closed += fcntl(fd, F_GETFD) < 0;
    long bad = count_bad(b, N) + count_bad(early, N);
    if (bad || closed) fprintf(stderr, "closefd: the child sees %ld changed blocks, %d descriptors closed\n", bad, closed);
    _exit(bad || closed ? 3 : 0);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child forked after the descriptors were replaced: %s %d",
        WIFSIGNALED(st) ? "signal" : "status", WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
  CHECK(lseek(v, 0, SEEK_END) == 0, "the fork wrote into a file of the program's");
  struct blk *c = make_blocks(N, 300, 4321);   /* and the program runs on */
  CHECK(count_bad(c, N) == 0);
  return zt_finish("closefd");
}

/* ---- closefd-forks: two threads fork at once after the descriptors were replaced --------------- */
/* (uffd) With slabs out and the tier's numbers taken by the program, a fork brings the slabs back
 * through faults, letting go of the tier lock meanwhile: two threads forking at once must neither
 * deadlock nor lose bytes.  Under `no-close-range` (the tier thread cannot have a table of its own,
 * as before Linux 5.9) the slabs out are lost when the userfaultfd goes, a known limit: the forks
 * must still end. */
static unsigned char *g_cf_bad;
static struct blk *g_cf_b;
static void *cf_forker(void *arg) {
  (void)arg;
  for (int i = 0; i < 20; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(g_cf_bad ? 0 : (count_bad(g_cf_b, 20000) == 0 ? 0 : 3));
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork %d: the child saw changed bytes (status %d)", i, st);
  }
  return NULL;
}
static int closefd_forks(void) {
  enum { N = 20000 };
  g_cf_bad = getenv("TIER_TEST_NO_CLOSE_RANGE") ? (unsigned char *)"" : NULL;   /* bytes may be lost */
  g_cf_b = make_blocks(N, 300, 2468);
  size_t out = zns_tier_pageout();
  CHECK(out > 10, "paged out %zu slabs", out);
  int v = open("/dev/null", O_RDWR);
  REQUIRE(v >= 0);
  for (int fd = 3; fd < 1024; ++fd) if (fd != v) { close(fd); dup2(v, fd); }
  alarm(60);   /* a hang is a failure, not a stuck run */
  pthread_t t[2];
  for (int k = 0; k < 2; ++k) REQUIRE(pthread_create(&t[k], NULL, cf_forker, NULL) == 0);
  for (int k = 0; k < 2; ++k) pthread_join(t[k], NULL);
  alarm(0);
  if (!g_cf_bad) CHECK(count_bad(g_cf_b, N) == 0, "the parent's blocks changed");
  zt_log("closefd-forks: 2 threads forked 20 times each with %zu slabs paged out and the descriptors replaced%s",
         out, g_cf_bad ? " (no close_range: bytes not checked)" : "");
  return zt_finish("closefd-forks");
}

/* no-close-range SCENARIO...: run the scenario where close_range(2) is refused (ENOSYS, as before
 * Linux 5.9): a seccomp filter, then this program again (the tier starts at its load). */
static int no_close_range(char **argv) {
  REQUIRE(refuse_syscall(__NR_close_range, ENOSYS, 0) == 0);
  setenv("TIER_TEST_NO_CLOSE_RANGE", "1", 1);
  execv("/proc/self/exe", argv);
  zt_log("exec: %s", strerror(errno));
  return 2;
}

/* ---- mlock: pages of the heap are locked in memory ------------------------------------------ */
static int mlock_test(int all) {
  enum { N = 64 * SLAB64 };   /* 64 B blocks: 64 slabs */
  unsigned char **b = blocks64(N, 0);
  if (all ? mlockall(MCL_CURRENT | MCL_FUTURE) != 0   /* RLIMIT_MEMLOCK for a user: no test */
          : mlock((void *)((uintptr_t)b[SLAB64 + SLAB64 / 2] & ~(uintptr_t)4095), 4096) != 0) {   /* a page amid a slab */
    zt_log("mlock: skipped: mlock%s says errno %d", all ? "all" : "", errno);
    return 0;
  }
  size_t out1 = zns_tier_pageout();
  long bad = 0;
  for (size_t i = 0; i < N; ++i)
    for (size_t j = 0; j < 64; ++j) bad += b[i][j] != (unsigned char)(i & 0xff);
  size_t out2 = zns_tier_pageout();   /* (uffd: the reads brought them back; madvise: still out) */
  struct zns_tier_stats s2 = tier();
  for (size_t i = 0; i < N; ++i) bad += b[i][i % 64] != (unsigned char)(i & 0xff);
  zt_log("mlock: %s: paged out %zu then %zu; eviction errors %llu; %ld bytes changed",
         all ? "all" : "one page", out1, out2, s2.evict_errors, bad);
  CHECK(bad == 0, "%ld bytes changed around locked pages", bad);
  CHECK(s2.evict_errors == 0, "the refused drops were counted as errors (%llu)", s2.evict_errors);
  if (all) {
    CHECK(out1 == 0 && out2 == 0, "%zu + %zu slabs left a locked heap", out1, out2);
  } else {
    CHECK(out1 >= N / SLAB64 - 4, "one locked page kept %zu slabs in RAM", N / SLAB64 - out1);
  }
  if (all) munlockall();
  free_blocks64(b, N);
  return zt_finish("mlock");
}

/* ---- signal-locks: a handler's store into a cold block while its thread holds a heap lock ----- */
/* Four threads make 40000 blocks of 1 KiB and exit (their slabs become shared, then cold); a
 * thread churns whole slabs of the same class (each refill takes the class lock, the depot's),
 * and its SIGUSR1 handler, every 20 us, increments a byte of a cold block.  A store into an out or
 * armed slab waits for the tier thread; that one, claiming or letting go of a slab of the class
 * (tier_claim, tier_unclaim), waited for the class lock the handler's thread held: a deadlock
 * (a helper's review, 2026-12-06: 4 runs in 9 hung).  The handler's counts are checked after.
 * The stores spread over every slab: with S slabs each gets one every S / (~9500 a second), and
 * under uffd a slab leaves only after half its window (run.sh: 100 ms) armed without one.  So
 * the blocks span many slabs: 312 of 128 blocks (40 MB), a store every ~33 ms each.  (The same
 * blocks of 256 B make 78 slabs of 512, one every 8 ms: none left under uffd.) */
enum { SL_N = 40000, SL_SIZE = 1024 };
static unsigned char *g_sl_blk[SL_N];
static unsigned char g_sl_count[SL_N];   /* the handler's increments of byte [1], mod 256 */
static volatile unsigned g_sl_at;
static volatile int g_sl_stop;
static void sl_on_signal(int sig) {
  (void)sig;
  unsigned i = g_sl_at = (g_sl_at + 7919) % SL_N;
  g_sl_blk[i][1]++;
  g_sl_count[i]++;
}
static void *sl_maker(void *arg) {
  for (unsigned i = (unsigned)(uintptr_t)arg; i < SL_N; i += 4) {
    g_sl_blk[i] = malloc(SL_SIZE);
    REQUIRE(g_sl_blk[i] != NULL);
    memset(g_sl_blk[i], (int)(i & 0x7F), SL_SIZE);
  }
  return NULL;
}
static void *sl_churn(void *arg) {
  (void)arg;
  static void *v[2048];
  while (!g_sl_stop) {
    for (int i = 0; i < 2048; ++i) v[i] = malloc(SL_SIZE);
    for (int i = 0; i < 2048; ++i) free(v[i]);
  }
  return NULL;
}
static int signal_locks(double secs) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = sl_on_signal;
  sa.sa_flags = SA_RESTART;
  REQUIRE(sigaction(SIGUSR1, &sa, NULL) == 0);
  pthread_t m[4], churner;
  for (uintptr_t k = 0; k < 4; ++k) REQUIRE(pthread_create(&m[k], NULL, sl_maker, (void *)k) == 0);
  for (int k = 0; k < 4; ++k) pthread_join(m[k], NULL);
  alarm(30 + (unsigned)secs);   /* a hang is a failure, not a stuck run */
  REQUIRE(pthread_create(&churner, NULL, sl_churn, NULL) == 0);
  unsigned long sent = 0;
  struct zns_tier_stats s0 = tier();
  for (double t0 = zt_now(); zt_now() - t0 < secs; ++sent) {
    pthread_kill(churner, SIGUSR1);
    usleep(20);
  }
  g_sl_stop = 1;
  pthread_join(churner, NULL);
  alarm(0);
  struct zns_tier_stats s1 = tier();
  long bad = 0;
  for (unsigned i = 0; i < SL_N; ++i) {
    bad += g_sl_blk[i][1] != (unsigned char)((i & 0x7F) + g_sl_count[i]);
    for (int j = 0; j < SL_SIZE; ++j) bad += j != 1 && g_sl_blk[i][j] != (unsigned char)(i & 0x7F);
  }
  CHECK(bad == 0, "%ld bytes not as written", bad);
  CHECK(s1.slabs_out - s0.slabs_out > 50, "only %llu slabs paged out: nothing tested", s1.slabs_out - s0.slabs_out);
  zt_log("signal-locks: %lu signals, %llu slabs out and %llu back meanwhile", sent,
         s1.slabs_out - s0.slabs_out, s1.slabs_in - s0.slabs_in);
  return zt_finish("signal-locks");
}

/* ---- fallback: no userfaultfd here; the program must simply run ---------------------------- */
static int fallback(void) {
  struct blk *b = make_blocks(20000, 400, 1);
  size_t out = zns_tier_pageout();
  struct zns_tier_stats s = tier();
  zt_log("fallback: mode %d, paged out %zu", s.mode, out);
  CHECK(s.mode != 1, "userfaultfd was expected to be unavailable here");
  CHECK(count_bad(b, 20000) == 0);
  return zt_finish("fallback");
}

/* ---- exec-no-uffd: the program a kernel without userfaultfd would run -------------------------- */
/* tier_test exec-no-uffd PROGRAM ARGS...: a filter makes userfaultfd(2) fail with ENOSYS (a kernel
 * built without it, or qemu-user, which has none), then PROGRAM runs under it (run.sh: as nobody,
 * so that /dev/userfaultfd cannot be opened either).  Its preloaded heap must say why uffd is off
 * (ENOSYS: no such call) rather than blame privileges, and go on with madvise. */
static int exec_no_uffd(char **argv) {
  REQUIRE(refuse_syscall(__NR_userfaultfd, ENOSYS, 0) == 0, "seccomp: %s", strerror(errno));
  execvp(argv[0], argv);
  zt_log("exec-no-uffd: cannot run %s: %s", argv[0], strerror(errno));
  return 2;
}

int main(int argc, char **argv) {
  if (argc > 2 && !strcmp(argv[1], "exec-no-uffd")) return exec_no_uffd(argv + 2);
  REQUIRE(zns_tier_stats != NULL && zns_tier_pageout != NULL, "run under libzns_slab (tests/tier/run.sh)");
  REQUIRE(argc >= 2, "usage: tier_test SCENARIO [ARGS]");
  const char *c = argv[1];
  if (!strcmp(c, "fallback")) return fallback();
  if (!strcmp(c, "mode")) { printf("%d\n", tier().mode); return 0; }
  if (!strcmp(c, "no-close-range") && argc > 2) { argv[1] = argv[0]; return no_close_range(argv + 1); }
  REQUIRE(tier().mode != 0, "the tier is off: set ZNS_TIER=uffd or madvise");
  if (!strcmp(c, "integrity")) return integrity(argc > 2 ? atoi(argv[2]) : 4, argc > 3 ? atof(argv[3]) : 5);
  if (!strcmp(c, "syscalls")) return syscalls();
  if (!strcmp(c, "cancel")) return cancel_test();
  if (!strcmp(c, "fork")) return fork_test();
  if (!strcmp(c, "fork-each-slab")) return fork_each_slab();
  if (!strcmp(c, "fork-as-limit")) return fork_as_limit();
  if (!strcmp(c, "errno")) return errno_kept();
  if (!strcmp(c, "nss-fork")) return nss_fork();
  if (!strcmp(c, "fork-signals")) return fork_signals();
  if (!strcmp(c, "signal-locks")) return signal_locks(argc > 2 ? atof(argv[2]) : 5);
  if (!strcmp(c, "fork-mask")) return fork_mask();
  if (!strcmp(c, "child-tier")) return child_tier();
  if (!strcmp(c, "child-seccomp")) return child_seccomp();
  if (!strcmp(c, "child-tier-large") && argc > 2) return child_tier_large(argv[2]);
  if (!strcmp(c, "falloc-refused")) return falloc_refused();
  if (!strcmp(c, "poll-refused")) return poll_refused(argc > 2 && !strcmp(argv[2], "read"));
  if (!strcmp(c, "fork-full") && argc > 2) return fork_full(argv[2]);
  if (!strcmp(c, "quarantine-fork")) return quarantine_fork();
  if (!strcmp(c, "metadata")) return metadata();
  if (!strcmp(c, "policy")) return policy();
  if (!strcmp(c, "budget")) return budget();
  if (!strcmp(c, "clean")) return clean();
  if (!strcmp(c, "ksm")) return ksm();
  if (!strcmp(c, "governor") && argc > 2 && !strcmp(argv[2], "relax")) return governor_relax();
  if (!strcmp(c, "governor") && argc > 2 && !strcmp(argv[2], "windup")) return governor_windup(argc > 3 && !strcmp(argv[3], "long"));
  if (!strcmp(c, "governor")) return governor(argc > 2 && !strcmp(argv[2], "on"));
  if (!strcmp(c, "errors"))
    return errors(argc > 2 && !strcmp(argv[2], "default-signal"), argc > 3 && !strcmp(argv[3], "stderr-full"));
  if (!strcmp(c, "full")) return full();
  if (!strcmp(c, "thread-error")) return thread_error();
  if (!strcmp(c, "closefd")) return closefd();
  if (!strcmp(c, "closefd-forks")) return closefd_forks();
  if (!strcmp(c, "mlock")) return mlock_test(argc > 2 && !strcmp(argv[2], "all"));
  zt_log("unknown scenario %s", c);
  return 2;
}
