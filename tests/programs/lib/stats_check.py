"""Checks for tests/programs/stats.sh: the statistics ZNS-Slab writes for lib/stats_prog.c.

Usage (exit 0 = ok, 1 = a check failed; every failure is printed as "FAIL: ..."):
  stats_check.py doc FILE.json
      one document: the schema, allocated - freed == live per class, live_bytes == live * size,
      fill_pct, the totals against the class rows, the ledger, overhead_pct
  stats_check.py diff BASE.json DOC.json EXPECT.out
      DOC (checked as by `doc`; program run with N) against BASE (the same program with N=0): per class, `live` and
      `allocated` grow by exactly what the program printed in EXPECT.out (its stdout: "live_32 1000"
      ...), every other class is unchanged, fallback_allocs/fallback_bytes grow as printed
  stats_check.py text STDERR DOC.json EXPECT.out
      the ZNS_STATS=1 table (stderr of a run with the same N as DOC): names the classes of size
      32, 112 and 3072 with the counts of DOC, and says the ledger adds up
  stats_check.py jsonl FILE.jsonl BASE.json EXPECT.out MIN_LINES MIN_LAST_MS
      an interval dump: >= MIN_LINES lines, each a full document (as `doc`), one pid, time_ms
      increasing, the last line at >= MIN_LAST_MS with the live counts BASE + EXPECT
"""
import json
import re
import sys

CLASS_KEYS = ("class", "size", "allocated", "freed", "live", "slabs", "live_bytes", "slab_bytes",
              "fill_pct")
TOTAL_KEYS = ("allocated", "freed", "live_bytes", "resident_bytes", "slab_resident_bytes",
              "metadata_bytes", "overhead_pct", "thread_cache_free_bytes", "depot_bytes",
              "returned_bytes", "returned_total_bytes", "returned_calls", "returned_ranges", "decommitted_bytes", "decommit_calls", "fallback_allocs", "fallback_bytes",
              "threads_seen", "thread_caches", "region_bytes", "rss_bytes")
SIZES = (32, 112, 3072)   # the classes stats_prog leaves blocks in

errors = []


def fail(msg):
    errors.append(msg)


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def load(path):
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError) as e:
        print(f"FAIL: {path}: cannot read a JSON document: {e}")
        sys.exit(1)


def expect_of(path):
    """The program's stdout: "key value" lines, then "done"."""
    out = {}
    with open(path) as fh:
        lines = fh.read().split("\n")
    if "done" not in lines:
        print(f"FAIL: {path}: the program did not finish (no 'done' line)")
        sys.exit(1)
    for line in lines:
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def by_size(doc):
    return {c["size"]: c for c in doc["classes"]}


def check_doc(doc, where, consistency=True):
    """Everything one document must satisfy on its own (with consistency=False: only that it
    has the schema's fields, for a baseline checked on its own elsewhere).  Returns False if
    a check failed."""
    n0 = len(errors)
    if not isinstance(doc, dict):
        fail(f"{where}: not a JSON object")
        return False
    if doc.get("version") != 1:
        fail(f"{where}: version is {doc.get('version')!r}, expected 1")
    if not is_int(doc.get("pid")) or doc["pid"] <= 0:
        fail(f"{where}: pid is {doc.get('pid')!r}")
    classes, t = doc.get("classes"), doc.get("totals")
    if not isinstance(classes, list) or not isinstance(t, dict):
        fail(f"{where}: no 'classes' list or no 'totals' object (keys {sorted(doc)})")
        return False
    ok = True
    for i, c in enumerate(classes):
        missing = [k for k in CLASS_KEYS if not is_num(c.get(k))]
        if missing:
            fail(f"{where}: classes[{i}] lacks {missing}")
            ok = False
    missing = [k for k in TOTAL_KEYS if not is_num(t.get(k))]
    if missing:
        fail(f"{where}: totals lack {missing}")
        ok = False
    if not ok:
        return False
    if not consistency:
        return True
    sizes = [c["size"] for c in classes]
    if sizes != sorted(set(sizes)) or not sizes or sizes[-1] != 4096:
        fail(f"{where}: class sizes are not increasing up to 4096: {sizes}")
    if [c["class"] for c in classes] != list(range(len(classes))):
        fail(f"{where}: class indices are not 0..{len(classes) - 1}")
    for c in classes:
        tag = f"{where}: class {c['class']} (size {c['size']})"
        for k in CLASS_KEYS[:-1]:
            if not is_int(c[k]) or c[k] < 0:
                fail(f"{tag}: {k} is {c[k]!r}, expected a non-negative integer")
        if c["allocated"] - c["freed"] != c["live"]:
            fail(f"{tag}: allocated {c['allocated']} - freed {c['freed']} != live {c['live']}")
        if c["live_bytes"] != c["live"] * c["size"]:
            fail(f"{tag}: live_bytes {c['live_bytes']} != live {c['live']} * size")
        if c["slab_bytes"] % 4096 or c["slab_bytes"] < c["live_bytes"]:
            fail(f"{tag}: slab_bytes {c['slab_bytes']} is not whole pages holding the "
                 f"{c['live_bytes']} live bytes")
        if (c["slabs"] == 0) != (c["slab_bytes"] == 0):
            fail(f"{tag}: slabs {c['slabs']} but slab_bytes {c['slab_bytes']}")
        want = 100.0 * c["live_bytes"] / c["slab_bytes"] if c["slab_bytes"] else 0.0
        if abs(c["fill_pct"] - want) > 0.051:
            fail(f"{tag}: fill_pct {c['fill_pct']}, expected {want:.2f} (live / slab bytes)")
    # Totals against the rows.
    for key, col in (("allocated", "allocated"), ("freed", "freed"), ("live_bytes", "live_bytes")):
        s = sum(c[col] for c in classes)
        if t[key] != s:
            fail(f"{where}: totals.{key} {t[key]} != sum over the classes {s}")
    # The ledger (README): live + thread caches + depot + metadata == resident.
    s = t["live_bytes"] + t["thread_cache_free_bytes"] + t["depot_bytes"] + t["metadata_bytes"]
    if s != t["resident_bytes"]:
        fail(f"{where}: ledger does not add up: live {t['live_bytes']} + thread caches "
             f"{t['thread_cache_free_bytes']} + depot {t['depot_bytes']} + metadata "
             f"{t['metadata_bytes']} = {s} != resident {t['resident_bytes']}")
    # Resident = slab memory + metadata; slab memory = slabs held by the classes + the depot's.
    if t["slab_resident_bytes"] + t["metadata_bytes"] != t["resident_bytes"]:
        fail(f"{where}: slab_resident_bytes {t['slab_resident_bytes']} + metadata_bytes "
             f"{t['metadata_bytes']} != resident_bytes {t['resident_bytes']}")
    held = sum(c["slab_bytes"] for c in classes)
    if held + t["depot_bytes"] != t["slab_resident_bytes"]:
        fail(f"{where}: class slab_bytes {held} + depot_bytes {t['depot_bytes']} != "
             f"slab_resident_bytes {t['slab_resident_bytes']}")
    # overhead_pct: resident beyond live, in % of live (the text form: "% of live bytes").
    if t["live_bytes"] > 0:
        want = 100.0 * (t["resident_bytes"] - t["live_bytes"]) / t["live_bytes"]
        if abs(t["overhead_pct"] - want) > 0.006:
            fail(f"{where}: overhead_pct is {t['overhead_pct']}, but (resident "
                 f"{t['resident_bytes']} - live {t['live_bytes']}) / live = {want:.2f}% "
                 f"(a fraction, not a percentage, was printed?)")
    if t["returned_bytes"] > t["returned_total_bytes"]:
        fail(f"{where}: returned_bytes {t['returned_bytes']} > returned_total_bytes")
    # every purge call gives back at least one page it counts, and pages go back only in calls
    if not (t["returned_total_bytes"] > 0) == (t["returned_calls"] > 0) or \
            t["returned_calls"] * 4096 > t["returned_total_bytes"]:
        fail(f"{where}: returned_calls {t['returned_calls']} for returned_total_bytes "
             f"{t['returned_total_bytes']}")
    # each range holds at least one page counted as given back (its victims; bridges were clean
    # already); one call may take many ranges, and a range refused goes again victim by victim
    if not (t["returned_total_bytes"] > 0) == (t["returned_ranges"] > 0) or \
            t["returned_ranges"] * 4096 > t["returned_total_bytes"]:
        fail(f"{where}: returned_ranges {t['returned_ranges']} for returned_total_bytes "
             f"{t['returned_total_bytes']}")
    if t["rss_bytes"] <= 0 or t["region_bytes"] <= 0:
        fail(f"{where}: rss_bytes {t['rss_bytes']} / region_bytes {t['region_bytes']}")
    if not 1 <= t["thread_caches"] <= t["threads_seen"]:
        fail(f"{where}: thread_caches {t['thread_caches']}, threads_seen {t['threads_seen']}")
    return len(errors) == n0


def cmd_doc(path):
    check_doc(load(path), path)


def cmd_diff(base_path, doc_path, expect_path):
    base, doc, exp = load(base_path), load(doc_path), expect_of(expect_path)
    if not (check_doc(base, base_path, False) and check_doc(doc, doc_path)):
        return
    b, d = by_size(base), by_size(doc)
    if sorted(b) != sorted(d):
        fail(f"{doc_path}: other size classes than {base_path}")
        return
    for size in sorted(d):
        for key in ("live", "allocated"):
            want = exp.get(f"{key}_{size}", 0)
            got = d[size][key] - b[size][key]
            if got != want:
                fail(f"{doc_path}: class of size {size}: {key} grew by {got} over the N=0 run, "
                     f"expected exactly {want} (N={exp.get('n')}; {key} {b[size][key]} -> "
                     f"{d[size][key]})")
    for key in ("fallback_allocs", "fallback_bytes"):
        got = doc["totals"][key] - base["totals"][key]
        if got != exp[key]:
            fail(f"{doc_path}: totals.{key} grew by {got} over the N=0 run, expected exactly "
                 f"{exp[key]} (the program's > 4 KiB blocks)")
    if exp["n"] > 0 and doc["totals"]["threads_seen"] < 2:
        fail(f"{doc_path}: threads_seen {doc['totals']['threads_seen']}, but two threads "
             f"allocated")


def cmd_text(err_path, doc_path, expect_path):
    doc, exp = load(doc_path), expect_of(expect_path)
    with open(err_path) as fh:
        text = fh.read()
    rows = {}
    for line in text.split("\n"):
        f = line.split()
        if len(f) == 9 and all(re.fullmatch(r"\d+", x) for x in f[:8]):
            rows[int(f[1])] = dict(zip(("class", "size", "allocated", "freed", "live", "slabs",
                                        "live_bytes", "slab_bytes"), map(int, f[:8])))
    if not re.search(r"^class\s+size\s+allocated\s+freed\s+live\s+slabs\s+live_bytes\s+"
                     r"slab_bytes\s+fill%", text, re.M):
        fail(f"{err_path}: no table header (class size allocated freed live slabs live_bytes "
             f"slab_bytes fill%)")
    d = by_size(doc)
    for size in SIZES:
        if size not in rows:
            fail(f"{err_path}: the table has no row for the class of size {size}")
            continue
        for key in ("class", "allocated", "freed", "live"):
            if rows[size][key] != d[size][key]:
                fail(f"{err_path}: class of size {size}: {key} {rows[size][key]} in the table, "
                     f"{d[size][key]} in the JSON dump of the same program")
        if rows[size]["live"] < exp[f"live_{size}"]:
            fail(f"{err_path}: class of size {size}: live {rows[size]['live']} < "
                 f"{exp[f'live_{size}']} blocks the program left")
    m = re.search(r"^ledger.*= resident (\d+) \((adds up|DOES NOT ADD UP)\)$", text, re.M)
    if not m:
        fail(f"{err_path}: no ledger line ending in '= resident N (adds up)'")
    elif m.group(2) != "adds up":
        fail(f"{err_path}: the ledger line says: {m.group(0)}")
    else:
        nums = [int(x) for x in re.findall(r"\d+", m.group(0))]
        if len(nums) == 5 and sum(nums[:4]) != nums[4]:
            fail(f"{err_path}: the ledger line says 'adds up' but its numbers do not: "
                 f"{m.group(0)}")


def cmd_jsonl(path, base_path, expect_path, min_lines, min_last_ms):
    base, exp = load(base_path), expect_of(expect_path)
    if not check_doc(base, base_path, False):
        return
    with open(path) as fh:
        raw = fh.read()
    if not raw.endswith("\n"):
        fail(f"{path}: does not end with a newline (a torn last line?)")
    lines = raw.split("\n")[:-1] if raw.endswith("\n") else raw.split("\n")
    docs = []
    for i, line in enumerate(lines, 1):
        try:
            doc = json.loads(line)
        except ValueError as e:
            fail(f"{path}:{i}: not one JSON object per line: {e} (line starts {line[:60]!r})")
            continue
        if not is_int(doc.get("time_ms") if isinstance(doc, dict) else None):
            fail(f"{path}:{i}: no integer time_ms")
            continue
        if check_doc(doc, f"{path}:{i}"):
            docs.append(doc)
    if errors:
        return
    if len(docs) < min_lines:
        fail(f"{path}: {len(docs)} lines, expected >= {min_lines} (ZNS_STATS_INTERVAL_MS "
             f"while the program ran)")
        return
    times = [d["time_ms"] for d in docs]
    # Interval lines are >= the interval apart; the exit line may share the last one's ms.
    for i in range(1, len(times)):
        if times[i] < times[i - 1] or (times[i] == times[i - 1] and i != len(times) - 1):
            fail(f"{path}:{i + 1}: time_ms {times[i]} after {times[i - 1]} (not increasing)")
    if times[-1] < min_last_ms:
        fail(f"{path}: the last line has time_ms {times[-1]}, but the program ran for at least "
             f"{min_last_ms} ms")
    pids = {d["pid"] for d in docs}
    if len(pids) != 1:
        fail(f"{path}: lines of several pids: {sorted(pids)}")
    b, last = by_size(base), by_size(docs[-1])
    for size in SIZES:
        want = b[size]["live"] + exp[f"live_{size}"]
        if last[size]["live"] != want:
            fail(f"{path}: last line, class of size {size}: live {last[size]['live']}, expected "
                 f"{want} (what the program leaves at exit)")
    # Lines written while the program ran show its churn: more live blocks than at exit.
    peak = max(sum(c["live"] for c in d["classes"]) for d in docs[:-1]) if len(docs) > 1 else 0
    if len(docs) > 1 and peak <= sum(c["live"] for c in docs[-1]["classes"]):
        fail(f"{path}: no line written while the program ran shows its churn (peak live blocks "
             f"{peak} before exit)")
    print(f"{path}: {len(docs)} line{'s' if len(docs) != 1 else ''}, "
          f"time_ms {times[0]} .. {times[-1]}")


def main(argv):
    cmds = {"doc": (cmd_doc, 1), "diff": (cmd_diff, 3), "text": (cmd_text, 3),
            "jsonl": (cmd_jsonl, 5)}
    if not argv or argv[0] not in cmds or len(argv) - 1 != cmds[argv[0]][1]:
        print(__doc__, file=sys.stderr)
        return 2
    fn, _ = cmds[argv[0]]
    args = argv[1:]
    if argv[0] == "jsonl":
        args = args[:3] + [int(args[3]), int(args[4])]
    fn(*args)
    # The same failure on many lines of a .jsonl is shown once, with a count.
    seen = {}
    for e in errors:
        kind = re.sub(r"\d+", "#", e.split(": ", 1)[-1])
        if kind in seen:
            seen[kind][1] += 1
        else:
            seen[kind] = [e, 0]
    for first, more in seen.values():
        print(f"FAIL: {first}" + (f"  [and {more} more like it]" if more else ""))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
