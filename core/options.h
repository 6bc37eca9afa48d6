// Runtime options, read once from the environment (by walking environ: no getenv, no allocation).
#pragma once
#include <cstdint>

namespace zns {

struct Options {
#define ZNS_OPTION_NUM(name, def) uint64_t name = def;
#define ZNS_OPTION_STR(name, def) const char *name = def;
#define ZNS_OPTION_SIZE(name, def) uint64_t name = def;
#define ZNS_OPTION(kind, name, def, doc) ZNS_OPTION_##kind(name, def)
#include "core/options.def"
#undef ZNS_OPTION
#undef ZNS_OPTION_NUM
#undef ZNS_OPTION_STR
#undef ZNS_OPTION_SIZE
};

extern Options g_options;

// ZNS_PROF_INTERVAL_MS, when not 0 (off), is at least this (options_load says so and raises it).
inline constexpr uint64_t kMinProfIntervalMs = 10;

// Parse the environment into g_options.  warn = print one line per unknown ZNS_* variable and per
// bad value (the default is kept).  Safe to call before libc is fully up (environ may be null).
void options_load(bool warn);

struct OptionDoc {
  const char *name, *def, *doc;
};
// The table itself, for zns-slab.env and its test.
extern const OptionDoc kOptionDocs[];
extern const unsigned kNumOptions;

}  // namespace zns
