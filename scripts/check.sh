#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# check.sh - `make check`: the checks that need no QEMU (STYLE.md §11), in order:
#   build with gcc, build with clang (kernel and EFI loader; warnings are errors),
#   check-headers, check-layering, check-format, cppcheck, clang-tidy.
# A failing step does not stop the others. The last line is
#   check: N passed, N failed [(failed steps)] (S s)
# and the exit status is 0 iff none failed. DBG (default 1) selects the builds.
set -uo pipefail
cd "$(git rev-parse --show-toplevel)" || exit 1
make=${MAKE:-make}
dbg=${DBG:-1}
steps=(
    "build gcc|$make --no-print-directory -j2 DBG=$dbg kernel efi"
    "build clang|$make --no-print-directory -j2 DBG=$dbg CC=clang kernel efi"
    "check-headers|$make --no-print-directory DBG=$dbg check-headers"
    "check-layering|$make --no-print-directory check-layering"
    "check-format|$make --no-print-directory check-format"
    "cppcheck|$make --no-print-directory cppcheck"
    "clang-tidy|$make --no-print-directory DBG=$dbg clang-tidy"
)
start=$SECONDS
passed=0
failed=()
for step in "${steps[@]}"; do
    name=${step%%|*}
    echo "check: ---- $name"
    if bash -c "${step#*|}" </dev/null; then
        passed=$((passed + 1))
    else
        failed+=("$name")
    fi
done
summary="check: $passed passed, ${#failed[@]} failed"
if [ "${#failed[@]}" -gt 0 ]; then
    list=$(printf '%s, ' "${failed[@]}")
    summary+=" (${list%, })"
fi
echo "$summary ($((SECONDS - start)) s)"
[ "${#failed[@]}" -eq 0 ]
