/* tests/programs/next_alloc.sh: a program linked with another allocator (tcmalloc, mimalloc or
 * jemalloc), run with the shim in front of it.  Requests above 4 KiB go to that allocator; the
 * early library's blocks came from the startup functions before the shim knew it.  Checks, for
 * both kinds: malloc_usable_size is at least the request and sane, every usable byte can be
 * written, realloc keeps the contents, free goes to the allocator that made the block (a wrong one
 * crashes or corrupts, which the later checks or the allocator itself then see).
 * NEXT_ALLOC_EXPECT_ZNS=1: the shim must be the program's malloc.  Prints "ok" and exits 0. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "next_alloc.h"

static int failures;
#define CHECK(c, ...) do { if (!(c)) { failures++; fprintf(stderr, "FAIL: " __VA_ARGS__); fputc('\n', stderr); } } while (0)

static unsigned char pattern(int i) { return (unsigned char)((i & 0x7f) | 1); }

static void check_usable(void *p, size_t n, const char *what) {
  size_t u = malloc_usable_size(p);
  CHECK(u >= n && u <= 4 * n + 262144, "%s: malloc_usable_size(%p) = %zu for a request of %zu", what, p, u, n);
  if (u >= n && u <= 4 * n + 262144) memset(p, 0xee, u);   /* every usable byte is the program's */
}

static int all(const unsigned char *p, size_t n, unsigned char v) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) return 0;
  return 1;
}

int main(void) {
  if (getenv("NEXT_ALLOC_EXPECT_ZNS") && atoi(getenv("NEXT_ALLOC_EXPECT_ZNS"))) {
    int (*owns)(const void *) = (int (*)(const void *))dlsym(RTLD_DEFAULT, "zns_owns");
    void *s = malloc(16);
    if (!owns || !owns(s)) {
      fprintf(stderr, "FAIL: ZNS-Slab is not this program's malloc\n");
      return 1;
    }
    free(s);
  }
  /* The early blocks: contents intact, sizes right, then moved or freed. */
  int kept = 0;
  for (int i = 0; i < early_count; i++) {
    struct early_block *b = &early_blocks[i];
    if (!b->p) continue;
    kept++;
    CHECK(all(b->p, b->n, pattern(i)), "early block %d (%zu B) changed", i, b->n);
    if (b->aligned) CHECK(((uintptr_t)b->p & 65535) == 0, "early block %d is not 64 KiB aligned", i);
    check_usable(b->p, b->n, "early block");
    if (i % 3 == 0) {
      unsigned char *q = realloc(b->p, b->n * 2);
      CHECK(q && all(q, b->n, 0xee), "realloc of early block %d lost its contents", i);
      if (q) check_usable(q, b->n * 2, "early block, moved");
      free(q);
    } else if (i % 3 == 1) {
      unsigned char *q = realloc(b->p, 100);   /* into a slab block (under the shim) */
      CHECK(q && all(q, 100, 0xee), "realloc of early block %d to 100 B lost its contents", i);
      free(q);
    } else {
      free(b->p);
    }
    b->p = NULL;
  }
  /* The next allocator's blocks, at the addresses the early ones had: its sizes, not the table's. */
  static const size_t sizes[] = {4097, 5000, 20000, 100000, 1 << 20};
  for (int round = 0; round < 200; round++)
    for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      size_t n = sizes[k] + (size_t)round;
      void *p = round % 4 == 3 ? calloc(1, n) : malloc(n);
      CHECK(p != NULL, "malloc(%zu) = NULL", n);
      if (!p) continue;
      if (round % 4 == 3) CHECK(all(p, n, 0), "calloc(1, %zu) not zeroed", n);
      check_usable(p, n, "block");
      free(p);
    }
  void *a = NULL;
  CHECK(posix_memalign(&a, 65536, 100000) == 0 && ((uintptr_t)a & 65535) == 0, "posix_memalign(65536, 100000)");
  if (a) check_usable(a, 100000, "aligned block");
  free(a);
  /* realloc across the 4 KiB boundary both ways, contents kept */
  unsigned char *p = malloc(100);
  memset(p, 0x42, 100);
  static const size_t chain[] = {5000, 100000, 3000, 50, 70000, 4096, 4097};
  size_t have = 100;
  for (unsigned k = 0; k < sizeof chain / sizeof chain[0]; k++) {
    unsigned char *q = realloc(p, chain[k]);
    CHECK(q != NULL, "realloc to %zu", chain[k]);
    if (!q) break;
    size_t keep = have < chain[k] ? have : chain[k];
    CHECK(all(q, keep, 0x42), "realloc %zu -> %zu lost the contents", have, chain[k]);
    memset(q, 0x42, chain[k]);
    check_usable(q, chain[k], "realloc'd block");
    memset(q, 0x42, chain[k]);
    p = q;
    have = chain[k];
  }
  free(p);
  if (failures) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("ok: %d early blocks checked of %d\n", kept, early_count);
  return 0;
}
