#!/usr/bin/env bash
# test.sh - `make test` with the runner's own exit status.
#
# Usage: scripts/test.sh [VAR=value ...]      e.g. scripts/test.sh SMP=2 TESTS='KeDpc*'
#
# GNU make exits 2 whenever a recipe fails, whatever the recipe's status; this
# runs `make test` with the same variables and exits with scripts/run-qemu.sh's
# status instead: 0 all passed, 1 a test failed, 3 bug check, 4 watchdog,
# 5 QEMU ended without the kernel's exit code, 6 exit 33 without a clean
# summary, 7 no workload, 124 host timeout, 130 interrupted; 2 when make stopped before the
# run (a bad variable, a compile error, TESTS selecting nothing).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
status_file=$(mktemp "${TMPDIR:-/tmp}/spindle-test-status.XXXXXX")
trap 'rm -f "$status_file"' EXIT
: >"$status_file"
make -C "$root" --no-print-directory test "$@" STATUS_FILE="$status_file"
make_status=$?
if [ -s "$status_file" ]; then
    exit "$(cat "$status_file")"
fi
[ "$make_status" -eq 0 ] && exit 0
exit 2
