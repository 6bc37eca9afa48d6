// The C allocation API, interposed.  Every entry point routes by ownership: a pointer in the slab
// region is ours, anything else belongs to the next allocator in the chain (glibc, or what the
// binary links, e.g. jemalloc), resolved once by dlsym(RTLD_NEXT) in a constructor, never on an
// allocation path.  Until then glibc's __libc_* functions serve, and the few large blocks they
// hand out are remembered so they go back to glibc even if the next allocator turns out different.
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/options.h"
#include "core/stats.h"
#include "shim/entry.h"
#include "shim/zns_slab.h"
#include "tier/tier.h"

extern "C" {
void *__libc_malloc(size_t);
void __libc_free(void *);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void *__libc_memalign(size_t, size_t);
#ifdef ZNS_STATIC_LIBC
// libzns_slab_static.a, for programs linked with -static: glibc's malloc.o is in the archive with
// the names this file defines made weak (Makefile, "the archive for -static programs"), so the
// startup functions are glibc's for good and nothing is looked up at run time (a static program
// has no dlsym(RTLD_NEXT)).  glibc's trim, counters and report under their internal names (weak:
// null if a glibc lacks one).
int __malloc_trim(size_t) __attribute__((weak));
struct mallinfo2 __libc_mallinfo2() __attribute__((weak));
void __malloc_stats() __attribute__((weak));
#endif
}

namespace zns::shim {
namespace {

struct Next {
  void *(*malloc)(size_t);
  void (*free)(void *);
  void *(*calloc)(size_t, size_t);
  void *(*realloc)(void *, size_t);
  void *(*memalign)(size_t, size_t);
  size_t (*usable)(void *);
};
// Until resolve_next runs (the shim's constructor), the *startup functions*: __libc_malloc and
// its kin as the loader bound them.  That is glibc's, or an allocator's that exports those names
// too (tcmalloc and mimalloc do, so a program linked with one of them binds them there).
size_t glibc_usable(void *p);
#ifdef ZNS_STATIC_LIBC
Next g_next = {__libc_malloc, __libc_free, __libc_calloc, __libc_realloc, __libc_memalign, glibc_usable};
#else
Next g_next = {__libc_malloc, __libc_free, __libc_calloc, __libc_realloc, __libc_memalign, nullptr};
#endif

// The next allocator's malloc_trim (glibc's, whatever allocator comes next: jemalloc has none),
// or null.
int (*g_next_trim)(size_t);
// ... and its mallinfo2 and malloc_stats (glibc's: jemalloc and mimalloc have none), or null.
struct mallinfo2 (*g_next_mallinfo2)();
void (*g_next_malloc_stats)();

// glibc's malloc_usable_size, from the chunk header, for blocks glibc handed out.
size_t glibc_usable(void *p) {
  size_t head = reinterpret_cast<size_t *>(p)[-1];
  size_t size = head & ~size_t(7);
  return (head & 2) ? size - 2 * sizeof(size_t) : size - sizeof(size_t);
}

// ---- boot blocks ----------------------------------------------------------------------------------
// Blocks the startup functions handed out before the next allocator was resolved (requests above
// 4 KiB from constructors that run before the shim's).  If the next allocator turns out to be
// another one (jemalloc linked into the program, while the startup functions are glibc's), such a
// block must still go back to the startup functions, and its size be asked of them: a table
// remembers them.  kBootStartup: before resolution (a block is noted as the startup functions hand
// it out, and taken out when it is freed or moved); kBootForeign: resolved, startup and next
// allocator differ (taken out as they come back); kBootOff: they are one allocator (glibc and
// glibc, tcmalloc and tcmalloc), nothing to remember.  A block is noted when the function that
// made it was a startup one, whatever the mode is by then (a call that raced with the resolution).
//
// The table: open addressing on the block's address with linear probing, kBootCap slots in an
// mmap'ed array made at the first note (512 KiB of address space; its pages are touched as
// used).  A slot is null (never used: a lookup stops there), kBootTomb (a block taken out: lookups
// go past it, notes reuse it) or a block; slots never become null again, so no null lies between a
// block's home slot and its slot.  Every change is one CAS, no lock.  More than kBootCap blocks
// live at once stops the program with a message (a forgotten block would go to the wrong allocator).
enum BootMode : int { kBootStartup, kBootForeign, kBootOff };
#ifdef ZNS_STATIC_LIBC
std::atomic<int> g_boot_mode{kBootOff};   // (startup and next allocator: glibc's, linked in)
#else
std::atomic<int> g_boot_mode{kBootStartup};
#endif
constexpr size_t kBootCap = size_t(1) << 16;
void *const kBootTomb = reinterpret_cast<void *>(1);
std::atomic<std::atomic<void *> *> g_boot_table;
std::atomic<unsigned> g_boot_live;   // blocks in the table
// The startup allocator's malloc_usable_size (glibc_usable when it is glibc), once resolved.
std::atomic<size_t (*)(void *)> g_boot_usable{nullptr};

size_t boot_home(const void *p) {   // 16 bits of a multiplicative hash of the address
  return size_t((uint64_t(uintptr_t(p)) * 0x9E3779B97F4A7C15ull) >> 48);
}
static_assert(kBootCap == size_t(1) << 16, "boot_home gives 16 bits");

std::atomic<void *> *boot_table(void *p) {
  if (std::atomic<void *> *t = g_boot_table.load(std::memory_order_acquire)) return t;
  void *m = mmap(nullptr, kBootCap * sizeof(void *), PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED)
    fatal("no memory for the table of blocks allocated before ZNS-Slab's constructor ran", "malloc", p);
  std::atomic<void *> *expected = nullptr;
  if (g_boot_table.compare_exchange_strong(expected, static_cast<std::atomic<void *> *>(m)))
    return static_cast<std::atomic<void *> *>(m);
  munmap(m, kBootCap * sizeof(void *));   // another thread's table won
  return expected;
}

void boot_put(void *p) {
  std::atomic<void *> *t = boot_table(p);
  for (size_t k = 0, h = boot_home(p); k < kBootCap; ++k) {
    std::atomic<void *> &s = t[(h + k) & (kBootCap - 1)];
    void *v = s.load(std::memory_order_relaxed);
    if ((v == nullptr || v == kBootTomb) && s.compare_exchange_strong(v, p)) {
      g_boot_live.fetch_add(1);
      return;
    }
  }
  fatal("more than 65536 blocks over 4 KiB allocated before ZNS-Slab's constructor ran are live at once",
        "malloc", p);
}

void boot_note(void *p, bool startup) {   // startup: p was made by a startup function
  if (p && startup && g_boot_mode.load(std::memory_order_acquire) != kBootOff) boot_put(p);
}

bool boot_find(void *p, bool take) {   // is p in the table (and, with take, take it out)?
  std::atomic<void *> *t = g_boot_table.load(std::memory_order_acquire);
  if (!t) return false;
  for (size_t k = 0, h = boot_home(p); k < kBootCap; ++k) {
    std::atomic<void *> &s = t[(h + k) & (kBootCap - 1)];
    void *v = s.load(std::memory_order_relaxed);
    if (v == nullptr) return false;
    if (v != p) continue;
    if (!take) return true;
    if (!s.compare_exchange_strong(v, kBootTomb)) return false;   // (taken by another free of p)
    g_boot_live.fetch_sub(1);
    return true;
  }
  return false;
}

bool is_boot(void *p, bool take = true) {
  return g_boot_mode.load(std::memory_order_relaxed) != kBootOff && g_boot_live.load(std::memory_order_relaxed) &&
         boot_find(p, take);
}

#ifndef ZNS_STATIC_LIBC
template <class F>
F resolve(const char *name, F fallback) {
  void *f = dlsym(RTLD_NEXT, name);
  return f ? reinterpret_cast<F>(f) : fallback;
}

const void *object_of(const void *f) {   // the load address of the object f is in, or null
  Dl_info info;
  return f && dladdr(f, &info) ? info.dli_fbase : nullptr;
}
// Addresses by lookup, not &name: in a program that is not position-independent (the static
// archive linked into it), &name can be a stub in the program itself.
const void *libc_object() { return object_of(dlsym(RTLD_DEFAULT, "gnu_get_libc_version")); }
const void *startup_malloc() {   // the startup functions' malloc, as bound
  void *f = dlsym(RTLD_DEFAULT, "__libc_malloc");
  return f ? f : reinterpret_cast<const void *>(&__libc_malloc);
}
#endif

// The startup allocator's malloc_usable_size: glibc's chunk header, or, when the startup
// functions are another allocator's, that object's own malloc_usable_size.  Null if not found.
size_t (*boot_usable())(void *) {
  if (size_t (*u)(void *) = g_boot_usable.load(std::memory_order_acquire)) return u;
#ifdef ZNS_STATIC_LIBC
  g_boot_usable.store(glibc_usable, std::memory_order_release);
  return glibc_usable;
#else
  const void *self = startup_malloc();
  Dl_info info;
  size_t (*u)(void *) = nullptr;
  if (object_of(self) == libc_object()) {
    u = glibc_usable;
  } else if (dladdr(self, &info) && info.dli_fname) {
    if (void *h = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD)) {
      u = reinterpret_cast<size_t (*)(void *)>(dlsym(h, "malloc_usable_size"));
      if (u == &::malloc_usable_size) u = nullptr;   // (never our own)
      dlclose(h);
    }
  }
  if (u) g_boot_usable.store(u, std::memory_order_release);
  return u;
#endif
}

// Which allocator comes next: the object RTLD_NEXT finds `malloc` in.  It is glibc when that is
// the object glibc's own functions are in (not when `malloc` equals __libc_malloc: tcmalloc and
// mimalloc export both names for one function, and a program linked with one of them took glibc's
// chunk-header reader for its blocks' sizes, until 2026-12-05).
void resolve_next() {
#ifdef ZNS_STATIC_LIBC
  g_next_trim = __malloc_trim;
  g_next_mallinfo2 = __libc_mallinfo2;
  g_next_malloc_stats = __malloc_stats;
  boot_usable();
  __atomic_store_n(&g_next.usable, &glibc_usable, __ATOMIC_RELEASE);
#else
  g_next_trim = resolve("malloc_trim", (int (*)(size_t)) nullptr);
  if (g_next_trim == &::malloc_trim) g_next_trim = nullptr;   // (never our own)
  g_next_mallinfo2 = resolve("mallinfo2", (struct mallinfo2 (*)()) nullptr);
  if (g_next_mallinfo2 == &::mallinfo2) g_next_mallinfo2 = nullptr;
  g_next_malloc_stats = resolve("malloc_stats", (void (*)()) nullptr);
  if (g_next_malloc_stats == &::malloc_stats) g_next_malloc_stats = nullptr;
  const void *libc = libc_object();
  const void *startup = object_of(startup_malloc());
  void *m = dlsym(RTLD_NEXT, "malloc");
  if (m == reinterpret_cast<void *>(&::malloc)) m = nullptr;
  Next n;
  n.malloc = reinterpret_cast<void *(*)(size_t)>(m);
  n.free = resolve("free", (void (*)(void *))nullptr);
  n.calloc = resolve("calloc", (void *(*)(size_t, size_t))nullptr);
  n.realloc = resolve("realloc", (void *(*)(void *, size_t))nullptr);
  n.memalign = resolve("memalign", (void *(*)(size_t, size_t))nullptr);
  if (!n.memalign) n.memalign = resolve("aligned_alloc", (void *(*)(size_t, size_t))nullptr);
  n.usable = resolve("malloc_usable_size", (size_t(*)(void *)) nullptr);
  if (n.usable == &::malloc_usable_size) n.usable = nullptr;
  const void *next = object_of(m);
  Next fin = g_next;
  if (m && n.free && n.calloc && n.realloc && n.memalign) {
    fin = n;
    // glibc's malloc_usable_size is shadowed by ours: its blocks' sizes come from the chunk header
    if (next == libc) fin.usable = glibc_usable;
  } else {   // nothing found: the startup functions stay, and their sizes
    next = startup;
    fin.usable = boot_usable();
  }
  // The mode before the functions (a thread that loads a new one sees the mode that goes with
  // it), the startup allocator's size function before either (now, not at a later
  // malloc_usable_size).
  if (next != startup) boot_usable();
  g_boot_mode.store(next == startup ? kBootOff : kBootForeign, std::memory_order_release);
  __atomic_store_n(&g_next.usable, fin.usable, __ATOMIC_RELEASE);
  __atomic_store_n(&g_next.free, fin.free, __ATOMIC_RELEASE);
  __atomic_store_n(&g_next.realloc, fin.realloc, __ATOMIC_RELEASE);
  __atomic_store_n(&g_next.memalign, fin.memalign, __ATOMIC_RELEASE);
  __atomic_store_n(&g_next.calloc, fin.calloc, __ATOMIC_RELEASE);
  __atomic_store_n(&g_next.malloc, fin.malloc, __ATOMIC_RELEASE);
#endif
}

inline void count_fallback(void *p, size_t n) {
  if (p) {
    g_fallback_allocs.fetch_add(1, std::memory_order_relaxed);
    g_fallback_bytes.fetch_add(n, std::memory_order_relaxed);
  }
}

inline bool mul_overflows(size_t a, size_t b, size_t *out) { return __builtin_mul_overflow(a, b, out); }

// A forked child whose own tier is due starts it on its next call for a block above kMaxSmall, or
// realloc of a foreign one, as well as in the heap's slow path (alloc_refill): a child whose
// calls after the delay are all for large blocks never reaches that path.  One load, on paths
// that go to the next allocator anyway.  (A child that stays on the fast paths still never
// starts: DESIGN.)  Allocating calls only, never a free: glibc frees under locks of its own that
// the start's pthread_create takes (a thread's dynamic TLS is freed under dl_stack_cache_lock:
// a review found the child deadlocked on itself at a pthread_join), and it never allocates under
// them.  t_guards: not inside the library's own locks, as in alloc_refill.
inline void child_tier_due() {
  if (ZNS_UNLIKELY(g_tier_child_pending.load(std::memory_order_relaxed)) && t_guards == 0) tier_child_poll();
}

// A request of `bytes` to the next allocator, made once more if it was refused and the heap could
// give back the commit of its empty groups then (what a data limit or strict overcommit counts,
// resident or not: heap_release_commit).  A success leaves errno as it was.
template <class Call>
void *refusal_retried(size_t bytes, Call call) {
  int saved = errno;
  void *p = call();
  if (ZNS_LIKELY(p != nullptr) || !heap_release_commit(bytes)) return p;
  p = call();
  if (p) errno = saved;
  return p;
}

}  // namespace

void *next_malloc(size_t n) {
  child_tier_due();
  auto f = __atomic_load_n(&g_next.malloc, __ATOMIC_ACQUIRE);
  void *p = refusal_retried(n, [&] { return f(n); });
  boot_note(p, f == &__libc_malloc);
  count_fallback(p, n);
  return p;
}

void *next_memalign(size_t align, size_t n) {
  child_tier_due();
  auto f = __atomic_load_n(&g_next.memalign, __ATOMIC_ACQUIRE);
  void *p = refusal_retried(n, [&] { return f(align, n); });
  if (!p) errno = ENOMEM;
  boot_note(p, f == &__libc_memalign);
  count_fallback(p, n);
  return p;
}

void *malloc_miss(size_t n, size_t cls) {   // (malloc's own argument first: a tail call as it stands)
  void *p = alloc_slow(unsigned(cls));
  return p ? p : next_malloc(n);
}

#ifdef ZNS_PROFILER
void *next_calloc(size_t n) {
  child_tier_due();
  auto f = __atomic_load_n(&g_next.calloc, __ATOMIC_ACQUIRE);
  void *p = refusal_retried(n, [&] { return f(n, 1); });
  boot_note(p, f == &__libc_calloc);
  count_fallback(p, n);
  return p;
}
#endif

void next_free(void *p) {
  int saved = errno;
#ifdef ZNS_PROFILER
  if (ZNS_UNLIKELY(g_prof_live.load(std::memory_order_relaxed)) && prof_free(p)) {   // a slot's
    errno = saved;
    return;
  }
#endif
  if (ZNS_UNLIKELY(is_boot(p))) __libc_free(p);
  else g_next.free(p);
  errno = saved;
}

#ifndef ZNS_PROFILER
void *prof_take(size_t, size_t, bool) { return nullptr; }   // (never called: see entry.h)
void prof_start() {
  if (g_options.ZNS_PROF[0]) {
    char m[200];
    Buf(m, sizeof m).str("zns-slab: ZNS_PROF is set, but this library has no heap profiler: preload "
                         "libzns_slab_prof.so instead (no profile is written)\n").say();
  }
}
void prof_at_exit() {}
#endif

}  // namespace zns::shim

using namespace zns;
using namespace zns::shim;

#define ZNS_API extern "C" ZNS_EXPORT

ZNS_API ZNS_HOT void *malloc(size_t n) { return malloc_impl(n); }
#ifdef ZNS_PROFILER
// malloc's address in this library, for the profile's first frame (shim/prof.cpp): &::malloc is the
// program's PLT stub when a program built without PIE takes malloc's address, and google-pprof
// names the stub after whatever symbol precedes it.  A hidden alias is bound here, at link time.
#pragma GCC diagnostic push
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmissing-attributes"   // (malloc's own: glibc's header gives them)
#endif
extern "C" __attribute__((visibility("hidden"), alias("malloc"))) void *zns_malloc_here(size_t);
#pragma GCC diagnostic pop
#endif

ZNS_API ZNS_HOT void free(void *p) { free_impl(p, "free"); }

ZNS_API void *calloc(size_t n, size_t m) {
  size_t total;
  if (ZNS_UNLIKELY(mul_overflows(n, m, &total))) {
    errno = ENOMEM;
    return nullptr;
  }
  if (prof_sampled(total)) return prof_take(total, 0, true);
  if (ZNS_LIKELY(total <= kMaxSmall)) {
    void *p = alloc(total);
    if (ZNS_LIKELY(p != nullptr)) return memset(p, 0, block_size(p));
  }
  child_tier_due();
  auto f = __atomic_load_n(&g_next.calloc, __ATOMIC_ACQUIRE);
  void *p = refusal_retried(total, [&] { return f(n, m); });
  boot_note(p, f == &__libc_calloc);
  count_fallback(p, total);
  return p;
}

// realloc of a block outside the region: the startup functions' or the next allocator's.
static void *realloc_foreign(void *p, size_t n) {
  if (ZNS_UNLIKELY(is_boot(p))) {   // a block of the startup functions (see "boot blocks")
    if (n == 0) {   // glibc: realloc(p, 0) frees p and returns NULL
      __libc_free(p);
      return nullptr;
    }
    if (g_boot_mode.load(std::memory_order_relaxed) == kBootStartup) {   // still theirs
      void *q = __libc_realloc(p, n);
      boot_put(q ? q : p);
      return q;
    }
    size_t (*u)(void *) = boot_usable();
    if (!u)
      fatal("realloc of a block allocated before ZNS-Slab's constructor ran, by an allocator whose "
            "malloc_usable_size is not found", "realloc", p);
    size_t old = u(p);
    int saved = errno;
    void *q = malloc_plain(n);   // (the profiler's countdown: realloc charges it)
    if (!q) {
      boot_put(p);
      return realloc_failed(p, n, old, saved);
    }
    memcpy(q, p, n < old ? n : old);
    __libc_free(p);
    return q;
  }
  child_tier_due();
  // (a refused realloc keeps p, so asking again is safe; realloc(p, 0) frees it)
  void *q = n ? refusal_retried(n, [&] { return g_next.realloc(p, n); }) : g_next.realloc(p, 0);
  count_fallback(q, n);
  return q;
}

// For the heap profiler (libzns_slab_prof.so) a realloc is an allocation of n bytes by its caller,
// sampled or not anew, whatever the block was (DESIGN "The heap profiler", realloc).
ZNS_API void *realloc(void *p, size_t n) {
  if (!p) return malloc_impl(n);
  if (owns(p)) {
    size_t old = usable_size(p, "realloc");
    if (n == 0) {   // glibc: realloc(p, 0) frees p and returns NULL
      free_impl(p, "realloc");
      return nullptr;
    }
    void *q;
    int saved;   // (errno, read only where a new block is asked for)
    if (prof_sampled(n)) {   // (the profiler: a sample is a block of its own)
      saved = errno;
      q = prof_take(n, 0, false);
    } else {
      // Keep the block while the request fits and would not fit a class less than half its size.
      if (n <= old && (n > old / 2 || old <= 32)) return p;
      saved = errno;
      q = malloc_plain(n);
    }
    if (!q) return realloc_failed(p, n, old, saved);
    memcpy(q, p, n < old ? n : old);
    free_impl(p, "realloc");
    return q;
  }
#ifdef ZNS_PROFILER
  ProfRecord rec;
  bool was_sample = false;
  if (ZNS_UNLIKELY(g_prof_live.load(std::memory_order_relaxed))) {
    if (prof_in_slots(p)) return prof_realloc_slot(p, n);
    was_sample = prof_unlink(p, &rec);
  }
  void *q = realloc_foreign(p, n);
  if (!q) {
    if (was_sample && n) prof_restore(p, rec);   // (failed: p is as it was)
    return nullptr;
  }
  if (prof_sampled(n)) prof_adopt(q, n);
  return q;
#else
  return realloc_foreign(p, n);
#endif
}

ZNS_API void *reallocarray(void *p, size_t n, size_t m) {
  size_t total;
  if (mul_overflows(n, m, &total)) {
    errno = ENOMEM;
    return nullptr;
  }
  return realloc(p, total);
}

ZNS_API int posix_memalign(void **out, size_t align, size_t n) {
  if (align % sizeof(void *) != 0 || (align & (align - 1)) != 0 || align == 0) return EINVAL;
  int saved = errno;
  void *p = memalign_impl(align, n);
  if (!p) {
    errno = saved;
    return ENOMEM;
  }
  *out = p;
  return 0;
}

// glibc 2.36 semantics: alignments that are not a power of two are rounded up to one; above
// SIZE_MAX / 2 + 1 none exists (EINVAL), and 2^63 itself fails as memory (ENOMEM, below).
ZNS_API void *memalign(size_t align, size_t n) {
  if (align > SIZE_MAX / 2 + 1) {
    errno = EINVAL;
    return nullptr;
  }
  if (align & (align - 1)) {
    size_t a = 1;
    while (a < align) a <<= 1;
    align = a;
  }
  return memalign_impl(align, n);
}

ZNS_API void *aligned_alloc(size_t align, size_t n) { return memalign(align, n); }

ZNS_API void *valloc(size_t n) { return memalign_impl(kPageSize, n); }

ZNS_API void *pvalloc(size_t n) {
  size_t rounded;
  if (__builtin_add_overflow(n, kPageSize - 1, &rounded)) {
    errno = ENOMEM;
    return nullptr;
  }
  rounded &= ~(kPageSize - 1);
  return memalign_impl(kPageSize, rounded ? rounded : kPageSize);
}

ZNS_API size_t malloc_usable_size(void *p) {
  if (!p) return 0;
  if (owns(p)) return usable_size(p, "malloc_usable_size");
#ifdef ZNS_PROFILER
  if (ZNS_UNLIKELY(g_prof_live.load(std::memory_order_relaxed)) && prof_in_slots(p)) return prof_slot_size(p);
#endif
  // A block of the startup functions (noted, or anything before resolution), or the next one's.
  bool boot = is_boot(p, false) || g_boot_mode.load(std::memory_order_relaxed) == kBootStartup;
  size_t (*u)(void *) = boot ? boot_usable() : g_next.usable;
  if (ZNS_UNLIKELY(!u))
    fatal(boot ? "malloc_usable_size of a block allocated before ZNS-Slab's constructor ran, by an "
                 "allocator whose malloc_usable_size is not found"
               : "malloc_usable_size of a block of the next allocator, which has no malloc_usable_size",
          "malloc_usable_size", p);
  return u(p);
}

// ---- the project's own API -----------------------------------------------------------------------
ZNS_API int zns_owns(const void *p) { return owns(p) ? 1 : 0; }
ZNS_API size_t zns_block_size(const void *p) { return owns(p) ? block_size(p) : 0; }
ZNS_API int zns_stats_print(int fd, int json) { return stats_print(fd, json != 0); }
ZNS_API void zns_trim(void) { trim(); }
// glibc's "give free memory back to the OS now", which programs call after a burst: under the shim
// glibc's own would trim only its arenas.  Ours first (zns_trim), then the next allocator's.
// 1 if either gave memory back, as glibc says.
ZNS_API int malloc_trim(size_t pad) {
  int r = trim() ? 1 : 0;
  if (g_next_trim && g_next_trim(pad)) r = 1;
  return r;
}
// glibc's heap counters, which monitoring code reads: under the shim glibc's own would count only
// its arenas and miss every slab block.  The next allocator's figures plus the slab heap's:
// arena += slab bytes of the caches and the depot's resident empty ones (with the tier, paged-out
// slabs count too: their blocks are live), uordblks += bytes in live blocks
// (their class sizes), fordblks += the rest of those slab bytes.  The other fields are the next
// allocator's.  mallinfo's int fields saturate instead of wrapping.
ZNS_API struct mallinfo2 mallinfo2(void) {
  struct mallinfo2 m = {};
  if (g_next_mallinfo2) m = g_next_mallinfo2();
  HeapUsage u = heap_usage();
  m.arena += u.slab_bytes;
  m.uordblks += u.live_bytes;
  m.fordblks += u.slab_bytes > u.live_bytes ? u.slab_bytes - u.live_bytes : 0;
  return m;
}
ZNS_API struct mallinfo mallinfo(void) {
  struct mallinfo2 m = mallinfo2();
  auto i = [](size_t v) { return v > size_t(INT_MAX) ? INT_MAX : int(v); };
  struct mallinfo r;
  r.arena = i(m.arena); r.ordblks = i(m.ordblks); r.smblks = i(m.smblks); r.hblks = i(m.hblks);
  r.hblkhd = i(m.hblkhd); r.usmblks = i(m.usmblks); r.fsmblks = i(m.fsmblks);
  r.uordblks = i(m.uordblks); r.fordblks = i(m.fordblks); r.keepcost = i(m.keepcost);
  return r;
}
// glibc prints its arenas on stderr; then the slab heap's table follows.
ZNS_API void malloc_stats(void) {
  if (g_next_malloc_stats) g_next_malloc_stats();
  stats_print(2, false);
}
#ifndef ZNS_PROFILER
// The heap profile (libzns_slab_prof.so, shim/prof.cpp); this library has no profiler.
ZNS_API int zns_prof_dump(const char *) {
  errno = ENOSYS;
  return -1;
}
#endif
ZNS_API size_t zns_tier_pageout(void) { return tier_pageout_now(); }
ZNS_API void zns_tier_stats(struct zns_tier_stats *o) {
  TierSnapshot t;
  tier_snapshot(&t);
  *o = {};
  o->mode = t.mode;
  o->slabs_out = t.slabs_out; o->slabs_in = t.slabs_in; o->bytes_out = t.bytes_out; o->bytes_in = t.bytes_in;
  o->bytes_on_tier = t.out_pages * kPageSize;
  o->evict_errors = t.evict_errors; o->thrash = t.thrash; o->write_hits = t.write_hits; o->zero_fills = t.zero_fills;
  o->fault_p50_ns = t.fault_p50_ns; o->fault_p99_ns = t.fault_p99_ns; o->fault_max_ns = t.fault_max_ns;
  o->faults_timed = t.faults_timed;
}

// ---- process lifetime ----------------------------------------------------------------------------
__attribute__((constructor(101))) static void zns_shim_init() {
  int saved = errno;
  resolve_next();
  // The next allocator's first call, here, on the thread that loads the program.  glibc sets its
  // malloc up at its first call with no lock (ptmalloc_init), and counts the main thread as its
  // main arena's one user: a program's own early allocations normally make that call, but under
  // the shim they are ours, and the first call into glibc could come from two threads at once
  // (two workers' first requests above 4 KiB): both took the main arena as their first, counted
  // once, and the second to exit aborted ("malloc assertion failure in
  // __malloc_arena_thread_freeres: a->attached_threads > 0"; tests/api/next_init).
  g_next.free(g_next.malloc(1));
  // The heap (and its fork handlers) before the stats file: a child forked before the program's
  // first malloc must close its copy of the .jsonl descriptor, not append to its parent's file.
  heap_init();
  options_load(true);
  remember_program_outputs();   // (a dump onto one of them appends: see open_dump)
  stats_start();
  prof_start();
  tier_start();   // after the heap and options: the handler thread, then the registration
  errno = saved;
}

// Priority 101, as the constructor: linked into a program (the archives), the library's
// destructor is one of the program's, and runs after every one of default priority (which free
// blocks the dump must not count live).  Preloaded, the loader runs it after the program's anyway.
__attribute__((destructor(101))) static void zns_shim_fini() {
  flush_thread();   // the exiting thread's buffered frees: checked (double free) and counted
  stats_at_exit();
  prof_at_exit();
}
