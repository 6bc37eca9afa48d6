// The tier: policy (which slabs are cold), mechanism (uffd or madvise), the handler thread, fork,
// and its statistics.  Locks: g_tier_lock is taken before any heap lock (the eviction claims a
// slab under its class lock; fork_prepare takes it first of all).  The hooks the heap calls from
// its own paths (tier_take, tier_release, tier_is_out, tier_purge) never take it.
//
// Invariants
//   - Only shared and parked slabs with live blocks leave RAM (a cache's current slab is hot by
//     definition), and only while claimed (tier_claim): nobody adopts, unparks or frees the slab
//     to the depot while its bytes are being written out, so its pages keep their meaning.
//   - uffd: a slab is write-protected before it is written to the file and dropped after, all under
//     g_tier_lock; a store in between waits in a write-protect fault that is served (under the same
//     lock) only after the drop, and so retries as a missing fault and reads the slab back first.
//   - TierMeta.state of a head page: kResident -> kOut (evict, claimed) -> kResident (fault-in, or
//     tier_take when a parked slab purged in place while out is unparked) or kHole (the slab went
//     back to the depot while out) -> kResident (tier_take: zero pages).  g_out_pages counts the
//     kOut pages: every way out of kOut subtracts.
//   - The handler thread never allocates and never touches the region itself: it reads and writes
//     the file through a static bounce buffer, and asks mincore() before pwrite() reads a slab.
#include "tier/tier.h"

#include <atomic>
#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <linux/close_range.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "core/heap.h"
#include "core/options.h"
#include "core/platform.h"

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif
#ifndef O_TMPFILE
#define O_TMPFILE (020000000 | O_DIRECTORY)
#endif

namespace zns {

int g_tier_mode = kTierOff;
std::atomic<bool> g_tier_child_pending;

namespace {

// The mode this process line was set up with (ZNS_TIER, after the uffd -> madvise fallback): what
// a forked child's own tier will be.  Off for good once a child could not have one.
int g_line_mode = kTierOff;
uint64_t g_child_due_ms;   // now_ms() at which a forked child's own tier is due
long g_child_pid;          // that child's pid: a vfork child of it shares this memory, not the pid
thread_local bool t_fork_locked;   // tier_fork_prepare took g_tier_lock (each forking thread's own:
                                   // two may fork at once, the page-in by touches lets go of it)
thread_local sigset_t t_fork_sigmask;   // the forker's own mask, while it blocks every signal
thread_local bool t_fork_blocked;      // ... which tier_fork_prepare blocked (decided by the line
                                       // mode before the lock: g_tier_mode may change under it)

enum : uint8_t { kResident = 0, kOut = 1, kHole = 2 };

// Per slab group (core/size_class.h), by the slab's head page: tm_at.  state and armed are touched
// by heap hooks too;
// the rest only by the evicting / handling thread under g_tier_lock.
struct TierMeta {
  std::atomic<uint8_t> state;
  std::atomic<uint8_t> armed;   // uffd: write-protected to watch for stores
  // uffd, a hint: the file should hold the slab's bytes as they are in RAM (it was written out or
  // read back write-protected, and every lifting of the protection we do clears it first).  Its
  // next eviction compares RAM with the file and, when they agree, writes nothing: a read-hot
  // slab comes back without I/O debt.  Only a hint, because the kernel can drop the write
  // protection behind our back (KSM merging a page of the slab: the store after it copies the
  // page without a fault), and tier_take can race a page-in; the comparison makes either harmless.
  std::atomic<uint8_t> filed;
  uint8_t backoff;              // cold window = ZNS_TIER_COLD_MS << (backoff + pressure)
  uint8_t watched;              // sig/since are valid
  uint8_t pinned;               // the kernel would not drop its pages (mlock): in RAM for this life
  uint8_t unused_[2];
  uint32_t sig;                 // allocator activity signature when last seen
  uint32_t since;               // now_ms (low 32 bits) of the last activity seen (malloc/free/store)
  uint32_t out_at;              // now_ms when it left RAM
};
static_assert(sizeof(TierMeta) == 20);

TierMeta *g_tm;            // one per slab group (address space only: committed as touched)
inline TierMeta &tm_at(uint32_t head) { return g_tm[head / kGroupPages]; }
char *g_base;              // region base, for the madvise mode's file offsets
size_t g_bytes;
int g_fd = -1;             // backing file
dev_t g_fd_dev;            // its identity: a program that closes every descriptor (daemons do)
ino_t g_fd_ino;            // must not make us write a slab into whatever file reuses the number
dev_t g_uffd_dev;          // the userfaultfd's, so that a forked child does not close a file of the
ino_t g_uffd_ino;          // program's that took its number
std::atomic<bool> g_fd_lost;
thread_local bool t_tier_thread;   // this thread is the tier's
thread_local bool t_private_fds;   // this thread (the tier's) has its own descriptor table
thread_local bool t_room_refused;  // tier_room_refused (madvise)
std::atomic<bool> g_room_refused_said;   // (one line per process)
std::atomic<bool> g_private_fds;   // the tier thread has one (private_fd_table)
int g_uffd = -1;
bool g_registered;         // uffd: the region is registered (set before the thread serves)
Lock g_tier_lock;
Lock g_grow_lock;          // madvise: file room
uint64_t g_reserved_pages; // madvise: pages below this have room in the file (fallocate)

// A fork holds g_tier_lock from tier_fork_prepare to tier_fork_parent, and the forking thread
// goes on touching the heap in between: glibc's fork() takes the lock in its nss state (a heap
// block) after the atfork handlers ran, and handlers registered before ours run after it.  A
// store into an armed slab (write-protected) then waits for the tier thread, which took the lock
// to serve it: a deadlock (CPython's test_os and test_logging under ZNS_TIER=uffd, 2026-12-05;
// tests/tier `nss-fork`).  So, in uffd mode, the forker opens a window once its page-ins are done,
// and until it closes it touches nothing of the tier's: meanwhile the tier thread serves faults
// without the lock (counted in g_window_serving, which the forker waits out before it lets go of
// the lock), and never waits for the lock for long (its scan gives up instead).  The forker blocks
// every signal while it holds the lock outside the window (its page-ins, and from the close to
// the unlock): a handler's store into an armed slab there would wait for the same thread.
std::atomic<bool> g_fork_window;
std::atomic<unsigned> g_window_serving;

// The tier thread's way to g_tier_lock.  `locked`: it holds the lock.  Otherwise a fork's window
// is open: a fault service goes on without the lock (`windowed`, counted), anything else gives up.
// It waits for the lock a millisecond at a time, and looks at the window in between: a holder
// that forks opens one.  (Not try_lock and naps: while zns_tier_pageout took the lock slab by
// slab, faults were served 3x slower, found in review.)
struct TierThreadGuard {
  bool locked = false, windowed = false;
  explicit TierThreadGuard(bool serve) {
    for (;;) {
      if (serve) {
        g_window_serving.fetch_add(1, std::memory_order_seq_cst);
        if (g_fork_window.load(std::memory_order_seq_cst)) { windowed = true; return; }
        g_window_serving.fetch_sub(1, std::memory_order_seq_cst);
      } else if (g_fork_window.load(std::memory_order_seq_cst)) {
        return;
      }
      // Held: an eviction on another thread (zns_tier_pageout), a child tier's start, or a fork
      // paging slabs in (whose window may open next: so never a lock without a time limit here).
      ++t_guards;   // (see Guard)
      if (g_tier_lock.lock_within(1000000)) { locked = true; return; }
      --t_guards;
    }
  }
  ~TierThreadGuard() {
    if (locked) {
      g_tier_lock.unlock();
      --t_guards;
    }
    if (windowed) g_window_serving.fetch_sub(1, std::memory_order_seq_cst);
  }
  TierThreadGuard(const TierThreadGuard &) = delete;
  TierThreadGuard &operator=(const TierThreadGuard &) = delete;
};

// block_signals (core/platform.h): for the tier thread, and for any thread while it holds
// g_tier_lock outside a fork's window: a handler that stored into an armed or out slab there
// would wait for the tier thread, and that for the lock.

alignas(4096) char g_bounce[kMaxSlabPages * kPageSize];   // file <-> region, under g_tier_lock
alignas(4096) char g_zeros[kMaxSlabPages * kPageSize];    // never written

// ---- statistics ------------------------------------------------------------------------------------
std::atomic<uint64_t> g_slabs_out, g_clean_out, g_slabs_in, g_bytes_out, g_bytes_in, g_out_pages, g_errors,
    g_thrash, g_write_hits, g_zero_fills, g_scans, g_lat_max, g_lat_n;
std::atomic<uint64_t> g_lat_hist[40];   // fault-in service time, bucket i: [2^i, 2^(i+1)) ns
std::atomic<bool> g_error_reported;

uint64_t now_ns() {
  timespec ts;
  os_clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// QuietWrite (core/platform.h) around every write that may grow a file.  Without it, a program
// with a file-size limit (RLIMIT_FSIZE) died under the madvise tier at its first slab past it
// (fallocate on its own thread), and so did one that called zns_tier_pageout.  The tier handles
// EFBIG (the slab stays in RAM, or the request falls through).  (The tier thread blocks every
// signal.)

// One line to the program's stderr.  The tier thread's table has none (private_fd_table): there
// the program's descriptor 2 as it is now, taken from the process's table (pidfd_getfd: the same
// open file, so the same offset; a reopen through /proc would have its own, and the program's next
// line would overwrite ours).  Where that is refused (Linux before 5.6, a container without
// CAP_SYS_PTRACE, a main thread that has exited), a reopen through /proc unless it is a regular
// file (a pipe or a terminal has no offset of its own); else the line is lost.
void to_stderr(Buf &line) {
  int fd = 2;
  if (t_private_fds) {
    int pidfd = int(os_syscall(SYS_pidfd_open, os_getpid(), 0));
    fd = pidfd < 0 ? -1 : int(os_syscall(SYS_pidfd_getfd, pidfd, 2, 0));
    if (pidfd >= 0) os_close(pidfd);
    struct stat st;
    if (fd < 0 && os_stat("/proc/self/fd/2", &st) == 0 && !S_ISREG(st.st_mode))
      fd = os_open("/proc/self/fd/2", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) return;
  }
  line.say(fd);   // (stderr may be a file past a file-size limit too)
  if (fd != 2) os_close(fd);
}

void say(const char *a, const char *b = "", const char *c = "") {
  NoCancel no_cancel;   // (pidfd_getfd, open, close)
  char m[512];
  Buf line(m, sizeof m);
  line.str("zns-slab: tier: ").str(a).str(b).str(c).chr('\n');
  to_stderr(line);
}

// fatal's line and abort, from any thread: the tier thread's own table has no stderr.
[[noreturn]] void tier_fatal(const char *what, const char *call, const void *addr) {
  if (!t_private_fds) fatal(what, call, addr);
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);
  char m[512];
  Buf line(m, sizeof m);
  to_stderr(fatal_line(line, what, call, addr));
  fatal_abort();
}

void report_error(const char *what, int err) {
  g_errors.fetch_add(1, std::memory_order_relaxed);
  if (g_error_reported.exchange(true)) return;
  char m[256];
  Buf b(m, sizeof m);
  b.str("zns-slab: tier: ").str(what).str(" failed (errno ").u64(uint64_t(err))
      .str("); the slab stays in RAM (further errors are only counted)\n");
  to_stderr(b);
}

void record_latency(uint64_t ns) {
  unsigned b = ns ? 63u - unsigned(__builtin_clzll(ns)) : 0;
  if (b >= 40) b = 39;
  g_lat_hist[b].fetch_add(1, std::memory_order_relaxed);
  g_lat_n.fetch_add(1, std::memory_order_relaxed);
  uint64_t m = g_lat_max.load(std::memory_order_relaxed);
  while (ns > m && !g_lat_max.compare_exchange_weak(m, ns, std::memory_order_relaxed)) {}
}

// ---- file I/O (EINTR and short transfers handled) ----------------------------------------------------
int pwrite_all(const char *p, size_t n, off_t off) {
  QuietWrite q;
  while (n) {
    ssize_t w = os_pwrite(g_fd, p, n, off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) q.failed(errno);
    if (w <= 0) return w < 0 ? errno : ENOSPC;
    p += w; n -= size_t(w); off += w;
  }
  return 0;
}
int fallocate_quiet(int fd, int mode, off_t off, off_t len) {
  QuietWrite q;
  int r = os_fallocate(fd, mode, off, len);
  if (r != 0) q.failed(errno);
  return r;
}
int pread_all(char *p, size_t n, off_t off) {
  while (n) {
    ssize_t r = os_pread(g_fd, p, n, off);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) { __builtin_memset(p, 0, n); return 0; }   // past the end: a hole
    p += r; n -= size_t(r); off += r;
  }
  return 0;
}

inline char *page_addr(uint32_t page) { return g_region.base + size_t(page) * kPageSize; }
inline off_t page_off(uint32_t page) { return off_t(page) * off_t(kPageSize); }

// ---- userfaultfd primitives ----------------------------------------------------------------------------
void uffd_wake(char *dst, size_t len) {
  uffdio_range r{uint64_t(uintptr_t(dst)), len};
  os_ioctl(g_uffd, UFFDIO_WAKE, &r);
}

// Install src at dst, page by page where pages are already present (EEXIST: someone was first;
// *skipped says so).  wp: the pages arrive write-protected (UFFDIO_COPY_MODE_WP).  One call must
// stay inside one mapping: where the program split the region (mlock or madvise of a block),
// ENOENT, and the rest goes a page at a time.
int uffd_copy(char *dst, const char *src, size_t len, bool wp = false, bool *skipped = nullptr) {
  size_t done = 0, step = len;
  int tries = 0;
  if (skipped) *skipped = false;
  while (done < len) {
    size_t n = len - done < step ? len - done : step;
    uffdio_copy c{uint64_t(uintptr_t(dst + done)), uint64_t(uintptr_t(src + done)), n,
                  wp ? UFFDIO_COPY_MODE_WP : 0, 0};
    if (os_ioctl(g_uffd, UFFDIO_COPY, &c) == 0) { done += n; continue; }
    int e = errno;
    if (c.copy > 0) { done += size_t(c.copy); continue; }
    if (e == ENOENT && step > kPageSize) { step = kPageSize; continue; }
    if (e == EEXIST) {                                       // present already: skip that page
      done += kPageSize;
      if (skipped) *skipped = true;
      continue;
    }
    if ((e == EAGAIN || e == EINTR) && ++tries < 1000) continue;   // a concurrent madvise/fork
    return e;
  }
  uffd_wake(dst, len);   // waiters on pages that were present already
  return 0;
}

int uffd_protect(char *p, size_t len, bool on) {
  uffdio_writeprotect w{{uint64_t(uintptr_t(p)), len}, on ? UFFDIO_WRITEPROTECT_MODE_WP : 0};
  for (int tries = 0;; ++tries) {
    if (os_ioctl(g_uffd, UFFDIO_WRITEPROTECT, &w) == 0) return 0;
    if ((errno != EAGAIN && errno != EINTR) || tries > 1000) return errno;
  }
}

bool all_resident(char *p, size_t len) {
  unsigned char v[kMaxSlabPages];
  if (os_mincore(p, len, v) != 0) return false;
  for (size_t i = 0; i < len / kPageSize; ++i)
    if (!(v[i] & 1)) return false;
  return true;
}
bool any_resident(char *p, size_t len) {
  unsigned char v[kMaxSlabPages];
  if (os_mincore(p, len, v) != 0) return false;
  for (size_t i = 0; i < len / kPageSize; ++i)
    if (v[i] & 1) return true;
  return false;
}

// ---- the return governor ------------------------------------------------------------------------------
// The per-slab backoff answers one slab that comes back early.  It cannot see a program that
// touches its whole heap every few seconds (python's cycle collector walks every container): each
// slab's window tops out below that period and every slab keeps leaving and coming back, and the
// paging itself stretches the gaps between touches, so the slabs look colder still (tests/programs'
// python workload with a 50 ms window: 210k evictions, 13.3 GB written for a 100 MB heap, 27x the
// time).  The governor bounds the sum instead.  Every kGovernMs the tier thread counts the returns
// (fault-ins, either mechanism); above ZNS_TIER_MAX_RETURNS per second, every cold window doubles
// (g_pressure += 1, or more at once when far above: 2x over 1 step, 8x over 4); until the new
// windows can have taken effect (the global part of the window, at most kRelaxCapMs) returns of
// slabs that left under the old ones do not raise it again (no wind-up to 1024x on one burst of a
// heap coming back); after the whole
// global part of the window (capped at kRelaxCapMs) with returns below a quarter of the budget it
// halves again.  First evictions are not returns: a heap that just went cold leaves as fast as
// before.  The budget path (ZNS_TIER_MAX_RESIDENT) ignores windows, so the governor never
// overrides a resident budget.  Tier thread only, but g_pressure is read by came_back too.
constexpr unsigned kMaxPressure = 10;
// (Until 2026-12-04 the hold was at most 4 s: with the default 30 s window a burst that lasted
// as long as the new windows raised the pressure every 4 s, toward 1024x.)
constexpr uint64_t kGovernMs = 500, kRelaxCapMs = 60000;
std::atomic<uint8_t> g_pressure;
std::atomic<uint64_t> g_pressure_raises;
uint64_t g_gov_at, g_gov_ins, g_gov_busy_at;   // last tick, slabs_in then, last tick not quiet
uint64_t g_gov_raised_at;                      // last raise

// ms << shift, saturated at 2^31 - 1 (a window is compared with 32-bit differences of now_ms)
uint32_t shifted_ms(uint64_t ms, unsigned shift) {
  if (ms && shift >= unsigned(__builtin_clzll(ms))) return 0x7fffffffu;
  uint64_t w = ms << shift;
  return w > 0x7fffffffu ? 0x7fffffffu : uint32_t(w);
}

uint32_t cold_window(const TierMeta &t) {
  return shifted_ms(g_options.ZNS_TIER_COLD_MS, t.backoff + g_pressure.load(std::memory_order_relaxed));
}

void govern(uint64_t now) {
  uint64_t rate = g_options.ZNS_TIER_MAX_RETURNS;
  uint64_t ins = g_slabs_in.load(std::memory_order_relaxed);
  if (rate == 0) return;
  if (rate > (uint64_t(1) << 32)) rate = uint64_t(1) << 32;   // (no overflow of rate * dt)
  if (g_gov_at == 0) { g_gov_at = g_gov_busy_at = now; g_gov_ins = ins; return; }
  uint64_t dt = now - g_gov_at;
  if (dt < kGovernMs) return;
  uint64_t returns = ins - g_gov_ins, allowed = rate * dt / 1000;
  if (allowed == 0) allowed = 1;
  g_gov_at = now;
  g_gov_ins = ins;
  unsigned p = g_pressure.load(std::memory_order_relaxed);
  uint64_t hold = p ? shifted_ms(g_options.ZNS_TIER_COLD_MS, p) : 0;
  if (hold > kRelaxCapMs) hold = kRelaxCapMs;
  if (returns > allowed && now - g_gov_raised_at < hold) {
    g_gov_busy_at = now;   // the last raise has not had time to act yet
  } else if (returns > allowed) {
    unsigned step = 1;
    while (step < 4 && (allowed << step) < returns) ++step;   // (a, 2a]: 1 step ... > 8a: 4
    unsigned q = p + step > kMaxPressure ? kMaxPressure : p + step;
    if (q != p) g_pressure_raises.fetch_add(1, std::memory_order_relaxed);   // (not at the cap)
    g_pressure.store(uint8_t(q), std::memory_order_relaxed);
    g_gov_busy_at = g_gov_raised_at = now;
  } else if (returns * 4 > allowed) {
    g_gov_busy_at = now;   // within the budget, not far below it: hold
  } else if (p > 0) {
    uint64_t wait = shifted_ms(g_options.ZNS_TIER_COLD_MS, p);
    if (wait > kRelaxCapMs) wait = kRelaxCapMs;
    if (wait < 4 * kGovernMs) wait = 4 * kGovernMs;
    if (now - g_gov_busy_at >= wait) {
      g_pressure.store(uint8_t(p - 1), std::memory_order_relaxed);
      g_gov_busy_at = now;
    }
  }
}

// fd, in this thread's table, is the file of that identity.
bool fd_is(int fd, dev_t dev, ino_t ino) {
  struct stat st;
  return fd >= 0 && os_fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

// The backing file is still the one we opened.  Once it is not, nothing more leaves RAM.
bool file_still_ours() {
  if (g_fd_lost.load(std::memory_order_relaxed)) return false;
  struct stat st;
  if (os_fstat(g_fd, &st) == 0 && st.st_dev == g_fd_dev && st.st_ino == g_fd_ino &&
      (g_uffd < 0 || t_private_fds || fd_is(g_uffd, g_uffd_dev, g_uffd_ino))) return true;
  g_fd_lost.store(true);
  say("the backing file's descriptor was closed or replaced by the program: no more slabs leave RAM");
  return false;
}

// uffd: stores may go through from here, so the file no longer holds the slab (filed before the
// protection goes: a store can only follow the lifting).
void lift_protection(TierMeta &t, char *addr, size_t len) {
  t.filed.store(0, std::memory_order_release);
  t.armed.store(0, std::memory_order_relaxed);
  uffd_protect(addr, len, false);
}

// uffd, under g_tier_lock with the slab write-protected and resident (no store can land now):
// the file holds exactly these bytes.  A read from the page cache (the page-in's pread left the
// pages there, usually) and a compare, instead of a write to the device.
bool same_as_file(const char *addr, size_t len, uint32_t page) {
  return pread_all(g_bounce, len, page_off(page)) == 0 && __builtin_memcmp(addr, g_bounce, len) == 0;
}

// The kernel would not drop a slab's pages.  EINVAL: some of them are locked in memory (mlock of
// a block, mlockall): every eviction of the slab would write it for nothing, so it stays in RAM
// for the rest of its life (pinned; tier_take clears it).  One line the first time.
std::atomic<bool> g_pinned_reported;
void pages_stay(TierMeta &t, int err, const char *call) {
  if (err != EINVAL) return report_error(call, err);
  t.pinned = 1;
  if (!g_pinned_reported.exchange(true))
    say("the kernel will not drop some of the heap's pages (", call,
        " says EINVAL: locked in memory by mlock?): their slabs stay in RAM");
}

// uffd: MADV_DONTNEED failed part way (madvise goes mapping by mapping and stops at the first
// that refuses): the pages before it are gone.  The file holds the slab (it was just written, or
// compared equal), and no store has landed (write-protected): put the missing pages back from it
// (EEXIST skips the present ones), before the protection is lifted.
void restore_dropped(char *addr, size_t len, uint32_t page) {
  int e = pread_all(g_bounce, len, page_off(page));
  if (e == 0) e = uffd_copy(addr, g_bounce, len);
  if (e && e != ESRCH) fatal("tier: cannot restore a slab the kernel half dropped", "evict", addr);
}

// ---- eviction ---------------------------------------------------------------------------------------------
void serve_while_waiting();   // (below: the fault service)
struct ServeWhileWaiting {   // in the tier thread (uffd), for the scope of an eviction
  bool on;
  ServeWhileWaiting() : on(t_tier_thread && g_tier_mode == kTierUffd) {
    if (on) t_lock_wait = serve_while_waiting;
  }
  ~ServeWhileWaiting() {
    if (on) t_lock_wait = nullptr;
  }
};
// Under g_tier_lock.  Claims the slab headed at `page`, writes it out and drops it.
bool evict(uint32_t page) {
  TierMeta &t = tm_at(page);
  if (t.pinned || !file_still_ours()) return false;
  ServeWhileWaiting serving;
  SlabMeta *s = tier_claim(page);
  if (!s) return false;
  unsigned k = s->pages;
  size_t len = size_t(k) * kPageSize;
  char *addr = page_addr(page);
  bool ok = false, clean = false;
  if (g_tier_mode == kTierUffd) {
    int e = uffd_protect(addr, len, true);   // from here a store waits for us
    if (e) {
      report_error("write-protect", e);
    } else if (!all_resident(addr, len)) {
      // not ours to read without faulting on ourselves (the !ok path below lifts the protection)
    } else if (!(clean = t.filed.load(std::memory_order_acquire) && same_as_file(addr, len, page)) &&
               (e = pwrite_all(addr, len, page_off(page))) != 0) {
      report_error("writing a slab to the backing file", e);
    } else if (madvise(addr, len, MADV_DONTNEED) != 0) {   // (drops the protection with the pages)
      int err = errno;
      restore_dropped(addr, len, page);
      pages_stay(t, err, "MADV_DONTNEED");
    } else {
      t.filed.store(1, std::memory_order_relaxed);   // the file is the slab now
      ok = true;
    }
  } else {
    // madvise: the kernel writes back dirty file pages only from kswapd, so write them back here
    // (msync), then ask for the pages to be dropped.  A store in between re-dirties a page and
    // MADV_PAGEOUT leaves it: nothing is lost, the slab just stays resident.
    if (os_msync(addr, len, MS_SYNC) != 0) {
      report_error("writing a slab back (msync)", errno);
    } else if (madvise(addr, len, MADV_PAGEOUT) != 0) {
      pages_stay(t, errno, "MADV_PAGEOUT");   // (file pages: nothing to restore)
    } else {
      ok = !any_resident(addr, len);   // a page dirtied again or mapped elsewhere stays: not out
    }
  }
  if (ok) {
    t.armed.store(0, std::memory_order_relaxed);
    t.out_at = uint32_t(now_ms());
    t.state.store(kOut, std::memory_order_release);
    g_out_pages.fetch_add(k, std::memory_order_relaxed);
    g_slabs_out.fetch_add(1, std::memory_order_relaxed);
    if (clean) g_clean_out.fetch_add(1, std::memory_order_relaxed);
    g_bytes_out.fetch_add(len, std::memory_order_relaxed);
  } else if (g_tier_mode == kTierUffd) {
    lift_protection(t, addr, len);           // stores go through again, so the file is stale
  }
  tier_unclaim(s);
  return ok;
}

// A slab came back (fault-in): thrash feedback.  Under g_tier_lock.
void came_back(uint32_t page, unsigned k, uint32_t now) {
  TierMeta &t = tm_at(page);
  uint8_t expected = kOut;
  if (t.state.compare_exchange_strong(expected, kResident)) g_out_pages.fetch_sub(k, std::memory_order_relaxed);
  uint32_t window = cold_window(t);
  if (now - t.out_at < window) {            // back within its cold window: it was not cold
    g_thrash.fetch_add(1, std::memory_order_relaxed);
    if (t.backoff < 6) t.backoff++;
  } else if (t.backoff > 0 && uint64_t(now - t.out_at) > 4 * uint64_t(window)) {
    t.backoff--;                            // stayed out long: trust it a little more
  }
  t.since = now;
  t.watched = 1;
  g_slabs_in.fetch_add(1, std::memory_order_relaxed);
  g_bytes_in.fetch_add(size_t(k) * kPageSize, std::memory_order_relaxed);
}

// uffd: read an out slab back into RAM.  Under g_tier_lock.  for_store: a store brought it back.
void page_in(uint32_t page, bool for_store) {
  SlabMeta &m = meta_at(page);
  unsigned k = m.pages;
  size_t len = size_t(k) * kPageSize;
  int e = 0;
  for (int tries = 0; tries < 5; ++tries)
    if ((e = pread_all(g_bounce, len, page_off(page))) == 0) break;
  if (e) tier_fatal("tier: cannot read a slab back from the backing file", "page-in", page_addr(page));
  // A read (or a fork) brings it back write-protected: armed at once, and until a store lifts
  // the protection the file still holds it, so its next eviction needs no write.  A store
  // brings it back writable (it would lift the protection at once, a second round trip).
  TierMeta &t = tm_at(page);
  if (for_store) {
    t.filed.store(0, std::memory_order_release);   // before the pages become writable
    t.armed.store(0, std::memory_order_relaxed);
  }
  bool skipped;
  if ((e = uffd_copy(page_addr(page), g_bounce, len, !for_store, &skipped)) != 0) {
    if (e == ESRCH) return;   // the process is exiting
    tier_fatal("tier: UFFDIO_COPY failed", "page-in", page_addr(page));
  }
  if (for_store) {
    // writable, not filed
  } else if (skipped) {
    lift_protection(t, page_addr(page), len);   // a page we did not install: nothing is known
  } else {
    t.filed.store(1, std::memory_order_relaxed);
    t.armed.store(1, std::memory_order_relaxed);
  }
  came_back(page, k, uint32_t(now_ms()));
}

// ---- uffd fault service ------------------------------------------------------------------------------------
// The fault at addr (a page of the region), with the lock held or in a fork's window.
void serve_fault_at(const uffd_msg &msg, char *addr, uint64_t t0) {
  uint32_t p = page_of(addr);
  uint32_t head = p & ~(kGroupPages - 1);   // the slab of the page's group, if any
  TierMeta &t = tm_at(head);
  if (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
    // A store into an armed (or being-evicted) slab: the slab is not cold.  Lift the protection
    // of the whole slab (that wakes the writer; if the slab was dropped meanwhile it faults again
    // as missing and is read back first).
    // (An out slab's file copy stays valid: the store has not happened, and retries as a
    // missing fault.)
    unsigned k = meta_at(head).pages;
    if (k == 0 || k > kMaxSlabPages || head + k <= p) k = 1, head = p;
    t.since = uint32_t(now_ms());
    g_write_hits.fetch_add(1, std::memory_order_relaxed);
    if (t.state.load(std::memory_order_relaxed) == kOut) {
      t.armed.store(0, std::memory_order_relaxed);
      uffd_protect(page_addr(head), size_t(k) * kPageSize, false);
    } else {
      lift_protection(t, page_addr(head), size_t(k) * kPageSize);
    }
    return;
  }
  if (t.state.load(std::memory_order_acquire) == kOut && head + meta_at(head).pages > p) {
    page_in(head, msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
    record_latency(now_ns() - t0);
    return;
  }
  // Not an out slab: a page nobody made present (touched before the tier started, or a slab that
  // came back as a hole).  Fresh memory reads as zero.
  g_zero_fills.fetch_add(1, std::memory_order_relaxed);
  t.filed.store(0, std::memory_order_release);   // (a filed slab purged in place, used after free)
  uffd_copy(addr, g_zeros, kPageSize);
}
char *fault_page(const uffd_msg &msg) {   // the faulting page, or null when it is not the heap's
  char *addr = reinterpret_cast<char *>(uintptr_t(msg.arg.pagefault.address) & ~uintptr_t(kPageSize - 1));
  return owns(addr) ? addr : nullptr;
}
void serve_fault(const uffd_msg &msg) {
  uint64_t t0 = now_ns();
  char *addr = fault_page(msg);
  if (!addr) return;
  TierThreadGuard g(true);   // (the lock, or a fork's window: see g_fork_window)
  serve_fault_at(msg, addr, t0);
}

// t_lock_wait of the tier thread inside an eviction (it holds g_tier_lock): the faults pending
// now, served, then a yield.  A thread whose signal handler stored into a paged-out block while
// it held a heap lock (a class lock in its refill, the depot's) waits for the fault, and the
// eviction may need that lock (tier_unclaim, and the settle after it): 4 runs of 9 hung before
// (tests/tier signal-locks; tier_claim does not wait at all).
void serve_while_waiting() {
  uffd_msg msgs[16];
  ssize_t n = os_read(g_uffd, msgs, sizeof msgs);   // (non-blocking; a refused read: drain_faults says it)
  for (ssize_t i = 0; i < n / ssize_t(sizeof(uffd_msg)); ++i)
    if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
      if (char *addr = fault_page(msgs[i])) serve_fault_at(msgs[i], addr, now_ns());
  if (n <= 0) os_sched_yield();
}

std::atomic<bool> g_stop;           // the registration failed: the thread ends

// Serves the faults pending on the userfaultfd; returns how many.  (Tier thread only.)  A read that
// a seccomp filter refuses leaves every thread that touches a paged-out slab waiting for good:
// the process ends with a line that says why rather than hang.  (EBADF, where the program closed
// a shared table's userfaultfd, is not that: the kernel dropped the registration with it.)
unsigned drain_faults() {
  uffd_msg msgs[64];
  for (unsigned served = 0;;) {
    ssize_t n = os_read(g_uffd, msgs, sizeof msgs);
    if (n < 0 && (errno == EPERM || errno == EACCES || errno == ENOSYS))
      tier_fatal("tier: the userfaultfd cannot be read (a seccomp filter?), so paged-out slabs "
                 "cannot come back", "read", nullptr);
    if (n <= 0) return served;   // EAGAIN: nothing pending
    for (size_t i = 0; i < size_t(n) / sizeof(uffd_msg); ++i)
      if (msgs[i].event == UFFD_EVENT_PAGEFAULT) { serve_fault(msgs[i]); ++served; }
  }
}

// The tier thread's wait for faults until `end` (now_ms) where poll is refused: a filter the
// program installed after start that allows only what it calls itself (the wait would otherwise
// spin on the failing poll and no fault would ever be read: tests/tier poll-refused).  The
// userfaultfd is non-blocking: a read every millisecond, and right after a fault was served,
// reads between yields for 10 ms more (a thread reading through paged-out slabs faults once per
// slab).  Without nanosleep either, it yields.
void wait_faults_without_poll(uint64_t end) {
  uint64_t busy_until = 0;
  for (uint64_t now = now_ms(); now < end && !g_stop.load(std::memory_order_relaxed); now = now_ms()) {
    if (drain_faults()) busy_until = now + 10;
    timespec ms{0, 1000000};
    if (now < busy_until || os_nanosleep(&ms, nullptr) != 0) os_sched_yield();
  }
}

// ---- the policy ----------------------------------------------------------------------------------------------
// A slab is a candidate when it is shared or parked (no cache allocates from it) and has live
// blocks.  Its allocator activity is the state of its remote-free bits and its free bitmap (which
// the owner's frees into a parked slab change): a scan that finds them changed restarts its clock.  After half its cold window without activity it is armed (uffd: write-protected; a
// store disarms it and restarts the clock); after the whole window, with no store seen in the
// second half, it is evicted.  (madvise: no write signal, so the whole window of allocator
// idleness.)  Reads are invisible until the slab is out: a slab that faults back within its cold
// window doubles its window (backoff, up to 64x) and halves it again after staying out 4 windows;
// the return governor (govern) lengthens every window while returns exceed their budget.
// With ZNS_TIER_MAX_RESIDENT, when the candidates' resident bytes exceed the budget, the ones
// idle longest go first, whatever their window.
// Slabs that may leave RAM: shared ones, and parked ones (owned, but not allocated from).
bool tier_candidate(uint32_t page) {
  return meta_at(page).owner.load(std::memory_order_relaxed) == kSharedOwner ||
         meta_at(page).share.load(std::memory_order_relaxed) == kParkedIdle;
}

uint32_t signature(uint32_t page) {
  const SlabMeta &m = meta_at(page);
  std::atomic<uint64_t> *f = bits(&m), *rb = rbits_of(&m, f);   // (each read once: racy_words)
  uint64_t h = 0;
  // Remote bits only where a remote free ever wrote some: reading the others would map zero pages
  // over the mirror (see RemoteState).
  bool remote = remote_written(page);
  unsigned fw = racy_words(&m, f), rw = remote ? racy_words(&m, rb) : 0;
  for (unsigned w = 0, words = fw > rw ? fw : rw; w < words; ++w)   // parked: the owner's frees change the free bits
    h = (h ^ (w < rw ? rb[w].load(std::memory_order_relaxed) : 0) ^
         (w < fw ? f[w].load(std::memory_order_relaxed) : 0)) * 0x9E3779B97F4A7C15ull;
  return uint32_t(h >> 32) ^ uint32_t(h);
}

struct Candidate { uint32_t page, idle; };
constexpr unsigned kMaxCandidates = 1u << 16;
Candidate g_cand[kMaxCandidates];   // tier thread only

void pause_for_faults() {
  if (g_tier_mode == kTierUffd) drain_faults();
}

void scan() {
  g_scans.fetch_add(1, std::memory_order_relaxed);
  uint64_t now64 = now_ms();
  govern(now64);
  uint32_t now = uint32_t(now64), pages = heap_touched_pages();
  unsigned ncand = 0;
  uint64_t resident_pages = 0;
  for (uint32_t p = 0; p < pages; p += kGroupPages) {
    SlabMeta &m = meta_at(p);
    TierMeta &t = tm_at(p);
    uint8_t st = t.state.load(std::memory_order_acquire);
    unsigned k = m.pages;
    if (k == 0 || k > kMaxSlabPages) continue;
    if (st == kOut) {
      if (g_tier_mode == kTierMadvise && any_resident(page_addr(p), size_t(k) * kPageSize)) {
        TierThreadGuard g(false);   // the kernel brought it back on a touch
        if (!g.locked) return;      // (a fork's window: the next scan)
        came_back(p, k, now);
      }
      continue;
    }
    if (!tier_candidate(p)) { t.watched = 0; continue; }
    resident_pages += k;
    // Slabs that cannot leave are not watched either (arming them would cost every first store
    // a round trip through the handler, for nothing).
    if (t.pinned || g_fd_lost.load(std::memory_order_relaxed)) continue;
    uint32_t sig = signature(p);
    if (!t.watched || sig != t.sig) {
      t.sig = sig;
      t.since = now;
      t.watched = 1;
      if (ncand < kMaxCandidates) g_cand[ncand++] = Candidate{p, 0};
      continue;
    }
    uint32_t idle = now - t.since, window = cold_window(t);
    bool evict_now = false;
    if (!evict_now && g_tier_mode == kTierUffd) {
      if (t.armed.load(std::memory_order_relaxed)) {
        evict_now = idle >= window;
      } else if (idle >= window / 2) {
        TierThreadGuard g(false);
        if (!g.locked) return;   // a fork's window: the next scan
        if (t.state.load(std::memory_order_relaxed) == kResident && tier_candidate(p) &&
            uffd_protect(page_addr(p), size_t(k) * kPageSize, true) == 0)
          t.armed.store(1, std::memory_order_relaxed);
      }
    } else if (!evict_now) {
      evict_now = idle >= window;
    }
    if (evict_now) {
      bool gone;
      {
        TierThreadGuard g(false);
        if (!g.locked) return;   // a fork's window: the next scan
        gone = evict(p);
      }
      if (gone) resident_pages -= k;
      else t.since = now;   // it was busy (adopted, emptied, not resident): look again later
      pause_for_faults();   // (not under the lock: serving a fault takes it)
      continue;
    }
    if (ncand < kMaxCandidates) g_cand[ncand++] = Candidate{p, idle};
  }
  // (rounded up: a budget below a page, ZNS_TIER_MAX_RESIDENT=1000, was 0 pages, i.e. none)
  uint64_t budget = (g_options.ZNS_TIER_MAX_RESIDENT + kPageSize - 1) / kPageSize;
  if (budget == 0 || resident_pages <= budget || ncand == 0) return;
  // Over budget: the longest idle first (a partial selection sort: few are needed at a time).
  for (unsigned i = 0; i < ncand && resident_pages > budget; ++i) {
    unsigned best = i;
    for (unsigned j = i + 1; j < ncand; ++j) if (g_cand[j].idle > g_cand[best].idle) best = j;
    Candidate c = g_cand[best];
    g_cand[best] = g_cand[i];
    unsigned k = meta_at(c.page).pages;
    bool gone;
    {
      TierThreadGuard g(false);
      if (!g.locked) return;   // a fork's window: the next scan
      gone = evict(c.page);
    }
    if (gone) resident_pages -= k;
    pause_for_faults();
  }
}

uint32_t scan_every_ms() {
  uint64_t s = g_options.ZNS_TIER_SCAN_MS;
  if (s == 0) {
    s = g_options.ZNS_TIER_COLD_MS / 4;
    if (s < 20) s = 20;
    if (s > 1000) s = 1000;
  }
  return uint32_t(s);
}

// The tier thread's own descriptor table, holding only the tier's files.  A program that closes
// every descriptor (daemons do, and not only at start) closed the userfaultfd under the tier: the
// kernel then dropped the registration, and every out slab read back as zeros (tests/tier
// closefd, uffd: 19889 of 20000 blocks, until 2026-12-04).  In a private table they stay open
// whatever the program closes, and the program's own descriptors are not held there (a pipe it
// closes still gets its end of file).  Where the kernel cannot (close_range before 5.9): the
// shared table, as before.
void private_fd_table() {
  unsigned keep[2] = {unsigned(g_fd), unsigned(g_uffd >= 0 ? g_uffd : g_fd)};
  if (keep[0] > keep[1]) { unsigned x = keep[0]; keep[0] = keep[1]; keep[1] = x; }
  unsigned from = 0;
  for (unsigned k : keep) {
    if (k > from && os_syscall(SYS_close_range, from, k - 1, CLOSE_RANGE_UNSHARE) != 0) return;
    if (k + 1 > from) from = k + 1;
  }
  if (os_syscall(SYS_close_range, from, ~0u, CLOSE_RANGE_UNSHARE) != 0) return;
  t_private_fds = true;
  g_private_fds.store(true, std::memory_order_release);
}

void *tier_thread(void *) {
  t_tier_thread = true;
  note_library_thread();   // (it must not keep the process alive: start_end_watch)
  private_fd_table();
  uint32_t every = scan_every_ms();
  uint64_t next = now_ms() + every;
  while (!g_stop.load(std::memory_order_relaxed)) {
    uint64_t now = now_ms();
    int timeout = now >= next ? 0 : int(next - now);
    if (g_tier_mode == kTierUffd) {
      pollfd pfd{g_uffd, POLLIN, 0};
      int r = os_poll(&pfd, 1, timeout);
      if (r > 0) drain_faults();
      else if (r < 0 && errno != EINTR) wait_faults_without_poll(next);
    } else {
      timespec ts{timeout / 1000, long(timeout % 1000) * 1000000};
      os_nanosleep(&ts, nullptr);
    }
    if (now_ms() >= next) {
      scan();
      end_process_if_alone_for_tier();   // (the main thread's pthread_exit: see platform.h)
      next = now_ms() + every;
    }
  }
  // The registration failed (the only stop): its own table's copies go with it.
  if (t_private_fds) os_syscall(SYS_close_range, 0u, ~0u, 0u);
  forget_library_thread();
  return nullptr;
}

// ---- setup ------------------------------------------------------------------------------------------------------
bool mode_is(const char *v, const char *name) { return __builtin_strcmp(v ? v : "", name) == 0; }

void note_identity() {
  struct stat st;
  if (os_fstat(g_fd, &st) == 0) { g_fd_dev = st.st_dev; g_fd_ino = st.st_ino; }
  if (g_uffd >= 0 && os_fstat(g_uffd, &st) == 0) { g_uffd_dev = st.st_dev; g_uffd_ino = st.st_ino; }
  g_fd_lost.store(false);
}

int open_backing_file() {
  const char *dir = g_options.ZNS_TIER_DIR;
  int fd = os_open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);   // never has a name
  if (fd >= 0) return fd;
  char path[600];
  for (unsigned n = 0; n < 100; ++n) {
    Buf b(path, sizeof path - 1);
    b.str(dir).str("/zns-tier-").u64(uint64_t(os_getpid())).chr('-').u64(n);
    path[b.size()] = 0;
    fd = os_open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) { os_unlink(path); return fd; }
    if (errno != EEXIST) break;
  }
  return -1;
}

// A userfaultfd that serves faults taken in the kernel too (read(2) into a cold block), or -1.
// *user_only: only UFFD_USER_MODE_ONLY is allowed here.
// (*why, when there is none: the system call's errno, or kApiRefused when the kernel has one
// without the write-protect faults the tier needs.)
constexpr int kApiRefused = -1;
int open_uffd(bool *user_only, int *why) {
  *user_only = false;
  int fd = int(os_syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  *why = fd < 0 ? errno : 0;
  if (fd < 0) {
    int dev = os_open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev >= 0) {
      fd = os_ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
      os_close(dev);
    }
  }
  if (fd < 0) {
    int probe = int(os_syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
    if (probe >= 0) { *user_only = true; os_close(probe); }
    return -1;
  }
  uffdio_api api{UFFD_API, UFFD_FEATURE_PAGEFAULT_FLAG_WP, 0};
  if (os_ioctl(fd, UFFDIO_API, &api) != 0) {
    os_close(fd);
    *why = kApiRefused;
    return -1;
  }
  return fd;
}

bool g_setup_done;
void start_handler();
void uffd_off_for_good();
void child_start();

}  // namespace

const char *tier_mode_name(int mode) {
  return mode == kTierUffd ? "uffd" : mode == kTierMadvise ? "madvise" : "off";
}

void *tier_map_region(size_t bytes) {
  if (g_setup_done) return nullptr;
  g_setup_done = true;
  const char *v = g_options.ZNS_TIER;
  int want = mode_is(v, "uffd") ? kTierUffd : mode_is(v, "madvise") ? kTierMadvise : kTierOff;
  if (want == kTierOff) {
    if (!mode_is(v, "off") && !mode_is(v, "") && !mode_is(v, "0")) say("unknown ZNS_TIER=", v, ", the tier is off");
    return nullptr;
  }
  g_tm = static_cast<TierMeta *>(os_reserve((bytes / kPageSize / kGroupPages) * sizeof(TierMeta)));
  if (!g_tm) { say("no memory for its metadata: off"); return nullptr; }
  g_fd = open_backing_file();
  if (g_fd < 0) { say("cannot create a backing file in ZNS_TIER_DIR=", g_options.ZNS_TIER_DIR, ": off"); return nullptr; }
  g_fd = fd_out_of_the_way(g_fd);
  note_identity();
  if (want == kTierUffd) {
    bool user_only;
    int why = 0;
    g_uffd = open_uffd(&user_only, &why);
    if (g_uffd >= 0) {
      g_uffd = fd_out_of_the_way(g_uffd);
      note_identity();
      g_tier_mode = g_line_mode = kTierUffd;
      return nullptr;   // anonymous region, registered once the handler thread runs
    }
    // (The reason as the kernel gave it: a kernel or an emulator without the call, qemu-user's
    // say, answers ENOSYS, and one before Linux 5.7 refuses the write-protect faults.)
    say(user_only            ? "userfaultfd serves user-mode faults only here (read(2)/write(2) on a paged-out "
                               "block would fail with EFAULT)"
        : why == kApiRefused ? "userfaultfd here has no write-protect faults (Linux 5.7 or later)"
        : why == ENOSYS      ? "userfaultfd is not available (this kernel, or an emulator, has no such call)"
                             : "userfaultfd is not available (needs root, CAP_SYS_PTRACE, /dev/userfaultfd or "
                               "vm.unprivileged_userfaultfd=1)",
        "; using ZNS_TIER=madvise");
  }
  void *base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, g_fd, 0);
  if (base == MAP_FAILED) { say("cannot map the backing file: off"); os_close(g_fd); g_fd = -1; return nullptr; }
  g_base = static_cast<char *>(base);
  g_bytes = bytes;
  // No readahead: a fault-in reads the page it needs, and mincore() then tells which slabs the
  // program really touched again (the thrash feedback).
  madvise(base, bytes, MADV_RANDOM);
  g_tier_mode = g_line_mode = kTierMadvise;
  return base;
}

namespace {
// tier_take's work (below: it keeps errno around it).
bool take_pages(uint32_t page, unsigned k, bool missing) {
  NoCancel no_cancel;   // (fallocate under the grow lock; see NoCancel)
  TierMeta &t = tm_at(page);
  uint8_t st = t.state.exchange(kResident, std::memory_order_acq_rel);
  // An evicted parked slab whose pages a purge gave back in place, unparked: it was counted out
  // (came_back and tier_release, the other ways out of kOut, subtract too).
  if (st == kOut) g_out_pages.fetch_sub(k, std::memory_order_relaxed);
  t.watched = 0;
  t.backoff = 0;
  t.pinned = 0;
  t.filed.store(0, std::memory_order_relaxed);   // a new life: the file holds nothing of it
  char *addr = page_addr(page);
  size_t len = size_t(k) * kPageSize;
  if (g_tier_mode == kTierUffd) {
    // (Only through our own userfaultfd: the program may have closed the number and reused it.
    // Without these the handler thread lifts the protection at the first store and fills the
    // missing pages with zeros at the first touch.)
    bool armed = t.armed.exchange(0, std::memory_order_relaxed);
    bool fill = (missing || st != kResident) && g_registered;
    if ((armed || fill) && (t_private_fds || fd_is(g_uffd, g_uffd_dev, g_uffd_ino))) {
      if (armed) uffd_protect(addr, len, false);
      // Present pages now: a first touch through the handler costs a thread round trip.
      if (fill) uffd_copy(addr, g_zeros, len);
    }
    return true;
  }
  if (!missing) return true;
  if (t_room_refused) return false;        // (depot_take asks first; an adoption may not)
  if (!file_still_ours()) return false;   // no room can be made: the request falls through
  // madvise: room in the file for these pages, so a store can never meet a full disk (SIGBUS).
  uint64_t end = uint64_t(page) + k;
  Guard g(g_grow_lock);
  if (end <= g_reserved_pages) {
    // below the reserved mark, but purged pages are holes again: reserve exactly these
    if (fallocate_quiet(g_fd, FALLOC_FL_KEEP_SIZE, page_off(page), off_t(len)) == 0) return true;
  } else {
    uint64_t to = end + 256;   // 1 MiB ahead
    if (to * kPageSize > g_bytes) to = g_bytes / kPageSize;
    uint64_t from = page < g_reserved_pages ? page : g_reserved_pages;
    // (fallocate without KEEP_SIZE also grows the file: the mapping is valid only below its end)
    if (fallocate_quiet(g_fd, 0, page_off(uint32_t(from)), off_t((to - from) * kPageSize)) == 0) {
      g_reserved_pages = to;
      return true;
    }
    if (fallocate_quiet(g_fd, 0, page_off(page), off_t(len)) == 0) {   // no room for more: just these
      if (end > g_reserved_pages) g_reserved_pages = end;
      return true;
    }
  }
  int e = errno;
  if (e == EPERM || e == EACCES || e == ENOSYS) {   // (not ENOSPC, EDQUOT, EFBIG; nor EOPNOTSUPP,
    t_room_refused = true;                           // which CIFS answers while it holds no lease)
    g_errors.fetch_add(1, std::memory_order_relaxed);
    if (!g_room_refused_said.exchange(true)) {
      char m[256];
      Buf b(m, sizeof m);
      b.str("zns-slab: tier: reserving room in the backing file (fallocate) is refused (errno ").u64(uint64_t(e))
          .str("): a thread refused so takes its new memory from the next allocator\n");
      to_stderr(b);
    }
    return false;
  }
  report_error("reserving room in the backing file (fallocate)", e);
  return false;
}
}  // namespace

// (On a malloc's way: whatever its system calls answer, errno is the program's again after it.
// UFFDIO_COPY over pages that are there answers EEXIST, which is fine here, and a successful
// malloc left errno 17 behind: helper-93, 2026-12-07.)
bool tier_take(uint32_t page, unsigned k, bool missing) {
  int saved = errno;
  bool ok = take_pages(page, k, missing);
  errno = saved;
  return ok;
}

bool tier_room_refused() { return t_room_refused; }

// The heap gave back its region's tail (region_fit_limit: the program lowered RLIMIT_AS): the
// madvise tier's mapping ends there too, so that a forked child's remap (child_own_file,
// child_private_heap) never maps over what may now be someone else's.  (Read under g_grow_lock
// by tier_take: an old value there only reserves file room beyond the end.)
void tier_region_shrunk(size_t bytes) {
  if (g_base && bytes < __atomic_load_n(&g_bytes, __ATOMIC_RELAXED)) __atomic_store_n(&g_bytes, bytes, __ATOMIC_RELAXED);
}

void tier_release(uint32_t page, unsigned k) {
  uint8_t expected = kOut;
  if (tm_at(page).state.compare_exchange_strong(expected, kHole, std::memory_order_acq_rel))
    g_out_pages.fetch_sub(k, std::memory_order_relaxed);
}

bool tier_is_out(uint32_t page) { return tm_at(page).state.load(std::memory_order_relaxed) != kResident; }

int tier_purge(void *p, size_t bytes) {
  if (g_tier_mode != kTierMadvise) return os_purge(p, bytes);
  int saved = errno;
  int r = madvise(p, bytes, MADV_REMOVE) == 0 ? 0 : errno;   // frees the file's pages and blocks
  errno = saved;
  return r;
}

void tier_start() {
  const char *v = g_options.ZNS_TIER;
  if (mode_is(v, "off") || mode_is(v, "") || mode_is(v, "0")) return;
  heap_init();   // sets the mode up (tier_map_region) if no malloc did yet
  if (g_tier_mode == kTierOff) return;
  if (!g_region.base) {   // no region at all (the heap said why): nothing to page out
    say("no heap region: off");
    uffd_off_for_good();
    return;
  }
  int saved = errno;
  start_handler();
  errno = saved;
}

namespace {
// uffd, or no region: the tier cannot run, here nor in a forked child.
void uffd_off_for_good() {
  if (g_uffd >= 0) os_close(g_uffd);
  if (g_fd >= 0) os_close(g_fd);
  g_uffd = g_fd = -1;
  g_tier_mode = g_line_mode = kTierOff;
}

// The tier's thread, and (uffd) the region's registration once it serves; off when either fails.
void start_handler() {
  // The thread takes no signal: a handler running on it could touch a paged-out block and wait
  // for itself.  (SIGXFSZ from a file-size limit stays pending here; write(2) says EFBIG.)
  sigset_t old;
  block_signals(&old);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  pthread_t th;
  int rc = pthread_create(&th, &attr, tier_thread, nullptr);
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc != 0 && g_tier_mode == kTierMadvise) {
    // The heap is the file mapping either way: the heap keeps reserving room in the file (a
    // mode of off would not, and a store past the file's end is SIGBUS).  Nothing leaves RAM.
    say("cannot start the scanning thread: nothing will leave RAM");
  } else if (rc != 0) {
    say("cannot start the handler thread: off");
    uffd_off_for_good();
  } else if (g_tier_mode == kTierUffd) {
    // Registered only now that a thread serves faults (pages touched before read as they were).
    uffdio_register reg{{uint64_t(uintptr_t(g_region.base)), g_region.bytes},
                        UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP, 0};
    if (os_ioctl(g_uffd, UFFDIO_REGISTER, &reg) != 0 ||
        !(reg.ioctls & (uint64_t(1) << _UFFDIO_WRITEPROTECT)) || !(reg.ioctls & (uint64_t(1) << _UFFDIO_COPY))) {
      say("cannot register the region with userfaultfd (write-protect unsupported?): off");
      g_stop.store(true);   // the thread ends, and closes what its own table holds
      uffd_off_for_good();  // (these are the program's table's: the thread no longer polls them,
                            // or, without a table of its own, polls a closed number: EBADF)
    } else {
      g_registered = true;
    }
  }
  if (rc == 0 && !g_stop.load()) start_end_watch();   // (see platform.h: after the main thread's pthread_exit)
}
}  // namespace

size_t tier_pageout_now() {
  if (g_tier_mode == kTierOff) return 0;
  NoCancel no_cancel;
  uint64_t before = g_slabs_out.load();
  uint32_t pages = heap_touched_pages();
  for (uint32_t p = 0; p < pages; p += kGroupPages) {
    if (!tier_candidate(p)) continue;
    if (tm_at(p).state.load(std::memory_order_relaxed) == kOut) continue;
    sigset_t old;   // (see block_signals: here the slab being evicted is write-protected)
    block_signals(&old);
    {
      Guard g(g_tier_lock);
      evict(p);
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }
  return size_t(g_slabs_out.load() - before);
}

// ---- fork ---------------------------------------------------------------------------------------------------------
// uffd: the child would read paged-out pages as zeros (no UFFD_FEATURE_EVENT_FORK here), so every
// out slab comes back before the fork; the child's memory is not registered, and it runs without
// the tier until its own is due (tier_child_poll: a userfaultfd, a file and a thread of its own).
// madvise: the region is a MAP_SHARED file mapping, which a child would share with its parent;
// the child copies it into a file of its own at once, while the parent waits for it, and maps
// that; its thread is due later.  (When the child cannot make that file: a private anonymous copy,
// and no tier in the child.)
namespace {
int g_fork_pipe[2] = {-1, -1};

// The heap's bytes [from, from + len), for a forked child's copy of it: into `fd` at the same
// offsets, or into `mem` (mem[0] is the byte at `from`; what lies past the file's end and
// ZNS_SECURE's guards is not written: `mem` holds zeros where they go).  From the backing file
// while it is still ours (`ours`: out pages come by readahead), else through the mapping: the
// program closed the file, and the number may name a file of its own now (or the child's new
// file), whose bytes must not become the child's heap.  Through the mapping an inaccessible page
// (a ZNS_SECURE guard) reads as zeros.  False: a write failed.
bool copy_heap(bool ours, int fd, char *mem, size_t from, size_t len) {
  size_t end = from + len;
  if (ours && fd >= 0) {
    // sendfile copies in the kernel (splice: no pass through user memory) into the blocks the
    // caller reserved.  Not copy_file_range: on XFS or btrfs that is a reflink, which shares the
    // parent's blocks with the child's file in place of the reserved ones (and cleans the
    // parent's dirty pages): every later store by either process then needs a new block, and on
    // a full disk it is SIGBUS (seen on XFS, in the parent too: review, 2026-12-04).
    for (off_t in = off_t(from); size_t(in) < end;) {
      if (os_lseek(fd, in, SEEK_SET) != in) return false;
      ssize_t r = os_sendfile(fd, g_fd, &in, end - size_t(in));
      if (r < 0 && errno == EINTR) continue;
      if (r > 0) continue;
      if (r == 0) return true;   // (the parent file's end: the rest reads as zeros, reserved)
      for (; size_t(in) < end; in += off_t(sizeof g_bounce)) {   // no sendfile here: by hand
        size_t n = end - size_t(in) < sizeof g_bounce ? end - size_t(in) : sizeof g_bounce;
        if (pread_all(g_bounce, n, in) != 0 || os_pwrite(fd, g_bounce, n, in) != ssize_t(n)) return false;
      }
    }
    return true;
  }
  if (ours) {
    for (size_t off = 0; off < len;) {
      ssize_t r = os_pread(g_fd, mem + off, len - off, off_t(from + off));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fatal("tier: cannot read the heap back from the backing file for the forked child", "fork", g_base + from + off);
      if (r == 0) break;   // (the file's end: mem's zeros stay)
      off += size_t(r);
    }
    return true;
  }
  // (Rare: a page at a time, and never by a load: a guard page would be a signal.  Into the
  // file: pwrite from the mapping, EFAULT for a guard.  Into memory: process_vm_readv, which
  // needs no descriptor (the table may be full) but is refused in some containers; then a pipe.)
  int pfd[2] = {-1, -1};
  unsigned lost = 0;
  for (size_t off = from; off < end; off += kPageSize) {
    if (fd >= 0) {
      ssize_t r = os_pwrite(fd, g_base + off, kPageSize, off_t(off));
      if (r != ssize_t(kPageSize) && !(r < 0 && errno == EFAULT)) return false;   // EFAULT: zeros stay
      continue;
    }
    char *into = mem + (off - from);
    iovec to{into, kPageSize}, src{g_base + off, kPageSize};
    ssize_t r = os_process_vm_readv(os_getpid(), &to, 1, &src, 1, 0);
    if (r == ssize_t(kPageSize) || (r < 0 && errno == EFAULT)) continue;   // (EFAULT: zeros stay)
    if (pfd[0] < 0 && os_pipe2(pfd, O_CLOEXEC) != 0) { pfd[0] = pfd[1] = -1; ++lost; continue; }
    r = os_write(pfd[1], g_base + off, kPageSize);   // (atomic, and the pipe is empty)
    if (r < 0 && errno == EFAULT) continue;
    if (r != ssize_t(kPageSize) || os_read(pfd[0], into, kPageSize) != ssize_t(kPageSize)) ++lost;
  }
  if (pfd[0] >= 0) { os_close(pfd[0]); os_close(pfd[1]); }
  if (lost) say("a forked child could not copy some pages of its heap (no process_vm_readv, no pipe): they read as zeros");
  return true;
}

// The child's statistics and policy state start from zero: its tier is a new one.
void reset_child_state() {
  for (uint32_t p = 0, n = heap_touched_pages(); p < n; p += kGroupPages) {   // all resident now
    TierMeta &t = tm_at(p);
    t.state.store(kResident, std::memory_order_relaxed);
    t.armed.store(0, std::memory_order_relaxed);   // (the child's page tables have no uffd-wp bit)
    t.filed.store(0, std::memory_order_relaxed);   // (a new file holds nothing yet)
    t.backoff = t.watched = t.pinned = 0;          // (mlock is not inherited)
  }
  for (auto *c : {&g_slabs_out, &g_clean_out, &g_slabs_in, &g_bytes_out, &g_bytes_in, &g_out_pages, &g_errors,
                  &g_thrash, &g_write_hits, &g_zero_fills, &g_scans, &g_lat_max, &g_lat_n})
    c->store(0, std::memory_order_relaxed);
  for (auto &h : g_lat_hist) h.store(0, std::memory_order_relaxed);
  g_pressure.store(0);
  g_pressure_raises.store(0);
  g_gov_at = g_gov_ins = g_gov_busy_at = g_gov_raised_at = 0;
  g_registered = false;
  g_stop.store(false);
  g_error_reported.store(false);   // the child's first error gets its own line
  g_room_refused_said.store(false);   // (t_room_refused stays: the child's thread has its filters)
  g_pinned_reported.store(false);
}

// madvise, in the child, alone: the heap into a file of its own, mapped where the region is.
// `filed` bytes from the start have room in the parent's file (and hold every byte ever
// written; the rest reads as zeros).  False (nothing changed) when the file cannot be made.
bool child_own_file(bool ours, size_t filed) {
  int fd = open_backing_file();
  if (fd < 0) return false;
  fd = fd_out_of_the_way(fd);
  bool ok = (filed == 0 || fallocate_quiet(fd, 0, 0, off_t(filed)) == 0) &&   // room, as the parent had
            copy_heap(ours, fd, nullptr, 0, filed);
  if (ok && mmap(g_base, g_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE | MAP_FIXED, fd, 0) == MAP_FAILED)
    fatal("tier: cannot map the forked child's own backing file over its heap", "fork", g_base);
  if (!ok) { os_close(fd); return false; }
  if (ours) os_close(g_fd);   // (else the number is the program's, or even the new file's)
  g_fd = fd;
  note_identity();
  g_reserved_pages = filed / kPageSize;
  madvise(g_base, g_bytes, MADV_RANDOM);
  return true;
}

// The heap's first `used` bytes made private in place, a bounce buffer at a time: each chunk read
// into g_bounce (zeroed first), a private anonymous mapping put over the chunk (MAP_FIXED replaces
// the shared one: no new address space), and the chunk's pages that are not all zeros written
// back.  For a child whose address space has no room for a second copy of the heap (a lowered
// RLIMIT_AS: ~1 fork in 150 under a 1 GiB limit failed the one-piece copy, a helper's sweep,
// 2026-12-07).  A chunk's copy costs a memcpy more than the one-piece copy.
void child_private_in_place(bool ours, size_t used, size_t filed) {
  for (size_t off = 0; off < used; off += sizeof g_bounce) {
    size_t n = used - off < sizeof g_bounce ? used - off : sizeof g_bounce;
    size_t data = off >= filed ? 0 : filed - off < n ? filed - off : n;
    __builtin_memset(g_bounce, 0, data);
    if (data) copy_heap(ours, -1, g_bounce, off, data);
    if (mmap(g_base + off, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED,
             -1, 0) == MAP_FAILED)
      fatal("tier: no memory for the forked child's copy of the heap", "fork", g_base + off);
    for (size_t i = 0; i < data; i += kPageSize) {
      const uint64_t *w = reinterpret_cast<const uint64_t *>(g_bounce + i);
      size_t k = 0;
      while (k < kPageSize / 8 && w[k] == 0) ++k;
      if (k < kPageSize / 8) __builtin_memcpy(g_base + off + i, g_bounce + i, kPageSize);
    }
  }
}

// madvise, in the child, when it cannot have a file: a private anonymous copy of the heap (in one
// piece, or in place when the address space has no room for it).
void child_private_heap(bool ours, size_t used, size_t filed) {
  char *copy = used ? static_cast<char *>(mmap(nullptr, used, PROT_READ | PROT_WRITE,
                                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0))
                    : nullptr;
  if (copy == MAP_FAILED) {
    child_private_in_place(ours, used, filed);
  } else {
    copy_heap(ours, -1, copy, 0, filed);
    if (used && mremap(copy, used, used, MREMAP_MAYMOVE | MREMAP_FIXED, g_base) == MAP_FAILED)
      fatal("tier: cannot give the forked child a private heap", "fork", g_base);
  }
  if (g_bytes > used &&
      mmap(g_base + used, g_bytes - used, PROT_READ | PROT_WRITE,
           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED)
    fatal("tier: cannot give the forked child a private heap", "fork", g_base);
  if (ours) os_close(g_fd);
  g_fd = -1;
}
}  // namespace

namespace {
// Bring every out slab back through faults the tier thread serves: one byte of each through a
// pipe (the kernel's read of it faults like a load, but a page the program made inaccessible is
// EFAULT, not a signal inside fork()).
// Where no pipe can be made (the descriptor table is full): process_vm_readv of the byte, which
// faults the same way and needs no descriptor.
void touch_out_slabs(uint32_t pages) {
  int pfd[2];
  bool piped = os_pipe2(pfd, O_CLOEXEC) == 0;
  for (uint32_t p = 0; p < pages; p += kGroupPages) {
    if (tm_at(p).state.load(std::memory_order_acquire) != kOut) continue;
    char c;
    if (piped) {
      if (os_write(pfd[1], page_addr(p), 1) == 1) (void)!os_read(pfd[0], &c, 1);
    } else {
      iovec to{&c, 1}, from{page_addr(p), 1};
      (void)!os_process_vm_readv(os_getpid(), &to, 1, &from, 1, 0);
    }
  }
  if (piped) { os_close(pfd[0]); os_close(pfd[1]); }
}
}  // namespace

void tier_fork_prepare() {
  if (g_line_mode == kTierOff) return;
  // uffd: no signal until the window opens (see g_fork_window).  Decided by the line's mode:
  // g_tier_mode may change under the lock (child_start).
  t_fork_blocked = g_line_mode == kTierUffd;
  if (t_fork_blocked) block_signals(&t_fork_sigmask);
  g_tier_lock.lock();   // (also keeps a child's tier from starting across the fork: tier_child_poll)
  t_fork_locked = true;
  if (g_tier_mode == kTierUffd) {
    // The program may have closed or replaced the tier's descriptors in its table (the tier
    // thread's own table still has them: private_fd_table).  Then the page-ins go through
    // faults, which the thread serves: by a read of each out slab, without the lock (serving
    // takes it), until the lock finds none out (a scan evicts only slabs idle a whole window).
    // Without a private table (close_range refused) the program's close took the userfaultfd
    // with it and the kernel dropped the registration: those slabs are gone here as in the
    // parent, and a touch would not bring them back (nothing to wait for).
    bool direct = fd_is(g_uffd, g_uffd_dev, g_uffd_ino) && fd_is(g_fd, g_fd_dev, g_fd_ino);
    bool touch = !direct && g_private_fds.load(std::memory_order_acquire);
    for (unsigned pass = 0; pass < 100; ++pass) {
      unsigned out = 0;
      uint32_t pages = heap_touched_pages();
      for (uint32_t p = 0; p < pages; p += kGroupPages)
        if (tm_at(p).state.load(std::memory_order_acquire) == kOut) {
          if (direct) page_in(p, false);
          else ++out;
        }
      if (out == 0) break;
      if (!touch || pass == 99) {   // (no table of its own, or slabs that do not come back)
        say("forking with slabs out that cannot be brought back: the child reads them as zeros");
        break;
      }
      g_tier_lock.unlock();
      touch_out_slabs(pages);
      g_tier_lock.lock();
    }
    // From here to tier_fork_parent this thread touches no tier state, and may store into armed
    // slabs (page_in above arms what it brings back): the tier thread serves without the lock.
    g_fork_window.store(true, std::memory_order_seq_cst);
    if (t_fork_blocked) pthread_sigmask(SIG_SETMASK, &t_fork_sigmask, nullptr);
    t_fork_blocked = false;
    return;
  }
  if (t_fork_blocked) pthread_sigmask(SIG_SETMASK, &t_fork_sigmask, nullptr);
  t_fork_blocked = false;
  if (g_tier_mode == kTierMadvise && os_pipe2(g_fork_pipe, O_CLOEXEC) != 0) {
    g_fork_pipe[0] = g_fork_pipe[1] = -1;
  }
}

void tier_fork_parent() {
  if (!t_fork_locked) return;
  t_fork_locked = false;
  bool windowed = g_fork_window.load(std::memory_order_relaxed);   // (set by this thread: uffd)
  if (windowed) {
    block_signals(&t_fork_sigmask);   // until the unlock
    g_fork_window.store(false, std::memory_order_seq_cst);
    while (g_window_serving.load(std::memory_order_seq_cst) != 0) os_sched_yield();   // one fault's service
  }
  if (g_tier_mode == kTierMadvise && g_fork_pipe[0] >= 0) {
    os_close(g_fork_pipe[1]);
    char c;
    while (os_read(g_fork_pipe[0], &c, 1) < 0 && errno == EINTR) {}   // the child's copy is done
    os_close(g_fork_pipe[0]);
    g_fork_pipe[0] = g_fork_pipe[1] = -1;
  }
  g_tier_lock.unlock();
  if (windowed) pthread_sigmask(SIG_SETMASK, &t_fork_sigmask, nullptr);
}

namespace {
void tier_fork_child_locked();
}
// (Its work apart: only the look is in the fork's code page, core/platform.h ZNS_FORK_CODE)
ZNS_FORK_CODE void tier_fork_child() {
  if (t_fork_locked) tier_fork_child_locked();
}
namespace {
ZNS_NOINLINE void tier_fork_child_locked() {
  t_fork_locked = false;
  g_tier_lock.reset();
  g_grow_lock.reset();
  g_fork_window.store(false, std::memory_order_relaxed);   // (the tier thread is not here)
  g_window_serving.store(0, std::memory_order_relaxed);
  g_tier_child_pending.store(false);
  if (g_tier_mode != kTierMadvise) {
    // uffd: the child's memory is not registered (no fork event): plain anonymous.  (Also a
    // descriptor a failed start left open.)
    // Only what is still ours: a daemon may have closed them and reused the numbers.
    if (fd_is(g_uffd, g_uffd_dev, g_uffd_ino)) os_close(g_uffd);
    if (fd_is(g_fd, g_fd_dev, g_fd_ino)) os_close(g_fd);
    g_uffd = g_fd = -1;
    g_tier_mode = kTierOff;   // until its own tier starts
  } else {
    // The copy is read from the file, not through the mapping.  The mapping is the file's page
    // cache, so the bytes are the same; but out pages come back by the file's readahead (or a
    // reflink) instead of one major fault per page (the mapping is MADV_RANDOM), and resident
    // ones are not first faulted into the child's page tables: a redis BGSAVE fork with slabs
    // out took 0.25-0.85 s through the mapping.  ZNS_SECURE's guards (groups that hold no slab)
    // read as what the file holds there, and are made again below.  Only the pages with room in
    // the file are read: the file grows from the end of a slab, so the unused tail of the last
    // group can lie past the file's end, and no page past g_reserved_pages was ever written (a
    // slab's pages are reserved before it is used; a copy of the rest is zero).
    size_t used = size_t(heap_touched_pages()) * kPageSize;
    size_t filed = size_t(g_reserved_pages) * kPageSize;
    if (filed > used) filed = used;
    bool ours = file_still_ours();
    bool own = g_options.ZNS_TIER_CHILD_MS != 0 && child_own_file(ours, filed);
    if (!own) {
      child_private_heap(ours, used, filed);
      g_tier_mode = g_line_mode = kTierOff;   // this child and its own children: no tier
    }
    madvise(g_base, g_bytes, MADV_NOHUGEPAGE);
    heap_reguard();
    if (g_fork_pipe[1] >= 0) { char c = 1; (void)!os_write(g_fork_pipe[1], &c, 1); os_close(g_fork_pipe[1]); }
    if (g_fork_pipe[0] >= 0) os_close(g_fork_pipe[0]);
    g_fork_pipe[0] = g_fork_pipe[1] = -1;
  }
  reset_child_state();
  if (g_line_mode != kTierOff && g_options.ZNS_TIER_CHILD_MS != 0) {
    g_child_due_ms = now_ms() + g_options.ZNS_TIER_CHILD_MS;
    g_child_pid = os_getpid();
    g_tier_child_pending.store(true);
  }
}
}  // namespace

// From the heap's slow path (alloc_refill, before it touches anything), in a forked child whose own
// tier is due: the parent's was closed at the fork.  pthread_create allocates: that malloc finds
// nothing pending any more.
void tier_child_poll() {
  if (now_ms() < g_child_due_ms) return;
  // A vfork child (opendir's block between vfork and exec) would start it in a process that is
  // about to exec, with the forked child's flag and mode: the forked child then never had one
  // (a review, 2026-12-06).  One system call, once due.
  if (os_getpid() != g_child_pid) return;
  if (!g_tier_child_pending.exchange(false)) return;   // (first: a signal handler's malloc
                                                        // here must not come back in)
  NoCancel no_cancel;
  int saved = errno;
  // A filter may forbid what the start needs (a sandboxed worker: sshd's, a browser's); where
  // it does not forbid asking, do not try.  One line, and no tier in this child.
  if (os_prctl(PR_GET_SECCOMP, 0, 0, 0, 0) > 0) {
    say("a forked child under a seccomp filter runs without the tier");
    g_line_mode = kTierOff;
    errno = saved;
    return;
  }
  sigset_t old;   // (no handler while it holds the lock: see block_signals)
  block_signals(&old);
  child_start();
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  errno = saved;
}

namespace {
void child_start() {
  Guard g(g_tier_lock);   // a fork by another thread waits (tier_fork_prepare), and vice versa
  if (g_line_mode == kTierUffd) {
    bool user_only;
    int why;
    int u = open_uffd(&user_only, &why);
    int f = u >= 0 ? open_backing_file() : -1;
    if (f < 0) {
      if (u >= 0) os_close(u);
      say("a forked child could not open its own userfaultfd and backing file: it runs without the tier");
      g_line_mode = kTierOff;
      return;
    }
    g_uffd = fd_out_of_the_way(u);
    g_fd = fd_out_of_the_way(f);
    note_identity();
    g_reserved_pages = 0;
    g_tier_mode = kTierUffd;
  }
  start_handler();
}
}  // namespace

// ---- stats --------------------------------------------------------------------------------------------------------
void tier_snapshot(TierSnapshot *o) {
  *o = TierSnapshot{};
  o->mode = g_tier_mode;
  o->slabs_out = g_slabs_out.load();
  o->clean_out = g_clean_out.load();
  o->slabs_in = g_slabs_in.load();
  o->bytes_out = g_bytes_out.load();
  o->bytes_in = g_bytes_in.load();
  o->out_pages = g_out_pages.load();
  o->evict_errors = g_errors.load();
  o->thrash = g_thrash.load();
  o->write_hits = g_write_hits.load();
  o->zero_fills = g_zero_fills.load();
  o->scans = g_scans.load();
  o->pressure = g_pressure.load();
  o->pressure_raises = g_pressure_raises.load();
  o->fault_max_ns = g_lat_max.load();
  uint64_t n = g_lat_n.load(), seen = 0;
  o->faults_timed = n;
  for (unsigned b = 0; b < 40 && n; ++b) {
    seen += g_lat_hist[b].load();
    uint64_t upper = (uint64_t(2) << b) - 1;   // the bucket's upper bound
    if (!o->fault_p50_ns && seen * 2 >= n) o->fault_p50_ns = upper;
    if (!o->fault_p99_ns && seen * 100 >= n * 99) o->fault_p99_ns = upper;
  }
  if (o->fault_p99_ns > o->fault_max_ns) o->fault_p99_ns = o->fault_max_ns;
  if (o->fault_p50_ns > o->fault_max_ns) o->fault_p50_ns = o->fault_max_ns;
}

}  // namespace zns
