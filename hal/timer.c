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
 * Calibration: HALP_CALIBRATION_RUNS runs of at least HALP_CALIBRATION_COUNT
 * PIT input clocks (10 ms) each. A run samples the PIT's count and the APIC
 * timer's at its start and at its end, each read between two TSC reads, and
 * takes each clock's rate against the TSC over the span between the samples.
 * A disturbance (the host stopping the vCPU under TCG, an SMI) can come
 * between any two instructions. Between the samples it only lengthens the
 * span, which all three clocks count through, so it costs nothing; inside a
 * bracket it widens the bracket, so each rate is taken from the run whose
 * brackets for that clock are the narrowest. Timing a 10 ms window by its end
 * instead read the TSC up to 55 % fast on a loaded host (every window was
 * stretched), and an APIC count read next to one TSC read, not between two,
 * once came from a run where the vCPU stopped for 7 ms between the reads:
 * the clock then ticked 3.9 times too fast.
 */
#define HALP_CALIBRATION_RUNS  5u
#define HALP_CALIBRATION_COUNT 11932u     // 1193182 Hz x 10 ms, rounded
#define HALP_CALIBRATION_TRIES 50u        // runs before a disturbed PIT is given up on
#define HALP_PIT_POLL_LIMIT    100000000u // polls of OUT2 (one inb each) before the PIT is dead
#define HALP_PIT_STUCK_READS   100000u    // reads of one unchanged count before the PIT is dead
#define HALP_PIT_FRESH         0x2000u    // a run's first count is this close to the top, or unused
#define PIT_CH2_LATCH          0x80       // latch channel 2's count for reading

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
 * Starts channel 2 counting down Count input clocks in mode 0 (interrupt on
 * terminal count): its output goes low when the mode is written and high when
 * the count runs out. Counting starts with the write of the high byte.
 */
static VOID
HalpPitStart(ULONG Count)
{
    UCHAR PortB = x86_inb(PORTB);

    x86_outb(PORTB, (UCHAR)((PortB & ~PORTB_SPEAKER) | PORTB_GATE2));
    x86_outb(PIT_PORT_COMMAND, PIT_CH2_LOHI_MODE0);
    x86_outb(PIT_PORT_CHANNEL2, (UCHAR)(Count & 0xff));
    x86_outb(PIT_PORT_CHANNEL2, (UCHAR)(Count >> 8));
}

/* TRUE once channel 2's count has run out (its output is high). */
static BOOLEAN
HalpPitDone(VOID)
{
    return (x86_inb(PORTB) & PORTB_OUT2) != 0;
}

/* Channel 2's current count, latched so that its two bytes belong together. */
static ULONG
HalpPitRead(VOID)
{
    ULONG Low;
    ULONG High;

    x86_outb(PIT_PORT_COMMAND, PIT_CH2_LATCH);
    Low = x86_inb(PIT_PORT_CHANNEL2);
    High = x86_inb(PIT_PORT_CHANNEL2);
    return Low | (High << 8);
}

static __attribute__((noreturn)) VOID
HalpPitDead(VOID)
{
    DbgPrint("Spindle: the PIT (channel 2 via port 0x61) never counted down; no clock\n");
    KeBugCheckEx(HAL_INITIALIZATION_FAILED, 0x8254, 0, 0, 0);
}

/* One clock read between two TSC reads. */
typedef struct _HALP_SAMPLE
{
    ULONG64 Count;    // the clock's reading
    ULONG64 TscTwice; // the two TSC reads added: twice the bracket's midpoint
    ULONG64 Width;    // the second TSC read minus the first
} HALP_SAMPLE;

static HALP_SAMPLE
HalpSample(BOOLEAN Pit)
{
    HALP_SAMPLE Sample;
    ULONG64 Before = x86_rdtsc();

    Sample.Count = Pit ? HalpPitRead() : HalpApicRead(LAPIC_REG_TIMER_CURRENT);
    Sample.TscTwice = x86_rdtsc();
    Sample.Width = Sample.TscTwice - Before;
    Sample.TscTwice += Before;
    return Sample;
}

/* One clock over one run: its counts, the TSC cycles they took, the brackets' width. */
typedef struct _HALP_SPAN
{
    ULONG64 Counts;
    ULONG64 Tsc;
    ULONG64 Width; // both brackets together, TSC cycles; ~0 if the run is unusable
} HALP_SPAN;

/* The span from Start to End of a clock that counts down. */
static HALP_SPAN
HalpSpan(const HALP_SAMPLE *Start, const HALP_SAMPLE *End, ULONG64 Mask)
{
    HALP_SPAN Span;

    Span.Counts = (Start->Count - End->Count) & Mask;
    Span.Tsc = (End->TscTwice - Start->TscTwice) / 2;
    Span.Width = Start->Width + End->Width;
    return Span;
}

/*
 * One run (the APIC timer counting down from a large initial count):
 * samples both clocks, waits until the PIT has counted at least
 * HALP_CALIBRATION_COUNT, samples them again. Interrupts off. The PIT span is
 * unusable (Width ~0) if its first count is not near the top (the counter
 * loads the count on its next input clock after the write, so a read before
 * that would see the previous run's count) or if the count may have run out
 * and wrapped. A count that stops changing is a dead PIT: it keeps counting
 * through anything that delays this processor.
 */
static VOID
HalpMeasureRun(HALP_SPAN *Pit, HALP_SPAN *Apic)
{
    ULONG64 Flags = x86_save_disable();
    HALP_SAMPLE PitStart;
    HALP_SAMPLE PitEnd;
    HALP_SAMPLE ApicStart;
    HALP_SAMPLE ApicEnd;
    ULONG Last;
    ULONG Stuck = 0;

    HalpPitStart(PIT_MAXIMUM_COUNT);
    PitStart = HalpSample(TRUE);
    ApicStart = HalpSample(FALSE);
    Last = (ULONG)PitStart.Count;
    for (;;)
    {
        ULONG Now = HalpPitRead();

        if (((PitStart.Count - Now) & PIT_MAXIMUM_COUNT) >= HALP_CALIBRATION_COUNT || HalpPitDone())
        {
            break;
        }
        Stuck = Now == Last ? Stuck + 1 : 0;
        Last = Now;
        if (Stuck == HALP_PIT_STUCK_READS)
        {
            HalpPitDead();
        }
        x86_pause();
    }
    PitEnd = HalpSample(TRUE);
    ApicEnd = HalpSample(FALSE);
    *Pit = HalpSpan(&PitStart, &PitEnd, PIT_MAXIMUM_COUNT);
    if (PitStart.Count < PIT_MAXIMUM_COUNT - HALP_PIT_FRESH || HalpPitDone() ||
        Pit->Counts < HALP_CALIBRATION_COUNT)
    {
        Pit->Width = ~0ULL; // not a fresh count, or it ran out and may have wrapped
    }
    *Apic = HalpSpan(&ApicStart, &ApicEnd, 0xffffffffULL);
    x86_restore_flags(Flags);
}

/*
 * Calibrates the TSC against the PIT and the APIC timer (divide by 16)
 * against the TSC, and prints both frequencies. Boot processor, once, before
 * other processors start or anything stalls, with its local APIC enabled.
 */
VOID
HalInitializeClock(VOID)
{
    HALP_SPAN BestPit = {0, 0, ~0ULL};
    HALP_SPAN BestApic = {0, 0, ~0ULL};
    ULONG Usable = 0;

    /* A one-shot, masked APIC timer counting down from the top: ~68 s at 62.5 MHz. */
    HalpApicWrite(LAPIC_REG_LVT_TIMER, LAPIC_LVT_MASKED);
    HalpApicWrite(LAPIC_REG_TIMER_DIVIDE, LAPIC_TIMER_DIVIDE_16);
    HalpApicWrite(LAPIC_REG_TIMER_INITIAL, 0xffffffffU);

    for (ULONG Run = 0; Run < HALP_CALIBRATION_TRIES && Usable < HALP_CALIBRATION_RUNS; Run++)
    {
        HALP_SPAN Pit;
        HALP_SPAN Apic;

        HalpMeasureRun(&Pit, &Apic);
        if (Pit.Width == ~0ULL)
        {
            continue;
        }
        Usable++;
        if (Pit.Width < BestPit.Width)
        {
            BestPit = Pit;
        }
        if (Apic.Width < BestApic.Width)
        {
            BestApic = Apic;
        }
    }
    HalpApicWrite(LAPIC_REG_TIMER_INITIAL, 0); // stops the one-shot count

    HalpTscFrequency =
        BestPit.Counts == 0 ? 0 : HalpScale(BestPit.Tsc, PIT_FREQUENCY, BestPit.Counts);
    HalpApicTimerFrequency =
        BestApic.Tsc == 0 ? 0 : HalpScale(BestApic.Counts, HalpTscFrequency, BestApic.Tsc);
    if (HalpTscFrequency == 0 || HalpApicTimerFrequency == 0)
    {
        DbgPrint("Spindle: clock calibration failed (TSC %llu Hz, APIC timer %llu Hz, %u usable "
                 "runs)\n",
                 HalpTscFrequency, HalpApicTimerFrequency, Usable);
        KeBugCheckEx(HAL_INITIALIZATION_FAILED, 0x8254, 1, BestPit.Counts, BestApic.Counts);
    }
    DbgPrint("Spindle: clock: APIC timer %llu Hz (divide 16), TSC %llu Hz (PIT, best of %u x 10 "
             "ms)\n",
             HalpApicTimerFrequency, HalpTscFrequency, Usable);
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
            ULONG Poll = 0;

            HalpPitStart(Chunk);
            while (!HalpPitDone())
            {
                if (++Poll == HALP_PIT_POLL_LIMIT)
                {
                    HalpPitDead();
                }
                x86_pause();
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
