/* The bitmap records of one class held all at once: a slab each, and a spare each in the caches
 * of threads that have exited (ThreadCache.spare: a slab that fills gives its record to its
 * thread's spare slot).  Until 2026-12-06 a pool had room for a record per group and no more, so
 * with every group of the region serving one class and spares besides it handed out records past
 * its end, written over the next pool's (or the mirror's lines): no message, a corrupt heap.  Now
 * the pool has one chunk of slack and takes the spares back when that is used up.
 *
 * The program re-executes itself under a 400 MiB address-space limit (a 64 MiB region: 1024
 * groups), 200 threads (alive at once: a cache each) fill a slab of 8 B blocks each and exit,
 * their blocks are freed, then this thread fills the whole region with 8 B blocks, frees one block
 * of each slab (so every slab needs a record again: 1024 slabs + 200 spares, more than the 1024 +
 * 128 records the pool has), and takes them back.  Every block holds its own address: a block
 * handed out twice, or a bitmap written by two slabs, shows.  Skipped under glibc. */
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "tests/api/zns_test.h"

enum { THREADS = 200, MAXSLABS = 4096 };
static pthread_barrier_t barrier;

static void *fill_one_slab(void *arg) {
  (void)arg;
  void *first = malloc(8);
  REQUIRE(first);
  uintptr_t group = zt_addr(first) >> 16;
  for (void *p = first; (zt_addr(p) >> 16) == group;) {   /* to the first block of the next slab */
    p = malloc(8);
    REQUIRE(p && zns_owns(p));
  }
  pthread_barrier_wait(&barrier);   /* all alive at once: a cache each */
  return first;                     /* (its blocks are left to the main thread) */
}

static uintptr_t *blocks;   /* every block this thread holds, from glibc's mmap */

int main(int argc, char **argv) {
  (void)argc;
  if (!zt_zns_mode()) {
    zt_log("pool_spares: skipped under plain glibc");
    return 0;
  }
  if (!getenv("ZT_POOL_SPARES")) {
    struct rlimit as = {(rlim_t)400 << 20, (rlim_t)400 << 20};
    REQUIRE(setrlimit(RLIMIT_AS, &as) == 0, "setrlimit: %s", strerror(errno));
    setenv("ZT_POOL_SPARES", "1", 1);
    execv("/proc/self/exe", argv);
    zt_log("pool_spares: re-exec failed: %s", strerror(errno));
    return 1;
  }
  /* the threads' slabs: full, their records in the dead threads' spares */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 << 10);
  pthread_barrier_init(&barrier, NULL, THREADS);
  pthread_t t[THREADS];
  void *firsts[THREADS];
  for (int i = 0; i < THREADS; i++) REQUIRE(pthread_create(&t[i], &attr, fill_one_slab, NULL) == 0);
  for (int i = 0; i < THREADS; i++) REQUIRE(pthread_join(t[i], &firsts[i]) == 0);
  for (int i = 0; i < THREADS; i++) {   /* every block of the thread's slab, and the next slab's first */
    uintptr_t base = zt_addr(firsts[i]) & ~(uintptr_t)0xffff;
    for (int j = 0; j < 8192; j++) free((void *)(base + 8 * (uintptr_t)j));
  }
  /* (the next slabs' first blocks: found below as blocks of slabs this thread does not own; the
   * region's fill below takes what it can) */
  malloc_trim(0);

  /* the whole region in 8 B blocks */
  size_t cap = (size_t)80 << 20 >> 3;
  blocks = (uintptr_t *)mmap(NULL, cap * sizeof *blocks, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(blocks != MAP_FAILED);
  static uintptr_t slab_first[MAXSLABS];   /* index in blocks of each slab's first block */
  size_t n = 0, slabs = 0;
  uintptr_t last_group = 0;
  for (;;) {
    void *p = malloc(8);
    REQUIRE(p);
    if (!zns_owns(p)) {   /* the region is full: the next allocator serves */
      free(p);
      break;
    }
    REQUIRE(n < cap, "more than %zu blocks of 8 B in a 64 MiB region", cap);
    *(uintptr_t *)p = zt_addr(p);
    blocks[n] = zt_addr(p);
    if ((zt_addr(p) >> 16) != last_group) {
      last_group = zt_addr(p) >> 16;
      REQUIRE(slabs < MAXSLABS);
      slab_first[slabs++] = n;
    }
    n++;
  }
  zt_log("pool_spares: %zu blocks of 8 B in %zu slabs", n, slabs);
  CHECK(slabs > 900, "the 64 MiB region held %zu slabs of 8 B (expected ~1000)", slabs);
  /* one block back into each (full) slab: each takes a record again; then they come back */
  /* (a slab with one free block is not worth reusing yet: the mallocs may go to the next allocator) */
  for (size_t i = 0; i < slabs; i++) {
    free((void *)blocks[slab_first[i]]);
    blocks[slab_first[i]] = 0;
  }
  for (size_t i = 0; i < slabs; i++) {
    void *p = malloc(8);
    REQUIRE(p);
    if (!zns_owns(p)) {
      free(p);
      continue;
    }
    *(uintptr_t *)p = zt_addr(p);
    blocks[slab_first[i]] = zt_addr(p);
  }
  /* no block twice, and every block still holds its own address */
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (blocks[i] && *(uintptr_t *)blocks[i] != blocks[i] && bad++ < 5)
      zt_log("pool_spares: block %#lx holds %#lx", (unsigned long)blocks[i], (unsigned long)*(uintptr_t *)blocks[i]);
  CHECK(bad == 0, "%zu blocks of %zu were handed out twice or overwritten", bad, n);
  /* and the heap goes on: everything back, and a round more */
  for (size_t i = 0; i < n; i++) free((void *)blocks[i]);   /* (free(NULL) for the slots left empty) */
  for (size_t i = 0; i < 100000; i++) {
    void *p = malloc(8);
    REQUIRE(p);
    blocks[i] = zt_addr(p);
    *(uintptr_t *)p = zt_addr(p);
  }
  for (size_t i = 0; i < 100000; i++) {
    CHECK(*(uintptr_t *)blocks[i] == blocks[i]);
    free((void *)blocks[i]);
  }
  return zt_finish("pool_spares");
}
