// The heap profiler under threads, cross-thread frees, signal handlers and forks (tests/prof/run.sh
// runs it under libzns_slab_prof.so with a small ZNS_PROF_RATE, so that about one request in ten
// is a sample).  Every block carries a byte pattern checked at its free; calloc'ed ones must read as
// zero; malloc_usable_size must cover the request; realloc must keep the contents.  Each forked
// child allocates and frees (samples included) and exits through exit(), which writes its own
// profile.  At the end everything is freed and the profile is dumped to argv[1]: run.sh checks
// that no frame of stress_worker or handler_pool is in it (every sample freed was forgotten).
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

int zns_prof_dump(const char *path) __attribute__((weak));

enum { kThreads = 4, kLive = 512, kOps = 60000, kPool = 64, kForks = 6 };

static void fail(const char *what, size_t n) {
  fprintf(stderr, "prof_stress: %s (size %zu)\n", what, n);
  exit(1);
}

static void fill(unsigned char *p, size_t n, unsigned key) {
  for (size_t i = 0; i < n; ++i) p[i] = (unsigned char)(key + i * 7);
}
static void check(const unsigned char *p, size_t n, unsigned key) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != (unsigned char)(key + i * 7)) fail("a block's bytes changed", n);
}

struct Block { unsigned char *p; size_t n; unsigned key; };

// A one-slot mailbox per thread: blocks handed to the next thread (frees from another thread).
static struct Block g_box[kThreads];
static pthread_mutex_t g_box_lock[kThreads];

// Blocks that each thread's SIGUSR1 handler frees (small ones: a sample among them is a slot).
static __thread void *t_pool[kPool];
static __thread volatile int t_pool_n;
static pthread_t g_threads[kThreads];
static volatile int g_stop;

static void on_usr1(int sig) {
  (void)sig;
  int n = t_pool_n;
  if (n > 0) {
    free(t_pool[n - 1]);
    t_pool_n = n - 1;
  }
}

__attribute__((noinline)) static void handler_pool(void) {
  sigset_t s, old;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &s, &old);   // (the pool is changed with the handler held off)
  for (int n = t_pool_n; n < kPool; ++n) t_pool[n] = malloc(16 + (size_t)(n * 37) % 2000);
  t_pool_n = kPool;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static uint64_t rng(uint64_t *s) {
  *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
  return *s;
}

__attribute__((noinline)) static void *stress_worker(void *arg) {
  unsigned id = (unsigned)(uintptr_t)arg;
  uint64_t r = 0x9E3779B97F4A7C15ull * (id + 1);
  struct Block live[kLive] = {{0}};
  for (int op = 0; op < kOps; ++op) {
    if (op % 512 == 0) handler_pool();
    struct Block *b = &live[rng(&r) % kLive];
    if (b->p) {
      check(b->p, b->n, b->key);
      unsigned what = (unsigned)(rng(&r) % 12);
      if (what < 3) {   // to the next thread, which frees it
        unsigned to = (id + 1) % kThreads;
        pthread_mutex_lock(&g_box_lock[to]);
        struct Block old = g_box[to];
        g_box[to] = *b;
        pthread_mutex_unlock(&g_box_lock[to]);
        if (old.p) { check(old.p, old.n, old.key); free(old.p); }
        b->p = NULL;
      } else if (what < 6) {   // realloc, keeping the prefix
        size_t n = 1 + rng(&r) % 6000;
        unsigned char *q = realloc(b->p, n);
        if (!q) fail("realloc failed", n);
        check(q, n < b->n ? n : b->n, b->key);
        if (malloc_usable_size(q) < n) fail("malloc_usable_size below a realloc's request", n);
        b->p = q;
        b->n = n;
        fill(q, n, b->key);
      } else {
        free(b->p);
        b->p = NULL;
      }
    }
    if (!b->p) {
      size_t n = 1 + rng(&r) % 5000, align = 0;
      unsigned kind = rng(&r) % 6;
      unsigned char *p;
      if (kind == 0) {
        p = calloc(1, n);
        if (p) for (size_t i = 0; i < n; ++i) if (p[i]) fail("calloc'ed bytes not zero", n);
      } else if (kind == 1) {
        align = (size_t)64 << (rng(&r) % 8);   // 64 .. 8192
        if (posix_memalign((void **)&p, align, n)) p = NULL;
      } else if (kind == 2) {
        align = 4096;
        p = aligned_alloc(align, (n + 4095) & ~(size_t)4095);
        n = (n + 4095) & ~(size_t)4095;
      } else {
        p = malloc(n);
      }
      if (!p) fail("allocation failed", n);
      if (align && ((uintptr_t)p & (align - 1))) fail("misaligned block", n);
      if (malloc_usable_size(p) < n) fail("malloc_usable_size below the request", n);
      b->p = p;
      b->n = n;
      b->key = (unsigned)rng(&r);
      fill(p, n, b->key);
    }
  }
  for (int i = 0; i < kLive; ++i)
    if (live[i].p) { check(live[i].p, live[i].n, live[i].key); free(live[i].p); }
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &s, NULL);
  while (t_pool_n > 0) free(t_pool[--t_pool_n]);
  return NULL;
}

int main(int argc, char **argv) {
  if (!zns_prof_dump) { fprintf(stderr, "zns_prof_dump not found: not under ZNS-Slab\n"); return 2; }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1;
  sa.sa_flags = SA_RESTART;
  sigaction(SIGUSR1, &sa, NULL);
  for (int t = 0; t < kThreads; ++t) pthread_mutex_init(&g_box_lock[t], NULL);
  for (int t = 0; t < kThreads; ++t) pthread_create(&g_threads[t], NULL, stress_worker, (void *)(uintptr_t)t);
  int forks = 0, signals = 0;
  for (int round = 0; round < 400; ++round) {
    for (int t = 0; t < kThreads; ++t)
      if (pthread_kill(g_threads[t], SIGUSR1) == 0) ++signals;
    if (round % 60 == 30 && forks < kForks) {
      pid_t pid = fork();
      if (pid == 0) {   // the child: allocates (samples too) and frees, then exits through exit()
        void *v[2000];
        for (int i = 0; i < 2000; ++i) memset(v[i] = malloc(1 + (size_t)i * 3), 1, 1);
        for (int i = 0; i < 2000; ++i) free(v[i]);
        exit(0);
      }
      int st;
      if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail("a forked child failed", 0);
      ++forks;
    }
    usleep(500);
  }
  for (int t = 0; t < kThreads; ++t) pthread_join(g_threads[t], NULL);
  for (int t = 0; t < kThreads; ++t)
    if (g_box[t].p) { check(g_box[t].p, g_box[t].n, g_box[t].key); free(g_box[t].p); }
  if (argc > 1 && zns_prof_dump(argv[1]) != 0) { perror("zns_prof_dump"); return 1; }
  printf("prof_stress: %d threads x %d ops, %d signals, %d forks: ok\n", kThreads, kOps, signals, forks);
  return 0;
}
