#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""tcg-jump-cache.py - find bench loops that QEMU's TCG must look up on every turn.

Usage: scripts/tcg-jump-cache.py ELF OBJECT...

Under TCG a branch to the page its translated block started on is chained
straight to the target, but a call to another page and every `ret` look the
target up at run time, first in a per-vCPU cache of 4096 entries indexed by a
hash of the guest address (QEMU 7.2, tb_jmp_cache_hash_func). When two
addresses a loop looks up on every iteration hash to the same entry, they
evict each other and every lookup takes QEMU's slow path: measured on
virt_tas_called, the row ran at 17 M acquisitions/s instead of 36 at N=1, in
every boot of that build. Which build is hit depends only on where the
linker put the code, so `make bench` runs this check and its report says
which rows a collision may have slowed.

A loop whose code crosses a page boundary is looked up on every turn too
(its branch back starts a block on the other page, so it is not chained):
one build put atomic_xadd's loop across a boundary and the row read 51
cycles instead of 19. The check reports such loops as well
(tests/bench/bench.h, BENCH_TIMED, aligns the timed functions to avoid them).

The timed loops are the functions defined in the given object files (the
bench's) that are named BenchLoop* (contended) or call BenchTscBegin (an
uncontended row). In each, the check takes its loops (a backward branch and
the code it jumps over) and, for every direct call inside one, the return
address and, if the callee is on another page, the callee's address. It
prints one line per collision or page-crossing loop, naming the addresses,
and "none" otherwise; exit status 0 either way (1 if the files cannot be
read).
"""
import re
import subprocess
import sys

PAGE_BITS = 12
CACHE_BITS = 12  # TB_JMP_CACHE_BITS
HALF = CACHE_BITS // 2


def slot(pc):
    """QEMU 7.2's tb_jmp_cache_hash_func for a 4 KiB target page."""
    tmp = pc ^ (pc >> (PAGE_BITS - HALF))
    return (((tmp >> (PAGE_BITS - HALF)) & ((1 << CACHE_BITS) - (1 << HALF)))
            | (tmp & ((1 << HALF) - 1)))


def defined_functions(objects):
    names = set()
    for obj in objects:
        out = subprocess.run(["nm", "--defined-only", obj], capture_output=True, text=True,
                             check=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tT":
                names.add(parts[2])
    return names


def disassemble(elf):
    """{function: [(address, mnemonic, operand text)]} for the whole ELF."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", elf], capture_output=True,
                         text=True, check=True).stdout
    functions, current = {}, None
    for line in out.splitlines():
        m = re.match(r"^[0-9a-f]+ <([^>]+)>:$", line)
        if m:
            current = functions.setdefault(m.group(1), [])
            continue
        m = re.match(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*)$", line)
        if m and current is not None:
            current.append((int(m.group(1), 16), m.group(2), m.group(3)))
    return functions


def find_loops(code):
    """(start, branch, end) of each loop: a backward branch at `branch` to `start`; `end` is
    the first byte after the branch (the next instruction's address)."""
    loops = []
    for i, (addr, mnemonic, operands) in enumerate(code):
        m = re.match(r"([0-9a-f]+)\b", operands)
        if mnemonic.startswith("j") and m and int(m.group(1), 16) <= addr:
            end = code[i + 1][0] if i + 1 < len(code) else addr + 6  # a jcc rel32 is 6 bytes
            loops.append((int(m.group(1), 16), addr, end))
    return loops


def hot_lookups(code):
    """(kind, address) of the lookups the function's loops make on every iteration."""
    loops = [(start, branch) for start, branch, _ in find_loops(code)]
    lookups = set()
    for i, (addr, mnemonic, operands) in enumerate(code):
        if not mnemonic.startswith("call") or i + 1 == len(code):
            continue
        if not any(start <= addr <= end for start, end in loops):
            continue
        lookups.add(("return to", code[i + 1][0]))
        m = re.match(r"([0-9a-f]+)\b", operands)
        if m and int(m.group(1), 16) >> PAGE_BITS != addr >> PAGE_BITS:
            lookups.add(("call to", int(m.group(1), 16)))
    return sorted(lookups, key=lambda k: k[1])


def collisions(elf, objects):
    """[(function, [(kind, address), ...])]: the lookups sharing one slot, or a loop's start
    and end when its code crosses a page boundary."""
    functions = disassemble(elf)
    found = []
    for name in sorted(defined_functions(objects)):
        code = functions.get(name, [])
        if not name.startswith("BenchLoop") and not any(
                m.startswith("call") and "<BenchTscBegin>" in o for _, m, o in code):
            continue
        slots = {}
        for kind, pc in hot_lookups(code):
            slots.setdefault(slot(pc), []).append((kind, pc))
        for entries in slots.values():
            if len({pc for _, pc in entries}) > 1:
                found.append((name, entries))
        for start, _, end in find_loops(code):
            if start >> PAGE_BITS != (end - 1) >> PAGE_BITS:
                found.append((name, [("loop from", start), ("across a page boundary to", end - 1)]))
    return found


def main():
    if len(sys.argv) < 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 1
    try:
        found = collisions(sys.argv[1], sys.argv[2:])
    except (OSError, subprocess.CalledProcessError) as e:
        print("tcg-jump-cache: %s" % e, file=sys.stderr)
        return 1
    if not found:
        print("tcg-jump-cache: none")
    for name, entries in found:
        if entries[0][0] == "loop from":
            print("tcg-jump-cache: %s: %s" % (
                name, " ".join("%s %#x" % (kind, pc) for kind, pc in entries)))
        else:
            print("tcg-jump-cache: %s: %s share a slot" % (
                name, " and ".join("%s %#x" % (kind, pc) for kind, pc in entries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
