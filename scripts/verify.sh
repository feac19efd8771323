#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# verify.sh - model-check the Promela models in models/ with spin (make verify).
#
# Usage: scripts/verify.sh [--out DIR] [--only NAME]
#   --out DIR   where spin's pan.c and the verifiers are built (default build/verify)
#   --only NAME check one model (queuedlock, csq, startio, startio-deferred) and its mutants
#
# Every model is searched exhaustively twice, each with a verifier compiled
# from spin's pan.c with gcc:
#   safety    assertions and invalid end states (a process stuck where it may
#             not stop: a deadlock or a lost wake-up);
#   cycles    non-progress cycles (-DNP, pan -l): the models mark no progress
#             state, so any infinite run is reported; none means every run ends.
# Then every mutant (a MUTANT_ macro the model's source tests, switched on with
# spin -D) is built from the same source and searched for a safety violation;
# it must be found. Exit status 0 iff every model passed both searches and
# every mutant was rejected. No bitstate or lossy compression: every search is
# complete, and a search cut short by the depth limit or memory is a failure.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

out=build/verify
only=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        -h | --help) sed -n '3,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "verify: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
done

# name | source | spin -D options of this configuration | mutants that must be rejected
MODELS=(
    "queuedlock|models/queuedlock.pml||NO_LINK_WAIT NO_HALT_RECHECK NO_WAKER_FENCE WAIT_AFTER_LINK STALE_CLAIM"
    "csq|models/csq.pml||COMPLETE_WITH_ROUTINE NO_INSERT_RECHECK REMOVE_NO_CLAIM"
    "startio|models/startio.pml||STARTIO_KEEPS_ROUTINE STARTIO_CANCELLED_RETURNS EMPTY_QUEUE_STAYS_BUSY"
    "startio-deferred|models/startio.pml|-DDEFERRED -DNSUB=2|LEAVE_STALE_REQUEST LEAVE_READS_FIRST"
)

for tool in spin gcc; do
    command -v "$tool" >/dev/null || {
        echo "verify: $tool is not installed (scripts/deps.sh installs it)" >&2
        exit 1
    }
done

# pan's memory bound in MB: a search that needs more fails instead of swapping.
MEMLIM=${VERIFY_MEMLIM:-2048}
failures=0
passed=0
rejected=0

# build DIR SOURCE CFLAGS SPIN-ARGS...: spin -a and gcc into DIR/pan.
build() {
    local dir=$1 src=$2 cflags=$3
    shift 3
    rm -rf "$dir"
    mkdir -p "$dir"
    (cd "$dir" && spin "$@" -a "$OLDPWD/$src" >spin.log 2>&1) || {
        echo "verify: spin -a $* $src failed:" >&2
        cat "$dir/spin.log" >&2
        return 1
    }
    # pan.c is generated code; its warnings are not ours. ($cflags is a word list.)
    # shellcheck disable=SC2086
    gcc -w -DMEMLIM="$MEMLIM" $cflags -o "$dir/pan" "$dir/pan.c" 2>"$dir/gcc.log" || {
        echo "verify: gcc on $dir/pan.c failed:" >&2
        cat "$dir/gcc.log" >&2
        return 1
    }
}

# field LOG: the numbers of a pan run, for the summary line.
stats() {
    local log=$1 states depth secs
    states=$(sed -n 's/^ *\([0-9][0-9]*\) states, stored.*/\1/p' "$log" | head -1)
    depth=$(sed -n 's/.*depth reached \([0-9]*\).*/\1/p' "$log" | head -1)
    secs=$(sed -n 's/^pan: elapsed time \([0-9.e+-]*\) seconds.*/\1/p' "$log" | head -1)
    echo "${states:-?} states, depth ${depth:-?}, ${secs:-?} s"
}

errors_of() {
    sed -n 's/.*errors: \([0-9][0-9]*\).*/\1/p' "$1" | head -1
}

# A search that did not cover the whole state space.
incomplete() {
    grep -qE 'max search depth too small|Search not completed|out of memory|pan: reached -DMEMLIM' "$1"
}

# run_model NAME SRC MODE OPTIONS: one exhaustive search of the real model.
run_model() {
    local name=$1 src=$2 mode=$3 options=$4 dir cflags panargs log errs
    dir="$out/$name-$mode"
    case "$mode" in
        safety) cflags="-O2 -DSAFETY"; panargs="-m200000" ;;
        cycles) cflags="-O2 -DNP"; panargs="-l -m200000" ;;
    esac
    # shellcheck disable=SC2086
    if ! build "$dir" "$src" "$cflags" $options; then
        failures=$((failures + 1))
        return
    fi
    log="$dir/pan.log"
    # shellcheck disable=SC2086
    (cd "$dir" && ./pan $panargs) >"$log" 2>&1 || true
    errs=$(errors_of "$log")
    if [ "$errs" = 0 ] && ! incomplete "$log"; then
        echo "verify: PASS     $name ($mode): $(stats "$log")"
        passed=$((passed + 1))
    else
        echo "verify: FAIL     $name ($mode): errors ${errs:-?}; $(stats "$log"); see $log"
        grep -E '^pan:|error' "$log" | head -5 | sed 's/^/verify:   /'
        [ -f "$dir/$(basename "$src").trail" ] &&
            echo "verify:   replay: (cd $dir && spin $options -t -p $(pwd)/$src)"
        failures=$((failures + 1))
    fi
}

# run_mutant NAME SRC OPTIONS MUTANT: the model with -DMUTANT_<MUTANT> must fail its safety search.
run_mutant() {
    local name=$1 src=$2 options=$3 mutant=$4 dir log errs why
    dir="$out/$name-mutant-$mutant"
    # shellcheck disable=SC2086
    # -O0: a mutant's search is short, its compile is not.
    if ! build "$dir" "$src" "-O0 -DSAFETY" $options "-DMUTANT_$mutant"; then
        failures=$((failures + 1))
        return
    fi
    log="$dir/pan.log"
    (cd "$dir" && ./pan -m200000) >"$log" 2>&1 || true
    errs=$(errors_of "$log")
    if [ -n "$errs" ] && [ "$errs" -gt 0 ]; then
        why=$(grep -m1 -E '^pan:[0-9]+:' "$log" | sed 's/^pan:[0-9]*: *//; s/ (at depth.*//')
        echo "verify: REJECTED $name -DMUTANT_$mutant: $why ($(stats "$log"))"
        rejected=$((rejected + 1))
    else
        echo "verify: FAIL     $name -DMUTANT_$mutant: the broken model passed ($(stats "$log")); see $log"
        failures=$((failures + 1))
    fi
}

mkdir -p "$out"
start=$SECONDS
# Every MUTANT_ a source tests is listed above for one of its configurations, and every listed one is in it.
for src in $(printf '%s\n' "${MODELS[@]}" | cut -d'|' -f2 | sort -u); do
    found=$(grep -ho 'MUTANT_[A-Z_]*' "$src" | sed 's/^MUTANT_//' | sort -u | tr '\n' ' ')
    listed=$(printf '%s\n' "${MODELS[@]}" | awk -F'|' -v s="$src" '$2 == s { print $4 }' |
        tr ' ' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')
    if [ "$found" != "$listed" ]; then
        echo "verify: FAIL     $src: its mutants ($found) differ from scripts/verify.sh's list ($listed)"
        failures=$((failures + 1))
    fi
done

for entry in "${MODELS[@]}"; do
    IFS='|' read -r name src options mutants <<<"$entry"
    [ -z "$only" ] || [ "$only" = "$name" ] || continue
    run_model "$name" "$src" safety "$options"
    run_model "$name" "$src" cycles "$options"
    for mutant in $mutants; do
        run_mutant "$name" "$src" "$options" "$mutant"
    done
done

echo "verify: $passed searches passed, $rejected mutants rejected, $failures failures ($((SECONDS - start)) s)"
[ "$failures" -eq 0 ]
