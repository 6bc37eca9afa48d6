// Sanitizer driver: cross-thread frees, with trim and stats in parallel.
// Four threads do random malloc / memalign / realloc / free on a shared array of slots (each slot
// under its own mutex), so most blocks are freed or reallocated by a thread other than the one that
// allocated them: remote frees into live owners' slabs (inbox, merge), into shared slabs (settle,
// adoption, return to the depot).  Each thread also fills and empties whole slabs in bursts.  A
// fifth thread keeps calling zns::trim(), zns::heap_snapshot() and zns::stats_print() (text and
// JSON) while they run.  At the end everything is freed and no block may be left live.
#include <mutex>
#include <thread>
#include <vector>

#include "tests/sanitize/san_common.h"

namespace {

constexpr int kThreads = 4;
constexpr unsigned kSlots = 2048;

struct Slot {
  std::mutex m;
  san::Blk b;
};
Slot g_slots[kSlots];
std::atomic<bool> g_done{false};
std::atomic<uint64_t> g_keys{1}, g_ops{0}, g_stats{0};

void worker(int t, long ops) {
  uint64_t rng = 0x9e3779b97f4a7c15ULL * uint64_t(t + 1);
  std::vector<san::Blk> burst;
  for (long i = 0; i < ops; ++i) {
    uint64_t r = san::rnd(&rng);
    if (i % 4000 == 3999) {   // a burst: whole slabs of one class filled, then emptied
      size_t n = san::pick_size(r);
      for (int k = 0; k < 300; ++k) burst.push_back(san::alloc(n, g_keys++));
      for (san::Blk &b : burst) san::free(b, "burst");
      burst.clear();
      continue;
    }
    Slot &s = g_slots[(r >> 16) % kSlots];
    std::lock_guard<std::mutex> g(s.m);
    unsigned what = unsigned(r % 10);
    if (!s.b.p) {
      s.b = san::alloc(san::pick_size(r >> 24), g_keys++, san::pick_align(r >> 40));
    } else if (what < 3) {
      san::realloc(s.b, san::pick_size(r >> 24), 0);
    } else {
      san::free(s.b, "handoff");
    }
  }
  g_ops += uint64_t(ops);
}

void stats_thread() {
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  SAN_REQUIRE(fd >= 0);
  for (unsigned i = 0; !g_done.load(); ++i) {
    san::stats_round(fd, i);
    g_stats++;
    usleep(2000);
  }
  close(fd);
}

}  // namespace

int main() {
  long ops = san::scaled(200000);
  double t0 = san::now();
  std::thread st(stats_thread);
  for (int round = 0; round < 2; ++round) {   // the second round adopts the first round's caches
    std::vector<std::thread> ts;
    for (int t = 0; t < kThreads; ++t) ts.emplace_back(worker, t + round * kThreads, ops);
    for (std::thread &t : ts) t.join();
  }
  g_done = true;
  st.join();
  for (Slot &s : g_slots) san::free(s.b, "final");
  zns::trim();
  uint64_t live = san::live_blocks();
  SAN_REQUIRE(live == 0, "%llu blocks still live after everything was freed", (unsigned long long)live);
  printf("handoff: ok (%llu ops, %llu stats rounds, %.1f s)\n", (unsigned long long)g_ops.load(),
         (unsigned long long)g_stats.load(), san::now() - t0);
  return 0;
}
