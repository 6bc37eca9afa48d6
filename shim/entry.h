// Inline bodies shared by the C entry points (malloc.cpp) and operator new/delete
// (new_delete.cpp).  Only shim/ includes this; it is the one place that knows about the next
// allocator in the chain.
#pragma once
#include <atomic>
#include <cstddef>
#include <cstdint>

#include "core/heap.h"

#ifdef ZNS_PROFILER
// This library's malloc (a hidden alias, malloc.cpp), for the profile's first frame (prof.cpp).
extern "C" __attribute__((visibility("hidden"))) void *zns_malloc_here(size_t);
#endif

namespace zns::shim {

// Large requests, large alignments and exhausted regions: the next allocator (hidden, malloc.cpp).
ZNS_NOINLINE void *next_malloc(size_t n);
ZNS_NOINLINE void *next_memalign(size_t align, size_t n);
ZNS_NOINLINE void next_free(void *p);
// The small-size slow path: the heap's, then the next allocator if the heap is out of slabs.
ZNS_NOINLINE void *malloc_miss(size_t n, size_t cls);
// calloc(n, 1) of the next allocator (the profiler's samples; libzns_slab_prof.so only).
ZNS_NOINLINE void *next_calloc(size_t n);

// In the loaded object whose load address (link_map l_addr, dl_iterate_phdr's dlpi_addr) is base,
// every slot (PLT, GOT) that binds one of names[0..n) is made to hold fns[i], whatever it held
// (shim/deepbind.cpp, with its rebinding's tools).  A bit per name that had a slot written; 0 when
// no object is there, or a slot could not be written.  (The heap profiler's redirection of
// libunwind's calls: a shared library's, never the program's, whose base may be 0.)
unsigned redirect_calls(uintptr_t base, const char *const *names, void *const *fns, unsigned n);

// The heap profiler's start (the shim's constructor, after the options) and its dump at exit.
// Without ZNS_PROF: a line on stderr if ZNS_PROF is set, and nothing at exit.
void prof_start();
void prof_at_exit();
// A sampled allocation (heap profiler, below): a page of the profiler's own up to 4 KiB, else the
// next allocator's, recorded with its stack.
ZNS_NOINLINE void *prof_take(size_t n, size_t align, bool zero);

#ifdef ZNS_PROFILER
// The heap profiler (shim/prof.cpp), in libzns_slab_prof.so only: the default library's fast paths
// carry none of it (DESIGN "The heap profiler").  t_prof_left: bytes this thread may still allocate
// before its next sample.  0 at the thread's start, so that its first request sets it up.
extern __thread uintptr_t t_prof_left __attribute__((tls_model("initial-exec")));
ZNS_NOINLINE bool prof_due(size_t n);   // the countdown ran out: is this one a sample?
extern std::atomic<bool> g_prof_live;   // a sample was taken (the checks below are worth making)
// p (not in the region) is being freed: if it is a sample, it is one no more.  True when it was in
// one of the profiler's slots (taken back: the next allocator must not see it).
ZNS_NOINLINE bool prof_free(void *p);
bool prof_in_slots(const void *p);      // p is in the profiler's slot range
ZNS_NOINLINE size_t prof_slot_size(void *p);          // malloc_usable_size of a slot's block
ZNS_NOINLINE void *prof_realloc_slot(void *p, size_t n);   // realloc of it
// q (n bytes, from a realloc of a block outside the region) is a sample: record it here.
ZNS_NOINLINE void prof_adopt(void *q, size_t n);
// A sample's record, kept aside while its block is realloc'ed (put back if the realloc fails).
struct ProfRecord {
  uint64_t size;      // bytes asked for
  uint64_t depth;     // frames in pc
  void *pc[29];       // return addresses, innermost first (the caller of malloc first)
};
ZNS_NOINLINE bool prof_unlink(void *p, ProfRecord *out);   // p a sample: its record out (true)
ZNS_NOINLINE void prof_restore(void *p, const ProfRecord &r);
// Charge n bytes to the countdown: true when this allocation is a sample.  (A borrow is the
// countdown running out, whatever n is: a failed request of 2^63 bytes must not wrap it.)
ZNS_INLINE bool prof_sampled(size_t n) {
  uintptr_t left;
  bool out = __builtin_sub_overflow(t_prof_left, n, &left);
  t_prof_left = left;
  return ZNS_UNLIKELY(out) && prof_due(n);
}
#else
ZNS_INLINE bool prof_sampled(size_t) { return false; }
#endif

// A realloc that could not get its new block: a shrink keeps the block it has (errno back to
// `saved`, its value before the attempt), as glibc shrinks in place; `p = realloc(p, smaller)`
// unchecked is common, and NULL there lost the block (a review, 2026-12-06; jemalloc and tcmalloc
// return NULL too).  A grow fails: NULL, errno as the attempt left it.
ZNS_INLINE void *realloc_failed(void *p, size_t n, size_t old, int saved) {
  if (n > old) return nullptr;
  errno = saved;
  return p;
}

// malloc without the profiler's countdown (a caller that charged it already).
ZNS_INLINE void *malloc_plain(size_t n) {
  if (ZNS_LIKELY(n <= kMaxSmall))
    return alloc_class(class_of(n), [n](size_t cls) { return malloc_miss(n, cls); });
  return next_malloc(n);
}

ZNS_INLINE void *malloc_impl(size_t n) {
  if (prof_sampled(n)) return prof_take(n, 0, false);
  return malloc_plain(n);
}

ZNS_INLINE void free_impl(void *p, const char *call) {
  if (ZNS_LIKELY(owns(p))) return dealloc(p, call);
  if (p) next_free(p);
}

// align: a power of two.
ZNS_INLINE void *memalign_impl(size_t align, size_t n) {
  if (align <= 8 || (align <= 16 && n > 8)) return malloc_impl(n);   // (8 B blocks: 8-aligned)
  if (prof_sampled(n)) return prof_take(n, align, false);
  if (align <= kPageSize && n <= kMaxSmall) {
    void *p = alloc_aligned(n, align);
    if (ZNS_LIKELY(p != nullptr)) return p;
  }
  return next_memalign(align, n);
}

}  // namespace zns::shim
