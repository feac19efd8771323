#!/usr/bin/env python3
"""bench-compare.py - Spindle's lock figures next to Linux's: build/bench/compare.md.

Usage: scripts/bench-compare.py --spindle RESULTS.json [RESULTS.json ...]
                                --linux results.csv --out compare.md
                                [--previous RESULTS.json ...]

  --spindle   results.json files of `make bench` (scripts/bench-report.py), one per -smp;
              with BENCH_BOOTS=n, the medians of n boots (scripts/bench-merge.py)
  --linux     results.csv of the peer kit linux-lockbench (its report.awk's CSV; with
              several boots of a configuration, their medians are taken here)
  --out       the Markdown file to write
  --previous  an earlier run's results.json files (missing ones are skipped)

Each Spindle row is paired with the Linux row of the same shape on the same -smp:
uncontended cycles as Spindle / Linux (above 1: Spindle is slower), contended
throughput as Spindle / Linux (above 1: Spindle is faster). Then the waiting
targets (README, "Waiting"), each with this run's figures and, where the
machine sets a bound, the reference row that measures it; with --previous,
every contended Spindle row against the earlier run. Never fails on speed;
exits 1 only when an input is missing or unreadable.
"""

import argparse
import csv
import json
import os
import statistics
import sys

# (Spindle row, Linux row): the same work on both kernels.
UNCONTENDED = [
    ("empty_loop", "empty_loop"),
    ("raw_xchg", "raw_xchg"),
    ("raw_xchg_called", None),  # Spindle's floor for a called lock; Linux's module has none
    ("raw_cmpxchg", "raw_cmpxchg"),
    ("atomic_xadd", "atomic_xadd"),
    ("InterlockedIncrement", "atomic_xadd"),
    ("KeAcquireSpinLockAtDpcLevel", "spin_lock"),
    ("KeAcquireInStackQueuedSpinLockAtDpcLevel", "spin_lock"),
    ("KeAcquireSpinLock", "spin_lock_irqsave"),
    ("KeAcquireSpinLockRaiseToDpc", "spin_lock_irqsave"),
    ("KeAcquireInStackQueuedSpinLock", "spin_lock_irqsave"),
]

# (Spindle lock, Linux lock, Linux variant, why they pair).
CONTENDED = [
    ("KeAcquireSpinLockAtDpcLevel", "spin_lock", "default",
     "ordinary lock vs Linux's choice in a VM (virt_tas)"),
    ("KeAcquireSpinLock", "spin_lock", "default", "raising ordinary lock vs virt_tas"),
    ("virt_tas", "spin_lock", "default", "the same test-and-set algorithm on both kernels"),
    ("KeAcquireInStackQueuedSpinLockAtDpcLevel", "spin_lock", "nohv",
     "queued lock vs native qspinlock (MCS)"),
    ("KeAcquireInStackQueuedSpinLock", "spin_lock", "nohv", "raising queued lock vs qspinlock"),
    ("raw_mcs", "spin_lock", "nohv",
     "the queued lock's algorithm alone, inline, vs qspinlock: the MCS bound"),
    ("raw_xchg", "raw_xchg", "default", "the module's xchg lock on both kernels"),
    ("virt_tas_called", "spin_lock", "default",
     "virt_tas behind two functions, as any lock API is called, vs Linux's spin_lock, which "
     "is virt_tas called the same way: the bound for a called test-and-set lock"),
    ("raw_mcs_called", "spin_lock", "nohv",
     "raw_mcs behind two functions, as any lock API is called, vs qspinlock: the bound for "
     "a called MCS lock that never halts"),
]

# The reference loops written in the bench; the rest are Spindle's own locks.
REFERENCES = ("virt_tas", "raw_mcs", "raw_xchg", "virt_tas_called", "raw_mcs_called")


def fnum(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def load_linux(path):
    """{(smp, variant): {"uncontended": {name: cycles}, "contended": {(name, n): row}, ...}}"""
    rows = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (int(r["smp"]), r["variant"])
            cfg = rows.setdefault(key, {"unc": {}, "con": {}, "impl": r["guest_lock_impl"],
                                        "cpu": r["qemu_cpu"], "accel": r["accel"]})
            if r["mode"] == "uncontended":
                cfg["unc"].setdefault(r["name"], []).append(fnum(r["cycles_per_op"]))
            elif r["mode"] == "contended":
                mn, mx = fnum(r["min"]), fnum(r["max"])
                cfg["con"].setdefault((r["name"], int(r["cpus"])), []).append(
                    (fnum(r["ops_per_s"]), mx / mn if mn else 1e9, fnum(r["cycles_per_op"])))
    # The median over the boots of each configuration, as report.awk does; each boot's too.
    for cfg in rows.values():
        cfg["con_boots"] = dict(cfg["con"])
        cfg["unc"] = {k: statistics.median(v) for k, v in cfg["unc"].items()}
        cfg["con"] = {k: tuple(statistics.median(x[i] for x in v) for i in range(3))
                      for k, v in cfg["con"].items()}
    return rows


def ratio(a, b):
    return "-" if a is None or b is None or b == 0 else "%.2f" % (a / b)


def fmt_rate(ops, fairness):
    if ops is None:
        return "-"
    return "%.2f [%s]" % (ops / 1e6, "inf" if fairness >= 1e9 else "%.2f" % fairness)


def contended_row(run, name, n):
    return next((x for x in run["contended"] if x["name"] == name and x["cpus"] == n), None)


def uncontended_row(run, name):
    return next((x for x in run["uncontended"] if x["name"] == name), None)


def yes_no(ok):
    return "-" if ok is None else ("yes" if ok else "**no**")


def boots_of(runs):
    return max(r["config"].get("boots", 1) for r in runs)


def targets(runs, linux, w):
    """The waiting targets, each judged on this run alone."""
    by_smp = {r["environment"]["vcpus"]: r for r in runs}
    rows = []
    boots = boots_of(runs)

    def lin(smp, variant, n):
        return linux.get((smp, variant), {"con": {}})["con"].get(("spin_lock", n))

    def each(r, smp, variant, n):
        """Every boot's figures behind a contended cell: Spindle's, then Linux's."""
        if boots < 2:
            return ""
        mine = ", ".join(fmt_rate(b["ops_per_s"], b["max_over_min"]) for b in r["boots"]) \
            if r and "boots" in r else "-"
        theirs = linux.get((smp, variant), {}).get("con_boots", {}).get(("spin_lock", n))
        return "%s; Linux %s" % (mine, ", ".join(fmt_rate(o, f) for o, f, _ in theirs)
                                 if theirs else "-")

    def cell(r):
        return fmt_rate(r["ops_per_s"], r["max_over_min"]) if r else "-"

    def lcell(l):
        return fmt_rate(l[0], l[1]) if l else "-"

    run8, run2 = by_smp.get(8), by_smp.get(2)
    for n in (4, 8):
        r = contended_row(run8, "KeAcquireInStackQueuedSpinLockAtDpcLevel", n) if run8 else None
        l = lin(8, "nohv", n)
        ok = None if not (r and l) else r["ops_per_s"] >= l[0] and r["max_over_min"] <= 1.5
        rows.append(("queued AtDpcLevel, `-smp 8` N=%d: at least qspinlock's throughput, "
                     "max/min at most 1.5" % n, "%s vs %s" % (cell(r), lcell(l)), "", yes_no(ok),
                     each(r, 8, "nohv", n)))
    r = contended_row(run2, "KeAcquireInStackQueuedSpinLockAtDpcLevel", 2) if run2 else None
    b = contended_row(run2, "raw_mcs", 2) if run2 else None
    bc = contended_row(run2, "raw_mcs_called", 2) if run2 else None
    l = lin(2, "nohv", 2)
    ok = None if not (r and l) else r["ops_per_s"] >= l[0] and r["max_over_min"] <= 1.2
    rows.append(("queued AtDpcLevel, `-smp 2` N=2: at least qspinlock's throughput, "
                 "max/min at most 1.2", "%s vs %s" % (cell(r), lcell(l)),
                 "`raw_mcs` %s (%s of qspinlock), `raw_mcs_called` %s (Spindle: %s of it)" % (
                     cell(b), ratio(b["ops_per_s"] if b else None, l[0] if l else None),
                     cell(bc), ratio(r["ops_per_s"] if r else None,
                                     bc["ops_per_s"] if bc else None)),
                 yes_no(ok), each(r, 2, "nohv", 2)))
    for n in (2, 4, 8):
        r = contended_row(run8, "KeAcquireSpinLockAtDpcLevel", n) if run8 else None
        b = contended_row(run8, "virt_tas_called", n) if run8 else None
        l = lin(8, "default", n)
        ok = None if not (r and l) else r["ops_per_s"] >= l[0] and r["max_over_min"] <= l[1]
        rows.append(("ordinary AtDpcLevel, `-smp 8` N=%d: at least `spin_lock`'s throughput, "
                     "max/min no worse" % n, "%s vs %s" % (cell(r), lcell(l)),
                     "`virt_tas_called` %s" % cell(b), yes_no(ok), each(r, 8, "default", n)))
    for smp, bound_us in ((8, 1000.0), (2, 100.0)):
        run = by_smp.get(smp)
        r = uncontended_row(run, "KeIpiGenericCall") if run else None
        us = r["ns_per_op"] / 1000.0 if r else None
        rows.append(("KeIpiGenericCall, `-smp %d`: at most %d us" % (smp, bound_us),
                     "-" if us is None else "%.1f us" % us, "",
                     yes_no(None if us is None else us <= bound_us),
                     ", ".join("%.1f us" % (b["ns_per_op"] / 1000.0) for b in r["boots"])
                     if boots > 1 and r and "boots" in r else ""))
    for smp in (8, 2):
        run = by_smp.get(smp)
        r = uncontended_row(run, "KeAcquireSpinLockAtDpcLevel") if run else None
        b = uncontended_row(run, "raw_xchg_called") if run else None
        x = r.get("x_raw_xchg") if r else None
        rows.append(("uncontended AtDpcLevel pair, `-smp %d`: at most 2.5 x `raw_xchg`" % smp,
                     "-" if x is None else "%.2f x" % x,
                     "`raw_xchg_called` %s x" % ("-" if not b else "%.2f" % b["x_raw_xchg"]),
                     yes_no(None if x is None else x <= 2.5),
                     ", ".join("%.2f x" % e["x_raw_xchg"] for e in r["boots"])
                     if boots > 1 and r and "boots" in r else ""))
    w("## Waiting targets, this run")
    w("")
    w("Contended cells are M acquisitions/s [max/min], Spindle vs Linux. The bound column "
      "is the reference row that measures what the machine allows: `raw_mcs` is the queued "
      "lock's algorithm alone (inline, never halting), `raw_mcs_called` the same behind two "
      "calls, `virt_tas_called` the test-and-set "
      "lock behind two calls (the shape of any lock API, Linux's `spin_lock` included), "
      "`raw_xchg_called` the bare xchg pair behind two calls.%s" % (
          " Each figure is the median over %d boots of each kernel; the last column has every "
          "boot's, in order (Spindle's, then Linux's)." % boots if boots > 1 else
          " One boot of each kernel: under TCG a row's consecutive windows keep one level and "
          "one split between the processors, and the same row a few seconds later may keep "
          "another, so `BENCH_BOOTS=3` judges on the medians over three boots of each."))
    w("")
    columns = ["target", "this run", "bound", "met"] + (["each boot"] if boots > 1 else [])
    w("| %s |" % " | ".join(columns))
    w("|%s" % (" --- |" * len(columns)))
    for row in rows:
        w("| %s |" % " | ".join(row[:len(columns)]))
    w("")
    for smp in (8, 2):
        for collision in (by_smp.get(smp) or {}).get("jump_cache") or []:
            w("**Warning (`-smp %d`): a QEMU jump-cache collision or a page-crossing loop slows "
              "a timed loop in this build** (scripts/tcg-jump-cache.py), so its row, and a bound "
              "taken from it, are low: %s." % (smp, collision))
            w("")


def stability(runs, previous, w):
    """Every contended Spindle row (N >= 2) of this run against the previous run's."""
    prev = {r["environment"]["vcpus"]: r for r in previous}
    pairs = []
    for run in sorted(runs, key=lambda r: -r["environment"]["vcpus"]):
        smp = run["environment"]["vcpus"]
        if smp not in prev:
            continue
        for r in run["contended"]:
            if r["cpus"] < 2 or r["name"] not in [c[0] for c in CONTENDED]:
                continue
            p = contended_row(prev[smp], r["name"], r["cpus"])
            if p and p["ops_per_s"] and r["ops_per_s"]:
                pairs.append((smp, r, p, max(r["ops_per_s"], p["ops_per_s"]) /
                              min(r["ops_per_s"], p["ops_per_s"])))
    if not pairs:
        return
    spread = [x for x in pairs if x[1]["name"] not in REFERENCES]
    worst = max(spread, key=lambda x: x[3]) if spread else None
    w("## Stability: this run against the previous one")
    w("")
    w("The previous run's `results.json` (kept in `previous/` by scripts/bench-compare.sh). "
      "Target: every contended row of Spindle's own locks within 30 %% (spread at most "
      "1.30). %d of %d rows within it; the widest is %s." % (
          sum(1 for x in spread if x[3] <= 1.30), len(spread),
          "-" if not worst else "%s N=%d at `-smp %d`, %.2f" % (
              worst[1]["name"], worst[1]["cpus"], worst[0], worst[3])))
    w("")
    differ = sorted({"`-smp %d`: %s ms windows now, %s ms then" % (
        smp, r["config"].get("window_ms"), prev[smp]["config"].get("window_ms"))
        for smp, r in ((x["environment"]["vcpus"], x) for x in runs) if smp in prev and
        r["config"].get("window_ms") != prev[smp]["config"].get("window_ms")})
    if differ:
        w("**The two runs used different windows** (%s): compare like with like." %
          "; ".join(differ))
        w("")
    w("| -smp | lock | N | this run | previous | spread |")
    w("| ---: | --- | ---: | ---: | ---: | ---: |")
    for smp, r, p, sp in pairs:
        bold = "**" if sp > 1.30 and r["name"] not in REFERENCES else ""
        w("| %d | %s | %d | %s | %s | %s%.2f%s |" % (
            smp, r["name"], r["cpus"], fmt_rate(r["ops_per_s"], r["max_over_min"]),
            fmt_rate(p["ops_per_s"], p["max_over_min"]), bold, sp, bold))
    w("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spindle", nargs="+", required=True)
    parser.add_argument("--linux", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--previous", nargs="*", default=[])
    args = parser.parse_args()

    runs = []
    for path in args.spindle:
        if not os.path.isfile(path):
            print("bench-compare: error: no Spindle results %s" % path, file=sys.stderr)
            continue
        with open(path) as f:
            runs.append(json.load(f))
    previous = []
    for path in args.previous:
        if os.path.isfile(path):
            with open(path) as f:
                previous.append(json.load(f))
    linux = {}
    if os.path.isfile(args.linux):
        linux = load_linux(args.linux)
    else:
        print("bench-compare: error: no Linux results %s" % args.linux, file=sys.stderr)
    if not runs and not linux:
        return 1

    out = []
    w = out.append
    w("# Spindle and Linux: the same lock loops on the same QEMU")
    w("")
    w("Written by `make bench-compare` (scripts/bench-compare.sh): `make bench` at `-smp 8` and "
      "`-smp 2`, then the Linux peer kit's boots of Debian's Linux 6.1 with its `lockbench` "
      "module, back to back. Linux variants: `default` (Linux sees a hypervisor and uses "
      "`virt_tas`, a test-and-set lock) and `nohv` (`-cpu max,-hypervisor`: native qspinlock, "
      "an MCS queue). The kit's own table of both kernels is in `peer-table.md`. The module "
      "ran with `iters=10000 reps=15`, so both kernels time uncontended loops in batches of "
      "a fraction of a millisecond and report the median of 15.%s" % (
          " Each kernel was booted %d times per configuration (`BENCH_BOOTS`), and every "
          "figure below is the median over those boots (max/min its own median, as the kit's "
          "report.awk takes it)." % boots_of(runs) if runs and boots_of(runs) > 1 else ""))
    w("")
    if runs:
        env = runs[0]["environment"]
        w("| | |")
        w("| --- | --- |")
        w("| QEMU | %s |" % env["qemu"])
        w("| accelerator | %s |" % env["accel_detail"])
        w("| host | %s cores, %s |" % (env["host_cores"], env["host_cpu"]))
        impls = sorted({"%s: %s (-cpu %s)" % (v, c["impl"], c["cpu"])
                        for (s, v), c in linux.items()})
        w("| Linux slow path | %s |" % ("; ".join(impls) if impls else "no Linux results"))
        w("")
        if any(r["environment"]["overcommit"] for r in runs):
            w("**Warning: at `-smp 8` the vCPUs outnumber the host cores.** Contended rows with "
              "more processors than host cores measure the host scheduler as much as the lock, "
              "for both kernels.")
            w("")
    w("Ratios: uncontended = Spindle cycles / Linux cycles (above 1: Spindle slower); "
      "contended = Spindle throughput / Linux throughput (above 1: Spindle faster). "
      "Contended cells are million acquisitions per second with max/min per processor in "
      "brackets. Speed never fails anything; single boots under TCG move by 10-30 % "
      "(uncontended) and far more (contended under overcommit).")
    w("")

    for run in sorted(runs, key=lambda r: -r["environment"]["vcpus"]):
        smp = run["environment"]["vcpus"]
        default = linux.get((smp, "default"), {"unc": {}, "con": {}})
        nohv = linux.get((smp, "nohv"), {"unc": {}, "con": {}})
        unc = {r["name"]: r for r in run["uncontended"]}
        w("## -smp %d" % smp)
        w("")
        w("### Uncontended: TSC cycles per iteration (median)")
        w("")
        w("Each kernel's row is also divided by its own `raw_xchg` floor of the same run "
          "(x floor), which cancels most of what the host's load does to both; the last "
          "column compares those. Spindle's x floor pairs every batch with a floor batch run "
          "just before it; Linux's module divides its row by the floor measured at the start "
          "of the boot.")
        w("")
        w("| Spindle | cycles | x floor | Linux | default | x floor | nohv | Spindle / Linux "
          "default | (x floor) / (x floor) |")
        w("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |")
        lfloor = default["unc"].get("raw_xchg")
        for mine, theirs in UNCONTENDED:
            r = unc.get(mine)
            c = r["cycles_per_op"] if r else None
            ld, ln = default["unc"].get(theirs), nohv["unc"].get(theirs)
            mx = r.get("x_raw_xchg") if r else None
            lx = ld / lfloor if ld is not None and lfloor else None
            w("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                mine, "-" if c is None else "%.1f" % c, "-" if mx is None else "%.2f" % mx,
                theirs or "-", "-" if ld is None else "%.1f" % ld, "-" if lx is None else "%.2f" % lx,
                "-" if ln is None else "%.1f" % ln, ratio(c, ld), ratio(mx, lx)))
        w("")
        w("### Contended: M acquisitions/s [max/min]")
        w("")
        w("| Spindle lock | Linux lock (variant) | N | Spindle | Linux | Spindle / Linux |")
        w("| --- | --- | ---: | ---: | ---: | ---: |")
        for mine, theirs, variant, _ in CONTENDED:
            table = default if variant == "default" else nohv
            for n in sorted({r["cpus"] for r in run["contended"]}):
                r = next((x for x in run["contended"] if x["name"] == mine and x["cpus"] == n),
                         None)
                l = table["con"].get((theirs, n))
                w("| %s | %s (%s) | %d | %s | %s | %s |" % (
                    mine, theirs, variant, n,
                    fmt_rate(r["ops_per_s"], r["max_over_min"]) if r else "-",
                    fmt_rate(l[0], l[1]) if l else "-",
                    ratio(r["ops_per_s"] if r else None, l[0] if l else None)))
        w("")
    if runs:
        targets(runs, linux, w)
        stability(runs, previous, w)
    w("Pairs: " + "; ".join("`%s` with Linux `%s` (%s): %s" % (a, b, v, why)
                            for a, b, v, why in CONTENDED) + ".")
    w("")
    with open(args.out, "w") as f:
        f.write("\n".join(out))
    print("bench-compare: wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
