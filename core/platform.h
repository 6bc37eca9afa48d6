// The OS contract: every system call the core makes goes through these few functions, which
// return error codes instead of throwing or printing, so tests can reason about them and the tier
// can hook them.  Also the allocation-free formatter used for error lines and the stats dump.
#pragma once
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

// Built with ThreadSanitizer (make check-sanitize's builds)
#if defined(__SANITIZE_THREAD__)
#define ZNS_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define ZNS_UNDER_TSAN 1
#endif
#endif
#ifndef ZNS_UNDER_TSAN
#define ZNS_UNDER_TSAN 0
#endif
inline constexpr bool kUnderTsan = ZNS_UNDER_TSAN;

#define ZNS_LIKELY(x) __builtin_expect(!!(x), 1)
#define ZNS_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ZNS_INLINE inline __attribute__((always_inline))
#define ZNS_NOINLINE __attribute__((noinline))
#define ZNS_EXPORT __attribute__((visibility("default")))
// An allocation entry point starts on a cache line of its own: where it falls otherwise moves with
// every change elsewhere in the library, and its time with it (DESIGN "Code placement").
#define ZNS_HOT __attribute__((aligned(64)))
// What a forked child runs of the library before the program goes on (the atfork child handlers
// and what they call): together, sorted by name into one place of the text (the linker's
// `.text.sorted.*`), as a child faults in every code page it runs (DESIGN "fork", its cost).
#define ZNS_FORK_CODE __attribute__((section(".text.sorted.zns_fork"), noinline))
// The first of them (heap.cpp's fork_child, first in the link) starts the page: ~2.9 KB in all.
#define ZNS_FORK_CODE_FIRST __attribute__((section(".text.sorted.zns_fork"), noinline, aligned(4096)))

namespace zns {

// Reserve `bytes` of address space, readable and writable, committed on first touch
// (MAP_NORESERVE).  Returns nullptr on failure.
void *os_reserve(size_t bytes);
// The same with an inaccessible page on each side, for metadata: an overflow off a neighbouring
// mapping (slab data, or anything else) faults instead of reaching it.  Release with os_release_guarded.
void *os_reserve_guarded(size_t bytes);
void os_release_guarded(void *p, size_t bytes);
// Address space only, committed later with os_commit: inaccessible (PROT_NONE), or in the
// guarded variant readable as zeros (PROT_READ, for metadata that readers may look at before it
// is committed) with an inaccessible page on each side.  Neither counts against the commit limit
// (vm.overcommit_memory=2) nor RLIMIT_DATA until committed.
void *os_reserve_lazy(size_t bytes);
void *os_reserve_lazy_guarded(size_t bytes);
// Make [p, p + bytes) readable and writable (page-rounded outward).  False when the OS refuses
// (commit limit, RLIMIT_DATA): the caller treats the memory as unavailable.
bool os_commit(void *p, size_t bytes);
// The reverse, for pages that hold nothing: [p, p + bytes) (page-aligned) becomes a new
// inaccessible mapping, its pages and its charge (commit limit, RLIMIT_DATA) given back, with the
// advice the heap gives all its mappings (MADV_NOHUGEPAGE: without it the range, committed again,
// could never merge with its neighbours, and every hole left map entries behind).  False when the
// OS refuses (the map count: vm.max_map_count); the range is then as it was.
bool os_decommit(void *p, size_t bytes);
// Fill `n` bytes with random bits from the kernel (getrandom; no allocation).  False on failure.
bool os_random(void *out, size_t n);
// Give the pages back to the OS; they read as zero afterwards.  Returns 0 or an errno value.
int os_purge(void *p, size_t bytes);
// Give back several ranges in one process_madvise(2) call on this process (PIDFD_SELF, Linux
// 6.15+): the kernel then flushes the TLB once for all of them, where madvise flushes once per
// call, page by page for a range of up to 33 pages (on this project's VM 4 us a page: a 64 KiB
// group 62 us alone, 12 us in a batch; DESIGN "The depot").  Returns how many leading ranges
// were given back whole; the caller gives back the rest one call at a time (os_purge), as it
// would without this one: the kernel stops at a range it refuses (EINVAL: an mlocked page) and
// says only how far it got.  -1: no call was made.  A kernel without the call or without
// PIDFD_SELF (EBADF, ENOSYS, ESRCH, or EPERM from a seccomp filter) switches it off for good after
// the first try.  And before each call the thread's status must say "Seccomp: 0": a filter that
// kills on calls it does not know (OpenSSH's pre-authentication child, a browser's renderer)
// allows madvise but not this; a filter found switches it off for good, a status that cannot be
// read (a sandbox that refuses the open, no descriptor left) skips this call only.  (The heap
// does not call it when ZNS_PROCESS_MADVISE=0.)
int os_purge_ranges(const iovec *ranges, unsigned n);
// Map [p, p + bytes) in now, written (MADV_POPULATE_WRITE, Linux 5.14+): what the first stores
// would fault in one page at a time.  Best effort: pages it could not map fault in later as
// usual.  False when the kernel does not know the advice (EINVAL) or a seccomp filter refuses it
// (EPERM): the caller stops asking.
bool os_populate(void *p, size_t bytes);
// clock_gettime through the vDSO's own entry (found once in its symbol table), else the system call.
int os_clock_gettime(clockid_t clock, timespec *ts);
// Milliseconds on a monotonic, cheap (coarse) clock (inline: every refill reads it).
inline uint64_t now_ms() {
  timespec ts;
  os_clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return uint64_t(ts.tv_sec) * 1000 + uint64_t(ts.tv_nsec) / 1000000;
}
// A spin-wait hint (x86 pause, aarch64 yield) and a cheap, unordered cycle-ish counter (the TSC,
// or aarch64's virtual counter), for seeds and backoff only.
inline void cpu_relax() {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ volatile("yield");
#endif
}
inline uint64_t cycle_counter() {
#if defined(__x86_64__)
  return __builtin_ia32_rdtsc();
#elif defined(__aarch64__)
  uint64_t v;
  __asm__ volatile("mrs %0, cntvct_el0" : "=r"(v));
  return v;
#else
  return 0;
#endif
}
// A system call made by the instruction itself.  The C library's syscall() is a symbol too, which
// a program or a preloaded tool may define (a tracer; libfaketime built with INTERCEPT_SYSCALL),
// and the library makes these calls under its locks (a review, 2026-12-05: a tracer's syscall()
// taking its mutex deadlocked two threads as its mmap() had).  Returns as syscall() does: the
// result, or -1 with errno set.  Up to six integer or pointer arguments.
inline long raw_syscall(long nr, long a, long b, long c, long d, long e, long f) {
#if defined(__x86_64__)
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  long r;
  __asm__ volatile("syscall"
                   : "=a"(r)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return r;
#elif defined(__aarch64__)
  register long x8 __asm__("x8") = nr;
  register long x0 __asm__("x0") = a;
  register long x1 __asm__("x1") = b;
  register long x2 __asm__("x2") = c;
  register long x3 __asm__("x3") = d;
  register long x4 __asm__("x4") = e;
  register long x5 __asm__("x5") = f;
  __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
  return x0;
#else
#error "raw_syscall: add this architecture's system call instruction"
#endif
}
template <class T> inline long syscall_arg(T v) { return long(v); }   // (integers)
template <class T> inline long syscall_arg(T *v) { return long(reinterpret_cast<uintptr_t>(v)); }
inline long syscall_arg(std::nullptr_t) { return 0; }
template <class... A> inline long os_syscall(long nr, A... args) {
  static_assert(sizeof...(A) <= 6, "at most six arguments");
  long v[6] = {syscall_arg(args)...};
  long r = raw_syscall(nr, v[0], v[1], v[2], v[3], v[4], v[5]);
  if (ZNS_UNLIKELY(r < 0 && r > -4096)) {
    errno = int(-r);
    return -1;
  }
  return r;
}

// The C library's memory and clock calls are symbols a program or a preloaded tool may define
// (a tracer, libfaketime), and one that takes a lock of its own or allocates or frees in them
// meets the library's locks, which are held around these calls: a deadlock on the thread itself,
// or lock-order inversion with another (reviews of 2026-12-05).  So the library makes them as raw
// system calls (os_syscall), or through the vDSO for the clock.  Declared in namespace zns, these
// hide ::mmap and the rest for every unqualified call in the library's code; the clock is
// os_clock_gettime.
inline void *mmap(void *a, size_t n, int prot, int flags, int fd, off_t off) {
  return reinterpret_cast<void *>(os_syscall(SYS_mmap, a, n, prot, flags, fd, off));
}
inline int munmap(void *a, size_t n) { return int(os_syscall(SYS_munmap, a, n)); }
inline int mprotect(void *a, size_t n, int prot) { return int(os_syscall(SYS_mprotect, a, n, prot)); }
inline int madvise(void *a, size_t n, int advice) { return int(os_syscall(SYS_madvise, a, n, advice)); }
inline void *mremap(void *a, size_t n, size_t m, int flags, void *to = nullptr) {
  return reinterpret_cast<void *>(os_syscall(SYS_mremap, a, n, m, flags, to));
}

// open(2) by a raw system call (openat): the library's own files never go through a program's
// open(), which may allocate (a tracer's wrapper that copies the path) while the library holds a
// lock its malloc needs: heap_init opens the tier's file and the NUMA lists under its init lock.
int os_open(const char *path, int flags, unsigned mode = 0);
// The library's other system calls, raw for the same reason (and none is a cancellation point):
// the stats, profiler and tier files (read, write, pread, pwrite, fstat, ...), the tier's
// userfaultfd (ioctl, poll), its waits (nanosleep) and QuietWrite's signal calls.  libfaketime
// wraps stat, fstat, poll and nanosleep; fakechroot unlink and rename; a tracer any of them, and
// the tier makes several under its locks.  Named os_* rather than hiding the C library's names as
// mmap's above do: a call with a pointer to a struct of the global namespace (stat, pollfd,
// uffd_msg) would find ::fstat as well and be ambiguous.  tests/api/wrap_lock wraps each of them
// and counts the calls that reach it.  Each makes the system call glibc 2.36 makes for it on
// x86-64 (fstat and stat as newfstatat, nanosleep as clock_nanosleep, poll, unlink and rename as
// themselves where the architecture has them), so that a seccomp filter written for the program
// allows the library's calls as well.  Left to the C library: pthread_* (its own locks and
// signals), sigaction/signal and sigprocmask (glibc guards its internal signals), getrandom and
// getrlimit (once, at start), sysconf, getauxval, sched_getcpu (rseq), the dl* calls.
inline ssize_t os_read(int fd, void *b, size_t n) { return os_syscall(SYS_read, fd, b, n); }
inline ssize_t os_write(int fd, const void *b, size_t n) { return os_syscall(SYS_write, fd, b, n); }
inline ssize_t os_pread(int fd, void *b, size_t n, off_t off) { return os_syscall(SYS_pread64, fd, b, n, off); }
inline ssize_t os_pwrite(int fd, const void *b, size_t n, off_t off) {
  return os_syscall(SYS_pwrite64, fd, b, n, off);
}
inline int os_close(int fd) { return int(os_syscall(SYS_close, fd)); }
inline int os_fcntl(int fd, int cmd, long arg = 0) { return int(os_syscall(SYS_fcntl, fd, cmd, arg)); }
inline off_t os_lseek(int fd, off_t off, int whence) { return off_t(os_syscall(SYS_lseek, fd, off, whence)); }
inline int os_ftruncate(int fd, off_t len) { return int(os_syscall(SYS_ftruncate, fd, len)); }
inline int os_fallocate(int fd, int mode, off_t off, off_t len) {
  return int(os_syscall(SYS_fallocate, fd, mode, off, len));
}
inline int os_flock(int fd, int op) { return int(os_syscall(SYS_flock, fd, op)); }
template <class T> inline int os_ioctl(int fd, unsigned long request, T arg) {
  return int(os_syscall(SYS_ioctl, fd, request, arg));
}
inline int os_fstat(int fd, struct stat *st) {
  if (fd < 0) {   // (AT_FDCWD, -100, would stat the working directory)
    errno = EBADF;
    return -1;
  }
  return int(os_syscall(SYS_newfstatat, fd, "", st, AT_EMPTY_PATH));
}
inline int os_stat(const char *path, struct stat *st) {
  return int(os_syscall(SYS_newfstatat, AT_FDCWD, path, st, 0));
}
inline int os_unlink(const char *path) {
#ifdef SYS_unlink
  return int(os_syscall(SYS_unlink, path));
#else
  return int(os_syscall(SYS_unlinkat, AT_FDCWD, path, 0));
#endif
}
inline int os_rename(const char *from, const char *to) {
#ifdef SYS_rename
  return int(os_syscall(SYS_rename, from, to));
#else
  return int(os_syscall(SYS_renameat2, AT_FDCWD, from, AT_FDCWD, to, 0));
#endif
}
inline int os_pipe2(int fds[2], int flags) { return int(os_syscall(SYS_pipe2, fds, flags)); }
inline ssize_t os_sendfile(int out, int in, off_t *off, size_t n) { return os_syscall(SYS_sendfile, out, in, off, n); }
inline int os_mincore(void *p, size_t n, unsigned char *vec) { return int(os_syscall(SYS_mincore, p, n, vec)); }
inline int os_msync(void *p, size_t n, int flags) { return int(os_syscall(SYS_msync, p, n, flags)); }
inline int os_prctl(int option, unsigned long a2 = 0, unsigned long a3 = 0, unsigned long a4 = 0,
                    unsigned long a5 = 0) {
  return int(os_syscall(SYS_prctl, option, a2, a3, a4, a5));
}
inline ssize_t os_process_vm_readv(pid_t pid, const iovec *local, unsigned long nl, const iovec *remote,
                                   unsigned long nr, unsigned long flags) {
  return os_syscall(SYS_process_vm_readv, pid, local, nl, remote, nr, flags);
}
inline pid_t os_getpid() { return pid_t(os_syscall(SYS_getpid)); }
inline int os_sched_yield() { return int(os_syscall(SYS_sched_yield)); }
inline int os_nanosleep(const timespec *req, timespec *rem) {
  return int(os_syscall(SYS_clock_nanosleep, CLOCK_REALTIME, 0, req, rem));   // (-1/errno, as nanosleep)
}
// poll(2); where there is no such call, ppoll with no mask.  timeout_ms < 0: none.
inline int os_poll(pollfd *fds, nfds_t n, int timeout_ms) {
#ifdef SYS_poll
  return int(os_syscall(SYS_poll, fds, n, timeout_ms));
#else
  timespec ts{timeout_ms / 1000, long(timeout_ms % 1000) * 1000000};
  return int(os_syscall(SYS_ppoll, fds, n, timeout_ms < 0 ? nullptr : &ts, nullptr, 8));
#endif
}
// The kernel's signal set is 64 bits (_NSIG / 8 bytes), the first word of a sigset_t.
inline int os_sigpending(sigset_t *set) { return int(os_syscall(SYS_rt_sigpending, set, 8)); }
inline int os_sigtimedwait(const sigset_t *set, siginfo_t *info, const timespec *timeout) {
  return int(os_syscall(SYS_rt_sigtimedwait, set, info, timeout, 8));
}
// NUMA nodes with CPUs (/sys/devices/system/node/has_cpu, else online): their count, 1 when there
// is one or the file cannot be read.  With several, node_id[i] gets the id of the node of index i
// (the ids in order, folded onto max_nodes) and cpu_node[cpu] the index of each CPU's node (from
// nodeN/cpulist; CPUs at max_cpus and up, or in no list, are left as they were).  *not_local: null
// when the thread's memory policy places a page on the node of the CPU that first touches it
// (default, local; bind or preferred-many over several nodes; not interleave, nor one preferred
// or bound node) and its cpuset allows memory of several nodes, so that a thread's first touch
// says where pages are; else why not.  Raw system calls only (os_open).
unsigned os_numa_topology(uint8_t *cpu_node, unsigned max_cpus, uint16_t *node_id, unsigned max_nodes,
                          const char **not_local);
// write(2) all of it, retrying on EINTR / short writes.  Returns 0, or the errno value of the
// write that failed (EFBIG past a file-size limit, ENOSPC, ...); errno itself is left as it was.
int write_all(int fd, const char *p, size_t n);
// Resident set size of the process in bytes (from /proc/thread-self/statm), 0 if unknown.
size_t process_rss();
// The lowest number of the library's own long-lived descriptors: 512, or half the soft limit
// where that is lower (a program with 1024 sees its own numbers from 3 on, as without the library).
int high_fd_floor();
// fd moved out of the way of the program's own numbers (close-on-exec, high_fd_floor() up; else
// at least above 0, 1 and 2, which a program started with one of them closed would write to as its
// own).  The old number is closed; fd itself when no move is possible.
int fd_out_of_the_way(int fd);
// A copy of the program's stderr, taken at start when the dump at exit goes there (ZNS_STATS=1):
// coreutils close fd 2 in an atexit handler, which runs before the library's destructor, and
// ZNS_STATS=1 printed nothing under ls or sort (a review, 2026-12-06).  Lines
// for stderr (Buf::say) go to fd 2 while it is open, else to the copy while it is still the file
// it was.  A forked child lets it go (a detached daemon's child must not hold its caller's pipe).
void keep_stderr_copy();
void drop_stderr_copy();
int stderr_fd();   // 2, or the copy when 2 is closed
// A dump's file (statistics, heap profile) opened for writing without waiting: -1 with errno when
// it cannot be, ENXIO for a FIFO nobody reads yet (a blocking open hung the program: a review,
// 2026-12-06); a lease on a regular file is waited out.  Blocking again once open.  `empty`: a
// regular file is emptied first, unless it is the program's own stdout or stderr
// (ZNS_STATS=/dev/stdout, or a path that names the file the program's output is redirected to:
// O_TRUNC erased the program's output); that one is appended to, as the program writes there.
// `append`: O_APPEND in any case.
int open_dump(const char *path, bool empty, bool append);
// fd (open) is a regular file that is also the program's stdout or stderr, now or at start.
bool is_program_output(int fd);
void remember_program_outputs();   // (at start: stdout's and stderr's files)
// Blocks every signal on this thread (but glibc's own two); the mask before goes to *old, for
// restore_signals or pthread_sigmask(SIG_SETMASK, old, nullptr) to put back.
void block_signals(sigset_t *old);
void restore_signals(const sigset_t *old);   // the mask block_signals saved in *old
// A detached background thread of the library's own (64 KiB of stack) that takes no signals: a
// process-directed signal must reach the program's threads, which may wait for it in sigsuspend
// or sigwait (coreutils `timeout` never saw its child's SIGCHLD when the stats thread took it).
// False if it could not be started.
bool start_quiet_thread(void *(*fn)(void *));
// The library's long-lived threads (the quiet ones above, the tier's) count as threads to glibc,
// which ends a process whose main thread called pthread_exit when its last thread ends: with one
// of them running, such a program never ended (and took no signal: the main thread is gone and
// the library's threads block them all).  Each says it is the library's at its start
// (note_library_thread; forget_library_thread as it ends: start_quiet_thread does both).  When
// the main thread is a zombie and every other thread is the library's, the process is ended as
// glibc's last thread would end it: exit(0), once, on a thread started for it (the default stack,
// no signal blocked).  The interval threads look as they wake (end_process_if_alone); the tier's
// thread looks at each scan, in its own descriptor table (so no look takes a number of the
// program's), and wakes a quiet companion started with the tier (start_end_watch) to end it
// (end_process_if_alone_for_tier: a thread it started would share its table, and the exit's
// flush of stdout would go nowhere).
void note_library_thread();
void forget_library_thread();
void end_process_if_alone();
void end_process_if_alone_for_tier();
void start_end_watch();

// Cancellation off for a scope.  malloc, free, malloc_trim and fork are not cancellation points,
// but the library's slow paths make calls that are (open/read/close of /proc files before a purge,
// the tier's pread/pwrite/fallocate/msync, write for a message): a pending pthread_cancel acted on
// there unwound the caller out of the allocator with its locks held and its lists half changed (a
// review, 2026-12-05: a free under the program's mutex left it locked; a madvise-tier malloc left
// the grow lock held, and every later one waited; a thread that exited with a cancel pending left
// its whole cache behind).  Every path of an application thread that reaches such a call starts
// with one of these.  (pthread_setcancelstate is no cancellation point; re-enabling does not act.)
// Since 2026-12-06 those calls are raw system calls (os_*), which are no cancellation points; the
// scopes stay for what is left (getrandom at start is one) and for any call added later.
struct NoCancel {
  int old;
  NoCancel() { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old); }
  ~NoCancel() { pthread_setcancelstate(old, nullptr); }
  NoCancel(const NoCancel &) = delete;
  NoCancel &operator=(const NoCancel &) = delete;
};

// Around a write of the library's own (the tier's file, the stats dump, a line on stderr).  Past a
// file-size limit (RLIMIT_FSIZE) the write fails with EFBIG and the kernel also sends the writing
// thread SIGXFSZ; to a pipe whose reader has gone, EPIPE and SIGPIPE.  Both signals end the
// program at their default action, and neither is the program's: the library handles the error.
// Both are blocked meanwhile; failed(err) after a failed write takes back the signal that write
// raised (not one pending before).  A few system calls each way: not for a fast path.  With
// cancellation off throughout (the take-back's sigtimedwait is a cancellation point: a detected
// double free in a thread with a cancel pending, its message into a closed pipe, was unwound out
// of fatal() and the program went on).
class QuietWrite {
 public:
  QuietWrite();
  ~QuietWrite();
  void failed(int err);   // err: the write's errno value (EFBIG, EPIPE; others raise nothing)
  QuietWrite(const QuietWrite &) = delete;
  QuietWrite &operator=(const QuietWrite &) = delete;

 private:
  NoCancel no_cancel_;
  uint64_t old_[16];   // the thread's signal mask before (a sigset_t: 128 bytes)
  bool xfsz_was_, pipe_was_;   // already pending before
};

// A fixed-size text buffer that formats without allocating.  Output past the end is dropped.
class Buf {
 public:
  Buf(char *mem, size_t cap) : p_(mem), cap_(cap) {}
  Buf &str(const char *s);
  Buf &chr(char c);
  Buf &u64(uint64_t v, int width = 0);          // right-aligned to width
  Buf &hex(uintptr_t v);                        // 0x...
  Buf &file_error(int err);   // why a file could not be opened or written, in words (no strerror:
                              // it may allocate for some locales); "errno N" for the rest
  Buf &fixed(uint64_t num, uint64_t den, int decimals, int width = 0);  // num/den as a decimal
  const char *data() const { return p_; }
  size_t size() const { return n_; }
  void clear() { n_ = 0; }
  // The newline that ends a message, even when the text filled the buffer (it then ends in "...").
  Buf &end_line() {
    if (n_ + 1 < cap_) return chr('\n');
    if (cap_ >= 4) { n_ = cap_; __builtin_memcpy(p_ + cap_ - 4, "...\n", 4); }
    return *this;
  }
  int flush(int fd) { int r = write_all(fd, p_, n_); n_ = 0; return r; }   // 0 or an errno value
  // flush for a message line (to stderr): under QuietWrite, so that a stderr that is a file past a
  // file-size limit, or a pipe nobody reads any more, loses the line instead of ending the program.
  int say(int fd = 2);

 private:
  char *p_;
  size_t cap_, n_ = 0;
};

// Abort with "zns-slab: <what> in <call>(<addr>)" on stderr: the one way misuse is reported.
[[noreturn]] void fatal(const char *what, const char *call, const void *addr);
// Its two halves, for a thread whose stderr is elsewhere (the tier's): the line, then the abort
// (without atexit handlers or stdio flushes).
Buf &fatal_line(Buf &b, const char *what, const char *call, const void *addr);
[[noreturn]] void fatal_abort();

// A thread that must do something else while it waits for one of the library's locks: the uffd
// tier's thread inside an eviction, the only one that serves the page faults of the others, among
// them a holder's (its signal handler's store into a paged-out block: the holder waits for the
// fault, the tier thread waited for the lock).  Called between tries; null for other threads.
extern __thread void (*t_lock_wait)() __attribute__((tls_model("initial-exec")));
// A mutex that never allocates and that fork handlers can reset.
struct Lock {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  void lock() {
    if (__builtin_expect(t_lock_wait != nullptr, 0)) {
      while (pthread_mutex_trylock(&m) != 0) t_lock_wait();
      return;
    }
    pthread_mutex_lock(&m);
  }
  bool try_lock() { return pthread_mutex_trylock(&m) == 0; }
  bool lock_within(long ns) {   // false when not locked within ns (CLOCK_MONOTONIC)
    timespec t;
    os_clock_gettime(CLOCK_MONOTONIC, &t);
    t.tv_nsec += ns;
    t.tv_sec += t.tv_nsec / 1000000000;
    t.tv_nsec %= 1000000000;
    return pthread_mutex_clocklock(&m, CLOCK_MONOTONIC, &t) == 0;
  }
  void unlock() { pthread_mutex_unlock(&m); }
  // In a forked child only, of a lock its thread took in a prepare handler: stored as new, as no
  // other thread is there (not by pthread_mutex_unlock, whose code page the child would fault in:
  // see ForkPage); under ThreadSanitizer unlocked, so that its model of the lock stays right (a
  // lock made again while it thought it held made it report a double lock).
  void release_in_child() {
    static constexpr pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    if (kUnderTsan) unlock();
    else m = fresh;
  }
  // In a forked child only.  Not written when it is as new (unlocked: every lock of a program
  // that does not use it, or used and let go): the child's first store into a page copies it, and
  // a child that runs a few instructions and execs paid such a copy for every lock.
  void reset() {
    static constexpr pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    if (__builtin_memcmp(&m, &fresh, sizeof m) != 0) pthread_mutex_init(&m, nullptr);
  }
};

// The locks a fork holds, and what the child's handlers look at first, on one page (aligned to
// it).  A fork's parent and child both write each lock it took (the unlock), and after a fork the
// first store into a page copies it, in either process, as a child's first look at a page the
// parent never touched maps one: ~11 us each on this VM.  Spread over nine pages they made a fork
// 1.6x slower preloaded, 1.4 ms instead of 0.85 (a shell's $(...) loop; DESIGN "fork", its cost).
struct alignas(4096) ForkPage {
  struct alignas(64) Slot {
    Lock lock;
  };
  Slot lock[60];   // heap.cpp: the orphan, pool and depot locks and the classes' (fork_prepare's);
                   // kForkPatchLock; kForkPrintLock (reset in the child, when held)
  std::atomic<uint32_t> work;   // kForkStats | kForkThreads: a child's handler has more to look at
};
static_assert(sizeof(ForkPage) == 4096, "the fork's page");
extern ForkPage g_fork_page;
constexpr unsigned kForkPatchLock = 58;   // shim/deepbind.cpp's
constexpr unsigned kForkPrintLock = 59;   // core/stats.cpp's
constexpr uint32_t kForkStats = 1;        // ZNS_STATS on, or a copy of stderr kept
constexpr uint32_t kForkThreads = 2;      // a library thread was started (its notes)
inline void fork_work(uint32_t bit) { g_fork_page.work.fetch_or(bit, std::memory_order_relaxed); }
// Guards this thread holds now.  A malloc that needs a slow path while it is not zero comes from
// inside the library's own call to the C library made under one of its locks (getrandom,
// getauxval and getrlimit at start, fallocate and the tier's file calls, pthread_mutex_lock
// itself; the memory calls and the clock no longer go there, above): a program or preloaded tool
// that defines that function and allocates in it (a tracer's log line).  Its slab slow path could need the same lock (heap_init's
// under its init lock: a deadlock at the first malloc), so such a request goes to the next
// allocator instead (alloc_refill).  The fork handlers count theirs from prepare to parent/child
// (the tier's child copies its slabs under them), and so does the tier's thread.
extern __thread unsigned t_guards __attribute__((tls_model("initial-exec")));
struct Guard {
  Lock &l;
  explicit Guard(Lock &x) : l(x) {   // (counted across the calls: a lock profiler's hook in
    ++t_guards;                       // pthread_mutex_lock or _unlock may allocate)
    l.lock();
  }
  ~Guard() {
    l.unlock();
    --t_guards;
  }
};
struct TryGuard {   // a Guard that does not wait: `held` says whether it took the lock
  Lock &l;
  bool held;
  explicit TryGuard(Lock &x) : l(x) {
    ++t_guards;
    held = l.try_lock();
    if (!held) --t_guards;
  }
  ~TryGuard() {
    if (!held) return;
    l.unlock();
    --t_guards;
  }
  TryGuard(const TryGuard &) = delete;
  TryGuard &operator=(const TryGuard &) = delete;
};

}  // namespace zns
