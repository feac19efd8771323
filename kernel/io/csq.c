/* SPDX-License-Identifier: MIT */
/*
 * Cancel-safe IRP queues, API.md §11.3. The driver supplies the queue (insert,
 * remove, peek) and its lock; these routines add the cancel protocol:
 *   insert:  under the CSQ lock, queue the IRP, then set the CSQ cancel routine,
 *            then re-check Irp->Cancel (a cancel that came first found no routine);
 *   remove:  under the CSQ lock, claim with IoSetCancelRoutine(Irp, NULL); NULL
 *            means the CSQ cancel routine owns the IRP, so it is left alone;
 *   cancel:  drop the cancel lock, then remove the IRP under the CSQ lock.
 * Irp->Tail.Overlay.DriverContext[3] points at the IRP's IO_CSQ_IRP_CONTEXT, or
 * at the IO_CSQ itself when there is none (both start with a ULONG Type), while
 * the IRP is queued. A cancelled IRP is completed (CsqCompleteCanceledIrp) only
 * after every spin lock is released (unlike ReactOS, API.md §13.4), and never
 * stays queued.
 */
#include "kernel/io/iop.h"

/* The CSQ of a queued IRP, from DriverContext[3]; clears the context's Irp if there is one. */
static PIO_CSQ
IopCsqFromIrp(PIRP Irp, BOOLEAN ClearContext)
{
    PIO_CSQ_IRP_CONTEXT Context = Irp->Tail.Overlay.DriverContext[3];

    if (Context->Type == IO_TYPE_CSQ_IRP_CONTEXT)
    {
        PIO_CSQ Csq = Context->Csq;
        if (ClearContext)
        {
            Context->Irp = NULL;
        }
        return Csq;
    }
    return (PIO_CSQ)Context;
}

/* Forgets the queue association of an IRP just removed from its queue (CSQ lock held). */
static VOID
IopCsqDetach(PIRP Irp)
{
    IopCsqFromIrp(Irp, TRUE);
    Irp->Tail.Overlay.DriverContext[3] = NULL;
}

/*
 * Claims a queued IRP for completion: TRUE if its cancel routine was still
 * set (cleared now), FALSE if IoCancelIrp took it first. Under the CSQ lock.
 */
static BOOLEAN
IopCsqClaim(PIRP Irp)
{
    BOOLEAN Claimed;

    KiInject(KiInjectCompleteBeforeClaim);
    Claimed = IoSetCancelRoutine(Irp, NULL) != NULL;
    KiInject(KiInjectCompleteAfterClaim);
    return Claimed;
}

/*
 * The cancel routine of every CSQ-queued IRP: entered at DISPATCH_LEVEL
 * holding the cancel lock. Releases it first, then removes the IRP under the
 * CSQ lock and completes it as cancelled through the driver, holding no lock.
 */
static VOID
IopCsqCancelRoutine(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_CSQ Csq;
    KIRQL Irql;

    IoReleaseCancelSpinLock(Irp->CancelIrql);

    /* DriverContext[3] is stable: no one else can claim an IRP whose routine we own. */
    Csq = IopCsqFromIrp(Irp, FALSE);
    Csq->CsqAcquireLock(Csq, &Irql);
    Csq->CsqRemoveIrp(Csq, Irp);
    IopCsqDetach(Irp);
    Csq->CsqReleaseLock(Csq, Irql);

    Csq->CsqCompleteCanceledIrp(Csq, Irp);
}

/*
 * Fills Csq with the driver's callbacks; Type = IO_TYPE_CSQ. Returns
 * STATUS_SUCCESS. IRQL <= DISPATCH_LEVEL.
 */
NTSTATUS
IoCsqInitialize(PIO_CSQ Csq, PIO_CSQ_INSERT_IRP CsqInsertIrp, PIO_CSQ_REMOVE_IRP CsqRemoveIrp,
                PIO_CSQ_PEEK_NEXT_IRP CsqPeekNextIrp, PIO_CSQ_ACQUIRE_LOCK CsqAcquireLock,
                PIO_CSQ_RELEASE_LOCK CsqReleaseLock,
                PIO_CSQ_COMPLETE_CANCELED_IRP CsqCompleteCanceledIrp)
{
    Csq->Type = IO_TYPE_CSQ;
    Csq->CsqInsertIrp = CsqInsertIrp;
    Csq->CsqRemoveIrp = CsqRemoveIrp;
    Csq->CsqPeekNextIrp = CsqPeekNextIrp;
    Csq->CsqAcquireLock = CsqAcquireLock;
    Csq->CsqReleaseLock = CsqReleaseLock;
    Csq->CsqCompleteCanceledIrp = CsqCompleteCanceledIrp;
    Csq->ReservePointer = NULL;
    return STATUS_SUCCESS;
}

/*
 * As IoCsqInitialize with an insert routine that returns a status;
 * Type = IO_TYPE_CSQ_EX. Returns STATUS_SUCCESS. IRQL <= DISPATCH_LEVEL.
 */
NTSTATUS
IoCsqInitializeEx(PIO_CSQ Csq, PIO_CSQ_INSERT_IRP_EX CsqInsertIrp, PIO_CSQ_REMOVE_IRP CsqRemoveIrp,
                  PIO_CSQ_PEEK_NEXT_IRP CsqPeekNextIrp, PIO_CSQ_ACQUIRE_LOCK CsqAcquireLock,
                  PIO_CSQ_RELEASE_LOCK CsqReleaseLock,
                  PIO_CSQ_COMPLETE_CANCELED_IRP CsqCompleteCanceledIrp)
{
    /* The DDK keeps the Ex routine in the same slot; Type says which it is. */
    IoCsqInitialize(Csq, (PIO_CSQ_INSERT_IRP)(ULONG_PTR)CsqInsertIrp, CsqRemoveIrp, CsqPeekNextIrp,
                    CsqAcquireLock, CsqReleaseLock, CsqCompleteCanceledIrp);
    Csq->Type = IO_TYPE_CSQ_EX;
    return STATUS_SUCCESS;
}

/*
 * Marks Irp pending and queues it through the driver's insert routine
 * (remembering Context, if given, in both directions), then makes it
 * cancelable. An IRP whose cancel came first is taken out again and completed
 * as cancelled after the lock is dropped. Returns the insert routine's status
 * (STATUS_SUCCESS for a plain IO_TYPE_CSQ); on failure nothing is queued and
 * no cancel routine is set, but the IRP stays marked pending. IRQL <= DISPATCH_LEVEL.
 */
NTSTATUS
IoCsqInsertIrpEx(PIO_CSQ Csq, PIRP Irp, PIO_CSQ_IRP_CONTEXT Context, PVOID InsertContext)
{
    NTSTATUS Status = STATUS_SUCCESS;
    BOOLEAN CompleteCancelled = FALSE;
    PDRIVER_CANCEL Previous;
    KIRQL Irql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Csq);
    ASSERT(Csq->Type == IO_TYPE_CSQ || Csq->Type == IO_TYPE_CSQ_EX);

    Csq->CsqAcquireLock(Csq, &Irql);
    IoMarkIrpPending(Irp);
    if (Context != NULL)
    {
        Context->Type = IO_TYPE_CSQ_IRP_CONTEXT;
        Context->Irp = Irp;
        Context->Csq = Csq;
        Irp->Tail.Overlay.DriverContext[3] = Context;
    }
    else
    {
        Irp->Tail.Overlay.DriverContext[3] = Csq;
    }

    if (Csq->Type == IO_TYPE_CSQ_EX)
    {
        PIO_CSQ_INSERT_IRP_EX InsertEx = (PIO_CSQ_INSERT_IRP_EX)(ULONG_PTR)Csq->CsqInsertIrp;
        Status = InsertEx(Csq, Irp, InsertContext);
    }
    else
    {
        Csq->CsqInsertIrp(Csq, Irp);
    }
    if (!NT_SUCCESS(Status))
    {
        IopCsqDetach(Irp);
        Csq->CsqReleaseLock(Csq, Irql);
        return Status;
    }

    /* Queued first, cancelable second; then the re-check (the protocol in cancel.c). */
    KiInject(KiInjectCsqBeforeSet);
    Previous = IoSetCancelRoutine(Irp, IopCsqCancelRoutine);
    KiInject(KiInjectCsqAfterSet);
    ASSERT(Previous == NULL);
    UNREFERENCED_PARAMETER(Previous);
    if (__atomic_load_n(&Irp->Cancel, __ATOMIC_RELAXED) && IoSetCancelRoutine(Irp, NULL) != NULL)
    {
        /* Claimed back before IoCancelIrp could take the routine: ours to complete. */
        Csq->CsqRemoveIrp(Csq, Irp);
        IopCsqDetach(Irp);
        CompleteCancelled = TRUE;
    }
    /* Otherwise, if Cancel is set, the CSQ cancel routine owns it and waits for our lock. */
    Csq->CsqReleaseLock(Csq, Irql);

    if (CompleteCancelled)
    {
        Csq->CsqCompleteCanceledIrp(Csq, Irp);
    }
    return Status;
}

/* IoCsqInsertIrpEx without an insert context, ignoring the status. IRQL <= DISPATCH_LEVEL. */
VOID
IoCsqInsertIrp(PIO_CSQ Csq, PIRP Irp, PIO_CSQ_IRP_CONTEXT Context)
{
    (VOID) IoCsqInsertIrpEx(Csq, Irp, Context, NULL);
}

/*
 * Removes and returns the IRP that Context remembers, or NULL if it was
 * already removed or its cancel is in progress (then neither the IRP nor
 * Context is touched). IRQL <= DISPATCH_LEVEL.
 */
PIRP
IoCsqRemoveIrp(PIO_CSQ Csq, PIO_CSQ_IRP_CONTEXT Context)
{
    PIRP Irp;
    KIRQL Irql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Csq);

    Csq->CsqAcquireLock(Csq, &Irql);
    Irp = Context->Irp;
    if (Irp != NULL)
    {
        if (IopCsqClaim(Irp))
        {
            Csq->CsqRemoveIrp(Csq, Irp);
            IopCsqDetach(Irp);
        }
        else
        {
            Irp = NULL;
        }
    }
    Csq->CsqReleaseLock(Csq, Irql);
    return Irp;
}

/*
 * Removes and returns the first queued IRP (in PeekNextIrp order, matching
 * PeekContext) that is not being cancelled; IRPs whose cancel routine is
 * already taken are skipped, their cancel routine removes them. NULL if there
 * is none. IRQL <= DISPATCH_LEVEL.
 */
PIRP
IoCsqRemoveNextIrp(PIO_CSQ Csq, PVOID PeekContext)
{
    PIRP Irp;
    KIRQL Irql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Csq);

    Csq->CsqAcquireLock(Csq, &Irql);
    for (Irp = Csq->CsqPeekNextIrp(Csq, NULL, PeekContext); Irp != NULL;
         Irp = Csq->CsqPeekNextIrp(Csq, Irp, PeekContext))
    {
        if (IopCsqClaim(Irp))
        {
            Csq->CsqRemoveIrp(Csq, Irp);
            IopCsqDetach(Irp);
            break;
        }
    }
    Csq->CsqReleaseLock(Csq, Irql);
    return Irp;
}
