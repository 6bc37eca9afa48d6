// Size classes: the map from a request size (0..4096) to a block size, and the slab geometry of
// each class.  Everything here is constexpr and checked at compile time; tools/zns-classes prints
// the table with objects per slab and worst-case waste.
//
// Glossary
//   class    index 0..kNumClasses-1; block size grows with the index
//   slab     a span of 1..kMaxSlabPages contiguous 4 KiB pages that holds blocks of one class
//   pages    pages per slab, chosen per class to minimise the unused tail of the slab
//   blocks   blocks per slab = pages * 4096 / size
#pragma once
#include <cstddef>
#include <cstdint>

namespace zns {

inline constexpr size_t kPageSize = 4096;
inline constexpr size_t kPageShift = 12;
inline constexpr size_t kMaxSmall = 4096;       // largest request served from slabs
inline constexpr unsigned kMaxSlabPages = 32;    // slabs span at most this many pages (one group)
inline constexpr unsigned kMinBlocks = 32;       // slabs hold at least this many blocks
inline constexpr unsigned kMaxBlocks = 16384;    // 131072 / 8: a group of 8 B blocks
inline constexpr unsigned kMaxBitmapWords = kMaxBlocks / 64;
// A slab's free bitmap is in its SlabMeta line when it has at most kInlineWords words (448 B and the
// classes from 512 B); longer ones are records in the bitmap pool of their class (heap.h, "Bitmaps").
inline constexpr unsigned kInlineWords = 3;
constexpr unsigned bitmap_words(unsigned blocks) { return (blocks + 63) / 64; }

// Block sizes: 8, then 16-byte steps to 256, then eight classes per doubling.  Every size from 16 is
// a multiple of 16, so every block of 16 B or more is 16-byte aligned (slabs start on a page
// boundary); 8 B blocks are 8-byte aligned, as any object of 8 bytes or less needs (what jemalloc,
// tcmalloc and mimalloc return too; glibc gives 16).
inline constexpr uint16_t kClassSize[] = {
    8,    16,   32,   48,   64,   80,   96,   112,  128,  144,  160,  176,  192,  208,  224,  240,  256,
    288,  320,  352,  384,  416,  448,  480,  512,  576,  640,  704,  768,  832,  896,  960,  1024,
    1152, 1280, 1408, 1536, 1664, 1792, 1920, 2048, 2304, 2560, 2816, 3072, 3328, 3584, 3840, 4096,
};
inline constexpr unsigned kNumClasses = sizeof(kClassSize) / sizeof(kClassSize[0]);

// Every slab sits at the start of its own aligned group of kGroupPages pages (128 KiB), so the slab
// of a pointer is (p - base) >> 17 and its metadata is one entry per group (DESIGN "Slab groups").
// A slab uses the first `pages` pages of its group; the rest of the group is address space only.
inline constexpr unsigned kGroupPages = 32;
inline constexpr unsigned kGroupShift = 17;                  // log2(kGroupPages * kPageSize)
// Resident metadata of a slab of `blocks` blocks: its SlabMeta line, and its bitmap record when the
// bitmap does not fit in the line (the RemoteState line and record are written only where remote
// frees come).  Priced as before the line's padding and the records' rounding (heap.h kMetaStride,
// kRecordAlign, 2026-12-07 late): pricing them would move about 20 classes' spans, not decided.
constexpr unsigned slab_meta_bytes(unsigned blocks) {
  return 64 + (bitmap_words(blocks) > kInlineWords ? bitmap_words(blocks) * 8 : 0);
}
static_assert(kGroupPages * kPageSize == size_t(1) << kGroupShift);
static_assert(kMaxSlabPages == kGroupPages, "a slab spans at most its group");

// Pages per slab: the span of at least kMinBlocks blocks within one group that spends the fewest
// bytes (unused tail plus the slab's metadata) per byte of blocks.  The metadata line is per slab,
// so a longer span amortises it: every class takes 21 to 32 of its group's 32 pages, the longest
// span its blocks fill exactly (tools/zns-classes prints the table).
constexpr unsigned slab_pages_for(unsigned size) {
  unsigned best = 0;
  uint64_t best_cost = 0, best_payload = 1;
  for (unsigned p = 1; p <= kGroupPages; ++p) {
    uint64_t span = uint64_t(p) * kPageSize, blocks = span / size;
    if (blocks < kMinBlocks && p < kGroupPages) continue;
    if (blocks > kMaxBlocks) break;
    uint64_t payload = blocks * size, cost = span - payload + slab_meta_bytes(unsigned(blocks));
    if (best == 0 || cost * best_payload < best_cost * payload) {   // cost / payload is lower
      best = p;
      best_cost = cost;
      best_payload = payload;
    }
  }
  return best;
}

struct ClassInfo {
  uint16_t size;      // block size in bytes
  uint8_t pages;      // pages per slab
  uint16_t blocks;    // blocks per slab
  uint32_t magic;     // ceil(2^32 / size): offset * magic >> 32 == offset / size for every offset
                      // in the slab (classes_valid checks each)
};

constexpr ClassInfo make_class_info(unsigned c) {
  unsigned size = kClassSize[c], pages = slab_pages_for(size);
  return ClassInfo{uint16_t(size), uint8_t(pages), uint16_t(pages * kPageSize / size),
                   uint32_t(((uint64_t(1) << 32) + size - 1) / size)};
}

struct ClassTable {
  ClassInfo info[kNumClasses];
  // n -> class, for every n up to kMaxSmall (4 KiB): malloc indexes it with the request itself.
  // A table by 8-byte granule ((n + 7) >> 3, 513 bytes) took two instructions more a malloc, and
  // the pairs ran 7-9% slower on the Intel VM (2.92 against 2.71 ns at 64 B, 3.13 against 2.91 at
  // 512 B, 7 interleaved micro rounds); batch/1000 2-4% faster with it (a layout effect: the same
  // loop, two instructions fewer) and churn the same within 1%, although its random sizes touch
  // 64 lines of this table where they touched 8 (cachegrind: 12% more D1 read misses).
  uint8_t by_size[kMaxSmall + 1];
};

constexpr ClassTable make_class_table() {
  ClassTable t{};
  for (unsigned c = 0; c < kNumClasses; ++c) t.info[c] = make_class_info(c);
  unsigned c = 0;
  for (unsigned n = 0; n <= kMaxSmall; ++n) {
    while (kClassSize[c] < n) ++c;
    t.by_size[n] = uint8_t(c);
  }
  return t;
}

inline constexpr ClassTable kClasses = make_class_table();

// The class for a request of n <= kMaxSmall bytes.
constexpr unsigned class_of(size_t n) { return kClasses.by_size[n]; }
inline const ClassInfo &class_info(unsigned c) { return kClasses.info[c]; }

// An offset in the slab is a block start iff the low half of offset * magic is below magic (one
// compare instead of a multiply back): for off = i * size, the low half is i * (size * magic -
// 2^32) < blocks * size <= 2^17 < magic; for off = i * size + r, 0 < r < size, it is that plus
// r * magic, at least magic and, since magic > 2^17 + size, below 2^32.  classes_valid() checks the
// bounds; tests/unit/size_class_test.cpp checks every offset of every class.
inline bool is_block_start(uint32_t off, uint32_t magic) { return uint32_t(uint64_t(off) * magic) < magic; }
// ---- compile-time checks ----------------------------------------------------------------------
constexpr bool classes_valid() {
  for (unsigned c = 0; c < kNumClasses; ++c) {
    const ClassInfo &i = kClasses.info[c];
    if (i.size % (i.size >= 16 ? 16 : 8) != 0) return false;          // alignment (see kClassSize)
    if (c > 0 && i.size <= kClasses.info[c - 1].size) return false;   // strictly increasing
    if (i.blocks == 0 || i.blocks > kMaxBlocks) return false;         // bitmap fits
    if (i.pages < 1 || i.pages > kMaxSlabPages) return false;
    // exact division by multiplication for every block offset in the slab
    for (uint64_t off = 0; off < uint64_t(i.pages) * kPageSize; off += 8)
      if (((off * i.magic) >> 32) != off / i.size) return false;
    // the bounds behind is_block_start (below): the slab's blocks span at most a group (2^17 bytes),
    // and magic exceeds that plus size
    if (uint64_t(i.blocks) * i.size > (uint64_t(1) << kGroupShift) ||
        uint64_t(i.magic) <= (uint64_t(1) << kGroupShift) + i.size)
      return false;
  }
  for (unsigned n = 0; n <= kMaxSmall; ++n) {
    unsigned c = kClasses.by_size[n];
    if (kClasses.info[c].size < n) return false;                        // big enough
    if (c > 0 && kClasses.info[c - 1].size >= n && n > 0) return false; // and the smallest such
  }
  return true;
}
static_assert(kClassSize[kNumClasses - 1] == kMaxSmall, "the last class is the largest small size");
static_assert(classes_valid(), "size class table is inconsistent");
static_assert(class_of(100) == 7 && kClassSize[7] == 112, "a 100-byte request costs 112, not 128");

}  // namespace zns
