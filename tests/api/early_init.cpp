// Allocation before main and after main.
//   - a .preinit_array function: runs before ANY shared-library constructor (so under
//     LD_PRELOAD before libzns_slab.so's own initializers, and in the linked build before the
//     archive's constructors): malloc/calloc/realloc/memalign/free
//   - __attribute__((constructor(101))) and C++ static objects (std::string, std::map,
//     std::vector, an object owning `new`ed memory), and a thread started from a constructor
//   - main verifies every block made early (bytes intact, small ones owned by the slab) and
//     frees some of them; the rest are freed by static destructors / atexit / destructor
//     functions, which also allocate.  A check failing after main ends the process with _exit(1).
#include "tests/api/zns_test.h"

#include <pthread.h>

#include <map>
#include <string>
#include <vector>

namespace {

struct Early {
  void *p;
  size_t n;
  uint64_t key;
  const char *who;
};
Early early[64];  // zero-initialized (no constructor): usable from preinit
int nearly;
int preinit_ran, ctor_ran, thread_ctor_ran;

void early_alloc(const char *who, size_t n, int how) {
  void *p;
  switch (how) {
    case 0: p = malloc(n); break;
    case 1: p = calloc(1, n); break;
    case 2: p = realloc(nullptr, n); break;
    case 3: p = memalign(64, n); break;
    default: {
      void *q = malloc(n / 2 + 1);
      if (q) memset(q, 0x77, n / 2 + 1);
      p = realloc(q, n);
    }
  }
  if (!p) {
    zt_log("FAIL %s: allocation of %zu (how %d) returned NULL before main", who, n, how);
    _exit(1);
  }
  if (malloc_usable_size(p) < n) {   // (before the shim's constructor too: a large block's size)
    zt_log("FAIL %s: malloc_usable_size of %zu (how %d) before main: %zu", who, n, how, malloc_usable_size(p));
    _exit(1);
  }
  if (how == 1 && zt_first_nonzero(p, n) >= 0) {
    zt_log("FAIL %s: calloc(1, %zu) before main not zeroed", who, n);
    _exit(1);
  }
  if (nearly < 64) {
    uint64_t k = 0xE000 + (uint64_t)nearly;
    zt_fill(p, n, k);
    early[nearly++] = Early{p, n, k, who};
  } else {
    free(p);
  }
}

void early_churn(const char *who) {
  // allocate/free a little of everything, keep a few blocks
  void *tmp[100];
  for (int i = 0; i < 100; i++) tmp[i] = ZT_OPAQUE(malloc((size_t)i * 41 + 1));
  for (int i = 0; i < 100; i++) free(tmp[i]);
  for (int i = 0; i < 5; i++) early_alloc(who, (size_t)(i * 500 + 10), i);
  early_alloc(who, 6000, 0);  // large
  char *s = strdup(who);
  free(s);
}

void preinit_fn(int, char **, char **) {
  preinit_ran = 1;
  early_churn("preinit_array");
}
__attribute__((section(".preinit_array"), used)) void (*preinit_ptr)(int, char **, char **) = preinit_fn;

__attribute__((constructor(101))) void ctor101() {
  ctor_ran = 1;
  early_churn("constructor(101)");
}

void *thread_body(void *) {
  early_churn("thread started from a constructor");
  return nullptr;
}
__attribute__((constructor(102))) void ctor102() {
  pthread_t t;
  if (pthread_create(&t, nullptr, thread_body, nullptr) != 0) {
    zt_log("FAIL constructor(102): pthread_create failed");
    _exit(1);
  }
  pthread_join(t, nullptr);
  thread_ctor_ran = 1;
}

// C++ static objects (dynamic initialization, default priority, after ctor101/102)
std::string g_long_string(5000, 'S');
std::vector<std::string> g_strings = [] {
  std::vector<std::string> v;
  for (int i = 0; i < 300; i++) v.push_back(std::string((size_t)(i % 90) + 1, (char)('a' + i % 26)));
  return v;
}();
std::map<int, std::string> g_map = [] {
  std::map<int, std::string> m;
  for (int i = 0; i < 500; i++) m[i] = std::to_string(i * 7);
  return m;
}();

struct Owner {
  char *buf;
  size_t n;
  Owner(size_t n_) : buf(new char[n_]), n(n_) { memset(buf, 0x3C, n); }
  ~Owner() {
    for (size_t i = 0; i < n; i++)
      if (buf[i] != 0x3C) {
        zt_log("FAIL static destructor: Owner buffer corrupted at %zu", i);
        _exit(1);
      }
    delete[] buf;
    // allocate during static destruction too
    std::string s(3000, 'd');
    std::vector<int> v(1000, 5);
    if (s.size() != 3000 || v[999] != 5) _exit(1);
  }
};
Owner g_owner(2000);
Owner g_owner_large(10000);

// Blocks intentionally kept past main, freed by atexit / destructor functions.
void *g_late[8];
size_t g_late_n[8];

void at_exit_handler() {
  for (int i = 0; i < 4; i++) {
    if (zt_verify(g_late[i], g_late_n[i], 0xA7 + (uint64_t)i) >= 0) {
      zt_log("FAIL atexit: late block %d corrupted", i);
      _exit(1);
    }
    free(g_late[i]);
  }
  void *p = ZT_OPAQUE(malloc(123));
  if (!p) _exit(1);
  memset(p, 1, 123);
  free(p);
}

__attribute__((destructor(101))) void dtor101() {
  // runs after the static destructors and atexit handlers registered after it
  for (int i = 4; i < 8; i++) {
    if (zt_verify(g_late[i], g_late_n[i], 0xA7 + (uint64_t)i) >= 0) {
      zt_log("FAIL destructor(101): late block %d corrupted", i);
      _exit(1);
    }
    free(g_late[i]);
  }
  void *p = ZT_OPAQUE(calloc(10, 10));
  if (!p || zt_first_nonzero(p, 100) >= 0) _exit(1);
  free(p);
}

}  // namespace

int main() {
  int zns = zt_zns_mode();
  zt_log("early_init: mode %s", zt_mode_name());
  CHECK(preinit_ran && ctor_ran && thread_ctor_ran, "preinit %d ctor101 %d thread-ctor %d", preinit_ran, ctor_ran,
        thread_ctor_ran);
  CHECK(nearly == 18, "expected 18 early blocks, have %d", nearly);
  for (int i = 0; i < nearly; i++) {
    Early &e = early[i];
    long bad = zt_verify(e.p, e.n, e.key);
    CHECK(bad < 0, "block %p (%zu bytes) allocated in %s corrupted at offset %ld", e.p, e.n, e.who, bad);
    CHECK(malloc_usable_size(e.p) >= e.n, "block %p from %s: usable %zu < %zu", e.p, e.who,
          malloc_usable_size(e.p), e.n);
    if (zns)
      CHECK(zns_owns(e.p) == zt_should_own(e.n, 0), "block %p (%zu bytes) allocated in %s: zns_owns %d, expected %d",
            e.p, e.n, e.who, zns_owns(e.p), zt_should_own(e.n, 0));
  }
  // free half of them here, realloc the other half (both kinds of operation on early blocks)
  for (int i = 0; i < nearly; i++) {
    Early &e = early[i];
    if (i % 2) {
      free(e.p);
    } else {
      void *r = realloc(e.p, e.n + 3000);
      REQUIRE(r);
      CHECK(zt_verify(r, e.n, e.key) < 0, "realloc of early block from %s lost data", e.who);
      free(r);
    }
  }
  CHECK(g_long_string == std::string(5000, 'S'));
  CHECK(g_strings.size() == 300 && g_strings[299] == std::string(299 % 90 + 1, (char)('a' + 299 % 26)));
  CHECK(g_map.size() == 500 && g_map[499] == std::to_string(499 * 7));
  if (zns) CHECK(zns_owns(g_owner.buf) == 1 && zns_owns(g_owner_large.buf) == 0);

  for (int i = 0; i < 8; i++) {
    g_late_n[i] = (size_t)i * 700 + 5;
    g_late[i] = malloc(g_late_n[i]);
    REQUIRE(g_late[i]);
    zt_fill(g_late[i], g_late_n[i], 0xA7 + (uint64_t)i);
  }
  atexit(at_exit_handler);
  return zt_finish("early_init");
}
