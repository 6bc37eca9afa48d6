// Workload 6: latency of single malloc and free calls in a steady churn, timed with the TSC.
//
//   latency [--ops N] [--ring R] [--lo B] [--hi B] [--seed S]
//
// A ring of R live blocks (uniform random sizes lo..hi) is filled and churned untimed (4R ops) to a
// steady state; then N ops each free a random slot and malloc a new block for it, and each call is
// timed alone between serialised TSC reads (mfence; lfence; rdtsc / rdtscp; lfence: see bench_common.h).  The median cost of an
// empty timed region is subtracted from every sample.  The TSC is calibrated against
// CLOCK_MONOTONIC.  Prints one JSON object on stdout: percentiles in ns for malloc and free.
// Samples live in mmap'ed arrays, so the program's own bookkeeping never calls malloc.
#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "bench/bench_common.h"

namespace {

double calibrate_ghz() {   // TSC ticks per ns
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double t0 = bench::now_s();
    uint64_t c0 = bench::tsc_begin();
    timespec ts{0, 50 * 1000 * 1000};
    nanosleep(&ts, nullptr);
    double t1 = bench::now_s();
    uint64_t c1 = bench::tsc_end();
    double ghz = double(c1 - c0) / ((t1 - t0) * 1e9);
    if (rep == 0 || ghz < best) best = ghz;   // the smallest: least disturbed by the sleep's exit
  }
  return best;
}

struct Summary {
  double p50, p90, p99, p999, p9999, max, mean;
  uint64_t over_1us, over_10us;
};

Summary summarise(uint32_t *cyc, size_t n, uint32_t overhead, double ghz) {
  double sum = 0;
  uint64_t o1 = 0, o10 = 0;
  for (size_t i = 0; i < n; ++i) {
    cyc[i] = cyc[i] > overhead ? cyc[i] - overhead : 0;
    sum += cyc[i];
    double ns = cyc[i] / ghz;
    o1 += ns > 1000;
    o10 += ns > 10000;
  }
  std::sort(cyc, cyc + n);
  auto q = [&](double f) {
    size_t i = size_t(f * double(n - 1) + 0.5);
    return cyc[std::min(i, n - 1)] / ghz;
  };
  return Summary{q(0.5), q(0.9), q(0.99), q(0.999), q(0.9999), cyc[n - 1] / ghz, sum / double(n) / ghz, o1, o10};
}

void print_summary(const char *name, const Summary &s, size_t n, bool comma) {
  printf("  \"%s\": {\"p50\": %.2f, \"p90\": %.2f, \"p99\": %.2f, \"p999\": %.2f, \"p9999\": %.2f, "
         "\"max\": %.1f, \"mean\": %.2f, \"over_1us_per_million\": %.1f, \"over_10us_per_million\": %.1f}%s\n",
         name, s.p50, s.p90, s.p99, s.p999, s.p9999, s.max, s.mean, s.over_1us * 1e6 / double(n),
         s.over_10us * 1e6 / double(n), comma ? "," : "");
}

}  // namespace

int main(int argc, char **argv) {
  size_t ops = 2000000;
  uint32_t ring = 8192, lo = 16, hi = 4096;
  uint64_t seed = 42;
  for (int i = 1; i < argc; ++i) {
    auto arg = [&](const char *name) { return strcmp(argv[i], name) == 0 && i + 1 < argc; };
    if (arg("--ops")) ops = strtoull(argv[++i], nullptr, 10);
    else if (arg("--ring")) ring = uint32_t(strtoul(argv[++i], nullptr, 10));
    else if (arg("--lo")) lo = uint32_t(strtoul(argv[++i], nullptr, 10));
    else if (arg("--hi")) hi = uint32_t(strtoul(argv[++i], nullptr, 10));
    else if (arg("--seed")) seed = strtoull(argv[++i], nullptr, 10);
    else {
      fprintf(stderr, "usage: %s [--ops N] [--ring R] [--lo B] [--hi B] [--seed S]\n", argv[0]);
      return 2;
    }
  }
  if (ops < 1000 || ring == 0 || lo == 0 || hi < lo) {
    fprintf(stderr, "latency: bad arguments\n");
    return 2;
  }

  double ghz = calibrate_ghz();

  // Timer overhead: the median of empty timed regions.
  constexpr size_t kCal = 100000;
  uint32_t *cal = bench::raw_array<uint32_t>(kCal);
  for (size_t i = 0; i < kCal; ++i) {
    uint64_t a = bench::tsc_begin();
    uint64_t b = bench::tsc_end();
    cal[i] = uint32_t(b - a);
  }
  std::sort(cal, cal + kCal);
  uint32_t overhead = cal[kCal / 2];
  uint32_t step = 0;   // the TSC's granularity: the smallest step between distinct readings
  for (size_t i = 1; i < kCal; ++i)
    if (cal[i] != cal[i - 1] && (step == 0 || cal[i] - cal[i - 1] < step)) step = cal[i] - cal[i - 1];

  bench::ChurnTable table(seed, ring, lo, hi);
  void **slots = bench::raw_array<void *>(ring);
  bench::Rng r(seed ^ 0x1234);
  for (uint32_t i = 0; i < ring; ++i) {
    slots[i] = malloc(r.range(lo, hi));
    static_cast<char *>(slots[i])[0] = 1;
  }
  const size_t mask = bench::ChurnTable::kOps - 1;
  size_t k = 0;
  for (size_t i = 0; i < 4 * size_t(ring); ++i, ++k) {   // untimed warm-up
    size_t j = k & mask;
    free(slots[table.slot[j]]);
    void *p = malloc(table.size[j]);
    static_cast<char *>(p)[0] = 1;
    slots[table.slot[j]] = p;
  }

  uint32_t *mc = bench::raw_array<uint32_t>(ops), *fc = bench::raw_array<uint32_t>(ops);
  double t0 = bench::now_s();
  for (size_t i = 0; i < ops; ++i, ++k) {
    size_t j = k & mask;
    uint32_t s = table.slot[j];
    void *old = slots[s];
    uint64_t a = bench::tsc_begin();
    free(old);
    uint64_t b = bench::tsc_end();
    uint64_t c = bench::tsc_begin();
    void *p = malloc(table.size[j]);
    uint64_t d = bench::tsc_end();
    static_cast<char *>(p)[0] = 1;
    slots[s] = p;
    fc[i] = uint32_t(std::min<uint64_t>(b - a, 0xffffffffu));
    mc[i] = uint32_t(std::min<uint64_t>(d - c, 0xffffffffu));
  }
  double elapsed = bench::now_s() - t0;
  for (uint32_t i = 0; i < ring; ++i) free(slots[i]);

  Summary ms = summarise(mc, ops, overhead, ghz), fs = summarise(fc, ops, overhead, ghz);
  printf("{\n  \"malloc_from\": \"%s\", \"ops\": %zu, \"ring\": %u, \"lo\": %u, \"hi\": %u,\n",
         bench::malloc_origin(), ops, ring, lo, hi);
  printf("  \"tsc_ghz\": %.4f, \"timer_overhead_ns\": %.2f, \"tsc_step_ns\": %.2f, \"elapsed_s\": %.3f,\n", ghz,
         overhead / ghz, step / ghz, elapsed);
  print_summary("malloc", ms, ops, true);
  print_summary("free", fs, ops, false);
  printf("}\n");
  return 0;
}
