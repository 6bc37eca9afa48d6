/* The bitmap records of one class held all at once: a slab each, and a spare each in the caches
 * of threads that have exited (ThreadCache.spare: a slab that fills gives its record to its
 * thread's spare slot).  Until 2026-12-06 a pool had room for a record per group and no more, so
 * with every group of the region serving one class and spares besides it handed out records past
 * its end, written over the next pool's (or the mirror's lines): no message, a corrupt heap.  Now
 * the pool has one chunk of slack and takes the spares back when that is used up.
 *
 * The program re-executes itself under a 400 MiB address-space limit (a 64 MiB region: 512
 * groups of 128 KiB), 200 threads (alive at once: a cache each) fill a slab of 8 B blocks each and
 * exit, their blocks are freed, then this thread fills the whole region with 8 B blocks, frees one
 * block of each slab (so every slab needs a record again: ~510 slabs + 200 spares, well past the
 * 512 + 128 records the pool has: the spares must come back), and takes them back.  Slabs of 16 B hold
 * records beside them all along.  Every block is tagged while out (take, give): a block handed
 * out twice, or written by a bitmap's confusion, shows.  Skipped under glibc. */
#include <pthread.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "tests/api/zns_test.h"

enum { THREADS = 200, MAXSLABS = 4096, SMALL16 = 4 * 4096 };
static pthread_barrier_t barrier;

/* Every block of the heap's holds its address xor a tag while it is out: a block handed out
 * while it is out already is seen at once. */
#define LIVE ((uintptr_t)0x4c4956454c495645ull)
#define FREED ((uintptr_t)0x4652454546524545ull)
static void *take(size_t n) {
  void *p = ZT_OPAQUE(malloc(n));   /* (else gcc sees zns_owns read a new block's bytes) */
  REQUIRE(p);
  if (zns_owns(p)) {
    REQUIRE(*(uintptr_t *)p != (zt_addr(p) ^ LIVE), "block %p (%zu B) handed out while it is out", p, n);
    *(uintptr_t *)p = zt_addr(p) ^ LIVE;
  }
  return p;
}
static void give(void *p) {
  if (!p) return;
  if (zns_owns(p)) {
    CHECK(*(uintptr_t *)p == (zt_addr(p) ^ LIVE), "block %p overwritten while out: %#lx", p,
          (unsigned long)*(uintptr_t *)p);
    *(volatile uintptr_t *)p = zt_addr(p) ^ FREED;   /* (volatile: a store before free() is dead to the compiler) */
  }
  free(p);
}

static void *fill_one_slab(void *arg) {
  (void)arg;
  void *first = take(8);
  uintptr_t group = zt_addr(first) >> ZT_GROUP_SHIFT;
  for (void *p = first; (zt_addr(p) >> ZT_GROUP_SHIFT) == group;) {   /* to the first block of the next slab */
    p = take(8);
    REQUIRE(zns_owns(p));
  }
  pthread_barrier_wait(&barrier);   /* all alive at once: a cache each */
  return first;                     /* (its blocks from `first` on are left to the main thread) */
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
    unsetenv("ZNS_REGION_GB");   /* (the limit picks the region) */
    unsetenv("ZNS_SECURE");      /* (no spares there; its guard groups hold fewer slabs) */
    execv("/proc/self/exe", argv);
    zt_log("pool_spares: re-exec failed: %s", strerror(errno));
    return 1;
  }
  /* slabs of 16 B, half full: they hold the first records of their pool (in a layout where the
   * 8 B pool ran on into the 16 B one, its extra records were these) */
  static void *small16[SMALL16];
  for (int i = 0; i < SMALL16; i++) small16[i] = take(16);
  for (int i = 0; i < SMALL16; i += 2) {
    give(small16[i]);
    small16[i] = NULL;
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
  for (int i = 0; i < THREADS; i++)   /* every block of the thread's first slab */
    for (uintptr_t q = zt_addr(firsts[i]); (q >> ZT_GROUP_SHIFT) == (zt_addr(firsts[i]) >> ZT_GROUP_SHIFT); q += 8)
      give((void *)q);
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
    void *p = take(8);
    if (!zns_owns(p)) {   /* the region is full: the next allocator serves */
      give(p);
      break;
    }
    REQUIRE(n < cap, "more than %zu blocks of 8 B in a 64 MiB region", cap);
    blocks[n] = zt_addr(p);
    if ((zt_addr(p) >> ZT_GROUP_SHIFT) != last_group) {
      last_group = zt_addr(p) >> ZT_GROUP_SHIFT;
      REQUIRE(slabs < MAXSLABS);
      slab_first[slabs++] = n;
    }
    n++;
  }
  zt_log("pool_spares: %zu blocks of 8 B in %zu slabs", n, slabs);
  CHECK(slabs > 450, "the 64 MiB region held %zu slabs of 8 B (expected ~500)", slabs);
  /* one block back into each (full) slab: each takes a record again; then they come back */
  /* (a slab with one free block is not worth reusing yet: the mallocs may go to the next allocator) */
  for (size_t i = 0; i < slabs; i++) {
    give((void *)blocks[slab_first[i]]);
    blocks[slab_first[i]] = 0;
  }
  for (size_t i = 0; i < slabs; i++) {
    void *p = take(8);
    if (!zns_owns(p)) {
      give(p);
      continue;
    }
    blocks[slab_first[i]] = zt_addr(p);
  }
  /* the 16 B slabs' free halves, and more: none of them out already (take) */
  static void *more16[2 * SMALL16];
  for (int i = 0; i < 2 * SMALL16; i++) more16[i] = take(16);
  /* everything back (each checked: not overwritten while out), and a round more */
  for (int i = 0; i < 2 * SMALL16; i++) give(more16[i]);
  for (int i = 0; i < SMALL16; i++) give(small16[i]);
  for (size_t i = 0; i < n; i++) give((void *)blocks[i]);   /* (NULL for the slots left empty) */
  for (size_t i = 0; i < 100000; i++) blocks[i] = zt_addr(take(8));
  for (size_t i = 0; i < 100000; i++) give((void *)blocks[i]);
  return zt_finish("pool_spares");
}
