/* SPDX-License-Identifier: MIT */
/*
 * I/O manager private declarations shared by the files of kernel/io/.
 */
#pragma once

#include <wdm.h>

#include "kernel/ki.h"

/* Pool tags, written reversed as the DDK does, so pool dumps read "Irp ", "Driv", ... */
#define IOP_TAG_IRP    ' prI'
#define IOP_TAG_DRIVER 'virD'
#define IOP_TAG_DEVICE 'iveD'
#define IOP_TAG_NAME   'mNoI'

/* IRP.AllocationFlags (the DDK's values): the IRP came from IoAllocateIrp. */
#define IRP_ALLOCATED_FIXED_SIZE 0x04

/* DEVOBJ_EXTENSION.StartIoFlags bits that describe a recorded (deferred) start-next request. */
#define IOP_SIO_REQUEST_MASK (DOE_SIO_NO_KEY | DOE_SIO_WITH_KEY | DOE_SIO_CANCELABLE)
