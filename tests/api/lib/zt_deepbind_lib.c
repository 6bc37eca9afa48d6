/* A plugin for tests/api/deepbind.c, which dlopens it with RTLD_DEEPBIND: its references to
 * malloc and friends then bind to its own dependencies (libc) before the global scope, so the
 * blocks it allocates are glibc's even while ZNS-Slab serves the program (PITFALLS: RTLD_DEEPBIND,
 * mimalloc#627).  Built by tests/tests.mk as build/tests/api/libzt_deepbind.so. */
#define _GNU_SOURCE 1
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

void *zt_lib_malloc(size_t n) { return malloc(n); }
void *zt_lib_calloc(size_t n, size_t m) { return calloc(n, m); }
void *zt_lib_realloc(void *p, size_t n) { return realloc(p, n); }
char *zt_lib_strdup(const char *s) { return strdup(s); }
void zt_lib_free(void *p) { free(p); }
/* The plugin's malloc is glibc's: its usable-size answer comes from glibc's chunk header. */
size_t zt_lib_usable(void *p) { return malloc_usable_size(p); }
