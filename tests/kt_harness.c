/* SPDX-License-Identifier: MIT */
/*
 * The harness tests itself: KT_EXPECT_BUGCHECK catches the right code and
 * restores IRQL and the interrupt flag, a missing bug check is a failure,
 * exceptions become bug checks, and KtRunOnProcessors runs each index once on
 * its own processor.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

KTEST(KtHarness, expect_bugcheck_catches_the_expected_code)
{
    KT_EXPECT_BUGCHECK(MANUALLY_INITIATED_CRASH,
                       KeBugCheckEx(MANUALLY_INITIATED_CRASH, 1, 2, 3, 4));
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT(x86_interrupts_enabled());
}

KTEST(KtHarness, expect_bugcheck_restores_irql_and_interrupt_flag)
{
    KIRQL Old;
    KeRaiseIrql(APC_LEVEL, &Old);
    KT_EXPECT_BUGCHECK(MANUALLY_INITIATED_CRASH, {
        KIRQL Ignored;
        KeRaiseIrql(HIGH_LEVEL, &Ignored);
        x86_cli();
        KeBugCheck(MANUALLY_INITIATED_CRASH);
    });
    KT_EXPECT_EQ(KeGetCurrentIrql(), APC_LEVEL);
    KT_EXPECT(x86_interrupts_enabled());
    KeLowerIrql(Old);
}

KTEST(KtHarness, expect_bugcheck_without_a_bugcheck_is_a_failure)
{
    LONG Before = KtExchangeFailures(0);
    KtLog("the failure line that follows is deliberate");
    KT_EXPECT_BUGCHECK(MANUALLY_INITIATED_CRASH, (void)0);
    LONG Recorded = KtExchangeFailures(Before); // put back the real count
    KT_EXPECT_EQ(Recorded, 1);
}

KTEST(KtHarness, failed_expectations_are_counted)
{
    LONG Before = KtExchangeFailures(0);
    KtLog("the three failure lines that follow are deliberate");
    KT_EXPECT_EQ(1, 2);
    KT_EXPECT(0);
    KT_EXPECT_NE(3, 3);
    LONG Recorded = KtExchangeFailures(Before);
    KT_EXPECT_EQ(Recorded, 3);
}

static VOID
InnerExpectThenBugCheck(VOID)
{
    KT_EXPECT_BUGCHECK(SPIN_LOCK_ALREADY_OWNED, KeBugCheck(SPIN_LOCK_ALREADY_OWNED));
    KeBugCheck(SPIN_LOCK_NOT_OWNED);
}

KTEST(KtHarness, nested_expect_bugcheck_catches_innermost)
{
    KT_EXPECT_BUGCHECK(SPIN_LOCK_NOT_OWNED, InnerExpectThenBugCheck());
}

KTEST(KtHarness, null_dereference_is_a_page_fault)
{
    volatile int *Null = NULL;
    KT_EXPECT_BUGCHECK(PAGE_FAULT_IN_NONPAGED_AREA, *Null = 1);
}

KTEST(KtHarness, unmapped_access_is_a_page_fault)
{
    volatile ULONG64 *Unmapped = (volatile ULONG64 *)0x00007fff00000000ull;
    KT_EXPECT_BUGCHECK(PAGE_FAULT_IN_NONPAGED_AREA, (void)*Unmapped);
}

KTEST(KtHarness, invalid_opcode_is_kmode_exception)
{
    KT_EXPECT_BUGCHECK(KMODE_EXCEPTION_NOT_HANDLED, x86_ud2());
}

static volatile LONG Divisor = 0;

KTEST(KtHarness, divide_error_is_kmode_exception)
{
    volatile LONG Result = 0;
    KT_EXPECT_BUGCHECK(KMODE_EXCEPTION_NOT_HANDLED, Result = 7 / Divisor);
    (void)Result;
}

typedef struct _RUN_RECORD
{
    volatile LONG IndexRuns[MAXIMUM_PROCESSORS];
    volatile ULONG ProcessorOf[MAXIMUM_PROCESSORS];
    volatile LONG NotPassive;
} RUN_RECORD;

static VOID
RecordIndex(ULONG Index, PVOID Context)
{
    RUN_RECORD *Record = Context;
    InterlockedIncrement(&Record->IndexRuns[Index]);
    Record->ProcessorOf[Index] = KeGetCurrentProcessorNumber();
    if (KeGetCurrentIrql() != PASSIVE_LEVEL)
    {
        InterlockedIncrement(&Record->NotPassive);
    }
}

KTEST(KtHarness, run_on_processors_runs_each_index_once_on_its_own_processor)
{
    static RUN_RECORD Record;
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    memset((PVOID)&Record, 0, sizeof(Record));
    KtRunOnProcessors(0, RecordIndex, &Record);
    for (ULONG i = 0; i < Count; i++)
    {
        KT_EXPECT_EQ(Record.IndexRuns[i], 1);
        KT_EXPECT_EQ(Record.ProcessorOf[i], i);
    }
    KT_EXPECT_EQ(Record.NotPassive, 0);
}

/* Every value on the command line is checked: malformed or out of range is refused. */
KTEST(KtHarness, command_line_values_are_checked_strictly)
{
    static const char *const Good[] = {
        "tests= seed=1 repeat=1 verbose=0 smp=8",
        "tests=Ke*,Ex:* seed=0xffffffffffffffff repeat=1000000 verbose=1 smp=64",
        "bench=1 bench_ms=10 torture=1 duration=3000 faults=0 pool=special",
        "bench_windows=9 bench_reps=5 bench_cs=0 bench_ncs=1000000",
        "",
    };
    static const char *const Bad[] = {
        "repeat=0",
        "repeat=abc",
        "repeat=",
        "seed=-1",
        "seed=abc",
        "seed=1x",
        "verbose=2",
        "verbose",
        "smp=0",
        "smp=65",
        "bench_ms=9",
        "bench_ms=5001",
        "bench_windows=2",
        "bench_reps=32",
        "bench_cs=1000001",
        "duration=4",
        "duration=3001",
        "faults=2",
        "tests=a,,b",
        "tests=a,",
        "tests=,a",
        "seed=1 repeat=1 seed=18446744073709551616",
    };

    for (ULONG i = 0; i < sizeof(Good) / sizeof(Good[0]); i++)
    {
        if (!KtCheckCommandLine(Good[i]))
        {
            KtLog("refused \"%s\"", Good[i]);
            KT_EXPECT(KtCheckCommandLine(Good[i]));
        }
    }
    for (ULONG i = 0; i < sizeof(Bad) / sizeof(Bad[0]); i++)
    {
        if (KtCheckCommandLine(Bad[i]))
        {
            KtLog("accepted \"%s\"", Bad[i]);
            KT_EXPECT(!KtCheckCommandLine(Bad[i]));
        }
    }
}
