/* The next allocator must be set up before a program's threads reach it.  glibc initialises its
 * malloc at the first call, with no lock, and counts the calling thread as the main arena's one
 * user; a program's early allocations normally make that call on the main thread, but under the
 * shim they are ours, so the first call into glibc could come from worker threads (their first
 * requests above 4 KiB) at the same time: two of them took the main arena counted once, and the
 * second to exit died in glibc ("malloc assertion failure in __malloc_arena_thread_freeres:
 * a->attached_threads > 0"; 15 processes of 300 here, and now and then tests/tier's integrity
 * run).  The shim's constructor now makes the first call.
 *
 * The program re-executes itself 300 times; each child starts 4 threads that wait at a barrier
 * and then make their first glibc allocation at once (a large malloc, which the shim passes on,
 * and __libc_malloc directly), and exit.  Every child must exit 0. */
#include <pthread.h>

#include "tests/api/zns_test.h"

static pthread_barrier_t g_bar;

static void *worker(void *arg) {
  (void)arg;
  pthread_barrier_wait(&g_bar);
  void *big = malloc(64 * 1024);   /* above 4 KiB: the next allocator's */
  void *p = __libc_malloc(1000);
  REQUIRE(big && p);
  memset(big, 1, 64 * 1024);
  __libc_free(p);
  free(big);
  return NULL;
}

static int child(void) {
  enum { T = 4 };
  pthread_t t[T];
  pthread_barrier_init(&g_bar, NULL, T);
  for (int i = 0; i < T; ++i) REQUIRE(pthread_create(&t[i], NULL, worker, NULL) == 0);
  for (int i = 0; i < T; ++i) pthread_join(t[i], NULL);
  return 0;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "child")) return child();
  enum { N = 300 };
  int died = 0, first_status = 0;
  for (int i = 0; i < N; ++i) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      execl("/proc/self/exe", argv[0], "child", (char *)NULL);
      _exit(127);
    }
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      if (!died++) first_status = st;
    }
  }
  CHECK(died == 0, "%d of %d children died (first: status 0x%x; 0x86 = SIGABRT with a core): "
        "their threads' first allocations from the next allocator ran at the same time",
        died, N, first_status);
  zt_log("next_init: %d processes of 4 threads whose first glibc allocations met, %d died", N, died);
  return zt_finish("next_init");
}
