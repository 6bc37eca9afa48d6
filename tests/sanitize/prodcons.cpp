// Sanitizer driver: producer / consumer.  Every free is a cross-thread free.
//   round 1 (streaming): the consumer follows the producer through a bounded ring (acquire /
//            release indices), so the producer keeps allocating from slabs the consumer frees into;
//   round 2 (bulk, producer gone): the producer allocates every block and exits; only then does
//            the consumer free them (slabs of an exited thread's cache: shared, settled, returned);
//   round 3: two producers and two consumers on two rings, crosswise.
// Blocks are verified by the consumer.  At the end no block may be left live.
#include <thread>
#include <vector>

#include "tests/sanitize/san_common.h"

namespace {

struct Ring {
  static constexpr size_t kCap = 4096;
  san::Blk slot[kCap];
  std::atomic<size_t> head{0}, tail{0};   // head: next to write (producer), tail: next to read
  void push(const san::Blk &b) {
    size_t h = head.load(std::memory_order_relaxed);
    while (h - tail.load(std::memory_order_acquire) == kCap) std::this_thread::yield();
    slot[h % kCap] = b;
    head.store(h + 1, std::memory_order_release);
  }
  san::Blk pop() {
    size_t t = tail.load(std::memory_order_relaxed);
    while (head.load(std::memory_order_acquire) == t) std::this_thread::yield();
    san::Blk b = slot[t % kCap];
    tail.store(t + 1, std::memory_order_release);
    return b;
  }
};

void produce(Ring &q, long n, uint64_t seed) {
  uint64_t rng = seed;
  for (long i = 0; i < n; ++i) {
    uint64_t r = san::rnd(&rng);
    q.push(san::alloc(san::pick_size(r), seed ^ uint64_t(i), san::pick_align(r >> 32)));
  }
}
void consume(Ring &q, long n) {
  for (long i = 0; i < n; ++i) {
    san::Blk b = q.pop();
    san::free(b, "consumer");
  }
}

}  // namespace

int main() {
  double t0 = san::now();
  long n = san::scaled(300000);
  {
    static Ring q;
    std::thread p(produce, std::ref(q), n, 1);
    std::thread c(consume, std::ref(q), n);
    p.join();
    c.join();
  }
  {
    long m = san::scaled(100000);
    std::vector<san::Blk> all(static_cast<size_t>(m));
    std::thread([&] {
      uint64_t rng = 2;
      for (long i = 0; i < m; ++i) all[size_t(i)] = san::alloc(san::pick_size(san::rnd(&rng)), 2000000 + uint64_t(i));
    }).join();
    std::thread([&] { for (san::Blk &b : all) san::free(b, "bulk"); }).join();
  }
  {
    static Ring a, b;
    long k = san::scaled(100000);
    std::thread p1(produce, std::ref(a), k, 3), p2(produce, std::ref(b), k, 4);
    std::thread c1(consume, std::ref(b), k), c2(consume, std::ref(a), k);
    p1.join();
    p2.join();
    c1.join();
    c2.join();
  }
  zns::trim();
  uint64_t live = san::live_blocks();
  SAN_REQUIRE(live == 0, "%llu blocks still live after everything was freed", (unsigned long long)live);
  printf("prodcons: ok (%.1f s)\n", san::now() - t0);
  return 0;
}
