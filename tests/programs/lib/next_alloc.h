/* Shared by next_alloc_early.c and next_alloc_main.c (tests/programs/next_alloc.sh). */
#include <stddef.h>
#define EARLY_MAX 2000
struct early_block {
  void *p;   /* NULL: freed in the constructor */
  size_t n;
  int aligned;   /* from posix_memalign(65536), not moved since */
};
extern struct early_block early_blocks[EARLY_MAX];
extern int early_count;

/* next_alloc_race_early.c and next_alloc_race.c */
#define RACE_THREADS 2
#define RACE_RING 64
