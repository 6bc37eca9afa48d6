// dlopen with RTLD_DEEPBIND.  A library opened with that flag looks symbols up in its own
// dependencies before the global scope, so its calls to malloc, free and the rest bind to glibc's
// although LD_PRELOAD put ZNS-Slab first.  Blocks then cross allocators: a block the program
// allocated (ours) and the library frees reaches glibc's free, which aborts ("free(): invalid
// pointer", "double free or corruption"); the other way (the library's block freed by the
// program) our entry points route by ownership.  PHP up to 8.4 opens every extension so: `php -v`
// with Debian's default extensions aborted under the shim, as under jemalloc, mimalloc and
// tcmalloc preloaded (php-src#10670, #11133).
//
// So dlopen is interposed.  Without RTLD_DEEPBIND it is a tail jump to the real one (glibc takes
// the caller's return address to find the caller's RPATH/RUNPATH and namespace: unchanged).  With
// it, after the real dlopen has loaded and relocated the objects, their references to the C
// allocation functions are bound to ours: each GOT slot (JUMP_SLOT, GLOB_DAT, a plain 64-bit
// address) of such a function that holds glibc's function, or that lazy binding has not filled yet
// and that would lead to glibc's (a lookup through the new handle, which searches the same
// dependencies first), gets our function; a slot bound anywhere else (a library that brings its
// own allocator) is left alone.  The caller of the real dlopen is then this library, so a bare
// file name is searched without the calling object's RPATH/RUNPATH (PHP passes full paths).
//
// Not an allocation path: it runs inside dlopen, may take a lock and write to stderr.
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/platform.h"

extern "C" void __libc_free(void *);

namespace zns::shim {
namespace {

using DlopenFn = void *(*)(const char *, int);
std::atomic<DlopenFn> g_real_dlopen{nullptr};

DlopenFn real_dlopen() {
  DlopenFn f = g_real_dlopen.load(std::memory_order_acquire);
  if (!f) {
    f = reinterpret_cast<DlopenFn>(dlsym(RTLD_NEXT, "dlopen"));
    if (!f) fatal("dlopen: the next dlopen cannot be found (dlsym(RTLD_NEXT))", "dlopen", nullptr);
    g_real_dlopen.store(f, std::memory_order_release);
  }
  return f;
}

// The C allocation functions: ours (the interposed definitions, reached through our own GOT: the
// first in the global scope) and glibc's, filled in at the first rebind.
struct Fn {
  const char *name;
  void *ours = nullptr;
  void *libc = nullptr;   // glibc's definition, or null
  void *deep = nullptr;   // where a lookup through the new handle leads (per rebind)
};
Fn g_fns[] = {{"malloc"}, {"free"}, {"calloc"}, {"realloc"}, {"reallocarray"}, {"posix_memalign"},
              {"aligned_alloc"}, {"memalign"}, {"valloc"}, {"pvalloc"}, {"malloc_usable_size"}};

bool g_resolved;   // under g_open_lock

void resolve() {
  if (g_resolved) return;
  g_resolved = true;
  void *const ours[] = {reinterpret_cast<void *>(&::malloc), reinterpret_cast<void *>(&::free),
                        reinterpret_cast<void *>(&::calloc), reinterpret_cast<void *>(&::realloc),
                        reinterpret_cast<void *>(&::reallocarray), reinterpret_cast<void *>(&::posix_memalign),
                        reinterpret_cast<void *>(&::aligned_alloc), reinterpret_cast<void *>(&::memalign),
                        reinterpret_cast<void *>(&::valloc), reinterpret_cast<void *>(&::pvalloc),
                        reinterpret_cast<void *>(&::malloc_usable_size)};
  static_assert(sizeof ours / sizeof ours[0] == sizeof g_fns / sizeof g_fns[0]);
  for (unsigned i = 0; i < sizeof ours / sizeof ours[0]; ++i) g_fns[i].ours = ours[i];
  Dl_info di;
  if (!dladdr(reinterpret_cast<void *>(&__libc_free), &di) || !di.dli_fname) return;
  void *h = real_dlopen()(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
  if (!h) return;
  for (Fn &f : g_fns) {
    f.libc = dlsym(h, f.name);
    if (f.libc == f.ours) f.libc = nullptr;   // (cannot be: ours is not in libc's scope)
  }
  dlclose(h);
}

void say_once(const char *what, const char *object, const char *name, int err) {
  static std::atomic<bool> said{false};
  if (said.exchange(true)) return;
  char mem[512];
  Buf b(mem, sizeof mem);
  b.str("zns-slab: dlopen(RTLD_DEEPBIND): ").str(what).str(" ").str(name).str(" in ")
      .str(object && *object ? object : "?");
  if (err) b.str(" (").str(strerror(err)).str(")");
  b.str(": its blocks may reach glibc's allocator\n");
  b.say();
}

// One object as dl_iterate_phdr shows it: where it is mapped, and what is read-only after
// relocation (PT_GNU_RELRO, whole pages as glibc protects it).
struct Object {
  const dl_phdr_info *info;
  uintptr_t page;
  bool maps(uintptr_t a) const {   // inside one of its PT_LOAD segments (a lazy slot's PLT stub)
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
      const ElfW(Phdr) &ph = info->dlpi_phdr[i];
      if (ph.p_type == PT_LOAD && a - (info->dlpi_addr + ph.p_vaddr) < ph.p_memsz) return true;
    }
    return false;
  }
  bool relro(uintptr_t a) const {
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
      const ElfW(Phdr) &ph = info->dlpi_phdr[i];
      if (ph.p_type != PT_GNU_RELRO) continue;
      uintptr_t start = (info->dlpi_addr + ph.p_vaddr) & ~(page - 1);
      uintptr_t end = (info->dlpi_addr + ph.p_vaddr + ph.p_memsz) & ~(page - 1);
      if (a >= start && a < end) return true;
    }
    return false;
  }
  const ElfW(Dyn) *dynamic() const {
    for (unsigned i = 0; i < info->dlpi_phnum; ++i)
      if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
        return reinterpret_cast<const ElfW(Dyn) *>(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    return nullptr;
  }
};

void write_slot(void **slot, void *fn, const Object &o, const char *name) {
  uintptr_t a = reinterpret_cast<uintptr_t>(slot);
  if (!o.relro(a)) {   // a writable page (lazy GOT, data)
    __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    return;
  }
  void *p = reinterpret_cast<void *>(a & ~(o.page - 1));
  if (mprotect(p, o.page, PROT_READ | PROT_WRITE) != 0)
    return say_once("cannot rebind", o.info->dlpi_name, name, errno);
  __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
  mprotect(p, o.page, PROT_READ);
}

// Rebind one object's references to the allocation functions (see the top of the file).  Runs
// inside dl_iterate_phdr (the loader's list lock): no call into the loader here.
void rebind_object(const Object &o) {
#if !defined(__x86_64__)
  (void)o;   // (the relocation types below are x86-64's)
#else
  const ElfW(Dyn) *dyn = o.dynamic();
  if (!dyn) return;
  uintptr_t base = o.info->dlpi_addr;
  auto addr = [base](ElfW(Addr) v) {   // glibc relocates these entries in place; others may not
    return v < base ? v + base : v;
  };
  const ElfW(Sym) *symtab = nullptr;
  const char *strtab = nullptr;
  const ElfW(Rela) *tables[2] = {nullptr, nullptr};
  size_t sizes[2] = {0, 0};
  bool rela_plt = true;
  for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; ++d) {
    switch (d->d_tag) {
      case DT_SYMTAB: symtab = reinterpret_cast<const ElfW(Sym) *>(addr(d->d_un.d_ptr)); break;
      case DT_STRTAB: strtab = reinterpret_cast<const char *>(addr(d->d_un.d_ptr)); break;
      case DT_RELA: tables[0] = reinterpret_cast<const ElfW(Rela) *>(addr(d->d_un.d_ptr)); break;
      case DT_RELASZ: sizes[0] = d->d_un.d_val; break;
      case DT_JMPREL: tables[1] = reinterpret_cast<const ElfW(Rela) *>(addr(d->d_un.d_ptr)); break;
      case DT_PLTRELSZ: sizes[1] = d->d_un.d_val; break;
      case DT_PLTREL: rela_plt = d->d_un.d_val == DT_RELA; break;
    }
  }
  if (!symtab || !strtab || !rela_plt) return;   // (x86-64 uses RELA throughout)
  for (unsigned t = 0; t < 2; ++t) {
    if (!tables[t]) continue;
    for (size_t k = 0, n = sizes[t] / sizeof(ElfW(Rela)); k < n; ++k) {
      const ElfW(Rela) &r = tables[t][k];
      unsigned type = unsigned(ELF64_R_TYPE(r.r_info)), sym = unsigned(ELF64_R_SYM(r.r_info));
      if (sym == 0 || (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT &&
                       !(type == R_X86_64_64 && r.r_addend == 0)))
        continue;
      const ElfW(Sym) &s = symtab[sym];
      if (s.st_shndx != SHN_UNDEF) continue;   // the object's own definition
      const char *name = strtab + s.st_name;
      Fn *f = nullptr;
      for (Fn &g : g_fns)
        if (g.name[0] == name[0] && strcmp(g.name, name) == 0) { f = &g; break; }
      if (!f || !f->libc) continue;
      void **slot = reinterpret_cast<void **>(base + r.r_offset);
      void *v = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
      // glibc's already; or not bound yet (lazy: it holds the object's own PLT stub) and bound
      // through the new handle it would be glibc's
      if (v != f->libc &&
          !(type == R_X86_64_JUMP_SLOT && f->deep == f->libc && o.maps(reinterpret_cast<uintptr_t>(v))))
        continue;
      write_slot(slot, f->ours, o, name);
    }
  }
#endif
}

// The objects from the handle's on, in load order: its new dependencies come after it.  (Objects
// a concurrent dlopen adds after them are visited too, harmlessly: without RTLD_DEEPBIND nothing
// of theirs leads to glibc's functions, and DEEPBIND opens are serialized by g_open_lock.)
struct Walk {
  uintptr_t addr;
  const ElfW(Dyn) *dyn;
  bool started = false;
  uintptr_t page;
};
int walk_one(dl_phdr_info *info, size_t, void *arg) {
  Walk *w = static_cast<Walk *>(arg);
  Object o{info, w->page};
  if (!w->started && info->dlpi_addr == w->addr && o.dynamic() == w->dyn) w->started = true;
  if (w->started) rebind_object(o);
  return 0;
}

void rebind(void *handle) {
  link_map *lm = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || !lm) return;
  resolve();
  for (Fn &f : g_fns) f.deep = dlsym(handle, f.name);
  Walk w{lm->l_addr, lm->l_ld, false, uintptr_t(sysconf(_SC_PAGESIZE))};
  dl_iterate_phdr(walk_one, &w);
  dlerror();   // (a failed dlsym above is nobody's error)
}

// DEEPBIND opens one at a time, each with its rebind (recursive: a library's constructor may open
// another).  A forked child gets it unlocked (a thread of the parent may have held it).
pthread_mutex_t g_open_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
void open_lock_child() {
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&g_open_lock, &a);
  pthread_mutexattr_destroy(&a);
}
std::atomic<bool> g_atfork_done{false};

}  // namespace
}  // namespace zns::shim

namespace zns::shim {
namespace {
ZNS_NOINLINE void *deep_open(DlopenFn real, const char *file, int mode) {
  if (!g_atfork_done.exchange(true)) pthread_atfork(nullptr, nullptr, open_lock_child);
  pthread_mutex_lock(&g_open_lock);
  void *h = real(file, mode);
  if (h) {
    int e = errno;
    rebind(h);
    errno = e;
  }
  pthread_mutex_unlock(&g_open_lock);
  return h;
}
}  // namespace
}  // namespace zns::shim

// Both calls are tail jumps (no frame here): without RTLD_DEEPBIND the real dlopen sees its
// caller's return address, as if called directly.
extern "C" ZNS_EXPORT void *dlopen(const char *file, int mode) {
  zns::shim::DlopenFn real = zns::shim::real_dlopen();
  if (ZNS_UNLIKELY(mode & RTLD_DEEPBIND)) return zns::shim::deep_open(real, file, mode);
  return real(file, mode);
}
