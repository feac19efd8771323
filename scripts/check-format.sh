#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks that every tracked C file and header is formatted as .clang-format says
# (STYLE.md §10). Prints the files that are not and exits 1; fix with
# `clang-format -i FILE` in a commit of its own. NASM files are not checked.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
command -v clang-format >/dev/null || { echo "check-format: clang-format is not installed" >&2; exit 1; }
bad=0
while IFS= read -r file; do
    if ! clang-format --dry-run --Werror "$file" >/dev/null 2>&1; then
        echo "check-format: $file is not formatted (clang-format -i $file)"
        bad=1
    fi
done < <(git ls-files '*.c' '*.h')
[ "$bad" -eq 0 ] && echo "check-format: OK ($(git ls-files '*.c' '*.h' | wc -l) files)"
exit "$bad"
