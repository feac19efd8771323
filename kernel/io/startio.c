/* SPDX-License-Identifier: MIT */
/*
 * The I/O manager's StartIo queue, API.md §11.2: IoStartPacket,
 * IoStartNextPacket(ByKey) and IoSetStartIoAttributes over the device's
 * KDEVICE_QUEUE. The device queue's Busy flag says who owns the device: an
 * IoStartPacket that finds it idle becomes the owner and calls StartIo; the
 * owner hands the device on with IoStartNextPacket when its IRP is done.
 * StartIo always runs at DISPATCH_LEVEL (not ReactOS's bug, API.md §13.2).
 * With a CancelFunction (or Cancelable), CurrentIrp and the queue change
 * under the cancel lock, so a cancel routine sees an IRP either queued or current.
 *
 * Deferred StartIo (IoSetStartIoAttributes(Dev, TRUE, ...)): StartIoCount
 * counts the StartIo calls in progress. A start-next request made while it is
 * non-zero is recorded in StartIoFlags (DOE_SIO_NO_KEY / _WITH_KEY +
 * StartIoKey, DOE_SIO_CANCELABLE) instead of recursing into StartIo; whoever
 * brings the count back to 0 runs the recorded request (NT's protocol):
 *   enter:  InterlockedIncrement(Count) > 1 ? record the request : run it now
 *   leave:  InterlockedDecrement(Count) == 0 and a request is recorded ?
 *           InterlockedIncrement(Count) == 1 ? claim it (InterlockedAnd) and run it
 * Both steps are full barriers, so a request recorded before the other side's
 * decrement is seen by the read that follows that decrement.
 */
#include "kernel/io/iop.h"

static PDEVOBJ_EXTENSION
IopDeviceExtension(PDEVICE_OBJECT DeviceObject)
{
    return DeviceObject->DeviceObjectExtension;
}

static BOOLEAN
IopHasStartIoFlag(PDEVICE_OBJECT DeviceObject, ULONG Flag)
{
    return (__atomic_load_n(&IopDeviceExtension(DeviceObject)->StartIoFlags, __ATOMIC_ACQUIRE) &
            Flag) != 0;
}

/*
 * Dequeues the next IRP (by Key if WithKey), makes it CurrentIrp and calls
 * StartIo with it; with an empty queue the device becomes idle and CurrentIrp
 * NULL. Cancelable: all of this but StartIo under the cancel lock. At DISPATCH_LEVEL.
 */
static VOID
IopStartNextPacket(PDEVICE_OBJECT DeviceObject, BOOLEAN Cancelable, BOOLEAN WithKey, ULONG Key)
{
    PKDEVICE_QUEUE_ENTRY Entry;
    KIRQL CancelIrql = DISPATCH_LEVEL;
    PIRP Irp = NULL;

    if (Cancelable)
    {
        IoAcquireCancelSpinLock(&CancelIrql);
    }
    DeviceObject->CurrentIrp = NULL;
    Entry = WithKey ? KeRemoveByKeyDeviceQueue(&DeviceObject->DeviceQueue, Key)
                    : KeRemoveDeviceQueue(&DeviceObject->DeviceQueue);
    if (Entry != NULL)
    {
        Irp = CONTAINING_RECORD(Entry, IRP, Tail.Overlay.DeviceQueueEntry);
        DeviceObject->CurrentIrp = Irp;
        if (Cancelable && IopHasStartIoFlag(DeviceObject, DOE_SIO_NO_CANCEL))
        {
            IoSetCancelRoutine(Irp, NULL);
        }
    }
    if (Cancelable)
    {
        IoReleaseCancelSpinLock(CancelIrql);
    }
    if (Irp != NULL)
    {
        DeviceObject->DriverObject->DriverStartIo(DeviceObject, Irp);
    }
}

/*
 * Deferred mode: leaves one StartIo (or start-next) call. The caller that
 * brings StartIoCount to 0 runs the request recorded meanwhile, if any, and
 * repeats for requests recorded while that one ran.
 */
static VOID
IopLeaveStartIo(PDEVICE_OBJECT DeviceObject)
{
    PDEVOBJ_EXTENSION Extension = IopDeviceExtension(DeviceObject);

    while (InterlockedDecrement(&Extension->StartIoCount) == 0)
    {
        ULONG Request =
            __atomic_load_n(&Extension->StartIoFlags, __ATOMIC_ACQUIRE) & IOP_SIO_REQUEST_MASK;

        if ((Request & (DOE_SIO_NO_KEY | DOE_SIO_WITH_KEY)) == 0)
        {
            return;
        }
        if (InterlockedIncrement(&Extension->StartIoCount) == 1)
        {
            /*
             * Claim the request with the RMW that clears it. The read above may be
             * stale: another processor that also brought the count to 0 may have
             * run this request since, and running it again would take the device
             * from the IRP it granted meanwhile (models/startio.pml, -DDEFERRED,
             * mutant LEAVE_STALE_REQUEST). The full barrier also orders the read
             * of StartIoKey after the bit (pairs with IopRequestNextPacket's OR).
             */
            Request = (ULONG)InterlockedAnd((LONG volatile *)&Extension->StartIoFlags,
                                            ~IOP_SIO_REQUEST_MASK) &
                      IOP_SIO_REQUEST_MASK;
            if ((Request & (DOE_SIO_NO_KEY | DOE_SIO_WITH_KEY)) != 0)
            {
                IopStartNextPacket(DeviceObject, (Request & DOE_SIO_CANCELABLE) != 0,
                                   (Request & DOE_SIO_WITH_KEY) != 0, Extension->StartIoKey);
            }
        }
        /* Else another StartIo began meanwhile; the request stays recorded for it. */
    }
}

/* A start-next request: deferred devices record it while StartIo runs, others run it now. */
static VOID
IopRequestNextPacket(PDEVICE_OBJECT DeviceObject, BOOLEAN Cancelable, BOOLEAN WithKey, ULONG Key)
{
    PDEVOBJ_EXTENSION Extension = IopDeviceExtension(DeviceObject);

    KiCheckIrqlIsDispatch(DeviceObject); // IoStartNextPacket(ByKey) is DISPATCH_LEVEL only

    if (!IopHasStartIoFlag(DeviceObject, DOE_SIO_DEFERRED))
    {
        IopStartNextPacket(DeviceObject, Cancelable, WithKey, Key);
        return;
    }
    if (InterlockedIncrement(&Extension->StartIoCount) > 1)
    {
        ULONG Request =
            (WithKey ? DOE_SIO_WITH_KEY : DOE_SIO_NO_KEY) | (Cancelable ? DOE_SIO_CANCELABLE : 0);

        Extension->StartIoKey = Key;
        /* Release: the key is visible before the request bit (pairs with IopLeaveStartIo). */
        InterlockedOr((LONG volatile *)&Extension->StartIoFlags, (LONG)Request);
    }
    else
    {
        InterlockedAnd((LONG volatile *)&Extension->StartIoFlags, ~IOP_SIO_REQUEST_MASK);
        IopStartNextPacket(DeviceObject, Cancelable, WithKey, Key);
    }
    IopLeaveStartIo(DeviceObject);
}

/*
 * Queues Irp on the device (by *Key if given) with CancelFunction as its
 * cancel routine, or, if the device is idle, makes it CurrentIrp and calls
 * StartIo at DISPATCH_LEVEL. A queued IRP that was already cancelled goes
 * straight to CancelFunction (CancelIrql = DISPATCH_LEVEL). IRQL <= DISPATCH_LEVEL,
 * unchanged; the caller must not hold the cancel lock.
 */
VOID
IoStartPacket(PDEVICE_OBJECT DeviceObject, PIRP Irp, PULONG Key, PDRIVER_CANCEL CancelFunction)
{
    PKDEVICE_QUEUE_ENTRY Entry = &Irp->Tail.Overlay.DeviceQueueEntry;
    KIRQL CancelIrql = DISPATCH_LEVEL;
    KIRQL OldIrql;
    BOOLEAN Queued;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, DeviceObject);

    OldIrql = KeRaiseIrqlToDpcLevel();
    if (CancelFunction != NULL)
    {
        IoAcquireCancelSpinLock(&CancelIrql);
        KiInject(KiInjectStartIoBeforeSet);
        IoSetCancelRoutine(Irp, CancelFunction);
        KiInject(KiInjectStartIoAfterSet);
    }
    Queued = Key != NULL ? KeInsertByKeyDeviceQueue(&DeviceObject->DeviceQueue, Entry, *Key)
                         : KeInsertDeviceQueue(&DeviceObject->DeviceQueue, Entry);
    if (!Queued)
    {
        DeviceObject->CurrentIrp = Irp;
        if (CancelFunction != NULL)
        {
            if (IopHasStartIoFlag(DeviceObject, DOE_SIO_NO_CANCEL))
            {
                IoSetCancelRoutine(Irp, NULL);
            }
            IoReleaseCancelSpinLock(CancelIrql); // back to DISPATCH_LEVEL, not OldIrql
        }
        if (IopHasStartIoFlag(DeviceObject, DOE_SIO_DEFERRED))
        {
            InterlockedIncrement(&IopDeviceExtension(DeviceObject)->StartIoCount);
            DeviceObject->DriverObject->DriverStartIo(DeviceObject, Irp);
            IopLeaveStartIo(DeviceObject);
        }
        else
        {
            DeviceObject->DriverObject->DriverStartIo(DeviceObject, Irp);
        }
    }
    else if (CancelFunction != NULL)
    {
        /*
         * Cancel was set before the routine was (we hold the cancel lock, so
         * no IoCancelIrp ran since): nobody else will call the routine.
         */
        if (Irp->Cancel)
        {
            Irp->CancelIrql = CancelIrql;
            IoSetCancelRoutine(Irp, NULL);
            CancelFunction(DeviceObject, Irp); // releases the cancel lock
        }
        else
        {
            IoReleaseCancelSpinLock(CancelIrql);
        }
    }
    KeLowerIrql(OldIrql);
}

/*
 * Hands the device to the next queued IRP: dequeues it, makes it CurrentIrp
 * and calls StartIo; with an empty queue the device becomes idle (CurrentIrp
 * NULL). Cancelable: the dequeue happens under the cancel lock. Deferred
 * devices record a call made from inside StartIo and run it after StartIo
 * returns. IRQL DISPATCH_LEVEL (checked build: 0x8 otherwise).
 */
VOID
IoStartNextPacket(PDEVICE_OBJECT DeviceObject, BOOLEAN Cancelable)
{
    IopRequestNextPacket(DeviceObject, Cancelable, FALSE, 0);
}

/* As IoStartNextPacket, dequeuing with KeRemoveByKeyDeviceQueue(Key). IRQL DISPATCH_LEVEL. */
VOID
IoStartNextPacketByKey(PDEVICE_OBJECT DeviceObject, BOOLEAN Cancelable, ULONG Key)
{
    IopRequestNextPacket(DeviceObject, Cancelable, TRUE, Key);
}

/*
 * Sets (never clears, as Windows) the device's StartIo attributes:
 * DeferredStartIo: start-next calls from inside StartIo run after it returns.
 * NonCancelable: the I/O manager clears the cancel routine before StartIo.
 * IRQL <= DISPATCH_LEVEL.
 */
VOID
IoSetStartIoAttributes(PDEVICE_OBJECT DeviceObject, BOOLEAN DeferredStartIo, BOOLEAN NonCancelable)
{
    LONG Flags = (DeferredStartIo ? DOE_SIO_DEFERRED : 0) | (NonCancelable ? DOE_SIO_NO_CANCEL : 0);

    KiCheckIrqlAtMost(DISPATCH_LEVEL, DeviceObject);

    InterlockedOr((LONG volatile *)&IopDeviceExtension(DeviceObject)->StartIoFlags, Flags);
}
