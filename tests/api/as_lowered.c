/* A program that lowers its own address-space limit (setrlimit(RLIMIT_AS), `ulimit -v` in a shell)
 * after the heap reserved its region (74.6 GB of address space for the default 64 GiB).  The heap
 * gives back what it does not use (region_fit_limit, through the shim's setrlimit and prlimit),
 * so the program's later mappings fit: the next allocator's large blocks, thread stacks and
 * caches, a fork's.  Before that every mapping was refused (bash: "xrealloc: cannot allocate";
 * 646 small blocks, not 200,000: helper-90's sweep).  Checked: the process's VmSize falls below
 * each new limit; blocks made before keep their bytes and free cleanly; small blocks still come
 * from the heap after each step; large ones, threads and a forked child work; a limit lowered a
 * second and third time (by setrlimit, by prlimit with the pid and with another thread's id), and
 * one below what the heap uses (it keeps what it uses); a vfork child's setrlimit leaves the
 * parent's heap alone (helper-91's review: it cut it to 69 MiB).  Linked
 * -static it is not built (libc.a's setrlimit is the program's: README).  Skipped under glibc. */
#include "tests/api/zns_test.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { NOLD = 20000, NNEW = 100000, NBIG = 16 };
static void *old_blk[NOLD];
static void *new_blk[NNEW];

static size_t size_of(int i) { return 16 + (size_t)(zt_mix64((uint64_t)i) % 4081); }

static void *worker(void *arg) {
  long k = (long)arg;
  void *v[2000];
  for (int r = 0; r < 5; r++) {
    for (int i = 0; i < 2000; i++) {
      v[i] = malloc(size_of(i + (int)k * 7));
      if (!v[i]) return (void *)1;
      zt_fill(v[i], 16, (uint64_t)i);
    }
    for (int i = 0; i < 2000; i++) {
      if (zt_verify(v[i], 16, (uint64_t)i) != -1) return (void *)2;
      free(v[i]);
    }
  }
  return NULL;
}

static void *limit_by_tid(void *arg) {
  struct rlimit n = {(rlim_t)(size_t)arg, RLIM_INFINITY};
  return prlimit((pid_t)syscall(SYS_gettid), RLIMIT_AS, &n, NULL) == 0 ? NULL : (void *)1;
}

/* After lowering the limit to `limit`: everything a program does must still work. */
static void check_after(size_t limit, const char *step) {
  size_t vm = zt_vm_bytes();
  CHECK(vm < limit, "%s: VmSize %zu MiB not below the new limit %zu MiB: the heap kept its reservation", step,
        vm >> 20, limit >> 20);
  for (int i = 0; i < NOLD; i++)
    if (old_blk[i]) CHECK(zt_verify(old_blk[i], size_of(i), (uint64_t)i) == -1, "%s: old block %d changed", step, i);
  int owned = 0;
  for (int i = 0; i < NNEW; i++) {
    new_blk[i] = malloc(200);
    REQUIRE(new_blk[i], "%s: malloc(200) #%d returned NULL", step, i);
    zt_fill(new_blk[i], 200, (uint64_t)i);
    owned += zns_owns(new_blk[i]) != 0;
  }
  /* (all of them; 99% under libzns_slab_prof.so, whose sampled blocks are the next allocator's) */
  CHECK(owned >= NNEW - NNEW / 100, "%s: %d of %d small blocks came from the heap", step, owned, NNEW);
  void *big[NBIG];
  for (int i = 0; i < NBIG; i++) {
    big[i] = malloc(1 << 20);
    CHECK(big[i] != NULL, "%s: malloc(1 MiB) #%d returned NULL (the next allocator's mmap refused)", step, i);
    if (big[i]) memset(big[i], i, 1 << 20);
  }
  pthread_t t[4];
  for (long k = 0; k < 4; k++) REQUIRE(pthread_create(&t[k], NULL, worker, (void *)k) == 0, "%s: pthread_create", step);
  for (int k = 0; k < 4; k++) {
    void *r;
    pthread_join(t[k], &r);
    CHECK(r == NULL, "%s: thread %d failed (%ld)", step, k, (long)r);
  }
  fflush(NULL);
  pid_t pid = fork();
  REQUIRE(pid >= 0, "%s: fork: %s", step, strerror(errno));
  if (pid == 0) {
    for (int i = 0; i < NNEW; i += 97)
      if (zt_verify(new_blk[i], 200, (uint64_t)i) != -1) _exit(3);
    void *p = malloc(5000), *q = malloc(64);
    if (!p || !q) _exit(4);
    free(p);
    free(q);
    for (int i = 0; i < NNEW; i++) free(new_blk[i]);
    _exit(0);
  }
  int st;
  REQUIRE(waitpid(pid, &st, 0) == pid);
  CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the forked child failed (status 0x%x)", step, st);
  for (int i = 0; i < NNEW; i++) {
    CHECK(zt_verify(new_blk[i], 200, (uint64_t)i) == -1, "%s: new block %d changed", step, i);
    free(new_blk[i]);
  }
  for (int i = 0; i < NBIG; i++) free(big[i]);
}

int main(void) {
  if (!zt_zns_mode()) {
    zt_log("as_lowered: skipped under plain glibc");
    return 0;
  }
  zt_log("as_lowered: mode %s", zt_mode_name());
  for (int i = 0; i < NOLD; i++) {
    old_blk[i] = malloc(size_of(i));
    REQUIRE(old_blk[i]);
    zt_fill(old_blk[i], size_of(i), (uint64_t)i);
  }
  for (int i = 0; i < NOLD; i += 3) { /* holes: the heap's slabs are partly free */
    free(old_blk[i]);
    old_blk[i] = NULL;
  }
  size_t vm0 = zt_vm_bytes();
  struct rlimit r;
  REQUIRE(getrlimit(RLIMIT_AS, &r) == 0);
  if (r.rlim_cur != RLIM_INFINITY || vm0 < ((size_t)8 << 30)) {
    zt_log("as_lowered: skipped: already under a limit, or a small region (VmSize %zu MiB)", vm0 >> 20);
    return zt_finish("as_lowered");
  }
  /* 0. a vfork child's limit is its own: the parent's heap keeps its reservation (the child
   * shares the address space, not the limit) */
  pid_t pid = vfork();
  REQUIRE(pid >= 0, "vfork: %s", strerror(errno));
  if (pid == 0) {
    struct rlimit c = {(rlim_t)256 << 20, RLIM_INFINITY};
    _exit(setrlimit(RLIMIT_AS, &c) == 0 ? 0 : 1);
  }
  int st;
  REQUIRE(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the vfork child's setrlimit failed");
  CHECK(zt_vm_bytes() + ((size_t)1 << 30) > vm0, "a vfork child's setrlimit shrank the parent's heap: VmSize %zu MiB, was %zu MiB",
        zt_vm_bytes() >> 20, vm0 >> 20);
  /* 1. setrlimit, to 4 GiB (the heap's reservation alone was 74.6 GB) */
  size_t limit = (size_t)4 << 30;
  r.rlim_cur = limit;
  REQUIRE(setrlimit(RLIMIT_AS, &r) == 0, "setrlimit: %s", strerror(errno));
  check_after(limit, "setrlimit 4 GiB");
  /* 2. prlimit by another thread's id, to 2 GiB (a limit is the whole process's), then by pid to 1 GiB */
  limit = (size_t)2 << 30;
  pthread_t t;
  REQUIRE(pthread_create(&t, NULL, limit_by_tid, (void *)limit) == 0);
  void *res;
  pthread_join(t, &res);
  REQUIRE(res == NULL, "prlimit(gettid()) failed");
  check_after(limit, "prlimit by a thread id 2 GiB");
  limit = (size_t)1 << 30;
  struct rlimit n = {limit, r.rlim_max};
  REQUIRE(prlimit(getpid(), RLIMIT_AS, &n, NULL) == 0, "prlimit: %s", strerror(errno));
  check_after(limit, "prlimit 1 GiB");
  /* 3. below what the process uses: the heap keeps what it uses; the blocks stay */
  n.rlim_cur = zt_vm_bytes() / 2;
  REQUIRE(setrlimit(RLIMIT_AS, &n) == 0, "setrlimit: %s", strerror(errno));
  for (int i = 0; i < NOLD; i++)
    if (old_blk[i]) CHECK(zt_verify(old_blk[i], size_of(i), (uint64_t)i) == -1, "below use: old block %d changed", i);
  void *p = malloc(100);
  CHECK(p != NULL, "below use: malloc(100) returned NULL");
  free(p);
  /* raised again: nothing grows back, everything still works */
  n.rlim_cur = limit;
  REQUIRE(setrlimit(RLIMIT_AS, &n) == 0);
  check_after(limit, "raised to 1 GiB again");
  for (int i = 0; i < NOLD; i++) free(old_blk[i]);
  return zt_finish("as_lowered");
}
