// Slow paths of the slab heap: thread caches (attach, exit, refill, inbox), remote frees, and the
// depot.  Locks, outermost first: g_orphan_lock > g_pool_lock > g_depot_lock; a class lock
// (the shared-slab list of one class) is never held with another class lock or the depot lock.
// None is taken on
// the fast paths in heap.h.
#include "core/heap.h"

#include <cerrno>
#include <new>
#include <link.h>
#include <pthread.h>
#include <sys/auxv.h>
#include <sched.h>
#include <sys/mman.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "core/options.h"
#include "core/stats.h"
#include "tier/tier.h"

namespace zns {

Region g_region;
pid_t g_heap_pid;   // the process whose heap this is (heap_init, fork_child; region_fit_limit)
std::atomic<uint32_t> g_purge_claims;
std::atomic<uint32_t> g_inbox_ops;
std::atomic<uint32_t> g_shared_claims;
std::atomic<void (*)()> g_test_purge_hook;
std::atomic<void (*)()> g_test_fork_walk_hook;
std::atomic<void (*)()> g_test_step_hook;
std::atomic<void (*)()> g_test_pair_hook;
std::atomic<void (*)()> g_test_step_entry_hook;
std::atomic<void (*)()> g_test_refill_hook;
bool g_secure;
std::atomic<bool> g_populate;

namespace {
uint64_t g_secret;   // ZNS_SECURE: random, xored into quarantine marks and rng seeds
// A free of a block whose bit says free: freed before, or never handed out (the bitmap cannot
// tell them apart).
constexpr const char *kFreeOfFree = "double free (or free of a block never handed out)";
}

constinit std::atomic<uint64_t> g_zero_word{0};   // no free bits: every malloc on it goes slow
// Sentinel caches: id kSentinelId owns no slab, so every free from them is "remote".
constinit ThreadCache g_empty_cache(kSentinelId);   // before the thread's first malloc
constinit ThreadCache g_dead_cache(kSentinelId);    // after its cache was handed back

__thread ThreadCache *t_cache __attribute__((tls_model("initial-exec"))) = &g_empty_cache;
// Frees by this thread before it had a cache (see free_remote_plain).
__thread uint32_t t_cacheless_frees __attribute__((tls_model("initial-exec"))) = 0;

namespace {

// Marks a thread's cache busy while a slow path changes it (its bins take three stores, its lists
// four): a fork cut through such a change hands the child a cache in a state no thread may use,
// so fork_child salvages it (fork_child_salvage: its slabs by owner, then a new state).  The fast
// paths' single stores (a bitmap word, `last`, a credit) need no mark.  The release fences keep
// the mark's stores around the change's (free on x86).  Never on a sentinel cache.
struct SlowPath {
  ThreadCache *tc;
  explicit SlowPath(ThreadCache *t) : tc(t) {
    tc->busy++;
    std::atomic_thread_fence(std::memory_order_release);
  }
  ~SlowPath() {
    std::atomic_thread_fence(std::memory_order_release);
    tc->busy--;
  }
  SlowPath(const SlowPath &) = delete;
  SlowPath &operator=(const SlowPath &) = delete;
};

// ---- the locks that a fork holds -----------------------------------------------------------------
// On the fork's page (core/platform.h, ForkPage: a fork writes each in both processes).
static_assert(3 + kNumClasses <= kForkPatchLock, "the heap's locks fit on the fork's page");
Lock &g_orphan_lock = g_fork_page.lock[0].lock;   // the orphan cache (g_orphan)
Lock &g_pool_lock = g_fork_page.lock[1].lock;     // the cache table and the pool of detached caches
Lock &g_depot_lock = g_fork_page.lock[2].lock;    // g_depot
// The shared-slab list of each class has its own lock, so threads churning different classes do
// not meet on the depot lock.
ZNS_INLINE Lock &class_lock(unsigned cls) { return g_fork_page.lock[3 + cls].lock; }

// ---- the cache table and the pool of detached caches -------------------------------------------
constexpr uint32_t kMaxCaches = 1u << 16;
ThreadCache *g_caches[kMaxCaches];        // by id; entries are written once, under g_pool_lock
uint32_t g_num_caches;                    // ids 1..g_num_caches are in use
ThreadCache *g_pool_head;                 // detached caches, waiting for a new thread
ThreadCache *g_orphan;                    // serves threads whose own cache is already handed back
pthread_key_t g_key;
std::atomic<uint64_t> g_threads_seen;

// Internal memory for caches: bump allocation from mmap'ed chunks, never returned.
char *g_arena_next, *g_arena_end;
void *arena_alloc(size_t n) {   // under g_pool_lock
  n = (n + 63) & ~size_t(63);
  if (size_t(g_arena_end - g_arena_next) < n) {
    size_t chunk = n > (1u << 20) ? n : (1u << 20);
    char *p = static_cast<char *>(os_reserve_guarded(chunk));   // caches are metadata: guarded
    if (!p) return nullptr;
    g_arena_next = p;
    g_arena_end = p + chunk;
  }
  void *r = g_arena_next;
  g_arena_next += n;
  return r;
}

ThreadCache *new_cache() {   // under g_pool_lock
  if (g_num_caches + 1 >= kMaxCaches) return nullptr;
  void *mem = arena_alloc(sizeof(ThreadCache));
  if (!mem) return nullptr;
  uint32_t id = g_num_caches + 1;
  ThreadCache *tc = new (mem) ThreadCache(id);
  uint64_t z = g_secret + uint64_t(id) * 0x9e3779b97f4a7c15ull;   // splitmix64 of (secret, id)
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  tc->rng = (z ^ (z >> 31)) | 1;
  __atomic_store_n(&g_caches[id], tc, __ATOMIC_RELEASE);     // (read without the lock: heap_snapshot,
  __atomic_store_n(&g_num_caches, id, __ATOMIC_RELEASE);     // pool_reclaim_spares)
  return tc;
}

// ---- the depot -----------------------------------------------------------------------------------
struct Depot {   // (its lock: g_depot_lock)
  // Empty, resident slabs by the NUMA node their pages are on (node_of; all on node 0 unless the
  // depot is NUMA-aware) and by pages; newest first.  The clean lists have no node: a purged
  // group's pages fault in wherever its next owner first touches them.
  uint32_t dirty_head[kMaxNodes][kMaxSlabPages + 1];
  uint32_t dirty_tail[kMaxNodes][kMaxSlabPages + 1];   // oldest: the next to purge
  uint32_t clean_head[kMaxSlabPages + 1];   // empty, purged slabs by pages (a stack, doubly
                                            // linked: a purge may take one from the middle)
  uint32_t bump;                            // first page never handed out
  uint32_t purging_head;                    // slabs a depot_purge took off the dirty lists and is
                                            // giving back outside the lock (doubly linked): a
                                            // fork's child puts them back (fork_child)
  uint64_t dirty_pages, clean_pages, purging_pages, purged_total;
  uint64_t purge_calls;                     // system calls of depot_purge since start
  uint64_t purge_ranges;                    // the runs they gave back (a call may take many)
  uint32_t shared_head[kNumClasses];        // shared slabs worth reusing, per class (doubly
  uint32_t shared_tail[kNumClasses];        // linked; queued at the head, adopted from the tail)
  uint64_t slabs[kNumClasses];              // slabs out of the depot (owned or shared), per class
  uint64_t owned_pages;                     // pages of those slabs
  uint32_t next_due;                        // now_ms() before which no dirty slab is old enough
                                            // to purge (every dirty stamp + decay >= it)
  uint64_t refault_pages;                   // pages given back and handed out again soon after
                                            // (refault_window): dirty_cap lets that many stay
  uint64_t owned_peak;                      // the most owned_pages since start (or trim)
  uint32_t forget_ms;                       // now_ms() at the last trim: pages given back
                                            // before it are no refaults
  uint32_t decommit_head;                   // runs of clean groups whose commit went back
                                            // (decommit_clean): a list of each run's first
                                            // group, its `stamp` the run's length in groups
  uint32_t decommit_runs;                   // on that list
  uint64_t decommitted_pages;               // kGroupPages a group on it (its span still counts
                                            // in clean_pages)
  uint64_t decommit_calls;                  // mappings made for it since start
  uint64_t node_dirty_pages[kMaxNodes];     // dirty_pages by node
  uint64_t node_takes[kMaxNodes];           // slabs handed to a thread on each node
  uint64_t cross_node_takes;                // ... of them, another node's empty resident slab
};
Depot g_depot;

void depot_reset_lists() {
  for (unsigned k = 0; k <= kMaxSlabPages; ++k) {
    for (unsigned n = 0; n < kMaxNodes; ++n) g_depot.dirty_head[n][k] = g_depot.dirty_tail[n][k] = kNil;
    g_depot.clean_head[k] = kNil;
  }
  for (unsigned c = 0; c < kNumClasses; ++c) g_depot.shared_head[c] = g_depot.shared_tail[c] = kNil;
  g_depot.purging_head = kNil;
  g_depot.decommit_head = kNil;
  g_depot.next_due = uint32_t(now_ms());
  g_depot.forget_ms = g_depot.next_due;
}

// The owner lives in the slab's one metadata line, so a park or unpark writes one cache line.
// order: seq_cst where the slab changes hands (see "Memory ordering" in DESIGN.md); relaxed when
// its owner only parks or unparks it (the cache a freer notifies stays the same, and the owner's
// own frees are program-ordered after its store).
void set_owner(SlabMeta *s, uint32_t owner, std::memory_order order = std::memory_order_seq_cst) {
  if (g_secure && owner != kNoOwner && owner < kSharedOwner) owner |= kSecureBit;   // see kSecureBit
  s->owner.store(owner, order);
}

// The free bits of s in its bitmap f (bits(s), loaded by the caller; not kFullBits).
ZNS_INLINE unsigned free_count_in(const SlabMeta *s, std::atomic<uint64_t> *f) {
  unsigned n = 0;
  for (unsigned w = 0, words = words_of(s); w < words; ++w)
    n += unsigned(__builtin_popcountll(f[w].load(std::memory_order_relaxed)));
  return n;
}
ZNS_INLINE unsigned free_count(const SlabMeta *s) {
  std::atomic<uint64_t> *f = bits(s);
  return f == full_bits() ? 0 : free_count_in(s, f);
}

// ---- bitmap pools (see SlabMeta "Bitmaps") -------------------------------------------------------
// One per class whose bitmap does not fit in the line: records of `words` words, room for one per
// group and one chunk more (the spares: record_get); the remote records are the same places in
// the mirror, handed out apart from the free ones (a full slab gives its free record back and
// keeps its remote one; remote records have no spares, so a slab each at most).  A record is free
// (on its free list, linked through its first word), held by one slab, or a thread's spare
// (ThreadCache.spare).  Under the depot lock.
// All pools share one area, in chunks: chunk j holds records [j * kPoolChunk, (j + 1) * kPoolChunk)
// of every pool, each pool's run at its own offset in the chunk.  So the area is committed as one
// prefix of chunks (commit_range) and the metadata is a handful of mappings, where a pool of its
// own per class made ~90 (a committed prefix and a reserved rest each, twice with the mirror),
// and a commit step an mprotect per pool and half.
constexpr uint32_t kPoolChunk = 128;   // records of each pool per chunk (16 MiB of slabs)
struct BitmapPool {
  size_t at;               // word offset of the pool's first record in each chunk
  uint32_t words;          // words per record (the bitmap's, rounded up to whole cache lines:
                           // region_init); 0: the class's bitmap is inline
  uint32_t bump;           // free-bit records handed out so far
  uint32_t free_head;      // a free one's index, or kNil
  uint32_t rbump;          // remote records handed out so far
  uint32_t rfree_head;     // a free one's index, or kNil
};
BitmapPool g_bitmap_pool[kNumClasses];
size_t g_pool_area;     // word index (of g_region.meta seen as words) of chunk 0
size_t g_pool_stride;   // words per chunk (a multiple of a page)
size_t g_pool_chunks;   // chunks reserved

// Record k of class c's pool.
std::atomic<uint64_t> *record_at(unsigned c, uint32_t k) {
  return reinterpret_cast<std::atomic<uint64_t> *>(g_region.meta) + g_pool_area + (k / kPoolChunk) * g_pool_stride +
         g_bitmap_pool[c].at + size_t(k % kPoolChunk) * g_bitmap_pool[c].words;
}
std::atomic<uint64_t> *mirror_of(std::atomic<uint64_t> *b) {
  return reinterpret_cast<std::atomic<uint64_t> *>(reinterpret_cast<char *>(b) + g_region.mirror);
}
std::atomic<uint64_t> *mirror_of_back(std::atomic<uint64_t> *r) {
  return reinterpret_cast<std::atomic<uint64_t> *>(reinterpret_cast<char *>(r) - g_region.mirror);
}
// Point slab m's bitmap at b (the depot, or the owner swapping a record and kFullBits), one step
// of its record generation first (see freed_in_bitmap).
void bits_set(SlabMeta &m, std::atomic<uint64_t> *b) {
  m.inline_free[0].store(m.inline_free[0].load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  __atomic_store_n(&m.bitmap, b, __ATOMIC_RELEASE);   // the scans read it racily
}
// The class of the pool a free-bit record belongs to, or kNumClasses (a line's own words,
// kFullBits, none).  By address, not from `cls`: a slab that depot_take had to give back (the
// tier's file was full) returns to the depot with its new records and its old `cls`.
unsigned pool_of(const std::atomic<uint64_t> *b) {
  size_t off = size_t(b - reinterpret_cast<std::atomic<uint64_t> *>(g_region.meta));
  if (off < g_pool_area || off >= g_pool_area + g_pool_chunks * g_pool_stride) return kNumClasses;
  size_t in = (off - g_pool_area) % g_pool_stride;
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const BitmapPool &p = g_bitmap_pool[c];
    if (p.words && in >= p.at && in < p.at + size_t(kPoolChunk) * p.words) return c;
  }
  return kNumClasses;
}
uint32_t record_index(unsigned c, const std::atomic<uint64_t> *b) {
  size_t off = size_t(b - reinterpret_cast<std::atomic<uint64_t> *>(g_region.meta)) - g_pool_area;
  return uint32_t(off / g_pool_stride * kPoolChunk + (off % g_pool_stride - g_bitmap_pool[c].at) / g_bitmap_pool[c].words);
}
// Records [0, g_pool_records) of every pool are committed: the chunks of the groups committed
// (commit_range), and one more once record_get needed it.
uint32_t g_pool_records;
uint64_t pool_chunks_for(uint64_t groups) {
  uint64_t n = (groups + kPoolChunk - 1) / kPoolChunk;
  return n < g_pool_chunks ? n : g_pool_chunks;
}
bool pool_commit(uint64_t c0, uint64_t c1) {   // chunks [c0, c1), in both halves
  char *meta = reinterpret_cast<char *>(g_region.meta);
  for (size_t mirror : {size_t(0), g_region.mirror})
    if (c1 > c0 && !os_commit(meta + mirror + (g_pool_area + c0 * g_pool_stride) * 8, (c1 - c0) * g_pool_stride * 8))
      return false;
  if (c1 * kPoolChunk > g_pool_records) g_pool_records = uint32_t(c1 * kPoolChunk);
  return true;
}
void record_put(unsigned c, std::atomic<uint64_t> *b) {
  // (release: a reader of a stale bitmap pointer that sees this word sees the generation's step;
  // see freed_in_bitmap)
  b[0].store(g_bitmap_pool[c].free_head, std::memory_order_release);
  g_bitmap_pool[c].free_head = record_index(c, b);
}
// A pool's records are held by slabs (one each, at most one per group in use) and by threads'
// spares (ThreadCache.spare, bits_release: one per class and cache, a detached cache's too), so a
// class whose slabs fill every committed group can have handed out every committed record (a
// review, 2026-12-06: 8 threads with spares, then one class's slabs over a whole 64 MiB region:
// records 1024..1030 of a pool with room for 1024, written over the next pool's, later the
// mirror's lines).  Then the spares come back here: each slot changes by exchange, so a record
// taken from one is its owner's no more.  Under the depot lock.
bool pool_reclaim_spares(unsigned c) {
  bool any = false;
  uint32_t n = __atomic_load_n(&g_num_caches, __ATOMIC_ACQUIRE);
  for (uint32_t id = 1; id <= n; ++id)
    if (ThreadCache *tc = __atomic_load_n(&g_caches[id], __ATOMIC_ACQUIRE))   // (null: being made)
      if (__atomic_load_n(&tc->spare[c], __ATOMIC_RELAXED))   // (an idle cache's line stays where it is)
        if (std::atomic<uint64_t> *b = __atomic_exchange_n(&tc->spare[c], nullptr, __ATOMIC_ACQUIRE)) {
          record_put(c, b);
          any = true;
        }
  return any;
}
// A free-bit record of class c (its words as its last holder left them), and back.
std::atomic<uint64_t> *record_get(unsigned c) {
  BitmapPool &pool = g_bitmap_pool[c];
  if (pool.free_head == kNil) {
    if (pool.bump < g_pool_records) return record_at(c, pool.bump++);
    // Every committed record is out: a chunk more (the last is slack, past the region's groups),
    // then the spares.  Not found (helper-84's count: slabs' records and those on their way in
    // bits_release stay below the groups): more than 128 records lost (a fork that cut a thread
    // between a spare's exchange and its store loses one in the child) with the whole region this
    // class's, or a data limit that refused the chunk.
    uint64_t next = g_pool_records / kPoolChunk;
    if (next < g_pool_chunks && pool_commit(next, next + 1)) return record_at(c, pool.bump++);
    if (!pool_reclaim_spares(c)) {
      char m[160];
      Buf(m, sizeof m).str("zns-slab: the bitmap pool of the ").u64(kClasses.info[c].size)
          .str(" B class has no record left (lost, or its chunk refused); the heap stops here\n").say();
      fatal_abort();
    }
  }
  std::atomic<uint64_t> *b = record_at(c, pool.free_head);
  pool.free_head = uint32_t(b[0].load(std::memory_order_relaxed));
  return b;
}
// Before a first store to the mirror page of p (see Region.remote_pages).
ZNS_INLINE void mark_mirror_written(const void *p) {
  size_t i = mirror_page_index(p);
  std::atomic<uint64_t> &w = g_region.remote_pages[i >> 6];
  uint64_t bit = uint64_t(1) << (i & 63);
  if (!(w.load(std::memory_order_seq_cst) & bit)) w.fetch_or(bit, std::memory_order_seq_cst);
}
// Before a first store to the remote state of slab s (r: its line): mark the pages of its
// RemoteState line and of its remote bits written (see Region.remote_pages); the bits returned.
// Inline bits are in that line (RemoteState.inline_bits): one page; a record's words may end on
// the next page.  The line remembers whose pages it marked (RemoteState.marked, stored after the
// marks with release, read with acquire): marks are never cleared, so a freer that reads its
// slab's bits there skips them, and its OR after still follows the marks (a first look at a
// line whose page nobody marked yet reads zeros).  A slab that begins a life with another record
// (or inline bits) finds another address there and marks again.  (Whether the bits are inline is
// decided as rbits() decides it: a slab's bits are inline for the whole of its life.)
// The note is the address with its low bit set, so that a line never noted (zero) matches no
// address, not even none: a stale (double) free p that races the install of a new life's records
// may read the new free bits with the group's remote record not yet there (null: a group that
// never had one; the reads are relaxed, and a weakly ordered CPU may see them in either order),
// and gets a clear message here instead of a store through null or a mark far outside the
// mirror's map.
ZNS_INLINE std::atomic<uint64_t> *remote_will_write(const SlabMeta *s, RemoteState &r, const void *p) {
  std::atomic<uint64_t> *b = bits(s), *rb = rbits_of(s, b);
  if (ZNS_LIKELY(r.marked.load(std::memory_order_acquire) == (uintptr_t(rb) | 1))) return rb;
  if (ZNS_UNLIKELY(rb == nullptr)) fatal("double free", "free", p);
  mark_mirror_written(&r);
  if (b != s->inline_free) {
    // The record's whole extent, as its pool has it: not words_of(s), whose `blocks` may be of
    // another life than rb (a stale free racing depot_take, which installs the record first),
    // so that the note below never names a record whose end went unmarked (helper-92's review).
    unsigned c = pool_of(mirror_of_back(rb));
    unsigned words = c < kNumClasses ? g_bitmap_pool[c].words : words_of(s);
    mark_mirror_written(rb);
    mark_mirror_written(rb + words - 1);
  }
  r.marked.store(uintptr_t(rb) | 1, std::memory_order_release);
  return rb;
}
// A remote record of class c, and back.  The free list's links are remote words: their pages are
// marked written first, so that depot_take clears the link of the one it takes (as any stray).
std::atomic<uint64_t> *rrecord_get(unsigned c) {
  BitmapPool &pool = g_bitmap_pool[c];
  if (pool.rfree_head == kNil) return mirror_of(record_at(c, pool.rbump++));
  std::atomic<uint64_t> *r = mirror_of(record_at(c, pool.rfree_head));
  pool.rfree_head = uint32_t(r[0].load(std::memory_order_relaxed));
  return r;
}
void rrecord_put(unsigned c, std::atomic<uint64_t> *r) {
  mark_mirror_written(r);
  r[0].store(g_bitmap_pool[c].rfree_head, std::memory_order_relaxed);
  g_bitmap_pool[c].rfree_head = record_index(c, mirror_of_back(r));
}

// Give slab m (in the depot, no remote bits) the bitmap of class cls: its own line's words, or a
// free-bit and a remote record of cls's pool (the ones it holds, if it held that class's).  Under
// the depot lock.
void bitmap_assign(SlabMeta &m, unsigned cls) {
  std::atomic<uint64_t> *b = m.bitmap, **rr = &g_region.rrec[&m - g_region.meta];
  BitmapPool &pool = g_bitmap_pool[cls];
  if (b && b != m.inline_free) {   // it holds records: a remote one, and a free-bit one unless full
    unsigned held = pool_of(mirror_of_back(*rr));
    if (held == cls) {
      if (b == full_bits()) bits_set(m, record_get(cls));   // (a full slab is never in the depot)
      return;
    }
    if (b != full_bits()) record_put(pool_of(b), b);
    rrecord_put(held, *rr);
  }
  if (pool.words == 0) {
    bits_set(m, m.inline_free);
    return;
  }
  __atomic_store_n(rr, rrecord_get(cls), __ATOMIC_RELAXED);   // the scans read it racily
  bits_set(m, record_get(cls));
}

// Full slabs (SlabMeta "Full slabs").  The owner of slab s, which has a record and no free block
// (its remote bits are its own), gives the record back: s's bitmap reads all ones until
// bits_install.  Not in ZNS_SECURE (its frees never take the fast path) nor in the unchecked build
// (whose free fast path does not look at the bit, and would store to kFullBits).
//
// The record goes to this thread's spare slot of the class first (ThreadCache.spare), and
// bits_install takes it from there: a slab that fills and then gets a free back, the common round
// trip, takes no lock (until 2026-12-05 both took the depot lock: 206 instructions for the first
// free into a full slab).  Any thread's spare serves any slab of the class (the records of a pool
// are interchangeable), so whoever installs (the owner's free, its drain, an adopter, a thread
// draining a dead one's inbox) uses its own.  Not the sentinel caches (shared by threads).
// The slot changes by exchange: a signal handler's free or malloc between a load and a store of
// it would otherwise take the same record.  A fork that cuts a thread between the exchange and
// the bitmap's store loses the record in the child (as it lost one cut between the store and the
// depot lock before).
//
// Called by park for the count of s's free blocks (free_count): a slab with a record is counted
// after its bitmap points at kFullBits, so that a free by a signal handler of this thread (the
// only other writer of the record: remote frees have bits of their own) either lands before the
// count, and the record goes back to the slab, or sees the ones and takes a record of its own.
// A record given away is therefore all zeros.
unsigned bits_release(SlabMeta *s) {
  std::atomic<uint64_t> *b = bits(s);
  if (b == s->inline_free) return free_count_in(s, b);   // (inline bits are never swapped)
  if (!kFastChecks || g_secure || b == full_bits()) return free_count(s);
  bits_set(*s, full_bits());
  std::atomic_signal_fence(std::memory_order_seq_cst);
  unsigned n = free_count_in(s, b);
  if (n) {
    bits_set(*s, b);   // not full after all
    return n;
  }
  ThreadCache *tc = t_cache;
  if (tc->id != kSentinelId) {
    b = __atomic_exchange_n(&tc->spare[s->cls], b, __ATOMIC_RELAXED);
    if (!b) return 0;
  }
  Guard g(g_depot_lock);
  record_put(s->cls, b);   // (an owned slab's record is its class's)
  return 0;
}
// The owner (or a claimer) of a full slab needs its bits: a zeroed record of its class.  A spare
// comes zeroed: bits_release's slab had no free block.
std::atomic<uint64_t> *bits_install(SlabMeta *s) {
  ThreadCache *tc = t_cache;
  std::atomic<uint64_t> *b = nullptr;
  if (tc->id != kSentinelId) b = __atomic_exchange_n(&tc->spare[s->cls], nullptr, __ATOMIC_RELAXED);
  if (!b) {
    {
      Guard g(g_depot_lock);
      b = record_get(s->cls);
    }
    for (unsigned w = 0, words = words_of(s); w < words; ++w)
      b[w].store(0, std::memory_order_release);   // (see freed_in_bitmap)
  }   // (a spare is zero already: its slab had no free block when it gave it up)
  bits_set(*s, b);
  return b;
}

// Are any of `mask`'s blocks free in word w of slab s's bitmap, as a thread that does not own s
// sees it?  A positive is confirmed against the slab's record generation: the owner of a full slab
// gives its record back (bits_release), and another slab may take it and set bits in it before
// our load.  A stale negative is harmless: the owner's merge (merge_remote) checks the remote bits
// against its bitmap again.  (Every store to a record is a release on x86-64, whose loads are not
// reordered either: the fence and the release stores make the order the reasoning needs explicit.)
ZNS_NOINLINE bool freed_in_record(const SlabMeta *s, unsigned w, uint64_t mask) {
  for (;;) {
    uint64_t gen = s->inline_free[0].load(std::memory_order_acquire);
    std::atomic<uint64_t> *b = __atomic_load_n(&s->bitmap, __ATOMIC_ACQUIRE);
    if (b == full_bits() || !(b[w].load(std::memory_order_relaxed) & mask)) return false;
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s->inline_free[0].load(std::memory_order_relaxed) == gen) return true;
  }
}
ZNS_INLINE bool freed_in_bitmap(const SlabMeta *s, unsigned w, uint64_t mask) {
  std::atomic<uint64_t> *b = bits(s);
  if (b == full_bits() || !(b[w].load(std::memory_order_relaxed) & mask)) return false;
  return b == s->inline_free || freed_in_record(s, w, mask);   // (inline bits are never swapped)
}

// Doubly linked lists of slabs through SlabMeta.prev/next (head page numbers; kNil ends them).
void list_push(uint32_t &head, SlabMeta *s) {
  uint32_t page = page_of(s);
  s->prev = kNil;
  s->next = head;
  if (head != kNil) meta_at(head).prev = page;
  head = page;
}
ZNS_INLINE void list_unlink(uint32_t &head, SlabMeta *s) {
  if (s->prev != kNil) meta_at(s->prev).next = s->next;
  else head = s->next;
  if (s->next != kNil) meta_at(s->next).prev = s->prev;
  s->prev = s->next = kNil;
}

// ---- NUMA ----------------------------------------------------------------------------------------
// On a machine of several nodes the depot keeps each empty, resident slab on the dirty lists of
// the node its pages are on, and hands a thread its own node's first: then clean or new groups,
// whose pages fault in on its node; another node's only when the region is full (depot_other,
// cross_node_takes).  A group's node (g_region.node) is that of the thread that took it with its
// pages missing (clean or never used): under the default memory policy a page is placed on the
// node of the CPU that first touches it, and the taker is the thread that does (populate_ahead,
// its cursor).  A dirty group keeps its node through its lives.  dirty_cap keeps the empty slabs
// of all nodes under the heap's peak.  Off (g_nodes 1, nothing written, no sched_getcpu) on one
// node, with ZNS_NUMA=0, or under a memory policy that places pages elsewhere (interleave).
unsigned g_nodes = 1;          // nodes kept apart; fixed at heap_init (test_set_numa_nodes aside)
unsigned g_machine_nodes = 1;  // the machine's (0: simulated by ZNS_NUMA_NODES)
const char *g_numa_off;        // why not NUMA-aware on a machine of several nodes
constexpr unsigned kMaxCpus = 4096;
uint8_t g_cpu_node[kMaxCpus];  // a CPU's node index (0 for CPUs of no node list, and from kMaxCpus)
uint16_t g_node_id[kMaxNodes]; // the id of the node of each index (the online ids in order)
__thread int t_test_node __attribute__((tls_model("initial-exec"))) = -1;

void numa_init() {
  const char *not_local = nullptr;
  g_machine_nodes = os_numa_topology(g_cpu_node, kMaxCpus, g_node_id, kMaxNodes, &not_local);
  g_nodes = g_machine_nodes < kMaxNodes ? g_machine_nodes : kMaxNodes;
  if (!g_options.ZNS_NUMA) {
    if (g_nodes > 1) g_numa_off = "ZNS_NUMA=0";
    g_nodes = 1;
  } else if (g_options.ZNS_NUMA_NODES >= 1) {   // simulated: CPU i on node i mod n
    g_nodes = g_options.ZNS_NUMA_NODES < kMaxNodes ? unsigned(g_options.ZNS_NUMA_NODES) : kMaxNodes;
    for (unsigned i = 0; i < g_nodes; ++i) g_node_id[i] = uint16_t(i);
    g_machine_nodes = 0;
  } else if (g_nodes > 1 && not_local) {
    g_numa_off = not_local;
    g_nodes = 1;
  }
}
// The node of a group's pages, as the depot knows it.
unsigned node_of(uint32_t page) { return g_nodes > 1 ? g_region.node[page / kGroupPages] % g_nodes : 0; }
void set_node(uint32_t page, unsigned node) {
  if (g_nodes > 1) g_region.node[page / kGroupPages] = uint8_t(node);
}
// The calling thread's node: its CPU's (sched_getcpu reads the thread's rseq area, or asks the
// vDSO: no system call on x86-64 or, with rseq, elsewhere).  Outside the depot lock.
unsigned current_node() {
  if (g_nodes <= 1) return 0;
  if (t_test_node >= 0) return unsigned(t_test_node) % g_nodes;
  int cpu = sched_getcpu();
  if (cpu < 0) return 0;
  if (!g_machine_nodes) return unsigned(cpu) % g_nodes;
  return unsigned(cpu) < kMaxCpus ? g_cpu_node[cpu] % g_nodes : 0;
}

// The clean lists (and the purging list, for their bridges: see depot_purge).  SlabMeta.purged of
// a depot slab says where it is, and changes only under the depot lock: kCleanMark on a clean
// list, kBridgeMark on the purging list as a bridge, else 0.  So a purge knows by reading a
// neighbour's line under the lock that the group holds nothing and that no one can take it.
// (For owned slabs `purged` is the parked-purge flag, 0 or 1.)
constexpr uint8_t kCleanMark = 2, kBridgeMark = 3;
void set_mark(SlabMeta &m, uint8_t mark) { __atomic_store_n(&m.purged, mark, __ATOMIC_RELAXED); }
uint8_t mark_of(uint32_t page) { return __atomic_load_n(&meta_at(page).purged, __ATOMIC_RELAXED); }
// A clean slab's stamp: when its pages were given back (depot_take counts a refault by it).
void clean_push(uint32_t page, unsigned k, uint32_t now) {   // under the depot lock
  SlabMeta &m = meta_at(page);
  m.stamp = now;
  list_push(g_depot.clean_head[k], &m);
  g_depot.clean_pages += k;
  set_mark(m, kCleanMark);
}
uint32_t clean_pop(unsigned k) {   // under the depot lock; kNil when the list is empty
  uint32_t page = g_depot.clean_head[k];
  if (page == kNil) return kNil;
  SlabMeta &m = meta_at(page);
  list_unlink(g_depot.clean_head[k], &m);
  g_depot.clean_pages -= k;
  set_mark(m, 0);
  return page;
}
// Slab `page` off the dirty list of k pages of its node, wherever it is in it.  Under the depot lock.
void dirty_unlink(uint32_t page, unsigned k) {
  SlabMeta &m = meta_at(page);
  unsigned node = node_of(page);
  if (m.prev != kNil) meta_at(m.prev).next = m.next;
  else g_depot.dirty_head[node][k] = m.next;
  if (m.next != kNil) meta_at(m.next).prev = m.prev;
  else g_depot.dirty_tail[node][k] = m.prev;
  g_depot.dirty_pages -= k;
  g_depot.node_dirty_pages[node] -= k;
}
// The oldest dirty slab of any node and span, or kNil.  Under the depot lock.
uint32_t dirty_oldest() {
  uint32_t best = kNil;
  for (unsigned n = 0; n < g_nodes; ++n)
    for (unsigned k = 1; k <= kMaxSlabPages; ++k) {
      uint32_t t = g_depot.dirty_tail[n][k];
      if (t != kNil && (best == kNil || int32_t(meta_at(t).stamp - meta_at(best).stamp) < 0)) best = t;
    }
  return best;
}
// A clean slab lent to a purge as a bridge: off its clean list, on the purging list, still
// counted as clean (its pages stay given back).  And back.  Under the depot lock.
void bridge_take(uint32_t page) {
  SlabMeta &m = meta_at(page);
  list_unlink(g_depot.clean_head[m.pages], &m);
  list_push(g_depot.purging_head, &m);
  set_mark(m, kBridgeMark);
}
void bridge_return(uint32_t page) {
  SlabMeta &m = meta_at(page);
  list_unlink(g_depot.purging_head, &m);
  list_push(g_depot.clean_head[m.pages], &m);
  set_mark(m, kCleanMark);
}

// The most empty-slab pages the depot keeps resident (under its lock): ZNS_DIRTY_MAX_KB, or
// ZNS_DIRTY_PERCENT (default 100) of the larger of
//   - the pages of slabs in use.  A program that frees part of a big heap and allocates it again
//     within ZNS_DECAY_MS then reuses resident pages: a page given back costs its share of a
//     madvise call, and a page fault when it is touched again (11 us per fault in this VM).
//     python3's bench run frees about 60 MiB of its 230 MiB heap halfway and allocates it again:
//     with the fixed 8 MiB cap it refaulted 50 MiB (91k faults, 79k with this cap; tcmalloc 60k).
//   - the pages it gave back and soon had to hand out again (refault_pages, counted by depot_take,
//     reset by trim), plus the fixed cap.  A program that frees a whole heap and builds it again
//     (phases, a thread that hands all its blocks to another: bench handoff) refaults it once,
//     then keeps it: the heap-sized drop of the cap above gave it all back every time.
// and never more than the heap in use has shrunk since its peak (owned_peak - owned_pages), so
// that empty slabs kept never take the slab memory above the most the heap has held (a phase of
// another class, whose slabs take them first (dirty_take), would otherwise add to them).  A heap
// freed whole is given back down to ZNS_DIRTY_MAX_KB as before (bench/memory) unless it was
// freed and refaulted before, and decay (ZNS_DECAY_MS) still returns every empty slab in time.
uint64_t dirty_cap() {
  uint64_t fixed = g_options.ZNS_DIRTY_MAX_KB / 4;
  uint64_t pct = g_options.ZNS_DIRTY_PERCENT < 100 ? g_options.ZNS_DIRTY_PERCENT : 100;
  uint64_t again = g_depot.refault_pages + fixed;   // (what the fixed cap kept was not refaulted)
  uint64_t base = g_depot.owned_pages > again ? g_depot.owned_pages : again;
  uint64_t want = base * pct / 100;
  uint64_t room = g_depot.owned_peak - g_depot.owned_pages;   // (owned <= its peak)
  if (want > room) want = room;
  // NUMA-aware, a node's threads take new memory while another node's empty slabs wait, which the
  // fixed cap would let stay on top of the heap's peak (a review: phases of 64 MiB on alternate
  // nodes with ZNS_DIRTY_MAX_KB=65536, 131.7 MB peak RSS against 67.7 in one pool; in one pool the
  // empty slabs are taken before new memory).  So there only 1/nodes of the fixed cap may: enough
  // for a small heap that threads of the nodes take turns at (a second review: threads that each
  // allocate 1 MB and exit, on alternate nodes, refaulted all of it every time with no floor).
  uint64_t cap = want > fixed ? want : fixed;
  if (g_nodes > 1 && cap > room) cap = room > fixed / g_nodes ? room : fixed / g_nodes;
  return cap;
}
// A clean slab handed out again this soon after its pages went back was given back in vain.
uint32_t refault_window() {
  uint64_t w = g_options.ZNS_DECAY_MS * 4;
  return w < (1u << 30) ? uint32_t(w) : (1u << 30);
}

// Purge the oldest dirty slabs while the depot holds more than it may, or they are older than the
// decay delay.  madvise runs outside the lock.  force: purge every dirty slab.  Returns whether
// any was purged.
//
// What a call costs is its TLB flush, and in this VM a flush is dear: page by page up to 33 pages
// (4 us each: 65 us for a 64 KiB group), one full flush above (50-70 us; 205 us for 256 pages)
// (bench/WHY.md: a python run that freed 235 MiB of objects spent a quarter of its time in 3767
// calls, one 64 KiB group each).  So:
//   - once over the cap the depot goes down to half of it (a batch of slabs, not one);
//   - a batch is purged in runs, one call per run: victims in adjacent groups (the unused tail
//     pages of a slab shorter than its group go with it), and "bridges": the groups between two
//     victims when every one of them is clean (purged already, on a clean list).  A bridge is
//     taken off its clean list for the call (so that no depot_take hands it out meanwhile) and
//     put back; its pages hold nothing, so the call costs no more for them.  A teardown that
//     frees a heap group by group thus gives it back in a few long ranges;
//   - the runs of a batch go to the kernel in one process_madvise call (os_purge_ranges), which
//     flushes once for all of them (12 us a group instead of 65); where the kernel has no such
//     call, or stops part-way, the rest go one madvise each.
bool depot_purge(bool force) {
  NoCancel no_cancel;   // (seccomp_state reads /proc; see NoCancel)
  constexpr unsigned kBatch = 64;
  constexpr uint32_t kMaxBridge = 64 * kGroupPages;   // pages between two victims, at most
  struct Run { uint32_t first, end; unsigned victim0, victims; };   // victims[victim0...] in it
  bool over_cap = false;   // (latched: down to the low mark once the cap was passed)
  for (bool any = false;; any = true) {
    uint32_t victims[kBatch];
    Run runs[kBatch];
    unsigned n = 0, nruns = 0;
    {
      Guard g(g_depot_lock);
      uint32_t now = uint32_t(now_ms());
      // Over the cap: down by half of it, at most by half of the fixed cap (a batch of 32
      // groups by default; a cap raised by refaults is not halved for a small excess).
      uint64_t max_pages = dirty_cap(), drop = std::min(max_pages, g_options.ZNS_DIRTY_MAX_KB / 4) / 2;
      uint64_t low_pages = max_pages - drop;
      over_cap = over_cap || g_depot.dirty_pages > max_pages;
      while (n < kBatch) {
        uint32_t best = dirty_oldest();   // (over all nodes and page counts)
        if (best == kNil) break;
        SlabMeta &m = meta_at(best);
        bool due = force || g_depot.dirty_pages > (over_cap ? low_pages : max_pages) ||
                   now - m.stamp >= uint32_t(g_options.ZNS_DECAY_MS);
        if (!due) break;
        unsigned k = m.pages;
        dirty_unlink(best, k);   // (the oldest: the tail)
        g_depot.purging_pages += k;
        list_push(g_depot.purging_head, &m);
        victims[n++] = best;
      }
      // In address order (victims are page indexes), then into runs.
      for (unsigned i = 1; i < n; ++i)
        for (unsigned j = i; j > 0 && victims[j - 1] > victims[j]; --j) std::swap(victims[j - 1], victims[j]);
      for (unsigned i = 0; i < n; ++i) {
        uint32_t v = victims[i], vend = v + meta_at(v).pages;
        if (nruns > 0) {
          uint32_t gap = (runs[nruns - 1].end + kGroupPages - 1) & ~(kGroupPages - 1);
          bool bridge = v - gap <= kMaxBridge;
          for (uint32_t p = gap; bridge && p < v; p += kGroupPages) bridge = mark_of(p) == kCleanMark;
          if (bridge) {
            for (uint32_t p = gap; p < v; p += kGroupPages) bridge_take(p);
            runs[nruns - 1].end = vend;
            runs[nruns - 1].victims++;
            continue;
          }
        }
        runs[nruns++] = Run{v, vend, i, 1};
      }
    }
    if (n == 0) return any;
    if (void (*hook)() = g_test_purge_hook.load(std::memory_order_acquire); ZNS_UNLIKELY(hook != nullptr)) hook();
    // One call for the whole batch where the kernel has it (not under a tier: the madvise tier
    // punches holes in its file, and the uffd tier's region is left to plain madvise); the runs
    // it did not give back (all of them without it) go one call each.
    unsigned calls = 0, done = 0;
    if (nruns > 1 && g_tier_mode == kTierOff && g_options.ZNS_PROCESS_MADVISE != 0) {
      iovec ranges[kBatch];
      for (unsigned r = 0; r < nruns; ++r)
        ranges[r] = iovec{g_region.base + size_t(runs[r].first) * kPageSize, size_t(runs[r].end - runs[r].first) * kPageSize};
      int taken = os_purge_ranges(ranges, nruns);
      if (taken >= 0) {   // (-1: no call made)
        done = unsigned(taken);
        calls = 1;
      }
    }
    for (unsigned r = done; r < nruns; ++r, ++calls) {   // os_purge, or a hole in the tier file
      const Run &run = runs[r];
      if (tier_purge(g_region.base + size_t(run.first) * kPageSize, size_t(run.end - run.first) * kPageSize) == 0 ||
          (run.victims == 1 && run.end - run.first == meta_at(run.first).pages))
        continue;
      // The kernel stops a call at the first range it refuses (EINVAL: a page still mlocked, say
      // in a bridge or a tail left from a longer life): the victims again one by one, so that
      // one locked page keeps only its own slab resident, as before runs.
      for (unsigned i = run.victim0; i < run.victim0 + run.victims; ++i, ++calls)
        tier_purge(g_region.base + size_t(victims[i]) * kPageSize, size_t(meta_at(victims[i]).pages) * kPageSize);
    }
    Guard g(g_depot_lock);
    uint32_t now = uint32_t(now_ms());
    g_depot.purge_calls += calls;
    g_depot.purge_ranges += nruns;
    // Every group of a run is a victim or a bridge (clean before, clean again).
    for (unsigned r = 0, i = 0; r < nruns; ++r)
      for (uint32_t p = runs[r].first; p < runs[r].end; p += kGroupPages) {
        if (i == n || victims[i] != p) {
          bridge_return(p);
          continue;
        }
        ++i;
        SlabMeta &m = meta_at(p);
        list_unlink(g_depot.purging_head, &m);
        g_depot.purging_pages -= m.pages;
        g_depot.purged_total += m.pages;
        clean_push(p, m.pages, force ? now - refault_window() : now);   // (trim: not in vain)
      }
    if (n < kBatch) return true;
  }
}

// Under the depot lock: is depot_purge(false) worth calling?  The age scan runs only once
// next_due has passed (slabs arrive with newer stamps and leave oldest first, so the bound holds).
bool purge_due(uint32_t now) {
  if (g_depot.dirty_pages > dirty_cap()) return true;
  if (int32_t(now - g_depot.next_due) < 0) return false;
  uint32_t decay = g_options.ZNS_DECAY_MS < (1u << 30) ? uint32_t(g_options.ZNS_DECAY_MS) : (1u << 30);
  uint32_t t = dirty_oldest(), oldest = t == kNil ? now : meta_at(t).stamp;
  if (t != kNil && now - oldest >= decay) return true;
  g_depot.next_due = oldest + decay;
  return false;
}

// Node `node`'s newest dirty slab of k pages (resident and warm: best), else of the nearest other
// span (the longer of two as near: its tail, pages k.., goes back to the OS, which costs less than
// faulting in a shorter one's missing pages), or kNil.  *had: its span.  Under the depot lock;
// the caller gives the tail back after it.
uint32_t dirty_take(unsigned node, unsigned k, unsigned *had) {
  for (unsigned d = 0; d < kMaxSlabPages; ++d)
    for (unsigned side = 0; side < (d ? 2u : 1u); ++side) {
      unsigned j = side ? k - d : k + d;
      if (j < 1 || j > kMaxSlabPages) continue;
      uint32_t page = g_depot.dirty_head[node][j];
      if (page == kNil) continue;
      dirty_unlink(page, j);
      *had = j;
      return page;
    }
  return kNil;
}

// When the region is full: an empty slab of another span, for a slab of k pages for a thread on
// `node`.  A clean one first (its pages are all purged: they fault in on `node`); else the oldest
// dirty one of the longest span, whose pages beyond the k are purged now: of another node, as the
// caller found none of its own (cross_node_takes; *cross).  *clean: some of the first k pages are not
// resident (the tier must present them or reserve their room).  Under the depot lock.
uint32_t depot_other(unsigned k, unsigned node, bool *clean, bool *cross) {
  for (unsigned j = 1; j <= kMaxSlabPages; ++j) {
    uint32_t page = clean_pop(j);
    if (page == kNil) continue;
    set_node(page, node);
    *clean = true;
    return page;
  }
  for (unsigned j = kMaxSlabPages; j >= 1; --j) {
    uint32_t page = kNil;
    for (unsigned n = 0; n < g_nodes && page == kNil; ++n) page = g_depot.dirty_tail[n][j];
    if (page == kNil) continue;
    *cross = node_of(page) != node;
    if (*cross) g_depot.cross_node_takes++;
    dirty_unlink(page, j);
    if (j > k) tier_purge(g_region.base + size_t(page + k) * kPageSize, size_t(j - k) * kPageSize);
    *clean = j < k;   // (pages j..k-1 of a shorter one were purged or never touched)
    return page;
  }
  return kNil;
}

// ZNS_SECURE: make `page` an inaccessible guard.  Each guard splits the region's mapping, so they
// stop at kMaxGuards (the program needs map entries too: vm.max_map_count is 65530 by default).
constexpr uint32_t kMaxGuards = 16384;
uint32_t g_guards, g_guard_failures;   // under the depot lock
void make_guard(uint32_t page) {
  if (g_guards >= kMaxGuards) return;
  if (mprotect(g_region.base + size_t(page) * kPageSize, kPageSize, PROT_NONE) == 0) g_guards++;
  else g_guard_failures++;
}

// ---- commit on demand ----------------------------------------------------------------------------
// The region and the metadata reservation are address space only (PROT_NONE, and PROT_READ for
// the lines: not charged under vm.overcommit_memory=2 nor counted in RLIMIT_DATA / VmData) until
// the bump pointer needs them.  Every per-group structure of the metadata (lines, rrec, life, the
// bitmap pools) and its mirror is committed as a prefix: groups below g_committed_pages / kGroupPages (the
// pools: the chunks that hold those records).  A pool's records are handed out in index order
// and each is held by a slab below the bump pointer or is a thread's spare: the records of those
// groups are all it needs but where spares are many, when record_get commits a chunk more (and
// then takes the spares back).  The region itself is committed the same
// way unless the madvise tier maps its file there (the uffd tier registers it as it is: the
// registration holds across the commits).  Under the depot lock.
struct LazyPart {
  size_t offset;             // bytes from g_region.meta to the part's group 0
  uint32_t bytes_per_group;
};
LazyPart g_lazy[4];
unsigned g_lazy_parts;
bool g_lazy_data;            // the region's pages are committed here too
uint32_t g_committed_pages;  // region pages (a multiple of kGroupPages) whose structures are committed
uint32_t g_data_committed;   // g_lazy_data: the region's own pages committed, [0, this); below
                             // g_committed_pages after heap_release_commit gave the tail back
constexpr uint32_t kCommitMin = 1024;    // pages committed at least at a time (4 MiB of slabs)
constexpr uint32_t kCommitMax = 16384;   // and at most ahead of the need (64 MiB)

// Commit the structures of [g_committed_pages, to), and the region's pages of [g_data_committed,
// to).  (A refusal half way leaves some committed: harmless, the next attempt commits them again.)
bool commit_range(uint64_t to) {
  if (to > g_committed_pages) {
    uint64_t g0 = g_committed_pages / kGroupPages, g1 = to / kGroupPages;
    char *meta = reinterpret_cast<char *>(g_region.meta);
    for (size_t mirror : {size_t(0), g_region.mirror})
      for (unsigned i = 0; i < (mirror ? 1 : g_lazy_parts); ++i)   // (mirrored: the lines, as RemoteState)
        if (!os_commit(meta + mirror + g_lazy[i].offset + g0 * g_lazy[i].bytes_per_group,
                       (g1 - g0) * g_lazy[i].bytes_per_group))
          return false;
    if (!pool_commit(pool_chunks_for(g0), pool_chunks_for(g1))) return false;   // (and their mirror)
  }
  if (g_lazy_data && to > g_data_committed &&
      !os_commit(g_region.base + size_t(g_data_committed) * kPageSize, size_t(to - g_data_committed) * kPageSize))
    return false;
  if (to > g_committed_pages) g_committed_pages = uint32_t(to);
  if (to > g_data_committed) g_data_committed = uint32_t(to);
  return true;
}

// Commit the structures of the pages below `need` (a multiple of kGroupPages), and as much again
// ahead (4 to 64 MiB of slabs; up to `limit`), or only what is needed if the OS refuses that.
// False when it refuses even that: the caller treats the region as full from there.
bool commit_to(uint32_t need, uint32_t limit) {
  if (need <= g_committed_pages && (!g_lazy_data || need <= g_data_committed)) return true;
  uint64_t ahead = g_committed_pages < kCommitMin ? kCommitMin : g_committed_pages > kCommitMax ? kCommitMax : g_committed_pages;
  uint64_t to = uint64_t(g_committed_pages) + ahead;
  // Only the region's pages are behind (decommit_clean gave the tail back): up to where the
  // structures are, no step beyond (a step from there after every trim under a limit went 64 MiB
  // further each time: VmData 1 GB for 42 MiB live, helper-96's review).
  if (need <= g_committed_pages) to = g_committed_pages;
  if (to < need) to = need;
  to = (to + kGroupPages - 1) & ~uint64_t(kGroupPages - 1);
  if (to > limit) to = limit;
  if (to < need) return false;
  return commit_range(to) || (to > need && commit_range(need));
}

// A never-used group from the bump pointer (its head page), or kNil when the region is full.
// ZNS_SECURE: the first group of every kGuardGroup pages is never used and its first page is an
// inaccessible guard, so an overflow off a slab meets a guard within three groups.  The guard at
// the end of a block of kGuardGroup pages is made when the bump pointer enters the block, before
// any slab in it, so that the newest slab is covered too.  Under the depot lock.
uint32_t bump_take() {
  uint32_t b = g_depot.bump, limit = g_region.pages;
  static_assert(kGuardGroup % kGroupPages == 0);
  if (g_secure) {
    limit -= kGroupPages;   // the region's last group is a guard (region_init)
    if (b % kGuardGroup == 0) {
      if (uint64_t(b) + 2 * kGroupPages > limit) return kNil;
      // (committed before the guards are made: a later commit starts above them)
      uint64_t need = uint64_t(b) + kGuardGroup + kGroupPages;
      if (!commit_to(uint32_t(need < limit ? need : limit), limit)) return kNil;
      if (b == 0) make_guard(0);
      if (uint64_t(b) + kGuardGroup < limit) make_guard(b + kGuardGroup);
      b += kGroupPages;
    }
  }
  if (uint64_t(b) + kGroupPages > limit) return kNil;
  if (!commit_to(b + kGroupPages, limit)) return kNil;
  __atomic_store_n(&g_depot.bump, b + kGroupPages, __ATOMIC_RELEASE);   // the tier scans below it
  return b;
}

// ---- commit given back ---------------------------------------------------------------------------
// Under a data limit (RLIMIT_DATA, `ulimit -d`) or the kernel's strict accounting
// (vm.overcommit_memory=2) what counts is what is committed, resident or not, and a purge gives
// pages back, not commit: after a big heap was freed and trimmed, the next allocator's large
// request could be refused (helper-93, 2026-12-07: a 256 MiB data limit, 150k blocks of 1000 B
// freed and trimmed, then malloc(200 MiB): glibc and mimalloc served it; jemalloc, tcmalloc and
// this heap refused it).  So the commit of empty groups can go back too (decommit_clean): every
// clean group's pages (all kGroupPages: a clean group holds nothing) become a new inaccessible
// mapping, no charge and no VmData, and so do the pages committed ahead above the bump pointer.
// malloc_trim does it where a limit is in force (commit_limited), and the shim does it when the
// next allocator is refused (heap_release_commit, then it asks once more).
//
// A decommitted group keeps its line (mark kDecommitMark, its span in `pages`, still counted in
// clean_pages) and lies in a *run* of adjacent ones: the list Depot.decommit_head holds each
// run's first group, whose `stamp` is the run's length in groups.  depot_take takes the first
// group of a run after the clean lists and before the bump pointer, and commits it again
// (mprotect: charged again; refused under the limit, it stays and the take goes on).  Runs lose
// groups at their left end only, so taking never splits one and each run is one hole of at most
// two map entries; a pass makes no new run past kMaxDecommitRuns (vm.max_map_count is 65530 by
// default, and the program needs entries too).  Only where the region's pages are committed on
// demand (g_lazy_data) and no tier maps or registers them (a new mapping would drop the uffd
// registration), nor under ZNS_SECURE (its guard pages lie among the groups).
constexpr uint8_t kDecommitMark = 4;            // SlabMeta.purged of a group of a decommitted run
constexpr uint32_t kMaxDecommitRuns = 4096;
bool g_strict_commit;                           // vm.overcommit_memory is 2 (region_init)

bool decommit_possible() { return g_lazy_data && g_tier_mode == kTierOff && !g_secure; }

// A data limit or strict accounting is in force, under which a request of `bytes` could be
// served once the heap's commit went back (no use for one above the data limit itself; under
// the default heuristic overcommit the heap's commit decides nothing).
bool commit_limited(size_t bytes = 0) {
  if (g_strict_commit) return true;
  struct { uint64_t cur, max; } data;
  return os_syscall(SYS_prlimit64, 0, RLIMIT_DATA, nullptr, &data) == 0 && data.cur != ~uint64_t(0) &&
         bytes < data.cur;
}

// The run list again, from the marks: each maximal run of decommitted groups below the bump
// pointer is one entry.  Under the depot lock.
void decommit_relist() {
  g_depot.decommit_head = kNil;
  g_depot.decommit_runs = 0;
  for (uint32_t p = 0, bump = g_depot.bump; p < bump;) {
    if (mark_of(p) != kDecommitMark) {
      p += kGroupPages;
      continue;
    }
    uint32_t q = p;
    while (q < bump && mark_of(q) == kDecommitMark) q += kGroupPages;
    SlabMeta &m = meta_at(p);
    list_push(g_depot.decommit_head, &m);
    m.stamp = (q - p) / kGroupPages;
    g_depot.decommit_runs++;
    p = q;
  }
}

// Give back the commit of every clean group, and of the pages committed above the bump pointer
// (never handed out).  Returns the pages.  Under the depot lock (a rare call: one mapping a run).
uint64_t decommit_clean() {
  uint64_t given = 0;
  uint32_t bump = g_depot.bump, runs = g_depot.decommit_runs;
  for (uint32_t p = 0; p < bump;) {
    if (mark_of(p) != kCleanMark) {
      p += kGroupPages;
      continue;
    }
    uint32_t q = p;
    while (q < bump && mark_of(q) == kCleanMark) q += kGroupPages;
    bool joins = (p > 0 && mark_of(p - kGroupPages) == kDecommitMark) || (q < bump && mark_of(q) == kDecommitMark);
    if (!joins && runs >= kMaxDecommitRuns) {
      p = q;
      continue;
    }
    if (!os_decommit(g_region.base + size_t(p) * kPageSize, size_t(q - p) * kPageSize)) break;   // (the map count)
    g_depot.decommit_calls++;
    for (uint32_t r = p; r < q; r += kGroupPages) {
      SlabMeta &m = meta_at(r);
      list_unlink(g_depot.clean_head[m.pages], &m);
      set_mark(m, kDecommitMark);
    }
    g_depot.decommitted_pages += q - p;
    given += q - p;
    runs += !joins;
    p = q;
  }
  if (g_data_committed > bump &&
      os_decommit(g_region.base + size_t(bump) * kPageSize, size_t(g_data_committed - bump) * kPageSize)) {
    g_depot.decommit_calls++;
    given += g_data_committed - bump;
    g_data_committed = bump;   // (commit_range commits from here again)
  }
  decommit_relist();
  return given;
}

// The first group of a decommitted run, committed again, or kNil (none, or the OS refused: the
// limit still holds).  Its pages read as zero.  Under the depot lock.
uint32_t decommit_pop() {
  uint32_t page = g_depot.decommit_head;
  if (page == kNil || !os_commit(g_region.base + size_t(page) * kPageSize, size_t(kGroupPages) * kPageSize))
    return kNil;
  SlabMeta &m = meta_at(page);
  uint32_t len = m.stamp;
  list_unlink(g_depot.decommit_head, &m);
  if (len > 1) {
    SlabMeta &rest = meta_at(page + kGroupPages);
    list_push(g_depot.decommit_head, &rest);
    rest.stamp = len - 1;
  } else {
    g_depot.decommit_runs--;
  }
  g_depot.decommitted_pages -= kGroupPages;
  g_depot.clean_pages -= m.pages;
  set_mark(m, 0);
  return page;
}

// A slab gets a new owner: the remote hint of its former life goes (it would send every free of
// the new owner to free_local_checked and past the bin's `last`), unless an inbox entry of that
// life is still in flight (`pending`: a former owner's drain, in tc_exit say, has yet to pass it
// on).  Until then a new freer's notify stops at `pending`, so the hint must stay up for the new
// owner's double-free checks and refills; the stale drain notifies the new owner.  Clear first,
// then look (both seq_cst): a drain that sets `pending` again after our look sets the hint after
// our clear.
void hint_reset(SlabMeta *s) {
  uint32_t page = page_of(s);
  s->remote_hint.store(0, std::memory_order_seq_cst);
  if (remote_written(page) && remote_at(page).pending.load(std::memory_order_seq_cst) != 0)
    s->remote_hint.store(1, std::memory_order_relaxed);
}

// An empty slab for class cls, owned by cache `owner` and made its current slab's shape.
// *fresh (if asked): its pages were never touched or were given back (they fault in as zeros).
SlabMeta *depot_take(unsigned cls, uint32_t owner, bool *fresh = nullptr) {
  if (ZNS_UNLIKELY(g_tier_mode == kTierMadvise) && tier_room_refused()) return nullptr;   // (the next allocator)
  const ClassInfo &ci = kClasses.info[cls];
  unsigned k = ci.pages;
  uint32_t page;
  unsigned had = k;            // the span of a dirty slab taken (dirty_take)
  bool due, missing = false, cross = false;   // missing: the pages were never touched or were purged
  unsigned node = current_node();
  {
    Guard g(g_depot_lock);
    uint32_t now = uint32_t(now_ms());
    g_depot.node_takes[node]++;
    if ((page = dirty_take(node, k, &had)) != kNil) {   // resident: of k pages, or another span
      missing = had < k;   // (its pages had.. were given back or never touched)
    } else if ((page = clean_pop(k)) != kNil) {         // purged: faults in as zero pages
      missing = true;
      set_node(page, node);
      // (a trim more than 2^30 ms ago is before any stamp in the window: now_ms() wraps)
      uint32_t stamp = meta_at(page).stamp;
      bool since_trim = now - g_depot.forget_ms > (1u << 30) || int32_t(stamp - g_depot.forget_ms) >= 0;
      if (now - stamp < refault_window() && since_trim && g_depot.refault_pages < g_depot.bump)
        g_depot.refault_pages += k;
    } else if ((page = decommit_pop()) != kNil) {       // its commit went back: zero pages
      missing = true;
      set_node(page, node);
    } else if ((page = bump_take()) != kNil) {           // never used
      missing = true;
      set_node(page, node);
    } else if ((page = depot_other(k, node, &missing, &cross)) == kNil) {  // the region is full
      g_depot.node_takes[node]--;
      return nullptr;
    }
    g_depot.slabs[cls]++;
    g_depot.owned_pages += k;
    if (g_depot.owned_pages > g_depot.owned_peak) g_depot.owned_peak = g_depot.owned_pages;
    bitmap_assign(meta_at(page), cls);
    due = purge_due(now);
  }
  if (had > k) tier_purge(g_region.base + size_t(page + k) * kPageSize, size_t(had - k) * kPageSize);
  if (due) depot_purge(false);
  if (fresh) *fresh = missing;
  // The tier makes the pages present (uffd) or reserves their room in the backing file (madvise);
  // when the file is full the span goes back and the request falls through.
  if (ZNS_UNLIKELY(g_tier_mode != kTierOff) && !tier_take(page, k, missing)) {
    // To the clean list, so its pages must hold nothing: a shorter dirty slab (depot_other) still
    // has its first pages resident (and their room in the file).
    tier_purge(g_region.base + size_t(page) * kPageSize, size_t(k) * kPageSize);
    Guard g(g_depot_lock);
    SlabMeta &m = meta_at(page);
    m.pages = uint8_t(k);
    clean_push(page, k, uint32_t(now_ms()) - refault_window());   // (not the cap's doing: no refault)
    g_depot.slabs[cls]--;
    g_depot.owned_pages -= k;
    g_depot.node_takes[node]--;
    if (cross) g_depot.cross_node_takes--;   // (the thread did not get it after all)
    return nullptr;
  }
  SlabMeta &m = meta_at(page);
  m.pages = uint8_t(k);
  // The slab may have served another class.
  __atomic_store_n(&m.cls, uint8_t(cls), __ATOMIC_RELAXED);      // shared_settle reads it racily
  __atomic_store_n(&m.blocks, ci.blocks, __ATOMIC_RELAXED);     // so do the scans
  m.size = ci.size;
  m.magic = ci.magic;
  m.state = kCurrent;
  m.credit = kCurrentCredit;
  __atomic_store_n(&m.out, uint16_t(0), __ATOMIC_RELAXED);   // shared_settle's cheap look reads it
  m.prev = m.next = kNil;
  std::atomic<uint64_t> *f = bits(&m), *rb = rbits(&m);
  for (unsigned w = 0, words = bitmap_words(ci.blocks); w < words; ++w) {
    unsigned lo = w * 64;
    uint64_t x = ci.blocks >= lo + 64 ? ~uint64_t(0) : (uint64_t(1) << (ci.blocks - lo)) - 1;
    f[w].store(x, std::memory_order_release);   // (see freed_in_bitmap)
    // Strays from an earlier life (of the slab or of the record) are dropped; never looked at
    // where no remote free ever came.
    if (mirror_page_written(mirror_page_index(rb + w)) && rb[w].load(std::memory_order_relaxed) != 0)
      rb[w].store(0, std::memory_order_relaxed);
  }
  hint_reset(&m);   // (no remote bit is set: an empty slab's were all merged)
  set_owner(&m, owner);
  return &m;
}

// An empty slab of k pages, on no list, to the head of the dirty list (newest first), stamped now.
// Under the depot lock.
void dirty_push(uint32_t page, unsigned k, uint32_t now) {
  SlabMeta &m = meta_at(page);
  unsigned node = node_of(page);
  m.stamp = now;
  m.prev = kNil;
  m.next = g_depot.dirty_head[node][k];
  if (m.next != kNil) meta_at(m.next).prev = page;
  else g_depot.dirty_tail[node][k] = page;
  g_depot.dirty_head[node][k] = page;
  g_depot.dirty_pages += k;
  g_depot.node_dirty_pages[node] += k;
}

// The owner hands back a slab with no block out.  It is on no list.  clean: its pages were given
// back already (a purged parked slab): it joins the clean list, and is made present again when taken.
void depot_release(SlabMeta *s, bool clean = false) {
  // A new life first, then the look at the remote bits: a stale buffered free (a double free)
  // that ORs before the step is seen below, one that looks after it sees the step (apply_remote).
  std::atomic<uint16_t> &life = g_region.life[s - g_region.meta];
  life.store(uint16_t(life.load(std::memory_order_relaxed) + 1), std::memory_order_seq_cst);
  std::atomic<uint64_t> *rb = rbits(s);
  bool remote = remote_written(page_of(s));   // (never written: nothing to look at)
  for (unsigned w = 0, words = words_of(s); w < words && remote; ++w) {
    uint64_t x = rb[w].load(std::memory_order_acquire);
    if (x) fatal("double free", "free", slab_base(s) + (w * 64 + __builtin_ctzll(x)) * s->size);
  }
  unsigned k = s->pages;
  s->state = kInDepot;
  set_owner(s, kNoOwner);
  uint32_t page = page_of(s);
  if (ZNS_UNLIKELY(g_tier_mode != kTierOff)) tier_release(page, k);   // its copy on the tier is void
  bool due;
  if (clean) {
    __atomic_store_n(&s->purged, uint8_t(0), __ATOMIC_RELAXED);
    Guard g(g_depot_lock);
    // (purged in place some time ago, maybe by malloc_trim: not counted as a refault either)
    clean_push(page, k, uint32_t(now_ms()) - refault_window());
    g_depot.slabs[s->cls]--;
    g_depot.owned_pages -= k;
    return;
  }
  {
    Guard g(g_depot_lock);
    uint32_t now = uint32_t(now_ms());
    dirty_push(page, k, now);
    g_depot.slabs[s->cls]--;
    g_depot.owned_pages -= k;
    due = purge_due(now);
  }
  if (due) depot_purge(false);
}

// ---- owner-side slab bookkeeping -----------------------------------------------------------------
// Merge remote frees into the owner's (or the claimer's) bitmap.  Returns how many came back.
unsigned merge_remote(SlabMeta *s) {
  if (!remote_written(page_of(s))) return 0;
  std::atomic<uint64_t> *fb = bits(s), *rb = rbits(s);
  unsigned n = 0;
  for (unsigned w = 0, words = words_of(s); w < words; ++w) {
    if (rb[w].load(std::memory_order_relaxed) == 0) continue;
    if (fb == full_bits()) fb = bits_install(s);
    uint64_t x = rb[w].exchange(0, std::memory_order_seq_cst);
    uint64_t f = fb[w].load(std::memory_order_relaxed);
    if (x & f) fatal("double free", "free", slab_base(s) + (w * 64 + __builtin_ctzll(x & f)) * s->size);
    fb[w].store(f | x, std::memory_order_relaxed);
    n += unsigned(__builtin_popcountll(x));
  }
  return n;
}

// A slab with free blocks is worth allocating from again (a shared slab adopted, a parked one
// unparked) once a sixteenth of its blocks are free, but not for fewer than 16 blocks (a refill
// costs about what 16 fast-path mallocs do), nor for more than a quarter of the slab: one rule
// for both (measured in DESIGN.md "Parked slabs").  Slabs of 64..256 blocks: 16; 16 B: 512 of
// 8192; 4096 B: 8 of 32.
constexpr unsigned reuse_worth(unsigned blocks) {
  unsigned sixteenth = (blocks + 15u) / 16, quarter = (blocks + 3u) / 4;
  return sixteenth > 16u ? sixteenth : quarter < 16u ? quarter : 16u;
}

// ---- shared slabs ----------------------------------------------------------------------------------
// A cache gives a slab up when it has no free block left (or when its thread exits).  From then on
// every free is a remote free; the freers notice when reuse_worth blocks are free (it joins the
// depot's list for its class, where a cache that needs a slab adopts it) and when all of it is
// free (it goes back to the depot as empty).  So memory freed by other threads never waits for
// the thread that allocated it.  `out` (blocks out when given up) is fixed while a slab is shared.

void shared_push(SlabMeta *s) {   // under the class lock
  uint32_t page = page_of(s), head = g_depot.shared_head[s->cls];
  s->prev = kNil;
  s->next = head;
  if (head != kNil) meta_at(head).prev = page;
  else g_depot.shared_tail[s->cls] = page;
  g_depot.shared_head[s->cls] = page;
}
void shared_unlink(SlabMeta *s) {   // under the class lock
  if (s->prev != kNil) meta_at(s->prev).next = s->next;
  else g_depot.shared_head[s->cls] = s->next;
  if (s->next != kNil) meta_at(s->next).prev = s->prev;
  else g_depot.shared_tail[s->cls] = s->prev;
  s->prev = s->next = kNil;
}

// (Racy: relinquish calls it once the slab is shared, when a freer may already have claimed it
// and it may have begun another life, its `blocks` of one and its bits of another: so never past
// the bits' own words, racy_words.  Counting words_of(s) read past a line's inline remote bits
// into the next group's RemoteState: a TSan report in tests/sanitize churn, 2026-12-07.)
unsigned remote_total(const SlabMeta *s) {
  if (!remote_written(page_of(s))) return 0;
  std::atomic<uint64_t> *rb = rbits(s);
  unsigned n = 0;
  for (unsigned w = 0, words = racy_words(s, rb); w < words; ++w)
    n += unsigned(__builtin_popcountll(rb[w].load(std::memory_order_seq_cst)));
  return n;
}

// Look at a shared slab after remote frees (or after it was given up): queue it or return it.
// A shared period ends only by a claim, under the class lock, so under that lock a slab seen
// idle or queued has a fixed `out` and remote bits that only grow: decide there.
// The cheap look before the lock counts the one remote word of a slab of up to 64 blocks; a larger
// one goes by RemoteState.shared_frees, never below the count of the slab's remote bits once
// every freer has counted its own (see relinquish): counting the bits instead took up to 128
// loads per free (400k random frees of an exited thread's 16 B blocks: 413 instructions each).
// Above it by a few at most (a free counted twice around relinquish), which only sends those
// frees to the lock, where the bits are counted.
void shared_settle(SlabMeta *s) {
  uint8_t st = s->share.load(std::memory_order_seq_cst);
  if (st != kSharedIdle && st != kSharedQueued) return;
  unsigned out = __atomic_load_n(&s->out, __ATOMIC_RELAXED);
  unsigned blocks = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED), worth = reuse_worth(blocks);
  unsigned total = blocks <= 64 ? unsigned(__builtin_popcountll(remote_word(s, 0, std::memory_order_seq_cst)))
                 : remote_written(page_of(s)) ? remote_at(page_of(s)).shared_frees.load(std::memory_order_seq_cst)
                                              : 0;
  if (total < out && (st != kSharedIdle || blocks - out + total < worth)) return;   // cheap look
  {
    // The slab may have been claimed, returned, taken for another class and given up again since
    // our look: then `cls` is not the class whose lock we hold, and our free belonged to a shared
    // period that is over (its claim counted it).  Check it once the state is read under the lock.
    unsigned cls = __atomic_load_n(&s->cls, __ATOMIC_RELAXED);
    Guard g(class_lock(cls));
    st = s->share.load(std::memory_order_acquire);   // pairs with relinquish's store: out, cls, links
    if (st != kSharedIdle && st != kSharedQueued) return;
    if (s->cls != cls) return;
    out = s->out;
    total = remote_total(s);
    if (total < out) {
      if (st == kSharedIdle && s->blocks - out + total >= worth) {
        s->share.store(kSharedQueued, std::memory_order_relaxed);
        shared_push(s);
      }
      return;
    }
    if (st == kSharedQueued) shared_unlink(s);   // every block that was out has come back
    g_shared_claims.fetch_add(1, std::memory_order_relaxed);   // (under the lock: see fork_child)
    s->share.store(kSharedClaimed, std::memory_order_relaxed);
  }
  merge_remote(s);
  if (free_count(s) != s->blocks) fatal("slab metadata corrupted (shared slab not empty)", "free", slab_base(s));
  s->share.store(kOwned, std::memory_order_relaxed);
  depot_release(s);
  g_shared_claims.fetch_sub(1, std::memory_order_release);
}

// The owner gives up a slab that is on none of the depot's lists.
void relinquish(SlabMeta *s) {
  s->state = kShared;
  s->prev = s->next = kNil;
  __atomic_store_n(&s->out, uint16_t(s->blocks - free_count(s)), __ATOMIC_RELAXED);   // unmerged remote frees count as out
  // share before owner: a freer that sees the new owner also sees a shared slab.  A freer that
  // still saw us as owner re-reads the owner after its bit is in (free_remote), and the look
  // below reads the bits after the owner changed (all seq_cst): one of the two sees the other.
  // shared_frees (slabs of more than 64 blocks): the freers that see the new owner count their
  // bits after their OR, we add the bits set before our count (which reads after the owner
  // changed), and a freer that saw us and then the new owner counts its own (apply_remote):
  // every bit is counted, some twice.
  // (A line never written reads 0 and stays unwritten: freers mark its page before they count.)
  RemoteState &r = remote_at(page_of(s));
  if (remote_written(page_of(s))) r.shared_frees.store(0, std::memory_order_relaxed);
  s->share.store(kSharedIdle, std::memory_order_seq_cst);
  set_owner(s, kSharedOwner);
  if (unsigned total = remote_total(s)) r.shared_frees.fetch_add(total, std::memory_order_seq_cst);
  shared_settle(s);
}

// A slab its cache lets go of (thread exit, a fork's salvage), on none of the lists: its remote
// frees merged, to the depot if none is out (clean if it was purged in place), else shared.
void give_up(SlabMeta *s) {
  merge_remote(s);
  if (free_count(s) == s->blocks) depot_release(s, s->purged);
  else relinquish(s);
}

// The end of a claim on a shared slab (counted in g_shared_claims, share kSharedClaimed) by a
// cache that adopts it: cache `owner` owns it, with every remote free so far merged.
void take_over(SlabMeta *s, uint32_t owner) {
  set_owner(s, owner);   // from here frees go to our inbox
  s->share.store(kOwned, std::memory_order_seq_cst);
  g_shared_claims.fetch_sub(1, std::memory_order_release);
  // The merge below takes every remote bit set so far (its exchanges order the reset before
  // them), and a freer that ORs after it sees us as owner and sets the hint when it notifies.
  hint_reset(s);
  merge_remote(s);
}

// A shared slab of class cls with free blocks, adopted by cache `owner` as its current slab.
SlabMeta *depot_adopt(unsigned cls, uint32_t owner) {
  SlabMeta *s;
  {
    Guard g(class_lock(cls));
    // The oldest queued slab: it has had the longest to collect frees, so it serves the most
    // mallocs per adoption.
    uint32_t page = g_depot.shared_tail[cls];
    if (page == kNil) return nullptr;
    // Prefer a slab that is in RAM: one paged out to the tier would fault straight back in.  And
    // one on this thread's NUMA node (a shared slab's node does not change: it is written only
    // while its group is in the depot), else the first in RAM: its free blocks are resident.
    if (ZNS_UNLIKELY(g_tier_mode != kTierOff || g_nodes > 1)) {
      unsigned node = current_node();
      uint32_t first = kNil;
      for (uint32_t p = page, n = 0; p != kNil && n < 8; p = meta_at(p).prev, ++n) {
        if (g_tier_mode != kTierOff && tier_is_out(p)) continue;
        if (first == kNil) first = p;
        if (node_of(p) == node) { first = p; break; }
      }
      if (first != kNil) page = first;
    }
    s = &meta_at(page);
    shared_unlink(s);
    g_shared_claims.fetch_add(1, std::memory_order_relaxed);   // (under the lock: see fork_child)
    meta_at(page).share.store(kSharedClaimed, std::memory_order_relaxed);
  }
  take_over(s, owner);
  s->state = kCurrent;
  s->credit = kCurrentCredit;
  return s;
}

ZNS_NOINLINE bool drain_inbox_taken(ThreadCache *tc, bool may_lock_pool);
// Merge the remote frees of the slabs on tc's inbox; false if it was empty (the look inline: a
// refill asks at every miss, and the inbox is mostly empty).
ZNS_INLINE bool drain_inbox(ThreadCache *tc, bool may_lock_pool) {
  return tc->inbox.load(std::memory_order_relaxed) != kNil && drain_inbox_taken(tc, may_lock_pool);
}
void parked_returned(ThreadCache *tc, SlabMeta *s, unsigned n);
void apply_remote(void *const *ps, const uint16_t *lives, unsigned n);
void flush_remote(ThreadCache *tc);

// Shared slabs whose settling (shared_settle: the class lock, maybe the depot's) a remote free
// left for later because this thread held one of the library's locks (t_guards): a signal
// handler's free of another thread's block that interrupted this thread inside a locked region
// would wait for its own lock for good (a stress review, 2026-12-06: 3 of 5 runs of a SIGUSR1
// storm hung).  Slots, not a list: the handler and the thread both change them, by exchange.
// The next slow path with no lock held settles them (settle_deferred).  With every slot taken a
// slab is left for the next free into it, or its claim, to settle (not seen: 8 frees into 8
// slabs in one locked region).
constexpr unsigned kDeferredSettles = 8;
__thread std::atomic<uint32_t> t_settle[kDeferredSettles] __attribute__((tls_model("initial-exec")));
__thread bool t_settle_any __attribute__((tls_model("initial-exec")));
void settle_later(const SlabMeta *s) {
  uint32_t page = page_of(s) + 1;   // (0 = empty)
  for (std::atomic<uint32_t> &slot : t_settle) {
    uint32_t empty = 0;
    if (slot.compare_exchange_strong(empty, page, std::memory_order_relaxed)) break;
  }
  t_settle_any = true;
}
// free_remote_plain's rare case: the buffer is full and its flush has not run (see there).
ZNS_NOINLINE void remote_full(ThreadCache *tc, void *p, uint16_t life) {
  void *one[1] = {p};
  apply_remote(one, &life, 1);
  if (t_guards == 0) flush_remote(tc);
}
ZNS_NOINLINE void settle_deferred() {
  t_settle_any = false;
  for (std::atomic<uint32_t> &slot : t_settle)
    if (uint32_t page = slot.exchange(0, std::memory_order_relaxed)) shared_settle(&meta_at(page - 1));
}

void drain_detached(ThreadCache *o) {
  Guard g(g_pool_lock);
  if (!o->attached.load(std::memory_order_seq_cst)) drain_inbox(o, false);
}

// Has slab s remote frees its owner has yet to merge, or its hint up?  (Its remote state was
// written: the caller found it on an inbox, or asked remote_written.)  Racy: s is another cache's
// (a stale inbox entry), so never past its bits' own words (racy_words; see remote_total).
bool remote_pending(const SlabMeta *s) {
  if (s->remote_hint.load(std::memory_order_relaxed)) return true;
  std::atomic<uint64_t> *rb = rbits(s);
  for (unsigned w = 0, words = racy_words(s, rb); w < words; ++w)
    if (rb[w].load(std::memory_order_relaxed) != 0) return true;
  return false;
}

// Queue the slab at `page` on its owner's inbox (once), so the owner merges its remote bits.
// Most calls find it queued already (a consumer's flush: 96% in bench prodcons): that look is
// inline, the queueing is not.
ZNS_NOINLINE void notify_queue(uint32_t page, uint32_t owner, bool may_lock_pool);
// (owner: the owning cache's index, or SlabMeta.owner as read: owner_cache keeps an index as is)
ZNS_INLINE void notify(const SlabMeta *s, const RemoteState &r, uint32_t owner, bool may_lock_pool) {
  // Already queued: the owner's drain clears `pending` before it merges, so a freer that still
  // reads 1 after its OR (both seq_cst) is merged by that drain.  The load spares the RMW.
  if (r.pending.load(std::memory_order_seq_cst) != 0) return;
  notify_queue(page_of(s), owner_cache(owner), may_lock_pool);
}
ZNS_INLINE void notify(uint32_t page, uint32_t owner, bool may_lock_pool) {
  notify(&meta_at(page), remote_at(page), owner, may_lock_pool);
}
void notify_queue(uint32_t page, uint32_t owner, bool may_lock_pool) {
  RemoteState &r = remote_at(page);
  // From `pending` to the push the slab is on no inbox: a fork in between must know (fork_child).
  g_inbox_ops.fetch_add(1, std::memory_order_seq_cst);
  if (r.pending.exchange(1, std::memory_order_seq_cst) != 0) {
    g_inbox_ops.fetch_sub(1, std::memory_order_release);
    return;
  }
  // Tell the owner's free fast path to look at the remote bits too (double-free detection).
  // (seq_cst: ordered after a new owner's hint_reset, whose clear is seq_cst too.)
  meta_at(page).remote_hint.store(1, std::memory_order_seq_cst);
  ThreadCache *o = g_caches[owner];
  uint32_t head = o->inbox.load(std::memory_order_relaxed);
  do {
    r.inbox_next = head;
  } while (!o->inbox.compare_exchange_weak(head, page, std::memory_order_seq_cst,
                                           std::memory_order_relaxed));
  g_inbox_ops.fetch_sub(1, std::memory_order_release);
  // A detached cache has no thread to drain it: do it here (see tc_exit for the other half).
  if (may_lock_pool && !o->attached.load(std::memory_order_seq_cst)) drain_detached(o);
}

bool drain_inbox_taken(ThreadCache *tc, bool may_lock_pool) {   // (drain_inbox looked: not empty)
  // The list taken below is on no inbox until every entry's `pending` is cleared (fork_child).
  g_inbox_ops.fetch_add(1, std::memory_order_seq_cst);
  uint32_t page = tc->inbox.exchange(kNil, std::memory_order_seq_cst);
  while (page != kNil) {
    RemoteState &r = remote_at(page);
    uint32_t next = r.inbox_next;                          // read before pending is released
    SlabMeta *s = &meta_at(page);
    uint32_t owner = owner_cache(s->owner.load(std::memory_order_acquire));
    // Ours: clear the hint before pending, so a remote free after our merge sets it again.
    if (owner == tc->id) s->remote_hint.store(0, std::memory_order_relaxed);
    r.pending.store(0, std::memory_order_seq_cst);
    if (owner == tc->id) {
      unsigned n = merge_remote(s);   // a current slab stays, even empty; a parked one may go
      if (n && (s->state == kParkedFull || s->state == kParkedPartial)) parked_returned(tc, s, n);
    } else if (owner != kNoOwner && owner != kSharedOwner) {    // stale entry: the slab changed hands
      // Pass it on to the new owner if it has remote bits, or if its hint is up (hint_reset kept
      // it while this entry was in flight): the new owner's drain then clears it.
      if (remote_pending(s)) notify(page, owner, may_lock_pool);
    }
    page = next;
  }
  g_inbox_ops.fetch_sub(1, std::memory_order_release);
  return true;
}

// The `last` slot of a class on or off, decided at the class's misses (alloc_slow: the bin's word
// ran out) from what the slot served since the last look.  The slot makes a malloc+free pair
// cheap, but in a stream of mixed sizes (a churn) it holds a block at about half of a class's
// mallocs and is empty at about half of its frees, at random: the fast paths' two tests on it
// then mispredict about once per malloc+free (cachegrind: 1.02 of 1.19 per op in a 16..4096 B
// churn).  Off, both tests always go the same way (a free sets its bit, a malloc takes the
// word).  So: after at least kSlotWindow mallocs of the class, if the slot served between a
// quarter and three quarters of them, it goes off; while off, it comes on again to look after
// kSlotWindow << backoff mallocs, the backoff growing each time the look says off (up to
// kSlotMaxBackoff), and after 65535 frees into one current slab (credit_out: a pair loop never
// misses, so it would never be looked at).  A slot that serves nearly all (a pair, or redis's
// frees and mallocs of the same classes) or nearly none (a batch) stays on: its tests predict.
// Nothing on the fast paths: a malloc from the slot counts in slot_count, one from a word in
// alloc_count (the stats add them).  At a miss the slot is empty (malloc takes it first), so
// turning it off is one store; a compare-exchange all the same (a signal handler's free may
// have filled it: then it stays on this time).
constexpr uint32_t kSlotWindow = 64;
constexpr uint8_t kSlotMaxBackoff = 6;

// The counts now: the next look judges the mallocs from here on.
void slot_mark(ThreadCache *tc, unsigned cls) {
  tc->slot_policy[cls].mark_word = uint32_t(tc->alloc_count[cls]);
  tc->slot_policy[cls].mark_slot = uint32_t(tc->slot_count[cls]);
}

// A cache that goes to the pool (thread exit, a fork's child): every slot on, the marks at the
// counts (they keep counting across threads: marks at 0 would judge the whole history).
void slot_reset(ThreadCache *tc, unsigned cls) {
  __atomic_store_n(&tc->last[cls], nullptr, __ATOMIC_RELAXED);
  tc->slot_policy[cls] = SlotPolicy{};
  slot_mark(tc, cls);
}

void slot_on(ThreadCache *tc, unsigned cls) {
  void *off = slot_off();
  if (__atomic_compare_exchange_n(&tc->last[cls], &off, nullptr, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    slot_mark(tc, cls);
    tc->slot_policy[cls].probing = 1;
  }
}

ZNS_INLINE void slot_policy(ThreadCache *tc, unsigned cls) {
  SlotPolicy &sp = tc->slot_policy[cls];
  uint32_t words = uint32_t(tc->alloc_count[cls]) - sp.mark_word;
  if (__atomic_load_n(&tc->last[cls], __ATOMIC_RELAXED) == slot_off()) {
    if (words >= kSlotWindow << sp.backoff) slot_on(tc, cls);
    return;
  }
  uint32_t slot = uint32_t(tc->slot_count[cls]) - sp.mark_slot;
  uint64_t n = uint64_t(words) + slot;
  if (n < kSlotWindow) return;
  slot_mark(tc, cls);
  bool mixed = uint64_t(slot) * 4 >= n && uint64_t(slot) * 4 <= n * 3;
  void *empty = nullptr;
  if (mixed && __atomic_compare_exchange_n(&tc->last[cls], &empty, slot_off(), false, __ATOMIC_RELAXED,
                                           __ATOMIC_RELAXED)) {
    if (sp.probing && sp.backoff < kSlotMaxBackoff) sp.backoff++;
  } else if (!mixed) {
    sp.backoff = 0;
  }
  sp.probing = 0;
}

// Put the bin's `last` block back into its slab's bitmap (before anyone else looks at the slab):
// the current slab or one of the cache's parked ones, whose credit it counts.  (The look inline:
// at a refill the slot is empty but for the orphan cache's.)
ZNS_NOINLINE void flush_last_block(ThreadCache *tc, Bin b);
ZNS_INLINE void flush_last(ThreadCache *tc, Bin b) {
  if (slot_holds(b.last)) flush_last_block(tc, b);
}
void flush_last_block(ThreadCache *tc, Bin b) {
  SlabMeta *s = head_meta(b.last);
  int i = block_index(s, b.last);
  bits(s)[unsigned(i) >> 6].fetch_or(uint64_t(1) << (i & 63), std::memory_order_relaxed);
  __atomic_store_n(&b.last, nullptr, __ATOMIC_RELAXED);
  if (--s->credit == 0) credit_out(tc, s);
}

// Point a bin at the first bitmap word of s with a free block; false if there is none.  (The step
// from an exhausted cursor word to the next one of the same slab is alloc_slow's own scan.)
ZNS_INLINE bool bin_point(Bin b, SlabMeta *s) {
  std::atomic<uint64_t> *f = bits(s);
  if (f == full_bits()) return false;   // a full slab (a current one always has a record)
  for (unsigned w = 0, words = words_of(s); w < words; ++w)
    if (f[w].load(std::memory_order_relaxed)) {
      // The no-slab word first and the new word last (as alloc_step does): a signal handler's
      // malloc in between must not pair a word with another's base (GCC stored the word before
      // the base: a handler's fast path handed out 0x1000 after bin_clear, helper-99's storm).
      b.word = &g_zero_word;
      std::atomic_signal_fence(std::memory_order_seq_cst);
      b.size = s->size;
      b.base = slab_base(s) + size_t(w) * 64 * s->size;
      std::atomic_signal_fence(std::memory_order_seq_cst);
      b.word = &f[w];
      return true;
    }
  return false;
}

// The entries of tc's buffer that are frees not yet applied: none while the buffer is being
// applied (a signal handler's look then: applied entries may be live blocks again).
inline unsigned buffered(const ThreadCache *tc) { return tc->in_remote == kFlushing ? 0 : tc->remote_count; }

// A free of a block in a slab this thread does not own.  Validated now (the message names the
// call), applied in batches: consecutive frees into one bitmap word cost one atomic OR.
ThreadCache *thread_attach();
bool adopt_on_free(ThreadCache *tc, SlabMeta *s, void *p, unsigned cls, uint16_t life, const char *call);
ZNS_NOINLINE void free_remote_general(void *p, SlabMeta *s, const char *call);
// Append a free (p, of its slab's life `life`) to tc's remote buffer: `in_remote` is kAppending
// meanwhile (a signal handler's free in between applies its block at once, see free_remote_general),
// and the entry is stored before the count that covers it (a fork's child applies what the count
// covers: fork_child).  The entries now, or 0 when the buffer was full (nothing changed).
ZNS_INLINE unsigned remote_append(ThreadCache *tc, void *p, uint16_t life) {
  tc->in_remote = kAppending;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  unsigned k = tc->remote_count;
  if (ZNS_UNLIKELY(k >= kRemoteBuffer)) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
    tc->in_remote = 0;
    return 0;
  }
  tc->remote_life[k] = life;
  tc->remote_buf[k] = p;
  __atomic_store_n(&tc->remote_count, k + 1, __ATOMIC_RELEASE);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  tc->in_remote = 0;
  return k + 1;
}
// The common case, kept lean (no frame, no call but the flush's tail call): a block of a slab a
// live cache owns, freed by a thread with a cache of its own that is not appending or applying
// (`in_remote`), the buffer not full, nothing suspect (its bit clear in the owner's bitmap, not the
// owner's `last`, not in this thread's buffer filter).  Anything else, or any doubt, goes to
// free_remote_general, which looks at everything again (and reports misuse).
void free_remote_plain(void *p, SlabMeta *s, const char *call) {
  uint32_t owner = s->owner.load(std::memory_order_acquire);
  ThreadCache *tc = t_cache;
  uint32_t off = uint32_t((uintptr_t(p) - uintptr_t(g_region.base)) & ((uintptr_t(1) << kGroupShift) - 1)), i;
  uintptr_t h = (uintptr_t(p) >> 4) ^ (uintptr_t(p) >> 12);
  uint64_t &seen = tc->remote_seen[(h >> 6) % kRemoteSeenWords], bit = uint64_t(1) << (h & 63);
  if (ZNS_UNLIKELY(owner - 1 >= kSharedOwner - 1 || tc->id == kSentinelId || (seen & bit) || tc->in_remote ||
                   !fast_index(s, off, &i)))
    return free_remote_general(p, s, call);
  std::atomic<uint64_t> *b = bits(s);
  if (ZNS_UNLIKELY(b != full_bits() && (b[i >> 6].load(std::memory_order_relaxed) & (uint64_t(1) << (i & 63)))))
    return free_remote_general(p, s, call);
  // (owner_cache(owner), knowing owner is a cache's id here: none of the special values)
  if (ZNS_UNLIKELY(__atomic_load_n(&g_caches[owner & ~kSecureBit]->last[s->cls], __ATOMIC_RELAXED) == p))
    return free_remote_general(p, s, call);
  seen |= bit;
  unsigned n = remote_append(tc, p, g_region.life[s - g_region.meta].load(std::memory_order_relaxed));
  if (ZNS_UNLIKELY(n == 0)) return free_remote_general(p, s, call);   // (full)
  if (ZNS_UNLIKELY(n == kRemoteBuffer) && t_guards == 0) flush_remote(tc);
}
void free_remote_general(void *p, SlabMeta *s, const char *call) {
  uint32_t owner = s->owner.load(std::memory_order_acquire);
  if (owner == kNoOwner) fatal("free of a block that is not allocated", call, p);
  int i = block_index(s, p);
  if (i < 0) fatal("free of a pointer that is not the start of a block", call, p);
  // Double frees are caught now when the block is free in the owner's bitmap or is its `last`,
  // or is already in this thread's buffer (a 4096-bit filter says when to look); the rest when
  // the buffer is applied.
  if (freed_in_bitmap(s, unsigned(i) >> 6, uint64_t(1) << (i & 63))) fatal(kFreeOfFree, call, p);
  if (owner != kSharedOwner && __atomic_load_n(&g_caches[owner_cache(owner)]->last[s->cls], __ATOMIC_RELAXED) == p)
    fatal("double free", call, p);
  ThreadCache *tc = t_cache;
  // The slab's life now: while p is out it cannot change (depot_release steps it), so a change
  // seen later means p was freed twice (apply_remote, adopt_on_free).
  uint16_t life = g_region.life[s - g_region.meta].load(std::memory_order_relaxed);
  // A thread that only frees (a consumer) gets a cache once it has freed kRemoteBuffer blocks, so
  // that its frees are batched (prodcons: 58 -> 44 ns per op); before that, and past its cache's
  // hand-back, each free is applied at once: a thread that frees a few blocks and goes idle does
  // not hold them in a buffer (where a double free of them would go unseen).
  if (ZNS_UNLIKELY(tc->id == kSentinelId) &&
      (tc != &g_empty_cache || ++t_cacheless_frees <= kRemoteBuffer || t_guards != 0 || !(tc = thread_attach()))) {
    void *one[1] = {p};
    return apply_remote(one, &life, 1);
  }
  uintptr_t h = (uintptr_t(p) >> 4) ^ (uintptr_t(p) >> 12);
  uint64_t &seen = tc->remote_seen[(h >> 6) % kRemoteSeenWords], bit = uint64_t(1) << (h & 63);
  if (seen & bit)
    for (unsigned k = 0, n = buffered(tc); k < n; ++k)
      if (tc->remote_buf[k] == p) fatal("double free", call, p);
  // A shared slab (its owner gave it up) of a class this thread allocates: take it over, so that
  // this free and the next ones into it are the owner's (see adopt_on_free).  (After the look at
  // the buffer: the take-over applies it.)
  unsigned cls = s->cls;
  // (Not from a signal handler's free while the buffer changes: it could not apply it.  Nor in a
  // slow path or under a lock of this thread: adopt_on_free says no.)
  if (owner == kSharedOwner && tc->word[cls] != &g_zero_word && !(tc->adopt_off[cls / 64] >> (cls % 64) & 1) &&
      !tc->in_remote) {
    if (adopt_on_free(tc, s, p, cls, life, call)) return;   // (and p freed)
    // Ours after a failed attempt: a signal handler's free took it over meanwhile.  No block of a
    // slab this thread owns may wait in its buffer: usable_size relies on it.
    if (s->owner.load(std::memory_order_relaxed) == tc->id &&
        g_region.life[s - g_region.meta].load(std::memory_order_relaxed) == life)
      return dealloc(p, call);
  }
  // While this thread appends to its buffer or applies it (`in_remote`), a signal handler's free
  // on it is applied at once, and a handler's flush (a refill, a trim) leaves the buffer alone:
  // appended, or flushed, midway, the buffer's entries were lost or applied twice (a false
  // "double free"; two helper reviews, a SIGUSR1 storm and gdb standing in for the handler).
  if (ZNS_UNLIKELY(tc->in_remote)) {
    void *one[1] = {p};
    return apply_remote(one, &life, 1);
  }
  seen |= bit;
  // Full, its flush not run: a signal handler's free between the thread's append and its flush
  // (below), or a buffer filled under one of the library's locks, which is not flushed there (the
  // flush may lock).  This free is applied at once, and the buffer flushed if no lock is held (a
  // handler's flush leaves the thread's an empty buffer).  Until 2026-12-06 a handler's free in
  // that window appended at index 64, past the buffer, and the next flush overran apply_remote's
  // arrays (a stress review: SIGSEGV in 5 of 5 runs, tests/stress/remote_buffer part 3).
  unsigned n = remote_append(tc, p, life);
  if (ZNS_UNLIKELY(n == 0)) return remote_full(tc, p, life);
  if (n == kRemoteBuffer && t_guards == 0) flush_remote(tc);
}

// ---- ZNS_SECURE ------------------------------------------------------------------------------------
// In this mode the bins stay empty, so every malloc comes here (secure_alloc) and, since owner
// values carry kSecureBit, every free goes to free_remote and on to secure_free.  Invariant: every
// byte of the region that is not in a live block is zero, except the mark word of a block in a
// quarantine.  So a block is checked for zeros when it is handed out (a write after free since its
// release is caught there) and when it leaves the quarantine (a write during it is caught there).

uint64_t rng_next(ThreadCache *tc) { return xorshift_next(&tc->rng); }

// The first word of a quarantined block: its address under the process secret, so that a live
// block cannot look quarantined by accident (and a hostile one only by knowing the secret).
uint64_t quarantine_mark(const void *p) { return uint64_t(uintptr_t(p)) ^ g_secret; }

bool words_zero(const uint64_t *w, size_t n) {   // n words (one, for an 8 B block)
  typedef uint64_t v2 __attribute__((vector_size(16), aligned(8)));   // (unaligned loads are fine)
  v2 a = {0, 0}, b = {0, 0};
  size_t k = 0;
  for (; k + 4 <= n; k += 4) {   // 32 bytes a step, two accumulators
    a |= *reinterpret_cast<const v2 *>(w + k);
    b |= *reinterpret_cast<const v2 *>(w + k + 2);
  }
  a |= b;
  uint64_t r = a[0] | a[1];
  for (; k < n; ++k) r |= w[k];
  return r == 0;
}

void *secure_alloc(ThreadCache *tc, unsigned cls) {
  if (tc->remote_count) flush_remote(tc);
  SlabMeta *s = tc->secure_slab[cls];
  for (;;) {
    if (s) {
      int i = take_random_slot(s, &tc->rng);
      if (i < 0 && merge_remote(s)) i = take_random_slot(s, &tc->rng);
      if (i < 0) {
        drain_inbox(tc, true);
        i = take_random_slot(s, &tc->rng);
      }
      if (i >= 0) {
        char *p = slab_base(s) + size_t(i) * s->size;
        if (!words_zero(reinterpret_cast<const uint64_t *>(p), s->size / 8))
          fatal("write after free of a block", "malloc", p);
        tc->alloc_count[cls]++;
        return p;
      }
      tc->secure_slab[cls] = nullptr;   // before it is shared (see refill_and_alloc)
      relinquish(s);
    }
    if (!(s = depot_adopt(cls, tc->id)) && !(s = depot_take(cls, tc->id))) return nullptr;
    tc->secure_slab[cls] = s;
  }
}

// A block leaves a quarantine: checked (mark intact, zeros elsewhere), unmarked, then freed for
// real: a local free when cache `tc` owns its slab, else a remote free by the calling thread.
void secure_release(ThreadCache *tc, void *q) {
  SlabMeta *s = head_meta(q);
  uint64_t *w = static_cast<uint64_t *>(q);
  if (w[0] != quarantine_mark(q)) fatal("write after free of a block", "free", q);
  w[0] = 0;
  if (!words_zero(w, s->size / 8)) fatal("write after free of a block", "free", q);
  if (tc->id != kSentinelId && owner_cache(s->owner.load(std::memory_order_acquire)) == tc->id)
    return free_local_checked(q, s, "free");
  free_remote_plain(q, s, "free");
}

void secure_drain(ThreadCache *tc) {   // release a cache's whole quarantine
  unsigned n = tc->quar_count;
  tc->quar_count = 0;
  for (unsigned k = 0; k < n; ++k) secure_release(tc, tc->quar[k]);
}

// `quarantine`: false for a thread without a cache, and for a free that interrupted this thread's
// own work on its cache (a signal handler's, while the thread was inside a free, a refill, an
// attach or its exit: busy).  That free may have
// come between the thread's read and write of the quarantine's count or of a slot it chose: its
// entry would be overwritten, or the same older entry released twice ("write after free" aborts,
// a stress review, 2026-12-07).  So it is checked and marked like any other, and released at once.
void secure_free(void *p, SlabMeta *s, const char *call, bool quarantine) {
  uint32_t owner = s->owner.load(std::memory_order_acquire);
  if (owner == kNoOwner) fatal("free of a block that is not allocated", call, p);
  int i = block_index(s, p);
  if (i < 0) fatal("free of a pointer that is not the start of a block", call, p);
  uint64_t bit = uint64_t(1) << (i & 63);
  if (bits(s)[unsigned(i) >> 6].load(std::memory_order_relaxed) & bit) fatal(kFreeOfFree, call, p);
  if (remote_word(s, unsigned(i) >> 6, std::memory_order_relaxed) & bit) fatal("double free", call, p);
  uint64_t *w = static_cast<uint64_t *>(p);
  if (w[0] == quarantine_mark(p)) fatal("double free", call, p);   // in some thread's quarantine
  memset(p, 0, s->size);
  w[0] = quarantine_mark(p);
  ThreadCache *tc = t_cache;
  if (!quarantine) return secure_release(tc, p);
  if (tc->quar_count < kQuarantine) {
    tc->quar[tc->quar_count++] = p;
    return;
  }
  // Full: a random older entry leaves, so how long a block waits is not predictable either.
  unsigned j = unsigned(rng_next(tc) % kQuarantine);
  void *old = tc->quar[j];
  tc->quar[j] = p;
  secure_release(tc, old);
}

// ---- parked slabs (see kCurrentCredit) --------------------------------------------------------------
// Only the owner's thread changes its parked slabs' bits, counts, state and lists (or, for a cache
// whose thread is gone, whoever holds g_pool_lock: see drain_detached).  Other threads only claim
// one (CAS of RemoteState.share from kParkedIdle to kSharedClaimed): the tier to write it out,
// parked_purge to give a complete one's pages back; the owner takes a slab back (kParkedIdle ->
// kOwned) before it unparks or releases it, and skips it while it is claimed.
// The partial list of a class: FIFO (a slab that waited longest has had the most frees since it
// joined, so a refill that takes it serves the most mallocs before the next one).
void partial_append(ThreadCache *tc, SlabMeta *s) {
  unsigned c = s->cls;
  uint32_t page = page_of(s), tail = tc->partial_tail[c];
  s->next = kNil;
  s->prev = tail;
  if (tail != kNil) meta_at(tail).next = page;
  else tc->partial[c] = page;
  tc->partial_tail[c] = page;
}
void partial_unlink(ThreadCache *tc, SlabMeta *s) {
  if (s->next == kNil) tc->partial_tail[s->cls] = s->prev;
  list_unlink(tc->partial[s->cls], s);
}

// The current slab has no free block: park it (full) until reuse_worth blocks are free.  Remote frees
// not merged yet count as out (they come back through parked_returned).
void park(ThreadCache *tc, SlabMeta *s) {
  unsigned free = bits_release(s), worth = reuse_worth(s->blocks);   // (free_count)
  s->credit = uint16_t(free < worth ? worth - free : 1);
  s->state = kParkedFull;
  list_push(tc->full[s->cls], s);
  s->share.store(kParkedIdle, std::memory_order_release);   // tier: claimable
}

// Take a parked slab back from the tier's reach; false while the tier has it claimed.
bool parked_take_back(SlabMeta *s) {
  uint8_t expected = kParkedIdle;
  return s->share.compare_exchange_strong(expected, kOwned, std::memory_order_acq_rel);
}

// The partial slab of cls that has waited longest becomes current again, or null.  Skipped: one the
// tier is writing out, and (when there is another) one it has paged out.
SlabMeta *unpark(ThreadCache *tc, unsigned cls) {
  uint32_t page = tc->partial[cls];
  if (ZNS_UNLIKELY(g_tier_mode != kTierOff))
    for (uint32_t p = page, n = 0; p != kNil && n < 4; p = meta_at(p).next, ++n)
      if (!tier_is_out(p)) { page = p; break; }
  for (unsigned n = 0; page != kNil && n < 4;) {
    SlabMeta *s = &meta_at(page);
    uint32_t next = s->next;
    if (!parked_take_back(s)) { page = next; ++n; continue; }
    partial_unlink(tc, s);
    if (s->purged) {   // its pages went back to the OS (all free): present them again, like a
      merge_remote(s); // fresh slab (the tier populates or reserves file room), or let it go
      if (ZNS_UNLIKELY(g_tier_mode != kTierOff) && !tier_take(page, s->pages, true)) {
        depot_release(s, true);
        page = next;
        continue;
      }
      __atomic_store_n(&s->purged, uint8_t(0), __ATOMIC_RELAXED);
    }
    s->state = kCurrent;
    s->credit = kCurrentCredit;
    return s;
  }
  return nullptr;
}

// n remote frees of parked slab s were merged: they count against its credit like the owner's own.
void parked_returned(ThreadCache *tc, SlabMeta *s, unsigned n) {
  if (n < s->credit) {
    s->credit = uint16_t(s->credit - n);
    return;
  }
  s->credit = 0;
  credit_out(tc, s);
}

// The owner's free of block p (index i) of slab s, whose bitmap is a record or inline bits (not
// kFullBits), through the bitmap with the checks the fast path cannot make: not free, not freed
// remotely (unmerged), not the bin's `last`; counted against the slab's credit.
void free_bit(ThreadCache *tc, SlabMeta *s, void *p, uint32_t i, const char *call) {
  std::atomic<uint64_t> *wp = bits(s) + (i >> 6);
  uint64_t bit = uint64_t(1) << (i & 63), word = wp->load(std::memory_order_relaxed);
  if (word & bit) fatal(kFreeOfFree, call, p);
  if (remote_word(s, i >> 6, std::memory_order_seq_cst) & bit) fatal("double free", call, p);
  if (tc->last[s->cls] == p) fatal("double free", call, p);
  wp->store(word | bit, std::memory_order_relaxed);
  if (--s->credit == 0) credit_out(tc, s);
}

// A free of block p of shared slab s (of class cls, in its life `life` when p was checked) by a
// thread that has a current slab of its class (it allocates the class, and will reuse s as it
// does its own parked slabs): the thread's cache takes s over as a parked slab, and p is freed
// locally.  A thread that frees the blocks of an exited one pays one claim per slab instead of a
// remote free per block.  Not while the cache has kAdoptReserve partly free slabs of the class
// parked, counted after its inbox is drained (slabs it took over full and others freed into since
// are partly free too): a thread that keeps some of the blocks it frees, or whose slabs others
// free into, would otherwise gather partly free slabs that only its own refills reuse (a
// long-lived consumer of short-lived producers that keeps a tenth of their blocks grew by 640 KiB
// per producer), where shared ones serve any thread's refill; so it takes over the slabs of one
// burst of frees at most (they are parked full when it starts) until its refills use them up.
// False, p not freed, when s is no longer shared and idle or queued in that life (adopted, on its
// way back to the depot or gone there: then p was freed twice, and the buffered entry's life says
// so when it is applied; claimed by the tier).
// p goes into the bitmap, not the bin's `last` slot: a free of p buffered by another thread before
// the slab was shared (a double free) then finds its bit set when it is applied, where `last`
// would have handed p out again at once.  A signal handler's free into s between the take-over and
// the credit below is not counted: the slab then waits, all free, on the partial list until a
// refill takes it.
ZNS_NOINLINE bool adopt_on_free(ThreadCache *tc, SlabMeta *s, void *p, unsigned cls, uint16_t life,
                                const char *call) {
  // Not inside this thread's slow path (busy: it changes the lists the take-over changes) nor under
  // one of its locks (the take-over takes the class lock and may take the depot's): a signal
  // handler's free there deadlocked on the lock its thread held (a stress review, 2026-12-06).
  if (tc->busy || t_guards != 0) return false;
  SlowPath busy(tc);
  drain_inbox(tc, true);
  unsigned parked = 0;
  for (uint32_t q = tc->partial[cls]; q != kNil && parked < kAdoptReserve; q = meta_at(q).next) ++parked;
  if (parked == kAdoptReserve) {   // (until a refill of the class: each try cost a drain and a
    tc->adopt_off[cls / 64] |= uint64_t(1) << (cls % 64);   // walk, 18 against 10 ns a free)
    return false;   // (the buffer keeps batching: applied only for a take-over)
  }
  if (tc->remote_count) flush_remote(tc);   // no block of a slab we own is ever in our buffer
  {
    Guard g(class_lock(cls));
    if (s->owner.load(std::memory_order_seq_cst) != kSharedOwner || s->cls != cls ||
        g_region.life[s - g_region.meta].load(std::memory_order_relaxed) != life)
      return false;
    uint8_t st = s->share.load(std::memory_order_acquire);
    if (st != kSharedIdle && st != kSharedQueued) return false;
    if (st == kSharedQueued) shared_unlink(s);
    g_shared_claims.fetch_add(1, std::memory_order_relaxed);   // (under the lock: see fork_child)
    s->share.store(kSharedClaimed, std::memory_order_relaxed);
  }
  take_over(s, tc->id);
  s->prev = s->next = kNil;
  unsigned free = free_count(s), worth = reuse_worth(s->blocks);
  if (free >= worth) {   // as credit_out leaves a slab: on the partial list until none is out
    s->state = kParkedPartial;
    s->credit = uint16_t(s->blocks - free);   // (>= 1: p is out)
    partial_append(tc, s);
  } else {               // as park leaves one: on the full list until reuse_worth are free
    s->state = kParkedFull;
    s->credit = uint16_t(worth - free);
    list_push(tc->full[cls], s);
  }
  s->share.store(kParkedIdle, std::memory_order_release);   // tier: claimable
  if (bits(s) == full_bits()) bits_install(s);
  free_bit(tc, s, p, uint32_t(block_index(s, p)), call);   // (p was checked in this life: a block start)
  return true;
}

// Every block of parked slab s is free (free bits and remote bits cover it)?  Racy: a hint.  From
// another thread (apply_remote) s may have begun another life meanwhile, its `blocks` and its
// bitmap read from different ones: the bitmap is read once, and a line's own words never past
// kInlineWords (beyond them was the next slab's line before kMetaStride's padding: a TSan run
// caught the read of its `credit`).
bool parked_complete(const SlabMeta *s) {
  std::atomic<uint64_t> *b = bits(s), *rb = rbits_of(s, b);
  bool remote = remote_written(page_of(s));
  unsigned words = words_of(s), n = 0;
  if (b == s->inline_free && words > kInlineWords) return false;   // (another life's count)
  // Each bitmap's words bounded by what it holds (racy_words: a record of one life with the count
  // of another read past it; helper-89's review).  Fewer words than the count: not complete.
  unsigned fw = racy_words(s, b), rw = remote ? racy_words(s, rb) : 0;
  for (unsigned w = 0; w < words && (w < fw || w < rw); ++w)
    n += unsigned(__builtin_popcountll((w < fw ? racy_free_word(s, b, w) : 0) |
                                       (w < rw ? rb[w].load(std::memory_order_relaxed) : 0)));
  return n == __atomic_load_n(&s->blocks, __ATOMIC_RELAXED);
}

// Give the pages of a complete parked slab back to the OS in place, for an owner that is idle: the
// slab stays on its lists (only the owner touches those), marked purged; the owner presents it
// again when it unparks it, or releases it as clean.  Called by other threads (remote frees, trim)
// with a claim on the slab, as the tier takes one.  True if it purged.
bool parked_purge(SlabMeta *s) {
  // Counted while a claim may be held: a fork's child, where the claimer does not exist, gives
  // the claims back (fork_child); else the owner would wait for the slab forever (tc_exit).
  g_purge_claims.fetch_add(1, std::memory_order_seq_cst);
  uint8_t expected = kParkedIdle;
  bool ok = false;
  if (s->share.compare_exchange_strong(expected, kSharedClaimed, std::memory_order_acq_rel)) {
    // kParkedIdle means parked: the owner takes a slab back (to kOwned) before it unparks it.
    ok = !s->purged && parked_complete(s);   // with the claim held the owner cannot take a block from it
    if (ok) {
      tier_purge(slab_base(s), size_t(s->pages) * kPageSize);   // (madvise tier: a hole in the file)
      __atomic_store_n(&s->purged, uint8_t(1), __ATOMIC_RELAXED);   // (trim reads it racily)
    }
    s->share.store(kParkedIdle, std::memory_order_release);
  }
  g_purge_claims.fetch_sub(1, std::memory_order_release);
  return ok;
}

// The current slab of a class, whatever the mode.
SlabMeta *current_slab(ThreadCache *tc, unsigned c) {
  return g_secure ? tc->secure_slab[c] : bin_slab(bin_of(tc, c));
}

// Populating ahead (ThreadCache.fresh_end): the pages of the bin's word, and at least
// kPopulatePages from the first page not yet populated, in one madvise(MADV_POPULATE_WRITE)
// instead of a page fault each.  In this VM a fault costs 11.5 us a page, a populate call 6.4 us a
// page (6.7 for 4 pages, 7.7 for one).  Chunks of a word (or 16 KiB, for the small classes whose
// words span less) keep what is populated and not yet used to one word's span per class and
// thread (31 pages from 2 KiB up, where one word covers the slab): bench/memory's 1M blocks of
// 8 B leave their last slab mostly untouched.
constexpr size_t kPopulatePages = 4;
ZNS_NOINLINE void populate_ahead(ThreadCache *tc, Bin b, unsigned cls) {
  char *from = tc->fresh_end[cls];
  SlabMeta *s = head_meta(b.base);
  if (!g_populate.load(std::memory_order_relaxed) || g_tier_mode != kTierOff) from = nullptr;
  char *base = slab_base(s), *end = base + size_t(s->pages) * kPageSize;
  if (from < base || from >= end) {   // (another slab: not ours to populate)
    tc->fresh_end[cls] = nullptr;
    return;
  }
  char *to = b.base + 64 * size_t(b.size);
  if (to < from + kPopulatePages * kPageSize) to = from + kPopulatePages * kPageSize;
  to = reinterpret_cast<char *>((uintptr_t(to) + kPageSize - 1) & ~uintptr_t(kPageSize - 1));
  if (to > end) to = end;
  if (to <= from) return;
  if (!os_populate(from, size_t(to - from)))
    g_populate.store(false, std::memory_order_relaxed);   // (before 5.14, or seccomp)
  tc->fresh_end[cls] = to < end ? to : nullptr;
}

// The lowest free block of the word the bin points at (it had one when the caller looked); its
// pages populated first when the bin's slab is being populated ahead and the word reaches past
// what was.  Null when the word is empty after all: a signal handler's malloc of this class,
// between the caller's look and this load, took its last free blocks (the caller looks again;
// helper-95 found that the ctz of zero then named block 0 of the next word, whose bit stayed
// set, so it was handed out twice).  (A handler that takes a block between this load and the
// store still gets the same one: malloc in a signal handler is not async-signal-safe, DESIGN.)
ZNS_INLINE void *take_lowest(ThreadCache *tc, Bin b, unsigned cls) {
  if (ZNS_UNLIKELY(tc->fresh_end[cls] != nullptr) && b.base + 64 * size_t(b.size) > tc->fresh_end[cls])
    populate_ahead(tc, b, cls);
  uint64_t bits = b.word->load(std::memory_order_relaxed);
  if (ZNS_UNLIKELY(bits == 0)) return nullptr;
  b.word->store(bits & (bits - 1), std::memory_order_relaxed);
  tc->alloc_count[cls]++;
  char *p = b.base + unsigned(__builtin_ctzll(bits)) * b.size;
  if (p == nullptr) __builtin_unreachable();   // (a block: the callers' null test is the one above)
  return p;
}

// Allocate from tc for cls when its bin's word is empty.  `scanned`: a slab in which alloc_slow has
// just found no free bit in any word; if it is still the current one it is not scanned again (a
// 16 B slab has 128 words).  (Still: a signal handler's malloc in between may have moved the bin
// on, and its free may have put a block back, which park counts.)
void *refill_and_alloc(ThreadCache *tc, unsigned cls, const SlabMeta *scanned = nullptr) {
  if (ZNS_UNLIKELY(g_secure)) return secure_alloc(tc, cls);
  if (tc->remote_count) flush_remote(tc);   // our own frees first: they may free whole slabs
  __atomic_store_n(&tc->last_refill_ms, uint32_t(now_ms()), __ATOMIC_RELAXED);   // (kParkIdleMs)
  tc->adopt_off[cls / 64] &= ~(uint64_t(1) << (cls % 64));   // (its partial slabs may go now)
  Bin b = bin_of(tc, cls);
  flush_last(tc, b);   // (malloc takes `last` first, so it is empty here but for the orphan cache)
  SlabMeta *s = bin_slab(b);
  // Remote bits of an owned slab are always announced by its remote hint (see apply_remote and
  // drain_inbox), so without the hint their cache line need not be read.
  bool ok = s && ((s != scanned && bin_point(b, s)) ||
                  (s->remote_hint.load(std::memory_order_relaxed) && merge_remote(s) && bin_point(b, s)));
  if (!ok && drain_inbox(tc, true)) ok = s && bin_point(b, s);
  if (!ok) {
    // No free block left: let the freers have it.  A bin never names a slab we gave up, not
    // even for an instant (a fork here would hand the child a cache with a stale slab).
    if (void (*hook)() = g_test_refill_hook.load(std::memory_order_relaxed); ZNS_UNLIKELY(hook != nullptr)) hook();
    bin_clear(b);
    if (s) park(tc, s);
    // A thread that used up a slab of this class (s) and now takes a fresh one maps its pages
    // ahead of the cursor (populate_ahead); any other slab faults its pages in as it goes.
    bool used_up = s != nullptr, fresh = false;
    tc->fresh_end[cls] = nullptr;
    if (!(s = unpark(tc, cls)) && !(s = depot_adopt(cls, tc->id)) && !(s = depot_take(cls, tc->id, &fresh)))
      return nullptr;
    if (fresh && used_up && g_populate.load(std::memory_order_relaxed)) tc->fresh_end[cls] = slab_base(s);
    if (!bin_point(b, s)) fatal("slab metadata corrupted (no free block in a new slab)", "malloc", slab_base(s));
  }
  if (void *p = take_lowest(tc, b, cls); ZNS_LIKELY(p != nullptr)) return p;
  return refill_and_alloc(tc, cls);   // (a handler emptied the word: take_lowest)
}

// Apply remote frees: one atomic OR per run of frees into the same bitmap word.
void apply_remote(void *const *ps, const uint16_t *lives, unsigned n) {
  // Under one of this thread's own locks (a signal handler's free, a C library call the library
  // made while it held one): nothing here may take a lock (settle_later).
  const bool may_lock = t_guards == 0;
  // Every entry was checked when it was buffered (free_remote): a block start, then out, in the
  // slab's life lives[k].  A buffered block stays out, so its slab cannot go back to the depot
  // before the entry is applied, unless someone else freed the block too: an entry whose slab has
  // moved on to another life is a double free (and its index may name a live block of the new
  // life, of another class).  Find each one's slab and index once.
  SlabMeta *slab[kRemoteBuffer];
  uint32_t index[kRemoteBuffer];
  for (unsigned k = 0; k < n; ++k) {
    uintptr_t rel = uintptr_t(ps[k]) - uintptr_t(g_region.base);
    SlabMeta *m = &g_region.meta[rel >> kGroupShift];
    uint32_t off = uint32_t(rel & ((uintptr_t(1) << kGroupShift) - 1));
    slab[k] = m;
    index[k] = uint32_t((uint64_t(off) * m->magic) >> 32);
  }
  for (unsigned k = 0; k < n;) {
    SlabMeta *s = slab[k];
    uint32_t owner = s->owner.load(std::memory_order_acquire);
    if (owner == kNoOwner) fatal("free of a block that is not allocated", "free", ps[k]);
    std::atomic<uint16_t> &life = g_region.life[s - g_region.meta];
    uint16_t was = lives[k];
    if (life.load(std::memory_order_relaxed) != was) fatal("double free", "free", ps[k]);
    unsigned w = index[k] >> 6;
    uint64_t mask = uint64_t(1) << (index[k] & 63);
    void *first = ps[k++];
    for (; k < n && slab[k] == s && index[k] >> 6 == w; ++k) {   // the run: same slab and word
      uint64_t bit = uint64_t(1) << (index[k] & 63);
      if ((mask & bit) || lives[k] != was) fatal("double free", "free", ps[k]);
      mask |= bit;
    }
    RemoteState &rs = remote_of(s);
    // The owner's bits first: once ours are in, the owner may merge them at any moment.
    if (freed_in_bitmap(s, w, mask)) fatal("double free", "free", first);
    uint64_t old = remote_will_write(s, rs, first)[w].fetch_or(mask, std::memory_order_seq_cst);
    if (old & mask) fatal("double free", "free", first);
    // (No second look at the life after the OR: once our bits are in, the slab may complete and go
    // back to the depot at once, rightly.  A stale free that passed the look just before the
    // step ORs into the depot's copy (depot_release's look or depot_take's strays drop it) unless
    // the slab is also taken again within those few instructions.)
    if (owner == kSharedOwner) {
      // A slab with one bitmap word (the classes from 2 KiB): our OR's result says whether this
      // free can change anything (the slab worth queueing, or all of it back); most change nothing.
      unsigned blocks = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED);
      if (blocks <= 64) {
        uint8_t st = s->share.load(std::memory_order_seq_cst);
        unsigned total = unsigned(__builtin_popcountll(old | mask)), out = __atomic_load_n(&s->out, __ATOMIC_RELAXED);
        bool idle = st == kSharedIdle;
        if ((idle || st == kSharedQueued) &&
            (total >= out || (idle && blocks - out + total >= reuse_worth(blocks))))
          may_lock ? shared_settle(s) : settle_later(s);
      } else {
        rs.shared_frees.fetch_add(unsigned(__builtin_popcountll(mask)), std::memory_order_seq_cst);
        may_lock ? shared_settle(s) : settle_later(s);
      }
      // Adopted meanwhile?  Then the adopter's merge may have run before our OR: tell the new owner
      // (its inbox and remote hint), so that remote bits in an owned slab are always announced and
      // the owner's refill may skip the remote bits when the hint is clear.  (The slab cannot have
      // gone back to the depot before our OR: our block was still out.)
      uint32_t now = s->owner.load(std::memory_order_seq_cst);
      if (now != kSharedOwner && now != kNoOwner) notify(s, rs, now, may_lock);
    } else {
      notify(s, rs, owner, may_lock);
      // The owner may have given the slab up meanwhile (see relinquish).  A parked slab our free
      // completed is the owner's to reuse; but an owner that has not refilled for kParkIdleMs may
      // not look again for long (a worker waiting for its next job): give the pages back now.
      uint32_t now = s->owner.load(std::memory_order_seq_cst);
      if (now == kSharedOwner) {
        rs.shared_frees.fetch_add(unsigned(__builtin_popcountll(mask)), std::memory_order_seq_cst);
        may_lock ? shared_settle(s) : settle_later(s);
      } else if (may_lock && s->share.load(std::memory_order_acquire) == kParkedIdle) {
        // Complete?  Not unless our word now is (our OR's result and the owner's bits cover it):
        // most frees leave it short, and only then is every word of the slab counted (up to 256).
        unsigned blocks = __atomic_load_n(&s->blocks, __ATOMIC_RELAXED), left = blocks - w * 64;
        uint64_t full = left >= 64 ? ~uint64_t(0) : (uint64_t(1) << left) - 1;
        bool complete = (old | mask | racy_free_word(s, bits(s), w)) == full &&
                        (blocks <= 64 || parked_complete(s));
        if (complete && uint32_t(now_ms()) - __atomic_load_n(&g_caches[owner_cache(now)]->last_refill_ms,
                                                             __ATOMIC_RELAXED) >= kParkIdleMs)
          parked_purge(s);
      }
    }
  }
}

// (`in_remote`: see free_remote_plain.  A flush a signal handler asks for while this thread
// appends or flushes is left to the thread: it flushes when the buffer is full.)
void flush_remote(ThreadCache *tc) {
  if (ZNS_UNLIKELY(t_settle_any) && t_guards == 0) settle_deferred();
  if (tc->in_remote) return;
  tc->in_remote = kFlushing;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  unsigned n = tc->remote_count;
  for (uint64_t &w : tc->remote_seen) w = 0;
  apply_remote(tc->remote_buf, tc->remote_life, n);
  std::atomic_signal_fence(std::memory_order_seq_cst);
  tc->remote_count = 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  tc->in_remote = 0;
}

// ---- thread attach / exit ----------------------------------------------------------------------
void tc_exit(void *arg) {
  // (glibc acts on a cancel still pending at the first cancellation point of a thread's exit: one
  // in a purge here left the whole cache and its slabs behind)
  NoCancel no_cancel;
  ThreadCache *tc = static_cast<ThreadCache *>(arg);
  {
    SlowPath busy(tc);   // (ends before the cache goes to the pool, where another thread takes it)
    if (g_secure) secure_drain(tc);   // its blocks into our bitmaps or the remote buffer
    t_cache = &g_dead_cache;   // later mallocs in this thread go to the orphan cache
    flush_remote(tc);
    // Every slab goes: empty ones to the depot, the others shared, so no memory waits for the
    // next thread that adopts this cache.
    for (unsigned c = 0; c < kNumClasses; ++c) {
      flush_last(tc, bin_of(tc, c));
      SlabMeta *s = current_slab(tc, c);
      tc->secure_slab[c] = nullptr;
      bin_clear(bin_of(tc, c));
      slot_reset(tc, c);   // (the next thread starts with every slot on)
      tc->partial_tail[c] = kNil;   // (emptied below)
      for (uint32_t *list : {&tc->partial[c], &tc->full[c]})   // parked slabs first, then the current
        while (*list != kNil) {
          SlabMeta *k = &meta_at(*list);
          while (!parked_take_back(k)) os_sched_yield();   // the tier is writing it out: a moment
          list_unlink(*list, k);
          give_up(k);
        }
      if (s) give_up(s);   // (a current slab is never purged in place)
    }
  }
  Guard g(g_pool_lock);
  tc->attached.store(false, std::memory_order_seq_cst);
  drain_inbox(tc, false);
  tc->pool_next = g_pool_head;
  g_pool_head = tc;
}

// A signal handler's malloc or free may come at any point of an attach.  Under the pool lock
// (t_guards) its malloc goes to the next allocator and its free is applied at once (it attached
// again before and waited for the lock its own thread held: remote_buffer part 5); before the
// lock it may attach in full, and this attach then keeps the handler's cache; from t_cache's store
// on it uses the cache, and the inbox's drain is a slow path (busy) it keeps out of.
ThreadCache *thread_attach() {
  heap_init();
  ThreadCache *tc;
  {
    Guard g(g_pool_lock);
    if (t_cache->id != kSentinelId) return t_cache;   // a handler's attach came first
    if ((tc = g_pool_head)) g_pool_head = tc->pool_next;
    else tc = new_cache();
    if (!tc) return nullptr;
    tc->attached.store(true, std::memory_order_seq_cst);
    t_cache = tc;
  }
  {
    SlowPath busy(tc);
    drain_inbox(tc, true);
  }
  g_threads_seen.fetch_add(1, std::memory_order_relaxed);
  pthread_setspecific(g_key, tc);   // may allocate: t_cache is already usable
  return tc;
}

void *orphan_alloc(unsigned cls) {
  heap_init();
  Guard g(g_orphan_lock);
  if (!g_orphan) {
    Guard g2(g_pool_lock);
    g_orphan = new_cache();
    if (!g_orphan) return nullptr;
    g_orphan->attached.store(true, std::memory_order_seq_cst);
  }
  return refill_and_alloc(g_orphan, cls);
}

}  // namespace

Lock &test_depot_lock() { return g_depot_lock; }
void test_set_numa_nodes(unsigned n) {
  heap_init();
  depot_purge(true);   // (dirty slabs are listed by node: none left to list again)
  Guard g(g_depot_lock);
  if (n > 1 && g_nodes <= 1) {   // the node part was not committed: commit it now
    if (!os_commit(g_region.node, g_region.pages / kGroupPages)) return;
  }
  g_nodes = n < 1 ? 1 : n < kMaxNodes ? n : kMaxNodes;
  for (unsigned i = 0; i < g_nodes; ++i) g_node_id[i] = uint16_t(i);
}
void test_set_node(int node) { t_test_node = node; }

// ---- fork ----------------------------------------------------------------------------------------
namespace {

// Cancellation stays off from the prepare handler to the parent's or the child's (the tier's
// page-ins, the madvise child's copy; see NoCancel).
__thread int t_fork_cancel_state __attribute__((tls_model("initial-exec")));
void fork_prepare() {
  pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &t_fork_cancel_state);
  ++t_guards;   // (to the parent's or the child's handler: the locks below, the tier's)
  tier_fork_prepare();   // first: it brings paged-out slabs back, and may take class locks
  g_orphan_lock.lock();
  g_pool_lock.lock();
  for (unsigned c = 0; c < kNumClasses; ++c) class_lock(c).lock();
  g_depot_lock.lock();
}
void fork_parent() {
  g_depot_lock.unlock();
  for (unsigned c = 0; c < kNumClasses; ++c) class_lock(c).unlock();
  g_pool_lock.unlock();
  g_orphan_lock.unlock();
  tier_fork_parent();
  --t_guards;
  pthread_setcancelstate(t_fork_cancel_state, nullptr);
}
// fork_child, when a drain or a notify was under way in a thread that does not exist here
// (g_inbox_ops): slabs that a drain had taken off an inbox, or that a notify had marked `pending`
// and not yet pushed, are pending on no inbox; a drain that had cleared `pending` and not yet
// merged leaves remote bits that nobody is told of (the hint cleared).  Their owners would never
// merge those frees: the blocks would stay out in the child.  So every slab whose remote state
// was ever written and that is on no inbox loses `pending`, and is queued on its owner's inbox
// if it has remote bits or its hint up.  (A merge cut between its exchange and its OR loses those
// frees for good, as any work a dead thread had under way.)  Single-threaded: only this thread
// lives in the child.
void fork_child_inboxes() {
  auto mark = [](uint8_t v) {   // the slabs on some inbox (ours and the orphan's too)
    for (uint32_t id = 1; id <= g_num_caches; ++id)
      for (uint32_t p = g_caches[id]->inbox.load(std::memory_order_relaxed); p != kNil;
           p = remote_at(p).inbox_next)
        remote_at(p).fork_mark = v;
  };
  mark(1);
  for (uint32_t page = 0, end = g_depot.bump; page < end; page += kGroupPages) {
    if (!remote_written(page) || remote_at(page).fork_mark) continue;
    remote_at(page).pending.store(0, std::memory_order_relaxed);
    SlabMeta *s = &meta_at(page);
    uint32_t owner = owner_cache(s->owner.load(std::memory_order_relaxed));
    if (owner == kNoOwner || owner > g_num_caches) continue;   // in the depot, or shared
    if (remote_pending(s)) notify(page, owner, false);
  }
  mark(0);
  g_inbox_ops.store(0, std::memory_order_relaxed);
}

// fork_child, when a thread that does not exist here had claimed a shared slab (g_shared_claims:
// shared_settle returning it to the depot, depot_adopt taking it, between the class lock and the
// end of the move): the slab is on no list and stays claimed, so no free settles it again and
// nobody adopts it.  Every shared slab still claimed (the tier claims only under g_tier_lock,
// which the prepare handler holds) gets its remote frees merged and goes to the depot if none is
// out, else is shared and idle again with a new count of what is out.  (An adopter that had set
// itself as owner was inside a refill: its cache is busy, and the slab is lost with it.)
void fork_child_shared_claims() {
  for (uint32_t page = 0, end = g_depot.bump; page < end; page += kGroupPages) {
    SlabMeta *s = &meta_at(page);
    if (s->owner.load(std::memory_order_relaxed) != kSharedOwner ||
        s->share.load(std::memory_order_relaxed) != kSharedClaimed)
      continue;
    s->share.store(kOwned, std::memory_order_relaxed);   // (the dead claimer's claim)
    give_up(s);   // to the depot, or shared again with a new count of what is out (relinquish)
  }
  g_shared_claims.store(0, std::memory_order_relaxed);
}

// fork_child, for a cache whose thread was inside a slow path that changes it (SlowPath): a bin
// may be half pointed at a new word, a list half linked, the quarantine half appended.  None of
// that is looked at.  Each slab's own line is whole (its changes there are single stores, or
// end with the owner's store), so the cache's slabs are found by their owner: every `last` block
// goes back to its bitmap, then each slab goes to the depot if none is out, else is shared (any
// thread may adopt it).  The cache then gets a new cache's state (its inbox stays: entries that
// now name shared slabs are passed over) and goes to the pool like the others.  Lost: a slab it
// had taken from the depot and not yet made its own, its quarantine (ZNS_SECURE), a merge cut
// between its exchange and its OR.
void fork_child_salvage(ThreadCache *tc) {
  for (unsigned c = 0; c < kNumClasses; ++c) {
    void *p = __atomic_load_n(&tc->last[c], __ATOMIC_RELAXED);
    if (!slot_holds(p) || !owns(p)) continue;
    SlabMeta *s = head_meta(p);
    int i = owner_cache(s->owner.load(std::memory_order_relaxed)) == tc->id ? block_index(s, p) : -1;
    if (i < 0) continue;
    std::atomic<uint64_t> *f = bits(s) == full_bits() ? bits_install(s) : bits(s);
    f[unsigned(i) >> 6].fetch_or(uint64_t(1) << (i & 63), std::memory_order_relaxed);
  }
  for (uint32_t page = 0, end = g_depot.bump; page < end; page += kGroupPages) {
    SlabMeta *s = &meta_at(page);
    if (owner_cache(s->owner.load(std::memory_order_relaxed)) != tc->id) continue;
    s->share.store(kOwned, std::memory_order_relaxed);   // (a claim by a thread not here, if any)
    give_up(s);
  }
  for (unsigned c = 0; c < kNumClasses; ++c) {
    bin_clear(bin_of(tc, c));
    slot_reset(tc, c);
    tc->partial[c] = tc->partial_tail[c] = tc->full[c] = kNil;
    tc->secure_slab[c] = nullptr;
  }
  tc->quar_count = 0;
  tc->busy = 0;
}

ZNS_FORK_CODE_FIRST void fork_child() {
  // First the heap becomes the child's own (the madvise tier maps it from a file shared with the
  // parent: until the tier's private copy, a store here, e.g. a quarantine's release, or a purge
  // of the depot's slabs, would reach the parent; until 2026-12-03 it ran last, and a secure
  // child's release of a dead thread's quarantine rewrote the parent's marks: "write after free").
  tier_fork_child();
  __atomic_store_n(&g_heap_pid, os_getpid(), __ATOMIC_RELEASE);   // the heap is this process's now
  // This thread took them in fork_prepare and is their owner here too: released (stored as new,
  // or under TSan unlocked: see Lock::release_in_child).
  g_depot_lock.release_in_child();
  for (unsigned c = 0; c < kNumClasses; ++c) class_lock(c).release_in_child();
  g_pool_lock.release_in_child();
  g_orphan_lock.release_in_child();
  // No handler until the walks below are done: a handler's free could reach a cache they are
  // changing (a flush notifies a dead thread's slab, its owner is detached, so the handler drains
  // that cache's inbox: drain_detached) while this thread is halfway through the same cache.
  sigset_t was_blocked;
  block_signals(&was_blocked);
  --t_guards;
  // Only the forking thread lives on: every other attached cache becomes detached.
  for (uint32_t id = 1; id <= g_num_caches; ++id) {
    ThreadCache *tc = g_caches[id];
    if (tc == t_cache || tc == g_orphan || !tc->attached.load(std::memory_order_relaxed)) continue;
    tc->attached.store(false, std::memory_order_relaxed);
    if (void (*hook)() = g_test_fork_walk_hook.load(std::memory_order_acquire); ZNS_UNLIKELY(hook != nullptr)) hook();
    // Its remote buffer: frees that returned to the program before the fork (a helper's review:
    // 4 threads x 60 buffered frees each stayed "live" in the child; a chain of forks lost ~31 KB
    // a generation).  free_remote_plain stores each entry before the count that covers it, so
    // those entries are whole: applied here.  A flush under way (kFlushing: its entries partly
    // applied) is dropped: its blocks stay out in the child.
    unsigned n = tc->in_remote == kFlushing ? 0 : tc->remote_count;
    tc->remote_count = 0;
    tc->in_remote = 0;
    for (uint64_t &w : tc->remote_seen) w = 0;
    if (n) apply_remote(tc->remote_buf, tc->remote_life, n);
    if (tc->busy) {
      fork_child_salvage(tc);   // cut in the middle of a change: never used as it is
    } else {
      for (unsigned c = 0; c < kNumClasses; ++c) {
        flush_last(tc, bin_of(tc, c));
        slot_reset(tc, c);   // (a slot that was off: the next thread starts with it on)
      }
      if (g_secure) secure_drain(tc);   // else its quarantined blocks would stay out for good
      drain_inbox(tc, false);
    }
    tc->pool_next = g_pool_head;
    g_pool_head = tc;
  }
  if (g_inbox_ops.load(std::memory_order_relaxed) != 0) fork_child_inboxes();
  if (g_shared_claims.load(std::memory_order_relaxed) != 0) fork_child_shared_claims();
  // Slabs that a depot_purge of another thread was giving back (between its two holds of the
  // depot lock): on no list here but the purging list.  Its victims back on the dirty lists,
  // purged or not (a purge of purged pages is harmless), to be purged again in their time; its
  // bridges (clean before) back on the clean lists.
  for (uint32_t p = g_depot.purging_head; p != kNil;) {
    uint32_t next = meta_at(p).next;
    unsigned k = meta_at(p).pages;
    if (mark_of(p) == kBridgeMark) {   // a clean slab a purge ran over: clean again
      list_push(g_depot.clean_head[k], &meta_at(p));
      set_mark(meta_at(p), kCleanMark);
    } else {
      g_depot.purging_pages -= k;
      dirty_push(p, k, uint32_t(now_ms()));
    }
    p = next;
  }
  if (g_depot.purging_head != kNil) g_depot.purging_head = kNil;   // (no store otherwise: a page copied)
  // A purge claim held by a thread that does not exist here (parked_purge, between its claim and
  // its release): give the slab back to its owner.  Its blocks are all free (the claim was taken
  // on a complete slab), so pages the claimer may have purged already hold nothing.  Only when a
  // claim was in flight: the walk visits every parked slab.
  if (g_purge_claims.load(std::memory_order_relaxed) != 0) {
    for (uint32_t id = 1; id <= g_num_caches; ++id)
      for (unsigned c = 0; c < kNumClasses; ++c)
        for (uint32_t list : {g_caches[id]->partial[c], g_caches[id]->full[c]})
          for (uint32_t p = list; p != kNil; p = meta_at(p).next)
            if (meta_at(p).share.load(std::memory_order_relaxed) == kSharedClaimed)
              meta_at(p).share.store(kParkedIdle, std::memory_order_relaxed);
    g_purge_claims.store(0, std::memory_order_relaxed);
  }
  stats_after_fork_child();
  restore_signals(&was_blocked);
  pthread_setcancelstate(t_fork_cancel_state, nullptr);
}

// ---- global init ---------------------------------------------------------------------------------
Lock g_init_lock;
std::atomic<int> g_init_state;   // 0 not started, 2 ready

// The region's size when ZNS_REGION_GB cannot be reserved: halved down to this (a process under
// an address-space limit, `ulimit -v`, still gets a heap; below it the heap is not worth it).
constexpr uint64_t kMinRegionMiB = 64;

void region_init() {
  // Under an address-space limit every reserved byte counts, committed or not: the region and its
  // metadata take at most a quarter of the limit, so that the program keeps room for its own
  // mappings (python under `ulimit -v 300000` could not start when the heap took the largest
  // region that fitted).
  uint64_t cap_mib = ~uint64_t(0);
  struct rlimit as;
  if (getrlimit(RLIMIT_AS, &as) == 0 && as.rlim_cur != RLIM_INFINITY) cap_mib = (uint64_t(as.rlim_cur) >> 20) / 4;
  for (uint64_t mib = g_options.ZNS_REGION_GB << 10; mib >= kMinRegionMiB; mib /= 2) {
    uint64_t pages = mib << (20 - kPageShift);
    if (pages > 0xffffffe0u) pages = 0xffffffe0u;   // (a multiple of kGroupPages)
    static_assert(0xffffffe0u % kGroupPages == 0);
    uint64_t groups = pages / kGroupPages;
    // The metadata reservation (SlabMeta "Bitmaps"): a line per group, then the bitmap pools'
    // chunks with room for a record per group of each class; its mirror follows (RemoteState).
    // Address space only: pages are touched where slabs are (6.7 KiB of pools per group reserved).
    // In a chunk each pool's run starts at the offset in a page where the previous one's first
    // record ends: so the first records of the classes fall in different cache sets (runs of
    // kPoolChunk records start at multiples of 1 KiB otherwise, and the 8, 16, 32 and 48 B
    // classes' hot first lines would share one set).  The padding (< 4 KiB a run) is address
    // space only, never touched.
    uint64_t words = groups * (kMetaStride / 8 + 1) + (groups * 3 + 7) / 8, color = 0, at = 0;   // lines, rrec, life, node; (color: words into a page)
    // A record takes whole pairs of cache lines (kRecordAlign words): records of different slabs,
    // which different threads own and whose fast paths write them, never share a line nor a pair
    // of lines that the L2 fetches together (a 4-word record of 480 B blocks shared its line with
    // the next slab's: churn/threads:2 ~11% slower).  The padding is never read nor written (< 128
    // B a slab of 128 KiB).
    for (unsigned c = 0; c < kNumClasses; ++c) {
      unsigned w = bitmap_words(kClasses.info[c].blocks);
      if (w > kInlineWords) {
        w = (w + kRecordAlign - 1) & ~(kRecordAlign - 1);
        at += (color - at) & 511;   // (the least padding that puts it there)
        color = (color + w) % 512;
      }
      g_bitmap_pool[c] = BitmapPool{at, w > kInlineWords ? w : 0, 0, kNil, 0, kNil};
      if (w > kInlineWords) at += uint64_t(kPoolChunk) * w;
    }
    g_pool_area = (words + 511) & ~uint64_t(511);
    g_pool_stride = (at + 511) & ~uint64_t(511);
    g_pool_chunks = (groups + kPoolChunk - 1) / kPoolChunk + 1;   // (+1: slack for spares, record_get)
    words = g_pool_area + g_pool_chunks * g_pool_stride;
    uint64_t half = (words * 8 + kPageSize - 1) & ~uint64_t(kPageSize - 1);
    // (the metadata, whole MiB: 10.7% of the default region's size, 8.5 MiB at the 64 MiB floor,
    // where a quarter of a 288 MiB limit holds 73.1 MiB of the heap's mappings)
    if (mib + ((2 * half) >> 20) > cap_mib) continue;
    // Metadata never borders data: the reservation has an inaccessible page on both sides.
    char *meta = static_cast<char *>(os_reserve_lazy_guarded(2 * half));   // committed by commit_to
    // Readable before its commit: only the lines, which free() reads for any pointer in the
    // region (a bogus one beyond the bump pointer finds owner 0: a clear message).  The rest (rrec,
    // life, the pools, the mirror: 99% of it, 6.9 GiB for the default region) is read only for
    // slabs below the bump pointer, committed: inaccessible until then.  A readable reservation
    // is not as harmless as it looks: mlockall(MCL_CURRENT) in a program with a second thread
    // made all of it resident (a read fault per page, real pages, not the zero page): 5.6 GB and
    // 4.7 s in mlockall (tests/api/mlockall).
    if (size_t lines = (size_t(groups) * kMetaStride + kPageSize - 1) & ~size_t(kPageSize - 1); meta && lines < 2 * half)
      mprotect(meta + lines, 2 * half - lines, PROT_NONE);   // (if refused: readable, as before)
    size_t marks = ((half >> kPageShift) / 64 + 1) * sizeof(uint64_t);
    auto *remote_pages = static_cast<std::atomic<uint64_t> *>(os_reserve_guarded(marks));
    char *base = nullptr;
    bool lazy = false;
    if (meta && remote_pages) {
      base = static_cast<char *>(tier_map_region(pages * kPageSize));   // madvise tier: a file
      lazy = !base;                                                     // (not the madvise file)
      if (lazy) base = static_cast<char *>(os_reserve_lazy(pages * kPageSize));
    }
    if (!base) {
      os_release_guarded(meta, 2 * half);
      os_release_guarded(remote_pages, marks);
      continue;
    }
    // 4 KiB pages only: slabs are purged (and later tiered) one page at a time.
    madvise(base, pages * kPageSize, MADV_NOHUGEPAGE);
    madvise(meta, 2 * half, MADV_NOHUGEPAGE);
    g_region.meta = reinterpret_cast<SlabMeta *>(meta);
    g_region.rrec = reinterpret_cast<std::atomic<uint64_t> **>(meta + groups * kMetaStride);
    g_region.life = reinterpret_cast<std::atomic<uint16_t> *>(meta + groups * (kMetaStride + 8));
    g_region.node = reinterpret_cast<uint8_t *>(meta + groups * (kMetaStride + 10));
    g_region.remote = reinterpret_cast<RemoteState *>(meta + half);
    g_region.mirror = half;
    g_region.remote_pages = remote_pages;
    g_region.pages = uint32_t(pages);
    g_region.bytes = pages * kPageSize;
    g_region.base = base;
    g_lazy_data = lazy;
    if (lazy) {   // strict accounting (vm.overcommit_memory=2): a trim gives commit back too
      char mode = 0;
      int fd = os_open("/proc/sys/vm/overcommit_memory", O_RDONLY | O_CLOEXEC);
      if (fd >= 0) {
        g_strict_commit = os_read(fd, &mode, 1) == 1 && mode == '2';
        os_close(fd);
      }
    }
    g_committed_pages = g_data_committed = 0;
    g_pool_records = 0;
    g_lazy_parts = 0;
    g_lazy[g_lazy_parts++] = LazyPart{0, kMetaStride};                       // SlabMeta lines
    g_lazy[g_lazy_parts++] = LazyPart{size_t(groups) * kMetaStride, 8};      // rrec
    g_lazy[g_lazy_parts++] = LazyPart{size_t(groups) * (kMetaStride + 8), 2};   // life
    if (g_nodes > 1) g_lazy[g_lazy_parts++] = LazyPart{size_t(groups) * (kMetaStride + 10), 1};   // node
    // (the bitmap pools' chunks: commit_range)
    // A line never handed out has no bitmap (null): depot_take assigns one before anyone reads it.
    if (g_secure) mprotect(base + (pages - kGroupPages) * kPageSize, kPageSize, PROT_NONE);   // see bump_take
    return;
  }
  // No region: every request falls through to the next allocator.  Say so once: the program
  // runs, but nothing of this library's is in use.
  char m[256];
  Buf(m, sizeof m).str("zns-slab: cannot reserve address space for the heap (")
      .u64(g_options.ZNS_REGION_GB).str(" GiB down to ").u64(kMinRegionMiB)
      .str(" MiB; an address-space limit, ulimit -v?): every allocation goes to the next allocator\n").say();
}

}  // namespace

// Linked into a program built with a sanitizer (-fsanitize=address, thread, leak, memory; the
// archives), whose runtime must own malloc: its start calls malloc before its interceptors are
// set up, and the heap's first call into one (pthread_setcancelstate) jumped to address 0, a
// crash without a word (a review, 2026-12-06); LeakSanitizer saw no block and reported no leak.
// So the heap says why and ends the program before any call the runtime intercepts.  (Preloaded,
// the sanitizer refuses the preload itself.  Not when the heap itself is built with one: the
// tests' sanitizer builds.)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define ZNS_BUILT_WITH_SANITIZER 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define ZNS_BUILT_WITH_SANITIZER 1
#endif
#endif
#ifndef ZNS_BUILT_WITH_SANITIZER
extern "C" __attribute__((weak)) void __asan_init();
extern "C" __attribute__((weak)) void __tsan_init();
extern "C" __attribute__((weak)) void __lsan_init();
extern "C" __attribute__((weak)) void __msan_init();
extern "C" __attribute__((weak)) void __hwasan_init();
extern "C" const ElfW(Ehdr) __ehdr_start;   // (the linker's: this object's own ELF header)
namespace {
void refuse_sanitizer() {
  // Only linked into the program itself: preloaded, the sanitizer's runtime is either first (it
  // owns malloc; this heap is never asked) or refuses the preload itself, or the program runs
  // without it (a -fsanitize=leak program under the preload ran, and was refused by mistake)
  const char *own_phdr = reinterpret_cast<const char *>(&__ehdr_start) + __ehdr_start.e_phoff;
  if (getauxval(AT_PHDR) != reinterpret_cast<uintptr_t>(own_phdr)) return;
  const char *which = &__asan_init ? "AddressSanitizer" : &__tsan_init ? "ThreadSanitizer"
                    : &__lsan_init ? "LeakSanitizer" : &__msan_init ? "MemorySanitizer"
                    : &__hwasan_init ? "HWAddressSanitizer" : nullptr;
  if (!which) return;
  char m[400];
  Buf b(m, sizeof m);
  b.str("zns-slab: this program is built with ").str(which)
      .str(", whose runtime must own malloc: ZNS-Slab cannot be linked into it (build it without "
           "-fsanitize, or without libzns_slab.a)\n");
  os_write(2, m, b.size());
  os_syscall(SYS_exit_group, 1);
}
}  // namespace
#endif

void heap_init() {
  if (ZNS_LIKELY(g_init_state.load(std::memory_order_acquire) == 2)) return;
#ifndef ZNS_BUILT_WITH_SANITIZER
  refuse_sanitizer();
#endif
  NoCancel no_cancel;   // (the region: the madvise tier's file)
  {
    Guard g(g_init_lock);
    if (g_init_state.load(std::memory_order_relaxed) == 2) return;
    int saved = errno;
    options_load(false);
    g_secure = g_options.ZNS_SECURE != 0;
    if (!os_random(&g_secret, sizeof g_secret))   // no entropy yet: still differs per process
      g_secret = (uint64_t(now_ms()) << 32) ^ uint64_t(uintptr_t(&saved)) ^ uint64_t(os_getpid());
    depot_reset_lists();
    numa_init();
    region_init();
    __atomic_store_n(&g_heap_pid, os_getpid(), __ATOMIC_RELEASE);   // (region_fit_limit)
    g_populate.store(g_options.ZNS_POPULATE != 0 && g_tier_mode == kTierOff && !g_secure, std::memory_order_relaxed);
    pthread_key_create(&g_key, tc_exit);
    errno = saved;
    g_init_state.store(2, std::memory_order_release);
  }
  pthread_atfork(fork_prepare, fork_parent, fork_child);   // may allocate: init is done
}

namespace {
// Every miss that is not a step to the next word of the current slab (alloc_slow; `scanned`: the
// slab in which it found none, or null).
ZNS_NOINLINE void *alloc_refill(unsigned cls, const SlabMeta *scanned) {
  // From inside a C library call the library makes under one of its locks (a program's own mmap,
  // say, that allocates): the next allocator serves, as a slab slow path may need that lock.  So
  // it does for a signal handler's malloc that interrupted this thread inside a slow path that
  // changes the cache (busy: a refill, a free's list move): a refill of its own there parked the
  // slab the interrupted refill was parking a second time, or took the partial list's slabs under
  // its feet ("slab metadata corrupted", a thread exit that never ends: helper-98's review), as a
  // free there goes the remote way (free_local_checked).
  if (ZNS_UNLIKELY(t_guards != 0 || t_cache->busy)) return nullptr;
  if (ZNS_UNLIKELY(t_settle_any)) settle_deferred();
  if (ZNS_UNLIKELY(g_tier_child_pending.load(std::memory_order_relaxed))) tier_child_poll();
  ThreadCache *tc = t_cache;
  if (tc->id == kSentinelId) {
    if (tc == &g_dead_cache) return orphan_alloc(cls);
    tc = thread_attach();
    if (!tc) return orphan_alloc(cls);
  }
  SlowPath busy(tc);
  if (!g_secure) slot_policy(tc, cls);
  return refill_and_alloc(tc, cls, scanned);
}
}  // namespace

// The most common miss: the cursor word ran out while another word of the current slab has free
// blocks (a partly free slab in a steady churn: 2.4% of mallocs in bench/latency's 16..256 B
// churn).  It needs none of the refill's bookkeeping (remote buffer, clock, inbox), so it is
// written out here for the few instructions it needs (DESIGN "malloc fast path").  The scan starts
// at the word after the cursor and wraps (the cursor's own word last: a signal handler's free may
// have put a block there).  alloc_slow itself only looks and makes tail calls, so it needs no
// frame: the step (alloc_step) and the refill (alloc_refill, which runs the slot's policy then)
// have their own.
// (A sentinel cache's bins and secure mode's name no slab: g_zero_word.  While a forked child's
// tier start is pending, every miss goes to alloc_refill, which polls it.)
namespace {
// The bin moves to word w of s: the no-slab word first, then the base, then w (a signal handler's
// malloc in between misses and is refused a refill under busy: the next allocator serves it).
// With the old, empty word left there instead, a handler that freed a block of a word the scan
// passes before w and then missed stepped there itself, and this step's store of w then paired
// w with that word's base: blocks at wrong addresses (found by reasoning from helper-99's review;
// unit test through g_test_pair_hook).  Then w's lowest bit, with a fresh load, as a malloc in a
// handler may have taken or freed some meanwhile.
ZNS_NOINLINE void *alloc_step(ThreadCache *tc, unsigned cls, const SlabMeta *s, size_t word_index,
                              std::atomic<uint64_t> *w, std::atomic<uint64_t> *cur) {
  slot_policy(tc, cls);
  if (void (*hook)() = g_test_step_entry_hook.load(std::memory_order_relaxed); ZNS_UNLIKELY(hook != nullptr)) hook();
  {
    SlowPath busy(tc);
    // A signal handler's malloc since alloc_slow looked (before busy, so it could refill) may
    // have moved the bin to another slab and parked s: then look again, below (stepping into s
    // anyway made a parked slab current, and the next refill parked it twice: a thread exit that
    // spun for good, in a SIGALRM storm aimed at alloc_slow and alloc_step).  From busy on, a
    // handler's malloc steps at most, within s.
    if (ZNS_LIKELY(tc->word[cls] == cur)) {
      tc->word[cls] = &g_zero_word;
      std::atomic_signal_fence(std::memory_order_seq_cst);
      tc->base[cls] = slab_base(s) + word_index * 64 * tc->size[cls];
      if (void (*hook)() = g_test_pair_hook.load(std::memory_order_relaxed); ZNS_UNLIKELY(hook != nullptr)) hook();
      std::atomic_signal_fence(std::memory_order_seq_cst);
      tc->word[cls] = w;
      if (void (*hook)() = g_test_step_hook.load(std::memory_order_relaxed); ZNS_UNLIKELY(hook != nullptr)) hook();
      if (void *p = take_lowest(tc, bin_of(tc, cls), cls); ZNS_LIKELY(p != nullptr)) return p;
    }
  }
  return alloc_slow(cls);   // (the bin moved, or a handler emptied w: take_lowest.  Not busy: it may refill)
}
}  // namespace

void *alloc_slow(unsigned cls) {
  ThreadCache *tc = t_cache;
  std::atomic<uint64_t> *cur = tc->word[cls];
  if (ZNS_LIKELY(cur != &g_zero_word) && !g_tier_child_pending.load(std::memory_order_relaxed)) {
    SlabMeta *s = head_meta(tc->base[cls]);
    std::atomic<uint64_t> *f = bits(s), *end = f + words_of(s), *w = cur;
    if (ZNS_UNLIKELY(cur < f || cur >= end)) return alloc_refill(cls, nullptr);   // (defensive: a bin's
                                                                                  // word is in its slab)
    do {
      if (++w == end) w = f;
      if (w->load(std::memory_order_relaxed)) return alloc_step(tc, cls, s, size_t(w - f), w, cur);
    } while (w != cur);
    return alloc_refill(cls, s);
  }
  return alloc_refill(cls, nullptr);
}

// ---- what the tier needs: claim a cold shared slab while it is written out -----------------------
uint32_t heap_touched_pages() { return __atomic_load_n(&g_depot.bump, __ATOMIC_ACQUIRE); }

// The guards again (see make_guard: the first page of every kGuardGroup pages from page 0, in
// order, g_guards of them; and the region's last group's first page), over a heap remapped.
void heap_reguard() {
  if (!g_secure) return;
  for (uint32_t p = 0, n = 0; n < g_guards && p < g_region.pages; p += kGuardGroup, ++n)
    mprotect(g_region.base + size_t(p) * kPageSize, kPageSize, PROT_NONE);
  mprotect(g_region.base + size_t(g_region.pages - kGroupPages) * kPageSize, kPageSize, PROT_NONE);
}

// ---- an address-space limit lowered at run time --------------------------------------------------
// The region and its metadata are address space the program cannot use (74.6 GB of it for the
// default 64 GiB region).  region_init fits them into an RLIMIT_AS that is there at start; a
// program that lowers the limit later (`ulimit -v` in a shell, setrlimit in a test harness or a
// sandbox) had every later mapping refused: the next allocator's (bash: "xrealloc: cannot
// allocate"), a new thread's stack and cache, a fork's copy under the madvise tier (helper-90's
// sweep, 2026-12-07).  The shim's setrlimit and prlimit call region_fit_limit after the kernel
// took the new limit: the region's unused tail, and the metadata of its groups, are unmapped down
// to what region_init would reserve under that limit (a quarter of it, with the metadata), never
// below what is committed.  Each hole in the metadata keeps an inaccessible page at both ends, so
// metadata still never borders another mapping (shrink_area).  Under the depot lock (bump_take,
// commit_to and the fork handlers take it); owns() sees the smaller size before the unmap.

// Area i of the metadata reservation ([start, end) bytes into it) keeps its bytes below keep_end
// (page-rounded up).  g_meta_mapped[i]: the end of what is still mapped and the heap's below the
// area's top guard (0: never shrunk); the page at the new end becomes a guard, the rest goes.
size_t g_meta_mapped[7];
void shrink_area(unsigned i, size_t keep_end, size_t end) {
  char *meta = reinterpret_cast<char *>(g_region.meta);
  size_t &m = g_meta_mapped[i], lo = (keep_end + kPageSize - 1) & ~size_t(kPageSize - 1);
  if (m == 0) {   // the first time: the area's top page becomes a guard (the next area may share
                  // the page above it)
    size_t hi = end & ~size_t(kPageSize - 1);
    if (hi < lo + 3 * kPageSize) return;
    mprotect(meta + hi - kPageSize, kPageSize, PROT_NONE);
    m = hi - kPageSize;
  }
  if (m < lo + 2 * kPageSize) return;
  mprotect(meta + lo, kPageSize, PROT_NONE);   // (the lines are readable)
  munmap(meta + lo + kPageSize, m - lo - kPageSize);
  m = lo + kPageSize;
}
uint64_t region_fit_limit(uint64_t limit) {
  // Not from a child that shares the address space without the fork handlers (vfork, a spawn's
  // clone): its limit is its own, the heap is its parent's (helper-91's review: a vfork child's
  // setrlimit before exec cut the parent's region to 69 MiB).
  // Nor from a signal handler that interrupted this thread under one of the library's locks.
  if (limit == ~uint64_t(0) || os_getpid() != __atomic_load_n(&g_heap_pid, __ATOMIC_ACQUIRE) || t_guards != 0)
    return g_region.bytes;
  { Guard init(g_init_lock); }   // (a heap_init under way elsewhere reserved under the old limit)
  if (g_init_state.load(std::memory_order_acquire) != 2 || !g_region.base) return g_region.bytes;
  Guard g(g_depot_lock);
  // (the metadata's layout is the reservation's: rrec follows the lines of every group it was made for)
  uint64_t groups = uint64_t(reinterpret_cast<char *>(g_region.rrec) - reinterpret_cast<char *>(g_region.meta)) / kMetaStride;
  // The region and its metadata in a quarter of the limit (as region_init), the metadata in the
  // proportion of this layout's (2 * mirror bytes for groups' worth of region).
  uint64_t laid = groups << kGroupShift;
  uint64_t cap = uint64_t((unsigned __int128)(limit / 4) * laid / (laid + 2 * g_region.mirror));
  uint64_t keep = cap / kPageSize, used = g_committed_pages > g_depot.bump ? g_committed_pages : g_depot.bump;
  if (keep < used) keep = used;
  keep = (keep + kGroupPages - 1) & ~uint64_t(kGroupPages - 1);
  if (g_secure) keep += kGroupPages;   // the region's last group stays a guard (bump_take)
  if (keep < kGroupPages || keep >= g_region.pages) return g_region.bytes;
  uint64_t kg = keep / kGroupPages, had_groups = g_region.pages / kGroupPages;
  uint64_t kc = pool_chunks_for(kg) + 1, had_chunks = g_pool_chunks;   // (+1: slack, as region_init)
  if (kc < (g_pool_records + kPoolChunk - 1) / kPoolChunk) kc = (g_pool_records + kPoolChunk - 1) / kPoolChunk;
  if (kc >= had_chunks) kc = had_chunks;
  // Nothing above `keep` is in use: no pointer there, no slab, no record; the depot never goes there
  // again.  Smaller first, then the unmap (a later mapping there is not the heap's).
  char *base = g_region.base;
  __atomic_store_n(&g_region.bytes, uintptr_t(keep) * kPageSize, __ATOMIC_RELEASE);
  __atomic_store_n(&g_region.pages, uint32_t(keep), __ATOMIC_RELEASE);
  g_pool_chunks = kc;
  tier_region_shrunk(size_t(keep) * kPageSize);
  if (g_secure) mprotect(base + size_t(keep - kGroupPages) * kPageSize, kPageSize, PROT_NONE);
  munmap(base + size_t(keep) * kPageSize, size_t(had_groups - kg) * kGroupPages * kPageSize);
  size_t half = g_region.mirror, pools = g_pool_area * 8, stride = g_pool_stride * 8;
  constexpr size_t L = kMetaStride;
  shrink_area(0, kg * L, groups * L);                                 // lines
  shrink_area(1, groups * L + kg * 8, groups * (L + 8));              // rrec
  shrink_area(2, groups * (L + 8) + kg * 2, groups * (L + 10));       // life
  shrink_area(3, groups * (L + 10) + kg, pools);                      // node, and the padding
  shrink_area(4, pools + kc * stride, half);                          // pool chunks
  shrink_area(5, half + kg * L, half + pools);                        // RemoteState lines (mirror)
  shrink_area(6, half + pools + kc * stride, 2 * half);               // the pools' mirror
  return g_region.bytes;
}

// Claim the shared slab whose head is at `page`, if it still is one with live blocks: while
// claimed nobody adopts it or returns it to the depot (frees still land in its remote bits), so
// its pages keep their meaning while the tier moves them.  Same rules as an adoption.
SlabMeta *tier_claim(uint32_t page) {
  SlabMeta *s = &meta_at(page);
  if (s->share.load(std::memory_order_relaxed) == kParkedIdle) {   // parked: one CAS
    uint8_t expected = kParkedIdle;
    if (!s->share.compare_exchange_strong(expected, kSharedClaimed, std::memory_order_acq_rel))
      return nullptr;
    if (s->purged || parked_complete(s)) {   // nothing live to write out
      s->share.store(kParkedIdle, std::memory_order_release);
      return nullptr;
    }
    return s;
  }
  unsigned cls = __atomic_load_n(&s->cls, __ATOMIC_RELAXED);
  if (cls >= kNumClasses || s->owner.load(std::memory_order_relaxed) != kSharedOwner) return nullptr;
  // Not waited for: a slab of a class whose lock is taken is busy (the tier looks again later).
  // Its holder may be a thread whose signal handler waits for the tier thread (t_lock_wait).
  TryGuard g(class_lock(cls));
  if (!g.held) return nullptr;
  if (s->owner.load(std::memory_order_seq_cst) != kSharedOwner || s->cls != cls) return nullptr;
  uint8_t st = s->share.load(std::memory_order_acquire);
  if (st != kSharedIdle && st != kSharedQueued) return nullptr;
  if (remote_total(s) >= s->out) return nullptr;   // nothing live: it is on its way back
  if (st == kSharedQueued) shared_unlink(s);
  s->share.store(kSharedClaimed, std::memory_order_relaxed);
  return s;
}

// End a claim: the slab is shared and idle again; the frees that came meanwhile are looked at now.
void tier_unclaim(SlabMeta *s) {
  if (s->owner.load(std::memory_order_relaxed) != kSharedOwner) {   // parked (a claim keeps it so)
    s->share.store(kParkedIdle, std::memory_order_release);
    return;
  }
  {
    Guard g(class_lock(s->cls));
    s->share.store(kSharedIdle, std::memory_order_seq_cst);
  }
  shared_settle(s);
}

void free_remote(void *p, SlabMeta *s, const char *call) {
  if (ZNS_UNLIKELY(g_secure)) {   // every free, in that mode: the quarantine changes
    ThreadCache *tc = t_cache;
    // (No cache: no quarantine either.  Busy: a handler's free, see secure_free.)
    if (tc->id == kSentinelId || tc->busy) return secure_free(p, s, call, false);
    SlowPath busy(tc);
    return secure_free(p, s, call, true);
  }
  free_remote_plain(p, s, call);
}

// The free fast path's way in.  A signal handler's free that interrupted a slow path or a locked
// region of this thread (see free_local_checked) must not move the slab between the cache's lists
// there, nor take the depot lock: the move waits for the owner's next free into the slab.
void credit_out_free(ThreadCache *tc, SlabMeta *s) {
  if (ZNS_UNLIKELY(tc->busy || t_guards != 0)) { s->credit = 1; return; }
  credit_out(tc, s);
}

// The owner's frees (or merged remote ones) used up the credit of slab s: a parked full slab with a
// reuse_worth free joins the partial list, one with none out goes back to the depot (unless the tier or
// a purge holds it: then it waits on the partial list with credit 0 for an unpark or the exit); a
// current slab just starts counting again.
void credit_out(ThreadCache *tc, SlabMeta *s) {
  SlowPath busy(tc);
  if (s->state == kParkedFull) {
    list_unlink(tc->full[s->cls], s);
    s->state = kParkedPartial;
    partial_append(tc, s);
  } else if (s->state != kParkedPartial) {
    s->credit = kCurrentCredit;
    slot_on(tc, s->cls);   // (off: look again; slot_policy)
    return;
  }
  unsigned out = s->blocks - free_count(s);   // remote frees not merged yet count as out
  // The bin's `last` block, if it is this slab's, is free too: a thread that freed everything and
  // went idle would otherwise keep the slab of its first free for good (a helper's review: 16
  // threads that freed 160 KiB of every class in order held 109 MB after malloc_trim, glibc 30).
  void *last = tc->last[s->cls];
  bool mine = slot_holds(last) && head_meta(last) == s;
  if (out > (mine ? 1u : 0u)) {
    s->credit = uint16_t(out - mine);
    return;
  }
  if (mine) {   // out == 1: the slab is complete with `last` in its bitmap
    // (taken from the slot first, by one instruction: a signal handler's malloc may take it too)
    if (!__atomic_compare_exchange_n(&tc->last[s->cls], &last, nullptr, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
      s->credit = 1;   // out again: the next free of the owner looks again
      return;
    }
    int i = block_index(s, last);
    bits(s)[unsigned(i) >> 6].fetch_or(uint64_t(1) << (i & 63), std::memory_order_relaxed);
  }
  if (parked_take_back(s)) {
    partial_unlink(tc, s);
    depot_release(s, s->purged);
  }
}

void free_misuse(const char *what, const char *call, void *p) { fatal(what, call, p); }

// The free fast path's owner test failed (owner_and_hint): another owner's slab, or one of this
// thread's own with remote frees pending.  (The owner changes only by this thread's hand here.)
void free_not_plain(void *p, SlabMeta *s, const char *call) {
  if (s->owner.load(std::memory_order_relaxed) != t_cache->id) return free_remote(p, s, call);
  if (block_index(s, p) < 0) return free_misuse("free of a pointer that is not the start of a block", call, p);
  free_local_checked(p, s, call);   // (remote frees pending: it looks at the remote bits)
}

// A local free whose block looks free already, or whose slab may have unmerged remote frees.
// Counted against the slab's credit like any free of the owner (a parked slab must still move).
void free_local_checked(void *p, SlabMeta *s, const char *call) {
  // This thread is inside a slow path that changes its cache, or holds one of the library's
  // locks: a signal handler's free that interrupted it there (of a block of a slab the thread took
  // over from an exited one, which to the program is another thread's).  The slow path below may
  // take the depot lock (bits_install) or move the slab between the cache's lists: the free goes
  // the remote way instead, lock-free, into the slab's remote bits and the thread's own inbox (a
  // stress review, 2026-12-06: the handler waited for the depot lock its own thread held).
  if (ZNS_UNLIKELY(t_guards != 0 || t_cache->busy)) {
    if (__atomic_load_n(&t_cache->last[s->cls], __ATOMIC_RELAXED) == p) fatal("double free", call, p);
    uint16_t life = g_region.life[s - g_region.meta].load(std::memory_order_relaxed);
    void *one[1] = {p};
    return apply_remote(one, &life, 1);
  }
  uint32_t i = uint32_t(block_index(s, p));   // (the caller checked it is a block start)
  if (bits(s) == full_bits()) {   // the first free into a full slab: now the fast path's
    {
      SlowPath busy(t_cache);   // (a record for the slab: the owner's thread, a real cache)
      bits_install(s);
    }
    return dealloc(p, call);
  }
  free_bit(t_cache, s, p, i, call);
}

void *alloc_aligned(size_t n, size_t align) {
  unsigned c = class_of(n > align ? n : align);
  while (kClasses.info[c].size % align != 0) ++c;   // 4096 serves every alignment up to a page
  return alloc_class(c);
}

void flush_thread() {
  if (g_init_state.load(std::memory_order_acquire) != 2 || t_cache->id == kSentinelId) return;
  SlowPath busy(t_cache);
  if (g_secure) secure_drain(t_cache);   // checked on the way out: a late write after free shows
  flush_remote(t_cache);
}

namespace {
// A signal handler's trim that interrupted this thread under one of the library's locks (the
// depot's, in a refill: it waited for itself; a helper's review, 3 runs of 3 hung) or in a slow
// path that changes the cache's lists: nothing now.
bool may_trim() {
  return g_init_state.load(std::memory_order_acquire) == 2 && t_guards == 0 && !t_cache->busy;
}
// The commit of every empty group (see decommit_clean): the pages given back.
uint64_t decommit_now() {
  if (!decommit_possible()) return 0;
  Guard g(g_depot_lock);
  return decommit_clean();
}
bool trim_pages();
}  // namespace

bool trim() {
  if (!may_trim()) return false;
  bool released = trim_pages();
  if (decommit_possible() && commit_limited() && decommit_now() > 0) released = true;
  return released;
}

bool heap_release_commit(size_t bytes) {
  if (!may_trim() || !decommit_possible() || !commit_limited(bytes)) return false;
  // Not when what could go back is small beside the request: the trim would purge the heap's
  // empty slabs for nothing, at each refused request (helper-96's review: a program asking for
  // 200 MiB again and again between small churns, 0.66 ms a refusal instead of 3 us, and every
  // empty page faulted in again).  Committed region pages no slab holds: an upper bound.
  uint64_t idle;
  {
    Guard g(g_depot_lock);
    uint64_t committed = g_data_committed - g_depot.decommitted_pages;   // (decommitted: below the bump)
    idle = committed > g_depot.owned_pages ? committed - g_depot.owned_pages : 0;
  }
  if (idle * kPageSize < bytes / 2) return false;
  trim_pages();
  return decommit_now() > 0;
}

namespace {
// trim's purge: every empty slab's pages.
bool trim_pages() {
  flush_thread();
  {
    Guard g(g_depot_lock);
    g_depot.refault_pages = 0;   // asked to give memory back: what the depot learned goes too
    g_depot.owned_peak = g_depot.owned_pages;
    g_depot.forget_ms = uint32_t(now_ms());   // (its own purges are stamped as old: not refaults)
  }
  bool released = depot_purge(true);
  // Parked slabs whose blocks all came back but whose owners have not looked since (idle threads):
  // their pages go back too.
  uint32_t pages = __atomic_load_n(&g_depot.bump, __ATOMIC_ACQUIRE);
  for (uint32_t p = 0; p < pages; p += kGroupPages) {
    SlabMeta &m = meta_at(p);
    if (meta_at(p).share.load(std::memory_order_relaxed) == kParkedIdle &&
        !__atomic_load_n(&m.purged, __ATOMIC_RELAXED) && parked_complete(&m) && parked_purge(&m))
      released = true;
  }
  return released;
}
}  // namespace

size_t live_block_size(const void *p, const char *call) {
  SlabMeta *s = head_meta(p);
  uint32_t owner = s->owner.load(std::memory_order_acquire);
  if (owner == kNoOwner) fatal("use of a block that is not allocated", call, p);
  int i = block_index(s, p);
  if (i < 0) fatal("pointer is not the start of a block", call, p);
  // Freed: merged into its slab's bitmap, or freed remotely and not merged yet, or its owner's
  // `last`, or in this thread's remote buffer, or (secure) in a quarantine.  A free buffered by
  // another thread is not seen until that thread applies it.
  unsigned w = unsigned(i) >> 6;
  uint64_t bit = uint64_t(1) << (i & 63);
  if (freed_in_bitmap(s, w, bit) || (remote_word(s, w, std::memory_order_relaxed) & bit))
    fatal("use of a freed block", call, p);
  if (owner != kSharedOwner &&
      __atomic_load_n(&g_caches[owner_cache(owner)]->last[s->cls], __ATOMIC_RELAXED) == p)
    fatal("use of a freed block", call, p);
  ThreadCache *tc = t_cache;
  for (unsigned k = 0, n = buffered(tc); k < n; ++k)
    if (tc->remote_buf[k] == p) fatal("use of a freed block", call, p);
  if (g_secure && *static_cast<const uint64_t *>(p) == quarantine_mark(p))
    fatal("use of a freed block", call, p);
  return s->size;
}

// Take a free slot of s chosen uniformly at random (its bit cleared); -1 if s has none.  Owner
// only.  First up to kRandomDraws draws of a block index, the first that finds its bit set taken:
// a draw that succeeds is uniform over the free blocks.  Only when every draw misses (the slab
// nearly full) the exact pick: count the free blocks, take the k-th, uniform as well; so is the
// mixture.  (The count alone read the slab's whole bitmap at every malloc: 256 words at 8 B, 128 at
// 16 B since the groups are 128 KiB; ~285 ns an op at 8 B.)  Over a slab's life, from empty to
// full, a malloc makes about ln(kRandomDraws) + 1 draws, and 1 / kRandomDraws of them count.
// A slab of up to kRandomDrawsAbove blocks (a few words) is counted at once: its draws' misses,
// hard to predict, cost more than the count (1 KiB blocks: ~10% slower an op with draws).
constexpr unsigned kRandomDraws = 16, kRandomDrawsAbove = 512;
int take_random_slot(SlabMeta *s, uint64_t *rng) {
  std::atomic<uint64_t> *f = bits(s);
  if (f == full_bits()) return -1;
  uint64_t blocks = s->blocks;
  for (unsigned t = blocks > kRandomDrawsAbove ? 0 : kRandomDraws; t < kRandomDraws; ++t) {
    unsigned i = unsigned(((xorshift_next(rng) >> 32) * blocks) >> 32);   // [0, blocks): each index
                                                                          // 2^32 / blocks draws, +-1
    uint64_t x = f[i >> 6].load(std::memory_order_relaxed), bit = uint64_t(1) << (i & 63);
    if (x & bit) {
      f[i >> 6].store(x & ~bit, std::memory_order_relaxed);
      return int(i);
    }
  }
  unsigned total = free_count(s);
  if (total == 0) return -1;
  unsigned k = unsigned(xorshift_next(rng) % total);
  for (unsigned w = 0, words = words_of(s); w < words; ++w) {
    uint64_t x = f[w].load(std::memory_order_relaxed);
    unsigned n = unsigned(__builtin_popcountll(x));
    if (k >= n) { k -= n; continue; }
    uint64_t y = x;
    for (; k; --k) y &= y - 1;   // drop the k lowest set bits
    unsigned b = unsigned(__builtin_ctzll(y));
    f[w].store(x & ~(uint64_t(1) << b), std::memory_order_relaxed);
    return int(w * 64 + b);
  }
  return -1;
}

// The words of bitmap b of slab s (its free bits or its remote bits, read by a thread that holds no
// claim on s) that such a reader may look at: as many as s's `blocks` says, but never past what b
// holds (a line's own words, a record's), and none of kFullBits.  s may have begun another life
// between the loads of `blocks` and b: a count of one class's with a record of another's read past
// the record, into the next one or an uncommitted page (helper-88's review, 2026-12-07).
unsigned racy_words(const SlabMeta *s, const std::atomic<uint64_t> *b) {
  unsigned words = words_of(s), cap = 0;
  const char *at = reinterpret_cast<const char *>(b), *line = reinterpret_cast<const char *>(s->inline_free);
  if (at == line || at == line + g_region.mirror) {
    cap = kInlineWords;
  } else if (b && b != full_bits()) {
    unsigned c = pool_of(b);
    if (c == kNumClasses) c = pool_of(reinterpret_cast<const std::atomic<uint64_t> *>(at - g_region.mirror));
    if (c < kNumClasses) cap = g_bitmap_pool[c].words;
  }
  return words < cap ? words : cap;
}

// ---- stats snapshot (stats.cpp formats it) --------------------------------------------------------
void heap_snapshot(HeapSnapshot *out) {
  *out = HeapSnapshot{};
  if (g_init_state.load(std::memory_order_acquire) != 2) return;
  out->secure = g_secure;
  // Counters and slab metadata are read racily (relaxed): a dump is a snapshot, not a barrier.
  uint32_t n = __atomic_load_n(&g_num_caches, __ATOMIC_ACQUIRE);
  for (uint32_t id = 1; id <= n; ++id) {
    ThreadCache *tc = g_caches[id];
    if (!tc) continue;
    for (unsigned c = 0; c < kNumClasses; ++c)
      out->cls[c].allocated += __atomic_load_n(&tc->alloc_count[c], __ATOMIC_RELAXED) +
                               __atomic_load_n(&tc->slot_count[c], __ATOMIC_RELAXED);
  }
  // Live blocks: what the owners count out, less remote frees not merged yet.
  uint32_t pages = __atomic_load_n(&g_depot.bump, __ATOMIC_RELAXED);
  for (uint32_t p = 0; p < pages; p += kGroupPages) {
    SlabMeta &m = meta_at(p);
    if (m.owner.load(std::memory_order_acquire) == kNoOwner) continue;
    std::atomic<uint64_t> *b = bits(&m), *rb = rbits_of(&m, b);   // (each read once: racy_words)
    int64_t live = __atomic_load_n(&m.blocks, __ATOMIC_RELAXED);
    for (unsigned w = 0, words = racy_words(&m, b); w < words; ++w)
      live -= __builtin_popcountll(b[w].load(std::memory_order_relaxed));
    if (remote_written(p))
      for (unsigned w = 0, words = racy_words(&m, rb); w < words; ++w)
        live -= __builtin_popcountll(rb[w].load(std::memory_order_relaxed));
    unsigned c = __atomic_load_n(&m.cls, __ATOMIC_RELAXED);
    if (live > 0 && c < kNumClasses) out->cls[c].live += uint64_t(live);
  }
  // A bin's `last` block is free, though its bit is still clear.
  for (uint32_t id = 1; id <= n; ++id) {
    ThreadCache *tc = g_caches[id];
    if (!tc) continue;
    for (unsigned c = 0; c < kNumClasses; ++c)
      if (slot_holds(__atomic_load_n(&tc->last[c], __ATOMIC_RELAXED)) && out->cls[c].live) out->cls[c].live--;
  }
  for (unsigned c = 0; c < kNumClasses; ++c)
    if (out->cls[c].live > out->cls[c].allocated) out->cls[c].allocated = out->cls[c].live;
  Guard g(g_depot_lock);
  for (unsigned c = 0; c < kNumClasses; ++c) out->cls[c].slabs = g_depot.slabs[c];
  out->owned_pages = g_depot.owned_pages;
  out->dirty_pages = g_depot.dirty_pages + g_depot.purging_pages;
  out->dirty_cap_pages = dirty_cap();
  out->refault_pages = g_depot.refault_pages;
  out->clean_pages = g_depot.clean_pages;
  out->purged_total_pages = g_depot.purged_total;
  out->purge_calls = g_depot.purge_calls;
  out->decommitted_pages = g_depot.decommitted_pages;
  out->decommit_runs = g_depot.decommit_runs;
  out->decommit_calls = g_depot.decommit_calls;
  out->purge_ranges = g_depot.purge_ranges;
  out->region_bytes = g_region.bytes;
  out->touched_pages = g_depot.bump;
  for (const BitmapPool &bp : g_bitmap_pool) out->bitmap_pool_bytes += uint64_t(bp.bump) * bp.words * 8;
  for (size_t i = 0, n = g_region.remote_pages ? (g_region.mirror >> kPageShift) / 64 + 1 : 0; i < n; ++i)
    out->remote_state_bytes += uint64_t(__builtin_popcountll(g_region.remote_pages[i].load(std::memory_order_relaxed))) * kPageSize;
  out->numa_nodes = g_nodes;
  for (unsigned i = 0; i < kMaxNodes; ++i) out->node_id[i] = g_node_id[i];
  out->machine_nodes = g_machine_nodes;
  out->numa_off = g_numa_off;
  for (unsigned i = 0; i < kMaxNodes; ++i) {
    out->node_dirty_pages[i] = g_depot.node_dirty_pages[i];
    out->node_takes[i] = g_depot.node_takes[i];
  }
  out->cross_node_takes = g_depot.cross_node_takes;
  out->caches = n;
  out->threads_seen = g_threads_seen.load(std::memory_order_relaxed);
}

}  // namespace zns
