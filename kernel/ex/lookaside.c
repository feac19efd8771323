/* SPDX-License-Identifier: MIT */
/*
 * Nonpaged lookaside lists: a lock-free SLIST cache of equal-sized blocks in
 * front of an allocator (pool by default). Allocation pops a cached block or
 * falls back to Allocate; freeing pushes the block while fewer than Depth are
 * cached, else gives it to Free. Spindle has no balance-set manager, so Depth
 * stays where initialisation put it. The counters are updated atomically, so
 * they are exact even under contention.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"

#define EXP_LOOKASIDE_DEFAULT_DEPTH 256 // Windows' MaximumDepth; no dynamic tuning here

static VOID
ExpFreeLookasidePool(PVOID Buffer)
{
    ExFreePool(Buffer);
}

static inline VOID
ExpCount(ULONG *Counter)
{
    __atomic_add_fetch(Counter, 1, __ATOMIC_RELAXED);
}

/*
 * Initialises Lookaside for blocks of Size bytes (at least an SLIST_ENTRY:
 * smaller sizes are raised to 16) tagged Tag, from Allocate / to Free (NULL:
 * ExAllocatePoolWithTag / ExFreePool). Flags is ignored. Depth: the most
 * blocks cached, 0 = 256. IRQL <= DISPATCH_LEVEL.
 */
VOID
ExInitializeNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside, PALLOCATE_FUNCTION Allocate,
                                PFREE_FUNCTION Free, ULONG Flags, SIZE_T Size, ULONG Tag,
                                USHORT Depth)
{
    (void)Flags;
    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    InitializeSListHead(&Lookaside->ListHead);
    Lookaside->Depth = Depth != 0 ? Depth : EXP_LOOKASIDE_DEFAULT_DEPTH;
    Lookaside->MaximumDepth = Lookaside->Depth > EXP_LOOKASIDE_DEFAULT_DEPTH
                                  ? Lookaside->Depth
                                  : EXP_LOOKASIDE_DEFAULT_DEPTH;
    Lookaside->TotalAllocates = 0;
    Lookaside->AllocateMisses = 0;
    Lookaside->TotalFrees = 0;
    Lookaside->FreeMisses = 0;
    Lookaside->Type = NonPagedPool;
    Lookaside->Tag = Tag;
    Lookaside->Size = (ULONG)(Size < sizeof(SLIST_ENTRY) ? sizeof(SLIST_ENTRY) : Size);
    Lookaside->Allocate = Allocate != NULL ? Allocate : ExAllocatePoolWithTag;
    Lookaside->Free = Free != NULL ? Free : ExpFreeLookasidePool;
    InitializeListHead(&Lookaside->ListEntry);
    Lookaside->LastTotalAllocates = 0;
    Lookaside->LastAllocateMisses = 0;
    Lookaside->Future[0] = 0;
    Lookaside->Future[1] = 0;
}

/* Gives every cached block to Free; the list must not be used again. IRQL <= DISPATCH_LEVEL. */
VOID
ExDeleteNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside)
{
    PSLIST_ENTRY Entry = InterlockedFlushSList(&Lookaside->ListHead);

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    while (Entry != NULL)
    {
        PSLIST_ENTRY Next = Entry->Next;
        Lookaside->Free(Entry);
        Entry = Next;
    }
}

/*
 * Returns a cached block, else a new one from Allocate(Type, Size, Tag), else
 * NULL. IRQL <= DISPATCH_LEVEL.
 */
PVOID
ExAllocateFromNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside)
{
    PVOID Entry;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    ExpCount(&Lookaside->TotalAllocates);
    Entry = InterlockedPopEntrySList(&Lookaside->ListHead);
    if (Entry == NULL)
    {
        ExpCount(&Lookaside->AllocateMisses);
        Entry = Lookaside->Allocate(Lookaside->Type, Lookaside->Size, Lookaside->Tag);
    }
    return Entry;
}

/*
 * Caches Entry (a block of this list), or gives it to Free when Depth blocks
 * are cached already. IRQL <= DISPATCH_LEVEL.
 */
VOID
ExFreeToNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside, PVOID Entry)
{
    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    ExpCount(&Lookaside->TotalFrees);
    if (QueryDepthSList(&Lookaside->ListHead) >= Lookaside->Depth)
    {
        ExpCount(&Lookaside->FreeMisses);
        Lookaside->Free(Entry);
        return;
    }
    InterlockedPushEntrySList(&Lookaside->ListHead, (PSLIST_ENTRY)Entry);
}
