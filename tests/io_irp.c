/* SPDX-License-Identifier: MIT */
/*
 * IoIrp: driver and device objects, IRP allocation and stack locations,
 * IoCallDriver and IoCompleteRequest (API.md §11.1, §11.2): completion
 * routines run bottom-up with the upper driver's device, their SL_INVOKE_ON_*
 * flags, STATUS_MORE_PROCESSING_REQUIRED, PendingReturned, the final step
 * (UserIosb, UserEvent), and the bug checks 0x35, 0x44 and (checked) 0xC9.
 *
 * The test driver "Tio" stacks its devices: a device with a Lower device
 * passes requests down (optionally setting a completion routine); the bottom
 * device completes them at once or keeps them pending for the test.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ex/ex.h"
#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define TIO_MAX_RECORDS 8
#define TIO_MAX_TAGS    256

typedef struct _TIO_EXTENSION
{
    PDEVICE_OBJECT Lower;    // pass requests down to it; NULL: the bottom device
    NTSTATUS CompleteWith;   // bottom: the status it completes with
    BOOLEAN Pend;            // bottom: mark pending, keep the IRP in Pending
    BOOLEAN SetRoutine;      // pass-down: set TioRecordCompletion in the next location
    NTSTATUS RoutineReturns; // ... and this is what it returns
    PIRP Pending;
    ULONG Calls;
} TIO_EXTENSION, *PTIO_EXTENSION;

typedef struct _TIO_RECORD
{
    PVOID Context;
    PDEVICE_OBJECT DeviceObject;
    BOOLEAN PendingReturned;
    CHAR CurrentLocation;
    KIRQL Irql;
} TIO_RECORD;

static PDRIVER_OBJECT TioDriver;
static ULONG TioUnloads;
static TIO_RECORD TioRecords[TIO_MAX_RECORDS];
static ULONG TioRecordCount;
static EXP_POOL_TAG_USAGE TioTags[TIO_MAX_TAGS];

static LONG64
TioPoolCount(ULONG Tag)
{
    ULONG Count = ExpQueryPoolTags(TioTags, TIO_MAX_TAGS);

    for (ULONG i = 0; i < Count; i++)
    {
        if (TioTags[i].Tag == Tag)
        {
            return TioTags[i].Allocations;
        }
    }
    return 0;
}

/* Records its call; Context is a TIO_EXTENSION (pass-down) or a test marker. */
static NTSTATUS
TioRecordCompletion(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    NTSTATUS Result = STATUS_SUCCESS;

    if (TioRecordCount < TIO_MAX_RECORDS)
    {
        TIO_RECORD *Record = &TioRecords[TioRecordCount++];
        Record->Context = Context;
        Record->DeviceObject = DeviceObject;
        Record->PendingReturned = Irp->PendingReturned;
        Record->CurrentLocation = Irp->CurrentLocation;
        Record->Irql = KeGetCurrentIrql();
    }
    if (DeviceObject != NULL && DeviceObject->DriverObject == TioDriver)
    {
        Result = ((PTIO_EXTENSION)DeviceObject->DeviceExtension)->RoutineReturns;
    }
    return Result;
}

/* The originator's routine: the IRP is kept (not freed) by returning MORE_PROCESSING. */
static NTSTATUS
TioKeepIrp(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    TioRecordCompletion(DeviceObject, Irp, Context);
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static NTSTATUS
TioDispatch(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PTIO_EXTENSION Extension = DeviceObject->DeviceExtension;

    Extension->Calls++;
    if (Extension->Lower != NULL)
    {
        IoCopyCurrentIrpStackLocationToNext(Irp);
        if (Extension->SetRoutine)
        {
            IoSetCompletionRoutine(Irp, TioRecordCompletion, Extension, TRUE, TRUE, TRUE);
        }
        return IoCallDriver(Extension->Lower, Irp);
    }
    if (Extension->Pend)
    {
        IoMarkIrpPending(Irp);
        Extension->Pending = Irp;
        return STATUS_PENDING;
    }
    Irp->IoStatus.Status = Extension->CompleteWith;
    Irp->IoStatus.Information = 7;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return Extension->CompleteWith;
}

static VOID
TioUnload(PDRIVER_OBJECT DriverObject)
{
    TioUnloads++;
    while (DriverObject->DeviceObject != NULL)
    {
        IoDeleteDevice(DriverObject->DeviceObject);
    }
}

static NTSTATUS
TioEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    KT_EXPECT(RegistryPath == NULL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    DriverObject->MajorFunction[IRP_MJ_READ] = TioDispatch;
    DriverObject->MajorFunction[IRP_MJ_WRITE] = TioDispatch;
    DriverObject->DriverUnload = TioUnload;
    TioDriver = DriverObject;
    return STATUS_SUCCESS;
}

static NTSTATUS
TioFailingEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    TioDriver = DriverObject;
    return STATUS_DEVICE_NOT_READY;
}

/* Starts the Tio driver with Count stacked devices: Devices[0] on top, Devices[Count-1] bottom. */
static VOID
TioStart(PDEVICE_OBJECT *Devices, ULONG Count)
{
    UNICODE_STRING Name;

    TioRecordCount = 0;
    memset(TioRecords, 0, sizeof(TioRecords));
    RtlInitUnicodeString(&Name, L"\\Driver\\Tio");
    KT_ASSERT_EQ(IoCreateDriver(&Name, TioEntry), STATUS_SUCCESS);
    for (ULONG i = Count; i-- > 0;)
    {
        KT_ASSERT_EQ(IoCreateDevice(TioDriver, sizeof(TIO_EXTENSION), NULL, FILE_DEVICE_UNKNOWN, 0,
                                    FALSE, &Devices[i]),
                     STATUS_SUCCESS);
        if (i + 1 < Count)
        {
            ((PTIO_EXTENSION)Devices[i]->DeviceExtension)->Lower = Devices[i + 1];
            Devices[i]->StackSize = (CCHAR)(Devices[i + 1]->StackSize + 1);
        }
        Devices[i]->Flags &= ~DO_DEVICE_INITIALIZING;
    }
}

static VOID
TioStop(VOID)
{
    IoDeleteDriver(TioDriver);
    TioDriver = NULL;
}

/* An IRP for Device's stack: a READ of Length bytes in the first location. */
static PIRP
TioBuildRead(PDEVICE_OBJECT Device)
{
    PIRP Irp = IoAllocateIrp(Device->StackSize, FALSE);
    PIO_STACK_LOCATION Next;

    KT_ASSERT(Irp != NULL);
    Next = IoGetNextIrpStackLocation(Irp);
    Next->MajorFunction = IRP_MJ_READ;
    Next->Parameters.Read.Length = 512;
    return Irp;
}

/* ---------------------------------------------------------------- objects */

KTEST(IoIrp, rtl_init_unicode_string_points_at_the_source)
{
    static const WCHAR Text[] = L"\\Device\\Spindle";
    UNICODE_STRING String;

    RtlInitUnicodeString(&String, Text);
    KT_EXPECT(String.Buffer == Text);
    KT_EXPECT_EQ(String.Length, sizeof(Text) - sizeof(WCHAR));
    KT_EXPECT_EQ(String.MaximumLength, sizeof(Text));
    RtlInitUnicodeString(&String, NULL);
    KT_EXPECT(String.Buffer == NULL);
    KT_EXPECT_EQ(String.Length, 0);
    KT_EXPECT_EQ(String.MaximumLength, 0);
}

KTEST(IoIrp, create_driver_and_devices_fill_the_objects)
{
    LONG64 Drivers = TioPoolCount(IOP_TAG_DRIVER);
    LONG64 Devices = TioPoolCount(IOP_TAG_DEVICE);
    PDEVICE_OBJECT Stack[3];
    PDEVICE_OBJECT Plain;
    PIRP Irp;

    TioStart(Stack, 3);
    KT_EXPECT_EQ(TioDriver->Type, IO_TYPE_DRIVER);
    KT_EXPECT_EQ(TioDriver->Size, sizeof(DRIVER_OBJECT));
    KT_EXPECT(TioDriver->DriverExtension != NULL &&
              TioDriver->DriverExtension->DriverObject == TioDriver);
    KT_EXPECT(TioDriver->DriverInit == TioEntry);
    KT_EXPECT_EQ(TioDriver->DriverName.Length, sizeof(L"\\Driver\\Tio") - sizeof(WCHAR));
    KT_EXPECT(memcmp(TioDriver->DriverName.Buffer, L"\\Driver\\Tio", sizeof(L"\\Driver\\Tio")) ==
              0);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_DRIVER), Drivers + 1);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_DEVICE), Devices + 3);

    /* Newest first: the top device was created last. */
    KT_EXPECT(TioDriver->DeviceObject == Stack[0]);
    KT_EXPECT(Stack[0]->NextDevice == Stack[1]);
    KT_EXPECT(Stack[1]->NextDevice == Stack[2]);
    KT_EXPECT(Stack[2]->NextDevice == NULL);
    for (ULONG i = 0; i < 3; i++)
    {
        PDEVICE_OBJECT Device = Stack[i];
        KT_EXPECT_EQ(Device->Type, IO_TYPE_DEVICE);
        KT_EXPECT_EQ(Device->Size, sizeof(DEVICE_OBJECT) + sizeof(TIO_EXTENSION));
        KT_EXPECT(Device->DriverObject == TioDriver);
        KT_EXPECT(Device->DeviceExtension == (PVOID)(Device + 1));
        KT_EXPECT_EQ((ULONG_PTR)Device->DeviceExtension % 16, 0);
        KT_EXPECT_EQ(Device->DeviceType, FILE_DEVICE_UNKNOWN);
        KT_EXPECT_EQ(Device->StackSize, 3 - i);
        KT_EXPECT(Device->CurrentIrp == NULL);
        KT_EXPECT_EQ(Device->DeviceQueue.Type, DeviceQueueObject);
        KT_EXPECT_EQ(Device->DeviceQueue.Busy, FALSE);
        KT_EXPECT(IsListEmpty(&Device->DeviceQueue.DeviceListHead));
        KT_EXPECT_EQ(Device->DeviceObjectExtension->Type, IO_TYPE_DEVICE_OBJECT_EXTENSION);
        KT_EXPECT(Device->DeviceObjectExtension->DeviceObject == Device);
        KT_EXPECT_EQ(Device->DeviceObjectExtension->StartIoFlags, 0);
    }

    /* A fresh device: zeroed extension, DO_DEVICE_INITIALIZING, DO_EXCLUSIVE; no extension at 0. */
    KT_ASSERT_EQ(IoCreateDevice(TioDriver, 40, NULL, FILE_DEVICE_UNKNOWN, 0, TRUE, &Plain),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(Plain->Flags & (DO_DEVICE_INITIALIZING | DO_EXCLUSIVE),
                 DO_DEVICE_INITIALIZING | DO_EXCLUSIVE);
    for (ULONG i = 0; i < 40; i++)
    {
        KT_EXPECT_EQ(((PUCHAR)Plain->DeviceExtension)[i], 0);
    }
    KT_EXPECT(TioDriver->DeviceObject == Plain);
    IoDeleteDevice(Plain);
    KT_ASSERT_EQ(IoCreateDevice(TioDriver, 0, NULL, FILE_DEVICE_UNKNOWN, 0, FALSE, &Plain),
                 STATUS_SUCCESS);
    KT_EXPECT(Plain->DeviceExtension == NULL);
    IoDeleteDevice(Plain);
    KT_EXPECT(TioDriver->DeviceObject == Stack[0]);

    /* Deleting a middle device relinks the list. */
    IoDeleteDevice(Stack[1]);
    KT_EXPECT(Stack[0]->NextDevice == Stack[2]);

    /* MajorFunction entries the driver did not fill complete as invalid requests. */
    Irp = IoAllocateIrp(1, FALSE);
    KT_ASSERT(Irp != NULL);
    IoGetNextIrpStackLocation(Irp)->MajorFunction = IRP_MJ_DEVICE_CONTROL;
    KT_EXPECT_EQ(IoCallDriver(Stack[2], Irp), STATUS_INVALID_DEVICE_REQUEST);
    KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_INVALID_DEVICE_REQUEST);
    KT_EXPECT_EQ(Irp->CurrentLocation, Irp->StackCount + 2);
    IoFreeIrp(Irp);

    TioUnloads = 0;
    TioStop();
    KT_EXPECT_EQ(TioUnloads, 1);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_DRIVER), Drivers);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_DEVICE), Devices);
}

KTEST(IoIrp, create_driver_whose_entry_fails_returns_its_status_and_frees_it)
{
    LONG64 Drivers = TioPoolCount(IOP_TAG_DRIVER);
    LONG64 Names = TioPoolCount(IOP_TAG_NAME);

    KT_EXPECT_EQ(IoCreateDriver(NULL, TioFailingEntry), STATUS_DEVICE_NOT_READY);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_DRIVER), Drivers);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_NAME), Names);
    TioDriver = NULL;
}

/* ---------------------------------------------------------------- IRPs */

KTEST(IoIrp, allocate_initializes_the_irp_and_its_stack_locations)
{
    LONG64 Irps = TioPoolCount(IOP_TAG_IRP);
    PIRP Irp = IoAllocateIrp(3, FALSE);
    PIO_STACK_LOCATION First;

    KT_ASSERT(Irp != NULL);
    First = (PIO_STACK_LOCATION)(Irp + 1);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_IRP), Irps + 1);
    KT_EXPECT_EQ(Irp->Type, IO_TYPE_IRP);
    /* A fixed-size IRP: the large lookaside size, room for more than the 3 asked for. */
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(IOP_LARGE_IRP_STACK_LOCATIONS));
    KT_EXPECT_GE(Irp->Size, sizeof(IRP) + 3 * sizeof(IO_STACK_LOCATION));
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE);
    KT_EXPECT_EQ(Irp->StackCount, 3);
    KT_EXPECT_EQ(Irp->CurrentLocation, 4);
    KT_EXPECT(Irp->Tail.Overlay.CurrentStackLocation == First + 3);
    KT_EXPECT(IoGetNextIrpStackLocation(Irp) == First + 2);
    KT_EXPECT(IsListEmpty(&Irp->ThreadListEntry));
    KT_EXPECT_EQ(Irp->Cancel, FALSE);
    KT_EXPECT(Irp->CancelRoutine == NULL);
    KT_EXPECT_EQ(Irp->PendingReturned, FALSE);
    KT_EXPECT_EQ(Irp->IoStatus.Status, 0);
    KT_EXPECT_EQ(Irp->Tail.Overlay.DeviceQueueEntry.Inserted, FALSE);
    KT_EXPECT(Irp->UserEvent == NULL && Irp->UserIosb == NULL);
    for (ULONG i = 0; i < 3; i++)
    {
        KT_EXPECT_EQ(First[i].Control, 0);
        KT_EXPECT(First[i].CompletionRoutine == NULL);
    }
    KT_EXPECT_EQ((ULONG_PTR)Irp % MEMORY_ALLOCATION_ALIGNMENT, 0);
    IoFreeIrp(Irp);
    KT_EXPECT_EQ(TioPoolCount(IOP_TAG_IRP), Irps);
    KT_EXPECT(IoAllocateIrp(-1, FALSE) == NULL);
}

KTEST(IoIrp, initialize_zeroes_a_caller_buffer)
{
    static union
    {
        IRP Irp;
        UCHAR Bytes[sizeof(IRP) + 2 * sizeof(IO_STACK_LOCATION) + 16];
    } Buffer;
    PIRP Irp = &Buffer.Irp;

    memset(&Buffer, 0xAA, sizeof(Buffer));
    IoInitializeIrp(Irp, IoSizeOfIrp(2), 2);
    KT_EXPECT_EQ(Irp->Type, IO_TYPE_IRP);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(2));
    KT_EXPECT_EQ(Irp->CurrentLocation, 3);
    KT_EXPECT_EQ(Irp->Cancel, FALSE);
    KT_EXPECT(Irp->CancelRoutine == NULL && Irp->MdlAddress == NULL);
    KT_EXPECT(Irp->Tail.Overlay.CurrentStackLocation == (PIO_STACK_LOCATION)(Irp + 1) + 2);
    KT_EXPECT_EQ(((PIO_STACK_LOCATION)(Irp + 1))[1].Control, 0);
    KT_EXPECT_EQ(Buffer.Bytes[IoSizeOfIrp(2)], 0xAA); // nothing past PacketSize
}

KTEST(IoIrp, call_driver_moves_down_and_completion_walks_back_up)
{
    PDEVICE_OBJECT Stack[3];
    PIRP Irp;
    static int Originator;

    TioStart(Stack, 3);
    for (ULONG i = 0; i < 2; i++)
    {
        ((PTIO_EXTENSION)Stack[i]->DeviceExtension)->SetRoutine = TRUE;
        ((PTIO_EXTENSION)Stack[i]->DeviceExtension)->RoutineReturns = STATUS_SUCCESS;
    }
    ((PTIO_EXTENSION)Stack[2]->DeviceExtension)->CompleteWith = STATUS_SUCCESS;

    Irp = TioBuildRead(Stack[0]);
    IoSetCompletionRoutine(Irp, TioKeepIrp, &Originator, TRUE, TRUE, TRUE);
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_SUCCESS);

    /* Each location got its device; the bottom driver completed; routines ran bottom-up. */
    for (ULONG i = 0; i < 3; i++)
    {
        PIO_STACK_LOCATION Location = (PIO_STACK_LOCATION)(Irp + 1) + (2 - i);
        KT_EXPECT(Location->DeviceObject == Stack[i]);
        KT_EXPECT_EQ(Location->MajorFunction, IRP_MJ_READ);
        KT_EXPECT_EQ(((PTIO_EXTENSION)Stack[i]->DeviceExtension)->Calls, 1);
    }
    KT_ASSERT_EQ(TioRecordCount, 3);
    KT_EXPECT(TioRecords[0].Context == Stack[1]->DeviceExtension); // set by the middle device
    KT_EXPECT(TioRecords[0].DeviceObject == Stack[1]);
    KT_EXPECT_EQ(TioRecords[0].CurrentLocation, 2);
    KT_EXPECT(TioRecords[1].Context == Stack[0]->DeviceExtension);
    KT_EXPECT(TioRecords[1].DeviceObject == Stack[0]);
    KT_EXPECT_EQ(TioRecords[1].CurrentLocation, 3);
    KT_EXPECT(TioRecords[2].Context == &Originator);
    KT_EXPECT(TioRecords[2].DeviceObject == NULL); // the originator's routine gets no device
    KT_EXPECT_EQ(TioRecords[2].CurrentLocation, 4);
    KT_EXPECT_EQ(TioRecords[2].Irql, PASSIVE_LEVEL);
    KT_EXPECT_EQ(Irp->IoStatus.Information, 7);

    /* MORE_PROCESSING_REQUIRED stopped before the final step; completing again finishes it. */
    KT_EXPECT_EQ(Irp->CurrentLocation, Irp->StackCount + 1);
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    KT_EXPECT_EQ(Irp->CurrentLocation, Irp->StackCount + 2);
    KT_EXPECT_EQ(TioRecordCount, 3);
    IoFreeIrp(Irp);
    TioStop();
}

KTEST(IoIrp, completion_routines_run_only_for_matching_invoke_flags)
{
    static const struct
    {
        BOOLEAN OnSuccess, OnError, OnCancel;
        NTSTATUS Status;
        BOOLEAN Cancel;
        BOOLEAN Called;
    } Cases[] = {
        {TRUE, FALSE, FALSE, STATUS_SUCCESS, FALSE, TRUE},
        {TRUE, FALSE, FALSE, STATUS_UNSUCCESSFUL, FALSE, FALSE},
        {FALSE, TRUE, FALSE, STATUS_UNSUCCESSFUL, FALSE, TRUE},
        {FALSE, TRUE, FALSE, STATUS_SUCCESS, FALSE, FALSE},
        {FALSE, FALSE, TRUE, STATUS_SUCCESS, FALSE, FALSE},
        {FALSE, FALSE, TRUE, STATUS_SUCCESS, TRUE, TRUE},
        {FALSE, FALSE, TRUE, STATUS_CANCELLED, TRUE, TRUE},
        {FALSE, TRUE, FALSE, STATUS_CANCELLED, TRUE, TRUE},
        {FALSE, FALSE, FALSE, STATUS_UNSUCCESSFUL, TRUE, FALSE},
    };
    static int Marker;

    for (ULONG c = 0; c < ARRAYSIZE(Cases); c++)
    {
        PIRP Irp = IoAllocateIrp(1, FALSE);

        KT_ASSERT(Irp != NULL);
        TioRecordCount = 0;
        IoSetCompletionRoutine(Irp, TioRecordCompletion, &Marker, Cases[c].OnSuccess,
                               Cases[c].OnError, Cases[c].OnCancel);
        IoSetNextIrpStackLocation(Irp); // as if a driver got it
        Irp->Cancel = Cases[c].Cancel;
        Irp->IoStatus.Status = Cases[c].Status;
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        if (TioRecordCount != (Cases[c].Called ? 1u : 0u))
        {
            KtLog("case %u", c);
        }
        KT_EXPECT_EQ(TioRecordCount, Cases[c].Called ? 1 : 0);
        KT_EXPECT_EQ(Irp->CurrentLocation, 3);
        IoFreeIrp(Irp);
    }
}

KTEST(IoIrp, more_processing_required_stops_the_walk_until_completed_again)
{
    PDEVICE_OBJECT Stack[2];
    PTIO_EXTENSION Top;
    PIRP Irp;
    static int Originator;

    TioStart(Stack, 2);
    Top = Stack[0]->DeviceExtension;
    Top->SetRoutine = TRUE;
    Top->RoutineReturns = STATUS_MORE_PROCESSING_REQUIRED;
    ((PTIO_EXTENSION)Stack[1]->DeviceExtension)->CompleteWith = STATUS_UNSUCCESSFUL;

    Irp = TioBuildRead(Stack[0]);
    IoSetCompletionRoutine(Irp, TioKeepIrp, &Originator, TRUE, TRUE, TRUE);
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_UNSUCCESSFUL);
    KT_ASSERT_EQ(TioRecordCount, 1);
    KT_EXPECT(TioRecords[0].DeviceObject == Stack[0]);
    KT_EXPECT_EQ(Irp->CurrentLocation, 2); // the top driver's location again

    /* The IRP is the top driver's now; it completes it once more, and the walk goes on. */
    Top->RoutineReturns = STATUS_SUCCESS;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    KT_ASSERT_EQ(TioRecordCount, 2);
    KT_EXPECT(TioRecords[1].Context == &Originator);
    KT_EXPECT(TioRecords[1].DeviceObject == NULL);
    IoCompleteRequest(Irp, IO_NO_INCREMENT); // the originator's MORE_PROCESSING left one step
    KT_EXPECT_EQ(Irp->CurrentLocation, 4);
    IoFreeIrp(Irp);
    TioStop();
}

KTEST(IoIrp, pending_returned_propagates_up_through_locations_without_routines)
{
    PDEVICE_OBJECT Stack[3];
    PTIO_EXTENSION Bottom;
    PIRP Irp;
    KIRQL OldIrql;
    static int Originator;

    TioStart(Stack, 3);
    ((PTIO_EXTENSION)Stack[1]->DeviceExtension)->SetRoutine = TRUE; // records, returns SUCCESS
    Bottom = Stack[2]->DeviceExtension;
    Bottom->Pend = TRUE;

    Irp = TioBuildRead(Stack[0]);
    IoSetCompletionRoutine(Irp, TioKeepIrp, &Originator, TRUE, TRUE, TRUE);
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_PENDING);
    KT_ASSERT(Bottom->Pending == Irp);
    KT_EXPECT_EQ(TioRecordCount, 0);

    /* Completed later, at DISPATCH_LEVEL: routines run at the completer's IRQL. */
    OldIrql = KeRaiseIrqlToDpcLevel();
    Irp->IoStatus.Status = STATUS_SUCCESS;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    KeLowerIrql(OldIrql);

    KT_ASSERT_EQ(TioRecordCount, 2);
    KT_EXPECT(TioRecords[0].DeviceObject == Stack[1]);
    KT_EXPECT_EQ(TioRecords[0].PendingReturned, TRUE); // from the bottom location
    KT_EXPECT_EQ(TioRecords[0].Irql, DISPATCH_LEVEL);
    /* The middle routine does not mark pending itself; the top location has no routine and passes
     * it on. */
    KT_EXPECT_EQ(TioRecords[1].PendingReturned, FALSE);
    KT_EXPECT(TioRecords[1].Context == &Originator);
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    IoFreeIrp(Irp);

    /* Without the middle routine, PendingReturned reaches the originator. */
    ((PTIO_EXTENSION)Stack[1]->DeviceExtension)->SetRoutine = FALSE;
    TioRecordCount = 0;
    Irp = TioBuildRead(Stack[0]);
    IoSetCompletionRoutine(Irp, TioKeepIrp, &Originator, TRUE, TRUE, TRUE);
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_PENDING);
    Irp->IoStatus.Status = STATUS_SUCCESS;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    KT_ASSERT_EQ(TioRecordCount, 1);
    KT_EXPECT_EQ(TioRecords[0].PendingReturned, TRUE);
    KT_EXPECT_EQ(Irp->PendingReturned, TRUE);
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    IoFreeIrp(Irp);
    TioStop();
}

KTEST(IoIrp, final_step_copies_the_status_block_and_signals_the_event)
{
    PDEVICE_OBJECT Stack[1];
    IO_STATUS_BLOCK Iosb = {.Status = STATUS_PENDING, .Information = 0};
    KEVENT Event;
    PIRP Irp;

    TioStart(Stack, 1);
    ((PTIO_EXTENSION)Stack[0]->DeviceExtension)->CompleteWith = STATUS_BUFFER_OVERFLOW;
    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    Irp = TioBuildRead(Stack[0]);
    Irp->UserIosb = &Iosb;
    Irp->UserEvent = &Event;
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_BUFFER_OVERFLOW);
    KT_EXPECT_EQ(Iosb.Status, STATUS_BUFFER_OVERFLOW);
    KT_EXPECT_EQ(Iosb.Information, 7);
    KT_EXPECT_NE(KeReadStateEvent(&Event), 0);
    KT_EXPECT_EQ(Irp->CurrentLocation, Irp->StackCount + 2);

    /* Reuse: the same IRP, initialised again with the given status. */
    IoReuseIrp(Irp, STATUS_UNSUCCESSFUL);
    KT_EXPECT_EQ(Irp->CurrentLocation, Irp->StackCount + 1);
    KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_UNSUCCESSFUL);
    KT_EXPECT(Irp->UserEvent == NULL && Irp->UserIosb == NULL);
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(1));
    IoGetNextIrpStackLocation(Irp)->MajorFunction = IRP_MJ_READ;
    ((PTIO_EXTENSION)Stack[0]->DeviceExtension)->CompleteWith = STATUS_SUCCESS;
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_SUCCESS);
    IoFreeIrp(Irp);
    TioStop();
}

/* The synchronous-request pattern: wait at PASSIVE_LEVEL for a completion from a timer DPC. */
typedef struct _TIO_LATER
{
    KTIMER Timer;
    KDPC Dpc;
    PIRP Irp;
} TIO_LATER;

static VOID
TioCompleteLater(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    TIO_LATER *Later = Context;

    Later->Irp->IoStatus.Status = STATUS_SUCCESS;
    Later->Irp->IoStatus.Information = 99;
    IoCompleteRequest(Later->Irp, IO_NO_INCREMENT);
}

KTEST(IoIrp, originator_waits_on_the_user_event_for_a_pending_request)
{
    PDEVICE_OBJECT Stack[1];
    IO_STATUS_BLOCK Iosb;
    TIO_LATER Later;
    LARGE_INTEGER Due = {.QuadPart = -2 * (LONGLONG)KeQueryTimeIncrement()};
    LARGE_INTEGER Timeout = {.QuadPart = -10 * 1000 * 10000ll}; // 10 s: a lost completion fails
    KEVENT Event;
    PIRP Irp;

    TioStart(Stack, 1);
    ((PTIO_EXTENSION)Stack[0]->DeviceExtension)->Pend = TRUE;
    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    Irp = TioBuildRead(Stack[0]);
    Irp->UserIosb = &Iosb;
    Irp->UserEvent = &Event;
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_PENDING);

    Later.Irp = Irp;
    KeInitializeTimer(&Later.Timer);
    KeInitializeDpc(&Later.Dpc, TioCompleteLater, &Later);
    KeSetTimer(&Later.Timer, Due, &Later.Dpc);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Timeout),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(Iosb.Status, STATUS_SUCCESS);
    KT_EXPECT_EQ(Iosb.Information, 99);
    KT_EXPECT_EQ(Irp->PendingReturned, TRUE);
    KeFlushQueuedDpcs();
    IoFreeIrp(Irp);
    TioStop();
}

/* ---------------------------------------------------------------- misuse */

KTEST(IoIrp, call_driver_without_a_stack_location_left_bugchecks)
{
    PDEVICE_OBJECT Stack[1];
    PIRP Irp;

    TioStart(Stack, 1);
    Irp = IoAllocateIrp(0, FALSE);
    KT_ASSERT(Irp != NULL);
    KT_EXPECT_BUGCHECK(NO_MORE_IRP_STACK_LOCATIONS, IoCallDriver(Stack[0], Irp));
    KT_EXPECT_EQ(Irp->CurrentLocation, 1);
    KT_EXPECT_EQ(((PTIO_EXTENSION)Stack[0]->DeviceExtension)->Calls, 0);
    IoFreeIrp(Irp);
    TioStop();
}

KTEST(IoIrp, completing_twice_bugchecks_multiple_irp_complete_requests)
{
    PDEVICE_OBJECT Stack[1];
    PIRP Irp;

    TioStart(Stack, 1);
    ((PTIO_EXTENSION)Stack[0]->DeviceExtension)->CompleteWith = STATUS_SUCCESS;
    Irp = TioBuildRead(Stack[0]);
    KT_EXPECT_EQ(IoCallDriver(Stack[0], Irp), STATUS_SUCCESS);
    KT_EXPECT_BUGCHECK(MULTIPLE_IRP_COMPLETE_REQUESTS, IoCompleteRequest(Irp, IO_NO_INCREMENT));
    KT_EXPECT_EQ(Irp->CurrentLocation, Irp->StackCount + 2);
    IoFreeIrp(Irp);
    TioStop();
}

#if DBG
static VOID
TioUnusedCancel(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}
#endif

KTEST(IoIrp, checked_build_completion_checks_bugcheck_c9)
{
#if DBG
    PIRP Irp = IoAllocateIrp(1, FALSE);
    KIRQL OldIrql;

    KT_ASSERT(Irp != NULL);
    IoSetNextIrpStackLocation(Irp);

    Irp->IoStatus.Status = STATUS_PENDING;
    KT_EXPECT_BUGCHECK(DRIVER_VERIFIER_IOMANAGER_VIOLATION, IoCompleteRequest(Irp, 0));
    Irp->IoStatus.Status = -1;
    KT_EXPECT_BUGCHECK(DRIVER_VERIFIER_IOMANAGER_VIOLATION, IoCompleteRequest(Irp, 0));

    Irp->IoStatus.Status = STATUS_SUCCESS;
    IoSetCancelRoutine(Irp, TioUnusedCancel);
    KT_EXPECT_BUGCHECK(DRIVER_VERIFIER_IOMANAGER_VIOLATION, IoCompleteRequest(Irp, 0));
    IoSetCancelRoutine(Irp, NULL);

    KeRaiseIrql(CLOCK_LEVEL, &OldIrql);
    KT_EXPECT_BUGCHECK(DRIVER_VERIFIER_IOMANAGER_VIOLATION, IoCompleteRequest(Irp, 0));
    KeLowerIrql(OldIrql);

    /* None of them touched the IRP: it still completes normally. */
    KT_EXPECT_EQ(Irp->CurrentLocation, 1);
    IoCompleteRequest(Irp, 0);
    KT_EXPECT_EQ(Irp->CurrentLocation, 3);
    IoFreeIrp(Irp);
#else
    KT_SKIP("checked build only");
#endif
}
