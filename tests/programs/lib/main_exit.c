/* The main thread calls pthread_exit; a worker allocates, prints without a newline (only the
   exit's flush of stdout puts it out), waits, and returns: the process must then end with status
   0, as glibc ends it when its last thread ends (tests/programs/main_exit.sh). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static void *work(void *arg) {
  for (int i = 0; i < 100000; i++) free(malloc(100 + (size_t)(i % 3000)));
  usleep(300000);   /* (the library's threads are well started by now) */
  printf("worker done");
  return arg;
}

int main(void) {
  pthread_t t;
  if (pthread_create(&t, NULL, work, NULL) != 0) return 2;
  pthread_exit(NULL);
}
