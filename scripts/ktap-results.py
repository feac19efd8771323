#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""ktap-results.py - results files for tools, from a Spindle serial log.

Usage: scripts/ktap-results.py --log build/serial.log [--ktap OUT.ktap] [--xml OUT.xml]
                               [--verdict TEXT]

The kernel prints flat KTAP on COM1 (`ok N Suite:case`, `# ...` diagnostics,
`# duration_ms N` before each result), among GRUB's escape codes, carriage
returns and the boot lines. This writes:

  --ktap  KTAP version 1 as Linux's KUnit prints it: LF line endings, nothing
          but KTAP; one `# Subtest: Suite` block per suite (indented 4, its own
          `KTAP version 1` and plan, its tests numbered from 1, each with a
          `# duration_ms N` diagnostic), then the suite's `# Suite: pass:..`
          line and its own `ok`/`not ok` line; `# Totals:` at the end. When the
          run did not end with the kernel's summary (bug check, watchdog,
          timeout, triple fault) or the kernel reported fewer tests than it
          planned, a last top-level `not ok` item, `spindle_run`, says so, so
          that no consumer reads a cut-off run as a pass.
  --xml   JUnit XML: <testsuites> with one <testsuite> per suite, one
          <testcase classname="Suite" name="case" time="s"> per test with
          <failure> or <skipped>; the item above becomes a failing testcase.

--verdict is the runner's last line (e.g. "bug check (qemu exit 37)"), used
in the incomplete-run item. Exit status 0, or 2 when the log is unreadable.
"""
import argparse
import re
import sys
from xml.sax.saxutils import escape, quoteattr

ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>78c]")
RESULT = re.compile(r"^(not ok|ok) (\d+) ([^:\s#]+):(\S+)(?:\s+#\s*(.*))?$")
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")
PLAN = re.compile(r"^1\.\.(\d+)$")
DURATION = re.compile(r"^# duration_ms (\d+)$")


class Test:
    def __init__(self, suite, name, status, directive, diagnostics, duration_ms):
        self.suite, self.name, self.status = suite, name, status  # pass | fail | skip
        self.directive, self.diagnostics, self.duration_ms = directive, diagnostics, duration_ms


def clean_lines(text):
    text = ESCAPES.sub("", text.replace("\r", ""))
    return [line.rstrip() for line in text.split("\n")]


def parse(lines):
    """The last run in the log: (tests, planned count or None, the summary's failure count or
    None without a summary line, stray lines, header diagnostics)."""
    start = max((i for i, line in enumerate(lines) if line.strip() == "KTAP version 1"),
                default=None)
    tests, planned, summary, pending, duration, header = [], None, None, [], None, []
    if start is None:
        return tests, planned, summary, [l for l in lines if l.strip()], header
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        m = RESULT.match(line)
        if m:
            ok, _number, suite, name, directive = m.groups()
            directive = directive or ""
            if ok == "ok" and directive.upper().startswith("SKIP"):
                status = "skip"
            else:
                status = "pass" if ok == "ok" else "fail"
            tests.append(Test(suite, name, status, directive, pending, duration))
            pending, duration = [], None
            continue
        m = DURATION.match(line)
        if m:
            duration = int(m.group(1))
            continue
        if PLAN.match(line) and planned is None and not tests:
            planned = int(PLAN.match(line).group(1))
            header, pending = pending, []
            continue
        if SUMMARY.match(line):
            summary = int(SUMMARY.match(line).group(2))  # the kernel's count of failures
            continue
        # A diagnostic (`# ...`) or anything else the kernel printed (a bug check report):
        # kept as a diagnostic of the test that follows, or of the run.
        pending.append(line[2:] if line.startswith("# ") else line.lstrip("#").strip()
                       if line.startswith("#") else line)
    return tests, planned, summary, pending, header


def suites_of(tests):
    order, suites = [], {}
    for test in tests:
        if test.suite not in suites:
            suites[test.suite] = []
            order.append(test.suite)
        suites[test.suite].append(test)
    return [(name, suites[name]) for name in order]


def counts(tests):
    return {s: sum(1 for t in tests if t.status == s) for s in ("pass", "fail", "skip")}


def incomplete_reason(tests, planned, summary, verdict):
    reasons = []
    if summary is None:
        reasons.append("the kernel printed no summary line")
    elif summary > sum(1 for t in tests if t.status == "fail"):
        reasons.append("the kernel counted %d failure(s), %d of them outside any test (a "
                       "selection matching nothing, a duplicate name)" % (
                           summary, summary - sum(1 for t in tests if t.status == "fail")))
    if planned is not None and len(tests) < planned:
        reasons.append("%d of %d planned tests reported" % (len(tests), planned))
    if planned is None:
        reasons.append("no KTAP plan in the log (the kernel did not reach the test suite)")
    if not reasons:
        return None
    if verdict:
        reasons.append("runner: " + verdict)
    return "; ".join(reasons)


def diag(text):
    return "# " + text if text else "#"


def write_ktap(path, tests, planned, summary, leftover, verdict, header):
    suites = suites_of(tests)
    reason = incomplete_reason(tests, planned, summary, verdict)
    out = ["KTAP version 1", "1..%d" % (len(suites) + (1 if reason else 0))]
    out += [diag(l) for l in header]
    for number, (suite, members) in enumerate(suites, 1):
        out += ["    KTAP version 1", "    # Subtest: " + suite, "    1..%d" % len(members)]
        for index, test in enumerate(members, 1):
            out += ["    " + diag(d) for d in test.diagnostics]
            out.append("    # duration_ms %d" % (test.duration_ms or 0))
            line = "%s %d %s" % ("not ok" if test.status == "fail" else "ok", index, test.name)
            if test.directive:
                line += " # " + test.directive
            out.append("    " + line)
        c = counts(members)
        out.append("# %s: pass:%d fail:%d skip:%d total:%d" %
                   (suite, c["pass"], c["fail"], c["skip"], len(members)))
        if c["fail"]:
            out.append("not ok %d %s" % (number, suite))
        elif c["skip"] == len(members):
            out.append("ok %d %s # SKIP" % (number, suite))
        else:
            out.append("ok %d %s" % (number, suite))
    if reason:
        out += [diag(l) for l in leftover]
        out.append("not ok %d spindle_run # %s" % (len(suites) + 1, reason.replace("#", "")))
    c = counts(tests)
    out.append("# Totals: pass:%d fail:%d skip:%d total:%d" %
               (c["pass"], c["fail"] + (1 if reason else 0), c["skip"],
                len(tests) + (1 if reason else 0)))
    with open(path, "w", newline="\n") as f:
        f.write("\n".join(out) + "\n")


def write_xml(path, tests, planned, summary, leftover, verdict):
    suites = suites_of(tests)
    reason = incomplete_reason(tests, planned, summary, verdict)
    if reason:
        suites.append(("spindle_run", [Test("spindle_run", "run_completed", "fail", reason,
                                             leftover, 0)]))
    c = counts(tests)
    total_failures = c["fail"] + (1 if reason else 0)
    total_time = sum((t.duration_ms or 0) for t in tests) / 1000.0
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<testsuites name="spindle" tests="%d" failures="%d" errors="0" skipped="%d" '
           'time="%.3f">' % (len(tests) + (1 if reason else 0), total_failures, c["skip"],
                             total_time)]
    for suite, members in suites:
        sc = counts(members)
        out.append('  <testsuite name=%s tests="%d" failures="%d" errors="0" skipped="%d" '
                   'time="%.3f">' % (quoteattr(suite), len(members), sc["fail"], sc["skip"],
                                     sum((t.duration_ms or 0) for t in members) / 1000.0))
        for test in members:
            out.append('    <testcase classname=%s name=%s time="%.3f">' %
                       (quoteattr(suite), quoteattr(test.name), (test.duration_ms or 0) / 1000.0))
            text = escape("\n".join(test.diagnostics))
            if test.status == "fail":
                message = test.directive or (test.diagnostics[-1] if test.diagnostics else
                                             "failed")
                out.append('      <failure message=%s>%s</failure>' % (quoteattr(message), text))
            elif test.status == "skip":
                out.append('      <skipped message=%s/>' %
                           quoteattr(re.sub(r"(?i)^skip\s*", "", test.directive)))
            if test.diagnostics and test.status != "fail":
                out.append('      <system-out>%s</system-out>' % text)
            out.append('    </testcase>')
        out.append('  </testsuite>')
    out.append('</testsuites>')
    with open(path, "w", newline="\n", encoding="utf-8") as f:
        f.write("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("--ktap")
    parser.add_argument("--xml")
    parser.add_argument("--verdict", default="")
    args = parser.parse_args()
    try:
        with open(args.log, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError as error:
        print("ktap-results: %s" % error, file=sys.stderr)
        return 2
    # Control characters other than tab would make the XML invalid.
    text = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]", "", text)
    tests, planned, summary, leftover, header = parse(clean_lines(text))
    if args.ktap:
        write_ktap(args.ktap, tests, planned, summary, leftover, args.verdict, header)
    if args.xml:
        write_xml(args.xml, tests, planned, summary, leftover, args.verdict)
    return 0


if __name__ == "__main__":
    sys.exit(main())
