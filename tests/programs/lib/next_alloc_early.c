/* tests/programs/next_alloc.sh: a library whose constructor runs before the shim's (it is a
 * dependency of the program, the shim is preloaded or linked into the program), so its requests
 * above 4 KiB go to the startup functions (__libc_malloc and kin: glibc's, or those of an
 * allocator that exports the names too, as tcmalloc and mimalloc do).  Some of those blocks are
 * freed or reallocated there, before the next allocator is known; the rest are left for main. */
#include <stdlib.h>
#include <string.h>

#include "next_alloc.h"

struct early_block early_blocks[EARLY_MAX];
int early_count;

static unsigned char pattern(int i) { return (unsigned char)((i & 0x7f) | 1); }

__attribute__((constructor)) static void early_init(void) {
  const char *e = getenv("NEXT_ALLOC_EARLY");
  int n = e ? atoi(e) : 300;
  if (n < 0 || n > EARLY_MAX) n = EARLY_MAX;
  for (int i = 0; i < n; i++) {
    struct early_block *b = &early_blocks[i];
    b->n = 5000 + 13 * (size_t)i;
    if (i % 11 == 6) {
      b->p = calloc(1, b->n);
    } else if (i % 11 == 9) {
      if (posix_memalign(&b->p, 65536, b->n) != 0) b->p = NULL;
      b->aligned = 1;
    } else {
      b->p = malloc(b->n);
    }
    if (!b->p) abort();
    memset(b->p, pattern(i), b->n);
    if (i % 5 == 4) {             /* freed before the shim's constructor */
      free(b->p);
      b->p = NULL;
    } else if (i % 7 == 3) {      /* moved before it */
      void *q = realloc(b->p, b->n + 3000);
      if (!q) abort();
      b->p = q;
      b->aligned = 0;
      memset((char *)q + b->n, pattern(i), 3000);
      b->n += 3000;
    }
  }
  early_count = n;
}
