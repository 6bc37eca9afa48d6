/* A plugin that tests/prof/prof_deepbind.c opens with RTLD_DEEPBIND (the shim calls the real
   dlopen through a detour and rebinds the plugin's malloc to itself, shim/deepbind.cpp), then
   calls: plugin_keep keeps 2000 blocks of 1000 B (1.91 MiB). */
#include <stdlib.h>

void *plugin_kept[2000];

__attribute__((noinline)) void plugin_keep(void) {
  for (int i = 0; i < 2000; i++) plugin_kept[i] = malloc(1000);
  __asm__ volatile("" ::: "memory");
}
