#!/usr/bin/env bash
# ktap-summary.sh - the verdict of a Spindle test run from its serial log.
#
# Usage: scripts/ktap-summary.sh [-q] LOG
#
# Reads the KTAP the kernel printed on COM1 (carriage returns and terminal
# escape sequences, which GRUB emits, are ignored) and prints
#   failed: Suite:case          one line per top-level `not ok` result
#   N passed, N failed[, N skipped]   the kernel's closing line (the last one)
# -q prints nothing; only the exit status tells.
#
# Exit status:
#   0  a summary line `N passed, 0 failed[, N skipped]` is present, every
#      summary line in the log says 0 failed, and no top-level `not ok`
#      line was printed
#   1  a test failed (a summary says failed > 0, or a `not ok` line exists)
#   2  no summary line (the kernel crashed, hung or was cut off), or no log
set -euo pipefail

quiet=0
if [ "${1:-}" = "-q" ]; then
    quiet=1
    shift
fi
if [ $# -ne 1 ] || [ "$1" = "-h" ] || [ "$1" = "--help" ]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0" >&2
    exit 2
fi
log=$1

say() {
    [ "$quiet" -eq 1 ] || printf '%s\n' "$*"
}

if [ ! -r "$log" ]; then
    say "ktap-summary: no log '$log'"
    exit 2
fi

summary_re='^([0-9]+) passed, ([0-9]+) failed(, ([0-9]+) skipped)?$'
notok_re='^not ok [0-9]+ ([^#]*[^#[:space:]])'
summary=""
any_failed=0
failed_names=()

# Strip CR and ANSI/VT100 escape sequences (GRUB clears the screen on the
# serial terminal, which prefixes the kernel's first line with ESC[H ESC[J),
# then keep only the summary and top-level `not ok` lines.
while IFS= read -r line; do
    if [[ $line =~ $summary_re ]]; then
        summary=$line
        [ "${BASH_REMATCH[2]}" -eq 0 ] || any_failed=1
    elif [[ $line =~ $notok_re ]]; then
        failed_names+=("${BASH_REMATCH[1]}")
    fi
done < <(LC_ALL=C sed -e 's/\r//g' \
    -e 's/\x1b\[[0-9;?]*[ -\/]*[@-~]//g' \
    -e 's/\x1b[()][0-9A-Za-z]//g' \
    -e 's/\x1b[=>78c]//g' "$log" |
    LC_ALL=C grep -a -E '^([0-9]+ passed, |not ok )' || true)

for name in ${failed_names[@]+"${failed_names[@]}"}; do
    say "failed: $name"
done

if [ -z "$summary" ]; then
    say "ktap-summary: no summary line ('N passed, N failed') in $log"
    exit 2
fi
say "$summary"

if [ "$any_failed" -ne 0 ] || [ "${#failed_names[@]}" -ne 0 ]; then
    if [[ $summary =~ $summary_re ]] && [ "${BASH_REMATCH[2]}" -eq 0 ]; then
        if [ "$any_failed" -ne 0 ]; then
            say "ktap-summary: an earlier summary line in the log reports failures"
        else
            say "ktap-summary: the summary says 0 failed but ${#failed_names[@]} test(s) printed 'not ok'"
        fi
    fi
    exit 1
fi
exit 0
