# Test build rules: included by the Makefile.  Files dropped into the first four folders are
# picked up (tests/run.sh runs them):
#   tests/unit/*.cpp     doctest unit tests, linked with the core objects directly (no interposition)
#   tests/api/*.c|*.cpp  programs run three times: under LD_PRELOAD=libzns_slab.so, linked with
#                        libzns_slab.a, and linked -static with libzns_slab_static.a (but FULLSTATIC_SKIP)
#   tests/stress/*.c|*.cpp  the same, for multithreaded / fork / churn stress
#   tests/programs/*.sh  unmodified real programs (python3 and CPython's tests, sqlite3, redis-server,
#                        PostgreSQL, PHP, everyday tools, ...) under the shim
# Named one by one: tests/prof (PROF_TEST: tests/prof/run.sh), tests/tier (TIER_TEST), and the
# aarch64 set of tests/cross/run.sh.
TEST_CFLAGS   := -O1 -g -pthread -Wall -Wno-unused-result -I.
# (sized operator delete is declared only with it under clang before 16; g++ has it on anyway)
TEST_CXXFLAGS := -fsized-deallocation
UNIT_SRC      := $(wildcard tests/unit/*.cpp)
PROG_SRC      := $(wildcard tests/api/*.c tests/api/*.cpp tests/stress/*.c tests/stress/*.cpp)
PROG_NAMES    := $(basename $(PROG_SRC))
PROG_DYN      := $(PROG_NAMES:%=$(BUILD)/%)
PROG_STATIC   := $(PROG_NAMES:%=$(BUILD)/%.static)
# Linked with -static (libzns_slab_static.a): all but the programs that dlopen plugins, and as_lowered
# (a -static program's setrlimit is libc.a's own: the heap cannot see the limit change).
FULLSTATIC_SKIP := tests/api/cxx_late tests/api/deepbind tests/api/foreign tests/api/own_dlopen tests/api/as_lowered
PROG_FULL     := $(if $(LIBC_A),$(filter-out $(FULLSTATIC_SKIP:%=$(BUILD)/%.fullstatic),$(PROG_NAMES:%=$(BUILD)/%.fullstatic)))
UNIT_BIN      := $(BUILD)/tests/unit_tests

$(UNIT_BIN): $(UNIT_SRC) $(CORE_OBJ) $(wildcard core/*.h core/*.def) | $(BUILD)/tests
	$(CXX) $(CXXSTD) -O1 -g -pthread -I. $(UNIT_SRC) $(CORE_OBJ) -o $@

# Dynamic builds know nothing of ZNS-Slab (zns_owns is a weak reference resolved at run time).
$(BUILD)/tests/%: tests/%.c $(wildcard tests/api/*.h) | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) $< -o $@ $(TEST_LDFLAGS) -ldl
$(BUILD)/tests/%: tests/%.cpp $(wildcard tests/api/*.h) | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(TEST_CXXFLAGS) $(TEST_CFLAGS) $< -o $@ -ldl
# Static builds: the archive replaces malloc at link time (the README's link line: C programs
# need no C++ runtime for it).
$(BUILD)/tests/%.static: tests/%.c $(AR) $(wildcard tests/api/*.h) | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) $(TEST_CFLAGS) -DZNS_LINKED $< -o $@ $(TEST_LDFLAGS) -Wl,--whole-archive $(AR) -Wl,--no-whole-archive -ldl
$(BUILD)/tests/%.static: tests/%.cpp $(AR) $(wildcard tests/api/*.h) | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(TEST_CXXFLAGS) $(TEST_CFLAGS) -DZNS_LINKED $< -o $@ -Wl,--whole-archive $(AR) -Wl,--no-whole-archive -ldl

# Fully static programs: the -static archive (README's line for them; C++ gets its runtime's
# operator new, which calls the shim's malloc).
$(BUILD)/tests/%.fullstatic: tests/%.c $(STATIC_AR) $(wildcard tests/api/*.h) | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -static $(TEST_CFLAGS) -DZNS_LINKED -DZNS_FULL_STATIC $< -o $@ -Wl,--whole-archive $(STATIC_AR) -Wl,--no-whole-archive
$(BUILD)/tests/%.fullstatic: tests/%.cpp $(STATIC_AR) $(wildcard tests/api/*.h) | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CXX) -static $(CXXSTD) $(TEST_CXXFLAGS) $(TEST_CFLAGS) -DZNS_LINKED -DZNS_FULL_STATIC $< -o $@ -Wl,--whole-archive $(STATIC_AR) -Wl,--no-whole-archive

# Plugins that tests/api programs dlopen (next to them: the program finds them by its own path,
# and tests/api/deepbind also by a bare name through its RUNPATH).
# libzt_deepbind_outer.so opens libzt_deepbind_own.so (which brings its own allocator,
# libzt_myalloc.so) from its constructor; libzt_textrel.so has a text relocation.
# libzt_cxx_plugin.so: a C++ plugin that tests/api/cxx_late (a C program) dlopens.
TEST_PLUGINS  := $(addprefix $(BUILD)/tests/api/,libzt_deepbind.so libzt_deepbind_now.so \
                   libzt_myalloc.so libzt_shared.so libzt_deepbind_own.so libzt_deepbind_p2.so \
                   libzt_deepbind_outer.so libzt_textrel.so libzt_cxx_plugin.so libzt_deepbind_undef.so)
$(BUILD)/tests/api/libzt_cxx_plugin.so: tests/api/lib/zt_cxx_plugin.cpp | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) -O1 -g -fPIC -shared $< -o $@
$(BUILD)/tests/api/libzt_deepbind.so: tests/api/lib/zt_deepbind_lib.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@
$(BUILD)/tests/api/libzt_deepbind_now.so: tests/api/lib/zt_deepbind_lib.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -fno-plt -shared -Wl,-z,now -Wl,-z,relro $< -o $@
$(BUILD)/tests/api/libzt_myalloc.so: tests/api/lib/zt_myalloc.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@
$(BUILD)/tests/api/libzt_deepbind_undef.so: tests/api/lib/zt_deepbind_lib.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared -DZT_UNDEF $< -o $@
$(BUILD)/tests/api/libzt_shared.so: tests/api/lib/zt_shared.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@
$(BUILD)/tests/api/libzt_deepbind_own.so: tests/api/lib/zt_deepbind_lib.c $(BUILD)/tests/api/libzt_myalloc.so $(BUILD)/tests/api/libzt_shared.so
	$(CC) -O1 -g -fPIC -shared $< -o $@ -L$(BUILD)/tests/api -Wl,--no-as-needed -lzt_myalloc -lzt_shared -Wl,-rpath,'$$ORIGIN'
$(BUILD)/tests/api/libzt_deepbind_p2.so: tests/api/lib/zt_deepbind_lib.c $(BUILD)/tests/api/libzt_shared.so
	$(CC) -O1 -g -fPIC -shared $< -o $@ -L$(BUILD)/tests/api -Wl,--no-as-needed -lzt_shared -Wl,-rpath,'$$ORIGIN'
$(BUILD)/tests/api/libzt_deepbind_outer.so: tests/api/lib/zt_deepbind_outer.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@ -ldl
$(BUILD)/tests/api/libzt_textrel.so: tests/api/lib/zt_textrel.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@ -Wl,-z,notext
$(BUILD)/tests/api/deepbind $(BUILD)/tests/api/deepbind.static: TEST_LDFLAGS := -Wl,-rpath,'$$ORIGIN'

.PHONY: test test-unit test-build test-plugins
test-plugins: $(TEST_PLUGINS)   # (also for tests/cross/run.sh)
# driven by tests/tier/run.sh
TIER_TEST     := $(BUILD)/tests/tier/tier_test $(BUILD)/tests/tier/tier_test.static $(if $(LIBC_A),$(BUILD)/tests/tier/tier_test.fullstatic)
# driven by tests/prof/run.sh (the heap profiler library: built here whether `all` found libunwind or not)
PROF_TEST     := $(PROF_SO) $(BUILD)/tests/prof/prof_sites $(BUILD)/tests/prof/prof_stress $(BUILD)/tests/prof/prof_edge \
                 $(BUILD)/tests/prof/prof_nopie $(BUILD)/tests/prof/prof_deepbind $(BUILD)/tests/prof/prof_fds $(BUILD)/tests/prof/prof_fds_race \
                 $(BUILD)/tests/prof/prof_fds_early $(BUILD)/tests/prof/prof_mainexit $(BUILD)/tests/prof/prof_dumpfd $(BUILD)/tests/prof/libzt_prof_plugin.so $(BUILD)/tests/api/wrap_lock
# a program not position-independent (tests/prof/prof_nopie.c)
$(BUILD)/tests/prof/prof_nopie: TEST_CFLAGS += -fno-pie
$(BUILD)/tests/prof/prof_nopie: TEST_LDFLAGS := -no-pie
$(BUILD)/tests/prof/libzt_prof_plugin.so: tests/prof/prof_plugin.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@
# prof_fds with a library that has libunwind set up before the profiler (tests/prof/prof_fds.c)
$(BUILD)/tests/prof/libzt_prof_early.so: tests/prof/prof_early_lib.c | $(BUILD)/tests
	@mkdir -p $(dir $@)
	$(CC) -O1 -g -fPIC -shared $< -o $@ -lunwind
$(BUILD)/tests/prof/prof_fds_early: tests/prof/prof_fds.c $(BUILD)/tests/prof/libzt_prof_early.so | $(BUILD)/tests
	$(CC) $(TEST_CFLAGS) -DPROF_EARLY $< -o $@ -L$(BUILD)/tests/prof -Wl,--no-as-needed -lzt_prof_early -Wl,-rpath,'$$ORIGIN'
test-build: all $(UNIT_BIN) $(PROG_DYN) $(PROG_STATIC) $(PROG_FULL) $(TIER_TEST) $(TEST_PLUGINS) $(PROF_TEST)
test: deps-test
	@$(MAKE) --no-print-directory -j$$(nproc) test-build
	@tests/run.sh
test-unit: $(UNIT_BIN)
	$(UNIT_BIN)
