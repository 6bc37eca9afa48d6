// C++ operator new and delete, every form, on the same paths as malloc/free.  new honours the
// new_handler and throws std::bad_alloc; the nothrow forms return nullptr.
//
// The library does not link the C++ runtime: loading libstdc++ (and libm, libgcc_s) into every
// process cost about 1.7 ms per process start (posix_spawn of /bin/true: 2.0-2.7 ms plain, 3.8-4.3
// with the shim; mimalloc, a C library, 2.1-2.5), and a C program never calls operator new.  What
// new needs from the runtime only when memory runs out -- the new_handler, and throwing
// std::bad_alloc -- is found then: through weak references, which the loader binds when a C++
// runtime is in the global scope as the shim is loaded (every C++ program), or else by looking
// for one loaded since (a C program such as python that dlopens C++ modules).  bad_alloc is
// thrown through the Itanium C++ ABI (__cxa_allocate_exception, __cxa_throw with the runtime's
// own type_info, vtable and destructor), so a catch of std::bad_alloc in the program matches.
// This file is compiled with exceptions so the exception can pass through it.
#include <atomic>
#include <cstddef>
#include <dlfcn.h>
#include <new>

#include "shim/entry.h"

using namespace zns;
using namespace zns::shim;

// The runtime's symbols, weak (null when no C++ runtime was in the global scope at load).  The
// catch in new_slow_nothrow adds weak references of the same kind: with no runtime there is no
// exception to catch (see the note there).
// (std::terminate: clang's __clang_call_terminate, for an exception that would leave a noexcept
// function, calls it; only reached with a runtime that threw)
__asm__(".weak __gxx_personality_v0\n.weak __cxa_begin_catch\n.weak __cxa_end_catch\n.weak _ZSt9terminatev\n");
extern "C" {
using GetHandlerFn = std::new_handler (*)();
using AllocExcFn = void *(*)(size_t);
using ThrowFn = void (*)(void *, void *, void (*)(void *));
std::new_handler zns_rt_get_new_handler() __asm__("_ZSt15get_new_handlerv") __attribute__((weak));
void *zns_rt_allocate_exception(size_t) __asm__("__cxa_allocate_exception") __attribute__((weak));
[[noreturn]] void zns_rt_throw(void *, void *, void (*)(void *)) __asm__("__cxa_throw") __attribute__((weak));
extern char zns_rt_bad_alloc_vtable[] __asm__("_ZTVSt9bad_alloc") __attribute__((weak));
extern char zns_rt_bad_alloc_typeinfo[] __asm__("_ZTISt9bad_alloc") __attribute__((weak));
void zns_rt_bad_alloc_dtor(void *) __asm__("_ZNSt9bad_allocD1Ev") __attribute__((weak));
}

namespace {

struct Runtime {
  GetHandlerFn get_new_handler;
  AllocExcFn allocate_exception;
  ThrowFn cxa_throw;
  char *vtable, *typeinfo;
  void (*dtor)(void *);
  bool complete() const { return get_new_handler && allocate_exception && cxa_throw && vtable && typeinfo && dtor; }
};

// The C++ runtime: the one bound at load, or the first of the usual ones loaded since (kept once
// complete; not an allocation path: only after an allocation failed).  All null if there is none.
Runtime runtime() {
  static Runtime rt;   // (trivial: zero-initialised, no guard); written once, by the winner of `state`
  static std::atomic<int> state{0};   // 0 none yet, 1 being written, 2 rt complete
  if (state.load(std::memory_order_acquire) == 2) return rt;
  Runtime r{zns_rt_get_new_handler ? &zns_rt_get_new_handler : nullptr,
            zns_rt_allocate_exception ? &zns_rt_allocate_exception : nullptr,
            zns_rt_throw ? reinterpret_cast<ThrowFn>(&zns_rt_throw) : nullptr,
            zns_rt_bad_alloc_vtable, zns_rt_bad_alloc_typeinfo,
            zns_rt_bad_alloc_dtor ? &zns_rt_bad_alloc_dtor : nullptr};
  static const char *const kLibs[] = {nullptr, "libstdc++.so.6", "libc++abi.so.1", "libc++.so.1"};
  for (const char *lib : kLibs) {
    if (r.complete()) break;
    void *h = lib ? dlopen(lib, RTLD_LAZY | RTLD_NOLOAD) : RTLD_DEFAULT;
    if (!h) continue;
    auto sym = [h](const char *name) { return dlsym(h, name); };
    r = Runtime{reinterpret_cast<GetHandlerFn>(sym("_ZSt15get_new_handlerv")),
                reinterpret_cast<AllocExcFn>(sym("__cxa_allocate_exception")),
                reinterpret_cast<ThrowFn>(sym("__cxa_throw")),
                static_cast<char *>(sym("_ZTVSt9bad_alloc")), static_cast<char *>(sym("_ZTISt9bad_alloc")),
                reinterpret_cast<void (*)(void *)>(sym("_ZNSt9bad_allocD1Ev"))};
    if (lib) dlclose(h);   // (it stays loaded: it was before the NOLOAD open)
  }
  dlerror();   // (a failed lookup above is nobody's error)
  if (!r.complete()) return Runtime{};
  int none = 0;
  if (state.compare_exchange_strong(none, 1, std::memory_order_acquire)) {
    rt = r;
    state.store(2, std::memory_order_release);
  }
  return r;
}

[[noreturn]] ZNS_NOINLINE void throw_bad_alloc(const Runtime &rt, size_t n) {
  if (!rt.complete())
    fatal("out of memory in operator new, and no C++ runtime is loaded to throw std::bad_alloc",
          "operator new", reinterpret_cast<void *>(n));
  void *e = rt.allocate_exception(sizeof(void *));   // a std::bad_alloc: its vtable pointer only
  *static_cast<void **>(e) = rt.vtable + 2 * sizeof(void *);   // (past offset-to-top and type_info)
  rt.cxa_throw(e, rt.typeinfo, rt.dtor);
  __builtin_unreachable();
}

ZNS_NOINLINE void *new_slow(size_t n, size_t align) {
  for (;;) {
    Runtime rt = runtime();
    std::new_handler h = rt.get_new_handler ? rt.get_new_handler() : nullptr;
    if (!h) throw_bad_alloc(rt, n);
    h();
    void *p = align ? memalign_impl(align, n) : malloc_impl(n);
    if (p) return p;
  }
}

// With no C++ runtime bound at load, the catch below has no personality routine (a weak
// reference, null), so an exception would pass it by.  The runtime loaded since has its own
// nothrow operator new, whose catch does have one, and which calls the global operator new (this
// shim's, so new_slow: the handler, or bad_alloc): it serves instead.  Null if none is found.
extern "C" void zns_rt_personality() __asm__("__gxx_personality_v0") __attribute__((weak));
using NothrowFn = void *(*)(size_t, const std::nothrow_t &);
using NothrowAlignFn = void *(*)(size_t, std::align_val_t, const std::nothrow_t &);
void *runtime_nothrow_new(size_t n, size_t align) {
  static const std::nothrow_t kNothrow{};   // (not std::nothrow: an object of the runtime)
  static const char *const kLibs[] = {"libstdc++.so.6", "libc++.so.1"};
  for (const char *lib : kLibs) {
    void *h = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
    if (!h) continue;
    void *f = dlsym(h, align ? "_ZnwmSt11align_val_tRKSt9nothrow_t" : "_ZnwmRKSt9nothrow_t");
    dlclose(h);   // (it stays loaded: it was before the NOLOAD open)
    void *own = align ? reinterpret_cast<void *>(static_cast<NothrowAlignFn>(&::operator new))
                      : reinterpret_cast<void *>(static_cast<NothrowFn>(&::operator new));
    if (!f || f == own) continue;
    dlerror();
    return align ? reinterpret_cast<NothrowAlignFn>(f)(n, std::align_val_t(align), kNothrow)
                 : reinterpret_cast<NothrowFn>(f)(n, kNothrow);
  }
  dlerror();   // (a failed lookup above is nobody's error)
  return nullptr;
}

// The nothrow forms return nullptr where new would throw, without throwing; a new_handler may
// still throw (bad_alloc, to give up), and that is caught: here, or, with no C++ runtime bound at
// load, in the runtime's own nothrow new (runtime_nothrow_new).
ZNS_NOINLINE void *new_slow_nothrow(size_t n, size_t align) noexcept {
  if (!zns_rt_personality) {
    Runtime rt = runtime();
    if (!rt.get_new_handler || !rt.get_new_handler()) return nullptr;   // nothing could throw
    return runtime_nothrow_new(n, align);
  }
  try {
    for (;;) {
      Runtime rt = runtime();
      std::new_handler h = rt.get_new_handler ? rt.get_new_handler() : nullptr;
      if (!h) return nullptr;
      h();
      void *p = align ? memalign_impl(align, n) : malloc_impl(n);
      if (p) return p;
    }
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
      // (A block of the heap was never aligned beyond a page: memalign_impl sends those on.  And
      // class_of takes at most kMaxSmall, the end of its table.)
      if (ZNS_UNLIKELY(align > kPageSize)) fatal("sized delete with an alignment the block was not allocated with", call, p);
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

ZNS_EXPORT ZNS_HOT void *operator new(size_t n) { return new_impl(n); }
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

ZNS_EXPORT ZNS_HOT void operator delete(void *p) noexcept { free_impl(p, "operator delete"); }
ZNS_EXPORT void operator delete[](void *p) noexcept { free_impl(p, "operator delete[]"); }
ZNS_EXPORT void operator delete(void *p, const std::nothrow_t &) noexcept { free_impl(p, "operator delete"); }
ZNS_EXPORT void operator delete[](void *p, const std::nothrow_t &) noexcept { free_impl(p, "operator delete[]"); }
ZNS_EXPORT ZNS_HOT void operator delete(void *p, size_t n) noexcept { sized_free(p, n, 0, "operator delete"); }
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
