// Sanitizer driver: fork while other threads allocate.
// Three threads allocate, reallocate and free (verifying every block) and a fourth cycles
// page-sized blocks (every one of its mallocs and frees goes through the depot lock), while the
// main thread forks.  Each child, single-threaded (TSan does not support threads started after a
// multi-threaded fork): allocates and frees a lot with verification, verifies and frees the
// "stable" blocks the parent's threads allocated before the forks (their owners do not exist in
// the child), calls trim and the stats, and must _exit(0) within 30 s (the parent kills it then:
// a lock held across fork, or metadata left half-updated, shows up as a deadlock or a failed check).
#include <signal.h>
#include <sys/wait.h>

#include <thread>
#include <vector>

#include "tests/sanitize/san_common.h"

namespace {

constexpr int kHammers = 3, kStable = 64, kRing = 8;
san::Blk g_stable[kHammers][kStable];   // written before the forks, read-only until the end
std::atomic<bool> g_stop{false};
std::atomic<int> g_ready{0};
std::atomic<long> g_ops{0};

void hammer(int t) {
  uint64_t rng = 77 + uint64_t(t);
  for (int i = 0; i < kStable; ++i) g_stable[t][i] = san::alloc(san::pick_size(san::rnd(&rng)), 1000000 * uint64_t(t + 1) + uint64_t(i));
  g_ready++;
  std::vector<san::Blk> live(256);
  uint64_t key = 5000000 * uint64_t(t + 1);
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint64_t r = san::rnd(&rng);
    san::Blk &b = live[r % live.size()];
    if (!b.p) b = san::alloc(san::pick_size(r >> 16), key++, san::pick_align(r >> 40));
    else if (r % 5 == 0) san::realloc(b, san::pick_size(r >> 16), 0);
    else san::free(b, "hammer");
    g_ops.fetch_add(1, std::memory_order_relaxed);
  }
  for (san::Blk &b : live) san::free(b, "hammer end");
}

void cycler() {
  san::Blk ring[kRing];
  uint64_t key = 9000000;
  g_ready++;
  for (long i = 0; !g_stop.load(std::memory_order_relaxed); ++i) {
    san::Blk &b = ring[i % kRing];
    san::free(b, "cycler");
    b = san::alloc(4096, key++);
  }
  for (san::Blk &b : ring) san::free(b, "cycler end");
}

[[noreturn]] void child_main(int round) {
  uint64_t rng = 4242 + uint64_t(round);
  std::vector<san::Blk> live(512);
  uint64_t key = 7000000 + uint64_t(round) * 100000;
  for (int i = 0; i < 20000; ++i) {
    uint64_t r = san::rnd(&rng);
    san::Blk &b = live[r % live.size()];
    if (!b.p) b = san::alloc(san::pick_size(r >> 16), key++, san::pick_align(r >> 40));
    else if (r % 4 == 0) san::realloc(b, san::pick_size(r >> 16), 0);
    else san::free(b, "child");
  }
  for (auto &row : g_stable)   // blocks of threads that do not exist here
    for (san::Blk &b : row) san::free(b, "child: parent's stable block");
  for (san::Blk &b : live) san::free(b, "child end");
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  san::stats_round(fd, unsigned(round));
  close(fd);
  fflush(stdout);
  _exit(0);
}

}  // namespace

int main() {
  double t0 = san::now();
  std::vector<std::thread> ts;
  for (int t = 0; t < kHammers; ++t) ts.emplace_back(hammer, t);
  ts.emplace_back(cycler);
  while (g_ready.load() < kHammers + 1) usleep(1000);
  long forks = san::scaled(40);
  for (long f = 0; f < forks; ++f) {
    usleep(5000);
    pid_t pid = fork();
    SAN_REQUIRE(pid >= 0, "fork failed");
    if (pid == 0) child_main(int(f));
    int st = 0;
    double deadline = san::now() + 30;
    pid_t w;
    while ((w = waitpid(pid, &st, WNOHANG)) == 0 && san::now() < deadline) usleep(2000);
    if (w == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      SAN_REQUIRE(false, "child %ld did not exit within 30 s (deadlock after fork?)", f);
    }
    SAN_REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %ld failed: status 0x%x", f, st);
  }
  g_stop = true;
  for (std::thread &t : ts) t.join();
  for (auto &row : g_stable)
    for (san::Blk &b : row) san::free(b, "parent: stable block");
  zns::trim();
  uint64_t live = san::live_blocks();
  SAN_REQUIRE(live == 0, "%llu blocks still live after everything was freed", (unsigned long long)live);
  printf("fork: ok (%ld forks, %ld ops in the parent's threads, %.1f s)\n", forks, g_ops.load(), san::now() - t0);
  return 0;
}
