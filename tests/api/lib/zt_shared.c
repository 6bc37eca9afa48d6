/* A dependency shared by two deep-bound plugins of tests/api/deepbind.c: libzt_deepbind_own.so
 * (whose allocator is libzt_myalloc.so, so this library's malloc is myalloc's too: it was loaded
 * in own's scope) and libzt_deepbind_p2.so (plain).  Opening the second must not change where
 * this library's calls go. */
#include <stdlib.h>
void *zt_shared_malloc(size_t n) { return malloc(n); }
void zt_shared_free(void *p) { free(p); }
