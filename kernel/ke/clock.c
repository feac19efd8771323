/* SPDX-License-Identifier: MIT */
/*
 * The clock: every processor takes a local APIC timer interrupt every 10 ms at
 * CLOCK_LEVEL and counts it in its KPRCB. Processor 0 alone keeps the system
 * tick count and expires kernel timers. Also the TSC-based performance counter
 * and the stall, which the HAL provides.
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
KiInitializeClock(VOID)
{
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
