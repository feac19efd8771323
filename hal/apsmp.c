/* SPDX-License-Identifier: MIT */
/*
 * Application processor start-up: INIT-SIPI-SIPI through the boot processor's
 * local APIC (Intel SDM vol. 3A §8.4.4.1, "Typical BSP Initialization
 * Sequence", and §10.6.1), with boot/trampoline.asm as the code the AP runs
 * from its SIPI vector up to the kernel's 64-bit entry.
 *
 * Timing. This runs before any calibrated timer exists, so the delays and
 * time-outs are counted on PIT channel 2 (1.193182 MHz), polled through port
 * 0x61: the gate (bit 0) starts a mode 0 count-down and OUT2 (bit 5) goes high
 * when it reaches zero. It needs no interrupt and no TSC frequency, and works
 * with interrupts on or off. One count-down lasts at most 65535 ticks
 * (54.9 ms); longer waits chain 10 ms count-downs, and each is also bounded by
 * a poll count, so a missing PIT cannot hang the start-up. The speaker enable
 * (bit 1) is kept off. Channel 2 is used by nothing else while processors
 * start (hal/timer.c uses it earlier, to calibrate the clock).
 *
 * Per start, one processor at a time, on the boot processor:
 *   mailbox filled, Started = NONE   then a fence, then the IPIs
 *   INIT assert, 10 ms, INIT deassert
 *   SIPI; if Started is still NONE after 200 us, a second SIPI (then 200 us)
 *   wait <= 1 s for Started = LONG_MODE  (the mailbox is then free again)
 *   wait <= 1 s for *Online              (set by the kernel's entry)
 * A processor that misses a deadline is reported with the stage it reached
 * and sent INIT again, which parks it in wait-for-SIPI (SDM vol. 3A §8.4.1), so
 * it can never run later on memory the kernel has reused.
 */
#include "hal/halp.h"

#include "lib/lib.h"

#define PIT_FREQUENCY_HZ           1193182
#define PIT_PORT_CHANNEL2          0x42
#define PIT_PORT_COMMAND           0x43
#define PIT_COMMAND_CHANNEL2_MODE0 0xb0 // channel 2, low then high byte, mode 0, binary
#define PORT_SYSTEM_CONTROL_B      0x61
#define PORT_B_GATE2               0x01 // PIT channel 2 gate
#define PORT_B_SPEAKER             0x02 // speaker data enable
#define PORT_B_OUT2                0x20 // PIT channel 2 output (read only)

#define HALP_PIT_CHUNK_US         10000    // one count-down of a chained wait
#define HALP_PIT_POLL_LIMIT       10000000 // port reads (~1 us each) after which the PIT is dead
#define HALP_INIT_DELAY_US        10000    // after INIT assert (SDM vol. 3A §8.4.4.1)
#define HALP_SIPI_DELAY_US        200      // after each SIPI
#define HALP_AP_START_TIMEOUT_US  1000000  // SIPI to 64-bit mode
#define HALP_AP_ONLINE_TIMEOUT_US 1000000  // 64-bit mode to Online

#define HALP_GOAL_ONLINE (HAL_AP_STAGE_LONG_MODE + 1) // past the last mailbox stage

#define LOW_MEMORY_LIMIT      0x100000ull // a SIPI vector addresses the first 1 MiB
#define IDENTITY_LIMIT        (4ull << 30)
#define APIC_BASE_X2APIC      (1ull << 10) // IA32_APIC_BASE.EXTD
#define XAPIC_MAX_DESTINATION 0xfe         // 0xff is the xAPIC broadcast ID

/* boot/trampoline.asm: the bytes copied to the trampoline page (.rodata, never run in place). */
extern const UCHAR HalpTrampolineStart[];
extern const UCHAR HalpTrampolineEnd[];

/* Set by HalPrepareProcessorStart; used by the boot processor only. */
static PUCHAR HalpTrampolinePage;
/* Set when a count-down never ended: later waits do not wait (boot processor only). */
static BOOLEAN HalpPitBroken;

/* Starts a PIT channel 2 count-down of Microseconds (at most 54925). */
static VOID
HalpPitStartCountdown(ULONG Microseconds)
{
    ULONG Ticks = (ULONG)(((ULONG64)Microseconds * PIT_FREQUENCY_HZ + 999999) / 1000000);
    UCHAR Control = x86_inb(PORT_SYSTEM_CONTROL_B) & ~(PORT_B_GATE2 | PORT_B_SPEAKER);

    if (Ticks == 0)
    {
        Ticks = 1;
    }
    if (Ticks > 0xffff)
    {
        Ticks = 0xffff;
    }
    /* Gate low holds the counter; programming mode 0 drives OUT2 low (8254 data sheet). */
    x86_outb(PORT_SYSTEM_CONTROL_B, Control);
    x86_outb(PIT_PORT_COMMAND, PIT_COMMAND_CHANNEL2_MODE0);
    x86_outb(PIT_PORT_CHANNEL2, (UCHAR)(Ticks & 0xff));
    x86_outb(PIT_PORT_CHANNEL2, (UCHAR)(Ticks >> 8));
    /* Gate high: counting starts; OUT2 rises when the count reaches zero. */
    x86_outb(PORT_SYSTEM_CONTROL_B, Control | PORT_B_GATE2);
}

static BOOLEAN
HalpPitCountdownExpired(VOID)
{
    return (x86_inb(PORT_SYSTEM_CONTROL_B) & PORT_B_OUT2) != 0;
}

/* TRUE once the AP has got as far as Goal: a HAL_AP_STAGE_*, or HALP_GOAL_ONLINE. */
static BOOLEAN
HalpApReached(const HAL_AP_MAILBOX *Mailbox, const HAL_PROCESSOR_START *Start, ULONG Goal)
{
    if (Goal == HALP_GOAL_ONLINE)
    {
        /* Acquire: pairs with the entry's release store of Online. */
        return __atomic_load_n(Start->Online, __ATOMIC_ACQUIRE);
    }
    /* Acquire: pairs with the trampoline's stores (ordered by x86 TSO, boot/trampoline.asm). */
    return __atomic_load_n(&Mailbox->Started, __ATOMIC_ACQUIRE) >= Goal;
}

/*
 * Waits up to Microseconds (PIT-timed) for the AP to reach Goal. With Start
 * NULL it only waits (a plain stall). TRUE if the goal was reached.
 */
static BOOLEAN
HalpWaitForAp(const HAL_AP_MAILBOX *Mailbox, const HAL_PROCESSOR_START *Start, ULONG Goal,
              ULONG Microseconds)
{
    for (;;)
    {
        ULONG Chunk = Microseconds < HALP_PIT_CHUNK_US ? Microseconds : HALP_PIT_CHUNK_US;

        if (Start != NULL && HalpApReached(Mailbox, Start, Goal))
        {
            return TRUE;
        }
        if (Microseconds == 0)
        {
            return FALSE;
        }
        HalpPitStartCountdown(Chunk);
        for (ULONG Poll = 0; !HalpPitCountdownExpired(); Poll++)
        {
            if (Start != NULL && HalpApReached(Mailbox, Start, Goal))
            {
                return TRUE;
            }
            if (HalpPitBroken || Poll == HALP_PIT_POLL_LIMIT)
            {
                /* Bounded even without a PIT: the waits end early; starts may then fail. */
                if (!HalpPitBroken)
                {
                    DbgPrint("Spindle: PIT channel 2 does not count down; processor start-up "
                             "waits are not timed\n");
                    HalpPitBroken = TRUE;
                }
                break;
            }
            x86_pause();
        }
        Microseconds -= Chunk;
    }
}

static VOID
HalpStall(ULONG Microseconds)
{
    HalpWaitForAp(NULL, NULL, 0, Microseconds);
}

/* INIT assert, 10 ms, INIT deassert: the target resets into wait-for-SIPI. */
static VOID
HalpSendInit(ULONG ApicId)
{
    HalpApicSendIcr(ApicId, LAPIC_ICR_INIT | LAPIC_ICR_LEVEL | LAPIC_ICR_ASSERT);
    HalpStall(HALP_INIT_DELAY_US);
    /* Level de-assert: needed by discrete 82489DX APICs, ignored by newer ones (SDM §10.6.1). */
    HalpApicSendIcr(ApicId, LAPIC_ICR_INIT | LAPIC_ICR_LEVEL);
}

BOOLEAN
HalPrepareProcessorStart(PVOID LowPage)
{
    ULONG_PTR Page = (ULONG_PTR)LowPage;
    SIZE_T Size = (SIZE_T)(HalpTrampolineEnd - HalpTrampolineStart);

    /*
     * The SIPI vector is the page number: 4 KiB-aligned, below 1 MiB, and not
     * 0xa0-0xbf, which the SDM reserves (vol. 3A §10.6.1, delivery mode 110).
     */
    if (Page == 0 || Page % 4096 != 0 || Page >= LOW_MEMORY_LIMIT ||
        (Page >= 0xa0000 && Page < 0xc0000))
    {
        DbgPrint("Spindle: cannot start processors from page %#llx (SIPI needs a 4 KiB page "
                 "below 1 MiB)\n",
                 (ULONG64)Page);
        return FALSE;
    }
    memcpy(LowPage, HalpTrampolineStart, Size); // the assembler checked Size <= the mailbox offset
    memset((PUCHAR)LowPage + HAL_AP_MAILBOX_OFFSET, 0, sizeof(HAL_AP_MAILBOX));
    HalpTrampolinePage = (PUCHAR)LowPage;
    return TRUE;
}

static PCSTR
HalpStageName(ULONG Stage)
{
    switch (Stage)
    {
        case HAL_AP_STAGE_NONE:
            return "no response to INIT-SIPI-SIPI";
        case HAL_AP_STAGE_REAL_MODE:
            return "stopped in the trampoline's real-mode part";
        case HAL_AP_STAGE_PROTECTED_MODE:
            return "stopped switching to long mode";
        default:
            return "reached 64-bit mode but did not come online";
    }
}

BOOLEAN
HalStartProcessor(ULONG ApicId, const HAL_PROCESSOR_START *Start)
{
    HAL_AP_MAILBOX *Mailbox;
    ULONG Vector;
    ULONG64 Cr3 = x86_read_cr3();
    BOOLEAN X2Apic = (x86_rdmsr(X86_MSR_APIC_BASE) & APIC_BASE_X2APIC) != 0;
    ULONG Stage;

    if (HalpTrampolinePage == NULL || !HalpApicIsReady())
    {
        DbgPrint("Spindle: processor with APIC ID %u did not start (no trampoline or local "
                 "APIC)\n",
                 ApicId);
        return FALSE;
    }
    if (!X2Apic && ApicId > XAPIC_MAX_DESTINATION)
    {
        DbgPrint("Spindle: processor with APIC ID %u did not start (not addressable in xAPIC "
                 "mode)\n",
                 ApicId);
        return FALSE;
    }
    /* The trampoline loads CR3 in 32-bit mode; the stack must suit the System V ABI. */
    if (Cr3 >= IDENTITY_LIMIT || Start->StackTop % 16 != 0)
    {
        DbgPrint("Spindle: processor with APIC ID %u did not start (CR3 %#llx above 4 GiB or "
                 "stack %#llx misaligned)\n",
                 ApicId, Cr3, (ULONG64)Start->StackTop);
        return FALSE;
    }

    Mailbox = (HAL_AP_MAILBOX *)(HalpTrampolinePage + HAL_AP_MAILBOX_OFFSET);
    Vector = (ULONG)((ULONG_PTR)HalpTrampolinePage >> 12);
    Mailbox->Cr3 = Cr3;
    Mailbox->StackTop = Start->StackTop;
    Mailbox->Prcb = (ULONG64)(ULONG_PTR)Start->Context;
    Mailbox->Entry = Start->Entry;
    Mailbox->Started = HAL_AP_STAGE_NONE;
    /*
     * Full fence: the mailbox is globally visible before the INIT-SIPI reaches
     * the AP (pairs with the trampoline's loads). An xAPIC ICR write is an
     * uncached store, ordered anyway; an x2APIC ICR write is a WRMSR, which
     * does not wait for earlier stores (SDM vol. 3A §10.12.3).
     */
    x86_mfence();

    /* SDM vol. 3A §8.4.4.1: INIT, 10 ms, SIPI, 200 us, SIPI, 200 us. */
    HalpSendInit(ApicId);
    for (ULONG Sipi = 0; Sipi < 2; Sipi++)
    {
        HalpApicSendIcr(ApicId, LAPIC_ICR_STARTUP | LAPIC_ICR_ASSERT | Vector);
        if (HalpWaitForAp(Mailbox, Start, HAL_AP_STAGE_REAL_MODE, HALP_SIPI_DELAY_US))
        {
            break; // running: a second SIPI would be ignored, but is not needed
        }
    }

    if (HalpWaitForAp(Mailbox, Start, HAL_AP_STAGE_LONG_MODE, HALP_AP_START_TIMEOUT_US) &&
        HalpWaitForAp(Mailbox, Start, HALP_GOAL_ONLINE, HALP_AP_ONLINE_TIMEOUT_US))
    {
        return TRUE;
    }

    Stage = __atomic_load_n(&Mailbox->Started, __ATOMIC_ACQUIRE);
    HalpSendInit(ApicId); // park it: it must not run on after the kernel reuses its memory
    DbgPrint("Spindle: processor with APIC ID %u did not start (%s)\n", ApicId,
             HalpStageName(Stage));
    return FALSE;
}
