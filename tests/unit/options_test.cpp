// zns-slab.env and the options table (core/options.def) must agree, name for name, default for
// default, description for description.
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <string>

#include "core/options.h"

using namespace zns;

TEST_CASE("zns-slab.env lists exactly the options table, with its defaults and descriptions") {
  std::ifstream f("zns-slab.env");
  REQUIRE_MESSAGE(f.good(), "run from the repository root: zns-slab.env not found");
  std::map<std::string, std::string> value, doc;
  std::string line, last_comment;
  while (std::getline(f, line)) {
    if (line.rfind("# ", 0) == 0) { last_comment = line.substr(2); continue; }
    if (line.empty() || line[0] == '#') continue;
    auto eq = line.find('=');
    REQUIRE_MESSAGE(eq != std::string::npos, "not KEY=VALUE: " << line);
    std::string key = line.substr(0, eq);
    value[key] = line.substr(eq + 1);
    doc[key] = last_comment;
  }
  CHECK(value.size() == kNumOptions);
  for (unsigned i = 0; i < kNumOptions; ++i) {
    const OptionDoc &o = kOptionDocs[i];
    std::string def = o.def;
    if (def.size() >= 2 && def.front() == '"') def = def.substr(1, def.size() - 2);
    INFO("option " << o.name);
    REQUIRE(value.count(o.name) == 1);
    CHECK(value[o.name] == def);
    CHECK(doc[o.name] == o.doc);
  }
}

TEST_CASE("options are parsed from the environment; bad values keep the default") {
  setenv("ZNS_DECAY_MS", "250", 1);
  setenv("ZNS_DIRTY_MAX_KB", "12x", 1);
  options_load(false);
  CHECK(g_options.ZNS_DECAY_MS == 250);
  CHECK(g_options.ZNS_DIRTY_MAX_KB == 8192);
  unsetenv("ZNS_DECAY_MS");
  unsetenv("ZNS_DIRTY_MAX_KB");
  options_load(false);
  CHECK(g_options.ZNS_DECAY_MS == 1000);
}

// Every NUM option has a range in options_load: a number past 2^64 reads as 2^64 - 1 and must come
// out at the range's top, never as itself (until 2026-12-06 it kept the default with a "bad
// value" line, and ZNS_SECURE=2, ZNS_NUMA_NODES=1000 or a cold window of 10^19 ms passed silently).
TEST_CASE("every NUM option is held to a range; a number too large for 64 bits is its top") {
  const char *huge = "99999999999999999999999";
#define ZNS_OPTION_NUM(name) setenv(#name, huge, 1);
#define ZNS_OPTION_STR(name)
#define ZNS_OPTION_SIZE(name)
#define ZNS_OPTION(kind, name, def, doc) ZNS_OPTION_##kind(name)
#include "core/options.def"
#undef ZNS_OPTION_NUM
  options_load(false);
#define ZNS_OPTION_NUM(name)                                      \
  CHECK_MESSAGE(g_options.name <= (uint64_t(1) << 32), #name " = " << g_options.name); \
  CHECK_MESSAGE(g_options.name > 0, #name " = 0");                \
  unsetenv(#name);
#include "core/options.def"
#undef ZNS_OPTION
#undef ZNS_OPTION_NUM
#undef ZNS_OPTION_STR
#undef ZNS_OPTION_SIZE
  CHECK(g_options.ZNS_SECURE == 1);
  CHECK(g_options.ZNS_REGION_GB == 4096);
  setenv("ZNS_NUMA_NODES", "1000", 1);
  options_load(false);
  CHECK(g_options.ZNS_NUMA_NODES == 64);
  unsetenv("ZNS_NUMA_NODES");
  options_load(false);
  CHECK(g_options.ZNS_SECURE == 0);
}

// A profile every n ms is a file every n ms: ZNS_PROF_INTERVAL_MS=1 would write a thousand a
// second.  0 stays off; 1..9 come out at the floor; more stays as it is.
TEST_CASE("ZNS_PROF_INTERVAL_MS is off or at least 10 ms") {
  for (const auto &c : {std::pair<const char *, uint64_t>{"0", 0}, {"1", kMinProfIntervalMs},
                         {"9", kMinProfIntervalMs}, {"10", 10}, {"2500", 2500}}) {
    const char *v = c.first;   // (not a structured binding: clang's CAPTURE cannot take one)
    CAPTURE(v);
    setenv("ZNS_PROF_INTERVAL_MS", v, 1);
    options_load(false);
    CHECK(g_options.ZNS_PROF_INTERVAL_MS == c.second);
  }
  unsetenv("ZNS_PROF_INTERVAL_MS");
  options_load(false);
  CHECK(g_options.ZNS_PROF_INTERVAL_MS == 0);
}

// The switches take words (ZNS_SECURE=yes read as a bad value, so the default: hardened mode off),
// and other numbers do not.
TEST_CASE("a switch takes on/yes/true and off/no/false; a number option does not") {
  for (const char *on : {"on", "YES", "True", "1"}) {
    setenv("ZNS_SECURE", on, 1);
    setenv("ZNS_POPULATE", "off", 1);
    options_load(false);
    INFO("ZNS_SECURE=" << on);
    CHECK(g_options.ZNS_SECURE == 1);
    CHECK(g_options.ZNS_POPULATE == 0);
  }
  for (const char *bad : {"maybe", "yess", "o", ""}) {
    setenv("ZNS_SECURE", bad, 1);
    options_load(false);
    INFO("ZNS_SECURE=" << bad);
    CHECK(g_options.ZNS_SECURE == 0);
  }
  setenv("ZNS_DECAY_MS", "on", 1);
  options_load(false);
  CHECK(g_options.ZNS_DECAY_MS == 1000);
  unsetenv("ZNS_SECURE");
  unsetenv("ZNS_POPULATE");
  unsetenv("ZNS_DECAY_MS");
  options_load(false);
}

// ZNS_STATS=on (or yes, true, stdout) made a file of that name in the working directory.
TEST_CASE("ZNS_STATS takes the switch words and stdout; a path stays a path") {
  const struct { const char *v, *want; } cases[] = {
      {"on", "1"}, {"Yes", "1"}, {"TRUE", "1"}, {"1", "1"}, {"off", "0"}, {"no", "0"}, {"False", "0"},
      {"stdout", "/dev/stdout"}, {"STDERR", "stderr"}, {"/dev/stderr", "stderr"}, {"./on", "./on"}, {"on.txt", "on.txt"}, {"/tmp/s.json", "/tmp/s.json"}};
  for (auto c : cases) {
    setenv("ZNS_STATS", c.v, 1);
    options_load(false);
    INFO("ZNS_STATS=" << c.v);
    CHECK(std::string(g_options.ZNS_STATS) == c.want);
  }
  unsetenv("ZNS_STATS");
  options_load(false);
  CHECK(std::string(g_options.ZNS_STATS).empty());
}

// execve may pass a name twice; getenv (the program, `env`) sees the first entry, and so must the
// library (it took the last that parsed: ZNS_REGION_GB=8 then =abc said "bad value" and used 8;
// an empty second string reset the first).
TEST_CASE("an option named twice: the first entry is used") {
  extern char **environ;
  char **saved = environ;
  char e1[] = "ZNS_REGION_GB=8", e2[] = "ZNS_REGION_GB=16", e3[] = "ZNS_TIER=madvise", e4[] = "ZNS_TIER=",
       e5[] = "ZNS_DECAY_MS=abc", e6[] = "ZNS_DECAY_MS=300";
  char *env[] = {e1, e2, e3, e4, e5, e6, nullptr};
  environ = env;
  options_load(false);
  environ = saved;
  CHECK(g_options.ZNS_REGION_GB == 8);
  CHECK(std::string(g_options.ZNS_TIER) == "madvise");
  CHECK(g_options.ZNS_DECAY_MS == 1000);   // the first is bad: the default, as getenv's value says
  options_load(false);
}
