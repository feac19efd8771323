/* SPDX-License-Identifier: MIT */
/*
 * The cancel spin lock and IoCancelIrp, API.md §11.2.
 *
 * The cancel lock is one system-wide ordinary spin lock (NT backs it with a
 * numbered queued lock; nothing outside this file sees the difference).
 * IopCancelLockOwner names the processor holding it through
 * IoAcquireCancelSpinLock (number + 1; 0 when free): it is written only by the
 * holder, after acquiring and before releasing, so a processor reading it sees
 * exactly whether it holds the lock itself. IoCancelIrp uses that for its
 * checked-build 0x11B check, and white-box tests for "the cancel routine runs
 * holding the cancel lock".
 *
 * The cancel protocol, for a driver that queues an IRP:
 *   IoCancelIrp: Cancel = TRUE, then r = xchg(CancelRoutine, NULL), under the lock;
 *                r != NULL: call r (it releases the lock); r == NULL: nothing to call.
 *   the driver:  xchg(CancelRoutine, routine), then read Cancel (to insert); or
 *                xchg(CancelRoutine, NULL) != NULL to claim the IRP for completion.
 * Every exchange is a full barrier, so a canceller and an inserter cannot both
 * miss each other (Dekker): either the canceller's exchange finds the routine,
 * or the inserter's read after its exchange finds Cancel set.
 */
#include "kernel/io/iop.h"

KSPIN_LOCK IopCancelSpinLock;
volatile ULONG IopCancelLockOwner;

static ULONG
IopCurrentOwnerTag(VOID)
{
    return KeGetCurrentPrcb()->Number + 1;
}

#if DBG
/*
 * After a cancel routine returns: IRQL must be back to OldIrql and this
 * processor must no longer hold the cancel lock, else 0x11B
 * DRIVER_RETURNED_HOLDING_CANCEL_LOCK (P1 = Irp, P2 = routine). The lock is
 * released first, so that a caught bug check leaves the system usable.
 */
static VOID
IopCheckCancelRoutineReturn(PIRP Irp, PDRIVER_CANCEL Routine, KIRQL OldIrql)
{
    BOOLEAN Held = __atomic_load_n(&IopCancelLockOwner, __ATOMIC_RELAXED) == IopCurrentOwnerTag();

    if (Held)
    {
        __atomic_store_n(&IopCancelLockOwner, 0, __ATOMIC_RELAXED);
        KeReleaseSpinLockFromDpcLevel(&IopCancelSpinLock);
    }
    if (Held || KeGetCurrentIrql() != OldIrql)
    {
        KeBugCheckEx(DRIVER_RETURNED_HOLDING_CANCEL_LOCK, (ULONG_PTR)Irp, (ULONG_PTR)Routine,
                     KeGetCurrentIrql(), OldIrql);
    }
}
#endif

/*
 * Takes the system-wide cancel spin lock; *Irql gets the entry IRQL.
 * IRQL <= DISPATCH_LEVEL in, DISPATCH_LEVEL out.
 */
VOID
IoAcquireCancelSpinLock(PKIRQL Irql)
{
    KIRQL OldIrql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Irql);

    KeAcquireSpinLock(&IopCancelSpinLock, &OldIrql);
    __atomic_store_n(&IopCancelLockOwner, IopCurrentOwnerTag(), __ATOMIC_RELAXED);
    *Irql = OldIrql;
}

/*
 * Releases the cancel spin lock and lowers IRQL to Irql (in a cancel routine:
 * Irp->CancelIrql). IRQL DISPATCH_LEVEL in, Irql out; the caller holds the lock.
 */
VOID
IoReleaseCancelSpinLock(KIRQL Irql)
{
    ASSERT(__atomic_load_n(&IopCancelLockOwner, __ATOMIC_RELAXED) == IopCurrentOwnerTag());

    /* Ordered before the lock's release store: the next owner never sees our tag. */
    __atomic_store_n(&IopCancelLockOwner, 0, __ATOMIC_RELAXED);
    KeReleaseSpinLock(&IopCancelSpinLock, Irql);
}

/*
 * Marks Irp cancelled and, if it has a cancel routine, takes the routine and
 * calls it at DISPATCH_LEVEL holding the cancel lock, with Irp->CancelIrql =
 * the caller's IRQL and the device of the IRP's current location (NULL while
 * the IRP is still at its originator); returns TRUE. Without a routine returns
 * FALSE. A routine on a completed IRP is bug check 0x48 (P1 = Irp, P2 = routine;
 * both builds). IRQL <= DISPATCH_LEVEL, unchanged; hold no spin lock.
 */
BOOLEAN
IoCancelIrp(PIRP Irp)
{
    PDRIVER_CANCEL Routine;
    PDEVICE_OBJECT DeviceObject = NULL;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Irp);
    ASSERT(Irp->Type == IO_TYPE_IRP);

    IoAcquireCancelSpinLock(&OldIrql);
    /* Before the exchange, which is the full barrier the protocol above relies on. */
    __atomic_store_n(&Irp->Cancel, TRUE, __ATOMIC_RELAXED);
    KiInject(KiInjectCancelBeforeClear);
    Routine = IoSetCancelRoutine(Irp, NULL);
    KiInject(KiInjectCancelAfterClear);
    if (Routine == NULL)
    {
        IoReleaseCancelSpinLock(OldIrql);
        return FALSE;
    }
    if (Irp->CurrentLocation > Irp->StackCount + 1)
    {
        IoReleaseCancelSpinLock(OldIrql);
        KeBugCheckEx(CANCEL_STATE_IN_COMPLETED_IRP, (ULONG_PTR)Irp, (ULONG_PTR)Routine, 0, 0);
    }
    if (Irp->CurrentLocation <= Irp->StackCount)
    {
        DeviceObject = IoGetCurrentIrpStackLocation(Irp)->DeviceObject;
    }
    Irp->CancelIrql = OldIrql;
    Routine(DeviceObject, Irp);
#if DBG
    IopCheckCancelRoutineReturn(Irp, Routine, OldIrql);
#endif
    return TRUE;
}
