/* The shim links no C++ runtime (shim/new_delete.cpp): loading libstdc++, libm and libgcc_s into
 * every process cost about 1.7 ms per process start.  Checked here:
 *   - under LD_PRELOAD, a C program has no libstdc++ mapped at start (the shim did not bring it);
 *   - a C++ plugin dlopened later (RTLD_LOCAL, as python loads C++ extension modules) gets
 *     ZNS-Slab's operator new: small blocks are ZNS-Slab's; a huge one throws a std::bad_alloc
 *     that the plugin's catch matches (not abort, not another type), also aligned; its
 *     new_handler is called (twice, then it uninstalls itself and new throws).  The shim finds
 *     that runtime only when memory runs out (weak references are null: there was none at load).
 *   - nothrow new with a handler that throws bad_alloc returns nullptr after one call: also under
 *     the shim with the runtime loaded later, where the shim's own catch has no personality
 *     routine and the runtime's nothrow new serves instead (until 2026-12-05 the exception left
 *     nothrow new and the program terminated, as with mimalloc). */
#include "tests/api/zns_test.h"

#include <dlfcn.h>
#include <libgen.h>
#include <link.h>

static int find_lib(struct dl_phdr_info *info, size_t size, void *arg) {
  (void)size;
  if (info->dlpi_name && strstr(info->dlpi_name, (const char *)arg)) return 1;
  return 0;
}

static void *sym(void *h, const char *name) {
  void *f = dlsym(h, name);
  REQUIRE(f != NULL, "dlsym(%s): %s", name, dlerror());
  return f;
}

int main(void) {
  int zns = zt_zns_mode();
  zt_log("cxx_late: mode %s", zt_mode_name());
  int had_cxx = dl_iterate_phdr(find_lib, "libstdc++");
  int late = 0;   /* the plugin's operator new is the shim's, which had no runtime at load */
#ifndef ZNS_LINKED
  if (zns) CHECK(!had_cxx, "libstdc++ is mapped in a C program at start: the shim brought it");
  late = zns && !had_cxx;
#endif
  (void)had_cxx, (void)zns;
  char exe[4096], path[4200];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  REQUIRE(n > 0);
  exe[n] = 0;
  snprintf(path, sizeof path, "%s/libzt_cxx_plugin.so", dirname(exe));
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  REQUIRE(h != NULL, "dlopen(%s): %s", path, dlerror());
  int (*cxx_new)(size_t, int, void **) = (int (*)(size_t, int, void **))sym(h, "zt_cxx_new");
  int (*with_handler)(size_t) = (int (*)(size_t))sym(h, "zt_cxx_new_handler");
  int (*nothrow)(size_t, void **) = (int (*)(size_t, void **))sym(h, "zt_cxx_nothrow_throwing_handler");
  void (*del)(void *) = (void (*)(void *))sym(h, "zt_cxx_delete");
  void *p = NULL;
  CHECK(cxx_new(100, 0, &p) == 0 && p != NULL, "the plugin's new char[100] failed");
  if (late) CHECK(zns_owns(p), "the plugin's new char[100] = %p is not ZNS-Slab's", p);
  del(p);
  size_t huge = zt_opaque_size(SIZE_MAX / 2 + 1);
  for (int round = 0; round < 3; round++) {   /* the first finds the runtime, the others reuse it */
    p = NULL;
    int r = cxx_new(huge, 0, &p);
    CHECK(r == 1, "the plugin's new char[huge]: %s", r == 0 ? "returned" : "threw something other than std::bad_alloc");
    r = cxx_new(huge, 1, &p);
    CHECK(r == 1, "the plugin's aligned new(huge): %s", r == 0 ? "returned" : "threw something other than std::bad_alloc");
    int calls = with_handler(huge);
    CHECK(calls == 2, "the plugin's new_handler: %d calls before bad_alloc (expected 2; -1: no bad_alloc)", calls);
    p = (void *)1;
    calls = nothrow(huge, &p);
    CHECK(p == NULL && calls == 1, "nothrow new with a throwing handler: %p after %d calls (expected NULL after 1)", p, calls);
  }
  dlclose(h);
  return zt_finish("cxx_late");
}
