/* SPDX-License-Identifier: MIT */
/*
 * Harness-internal interfaces between the runner, the watchdog and the
 * multi-processor helpers.
 */
#pragma once

#include <ktest.h>

const KTEST_CASE *KtCurrentTest(VOID);

/*
 * Runs the selected tests and ends the run (the workload the harness registers
 * with KI_STARTUP_WORKLOAD). Boot processor, PASSIVE_LEVEL, interrupts on.
 */
VOID KtRunTestSuite(PCSTR CommandLine);

/* Per processor (by number): where KtAbort jumps, NULL outside a test routine. */
extern KT_JMP_BUF *KtAbortJump[MAXIMUM_PROCESSORS];

/* Arms the watchdog for Test's budget; KtWatchdogStop disarms it. */
VOID KtWatchdogStart(const KTEST_CASE *Test);
VOID KtWatchdogStop(VOID);

/*
 * The number in Key= on the kernel command line, or Default when absent. A
 * malformed or out-of-range value fails the run before any test (or, for a key
 * the harness does not know, the calling test).
 */
ULONG64 KtCommandLineValue(const char *Key, ULONG64 Default);

/*
 * Checks every numeric option the harness knows (seed, repeat, verbose, smp,
 * bench, bench_ms, bench_windows, bench_reps, bench_cs, bench_ncs, torture,
 * duration, faults) against its range, and the
 * tests= patterns. Prints a "# command line:" line for each bad value and
 * returns FALSE if there is one. The runner calls it before any test runs.
 */
BOOLEAN KtCheckCommandLine(PCSTR CommandLine);

/* The -smp count from smp= on the kernel command line; skips the test when it is absent. */
ULONG KtExpectedProcessorCount(VOID);

/* Sets the current test's failure count to Count and returns the previous count. */
LONG KtExchangeFailures(LONG Count);

/* Marks the running test "not ok" and prints the summary, counting it failed. */
VOID KtReportWatchdog(VOID);
