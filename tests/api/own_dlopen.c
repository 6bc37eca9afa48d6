/* A program with a dlopen of its own (a wrapper that counts and calls the next one), as some
 * plugin hosts and tracing tools have.  Linked with libzns_slab.a (the README's --whole-archive
 * line) the shim's dlopen was a strong definition too, and the link failed ("multiple definition
 * of `dlopen'"); now it is weak and the program's is the one called.  Preloaded, the program's
 * comes first anyway.  Checks: the program's wrapper is what dlopen calls reach, the library
 * opens, and blocks the program allocates before and after the open are the heap's.  (Not in the
 * -static build: RTLD_NEXT needs the dynamic loader.) */
#include <dlfcn.h>

#include "tests/api/zns_test.h"

static int wrapped;

void *dlopen(const char *file, int mode) {
  static void *(*next)(const char *, int);
  if (!next) next = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
  wrapped++;
  return next ? next(file, mode) : NULL;
}

int main(void) {
  void *before = malloc(100);
  void *h = dlopen("libm.so.6", RTLD_NOW);
  CHECK(h != NULL, "dlopen(libm.so.6): %s", dlerror());
  CHECK(wrapped == 1, "the program's own dlopen was called %d times (expected 1)", wrapped);
  CHECK(h == NULL || dlsym(h, "cos") != NULL, "no cos in libm");
  void *after = malloc(100);
  if (zt_zns_mode()) CHECK(zns_owns(before) && zns_owns(after), "blocks not from the slab heap");
  free(before);
  free(after);
  return zt_finish("own_dlopen");
}
