/* Built -no-pie (tests/tests.mk), and it takes malloc's address: the program's own PLT stub for
   malloc becomes malloc's address everywhere in the process, the library's too (Debian's
   /usr/bin/python3.11 is such a program).  tests/prof/run.sh checks that google-pprof charges the
   samples to the function that called malloc, not to whatever symbol precedes the stub. */
#include <stdio.h>
#include <stdlib.h>

void *(*volatile malloc_seen)(size_t);   // taking the address is what moves it to the PLT

__attribute__((noinline)) void *nopie_leaf(size_t n) { return malloc(n); }

__attribute__((noinline)) void nopie_keep(void **keep, int n) {
  for (int i = 0; i < n; i++) keep[i] = nopie_leaf(100);
}

int main(void) {
  malloc_seen = malloc;
  static void *keep[20000];
  nopie_keep(keep, 20000);   // 2 MB live at exit, all from nopie_leaf
  puts("done");
  return 0;
}
