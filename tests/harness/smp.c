/* SPDX-License-Identifier: MIT */
/*
 * KtRunOnProcessors: runs a test routine on several processors at once.
 * Processor k runs Index k; the caller (processor 0, where tests run) takes
 * Index 0 itself and hands the others to their idle loops. All start together
 * after a barrier, at PASSIVE_LEVEL. A routine that hangs is the watchdog's.
 * Both gates wait with the kernel's KiWaitForChange (spin, then halt), so
 * processors that wait give their host time to the ones still working.
 */
#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

/* Retries while a processor's idle slot is still being released by the previous run. */
#define KT_QUEUE_RETRY_LIMIT (1u << 24)

typedef struct _KT_RUN
{
    KT_PROCESSOR_ROUTINE *Routine;
    PVOID Context;
    ULONG_PTR Count;
    volatile ULONG_PTR Arrived;  // barrier
    volatile ULONG_PTR Open;     // 0 -> 1 by the last to arrive
    volatile ULONG_PTR Finished; // routines that returned
} KT_RUN;

static VOID
KtRunHere(ULONG Index, KT_RUN *Run)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    KT_JMP_BUF *PreviousAbort = KtAbortJump[Prcb->Number];
    KT_JMP_BUF Abort;

    /* The last to arrive opens the gate (release; the waiters' reads acquire). */
    if (__atomic_add_fetch(&Run->Arrived, 1, __ATOMIC_ACQ_REL) == Run->Count)
    {
        KiWaitSetAndWake(&Run->Open, 1);
    }
    KiWaitForChange(&Run->Open, 0, 0, NULL);

    KtAbortJump[Prcb->Number] = &Abort;
    if (x86_setjmp(&Abort) == 0)
    {
        Run->Routine(Index, Run->Context);
    }
    KtAbortJump[Prcb->Number] = PreviousAbort;

    if (KeGetCurrentIrql() != PASSIVE_LEVEL)
    {
        KtFail("the routine returned at PASSIVE_LEVEL", __FILE__, __LINE__);
        KtLog("processor %u: routine for index %u returned at IRQL %u", Prcb->Number, Index,
              KeGetCurrentIrql());
        KeLowerIrql(PASSIVE_LEVEL);
    }
    if (!x86_interrupts_enabled())
    {
        KtFail("the routine returned with interrupts enabled", __FILE__, __LINE__);
        x86_sti();
    }
    /* Release (locked add): everything the routine wrote is visible before the caller sees it. */
    KiWaitIncrementAndWake(&Run->Finished);
}

static VOID
KtIdleEntry(PVOID Context)
{
    KtRunHere(KeGetCurrentPrcb()->Number, Context);
}

VOID
KtRunOnProcessors(ULONG Count, KT_PROCESSOR_ROUTINE *Routine, PVOID Context)
{
    static char Why[64];
    KT_RUN Run = {Routine, Context, 0, 0, 0, 0};

    if (Count == 0)
    {
        Count = KiActiveProcessorCount;
    }
    if (Count > KiActiveProcessorCount)
    {
        snprintf(Why, sizeof(Why), "needs %u processors, %u online", Count, KiActiveProcessorCount);
        KtSkip(Why);
    }
    KT_ASSERT_EQ(KeGetCurrentProcessorNumber(), 0);
    KT_ASSERT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    Run.Count = Count;

    for (ULONG Number = 1; Number < Count; Number++)
    {
        ULONG Retry = 0;
        while (!KiQueueIdleWork(Number, KtIdleEntry, &Run))
        {
            if (++Retry == KT_QUEUE_RETRY_LIMIT)
            {
                KtLog("processor %u did not take work; it is busy or offline", Number);
                KtFail("KiQueueIdleWork succeeded", __FILE__, __LINE__);
                /* Stand in for it so the barrier opens; its index does not run. */
                if (__atomic_add_fetch(&Run.Arrived, 1, __ATOMIC_ACQ_REL) == Run.Count)
                {
                    KiWaitSetAndWake(&Run.Open, 1);
                }
                KiWaitIncrementAndWake(&Run.Finished);
                break;
            }
            x86_pause();
        }
    }
    KtRunHere(0, &Run);
    for (ULONG_PTR Finished = __atomic_load_n(&Run.Finished, __ATOMIC_ACQUIRE);
         Finished < Run.Count;)
    {
        Finished = KiWaitForChange(&Run.Finished, Finished, 0, NULL);
    }
}
