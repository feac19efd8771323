#!/usr/bin/env bash
# run-qemu.sh - boot Spindle in QEMU and turn its exit into a verdict.
#
# Usage: scripts/run-qemu.sh --image PATH [options] [-- extra QEMU arguments]
#
#   --image PATH        bios, uefi: the GRUB ISO; efi: a directory laid out as
#                       an EFI system partition (EFI/BOOT/BOOTX64.EFI, ...)
#                       or a FAT disk image
#   --mode MODE         test (default): serial to the terminal and the log,
#                         stdin unused, host timeout
#                       run: the same, interactive, no timeout unless given
#                       debug: as run, plus QEMU's gdb stub, CPUs halted
#                         until gdb continues (-S)
#   --firmware FW       bios (default, SeaBIOS) | uefi (OVMF) | efi (OVMF,
#                       booting the --image directory/FAT image directly)
#   --smp N             processors (default 8)
#   --mem MB            memory in MiB (default 256)
#   --accel A           tcg (default; multi-threaded TCG) | kvm (must work:
#                       /dev/kvm usable and kvm_intel or kvm_amd loaded)
#   --timeout S         host timeout in seconds, 0 = none
#                       (default 600 for test, none for run and debug)
#   --log PATH          serial log (default build/serial.log); UEFI's
#                       writable OVMF variables copy goes beside it for
#                       the run (OVMF_VARS.<random>.fd, removed at exit)
#   --gdb-port N        debug mode: gdb stub port (default 1234)
#   --results PREFIX    after the run, write PREFIX.ktap (nested KTAP, as
#                       Linux's KUnit prints it) and PREFIX.xml (JUnit) from
#                       the serial log (scripts/ktap-results.py)
#   --monitor PATH      QEMU's human monitor on a unix socket at PATH (e.g.
#                       build/serial.sock; `make run` and `make test` give
#                       one beside the log). Sending it `nmi` raises an NMI
#                       on every processor's LINT1: a hung guest stops with
#                       STOP 0x80 NMI_HARDWARE_FAILURE and every processor's
#                       backtrace. From another terminal: `make nmi` (same
#                       LOG), or scripts/qemu-monitor.sh PATH nmi
#   --dry-run           print the QEMU command and exit
#   -h, --help          this text
# Environment: QEMU overrides the emulator binary (qemu-system-x86_64).
#
# The kernel ends a run by writing to isa-debug-exit (port 0xf4); QEMU then
# exits with (value << 1) | 1. This script prints one final line
#   run-qemu: <meaning> (qemu exit N)
# and exits with one status per outcome:
#     0  all tests passed: QEMU exited 33 AND the serial log holds the summary
#        line `N passed, 0 failed[, N skipped]` (scripts/ktap-summary.sh)
#     1  a test failed (QEMU exit 35)
#     2  usage error, or nothing to boot (bad option, missing image or QEMU)
#     3  bug check (QEMU exit 37)
#     4  the test watchdog fired (QEMU exit 39)
#     5  QEMU ended without the kernel's exit code (triple fault, power-off,
#        QEMU error) or with a value the kernel never writes
#     6  QEMU exit 33 but the log has no clean summary line (a lying run)
#     7  nothing to run: the image has no workload (QEMU exit 41, NOTESTS=1)
#   124  the host timeout expired
#   130  interrupted (Ctrl-C)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
qemu=${QEMU:-qemu-system-x86_64}

mode="test"
image=""
firmware=bios
smp=8
mem=256
accel=tcg
timeout_s=""
log="$root/build/serial.log"
gdb_port=1234
results=""
monitor=""
dry_run=0
extra=()

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "run-qemu: $*" >&2
    exit 2
}

need_arg() {
    if [ $# -lt 2 ] || [ -z "$2" ]; then
        die "option $1 needs a value (try --help)"
    fi
}

is_uint() {
    [[ $1 =~ ^[0-9]+$ ]]
}

while [ $# -gt 0 ]; do
    case "$1" in
        --mode) need_arg "$@"; mode=$2; shift 2 ;;
        --image) need_arg "$@"; image=$2; shift 2 ;;
        --firmware) need_arg "$@"; firmware=$2; shift 2 ;;
        --smp) need_arg "$@"; smp=$2; shift 2 ;;
        --mem) need_arg "$@"; mem=$2; shift 2 ;;
        --accel) need_arg "$@"; accel=$2; shift 2 ;;
        --timeout) need_arg "$@"; timeout_s=$2; shift 2 ;;
        --log) need_arg "$@"; log=$2; shift 2 ;;
        --gdb-port) need_arg "$@"; gdb_port=$2; shift 2 ;;
        --results) need_arg "$@"; results=$2; shift 2 ;;
        --monitor) need_arg "$@"; monitor=$2; shift 2 ;;
        --dry-run) dry_run=1; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done

# ---- validate --------------------------------------------------------------

case "$mode" in
    test | run | debug) ;;
    *) die "--mode must be run, test or debug, not '$mode'" ;;
esac
case "$firmware" in
    bios | uefi | efi) ;;
    *) die "--firmware must be bios, uefi or efi, not '$firmware'" ;;
esac
if ! { is_uint "$smp" && [ "$smp" -ge 1 ] && [ "$smp" -le 255 ]; }; then
    die "--smp must be a number from 1 to 255, not '$smp'"
fi
if ! { is_uint "$mem" && [ "$mem" -ge 32 ]; }; then
    die "--mem must be a number of MiB >= 32, not '$mem'"
fi
is_uint "$gdb_port" || die "--gdb-port must be a number, not '$gdb_port'"
if [ -z "$timeout_s" ]; then
    if [ "$mode" = test ]; then timeout_s=600; else timeout_s=0; fi
fi
is_uint "$timeout_s" || die "--timeout must be a number of seconds (0 = none), not '$timeout_s'"

[ -n "$image" ] || die "no --image given (try --help)"
case "$firmware" in
    bios | uefi)
        [ -f "$image" ] || die "image '$image' not found: build it first (make iso)"
        ;;
    efi)
        [ -d "$image" ] || [ -f "$image" ] ||
            die "EFI image '$image' not found (a directory or a FAT image): build it first"
        ;;
esac

command -v "$qemu" >/dev/null 2>&1 ||
    die "$qemu not found: run scripts/deps.sh (Debian package qemu-system-x86)"

case "$accel" in
    tcg) accel_arg="tcg,thread=multi" ;; # MTTCG: one host thread per vCPU
    kvm)
        [ -e /dev/kvm ] || die "--accel kvm: /dev/kvm does not exist (no KVM on this host); use --accel tcg"
        if ! { [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
            die "--accel kvm: /dev/kvm is not readable and writable by $(id -un) (join group kvm?); use --accel tcg"
        fi
        [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ] ||
            die "--accel kvm: neither kvm_intel nor kvm_amd is loaded (modprobe one, or use --accel tcg)"
        accel_arg="kvm"
        ;;
    *) die "--accel must be tcg or kvm, not '$accel'" ;;
esac

log_dir=$(dirname "$log")

# ---- the QEMU command ------------------------------------------------------

cmd=(
    "$qemu"
    -machine "q35"
    -accel "$accel_arg"
    -cpu max
    -smp "$smp"
    -m "$mem"
    -no-reboot
    -display none
    # Serial to our stdout and, through the chardev's own log, to the file:
    # no pipe, so QEMU's exit status is ours. signal=on: Ctrl-C stops QEMU.
    -chardev "stdio,id=ser0,logfile=$log,signal=on"
    -serial chardev:ser0
    -device "isa-debug-exit,iobase=0xf4,iosize=0x04"
)

# OVMF: Debian 12's ovmf installs OVMF_CODE_4M.fd / OVMF_VARS_4M.fd (and the
# 2 MiB OVMF_CODE.fd / OVMF_VARS.fd); older releases only the latter. Code
# and variables must come from the same build.
ovmf_args() {
    local dir=${OVMF_DIR:-/usr/share/OVMF} code="" vars="" suffix
    for suffix in _4M ""; do
        if [ -f "$dir/OVMF_CODE$suffix.fd" ] && [ -f "$dir/OVMF_VARS$suffix.fd" ]; then
            code="$dir/OVMF_CODE$suffix.fd"
            vars="$dir/OVMF_VARS$suffix.fd"
            break
        fi
    done
    [ -n "$code" ] || die "OVMF not found in $dir (OVMF_CODE_4M.fd + OVMF_VARS_4M.fd): run scripts/deps.sh (package ovmf)"
    # A fresh writable copy per run (the firmware writes its boot options into it), named
    # uniquely so that runs sharing a log folder do not share it; removed when we exit.
    local vars_copy="$log_dir/OVMF_VARS.XXXXXX.fd"
    if [ "$dry_run" -eq 0 ]; then
        mkdir -p "$log_dir"
        vars_copy=$(mktemp "$log_dir/OVMF_VARS.XXXXXX.fd")
        ovmf_vars_copy=$vars_copy
        trap 'rm -f "$ovmf_vars_copy"' EXIT
        cp -f "$vars" "$vars_copy"
    fi
    cmd+=(
        -drive "if=pflash,format=raw,unit=0,readonly=on,file=$code"
        -drive "if=pflash,format=raw,unit=1,file=$vars_copy"
    )
}

case "$firmware" in
    bios)
        cmd+=(-cdrom "$image" -boot d)
        ;;
    uefi)
        ovmf_args
        cmd+=(-cdrom "$image" -boot d)
        ;;
    efi)
        # The ESP as a SATA disk; OVMF boots its \EFI\BOOT\BOOTX64.EFI (the removable-media
        # default). bootindex=0 puts it first in QEMU's boot order, which OVMF follows,
        # so the empty DVD drive of q35 is not tried first.
        ovmf_args
        if [ -d "$image" ]; then
            cmd+=(-drive "if=none,id=esp,file=fat:rw:$image,format=raw")
        else
            cmd+=(-drive "if=none,id=esp,file=$image,format=raw")
        fi
        cmd+=(-device "ide-hd,drive=esp,bootindex=0")
        ;;
esac

if [ "$mode" = debug ]; then
    cmd+=(-gdb "tcp::$gdb_port" -S)
fi
if [ -n "$monitor" ]; then
    # server,nowait: QEMU listens and runs on; a client (make nmi) may connect at any time.
    cmd+=(-monitor "unix:$monitor,server,nowait")
fi
cmd+=(${extra[@]+"${extra[@]}"})

if [ "$timeout_s" -gt 0 ]; then
    # --foreground: QEMU stays in the terminal's process group (reads the
    # tty in run mode, gets Ctrl-C); -k: SIGKILL 5 s after SIGTERM.
    cmd=(timeout --foreground -k 5 "$timeout_s" "${cmd[@]}")
fi

if [ "$dry_run" -eq 1 ]; then
    for word in "${cmd[@]}"; do
        if [[ $word =~ ^[A-Za-z0-9_./:,=+@%-]+$ ]]; then
            printf "%s " "$word"
        else
            printf "%q " "$word"
        fi
    done
    echo
    exit 0
fi

# ---- run -------------------------------------------------------------------

to_text="no timeout"
[ "$timeout_s" -eq 0 ] || to_text="timeout ${timeout_s} s"
echo "run-qemu: $mode, $firmware, $smp CPUs, $mem MiB, $accel, $to_text, serial log $log"
if [ "$mode" = debug ]; then
    echo "run-qemu: QEMU is halted on its gdb stub at tcp::$gdb_port."
    echo "run-qemu: attach with 'make gdb' in another terminal"
    echo "run-qemu:   (or: gdb KERNEL.elf -ex 'set architecture i386:x86-64' -ex 'target remote :$gdb_port')"
fi

mkdir -p "$log_dir"
rm -f "$log"

interrupted=0
trap 'interrupted=1' INT
tty_state=""
if [ "$mode" != test ] && [ -t 0 ]; then
    tty_state=$(stty -g 2>/dev/null || true)
fi

status=0
if [ "$mode" = test ]; then
    # Non-interactive: QEMU never touches the terminal's modes.
    "${cmd[@]}" </dev/null || status=$?
else
    "${cmd[@]}" || status=$?
fi

# QEMU restores the terminal itself, except when it was SIGKILLed.
if [ -n "$tty_state" ]; then
    stty "$tty_state" 2>/dev/null || true
fi
trap - INT

# ---- verdict ---------------------------------------------------------------

meaning_of() {
    case "$1" in
        33) echo "all tests passed" ;;
        35) echo "a test failed" ;;
        37) echo "bug check" ;;
        39) echo "watchdog fired" ;;
        41) echo "nothing to run: the image has no workload" ;;
        0) echo "QEMU exited without the kernel's exit code (triple fault or power-off)" ;;
        1) echo "QEMU failed (error, or the kernel wrote exit value 0)" ;;
        *)
            if [ "$1" -lt 128 ] && [ $(($1 % 2)) -eq 1 ]; then
                printf 'unknown kernel exit value 0x%02x' $((($1 - 1) / 2))
            else
                echo "QEMU ended abnormally"
            fi
            ;;
    esac
}

# Finish a last line the kernel left open, so the verdict starts a line.
if [ -s "$log" ] && [ -n "$(tail -c 1 "$log")" ]; then
    echo
fi

# finish STATUS TEXT: the results files, the last line, the exit status.
finish() {
    if [ -n "$results" ] && [ -f "$log" ]; then
        python3 "$here/ktap-results.py" --log "$log" --ktap "$results.ktap" --xml "$results.xml" \
            --verdict "$2" || echo "run-qemu: could not write $results.ktap / $results.xml"
    fi
    echo "run-qemu: $2"
    exit "$1"
}

if [ "$timeout_s" -gt 0 ] && { [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; }; then
    finish 124 "TIMEOUT after $timeout_s s (no exit from the kernel)"
fi
if [ "$interrupted" -eq 1 ]; then
    finish 130 "interrupted (qemu exit $status)"
fi

if [ "$status" -eq 33 ]; then
    if "$here/ktap-summary.sh" -q "$log"; then
        finish 0 "all tests passed (qemu exit $status)"
    fi
    "$here/ktap-summary.sh" "$log" | sed 's/^/run-qemu: /' || true
    finish 6 "FAILED: the kernel reported success but the log has no clean summary line (qemu exit $status)"
fi

if [ -f "$log" ]; then
    "$here/ktap-summary.sh" "$log" | sed 's/^/run-qemu: /' || true
fi
case "$status" in
    35) code=1 ;;
    37) code=3 ;;
    39) code=4 ;;
    41) code=7 ;;
    *) code=5 ;;
esac
finish "$code" "$(meaning_of "$status") (qemu exit $status)"
