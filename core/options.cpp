#include "core/options.h"

#include "core/platform.h"
#include "core/stats.h"   // kMaxNodes

#include <sys/auxv.h>

extern char **environ;

namespace zns {

Options g_options;

#define ZNS_STR2(x) #x
#define ZNS_STR(x) ZNS_STR2(x)
const OptionDoc kOptionDocs[] = {
#define ZNS_OPTION(kind, name, def, doc) {#name, ZNS_STR(def), doc},
#include "core/options.def"
#undef ZNS_OPTION
};
const unsigned kNumOptions = sizeof(kOptionDocs) / sizeof(kOptionDocs[0]);

namespace {

// "NAME=value": the value when the entry names `name`, else nullptr.
const char *match(const char *entry, const char *name) {
  while (*name && *entry == *name) { ++entry; ++name; }
  return (*name == 0 && *entry == '=') ? entry + 1 : nullptr;
}

void warn_line(const char *what, const char *entry, const char *tail) {
  char mem[256];
  Buf b(mem, sizeof mem);
  b.str("zns-slab: ").str(what).str(entry).str(tail).end_line();
  b.say();
}

// A value out of its range becomes the nearest bound, and says so (naming the value as given:
// `text`, or null when it was not set).
void clamp(uint64_t *v, uint64_t lo, uint64_t hi, const char *name, const char *text, bool warn) {
  if (*v >= lo && *v <= hi) return;
  uint64_t c = *v < lo ? lo : hi;
  if (warn) {
    char mem[256];
    Buf b(mem, sizeof mem);
    b.str("zns-slab: ").str(name).chr('=');
    if (text) b.str(text); else b.u64(*v);
    b.str(" is out of range (").u64(lo).str("..").u64(hi).str("), using ").u64(c).end_line();
    b.say();
  }
  *v = c;
}

// String values are copied: programs may overwrite their environment (redis rewrites it for its
// process title), and the options must outlive that.
constexpr size_t kMaxString = 512;
const char *copy_string(char *dst, const char *v) {
  size_t n = 0;
  while (v[n]) if (++n >= kMaxString) return nullptr;
  for (size_t i = 0; i <= n; ++i) dst[i] = v[i];
  return dst;
}

// Variables of the project's tools and tests, not of the library: no warning for these.
bool is_tool_variable(const char *entry) {
  static const char *const kTools[] = {"ZNS_LIB=", "ZNS_EXPECT=", "ZNS_COMPARE_"};
  for (const char *t : kTools) {
    const char *e = entry;
    while (*t && *e == *t) { ++e; ++t; }
    if (!*t) return true;
  }
  return false;
}

// Decimal digits only; a number past 2^64 - 1 reads as 2^64 - 1 (every NUM option has a range,
// so it then becomes the range's top, with a line).
bool parse_num(const char *v, uint64_t *out) {
  if (*v == 0) return false;
  uint64_t x = 0;
  for (; *v; ++v) {
    if (*v < '0' || *v > '9') return false;
    unsigned d = unsigned(*v - '0');
    x = x > (~uint64_t(0) - d) / 10 ? ~uint64_t(0) : x * 10 + d;
  }
  *out = x;
  return true;
}

// The switches (range 0..1) also take a word: on, yes, true / off, no, false (any case).
// ZNS_SECURE=yes was a bad value, and so the default: hardened mode off.
bool is_switch(const char *name) {
  static const char *const kSwitches[] = {"ZNS_PROCESS_MADVISE", "ZNS_POPULATE", "ZNS_NUMA", "ZNS_SECURE"};
  for (const char *n : kSwitches)
    if (!__builtin_strcmp(n, name)) return true;
  return false;
}
bool same_word(const char *v, const char *word) {   // word: lower case
  for (; *word; ++v, ++word)
    if ((*v >= 'A' && *v <= 'Z' ? *v - 'A' + 'a' : *v) != *word) return false;
  return *v == 0;
}
bool parse_switch(const char *v, uint64_t *out) {
  for (const char *w : {"on", "yes", "true"})
    if (same_word(v, w)) return *out = 1, true;
  for (const char *w : {"off", "no", "false"})
    if (same_word(v, w)) return *out = 0, true;
  return false;
}

const char *def_text(const char *name) {   // an option's default, as options.def writes it
  for (unsigned i = 0; i < kNumOptions; ++i)
    if (!__builtin_strcmp(kOptionDocs[i].name, name)) return kOptionDocs[i].def;
  return "";
}

// One line for a value that cannot be read: what was given, what is expected, what is used.
void warn_bad(const char *entry, const char *expected, const char *def) {
  char mem[700];
  Buf b(mem, sizeof mem);
  b.str("zns-slab: bad value ").str(entry).str(" (expected ").str(expected).str("): using the default, ")
      .str(*def ? def : "empty").end_line();
  b.say();
}

bool parse_size(const char *v, uint64_t *out) {   // 123, 64K, 512M, 2G (binary units)
  char digits[32];
  size_t n = 0;
  while (v[n] >= '0' && v[n] <= '9' && n < sizeof digits - 1) { digits[n] = v[n]; ++n; }
  digits[n] = 0;
  unsigned shift = 0;
  const char *rest = v + n;
  if (*rest == 'K' || *rest == 'k') shift = 10;
  else if (*rest == 'M' || *rest == 'm') shift = 20;
  else if (*rest == 'G' || *rest == 'g') shift = 30;
  if (shift) ++rest;
  uint64_t x;
  if (*rest != 0 || !parse_num(digits, &x) || (shift && x > (~uint64_t(0) >> shift))) return false;
  *out = x << shift;
  return true;
}

}  // namespace

void options_load(bool warn) {
  if (!environ) return;
  Options o;
  // A setuid or setgid program (or one with file capabilities) runs with its caller's
  // environment: ZNS_STATS or ZNS_TIER_DIR would let any user make it write files where it
  // may.  As glibc does with MALLOC_*, the variables are ignored there (the defaults hold).
  if (getauxval(AT_SECURE)) {
    for (char **e = environ; *e && warn; ++e)
      if ((*e)[0] == 'Z' && (*e)[1] == 'N' && (*e)[2] == 'S' && (*e)[3] == '_' && !is_tool_variable(*e)) {
        warn_line("a setuid/setgid program (AT_SECURE): ZNS_* variables ignored, e.g. ", *e, "");
        break;
      }
    g_options = o;
    return;
  }
  // The text of each NUM option as given (for the range's line), or null.
#define ZNS_OPTION(kind, name, def, doc) [[maybe_unused]] const char *text_##name = nullptr;
#include "core/options.def"
#undef ZNS_OPTION
  // An option named twice in the environment (execve allows it): the first entry is the one
  // getenv, the program and `env` see, so it is the one used; the others are said and ignored.
#define ZNS_OPTION(kind, name, def, doc) bool seen_##name = false;
#include "core/options.def"
#undef ZNS_OPTION
  for (char **e = environ; *e; ++e) {
    const char *entry = *e;
    if (entry[0] != 'Z' || entry[1] != 'N' || entry[2] != 'S' || entry[3] != '_') continue;
    bool known = false;
    const char *v;
#define ZNS_OPTION_SEEN(name)                                                                  \
    known = true;                                                                              \
    if (seen_##name) {                                                                         \
      if (warn) warn_line("named twice in the environment, the first value is used; ignored: ", entry, ""); \
      continue;                                                                                \
    }                                                                                          \
    seen_##name = true;
#define ZNS_OPTION_NUM(name)                                                                   \
  if ((v = match(entry, #name))) {                                                             \
    ZNS_OPTION_SEEN(name)                                                                      \
    uint64_t x;                                                                                \
    if (!*v) {                                       /* empty: the default, as unset */        \
    } else if (parse_num(v, &x) || (is_switch(#name) && parse_switch(v, &x))) o.name = x, text_##name = v; \
    else if (warn) warn_bad(entry, is_switch(#name) ? "0 or 1, on or off" : "a decimal number", def_text(#name)); \
  }
#define ZNS_OPTION_SIZE(name)                                                                  \
  if ((v = match(entry, #name))) {                                                             \
    ZNS_OPTION_SEEN(name)                                                                      \
    uint64_t x;                                                                                \
    if (!*v) {                                       /* empty: the default, as unset */        \
    } else if (parse_size(v, &x)) o.name = x;                                                  \
    else if (warn) warn_bad(entry, "bytes: a number with an optional K, M or G", def_text(#name)); \
  }
#define ZNS_OPTION_STR(name)                                                                   \
  if ((v = match(entry, #name))) {                                                             \
    ZNS_OPTION_SEEN(name)                                                                      \
    static char copy_##name[kMaxString];                                                       \
    o.name = copy_string(copy_##name, v);                                                      \
    if (!o.name && warn) warn_line("value too long, using the default: ", entry, "");          \
    if (!o.name || !*o.name) o.name = Options{}.name;   /* (empty: the default, as unset) */   \
  }
#define ZNS_OPTION(kind, name, def, doc) ZNS_OPTION_##kind(name)
#include "core/options.def"
#undef ZNS_OPTION
#undef ZNS_OPTION_NUM
#undef ZNS_OPTION_STR
#undef ZNS_OPTION_SIZE
#undef ZNS_OPTION_SEEN
    if (!known && warn && !is_tool_variable(entry)) warn_line("unknown variable ignored: ", entry, "");
  }
  // Every NUM option's range (tests/unit/options_test.cpp "every NUM option is held to a range"
  // holds this list to options.def).  Times are kept in 32-bit milliseconds: about 24 days at most.
#define ZNS_RANGE(name, lo, hi) clamp(&o.name, lo, hi, #name, text_##name, warn)
  ZNS_RANGE(ZNS_STATS_INTERVAL_MS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_REGION_GB, 1, 4096);
  ZNS_RANGE(ZNS_DECAY_MS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_DIRTY_MAX_KB, 0, uint64_t(1) << 32);   // 4 TiB
  ZNS_RANGE(ZNS_DIRTY_PERCENT, 0, 100);
  ZNS_RANGE(ZNS_PROCESS_MADVISE, 0, 1);
  ZNS_RANGE(ZNS_POPULATE, 0, 1);
  ZNS_RANGE(ZNS_NUMA, 0, 1);
  ZNS_RANGE(ZNS_NUMA_NODES, 0, kMaxNodes);
  ZNS_RANGE(ZNS_TIER_COLD_MS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_TIER_MAX_RETURNS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_TIER_SCAN_MS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_TIER_CHILD_MS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_PROF_INTERVAL_MS, 0, 0x7fffffff);
  ZNS_RANGE(ZNS_SECURE, 0, 1);
#undef ZNS_RANGE
  // A profile every n ms is a file every n ms (PATH.1, PATH.2, ...), and a dump takes a few ms:
  // 0 is off, and anything else at least kMinProfIntervalMs (ZNS_PROF_INTERVAL_MS=1 would write a
  // thousand files a second).
  if (o.ZNS_PROF_INTERVAL_MS != 0 && o.ZNS_PROF_INTERVAL_MS < kMinProfIntervalMs) {
    if (warn) {
      char mem[256];
      Buf b(mem, sizeof mem);
      b.str("zns-slab: ZNS_PROF_INTERVAL_MS=").u64(o.ZNS_PROF_INTERVAL_MS).str(" is below ").u64(kMinProfIntervalMs)
          .str(" (a profile file each time; 0 is off), using ").u64(kMinProfIntervalMs).end_line();
      b.say();
    }
    o.ZNS_PROF_INTERVAL_MS = kMinProfIntervalMs;
  }
  // ZNS_STATS takes a switch's words as well (on, yes, true: the table on stderr, as 1; off, no,
  // false: none, as 0) and stdout (the program's, as /dev/stdout): each made a file of its name
  // in the working directory, which nobody looked for.  (A file of such a name: ./on.)
  uint64_t word;
  if (parse_switch(o.ZNS_STATS, &word)) o.ZNS_STATS = word ? "1" : "0";
  else if (same_word(o.ZNS_STATS, "stdout")) o.ZNS_STATS = "/dev/stdout";
  else if (same_word(o.ZNS_STATS, "stderr") || !__builtin_strcmp(o.ZNS_STATS, "/dev/stderr"))
    o.ZNS_STATS = "stderr";   // (the table then reaches the copy of fd 2 kept at start, once the
                              // program has closed it: /dev/stderr was a link to nothing then)
  if (warn && o.ZNS_STATS_INTERVAL_MS) {
    const char *d = o.ZNS_STATS;
    size_t n = __builtin_strlen(d);
    if (n < 6 || !same_word(d + n - 6, ".jsonl"))
      warn_line("ZNS_STATS_INTERVAL_MS is ignored: it needs ZNS_STATS=PATH.jsonl, not ZNS_STATS=", d, "");
  }
  g_options = o;
}

}  // namespace zns
