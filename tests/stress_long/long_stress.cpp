// Long stress (issue 6, `make stress`): many threads for minutes, run under
// LD_PRELOAD=build/libzns_slab.so by tests/stress_long/run.sh.  Every block carries a byte pattern
// over its whole requested size, written when it is allocated and verified in full before every
// free and realloc and whenever a thread takes it over; so a block handed out twice, an overlap,
// a lost realloc copy, or a stray write by the allocator fails the run.
//
//   workers      STRESS_THREADS (16) threads, each with a random lifetime (5k..150k operations):
//                malloc / calloc / realloc / memalign / posix_memalign / aligned_alloc / free on a
//                private set of 1024 slots (sizes mostly <= 4096, 1% up to 32 KiB: the next
//                allocator), a full re-verification of the set every 20k operations, and:
//   mailboxes    16384 shared boxes: a worker swaps one of its blocks into a random box and adopts
//                whatever was there (allocated by another thread, often one that has exited since),
//                so blocks travel between threads and are freed far from where they were made;
//   conveyor     batches of 64 blocks of one size allocated by one thread, freed by another (batch
//                free after batch malloc: remote frees into shared slabs);
//   churn        a worker that reaches the end of its life leaves a quarter of its blocks in the
//                mailboxes, frees the rest, allocates in a thread_local destructor, and exits; the
//                main thread starts a replacement.  The main thread also starts short "flash"
//                threads (a few blocks into the mailboxes, then exit) all the time;
//   monitor      zns_trim() and zns_stats_print() (text and JSON) in parallel, RSS sampled every
//                250 ms, a progress line every 10 s, a fork every 5 s (the child allocates, frees
//                and verifies, then _exit(0)s; it must finish within 30 s), and a watchdog: no
//                progress for 60 s is a deadlock.
// RSS bounds: RSS - baseline <= STRESS_RSS_MB (768) at every sample; the peak RSS of the last
// third of the run must not exceed that of the first third (after warm-up) by more than
// max(64 MiB, 25%) (a leak grows with time); and after everything is freed, zns_trim() and
// malloc_trim(0), RSS must be back within 64 MiB of the baseline, and the heap's statistics must
// count (almost) no live bytes: a block lost inside the heap shows there even when RSS hides it.
// STRESS_STATS=1 adds the heap's statistics (zns_stats_print) to every progress line.
// Exit status 0 when all is well; any failed check prints a line and exits 1 at once.
#include "tests/api/zns_test.h"

#include <pthread.h>
#include <sys/mman.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

namespace {

int zns;

struct Blk {
  void *p;
  uint32_t n;
  uint16_t align;   // 0 for malloc/calloc/realloc'ed blocks
  uint16_t owned;   // from ZNS-Slab's region (zns_owns): decided at allocation, kept by realloc
  uint64_t key;
};

std::atomic<uint64_t> g_key{1};
std::atomic<bool> g_stop{false};
std::atomic<uint64_t> g_ops{0}, g_handoffs{0}, g_workers{0}, g_flash{0}, g_conveyed{0}, g_forks{0},
    g_tls_dtors{0}, g_large{0};
std::atomic<int64_t> g_live_bytes{0};
std::atomic<uint64_t> g_verified{0};   // bytes verified

size_t pick_size(uint64_t r) {
  unsigned k = unsigned(r % 1000);
  r >>= 10;
  if (k < 600) return size_t(r % 128) + 1;        // 1..128
  if (k < 900) return size_t(r % 896) + 129;      // 129..1024
  if (k < 990) return size_t(r % 3072) + 1025;    // 1025..4096
  return size_t(r % 28672) + 4097;                // 4097..32768: the next allocator
}

void check(const Blk &b, const char *where) {
  long bad = zt_verify(b.p, b.n, b.key);
  REQUIRE(bad < 0, "%s: block %p (%u bytes, align %u, key %llu) corrupted at offset %ld", where, b.p, b.n, b.align,
          (unsigned long long)b.key, bad);
  if (zns) REQUIRE(zns_owns(b.p) == int(b.owned), "%s: ownership of %p (%u bytes) changed", where, b.p, b.n);
  g_verified.fetch_add(b.n, std::memory_order_relaxed);
}

Blk make(uint64_t seed) {
  uint64_t s = seed;
  size_t n = pick_size(zt_rand(&s));
  uint64_t r = zt_rand(&s);
  unsigned how = unsigned(r % 16);
  size_t align = 0;
  void *p = nullptr;
  if (how < 9) {
    p = malloc(n);
  } else if (how < 12) {
    size_t k = (r >> 8) % 4 + 1;   // calloc(n/k rounded up, k) asks for at least n bytes
    size_t cnt = (n + k - 1) / k;
    n = cnt * k;
    p = calloc(cnt, k);
    REQUIRE(p, "calloc(%zu, %zu) = NULL", cnt, k);
    long nz = zt_first_nonzero(p, n);
    REQUIRE(nz < 0, "calloc(%zu, %zu) = %p not zeroed at offset %ld", cnt, k, p, nz);
  } else {
    align = size_t(1) << (3 + (r >> 8) % 11);   // 8 .. 8192
    if (n > 4096 && align > 64) align = 64;     // keep the big ones cheap
    switch ((r >> 16) % 3) {
      case 0: REQUIRE(zt_posix_memalign(&p, align, n) == 0, "posix_memalign(%zu, %zu) failed", align, n); break;
      case 1: p = aligned_alloc(align, (n + align - 1) / align * align); break;
      default: p = memalign(align, n); break;
    }
  }
  REQUIRE(p, "allocation of %zu bytes (align %zu, how %u) = NULL", n, align, how);
  // 16-byte aligned (8 for an 8 B block asked for without an alignment above 8), or `align`
  size_t want = align > 16 ? align : n > 8 || align > 8 ? 16 : 8;
  REQUIRE(zt_addr(p) % want == 0, "%p (%zu bytes) not aligned to %zu", p, n, want);
  REQUIRE(malloc_usable_size(p) >= n, "malloc_usable_size(%p) = %zu < %zu", p, malloc_usable_size(p), n);
  if (zns) REQUIRE(zns_owns(p) == zt_should_own(n, align), "zns_owns(%p) for %zu bytes align %zu", p, n, align);
  if (n > 4096) g_large.fetch_add(1, std::memory_order_relaxed);
  int owned = zt_should_own(n, align);
  Blk b{p, uint32_t(n), uint16_t(align), uint16_t(owned), g_key.fetch_add(1, std::memory_order_relaxed)};
  zt_fill(p, n, b.key);
  g_live_bytes.fetch_add(int64_t(n), std::memory_order_relaxed);
  return b;
}

void drop(Blk &b, const char *where) {
  if (!b.p) return;
  check(b, where);
  free(b.p);
  g_live_bytes.fetch_sub(int64_t(b.n), std::memory_order_relaxed);
  b = Blk{};
}

void resize(Blk &b, size_t n) {
  check(b, "before realloc");
  void *q = realloc(b.p, n);
  REQUIRE(q, "realloc(%p, %zu) = NULL", b.p, n);
  size_t keep = n < b.n ? n : b.n;
  long bad = zt_verify(q, keep, b.key);
  REQUIRE(bad < 0, "realloc(%p, %zu) = %p lost the contents at offset %ld (of %zu kept)", b.p, n, q, bad, keep);
  REQUIRE(malloc_usable_size(q) >= n, "malloc_usable_size after realloc");
  // A slab block moves to the next allocator when it grows past 4 KiB; the next allocator's blocks
  // stay there whatever the size (its realloc keeps them).
  int owned = b.owned && n <= ZT_MAX_SMALL;
  if (zns) REQUIRE(zns_owns(q) == owned, "zns_owns(realloc(%p, %zu) = %p) != %d", b.p, n, q, owned);
  if (n > keep) zt_fill(q, n, b.key);   // the pattern's prefix is already there
  g_live_bytes.fetch_add(int64_t(n) - int64_t(b.n), std::memory_order_relaxed);
  b.p = q;
  b.n = uint32_t(n);
  b.align = 0;
  b.owned = uint16_t(owned);
}

// ---- mailboxes ----------------------------------------------------------------------------------
constexpr unsigned kBoxes = 16384, kBoxLocks = 1024;
Blk g_box[kBoxes];
std::mutex g_box_mu[kBoxLocks];

// Puts `b` in box i and returns what was there (verified: it is now the caller's).
Blk swap_box(unsigned i, Blk b) {
  Blk out;
  {
    std::lock_guard<std::mutex> g(g_box_mu[i % kBoxLocks]);
    out = g_box[i];
    g_box[i] = b;
  }
  if (out.p) check(out, "taken from a mailbox");
  g_handoffs.fetch_add(1, std::memory_order_relaxed);
  return out;
}

// ---- the conveyor: batches allocated by one thread, freed by another ------------------------------
constexpr unsigned kBatch = 64, kBelt = 64;
struct Batch {
  Blk b[kBatch];
};
Batch g_belt[kBelt];
unsigned g_belt_head, g_belt_count;
std::mutex g_belt_mu;

bool belt_push(const Batch &x) {
  std::lock_guard<std::mutex> g(g_belt_mu);
  if (g_belt_count == kBelt) return false;
  g_belt[(g_belt_head + g_belt_count++) % kBelt] = x;
  return true;
}
bool belt_pop(Batch *x) {
  std::lock_guard<std::mutex> g(g_belt_mu);
  if (g_belt_count == 0) return false;
  *x = g_belt[g_belt_head];
  g_belt_head = (g_belt_head + 1) % kBelt;
  g_belt_count--;
  return true;
}

// ---- workers ----------------------------------------------------------------------------------------
struct TlsGoodbye {   // allocates at thread exit, after the worker's own code is done
  bool armed = false;
  ~TlsGoodbye() {
    if (!armed) return;
    uint64_t r = g_key.load() * 0x9E3779B97F4A7C15ULL;
    Blk a = make(zt_rand(&r)), b = make(zt_rand(&r));
    drop(a, "thread_local destructor");
    Blk out = swap_box(unsigned(zt_rand(&r) % kBoxes), b);
    drop(out, "thread_local destructor (mailbox)");
    g_tls_dtors.fetch_add(1, std::memory_order_relaxed);
  }
};
thread_local TlsGoodbye t_goodbye;

constexpr unsigned kLocal = 1024;

void worker(uint64_t seed, std::atomic<bool> *done) {
  t_goodbye.armed = true;
  uint64_t rng = seed * 0x9E3779B97F4A7C15ULL + 1;
  Blk local[kLocal] = {};   // on the stack, not in the heap
  long life = long(zt_rand(&rng) % 145000) + 5000;
  long ops = 0;
  Batch batch;
  for (; ops < life && !g_stop.load(std::memory_order_relaxed); ++ops) {
    uint64_t r = zt_rand(&rng);
    Blk &b = local[(r >> 20) % kLocal];
    unsigned what = unsigned(r % 100);
    if (what < 35) {                       // allocate (or replace)
      drop(b, "replaced");
      b = make(zt_rand(&rng));
    } else if (what < 60) {                // free
      drop(b, "free");
    } else if (what < 72) {                // realloc
      if (b.p) resize(b, pick_size(zt_rand(&rng)));
      else b = make(zt_rand(&rng));
    } else if (what < 97) {                // hand a block over through a mailbox
      if (!b.p) b = make(zt_rand(&rng));
      b = swap_box(unsigned(zt_rand(&rng) % kBoxes), b);
    } else if (what < 99) {                // conveyor: take a batch and free it, else make one
      if (belt_pop(&batch)) {
        for (Blk &x : batch.b) drop(x, "conveyor");
        g_conveyed.fetch_add(1, std::memory_order_relaxed);
      } else {
        uint64_t s = zt_rand(&rng);
        for (Blk &x : batch.b) x = make(s);   // one size for the whole batch
        if (!belt_push(batch))
          for (Blk &x : batch.b) drop(x, "conveyor (belt full)");
      }
    } else {                                // a burst: fill and empty slabs of one class
      uint64_t s = zt_rand(&rng);
      Blk burst[128];
      for (Blk &x : burst) x = make(s);
      for (Blk &x : burst) drop(x, "burst");
    }
    if (ops % 20000 == 19999)
      for (const Blk &x : local)
        if (x.p) check(x, "periodic scan");
    if ((ops & 255) == 255) g_ops.fetch_add(256, std::memory_order_relaxed);
  }
  g_ops.fetch_add(uint64_t(ops & 255), std::memory_order_relaxed);
  // End of life: a quarter of the blocks outlive the thread in the mailboxes, the rest is freed.
  for (unsigned i = 0; i < kLocal; ++i) {
    Blk &b = local[i];
    if (!b.p) continue;
    if (i % 4 == 0) {
      Blk out = swap_box(unsigned(zt_rand(&rng) % kBoxes), b);
      drop(out, "worker exit (mailbox)");
      b = Blk{};
    } else {
      drop(b, "worker exit");
    }
  }
  done->store(true, std::memory_order_release);
}

void flash(uint64_t seed) {
  uint64_t rng = seed * 0xD1B54A32D192ED03ULL + 7;
  unsigned n = unsigned(zt_rand(&rng) % 20) + 1;
  for (unsigned i = 0; i < n; ++i) {
    Blk b = make(zt_rand(&rng));
    Blk out = swap_box(unsigned(zt_rand(&rng) % kBoxes), b);
    drop(out, "flash thread");
  }
  g_flash.fetch_add(1, std::memory_order_relaxed);
}

// ---- fork: a child that allocates, verifies and leaves ------------------------------------------------
[[noreturn]] void child_body(uint64_t seed) {
  uint64_t rng = seed;
  static Blk set[256];
  for (int i = 0; i < 20000; ++i) {
    uint64_t r = zt_rand(&rng);
    Blk &b = set[(r >> 24) % 256];
    if (b.p && r % 3 == 0) resize(b, pick_size(zt_rand(&rng)));
    else if (b.p) drop(b, "child");
    else b = make(zt_rand(&rng));
  }
  for (Blk &b : set) drop(b, "child end");
  _exit(0);
}

void fork_once(uint64_t seed) {
  pid_t pid = fork();
  REQUIRE(pid >= 0, "fork failed: %s", strerror(errno));
  if (pid == 0) child_body(seed);
  int st = 0;
  double deadline = zt_now() + 30;
  pid_t w;
  while ((w = waitpid(pid, &st, WNOHANG)) == 0 && zt_now() < deadline) usleep(5000);
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    REQUIRE(false, "forked child %d did not finish within 30 s (deadlock after fork?)", (int)pid);
  }
  REQUIRE(WIFEXITED(st) && WEXITSTATUS(st) == 0, "forked child failed: status 0x%x", st);
  g_forks.fetch_add(1, std::memory_order_relaxed);
}

// ---- monitor ----------------------------------------------------------------------------------------
struct Rss {
  size_t baseline = 0, peak = 0, early_peak = 0, late_peak = 0;
};
Rss g_rss;

double env_num(const char *name, double def) {
  const char *s = getenv(name);
  return s && *s ? atof(s) : def;
}

void monitor(double seconds, size_t rss_cap) {
  double t0 = zt_now(), last_print = t0, last_fork = t0, last_progress_t = t0;
  uint64_t last_ops = 0;
  int fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
  unsigned tick = 0;
  for (;;) {
    usleep(250000);
    double now = zt_now(), t = now - t0;
    ++tick;
    size_t rss = zt_rss_bytes();
    size_t grown = rss > g_rss.baseline ? rss - g_rss.baseline : 0;
    if (rss > g_rss.peak) g_rss.peak = rss;
    REQUIRE(grown <= rss_cap, "RSS %zu MiB over the baseline (cap %zu MiB) at %.0f s", grown >> 20, rss_cap >> 20, t);
    if (t >= seconds * 0.1 && t < seconds / 3 && rss > g_rss.early_peak) g_rss.early_peak = rss;
    if (t >= seconds * 2 / 3 && rss > g_rss.late_peak) g_rss.late_peak = rss;
    uint64_t ops = g_ops.load();
    if (ops != last_ops) {
      last_ops = ops;
      last_progress_t = now;
    }
    REQUIRE(now - last_progress_t < 60, "no progress for 60 s at %.0f s (deadlock?)", t);
    if (zns) {
      if (tick % 4 == 0) zns_trim();
      if (tick % 8 == 0) REQUIRE(zns_stats_print(fd, (tick / 8) % 2) == 0, "zns_stats_print failed");
    } else if (tick % 4 == 0) {
      malloc_trim(0);
    }
    if (now - last_fork >= 5 && t < seconds - 1) {
      fork_once(ops + tick);
      last_fork = now;
    }
    if (now - last_print >= 10 || t >= seconds) {
      zt_log("[%4.0fs] %.1f M ops, %llu workers + %llu flash threads, %.1f M handoffs, %llu batches, %llu forks, "
             "live %.1f MiB, RSS %.1f MiB (+%.1f), verified %.1f GiB",
             t, double(ops) / 1e6, (unsigned long long)g_workers.load(), (unsigned long long)g_flash.load(),
             double(g_handoffs.load()) / 1e6, (unsigned long long)g_conveyed.load(), (unsigned long long)g_forks.load(),
             double(g_live_bytes.load()) / 1048576.0, double(rss) / 1048576.0, double(grown) / 1048576.0,
             double(g_verified.load()) / 1073741824.0);
      if (zns && getenv("STRESS_STATS")) zns_stats_print(2, 0);   // the heap's view, on demand
      last_print = now;
    }
    if (t >= seconds) break;
  }
  close(fd);
  g_stop = true;
}

// totals.live_bytes from the JSON statistics (zns_stats_print), or -1.
int64_t heap_live_bytes() {
  int fd = memfd_create("zns-stats", MFD_CLOEXEC);
  REQUIRE(fd >= 0, "memfd_create: %s", strerror(errno));
  REQUIRE(zns_stats_print(fd, 1) == 0, "zns_stats_print failed");
  static char buf[1 << 20];
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  const char *t = strstr(buf, "\"totals\"");
  const char *l = t ? strstr(t, "\"live_bytes\":") : nullptr;
  return l ? int64_t(strtoll(l + strlen("\"live_bytes\":"), nullptr, 10)) : -1;
}

}  // namespace

int main() {
  zt_no_core_dumps();
  zns = zt_zns_mode();
  double seconds = env_num("STRESS_SECONDS", 180);
  unsigned nthreads = unsigned(env_num("STRESS_THREADS", 16));
  size_t rss_cap = size_t(env_num("STRESS_RSS_MB", 768)) << 20;
  if (nthreads < 2) nthreads = 2;
  alarm(unsigned(seconds) + 300);   // a hang anywhere (even in the monitor) ends the run
  zt_log("long_stress: %s, %.0f s, %u worker threads, RSS cap +%zu MiB", zt_mode_name(), seconds, nthreads, rss_cap >> 20);
  g_rss.baseline = zt_rss_bytes();

  std::thread mon(monitor, seconds, rss_cap);
  std::vector<std::thread> ws(nthreads);
  std::vector<std::atomic<bool>> done(nthreads);
  uint64_t seed = 1;
  for (unsigned i = 0; i < nthreads; ++i) {
    done[i] = false;
    ws[i] = std::thread(worker, seed++, &done[i]);
    g_workers++;
  }
  while (!g_stop.load()) {
    for (unsigned i = 0; i < nthreads; ++i)   // churn: replace the workers that ended their life
      if (done[i].load(std::memory_order_acquire)) {
        ws[i].join();
        done[i] = false;
        if (!g_stop.load()) {
          ws[i] = std::thread(worker, seed++, &done[i]);
          g_workers++;
        }
      }
    std::thread f[4];   // and a handful of short-lived threads
    for (std::thread &t : f) t = std::thread(flash, seed++);
    for (std::thread &t : f) t.join();
    usleep(20000);
  }
  for (unsigned i = 0; i < nthreads; ++i)
    if (ws[i].joinable()) ws[i].join();
  mon.join();

  // Everything left: the mailboxes and the conveyor, verified and freed by the main thread.
  size_t left = 0;
  for (Blk &b : g_box)
    if (b.p) {
      drop(b, "final mailbox");
      ++left;
    }
  Batch batch;
  while (belt_pop(&batch))
    for (Blk &x : batch.b) drop(x, "final conveyor");
  CHECK(g_live_bytes.load() == 0, "live bytes after freeing everything: %lld", (long long)g_live_bytes.load());
  if (zns) {
    zns_trim();   // also applies this thread's buffered frees
    // The heap's own count: nothing may stay live but the few small blocks this program still
    // holds (its vectors of threads and flags).  A block that is lost inside the heap (freed but
    // never made free again) shows up here even when RSS hides it.
    int64_t heap_live = heap_live_bytes();
    zt_log("long_stress: heap live bytes after freeing everything: %lld", (long long)heap_live);
    CHECK(heap_live >= 0 && heap_live <= (int64_t(1) << 20), "the heap still counts %lld live bytes", (long long)heap_live);
  }
  malloc_trim(0);
  size_t end_rss = zt_rss_bytes();
  size_t end_grown = end_rss > g_rss.baseline ? end_rss - g_rss.baseline : 0;
  zt_log("long_stress: end: %zu blocks left in mailboxes freed; RSS baseline %.1f MiB, peak %.1f MiB, "
         "first-third peak %.1f MiB, last-third peak %.1f MiB, after free+trim %.1f MiB",
         left, double(g_rss.baseline) / 1048576.0, double(g_rss.peak) / 1048576.0, double(g_rss.early_peak) / 1048576.0,
         double(g_rss.late_peak) / 1048576.0, double(end_rss) / 1048576.0);
  CHECK(end_grown <= (size_t(64) << 20), "RSS after freeing everything and trimming is %zu MiB over the baseline",
        end_grown >> 20);
  if (g_rss.early_peak && g_rss.late_peak) {
    size_t allowance = g_rss.early_peak / 4 > (size_t(64) << 20) ? g_rss.early_peak / 4 : (size_t(64) << 20);
    CHECK(g_rss.late_peak <= g_rss.early_peak + allowance,
          "RSS keeps growing: peak %zu MiB in the last third vs %zu MiB in the first (allowance %zu MiB)",
          g_rss.late_peak >> 20, g_rss.early_peak >> 20, allowance >> 20);
  }
  CHECK(g_tls_dtors.load() > 0, "no thread_local destructor ran");
  CHECK(g_forks.load() > 0 || seconds < 6, "no fork happened");
  zt_log("long_stress: %.1f M ops, %llu worker threads, %llu flash threads, %.1f M handoffs, %llu conveyor batches, "
         "%llu forks, %llu large blocks, %.1f GiB verified",
         double(g_ops.load()) / 1e6, (unsigned long long)g_workers.load(), (unsigned long long)g_flash.load(),
         double(g_handoffs.load()) / 1e6, (unsigned long long)g_conveyed.load(), (unsigned long long)g_forks.load(),
         (unsigned long long)g_large.load(), double(g_verified.load()) / 1073741824.0);
  return zt_finish("long_stress");
}
