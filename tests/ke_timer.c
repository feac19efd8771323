/* SPDX-License-Identifier: MIT */
/*
 * KeTimer: KTIMER with DPCs. Every expiry is checked against the tick count,
 * never against wall-clock speed: a timer set for tick N expires exactly when
 * processor 0's tick count reaches N, so its DPC's system time is exactly
 * N x KeQueryTimeIncrement() and timers run in due-tick order.
 *
 * Timer DPCs target "the current processor", which is processor 0 (its clock
 * expires timers). A test running on processor 0 at PASSIVE_LEVEL that sees
 * the tick count pass N has therefore already run every DPC of tick N: the
 * DPC interrupt is taken as the clock interrupt returns.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

/*
 * Waits are bounded on the performance counter, not by counting steps: under
 * TCG each pause can cost a trip through QEMU's global lock, so a step may
 * take far longer than its stall.
 */
#define KTM_WAIT_STEP_US  100
#define KTM_WAIT_LIMIT_US 10000000ull // 10 s: a missing expiry fails, never hangs
#define KTM_TIMES         8           // DPC runs whose system time a probe records
#define KTM_POOL_TAG      'mTtK'

/* A timer, its DPC and what the DPC saw. */
typedef struct _KTM_PROBE
{
    KTIMER Timer;
    KDPC Dpc;
    volatile LONG *Order; // shared: next sequence number - 1
    volatile LONG Runs;
    volatile LONG Sequence;                 // 1-based position of the first run among the probes
    volatile ULONG64 SystemTime[KTM_TIMES]; // SystemArgument1 | SystemArgument2 << 32, per run
    volatile KIRQL Irql;
    volatile ULONG Processor;
    BOOLEAN Cancelled; // KeCancelTimer returned TRUE (the concurrency test)
    ULONG64 DueTick;   // the concurrency test's expectation
} KTM_PROBE;

static VOID
KtmDeferred(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    KTM_PROBE *Probe = Context;
    LONG Run = Probe->Runs;

    if (Run < KTM_TIMES)
    {
        Probe->SystemTime[Run] =
            (ULONG64)(ULONG_PTR)SystemArgument1 | ((ULONG64)(ULONG_PTR)SystemArgument2 << 32);
    }
    if (Run == 0 && Probe->Order != NULL)
    {
        Probe->Sequence = __atomic_add_fetch(Probe->Order, 1, __ATOMIC_RELAXED);
    }
    Probe->Irql = KeGetCurrentIrql();
    Probe->Processor = KeGetCurrentProcessorNumber();
    /* Release: the records above are visible once Runs is (pairs with KtmRuns). */
    __atomic_add_fetch(&Probe->Runs, 1, __ATOMIC_RELEASE);
}

static VOID
KtmInitializeProbe(KTM_PROBE *Probe, volatile LONG *Order)
{
    memset(Probe, 0, sizeof(*Probe));
    KeInitializeTimer(&Probe->Timer);
    KeInitializeDpc(&Probe->Dpc, KtmDeferred, Probe);
    Probe->Order = Order;
}

static LONG
KtmRuns(KTM_PROBE *Probe)
{
    return __atomic_load_n(&Probe->Runs, __ATOMIC_ACQUIRE);
}

static ULONG64
KtmTick(VOID)
{
    LARGE_INTEGER Count;
    KeQueryTickCount(&Count);
    return (ULONG64)Count.QuadPart;
}

/* The performance-counter value KTM_WAIT_LIMIT_US from now. */
static ULONG64
KtmDeadline(VOID)
{
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    return Now + KTM_WAIT_LIMIT_US / 1000000 * (ULONG64)Frequency.QuadPart;
}

static BOOLEAN
KtmBeforeDeadline(ULONG64 Deadline)
{
    return (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart < Deadline;
}

static LARGE_INTEGER
KtmAbsolute(ULONG64 Tick)
{
    LARGE_INTEGER Due;
    Due.QuadPart = (LONGLONG)(Tick * KeQueryTimeIncrement());
    return Due;
}

static LARGE_INTEGER
KtmRelative(LONGLONG Interval)
{
    LARGE_INTEGER Due;
    Due.QuadPart = -Interval;
    return Due;
}

/* Waits (bounded) until the tick count reaches Tick. */
static BOOLEAN
KtmWaitForTick(ULONG64 Tick)
{
    for (ULONG64 Deadline = KtmDeadline(); KtmBeforeDeadline(Deadline);)
    {
        if (KtmTick() >= Tick)
        {
            return TRUE;
        }
        KeStallExecutionProcessor(KTM_WAIT_STEP_US);
    }
    return KtmTick() >= Tick;
}

/* Waits (bounded) until Probe's DPC ran at least Runs times. */
static BOOLEAN
KtmWaitForRuns(KTM_PROBE *Probe, LONG Runs)
{
    for (ULONG64 Deadline = KtmDeadline(); KtmBeforeDeadline(Deadline);)
    {
        if (KtmRuns(Probe) >= Runs)
        {
            return TRUE;
        }
        KeStallExecutionProcessor(KTM_WAIT_STEP_US);
    }
    return KtmRuns(Probe) >= Runs;
}

/*
 * Sets Probes[i] to expire at absolute tick Base + Offsets[i] (Offsets >= 2)
 * with Base the tick count at the call, and returns Base. Setting happens at
 * DISPATCH_LEVEL on processor 0, so no timer DPC runs meanwhile; if the clock
 * reached the earliest due tick before all were set (the vCPU was descheduled),
 * everything is undone and set again, a bounded number of times.
 */
static ULONG64
KtmSetAbsolute(KTM_PROBE *Probes, const ULONG *Offsets, ULONG Count)
{
    for (ULONG Attempt = 0; Attempt < 10; Attempt++)
    {
        KIRQL OldIrql = KeRaiseIrqlToDpcLevel();
        ULONG64 Base = KtmTick();
        ULONG64 First = ~0ull;

        for (ULONG i = 0; i < Count; i++)
        {
            KT_EXPECT_EQ(
                KeSetTimer(&Probes[i].Timer, KtmAbsolute(Base + Offsets[i]), &Probes[i].Dpc),
                FALSE);
            First = Base + Offsets[i] < First ? Base + Offsets[i] : First;
        }
        if (KtmTick() < First)
        {
            KeLowerIrql(OldIrql);
            for (ULONG i = 0; i < Count; i++)
            {
                KT_EXPECT_EQ(Probes[i].Timer.DueTime, Base + Offsets[i]);
            }
            return Base;
        }
        for (ULONG i = 0; i < Count; i++)
        {
            KeCancelTimer(&Probes[i].Timer);
            KeRemoveQueueDpc(&Probes[i].Dpc);
        }
        KeLowerIrql(OldIrql);
        KtLog("the clock passed the first due tick while setting; again");
    }
    KtFail("timers set before the clock reached the first due tick", __FILE__, __LINE__);
    KtAbort();
}

KTEST(KeTimer, initialize_sets_an_unset_unsignalled_timer)
{
    KTIMER Timer;

    memset(&Timer, 0x55, sizeof(Timer));
    KeInitializeTimer(&Timer);
    KT_EXPECT_EQ(Timer.Header.Type, TimerNotificationObject);
    KT_EXPECT_EQ(Timer.Header.Size, sizeof(KTIMER) / sizeof(LONG));
    KT_EXPECT_EQ(Timer.Header.Inserted, FALSE);
    KT_EXPECT_EQ(Timer.Header.SignalState, 0);
    KT_EXPECT(IsListEmpty(&Timer.Header.WaitListHead));
    KT_EXPECT(Timer.Dpc == NULL);
    KT_EXPECT_EQ(Timer.Period, 0);
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), FALSE);

    memset(&Timer, 0x55, sizeof(Timer));
    KeInitializeTimerEx(&Timer, SynchronizationTimer);
    KT_EXPECT_EQ(Timer.Header.Type, TimerSynchronizationObject);
    KT_EXPECT_EQ(Timer.Header.Inserted, FALSE);
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), FALSE);
}

KTEST(KeTimer, cancel_of_an_unset_timer_returns_false)
{
    KTIMER Timer;

    KeInitializeTimer(&Timer);
    KT_EXPECT_EQ(KeCancelTimer(&Timer), FALSE);
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(100000000), NULL), FALSE); // 10 s
    KT_EXPECT_EQ(KeCancelTimer(&Timer), TRUE);
    KT_EXPECT_EQ(Timer.Header.Inserted, FALSE);
    KT_EXPECT_EQ(KeCancelTimer(&Timer), FALSE);
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), FALSE);
}

KTEST(KeTimer, set_of_a_set_timer_returns_true)
{
    KTIMER Timer;

    KeInitializeTimer(&Timer);
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(100000000), NULL), FALSE);
    KT_EXPECT_EQ(Timer.Header.Inserted, TRUE);
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(200000000), NULL), TRUE);
    KT_EXPECT_EQ(KeSetTimerEx(&Timer, KtmRelative(100000000), 1000, NULL), TRUE);
    KT_EXPECT_EQ(KeCancelTimer(&Timer), TRUE);

    /* Once it expired it is no longer set. */
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(1), NULL), FALSE);
    KT_ASSERT(KtmWaitForTick(Timer.DueTime));
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), TRUE);
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(1), NULL), FALSE);
    KT_ASSERT(KtmWaitForTick(Timer.DueTime));
}

/* Sets Timer for DueTime and checks its due tick is Ticks after the tick count then. */
static VOID
KtmCheckDueTick(PKTIMER Timer, LONGLONG DueTime, ULONG64 Ticks, BOOLEAN FromZero)
{
    LARGE_INTEGER Due;
    ULONG64 Before, After;

    Due.QuadPart = DueTime;
    Before = KtmTick();
    KeSetTimer(Timer, Due, NULL);
    After = KtmTick();
    KT_EXPECT_EQ(Timer->Header.Absolute, DueTime >= 0);
    if (FromZero)
    {
        KT_EXPECT_EQ(Timer->DueTime, Ticks);
    }
    else if (Timer->DueTime < Before + Ticks || Timer->DueTime > After + Ticks)
    {
        KtLog("DueTime %lld: due tick %llu, expected %llu..%llu", DueTime, Timer->DueTime,
              Before + Ticks, After + Ticks);
        KT_EXPECT(Timer->DueTime >= Before + Ticks && Timer->DueTime <= After + Ticks);
    }
    KeCancelTimer(Timer);
}

KTEST(KeTimer, due_time_becomes_a_due_tick_rounded_up)
{
    LONGLONG Increment = KeQueryTimeIncrement();
    ULONG64 Now = KtmTick();
    KTIMER Timer;

    KeInitializeTimer(&Timer);
    KtmCheckDueTick(&Timer, -1, 1, FALSE); // at least the next tick
    KtmCheckDueTick(&Timer, -Increment, 1, FALSE);
    KtmCheckDueTick(&Timer, -Increment - 1, 2, FALSE);
    KtmCheckDueTick(&Timer, -(5 * Increment / 2), 3, FALSE);
    KtmCheckDueTick(&Timer, -100 * Increment, 100, FALSE);
    KtmCheckDueTick(&Timer, 0, 1, FALSE); // absolute, in the past
    KtmCheckDueTick(&Timer, 1, 1, FALSE);
    /* Absolute: the tick at which system time (tick x increment) reaches it. */
    KtmCheckDueTick(&Timer, (LONGLONG)(Now + 1000) * Increment, Now + 1000, TRUE);
    KtmCheckDueTick(&Timer, (LONGLONG)(Now + 1000) * Increment + 1, Now + 1001, TRUE);
    KtmCheckDueTick(&Timer, (LONGLONG)(Now + 1001) * Increment - 1, Now + 1001, TRUE);
}

KTEST(KeTimer, read_state_is_false_until_the_due_tick_then_true)
{
    KTIMER Timer;
    BOOLEAN Signalled = FALSE;

    KeInitializeTimer(&Timer);
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(3 * (LONGLONG)KeQueryTimeIncrement()), NULL),
                 FALSE);
    for (ULONG64 Deadline = KtmDeadline(); KtmBeforeDeadline(Deadline) && !Signalled;)
    {
        /* State first: a signalled state implies the count it was set at is visible. */
        Signalled = KeReadStateTimer(&Timer);
        if (Signalled)
        {
            KT_EXPECT_GE(KtmTick(), Timer.DueTime);
        }
        else
        {
            KeStallExecutionProcessor(KTM_WAIT_STEP_US);
        }
    }
    KT_ASSERT(Signalled);
    KT_EXPECT_EQ(Timer.Header.Inserted, FALSE);

    /* A notification timer stays signalled; cancelling an expired timer keeps it so. */
    KT_ASSERT(KtmWaitForTick(Timer.DueTime + 2));
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), TRUE);
    KT_EXPECT_EQ(KeCancelTimer(&Timer), FALSE);
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), TRUE);

    /* Setting it again makes it not signalled. */
    KT_EXPECT_EQ(KeSetTimer(&Timer, KtmRelative(100000000), NULL), FALSE);
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), FALSE);
    KT_EXPECT_EQ(KeCancelTimer(&Timer), TRUE);
    KT_EXPECT_EQ(KeReadStateTimer(&Timer), FALSE);
}

KTEST(KeTimer, timers_fire_once_in_due_time_order)
{
    static const ULONG Offsets[] = {6, 2, 4};
    static const LONG Expected[] = {3, 1, 2}; // position of each probe's run
    volatile LONG Order = 0;
    KTM_PROBE Probes[3];
    ULONG64 Base;

    for (ULONG i = 0; i < 3; i++)
    {
        KtmInitializeProbe(&Probes[i], &Order);
    }
    Base = KtmSetAbsolute(Probes, Offsets, 3);
    KT_ASSERT(KtmWaitForTick(Base + 6 + 3)); // three ticks past the last due tick

    for (ULONG i = 0; i < 3; i++)
    {
        KT_EXPECT_EQ(KtmRuns(&Probes[i]), 1);
        KT_EXPECT_EQ(Probes[i].Sequence, Expected[i]);
        KT_EXPECT_EQ(Probes[i].SystemTime[0], (Base + Offsets[i]) * KeQueryTimeIncrement());
        KT_EXPECT_EQ(Probes[i].Irql, DISPATCH_LEVEL);
        KT_EXPECT_EQ(Probes[i].Processor, 0);
        KT_EXPECT_EQ(KeReadStateTimer(&Probes[i].Timer), TRUE);
        KT_EXPECT_EQ(KeCancelTimer(&Probes[i].Timer), FALSE);
    }
}

#define KTM_SAME_TICK 40 // more than the clock expires per batch

KTEST(KeTimer, timers_due_at_one_tick_fire_in_the_order_set)
{
    ULONG Offsets[KTM_SAME_TICK];
    volatile LONG Order = 0;
    KTM_PROBE *Probes =
        ExAllocatePoolWithTag(NonPagedPool, sizeof(KTM_PROBE) * KTM_SAME_TICK, KTM_POOL_TAG);
    ULONG64 Base;

    KT_ASSERT(Probes != NULL);
    for (ULONG i = 0; i < KTM_SAME_TICK; i++)
    {
        KtmInitializeProbe(&Probes[i], &Order);
        Offsets[i] = 3;
    }
    Base = KtmSetAbsolute(Probes, Offsets, KTM_SAME_TICK);
    KT_EXPECT(KtmWaitForTick(Base + 3 + 2));

    for (ULONG i = 0; i < KTM_SAME_TICK; i++)
    {
        KT_EXPECT_EQ(KtmRuns(&Probes[i]), 1);
        KT_EXPECT_EQ(Probes[i].Sequence, i + 1);
        KT_EXPECT_EQ(Probes[i].SystemTime[0], (Base + 3) * KeQueryTimeIncrement());
    }
    ExFreePoolWithTag(Probes, KTM_POOL_TAG);
}

KTEST(KeTimer, cancelled_timer_never_queues_its_dpc)
{
    static const ULONG Offsets[] = {3, 3};
    volatile LONG Order = 0;
    KTM_PROBE Probes[2]; // [0] is cancelled, [1] is the control
    ULONG64 Base;

    KtmInitializeProbe(&Probes[0], &Order);
    KtmInitializeProbe(&Probes[1], &Order);
    Base = KtmSetAbsolute(Probes, Offsets, 2);
    if (!KeCancelTimer(&Probes[0].Timer))
    {
        /* Possible only if the clock got there first (a descheduled vCPU). */
        KT_ASSERT(KtmTick() >= Base + 3);
        KT_SKIP("the timer expired before it could be cancelled");
    }
    KT_ASSERT(KtmWaitForTick(Base + 3 + 3));

    KT_EXPECT_EQ(KtmRuns(&Probes[0]), 0);
    KT_EXPECT_EQ(KeReadStateTimer(&Probes[0].Timer), FALSE);
    KT_EXPECT_EQ(KeCancelTimer(&Probes[0].Timer), FALSE);
    KT_EXPECT_EQ(KtmRuns(&Probes[1]), 1); // the clock did pass the due tick
    KT_EXPECT_EQ(KeReadStateTimer(&Probes[1].Timer), TRUE);
}

KTEST(KeTimer, set_again_replaces_the_due_time)
{
    static const ULONG Offsets[] = {3};
    volatile LONG Order = 0;
    KTM_PROBE Probe;
    ULONG64 Base;

    KtmInitializeProbe(&Probe, &Order);
    KT_EXPECT_EQ(KeSetTimer(&Probe.Timer, KtmRelative(100000000), &Probe.Dpc), FALSE); // 10 s
    KeCancelTimer(&Probe.Timer);
    Base = KtmSetAbsolute(&Probe, Offsets, 1);
    /* Now move it far out, then back to Base + 4. */
    KT_EXPECT_EQ(KeSetTimer(&Probe.Timer, KtmRelative(100000000), &Probe.Dpc), TRUE);
    if (KtmTick() >= Base + 4)
    {
        KeCancelTimer(&Probe.Timer);
        KT_SKIP("the clock passed the new due tick while setting");
    }
    KT_EXPECT_EQ(KeSetTimer(&Probe.Timer, KtmAbsolute(Base + 4), &Probe.Dpc), TRUE);
    KT_ASSERT(KtmWaitForTick(Base + 4 + 3));

    KT_EXPECT_EQ(KtmRuns(&Probe), 1);
    KT_EXPECT_EQ(Probe.SystemTime[0], (Base + 4) * KeQueryTimeIncrement());
}

KTEST(KeTimer, periodic_timer_fires_every_period_until_cancelled)
{
    volatile LONG Order = 0;
    KTM_PROBE Probe;
    LONG Runs;

    KtmInitializeProbe(&Probe, &Order);
    KT_EXPECT_EQ(KeSetTimerEx(&Probe.Timer, KtmRelative(200000), 20, &Probe.Dpc), FALSE);
    KT_EXPECT_EQ(Probe.Timer.Period, 20);
    KT_ASSERT(KtmWaitForRuns(&Probe, 4));
    KT_EXPECT_EQ(KeCancelTimer(&Probe.Timer), TRUE);
    Runs = KtmRuns(&Probe); // final: on processor 0 the last expiry's DPC already ran
    KT_ASSERT(KtmWaitForTick(KtmTick() + 5)); // two and a half periods more
    KT_EXPECT_EQ(KtmRuns(&Probe), Runs);
    KT_EXPECT_EQ(KeReadStateTimer(&Probe.Timer), TRUE);

    /*
     * 20 ms = two ticks, and each expiry re-arms from its own tick, so the
     * expiries the DPC reports are whole periods apart. Not always one period:
     * when the DPC is still queued at the next expiry, that insert returns
     * FALSE and keeps the first arguments (NT semantics), so a loaded host
     * shows a gap of two or more periods.
     */
    for (LONG i = 1; i < Runs && i < KTM_TIMES; i++)
    {
        ULONG64 Gap = Probe.SystemTime[i] - Probe.SystemTime[i - 1];
        KT_EXPECT_GT(Gap, 0);
        KT_EXPECT_EQ(Gap % (2 * KeQueryTimeIncrement()), 0);
    }
}

KTEST(KeTimer, dpc_waits_for_irql_below_dispatch)
{
    volatile LONG Order = 0;
    KTM_PROBE Probe;
    KIRQL OldIrql;
    BOOLEAN Signalled = FALSE;

    KtmInitializeProbe(&Probe, &Order);
    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    KT_EXPECT_EQ(KeSetTimer(&Probe.Timer, KtmRelative(1), &Probe.Dpc), FALSE);
    for (ULONG64 Deadline = KtmDeadline(); KtmBeforeDeadline(Deadline) && !Signalled;)
    {
        Signalled = KeReadStateTimer(&Probe.Timer); // the clock runs above DISPATCH_LEVEL
        KeStallExecutionProcessor(KTM_WAIT_STEP_US);
    }
    KT_EXPECT(Signalled);
    KT_EXPECT_EQ(KtmRuns(&Probe), 0); // queued on this processor, held off by IRQL
    KeLowerIrql(OldIrql);
    KT_EXPECT_EQ(KtmRuns(&Probe), Signalled ? 1 : 0);
}

KTEST_EX(KeTimer, dpc_runs_on_its_target_processor, KTEST_SMP_ONLY, 0)
{
    volatile LONG Order = 0;
    KTM_PROBE Probe;

    KtmInitializeProbe(&Probe, &Order);
    KeSetTargetProcessorDpc(&Probe.Dpc, 1);
    KT_EXPECT_EQ(
        KeSetTimer(&Probe.Timer, KtmRelative(2 * (LONGLONG)KeQueryTimeIncrement()), &Probe.Dpc),
        FALSE);
    KT_ASSERT(KtmWaitForRuns(&Probe, 1));
    KT_EXPECT_EQ(Probe.Processor, 1);
    KT_EXPECT_EQ(Probe.Irql, DISPATCH_LEVEL);
    KT_EXPECT_EQ(Probe.SystemTime[0], Probe.Timer.DueTime * KeQueryTimeIncrement());
}

#define KTM_PER_PROCESSOR 24

typedef struct _KTM_STORM
{
    KTM_PROBE *Probes; // KTM_PER_PROCESSOR per index
} KTM_STORM;

/* Sets timers 1..3 ticks out from this processor, cancelling every other one at once. */
static VOID
KtmStorm(ULONG Index, PVOID Context)
{
    KTM_STORM *Storm = Context;

    for (ULONG i = 0; i < KTM_PER_PROCESSOR; i++)
    {
        KTM_PROBE *Probe = &Storm->Probes[Index * KTM_PER_PROCESSOR + i];
        LONGLONG Ticks = 1 + (LONGLONG)((i + Index) % 3);

        KT_EXPECT_EQ(
            KeSetTimer(&Probe->Timer, KtmRelative(Ticks * KeQueryTimeIncrement()), &Probe->Dpc),
            FALSE);
        Probe->DueTick = Probe->Timer.DueTime;
        if (i % 2 == 0)
        {
            KeStallExecutionProcessor((i * 937) % 5000);
            Probe->Cancelled = KeCancelTimer(&Probe->Timer);
        }
        KeStallExecutionProcessor((i * 311) % 3000);
    }
}

KTEST(KeTimer, set_and_cancel_from_every_processor)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    ULONG Total = Count * KTM_PER_PROCESSOR;
    KTM_STORM Storm;
    ULONG64 Last = 0;
    ULONG Cancelled = 0;

    Storm.Probes = ExAllocatePoolWithTag(NonPagedPool, sizeof(KTM_PROBE) * Total, KTM_POOL_TAG);
    KT_ASSERT(Storm.Probes != NULL);
    for (ULONG i = 0; i < Total; i++)
    {
        KtmInitializeProbe(&Storm.Probes[i], NULL);
    }
    KtRunOnProcessors(Count, KtmStorm, &Storm);

    for (ULONG i = 0; i < Total; i++)
    {
        Last = Storm.Probes[i].DueTick > Last ? Storm.Probes[i].DueTick : Last;
    }
    KT_EXPECT(KtmWaitForTick(Last + 2));
    for (ULONG i = 0; i < Total; i++)
    {
        KTM_PROBE *Probe = &Storm.Probes[i];

        /* Cancel returned TRUE: never ran. FALSE (or not cancelled): expired, ran once. */
        KT_EXPECT_EQ(KtmRuns(Probe), Probe->Cancelled ? 0 : 1);
        KT_EXPECT_EQ(KeReadStateTimer(&Probe->Timer), !Probe->Cancelled);
        if (KtmRuns(Probe) == 1)
        {
            KT_EXPECT_EQ(Probe->SystemTime[0], Probe->DueTick * KeQueryTimeIncrement());
        }
        Cancelled += Probe->Cancelled;
    }
    KtLog("%u of %u timers cancelled before expiry", Cancelled, Total);
    ExFreePoolWithTag(Storm.Probes, KTM_POOL_TAG);
}

/* ---------------------------------------------------------------- teardown */

#define KTM_TEARDOWN_ROUNDS 200
#define KTM_FILLERS         15 // timers expiring in the same tick just before the one torn down

typedef struct _KTM_TEARDOWN
{
    KTIMER Timer;
    KDPC Dpc;
    KTIMER FillerTimers[KTM_FILLERS];
    KDPC FillerDpcs[KTM_FILLERS];
    volatile LONG Runs;
    volatile LONG FillerRuns;
    LONG Missed; // rounds where the flush returned before the DPC had run
    LONG Rounds;
} KTM_TEARDOWN;

static VOID
KtmTeardownDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    __atomic_add_fetch((volatile LONG *)Context, 1, __ATOMIC_RELEASE);
}

/*
 * On processor 1 (processor 0's clock expires the timers): set KTM_FILLERS
 * timers whose DPCs go to processor 1, then the one to tear down, all due at
 * the same tick; wait until the expiry has signalled it, then the documented
 * teardown: KeCancelTimer returns FALSE, KeFlushQueuedDpcs, and the KDPC may
 * be freed, so its DPC must have run. The flush waits only for queued DPCs,
 * so the DPC must be queued by the time KeCancelTimer has returned FALSE
 * (checked at DISPATCH_LEVEL, where nothing delays the look): if the expiry
 * queued DPCs only after dropping the timer lock, this one would still be
 * waiting behind the fillers' inserts, and the flush would return before it.
 */
static VOID
KtmTeardownRounds(ULONG Index, PVOID Context)
{
    KTM_TEARDOWN *Test = Context;

    if (Index == 0)
    {
        return;
    }
    for (LONG Round = 0; Round < KTM_TEARDOWN_ROUNDS; Round++)
    {
        LARGE_INTEGER Due;
        ULONG64 Spins = 0;
        KIRQL OldIrql;
        BOOLEAN Queued;

        /* An absolute time two ticks ahead: the same due tick for every timer of the round. */
        Due.QuadPart = (LONGLONG)((KtmTick() + 2) * KeQueryTimeIncrement());
        for (ULONG i = 0; i < KTM_FILLERS; i++)
        {
            KeInitializeDpc(&Test->FillerDpcs[i], KtmTeardownDpc, (PVOID)&Test->FillerRuns);
            KeSetTargetProcessorDpc(&Test->FillerDpcs[i], 0);
            KeSetTimer(&Test->FillerTimers[i], Due, &Test->FillerDpcs[i]);
        }
        KeInitializeDpc(&Test->Dpc, KtmTeardownDpc, (PVOID)&Test->Runs);
        /* At DISPATCH_LEVEL: the fillers' DPCs cannot interrupt this processor's look. */
        OldIrql = KeRaiseIrqlToDpcLevel();
        KeSetTimer(&Test->Timer, Due, &Test->Dpc);
        while (!KeReadStateTimer(&Test->Timer))
        {
            if (++Spins == (1ull << 32))
            {
                KtFail("the timer expired", __FILE__, __LINE__);
                KeLowerIrql(OldIrql);
                return;
            }
            /* No pause: under TCG it leaves the vCPU's loop and would slow the look. */
            __asm__ volatile("" ::: "memory");
        }
        KT_EXPECT_EQ(KeCancelTimer(&Test->Timer), FALSE);
        /* What KeFlushQueuedDpcs relies on: the DPC is queued (or has run) by now. */
        Queued = __atomic_load_n(&Test->Dpc.DpcData, __ATOMIC_ACQUIRE) != NULL ||
                 __atomic_load_n(&Test->Runs, __ATOMIC_ACQUIRE) == Round + 1;
        KeLowerIrql(OldIrql);
        KeFlushQueuedDpcs();
        if (!Queued || __atomic_load_n(&Test->Runs, __ATOMIC_ACQUIRE) != Round + 1)
        {
            Test->Missed++;
            /* Let the late DPC run before its KDPC is initialised again. */
            while (__atomic_load_n(&Test->Runs, __ATOMIC_ACQUIRE) != Round + 1)
            {
                x86_pause();
            }
        }
        for (ULONG i = 0; i < KTM_FILLERS; i++)
        {
            KeCancelTimer(&Test->FillerTimers[i]);
        }
        KeFlushQueuedDpcs();
        Test->Rounds++;
    }
}

KTEST_EX(KeTimer, cancel_false_then_flush_leaves_no_dpc_to_run, KTEST_SMP_ONLY, 0)
{
    KTM_TEARDOWN *Test = ExAllocatePoolWithTag(NonPagedPool, sizeof(*Test), KTM_POOL_TAG);

    KT_ASSERT(Test != NULL);
    memset(Test, 0, sizeof(*Test));
    KeInitializeTimer(&Test->Timer);
    for (ULONG i = 0; i < KTM_FILLERS; i++)
    {
        KeInitializeTimer(&Test->FillerTimers[i]);
    }
    KtRunOnProcessors(2, KtmTeardownRounds, Test);
    KtLog("%d rounds, %d with the DPC still to come after the flush", Test->Rounds, Test->Missed);
    KT_EXPECT_EQ(Test->Rounds, KTM_TEARDOWN_ROUNDS);
    KT_EXPECT_EQ(Test->Missed, 0);
    ExFreePoolWithTag(Test, KTM_POOL_TAG);
}
