/* SPDX-License-Identifier: MIT */
/*
 * The shared test helpers (tests/harness/helpers.c) test themselves: the
 * bounded waits return TRUE when the value arrives from another processor and
 * FALSE, after their bound and not before, when it never does (spinning at
 * DISPATCH_LEVEL, or halting at PASSIVE_LEVEL); the parameter-keeping
 * bug-check macro hands the four parameters back; the IRQL matrix visits
 * every level once.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"

#define KTH_SHORT_MS 50 // a bound meant to expire

KTEST(KtHelpers, now_ms_advances_with_a_stall)
{
    ULONG64 Start = KtNowMs();

    KeStallExecutionProcessor(20000);
    KT_EXPECT_GE(KtNowMs() - Start, 19);
}

/* The bound is honoured at the given IRQL: FALSE, and no sooner than TimeoutMs. */
static VOID
KthExpectTimeout(KIRQL Irql)
{
    volatile LONG Value = 0;
    volatile ULONG64 Word = 5;
    KIRQL Old;
    ULONG64 Start;

    KeRaiseIrql(Irql, &Old);
    Start = KtNowMs();
    KT_EXPECT(!KtWaitForLong(&Value, 1, KTH_SHORT_MS));
    KT_EXPECT_GE(KtNowMs() - Start, KTH_SHORT_MS);
    KT_EXPECT(!KtWaitForLongAtLeast(&Value, 1, KTH_SHORT_MS));
    KT_EXPECT(!KtWaitForWordChange(&Word, 5, KTH_SHORT_MS));
    KT_EXPECT_EQ(KeGetCurrentIrql(), Irql);
    KeLowerIrql(Old);
    KT_EXPECT(x86_interrupts_enabled());
}

KTEST(KtHelpers, waits_time_out_at_passive_and_dispatch)
{
    KthExpectTimeout(PASSIVE_LEVEL);
    KthExpectTimeout(DISPATCH_LEVEL);
}

KTEST(KtHelpers, waits_return_at_once_when_the_value_is_there)
{
    volatile LONG Value = 3;
    volatile ULONG_PTR Word = 7;

    KT_EXPECT(KtWaitForLong(&Value, 3, 0));
    KT_EXPECT(KtWaitForLongAtLeast(&Value, 2, 0));
    KT_EXPECT(KtWaitForWord(&Word, 7, 0));
}

typedef struct _KTH_HANDOFF
{
    volatile LONG Go;
    volatile LONG Count; // shares its 8-byte word with Go: the other half changes first
    volatile ULONG_PTR Word;
} KTH_HANDOFF;

static VOID
KthHandoffRoutine(ULONG Index, PVOID Context)
{
    KTH_HANDOFF *Test = Context;

    if (Index == 0)
    {
        KT_EXPECT(KtWaitForLongAtLeast(&Test->Count, 3, KT_WAIT_MS));
        KT_EXPECT(KtWaitForWord(&Test->Word, 0x1234, KT_WAIT_MS));
        __atomic_store_n(&Test->Go, 1, __ATOMIC_RELEASE);
        return;
    }
    for (LONG i = 0; i < 3; i++)
    {
        KeStallExecutionProcessor(5000);
        __atomic_add_fetch(&Test->Count, 1, __ATOMIC_RELEASE);
    }
    KeStallExecutionProcessor(5000);
    __atomic_store_n(&Test->Word, 0x1234, __ATOMIC_RELEASE);
    KT_EXPECT(KtWaitForLong(&Test->Go, 1, KT_WAIT_MS));
}

KTEST_EX(KtHelpers, waits_see_another_processors_stores, KTEST_SMP_ONLY, 0)
{
    KTH_HANDOFF Test = {0};

    KtRunOnProcessors(2, KthHandoffRoutine, &Test);
    KT_EXPECT_EQ(Test.Count, 3);
    KT_EXPECT_EQ(Test.Go, 1);
}

KTEST(KtHelpers, expect_bugcheck_params_hands_back_the_parameters)
{
    ULONG_PTR Params[4] = {9, 9, 9, 9};

    KT_EXPECT_BUGCHECK_PARAMS(MANUALLY_INITIATED_CRASH, Params,
                              KeBugCheckEx(MANUALLY_INITIATED_CRASH, 1, 2, 3, 4));
    KT_EXPECT_EQ(Params[0], 1);
    KT_EXPECT_EQ(Params[1], 2);
    KT_EXPECT_EQ(Params[2], 3);
    KT_EXPECT_EQ(Params[3], 4);
}

/* Records each call of the matrix: which check, at which IRQL, with what. */
typedef struct _KTH_MATRIX_LOG
{
    ULONG Calls;
    KIRQL Entry[8];
    KIRQL Irql[8];
    ULONG Value[8]; // Held for a pair, Code for a misuse
    BOOLEAN Misuse[8];
} KTH_MATRIX_LOG;

static VOID
KthLog(KTH_MATRIX_LOG *Log, KIRQL Entry, ULONG Value, BOOLEAN Misuse)
{
    if (Log->Calls < 8)
    {
        Log->Entry[Log->Calls] = Entry;
        Log->Irql[Log->Calls] = KeGetCurrentIrql();
        Log->Value[Log->Calls] = Value;
        Log->Misuse[Log->Calls] = Misuse;
    }
    Log->Calls++;
}

static VOID
KthPair(const void *Context, KIRQL Entry, KIRQL Held)
{
    KthLog((KTH_MATRIX_LOG *)(ULONG_PTR)Context, Entry, Held, FALSE);
}

static VOID
KthMisuse(const void *Context, KIRQL Entry, ULONG Code)
{
    KthLog((KTH_MATRIX_LOG *)(ULONG_PTR)Context, Entry, Code, TRUE);
}

KTEST(KtHelpers, irql_matrix_visits_every_level_once)
{
    static const KT_IRQL_MATRIX Matrix = {
        .Name = "APC..DISPATCH",
        .MinIrql = APC_LEVEL,
        .MaxIrql = DISPATCH_LEVEL,
        .HeldIrql = KT_IRQL_UNCHANGED,
        .LowCode = 0x111,
        .HighCode = 0x222,
        .FreeHighHeld = DISPATCH_LEVEL,
    };
    KTH_MATRIX_LOG Log = {0};

    KtRunIrqlMatrix(&Matrix, KthPair, KthMisuse, &Log);
    KT_ASSERT_EQ(Log.Calls, 4);
    for (ULONG i = 0; i < 4; i++)
    {
        KT_EXPECT_EQ(Log.Irql[i], Log.Entry[i]); // each check runs at its entry IRQL
    }
    KT_EXPECT_EQ(Log.Entry[0], PASSIVE_LEVEL);
    KT_EXPECT_EQ(Log.Entry[1], APC_LEVEL);
    KT_EXPECT_EQ(Log.Entry[2], DISPATCH_LEVEL);
    KT_EXPECT_EQ(Log.Entry[3], HIGH_LEVEL);
    KT_EXPECT(!Log.Misuse[1] && Log.Value[1] == APC_LEVEL);
    KT_EXPECT(!Log.Misuse[2] && Log.Value[2] == DISPATCH_LEVEL);
#if DBG
    KT_EXPECT(Log.Misuse[0] && Log.Value[0] == 0x111);
    KT_EXPECT(Log.Misuse[3] && Log.Value[3] == 0x222);
#else
    KT_EXPECT(!Log.Misuse[0] && Log.Value[0] == PASSIVE_LEVEL);
    KT_EXPECT(!Log.Misuse[3] && Log.Value[3] == DISPATCH_LEVEL);
#endif
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}
