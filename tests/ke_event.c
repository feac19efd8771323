/* SPDX-License-Identifier: MIT */
/*
 * KeEvent: KEVENT and KeWaitForSingleObject (events and timers). Without a
 * scheduler a wait spins until the object is signalled or its timeout has
 * passed; a satisfied wait on a synchronization object resets it. Waiting
 * with a timeout above APC_LEVEL is a bug check: 0xB8 inside a DPC, 0xA
 * elsewhere; a poll (zero timeout) is fine at DISPATCH_LEVEL.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define KEV_WAIT_SPINS (1ull << 32)
#define KEV_BOUND      (10ll * 1000 * 10000) // 10 s (100 ns units): a lost signal fails, not hangs

static LARGE_INTEGER
KevRelative(LONGLONG HundredNs)
{
    LARGE_INTEGER Timeout;
    Timeout.QuadPart = -HundredNs;
    return Timeout;
}

/* Microseconds between two performance-counter readings. */
static ULONG64
KevElapsedUs(LARGE_INTEGER Start, LARGE_INTEGER End, LARGE_INTEGER Frequency)
{
    return (ULONG64)(End.QuadPart - Start.QuadPart) * 1000000ull / (ULONG64)Frequency.QuadPart;
}

KTEST(KeEvent, initialize_sets_type_state_and_empty_wait_list)
{
    KEVENT Event;

    memset(&Event, 0x55, sizeof(Event));
    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    KT_EXPECT_EQ(Event.Header.Type, EventNotificationObject);
    KT_EXPECT_EQ(Event.Header.Size, sizeof(KEVENT) / sizeof(LONG));
    KT_EXPECT_EQ(Event.Header.SignalState, 0);
    KT_EXPECT(IsListEmpty(&Event.Header.WaitListHead));
    KT_EXPECT_EQ(KeReadStateEvent(&Event), 0);

    KeInitializeEvent(&Event, SynchronizationEvent, TRUE);
    KT_EXPECT_EQ(Event.Header.Type, EventSynchronizationObject);
    KT_EXPECT_NE(KeReadStateEvent(&Event), 0);
}

KTEST(KeEvent, set_reset_and_clear_return_and_change_the_state)
{
    KEVENT Event;
    KIRQL OldIrql;

    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    KT_EXPECT_EQ(KeSetEvent(&Event, IO_NO_INCREMENT, FALSE), 0);
    KT_EXPECT_NE(KeReadStateEvent(&Event), 0);
    KT_EXPECT_NE(KeSetEvent(&Event, IO_NO_INCREMENT, FALSE), 0); // already signalled
    KT_EXPECT_NE(KeResetEvent(&Event), 0);
    KT_EXPECT_EQ(KeReadStateEvent(&Event), 0);
    KT_EXPECT_EQ(KeResetEvent(&Event), 0);

    /* At DISPATCH_LEVEL too. */
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_EQ(KeSetEvent(&Event, EVENT_INCREMENT, FALSE), 0);
    KeClearEvent(&Event);
    KT_EXPECT_EQ(KeReadStateEvent(&Event), 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(OldIrql);
}

KTEST(KeEvent, notification_wait_leaves_it_signalled_synchronization_wait_resets_it)
{
    KEVENT Notification;
    KEVENT Synchronization;
    LARGE_INTEGER Poll = {.QuadPart = 0};

    KeInitializeEvent(&Notification, NotificationEvent, TRUE);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Notification, Executive, KernelMode, FALSE, NULL),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Notification, Executive, KernelMode, FALSE, &Poll),
                 STATUS_SUCCESS);
    KT_EXPECT_NE(KeReadStateEvent(&Notification), 0);

    KeInitializeEvent(&Synchronization, SynchronizationEvent, TRUE);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Synchronization, Executive, KernelMode, FALSE, NULL),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(KeReadStateEvent(&Synchronization), 0);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Synchronization, Executive, KernelMode, FALSE, &Poll),
                 STATUS_TIMEOUT);
}

KTEST(KeEvent, poll_is_allowed_at_dispatch_level)
{
    KEVENT Event;
    LARGE_INTEGER Poll = {.QuadPart = 0};
    KIRQL OldIrql;

    KeInitializeEvent(&Event, SynchronizationEvent, FALSE);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_EQ(KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Poll),
                 STATUS_TIMEOUT);
    KeSetEvent(&Event, IO_NO_INCREMENT, FALSE);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Poll),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(KeReadStateEvent(&Event), 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(OldIrql);
}

KTEST(KeEvent, relative_timeout_expires_after_the_interval)
{
    KEVENT Event;
    LARGE_INTEGER Frequency;
    LARGE_INTEGER Start;
    LARGE_INTEGER End;
    LARGE_INTEGER Timeout = KevRelative(30 * 10000); // 30 ms
    KIRQL OldIrql;

    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    Start = KeQueryPerformanceCounter(&Frequency);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Timeout),
                 STATUS_TIMEOUT);
    End = KeQueryPerformanceCounter(NULL);
    KT_EXPECT_GE(KevElapsedUs(Start, End, Frequency), 30000);

    /* At APC_LEVEL as well. */
    KeRaiseIrql(APC_LEVEL, &OldIrql);
    Timeout = KevRelative(10000); // 1 ms
    KT_EXPECT_EQ(KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Timeout),
                 STATUS_TIMEOUT);
    KT_EXPECT_EQ(KeGetCurrentIrql(), APC_LEVEL);
    KeLowerIrql(OldIrql);
}

KTEST(KeEvent, absolute_timeout_in_the_past_times_out_at_once)
{
    KEVENT Event;
    LARGE_INTEGER Timeout = {.QuadPart = 1}; // 100 ns after the clock started

    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Timeout),
                 STATUS_TIMEOUT);
}

KTEST(KeEvent, wait_on_timers_consumes_only_a_synchronization_timer)
{
    KTIMER Notification;
    KTIMER Synchronization;
    LARGE_INTEGER Due = KevRelative(KeQueryTimeIncrement());
    LARGE_INTEGER Poll = {.QuadPart = 0};

    KeInitializeTimerEx(&Notification, NotificationTimer);
    KeInitializeTimerEx(&Synchronization, SynchronizationTimer);
    KeSetTimer(&Notification, Due, NULL);
    KeSetTimer(&Synchronization, Due, NULL);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Notification, Executive, KernelMode, FALSE, NULL),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(KeReadStateTimer(&Notification), TRUE);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Synchronization, Executive, KernelMode, FALSE, NULL),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(KeReadStateTimer(&Synchronization), FALSE);
    KT_EXPECT_EQ(KeWaitForSingleObject(&Synchronization, Executive, KernelMode, FALSE, &Poll),
                 STATUS_TIMEOUT);
}

KTEST(KeEvent, wait_with_timeout_at_dispatch_level_bugchecks)
{
    KEVENT Event;
    LARGE_INTEGER Timeout = KevRelative(10000);
    KIRQL OldIrql;

    KeInitializeEvent(&Event, NotificationEvent, TRUE);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_BUGCHECK(IRQL_NOT_LESS_OR_EQUAL,
                       KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, &Timeout));
    KT_EXPECT_BUGCHECK(IRQL_NOT_LESS_OR_EQUAL,
                       KeWaitForSingleObject(&Event, Executive, KernelMode, FALSE, NULL));
    KeLowerIrql(OldIrql);
}

typedef struct _KEV_DPC_WAIT
{
    KDPC Dpc;
    KEVENT Event;
    BOOLEAN Poll;
    volatile LONG Returned;
    NTSTATUS Status;
} KEV_DPC_WAIT;

static VOID
KevWaitingDpc(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    KEV_DPC_WAIT *Wait = Context;
    LARGE_INTEGER Timeout;

    Timeout.QuadPart = Wait->Poll ? 0 : -10000;
    Wait->Status = KeWaitForSingleObject(&Wait->Event, Executive, KernelMode, FALSE, &Timeout);
    __atomic_store_n(&Wait->Returned, 1, __ATOMIC_RELEASE);
}

KTEST(KeEvent, wait_inside_a_dpc_bugchecks_attempted_switch_unless_polling)
{
    KEV_DPC_WAIT Wait;

    memset(&Wait, 0, sizeof(Wait));
    KeInitializeEvent(&Wait.Event, NotificationEvent, FALSE);
    KeInitializeDpc(&Wait.Dpc, KevWaitingDpc, &Wait);

    /* A poll from a DPC is allowed. The insert at PASSIVE_LEVEL runs it at once. */
    Wait.Poll = TRUE;
    KeInsertQueueDpc(&Wait.Dpc, NULL, NULL);
    KT_EXPECT_EQ(Wait.Returned, 1);
    KT_EXPECT_EQ(Wait.Status, STATUS_TIMEOUT);

    Wait.Poll = FALSE;
    Wait.Returned = 0;
    KT_EXPECT_BUGCHECK(ATTEMPTED_SWITCH_FROM_DPC, KeInsertQueueDpc(&Wait.Dpc, NULL, NULL));
    KT_EXPECT_EQ(Wait.Returned, 0);
    /* The catch unwound the DPC drain; repair what it would have reset on the way out. */
    KeGetCurrentPrcb()->DpcRoutineActive = FALSE;
}

typedef struct _KEV_CROSS
{
    KEVENT Event;
    KEVENT Reply;
    volatile LONG Winners;
} KEV_CROSS;

static VOID
KevCrossRoutine(ULONG Index, PVOID Context)
{
    KEV_CROSS *Cross = Context;
    LARGE_INTEGER Timeout = KevRelative(KEV_BOUND);

    if (Index == 0)
    {
        KT_EXPECT_EQ(KeWaitForSingleObject(&Cross->Event, Executive, KernelMode, FALSE, &Timeout),
                     STATUS_SUCCESS);
        KeSetEvent(&Cross->Reply, IO_NO_INCREMENT, FALSE);
    }
    else if (Index == 1)
    {
        KeStallExecutionProcessor(5000);
        KeSetEvent(&Cross->Event, IO_NO_INCREMENT, FALSE);
        KT_EXPECT_EQ(KeWaitForSingleObject(&Cross->Reply, Executive, KernelMode, FALSE, &Timeout),
                     STATUS_SUCCESS);
    }
}

KTEST_EX(KeEvent, wait_returns_when_another_processor_sets_the_event, KTEST_SMP_ONLY, 0)
{
    KEV_CROSS Cross;

    KeInitializeEvent(&Cross.Event, NotificationEvent, FALSE);
    KeInitializeEvent(&Cross.Reply, SynchronizationEvent, FALSE);
    KtRunOnProcessors(2, KevCrossRoutine, &Cross);
    KT_EXPECT_NE(KeReadStateEvent(&Cross.Event), 0);
    KT_EXPECT_EQ(KeReadStateEvent(&Cross.Reply), 0);
}

typedef struct _KEV_RACE
{
    KEVENT Event; // synchronization: every signal wakes exactly one waiter
    volatile LONG Signals;
    volatile LONG Wakeups;
    ULONG Waiters;
} KEV_RACE;

#define KEV_RACE_ROUNDS 200

static VOID
KevRaceRoutine(ULONG Index, PVOID Context)
{
    KEV_RACE *Race = Context;

    if (Index == 0)
    {
        for (ULONG i = 0; i < KEV_RACE_ROUNDS * Race->Waiters; i++)
        {
            ULONG64 Spins = 0;
            /* Signal only when the last signal was consumed, so none is lost to "already set". */
            while (KeReadStateEvent(&Race->Event) != 0 && ++Spins < KEV_WAIT_SPINS)
            {
                YieldProcessor();
            }
            InterlockedIncrement(&Race->Signals);
            KeSetEvent(&Race->Event, IO_NO_INCREMENT, FALSE);
        }
        return;
    }
    for (ULONG i = 0; i < KEV_RACE_ROUNDS; i++)
    {
        LARGE_INTEGER Timeout = KevRelative(KEV_BOUND);

        KT_ASSERT_EQ(KeWaitForSingleObject(&Race->Event, Executive, KernelMode, FALSE, &Timeout),
                     STATUS_SUCCESS);
        InterlockedIncrement(&Race->Wakeups);
    }
}

KTEST_EX(KeEvent, synchronization_event_wakes_one_waiter_per_signal, KTEST_SMP_ONLY, 0)
{
    KEV_RACE Race;

    memset(&Race, 0, sizeof(Race));
    KeInitializeEvent(&Race.Event, SynchronizationEvent, FALSE);
    Race.Waiters = KeQueryActiveProcessorCount(NULL) - 1;
    KtRunOnProcessors(0, KevRaceRoutine, &Race);
    KT_EXPECT_EQ(Race.Wakeups, Race.Signals);
    KT_EXPECT_EQ(Race.Wakeups, (LONG)(KEV_RACE_ROUNDS * Race.Waiters));
    KT_EXPECT_EQ(KeReadStateEvent(&Race.Event), 0);
}
