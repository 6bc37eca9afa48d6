// A C++ plugin for tests/api/cxx_late.c, a C program that dlopens it (RTLD_LOCAL) after start:
// the C++ runtime (libstdc++) arrives with it, after ZNS-Slab was loaded without one.  Its
// operator new is ZNS-Slab's (first in the global scope), which must still call this plugin's
// new_handler and throw a std::bad_alloc that this plugin's catch matches.
#include <cstddef>
#include <new>

namespace {
int g_calls;
void counting_handler() {   // returns twice, then uninstalls itself: the next failure throws
  if (++g_calls >= 2) std::set_new_handler(nullptr);
}
void throwing_handler() {
  ++g_calls;
  throw std::bad_alloc();
}
}  // namespace

// 1: bad_alloc caught; 2: something else caught; 0: new returned (p set).
extern "C" int zt_cxx_new(size_t n, int aligned, void **p) {
  try {
    *p = aligned ? ::operator new(n, std::align_val_t{64}) : ::operator new[](n);
    return 0;
  } catch (const std::bad_alloc &) {
    return 1;
  } catch (...) {
    return 2;
  }
}
// The same with the counting handler installed: the number of its calls, or -1 if new did not
// throw bad_alloc in the end.
extern "C" int zt_cxx_new_handler(size_t n) {
  g_calls = 0;
  std::set_new_handler(counting_handler);
  void *p = nullptr;
  int r = zt_cxx_new(n, 0, &p);
  std::set_new_handler(nullptr);
  return r == 1 ? g_calls : -1;
}
// nothrow new with a handler that throws bad_alloc: nullptr, after one call.
extern "C" int zt_cxx_nothrow_throwing_handler(size_t n, void **p) {
  g_calls = 0;
  std::set_new_handler(throwing_handler);
  *p = ::operator new(n, std::nothrow);
  std::set_new_handler(nullptr);
  return g_calls;
}
extern "C" void zt_cxx_delete(void *p) { ::operator delete[](p); }
