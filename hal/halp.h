/* SPDX-License-Identifier: MIT */
/*
 * HAL-private declarations shared among hal/ files. The kernel never includes
 * this; the HAL's white-box tests do, explicitly.
 */
#pragma once

#include "hal/hal.h"

/* Local APIC registers, as xAPIC MMIO offsets (SDM vol. 3A table 10-1). */
#define LAPIC_REG_ID            0x020 // local APIC ID
#define LAPIC_REG_VERSION       0x030 // version, max LVT entry
#define LAPIC_REG_TPR           0x080 // task priority (CR8 aliases bits 7:4)
#define LAPIC_REG_EOI           0x0b0 // end of interrupt
#define LAPIC_REG_SVR           0x0f0 // spurious vector, software enable
#define LAPIC_REG_ISR0          0x100 // in-service, 8 x 32 bits
#define LAPIC_REG_IRR0          0x200 // interrupt request, 8 x 32 bits
#define LAPIC_REG_ESR           0x280 // error status
#define LAPIC_REG_ICR_LOW       0x300 // interrupt command, low half
#define LAPIC_REG_ICR_HIGH      0x310 // interrupt command, destination (xAPIC)
#define LAPIC_REG_LVT_TIMER     0x320 // timer LVT
#define LAPIC_REG_LVT_LINT0     0x350 // LINT0 LVT
#define LAPIC_REG_LVT_LINT1     0x360 // LINT1 LVT
#define LAPIC_REG_LVT_ERROR     0x370 // error LVT
#define LAPIC_REG_TIMER_INITIAL 0x380 // timer initial count
#define LAPIC_REG_TIMER_CURRENT 0x390 // timer current count
#define LAPIC_REG_TIMER_DIVIDE  0x3e0 // timer divide configuration

#define LAPIC_SVR_ENABLE       0x100
#define LAPIC_LVT_MASKED       0x10000
#define LAPIC_LVT_NMI          0x400  // delivery mode NMI (vector ignored, always edge)
#define LAPIC_LVT_ACTIVE_LOW   0x2000 // input pin polarity
#define LAPIC_LVT_PERIODIC     0x20000
#define LAPIC_ICR_FIXED        0x000
#define LAPIC_ICR_NMI          0x400
#define LAPIC_ICR_INIT         0x500
#define LAPIC_ICR_STARTUP      0x600
#define LAPIC_ICR_PENDING      0x1000 // delivery status (xAPIC only)
#define LAPIC_ICR_ASSERT       0x4000
#define LAPIC_ICR_LEVEL        0x8000
#define LAPIC_ICR_SELF         0x40000
#define LAPIC_ICR_ALL          0x80000
#define LAPIC_ICR_ALL_BUT_SELF 0xc0000

uint32_t HalpApicRead(uint32_t Register);
VOID HalpApicWrite(uint32_t Register, uint32_t Value);
VOID HalpApicSendIcr(uint32_t Destination, uint32_t Command);
BOOLEAN HalpApicIsReady(VOID);
BOOLEAN HalpApicBaseSelectsX2Apic(ULONG64 ApicBase);
ULONG HalpX2ApicMsr(uint32_t Register);
ULONG64 HalpX2ApicIcr(uint32_t Destination, uint32_t Command);
/*
 * Programs this processor's LINT0/LINT1 as the MADT's local APIC NMI entries
 * say: a pin they name becomes an NMI input, any other stays masked. Called by
 * HalInitializeLocalApic and, on the boot processor, once the MADT is read.
 */
VOID HalpConfigureLocalNmi(VOID);

/* ---- ACPI (hal/acpi.c) */

/* A local APIC NMI entry (MADT types 4 and 0xA): LINTn of some processors is wired to NMI. */
typedef struct _HAL_LOCAL_NMI
{
    ULONG ProcessorUid; // ACPI processor UID, or HAL_ALL_PROCESSORS_UID
    USHORT Flags;       // MPS INTI flags: polarity bits 1:0, trigger mode bits 3:2
    UCHAR Lint;         // 0 or 1
} HAL_LOCAL_NMI;

/* What one MADT says, as HalpAcpiParseMadt reads it. */
typedef struct _HAL_MADT_INFO
{
    ULONG64 LocalApicAddress; // the 32-bit field, or the 64-bit override (entry type 5)
    ULONG ProcessorCount;     // enabled processors in ApicIds, in MADT order, duplicates dropped
    ULONG ProcessorsDisabled; // listed but not enabled (absent, or online-capable only)
    ULONG ProcessorsDropped;  // enabled beyond HAL_MAX_ACPI_PROCESSORS
    ULONG ApicIds[HAL_MAX_ACPI_PROCESSORS];
    ULONG ProcessorUids[HAL_MAX_ACPI_PROCESSORS]; // ACPI processor UID of each of ApicIds
    ULONG IoApicCount;
    HAL_IO_APIC IoApics[HAL_MAX_IO_APICS];
    ULONG OverrideCount;
    HAL_INTERRUPT_OVERRIDE Overrides[HAL_MAX_INTERRUPT_OVERRIDES];
    ULONG LocalNmiCount;
    HAL_LOCAL_NMI LocalNmis[HAL_MAX_LOCAL_NMIS];
} HAL_MADT_INFO;

/* TRUE when the Length bytes at Table sum to 0 modulo 256 (ACPI 6.5 §5.2.5.3, §5.2.6). */
BOOLEAN HalpAcpiChecksumOk(const VOID *Table, ULONG Length);
/*
 * Checks and parses the MADT at Madt, of which Length bytes are readable, into
 * *Info. FALSE with *Problem set (e.g. "checksum mismatch") if the header,
 * checksum or any entry is malformed; nothing outside the Length bytes is read.
 */
BOOLEAN HalpAcpiParseMadt(const VOID *Madt, ULONG Length, HAL_MADT_INFO *Info, PCSTR *Problem);

/* ---- application processor start-up (hal/apsmp.c, boot/trampoline.asm) */

/*
 * The mailbox through which boot/trampoline.asm gets its parameters, at
 * HAL_AP_MAILBOX_OFFSET in the trampoline page. Offsets are shared with NASM
 * through boot/mailbox.inc (hand-kept; pinned below). The BSP writes every
 * field but Started before each start; the AP writes only Started.
 */
#define HAL_AP_MAILBOX_OFFSET 0xf00

#define HAL_AP_STAGE_NONE           0 // set by the BSP before INIT-SIPI-SIPI
#define HAL_AP_STAGE_REAL_MODE      1 // the SIPI arrived; the AP runs the trampoline
#define HAL_AP_STAGE_PROTECTED_MODE 2 // 32-bit protected mode, enabling paging
#define HAL_AP_STAGE_LONG_MODE      3 // 64-bit mode; the mailbox is read and free again

typedef struct _HAL_AP_MAILBOX
{
    ULONG64 Cr3;            // page-table root (below 4 GiB): the BSP's CR3
    ULONG64 StackTop;       // RSP for the entry, 16-byte aligned
    ULONG64 Prcb;           // RDI for the entry
    ULONG64 Entry;          // 64-bit entry address; never returns
    volatile ULONG Started; // HAL_AP_STAGE_*, written by the AP
    ULONG Reserved;
} HAL_AP_MAILBOX;

_Static_assert(offsetof(HAL_AP_MAILBOX, Cr3) == 0x00, "boot/mailbox.inc AP_MAILBOX_CR3");
_Static_assert(offsetof(HAL_AP_MAILBOX, StackTop) == 0x08, "boot/mailbox.inc AP_MAILBOX_STACK_TOP");
_Static_assert(offsetof(HAL_AP_MAILBOX, Prcb) == 0x10, "boot/mailbox.inc AP_MAILBOX_PRCB");
_Static_assert(offsetof(HAL_AP_MAILBOX, Entry) == 0x18, "boot/mailbox.inc AP_MAILBOX_ENTRY");
_Static_assert(offsetof(HAL_AP_MAILBOX, Started) == 0x20, "boot/mailbox.inc AP_MAILBOX_STARTED");
_Static_assert(sizeof(HAL_AP_MAILBOX) == 0x28, "boot/mailbox.inc AP_MAILBOX_SIZE");
_Static_assert(HAL_AP_MAILBOX_OFFSET + sizeof(HAL_AP_MAILBOX) <= 4096, "the mailbox fits the page");
