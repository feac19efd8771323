#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# cppcheck.sh - cppcheck 2.10 over the kernel (STYLE.md §11): kernel/, hal/, arch/, lib/
# and boot/efi/, for the checked (DBG=1) and the free (DBG=0) build. Any finding fails.
#
# Usage: scripts/cppcheck.sh [--jobs N]
# Suppressions: scripts/cppcheck.supp (each justified there) and in-line
# `// cppcheck-suppress id` comments with their reason. Prints one line per finding
# (file:line:column: severity: message [id]) and "cppcheck: OK (N files, 2 builds)" or
# "cppcheck: N findings"; exits 0 iff there are none.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
jobs=2
case "${1:-}" in
    "") ;;
    --jobs) jobs=${2:?--jobs needs a number} ;;
    *) echo "cppcheck.sh: unknown argument '$1' (usage: scripts/cppcheck.sh [--jobs N])" >&2; exit 2 ;;
esac
command -v cppcheck >/dev/null || { echo "cppcheck: not installed (run scripts/deps.sh)" >&2; exit 1; }

dirs=(kernel hal arch lib boot/efi)
out=build/cppcheck
mkdir -p "$out"
findings=0
for dbg in 1 0; do
    mkdir -p "$out/dbg$dbg"
    # __x86_64__ and the include path as the Makefile's; --cppcheck-build-dir keeps results
    # of unchanged files between runs. Findings go to stderr, so progress stays quiet.
    cppcheck --enable=warning,style,performance,portability --std=c11 --platform=unix64 \
        --inline-suppr --error-exitcode=1 --quiet -j "$jobs" \
        --suppressions-list=scripts/cppcheck.supp --cppcheck-build-dir="$out/dbg$dbg" \
        -DDBG="$dbg" -D__x86_64__ -I. -Iinclude -Iarch/x86_64 \
        --template='{file}:{line}:{column}: {severity}: {message} [{id}]' \
        "${dirs[@]}" 2>"$out/dbg$dbg.txt" >/dev/null || true
    while IFS= read -r line; do
        echo "$line (DBG=$dbg)"
        findings=$((findings + 1))
    done < <(grep -E '^[^ ]+:[0-9]+:[0-9]+: ' "$out/dbg$dbg.txt" || true)
    # Anything else cppcheck printed (a bad suppression file, a crash) is a failure too.
    if grep -vqE '^[^ ]+:[0-9]+:[0-9]+: |^ |^$' "$out/dbg$dbg.txt"; then
        grep -vE '^[^ ]+:[0-9]+:[0-9]+: |^ |^$' "$out/dbg$dbg.txt" >&2
        findings=$((findings + 1))
    fi
done
files=$(find "${dirs[@]}" -name '*.c' | wc -l)
if [ "$findings" -eq 0 ]; then
    echo "cppcheck: OK ($files files, DBG=1 and DBG=0)"
else
    echo "cppcheck: $findings findings"
    exit 1
fi
