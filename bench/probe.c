/* What state the machine is in, for bench/run_bench.py: printed at the start and after each stage
 * next to the load average, so that a reader of RESULTS.md can tell the VM's modes apart.
 *
 *   probe      prints one line: "clock_ghz=G rtt_ns=R"
 *
 * clock_ghz  a chain of 200M dependent register-to-register adds (one per cycle on any x86-64 core)
 *            over its CLOCK_MONOTONIC time: the clock this thread actually ran at, less whatever share
 *            of the core it lost (a VM's vCPU descheduled, a sibling hyperthread busy).  The
 *            single-thread rows move with it.  Not `add $1`: an Intel Xeon of family 6 model 207
 *            (2026-12-05) ran a chain of those at 2.3 per cycle and the probe read 5.5-12.6 "GHz"
 *            (a chain of imul, 3 cycles each, agreed with the register adds: 2.5 GHz).
 * rtt_ns     two threads pass one cache line back and forth 100k times: the round trip of a line
 *            between the two cores (the median of 5 runs).  On this VM it has been seen at ~230 ns and
 *            at 410-560 ns; the rows where one thread frees what another allocated (prodcons,
 *            handoff) move with it: prodcons by 4x, for every allocator alike.
 *
 * No allocator is involved: the harness runs it without LD_PRELOAD. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static double clock_ghz(void) {
  const uint64_t n = 200000000;
  uint64_t x = 0, one = 1;
  double t0 = now_ns();
  for (uint64_t i = 0; i < n; i += 8)   /* 8 dependent adds per iteration, the loop's own work in parallel */
    __asm__ volatile("add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\t"
                     "add %1, %0\n\tadd %1, %0\n\tadd %1, %0\n\tadd %1, %0" : "+r"(x) : "r"(one));
  double t = now_ns() - t0;
  return x == n ? n / t : 0;
}

enum { kTrips = 100000 };
static _Alignas(64) _Atomic uint64_t g_line;

static void *responder(void *arg) {
  (void)arg;
  for (uint64_t i = 0; i < kTrips; ++i) {
    while (atomic_load_explicit(&g_line, memory_order_acquire) != 2 * i + 1) {}
    atomic_store_explicit(&g_line, 2 * i + 2, memory_order_release);
  }
  return NULL;
}

static double round_trip_ns(void) {
  atomic_store(&g_line, 0);
  pthread_t th;
  if (pthread_create(&th, NULL, responder, NULL) != 0) return 0;
  double t0 = now_ns();
  for (uint64_t i = 0; i < kTrips; ++i) {
    atomic_store_explicit(&g_line, 2 * i + 1, memory_order_release);
    while (atomic_load_explicit(&g_line, memory_order_acquire) != 2 * i + 2) {}
  }
  double t = now_ns() - t0;
  pthread_join(th, NULL);
  return t / kTrips;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(void) {
  double rtt[5];
  for (int i = 0; i < 5; ++i) rtt[i] = round_trip_ns();
  qsort(rtt, 5, sizeof rtt[0], cmp);
  printf("clock_ghz=%.2f rtt_ns=%.0f\n", clock_ghz(), rtt[2]);
  return 0;
}
