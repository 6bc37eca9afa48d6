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
