/* malloc / free / calloc / realloc / reallocarray / malloc_usable_size conformance.
 *
 * Checks: ownership by size (0..4096 slab, >4096 next allocator), malloc(0) unique & non-NULL,
 * alignment (16, or 8 below 16 bytes), usable size >= request and fully writable, no overlap
 * between live blocks (every byte verified), fine-grained rounding (usable(100) < 128),
 * zns_block_size agrees with malloc_usable_size, calloc zeroes recycled memory, calloc /
 * reallocarray overflow -> NULL+ENOMEM, huge requests -> NULL+ENOMEM, free(NULL) no-op, free
 * preserves errno, realloc(NULL, n), realloc grow/shrink keeps data (inside the slab, across
 * the 4096 boundary both ways, on large blocks), failed realloc leaves the block intact,
 * zns_stats_print/zns_trim smoke, malloc_trim gives the heap's free slabs back (not only glibc's
 * arenas) and keeps live blocks intact, mallinfo2/mallinfo count the slab heap's blocks (not
 * only glibc's arenas), malloc_stats prints the slab heap's table after glibc's. */
#include "tests/api/zns_test.h"

static int zns;

static int cmp_ptr(const void *a, const void *b) {
  uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return x < y ? -1 : x > y;
}

static size_t min_align_for(size_t n) { return n >= 16 ? 16 : 8; }

static void check_block(void *p, size_t n, const char *what) {
  CHECK(p != NULL, "%s(%zu) returned NULL", what, n);
  if (!p) return;
  size_t a = min_align_for(n);
  CHECK((zt_addr(p) % a) == 0, "%s(%zu) = %p not %zu-aligned", what, n, p, a);
  size_t u = malloc_usable_size(p);
  CHECK(u >= n, "%s(%zu) = %p: malloc_usable_size %zu < request", what, n, p, u);
  if (zns) {
    int own = zns_owns(p);
    CHECK(own == zt_should_own(n, 0), "%s(%zu) = %p: zns_owns = %d, expected %d", what, n, p, own,
          zt_should_own(n, 0));
    if (own) {
      size_t b = zns_block_size(p);
      CHECK(b >= n, "%s(%zu) = %p: zns_block_size %zu < request", what, n, p, b);
      CHECK(b == u, "%s(%zu) = %p: zns_block_size %zu != malloc_usable_size %zu", what, n, p, b, u);
    } else {
      CHECK(zns_block_size(p) == 0, "%s(%zu) = %p: not owned but zns_block_size = %zu", what, n, p,
            zns_block_size(p));
    }
  }
}

/* Every size 0..4200 (and some large ones) live at once: each block is filled over its whole
 * usable size with its own pattern, then everything is verified (overlap / corruption), the
 * addresses are checked for uniqueness and non-overlap, then freed in a scrambled order. */
static void test_all_sizes(void) {
  enum { NSMALL = 4201 };
  static const size_t large[] = {4097, 4100, 5000, 8192, 8193, 65536, 131072, 200000, 1 << 20, 5u << 20};
  enum { NL = sizeof large / sizeof large[0], N = NSMALL + NL };
  static void *p[N];
  static size_t req[N], us[N];
  for (int i = 0; i < N; i++) {
    req[i] = i < NSMALL ? (size_t)i : large[i - NSMALL];
    p[i] = malloc(zt_opaque_size(req[i]));
    check_block(p[i], req[i], "malloc");
    REQUIRE(p[i] != NULL);
    us[i] = malloc_usable_size(p[i]);
    zt_fill(p[i], us[i], 1000 + (uint64_t)i);
  }
  for (int i = 0; i < N; i++) {
    long bad = zt_verify(p[i], us[i], 1000 + (uint64_t)i);
    CHECK(bad < 0, "block %d (malloc(%zu) = %p, usable %zu) corrupted at offset %ld: overlapping blocks?", i,
          req[i], p[i], us[i], bad);
  }
  /* uniqueness and non-overlap by address */
  static uintptr_t sorted[N][2];
  for (int i = 0; i < N; i++) {
    sorted[i][0] = (uintptr_t)p[i];
    sorted[i][1] = (uintptr_t)i;
  }
  qsort(sorted, N, sizeof sorted[0], cmp_ptr);
  for (int k = 1; k < N; k++) {
    int a = (int)sorted[k - 1][1], b = (int)sorted[k][1];
    CHECK(sorted[k - 1][0] + us[a] <= sorted[k][0],
          "live blocks overlap: malloc(%zu)=%p usable %zu and malloc(%zu)=%p", req[a], p[a], us[a], req[b],
          p[b]);
  }
  if (zns) {
    size_t u100 = malloc_usable_size(p[100]);
    CHECK(u100 < 128, "fine-grained rounding: malloc_usable_size(malloc(100)) = %zu, want < 128", u100);
    /* informational: worst rounding waste (not a promise beyond usable(100) < 128) */
    double worst = 0;
    int worst_i = 0;
    for (int i = 16; i <= 4096; i++) {
      double w = (double)(us[i] - (size_t)i) / (double)i;
      if (w > worst) worst = w, worst_i = i;
    }
    zt_log("note: worst rounding waste %.0f%% at malloc(%d) -> usable %zu", worst * 100, worst_i, us[worst_i]);
  }
  for (int k = 0; k < N; k++) {
    int i = (int)((k * 7919L) % N);
    free(p[i]);
  }
}

static void test_malloc0(void) {
  enum { N = 2000 };
  static void *p[N];
  for (int i = 0; i < N; i++) {
    p[i] = ZT_OPAQUE(malloc(zt_opaque_size(0)));
    REQUIRE(p[i] != NULL, "malloc(0) #%d returned NULL", i);
    check_block(p[i], 0, "malloc");
  }
  qsort(p, N, sizeof p[0], cmp_ptr);
  for (int i = 1; i < N; i++) CHECK(p[i] != p[i - 1], "malloc(0) returned %p twice while live", p[i]);
  for (int i = 0; i < N; i++) free(p[i]);
  /* realloc(NULL, 0) behaves like malloc(0) */
  void *q = realloc(NULL, zt_opaque_size(0));
  CHECK(q != NULL, "realloc(NULL, 0) returned NULL");
  if (zns && q) CHECK(zns_owns(q) == 1, "realloc(NULL,0)=%p not from the slab", q);
  free(q);
}

/* calloc must zero memory that was dirtied and freed before (recycled blocks). */
static void test_calloc(void) {
  static const size_t sizes[] = {1, 7, 8, 15, 16, 17, 24, 32, 48, 63, 64, 65, 100, 128, 200, 255, 256, 257, 500,
                                 512, 1000, 1024, 1500, 2000, 2048, 3000, 4000, 4095, 4096, 4097, 6000, 8192, 70000};
  enum { NS = sizeof sizes / sizeof sizes[0], PER = 300 };
  static void *p[NS][PER];
  for (int round = 0; round < 3; round++) {
    for (int s = 0; s < NS; s++)
      for (int k = 0; k < PER; k++) {
        p[s][k] = malloc(sizes[s]);
        REQUIRE(p[s][k]);
        memset(p[s][k], 0xA5, malloc_usable_size(p[s][k]));
      }
    for (int s = 0; s < NS; s++)
      for (int k = PER - 1; k >= 0; k--) free(p[s][k]);
    for (int s = 0; s < NS; s++)
      for (int k = 0; k < PER; k++) {
        size_t n = sizes[s];
        /* mix the two argument orders and a split nmemb*size */
        void *c = k % 3 == 0 ? calloc(n, 1) : k % 3 == 1 ? calloc(1, n) : (n % 2 == 0 ? calloc(n / 2, 2) : calloc(n, 1));
        c = ZT_OPAQUE(c);
        REQUIRE(c != NULL, "calloc(%zu) NULL", n);
        check_block(c, n, "calloc");
        long nz = zt_first_nonzero(c, n);
        CHECK(nz < 0, "round %d: calloc(%zu) = %p has non-zero byte 0x%02x at offset %ld (recycled block not cleared)",
              round, n, c, ((unsigned char *)c)[nz < 0 ? 0 : nz], nz);
        p[s][k] = c;
        memset(c, 0x5A, malloc_usable_size(c));
      }
    for (int s = 0; s < NS; s++)
      for (int k = 0; k < PER; k++) free(p[s][k]);
  }
  /* calloc(0, x) and calloc(x, 0) give a unique pointer like malloc(0) */
  void *a = ZT_OPAQUE(calloc(zt_opaque_size(0), 16)), *b = ZT_OPAQUE(calloc(16, zt_opaque_size(0)));
  CHECK(a && b && a != b, "calloc(0,16)=%p calloc(16,0)=%p", a, b);
  free(a);
  free(b);
}

static void test_overflow_and_huge(void) {
  void *p;
  errno = 0;
  p = ZT_OPAQUE(calloc(zt_opaque_size(SIZE_MAX / 2), 3));
  CHECK(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX/2, 3) = %p errno %d (want NULL, ENOMEM)", p, errno);
  errno = 0;
  p = ZT_OPAQUE(calloc(zt_opaque_size((size_t)1 << 33), (size_t)1 << 33));
  CHECK(p == NULL && errno == ENOMEM, "calloc(2^33, 2^33) = %p errno %d (want NULL, ENOMEM)", p, errno);
  errno = 0;
  p = ZT_OPAQUE(calloc(zt_opaque_size(65537), 65537ull * 65537ull * 65537ull)); /* wraps to small */
  CHECK(p == NULL && errno == ENOMEM, "calloc(65537, 65537^3) = %p errno %d (want NULL, ENOMEM)", p, errno);
  free(p);
  errno = 0;
  p = ZT_OPAQUE(calloc(zt_opaque_size(SIZE_MAX - 100), 1));
  CHECK(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX-100, 1) = %p errno %d", p, errno);

  errno = 0;
  p = ZT_OPAQUE(reallocarray(NULL, zt_opaque_size(SIZE_MAX / 2), 3));
  CHECK(p == NULL && errno == ENOMEM, "reallocarray(NULL, SIZE_MAX/2, 3) = %p errno %d", p, errno);
  void *q = malloc(40);
  REQUIRE(q);
  zt_fill(q, 40, 77);
  errno = 0;
  p = ZT_OPAQUE(reallocarray(ZT_OPAQUE(q), zt_opaque_size(SIZE_MAX / 4), 8));
  CHECK(p == NULL && errno == ENOMEM, "reallocarray(q, SIZE_MAX/4, 8) = %p errno %d", p, errno);
  CHECK(zt_verify(q, 40, 77) < 0, "failed reallocarray damaged the original block");
  p = reallocarray(q, 10, 30); /* fine: 300 bytes */
  REQUIRE(p, "reallocarray(q, 10, 30) = NULL");
  check_block(p, 300, "reallocarray");
  CHECK(zt_verify(p, 40, 77) < 0, "reallocarray(q, 10, 30) lost the contents");
  free(p);

  static const size_t huge[] = {SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - 15, SIZE_MAX - 100, SIZE_MAX - 4096,
                                SIZE_MAX - 8191, SIZE_MAX / 2 + 1, (size_t)1 << 62, (size_t)1 << 60,
                                (size_t)1 << 50, PTRDIFF_MAX, (size_t)PTRDIFF_MAX + 1};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    size_t n = zt_opaque_size(huge[i]);
    errno = 0;
    p = ZT_OPAQUE(malloc(n));
    CHECK(p == NULL && errno == ENOMEM, "malloc(%#zx) = %p errno %d (want NULL, ENOMEM)", n, p, errno);
    free(p);
    errno = 0;
    p = ZT_OPAQUE(realloc(NULL, n));
    CHECK(p == NULL && errno == ENOMEM, "realloc(NULL, %#zx) = %p errno %d", n, p, errno);
    free(p);
    q = malloc(24);
    REQUIRE(q);
    zt_fill(q, 24, 5);
    errno = 0;
    p = ZT_OPAQUE(realloc(ZT_OPAQUE(q), n));
    CHECK(p == NULL && errno == ENOMEM, "realloc(small, %#zx) = %p errno %d", n, p, errno);
    CHECK(zt_verify(q, 24, 5) < 0, "failed realloc(small, %#zx) damaged the block", n);
    if (p == NULL) free(q);
    q = malloc(100000);
    REQUIRE(q);
    zt_fill(q, 100000, 6);
    errno = 0;
    p = ZT_OPAQUE(realloc(ZT_OPAQUE(q), n));
    CHECK(p == NULL && errno == ENOMEM, "realloc(large, %#zx) = %p errno %d", n, p, errno);
    CHECK(zt_verify(q, 100000, 6) < 0, "failed realloc(large, %#zx) damaged the block", n);
    if (p == NULL) free(q);
  }
}

static void test_free_errno(void) {
  free(NULL);
  void *a = ZT_OPAQUE(malloc(32)), *b = ZT_OPAQUE(malloc(100000)), *c = ZT_OPAQUE(malloc(0)), *d = ZT_OPAQUE(malloc(4096));
  REQUIRE(a && b && c && d);
  errno = 1234;
  free(a);
  CHECK(zt_errno() == 1234, "free(small) changed errno to %d", errno);
  free(b);
  CHECK(zt_errno() == 1234, "free(large) changed errno to %d", errno);
  free(c);
  free(d);
  free(NULL);
  CHECK(zt_errno() == 1234, "free(malloc(0)) / free(NULL) changed errno to %d", errno);
  /* many frees (cache flushes) must not touch errno either */
  enum { N = 5000 };
  static void *v[N];
  for (int i = 0; i < N; i++) v[i] = ZT_OPAQUE(malloc((size_t)(i % 300) * 13 + 1));
  errno = 4321;
  for (int i = 0; i < N; i++) free(v[i]);
  CHECK(zt_errno() == 4321, "freeing %d blocks changed errno to %d", N, errno);
  CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
}

static void test_realloc(void) {
  /* realloc(NULL, n) == malloc(n) */
  void *p = realloc(NULL, 100);
  check_block(p, 100, "realloc(NULL)");
  free(p);

  /* grow one byte at a time through every small size into the large range, then shrink back */
  size_t n = 1;
  p = malloc(n);
  REQUIRE(p);
  zt_fill(p, n, 9);
  size_t last = 1;
  for (n = 2; n <= 9000; n += (n < 600 ? 1 : 37)) {
    void *r = realloc(p, n);
    REQUIRE(r, "realloc(%p, %zu) = NULL", p, n);
    check_block(r, n, "realloc-grow");
    size_t keep = n - (n < 600 ? 1 : 37);
    long bad = zt_verify(r, keep, 9);
    CHECK(bad < 0, "realloc grow to %zu lost data at offset %ld", n, bad);
    zt_fill(r, n, 9);
    p = r;
    last = n;
  }
  for (n = last; n > 1; n -= (n > 600 ? 41 : 1)) {
    void *r = realloc(p, n);
    REQUIRE(r, "realloc(%p, %zu) = NULL", p, n);
    CHECK(r != NULL && malloc_usable_size(r) >= n);
    long bad = zt_verify(r, n, 9);
    CHECK(bad < 0, "realloc shrink to %zu lost data at offset %ld", n, bad);
    p = r;
  }
  free(p);

  /* small -> large -> small, with distinct patterns, many sizes */
  static const size_t s1[] = {1, 16, 100, 1000, 4000, 4096};
  static const size_t s2[] = {4097, 5000, 20000, 300000};
  for (size_t i = 0; i < sizeof s1 / sizeof s1[0]; i++)
    for (size_t j = 0; j < sizeof s2 / sizeof s2[0]; j++) {
      size_t a = s1[i], b = s2[j];
      void *x = malloc(a);
      REQUIRE(x);
      if (zns) CHECK(zns_owns(x) == 1);
      zt_fill(x, a, a * 31 + b);
      void *y = realloc(x, b);
      REQUIRE(y, "realloc(%zu -> %zu) NULL", a, b);
      check_block(y, b, "realloc-to-large");
      CHECK(zt_verify(y, a, a * 31 + b) < 0, "realloc %zu -> %zu lost data", a, b);
      zt_fill(y, b, b * 7 + a);
      void *z = realloc(y, a);
      REQUIRE(z, "realloc(%zu -> %zu) NULL", b, a);
      CHECK(malloc_usable_size(z) >= a);
      CHECK(zt_verify(z, a, b * 7 + a) < 0, "realloc %zu -> %zu -> %zu lost data", a, b, a);
      /* and a second round trip from wherever the block now lives */
      void *w = realloc(z, b + 1000);
      REQUIRE(w);
      CHECK(zt_verify(w, a, b * 7 + a) < 0, "realloc %zu -> %zu -> %zu -> %zu lost data", a, b, a, b + 1000);
      free(w);
    }

  /* large -> large (next allocator) both ways */
  p = malloc(10000);
  REQUIRE(p);
  zt_fill(p, 10000, 3);
  p = realloc(p, 1 << 20);
  REQUIRE(p);
  CHECK(zt_verify(p, 10000, 3) < 0, "realloc large grow lost data");
  zt_fill(p, 1 << 20, 4);
  p = realloc(p, 5000);
  REQUIRE(p);
  CHECK(zt_verify(p, 5000, 4) < 0, "realloc large shrink lost data");
  free(p);

  /* realloc within the same size class returns a usable block whatever it does */
  p = malloc(33);
  REQUIRE(p);
  zt_fill(p, 33, 11);
  void *r = realloc(p, 34);
  REQUIRE(r);
  CHECK(zt_verify(r, 33, 11) < 0);
  free(r);

  /* realloc(p, 0) with p != NULL: glibc frees p and returns NULL */
  p = malloc(50);
  REQUIRE(p);
  r = ZT_OPAQUE(realloc(p, zt_opaque_size(0)));
  CHECK(r == NULL, "realloc(p, 0) = %p: glibc frees the block and returns NULL", r);
  free(r);
  p = malloc(50000);
  REQUIRE(p);
  r = ZT_OPAQUE(realloc(p, zt_opaque_size(0)));
  CHECK(r == NULL, "realloc(large, 0) = %p: glibc frees the block and returns NULL", r);
  free(r);
}

static void test_stats(void) {
  if (!zns) return;
  char path[] = "/tmp/zns-stats-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  unlink(path);
  int rc = zns_stats_print(fd, 0);
  CHECK(rc == 0, "zns_stats_print(fd, text) = %d", rc);
  off_t text_end = lseek(fd, 0, SEEK_CUR);
  CHECK(text_end > 0, "zns_stats_print(text) wrote nothing");
  rc = zns_stats_print(fd, 1);
  CHECK(rc == 0, "zns_stats_print(fd, json) = %d", rc);
  off_t end = lseek(fd, 0, SEEK_CUR);
  CHECK(end > text_end, "zns_stats_print(json) wrote nothing");
  if (end > text_end && end - text_end < (1 << 20)) {
    size_t len = (size_t)(end - text_end);
    char *buf = (char *)malloc(len + 1);
    REQUIRE(buf);
    CHECK(pread(fd, buf, len, text_end) == (ssize_t)len);
    buf[len] = 0;
    size_t b = 0, e = len;
    while (b < e && (buf[b] == ' ' || buf[b] == '\n' || buf[b] == '\t')) b++;
    while (e > b && (buf[e - 1] == ' ' || buf[e - 1] == '\n' || buf[e - 1] == '\t')) e--;
    CHECK(e > b && buf[b] == '{' && buf[e - 1] == '}', "json stats not one {...} document: starts '%.20s'", buf + b);
    free(buf);
  }
  close(fd);
  rc = zns_stats_print(-1, 0);
  CHECK(rc == -1, "zns_stats_print(-1, 0) = %d, want -1 (write failed)", rc);
  zns_trim();
  /* trim must not break live blocks */
  void *keep = malloc(300);
  REQUIRE(keep);
  zt_fill(keep, 300, 1);
  void *tmp[2000];
  for (int i = 0; i < 2000; i++) tmp[i] = ZT_OPAQUE(malloc(300));
  for (int i = 0; i < 2000; i++) free(tmp[i]);
  zns_trim();
  CHECK(zt_verify(keep, 300, 1) < 0, "zns_trim damaged a live block");
  free(keep);
  /* foreign / odd pointers */
  int local;
  static int global;
  CHECK(zns_owns(NULL) == 0);
  CHECK(zns_owns(&local) == 0, "zns_owns(stack) = %d", zns_owns(&local));
  CHECK(zns_owns(&global) == 0, "zns_owns(global) = %d", zns_owns(&global));
  CHECK(zns_block_size(NULL) == 0);
  CHECK(zns_block_size(&local) == 0);
}

/* glibc's malloc_trim, which programs call after a burst, must reach the slab heap: 48 MiB of
 * 256 B blocks freed leave empty slabs in the depot (up to ZNS_DIRTY_MAX_KB, 8 MiB, resident for
 * ZNS_DECAY_MS) and complete slabs parked in this thread's cache; malloc_trim(0) gives them
 * back at once and says so. */
static void test_malloc_trim(void) {
  enum { N = 48 * 4096 };
  char **v = (char **)malloc(N * sizeof *v);
  REQUIRE(v);
  char *keep = (char *)malloc(256);
  REQUIRE(keep);
  zt_fill(keep, 256, 7);
  for (int i = 0; i < N; i++) {
    v[i] = (char *)malloc(256);
    REQUIRE(v[i]);
    memset(v[i], 0x5a, 256);
  }
  size_t full = zt_rss_bytes();
  for (int i = 0; i < N; i++) free(v[i]);
  free(v);
  size_t before = zt_rss_bytes();
  int r = malloc_trim(0);
  size_t after = zt_rss_bytes();
  zt_log("malloc_trim: resident %zu MiB with 48 MiB of blocks, %zu MiB after their frees, %zu MiB after malloc_trim(0) = %d",
         full >> 20, before >> 20, after >> 20, r);
  CHECK(zt_verify(keep, 256, 7) < 0, "malloc_trim damaged a live block");
  free(keep);
  if (!zns) return;
  CHECK(r == 1, "malloc_trim(0) = %d after 48 MiB were freed, want 1 (memory given back)", r);
  CHECK(before > after && before - after >= ((size_t)4 << 20),
        "malloc_trim(0) gave back %ld KiB of the freed heap (resident %zu -> %zu KiB): want >= 4 MiB",
        (long)(before - after) / 1024, before >> 10, after >> 10);
}

/* Monitoring code reads mallinfo2: 40 MiB of small blocks must show in "bytes in use" and in
 * "arena", and leave it again when freed.  (Under the shim glibc's own would miss every slab
 * block; plain glibc counts them in its arenas, so the check holds in every mode.) */
static void test_mallinfo(void) {
  enum { N = 160 * 1024 };   /* 256 B each: 40 MiB */
  char **v = (char **)__libc_malloc(N * sizeof *v);
  REQUIRE(v);
  struct mallinfo2 m0 = mallinfo2();
  for (int i = 0; i < N; i++) {
    v[i] = (char *)malloc(256);
    REQUIRE(v[i]);
    v[i][0] = (char)i;
  }
  struct mallinfo2 m1 = mallinfo2();
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  struct mallinfo o1 = mallinfo();   /* deprecated, still called */
#pragma GCC diagnostic pop
  for (int i = 0; i < N; i++) free(v[i]);
  struct mallinfo2 m2 = mallinfo2();
  __libc_free(v);
  size_t want = (size_t)N * 256;
  zt_log("mallinfo2: in use %zu -> %zu -> %zu KiB, arena %zu -> %zu KiB, free %zu KiB after the frees; "
         "mallinfo in use %d KiB", m0.uordblks >> 10, m1.uordblks >> 10, m2.uordblks >> 10,
         m0.arena >> 10, m1.arena >> 10, m2.fordblks >> 10, o1.uordblks >> 10);
  CHECK(m1.uordblks >= m0.uordblks + want, "40 MiB of live blocks, but mallinfo2's bytes in use "
        "grew by %ld KiB", (long)(m1.uordblks - m0.uordblks) / 1024);
  CHECK(m1.arena + m0.fordblks >= m0.arena + want, "40 MiB of live blocks, but mallinfo2's arena "
        "grew by %ld KiB (and %zu KiB were free before)", (long)(m1.arena - m0.arena) / 1024,
        m0.fordblks >> 10);
  CHECK(m1.uordblks <= m1.arena + m1.hblkhd, "more bytes in use (%zu) than held (%zu)", m1.uordblks,
        m1.arena + m1.hblkhd);
  CHECK(m2.uordblks + want / 2 < m1.uordblks, "the blocks were freed, but bytes in use went only "
        "%zu -> %zu KiB", m1.uordblks >> 10, m2.uordblks >> 10);
  CHECK((size_t)o1.uordblks + 4096 >= m1.uordblks && (size_t)o1.uordblks <= m1.uordblks + (1u << 20),
        "mallinfo (%d) and mallinfo2 (%zu) disagree on bytes in use", o1.uordblks, m1.uordblks);
}

/* malloc_stats prints on stderr: glibc's arenas, then (under the shim) the slab heap's table. */
static void test_malloc_stats(void) {
  int pfd[2];
  REQUIRE(pipe(pfd) == 0);
  int saved = dup(2);
  REQUIRE(saved >= 0 && dup2(pfd[1], 2) == 2);
  void *p = malloc(64);
  malloc_stats();
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
  close(pfd[1]);
  char buf[65536];
  size_t n = 0;
  ssize_t r;
  while (n < sizeof buf - 1 && (r = read(pfd[0], buf + n, sizeof buf - 1 - n)) > 0) n += (size_t)r;
  close(pfd[0]);
  buf[n] = 0;
  free(p);
  CHECK(strstr(buf, "system bytes") != NULL, "malloc_stats printed no glibc arena figures: %.200s", buf);
  if (zns)
    CHECK(strstr(buf, "zns-slab heap statistics") != NULL, "malloc_stats did not print the slab heap");
}

int main(void) {
  zns = zt_zns_mode();
  zt_log("malloc_basic: mode %s", zt_mode_name());
  test_all_sizes();
  test_mallinfo();
  test_malloc_stats();
  test_malloc0();
  test_calloc();
  test_overflow_and_huge();
  test_free_errno();
  test_realloc();
  test_stats();
  test_malloc_trim();
  return zt_finish("malloc_basic");
}
