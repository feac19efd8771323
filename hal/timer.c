/* SPDX-License-Identifier: MIT */
/*
 * Time sources: the local APIC timer (the periodic clock interrupt) and the
 * TSC (performance counter and stall), calibrated once on the boot
 * processor: the TSC against the 8254 PIT, whose input clock is fixed at
 * 1.193182 MHz, and the APIC timer against the TSC.
 */
#include "hal/halp.h"

/* 8254 programmable interval timer (channel 2) and system control port B. */
#define PIT_FREQUENCY      1193182ull // input clock, Hz
#define PIT_PORT_CHANNEL2  0x42       // channel 2 counter
#define PIT_PORT_COMMAND   0x43       // mode/command register
#define PIT_CH2_LOHI_MODE0 0xb0       // channel 2, low then high byte, mode 0, binary
#define PIT_MAXIMUM_COUNT  0xffffull  // 16-bit counter (0 would mean 65536)
#define PORTB              0x61       // system control port B
#define PORTB_GATE2        0x01       // channel 2 gate: counts while set
#define PORTB_SPEAKER      0x02       // channel 2 output to the speaker (kept off)
#define PORTB_OUT2         0x20       // channel 2 output (read only)

/*
 * Calibration: HALP_CALIBRATION_RUNS windows of HALP_CALIBRATION_COUNT PIT
 * input clocks (10 ms each). A disturbance (the host descheduling the vCPU
 * under TCG, an SMI) can come between any two instructions, so each clock is
 * read where a delay can only make its run look worse:
 * - the TSC is read before the write that starts the PIT window and after the
 *   poll that saw it end, so a delay only lengthens what the TSC sees of the
 *   window, and the run with the fewest TSC cycles is the truest;
 * - the APIC timer is read between two TSC reads at each end of the window,
 *   and its rate taken against the TSC over the same span: a delay inside a
 *   bracket widens it, so the run with the narrowest brackets is the truest.
 * Measured against the PIT directly, the APIC count was only as good as the
 * gap between its read and the TSC's: one boot on a loaded host took its
 * rate from a run where that gap was 7 ms and ticked 3.9 times too fast.
 */
#define HALP_CALIBRATION_RUNS  5u
#define HALP_CALIBRATION_COUNT 11932      // 1193182 Hz x 10 ms, rounded
#define HALP_PIT_POLL_LIMIT    100000000u // polls of a window before the PIT is declared dead

#define LAPIC_TIMER_DIVIDE_16 0x3 // divide configuration: bits 3,1:0 = 0,11 (SDM vol. 3A §10.5.4)

#define HALP_MICROSECONDS 1000000ull

#ifndef HAL_INITIALIZATION_FAILED
#define HAL_INITIALIZATION_FAILED 0x0000005C // P1 0x8254: the PIT; P2 0 = dead, 1 = no rate
#endif

/* Set once by HalInitializeClock on the boot processor before any other processor starts. */
static ULONG64 HalpTscFrequency;       // Hz
static ULONG64 HalpApicTimerFrequency; // Hz, after the divide-by-16

/*
 * Converts Count units of a clock running at Frequency Hz into the units of
 * one running at Rate Hz, without 128-bit division (the kernel links no
 * compiler runtime). Exact for Count * Rate < 2^64 in each part.
 */
static ULONG64
HalpScale(ULONG64 Count, ULONG64 Rate, ULONG64 Frequency)
{
    return (Count / Frequency) * Rate + (Count % Frequency) * Rate / Frequency;
}

/*
 * Sets channel 2 up to count Count input clocks in mode 0 (interrupt on
 * terminal count): its output goes low when the mode is written and high when
 * the count runs out. Counting starts with the write of the high byte,
 * HalpPitStartWindow.
 */
static VOID
HalpPitArmWindow(ULONG Count)
{
    UCHAR PortB = x86_inb(PORTB);

    x86_outb(PORTB, (UCHAR)((PortB & ~PORTB_SPEAKER) | PORTB_GATE2));
    x86_outb(PIT_PORT_COMMAND, PIT_CH2_LOHI_MODE0);
    x86_outb(PIT_PORT_CHANNEL2, (UCHAR)(Count & 0xff));
}

static VOID
HalpPitStartWindow(ULONG Count)
{
    x86_outb(PIT_PORT_CHANNEL2, (UCHAR)(Count >> 8)); // the window starts here
}

/* Polls channel 2's output until the window ends; FALSE if it never does. */
static BOOLEAN
HalpPitWaitWindow(VOID)
{
    for (ULONG Poll = 0; Poll < HALP_PIT_POLL_LIMIT; Poll++)
    {
        if (x86_inb(PORTB) & PORTB_OUT2)
        {
            return TRUE;
        }
        x86_pause();
    }
    return FALSE;
}

static __attribute__((noreturn)) VOID
HalpPitDead(VOID)
{
    DbgPrint("Spindle: the PIT (channel 2 via port 0x61) never counted down; no clock\n");
    KeBugCheckEx(HAL_INITIALIZATION_FAILED, 0x8254, 0, 0, 0);
}

/* One calibration run: what the TSC saw of a PIT window, and the APIC timer against the TSC. */
typedef struct _HALP_WINDOW
{
    ULONG64 TscCycles;   // TSC cycles from before the window's start to after its end
    ULONG64 ApicCounts;  // APIC timer counts between its two reads
    ULONG64 ApicTsc;     // TSC cycles between the midpoints of the two brackets
    ULONG64 ApicBracket; // the two brackets' widths together, in TSC cycles
} HALP_WINDOW;

/* Reads the APIC timer's current count between two TSC reads: *Mid2 is their sum. */
static uint32_t
HalpApicBracket(ULONG64 *Mid2, ULONG64 *Width)
{
    ULONG64 Before = x86_rdtsc();
    uint32_t Count = HalpApicRead(LAPIC_REG_TIMER_CURRENT);
    ULONG64 After = x86_rdtsc();

    *Mid2 = Before + After;
    *Width = After - Before;
    return Count;
}

/*
 * Measures one PIT window with the TSC and the APIC timer (which must be
 * counting down from a large initial count). Interrupts are off; the host can
 * still stop the vCPU anywhere (see HALP_CALIBRATION_RUNS).
 */
static VOID
HalpMeasureWindow(HALP_WINDOW *Window)
{
    ULONG64 Flags = x86_save_disable();
    ULONG64 TscStart;
    ULONG64 TscEnd;
    ULONG64 MidStart2;
    ULONG64 MidEnd2;
    ULONG64 WidthStart;
    ULONG64 WidthEnd;
    uint32_t ApicStart;
    uint32_t ApicEnd;

    HalpPitArmWindow(HALP_CALIBRATION_COUNT);
    TscStart = x86_rdtsc();
    HalpPitStartWindow(HALP_CALIBRATION_COUNT);
    ApicStart = HalpApicBracket(&MidStart2, &WidthStart);
    if (!HalpPitWaitWindow())
    {
        HalpPitDead();
    }
    TscEnd = x86_rdtsc();
    ApicEnd = HalpApicBracket(&MidEnd2, &WidthEnd);
    x86_restore_flags(Flags);

    Window->TscCycles = TscEnd - TscStart;
    Window->ApicCounts = (ULONG64)(ApicStart - ApicEnd); // counts down
    Window->ApicTsc = (MidEnd2 - MidStart2) / 2;
    Window->ApicBracket = WidthStart + WidthEnd;
}

/*
 * Calibrates the APIC timer (divide by 16) and the TSC against the PIT and
 * prints both frequencies. Boot processor, once, before other processors
 * start or anything stalls, with its local APIC enabled.
 */
VOID
HalInitializeClock(VOID)
{
    HALP_WINDOW BestTsc = {~0ULL, 0, 0, 0};
    HALP_WINDOW BestApic = {0, 0, 0, ~0ULL};

    /* A one-shot, masked APIC timer counting down from the top: ~68 s at 62.5 MHz. */
    HalpApicWrite(LAPIC_REG_LVT_TIMER, LAPIC_LVT_MASKED);
    HalpApicWrite(LAPIC_REG_TIMER_DIVIDE, LAPIC_TIMER_DIVIDE_16);
    HalpApicWrite(LAPIC_REG_TIMER_INITIAL, 0xffffffffU);

    for (ULONG Run = 0; Run < HALP_CALIBRATION_RUNS; Run++)
    {
        HALP_WINDOW Window;

        HalpMeasureWindow(&Window);
        if (Window.TscCycles < BestTsc.TscCycles)
        {
            BestTsc = Window;
        }
        if (Window.ApicBracket < BestApic.ApicBracket)
        {
            BestApic = Window;
        }
    }
    HalpApicWrite(LAPIC_REG_TIMER_INITIAL, 0); // stops the one-shot count

    HalpTscFrequency = BestTsc.TscCycles * PIT_FREQUENCY / HALP_CALIBRATION_COUNT;
    HalpApicTimerFrequency =
        BestApic.ApicTsc == 0 ? 0
                              : HalpScale(BestApic.ApicCounts, HalpTscFrequency, BestApic.ApicTsc);
    if (HalpTscFrequency == 0 || HalpApicTimerFrequency == 0)
    {
        DbgPrint("Spindle: clock calibration failed (TSC %llu Hz, APIC timer %llu Hz)\n",
                 HalpTscFrequency, HalpApicTimerFrequency);
        KeBugCheckEx(HAL_INITIALIZATION_FAILED, 0x8254, 1, BestTsc.TscCycles, BestApic.ApicCounts);
    }
    DbgPrint(
        "Spindle: clock: APIC timer %llu Hz (divide 16), TSC %llu Hz (PIT, best of %u x 10 ms)\n",
        HalpApicTimerFrequency, HalpTscFrequency, HALP_CALIBRATION_RUNS);
}

/*
 * Starts the calling processor's local APIC timer in periodic mode, raising
 * Vector every PeriodMicroseconds. Any processor, after HalInitializeClock.
 */
VOID
HalStartClockInterrupt(ULONG Vector, ULONG PeriodMicroseconds)
{
    HalpApicWrite(LAPIC_REG_TIMER_DIVIDE, LAPIC_TIMER_DIVIDE_16);
    HalpApicWrite(LAPIC_REG_LVT_TIMER, LAPIC_LVT_PERIODIC | (Vector & 0xff));
    HalSetClockPeriod(PeriodMicroseconds);
}

/*
 * Changes the calling processor's clock interrupt period (started with
 * HalStartClockInterrupt). The count restarts: the next interrupt comes
 * PeriodMicroseconds from now. Interrupts off, or IRQL >= CLOCK_LEVEL.
 */
VOID
HalSetClockPeriod(ULONG PeriodMicroseconds)
{
    ULONG64 Count = HalpScale(PeriodMicroseconds, HalpApicTimerFrequency, HALP_MICROSECONDS);

    ASSERT(HalpApicTimerFrequency != 0);
    ASSERT(Count != 0 && Count <= 0xffffffffULL);
    HalpApicWrite(LAPIC_REG_TIMER_INITIAL, (uint32_t)Count); // this write (re)starts the count
}

/*
 * The calling processor's clock interrupt period in microseconds, read back
 * from its timer's initial count (rounded down). Any IRQL; pin the processor.
 */
ULONG
HalGetClockPeriod(VOID)
{
    return (ULONG)HalpScale(HalpApicRead(LAPIC_REG_TIMER_INITIAL), HALP_MICROSECONDS,
                            HalpApicTimerFrequency);
}

/*
 * Returns the TSC, which QEMU and current CPUs keep in step across processors,
 * and its rate in Hz in *Frequency when given. Any IRQL, after HalInitializeClock.
 */
ULONG64
HalQueryPerformanceCounter(ULONG64 *Frequency)
{
    if (Frequency != NULL)
    {
        *Frequency = HalpTscFrequency;
    }
    return x86_rdtsc();
}

/*
 * Busy-waits at least Microseconds on the TSC. Any IRQL. Before calibration
 * (boot processor only) it counts PIT windows instead.
 */
VOID
HalStallExecutionProcessor(ULONG Microseconds)
{
    ULONG64 Start = x86_rdtsc();
    ULONG64 Cycles;

    if (HalpTscFrequency == 0)
    {
        ULONG64 Remaining = HalpScale(Microseconds, PIT_FREQUENCY, HALP_MICROSECONDS) + 1;
        while (Remaining != 0)
        {
            ULONG Chunk = (ULONG)(Remaining < PIT_MAXIMUM_COUNT ? Remaining : PIT_MAXIMUM_COUNT);
            ULONG64 Flags = x86_save_disable();
            HalpPitStartWindow(Chunk);
            if (!HalpPitWaitWindow())
            {
                HalpPitDead();
            }
            x86_restore_flags(Flags);
            Remaining -= Chunk;
        }
        return;
    }

    Cycles = HalpScale(Microseconds, HalpTscFrequency, HALP_MICROSECONDS);
    while (x86_rdtsc() - Start < Cycles)
    {
        x86_pause();
    }
}
