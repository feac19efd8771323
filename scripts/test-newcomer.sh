#!/usr/bin/env bash
# test-newcomer.sh - the README's new-user path, checked with tools that are not Spindle's.
#
# Usage: scripts/test-newcomer.sh [--smp N] [--keep]
#
# In a temporary folder, writes test files as a new user would and runs them with
# `make test EXTRA_TESTS='DIR/*.c'` (through scripts/test.sh, for the runner's exit
# status), with the serial log and results in that folder. Checks:
#   two files, 5 tests (2 pass + 1 pass, 1 fail, 1 skip): exit status 1; results.ktap
#     read by prove (TAP::Parser: 2 suites, 1 failed) and by node's tap-parser
#     (Debian node-tap-parser: per-suite counts from its subtest parsers); results.xml
#     read by junitparser (Debian python3-junitparser): 5 tests, 1 failure, 1 skipped;
#     LF line endings only, no escape codes
#   the failing file removed: exit 0, prove PASS, only a relink (no kernel recompile)
#   a file with a compile error: make fails with gcc's error line, in seconds
#   TESTS matching nothing: a one-line error and no boot
#   exit statuses: bug check 3, watchdog 4, host timeout 124
# Ends with `N passed, N failed`; exit 0 iff none failed.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
smp=2
keep=0
while [ $# -gt 0 ]; do
    case "$1" in
        --smp) smp=$2; shift 2 ;;
        --keep) keep=1; shift ;;
        *) echo "test-newcomer: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
for tool in prove node; do
    command -v "$tool" >/dev/null || { echo "test-newcomer: $tool missing: run scripts/deps.sh" >&2; exit 2; }
done
[ -x /usr/bin/python3 ] || { echo "test-newcomer: /usr/bin/python3 missing: run scripts/deps.sh" >&2; exit 2; }

work=$(mktemp -d "${TMPDIR:-/tmp}/spindle-newcomer.XXXXXX")
[ "$keep" -eq 1 ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work/mytests" "$work/broken" "$work/stops"
passed=0
failed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; failed=$((failed + 1)); }

cat >"$work/mytests/first.c" <<'C'
#include <wdm.h>
#include <ktest.h>

KTEST(NewbieLocks, release_lowers_to_the_saved_irql)
{
    KSPIN_LOCK Lock;
    KIRQL Old;

    KeInitializeSpinLock(&Lock);
    KeAcquireSpinLock(&Lock, &Old);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeReleaseSpinLock(&Lock, Old);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(NewbieLocks, raise_and_lower)
{
    KIRQL Old;

    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_EQ(Old, PASSIVE_LEVEL);
    KeLowerIrql(Old);
}
C
cat >"$work/mytests/second.c" <<'C'
#include <wdm.h>
#include <ktest.h>

KTEST(NewbieMixed, passes)
{
    KT_EXPECT_EQ(1 + 1, 2);
}

KTEST(NewbieMixed, fails_on_purpose)
{
    KT_EXPECT_EQ(1 + 1, 3);
}

KTEST(NewbieMixed, skips)
{
    KT_SKIP("nothing to do here");
}
C
cat >"$work/broken/typo.c" <<'C'
#include <wdm.h>
#include <ktest.h>

KTEST(NewbieBroken, typo)
{
    KT_EXPECT_EQ(KeGetCurrentIrq(), PASSIVE_LEVEL)
}
C
cat >"$work/stops/bugcheck.c" <<'C'
#include <wdm.h>
#include <ktest.h>

KTEST(NewbieStop, bug_check)
{
    KeBugCheckEx(0xE2, 1, 2, 3, 4); // MANUALLY_INITIATED_CRASH
}
C
cat >"$work/stops/hang.c" <<'C'
#include <wdm.h>
#include <ktest.h>

static volatile LONG NewbieForever = 1;

KTEST_EX(NewbieStop, hang_watchdog, 0, 3000)
{
    while (NewbieForever)
    {
    }
}

KTEST_EX(NewbieStop, hang_long_budget, 0, 3600000)
{
    while (NewbieForever)
    {
    }
}
C

# run NAME VARS...: scripts/test.sh with the log in $work/NAME; sets $status.
run() {
    local name=$1
    shift
    mkdir -p "$work/$name"
    status=0
    "$here/test.sh" SMP="$smp" LOG="$work/$name/serial.log" "$@" >"$work/$name/out" 2>&1 || status=$?
}

# ---- two files: 5 tests, one fails, one skips
run two EXTRA_TESTS="$work/mytests/*.c" TESTS='Newbie*'
[ "$status" -eq 1 ] && ok "two files, one failing test: exit 1" ||
    { bad "two files: exit $status, want 1"; tail -20 "$work/two/out"; }
ktap=$work/two/results.ktap
xml=$work/two/results.xml
if [ -f "$ktap" ] && ! grep -q $'\r' "$ktap" && ! grep -q $'\e' "$ktap"; then
    ok "results.ktap: LF line endings, no escape codes"
else
    bad "results.ktap missing or has CR/escape codes"
fi
prove_out=$(prove -v --exec cat "$ktap" 2>&1)
if grep -q '^Result: FAIL' <<<"$prove_out" && grep -q 'Tests: 2 Failed: 1' <<<"$prove_out" &&
    grep -q '^Files=1, Tests=2,' <<<"$prove_out"; then
    ok "prove: 2 suites, 1 failed, Result: FAIL"
else
    bad "prove read: $(tail -5 <<<"$prove_out")"
fi
tap_js='
const Parser = require("tap-parser");
const suites = [];
const p = new Parser(r => {
  console.log(JSON.stringify({ok: r.ok, count: r.count, fail: r.fail, suites}));
});
p.on("child", c => c.on("complete", r => suites.push([c.name, r.count, r.pass, r.fail, r.skip])));
p.end(require("fs").readFileSync(process.argv[1]));'
tap_out=$(NODE_PATH=/usr/share/nodejs node -e "$tap_js" "$ktap" 2>&1)
want_tap='{"ok":false,"count":2,"fail":1,"suites":[["NewbieLocks",2,2,0,0],["NewbieMixed",3,2,1,1]]}'
if [ "$tap_out" = "$want_tap" ]; then
    ok "tap-parser: suites NewbieLocks 2/2, NewbieMixed 3 (1 fail, 1 skip)"
else
    bad "tap-parser read: $tap_out, want $want_tap"
fi
junit_py='
import sys
from junitparser import JUnitXml, Failure, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
cases = [(s.name, c.name, [type(r).__name__ for r in c.result]) for s in xml for c in s]
print(len(cases), sum("Failure" in r for _, _, r in cases), sum("Skipped" in r for _, _, r in cases),
      [c for s, c, r in cases if "Failure" in r])'
junit_out=$(/usr/bin/python3 -c "$junit_py" "$xml" 2>&1)
if [ "$junit_out" = "5 1 1 ['fails_on_purpose']" ]; then
    ok "junitparser: 5 tests, 1 failure (fails_on_purpose), 1 skipped"
else
    bad "junitparser read: $junit_out"
fi

# ---- the failing file out: a relink, not a rebuild
rm "$work/mytests/second.c"
run one EXTRA_TESTS="$work/mytests/*.c" TESTS='Newbie*'
compiled=$(grep -c '^  CC ' "$work/one/out")
if [ "$status" -eq 0 ] && [ "$compiled" -le 1 ] && grep -q '^  LD ' "$work/one/out"; then
    ok "one file: exit 0, relinked with $compiled compile(s)"
else
    bad "one file: exit $status, $compiled compiles"; tail -20 "$work/one/out"
fi
prove --exec cat "$work/one/results.ktap" >"$work/one/prove" 2>&1 &&
    ok "prove: Result: PASS" || bad "prove: $(tail -3 "$work/one/prove")"

# ---- a compile error in an extra test, reported at once
start=$SECONDS
run broken EXTRA_TESTS="$work/mytests/*.c $work/broken/*.c" TESTS='Newbie*'
took=$((SECONDS - start))
if [ "$status" -eq 2 ] && grep -q "typo.c:6:.*error:.*KeGetCurrentIrq" "$work/broken/out" &&
    [ ! -f "$work/broken/serial.log" ] && [ "$took" -le 120 ]; then
    ok "compile error: gcc's error line, no boot, ${took} s"
else
    bad "compile error: exit $status after ${took} s"; tail -10 "$work/broken/out"
fi

# ---- nothing selected: an error before boot
run none TESTS='NoSuchSuite*'
if [ "$status" -eq 2 ] && grep -q "TESTS='NoSuchSuite\*' selects none" "$work/none/out" &&
    [ ! -f "$work/none/serial.log" ]; then
    ok "TESTS selecting nothing: one-line error, no boot"
else
    bad "TESTS selecting nothing: exit $status"; tail -5 "$work/none/out"
fi

# ---- bug check, watchdog, host timeout
run bugcheck EXTRA_TESTS="$work/stops/*.c" TESTS='NewbieStop:bug_check'
[ "$status" -eq 3 ] && grep -q 'STOP: 0x000000E2' "$work/bugcheck/out" &&
    grep -q '^not ok [0-9]* spindle_run # ' "$work/bugcheck/results.ktap" &&
    ok "bug check: exit 3, results.ktap ends in not ok spindle_run" ||
    { bad "bug check: exit $status"; tail -5 "$work/bugcheck/out"; }
run watchdog EXTRA_TESTS="$work/stops/*.c" TESTS='NewbieStop:hang_watchdog'
[ "$status" -eq 4 ] && ok "watchdog: exit 4" || { bad "watchdog: exit $status"; tail -5 "$work/watchdog/out"; }
run timeout EXTRA_TESTS="$work/stops/*.c" TESTS='NewbieStop:hang_long_budget' TIMEOUT=45
[ "$status" -eq 124 ] && grep -q TIMEOUT "$work/timeout/out" && ok "host timeout: exit 124" ||
    { bad "host timeout: exit $status"; tail -5 "$work/timeout/out"; }

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
