// Workload 7: resident memory of N live blocks of one size, against the payload.
//
//   memory --size S [--count N] [--seed X]
//
// 1. one malloc(S)/free so the allocator is initialised, then RSS "before"
// 2. N blocks of S bytes, each written in full (so every payload page is resident): RSS "full"
// 3. a random half freed: RSS "half" (fragmentation: what the freed half still holds)
// 4. the rest freed: RSS "empty" (what the allocator keeps after everything is freed)
// Between 2 and 3, locality: the blocks are linked in a random order (a pointer in each block's
// first 8 bytes) and the chain is followed for --hops steps: ns per hop, the cost of reaching a
// random live block (cache and TLB misses, page-table walks), and VmPTE (page-table memory).  A
// heap spread over more address space than its blocks need pays here, not in RSS.
// Nothing is trimmed or purged on purpose (no malloc_trim, no sleeps): measured as-is.
//
// The overheads count anonymous resident memory (RssAnon of /proc/self/status): the heap, its
// metadata and the allocator's private data.  File-backed pages are left out: they are code
// (the allocator's, libc's), shared with every process that maps the file, and the first call of
// a function faults in up to 64 KiB around it (fault-around), aligned by the load address, which
// ASLR picks: a refill path's first mprotect or mmap wrapper adds 0 or 64 KiB of libc's text from
// run to run.  Counted, that made the 8 B and 64 B overheads of zns, tcmalloc and mimalloc
// bimodal, 64 KiB apart (zns at 8 B: 15,872 or 81,408 B; tcmalloc: 40,448 or 105,984 B), the
// mode decided by the draw.  The total (statm resident) is still printed, as rss_*, and so is
// the file-backed part's change while the blocks were made (file_delta).
// The pointer array and the permutation are mmap'ed and touched before "before", and so are the
// code paths the measured loops run outside the allocator (memset of S bytes, the /proc reads).
// Prints one JSON object.
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "bench/bench_common.h"

int main(int argc, char **argv) {
  size_t size = 0, count = 1000000, hops = 1000000;
  uint64_t seed = 99;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char *name) { return strcmp(argv[i], name) == 0 && i + 1 < argc; };
    if (arg("--size")) size = strtoull(argv[++i], nullptr, 10);
    else if (arg("--count")) count = strtoull(argv[++i], nullptr, 10);
    else if (arg("--seed")) seed = strtoull(argv[++i], nullptr, 10);
    else if (arg("--hops")) hops = strtoull(argv[++i], nullptr, 10);
    else {
      fprintf(stderr, "usage: %s --size S [--count N] [--seed X] [--hops H]\n", argv[0]);
      return 2;
    }
  }
  if (size < sizeof(void *) || count < 2) {
    fprintf(stderr, "memory: --size S (>= %zu: each block holds a pointer) is required\n", sizeof(void *));
    return 2;
  }
  void **v = bench::raw_array<void *>(count);
  uint32_t *perm = bench::raw_array<uint32_t>(count);
  bench::Rng r(seed);
  for (size_t i = 0; i < count; ++i) perm[i] = uint32_t(i);
  for (size_t i = count - 1; i > 0; --i) {
    size_t j = r.below(i + 1);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  void *warm = malloc(size);
  bench::escape(warm);
  free(warm);
  char *scratch = bench::raw_array<char>(size);
  memset(scratch, 0x5a, size);   // the loop's memset, same size: same branch of libc's code
  bench::escape(scratch);
  bench::rss_bytes();            // the reads themselves (open, read, sscanf, strstr)
  bench::status_kb("RssAnon:");

  long before = bench::rss_bytes(), anon_before = bench::anon_bytes();
  double t0 = bench::now_s();
  for (size_t i = 0; i < count; ++i) {
    void *p = malloc(size);
    if (!p) {
      fprintf(stderr, "memory: malloc(%zu) failed at block %zu\n", size, i);
      return 1;
    }
    memset(p, int(i & 0x7f) | 1, size);
    v[i] = p;
  }
  double t_alloc = bench::now_s() - t0;
  long full = bench::rss_bytes(), anon_full = bench::anon_bytes();

  // Locality: link the blocks in the order of perm (a random one), then follow the chain.
  for (size_t i = 0; i < count; ++i) *static_cast<void **>(v[perm[i]]) = v[perm[(i + 1) % count]];
  void *cur = v[perm[0]];
  double t_chase = bench::now_s();
  for (size_t h = 0; h < hops; ++h) cur = *static_cast<void **>(cur);
  t_chase = bench::now_s() - t_chase;
  bench::escape(cur);
  long pte_kb = bench::status_kb("VmPTE:");

  t0 = bench::now_s();
  for (size_t i = 0; i < count / 2; ++i) {
    free(v[perm[i]]);
    v[perm[i]] = nullptr;
  }
  long half = bench::rss_bytes(), anon_half = bench::anon_bytes();
  for (size_t i = count / 2; i < count; ++i) free(v[perm[i]]);
  double t_free = bench::now_s() - t0;
  long empty = bench::rss_bytes(), anon_empty = bench::anon_bytes();

  bench::raw_free(scratch, size);
  double payload = double(size) * double(count);
  double half_payload = double(size) * double(count - count / 2);
  if (anon_before < 0 || anon_full < 0 || anon_half < 0 || anon_empty < 0) {
    fprintf(stderr, "memory: no RssAnon line in /proc/self/status (Linux 4.5 or later needed)\n");
    return 1;
  }
  printf("{\"malloc_from\": \"%s\", \"size\": %zu, \"count\": %zu, \"payload\": %.0f, "
         "\"rss_before\": %ld, \"rss_full\": %ld, \"rss_half\": %ld, \"rss_empty\": %ld, "
         "\"anon_before\": %ld, \"anon_full\": %ld, \"anon_half\": %ld, \"anon_empty\": %ld, "
         "\"file_delta\": %ld, "
         "\"overhead_pct\": %.4f, \"half_overhead_pct\": %.4f, \"retained_after_free_all\": %ld, "
         "\"alloc_s\": %.3f, \"free_s\": %.3f, \"chase_ns\": %.1f, \"vmpte_kb\": %ld}\n",
         bench::malloc_origin(), size, count, payload, before, full, half, empty, anon_before, anon_full,
         anon_half, anon_empty, (full - before) - (anon_full - anon_before),
         (double(anon_full - anon_before) - payload) / payload * 100.0,
         (double(anon_half - anon_before) - half_payload) / half_payload * 100.0, anon_empty - anon_before,
         t_alloc, t_free, t_chase * 1e9 / double(hops ? hops : 1), pte_kb);
  return 0;
}
