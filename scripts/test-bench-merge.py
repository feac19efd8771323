#!/usr/bin/env python3
"""test-bench-merge.py - self-test of `make bench-compare BENCH_BOOTS=n`'s reduction.

Usage: scripts/test-bench-merge.py

Builds three boots' results.json (the shape scripts/bench-report.py writes) and a
peer-kit results.csv with three Linux boots, all with known figures, then checks:
scripts/bench-merge.py takes each figure's median over the boots (max/min its own
median), keeps every boot's figures in order and drops the windows, keeps a row
that only some boots have; it refuses
boots of different configurations and unreadable files; scripts/bench-compare.py
judges the targets on the medians of both kernels and lists every boot. Needs no
QEMU. Prints one line per failed check and `test-bench-merge: N passed, N failed`;
exits 0 iff none failed.
"""

import copy
import csv
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
results = {"passed": 0, "failed": 0}


def check(ok, what):
    if ok:
        results["passed"] += 1
    else:
        results["failed"] += 1
        print("test-bench-merge: FAILED: %s" % what)


def boot(smp, ops, fairness, pair):
    """One boot's results.json: the ordinary lock at N=2 at ops M/s and max/min fairness."""
    contended = []
    for n in (2, 4, 8) if smp == 8 else (2,):
        for name in ("KeAcquireSpinLockAtDpcLevel", "KeAcquireInStackQueuedSpinLockAtDpcLevel",
                     "virt_tas_called", "raw_mcs", "raw_mcs_called"):
            rate = ops * 1e6 if (name, n) == ("KeAcquireSpinLockAtDpcLevel", 2) else 1e6
            contended.append({"name": name, "cpus": n, "ops_per_s": rate, "max_over_min":
                              fairness if name == "KeAcquireSpinLockAtDpcLevel" else 1.0,
                              "cycles_per_op": 100.0, "mutex_ok": 1, "elapsed_ms": 1000.0,
                              "windows": [{"window": 1, "ops_per_s": rate}]})
    uncontended = [
        {"name": "raw_xchg", "cpus": 1, "cycles_per_op": 20.0, "ns_per_op": 9.0,
         "x_raw_xchg": 1.0},
        {"name": "raw_xchg_called", "cpus": 1, "cycles_per_op": 47.0, "ns_per_op": 21.0,
         "x_raw_xchg": 2.35},
        {"name": "KeAcquireSpinLockAtDpcLevel", "cpus": 1, "cycles_per_op": 20.0 * pair,
         "ns_per_op": 9.0 * pair, "x_raw_xchg": pair},
        {"name": "KeIpiGenericCall", "cpus": smp, "cycles_per_op": 1.0, "ns_per_op": 100000.0,
         "x_raw_xchg": 1.0},
    ]
    return {"environment": {"qemu": "QEMU 7.2", "accel": "tcg", "accel_detail": "tcg",
                            "cpu": "max", "vcpus": smp, "host_cores": 2, "host_cpu": "test",
                            "overcommit": smp > 2},
            "config": {"build": "free", "cpus": smp, "window_ms": 1000, "windows": 5,
                       "cs_work": 0, "ncs_work": 0},
            "floors": {"raw_xchg": 20.0}, "uncontended": uncontended, "contended": contended,
            "jump_cache": []}


def linux_csv(path, n2_rates):
    """The kit's results.csv: three boots of each configuration, spin_lock at N=2 as given."""
    fields = ["run", "config", "accel", "smp", "variant", "qemu_cpu", "guest_lock_impl", "name",
              "mode", "cpus", "cycles_per_op", "ops_per_s", "min", "max"]
    with open(path, "w", newline="") as f:
        out = csv.DictWriter(f, fieldnames=fields)
        out.writeheader()
        for rep, (rate, fairness) in enumerate(n2_rates, 1):
            for smp in (8, 2):
                for variant in ("default", "nohv"):
                    base = {"run": "tcg-smp%d-%s-r%d" % (smp, variant, rep),
                            "config": "tcg-smp%d-%s" % (smp, variant), "accel": "tcg",
                            "smp": smp, "variant": variant, "qemu_cpu": "max",
                            "guest_lock_impl": "virt_tas"}
                    out.writerow(dict(base, name="raw_xchg", mode="uncontended", cpus=1,
                                      cycles_per_op=20.0))
                    for n in (2, 4, 8) if smp == 8 else (2,):
                        ops = rate * 1e6 if (smp, variant, n) == (8, "default", 2) else 2e6
                        out.writerow(dict(base, name="spin_lock", mode="contended", cpus=n,
                                          cycles_per_op=100.0, ops_per_s=ops, min=1000,
                                          max=1000 * (fairness if ops == rate * 1e6 else 1)))


def run(*args):
    return subprocess.run([sys.executable] + list(args), capture_output=True, text=True)


def main():
    merge = os.path.join(HERE, "bench-merge.py")
    compare = os.path.join(HERE, "bench-compare.py")
    with tempfile.TemporaryDirectory() as tmp:
        # Three boots at -smp 8 and -smp 2: N=2 ordinary lock at 12, 16, 14 M/s with max/min
        # 1.6, 1.0, 1.1 (the median boot by throughput is not the median by fairness).
        paths = {8: [], 2: []}
        for smp in (8, 2):
            for i, (ops, fairness, pair) in enumerate(((12.0, 1.6, 2.52), (16.0, 1.0, 2.47),
                                                       (14.0, 1.1, 2.49)), 1):
                path = os.path.join(tmp, "smp%d-boot%d.json" % (smp, i))
                with open(path, "w") as f:
                    json.dump(boot(smp, ops, fairness, pair), f)
                paths[smp].append(path)
        merged = {}
        for smp in (8, 2):
            out = os.path.join(tmp, "merged%d.json" % smp)
            r = run(merge, "--out", out, *paths[smp])
            check(r.returncode == 0, "merge -smp %d exits 0 (%s)" % (smp, r.stderr.strip()))
            with open(out) as f:
                merged[smp] = json.load(f)
        m = merged[8]
        row = next(x for x in m["contended"]
                   if (x["name"], x["cpus"]) == ("KeAcquireSpinLockAtDpcLevel", 2))
        check(row["ops_per_s"] == 14e6, "throughput is the median over boots: %s" %
              row["ops_per_s"])
        check(row["max_over_min"] == 1.1, "max/min is its own median: %s" % row["max_over_min"])
        check([b["ops_per_s"] for b in row["boots"]] == [12e6, 16e6, 14e6],
              "every boot's throughput, in boot order: %s" % row["boots"])
        check("windows" not in row, "a merged row has no windows")
        check(m["config"]["boots"] == 3, "config.boots is 3: %s" % m["config"].get("boots"))
        pair = next(x for x in m["uncontended"] if x["name"] == "KeAcquireSpinLockAtDpcLevel")
        check(pair["x_raw_xchg"] == 2.49, "the pair's x_raw_xchg is the median: %s" %
              pair["x_raw_xchg"])

        # A boot that failed part-way lacks rows: the others' rows are kept all the same.
        part = json.loads(open(paths[8][0]).read())
        part["contended"] = [x for x in part["contended"] if x["cpus"] != 8]
        part_path = os.path.join(tmp, "part.json")
        with open(part_path, "w") as f:
            json.dump(part, f)
        out = os.path.join(tmp, "part-merged.json")
        r = run(merge, "--out", out, part_path, paths[8][1])
        rows = json.load(open(out))["contended"] if r.returncode == 0 else []
        n8 = [x for x in rows if (x["name"], x["cpus"]) == ("KeAcquireSpinLockAtDpcLevel", 8)]
        check(len(n8) == 1 and len(n8[0]["boots"]) == 1,
              "a row only the second boot has is kept, from that boot: %s" % n8)

        # Boots of another configuration, and a file that is not there, are refused.
        other = json.loads(open(paths[8][0]).read())
        other["config"]["window_ms"] = 200
        other_path = os.path.join(tmp, "other.json")
        with open(other_path, "w") as f:
            json.dump(other, f)
        r = run(merge, "--out", os.path.join(tmp, "x.json"), paths[8][0], other_path)
        check(r.returncode == 1 and "window_ms" in r.stderr,
              "boots with different windows are refused (%d, %s)" % (r.returncode, r.stderr))
        r = run(merge, "--out", os.path.join(tmp, "x.json"), os.path.join(tmp, "missing.json"))
        check(r.returncode == 1 and "missing.json" in r.stderr,
              "a missing boot is an error (%d, %s)" % (r.returncode, r.stderr))
        check(not os.path.exists(os.path.join(tmp, "x.json")), "a refused merge writes nothing")

        # compare.md judges the medians of both kernels and lists every boot. Linux at N=2:
        # 13, 15, 14.5 M/s with max/min 1.05, 1.3, 1.2: medians 14.5 [1.2], so Spindle's
        # 14.0 [1.1] is slower (not met) although two of its three boots were faster.
        csv_path = os.path.join(tmp, "linux.csv")
        linux_csv(csv_path, ((13.0, 1.05), (15.0, 1.3), (14.5, 1.2)))
        md = os.path.join(tmp, "compare.md")
        r = run(compare, "--spindle", os.path.join(tmp, "merged8.json"),
                os.path.join(tmp, "merged2.json"), "--linux", csv_path, "--out", md)
        check(r.returncode == 0, "bench-compare.py exits 0 (%s)" % r.stderr.strip())
        text = open(md).read() if os.path.exists(md) else ""
        line = next((x for x in text.splitlines()
                     if x.startswith("| ordinary AtDpcLevel, `-smp 8` N=2")), "")
        check("14.00 [1.10] vs 14.50 [1.20]" in line, "N=2 cell has both medians: %s" % line)
        check("| **no** |" in line, "N=2 judged on the medians: not met: %s" % line)
        check("12.00 [1.60], 16.00 [1.00], 14.00 [1.10]; Linux 13.00 [1.05], 15.00 [1.30], "
              "14.50 [1.20]" in line, "N=2 lists every boot of both kernels: %s" % line)
        check("median over 3 boots of each kernel" in text, "compare.md says it took medians")
        pair_line = next((x for x in text.splitlines()
                          if x.startswith("| uncontended AtDpcLevel pair, `-smp 8`")), "")
        check("2.49 x" in pair_line and "| yes |" in pair_line and
              "2.52 x, 2.47 x, 2.49 x" in pair_line, "the pair: median and boots: %s" % pair_line)

    print("test-bench-merge: %d passed, %d failed" % (results["passed"], results["failed"]))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
