// The sampled heap profiler, in libzns_slab_prof.so only: that library is the shim's sources built
// with -DZNS_PROFILER plus this file, which loads libunwind (start_unwinder); the default library has none of it, so
// its fast paths pay nothing (DESIGN "The heap profiler").
//
// Sampling.  Each thread counts down the bytes it requests (t_prof_left, in the shim's entry
// points); the request that takes the count below zero is a sample, and the next count is drawn
// from an exponential distribution of mean ZNS_PROF_RATE.  The samples are then a Poisson process
// over the bytes allocated: a request of n bytes is sampled with probability 1 - exp(-n / rate),
// which is what google-pprof's "heap_v2" reader assumes when it scales them back up.
//
// Where a sample lives.  Up to 4 KiB (the sizes the slabs serve): a page of its own in the
// profiler's slot range (reserved at start, kCap pages; a freed one's page goes back to the OS),
// so that a free of one (a signal handler's too) never enters another allocator.  Larger ones: the
// next allocator's, like every large block.  Neither is in the slab region, so their frees reach
// next_free and not the free fast path; there, for a pointer outside the slot range, a counting
// filter (one load) answers "not a sample" for nearly all of them.  A sample's call stack
// (libunwind's unw_backtrace, this library's own frames dropped; its memory check: see
// start_unwinder) and size go into the table of live samples, open addressing on the address
// with linear probing and backward-shift deletion (no tombstones: a lookup stops at the first
// empty slot), under one lock.  The profile lists the live samples.
//
// Discipline: nothing here allocates from the heap (the table, the filter and the slots are
// mmap'ed at start); requests made while the thread is inside the profiler (the unwinder's, the
// next allocator's, a signal handler's) are never samples (t_busy).  The locks are spin locks that
// name their holder: a signal handler's call on top of its own thread's hold does not wait (Held.ok
// is false).  Then its free of a slot is deferred (t_deferred: the holder gives it back as it lets
// go); its free or realloc of a large sample leaves that sample's record behind (the profile then
// shows a block that is gone: it never loses nor corrupts a block).  Forks: see fork_child.
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdarg>
#include <cstring>
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
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

__thread uintptr_t t_prof_left __attribute__((tls_model("initial-exec"))) = 0;
std::atomic<bool> g_prof_live{false};
// shim/deepbind.cpp: the `ret` byte a deep-bound dlopen in this thread returns through, or 0
extern __thread uintptr_t t_detour_ret __attribute__((tls_model("initial-exec")));

namespace {

__thread uint64_t t_rng __attribute__((tls_model("initial-exec"))) = 0;   // 0: countdown not set up
__thread uint32_t t_busy __attribute__((tls_model("initial-exec"))) = 0;  // inside the profiler
// Slots that signal handlers freed while their thread held the table lock, linked through their
// pages' first word; the holder gives them back before it lets go (Held).  Pushed by compare-
// exchange, taken whole by one exchange (handlers may nest).
__thread void *t_deferred __attribute__((tls_model("initial-exec"))) = nullptr;

enum : int { kUndecided = 0, kOn = 1, kOff = 2 };
std::atomic<int> g_state{kUndecided};   // decided by prof_start (the shim's constructor)
double g_rate = 524288;
constexpr uintptr_t kNever = uintptr_t(1) << 62;   // profiling off: the countdown of a lifetime
constexpr uintptr_t kRecheck = 1 << 16;           // not decided yet: ask again after 64 KiB

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
size_t g_live;                         // samples in the table (under the table lock)
uint64_t g_dropped;                    // samples not recorded: the table was full (under the table lock)
bool g_changing;                       // the table may be being changed (under the lock; fork_child)
// The locks: spin locks whose word names the holder (the address of its t_busy), so that a call
// from a signal handler that interrupted the holder sees that it is its own thread's and does not
// wait for it (then ok is false, and the call does without; see the top).  g_table_lock guards
// the table and the slot list, never across a system call but the deferred slots' madvise;
// g_dump_lock serialises the dumps (which write outside the table lock: a dump into a pipe that
// another thread of the program reads, while that thread samples, once deadlocked).
struct OwnerLock {
  std::atomic<uintptr_t> owner{0};
  bool acquire() {   // false: this thread holds it already (a signal handler on top)
    uintptr_t me = uintptr_t(&t_busy);
    for (unsigned spins = 0;; ++spins) {
      uintptr_t o = 0;
      if (owner.compare_exchange_weak(o, me, std::memory_order_acquire, std::memory_order_relaxed)) return true;
      if (o == me) return false;
      if (spins < 64) cpu_relax();
      else os_sched_yield();
    }
  }
  void release() { owner.store(0, std::memory_order_release); }
};
OwnerLock g_table_lock, g_dump_lock;
void drain_deferred();
// g_table_lock, held (if ok).  Requests made meanwhile are not samples.
struct Held {
  uint32_t busy_was = t_busy;
  bool ok;
  Held() {
    t_busy = 1;
    ok = g_table_lock.acquire();
    if (ok) g_changing = true;
  }
  ~Held() {
    if (ok) {
      drain_deferred();
      g_changing = false;
      g_table_lock.release();
    }
    t_busy = busy_was;
  }
  Held(const Held &) = delete;
  Held &operator=(const Held &) = delete;
};
char *g_slots;                         // kCap pages: the small samples (see the top)
std::atomic<uintptr_t> g_slots_bytes{0};   // kCap pages once the range exists
uint32_t g_slot_bump;                  // slots handed out at least once (under the table lock)
uint32_t g_slot_free = kNil32;         // the last slot given back; g_slot_next links the others
uint32_t *g_slot_next;                 // per slot, the next free one (kCap entries, mmap'ed)
bool g_child_quiet;                    // no dump: the path is another process's (a forked child's
                                       // without %p, or claimed by another process: claim_path)

size_t home(const void *p) { return size_t((uint64_t(uintptr_t(p)) * 0x9E3779B97F4A7C15ull) >> (64 - kCapShift)); }
size_t filter_at(const void *p) {
  return size_t((uint64_t(uintptr_t(p)) * 0xC2B2AE3D27D4EB4Full) >> (64 - kFilterShift));
}
bool ours(const void *pc) { return pc >= __ehdr_start && pc < _end; }
bool in_slots(const void *p) {
  return uintptr_t(p) - uintptr_t(g_slots) < g_slots_bytes.load(std::memory_order_relaxed);
}

uint64_t mix(uint64_t x) {   // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
// Bytes until this thread's next sample: exponential, mean g_rate.
uintptr_t draw() {
  if (g_rate <= 1) return 0;   // every request of a byte or more
  uint64_t x = t_rng;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;   // xorshift64
  t_rng = x;
  double u = double((x >> 11) + 1) * 0x1.0p-53;   // (0, 1]
  double v = -std::log(u) * g_rate;
  return v >= double(kNever) ? kNever : uintptr_t(v);
}

// A slot's page, or null when all kCap are taken (under the table lock).
void *slot_take() {
  if (g_slot_free != kNil32) {
    uint32_t i = g_slot_free;
    g_slot_free = g_slot_next[i];
    return g_slots + size_t(i) * kPageSize;
  }
  if (g_slot_bump == kCap) return nullptr;
  return g_slots + size_t(g_slot_bump++) * kPageSize;
}
// (under the table lock) slot p back on the list.  Its page must have gone back to the OS
// first (slot_page_back): the next sample there may be written at once.
void slot_push(void *p) {
  uint32_t i = uint32_t((static_cast<char *>(p) - g_slots) / kPageSize);
  g_slot_next[i] = g_slot_free;
  g_slot_free = i;
}
// Slot p's page goes back to the OS: a program that freed its samples holds no page for them (a
// page per sample is the profiler's price).
void slot_page_back(void *p) {
  madvise(reinterpret_cast<void *>(uintptr_t(p) & ~uintptr_t(kPageSize - 1)), kPageSize, MADV_DONTNEED);
}

// Put r in the table for block p (under the table lock).
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
  s.r = r;
  __atomic_store_n(&s.ptr, p, __ATOMIC_RELEASE);   // (after the record: see fork_child)
  g_prof_live.store(true, std::memory_order_relaxed);
}

// The record of a sample of n bytes with the stack raw[0..got) (the profiler's own frames first).
ProfRecord make_record(size_t n, void *const *raw, int got) {
  ProfRecord r;
  r.size = n;
  r.depth = 0;
  // this library's frames, wherever they are (zns_deep_dlopen's, under the loader's frames of a
  // deep-bound dlopen), and the `ret` byte of the caller's _init that the detour of that dlopen
  // returns through (libunwind does not stop there: it walks on by the frame pointer)
  uintptr_t detour = t_detour_ret;
  for (int i = 0; i < got && r.depth < kFrames; ++i)
    if (!ours(raw[i]) && uintptr_t(raw[i]) != detour) r.pc[r.depth++] = raw[i];
  return r;
}

// Take p's record out (under the table lock) into *out, if not null, moving later ones of its
// probe run back into the gap.  False if p is not a sample.
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

// (under the table lock) the slots signal handlers freed meanwhile (see t_deferred)
void drain_deferred() {
  while (void *l = __atomic_exchange_n(&t_deferred, nullptr, __ATOMIC_RELAXED)) {
    while (l) {
      void *next = *static_cast<void **>(l);
      if (!remove(l, nullptr))
        fatal("free of a sampled block that is not live (double free, or not its start)", "free", l);
      slot_page_back(l);   // (a rare path: a system call under the lock)
      slot_push(l);
      l = next;
    }
  }
}

// The profile's file when its path has no %p: opened and locked (flock) at start, so that another
// process of the same path (a program this one runs, with the same environment) writes nothing
// over it; kept open to the end, out of the program's way (its number above the program's own,
// close-on-exec).  -1 when the path has %p (each process its own file, opened at each dump).
int g_path_fd = -1;
dev_t g_path_dev;
ino_t g_path_ino;

bool same_file(int fd) {
  struct stat st;
  return fd >= 0 && os_fstat(fd, &st) == 0 && st.st_dev == g_path_dev && st.st_ino == g_path_ino;
}

void say_cannot(const char *what, const char *path, int err) {
  char m[700];
  Buf b(m, sizeof m);
  b.str("zns-slab: ").str(what).str(path).str(": ");
  if (err == EDEADLK) b.str("asked for from a signal handler inside the profiler");
  else b.file_error(err);
  b.end_line().say();
}

void start_interval();   // (ZNS_PROF_INTERVAL_MS, below)

// A fork's child.  The lock is not taken across forks: a thread that another one's fork would
// wait for may itself wait for it (a signal handler's free of a sample that interrupted that
// thread inside glibc's malloc, whose arena lock the fork takes after the handlers: a deadlock
// the first version had).  So the child resets it, and if a thread was changing the table at the
// fork (g_changing), builds the table again from what it holds: a record a backward shift had
// copied is there twice (one is kept), the one being put or taken out is there or not (as it was
// in the child's memory), and a slot being taken or given is out of the list (lost to the child).
void rebuild() {
  size_t bytes = kCap * sizeof(Sample);
  void *m = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) {   // no profile in this child, and its frees of samples are not checked
    g_slots_bytes.store(0, std::memory_order_relaxed);
    g_child_quiet = true;
    return;
  }
  Sample *old = static_cast<Sample *>(m);
  size_t n = 0;
  for (size_t i = 0; i < kCap; ++i)   // (no memset of the table: its untouched pages stay so)
    if (g_table[i].ptr) {
      old[n++] = g_table[i];
      g_table[i].ptr = nullptr;
    }
  memset(static_cast<void *>(g_filter), 0, kFilter * sizeof(uint16_t));
  g_live = 0;
  for (size_t i = 0; i < n; ++i) put(old[i].ptr, old[i].r);
  munmap(m, bytes);
}

ZNS_FORK_CODE void fork_child() {
  g_table_lock.owner.store(0, std::memory_order_relaxed);   // (a holder is not in the child)
  g_dump_lock.owner.store(0, std::memory_order_relaxed);
  if (g_changing) rebuild();
  g_changing = false;
  if (!path_per_pid(g_options.ZNS_PROF)) {   // the parent's file is the parent's
    g_child_quiet = true;
    if (same_file(g_path_fd)) os_close(g_path_fd);   // (the parent's lock stays: it holds its own)
    g_path_fd = -1;
  }
  start_interval();   // (a thread of its own, if its path is its own)
}

char g_dump_mem[1 << 16];   // the dump's text buffer (under g_dump_lock)

// The profile of the live samples to fd: 0, or the errno value of the write that failed.  The
// records are copied out under the table lock, and written after it is let go.
int dump_to(int fd) {
  QuietWrite q;   // (first: no cancellation while a lock is held)
  if (!g_dump_lock.acquire()) return EDEADLK;   // (a signal handler on top of this thread's dump)
  uint32_t busy_was = t_busy;
  t_busy = 1;
  int err = 0;
  size_t bytes_map = kCap * sizeof(Sample), n = 0;
  void *m = mmap(nullptr, bytes_map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  Sample *copy = m == MAP_FAILED ? nullptr : static_cast<Sample *>(m);
  if (!copy) err = ENOMEM;
  else {
    Held h;
    if (!h.ok) err = EDEADLK;   // (zns_prof_dump from a signal handler on top of the profiler)
    else
      for (size_t i = 0; i < kCap; ++i)
        if (g_table[i].ptr) copy[n++] = g_table[i];
  }
  if (!err) {
    Buf b(g_dump_mem, sizeof g_dump_mem);
    uint64_t bytes = 0;
    for (size_t i = 0; i < n; ++i) bytes += copy[i].r.size;
    // gperftools' sampled heap profile; the columns in brackets (allocated since start) are the
    // live ones again, as in its heap_v2 samples
    b.str("heap profile: ").u64(n).str(": ").u64(bytes).str(" [").u64(n).str(": ").u64(bytes)
        .str("] @ heap_v2/").u64(uint64_t(g_rate)).chr('\n');
    // every stack starts in malloc (google-pprof drops the allocator's frames it knows by name):
    // this library's malloc, not ::malloc (a program's PLT stub in a program built without PIE)
    void *top = reinterpret_cast<void *>(&zns_malloc_here);
    for (size_t i = 0; i < n && !err; ++i) {
      const ProfRecord &r = copy[i].r;
      b.str("1: ").u64(r.size).str(" [1: ").u64(r.size).str("] @ ").hex(uintptr_t(top));
      for (uint64_t f = 0; f < r.depth; ++f) b.chr(' ').hex(uintptr_t(r.pc[f]));
      b.chr('\n');
      if (b.size() > sizeof g_dump_mem - 4096) err = b.flush(fd);
    }
    // the address map, for the symbols
    if (!err) {
      b.str("\nMAPPED_LIBRARIES:\n");
      err = b.flush(fd);
    }
    // (the thread's: once the main thread has exited, /proc/self/maps reads empty, and
    // google-pprof named nothing; before Linux 3.17 there is only /proc/self)
    int maps = err ? -1 : os_open("/proc/thread-self/maps", O_RDONLY | O_CLOEXEC);
    if (maps < 0 && !err) maps = os_open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (maps >= 0) maps = fd_out_of_the_way(maps);   // (as the dump's own, in dump_path)
    if (maps >= 0) {
      for (;;) {
        ssize_t r = os_read(maps, g_dump_mem, sizeof g_dump_mem);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if ((err = write_all(fd, g_dump_mem, size_t(r))) != 0) break;
      }
      os_close(maps);
    }
    if (err) q.failed(err);
  }
  if (copy) munmap(m, bytes_map);
  t_busy = busy_was;
  g_dump_lock.release();
  return err;
}

// At start: a path without %p is this process's if no other live process holds it.  False (and a
// line on stderr) when it cannot be written at all; a path another process holds is left to it
// quietly (g_child_quiet: it is that process's profile, and this one's is not asked for).
bool claim_path(const char *dest) {
  if (path_per_pid(dest)) return true;
  // (open_dump: a FIFO without a reader must not hold the program up before main)
  int fd = open_dump(dest, false, false);
  if (fd < 0 && errno == ENXIO) return true;   // a FIFO nobody reads yet: opened at the dump
                                               // (unclaimed: a program it runs may write first)
  if (fd < 0) {
    say_cannot("cannot write the heap profile to ", dest, errno);
    return false;
  }
  fd = fd_out_of_the_way(fd);
  struct stat st;
  if (os_flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) {
    os_close(fd);
    g_child_quiet = true;
    return true;
  }
  if (os_fstat(fd, &st) != 0) {
    os_close(fd);
    return true;   // (opened again at the dump)
  }
  // A FIFO whose reader waits is kept open too: a close would be its reader's end of file.
  g_path_fd = fd;
  g_path_dev = st.st_dev;
  g_path_ino = st.st_ino;
  return true;
}

// zns_prof_dump's work (path null: the ZNS_PROF file); -1 with errno set, or 0.
int dump_path(const char *path_or_null, bool say) {
  const char *dest = path_or_null ? path_or_null : g_options.ZNS_PROF;
  char path[512];
  int saved = errno;
  int fd = -1;
  bool own = !path_or_null && same_file(g_path_fd);
  if (own) {
    fd = g_path_fd;
    // (a FIFO: written as it is; the program's own stdout or stderr file: appended to, never
    // emptied, as ZNS_PROF=/dev/stderr erased the program's messages)
    if (is_program_output(fd)) os_fcntl(fd, F_SETFL, os_fcntl(fd, F_GETFL) | O_APPEND);
    else if (os_lseek(fd, 0, SEEK_SET) != 0 || os_ftruncate(fd, 0) != 0) {}
  } else {
    errno = ENAMETOOLONG;
    if (expand_path(dest, path, sizeof path)) {
      // (a FIFO without a reader fails with ENXIO instead of hanging the exit)
      // (moved above the program's numbers at once: a dump takes milliseconds, in which a
      // program thread's dup2 onto the number it had, a shell's `exec 3>file`, would have closed
      // it under the dump and had the rest written into the program's file)
      fd = open_dump(path, true, false);
      if (fd >= 0) fd = fd_out_of_the_way(fd);
      dest = path;
    }
  }
  int err = fd < 0 ? errno : dump_to(fd);
  if (fd >= 0 && !own) os_close(fd);
  if (err && say) say_cannot("cannot write the heap profile to ", dest, err);
  uint64_t dropped = __atomic_load_n(&g_dropped, __ATOMIC_RELAXED);
  if (!err && dropped) {
    char m[700];
    Buf(m, sizeof m).str("zns-slab: heap profile ").str(dest).str(": ").u64(dropped)
        .str(" samples were not recorded (more than ").u64(kCap / 4 * 3)
        .str(" live at once): it undercounts; a larger ZNS_PROF_RATE takes fewer").end_line().say();
  }
  errno = err ? err : saved;
  return err ? -1 : 0;
}

// ZNS_PROF_INTERVAL_MS: the profile every so often to PATH.1, PATH.2, ... (the path expanded now:
// a forked child starts a thread of its own, with %p, and counts from 1 again).
uint32_t g_interval_seq;
void *interval_thread(void *) {
  uint64_t every = g_options.ZNS_PROF_INTERVAL_MS;
  char base[512], path[540];
  if (!expand_path(g_options.ZNS_PROF, base, sizeof base)) {
    say_cannot("cannot write the heap profile to ", g_options.ZNS_PROF, ENAMETOOLONG);
    return nullptr;
  }
  // PATH.N next to a device or a FIFO (ZNS_PROF=/dev/null) would be files in /dev: only next to
  // a regular file, or a path not there yet
  struct stat st;
  if (os_stat(base, &st) == 0 && !S_ISREG(st.st_mode)) {
    char m[700];
    Buf(m, sizeof m).str("zns-slab: ZNS_PROF_INTERVAL_MS: ").str(base)
        .str(" is not a regular file, so no PATH.1, PATH.2, ... are written next to it").end_line().say();
    return nullptr;
  }
  for (;;) {
    timespec ts{time_t(every / 1000), long(every % 1000) * 1000000};
    while (os_nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    end_process_if_alone();   // (the main thread's pthread_exit: see platform.h)
    if (g_child_quiet) return nullptr;   // (another process's path: see claim_path)
    // PATH.N.tmp, renamed once whole: a process that ends in the middle leaves no PATH.N cut short
    ++g_interval_seq;
    Buf(path, sizeof path - 1).str(base).chr('.').u64(g_interval_seq).str(".tmp").chr('\0');
    path[sizeof path - 1] = 0;
    if (dump_path(path, true) != 0) return nullptr;   // (said there)
    char final_path[540];
    Buf(final_path, sizeof final_path - 1).str(base).chr('.').u64(g_interval_seq).chr('\0');
    final_path[sizeof final_path - 1] = 0;
    if (os_rename(path, final_path) != 0) return nullptr;
  }
}

void start_interval() {
  g_interval_seq = 0;
  if (g_options.ZNS_PROF_INTERVAL_MS > 0 && !g_child_quiet && !start_quiet_thread(interval_thread)) {
    char m[100];
    Buf(m, sizeof m).str("zns-slab: cannot start the heap profiler's thread\n").say();
  }
}

}  // namespace

bool prof_due(size_t n) {
  if (t_busy) {   // inside the profiler: no sample now, the next request outside it is one
    t_prof_left = 0;   // (prof_take and prof_adopt draw a count as they finish)
    return false;
  }
  int state = g_state.load(std::memory_order_acquire);
  if (state != kOn) {
    t_prof_left = state == kOff ? kNever : kRecheck;
    return false;
  }
  if (!t_rng) {   // the thread's first request: its countdown starts, and counts this one
    t_rng = mix(uint64_t(uintptr_t(&t_rng)) ^ cycle_counter()) | 1;
    uintptr_t left = draw();
    if (n < left) {
      t_prof_left = left - n;
      return false;
    }
  }
  return true;   // (prof_take, or prof_adopt, draws the next count)
}

namespace {
// libunwind, loaded by prof_start (dlopen, RTLD_LOCAL: linked, it came before libgcc_s in the
// global scope, and every C++ exception of the program was thrown by libunwind's
// _Unwind_RaiseException; loaded this way it serves only here, and a program preloaded with this
// library without ZNS_PROF never loads it).
#define ZNS_STR2(x) #x
#define ZNS_STR(x) ZNS_STR2(x)
#ifndef ZNS_UNWIND_SONAME
#define ZNS_UNWIND_SONAME "libunwind.so.8"
#endif
int (*g_backtrace)(void **, int);

// libunwind's memory check, redirected.  Where its walk guesses a frame by the frame pointer (no
// unwind entry covers it) and in some CFI it evaluates (a walk from fgets through an optimised
// main), libunwind (1.6, and later ones alike) checks that an address can be read by reading a
// byte out of a pipe it opened at its set-up and writing a byte of the address into it (EFAULT:
// it cannot).  It keeps the pipe's two numbers and re-opens it when a read fails.  The pipe took
// 3 and 4 (every number a profiled program opened came two later), and a daemon that closed every
// descriptor and opened its own got them back: libunwind read a byte from its socket, wrote one
// into the next and, when a read failed, closed the program's descriptors to re-open its pipe
// (GNU screen's server lost its listening socket).  Keeping the pipe high and looking at it
// before each walk did not hold against a thread that closed everything during another's walk
// (a review).  So libunwind gets no pipe: its calls to pipe2, pipe, read, write, close and
// syscall come here (its PLT and GOT slots rewritten at start, before its set-up: redirect_calls).
// pipe2 hands out two numbers no descriptor can have; the others take those two and pass any other
// number on to the C library.  The check's write is answered by rt_sigprocmask with no valid
// `how`, which copies the 8 bytes in (EFAULT when they cannot be read) and then refuses (EINVAL)
// without touching the signal mask: a call every sandbox allows, about no other process, that
// works for any thread (process_vm_readv, tried first, failed once the main thread had exited,
// and under filters that refuse it).  libunwind holds no descriptor and touches none of the
// program's.  A program that had libunwind set up before this library's constructor (its own
// constructor walking a stack) left it a real pipe: from then on every one-byte read or write of
// a real descriptor by libunwind is its check (it reads the old numbers whenever a thread took
// them, fake pipe made or not): the read is refused as if the pipe were closed (EBADF), the
// write answered here, and the two closes of the old numbers that follow are not made (they may
// be the program's by then), so it re-opens through here; the old pipe stays open, unused.
constexpr int kFakeRead = 0x7ffffff0, kFakeWrite = 0x7ffffff1;   // (fs.nr_open is at most 0x7fffffc0)
bool fake(int fd) { return fd == kFakeRead || fd == kFakeWrite; }
std::atomic<bool> g_fake_pipe{false};   // redir_pipe2 ran: libunwind's pipe is ours
bool g_real_pipe;                        // libunwind was set up, with a real pipe, before the start
__thread int t_skip_closes __attribute__((tls_model("initial-exec")));

// What a write of the byte at p into libunwind's pipe would have answered.
ssize_t redir_check(const void *p, size_t n) {
  if (n == 0) return 0;
  uintptr_t word = uintptr_t(p) & ~uintptr_t(7);   // (8 bytes that hold p's: never across a page)
  if (word >= 4096 && os_syscall(SYS_rt_sigprocmask, 0x7fff, word, nullptr, 8) == -1 && errno == EINVAL) {
    errno = 0;   // (libunwind calls again while errno is EINTR)
    return 1;
  }
  errno = EFAULT;
  return -1;
}
int redir_pipe2(int fds[2], int) {
  fds[0] = kFakeRead;
  fds[1] = kFakeWrite;
  g_fake_pipe.store(true, std::memory_order_release);
  return 0;
}
int redir_pipe(int fds[2]) { return redir_pipe2(fds, 0); }
// A one-byte read or write of a real descriptor by libunwind once it was found with a real pipe:
// its check through that pipe, whenever the thread took the number (another thread may have made
// the fake pipe since), never passed on.
bool old_pipe_call(int fd, size_t n) { return n == 1 && fd >= 0 && g_real_pipe; }
ssize_t redir_read(int fd, void *b, size_t n) {
  if (fake(fd)) {
    errno = EAGAIN;   // (nothing to drain: the pipe is not broken)
    return -1;
  }
  if (old_pipe_call(fd, n)) {
    t_skip_closes = 2;   // (its closes of the old pipe's two numbers: see above)
    errno = EBADF;
    return -1;
  }
  return read(fd, b, n);
}
ssize_t redir_write(int fd, const void *b, size_t n) {
  return fake(fd) || old_pipe_call(fd, n) ? redir_check(b, n) : write(fd, b, n);
}
int redir_close(int fd) {
  if (t_skip_closes > 0) {   // (first: another thread may have made the fake pipe meanwhile, and
    --t_skip_closes;         // these two closes are then of its numbers; none may be left over)
    return 0;
  }
  return fake(fd) ? 0 : close(fd);
}
long redir_syscall(long nr, ...) {
  va_list ap;
  va_start(ap, nr);
  long a[6];
  for (long &x : a) x = va_arg(ap, long);   // (as the C library's reads all six registers)
  va_end(ap);
  if (nr == SYS_write && (fake(int(a[0])) || old_pipe_call(int(a[0]), size_t(a[2]))))
    return redir_check(reinterpret_cast<const void *>(a[1]), size_t(a[2]));
  return syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

// Load libunwind, redirect its calls, set it up; false (said) when it cannot all be done.
bool start_unwinder() {
  char m[600];
  void *h = dlopen(ZNS_UNWIND_SONAME, RTLD_NOW | RTLD_LOCAL);
  auto backtrace = h ? reinterpret_cast<int (*)(void **, int)>(dlsym(h, ZNS_STR(unw_backtrace))) : nullptr;
  auto caching = h ? reinterpret_cast<int (*)(unw_addr_space_t, unw_caching_policy_t)>(
                         dlsym(h, ZNS_STR(unw_set_caching_policy))) : nullptr;
  auto space = h ? static_cast<unw_addr_space_t *>(dlsym(h, ZNS_STR(unw_local_addr_space))) : nullptr;
  link_map *lm = nullptr;
  if (!backtrace || !caching || !space || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || !lm) {
    const char *why = h ? "not the libunwind this library was built for" : dlerror();
    Buf(m, sizeof m).str("zns-slab: the heap profiler cannot load " ZNS_UNWIND_SONAME
                         " (libunwind, which takes the stacks; Debian: libunwind8): ")
        .str(why ? why : "?").str(": no profile\n").say();
    return false;
  }
  // libunwind calls its own exported functions through its PLT, which binds in the global scope
  // first: a program that exports a copy of its own (linked statically, -rdynamic) would take
  // this library's walks, with that copy's real pipe (a review).  Not done then.
  for (const char *own : {ZNS_STR(unw_step), ZNS_STR(unw_init_local), ZNS_STR(unw_getcontext),
                          ZNS_STR(unw_local_addr_space), ZNS_STR(unw_is_signal_frame), ZNS_STR(unw_backtrace)}) {
    void *global = dlsym(RTLD_DEFAULT, own);
    if (global && global != dlsym(h, own)) {
      Buf(m, sizeof m).str("zns-slab: the heap profiler's libunwind would call the program's own copy of ")
          .str(own).str(" (exported by the program or another library): no profile\n").say();
      return false;
    }
  }
  static const char *const kNames[] = {"pipe2", "pipe", "read", "write", "close", "syscall"};
  void *const fns[] = {reinterpret_cast<void *>(&redir_pipe2), reinterpret_cast<void *>(&redir_pipe),
                       reinterpret_cast<void *>(&redir_read), reinterpret_cast<void *>(&redir_write),
                       reinterpret_cast<void *>(&redir_close), reinterpret_cast<void *>(&redir_syscall)};
  unsigned got = redirect_calls(lm->l_addr, kNames, fns, 6);
  // (its pipe made here, pipe2 or pipe; the check's write, syscall or write; the drain, read)
  if (!(got & 3u) || !(got & (1u << 3 | 1u << 5)) || !(got & (1u << 2))) {
    Buf(m, sizeof m).str("zns-slab: the heap profiler cannot redirect libunwind's memory check (which "
                         "would use a pipe among the program's descriptors): no profile\n").say();
    return false;
  }
  // its set-up, if not made yet (which makes its pipe); its cache of unwind info per thread: no
  // lock of its own to be held across a fork
  caching(*space, UNW_CACHE_PER_THREAD);
  g_real_pipe = !g_fake_pipe.load(std::memory_order_acquire);
  g_backtrace = backtrace;
  return true;
}

// The record of the request being sampled: its size and the stack above the profiler's frames.
ProfRecord capture(size_t n) {
  int saved = errno;
  void *raw[kFrames + 8];
  int got = g_backtrace(raw, int(sizeof raw / sizeof raw[0]));
  errno = saved;
  return make_record(n, raw, got);
}
}  // namespace

void *prof_take(size_t n, size_t align, bool zero) {
  t_busy = 1;   // (the requests below are not samples)
  ProfRecord r = capture(n);
  void *p = nullptr;
  if (n <= kMaxSmall && align <= kPageSize) {   // a slot
    {
      Held h;
      if (h.ok && g_live < kCap / 4 * 3 && (p = slot_take()) != nullptr) put(p, r);
      else if (h.ok) ++g_dropped;
    }
    if (p && zero) memset(p, 0, n);   // (a slot's page reads as zero, but say so)
    if (!p) p = zero ? calloc(n, 1) : align ? memalign_impl(align, n) : malloc_impl(n);   // not a sample
  } else {
    p = zero ? next_calloc(n) : align ? next_memalign(align, n) : next_malloc(n);
    if (p) {
      Held h;
      if (h.ok) put(p, r);
    }
  }
  t_busy = 0;
  t_prof_left = draw();
  return p;
}

void prof_adopt(void *q, size_t n) {
  t_busy = 1;
  if (!owns(q)) {   // (a block of the region is never a sample: its free is not seen here)
    ProfRecord r = capture(n);
    Held h;
    if (h.ok) put(q, r);
  }
  t_busy = 0;
  t_prof_left = draw();
}

bool prof_free(void *p) {
  bool slot = in_slots(p);
  if (!slot && g_filter[filter_at(p)].load(std::memory_order_relaxed) == 0) return false;   // not a sample
  bool found;
  {
    Held h;
    if (!h.ok) {   // a signal handler on top of the holder: the holder takes it back (Held)
      if (slot) {   // (a compare-exchange: a handler nested in this one may push in between)
        void *head = __atomic_load_n(&t_deferred, __ATOMIC_RELAXED);
        do *static_cast<void **>(p) = head;
        while (!__atomic_compare_exchange_n(&t_deferred, &head, p, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
      }
      return slot;
    }
    found = remove(p, nullptr);
  }
  if (!slot) return false;
  // (a slot given twice would serve two samples at once: stop instead)
  if (!found) fatal("free of a sampled block that is not live (double free, or not its start)", "free", p);
  slot_page_back(p);   // (outside the lock: the slot is no one's until it is on the list)
  Held h;
  if (h.ok) slot_push(p);
  return true;
}

bool prof_in_slots(const void *p) { return in_slots(p); }

// realloc of a slot's sample: for the profiler an allocation of n bytes by realloc's caller (see
// realloc), sampled or not anew.  A sample up to a page stays in its slot with a new record;
// anything else moves (to the next allocator's if it is a sample, else where malloc puts it).
// (Keeping the record with the new size made 200k blocks shrunk from 4 KiB to 16 B read 770 MB:
// a record weighs what the rate does, and this one had been drawn at the old size.)
void *prof_realloc_slot(void *p, size_t n) {
  if (n == 0) {   // glibc: realloc(p, 0) frees p and returns NULL
    prof_free(p);
    return nullptr;
  }
  size_t old = prof_slot_size(p);   // (stops on a block that is not live)
  bool sample = prof_sampled(n);
  if (sample && n <= kPageSize) {
    t_busy = 1;
    ProfRecord r = capture(n);
    bool found = false;
    {
      Held h;
      if (h.ok)
        for (size_t i = home(p); g_table[i].ptr; i = (i + 1) & (kCap - 1))
          if (g_table[i].ptr == p) { g_table[i].r = r; found = true; break; }
    }
    t_busy = 0;
    t_prof_left = draw();
    if (!found) fatal("realloc of a sampled block that is not live (freed, or not its start)", "realloc", p);
    return p;
  }
  int saved = errno;
  void *q = sample ? next_malloc(n) : malloc_plain(n);
  if (!q) {
    if (sample) t_prof_left = draw();
    return realloc_failed(p, n, old, saved);   // (a kept sample's record keeps its size)
  }
  memcpy(q, p, n < old ? n : old);
  prof_free(p);
  if (sample) prof_adopt(q, n);
  return q;
}

bool prof_unlink(void *p, ProfRecord *out) {
  if (g_filter[filter_at(p)].load(std::memory_order_relaxed) == 0) return false;
  Held h;
  return h.ok && remove(p, out);
}

void prof_restore(void *p, const ProfRecord &r) {
  Held h;
  if (h.ok) put(p, r);
}

size_t prof_slot_size(void *p) {
  size_t n = 0;
  {
    Held h;
    if (!h.ok) return kPageSize;   // (a signal handler on top of the profiler: the page is the block's)
    for (size_t i = home(p); g_table[i].ptr; i = (i + 1) & (kCap - 1))
      if (g_table[i].ptr == p) { n = g_table[i].r.size; break; }
  }
  if (!n) fatal("malloc_usable_size of a sampled block that is not live (freed, or not its start)", "malloc_usable_size", p);
  return n;
}

void prof_start() {
  static char abs_dest[600];
  const char *dest = g_options.ZNS_PROF = absolute_path(g_options.ZNS_PROF, abs_dest, sizeof abs_dest);
  if (!dest[0]) {
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  if (!start_unwinder()) {   // (said there)
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  if (!claim_path(dest)) {   // (said there, if it is a problem)
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  void *t = mmap(nullptr, kCap * sizeof(Sample), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *f = mmap(nullptr, kFilter * sizeof(uint16_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *nx = mmap(nullptr, kCap * sizeof(uint32_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  void *sl = mmap(nullptr, kCap * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (t == MAP_FAILED || f == MAP_FAILED || nx == MAP_FAILED || sl == MAP_FAILED) {
    char m[200];
    Buf(m, sizeof m).str("zns-slab: no memory for the heap profiler's tables: no profile\n").say();
    g_state.store(kOff, std::memory_order_release);
    return;
  }
  g_slots = static_cast<char *>(sl);
  g_slot_next = static_cast<uint32_t *>(nx);
  g_slots_bytes.store(kCap * kPageSize, std::memory_order_relaxed);
  g_table = static_cast<Sample *>(t);
  g_filter = static_cast<std::atomic<uint16_t> *>(f);
  g_rate = double(g_options.ZNS_PROF_RATE ? g_options.ZNS_PROF_RATE : 1);
  pthread_atfork(nullptr, nullptr, fork_child);
  g_state.store(kOn, std::memory_order_release);
  // (the loading of libunwind allocated while the state was undecided, which put this thread's
  // next look 64 KiB away: the first 117 samples of tests/prof prof_deepbind went unseen)
  t_prof_left = 0;
  start_interval();
}

void prof_at_exit() {
  if (g_state.load(std::memory_order_acquire) != kOn || g_child_quiet) return;
  dump_path(nullptr, true);
}

}  // namespace zns::shim

using namespace zns::shim;

extern "C" ZNS_EXPORT int zns_prof_dump(const char *path) {
  if (g_state.load(std::memory_order_acquire) != kOn) {
    errno = EINVAL;
    return -1;
  }
  if (!path && g_child_quiet) {   // (another process's file: see claim_path)
    errno = EBUSY;
    return -1;
  }
  return dump_path(path, false);
}
