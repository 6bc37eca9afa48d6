// dlopen with RTLD_DEEPBIND.  A library opened with that flag looks symbols up in its own
// dependencies before the global scope, so its calls to malloc, free and the rest bind to glibc's
// although LD_PRELOAD put ZNS-Slab first.  Blocks then cross allocators: a block the program
// allocated (ours) and the library frees reaches glibc's free, which aborts ("free(): invalid
// pointer", "double free or corruption"); the other way (the library's block freed by the
// program) our entry points route by ownership.  PHP up to 8.4 opens every extension so: `php -v`
// with Debian's default extensions aborted under the shim, as under jemalloc, mimalloc and
// tcmalloc preloaded (php-src#10670, #11133).
//
// So dlopen is interposed (DESIGN, "The region and ownership"):
//   - Without RTLD_DEEPBIND it is a jump to the real one (an assembly stub on x86-64, so at any
//     optimisation level): glibc takes the caller from the return address to find the caller's
//     RPATH/RUNPATH, $ORIGIN and namespace, and sees the program's, as if called directly.
//   - With it, the opening is done as the caller would have had it (the stub jumps, so the caller
//     is our return address): a name already loaded is returned as it is (nothing new was bound);
//     `$ORIGIN` is the caller's directory; a bare name is looked for in the caller's RPATH,
//     LD_LIBRARY_PATH and RUNPATH directories (dlinfo RTLD_DI_SERINFO) before the cache and the
//     system directories.  Then the objects this call loaded -- the new object and the new objects
//     of its dependency tree, which glibc lists right after it -- are rebound: every slot
//     (JUMP_SLOT, GLOB_DAT, a plain 64-bit address) of one of the eleven C allocation functions
//     that holds glibc's function, or that lazy binding has not filled yet and would fill with
//     glibc's (a dlsym through the new handle searches the same dependencies first), gets ours.
//     A slot bound anywhere else (a library that brings its own allocator) is left alone, and so
//     is every object this call did not load (already loaded ones, and those that constructors
//     running inside this dlopen opened: a deep-bound one among them is rebound by its own call).
//   - No lock of ours is held across a call into the loader: a library's constructor may itself
//     dlopen, under the loader's lock, in another thread.  Only the patching (inside
//     dl_iterate_phdr, no loader calls there) is serialized, so that two threads never toggle
//     the protection of the same page at once.
// Limits: a deep-bound library's constructors run before the rebinding (their allocations are
// glibc's, and freeing them later routes by ownership); dlmopen is not interposed.
//
// Not an allocation path: it runs inside dlopen, may allocate, take a lock and write to stderr.
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
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

#include "core/platform.h"

extern "C" void __libc_free(void *);

using DlopenFn = void *(*)(const char *, int);

// Used by the stub below (plain C names, hidden).
extern "C" {
__attribute__((visibility("hidden"))) DlopenFn zns_real_dlopen_fn;   // atomic: __atomic_* below
__attribute__((visibility("hidden"))) DlopenFn zns_real_dlopen();
__attribute__((visibility("hidden"))) void *zns_deep_dlopen(const char *file, int mode);
}

DlopenFn zns_real_dlopen() {
  DlopenFn f = __atomic_load_n(&zns_real_dlopen_fn, __ATOMIC_ACQUIRE);
  if (!f) {
    f = reinterpret_cast<DlopenFn>(dlsym(RTLD_NEXT, "dlopen"));
    if (!f) zns::fatal("dlopen: the next dlopen cannot be found (dlsym(RTLD_NEXT))", "dlopen", nullptr);
    __atomic_store_n(&zns_real_dlopen_fn, f, __ATOMIC_RELEASE);
  }
  return f;
}

namespace zns::shim {
namespace {

// The C allocation functions: ours (the interposed definitions, reached through our own GOT: the
// first in the global scope) and glibc's.  Filled in once by resolve(); two threads may both do
// it, writing the same values.
constexpr unsigned kFns = 11;
const char *const kNames[kFns] = {"malloc", "free", "calloc", "realloc", "reallocarray",
                                  "posix_memalign", "aligned_alloc", "memalign", "valloc",
                                  "pvalloc", "malloc_usable_size"};
void *g_ours[kFns];
void *g_libc[kFns];   // glibc's definition, or null
std::atomic<bool> g_resolved{false};

void resolve() {
  if (g_resolved.load(std::memory_order_acquire)) return;
  void *const ours[kFns] = {
      reinterpret_cast<void *>(&::malloc), reinterpret_cast<void *>(&::free),
      reinterpret_cast<void *>(&::calloc), reinterpret_cast<void *>(&::realloc),
      reinterpret_cast<void *>(&::reallocarray), reinterpret_cast<void *>(&::posix_memalign),
      reinterpret_cast<void *>(&::aligned_alloc), reinterpret_cast<void *>(&::memalign),
      reinterpret_cast<void *>(&::valloc), reinterpret_cast<void *>(&::pvalloc),
      reinterpret_cast<void *>(&::malloc_usable_size)};
  void *libc[kFns] = {};
  Dl_info di;
  if (dladdr(reinterpret_cast<void *>(&__libc_free), &di) && di.dli_fname) {
    if (void *h = zns_real_dlopen()(di.dli_fname, RTLD_LAZY | RTLD_NOLOAD)) {
      for (unsigned i = 0; i < kFns; ++i) {
        libc[i] = dlsym(h, kNames[i]);
        if (libc[i] == ours[i]) libc[i] = nullptr;   // (cannot be: ours is not in libc's scope)
      }
      dlclose(h);
    }
  }
  for (unsigned i = 0; i < kFns; ++i) {
    __atomic_store_n(&g_ours[i], ours[i], __ATOMIC_RELAXED);
    __atomic_store_n(&g_libc[i], libc[i], __ATOMIC_RELAXED);
  }
  g_resolved.store(true, std::memory_order_release);
}

void say_once(const char *what, const char *object, const char *name, int err) {
  static std::atomic<bool> said{false};
  if (said.exchange(true)) return;
  char mem[512];
  Buf b(mem, sizeof mem);
  b.str("zns-slab: dlopen(RTLD_DEEPBIND): ").str(what).str(" ").str(name).str(" in ")
      .str(object && *object ? object : "?");
  if (err) b.str(" (errno ").u64(uint64_t(err)).str(")");   // (no strerror: inside the loader's lock)
  b.str(": its blocks may reach glibc's allocator\n");
  b.say();
}

// One object as dl_iterate_phdr shows it.
struct Object {
  const dl_phdr_info *info;
  uintptr_t page;
  const ElfW(Phdr) *segment(uintptr_t a, unsigned type) const {   // the one of that type holding a
    for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
      const ElfW(Phdr) &ph = info->dlpi_phdr[i];
      if (ph.p_type == type && a - (info->dlpi_addr + ph.p_vaddr) < ph.p_memsz) return &ph;
    }
    return nullptr;
  }
  bool relro(uintptr_t a) const {   // read-only after relocation: whole pages, as glibc protects
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

// What one object's dynamic section says (addresses: glibc relocates these entries in place;
// other loaders may not).
struct Dynamic {
  const ElfW(Dyn) *dyn = nullptr;
  const ElfW(Sym) *symtab = nullptr;
  const char *strtab = nullptr;
  const char *soname = nullptr;
  const ElfW(Rela) *rela[2] = {nullptr, nullptr};   // DT_RELA, DT_JMPREL
  size_t relasz[2] = {0, 0};
  bool rela_plt = true;
  Dynamic(uintptr_t base, const ElfW(Dyn) *d) : dyn(d) {
    if (!d) return;
    auto addr = [base](ElfW(Addr) v) { return v < base ? v + base : v; };
    ElfW(Addr) soname_off = 0;
    bool has_soname = false;
    for (; d->d_tag != DT_NULL; ++d) {
      switch (d->d_tag) {
        case DT_SYMTAB: symtab = reinterpret_cast<const ElfW(Sym) *>(addr(d->d_un.d_ptr)); break;
        case DT_STRTAB: strtab = reinterpret_cast<const char *>(addr(d->d_un.d_ptr)); break;
        case DT_SONAME: soname_off = d->d_un.d_val; has_soname = true; break;
        case DT_RELA: rela[0] = reinterpret_cast<const ElfW(Rela) *>(addr(d->d_un.d_ptr)); break;
        case DT_RELASZ: relasz[0] = d->d_un.d_val; break;
        case DT_JMPREL: rela[1] = reinterpret_cast<const ElfW(Rela) *>(addr(d->d_un.d_ptr)); break;
        case DT_PLTRELSZ: relasz[1] = d->d_un.d_val; break;
        case DT_PLTREL: rela_plt = d->d_un.d_val == DT_RELA; break;
      }
    }
    if (strtab && has_soname) soname = strtab + soname_off;
  }
  // Does one of its DT_NEEDED entries name `o` (by its SONAME, its file name or its path)?
  bool needs(const char *o_soname, const char *o_path) const {
    if (!dyn || !strtab) return false;
    const char *slash = strrchr(o_path, '/');
    const char *o_file = slash ? slash + 1 : o_path;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; ++d) {
      if (d->d_tag != DT_NEEDED) continue;
      const char *n = strtab + d->d_un.d_val;
      if ((o_soname && strcmp(n, o_soname) == 0) || strcmp(n, o_file) == 0 || strcmp(n, o_path) == 0)
        return true;
    }
    return false;
  }
};

// Write fn into a slot, through whatever protection its page has now: RELRO (read-only after
// relocation), or a read-only segment that held a text relocation (DT_TEXTREL: glibc wrote it
// under a temporary mprotect, and so do we).
void write_slot(void **slot, void *fn, const Object &o, const char *name) {
  uintptr_t a = reinterpret_cast<uintptr_t>(slot);
  const ElfW(Phdr) *load = o.segment(a, PT_LOAD);
  if (!load) return say_once("cannot find the segment of the slot of", o.info->dlpi_name, name, 0);
  int prot;
  if (o.relro(a)) prot = PROT_READ;
  else if (load->p_flags & PF_W) prot = -1;   // writable as it is (a GOT, data)
  else prot = (load->p_flags & PF_R ? PROT_READ : 0) | (load->p_flags & PF_X ? PROT_EXEC : 0);
  if (prot < 0) {
    __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    return;
  }
  void *p = reinterpret_cast<void *>(a & ~(o.page - 1));
  size_t len = ((a + sizeof(void *) + o.page - 1) & ~(o.page - 1)) - (a & ~(o.page - 1));
  if (mprotect(p, len, prot | PROT_WRITE) != 0)
    return say_once("cannot rebind", o.info->dlpi_name, name, errno);
  __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
  mprotect(p, len, prot);
}

// Rebind one object's references to the allocation functions (the rule at the top of the file).
// deep[i]: where a lookup through the new handle leads.  Runs inside dl_iterate_phdr (the
// loader's list lock): no call into the loader here.
void rebind_object(const Object &o, const Dynamic &dy, void *const *deep) {
#if !defined(__x86_64__)
  (void)o, (void)dy, (void)deep;   // (the relocation types below are x86-64's)
#else
  if (!dy.symtab || !dy.strtab || !dy.rela_plt) return;   // (x86-64 uses RELA throughout)
  uintptr_t base = o.info->dlpi_addr;
  for (unsigned t = 0; t < 2; ++t) {
    if (!dy.rela[t]) continue;
    for (size_t k = 0, n = dy.relasz[t] / sizeof(ElfW(Rela)); k < n; ++k) {
      const ElfW(Rela) &r = dy.rela[t][k];
      unsigned type = unsigned(ELF64_R_TYPE(r.r_info)), sym = unsigned(ELF64_R_SYM(r.r_info));
      if (sym == 0 || (type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT &&
                       !(type == R_X86_64_64 && r.r_addend == 0)))
        continue;
      const ElfW(Sym) &s = dy.symtab[sym];
      if (s.st_shndx != SHN_UNDEF) continue;   // the object's own definition
      const char *name = dy.strtab + s.st_name;
      unsigned i = 0;
      while (i < kFns && !(kNames[i][0] == name[0] && strcmp(kNames[i], name) == 0)) ++i;
      if (i == kFns) continue;
      void *libc = __atomic_load_n(&g_libc[i], __ATOMIC_RELAXED);
      if (!libc) continue;
      void **slot = reinterpret_cast<void **>(base + r.r_offset);
      void *v = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
      // glibc's already; or not bound yet (lazy: it holds the object's own PLT stub) and bound
      // through the new handle it would be glibc's
      if (v != libc && !(type == R_X86_64_JUMP_SLOT && deep[i] == libc &&
                         o.segment(reinterpret_cast<uintptr_t>(v), PT_LOAD)))
        continue;
      write_slot(slot, __atomic_load_n(&g_ours[i], __ATOMIC_RELAXED), o, name);
    }
  }
#endif
}

// The walk over the loaded objects: the new object, then the objects right after it in load
// order as long as one of the run so far needs them (its new dependencies, which glibc lists
// after it before any constructor runs).  An object that was loaded before the call is never
// among them: the caller returned early for a name already loaded.
constexpr unsigned kRunMax = 256;
struct Walk {
  Walk(uintptr_t a, const ElfW(Dyn) *l, uintptr_t pg, void *const *d) : addr(a), ld(l), page(pg), deep(d) {}
  uintptr_t addr;
  const ElfW(Dyn) *ld;
  uintptr_t page;
  void *const *deep;
  enum { kBefore, kIn, kAfter } state = kBefore;
  unsigned n = 0;
  const ElfW(Dyn) *run[kRunMax];   // the run so far: dynamic sections and load addresses
  uintptr_t run_base[kRunMax];
};
int walk_one(dl_phdr_info *info, size_t, void *arg) {
  Walk *w = static_cast<Walk *>(arg);
  if (w->state == Walk::kAfter) return 1;
  Object o{info, w->page};
  Dynamic dy(info->dlpi_addr, o.dynamic());
  if (w->state == Walk::kBefore) {
    if (info->dlpi_addr != w->addr || dy.dyn != w->ld) return 0;
    w->state = Walk::kIn;
  } else {
    bool needed = false;
    for (unsigned k = 0; k < w->n && !needed; ++k)
      needed = Dynamic(w->run_base[k], w->run[k]).needs(dy.soname, info->dlpi_name ? info->dlpi_name : "");
    if (!needed || w->n == kRunMax) {
      w->state = Walk::kAfter;
      return 1;
    }
  }
  w->run[w->n] = dy.dyn;
  w->run_base[w->n] = info->dlpi_addr;
  ++w->n;
  rebind_object(o, dy, w->deep);
  return 0;
}

Lock g_patch_lock;   // one walk at a time (the mprotect toggles); reset in a forked child
std::atomic<bool> g_atfork_done{false};
void patch_lock_child() { g_patch_lock.reset(); }

void rebind(void *handle) {
  link_map *lm = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || !lm) return;
  resolve();
  void *deep[kFns];
  for (unsigned i = 0; i < kFns; ++i) deep[i] = dlsym(handle, kNames[i]);
  dlerror();   // (a failed dlsym above is nobody's error)
  if (!g_atfork_done.exchange(true)) pthread_atfork(nullptr, nullptr, patch_lock_child);
  Walk w(lm->l_addr, lm->l_ld, uintptr_t(sysconf(_SC_PAGESIZE)), deep);
  Guard g(g_patch_lock);
  dl_iterate_phdr(walk_one, &w);
}

// ---- opening as the caller would have ----------------------------------------------------------

// `$ORIGIN` / `${ORIGIN}` at the start of a path: the calling object's directory.  False if the
// name has no such prefix, or it cannot be replaced (then glibc gets the name as it is).
bool expand_origin(const char *file, const link_map *caller, char *out, size_t cap) {
  size_t skip = strncmp(file, "$ORIGIN", 7) == 0 ? 7 : strncmp(file, "${ORIGIN}", 9) == 0 ? 9 : 0;
  if (!skip || (file[skip] != '/' && file[skip] != 0) || getauxval(AT_SECURE)) return false;
  char dir[4096];
  size_t n;
  if (caller->l_name && caller->l_name[0] == '/') {
    n = strlen(caller->l_name);
    if (n >= sizeof dir) return false;
    memcpy(dir, caller->l_name, n + 1);
  } else {   // the main program (l_name ""): its executable
    ssize_t r = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (r <= 0) return false;
    n = size_t(r);
    dir[n] = 0;
  }
  char *slash = strrchr(dir, '/');
  if (!slash) return false;
  *slash = 0;
  size_t dl = size_t(slash - dir), rest = strlen(file + skip);
  if (dl + rest + 1 > cap) return false;
  memcpy(out, dir, dl);
  memcpy(out + dl, file + skip, rest + 1);
  return true;
}

// A bare file name: the caller's own directories (DT_RPATH of it and its loaders,
// LD_LIBRARY_PATH, DT_RUNPATH, in glibc's order, as RTLD_DI_SERINFO lists them for the caller),
// then the real dlopen for the rest (the cache and the system directories: the same from any
// caller).  A file found in one of the caller's directories is the answer, loaded or not (as
// glibc stops at the first it can open).
void *open_bare(DlopenFn real, const char *file, int mode, link_map *caller) {
  Dl_serinfo size;
  if (dlinfo(caller, RTLD_DI_SERINFOSIZE, &size) != 0 || size.dls_size == 0) return real(file, mode);
  alignas(Dl_serinfo) char stack[8192];
  char *mem = size.dls_size <= sizeof stack ? stack : static_cast<char *>(malloc(size.dls_size));
  void *h = nullptr;
  bool found = false;
  if (mem) {
    Dl_serinfo *si = reinterpret_cast<Dl_serinfo *>(mem);
    si->dls_size = size.dls_size;
    si->dls_cnt = size.dls_cnt;
    if (dlinfo(caller, RTLD_DI_SERINFOSIZE, si) == 0 && dlinfo(caller, RTLD_DI_SERINFO, si) == 0) {
      size_t flen = strlen(file);
      for (unsigned i = 0; i < si->dls_cnt && !found; ++i) {
        const Dl_serpath &sp = si->dls_serpath[i];
        if (sp.dls_flags & (LA_SER_CONFIG | LA_SER_DEFAULT)) break;
        char path[4096];
        size_t dl = strlen(sp.dls_name);
        if (dl + 1 + flen + 1 > sizeof path) continue;
        memcpy(path, sp.dls_name, dl);
        path[dl] = '/';
        memcpy(path + dl + 1, file, flen + 1);
        if (access(path, F_OK) != 0) continue;
        found = true;
        h = real(path, mode);
      }
    }
    if (mem != stack) free(mem);
  }
  return found ? h : real(file, mode);
}

}  // namespace
}  // namespace zns::shim

// Reached from the stub with the caller's return address as ours (a jump, not a call).
void *zns_deep_dlopen(const char *file, int mode) {
  using namespace zns::shim;
  void *ra = __builtin_return_address(0);
  DlopenFn real = zns_real_dlopen();
  if (!file) return real(file, mode);   // the program itself: nothing new
  Dl_info di;
  link_map *caller = nullptr;
  if (!dladdr1(ra, &di, reinterpret_cast<void **>(&caller), RTLD_DL_LINKMAP)) caller = nullptr;
  char expanded[4096];
  if (caller && file[0] == '$' && expand_origin(file, caller, expanded, sizeof expanded)) file = expanded;
  // Already loaded under that name: glibc returns it; its bindings were made when it was loaded.
  if (void *h = real(file, mode | RTLD_NOLOAD)) return h;
  void *h = caller && !strchr(file, '/') ? open_bare(real, file, mode, caller) : real(file, mode);
  if (h) {
    int e = errno;
    rebind(h);
    errno = e;
  }
  return h;
}

#if defined(__x86_64__)
// dlopen(file, mode): RTLD_DEEPBIND (8) goes to zns_deep_dlopen, everything else to the real
// dlopen, both by a jump, so that the return address they see is the caller's.  The first call
// finds the real one (zns_real_dlopen, with the arguments saved and the stack aligned).
static_assert(RTLD_DEEPBIND == 8, "the stub tests bit 3 of mode");
__asm__(R"(
  .text
  .globl dlopen
  .type dlopen, @function
  .p2align 4
dlopen:
  .cfi_startproc
  testl $8, %esi
  jnz zns_deep_dlopen
  movq zns_real_dlopen_fn(%rip), %rax
  testq %rax, %rax
  jz 1f
  jmp *%rax
1:
  pushq %rdi
  .cfi_adjust_cfa_offset 8
  pushq %rsi
  .cfi_adjust_cfa_offset 8
  subq $8, %rsp
  .cfi_adjust_cfa_offset 8
  call zns_real_dlopen
  addq $8, %rsp
  .cfi_adjust_cfa_offset -8
  popq %rsi
  .cfi_adjust_cfa_offset -8
  popq %rdi
  .cfi_adjust_cfa_offset -8
  jmp *%rax
  .cfi_endproc
  .size dlopen, .-dlopen
)");
#else
// Elsewhere in C: the calls below are tail jumps only when the compiler makes them so (-O2).
extern "C" ZNS_EXPORT void *dlopen(const char *file, int mode) {
  DlopenFn real = zns_real_dlopen();
  if (ZNS_UNLIKELY(mode & RTLD_DEEPBIND)) return zns_deep_dlopen(file, mode);
  return real(file, mode);
}
#endif
