// setrlimit and prlimit, interposed for one case: a program that lowers its own address-space
// limit (RLIMIT_AS) after the heap reserved its region.  The call goes to the kernel as it would
// (prlimit64, the system call glibc makes for all four), and when it succeeded the heap gives back
// the address space it does not use (region_fit_limit, core/heap.cpp).  Every other call is
// passed through unchanged.  Not an allocation path: region_fit_limit takes the depot lock.
//
// Not in libzns_slab_static.a (a -static program's libc.a has these names: README), and not seen
// when another process sets the limit (prlimit --pid): the heap then keeps its reservation.  A
// vfork child's call changes its own limit, not its parent's heap (region_fit_limit).
#include <errno.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#include "core/heap.h"
#include "core/platform.h"

namespace {
// The kernel's struct rlimit64 (and glibc's struct rlimit on a 64-bit target): two 64-bit words.
struct Limit {
  uint64_t cur, max;
};
constexpr int kAddressSpace = 9;   // RLIMIT_AS on every Linux target this builds for

int set_limit(pid_t pid, int resource, const void *new_limit, void *old_limit) {
  long r = zns::os_syscall(SYS_prlimit64, pid, resource, new_limit, old_limit);
  // Whose limit changed is the kernel's answer, not pid's: 0, this process's pid or any of its
  // threads' ids (a limit is the whole process's; helper-91's review: prlimit(gettid(), ..) was
  // missed).  So the process's own limit is read back, whatever pid was; region_fit_limit leaves
  // a region that already fits it alone, and a vfork child's call alone (its limit, its parent's heap).
  if (r == 0 && new_limit && resource == kAddressSpace) {
    int saved = errno;
    Limit now;
    if (zns::os_syscall(SYS_prlimit64, 0, kAddressSpace, nullptr, &now) == 0)
      zns::region_fit_limit(now.cur);   // (RLIM_INFINITY: ~0, nothing)
    errno = saved;
  }
  return int(r);
}
}  // namespace

static_assert(sizeof(long) == 8, "struct rlimit is two 64-bit words (the system call's rlimit64)");

extern "C" {
ZNS_EXPORT int setrlimit(int resource, const void *limit) { return set_limit(0, resource, limit, nullptr); }
ZNS_EXPORT int setrlimit64(int resource, const void *limit) { return set_limit(0, resource, limit, nullptr); }
ZNS_EXPORT int prlimit(pid_t pid, int resource, const void *new_limit, void *old_limit) {
  return set_limit(pid, resource, new_limit, old_limit);
}
ZNS_EXPORT int prlimit64(pid_t pid, int resource, const void *new_limit, void *old_limit) {
  return set_limit(pid, resource, new_limit, old_limit);
}
}
