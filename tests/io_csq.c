/* SPDX-License-Identifier: MIT */
/*
 * IoCsq: cancel-safe queues (API.md §11.3). Insert marks the IRP pending,
 * remembers its context and makes it cancelable; remove claims it; remove-next
 * skips IRPs whose cancel is in progress; a cancelled IRP is taken out and
 * completed through CsqCompleteCanceledIrp with no spin lock held (not
 * ReactOS's §13.4), and an IRP cancelled before its insert never stays queued.
 *
 * The test queue "Tcq" is a list under an ordinary spin lock; its callbacks
 * record what they see.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define TCQ_IRPS      4
#define TCQ_RACE_IRPS 1200 // per submitting processor
#define TCQ_POOL_TAG  'qCtK'

typedef struct _TCQ
{
    IO_CSQ Csq;
    KSPIN_LOCK Lock;
    LIST_ENTRY List;
    NTSTATUS InsertStatus; // what the Ex insert routine returns
    PVOID LastInsertContext;
    volatile LONG Inserts;
    volatile LONG Removes;
    volatile LONG CompleteCalls;
    volatile LONG LockedCompletions; // CompleteCanceledIrp entered with a spin lock held
    KIRQL CompleteIrql;
    BOOLEAN CompleteSawCancelRoutine;
} TCQ;

static TCQ Tcq;

static TCQ *
TcqFrom(PIO_CSQ Csq)
{
    return CONTAINING_RECORD(Csq, TCQ, Csq);
}

static VOID
TcqInsert(PIO_CSQ Csq, PIRP Irp)
{
    InterlockedIncrement(&TcqFrom(Csq)->Inserts);
    InsertTailList(&TcqFrom(Csq)->List, &Irp->Tail.Overlay.ListEntry);
}

static NTSTATUS
TcqInsertEx(PIO_CSQ Csq, PIRP Irp, PVOID InsertContext)
{
    TcqFrom(Csq)->LastInsertContext = InsertContext;
    if (!NT_SUCCESS(TcqFrom(Csq)->InsertStatus))
    {
        return TcqFrom(Csq)->InsertStatus;
    }
    TcqInsert(Csq, Irp);
    return TcqFrom(Csq)->InsertStatus;
}

static VOID
TcqRemove(PIO_CSQ Csq, PIRP Irp)
{
    InterlockedIncrement(&TcqFrom(Csq)->Removes);
    RemoveEntryList(&Irp->Tail.Overlay.ListEntry);
}

static PIRP
TcqPeekNext(PIO_CSQ Csq, PIRP Irp, PVOID PeekContext)
{
    PLIST_ENTRY Head = &TcqFrom(Csq)->List;
    PLIST_ENTRY Link = Irp == NULL ? Head->Flink : Irp->Tail.Overlay.ListEntry.Flink;

    for (; Link != Head; Link = Link->Flink)
    {
        PIRP Next = CONTAINING_RECORD(Link, IRP, Tail.Overlay.ListEntry);
        if (PeekContext == NULL || IoGetCurrentIrpStackLocation(Next)->FileObject == PeekContext)
        {
            return Next;
        }
    }
    return NULL;
}

static VOID
TcqAcquire(PIO_CSQ Csq, PKIRQL Irql)
{
    KeAcquireSpinLock(&TcqFrom(Csq)->Lock, Irql);
}

static VOID
TcqRelease(PIO_CSQ Csq, KIRQL Irql)
{
    KeReleaseSpinLock(&TcqFrom(Csq)->Lock, Irql);
}

static VOID
TcqCompleteCanceled(PIO_CSQ Csq, PIRP Irp)
{
    TCQ *Queue = TcqFrom(Csq);

    InterlockedIncrement(&Queue->CompleteCalls);
    if (KeGetCurrentPrcb()->SpinLocksHeld != 0)
    {
        InterlockedIncrement(&Queue->LockedCompletions);
    }
    Queue->CompleteIrql = KeGetCurrentIrql();
    Queue->CompleteSawCancelRoutine = Irp->CancelRoutine != NULL;
    Irp->IoStatus.Status = STATUS_CANCELLED;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

static NTSTATUS
TcqKeep(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    InterlockedIncrement((LONG volatile *)Context);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static VOID
TcqInit(BOOLEAN Ex)
{
    memset(&Tcq, 0, sizeof(Tcq));
    KeInitializeSpinLock(&Tcq.Lock);
    InitializeListHead(&Tcq.List);
    if (Ex)
    {
        KT_EXPECT_EQ(IoCsqInitializeEx(&Tcq.Csq, TcqInsertEx, TcqRemove, TcqPeekNext, TcqAcquire,
                                       TcqRelease, TcqCompleteCanceled),
                     STATUS_SUCCESS);
    }
    else
    {
        KT_EXPECT_EQ(IoCsqInitialize(&Tcq.Csq, TcqInsert, TcqRemove, TcqPeekNext, TcqAcquire,
                                     TcqRelease, TcqCompleteCanceled),
                     STATUS_SUCCESS);
    }
}

/* An IRP at a (driver's) stack location, counting its completions in *Completions. */
static PIRP
TcqIrp(volatile LONG *Completions)
{
    PIRP Irp = IoAllocateIrp(1, FALSE);

    KT_ASSERT(Irp != NULL);
    IoSetCompletionRoutine(Irp, TcqKeep, (PVOID)Completions, TRUE, TRUE, TRUE);
    IoSetNextIrpStackLocation(Irp);
    return Irp;
}

static VOID
TcqFree(PIRP Irp)
{
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    IoFreeIrp(Irp);
}

static ULONG
TcqLength(VOID)
{
    ULONG Count = 0;
    for (PLIST_ENTRY Link = Tcq.List.Flink; Link != &Tcq.List; Link = Link->Flink)
    {
        Count++;
    }
    return Count;
}

/* ---------------------------------------------------------------- single processor */

KTEST(IoCsq, initialize_fills_the_callbacks_and_the_type)
{
    TcqInit(FALSE);
    KT_EXPECT_EQ(Tcq.Csq.Type, IO_TYPE_CSQ);
    KT_EXPECT(Tcq.Csq.CsqInsertIrp == TcqInsert);
    KT_EXPECT(Tcq.Csq.CsqRemoveIrp == TcqRemove);
    KT_EXPECT(Tcq.Csq.CsqPeekNextIrp == TcqPeekNext);
    KT_EXPECT(Tcq.Csq.CsqAcquireLock == TcqAcquire);
    KT_EXPECT(Tcq.Csq.CsqReleaseLock == TcqRelease);
    KT_EXPECT(Tcq.Csq.CsqCompleteCanceledIrp == TcqCompleteCanceled);
    KT_EXPECT(Tcq.Csq.ReservePointer == NULL);
    TcqInit(TRUE);
    KT_EXPECT_EQ(Tcq.Csq.Type, IO_TYPE_CSQ_EX);
    KT_EXPECT((ULONG_PTR)Tcq.Csq.CsqInsertIrp == (ULONG_PTR)TcqInsertEx);
}

KTEST(IoCsq, insert_marks_pending_remembers_the_context_and_sets_a_cancel_routine)
{
    volatile LONG Completions[2] = {0, 0};
    IO_CSQ_IRP_CONTEXT Context;
    PIRP WithContext;
    PIRP Without;

    TcqInit(FALSE);
    WithContext = TcqIrp(&Completions[0]);
    Without = TcqIrp(&Completions[1]);
    memset(&Context, 0x55, sizeof(Context));

    IoCsqInsertIrp(&Tcq.Csq, WithContext, &Context);
    KT_EXPECT(IoGetCurrentIrpStackLocation(WithContext)->Control & SL_PENDING_RETURNED);
    KT_EXPECT(WithContext->Tail.Overlay.DriverContext[3] == &Context);
    KT_EXPECT_EQ(Context.Type, IO_TYPE_CSQ_IRP_CONTEXT);
    KT_EXPECT(Context.Irp == WithContext);
    KT_EXPECT(Context.Csq == &Tcq.Csq);
    KT_EXPECT(WithContext->CancelRoutine != NULL);

    IoCsqInsertIrp(&Tcq.Csq, Without, NULL);
    KT_EXPECT(Without->Tail.Overlay.DriverContext[3] == &Tcq.Csq);
    KT_EXPECT(Without->CancelRoutine != NULL);
    KT_EXPECT_EQ(TcqLength(), 2);
    KT_EXPECT_EQ(Tcq.Inserts, 2);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT(KeTestSpinLock(&Tcq.Lock));

    /* Remove by context: claimed, unlinked, forgotten. */
    KT_EXPECT(IoCsqRemoveIrp(&Tcq.Csq, &Context) == WithContext);
    KT_EXPECT(WithContext->CancelRoutine == NULL);
    KT_EXPECT(WithContext->Tail.Overlay.DriverContext[3] == NULL);
    KT_EXPECT(Context.Irp == NULL);
    KT_EXPECT(IoCsqRemoveIrp(&Tcq.Csq, &Context) == NULL);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, NULL) == Without);
    KT_EXPECT(Without->Tail.Overlay.DriverContext[3] == NULL);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, NULL) == NULL);
    KT_EXPECT_EQ(TcqLength(), 0);

    WithContext->IoStatus.Status = STATUS_SUCCESS;
    IoCompleteRequest(WithContext, IO_NO_INCREMENT);
    Without->IoStatus.Status = STATUS_SUCCESS;
    IoCompleteRequest(Without, IO_NO_INCREMENT);
    KT_EXPECT_EQ(Completions[0], 1);
    KT_EXPECT_EQ(Completions[1], 1);
    TcqFree(WithContext);
    TcqFree(Without);
}

KTEST(IoCsq, remove_next_follows_peek_order_and_context_and_skips_cancelling_irps)
{
    volatile LONG Completions[TCQ_IRPS] = {0};
    PIRP Irps[TCQ_IRPS];
    static int FileA, FileB;
    KIRQL Irql;

    TcqInit(FALSE);
    for (ULONG i = 0; i < TCQ_IRPS; i++)
    {
        Irps[i] = TcqIrp(&Completions[i]);
        IoGetCurrentIrpStackLocation(Irps[i])->FileObject = (PFILE_OBJECT)(i & 1 ? &FileB : &FileA);
        IoCsqInsertIrp(&Tcq.Csq, Irps[i], NULL);
    }
    /* Irps[0]'s cancel is "in progress": its routine is taken, the queue must leave it. */
    KT_EXPECT(IoSetCancelRoutine(Irps[0], NULL) != NULL);

    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, &FileB) == Irps[1]);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, &FileA) == Irps[2]); // skips Irps[0]
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, &FileA) == NULL);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, NULL) == Irps[3]);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, NULL) == NULL);
    KT_EXPECT_EQ(TcqLength(), 1);
    KT_EXPECT(Irps[0]->Tail.Overlay.DriverContext[3] == &Tcq.Csq); // untouched

    /* Finish the simulated cancel: take it out by hand. */
    KeAcquireSpinLock(&Tcq.Lock, &Irql);
    TcqRemove(&Tcq.Csq, Irps[0]);
    KeReleaseSpinLock(&Tcq.Lock, Irql);
    for (ULONG i = 0; i < TCQ_IRPS; i++)
    {
        Irps[i]->IoStatus.Status = STATUS_SUCCESS;
        IoCompleteRequest(Irps[i], IO_NO_INCREMENT);
        TcqFree(Irps[i]);
    }
}

KTEST(IoCsq, remove_by_context_leaves_an_irp_whose_cancel_is_in_progress)
{
    volatile LONG Completions = 0;
    IO_CSQ_IRP_CONTEXT Context;
    PIRP Irp;
    KIRQL Irql;

    TcqInit(FALSE);
    Irp = TcqIrp(&Completions);
    IoCsqInsertIrp(&Tcq.Csq, Irp, &Context);
    KT_EXPECT(IoSetCancelRoutine(Irp, NULL) != NULL); // as IoCancelIrp would
    KT_EXPECT(IoCsqRemoveIrp(&Tcq.Csq, &Context) == NULL);
    KT_EXPECT(Context.Irp == Irp);                             // neither the context
    KT_EXPECT(Irp->Tail.Overlay.DriverContext[3] == &Context); // nor the IRP touched
    KT_EXPECT_EQ(TcqLength(), 1);

    KeAcquireSpinLock(&Tcq.Lock, &Irql);
    TcqRemove(&Tcq.Csq, Irp);
    KeReleaseSpinLock(&Tcq.Lock, Irql);
    Irp->IoStatus.Status = STATUS_CANCELLED;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    TcqFree(Irp);
}

KTEST(IoCsq, cancel_of_a_queued_irp_completes_it_with_no_lock_held)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL};

    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        volatile LONG Completions = 0;
        IO_CSQ_IRP_CONTEXT Context;
        PIRP Irp;
        KIRQL Entry;

        TcqInit(l == 2);
        Irp = TcqIrp(&Completions);
        IoCsqInsertIrp(&Tcq.Csq, Irp, &Context);
        KeRaiseIrql(Levels[l], &Entry);
        KT_EXPECT_EQ(IoCancelIrp(Irp), TRUE);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KeLowerIrql(Entry);

        KT_EXPECT_EQ(Tcq.CompleteCalls, 1);
        KT_EXPECT_EQ(Tcq.LockedCompletions, 0);
        KT_EXPECT_EQ(Tcq.CompleteIrql, Levels[l]); // the cancel routine dropped to CancelIrql
        KT_EXPECT_EQ(Tcq.CompleteSawCancelRoutine, FALSE);
        KT_EXPECT_EQ(Completions, 1);
        KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_CANCELLED);
        KT_EXPECT_EQ(TcqLength(), 0);
        KT_EXPECT(Context.Irp == NULL);
        KT_EXPECT(Irp->Tail.Overlay.DriverContext[3] == NULL);
        KT_EXPECT(IoCsqRemoveIrp(&Tcq.Csq, &Context) == NULL);
        KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
        KT_EXPECT(KeTestSpinLock(&Tcq.Lock));
        TcqFree(Irp);
    }
}

KTEST(IoCsq, irp_cancelled_before_its_insert_is_completed_and_never_queued)
{
    volatile LONG Completions = 0;
    IO_CSQ_IRP_CONTEXT Context;
    PIRP Irp;

    TcqInit(FALSE);
    Irp = TcqIrp(&Completions);
    KT_EXPECT_EQ(IoCancelIrp(Irp), FALSE);
    IoCsqInsertIrp(&Tcq.Csq, Irp, &Context);
    KT_EXPECT_EQ(Tcq.Inserts, 1);
    KT_EXPECT_EQ(Tcq.Removes, 1);
    KT_EXPECT_EQ(Tcq.CompleteCalls, 1);
    KT_EXPECT_EQ(Tcq.LockedCompletions, 0); // completed after the CSQ lock was dropped
    KT_EXPECT_EQ(Completions, 1);
    KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_CANCELLED);
    KT_EXPECT(Irp->CancelRoutine == NULL);
    KT_EXPECT(Context.Irp == NULL);
    KT_EXPECT_EQ(TcqLength(), 0);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, NULL) == NULL);
    TcqFree(Irp);
}

KTEST(IoCsq, insert_ex_failure_queues_nothing_and_sets_no_routine)
{
    volatile LONG Completions = 0;
    IO_CSQ_IRP_CONTEXT Context;
    static int InsertContext;
    PIRP Irp;

    TcqInit(TRUE);
    Irp = TcqIrp(&Completions);
    Tcq.InsertStatus = STATUS_DEVICE_BUSY;
    KT_EXPECT_EQ(IoCsqInsertIrpEx(&Tcq.Csq, Irp, &Context, &InsertContext), STATUS_DEVICE_BUSY);
    KT_EXPECT(Tcq.LastInsertContext == &InsertContext);
    KT_EXPECT_EQ(TcqLength(), 0);
    KT_EXPECT(Irp->CancelRoutine == NULL);
    KT_EXPECT(IoGetCurrentIrpStackLocation(Irp)->Control & SL_PENDING_RETURNED);
    KT_EXPECT(Irp->Tail.Overlay.DriverContext[3] == NULL);
    KT_EXPECT(Context.Irp == NULL);
    KT_EXPECT(KeTestSpinLock(&Tcq.Lock));

    Tcq.InsertStatus = STATUS_SUCCESS;
    KT_EXPECT_EQ(IoCsqInsertIrpEx(&Tcq.Csq, Irp, &Context, NULL), STATUS_SUCCESS);
    KT_EXPECT_EQ(TcqLength(), 1);
    KT_EXPECT(IoCsqRemoveIrp(&Tcq.Csq, &Context) == Irp);

    /* IoCsqInsertIrp on an Ex queue goes through the Ex routine with no insert context. */
    IoCsqInsertIrp(&Tcq.Csq, Irp, NULL);
    KT_EXPECT(Tcq.LastInsertContext == NULL);
    KT_EXPECT(IoCsqRemoveNextIrp(&Tcq.Csq, NULL) == Irp);
    Irp->IoStatus.Status = STATUS_SUCCESS;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    TcqFree(Irp);
}

/* ---------------------------------------------------------------- raced */

typedef struct _TCQ_SLOT
{
    PIRP Irp;
    volatile LONG Completions;
    volatile LONG Inserted;
    BOOLEAN CancelReturned;
    BOOLEAN Removed; // the remover took it and completed it with STATUS_SUCCESS
} TCQ_SLOT;

typedef struct _TCQ_RACE
{
    TCQ_SLOT *Slots;
    ULONG Submitters;
    volatile LONG Done; // submitters finished
} TCQ_RACE;

/*
 * Index 0 removes (IoCsqRemoveNextIrp) until every submitter is done and the
 * queue is empty; the other indexes insert their slots and cancel random slots
 * of any submitter, at random times, before or after the insert.
 */
static VOID
TcqRaceRoutine(ULONG Index, PVOID Context)
{
    TCQ_RACE *Race = Context;

    if (Index == 0)
    {
        for (;;)
        {
            BOOLEAN Finished =
                __atomic_load_n(&Race->Done, __ATOMIC_ACQUIRE) == (LONG)Race->Submitters;
            PIRP Irp = IoCsqRemoveNextIrp(&Tcq.Csq, NULL);

            if (Irp == NULL)
            {
                if (Finished)
                {
                    break;
                }
                KeStallExecutionProcessor((ULONG)KtRandom() % 20);
                continue;
            }
            /* The completion context is &Slot->Completions. */
            CONTAINING_RECORD(IoGetCurrentIrpStackLocation(Irp)->Context, TCQ_SLOT, Completions)
                ->Removed = TRUE;
            Irp->IoStatus.Status = STATUS_SUCCESS;
            IoCompleteRequest(Irp, IO_NO_INCREMENT);
        }
        return;
    }

    for (ULONG i = 0; i < TCQ_RACE_IRPS; i++)
    {
        TCQ_SLOT *Mine = &Race->Slots[(Index - 1) * TCQ_RACE_IRPS + i];
        TCQ_SLOT *Victim = &Race->Slots[KtRandom() % (Race->Submitters * TCQ_RACE_IRPS)];

        IoCsqInsertIrp(&Tcq.Csq, Mine->Irp, NULL);
        __atomic_store_n(&Mine->Inserted, 1, __ATOMIC_RELEASE);
        if (KtRandom() % 3 == 0)
        {
            for (ULONG Spin = (ULONG)KtRandom() % 300; Spin > 0; Spin--)
            {
                YieldProcessor();
            }
            /* Any slot, inserted or not yet: IoCancelIrp on a pending or completed IRP is legal. */
            if (IoCancelIrp(Victim->Irp))
            {
                Victim->CancelReturned = TRUE;
            }
        }
    }
    __atomic_add_fetch(&Race->Done, 1, __ATOMIC_RELEASE);
}

KTEST_EX(IoCsq, insert_remove_and_cancel_race_completes_every_irp_once, KTEST_SMP_ONLY, 0)
{
    TCQ_RACE Race;
    ULONG Total;
    ULONG Cancelled = 0, Removed = 0;

    TcqInit(FALSE);
    Race.Submitters = KeQueryActiveProcessorCount(NULL) - 1;
    Race.Done = 0;
    Total = Race.Submitters * TCQ_RACE_IRPS;
    Race.Slots = ExAllocatePoolWithTag(NonPagedPool, Total * sizeof(TCQ_SLOT), TCQ_POOL_TAG);
    KT_ASSERT(Race.Slots != NULL);
    memset(Race.Slots, 0, Total * sizeof(TCQ_SLOT));
    for (ULONG i = 0; i < Total; i++)
    {
        Race.Slots[i].Irp = TcqIrp(&Race.Slots[i].Completions);
    }

    KtRunOnProcessors(0, TcqRaceRoutine, &Race);

    for (ULONG i = 0; i < Total; i++)
    {
        TCQ_SLOT *Slot = &Race.Slots[i];
        KT_EXPECT_EQ(Slot->Completions, 1);
        if (Slot->CancelReturned)
        {
            KT_EXPECT_EQ(Slot->Irp->IoStatus.Status, STATUS_CANCELLED);
        }
        KT_EXPECT_EQ(Slot->Irp->IoStatus.Status, Slot->Removed ? STATUS_SUCCESS : STATUS_CANCELLED);
        KT_EXPECT(Slot->Irp->CancelRoutine == NULL);
        Cancelled += Slot->Irp->IoStatus.Status == STATUS_CANCELLED;
        Removed += Slot->Removed;
        TcqFree(Slot->Irp);
    }
    KT_EXPECT_EQ(TcqLength(), 0);
    KT_EXPECT_EQ(Tcq.LockedCompletions, 0);
    KT_EXPECT_EQ((ULONG)Tcq.CompleteCalls, Cancelled);
    KT_EXPECT_EQ((ULONG)Tcq.Inserts, Total);
    KT_EXPECT_EQ((ULONG)Tcq.Removes, Total);
    KtLog("%u IRPs: %u removed, %u cancelled", Total, Removed, Cancelled);
    ExFreePoolWithTag(Race.Slots, TCQ_POOL_TAG);
}
