#!/usr/bin/env bash
# bench-compare.sh - Spindle's lock benchmark next to Linux's, on the same QEMU.
#
# Usage: scripts/bench-compare.sh [--kit DIR] [--out DIR] [--accel A] [--bench-ms N] [--boots N]
#   --kit DIR      the Linux peer kit linux-lockbench (default ../shared/peer/linux-lockbench,
#                  relative to the repository root): run.sh, report.awk, module/
#   --out DIR      where everything goes (default build/bench)
#   --accel A      tcg (default) or kvm, for both kernels
#   --bench-ms N   Spindle's contended window (default: the module's 200 ms)
#   --boots N      boots of each kernel per configuration, 1 to 9 (default 1); every figure
#                  is then the median over the boots, on both sides
#
# Runs, back to back: `make bench SMP=8` and `make bench SMP=2` (into OUT/smp8, OUT/smp2;
# with --boots N, N times each into OUT/smp*/boot1..N, and scripts/bench-merge.py writes
# the medians to OUT/smp*/results.json), then the kit's boots of Debian's Linux 6.1 with its
# lockbench module (SMPS="2 8" VARIANTS="default nohv" LOCKTORTURE=0, REPEAT=N,
# LB_PARAMS="iters=10000 reps=15" so that
# its uncontended batches are as short as Spindle's; WORK and OUTDIR under build/, because
# the kit's own folder may be read-only; the first run downloads the Debian kernel packages
# with apt-get download). The last run's OUT/smp*/results.json move to OUT/previous/ first.
# Then writes
#   OUT/compare.md     Spindle's rows next to Linux's, each Spindle figure as a ratio of Linux's;
#                      the waiting targets judged on this run; with a previous run, every
#                      contended Spindle row against it
#   OUT/peer-table.md  the kit's report.awk over the Linux and the Spindle logs together
# Speed never fails: the exit status is 1 only when a run failed or the kit is missing.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
kit=../shared/peer/linux-lockbench
out=build/bench
accel=tcg
bench_ms=""
boots=1

while [ $# -gt 0 ]; do
    case "$1" in
        --kit | --out | --accel | --bench-ms | --boots)
            [ $# -ge 2 ] || { echo "bench-compare: $1 needs a value" >&2; exit 2; }
            case "$1" in
                --kit) kit=$2 ;;
                --out) out=$2 ;;
                --accel) accel=$2 ;;
                --bench-ms) bench_ms=$2 ;;
                --boots) boots=$2 ;;
            esac
            shift 2
            ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "bench-compare: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

case "$boots" in
    [1-9]) ;;
    *) echo "bench-compare: --boots must be 1 to 9, not '$boots'" >&2; exit 2 ;;
esac
if [ ! -f "$kit/run.sh" ] || [ ! -f "$kit/report.awk" ] || [ ! -f "$kit/module/lockbench.c" ]; then
    echo "bench-compare: error: the Linux peer kit is missing: expected linux-lockbench" \
        "(run.sh, report.awk, module/lockbench.c) at $kit; pass --kit DIR or PEER_KIT=DIR" >&2
    exit 1
fi
kit=$(cd "$kit" && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$root/build/peer-linux/work
status=0

# The last run's Spindle results become the previous run: compare.md checks that the two agree.
for smp in 8 2; do
    if [ -f "$out/smp$smp/results.json" ]; then
        mkdir -p "$out/previous/smp$smp"
        mv -f "$out/smp$smp/results.json" "$out/previous/smp$smp/results.json"
    fi
done

# Spindle first: SMP=8, then SMP=2, each with its own log and output folder (one per boot
# when there are several). The rest of the previous run's files go first, so that no boot
# is merged twice and no report left beside this run's reads as this run's.
for smp in 8 2; do
    rm -rf "$out/smp$smp"
    for ((boot = 1; boot <= boots; boot++)); do
        dir=$out/smp$smp
        [ "$boots" -gt 1 ] && dir=$dir/boot$boot
        echo "bench-compare: make bench SMP=$smp${dir#"$out/smp$smp"}"
        mkdir -p "$dir"
        make --no-print-directory bench SMP="$smp" ACCEL="$accel" BENCH_OUT="$dir" \
            LOG="$dir/full-serial.log" ${bench_ms:+BENCH_MS=$bench_ms} || {
            echo "bench-compare: make bench SMP=$smp${dir#"$out/smp$smp"} failed" >&2
            status=1
        }
    done
    if [ "$boots" -gt 1 ]; then
        python3 scripts/bench-merge.py --out "$out/smp$smp/results.json" \
            "$out/smp$smp"/boot*/results.json || status=1
    fi
done

# Then Linux, on the same QEMU binary and accelerator.
echo "bench-compare: the Linux peer kit ($kit), work in $work"
# Uncontended batches as short as Spindle's (about 250 us rather than the module's default
# 1,000,000 iterations, tens of ms, which on a loaded host nearly always include the host's
# disturbance), and as many (15): the same method on both sides.
lb_params="iters=10000 reps=15"
[ -n "$bench_ms" ] && lb_params="$lb_params dur_ms=$bench_ms"
if ! WORK="$work" OUTDIR="$out/linux" ACCEL="$accel" SMPS="2 8" VARIANTS="default nohv" \
    LOCKTORTURE=0 CLEAN_LOGS=1 REPEAT="$boots" LB_PARAMS="$lb_params" bash "$kit/run.sh"; then
    echo "bench-compare: the peer kit failed" >&2
    status=1
fi

# The kit's own table over both kernels' logs: proof that Spindle's lines are in its format.
peer_inputs=()
for meta in "$work"/logs/*.meta; do
    [ -f "$meta" ] && peer_inputs+=("$meta" "${meta%.meta}.log")
done
for smp in 8 2; do
    metas=("$out/smp$smp/spindle-smp$smp.meta")
    [ "$boots" -gt 1 ] && metas=("$out/smp$smp"/boot*/"spindle-smp$smp.meta")
    for meta in "${metas[@]}"; do
        [ -f "$meta" ] && peer_inputs+=("$meta" "$(dirname "$meta")/serial.log")
    done
done
if [ "${#peer_inputs[@]}" -gt 0 ]; then
    awk -v csv="$out/peer-table.csv" -f "$kit/report.awk" "${peer_inputs[@]}" \
        >"$out/peer-table.md" || status=1
fi

python3 scripts/bench-compare.py --spindle "$out/smp8/results.json" "$out/smp2/results.json" \
    --linux "$out/linux/results.csv" --out "$out/compare.md" \
    --previous "$out/previous/smp8/results.json" "$out/previous/smp2/results.json" || status=1
exit "$status"
