/* A program under a seccomp filter that kills on system calls it does not allow, as OpenSSH's
 * pre-authentication child and browsers' renderers do, while madvise stays allowed: the heap's
 * depot gives a batch of empty slabs back with process_madvise(2) (one TLB flush for the batch)
 * only where the thread's /proc/thread-self/status says there is no filter; here it must fall back to one madvise per
 * range and live.  The filter kills on process_madvise and on prctl (the usual way to ask for the
 * seccomp mode, itself killed by OpenSSH's filter), and on rt_sigpending, which the statistics
 * dump below (zns_stats_print into a pipe) made for QuietWrite until 2026-12-06: OpenSSH's
 * pre-auth child died of it at exit under ZNS_STATS (a review), now only a failed write asks.
 *
 * A child allocates 1 KiB and 2 KiB blocks a slab (a 128 KiB group) at a time, alternately, so
 * that the groups of the two classes interleave; it installs the filter, frees every 1 KiB block
 * (the 2 KiB ones stay: each emptied group is a run of its own) and calls malloc_trim, which
 * purges them all in batches of many runs.  Checks: the child exits 0 (not SIGSYS), its RSS went
 * down by at least half of the freed groups, and its stats count one call per range (no batch
 * call counted that was never made).  Then with no filter at all: batches (fewer calls than
 * ranges) where the kernel has process_madvise on PIDFD_SELF, so that the look at the status does
 * not switch them off by itself.  (Not covered, a known limit: a filter installed after start that
 * kills on open, rather than refusing it as OpenSSH's does, kills the program at its first batch,
 * whose look opens the status file; README, ZNS_PROCESS_MADVISE.)  Skipped under plain glibc. */
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <pthread.h>
#include <sys/uio.h>
#include <sys/syscall.h>

#include "tests/api/zns_test.h"

#define GROUPS 120

static long rss_kib(void) {
  char buf[128] = {0};
  int fd = open("/proc/self/statm", O_RDONLY);
  if (fd < 0) return -1;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  long size = 0, res = -1;
  if (n > 0 && sscanf(buf, "%ld %ld", &size, &res) == 2) return res * (sysconf(_SC_PAGESIZE) / 1024);
  return -1;
}

enum { kKillBatch, kThreadFilter, kNoFilter };
static const char *const kVariant[] = {"killing on process_madvise, prctl and rt_sigpending",
                                       "the same filter on the freeing thread only (no TSYNC)", "no filter"};

static int install_filter(int variant) {
  if (variant == kNoFilter) return 0;
  struct sock_filter f[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_madvise, 2, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_rt_sigpending, 1, 0),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_prctl, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  struct sock_fprog prog = {(unsigned short)(sizeof f / sizeof f[0]), f};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -1;
  return (int)syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
}

/* Does this kernel take process_madvise on PIDFD_SELF (Linux 6.15+)?  (An empty vector.) */
static int kernel_batches(void) {
  struct iovec v = {NULL, 0};
  return syscall(__NR_process_madvise, -10000 /* PIDFD_SELF_THREAD */, &v, 0, MADV_DONTNEED, 0) == 0;
}

static void *small[GROUPS * 128], *big[GROUPS * 64];   /* a slab's blocks each */
static int batches;

/* The blocks, the filter, the frees, the trim and the checks: in the child's only thread, or (kThreadFilter)
 * in a second thread, whose filter its main thread does not have, as libseccomp's seccomp_load
 * installs one by default: /proc/self/status is the main thread's, and said "no filter" (a
 * review, 2026-12-06: the process died of SIGSYS at the batch). */
static void *purge(void *arg) {
  int variant = *(int *)arg;
  for (int g = 0; g < GROUPS; g++) {
    for (int i = 0; i < 128; i++) memset(small[g * 128 + i] = malloc(1024), 1, 1024);
    for (int i = 0; i < 64; i++) memset(big[g * 64 + i] = malloc(2048), 2, 2048);
  }
  if (install_filter(variant) != 0) {
    zt_log("seccomp_purge: cannot install a filter (%s): skipped", strerror(errno));
    _exit(0);
  }
  long before = rss_kib();
  for (int k = 0; k < GROUPS * 128; k++) free(small[k]);
  malloc_trim(0);
  long after = rss_kib();
  /* GROUPS groups of 128 KiB freed (118 given back here; the bin's current slab and the one of its
   * `last` block stay); RSS moves by less (the child's own pages): at least half */
  if (before < 0 || after < 0 || before - after < GROUPS / 2 * 128) {
    zt_log("seccomp_purge: RSS %ld -> %ld KiB after freeing %d groups of 128 KiB", before, after, GROUPS);
    _exit(2);
  }
  /* Every range went back in a madvise of its own: as many calls as ranges (a batch call the
   * heap never made is not counted) */
  int fds[2];
  static char json[65536];
  if (pipe(fds) == 0 && zns_stats_print) {
    zns_stats_print(fds[1], 1);
    close(fds[1]);
    ssize_t n = read(fds[0], json, sizeof json - 1);
    json[n > 0 ? n : 0] = 0;
    const char *c = strstr(json, "\"returned_calls\":"), *r = strstr(json, "\"returned_ranges\":");
    long calls = c ? atol(c + 17) : -1, ranges = r ? atol(r + 18) : -2;
    if (batches ? calls >= ranges : calls != ranges || ranges < GROUPS / 2) {
      zt_log("seccomp_purge (%s): %ld calls for %ld ranges given back", kVariant[variant], calls, ranges);
      _exit(3);
    }
  }
  for (int k = 0; k < GROUPS * 64; k++) free(big[k]);
  return NULL;
}

static void child(int variant) {
  batches = variant == kNoFilter && kernel_batches();
  if (variant == kThreadFilter) {
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, purge, &variant) == 0);
    REQUIRE(pthread_join(t, NULL) == 0);
  } else {
    purge(&variant);
  }
  _exit(0);
}

int main(void) {
  if (!zt_zns_mode()) {
    zt_log("seccomp_purge: skipped under plain glibc");
    return 0;
  }
  for (int variant = kKillBatch; variant <= kNoFilter; variant++) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) child(variant);
    int st = 0;
    REQUIRE(waitpid(pid, &st, 0) == pid);
    CHECK(!WIFSIGNALED(st), "%s: the child died of signal %d (SIGSYS = %d: a call the filter forbids)",
          kVariant[variant], WIFSIGNALED(st) ? WTERMSIG(st) : 0, SIGSYS);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: child exit status %d", kVariant[variant],
          WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  }
  return zt_finish("seccomp_purge");
}
