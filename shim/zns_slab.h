/* ZNS-Slab public API.  The allocator itself is reached through the standard malloc family;
 * these are the project's own entry points, exported by libzns_slab.so and libzns_slab.a.
 * Programs that may run without ZNS-Slab can declare them weak and test for NULL. */
#ifndef ZNS_SLAB_H
#define ZNS_SLAB_H
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif

/* 1 when p lies in the slab region (a block ZNS-Slab handed out, live or not), else 0. */
int zns_owns(const void *p);

/* Usable size of a block in the slab region (its size class), 0 for anything else. */
size_t zns_block_size(const void *p);

/* Print heap statistics to fd: a text table (json == 0) or one JSON document (json != 0).
 * Never allocates; safe at exit and from a broken heap.  Returns 0, or -1 if a write failed. */
int zns_stats_print(int fd, int json);

/* Return every empty slab the depot holds to the OS now (instead of after the decay delay). */
void zns_trim(void);

#ifdef __cplusplus
}
#endif
#endif
