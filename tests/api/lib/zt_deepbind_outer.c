/* A plugin for tests/api/deepbind.c whose constructor opens another one with RTLD_DEEPBIND, by a
 * `$ORIGIN` path (this library's directory): libzt_deepbind_own.so, which brings its own allocator
 * (libzt_myalloc.so), and takes one block from it.  The inner open runs inside the outer dlopen
 * (under glibc's loader lock), and the inner library is loaded after the outer one: the outer
 * open's rebinding must not touch it (its free is its own allocator's), and no lock of ZNS-Slab's
 * may be held across the loader (a thread doing a DEEPBIND open at the same time deadlocked). */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

void *zt_outer_own;     /* the inner library's handle */
void *zt_outer_block;   /* a block from its allocator */

__attribute__((constructor)) static void outer_init(void) {
  zt_outer_own = dlopen("$ORIGIN/libzt_deepbind_own.so", RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND);
  if (!zt_outer_own) {
    fprintf(stderr, "libzt_deepbind_outer: dlopen($ORIGIN/libzt_deepbind_own.so): %s\n", dlerror());
    abort();
  }
  void *(*m)(size_t) = (void *(*)(size_t))dlsym(zt_outer_own, "zt_lib_malloc");
  if (!m) abort();
  zt_outer_block = m(48);
}
__attribute__((destructor)) static void outer_fini(void) {
  void (*f)(void *) = (void (*)(void *))dlsym(zt_outer_own, "zt_lib_free");
  if (f) f(zt_outer_block);
  dlclose(zt_outer_own);
}
void zt_outer_free(void *p) { free(p); }
