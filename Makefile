# ZNS-Slab build.  `make` builds the shim; `make run` is the main job; `make test` runs every test.
# What the targets need from Debian is installed when missing: `make deps` (the build), `make
# deps-test` (what `make test` runs: real programs, the aarch64 cross compiler and qemu-user) and
# `make deps-bench` (the peers and Google Benchmark); each target depends on its own.

CXX      ?= g++
CC       ?= gcc
OBJCOPY  ?= $(shell $(CC) -print-prog-name=objcopy)
BUILD    := build
OPT      ?= -O2
CXXSTD   := -std=c++20
WARN     := -Wall -Wextra -Wno-unused-parameter
# x86-64: popcnt in one instruction (every x86-64 CPU since 2008).  Other targets (aarch64, built
# and run under qemu by tests/cross) need nothing.
ARCHFLAGS := $(if $(filter x86_64%,$(shell $(CXX) -dumpmachine 2>/dev/null)),-mpopcnt)
# A cross compiler's binutils (CC=aarch64-linux-gnu-gcc: aarch64-linux-gnu-ar); the host's otherwise.
ARTOOL    := $(patsubst %gcc,%,$(filter %-gcc,$(CC)))ar
# The library: no exceptions or RTTI in core, hidden visibility, initial-exec TLS (set per variable).
LIBFLAGS := $(CXXSTD) $(OPT) -g -fPIC -fvisibility=hidden -fno-exceptions -fno-rtti \
            -fno-stack-protector -fno-plt -ftls-model=initial-exec $(ARCHFLAGS) $(WARN) -I. -pthread
# operator new must let std::bad_alloc pass through it, so its file keeps unwind tables.  Never
# link-time optimised (an OPT with -flto, as distributions' build flags may add): its references
# to the C++ runtime are made weak by a top-level asm that LTO leaves in another partition, and
# the library then needed __cxa_begin_catch at load, which a C program does not have.
NEWFLAGS := $(filter-out -fno-exceptions,$(LIBFLAGS)) -fexceptions -fno-lto

CORE_SRC := $(wildcard core/*.cpp) $(wildcard tier/*.cpp)
SHIM_SRC := shim/malloc.cpp shim/deepbind.cpp shim/rlimit.cpp
CORE_OBJ := $(CORE_SRC:%.cpp=$(BUILD)/%.o)
SHIM_OBJ := $(SHIM_SRC:%.cpp=$(BUILD)/%.o)
NEW_OBJ  := $(BUILD)/shim/new_delete.o
LIB_OBJ  := $(CORE_OBJ) $(SHIM_OBJ) $(NEW_OBJ)

SO := $(BUILD)/libzns_slab.so
AR := $(BUILD)/libzns_slab.a
# The same with the sampled heap profiler (shim/prof.cpp, ZNS_PROF): the shim's objects built again
# with -DZNS_PROFILER.  libunwind is not linked: prof.cpp loads it (dlopen, RTLD_LOCAL) by the
# SONAME of the one found here, so it never takes the C++ runtime's _Unwind_* names.  Built when
# libunwind's header is there (`make deps`).
PROF_SO    := $(BUILD)/libzns_slab_prof.so
PROF_OBJ   := $(CORE_OBJ) $(BUILD)/prof/shim/malloc.o $(BUILD)/shim/deepbind.o $(BUILD)/shim/rlimit.o $(BUILD)/prof/shim/new_delete.o \
              $(BUILD)/prof/shim/prof.o
HAVE_UNWIND := $(wildcard /usr/include/libunwind.h /usr/include/$(shell $(CC) -dumpmachine 2>/dev/null)/libunwind.h)
UNWIND_SONAME := $(shell objdump -p $(shell $(CC) -print-file-name=libunwind.so 2>/dev/null) 2>/dev/null | awk '/SONAME/ {print $$2}')
# For programs linked with -static: the shim without run-time lookups, and glibc's malloc.o (from
# the system's libc.a) with the names the shim defines made weak, as the next allocator.  No
# operator new: the C++ runtime's own (which calls malloc) is linked instead (README).
STATIC_AR  := $(BUILD)/libzns_slab_static.a
STATIC_OBJ := $(CORE_OBJ) $(BUILD)/static/shim/malloc.o
# (a C library without libc.a, e.g. Fedora without glibc-static: no such archive, and `all` says so)
LIBC_A     := $(wildcard $(filter /%,$(shell $(CC) -print-file-name=libc.a 2>/dev/null)))

.PHONY: all deps deps-test deps-bench run test clean classes
all: $(SO) $(AR) $(if $(LIBC_A),$(STATIC_AR),no-static-archive) $(if $(HAVE_UNWIND),$(PROF_SO),no-prof) $(BUILD)/zns-classes
.PHONY: no-static-archive no-prof
no-static-archive:
	@echo "note: $(CC) has no libc.a (Debian: libc6-dev): $(STATIC_AR), for -static programs, is not built"
no-prof:
	@echo "note: no libunwind.h (Debian: libunwind-dev; make deps): $(PROF_SO), the heap profiler, is not built"

# ---- dependencies (Debian packages, installed only when missing) --------------------------------
APT_STAMP := $(BUILD)/.apt-updated
define need_pkgs
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ ! -f $(APT_STAMP) ]; then mkdir -p $(BUILD); apt-get update -qq && touch $(APT_STAMP); fi; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || { echo "apt-get install failed:$$missing"; exit 1; }; \
	fi
endef
BUILD_PKGS := g++ make libc6-dev libunwind-dev
# CPython's own tests (tests/programs/python_regrtest.sh) come in a package named by the version of
# Debian's python3 (when python3 is not installed yet: 3.11, Debian 12's).
PY_VER     := $(or $(shell /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null),3.11)
TEST_PKGS  := doctest-dev python3 python3-matplotlib sqlite3 redis-server redis-tools valgrind \
              libpython$(PY_VER)-testsuite git perl gcc cmake ninja-build xz-utils openssl jq tcl \
              postgresql xfsprogs php-cli google-perftools libtcmalloc-minimal4 libmimalloc2.0 libjemalloc2 \
              faketime g++-aarch64-linux-gnu qemu-user
BENCH_PKGS := libbenchmark-dev libjemalloc-dev libjemalloc2 libmimalloc-dev libmimalloc2.0 \
              libgoogle-perftools-dev libgoogle-perftools4 libtcmalloc-minimal4 python3-matplotlib

deps:
	$(call need_pkgs,$(BUILD_PKGS))
deps-test: deps
	$(call need_pkgs,$(TEST_PKGS))
deps-bench: deps
	$(call need_pkgs,$(BENCH_PKGS))

# ---- the library -------------------------------------------------------------------------------
$(BUILD)/core/%.o: core/%.cpp $(wildcard core/*.h core/*.def tier/*.h) shim/zns_slab.h | $(BUILD)/core
	$(CXX) $(LIBFLAGS) -c $< -o $@
$(BUILD)/tier/%.o: tier/%.cpp $(wildcard core/*.h core/*.def tier/*.h) | $(BUILD)/tier
	$(CXX) $(LIBFLAGS) -c $< -o $@
$(BUILD)/shim/malloc.o: shim/malloc.cpp $(wildcard core/*.h core/*.def tier/*.h) shim/entry.h shim/zns_slab.h | $(BUILD)/shim
	$(CXX) $(LIBFLAGS) -c $< -o $@
$(BUILD)/shim/deepbind.o: shim/deepbind.cpp $(wildcard core/*.h core/*.def) shim/entry.h shim/zns_slab.h | $(BUILD)/shim
	$(CXX) $(LIBFLAGS) -c $< -o $@
$(BUILD)/shim/rlimit.o: shim/rlimit.cpp $(wildcard core/*.h core/*.def) shim/zns_slab.h | $(BUILD)/shim
	$(CXX) $(LIBFLAGS) -c $< -o $@
$(NEW_OBJ): shim/new_delete.cpp $(wildcard core/*.h core/*.def) shim/entry.h shim/zns_slab.h | $(BUILD)/shim
	$(CXX) $(NEWFLAGS) -c $< -o $@

$(SO): $(LIB_OBJ) shim/exports.map
	$(CC) -shared -o $@ $(LIB_OBJ) -Wl,--version-script=shim/exports.map -Wl,-z,nodelete \
	  -Wl,-z,now -pthread
$(BUILD)/prof/shim/malloc.o: shim/malloc.cpp $(wildcard core/*.h core/*.def tier/*.h) shim/entry.h shim/zns_slab.h | $(BUILD)/prof/shim
	$(CXX) $(LIBFLAGS) -DZNS_PROFILER -c $< -o $@
$(BUILD)/prof/shim/prof.o: shim/prof.cpp $(wildcard core/*.h core/*.def) shim/entry.h shim/zns_slab.h | $(BUILD)/prof/shim
	$(CXX) $(LIBFLAGS) -DZNS_PROFILER -DZNS_UNWIND_SONAME='"$(or $(UNWIND_SONAME),libunwind.so.8)"' -c $< -o $@
$(BUILD)/prof/shim/new_delete.o: shim/new_delete.cpp $(wildcard core/*.h core/*.def) shim/entry.h shim/zns_slab.h | $(BUILD)/prof/shim
	$(CXX) $(NEWFLAGS) -DZNS_PROFILER -c $< -o $@
$(PROF_SO): $(PROF_OBJ) shim/exports.map
	$(CC) -shared -o $@.tmp $(PROF_OBJ) -Wl,--version-script=shim/exports.map -Wl,-z,nodelete \
	  -Wl,-z,now -pthread -ldl -lm
	@# (zns_malloc_here, malloc's hidden alias, is bound already: without its name in the symbol
	@# table, malloc's address has one name, the one google-pprof drops; shim/malloc.cpp)
	$(OBJCOPY) --strip-symbol=zns_malloc_here $@.tmp $@ && rm -f $@.tmp

# The archive's dlopen is weak: a program with a dlopen of its own (a wrapper) links, and keeps
# its own, instead of failing with "multiple definition" (it then has no rebinding of deep-bound
# libraries).  The shared library's stays global: under LD_DYNAMIC_WEAK=1 the loader prefers
# glibc's strong one to a weak one, and deep-bound libraries were not rebound (php -v aborted).
AR_OBJ := $(filter-out $(BUILD)/shim/deepbind.o,$(LIB_OBJ)) $(BUILD)/shim/deepbind.weak.o
$(BUILD)/shim/deepbind.weak.o: shim/deepbind.cpp $(wildcard core/*.h core/*.def) shim/entry.h shim/zns_slab.h | $(BUILD)/shim
	$(CXX) $(LIBFLAGS) -DZNS_WEAK_DLOPEN -c $< -o $@
$(AR): $(AR_OBJ)
	rm -f $@ && $(ARTOOL) rcs $@ $(AR_OBJ)

# ---- the archive for -static programs ------------------------------------------------------------
# A -static link takes glibc's malloc.o from libc.a as soon as anything needs one of its names (the
# shim's __libc_malloc, fork's __malloc_fork_lock_parent), and its malloc, free and realloc clash
# with the shim's.  Here a copy of it, whose names that the shim also defines are weak, comes with
# the archive: the link takes everything from the copy and never the original (tools/static-libc.sh).
$(BUILD)/static/shim/malloc.o: shim/malloc.cpp $(wildcard core/*.h core/*.def tier/*.h) shim/entry.h shim/zns_slab.h | $(BUILD)/static/shim
	$(CXX) $(LIBFLAGS) -DZNS_STATIC_LIBC -c $< -o $@
$(BUILD)/static/glibc_malloc.o: tools/static-libc.sh $(STATIC_OBJ) $(LIBC_A) | $(BUILD)/static
	tools/static-libc.sh "$(CC)" $@ $(STATIC_OBJ)
$(STATIC_AR): $(STATIC_OBJ) $(BUILD)/static/glibc_malloc.o
	rm -f $@ && $(ARTOOL) rcs $@ $(STATIC_OBJ) $(BUILD)/static/glibc_malloc.o

$(BUILD)/zns-classes: tools/zns-classes.cpp core/size_class.h | $(BUILD)
	$(CXX) $(CXXSTD) -O1 -I. $< -o $@
classes: $(BUILD)/zns-classes
	@$(BUILD)/zns-classes

$(BUILD) $(BUILD)/core $(BUILD)/tier $(BUILD)/shim $(BUILD)/tests $(BUILD)/bench $(BUILD)/static $(BUILD)/static/shim $(BUILD)/prof/shim:
	mkdir -p $@

# ---- the main job ------------------------------------------------------------------------------
$(BUILD)/bench/workload: bench/workload.cpp | $(BUILD)/bench
	$(CXX) $(CXXSTD) -O2 -g -pthread $< -o $@
run: deps all $(BUILD)/bench/workload
	@tools/compare.sh $(BUILD)/bench/workload

# ---- tests and benchmarks ----------------------------------------------------------------------
include tests/tests.mk
-include tests/hardening.mk
-include bench/bench.mk

clean:
	rm -rf $(BUILD)
