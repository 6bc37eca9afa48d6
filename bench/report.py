"""Tables, targets and charts for bench/run_bench.py (RESULTS.md and bench/plots/*.png)."""
import os
import statistics
import sys

PEERS = ["jemalloc", "mimalloc", "tcmalloc"]
STAGE_ORDER = ["callgrind", "micro", "latency", "memory", "threads", "programs", "redis", "tier", "checks"]
COLORS = {"glibc": "#7f7f7f", "jemalloc": "#1f77b4", "mimalloc": "#2ca02c", "tcmalloc": "#ff7f0e", "zns": "#d62728",
          "zns-unchecked": "#ff9896", "zns-secure": "#8c564b"}

MICRO_ROWS = (["pair/%d" % s for s in (8, 16, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096)] +
              ["batch/100", "batch/1000", "batch/100000", "churn/threads:1", "prodcons", "churn/threads:2"])
MICRO_WORKLOAD = {"pair": "1 pair", "batch": "2 batch", "churn/threads:1": "3 churn", "prodcons": "4 prod/cons",
                  "churn/threads:2": "5 churn x2"}


def workload_of(row):
    for k, v in MICRO_WORKLOAD.items():
        if row == k or row.startswith(k + "/"):
            return v
    return ""


def summ(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return statistics.median(xs), min(xs), max(xs)


def num(x, digits=None):
    if x is None:
        return "-"
    if digits is None:
        ax = abs(x)
        digits = 0 if ax >= 1000 else 1 if ax >= 10 else 2 if ax >= 1 else 3
    return "{:,.{}f}".format(x, digits)


def cell(s, digits=None, spread=True):
    if s is None:
        return "-"
    m, lo, hi = s
    if not spread or lo == hi:
        return num(m, digits)
    return "%s (%s–%s)" % (num(m, digits), num(lo, digits), num(hi, digits))


def scfg(ctx, stage):
    """The configuration a stage was measured with (a subset run keeps older stages' own)."""
    c = dict(ctx.cfg)
    c.update((getattr(ctx, "runs", {}).get(stage) or {}).get("config") or {})
    return c


def ratio(x, digits=2):
    return "-" if x is None else "%.*fx" % (digits, x)


MIN_RUNS = 3   # a median of fewer runs decides no target (issue 4: "medians of at least 3 runs")
NOT_MEASURED = "**not measured** (count as not met): "   # then the cases without a verdict
STAGE_OF = {"micro_cpu": "micro", "tier_cost": "tier"}


def stage_rounds(ctx, stage):
    """How many runs of each cell the stage made (memory and threads: at most 3)."""
    st = STAGE_OF.get(stage, stage)
    r = (getattr(ctx, "runs", {}).get(st) or {}).get("rounds") or ctx.rounds
    return min(r, 3) if st in ("memory", "threads") else r


class View:
    """Medians per allocator for one measurement, and comparisons with the peers.  A cell some of
    whose runs failed shows how many it has ("2 of 5 runs"); with fewer than MIN_RUNS (or fewer than
    the stage made, when it made fewer) it is `thin` and decides no target."""

    def __init__(self, ctx, stage, key, getter):
        self.order = ctx.order
        self.s = {}
        self.n = {}
        self.err = {}
        self.rounds = stage_rounds(ctx, stage)
        for a in ctx.order:
            vals = [x for x in (getter(v) for v in ctx.store.values(stage, key, a)) if x is not None]
            self.s[a] = summ(vals)
            self.n[a] = len(vals)
            e = ctx.store.error(stage, key, a)
            if e and self.s[a] is None:
                self.err[a] = e

    def thin(self, a):
        return self.n.get(a, 0) < min(MIN_RUNS, self.rounds)

    def missing(self, a):
        """Why allocator a gives this measurement no verdict, or None when it does."""
        if self.s.get(a) is None:
            return "failed" if a in self.err else "not measured"
        if self.thin(a):
            return "%d of %d runs" % (self.n[a], self.rounds)
        return None

    def med(self, a):
        return self.s[a][0] if self.s.get(a) else None

    def best_peer(self, lower_is_better=True):
        cands = [(self.med(p), p) for p in PEERS if self.med(p) is not None]
        if not cands:
            return None, None
        v, p = min(cands) if lower_is_better else max(cands)
        return p, v

    def vs_best(self, lower_is_better=True):
        p, v = self.best_peer(lower_is_better)
        z = self.med("zns")
        if p is None or z is None or v == 0:
            return None, p
        return z / v, p

    def cells(self, digits=None, spread=True):
        out = []
        for a in self.order:
            if self.s.get(a):
                c = cell(self.s[a], digits, spread)
                out.append(c + (" [%d of %d runs]²" % (self.n[a], self.rounds) if self.n[a] < self.rounds else ""))
            elif a in self.err:
                out.append("FAILED¹")
            else:
                out.append("-")
        return out


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(lines)


def mark(ok):
    if isinstance(ok, str):
        return ok
    return "—" if ok is None else ("met" if ok else "**not met**")


# ---- the report ---------------------------------------------------------------------------------------
def render(ctx, plots, outdir):
    m = ctx.machine
    out = []
    w = out.append
    w("# ZNS-Slab benchmark results")
    w("")
    w("Generated by `make bench%s` (bench/run_bench.py) on %s%s. **Do not edit by hand**: rerun the "
      "harness. Raw numbers: [results.json](results.json)." %
      (" QUICK=1" if ctx.mode == "quick" else "", m["date"],
       "" if ctx.complete else " — **INCOMPLETE: the run was interrupted**"))
    w("")
    w("## Machine and method")
    w("")
    w("- CPU: %s, %s cores (hypervisor: %s), %.1f GiB RAM; kernel %s; %s; glibc %s" %
      (m["cpu"], m["cores"], m["hypervisor"], m.get("mem_gib", 0), m["kernel"], m["os"], m["glibc"]))
    w("- Load average (1/5/15 min) at start and after each stage: %s. This is a shared, noisy VM: "
      "other jobs ran at the same time, so spreads are wide; compare medians measured in the same run only." %
      "; ".join("%s %s" % (k, v) for k, v in ctx.load))
    probes = [(k, v) for k, v in getattr(ctx, "probe", []) if v != "?"]
    if probes:
        def fmt(v):
            f = dict(kv.split("=", 1) for kv in v.split())
            return "%s GHz, %s ns" % (f.get("clock_ghz", "?"), f.get("rtt_ns", "?"))
        w("- The machine's state at start and after each stage (build/bench/probe, no allocator: the clock a "
          "chain of dependent adds ran at, and the round trip of a cache line between the two cores): %s. "
          "On this VM both move between runs and may within one (the round trip has been seen at ~230 ns "
          "and at 410–560 ns); the rows where one thread frees what another allocated (prodcons, handoff) "
          "move with the round trip: prodcons by 4x, for every allocator alike." %
          "; ".join("%s %s" % (k, fmt(v)) for k, v in probes))
    w("- ZNS-Slab: git %s%s, shim sha256 %s (a private copy of build/libzns_slab.so taken at the start)." %
      (m["git"], " + uncommitted changes in core/, shim/ or tier/" if m["git_dirty"] else "", m.get("zns_sha256", "?")))
    w("- Peers (Debian packages, preloaded, default settings): " + ", ".join(
        "%s %s" % (p, v) for p, v in m["packages"].items()) + ".")
    w("- Mode **%s**: %d interleaved rounds (memory and threads: %d); in each round every allocator runs the "
      "same workload back to back, in the order %s in the first round, turned by one each round after "
      "(the order of each round: its first allocator moves to the end). Tables show the median over "
      "rounds and (min–max); a cell some of whose runs failed says how many it has (²), and one with "
      "fewer than %d decides no target." %
      (ctx.mode, ctx.rounds, min(ctx.rounds, 3), ", ".join(ctx.order), MIN_RUNS))
    earlier = [(st, r) for st, r in getattr(ctx, "runs", {}).items() if st not in ctx.ran_now]
    if earlier:
        w("- This run measured only: %s. Kept from earlier runs (results.json; rerun the stage to refresh): %s." %
          (", ".join(ctx.ran_now) or "nothing", "; ".join(
              "%s (%s, git %s%s, %s mode, %s rounds)" % (st, r.get("date"), r.get("git"),
                                                       " + uncommitted" if r.get("git_dirty") else "",
                                                       r.get("mode"), r.get("rounds"))
              for st, r in sorted(earlier, key=lambda x: STAGE_ORDER.index(x[0]) if x[0] in STAGE_ORDER else 99))))
    if ctx.skipped:
        w("- Not measured: " + "; ".join("%s: %s" % (a, why) for a, why in ctx.skipped.items()) + ".")
    w("- Every allocator runs the same binaries; glibc = no preload, the others with `LD_PRELOAD` of "
      "`%s`, `%s`, `%s` and the shim. The micro, latency, memory and threads programs report where "
      "`malloc` was bound (dladdr), and so does callgrind's build/bench/pairs: a run whose preload did "
      "not take effect counts as failed; redis-server is checked in /proc/PID/maps; for the whole "
      "programs (python3, sqlite3, workload) only a loader's refusal of the preload is caught. Allocator-tuning "
      "environment variables (MALLOC_*, ZNS_*, ...) are removed." % tuple(
          os.path.basename(ctx.allocs[p].lib) for p in PEERS))
    w("- Best peer = the best median of jemalloc, mimalloc and tcmalloc for that row; \"zns / best\" < 1 "
      "means ZNS-Slab is better. Stage times: %s; sum %.0f s." %
      (", ".join("%s %.0f s" % kv for kv in ctx.stage_times.items()), sum(ctx.stage_times.values())))
    w("")

    targets = []   # (target, measured, ok)
    sections = []
    if "callgrind" in ctx.stages:
        sections.append(section_callgrind(ctx))
    if "micro" in ctx.stages:
        sections.append(section_micro(ctx, targets))
    if "latency" in ctx.stages:
        sections.append(section_latency(ctx, targets))
    if "memory" in ctx.stages:
        sections.append(section_memory(ctx, targets))
    if "threads" in ctx.stages:
        sections.append(section_threads(ctx))
    if "redis" in ctx.stages:
        sections.append(section_redis(ctx, targets))
    if "programs" in ctx.stages:
        sections.append(section_programs(ctx))
    if "tier" in ctx.stages:
        sections.append(section_tier(ctx))
    if "checks" in ctx.stages:
        sections.append(section_checks(ctx))

    for stage, names in TARGET_STAGES.items():   # a target whose stage has no results is not met either
        if stage not in ctx.stages:
            for t in names:
                targets.append((t, "**not measured**: stage %s has no results (make bench BENCH_ARGS='--only %s')" %
                                (stage, stage), "**not measured**"))
    w("## Targets (issue 4)")
    w("")
    peers = [p for p in PEERS if p in ctx.order]
    w("Each target is a ratio to the best of %s measured in the same run%s. A target some of whose "
      "cases were not measured (a crash, a missing program, fewer than %d runs) is not met." %
      (", ".join(peers) or "no peer",
       "" if len(peers) == len(PEERS) else " (**not measured: %s**, so the best peer is the best of fewer)" %
       ", ".join(p for p in PEERS if p not in peers), MIN_RUNS))
    w("")
    w(table(["target", "measured", "verdict"], [(t, meas, mark(ok)) for t, meas, ok in targets]))
    w("")
    # Why the targets not met are not met: a hand-written analysis (bench/WHY.md), kept next to
    # the harness and included as is; it names the commit and the figures it was written from.
    why = os.path.join(os.path.dirname(os.path.abspath(__file__)), "WHY.md")
    if os.path.exists(why):
        with open(why) as f:
            text = f.read().strip()
        w(why_banner(ctx, text))
        w(text)
        w("")
    for s in sections:
        w(s)
        w("")
    if plots.get("files"):
        w("## Charts")
        w("")
        for f in plots["files"]:
            w("![%s](%s)" % (os.path.basename(f), os.path.relpath(f, outdir)))
            w("")
    elif plots.get("error"):
        w("## Charts")
        w("")
        w("No charts: %s" % plots["error"])
        w("")
    w("## Failures")
    w("")
    fails = []
    for stage, keys in ctx.store.errors.items():
        for key, allocs in keys.items():
            for a, msgs in allocs.items():
                fails.append("- %s / %s / %s: %s%s" % (stage, key, a, msgs[0],
                                                       " (%d times)" % len(msgs) if len(msgs) > 1 else ""))
    w("¹ FAILED in a table: every run of that cell failed; the reason is listed here. "
      "² [n of N runs]: the other runs of that cell failed (listed here); the median is of n.")
    w("")
    w("\n".join(fails) if fails else "None: every run of every allocator completed.")
    w("")
    return "\n".join(out)


# The targets each stage decides (render: a stage without results leaves its targets "not measured").
TARGET_STAGES = {
    "micro": ["Workloads 1–5 time ≤ 0.9x best peer and ≥ 2x faster than glibc"],
    "latency": ["Latency p99 and p99.9 at or below the best peer", "No refill spike above 1 µs at p99.9 (zns)"],
    "memory": ["Memory overhead ≤ 0.5% at 64, 128 and 256 B", "Memory overhead below every peer at every size"],
    "redis": ["redis RSS ≤ 0.9x redis with its own jemalloc", "redis SET throughput within noise of jemalloc",
              "redis GET throughput within noise of jemalloc"],
}
WHY_MARK = "<!-- for-run:"


def why_banner(ctx, text):
    """bench/WHY.md is written by hand for one run: its first line `<!-- for-run: git X -->` names
    the commit of that run.  When the target stages' results come from another run, say so above it
    (its figures are then not this table's)."""
    first = text.splitlines()[0] if text else ""
    written = first[len(WHY_MARK):].split("-->")[0].strip() if first.startswith(WHY_MARK) else None
    runs = {x.strip() for x in written.split(",")} if written else set()   # "git X, git Y": stages of two runs
    now = sorted({"git %s" % (ctx.runs.get(st) or {}).get("git") for st in TARGET_STAGES if st in ctx.runs})
    if written and set(now) <= runs:
        return ""
    return ("> **The analysis below was written for %s; the targets above come from %s: its figures may not "
            "match the tables** (rewrite bench/WHY.md after a run, and its first line).\n" %
            ("the run at " + written if written else "another run (it names none)", " and ".join(now) or "no run"))


def section_callgrind(ctx):
    rows = []
    v = View(ctx, "callgrind", "pair64", lambda d: d["per_pair"])
    for a in ctx.order:
        if v.med(a) is not None:
            rows.append((a, "%.1f" % v.med(a)))
        else:
            rows.append((a, "FAILED¹" if a in v.err else "-"))
    r, p = v.vs_best()
    txt = ["## Instructions per malloc+free pair (callgrind)", "",
           "`valgrind --tool=callgrind build/bench/pairs N 64` under each allocator: instructions of N = %d "
           "pairs of malloc(64)+free minus those of N = 0, divided by N (the loop adds ~4). Deterministic: "
           "one run each." % scfg(ctx, "callgrind")["callgrind_pairs"], "",
           table(["allocator", "instructions per pair"], rows), ""]
    if r is not None:
        txt.append("ZNS-Slab: %.2fx the best peer (%s)." % (r, p))
    return "\n".join(txt)


def section_micro(ctx, targets):
    rows = []
    verdicts = []
    missing = []   # (row, why) of the target's rows that have no verdict: each counts as not met
    for row in MICRO_ROWS + ["prodcons_queue_only", "handoff/16", "handoff/1024"]:
        v = View(ctx, "micro", row, lambda x: x)
        group = row.split("/")[0].replace("_queue_only", "")
        for a in ctx.order:   # a crash loses the whole group (one process per group)
            if v.s.get(a) is None and a not in v.err and ctx.store.error("micro", group, a):
                v.err[a] = ctx.store.error("micro", group, a)
        r, p = v.vs_best()
        g, z = v.med("glibc"), v.med("zns")
        speed = g / z if g and z else None
        ok = None
        if row in MICRO_ROWS:
            why = (("zns " + v.missing("zns")) if v.missing("zns") else
                   ("glibc " + v.missing("glibc")) if v.missing("glibc") else None if p else "no peer measured")
            if why:
                missing.append((row, why))
                ok = "**not measured** (%s)" % why
            else:
                ok = r <= 0.9 and speed >= 2.0
                verdicts.append((row, r, p, speed, ok))
        if all(v.s.get(a) is None and a not in v.err for a in ctx.order):
            continue
        rows.append([workload_of(row), row] + v.cells() + [p or "-", ratio(r), ratio(speed), mark(ok) if row in MICRO_ROWS else "(reference)"])
    txt = ["## Workloads 1–5: time per operation (Google Benchmark)", "",
           "ns per malloc+free (one item), median (min–max) over rounds; for the threaded rows, wall time "
           "divided by the items of both threads (so perfect 2-thread scaling halves it). Single-thread "
           "rows use CPU time (less disturbed by other jobs on this VM), threaded rows wall time. "
           "Target per row: zns / best peer ≤ 0.90 and glibc / zns ≥ 2.",
           "",
           "- pair/S: malloc(S) + write 1 byte + free. batch/N: N × malloc(64), then free all N in order.",
           "- churn: 8192 live blocks of uniform random size 16..4096 B; each op frees a random slot and "
           "mallocs a new block there. threads:2 = two such threads at once, each with its own ring.",
           "- prodcons: one thread mallocs (uniform 16..1024 B) and pushes the pointer on a lock-free SPSC "
           "ring (1024 slots); another thread reads a byte and frees it. prodcons_queue_only: the same "
           "ring without malloc/free (what the queue alone costs).",
           "- handoff/S (not an issue-4 workload; for reference): a thread mallocs 50,000 blocks of S bytes and "
           "exits; the benchmark's thread then frees them in random order (only the frees are timed). "
           "At 1024 B (50 MB) zns gave the emptied slabs back as they came in the first iteration (its "
           "depot's cap falls as the heap empties) and faulted them in again in the next; since c5dead5 "
           "it counts those refaults and keeps that much the next time (DESIGN.md \"The depot\"), as "
           "the peers keep the memory; before, most of that row's time was giving pages back, about "
           "0.7 us a page on this VM. At 16 B, since 1100d27, the freeing thread (it allocates 16 B "
           "blocks itself) takes each of the exited thread's slabs over at its first free into it, and "
           "its other frees there are its own (DESIGN.md \"Adoption on free\"); at 1024 B, a size it "
           "never allocates, every free stays a remote one.",
           "",
           table(["wl", "benchmark"] + ctx.order + ["best peer", "zns / best", "glibc / zns", "target"], rows), ""]
    met = [x for x in verdicts if x[4]]
    measured = "%d of %d rows meet both" % (len(met), len(MICRO_ROWS))
    if verdicts:
        worst = max(verdicts, key=lambda x: x[1])
        best = min(verdicts, key=lambda x: x[1])
        worst_g = min(verdicts, key=lambda x: x[3])
        measured += "; zns / best peer from %.2fx (%s) to %.2fx (%s vs %s); glibc / zns as low as %.2fx (%s)" % (
            best[1], best[0], worst[1], worst[0], worst[2], worst_g[3], worst_g[0])
    if missing:
        measured += "; " + NOT_MEASURED + ", ".join("%s (%s)" % m for m in missing)
    targets.append(("Workloads 1–5 time ≤ 0.9x best peer and ≥ 2x faster than glibc (each of %d rows)" % len(MICRO_ROWS),
                    measured, len(met) == len(MICRO_ROWS)))
    if verdicts:
        by_wl = {}
        for row, r, p, speed, ok in verdicts:
            by_wl.setdefault(workload_of(row), []).append((r, speed, ok, row))
        lines = []
        for wl, xs in by_wl.items():
            rs = [x[0] for x in xs]
            ss = [x[1] for x in xs]
            lines.append("- workload %s: zns / best peer %s, glibc / zns %s, target met in %d of %d rows" %
                         (wl, "%.2fx" % rs[0] if len(rs) == 1 else "%.2fx–%.2fx" % (min(rs), max(rs)),
                          "%.2fx" % ss[0] if len(ss) == 1 else "%.2fx–%.2fx" % (min(ss), max(ss)),
                          sum(1 for x in xs if x[2]), len(xs)))
        txt += ["Per workload:", ""] + lines + [""]
    # scaling
    one = View(ctx, "micro", "churn/threads:1", lambda x: x)
    two = View(ctx, "micro", "churn/threads:2", lambda x: x)
    sc = []
    for a in ctx.order:
        if one.med(a) and two.med(a):
            sc.append("%s %.2fx" % (a, one.med(a) / two.med(a)))
    crow = []
    for row in ["churn/threads:1", "churn/threads:2", "prodcons"]:
        v = View(ctx, "micro_cpu", row, lambda x: x)
        if any(v.s.get(a) for a in ctx.order):
            r, p = v.vs_best()
            crow.append([row] + v.cells() + [p or "-", ratio(r)])
    if crow:
        txt += ["CPU time of all threads of the process per item (getrusage), for the threaded rows: less "
                "sensitive than wall time to other jobs on the machine (a descheduled thread costs no CPU), "
                "but it includes the waiting threads' spinning. Not used for the targets.", "",
                table(["benchmark"] + ctx.order + ["best peer", "zns / best"], crow), ""]
    if sc:
        txt.append("Two-thread scaling of churn, wall (ns/op with 1 thread ÷ ns/op with 2; 2.0 = perfect on 2 "
                   "cores, lower when other jobs take a core): " + ", ".join(sc) + ".")
    c1 = View(ctx, "micro_cpu", "churn/threads:1", lambda x: x)
    c2 = View(ctx, "micro_cpu", "churn/threads:2", lambda x: x)
    cc = ["%s %.2fx" % (a, c2.med(a) / c1.med(a)) for a in ctx.order if c1.med(a) and c2.med(a)]
    if cc:
        txt += ["", "CPU cost of sharing (CPU ns per op with 2 threads ÷ with 1 thread; 1.0 = no contention "
                "cost): " + ", ".join(cc) + "."]
    return "\n".join(txt)


LATENCY_NAMES = ["mixed 16..4096 B", "small 16..256 B"]   # run_bench.LATENCY_SCENARIOS' names
LAT_ROWS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"), ("p99.99", "p9999"),
            ("max", "max"), ("mean", "mean"), ("> 1 µs per million", "over_1us_per_million")]


def section_latency(ctx, targets):
    txt = ["## Workload 6: latency of single calls (rdtsc)", "",
           "build/bench/latency: 8192 live blocks churned to a steady state, then %s ops (free a random "
           "slot, malloc a new block), each call timed alone between serialised TSC reads, the store "
           "buffer drained first (mfence: the bench's own write to each new block is not charged to the "
           "next call; bench/bench_common.h); the median "
           "cost of an empty timed region is subtracted; TSC calibrated against CLOCK_MONOTONIC. ns, "
           "median over rounds (min–max). max and the far tail are dominated by interrupts and "
           "preemption on this VM." % "{:,}".format(scfg(ctx, "latency")["latency_ops"]), ""]
    steps = sorted({round(d.get("tsc_step_ns", 0), 1) for sc in ctx.store.data.get("latency", {}).values()
                    for runs in sc.values() for d in runs if d.get("tsc_step_ns")})
    overheads = [d["timer_overhead_ns"] for sc in ctx.store.data.get("latency", {}).values()
                 for runs in sc.values() for d in runs if "timer_overhead_ns" in d]
    if steps:
        txt += ["Resolution: on this machine the TSC advances in steps of %s ns (%s), so every value is a "
                "multiple of that step and p50 values of one step mean \"at most ~%s ns\"; the empty timed "
                "region costs %.0f ns (subtracted)." % (", ".join("%g" % x for x in steps),
                                                         "measured: the smallest difference between distinct readings",
                                                         "%g" % steps[0], statistics.median(overheads)), ""]
    checks = []
    spike = []
    missing, spike_missing = [], []   # cases without a verdict: each counts as not met
    present = list(ctx.store.data.get("latency", {}).keys()) + list(ctx.store.errors.get("latency", {}).keys())
    for scen in LATENCY_NAMES + [x for x in dict.fromkeys(present) if x not in LATENCY_NAMES]:
        rows = []
        for op in ("malloc", "free"):
            for label, key in LAT_ROWS:
                v = View(ctx, "latency", scen, lambda d, op=op, key=key: d[op][key])
                r, p = v.vs_best()
                rows.append(["%s %s" % (op, label)] + v.cells(spread=label not in ("> 1 µs per million",)) +
                            [p or "-", ratio(r)])
                if scen not in LATENCY_NAMES:
                    continue
                why = ("zns " + v.missing("zns")) if v.missing("zns") else None if p else "no peer measured"
                if key in ("p99", "p999"):
                    if why:
                        missing.append("%s %s %s (%s)" % (scen.split()[0], op, label, why))
                    else:
                        checks.append((scen, op, label, r, p, v.med("zns")))
                if key == "p999":   # the spike: zns's worst round, not its median
                    if v.missing("zns"):
                        spike_missing.append("%s %s (zns %s)" % (scen.split()[0], op, v.missing("zns")))
                    else:
                        spike.append((scen, op, max(d[op][key] for d in ctx.store.values("latency", scen, "zns"))))
        if any(r[1:1 + len(ctx.order)] != ["-"] * len(ctx.order) for r in rows):
            txt += ["### %s" % scen, "", table(["call / percentile"] + ctx.order + ["best peer", "zns / best"], rows), ""]
    n_cases = len(LATENCY_NAMES) * 4
    bad = [c for c in checks if c[3] > 1.0]
    measured = "%d of %d at or below" % (len(checks) - len(bad), n_cases)
    if checks:
        worst = max(checks, key=lambda c: c[3])
        measured += "; worst %s %s %s: %.2fx %s" % (worst[0], worst[1], worst[2], worst[3], worst[4])
    if bad:
        measured += "; above: " + ", ".join("%s %s %s %.2fx" % (c[0].split()[0], c[1], c[2], c[3]) for c in bad)
    if missing:
        measured += "; " + NOT_MEASURED + ", ".join(missing)
    targets.append(("Latency p99 and p99.9 at or below the best peer (%d cases: %d scenarios × malloc/free × p99/p99.9)" %
                    (n_cases, len(LATENCY_NAMES)), measured, len(checks) - len(bad) == n_cases))
    over = [x for x in spike if x[2] > 1000]
    measured = ""
    if spike:
        worst = max(spike, key=lambda x: x[2])
        measured = "zns p99.9 at most %.0f ns in its worst round (%s %s)" % (worst[2], worst[0], worst[1])
    if over:
        measured += "; above 1 µs: " + ", ".join("%s %s %.0f ns" % x for x in over)
    if spike_missing:
        measured += "; " + NOT_MEASURED + ", ".join(spike_missing)
    targets.append(("No refill spike above 1 µs at p99.9 (zns)", measured.lstrip("; "),
                    not over and not spike_missing))
    return "\n".join(txt)


def section_threads(ctx):
    cases = sorted(ctx.store.data.get("threads", {}).keys(), key=lambda k: -int(k.split("x")[0]))
    txt = ["## Memory with many threads (reference; not an issue-4 workload)", "",
           "build/bench/threads --threads T --blocks N: T threads each malloc N blocks of each of 20 "
           "sizes (16, 64, ..., 928 B; written in full) and hold them at once (a thread-per-connection "
           "server whose threads keep a little state each); RSS is read while all live, then the threads "
           "free everything and exit and RSS is read again. Thread stacks are not counted (a first pass "
           "of T threads that allocate nothing leaves glibc's stack cache holding them). Overhead = RSS "
           "added while live − payload, in MiB; after exit = RSS the allocator still holds of threads that "
           "are gone, in MiB. Medians over rounds. A ZNS-Slab slab has one owner thread, so each "
           "(thread, size class) pair costs at least one page while its blocks live (DESIGN.md, Known "
           "limits); allocators whose threads draw blocks from shared spans (glibc, tcmalloc) pay for "
           "the blocks.", ""]
    rows, rows_after = [], []
    for k in cases:
        d = ctx.store.values("threads", k, "zns") or next((ctx.store.values("threads", k, a) for a in ctx.order
                                                          if ctx.store.values("threads", k, a)), [])
        pay = d[0]["payload_kb"] / 1024.0 if d else None
        t, n = k.split("x")
        label = "%s threads × %s × 20 sizes (payload %s MiB)" % (t, n, num(pay, 1))
        v = View(ctx, "threads", k, lambda x: x["overhead_kb"] / 1024.0)
        r, p = v.vs_best()
        rows.append([label] + v.cells(digits=1, spread=False) + [p or "-", ratio(r)])
        a = View(ctx, "threads", k, lambda x: x["after_exit_kb"] / 1024.0)
        r2, p2 = a.vs_best()
        rows_after.append([label] + a.cells(digits=1, spread=False) + [p2 or "-", ratio(r2)])
    txt += ["### Overhead while all threads live (MiB)", "",
            table(["case"] + ctx.order + ["best peer", "zns / best"], rows), "",
            "### Held after every thread freed its blocks and exited (MiB)", "",
            table(["case"] + ctx.order + ["best peer", "zns / best"], rows_after), ""]
    return "\n".join(txt)


def section_memory(ctx, targets):
    wanted = [str(x) for x in scfg(ctx, "memory").get("mem_sizes", [])]
    sizes = sorted(set(wanted) | set(ctx.store.data.get("memory", {})) | set(ctx.store.errors.get("memory", {})), key=int)
    txt = ["## Workload 7: memory of 1M live blocks", "",
           "build/bench/memory --size S: anonymous RSS (RssAnon) after the allocator is initialised "
           "(\"before\"), after %s blocks of S bytes each written in full (\"full\"), after freeing a "
           "random half, and after freeing all. Payload = count × S (the requested bytes). Overhead = "
           "(RSS_full − RSS_before − payload) / payload. Half = (RSS_half − RSS_before − payload/2) / "
           "(payload/2). Nothing is trimmed or purged on purpose (no malloc_trim, no waiting): as-is. "
           "Medians over rounds (the spread is small). File-backed pages (code: the allocator's and "
           "libc's) are not counted: a first call faults in up to 64 KiB of text around it at an "
           "alignment ASLR draws, which made the totals bimodal by 64 KiB for zns, tcmalloc and "
           "mimalloc alike (bench/memory.cpp); results.json keeps the totals (rss_*) and their "
           "file-backed change (file_delta). Results from before 2026-12-07 counted the totals." %
           "{:,}".format(scfg(ctx, "memory")["mem_count"]), ""]
    rows, rows_half, rows_left, rows_chase, rows_pte = [], [], [], [], []
    under_all = []
    small = []
    missing_all, missing_small = [], []   # sizes without a verdict: each counts as not met
    for size in sizes:
        v = View(ctx, "memory", size, lambda d: d["overhead_pct"])
        p, bv = v.best_peer()
        z = v.med("zns")
        diff = z - bv if z is not None and bv is not None else None
        rows.append(["%s B" % size] + v.cells(digits=2, spread=False) + [p or "-", "-" if diff is None else "%+.2f pp" % diff])
        why = ("zns " + v.missing("zns")) if v.missing("zns") else None if p else "no peer measured"
        if why:
            missing_all.append("%s B (%s)" % (size, why))
        else:
            under_all.append((int(size), z, bv, p, z < bv))
        if int(size) in (64, 128, 256):
            if v.missing("zns"):
                missing_small.append("%s B (zns %s)" % (size, v.missing("zns")))
            else:
                small.append((int(size), z))
        h = View(ctx, "memory", size, lambda d: d["half_overhead_pct"])
        hp, hb = h.best_peer()
        hz = h.med("zns")
        rows_half.append(["%s B" % size] + h.cells(digits=1, spread=False) + [hp or "-", "-" if hz is None or hb is None else "%+.1f pp" % (hz - hb)])
        left = View(ctx, "memory", size, lambda d: d["retained_after_free_all"] / 1048576.0)
        full = View(ctx, "memory", size, lambda d: (d.get("anon_full", d["rss_full"]) - d.get("anon_before", d["rss_before"])) / 1048576.0)
        rows_left.append(["%s B" % size] + ["%s / %s" % (num(full.med(a), 1), num(left.med(a), 1)) for a in ctx.order])
        c = View(ctx, "memory", size, lambda d: d.get("chase_ns"))
        if any(c.s.get(a) for a in ctx.order):   # (results from before 2026-12-03 have none)
            r, cp = c.vs_best()
            rows_chase.append(["%s B" % size] + c.cells(digits=0) + [cp or "-", ratio(r)])
            t = View(ctx, "memory", size, lambda d: d.get("vmpte_kb"))
            rows_pte.append(["%s B" % size] + t.cells(digits=0, spread=False))
    txt += ["### Overhead with all blocks live (%)", "",
            table(["size"] + ctx.order + ["best peer", "zns − best"], rows), "",
            "### Overhead after freeing a random half (% of the remaining payload; fragmentation)", "",
            table(["size"] + ctx.order + ["best peer", "zns − best"], rows_half), "",
            "### Anonymous resident MiB added by the blocks: with all live / after freeing all (memory not given back)", "",
            table(["size"] + ctx.order, rows_left), ""]
    if rows_chase:
        txt += ["### Locality: ns per step of a pointer chase through the live blocks in random order", "",
                "With all blocks live, each block holds a pointer to the next in a random permutation; "
                "the chain is followed for %s steps (`--hops`). It times what reaching a random live "
                "block costs under each allocator's layout (cache and TLB misses, page-table walks); "
                "not a target of issue 4, shown because a heap spread over more address space than "
                "its blocks need pays here and not in RSS (DESIGN.md \"What the groups cost\")." %
                "{:,}".format(scfg(ctx, "memory").get("mem_hops", 1000000)), "",
                table(["size"] + ctx.order + ["best peer", "zns / best"], rows_chase), "",
                "Page tables (VmPTE, kB) at that point, the bench's own arrays included:", "",
                table(["size"] + ctx.order, rows_pte), ""]
    not_run = ["%d B (not in this run's sizes)" % x for x in (64, 128, 256) if str(x) not in sizes]
    bad = [x for x in small if x[1] > 0.5]
    gaps = missing_small + not_run
    targets.append(("Memory overhead ≤ 0.5% at 64, 128 and 256 B",
                    "; ".join(x for x in [", ".join("%d B: %.2f%%" % x for x in small),
                                          "over by " + ", ".join("%.2f pp at %d B" % (x[1] - 0.5, x[0]) for x in bad) if bad else "",
                                          NOT_MEASURED + ", ".join(gaps) if gaps else ""] if x),
                    not bad and not gaps))
    bad = [u for u in under_all if not u[4]]
    n = len(sizes)
    targets.append(("Memory overhead below every peer at every size (%d sizes)" % n,
                    "below the best peer at %d of %d sizes%s%s" %
                    (len(under_all) - len(bad), n,
                     "" if not bad else "; above at " + ", ".join("%d B (zns %.2f%% vs %s %.2f%%)" % (u[0], u[1], u[3], u[2]) for u in bad),
                     "" if not missing_all else "; " + NOT_MEASURED + ", ".join(missing_all)),
                    len(under_all) - len(bad) == n))
    return "\n".join(txt)


def section_redis(ctx, targets):
    filled = any("rss_fill_mb" in d for runs in ctx.store.data.get("redis", {}).values() for v in runs.values() for d in v)
    n = scfg(ctx, "redis")["redis_n"]
    load = ("filled with exactly N = %d keys (`key:000000000000` .. `key:%012d`, redis-benchmark's own key names) "
            "of 100-byte values through `redis-cli --pipe`, then `redis-benchmark -t set -n N -r N -d 100 -P 16` "
            "(random overwrites of those keys: every SET frees a value and allocates one), then the same with "
            "`-t get` (every GET a hit). RSS = VmRSS of the server after the SET run." % (n, n - 1) if filled else
            "loaded with `redis-benchmark -t set -n %d -r %d -d 100 -P 16` (random keys: about 63%% of them "
            "distinct; this run predates the exact fill), then the same with `-t get`. RSS = VmRSS of the server "
            "after the SET load." % (n, n))
    txt = ["## Workload 8: redis-server", "",
           "redis-server %s on 127.0.0.1 (random free port, --save '' --appendonly no), %s \"jemalloc\" here is "
           "redis as shipped by Debian (it links libjemalloc.so.2; no preload); the others are preloaded into "
           "the same binary. Only the server runs under the allocator; redis-benchmark is a plain client on the "
           "same 2 cores." % (ctx.machine["packages"].get("redis-server", "?"), load), ""]
    allocs = [a for a in ["jemalloc", "mimalloc", "tcmalloc", "zns"] if a in ctx.order]
    rows = []
    V = {}
    for label, key, lower in [("SET requests/s", "set_rps", False), ("GET requests/s", "get_rps", False),
                              ("RSS after the fill (MiB)", "rss_fill_mb", True),
                              ("RSS after SET run (MiB)", "rss_mb", True), ("RSS after GET (MiB)", "rss_after_get_mb", True),
                              ("peak RSS, VmHWM (MiB)", "hwm_mb", True), ("used_memory (MiB)", "used_memory_mb", True),
                              ("keys", "keys", True), ("RSS at start (MiB)", "rss_start_mb", True)]:
        v = View(ctx, "redis", "redis", lambda d, key=key: d.get(key))
        V[key] = v
        row = [label]
        for a in allocs:
            row.append(cell(v.s[a], spread=key not in ("keys",)) if v.s.get(a) else ("FAILED¹" if a in v.err else "-"))
        j, z = v.med("jemalloc"), v.med("zns")
        row.append(ratio(z / j) if j and z else "-")
        rows.append(row)
    txt.append(table(["metric"] + [("jemalloc (as shipped)" if a == "jemalloc" else a + " (preload)") for a in allocs] + ["zns / jemalloc"], rows))
    def gap(v):   # why a redis target has no verdict (counts as not met), or None
        w = [("%s %s" % (a, v.missing(a))) for a in ("zns", "jemalloc") if v.missing(a)]
        return NOT_MEASURED + ", ".join(w) if w else None

    rss = V["rss_mb"]
    j, z = rss.med("jemalloc"), rss.med("zns")
    t = "redis RSS ≤ 0.9x redis with its own jemalloc"
    if gap(rss):
        targets.append((t, gap(rss), False))
    else:
        targets.append((t, "%.1f MiB vs %.1f MiB: %.2fx" % (z, j, z / j), z / j <= 0.9))
    for key, name in (("set_rps", "SET"), ("get_rps", "GET")):
        v = V[key]
        s = v.s.get("jemalloc")
        z = v.med("zns")
        if gap(v):
            targets.append(("redis %s throughput within noise of jemalloc" % name, gap(v), False))
        else:
            noise = max(0.05, (s[2] - s[1]) / s[0])
            ok = z >= s[0] * (1 - noise)
            verdict = ok
            if ok and noise > 0.15:
                verdict = "met only because the noise is wide (inconclusive)"
            targets.append(("redis %s throughput within noise of jemalloc (noise = max(5%%, jemalloc's min–max spread) = %.0f%%)" % (name, noise * 100),
                            "%.0f vs %.0f requests/s: %.2fx" % (z, s[0], z / s[0]), verdict))
    return "\n".join(txt)


def section_programs(ctx):
    txt = ["## Workload 9: whole programs", "",
           "Timed as processes by build/bench/timeit (fork, exec, wait4: wall, user+sys, peak RSS = ru_maxrss). "
           "python3: `PYTHONMALLOC=malloc /usr/bin/python3 bench/programs/objects.py %d` (records as dicts, "
           "an index, json and pickle round trips, deletes). sqlite3: `sqlite3 :memory:` running "
           "bench/programs/sqlite_workload.sql with %d rows (indexes, joins, updates, deletes, VACUUM). "
           "workload: `build/bench/workload --scale %s`, the `make run` workload (a session store freed at random "
           "by its expiries, request headers and counters, a two-thread pipeline; every object verified, exit 3 on "
           "an integrity error). "
           "Outputs are compared across allocators." % (scfg(ctx, "programs")["py_n"], scfg(ctx, "programs")["sqlite_rows"],
                                                        scfg(ctx, "programs").get("wl_scale", "?")), ""]
    for prog in ["python3", "sqlite3", "workload"]:
        if prog not in ctx.store.data.get("programs", {}) and prog not in ctx.store.errors.get("programs", {}):
            continue
        rows = []
        for label, key in [("wall (s)", "wall"), ("user+sys (s)", "cpu"), ("peak RSS (MiB)", "rss_mb")]:
            v = View(ctx, "programs", prog, lambda d, key=key: d[key])
            r, p = v.vs_best()
            g, z = v.med("glibc"), v.med("zns")
            rows.append([label] + v.cells() + [p or "-", ratio(r), ratio(z / g) if g and z else "-"])
        sums = {}   # checksum: the allocators whose runs printed it (with a count)
        for a in ctx.order:
            for d in ctx.store.values("programs", prog, a):
                sums.setdefault(d["checksum"], {}).setdefault(a, 0)
                sums[d["checksum"]][a] += 1
        if len(sums) == 1:
            out = "identical under every allocator (%s)." % next(iter(sums))
        elif sums:
            out = "**DIFFERS between runs/allocators**: " + "; ".join(
                "%s from %s" % (c, ", ".join("%s (%d runs)" % kv for kv in who.items())) for c, who in sorted(sums.items()))
        else:
            out = "-"
        txt += ["### %s" % prog, "", table(["metric"] + ctx.order + ["best peer", "zns / best", "zns / glibc"], rows), "",
                "Output: " + out, ""]
    return "\n".join(txt)


TIER_MODES = ["off", "uffd", "madvise"]


def section_tier(ctx):
    c = scfg(ctx, "tier")
    data = ctx.store.data.get("tier", {})
    cost = ctx.store.data.get("tier_cost", {})
    mib = 1048576.0

    def runs(mode):
        return data.get(mode, {}).get("zns", [])

    def S(mode, f, src=None):
        return summ([f(d) for d in (src or runs)(mode)])

    def crun(mode):
        return cost.get(mode, {}).get("zns", [])

    txt = ["## Tier (issue 5)", "",
           "ZNS-Slab only (the peers have no tier), with `ZNS_TIER=off`, `uffd` and `madvise` run back to back "
           "in each round (interleaved), backing file in `ZNS_TIER_DIR=/var/tmp`. Goals are reported, not asserted.", "",
           "**Heap going cold** (build/bench/tier): %d threads each malloc blocks of uniform random size %d..%d B "
           "until together they hold %d MiB of payload (requested bytes), write every byte and exit, so their "
           "slabs are shared; the process then stays idle for %g s with `ZNS_TIER_COLD_MS=%d`, sampling its RSS "
           "(/proc/self/statm, the whole process: program, libraries, the shim's metadata and the 12 B per block "
           "table of pointers the program keeps outside the heap). Then it reads one byte of every block in a "
           "random order: mincore(2) says (untimed) whether the block's page is resident, and the read alone is "
           "timed with CLOCK_MONOTONIC; a read of a non-resident page is a first touch (fault-in). Finally every "
           "byte is checked." % (c["tier_threads"], c["tier_min"], c["tier_max"], c["tier_payload_mb"],
                                 c["tier_idle_s"], c["tier_cold_ms"]), ""]
    rows = []
    for mode in TIER_MODES:
        if not runs(mode):
            err = ctx.store.error("tier", mode, "zns")
            if err:
                rows.append([mode, "FAILED¹"] + ["-"] * 7)
            continue
        idle = S(mode, lambda d: 100.0 * d["rss_idle"] / d["payload"])
        added = S(mode, lambda d: 100.0 * (d["rss_idle"] - d["rss_before"]) / d["payload"])
        ok = None if mode == "off" else idle[0] <= 20.0
        rows.append([mode, num(statistics.median([d["payload"] / mib for d in runs(mode)]), 1),
                     cell(S(mode, lambda d: d["rss_full"] / mib), 1),
                     cell(S(mode, lambda d: d["rss_idle"] / mib), 1),
                     cell(idle, 1), cell(added, 1),
                     cell(S(mode, lambda d: (d.get("lib") or {}).get("idle_slabs_out") or 0), 0),
                     "baseline" if mode == "off" else mark(ok) + " (≤ 20%)", len(runs(mode))])
    txt += ["### Idle RSS as a share of the payload", "",
            table(["ZNS_TIER", "payload MiB", "RSS full (MiB)", "RSS idle (MiB)", "RSS idle / payload (%)",
                   "(RSS idle − RSS before) / payload (%)", "slabs out", "goal", "rounds"], rows), "",
            "RSS before = after the allocator's first call, before the heap is built (program, libraries, shim "
            "start-up). Medians (min–max) over rounds.", ""]
    rows = []
    for mode in ("uffd", "madvise"):
        if not runs(mode):
            continue
        lib = lambda d: d.get("lib") or {}
        sj = lambda d: d.get("stats_json") or {}
        rows.append([mode, cell(S(mode, lambda d: d["faults"]), 0),
                     cell(S(mode, lambda d: d["fault_p50_us"]), 1), cell(S(mode, lambda d: d["fault_p99_us"]), 1),
                     cell(S(mode, lambda d: d["fault_max_us"]), 0), cell(S(mode, lambda d: d["fault_mean_us"]), 1),
                     ("%s / %s" % (cell(S(mode, lambda d: sj(d).get("fault_p50_ns", 0) / 1000.0), 1),
                                   cell(S(mode, lambda d: sj(d).get("fault_p99_ns", 0) / 1000.0), 1))
                      if any(sj(d).get("faults_timed") for d in runs(mode)) else "not timed in this mode"),
                     cell(S(mode, lambda d: d["touch_s"]), 2),
                     cell(S(mode, lambda d: sj(d).get("thrash", lib(d).get("thrash", 0))), 0),
                     cell(S(mode, lambda d: d["rss_after_touch"] / mib), 1),
                     sum(d["bad_blocks"] for d in runs(mode)), len(runs(mode))])
    if rows:
        txt += ["### First touches after the heap went out", "",
                table(["ZNS_TIER", "first touches (faults)", "p50 µs", "p99 µs", "max µs", "mean µs",
                       "library's fault-in service p50 / p99 µs (ZNS_STATS)", "all touches (s)", "thrash",
                       "RSS after (MiB)", "bad blocks", "rounds"], rows), "",
                "Measured = the timed read in the program (it includes the fault, the wake-up of the handler "
                "thread and the return). The library's figures are its own fault-in service time (uffd: from "
                "reading the fault message to the wake) from the `ZNS_STATS` JSON at exit; its histogram has "
                "power-of-two buckets and reports a bucket's upper bound (16383 ns = \"under 16.4 µs\"). "
                "uffd brings a whole slab back per fault (1–32 pages); madvise leaves fault-ins to the kernel, a "
                "page at a time (MADV_RANDOM), so it takes more, and since reads are invisible to its policy "
                "the scan keeps paging slabs out while they are being read (the thrash column and the lower "
                "RSS after). bad blocks = blocks whose bytes differed from what was written (must be 0).", ""]
    rows = []
    base = summ([d["wall"] for d in crun("off")])
    base_cpu = summ([d["cpu"] for d in crun("off")])
    for mode in TIER_MODES:
        if not crun(mode):
            if ctx.store.error("tier_cost", mode, "zns"):
                rows.append([mode, "FAILED¹"] + ["-"] * 7)
            continue
        wall = summ([d["wall"] for d in crun(mode)])
        cpu = summ([d["cpu"] for d in crun(mode)])
        rw = wall[0] / base[0] if base and mode != "off" else None
        rc = cpu[0] / base_cpu[0] if base_cpu and mode != "off" else None
        outs = sorted({d.get("slabs_out") for d in crun(mode)}, key=lambda x: (x is None, x))
        rows.append([mode, cell(wall, 3), cell(cpu, 3), ratio(rw, 3), ratio(rc, 3),
                     "baseline" if mode == "off" else mark(rw is not None and rw < 1.03) + " (< 1.03x)",
                     ", ".join("-" if o is None else str(o) for o in outs),
                     cell(summ([d["rss_mb"] for d in crun(mode)]), 1), len(crun(mode))])
    if rows:
        sums = {d.get("checksum") for m in TIER_MODES for d in crun(m)}
        txt += ["### Cost of the tier when nothing is cold", "",
                "build/bench/workload --scale %g (the `make run` workload: a session store, requests and a "
                "two-thread pipeline; ~1.5 M allocations per unit of scale), timed as a process by build/bench/timeit, "
                "under `ZNS_TIER=off` and with the tier on and `ZNS_TIER_COLD_MS=3600000` (nothing is ever "
                "cold: what remains is registration, zero-filling fresh slabs through the tier, the file "
                "room reserved in madvise mode, and the scan thread once a second). %d interleaved rounds; "
                "median (min–max); ratio of medians to off; goal: less than 3%% slower (wall)." %
                (c["tier_cost_scale"], max([len(crun(m)) for m in TIER_MODES] + [0])), "",
                table(["ZNS_TIER", "wall (s)", "user+sys (s)", "wall / off", "user+sys / off", "goal",
                       "slabs out (should be 0)", "peak RSS (MiB)", "rounds"], rows), "",
                "Output: %s" % ("identical in every run (checksum %s)." % next(iter(sums)) if len(sums) == 1 else
                                "**DIFFERS between runs**: %s" % ", ".join(sorted(str(x) for x in sums))), ""]
    return "\n".join(txt)


CHECKS_VARIANTS = ["zns", "zns-unchecked", "zns-secure"]
CHECKS_MICRO_ROWS = ["batch/100", "batch/1000", "batch/100000", "churn/threads:1", "churn/threads:2", "prodcons"]


def checks_data(ctx):
    """data["checks"][key][variant] -> runs; the variants' medians and the paired (same round) ratios."""
    data = ctx.store.data.get("checks", {})

    def runs(key, v):
        return data.get(key, {}).get(v, [])

    def S(key, v, f):
        return summ([f(d) for d in runs(key, v)])

    def R(key, a, b, f):
        """(ratio of the medians of a and b, (median, min, max) of the per-round ratios a/b)."""
        sa, sb = S(key, a, f), S(key, b, f)
        if not sa or not sb or not sb[0]:
            return None, None
        rb = {d["round"]: f(d) for d in runs(key, b) if "round" in d}
        per = [f(d) / rb[d["round"]] for d in runs(key, a) if d.get("round") in rb and rb[d["round"]]]
        return sa[0] / sb[0], summ(per)

    return data, runs, S, R


def checks_micro_rows(ctx):
    data = ctx.store.data.get("checks", {})
    sizes = scfg(ctx, "checks").get("checks_sizes", [64, 1024])
    rows = ["pair/%d" % x for x in sizes] + CHECKS_MICRO_ROWS
    return [r for r in rows if "micro/" + r in data] + sorted(
        k[6:] for k in data if k.startswith("micro/") and k[6:] not in rows and k[6:] not in ("pair", "batch", "churn", "prodcons"))


def section_checks(ctx):
    c = scfg(ctx, "checks")
    run = (getattr(ctx, "runs", {}) or {}).get("checks") or {}
    data, runs, S, R = checks_data(ctx)

    def failed(v, *keys):   # every run of the cell failed, or the variant could not run at all
        return "FAILED¹" if any(ctx.store.error("checks", k, v) for k in keys + ("(stage)",)) else "-"

    txt = ["## Cost of the checks and of ZNS_SECURE (issue 6)", "",
           "ZNS-Slab only, three variants of the same sources: **zns** = the default build "
           "(build/libzns_slab.so); **zns-unchecked** = the same built with `-DZNS_UNCHECKED` "
           "(build/unchecked/libzns_slab.so: the misuse checks of the free fast path — block start, "
           "already free, `last` double free — and the sized-delete class check compiled out; a bench-only "
           "build, never shipped); **zns-secure** = the default build run with `ZNS_SECURE=1`. "
           "zns / unchecked is what the default checks cost; secure / zns is what secure mode costs. "
           "build/bench/pairs and build/bench/micro call malloc/free only; the workload (C++) also goes "
           "through operator new and sized delete.", "",
           "- Measured %s, git %s%s, %s mode, %s rounds; shim sha256 %s (zns, zns-secure), %s (zns-unchecked); "
           "load average after the stage %s; stage time %s s." %
           (run.get("date", "?"), run.get("git", "?"), " + uncommitted changes in core/, shim/ or tier/" if run.get("git_dirty") else "",
            run.get("mode", "?"), run.get("rounds", "?"), run.get("zns_sha256", "?"), run.get("unchecked_sha256", "?"),
            run.get("load", "?"), num(run.get("time"), 0))]
    for wmsg in run.get("warnings") or []:
        txt.append("- **Warning**: %s" % wmsg)
    txt.append("")

    # instructions
    sizes = sorted({int(k.split("/")[1]) for k in data if k.startswith("ir/")})
    rows = []
    same_secure = []
    for size in sizes:
        key = "ir/%d" % size
        med = {v: (S(key, v, lambda d: d["per_pair"]) or (None,))[0] for v in CHECKS_VARIANTS}
        cells = []
        for v in CHECKS_VARIANTS:
            if med[v] is not None:
                cells.append("%.1f" % med[v])
            else:
                cells.append(failed(v, key))
        z, u, sec = med["zns"], med["zns-unchecked"], med["zns-secure"]
        d1 = ir_diff(z, u)
        d2 = ir_diff(sec, z)
        if z is not None and sec is not None:
            same_secure.append(abs(sec - z) < 0.05)
        rows.append(["%d B" % size] + cells + [d1, d2])
    if rows:
        txt += ["### Instructions per malloc+free pair (callgrind)", "",
                "`valgrind --tool=callgrind build/bench/pairs N SIZE`, N = %s pairs minus N = 0, divided by N "
                "(as in the callgrind section; the loop adds ~4). Deterministic: one run each." %
                "{:,}".format(c.get("callgrind_pairs", 0)), "",
                table(["size", "zns", "zns-unchecked", "zns-secure", "checks: zns − unchecked", "secure: zns-secure − zns"], rows), ""]
    hints = [d.get("secure_stats") for d in runs("workload", "zns-secure") if d.get("secure_stats")]
    if same_secure and all(same_secure) and not hints:
        txt += ["**ZNS_SECURE=1 changed nothing measurable at git %s**: its instruction counts equal the default's "
                "and the library's stats dump says nothing about secure mode, so secure mode is presumably not "
                "implemented (yet) at this revision; the zns-secure numbers below are then a second sample of the "
                "default (their ratio to zns shows the noise). Rerun the stage once it lands." % run.get("git", "?"), ""]
    elif hints:
        txt += ["The library's stats dump under ZNS_SECURE=1 (workload, last round): `%s`." % json_short(hints[-1]), ""]

    # time
    rows = []

    def trow(label, unit, key, f, digits=None, group=None):
        cells = []
        for v in CHECKS_VARIANTS:
            sv = S(key, v, f)
            cells.append(cell(sv, digits) if sv else failed(v, key, *((group,) if group else ())))
        out = [label, unit] + cells
        for a, b in (("zns", "zns-unchecked"), ("zns-secure", "zns")):
            r, per = R(key, a, b, f)
            out += [ratio(r, 3), cell(per, 3) if per else "-"]
        return out + [max(len(runs(key, v)) for v in CHECKS_VARIANTS)]

    for row in checks_micro_rows(ctx):
        rows.append(trow(row, "ns per malloc+free", "micro/" + row, lambda d: d["ns"], group="micro/" + row.split("/")[0]))
    for row in checks_micro_rows(ctx):
        if (row.startswith("prodcons") or "threads:2" in row) and any(
                d.get("cpu_ns") for v in CHECKS_VARIANTS for d in runs("micro/" + row, v)):
            rows.append(trow(row + " (CPU)", "CPU ns per malloc+free, all threads", "micro/" + row,
                             lambda d: d.get("cpu_ns")))
    if any(runs("workload", v) for v in CHECKS_VARIANTS) or ctx.store.errors.get("checks", {}).get("workload"):
        rows.append(trow("workload wall", "s", "workload", lambda d: d["wall"], 3))
        rows.append(trow("workload user+sys", "s", "workload", lambda d: d["cpu"], 3))
        rows.append(trow("workload peak RSS", "MiB", "workload", lambda d: d["rss_mb"], 1))
    if rows:
        sums = {d.get("checksum") for v in CHECKS_VARIANTS for d in runs("workload", v)}
        txt += ["### Time", "",
                "Google Benchmark rows (build/bench/micro, min time %g s): ns per malloc+free, CPU time for the "
                "single-thread rows, wall time for churn/threads:2 and prodcons (as in the workloads 1–5 section; "
                "the (CPU) rows give those two as CPU time of all threads per item: less disturbed by other jobs, "
                "but they count the waiting thread's spinning). workload = `build/bench/workload --scale %g` (the "
                "`make run` workload), timed as a process by build/bench/timeit. In each round the three variants "
                "run each workload back to back, the first of them rotating from round to round. Medians (min–max) "
                "over rounds. Ratios: the ratio of the medians, and \"per round\" = the median (min–max) of the "
                "ratios within each round (variants run back to back, so a slow period of the machine hits both "
                "sides). Above 1.0 = slower than the reference." % (c.get("micro_min_time", 0), c.get("checks_wl_scale", 0)), "",
                table(["workload", "unit", "zns", "zns-unchecked", "zns-secure", "zns / unchecked (checks)", "per round",
                       "secure / zns (ZNS_SECURE)", "per round", "rounds"], rows), "",
                "workload output: %s" % ("identical in every run (checksum %s)." % next(iter(sums)) if len(sums) == 1 else
                                         "**DIFFERS between runs**: %s" % ", ".join(sorted(str(x) for x in sums)) if sums else "-"), ""]
        txt += checks_summary(ctx, sizes)
    return "\n".join(txt)


def ir_diff(a, b):
    if a is None or not b:
        return "-"
    if abs(a - b) < 0.05:
        return "0 (same)"
    return "%+.1f (%+.1f%%)" % (a - b, 100.0 * (a - b) / b)


def json_short(x):
    import json
    t = json.dumps(x, sort_keys=True)
    return t if len(t) <= 300 else t[:297] + "..."


NOISY_SPREAD = 0.5   # per-round ratios on both sides of 1.0 and spread over more than this share: unreadable


def checks_summary(ctx, sizes):
    data, runs, S, R = checks_data(ctx)
    out = ["Summary:", ""]
    for label, a, b in [("checks (zns / unchecked)", "zns", "zns-unchecked"), ("ZNS_SECURE=1 (secure / zns)", "zns-secure", "zns")]:
        parts = []
        for size in sizes:
            sa, sb = S("ir/%d" % size, a, lambda d: d["per_pair"]), S("ir/%d" % size, b, lambda d: d["per_pair"])
            if sa and sb:
                parts.append("%s instructions per pair at %d B (%.2fx)" % (
                    "no change in" if abs(sa[0] - sb[0]) < 0.05 else "%+.1f" % (sa[0] - sb[0]), size, sa[0] / sb[0]))
        micro, noisy = [], []
        for row in checks_micro_rows(ctx):
            f = lambda d: d["ns"]
            r, per = R("micro/" + row, a, b, f)
            if r is None or not per:
                continue
            unreadable = per[1] < 1.0 < per[2] and (per[2] - per[1]) / per[0] > NOISY_SPREAD
            (noisy if unreadable else micro).append((per[0], row))
        if micro:
            lo, hi = min(micro), max(micro)
            parts.append("micro rows (median of the per-round ratios) %.3fx (%s) to %.3fx (%s)" % (lo[0], lo[1], hi[0], hi[1]))
        if noisy:
            parts.append("not readable in this run (per-round ratios on both sides of 1.0, spread over %d%% of "
                         "their median): %s" %
                         (100 * NOISY_SPREAD, ", ".join(r for _, r in noisy)))
        for what, f in (("wall", lambda d: d["wall"]), ("user+sys", lambda d: d["cpu"])):
            r, per = R("workload", a, b, f)
            if r is not None:
                parts.append("workload %s %s (per round %s)" % (what, ratio(r, 3), cell(per, 3) if per else "-"))
        r, per = R("workload", a, b, lambda d: d["rss_mb"])
        if r is not None:
            parts.append("workload peak RSS %.3fx" % r)
        if parts:
            out.append("- %s: %s." % (label, "; ".join(parts)))
    out += ["", "Time ratios within a few percent of 1.0 are inside this VM's noise (compare the per-round "
            "ranges); the instruction counts are exact.", ""]
    return out


# ---- charts ----------------------------------------------------------------------------------------------
def make_plots(ctx, outdir):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        return {"error": "matplotlib not available to %s (%s); install python3-matplotlib and run "
                         "Debian's /usr/bin/python3 (as make bench does)" % (sys.executable, e)}
    os.makedirs(outdir, exist_ok=True)
    files = []

    def bars(ax, groups, getter, title, ylabel, log=False):
        n = len(ctx.order)
        width = 0.8 / max(n, 1)
        for i, a in enumerate(ctx.order):
            xs, ys, lo, hi = [], [], [], []
            for j, g in enumerate(groups):
                s = getter(g, a)
                if s is None:
                    continue
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(s[0])
                lo.append(s[0] - s[1])
                hi.append(s[2] - s[0])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], label=a, color=COLORS.get(a), capsize=1.5, error_kw={"lw": 0.6})
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([str(g) for g in groups], rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)

    def vals(stage, key, a, f):
        return summ([f(v) for v in ctx.store.values(stage, key, a)])

    def save(fig, name):
        path = os.path.join(outdir, name)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path)

    try:
        micro = ctx.store.data.get("micro", {})
        if micro:
            pairs = [r for r in MICRO_ROWS if r.startswith("pair/") and r in micro]
            if pairs:
                fig, ax = plt.subplots(figsize=(11, 4.5))
                bars(ax, [p.split("/")[1] for p in pairs], lambda g, a: vals("micro", "pair/" + g, a, lambda x: x),
                     "Workload 1: malloc+free pair (ns, lower is better)", "ns per pair")
                ax.set_xlabel("size (B)")
                save(fig, "micro_pairs.png")
            others = [r for r in MICRO_ROWS if not r.startswith("pair/") and r in micro]
            if others:
                fig, ax = plt.subplots(figsize=(11, 4.5))
                bars(ax, others, lambda g, a: vals("micro", g, a, lambda x: x),
                     "Workloads 2-5: ns per malloc+free (log scale, lower is better)", "ns per op", log=True)
                save(fig, "micro_workloads.png")
        lat = ctx.store.data.get("latency", {})
        if lat:
            scens = list(lat.keys())
            fig, axes = plt.subplots(len(scens), 2, figsize=(11, 3.8 * len(scens)), squeeze=False)
            pct = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p99.9", "p999"), ("p99.99", "p9999")]
            for i, sc in enumerate(scens):
                for j, op in enumerate(("malloc", "free")):
                    ax = axes[i][j]
                    for a in ctx.order:
                        ys = [vals("latency", sc, a, lambda d, k=k: d[op][k]) for _, k in pct]
                        if all(y is not None for y in ys):
                            ax.plot([p for p, _ in pct], [max(y[0], 0.1) for y in ys], marker="o", label=a, color=COLORS.get(a))
                    ax.set_yscale("log")
                    ax.set_title("Workload 6: %s latency, %s (ns)" % (op, sc), fontsize=10)
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=7)
            save(fig, "latency.png")
        mem = ctx.store.data.get("memory", {})
        if mem:
            sizes = sorted(mem.keys(), key=int)
            fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
            for ax, key, title in [(axes[0], "overhead_pct", "overhead, all live (%)"),
                                   (axes[1], "half_overhead_pct", "overhead after freeing half (%)")]:
                for a in ctx.order:
                    pts = [(int(s), vals("memory", s, a, lambda d: d[key])) for s in sizes]
                    pts = [(x, y[0]) for x, y in pts if y is not None]
                    if pts:
                        ax.plot([p[0] for p in pts], [max(p[1], 0.01) for p in pts], marker="o", label=a, color=COLORS.get(a))
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("block size (B)")
                ax.set_title("Workload 7: " + title, fontsize=10)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
            bars(axes[2], sizes, lambda g, a: vals("memory", g, a, lambda d: d["retained_after_free_all"] / 1048576.0),
                 "Workload 7: MiB still resident after freeing all", "MiB")
            save(fig, "memory.png")
        red = ctx.store.data.get("redis", {}).get("redis")
        if red:
            allocs = [a for a in ctx.order if a in red]
            fig, axes = plt.subplots(1, 3, figsize=(13, 4))
            for ax, key, title in [(axes[0], "set_rps", "SET requests/s"), (axes[1], "get_rps", "GET requests/s"),
                                   (axes[2], "rss_mb", "server RSS after SET (MiB)")]:
                for i, a in enumerate(allocs):
                    s = vals("redis", "redis", a, lambda d: d.get(key))
                    if s:
                        ax.bar(i, s[0], yerr=[[s[0] - s[1]], [s[2] - s[0]]], color=COLORS.get(a), capsize=3)
                ax.set_xticks(range(len(allocs)))
                ax.set_xticklabels(["jemalloc\n(shipped)" if a == "jemalloc" else a for a in allocs], fontsize=8)
                ax.set_title("Workload 8: redis " + title, fontsize=10)
                ax.grid(axis="y", alpha=0.3)
            save(fig, "redis.png")
        progs = ctx.store.data.get("programs", {})
        if progs:
            names = list(progs.keys())
            fig, axes = plt.subplots(1, 2, figsize=(11, 4))
            bars(axes[0], names, lambda g, a: vals("programs", g, a, lambda d: d["wall"]), "Workload 9: wall time (s)", "s")
            bars(axes[1], names, lambda g, a: vals("programs", g, a, lambda d: d["rss_mb"]), "Workload 9: peak RSS (MiB)", "MiB")
            save(fig, "programs.png")
        tier = ctx.store.data.get("tier", {})
        if tier:
            fig, axes = plt.subplots(1, 2, figsize=(12, 4))
            tcol = {"off": "#7f7f7f", "uffd": "#d62728", "madvise": "#1f77b4"}
            for mode in TIER_MODES:
                rs = tier.get(mode, {}).get("zns", [])
                if not rs:
                    continue
                d = sorted(rs, key=lambda d: d["rss_idle"])[len(rs) // 2]   # the median round
                xs = [p[0] for p in d["rss_samples"]]
                axes[0].plot(xs, [100.0 * p[1] / d["payload"] for p in d["rss_samples"]], marker=".",
                             label="ZNS_TIER=" + mode, color=tcol[mode])
            axes[0].axhline(20, ls="--", color="k", lw=0.8, label="goal 20%")
            axes[0].set_xlabel("seconds idle (ZNS_TIER_COLD_MS=%d)" % scfg(ctx, "tier")["tier_cold_ms"])
            axes[0].set_ylabel("RSS / payload (%)")
            axes[0].set_title("Tier: RSS of an idle 64 MiB heap (median round)", fontsize=10)
            axes[0].grid(alpha=0.3)
            axes[0].legend(fontsize=7)
            for mode in ("uffd", "madvise"):
                rs = tier.get(mode, {}).get("zns", [])
                if rs:
                    ys = [vals("tier", mode, "zns", lambda d, k=k: d[k]) for k in ("fault_p50_us", "fault_p99_us", "fault_max_us")]
                    if all(ys):
                        axes[1].plot(["p50", "p99", "max"], [y[0] for y in ys], marker="o", label="ZNS_TIER=" + mode, color=tcol[mode])
            axes[1].set_yscale("log")
            axes[1].set_ylabel("µs")
            axes[1].set_title("Tier: first-touch latency (median over rounds)", fontsize=10)
            axes[1].grid(alpha=0.3)
            axes[1].legend(fontsize=7)
            save(fig, "tier.png")
        chk = ctx.store.data.get("checks", {})
        if chk:
            data, runs, S, R = checks_data(ctx)
            sizes = sorted({int(k.split("/")[1]) for k in chk if k.startswith("ir/")})
            fig, axes = plt.subplots(1, 3, figsize=(16, 4.8), gridspec_kw={"width_ratios": [1, 2, 2]})
            width = 0.8 / len(CHECKS_VARIANTS)
            irs = []
            for i, v in enumerate(CHECKS_VARIANTS):
                pts = [(j, S("ir/%d" % sz, v, lambda d: d["per_pair"])) for j, sz in enumerate(sizes)]
                pts = [(j, s[0]) for j, s in pts if s]
                if pts:
                    axes[0].bar([j - 0.4 + width * (i + 0.5) for j, _ in pts], [y for _, y in pts], width,
                                label=v, color=COLORS.get(v))
                    for j, y in pts:
                        axes[0].text(j - 0.4 + width * (i + 0.5), y, "%.0f" % y, ha="center", va="bottom", fontsize=7)
                    irs += [y for _, y in pts]
            if irs and max(irs) > 10 * max(min(irs), 1):
                axes[0].set_yscale("log")
                axes[0].set_ylim(top=max(irs) * 4)
            else:
                axes[0].set_ylim(top=max(irs + [1]) * 1.2)
            axes[0].set_xticks(range(len(sizes)))
            axes[0].set_xticklabels(["%d B" % x for x in sizes])
            axes[0].set_title("Issue 6: instructions per malloc+free pair", fontsize=10)
            axes[0].grid(axis="y", alpha=0.3)
            axes[0].legend(fontsize=7, loc="upper center", ncol=3)
            rows = [("micro/" + r, r, lambda d: d["ns"]) for r in checks_micro_rows(ctx)] + \
                   [("workload", "workload wall", lambda d: d["wall"]), ("workload", "workload user+sys", lambda d: d["cpu"])]
            for ax, (a, b, title, col) in zip(axes[1:], [
                    ("zns", "zns-unchecked", "zns / zns-unchecked (cost of the checks)", COLORS["zns"]),
                    ("zns-secure", "zns", "zns-secure / zns (cost of ZNS_SECURE=1)", COLORS["zns-secure"])]):
                xs, ys, lo, hi = [], [], [], []
                for j, (key, _, f) in enumerate(rows):
                    r, per = R(key, a, b, f)
                    if not per:
                        continue
                    xs.append(j)
                    ys.append(per[0])
                    lo.append(per[0] - per[1])
                    hi.append(per[2] - per[0])
                if xs:
                    ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color=col, capsize=3, lw=0.8)
                    for x, y in zip(xs, ys):
                        ax.annotate("%.2f" % y, (x, y), textcoords="offset points", xytext=(6, 2), fontsize=7)
                ax.axhline(1.0, color="k", lw=0.8)
                # the whiskers of the noisy threaded rows can reach 0.1x..7x: keep the medians readable, clip those
                if ys and max(ys) > 2:
                    ax.set_yscale("log")
                    ax.set_ylim(min([0.8] + [y / 1.2 for y in ys]), max(ys) * 1.5)
                else:
                    ax.set_ylim(min([0.85] + [y - 0.05 for y in ys]), max([1.25] + [y + 0.05 for y in ys]))
                ax.set_xticks(range(len(rows)))
                ax.set_xticklabels([r[1] for r in rows], rotation=30, ha="right", fontsize=8)
                ax.set_ylabel("time ratio per round: median, min–max (clipped)")
                ax.set_title("Issue 6: %s; above 1 = slower" % title, fontsize=10)
                ax.grid(axis="y", alpha=0.3)
            save(fig, "checks.png")
    except Exception as e:   # a chart problem must not lose the tables
        import traceback
        traceback.print_exc()
        return {"files": files, "error": "chart error: %s" % e}
    return {"files": files}
