# Hardening (issue 6): the fuzzer, the sanitizer builds and the long stress run.  Included by the
# Makefile (`-include tests/hardening.mk`); uses its BUILD, CXXSTD, CORE_SRC, UNIT_SRC, SO and
# need_pkgs, and tests.mk's rule for build/tests/%.  Every target installs what it needs from
# Debian when it is missing (clang, libclang-rt-14-dev, doctest-dev).
#
#   make fuzz            libFuzzer (tests/fuzz/heap_fuzz.cpp) for FUZZ_SECONDS (300); corpus in
#                        build/fuzz/corpus (kept between runs), failing inputs in build/fuzz/artifacts
#   make fuzz-short      the same for FUZZ_SHORT_SECONDS (40)
#   make check-sanitize  unit tests + tests/sanitize/*.cpp built with ASan+UBSan and with TSan, and
#                        run (tests/sanitize/run.sh; SAN_SCALE=4 by default), the drivers also with
#                        ZNS_SECURE=1; any report fails.
#                        TSan suppressions (benign statistics reads only): tests/sanitize/tsan.supp
#   make stress          tests/stress_long/long_stress.cpp under LD_PRELOAD=build/libzns_slab.so for
#                        STRESS_SECONDS (180) with STRESS_THREADS (16) threads
# `make test` builds the fuzzer and the stress program too (test-build); tests/run.sh runs the short
# versions with:   run_one fuzz/heap_fuzz bash tests/fuzz/run.sh 40
#                  run_one stress_long bash tests/stress_long/run.sh 20

.PHONY: deps-hardening fuzz fuzz-build fuzz-short check-sanitize sanitize-build stress stress-build

HARD_CXX   ?= clang++
HARD_PKGS  := clang libclang-rt-14-dev doctest-dev
CORE_HDR   := $(wildcard core/*.h core/*.def tier/*.h)

deps-hardening: deps
	$(call need_pkgs,$(HARD_PKGS))

# ---- 1. the fuzzer ---------------------------------------------------------------------------------
FUZZ_DIR     := $(BUILD)/fuzz
FUZZ_BIN     := $(FUZZ_DIR)/heap_fuzz
FUZZ_SECONDS ?= 300
FUZZ_SHORT_SECONDS ?= 40
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_FLAGS   := $(CXXSTD) -O1 -g -fno-omit-frame-pointer -pthread -I. $(FUZZ_SAN)

# The core sources are compiled into the fuzzer with ASan+UBSan and coverage instrumentation (the
# fuzzer's guide is the heap's code, not the harness's map and pattern loops, which only slow it
# down).  No interposition: the fuzzer calls zns:: directly; its own malloc is ASan's.
$(FUZZ_DIR)/%.o: %.cpp $(CORE_HDR) | deps-hardening
	@mkdir -p $(dir $@)
	$(HARD_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_DIR)/heap_fuzz.o: tests/fuzz/heap_fuzz.cpp $(CORE_HDR) | deps-hardening
	@mkdir -p $(dir $@)
	$(HARD_CXX) $(FUZZ_FLAGS) -c $< -o $@
$(FUZZ_BIN): $(FUZZ_DIR)/heap_fuzz.o $(CORE_SRC:%.cpp=$(FUZZ_DIR)/%.o)
	$(HARD_CXX) $(FUZZ_FLAGS) -fsanitize=fuzzer $^ -o $@
fuzz-build: $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@tests/fuzz/run.sh $(FUZZ_SECONDS)
fuzz-short: $(FUZZ_BIN)
	@tests/fuzz/run.sh $(FUZZ_SHORT_SECONDS)

# make test builds these too (its run.sh lines call tests/fuzz/run.sh and tests/stress_long/run.sh)
test-build: $(FUZZ_BIN) stress-build

# ---- 2. sanitizer builds -----------------------------------------------------------------------------
# ASan and TSan replace malloc themselves, so the shim cannot run under them: the unit tests and the
# drivers in tests/sanitize/ (which call the internal zns:: API from many threads) are linked with
# the core sources built with (a) -fsanitize=address,undefined and (b) -fsanitize=thread.
SAN_DIR   := $(BUILD)/sanitize
SAN_SRC   := $(wildcard tests/sanitize/*.cpp)
SAN_NAMES := $(notdir $(basename $(SAN_SRC)))
SAN_BASE  := $(CXXSTD) -O1 -g -fno-omit-frame-pointer -pthread -I.
SAN_asan  := -fsanitize=address,undefined -fno-sanitize-recover=all
SAN_tsan  := -fsanitize=thread
SAN_BINS  := $(foreach f,asan tsan,$(SAN_NAMES:%=$(SAN_DIR)/$(f)/%) $(SAN_DIR)/$(f)/unit_tests)

define san_flavour
$(SAN_DIR)/$(1)/%.o: %.cpp $(CORE_HDR) | deps-hardening
	@mkdir -p $$(dir $$@)
	$(HARD_CXX) $(SAN_BASE) $(SAN_$(1)) -c $$< -o $$@
$(SAN_DIR)/$(1)/unit/%.o: tests/unit/%.cpp $(CORE_HDR) | deps-hardening
	@mkdir -p $$(dir $$@)
	$(HARD_CXX) $(SAN_BASE) $(SAN_$(1)) -c $$< -o $$@
$(SAN_DIR)/$(1)/unit_tests: $(UNIT_SRC:tests/unit/%.cpp=$(SAN_DIR)/$(1)/unit/%.o) $(CORE_SRC:%.cpp=$(SAN_DIR)/$(1)/%.o)
	$(HARD_CXX) $(SAN_BASE) $(SAN_$(1)) $$^ -o $$@
$(SAN_NAMES:%=$(SAN_DIR)/$(1)/%): $(SAN_DIR)/$(1)/%: tests/sanitize/%.cpp tests/sanitize/san_common.h $(CORE_HDR) $(CORE_SRC:%.cpp=$(SAN_DIR)/$(1)/%.o)
	$(HARD_CXX) $(SAN_BASE) $(SAN_$(1)) $$< $(CORE_SRC:%.cpp=$(SAN_DIR)/$(1)/%.o) -o $$@
endef
$(eval $(call san_flavour,asan))
$(eval $(call san_flavour,tsan))

sanitize-build: $(SAN_BINS)
check-sanitize: deps-hardening
	@$(MAKE) --no-print-directory sanitize-build
	@tests/sanitize/run.sh $(SAN_NAMES)

# ---- 3. the long stress run ----------------------------------------------------------------------
# Built like the other tests by tests.mk's rule (build/tests/%: tests/%.cpp, g++), run preloaded.
STRESS_BIN     := $(BUILD)/tests/stress_long/long_stress
STRESS_SECONDS ?= 180
STRESS_THREADS ?= 16
stress-build: $(SO) $(STRESS_BIN)
stress: deps stress-build
	@STRESS_THREADS=$(STRESS_THREADS) tests/stress_long/run.sh $(STRESS_SECONDS)
