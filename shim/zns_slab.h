/* ZNS-Slab public API.  The allocator itself is reached through the standard malloc family;
 * these are the project's own entry points, exported by libzns_slab.so, libzns_slab_prof.so and
 * both archives (libzns_slab.a, libzns_slab_static.a).
 * Programs that may run without ZNS-Slab can declare them weak and test for NULL. */
#ifndef ZNS_SLAB_H
#define ZNS_SLAB_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* 1 when p lies in the slab region (a block ZNS-Slab handed out, live or not), else 0. */
int zns_owns(const void *p);

/* The block size (size class) of the slab that p lies in, for any address in the slab region (a
 * block's start or not, live or free); 0 outside it.  malloc_usable_size checks p is a live block. */
size_t zns_block_size(const void *p);

/* Print heap statistics to fd: a text table (json == 0) or one JSON document (json != 0).
 * Never allocates; safe at exit.  It takes the library's locks: not from a signal handler that may
 * have interrupted a malloc, a free or another print.  Returns 0, or -1 if a write failed. */
int zns_stats_print(int fd, int json);

/* Give memory back now instead of after the decay delay: this thread's buffered frees of other
 * threads' blocks are applied and (ZNS_SECURE) its quarantine released, every empty slab the
 * depot holds returns to the OS, and so do the pages of any thread's parked slabs whose blocks
 * have all been freed.  From a signal handler that interrupted the library's own work in this
 * thread (a slow path, one of its locks) it does nothing. */
void zns_trim(void);

/* The tier (ZNS_TIER=uffd|madvise): cold slabs leave RAM for a file and come back on touch. */
struct zns_tier_stats {
  int mode;                          /* 0 off, 1 uffd, 2 madvise */
  unsigned long long slabs_out, slabs_in, bytes_out, bytes_in;   /* since start */
  unsigned long long bytes_on_tier;  /* now */
  unsigned long long evict_errors, thrash, write_hits, zero_fills;
  unsigned long long fault_p50_ns, fault_p99_ns, fault_max_ns, faults_timed;   /* uffd only */
};
void zns_tier_stats(struct zns_tier_stats *out);
/* Page out now every slab the tier may take (no thread allocates from it, live blocks), whatever
 * its age.  Returns how many slabs left RAM.  0 when the tier is off. */
size_t zns_tier_pageout(void);

/* The heap profiler (libzns_slab_prof.so with ZNS_PROF set; see README "Heap profile"): write the
 * sampled profile of the blocks live now to path (%p becomes the pid), or, with path NULL, to the
 * ZNS_PROF path.  The text format of gperftools' sampled heap profiles (heap_v2), which google-pprof
 * reads.  Returns 0, or -1 with errno set: ENOSYS in a library without the profiler, EINVAL when
 * profiling is off, or the error of the open or write.  Not from a signal handler. */
int zns_prof_dump(const char *path);

#ifdef __cplusplus
}
#endif
#endif
