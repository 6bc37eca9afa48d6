/* N malloc+free pairs of one size, for counting instructions under callgrind.
 * usage: fastpath_loop N SIZE */
#include <stdlib.h>

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 0;
  size_t size = argc > 2 ? (size_t)atol(argv[2]) : 64;
  void *volatile sink;
  void *warm = malloc(size);   /* first use: the slow path runs outside the counted difference */
  free(warm);
  for (long i = 0; i < n; ++i) {
    void *p = malloc(size);
    sink = p;
    free(p);
  }
  (void)sink;
  return 0;
}
