/* SPDX-License-Identifier: MIT */
/*
 * Bench: what the files of `make bench` (tests/bench/) share. The tests of the
 * suite Bench skip unless the kernel command line holds `bench=1`, so `make
 * test` never spends time on them. Every figure is printed as one line in the
 * format of the Linux peer module `lockbench` (see bench.c), which the host
 * side (scripts/bench-report.py) turns into a report, JSON and plots.
 */
#pragma once

#include <wdm.h>

#include <ktest.h>

#include "arch/x86_64/x86.h"

#define BENCH_ALIGN       128 // hot objects two cache lines apart, as in the peer module
#define BENCH_MAX_CPUS    64
#define BENCH_MAX_REPS    31
#define BENCH_MAX_WINDOWS 9

/*
 * The halves of a called reference lock (raw_xchg_called, virt_tas_called,
 * raw_mcs_called):
 * out of line, and on a page of their own (linker.ld), as a lock API is to its
 * callers. Under TCG a jump or call to the page its block started on is
 * chained straight to the translated target, while one to another page is
 * looked up at run time, as every `ret` is; a half that shared its caller's
 * page would show a floor no lock API called from a driver reaches.
 */
#define BENCH_CALLED __attribute__((noinline, section(".bench_called")))

/*
 * A timed loop's function (every uncontended row, every contended loop): out
 * of line, and aligned so that one of at most 256 bytes (all but one of them
 * today) cannot cross a page boundary. Under TCG a loop whose code crosses
 * one is not chained back to its start but looked up on every turn: one
 * build put atomic_xadd's loop across a boundary and the row read 51 cycles
 * instead of 19. scripts/tcg-jump-cache.py reports any loop that still does.
 */
#define BENCH_TIMED __attribute__((noinline, aligned(256)))

/* The run's parameters, read from the kernel command line by BenchEnter. */
typedef struct _BENCH_CONFIG
{
    ULONG64 WindowMs;  // bench_ms=: one contended window (default 200, the module's dur_ms)
    ULONG Windows;     // bench_windows=: contended windows per row, the median is reported (3)
    ULONG Reps;        // bench_reps=: timed uncontended batches per row (15)
    ULONG CsWork;      // bench_cs=: empty-loop iterations inside the critical section (0)
    ULONG NcsWork;     // bench_ncs=: empty-loop iterations after the release (0)
    ULONG64 Frequency; // TSC counts per second, measured by the bench (bench.c)
    ULONG64 KernelFrequency; // the same as the kernel calibrated it (KeQueryPerformanceCounter)
    ULONG64 KHz;             // the same in kHz, as the module's tsc_khz
    BOOLEAN HaveRdtscp;      // CPUID 0x80000001 EDX bit 27
    ULONG Processors;        // active processors (at most BENCH_MAX_CPUS)
} BENCH_CONFIG;

extern BENCH_CONFIG BenchConfig;

/* Skips the calling test unless bench=1 is on the command line; fills BenchConfig. */
VOID BenchEnter(VOID);

/* The start and end of a timed region: serialising TSC reads (arch/x86_64/x86.h). */
ULONG64 BenchTscBegin(VOID);
ULONG64 BenchTscEnd(VOID);

/* Formats Hundredths (a value x 100) as "I.FF" into Buffer; returns Buffer. */
const char *BenchFixed(char *Buffer, size_t Size, ULONG64 Hundredths);

/* Sorts Count values in place, smallest first. */
VOID BenchSortU64(ULONG64 *Values, ULONG Count);

/* Spins Count empty iterations the compiler keeps (the module's busy()). */
static inline VOID
BenchBusy(ULONG Count)
{
    for (ULONG I = 0; I < Count; I++)
    {
        x86_compiler_barrier();
    }
}

/* The tag every lockbench line carries: the -smp count, so runs can be told apart. */
const char *BenchTag(VOID);
