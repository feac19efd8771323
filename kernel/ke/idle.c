/* SPDX-License-Identifier: MIT */
/*
 * The idle loop every secondary processor ends in, and the one-slot work
 * hand-off through which others give it something to run at PASSIVE_LEVEL
 * (the test harness runs its multi-processor tests through it). Protocol per processor:
 *   IdleWorkBusy 0 -> 1   claimed by KiQueueIdleWork (compare-exchange)
 *   IdleWorkRoutine set   published with release; the target is woken by an IPI
 *   routine runs          on the target, at PASSIVE_LEVEL, interrupts on
 *   Routine = NULL, IdleWorkBusy = 0   released by the target when the routine returns
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

VOID
KiIdleLoop(VOID)
{
    PKPRCB Prcb = KeGetCurrentPrcb();

    for (;;)
    {
        KI_IDLE_WORK_ROUTINE *Routine;

        /* Check with interrupts off; sti;hlt then sleeps without missing the wake-up IPI. */
        x86_cli();
        Routine =
            __atomic_load_n(&Prcb->IdleWorkRoutine, __ATOMIC_ACQUIRE); // pairs with the publish
        if (Routine == NULL)
        {
            KiSetClockIdle(TRUE); // nothing to run: the slow idle tick (ke/clock.c)
            x86_sti_hlt();
            continue;
        }
        KiSetClockIdle(FALSE);
        x86_sti();
        Routine(Prcb->IdleWorkContext);
        Prcb->IdleWorkRoutine = NULL;
        __atomic_store_n(&Prcb->IdleWorkBusy, 0, __ATOMIC_RELEASE); // the slot may be reused
    }
}

BOOLEAN
KiQueueIdleWork(ULONG Number, KI_IDLE_WORK_ROUTINE *Routine, PVOID Context)
{
    PKPRCB Prcb;
    LONG Free = 0;

    if (Number >= KiActiveProcessorCount)
    {
        return FALSE;
    }
    Prcb = KiGetPrcb(Number);
    if (!Prcb->Online || !__atomic_compare_exchange_n(&Prcb->IdleWorkBusy, &Free, 1, FALSE,
                                                      __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    {
        return FALSE;
    }
    Prcb->IdleWorkContext = Context;
    /* Release: the context is visible before the routine the idle loop polls. */
    __atomic_store_n(&Prcb->IdleWorkRoutine, Routine, __ATOMIC_RELEASE);
    HalSendIpi(Prcb->ApicId, KI_VECTOR_IPI);
    return TRUE;
}
