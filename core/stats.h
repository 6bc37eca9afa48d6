// Heap statistics: counters the rest of the core keeps, a snapshot of them, and the dump.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/size_class.h"

namespace zns {

// Requests served by the next allocator (large sizes, large alignments, or no region).
extern std::atomic<uint64_t> g_fallback_allocs, g_fallback_bytes;

// NUMA nodes the depot keeps apart at most (node ids above fold onto these: id mod kMaxNodes).
inline constexpr unsigned kMaxNodes = 64;

struct ClassSnapshot {
  uint64_t allocated, live, slabs;   // freed = allocated - live
};
struct HeapSnapshot {
  ClassSnapshot cls[kNumClasses];
  uint64_t owned_pages;         // pages of slabs owned by thread caches
  uint64_t dirty_pages;         // empty, resident pages in the depot
  uint64_t clean_pages;         // empty pages in the depot already returned to the OS
  uint64_t purged_total_pages;  // pages returned to the OS since start
  uint64_t purge_calls;         // and the system calls that returned them (depot purges)
  uint64_t purge_ranges;        // the address ranges those calls gave back (one call may take many)
  uint64_t decommitted_pages;   // of clean_pages' groups, whose commit went back too (whole groups)
  uint64_t decommit_runs;       // the runs of adjacent groups they lie in
  uint64_t decommit_calls;      // mappings made to give commit back, since start
  uint64_t dirty_cap_pages;     // the most empty pages the depot keeps resident now (dirty_cap)
  uint64_t refault_pages;       // pages it gave back and soon had to hand out again (since trim)
  uint64_t touched_pages;       // pages below the bump pointer (whole groups: metadata exists for these)
  uint64_t bitmap_pool_bytes;   // bitmap records handed out so far (the pools never shrink)
  uint64_t remote_state_bytes;  // resident pages of the mirror (RemoteState lines and remote
                                // records: written by remote frees)
  uint64_t region_bytes;
  uint64_t caches, threads_seen;
  bool secure;                  // ZNS_SECURE=1 (read here, after the heap's init: not racy)
  // NUMA (heap.cpp "NUMA"): nodes the depot keeps apart (1: it is not NUMA-aware), the machine's
  // nodes (0 when ZNS_NUMA_NODES simulates them), and why it is not NUMA-aware on a machine of
  // several (null if it is, or there is one node).
  unsigned numa_nodes, machine_nodes;
  uint16_t node_id[kMaxNodes];            // the node id of each index below
  const char *numa_off;
  uint64_t node_dirty_pages[kMaxNodes];   // empty resident pages in the depot, by node
  uint64_t node_takes[kMaxNodes];         // slabs the depot handed to a thread on each node
  uint64_t cross_node_takes;              // of them, another node's empty resident slab
};

void heap_snapshot(HeapSnapshot *out);      // heap.cpp
int stats_print(int fd, bool json);         // stats.cpp
// The slab heap's bytes for mallinfo: slab bytes owned by caches (paged out or not) and the
// depot's resident empty ones, and of them the bytes in live blocks.  A snapshot: takes the locks
// heap_snapshot takes.
struct HeapUsage { uint64_t slab_bytes, live_bytes; };
HeapUsage heap_usage();
void stats_start();                         // after options: opens a .jsonl dump, starts its thread
void stats_at_exit();                       // the ZNS_STATS dump, if asked for
void stats_after_fork_child();
// dest with %p expanded (the pid) into path[cap]; false if it does not fit.  Also the profiler's.
bool expand_path(const char *dest, char *path, size_t cap);
// Does dest name this process's own file (%p in it)?  A forked child must not write one without.
bool path_per_pid(const char *dest);
// A relative dump path made absolute against the directory at start (into buf, returned), so that
// every file of a dump (.jsonl, text or JSON at exit, the profiler's at exit and PATH.N) goes
// where the program started, whatever it chdir'ed to since; dest itself when it is absolute or
// the result does not fit.
const char *absolute_path(const char *dest, char *buf, size_t cap);

}  // namespace zns
