/* SPDX-License-Identifier: MIT */
/*
 * What the kernel may ask of the PC platform. Only the HAL touches devices,
 * the local APIC and the task priority (CR8).
 */
#pragma once

#include <wdm.h>

#include "arch/x86_64/x86.h"

/* isa-debug-exit values (DESIGN.md §6); QEMU exits with (value << 1) | 1. */
#define HAL_EXIT_PASSED   0x10 // every test passed: QEMU exits 33
#define HAL_EXIT_FAILED   0x11 // a test failed: 35
#define HAL_EXIT_BUGCHECK 0x12 // the system bug-checked: 37
#define HAL_EXIT_WATCHDOG 0x13 // the test watchdog fired: 39

/* IRQL is CR8 (= TPR[7:4]); the compiler barrier in the wrappers orders it. */
static inline KIRQL
HalGetCurrentIrql(VOID)
{
    return (KIRQL)x86_read_cr8();
}

static inline VOID
HalSetCurrentIrql(KIRQL Irql)
{
    x86_write_cr8(Irql);
}

/* COM1 debug port: raw output, unserialised (DbgPrint serialises). */
VOID HalInitializeDebugPort(VOID);
VOID HalDebugWrite(const char *Text, SIZE_T Length);

/* Ends the QEMU run with the given isa-debug-exit value. Never returns. */
__attribute__((noreturn)) VOID HalExitEmulator(UCHAR Value);

/* ---- local APIC */

#define HAL_SPURIOUS_VECTOR 0xff
#define HAL_ERROR_VECTOR    0xe2

VOID HalEndOfInterrupt(VOID);

/* Stops every other online processor with an NMI (bug checks, the test watchdog). */
VOID HalFreezeOtherProcessors(VOID);
VOID HalInitializeLocalApic(VOID);
ULONG HalGetCurrentApicId(VOID);
VOID HalDisableLegacyPic(VOID);
VOID HalRequestSelfInterrupt(ULONG Vector);
VOID HalSendIpi(ULONG ApicId, ULONG Vector);
VOID HalSendNmi(ULONG ApicId);
