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
 *
 * Allocation, as Windows: an IRP of up to IOP_LARGE_IRP_STACK_LOCATIONS
 * locations is a fixed-size IRP (IRP_ALLOCATED_FIXED_SIZE) of one of two
 * sizes, 1 location or 8, taken from the current processor's lookaside list
 * of that size, else from the shared one behind it, else from pool; IoFreeIrp
 * puts it back the same way (pool when both lists are full). A caller that
 * asks for quota (Spindle has none to charge) takes a cached IRP only while
 * its processor's float lasts: such an IRP is marked IRP_LOOKASIDE_ALLOCATION
 * and IoFreeIrp gives the float back; with the float spent it gets a pool IRP
 * of its own size. Larger IRPs always come from pool, unflagged.
 */
#include "kernel/io/iop.h"

#include "kernel/ex/ex.h"

/* IRPs all processors together may hand to ChargeQuota callers from the lists (Windows' limit). */
#define IOP_LOOKASIDE_IRP_LIMIT 512

NPAGED_LOOKASIDE_LIST IopIrpLookasideP[MAXIMUM_PROCESSORS][2];
NPAGED_LOOKASIDE_LIST IopIrpLookasideL[2];
volatile LONG IopLookasideIrpFloat[MAXIMUM_PROCESSORS];
static BOOLEAN IopIrpLookasideReady;

static const USHORT IopIrpListSize[2] = {
    [IOP_SMALL_IRP_LIST] = IoSizeOfIrp(1),
    [IOP_LARGE_IRP_LIST] = IoSizeOfIrp(IOP_LARGE_IRP_STACK_LOCATIONS),
};

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

INIT_CODE VOID
IopInitializeIrpLookaside(VOID)
{
    for (ULONG List = 0; List < 2; List++)
    {
        ExInitializeNPagedLookasideList(&IopIrpLookasideL[List], NULL, NULL, 0,
                                        IopIrpListSize[List], IOP_TAG_IRP, 0);
        for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
        {
            ExInitializeNPagedLookasideList(&IopIrpLookasideP[Number][List], NULL, NULL, 0,
                                            IopIrpListSize[List], IOP_TAG_IRP, 0);
        }
    }
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        IopLookasideIrpFloat[Number] = IOP_LOOKASIDE_IRP_LIMIT / (LONG)KiActiveProcessorCount;
    }
    IopIrpLookasideReady = TRUE;
}

/* Takes one IRP of this processor's float; FALSE when it is spent. */
static BOOLEAN
IopTakeIrpFloat(ULONG Number)
{
    LONG Float = __atomic_load_n(&IopLookasideIrpFloat[Number], __ATOMIC_RELAXED);

    while (Float > 0)
    {
        /* Relaxed: the float is a count, it orders nothing. */
        if (__atomic_compare_exchange_n(&IopLookasideIrpFloat[Number], &Float, Float - 1, FALSE,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        {
            return TRUE;
        }
    }
    return FALSE;
}

/*
 * Allocates an IRP with StackSize stack locations (see the top for where from
 * and its AllocationFlags) and initialises it (IoInitializeIrp with the
 * packet's real size). Returns NULL if StackSize is negative or the pool is
 * exhausted. No quota is charged. IRQL <= DISPATCH_LEVEL.
 */
PIRP
IoAllocateIrp(CCHAR StackSize, BOOLEAN ChargeQuota)
{
    USHORT PacketSize;
    UCHAR Flags = 0;
    PIRP Irp = NULL;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, 0);

    if (StackSize < 0)
    {
        return NULL;
    }
    PacketSize = IoSizeOfIrp(StackSize);
    if (StackSize <= IOP_LARGE_IRP_STACK_LOCATIONS && IopIrpLookasideReady)
    {
        /* Below DISPATCH_LEVEL the number may be stale; any processor's lists are safe to use. */
        ULONG Number = KeGetCurrentPrcb()->Number;
        ULONG List = StackSize == 1 ? IOP_SMALL_IRP_LIST : IOP_LARGE_IRP_LIST;

        if (!ChargeQuota || IopTakeIrpFloat(Number))
        {
            Flags = IRP_ALLOCATED_FIXED_SIZE;
            PacketSize = IopIrpListSize[List];
            Irp = ExpPopPerProcessorLookaside(&IopIrpLookasideP[Number][List],
                                              &IopIrpLookasideL[List]);
            if (Irp != NULL && ChargeQuota)
            {
                Flags |= IRP_LOOKASIDE_ALLOCATION;
            }
            else if (ChargeQuota)
            {
                /* Nothing cached: a pool IRP, which uses none of the float. */
                __atomic_add_fetch(&IopLookasideIrpFloat[Number], 1, __ATOMIC_RELAXED);
            }
        }
    }
    if (Irp == NULL)
    {
        Irp = ExAllocatePoolWithTag(NonPagedPool, PacketSize, IOP_TAG_IRP);
        if (Irp == NULL)
        {
            return NULL;
        }
    }
    IoInitializeIrp(Irp, PacketSize, StackSize);
    Irp->AllocationFlags = Flags;
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
 * Frees an IRP that IoAllocateIrp returned: a fixed-size one to this
 * processor's lookaside list of its size, else the shared one, else pool;
 * any other to pool. An IRP_LOOKASIDE_ALLOCATION gives its float back. The
 * IRP must not be queued, in a driver or cancelable. IRQL <= DISPATCH_LEVEL.
 */
VOID
IoFreeIrp(PIRP Irp)
{
    ULONG Number = KeGetCurrentPrcb()->Number; // may be stale below DISPATCH_LEVEL: harmless
    UCHAR Flags = Irp->AllocationFlags;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Irp);
    ASSERT(Irp->Type == IO_TYPE_IRP);
    ASSERT(Irp->CancelRoutine == NULL);

    Irp->Type = 0; // a completion or cancel of the freed IRP then reads garbage, not an IRP
    if (Flags & IRP_LOOKASIDE_ALLOCATION)
    {
        Irp->AllocationFlags = Flags & ~IRP_LOOKASIDE_ALLOCATION;
        __atomic_add_fetch(&IopLookasideIrpFloat[Number], 1, __ATOMIC_RELAXED);
    }
    if ((Flags & IRP_ALLOCATED_FIXED_SIZE) && IopIrpLookasideReady)
    {
        for (ULONG List = 0; List < 2; List++)
        {
            if (Irp->Size == IopIrpListSize[List] &&
                ExpPushPerProcessorLookaside(&IopIrpLookasideP[Number][List],
                                             &IopIrpLookasideL[List], Irp))
            {
                return;
            }
        }
    }
    ExFreePoolWithTag(Irp, IOP_TAG_IRP);
}

/*
 * Re-initialises a completed IRP for another request, keeping its size, stack
 * count and allocation flags (IRP_LOOKASIDE_ALLOCATION included, as Windows);
 * IoStatus.Status = Iostatus. IRQL <= DISPATCH_LEVEL.
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
