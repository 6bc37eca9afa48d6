/* RTLD_DEEPBIND (PITFALLS: a library opened with it binds to libc's malloc while the program uses
 * ZNS-Slab; mimalloc#627).  PHP up to 8.4 opens its extensions so, and aborted at startup under
 * the shim ("double free or corruption" in pdo.so's free of a block the program allocated; as
 * under jemalloc, mimalloc and tcmalloc preloaded).  ZNS-Slab's dlopen rebinds such a library's
 * allocation calls to ZNS-Slab (shim/deepbind.cpp).  Checked, for a plugin that calls through
 * lazily bound PLT slots (opened RTLD_LAZY) and one that calls through read-only GOT slots
 * (-fno-plt -z now -z relro, opened RTLD_NOW), each also through function-pointer tables:
 *   - blocks cross both ways: the plugin frees, reallocates and sizes the program's blocks (this
 *     aborted before), and the program the plugin's; contents kept;
 *   - the plugin's calls really reach ZNS-Slab: its small blocks are ZNS-Slab's, and a block of
 *     the program that the plugin frees is the next one the program's malloc of that size gets
 *     (the free went to this thread's cache, not to glibc);
 *   - a dlopen without RTLD_DEEPBIND still finds a library by a bare name through the calling
 *     program's RUNPATH (the interposed dlopen is a jump: glibc sees the real caller), and so does
 *     one with it (the lazy plugin is opened by its bare name, the other by a `$ORIGIN` path: both
 *     the program's, not the shim's);
 *   - errno survives the plugin's free;
 *   - a deep-bound plugin whose dependency brings its own allocator keeps it, also when it is
 *     opened by another plugin's constructor (inside the outer dlopen, by a `$ORIGIN` path that is
 *     the outer plugin's directory) and when an older library is opened again with
 *     RTLD_DEEPBIND later, and when a second deep-bound plugin needs one of its dependencies:
 *     the rebinding touches only the new handle's tree (it used to walk every object loaded after,
 *     and gave the inner plugin's unbound free to ZNS-Slab: abort), and only slots bound to
 *     glibc's functions (lazy slots decided through the new handle gave the shared dependency's
 *     malloc to ZNS-Slab, where its scope leads to the inner plugin's allocator);
 *   - a slot in a read-only page that is not RELRO (a text relocation) is rebound (SIGSEGV before);
 *   - a thread doing DEEPBIND opens while another opens a library whose constructor does one
 *     finishes (a lock held across the loader deadlocked);
 *   - two threads that open the same plugin at once both get it rebound (the second one's open
 *     returned the library before the first had rebound it: glibc's free aborted);
 *   - a DEEPBIND open from a thread with a 24 KiB stack (16 KiB of buffers on it crashed);
 *   - a lazy DEEPBIND open that needed the retry leaves errno alone; a mode without RTLD_LAZY or
 *     RTLD_NOW fails as with glibc; a fork whose handlers (the program's) do DEEPBIND opens
 *     finishes. */
#include "tests/api/zns_test.h"

#include <dlfcn.h>
#include <libgen.h>
#include <pthread.h>
#include <sys/wait.h>

struct plugin {
  const char *name;
  void *h;
  void *(*malloc_)(size_t);
  void *(*calloc_)(size_t, size_t);
  void *(*realloc_)(void *, size_t);
  char *(*strdup_)(const char *);
  void (*free_)(void *);
  size_t (*usable)(void *);
  void *(*memalign_)(size_t, size_t);
  void *(*aligned_alloc_)(size_t, size_t);
  void (*free_via_table)(void *, int);
};

static void plugin_path(char *path, size_t cap, const char *file) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 64);
  REQUIRE(n > 0, "readlink(/proc/self/exe)");
  exe[n] = 0;
  snprintf(path, cap, "%s/%s", dirname(exe), file);
}

static void *sym(void *h, const char *name) {
  void *f = dlsym(h, name);
  REQUIRE(f != NULL, "dlsym(%s): %s", name, dlerror());
  return f;
}

/* file: as dlopen gets it (a bare name, a `$ORIGIN` path) */
static void load(struct plugin *pl, const char *file, int flags) {
  pl->name = file;
  pl->h = dlopen(file, flags | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(pl->h != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", file, dlerror());
  pl->malloc_ = (void *(*)(size_t))sym(pl->h, "zt_lib_malloc");
  pl->calloc_ = (void *(*)(size_t, size_t))sym(pl->h, "zt_lib_calloc");
  pl->realloc_ = (void *(*)(void *, size_t))sym(pl->h, "zt_lib_realloc");
  pl->strdup_ = (char *(*)(const char *))sym(pl->h, "zt_lib_strdup");
  pl->free_ = (void (*)(void *))sym(pl->h, "zt_lib_free");
  pl->usable = (size_t (*)(void *))sym(pl->h, "zt_lib_usable");
  pl->memalign_ = (void *(*)(size_t, size_t))sym(pl->h, "zt_lib_memalign");
  pl->aligned_alloc_ = (void *(*)(size_t, size_t))sym(pl->h, "zt_lib_aligned_alloc");
  pl->free_via_table = (void (*)(void *, int))sym(pl->h, "zt_lib_free_via_table");
}

static void exercise(const struct plugin *pl, int zns) {
  static const size_t sizes[] = {1, 16, 100, 1000, 4096, 5000, 100000, 1 << 20};
  for (int round = 0; round < 50; round++) {
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      size_t n = sizes[k];
      uint64_t key = (uint64_t)round * 100 + k;
      /* the program's block: sized, reallocated and freed by the plugin */
      char *p = ZT_OPAQUE((char *)malloc(n));
      REQUIRE(p != NULL);
      zt_fill(p, n, key);
      size_t u = malloc_usable_size(p);
      CHECK(pl->usable(p) == u, "%s: malloc_usable_size(program's %zu B block) = %zu, the program says %zu",
            pl->name, n, pl->usable(p), u);
      char *q = ZT_OPAQUE((char *)pl->realloc_(p, 2 * n + 10));
      REQUIRE(q != NULL, "%s: realloc(program's block, %zu)", pl->name, 2 * n + 10);
      CHECK(zt_verify(q, n, key) == -1, "%s: the plugin's realloc of a %zu B block lost its contents at %ld",
            pl->name, n, zt_verify(q, n, key));
      pl->free_(q);
      /* freed by the plugin, taken again by the program: the free went to ZNS-Slab */
      char *a = ZT_OPAQUE((char *)malloc(n));
      REQUIRE(a != NULL);
      pl->free_(a);
      char *b = ZT_OPAQUE((char *)malloc(n));
      if (zns && zt_should_own(n, 0))
        CHECK(a == b, "%s: after the plugin freed the program's %zu B block %p, malloc(%zu) gave %p: "
              "the free did not reach ZNS-Slab", pl->name, n, (void *)a, n, (void *)b);
      free(b);
      /* through the plugin's function-pointer tables */
      for (int t = 0; t < 4; t++) pl->free_via_table(ZT_OPAQUE(malloc(n)), t);
      /* the plugin's blocks: ZNS-Slab's when small; freed, reallocated, sized by the program */
      char *m = ZT_OPAQUE((char *)pl->malloc_(n));
      REQUIRE(m != NULL);
      if (zns)
        CHECK(zns_owns(m) == zt_should_own(n, 0), "%s: the plugin's malloc(%zu) = %p: zns_owns says %d",
              pl->name, n, (void *)m, zns_owns(m));
      zt_fill(m, n, key + 1);
      CHECK(malloc_usable_size(m) == pl->usable(m) && malloc_usable_size(m) >= n);
      char *r = ZT_OPAQUE((char *)realloc(m, n + 1));
      REQUIRE(r != NULL);
      CHECK(zt_verify(r, n, key + 1) == -1, "%s: realloc of the plugin's %zu B block lost its contents",
            pl->name, n);
      free(r);
      unsigned char *c = ZT_OPAQUE((unsigned char *)pl->calloc_(n, 1));
      REQUIRE(c != NULL);
      size_t nz = 0;
      for (size_t i = 0; i < n; i++) nz += c[i] != 0;
      CHECK(nz == 0, "%s: the plugin's calloc(%zu) has %zu non-zero bytes", pl->name, n, nz);
      free(c);
      char *s = pl->strdup_("session token 0123456789abcdef");
      REQUIRE(s != NULL);
      CHECK(strcmp(s, "session token 0123456789abcdef") == 0);
      free(s);
      /* aligned, both ways */
      void *al = pl->memalign_(64, n);
      REQUIRE(al != NULL);
      CHECK(zt_addr(al) % 64 == 0);
      if (zns) CHECK(zns_owns(al) == zt_should_own(n, 64), "%s: the plugin's posix_memalign(64, %zu)", pl->name, n);
      free(al);
      void *aa = pl->aligned_alloc_(256, (n + 255) & ~(size_t)255);
      REQUIRE(aa != NULL);
      CHECK(zt_addr(aa) % 256 == 0);
      free(aa);
      void *pa = NULL;
      REQUIRE(zt_posix_memalign(&pa, 128, n) == 0);
      pl->free_(pa);
    }
  }
  errno = 4242;
  pl->free_(malloc(10));
  CHECK(zt_errno() == 4242, "%s: the plugin's free(program's block) changed errno to %d", pl->name, errno);
}

/* libzt_deepbind_outer.so (opened deep-bound by its path) opened libzt_deepbind_own.so from its
 * constructor; own's allocator is libzt_myalloc.so's. */
static void own_allocator(const struct plugin *lazy, int zns) {
  char path[4160];
  plugin_path(path, sizeof path, "libzt_deepbind_outer.so");
  void *outer = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(outer != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", path, dlerror());
  void *own = *(void **)sym(outer, "zt_outer_own");
  void *block = *(void **)sym(outer, "zt_outer_block");
  int (*owns)(const void *) = (int (*)(const void *))sym(own, "zt_myalloc_owns");
  void *(*own_malloc)(size_t) = (void *(*)(size_t))sym(own, "zt_lib_malloc");
  void *(*own_calloc)(size_t, size_t) = (void *(*)(size_t, size_t))sym(own, "zt_lib_calloc");
  void *(*own_realloc)(void *, size_t) = (void *(*)(void *, size_t))sym(own, "zt_lib_realloc");
  void (*own_free)(void *) = (void (*)(void *))sym(own, "zt_lib_free");
  size_t (*own_usable)(void *) = (size_t (*)(void *))sym(own, "zt_lib_usable");
  CHECK(owns(block), "the block the inner plugin took in the outer one's constructor is not its allocator's");
  own_free(block);   /* its free: bound lazily now, to its own allocator (ZNS-Slab's aborted) */
  void *m = own_malloc(100);
  CHECK(owns(m), "the inner plugin's malloc(100) = %p is not its own allocator's", m);
  CHECK(own_usable(m) == 100, "the inner plugin's malloc_usable_size = %zu, its allocator says 100", own_usable(m));
  own_free(m);
  /* an older library opened again deep-bound: nothing of the inner plugin may change */
  void *again = dlopen("libzt_deepbind.so", RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND);
  CHECK(again == lazy->h, "opening libzt_deepbind.so again gave %p, not its handle %p", again, lazy->h);
  void *c = own_calloc(10, 10);   /* the first calls of these two in the inner plugin */
  CHECK(c != NULL && owns(c), "after a re-open, the inner plugin's calloc = %p is not its allocator's", c);
  void *r = own_realloc(c, 300);
  CHECK(r != NULL && owns(r), "after a re-open, the inner plugin's realloc = %p is not its allocator's", r);
  own_free(r);
  if (again) dlclose(again);
  /* a second deep-bound plugin that shares a dependency (libzt_shared.so) with the inner one:
   * that dependency was loaded in the inner plugin's scope, its malloc is myalloc's, and opening
   * the second must not change it (the first call of zt_shared_malloc comes after the open) */
  char p2path[4160];
  plugin_path(p2path, sizeof p2path, "libzt_deepbind_p2.so");
  void *p2 = dlopen(p2path, RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(p2 != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", p2path, dlerror());
  void *(*shared_malloc)(size_t) = (void *(*)(size_t))sym(own, "zt_shared_malloc");
  void *sm = shared_malloc(72);
  CHECK(owns(sm), "libzt_shared's malloc(72) = %p after another plugin that needs it was opened: not myalloc's", sm);
  char *pb = ZT_OPAQUE((char *)malloc(40));   /* and the second plugin is rebound */
  ((void (*)(void *))sym(p2, "zt_lib_free"))(pb);
  dlclose(p2);
  /* the outer plugin itself is rebound: the program's block it frees goes to ZNS-Slab */
  void (*outer_free)(void *) = (void (*)(void *))sym(outer, "zt_outer_free");
  char *a = ZT_OPAQUE((char *)malloc(40));
  outer_free(a);
  char *b = ZT_OPAQUE((char *)malloc(40));
  if (zns) CHECK(a == b, "the outer plugin's free of the program's block %p did not reach ZNS-Slab (next: %p)", (void *)a, (void *)b);
  free(b);
  dlclose(outer);
}

/* A table slot in a read-only page that is not RELRO (DT_TEXTREL). */
static void textrel(int zns) {
  char path[4160];
  plugin_path(path, sizeof path, "libzt_textrel.so");
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(h != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", path, dlerror());
  void (*tr_free)(void *) = (void (*)(void *))sym(h, "zt_textrel_free");
  char *a = ZT_OPAQUE((char *)malloc(24));
  tr_free(a);   /* glibc's free of ZNS-Slab's block aborted */
  char *b = ZT_OPAQUE((char *)malloc(24));
  if (zns) CHECK(a == b, "libzt_textrel's free of the program's block %p did not reach ZNS-Slab (next: %p)", (void *)a, (void *)b);
  free(b);
  dlclose(h);
}

/* One thread opens and closes a deep-bound plugin; this one opens (without RTLD_DEEPBIND) and
 * closes libzt_deepbind_outer.so, whose constructor does a deep-bound open. */
static void *deep_opener(void *arg) {
  const char *path = arg;
  for (int i = 0; i < 300; i++) {
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    REQUIRE(h != NULL, "dlopen(%s, RTLD_DEEPBIND) in a thread: %s", path, dlerror());
    ((void (*)(void *))sym(h, "zt_lib_free"))(ZT_OPAQUE(malloc(64)));
    dlclose(h);
  }
  return NULL;
}
static void concurrent_opens(void) {
  static char now_path[4160];
  char outer_path[4160];
  plugin_path(now_path, sizeof now_path, "libzt_deepbind_now.so");
  plugin_path(outer_path, sizeof outer_path, "libzt_deepbind_outer.so");
  alarm(120);   /* a deadlock ends the test with SIGALRM instead of hanging it */
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, deep_opener, now_path) == 0);
  for (int i = 0; i < 300; i++) {
    void *h = dlopen(outer_path, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(h != NULL, "dlopen(%s): %s", outer_path, dlerror());
    dlclose(h);
  }
  pthread_join(t, NULL);
  alarm(0);
}

/* Two threads open the same plugin at once and free a program block through it at once. */
static pthread_barrier_t g_race;
static void *race_opener(void *arg) {
  const char *path = arg;
  for (int i = 0; i < 200; i++) {
    pthread_barrier_wait(&g_race);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    REQUIRE(h != NULL, "dlopen(%s, RTLD_DEEPBIND): %s", path, dlerror());
    ((void (*)(void *))sym(h, "zt_lib_free"))(ZT_OPAQUE(malloc(64)));   /* glibc's free aborted */
    pthread_barrier_wait(&g_race);
    dlclose(h);
  }
  return NULL;
}
static void same_library_two_threads(void) {
  static char path[4160];
  plugin_path(path, sizeof path, "libzt_deepbind.so");
  REQUIRE(pthread_barrier_init(&g_race, NULL, 2) == 0);
  pthread_t t[2];
  for (int k = 0; k < 2; k++) REQUIRE(pthread_create(&t[k], NULL, race_opener, path) == 0);
  for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
  pthread_barrier_destroy(&g_race);
}

static void *small_stack_open(void *arg) {
  void *h = dlopen((const char *)arg, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  REQUIRE(h != NULL, "dlopen(%s, RTLD_DEEPBIND) on a small stack (24 KiB, or the minimum): %s", (const char *)arg, dlerror());
  dlclose(h);
  return NULL;
}
static void small_stack(void) {
  static char path[4160];
  plugin_path(path, sizeof path, "libzt_deepbind_now.so");
  pthread_attr_t a;
  pthread_attr_init(&a);
  long min = sysconf(_SC_THREAD_STACK_MIN);   /* (aarch64's glibc: 128 KiB) */
  REQUIRE(pthread_attr_setstacksize(&a, min > 24 * 1024 ? (size_t)min : 24 * 1024) == 0);
  pthread_t t;
  REQUIRE(pthread_create(&t, &a, small_stack_open, path) == 0);
  pthread_join(t, NULL);
  pthread_attr_destroy(&a);
}

/* A fork handler of the program that does a DEEPBIND open (the shim's own handlers, registered
 * after the program's, held their lock while the program's ran: deadlock). */
static char g_atfork_path[4160];
static void atfork_open(void) {
  void *h = dlopen(g_atfork_path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (h) dlclose(h);
}
static void fork_handlers(void) {   /* (registered at the start of main, before any open) */
  alarm(60);
  pid_t pid = fork();
  REQUIRE(pid >= 0, "fork: %s", strerror(errno));
  if (pid == 0) _exit(0);
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child of a fork with DEEPBIND-opening handlers: status %#x", st);
  alarm(0);
}

int main(void) {
  int zns = zt_zns_mode();
  zt_log("deepbind: mode %s", zt_mode_name());
  plugin_path(g_atfork_path, sizeof g_atfork_path, "libzt_deepbind_now.so");
  REQUIRE(pthread_atfork(atfork_open, atfork_open, NULL) == 0);
  /* a bare name, found through this program's RUNPATH ($ORIGIN), without RTLD_DEEPBIND */
  void *bare = dlopen("libzt_deepbind_now.so", RTLD_NOW | RTLD_LOCAL);
  CHECK(bare != NULL, "dlopen(\"libzt_deepbind_now.so\") through the program's RUNPATH: %s", dlerror());
  if (bare) dlclose(bare);
  struct plugin lazy, now, undef;
  load(&lazy, "libzt_deepbind.so", RTLD_LAZY);   /* through the program's RUNPATH */
  load(&now, "$ORIGIN/libzt_deepbind_now.so", RTLD_NOW);   /* the program's directory */
  /* with a function defined nowhere: it opens lazily only (ZNS-Slab's dlopen binds a deep-bound
   * library at once, and falls back to the mode asked for) */
  errno = 0;
  load(&undef, "$ORIGIN/libzt_deepbind_undef.so", RTLD_LAZY);
  CHECK(errno == 0, "errno after a successful DEEPBIND open that needed the lazy retry: %d", errno);
  /* a mode with neither RTLD_LAZY nor RTLD_NOW is invalid, as glibc says */
  void *nomode = dlopen("$ORIGIN/libzt_deepbind_now.so", RTLD_DEEPBIND);
  CHECK(nomode == NULL, "dlopen(..., RTLD_DEEPBIND) without RTLD_LAZY or RTLD_NOW succeeded");
  if (nomode) dlclose(nomode);
  void *undef_now = dlopen("$ORIGIN/libzt_deepbind_undef.so", RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
  CHECK(undef_now == NULL || undef_now == undef.h);
  if (undef_now) dlclose(undef_now);
  exercise(&lazy, zns);
  exercise(&now, zns);
  exercise(&undef, zns);
  own_allocator(&lazy, zns);
  textrel(zns);
  dlclose(lazy.h);
  dlclose(now.h);
  dlclose(undef.h);
  concurrent_opens();
  same_library_two_threads();
  small_stack();
  fork_handlers();
  return zt_finish("deepbind");
}
