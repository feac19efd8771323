/* SPDX-License-Identifier: MIT */
/*
 * Driver and device objects: IoCreateDriver (NT's way of starting a driver
 * linked into the kernel), IoDeleteDriver, IoCreateDevice, IoDeleteDevice.
 * Spindle has no object manager, so names are kept (a driver's, in its
 * DriverName) but not entered in any namespace: a device name is accepted and
 * unused, and no open-by-name exists. A driver's device list (DeviceObject /
 * NextDevice, newest first) changes under IopDatabaseLock.
 */
#include "kernel/io/iop.h"

#define IOP_DEFAULT_DRIVER_NAME L"\\Driver\\Spindle"

typedef struct _IOP_DRIVER_BLOCK
{
    DRIVER_OBJECT DriverObject;
    DRIVER_EXTENSION DriverExtension;
} IOP_DRIVER_BLOCK;

static KSPIN_LOCK IopDatabaseLock;

/* The default for every MajorFunction entry: completes the IRP with STATUS_INVALID_DEVICE_REQUEST.
 */
static NTSTATUS
IopInvalidDeviceRequest(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    Irp->IoStatus.Status = STATUS_INVALID_DEVICE_REQUEST;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return STATUS_INVALID_DEVICE_REQUEST;
}

/* Copies Source into a pool buffer owned by the driver object; FALSE if out of memory. */
static BOOLEAN
IopCopyName(PUNICODE_STRING Destination, PCUNICODE_STRING Source)
{
    PWSTR Buffer =
        ExAllocatePoolWithTag(NonPagedPool, (SIZE_T)Source->Length + sizeof(WCHAR), IOP_TAG_NAME);

    if (Buffer == NULL)
    {
        return FALSE;
    }
    RtlCopyMemory(Buffer, Source->Buffer, Source->Length);
    Buffer[Source->Length / sizeof(WCHAR)] = 0;
    Destination->Buffer = Buffer;
    Destination->Length = Source->Length;
    Destination->MaximumLength = (USHORT)(Source->Length + sizeof(WCHAR));
    return TRUE;
}

static VOID
IopFreeDriverObject(PDRIVER_OBJECT DriverObject)
{
    ASSERT(DriverObject->DeviceObject == NULL);

    if (DriverObject->DriverName.Buffer != NULL)
    {
        ExFreePoolWithTag(DriverObject->DriverName.Buffer, IOP_TAG_NAME);
    }
    DriverObject->Type = 0;
    ExFreePoolWithTag(CONTAINING_RECORD(DriverObject, IOP_DRIVER_BLOCK, DriverObject),
                      IOP_TAG_DRIVER);
}

/*
 * Creates a driver object named DriverName (default "\Driver\Spindle"; the
 * name is copied), with every MajorFunction completing requests as
 * STATUS_INVALID_DEVICE_REQUEST, and calls InitializationFunction(DriverObject,
 * NULL). Returns its status; if it failed, the driver object is freed again
 * (the routine must have deleted any device it created). STATUS_INSUFFICIENT_RESOURCES
 * if memory runs out. PASSIVE_LEVEL.
 */
NTSTATUS
IoCreateDriver(PUNICODE_STRING DriverName, PDRIVER_INITIALIZE InitializationFunction)
{
    static const WCHAR DefaultName[] = IOP_DEFAULT_DRIVER_NAME;
    UNICODE_STRING Name;
    IOP_DRIVER_BLOCK *Block;
    PDRIVER_OBJECT DriverObject;
    NTSTATUS Status;

    KiCheckIrqlAtMost(PASSIVE_LEVEL, DriverName);

    if (DriverName != NULL)
    {
        Name = *DriverName;
    }
    else
    {
        RtlInitUnicodeString(&Name, DefaultName);
    }
    Block = ExAllocatePoolWithTag(NonPagedPool, sizeof(*Block), IOP_TAG_DRIVER);
    if (Block == NULL)
    {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    RtlZeroMemory(Block, sizeof(*Block));
    DriverObject = &Block->DriverObject;
    DriverObject->Type = IO_TYPE_DRIVER;
    DriverObject->Size = sizeof(DRIVER_OBJECT);
    DriverObject->DriverExtension = &Block->DriverExtension;
    DriverObject->DriverExtension->DriverObject = DriverObject;
    DriverObject->DriverInit = InitializationFunction;
    for (ULONG i = 0; i <= IRP_MJ_MAXIMUM_FUNCTION; i++)
    {
        DriverObject->MajorFunction[i] = IopInvalidDeviceRequest;
    }
    if (!IopCopyName(&DriverObject->DriverName, &Name))
    {
        IopFreeDriverObject(DriverObject);
        return STATUS_INSUFFICIENT_RESOURCES;
    }

    Status = InitializationFunction(DriverObject, NULL);
    KiCheckIrqlAtMost(PASSIVE_LEVEL, InitializationFunction); // it returned at PASSIVE_LEVEL
    if (!NT_SUCCESS(Status))
    {
        IopFreeDriverObject(DriverObject);
    }
    return Status;
}

/*
 * Unloads a driver from IoCreateDriver: calls its DriverUnload routine, if
 * any, which must delete the driver's devices, then frees the driver object.
 * PASSIVE_LEVEL.
 */
VOID
IoDeleteDriver(PDRIVER_OBJECT DriverObject)
{
    KiCheckIrqlAtMost(PASSIVE_LEVEL, DriverObject);
    ASSERT(DriverObject->Type == IO_TYPE_DRIVER);

    if (DriverObject->DriverUnload != NULL)
    {
        DriverObject->DriverUnload(DriverObject);
    }
    IopFreeDriverObject(DriverObject);
}

/*
 * Creates a device object for DriverObject with a zeroed, 16-byte-aligned
 * extension of DeviceExtensionSize bytes (DeviceExtension NULL when 0),
 * StackSize 1, DO_DEVICE_INITIALIZING (and DO_EXCLUSIVE if Exclusive), an idle
 * device queue and its DEVOBJ_EXTENSION, linked at the head of the driver's
 * device list. DeviceName is accepted and unused (no namespace). Returns
 * STATUS_SUCCESS, STATUS_INVALID_PARAMETER (the size does not fit the USHORT
 * Size) or STATUS_INSUFFICIENT_RESOURCES. PASSIVE_LEVEL.
 */
NTSTATUS
IoCreateDevice(PDRIVER_OBJECT DriverObject, ULONG DeviceExtensionSize, PUNICODE_STRING DeviceName,
               DEVICE_TYPE DeviceType, ULONG DeviceCharacteristics, BOOLEAN Exclusive,
               PDEVICE_OBJECT *DeviceObject)
{
    SIZE_T ExtensionSize = ((SIZE_T)DeviceExtensionSize + 15) & ~(SIZE_T)15;
    PDEVICE_OBJECT Device;
    PDEVOBJ_EXTENSION DeviceObjectExtension;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(PASSIVE_LEVEL, DriverObject);

    *DeviceObject = NULL;
    if (sizeof(DEVICE_OBJECT) + (SIZE_T)DeviceExtensionSize > MAXUSHORT)
    {
        return STATUS_INVALID_PARAMETER;
    }
    Device = ExAllocatePoolWithTag(NonPagedPool,
                                   sizeof(DEVICE_OBJECT) + ExtensionSize + sizeof(DEVOBJ_EXTENSION),
                                   IOP_TAG_DEVICE);
    if (Device == NULL)
    {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    RtlZeroMemory(Device, sizeof(DEVICE_OBJECT) + ExtensionSize + sizeof(DEVOBJ_EXTENSION));
    DeviceObjectExtension = (PDEVOBJ_EXTENSION)((PUCHAR)(Device + 1) + ExtensionSize);

    Device->Type = IO_TYPE_DEVICE;
    Device->Size = (USHORT)(sizeof(DEVICE_OBJECT) + DeviceExtensionSize);
    Device->DriverObject = DriverObject;
    Device->Flags = DO_DEVICE_INITIALIZING | (Exclusive ? DO_EXCLUSIVE : 0);
    Device->Characteristics = DeviceCharacteristics;
    Device->DeviceExtension = DeviceExtensionSize != 0 ? (PVOID)(Device + 1) : NULL;
    Device->DeviceType = DeviceType;
    Device->StackSize = 1;
    KeInitializeDeviceQueue(&Device->DeviceQueue);
    KeInitializeEvent(&Device->DeviceLock, SynchronizationEvent, TRUE);
    DeviceObjectExtension->Type = IO_TYPE_DEVICE_OBJECT_EXTENSION;
    DeviceObjectExtension->Size = sizeof(DEVOBJ_EXTENSION);
    DeviceObjectExtension->DeviceObject = Device;
    Device->DeviceObjectExtension = DeviceObjectExtension;

    KeAcquireSpinLock(&IopDatabaseLock, &OldIrql);
    Device->NextDevice = DriverObject->DeviceObject;
    DriverObject->DeviceObject = Device;
    KeReleaseSpinLock(&IopDatabaseLock, OldIrql);

    *DeviceObject = Device;
    return STATUS_SUCCESS;
}

/*
 * Unlinks DeviceObject from its driver's list and frees it (with its
 * extension). No IRP may still be queued on or sent to it. PASSIVE_LEVEL.
 */
VOID
IoDeleteDevice(PDEVICE_OBJECT DeviceObject)
{
    PDRIVER_OBJECT DriverObject = DeviceObject->DriverObject;
    PDEVICE_OBJECT *Link;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(PASSIVE_LEVEL, DeviceObject);
    ASSERT(DeviceObject->Type == IO_TYPE_DEVICE);
    ASSERT(IsListEmpty(&DeviceObject->DeviceQueue.DeviceListHead));

    KeAcquireSpinLock(&IopDatabaseLock, &OldIrql);
    for (Link = &DriverObject->DeviceObject; *Link != NULL; Link = &(*Link)->NextDevice)
    {
        if (*Link == DeviceObject)
        {
            *Link = DeviceObject->NextDevice;
            break;
        }
    }
    KeReleaseSpinLock(&IopDatabaseLock, OldIrql);

    DeviceObject->Type = 0;
    ExFreePoolWithTag(DeviceObject, IOP_TAG_DEVICE);
}
