/* malloc, free, malloc_trim and a thread's exit are not cancellation points: a thread with a
 * pthread_cancel pending must come out of them as it went in.  The library's slow paths make calls
 * that are cancellation points (a purge reads /proc/self/status; core/platform.h, NoCancel), and
 * until 2026-12-05 such a call acted on the request: the thread was unwound out of free() or
 * malloc_trim() with the allocator's locks held, and a thread that returned with a request still
 * pending left its whole cache behind at exit (glibc acts on it at the first cancellation point of
 * the exit path: in the library's key destructor).
 *   1. free() of every other 64 KiB of a big heap, then malloc_trim(), under the program's mutex, in
 *      a thread with a cancel pending and no cleanup handler: it must return normally (not
 *      PTHREAD_CANCELED), and the mutex must be free afterwards.
 *   2. Rounds of a thread that returns with a cancel pending after freeing most of its heap and
 *      waiting past ZNS_DECAY_MS (100 ms here: its exit's first release purges the aged slabs,
 *      several ranges at once): the process's RSS after malloc_trim must not grow round after
 *      round (4.3 MiB a round before).
 *   3. A double free detected in a thread with a cancel pending, while stderr is a pipe whose reader
 *      has gone: the process must abort (the message's EPIPE led to a cancellation point, and the
 *      thread was unwound out of free(): the program went on after a double free).
 * 1 and 2 fail on the library before NoCancel (the purge of several ranges reads /proc/self/status
 * first; where the kernel has no process_madvise that read is not made, and they pass anyway). */
#include "tests/api/zns_test.h"

#include <pthread.h>

enum { N = 60000 };
static void *blocks[N];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static volatile int stage;

static void wait_stage(int s) {
  while (__atomic_load_n(&stage, __ATOMIC_SEQ_CST) != s) {}
}

static void fill(void) {
  for (int i = 0; i < N; i++) {
    blocks[i] = malloc(128);
    REQUIRE(blocks[i] != NULL);
    memset(blocks[i], 1, 128);
  }
}
/* every block whose address has bit ZT_GROUP_SHIFT clear (a group's size bit): empty groups
 * with full ones between (a purge of several ranges, in one process_madvise call where the kernel
 * has it) */
static void free_every_other(void) {
  for (int i = 0; i < N; i++)
    if (blocks[i] && !(((uintptr_t)blocks[i] >> ZT_GROUP_SHIFT) & 1)) { free(blocks[i]); blocks[i] = NULL; }
}
static void free_rest(void) {
  for (int i = 0; i < N; i++) { free(blocks[i]); blocks[i] = NULL; }
}

static void *under_mutex(void *arg) {
  (void)arg;
  fill();
  __atomic_store_n(&stage, 1, __ATOMIC_SEQ_CST);
  wait_stage(2);   /* the cancel request is pending from here on */
  pthread_mutex_lock(&mu);   /* (not a cancellation point) */
  free_every_other();
  malloc_trim(0);
  free_rest();
  malloc_trim(0);
  pthread_mutex_unlock(&mu);
  return (void *)42;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void *exits_pending(void *arg) {
  (void)arg;
  fill();
  __atomic_store_n(&stage, 1, __ATOMIC_SEQ_CST);
  wait_stage(2);
  free_every_other();
  void *q[64];   /* a class with blocks out at the exit, and one all free */
  for (int i = 0; i < 64; i++) q[i] = malloc(3000 + (size_t)i);
  for (int i = 0; i < 64; i++) free(q[i]);
  double t0 = now_s();
  while (now_s() - t0 < 0.15) {}   /* past the decay, with no cancellation point */
  return (void *)42;
}

static void *double_free_pending(void *arg) {
  (void)arg;
  void *p = malloc(32);
  void *volatile again = p;
  __atomic_store_n(&stage, 1, __ATOMIC_SEQ_CST);
  wait_stage(2);
  free(p);
  free(again);   /* must abort */
  return (void *)42;
}


static void *run_thread(void *(*fn)(void *)) {
  pthread_t t;
  stage = 0;
  REQUIRE(pthread_create(&t, NULL, fn, NULL) == 0);
  wait_stage(1);
  REQUIRE(pthread_cancel(t) == 0);
  __atomic_store_n(&stage, 2, __ATOMIC_SEQ_CST);
  void *r;
  REQUIRE(pthread_join(t, &r) == 0);
  return r;
}

int main(int argc, char **argv) {
  (void)argc;
  if (!getenv("ZNS_DECAY_MS")) {   /* again with a short decay */
    setenv("ZNS_DECAY_MS", "100", 1);
    execv("/proc/self/exe", argv);
    zt_log("cancel: cannot exec itself (%s); going on with the default decay", strerror(errno));
  }
  int zns = zt_zns_mode();
  zt_log("cancel: mode %s", zt_mode_name());

  void *r = run_thread(under_mutex);
  CHECK(r == (void *)42, "free()/malloc_trim() in a thread with a cancel pending: the thread was %s",
        r == PTHREAD_CANCELED ? "cancelled inside them" : "lost");
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 5;
  int rc = pthread_mutex_timedlock(&mu, &ts);
  CHECK(rc == 0, "the mutex the thread held around free() is still locked (%d)", rc);
  if (rc == 0) pthread_mutex_unlock(&mu);
  free_rest();

  pid_t c = fork();
  REQUIRE(c >= 0);
  if (c == 0) {
    int pfd[2];
    if (pipe(pfd) != 0) _exit(3);
    close(pfd[0]);   /* stderr: a pipe nobody reads any more */
    dup2(pfd[1], 2);
    run_thread(double_free_pending);
    _exit(0);   /* (reached only when the thread was unwound out of free) */
  }
  int st = 0;
  REQUIRE(waitpid(c, &st, 0) == c);
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
        "a double free in a thread with a cancel pending, stderr a closed pipe: status %#x, not SIGABRT", st);

  long first = 0, last = 0;
  for (int round = 0; round < 5; round++) {
    r = run_thread(exits_pending);
    CHECK(r == (void *)42 || r == PTHREAD_CANCELED, "round %d: thread result %p", round, r);
    free_rest();
    malloc_trim(0);
    last = (long)(zt_rss_bytes() / 1024);
    if (round == 0) first = last;
  }
  zt_log("cancel: RSS after malloc_trim %ld KiB after the first round, %ld after the fifth", first, last);
  /* (4.3 MiB a round when each exit left its cache behind: 17 MiB over four) */
  if (zns) CHECK(last - first < 6 * 1024, "RSS grew %ld KiB over four rounds of threads that exit with a cancel pending",
                 last - first);
  return zt_finish("cancel");
}
