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

/* DEVOBJ_EXTENSION.StartIoFlags bits that describe a recorded (deferred) start-next request. */
#define IOP_SIO_REQUEST_MASK (DOE_SIO_NO_KEY | DOE_SIO_WITH_KEY | DOE_SIO_CANCELABLE)

/* ---- IRP allocation (io/irp.c) */

/* Sets up the per-processor IRP lookaside lists; once, after the processors started. */
VOID IopInitializeIrpLookaside(VOID);

/* The lists IoAllocateIrp takes IRPs from: StackSize 1, and 0 or 2..8 (white-box tests read them).
 */
#define IOP_SMALL_IRP_LIST            0
#define IOP_LARGE_IRP_LIST            1
#define IOP_LARGE_IRP_STACK_LOCATIONS 8 // the large list's IRPs have this many locations
extern NPAGED_LOOKASIDE_LIST IopIrpLookasideP[MAXIMUM_PROCESSORS][2]; // per processor
extern NPAGED_LOOKASIDE_LIST IopIrpLookasideL[2];                     // shared behind them
/* Per processor: IRPs ChargeQuota callers may still take from the lists (Windows' float). */
extern volatile LONG IopLookasideIrpFloat[MAXIMUM_PROCESSORS];

/* ---- the cancel spin lock (io/cancel.c) */

/* The system-wide cancel spin lock behind IoAcquireCancelSpinLock (white-box tests read it). */
extern KSPIN_LOCK IopCancelSpinLock;

/*
 * Number + 1 of the processor holding the cancel lock through
 * IoAcquireCancelSpinLock, 0 when free. Written only by the holder, so it is
 * exact when a processor asks whether it holds the lock itself.
 */
extern volatile ULONG IopCancelLockOwner;
