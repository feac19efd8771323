#!/usr/bin/env python3
"""bench-merge.py - one results.json out of several boots' `make bench` results.

Usage: scripts/bench-merge.py --out RESULTS.json BOOT.json [BOOT.json ...]

Used by `make bench-compare BENCH_BOOTS=n` (scripts/bench-compare.sh), which
boots `make bench` n times per -smp. Under TCG a contended figure belongs to
the stretch of time it was measured in as much as to the lock: a row's
consecutive windows keep one level and one per-processor split, and the same
row a few seconds later, in the same boot or another, may keep another
(README.md, "Measuring"). The median of a row's windows cannot settle that;
the median over boots can.
The Linux side of the comparison is booted as often and reduced the same way
(the peer kit's REPEAT=n and report.awk's medians).

Every row that any boot has is kept, with each figure replaced by its median
over the boots that have the row: throughput, max/min (its own median, as the
peer kit does) and cycles of a contended row; cycles, ns and the x-floor
ratios of an uncontended row. Each merged row gets `boots`, the figures of
every boot in order, and drops its `windows` (they belong to one boot).
config.boots says how many boots were merged. Exits 1 when a file cannot be
read or the boots ran different configurations (-smp, window, build).
"""

import argparse
import json
import statistics
import sys

CONTENDED_MEDIANS = ("ops_per_s", "max_over_min", "cycles_per_op", "elapsed_ms")
UNCONTENDED_MEDIANS = ("cycles_per_op", "min_cycles_per_op", "max_cycles_per_op", "ns_per_op",
                       "x_empty_loop", "x_raw_xchg", "x_cr8_pair")
SAME_CONFIG = ("build", "cpus", "window_ms", "windows", "cs_work", "ncs_work")


def median_of(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def merge_rows(boots, section, fields, kept):
    """Every row any boot has, in the order first seen, with its fields' medians over the
    boots that have it (a boot that failed part-way lacks some rows)."""
    merged = []
    keys = []
    for boot in boots:
        keys += [k for k in ((r["name"], r["cpus"]) for r in boot[section]) if k not in keys]
    for key in keys:
        same = [r for b in boots for r in b[section] if (r["name"], r["cpus"]) == key]
        row = same[0]
        out = {k: v for k, v in row.items() if k != "windows"}
        for field in fields:
            value = median_of(same, field)
            if value is not None:
                out[field] = round(value, 2) if isinstance(value, float) else value
        if "mutex_ok" in row:
            out["mutex_ok"] = int(all(r.get("mutex_ok") for r in same))
        out["boots"] = [{k: r.get(k) for k in kept} for r in same]
        merged.append(out)
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("boots", nargs="+")
    args = parser.parse_args()

    boots = []
    for path in args.boots:
        try:
            with open(path) as f:
                boots.append(json.load(f))
        except (OSError, ValueError) as e:
            print("bench-merge: error: %s: %s" % (path, e), file=sys.stderr)
            return 1
    first = boots[0]["config"]
    for path, boot in zip(args.boots[1:], boots[1:]):
        differ = [k for k in SAME_CONFIG if boot["config"].get(k) != first.get(k)]
        if differ:
            print("bench-merge: error: %s ran another configuration than %s (%s)" %
                  (path, args.boots[0], ", ".join(differ)), file=sys.stderr)
            return 1

    merged = dict(boots[0])
    merged["config"] = dict(first, boots=len(boots))
    merged["floors"] = {k: round(statistics.median(b["floors"][k] for b in boots
                                                   if k in b.get("floors", {})), 2)
                        for k in boots[0].get("floors", {})}
    merged["uncontended"] = merge_rows(boots, "uncontended", UNCONTENDED_MEDIANS,
                                       ("cycles_per_op", "x_raw_xchg", "ns_per_op"))
    merged["contended"] = merge_rows(boots, "contended", CONTENDED_MEDIANS,
                                     ("ops_per_s", "max_over_min"))
    jump_cache = []
    for boot in boots:
        jump_cache += [c for c in boot.get("jump_cache") or [] if c not in jump_cache]
    merged["jump_cache"] = jump_cache
    with open(args.out, "w") as f:
        json.dump(merged, f, indent=1)
    print("bench-merge: wrote %s (median of %d boots)" % (args.out, len(boots)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
