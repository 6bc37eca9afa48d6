#include "core/options.h"

#include "core/platform.h"

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
  b.str("zns-slab: ").str(what).str(entry).str(tail).chr('\n');
  b.say();
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

bool parse_num(const char *v, uint64_t *out) {
  if (*v == 0) return false;
  uint64_t x = 0;
  for (; *v; ++v) {
    if (*v < '0' || *v > '9' || x > (~uint64_t(0)) / 10 - 10) return false;
    x = x * 10 + uint64_t(*v - '0');
  }
  *out = x;
  return true;
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
  for (char **e = environ; *e; ++e) {
    const char *entry = *e;
    if (entry[0] != 'Z' || entry[1] != 'N' || entry[2] != 'S' || entry[3] != '_') continue;
    bool known = false;
    const char *v;
#define ZNS_OPTION_NUM(name)                                                                   \
  if ((v = match(entry, #name))) {                                                             \
    known = true;                                                                              \
    uint64_t x;                                                                                \
    if (parse_num(v, &x)) o.name = x;                                                          \
    else if (warn) warn_line("bad value, using the default: ", entry, "");                     \
  }
#define ZNS_OPTION_SIZE(name)                                                                  \
  if ((v = match(entry, #name))) {                                                             \
    known = true;                                                                              \
    uint64_t x;                                                                                \
    if (parse_size(v, &x)) o.name = x;                                                         \
    else if (warn) warn_line("bad value, using the default: ", entry, "");                     \
  }
#define ZNS_OPTION_STR(name)                                                                   \
  if ((v = match(entry, #name))) {                                                             \
    known = true;                                                                              \
    static char copy_##name[kMaxString];                                                       \
    o.name = copy_string(copy_##name, v);                                                      \
    if (!o.name && warn) warn_line("value too long, using the default: ", entry, "");          \
    if (!o.name) o.name = Options{}.name;                                                      \
  }
#define ZNS_OPTION(kind, name, def, doc) ZNS_OPTION_##kind(name)
#include "core/options.def"
#undef ZNS_OPTION
#undef ZNS_OPTION_NUM
#undef ZNS_OPTION_STR
#undef ZNS_OPTION_SIZE
    if (!known && warn && !is_tool_variable(entry)) warn_line("unknown variable ignored: ", entry, "");
  }
  if (o.ZNS_REGION_GB < 1) o.ZNS_REGION_GB = 1;
  if (o.ZNS_REGION_GB > 4096) o.ZNS_REGION_GB = 4096;
  g_options = o;
}

}  // namespace zns
