// Inline bodies shared by the C entry points (malloc.cpp) and operator new/delete
// (new_delete.cpp).  Only shim/ includes this; it is the one place that knows about the next
// allocator in the chain.
#pragma once
#include <cstddef>

#include "core/heap.h"

namespace zns::shim {

// Large requests, large alignments and exhausted regions: the next allocator (hidden, malloc.cpp).
ZNS_NOINLINE void *next_malloc(size_t n);
ZNS_NOINLINE void *next_memalign(size_t align, size_t n);
ZNS_NOINLINE void next_free(void *p);
// The small-size slow path: the heap's, then the next allocator if the heap is out of slabs.
ZNS_NOINLINE void *malloc_miss(unsigned cls, size_t n);

ZNS_INLINE void *malloc_impl(size_t n) {
  if (ZNS_LIKELY(n <= kMaxSmall))
    return alloc_class(class_of(n), [n](size_t cls) { return malloc_miss(unsigned(cls), n); });
  return next_malloc(n);
}

ZNS_INLINE void free_impl(void *p, const char *call) {
  if (ZNS_LIKELY(owns(p))) return dealloc(p, call);
  if (p) next_free(p);
}

// align: a power of two.
ZNS_INLINE void *memalign_impl(size_t align, size_t n) {
  if (align <= 8 || (align <= 16 && n > 8)) return malloc_impl(n);   // (8 B blocks: 8-aligned)
  if (align <= kPageSize && n <= kMaxSmall) {
    void *p = alloc_aligned(n, align);
    if (ZNS_LIKELY(p != nullptr)) return p;
  }
  return next_memalign(align, n);
}

}  // namespace zns::shim
