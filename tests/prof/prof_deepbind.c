/* dlopen(argv[1], RTLD_NOW | RTLD_DEEPBIND) from prof_open, then the plugin's plugin_keep
   (tests/prof/prof_plugin.c).  tests/prof/run.sh checks the profile: the loader's allocations
   under prof_open, with none of the shim's frames and not the `ret` byte of the program's _init
   that the shim's detour returns through; the plugin's blocks charged to plugin_keep. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>

__attribute__((noinline)) void *prof_open(const char *path) {
  void *h = dlopen(path, RTLD_NOW | RTLD_DEEPBIND);
  __asm__ volatile("" ::: "memory");   // (not a tail call: prof_open stays on the stack)
  return h;
}

int main(int argc, char **argv) {
  void *h = argc > 1 ? prof_open(argv[1]) : NULL;
  void (*keep)(void) = h ? (void (*)(void))dlsym(h, "plugin_keep") : NULL;
  if (!keep) {
    fprintf(stderr, "prof_deepbind: %s\n", argc < 2 ? "usage: prof_deepbind PLUGIN" : dlerror());
    return 1;
  }
  keep();
  puts("done");
  return 0;
}
