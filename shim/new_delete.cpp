// C++ operator new and delete, every form, on the same paths as malloc/free.  new honours the
// new_handler and throws std::bad_alloc; the nothrow forms return nullptr.  This file is compiled
// with exceptions so bad_alloc can pass through it; it is a separate object so that C programs
// linking libzns_slab.a do not need libstdc++.
#include <cstddef>
#include <new>

#include "shim/entry.h"

using namespace zns;
using namespace zns::shim;

namespace {

ZNS_NOINLINE void *new_slow(size_t n, size_t align) {
  for (;;) {
    std::new_handler h = std::get_new_handler();
    if (!h) throw std::bad_alloc();
    h();
    void *p = align ? memalign_impl(align, n) : malloc_impl(n);
    if (p) return p;
  }
}

ZNS_NOINLINE void *new_slow_nothrow(size_t n, size_t align) noexcept {
  try {
    return new_slow(n, align);
  } catch (...) {
    return nullptr;
  }
}

ZNS_INLINE void *new_impl(size_t n) {
  void *p = malloc_impl(n);
  return ZNS_LIKELY(p != nullptr) ? p : new_slow(n, 0);
}
ZNS_INLINE void *new_impl(size_t n, std::align_val_t al) {
  void *p = memalign_impl(size_t(al), n);
  return ZNS_LIKELY(p != nullptr) ? p : new_slow(n, size_t(al));
}
ZNS_INLINE void *new_impl_nothrow(size_t n) noexcept {
  void *p = malloc_impl(n);
  return ZNS_LIKELY(p != nullptr) ? p : new_slow_nothrow(n, 0);
}
ZNS_INLINE void *new_impl_nothrow(size_t n, std::align_val_t al) noexcept {
  void *p = memalign_impl(size_t(al), n);
  return ZNS_LIKELY(p != nullptr) ? p : new_slow_nothrow(n, size_t(al));
}

// Sized delete: the size must be one that new could have been asked for, i.e. of the block's
// class (and, aligned, of the class alloc_aligned picks).  Anything else is misuse.
ZNS_INLINE void sized_free(void *p, size_t n, size_t align, const char *call) {
  if (kFastChecks && owns(p) && n <= kMaxSmall) {
    unsigned want = class_of(n);
    if (align > 8) {   // memalign_impl: alloc_aligned's class (for 16, the same but at 8 B)
      want = class_of(n > align ? n : align);
      while (kClasses.info[want].size % align != 0) ++want;
    }
    const SlabMeta *m = head_meta(p);
    if (ZNS_UNLIKELY(m->cls != want && m->owner.load(std::memory_order_relaxed) != kNoOwner))
      fatal("sized delete with a size of another class", call, p);
  }
  free_impl(p, call);
}

}  // namespace

ZNS_EXPORT void *operator new(size_t n) { return new_impl(n); }
ZNS_EXPORT void *operator new[](size_t n) { return new_impl(n); }
ZNS_EXPORT void *operator new(size_t n, const std::nothrow_t &) noexcept { return new_impl_nothrow(n); }
ZNS_EXPORT void *operator new[](size_t n, const std::nothrow_t &) noexcept { return new_impl_nothrow(n); }
ZNS_EXPORT void *operator new(size_t n, std::align_val_t al) { return new_impl(n, al); }
ZNS_EXPORT void *operator new[](size_t n, std::align_val_t al) { return new_impl(n, al); }
ZNS_EXPORT void *operator new(size_t n, std::align_val_t al, const std::nothrow_t &) noexcept {
  return new_impl_nothrow(n, al);
}
ZNS_EXPORT void *operator new[](size_t n, std::align_val_t al, const std::nothrow_t &) noexcept {
  return new_impl_nothrow(n, al);
}

ZNS_EXPORT void operator delete(void *p) noexcept { free_impl(p, "operator delete"); }
ZNS_EXPORT void operator delete[](void *p) noexcept { free_impl(p, "operator delete[]"); }
ZNS_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { free_impl(p, "operator delete"); }
ZNS_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { free_impl(p, "operator delete[]"); }
ZNS_EXPORT void operator delete(void *p, size_t n) noexcept { sized_free(p, n, 0, "operator delete"); }
ZNS_EXPORT void operator delete[](void *p, size_t n) noexcept { sized_free(p, n, 0, "operator delete[]"); }
ZNS_EXPORT void operator delete(void *p, std::align_val_t) noexcept { free_impl(p, "operator delete"); }
ZNS_EXPORT void operator delete[](void *p, std::align_val_t) noexcept { free_impl(p, "operator delete[]"); }
ZNS_EXPORT void operator delete(void *p, size_t n, std::align_val_t al) noexcept {
  sized_free(p, n, size_t(al), "operator delete");
}
ZNS_EXPORT void operator delete[](void *p, size_t n, std::align_val_t al) noexcept {
  sized_free(p, n, size_t(al), "operator delete[]");
}
ZNS_EXPORT void operator delete(void *p, std::align_val_t, const std::nothrow_t &) noexcept {
  free_impl(p, "operator delete");
}
ZNS_EXPORT void operator delete[](void *p, std::align_val_t, const std::nothrow_t &) noexcept {
  free_impl(p, "operator delete[]");
}
