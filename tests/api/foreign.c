/* Foreign pointers: blocks that glibc handed out directly (__libc_malloc, __libc_calloc,
 * __libc_memalign, __libc_realloc) must be accepted by the interposed free, realloc and
 * malloc_usable_size (the shim routes by ownership), from any thread, interleaved with slab
 * blocks.  Also blocks allocated by glibc internals through the public malloc (strdup,
 * getline, open_memstream, asprintf, scandir, realpath, qsort) freed by the program, and the
 * dynamic loader's (dlopen / dlsym / dlerror / dlclose). */
#include "tests/api/zns_test.h" /* first: defines _GNU_SOURCE */

#include <dirent.h>
#include <dlfcn.h>
#include <pthread.h>

static int zns;

static const size_t sizes[] = {1, 8, 16, 24, 100, 1000, 4000, 4096, 4097, 10000, 200000};
enum { NS = sizeof sizes / sizeof sizes[0] };

static void check_foreign(void *p, size_t n, const char *how) {
  REQUIRE(p, "%s(%zu) = NULL", how, n);
  CHECK(malloc_usable_size(p) >= n, "malloc_usable_size(%s(%zu) = %p) = %zu", how, n, p, malloc_usable_size(p));
  if (zns) {
    CHECK(zns_owns(p) == 0, "zns_owns(%s(%zu) = %p) = %d: a glibc block claimed by the slab", how, n, p, zns_owns(p));
    CHECK(zns_block_size(p) == 0, "zns_block_size(%s(%zu)) = %zu", how, n, zns_block_size(p));
  }
}

static void one_round(uint64_t seed) {
  for (int i = 0; i < NS; i++) {
    size_t n = sizes[i];
    uint64_t k = seed * 1000 + (uint64_t)i;
    /* __libc_malloc -> free */
    void *p = __libc_malloc(n);
    check_foreign(p, n, "__libc_malloc");
    zt_fill(p, n, k);
    CHECK(zt_verify(p, n, k) < 0);
    free(p);

    /* __libc_malloc -> realloc grow (into any range) -> realloc shrink -> free */
    p = __libc_malloc(n);
    check_foreign(p, n, "__libc_malloc");
    zt_fill(p, n, k);
    static const size_t targets[] = {0 /*placeholder*/, 3, 50, 4096, 4097, 30000};
    for (size_t t = 1; t < sizeof targets / sizeof targets[0]; t++) {
      void *q = __libc_malloc(n);
      check_foreign(q, n, "__libc_malloc");
      zt_fill(q, n, k + 7);
      size_t m = targets[t];
      void *r = realloc(q, m);
      REQUIRE(r, "realloc(foreign %zu, %zu) = NULL", n, m);
      CHECK(malloc_usable_size(r) >= m, "realloc(foreign %zu -> %zu): usable %zu", n, m, malloc_usable_size(r));
      size_t keep = n < m ? n : m;
      long bad = zt_verify(r, keep, k + 7);
      CHECK(bad < 0, "realloc(foreign %zu -> %zu) = %p lost data at offset %ld", n, m, r, bad);
      zt_fill(r, m, k + 8);
      void *s = realloc(r, n);
      REQUIRE(s);
      keep = n < m ? n : m;
      CHECK(zt_verify(s, keep, k + 8) < 0, "realloc(%zu -> %zu -> %zu) lost data", n, m, n);
      free(s);
    }
    free(p);

    /* __libc_calloc -> zeroed, usable, freed by free */
    p = __libc_calloc(n, 1);
    check_foreign(p, n, "__libc_calloc");
    CHECK(zt_first_nonzero(p, n) < 0);
    free(p);

    /* __libc_memalign with several alignments */
    for (size_t a = 16; a <= 65536; a *= 4) {
      p = __libc_memalign(a, n);
      check_foreign(p, n, "__libc_memalign");
      CHECK(zt_addr(p) % a == 0);
      zt_fill(p, n, k + a);
      if (a == 64) {
        void *r = realloc(p, n + 5000);
        REQUIRE(r);
        CHECK(zt_verify(r, n, k + a) < 0, "realloc(__libc_memalign(%zu, %zu)) lost data", a, n);
        p = r;
      }
      free(p);
    }

    /* __libc_realloc of NULL, then our free */
    p = __libc_realloc(NULL, n);
    check_foreign(p, n, "__libc_realloc");
    free(p);

    /* realloc(foreign, 0): freed (glibc semantics: returns NULL) */
    p = __libc_malloc(n);
    REQUIRE(p);
    void *r = ZT_OPAQUE(realloc(ZT_OPAQUE(p), zt_opaque_size(0)));
    CHECK(r == NULL, "realloc(foreign, 0) = %p (glibc frees and returns NULL)", r);
    free(r);
  }
}

/* Foreign and slab blocks live side by side; everything freed in a mixed order. */
static void interleaved(void) {
  enum { N = 3000 };
  static void *p[N];
  static size_t n[N];
  uint64_t rng = 99;
  for (int i = 0; i < N; i++) {
    n[i] = (size_t)(zt_rand(&rng) % 5000) + 1;
    p[i] = (i % 2) ? __libc_malloc(n[i]) : malloc(n[i]);
    REQUIRE(p[i]);
    zt_fill(p[i], n[i], (uint64_t)i);
  }
  for (int i = 0; i < N; i++) {
    CHECK(zt_verify(p[i], n[i], (uint64_t)i) < 0, "interleaved block %d (%s, %zu) corrupted", i,
          i % 2 ? "__libc_malloc" : "malloc", n[i]);
    if (zns && i % 2) CHECK(zns_owns(p[i]) == 0);
    if (zns && !(i % 2)) CHECK(zns_owns(p[i]) == (n[i] <= ZT_MAX_SMALL));
  }
  for (int i = 0; i < N; i++) {
    int j = (int)((i * 1237L) % N);
    if (j % 3 == 0) {
      void *r = realloc(p[j], n[j] + 100);
      REQUIRE(r);
      CHECK(zt_verify(r, n[j], (uint64_t)j) < 0);
      free(r);
    } else {
      free(p[j]);
    }
  }
}

static void *thread_free(void *arg) {
  void **v = (void **)arg;
  for (int i = 0; i < 200; i++) {
    CHECK(zt_verify(v[i], 64 + (size_t)i * 40, (uint64_t)i + 555) < 0, "foreign block %d from main corrupted", i);
    if (i % 2)
      free(v[i]);
    else {
      void *r = realloc(v[i], 10 + (size_t)i);
      REQUIRE(r);
      CHECK(zt_verify(r, 10 + (size_t)i, (uint64_t)i + 555) < 0);
      free(r);
    }
  }
  return NULL;
}

static int cmp_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return x < y ? -1 : x > y;
}

/* Memory that glibc's own code allocated through the public malloc/realloc. */
static void libc_internal(void) {
  char *s = strdup("zns-slab strdup test string");
  REQUIRE(s);
  CHECK(strcmp(s, "zns-slab strdup test string") == 0);
  free(s);
  char *a = NULL;
  int len = asprintf(&a, "%s-%d-%0200d", "asprintf", 42, 7);
  CHECK(len > 200 && a != NULL);
  free(a);
  char *buf = NULL;
  size_t bufsz = 0;
  FILE *f = open_memstream(&buf, &bufsz);
  REQUIRE(f);
  for (int i = 0; i < 3000; i++) fprintf(f, "line %d\n", i); /* grows the buffer via realloc */
  fclose(f);
  CHECK(bufsz > 20000 && buf && strncmp(buf, "line 0\n", 7) == 0, "open_memstream size %zu", bufsz);
  free(buf);
  f = fopen("/proc/self/maps", "r");
  REQUIRE(f);
  char *line = NULL;
  size_t cap = 0;
  int lines = 0;
  while (getline(&line, &cap, f) > 0) lines++;
  CHECK(lines > 3);
  free(line);
  fclose(f);
  struct dirent **names = NULL;
  int nd = scandir("/proc/self", &names, NULL, alphasort);
  CHECK(nd > 5, "scandir = %d", nd);
  for (int i = 0; i < nd; i++) free(names[i]);
  free(names);
  char *rp = realpath("/proc/self/exe", NULL);
  CHECK(rp != NULL);
  free(rp);
  /* the dynamic loader's allocations (link maps, dlerror strings) go through malloc too */
  for (int i = 0; i < 20; i++) {
    void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL, "dlopen(libm.so.6): %s", dlerror());
    if (h) {
      double (*cosp)(double) = (double (*)(double))dlsym(h, "cos");
      CHECK(cosp && cosp(0.0) == 1.0);
      CHECK(dlsym(h, "no_such_symbol_zns") == NULL && dlerror() != NULL);
      dlclose(h);
    }
    CHECK(dlopen("/nonexistent/libzns-nope.so", RTLD_NOW) == NULL);
    const char *e = dlerror();
    CHECK(e && strstr(e, "libzns-nope"), "dlerror: %s", e ? e : "(null)");
  }
  /* qsort of a large array allocates a temporary buffer inside glibc */
  enum { NQ = 200000 };
  int *arr = (int *)malloc(NQ * sizeof(int));
  REQUIRE(arr);
  for (int i = 0; i < NQ; i++) arr[i] = (int)((i * 2654435761u) % NQ);
  qsort(arr, NQ, sizeof(int), cmp_int);
  for (int i = 1; i < NQ; i++) CHECK(arr[i - 1] <= arr[i]);
  free(arr);
}

int main(void) {
  zns = zt_zns_mode();
  zt_log("foreign: mode %s", zt_mode_name());
  for (uint64_t r = 0; r < 20; r++) one_round(r);
  interleaved();
  /* glibc blocks freed by another thread */
  static void *v[200];
  for (int i = 0; i < 200; i++) {
    v[i] = i % 3 == 0 ? __libc_memalign(64, 64 + (size_t)i * 40) : __libc_malloc(64 + (size_t)i * 40);
    REQUIRE(v[i]);
    zt_fill(v[i], 64 + (size_t)i * 40, (uint64_t)i + 555);
  }
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, thread_free, v) == 0);
  pthread_join(t, NULL);
  libc_internal();
  errno = 777;
  free(__libc_malloc(10));
  free(__libc_malloc(100000));
  CHECK(zt_errno() == 777, "free(foreign) changed errno to %d", errno);
  return zt_finish("foreign");
}
