// Size classes: the constexpr table holds the promises the allocator relies on.
#include <doctest/doctest.h>

#include "core/size_class.h"

using namespace zns;

TEST_CASE("every request size maps to the smallest class that holds it") {
  for (size_t n = 0; n <= kMaxSmall; ++n) {
    unsigned c = class_of(n);
    REQUIRE(c < kNumClasses);
    CHECK(class_info(c).size >= n);
    if (c > 0 && n > 0) CHECK(class_info(c - 1).size < n);
  }
}

TEST_CASE("rounding is fine-grained") {
  CHECK(class_info(class_of(100)).size == 112);   // a 100-byte request does not cost 128
  CHECK(class_info(class_of(0)).size == 8);       // malloc(0) gets a real block
  CHECK(class_info(class_of(8)).size == 8);
  CHECK(class_info(class_of(9)).size == 16);
  CHECK(class_info(class_of(4096)).size == 4096);
  // above 16 bytes a request never wastes more than half its block, and from 64 bytes up at most
  // 1/8 of its block plus 16 bytes
  for (size_t n = 17; n <= kMaxSmall; ++n) {
    size_t s = class_info(class_of(n)).size;
    CHECK(s - n < s / 2);
    if (n >= 64) CHECK(s - n <= s / 8 + 16);
  }
}

TEST_CASE("slab geometry: blocks fit, 16-byte alignment (8 at 8 B), bounded tail") {
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassInfo &i = class_info(c);
    CHECK(i.size % (i.size >= 16 ? 16 : 8) == 0);
    CHECK(i.blocks * i.size <= i.pages * kPageSize);
    CHECK((i.blocks + 1) * i.size > i.pages * kPageSize);       // no room for one more
    CHECK(i.blocks <= kMaxBlocks);
    if (i.blocks > 1) CHECK(i.pages * kPageSize - i.blocks * i.size <= i.pages * kPageSize / 8);
    CHECK(i.blocks >= kMinBlocks);
  }
  // No in-slab header: a slab's pages are all blocks, and every slab fills (nearly) its whole group,
  // the small classes too (their bitmaps are pool records: 8 B blocks take 256 words).
  CHECK(class_info(class_of(8)).blocks == 16384);   // 256 words
  CHECK(class_info(class_of(16)).blocks == 8192);
  CHECK(class_info(class_of(16)).pages == 32);
  CHECK(class_info(class_of(32)).blocks == 4096);
  CHECK(class_info(class_of(64)).blocks == 2048);
  CHECK(class_info(class_of(128)).blocks == 1024);
  CHECK(class_info(class_of(4096)).pages == 32);   // 32 blocks: a refill every 8 or so in a churn
  CHECK(class_info(class_of(4096)).blocks == 32);
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassInfo &i = class_info(c);
    INFO("class ", c, " (", i.size, " B)");
    CHECK(2 * i.pages > kGroupPages);   // a slab uses most of its group: a dense heap (DESIGN "Slab groups")
    // Resident metadata per byte of blocks: the line (and record) of a slab over its blocks.
    double meta = double(slab_meta_bytes(i.blocks)) / (double(i.blocks) * i.size);
    CHECK(meta <= (i.size == 8 ? 0.0167 : i.size == 16 ? 0.0088 : 0.005));
    CHECK(bitmap_words(i.blocks) <= kMaxBitmapWords);
  }
}

TEST_CASE("division by multiplication is exact across every slab") {
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassInfo &i = class_info(c);
    for (uint64_t off = 0; off < uint64_t(i.pages) * kPageSize; ++off)
      REQUIRE(((off * i.magic) >> 32) == off / i.size);
  }
}

TEST_CASE("a block start is told by one compare: the low half of offset * magic is below magic") {
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassInfo &i = class_info(c);
    for (uint32_t off = 0; off < i.pages * kPageSize; ++off)
      REQUIRE(is_block_start(off, i.magic) == (off % i.size == 0));
  }
}
