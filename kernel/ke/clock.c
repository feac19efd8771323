/* SPDX-License-Identifier: MIT */
/*
 * The clock: every processor takes a local APIC timer interrupt every 10 ms at
 * CLOCK_LEVEL and counts it in its KPRCB. Processor 0 alone keeps the system
 * tick count and expires kernel timers. Also the TSC-based performance counter
 * and the stall, which the HAL provides.
 *
 * The idle tick. A secondary processor with nothing to run (its idle loop is
 * about to halt) slows its tick to KiIdleClockPeriodUs, 1 s by default
 * (idle_tick_ms=), and takes the 10 ms tick back when it gets work or when a
 * wait on it needs the tick (ke/wait.c, KiWaitHalt). Nothing on an idle
 * processor needs 100 ticks a second: timers are processor 0's, and a DPC or
 * idle work arrives with an IPI. But every tick wakes a halted virtual
 * processor, and where virtual processors outnumber real ones each wake-up
 * takes host time from the ones at work. Measured under TCG at -smp 8, two
 * processors contending on an ordinary spin lock while six idle: with every
 * processor ticking, 5 of 8 boots split the acquisitions 1.45 to 3.5 to 1;
 * with idle processors at 1 s, 3 of 30 did (1.46 to 2.67 to 1), the others
 * 1.0 to 1.35 (README.md, "Waiting"). The idle tick still runs the
 * watchdog's clock callback, so a processor stuck with interrupts off is seen
 * within one idle period.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

/*
 * Ticks since the clock started. Written only by processor 0's clock
 * interrupt; an aligned 64-bit load or store is atomic on x86-64, so readers
 * never see a torn value. Timer code orders its reads against the increment
 * with the timer lock (kernel/ke/timer.c), so relaxed accesses suffice.
 */
volatile ULONG64 KiTickCount;

/*
 * An idle secondary processor's tick period: idle_tick_ms= (10 to 4000 ms;
 * 10, the normal tick, turns the idle tick off). Written once at start-up.
 */
ULONG KiIdleClockPeriodUs = KI_IDLE_CLOCK_MS * 1000;

/* The registered per-tick callback, or NULL (KiRegisterClockCallback). */
static KI_CLOCK_CALLBACK *volatile KiClockCallback;

/*
 * Registers Callback to run on every clock interrupt of every processor, at
 * CLOCK_LEVEL, with the interrupted context (NULL unregisters). One callback
 * per system; a second registration replaces the first. Any IRQL. The caller
 * publishes what Callback reads before registering it; Callback must be safe
 * to run on any processor at any time from the registration on.
 */
VOID
KiRegisterClockCallback(KI_CLOCK_CALLBACK *Callback)
{
    /* Release: pairs with the acquire in KiClockInterrupt. */
    __atomic_store_n(&KiClockCallback, Callback, __ATOMIC_RELEASE);
}

/*
 * The clock interrupt, at CLOCK_LEVEL on every processor. Frame is the
 * interrupted context (for the watchdog's report).
 */
static VOID
KiClockInterrupt(struct x86_trap_frame *Frame, PVOID Context)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    KI_CLOCK_CALLBACK *Callback;

    /* Only this processor writes its count; others may read it at any time. */
    __atomic_store_n(&Prcb->ClockTicks, Prcb->ClockTicks + 1, __ATOMIC_RELAXED);

    if (Prcb->Number == 0)
    {
        ULONG64 Tick = KiTickCount + 1;
        __atomic_store_n(&KiTickCount, Tick, __ATOMIC_RELAXED);
        KiExpireTimers(Tick);
    }

    /* Acquire: pairs with the release in KiRegisterClockCallback. */
    Callback = __atomic_load_n(&KiClockCallback, __ATOMIC_ACQUIRE);
    if (Callback != NULL)
    {
        Callback(Frame);
    }
}

/*
 * Calibrates the time sources, connects the clock vector and starts the tick
 * on the boot processor. Boot processor, once, interrupts still off, before
 * any other processor starts (they call KiInitializeClockProcessor).
 */
INIT_CODE VOID
KiInitializeClock(PCSTR CommandLine)
{
    KiIdleClockPeriodUs = KiCommandLineValue(CommandLine, "idle_tick_ms", KI_IDLE_CLOCK_MS,
                                             KI_CLOCK_PERIOD_US / 1000, 4000) *
                          1000;
    HalInitializeClock();
    KiConnectVector(KI_VECTOR_CLOCK, KiClockInterrupt, NULL);
    HalStartClockInterrupt(KI_VECTOR_CLOCK, KI_CLOCK_PERIOD_US);
}

/* Starts the periodic tick on the calling processor (an AP, during its start-up). */
VOID
KiInitializeClockProcessor(VOID)
{
    HalStartClockInterrupt(KI_VECTOR_CLOCK, KI_CLOCK_PERIOD_US);
}

/*
 * Slows this processor's tick to the idle period (Idle) or restores the 10 ms
 * tick (!Idle); a no-op when it already runs at that period, on processor 0
 * and when idle_tick_ms= is 10. The change restarts the count, so the next
 * tick is a full period away. Interrupts off: an interrupt handler on this
 * processor (a DPC that waits, KiWaitHalt) may switch it too.
 */
VOID
KiSetClockIdle(BOOLEAN Idle)
{
    PKPRCB Prcb = KeGetCurrentPrcb();

    if (Prcb->ClockIdle == Idle || Prcb->Number == 0 || KiIdleClockPeriodUs == KI_CLOCK_PERIOD_US)
    {
        return;
    }
    Prcb->ClockIdle = Idle;
    HalSetClockPeriod(Idle ? KiIdleClockPeriodUs : KI_CLOCK_PERIOD_US);
}

/*
 * Stores the number of clock ticks since the clock started (processor 0's
 * count; one tick = KeQueryTimeIncrement() x 100 ns). Any IRQL.
 */
VOID
KeQueryTickCount(PLARGE_INTEGER CurrentCount)
{
    CurrentCount->QuadPart = (LONGLONG)__atomic_load_n(&KiTickCount, __ATOMIC_RELAXED);
}

/* Returns the clock tick period in 100 ns units: 100000 (10 ms). Any IRQL. */
ULONG
KeQueryTimeIncrement(VOID)
{
    return KI_CLOCK_INCREMENT;
}

/*
 * Returns the TSC, monotonic and consistent across processors, and stores its
 * rate in Hz in *PerformanceFrequency when given. Any IRQL.
 */
LARGE_INTEGER
KeQueryPerformanceCounter(PLARGE_INTEGER PerformanceFrequency)
{
    LARGE_INTEGER Counter;
    ULONG64 Frequency;

    Counter.QuadPart = (LONGLONG)HalQueryPerformanceCounter(&Frequency);
    if (PerformanceFrequency != NULL)
    {
        PerformanceFrequency->QuadPart = (LONGLONG)Frequency;
    }
    return Counter;
}

/*
 * Busy-waits at least MicroSeconds on this processor (keep it short: the DDK
 * advises at most 50 us). Any IRQL; IRQL unchanged.
 */
VOID
KeStallExecutionProcessor(ULONG MicroSeconds)
{
    HalStallExecutionProcessor(MicroSeconds);
}
