// The unit tests check the heap in its default configuration (each test sets the options it
// needs), so ZNS_* variables of the caller's environment go before any test runs: with
// ZNS_NUMA_NODES=3 exported, a test that needs the depot to hand a slab back to the same thread
// got another node's (a helper's run of the whole suite, 2026-12-05).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdlib>
#include <string>
#include <vector>
#include <unistd.h>

int main(int argc, char **argv) {
  std::vector<std::string> names;
  for (char **e = environ; *e; ++e) {   // (names first: unsetenv changes environ)
    std::string entry = *e;
    if (entry.rfind("ZNS_", 0) == 0) names.push_back(entry.substr(0, entry.find('=')));
  }
  for (const std::string &n : names) unsetenv(n.c_str());
  doctest::Context context(argc, argv);
  return context.run();
}
