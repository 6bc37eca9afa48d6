// The stats dump: one snapshot, printed as a text table or a JSON document, with fixed buffers and
// write(2) only, so it is safe at exit and in a broken heap.
#include "core/stats.h"

#include <cerrno>
#include <csignal>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/heap.h"
#include "core/options.h"
#include "core/platform.h"
#include "tier/tier.h"

namespace zns {

std::atomic<uint64_t> g_fallback_allocs, g_fallback_bytes;

namespace {

struct Totals {
  uint64_t live_bytes, slab_resident, metadata, in_caches, in_depot, returned, rss;
};

uint64_t live_bytes_of(const HeapSnapshot &h) {   // bytes in live blocks (their class sizes)
  uint64_t live = 0;
  for (unsigned c = 0; c < kNumClasses; ++c) live += h.cls[c].live * class_info(c).size;
  return live;
}

Totals totals_of(const HeapSnapshot &h) {
  Totals t{};
  t.live_bytes = live_bytes_of(h);
  uint64_t owned = h.owned_pages * kPageSize;
  t.slab_resident = owned + h.dirty_pages * kPageSize;
  t.in_caches = owned > t.live_bytes ? owned - t.live_bytes : 0;
  t.in_depot = h.dirty_pages * kPageSize;
  t.metadata = h.touched_pages / kGroupPages * (sizeof(SlabMeta) + 8 + 2 + (h.numa_nodes > 1)) +   // per group: line, rrec, life, node
               h.bitmap_pool_bytes + h.remote_state_bytes + h.caches * sizeof(ThreadCache);
  t.returned = h.clean_pages * kPageSize;
  t.rss = process_rss();
  return t;
}

// Writes through one static buffer (under g_print_lock), so a JSON document leaves in a single
// write(2): lines of a .jsonl file never interleave.
Lock &g_print_lock = g_fork_page.lock[kForkPrintLock].lock;   // (on the fork's page: a child looks at it)
char g_out_mem[64 * 1024];
struct Out {
  int fd;
  Buf b{g_out_mem, sizeof g_out_mem};
  int err = 0;   // the errno value of the first write that failed: no more are tried
  void line() { if (b.size() > sizeof g_out_mem - 4096) flush(); }
  void flush() {
    if (err) b.clear();
    else err = b.flush(fd);
  }
};

void print_text(Out &o, const HeapSnapshot &h, const Totals &t) {
  Buf &b = o.b;
  b.str("zns-slab heap statistics (pid ").u64(uint64_t(os_getpid())).str(")\n");
  b.str("class   size    allocated        freed         live    slabs     live_bytes     slab_bytes  fill%\n");
  o.line();
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassSnapshot &k = h.cls[c];
    if (!k.allocated && !k.slabs) continue;
    uint64_t live = k.live, size = class_info(c).size;
    uint64_t slab_bytes = k.slabs * class_info(c).pages * kPageSize;
    b.u64(c, 5).u64(size, 7).u64(k.allocated, 13).u64(k.allocated - k.live, 13).u64(live, 13).u64(k.slabs, 9)
        .u64(live * size, 15).u64(slab_bytes, 15).fixed(live * size * 100, slab_bytes, 1, 7).chr('\n');
    o.line();
  }
  uint64_t resident = t.slab_resident + t.metadata;
  b.str("ledger (bytes): live ").u64(t.live_bytes).str(" + free in thread caches ").u64(t.in_caches)
      .str(" + free in depot ").u64(t.in_depot).str(" + metadata ").u64(t.metadata)
      .str(" = resident ").u64(resident).str(t.live_bytes + t.in_caches + t.in_depot + t.metadata == resident ? " (adds up)\n" : " (DOES NOT ADD UP)\n");
  b.str("overhead: ").fixed(t.live_bytes && resident > t.live_bytes ? (resident - t.live_bytes) * 100 : 0, t.live_bytes ? t.live_bytes : 1, 2)
      .str("% of live bytes; returned to the OS: ").u64(t.returned).str(" bytes now, ")
      .u64(h.purged_total_pages * kPageSize).str(" since start in ").u64(h.purge_ranges).str(" ranges, ").u64(h.purge_calls).str(" calls; empty slabs kept resident up to ")
      .u64(h.dirty_cap_pages * kPageSize).str(" bytes (refaulted ").u64(h.refault_pages * kPageSize).str(")\n");
  if (h.decommit_calls)
    b.str("commit given back (a data limit, or strict overcommit): ").u64(h.decommitted_pages * kPageSize)
        .str(" bytes now, in ").u64(h.decommit_runs).str(" runs; ").u64(h.decommit_calls).str(" calls since start\n");
  b.str("fallback (next allocator): ").u64(g_fallback_allocs.load()).str(" allocations, ")
      .u64(g_fallback_bytes.load()).str(" bytes; threads seen ").u64(h.threads_seen)
      .str("; thread caches ").u64(h.caches).str("; process RSS ").u64(t.rss).str(" bytes")
      .str(h.secure ? "; ZNS_SECURE=1\n" : "\n");
  o.line();
  if (h.numa_nodes > 1) {
    b.str("numa: ").u64(h.numa_nodes);
    if (h.machine_nodes) {
      b.str(" nodes (ids");
      for (unsigned i = 0; i < h.numa_nodes; ++i) b.chr(' ').u64(h.node_id[i]);
      b.str(h.machine_nodes > h.numa_nodes ? "; more fold onto these)" : ")");
    } else {
      b.str(" nodes (simulated, ZNS_NUMA_NODES)");
    }
    b.str("; slabs handed out by node:");
    for (unsigned i = 0; i < h.numa_nodes; ++i) b.chr(' ').u64(h.node_takes[i]);
    b.str(", of them another node's empty slab ").u64(h.cross_node_takes).str("; empty resident bytes by node:");
    for (unsigned i = 0; i < h.numa_nodes; ++i) b.chr(' ').u64(h.node_dirty_pages[i] * kPageSize);
    b.chr('\n');
    o.line();
  } else if (h.numa_off) {
    b.str("numa: not node-aware on ").u64(h.machine_nodes).str(" nodes (ids");
    for (unsigned i = 0; i < h.machine_nodes && i < kMaxNodes; ++i) b.chr(' ').u64(h.node_id[i]);
    b.str("): ").str(h.numa_off).chr('\n');
    o.line();
  }
  TierSnapshot ts;
  tier_snapshot(&ts);
  if (ts.mode != kTierOff || ts.slabs_out) {
    uint64_t on_tier = ts.out_pages * kPageSize, owned = h.owned_pages * kPageSize;
    b.str("tier (").str(tier_mode_name(ts.mode)).str("): slab bytes resident ")
        .u64(owned > on_tier ? owned - on_tier : 0).str(", on the tier ").u64(on_tier)
        .str("; out ").u64(ts.slabs_out).str(" slabs / ").u64(ts.bytes_out).str(" bytes (")
        .u64(ts.clean_out).str(" slabs without a write), in ")
        .u64(ts.slabs_in).str(" slabs / ").u64(ts.bytes_in).str(" bytes\n");
    b.str("tier: fault-in service p50 ").fixed(ts.fault_p50_ns, 1000, 1).str(" us, p99 ")
        .fixed(ts.fault_p99_ns, 1000, 1).str(" us, max ").fixed(ts.fault_max_ns, 1000, 1).str(" us (")
        .u64(ts.faults_timed).str(" timed); thrash ").u64(ts.thrash).str("; stores seen on armed slabs ")
        .u64(ts.write_hits).str("; eviction errors ").u64(ts.evict_errors).str("; zero fills ")
        .u64(ts.zero_fills).str("; scans ").u64(ts.scans)
        .str("; return governor: cold windows x").u64(uint64_t(1) << ts.pressure).str(", raised ")
        .u64(ts.pressure_raises).str(" times\n");
    o.line();
  }
}

void print_json(Out &o, const HeapSnapshot &h, const Totals &t, int64_t time_ms) {
  Buf &b = o.b;
  b.str("{\"version\":1,\"pid\":").u64(uint64_t(os_getpid())).str(",\"secure\":").u64(h.secure ? 1 : 0);
  if (time_ms >= 0) b.str(",\"time_ms\":").u64(uint64_t(time_ms));
  b.str(",\"classes\":[");
  o.line();
  bool first = true;
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassSnapshot &k = h.cls[c];
    uint64_t live = k.live, size = class_info(c).size;
    uint64_t slab_bytes = k.slabs * class_info(c).pages * kPageSize;
    b.str(first ? "" : ",").str("{\"class\":").u64(c).str(",\"size\":").u64(size)
        .str(",\"allocated\":").u64(k.allocated).str(",\"freed\":").u64(k.allocated - live)
        .str(",\"live\":").u64(live).str(",\"slabs\":").u64(k.slabs).str(",\"live_bytes\":")
        .u64(live * size).str(",\"slab_bytes\":").u64(slab_bytes).str(",\"fill_pct\":")
        .fixed(live * size * 100, slab_bytes ? slab_bytes : 1, 1).chr('}');
    first = false;
    o.line();
  }
  uint64_t resident = t.slab_resident + t.metadata;
  uint64_t allocated = 0, freed = 0;
  for (unsigned c = 0; c < kNumClasses; ++c) { allocated += h.cls[c].allocated; freed += h.cls[c].allocated - h.cls[c].live; }
  b.str("],\"totals\":{\"allocated\":").u64(allocated).str(",\"freed\":").u64(freed)
      .str(",\"live_bytes\":").u64(t.live_bytes).str(",\"resident_bytes\":").u64(resident)
      .str(",\"slab_resident_bytes\":").u64(t.slab_resident).str(",\"metadata_bytes\":").u64(t.metadata)
      .str(",\"overhead_pct\":").fixed(t.live_bytes && resident > t.live_bytes ? (resident - t.live_bytes) * 100 : 0, t.live_bytes ? t.live_bytes : 1, 2)
      .str(",\"thread_cache_free_bytes\":").u64(t.in_caches).str(",\"depot_bytes\":").u64(t.in_depot)
      .str(",\"returned_bytes\":").u64(t.returned).str(",\"returned_total_bytes\":").u64(h.purged_total_pages * kPageSize)
      .str(",\"returned_calls\":").u64(h.purge_calls).str(",\"returned_ranges\":").u64(h.purge_ranges)
      .str(",\"decommitted_bytes\":").u64(h.decommitted_pages * kPageSize).str(",\"decommit_calls\":").u64(h.decommit_calls)
      .str(",\"fallback_allocs\":").u64(g_fallback_allocs.load()).str(",\"fallback_bytes\":").u64(g_fallback_bytes.load())
      .str(",\"threads_seen\":").u64(h.threads_seen).str(",\"thread_caches\":").u64(h.caches)
      .str(",\"region_bytes\":").u64(h.region_bytes).str(",\"rss_bytes\":").u64(t.rss).chr('}');
  b.str(",\"numa\":{\"nodes\":").u64(h.numa_nodes).str(",\"machine_nodes\":").u64(h.machine_nodes)
      .str(",\"cross_node_takes\":").u64(h.cross_node_takes).str(",\"ids\":[");
  for (unsigned i = 0; i < h.numa_nodes; ++i) b.str(i ? "," : "").u64(h.node_id[i]);
  b.str("],\"takes\":[");
  o.line();   // (64 nodes' numbers: up to 1.4 KB an array)
  for (unsigned i = 0; i < h.numa_nodes; ++i) b.str(i ? "," : "").u64(h.node_takes[i]);
  b.str("],\"depot_bytes\":[");
  o.line();
  for (unsigned i = 0; i < h.numa_nodes; ++i) b.str(i ? "," : "").u64(h.node_dirty_pages[i] * kPageSize);
  b.str("]}");
  o.line();
  TierSnapshot ts;
  tier_snapshot(&ts);
  uint64_t on_tier = ts.out_pages * kPageSize, owned = h.owned_pages * kPageSize;
  b.str(",\"tier\":{\"mode\":\"").str(tier_mode_name(ts.mode)).str("\",\"resident_slab_bytes\":")
      .u64(owned > on_tier ? owned - on_tier : 0).str(",\"on_tier_bytes\":").u64(on_tier)
      .str(",\"slabs_out\":").u64(ts.slabs_out).str(",\"slabs_out_clean\":").u64(ts.clean_out).str(",\"slabs_in\":").u64(ts.slabs_in)
      .str(",\"bytes_out\":").u64(ts.bytes_out).str(",\"bytes_in\":").u64(ts.bytes_in)
      .str(",\"fault_p50_ns\":").u64(ts.fault_p50_ns).str(",\"fault_p99_ns\":").u64(ts.fault_p99_ns)
      .str(",\"fault_max_ns\":").u64(ts.fault_max_ns).str(",\"faults_timed\":").u64(ts.faults_timed)
      .str(",\"thrash\":").u64(ts.thrash).str(",\"write_hits\":").u64(ts.write_hits)
      .str(",\"evict_errors\":").u64(ts.evict_errors).str(",\"zero_fills\":").u64(ts.zero_fills)
      .str(",\"scans\":").u64(ts.scans).str(",\"pressure\":").u64(ts.pressure)
      .str(",\"pressure_raises\":").u64(ts.pressure_raises).str("}}\n");
  o.line();
}

// (in any case: `heap.JSON` is JSON too; suffix in lower case)
bool ends_with(const char *s, const char *suffix) {
  size_t n = 0, m = 0;
  while (s[n]) ++n;
  while (suffix[m]) ++m;
  if (m > n) return false;
  for (size_t i = 0; i < m; ++i) {
    char c = s[n - m + i];
    if ((c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c) != suffix[i]) return false;
  }
  return true;
}


// Interval mode (ZNS_STATS_INTERVAL_MS with a .jsonl path): a background thread appends a line
// every interval; the exit dump appends the last one and stops it.
int g_jsonl_fd = -1;          // the open .jsonl file, or -1
char g_jsonl_path[512];       // its path (for a message)
dev_t g_jsonl_dev;            // ... and the file's identity: the program may close the descriptor
ino_t g_jsonl_ino;            //     and get its number again for a file of its own
bool g_jsonl_fifo;            // the file is a FIFO (reopened without waiting for a reader)
bool g_jsonl_detached;        // g_jsonl_fd's number is not ours any more: reopen before a line
bool g_jsonl_skipping;        // lines are being skipped (a FIFO without a reader): said once
bool g_stats_stopped;         // under g_print_lock: no more lines
bool g_fork_quiet;            // a forked child whose ZNS_STATS has no %p: no dump (the file, or
                              // stderr, is its parent's)
// g_jsonl_fd of a FIFO that had no reader at start: not a descriptor (detached: opened before
// each line, as jsonl_fd_checked opens a FIFO again)
constexpr int kJsonlNoReaderYet = 0x7fffffff;
uint64_t g_start_ms;

// The dump to fd: 0, or the errno value of the write that failed.  A file past a file-size limit
// (RLIMIT_FSIZE) makes the write fail with EFBIG and raise SIGXFSZ, whose default action would end
// the program (at exit, or in the middle of its run from the interval thread): taken back
// (QuietWrite; SIGPIPE likewise, for ZNS_STATS=1 into a pipe that was closed).
int print_locked(int fd, bool json, int64_t time_ms) {
  static HeapSnapshot h;   // large: not on the stack of a thread that may be small
  heap_snapshot(&h);
  Totals t = totals_of(h);
  QuietWrite q;
  Out o;
  o.fd = fd;
  if (json) print_json(o, h, t, time_ms);
  else print_text(o, h, t);
  o.flush();
  if (o.err) q.failed(o.err);
  return o.err;
}

// One line on stderr for a dump that could not be written whole (the document in the file ends
// where the write failed).
void say_cut_short(const char *path, int err) {
  char m[700];
  Buf e(m, sizeof m);
  e.str("zns-slab: statistics to ").str(path).str(" cut short: ");
  if (err == EFBIG) e.str("file size limit (ulimit -f)");
  else if (err == ENOSPC) e.str("no space left on the device");
  else if (err == EDQUOT) e.str("disk quota exceeded");
  else if (err == EPIPE) e.str("the reader of the pipe has gone");
  else e.str("write failed, errno ").u64(uint64_t(err));
  e.chr('\n').say();
}

// Why a file could not be opened, in words.
void say_cannot_write(const char *path, int err) {
  char m[700];
  Buf e(m, sizeof m);
  e.str("zns-slab: cannot write statistics to ").str(path).str(": ");
  if (err == EWOULDBLOCK) e.str("another process writes its statistics there (put %p in the path)");
  else e.file_error(err);
  e.end_line().say();
}

// Open the .jsonl file (path expanded) for this process: on a descriptor above the program's own
// numbers, locked against another process that writes the same file (a program this one
// fork+exec'ed, with the same ZNS_STATS: until 2026-12-05 its O_TRUNC erased this one's lines),
// emptied only once the lock is ours.  -1 (and a line on stderr) if not.
int open_jsonl(const char *path) {
  int fd = open_dump(path, false, true);
  struct stat st;
  if (fd < 0 && errno == ENXIO && os_stat(path, &st) == 0 && S_ISFIFO(st.st_mode)) {
    // a FIFO nobody reads yet: lines are skipped until a reader is there (the program runs on)
    g_jsonl_dev = st.st_dev;
    g_jsonl_ino = st.st_ino;
    g_jsonl_fifo = true;
    g_jsonl_detached = true;
    return kJsonlNoReaderYet;
  }
  if (fd < 0) {
    say_cannot_write(path, errno);
    return -1;
  }
  fd = fd_out_of_the_way(fd);
  // (a file system without flock, EOPNOTSUPP or ENOLCK: written unlocked, as before)
  if ((os_flock(fd, LOCK_EX | LOCK_NB) != 0 && errno == EWOULDBLOCK) || os_fstat(fd, &st) != 0) {
    say_cannot_write(path, errno);
    os_close(fd);
    return -1;
  }
  // (a FIFO or a character device: nothing to empty; the program's own output is appended to)
  if (!is_program_output(fd) && os_ftruncate(fd, 0) != 0) {}
  g_jsonl_dev = st.st_dev;
  g_jsonl_ino = st.st_ino;
  g_jsonl_fifo = S_ISFIFO(st.st_mode);
  g_jsonl_detached = false;
  return fd;
}

// Under g_print_lock: the .jsonl descriptor, if it still is our file.  A program that closed it
// (daemons close every descriptor) may have its own file under the number now: then the path is
// opened again for appending (the lines so far stay), or the dump stops: -1, and the caller says
// so with say_jsonl_lost once the lock is let go (a stderr pipe that blocks must not hold it).
// A FIFO is opened again without waiting for a reader (one whose reader had gone held the lock
// forever): -2 when none is there, and the next line tries again (`last`: there is none).  A
// regular file is opened as ever (a lease on it is waited out, as any open does).
void say_jsonl_lost() {
  char m[700];
  Buf(m, sizeof m).str("zns-slab: statistics to ").str(g_jsonl_path)
      .str(": the descriptor is not the file any more (the program closed it, or a sandbox refuses the "
           "look) and the file cannot be opened again; no more lines").end_line().say();
}
// fd is the library's .jsonl descriptor: the file, and opened as the library opens it (a program
// may open the same file on the number itself).
bool is_jsonl_fd(int fd) {
  struct stat st;
  int fl = os_fcntl(fd, F_GETFL), fdfl = os_fcntl(fd, F_GETFD);
  return fl >= 0 && (fl & O_ACCMODE) == O_WRONLY && (fl & O_APPEND) && fdfl >= 0 && (fdfl & FD_CLOEXEC) &&
         os_fstat(fd, &st) == 0 && st.st_dev == g_jsonl_dev && st.st_ino == g_jsonl_ino;
}
int jsonl_fd_checked(bool last) {
  if (g_jsonl_fd < 0) return -1;
  struct stat st;
  if (!g_jsonl_detached && is_jsonl_fd(g_jsonl_fd)) return g_jsonl_fd;
  g_jsonl_detached = true;   // (the old number is the program's now: never written or closed by us)
  // Not waiting: the path may be a FIFO without a reader (now, or since the program replaced the
  // file); a lease on a regular file (Samba, NFS) refuses a non-blocking open, and is waited out.
  int fd = os_open(g_jsonl_path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0 && errno == EWOULDBLOCK && !g_jsonl_fifo)
    fd = os_open(g_jsonl_path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY);
  if (fd < 0 && g_jsonl_fifo && errno == ENXIO) return -2;
  if (fd >= 0) {
    os_fcntl(fd, F_SETFL, O_APPEND);   // (blocking writes again)
    fd = fd_out_of_the_way(fd);
  }
  if (fd >= 0 && os_fstat(fd, &st) == 0 && st.st_dev == g_jsonl_dev && st.st_ino == g_jsonl_ino &&
      (os_flock(fd, LOCK_EX | LOCK_NB) == 0 || errno != EWOULDBLOCK)) {
    g_jsonl_fd = fd;
    g_jsonl_detached = false;
    return fd;
  }
  if (fd >= 0) os_close(fd);
  g_jsonl_fd = -1;
  g_stats_stopped = true;
  return -1;
}

// Under g_print_lock: one line of the series.  0, or the errno value of a write that failed; -1:
// the file is lost (say_jsonl_lost), -2: not now (see jsonl_fd_checked).  A descriptor the program
// closed between the identity check and the write (EBADF: nothing written, the line leaves in one
// write) is looked at again once.  (Not covered: a program that closes it and opens a file of its
// own under the number in that window of microseconds.)
int print_jsonl_line(bool last) {
  for (int attempt = 0;; ++attempt) {
    int fd = jsonl_fd_checked(last);
    if (fd < 0) return fd;
    int err = print_locked(fd, true, int64_t(now_ms() - g_start_ms));
    if (err != EBADF || attempt > 0) return err;
    g_jsonl_detached = true;
  }
}

// What the interval thread found under the lock and says after it (-1: the file lost, > 0: cut
// short, that errno), taken by whoever says it first: the thread, or the exit, which must say it
// if the process ends in between (a fresh-clone CI run, 2026-12-06: tests/programs/stats.sh "cg"
// got no line; the thread had found the file gone, and the exit came before its message).
std::atomic<int> g_interval_news;
void say_interval_news() {
  int e = g_interval_news.exchange(0, std::memory_order_acq_rel);
  if (e == -1) say_jsonl_lost();
  else if (e > 0) say_cut_short(g_jsonl_path, e);
}
void *interval_thread(void *) {
  uint64_t every = g_options.ZNS_STATS_INTERVAL_MS;
  for (;;) {
    timespec ts{time_t(every / 1000), long(every % 1000) * 1000000};
    while (os_nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
    end_process_if_alone();   // (the main thread's pthread_exit: see platform.h)
    int err;
    {
      Guard g(g_print_lock);
      if (g_stats_stopped || g_jsonl_fd < 0) return nullptr;
      err = print_jsonl_line(false);
      bool first_skip = err == -2 && !g_jsonl_skipping;
      g_jsonl_skipping = err == -2;
      if (err == -2) {   // (a FIFO without a reader just now: the next line tries again)
        if (!first_skip) continue;
      } else if (err > 0) {
        g_stats_stopped = true;   // no more lines (nor the one at exit)
      }
      if (err == -1 || err > 0) g_interval_news.store(err, std::memory_order_release);
    }
    if (err == -2) {
      char m[700];
      Buf(m, sizeof m).str("zns-slab: statistics to ").str(g_jsonl_path)
          .str(": no reader on the FIFO; lines are skipped until one opens it").end_line().say();
      continue;
    }
    // (said after the lock: a stderr pipe that blocks must not hold it, mallinfo takes it)
    if (err == -1 || err > 0) {
      say_interval_news();
      return nullptr;
    }
  }
}

bool stats_enabled(const char *dest) {
  return dest && *dest && !(dest[0] == '0' && !dest[1]);
}
bool stats_to_stderr(const char *dest) {   // ZNS_STATS=1 or stderr: the text table on stderr
  return (dest[0] == '1' && !dest[1]) || !__builtin_strcmp(dest, "stderr");
}
// A FIFO nobody reads at exit: `what` is not written.
void say_no_reader(const char *path, const char *what) {
  char m[700];
  Buf(m, sizeof m).str("zns-slab: statistics to ").str(path).str(": no reader on the FIFO at exit; ")
      .str(what).str(" not written").end_line().say();
}

}  // namespace

// A dump's path with %p expanded; false if it does not fit.
bool expand_path(const char *dest, char *path, size_t cap) {
  Buf b(path, cap - 1);
  for (const char *s = dest; *s; ++s) {
    if (s[0] == '%' && s[1] == 'p') { b.u64(uint64_t(os_getpid())); ++s; }
    else b.chr(*s);
  }
  if (b.size() >= cap - 2) return false;
  path[b.size()] = 0;
  return true;
}

bool path_per_pid(const char *dest) {
  for (const char *s = dest; *s; ++s)
    if (s[0] == '%' && s[1] == 'p') return true;
  return false;
}


const char *absolute_path(const char *dest, char *buf, size_t cap) {
  if (!dest[0] || dest[0] == '/') return dest;
  long n = os_syscall(SYS_getcwd, buf, cap);   // (the length with its NUL)
  size_t len = __builtin_strlen(dest);
  // As it was when the result would not fit a dump's path (expand_path's 512 bytes, with room for
  // %p's pid: a long working directory made a relative path that worked "too long"), or when the
  // directory is outside the process's root ("(unreachable)/...")
  if (n <= 1 || buf[0] != '/' || size_t(n) + len + 1 > cap || size_t(n) + len + 1 > 480) return dest;
  buf[n - 1] = '/';
  __builtin_memcpy(buf + n, dest, len + 1);
  return buf;
}

HeapUsage heap_usage() {
  Guard g(g_print_lock);
  static HeapSnapshot h;   // (as in print_locked: ~1.7 KB, off a small thread's stack)
  heap_snapshot(&h);
  return HeapUsage{(h.owned_pages + h.dirty_pages) * kPageSize, live_bytes_of(h)};
}

int stats_print(int fd, bool json) {
  NoCancel no_cancel;   // (process_rss reads /proc)
  Guard g(g_print_lock);
  return print_locked(fd, json, -1) ? -1 : 0;
}

void stats_start() {
  NoCancel no_cancel;
  if (stats_enabled(g_options.ZNS_STATS)) fork_work(kForkStats);
  g_start_ms = now_ms();
  static char abs_dest[600];
  const char *dest = g_options.ZNS_STATS;
  if (stats_enabled(dest) && !stats_to_stderr(dest))
    dest = g_options.ZNS_STATS = absolute_path(dest, abs_dest, sizeof abs_dest);
  // (the table at exit: only then, a descriptor more is one a program that checks its own sees;
  // CPython's test_subprocess failed with it under ZNS_STATS=PATH)
  if (stats_to_stderr(dest)) keep_stderr_copy();
  if (!stats_enabled(dest) || !ends_with(dest, ".jsonl")) return;
  int saved = errno;
  char path[512];
  if (!expand_path(dest, path, sizeof path)) {
    say_cannot_write(dest, ENAMETOOLONG);
    errno = saved;
    return;
  }
  __builtin_memcpy(g_jsonl_path, path, sizeof path);
  g_jsonl_fd = open_jsonl(path);
  if (g_jsonl_fd >= 0 && g_options.ZNS_STATS_INTERVAL_MS > 0) {
    if (!start_quiet_thread(interval_thread))
      Buf(path, sizeof path).str("zns-slab: cannot start the statistics thread\n").say();
  }
  errno = saved;
}

void stats_at_exit() {
  const char *dest = g_options.ZNS_STATS;
  if (!stats_enabled(dest)) return;
  NoCancel no_cancel;
  int saved = errno;
  if (ends_with(dest, ".jsonl")) {   // the last line, and no more
    int err = 0;
    bool lost = false, no_reader = false;
    {
      Guard g(g_print_lock);
      if (!g_stats_stopped && g_jsonl_fd >= 0) {
        err = print_jsonl_line(true);
        no_reader = err == -2;
        lost = err == -1;
        if (err < 0) err = 0;
        else if (!g_jsonl_detached) os_close(g_jsonl_fd);
        g_jsonl_fd = -1;
      }
      g_stats_stopped = true;
    }
    say_interval_news();   // (the thread's, if it has not said it yet)
    if (lost) say_jsonl_lost();
    if (no_reader) say_no_reader(g_jsonl_path, "the last line is");
    if (err) say_cut_short(g_jsonl_path, err);
  } else if (g_fork_quiet) {
    // (a forked child: the file, or stderr, is its parent's; %p in the path gives it one)
  } else if (stats_to_stderr(dest)) {
    stats_print(stderr_fd(), false);
  } else {
    char path[512];
    errno = ENAMETOOLONG;
    bool expanded = expand_path(dest, path, sizeof path);
    int fd = expanded ? open_dump(path, true, false) : -1;
    if (fd >= 0) fd = fd_out_of_the_way(fd);   // (the program's threads run on: see prof's dump_path)
    if (fd < 0) {
      if (errno == ENXIO) say_no_reader(path, "the dump is");
      else say_cannot_write(expanded ? path : dest, errno);   // (the path tried, %p expanded)
    } else {
      int err;
      {
        Guard g(g_print_lock);
        err = print_locked(fd, ends_with(path, ".json"), -1);
      }
      if (err) say_cut_short(path, err);
      os_close(fd);
    }
  }
  errno = saved;
}

// A forked child has no interval thread.  With %p in the path it starts its own file; without,
// it must not append to its parent's, so it stays silent; and so with a text or JSON file, or
// stderr, at exit (a child's dump took its parent's file over, or printed a table per subshell).
// (No store where nothing changes: a child's first store into a page copies it; see Lock::reset)
ZNS_FORK_CODE void stats_after_fork_child() {
  g_print_lock.reset();
  if (!(g_fork_page.work.load(std::memory_order_relaxed) & (kForkStats | kForkThreads))) return;   // (off)
  if (g_interval_news.load(std::memory_order_relaxed) != 0)
    g_interval_news.store(0, std::memory_order_relaxed);   // (the parent's thread's, said there)
  drop_stderr_copy();
  if (bool quiet = !path_per_pid(g_options.ZNS_STATS); quiet != g_fork_quiet) g_fork_quiet = quiet;
  if (g_jsonl_fd < 0) return;
  // (only if it still is the file: the number may be the program's now.  The parent's lock stays:
  // it is the open file's, which the parent still holds.)
  if (!g_jsonl_detached && is_jsonl_fd(g_jsonl_fd)) os_close(g_jsonl_fd);
  g_jsonl_fd = -1;
  const char *dest = g_options.ZNS_STATS;
  if (path_per_pid(dest)) {
    g_stats_stopped = false;   // a file of its own (the parent's may have been cut short)
    stats_start();
  } else {
    g_stats_stopped = true;
  }
}

}  // namespace zns
