/* The NUMA-aware depot through the real node lookup (getcpu), on two simulated nodes
 * (ZNS_NUMA_NODES=2: CPU i is on node i mod 2), with threads pinned to an even and an odd CPU.
 * The program re-executes itself once per phase:
 *   policy   (after a thread of node 0 has made room under the heap's peak) a thread of node 1
 *            empties 4 slabs of 1 KiB blocks into the depot and exits; a thread of node 0 then
 *            gets none of their pages (it takes its own node's or new groups), the next thread of
 *            node 1 gets all of them back; the statistics count the takes by node, none across;
 *   control  the same with ZNS_NUMA=0: the node-0 thread gets them (so "policy" can fail);
 *   full     a 1 GiB region (ZNS_REGION_GB=1) filled by a thread of node 1 with page-sized blocks,
 *            all freed: a thread of node 0 then takes node 1's empty slabs rather than falling
 *            through to the next allocator, counted as cross-node takes.
 * Skipped under plain glibc, and with fewer than two CPUs (one even, one odd) to run on.
 * (The pages are all on the machine's one node: what is tested is which slabs a thread gets.) */
#include "tests/api/zns_test.h"

#include <pthread.h>
#include <sched.h>

enum { MAXB = 300000 };
static void *blk[MAXB];
static int g_cpu[2] = {-1, -1}; /* an even and an odd CPU this process may run on */

struct job {
  int node;      /* pin to g_cpu[node] */
  size_t size;   /* block size */
  int count;     /* blocks to allocate (0: until the slab region is full) */
  void **out;    /* the blocks (freed after the run when free_after) */
  int free_after;
  int got, owned;
};

static void *job_run(void *arg) {
  struct job *j = arg;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(g_cpu[j->node], &set);
  REQUIRE(pthread_setaffinity_np(pthread_self(), sizeof set, &set) == 0, "pinning to CPU %d", g_cpu[j->node]);
  REQUIRE(sched_getcpu() == g_cpu[j->node], "running on CPU %d, pinned to %d", sched_getcpu(), g_cpu[j->node]);
  int foreign = 0;
  for (int i = 0; i < MAXB && (j->count ? i < j->count : foreign < 100); i++) {
    void *p = malloc(j->size);
    REQUIRE(p, "malloc(%zu) #%d", j->size, i);
    j->out[j->got++] = p;
    if (zns_owns(p)) j->owned++;
    else foreign++;
  }
  if (j->free_after)
    for (int i = 0; i < j->got; i++) free(j->out[i]);
  return NULL;
}

static void run(struct job *j) {
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, job_run, j) == 0);
  REQUIRE(pthread_join(t, NULL) == 0);
}

/* A number from this process's JSON statistics: the value after "key": (within "numa"), or -1. */
static long numa_stat(const char *key, int index) {
  char path[] = "/tmp/zns_numa_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  unlink(path);
  REQUIRE(zns_stats_print(fd, 1) == 0);
  static char buf[1 << 16];
  lseek(fd, 0, SEEK_SET);
  size_t n = zt_read_all(fd, buf, sizeof buf - 1);
  close(fd);
  buf[n] = 0;
  const char *numa = strstr(buf, "\"numa\":{");
  REQUIRE(numa, "no \"numa\" object in the JSON statistics");
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *v = strstr(numa, k);
  if (!v) return -1;
  v += strlen(k);
  if (*v == '[') {
    v++;
    for (int i = 0; i < index; i++) {
      v = strchr(v, ',');
      if (!v) return -1;
      v++;
    }
  }
  return strtol(v, NULL, 10);
}

/* How many of b's blocks share a page with one of a's. */
static int on_pages_of(void **a, int na, void **b, int nb) {
  int n = 0;
  for (int i = 0; i < nb; i++)
    for (int k = 0; k < na; k++)
      if ((zt_addr(a[k]) >> 12) == (zt_addr(b[i]) >> 12)) {
        n++;
        break;
      }
  return n;
}

static void phase_policy(int node_aware) {
  enum { A = 512, B = 1024 }; /* 4 slabs of 128 blocks of 1 KiB; 8 */
  static void *a[A], *b[B], *c[B];
  static void *boost[4 * B];
  /* Room under the heap's peak (32 slabs, empty on node 0's list): the depot keeps node 1's empty
   * slabs only while they do not take the heap above its peak */
  struct job j0 = {0, 1000, 4 * B, boost, 1, 0, 0};
  run(&j0);
  long cross0 = node_aware ? numa_stat("cross_node_takes", 0) : 0;
  struct job ja = {1, 1000, A, a, 1, 0, 0};
  run(&ja);
  REQUIRE(ja.owned == A, "node 1's thread: %d of %d blocks from the slab", ja.owned, A);
  long t0 = node_aware ? numa_stat("takes", 0) : 0, t1 = node_aware ? numa_stat("takes", 1) : 0;
  struct job jb = {0, 1000, B, b, 0, 0, 0};
  run(&jb);
  int reused = on_pages_of(a, A, b, B);
  zt_log("numa(%s): node 0's thread got %d of %d blocks on node 1's freed pages", node_aware ? "policy" : "control",
         reused, B);
  if (!node_aware) {
    CHECK(reused >= A, "not node-aware, the next thread takes the empty slabs: %d of its blocks on them", reused);
    return;
  }
  CHECK(reused == 0, "node 0's thread got %d blocks on node 1's empty slabs", reused);
  CHECK(numa_stat("takes", 0) > t0, "node 0's takes not counted");
  CHECK(numa_stat("takes", 1) == t1, "node 1's takes counted for node 0");
  long t1b = numa_stat("takes", 1);
  struct job jc = {1, 1000, B, c, 0, 0, 0};
  run(&jc);
  int back = on_pages_of(a, A, c, B);
  zt_log("numa(policy): node 1's next thread got %d blocks on its freed pages", back);
  CHECK(back >= A, "node 1's next thread got only %d blocks on node 1's empty slabs (of %d)", back, A);
  CHECK(numa_stat("takes", 1) > t1b, "node 1's takes not counted");
  CHECK(numa_stat("cross_node_takes", 0) == cross0, "a take across nodes with slabs of the node's own");
  CHECK(numa_stat("nodes", 0) == 2 && numa_stat("machine_nodes", 0) == 0, "nodes %ld, machine_nodes %ld",
        numa_stat("nodes", 0), numa_stat("machine_nodes", 0));
  for (int i = 0; i < B; i++) free(b[i]), free(c[i]);
}

static void phase_full(void) {
  struct job ja = {1, 4096, 0, blk, 1, 0, 0};
  run(&ja);
  zt_log("numa(full): node 1's thread had %d page-sized blocks of the slab before the region was full", ja.owned);
  REQUIRE(ja.owned > 200000, "the 1 GiB region held only %d page-sized blocks", ja.owned);
  long cross0 = numa_stat("cross_node_takes", 0);
  static void *b[MAXB];
  struct job jb = {0, 4096, 0, b, 1, 0, 0};
  run(&jb);
  long cross = numa_stat("cross_node_takes", 0) - cross0;
  zt_log("numa(full): node 0's thread then had %d from the slab, %ld slabs taken across nodes", jb.owned, cross);
  CHECK(jb.owned >= ja.owned - 64, "node 0's thread fell through to the next allocator after %d blocks (node 1 "
        "left %d in empty slabs)", jb.owned, ja.owned);
  CHECK(cross >= (ja.owned - 64) / 32, "only %ld slabs taken from node 1's empty ones", cross);   /* 32 blocks a slab */
}

int main(int argc, char **argv) {
  (void)argc;
  if (!zt_zns_mode()) {
    zt_log("numa: skipped under plain glibc");
    return 0;
  }
  cpu_set_t set;
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  for (int c = 0; c < CPU_SETSIZE; c++)
    if (CPU_ISSET(c, &set) && g_cpu[c % 2] < 0) g_cpu[c % 2] = c;
  if (g_cpu[0] < 0 || g_cpu[1] < 0) {
    zt_log("numa: skipped: this process runs on %d CPU(s), not on an even and an odd one", CPU_COUNT(&set));
    return 0;
  }
  const char *phase = getenv("ZT_NUMA_PHASE");
  if (phase) { /* this thread on node 0 too: its own refills never take node 1's slabs */
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(g_cpu[0], &one);
    REQUIRE(sched_setaffinity(0, sizeof one, &one) == 0);
  }
  if (!phase) {
    /* each phase in a process of its own, its options set before the heap's init */
    const char *phases[] = {"policy", "control", "full"};
    for (int i = 0; i < 3; i++) {
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        setenv("ZT_NUMA_PHASE", phases[i], 1);
        setenv("ZNS_NUMA_NODES", "2", 1);
        setenv("ZNS_NUMA", i == 1 ? "0" : "1", 1);
        setenv("ZNS_DECAY_MS", "600000", 1);     /* nothing given back for its age */
        setenv("ZNS_DIRTY_MAX_KB", "2097152", 1); /* nor for the cap */
        setenv("ZNS_POPULATE", "0", 1);          /* (a full region's pages stay untouched) */
        if (i == 2) setenv("ZNS_REGION_GB", "1", 1);
        execv("/proc/self/exe", argv);
        zt_log("numa: re-exec failed: %s", strerror(errno));
        _exit(1);
      }
      int st = 0;
      REQUIRE(waitpid(pid, &st, 0) == pid);
      CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "phase %s: status %#x", phases[i], st);
    }
    return zt_finish("numa");
  }
  zt_log("numa(%s): mode %s, CPUs %d and %d", phase, zt_mode_name(), g_cpu[0], g_cpu[1]);
  if (strcmp(phase, "full") == 0) phase_full();
  else phase_policy(strcmp(phase, "policy") == 0);
  return zt_finish(phase);
}
