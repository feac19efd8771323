#!/usr/bin/env bash
# test-gdb.sh - the scripted gdb session behind `make test-gdb`.
#
# Usage: scripts/test-gdb.sh --kernel ELF --image ISO [options]
#
#   --kernel ELF     the kernel with debug information (build/<flavour>/kernel.elf)
#   --image ISO      the bootable image made from it, whose command line selects
#                    the GdbTarget tests (make test-gdb builds it with
#                    TESTS='GdbTarget:*')
#   --smp N          processors (default 8)
#   --dbg 0|1        the flavour of ELF (default 1): a checked build's lock word
#                    names its owner
#   --firmware FW    bios (default) | uefi, passed to run-qemu.sh
#   --timeout S      bound on the whole run (default 420); each resumption of
#                    the target inside gdb is bounded by a third of it
#   --dir DIR        logs: serial.log, qemu.out, gdb.log (default build/test-gdb)
#   --port N         the gdb stub's TCP port (default: a free one)
#   -h, --help       this text
#
# Starts QEMU halted on its gdb stub (scripts/run-qemu.sh --mode debug) on a
# free TCP port, runs gdb in batch mode with scripts/gdb/spindle.gdb (what
# `make gdb` runs) and scripts/gdb/test_session.py (the checks), detaches, and
# waits for the kernel to finish its run. Prints one PASS/FAIL line per check
# and exits 0 only when every expected check passed and QEMU exited 33 (all
# tests passed).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

kernel=""
image=""
smp=8
dbg=1
firmware=bios
timeout_s=420
dir="$root/build/test-gdb"
port=""

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "test-gdb: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --kernel) kernel=${2:?}; shift 2 ;;
        --image) image=${2:?}; shift 2 ;;
        --smp) smp=${2:?}; shift 2 ;;
        --dbg) dbg=${2:?}; shift 2 ;;
        --firmware) firmware=${2:?}; shift 2 ;;
        --timeout) timeout_s=${2:?}; shift 2 ;;
        --dir) dir=${2:?}; shift 2 ;;
        --port) port=${2:?}; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done

[ -f "$kernel" ] || die "kernel '$kernel' not found (try: make test-gdb)"
[ -f "$image" ] || die "image '$image' not found (try: make test-gdb)"
if ! { [[ $smp =~ ^[0-9]+$ ]] && [ "$smp" -ge 1 ]; }; then
    die "--smp must be a positive number"
fi
if ! { [[ $timeout_s =~ ^[0-9]+$ ]] && [ "$timeout_s" -ge 60 ]; }; then
    die "--timeout must be >= 60 seconds"
fi
case "$dbg" in 0 | 1) ;; *) die "--dbg must be 0 or 1" ;; esac
command -v gdb >/dev/null || die "gdb not found: run scripts/deps.sh (Debian package gdb)"

# A port nobody listens on now. QEMU binds it a moment later; gdb retries the
# connection until it is up (set tcp connect-timeout below).
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 20000))
    fi
}

mkdir -p "$dir"
rm -f "$dir/serial.log" "$dir/qemu.out" "$dir/gdb.log"
[ -n "$port" ] || port=$(free_port)
step_timeout=$((timeout_s / 3))
gdb_timeout=$((timeout_s - 30))

failed=0
pass() { echo "PASS: $1"; }
fail() { echo "FAIL: $1"; failed=1; }

# QEMU in its own session, so that on any exit its whole process group (the
# runner, timeout, QEMU) can be ended by its id.
setsid bash "$here/run-qemu.sh" --image "$image" --firmware "$firmware" --smp "$smp" \
    --mode debug --gdb-port "$port" --timeout "$timeout_s" --log "$dir/serial.log" \
    </dev/null >"$dir/qemu.out" 2>&1 &
qemu_pid=$!
cleanup() {
    if kill -0 "$qemu_pid" 2>/dev/null; then
        kill -TERM -- "-$qemu_pid" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$qemu_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

echo "test-gdb: QEMU ($smp CPUs, $firmware) halted on its gdb stub at :$port; logs in $dir"
gdb_status=0
timeout -k 5 "$gdb_timeout" gdb -q -batch -nx \
    -iex "set tcp connect-timeout 30" \
    -iex "add-auto-load-safe-path $(cd "$(dirname "$kernel")" && pwd)" \
    -ex "set \$spindle_gdb_port = $port" \
    -ex "set \$spindle_expected_cpus = $smp" \
    -ex "set \$spindle_checked = $dbg" \
    -ex "set \$spindle_step_timeout = $step_timeout" \
    -x "$root/scripts/gdb/spindle.gdb" \
    -x "$root/scripts/gdb/test_session.py" \
    "$kernel" </dev/null >"$dir/gdb.log" 2>&1 || gdb_status=$?
# The checks' verdict lines, then the rest of the log when something failed.
grep -E '^(PASS|FAIL): ' "$dir/gdb.log" || true

# Every check the session must report as passed.
expected=(auto-load boot-64bit spindle-lock-free step next processors-online dpc-last-cpu
    spindle-cpus info-threads spindle-dpcs stepi-queued spindle-lock-queued spindle-lock-held
    spindle-locks bt-through-trap spindle-prcb spindle-devq spindle-irp spindle-list spindle-pte
    spindle-timers spindle-pool spindle-devobj spindle-drvobj spindle-stop spindle-log
    bt-through-exception spindle-stop-trap
    spindle-lockorder breakpoints detach target-gone)
if [ "$smp" -ge 2 ]; then
    expected+=(spindle-lock-waiter spindle-locks-waiter)
fi
for name in "${expected[@]}"; do
    grep -Eq "^(PASS|FAIL): $name: " "$dir/gdb.log" || fail "$name: the session did not get to it"
done
if grep -q '^FAIL: ' "$dir/gdb.log"; then
    failed=1
fi
if [ "$gdb_status" -eq 124 ] || [ "$gdb_status" -eq 137 ]; then
    fail "gdb: timed out after $gdb_timeout s"
elif [ "$gdb_status" -ne 0 ]; then
    fail "gdb: exit status $gdb_status"
fi

# After the detach the kernel finishes its run on its own.
# After a failure the kernel may still be stopped on the stub: give it 30 s, no more.
if [ "$failed" -ne 0 ]; then
    for _ in $(seq 30); do
        kill -0 "$qemu_pid" 2>/dev/null || break
        sleep 1
    done
    cleanup
fi
qemu_status=0
wait "$qemu_pid" || qemu_status=$?
verdict=$(grep '^run-qemu: ' "$dir/qemu.out" | tail -n 1 || true)
if [ "$qemu_status" -eq 0 ]; then
    pass "kernel-exit: the kernel finished its run (${verdict#run-qemu: })"
else
    fail "kernel-exit: ${verdict#run-qemu: } (runner status $qemu_status)"
fi
if grep -q '^not ok' "$dir/serial.log" 2>/dev/null; then
    fail "serial: $(grep '^not ok' "$dir/serial.log" | tr '\n' ';')"
fi

if [ "$failed" -ne 0 ]; then
    echo "test-gdb: ---- gdb log ($dir/gdb.log), last 60 lines"
    tail -n 60 "$dir/gdb.log"
    echo "test-gdb: ---- serial log ($dir/serial.log), last 20 lines"
    tail -n 20 "$dir/serial.log" 2>/dev/null || true
    echo "test-gdb: FAILED"
    exit 1
fi
echo "test-gdb: all checks passed"
