/* The slab region runs out: small requests must fall through to the next allocator (non-NULL,
 * usable, writable, zns_owns == 0) through every entry point, and once blocks are freed the slab
 * serves small requests again.  The program re-executes itself with ZNS_REGION_GB=1 (the
 * smallest region) and fills it with 4096-byte blocks (one per page; the pages are not touched,
 * so the RSS stays small).  Skipped under plain glibc. */
#include "tests/api/zns_test.h"

enum { MAXB = 300000 };
static void *blk[MAXB];

int main(int argc, char **argv) {
  (void)argc;
  int zns = zt_zns_mode();
  if (!zns) {
    zt_log("region_full: skipped under plain glibc");
    return 0;
  }
  const char *r = getenv("ZNS_REGION_GB");
  if (!r || strcmp(r, "1") != 0) {
    setenv("ZNS_REGION_GB", "1", 1);
    execv("/proc/self/exe", argv);
    zt_log("region_full: re-exec failed: %s", strerror(errno));
    return 1;
  }
  zt_log("region_full: mode %s, ZNS_REGION_GB=1", zt_mode_name());
  size_t rss0 = zt_rss_bytes();
  int n = 0, owned = 0, first_foreign = -1, foreign = 0;
  while (n < MAXB && foreign < 2000) {
    void *p = malloc(4096);
    REQUIRE(p, "malloc(4096) #%d returned NULL (errno %d): the slab region is full, the next allocator must serve",
            n, errno);
    blk[n] = p;
    if (zns_owns(p)) {
      owned++;
      if (n % 512 == 0) zt_fill(p, 4096, (uint64_t)n);
    } else {
      if (first_foreign < 0) first_foreign = n;
      foreign++;
      CHECK(malloc_usable_size(p) >= 4096);
      zt_fill(p, 4096, (uint64_t)n); /* glibc memory: touching it is cheap */
    }
    n++;
  }
  zt_log("region_full: %d blocks, %d from the slab, first fallback at #%d", n, owned, first_foreign);
  REQUIRE(first_foreign >= 0, "the 1 GiB region never filled up after %d page-sized blocks", n);
  CHECK(owned > 200000 && owned <= 262144, "the 1 GiB region held %d page-sized blocks (expected ~262144)", owned);
  /* every entry point while the region is full */
  void *a = ZT_OPAQUE(malloc(100));
  CHECK(a && malloc_usable_size(a) >= 100, "malloc(100) with a full region: %p", a);
  if (a) memset(a, 1, 100);
  char *c = ZT_OPAQUE((char *)calloc(1, 3000));
  CHECK(c && zt_first_nonzero(c, 3000) < 0, "calloc(1, 3000) with a full region: %p", (void *)c);
  void *m = ZT_OPAQUE(memalign(256, 1000));
  CHECK(m && zt_addr(m) % 256 == 0, "memalign(256, 1000) with a full region: %p", m);
  void *pm = NULL;
  CHECK(posix_memalign(&pm, 4096, 4096) == 0 && pm && zt_addr(pm) % 4096 == 0, "posix_memalign(4096, 4096): %p",
        pm);
  void *z = ZT_OPAQUE(malloc(0));
  CHECK(z != NULL, "malloc(0) with a full region returned NULL");
  /* realloc of a slab block (with data) to another small size: the new block comes from glibc */
  void *victim = blk[0];
  void *rr = realloc(victim, 3000);
  CHECK(rr != NULL && zt_verify(rr, 3000, 0) < 0, "realloc(slab block, 3000) with a full region lost data");
  blk[0] = rr;
  for (int i = 0; i < n; i++) {
    if (blk[i] == rr) continue;
    if ((i % 512 == 0 && zns_owns(blk[i])) || !zns_owns(blk[i]))
      CHECK(zt_verify(blk[i], 4096, (uint64_t)i) < 0, "block #%d (%p) corrupted", i, blk[i]);
  }
  free(a);
  free(c);
  free(m);
  free(pm);
  free(z);
  for (int i = 0; i < n; i++) free(blk[i]);
  /* the slab serves again */
  void *p = ZT_OPAQUE(malloc(4096)), *q = ZT_OPAQUE(malloc(100));
  CHECK(p && zns_owns(p) == 1, "after freeing everything, malloc(4096) = %p is not from the slab", p);
  CHECK(q && zns_owns(q) == 1, "after freeing everything, malloc(100) = %p is not from the slab", q);
  free(p);
  free(q);
  zns_trim();
  size_t rss1 = zt_rss_bytes();
  zt_log("region_full: RSS %.1f MiB -> %.1f MiB", rss0 / 1048576.0, rss1 / 1048576.0);
  CHECK(rss1 < rss0 + (64u << 20), "RSS grew by %.1f MiB", ((double)rss1 - (double)rss0) / 1048576.0);
  return zt_finish("region_full");
}
