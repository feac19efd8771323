/* SPDX-License-Identifier: MIT */
/*
 * KeDeviceQueue: device queues, API.md §10. The Busy protocol (an insert into
 * an idle queue grants the entry, a removal from an empty busy queue idles
 * it), key order (ascending, FIFO among equal keys), the by-key removal rule
 * (first key >= SortKey, else the head; not ReactOS's, §13.1), IRQL in and
 * out, the queued lock, the checked build's bug checks 0x2 and 0x8, and
 * entries with a stale Inserted flag (never read by the inserts).
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define KDQ_ENTRIES     8
#define KDQ_POOL_TAG    'qDtK'
#define KDQ_SMP_ENTRIES 1500 // per processor at most, in the Busy-protocol race
/*
 * The race is time-boxed: each processor stops inserting at the deadline
 * (after at least KDQ_SMP_MIN_ENTRIES), so the work scales with what the
 * machine does: 16 virtual processors on 2 host cores do fewer hand-offs in
 * the same time, not the same hand-offs in ten times the time.
 */
#define KDQ_SMP_MIN_ENTRIES 16
#define KDQ_RACE_MS         5000
#define KDQ_WAIT_SPINS      (1ull << 32)

typedef struct _KDQ_ENTRY
{
    KDEVICE_QUEUE_ENTRY Entry;
    ULONG Id;
    volatile LONG Done; // the race: times the entry was granted or dequeued
} KDQ_ENTRY;

static KDQ_ENTRY KdqEntries[KDQ_ENTRIES];

static VOID
KdqReset(PKDEVICE_QUEUE Queue)
{
    KeInitializeDeviceQueue(Queue);
    memset(KdqEntries, 0, sizeof(KdqEntries));
    for (ULONG i = 0; i < KDQ_ENTRIES; i++)
    {
        KdqEntries[i].Id = i;
    }
}

static ULONG
KdqId(PKDEVICE_QUEUE_ENTRY Entry)
{
    return Entry == NULL ? ~0u : CONTAINING_RECORD(Entry, KDQ_ENTRY, Entry)->Id;
}

/* Number of entries linked in the queue (walks the list; caller keeps it stable). */
static ULONG
KdqLength(PKDEVICE_QUEUE Queue)
{
    ULONG Count = 0;
    for (PLIST_ENTRY Link = Queue->DeviceListHead.Flink; Link != &Queue->DeviceListHead;
         Link = Link->Flink)
    {
        Count++;
    }
    return Count;
}

/* Makes Queue busy (entry 0 granted) and queues entries First.. with the given keys. */
static VOID
KdqFillByKey(PKDEVICE_QUEUE Queue, const ULONG *Keys, ULONG Count)
{
    KT_ASSERT_EQ(KeInsertDeviceQueue(Queue, &KdqEntries[0].Entry), FALSE);
    for (ULONG i = 0; i < Count; i++)
    {
        KT_ASSERT_EQ(KeInsertByKeyDeviceQueue(Queue, &KdqEntries[i + 1].Entry, Keys[i]), TRUE);
    }
}

KTEST(KeDeviceQueue, initialize_sets_fields_and_writes_nothing_past_the_queue)
{
    struct
    {
        KDEVICE_QUEUE Queue;
        UCHAR Guard[32];
    } Block;

    memset(&Block, 0x55, sizeof(Block));
    KeInitializeDeviceQueue(&Block.Queue);
    KT_EXPECT_EQ(Block.Queue.Type, DeviceQueueObject);
    KT_EXPECT_EQ(Block.Queue.Type, 20);
    KT_EXPECT_EQ(Block.Queue.Size, sizeof(KDEVICE_QUEUE));
    KT_EXPECT_EQ(Block.Queue.Size, 40);
    KT_EXPECT(IsListEmpty(&Block.Queue.DeviceListHead));
    KT_EXPECT_EQ(Block.Queue.Lock, 0);
    KT_EXPECT_EQ(Block.Queue.Busy, FALSE);
    for (ULONG i = 0; i < sizeof(Block.Guard); i++)
    {
        KT_EXPECT_EQ(Block.Guard[i], 0x55);
    }
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeDeviceQueue, insert_grants_an_idle_queue_then_queues_at_the_tail)
{
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    KdqEntries[1].Entry.Inserted = FALSE;
    OldIrql = KeRaiseIrqlToDpcLevel();

    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[0].Entry), FALSE);
    KT_EXPECT_EQ(Queue.Busy, TRUE);
    KT_EXPECT_EQ(KdqEntries[0].Entry.Inserted, FALSE);
    KT_EXPECT(IsListEmpty(&Queue.DeviceListHead));

    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[1].Entry), TRUE);
    KT_EXPECT_EQ(KdqEntries[1].Entry.Inserted, TRUE);
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[2].Entry), TRUE);
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[3].Entry), TRUE);
    KT_EXPECT_EQ(KdqLength(&Queue), 3);
    KT_EXPECT_EQ(Queue.Lock, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);

    /* FIFO: 1, 2, 3; the queue stays busy until a removal finds it empty. */
    for (ULONG Id = 1; Id <= 3; Id++)
    {
        PKDEVICE_QUEUE_ENTRY Entry = KeRemoveDeviceQueue(&Queue);
        KT_EXPECT_EQ(KdqId(Entry), Id);
        KT_EXPECT_EQ(KdqEntries[Id].Entry.Inserted, FALSE);
        KT_EXPECT_EQ(Queue.Busy, TRUE);
    }
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    KT_EXPECT_EQ(Queue.Lock, 0);

    /* Idle again: the next insert is a grant. */
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[4].Entry), FALSE);
    KT_EXPECT_EQ(Queue.Busy, TRUE);
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KeLowerIrql(OldIrql);
}

KTEST(KeDeviceQueue, insert_by_key_sorts_ascending_and_fifo_among_equal_keys)
{
    static const ULONG Keys[] = {5, 1, 5, 3, 1, 9, 0};
    static const ULONG Order[] = {7, 2, 5, 4, 1, 3, 6}; // entry ids (1-based position in Keys)
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_EQ(KeInsertByKeyDeviceQueue(&Queue, &KdqEntries[0].Entry, 42), FALSE);
    KT_EXPECT_EQ(KdqEntries[0].Entry.SortKey, 42); // stored even when granted
    KT_EXPECT_EQ(KdqEntries[0].Entry.Inserted, FALSE);
    for (ULONG i = 0; i < ARRAYSIZE(Keys); i++)
    {
        KT_EXPECT_EQ(KeInsertByKeyDeviceQueue(&Queue, &KdqEntries[i + 1].Entry, Keys[i]), TRUE);
        KT_EXPECT_EQ(KdqEntries[i + 1].Entry.SortKey, Keys[i]);
    }
    for (ULONG i = 0; i < ARRAYSIZE(Order); i++)
    {
        KT_EXPECT_EQ(KdqId(KeRemoveDeviceQueue(&Queue)), Order[i]);
    }
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    KeLowerIrql(OldIrql);
}

KTEST(KeDeviceQueue, remove_by_key_takes_first_key_at_least_else_the_head)
{
    static const ULONG Keys[] = {1, 5, 5, 8};
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KdqFillByKey(&Queue, Keys, ARRAYSIZE(Keys)); // ids 1..4 = keys 1, 5, 5, 8

    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueue(&Queue, 5)), 2); // first of the equal keys
    KT_EXPECT_EQ(KdqEntries[2].Entry.Inserted, FALSE);
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueue(&Queue, 9)), 1); // none >= 9: the head
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueue(&Queue, 6)), 4);
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueue(&Queue, 0)), 3);
    KT_EXPECT(KeRemoveByKeyDeviceQueue(&Queue, 0) == NULL);
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    KeLowerIrql(OldIrql);
}

/* API.md §13.1: ReactOS returns the head here; Windows returns the entry with key 5. */
KTEST(KeDeviceQueue, remove_by_key_equal_to_the_last_key_returns_that_entry)
{
    static const ULONG Keys[] = {1, 5};
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KdqFillByKey(&Queue, Keys, ARRAYSIZE(Keys));
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueue(&Queue, 5)), 2);
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueue(&Queue, 5)), 1);
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KeLowerIrql(OldIrql);
}

KTEST(KeDeviceQueue, remove_by_key_if_busy_ignores_an_idle_queue)
{
    static const ULONG Keys[] = {3, 7};
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT(KeRemoveByKeyDeviceQueueIfBusy(&Queue, 0) == NULL);
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    KT_EXPECT_EQ(Queue.Lock, 0);

    KdqFillByKey(&Queue, Keys, ARRAYSIZE(Keys));
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueueIfBusy(&Queue, 4)), 2);
    KT_EXPECT_EQ(KdqId(KeRemoveByKeyDeviceQueueIfBusy(&Queue, 4)), 1); // none >= 4: the head
    KT_EXPECT(KeRemoveByKeyDeviceQueueIfBusy(&Queue, 4) == NULL);      // empty and busy: idles it
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    KT_EXPECT(KeRemoveByKeyDeviceQueueIfBusy(&Queue, 4) == NULL);
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    KeLowerIrql(OldIrql);
}

KTEST(KeDeviceQueue, remove_entry_raises_itself_and_never_changes_busy)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL};
    static const ULONG Keys[] = {1, 2, 3};

    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        KDEVICE_QUEUE Queue;
        KIRQL OldIrql;

        KdqReset(&Queue);
        OldIrql = KeRaiseIrqlToDpcLevel();
        KdqFillByKey(&Queue, Keys, ARRAYSIZE(Keys));
        KeLowerIrql(OldIrql);

        KeRaiseIrql(Levels[l], &OldIrql);
        KT_EXPECT_EQ(KeRemoveEntryDeviceQueue(&Queue, &KdqEntries[2].Entry), TRUE);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KT_EXPECT_EQ(KdqEntries[2].Entry.Inserted, FALSE);
        KT_EXPECT_EQ(KeRemoveEntryDeviceQueue(&Queue, &KdqEntries[2].Entry), FALSE);
        KT_EXPECT_EQ(KeRemoveEntryDeviceQueue(&Queue, &KdqEntries[0].Entry), FALSE); // granted
        KT_EXPECT_EQ(KeRemoveEntryDeviceQueue(&Queue, &KdqEntries[1].Entry), TRUE);
        KT_EXPECT_EQ(KeRemoveEntryDeviceQueue(&Queue, &KdqEntries[3].Entry), TRUE);
        KT_EXPECT(IsListEmpty(&Queue.DeviceListHead));
        KT_EXPECT_EQ(Queue.Busy, TRUE); // still busy although empty
        KT_EXPECT_EQ(Queue.Lock, 0);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KeLowerIrql(OldIrql);

        OldIrql = KeRaiseIrqlToDpcLevel();
        KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
        KT_EXPECT_EQ(Queue.Busy, FALSE);
        KeLowerIrql(OldIrql);
    }
}

KTEST(KeDeviceQueue, dispatch_only_routines_bugcheck_at_other_irqls)
{
#if DBG
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, CLOCK_LEVEL};
    KDEVICE_QUEUE Queue;

    for (ULONG l = 0; l < ARRAYSIZE(Levels); l++)
    {
        KIRQL OldIrql;

        KdqReset(&Queue);
        KeRaiseIrql(Levels[l], &OldIrql);
        KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL,
                           KeInsertDeviceQueue(&Queue, &KdqEntries[0].Entry));
        KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL,
                           KeInsertByKeyDeviceQueue(&Queue, &KdqEntries[0].Entry, 1));
        KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL, KeRemoveDeviceQueue(&Queue));
        KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL, KeRemoveByKeyDeviceQueue(&Queue, 1));
        KT_EXPECT_BUGCHECK(IRQL_NOT_DISPATCH_LEVEL, KeRemoveByKeyDeviceQueueIfBusy(&Queue, 1));
        KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[l]);
        KeLowerIrql(OldIrql);
        /* Nothing changed and the lock was never taken. */
        KT_EXPECT_EQ(Queue.Busy, FALSE);
        KT_EXPECT_EQ(Queue.Lock, 0);
        KT_EXPECT_EQ(KdqEntries[0].Entry.Inserted, FALSE);
    }
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeDeviceQueue, remove_from_an_idle_queue_bugchecks_device_queue_not_busy)
{
#if DBG
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_BUGCHECK(DEVICE_QUEUE_NOT_BUSY, KeRemoveDeviceQueue(&Queue));
    KT_EXPECT_BUGCHECK(DEVICE_QUEUE_NOT_BUSY, KeRemoveByKeyDeviceQueue(&Queue, 0));
    KT_EXPECT_EQ(Queue.Lock, 0); // released before the bug check
    KT_EXPECT_EQ(Queue.Busy, FALSE);

    /* The queue still works. */
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[0].Entry), FALSE);
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KeLowerIrql(OldIrql);
#else
    KT_SKIP("checked build only");
#endif
}

/*
 * Entries come from non-zeroed pool: a stale Inserted = TRUE (and garbage
 * links) must not matter to either insert routine, into an idle or a busy
 * queue, in any build (API.md §10; the checked build used to bug-check 0x139).
 */
KTEST(KeDeviceQueue, inserts_ignore_a_stale_inserted_flag)
{
    KDEVICE_QUEUE Queue;
    KIRQL OldIrql;

    KdqReset(&Queue);
    for (ULONG i = 0; i < 4; i++)
    {
        memset(&KdqEntries[i].Entry, 0xa5, sizeof(KdqEntries[i].Entry));
        KdqEntries[i].Entry.Inserted = TRUE;
    }
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[0].Entry), FALSE); // idle: granted
    KT_EXPECT_EQ(KdqEntries[0].Entry.Inserted, FALSE);
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &KdqEntries[1].Entry), TRUE);
    KT_EXPECT_EQ(KeInsertByKeyDeviceQueue(&Queue, &KdqEntries[2].Entry, 7), TRUE);
    KT_EXPECT_EQ(KeInsertByKeyDeviceQueue(&Queue, &KdqEntries[3].Entry, 9), TRUE);
    KT_EXPECT_EQ(Queue.Lock, 0);
    KT_EXPECT_EQ(KdqLength(&Queue), 3);
    /* Entry 1 kept its stale key 0xa5a5a5a5, so keys 7 and 9 sort before it. */
    KT_EXPECT_EQ(KdqId(KeRemoveDeviceQueue(&Queue)), 2);
    KT_EXPECT_EQ(KdqId(KeRemoveDeviceQueue(&Queue)), 3);
    KT_EXPECT_EQ(KdqId(KeRemoveDeviceQueue(&Queue)), 1);
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KT_EXPECT_EQ(Queue.Busy, FALSE);
    /* A fresh stale entry into the now idle queue is granted again. */
    memset(&KdqEntries[0].Entry, 0xff, sizeof(KdqEntries[0].Entry));
    KT_EXPECT_EQ(KeInsertByKeyDeviceQueue(&Queue, &KdqEntries[0].Entry, 1), FALSE);
    KT_EXPECT_EQ(KdqEntries[0].Entry.SortKey, 1);
    KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
    KeLowerIrql(OldIrql);
}

/* ---------------------------------------------------------------- multi-processor */

typedef struct _KDQ_LOCK_TEST
{
    KDEVICE_QUEUE Queue;
    volatile LONG Held;     // processor 1 holds the queue lock
    volatile LONG Released; // ... and is about to release it
    volatile LONG Inserted; // processor 0's insert returned
    BOOLEAN SawReleased;    // what processor 0 read right after its insert
} KDQ_LOCK_TEST;

static VOID
KdqHoldQueueLock(ULONG Index, PVOID Context)
{
    KDQ_LOCK_TEST *Test = Context;

    if (Index == 1)
    {
        KLOCK_QUEUE_HANDLE Handle;

        KeAcquireInStackQueuedSpinLock(&Test->Queue.Lock, &Handle);
        __atomic_store_n(&Test->Held, 1, __ATOMIC_RELEASE);
        KeStallExecutionProcessor(20000);
        KT_EXPECT_EQ(__atomic_load_n(&Test->Inserted, __ATOMIC_ACQUIRE), 0);
        __atomic_store_n(&Test->Released, 1, __ATOMIC_RELEASE);
        KeReleaseInStackQueuedSpinLock(&Handle);
    }
    else if (Index == 0)
    {
        KIRQL OldIrql;
        ULONG64 Spins = 0;

        while (__atomic_load_n(&Test->Held, __ATOMIC_ACQUIRE) == 0 && ++Spins < KDQ_WAIT_SPINS)
        {
            KeStallExecutionProcessor(1);
        }
        KT_ASSERT_EQ(Test->Held, 1);
        OldIrql = KeRaiseIrqlToDpcLevel();
        KT_EXPECT_EQ(KeInsertDeviceQueue(&Test->Queue, &KdqEntries[0].Entry), FALSE);
        Test->SawReleased = (BOOLEAN)__atomic_load_n(&Test->Released, __ATOMIC_ACQUIRE);
        __atomic_store_n(&Test->Inserted, 1, __ATOMIC_RELEASE);
        KT_EXPECT(KeRemoveDeviceQueue(&Test->Queue) == NULL);
        KeLowerIrql(OldIrql);
    }
}

/* The routines take DeviceQueue->Lock as an in-stack queued lock: they wait for a queued holder. */
KTEST_EX(KeDeviceQueue, routines_take_the_lock_as_a_queued_lock, KTEST_SMP_ONLY, 0)
{
    KDQ_LOCK_TEST Test;

    memset(&Test, 0, sizeof(Test));
    KdqReset(&Test.Queue);
    KtRunOnProcessors(2, KdqHoldQueueLock, &Test);
    KT_EXPECT_EQ(Test.SawReleased, TRUE);
    KT_EXPECT_EQ(Test.Queue.Lock, 0);
    KT_EXPECT_EQ(Test.Queue.Busy, FALSE);
}

typedef struct _KDQ_RACE
{
    KDEVICE_QUEUE Queue;
    KDQ_ENTRY *Entries[MAXIMUM_PROCESSORS]; // KDQ_SMP_ENTRIES per processor
    volatile LONG Processed;
    volatile LONG Grants;
    volatile LONG Handoffs;         // entries an owner dequeued
    volatile LONG Plugged;          // processors whose first insert found the plugged queue busy
    volatile LONG Released;         // processor 0 has handed the plugged entries out: race on
    KDQ_ENTRY Plug;                 // granted before the race: the device starts busy
    ULONG64 Deadline;               // performance counter: stop inserting (set before Released)
    ULONG Used[MAXIMUM_PROCESSORS]; // entries each processor inserted
} KDQ_RACE;

/* Drains the queue as the device's owner until it idles; counts each entry handed out. */
static VOID
KdqDrain(KDQ_RACE *Race, BOOLEAN ByKey)
{
    PKDEVICE_QUEUE_ENTRY Next;

    while ((Next = ByKey ? KeRemoveByKeyDeviceQueue(&Race->Queue, (ULONG)KtRandom() % 7)
                         : KeRemoveDeviceQueue(&Race->Queue)) != NULL)
    {
        KT_EXPECT_EQ(Next->Inserted, FALSE);
        InterlockedIncrement(&Race->Handoffs);
        InterlockedIncrement(&CONTAINING_RECORD(Next, KDQ_ENTRY, Entry)->Done);
        KeStallExecutionProcessor((ULONG)KtRandom() % 10);
    }
}

static ULONG64
KdqDeadlineAfter(ULONG Ms)
{
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;

    return Now + (ULONG64)Frequency.QuadPart / 1000 * Ms;
}

/*
 * Phase 1, before the race: processor 0 owns the plugged device until every
 * other processor's first entry is queued behind it, then hands those out, so
 * hand-offs happen on every run however the host schedules the processors.
 * The others wait for that before going on, and the race proper is unchanged.
 */
static VOID
KdqReleasePlug(KDQ_RACE *Race)
{
    KIRQL OldIrql;

    KT_EXPECT(KtWaitForLongAtLeast(&Race->Plugged, (LONG)KeQueryActiveProcessorCount(NULL) - 1,
                                   KT_WAIT_MS));
    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    KdqDrain(Race, FALSE);
    KeLowerIrql(OldIrql);
    Race->Deadline = KdqDeadlineAfter(KDQ_RACE_MS);
    __atomic_store_n(&Race->Released, 1, __ATOMIC_RELEASE); // pairs with KtWaitFor*'s reads
}

static VOID
KdqRaceRoutine(ULONG Index, PVOID Context)
{
    KDQ_RACE *Race = Context;
    KDQ_ENTRY *Mine = Race->Entries[Index];

    if (Index == 0)
    {
        KdqReleasePlug(Race);
    }
    ULONG i;

    for (i = 0; i < KDQ_SMP_ENTRIES; i++)
    {
        KIRQL OldIrql;
        BOOLEAN Queued;

        /* Acquire: pairs with the Released store; Deadline was written before it. */
        if (i >= KDQ_SMP_MIN_ENTRIES && __atomic_load_n(&Race->Released, __ATOMIC_ACQUIRE) &&
            (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart >= Race->Deadline)
        {
            break;
        }
        OldIrql = KeRaiseIrqlToDpcLevel();

        if (i & 1)
        {
            Queued = KeInsertByKeyDeviceQueue(&Race->Queue, &Mine[i].Entry, (ULONG)KtRandom() % 7);
        }
        else
        {
            Queued = KeInsertDeviceQueue(&Race->Queue, &Mine[i].Entry);
        }
        if (i == 0 && Index != 0)
        {
            KT_EXPECT(Queued); // processor 0 still holds the plugged device
            InterlockedIncrement(&Race->Plugged);
            KeLowerIrql(OldIrql);
            KT_EXPECT(KtWaitForLongAtLeast(&Race->Released, 1, KT_WAIT_MS));
            continue;
        }
        if (!Queued)
        {
            InterlockedIncrement(&Race->Grants);
            InterlockedIncrement(&Mine[i].Done);
            KeStallExecutionProcessor((ULONG)KtRandom() % 20); // the device works a while
            KdqDrain(Race, (i & 2) != 0);
        }
        KeLowerIrql(OldIrql);
    }
    Race->Used[Index] = i;
}

KTEST_EX(KeDeviceQueue, busy_protocol_hands_every_entry_out_once_from_all_processors,
         KTEST_SMP_ONLY, 0)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    KDQ_RACE *Race = ExAllocatePoolWithTag(NonPagedPool, sizeof(*Race), KDQ_POOL_TAG);
    LONG Total = 0;
    KIRQL OldIrql;

    KT_ASSERT(Race != NULL);
    memset(Race, 0, sizeof(*Race));
    KeInitializeDeviceQueue(&Race->Queue);
    for (ULONG p = 0; p < Count; p++)
    {
        Race->Entries[p] =
            ExAllocatePoolWithTag(NonPagedPool, KDQ_SMP_ENTRIES * sizeof(KDQ_ENTRY), KDQ_POOL_TAG);
        KT_ASSERT(Race->Entries[p] != NULL);
        memset(Race->Entries[p], 0, KDQ_SMP_ENTRIES * sizeof(KDQ_ENTRY));
    }
    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    KT_EXPECT_EQ(KeInsertDeviceQueue(&Race->Queue, &Race->Plug.Entry), FALSE); // the plug
    KeLowerIrql(OldIrql);

    KtRunOnProcessors(0, KdqRaceRoutine, Race);

    for (ULONG p = 0; p < Count; p++)
    {
        KT_EXPECT_GE(Race->Used[p], KDQ_SMP_MIN_ENTRIES);
        Total += (LONG)Race->Used[p];
    }
    KT_EXPECT_EQ(Race->Grants + Race->Handoffs, Total);
    KT_EXPECT_GE(Race->Handoffs, (LONG)Count - 1); // at least the entries queued on the plug
    KT_EXPECT_EQ(Race->Queue.Busy, FALSE);
    KT_EXPECT(IsListEmpty(&Race->Queue.DeviceListHead));
    KT_EXPECT_EQ(Race->Queue.Lock, 0);
    for (ULONG p = 0; p < Count; p++)
    {
        ULONG Wrong = 0;
        for (ULONG i = 0; i < KDQ_SMP_ENTRIES; i++)
        {
            LONG Expected = i < Race->Used[p] ? 1 : 0; // entries past the deadline never went in
            Wrong += Race->Entries[p][i].Done != Expected || Race->Entries[p][i].Entry.Inserted;
        }
        KT_EXPECT_EQ(Wrong, 0);
        ExFreePoolWithTag(Race->Entries[p], KDQ_POOL_TAG);
    }
    KtLog("%ld grants, %ld hand-offs on %u processors in about %u ms", (long)Race->Grants,
          (long)Race->Handoffs, Count, KDQ_RACE_MS);
    ExFreePoolWithTag(Race, KDQ_POOL_TAG);
}
