#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ktest-list.py - the tests a Spindle kernel holds, and which TESTS selects.

Usage: scripts/ktest-list.py --kernel build/checked/kernel.elf [--tests 'glob,glob'] [--check]

Reads the kernel's .ktests section (one KTEST_CASE per test, tests/ktest.h:
Suite and Name pointers, Routine, Flags, TimeoutMs; 32 bytes each) and the
strings the pointers name, straight from the ELF file. Prints `Suite:case`,
one a line, for every test the globs select (all when --tests is empty); the
globs are the kernel's own (lib/glob.c: `*` any run, `?` one character).
--check prints nothing on success and, when no test is selected, one line
on stderr and exit status 2: the run would select nothing, so it is not booted.
"""
import argparse
import re
import struct
import sys


def sections(data):
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not an ELF64 file")
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = []
    for i in range(shnum):
        name, _type, _flags, addr, offset, size = struct.unpack_from(
            "<IIQQQQ", data, shoff + i * shentsize)
        raw.append((name, _type, addr, offset, size))
    strtab = raw[shstrndx]
    out = {}
    for name, _type, addr, offset, size in raw:
        end = data.index(b"\0", strtab[3] + name)
        out[data[strtab[3] + name:end].decode()] = (_type, addr, offset, size)
    return out


def tests_in(path):
    with open(path, "rb") as f:
        data = f.read()
    secs = sections(data)
    if ".ktests" not in secs:
        raise ValueError("no .ktests section (is this a Spindle kernel.elf?)")
    progbits = [s for s in secs.values() if s[0] == 1 and s[1] != 0]

    def string_at(address):
        for _type, addr, offset, size in progbits:
            if addr <= address < addr + size:
                start = offset + address - addr
                return data[start:data.index(b"\0", start)].decode()
        raise ValueError("string at %#x is in no section" % address)

    _type, _addr, offset, size = secs[".ktests"]
    names = []
    for entry in range(offset, offset + size - size % 32, 32):
        suite, name = struct.unpack_from("<QQ", data, entry)
        names.append("%s:%s" % (string_at(suite), string_at(name)))
    return names


def glob_re(pattern):
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                              for c in pattern) + r"\Z", re.S)


def main():
    parser = argparse.ArgumentParser(add_help=True)
    parser.add_argument("--kernel", required=True)
    parser.add_argument("--tests", default="")
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    try:
        names = tests_in(args.kernel)
    except (OSError, ValueError) as error:
        print("ktest-list: %s: %s" % (args.kernel, error), file=sys.stderr)
        return 2
    patterns = [glob_re(p) for p in args.tests.split(",") if p]
    chosen = sorted(n for n in names if not patterns or any(p.match(n) for p in patterns))
    if args.check:
        if not chosen:
            print("error: TESTS='%s' selects none of the %d tests in %s (list them: "
                  "make list-tests)" % (args.tests, len(names), args.kernel), file=sys.stderr)
            return 2
        return 0
    for name in chosen:
        print(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
