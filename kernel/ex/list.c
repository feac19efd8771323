/* SPDX-License-Identifier: MIT */
/*
 * Interlocked lists, API.md §8.
 *
 * ExInterlocked*List: each call disables interrupts (saving RFLAGS), takes the
 * caller's spin lock WITHOUT changing IRQL, does one list operation with the
 * checked wdm.h helpers, releases, and restores the interrupt flag. So they
 * work at any IRQL, from ISRs too, and return NULL (never the head) for an
 * empty list.
 *
 * SLISTs: a lock-free LIFO whose 16-byte header is replaced as one unit with
 * cmpxchg16b. Low qword: Depth (bits 0-15), Sequence (bits 16-63); high
 * qword: the first entry's address (entries are 16-byte aligned, so its low
 * 4 bits, "Reserved", are 0). Push: Depth + 1, Sequence + 1. Pop: Depth - 1,
 * Sequence kept. Flush: Depth 0, no entry, Sequence kept.
 * ABA: a pop that read first entry A and A->Next = B swaps in B only if the
 * whole header is unchanged. A header showing A again with the same Sequence
 * means nothing was pushed meanwhile; with no push, A cannot have been popped
 * and come back, so B is still A's successor. A stale A->Next read is
 * harmless: Spindle never unmaps memory and the cmpxchg16b then fails.
 * Alignment policy: an entry or header not 16-byte aligned would lose address
 * bits (or fault in cmpxchg16b); the checked build ASSERTs (bug check 0xE2
 * via RtlAssert), the free build trusts MEMORY_ALLOCATION_ALIGNMENT.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"

#define EXP_SLIST_DEPTH_MASK    0xffffull
#define EXP_SLIST_SEQUENCE_ONE  0x10000ull // Sequence + 1 in the low qword
#define EXP_SLIST_ENTRY_MASK    (~0xfull)  // the high qword minus Reserved
#define EXP_POISONED_LIST_ENTRY ((PLIST_ENTRY)0xBADDD0FFBADDD0FFull)

/* ---------------------------------------------------------------- ExInterlocked lists */

/* Links ListEntry first; returns the previous first entry, NULL if the list was empty. Any IRQL. */
PLIST_ENTRY
ExInterlockedInsertHeadList(PLIST_ENTRY ListHead, PLIST_ENTRY ListEntry, PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    PLIST_ENTRY First = ListHead->Flink;

    InsertHeadList(ListHead, ListEntry);
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return First == ListHead ? NULL : First;
}

/* Links ListEntry last; returns the previous last entry, NULL if the list was empty. Any IRQL. */
PLIST_ENTRY
ExInterlockedInsertTailList(PLIST_ENTRY ListHead, PLIST_ENTRY ListEntry, PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    PLIST_ENTRY Last = ListHead->Blink;

    InsertTailList(ListHead, ListEntry);
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return Last == ListHead ? NULL : Last;
}

/*
 * Unlinks and returns the first entry, NULL if the list is empty. Checked
 * build: the removed entry's links are poisoned. Any IRQL.
 */
PLIST_ENTRY
ExInterlockedRemoveHeadList(PLIST_ENTRY ListHead, PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    PLIST_ENTRY Entry = NULL;

    if (!IsListEmpty(ListHead))
    {
        Entry = RemoveHeadList(ListHead);
#if DBG
        Entry->Flink = EXP_POISONED_LIST_ENTRY;
        Entry->Blink = EXP_POISONED_LIST_ENTRY;
#endif
    }
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return Entry;
}

/* Pushes ListEntry; returns the previous first entry, or NULL. Any IRQL. */
PSINGLE_LIST_ENTRY
ExInterlockedPushEntryList(PSINGLE_LIST_ENTRY ListHead, PSINGLE_LIST_ENTRY ListEntry,
                           PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    PSINGLE_LIST_ENTRY First = ListHead->Next;

    PushEntryList(ListHead, ListEntry);
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return First;
}

/* Pops the first entry (its Next left as it was), or returns NULL if empty. Any IRQL. */
PSINGLE_LIST_ENTRY
ExInterlockedPopEntryList(PSINGLE_LIST_ENTRY ListHead, PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    PSINGLE_LIST_ENTRY Entry = PopEntryList(ListHead);

    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return Entry;
}

/* ---------------------------------------------------------------- SLISTs */

static inline volatile uint64_t *
ExpSListWords(PSLIST_HEADER ListHead)
{
    ASSERT(((ULONG_PTR)ListHead & (MEMORY_ALLOCATION_ALIGNMENT - 1)) == 0);
    return (volatile uint64_t *)ListHead;
}

/* Makes SListHead an empty list: all 16 bytes 0. Any IRQL. */
VOID
InitializeSListHead(PSLIST_HEADER SListHead)
{
    volatile uint64_t *Words = ExpSListWords(SListHead);

    Words[0] = 0;
    Words[1] = 0;
}

/*
 * Pushes ListEntry (16-byte aligned) lock-free; Depth + 1, Sequence + 1.
 * Returns the previous first entry, or NULL. Any IRQL; a full barrier.
 */
PSLIST_ENTRY
InterlockedPushEntrySList(PSLIST_HEADER ListHead, PSLIST_ENTRY ListEntry)
{
    volatile uint64_t *Words = ExpSListWords(ListHead);
    uint64_t Low = Words[0];
    uint64_t High = Words[1];

    ASSERT(((ULONG_PTR)ListEntry & (MEMORY_ALLOCATION_ALIGNMENT - 1)) == 0);
    for (;;)
    {
        PSLIST_ENTRY First = (PSLIST_ENTRY)(High & EXP_SLIST_ENTRY_MASK);
        ULONG64 NewLow = ((Low + EXP_SLIST_SEQUENCE_ONE) & ~EXP_SLIST_DEPTH_MASK) |
                         ((Low + 1) & EXP_SLIST_DEPTH_MASK);

        ListEntry->Next = First;
        /*
         * The locked cmpxchg16b orders the Next store before the entry is
         * visible at the head; pairs with the pop's read of First->Next.
         * On failure it reloads Low:High atomically for the retry.
         */
        if (x86_cmpxchg16b(Words, &Low, &High, NewLow, (ULONG64)ListEntry))
        {
            return First;
        }
    }
}

/* Pops the first entry lock-free (Depth - 1); NULL if the list is empty. Any IRQL. */
PSLIST_ENTRY
InterlockedPopEntrySList(PSLIST_HEADER ListHead)
{
    volatile uint64_t *Words = ExpSListWords(ListHead);
    uint64_t Low = Words[0];
    uint64_t High = Words[1];

    for (;;)
    {
        PSLIST_ENTRY First = (PSLIST_ENTRY)(High & EXP_SLIST_ENTRY_MASK);
        PSLIST_ENTRY Next;
        ULONG64 NewLow;

        if (First == NULL)
        {
            return NULL;
        }
        /* May be stale if First was popped meanwhile; the cmpxchg16b below then fails. */
        Next = __atomic_load_n(&First->Next, __ATOMIC_RELAXED);
        NewLow = (Low & ~EXP_SLIST_DEPTH_MASK) | ((Low - 1) & EXP_SLIST_DEPTH_MASK);
        if (x86_cmpxchg16b(Words, &Low, &High, NewLow, (ULONG64)Next))
        {
            return First;
        }
    }
}

/* Empties the list (Depth 0, Sequence kept); returns the old chain, or NULL. Any IRQL. */
PSLIST_ENTRY
InterlockedFlushSList(PSLIST_HEADER ListHead)
{
    volatile uint64_t *Words = ExpSListWords(ListHead);
    uint64_t Low = Words[0];
    uint64_t High = Words[1];

    for (;;)
    {
        PSLIST_ENTRY First = (PSLIST_ENTRY)(High & EXP_SLIST_ENTRY_MASK);

        if (First == NULL)
        {
            return NULL;
        }
        if (x86_cmpxchg16b(Words, &Low, &High, Low & ~EXP_SLIST_DEPTH_MASK, 0))
        {
            return First;
        }
    }
}

/* Returns Depth (a snapshot). Any IRQL. */
USHORT
QueryDepthSList(PSLIST_HEADER SListHead)
{
    return (USHORT)(__atomic_load_n(&ExpSListWords(SListHead)[0], __ATOMIC_RELAXED) &
                    EXP_SLIST_DEPTH_MASK);
}

/* InterlockedPushEntrySList; Lock is ignored (x64). Any IRQL. */
PSLIST_ENTRY
ExInterlockedPushEntrySList(PSLIST_HEADER ListHead, PSLIST_ENTRY ListEntry, PKSPIN_LOCK Lock)
{
    (void)Lock;
    return InterlockedPushEntrySList(ListHead, ListEntry);
}

/* InterlockedPopEntrySList; Lock is ignored (x64). Any IRQL. */
PSLIST_ENTRY
ExInterlockedPopEntrySList(PSLIST_HEADER ListHead, PKSPIN_LOCK Lock)
{
    (void)Lock;
    return InterlockedPopEntrySList(ListHead);
}
