#!/usr/bin/env bash
# bench-report.sh - turn the `# bench ...` lines of a `make bench` serial log into a table,
# a CSV file and ASCII bar charts (one per metric).
#
# Usage: scripts/bench-report.sh [--log FILE] [--csv FILE] [--smp N] [--status N]
#   --log FILE    the serial log of the run (default build/serial.log)
#   --csv FILE    where to write the CSV (default build/bench.csv)
#   --smp N       the processor count the run had; the contended series must reach it
#   --status N    the exit status of the run (make test); non-zero fails the report
#
# The lines come from tests/bench/bench.c:
#   # bench config build=free cpus=8 window_ms=200 tsc_hz=...
#   # bench uncontended op=NAME cpus=1 ops=N ns=N ns_per_op=X.Y
#   # bench contended lock=NAME cpus=N ops=N ns=N ns_per_op=X.Y ops_per_s=N min=N max=N
#     fairness_pct=N                                              (one line)
#
# Speed never fails. Exits 1 when the run failed (--status), a Bench test did not pass, or an
# expected line is missing; 2 on a usage error; 0 otherwise.
set -euo pipefail

log=build/serial.log
csv=build/bench.csv
smp=""
status=0

while [ $# -gt 0 ]; do
    case "$1" in
        --log | --csv | --smp | --status)
            [ $# -ge 2 ] || { echo "bench-report: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --log) log=$2 ;;
                --csv) csv=$2 ;;
                --smp) smp=$2 ;;
                --status) status=$2 ;;
            esac
            shift 2
            ;;
        -h | --help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench-report: unknown argument '$1'" >&2; exit 2 ;;
    esac
done

[ -f "$log" ] || { echo "bench-report: no serial log $log" >&2; exit 1; }
mkdir -p "$(dirname "$csv")"

# The operations tests/bench/bench.c measures uncontended, and the two contended lock kinds.
uncontended_ops="KeAcquireSpinLock KeAcquireSpinLockAtDpcLevel KeAcquireInStackQueuedSpinLock
InterlockedIncrement ExInterlockedInsertTailList+RemoveHeadList KeRaiseIrql+KeLowerIrql
KeInsertQueueDpc_local KeIpiGenericCall"
contended_locks="KeAcquireSpinLock KeAcquireInStackQueuedSpinLock"

# Processor counts of the contended series: 1, 2, 4, ... below smp, then smp.
cpu_series=""
if [ -n "$smp" ]; then
    n=1
    while [ "$n" -lt "$smp" ]; do cpu_series+="$n "; n=$((n * 2)); done
    cpu_series+="$smp"
fi

tr -d '\r' <"$log" | awk -v csv="$csv" -v status="$status" -v ops="$uncontended_ops" \
    -v locks="$contended_locks" -v series="$cpu_series" '
function field(key,    i, kv)
{
    for (i = 3; i <= NF; i++)
    {
        if (index($i, key "=") == 1)
        {
            return substr($i, length(key) + 2)
        }
    }
    return ""
}

# One bar chart: title, then n rows label | bar | value, scaled to the largest value
# (logarithmically when logscale is set: the uncontended costs span five decades).
function chart(title, n, labels, values, unit, logscale,    i, max, width, bar, j)
{
    printf "\n%s\n", title
    max = 0
    for (i = 1; i <= n; i++)
    {
        if (values[i] + 0 > max)
        {
            max = values[i] + 0
        }
    }
    for (i = 1; i <= n; i++)
    {
        if (logscale)
        {
            width = max > 0 ? int(log(1 + values[i]) * 50 / log(1 + max) + 0.5) : 0
        }
        else
        {
            width = max > 0 ? int(values[i] * 50 / max + 0.5) : 0
        }
        if (width == 0 && values[i] > 0)
        {
            width = 1
        }
        bar = ""
        for (j = 0; j < width; j++)
        {
            bar = bar "#"
        }
        printf "  %-44s |%-50s %s%s\n", labels[i], bar, values[i], unit
    }
}

/^# bench config / && config == "" {
    config = sprintf("build=%s, %s processor(s), %s ms per data point, TSC %s Hz",
                     field("build"), field("cpus"), field("window_ms"), field("tsc_hz"))
}
/^# bench uncontended / {
    name = field("op")
    nu++
    uname[nu] = name
    uns[nu] = field("ns_per_op")
    uops[nu] = field("ops")
    seen["u " name] = 1
    ucpus[nu] = field("cpus")
    rows[++nrows] = sprintf("uncontended,%s,%s,%s,%s,%s,,,,", name, field("cpus"), field("ops"),
                            field("ns"), field("ns_per_op"))
}
/^# bench contended / {
    name = field("lock")
    nc++
    cname[nc] = name
    ccpus[nc] = field("cpus")
    cns[nc] = field("ns_per_op")
    crate[nc] = field("ops_per_s")
    cmin[nc] = field("min")
    cmax[nc] = field("max")
    cfair[nc] = field("fairness_pct")
    seen["c " name " " field("cpus")] = 1
    rows[++nrows] = sprintf("contended,%s,%s,%s,%s,%s,%s,%s,%s,%s", name, field("cpus"),
                            field("ops"), field("ns"), field("ns_per_op"), field("ops_per_s"),
                            field("min"), field("max"), field("fairness_pct"))
}
/^(not )?ok [0-9]+ Bench:/ {
    if ($1 == "not" || / # SKIP/)
    {
        bad[++nbad] = $0
    }
}
/^\*\*\* STOP:/ { bad[++nbad] = $0 }

END {
    print ""
    print "Spindle microbenchmarks (" (config == "" ? "no configuration line" : config) ")"
    print "Caveat: under QEMU/TCG these are emulator numbers: useful for comparing the primitives"
    print "with each other within one run, not as the speed of any real processor."

    if (nu > 0)
    {
        print ""
        printf "%-44s %4s %12s %12s\n", "uncontended", "cpus", "ns/op", "ops"
        for (i = 1; i <= nu; i++)
        {
            printf "%-44s %4s %12s %12s\n", uname[i], ucpus[i], uns[i], uops[i]
            labels[i] = uname[i]
            values[i] = uns[i]
        }
    }
    if (nc > 0)
    {
        print ""
        printf "%-32s %4s %10s %12s %10s %10s %6s\n", "contended lock", "cpus", "ns/op",
               "acq/s", "min/cpu", "max/cpu", "fair%"
        for (i = 1; i <= nc; i++)
        {
            printf "%-32s %4s %10s %12s %10s %10s %6s\n", cname[i], ccpus[i], cns[i], crate[i],
                   cmin[i], cmax[i], cfair[i]
        }
    }

    if (nu > 0)
    {
        chart("ns/op, uncontended, log scale (shorter is faster)", nu, labels, values, " ns", 1)
    }
    if (nc > 0)
    {
        for (i = 1; i <= nc; i++)
        {
            labels[i] = sprintf("%s cpus=%s", cname[i], ccpus[i])
            values[i] = cns[i]
        }
        chart("ns/op, contended: window / all acquisitions (shorter is faster)", nc, labels,
              values, " ns", 0)
        for (i = 1; i <= nc; i++)
        {
            values[i] = crate[i]
        }
        chart("acquisitions/s, contended (longer is more)", nc, labels, values, "/s", 0)
        for (i = 1; i <= nc; i++)
        {
            values[i] = cfair[i]
        }
        chart("fairness, contended: min/max acquisitions per processor (100 = even)", nc, labels,
              values, "%", 0)
    }

    print "kind,name,cpus,ops,ns,ns_per_op,ops_per_s,min,max,fairness_pct" > csv
    for (i = 1; i <= nrows; i++)
    {
        print rows[i] > csv
    }
    close(csv)
    print ""
    print "bench: " nrows " result(s) written to " csv

    failed = 0
    if (status != 0)
    {
        print "bench: error: the run failed (exit " status "); see the serial log" > "/dev/stderr"
        failed = 1
    }
    for (i = 1; i <= nbad; i++)
    {
        print "bench: error: " bad[i] > "/dev/stderr"
        failed = 1
    }
    n = split(ops, list, /[ \n]+/)
    for (i = 1; i <= n; i++)
    {
        if (list[i] != "" && !(("u " list[i]) in seen))
        {
            print "bench: error: no result for uncontended " list[i] > "/dev/stderr"
            failed = 1
        }
    }
    nl = split(locks, lock, / /)
    ns = split(series, cpus, / /)
    for (i = 1; i <= nl; i++)
    {
        for (j = 1; j <= ns; j++)
        {
            if (!(("c " lock[i] " " cpus[j]) in seen))
            {
                print "bench: error: no result for contended " lock[i] " cpus=" cpus[j] \
                    > "/dev/stderr"
                failed = 1
            }
        }
    }
    exit failed
}'
