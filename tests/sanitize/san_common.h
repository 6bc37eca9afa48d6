// Helpers for the sanitizer drivers in tests/sanitize/ (issue 6, `make check-sanitize`).
//
// ASan and TSan bring their own malloc, so an interposing malloc cannot run under them.  These
// drivers therefore link the core sources (built with the sanitizer) and call the internal API:
// zns::alloc / alloc_aligned / dealloc / block_size / trim / heap_snapshot / flush_thread.  Every
// block carries a byte pattern over its requested size, written by the thread that allocated it
// and verified by whichever thread frees it: under TSan that turns "the allocator handed a block
// to a new owner without a happens-before edge from the last free" into a reported race, and
// under ASan+UBSan any stray access by the core into its own metadata is checked.
//
// SAN_SCALE=<float> scales the amount of work (default 1).
#pragma once
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "core/heap.h"
#include "core/stats.h"

#define SAN_REQUIRE(cond, ...)                                                         \
  do {                                                                                 \
    if (__builtin_expect(!(cond), 0)) {                                                \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond);         \
      fprintf(stderr, "" __VA_ARGS__);                                                 \
      fprintf(stderr, "\n");                                                           \
      fflush(stderr);                                                                  \
      abort();                                                                         \
    }                                                                                  \
  } while (0)

namespace san {

inline double scale() {
  const char *s = getenv("SAN_SCALE");
  double x = s ? atof(s) : 1.0;
  return x > 0 ? x : 1.0;
}
inline long scaled(long n) {
  long r = long(double(n) * scale());
  return r > 0 ? r : 1;
}

inline uint64_t rnd(uint64_t *s) {   // xorshift64*
  uint64_t x = *s;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1DULL;
}

inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
constexpr uint64_t kPatK = 0x9E3779B97F4A7C15ULL;
// Byte i of the pattern depends on (key, i) only, so a prefix of a pattern is a pattern.
inline void fill(void *p, size_t n, uint64_t key) {
  char *c = static_cast<char *>(p);
  uint64_t v = mix64(key) | 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = v + (i >> 3) * kPatK;
    memcpy(c + i, &w, 8);
  }
  if (i < n) {
    uint64_t w = v + (i >> 3) * kPatK;
    memcpy(c + i, &w, n - i);
  }
}
// -1 when the n bytes at p hold the pattern of key, else the first bad offset (of its word).
inline long check(const void *p, size_t n, uint64_t key) {
  const char *c = static_cast<const char *>(p);
  uint64_t v = mix64(key) | 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = v + (i >> 3) * kPatK, g;
    memcpy(&g, c + i, 8);
    if (g != w) return long(i);
  }
  if (i < n) {
    uint64_t w = v + (i >> 3) * kPatK, g = 0;
    memcpy(&g, c + i, n - i);
    if (memcmp(&g, &w, n - i) != 0) return long(i);
  }
  return -1;
}

// A live block: where, how much was asked for, the pattern's key.
struct Blk {
  char *p = nullptr;
  uint32_t n = 0;
  uint32_t align = 0;
  uint64_t key = 0;
};

// malloc (align 0) or memalign (align a power of two <= 4096) of n <= 4096 bytes, checked and filled.
inline Blk alloc(size_t n, uint64_t key, size_t align = 0) {
  char *p = static_cast<char *>(align ? zns::alloc_aligned(n, align) : zns::alloc(n));
  SAN_REQUIRE(p != nullptr, "alloc(%zu, align %zu) failed", n, align);
  SAN_REQUIRE(zns::owns(p), "%p not in the region", (void *)p);
  SAN_REQUIRE(zns::block_size(p) >= n, "block_size(%p) = %zu < %zu", (void *)p, zns::block_size(p), n);
  // malloc: 16-byte aligned, 8 for an 8 B block (size_class.h)
  SAN_REQUIRE(uintptr_t(p) % (align ? align : n > 8 ? 16 : 8) == 0, "%p misaligned (%zu)", (void *)p, align);
  fill(p, n, key);
  return Blk{p, uint32_t(n), uint32_t(align), key};
}

inline void verify(const Blk &b, const char *who) {
  long bad = check(b.p, b.n, b.key);
  SAN_REQUIRE(bad < 0, "%s: block %p (%u bytes) corrupted at offset %ld", who, (void *)b.p, b.n, bad);
  SAN_REQUIRE(zns::block_size(b.p) >= b.n, "%s: block_size(%p) shrank", who, (void *)b.p);
}

inline void free(Blk &b, const char *who = "free") {
  if (!b.p) return;
  verify(b, who);
  zns::dealloc(b.p, "free");
  b = Blk{};
}

// realloc on top of the core API, as shim/malloc.cpp does it: keep the block while it fits and
// would not fit a class less than half its size, else new block + copy + free.
inline void realloc(Blk &b, size_t n, uint64_t key) {
  if (!b.p) {
    b = alloc(n, key);
    return;
  }
  verify(b, "realloc");
  size_t old = zns::block_size(b.p);
  if (n <= old && (n > old / 2 || old <= 32)) {   // in place: the prefix keeps the old key
    if (n > b.n) fill(b.p, n, b.key);
    b.n = uint32_t(n);
    return;
  }
  char *q = static_cast<char *>(zns::alloc(n));
  SAN_REQUIRE(q && zns::block_size(q) >= n, "realloc: alloc(%zu) failed", n);
  size_t keep = n < b.n ? n : b.n;
  memcpy(q, b.p, keep);
  SAN_REQUIRE(check(q, keep, b.key) < 0, "realloc: copy of %p to %p lost bytes", (void *)b.p, (void *)q);
  zns::dealloc(b.p, "realloc");
  fill(q, n, b.key);
  b = Blk{q, uint32_t(n), 0, b.key};
  (void)key;
}

// A request size: mostly small, sometimes up to a page.
inline size_t pick_size(uint64_t r) {
  unsigned k = unsigned(r % 100);
  r >>= 8;
  if (k < 60) return size_t(r % 129);          // 0..128
  if (k < 90) return size_t(r % 1024) + 1;     // 1..1024
  return size_t(r % 4096) + 1;                 // 1..4096
}
inline size_t pick_align(uint64_t r) {   // 0 (plain malloc) most of the time
  return (r % 8 == 0) ? size_t(1) << (5 + (r >> 8) % 8) : 0;   // 32 .. 4096
}

// Blocks the heap counts as live (the snapshot discounts each cache's "last freed" block).  Call
// it when no other thread runs: after a test frees everything this must be 0.
inline uint64_t live_blocks() {
  static zns::HeapSnapshot h;
  zns::flush_thread();
  zns::heap_snapshot(&h);
  uint64_t live = 0;
  for (unsigned c = 0; c < zns::kNumClasses; ++c) live += h.cls[c].live;
  return live;
}

// The stats side, run by a thread in parallel with the others: trim, snapshot, text and JSON dumps.
inline void stats_round(int fd, unsigned i) {
  static thread_local zns::HeapSnapshot h;
  zns::trim();
  zns::heap_snapshot(&h);
  SAN_REQUIRE(zns::stats_print(fd, (i & 1) != 0) == 0, "stats_print failed");
}

inline double now() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

}  // namespace san
