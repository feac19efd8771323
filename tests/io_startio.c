/* SPDX-License-Identifier: MIT */
/*
 * IoStartIo: IoStartPacket, IoStartNextPacket(ByKey), IoSetStartIoAttributes
 * (API.md §11.2): StartIo runs at DISPATCH_LEVEL whatever the caller's IRQL
 * (not ReactOS's §13.2), CurrentIrp and Busy follow the device's ownership,
 * queued IRPs get the cancel routine, an IRP cancelled before it is queued is
 * cancelled at once with CancelIrql = DISPATCH_LEVEL, NonCancelable clears the
 * routine before StartIo, deferred StartIo runs a start-next made inside
 * StartIo after it returns instead of recursing, and the checked build's 0x8.
 *
 * The test driver "Tsi" has one device. Its StartIo records each call and
 * either leaves the IRP to the test ("the hardware") or, in chain mode,
 * completes it at once and starts the next packet from inside StartIo.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define TSI_MAX_IRPS 8

typedef struct _TSI_CALL
{
    PIRP Irp;
    KIRQL Irql;
    BOOLEAN Current;    // Irp == CurrentIrp
    BOOLEAN Busy;       // the device queue was busy
    BOOLEAN RoutineSet; // the IRP still had a cancel routine
    ULONG Depth;        // StartIo calls in progress, this one included
} TSI_CALL;

typedef struct _TSI_STATE
{
    PDEVICE_OBJECT Device;
    TSI_CALL Calls[TSI_MAX_IRPS * 2];
    ULONG CallCount;
    ULONG Depth;
    ULONG MaxDepth;
    BOOLEAN Chain;      // StartIo completes the IRP and starts the next one itself
    BOOLEAN ChainByKey; // ... with IoStartNextPacketByKey(ChainKey)
    ULONG ChainKey;
    ULONG CancelCalls;
    KIRQL CancelIrql; // what the last cancel routine call saw
    volatile LONG Completions[TSI_MAX_IRPS];
    PIRP Irps[TSI_MAX_IRPS];
} TSI_STATE;

static TSI_STATE Tsi;
static PDRIVER_OBJECT TsiDriver;

static VOID
TsiComplete(PIRP Irp, NTSTATUS Status)
{
    Irp->IoStatus.Status = Status;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

/* The MS pattern for the system queue: a current IRP is StartIo's; a queued one is removed here. */
static VOID
TsiCancel(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    Tsi.CancelCalls++;
    Tsi.CancelIrql = Irp->CancelIrql;
    if (Irp == DeviceObject->CurrentIrp)
    {
        IoReleaseCancelSpinLock(Irp->CancelIrql);
        return;
    }
    if (KeRemoveEntryDeviceQueue(&DeviceObject->DeviceQueue, &Irp->Tail.Overlay.DeviceQueueEntry))
    {
        IoReleaseCancelSpinLock(Irp->CancelIrql);
        TsiComplete(Irp, STATUS_CANCELLED);
        return;
    }
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}

static VOID
TsiStartIo(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    TSI_CALL *Call = &Tsi.Calls[Tsi.CallCount++ % ARRAYSIZE(Tsi.Calls)];

    Tsi.Depth++;
    Tsi.MaxDepth = Tsi.Depth > Tsi.MaxDepth ? Tsi.Depth : Tsi.MaxDepth;
    Call->Irp = Irp;
    Call->Irql = KeGetCurrentIrql();
    Call->Current = Irp == DeviceObject->CurrentIrp;
    Call->Busy = DeviceObject->DeviceQueue.Busy;
    Call->RoutineSet = Irp->CancelRoutine != NULL;
    Call->Depth = Tsi.Depth;
    if (Tsi.Chain)
    {
        IoSetCancelRoutine(Irp, NULL);
        TsiComplete(Irp, STATUS_SUCCESS);
        if (Tsi.ChainByKey)
        {
            IoStartNextPacketByKey(DeviceObject, TRUE, Tsi.ChainKey);
        }
        else
        {
            IoStartNextPacket(DeviceObject, TRUE);
        }
    }
    Tsi.Depth--;
}

static NTSTATUS
TsiEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    NTSTATUS Status;

    DriverObject->DriverStartIo = TsiStartIo;
    Status = IoCreateDevice(DriverObject, 0, NULL, FILE_DEVICE_UNKNOWN, 0, FALSE, &Tsi.Device);
    if (NT_SUCCESS(Status))
    {
        Tsi.Device->Flags &= ~DO_DEVICE_INITIALIZING;
        TsiDriver = DriverObject;
    }
    return Status;
}

static NTSTATUS
TsiCompletion(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    InterlockedIncrement((LONG volatile *)Context);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

/* Starts the driver and builds Count IRPs "sent" to the device (at its location). */
static VOID
TsiStart(ULONG Count)
{
    memset(&Tsi, 0, sizeof(Tsi));
    KT_ASSERT_EQ(IoCreateDriver(NULL, TsiEntry), STATUS_SUCCESS);
    for (ULONG i = 0; i < Count; i++)
    {
        PIRP Irp = IoAllocateIrp(1, FALSE);
        KT_ASSERT(Irp != NULL);
        IoSetCompletionRoutine(Irp, TsiCompletion, (PVOID)&Tsi.Completions[i], TRUE, TRUE, TRUE);
        IoSetNextIrpStackLocation(Irp);
        IoGetCurrentIrpStackLocation(Irp)->DeviceObject = Tsi.Device;
        IoMarkIrpPending(Irp);
        Tsi.Irps[i] = Irp;
    }
}

static VOID
TsiStop(ULONG Count)
{
    for (ULONG i = 0; i < Count; i++)
    {
        KT_EXPECT_EQ(Tsi.Completions[i], 1);
        IoCompleteRequest(Tsi.Irps[i], IO_NO_INCREMENT);
        IoFreeIrp(Tsi.Irps[i]);
    }
    KT_EXPECT_EQ(Tsi.Device->DeviceQueue.Busy, FALSE);
    KT_EXPECT(Tsi.Device->CurrentIrp == NULL);
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
    IoDeleteDevice(Tsi.Device);
    IoDeleteDriver(TsiDriver);
    TsiDriver = NULL;
}

/* "The hardware finished": complete CurrentIrp and hand the device on. */
static VOID
TsiFinishCurrent(BOOLEAN ByKey, ULONG Key)
{
    KIRQL OldIrql = KeRaiseIrqlToDpcLevel();
    PIRP Irp = Tsi.Device->CurrentIrp;

    KT_ASSERT(Irp != NULL);
    IoSetCancelRoutine(Irp, NULL);
    TsiComplete(Irp, STATUS_SUCCESS);
    if (ByKey)
    {
        IoStartNextPacketByKey(Tsi.Device, TRUE, Key);
    }
    else
    {
        IoStartNextPacket(Tsi.Device, TRUE);
    }
    KeLowerIrql(OldIrql);
}

/* ---------------------------------------------------------------- tests */

KTEST(IoStartIo, start_packet_on_an_idle_device_calls_startio_at_dispatch)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL};

    TsiStart(ARRAYSIZE(Levels));
    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        PIRP Irp = Tsi.Irps[l];
        KIRQL Entry;

        KeRaiseIrql(Levels[l], &Entry);
        IoStartPacket(Tsi.Device, Irp, NULL, TsiCancel);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KeLowerIrql(Entry);

        KT_ASSERT_EQ(Tsi.CallCount, l + 1);
        KT_EXPECT(Tsi.Calls[l].Irp == Irp);
        KT_EXPECT_EQ(Tsi.Calls[l].Irql, DISPATCH_LEVEL);
        KT_EXPECT_EQ(Tsi.Calls[l].Current, TRUE);
        KT_EXPECT_EQ(Tsi.Calls[l].Busy, TRUE);
        KT_EXPECT_EQ(Tsi.Calls[l].RoutineSet, TRUE); // cancelable while StartIo runs
        KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
        KT_EXPECT_EQ(Irp->Tail.Overlay.DeviceQueueEntry.Inserted, FALSE);
        TsiFinishCurrent(FALSE, 0);
        KT_EXPECT_EQ(Tsi.Device->DeviceQueue.Busy, FALSE);
        KT_EXPECT(Tsi.Device->CurrentIrp == NULL);
    }
    TsiStop(ARRAYSIZE(Levels));
}

KTEST(IoStartIo, start_packet_on_a_busy_device_queues_with_the_cancel_routine)
{
    TsiStart(4);
    IoStartPacket(Tsi.Device, Tsi.Irps[0], NULL, TsiCancel);
    for (ULONG i = 1; i < 4; i++)
    {
        IoStartPacket(Tsi.Device, Tsi.Irps[i], NULL, TsiCancel);
        KT_EXPECT_EQ(Tsi.CallCount, 1);
        KT_EXPECT_EQ(Tsi.Irps[i]->Tail.Overlay.DeviceQueueEntry.Inserted, TRUE);
        KT_EXPECT(Tsi.Irps[i]->CancelRoutine == TsiCancel);
        KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
        KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
    }
    KT_EXPECT(Tsi.Device->CurrentIrp == Tsi.Irps[0]);

    /* Each hand-off starts the next in FIFO order, at DISPATCH_LEVEL, as CurrentIrp. */
    for (ULONG i = 1; i < 4; i++)
    {
        TsiFinishCurrent(FALSE, 0);
        KT_ASSERT_EQ(Tsi.CallCount, i + 1);
        KT_EXPECT(Tsi.Calls[i].Irp == Tsi.Irps[i]);
        KT_EXPECT_EQ(Tsi.Calls[i].Irql, DISPATCH_LEVEL);
        KT_EXPECT_EQ(Tsi.Calls[i].Current, TRUE);
        KT_EXPECT_EQ(Tsi.Calls[i].RoutineSet, TRUE);
        KT_EXPECT_EQ(Tsi.Irps[i]->Tail.Overlay.DeviceQueueEntry.Inserted, FALSE);
    }
    TsiFinishCurrent(FALSE, 0);
    TsiStop(4);
}

KTEST(IoStartIo, start_packet_and_start_next_by_key_follow_the_keys)
{
    static const ULONG Keys[] = {0, 30, 10, 20, 10};
    static const ULONG Order[] = {0, 2, 4, 3, 1}; // start next by key 15, then by key 0 ...

    TsiStart(ARRAYSIZE(Keys));
    for (ULONG i = 0; i < ARRAYSIZE(Keys); i++)
    {
        ULONG Key = Keys[i];
        IoStartPacket(Tsi.Device, Tsi.Irps[i], &Key, TsiCancel);
        KT_EXPECT_EQ(Tsi.Irps[i]->Tail.Overlay.DeviceQueueEntry.SortKey, Keys[i]);
    }
    /* Queued in key order, FIFO among equal keys: 10 (Irps[2]), 10 ([4]), 20 ([3]), 30 ([1]). */
    TsiFinishCurrent(TRUE, 5);  // first key >= 5: Irps[2]
    TsiFinishCurrent(TRUE, 10); // Irps[4]
    TsiFinishCurrent(TRUE, 99); // none >= 99: the head, Irps[3]
    TsiFinishCurrent(TRUE, 0);  // Irps[1]
    KT_ASSERT_EQ(Tsi.CallCount, ARRAYSIZE(Keys));
    for (ULONG i = 0; i < ARRAYSIZE(Order); i++)
    {
        KT_EXPECT(Tsi.Calls[i].Irp == Tsi.Irps[Order[i]]);
    }
    TsiFinishCurrent(TRUE, 0);
    TsiStop(ARRAYSIZE(Keys));
}

KTEST(IoStartIo, cancel_of_a_queued_packet_removes_it_and_leaves_the_current_one)
{
    TsiStart(3);
    IoStartPacket(Tsi.Device, Tsi.Irps[0], NULL, TsiCancel);
    IoStartPacket(Tsi.Device, Tsi.Irps[1], NULL, TsiCancel);
    IoStartPacket(Tsi.Device, Tsi.Irps[2], NULL, TsiCancel);

    KT_EXPECT_EQ(IoCancelIrp(Tsi.Irps[1]), TRUE);
    KT_EXPECT_EQ(Tsi.CancelCalls, 1);
    KT_EXPECT_EQ(Tsi.CancelIrql, PASSIVE_LEVEL);
    KT_EXPECT_EQ(Tsi.Completions[1], 1);
    KT_EXPECT_EQ(Tsi.Irps[1]->IoStatus.Status, STATUS_CANCELLED);
    KT_EXPECT_EQ(Tsi.Irps[1]->Tail.Overlay.DeviceQueueEntry.Inserted, FALSE);

    /* The current IRP's routine leaves it to StartIo's owner; nothing is completed. */
    KT_EXPECT_EQ(IoCancelIrp(Tsi.Irps[0]), TRUE);
    KT_EXPECT_EQ(Tsi.CancelCalls, 2);
    KT_EXPECT_EQ(Tsi.Completions[0], 0);
    KT_EXPECT(Tsi.Device->CurrentIrp == Tsi.Irps[0]);

    TsiFinishCurrent(FALSE, 0); // completes Irps[0], starts Irps[2]
    KT_ASSERT_EQ(Tsi.CallCount, 2);
    KT_EXPECT(Tsi.Calls[1].Irp == Tsi.Irps[2]);
    TsiFinishCurrent(FALSE, 0);
    TsiStop(3);
}

KTEST(IoStartIo, packet_cancelled_before_queuing_is_cancelled_at_once_at_dispatch)
{
    TsiStart(2);
    IoStartPacket(Tsi.Device, Tsi.Irps[0], NULL, TsiCancel);
    KT_EXPECT_EQ(IoCancelIrp(Tsi.Irps[1]), FALSE); // no routine yet
    IoStartPacket(Tsi.Device, Tsi.Irps[1], NULL, TsiCancel);
    KT_EXPECT_EQ(Tsi.CancelCalls, 1);
    KT_EXPECT_EQ(Tsi.CancelIrql, DISPATCH_LEVEL); // IoStartPacket raised first
    KT_EXPECT_EQ(Tsi.Completions[1], 1);
    KT_EXPECT_EQ(Tsi.Irps[1]->IoStatus.Status, STATUS_CANCELLED);
    KT_EXPECT(Tsi.Irps[1]->CancelRoutine == NULL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
    KT_EXPECT_EQ(Tsi.CallCount, 1);
    TsiFinishCurrent(FALSE, 0);
    KT_EXPECT_EQ(Tsi.CallCount, 1); // the queue was empty
    TsiStop(2);
}

KTEST(IoStartIo, non_cancelable_attribute_clears_the_routine_before_startio)
{
    TsiStart(2);
    IoSetStartIoAttributes(Tsi.Device, FALSE, TRUE);
    KT_EXPECT_EQ(Tsi.Device->DeviceObjectExtension->StartIoFlags & DOE_SIO_NO_CANCEL,
                 DOE_SIO_NO_CANCEL);
    IoStartPacket(Tsi.Device, Tsi.Irps[0], NULL, TsiCancel);
    IoStartPacket(Tsi.Device, Tsi.Irps[1], NULL, TsiCancel);
    KT_EXPECT_EQ(Tsi.Calls[0].RoutineSet, FALSE);
    KT_EXPECT(Tsi.Irps[1]->CancelRoutine == TsiCancel); // queued: still cancelable
    TsiFinishCurrent(FALSE, 0);
    KT_ASSERT_EQ(Tsi.CallCount, 2);
    KT_EXPECT_EQ(Tsi.Calls[1].RoutineSet, FALSE);
    KT_EXPECT_EQ(IoCancelIrp(Tsi.Irps[1]), FALSE); // nothing to call any more
    TsiFinishCurrent(FALSE, 0);
    TsiStop(2);
}

/* StartIo completing synchronously and starting the next packet itself, for Count IRPs. */
static VOID
TsiRunChain(BOOLEAN Deferred, BOOLEAN ByKey)
{
    const ULONG Count = TSI_MAX_IRPS;

    TsiStart(Count);
    if (Deferred)
    {
        IoSetStartIoAttributes(Tsi.Device, TRUE, FALSE);
    }
    IoStartPacket(Tsi.Device, Tsi.Irps[0], NULL, TsiCancel);
    for (ULONG i = 1; i < Count; i++)
    {
        ULONG Key = Count - i; // by key: reverse order
        IoStartPacket(Tsi.Device, Tsi.Irps[i], ByKey ? &Key : NULL, TsiCancel);
    }
    Tsi.Chain = TRUE;
    Tsi.ChainByKey = ByKey;
    Tsi.ChainKey = 0;
    TsiFinishCurrent(ByKey, 0);

    KT_EXPECT_EQ(Tsi.CallCount, Count);
    KT_EXPECT_EQ(Tsi.MaxDepth, Deferred ? 1 : Count - 1);
    for (ULONG i = 1; i < Count; i++)
    {
        PIRP Expected = Tsi.Irps[ByKey ? Count - i : i];
        KT_EXPECT(Tsi.Calls[i].Irp == Expected);
        KT_EXPECT_EQ(Tsi.Calls[i].Irql, DISPATCH_LEVEL);
        KT_EXPECT_EQ(Tsi.Calls[i].Current, TRUE);
    }
    KT_EXPECT_EQ(Tsi.Device->DeviceObjectExtension->StartIoCount, 0);
    KT_EXPECT_EQ(Tsi.Device->DeviceObjectExtension->StartIoFlags & IOP_SIO_REQUEST_MASK, 0);
    TsiStop(Count);
}

KTEST(IoStartIo, start_next_from_inside_startio_recurses_without_deferral)
{
    TsiRunChain(FALSE, FALSE);
}

KTEST(IoStartIo, deferred_startio_runs_start_next_after_startio_returns)
{
    TsiRunChain(TRUE, FALSE);
}

KTEST(IoStartIo, deferred_startio_keeps_the_key_of_a_start_next_by_key)
{
    TsiRunChain(TRUE, TRUE);
}

KTEST(IoStartIo, start_next_packet_off_dispatch_level_bugchecks)
{
#if DBG
    TsiStart(1);
    IoStartPacket(Tsi.Device, Tsi.Irps[0], NULL, NULL);
    KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL, IoStartNextPacket(Tsi.Device, TRUE));
    KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL, IoStartNextPacketByKey(Tsi.Device, FALSE, 1));
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
    KT_EXPECT(Tsi.Device->CurrentIrp == Tsi.Irps[0]); // nothing changed
    KT_EXPECT_EQ(Tsi.Device->DeviceQueue.Busy, TRUE);
    TsiFinishCurrent(FALSE, 0);
    TsiStop(1);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(IoStartIo, start_next_packet_on_an_idle_device_bugchecks_device_queue_not_busy)
{
#if DBG
    KIRQL OldIrql;

    TsiStart(0);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_BUGCHECK(DEVICE_QUEUE_NOT_BUSY, IoStartNextPacket(Tsi.Device, FALSE));
    KeLowerIrql(OldIrql);
    TsiStop(0);
#else
    KT_SKIP("checked build only");
#endif
}
