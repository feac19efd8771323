#!/usr/bin/env bash
# test-faults.sh - boot each case of the Fault suite (tests/faults/) on its own
# and check the report it must end in.
#
# Usage: scripts/test-faults.sh [NAME...]     (no name: every case of CASES)
# Environment: FAULT_TIMEOUT host timeout per case in seconds (default 240).
#
# Each case is one row of CASES below, fields separated by '|':
#   name     a short name (the log is build/faults/<name>.log)
#   tests    the TESTS glob that selects the case, e.g. Fault:queued_lock_forged_release
#   smp      processors to boot
#   cmdline  more kernel command-line words (faults=1 is always passed), or empty
#   exit     the QEMU exit code expected: 37 bug check, 39 watchdog
#   nmi      an extended regex: once a serial line matches it, `nmi` is sent on
#            QEMU's monitor socket; '-' for none
#   checks   ';'-separated checks, each one of
#              re:REGEX         a serial line matches REGEX (grep -E)
#              no:REGEX         no serial line matches REGEX
#              bt:N:FUNCTION    the backtrace printed for processor N names
#                               FUNCTION; N may be 'last' (smp - 1) or 'all'
# A case passes when QEMU exits with the expected code within the timeout and
# every check holds. Add a case by adding a row. The last line is
# `test-faults: N passed, N failed`; the exit status is 0 iff none failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

CASES=(
    "pool-free-block|Fault:pool_overrun_into_a_free_block|2||37|-|re:\*\*\* STOP: 0x00000019 \(0x0000000000000020,;re:BAD_POOL_HEADER;bt:0:ExAllocatePoolWithTag;bt:0:FaultAllocateAfterOverrun;bt:0:KtTest_Fault_pool_overrun_into_a_free_block;no:handed out"
    "pool-live-neighbour|Fault:pool_overrun_into_a_live_neighbour|2||37|-|re:\*\*\* STOP: 0x000000C1 \(.*0x0000000000000024\) SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION;bt:0:ExFreePoolWithTag;bt:0:FaultFreeOverrunBlock"
    "queued-lock-forged|Fault:queued_lock_forged_release|2||37|-|re:\*\*\* STOP: 0x00000010 .*SPIN_LOCK_NOT_OWNED;bt:0:FaultReleaseForgedHandle;no:SPIN_LOCK_DEADLOCK"
    "external-nmi|Fault:external_nmi_while_every_processor_spins|4||37|all 4 processors spin with interrupts off|re:NMI from outside;re:\*\*\* STOP: 0x00000080 .*NMI_HARDWARE_FAILURE;bt:all:FaultSpinWithInterruptsOff"
    "watchdog|Fault:watchdog_names_the_stuck_processor|2||39|-|re:# watchdog: Fault:watchdog_names_the_stuck_processor;bt:last:FaultSpinWithInterruptsOff;bt:0:FaultWaitForever"
    "page-fault|Fault:page_fault_names_the_faulting_function|2||37|-|re:\*\*\* EXCEPTION 14: #PF page fault;re:\*\*\* STOP: 0x00000050 \(0x0000000000000000, 0x0000000000000001,;bt:0:FaultWriteThroughNull;bt:0:KtTest_Fault_page_fault_names_the_faulting_function"
    "ipi-timeout|Fault:ipi_timeout_names_the_culprit|2||37|-|re:processor 1 has not taken the IPI;re:\*\*\* STOP: 0x5D000003 \(.*0x0000000000000001\) SPINDLE_IPI_TIMEOUT;bt:last:FaultSpinWithInterruptsOff;bt:0:FaultBroadcast"
    "generic-call-timeout|Fault:generic_call_timeout_names_the_wait|2||37|-|re:\*\*\* STOP: 0x5D000016 \(0x[0-9A-F]+, 0x0000000000000001, 0x0000000000000002, 0x0000000000000003\) SPINDLE_DPC_CALL_TIMEOUT;bt:last:FaultSpinWithInterruptsOff;bt:0:FaultGenericCall"
    "stack-overflow-thread|Fault:stack_overflow_in_test_thread|2||37|-|re:\*\*\* STOP: 0x0000007F \(0x0000000000000008,.*UNEXPECTED_KERNEL_MODE_TRAP;re:#DF double fault.* on processor 0 ;bt:0:FtRecurse"
    "stack-overflow-dpc|Fault:stack_overflow_in_dpc_on_another_processor|4||37|-|re:\*\*\* STOP: 0x0000007F \(0x0000000000000008,.*UNEXPECTED_KERNEL_MODE_TRAP;re:#DF double fault.* on processor 1 ;bt:1:FtRecurse"
    "special-pool-overrun|Fault:special_pool_overrun|2|pool=special|37|-|re:\*\*\* STOP: 0x000000D6 .*DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION;bt:0:FtWriteBytes"
)

timeout_s=${FAULT_TIMEOUT:-240}
out=build/faults
mkdir -p "$out"

# backtrace_of LOG N: the frames printed for processor N, from any of the report's headers:
# "*** on processor N at IRQL" (the processor that stops the system), "processor N was at:"
# (a frozen processor), "# backtrace of processor N:" (the watchdog's reporter).
backtrace_of() {
    tr -d '\r' <"$1" | awk -v n="$2" '
        $0 ~ "^\\*\\*\\* on processor " n " at IRQL" || $0 ~ "^(# |  )?processor " n " was at:$" ||
            $0 ~ "^# backtrace of processor " n ":$" { on = 1; next }
        on && /^Backtrace:$/ { next }
        on && /^  #[0-9]/ { print; next }
        { on = 0 }'
}

# check LOG SMP CHECK: one check of a row; prints why it failed.
check() {
    local log=$1 smp=$2 item=$3 kind rest cpu fn list c
    kind=${item%%:*}
    rest=${item#*:}
    case "$kind" in
        re)
            tr -d '\r' <"$log" | grep -Eq -- "$rest" || { echo "missing a line matching /$rest/"; return 1; }
            ;;
        no)
            if tr -d '\r' <"$log" | grep -Eq -- "$rest"; then
                echo "unexpected line matching /$rest/"
                return 1
            fi
            ;;
        bt)
            cpu=${rest%%:*}
            fn=${rest#*:}
            case "$cpu" in
                last) list=$((smp - 1)) ;;
                all) list=$(seq 0 $((smp - 1))) ;;
                *) list=$cpu ;;
            esac
            for c in $list; do
                backtrace_of "$log" "$c" | grep -q " $fn+" ||
                    { echo "the backtrace of processor $c does not name $fn"; return 1; }
            done
            ;;
        *)
            echo "bad check '$item' in the CASES table"
            return 1
            ;;
    esac
}

# run_case ROW: boots the case; 0 iff it passes.
run_case() {
    local name tests smp cmdline want nmi checks log sock console pid status=0 got ok=1 why item
    IFS='|' read -r name tests smp cmdline want nmi checks <<<"$1"
    log="$out/$name.log"
    sock="$out/$name.sock"
    console="$out/$name.console"
    echo "test-faults: ---- $name ($tests, SMP=$smp, expect exit $want)"
    rm -f "$log" "$console"
    make --no-print-directory test DBG=1 TESTS="$tests" SMP="$smp" LOG="$log" MONITOR="$sock" \
        TIMEOUT="$timeout_s" CMDLINE="faults=1 $cmdline" >"$console" 2>&1 &
    pid=$!
    if [ "$nmi" != "-" ]; then
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            if [ -f "$log" ] && tr -d '\r' <"$log" | grep -Eq -- "$nmi"; then
                sleep 1
                echo "test-faults: $name: sending nmi on $sock"
                bash "$here/qemu-monitor.sh" "$sock" nmi || true
                break
            fi
            sleep 1
            waited=$((waited + 1))
        done
    fi
    wait "$pid" || status=$?
    got=$(sed -n 's/^run-qemu: .*(qemu exit \([0-9]*\))$/\1/p' "$console" | tail -n 1)
    if [ "$got" != "$want" ]; then
        tail -n 5 "$console" | sed "s/^/test-faults: $name: /"
        echo "test-faults: $name: FAIL: qemu exit '${got:-none}' (make exit $status), expected $want"
        return 1
    fi
    IFS=';' read -r -a items <<<"$checks"
    for item in "${items[@]}"; do
        if ! why=$(check "$log" "$smp" "$item"); then
            echo "test-faults: $name: FAIL: $why"
            ok=0
        fi
    done
    if [ "$ok" -eq 1 ]; then
        grep -a -m1 '\*\*\* STOP\|# watchdog:' "$log" | tr -d '\r' | sed "s/^/test-faults: $name: /" || true
        echo "test-faults: $name: PASS"
        return 0
    fi
    echo "test-faults: $name: report in $log"
    return 1
}

passed=0
failed=0
failures=()
make --no-print-directory deps >/dev/null
for row in "${CASES[@]}"; do
    name=${row%%|*}
    if [ $# -gt 0 ]; then
        wanted=0
        for arg in "$@"; do [ "$arg" = "$name" ] && wanted=1; done
        [ "$wanted" -eq 1 ] || continue
    fi
    if run_case "$row"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failures+=("$name")
    fi
done
[ "$failed" -eq 0 ] || echo "test-faults: failed: ${failures[*]}"
echo "test-faults: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
