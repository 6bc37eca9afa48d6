/* Bad input must abort: double free of a small (slab) block, free of a pointer into the middle
 * of a small block, free of a slot never handed out, realloc / malloc_usable_size of a freed block
 * (in each state a freed block can be in).  Each case runs in a forked child whose stderr goes to a pipe; the child
 * must die of SIGABRT, having written exactly one line that contains "zns-slab" and the
 * offending address (printed with %p, i.e. 0x... lowercase hex).
 * Under plain glibc the whole test is skipped (glibc detects some of these cases differently). */
#include "tests/api/zns_test.h" /* first: defines _GNU_SOURCE */

#include <pthread.h>
#include <semaphore.h>

static int g_info_fd = -1;

/* Tells the parent which pointer is about to be passed to free, and the start of its block. */
static void announce(void *bad, void *base) {
  uintptr_t info[2] = {(uintptr_t)bad, (uintptr_t)base};
  zt_write_all(g_info_fd, (const char *)info, sizeof info);
}

static void *free_in_thread(void *p) {
  free(p);
  return NULL;
}

static void case_double_immediate(void) {
  void *p = malloc(32);
  void *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  free(again);
}
static void case_double_after_other(void) {
  void *p = ZT_OPAQUE(malloc(32)), *q = ZT_OPAQUE(malloc(32));
  void *again = ZT_OPAQUE(p);
  free(p);
  free(q);
  announce(again, again);
  free(again);
}
static void case_double_after_flush(void) {
  enum { N = 20000 };
  static void *v[N];
  for (int i = 0; i < N; i++) v[i] = ZT_OPAQUE(malloc(48));
  void *p = malloc(48);
  void *again = ZT_OPAQUE(p);
  free(p);
  for (int i = 0; i < N; i++) free(v[i]); /* pushes p out of any thread cache */
  announce(again, again);
  free(again);
}
static void case_double_other_thread(void) {
  void *p = malloc(200);
  pthread_t t;
  pthread_create(&t, NULL, free_in_thread, p);
  pthread_join(t, NULL);
  announce(p, p);
  free(ZT_OPAQUE(p));
}
static void case_double_last_remote_pending(void) {
  /* p goes to the bin's `last` slot; another thread's free into the same slab sets the slab's
   * remote hint, so the second free of p takes the checked local path, which must look at `last`. */
  void *p = ZT_OPAQUE(malloc(96)), *q = ZT_OPAQUE(malloc(96));
  void *again = ZT_OPAQUE(p);
  free(p);
  pthread_t t;
  pthread_create(&t, NULL, free_in_thread, q);
  pthread_join(t, NULL);
  announce(again, again);
  free(again);
}
static sem_t g_freed, g_done;
static void *free_in_thread_and_wait(void *p) {
  free(p);
  sem_post(&g_freed);
  sem_wait(&g_done); /* stays alive: no thread-exit work in between */
  return NULL;
}
static void case_double_other_thread_alive(void) {
  sem_init(&g_freed, 0, 0);
  sem_init(&g_done, 0, 0);
  void *warm[64]; /* make sure the class's current slab has room: no slow path in between */
  for (int i = 0; i < 64; i++) warm[i] = ZT_OPAQUE(malloc(200));
  for (int i = 0; i < 64; i++) free(warm[i]);
  void *p = ZT_OPAQUE(malloc(200));
  pthread_t t;
  pthread_create(&t, NULL, free_in_thread_and_wait, p);
  sem_wait(&g_freed);
  announce(p, p);
  free(p); /* second free: the first one is a remote free not merged yet */
  /* not detected: show what it leads to -- the block is handed out twice */
  void *a = malloc(200), *b = NULL;
  for (int i = 0; i < 100000 && b != a; i++) {
    b = malloc(200);
  }
  if (a == b) zt_log("bad_free: after the undetected double free, malloc(200) returned %p twice while live", a);
  sem_post(&g_done);
  pthread_join(t, NULL);
}
static void case_double_given_up_slab(void) {
  /* fill the slab p lives in, and more: the thread moves on to another slab */
  void *p = ZT_OPAQUE(malloc(16));
  for (int i = 0; i < 1000; i++) (void)ZT_OPAQUE(malloc(16)); /* kept live (the child dies anyway) */
  void *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  free(again);
}
static void case_double_slab_in_depot(void) {
  void *p = ZT_OPAQUE(malloc(4096)); /* one block per slab */
  void *q = ZT_OPAQUE(malloc(4096)); /* the first slab is full: the thread moves on */
  void *again = ZT_OPAQUE(p);
  free(p); /* its slab is now empty: back to the depot */
  announce(again, again);
  free(again);
  free(q);
}
static void *alloc_two(void *arg) {
  void **out = (void **)arg;
  out[0] = ZT_OPAQUE(malloc(64));
  out[1] = ZT_OPAQUE(malloc(64));
  return NULL;
}
static void case_double_remote_interleaved(void) {
  void *pq[2];
  pthread_t t;
  pthread_create(&t, NULL, alloc_two, pq); /* blocks of another thread: every free here is remote */
  pthread_join(t, NULL);
  free(pq[0]);
  free(pq[1]);
  announce(pq[0], pq[0]);
  free(pq[0]);
}
static void case_double_malloc0(void) {
  void *p = malloc(zt_opaque_size(0));
  void *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  free(again);
}
static void case_double_4096(void) {
  void *p = malloc(4096);
  void *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  free(again);
}
static void case_double_memalign(void) {
  void *p = memalign(256, 100);
  void *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  free(again);
}
static void case_double_realloc(void) { /* the block was freed by a moving realloc */
  void *p = malloc(16);
  uintptr_t old = (uintptr_t)ZT_OPAQUE(p);
  void *q = realloc(p, 3000);
  if ((uintptr_t)q == old) _exit(43); /* did not move: case does not apply */
  announce((void *)old, (void *)old);
  free((void *)old);
}
static void case_interior_16(void) {
  char *p = (char *)malloc(64);
  announce(p + 16, p);
  free(ZT_OPAQUE(p + 16));
}
static void case_interior_1(void) {
  char *p = (char *)malloc(100);
  announce(p + 1, p);
  free(ZT_OPAQUE(p + 1));
}
static void case_interior_8(void) {
  char *p = (char *)malloc(1000);
  announce(p + 8, p);
  free(ZT_OPAQUE(p + 8));
}
static void case_interior_4096(void) {
  char *p = (char *)malloc(4096);
  announce(p + 2048, p);
  free(ZT_OPAQUE(p + 2048));
}

/* realloc / malloc_usable_size of a block in each state a freed block can be in */
static void case_realloc_freed_last(void) { /* freed just now: the cache's `last` slot */
  void *p = ZT_OPAQUE(malloc(40)), *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  (void)ZT_OPAQUE(realloc(again, 80));
}
static void case_realloc_freed_bitmap(void) { /* freed, then another: back in the bitmap */
  void *p = ZT_OPAQUE(malloc(40)), *q = ZT_OPAQUE(malloc(40)), *again = ZT_OPAQUE(p);
  free(p);
  free(q);
  announce(again, again);
  (void)ZT_OPAQUE(realloc(again, 10));
}
static void case_usable_freed(void) {
  void *p = ZT_OPAQUE(malloc(300)), *q = ZT_OPAQUE(malloc(300)), *again = ZT_OPAQUE(p);
  free(p);
  free(q);
  announce(again, again);
  (void)ZT_OPAQUE(malloc_usable_size(again));
}
static void case_usable_freed_last(void) { /* the cache's `last` slot (the inline check) */
  void *p = ZT_OPAQUE(malloc(40)), *again = ZT_OPAQUE(p);
  free(p);
  announce(again, again);
  (void)ZT_OPAQUE(malloc_usable_size(again));
}
static void case_usable_interior(void) {
  char *p = (char *)malloc(64);
  announce(p + 16, p);
  (void)ZT_OPAQUE(malloc_usable_size(ZT_OPAQUE(p + 16)));
}
static void case_usable_freed_here_remote(void) { /* another thread's block, freed here: buffered */
  void *pq[2];
  pthread_t t;
  pthread_create(&t, NULL, alloc_two, pq);
  pthread_join(t, NULL);
  void *again = ZT_OPAQUE(pq[0]);
  free(pq[0]);
  announce(again, again);
  (void)ZT_OPAQUE(malloc_usable_size(again));
}
static void case_realloc_freed_by_exited_thread(void) { /* remote bits, not merged by us yet */
  void *p = ZT_OPAQUE(malloc(200));
  pthread_t t;
  pthread_create(&t, NULL, free_in_thread, p);
  pthread_join(t, NULL);
  announce(p, p);
  (void)ZT_OPAQUE(realloc(p, 300));
}
static void case_usable_slab_in_depot(void) {
  void *p = ZT_OPAQUE(malloc(4096)), *q = ZT_OPAQUE(malloc(4096)), *again = ZT_OPAQUE(p);
  free(p); /* p's slab is empty: back to the depot */
  announce(again, again);
  (void)ZT_OPAQUE(malloc_usable_size(again));
  free(q);
}
static void case_never_handed_out(void) { /* the next slot of a fresh slab */
  char *p = (char *)ZT_OPAQUE(malloc(3584));
  announce(p + 3584, p + 3584);
  free(ZT_OPAQUE(p + 3584));
}

typedef struct {
  const char *name;
  void (*fn)(void);
  int interior; /* 1: the block start is also accepted as "the address" */
} bad_case;

static const bad_case cases[] = {
    {"double free, immediately", case_double_immediate, 0},
    {"double free, after freeing another block", case_double_after_other, 0},
    {"double free, after 20000 other frees (cache flushed)", case_double_after_flush, 0},
    {"double free, first free in another thread", case_double_other_thread, 0},
    {"double free, first free in another thread that is still running", case_double_other_thread_alive, 0},
    {"double free of the block in `last`, a remote free into its slab pending", case_double_last_remote_pending, 0},
    {"double free in a slab its thread has moved on from", case_double_given_up_slab, 0},
    {"double free after the block's slab went back to the depot", case_double_slab_in_depot, 0},
    {"double free of another thread's block, another free in between", case_double_remote_interleaved, 0},
    {"double free of malloc(0)", case_double_malloc0, 0},
    {"double free of malloc(4096)", case_double_4096, 0},
    {"double free of memalign(256, 100)", case_double_memalign, 0},
    {"free of a block already freed by a moving realloc", case_double_realloc, 0},
    {"free(p + 16) of malloc(64)", case_interior_16, 1},
    {"free(p + 1) of malloc(100)", case_interior_1, 1},
    {"free(p + 8) of malloc(1000)", case_interior_8, 1},
    {"free(p + 2048) of malloc(4096)", case_interior_4096, 1},
    {"realloc of a block just freed", case_realloc_freed_last, 0},
    {"realloc of a freed block (another free since)", case_realloc_freed_bitmap, 0},
    {"malloc_usable_size of a freed block", case_usable_freed, 0},
    {"malloc_usable_size of a block just freed", case_usable_freed_last, 0},
    {"malloc_usable_size(p + 16) of malloc(64)", case_usable_interior, 1},
    {"malloc_usable_size of another thread's block this thread freed", case_usable_freed_here_remote, 0},
    {"realloc of a block freed by a thread that has exited", case_realloc_freed_by_exited_thread, 0},
    {"malloc_usable_size of a block whose slab went back to the depot", case_usable_slab_in_depot, 0},
    {"free of a slot never handed out", case_never_handed_out, 0},
};

static int contains_addr(const char *text, uintptr_t a) {
  char hex[32];
  snprintf(hex, sizeof hex, "%lx", (unsigned long)a);
  /* case-insensitive search of the hex digits (with or without 0x) */
  size_t hl = strlen(hex);
  for (const char *s = text; *s; s++) {
    size_t i = 0;
    while (i < hl && s[i] && (s[i] | 0x20) == hex[i]) i++;
    if (i == hl) {
      /* must not be a prefix of a longer hex number, nor preceded by a hex digit */
      char after = s[hl], before = s == text ? ' ' : s[-1];
      int hexa = (after >= '0' && after <= '9') || ((after | 0x20) >= 'a' && (after | 0x20) <= 'f');
      int hexb = (before >= '1' && before <= '9') || ((before | 0x20) >= 'a' && (before | 0x20) <= 'f');
      if (!hexa && !hexb) return 1;
    }
  }
  return 0;
}

/* In the child, after a bad call that did not abort: say so, then give a deferred check a chance
 * to fire (the verdict stays "not detected at the call", with a note saying whether it was caught
 * later). */
static void survived_then_churn(void) {
  uintptr_t survived[2] = {0x5a7e5a7eu, 0};
  zt_write_all(g_info_fd, (const char *)survived, sizeof survived);
  for (int i = 0; i < 2000; i++) free(ZT_OPAQUE(malloc((size_t)(i % 64) * 64 + 16)));
  zns_trim();
}

static void run_case(const bad_case *c) {
  char out[8192];
  uintptr_t info[4] = {0, 0, 0, 0};
  size_t ilen = 0;
  int st = zt_run_child(c->fn, survived_then_churn, &g_info_fd, out, sizeof out, info, sizeof info, &ilen);
  size_t len = strlen(out);
  ssize_t ir = (ssize_t)ilen;
  int survived = ir >= (ssize_t)(4 * sizeof(uintptr_t)) && info[2] == 0x5a7e5a7eu;
  if (WIFEXITED(st) && WEXITSTATUS(st) == 43) {
    zt_log("  skip  %s (realloc did not move the block)", c->name);
    return;
  }
  int failed_before = zt_failures;
  if (survived && WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT) {
    CHECK(0, "%s: not detected at the bad call; the process aborted only later, in a subsequent allocator call "
          "(deferred check): [%s]", c->name, out);
  } else if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT)) {
    if (WIFEXITED(st))
      CHECK(0, "%s: child exited with status %d instead of dying of SIGABRT (bad free not detected)", c->name,
            WEXITSTATUS(st));
    else
      CHECK(0, "%s: child killed by signal %d (%s), want SIGABRT", c->name, WTERMSIG(st), strsignal(WTERMSIG(st)));
  } else {
    int lines = 0;
    for (size_t i = 0; i < len; i++)
      if (out[i] == '\n') lines++;
    if (len > 0 && out[len - 1] != '\n') lines++;
    CHECK(strstr(out, "zns-slab") != NULL, "%s: stderr has no \"zns-slab\": [%s]", c->name, out);
    CHECK(lines == 1, "%s: want exactly one line on stderr, got %d: [%s]", c->name, lines, out);
    REQUIRE(ir >= (ssize_t)(2 * sizeof(uintptr_t)), "%s: child did not report its pointer", c->name);
    int has = contains_addr(out, info[0]);
    if (!has && c->interior && contains_addr(out, info[1])) {
      has = 1;
      zt_log("  note: %s: the message names the block start %#lx, not the pointer passed to free %#lx", c->name,
             (unsigned long)info[1], (unsigned long)info[0]);
    }
    CHECK(has, "%s: stderr does not contain the address %#lx: [%s]", c->name, (unsigned long)info[0], out);
  }
  int ok = zt_failures == failed_before;
  zt_log("  %s  %s: %s%s", ok ? "ok  " : "FAIL", c->name, out[0] ? out : "(no output)",
         len && out[len - 1] == '\n' ? "" : "\n");
}

int main(void) {
  int zns = zt_zns_mode();
  zt_log("bad_free: mode %s", zt_mode_name());
  if (!zns) {
    zt_log("bad_free: skipped under plain glibc");
    return 0;
  }
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
  return zt_finish("bad_free");
}
