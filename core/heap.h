// The slab heap: region, slab metadata, thread caches and the depot.  This header holds the data
// structures and the inlined fast paths; heap.cpp holds every slow path.
//
// Layers and data flow (see DESIGN.md):
//   shim/malloc.cpp  --zns::alloc/dealloc-->  ThreadCache (this header, lock-free, no atomics RMW)
//        |  slow path: refill/drain                    |  slab becomes empty
//        v                                             v
//   Depot (one lock): empty slabs, dirty (resident) then clean (purged) --> os_purge after a delay
//   Region: one reserved range of groups of 32 pages; SlabMeta[group] and RemoteState[group] live
//   outside it.
//
// Glossary
//   page      4 KiB of the region, numbered from the region base
//   group     32 aligned pages (128 KiB); group g holds at most one slab, at its start
//   slab      the first 1..32 pages of a group, holding blocks of one size class (size_class.h
//             picks the span); its metadata is its group's SlabMeta and RemoteState.  Lists and the
//             tier name a slab by its first page ("head"), always a multiple of 32
//   owner     the thread cache a slab belongs to; only the owner writes SlabMeta.free
//   local     free by the owner: a plain bit set in SlabMeta.free
//   remote    free by any other thread: an atomic bit set in the slab's remote bits (rbits), and
//             the slab is queued once on the owner's inbox; the owner merges them in its slow path
//   current   the slab a thread cache allocates from for a class
//   parked    a slab its cache filled and keeps owning: the owner's frees into it are local (the
//             fast path, counted down in `credit`); on the cache's partial list once enough is
//             free (reuse_worth), from which refills take it back as current; to the depot when empty
//   shared    a slab of a thread that exited (or, ZNS_SECURE, any full slab); its frees are
//             remote, but a freer that allocates its class takes it over (adopt_on_free); the
//             depot lists it for reuse (adoption) once enough is free, and takes it back empty
//   depot     empty slabs with no owner, ready for any class, and the shared slabs worth reusing
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/platform.h"
#include "core/size_class.h"

namespace zns {

inline constexpr uint32_t kNil = 0xffffffffu;       // "no page" in lists
inline constexpr uint32_t kNoOwner = 0;             // SlabMeta.owner of a slab in the depot
inline constexpr uint32_t kSentinelId = 0xfffffffeu;  // id of the sentinel caches: owns nothing
inline constexpr uint32_t kSharedOwner = 0xfffffffdu; // SlabMeta.owner of a slab no cache owns
inline constexpr uint32_t kRemoteBuffer = 64;         // frees to others' slabs batched per thread
inline constexpr uint32_t kRemoteSeenWords = 64;      // ThreadCache.remote_seen: 4096 bits
inline constexpr uint8_t kAppending = 1;              // ThreadCache.in_remote: an entry is being added,
inline constexpr uint8_t kFlushing = 2;               // or the buffer applied
inline constexpr uint32_t kQuarantine = 256;          // ZNS_SECURE: freed blocks held per thread
// ZNS_SECURE: SlabMeta.owner of a slab a cache owns is its id plus this bit, so the free fast path
// (owner == my id) never matches and every free takes the checked, quarantining slow path.
inline constexpr uint32_t kSecureBit = 1u << 24;
// A cache parks its current slab when it runs out of free blocks, instead of sharing it: the slab
// stays the cache's (same owner value), so the owner's frees into it take the free fast path, which
// counts them down in SlabMeta.credit; at zero a slow path (credit_out) moves the slab to the
// cache's partial list (reuse_worth blocks free) or hands it back to the depot (none out).
// SlabMeta.credit of a current slab: its frees need no list move; at zero it is just reset.
inline constexpr uint16_t kCurrentCredit = 0xffff;
// A cache that has not refilled for this long is idle: other threads that complete one of its
// parked slabs (free its last block) give the slab's pages back in place (parked_purge).
// Every refill reads the clock for it (46 of a refill's ~250 instructions): reading it at every
// 16th refill only (2026-12-07, reverted) made a busy producer look idle to its consumer, whose
// free that completed a parked slab came right after the refill that parked it: a madvise per
// slab and 12k-23k page faults where there had been 200 (helper-86's paced producer/consumer).
inline constexpr uint32_t kParkIdleMs = 10;
// A thread that frees into a shared slab of a class it allocates takes the slab over (parked, see
// adopt_on_free), unless it has this many partly free slabs of the class parked already.
inline constexpr unsigned kAdoptReserve = 4;
// ZNS_SECURE: of every this many pages, the first slab group holds no slab and its first page (as
// the first page of the region's last group) is an inaccessible guard, so a linear overflow cannot
// run through the heap (see bump_take).
inline constexpr uint32_t kGuardGroup = 128;   // (512 KiB: a guard group and three slab groups)

// The life of a slab.  A cache owns exactly one slab per class, its current one, so a free by
// the owner never has to move a slab between lists.
enum SlabState : uint8_t {
  kCurrent = 0,   // the slab of the cache's bin for cls; stays even when empty
  kParkedFull = 4,     // owned, not current, no free block: on its cache's full list
  kParkedPartial = 5,  // owned, not current, some free blocks: on its cache's partial list
  kShared = 2,    // given up by its cache when it ran out of free blocks: every free is remote;
                  // on the depot's class list once enough is free, back to empty when all are
  kInDepot = 3,   // empty, no owner
};

// Who may claim a slab (SlabMeta.share): the owner, the depot's adopters, the tier, a purge.
enum ShareState : uint8_t {
  kOwned = 0,         // a cache owns the slab (or it is empty in the depot)
  kSharedIdle = 1,    // shared, not yet worth reusing
  kSharedQueued = 2,  // shared, on the depot's list for its class (changes under the class lock)
  kSharedClaimed = 3, // being adopted by a cache or returned to the depot as empty; or (a parked
                      // slab) being written out by the tier
  kParkedIdle = 4,    // parked (see kCurrentCredit): the tier may claim it (CAS to kSharedClaimed);
                      // the owner takes it back with a CAS to kOwned before it unparks or frees it
};

// Bytes of metadata per group in the line array (and its mirror): the line itself and a line of
// padding, never touched.  Intel's L2 fetches lines in aligned pairs (the spatial prefetcher), so
// the lines of two neighbouring groups, whose slabs two threads may own and whose fast paths write
// their lines (credit, inline bits), shared a pair: two threads' churn took 1.2x the time an op
// of one thread's, tcmalloc's 1.06x (DESIGN "Pairs of lines").
inline constexpr unsigned kMetaShift = 7;
inline constexpr size_t kMetaStride = size_t(1) << kMetaShift;
// A bitmap record (below) takes whole pairs of lines too: its words rounded up to this, so that
// two slabs' records, which two threads' fast paths may write, never share a pair.
inline constexpr unsigned kRecordAlign = unsigned(kMetaStride / 8);

// Slab metadata, one cache line per group (and a line of padding: kMetaStride), in an array
// parallel to the region (128 B per 128 KiB): a free finds it with two shifts of the pointer's
// offset, and everything the free fast path reads (owner, class geometry, where the bitmap is)
// is in this one line.
//
// Bitmaps.  A slab's free bitmap has bitmap_words(blocks) words: up to kInlineWords it is `inline_free`
// in this line; longer ones (the classes below 512 B but 448 B, whose slabs fill their group: 8192
// blocks of 16 B need 128 words) are a record in the bitmap pool of their class, which the slab keeps while it
// serves that class (assigned by depot_take, which moves it back to the pool only to take one of
// another class).  `bitmap` points at the words either way, so the fast path does not branch.  The
// pools follow the lines in one reservation, in chunks (heap.cpp, kPoolChunk).  The remote bits mirror it: the same reservation again at
// g_region.mirror bytes further (a RemoteState line per group, then the pools' remote records).
// A slab with inline bits has its remote bits at the same place in its RemoteState line; a slab
// with a record holds a remote record of its own as well (g_region.rrec[group]; see rbits()).
//
// Full slabs have no record.  A slab with a record that runs out of free blocks (park) gives its
// record back and points `bitmap` at kFullBits, a read-only array of ones: all blocks are out, so
// the words would be zero, and 1 bit per block is 1.56% of 8 B blocks, 0.78% of 16 B ones.  The
// ones send the owner's free fast path to free_local_checked (its "looks free" test), which takes
// a record again (bits_install); readers use free_word(), which reads kFullBits as zeros, and a
// store to it faults.  Remote frees never touch the local record (their bits are in the slab's
// own remote record), so the owner alone swaps it; a thread that reads another's bitmap confirms
// a positive against the slab's record generation (inline_free[0] of a slab with a record; see
// freed_in_bitmap), since a released record may serve another slab at once.
struct alignas(kMetaStride) SlabMeta {
  std::atomic<uint32_t> owner;     // cache id; kSharedOwner while shared; kNoOwner in the depot
  std::atomic<uint8_t> remote_hint;  // 1 when remote bits may be set that are not merged yet
                                   // (next to owner: the free fast path tests both with one
                                   // compare of the line's first word, see owner_and_hint; that
                                   // word holds only fields written atomically)
  std::atomic<uint8_t> share;      // ShareState: who may claim the slab (other threads too)
  uint16_t out;                    // shared: blocks out when the slab was given up (written
                                   // with __atomic stores only: in the line's first word)
  uint8_t cls;                     // size class
  uint8_t state;                   // SlabState.  Branched on only by the owner's thread
                                   // (credit_out, the drain) for its own slabs; other threads go
                                   // by owner and share
  uint16_t blocks;                 // blocks in the slab
  uint32_t size;                   // block size (copy of the class table, for locality)
  union {
    uint32_t magic;                // ceil(2^32 / size): exact division for offsets in the slab
    uint32_t stamp;                // in the depot: now_ms() (low 32 bits) when it arrived
  };
  uint32_t prev, next;             // list links (depot, shared, parked), head page numbers
  uint8_t pages;                   // pages of the slab (in the depot: of its last class, the
                                   // pages that may be resident)
  uint8_t purged;                  // parked: every block free and the pages given back in
                                   // place (parked_purge); they read as zero
  uint16_t credit;                 // owned: the owner's frees (fast path, merged remote ones)
                                   // until credit_out must look: parked full, until reuse_worth
                                   // blocks are free; parked partial, until none is out; current,
                                   // kCurrentCredit (reset at zero).  Only the owner's thread
                                   // touches it
  std::atomic<uint64_t> *bitmap;   // the free bitmap (see above): inline_free, or a pool record,
                                   // or kFullBits while a slab with a record is full.  Changes
                                   // only in the depot and, between a record and kFullBits, by
                                   // the owner.  Null in a line never handed out
  std::atomic<uint64_t> inline_free[kInlineWords];  // the bitmap when it fits: 1 = block free;
                                                    // written by the owner only.  A slab with a
                                                    // record: [0] counts its record changes
};
static_assert(sizeof(SlabMeta) == kMetaStride, "SlabMeta is a cache line and its padding");
static_assert(offsetof(SlabMeta, owner) == 0 && offsetof(SlabMeta, remote_hint) == 4,
              "owner and remote_hint are the low 5 bytes of the line's first word (owner_key)");
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "owner_and_hint: bytes 0-4 are the word's low bits");
// The line's first word shifted up by 24 bits: owner and remote_hint alone (bytes 0-4).  It equals
// ThreadCache.owner_key exactly when the cache owns the slab and no remote free is pending.
typedef uint64_t __attribute__((may_alias)) MetaWord;
ZNS_INLINE uint64_t owner_and_hint(const SlabMeta *s) {
  return __atomic_load_n(reinterpret_cast<const MetaWord *>(s), __ATOMIC_RELAXED) << 24;
}
ZNS_INLINE constexpr uint64_t owner_key_of(uint32_t id) { return uint64_t(id) << 24; }
inline constexpr unsigned kInlineWord0 = 5;   // inline_free[0] is word 5 of the line

// Remote frees of a slab: written by other threads, merged by the owner.  Kept apart from SlabMeta
// so that remote writers do not bounce the owner's cache line, in the mirror of the metadata
// array (the same offset, g_region.mirror bytes on; the inline bits at the same place in the line
// as SlabMeta's).  Written only when a remote free comes (and by the owner's merge of one): a
// program whose frees are all its own never writes the mirror, whose pages then stay untouched and
// cost no RAM.
struct alignas(kMetaStride) RemoteState {
  uint32_t inbox_next;             // inbox link (valid while pending)
  std::atomic<uint8_t> pending;    // 1 while the slab is queued on some cache's inbox
  uint8_t fork_mark;               // fork_child only: the slab is on some inbox (see there)
  uint8_t pad0_[2];
  std::atomic<uint32_t> shared_frees;  // shared slab: at least its remote bits (shared_settle's
                                       // cheap look); set by relinquish, counted up by freers
  uint8_t pad_[4];
  std::atomic<uintptr_t> marked;   // the remote bits (their address, as rbits reads it, | 1) whose
                                   // pages and this line's are marked written (remote_will_write):
                                   // a freer that finds its slab's bits here marks nothing again
  uint8_t pad2_[16];
  std::atomic<uint64_t> inline_bits[kInlineWords];  // 1 = freed remotely, not yet merged (for a
                                                    // slab with a record: its mirror holds them)
};
static_assert(sizeof(RemoteState) == sizeof(SlabMeta), "RemoteState mirrors SlabMeta");
static_assert(offsetof(SlabMeta, inline_free) == kInlineWord0 * 8 &&
              offsetof(RemoteState, inline_bits) == kInlineWord0 * 8, "the mirror's layout");

// Where a cache allocates a class from: one bitmap word of its current slab.  The cache keeps its
// bins as four arrays indexed by class (ThreadCache.last/word/base/size), so that the fast paths
// reach each field with one indexed load and no address arithmetic; a Bin is a view of one class's
// entries (references into the arrays), for the slow paths.
struct Bin {
  void *&last;                   // the block its owner freed last, if its bit is still clear: the
                                 // next malloc returns it without touching the bitmap; or null;
                                 // or slot_off() (the slot is off for the class: slot_policy)
  std::atomic<uint64_t> *&word;  // never null: a word of the current slab's bitmap, or g_zero_word
  char *&base;                   // address of the word's block 0
  uint32_t &size;                // block size
};
extern std::atomic<uint64_t> g_zero_word;   // always 0: the word of "no current slab"

// `last` of a class whose slot is off (slot_off(); slot_policy, heap.cpp): not null, so a free
// sets its bit, and negative as a signed word (no user address is), so a malloc takes the word:
// its test is `test; jg` where a test for null is `test; jne`, the same bytes (`cmp $1; ja`, one
// byte longer, moved the slot's return across a 64-byte line and cost pairs 2-5%).  A function,
// not a pointer constant: a reinterpret_cast is no constant expression, and a dynamically
// initialized constant would read as null in a malloc before the constructors.
inline constexpr uintptr_t kSlotOffValue = uintptr_t(1) << 63;
ZNS_INLINE void *slot_off() { return reinterpret_cast<void *>(kSlotOffValue); }
ZNS_INLINE bool slot_holds(const void *last) { return intptr_t(last) > 0; }   // a block

// What slot_policy keeps per class of a cache (slow paths only).
struct SlotPolicy {
  uint32_t mark_word;   // alloc_count and slot_count (low 32 bits) when it last looked
  uint32_t mark_slot;
  uint8_t backoff;      // while off: the next look that turns the slot on waits 64 << backoff
                        // mallocs; one more each time a look finds it should stay off
  uint8_t probing;      // the slot is on to look again (a look that says off steps backoff)
};

// A thread's cache.  Lives in internal memory, never freed: when its thread exits it goes to a
// pool and the next new thread adopts it.
struct ThreadCache {
  // The bins (see Bin): the current slab of each class (its head meta is the word's cache line),
  // or g_zero_word.  `last` first: a malloc+free pair touches nothing else of the cache.
  void *last[kNumClasses];
  std::atomic<uint64_t> *word[kNumClasses];
  char *base[kNumClasses];
  uint32_t size[kNumClasses];
  uint64_t alloc_count[kNumClasses];    // stats: blocks handed out by this cache from bitmap
                                        // words (frees are derived: allocated - live, live from
                                        // the slabs)
  uint64_t slot_count[kNumClasses];     // and from the `last` slot (slot_policy reads both)
  char *fresh_end[kNumClasses];         // the bin's slab came fresh (its pages never touched or
                                        // given back) after the thread had used up one of the
                                        // class: its pages from here on are populated ahead of
                                        // the cursor (populate_ahead).  Null: none to populate.
                                        // (After alloc_count: the fast paths' arrays keep their
                                        // offsets; slow paths only read it)
  std::atomic<uint64_t> *spare[kNumClasses];  // a free-bit record of the class's pool this thread
                                        // keeps for its next full slab's first free (see
                                        // bits_release), or null: a slab's full <-> not-full
                                        // moves then take no lock.  Swapped with one exchange
                                        // (a signal handler's malloc in between sees a whole
                                        // slot).  Stays with the cache through a thread's exit
                                        // (the next thread that adopts the cache uses it)
  uint64_t adopt_off[(kNumClasses + 63) / 64];  // bit cls: a free into a shared slab of the class
                                        // found kAdoptReserve partial slabs parked (adopt_on_free):
                                        // no take-over is tried again until a refill of the class,
                                        // the only thing that uses them up.  (A cache's bin gets
                                        // a slab only through a refill, which clears the bit: a
                                        // thread that adopts the cache starts without stale ones)
  // Parked slabs per class (see kCurrentCredit), doubly linked through SlabMeta.prev/next; only the
  // owner's thread touches them.  Partial ones become current again (FIFO) before the depot is asked.
  uint32_t partial[kNumClasses];        // oldest first: refills take the head, moves append
  uint32_t partial_tail[kNumClasses];
  uint32_t full[kNumClasses];
  uint32_t last_refill_ms;              // now_ms() at the last refill: other threads ask if it
                                        // is idle before they purge its complete parked slabs
                                        // (a step to the next word of the current slab, in
                                        // alloc_slow, is not a refill)
  uint32_t id;                          // index in the cache table; kSentinelId for sentinels
  uint64_t owner_key;                   // owner_key_of(id): owner_and_hint() of its own slabs
                                        // without pending remote frees
  uint32_t remote_count;                // entries in remote_buf; stored after the entry it counts
                                        // (so a fork's child may apply what it counts)
  uint32_t in_remote;                   // kAppending / kFlushing while the thread changes the
                                        // buffer (a signal handler's free is then applied at once)
  uint64_t remote_seen[kRemoteSeenWords];   // a filter of the addresses in remote_buf (a bit
                                            // per address hash; cleared at each flush)
  void *remote_buf[kRemoteBuffer];      // frees of blocks in slabs this cache does not own, not yet
                                        // applied: still "out" (never reused) until the flush
  uint16_t remote_life[kRemoteBuffer];  // g_region.life of each entry's slab when it was buffered
  std::atomic<uint32_t> inbox;          // slabs with remote frees (Treiber stack of pages)
  std::atomic<bool> attached;           // a live thread uses this cache
  uint32_t busy;                        // its thread is inside a slow path that changes the cache
                                        // (bins, lists, records; see SlowPath): a fork's child
                                        // reads none of it, takes its slabs by owner and resets
                                        // it (fork_child_salvage)
  ThreadCache *pool_next;               // pool link while detached
  // ZNS_SECURE only.  The bins then stay empty (g_zero_word), so every malloc takes the slow path
  // and allocates from these slabs, at a random free slot.
  SlabMeta *secure_slab[kNumClasses];   // the current slab of each class, or null
  SlotPolicy slot_policy[kNumClasses];  // (slow paths only)
  uint64_t rng;                         // xorshift state: slot choice and quarantine eviction
  uint32_t quar_count;                  // entries in quar
  void *quar[kQuarantine];              // freed blocks, zeroed and marked, not yet reusable

  constexpr explicit ThreadCache(uint32_t cache_id)
      : last{}, word{}, base{}, size{}, alloc_count{}, slot_count{}, fresh_end{}, spare{}, adopt_off{}, partial{}, partial_tail{}, full{}, last_refill_ms(0), id(cache_id), owner_key(owner_key_of(cache_id)), remote_count(0), in_remote(0), remote_seen{}, remote_buf{}, remote_life{}, inbox(kNil),
        attached(false), busy(0), pool_next(nullptr), secure_slab{}, slot_policy{}, rng(0), quar_count(0), quar{} {
    for (unsigned c = 0; c < kNumClasses; ++c) {
      word[c] = &g_zero_word;
      partial[c] = partial_tail[c] = full[c] = kNil;
    }
  }
};

// Bin c of cache tc (a view: references into its arrays).
inline Bin bin_of(ThreadCache *tc, unsigned c) { return Bin{tc->last[c], tc->word[c], tc->base[c], tc->size[c]}; }
// No current slab.  The slot is left as it is: a block there is out in its own slab, whichever it
// is, and the next malloc of the class takes it (a signal handler's free may have put it there
// after the caller emptied the slot; nulling it lost the block, and its slab never completed:
// helper-95).  Who wants the slot empty as well says so (slot_reset).
inline void bin_clear(Bin b) {
  b.word = &g_zero_word;
  std::atomic_signal_fence(std::memory_order_seq_cst);   // (the word first: see bin_point)
  b.base = nullptr;
  b.size = 0;
}

// All ones: the bitmap of a full slab with no record (see SlabMeta "Full slabs"), in read-only
// memory, long enough for any slab.
struct FullBits {
  uint64_t w[kMaxBitmapWords];
  constexpr FullBits() : w{} {
    for (uint64_t &x : w) x = ~uint64_t(0);
  }
};
alignas(64) inline constexpr FullBits kFullBitsData{};
ZNS_INLINE std::atomic<uint64_t> *full_bits() {
  return reinterpret_cast<std::atomic<uint64_t> *>(const_cast<uint64_t *>(kFullBitsData.w));
}

struct Region {
  char *base = nullptr;          // first page (128 KiB aligned is not required: groups count from it)
  uintptr_t bytes = 0;           // reserved size; ownership is (p - base) < bytes
  SlabMeta *meta = nullptr;      // one per group, then rrec, then the bitmap pools (see SlabMeta)
  std::atomic<uint64_t> **rrec = nullptr;  // per group: the remote record of its slab, if its
                                           // bitmap is a record (always a record's address or null)
  std::atomic<uint16_t> *life = nullptr;   // per group: steps each time its slab goes back to the
                                           // depot.  A remote free buffered in an earlier life
                                           // is a double free (see apply_remote)
  uint8_t *node = nullptr;       // per group: the NUMA node its pages are on, as far as the depot
                                 // knows (written only when it keeps nodes apart; see node_of)
  RemoteState *remote = nullptr; // the mirror: meta + mirror bytes
  size_t mirror = 0;             // bytes from a free bitmap word to its remote word
  std::atomic<uint64_t> *remote_pages = nullptr;  // bit i: page i of the mirror has been written
                                                  // (set before the first store to it, never cleared)
  uint32_t pages = 0;            // a multiple of kGroupPages
};
extern Region g_region;
extern std::atomic<uint32_t> g_purge_claims;   // parked_purge calls under way (see fork_child)
extern std::atomic<uint32_t> g_inbox_ops;      // inbox drains and notify pushes under way (ditto)
extern std::atomic<uint32_t> g_shared_claims;  // shared slabs claimed, not yet moved (ditto)
// ZNS_POPULATE=1 with no tier and not ZNS_SECURE (set by heap_init): fresh slabs of a class a
// thread has used up a slab of are populated ahead of the cursor (ThreadCache.fresh_end).
extern std::atomic<bool> g_populate;
// Tests only: called by depot_purge between taking its slabs and giving their pages back.
extern std::atomic<void (*)()> g_test_purge_hook;
// Tests only: called by a fork's child for each cache of a thread that does not exist there, as
// its walk begins to change it.
extern std::atomic<void (*)()> g_test_fork_walk_hook;
// Tests only: called by a refill that found no free block in its current slab, before it parks it
// (where a signal handler's free may come).
extern std::atomic<void (*)()> g_test_refill_hook;
// Tests only: called by a malloc's step to the next word of its slab (alloc_step) once the bin
// points there, before it takes the word's lowest block (where a signal handler's malloc may come).
extern std::atomic<void (*)()> g_test_step_hook;
// Tests only: called by the step between its store of the word's base and of the word itself.
extern std::atomic<void (*)()> g_test_pair_hook;
// Tests only: called by the step as it starts, before it marks the cache busy.
extern std::atomic<void (*)()> g_test_step_entry_hook;
// Tests only: the depot's lock (a test holds it to show that a path does not take it).
Lock &test_depot_lock();
// Tests only: the depot keeps n NUMA nodes apart from now on (1: not NUMA-aware), its dirty slabs
// given back first; call with no other thread in the heap.  And this thread's node (-1: its CPU's).
void test_set_numa_nodes(unsigned n);
void test_set_node(int node);
extern bool g_secure;   // ZNS_SECURE=1; fixed once the heap is initialised

// The cache id in a SlabMeta.owner value (strips kSecureBit); special values pass unchanged.
ZNS_INLINE uint32_t owner_cache(uint32_t owner) {
  return owner < kSharedOwner ? owner & ~kSecureBit : owner;
}

// TLS: a pointer to the thread's cache, starting at a constant empty sentinel so the fast path
// never asks "initialised?".
extern __thread ThreadCache *t_cache __attribute__((tls_model("initial-exec")));

// ---- slow paths (heap.cpp) ---------------------------------------------------------------------
ZNS_NOINLINE void *alloc_slow(unsigned cls);
ZNS_NOINLINE void free_remote(void *p, SlabMeta *s, const char *call);
ZNS_NOINLINE void free_local_checked(void *p, SlabMeta *s, const char *call);   // p: a block start
// The free fast path's first test failed: another owner (free_remote), or this cache's slab with
// remote frees pending (free_local_checked, after the block-start check).
ZNS_NOINLINE void free_not_plain(void *p, SlabMeta *s, const char *call);
// fatal() for the free fast path: declared as returning so that the call is a tail jump (a call to
// a noreturn function would make the fast path set up a stack frame).  Never returns.
ZNS_NOINLINE void free_misuse(const char *what, const char *call, void *p);
// The owner's free brought slab s's credit to zero (see kCurrentCredit): move or release it.
ZNS_NOINLINE void credit_out(ThreadCache *tc, SlabMeta *s);
ZNS_NOINLINE void credit_out_free(ThreadCache *tc, SlabMeta *s);   // the free fast path's
void heap_init();                                // idempotent
void *alloc_aligned(size_t n, size_t align);     // align <= kPageSize, power of two, n <= kMaxSmall
bool trim();                                     // purge every empty slab in the depot now (and
                                                 // parked ones all free): true if pages went back
bool heap_release_commit(size_t bytes);          // the next allocator refused `bytes`: under a
                                                 // data limit or strict overcommit, trim and give
                                                 // back the commit of every empty group (heap.cpp
                                                 // "commit given back"); true if some went back
                                                 // (worth asking again)
void flush_thread();                             // apply this thread's buffered remote frees
                                                 // (and, secure, release its quarantine)
// p (in the region) must be a live block: its block size, or an abort naming `call` (freed, not
// a block start, never handed out).  For realloc and malloc_usable_size.
size_t live_block_size(const void *p, const char *call);

// ZNS_SECURE's malloc takes a free block of its slab at random (heap.cpp; here for the unit
// tests): the block's index with its bit cleared, or -1 when the slab has none.  Owner only.
int take_random_slot(SlabMeta *s, uint64_t *rng);
ZNS_INLINE uint64_t xorshift_next(uint64_t *state) {   // xorshift64 (state never 0)
  uint64_t x = *state;
  x ^= x << 13; x ^= x >> 7; x ^= x << 17;
  return *state = x;
}

// ---- for the tier (tier/tier.cpp) ---------------------------------------------------------------
uint32_t heap_touched_pages();                   // pages below the depot's bump pointer
// The program lowered RLIMIT_AS to `limit` bytes (the shim's setrlimit/prlimit, after the kernel
// took it): give back the region's unused address space.  Returns the region's size now.
uint64_t region_fit_limit(uint64_t limit);
void heap_reguard();                             // ZNS_SECURE: make the guards again (a fork's
                                                 // child, after the tier remapped the heap)
SlabMeta *tier_claim(uint32_t page);             // the shared slab headed there, claimed, or null
// How many words of b (slab s's free bits, or its remote bits) a reader without a claim on s may
// read: words_of(s), but never past b's own (inline words, a record's), none of kFullBits.
unsigned racy_words(const SlabMeta *s, const std::atomic<uint64_t> *b);
void tier_unclaim(SlabMeta *s);

// ---- helpers -----------------------------------------------------------------------------------
ZNS_INLINE bool owns(const void *p) {
  return uintptr_t(p) - uintptr_t(g_region.base) < g_region.bytes;
}
ZNS_INLINE uint32_t page_of(const void *p) {
  return uint32_t((uintptr_t(p) - uintptr_t(g_region.base)) >> kPageShift);
}
// The slab of a head page (a multiple of kGroupPages), and the other way round.
ZNS_INLINE SlabMeta &meta_at(uint32_t page) { return g_region.meta[page / kGroupPages]; }
ZNS_INLINE RemoteState &remote_at(uint32_t page) { return g_region.remote[page / kGroupPages]; }
ZNS_INLINE uint32_t page_of(const SlabMeta *s) { return uint32_t(s - g_region.meta) * kGroupPages; }
// The RemoteState line of slab s (remote_at(page_of(s)), without the page number).
ZNS_INLINE RemoteState &remote_of(const SlabMeta *s) {
  return *reinterpret_cast<RemoteState *>(uintptr_t(s) + g_region.mirror);
}
// The free bitmap of slab s (bitmap_words(s->blocks) words), and its remote bits.
ZNS_INLINE std::atomic<uint64_t> *bits(const SlabMeta *s) {
  return __atomic_load_n(&s->bitmap, __ATOMIC_RELAXED);
}
// (b: s's free bitmap as the caller read it, so that both come from one life of the slab)
ZNS_INLINE std::atomic<uint64_t> *rbits_of(const SlabMeta *s, std::atomic<uint64_t> *b) {
  if (b == s->inline_free)
    return reinterpret_cast<std::atomic<uint64_t> *>(reinterpret_cast<char *>(b) + g_region.mirror);
  return __atomic_load_n(&g_region.rrec[s - g_region.meta], __ATOMIC_RELAXED);
}
ZNS_INLINE std::atomic<uint64_t> *rbits(const SlabMeta *s) { return rbits_of(s, bits(s)); }
// Word w of free bitmap b of slab s, read by a thread that holds no claim on s: s may have begun
// another life, w and b be of different ones; a line's own words end at kInlineWords (past them
// is the line's padding, kMetaStride).  Zero there and for kFullBits.
ZNS_INLINE uint64_t racy_free_word(const SlabMeta *s, std::atomic<uint64_t> *b, unsigned w) {
  if (b == full_bits() || (b == s->inline_free && w >= kInlineWords)) return 0;
  return b[w].load(std::memory_order_relaxed);
}
// Word w of slab s's free bits (kFullBits reads as zeros: every block out).
ZNS_INLINE uint64_t free_word(const SlabMeta *s, unsigned w) {
  std::atomic<uint64_t> *b = bits(s);
  return b == full_bits() ? 0 : b[w].load(std::memory_order_relaxed);
}
ZNS_INLINE unsigned words_of(const SlabMeta *s) {
  return bitmap_words(__atomic_load_n(&s->blocks, __ATOMIC_RELAXED));
}
// Has the remote state of the slab at `page` ever been written?  Read the remote bits only if so:
// untouched pages of the mirror then stay unmapped (see RemoteState).  Writers mark the pages of
// the slab's RemoteState line and of its remote record first (remote_will_write, seq_cst), and a
// record changes slabs only without remote bits set (depot_take), so "not written" reads like a
// read of zero bits made at this load.
ZNS_INLINE size_t mirror_page_index(const void *p) {
  return size_t(reinterpret_cast<const char *>(p) - reinterpret_cast<const char *>(g_region.remote)) >> kPageShift;
}
ZNS_INLINE bool mirror_page_written(size_t i) {
  return (g_region.remote_pages[i >> 6].load(std::memory_order_seq_cst) >> (i & 63)) & 1;
}
ZNS_INLINE bool remote_written(uint32_t page) {
  return mirror_page_written(mirror_page_index(&g_region.remote[page / kGroupPages]));
}
// Word w of slab s's remote bits, or 0 where none was ever written (without reading them).
ZNS_INLINE uint64_t remote_word(const SlabMeta *s, unsigned w, std::memory_order order) {
  uint32_t page = uint32_t(s - g_region.meta) * kGroupPages;
  return remote_written(page) ? rbits(s)[w].load(order) : 0;
}
ZNS_INLINE char *slab_base(const SlabMeta *s) {   // one SlabMeta (128 B) per group (128 KiB)
  static_assert(sizeof(SlabMeta) == size_t(1) << kMetaShift);
  return g_region.base + ((uintptr_t(s) - uintptr_t(g_region.meta)) << (kGroupShift - kMetaShift));
}
// The slab a pointer in the region falls in (its group's; the group may hold none).
ZNS_INLINE SlabMeta *head_meta(const void *p) {
  return &g_region.meta[(uintptr_t(p) - uintptr_t(g_region.base)) >> kGroupShift];
}
// The current slab of a bin (the slab of its word's block 0), or nullptr.
ZNS_INLINE SlabMeta *bin_slab(Bin b) {
  return b.word == &g_zero_word ? nullptr : head_meta(b.base);
}
// Block index of p in slab s, or -1 when p is not the start of a block.
ZNS_INLINE int block_index(const SlabMeta *s, const void *p) {
  uint32_t off = uint32_t(uintptr_t(p) - uintptr_t(slab_base(s)));
  uint32_t i = uint32_t((uint64_t(off) * s->magic) >> 32);
  return (i * s->size == off && i < s->blocks) ? int(i) : -1;
}

// ---- fast paths --------------------------------------------------------------------------------
// The block index of the offset `off` in slab s, with a verdict: false when off is not the start
// of one of its blocks (see is_block_start; the fraction's test and the count's, no division).
ZNS_INLINE bool fast_index(const SlabMeta *s, uint32_t off, uint32_t *index) {
  uint64_t q = uint64_t(off) * s->magic;              // index . fraction
  *index = uint32_t(q >> 32);
  return uint32_t(q) < s->magic && *index < s->blocks;
}

// The misuse checks of the free fast path (a block start, not free already) are always on; a
// build with -DZNS_UNCHECKED compiles them out.  That build exists only so that `make bench` can
// measure what the checks cost (bench stage "checks"); never ship it.
#ifdef ZNS_UNCHECKED
inline constexpr bool kFastChecks = false;
#else
inline constexpr bool kFastChecks = true;
#endif

// w with bit i % 64 set.  On x86-64 one `bts`, which takes the bit's number mod 64 itself (GCC
// writes the mask and a copy of the index out: two instructions on the free fast path).
// (Not in the unchecked build, which has no `bt` before it: GCC's own `bts` there needs no copy.)
ZNS_INLINE uint64_t with_bit(uint64_t w, uint64_t i) {
#if defined(__x86_64__)
  if constexpr (!kFastChecks) return w | (uint64_t(1) << (i & 63));
  __asm__("btsq %1, %0" : "+r"(w) : "r"(i) : "cc");
  return w;
#else
  return w | (uint64_t(1) << (i & 63));
#endif
}

// malloc of a small size: take the lowest free bit of the current slab's cursor word.  Every reason
// to go slow (first use, slab exhausted, thread exited) is "that word is zero"; then `miss(cls)`
// runs as a tail call (the shim's miss falls through to the next allocator when the heap is full).
template <class Miss>
ZNS_INLINE void *alloc_class(size_t cls, Miss miss) {   // (size_t: no zero extension for the indexes)
  ThreadCache *tc = t_cache;
  if (void *p = tc->last[cls]; slot_holds(p)) {   // (one compare, as a test for null)
    __atomic_store_n(&tc->last[cls], nullptr, __ATOMIC_RELAXED);   // free_remote reads it
    tc->slot_count[cls]++;
    return p;
  }
  std::atomic<uint64_t> *wp = tc->word[cls];
  uint64_t bits = wp->load(std::memory_order_relaxed);
  if (ZNS_UNLIKELY(bits == 0)) return miss(cls);   // never write the shared sentinel caches
  wp->store(bits & (bits - 1), std::memory_order_relaxed);
  tc->alloc_count[cls]++;
  return tc->base[cls] + unsigned(__builtin_ctzll(bits)) * tc->size[cls];
}
ZNS_INLINE void *alloc_class(size_t cls) {
  return alloc_class(cls, [](size_t c) { return alloc_slow(unsigned(c)); });
}
ZNS_INLINE void *alloc(size_t n) { return alloc_class(class_of(n)); }

// free of a pointer in the region: set its bit if this thread owns the slab; anything else
// (another owner, a shared slab, misuse) goes to a slow path.  One cache line of metadata.
ZNS_INLINE void dealloc(void *p, const char *call) {
  uintptr_t rel = uintptr_t(p) - uintptr_t(g_region.base);
  SlabMeta *s = &g_region.meta[rel >> kGroupShift];
  ThreadCache *tc = t_cache;
  if (ZNS_UNLIKELY(owner_and_hint(s) != tc->owner_key)) return free_not_plain(p, s, call);
  uint32_t off = uint32_t(rel & ((uintptr_t(1) << kGroupShift) - 1));   // in the slab
  uint32_t i;
  bool start = fast_index(s, off, &i);
  if (kFastChecks && ZNS_UNLIKELY(!start))
    return free_misuse("free of a pointer that is not the start of a block", call, p);
  std::atomic<uint64_t> *wp = bits(s) + (i >> 6);
  uint64_t word = wp->load(std::memory_order_relaxed);
  if (kFastChecks && ZNS_UNLIKELY((word >> (i & 63)) & 1))
    return free_local_checked(p, s, call);   // the same free, after a look at the remote bits
  // The slot's address in a register of its own (the empty asm hides where it came from, so GCC
  // cannot fold the class back into the load's and the store's address as an index): with
  // `mov %rdi,(%rdx,%r10,8)`, the form GCC picks, the next malloc's load of the slot waited on
  // the store far longer, and a malloc+free pair took 4.9 ns on this Intel VM against 3.0 with
  // the address in a register (one more instruction; DESIGN "free fast path").
  void **slot = &tc->last[s->cls];
  __asm__("" : "+r"(slot));
  void *last = __atomic_load_n(slot, __ATOMIC_RELAXED);
  if (last == nullptr) {   // (slot_off() is not: the slot is off, the bit is set)
    __atomic_store_n(slot, p, __ATOMIC_RELAXED);   // free_remote reads it
  } else {
    if (kFastChecks && ZNS_UNLIKELY(last == p)) return free_misuse("double free", call, p);
    wp->store(with_bit(word, i), std::memory_order_relaxed);
    if (ZNS_UNLIKELY(--s->credit == 0)) return credit_out_free(tc, s);   // a parked slab to move
  }
}

ZNS_INLINE size_t block_size(const void *p) { return head_meta(p)->size; }

// live_block_size for a block of a slab this thread owns with no unmerged remote frees: the free
// fast path's checks (a block start, its bit clear or its slab full, not the bin's `last`), and
// nothing else to look at: such a block cannot be in this thread's remote buffer (a refill
// applies the buffer before it takes a slab) nor freed remotely (the hint would be set).  redis
// asks for the size of every block it allocates and frees (zmalloc's accounting): 4% of its CPU
// went to the general check.  Anything else takes the general check.
ZNS_INLINE size_t usable_size(const void *p, const char *call) {
  uintptr_t rel = uintptr_t(p) - uintptr_t(g_region.base);
  SlabMeta *s = &g_region.meta[rel >> kGroupShift];
  ThreadCache *tc = t_cache;
  if (owner_and_hint(s) == tc->owner_key) {
    uint32_t i;
    std::atomic<uint64_t> *b = bits(s);   // (kFullBits: every block is out)
    if (ZNS_LIKELY(fast_index(s, uint32_t(rel & ((uintptr_t(1) << kGroupShift) - 1)), &i) &&
                   (b == full_bits() || !(b[i >> 6].load(std::memory_order_relaxed) & (uint64_t(1) << (i & 63)))) &&
                   tc->last[s->cls] != p))
      return s->size;
  }
  return live_block_size(p, call);
}

}  // namespace zns
