// Shared helpers of the benchmark programs (bench/micro.cpp, latency.cpp, memory.cpp).
//
// These programs know nothing of ZNS-Slab: the allocator under test is whatever malloc the
// dynamic linker binds (glibc, or a library in LD_PRELOAD).  Nothing here allocates through
// malloc on a measured path: random tables and sample buffers are mmap'ed up front.
#pragma once
#include <dlfcn.h>
#include <sched.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <x86intrin.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace bench {

// splitmix64: tiny, deterministic.
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }   // inclusive
};

// Memory that never comes from malloc (so it is the same under every allocator).
template <class T>
T *raw_array(size_t n) {
  void *p = mmap(nullptr, n * sizeof(T) + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  memset(p, 0, n * sizeof(T));   // fault it in now, not on a measured path
  return static_cast<T *>(p);
}
template <class T>
void raw_free(T *p, size_t n) { munmap(p, n * sizeof(T) + 1); }

// A precomputed stream of (slot, size) pairs for churn workloads: the random number generator is
// not part of what is measured.  kOps is a power of two; consumers wrap around.
struct ChurnTable {
  static constexpr size_t kOps = size_t(1) << 16;
  uint32_t *slot;
  uint32_t *size;
  ChurnTable(uint64_t seed, uint32_t ring, uint32_t lo, uint32_t hi) {
    slot = raw_array<uint32_t>(kOps);
    size = raw_array<uint32_t>(kOps);
    Rng r(seed);
    for (size_t i = 0; i < kOps; ++i) {
      slot[i] = uint32_t(r.below(ring));
      size[i] = uint32_t(r.range(lo, hi));
    }
  }
  ~ChurnTable() { raw_free(slot, kOps); raw_free(size, kOps); }
};

// The file that the dynamic linker bound `malloc` to (to check that a preload took effect).
inline const char *malloc_origin() {
  Dl_info info;
  void *(*volatile f)(size_t) = &malloc;
  if (dladdr(reinterpret_cast<void *>(f), &info) && info.dli_fname) return info.dli_fname;
  return "?";
}

// Reads a small /proc file into buf (NUL-terminated) with raw syscalls (no malloc); false if it
// cannot.
inline bool read_proc(const char *path, char *buf, size_t size) {
  int fd = ::open(path, O_RDONLY);
  if (fd < 0) return false;
  ssize_t n = ::read(fd, buf, size - 1);
  ::close(fd);
  if (n <= 0) return false;
  buf[n] = 0;
  return true;
}

// Resident set size of this process, bytes (from /proc/self/statm).
inline long rss_bytes() {
  char buf[256];
  long size = 0, resident = 0;
  if (!read_proc("/proc/self/statm", buf, sizeof buf) || sscanf(buf, "%ld %ld", &size, &resident) != 2)
    return -1;
  return resident * sysconf(_SC_PAGESIZE);
}

// A "Name:  N kB" line of /proc/self/status (name with its colon), in kB; -1 if absent.
inline long status_kb(const char *name) {
  char buf[4096];
  if (!read_proc("/proc/self/status", buf, sizeof buf)) return -1;
  const char *p = strstr(buf, name);
  return p ? strtol(p + strlen(name), nullptr, 10) : -1;
}

// Anonymous resident memory (RssAnon of /proc/self/status) in bytes; -1 if absent.
inline long anon_bytes() {
  long kb = status_kb("RssAnon:");
  return kb < 0 ? -1 : kb * 1024;
}

inline double now_s() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

// Serialised TSC reads around a measured call.  tsc_begin first drains the store buffer (mfence):
// without it, stores the caller made just before (the latency bench writes each new block, often a
// cache miss) were still pending when the next call was timed, and their cost showed up in that
// call (on this VM: zns's small-block free p99.9 130-160 ns without the fence, 30-50 ns with it or
// with the bench's block write left out; lfence orders instructions, not the store buffer).  The
// call's own stores are not waited for at the end: the caller does not wait for them either.
inline uint64_t tsc_begin() {
  _mm_mfence();
  _mm_lfence();
  uint64_t t = __rdtsc();
  _mm_lfence();
  return t;
}
inline uint64_t tsc_end() {
  unsigned aux;
  uint64_t t = __rdtscp(&aux);
  _mm_lfence();
  return t;
}

// Waiting for another thread: spin briefly, then give the CPU away.  On a loaded 2-core machine the
// thread we wait for may share our core; pure spinning would then wait for a whole time slice.
struct Backoff {
  unsigned spins = 0;
  void pause() {
    if (++spins < 128) _mm_pause();
    else sched_yield();
  }
  void reset() { spins = 0; }
};

// Keep a pointer alive as far as the compiler knows (it may not elide a malloc/free pair).
inline void escape(void *p) { asm volatile("" : : "g"(p) : "memory"); }

}  // namespace bench
