/* SPDX-License-Identifier: MIT */
/*
 * I/O manager private declarations shared by the files of kernel/io/.
 */
#pragma once

#include <wdm.h>

#include "kernel/ke/ke.h"

/* Pool tags, written reversed as the DDK does, so pool dumps read "Irp ", "Driv", ... */
#define IOP_TAG_IRP    ' prI'
#define IOP_TAG_DRIVER 'virD'
#define IOP_TAG_DEVICE 'iveD'
#define IOP_TAG_NAME   'mNoI'

/* IRP.AllocationFlags (the DDK's values): the IRP came from IoAllocateIrp. */
#define IRP_ALLOCATED_FIXED_SIZE 0x04

/* DEVOBJ_EXTENSION.StartIoFlags bits that describe a recorded (deferred) start-next request. */
#define IOP_SIO_REQUEST_MASK (DOE_SIO_NO_KEY | DOE_SIO_WITH_KEY | DOE_SIO_CANCELABLE)

/* ---- the cancel spin lock (io/cancel.c) */

/* The system-wide cancel spin lock behind IoAcquireCancelSpinLock (white-box tests read it). */
extern KSPIN_LOCK IopCancelSpinLock;

/*
 * Number + 1 of the processor holding the cancel lock through
 * IoAcquireCancelSpinLock, 0 when free. Written only by the holder, so it is
 * exact when a processor asks whether it holds the lock itself.
 */
extern volatile ULONG IopCancelLockOwner;
