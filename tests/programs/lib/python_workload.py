"""Allocation-heavy, deterministic Python workload for tests/programs/python.sh.

Run with PYTHONMALLOC=malloc so that every object goes through malloc/realloc/free.  It prints
only values that are independent of addresses and of the allocator (digests, counts), so the
output must be byte-identical with and without LD_PRELOAD=libzns_slab.so.

Exercises: a few hundred thousand dicts/lists/tuples/strs/ints/floats, json dumps+loads,
pickle round trip, sort, deletes, strings and bytearrays grown by realloc across the 4 KiB
boundary, objects handed between threads (freed by a thread that did not allocate them), and a
child interpreter (subprocess, so a fork+exec under the shim with its own stats file).
"""
import gc
import hashlib
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"]


def h(data):
    if isinstance(data, str):
        data = data.encode()
    return hashlib.sha256(data).hexdigest()


def lcg(x):
    return (x * 6364136223846793005 + 1442695040888963407) & 0xFFFFFFFFFFFFFFFF


def make_record(i, seed):
    r = lcg(seed ^ (i * 0x9E3779B97F4A7C15))
    # String lengths: mostly small, some around 1-4 KiB, a few above 4 KiB (fallback path).
    if i % 1999 == 0:
        blen = 4000 + (r % 6000)
    elif i % 97 == 0:
        blen = 1000 + (r % 3000)
    else:
        blen = r % 120
    return {
        "id": i,
        "name": f"user{i:07d}",
        "tags": [WORDS[(r >> (k * 5)) % len(WORDS)] for k in range(i % 6)],
        "score": (r % 1_000_000) / 1000.0,
        "big": (r >> 7) * (i + 1),  # multi-digit ints (PyLong allocations)
        "pt": (i, -i, str(r % 9973)),
        "nested": {"a": [i, i * 2, i * 3], "b": None if i % 3 else True,
                   "c": {"k" + str(i % 50): i % 7}},
        "blob": chr(ord("a") + i % 26) * blen,
    }


def main():
    out = []

    def emit(*parts):
        out.append(" ".join(str(p) for p in parts))

    # 1. build
    recs = [make_record(i, 42) for i in range(N)]
    emit("records", len(recs))

    # 2. json round trip
    js = json.dumps(recs, sort_keys=True)
    emit("json_len", len(js), "sha256", h(js))
    back = json.loads(js)
    js2 = json.dumps(back, sort_keys=True)
    assert js2 == js, "json round trip changed the document"
    emit("json_roundtrip ok", len(back))
    del back, js2

    # 3. pickle round trip (protocol 4: framing, memo)
    pk = pickle.dumps(recs, protocol=4)
    emit("pickle_len", len(pk), "sha256", h(pk))
    rec2 = pickle.loads(pk)
    assert rec2 == recs, "pickle round trip changed the objects"
    emit("pickle_roundtrip ok", len(rec2))
    del pk

    # 4. sort (new list of references + key tuples), and by a string key
    by_score = sorted(rec2, key=lambda r: (r["score"], r["id"]))
    emit("sorted_by_score_ids", h(",".join(str(r["id"]) for r in by_score[:: max(1, N // 5000)])))
    rec2.sort(key=lambda r: (r["name"][::-1], r["id"]))
    emit("sorted_by_revname_ids", h(",".join(str(r["id"]) for r in rec2[:: max(1, N // 5000)])))
    del by_score

    # 5. deletes and mutations: drop every third record, mutate the rest, rebuild an index
    del recs[::3]
    for r in recs[::2]:
        del r["nested"]
        r["tags"].append("deleted-nested")
        r["blob"] = r["blob"][: len(r["blob"]) // 2]
    index = {r["name"]: r for r in recs}
    for name in list(index)[::2]:
        del index[name]
    emit("after_deletes", len(recs), len(index))
    emit("after_deletes_json", h(json.dumps(recs, sort_keys=True)))
    emit("index_json", h(json.dumps(sorted(index.items()), sort_keys=True)))
    del rec2

    # 6. sets, tuples and a dict of tuples keyed by ints
    tagset = sorted({t for r in recs for t in r["tags"]})
    pairs = {r["id"]: tuple(r["tags"]) for r in recs}
    emit("tags", len(tagset), h("|".join(tagset)), "pairs", len(pairs),
         h(repr(sorted(pairs.items())[:1000])))
    del pairs

    # 7. realloc growth across the 4 KiB boundary (str += in place, bytearray, list append)
    s = ""
    for i in range(30_000):
        s += str(i)
    ba = bytearray()
    for i in range(20_000):
        ba += i.to_bytes(3, "little")
    lst = []
    for i in range(100_000):
        lst.append(i)
    emit("growth", len(s), h(s), len(ba), h(bytes(ba)), sum(lst))
    del s, ba, lst

    # 8. objects built in one thread and freed in another (two threads + main)
    q = queue.Queue(maxsize=64)
    digests = [None, None]

    def producer():
        acc = hashlib.sha256()
        for b in range(200):
            batch = [{"b": b, "i": i, "s": "p" * (i % 300), "t": (b, i)} for i in range(250)]
            acc.update(str(len(batch)).encode())
            q.put(batch)
        q.put(None)
        digests[0] = acc.hexdigest()

    def consumer():
        acc = hashlib.sha256()
        while True:
            batch = q.get()
            if batch is None:
                break
            acc.update(json.dumps(batch[::50], sort_keys=True).encode())
            del batch  # freed here, allocated by the producer thread
        digests[1] = acc.hexdigest()

    ts = [threading.Thread(target=producer), threading.Thread(target=consumer)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    emit("threads", digests[0], digests[1])

    # 8b. fork() while another thread is busy allocating; the child allocates, reports through a
    #     pipe and leaves with os._exit (as multiprocessing does).  A child that deadlocks in
    #     malloc is killed after 20 s and reported as such.
    stop = threading.Event()

    def churn():
        while not stop.is_set():
            junk = [{"i": i, "s": "c" * (i % 500)} for i in range(2000)]
            del junk

    bg = threading.Thread(target=churn)
    bg.start()
    fork_results = []
    try:
        for _ in range(3):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(r)
                    d = [{"k": i, "v": str(i) * (i % 30), "t": (i, str(i))} for i in range(30000)]
                    os.write(w, h(json.dumps(d, sort_keys=True)).encode())
                finally:
                    os._exit(0)
            os.close(w)
            deadline = time.monotonic() + 20
            status = None
            while time.monotonic() < deadline:
                wpid, st = os.waitpid(pid, os.WNOHANG)
                if wpid:
                    status = st
                    break
                time.sleep(0.01)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                fork_results.append("HUNG")
            else:
                data = b""
                while True:
                    chunk = os.read(r, 4096)
                    if not chunk:
                        break
                    data += chunk
                fork_results.append(f"{data.decode()}:{os.waitstatus_to_exitcode(status)}")
            os.close(r)
    finally:
        stop.set()
        bg.join()
    emit("fork", *fork_results)

    # 9. a child interpreter (inherits the environment: LD_PRELOAD, ZNS_STATS with %p)
    child = ("import json,hashlib;"
             "d=[{'k':i,'v':str(i)*(i%40),'l':list(range(i%9))} for i in range(60000)];"
             "print(hashlib.sha256(json.dumps(d,sort_keys=True).encode()).hexdigest())")
    res = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                         timeout=60, check=True)
    emit("child", res.stdout.strip())

    # 10. collect and finish
    del recs, index, tagset
    gc.collect()
    emit("done")
    sys.stdout.write("\n".join(out) + "\n")
    sys.stdout.write("ALL " + h("\n".join(out)) + "\n")


if __name__ == "__main__":
    main()
