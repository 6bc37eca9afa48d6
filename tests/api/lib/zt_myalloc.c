/* A plugin's own allocator, for tests/api/deepbind.c: a dependency of libzt_deepbind_own.so that
 * defines malloc and friends (a bump allocator over a static arena).  A library opened with
 * RTLD_DEEPBIND whose dependencies bring their own allocator binds to it, and ZNS-Slab's dlopen
 * must leave those bindings alone. */
#include <stddef.h>
#include <string.h>

static char arena[1 << 20] __attribute__((aligned(64)));
static size_t used;

static void *bump(size_t n, size_t align) {
  size_t at = (used + align - 1) & ~(align - 1);
  if (at + n + 16 > sizeof arena) return NULL;
  memcpy(arena + at, &n, sizeof n);   /* the size in front, for realloc and usable size */
  used = at + 16 + ((n + 15) & ~(size_t)15);
  return arena + at + 16;
}
static size_t size_of(const void *p) { size_t n; memcpy(&n, (const char *)p - 16, sizeof n); return n; }

int zt_myalloc_owns(const void *p) { return (const char *)p >= arena && (const char *)p < arena + sizeof arena; }
void *malloc(size_t n) { return bump(n, 16); }
void free(void *p) { (void)p; }
void *calloc(size_t a, size_t b) { void *p = bump(a * b, 16); if (p) memset(p, 0, a * b); return p; }
void *realloc(void *p, size_t n) {
  void *q = bump(n, 16);
  if (p && q) memcpy(q, p, size_of(p) < n ? size_of(p) : n);
  return q;
}
size_t malloc_usable_size(void *p) { return p ? size_of(p) : 0; }
int posix_memalign(void **out, size_t align, size_t n) {
  /* (the size word sits 16 bytes before the block: align the block, not the word) */
  size_t at = (used + 16 + align - 1) & ~(align - 1);
  if (at + n > sizeof arena) return 12;
  memcpy(arena + at - 16, &n, sizeof n);
  used = at + ((n + 15) & ~(size_t)15);
  *out = arena + at;
  return 0;
}
void *aligned_alloc(size_t align, size_t n) { void *p = NULL; return posix_memalign(&p, align, n) == 0 ? p : NULL; }
