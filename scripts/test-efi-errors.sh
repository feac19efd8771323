#!/usr/bin/env bash
# test-efi-errors.sh - the Spindle EFI loader's error and retry paths, booted under OVMF.
#
# Usage: scripts/test-efi-errors.sh --loader BOOTX64.EFI --kernel kernel.elf [options]
#   --loader PATH    the loader (make efi: build/<flavour>/efi/BOOTX64.EFI)
#   --kernel PATH    a good kernel ELF (make kernel); corrupted copies are made from it
#   --work DIR       where the per-case ESPs and logs go (default build/efi-errors)
#   --accel A        tcg (default) | kvm
#   --timeout S      seconds one case may take (default 180; OVMF under TCG is slow)
#   --case NAME      run only this case (repeatable); default all:
#       missing      no \spindle\kernel.elf
#       truncated    kernel.elf cut to 3000 bytes (segments beyond the end of the file)
#       bad-magic    kernel.elf with its ELF magic overwritten
#       occupied     kernel.elf whose first PT_LOAD segment asks for 0xfec00000 (the I/O
#                    APIC, never RAM): the allocation at p_paddr fails, the segments
#                    already loaded are freed
#       stale-key    a good kernel, but the first ExitBootServices gets a stale map key
#                    (\spindle\test-stale-map-key): the loader must retry and boot it
#   -h, --help       this text
#
# An error case passes when the serial log shows the loader's error line, then the
# firmware's report that the boot option failed with "Load Error" (the loader returned
# EFI_LOAD_ERROR instead of jumping), no kernel banner, and QEMU powered off by itself
# (the ESP's startup.nsh, run by the firmware's shell once the loader has returned) well
# before the timeout. The stale-key case passes when ExitBootServices succeeded on the
# second attempt and the kernel ran a small suite to a pass.
# Prints one PASS/FAIL line per case and a verdict; exits 0 iff every case passed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
objcopy=${OBJCOPY:-objcopy}

loader=""
kernel=""
work="$root/build/efi-errors"
accel=tcg
timeout_s=180
cases=()
all_cases=(missing truncated bad-magic occupied stale-key)

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

die() {
    echo "test-efi-errors: $*" >&2
    exit 2
}

while [ $# -gt 0 ]; do
    case "$1" in
        --loader) [ $# -ge 2 ] || die "--loader needs a value"; loader=$2; shift 2 ;;
        --kernel) [ $# -ge 2 ] || die "--kernel needs a value"; kernel=$2; shift 2 ;;
        --work) [ $# -ge 2 ] || die "--work needs a value"; work=$2; shift 2 ;;
        --accel) [ $# -ge 2 ] || die "--accel needs a value"; accel=$2; shift 2 ;;
        --timeout) [ $# -ge 2 ] || die "--timeout needs a value"; timeout_s=$2; shift 2 ;;
        --case) [ $# -ge 2 ] || die "--case needs a value"; cases+=("$2"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done

[ -f "$loader" ] || die "loader '$loader' not found (make efi)"
[ -f "$kernel" ] || die "kernel '$kernel' not found (make kernel)"
if ! [[ $timeout_s =~ ^[0-9]+$ ]] || [ "$timeout_s" -eq 0 ]; then
    die "--timeout must be a positive number of seconds"
fi
[ "${#cases[@]}" -gt 0 ] || cases=("${all_cases[@]}")
for name in "${cases[@]}"; do
    [[ " ${all_cases[*]} " == *" $name "* ]] || die "unknown case '$name' (${all_cases[*]})"
done

# make_esp DIR: the loader, the shell script that powers off, an empty spindle folder.
make_esp() {
    rm -rf "$1"
    mkdir -p "$1/EFI/BOOT" "$1/spindle"
    cp "$loader" "$1/EFI/BOOT/BOOTX64.EFI"
    cp "$root/boot/efi/startup.nsh" "$1/startup.nsh"
}

# le_read FILE OFFSET BYTES: an unsigned little-endian number from a file.
le_read() {
    local value=0 i
    local -a bytes
    read -r -a bytes <<<"$(od -A n -t u1 -j "$2" -N "$3" "$1")"
    for ((i = $3 - 1; i >= 0; i--)); do
        value=$((value * 256 + bytes[i]))
    done
    echo "$value"
}

# le_write FILE OFFSET VALUE: an 8-byte little-endian number into a file, in place.
le_write() {
    local escaped="" i
    for ((i = 0; i < 8; i++)); do
        escaped+=$(printf '\\x%02x' $((($3 >> (8 * i)) & 0xff)))
    done
    printf '%b' "$escaped" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# move_first_load FILE ADDRESS: sets p_paddr of the first PT_LOAD program header.
move_first_load() {
    local phoff phnum i header
    phoff=$(le_read "$1" 32 8)
    phnum=$(le_read "$1" 56 2)
    for ((i = 0; i < phnum; i++)); do
        header=$((phoff + 56 * i))
        if [ "$(le_read "$1" "$header" 4)" -eq 1 ]; then
            le_write "$1" $((header + 24)) "$2"
            return 0
        fi
    done
    die "no PT_LOAD segment in $1"
}

# The serial log as plain lines: no terminal escapes, no CR, no backspaces.
plain_log() {
    sed -e 's/\x1b\[[0-9;=?]*[A-Za-z]//g' -e 's/\r//g' -e 's/\x08//g' "$1"
}

# line_of FILE FIXED-STRING: the first line number holding it, or nothing.
line_of() {
    grep -n -F -m 1 -- "$2" "$1" | cut -d: -f1 || true
}

failures=0
reason=""

fail() {
    reason=${reason:+$reason; }$1
}

# check_error_case NAME EXPECTED-ERROR-TEXT
check_error_case() {
    local dir=$1 expected=$2 log=$1/serial.plain err_line bds_line
    err_line=$(line_of "$log" "Spindle EFI loader: error: $expected")
    if [ -z "$err_line" ]; then
        fail "no loader error line 'Spindle EFI loader: error: $expected'"
        return
    fi
    bds_line=$(grep -n -E -m 1 'BdsDxe: failed to start .*: Load Error' "$log" |
        cut -d: -f1 || true)
    if [ -z "$bds_line" ] || [ "$bds_line" -le "$err_line" ]; then
        fail "the firmware did not report 'Load Error' after the loader's error (did it return?)"
    fi
    if grep -q -F 'Spindle: booted by' "$log"; then
        fail "the kernel was entered"
    fi
    if ! grep -q -F '(qemu exit 0)' "$dir/run.out"; then
        fail "QEMU did not power off by itself ($(tail -n 1 "$dir/run.out"))"
    fi
}

check_stale_key_case() {
    local dir=$1 log=$1/serial.plain
    grep -q -F 'Spindle EFI loader: boot services exited on attempt 2;' "$log" ||
        fail "no 'boot services exited on attempt 2' (the retry after a stale map key)"
    grep -q -F 'Spindle: booted by Spindle EFI loader (UEFI)' "$log" ||
        fail "the kernel did not report the EFI loader"
    grep -q -F 'run-qemu: all tests passed' "$dir/run.out" ||
        fail "the suite did not pass ($(tail -n 1 "$dir/run.out"))"
}

mkdir -p "$work"
for name in "${cases[@]}"; do
    dir=$work/$name
    esp=$dir/esp
    make_esp "$esp"
    smp=1
    case "$name" in
        missing) ;;
        truncated)
            "$objcopy" --strip-debug "$kernel" "$dir/kernel.full"
            head -c 3000 "$dir/kernel.full" >"$esp/spindle/kernel.elf"
            ;;
        bad-magic)
            "$objcopy" --strip-debug "$kernel" "$esp/spindle/kernel.elf"
            printf 'XELF' | dd of="$esp/spindle/kernel.elf" bs=1 seek=0 conv=notrunc status=none
            ;;
        occupied)
            "$objcopy" --strip-debug "$kernel" "$esp/spindle/kernel.elf"
            move_first_load "$esp/spindle/kernel.elf" $((0xfec00000))
            ;;
        stale-key)
            "$objcopy" --strip-debug "$kernel" "$esp/spindle/kernel.elf"
            : >"$esp/spindle/test-stale-map-key"
            ;;
    esac
    printf '%s\n' "tests=LibString* seed=1 repeat=1 verbose=0 smp=$smp" >"$esp/spindle/cmdline.txt"

    start=$SECONDS
    status=0
    bash "$here/run-qemu.sh" --image "$esp" --firmware efi --smp "$smp" --accel "$accel" \
        --mode test --timeout "$timeout_s" --log "$dir/serial.log" >"$dir/run.out" 2>&1 ||
        status=$?
    elapsed=$((SECONDS - start))
    plain_log "$dir/serial.log" >"$dir/serial.plain" 2>/dev/null || : >"$dir/serial.plain"

    reason=""
    if [ "$status" -eq 124 ]; then
        fail "timed out after $timeout_s s (hung)"
    fi
    case "$name" in
        missing) check_error_case "$dir" '\spindle\kernel.elf: not found on the boot volume' ;;
        truncated)
            expected='\spindle\kernel.elf: malformed kernel (3000 bytes): '
            expected+='a PT_LOAD segment lies beyond the end of the file (truncated?)'
            check_error_case "$dir" "$expected"
            ;;
        bad-magic) check_error_case "$dir" '\spindle\kernel.elf: malformed kernel' ;;
        occupied) check_error_case "$dir" '\spindle\kernel.elf: cannot allocate [FEC00000, ' ;;
        stale-key) check_stale_key_case "$dir" ;;
    esac
    if [ "$name" = bad-magic ] && [ -z "$reason" ] &&
        ! grep -q -F 'not an ELF file (bad magic)' "$dir/serial.plain"; then
        fail "the error does not name the bad magic"
    fi

    if [ -z "$reason" ]; then
        echo "test-efi-errors: PASS $name (${elapsed} s)"
    else
        echo "test-efi-errors: FAIL $name (${elapsed} s): $reason"
        echo "test-efi-errors:   serial log: $dir/serial.log; runner: $dir/run.out"
        failures=$((failures + 1))
    fi
done

if [ "$failures" -eq 0 ]; then
    echo "test-efi-errors: PASS (${#cases[@]} case(s))"
    exit 0
fi
echo "test-efi-errors: FAIL ($failures of ${#cases[@]} case(s) failed)"
exit 1
