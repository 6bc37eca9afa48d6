/* A plugin for tests/api/deepbind.c, which dlopens it with RTLD_DEEPBIND: its references to
 * malloc and friends then look in its own dependencies (libc) before the global scope, so without
 * ZNS-Slab's dlopen they bind to glibc's allocator while ZNS-Slab serves the program (PITFALLS:
 * RTLD_DEEPBIND, mimalloc#627; PHP opens its extensions so).  Built by tests/tests.mk twice:
 *   libzt_deepbind.so      plain: calls through lazily bound PLT slots (JUMP_SLOT)
 *   libzt_deepbind_now.so  -fno-plt -z now -z relro: calls through GOT slots (GLOB_DAT) that are
 *                          read-only once relocated
 * Both also call free through a function-pointer table (plain 64-bit relocations: a writable one
 * and, const, one in the read-only-after-relocation data). */
#define _GNU_SOURCE 1
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

void *zt_lib_malloc(size_t n) { return malloc(n); }
void *zt_lib_calloc(size_t n, size_t m) { return calloc(n, m); }
void *zt_lib_realloc(void *p, size_t n) { return realloc(p, n); }
char *zt_lib_strdup(const char *s) { return strdup(s); }
void zt_lib_free(void *p) { free(p); }
size_t zt_lib_usable(void *p) { return malloc_usable_size(p); }
void *zt_lib_memalign(size_t align, size_t n) {
  void *p = NULL;
  return posix_memalign(&p, align, n) == 0 ? p : NULL;
}
void *zt_lib_aligned_alloc(size_t align, size_t n) { return aligned_alloc(align, n); }

void (*zt_free_writable[2])(void *) = {free, free};
static void (*const zt_free_relro[2])(void *) = {free, free};
void zt_lib_free_via_table(void *p, int k) {   /* k: 0 or 1 writable, 2 or 3 relro */
  if (k < 2) zt_free_writable[k](p);
  else zt_free_relro[k - 2](p);
}

#ifdef ZT_UNDEF
/* libzt_deepbind_undef.so: a function it never calls is defined nowhere, so the library can be
 * opened lazily only (RTLD_NOW fails: "undefined symbol"). */
extern void zt_missing_fn(void);
void zt_lib_calls_missing(void) { zt_missing_fn(); }
#endif
