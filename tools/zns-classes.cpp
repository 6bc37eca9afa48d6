// Prints the size-class table: block size, pages per slab, blocks per slab, the slab's unused tail,
// and the worst-case waste (the smallest request of the class, rounded up to the block, plus tail).
#include <cstdio>
#include "core/size_class.h"

int main() {
  using namespace zns;
  std::printf("%5s %6s %5s %6s %8s %10s %10s\n", "class", "size", "pages", "blocks", "tail_B",
              "worst_req", "worst_waste%");
  double worst_all = 0;
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassInfo &i = class_info(c);
    unsigned smallest = c == 0 ? 1 : class_info(c - 1).size + 1;
    unsigned span = i.pages * kPageSize, tail = span - i.blocks * i.size;
    // bytes the slab spends per requested byte when every block holds the smallest request
    double waste = 100.0 * (double(span) - double(i.blocks) * smallest) / span;
    if (c > 0 && waste > worst_all) worst_all = waste;
    std::printf("%5u %6u %5u %6u %8u %10u %9.1f%%\n", c, i.size, i.pages, i.blocks, tail, smallest,
                waste);
  }
  std::printf("classes: %u; worst-case waste above 16 B: %.1f%% (requests of 0..8 B get the 8 B class, 9..16 B the 16 B one)\n",
              kNumClasses, worst_all);
  return 0;
}
