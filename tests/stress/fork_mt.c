/* Stress 3: fork while other threads allocate.
 * Three threads hammer malloc/calloc/realloc/free (with byte verification) while the main thread
 * forks 50 times.  Each child, immediately after fork:
 *   - mallocs / frees / reallocs a lot, verifying every byte (a lock held across fork, or
 *     metadata left half-updated, deadlocks or corrupts here),
 *   - verifies and frees the "stable" blocks the hammer threads allocated in the parent (blocks
 *     whose owning thread does not exist in the child),
 *   - frees the blocks of a fourth thread that cycles page-sized blocks (every one of its mallocs
 *     and frees goes through the depot lock, so at fork time it is usually parked inside the
 *     allocator's slow path with its cache half-way through a change),
 *   - starts threads that allocate and free (they adopt the caches of the parent's threads),
 *     and sometimes forks again (grandchild),
 *   - and must _exit(0) within the timeout: the parent waits with an alarm (SIGALRM interrupts
 *     waitpid); a child still running after 20 s is reported as deadlocked and killed.
 *   - verifies and frees the blocks in flight between a producer and a consumer thread (every one
 *     of the consumer's frees is a cross-thread free, so at fork time a drain of the producer's
 *     inbox or a consumer's notify may be half done),
 * Also, while the hammers run: posix_spawn of /bin/true, fork+exec of /bin/echo (its output is
 * checked), popen and system -- the exec'ed programs inherit LD_PRELOAD in the preload run. */
#include "tests/api/zns_test.h" /* first: defines _GNU_SOURCE */

#include <pthread.h>
#include <spawn.h>

extern char **environ;

enum { NHAMMER = 3, NSTABLE = 64, NFORKS = 50, CHILD_TIMEOUT = 20, RING = 8, NCHILD_THREADS = 4 };

static int zns;
static volatile int stop;
static int nforks = NFORKS;

typedef struct {
  void *p;
  size_t n;
  uint64_t key;
} blk_t;

/* stable blocks: allocated by each hammer before the forks start, freed only at the end */
static blk_t stable[NHAMMER][NSTABLE];
static pthread_barrier_t ready;
static volatile long hammer_ops[NHAMMER];
static void *volatile ring[RING]; /* the cycler's live blocks; NULL while being replaced */
static volatile long cycler_ops;

/* The relay: the producer mallocs block number t (its size and contents follow from t) and
 * publishes it in relay_ring; the consumer verifies and frees it.  tail: blocks published, head:
 * blocks consumed.  The consumer clears its slot before the free, so a child never frees a block
 * the consumer was freeing at the fork (it skips a null slot). */
enum { RELAY = 256 };
static void *volatile relay_ring[RELAY];
static uint64_t relay_head, relay_tail;
static volatile int relay_stop;
static volatile long relay_ops;
static size_t relay_size(uint64_t t) { return 16 + (size_t)((t * 0x9E3779B97F4A7C15ULL) >> 40) % 1009; }
static uint64_t relay_key(uint64_t t) { return t ^ 0x5E1A7000ULL; }

static void *producer(void *arg) {
  (void)arg;
  pthread_barrier_wait(&ready);
  uint64_t t = 0;
  while (!stop) {
    if (t - __atomic_load_n(&relay_head, __ATOMIC_ACQUIRE) >= RELAY) {
      sched_yield();
      continue;
    }
    void *p = malloc(relay_size(t));
    REQUIRE(p);
    zt_fill(p, relay_size(t), relay_key(t));
    relay_ring[t % RELAY] = p;
    __atomic_store_n(&relay_tail, ++t, __ATOMIC_RELEASE);
  }
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  pthread_barrier_wait(&ready);
  uint64_t h = 0;
  for (;;) {
    if (h == __atomic_load_n(&relay_tail, __ATOMIC_ACQUIRE)) {
      if (relay_stop) break;
      sched_yield();
      continue;
    }
    void *p = relay_ring[h % RELAY];
    REQUIRE(zt_verify(p, relay_size(h), relay_key(h)) < 0, "consumer: block %llu corrupted", (unsigned long long)h);
    relay_ring[h % RELAY] = NULL;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    free(p);
    __atomic_store_n(&relay_head, ++h, __ATOMIC_RELEASE);
  }
  relay_ops = (long)h;
  return NULL;
}

/* Keeps RING page-sized blocks live, replacing the oldest each step: with one block per slab,
 * every free empties a slab and every malloc needs a new one. */
static void *cycler(void *arg) {
  (void)arg;
  pthread_barrier_wait(&ready);
  long i = 0;
  while (!stop) {
    unsigned k = (unsigned)(i++ % RING);
    void *old = ring[k];
    ring[k] = NULL;
    if (old) {
      REQUIRE(zt_verify(old, 4096, (uint64_t)(uintptr_t)old) < 0, "cycler: block %p corrupted", old);
      free(old);
    }
    void *p = malloc(4096);
    REQUIRE(p);
    zt_fill(p, 4096, (uint64_t)(uintptr_t)p);
    ring[k] = p;
  }
  for (int k = 0; k < RING; k++) free(ring[k]);
  cycler_ops = i;
  return NULL;
}

static size_t pick(uint64_t r) {
  unsigned k = (unsigned)(r % 100);
  r >>= 8;
  if (k < 70) return (size_t)(r % 256) + 1;
  if (k < 95) return (size_t)(r % 3840) + 257;
  return (size_t)(r % 6000) + 4097;
}

static void *hammer(void *arg) {
  int id = (int)(intptr_t)arg;
  uint64_t rng = 0xabcdef12345ULL * (uint64_t)(id + 3);
  for (int i = 0; i < NSTABLE; i++) {
    size_t n = pick(zt_rand(&rng));
    stable[id][i].p = malloc(n);
    REQUIRE(stable[id][i].p);
    stable[id][i].n = n;
    stable[id][i].key = 0x57AB1E00ULL + (uint64_t)id * 1000 + (uint64_t)i;
    zt_fill(stable[id][i].p, n, stable[id][i].key);
  }
  pthread_barrier_wait(&ready);
  enum { N = 512 };
  blk_t v[N];
  memset(v, 0, sizeof v);
  uint64_t key = (uint64_t)id << 40;
  long ops = 0;
  while (!stop) {
    uint64_t r = zt_rand(&rng);
    blk_t *b = &v[r % N];
    if (b->p) {
      long bad = zt_verify(b->p, b->n, b->key);
      REQUIRE(bad < 0, "hammer %d: block %p (%zu) corrupted at %ld", id, b->p, b->n, bad);
      if ((r >> 20) % 4 == 0) {
        size_t nn = pick(zt_rand(&rng));
        void *q = realloc(b->p, nn);
        REQUIRE(q);
        REQUIRE(zt_verify(q, nn < b->n ? nn : b->n, b->key) < 0, "hammer %d: realloc lost data", id);
        b->p = q;
        b->n = nn;
        b->key = ++key;
        zt_fill(q, nn, b->key);
      } else {
        free(b->p);
        b->p = NULL;
      }
    } else {
      b->n = pick(r >> 8);
      b->p = (r >> 30) % 5 == 0 ? calloc(1, b->n) : malloc(b->n);
      REQUIRE(b->p);
      b->key = ++key;
      zt_fill(b->p, b->n, b->key);
    }
    ops++;
  }
  for (int i = 0; i < N; i++) free(v[i].p);
  hammer_ops[id] = ops;
  return NULL;
}

/* ---- in the child ------------------------------------------------------------------------------ */
static void *child_thread(void *arg) {
  uint64_t rng = (uint64_t)(uintptr_t)arg | 1;
  for (int i = 0; i < 4000; i++) {
    size_t n = i % 8 == 0 ? 4096 : pick(zt_rand(&rng));
    void *p = malloc(n);
    if (!p) return (void *)1;
    zt_fill(p, n, (uint64_t)i);
    if (zt_verify(p, n, (uint64_t)i) >= 0) return (void *)2;
    free(p);
  }
  return NULL;
}

/* Exit codes: 0 ok, 10+ a specific failure (printed on stderr as well). */
static void child_work(int iter, int depth) {
  uint64_t rng = 0x5151ULL + (uint64_t)iter * 7919;
  /* allocate at once: the first thing after fork */
  enum { N = 1024 };
  static blk_t v[N];
  for (int i = 0; i < N; i++) {
    v[i].n = pick(zt_rand(&rng));
    v[i].p = malloc(v[i].n);
    REQUIRE(v[i].p, "child %d: malloc(%zu) = NULL", iter, v[i].n);
    if (zns) REQUIRE(zns_owns(v[i].p) == zt_should_own(v[i].n, 0), "child: ownership");
    v[i].key = (uint64_t)i * 31 + (uint64_t)iter;
    zt_fill(v[i].p, v[i].n, v[i].key);
  }
  for (int round = 0; round < 40; round++) {
    for (int k = 0; k < N; k++) {
      int i = (int)(zt_rand(&rng) % N);
      long bad = zt_verify(v[i].p, v[i].n, v[i].key);
      REQUIRE(bad < 0, "child %d: block %p (%zu) corrupted at %ld", iter, v[i].p, v[i].n, bad);
      if (k % 3 == 0) {
        size_t nn = pick(zt_rand(&rng));
        void *q = realloc(v[i].p, nn);
        REQUIRE(q, "child: realloc NULL");
        REQUIRE(zt_verify(q, nn < v[i].n ? nn : v[i].n, v[i].key) < 0, "child %d: realloc lost data", iter);
        v[i].p = q;
        v[i].n = nn;
      } else {
        free(v[i].p);
        v[i].n = pick(zt_rand(&rng));
        v[i].p = k % 7 == 0 ? calloc(v[i].n, 1) : malloc(v[i].n);
        REQUIRE(v[i].p, "child: malloc NULL");
        if (k % 7 == 0) REQUIRE(zt_first_nonzero(v[i].p, v[i].n) < 0, "child: calloc not zeroed");
      }
      v[i].key = zt_rand(&rng);
      zt_fill(v[i].p, v[i].n, v[i].key);
    }
  }
  /* blocks of threads that do not exist here (a grandchild's parent has freed them already) */
  for (int t = 0; t < NHAMMER && depth == 0; t++)
    for (int i = 0; i < NSTABLE; i++) {
      blk_t *b = &stable[t][i];
      long bad = zt_verify(b->p, b->n, b->key);
      REQUIRE(bad < 0, "child %d: stable block of hammer %d corrupted at %ld", iter, t, bad);
      if (i % 2) {
        free(b->p);
      } else {
        void *q = realloc(b->p, b->n + 100);
        REQUIRE(q && zt_verify(q, b->n, b->key) < 0, "child: realloc of a hammer's block");
        free(q);
      }
    }
  /* the cycler's blocks (its thread was inside malloc or free when we forked, most likely) */
  for (int k = 0; k < RING && depth == 0; k++) {
    void *p = ring[k];
    if (!p) continue;
    REQUIRE(zt_verify(p, 4096, (uint64_t)(uintptr_t)p) < 0, "child %d: cycler block %p corrupted", iter, p);
    free(p);
  }
  /* the relay's blocks in flight (the producer's slabs: frees of another thread's blocks) */
  for (uint64_t h = relay_head; h < relay_tail && depth == 0; h++) {
    void *p = relay_ring[h % RELAY];
    if (!p) continue; /* the consumer was freeing it */
    REQUIRE(zt_verify(p, relay_size(h), relay_key(h)) < 0, "child %d: relay block %llu corrupted", iter,
            (unsigned long long)h);
    free(p);
  }
  /* threads in the child: they adopt the caches the parent's threads left behind */
  pthread_t th[NCHILD_THREADS];
  for (int t = 0; t < NCHILD_THREADS; t++)
    REQUIRE(pthread_create(&th[t], NULL, child_thread, (void *)(uintptr_t)(iter * 8 + t + 1)) == 0,
            "child: pthread_create");
  for (int t = 0; t < NCHILD_THREADS; t++) {
    void *res;
    pthread_join(th[t], &res);
    REQUIRE(res == NULL, "child %d: its thread %d failed (%ld)", iter, t, (long)(intptr_t)res);
  }
  /* sometimes a grandchild */
  if (depth == 0 && iter % 10 == 3) {
    pid_t g = fork();
    REQUIRE(g >= 0);
    if (g == 0) {
      void *p = ZT_OPAQUE(malloc(1000));
      REQUIRE(p);
      memset(p, 1, 1000);
      free(p);
      child_work(iter + 1000, 1);
      _exit(0);
    }
    int st;
    REQUIRE(waitpid(g, &st, 0) == g && WIFEXITED(st) && WEXITSTATUS(st) == 0, "grandchild failed: status %#x", st);
  }
  for (int i = 0; i < N; i++) free(v[i].p);
}

/* ---- waiting with a timeout --------------------------------------------------------------------- */
static void on_alarm(int sig) { (void)sig; }
static int timed_out; /* a child hung: stop forking (each hang costs CHILD_TIMEOUT seconds) */

static void install_alarm_handler(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_alarm; /* no SA_RESTART: waitpid / read fail with EINTR */
  sigaction(SIGALRM, &sa, NULL);
}

/* Returns the wait status, or -1 after killing a child that did not finish in time. */
static int wait_timeout(pid_t pid, int seconds, const char *what) {
  alarm((unsigned)seconds);
  int st = 0;
  pid_t r = waitpid(pid, &st, 0);
  int e = errno;
  alarm(0);
  if (r == pid) return st;
  CHECK(0, "%s (pid %d) did not finish within %d s (waitpid: %s): deadlocked after fork?", what, (int)pid, seconds,
        strerror(e));
  timed_out = 1;
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  return -1;
}

static void check_status(int st, const char *what, int iter) {
  if (st == -1) return;
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s #%d: %s %d", what, iter,
        WIFEXITED(st) ? "exit status" : "killed by signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

static void spawn_and_exec(int iter) {
  /* posix_spawn /bin/true */
  pid_t pid;
  char *argv_true[] = {"true", NULL};
  int rc = posix_spawn(&pid, "/bin/true", NULL, NULL, argv_true, environ);
  CHECK(rc == 0, "posix_spawn(/bin/true): %s", strerror(rc));
  if (rc == 0) check_status(wait_timeout(pid, CHILD_TIMEOUT, "posix_spawn(/bin/true)"), "posix_spawn /bin/true", iter);

  /* fork + exec /bin/echo, output through a pipe */
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    close(fds[1]);
    char *p = malloc(100); /* allocate between fork and exec as well */
    if (p) snprintf(p, 100, "zns-echo-%d", iter);
    execl("/bin/echo", "echo", p ? p : "nomem", (char *)NULL);
    _exit(127);
  }
  close(fds[1]);
  char buf[128] = {0}, want[64];
  size_t len = 0;
  ssize_t r;
  alarm(CHILD_TIMEOUT); /* a child that hangs before exec never closes the pipe */
  while (len < sizeof buf - 1 && (r = read(fds[0], buf + len, sizeof buf - 1 - len)) > 0) len += (size_t)r;
  int hung = r < 0 && errno == EINTR;
  alarm(0);
  close(fds[0]);
  if (hung) {
    CHECK(0, "fork+exec /bin/echo: the child (pid %d) did not exec within %d s: deadlocked in malloc after fork?",
          (int)pid, CHILD_TIMEOUT);
    timed_out = 1;
    kill(pid, SIGKILL);
  }
  check_status(wait_timeout(pid, CHILD_TIMEOUT, "fork+exec /bin/echo"), "fork+exec /bin/echo", iter);
  if (hung) return;
  snprintf(want, sizeof want, "zns-echo-%d\n", iter);
  CHECK(strcmp(buf, want) == 0, "/bin/echo printed [%s], want [%s]", buf, want);

  /* popen and system (posix_spawn / clone(CLONE_VFORK) inside glibc) */
  if (iter % 5 == 0) {
    FILE *f = popen("echo popen-ok", "r");
    CHECK(f != NULL, "popen failed");
    if (f) {
      char line[64] = {0};
      CHECK(fgets(line, sizeof line, f) != NULL && strcmp(line, "popen-ok\n") == 0, "popen read [%s]", line);
      CHECK(pclose(f) == 0);
    }
    CHECK(system("exit 0") == 0, "system() failed");
  }
}

int main(void) {
  zns = zt_zns_mode();
  zt_no_core_dumps();
  install_alarm_handler();
  if (getenv("ZT_SCALE")) {
    nforks = (int)(NFORKS * atof(getenv("ZT_SCALE")));
    if (nforks < 5) nforks = 5;
  }
  zt_log("fork_mt: mode %s, %d hammer threads, %d forks", zt_mode_name(), NHAMMER, nforks);
  pthread_barrier_init(&ready, NULL, NHAMMER + 4);
  pthread_t th[NHAMMER], cyc, prod, cons;
  for (int i = 0; i < NHAMMER; i++) REQUIRE(pthread_create(&th[i], NULL, hammer, (void *)(intptr_t)i) == 0);
  REQUIRE(pthread_create(&cyc, NULL, cycler, NULL) == 0);
  REQUIRE(pthread_create(&prod, NULL, producer, NULL) == 0);
  REQUIRE(pthread_create(&cons, NULL, consumer, NULL) == 0);
  pthread_barrier_wait(&ready);
  double t0 = zt_now();
  int forked = 0;
  for (int iter = 0; iter < nforks && !timed_out; iter++) {
    /* the main thread allocates too, so its cache is in an arbitrary state at fork time */
    void *tmp[50];
    for (int i = 0; i < 50; i++) tmp[i] = ZT_OPAQUE(malloc((size_t)(i * 83 + iter) % 5000 + 1));
    for (int i = 0; i < 50; i += 2) free(tmp[i]);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
      alarm(CHILD_TIMEOUT + 5); /* belt and braces: never outlive the parent's patience */
      child_work(iter, 0);
      for (int i = 1; i < 50; i += 2) free(tmp[i]);
      _exit(0);
    }
    forked++;
    for (int i = 1; i < 50; i += 2) free(tmp[i]);
    check_status(wait_timeout(pid, CHILD_TIMEOUT, "forked child"), "forked child", iter);
    if (iter % 2 == 0) spawn_and_exec(iter);
  }
  double t1 = zt_now();
  stop = 1;
  long total = 0;
  for (int i = 0; i < NHAMMER; i++) {
    pthread_join(th[i], NULL);
    total += hammer_ops[i];
  }
  pthread_join(cyc, NULL);
  pthread_join(prod, NULL);
  relay_stop = 1; /* the consumer empties the ring, then stops */
  pthread_join(cons, NULL);
  for (int t = 0; t < NHAMMER; t++)
    for (int i = 0; i < NSTABLE; i++) {
      CHECK(zt_verify(stable[t][i].p, stable[t][i].n, stable[t][i].key) < 0, "parent: stable block corrupted");
      free(stable[t][i].p);
    }
  zt_log("fork_mt: %d forks in %.2fs while the hammers did %ld operations, the cycler %ld, the relay %ld", forked,
         t1 - t0, total, cycler_ops, relay_ops);
  CHECK(total > 1000, "the hammer threads barely ran (%ld ops)", total);
  CHECK(relay_ops > 1000, "the relay barely ran (%ld blocks)", relay_ops);
  return zt_finish("fork_mt");
}
