// Stress 1: four threads doing random malloc / calloc / realloc / free / memalign of sizes
// 1..8192 on a shared array of slots, so most blocks are freed (or realloc'ed) by a thread other
// than the one that allocated them.  Every block carries a byte pattern derived from (block id,
// seed) over its whole requested size; it is verified before every realloc and free, so an
// overlap between two live blocks, a block handed out twice, a lost realloc copy or a stray write
// by the allocator fails the test.  Ownership is checked under ZNS-Slab (<= 4096 -> slab).
// Also: bursts of local allocate-all/free-all (whole slabs filled and emptied); a fifth thread
// that keeps calling zns_trim() and zns_stats_print() (malloc_trim(0) under glibc) while the others
// run (purging a slab that holds live blocks would zero them: the patterns catch it); and under
// ZNS-Slab a second pass in a child process with ZNS_DECAY_MS=0 ZNS_DIRTY_MAX_KB=0, so that every
// emptied slab is purged at once and comes back from the OS zero-filled.
// ZT_SCALE=<float> in the environment scales the number of operations (default 1).
#include "tests/api/zns_test.h"

#include <sys/wait.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace {

int zns;
constexpr int kThreads = 4;
constexpr unsigned kSlots = 8192;
constexpr uint64_t kSeed = 0x5eed5eed1234ULL;

struct Slot {
  std::mutex m;
  void *p = nullptr;
  size_t n = 0, align = 0;
  uint64_t key = 0;
  int tid = -1;  // allocating thread
  char pad[16];
};
Slot slots[kSlots];

std::atomic<uint64_t> ops_total{0}, cross_frees{0}, reallocs{0}, trims{0};
std::atomic<bool> workers_done{false};

void trimmer() {
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  while (!workers_done.load()) {
    if (zns) {
      zns_trim();
      REQUIRE(zns_stats_print(fd, trims % 2) == 0, "zns_stats_print failed while other threads run");
    } else {
      malloc_trim(0);
    }
    trims++;
    usleep(2000);
  }
  close(fd);
}

// Under ZNS-Slab: run this program again with purging as eager as it gets.
void purge_pass(double scale) {
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    setenv("ZNS_DECAY_MS", "0", 1);
    setenv("ZNS_DIRTY_MAX_KB", "0", 1);
    char sc[32];
    snprintf(sc, sizeof sc, "%g", scale * 0.3);
    setenv("ZT_SCALE", sc, 1);
    execl("/proc/self/exe", "mt_handoff", (char *)nullptr);
    _exit(127);
  }
  int st = 0;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
        "the pass with ZNS_DECAY_MS=0 ZNS_DIRTY_MAX_KB=0 failed: %s %d (its output is above)",
        WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
}

size_t pick_size(uint64_t r) {
  unsigned k = unsigned(r % 100);
  r >>= 8;
  if (k < 55) return size_t(r % 128) + 1;      // 1..128
  if (k < 80) return size_t(r % 896) + 129;    // 129..1024
  if (k < 95) return size_t(r % 3072) + 1025;  // 1025..4096
  return size_t(r % 4096) + 4097;              // 4097..8192
}

void check_owner(void *p, size_t n, size_t align, const char *what) {
  if (!zns) return;
  int own = zns_owns(p), want = zt_should_own(n, align);
  REQUIRE(own == want, "%s(%zu, align %zu) = %p: zns_owns %d, expected %d", what, n, align, p, own, want);
}

void verify(const Slot &s, const char *when) {
  long bad = zt_verify(s.p, s.n, s.key);
  REQUIRE(bad < 0,
          "%s: block %p (size %zu, align %zu, key %#llx, allocated by thread %d) corrupted at offset %ld "
          "(byte 0x%02x): overlapping blocks or a block handed out twice?",
          when, s.p, s.n, s.align, (unsigned long long)s.key, s.tid, bad, ((unsigned char *)s.p)[bad < 0 ? 0 : bad]);
}

// Allocate into an empty slot.
void fill_slot(Slot &s, int tid, uint64_t &rng, uint64_t key) {
  uint64_t r = zt_rand(&rng);
  size_t n = pick_size(r);
  unsigned how = unsigned((r >> 40) % 20);
  void *p;
  size_t align = 0;
  if (how < 13) {
    p = malloc(n);
    REQUIRE(p, "malloc(%zu) = NULL", n);
  } else if (how < 16) {
    p = ZT_OPAQUE(calloc(1, n));
    REQUIRE(p, "calloc(1, %zu) = NULL", n);
    long nz = zt_first_nonzero(p, n);
    REQUIRE(nz < 0, "calloc(1, %zu) = %p not zeroed at offset %ld", n, p, nz);
  } else if (how < 18) {
    align = size_t(1) << (4 + (r >> 50) % 9);  // 16..4096
    REQUIRE(posix_memalign(&p, align, n) == 0, "posix_memalign(%zu, %zu) failed", align, n);
    REQUIRE(zt_addr(p) % align == 0, "posix_memalign(%zu, %zu) = %p misaligned", align, n, p);
  } else {
    p = realloc(nullptr, n);
    REQUIRE(p, "realloc(NULL, %zu) = NULL", n);
  }
  size_t u = malloc_usable_size(p);
  REQUIRE(u >= n, "usable size %zu < %zu for %p", u, n, p);
  check_owner(p, n, align, "alloc");
  s.p = p;
  s.n = n;
  s.align = align;
  s.key = key ^ kSeed;
  s.tid = tid;
  zt_fill(p, n, s.key);
}

void burst(uint64_t &rng) {
  // a whole slab's worth and more of one class, filled, verified, freed in random order
  constexpr int N = 600;
  void *v[N];
  size_t n = pick_size(zt_rand(&rng)) % 512 + 1;
  for (int i = 0; i < N; i++) {
    v[i] = malloc(n);
    REQUIRE(v[i]);
    zt_fill(v[i], n, (uint64_t)(uintptr_t)v[i]);
  }
  for (int i = N - 1; i > 0; i--) {
    int j = int(zt_rand(&rng) % uint64_t(i + 1));
    std::swap(v[i], v[j]);
  }
  for (int i = 0; i < N; i++) {
    REQUIRE(zt_verify(v[i], n, (uint64_t)(uintptr_t)v[i]) < 0, "burst block %p (size %zu) corrupted", v[i], n);
    free(v[i]);
  }
}

void worker(int tid, uint64_t nops) {
  uint64_t rng = 0x9e3779b97f4a7c15ULL * uint64_t(tid + 1);
  uint64_t counter = 0, my_cross = 0, my_realloc = 0;
  for (uint64_t op = 0; op < nops; op++) {
    if (op % 50000 == 49999) burst(rng);
    uint64_t r = zt_rand(&rng);
    Slot &s = slots[r % kSlots];
    std::lock_guard<std::mutex> g(s.m);
    uint64_t key = (uint64_t(tid) << 56) | ++counter;
    if (!s.p) {
      fill_slot(s, tid, rng, key);
      continue;
    }
    verify(s, "before free/realloc");
    unsigned action = unsigned((r >> 32) % 8);
    if (action < 4) {  // free
      if (s.tid != tid) my_cross++;
      free(s.p);
      s.p = nullptr;
    } else if (action < 7) {  // realloc to a new random size
      size_t nn = pick_size(zt_rand(&rng));
      void *q = realloc(s.p, nn);
      REQUIRE(q, "realloc(%p, %zu) = NULL", s.p, nn);
      my_realloc++;
      size_t keep = nn < s.n ? nn : s.n;
      long bad = zt_verify(q, keep, s.key);
      REQUIRE(bad < 0, "realloc(%p [%zu], %zu) = %p lost data at offset %ld", s.p, s.n, nn, q, bad);
      REQUIRE(malloc_usable_size(q) >= nn);
      // a large block shrunk below 4097 may legitimately stay with the next allocator
      if (zns && (nn > ZT_MAX_SMALL || zns_owns(s.p))) check_owner(q, nn, 0, "realloc");
      s.p = q;
      s.n = nn;
      s.align = 0;
      s.key = key ^ kSeed;
      s.tid = tid;
      zt_fill(q, nn, s.key);
    } else {  // free and allocate again in the same slot
      free(s.p);
      s.p = nullptr;
      fill_slot(s, tid, rng, key);
    }
  }
  ops_total += nops;
  cross_frees += my_cross;
  reallocs += my_realloc;
}

}  // namespace

int main() {
  zns = zt_zns_mode();
  double scale = getenv("ZT_SCALE") ? atof(getenv("ZT_SCALE")) : 1.0;
  uint64_t per_thread = uint64_t(2500000 * scale);
  zt_log("mt_handoff: mode %s, %d threads x %llu ops", zt_mode_name(), kThreads, (unsigned long long)per_thread);
  if (zns && !getenv("ZNS_DECAY_MS")) purge_pass(scale);
  if (getenv("ZNS_DECAY_MS")) zt_log("mt_handoff: ZNS_DECAY_MS=%s ZNS_DIRTY_MAX_KB=%s", getenv("ZNS_DECAY_MS"),
                                     getenv("ZNS_DIRTY_MAX_KB") ? getenv("ZNS_DIRTY_MAX_KB") : "(default)");
  double t0 = zt_now();
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; t++) ts.emplace_back(worker, t, per_thread);
  std::thread tr(trimmer);
  for (auto &t : ts) t.join();
  workers_done = true;
  tr.join();
  double t1 = zt_now();
  unsigned live = 0;
  for (Slot &s : slots) {
    if (!s.p) continue;
    live++;
    verify(s, "final drain");
    free(s.p);
    s.p = nullptr;
  }
  zt_log("mt_handoff: %llu ops (%llu cross-thread frees, %llu reallocs, %llu trims) in %.2fs; %u blocks drained",
         (unsigned long long)ops_total.load(), (unsigned long long)cross_frees.load(),
         (unsigned long long)reallocs.load(), (unsigned long long)trims.load(), t1 - t0, live);
  CHECK(cross_frees > ops_total / 20, "too few cross-thread frees (%llu): the test is not testing what it should",
        (unsigned long long)cross_frees.load());
  if (zns) {
    int fd = open("/dev/null", O_WRONLY);
    CHECK(zns_stats_print(fd, 0) == 0);
    CHECK(zns_stats_print(fd, 1) == 0);
    close(fd);
    zns_trim();
  }
  // the heap is still fine after all that
  void *p = malloc(100);
  REQUIRE(p);
  zt_fill(p, 100, 1);
  CHECK(zt_verify(p, 100, 1) < 0);
  free(p);
  return zt_finish("mt_handoff");
}
