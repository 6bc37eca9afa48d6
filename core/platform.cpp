#include "core/platform.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <elf.h>
#include <link.h>
#include <linux/futex.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace zns {

__thread unsigned t_guards __attribute__((tls_model("initial-exec"))) = 0;
__thread void (*t_lock_wait)() __attribute__((tls_model("initial-exec"))) = nullptr;

namespace {
void *map_anon(size_t bytes, int prot) {
  void *p = mmap(nullptr, bytes, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? nullptr : p;
}
// `bytes` with access `prot` between two inaccessible pages.
void *map_guarded(size_t bytes, int prot) {
  constexpr size_t g = 4096;
  char *p = static_cast<char *>(map_anon(bytes + 2 * g, PROT_NONE));
  if (!p) return nullptr;
  if (mprotect(p + g, bytes, prot) != 0) {
    munmap(p, bytes + 2 * g);
    return nullptr;
  }
  return p + g;
}
}  // namespace

void *os_reserve(size_t bytes) { return map_anon(bytes, PROT_READ | PROT_WRITE); }
void *os_reserve_guarded(size_t bytes) { return map_guarded(bytes, PROT_READ | PROT_WRITE); }
void *os_reserve_lazy(size_t bytes) { return map_anon(bytes, PROT_NONE); }
void *os_reserve_lazy_guarded(size_t bytes) { return map_guarded(bytes, PROT_READ); }

bool os_commit(void *p, size_t bytes) {
  uintptr_t lo = uintptr_t(p) & ~uintptr_t(4095), hi = (uintptr_t(p) + bytes + 4095) & ~uintptr_t(4095);
  int saved = errno;
  bool ok = mprotect(reinterpret_cast<void *>(lo), hi - lo, PROT_READ | PROT_WRITE) == 0;
  errno = saved;
  return ok;
}

bool os_decommit(void *p, size_t bytes) {
  int saved = errno;
  bool ok = mmap(p, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == p;
  if (ok) madvise(p, bytes, MADV_NOHUGEPAGE);   // (the heap's advice for all its mappings)
  errno = saved;
  return ok;
}

void os_release_guarded(void *p, size_t bytes) {
  if (p) munmap(static_cast<char *>(p) - 4096, bytes + 2 * 4096);
}

bool os_random(void *out, size_t n) {
  int saved = errno;
  char *o = static_cast<char *>(out);
  while (n > 0) {
    ssize_t r = getrandom(o, n, GRND_NONBLOCK);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) { errno = saved; return false; }
    o += r;
    n -= size_t(r);
  }
  errno = saved;
  return true;
}

int os_purge(void *p, size_t bytes) {
  int saved = errno;
  int r = madvise(p, bytes, MADV_DONTNEED) == 0 ? 0 : errno;
  errno = saved;
  return r;
}

namespace {
std::atomic<bool> g_ranges_off{false};   // no process_madvise for us (latched)
constexpr int kPidfdSelfThread = -10000;  // PIDFD_SELF_THREAD (linux/pidfd.h, 6.15): the caller

// A small file of /proc or /sys into buf, NUL-terminated, by raw system calls (heap_init reads
// some under its init lock, and a program's own open() or read() may allocate).  Its length; 0
// when it cannot be read.
size_t read_small_file(const char *path, char *buf, size_t cap) {
  int saved = errno;
  long fd = os_open(path, O_RDONLY | O_CLOEXEC);
  size_t n = 0;
  for (long r; fd >= 0 && n < cap - 1 && (r = os_read(int(fd), buf + n, cap - 1 - n)) != 0;) {
    if (r < 0) {
      if (errno == EINTR) continue;
      break;
    }
    n += size_t(r);
  }
  if (fd >= 0) os_close(int(fd));
  buf[n] = 0;
  errno = saved;
  return n;
}

// 0: no seccomp filter; 1: one (or strict mode); -1: cannot tell.  The calling thread's, from
// /proc/thread-self/status: a filter is per thread unless installed with TSYNC (libseccomp's
// default is without), and /proc/self/status is the main thread's (a worker's own filter killed
// the process at a batch: a review, 2026-12-06); /proc/self before Linux 3.17.  A system call a
// filter might kill on (prctl(PR_GET_SECCOMP) is one, in OpenSSH's) is no way to ask; sandboxes
// refuse an open they do not allow (EACCES, EPERM) or broker it.
int seccomp_state() {
  char buf[4096];
  if (!read_small_file("/proc/thread-self/status", buf, sizeof buf) &&
      !read_small_file("/proc/self/status", buf, sizeof buf))
    return -1;
  const char *f = strstr(buf, "\nSeccomp:");
  if (!f) return -1;
  for (f += 9; *f == ' ' || *f == '\t'; ++f) {}
  return *f == '0' ? 0 : *f >= '1' && *f <= '9' ? 1 : -1;
}
}  // namespace

int os_purge_ranges(const iovec *ranges, unsigned n) {
  if (n == 0 || g_ranges_off.load(std::memory_order_relaxed)) return -1;
  int saved = errno;
  int sc = seccomp_state();
  if (sc != 0) {
    if (sc > 0) g_ranges_off.store(true, std::memory_order_relaxed);   // (filters stay)
    errno = saved;
    return -1;
  }
  long r = os_syscall(SYS_process_madvise, kPidfdSelfThread, ranges, size_t(n), MADV_DONTNEED, 0u);
  if (r < 0 && (errno == EBADF || errno == ENOSYS || errno == EPERM || errno == ESRCH))
    g_ranges_off.store(true, std::memory_order_relaxed);
  errno = saved;
  if (r <= 0) return 0;
  unsigned done = 0;
  for (size_t left = size_t(r); done < n && ranges[done].iov_len <= left; ++done) left -= ranges[done].iov_len;
  return int(done);
}

bool os_populate(void *p, size_t bytes) {
  int saved = errno;
  bool known = madvise(p, bytes, MADV_POPULATE_WRITE) == 0 || (errno != EINVAL && errno != EPERM);
  errno = saved;
  return known;
}

namespace {
using GettimeFn = int (*)(clockid_t, timespec *);
std::atomic<GettimeFn> g_vdso_gettime{nullptr};
std::atomic<bool> g_vdso_looked{false};

// The vDSO's clock_gettime: its ELF image is mapped at AT_SYSINFO_EHDR; the symbol is in its
// .dynsym (x86-64: __vdso_clock_gettime; arm64: __kernel_clock_gettime), relative to the address
// its first PT_LOAD was linked at.  Null when anything is not as expected.
GettimeFn vdso_lookup() {
  const char *base = reinterpret_cast<const char *>(getauxval(AT_SYSINFO_EHDR));
  if (!base) return nullptr;
  auto *eh = reinterpret_cast<const ElfW(Ehdr) *>(base);
  if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 || !eh->e_shoff) return nullptr;
  auto *ph = reinterpret_cast<const ElfW(Phdr) *>(base + eh->e_phoff);
  uintptr_t bias = 0;
  bool loaded = false;
  for (unsigned i = 0; i < eh->e_phnum && !loaded; ++i)
    if (ph[i].p_type == PT_LOAD) {
      bias = uintptr_t(base) + ph[i].p_offset - ph[i].p_vaddr;
      loaded = true;
    }
  if (!loaded) return nullptr;
  auto *sh = reinterpret_cast<const ElfW(Shdr) *>(base + eh->e_shoff);
  for (unsigned i = 0; i < eh->e_shnum; ++i) {
    if (sh[i].sh_type != SHT_DYNSYM || sh[i].sh_link >= eh->e_shnum) continue;
    auto *sym = reinterpret_cast<const ElfW(Sym) *>(base + sh[i].sh_offset);
    const char *names = base + sh[sh[i].sh_link].sh_offset;
    for (size_t k = 0, n = sh[i].sh_size / sizeof(ElfW(Sym)); k < n; ++k) {
      if (sym[k].st_shndx == SHN_UNDEF || ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC) continue;
      const char *name = names + sym[k].st_name;
      if (strcmp(name, "__vdso_clock_gettime") == 0 || strcmp(name, "__kernel_clock_gettime") == 0)
        return reinterpret_cast<GettimeFn>(bias + sym[k].st_value);
    }
  }
  return nullptr;
}
}  // namespace

namespace {
// What os_clock_gettime does when it has no vDSO entry (yet): look for it once, else the system
// call.  Out of line, and the look too, so the common call sets up no frame (a refill reads the
// clock: 34 -> 12 instructions of this file's own around the vDSO's or the system call's).
ZNS_NOINLINE GettimeFn vdso_look_once() {
  GettimeFn f = vdso_lookup();
  g_vdso_gettime.store(f, std::memory_order_release);
  g_vdso_looked.store(true, std::memory_order_release);
  return f;
}
ZNS_NOINLINE int clock_failed(int r) {   // (the vDSO's entry returns -errno, as the system call itself does)
  errno = -r;
  return -1;
}
ZNS_NOINLINE int clock_gettime_slow(clockid_t clock, timespec *ts) {
  GettimeFn f = nullptr;
  if (!g_vdso_looked.load(std::memory_order_acquire)) f = vdso_look_once();   // (a race looks twice: harmless)
  if (f) {
    int r = f(clock, ts);
    return ZNS_UNLIKELY(r < 0) ? clock_failed(r) : 0;
  }
  return int(os_syscall(SYS_clock_gettime, clock, ts));
}
}  // namespace

int os_clock_gettime(clockid_t clock, timespec *ts) {
  GettimeFn f = g_vdso_gettime.load(std::memory_order_acquire);
  if (ZNS_UNLIKELY(!f)) return clock_gettime_slow(clock, ts);
  int r = f(clock, ts);
  return ZNS_UNLIKELY(r < 0) ? clock_failed(r) : 0;
}

int os_open(const char *path, int flags, unsigned mode) {
  return int(os_syscall(SYS_openat, AT_FDCWD, path, flags, mode));
}

namespace {
// The next range of a list like "0,2-3,8-11" at *c: [*lo, *hi], and *c past it.  False at the end.
bool next_range(const char **c, unsigned *lo, unsigned *hi) {
  const char *p = *c;
  if (*p < '0' || *p > '9') return false;
  unsigned a = 0, b;
  for (; *p >= '0' && *p <= '9' && a < 100000; ++p) a = a * 10 + unsigned(*p - '0');
  b = a;
  if (*p == '-') {
    b = 0;
    for (++p; *p >= '0' && *p <= '9' && b < 100000; ++p) b = b * 10 + unsigned(*p - '0');
  }
  if (b < a || b >= 4096) return false;   // (Linux has at most 1024 nodes; CPU lists stop at 4096 too)
  if (*p == ',') ++p;
  *c = p;
  *lo = a;
  *hi = b;
  return true;
}
}  // namespace

unsigned os_numa_topology(uint8_t *cpu_node, unsigned max_cpus, uint16_t *node_id, unsigned max_nodes,
                          const char **not_local) {
  int saved = errno;
  *not_local = nullptr;
  // The nodes with CPUs: a node of memory alone (CXL, HBM) has no thread whose first touch lands
  // there, and would only split the lists (a kernel without has_cpu: the online nodes).
  char buf[4096];
  unsigned count = 0, lo, hi;
  if (read_small_file("/sys/devices/system/node/has_cpu", buf, sizeof buf) ||
      read_small_file("/sys/devices/system/node/online", buf, sizeof buf))
    for (const char *c = buf; next_range(&c, &lo, &hi);) count += hi - lo + 1;
  if (count <= 1) {
    errno = saved;
    return 1;
  }
  // Each node's index (its rank among the online ids, folded onto max_nodes) for its CPUs.
  unsigned index = 0;
  const char *c = buf;
  char list[4096];
  while (next_range(&c, &lo, &hi))
    for (unsigned id = lo; id <= hi; ++id, ++index) {
      unsigned ix = index % max_nodes;
      if (index < max_nodes) node_id[ix] = uint16_t(id);
      char path[64] = "/sys/devices/system/node/node";
      size_t n = 29;
      char digits[8];
      unsigned d = 0;
      for (unsigned v = id; d == 0 || v; v /= 10) digits[d++] = char('0' + v % 10);
      while (d) path[n++] = digits[--d];
      memcpy(path + n, "/cpulist", 9);
      if (!read_small_file(path, list, sizeof list)) continue;
      unsigned a, b;
      for (const char *l = list; next_range(&l, &a, &b);)
        for (unsigned cpu = a; cpu <= b && cpu < max_cpus; ++cpu) cpu_node[cpu] = uint8_t(ix);
    }
  // First touch places a page on the toucher's node under the default and local policies, and
  // under a bind or preferred-many policy of several nodes (the nearest of them); not under
  // interleave, nor one preferred node or a bind to one.  MPOL_DEFAULT 0, PREFERRED 1, BIND 2,
  // INTERLEAVE 3, LOCAL 4, PREFERRED_MANY 5; flags above the low byte.  This thread's policy (the
  // one heap_init runs in), which threads it starts inherit.
  unsigned long mask[16] = {};   // 1024 nodes (the kernel refuses a shorter mask than it has)
  int mode = 0;
  auto nodes_in = [&] {
    unsigned n = 0;
    for (unsigned long w : mask) n += unsigned(__builtin_popcountl(w));
    return n;
  };
  if (os_syscall(SYS_get_mempolicy, &mode, mask, 1024ul, nullptr, 0ul) == 0) {
    unsigned in_mask = nodes_in();
    int m = mode & 0xff;
    if (!(m == 0 || m == 4 || (m == 1 && in_mask == 0) || ((m == 2 || m == 5) && in_mask > 1)))
      *not_local = "the memory policy does not place pages where they are first touched";
  }
  // A cpuset that lets the process have memory of one node only (cpuset.mems) puts every page
  // there, whatever the policy says.
  for (unsigned long &w : mask) w = 0;
  constexpr unsigned long kMemsAllowed = 4;   // MPOL_F_MEMS_ALLOWED
  if (!*not_local && os_syscall(SYS_get_mempolicy, nullptr, mask, 1024ul, nullptr, kMemsAllowed) == 0 && nodes_in() < 2)
    *not_local = "the process may have memory of one node only (its cpuset's mems)";
  errno = saved;
  return count;
}

static_assert(sizeof(sigset_t) <= sizeof(uint64_t[16]), "QuietWrite's saved mask");

namespace {
bool pending_here(int sig) {
  sigset_t pending;
  return os_sigpending(&pending) == 0 && sigismember(&pending, sig);
}
void take_back(int sig) {
  sigset_t x;
  sigemptyset(&x);
  sigaddset(&x, sig);
  timespec now{0, 0};
  os_sigtimedwait(&x, nullptr, &now);
}
}  // namespace

QuietWrite::QuietWrite() {
  sigset_t x;
  sigemptyset(&x);
  sigaddset(&x, SIGXFSZ);
  sigaddset(&x, SIGPIPE);
  const sigset_t *was_blocked = reinterpret_cast<const sigset_t *>(old_);
  pthread_sigmask(SIG_BLOCK, &x, reinterpret_cast<sigset_t *>(old_));
  // Pending before this write only if the program had it blocked (else it was delivered): no
  // rt_sigpending otherwise, a call a sandbox's allowlist may kill for (OpenSSH's pre-auth child,
  // whose statistics line at exit died of SIGSYS there; a review, 2026-12-06).
  xfsz_was_ = sigismember(was_blocked, SIGXFSZ) == 1 && pending_here(SIGXFSZ);
  pipe_was_ = sigismember(was_blocked, SIGPIPE) == 1 && pending_here(SIGPIPE);
}

void QuietWrite::failed(int err) {   // (only a signal this write raised: not pending before, pending now)
  int saved = errno;
  if (err == EFBIG && !xfsz_was_) take_back(SIGXFSZ);   // (a no-op when it is not pending)
  if (err == EPIPE && !pipe_was_) take_back(SIGPIPE);
  errno = saved;
}

QuietWrite::~QuietWrite() { pthread_sigmask(SIG_SETMASK, reinterpret_cast<sigset_t *>(old_), nullptr); }

namespace {
int g_err_copy = -1;   // the copy of stderr (close-on-exec, 512 up), or -1
dev_t g_err_dev;       // ... and the file's identity: the program may close the number and reuse it
ino_t g_err_ino;
bool err_copy_is_ours() {
  struct stat st;
  int fl = g_err_copy < 0 ? -1 : os_fcntl(g_err_copy, F_GETFD);
  return fl >= 0 && (fl & FD_CLOEXEC) && os_fstat(g_err_copy, &st) == 0 && st.st_dev == g_err_dev &&
         st.st_ino == g_err_ino;
}
}  // namespace

ForkPage g_fork_page;

void keep_stderr_copy() {
  fork_work(kForkStats);
  struct stat st;
  // Not of a pipe or a socket: a program that detaches (0, 1 and 2 to /dev/null, no fork) kept
  // its caller's `$(...)` waiting for the end of file until it exited.  Not below
  // high_fd_floor() either (the program's first open got 4 instead of 3).
  if (g_err_copy >= 0 || os_fstat(2, &st) != 0 || S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode)) return;
  int fd = os_fcntl(2, F_DUPFD_CLOEXEC, high_fd_floor());
  if (fd < 0) return;
  g_err_dev = st.st_dev;
  g_err_ino = st.st_ino;
  g_err_copy = fd;
}

ZNS_FORK_CODE void drop_stderr_copy() {
  if (g_err_copy < 0) return;   // (no store: see Lock::reset)
  if (err_copy_is_ours()) os_close(g_err_copy);
  g_err_copy = -1;
}

int stderr_fd() {
  if (g_err_copy < 0 || os_fcntl(2, F_GETFD) >= 0) return 2;
  return err_copy_is_ours() ? g_err_copy : 2;
}

int Buf::say(int fd) {
  if (fd == 2) fd = stderr_fd();
  QuietWrite q;
  int e = flush(fd);
  if (e) q.failed(e);
  return e;
}

namespace {
// (pid << 32 | tid) of each of the library's threads; a forked child clears them all
// (library_threads_after_fork: a pid does not tell a parent's from a child's across PID
// namespaces, where both may be 1).
// g_library_gen: bumped by every note and forget, so that a count of them can be known to hold
// across the read of the kernel's count (a thread started and noted in between was taken for a
// program thread gone: a review ended a forked child under a running thread that way).
constexpr unsigned kLibraryThreads = 8;
std::atomic<uint64_t> g_library_threads[kLibraryThreads];
std::atomic<uint64_t> g_library_gen{0};
std::atomic<bool> g_ending{false};
std::atomic<int> g_end_wanted{0};   // the tier's thread found it alone: the watcher ends it (futex)

// The main thread has ended (pthread_exit: the thread group leader is a zombie) and every thread
// left but it is the library's.  From /proc/self/stat (the leader's: short, unlike status, whose
// Threads: line a long Groups: line pushed out of a buffer): the state, and num_threads, the
// kernel's count of the group's threads, which holds the zombie leader until the group ends.  A
// count, not a listing of /proc/self/task (a listing read while threads come and go may miss
// one).  A library thread not noted yet, or forgotten but not ended yet, makes it "not alone".
bool only_library_threads_left() {
  uint64_t gen = g_library_gen.load(std::memory_order_acquire), pid = uint64_t(os_getpid()), ours = 0;
  for (auto &t : g_library_threads)
    if (t.load(std::memory_order_acquire) >> 32 == pid) ++ours;
  // (the leader's own task file: /proc/self/stat adds up every thread's times, 316 us with 4000
  // threads; this one is some 2 us whatever their number, with the same fields)
  // The leader's number as /proc knows it (readlink of /proc/self: getpid() is this PID
  // namespace's, and /proc may be another's: a forked child in a namespace of its own is 1 and
  // /proc's task 1 is not its leader)
  char path[64], self[24], buf[1024];
  long k = os_syscall(SYS_readlinkat, AT_FDCWD, "/proc/self", self, sizeof self - 1);
  if (k > 0) {
    self[k] = 0;
    Buf(path, sizeof path).str("/proc/self/task/").str(self).str("/stat").chr('\0');
  } else {
    Buf(path, sizeof path).str("/proc/self/stat").chr('\0');
  }
  size_t n = read_small_file(path, buf, sizeof buf);
  if (g_library_gen.load(std::memory_order_acquire) != gen) return false;   // (the next look decides)
  size_t close_paren = 0;   // (after the command's name, which may hold anything)
  for (size_t i = 0; i < n; ++i)
    if (buf[i] == ')') close_paren = i;
  if (!close_paren || close_paren + 2 >= n || buf[close_paren + 2] != 'Z') return false;
  // fields after the name: 3 state, 4 ppid, ... 20 num_threads
  unsigned field = 2;
  uint64_t threads = 0;
  bool digits = false;
  for (size_t i = close_paren + 1; i < n; ++i) {
    if (buf[i] == ' ') {
      if (field == 20) break;
      ++field;
      continue;
    }
    if (field == 20) {
      if (buf[i] < '0' || buf[i] > '9') return false;
      threads = threads * 10 + uint64_t(buf[i] - '0');
      digits = true;
    }
  }
  return field == 20 && digits && threads == 1 + ours;
}

// exit(0) on a thread of its own: the default stack (the program's destructors and atexit
// handlers run there: on a quiet thread's 64 KiB a destructor with a 200 KB array crashed) and no
// signal blocked (a handler that waited for SIGALRM hung, and none could stop it).
void *exiter(void *) {
  sigset_t none;
  sigemptyset(&none);
  pthread_sigmask(SIG_SETMASK, &none, nullptr);
  exit(0);
}
void end_process() {
  if (g_ending.exchange(true)) return;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t th;
  int rc = pthread_create(&th, &attr, exiter, nullptr);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    // (no thread now: RLIMIT_NPROC, a pids limit.  Not exit here, on a small stack: the next look
    // tries again; meanwhile this thread takes signals, so the process can be stopped.)
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, nullptr);
    g_ending.store(false);
    if (g_end_wanted.load()) g_end_wanted.store(0);   // (the tier's thread asks again)
  }
}

// The tier's companion (start_end_watch): waits until the tier's thread finds the process alone.
void *end_watch(void *) {
  for (;;) {
    while (g_end_wanted.load(std::memory_order_acquire) == 0)
      os_syscall(SYS_futex, &g_end_wanted, FUTEX_WAIT_PRIVATE, 0, nullptr, nullptr, 0);
    end_process();
    if (g_ending.load()) return nullptr;   // (else no thread could be started: asked again later)
  }
}

uint64_t library_thread_key() { return uint64_t(os_getpid()) << 32 | uint64_t(os_syscall(SYS_gettid)); }
}  // namespace

void note_library_thread() {
  fork_work(kForkThreads);
  uint64_t me = library_thread_key();
  g_library_gen.fetch_add(1, std::memory_order_acq_rel);
  for (auto &t : g_library_threads) {
    uint64_t v = t.load(std::memory_order_acquire);
    // a free entry, or a stale one (another process's: a forked child's copy)
    if ((v == 0 || v >> 32 != me >> 32) && t.compare_exchange_strong(v, me)) break;
  }
  g_library_gen.fetch_add(1, std::memory_order_acq_rel);
}
void forget_library_thread() {   // (as it ends: its tid may be a program thread's next)
  uint64_t me = library_thread_key();
  g_library_gen.fetch_add(1, std::memory_order_acq_rel);
  for (auto &t : g_library_threads) {
    uint64_t v = me;
    if (t.compare_exchange_strong(v, 0)) break;
  }
  g_library_gen.fetch_add(1, std::memory_order_acq_rel);
}

void end_process_if_alone() {
  // (at most every 100 ms, whatever the interval: each look opens a file in the program's
  // descriptor table, and costs)
  static std::atomic<uint64_t> last{0};
  uint64_t now = now_ms(), then = last.load(std::memory_order_relaxed);
  if (now - then < 100 || !last.compare_exchange_strong(then, now)) return;
  if (!g_ending.load(std::memory_order_relaxed) && only_library_threads_left()) end_process();
}

void end_process_if_alone_for_tier() {
  if (g_end_wanted.load(std::memory_order_relaxed) || !only_library_threads_left()) return;
  g_end_wanted.store(1, std::memory_order_release);
  os_syscall(SYS_futex, &g_end_wanted, FUTEX_WAKE_PRIVATE, 1, nullptr, nullptr, 0);
}

namespace {
// A forked child has one thread, none of the library's: the notes and the ending are its
// parent's (a pid does not tell them apart across PID namespaces: the parent and the child may
// both be 1, and a child ended under its running workers; an end begun by the parent left the
// child unable to end).
// (Stores only where there is something to clear: see Lock::reset)
ZNS_FORK_CODE void library_threads_after_fork() {
  if (!(g_fork_page.work.load(std::memory_order_relaxed) & kForkThreads)) return;   // (never noted)
  for (auto &t : g_library_threads)
    if (t.load(std::memory_order_relaxed) != 0) t.store(0, std::memory_order_relaxed);
  if (g_ending.load(std::memory_order_relaxed)) g_ending.store(false, std::memory_order_relaxed);
  if (g_end_wanted.load(std::memory_order_relaxed) != 0) g_end_wanted.store(0, std::memory_order_relaxed);
}
__attribute__((constructor)) void library_threads_atfork() {
  pthread_atfork(nullptr, nullptr, library_threads_after_fork);
}
}  // namespace

void start_end_watch() {
  (void)start_quiet_thread(end_watch);   // (if it cannot start, the program ends as it did before)
}

namespace {
void *quiet_thread_start(void *fn) {
  note_library_thread();
  void *r = reinterpret_cast<void *(*)(void *)>(fn)(nullptr);
  forget_library_thread();
  return r;
}
}  // namespace

// By the system call itself (a forked child faulted in pthread_sigmask's code page: ForkPage).
// Every signal but the two glibc needs for itself (as pthread_sigmask leaves out): 32 (SIGCANCEL,
// thread cancellation) and 33 (SIGSETXID, setuid in a threaded program).  The kernel's set is 64
// bits; the rest of *old is left zero.
ZNS_FORK_CODE void block_signals(sigset_t *old) {
  uint64_t all = ~((uint64_t(1) << (32 - 1)) | (uint64_t(1) << (33 - 1)));
  __builtin_memset(old, 0, sizeof *old);
  os_syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, old, sizeof all);
}
ZNS_FORK_CODE void restore_signals(const sigset_t *old) {
  os_syscall(SYS_rt_sigprocmask, SIG_SETMASK, old, nullptr, sizeof(uint64_t));
}

bool start_quiet_thread(void *(*fn)(void *)) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  sigset_t old;   // (the thread inherits the mask)
  block_signals(&old);
  pthread_t th;
  int rc = pthread_create(&th, &attr, quiet_thread_start, reinterpret_cast<void *>(fn));
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  pthread_attr_destroy(&attr);
  return rc == 0;
}

int high_fd_floor() {
  rlimit rl{};
  if (os_syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, nullptr, &rl) == 0 && rl.rlim_cur / 2 < 512)
    return int(rl.rlim_cur / 2);
  return 512;
}

int fd_out_of_the_way(int fd) {
  int floor = high_fd_floor();
  int high = fd < floor ? os_fcntl(fd, F_DUPFD_CLOEXEC, floor) : -1;
  if (high < 0 && fd <= 2) high = os_fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (high < 0) return fd;
  os_close(fd);
  return high;
}

namespace {
struct FileId { dev_t dev; ino_t ino; bool set; };
FileId g_start_out[2];   // stdout's and stderr's files at start (remember_program_outputs)
}  // namespace

void remember_program_outputs() {
  struct stat st;
  for (int i = 0; i < 2; ++i)
    g_start_out[i] = os_fstat(1 + i, &st) == 0 ? FileId{st.st_dev, st.st_ino, true} : FileId{0, 0, false};
}

bool is_program_output(int fd) {
  struct stat st, out;
  if (os_fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return false;
  // (not fd itself: a program started with 1 or 2 closed gives the dump that number, and the dump
  // was taken for its output and appended to a file it should have emptied)
  for (int std : {1, 2})
    if (std != fd && os_fstat(std, &out) == 0 && out.st_dev == st.st_dev && out.st_ino == st.st_ino) return true;
  // (coreutils close 1 and 2 at exit, before the dump: the files they were at start count too)
  for (const FileId &f : g_start_out)
    if (f.set && f.dev == st.st_dev && f.ino == st.st_ino) return true;
  return false;
}

int open_dump(const char *path, bool empty, bool append) {
  int how = O_WRONLY | O_CREAT | O_CLOEXEC | O_NOCTTY | (append ? O_APPEND : 0);
  int fd = os_open(path, how | O_NONBLOCK, 0644);
  // a lease on a regular file (Samba, an NFS server) refuses a non-blocking open: waited out, as
  // any open does (a FIFO without a reader answers ENXIO, not this)
  if (fd < 0 && errno == EWOULDBLOCK) fd = os_open(path, how, 0644);
  if (fd < 0) return -1;
  int saved = errno;
  struct stat st;
  bool regular = os_fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  int flags = (os_fcntl(fd, F_GETFL) & ~O_NONBLOCK) | (append ? O_APPEND : 0);
  if (regular && is_program_output(fd)) flags |= O_APPEND;
  else if (regular && empty && os_ftruncate(fd, 0) != 0) {}   // (as O_TRUNC would have)
  os_fcntl(fd, F_SETFL, flags);
  errno = saved;
  return fd;
}

int write_all(int fd, const char *p, size_t n) {
  NoCancel no_cancel;
  int saved = errno;
  while (n > 0) {
    ssize_t w = os_write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      errno = saved;
      return e;
    }
    p += w;
    n -= size_t(w);
  }
  errno = saved;
  return 0;
}

size_t process_rss() {
  char b[128];
  size_t rss = 0;
  // (thread-self: /proc/self/statm reads all zeros once the main thread has called pthread_exit)
  if (read_small_file("/proc/thread-self/statm", b, sizeof b) || read_small_file("/proc/self/statm", b, sizeof b)) {
    const char *s = b;
    while (*s && *s != ' ') ++s;   // skip total size
    while (*s == ' ') ++s;
    while (*s >= '0' && *s <= '9') rss = rss * 10 + size_t(*s++ - '0');
    rss *= size_t(sysconf(_SC_PAGESIZE));
  }
  return rss;
}

Buf &Buf::str(const char *s) {
  while (*s) chr(*s++);
  return *this;
}
Buf &Buf::chr(char c) {
  if (n_ < cap_) p_[n_++] = c;
  return *this;
}
Buf &Buf::u64(uint64_t v, int width) {
  char t[24];
  int k = 0;
  do { t[k++] = char('0' + v % 10); v /= 10; } while (v);
  for (int i = k; i < width; ++i) chr(' ');
  while (k) chr(t[--k]);
  return *this;
}
Buf &Buf::file_error(int err) {
  if (err == EACCES || err == EPERM) return str("permission denied");
  if (err == ENOENT) return str("no such directory (or a link to nothing)");
  if (err == EISDIR) return str("is a directory");
  if (err == ENOTDIR) return str("a part of the path is not a directory");
  if (err == EROFS) return str("read-only file system");
  if (err == ENAMETOOLONG) return str("path too long");
  if (err == ENOSPC) return str("no space left on the device");
  if (err == EDQUOT) return str("disk quota exceeded");
  if (err == EFBIG) return str("file size limit (ulimit -f)");
  if (err == EPIPE) return str("the reader of the pipe has gone");
  if (err == ENXIO) return str("a FIFO that nobody reads");
  return str("errno ").u64(uint64_t(err));
}

Buf &Buf::hex(uintptr_t v) {
  char t[20];
  int k = 0;
  do { t[k++] = "0123456789abcdef"[v & 15]; v >>= 4; } while (v);
  str("0x");
  while (k) chr(t[--k]);
  return *this;
}
Buf &Buf::fixed(uint64_t num, uint64_t den, int decimals, int width) {
  uint64_t scale = 1;
  for (int i = 0; i < decimals; ++i) scale *= 10;
  uint64_t v = den ? (num * scale + den / 2) / den : 0;   // callers keep num * scale in range
  char t[32];
  Buf tmp(t, sizeof t);
  tmp.u64(v / scale);
  if (decimals) {
    tmp.chr('.');
    uint64_t f = v % scale;
    for (uint64_t d = scale / 10; d; d /= 10) { tmp.chr(char('0' + f / d)); f %= d; }
  }
  for (int i = int(tmp.size()); i < width; ++i) chr(' ');
  for (size_t i = 0; i < tmp.size(); ++i) chr(t[i]);
  return *this;
}

// "zns-slab: WHAT in CALL(ADDR) (pid N)": the pid says which process of a server's workers (or a
// forked child) it was, where stderr is shared.
Buf &fatal_line(Buf &b, const char *what, const char *call, const void *addr) {
  return b.str("zns-slab: ").str(what).str(" in ").str(call).chr('(').hex(uintptr_t(addr))
      .str(") (pid ").u64(uint64_t(os_getpid())).str(")\n");
}

void fatal_abort() {
  // abort() without running atexit handlers or flushing stdio that may sit in a broken heap.
  signal(SIGABRT, SIG_DFL);
  abort();
}

void fatal(const char *what, const char *call, const void *addr) {
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, nullptr);   // (to the abort: see NoCancel)
  char mem[256];
  Buf b(mem, sizeof mem);
  fatal_line(b, what, call, addr).say();
  fatal_abort();
}

}  // namespace zns
