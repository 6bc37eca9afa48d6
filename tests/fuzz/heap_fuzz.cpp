// libFuzzer target for the slab heap (issue 6).  Built by tests/hardening.mk (`make fuzz`) with
// clang++: the core sources with -fsanitize=fuzzer-no-link,address,undefined (coverage guides the
// fuzzer through the heap's code), this harness with ASan+UBSan only.  This process's own malloc is
// ASan's, nothing is interposed: the fuzzer calls the internal API directly (zns::alloc,
// alloc_aligned, dealloc, block_size, trim, heap_snapshot, stats_print).
//
// Each input is decoded into a sequence of operations on 512 slots: malloc, free, realloc, calloc,
// memalign, usable-size queries, bulk allocation / bulk free (whole slabs filled and emptied),
// trim, a stats snapshot, and batches of those run on another thread:
//   - a fresh std::thread, joined at once (its cache is handed back at exit: its slabs become
//     shared or go to the depot; the next thread adopts the cache);
//   - a persistent worker thread that stays alive between batches (the main thread's frees go to
//     its inbox, and the reverse);
//   - a pthread key destructor that runs after the thread's cache was handed back (the orphan
//     cache serves its mallocs, its frees are applied at once).
// realloc and calloc are implemented on top of the core API the way shim/malloc.cpp does it (keep
// the block when it fits, else new block + copy + free; zero fill).
//
// A shadow model keeps, for every live block, its request, alignment, usable size and the key of
// the byte pattern that fills all of its usable bytes.  After every operation:
//   - a new block: owned by the region, aligned, usable size >= request (and exactly the class
//     size for a plain malloc), a block start of a slab of its size owned by the calling thread's
//     cache, and no overlap with any live block (a std::map of intervals over the usable bytes);
//   - a block that is freed or reallocated: its pattern is intact (so no other block and no
//     allocator write touched it) and realloc copied min(old, new request) bytes;
//   - every 128 operations and at the end: every live block's pattern;
//   - snapshot: the heap counts at least as many live blocks per class as the model holds, and
//     zns::stats_print (text or JSON, fixed buffers) succeeds.
// At the end of each input everything is freed and the worker joined; the heap must then count no
// live block (a leak check through heap_snapshot) and few thread caches (exited threads' caches
// are reused).  Any failed check prints one line and aborts: libFuzzer reports a crash and saves
// the input in build/fuzz/artifacts/ (replay: build/fuzz/heap_fuzz FILE).
#include <fuzzer/FuzzedDataProvider.h>

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "core/heap.h"
#include "core/stats.h"

namespace {

[[noreturn]] void fail(const char *what, const void *p, size_t a, size_t b) {
  fprintf(stderr, "heap_fuzz: check failed: %s (p=%p, %zu, %zu)\n", what, p, a, b);
  fflush(stderr);
  abort();
}
#define ENSURE(cond, p, a, b)                                                  \
  do {                                                                         \
    if (__builtin_expect(!(cond), 0)) fail(#cond, (const void *)(p), size_t(a), size_t(b)); \
  } while (0)

constexpr unsigned kSlots = 512;
constexpr size_t kMax = zns::kMaxSmall;

// ---- byte patterns: byte i of block `key` depends on (key, i) only ---------------------------------
constexpr uint64_t kPatK = 0x9E3779B97F4A7C15ULL;
inline uint64_t mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}
// The pattern loops are hot and tell the fuzzer nothing: no coverage or ASan instrumentation.
#define NO_INSTRUMENT __attribute__((no_sanitize("coverage", "address")))
NO_INSTRUMENT inline uint8_t pat_byte(uint64_t v, size_t i) { return uint8_t((v + (i >> 3) * kPatK) >> (8 * (i & 7))); }

NO_INSTRUMENT void fill(char *p, size_t from, size_t to, uint64_t key) {
  uint64_t v = mix64(key) | 1;
  size_t i = from;
  for (; i < to && (i & 7); ++i) p[i] = char(pat_byte(v, i));
  for (; i + 8 <= to; i += 8) {
    uint64_t w = v + (i >> 3) * kPatK;
    memcpy(p + i, &w, 8);
  }
  for (; i < to; ++i) p[i] = char(pat_byte(v, i));
}
// -1 when bytes [0, n) hold the pattern of key, else the first bad offset.
NO_INSTRUMENT long verify(const char *p, size_t n, uint64_t key) {
  uint64_t v = mix64(key) | 1;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w = v + (i >> 3) * kPatK, g;
    memcpy(&g, p + i, 8);
    if (g != w) break;
  }
  for (; i < n; ++i)
    if (uint8_t(p[i]) != pat_byte(v, i)) return long(i);
  return -1;
}

NO_INSTRUMENT long first_nonzero(const char *p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i]) return long(i);
  return -1;
}

bool is_class_size(size_t u) {
  for (unsigned c = 0; c < zns::kNumClasses; ++c)
    if (zns::kClassSize[c] == u) return true;
  return false;
}
unsigned class_of_size(size_t u) {
  for (unsigned c = 0; c < zns::kNumClasses; ++c)
    if (zns::kClassSize[c] == u) return c;
  fail("block size is not a class size", nullptr, u, 0);
}

// ---- the shadow model ---------------------------------------------------------------------------
struct Block {
  char *p;
  size_t req, align, usable;
  uint64_t key;
};
struct Model {
  Block slot[kSlots];
  std::map<uintptr_t, uintptr_t> iv;   // live blocks: start -> end (usable bytes)
  uint64_t next_key = 1;
  unsigned ops = 0;
};
Model g_model;

// The alignment malloc promises for n bytes: 16, or 8 for an 8 B block (size_class.h).
size_t plain_align(size_t n) { return n > 8 ? 16 : 8; }

// Checks a block the heap just handed out (not yet in the model) and returns its usable size.
size_t check_new(Model &m, char *p, size_t req, size_t align, bool plain) {
  ENSURE(p != nullptr, p, req, align);
  ENSURE(zns::owns(p), p, req, align);
  // 16-byte aligned, but an 8 B block asked for without an alignment above 8
  ENSURE(uintptr_t(p) % (req > 8 || align > 8 ? 16 : 8) == 0, p, req, align);
  ENSURE(uintptr_t(p) % align == 0, p, req, align);
  size_t u = zns::block_size(p);
  ENSURE(u >= req && u <= kMax, p, u, req);
  ENSURE(is_class_size(u), p, u, req);
  if (plain) ENSURE(u == zns::class_info(zns::class_of(req)).size, p, u, req);
  ENSURE(zns::owns(p + u - 1), p, u, req);
  zns::SlabMeta *h = zns::head_meta(p);
  ENSURE(h->size == u, p, h->size, u);
  ENSURE(zns::head_meta(p + u - 1) == h, p, u, 0);   // the block lies inside one slab
  ENSURE(zns::block_index(h, p) >= 0, p, u, 0);
  uint32_t owner = zns::owner_cache(h->owner.load(std::memory_order_relaxed));   // (ZNS_SECURE's bit off)
  if (zns::t_cache->id == zns::kSentinelId)   // a thread past its cache's hand-back: the orphan cache's
    ENSURE(owner != zns::kNoOwner && owner != zns::kSharedOwner, p, owner, 0);
  else
    ENSURE(owner == zns::t_cache->id, p, owner, zns::t_cache->id);   // the caller's current slab
  auto it = m.iv.lower_bound(uintptr_t(p));
  if (it != m.iv.end()) ENSURE(it->first >= uintptr_t(p) + u, p, it->first, u);   // next block
  if (it != m.iv.begin()) {
    --it;
    ENSURE(it->second <= uintptr_t(p), p, it->first, it->second);                   // previous
  }
  return u;
}

void check_live(const Block &b) {
  ENSURE(zns::owns(b.p), b.p, b.req, 0);
  ENSURE(zns::block_size(b.p) == b.usable, b.p, zns::block_size(b.p), b.usable);
  long bad = verify(b.p, b.usable, b.key);
  ENSURE(bad < 0, b.p, size_t(bad), b.usable);
}

void insert(Model &m, unsigned s, char *p, size_t req, size_t align, size_t u, uint64_t key) {
  m.slot[s] = Block{p, req, align, u, key};
  m.iv.emplace(uintptr_t(p), uintptr_t(p) + u);
}

void release(Model &m, unsigned s) {
  Block &b = m.slot[s];
  if (!b.p) return;
  check_live(b);
  memset(b.p, 0xA5, b.usable);   // scribble: a block that is still live elsewhere would notice
  m.iv.erase(uintptr_t(b.p));
  zns::dealloc(b.p, "free");
  b = Block{};
}

// ---- operations -----------------------------------------------------------------------------------
enum Kind : uint8_t { kMalloc, kFree, kRealloc, kCalloc, kMemalign, kUsable, kBulk, kFreeRange,
                      kSpawn, kWorker, kLate, kTrim, kSnapshot, kVerifyAll };
struct Op {
  Kind kind;
  uint16_t slot;
  uint16_t n;       // request size (calloc: element count)
  uint16_t m;       // calloc: element size; memalign: log2 alignment; bulk / free range: count
};

void do_malloc(Model &m, unsigned s, size_t n) {
  release(m, s);
  char *p = static_cast<char *>(zns::alloc(n));
  size_t u = check_new(m, p, n, plain_align(n), true);
  uint64_t key = m.next_key++;
  fill(p, 0, u, key);
  insert(m, s, p, n, plain_align(n), u, key);
}

void do_calloc(Model &m, unsigned s, size_t cnt, size_t sz) {
  size_t total;
  if (__builtin_mul_overflow(cnt, sz, &total) || total > kMax) return;   // not a slab request
  release(m, s);
  char *p = static_cast<char *>(zns::alloc(total));
  size_t u = check_new(m, p, total, plain_align(total), true);
  memset(p, 0, u);
  ENSURE(first_nonzero(p, u) < 0, p, first_nonzero(p, u), u);
  uint64_t key = m.next_key++;
  fill(p, 0, u, key);
  insert(m, s, p, total, plain_align(total), u, key);
}

void do_memalign(Model &m, unsigned s, size_t n, unsigned log2) {
  size_t align = size_t(1) << (log2 % 13);   // 1 .. 4096
  release(m, s);
  char *p = static_cast<char *>(zns::alloc_aligned(n, align));
  size_t u = check_new(m, p, n, align, false);
  uint64_t key = m.next_key++;
  fill(p, 0, u, key);
  insert(m, s, p, n, align, u, key);
}

// realloc as shim/malloc.cpp does it: keep the block while the request fits and would not fit a
// class less than half its size, else new block + copy + free.
void do_realloc(Model &m, unsigned s, size_t n) {
  Block &b = m.slot[s];
  if (!b.p) return do_malloc(m, s, n);
  if (n == 0) return release(m, s);
  check_live(b);
  size_t old = b.usable;
  if (n <= old && (n > old / 2 || old <= 32)) {
    b.req = n;
    return;
  }
  char *q = static_cast<char *>(zns::alloc(n));
  size_t u = check_new(m, q, n, plain_align(n), true);   // must not overlap the old block either
  size_t keep = n < b.req ? n : b.req;
  memcpy(q, b.p, keep);
  long bad = verify(q, keep, b.key);
  ENSURE(bad < 0, q, size_t(bad), keep);
  fill(q, keep, u, b.key);
  uint64_t key = b.key;
  release(m, s);
  insert(m, s, q, n, plain_align(n), u, key);
}

void do_usable(Model &m, unsigned s) {
  const Block &b = m.slot[s];
  if (!b.p) return;
  size_t u = zns::block_size(b.p);
  ENSURE(u >= b.req && u == b.usable, b.p, u, b.req);
  ENSURE(uintptr_t(b.p) % b.align == 0, b.p, b.align, 0);
  ENSURE(zns::owns(b.p), b.p, 0, 0);
}

void do_bulk(Model &m, unsigned s, size_t n, unsigned count) {
  for (unsigned k = 0; k < count; ++k) do_malloc(m, (s + k) % kSlots, n);
}
void do_free_range(Model &m, unsigned s, unsigned count) {
  for (unsigned k = 0; k < count; ++k) release(m, (s + k) % kSlots);
}

void verify_all(Model &m) {
  size_t n = 0;
  for (const Block &b : m.slot)
    if (b.p) {
      check_live(b);
      ++n;
    }
  ENSURE(n == m.iv.size(), nullptr, n, m.iv.size());
}

void snapshot_check(Model &m) {
  static zns::HeapSnapshot h;   // big: keep it off the (threads') stacks
  zns::heap_snapshot(&h);
  uint64_t count[zns::kNumClasses] = {};
  for (const Block &b : m.slot)
    if (b.p) count[class_of_size(b.usable)]++;
  for (unsigned c = 0; c < zns::kNumClasses; ++c) ENSURE(h.cls[c].live >= count[c], nullptr, h.cls[c].live, count[c]);
  ENSURE(h.owned_pages + h.dirty_pages + h.clean_pages <= h.touched_pages, nullptr, h.owned_pages, h.touched_pages);
  // The dump formats into fixed buffers: ASan watches them.
  static int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  ENSURE(zns::stats_print(devnull, (m.ops & 1) != 0) == 0, nullptr, m.ops, 0);
}

void apply(Model &m, const Op &op);
void apply_all(Model &m, const std::vector<Op> &ops) {
  for (const Op &op : ops) apply(m, op);
}

// A thread that stays alive between batches (its slabs stay owned: frees by others go to its inbox).
// The main thread waits for each batch, so the model is never touched by two threads at once.
struct Worker {
  std::thread th;
  std::mutex mu;
  std::condition_variable cv;
  const std::vector<Op> *job = nullptr;
  bool quit = false;
  Model *model = nullptr;

  void loop() {
    std::unique_lock<std::mutex> lk(mu);
    for (;;) {
      cv.wait(lk, [&] { return job != nullptr || quit; });
      if (job) {
        apply_all(*model, *job);
        job = nullptr;
        cv.notify_all();
      } else {
        return;
      }
    }
  }
  void run(Model &m, const std::vector<Op> &ops) {
    if (!th.joinable()) {
      quit = false;
      model = &m;
      th = std::thread([this] { loop(); });
    }
    std::unique_lock<std::mutex> lk(mu);
    job = &ops;
    cv.notify_all();
    cv.wait(lk, [&] { return job == nullptr; });
  }
  void stop() {
    if (!th.joinable()) return;
    {
      std::lock_guard<std::mutex> g(mu);
      quit = true;
    }
    cv.notify_all();
    th.join();
  }
};
Worker g_worker;

std::vector<Op> g_batches[64];   // thread batches of the current input, by index
unsigned g_nbatches;

// kLate: a batch run by a pthread key destructor that runs after the heap's own (keys are
// destroyed in creation order, and ours is created after the heap's): the thread's cache is
// already handed back, so its mallocs go to the orphan cache and its frees are applied at once.
struct LateJob {
  Model *m;
  const std::vector<Op> *ops;
};
pthread_key_t g_late_key;
bool g_late_key_made;
void late_destructor(void *arg) {
  LateJob *job = static_cast<LateJob *>(arg);
  apply_all(*job->m, *job->ops);
}
void run_late(Model &m, const std::vector<Op> &ops) {
  if (!g_late_key_made) {
    zns::dealloc(zns::alloc(16), "free");   // the heap (and its key) exists before ours
    ENSURE(pthread_key_create(&g_late_key, late_destructor) == 0, nullptr, 0, 0);
    g_late_key_made = true;
  }
  LateJob job{&m, &ops};
  std::thread([&job] {
    zns::dealloc(zns::alloc(16), "free");   // attach a cache, so that the heap's destructor runs
    pthread_setspecific(g_late_key, &job);
  }).join();
}

void apply(Model &m, const Op &op) {
  unsigned s = op.slot % kSlots;
  switch (op.kind) {
    case kMalloc: do_malloc(m, s, op.n); break;
    case kFree: release(m, s); break;
    case kRealloc: do_realloc(m, s, op.n); break;
    case kCalloc: do_calloc(m, s, op.n, op.m); break;
    case kMemalign: do_memalign(m, s, op.n, op.m); break;
    case kUsable: do_usable(m, s); break;
    case kBulk: do_bulk(m, s, op.n, op.m); break;
    case kFreeRange: do_free_range(m, s, op.m); break;
    case kSpawn: {
      const std::vector<Op> &batch = g_batches[op.m];
      std::thread([&m, &batch] { apply_all(m, batch); }).join();
      break;
    }
    case kWorker: g_worker.run(m, g_batches[op.m]); break;
    case kLate: run_late(m, g_batches[op.m]); break;
    case kTrim: zns::trim(); break;
    case kSnapshot: snapshot_check(m); break;
    case kVerifyAll: verify_all(m); break;
  }
  if (++m.ops % 128 == 0) verify_all(m);
}

// ---- decoding -------------------------------------------------------------------------------------
uint16_t take_size(FuzzedDataProvider &d) {
  uint8_t mode = d.ConsumeIntegral<uint8_t>();
  switch (mode & 3) {
    case 0: return uint16_t(mode >> 2);                                 // 0..63
    case 1: return d.ConsumeIntegralInRange<uint16_t>(0, 256);
    case 2: return d.ConsumeIntegralInRange<uint16_t>(0, 1024);
    default: return d.ConsumeIntegralInRange<uint16_t>(0, uint16_t(kMax));
  }
}

// One operation; thread batches are decoded here too (nested=false only at the top level).
bool take_op(FuzzedDataProvider &d, Op *out, bool nested) {
  if (d.remaining_bytes() == 0) return false;
  // weights: the common operations come up more often
  static constexpr Kind kTable[32] = {
      kMalloc, kMalloc, kMalloc, kMalloc, kMalloc, kFree, kFree, kFree, kFree, kFree,
      kRealloc, kRealloc, kRealloc, kCalloc, kCalloc, kMemalign, kMemalign, kUsable, kBulk, kBulk,
      kFreeRange, kFreeRange, kSpawn, kSpawn, kWorker, kWorker, kWorker, kTrim, kSnapshot, kVerifyAll,
      kLate, kFree};
  Op op{kTable[d.ConsumeIntegral<uint8_t>() % 32], d.ConsumeIntegral<uint16_t>(), 0, 0};
  switch (op.kind) {
    case kMalloc: case kRealloc: op.n = take_size(d); break;
    case kCalloc:
      op.n = d.ConsumeIntegralInRange<uint16_t>(0, 300);
      op.m = d.ConsumeIntegralInRange<uint16_t>(0, 300);
      break;
    case kMemalign:
      op.n = take_size(d);
      op.m = d.ConsumeIntegralInRange<uint16_t>(0, 12);
      break;
    case kBulk:
      op.n = take_size(d);
      op.m = d.ConsumeIntegralInRange<uint16_t>(1, 300);   // enough to fill a slab of small blocks
      break;
    case kFreeRange: op.m = d.ConsumeIntegralInRange<uint16_t>(1, 300); break;
    case kSpawn: case kWorker: case kLate: {
      if (nested || g_nbatches == 64) { op.kind = kUsable; break; }
      unsigned k = d.ConsumeIntegralInRange<unsigned>(1, 16);
      std::vector<Op> &batch = g_batches[g_nbatches];
      batch.clear();
      Op sub;
      for (unsigned i = 0; i < k && take_op(d, &sub, true); ++i) batch.push_back(sub);
      op.m = uint16_t(g_nbatches++);
      break;
    }
    default: break;
  }
  *out = op;
  return true;
}

void end_of_input(Model &m) {
  verify_all(m);
  for (unsigned s = 0; s < kSlots; ++s) release(m, s);
  ENSURE(m.iv.empty(), nullptr, m.iv.size(), 0);
  g_worker.stop();
  zns::flush_thread();   // this thread's buffered frees into other caches' slabs
  // Leak check: with every block freed and every other thread gone, the heap counts none live
  // (the snapshot already discounts each cache's "last freed" block).
  static zns::HeapSnapshot h;
  zns::heap_snapshot(&h);
  for (unsigned c = 0; c < zns::kNumClasses; ++c)
    if (h.cls[c].live != 0) fail("leak: blocks still live after everything was freed", nullptr, c, h.cls[c].live);
  ENSURE(h.caches <= 8, nullptr, h.caches, 0);   // main, worker, spawned: caches are reused
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int *, char ***) {
  // Purge eagerly (unless the caller chose), so that slabs come back from the OS as well as from
  // the dirty list.  Read at the heap's first allocation, which comes after this.
  setenv("ZNS_DIRTY_MAX_KB", "1024", 0);
  setenv("ZNS_DECAY_MS", "20", 0);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  FuzzedDataProvider d(data, size);
  Model &m = g_model;
  m.iv.clear();
  for (Block &b : m.slot) b = Block{};
  m.ops = 0;
  g_nbatches = 0;
  Op op;
  while (take_op(d, &op, false)) apply(m, op);
  end_of_input(m);
  return 0;
}
