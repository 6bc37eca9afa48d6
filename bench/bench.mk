# Benchmark build rules (issue 4): included by the Makefile.
#
#   make bench            build, then run every workload under glibc, jemalloc, mimalloc, tcmalloc
#                         and ZNS-Slab (interleaved rounds) and write bench/RESULTS.md, bench/plots/
#   make bench QUICK=1    the same with fewer rounds, sizes and operations (a few minutes)
#   make bench BENCH_ARGS='--only micro,latency'   a subset (see bench/run_bench.py --help); the other
#                         stages' results are kept in bench/results.json and RESULTS.md
#   make bench BENCH_ARGS='--only tier'            the tier of issue 5 (ZNS-Slab only)
#   make bench BENCH_ARGS='--only checks'          issue 6: what the free fast path's misuse checks and
#                         ZNS_SECURE=1 cost (ZNS-Slab only; needs the unchecked build below)
#
# The benchmark programs know nothing of ZNS-Slab: they are built once and every allocator is
# swapped in with LD_PRELOAD by bench/run_bench.py (glibc = no preload).  Nothing links a peer.
BENCH_PY     := /usr/bin/python3
BENCH_CFLAGS := -O2 -g -pthread -Wall -Wextra -I. \
                -fno-builtin-malloc -fno-builtin-free -fno-builtin-calloc -fno-builtin-realloc
BENCH_BINS   := $(addprefix $(BUILD)/bench/,micro latency memory threads pairs timeit probe tier workload)
BENCH_PROG_PKGS := redis-server redis-tools sqlite3 valgrind
QUICK        ?=
BENCH_ARGS   ?=

$(BUILD)/bench/micro: bench/micro.cpp bench/bench_common.h | $(BUILD)/bench
	$(CXX) $(CXXSTD) $(BENCH_CFLAGS) $< -o $@ -lbenchmark -lpthread
$(BUILD)/bench/latency: bench/latency.cpp bench/bench_common.h | $(BUILD)/bench
	$(CXX) $(CXXSTD) $(BENCH_CFLAGS) $< -o $@
$(BUILD)/bench/memory: bench/memory.cpp bench/bench_common.h | $(BUILD)/bench
	$(CXX) $(CXXSTD) $(BENCH_CFLAGS) $< -o $@
$(BUILD)/bench/threads: bench/threads.cpp bench/bench_common.h | $(BUILD)/bench
	$(CXX) $(CXXSTD) $(BENCH_CFLAGS) $< -o $@ -lpthread
$(BUILD)/bench/pairs: bench/pairs.c | $(BUILD)/bench
	$(CC) $(BENCH_CFLAGS) $< -o $@ -ldl
$(BUILD)/bench/tier: bench/tier.c | $(BUILD)/bench
	$(CC) $(BENCH_CFLAGS) $< -o $@ -ldl
$(BUILD)/bench/timeit: bench/timeit.c | $(BUILD)/bench
	$(CC) -O2 -Wall $< -o $@
$(BUILD)/bench/probe: bench/probe.c | $(BUILD)/bench
	$(CC) -O2 -Wall -Wextra -pthread $< -o $@

# A second copy of the shim with -DZNS_UNCHECKED (core/heap.h: the free fast path's misuse checks and
# the sized-delete class check compiled out), for the `checks` stage only: never ship it.  Same
# sources and flags as the Makefile's library rules, its own object directory so the two builds
# never mix.  (The link line repeats the Makefile's $(SO) rule: keep the two in step.)
UNCHECKED_DIR := $(BUILD)/unchecked
UNCHECKED_SO  := $(UNCHECKED_DIR)/libzns_slab.so
UNCHECKED_OBJ := $(LIB_OBJ:$(BUILD)/%=$(UNCHECKED_DIR)/%)
UNCHECKED_DEP := $(wildcard core/*.h core/*.def tier/*.h) shim/zns_slab.h

$(UNCHECKED_DIR)/%.o: %.cpp $(UNCHECKED_DEP)
	@mkdir -p $(@D)
	$(CXX) $(LIBFLAGS) -DZNS_UNCHECKED -c $< -o $@
$(UNCHECKED_DIR)/shim/new_delete.o: shim/new_delete.cpp $(UNCHECKED_DEP)
	@mkdir -p $(@D)
	$(CXX) $(NEWFLAGS) -DZNS_UNCHECKED -c $< -o $@
$(UNCHECKED_SO): $(UNCHECKED_OBJ) shim/exports.map
	$(CXX) -shared -o $@ $(UNCHECKED_OBJ) -Wl,--version-script=shim/exports.map -Wl,-z,nodelete \
	  -Wl,-z,now -pthread

.PHONY: bench bench-build deps-bench-progs
deps-bench-progs: deps-bench
	$(call need_pkgs,$(BENCH_PROG_PKGS))
bench-build: all $(BENCH_BINS) $(UNCHECKED_SO)
bench: deps-bench-progs
	@$(MAKE) --no-print-directory bench-build
	$(BENCH_PY) bench/run_bench.py $(if $(filter-out 0 no,$(QUICK)),--quick) --build $(BUILD) --zns $(SO) \
	  --zns-unchecked $(UNCHECKED_SO) $(BENCH_ARGS)
