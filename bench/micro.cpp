// Allocator microbenchmarks (issue 4, workloads 1-5), Google Benchmark.  Built once; the harness
// (bench/run_bench.py) runs this same binary under each allocator with LD_PRELOAD.
//
//   pair/SIZE              1. malloc(SIZE) + free, one thread, SIZE in 8..4096
//   batch/N                2. allocate N blocks of 64 B, then free the N (in allocation order)
//   churn/threads:1        3. a ring of 8192 live blocks, uniform random sizes 16..4096; each op
//                             frees a random slot and puts a fresh block there
//   churn/threads:2        5. the same in two threads at once (each its own ring); against :1
//   prodcons               4. one thread allocates (uniform 16..1024 B) and passes the pointer on a
//                             lock-free single-producer/single-consumer ring; another frees it
//   prodcons_queue_only       the same ring with no malloc/free (what the queue alone costs)
//   handoff/SIZE              (not an issue-4 workload) a thread allocates 50000 blocks of SIZE and
//                             exits; this thread frees them in random order: the time of the frees
//
// Every benchmark sets items_processed (one item = one malloc+free, summed over threads), so
// 1e9 / items_per_second is the cost of one allocation+free in ns, comparable across workloads.
// Single-thread benchmarks use the thread's CPU time (Google Benchmark's default: less disturbed by
// other jobs on a shared machine); threaded ones wall-clock time (UseRealTime) and also report
// proc_cpu_ns_per_item, the CPU time of every thread per item.
#include <benchmark/benchmark.h>

#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>
#include <vector>

#include "bench/bench_common.h"

using bench::escape;

namespace {

// CPU time of the whole process (every thread), seconds.
double process_cpu() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

// For threaded benchmarks: CPU ns of all threads per item, next to the wall-clock rate.  Less
// sensitive to other jobs on the machine than wall time (a descheduled thread costs no CPU), but
// it counts the waiting threads' spinning.
void set_cpu_counter(benchmark::State &state, double cpu0, int64_t items) {
  if (items > 0) state.counters["proc_cpu_ns_per_item"] = (process_cpu() - cpu0) * 1e9 / double(items);
}

// ---- 1. pairs ------------------------------------------------------------------------------------
void BM_pair(benchmark::State &state) {
  const size_t n = size_t(state.range(0));
  for (auto _ : state) {
    void *p = malloc(n);
    static_cast<volatile char *>(p)[0] = 1;
    escape(p);
    free(p);
  }
  state.SetItemsProcessed(int64_t(state.iterations()));
}
BENCHMARK(BM_pair)->Name("pair")->Arg(8)->Arg(16)->Arg(32)->Arg(48)->Arg(64)->Arg(96)->Arg(128)
    ->Arg(256)->Arg(512)->Arg(1024)->Arg(2048)->Arg(4096);

// ---- 2. batches ----------------------------------------------------------------------------------
void BM_batch(benchmark::State &state) {
  const size_t n = size_t(state.range(0));
  void **v = bench::raw_array<void *>(n);
  for (auto _ : state) {
    for (size_t i = 0; i < n; ++i) {
      void *p = malloc(64);
      static_cast<volatile char *>(p)[0] = 1;
      v[i] = p;
    }
    escape(v);
    for (size_t i = 0; i < n; ++i) free(v[i]);
  }
  state.SetItemsProcessed(int64_t(state.iterations() * n));
  bench::raw_free(v, n);
}
BENCHMARK(BM_batch)->Name("batch")->Arg(100)->Arg(1000)->Arg(100000);

// ---- 3 and 5. churn --------------------------------------------------------------------------------
constexpr uint32_t kRing = 8192;
constexpr size_t kChurnChunk = 16384;   // ops per thread per benchmark iteration

struct Churn {
  bench::ChurnTable table;
  void **ring;
  size_t pos = 0;
  explicit Churn(uint64_t seed) : table(seed, kRing, 16, 4096) {
    ring = bench::raw_array<void *>(kRing);
    bench::Rng r(seed ^ 0x5555);
    for (uint32_t i = 0; i < kRing; ++i) {
      ring[i] = malloc(r.range(16, 4096));
      static_cast<char *>(ring[i])[0] = 1;
    }
    run(4 * kRing);   // reach a steady state before anything is timed
  }
  ~Churn() {
    for (uint32_t i = 0; i < kRing; ++i) free(ring[i]);
    bench::raw_free(ring, kRing);
  }
  void run(size_t ops) {
    const uint32_t *slot = table.slot, *size = table.size;
    size_t k = pos;
    for (size_t i = 0; i < ops; ++i, ++k) {
      size_t j = k & (bench::ChurnTable::kOps - 1);
      uint32_t s = slot[j];
      free(ring[s]);
      void *p = malloc(size[j]);
      static_cast<char *>(p)[0] = char(j);
      ring[s] = p;
    }
    pos = k;
  }
};

// A helper thread that runs `chunk` ops of its own churn each time the main thread says go.
struct ChurnWorker {
  std::atomic<uint64_t> go{0}, done{0};
  std::atomic<bool> ready{false}, quit{false};
  std::thread th;
  explicit ChurnWorker(uint64_t seed) {
    th = std::thread([this, seed] {
      Churn c(seed);
      ready.store(true, std::memory_order_release);
      uint64_t seen = 0;
      for (;;) {
        uint64_t g;
        bench::Backoff b;
        while ((g = go.load(std::memory_order_acquire)) == seen) {
          if (quit.load(std::memory_order_relaxed)) return;
          b.pause();
        }
        seen = g;
        c.run(kChurnChunk);
        done.store(seen, std::memory_order_release);
      }
    });
    while (!ready.load(std::memory_order_acquire)) std::this_thread::yield();
  }
  ~ChurnWorker() {
    quit.store(true);
    th.join();
  }
};

void BM_churn(benchmark::State &state) {
  const int threads = int(state.range(0));
  Churn mine(1);
  std::vector<ChurnWorker *> workers;
  for (int t = 1; t < threads; ++t) workers.push_back(new ChurnWorker(1 + uint64_t(t)));
  uint64_t gen = 0;
  double cpu0 = process_cpu();
  for (auto _ : state) {
    ++gen;
    for (auto *w : workers) w->go.store(gen, std::memory_order_release);
    mine.run(kChurnChunk);
    for (auto *w : workers) {
      bench::Backoff b;
      while (w->done.load(std::memory_order_acquire) != gen) b.pause();
    }
  }
  set_cpu_counter(state, cpu0, int64_t(state.iterations() * kChurnChunk * threads));
  state.SetItemsProcessed(int64_t(state.iterations() * kChurnChunk * threads));
  for (auto *w : workers) delete w;
}
// One thread: CPU time, like the other single-thread rows; two threads: wall time.
BENCHMARK(BM_churn)->Name("churn")->ArgName("threads")->Arg(1);
BENCHMARK(BM_churn)->Name("churn")->ArgName("threads")->Arg(2)->UseRealTime();

// ---- 4. producer / consumer --------------------------------------------------------------------
// Lamport ring with cached indices: each side touches the other's index only when its own view
// says full / empty.
struct Spsc {
  static constexpr size_t kCap = 1024;
  alignas(64) std::atomic<size_t> tail{0};   // written by the producer
  size_t head_cache = 0;                     // producer's view of head
  alignas(64) std::atomic<size_t> head{0};   // written by the consumer
  size_t tail_cache = 0;                     // consumer's view of tail
  alignas(64) void *slots[kCap];

  void push(void *p) {
    size_t t = tail.load(std::memory_order_relaxed);
    bench::Backoff b;
    while (t - head_cache >= kCap) {
      head_cache = head.load(std::memory_order_acquire);
      if (t - head_cache >= kCap) b.pause();
    }
    slots[t & (kCap - 1)] = p;
    tail.store(t + 1, std::memory_order_release);
  }
  bool pop(void **out) {
    size_t h = head.load(std::memory_order_relaxed);
    if (h == tail_cache) {
      tail_cache = tail.load(std::memory_order_acquire);
      if (h == tail_cache) return false;
    }
    *out = slots[h & (kCap - 1)];
    head.store(h + 1, std::memory_order_release);
    return true;
  }
};

constexpr size_t kPcChunk = 16384;

template <bool kAlloc>
void prodcons(benchmark::State &state) {
  Spsc *q = new Spsc;
  std::atomic<bool> quit{false};
  bench::ChurnTable table(7, 1, 16, 1024);
  std::thread consumer([&] {
    void *p;
    uint64_t sum = 0;
    bench::Backoff b;
    for (;;) {
      if (q->pop(&p)) {
        if (kAlloc) {
          sum += static_cast<unsigned char *>(p)[0];
          free(p);
        }
        b.reset();
        continue;
      }
      if (quit.load(std::memory_order_relaxed)) break;
      b.pause();
    }
    escape(&sum);
  });
  size_t produced = 0;
  static char dummy;
  double cpu0 = process_cpu();
  for (auto _ : state) {
    for (size_t i = 0; i < kPcChunk; ++i) {
      void *p = &dummy;
      if (kAlloc) {
        p = malloc(table.size[(produced + i) & (bench::ChurnTable::kOps - 1)]);
        static_cast<char *>(p)[0] = char(i);
      }
      q->push(p);
    }
    produced += kPcChunk;
    bench::Backoff b;
    while (q->head.load(std::memory_order_acquire) != produced) b.pause();   // all freed
  }
  set_cpu_counter(state, cpu0, int64_t(state.iterations() * kPcChunk));
  quit.store(true);
  consumer.join();
  delete q;
  state.SetItemsProcessed(int64_t(state.iterations() * kPcChunk));
}
void BM_prodcons(benchmark::State &state) { prodcons<true>(state); }
void BM_prodcons_queue(benchmark::State &state) { prodcons<false>(state); }
BENCHMARK(BM_prodcons)->Name("prodcons")->UseRealTime();
BENCHMARK(BM_prodcons_queue)->Name("prodcons_queue_only")->UseRealTime();

// ---- handoff: frees of an exited thread's blocks ---------------------------------------------------
// A worker that allocates its results and exits, their consumer freeing them later in any order.
// Only the frees are timed (manual time): the allocating thread is created and joined outside.
constexpr size_t kHandoffBlocks = 50000;

void BM_handoff(benchmark::State &state) {
  const size_t n = size_t(state.range(0));
  std::vector<void *> v(kHandoffBlocks);
  std::vector<uint32_t> order(kHandoffBlocks);
  for (size_t i = 0; i < kHandoffBlocks; ++i) order[i] = uint32_t(i);
  std::shuffle(order.begin(), order.end(), std::mt19937(42));
  for (auto _ : state) {
    std::thread([&] {
      for (size_t i = 0; i < kHandoffBlocks; ++i) {
        v[i] = malloc(n);
        static_cast<char *>(v[i])[0] = 1;
      }
    }).join();
    auto t0 = std::chrono::steady_clock::now();
    for (uint32_t i : order) free(v[i]);
    auto t1 = std::chrono::steady_clock::now();
    state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
  }
  state.SetItemsProcessed(int64_t(state.iterations() * kHandoffBlocks));
}
BENCHMARK(BM_handoff)->Name("handoff")->Arg(16)->Arg(1024)->UseManualTime();

}  // namespace

int main(int argc, char **argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("malloc_from", bench::malloc_origin());
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
