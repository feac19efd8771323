#!/usr/bin/env bash
# test-run-qemu.sh - self-test of the host runner, without the real kernel.
#
# Usage: scripts/test-run-qemu.sh [--uefi]
#
# Builds tiny multiboot2 "kernels" (NASM, 32-bit, no long mode) that print a
# canned KTAP text on COM1 and then write a chosen value to isa-debug-exit,
# triple-fault or hang; wraps each in a GRUB ISO with grub-mkrescue and checks
# that scripts/run-qemu.sh maps each outcome to the right exit status and
# final line. --uefi also boots one image under OVMF (about 10 s more).
# Ends with `N passed, N failed`; exits 0 iff none failed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
runner="$here/run-qemu.sh"
with_uefi=0
[ "${1:-}" = "--uefi" ] && with_uefi=1

for tool in nasm ld grub-mkrescue qemu-system-x86_64; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "test-run-qemu: $tool missing: run scripts/deps.sh" >&2
        exit 1
    }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/spindle-runner-test.XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT

cat >"$work/k.asm" <<'EOF'
; Multiboot2 test kernel: GRUB enters _start in 32-bit protected mode.
bits 32
section .mb2 align=8
mb_start:
    dd 0xe85250d6                       ; magic
    dd 0                                ; architecture: i386
    dd mb_end - mb_start                ; header length
    dd -(0xe85250d6 + (mb_end - mb_start))
    dw 0, 0                             ; end tag
    dd 8
mb_end:
section .text
global _start
_start:
    mov esi, msg
.next:
    lodsb
    test al, al
    jz .done
    mov dx, 0x3f8                       ; COM1 data (GRUB left it at 115200)
    out dx, al
    jmp .next
.done:
%ifdef TRIPLE
    lidt [null_idt]                     ; no IDT: int3 -> #GP -> #DF -> reset
    int3
%endif
%ifdef EXITVAL
    mov al, EXITVAL
    out 0xf4, al                        ; isa-debug-exit
%endif
    cli
.hang:
    hlt
    jmp .hang
section .data
null_idt:
    dw 0
    dd 0
msg:
    incbin "msg.txt"
    db 0
EOF
cat >"$work/link.ld" <<'EOF'
ENTRY(_start)
SECTIONS
{
    . = 1M;
    .mb2 : { *(.mb2) }
    .text : { *(.text) }
    .data : { *(.data) }
}
EOF

# make_iso NAME MESSAGE NASM-DEFINES...
make_iso() {
    local name=$1 message=$2 dir
    shift 2
    dir="$work/$name"
    mkdir -p "$dir/iso/boot/grub"
    printf '%b' "$message" >"$dir/msg.txt"
    (cd "$dir" && nasm -f elf32 -I "$dir/" "$@" "$work/k.asm" -o k.o)
    ld -m elf_i386 --no-warn-rwx-segments -T "$work/link.ld" "$dir/k.o" -o "$dir/iso/boot/k.elf" 2>/dev/null ||
        ld -m elf_i386 -T "$work/link.ld" "$dir/k.o" -o "$dir/iso/boot/k.elf"
    cat >"$dir/iso/boot/grub/grub.cfg" <<'EOF'
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
multiboot2 /boot/k.elf
boot
EOF
    grub-mkrescue -o "$dir/k.iso" "$dir/iso" >"$dir/mkrescue.log" 2>&1 || {
        cat "$dir/mkrescue.log" >&2
        return 1
    }
}

passed=0
failed=0

# expect NAME WANT-STATUS WANT-LAST-LINE-SUBSTRING -- RUNNER-ARGS...
expect() {
    local name=$1 want=$2 want_line=$3 status=0 last
    shift 4
    "$runner" --log "$work/$name.serial.log" "$@" >"$work/$name.out" 2>&1 </dev/null || status=$?
    last=$(tail -n 1 "$work/$name.out")
    if [ "$status" -eq "$want" ] && [[ $last == *"$want_line"* ]]; then
        echo "ok: $name (exit $status: $last)"
        passed=$((passed + 1))
    else
        echo "FAIL: $name: want exit $want and a last line with '$want_line'; got exit $status, output:"
        sed 's/^/    /' "$work/$name.out"
        failed=$((failed + 1))
    fi
}

ok_text='KTAP version 1\r\n1..2\r\nok 1 Fake:first\r\nok 2 Fake:second # SKIP no reason\r\n1 passed, 0 failed, 1 skipped\r\n'
fail_text='KTAP version 1\r\n1..2\r\nok 1 Fake:first\r\n# KT_EXPECT_EQ(a, b): a = 1, b = 2 at tests/fake.c:10\r\nnot ok 2 Fake:second\r\n1 passed, 1 failed, 0 skipped\r\n'

make_iso pass "$ok_text" -DEXITVAL=0x10
make_iso fail "$fail_text" -DEXITVAL=0x11
make_iso bugcheck '*** STOP: 0x0000000A (0, 0, 0, 0) IRQL_NOT_LESS_OR_EQUAL\r\n' -DEXITVAL=0x12
make_iso watchdog 'ok 1 Fake:first\r\n# watchdog: Fake:second hung\r\n' -DEXITVAL=0x13
make_iso nosummary 'ok 1 Fake:first\r\n' -DEXITVAL=0x10
make_iso liar 'not ok 1 Fake:first\r\n0 passed, 1 failed\r\n' -DEXITVAL=0x10
make_iso triple 'KTAP version 1\r\n1..2\r\nok 1 Fake:first\r\n' -DTRIPLE
make_iso hang 'ok 1 Fake:first\r\n'
make_iso oddvalue 'x\r\n' -DEXITVAL=0x21

expect pass 0 "all tests passed (qemu exit 33)" -- --image "$work/pass/k.iso"
expect pass-smp1 0 "all tests passed (qemu exit 33)" -- --image "$work/pass/k.iso" --smp 1 --mem 64
expect fail 1 "a test failed (qemu exit 35)" -- --image "$work/fail/k.iso"
expect bugcheck 3 "bug check (qemu exit 37)" -- --image "$work/bugcheck/k.iso"
expect watchdog 4 "watchdog fired (qemu exit 39)" -- --image "$work/watchdog/k.iso"
expect no-summary 6 "no clean summary line (qemu exit 33)" -- --image "$work/nosummary/k.iso"
expect summary-says-failed 6 "no clean summary line (qemu exit 33)" -- --image "$work/liar/k.iso"
expect triple-fault 5 "without the kernel's exit code (triple fault or power-off) (qemu exit 0)" -- --image "$work/triple/k.iso"
expect unknown-value 5 "unknown kernel exit value 0x21 (qemu exit 67)" -- --image "$work/oddvalue/k.iso"
expect timeout 124 "run-qemu: TIMEOUT after 3 s (no exit from the kernel)" -- --image "$work/hang/k.iso" --timeout 3
expect run-mode 0 "all tests passed (qemu exit 33)" -- --mode run --image "$work/pass/k.iso"
expect missing-image 2 "not found" -- --image "$work/nonexistent.iso"
expect bad-mode 2 "--mode must be" -- --mode bogus --image "$work/pass/k.iso"
expect efi-dry-run 0 "fat:rw:$work/pass/iso" -- --firmware efi --image "$work/pass/iso" --dry-run
if [ "$with_uefi" -eq 1 ]; then
    expect uefi 0 "all tests passed (qemu exit 33)" -- --firmware uefi --image "$work/pass/k.iso"
fi

# Every run writes the results files: the failing run's name its failed test, and the
# triple fault's end in the not-ok item for an incomplete run.
"$runner" --log "$work/results.serial.log" --results "$work/results" --image "$work/fail/k.iso" \
    >"$work/results.out" 2>&1 </dev/null || true
if grep -qx '    not ok 2 second' "$work/results.ktap" && grep -qx 'not ok 1 Fake' "$work/results.ktap" &&
    grep -q '<failure' "$work/results.xml" && ! grep -q $'\r' "$work/results.ktap" &&
    ! grep -q $'\e' "$work/results.ktap" && grep -q $'\e' "$work/results.serial.log"; then
    echo "ok: --results: results.ktap (no CR, none of GRUB's escape codes) and results.xml name the failed test"
    passed=$((passed + 1))
else
    echo "FAIL: --results: results.ktap/xml do not name Fake:second"
    failed=$((failed + 1))
fi
"$runner" --log "$work/results2.serial.log" --results "$work/results2" --image "$work/triple/k.iso" \
    >"$work/results2.out" 2>&1 </dev/null || true
if grep -q '^not ok 2 spindle_run # the kernel printed no summary line' "$work/results2.ktap"; then
    echo "ok: a cut-off run's results.ktap ends in not ok spindle_run"
    passed=$((passed + 1))
else
    echo "FAIL: the triple fault's results.ktap has no failing spindle_run item"
    failed=$((failed + 1))
fi

# A run that selected nothing (the kernel counts it as a failure outside any test) must
# not read as a pass: its results end in a failing item.
printf 'KTAP version 1\r\n1..0\r\n# no test matches tests=Nope*\r\n0 passed, 1 failed, 0 skipped\r\n' \
    >"$work/none.serial.log"
python3 "$here/ktap-results.py" --log "$work/none.serial.log" --ktap "$work/none.ktap" \
    --xml "$work/none.xml"
if grep -q '^not ok 1 spindle_run # the kernel counted 1 failure' "$work/none.ktap" &&
    grep -q '<failure' "$work/none.xml"; then
    echo "ok: a run that selected nothing gives failing results, not an empty pass"
    passed=$((passed + 1))
else
    echo "FAIL: the results of a run that selected nothing do not fail"
    failed=$((failed + 1))
fi

# The serial log of the failing run must name the failed test.
summary_out=$("$here/ktap-summary.sh" "$work/fail.serial.log" || true)
if grep -qx "failed: Fake:second" <<<"$summary_out"; then
    echo "ok: ktap-summary names the failed test"
    passed=$((passed + 1))
else
    echo "FAIL: ktap-summary did not name Fake:second"
    failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
