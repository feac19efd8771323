/* SPDX-License-Identifier: MIT */
/*
 * IRPs, API.md §11.1: allocation, initialisation, IoCallDriver and
 * IoCompleteRequest with completion routines.
 *
 * Stack locations are numbered 1..StackCount from the bottom of the array;
 * CurrentLocation is StackCount + 1 at the originator, decremented by every
 * IoCallDriver and incremented by completion once per location, so a fully
 * completed IRP reads StackCount + 2 and a second completion is caught (0x44).
 *
 * The "final I/O-manager step" of a completion (after the last completion
 * routine) is, for Spindle: copy IoStatus to *UserIosb if the originator set
 * UserIosb, then signal *UserEvent if it set UserEvent. Nothing is freed: the
 * IRP belongs to its creator again, who frees it with IoFreeIrp (or reuses it).
 */
#include "kernel/io/iop.h"

/* DRIVER_VERIFIER_IOMANAGER_VIOLATION (0xC9) first parameters. */
#define IOP_C9_PENDING_STATUS 0x6
#define IOP_C9_CANCEL_ROUTINE 0x7
#define IOP_C9_IRQL_TOO_HIGH  0xE

/* Checked build: the Verifier-style 0xC9 checks of IoCompleteRequest (API.md §11.2). */
static VOID
IopCheckCompletion(PIRP Irp)
{
    KiCheck(Irp->IoStatus.Status != STATUS_PENDING && Irp->IoStatus.Status != (NTSTATUS)-1,
            DRIVER_VERIFIER_IOMANAGER_VIOLATION, IOP_C9_PENDING_STATUS, (ULONG)Irp->IoStatus.Status,
            Irp, 0);
    KiCheck(__atomic_load_n(&Irp->CancelRoutine, __ATOMIC_ACQUIRE) == NULL,
            DRIVER_VERIFIER_IOMANAGER_VIOLATION, IOP_C9_CANCEL_ROUTINE,
            __atomic_load_n(&Irp->CancelRoutine, __ATOMIC_ACQUIRE), Irp, 0);
    KiCheck(KeGetCurrentIrql() <= DISPATCH_LEVEL, DRIVER_VERIFIER_IOMANAGER_VIOLATION,
            IOP_C9_IRQL_TOO_HIGH, KeGetCurrentIrql(), Irp, 0);
}

/* Does the location's SL_INVOKE_ON_* mask ask for its routine with this outcome? */
static BOOLEAN
IopShouldInvoke(PIRP Irp, PIO_STACK_LOCATION Location)
{
    if (Location->CompletionRoutine == NULL)
    {
        return FALSE;
    }
    if (NT_SUCCESS(Irp->IoStatus.Status) && (Location->Control & SL_INVOKE_ON_SUCCESS))
    {
        return TRUE;
    }
    if (!NT_SUCCESS(Irp->IoStatus.Status) && (Location->Control & SL_INVOKE_ON_ERROR))
    {
        return TRUE;
    }
    return Irp->Cancel && (Location->Control & SL_INVOKE_ON_CANCEL);
}

/*
 * Allocates an IRP with StackSize stack locations from nonpaged pool and
 * initialises it (IoInitializeIrp). Returns NULL if StackSize is negative or
 * the pool is exhausted. ChargeQuota is ignored (no processes). IRQL <= DISPATCH_LEVEL.
 */
PIRP
IoAllocateIrp(CCHAR StackSize, BOOLEAN ChargeQuota)
{
    USHORT PacketSize;
    PIRP Irp;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, 0);

    if (StackSize < 0)
    {
        return NULL;
    }
    PacketSize = IoSizeOfIrp(StackSize);
    Irp = ExAllocatePoolWithTag(NonPagedPool, PacketSize, IOP_TAG_IRP);
    if (Irp == NULL)
    {
        return NULL;
    }
    IoInitializeIrp(Irp, PacketSize, StackSize);
    Irp->AllocationFlags = IRP_ALLOCATED_FIXED_SIZE;
    return Irp;
}

/*
 * Zeroes PacketSize bytes at Irp and sets Type, Size, StackCount,
 * CurrentLocation = StackSize + 1, CurrentStackLocation one past the last
 * location and an empty ThreadListEntry. IRQL <= DISPATCH_LEVEL.
 */
VOID
IoInitializeIrp(PIRP Irp, USHORT PacketSize, CCHAR StackSize)
{
    ASSERT(PacketSize >= IoSizeOfIrp(StackSize));

    RtlZeroMemory(Irp, PacketSize);
    Irp->Type = IO_TYPE_IRP;
    Irp->Size = PacketSize;
    Irp->StackCount = StackSize;
    Irp->CurrentLocation = (CHAR)(StackSize + 1);
    InitializeListHead(&Irp->ThreadListEntry);
    Irp->Tail.Overlay.CurrentStackLocation = (PIO_STACK_LOCATION)(Irp + 1) + StackSize;
}

/*
 * Frees an IRP that IoAllocateIrp returned. The IRP must not be queued, in a
 * driver or cancelable. IRQL <= DISPATCH_LEVEL.
 */
VOID
IoFreeIrp(PIRP Irp)
{
    KiCheckIrqlAtMost(DISPATCH_LEVEL, Irp);
    ASSERT(Irp->Type == IO_TYPE_IRP);
    ASSERT(Irp->AllocationFlags & IRP_ALLOCATED_FIXED_SIZE);
    ASSERT(Irp->CancelRoutine == NULL);

    Irp->Type = 0; // a completion or cancel of the freed IRP then reads garbage, not an IRP
    ExFreePoolWithTag(Irp, IOP_TAG_IRP);
}

/*
 * Re-initialises a completed IRP for another request, keeping its size, stack
 * count and allocation flags; IoStatus.Status = Iostatus. IRQL <= DISPATCH_LEVEL.
 */
VOID
IoReuseIrp(PIRP Irp, NTSTATUS Iostatus)
{
    UCHAR AllocationFlags = Irp->AllocationFlags;

    ASSERT(Irp->Type == IO_TYPE_IRP);
    ASSERT(Irp->CancelRoutine == NULL);

    IoInitializeIrp(Irp, Irp->Size, Irp->StackCount);
    Irp->AllocationFlags = AllocationFlags;
    Irp->IoStatus.Status = Iostatus;
}

/*
 * Moves Irp to its next stack location (bug check 0x35 NO_MORE_IRP_STACK_LOCATIONS,
 * P1 = Irp, if none is left), records DeviceObject there and calls the driver's
 * dispatch routine for that location's MajorFunction. Returns the routine's
 * status. IRQL <= DISPATCH_LEVEL, unchanged.
 */
NTSTATUS
IoCallDriver(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PIO_STACK_LOCATION Location;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, DeviceObject);
    ASSERT(Irp->Type == IO_TYPE_IRP);

    if (Irp->CurrentLocation <= 1)
    {
        KeBugCheckEx(NO_MORE_IRP_STACK_LOCATIONS, (ULONG_PTR)Irp, 0, 0, 0);
    }
    Irp->CurrentLocation--;
    Irp->Tail.Overlay.CurrentStackLocation--;
    Location = Irp->Tail.Overlay.CurrentStackLocation;
    Location->DeviceObject = DeviceObject;
    return DeviceObject->DriverObject->MajorFunction[Location->MajorFunction](DeviceObject, Irp);
}

/*
 * Completes Irp (API.md §11.2). Walks up from the current location: each step
 * moves CurrentLocation up one, sets PendingReturned from the location's
 * SL_PENDING_RETURNED and calls its completion routine if the SL_INVOKE_ON_*
 * flags match the status (or Irp->Cancel), with the upper driver's device
 * (NULL for the originator's routine). STATUS_MORE_PROCESSING_REQUIRED stops
 * the walk: the IRP then belongs to that routine. Locations without a routine
 * pass PendingReturned up (IoMarkIrpPending). Then the final step (above).
 * A second completion is bug check 0x44 (P1 = Irp, both builds); the checked
 * build also raises 0xC9/0x6, 0x7 and 0xE. IRQL <= DISPATCH_LEVEL; hold no spin lock.
 */
VOID
IoCompleteRequest(PIRP Irp, CCHAR PriorityBoost)
{
    PIO_STACK_LOCATION Location;

    if (Irp->Type != IO_TYPE_IRP || Irp->CurrentLocation > Irp->StackCount + 1)
    {
        KeBugCheckEx(MULTIPLE_IRP_COMPLETE_REQUESTS, (ULONG_PTR)Irp, 0, 0, 0);
    }
    IopCheckCompletion(Irp);

    for (Location = Irp->Tail.Overlay.CurrentStackLocation; Irp->CurrentLocation <= Irp->StackCount;
         Location++)
    {
        Irp->CurrentLocation++;
        Irp->Tail.Overlay.CurrentStackLocation++;
        Irp->PendingReturned = (Location->Control & SL_PENDING_RETURNED) != 0;

        if (IopShouldInvoke(Irp, Location))
        {
            PDEVICE_OBJECT UpperDevice = NULL;
            NTSTATUS Status;

            if (Irp->CurrentLocation <= Irp->StackCount)
            {
                UpperDevice = Irp->Tail.Overlay.CurrentStackLocation->DeviceObject;
            }
            Location->Control = 0;
            Status = Location->CompletionRoutine(UpperDevice, Irp, Location->Context);
            if (Status == STATUS_MORE_PROCESSING_REQUIRED)
            {
                return; // the IRP is the routine's now: do not touch it
            }
        }
        else
        {
            if (Irp->PendingReturned && Irp->CurrentLocation <= Irp->StackCount)
            {
                IoMarkIrpPending(Irp);
            }
            Location->Control = 0;
        }
    }

    /* The walk went past the last location: CurrentLocation = StackCount + 2. */
    Irp->CurrentLocation++;
    Irp->Tail.Overlay.CurrentStackLocation++;

    if (Irp->UserIosb != NULL)
    {
        *Irp->UserIosb = Irp->IoStatus;
    }
    if (Irp->UserEvent != NULL)
    {
        /* Last touch of the IRP: its waiter may free it as soon as the event is signalled. */
        KeSetEvent(Irp->UserEvent, PriorityBoost, FALSE);
    }
}
