/* The main thread calls pthread_exit; a worker allocates, prints without a newline (only the
   exit's flush of stdout puts it out), waits, and returns: the process must then end with status
   0, as glibc ends it when its last thread ends (tests/programs/main_exit.sh).  Its atexit
   handler needs 200 KB of stack and a signal delivered to its own thread, as a handler of the
   last thread's has: it prints " atexit ok" when both held. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t got;
static void on_usr1(int sig) { got = sig; }

static void at_exit(void) {
  volatile char big[200 * 1024];   /* (the library's own threads have 64 KiB) */
  memset((char *)big, 1, sizeof big);
  raise(SIGUSR1);                  /* (to this thread: delivered unless it blocks it) */
  if (got == SIGUSR1 && big[sizeof big - 1] == 1) printf(" atexit ok");
}

static void *work(void *arg) {
  for (int i = 0; i < 100000; i++) free(malloc(100 + (size_t)(i % 3000)));
  usleep(300000);   /* (the library's threads are well started by now) */
  printf("worker done");
  return arg;
}

int main(void) {
  signal(SIGUSR1, on_usr1);
  atexit(at_exit);
  pthread_t t;
  if (pthread_create(&t, NULL, work, NULL) != 0) return 2;
  pthread_exit(NULL);
}
