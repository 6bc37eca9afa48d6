"""Workload 9 (python3): build, serialise and tear down a few hundred thousand small objects.

Run as  PYTHONMALLOC=malloc /usr/bin/python3 objects.py [N]  so every object goes through the
C allocator under test.  Deterministic: prints "checksum: <hex>", identical under any correct
allocator (the harness compares it across allocators).
"""
import hashlib
import json
import pickle
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300000
h = hashlib.sha256()

# 1. records: dicts of short strings, ints, floats, small lists and tuples
records = []
for i in range(n):
    records.append({
        "id": i,
        "name": "user-%07d" % i,
        "tags": ["t%d" % (i % 7), "g%d" % (i % 13)],
        "pos": (i * 0.5, i % 1000),
        "score": (i * 2654435761) % 1000003,
    })

# 2. an index by name, a grouping by tag, some string building
by_name = {r["name"]: r for r in records}
groups = {}
for r in records:
    groups.setdefault(r["tags"][0], []).append(r["id"])
h.update(str(sorted((k, len(v)) for k, v in groups.items())).encode())
lines = ["%s:%d:%s" % (r["name"], r["score"], ",".join(r["tags"])) for r in records[::3]]
h.update(("\n".join(lines)).encode())
del lines

# 3. serialise and parse back (json and pickle)
blob = json.dumps(records[: n // 2])
back = json.loads(blob)
h.update(str(len(blob)).encode())
h.update(str(sum(r["score"] for r in back)).encode())
del blob, back
pb = pickle.dumps(records, protocol=pickle.HIGHEST_PROTOCOL)
again = pickle.loads(pb)
h.update(str(len(pb)).encode())
del pb

# 4. churn: drop every other record, update the rest, rebuild the sorted view
for i in range(0, n, 2):
    del by_name["user-%07d" % i]
for r in again[1::2]:
    r["tags"].append("u")
    r["name"] = r["name"].upper()
view = sorted(again[1::2], key=lambda r: (r["score"], r["id"]))
h.update(str([r["id"] for r in view[:1000]]).encode())
del again, view

# 5. many small tuples and sets, then everything goes
pairs = {(i, i * 3 % 97) for i in range(n)}
h.update(str(len(pairs) + len(by_name)).encode())
del pairs, by_name, records, groups

print("checksum: %s" % h.hexdigest()[:16])
