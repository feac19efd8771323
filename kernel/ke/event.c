/* SPDX-License-Identifier: MIT */
/*
 * Kernel events (KEVENT) and KeWaitForSingleObject for events and timers.
 * Spindle has no scheduler, so a waiter spins with pause on the object's
 * SignalState until it is signalled or its timeout passes; a satisfied wait
 * on a synchronization object consumes the signal with one compare-exchange,
 * so exactly one waiter wins it. WaitListHead is initialised and never used.
 *
 * Waiting is misuse (project choice, both builds; a Windows wait would have to
 * reschedule and bug-checks likewise):
 *   inside a DPC with a non-zero timeout: 0xB8 ATTEMPTED_SWITCH_FROM_DPC
 *       (P1 = P2 = 0: there are no threads; P3 = the waiter's stack pointer; P4 = 0)
 *   elsewhere above APC_LEVEL with a non-zero timeout, or above DISPATCH_LEVEL at
 *   all: 0xA IRQL_NOT_LESS_OR_EQUAL (P1 = Object, P2 = IRQL, P3 = 0, P4 = caller IP)
 * A zero timeout (a poll) is allowed at DISPATCH_LEVEL, in a DPC too.
 */
#include "kernel/ke/ke.h"

#define KI_100NS_PER_SECOND 10000000ull

#if DBG
/* TRUE for the dispatcher object types KeWaitForSingleObject understands. */
static BOOLEAN
KiIsWaitableObject(PDISPATCHER_HEADER Header)
{
    return Header->Type == EventNotificationObject || Header->Type == EventSynchronizationObject ||
           Header->Type == TimerNotificationObject || Header->Type == TimerSynchronizationObject;
}
#endif

/*
 * Satisfies a wait if the object is signalled: a notification object stays
 * signalled, a synchronization object is reset by the winner of the exchange.
 * Returns TRUE if the wait is satisfied.
 */
static BOOLEAN
KiTrySatisfyWait(PDISPATCHER_HEADER Header)
{
    /* Acquire: what the signaller wrote before its release store or exchange is visible. */
    LONG State = __atomic_load_n(&Header->SignalState, __ATOMIC_ACQUIRE);

    if (Header->Type == EventNotificationObject || Header->Type == TimerNotificationObject)
    {
        return State != 0;
    }
    while (State != 0)
    {
        /* Only one waiter turns a given signal into 0 (pairs with KeSetEvent's exchange). */
        if (__atomic_compare_exchange_n(&Header->SignalState, &State, 0, FALSE, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
        {
            return TRUE;
        }
    }
    return FALSE;
}

/* Performance-counter ticks in Interval (100 ns units), saturating instead of overflowing. */
static ULONG64
KiIntervalToCounts(ULONG64 Interval, ULONG64 Frequency)
{
    ULONG64 Seconds = Interval / KI_100NS_PER_SECOND;
    ULONG64 Rest = Interval % KI_100NS_PER_SECOND;

    if (Frequency != 0 && Seconds > MAXULONG64 / Frequency / 2)
    {
        return MAXULONG64 / 2;
    }
    return Seconds * Frequency + (Rest * Frequency) / KI_100NS_PER_SECOND;
}

/* Bug-checks if a wait with Timeout is not allowed at the current IRQL (see the top). */
static VOID
KiCheckWaitIrql(PVOID Object, PLARGE_INTEGER Timeout)
{
    KIRQL Irql = KeGetCurrentIrql();
    BOOLEAN Poll = Timeout != NULL && Timeout->QuadPart == 0;

    if (Irql <= APC_LEVEL || (Irql == DISPATCH_LEVEL && Poll))
    {
        return;
    }
    if (Irql == DISPATCH_LEVEL && KeGetCurrentPrcb()->DpcRoutineActive)
    {
        KeBugCheckEx(ATTEMPTED_SWITCH_FROM_DPC, 0, 0, (ULONG_PTR)__builtin_frame_address(0), 0);
    }
    KeBugCheckEx(IRQL_NOT_LESS_OR_EQUAL, (ULONG_PTR)Object, Irql, 0,
                 (ULONG_PTR)__builtin_return_address(0));
}

/*
 * Initialises Event as a notification or synchronization event, signalled iff
 * State. Any IRQL.
 */
VOID
KeInitializeEvent(PRKEVENT Event, EVENT_TYPE Type, BOOLEAN State)
{
    ASSERT(Type == NotificationEvent || Type == SynchronizationEvent);

    Event->Header.Type =
        (UCHAR)(Type == NotificationEvent ? EventNotificationObject : EventSynchronizationObject);
    Event->Header.Absolute = FALSE;
    Event->Header.Size = (UCHAR)(sizeof(KEVENT) / sizeof(LONG));
    Event->Header.Inserted = FALSE;
    Event->Header.SignalState = State ? 1 : 0;
    InitializeListHead(&Event->Header.WaitListHead);
}

/*
 * Signals Event; spinning waiters see it at once (one of them wins a
 * synchronization event). Returns the previous state. Increment and Wait have
 * no effect without a scheduler. IRQL <= DISPATCH_LEVEL.
 */
LONG
KeSetEvent(PRKEVENT Event, KPRIORITY Increment, BOOLEAN Wait)
{
    KiCheckIrqlAtMost(DISPATCH_LEVEL, Event);

    /* Release: the caller's writes (an IRP's IoStatus) are visible to the waiter that sees 1. */
    return __atomic_exchange_n(&Event->Header.SignalState, 1, __ATOMIC_ACQ_REL);
}

/* Makes Event not signalled; returns its previous state. IRQL <= DISPATCH_LEVEL. */
LONG
KeResetEvent(PRKEVENT Event)
{
    KiCheckIrqlAtMost(DISPATCH_LEVEL, Event);

    return __atomic_exchange_n(&Event->Header.SignalState, 0, __ATOMIC_ACQ_REL);
}

/* Makes Event not signalled. IRQL <= DISPATCH_LEVEL. */
VOID
KeClearEvent(PRKEVENT Event)
{
    __atomic_store_n(&Event->Header.SignalState, 0, __ATOMIC_RELEASE);
}

/* Returns Event's state (nonzero = signalled). Any IRQL. */
LONG
KeReadStateEvent(PRKEVENT Event)
{
    return __atomic_load_n(&Event->Header.SignalState, __ATOMIC_ACQUIRE);
}

/*
 * Spins until Object (a KEVENT or KTIMER) is signalled, consuming the signal
 * of a synchronization object. Timeout: NULL = forever; 0 = poll once;
 * negative = relative, in 100 ns units (measured with the performance
 * counter); positive = absolute system time (tick count x time increment).
 * Returns STATUS_SUCCESS or STATUS_TIMEOUT. IRQL <= APC_LEVEL, or
 * DISPATCH_LEVEL with a zero timeout; unchanged. A non-zero timeout inside a
 * DPC is 0xB8 ATTEMPTED_SWITCH_FROM_DPC, at any other IRQL above APC_LEVEL
 * 0xA (both builds). WaitReason, WaitMode and Alertable are accepted and
 * ignored (no threads, no APCs to alert).
 */
NTSTATUS
KeWaitForSingleObject(PVOID Object, KWAIT_REASON WaitReason, KPROCESSOR_MODE WaitMode,
                      BOOLEAN Alertable, PLARGE_INTEGER Timeout)
{
    PDISPATCHER_HEADER Header = Object;
    ULONG64 Deadline = 0;
    BOOLEAN Relative = FALSE;

    ASSERT(KiIsWaitableObject(Header));
    KiCheckWaitIrql(Object, Timeout);

    if (KiTrySatisfyWait(Header))
    {
        return STATUS_SUCCESS;
    }
    if (Timeout != NULL)
    {
        if (Timeout->QuadPart == 0)
        {
            return STATUS_TIMEOUT;
        }
        if (Timeout->QuadPart < 0)
        {
            LARGE_INTEGER Frequency;
            LARGE_INTEGER Now = KeQueryPerformanceCounter(&Frequency);
            ULONG64 Interval = 0 - (ULONG64)Timeout->QuadPart; // no overflow for MINLONGLONG

            Relative = TRUE;
            Deadline =
                (ULONG64)Now.QuadPart + KiIntervalToCounts(Interval, (ULONG64)Frequency.QuadPart);
        }
        else
        {
            Deadline = (ULONG64)Timeout->QuadPart;
        }
    }

    for (;;)
    {
        x86_pause();
        if (KiTrySatisfyWait(Header))
        {
            return STATUS_SUCCESS;
        }
        if (Timeout == NULL)
        {
            continue;
        }
        if (Relative)
        {
            if ((ULONG64)KeQueryPerformanceCounter(NULL).QuadPart >= Deadline)
            {
                return STATUS_TIMEOUT;
            }
        }
        else
        {
            LARGE_INTEGER Ticks;
            KeQueryTickCount(&Ticks);
            if ((ULONG64)Ticks.QuadPart * KeQueryTimeIncrement() >= Deadline)
            {
                return STATUS_TIMEOUT;
            }
        }
    }
}
