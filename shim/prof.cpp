// The sampled heap profiler, in libzns_slab_prof.so only: that library is the shim's sources built
// with -DZNS_PROFILER plus this file, linked with libunwind; the default library has none of it, so
// its fast paths pay nothing (DESIGN "The heap profiler").
//
// Sampling.  Each thread counts down the bytes it requests (t_prof_left, in the shim's entry
// points); the request that takes the count below zero is a sample, and the next count is drawn
// from an exponential distribution of mean ZNS_PROF_RATE.  The samples are then a Poisson process
// over the bytes allocated: a request of n bytes is sampled with probability 1 - exp(-n / rate),
// which is what google-pprof's "heap_v2" reader assumes when it scales them back up.
//
// Where a sample lives.  Up to 4 KiB (the sizes the slabs serve): a page of its own in the
// profiler's slot range (reserved at start, kCap pages; freed pages are reused, never returned),
// so that a free of one (a signal handler's too) never enters another allocator.  Larger ones: the
// next allocator's, like every large block.  Neither is in the slab region, so their frees reach
// next_free and not the free fast path; there, for a pointer outside the slot range, a counting
// filter (one load) answers "not a sample" for nearly all of them.  A sample's call stack
// (libunwind's unw_backtrace, this library's own frames dropped) and size go into the table of
// live samples, open addressing on the address with linear probing and backward-shift deletion
// (no tombstones: a lookup stops at the first empty slot), under one lock.  The profile lists the
// live samples.
//
// Discipline: nothing here allocates from the heap (the table, the filter and the slots are
// mmap'ed at start); requests made while the thread is inside the profiler (the unwinder's, the
// next allocator's, a signal handler's) are never samples (t_busy), and a signal handler's free
// that comes while its thread holds the lock leaves that sample's record (and slot) behind: the
// profile then shows a block that is gone; it never loses or corrupts one.  Forks: the lock is taken across
// them (pthread_atfork).
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "core/options.h"
#include "core/platform.h"
#include "core/stats.h"
#include "shim/entry.h"
#include "shim/zns_slab.h"

// This library's first and last byte (the linker's): frames in between are the profiler's own.
extern char __ehdr_start[] __attribute__((visibility("hidden")));
extern char _end[] __attribute__((visibility("hidden")));

namespace zns::shim {

__thread intptr_t t_prof_left __attribute__((tls_model("initial-exec"))) = 0;
std::atomic<bool> g_prof_live{false};

namespace {

__thread uint64_t t_rng __attribute__((tls_model("initial-exec"))) = 0;   // 0: countdown not set up
__thread uint32_t t_busy __attribute__((tls_model("initial-exec"))) = 0;  // inside the profiler

enum : int { kUndecided = 0, kOn = 1, kOff = 2 };
std::atomic<int> g_state{kUndecided};   // decided by prof_start (the shim's constructor)
double g_rate = 524288;
constexpr intptr_t kNever = INTPTR_MAX / 2;   // profiling off: the countdown of a lifetime
constexpr intptr_t kRecheck = 1 << 16;        // not decided yet: ask again after 64 KiB

constexpr unsigned kFrames = sizeof(ProfRecord::pc) / sizeof(void *);
struct Sample {
  void *ptr;          // the block; null: an empty slot
  ProfRecord r;
};
static_assert(sizeof(Sample) == 256, "a sample is four cache lines");
constexpr size_t kCapShift = 15, kCap = size_t(1) << kCapShift;   // slots; 3/4 of them used at most
constexpr uint32_t kNil32 = 0xffffffffu;
constexpr size_t kFilterShift = 16, kFilter = size_t(1) << kFilterShift;
Sample *g_table;                       // kCap slots (8 MiB of address space; touched as used)
std::atomic<uint16_t> *g_filter;       // per hash of an address: live samples with that hash
size_t g_live;                         // samples in the table (under g_lock)
uint64_t g_dropped;                    // samples not recorded: the table was full (under g_lock)
Lock g_lock;
char *g_slots;                         // kCap pages: the small samples (see the top)
std::atomic<uintptr_t> g_slots_bytes{0};   // kCap pages once the range exists
uint32_t g_slot_bump;                  // slots handed out at least once (under g_lock)
uint32_t g_slot_free = kNil32;         // a freed slot, whose page's first word links the next
bool g_child_quiet;                    // a forked child with a profile path without %p: no dump

size_t home(const void *p) { return size_t((uint64_t(uintptr_t(p)) * 0x9E3779B97F4A7C15ull) >> (64 - kCapShift)); }
size_t filter_at(const void *p) {
  return size_t((uint64_t(uintptr_t(p)) * 0xC2B2AE3D27D4EB4Full) >> (64 - kFilterShift));
}
bool ours(const void *pc) { return pc >= __ehdr_start && pc < _end; }
bool in_slots(const void *p) {
  return uintptr_t(p) - uintptr_t(g_slots) < g_slots_bytes.load(std::memory_order_relaxed);
}

// A slot's page, or null when all kCap are taken (under g_lock).
void *slot_take() {
  if (g_slot_free != kNil32) {
    char *page = g_slots + size_t(g_slot_free) * kPageSize;
    g_slot_free = *reinterpret_cast<uint32_t *>(page);
    return page;
  }
  if (g_slot_bump == kCap) return nullptr;
  return g_slots + size_t(g_slot_bump++) * kPageSize;
}
void slot_give(void *p) {   // (under g_lock)
  char *page = reinterpret_cast<char *>(uintptr_t(p) & ~uintptr_t(kPageSize - 1));
  *reinterpret_cast<uint32_t *>(page) = g_slot_free;
  g_slot_free = uint32_t((page - g_slots) / kPageSize);
}

uint64_t mix(uint64_t x) {   // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Bytes until this thread's next sample: exponential, mean g_rate.
intptr_t draw() {
  if (g_rate <= 1) return 0;   // every request of a byte or more
  uint64_t x = t_rng;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;   // xorshift64
  t_rng = x;
  double u = double((x >> 11) + 1) * 0x1.0p-53;   // (0, 1]
  double v = -std::log(u) * g_rate;
  return v >= double(kNever) ? kNever : intptr_t(v);
}

// Put r in the table for block p (under g_lock).
void put(void *p, const ProfRecord &r) {
  if (g_live >= kCap / 4 * 3) {
    ++g_dropped;
    return;
  }
  size_t h = home(p);
  while (g_table[h].ptr && g_table[h].ptr != p) h = (h + 1) & (kCap - 1);
  Sample &s = g_table[h];
  if (!s.ptr) {   // (else a record left behind by a signal handler's free: this one replaces it)
    ++g_live;
    g_filter[filter_at(p)].fetch_add(1, std::memory_order_relaxed);
  }
  s.ptr = p;
  s.r = r;
  g_prof_live.store(true, std::memory_order_relaxed);
}

// The record of a sample of n bytes with the stack raw[0..got) (the profiler's own frames first).
ProfRecord make_record(size_t n, void *const *raw, int got) {
  ProfRecord r;
  r.size = n;
  r.depth = 0;
  int first = 0;
  while (first < got && ours(raw[first])) ++first;
  for (int i = first; i < got && r.depth < kFrames; ++i) r.pc[r.depth++] = raw[i];
  return r;
}

// Take p's record out (under g_lock) into *out, if not null, moving later ones of its probe run
// back into the gap.  False if p is not a sample.
bool remove(void *p, ProfRecord *out) {
  size_t i = home(p);
  while (g_table[i].ptr != p) {
    if (!g_table[i].ptr) return false;
    i = (i + 1) & (kCap - 1);
  }
  if (out) *out = g_table[i].r;
  g_filter[filter_at(p)].fetch_sub(1, std::memory_order_relaxed);
  --g_live;
  for (size_t j = i;;) {
    j = (j + 1) & (kCap - 1);
    if (!g_table[j].ptr) break;
    size_t k = home(g_table[j].ptr);
    // slot j's record may move to i when its home is not in (i, j] (cyclically)
    bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
    if (stays) continue;
    g_table[i] = g_table[j];
    i = j;
  }
  g_table[i].ptr = nullptr;
  return true;
}

void fork_prepare() { t_busy = 1; g_lock.lock(); }
void fork_parent() { g_lock.unlock(); t_busy = 0; }
void fork_child() {
  g_lock.reset();
  t_busy = 0;
  if (!path_per_pid(g_options.ZNS_PROF)) g_child_quiet = true;   // the parent's file is the parent's
}

char g_dump_mem[1 << 16];   // the dump's buffer (under g_lock)

// The profile of the live samples to fd: 0, or the errno value of the write that failed.
int dump_to(int fd) {
  int err = 0;
  {
    t_busy = 1;
    Guard g(g_lock);
    QuietWrite q;
    Buf b(g_dump_mem, sizeof g_dump_mem);
    uint64_t bytes = 0;
    for (size_t i = 0; i < kCap; ++i)
      if (g_table[i].ptr) bytes += g_table[i].r.size;
    // gperftools' sampled heap profile; the columns in brackets (allocated since start) are the
    // live ones again, as in its heap_v2 samples
    b.str("heap profile: ").u64(g_live).str(": ").u64(bytes).str(" [").u64(g_live).str(": ").u64(bytes)
        .str("] @ heap_v2/").u64(uint64_t(g_rate)).chr('\n');
    // every stack starts in malloc (google-pprof drops the allocator's frames it knows by name)
    void *top = reinterpret_cast<void *>(&::malloc);
    for (size_t i = 0; i < kCap && !err; ++i) {
      const Sample &s = g_table[i];
      if (!s.ptr) continue;
      b.str("1: ").u64(s.r.size).str(" [1: ").u64(s.r.size).str("] @ ").hex(uintptr_t(top));
      for (uint64_t f = 0; f < s.r.depth; ++f) b.chr(' ').hex(uintptr_t(s.r.pc[f]));
      b.chr('\n');
      if (b.size() > sizeof g_dump_mem - 4096) err = b.flush(fd);
    }
    // the address map, for the symbols
    if (!err) {
      b.str("\nMAPPED_LIBRARIES:\n");
      err = b.flush(fd);
    }
    int maps = err ? -1 : open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (maps >= 0) {
      for (;;) {
        ssize_t r = read(maps, g_dump_mem, sizeof g_dump_mem);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if ((err = write_all(fd, g_dump_mem, size_t(r))) != 0) break;
      }
      close(maps);
    }
    if (err) q.failed(err);
  }
  t_busy = 0;
  return err;
}

// zns_prof_dump's work; -1 with errno set, or 0.
int dump_path(const char *dest, bool say) {
  char path[512];
  int saved = errno;
  errno = ENAMETOOLONG;
  int fd = expand_path(dest, path, sizeof path) ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644) : -1;
  int err = fd < 0 ? errno : dump_to(fd);
  if (fd >= 0) close(fd);
  if (err && say) {
    char m[700];
    Buf(m, sizeof m).str("zns-slab: cannot write the heap profile to ").str(fd < 0 ? dest : path)
        .str(": errno ").u64(uint64_t(err)).end_line().say();
  }
  errno = err ? err : saved;
  return err ? -1 : 0;
}

}  // namespace

bool prof_due(size_t) {
  if (t_busy) return false;   // (the count stays below zero: prof_take draws the next one)
  int state = g_state.load(std::memory_order_acquire);
  if (state != kOn) {
    t_prof_left = state == kOff ? kNever : kRecheck;
    return false;
  }
  if (!t_rng) {   // the thread's first request: set up, not sampled
    t_rng = mix(uint64_t(uintptr_t(&t_rng)) ^ uint64_t(__builtin_ia32_rdtsc())) | 1;
    t_prof_left = draw();
    return false;
  }
  return true;
}

void *prof_take(size_t n, size_t align, bool zero) {
  t_busy = 1;   // (the requests below are not samples)
  int saved = errno;
  void *raw[kFrames + 8];
  int got = unw_backtrace(raw, int(sizeof raw / sizeof raw[0]));
  errno = saved;
  ProfRecord r = make_record(n, raw, got);
  void *p = nullptr;
  if (n <= kMaxSmall && align <= kPageSize) {   // a slot
    {
      Guard g(g_lock);
      if (g_live < kCap / 4 * 3 && (p = slot_take()) != nullptr) put(p, r);
      else ++g_dropped;
    }
    if (p && zero) memset(p, 0, n);   // (a slot freed before holds its last user's bytes)
    if (!p) p = zero ? calloc(n, 1) : align ? memalign_impl(align, n) : malloc_impl(n);   // not a sample
  } else {
    p = zero ? next_calloc(n) : align ? next_memalign(align, n) : next_malloc(n);
    if (p) {
      Guard g(g_lock);
      put(p, r);
    }
  }
  t_busy = 0;
  t_prof_left = draw();
  return p;
}

bool prof_free(void *p) {
  bool slot = in_slots(p);
  if (!slot && g_filter[filter_at(p)].load(std::memory_order_relaxed) == 0) return false;   // not a sample
  if (t_busy) return slot;   // a signal handler inside the profiler (see the top): a slot is left
  t_busy = 1;
  bool found;
  {
    Guard g(g_lock);
    found = remove(p, nullptr);
    if (slot && found) slot_give(p);
  }
  t_busy = 0;
  // (a slot given twice would serve two samples at once: stop instead)
  if (slot && !found) fatal("free of a sampled block that is not live (double free, or not its start)", "free", p);
  return slot;
}

bool prof_in_slots(const void *p) { return in_slots(p); }

// A slot's sample stays one, with its allocation's stack: up to a page it stays where it is (the
// page is its own), beyond it moves to the next allocator, as any large block.
void *prof_realloc_slot(void *p, size_t n) {
  if (n == 0) {   // glibc: realloc(p, 0) frees p and returns NULL
    prof_free(p);
    return nullptr;
  }
  if (t_busy) {   // a signal handler inside the profiler (see the top): the table is not touched
    if (n <= kPageSize) return p;
    void *q = next_malloc(n);
    if (q) memcpy(q, p, kPageSize);   // (the whole page is the block's; the slot is left)
    return q;
  }
  void *q = n <= kPageSize ? p : next_malloc(n);
  if (!q) return nullptr;
  bool found = false;
  t_busy = 1;
  {
    Guard g(g_lock);
    ProfRecord r;
    if (q == p) {
      for (size_t i = home(p); g_table[i].ptr; i = (i + 1) & (kCap - 1))
        if (g_table[i].ptr == p) { g_table[i].r.size = n; found = true; break; }
    } else if ((found = remove(p, &r))) {
      memcpy(q, p, r.size);
      slot_give(p);
      r.size = n;
      put(q, r);
    }
  }
  t_busy = 0;
  if (!found) fatal("realloc of a sampled block that is not live (freed, or not its start)", "realloc", p);
  return q;
}

size_t prof_slot_size(void *p) {
  if (t_busy) return kPageSize;   // (a signal handler inside the profiler: the page is the block's)
  size_t n = kPageSize;
  t_busy = 1;
  {
    Guard g(g_lock);
    size_t i = home(p);
    for (; g_table[i].ptr; i = (i + 1) & (kCap - 1))
      if (g_table[i].ptr == p) { n = g_table[i].r.size; break; }
  }
  t_busy = 0;
  return n;
}

bool prof_unlink(void *p, ProfRecord *out) {
  if (g_filter[filter_at(p)].load(std::memory_order_relaxed) == 0 || t_busy) return false;
  t_busy = 1;
  bool found;
  {
    Guard g(g_lock);
    found = remove(p, out);
  }
  t_busy = 0;
  return found;
}

void prof_relink(void *q, size_t n, const ProfRecord &r) {
  if (owns(q) || t_busy) return;   // (a block of the region is never a sample: its free is not seen)
  ProfRecord moved = r;
  moved.size = n;
  t_busy = 1;
  {
    Guard g(g_lock);
    put(q, moved);
  }
  t_busy = 0;
}

void prof_start() {
  const char *dest = g_options.ZNS_PROF;
  if (!dest[0]) {
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  void *t = mmap(nullptr, kCap * sizeof(Sample), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *f = mmap(nullptr, kFilter * sizeof(uint16_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (t == MAP_FAILED || f == MAP_FAILED) {
    char m[200];
    Buf(m, sizeof m).str("zns-slab: no memory for the heap profiler's table: no profile\n").say();
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  void *sl = mmap(nullptr, kCap * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (sl == MAP_FAILED) {
    char m[200];
    Buf(m, sizeof m).str("zns-slab: no address space for the heap profiler's samples: no profile\n").say();
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  g_slots = static_cast<char *>(sl);
  g_slots_bytes.store(kCap * kPageSize, std::memory_order_relaxed);
  g_table = static_cast<Sample *>(t);
  g_filter = static_cast<std::atomic<uint16_t> *>(f);
  g_rate = double(g_options.ZNS_PROF_RATE ? g_options.ZNS_PROF_RATE : 1);
  // libunwind's cache of unwind info per thread: no lock of its own to be held across a fork
  unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
  pthread_atfork(fork_prepare, fork_parent, fork_child);
  g_state.store(kOn, std::memory_order_release);
}

void prof_at_exit() {
  if (g_state.load(std::memory_order_acquire) != kOn || g_child_quiet) return;
  dump_path(g_options.ZNS_PROF, true);
}

}  // namespace zns::shim

using namespace zns::shim;

extern "C" ZNS_EXPORT int zns_prof_dump(const char *path) {
  if (g_state.load(std::memory_order_acquire) != kOn) {
    errno = EINVAL;
    return -1;
  }
  return dump_path(path ? path : zns::g_options.ZNS_PROF, false);
}
