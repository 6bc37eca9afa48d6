"""Check the statistics documents that libzns_slab.so writes at exit (ZNS_STATS=path.json).

Usage: check_stats.py --min-allocated N --min-files K --label L -- PATTERN...
Each PATTERN is a file name or a glob (ZNS_STATS "%p" paths expand to one file per process).
Hard failures (exit 1): fewer than K files; a file that is not JSON or lacks totals/classes;
totals.allocated <= N in any file; a size class above 4096 bytes; negative counters.
Oddities that depend on how the library counts (allocated - freed != live in a class, ...)
are printed as WARN lines but do not fail, so the test stays about the program, not the schema.
"""
import argparse
import glob
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--min-allocated", type=int, required=True)
    ap.add_argument("--min-files", type=int, default=1)
    ap.add_argument("--label", default="stats")
    ap.add_argument("patterns", nargs="+")
    a = ap.parse_args()

    files = []
    for p in a.patterns:
        hits = sorted(glob.glob(p)) or []
        files += [h for h in hits if h not in files]
    errs, warns = [], []
    if len(files) < a.min_files:
        errs.append(f"expected >= {a.min_files} stats file(s) matching {a.patterns}, found "
                    f"{len(files)}: the shim wrote no statistics (ZNS_STATS), so it was not loaded, "
                    f"did not serve the program, or does not implement ZNS_STATS yet")
    for f in files:
        try:
            with open(f) as fh:
                doc = json.load(fh)
        except Exception as e:  # noqa: BLE001 - report any parse problem
            errs.append(f"{f}: not a JSON document: {e}")
            continue
        t = doc.get("totals")
        classes = doc.get("classes")
        if not isinstance(t, dict) or not isinstance(classes, list):
            errs.append(f"{f}: missing 'totals' object or 'classes' list (keys: {sorted(doc)})")
            continue
        alloc = t.get("allocated")
        if not isinstance(alloc, int):
            errs.append(f"{f}: totals.allocated missing or not an integer: {alloc!r}")
            continue
        for k, v in t.items():
            if isinstance(v, (int, float)) and v < 0:
                errs.append(f"{f}: totals.{k} is negative ({v})")
        if alloc <= a.min_allocated:
            errs.append(f"{f}: totals.allocated = {alloc}, expected > {a.min_allocated}: "
                        f"the slab allocator served too few allocations")
        used = [c for c in classes if isinstance(c, dict) and c.get("allocated", 0) > 0]
        if not used:
            errs.append(f"{f}: no size class has allocated > 0")
        for c in classes:
            if not isinstance(c, dict):
                errs.append(f"{f}: class entry is not an object: {c!r}")
                continue
            s = c.get("size")
            if not isinstance(s, int) or s <= 0 or s > 4096:
                errs.append(f"{f}: class with size {s!r} (expected 1..4096)")
            for k in ("allocated", "freed", "live", "slabs", "live_bytes", "slab_bytes"):
                v = c.get(k)
                if isinstance(v, (int, float)) and v < 0:
                    errs.append(f"{f}: class {s}: {k} is negative ({v})")
            if all(isinstance(c.get(k), int) for k in ("allocated", "freed", "live")):
                if c["allocated"] - c["freed"] != c["live"]:
                    warns.append(f"{f}: class {s}: allocated {c['allocated']} - freed "
                                 f"{c['freed']} != live {c['live']}")
        led = ("live_bytes", "thread_cache_free_bytes", "depot_bytes", "metadata_bytes")
        if all(isinstance(t.get(k), int) for k in led + ("resident_bytes",)):
            lhs = sum(t[k] for k in led)
            if lhs != t["resident_bytes"]:
                warns.append(f"{f}: ledger: live+thread_cache_free+depot+metadata = {lhs} != "
                             f"resident_bytes {t['resident_bytes']}")
        csum = sum(c.get("allocated", 0) for c in classes if isinstance(c, dict))
        if csum > alloc:
            warns.append(f"{f}: sum of classes[].allocated ({csum}) > totals.allocated ({alloc})")
        top = sorted(used, key=lambda c: -c.get("allocated", 0))[:5]
        print(f"[{a.label}] {f}: allocated={alloc} freed={t.get('freed')} "
              f"live_bytes={t.get('live_bytes')} resident_bytes={t.get('resident_bytes')} "
              f"fallback_allocs={t.get('fallback_allocs')} threads_seen={t.get('threads_seen')} "
              f"rss_bytes={t.get('rss_bytes')} classes_used={len(used)} "
              f"top={[(c.get('size'), c.get('allocated')) for c in top]}")
    for w in warns[:20]:
        print(f"[{a.label}] WARN: {w}")
    if len(warns) > 20:
        print(f"[{a.label}] WARN: ... {len(warns) - 20} more")
    for e in errs:
        print(f"[{a.label}] FAIL: {e}", file=sys.stderr)
    return 1 if errs else 0


if __name__ == "__main__":
    sys.exit(main())
