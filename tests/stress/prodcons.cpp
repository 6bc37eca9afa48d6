// Stress 4: producer / consumer.  One thread allocates 1M blocks of mixed small sizes and fills
// each with a pattern; another verifies and frees them (every free is a cross-thread free).
//   phase A (streaming): the consumer follows the producer closely (at most 8192 blocks in flight)
//   phase B (bulk):      the producer allocates all 1M blocks first (a peak of ~200 MB), then the
//                        consumer frees them all, while the producer thread is still alive, then
//                        a second bulk round where the producer has exited before the frees.
// After each phase, with nothing live, zns_trim() (malloc_trim(0) under plain glibc) must bring
// the RSS back near the baseline (within 16 MiB): memory freed remotely must not stay stranded in
// the producer's cache or in slabs that never make it back to the depot.
// ZT_SCALE scales the number of blocks.
#include "tests/api/zns_test.h"

#include <sched.h>
#include <sys/mman.h>

#include <atomic>
#include <thread>

namespace {

int zns;
size_t N = 1000000;
constexpr uint64_t kSeed = 0xC0FFEE;

void **g_p;         // the queue: block pointers (mmap'ed, outside the allocator)
uint32_t *g_n;      // and their sizes
std::atomic<size_t> produced{0}, consumed{0};
std::atomic<bool> producer_may_exit{false};

size_t pick(uint64_t r) {
  unsigned k = unsigned(r % 100);
  r >>= 8;
  if (k < 62) return size_t(r % 64) + 1;     // 1..64
  if (k < 97) return size_t(r % 448) + 65;   // 65..512
  return size_t(r % 3584) + 513;             // 513..4096
}

void producer(size_t window, uint64_t salt, bool wait_before_exit) {
  uint64_t rng = 0x1234 + salt;
  for (size_t i = 0; i < N; i++) {
    if (window)
      while (i - consumed.load(std::memory_order_acquire) >= window) sched_yield();
    size_t n = pick(zt_rand(&rng));
    void *p = malloc(n);
    REQUIRE(p, "producer: malloc(%zu) = NULL at block %zu", n, i);
    if (zns) REQUIRE(zns_owns(p) == 1, "producer: malloc(%zu) = %p not from the slab", n, p);
    zt_fill(p, n, kSeed ^ (i * 0x100000001ULL) ^ salt);
    g_p[i] = p;
    g_n[i] = uint32_t(n);
    if ((i & 63) == 63 || i + 1 == N) produced.store(i + 1, std::memory_order_release);
  }
  if (wait_before_exit)
    while (!producer_may_exit.load(std::memory_order_acquire)) sched_yield();
}

void consumer(uint64_t salt, bool wait_all) {
  if (wait_all)
    while (produced.load(std::memory_order_acquire) < N) sched_yield();
  size_t i = 0;
  while (i < N) {
    size_t avail = produced.load(std::memory_order_acquire);
    if (i == avail) {
      sched_yield();
      continue;
    }
    for (; i < avail; i++) {
      long bad = zt_verify(g_p[i], g_n[i], kSeed ^ (i * 0x100000001ULL) ^ salt);
      REQUIRE(bad < 0, "consumer: block %zu (%p, %u bytes) corrupted at offset %ld", i, g_p[i], g_n[i], bad);
      free(g_p[i]);
      g_p[i] = nullptr;
      if ((i & 63) == 63) consumed.store(i + 1, std::memory_order_release);
    }
    consumed.store(i, std::memory_order_release);
  }
}

void release_memory() {
  if (zns) zns_trim();
  else malloc_trim(0);
}

size_t run_phase(const char *name, size_t window, bool wait_all, bool producer_exits_first, uint64_t salt,
                 size_t baseline) {
  produced = 0;
  consumed = 0;
  producer_may_exit = false;
  double t0 = zt_now();
  size_t peak = 0;
  if (producer_exits_first) {
    std::thread p(producer, window, salt, false);
    p.join();  // every block's owner thread is gone before the frees
    peak = zt_rss_bytes();
    std::thread c(consumer, salt, wait_all);
    c.join();
  } else {
    std::thread p(producer, window, salt, true);
    std::thread c(consumer, salt, wait_all);
    if (wait_all) {
      while (produced.load() < N) sched_yield();
      peak = zt_rss_bytes();
    }
    c.join();
    // the producer is still alive here: remote frees must not wait for it to exit
    size_t live_rss = zt_rss_bytes();
    release_memory();
    size_t trimmed_live = zt_rss_bytes();
    zt_log("  %s: with the producer thread still alive: RSS %.1f MiB, after trim %.1f MiB", name,
           live_rss / 1048576.0, trimmed_live / 1048576.0);
    // Every block is freed; the producer thread is alive but idle (think: a pool worker waiting
    // for its next job).  Its slabs must not keep the memory.
    CHECK(trimmed_live < baseline + (16u << 20),
          "%s: every block freed (by another thread) and trimmed, but RSS is still %.1f MiB over the baseline "
          "(limit 16 MiB) while the allocating thread is alive and idle: remotely freed memory stays stranded "
          "until that thread allocates again or exits",
          name, ((double)trimmed_live - (double)baseline) / 1048576.0);
    producer_may_exit = true;
    p.join();
  }
  double t1 = zt_now();
  size_t before_trim = zt_rss_bytes();
  release_memory();
  size_t after = zt_rss_bytes();
  if (!peak) peak = before_trim;
  zt_log("  %s: %zu blocks in %.2fs; RSS baseline %.1f MiB, peak %.1f MiB, after free %.1f MiB, after trim %.1f MiB",
         name, N, t1 - t0, baseline / 1048576.0, peak / 1048576.0, before_trim / 1048576.0, after / 1048576.0);
  CHECK(consumed.load() == N, "%s: consumed %zu of %zu", name, consumed.load(), N);
  if (wait_all && N >= 500000)
    CHECK(peak > baseline + (64u << 20), "%s: peak RSS %.1f MiB is not above the baseline: test broken?", name,
          peak / 1048576.0);
  CHECK(after < baseline + (16u << 20),
        "%s: RSS after freeing everything and trimming is %.1f MiB over the baseline (limit 16 MiB): freed memory "
        "is stranded",
        name, ((double)after - (double)baseline) / 1048576.0);
  return after;
}

}  // namespace

int main() {
  zns = zt_zns_mode();
  if (getenv("ZT_SCALE")) N = size_t(double(N) * atof(getenv("ZT_SCALE")));
  if (N < 1000) N = 1000;
  g_p = static_cast<void **>(mmap(nullptr, N * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  g_n = static_cast<uint32_t *>(mmap(nullptr, N * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  REQUIRE(g_p != MAP_FAILED && g_n != MAP_FAILED);
  // the queue's own pages are resident for the whole run: touch them before the baseline
  memset(g_p, 0, N * sizeof(void *));
  memset(g_n, 0, N * sizeof(uint32_t));
  { std::thread warm([] { free(ZT_OPAQUE(malloc(10))); }); warm.join(); }
  release_memory();
  size_t baseline = zt_rss_bytes();
  zt_log("prodcons: mode %s, %zu blocks per phase, baseline RSS %.1f MiB", zt_mode_name(), N, baseline / 1048576.0);
  run_phase("A streaming", 8192, false, false, 1, baseline);
  run_phase("B bulk, producer alive", 0, true, false, 2, baseline);
  run_phase("C bulk, producer exited", 0, true, true, 3, baseline);
  // the heap is still healthy: reuse it
  for (int r = 0; r < 3; r++) {
    static void *v[100000];
    for (int i = 0; i < 100000; i++) {
      v[i] = malloc(size_t(i % 500) + 1);
      REQUIRE(v[i]);
      zt_fill(v[i], size_t(i % 500) + 1, uint64_t(i));
    }
    for (int i = 0; i < 100000; i++) {
      REQUIRE(zt_verify(v[i], size_t(i % 500) + 1, uint64_t(i)) < 0);
      free(v[i]);
    }
  }
  munmap(g_p, N * sizeof(void *));
  munmap(g_n, N * sizeof(uint32_t));
  return zt_finish("prodcons");
}
