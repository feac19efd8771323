/* SPDX-License-Identifier: MIT */
/*
 * Nonpaged lookaside lists: a lock-free SLIST cache of equal-sized blocks in
 * front of an allocator (pool by default). Allocation pops a cached block or
 * falls back to Allocate; freeing pushes the block while fewer than Depth are
 * cached, else gives it to Free. The counters are updated atomically, so they
 * are exact even under contention.
 *
 * Depth is tuned as Windows' balance-set manager does: every list is on
 * ExpLookasideListHead, and once a second (a periodic timer DPC) the tuner
 * looks at each list's allocations and misses since its last scan:
 *   fewer than EXP_LOOKASIDE_BUSY_ALLOCATES  the list is barely used: give back
 *                                            EXP_LOOKASIDE_IDLE_STEP of depth
 *   miss rate below EXP_LOOKASIDE_LOW_MISSES  the cache is big enough: one less
 *   otherwise                                 grow in proportion to the miss rate
 *                                            and the room left below MaximumDepth
 * always within [EXP_LOOKASIDE_MINIMUM_DEPTH, MaximumDepth]. A list starts at
 * the minimum whatever depth its creator asked for (Windows ignores it too).
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"

#define EXP_LOOKASIDE_BUSY_ALLOCATES 75 // per scan period: below it a list counts as idle
#define EXP_LOOKASIDE_IDLE_STEP      10 // depth an idle list gives back per scan
#define EXP_LOOKASIDE_LOW_MISSES     5  // per mille: below it the depth shrinks by one
#define EXP_LOOKASIDE_RAISE_BASE     5  // the smallest raise of a list that misses

/* Every initialised, not yet deleted list; guarded by ExpLookasideLock. */
static LIST_ENTRY ExpLookasideListHead = {&ExpLookasideListHead, &ExpLookasideListHead};
static KSPIN_LOCK ExpLookasideLock;
static KTIMER ExpLookasideTimer;
static KDPC ExpLookasideDpc;
volatile ULONG64 ExpLookasideScans;

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

/* The size handed to Allocate: room for the cache link at least. */
static SIZE_T
ExpLookasideBlockSize(PGENERAL_LOOKASIDE L)
{
    return L->Size < sizeof(SLIST_ENTRY) ? sizeof(SLIST_ENTRY) : L->Size;
}

/* A list whose blocks are plain pool blocks of its tag (the harness's leak check counts them). */
static BOOLEAN
ExpIsPoolBacked(PGENERAL_LOOKASIDE L)
{
    return L->Allocate == ExAllocatePoolWithTag && L->Free == ExpFreeLookasidePool;
}

/* Pops a cached block, counting the allocation and a miss; NULL if none is cached. */
static PVOID
ExpPopLookaside(PGENERAL_LOOKASIDE L)
{
    PVOID Entry;

    ExpCount(&L->TotalAllocates);
    Entry = InterlockedPopEntrySList(&L->ListHead);
    if (Entry == NULL)
    {
        ExpCount(&L->AllocateMisses);
    }
    return Entry;
}

/* Caches Entry while fewer than Depth blocks are cached, counting the free and a miss. */
static BOOLEAN
ExpPushLookaside(PGENERAL_LOOKASIDE L, PVOID Entry)
{
    ExpCount(&L->TotalFrees);
    /* Relaxed: the tuner may change Depth at any time; either value is a valid limit. */
    if (QueryDepthSList(&L->ListHead) >= __atomic_load_n(&L->Depth, __ATOMIC_RELAXED))
    {
        ExpCount(&L->FreeMisses);
        return FALSE;
    }
    InterlockedPushEntrySList(&L->ListHead, (PSLIST_ENTRY)Entry);
    return TRUE;
}

USHORT
ExpComputeLookasideDepth(USHORT Depth, USHORT MaximumDepth, ULONG Allocates, ULONG Misses)
{
    ULONG Minimum = EXP_LOOKASIDE_MINIMUM_DEPTH;
    ULONG Maximum = MaximumDepth < Minimum ? Minimum : MaximumDepth;
    ULONG Current = Depth < Minimum ? Minimum : (Depth > Maximum ? Maximum : Depth);
    ULONG64 Rate;
    ULONG64 Raise;

    if (Allocates < EXP_LOOKASIDE_BUSY_ALLOCATES)
    {
        return (USHORT)(Current > Minimum + EXP_LOOKASIDE_IDLE_STEP
                            ? Current - EXP_LOOKASIDE_IDLE_STEP
                            : Minimum);
    }
    Rate = (ULONG64)(Misses > Allocates ? Allocates : Misses) * 1000 / Allocates; // per mille
    if (Rate < EXP_LOOKASIDE_LOW_MISSES)
    {
        return (USHORT)(Current > Minimum ? Current - 1 : Minimum);
    }
    Raise = Rate * (Maximum - Current) / 2000 + EXP_LOOKASIDE_RAISE_BASE;
    return (USHORT)(Current + Raise > Maximum ? Maximum : Current + Raise);
}

/* One tuner pass over every list; the periodic DPC, at DISPATCH_LEVEL. */
static VOID
ExpScanLookasideLists(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    KiAcquireSpinLock(&ExpLookasideLock);
    for (PLIST_ENTRY Entry = ExpLookasideListHead.Flink; Entry != &ExpLookasideListHead;
         Entry = Entry->Flink)
    {
        PGENERAL_LOOKASIDE L = CONTAINING_RECORD(Entry, GENERAL_LOOKASIDE, ListEntry);
        ULONG Allocates = __atomic_load_n(&L->TotalAllocates, __ATOMIC_RELAXED);
        ULONG Misses = __atomic_load_n(&L->AllocateMisses, __ATOMIC_RELAXED);
        USHORT Depth =
            ExpComputeLookasideDepth(L->Depth, L->MaximumDepth, Allocates - L->LastTotalAllocates,
                                     Misses - L->LastAllocateMisses);

        L->LastTotalAllocates = Allocates;
        L->LastAllocateMisses = Misses;
        __atomic_store_n(&L->Depth, Depth, __ATOMIC_RELAXED); // read racily by frees
    }
    KiReleaseSpinLock(&ExpLookasideLock);
    __atomic_add_fetch(&ExpLookasideScans, 1, __ATOMIC_RELAXED);
}

INIT_CODE VOID
ExpInitializeLookaside(VOID)
{
    LARGE_INTEGER DueTime = {.QuadPart = -(LONG64)EXP_LOOKASIDE_SCAN_MS * 10000};

    KeInitializeSpinLock(&ExpLookasideLock);
    KeInitializeTimerEx(&ExpLookasideTimer, NotificationTimer);
    KeInitializeDpc(&ExpLookasideDpc, ExpScanLookasideLists, NULL);
    /* The last processor: out of the way of the tests, which run on processor 0. */
    KeSetTargetProcessorDpc(&ExpLookasideDpc, (CCHAR)(KiActiveProcessorCount - 1));
    KeSetTimerEx(&ExpLookasideTimer, DueTime, EXP_LOOKASIDE_SCAN_MS, &ExpLookasideDpc);
}

VOID
ExpAccountLookasideCache(EXP_POOL_TAG_USAGE *Usage, ULONG Count)
{
    KIRQL OldIrql;

    KeAcquireSpinLock(&ExpLookasideLock, &OldIrql);
    for (PLIST_ENTRY Entry = ExpLookasideListHead.Flink; Entry != &ExpLookasideListHead;
         Entry = Entry->Flink)
    {
        PGENERAL_LOOKASIDE L = CONTAINING_RECORD(Entry, GENERAL_LOOKASIDE, ListEntry);
        LONG64 Cached = QueryDepthSList(&L->ListHead);

        for (ULONG i = 0; ExpIsPoolBacked(L) && Cached != 0 && i < Count; i++)
        {
            if (Usage[i].Tag == L->Tag)
            {
                Usage[i].Allocations -= Cached;
                Usage[i].Bytes -= Cached * (LONG64)ExpLookasideBlockSize(L);
                Usage[i].Cached += Cached;
                break;
            }
        }
    }
    KeReleaseSpinLock(&ExpLookasideLock, OldIrql);
}

/*
 * Initialises Lookaside for blocks of Size bytes tagged Tag, from Allocate /
 * to Free (NULL: ExAllocatePoolWithTag / ExFreePool), and puts it under the
 * tuner. L.Depth = 4 whatever Depth is; L.Type = NonPagedPool | Flags; L.Size =
 * Size as given (a smaller block than an SLIST_ENTRY is allocated as one).
 * IRQL <= DISPATCH_LEVEL.
 */
VOID
ExInitializeNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside, PALLOCATE_FUNCTION Allocate,
                                PFREE_FUNCTION Free, ULONG Flags, SIZE_T Size, ULONG Tag,
                                USHORT Depth)
{
    PGENERAL_LOOKASIDE L = &Lookaside->L;
    KIRQL OldIrql;

    (void)Depth;
    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    InitializeSListHead(&L->ListHead);
    L->Depth = EXP_LOOKASIDE_MINIMUM_DEPTH;
    L->MaximumDepth = EXP_LOOKASIDE_MAXIMUM_DEPTH;
    L->TotalAllocates = 0;
    L->AllocateMisses = 0;
    L->TotalFrees = 0;
    L->FreeMisses = 0;
    /* NonPagedPool is 0; named as the DDK documents the type (NonPagedPool | Flags). */
    // cppcheck-suppress badBitmaskCheck
    L->Type = (POOL_TYPE)(NonPagedPool | Flags);
    L->Tag = Tag;
    L->Size = (ULONG)Size;
    L->Allocate = Allocate != NULL ? Allocate : ExAllocatePoolWithTag;
    L->Free = Free != NULL ? Free : ExpFreeLookasidePool;
    L->LastTotalAllocates = 0;
    L->LastAllocateMisses = 0;
    L->Future[0] = 0;
    L->Future[1] = 0;
    KeAcquireSpinLock(&ExpLookasideLock, &OldIrql);
    InsertTailList(&ExpLookasideListHead, &L->ListEntry);
    KeReleaseSpinLock(&ExpLookasideLock, OldIrql);
}

/*
 * Takes the list from the tuner and gives every cached block to Free; the
 * list must not be used again. IRQL <= DISPATCH_LEVEL.
 */
VOID
ExDeleteNPagedLookasideList(PNPAGED_LOOKASIDE_LIST Lookaside)
{
    PGENERAL_LOOKASIDE L = &Lookaside->L;
    PSLIST_ENTRY Entry;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    KeAcquireSpinLock(&ExpLookasideLock, &OldIrql);
    RemoveEntryList(&L->ListEntry);
    KeReleaseSpinLock(&ExpLookasideLock, OldIrql);
    Entry = InterlockedFlushSList(&L->ListHead);
    while (Entry != NULL)
    {
        PSLIST_ENTRY Next = Entry->Next;
        L->Free(Entry);
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
    PGENERAL_LOOKASIDE L = &Lookaside->L;
    PVOID Entry;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, Lookaside);
    Entry = ExpPopLookaside(L);
    if (Entry == NULL)
    {
        Entry = L->Allocate(L->Type, ExpLookasideBlockSize(L), L->Tag);
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
    if (!ExpPushLookaside(&Lookaside->L, Entry))
    {
        Lookaside->L.Free(Entry);
    }
}

PVOID
ExpPopPerProcessorLookaside(PNPAGED_LOOKASIDE_LIST P, PNPAGED_LOOKASIDE_LIST L)
{
    PVOID Entry = ExpPopLookaside(&P->L);

    return Entry != NULL ? Entry : ExpPopLookaside(&L->L);
}

BOOLEAN
ExpPushPerProcessorLookaside(PNPAGED_LOOKASIDE_LIST P, PNPAGED_LOOKASIDE_LIST L, PVOID Entry)
{
    return ExpPushLookaside(&P->L, Entry) || ExpPushLookaside(&L->L, Entry);
}
