/* The heap profiler after the main thread's pthread_exit (tests/prof/run.sh): threads started by
   another thread allocate through stdio called from mainexit_leaf (walks through fgets make
   libunwind check addresses) and keep the blocks live.  The profile must charge them to
   mainexit_leaf.  The check answered by process_vm_readv(getpid()) failed (ESRCH) once the main
   thread was gone, and every stack ended at malloc (a review). */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) void mainexit_leaf(void) {
  for (int i = 0; i < 200; i++) {
    FILE *f = fopen("/proc/self/stat", "r");
    char line[256];
    if (f && fgets(line, sizeof line, f)) (void)line[0];
    if (f) close(fileno(f));   /* the FILE and its buffer stay live */
  }
}
static void *worker(void *arg) {
  mainexit_leaf();
  return arg;
}
static void *spawner(void *arg) {
  usleep(50000);   /* (the main thread has exited by now) */
  for (int i = 0; i < 10; i++) {
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) == 0) pthread_join(t, NULL);
  }
  return arg;
}
int main(void) {
  pthread_t t;
  pthread_create(&t, NULL, spawner, NULL);
  pthread_exit(NULL);
}
