// Memory with many threads (reference; not an issue-4 workload): T threads each hold a few blocks
// of K sizes at once, the shape of a thread-per-connection server whose threads keep a little state
// each.  An allocator whose threads own their memory (thread caches, per-thread slabs or pages)
// pays at least a page per thread and size there; one whose threads draw blocks from shared spans
// pays for the blocks.
//
//   threads --threads T --blocks N [--sizes K]
//
// Every thread mallocs N blocks of each of K sizes (16, 64, 112, ... 16 + 48 (K - 1) B), writes
// each in full and waits at a barrier; the main thread then reads RSS ("live"); the threads free
// everything and exit, are joined, and RSS is read again ("after": what the allocator keeps of
// threads that are gone).  Both against RSS before the threads were created.  A first pass of T
// threads that allocate nothing runs before: their stacks (64 KiB each, so that glibc's cache of
// 40 MiB keeps all of them) are reused by the measured pass, so its figures hold no stack pages;
// "thread_kb_empty" is what the first pass cost per thread (stack pages, TLS, the allocator's own
// start-up of a thread that never allocates).
// Prints one JSON object.  RSS is /proc/self/statm resident pages.
#include <pthread.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bench/bench_common.h"

namespace {

pthread_barrier_t g_hold, g_go;
unsigned g_blocks, g_sizes;

size_t size_of(unsigned k) { return 16 + 48 * size_t(k); }

void *worker(void *) {
  size_t n = size_t(g_blocks) * g_sizes;
  void **keep = n ? static_cast<void **>(malloc(n * sizeof(void *))) : nullptr;
  size_t i = 0;
  for (unsigned b = 0; b < g_blocks; ++b)
    for (unsigned k = 0; k < g_sizes; ++k) {
      keep[i] = malloc(size_of(k));
      if (!keep[i]) {
        fprintf(stderr, "threads: malloc(%zu) failed\n", size_of(k));
        exit(1);
      }
      memset(keep[i], 0x5a, size_of(k));
      ++i;
    }
  pthread_barrier_wait(&g_hold);   // everything live: the main thread reads RSS
  pthread_barrier_wait(&g_go);
  for (size_t j = 0; j < n; ++j) free(keep[j]);
  free(keep);
  return nullptr;
}

struct Pass {
  size_t before, live, after;
};

Pass run(unsigned threads, unsigned blocks) {
  g_blocks = blocks;
  pthread_barrier_init(&g_hold, nullptr, threads + 1);
  pthread_barrier_init(&g_go, nullptr, threads + 1);
  pthread_t *t = bench::raw_array<pthread_t>(threads);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  Pass p{};
  p.before = bench::rss_bytes();
  for (unsigned i = 0; i < threads; ++i)
    if (pthread_create(&t[i], &attr, worker, nullptr) != 0) {
      fprintf(stderr, "threads: pthread_create failed at thread %u\n", i);
      exit(1);
    }
  pthread_barrier_wait(&g_hold);
  p.live = bench::rss_bytes();
  pthread_barrier_wait(&g_go);
  for (unsigned i = 0; i < threads; ++i) pthread_join(t[i], nullptr);
  p.after = bench::rss_bytes();
  pthread_barrier_destroy(&g_hold);
  pthread_barrier_destroy(&g_go);
  pthread_attr_destroy(&attr);
  bench::raw_free(t, threads);
  return p;
}

}  // namespace

int main(int argc, char **argv) {
  unsigned threads = 0, blocks = 0, sizes = 20;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char *name) { return strcmp(argv[i], name) == 0 && i + 1 < argc; };
    if (arg("--threads")) threads = unsigned(strtoul(argv[++i], nullptr, 10));
    else if (arg("--blocks")) blocks = unsigned(strtoul(argv[++i], nullptr, 10));
    else if (arg("--sizes")) sizes = unsigned(strtoul(argv[++i], nullptr, 10));
    else {
      fprintf(stderr, "usage: %s --threads T --blocks N [--sizes K]\n", argv[0]);
      return 2;
    }
  }
  if (threads == 0 || blocks == 0 || sizes == 0 || size_of(sizes - 1) > 4096) {
    fprintf(stderr, "threads: --threads T and --blocks N (both > 0) are required; --sizes K in 1..85\n");
    return 2;
  }
  g_sizes = sizes;
  void *warm = malloc(64);   // the allocator initialised before "before"
  bench::escape(warm);
  free(warm);
  bench::rss_bytes();
  // First pass without blocks (see the top): its stacks are reused by the measured pass.
  Pass empty = run(threads, 0);
  Pass p = run(threads, blocks);
  double payload = 0;
  for (unsigned k = 0; k < sizes; ++k) payload += double(size_of(k));
  payload *= double(blocks) * threads;
  auto kb = [](double b) { return b / 1024.0; };
  double live_added = double(p.live) - double(p.before);
  double empty_added = double(empty.live) - double(empty.before);
  printf("{\"malloc_from\": \"%s\", \"threads\": %u, \"blocks\": %u, \"sizes\": %u, \"payload_kb\": %.1f, "
         "\"thread_kb_empty\": %.1f, \"live_added_kb\": %.1f, \"after_exit_kb\": %.1f, "
         "\"overhead_kb\": %.1f}\n",
         bench::malloc_origin(), threads, blocks, sizes, kb(payload), kb(empty_added) / threads, kb(live_added),
         kb(double(p.after) - double(p.before)), kb(live_added - payload));
  return 0;
}
