/* SPDX-License-Identifier: MIT */
/*
 * Sample StartIo driver for a simulated device, written the way a Windows
 * driver writer would (only <wdm.h>): IRP_MJ_READ/WRITE are queued with
 * IoStartPacket; StartIo starts the "hardware", a KTIMER due in 1-3 clock
 * ticks, whose DPC stands in for the DpcForIsr and completes the request.
 *
 * Ownership of the current IRP, with every decision under the cancel lock:
 *   queued       the cancel routine removes it (KeRemoveEntryDeviceQueue) and
 *                completes it as cancelled
 *   current, hardware not started
 *                StartIo owns it; a cancel routine that runs now leaves it to
 *                StartIo, which sees Irp->Cancel and completes it as cancelled
 *   current, hardware running (HwIrp == Irp)
 *                the DPC claims it (HwIrp = NULL, IoSetCancelRoutine(NULL))
 *                and completes it with STATUS_SUCCESS; or the cancel routine
 *                aborts the hardware (HwIrp = NULL, KeCancelTimer) and completes
 *                it as cancelled.
 * Whoever completes the current IRP starts the next packet first and completes
 * the IRP second, as the DDK's DpcForIsr does: CurrentIrp then never names a
 * completed IRP, which its owner could free and reuse at the same address
 * while a cancel routine compares CurrentIrp with it.
 * A DPC that finds HwIrp NULL, or the timer not signalled (re-armed for the
 * next IRP since it fired), belongs to an aborted run and does nothing.
 */
#include <wdm.h>

#include "tests/drivers/samples.h"

PDRIVER_OBJECT SioDriverObject;

static DRIVER_DISPATCH SioCreateClose;
static DRIVER_DISPATCH SioReadWrite;
static DRIVER_STARTIO SioStartIo;
static DRIVER_CANCEL SioCancel;
static DRIVER_UNLOAD SioUnload;
static KDEFERRED_ROUTINE SioDpcForIsr;

/* The hardware's latency for the next request: 1-3 clock ticks. Cancel lock held. */
static ULONG
SioNextLatency(PSIO_EXTENSION Extension)
{
    Extension->Seed = Extension->Seed * 1103515245u + 12345u;
    return 1 + (Extension->Seed >> 16) % 3;
}

static VOID
SioComplete(PIRP Irp, NTSTATUS Status)
{
    PIO_STACK_LOCATION Stack = IoGetCurrentIrpStackLocation(Irp);

    Irp->IoStatus.Status = Status;
    Irp->IoStatus.Information = NT_SUCCESS(Status) ? Stack->Parameters.Read.Length : 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

/* Hands the device to the next queued request. Any IRQL <= DISPATCH_LEVEL. */
static VOID
SioStartNext(PDEVICE_OBJECT DeviceObject)
{
    KIRQL OldIrql = KeRaiseIrqlToDpcLevel();

    IoStartNextPacket(DeviceObject, TRUE);
    KeLowerIrql(OldIrql);
}

static NTSTATUS
SioCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    Irp->IoStatus.Status = STATUS_SUCCESS;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;
}

static NTSTATUS
SioReadWrite(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IoMarkIrpPending(Irp);
    IoStartPacket(DeviceObject, Irp, NULL, SioCancel);
    return STATUS_PENDING;
}

/* DISPATCH_LEVEL. Starts the hardware on Irp unless it was cancelled first. */
static VOID
SioStartIo(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PSIO_EXTENSION Extension = DeviceObject->DeviceExtension;
    LARGE_INTEGER DueTime;
    KIRQL CancelIrql;

    if (KeGetCurrentIrql() != DISPATCH_LEVEL)
    {
        InterlockedIncrement(&Extension->Anomalies);
    }
    IoAcquireCancelSpinLock(&CancelIrql);
    if (Irp != DeviceObject->CurrentIrp)
    {
        InterlockedIncrement(&Extension->Anomalies);
        IoReleaseCancelSpinLock(CancelIrql);
        return;
    }
    if (Irp->Cancel)
    {
        /* Cancelled before we got here: any cancel routine call left it to us. */
        IoSetCancelRoutine(Irp, NULL);
        IoReleaseCancelSpinLock(CancelIrql);
        InterlockedIncrement(&Extension->CancelledAtStart);
        IoStartNextPacket(DeviceObject, TRUE);
        SioComplete(Irp, STATUS_CANCELLED);
        return;
    }
    Extension->HwIrp = Irp;
    DueTime.QuadPart = -(LONGLONG)((ULONGLONG)KeQueryTimeIncrement() * SioNextLatency(Extension));
    KeSetTimer(&Extension->Timer, DueTime, &Extension->Dpc);
    InterlockedIncrement(&Extension->HardwareStarts);
    IoReleaseCancelSpinLock(CancelIrql);
}

/* The device's interrupt work, at DISPATCH_LEVEL: completes the request the hardware finished. */
static VOID
SioDpcForIsr(PKDPC Dpc, PVOID DeferredContext, PVOID SystemArgument1, PVOID SystemArgument2)
{
    PDEVICE_OBJECT DeviceObject = DeferredContext;
    PSIO_EXTENSION Extension = DeviceObject->DeviceExtension;
    KIRQL CancelIrql;
    PIRP Irp;

    IoAcquireCancelSpinLock(&CancelIrql);
    Irp = Extension->HwIrp;
    if (Irp == NULL || !KeReadStateTimer(&Extension->Timer))
    {
        InterlockedIncrement(&Extension->SpuriousDpcs);
        IoReleaseCancelSpinLock(CancelIrql);
        return;
    }
    Extension->HwIrp = NULL;
    if (IoSetCancelRoutine(Irp, NULL) == NULL)
    {
        /* A cancel routine that took the routine would have aborted the hardware first. */
        InterlockedIncrement(&Extension->Anomalies);
        IoReleaseCancelSpinLock(CancelIrql);
        return;
    }
    IoReleaseCancelSpinLock(CancelIrql);

    InterlockedIncrement(&Extension->HardwareCompletions);
    IoStartNextPacket(DeviceObject, TRUE);
    SioComplete(Irp, STATUS_SUCCESS);
}

/* Entered at DISPATCH_LEVEL holding the cancel lock; releases it with Irp->CancelIrql. */
static VOID
SioCancel(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PSIO_EXTENSION Extension = DeviceObject->DeviceExtension;

    if (!SampleInCancelRoutineContext() || !Irp->Cancel)
    {
        InterlockedIncrement(&Extension->Violations);
    }
    if (Irp == DeviceObject->CurrentIrp)
    {
        if (Extension->HwIrp != Irp)
        {
            /* StartIo has not looked at it yet; it will find Cancel set. */
            IoReleaseCancelSpinLock(Irp->CancelIrql);
            return;
        }
        /* Abort the hardware: if the timer already fired, its DPC finds HwIrp NULL. */
        Extension->HwIrp = NULL;
        KeCancelTimer(&Extension->Timer);
        IoReleaseCancelSpinLock(Irp->CancelIrql);
        InterlockedIncrement(&Extension->CancelledInProgress);
        SioStartNext(DeviceObject);
        SioComplete(Irp, STATUS_CANCELLED);
        return;
    }
    if (KeRemoveEntryDeviceQueue(&DeviceObject->DeviceQueue, &Irp->Tail.Overlay.DeviceQueueEntry))
    {
        IoReleaseCancelSpinLock(Irp->CancelIrql);
        InterlockedIncrement(&Extension->CancelledQueued);
        SioComplete(Irp, STATUS_CANCELLED);
        return;
    }
    /* Neither queued nor current: IoStartPacket/IoStartNextPacket rule this out. */
    InterlockedIncrement(&Extension->Anomalies);
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}

static VOID
SioDeleteDevices(PDRIVER_OBJECT DriverObject)
{
    while (DriverObject->DeviceObject != NULL)
    {
        PDEVICE_OBJECT DeviceObject = DriverObject->DeviceObject;
        PSIO_EXTENSION Extension = DeviceObject->DeviceExtension;

        KeCancelTimer(&Extension->Timer);
        KeRemoveQueueDpc(&Extension->Dpc);
        IoDeleteDevice(DeviceObject);
    }
}

static VOID
SioUnload(PDRIVER_OBJECT DriverObject)
{
    for (PDEVICE_OBJECT Device = DriverObject->DeviceObject; Device != NULL;
         Device = Device->NextDevice)
    {
        PSIO_EXTENSION Extension = Device->DeviceExtension;
        KeCancelTimer(&Extension->Timer);
    }
    KeFlushQueuedDpcs(); // no DpcForIsr may still be running on another processor
    SioDeleteDevices(DriverObject);
    SioDriverObject = NULL;
}

/* Creates SIO_DEVICE_COUNT devices; odd-numbered ones use deferred StartIo. PASSIVE_LEVEL. */
NTSTATUS
SioDriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    DriverObject->MajorFunction[IRP_MJ_CREATE] = SioCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = SioCreateClose;
    DriverObject->MajorFunction[IRP_MJ_READ] = SioReadWrite;
    DriverObject->MajorFunction[IRP_MJ_WRITE] = SioReadWrite;
    DriverObject->DriverStartIo = SioStartIo;
    DriverObject->DriverUnload = SioUnload;

    for (ULONG Index = 0; Index < SIO_DEVICE_COUNT; Index++)
    {
        PDEVICE_OBJECT DeviceObject;
        PSIO_EXTENSION Extension;
        NTSTATUS Status = IoCreateDevice(DriverObject, sizeof(SIO_EXTENSION), NULL,
                                         FILE_DEVICE_UNKNOWN, 0, FALSE, &DeviceObject);

        if (!NT_SUCCESS(Status))
        {
            SioDeleteDevices(DriverObject);
            return Status;
        }
        Extension = DeviceObject->DeviceExtension;
        Extension->DeviceObject = DeviceObject;
        Extension->Index = Index;
        Extension->Seed = Index + 1;
        KeInitializeTimer(&Extension->Timer);
        KeInitializeDpc(&Extension->Dpc, SioDpcForIsr, DeviceObject);
        if (Index & 1)
        {
            IoSetStartIoAttributes(DeviceObject, TRUE, FALSE);
        }
        DeviceObject->Flags &= ~DO_DEVICE_INITIALIZING;
    }
    SioDriverObject = DriverObject;
    return STATUS_SUCCESS;
}
