/* SPDX-License-Identifier: MIT */
/*
 * Kernel timers (KTIMER), driven by the clock tick. One system-wide list,
 * ordered by due tick (equal ticks in the order they were set), holds every
 * set timer; processor 0's clock interrupt expires its head at CLOCK_LEVEL.
 *
 * Time: Timer->DueTime is an absolute tick count (KeQueryTickCount scale).
 * A negative DueTime is relative, in 100 ns units, rounded up to whole ticks;
 * a positive one is an absolute system time, which without a wall clock is
 * time since the clock started: tick count x KeQueryTimeIncrement(). Either
 * way a timer is due at the next tick at the earliest, so one set for a past
 * time (or a relative 0) expires at the next tick rather than inside
 * KeSetTimer (project choice). As in NT, the interval counts from the last
 * tick, so a timer may fire up to one tick period before the full interval
 * has passed since the call.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

/* Timers expired per hold of the timer lock (the clock drops it between batches). */
#define KI_TIMER_BATCH 16

#define KI_100NS_PER_MS 10000ull

/*
 * The timer list and every set timer's DueTime, TimerListEntry, Header.Inserted,
 * Dpc and Period are guarded by KiTimerLock, a spin lock taken at CLOCK_LEVEL:
 * processor 0 takes it in its clock interrupt, so a holder on processor 0 must
 * keep that interrupt out, and the clock must not wait on a holder it interrupted.
 */
static LIST_ENTRY KiTimerListHead = {&KiTimerListHead, &KiTimerListHead};
static KSPIN_LOCK KiTimerLock;

/*
 * Takes KiTimerLock; the caller is at CLOCK_LEVEL, so the clock interrupt on
 * this processor cannot come in while it is held. The kernel's spin lock gives
 * the ordering and, in checked builds, the deadlock watch.
 */
static VOID
KiAcquireTimerLockAtClockLevel(VOID)
{
    KiAcquireSpinLock(&KiTimerLock);
}

static VOID
KiReleaseTimerLock(VOID)
{
    KiReleaseSpinLock(&KiTimerLock);
}

/* Raises to CLOCK_LEVEL and takes KiTimerLock; returns the previous IRQL. */
static KIRQL
KiAcquireTimerLock(VOID)
{
    KIRQL OldIrql = KfRaiseIrql(CLOCK_LEVEL);
    KiAcquireTimerLockAtClockLevel();
    return OldIrql;
}

static ULONG64
KiCurrentTick(VOID)
{
    return __atomic_load_n(&KiTickCount, __ATOMIC_RELAXED);
}

/* Ticks covering Interval (100 ns units), rounded up. */
static ULONG64
KiIntervalToTicks(ULONG64 Interval)
{
    return Interval / KI_CLOCK_INCREMENT + (Interval % KI_CLOCK_INCREMENT != 0);
}

/* The tick at which a timer set now (at tick Now) for DueTime expires; > Now. */
static ULONG64
KiComputeDueTick(LONGLONG DueTime, ULONG64 Now)
{
    ULONG64 Due;

    if (DueTime < 0)
    {
        Due = Now + KiIntervalToTicks(0 - (ULONG64)DueTime); // no overflow for LLONG_MIN
    }
    else
    {
        Due = KiIntervalToTicks((ULONG64)DueTime);
    }
    return Due > Now ? Due : Now + 1;
}

/* Links Timer into the list by DueTime, after any timer due at the same tick. */
static VOID
KiInsertTimer(PKTIMER Timer)
{
    PLIST_ENTRY Previous = KiTimerListHead.Blink;

    while (Previous != &KiTimerListHead &&
           CONTAINING_RECORD(Previous, KTIMER, TimerListEntry)->DueTime > Timer->DueTime)
    {
        Previous = Previous->Blink;
    }
    InsertHeadList(Previous, &Timer->TimerListEntry); // i.e. right after Previous
    Timer->Header.Inserted = TRUE;
}

static VOID
KiRemoveTimer(PKTIMER Timer)
{
    RemoveEntryList(&Timer->TimerListEntry);
    Timer->Header.Inserted = FALSE;
}

/*
 * Expires up to KI_TIMER_BATCH timers due at or before Tick: each is unlinked
 * (periodic ones linked again a period later), signalled, and its DPC queued,
 * with the expiry's system time as SystemArgument1 (low 32 bits) and
 * SystemArgument2 (high), as NT does. Returns TRUE if timers may remain due.
 * Caller holds KiTimerLock.
 *
 * The DPC is queued while the timer leaves the list, under the lock, so
 * whoever then finds the timer unset (KeCancelTimer returning FALSE) finds its
 * DPC queued or already run: "cancel, KeFlushQueuedDpcs, free the KDPC" is
 * safe (the flush waits for every queued DPC). Lock order: KiTimerLock, then
 * a processor's DPC lock.
 */
static BOOLEAN
KiExpireTimerBatch(ULONG64 Tick)
{
    ULONG Count = 0;

    while (!IsListEmpty(&KiTimerListHead))
    {
        PKTIMER Timer = CONTAINING_RECORD(KiTimerListHead.Flink, KTIMER, TimerListEntry);
        ULONG64 SystemTime = Tick * KI_CLOCK_INCREMENT;

        if (Timer->DueTime > Tick)
        {
            return FALSE;
        }
        if (Count++ == KI_TIMER_BATCH)
        {
            return TRUE;
        }
        KiRemoveTimer(Timer);
        /* Release: pairs with the acquire in KeReadStateTimer (and waiters' polls). */
        __atomic_store_n(&Timer->Header.SignalState, 1, __ATOMIC_RELEASE);
        if (Timer->Dpc != NULL)
        {
            KeInsertQueueDpc(Timer->Dpc, (PVOID)(ULONG_PTR)(ULONG)SystemTime,
                             (PVOID)(ULONG_PTR)(ULONG)(SystemTime >> 32));
        }
        if (Timer->Period != 0)
        {
            Timer->DueTime = Tick + KiIntervalToTicks(Timer->Period * KI_100NS_PER_MS);
            KiInsertTimer(Timer);
        }
    }
    return FALSE;
}

/*
 * Expires every timer due at or before Tick. Called by processor 0's clock
 * interrupt at CLOCK_LEVEL just after it advanced the tick count to Tick.
 */
VOID
KiExpireTimers(ULONG64 Tick)
{
    BOOLEAN More;

    do
    {
        KiAcquireTimerLockAtClockLevel();
        More = KiExpireTimerBatch(Tick);
        KiReleaseTimerLock();
    } while (More);
}

/* KeInitializeTimerEx(Timer, NotificationTimer). Any IRQL. */
VOID
KeInitializeTimer(PKTIMER Timer)
{
    KeInitializeTimerEx(Timer, NotificationTimer);
}

/*
 * Initialises Timer of the given type, not set and not signalled. The timer
 * must not be set. Any IRQL.
 */
VOID
KeInitializeTimerEx(PKTIMER Timer, TIMER_TYPE Type)
{
    ASSERT(Type == NotificationTimer || Type == SynchronizationTimer);
    Timer->Header.Type =
        (UCHAR)(Type == NotificationTimer ? TimerNotificationObject : TimerSynchronizationObject);
    Timer->Header.Absolute = FALSE;
    Timer->Header.Size = (UCHAR)(sizeof(KTIMER) / sizeof(LONG));
    Timer->Header.Inserted = FALSE;
    Timer->Header.SignalState = 0;
    InitializeListHead(&Timer->Header.WaitListHead);
    Timer->DueTime = 0;
    Timer->TimerListEntry.Flink = NULL;
    Timer->TimerListEntry.Blink = NULL;
    Timer->Dpc = NULL;
    Timer->Processor = 0;
    Timer->Period = 0;
}

/*
 * KeSetTimerEx(Timer, DueTime, 0, Dpc): TRUE if Timer was already set (it is
 * re-set). IRQL <= DISPATCH_LEVEL.
 */
BOOLEAN
KeSetTimer(PKTIMER Timer, LARGE_INTEGER DueTime, PKDPC Dpc)
{
    return KeSetTimerEx(Timer, DueTime, 0, Dpc);
}

/*
 * Sets Timer, not signalled, to expire at DueTime (see the top of this file),
 * then every Period ms if Period != 0; each expiry signals it and queues Dpc
 * if given. Returns TRUE if Timer was already set (it is re-set). IRQL <=
 * DISPATCH_LEVEL; the timer lock must not be held.
 */
BOOLEAN
KeSetTimerEx(PKTIMER Timer, LARGE_INTEGER DueTime, LONG Period, PKDPC Dpc)
{
    BOOLEAN WasSet;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Timer);
    ASSERT(Period >= 0);

    OldIrql = KiAcquireTimerLock();
    WasSet = Timer->Header.Inserted;
    if (WasSet)
    {
        KiRemoveTimer(Timer);
    }
    __atomic_store_n(&Timer->Header.SignalState, 0, __ATOMIC_RELAXED); // ordered by the lock
    Timer->Header.Absolute = (UCHAR)(DueTime.QuadPart >= 0);
    Timer->Dpc = Dpc;
    Timer->Period = (ULONG)Period;
    Timer->Processor = 0; // the list processor 0's clock expires
    /* The tick read under the lock: processor 0 expires Tick only after taking it. */
    Timer->DueTime = KiComputeDueTick(DueTime.QuadPart, KiCurrentTick());
    KiInsertTimer(Timer);
    KiReleaseTimerLock();
    KeLowerIrql(OldIrql);
    return WasSet;
}

/*
 * Unsets Timer, leaving its signal state as it is; its DPC is not queued by
 * this timer any more. Returns TRUE if it was set. IRQL <= DISPATCH_LEVEL.
 */
BOOLEAN
KeCancelTimer(PKTIMER Timer)
{
    BOOLEAN WasSet;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Timer);

    OldIrql = KiAcquireTimerLock();
    WasSet = Timer->Header.Inserted;
    if (WasSet)
    {
        KiRemoveTimer(Timer);
    }
    KiReleaseTimerLock();
    KeLowerIrql(OldIrql);
    return WasSet;
}

/* Returns TRUE if Timer is signalled (it expired since it was last set). Any IRQL. */
BOOLEAN
KeReadStateTimer(PKTIMER Timer)
{
    return __atomic_load_n(&Timer->Header.SignalState, __ATOMIC_ACQUIRE) != 0;
}
