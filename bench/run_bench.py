#!/usr/bin/python3
"""ZNS-Slab benchmark harness (issue 4).  Run by `make bench` / `make bench QUICK=1`.

Runs the same programs under every allocator, swapped in with LD_PRELOAD (glibc = no preload;
jemalloc, mimalloc and tcmalloc_minimal from Debian; ZNS-Slab from build/), in interleaved rounds
(glibc, jemalloc, mimalloc, tcmalloc, zns, then again ...), and writes

    bench/RESULTS.md      tables: medians, min-max, ratio to the best peer, the targets, the machine
    bench/results.json    every raw measurement
    bench/plots/*.png     charts (matplotlib)

Workloads (see bench/*.cpp and bench/programs/ for the exact definitions):
    callgrind   instructions per malloc(64)+free pair (valgrind --tool=callgrind; deterministic)
    micro       1-5: Google Benchmark (build/bench/micro): pairs, batches, churn 1 and 2 threads,
                producer/consumer
    latency     6: rdtsc-timed single malloc and free calls in a steady churn (build/bench/latency)
    memory      7: RSS of 1M live blocks per size, after freeing a random half, after freeing all
    programs    9: python3 (PYTHONMALLOC=malloc) and sqlite3 workloads, and build/bench/workload (the
                `make run` workload), timed as processes
    redis       8: redis-server loaded with redis-benchmark: SET/GET throughput and server RSS
    tier        issue 5, ZNS-Slab only, ZNS_TIER=off / uffd / madvise interleaved: idle RSS of a 64 MiB
                heap of shared slabs and the latency of its first touches (build/bench/tier), and
                build/bench/workload with the tier on but nothing cold vs off (own round counts in
                CONFIGS: tier_rounds, tier_cost_rounds; --rounds does not change them)
    checks      issue 6, ZNS-Slab only, three variants interleaved: "zns" (the default build), "zns-unchecked"
                (build/unchecked/libzns_slab.so, built with -DZNS_UNCHECKED: the free fast path's misuse
                checks compiled out; bench only) and "zns-secure" (the default build with ZNS_SECURE=1):
                callgrind instructions per pair (build/bench/pairs, CONFIGS checks_sizes), the micro
                workloads that matter (pair at those sizes, batch, churn 1 and 2 threads, prodcons) and
                build/bench/workload (the `make run` workload) timed as a process; --rounds rounds

--only runs a subset: results.json keeps the other stages' data from the previous run (each stage
records its own date, git, mode and config under "runs") and RESULTS.md is regenerated from the
merged data.  --report-only measures nothing and regenerates RESULTS.md and the charts.

A peer that is missing or crashes is reported as such in RESULTS.md; it never stops the harness.
Standard library only, plus matplotlib for the charts (Debian's python3-matplotlib).
"""
import argparse
import csv
import datetime
import hashlib
import io
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBDIR = "/usr/lib/x86_64-linux-gnu"
PEERS = ["jemalloc", "mimalloc", "tcmalloc"]
ORDER = ["glibc", "jemalloc", "mimalloc", "tcmalloc", "zns"]
PEER_LIBS = {   # name: (file, Debian package)
    "jemalloc": ("libjemalloc.so.2", "libjemalloc2"),
    "mimalloc": ("libmimalloc.so.2", "libmimalloc2.0"),
    "tcmalloc": ("libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
}
# Variables that would change an allocator's behaviour: removed from every run's environment.
SCRUB_ENV = re.compile(r"^(LD_PRELOAD|LD_LIBRARY_PATH|MALLOC_.*|GLIBC_TUNABLES|ZNS_.*|MIMALLOC_.*|"
                       r"TCMALLOC_.*|JE_MALLOC_CONF|PYTHONMALLOC|PYTHONDEVMODE)$")

CONFIGS = {
    "quick": dict(rounds=3, micro_min_time=0.05, latency_ops=300000,
                  mem_sizes=[16, 64, 128, 256], mem_count=1000000, mem_hops=1000000,
                  redis_n=200000, py_n=50000, sqlite_rows=50000, callgrind_pairs=1000000),
    "full": dict(rounds=5, micro_min_time=0.25, latency_ops=2000000,
                 mem_sizes=[8, 16, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096], mem_count=1000000,
                 mem_hops=1000000,
                 redis_n=1000000, py_n=150000, sqlite_rows=200000, callgrind_pairs=1000000),
}
CONFIGS["quick"]["wl_scale"], CONFIGS["full"]["wl_scale"] = 0.3, 1.0   # programs: build/bench/workload
# The tier stage (issue 5): the same in both modes except the idle time and the workload's scale.
TIER_CFG = {
    "quick": dict(tier_payload_mb=64, tier_threads=4, tier_min=64, tier_max=1024, tier_cold_ms=500,
                  tier_idle_s=3, tier_rounds=3, tier_cost_rounds=5, tier_cost_scale=0.5),
    "full": dict(tier_payload_mb=64, tier_threads=4, tier_min=64, tier_max=1024, tier_cold_ms=500,
                 tier_idle_s=4, tier_rounds=5, tier_cost_rounds=7, tier_cost_scale=1.0),
}
for _m, _c in TIER_CFG.items():
    CONFIGS[_m].update(_c)
# The checks stage (issue 6): callgrind and pair sizes, and the scale of build/bench/workload.
CHECKS_CFG = {
    "quick": dict(checks_sizes=[64, 1024], checks_wl_scale=0.5),
    "full": dict(checks_sizes=[64, 1024], checks_wl_scale=1.0),
}
for _m, _c in CHECKS_CFG.items():
    CONFIGS[_m].update(_c)
MICRO_GROUPS = [("pair", "^pair/"), ("batch", "^batch/"), ("churn", "^churn/"), ("prodcons", "^prodcons"),
                ("handoff", "^handoff/")]
LATENCY_SCENARIOS = [("mixed 16..4096 B", 16, 4096), ("small 16..256 B", 16, 256)]
STAGES = ["callgrind", "micro", "latency", "memory", "threads", "programs", "redis", "tier", "checks"]
QUICK_SKIPS = ["tier", "checks"]   # issues 5 and 6, not issue 4: --quick leaves them out unless --only names them
# The threads stage (reference, not an issue-4 workload): (threads, blocks of each of 20 sizes).
THREADS_CASES = [(500, 1), (200, 5), (50, 20)]
TIER_MODES = ["off", "uffd", "madvise"]


def log(msg):
    sys.stderr.write("[bench %s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stderr.flush()


def med(xs):
    return statistics.median(xs) if xs else None


def rotated(order, rnd):
    """The allocators of round rnd: the order turns by one each round, so no allocator always runs
    right after the same other one (a warm or busy machine favours nobody in particular)."""
    k = rnd % len(order) if order else 0
    return order[k:] + order[:k]


# ---- allocators ------------------------------------------------------------------------------------
class Alloc:
    def __init__(self, name, lib, origin):
        self.name, self.lib, self.origin = name, lib, origin   # origin: substring of the malloc_from path
        self.problem = None                                      # why it cannot run at all
        self.stale = None                                        # a warning about the file (checks stage)

    def env(self, extra=None):
        e = {k: v for k, v in os.environ.items() if not SCRUB_ENV.match(k)}
        e["LC_ALL"] = "C"
        if self.lib:
            e["LD_PRELOAD"] = self.lib
        if extra:
            e.update(extra)
        return e


def snapshot(src, dst):
    """Copy src to dst as a new file (a new inode, renamed into place): a process that has the old
    snapshot mapped -- a run of another harness, or of this one -- keeps its pages (copying over the
    mapped file in place would change the code under it: SIGBUS)."""
    tmp = "%s.%d.tmp" % (dst, os.getpid())
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def setup_allocators(zns_so, build, unchecked_so=None, copy=True):
    """The allocators by name.  copy=False (--report-only): measure nothing, so snapshot nothing."""
    allocs = {"glibc": Alloc("glibc", None, "libc.so.6")}
    for name, (fname, pkg) in PEER_LIBS.items():
        path = os.path.join(LIBDIR, fname)
        a = Alloc(name, path, fname.split(".so")[0])
        if not os.path.exists(path):
            a.problem = "not installed (%s missing; apt-get install %s)" % (path, pkg)
        allocs[name] = a
    # A private copy of the shim: a rebuild during the run cannot change what is measured.
    snap_dir = os.path.join(build, "bench", "zns-snapshot")
    os.makedirs(snap_dir, exist_ok=True)
    snap = os.path.join(snap_dir, "libzns_slab.so")
    a = Alloc("zns", snap, snap)
    if os.path.exists(zns_so):
        if copy:
            snapshot(zns_so, snap)
    else:
        a.problem = "not built (%s missing; run make)" % zns_so
    allocs["zns"] = a
    # The -DZNS_UNCHECKED build (stage checks only; not an allocator of the other stages), snapshotted alike.
    snap = os.path.join(snap_dir, "unchecked", "libzns_slab.so")
    os.makedirs(os.path.dirname(snap), exist_ok=True)
    a = Alloc("zns-unchecked", snap, snap)
    unchecked_so = unchecked_so or os.path.join(build, "unchecked", "libzns_slab.so")
    if os.path.exists(unchecked_so):
        if copy:
            snapshot(unchecked_so, snap)
        if os.path.exists(zns_so) and os.path.getmtime(unchecked_so) < os.path.getmtime(zns_so) - 60:
            a.stale = "%s is older than %s: it may not be built from the same sources (make bench-build)" % (
                unchecked_so, zns_so)
    else:
        a.problem = "not built (%s missing; run make bench-build)" % unchecked_so
    allocs["zns-unchecked"] = a
    return allocs


# ---- running a process -------------------------------------------------------------------------------
class Run:
    def __init__(self):
        self.rc = None
        self.out = self.err = ""
        self.wall = self.cpu = self.maxrss_kb = None
        self.error = None


def describe_rc(rc):
    if rc is None:
        return "did not finish"
    if rc > 128:
        try:
            return "was killed by signal %d (%s)" % (rc - 128, signal.Signals(rc - 128).name)
        except ValueError:
            return "exited with status %d" % rc
    if rc < 0:
        try:
            return "was killed by signal %d (%s)" % (-rc, signal.Signals(-rc).name)
        except ValueError:
            return "was killed by signal %d" % -rc
    return "exited with status %d" % rc


def tail(text, n=6):
    lines = [l for l in text.strip().splitlines() if l.strip()]
    own = [l for l in lines if not re.match(r"^==\d+==", l)]   # skip valgrind's own lines if others exist
    return " | ".join((own or lines)[-n:])


def run_proc(ctx, cmd, alloc, extra_env=None, timeout=600, cwd=None):
    """Run cmd under alloc through build/bench/timeit (wall, user+sys, peak RSS)."""
    r = Run()
    fd, tfile = tempfile.mkstemp(prefix="zns-bench-time.")
    os.close(fd)
    try:
        p = subprocess.Popen([ctx.timeit, tfile] + cmd, env=alloc.env(extra_env), cwd=cwd,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, errors="replace", start_new_session=True)
        try:
            r.out, r.err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(p)
            r.out, r.err = p.communicate()
            r.error = "timed out after %d s" % timeout
            return r
        r.rc = p.returncode
        try:
            with open(tfile) as f:
                wall, user, sys_, rss, _ = f.read().split()
            r.wall, r.cpu, r.maxrss_kb = float(wall), float(user) + float(sys_), int(rss)
        except (OSError, ValueError):
            pass
    finally:
        os.unlink(tfile)
    if "cannot be preloaded" in r.err:
        r.error = "the dynamic loader refused the preload: " + tail(r.err, 2)
    elif r.rc != 0:
        r.error = "%s %s; stderr: %s" % (os.path.basename(cmd[0]), describe_rc(r.rc), tail(r.err) or "(empty)")
    elif r.wall is None:
        r.error = "no timing recorded"
    return r


def kill_group(p):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            p.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            continue


def check_origin(alloc, origin):
    if alloc.origin not in origin:
        return "the preload did not take effect: malloc came from %s" % origin
    return None


def run_json(ctx, stage, key, who, cmd, alloc, gbench=False, **kw):
    """Run cmd under alloc (run_proc's keywords pass through) and return (its JSON document, Run),
    or (None, Run) after recording why in ctx.store: the run failed, its output is not JSON, or the
    preload did not take effect (the program reports where malloc came from; Google Benchmark in
    its context)."""
    r = run_proc(ctx, cmd, alloc, **kw)
    if r.error:
        ctx.store.fail(stage, key, who, r.error)
        return None, r
    try:
        doc = json.loads(r.out)
    except ValueError as e:
        what = "JSON from Google Benchmark" if gbench else "output"
        ctx.store.fail(stage, key, who, "unreadable %s: %s" % (what, e))
        return None, r
    origin = (doc.get("context", {}) if gbench else doc).get("malloc_from", "?")
    bad = check_origin(alloc, origin)
    if bad:
        ctx.store.fail(stage, key, who, bad)
        return None, r
    return doc, r


# ---- results store --------------------------------------------------------------------------------
class Store:
    """data[stage][key][alloc] = list of per-round values; errors[stage][key][alloc] = [messages]."""

    def __init__(self):
        self.data, self.errors = {}, {}

    def add(self, stage, key, alloc, value):
        self.data.setdefault(stage, {}).setdefault(key, {}).setdefault(alloc, []).append(value)

    def fail(self, stage, key, alloc, msg):
        log("  FAILED %s %s %s: %s" % (stage, key, alloc, msg))
        self.errors.setdefault(stage, {}).setdefault(key, {}).setdefault(alloc, []).append(msg)

    def values(self, stage, key, alloc):
        return self.data.get(stage, {}).get(key, {}).get(alloc, [])

    def error(self, stage, key, alloc):
        errs = self.errors.get(stage, {}).get(key, {}).get(alloc)
        return errs[0] if errs else None


# ---- stages ---------------------------------------------------------------------------------------
def stage_callgrind(ctx):
    if not shutil.which("valgrind"):
        for a in ctx.order:
            ctx.store.fail("callgrind", "pair64", a, "valgrind not installed")
        return
    n = ctx.cfg["callgrind_pairs"]
    for a in ctx.order:
        alloc = ctx.allocs[a]
        irs = {}
        for pairs in (n, 0):
            cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", ctx.bin("pairs"), str(pairs), "64"]
            r = run_proc(ctx, cmd, alloc, timeout=600)
            m = re.search(r"Collected : (\d+)", r.err)
            o = re.search(r"^malloc_from: (.*)$", r.out, re.M)
            bad = check_origin(alloc, o.group(1) if o else "? (no malloc_from line)")
            if r.error or not m or bad:
                ctx.store.fail("callgrind", "pair64", a, r.error or bad or "no 'Collected' line: " + tail(r.err))
                break
            irs[pairs] = int(m.group(1))
        else:
            ctx.store.add("callgrind", "pair64", a, dict(ir_n=irs[n], ir_0=irs[0], pairs=n,
                                                         per_pair=(irs[n] - irs[0]) / n))
            log("  callgrind %-9s %.1f instructions per pair" % (a, (irs[n] - irs[0]) / n))


def stage_micro(ctx):
    for rnd in range(ctx.rounds):
        for group, filt in MICRO_GROUPS:
            for a in rotated(ctx.order, rnd):
                alloc = ctx.allocs[a]
                cmd = [ctx.bin("micro"), "--benchmark_filter=" + filt, "--benchmark_format=json",
                       "--benchmark_min_time=%g" % ctx.cfg["micro_min_time"]]
                doc, r = run_json(ctx, "micro", group, a, cmd, alloc, gbench=True, timeout=900)
                if doc is None:
                    continue
                if rnd == 0 and not ctx.gb_context and group == "pair":
                    ctx.gb_context = doc.get("context", {})
                for b in doc.get("benchmarks", []):
                    name = b["name"].replace("/real_time", "").replace("/manual_time", "")
                    if b.get("error_occurred"):
                        ctx.store.fail("micro", name, a, "benchmark error: %s" % b.get("error_message"))
                    elif b.get("items_per_second"):
                        ctx.store.add("micro", name, a, 1e9 / b["items_per_second"])
                        if "proc_cpu_ns_per_item" in b:
                            ctx.store.add("micro_cpu", name, a, b["proc_cpu_ns_per_item"])
        log("micro: round %d/%d done" % (rnd + 1, ctx.rounds))


def stage_latency(ctx):
    for rnd in range(ctx.rounds):
        for scen, lo, hi in LATENCY_SCENARIOS:
            for a in rotated(ctx.order, rnd):
                alloc = ctx.allocs[a]
                cmd = [ctx.bin("latency"), "--ops", str(ctx.cfg["latency_ops"]), "--lo", str(lo), "--hi", str(hi)]
                doc, r = run_json(ctx, "latency", scen, a, cmd, alloc, timeout=600)
                if doc is None:
                    continue
                ctx.store.add("latency", scen, a, doc)
        log("latency: round %d/%d done" % (rnd + 1, ctx.rounds))


def stage_memory(ctx):
    rounds = min(ctx.rounds, 3)   # nearly deterministic; 3 rounds are plenty
    for rnd in range(rounds):
        for size in ctx.cfg["mem_sizes"]:
            for a in rotated(ctx.order, rnd):
                alloc = ctx.allocs[a]
                cmd = [ctx.bin("memory"), "--size", str(size), "--count", str(ctx.cfg["mem_count"]),
                       "--hops", str(ctx.cfg["mem_hops"])]
                doc, r = run_json(ctx, "memory", size, a, cmd, alloc, timeout=600)
                if doc is None:
                    continue
                doc["peak_rss_kb"] = r.maxrss_kb
                ctx.store.add("memory", size, a, doc)
        log("memory: round %d/%d done" % (rnd + 1, rounds))


def stage_threads(ctx):
    rounds = min(ctx.rounds, 3)   # nearly deterministic, like the memory stage
    for rnd in range(rounds):
        for t, n in THREADS_CASES:
            for a in rotated(ctx.order, rnd):
                cmd = [ctx.bin("threads"), "--threads", str(t), "--blocks", str(n)]
                doc, r = run_json(ctx, "threads", "%dx%d" % (t, n), a, cmd, ctx.allocs[a], timeout=300)
                if doc is not None:
                    ctx.store.add("threads", "%dx%d" % (t, n), a, doc)
        log("threads: round %d/%d done" % (rnd + 1, rounds))


def stage_programs(ctx):
    py = "/usr/bin/python3"
    sqlite = shutil.which("sqlite3")
    script = os.path.join(ctx.build, "bench", "sqlite_workload.sql")
    with open(os.path.join(ROOT, "bench", "programs", "sqlite_workload.sql")) as f:
        sql = f.read().replace("@ROWS@", str(ctx.cfg["sqlite_rows"]))
    with open(script, "w") as f:
        f.write(sql)
    progs = [
        ("python3", [py, os.path.join(ROOT, "bench", "programs", "objects.py"), str(ctx.cfg["py_n"])],
         {"PYTHONMALLOC": "malloc"}, None if os.path.exists(py) else "%s missing" % py),
        ("sqlite3", [sqlite or "sqlite3", ":memory:", ".read " + script], None,
         None if sqlite else "sqlite3 not installed (apt-get install sqlite3)"),
        # the `make run` workload (session store, request headers, a two-thread pipeline)
        ("workload", [ctx.bin("workload"), "--scale", str(ctx.cfg["wl_scale"])], None, None),
    ]
    for rnd in range(ctx.rounds):
        for name, cmd, extra, missing in progs:
            for a in rotated(ctx.order, rnd):
                if missing:
                    if rnd == 0:
                        ctx.store.fail("programs", name, a, missing)
                    continue
                r = run_proc(ctx, cmd, ctx.allocs[a], extra_env=extra, timeout=900)
                if r.error:
                    ctx.store.fail("programs", name, a, r.error)
                    continue
                m = re.search(r"checksum: (\w+)", r.out)
                csum = m.group(1) if m else hashlib.sha256(r.out.encode()).hexdigest()[:16]
                ctx.store.add("programs", name, a, dict(wall=r.wall, cpu=r.cpu, rss_mb=r.maxrss_kb / 1024.0,
                                                        checksum=csum))
        log("programs: round %d/%d done" % (rnd + 1, ctx.rounds))


# ---- redis -----------------------------------------------------------------------------------------------
REDIS_ALLOCS = ["jemalloc", "mimalloc", "tcmalloc", "zns"]   # "jemalloc" = as shipped: linked, no preload


def free_port():
    for _ in range(200):
        port = random.randint(20000, 60999)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port found")


def proc_status(pid, field):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])   # kB
    except OSError:
        pass
    return None


def redis_cli(port, *args, timeout=30):
    p = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(port)] + list(args),
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                       env={k: v for k, v in os.environ.items() if not SCRUB_ENV.match(k)})
    return p.stdout.strip()


REDIS_VALUE = b"x" * 100   # what redis-benchmark -d 100 writes


def redis_fill(port, n):
    """SET exactly n keys, key:000000000000 .. key:%012d (redis-benchmark's own key names, so its
    random SETs and GETs with -r n then hit these keys), with 100-byte values, through
    `redis-cli --pipe` (the protocol's mass insertion).  redis-benchmark -r n alone writes random
    keys: about 63% of n distinct ones for n requests."""
    p = subprocess.Popen(["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env={k: v for k, v in os.environ.items() if not SCRUB_ENV.match(k)})
    head = b"*3\r\n$3\r\nSET\r\n$16\r\n"
    tail_ = b"\r\n$%d\r\n%s\r\n" % (len(REDIS_VALUE), REDIS_VALUE)
    try:
        for start in range(0, n, 10000):
            p.stdin.write(b"".join(head + b"key:%012d" % i + tail_ for i in range(start, min(n, start + 10000))))
        p.stdin.close()
    except BrokenPipeError:
        pass
    out = p.stdout.read().decode(errors="replace")   # (a few lines, at the end)
    p.wait(timeout=600)
    m = re.search(r"errors: (\d+), replies: (\d+)", out)
    if p.returncode != 0 or not m or int(m.group(1)) != 0 or int(m.group(2)) != n:
        raise RuntimeError("redis-cli --pipe (filling %d keys) %s: %s" % (n, describe_rc(p.returncode), tail(out)))


def redis_bench(port, test, n):
    cmd = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-t", test, "-n", str(n), "-r", str(n),
           "-d", "100", "-P", "16", "--csv"]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                       env={k: v for k, v in os.environ.items() if not SCRUB_ENV.match(k)})
    wall = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError("redis-benchmark -t %s %s: %s" % (test, describe_rc(p.returncode), tail(p.stderr)))
    for row in csv.reader(io.StringIO(p.stdout)):
        if row and row[0].upper() == test.upper():
            return float(row[1]), wall
    raise RuntimeError("redis-benchmark -t %s printed no result: %s" % (test, tail(p.stdout + p.stderr)))


def redis_one(ctx, a):
    alloc = ctx.allocs[a]
    server = shutil.which("redis-server")
    port = free_port()
    tmpd = tempfile.mkdtemp(prefix="zns-bench-redis.")
    logf = open(os.path.join(tmpd, "redis.log"), "w")
    cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
           "--daemonize", "no", "--dir", tmpd, "--logfile", ""]
    lib = None if a == "jemalloc" else alloc.lib
    env = alloc.env()
    if lib is None:
        env.pop("LD_PRELOAD", None)
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                         start_new_session=True)
    res = {}
    try:
        deadline = time.monotonic() + 20
        while True:
            if p.poll() is not None:
                raise RuntimeError("redis-server %s at start-up; log: %s" % (describe_rc(p.returncode), tail(open(logf.name).read())))
            try:
                if redis_cli(port, "ping", timeout=5) == "PONG":
                    break
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 20 s")
            time.sleep(0.1)
        if lib:
            with open("/proc/%d/maps" % p.pid) as f:
                if lib not in f.read():
                    raise RuntimeError("the preload did not take effect (%s not mapped in redis-server)" % lib)
        res["rss_start_mb"] = proc_status(p.pid, "VmRSS") / 1024.0
        redis_fill(port, ctx.cfg["redis_n"])
        res["rss_fill_mb"] = proc_status(p.pid, "VmRSS") / 1024.0
        res["set_rps"], res["set_wall"] = redis_bench(port, "set", ctx.cfg["redis_n"])
        res["keys"] = int(redis_cli(port, "dbsize") or 0)
        if res["keys"] != ctx.cfg["redis_n"]:
            raise RuntimeError("redis holds %d keys after the load, not %d" % (res["keys"], ctx.cfg["redis_n"]))
        res["rss_mb"] = proc_status(p.pid, "VmRSS") / 1024.0
        res["get_rps"], res["get_wall"] = redis_bench(port, "get", ctx.cfg["redis_n"])
        res["rss_after_get_mb"] = proc_status(p.pid, "VmRSS") / 1024.0
        info = redis_cli(port, "info", "memory")
        m = re.search(r"^used_memory:(\d+)", info, re.M)
        res["used_memory_mb"] = int(m.group(1)) / 1048576.0 if m else None
        if p.poll() is not None:
            raise RuntimeError("redis-server %s during the benchmark" % describe_rc(p.returncode))
        res["hwm_mb"] = proc_status(p.pid, "VmHWM") / 1024.0
    finally:
        try:
            redis_cli(port, "shutdown", "nosave", timeout=5)
        except Exception:
            pass
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(p)
            p.wait()
        logf.close()
        shutil.rmtree(tmpd, ignore_errors=True)
    if p.returncode not in (0, None):
        res["exit_note"] = "redis-server %s at shutdown" % describe_rc(p.returncode)
    return res


def stage_redis(ctx):
    missing = [b for b in ("redis-server", "redis-cli", "redis-benchmark") if not shutil.which(b)]
    allocs = [a for a in REDIS_ALLOCS if a in ctx.order]
    if missing:
        for a in allocs:
            ctx.store.fail("redis", "redis", a, "%s not installed (apt-get install redis-server redis-tools)" % ", ".join(missing))
        return
    rounds = ctx.rounds
    for rnd in range(rounds):
        for a in rotated(allocs, rnd):
            try:
                res = redis_one(ctx, a)
            except Exception as e:   # a crash of one allocator must not stop the others
                ctx.store.fail("redis", "redis", a, str(e))
                continue
            if res.get("exit_note"):   # a crash at shutdown: this round's numbers do not count
                ctx.store.fail("redis", "redis", a, res["exit_note"])
                continue
            ctx.store.add("redis", "redis", a, res)
            log("  redis %-9s SET %.0f/s GET %.0f/s RSS %.1f MiB (%d keys)" % (a, res["set_rps"], res["get_rps"], res["rss_mb"], res["keys"]))
        log("redis: round %d/%d done" % (rnd + 1, rounds))


# ---- the tier (issue 5) -------------------------------------------------------------------------------
TIER_DIR = "/var/tmp"          # ZNS_TIER_DIR: the backing file is created there and unlinked at once
TIER_HOT_COLD_MS = 3600000     # "nothing is cold": one hour, far beyond any run


def read_tier_stats(stats_dir):
    """The "tier" object of the measured program's ZNS_STATS dump (see read_stats_dump)."""
    doc = read_stats_dump(stats_dir)
    return doc.get("tier") if doc else None


def stage_tier(ctx):
    """ZNS-Slab only (the peers have no tier), under ZNS_TIER=off, uffd and madvise, interleaved:
    (a, b) build/bench/tier: idle RSS of a 64 MiB heap of shared slabs, then timed first touches;
    (c) build/bench/workload with the tier on but nothing cold, against the tier off."""
    if "zns" not in ctx.order:
        ctx.store.fail("tier", "(stage)", "zns", "ZNS-Slab is not available")
        return
    alloc = ctx.allocs["zns"]
    c = ctx.cfg
    stats_dir = tempfile.mkdtemp(prefix="zns-bench-tier.")
    stats = os.path.join(stats_dir, "stats.%p.json")
    try:
        cmd = [ctx.bin("tier"), "--payload-mb", str(c["tier_payload_mb"]), "--threads", str(c["tier_threads"]),
               "--min", str(c["tier_min"]), "--max", str(c["tier_max"]), "--idle-s", str(c["tier_idle_s"])]
        for rnd in range(c["tier_rounds"]):
            for mode in TIER_MODES:
                env = {"ZNS_TIER": mode, "ZNS_TIER_COLD_MS": str(c["tier_cold_ms"]), "ZNS_TIER_DIR": TIER_DIR,
                       "ZNS_STATS": stats}
                doc, r = run_json(ctx, "tier", mode, "zns", cmd, alloc, extra_env=env, timeout=300)
                if doc is None:
                    continue
                doc["stats_json"] = read_tier_stats(stats_dir)
                if "tier (" in r.err or "zns-slab" in r.err:
                    doc["stderr"] = tail(r.err, 3)
                ctx.store.add("tier", mode, "zns", doc)
                log("  tier %-8s idle RSS %.1f MiB = %.1f%% of %.1f MiB payload; %d faults p50 %.1f us p99 %.1f us" %
                    (mode, doc["rss_idle"] / 1048576.0, 100.0 * doc["rss_idle"] / doc["payload"],
                     doc["payload"] / 1048576.0, doc["faults"], doc["fault_p50_us"], doc["fault_p99_us"]))
            log("tier: idle/fault round %d/%d done" % (rnd + 1, c["tier_rounds"]))
        wl = [ctx.bin("workload"), "--scale", str(c["tier_cost_scale"])]
        for rnd in range(c["tier_cost_rounds"]):
            for mode in TIER_MODES:
                env = {"ZNS_TIER": mode, "ZNS_TIER_COLD_MS": str(TIER_HOT_COLD_MS), "ZNS_TIER_DIR": TIER_DIR,
                       "ZNS_STATS": stats}
                r = run_proc(ctx, wl, alloc, extra_env=env, timeout=600)
                if r.error:
                    ctx.store.fail("tier_cost", mode, "zns", r.error)
                    continue
                m = re.search(r"checksum: (\w+)", r.out)
                ts = read_tier_stats(stats_dir) or {}
                ctx.store.add("tier_cost", mode, "zns", dict(wall=r.wall, cpu=r.cpu, rss_mb=r.maxrss_kb / 1024.0,
                                                             checksum=m.group(1) if m else None,
                                                             slabs_out=ts.get("slabs_out"), tier_mode=ts.get("mode")))
            log("tier: cost round %d/%d done" % (rnd + 1, c["tier_cost_rounds"]))
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)


# ---- the cost of the checks and of ZNS_SECURE (issue 6) ------------------------------------------------
CHECKS_VARIANTS = ["zns", "zns-unchecked", "zns-secure"]
CHECKS_SECURE_ENV = {"ZNS_SECURE": "1"}


def read_stats_dump(stats_dir):
    """The whole ZNS_STATS dump of the measured program.  ZNS_STATS=DIR/stats.%p.json:
    build/bench/timeit runs under the same LD_PRELOAD and dumps its own (near empty) stats at its
    exit, after the program's; the program is the one that allocated the most."""
    best = None
    for name in os.listdir(stats_dir):
        try:
            with open(os.path.join(stats_dir, name)) as f:
                doc = json.load(f)
        except (OSError, ValueError):
            continue
        finally:
            os.unlink(os.path.join(stats_dir, name))
        n = doc.get("totals", {}).get("allocated", 0)
        if best is None or n > best[0]:
            best = (n, doc)
    return best[1] if best else None


def secure_hints(doc):
    """Whatever the stats dump says about secure mode (keys naming "secure" or "quarantine"), if anything."""
    out = {}
    for where in (doc, doc.get("totals", {})):
        for k, v in where.items():
            if "secure" in k.lower() or "quarantine" in k.lower():
                out[k] = v
    return out


def stage_checks(ctx):
    """ZNS-Slab only, three variants run back to back in each round (the first one rotates from round to
    round): zns (the default build), zns-unchecked (-DZNS_UNCHECKED: the free fast path's misuse checks
    compiled out), zns-secure (the default build under ZNS_SECURE=1).
    (a) callgrind instructions per malloc+free pair at each of checks_sizes (deterministic: once);
    (b) the micro workloads that matter: pair at checks_sizes, batch, churn 1 and 2 threads, prodcons;
    (c) build/bench/workload --scale checks_wl_scale (the `make run` workload) timed as a process."""
    c = ctx.cfg
    info = ctx.stage_extra.setdefault("checks", {"variants": CHECKS_VARIANTS, "secure_env": CHECKS_SECURE_ENV,
                                                 "warnings": []})
    if "zns" not in ctx.order:
        for v in CHECKS_VARIANTS:
            ctx.store.fail("checks", "(stage)", v, "ZNS-Slab is not available")
        return
    unchecked = ctx.allocs["zns-unchecked"]
    if unchecked.problem:
        ctx.store.fail("checks", "(stage)", "zns-unchecked", unchecked.problem)
    else:
        with open(unchecked.lib, "rb") as f:
            info["unchecked_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
        if unchecked.stale:
            log("WARNING: " + unchecked.stale)
            info["warnings"].append(unchecked.stale)
    variants = [(v, unchecked if v == "zns-unchecked" else ctx.allocs["zns"],
                 CHECKS_SECURE_ENV if v == "zns-secure" else {}) for v in CHECKS_VARIANTS
                if not (v == "zns-unchecked" and unchecked.problem)]

    # (a) instructions per pair
    n = c["callgrind_pairs"]
    for size in c["checks_sizes"]:
        key = "ir/%d" % size
        for v, alloc, env in variants:
            if not shutil.which("valgrind"):
                ctx.store.fail("checks", key, v, "valgrind not installed")
                continue
            irs = {}
            for pairs in (n, 0):
                cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", ctx.bin("pairs"),
                       str(pairs), str(size)]
                r = run_proc(ctx, cmd, alloc, extra_env=env, timeout=600)
                m = re.search(r"Collected : (\d+)", r.err)
                if r.error or not m:
                    ctx.store.fail("checks", key, v, r.error or "no 'Collected' line: " + tail(r.err))
                    break
                irs[pairs] = int(m.group(1))
            else:
                ctx.store.add("checks", key, v, dict(ir_n=irs[n], ir_0=irs[0], pairs=n, per_pair=(irs[n] - irs[0]) / n))
                log("  checks callgrind %4d B %-14s %.1f instructions per pair" % (size, v, (irs[n] - irs[0]) / n))

    # (b) and (c), interleaved rounds
    groups = [("pair", "^pair/(%s)$" % "|".join(str(x) for x in c["checks_sizes"])), ("batch", "^batch/"),
              ("churn", "^churn/"), ("prodcons", "^prodcons/")]
    stats_dir = tempfile.mkdtemp(prefix="zns-bench-checks.")
    wl = [ctx.bin("workload"), "--scale", str(c["checks_wl_scale"])]
    try:
        for rnd in range(ctx.rounds):
            k = rnd % len(variants)
            order = variants[k:] + variants[:k]   # who runs first rotates: no variant always follows another
            for group, filt in groups:
                for v, alloc, env in order:
                    cmd = [ctx.bin("micro"), "--benchmark_filter=" + filt, "--benchmark_format=json",
                           "--benchmark_min_time=%g" % c["micro_min_time"]]
                    doc, r = run_json(ctx, "checks", "micro/" + group, v, cmd, alloc, gbench=True,
                                      extra_env=env, timeout=900)
                    if doc is None:
                        continue
                    for b in doc.get("benchmarks", []):
                        name = "micro/" + b["name"].replace("/real_time", "")
                        if b.get("error_occurred"):
                            ctx.store.fail("checks", name, v, "benchmark error: %s" % b.get("error_message"))
                        elif b.get("items_per_second"):
                            ctx.store.add("checks", name, v, dict(round=rnd, ns=1e9 / b["items_per_second"],
                                                                  cpu_ns=b.get("proc_cpu_ns_per_item")))
            walls = []
            for v, alloc, env in order:
                r = run_proc(ctx, wl, alloc, extra_env=dict(env, ZNS_STATS=os.path.join(stats_dir, "stats.%p.json")),
                             timeout=900)
                dump = read_stats_dump(stats_dir)
                if r.error:
                    ctx.store.fail("checks", "workload", v, r.error)
                    continue
                if not dump or not dump.get("totals", {}).get("allocated"):
                    ctx.store.fail("checks", "workload", v, "the preload did not take effect (no ZNS_STATS dump "
                                                            "with allocations)")
                    continue
                m = re.search(r"checksum: (\w+)", r.out)
                d = dict(round=rnd, wall=r.wall, cpu=r.cpu, rss_mb=r.maxrss_kb / 1024.0,
                         checksum=m.group(1) if m else None, allocated=dump["totals"]["allocated"])
                hints = secure_hints(dump)
                if hints:
                    d["secure_stats"] = hints
                ctx.store.add("checks", "workload", v, d)
                walls.append("%s %.2f s" % (v, r.wall))
            log("checks: round %d/%d done (workload wall: %s)" % (rnd + 1, ctx.rounds, ", ".join(walls)))
    finally:
        shutil.rmtree(stats_dir, ignore_errors=True)


# ---- machine description ---------------------------------------------------------------------------
def sh(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, shell=isinstance(cmd, str)).stdout.strip()
    except Exception:
        return ""


def machine_info(ctx):
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
            info["cpu"] = m.group(1) if m else "?"
    except OSError:
        info["cpu"] = "?"
    info["cores"] = os.cpu_count()
    info["kernel"] = platform.release()
    info["os"] = sh(". /etc/os-release && echo $PRETTY_NAME")
    info["glibc"] = platform.libc_ver()[1]
    info["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = int(f.readline().split()[1]) / 1048576.0
    except OSError:
        pass
    info["hypervisor"] = "yes" if "hypervisor" in open("/proc/cpuinfo").read() else "no"
    pk = {}
    for p in ["libjemalloc2", "libmimalloc2.0", "libtcmalloc-minimal4", "libbenchmark-dev", "redis-server",
              "sqlite3", "python3", "valgrind", "libc6"]:
        v = sh(["dpkg-query", "-W", "-f=${Version}", p])
        pk[p] = v or "not installed"
    info["packages"] = pk
    info["git"] = sh(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]) or "?"
    info["git_dirty"] = bool(sh(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no", "--", "core", "shim", "tier"]))
    zlib = ctx.allocs["zns"].lib
    if os.path.exists(zlib):
        with open(zlib, "rb") as f:
            info["zns_sha256"] = hashlib.sha256(f.read()).hexdigest()[:16]
    return info


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


def probe(ctx):
    """The machine's state now (bench/probe.c, no allocator preloaded): "clock_ghz=G rtt_ns=R", or "?"."""
    try:
        env = Alloc("glibc", None, "libc.so.6").env()
        env.pop("LD_PRELOAD", None)
        out = subprocess.run([ctx.bin("probe")], capture_output=True, text=True, timeout=60, env=env).stdout.strip()
        return out if out.startswith("clock_ghz=") else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


# ---- context -----------------------------------------------------------------------------------------
class Ctx:
    def __init__(self, args):
        self.mode = "quick" if args.quick else "full"
        self.cfg = dict(CONFIGS[self.mode])
        self.rounds = args.rounds or self.cfg["rounds"]
        self.build = os.path.abspath(args.build)
        self.timeit = self.bin("timeit")
        self.allocs = setup_allocators(os.path.abspath(args.zns), self.build,
                                       os.path.abspath(args.zns_unchecked) if args.zns_unchecked else None,
                                       copy=not args.report_only)
        wanted = args.allocators.split(",") if args.allocators else ORDER
        self.order = [a for a in ORDER if a in wanted and not self.allocs[a].problem]
        self.skipped = {a: self.allocs[a].problem for a in ORDER if a in wanted and self.allocs[a].problem}
        self.store = Store()
        self.gb_context = {}
        self.stage_times = {}
        self.stage_extra = {}   # stage: more provenance for runs[stage] (checks: the unchecked build's hash)
        self.load = []
        self.probe = []   # (stage, probe output) at the start and after each stage

    def bin(self, name):
        return os.path.join(self.build, "bench", name)

# ---- subset runs keep the other stages ------------------------------------------------------------
STAGE_OF = {"micro_cpu": "micro", "tier_cost": "tier"}   # data/errors keys written by another stage


def merge_previous(doc, path):
    """A run with --only replaces only its own stages in results.json: the other stages' data,
    errors, times and provenance (runs[stage]: date, git, mode, rounds, config) are kept, so
    RESULTS.md is regenerated from everything measured, each stage dated by its own run."""
    try:
        with open(path) as f:
            prev = json.load(f)
    except (OSError, ValueError) as e:
        log("could not read the previous %s (%s): writing this run's stages only" % (path, e))
        return doc
    ran = set(doc["runs"]) | {s for s in doc["stage_times"]}
    pm = prev.get("machine", {})
    prev_runs = prev.get("runs") or {   # results.json from before per-stage provenance: one run
        s: dict(mode=prev.get("mode"), rounds=prev.get("rounds"), config=prev.get("config", {}),
                date=pm.get("date"), git=pm.get("git"), git_dirty=pm.get("git_dirty"),
                zns_sha256=pm.get("zns_sha256"), order=prev.get("order", []),
                load=dict(map(tuple, prev.get("load", []))).get(s), time=prev.get("stage_times", {}).get(s))
        for s in set(STAGE_OF.get(k, k) for k in list(prev.get("data", {})) + list(prev.get("errors", {})))
        if s in STAGES}
    kept = [s for s in prev_runs if s not in ran and s in STAGES]
    for part in ("data", "errors"):
        for k, v in prev.get(part, {}).items():
            if STAGE_OF.get(k, k) in kept:
                doc[part][k] = v
    for s in kept:
        doc["runs"][s] = prev_runs[s]
        if s in prev.get("stage_times", {}):
            doc["stage_times"][s] = prev["stage_times"][s]
    if "micro" in kept and not doc.get("gb_context"):
        doc["gb_context"] = prev.get("gb_context", {})
    order = set(doc["order"]) | {a for s in kept for a in prev_runs[s].get("order", [])}
    doc["order"] = [a for a in ORDER if a in order]
    if kept:
        log("kept from the previous %s: %s" % (os.path.basename(path), ", ".join(s for s in STAGES if s in kept)))
    return doc


def write_report(ctx, doc, args):
    import report   # bench/report.py: tables, targets and charts
    doc = json.loads(json.dumps(doc, default=str))
    ctx.store.data, ctx.store.errors = doc["data"], doc["errors"]
    ctx.runs, ctx.stage_times, ctx.gb_context = doc["runs"], doc["stage_times"], doc["gb_context"]
    ctx.order = doc["order"]
    ctx.stages = [s for s in STAGES if s in ctx.runs]
    plots = report.make_plots(ctx, args.plots)
    text = report.render(ctx, plots, os.path.dirname(os.path.abspath(args.out)))
    with open(args.out, "w") as f:
        f.write(text)
    log("wrote %s, %s and %d charts in %s (%.0f s)" % (args.out, args.json, len(plots.get("files", [])), args.plots, ctx.total_time))


def report_only(ctx, args):
    with open(args.json) as f:
        doc = json.load(f)
    if "runs" not in doc:   # written before per-stage provenance: take it from the top level
        doc = merge_previous(dict(data={}, errors={}, runs={}, stage_times={}, gb_context={}, order=[]), args.json)
        with open(args.json) as f:
            old = json.load(f)
        doc.update({k: old[k] for k in ("mode", "rounds", "config", "machine", "skipped", "load") if k in old})
    ctx.mode, ctx.rounds, ctx.cfg = doc.get("mode", ctx.mode), doc.get("rounds", ctx.rounds), doc.get("config", ctx.cfg)
    ctx.machine, ctx.skipped, ctx.load = doc["machine"], doc.get("skipped", {}), [tuple(x) for x in doc.get("load", [])]
    ctx.probe = [tuple(x) for x in doc.get("probe", [])]
    ctx.total_time, ctx.complete = sum(doc["stage_times"].values()), True
    ctx.ran_now = [s for s, r in doc["runs"].items() if r.get("date") == ctx.machine.get("date")]
    write_report(ctx, doc, args)
    return 0

# ---- main ----------------------------------------------------------------------------------------------
SYSTEM_PY = "/usr/bin/python3"   # Debian's, with python3-matplotlib (make deps-bench installs it)


def need_matplotlib():
    """The charts need matplotlib: under a python3 without it (a pyenv one first in PATH), run again
    under Debian's, which make deps-bench equips, rather than write a report without charts."""
    try:
        import matplotlib  # noqa: F401
        return
    except ImportError:
        pass
    if os.path.exists(SYSTEM_PY) and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PY) \
            and not os.environ.get("ZNS_BENCH_REEXEC"):
        log("%s has no matplotlib: running again under %s" % (sys.executable, SYSTEM_PY))
        os.environ["ZNS_BENCH_REEXEC"] = "1"
        os.execv(SYSTEM_PY, [SYSTEM_PY, os.path.abspath(__file__)] + sys.argv[1:])
    log("WARNING: no matplotlib (apt-get install python3-matplotlib): RESULTS.md will have no charts")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer rounds, sizes and operations (a few minutes)")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"), help="the build directory (default build/)")
    ap.add_argument("--zns", default=os.path.join(ROOT, "build", "libzns_slab.so"), help="the ZNS-Slab shim")
    ap.add_argument("--zns-unchecked", help="the shim built with -DZNS_UNCHECKED, stage checks only "
                                            "(default BUILD/unchecked/libzns_slab.so)")
    ap.add_argument("--only", help="comma-separated stages: " + ",".join(STAGES))
    ap.add_argument("--allocators", help="comma-separated subset of " + ",".join(ORDER))
    ap.add_argument("--rounds", type=int, help="override the number of rounds")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: regenerate RESULTS.md and the charts from results.json")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "RESULTS.md"))
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results.json"))
    ap.add_argument("--plots", default=os.path.join(ROOT, "bench", "plots"))
    args = ap.parse_args()
    need_matplotlib()
    stages = args.only.split(",") if args.only else [s for s in STAGES if not (args.quick and s in QUICK_SKIPS)]
    for s in stages:
        if s not in STAGES:
            ap.error("unknown stage %r (choose from %s)" % (s, ", ".join(STAGES)))

    ctx = Ctx(args)
    if args.report_only:
        return report_only(ctx, args)
    for b in (("micro", "latency", "memory", "threads", "pairs", "timeit", "probe") + (("tier", "workload") if "tier" in stages else ()) +
              (("workload",) if "checks" in stages or "programs" in stages else ())):
        if not os.access(ctx.bin(b), os.X_OK):
            sys.exit("run_bench: %s is not built (make bench-build)" % ctx.bin(b))
    for a, why in ctx.skipped.items():
        log("%s: skipped: %s" % (a, why))
    if "zns" not in ctx.order:
        log("WARNING: ZNS-Slab itself is not available; only the peers are measured")
    ctx.machine = machine_info(ctx)
    log("mode %s, %d rounds, allocators: %s; load average %s" % (ctx.mode, ctx.rounds, ", ".join(ctx.order), loadavg()))
    t_start = time.monotonic()
    ctx.load.append(("start", loadavg()))
    ctx.probe.append(("start", probe(ctx)))
    complete = True
    try:
        for s in stages:
            t0 = time.monotonic()
            log("stage %s ..." % s)
            try:
                globals()["stage_" + s](ctx)
            except KeyboardInterrupt:
                raise
            except Exception:   # a harness bug in one stage: report it, keep the rest
                ctx.store.fail(s, "(stage)", "all", "harness error: " + traceback.format_exc().strip().splitlines()[-1])
                traceback.print_exc()
            ctx.stage_times[s] = time.monotonic() - t0
            ctx.load.append((s, loadavg()))
            ctx.probe.append((s, probe(ctx)))
            log("stage %s done in %.0f s (total %.0f s)" % (s, ctx.stage_times[s], time.monotonic() - t_start))
    except KeyboardInterrupt:
        complete = False
        log("interrupted: writing what was measured so far")
    ctx.total_time = time.monotonic() - t_start
    ctx.stages = stages
    ctx.ran_now = [s for s in stages if s in ctx.stage_times]
    ctx.complete = complete

    runs = {s: dict(mode=ctx.mode, rounds=ctx.rounds, config=ctx.cfg, date=ctx.machine["date"],
                    git=ctx.machine["git"], git_dirty=ctx.machine["git_dirty"],
                    zns_sha256=ctx.machine.get("zns_sha256"), order=ctx.order,
                    load=dict(ctx.load).get(s), probe=dict(ctx.probe).get(s), time=ctx.stage_times.get(s), **ctx.stage_extra.get(s, {}))
            for s in stages if s in ctx.stage_times}
    doc = dict(mode=ctx.mode, rounds=ctx.rounds, config=ctx.cfg, machine=ctx.machine, order=ctx.order,
               skipped=ctx.skipped, data=ctx.store.data, errors=ctx.store.errors, load=ctx.load, probe=ctx.probe,
               stage_times=ctx.stage_times, gb_context=ctx.gb_context, runs=runs)
    if args.only and os.path.exists(args.json):
        doc = merge_previous(doc, args.json)
    with open(args.json, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    write_report(ctx, doc, args)   # from what was written: a subset run and a full run report alike
    return 0 if complete else 130


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
