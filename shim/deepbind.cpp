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
//   - With it, the real dlopen must return here to rebind, yet still see the caller: the stub
//     jumps to zns_deep_dlopen (whose return address is the caller's), which calls the real one
//     through zns_call_as with a return address that is a `ret` byte (0xc3) in the calling
//     object's _init or _fini (see ret_byte); that `ret` comes back here.  glibc then resolves
//     every name exactly as for the caller (its RPATH/RUNPATH, $ORIGIN, LD_LIBRARY_PATH,
//     glibc-hwcaps, the cache), and gdb's unwinder stops at the byte (no unwind entry covers
//     them; libunwind walks on by the frame pointer, so the heap profiler leaves it out).
//     (Not under a shadow stack, where the detour would fault, nor for code without any `ret`
//     byte: then the call is direct, and the caller glibc sees is this library.)
//   - A lazy open is made RTLD_NOW, so that every slot of the new objects holds its final function
//     when the real dlopen returns; then in the handle's dependency tree (DT_NEEDED,
//     DT_AUXILIARY, DT_FILTER names matched against the loaded objects' SONAMEs and paths) every
//     slot (JUMP_SLOT, GLOB_DAT, a plain 64-bit address) of one of the eleven C allocation
//     functions that holds glibc's function gets ours.  A slot bound anywhere else (a library
//     that brings its own allocator) is left alone, and so are objects outside the tree
//     (libraries a constructor opened: a deep-bound one among them is rebound by its own call).
//     A slot holding glibc's function is wrong in any object, whoever loaded it, so this runs
//     on every DEEPBIND open, also of a library already loaded (another thread may have loaded
//     it and not rebound it yet).  A library that cannot be bound at once (a function it never
//     calls is defined nowhere) is opened again lazily, and the unbound lazy slots of the objects
//     that open loaded are decided through the handle (a dlsym searches the same dependencies
//     first).
//   - No lock of ours is held across a call into the loader: a library's constructor may itself
//     dlopen, under the loader's lock, in another thread.  Only the patching (inside
//     dl_iterate_phdr, no loader calls there) is serialized, and kept out of forks.
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
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "core/platform.h"

extern "C" void __libc_free(void *);

using DlopenFn = void *(*)(const char *, int);

// Used by the stub below (plain C names, hidden; `used`: a link-time optimiser does not see the
// stub's references, and dropped them, failing the link of a build with -flto).
extern "C" {
__attribute__((visibility("hidden"), used)) DlopenFn zns_real_dlopen_fn;   // atomic: __atomic_* below
__attribute__((visibility("hidden"), used)) DlopenFn zns_real_dlopen();
__attribute__((visibility("hidden"), used)) void *zns_deep_dlopen(const char *file, int mode);
// fn(file, mode) with `ret` as its return address: the `ret` there comes back here (the stub below)
__attribute__((visibility("hidden"))) void *zns_call_as(const char *file, int mode, DlopenFn fn, uintptr_t ret);
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

__thread uintptr_t t_detour_ret __attribute__((tls_model("initial-exec")));

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
  uintptr_t init = 0, fini = 0;                     // _init, _fini (DT_INIT, DT_FINI)
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
        case DT_INIT: init = addr(d->d_un.d_ptr); break;
        case DT_FINI: fini = addr(d->d_un.d_ptr); break;
        case DT_RELA: rela[0] = reinterpret_cast<const ElfW(Rela) *>(addr(d->d_un.d_ptr)); break;
        case DT_RELASZ: relasz[0] = d->d_un.d_val; break;
        case DT_JMPREL: rela[1] = reinterpret_cast<const ElfW(Rela) *>(addr(d->d_un.d_ptr)); break;
        case DT_PLTRELSZ: relasz[1] = d->d_un.d_val; break;
        case DT_PLTREL: rela_plt = d->d_un.d_val == DT_RELA; break;
      }
    }
    if (strtab && has_soname) soname = strtab + soname_off;
  }
};

// Write fn into a slot, through whatever protection its page has now: RELRO (read-only after
// relocation), or a read-only segment that held a text relocation (DT_TEXTREL: glibc wrote it
// under a temporary mprotect, and so do we).
// False when it could not (said, unless quiet).
bool write_slot(void **slot, void *fn, const Object &o, const char *name, bool quiet = false) {
  uintptr_t a = reinterpret_cast<uintptr_t>(slot);
  const ElfW(Phdr) *load = o.segment(a, PT_LOAD);
  if (!load) {
    if (!quiet) say_once("cannot find the segment of the slot of", o.info->dlpi_name, name, 0);
    return false;
  }
  int prot;
  if (o.relro(a)) prot = PROT_READ;
  else if (load->p_flags & PF_W) prot = -1;   // writable as it is (a GOT, data)
  else prot = (load->p_flags & PF_R ? PROT_READ : 0) | (load->p_flags & PF_X ? PROT_EXEC : 0);
  if (prot < 0) {
    __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
    return true;
  }
  void *p = reinterpret_cast<void *>(a & ~(o.page - 1));
  size_t len = ((a + sizeof(void *) + o.page - 1) & ~(o.page - 1)) - (a & ~(o.page - 1));
  if (mprotect(p, len, prot | PROT_WRITE) != 0) {
    if (!quiet) say_once("cannot rebind", o.info->dlpi_name, name, errno);
    return false;
  }
  __atomic_store_n(slot, fn, __ATOMIC_RELEASE);
  mprotect(p, len, prot);
  return true;
}

// Rebind one object's references to the allocation functions (the rule at the top of the file).
// deep[i]: where a lookup through the new handle leads (null: no lazy slot is left, see
// zns_deep_dlopen).  Runs inside dl_iterate_phdr (the
// loader's list lock): no call into the loader here.
// The relocations that bind a name to a slot: a PLT slot, a GOT slot, a word of data (addend 0).
#if defined(__x86_64__)
constexpr unsigned kRelJumpSlot = R_X86_64_JUMP_SLOT, kRelGlobDat = R_X86_64_GLOB_DAT, kRelAbs64 = R_X86_64_64;
#elif defined(__aarch64__)
constexpr unsigned kRelJumpSlot = R_AARCH64_JUMP_SLOT, kRelGlobDat = R_AARCH64_GLOB_DAT, kRelAbs64 = R_AARCH64_ABS64;
#else
#error "deepbind: add this architecture's relocation types"
#endif

// Each slot of the object bound to a name it imports (an undefined symbol): f(slot, name, type)
// for every PLT and GOT slot, and, with abs64, every word of data bound with addend 0.
template <typename F>
void for_each_import(const Object &o, const Dynamic &dy, bool abs64, F f) {
  if (!dy.symtab || !dy.strtab || !dy.rela_plt) return;   // (x86-64 and aarch64 use RELA throughout)
  for (unsigned t = 0; t < 2; ++t) {
    for (size_t k = 0, n = dy.rela[t] ? dy.relasz[t] / sizeof(ElfW(Rela)) : 0; k < n; ++k) {
      const ElfW(Rela) &r = dy.rela[t][k];
      unsigned type = unsigned(ELF64_R_TYPE(r.r_info)), sym = unsigned(ELF64_R_SYM(r.r_info));
      if (sym == 0 || (type != kRelJumpSlot && type != kRelGlobDat && !(abs64 && type == kRelAbs64 && r.r_addend == 0)))
        continue;
      const ElfW(Sym) &s = dy.symtab[sym];
      if (s.st_shndx != SHN_UNDEF) continue;   // the object's own definition
      f(reinterpret_cast<void **>(o.info->dlpi_addr + r.r_offset), dy.strtab + s.st_name, type);
    }
  }
}

void rebind_object(const Object &o, const Dynamic &dy, void *const *deep) {
  for_each_import(o, dy, true, [&](void **slot, const char *name, unsigned type) {
    unsigned i = 0;
    while (i < kFns && !(kNames[i][0] == name[0] && strcmp(kNames[i], name) == 0)) ++i;
    if (i == kFns) return;
    void *libc = __atomic_load_n(&g_libc[i], __ATOMIC_RELAXED);
    if (!libc) return;
    void *v = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    // glibc's already; or not bound yet (lazy: it holds the object's own PLT stub) and bound
    // through the new handle it would be glibc's
    if (v != libc && !(type == kRelJumpSlot && deep && deep[i] == libc &&
                       o.segment(reinterpret_cast<uintptr_t>(v), PT_LOAD)))
      return;
    write_slot(slot, __atomic_load_n(&g_ours[i], __ATOMIC_RELAXED), o, name);
  });
}

// The handle's dependency tree, in its namespace: link maps reached from the handle through
// DT_NEEDED / DT_AUXILIARY / DT_FILTER names (a `$ORIGIN/` name by its file name: glibc's origin
// of an object opened by a relative path is not in its l_name), breadth first.  Computed inside
// dl_iterate_phdr (the loader's list lock: the namespace's list cannot change meanwhile) at its
// first object; then every object of the walk that is in the tree is rebound.  Under
// g_patch_lock; `members` is allocated before the walk for every object then loaded (nothing
// large on the stack: a thread with a small one may dlopen).
struct Loaded {   // an object as it was before a lazy open (see zns_deep_dlopen)
  uintptr_t addr;
  const ElfW(Dyn) *ld;
};
struct Tree {
  const link_map *handle;
  uintptr_t page;
  void *const *deep;                // lazy slots: decided through the handle, in new objects only
  const Loaded *before;             // the objects loaded before the open (with deep)
  unsigned n_before;
  bool built, truncated;
  unsigned n, cap;
  const link_map **members;
};

bool in_tree(const Tree &t, uintptr_t addr, const ElfW(Dyn) *ld) {
  for (unsigned k = 0; k < t.n; ++k)
    if (t.members[k]->l_addr == addr && t.members[k]->l_ld == ld) return true;
  return false;
}

const char *file_part(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

// Does the name n (a DT_NEEDED-like entry) designate l?
bool names(const char *n, const link_map *l, const char *soname) {
  if (soname && strcmp(n, soname) == 0) return true;
  if (strcmp(n, l->l_name) == 0) return true;
  if (strchr(n, '$') || !strchr(n, '/')) return strcmp(file_part(n), file_part(l->l_name)) == 0;
  return false;
}

void build_tree(Tree &t) {
  const link_map *head = t.handle;
  while (head->l_prev) head = head->l_prev;
  t.n = 0;
  t.members[t.n++] = t.handle;
  for (unsigned next = 0; next < t.n; ++next) {   // each member's names, once
    const link_map *m = t.members[next];
    Dynamic dm(m->l_addr, m->l_ld);
    if (!dm.dyn || !dm.strtab) continue;
    for (const ElfW(Dyn) *d = dm.dyn; d->d_tag != DT_NULL; ++d) {
      if (d->d_tag != DT_NEEDED && d->d_tag != DT_AUXILIARY && d->d_tag != DT_FILTER) continue;
      const char *n = dm.strtab + d->d_un.d_val;
      for (const link_map *l = head; l; l = l->l_next) {
        if (!l->l_name || !l->l_name[0]) continue;   // the program (no one needs it)
        if (!names(n, l, Dynamic(l->l_addr, l->l_ld).soname)) continue;
        bool member = false;
        for (unsigned k = 0; k < t.n && !member; ++k) member = t.members[k] == l;
        if (member) continue;
        if (t.n == t.cap) {
          t.truncated = true;
          continue;
        }
        t.members[t.n++] = l;
      }
    }
  }
}

int walk_one(dl_phdr_info *info, size_t, void *arg) {
  Tree &t = *static_cast<Tree *>(arg);
  if (!t.built) {
    build_tree(t);
    t.built = true;
  }
  Object o{info, t.page};
  Dynamic dy(info->dlpi_addr, o.dynamic());
  if (!in_tree(t, info->dlpi_addr, dy.dyn)) return 0;
  bool loaded_before = false;   // (its lazy slots follow the scope of whoever loaded it)
  for (unsigned k = 0; k < t.n_before && !loaded_before; ++k)
    loaded_before = t.before[k].addr == info->dlpi_addr && t.before[k].ld == dy.dyn;
  rebind_object(o, dy, loaded_before ? nullptr : t.deep);
  return 0;
}
int count_one(dl_phdr_info *, size_t, void *arg) {
  ++*static_cast<unsigned *>(arg);
  return 0;
}
struct Snapshot {
  Loaded *objects;
  unsigned n, cap;
};
int snapshot_one(dl_phdr_info *info, size_t, void *arg) {
  Snapshot &sn = *static_cast<Snapshot *>(arg);
  if (sn.n == sn.cap) return 1;
  sn.objects[sn.n++] = Loaded{info->dlpi_addr, Object{info, 0}.dynamic()};
  return 0;
}

// One rebinding walk at a time (the mprotect toggles), and none across a fork: glibc 2.36 does
// not reset its list lock in the child, and a walk holds it (a child forked meanwhile hung in its
// own dlopen).  Taken by the fork's prepare handler, released after it, reset in the child.
// Registered by the library's constructor, before any handler of the program: its prepare
// handler runs last and its parent/child handlers first, so a program's handler may itself do a
// DEEPBIND open (registered at the first open, after the program's, it deadlocked there).
// (On the fork's page, core/platform.h.  The forking thread holds it in the child too: let go.)
Lock &g_patch_lock = g_fork_page.lock[kForkPatchLock].lock;
void patch_lock_prepare() { g_patch_lock.lock(); }
void patch_lock_parent() { g_patch_lock.unlock(); }
ZNS_FORK_CODE void patch_lock_child() { g_patch_lock.release_in_child(); }
__attribute__((constructor)) void patch_lock_atfork() {
  pthread_atfork(patch_lock_prepare, patch_lock_parent, patch_lock_child);
}

// The number of loaded objects.  Under g_patch_lock like every walk, but no malloc under it: the
// fork's prepare handlers run in reverse order of registration, and the heap's (registered at
// the first malloc, after ours) hold the heap's locks while ours waits for this one: a malloc
// under it that needed a heap lock deadlocked a fork against a DEEPBIND open.
unsigned count_objects() {
  unsigned objects = 0;
  Guard g(g_patch_lock);
  dl_iterate_phdr(count_one, &objects);
  return objects;
}

// before: null after an RTLD_NOW open (every slot is final: only glibc's are replaced); after a
// lazy one, the objects loaded before it (the new objects' lazy slots are decided through the
// handle, which is their scope; an older object's are left to the scope it was loaded in).
void rebind(void *handle, const Snapshot *before) {
  link_map *lm = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &lm) != 0 || !lm) return;
  resolve();
  void *deep[kFns];
  if (before) {
    for (unsigned i = 0; i < kFns; ++i) deep[i] = dlsym(handle, kNames[i]);
    dlerror();   // (a failed dlsym above is nobody's error)
  }
  Tree t{lm, uintptr_t(sysconf(_SC_PAGESIZE)), before ? deep : nullptr,
         before ? before->objects : nullptr, before ? before->n : 0, false, false, 0, 0, nullptr};
  t.cap = count_objects() + 16;   // (a few more may be loaded meanwhile: then `truncated`)
  t.members = static_cast<const link_map **>(malloc(t.cap * sizeof(link_map *)));
  if (t.members) {
    Guard g(g_patch_lock);   // (every walk under it: a fork must not catch one)
    dl_iterate_phdr(walk_one, &t);
  }
  if (!t.members) return say_once("no memory for the tree of", lm->l_name, "its objects", ENOMEM);
  free(t.members);
  if (t.truncated) say_once("a dependency tree too large to rebind whole:", lm->l_name, "", 0);
}

// The objects loaded now (for a lazy open); objects null if that cannot be known.
Snapshot snapshot() {
  Snapshot sn{nullptr, 0, count_objects() + 16};
  sn.objects = static_cast<Loaded *>(malloc(sn.cap * sizeof(Loaded)));
  if (sn.objects) {
    Guard g(g_patch_lock);
    dl_iterate_phdr(snapshot_one, &sn);
  }
  return sn;
}

// ---- another object's calls (the heap profiler's use: shim/prof.cpp) ---------------------------

struct Redirect {
  uintptr_t base;
  const char *const *names;
  void *const *fns;
  unsigned n, written, objects;
  uintptr_t page;
  bool failed;
};
int redirect_one(dl_phdr_info *info, size_t, void *arg) {
  Redirect &r = *static_cast<Redirect *>(arg);
  Object o{info, r.page};
  Dynamic dy(info->dlpi_addr, o.dynamic());
  if (info->dlpi_addr != r.base || !dy.symtab || !dy.strtab || !dy.rela_plt) return 0;
  ++r.objects;
  for_each_import(o, dy, false, [&](void **slot, const char *name, unsigned) {
    for (unsigned i = 0; i < r.n; ++i) {
      if (strcmp(r.names[i], name) != 0) continue;
      if (write_slot(slot, r.fns[i], o, name, true)) r.written |= 1u << i;
      else r.failed = true;
    }
  });
  return 0;
}

}  // namespace

// (Declared in entry.h.)
unsigned redirect_calls(uintptr_t base, const char *const *names, void *const *fns, unsigned n) {
  if (!base) return 0;   // (the program's, when it is not position-independent: never wanted here)
  Redirect r{base, names, fns, n, 0, 0, uintptr_t(sysconf(_SC_PAGESIZE)), false};
  Guard g(g_patch_lock);   // (the mprotect toggles: one walk at a time, none across a fork)
  dl_iterate_phdr(redirect_one, &r);
  return r.objects == 1 && !r.failed ? r.written : 0;
}

namespace {

// ---- calling the real dlopen as the caller ------------------------------------------------------

// A `ret` instruction byte (0xc3) in the code of the object that holds `ra` (the program when no
// object holds it, as glibc then takes the program as the caller), or 0.  Taken from the object's
// _init or _fini (DT_INIT, DT_FINI: glibc's crti/crtn code), which no unwind table entry covers:
// an unwinder that meets it in a backtrace taken inside the real dlopen stops there, instead of
// reading a frame of the caller's function out of ours (a `ret` elsewhere in the caller's code
// had gdb show invented frames, and a C++ exception thrown by a plugin's constructor land in a
// catch of the program, on a wrong stack).  An object without either (linked -nostartfiles) gets
// any `ret` byte of its code, near the call: names then resolve as for the caller, and only a
// backtrace from inside that dlopen goes wrong.
struct AnyRet {
  uintptr_t ra, found;
};
int any_ret_one(dl_phdr_info *info, size_t, void *arg) {
  AnyRet &g = *static_cast<AnyRet *>(arg);
  for (unsigned i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr) &ph = info->dlpi_phdr[i];
    if (ph.p_type != PT_LOAD || (ph.p_flags & (PF_X | PF_R)) != (PF_X | PF_R)) continue;
    uintptr_t start = info->dlpi_addr + ph.p_vaddr, end = start + ph.p_filesz;
    if (g.ra - start >= end - start) continue;
    for (uintptr_t a = g.ra; a < end && !g.found; ++a)
      if (*reinterpret_cast<const unsigned char *>(a) == 0xc3) g.found = a;
    for (uintptr_t a = g.ra; a-- > start && !g.found;)
      if (*reinterpret_cast<const unsigned char *>(a) == 0xc3) g.found = a;
    return 1;
  }
  return 0;
}
[[maybe_unused]] uintptr_t ret_byte(uintptr_t ra) {
  dl_find_object fo;
  bool held = _dl_find_object(reinterpret_cast<void *>(ra), &fo) == 0;
  const link_map *l = held ? fo.dlfo_link_map : _r_debug.r_map;
  if (!l) return 0;
  Dynamic dy(l->l_addr, l->l_ld);
  for (uintptr_t f : {dy.init, dy.fini}) {
    if (!f) continue;
    // (_init is about 27 bytes, _fini 13; within f's page, which is mapped: -Wl,-init may name a
    // function at the end of the code)
    uintptr_t end = f + 64, page_end = (f | 4095) + 1;
    for (uintptr_t a = f; a < (end < page_end ? end : page_end); ++a)
      if (*reinterpret_cast<const unsigned char *>(a) == 0xc3) return a;
  }
  if (!held) return 0;   // (generated code: the program has no _init or _fini; rare enough)
  AnyRet g{ra, 0};
  Guard lock(g_patch_lock);   // (a walk: not across a fork)
  dl_iterate_phdr(any_ret_one, &g);
  return g.found;
}

[[maybe_unused]] bool shadow_stack() {   // a CET shadow stack would fault at the detour's returns
#if defined(__x86_64__)
  unsigned long features = 0;
  return os_syscall(SYS_arch_prctl, 0x5005 /* ARCH_SHSTK_STATUS */, &features) == 0 && (features & 1);
#else
  return true;
#endif
}

}  // namespace
}  // namespace zns::shim

// Reached from the stub with the caller's return address as ours (a jump, not a call).
//
// A lazy open is made RTLD_NOW (as LD_BIND_NOW would): then every slot of the new objects holds
// its final function when the real dlopen returns, and the rebinding only has to replace
// glibc's, which is right in any object, whoever loaded it.  (Deciding for a lazily bound slot
// where it would lead needs the object's scope, which only glibc knows: a lookup through the
// handle pointed a shared dependency of another deep-bound plugin that brings its own allocator
// at ZNS-Slab.)  As with LD_BIND_NOW, IFUNC resolvers of the new objects then run before their
// constructors.  A library that cannot be bound at once (a function it never calls is defined
// nowhere) is opened again with the mode asked for, and the lazy slots of the objects that open
// loaded are decided through the handle.  A mode with no binding flag is glibc's to refuse.
void *zns_deep_dlopen(const char *file, int mode) {
  using namespace zns::shim;
  uintptr_t ra = reinterpret_cast<uintptr_t>(__builtin_return_address(0));
  int e = errno;   // (shadow_stack's arch_prctl sets it where the kernel has no such call)
  DlopenFn real = zns_real_dlopen();
#if defined(__x86_64__)
  uintptr_t ret = shadow_stack() ? 0 : ret_byte(ra);
  errno = e;
  // (t_detour_ret: the heap profiler leaves the byte out of the stacks it records in there)
  auto open = [&](int m) {
    if (!ret) return real(file, m);
    uintptr_t outer = zns::shim::t_detour_ret;   // (a constructor's own deep-bound dlopen)
    zns::shim::t_detour_ret = ret;
    void *r = zns_call_as(file, m, real, ret);
    zns::shim::t_detour_ret = outer;
    return r;
  };
#else
  (void)ra;
  auto open = [&](int m) { return real(file, m); };   // (glibc sees this library as the caller)
#endif
  int binding = mode & (RTLD_LAZY | RTLD_NOW);
  if (!file || binding == 0) return open(mode);   // the program (nothing deep-bound), or invalid
  void *h = binding == RTLD_LAZY ? open((mode & ~RTLD_LAZY) | RTLD_NOW) : open(mode);
  Snapshot before{nullptr, 0, 0};
  bool lazy = false;
  if (!h && binding == RTLD_LAZY) {
    before = snapshot();
    lazy = true;
    h = open(mode);
  }
  if (h) {
    rebind(h, lazy && before.objects ? &before : nullptr);
    errno = e;
  }
  free(before.objects);
  return h;
}

#if defined(__x86_64__)
// dlopen(file, mode): RTLD_DEEPBIND (8) goes to zns_deep_dlopen, everything else to the real
// dlopen, both by a jump, so that the return address they see is the caller's.  The first call
// finds the real one (zns_real_dlopen, with the arguments saved and the stack aligned).
static_assert(RTLD_DEEPBIND == 8, "the stub tests bit 3 of mode");
// Global in the shared library; weak in the archive's copy of this object (built again with
// ZNS_WEAK_DLOPEN: Makefile, AR_OBJ), so that a program with a dlopen of its own (a wrapper)
// links and keeps it, without the rebinding of deep-bound libraries.  Not weak in the .so: under
// LD_DYNAMIC_WEAK=1 the loader prefers glibc's strong dlopen to a weak one.  (A second compile,
// not objcopy --weaken-symbol: an -flto object's symbols are not in its ELF table.)
#ifdef ZNS_WEAK_DLOPEN
#define ZNS_DLOPEN_BINDING ".weak"
#else
#define ZNS_DLOPEN_BINDING ".globl"
#endif
__asm__(".pushsection .text\n  " ZNS_DLOPEN_BINDING " dlopen\n" R"(
  .type dlopen, @function
  .p2align 4
dlopen:
  .cfi_startproc
  endbr64
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

# zns_call_as(file, mode, fn, ret): jump to fn with two return addresses stacked: `ret` (a 0xc3
# byte in the caller's code, where fn returns to) and then label 2 (where that byte returns to).
# The stack is aligned for fn as after a call.  rbp holds the frame across (fn preserves it).
  .globl zns_call_as
  .hidden zns_call_as
  .type zns_call_as, @function
  .p2align 4
zns_call_as:
  .cfi_startproc
  endbr64
  pushq %rbp
  .cfi_adjust_cfa_offset 8
  .cfi_rel_offset %rbp, 0
  movq %rsp, %rbp
  .cfi_def_cfa_register %rbp
  subq $8, %rsp
  leaq 2f(%rip), %rax
  pushq %rax
  pushq %rcx
  jmp *%rdx
2:
  movq %rbp, %rsp
  popq %rbp
  .cfi_def_cfa %rsp, 8
  ret
  .cfi_endproc
  .size zns_call_as, .-zns_call_as
  .popsection
)");
#else
// Elsewhere in C: the calls below are tail jumps only when the compiler makes them so (-O2).
#ifdef ZNS_WEAK_DLOPEN
#define ZNS_DLOPEN_WEAK __attribute__((weak))   // (the archive's copy: see the x86-64 stub's note)
#else
#define ZNS_DLOPEN_WEAK
#endif
extern "C" ZNS_EXPORT ZNS_DLOPEN_WEAK void *dlopen(const char *file, int mode) {
  DlopenFn real = zns_real_dlopen();
  if (ZNS_UNLIKELY(mode & RTLD_DEEPBIND)) return zns_deep_dlopen(file, mode);
  return real(file, mode);
}
#endif
