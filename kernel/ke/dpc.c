/* SPDX-License-Identifier: MIT */
/*
 * Deferred procedure calls, API.md §5. Each processor has a DPC queue
 * (KPRCB DpcData[DPC_NORMAL]; threaded DPCs run as normal DPCs) guarded by its
 * DpcLock, taken with interrupts off so any IRQL may insert. Dpc->DpcData is
 * non-NULL exactly while the DPC is queued and names the queue it is on:
 *   claim    compare-exchange DpcData NULL -> queue, under the target's lock
 *   unlink   under that queue's lock; DpcData = NULL before the routine runs,
 *            so a routine may queue itself again
 * Inserting always requests DISPATCH_LEVEL on the target: a self-IPI on this
 * processor, an IPI on another (project choice, API.md §5).
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

/* Dpc->Number holds target + MAXIMUM_PROCESSORS, or 0 for "the inserting processor". */
#define DPC_TARGET_ANY 0

/* The queue's lock; callers have interrupts off, so any IRQL may insert. */
static VOID
KiAcquireDpcLock(PKDPC_DATA DpcData)
{
    KiAcquireSpinLock(&DpcData->DpcLock);
}

static VOID
KiReleaseDpcLock(PKDPC_DATA DpcData)
{
    KiReleaseSpinLock(&DpcData->DpcLock);
}

static VOID
KiInitializeDpcObject(PRKDPC Dpc, UCHAR Type, PKDEFERRED_ROUTINE Routine, PVOID Context)
{
    Dpc->Type = Type;
    Dpc->Importance = MediumImportance;
    Dpc->Number = DPC_TARGET_ANY;
    Dpc->DeferredRoutine = Routine;
    Dpc->DeferredContext = Context;
    Dpc->DpcData = NULL;
}

/*
 * Runs every DPC queued on Prcb, the current processor's, oldest first (High
 * importance ones were put at the head). DISPATCH_LEVEL, interrupts on.
 */
static VOID
KiRetireDpcList(PKPRCB Prcb)
{
    PKDPC_DATA DpcData = &Prcb->DpcData[DPC_NORMAL];

    Prcb->DpcRoutineActive = TRUE;
    for (;;)
    {
        ULONG64 Flags = x86_save_disable();
        PLIST_ENTRY Entry;
        PKDPC Dpc;
        PKDEFERRED_ROUTINE Routine;
        PVOID DeferredContext;
        PVOID Argument1;
        PVOID Argument2;

        KiAcquireDpcLock(DpcData);
        if (IsListEmpty(&DpcData->DpcListHead))
        {
            KiReleaseDpcLock(DpcData);
            x86_restore_flags(Flags);
            break;
        }
        Entry = RemoveHeadList(&DpcData->DpcListHead);
        Dpc = CONTAINING_RECORD(Entry, KDPC, DpcListEntry);
        Routine = Dpc->DeferredRoutine;
        DeferredContext = Dpc->DeferredContext;
        Argument1 = Dpc->SystemArgument1;
        Argument2 = Dpc->SystemArgument2;
        DpcData->DpcQueueDepth--;
        DpcData->DpcCount++;
        /* Release: the copies above are complete before the DPC may be queued again. */
        __atomic_store_n(&Dpc->DpcData, NULL, __ATOMIC_RELEASE);
        KiReleaseDpcLock(DpcData);
        x86_restore_flags(Flags);

        if (Routine != NULL)
        {
            Routine(Dpc, DeferredContext, Argument1, Argument2);
        }
        /* The routine returned at DISPATCH_LEVEL; P1 packs (current << 8) | expected. */
        KiCheck(HalGetCurrentIrql() == DISPATCH_LEVEL, IRQL_UNEXPECTED_VALUE,
                ((ULONG_PTR)HalGetCurrentIrql() << 8) | 2, Routine, Dpc, 0);
    }
    Prcb->DpcRoutineActive = FALSE;
    /*
     * A pass is over: tell KeFlushQueuedDpcs (locked add + wake, ke/wait.c).
     * The add is a full barrier, so DpcRoutineActive = FALSE and the depth are
     * visible before the new sequence number.
     */
    KiWaitIncrementAndWake(&Prcb->DpcDrainSequence);
}

/*
 * The DISPATCH_LEVEL software interrupt (KI_VECTOR_DPC), as in NT: drains this
 * processor's DPC queue. Entered through KiDispatchVector at DISPATCH_LEVEL
 * with interrupts on.
 */
static VOID
KiDispatchInterrupt(struct x86_trap_frame *Frame, PVOID Context)
{
    KiRetireDpcList(KeGetCurrentPrcb());
}

/* Requests DISPATCH_LEVEL on processor Number, so that it drains its queue. */
static VOID
KiRequestDispatchInterrupt(ULONG Number)
{
    PKPRCB Prcb = KeGetCurrentPrcb();

    if (Number == Prcb->Number)
    {
        HalRequestSelfInterrupt(KI_VECTOR_DPC);
    }
    else
    {
        HalSendIpi(KiGetPrcb(Number)->ApicId, KI_VECTOR_DPC);
    }
}

/* Empties every processor's DPC queues (before any processor starts) and connects the vector. */
INIT_CODE VOID
KiInitializeDpc(VOID)
{
    for (ULONG Number = 0; Number < MAXIMUM_PROCESSORS; Number++)
    {
        PKPRCB Prcb = KiGetPrcb(Number);
        for (int i = 0; i < 2; i++)
        {
            InitializeListHead(&Prcb->DpcData[i].DpcListHead);
            Prcb->DpcData[i].DpcLock = 0;
            Prcb->DpcData[i].DpcQueueDepth = 0;
        }
    }
    KiConnectVector(KI_VECTOR_DPC, KiDispatchInterrupt, NULL);
}

/*
 * Initialises Dpc: Type = DpcObject, Importance = MediumImportance, Number = 0
 * (the inserting processor), the routine and context, DpcData = NULL;
 * DpcListEntry and SystemArgument1/2 are not touched. Any IRQL.
 */
VOID
KeInitializeDpc(PRKDPC Dpc, PKDEFERRED_ROUTINE DeferredRoutine, PVOID DeferredContext)
{
    KiInitializeDpcObject(Dpc, DpcObject, DeferredRoutine, DeferredContext);
}

/* Threaded DPCs run as ordinary DPCs at DISPATCH_LEVEL (there are no threads). Any IRQL. */
VOID
KeInitializeThreadedDpc(PRKDPC Dpc, PKDEFERRED_ROUTINE DeferredRoutine, PVOID DeferredContext)
{
    KiInitializeDpcObject(Dpc, ThreadedDpcObject, DeferredRoutine, DeferredContext);
}

/*
 * Queues Dpc on its target processor with the two arguments and requests
 * DISPATCH_LEVEL there. Any IRQL. TRUE if queued; FALSE if it already was, in
 * which case the arguments stored by the first insert are kept.
 */
BOOLEAN
KeInsertQueueDpc(PRKDPC Dpc, PVOID SystemArgument1, PVOID SystemArgument2)
{
    ULONG64 Flags = x86_save_disable();
    PKPRCB Current = KeGetCurrentPrcb();
    USHORT Number = Dpc->Number;
    ULONG Target =
        Number >= MAXIMUM_PROCESSORS ? (ULONG)Number - MAXIMUM_PROCESSORS : Current->Number;
    PKDPC_DATA DpcData = &KiGetPrcb(Target)->DpcData[DPC_NORMAL];
    PVOID Expected = NULL;

    KiAcquireDpcLock(DpcData);
    /* The claim is the "already queued?" test; a remover or drain of another queue
     * sees either NULL or this queue, never a half-inserted DPC (it takes this lock). */
    if (!__atomic_compare_exchange_n(&Dpc->DpcData, &Expected, DpcData, FALSE, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE))
    {
        KiReleaseDpcLock(DpcData);
        x86_restore_flags(Flags);
        return FALSE;
    }
    Dpc->SystemArgument1 = SystemArgument1;
    Dpc->SystemArgument2 = SystemArgument2;
    if (Dpc->Importance == HighImportance)
    {
        InsertHeadList(&DpcData->DpcListHead, &Dpc->DpcListEntry);
    }
    else
    {
        InsertTailList(&DpcData->DpcListHead, &Dpc->DpcListEntry);
    }
    DpcData->DpcQueueDepth++;
    KiReleaseDpcLock(DpcData);

    KiRequestDispatchInterrupt(Target);
    x86_restore_flags(Flags);
    return TRUE;
}

/*
 * Unqueues Dpc if it is queued. Any IRQL. TRUE if it was and now will not run;
 * FALSE if it was not queued (or is already running: this does not wait).
 */
BOOLEAN
KeRemoveQueueDpc(PRKDPC Dpc)
{
    ULONG64 Flags = x86_save_disable();
    PKDPC_DATA DpcData = __atomic_load_n(&Dpc->DpcData, __ATOMIC_ACQUIRE);
    BOOLEAN Removed = FALSE;

    if (DpcData != NULL)
    {
        KiAcquireDpcLock(DpcData);
        /* Still on that queue? A drain may have taken it before we got the lock. */
        if (Dpc->DpcData == DpcData)
        {
            RemoveEntryList(&Dpc->DpcListEntry);
            DpcData->DpcQueueDepth--;
            __atomic_store_n(&Dpc->DpcData, NULL, __ATOMIC_RELEASE);
            Removed = TRUE;
        }
        KiReleaseDpcLock(DpcData);
    }
    x86_restore_flags(Flags);
    return Removed;
}

/* Later inserts target processor Number; ignored when Number >= the active count. Any IRQL. */
VOID
KeSetTargetProcessorDpc(PRKDPC Dpc, CCHAR Number)
{
    if ((UCHAR)Number < KiActiveProcessorCount)
    {
        Dpc->Number = (USHORT)((UCHAR)Number + MAXIMUM_PROCESSORS);
    }
}

/* Sets the importance used by later inserts (High goes to the queue head). Any IRQL. */
VOID
KeSetImportanceDpc(PRKDPC Dpc, KDPC_IMPORTANCE Importance)
{
    Dpc->Importance = (UCHAR)Importance;
}

/* KeFlushQueuedDpcs's watch: a line every KI_FLUSH_REPORT_MS while one processor is waited for. */
#define KI_FLUSH_REPORT_MS 10000

typedef struct _KI_FLUSH_WATCH
{
    KI_WAIT_WATCH Watch;
    ULONG Number;
    ULONG64 Next; // performance counter of the next report
    ULONG64 Interval;
} KI_FLUSH_WATCH;

static VOID
KiFlushWatchCheck(KI_WAIT_WATCH *Watch)
{
    KI_FLUSH_WATCH *Flush = CONTAINING_RECORD(Watch, KI_FLUSH_WATCH, Watch);
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart;

    if (Now >= Flush->Next)
    {
        DbgPrint("Spindle: KeFlushQueuedDpcs still waiting for processor %u\n", Flush->Number);
        Flush->Next = Now + Flush->Interval;
    }
}

/*
 * Returns once every DPC queued before the call, on every processor, has run.
 * PASSIVE_LEVEL. Waits with KiWaitForChange (spin, then halt) on each
 * processor's DpcDrainSequence, which every pass of its DPC drain bumps; any
 * state the flush waits for is reached inside such a pass, since a queued DPC
 * always has a drain request outstanding. Prints a line (and keeps waiting)
 * if a processor takes very long, so a stuck DPC is visible rather than a
 * silent hang.
 */
VOID
KeFlushQueuedDpcs(VOID)
{
    LARGE_INTEGER Frequency;
    KI_FLUSH_WATCH Watch;

    KiCheckIrqlAtMost(PASSIVE_LEVEL, 0);
    Watch.Watch.Check = KiFlushWatchCheck;
    (void)KeQueryPerformanceCounter(&Frequency);
    Watch.Interval = (ULONG64)Frequency.QuadPart / 1000 * KI_FLUSH_REPORT_MS;

    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        PKPRCB Prcb = KiGetPrcb(Number);

        if (!Prcb->Online)
        {
            continue;
        }
        if (Prcb->DpcData[DPC_NORMAL].DpcQueueDepth != 0)
        {
            KiRequestDispatchInterrupt(Number);
        }
        Watch.Number = Number;
        Watch.Next = (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart + Watch.Interval;
        for (;;)
        {
            /* Sequence first (acquire), then the state: a pass ending after this read bumps it. */
            ULONG_PTR Sequence = __atomic_load_n(&Prcb->DpcDrainSequence, __ATOMIC_ACQUIRE);

            if (__atomic_load_n(&Prcb->DpcData[DPC_NORMAL].DpcQueueDepth, __ATOMIC_ACQUIRE) == 0 &&
                !__atomic_load_n(&Prcb->DpcRoutineActive, __ATOMIC_ACQUIRE))
            {
                break;
            }
            KiWaitForChange(&Prcb->DpcDrainSequence, Sequence, 0, &Watch.Watch);
        }
    }
}
