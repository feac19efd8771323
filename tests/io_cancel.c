/* SPDX-License-Identifier: MIT */
/*
 * IoCancel: the cancel spin lock, IoSetCancelRoutine and IoCancelIrp
 * (API.md §11.2): the routine runs at DISPATCH_LEVEL holding the cancel lock
 * with CancelIrql = the caller's IRQL, TRUE/FALSE returns, IRQL unchanged,
 * bug checks 0x48 and (checked) 0x11B, and the claim protocol raced from two
 * processors (API.md §11.4: dequeue vs. cancel, insert vs. cancel).
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define ICN_RACE_IRPS 1500 // per processor pair
#define ICN_POOL_TAG  'nCtK'

typedef struct _ICN_SEEN
{
    ULONG Calls;
    KIRQL Irql;
    KIRQL CancelIrql;
    BOOLEAN LockHeld;   // the cancel lock is held, by this processor
    BOOLEAN Cancel;     // Irp->Cancel
    BOOLEAN RoutineSet; // Irp->CancelRoutine was still set
    PDEVICE_OBJECT DeviceObject;
} ICN_SEEN;

static ICN_SEEN IcnSeen;
static PDRIVER_OBJECT IcnDriver;
static PIRP IcnPending; // the one IRP the test device holds

static BOOLEAN
IcnHoldsCancelLock(VOID)
{
    return !KeTestSpinLock(&IopCancelSpinLock) &&
           IopCancelLockOwner == KeGetCurrentProcessorNumber() + 1;
}

static VOID
IcnRecord(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IcnSeen.Calls++;
    IcnSeen.Irql = KeGetCurrentIrql();
    IcnSeen.CancelIrql = Irp->CancelIrql;
    IcnSeen.LockHeld = IcnHoldsCancelLock();
    IcnSeen.Cancel = Irp->Cancel;
    IcnSeen.RoutineSet = Irp->CancelRoutine != NULL;
    IcnSeen.DeviceObject = DeviceObject;
}

/* A well-behaved routine for an IRP the device holds: release, then complete. */
static VOID
IcnCancelAndComplete(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IcnRecord(DeviceObject, Irp);
    if (Irp == IcnPending)
    {
        IcnPending = NULL;
    }
    IoReleaseCancelSpinLock(Irp->CancelIrql);
    Irp->IoStatus.Status = STATUS_CANCELLED;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

/* A routine for an IRP at its originator: release only. */
static VOID
IcnCancelOnly(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IcnRecord(DeviceObject, Irp);
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}

#if DBG
static VOID
IcnCancelKeepingLock(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IcnRecord(DeviceObject, Irp);
}

static VOID
IcnCancelWrongIrql(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IcnRecord(DeviceObject, Irp);
    IoReleaseCancelSpinLock(DISPATCH_LEVEL);
}
#endif

/* Dispatch: keep the IRP pending and cancelable (set the routine, then re-check Cancel). */
static NTSTATUS
IcnDispatch(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    KIRQL Irql;

    IoMarkIrpPending(Irp);
    IoAcquireCancelSpinLock(&Irql);
    IcnPending = Irp;
    IoSetCancelRoutine(Irp, IcnCancelAndComplete);
    if (Irp->Cancel && IoSetCancelRoutine(Irp, NULL) != NULL)
    {
        IcnPending = NULL;
        IoReleaseCancelSpinLock(Irql);
        Irp->IoStatus.Status = STATUS_CANCELLED;
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        return STATUS_PENDING;
    }
    IoReleaseCancelSpinLock(Irql);
    return STATUS_PENDING;
}

static VOID
IcnUnload(PDRIVER_OBJECT DriverObject)
{
    while (DriverObject->DeviceObject != NULL)
    {
        IoDeleteDevice(DriverObject->DeviceObject);
    }
}

static NTSTATUS
IcnEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    PDEVICE_OBJECT DeviceObject;
    NTSTATUS Status;

    DriverObject->MajorFunction[IRP_MJ_READ] = IcnDispatch;
    DriverObject->DriverUnload = IcnUnload;
    Status = IoCreateDevice(DriverObject, 0, NULL, FILE_DEVICE_UNKNOWN, 0, FALSE, &DeviceObject);
    if (NT_SUCCESS(Status))
    {
        DeviceObject->Flags &= ~DO_DEVICE_INITIALIZING;
        IcnDriver = DriverObject;
    }
    return Status;
}

static NTSTATUS
IcnKeepIrp(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    InterlockedIncrement((LONG volatile *)Context);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

/* Sends a cancelable READ to the test device; the IRP stays pending in the device. */
static PIRP
IcnSubmit(volatile LONG *Completions)
{
    PIRP Irp = IoAllocateIrp(IcnDriver->DeviceObject->StackSize, FALSE);

    KT_ASSERT(Irp != NULL);
    IoGetNextIrpStackLocation(Irp)->MajorFunction = IRP_MJ_READ;
    IoSetCompletionRoutine(Irp, IcnKeepIrp, (PVOID)Completions, TRUE, TRUE, TRUE);
    KT_EXPECT_EQ(IoCallDriver(IcnDriver->DeviceObject, Irp), STATUS_PENDING);
    return Irp;
}

static VOID
IcnStart(VOID)
{
    memset(&IcnSeen, 0, sizeof(IcnSeen));
    IcnPending = NULL;
    KT_ASSERT_EQ(IoCreateDriver(NULL, IcnEntry), STATUS_SUCCESS);
}

static VOID
IcnStop(VOID)
{
    IoDeleteDriver(IcnDriver);
    IcnDriver = NULL;
}

/* ---------------------------------------------------------------- single processor */

KTEST(IoCancel, cancel_spin_lock_raises_to_dispatch_and_release_restores)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL};

    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        KIRQL Entry;
        KIRQL Old = 0xFF;

        KeRaiseIrql(Levels[l], &Entry);
        IoAcquireCancelSpinLock(&Old);
        KT_EXPECT_EQ(Old, Levels[l]);
        KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
        KT_EXPECT(IcnHoldsCancelLock());
        IoReleaseCancelSpinLock(Old);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
        KT_EXPECT_EQ(IopCancelLockOwner, 0);
        KeLowerIrql(Entry);
    }
}

KTEST(IoCancel, set_cancel_routine_exchanges_and_returns_the_previous_routine)
{
    PIRP Irp = IoAllocateIrp(1, FALSE);

    KT_ASSERT(Irp != NULL);
    KT_EXPECT(IoSetCancelRoutine(Irp, IcnCancelOnly) == NULL);
    KT_EXPECT(Irp->CancelRoutine == IcnCancelOnly);
    KT_EXPECT(IoSetCancelRoutine(Irp, IcnCancelAndComplete) == IcnCancelOnly);
    KT_EXPECT(IoSetCancelRoutine(Irp, NULL) == IcnCancelAndComplete);
    KT_EXPECT(IoSetCancelRoutine(Irp, NULL) == NULL);
    IoFreeIrp(Irp);
}

KTEST(IoCancel, cancel_without_a_routine_marks_the_irp_and_returns_false)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL};

    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        PIRP Irp = IoAllocateIrp(1, FALSE);
        KIRQL Entry;

        KT_ASSERT(Irp != NULL);
        Irp->CancelIrql = 0x5A;
        KeRaiseIrql(Levels[l], &Entry);
        KT_EXPECT_EQ(IoCancelIrp(Irp), FALSE);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KeLowerIrql(Entry);
        KT_EXPECT_EQ(Irp->Cancel, TRUE);
        KT_EXPECT_EQ(Irp->CancelIrql, 0x5A); // untouched
        KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
        KT_EXPECT_EQ(IoCancelIrp(Irp), FALSE); // and again
        IoFreeIrp(Irp);
    }
}

KTEST(IoCancel, cancel_calls_the_routine_at_dispatch_holding_the_lock_with_cancel_irql)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL};

    IcnStart();
    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        volatile LONG Completions = 0;
        PIRP Irp = IcnSubmit(&Completions);
        KIRQL Entry;
        BOOLEAN Result;

        KT_EXPECT(IcnPending == Irp);
        KT_EXPECT_EQ(Completions, 0);
        memset(&IcnSeen, 0, sizeof(IcnSeen));
        KeRaiseIrql(Levels[l], &Entry);
        Result = IoCancelIrp(Irp);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KeLowerIrql(Entry);

        KT_EXPECT_EQ(Result, TRUE);
        KT_EXPECT_EQ(IcnSeen.Calls, 1);
        KT_EXPECT_EQ(IcnSeen.Irql, DISPATCH_LEVEL);
        KT_EXPECT_EQ(IcnSeen.LockHeld, TRUE);
        KT_EXPECT_EQ(IcnSeen.CancelIrql, Levels[l]);
        KT_EXPECT_EQ(IcnSeen.Cancel, TRUE);
        KT_EXPECT_EQ(IcnSeen.RoutineSet, FALSE); // taken before the call
        KT_EXPECT(IcnSeen.DeviceObject == IcnDriver->DeviceObject);
        KT_EXPECT_EQ(Completions, 1);
        KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_CANCELLED);
        KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));

        /* The routine is gone: a second cancel just returns FALSE. */
        KT_EXPECT_EQ(IoCancelIrp(Irp), FALSE);
        KT_EXPECT_EQ(IcnSeen.Calls, 1);
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        IoFreeIrp(Irp);
    }
    IcnStop();
}

KTEST(IoCancel, routine_of_an_irp_at_its_originator_gets_no_device)
{
    PIRP Irp = IoAllocateIrp(2, FALSE);

    KT_ASSERT(Irp != NULL);
    memset(&IcnSeen, 0, sizeof(IcnSeen));
    IoSetCancelRoutine(Irp, IcnCancelOnly);
    KT_EXPECT_EQ(IoCancelIrp(Irp), TRUE);
    KT_EXPECT_EQ(IcnSeen.Calls, 1);
    KT_EXPECT(IcnSeen.DeviceObject == NULL);
    KT_EXPECT_EQ(IcnSeen.CancelIrql, PASSIVE_LEVEL);
    IoFreeIrp(Irp);
}

KTEST(IoCancel, cancel_before_the_routine_is_set_is_seen_by_the_driver)
{
    volatile LONG Completions = 0;
    PIRP Irp;

    IcnStart();
    Irp = IoAllocateIrp(IcnDriver->DeviceObject->StackSize, FALSE);
    KT_ASSERT(Irp != NULL);
    KT_EXPECT_EQ(IoCancelIrp(Irp), FALSE); // no routine yet
    IoGetNextIrpStackLocation(Irp)->MajorFunction = IRP_MJ_READ;
    IoSetCompletionRoutine(Irp, IcnKeepIrp, (PVOID)&Completions, TRUE, TRUE, TRUE);
    KT_EXPECT_EQ(IoCallDriver(IcnDriver->DeviceObject, Irp), STATUS_PENDING);
    KT_EXPECT_EQ(Completions, 1); // the driver's re-check caught it
    KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_CANCELLED);
    KT_EXPECT(Irp->CancelRoutine == NULL);
    KT_EXPECT(IcnPending == NULL);
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    IoFreeIrp(Irp);
    IcnStop();
}

KTEST(IoCancel, cancel_of_a_completed_irp_with_a_routine_bugchecks)
{
    PIRP Irp = IoAllocateIrp(1, FALSE);

    KT_ASSERT(Irp != NULL);
    IoSetNextIrpStackLocation(Irp);
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    KT_ASSERT_EQ(Irp->CurrentLocation, Irp->StackCount + 2);

    IoSetCancelRoutine(Irp, IcnCancelOnly); // a driver bug: a routine on a completed IRP
    memset(&IcnSeen, 0, sizeof(IcnSeen));
    KT_EXPECT_BUGCHECK(CANCEL_STATE_IN_COMPLETED_IRP, IoCancelIrp(Irp));
    KT_EXPECT_EQ(IcnSeen.Calls, 0);
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock)); // released before the bug check
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT(Irp->CancelRoutine == NULL);
    IoFreeIrp(Irp);
}

KTEST(IoCancel, cancel_routine_returning_with_the_lock_or_wrong_irql_bugchecks)
{
#if DBG
    PIRP Irp = IoAllocateIrp(1, FALSE);

    KT_ASSERT(Irp != NULL);
    IoSetCancelRoutine(Irp, IcnCancelKeepingLock);
    memset(&IcnSeen, 0, sizeof(IcnSeen));
    KT_EXPECT_BUGCHECK(DRIVER_RETURNED_HOLDING_CANCEL_LOCK, IoCancelIrp(Irp));
    KT_EXPECT_EQ(IcnSeen.Calls, 1);
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock)); // IoCancelIrp dropped it for us
    KT_EXPECT_EQ(IopCancelLockOwner, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);

    /* Released, but to DISPATCH_LEVEL instead of CancelIrql (PASSIVE_LEVEL). */
    IoSetCancelRoutine(Irp, IcnCancelWrongIrql);
    KT_EXPECT_BUGCHECK(DRIVER_RETURNED_HOLDING_CANCEL_LOCK, IoCancelIrp(Irp));
    KT_EXPECT_EQ(IcnSeen.Calls, 2);
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);

    /* At DISPATCH_LEVEL releasing to DISPATCH_LEVEL is right: no bug check. */
    {
        KIRQL Old = KeRaiseIrqlToDpcLevel();
        IoSetCancelRoutine(Irp, IcnCancelWrongIrql);
        KT_EXPECT_EQ(IoCancelIrp(Irp), TRUE);
        KeLowerIrql(Old);
    }
    IoFreeIrp(Irp);
#else
    KT_SKIP("checked build only");
#endif
}

/* ---------------------------------------------------------------- the claim protocol, raced */

typedef struct _ICN_SLOT
{
    PIRP Irp;
    volatile LONG Completions;
    volatile LONG RoutineCalls;
    volatile LONG Violations; // routine not at DL or without the cancel lock
    BOOLEAN CancelReturned;   // IoCancelIrp's result
    BOOLEAN DeviceCompleted;  // the "device" completed it with STATUS_SUCCESS
    BOOLEAN InsertCaught;     // the device's re-check after setting the routine caught the cancel
} ICN_SLOT;

typedef struct _ICN_RACE
{
    ICN_SLOT *Slots; // ICN_RACE_IRPS per pair
    ULONG Pairs;
} ICN_RACE;

static NTSTATUS
IcnRaceCompletion(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    InterlockedIncrement(&((ICN_SLOT *)Context)->Completions);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static VOID
IcnRaceCancel(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    ICN_SLOT *Slot = IoGetCurrentIrpStackLocation(Irp)->Context; // stashed by the device side

    if (KeGetCurrentIrql() != DISPATCH_LEVEL || !IcnHoldsCancelLock())
    {
        InterlockedIncrement(&Slot->Violations);
    }
    InterlockedIncrement(&Slot->RoutineCalls);
    IoReleaseCancelSpinLock(Irp->CancelIrql);
    Irp->IoStatus.Status = STATUS_CANCELLED;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

static VOID
IcnSpin(ULONG Limit)
{
    for (ULONG i = (ULONG)KtRandom() % Limit; i > 0; i--)
    {
        YieldProcessor();
    }
}

/*
 * Even index: the device. It makes each IRP cancelable (set routine, re-check
 * Cancel), works a random while, then claims it for completion. Odd index:
 * cancels the same IRPs at random times.
 */
static VOID
IcnRaceRoutine(ULONG Index, PVOID Context)
{
    ICN_RACE *Race = Context;
    ULONG Pair = Index / 2;
    ICN_SLOT *Slots;

    if (Pair >= Race->Pairs)
    {
        return;
    }
    Slots = &Race->Slots[Pair * ICN_RACE_IRPS];
    for (ULONG i = 0; i < ICN_RACE_IRPS; i++)
    {
        ICN_SLOT *Slot = &Slots[i];
        PIRP Irp = Slot->Irp;

        if (Index & 1)
        {
            IcnSpin(600);
            Slot->CancelReturned = IoCancelIrp(Irp);
            continue;
        }
        IcnSpin(200);
        IoSetCancelRoutine(Irp, IcnRaceCancel);
        if (Irp->Cancel && IoSetCancelRoutine(Irp, NULL) != NULL)
        {
            Slot->InsertCaught = TRUE;
            Irp->IoStatus.Status = STATUS_CANCELLED;
            IoCompleteRequest(Irp, IO_NO_INCREMENT);
            continue;
        }
        IcnSpin(400);
        if (IoSetCancelRoutine(Irp, NULL) != NULL)
        {
            Slot->DeviceCompleted = TRUE;
            Irp->IoStatus.Status = STATUS_SUCCESS;
            IoCompleteRequest(Irp, IO_NO_INCREMENT);
        }
        /* Else IoCancelIrp took the routine: the cancel routine completes it. */
    }
}

KTEST_EX(IoCancel, claim_and_cancel_race_completes_every_irp_exactly_once, KTEST_SMP_ONLY, 0)
{
    ULONG Processors = KeQueryActiveProcessorCount(NULL);
    ULONG Total;
    ICN_RACE Race;
    ULONG Cancelled = 0, Succeeded = 0, Caught = 0;

    Race.Pairs = Processors / 2;
    Total = Race.Pairs * ICN_RACE_IRPS;
    Race.Slots = ExAllocatePoolWithTag(NonPagedPool, Total * sizeof(ICN_SLOT), ICN_POOL_TAG);
    KT_ASSERT(Race.Slots != NULL);
    memset(Race.Slots, 0, Total * sizeof(ICN_SLOT));
    for (ULONG i = 0; i < Total; i++)
    {
        PIRP Irp = IoAllocateIrp(2, FALSE);
        KT_ASSERT(Irp != NULL);
        IoSetCompletionRoutine(Irp, IcnRaceCompletion, &Race.Slots[i], TRUE, TRUE, TRUE);
        IoSetNextIrpStackLocation(Irp); // the device's location
        IoGetCurrentIrpStackLocation(Irp)->Context = &Race.Slots[i];
        Race.Slots[i].Irp = Irp;
    }

    KtRunOnProcessors(Race.Pairs * 2, IcnRaceRoutine, &Race);

    for (ULONG i = 0; i < Total; i++)
    {
        ICN_SLOT *Slot = &Race.Slots[i];
        NTSTATUS Status = Slot->Irp->IoStatus.Status;

        KT_EXPECT_EQ(Slot->Completions, 1);
        KT_EXPECT_EQ(Slot->Violations, 0);
        KT_EXPECT_EQ(Slot->RoutineCalls, Slot->CancelReturned ? 1 : 0);
        KT_EXPECT_EQ(Slot->Irp->Cancel, TRUE); // every IRP got its IoCancelIrp
        if (Slot->CancelReturned || Slot->InsertCaught)
        {
            KT_EXPECT_EQ(Status, STATUS_CANCELLED);
            KT_EXPECT_EQ(Slot->DeviceCompleted, FALSE);
        }
        else
        {
            KT_EXPECT_EQ(Slot->DeviceCompleted, TRUE);
            KT_EXPECT_EQ(Status, STATUS_SUCCESS);
        }
        Cancelled += Slot->CancelReturned;
        Succeeded += Slot->DeviceCompleted;
        Caught += Slot->InsertCaught;
        KT_EXPECT(Slot->Irp->CancelRoutine == NULL);
        IoCompleteRequest(Slot->Irp, IO_NO_INCREMENT);
        IoFreeIrp(Slot->Irp);
    }
    KtLog("%u IRPs: %u cancelled by the routine, %u caught at insert, %u completed by the device",
          Total, Cancelled, Caught, Succeeded);
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
    ExFreePoolWithTag(Race.Slots, ICN_POOL_TAG);
}
