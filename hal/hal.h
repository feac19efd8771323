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
#define HAL_EXIT_IDLE     0x14 // the image has no workload to run: 41

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

/* ---- clock (hal/timer.c) */

/* Calibrates the APIC timer and the TSC against the PIT. Boot processor, once, at boot. */
VOID HalInitializeClock(VOID);
/* Starts the calling processor's periodic APIC timer: Vector every PeriodMicroseconds. */
VOID HalStartClockInterrupt(ULONG Vector, ULONG PeriodMicroseconds);
/* Changes the calling processor's period; the next interrupt is a full period away. */
VOID HalSetClockPeriod(ULONG PeriodMicroseconds);
/* The calling processor's period in microseconds, read back from its timer (rounded down). */
ULONG HalGetClockPeriod(VOID);
/* The TSC, and its rate in Hz in *Frequency when given. Any IRQL. */
ULONG64 HalQueryPerformanceCounter(ULONG64 *Frequency);
/* Busy-waits at least Microseconds. Any IRQL. */
VOID HalStallExecutionProcessor(ULONG Microseconds);

/* ---- ACPI: the MADT's processors, I/O APICs and interrupt overrides (hal/acpi.c) */

#define HAL_MAX_ACPI_PROCESSORS     256 // enabled processors the HAL records
#define HAL_MAX_IO_APICS            16
#define HAL_MAX_INTERRUPT_OVERRIDES 16
#define HAL_MAX_LOCAL_NMIS          16
#define HAL_ALL_PROCESSORS_UID      0xffffffffu // a local NMI entry for every processor

typedef struct _HAL_IO_APIC
{
    ULONG Id;
    ULONG Address; // physical base of its registers
    ULONG GsiBase; // first global system interrupt it serves
} HAL_IO_APIC;

typedef struct _HAL_INTERRUPT_OVERRIDE
{
    UCHAR Bus;       // 0 = ISA
    UCHAR SourceIrq; // bus-relative IRQ
    USHORT Flags;    // MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2 (0 = bus default)
    ULONG Gsi;       // global system interrupt it is wired to
} HAL_INTERRUPT_OVERRIDE;

/*
 * Finds and checks the ACPI tables from the loader's copy of the RSDP (NULL
 * when the loader gave none) and records the MADT. Boot processor, once,
 * after HalInitializeLocalApic. Never faults on bad tables: it prints one line
 * and falls back to one processor, the current one.
 */
VOID HalInitializeAcpi(const VOID *Rsdp, ULONG RsdpLength);

/* Enabled processors (at least 1: the boot processor when ACPI gave nothing). */
ULONG HalQueryProcessorCount(VOID);
/* The APIC ID of enabled processor Index (MADT order), or ~0u past the end. */
ULONG HalQueryProcessorApicId(ULONG Index);
ULONG HalQueryIoApicCount(VOID);
/* Copies I/O APIC Index into *IoApic; FALSE past the end. */
BOOLEAN HalQueryIoApic(ULONG Index, HAL_IO_APIC *IoApic);
/* The GSI that ISA IRQ Irq is wired to (Irq itself without an override); *Flags its INTI flags. */
ULONG HalQueryIsaInterruptGsi(ULONG Irq, PUSHORT Flags);
/*
 * TRUE if the MADT wires local interrupt pin Lint (0 or 1) of the processor
 * with APIC ID ApicId to NMI; *Flags gets the entry's MPS INTI flags.
 */
BOOLEAN HalQueryLocalNmi(ULONG ApicId, ULONG Lint, PUSHORT Flags);
/* Physical address of the local APICs as the MADT gives it (0 without a MADT). */
ULONG64 HalQueryLocalApicAddress(VOID);
/*
 * The first table with Signature (e.g. "APIC") listed by the RSDT/XSDT whose
 * length and checksum are correct, identity-mapped; NULL if there is none.
 */
const VOID *HalQueryAcpiTable(const char Signature[4]);

/* ---- application processor start-up (hal/apsmp.c) */

/* How to start one processor: what its first kernel code is and runs on. */
typedef struct _HAL_PROCESSOR_START
{
    ULONG_PTR Entry;          // Entry(Context) in 64-bit mode, interrupts off; must not return
    PVOID Context;            // its argument (the kernel passes the PRCB)
    ULONG_PTR StackTop;       // 16-byte aligned
    volatile BOOLEAN *Online; // the entry stores TRUE (release) once the processor is up
} HAL_PROCESSOR_START;

/*
 * Copies the trampoline into LowPage: 4 KiB-aligned, below 1 MiB, identity-
 * mapped, and kept allocated until the last HalStartProcessor has returned.
 * FALSE (with a message) if the page is unusable. Boot processor only.
 */
BOOLEAN HalPrepareProcessorStart(PVOID LowPage);

/*
 * Starts the processor with local APIC ID ApicId (INIT, INIT deassert, SIPI,
 * a second SIPI only if needed; SDM vol. 3A §8.4.4.1) and waits, bounded
 * (PIT-timed), until it sets *Start->Online. TRUE if it did; otherwise prints
 * "Spindle: processor with APIC ID n did not start", puts the processor back
 * into wait-for-SIPI with INIT (so it touches nothing later) and returns FALSE.
 * Boot processor only, one processor at a time, interrupts on or off.
 */
BOOLEAN HalStartProcessor(ULONG ApicId, const HAL_PROCESSOR_START *Start);
