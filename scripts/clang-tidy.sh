#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# clang-tidy.sh - clang-tidy 14 over the kernel (STYLE.md §11): every C file of kernel/,
# hal/, arch/, lib/ and boot/efi/, with the checks of .clang-tidy (boot/efi/.clang-tidy
# adds one threshold); any finding fails.
#
# Usage: scripts/clang-tidy.sh [--build DIR] [--jobs N]
#   --build DIR  the clang build whose compile commands are used (default build/checked-clang;
#                `make clang-tidy` builds it first)
#   --jobs N     clang-tidy processes at once (default 2)
#
# The compilation database is joined from the fragments clang writes next to each object
# (-MJ, see the Makefile), so clang-tidy sees exactly the flags of `make CC=clang`. One
# clang-tidy process per file: clang-tidy 14 given several files keeps analyser state from
# one to the next (clang-analyzer-valist reported va_start'ed lists as uninitialised in
# lib/format.c after kernel/mm/physical.c). A file whose object is older than its last
# clean result is not analysed again. Prints each finding once (headers are seen by many
# files; the notes are in build/tidy/<file>.log) and "clang-tidy: OK (N files)" or
# "clang-tidy: N findings"; exits 0 iff there are none.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
build=build/checked-clang
jobs=2
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=${2:?--build needs a directory}; shift 2 ;;
        --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
        *) echo "clang-tidy.sh: unknown argument '$1' (try --help: see the header)" >&2; exit 2 ;;
    esac
done
tidy=$(command -v clang-tidy-14 || command -v clang-tidy || true)
[ -n "$tidy" ] || { echo "clang-tidy: not installed (run scripts/deps.sh)" >&2; exit 1; }

out=build/tidy
mkdir -p "$out"
# The database: one fragment per object of the analysed folders whose source still exists.
fragments=()
while IFS= read -r f; do
    src=$(sed -n 's/.*"file": "\([^"]*\)".*/\1/p' "$f")
    case "$src" in kernel/* | hal/* | arch/* | lib/* | boot/efi/*) ;; *) continue ;; esac
    [ -f "$src" ] && fragments+=("$f")
done < <(find "$build/obj" "$build/efi" -name '*.o.json' 2>/dev/null | sort)
[ "${#fragments[@]}" -gt 0 ] || {
    echo "clang-tidy: no compile commands in $build (build with 'make CC=clang' first)" >&2
    exit 1
}
{
    echo '['
    cat "${fragments[@]}" | sed '$ s/,[[:space:]]*$//'
    echo ']'
} >"$out/compile_commands.json.new"
mv -f "$out/compile_commands.json.new" "$out/compile_commands.json"

# One line per file: "source object log".
list=$out/files.txt
: >"$list"
for f in "${fragments[@]}"; do
    src=$(sed -n 's/.*"file": "\([^"]*\)".*/\1/p' "$f")
    log=$out/$(echo "$src" | tr '/' '_').log
    echo "$src ${f%.json} $log" >>"$list"
done

# tidy_one SOURCE OBJECT LOG: analyse SOURCE unless LOG is a clean result newer than the
# object (rebuilt whenever the source or a header it includes changes) and the configs.
# shellcheck disable=SC2317 # called by xargs through bash -c
tidy_one() {
    if [ -f "$3" ] && [ "$3" -nt "$2" ] && [ "$3" -nt .clang-tidy ] &&
        [ "$3" -nt boot/efi/.clang-tidy ] && [ "$(tail -n 1 "$3")" = "clang-tidy: exit 0" ]; then
        return 0
    fi
    local rc=0
    "$TIDY" -p "$OUT" --quiet "$1" >"$3.new" 2>&1 || rc=$?
    echo "clang-tidy: exit $rc" >>"$3.new"
    mv -f "$3.new" "$3"
}
export -f tidy_one
export TIDY=$tidy OUT=$out
xargs -P "$jobs" -L 1 bash -c 'tidy_one "$@"' _ <"$list"

findings=0
failed=0
while read -r src _ log; do
    [ "$(tail -n 1 "$log")" = "clang-tidy: exit 0" ] || failed=$((failed + 1))
done <"$list"
mapfile -t unique < <(cut -d' ' -f3 "$list" | xargs cat |
    grep -E '^[^ ]+:[0-9]+:[0-9]+: (warning|error): ' | sed "s|^$PWD/||; s|^\./||" | sort -u)
for line in "${unique[@]}"; do
    echo "$line"
done
findings=${#unique[@]}
files=$(wc -l <"$list")
if [ "$findings" -eq 0 ] && [ "$failed" -eq 0 ]; then
    echo "clang-tidy: OK ($files files)"
    exit 0
fi
if [ "$findings" -eq 0 ]; then
    echo "clang-tidy: failed on $failed files without a finding; see $out/*.log" >&2
    exit 1
fi
echo "clang-tidy: $findings findings (notes in $out/<file>.log)"
exit 1
