/* RTLD_DEEPBIND (PITFALLS: a library opened with it binds to libc's malloc while the program uses
 * ZNS-Slab; mimalloc#627): blocks that such a plugin allocates reach the program, which frees,
 * reallocates and sizes them with its own (ZNS-Slab's) entry points.  They must be routed to
 * glibc by ownership: no crash, contents kept, glibc's usable size.  Also checked: the plugin
 * really got glibc's blocks (zns_owns == 0), so the scenario is not vacuous, and the plugin's
 * own malloc/free pairs keep working.
 * Not supported, as with every interposing allocator: the plugin freeing a block that the
 * program allocated (glibc's free would be handed a ZNS-Slab pointer).  Not exercised here. */
#include "tests/api/zns_test.h"

#include <dlfcn.h>
#include <libgen.h>

typedef void *(*alloc_fn)(size_t);
static alloc_fn lib_malloc;
static void *(*lib_calloc)(size_t, size_t);
static void *(*lib_realloc)(void *, size_t);
static char *(*lib_strdup)(const char *);
static void (*lib_free)(void *);
static size_t (*lib_usable)(void *);

static void *load(void) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
  REQUIRE(n > 0, "readlink(/proc/self/exe)");
  exe[n] = 0;
  char path[4160];
  snprintf(path, sizeof path, "%s/libzt_deepbind.so", dirname(exe));
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(h != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", path, dlerror());
  lib_malloc = (alloc_fn)dlsym(h, "zt_lib_malloc");
  lib_calloc = (void *(*)(size_t, size_t))dlsym(h, "zt_lib_calloc");
  lib_realloc = (void *(*)(void *, size_t))dlsym(h, "zt_lib_realloc");
  lib_strdup = (char *(*)(const char *))dlsym(h, "zt_lib_strdup");
  lib_free = (void (*)(void *))dlsym(h, "zt_lib_free");
  lib_usable = (size_t (*)(void *))dlsym(h, "zt_lib_usable");
  REQUIRE(lib_malloc && lib_calloc && lib_realloc && lib_strdup && lib_free && lib_usable);
  return h;
}

int main(void) {
  int zns = zt_zns_mode();
  zt_log("deepbind: mode %s", zt_mode_name());
  void *h = load();
  static const size_t sizes[] = {1, 16, 100, 1000, 4096, 5000, 100000, 1 << 20};
  for (int round = 0; round < 50; round++) {
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      size_t n = sizes[k];
      uint64_t key = (uint64_t)round * 100 + k;
      /* the plugin's block, freed by the program */
      char *p = ZT_OPAQUE((char *)lib_malloc(n));
      REQUIRE(p != NULL);
      if (zns) CHECK(zns_owns(p) == 0, "the plugin's malloc(%zu) = %p is ZNS-Slab's: not deep-bound", n, (void *)p);
      zt_fill(p, n, key);
      size_t u = malloc_usable_size(p);
      CHECK(u >= n && u == lib_usable(p), "malloc_usable_size(plugin's %zu B block) = %zu, glibc says %zu", n, u,
            lib_usable(p));
      /* reallocated by the program: grows into the program's allocator or glibc's, keeps the bytes */
      char *q = ZT_OPAQUE((char *)realloc(p, 2 * n + 10));
      REQUIRE(q != NULL, "realloc(plugin's block, %zu)", 2 * n + 10);
      CHECK(zt_verify(q, n, key) == -1, "realloc of the plugin's %zu B block lost its contents at %ld", n,
            zt_verify(q, n, key));
      free(q);
      /* calloc'ed and strdup'ed by the plugin, freed by the program */
      unsigned char *c = ZT_OPAQUE((unsigned char *)lib_calloc(n, 1));
      REQUIRE(c != NULL);
      size_t nz = 0;
      for (size_t i = 0; i < n; i++) nz += c[i] != 0;
      CHECK(nz == 0, "the plugin's calloc(%zu) has %zu non-zero bytes", n, nz);
      free(c);
      char *s = lib_strdup("session token 0123456789abcdef");
      REQUIRE(s != NULL);
      CHECK(strcmp(s, "session token 0123456789abcdef") == 0);
      free(s);
      /* the plugin's own pairs, and a program block next to them */
      void *m = malloc(n);
      REQUIRE(m != NULL);
      zt_fill(m, n, key + 7);
      void *r = lib_realloc(lib_malloc(n), n + 1);
      REQUIRE(r != NULL);
      lib_free(r);
      CHECK(zt_verify(m, n, key + 7) == -1, "a program block changed while the plugin allocated");
      free(m);
    }
  }
  errno = 4242;
  free(lib_malloc(10));
  CHECK(zt_errno() == 4242, "free(plugin's block) changed errno to %d", errno);
  dlclose(h);
  return zt_finish("deepbind");
}
