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

/* The number in Key= on the kernel command line, or Default when absent or malformed. */
ULONG64 KtCommandLineValue(const char *Key, ULONG64 Default);

/* The -smp count from smp= on the kernel command line; skips the test when it is absent. */
ULONG KtExpectedProcessorCount(VOID);

/* Sets the current test's failure count to Count and returns the previous count. */
LONG KtExchangeFailures(LONG Count);

/* Marks the running test "not ok" and prints the summary, counting it failed. */
VOID KtReportWatchdog(VOID);
