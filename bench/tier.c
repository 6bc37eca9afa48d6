/* The tier stage of the benchmark (issue 5): idle RSS of a heap that went cold, and the latency of
 * the first touches that bring it back.  Run by bench/run_bench.py under ZNS-Slab with
 * ZNS_TIER=off, uffd and madvise; plain malloc/free, no link to the shim.
 *
 *   tier [--payload-mb M] [--threads T] [--min B] [--max B] [--idle-s S]
 *
 * 1. T threads each malloc blocks of uniform random size min..max B until they hold M/T MiB of
 *    payload (the requested bytes), write every byte, and exit: their slabs become shared (no
 *    thread allocates from them), which is what the tier may page out.
 * 2. The main thread sleeps S seconds (the heap is idle: no malloc, free or store), sampling RSS.
 * 3. It then reads one byte of every block in random order.  Before each read it asks mincore(2)
 *    whether the block's page is resident (outside the timed region); the read alone is timed with
 *    CLOCK_MONOTONIC.  A read of a non-resident page is a fault-in ("first touch").
 * 4. Every byte is checked against what was written (a lost or stale page is an error, exit 3).
 *
 * One JSON object on stdout.  Block pointers, the permutation and the samples live in mmap'ed
 * memory (never in the heap under test), so they are the same under every setting; the block
 * table (12 B per block, ~1.4 MiB for 64 MiB of 64..1024 B blocks) counts in every RSS figure.  When the shim
 * is preloaded, its zns_tier_stats() (declared weak) adds the library's own counters.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

struct zns_tier_stats {   /* as in shim/zns_slab.h (not included: this program must not need the shim) */
  int mode;
  unsigned long long slabs_out, slabs_in, bytes_out, bytes_in;
  unsigned long long bytes_on_tier;
  unsigned long long evict_errors, thrash, write_hits, zero_fills;
  unsigned long long fault_p50_ns, fault_p99_ns, fault_max_ns, faults_timed;
};
void zns_tier_stats(struct zns_tier_stats *out) __attribute__((weak));

static uint64_t mix64(uint64_t x) {
  x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; x ^= x >> 33;
  return x;
}
static unsigned char pattern(size_t block, size_t off) { return (unsigned char)mix64(block * 4099 + off / 8) ^ (unsigned char)off; }

/* Zeroed memory outside the heap under test; only the part written becomes resident. */
static void *raw(size_t bytes) {
  void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) { perror("mmap"); exit(2); }
  return p;
}

static long rss_bytes(void) {
  char buf[256];
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return -1;
  buf[n] = 0;
  long size = 0, resident = 0;
  if (sscanf(buf, "%ld %ld", &size, &resident) != 2) return -1;
  return resident * sysconf(_SC_PAGESIZE);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static size_t g_min = 64, g_max = 1024, g_per_thread, g_cap;
static unsigned char **g_ptr;     /* block i: pointer and size, in mmap'ed tables */
static uint32_t *g_size;
static size_t g_count;            /* blocks allocated so far (atomic) */

struct worker { int id; size_t payload; };

static void *fill_heap(void *arg) {
  struct worker *w = arg;
  uint64_t r = 0x1234567ull * (uint64_t)(w->id + 1);
  size_t have = 0;
  while (have < g_per_thread) {
    size_t n = g_min + mix64(++r) % (g_max - g_min + 1);
    size_t i = __atomic_fetch_add(&g_count, 1, __ATOMIC_RELAXED);
    if (i >= g_cap) { fprintf(stderr, "tier: block table full\n"); exit(2); }
    unsigned char *p = malloc(n);
    if (!p) { fprintf(stderr, "tier: malloc(%zu) failed\n", n); exit(2); }
    for (size_t k = 0; k < n; ++k) p[k] = pattern(i, k);
    g_ptr[i] = p;
    g_size[i] = (uint32_t)n;
    have += n;
  }
  w->payload = have;
  return NULL;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}
static double pct(const uint64_t *v, size_t n, double q) {   /* sorted v, ns -> us */
  if (!n) return -1;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return v[i] / 1000.0;
}

int main(int argc, char **argv) {
  double payload_mb = 64, idle_s = 4;
  int threads = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--payload-mb")) payload_mb = atof(argv[i + 1]);
    else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--min")) g_min = (size_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--max")) g_max = (size_t)atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--idle-s")) idle_s = atof(argv[i + 1]);
    else { fprintf(stderr, "usage: tier [--payload-mb M] [--threads T] [--min B] [--max B] [--idle-s S]\n"); return 2; }
  }
  if (threads < 1 || g_min < 1 || g_max < g_min || payload_mb <= 0) { fprintf(stderr, "tier: bad arguments\n"); return 2; }
  size_t payload_target = (size_t)(payload_mb * 1048576.0);
  g_per_thread = payload_target / (size_t)threads;
  g_cap = payload_target / g_min + (size_t)threads + 16;
  g_ptr = raw(g_cap * sizeof *g_ptr);
  g_size = raw(g_cap * sizeof *g_size);
  free(malloc(1));                          /* the allocator is initialised before the baseline */
  Dl_info info;
  void *(*volatile mf)(size_t) = &malloc;
  const char *origin = dladdr((void *)mf, &info) && info.dli_fname ? info.dli_fname : "?";
  char obuf[512];
  snprintf(obuf, sizeof obuf, "%s", origin);
  static char iobuf[1 << 14];
  setvbuf(stdout, iobuf, _IOFBF, sizeof iobuf);   /* stdio takes no heap block in the middle */
  long rss_before = rss_bytes();

  /* 1. the heap */
  pthread_t th[64];
  struct worker ws[64];
  if (threads > 64) threads = 64;
  double t0 = now_s();
  for (int t = 0; t < threads; ++t) {
    ws[t].id = t;
    if (pthread_create(&th[t], NULL, fill_heap, &ws[t])) { fprintf(stderr, "tier: pthread_create\n"); return 2; }
  }
  size_t payload = 0;
  for (int t = 0; t < threads; ++t) { pthread_join(th[t], NULL); payload += ws[t].payload; }
  double fill_s = now_s() - t0;
  size_t n = g_count;
  long rss_full = rss_bytes();

  /* 2. idle: sample RSS every 250 ms */
  char samples[4096];
  size_t sl = 0;
  double t_idle = now_s();
  long rss_min = rss_full;
  sl += (size_t)snprintf(samples + sl, sizeof samples - sl, "[[0,%ld]", rss_full);
  while (now_s() - t_idle < idle_s) {
    usleep(250000);
    long r = rss_bytes();
    if (r < rss_min) rss_min = r;
    if (sl < sizeof samples - 64)
      sl += (size_t)snprintf(samples + sl, sizeof samples - sl, ",[%.2f,%ld]", now_s() - t_idle, r);
  }
  snprintf(samples + sl, sizeof samples - sl, "]");
  long rss_idle = rss_bytes();
  struct zns_tier_stats st_idle;
  memset(&st_idle, 0, sizeof st_idle);
  if (zns_tier_stats) zns_tier_stats(&st_idle);

  /* 3. first touches in random order */
  uint32_t *perm = raw(n * sizeof *perm);
  uint64_t *fault_ns = raw(n * sizeof *fault_ns), *hit_ns = raw(n * sizeof *hit_ns);
  for (size_t i = 0; i < n; ++i) perm[i] = (uint32_t)i;
  uint64_t r = 99;
  for (size_t i = n - 1; i > 0; --i) {
    size_t j = (size_t)(mix64(++r) % (i + 1));
    uint32_t x = perm[i]; perm[i] = perm[j]; perm[j] = x;
  }
  size_t nf = 0, nh = 0;
  long psz = sysconf(_SC_PAGESIZE);
  unsigned sink = 0;
  double t_touch = now_s();
  for (size_t k = 0; k < n; ++k) {
    size_t i = perm[k];
    volatile unsigned char *p = g_ptr[i];
    unsigned char vec = 1;
    uintptr_t pg = (uintptr_t)p & ~(uintptr_t)(psz - 1);
    if (mincore((void *)pg, 1, &vec) != 0) vec = 1;
    uint64_t a = now_ns();
    sink += *p;
    uint64_t b = now_ns();
    if (vec & 1) hit_ns[nh++] = b - a;
    else fault_ns[nf++] = b - a;
  }
  double touch_s = now_s() - t_touch;
  long rss_back = rss_bytes();
  struct zns_tier_stats st;
  memset(&st, 0, sizeof st);
  if (zns_tier_stats) zns_tier_stats(&st);

  /* 4. every byte */
  size_t bad = 0;
  for (size_t i = 0; i < n; ++i)
    for (size_t k = 0; k < g_size[i]; ++k)
      if (g_ptr[i][k] != pattern(i, k)) { bad++; break; }
  for (size_t i = 0; i < n; ++i) free(g_ptr[i]);

  qsort(fault_ns, nf, sizeof *fault_ns, cmp_u64);
  qsort(hit_ns, nh, sizeof *hit_ns, cmp_u64);
  printf("{\"malloc_from\":\"%s\",\"blocks\":%zu,\"payload\":%zu,\"threads\":%d,\"min\":%zu,\"max\":%zu,"
         "\"fill_s\":%.3f,\"idle_s\":%.2f,\"rss_before\":%ld,\"rss_full\":%ld,\"rss_idle\":%ld,\"rss_idle_min\":%ld,"
         "\"rss_after_touch\":%ld,\"rss_samples\":%s,"
         "\"touch_s\":%.3f,\"faults\":%zu,\"fault_p50_us\":%.2f,\"fault_p99_us\":%.2f,\"fault_max_us\":%.2f,"
         "\"fault_mean_us\":%.2f,\"hits\":%zu,\"hit_p50_us\":%.3f,\"hit_p99_us\":%.3f,\"bad_blocks\":%zu,\"sink\":%u,"
         "\"lib\":%s",
         obuf, n, payload, threads, g_min, g_max, fill_s, idle_s, rss_before, rss_full, rss_idle, rss_min,
         rss_back, samples, touch_s, nf, pct(fault_ns, nf, 0.5), pct(fault_ns, nf, 0.99),
         nf ? fault_ns[nf - 1] / 1000.0 : -1.0,
         nf ? ({ double s = 0; for (size_t i = 0; i < nf; ++i) s += fault_ns[i]; s / nf / 1000.0; }) : -1.0,
         nh, pct(hit_ns, nh, 0.5), pct(hit_ns, nh, 0.99), bad, sink & 1, zns_tier_stats ? "{" : "null");
  if (zns_tier_stats)
    printf("\"idle_slabs_out\":%llu,\"idle_bytes_on_tier\":%llu,\"mode\":%d,\"slabs_out\":%llu,\"slabs_in\":%llu,"
           "\"bytes_on_tier\":%llu,\"thrash\":%llu,\"write_hits\":%llu,\"evict_errors\":%llu,\"zero_fills\":%llu,"
           "\"fault_p50_ns\":%llu,\"fault_p99_ns\":%llu,\"fault_max_ns\":%llu,\"faults_timed\":%llu}",
           st_idle.slabs_out, st_idle.bytes_on_tier, st.mode, st.slabs_out, st.slabs_in, st.bytes_on_tier,
           st.thrash, st.write_hits, st.evict_errors, st.zero_fills, st.fault_p50_ns, st.fault_p99_ns,
           st.fault_max_ns, st.faults_timed);
  printf("}\n");
  return bad ? 3 : 0;
}
