// Stress 2: thread churn.  3000 short-lived threads, created and joined four at a time.  Each one
// allocates and frees a few hundred blocks and leaves some behind for the main thread to free
// (frees of blocks whose allocating thread is gone), and exercises the end of a thread's life:
//   - a C++ thread_local object whose destructor verifies/frees its memory, allocates more, and
//     leaves a block behind;
//   - a pthread key whose destructor frees memory, allocates again and re-arms itself, so a
//     second destructor round frees after the allocator's own per-thread teardown;
//   - threads that leave through pthread_exit from a nested call;
//   - threads whose very first allocation happens inside a key destructor (after they would
//     have torn down a cache, had they had one);
//   - threads whose thread_local destructor does a lot of C++ allocation (vector/string growth).
// At the end every left-behind block is verified and freed, zns_trim() is called, and the RSS
// (from /proc/self/statm) must be within 64 MiB of the start, and must not keep growing between
// the first third of the run and the end (per-thread leaks grow linearly with thread count).
// ZT_SCALE scales the number of threads.
#include "tests/api/zns_test.h"

#include <pthread.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

namespace {

int zns;
constexpr int kBatch = 4;
pthread_key_t g_key;
char g_marker;  // key value for "this thread has not allocated yet"

// ---- blocks left behind for the main thread ----------------------------------------------------
struct Left {
  void *p;
  size_t n;
  uint64_t key;
  int tid;
};
std::mutex g_left_mu;
Left *g_left;  // capacity kLeftCap, allocated by main
size_t g_nleft;
constexpr size_t kLeftCap = 1 << 16;

std::atomic<long> g_tl_ctor{0}, g_tl_dtor{0}, g_key_round1{0}, g_key_round2{0}, g_key_late_first{0},
    g_deposited{0}, g_freed_by_main{0}, g_pthread_exit{0};

void deposit(void *p, size_t n, uint64_t key, int tid) {
  std::lock_guard<std::mutex> g(g_left_mu);
  REQUIRE(g_nleft < kLeftCap, "left-behind store full");
  g_left[g_nleft++] = Left{p, n, key, tid};
  g_deposited++;
}

void drain_left() {
  std::lock_guard<std::mutex> g(g_left_mu);
  for (size_t i = 0; i < g_nleft; i++) {
    Left &l = g_left[i];
    long bad = zt_verify(l.p, l.n, l.key);
    REQUIRE(bad < 0, "block %p (%zu bytes) left by thread %d corrupted at offset %ld", l.p, l.n, l.tid, bad);
    if (zns) REQUIRE(zns_owns(l.p) == zt_should_own(l.n, 0), "left block %p (%zu) ownership", l.p, l.n);
    free(l.p);
    g_freed_by_main++;
  }
  g_nleft = 0;
}

void *alloc_filled(size_t n, uint64_t key) {
  void *p = malloc(n);
  REQUIRE(p, "malloc(%zu) = NULL", n);
  REQUIRE(malloc_usable_size(p) >= n);
  if (zns) REQUIRE(zns_owns(p) == zt_should_own(n, 0), "malloc(%zu) = %p ownership %d", n, p, zns_owns(p));
  zt_fill(p, n, key);
  return p;
}

// ---- the pthread key -----------------------------------------------------------------------------
struct KeyVal {
  int round;
  int tid;
  size_t n;
  uint64_t key;
  // followed by n pattern bytes
};
KeyVal *new_keyval(int round, int tid) {
  size_t n = size_t(tid % 700) + 1;
  KeyVal *kv = static_cast<KeyVal *>(malloc(sizeof(KeyVal) + n));
  REQUIRE(kv, "malloc in key destructor failed");
  kv->round = round;
  kv->tid = tid;
  kv->n = n;
  kv->key = 0xBEEF0000ULL + uint64_t(tid) * 4 + uint64_t(round);
  zt_fill(kv + 1, n, kv->key);
  return kv;
}

void key_dtor(void *v) {
  if (v == &g_marker) {
    // this thread's first allocation, during key destruction
    int tid = -1;
    void *tmp[64];
    for (int i = 0; i < 64; i++) tmp[i] = alloc_filled(size_t(i) * 37 + 1, uint64_t(i));
    for (int i = 0; i < 64; i++) {
      REQUIRE(zt_verify(tmp[i], size_t(i) * 37 + 1, uint64_t(i)) < 0, "late-first block corrupted");
      free(tmp[i]);
    }
    deposit(alloc_filled(333, 0x1a7e), 333, 0x1a7e, tid);
    pthread_setspecific(g_key, new_keyval(1, 0));
    g_key_late_first++;
    return;
  }
  KeyVal *kv = static_cast<KeyVal *>(v);
  long bad = zt_verify(kv + 1, kv->n, kv->key);
  REQUIRE(bad < 0, "key value of thread %d (round %d) corrupted at %ld", kv->tid, kv->round, bad);
  int round = kv->round, tid = kv->tid;
  free(kv);
  if (round == 0) {
    g_key_round1++;
    // allocate again and re-arm: glibc calls us again in a second round, after the allocator's
    // own key destructor has run (its key was created first)
    std::string s(200 + size_t(tid % 50), 'k');
    void *p = alloc_filled(1000 + size_t(tid % 3000), uint64_t(tid) + 77);
    deposit(p, 1000 + size_t(tid % 3000), uint64_t(tid) + 77, tid);
    pthread_setspecific(g_key, new_keyval(1, tid));
  } else {
    g_key_round2++;
    void *p = ZT_OPAQUE(malloc(64));  // allocation after the cache is gone
    REQUIRE(p);
    memset(p, 0x42, 64);
    free(p);
  }
}

// ---- the thread_local object ---------------------------------------------------------------------
struct TlObj {
  int tid = -1;
  bool heavy = false;
  void *buf = nullptr;
  size_t n = 0;
  std::vector<std::string> strs;
  TlObj() { g_tl_ctor++; }
  void init(int t, bool h) {
    tid = t;
    heavy = h;
    n = size_t(t % 4000) + 1;
    buf = alloc_filled(n, uint64_t(t) * 13 + 5);
    for (int i = 0; i < 20; i++) strs.emplace_back(size_t(i * 10 + 20), char('a' + i));
  }
  ~TlObj() {
    if (buf) {
      long bad = zt_verify(buf, n, uint64_t(tid) * 13 + 5);
      REQUIRE(bad < 0, "thread_local buffer of thread %d corrupted at %ld", tid, bad);
      free(buf);
    }
    for (int i = 0; i < 20 && i < (int)strs.size(); i++)
      REQUIRE(strs[i] == std::string(size_t(i * 10 + 20), char('a' + i)), "thread_local strings of %d", tid);
    if (heavy) {  // lots of C++ allocation during thread_local destruction
      std::vector<std::string> v;
      for (int i = 0; i < 2000; i++) v.push_back(std::to_string(i) + std::string(size_t(i % 300), 'h'));
      for (int i = 0; i < 2000; i += 111) REQUIRE(v[i] == std::to_string(i) + std::string(size_t(i % 300), 'h'));
    }
    deposit(alloc_filled(4000, uint64_t(tid) + 999), 4000, uint64_t(tid) + 999, tid);
    g_tl_dtor++;
  }
};
thread_local TlObj tl_obj;

// ---- the threads -----------------------------------------------------------------------------------
struct Arg {
  int tid;
};

[[noreturn]] void leave_via_pthread_exit(int depth) {
  if (depth > 0) leave_via_pthread_exit(depth - 1);
  g_pthread_exit++;
  pthread_exit(nullptr);
}

void work(int tid) {
  uint64_t rng = 0x1234567ULL + uint64_t(tid) * 0x9E3779B97F4A7C15ULL;
  constexpr int N = 300;
  void *p[N];
  size_t n[N];
  for (int i = 0; i < N; i++) {
    uint64_t r = zt_rand(&rng);
    n[i] = r % 16 == 0 ? size_t(r >> 20) % 6000 + 4097 : size_t(r >> 20) % 1024 + 1;
    p[i] = alloc_filled(n[i], uint64_t(tid) * 1000 + uint64_t(i));
  }
  for (int i = 0; i < N; i++) {
    long bad = zt_verify(p[i], n[i], uint64_t(tid) * 1000 + uint64_t(i));
    REQUIRE(bad < 0, "thread %d block %d (%zu bytes) corrupted at %ld", tid, i, n[i], bad);
    if (i % 15 == 0)
      deposit(p[i], n[i], uint64_t(tid) * 1000 + uint64_t(i), tid);  // the main thread frees these
    else
      free(p[i]);
  }
}

void *thread_main(void *a) {
  int tid = static_cast<Arg *>(a)->tid;
  int kind = tid % 8;
  if (kind == 6) {
    // allocates nothing before its key destructor runs
    pthread_setspecific(g_key, &g_marker);
    return nullptr;
  }
  tl_obj.init(tid, kind == 7);
  pthread_setspecific(g_key, new_keyval(0, tid));
  work(tid);
  if (kind == 5) leave_via_pthread_exit(3);
  return nullptr;
}

}  // namespace

int main() {
  zns = zt_zns_mode();
  double scale = getenv("ZT_SCALE") ? atof(getenv("ZT_SCALE")) : 1.0;
  int nthreads = int(3000 * scale) / kBatch * kBatch;
  if (nthreads < 48) nthreads = 48;
  size_t rss0 = zt_rss_bytes();
  zt_log("thread_churn: mode %s, %d threads in batches of %d, start RSS %.1f MiB", zt_mode_name(), nthreads, kBatch,
         rss0 / 1048576.0);
  REQUIRE(pthread_key_create(&g_key, key_dtor) == 0);
  g_left = static_cast<Left *>(malloc(sizeof(Left) * kLeftCap));
  REQUIRE(g_left);
  static Arg args[kBatch];
  size_t rss_third = 0, rss_peak = rss0;
  double t0 = zt_now();
  for (int base = 0; base < nthreads; base += kBatch) {
    pthread_t th[kBatch];
    for (int j = 0; j < kBatch; j++) {
      args[j].tid = base + j;
      int rc = pthread_create(&th[j], nullptr, thread_main, &args[j]);
      REQUIRE(rc == 0, "pthread_create #%d: %s", base + j, strerror(rc));
    }
    for (int j = 0; j < kBatch; j++) REQUIRE(pthread_join(th[j], nullptr) == 0);
    if ((base / kBatch) % 25 == 24) drain_left();
    if (base / kBatch % 50 == 0) {
      size_t r = zt_rss_bytes();
      if (r > rss_peak) rss_peak = r;
    }
    if (rss_third == 0 && base + kBatch >= nthreads / 3) {
      drain_left();
      if (zns) zns_trim();
      rss_third = zt_rss_bytes();
    }
  }
  drain_left();
  double t1 = zt_now();
  int workers = 0, late_first = 0, exits = 0;
  for (int t = 0; t < nthreads; t++) {
    if (t % 8 == 6) late_first++;
    else workers++;
    if (t % 8 == 5) exits++;
  }
  CHECK(g_tl_dtor == workers, "thread_local destructors ran %ld times, want %d", g_tl_dtor.load(), workers);
  CHECK(g_key_round1 == workers, "key destructor round 1 ran %ld times, want %d", g_key_round1.load(), workers);
  CHECK(g_key_round2 == workers + late_first, "key destructor round 2 ran %ld times, want %d", g_key_round2.load(),
        workers + late_first);
  CHECK(g_key_late_first == late_first, "late-first key destructors %ld, want %d", g_key_late_first.load(), late_first);
  CHECK(g_pthread_exit == exits, "pthread_exit threads %ld, want %d", g_pthread_exit.load(), exits);
  CHECK(g_freed_by_main == g_deposited, "main freed %ld of %ld left-behind blocks", g_freed_by_main.load(),
        g_deposited.load());
  free(g_left);
  if (zns) zns_trim();
  else malloc_trim(0);
  size_t rss1 = zt_rss_bytes();
  zt_log("thread_churn: %.2fs; RSS start %.1f MiB, after 1/3 %.1f MiB, peak %.1f MiB, end %.1f MiB; %ld blocks left "
         "behind and freed by main",
         t1 - t0, rss0 / 1048576.0, rss_third / 1048576.0, rss_peak / 1048576.0, rss1 / 1048576.0,
         g_freed_by_main.load());
  CHECK(rss1 < rss0 + (64u << 20), "RSS grew by %.1f MiB over the start (limit 64 MiB): memory of dead threads leaks?",
        (rss1 - rss0) / 1048576.0);
  CHECK(rss1 < rss_third + (16u << 20),
        "RSS grew by %.1f MiB between 1/3 of the run and the end (limit 16 MiB): per-thread leak?",
        ((double)rss1 - (double)rss_third) / 1048576.0);
  return zt_finish("thread_churn");
}
