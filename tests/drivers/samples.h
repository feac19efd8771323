/* SPDX-License-Identifier: MIT */
/*
 * The sample drivers under tests/drivers/, built into the test kernel and
 * started by tests with IoCreateDriver(&Name, XxxDriverEntry):
 *
 *   sio_driver.c  a StartIo driver for a simulated device: IRP_MJ_READ/WRITE
 *                 go through IoStartPacket; the "hardware" is a KTIMER that
 *                 expires after 1-3 clock ticks and whose DPC (the DpcForIsr)
 *                 completes the request. Requests are cancelable while queued
 *                 and while the hardware works on them.
 *   csq_driver.c  keeps IRP_MJ_READ/WRITE requests in a cancel-safe queue and
 *                 completes them from a DPC targeted at another processor.
 *
 * The extensions are public so tests can seed the drivers and check their
 * state and counters after a run.
 */
#pragma once

#include <wdm.h>

/* ---------------------------------------------------------------- StartIo sample ("Sio") */

#define SIO_DEVICE_COUNT 8 // odd-numbered devices use deferred StartIo

typedef struct _SIO_EXTENSION
{
    PDEVICE_OBJECT DeviceObject;
    ULONG Index;
    KTIMER Timer; // the hardware: its expiry is the device's interrupt
    KDPC Dpc;     // the DpcForIsr, queued by the timer
    PIRP HwIrp;   // the IRP the hardware is working on; guarded by the cancel spin lock
    ULONG Seed;   // latency generator (LCG); guarded by the cancel spin lock
    /* Counters, updated with interlocked operations. */
    volatile LONG HardwareStarts;      // StartIo started the hardware
    volatile LONG HardwareCompletions; // the DPC completed an IRP with STATUS_SUCCESS
    volatile LONG CancelledQueued;     // cancel routine: removed from the device queue
    volatile LONG CancelledInProgress; // cancel routine: aborted the hardware
    volatile LONG CancelledAtStart;    // StartIo found the IRP already cancelled
    volatile LONG SpuriousDpcs;        // a DPC for an aborted or superseded hardware run
    volatile LONG Violations;          // a cancel routine ran at the wrong IRQL or without the lock
    volatile LONG Anomalies;           // a state the driver's protocol rules out
} SIO_EXTENSION, *PSIO_EXTENSION;

extern PDRIVER_OBJECT SioDriverObject; // set by SioDriverEntry, cleared by its unload
DRIVER_INITIALIZE SioDriverEntry;

/* ---------------------------------------------------------------- cancel-safe-queue sample ("Csd")
 */

#define CSD_DEVICE_COUNT 4

typedef struct _CSD_EXTENSION
{
    PDEVICE_OBJECT DeviceObject;
    IO_CSQ Csq;
    KSPIN_LOCK QueueLock;    // the CSQ lock
    LIST_ENTRY PendingList;  // queued IRPs (Tail.Overlay.ListEntry); guarded by QueueLock
    ULONG Seed;              // batch-size generator (LCG); guarded by QueueLock
    KDPC Dpc;                // completes queued IRPs, on another processor than the submitter's
    volatile LONG Completed; // completed with STATUS_SUCCESS by the DPC
    volatile LONG Cancelled; // completed as cancelled through CsqCompleteCanceledIrp
    volatile LONG Queued;    // IRPs inserted (IoCsqInsertIrp calls)
} CSD_EXTENSION, *PCSD_EXTENSION;

extern PDRIVER_OBJECT CsdDriverObject; // set by CsdDriverEntry, cleared by its unload
DRIVER_INITIALIZE CsdDriverEntry;

/* ---------------------------------------------------------------- test instrumentation */

/*
 * Not driver logic: TRUE if the caller runs at DISPATCH_LEVEL and this
 * processor holds the I/O manager's cancel spin lock (what a cancel routine is
 * promised). The sample cancel routines count a FALSE in Violations.
 */
BOOLEAN SampleInCancelRoutineContext(VOID);
