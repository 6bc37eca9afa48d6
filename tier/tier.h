// The tier: slabs that have gone cold leave RAM for a file on fast storage and come back on first
// touch, while every pointer stays valid.  Policy and mechanism are in tier.cpp; DESIGN.md has the
// state machine and the policy in prose.
//
// Glossary
//   out       a slab whose bytes are in the backing file and not in RAM
//   evict     write a slab to the file and drop its pages (uffd: write-protect first, so no store
//             can slip in between the write and the drop)
//   fault-in  the first touch of an out slab: the handler thread reads it back (UFFDIO_COPY), or
//             the kernel does (madvise mode)
//   armed     (uffd) a candidate slab write-protected to learn whether the program still writes it
//   hole      an out slab that went back to the depot empty: its copy is void, its pages read as 0
//   filed     (uffd) a resident slab whose bytes the file holds: read back and not stored to since;
//             its eviction writes nothing
//   backoff   per slab: a slab that faults back within its cold window waits twice as long next
//             time (up to 64x), so nothing thrashes
//   pressure  global: while the program brings slabs back faster than ZNS_TIER_MAX_RETURNS per
//             second, every cold window doubles (up to 1024x), and halves again once it is quiet
//
// The backing file mirrors the region: page p of the region is at offset p * 4096, so it needs no
// slot allocator, and it is sparse (holes cost no disk).
#pragma once
#include <cstddef>
#include <cstdint>
#include <atomic>

namespace zns {

enum TierMode : int { kTierOff = 0, kTierUffd = 1, kTierMadvise = 2 };
extern int g_tier_mode;   // set at region setup (off, uffd or madvise); a forked child's changes
                          // (off at the fork; uffd again when its own tier starts)
// A forked child's own tier is due: the heap's slow path and the shim's allocating calls of the
// next allocator (child_tier_due; never a free) call tier_child_poll() while this is set (one load
// there; nothing on the fast paths).  ZNS_TIER_CHILD_MS (0 = never, the default) after
// the fork the child opens
// its own backing file (uffd: and userfaultfd) and starts its own thread: only a child that lives
// and allocates that long pays for it, a fork+exec never does.
extern std::atomic<bool> g_tier_child_pending;
void tier_child_poll();

// ---- hooks the heap calls (core/heap.cpp); none takes the tier lock, none allocates ----------------
// Region setup: decides the mode from the options; in madvise mode maps the region on the backing
// file and returns it (nullptr otherwise: the heap reserves anonymous memory).
void *tier_map_region(size_t bytes);
// depot_take: pages [page, page+k) start a new life.  missing: never touched or purged.  uffd:
// make them present now (so first touches do not queue at the handler); madvise: reserve their
// room in the file.  false: no room (the heap gives the span back and the request falls through).
bool tier_take(uint32_t page, unsigned k, bool missing);
// madvise: this thread was refused room in the backing file for good (fallocate: EPERM, EACCES or
// ENOSYS; a seccomp filter, which is the thread's own unless installed for all): depot_take then
// gives it no slab and its requests go to the next allocator at once, where each made three
// refused calls and a purge of the span (a helper's seccomp sweep, 2026-12-06).  Per thread: a
// process-wide latch stopped threads with no filter, and forked children, too (the next review).
bool tier_room_refused();
void tier_region_shrunk(size_t bytes);   // the region now ends there (region_fit_limit)
// depot_release: the slab is empty; an out copy of it is void.
void tier_release(uint32_t page, unsigned k);
bool tier_is_out(uint32_t page);
int tier_purge(void *p, size_t bytes);   // return empty pages to the OS (madvise: punch a hole)
void tier_fork_prepare();                // brings every out slab back (uffd); takes the tier lock
void tier_fork_parent();
void tier_fork_child();                  // the child's heap becomes its own; its tier is due later

// ---- the rest of the library ---------------------------------------------------------------------
void tier_start();                       // from the shim's constructor: handler thread, registration
size_t tier_pageout_now();               // evict every eligible slab now, whatever its age

struct TierSnapshot {
  int mode;
  uint64_t slabs_out, slabs_in, bytes_out, bytes_in;   // evictions and fault-ins since start
  uint64_t clean_out;   // uffd: evictions that wrote nothing (the file held the slab already)
  uint64_t out_pages;                                  // pages on the tier now
  uint64_t evict_errors, thrash, write_hits, zero_fills, scans;
  uint64_t pressure, pressure_raises;   // the return governor: every cold window << pressure now
  uint64_t fault_p50_ns, fault_p99_ns, fault_max_ns, faults_timed;
};
void tier_snapshot(TierSnapshot *out);
const char *tier_mode_name(int mode);

}  // namespace zns
