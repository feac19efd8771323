/* SPDX-License-Identifier: MIT */
/*
 * Device queues, API.md §10. Busy means "the device owns a request": an insert
 * into a queue that is not busy grants the entry at once (nothing is queued),
 * and a removal from an empty busy queue makes it idle. The queue's Lock is
 * taken as an in-stack queued (MCS) lock inside these routines only, always at
 * DISPATCH_LEVEL, so the list, Busy and every entry's Inserted change together.
 *
 * Checked builds (DBG) bug-check on misuse, after dropping the queue lock so
 * that a caught bug check leaves the queue usable:
 *   0x2   DEVICE_QUEUE_NOT_BUSY   KeRemove(ByKey)DeviceQueue on an idle queue (P1 = queue)
 *   0x8   IRQL_NOT_DISPATCH_LEVEL a DL-only routine below or above DL (P1 = queue, P2 = IRQL)
 * The insert routines never read an entry's incoming Inserted flag or links:
 * drivers insert entries from non-zeroed pool, and Windows accepts them.
 */
#include "kernel/ke/ke.h"

#if DBG
/* Bug-checks 0x2 if the queue is idle; drops the lock first. */
static VOID
KiCheckBusy(PKDEVICE_QUEUE DeviceQueue, PKLOCK_QUEUE_HANDLE LockHandle)
{
    if (!DeviceQueue->Busy)
    {
        KeReleaseInStackQueuedSpinLockFromDpcLevel(LockHandle);
        KeBugCheckEx(DEVICE_QUEUE_NOT_BUSY, (ULONG_PTR)DeviceQueue, 0, 0, 0);
    }
}
#else
#define KiCheckBusy(DeviceQueue, Handle) ((void)0)
#endif

/*
 * Grants Entry if the queue is idle (Busy becomes TRUE, returns FALSE); else
 * leaves it to the caller to link it and returns TRUE. Caller holds the lock.
 */
static BOOLEAN
KiGrantOrQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY Entry)
{
    if (!DeviceQueue->Busy)
    {
        DeviceQueue->Busy = TRUE;
        Entry->Inserted = FALSE;
        return FALSE;
    }
    Entry->Inserted = TRUE;
    return TRUE;
}

/*
 * Unlinks and returns the first entry whose key is >= SortKey, or the head if
 * every key is smaller (API.md §10; not ReactOS's rule, §13.1). An empty queue
 * becomes idle and NULL is returned. Caller holds the lock; the queue is busy.
 */
static PKDEVICE_QUEUE_ENTRY
KiRemoveByKeyLocked(PKDEVICE_QUEUE DeviceQueue, ULONG SortKey)
{
    PLIST_ENTRY Head = &DeviceQueue->DeviceListHead;
    PLIST_ENTRY Link;
    PKDEVICE_QUEUE_ENTRY Entry;

    if (IsListEmpty(Head))
    {
        DeviceQueue->Busy = FALSE;
        return NULL;
    }
    Entry = CONTAINING_RECORD(Head->Flink, KDEVICE_QUEUE_ENTRY, DeviceListEntry);
    for (Link = Head->Flink; Link != Head; Link = Link->Flink)
    {
        PKDEVICE_QUEUE_ENTRY Candidate =
            CONTAINING_RECORD(Link, KDEVICE_QUEUE_ENTRY, DeviceListEntry);
        if (Candidate->SortKey >= SortKey)
        {
            Entry = Candidate;
            break;
        }
    }
    RemoveEntryList(&Entry->DeviceListEntry);
    Entry->Inserted = FALSE;
    return Entry;
}

/*
 * Initialises DeviceQueue: Type = DeviceQueueObject, Size = 40, empty list,
 * Lock free, not busy. Writes nothing beyond the structure. IRQL <= DISPATCH_LEVEL.
 */
VOID
KeInitializeDeviceQueue(PKDEVICE_QUEUE DeviceQueue)
{
    KiCheckIrqlAtMost(DISPATCH_LEVEL, DeviceQueue);

    DeviceQueue->Type = DeviceQueueObject;
    DeviceQueue->Size = sizeof(KDEVICE_QUEUE);
    InitializeListHead(&DeviceQueue->DeviceListHead);
    KeInitializeSpinLock(&DeviceQueue->Lock);
    DeviceQueue->Busy = FALSE;
}

/*
 * Idle queue: marks it busy and returns FALSE (Entry granted, not queued).
 * Busy queue: links Entry at the tail and returns TRUE. IRQL DISPATCH_LEVEL;
 * takes the queue lock.
 */
BOOLEAN
KeInsertDeviceQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY DeviceQueueEntry)
{
    KLOCK_QUEUE_HANDLE LockHandle;
    BOOLEAN Queued;

    KiCheckIrqlIsDispatch(DeviceQueue);
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&DeviceQueue->Lock, &LockHandle);
    Queued = KiGrantOrQueue(DeviceQueue, DeviceQueueEntry);
    if (Queued)
    {
        KiInject(KiInjectDeviceQueueBusy);
        InsertTailList(&DeviceQueue->DeviceListHead, &DeviceQueueEntry->DeviceListEntry);
    }
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&LockHandle);
    return Queued;
}

/*
 * As KeInsertDeviceQueue, but stores SortKey in the entry and, when the queue
 * is busy, links it in ascending key order after every entry with an equal key
 * (FIFO among equals). IRQL DISPATCH_LEVEL.
 */
BOOLEAN
KeInsertByKeyDeviceQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY DeviceQueueEntry,
                         ULONG SortKey)
{
    KLOCK_QUEUE_HANDLE LockHandle;
    BOOLEAN Queued;

    KiCheckIrqlIsDispatch(DeviceQueue);
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&DeviceQueue->Lock, &LockHandle);
    DeviceQueueEntry->SortKey = SortKey;
    Queued = KiGrantOrQueue(DeviceQueue, DeviceQueueEntry);
    if (Queued)
    {
        PLIST_ENTRY Head = &DeviceQueue->DeviceListHead;
        PLIST_ENTRY Previous;

        KiInject(KiInjectDeviceQueueBusy);
        Previous = Head->Blink;
        /* Walk back from the tail to the last entry whose key is <= SortKey. */
        while (Previous != Head &&
               CONTAINING_RECORD(Previous, KDEVICE_QUEUE_ENTRY, DeviceListEntry)->SortKey > SortKey)
        {
            Previous = Previous->Blink;
        }
        InsertHeadList(Previous, &DeviceQueueEntry->DeviceListEntry); // i.e. right after Previous
    }
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&LockHandle);
    return Queued;
}

/*
 * Unlinks and returns the head entry (Inserted = FALSE; the queue stays busy),
 * or, if the queue is empty, makes it idle and returns NULL. IRQL
 * DISPATCH_LEVEL; the queue must be busy (checked build: 0x2).
 */
PKDEVICE_QUEUE_ENTRY
KeRemoveDeviceQueue(PKDEVICE_QUEUE DeviceQueue)
{
    KLOCK_QUEUE_HANDLE LockHandle;
    PKDEVICE_QUEUE_ENTRY Entry = NULL;

    KiCheckIrqlIsDispatch(DeviceQueue);
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&DeviceQueue->Lock, &LockHandle);
    KiCheckBusy(DeviceQueue, &LockHandle);
    if (IsListEmpty(&DeviceQueue->DeviceListHead))
    {
        DeviceQueue->Busy = FALSE;
    }
    else
    {
        PLIST_ENTRY Link = RemoveHeadList(&DeviceQueue->DeviceListHead);
        Entry = CONTAINING_RECORD(Link, KDEVICE_QUEUE_ENTRY, DeviceListEntry);
        Entry->Inserted = FALSE;
    }
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&LockHandle);
    return Entry;
}

/*
 * As KeRemoveDeviceQueue, but returns the first entry with key >= SortKey, or
 * the head if every key is smaller. IRQL DISPATCH_LEVEL; the queue must be busy.
 */
PKDEVICE_QUEUE_ENTRY
KeRemoveByKeyDeviceQueue(PKDEVICE_QUEUE DeviceQueue, ULONG SortKey)
{
    KLOCK_QUEUE_HANDLE LockHandle;
    PKDEVICE_QUEUE_ENTRY Entry;

    KiCheckIrqlIsDispatch(DeviceQueue);
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&DeviceQueue->Lock, &LockHandle);
    KiCheckBusy(DeviceQueue, &LockHandle);
    Entry = KiRemoveByKeyLocked(DeviceQueue, SortKey);
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&LockHandle);
    return Entry;
}

/*
 * Idle queue: returns NULL and changes nothing (no error). Busy queue: exactly
 * KeRemoveByKeyDeviceQueue. IRQL DISPATCH_LEVEL.
 */
PKDEVICE_QUEUE_ENTRY
KeRemoveByKeyDeviceQueueIfBusy(PKDEVICE_QUEUE DeviceQueue, ULONG SortKey)
{
    KLOCK_QUEUE_HANDLE LockHandle;
    PKDEVICE_QUEUE_ENTRY Entry = NULL;

    KiCheckIrqlIsDispatch(DeviceQueue);
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&DeviceQueue->Lock, &LockHandle);
    if (DeviceQueue->Busy)
    {
        Entry = KiRemoveByKeyLocked(DeviceQueue, SortKey);
    }
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&LockHandle);
    return Entry;
}

/*
 * If Entry is queued, unlinks it (Inserted = FALSE) and returns TRUE; else
 * returns FALSE. Never changes Busy, even when the queue becomes empty.
 * IRQL <= DISPATCH_LEVEL, unchanged: raises to DISPATCH_LEVEL around the lock.
 */
BOOLEAN
KeRemoveEntryDeviceQueue(PKDEVICE_QUEUE DeviceQueue, PKDEVICE_QUEUE_ENTRY DeviceQueueEntry)
{
    KLOCK_QUEUE_HANDLE LockHandle;
    BOOLEAN Removed = FALSE;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, DeviceQueue);

    KeAcquireInStackQueuedSpinLock(&DeviceQueue->Lock, &LockHandle);
    if (DeviceQueueEntry->Inserted)
    {
        RemoveEntryList(&DeviceQueueEntry->DeviceListEntry);
        DeviceQueueEntry->Inserted = FALSE;
        Removed = TRUE;
    }
    KeReleaseInStackQueuedSpinLock(&LockHandle);
    return Removed;
}
