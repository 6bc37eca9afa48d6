// Sanitizer driver: thread churn.  Short-lived threads, four at a time: each allocates and frees,
// frees blocks left behind by earlier (exited) threads, leaves blocks behind itself, and allocates
// at the end of its life:
//   - in a C++ thread_local destructor (before the heap's own per-thread teardown);
//   - in a pthread key destructor created after the heap's key, so it runs after the thread's cache
//     was handed back (the orphan cache serves it), and re-arms itself once (a second round).
// The main thread frees whatever is left; the number of thread caches must stay small (the caches
// of exited threads are reused) and no block may be left live.
#include <pthread.h>

#include <mutex>
#include <thread>
#include <vector>

#include "tests/sanitize/san_common.h"

namespace {

std::mutex g_mu;
std::vector<san::Blk> g_left;   // blocks left behind for others
std::atomic<uint64_t> g_keys{1};
pthread_key_t g_key;
std::atomic<long> g_late{0}, g_tl{0};

void deposit(const san::Blk &b) {
  std::lock_guard<std::mutex> g(g_mu);
  g_left.push_back(b);
}
san::Blk withdraw() {
  std::lock_guard<std::mutex> g(g_mu);
  if (g_left.empty()) return san::Blk{};
  san::Blk b = g_left.back();
  g_left.pop_back();
  return b;
}

struct TlsObject {   // its destructor allocates, frees, and leaves a block behind
  san::Blk own;
  ~TlsObject() {
    san::free(own, "thread_local");
    san::Blk a = san::alloc(100, g_keys++), b = san::alloc(3000, g_keys++);
    san::free(a, "thread_local");
    deposit(b);
    g_tl++;
  }
};
thread_local TlsObject t_obj;

// Runs after the heap's own destructor (a key created later runs later): the orphan cache.
void late_destructor(void *arg) {
  uintptr_t round = uintptr_t(arg);
  san::Blk b = withdraw();
  san::free(b, "late");
  san::Blk a = san::alloc(48, g_keys++), c = san::alloc(700, g_keys++);
  san::free(a, "late");
  deposit(c);
  g_late++;
  if (round == 1) pthread_setspecific(g_key, reinterpret_cast<void *>(2));   // once more
}

void life(int id) {
  uint64_t rng = 0x1234567ULL + uint64_t(id);
  t_obj.own = san::alloc(256, g_keys++);
  pthread_setspecific(g_key, reinterpret_cast<void *>(1));
  std::vector<san::Blk> mine;
  for (int i = 0; i < 120; ++i) {
    uint64_t r = san::rnd(&rng);
    mine.push_back(san::alloc(san::pick_size(r), g_keys++, san::pick_align(r >> 32)));
    if (r % 3 == 0) {
      san::Blk b = withdraw();
      san::free(b, "inherited");
    }
  }
  for (size_t i = 0; i < mine.size(); ++i) {
    if (i % 4 == 0) deposit(mine[i]);
    else san::free(mine[i], "own");
  }
}

}  // namespace

int main() {
  double t0 = san::now();
  san::Blk first = san::alloc(16, 0);   // the heap's key exists now: ours is created after it
  san::free(first);
  SAN_REQUIRE(pthread_key_create(&g_key, late_destructor) == 0);
  long n = san::scaled(1200);
  zns::HeapSnapshot h0;
  zns::heap_snapshot(&h0);
  for (long i = 0; i < n; i += 4) {
    std::vector<std::thread> ts;
    for (int k = 0; k < 4; ++k) ts.emplace_back(life, int(i + k));
    for (std::thread &t : ts) t.join();
  }
  for (san::Blk &b : g_left) san::free(b, "main");
  g_left.clear();
  zns::HeapSnapshot h1;
  zns::heap_snapshot(&h1);
  SAN_REQUIRE(h1.caches <= h0.caches + 8, "thread caches grew from %llu to %llu", (unsigned long long)h0.caches,
              (unsigned long long)h1.caches);
  SAN_REQUIRE(g_late.load() >= 2 * (n / 4) * 4, "late destructors ran %ld times", g_late.load());
  zns::trim();
  uint64_t live = san::live_blocks();
  SAN_REQUIRE(live == 0, "%llu blocks still live after everything was freed", (unsigned long long)live);
  printf("churn: ok (%ld threads, %ld thread_local and %ld late destructor rounds, %llu caches, %.1f s)\n",
         (n + 3) / 4 * 4, g_tl.load(), g_late.load(), (unsigned long long)h1.caches, san::now() - t0);
  return 0;
}
