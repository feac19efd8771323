/* SPDX-License-Identifier: MIT */
/*
 * Sample driver with a cancel-safe queue, written the way a Windows driver
 * writer would (only <wdm.h>): IRP_MJ_READ/WRITE are queued with
 * IoCsqInsertIrp and the device's DPC, targeted at the processor after the
 * submitter's, takes them out with IoCsqRemoveNextIrp and completes them. The
 * CSQ routines own every cancel race; the driver only supplies its list and lock.
 *
 * Each DPC run completes a few requests (1-4) and queues itself again if it
 * found as many as it wanted, so requests wait a little and cancels can win.
 */
#include <wdm.h>

#include "tests/drivers/samples.h"

PDRIVER_OBJECT CsdDriverObject;

static DRIVER_DISPATCH CsdCreateClose;
static DRIVER_DISPATCH CsdReadWrite;
static DRIVER_UNLOAD CsdUnload;
static KDEFERRED_ROUTINE CsdDpc;
static IO_CSQ_INSERT_IRP CsdInsertIrp;
static IO_CSQ_REMOVE_IRP CsdRemoveIrp;
static IO_CSQ_PEEK_NEXT_IRP CsdPeekNextIrp;
static IO_CSQ_ACQUIRE_LOCK CsdAcquireLock;
static IO_CSQ_RELEASE_LOCK CsdReleaseLock;
static IO_CSQ_COMPLETE_CANCELED_IRP CsdCompleteCanceledIrp;

static PCSD_EXTENSION
CsdFromCsq(PIO_CSQ Csq)
{
    return CONTAINING_RECORD(Csq, CSD_EXTENSION, Csq);
}

/* ---- the cancel-safe queue's callbacks (all but the last under QueueLock) */

static VOID
CsdInsertIrp(PIO_CSQ Csq, PIRP Irp)
{
    InsertTailList(&CsdFromCsq(Csq)->PendingList, &Irp->Tail.Overlay.ListEntry);
}

static VOID
CsdRemoveIrp(PIO_CSQ Csq, PIRP Irp)
{
    RemoveEntryList(&Irp->Tail.Overlay.ListEntry);
}

/* The queued IRP after Irp (the first if NULL) whose FileObject is PeekContext, if given. */
static PIRP
CsdPeekNextIrp(PIO_CSQ Csq, PIRP Irp, PVOID PeekContext)
{
    PLIST_ENTRY Head = &CsdFromCsq(Csq)->PendingList;
    PLIST_ENTRY Link = Irp == NULL ? Head->Flink : Irp->Tail.Overlay.ListEntry.Flink;

    for (; Link != Head; Link = Link->Flink)
    {
        PIRP Next = CONTAINING_RECORD(Link, IRP, Tail.Overlay.ListEntry);
        if (PeekContext == NULL || IoGetCurrentIrpStackLocation(Next)->FileObject == PeekContext)
        {
            return Next;
        }
    }
    return NULL;
}

static VOID
CsdAcquireLock(PIO_CSQ Csq, PKIRQL Irql)
{
    KeAcquireSpinLock(&CsdFromCsq(Csq)->QueueLock, Irql);
}

static VOID
CsdReleaseLock(PIO_CSQ Csq, KIRQL Irql)
{
    KeReleaseSpinLock(&CsdFromCsq(Csq)->QueueLock, Irql);
}

/* Called without any lock, for an IRP already out of the queue. */
static VOID
CsdCompleteCanceledIrp(PIO_CSQ Csq, PIRP Irp)
{
    InterlockedIncrement(&CsdFromCsq(Csq)->Cancelled);
    Irp->IoStatus.Status = STATUS_CANCELLED;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

/* ---- dispatch and the device's DPC */

static NTSTATUS
CsdCreateClose(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    Irp->IoStatus.Status = STATUS_SUCCESS;
    Irp->IoStatus.Information = 0;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;
}

static NTSTATUS
CsdReadWrite(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    PCSD_EXTENSION Extension = DeviceObject->DeviceExtension;
    ULONG Processors = KeQueryActiveProcessorCount(NULL);

    InterlockedIncrement(&Extension->Queued);
    IoCsqInsertIrp(&Extension->Csq, Irp, NULL); // marks it pending
    KeSetTargetProcessorDpc(&Extension->Dpc,
                            (CCHAR)((KeGetCurrentProcessorNumber() + 1) % Processors));
    KeInsertQueueDpc(&Extension->Dpc, NULL, NULL);
    return STATUS_PENDING;
}

/* How many requests the next DPC run completes: 1-4. */
static ULONG
CsdNextBatch(PCSD_EXTENSION Extension)
{
    KIRQL Irql;
    ULONG Batch;

    KeAcquireSpinLock(&Extension->QueueLock, &Irql);
    Extension->Seed = Extension->Seed * 1103515245u + 12345u;
    Batch = 1 + (Extension->Seed >> 16) % 4;
    KeReleaseSpinLock(&Extension->QueueLock, Irql);
    return Batch;
}

static VOID
CsdDpc(PKDPC Dpc, PVOID DeferredContext, PVOID SystemArgument1, PVOID SystemArgument2)
{
    PCSD_EXTENSION Extension = DeferredContext;
    ULONG Batch = CsdNextBatch(Extension);

    for (ULONG Done = 0; Done < Batch; Done++)
    {
        PIRP Irp = IoCsqRemoveNextIrp(&Extension->Csq, NULL);

        if (Irp == NULL)
        {
            return;
        }
        InterlockedIncrement(&Extension->Completed);
        Irp->IoStatus.Status = STATUS_SUCCESS;
        Irp->IoStatus.Information = IoGetCurrentIrpStackLocation(Irp)->Parameters.Read.Length;
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
    }
    KeInsertQueueDpc(Dpc, NULL, NULL); // there may be more: come back for them
}

static VOID
CsdDeleteDevices(PDRIVER_OBJECT DriverObject)
{
    while (DriverObject->DeviceObject != NULL)
    {
        PDEVICE_OBJECT DeviceObject = DriverObject->DeviceObject;
        PCSD_EXTENSION Extension = DeviceObject->DeviceExtension;

        KeRemoveQueueDpc(&Extension->Dpc);
        IoDeleteDevice(DeviceObject);
    }
}

/* The queues must be empty (every request completed or cancelled). PASSIVE_LEVEL. */
static VOID
CsdUnload(PDRIVER_OBJECT DriverObject)
{
    KeFlushQueuedDpcs(); // a DPC that re-queued itself runs out here
    CsdDeleteDevices(DriverObject);
    CsdDriverObject = NULL;
}

/* Creates CSD_DEVICE_COUNT devices. PASSIVE_LEVEL. */
NTSTATUS
CsdDriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    DriverObject->MajorFunction[IRP_MJ_CREATE] = CsdCreateClose;
    DriverObject->MajorFunction[IRP_MJ_CLOSE] = CsdCreateClose;
    DriverObject->MajorFunction[IRP_MJ_READ] = CsdReadWrite;
    DriverObject->MajorFunction[IRP_MJ_WRITE] = CsdReadWrite;
    DriverObject->DriverUnload = CsdUnload;

    for (ULONG Index = 0; Index < CSD_DEVICE_COUNT; Index++)
    {
        PDEVICE_OBJECT DeviceObject;
        PCSD_EXTENSION Extension;
        NTSTATUS Status = IoCreateDevice(DriverObject, sizeof(CSD_EXTENSION), NULL,
                                         FILE_DEVICE_UNKNOWN, 0, FALSE, &DeviceObject);

        if (!NT_SUCCESS(Status))
        {
            CsdDeleteDevices(DriverObject);
            return Status;
        }
        Extension = DeviceObject->DeviceExtension;
        Extension->DeviceObject = DeviceObject;
        Extension->Seed = Index + 1;
        KeInitializeSpinLock(&Extension->QueueLock);
        InitializeListHead(&Extension->PendingList);
        IoCsqInitialize(&Extension->Csq, CsdInsertIrp, CsdRemoveIrp, CsdPeekNextIrp, CsdAcquireLock,
                        CsdReleaseLock, CsdCompleteCanceledIrp);
        KeInitializeDpc(&Extension->Dpc, CsdDpc, Extension);
        DeviceObject->Flags &= ~DO_DEVICE_INITIALIZING;
    }
    CsdDriverObject = DriverObject;
    return STATUS_SUCCESS;
}
