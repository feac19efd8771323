/* SPDX-License-Identifier: MIT */
/*
 * Leaving the emulator: QEMU's isa-debug-exit device at port 0xf4.
 */
#include "hal/hal.h"

#define QEMU_DEBUG_EXIT_PORT 0xf4

VOID
HalExitEmulator(UCHAR Value)
{
    x86_cli();
    x86_outl(QEMU_DEBUG_EXIT_PORT, Value);
    /* Not under QEMU (or the device is missing): stop here, visibly. */
    HalDebugWrite("\nSpindle: isa-debug-exit is absent; halting\n", 44);
    for (;;)
    {
        x86_cli();
        x86_hlt();
    }
}
