// C++ sized delete: a size of the block's own class is fine (plain and aligned forms); a size of
// another class aborts with one zns-slab line naming the call and the address.
#include "tests/api/zns_test.h"

#include <initializer_list>
#include <new>

namespace {

// Runs f in a child; returns its wait status and stderr.
int in_child(void (*f)(), char *err, size_t cap) {
  int fds[2];
  REQUIRE(pipe(fds) == 0);
  pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    zt_no_core_dumps();
    dup2(fds[1], 2);
    f();
    _exit(42);
  }
  close(fds[1]);
  size_t n = 0;
  ssize_t r;
  while (n + 1 < cap && (r = read(fds[0], err + n, cap - 1 - n)) > 0) n += size_t(r);
  err[n] = 0;
  close(fds[0]);
  int st = 0;
  waitpid(pid, &st, 0);
  return st;
}

void wrong_size() {
  void *p = ::operator new(100);   // class of 112 bytes
  ::operator delete(ZT_OPAQUE(p), 300);
}
void wrong_size_array() {
  void *p = ::operator new[](40);
  ::operator delete[](ZT_OPAQUE(p), 4000);
}
void wrong_size_aligned() {
  void *p = ::operator new(64, std::align_val_t(256));
  ::operator delete(ZT_OPAQUE(p), 2000, std::align_val_t(256));
}

void wrong_alignment() {   // (the heap never aligns a block beyond a page: this one is 64-aligned)
  void *p = ::operator new(64, std::align_val_t(64));
  ::operator delete(ZT_OPAQUE(p), 64, std::align_val_t(8192));
}

}  // namespace

int main() {
  int zns = zt_zns_mode();
  // the right sizes, every form
  for (size_t n : {size_t(0), size_t(1), size_t(8), size_t(9), size_t(15), size_t(16), size_t(100), size_t(4096), size_t(5000)}) {
    void *p = ::operator new(n);
    ::operator delete(ZT_OPAQUE(p), n);
    p = ::operator new[](n);
    ::operator delete[](ZT_OPAQUE(p), n);
    // (8 and 16: requests of 0..8 bytes get 8 B blocks, but not with an alignment of 16)
    for (size_t al : {size_t(8), size_t(16), size_t(32), size_t(64), size_t(256), size_t(4096)}) {
      p = ::operator new(n, std::align_val_t(al));
      CHECK(uintptr_t(p) % al == 0, "new(%zu, align %zu) = %p", n, al, p);
      ::operator delete(ZT_OPAQUE(p), n, std::align_val_t(al));
    }
  }
  // A -static program gets the C++ runtime's operator delete, which ignores the size (README).
#ifdef ZNS_FULL_STATIC
  zns = 0;
#endif
  if (!zns) return zt_finish("sized_delete");
  struct { const char *name; void (*f)(); } cases[] = {
      {"delete(p, 300) of new(100)", wrong_size},
      {"delete[](p, 4000) of new[](40)", wrong_size_array},
      {"delete(p, 2000, align 256) of new(64, align 256)", wrong_size_aligned},
  };
  for (auto &c : cases) {
    char err[1024];
    int st = in_child(c.f, err, sizeof err);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "%s: child status %#x, not SIGABRT", c.name, st);
    CHECK(strstr(err, "zns-slab: sized delete with a size of another class in operator delete") != nullptr,
          "%s: stderr was: %s", c.name, err);
  }
  // an alignment beyond a page for a block of the heap: a clear abort, not a read past the class
  // table (class_of takes at most 4096)
  char err[1024];
  int st = in_child(wrong_alignment, err, sizeof err);
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "delete(p, 64, align 8192): child status %#x, not SIGABRT", st);
  CHECK(strstr(err, "zns-slab: sized delete with an alignment the block was not allocated with in operator delete") != nullptr,
        "delete(p, 64, align 8192): stderr was: %s", err);
  return zt_finish("sized_delete");
}
