/* SPDX-License-Identifier: MIT */
/*
 * Test instrumentation for the sample drivers (not driver logic): white-box
 * checks on kernel state that a real driver has no way to make.
 */
#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "tests/drivers/samples.h"

/* TRUE if at DISPATCH_LEVEL with the cancel spin lock held by this processor. */
BOOLEAN
SampleInCancelRoutineContext(VOID)
{
    return KeGetCurrentIrql() == DISPATCH_LEVEL && !KeTestSpinLock(&IopCancelSpinLock) &&
           __atomic_load_n(&IopCancelLockOwner, __ATOMIC_RELAXED) ==
               KeGetCurrentProcessorNumber() + 1;
}
