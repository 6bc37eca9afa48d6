/* A library whose constructor takes a stack with libunwind, as crash reporters and loggers do at
   start: linked by tests/prof/prof_fds.c's "early" build, it runs before the profiler's constructor
   (a preloaded library is set up after the program's own dependencies), so libunwind has made its
   real pipe before the profiler can redirect it (shim/prof.cpp, start_unwinder). */
#include <libunwind.h>

int prof_early_frames;

__attribute__((constructor)) static void early(void) {
  void *frames[8];
  prof_early_frames = unw_backtrace(frames, 8);
}
