/* SPDX-License-Identifier: MIT */
/*
 * KeClock: the clock tick (KeQueryTickCount, KeQueryTimeIncrement, each
 * processor's tick at CLOCK_LEVEL), KeQueryPerformanceCounter and
 * KeStallExecutionProcessor. Under TCG wall-clock speed is not reliable, so
 * nothing here asserts how fast something ran: only orderings, exact values,
 * lower bounds the stall guarantees and upper bounds no delay can break.
 */
#include <wdm.h>

#include <ktest.h>

#include "hal/hal.h"
#include "kernel/ke/ke.h"

/*
 * Waits are bounded on the performance counter, not by counting steps: under
 * TCG each pause can cost a trip through QEMU's global lock, so a step may
 * take far longer than its stall.
 */
#define KC_WAIT_LIMIT_US 10000000 // 10 s: a missing tick fails, never hangs

/* Performance-counter counts in Microseconds (Frequency in Hz). */
static ULONG64
KcCounts(ULONG64 Microseconds, ULONG64 Frequency)
{
    return (Microseconds / 1000000) * Frequency + (Microseconds % 1000000) * Frequency / 1000000;
}

static ULONG64
KcPerformanceFrequency(VOID)
{
    LARGE_INTEGER Frequency;
    KeQueryPerformanceCounter(&Frequency);
    return (ULONG64)Frequency.QuadPart;
}

static ULONG64
KcPerformanceCounter(VOID)
{
    return (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart;
}

static ULONG64
KcTickCount(VOID)
{
    LARGE_INTEGER Count;
    KeQueryTickCount(&Count);
    return (ULONG64)Count.QuadPart;
}

KTEST(KeClock, time_increment_is_ten_milliseconds)
{
    KT_EXPECT_EQ(KeQueryTimeIncrement(), 100000);
    KT_EXPECT_EQ(KeQueryTimeIncrement(), KI_CLOCK_INCREMENT);
}

KTEST(KeClock, tick_count_advances_below_clock_level)
{
    for (KIRQL Level = PASSIVE_LEVEL; Level < CLOCK_LEVEL; Level++)
    {
        KIRQL OldIrql;
        ULONG64 Ticks, Global;

        KeRaiseIrql(Level, &OldIrql);
        Ticks = KeGetCurrentPrcb()->ClockTicks;
        Global = KcTickCount();
        if (!KtWaitForWordChange(&KeGetCurrentPrcb()->ClockTicks, Ticks, KC_WAIT_LIMIT_US / 1000))
        {
            KtLog("no clock tick at IRQL %u", Level);
            KT_EXPECT(KeGetCurrentPrcb()->ClockTicks != Ticks);
        }
        if (KeGetCurrentPrcb()->Number == 0)
        {
            KT_EXPECT_GT(KcTickCount(), Global); // processor 0 keeps the system count
        }
        KT_EXPECT_EQ(KeGetCurrentIrql(), Level);
        KeLowerIrql(OldIrql);
    }
}

KTEST(KeClock, tick_count_is_processor_zero_ticks)
{
    ULONG64 Flags;
    ULONG64 Ticks, Global;

    KT_ASSERT_EQ(KeGetCurrentProcessorNumber(), 0);
    /* Both are advanced by the same interrupt, which cannot split them here. */
    Flags = x86_save_disable();
    Ticks = KeGetCurrentPrcb()->ClockTicks;
    Global = KcTickCount();
    x86_restore_flags(Flags);
    KT_EXPECT_EQ(Global, Ticks);
    KT_EXPECT_GT(Global, 0);
}

KTEST(KeClock, clock_level_and_above_mask_this_processors_tick)
{
    static const KIRQL Levels[] = {CLOCK_LEVEL, IPI_LEVEL, HIGH_LEVEL};

    for (ULONG i = 0; i < sizeof(Levels) / sizeof(Levels[0]); i++)
    {
        PKPRCB Prcb = KeGetCurrentPrcb();
        ULONG64 Ticks, Global;
        KIRQL OldIrql;

        KeRaiseIrql(Levels[i], &OldIrql);
        Ticks = Prcb->ClockTicks;
        Global = KcTickCount();
        KeStallExecutionProcessor(3 * KI_CLOCK_PERIOD_US); // three tick periods
        KT_EXPECT_EQ(Prcb->ClockTicks, Ticks);
        if (Prcb->Number == 0)
        {
            KT_EXPECT_EQ(KcTickCount(), Global);
        }
        KeLowerIrql(OldIrql);

        /* The tick that came due meanwhile is delivered now, or the next one soon. */
        KT_EXPECT(KtWaitForWordChange(&Prcb->ClockTicks, Ticks, KC_WAIT_LIMIT_US / 1000));
    }
}

static VOID
KcWaitForOwnTick(ULONG Index, PVOID Context)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG64 Ticks = Prcb->ClockTicks;

    if (!KtWaitForWordChange(&Prcb->ClockTicks, Ticks, KC_WAIT_LIMIT_US / 1000))
    {
        KtLog("processor %u took no clock interrupt", Prcb->Number);
        KT_EXPECT(Prcb->ClockTicks != Ticks);
    }
}

KTEST(KeClock, every_processor_takes_clock_interrupts)
{
    KtRunOnProcessors(0, KcWaitForOwnTick, NULL);
}

KTEST(KeClock, performance_counter_is_monotonic)
{
    LARGE_INTEGER Frequency, Again;
    ULONG64 Previous = KcPerformanceCounter();

    KeQueryPerformanceCounter(&Frequency);
    KT_EXPECT_GT(Frequency.QuadPart, 0);
    for (ULONG i = 0; i < 10000; i++)
    {
        ULONG64 Now = KcPerformanceCounter();
        KT_ASSERT(Now >= Previous);
        Previous = Now;
    }
    KeQueryPerformanceCounter(&Again);
    KT_EXPECT_EQ(Again.QuadPart, Frequency.QuadPart);
}

typedef struct _KC_PING_PONG
{
    volatile ULONG64 Counter; // the last value read, published by the reader
    volatile LONG Turn;       // whose turn: index 0 or 1
    volatile LONG Failed;
} KC_PING_PONG;

#define KC_PING_PONG_ROUNDS 200

/*
 * Two processors take turns reading the counter, each handing its value to
 * the other, which must read no less: the counter is monotonic system-wide.
 */
static VOID
KcPingPong(ULONG Index, PVOID Context)
{
    KC_PING_PONG *Game = Context;
    ULONG64 Frequency = KcPerformanceFrequency();

    for (ULONG Round = 0; Round < KC_PING_PONG_ROUNDS; Round++)
    {
        ULONG64 Deadline = KcPerformanceCounter() + KcCounts(KC_WAIT_LIMIT_US, Frequency);
        ULONG64 Now, Seen;

        /* Acquire: pairs with the release that handed us the turn and its counter. */
        while (__atomic_load_n(&Game->Turn, __ATOMIC_ACQUIRE) != (LONG)Index)
        {
            if (__atomic_load_n(&Game->Failed, __ATOMIC_RELAXED) != 0)
            {
                return; // the other side gave up and reported it
            }
            if (KcPerformanceCounter() > Deadline)
            {
                __atomic_store_n(&Game->Failed, 1, __ATOMIC_RELAXED);
                KtLog("processor %u: no turn from the other processor in round %u",
                      KeGetCurrentProcessorNumber(), Round);
                KtFail("the other processor took its turn", __FILE__, __LINE__);
                return;
            }
            x86_pause();
        }
        Seen = Game->Counter;
        Now = KcPerformanceCounter();
        KT_EXPECT_GE(Now, Seen);
        Game->Counter = Now;
        __atomic_store_n(&Game->Turn, (LONG)(1 - Index), __ATOMIC_RELEASE);
    }
}

KTEST_EX(KeClock, performance_counter_is_monotonic_across_processors, KTEST_SMP_ONLY, 0)
{
    KC_PING_PONG Game = {0, 0, 0};
    KtRunOnProcessors(2, KcPingPong, &Game);
}

/* The performance counter advanced at least Microseconds over the stall. */
static VOID
KcCheckStall(ULONG Microseconds)
{
    ULONG64 Frequency = KcPerformanceFrequency();
    ULONG64 Start = KcPerformanceCounter();
    ULONG64 Elapsed;

    KeStallExecutionProcessor(Microseconds);
    Elapsed = KcPerformanceCounter() - Start;
    if (Elapsed < KcCounts(Microseconds, Frequency))
    {
        KtLog("KeStallExecutionProcessor(%u) returned after %llu of %llu counts", Microseconds,
              Elapsed, KcCounts(Microseconds, Frequency));
        KT_EXPECT_GE(Elapsed, KcCounts(Microseconds, Frequency));
    }
}

KTEST(KeClock, stall_waits_at_least_the_time_given)
{
    static const ULONG Lengths[] = {0, 1, 7, 50, 1000, 15000};

    for (ULONG i = 0; i < sizeof(Lengths) / sizeof(Lengths[0]); i++)
    {
        KcCheckStall(Lengths[i]);
    }
}

KTEST(KeClock, stall_of_twenty_ms_spans_a_tick_period)
{
    ULONG64 Frequency = KcPerformanceFrequency();
    ULONG64 Period = KcCounts(KeQueryTimeIncrement() / 10, Frequency); // 100 ns -> us
    ULONG64 Start = KcPerformanceCounter();
    ULONG64 Elapsed;

    KeStallExecutionProcessor(20000);
    Elapsed = KcPerformanceCounter() - Start;
    KT_EXPECT_GE(Elapsed, KcCounts(20000, Frequency));
    KT_EXPECT_GE(Elapsed, 2 * Period); // so at least one tick came due on every processor
}

KTEST(KeClock, stall_works_with_interrupts_masked)
{
    KIRQL OldIrql;

    KeRaiseIrql(HIGH_LEVEL, &OldIrql);
    KcCheckStall(2000);
    KT_EXPECT_EQ(KeGetCurrentIrql(), HIGH_LEVEL);
    KeLowerIrql(OldIrql);
}

/*
 * Over an interval the performance counter measures, this processor takes at
 * most one tick per period, plus the one that may have been pending at the
 * start and the one at the grid point the interval may open on (calibration
 * errors cancel: both time sources were measured over the same window). A
 * late or descheduled clock only takes fewer.
 */
KTEST(KeClock, ticks_come_no_faster_than_the_period)
{
    ULONG64 Frequency = KcPerformanceFrequency();
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG64 Start, Elapsed, Ticks, Periods;

    Ticks = Prcb->ClockTicks;
    Start = KcPerformanceCounter();
    KeStallExecutionProcessor(200000);
    Ticks = Prcb->ClockTicks - Ticks;
    Elapsed = KcPerformanceCounter() - Start;

    Periods = Elapsed / KcCounts(KI_CLOCK_PERIOD_US, Frequency);
    KtLog("%llu ticks over %llu tick periods", Ticks, Periods);
    KT_EXPECT_LE(Ticks, Periods + Periods / 20 + 2); // 5% for calibration rounding
}

/* ---------------------------------------------------------------- the idle tick */

/* Waits until processor Number's idle loop has slowed its tick; FALSE after KT_WAIT_MS. */
static BOOLEAN
KcWaitForIdleTick(ULONG Number)
{
    ULONG64 Limit = KcCounts(KT_WAIT_MS * 1000ull, KcPerformanceFrequency());
    ULONG64 Start = KcPerformanceCounter();

    while (!KiGetPrcb(Number)->ClockIdle)
    {
        if (KcPerformanceCounter() - Start > Limit)
        {
            return FALSE;
        }
        x86_pause();
    }
    return TRUE;
}

/*
 * Between tests every processor but 0 sits in its idle loop: over an interval
 * the performance counter measures, each takes at most one tick per idle
 * period, plus the two ticks_come_no_faster_than_the_period allows for. At
 * the 10 ms tick it would take about 20.
 */
KTEST_EX(KeClock, idle_processors_tick_at_the_idle_period, KTEST_SMP_ONLY, 0)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    ULONG64 Frequency = KcPerformanceFrequency();
    ULONG64 Ticks[MAXIMUM_PROCESSORS];
    ULONG64 Start, Elapsed, Periods;

    if (KiIdleClockPeriodUs < 10 * KI_CLOCK_PERIOD_US)
    {
        KT_SKIP("idle_tick_ms= is below 100: too close to the 10 ms tick to tell apart");
    }
    KT_EXPECT(!KeGetCurrentPrcb()->ClockIdle); // processor 0 keeps the system tick
    for (ULONG Number = 1; Number < Count; Number++)
    {
        KT_ASSERT(KcWaitForIdleTick(Number));
    }
    for (ULONG Number = 1; Number < Count; Number++)
    {
        Ticks[Number] = KiGetPrcb(Number)->ClockTicks;
    }
    Start = KcPerformanceCounter();
    KeStallExecutionProcessor(20 * KI_CLOCK_PERIOD_US);
    Elapsed = KcPerformanceCounter() - Start;
    Periods = Elapsed / KcCounts(KiIdleClockPeriodUs, Frequency);
    for (ULONG Number = 1; Number < Count; Number++)
    {
        ULONG64 Taken = KiGetPrcb(Number)->ClockTicks - Ticks[Number];

        KtLog("processor %u: %llu ticks over %llu idle periods", Number, Taken, Periods);
        KT_EXPECT_LE(Taken, Periods + 2);
        KT_EXPECT(KiGetPrcb(Number)->ClockIdle);
    }
}

/* Work through KtRunOnProcessors takes each processor's 10 ms tick back. */
static VOID
KcCheckWorkingPeriod(ULONG Index, PVOID Context)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG Period = HalGetClockPeriod();

    if (Prcb->ClockIdle || Period < KI_CLOCK_PERIOD_US - KI_CLOCK_PERIOD_US / 100 ||
        Period > KI_CLOCK_PERIOD_US)
    {
        KtLog("processor %u: clock period %u us, idle %u", Prcb->Number, Period,
              (ULONG)Prcb->ClockIdle);
        KtFail("a working processor ticks every 10 ms", __FILE__, __LINE__);
    }
}

KTEST_EX(KeClock, working_processors_take_the_10ms_tick, KTEST_SMP_ONLY, 0)
{
    KtRunOnProcessors(0, KcCheckWorkingPeriod, NULL);
    if (KiIdleClockPeriodUs > KI_CLOCK_PERIOD_US)
    {
        /* And each goes back to the idle tick once its routine has returned. */
        for (ULONG Number = 1; Number < KeQueryActiveProcessorCount(NULL); Number++)
        {
            KT_EXPECT(KcWaitForIdleTick(Number));
        }
    }
}

/*
 * A DPC on an idle processor that waits for an ordinary spin lock halts; that
 * wait needs the 10 ms tick (ke/wait.c, "the one window"), so the processor
 * takes it back while the DPC waits, and returns to the idle tick afterwards.
 */
typedef struct _KC_IDLE_WAITER
{
    KSPIN_LOCK Lock;
    volatile ULONG64 Halts; // the waiter's WaitHalts before it waited
    volatile ULONG Period;  // its clock period once it owned the lock
    volatile BOOLEAN Idle;  // its ClockIdle once it owned the lock
    volatile LONG Done;
} KC_IDLE_WAITER;

static VOID
KcIdleWaiterDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    KC_IDLE_WAITER *Waiter = Context;

    KeAcquireSpinLockAtDpcLevel(&Waiter->Lock);
    Waiter->Period = HalGetClockPeriod();
    Waiter->Idle = KeGetCurrentPrcb()->ClockIdle;
    KeReleaseSpinLockFromDpcLevel(&Waiter->Lock);
    __atomic_store_n(&Waiter->Done, 1, __ATOMIC_RELEASE);
}

KTEST_EX(KeClock, a_dpc_waiting_on_an_idle_processor_takes_the_10ms_tick, KTEST_SMP_ONLY, 0)
{
    ULONG Target = KeQueryActiveProcessorCount(NULL) - 1;
    PKPRCB TargetPrcb = KiGetPrcb(Target);
    KC_IDLE_WAITER Waiter = {0};
    KDPC Dpc;
    KIRQL OldIrql;

    if (KiIdleClockPeriodUs == KI_CLOCK_PERIOD_US)
    {
        KT_SKIP("idle_tick_ms=10: idle processors keep the 10 ms tick");
    }
    KT_ASSERT(KcWaitForIdleTick(Target));
    KeInitializeSpinLock(&Waiter.Lock);
    KeInitializeDpc(&Dpc, KcIdleWaiterDpc, &Waiter);
    KeSetTargetProcessorDpc(&Dpc, (CCHAR)Target);

    KeAcquireSpinLock(&Waiter.Lock, &OldIrql);
    Waiter.Halts = TargetPrcb->WaitHalts;
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    /* Held until the DPC has spun its bound and halted in the wait. */
    KT_EXPECT(KtWaitForWordChange(&TargetPrcb->WaitHalts, Waiter.Halts, KT_WAIT_MS));
    KT_EXPECT(!TargetPrcb->ClockIdle);
    KeReleaseSpinLock(&Waiter.Lock, OldIrql);

    KT_ASSERT(KtWaitForLongAtLeast(&Waiter.Done, 1, KT_WAIT_MS));
    KeFlushQueuedDpcs(); // the DPC and its context are on this stack
    KT_EXPECT(!Waiter.Idle);
    KT_EXPECT_LE(Waiter.Period, KI_CLOCK_PERIOD_US);
    KT_EXPECT_GE(Waiter.Period, KI_CLOCK_PERIOD_US - KI_CLOCK_PERIOD_US / 100);
    KT_EXPECT(KcWaitForIdleTick(Target)); // back in its idle loop: slow again
}
