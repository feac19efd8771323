#!/usr/bin/env python3
"""bench-report.py - turn the serial log of `make bench` into a report, JSON and plots.

Usage: scripts/bench-report.py [--log FILE] [--out DIR] [--smp N] [--accel A] [--cpu MODEL]
                               [--status N] [--no-plots] [--elf ELF --bench-objects GLOB]

  --log FILE    the serial log of the run (default build/serial.log)
  --out DIR     where the results go (default build/bench):
                  report.md        environment, boot, uncontended and contended tables
                  results.json     every figure, machine-readable
                  serial.log       the lockbench and `# bench` lines of the run
                  spindle-smpN.meta  key=value lines for the peer kit's report.awk
                  *.png            gnuplot plots (contended throughput and max/min
                                   against N, uncontended cycles with the floors)
  --smp N       the -smp count of the run; the contended series must reach it
  --accel A     QEMU's accelerator (tcg or kvm); --cpu the -cpu model (max)
  --status N    the exit status of the run (make test); non-zero fails the report
  --no-plots    skip gnuplot
  --elf ELF, --bench-objects GLOB
                the kernel that ran and the bench's object files: under TCG the
                report then says whether a timed loop's hot lookups share a
                slot of QEMU's jump cache (scripts/tcg-jump-cache.py), which
                slows that row in every boot of this build

The kernel prints one line per figure in the format of the Linux peer module
`lockbench` (tests/bench/bench.c). Speed never fails: the exit status is 1 only
when the run failed, a result is missing or mutual exclusion was violated; 2 on
a usage error.
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys

# The floors every uncontended row is divided by (tests/bench/uncontended.c prints them first).
FLOORS = ["empty_loop", "raw_xchg", "cr8_pair"]
# The contended locks (tests/bench/contended.c), in the order they are plotted.
LOCKS = [
    "KeAcquireSpinLockAtDpcLevel",
    "KeAcquireSpinLock",
    "KeAcquireInStackQueuedSpinLockAtDpcLevel",
    "KeAcquireInStackQueuedSpinLock",
    "virt_tas",
    "raw_mcs",
    "raw_xchg",
    "virt_tas_called",
    "raw_mcs_called",
]
LOCK_NOTES = {
    "KeAcquireSpinLockAtDpcLevel": "ordinary lock at DISPATCH_LEVEL (shape of Linux spin_lock)",
    "KeAcquireSpinLock": "ordinary lock, raising and lowering IRQL (shape of spin_lock_irqsave)",
    "KeAcquireInStackQueuedSpinLockAtDpcLevel": "in-stack queued (MCS) lock at DISPATCH_LEVEL",
    "KeAcquireInStackQueuedSpinLock": "in-stack queued lock, raising and lowering IRQL",
    "virt_tas": "reference: Linux 6.1 virt_spin_lock test-and-set, written in the bench",
    "raw_mcs": "reference: the queued lock's MCS algorithm alone, inline, never halting",
    "raw_xchg": "reference: the peer module's xchg test-and-test-and-set lock",
    "virt_tas_called": "reference: virt_tas behind two calls to another page, as an API is called",
    "raw_mcs_called": "reference: raw_mcs behind two calls to another page, as an API is called",
}


def fail(message):
    print("bench-report: error: " + message, file=sys.stderr)


def number(text):
    try:
        return float(text) if "." in text else int(text)
    except ValueError:
        return text


def fields(text):
    out = {}
    for token in text.split():
        key, sep, value = token.partition("=")
        if sep and key:
            out[key] = number(value)
    return out


def parse_log(path):
    run = {"info": {}, "config": {}, "boot": {}, "uncontended": [], "contended": [],
           "windows": [], "done": False, "failures": []}
    with open(path, "r", errors="replace") as log:
        for raw in log:
            line = raw.rstrip("\r\n").replace("\r", "")
            if line.startswith("lockbench: name="):
                f = fields(line[len("lockbench: "):])
                name = f.get("name")
                if name == "info":
                    run["info"] = f
                elif name == "done":
                    run["done"] = True
                elif f.get("mode") == "uncontended":
                    run["uncontended"].append(f)
                elif f.get("mode") == "contended":
                    run["contended"].append(f)
            elif line.startswith("# bench config "):
                run["config"] = fields(line[len("# bench config "):])
            elif line.startswith("# bench boot "):
                run["boot"] = fields(line[len("# bench boot "):])
            elif line.startswith("# bench window "):
                run["windows"].append(fields(line[len("# bench window "):]))
            elif re.match(r"^not ok [0-9]+ Bench:", line) or line.startswith("*** STOP:"):
                run["failures"].append(line)
            elif re.match(r"^ok [0-9]+ Bench:.*# SKIP", line):
                run["failures"].append(line)
    return run


def environment(args, run):
    env = {}
    qemu = os.environ.get("QEMU", "qemu-system-x86_64")
    try:
        env["qemu"] = subprocess.run([qemu, "--version"], capture_output=True, text=True,
                                     check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        env["qemu"] = "unknown (%s not found)" % qemu
    env["accel"] = args.accel
    env["accel_detail"] = "tcg,thread=multi (MTTCG: one host thread per vCPU)" \
        if args.accel == "tcg" else args.accel
    env["cpu"] = args.cpu
    env["vcpus"] = int(run["info"].get("cpus_online", args.smp or 0))
    env["host_cores"] = os.cpu_count() or 0
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            models = [l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name")]
        env["host_cpu"] = models[0] if models else "unknown"
    except OSError:
        env["host_cpu"] = "unknown"
    env["guest_cpu"] = str(run["info"].get("model", "unknown")).replace("_", " ")
    env["tsc_khz"] = run["info"].get("tsc_khz", 0)
    env["rdtscp"] = run["info"].get("rdtscp", 0)
    env["overcommit"] = env["host_cores"] > 0 and env["vcpus"] > env["host_cores"]
    return env


def fmt(value, digits=2):
    if value is None:
        return "-"
    if isinstance(value, float) and value >= 1e9:
        return "inf"
    return ("%." + str(digits) + "f") % value


def jump_cache(elf, objects):
    """The collisions scripts/tcg-jump-cache.py finds, one string each; None if it could not run."""
    paths = sorted(glob.glob(objects))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tcg-jump-cache.py")
    if not paths or not os.path.exists(elf):
        return None
    out = subprocess.run([sys.executable, script, elf] + paths, capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return [line.split(": ", 1)[1] for line in out.stdout.splitlines()
            if line.startswith("tcg-jump-cache: ") and line != "tcg-jump-cache: none"]


def build_results(run, env):
    floors = {r["name"]: r["cycles_per_op"] for r in run["uncontended"] if r["name"] in FLOORS}
    unc = []
    for r in run["uncontended"]:
        row = {k: r.get(k) for k in ("name", "cpus", "iters", "reps", "cycles_per_op",
                                      "min_cycles_per_op", "max_cycles_per_op", "ns_per_op")}
        for floor in FLOORS:
            base = floors.get(floor)
            row["x_" + floor] = round(r["cycles_per_op"] / base, 2) if base else None
        # Spindle's kernel measures the raw_xchg ratio itself, each batch against a
        # floor batch run just before it (tests/bench/uncontended.c); that figure
        # is the one host slow spells do not move, so it wins where present.
        if r.get("x_raw_xchg") is not None:
            row["x_raw_xchg"] = r["x_raw_xchg"]
        unc.append(row)
    con = []
    for r in run["contended"]:
        mn, mx = r.get("min", 0), r.get("max", 0)
        wins = [w for w in run["windows"] if w.get("name") == r["name"] and
                w.get("cpus") == r["cpus"]]
        con.append({
            "name": r["name"], "cpus": r["cpus"], "ops_per_s": r["ops_per_s"],
            "cycles_per_op": r["cycles_per_op"], "min": mn, "max": mx,
            "max_over_min": round(mx / mn, 2) if mn else 1e9,
            "total": r["total"], "counter": r["counter"], "mutex_ok": r["mutex_ok"],
            "elapsed_ms": r["elapsed_ms"], "dur_ms": r["dur_ms"], "cs_work": r.get("cs_work"),
            "ncs_work": r.get("ncs_work"), "median_window": r.get("window"),
            "windows": [{k: w.get(k) for k in ("window", "ops_per_s", "cycles_per_op", "min",
                                                "max", "total", "counter", "mutex_ok",
                                                "elapsed_ms")} for w in wins],
        })
    return {"environment": env, "config": run["config"], "info": run["info"],
            "boot": run["boot"], "floors": floors, "uncontended": unc, "contended": con}


def write_report(path, res, plots):
    env, cfg, boot = res["environment"], res["config"], res["boot"]
    out = []
    w = out.append
    w("# Spindle lock benchmark (`make bench`)")
    w("")
    w("## Environment")
    w("")
    w("| | |")
    w("| --- | --- |")
    w("| QEMU | %s |" % env["qemu"])
    w("| accelerator | %s |" % env["accel_detail"])
    w("| `-cpu` | %s (guest sees: %s) |" % (env["cpu"], env["guest_cpu"]))
    w("| vCPUs | %s |" % env["vcpus"])
    w("| host cores | %s (%s) |" % (env["host_cores"], env["host_cpu"]))
    w("| guest TSC | %.3f GHz measured by the bench against the PIT (the kernel's calibration: "
      "%.3f GHz), rdtscp %s |" % (env["tsc_khz"] / 1e6, cfg.get("tsc_hz_kernel", 0) / 1e9,
                                  "yes" if env["rdtscp"] else "no"))
    w("| build | %s |" % cfg.get("build", "?"))
    w("| contended | window %s ms, median of %s windows, cs_work=%s ncs_work=%s |" % (
        cfg.get("window_ms"), cfg.get("windows"), cfg.get("cs_work"), cfg.get("ncs_work")))
    w("| uncontended | median of %s batches of about %s ms each |" % (
        cfg.get("reps"), fmt(cfg.get("window_ms", 200) / 800.0, 2)))
    w("")
    if env["overcommit"]:
        w("**Warning: %d vCPUs on %d host cores (%.0f:1 overcommit).** Contended figures with "
          "more processors than host cores mix lock behaviour with the host descheduling vCPUs "
          "(lock-holder and lock-waiter preemption); a FIFO lock suffers most." % (
              env["vcpus"], env["host_cores"], env["vcpus"] / env["host_cores"]))
        w("")
    if env["accel"] == "tcg":
        w("Under TCG every figure is an emulation cost in guest TSC cycles (the host's rate): "
          "compare rows with each other and with the floors of this run, not with hardware.")
        w("")
    layout = res.get("jump_cache")
    if layout is not None and not layout:
        w("QEMU's jump cache (scripts/tcg-jump-cache.py): no timed loop of this build looks up "
          "two addresses that share a slot or crosses a page boundary.")
        w("")
    elif layout:
        w("**Warning: in this build these timed loops look up two addresses that share a slot "
          "of QEMU's jump cache, or cross a page boundary** (scripts/tcg-jump-cache.py), so "
          "under TCG their rows run slower in every boot of it (up to half or worse): %s."
          % "; ".join(layout))
        w("")
    if boot:
        w("## Boot")
        w("")
        w("| firmware and loader (reset to kernel entry) | kernel entry to %s processors online |"
          % boot.get("cpus"))
        w("| ---: | ---: |")
        w("| %s ms | %s ms |" % (boot.get("entry_ms"), boot.get("entry_to_online_ms")))
        w("")
    w("## Uncontended: TSC cycles per iteration, one processor")
    w("")
    w("Median of the batches, minimum and maximum; each divided by this run's floors "
      "(`raw_xchg` = bare xchg acquire + store release, `cr8_pair` = two CR8 writes, "
      "`empty_loop` = the loop alone, not subtracted). x raw_xchg is the median over the "
      "batches of each batch against a `raw_xchg` batch run just before it, so a spell in "
      "which the host slows the vCPU moves both alike. cpus = processors one iteration "
      "involves.")
    w("")
    w("| primitive | cpus | cycles | min | max | x raw_xchg | x cr8_pair | ns |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in res["uncontended"]:
        w("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["name"], r["cpus"], fmt(r["cycles_per_op"]), fmt(r["min_cycles_per_op"]),
            fmt(r["max_cycles_per_op"]), fmt(r["x_raw_xchg"]), fmt(r["x_cr8_pair"]),
            fmt(r["ns_per_op"])))
    w("")
    w("## Contended: million acquisitions per second [max/min per processor]")
    w("")
    w("N processors released together by a gate, `counter = counter + 1` under the lock, "
      "a wall-clock stop flag; the median window of %s. max/min = the most successful "
      "processor's acquisitions over the least successful's (1.00 = even)." % cfg.get("windows"))
    w("")
    ns = sorted({r["cpus"] for r in res["contended"]})
    w("| lock | " + " | ".join("N=%d" % n for n in ns) + " |")
    w("| --- |" + " ---: |" * len(ns))
    for lock in LOCKS:
        cells = []
        for n in ns:
            r = next((c for c in res["contended"] if c["name"] == lock and c["cpus"] == n), None)
            cells.append("-" if r is None else "%.2f [%s]" % (r["ops_per_s"] / 1e6,
                                                              fmt(r["max_over_min"])))
        w("| %s | %s |" % (lock, " | ".join(cells)))
    w("")
    for lock in LOCKS:
        w("- `%s`: %s" % (lock, LOCK_NOTES[lock]))
    w("")
    w("### Every contended row")
    w("")
    w("| lock | N | M acq/s | cycles per acquisition | min | max | max/min | elapsed ms | "
      "windows M acq/s | mutual exclusion |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in res["contended"]:
        w("| %s | %d | %.2f | %s | %d | %d | %s | %s | %s | %s |" % (
            r["name"], r["cpus"], r["ops_per_s"] / 1e6, fmt(r["cycles_per_op"]), r["min"],
            r["max"], fmt(r["max_over_min"]), fmt(r["elapsed_ms"]),
            " / ".join("%.2f" % (x["ops_per_s"] / 1e6) for x in r["windows"]),
            "ok" if r["mutex_ok"] == 1 else "VIOLATED"))
    w("")
    if plots:
        w("## Plots")
        w("")
        for png, title in plots:
            w("![%s](%s)" % (title, png))
            w("")
    with open(path, "w") as f:
        f.write("\n".join(out))


def gnuplot(script, cwd):
    try:
        result = subprocess.run(["gnuplot"], input=script, text=True, cwd=cwd,
                                capture_output=True, check=False)
    except OSError:
        fail("gnuplot not found: run scripts/deps.sh (Debian gnuplot-nox)")
        return False
    if result.returncode != 0:
        fail("gnuplot failed: " + result.stderr.strip())
        return False
    return True


def make_plots(res, out):
    plots = []
    env = res["environment"]
    tag = "%d vCPUs, %d host cores, %s" % (env["vcpus"], env["host_cores"], env["accel"])
    ns = sorted({r["cpus"] for r in res["contended"]})
    locks = [l for l in LOCKS if any(r["name"] == l for r in res["contended"])]
    if ns and locks:
        with open(os.path.join(out, "contended.dat"), "w") as f:
            f.write("N " + " ".join(locks) + "\n")
            for n in ns:
                row = [str(n)]
                for lock in locks:
                    r = next((c for c in res["contended"]
                              if c["name"] == lock and c["cpus"] == n), None)
                    row.append("?" if r is None else "%.4f %.2f" % (
                        r["ops_per_s"] / 1e6, min(r["max_over_min"], 1e7)))
                f.write(" ".join(row) + "\n")
        common = """set terminal pngcairo size 1100,700 noenhanced font ",11"
set key below
set grid
set logscale x 2
set xtics (%s)
set xrange [0.8:%f]
set xlabel "processors contending (N)"
set datafile missing "?"
""" % (", ".join(str(n) for n in ns), max(ns) * 1.25)
        lines = ", ".join("'contended.dat' using 1:%d with linespoints lw 2 pt 7 title '%s'" % (
            2 + 2 * i, l) for i, l in enumerate(locks))
        if gnuplot(common + """set output 'contended-throughput.png'
set logscale y
set ylabel "million acquisitions per second (log)"
set title "Contended throughput (%s)"
plot %s
""" % (tag, lines), out):
            plots.append(("contended-throughput.png", "contended throughput against N"))
        lines = ", ".join("'contended.dat' using 1:%d with linespoints lw 2 pt 7 title '%s'" % (
            3 + 2 * i, l) for i, l in enumerate(locks))
        if gnuplot(common + """set output 'contended-fairness.png'
set logscale y
set ylabel "max/min acquisitions per processor (log; 1 = even)"
set title "Contended fairness (%s)"
plot %s
""" % (tag, lines), out):
            plots.append(("contended-fairness.png", "max/min against N"))
    unc = res["uncontended"]
    if unc:
        with open(os.path.join(out, "uncontended.dat"), "w") as f:
            for i, r in enumerate(unc):
                f.write('%d "%s" %.2f %.2f %.2f\n' % (i, r["name"], r["cycles_per_op"],
                                                      r["min_cycles_per_op"],
                                                      r["max_cycles_per_op"]))
        arrows, keys = [], []
        colours = {"raw_xchg": "#d62728", "cr8_pair": "#2ca02c", "empty_loop": "#7f7f7f"}
        for floor in FLOORS:
            value = res["floors"].get(floor)
            if value:
                arrows.append("set arrow from %f, graph 0 to %f, graph 1 nohead lw 2 lc rgb '%s'"
                              % (value, value, colours[floor]))
                keys.append("NaN with lines lw 2 lc rgb '%s' title 'floor: %s = %.1f cycles'"
                            % (colours[floor], floor, value))
        height = 120 + 18 * len(unc)
        if gnuplot("""set terminal pngcairo size 1200,%d noenhanced font ",10"
set output 'uncontended.png'
set title "Uncontended TSC cycles per iteration, median (bars) and min..max (%s)"
set logscale x
set xlabel "TSC cycles (log)"
set grid xtics
set yrange [%d:-1]
set ytics scale 0
set style fill solid 0.6
set key top right opaque box
%s
plot 'uncontended.dat' using (($3+1)/2):1:(1):3:($1-0.4):($1+0.4):ytic(2) with boxxyerror lc rgb '#1f77b4' notitle, \\
     '' using 3:1:4:5 with xerrorbars pt 0 lc rgb 'black' notitle%s
""" % (height, tag, len(unc), "\n".join(arrows), "".join(", " + k for k in keys)), out):
            plots.append(("uncontended.png", "uncontended cycles per primitive with the floors"))
    return plots


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", default="build/serial.log")
    parser.add_argument("--out", default="build/bench")
    parser.add_argument("--smp", type=int, default=0)
    parser.add_argument("--accel", default="tcg")
    parser.add_argument("--cpu", default="max")
    parser.add_argument("--status", type=int, default=0)
    parser.add_argument("--no-plots", action="store_true")
    parser.add_argument("--elf")
    parser.add_argument("--bench-objects")
    args = parser.parse_args()

    if not os.path.isfile(args.log):
        fail("no serial log %s" % args.log)
        return 1
    os.makedirs(args.out, exist_ok=True)
    run = parse_log(args.log)
    env = environment(args, run)
    res = build_results(run, env)
    if env["accel"] == "tcg" and args.elf and args.bench_objects:
        res["jump_cache"] = jump_cache(args.elf, args.bench_objects)

    with open(os.path.join(args.out, "serial.log"), "w") as f:
        with open(args.log, errors="replace") as log:
            for line in log:
                line = line.replace("\r", "")
                if line.startswith("lockbench: ") or line.startswith("# bench "):
                    f.write(line)
    # Named as the kit names its runs: report.awk takes the run's name from the file name.
    with open(os.path.join(args.out, "spindle-smp%d.meta" % env["vcpus"]), "w") as f:
        f.write("run=spindle-smp%d\nconfig=spindle-smp%d\naccel=%s\nsmp=%d\nvariant=spindle\n"
                "cpu=%s\nmem=256\nkernel=spindle\nhost_cpu=%s\nhost_cpus=%d\nqemu=%s\n" % (
                    env["vcpus"], env["vcpus"], env["accel"], env["vcpus"], env["cpu"],
                    env["host_cpu"], env["host_cores"], env["qemu"]))
    plots = [] if args.no_plots else make_plots(res, args.out)
    write_report(os.path.join(args.out, "report.md"), res, plots)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")

    # A short summary on the terminal.
    print("")
    print("Spindle lock benchmark: %d vCPUs on %d host cores, %s%s" % (
        env["vcpus"], env["host_cores"], env["accel"],
        "  (WARNING: vCPUs outnumber host cores)" if env["overcommit"] else ""))
    if run["boot"]:
        print("boot: kernel entry to all processors online %s ms" %
              run["boot"].get("entry_to_online_ms"))
    for r in res["uncontended"]:
        if r["name"] in FLOORS + ["raw_xchg_called", "KeAcquireSpinLock",
                                  "KeAcquireSpinLockAtDpcLevel",
                                  "KeAcquireInStackQueuedSpinLock", "KeIpiGenericCall"]:
            print("  %-44s %10s cycles  x%s raw_xchg" % (r["name"], fmt(r["cycles_per_op"]),
                                                         fmt(r["x_raw_xchg"])))
    for r in res["contended"]:
        print("  %-44s N=%-2d %8.2f M/s  max/min %s" % (r["name"], r["cpus"],
                                                         r["ops_per_s"] / 1e6,
                                                         fmt(r["max_over_min"])))
    for collision in res.get("jump_cache") or []:
        print("bench: WARNING: QEMU jump-cache collision or page-crossing loop, that row runs "
              "slower in this build: %s" % collision)
    print("bench: wrote %s/report.md, results.json%s" % (
        args.out, ", " + ", ".join(p for p, _ in plots) if plots else ""))

    failed = False
    if args.status != 0:
        fail("the run failed (exit %d); see %s" % (args.status, args.log))
        failed = True
    for line in run["failures"]:
        fail(line)
        failed = True
    if not run["done"]:
        fail("no 'lockbench: name=done' line: the run did not finish")
        failed = True
    names = {r["name"] for r in run["uncontended"]}
    for floor in FLOORS:
        if floor not in names:
            fail("no uncontended result for the floor %s" % floor)
            failed = True
    active = env["vcpus"] or args.smp
    series, n = [], 1
    while n < active:
        series.append(n)
        n *= 2
    series.append(active)
    for lock in LOCKS:
        for n in series:
            if not any(r["name"] == lock and r["cpus"] == n for r in run["contended"]):
                fail("no contended result for %s N=%d" % (lock, n))
                failed = True
    for r in res["contended"]:
        if r["mutex_ok"] != 1:
            fail("mutual exclusion violated: %s N=%d" % (r["name"], r["cpus"]))
            failed = True
    if args.smp and env["vcpus"] != args.smp:
        fail("%s processors online, -smp %d" % (env["vcpus"], args.smp))
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
