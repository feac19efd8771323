/* SPDX-License-Identifier: MIT */
/*
 * ExLookaside: nonpaged lookaside lists. Initialisation fills the fields as
 * Windows does (Depth 4 whatever depth is asked for, Type = NonPagedPool |
 * Flags, Size as given), a freed block comes back first, the Depth limit
 * sends extra frees to Free, the counters, delete gives every cached block
 * back, every processor allocating and freeing at once never shares a block
 * or leaks one (the harness checks the pool tag), and the tuner's rule and
 * its once-a-second pass raise Depth under misses and lower it when idle.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define LA_TAG        'kLtK'
#define LA_ITERATIONS 3000
#define LA_HELD       4 // blocks each processor holds at once in the contention test

static volatile LONG LaAllocateCalls;
static volatile LONG LaFreeCalls;

static PVOID
LaAllocate(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag)
{
    __atomic_add_fetch(&LaAllocateCalls, 1, __ATOMIC_RELAXED);
    return ExAllocatePoolWithTag(PoolType, NumberOfBytes, Tag);
}

static VOID
LaFree(PVOID Buffer)
{
    __atomic_add_fetch(&LaFreeCalls, 1, __ATOMIC_RELAXED);
    ExFreePoolWithTag(Buffer, LA_TAG);
}

/* The pool's view of Tag: allocations held by callers, and blocks cached in pool-backed lists. */
static EXP_POOL_TAG_USAGE
LaPoolUsage(ULONG Tag)
{
    static EXP_POOL_TAG_USAGE Usage[256];
    EXP_POOL_TAG_USAGE None = {Tag, 0, 0, 0};
    ULONG Count = ExpQueryPoolTags(Usage, 256);

    for (ULONG i = 0; i < Count; i++)
    {
        if (Usage[i].Tag == Tag)
        {
            return Usage[i];
        }
    }
    return None;
}

static LONG64
LaPoolAllocations(ULONG Tag)
{
    return LaPoolUsage(Tag).Allocations;
}

static LONG64
LaPoolCached(ULONG Tag)
{
    return LaPoolUsage(Tag).Cached;
}

KTEST(ExLookaside, initialize_fills_the_fields_as_windows_does)
{
    static NPAGED_LOOKASIDE_LIST Lookaside;
    static const USHORT Depths[] = {0, 7, 300};

    for (ULONG i = 0; i < sizeof(Depths) / sizeof(Depths[0]); i++)
    {
        memset(&Lookaside, 0x55, sizeof(Lookaside));
        ExInitializeNPagedLookasideList(&Lookaside, NULL, NULL, 0, 48, LA_TAG, Depths[i]);
        KT_EXPECT_EQ(QueryDepthSList(&Lookaside.L.ListHead), 0);
        KT_EXPECT_EQ(Lookaside.L.ListHead.Region, 0);
        KT_EXPECT_EQ(Lookaside.L.Depth, 4); // whatever depth was asked for
        KT_EXPECT_EQ(Lookaside.L.MaximumDepth, 256);
        KT_EXPECT_EQ(Lookaside.L.Size, 48);
        KT_EXPECT_EQ(Lookaside.L.Tag, LA_TAG);
        KT_EXPECT_EQ(Lookaside.L.Type, NonPagedPool);
        KT_EXPECT_EQ(Lookaside.L.Allocate, ExAllocatePoolWithTag);
        KT_EXPECT(Lookaside.L.Free != NULL);
        KT_EXPECT_EQ(Lookaside.L.TotalAllocates, 0);
        KT_EXPECT_EQ(Lookaside.L.AllocateMisses, 0);
        KT_EXPECT_EQ(Lookaside.L.TotalFrees, 0);
        KT_EXPECT_EQ(Lookaside.L.FreeMisses, 0);
        KT_EXPECT_EQ(Lookaside.L.LastTotalAllocates, 0);
        KT_EXPECT_EQ(Lookaside.L.LastAllocateMisses, 0);
        ExDeleteNPagedLookasideList(&Lookaside);
    }

    /* Flags are or-ed into Type; the minimum block size (8 on x64) is kept as given. */
    ExInitializeNPagedLookasideList(&Lookaside, LaAllocate, LaFree, POOL_NX_ALLOCATION, 8, LA_TAG,
                                    7);
    KT_EXPECT_EQ(Lookaside.L.Type, NonPagedPool | POOL_NX_ALLOCATION);
    KT_EXPECT_EQ(Lookaside.L.Size, 8);
    KT_EXPECT_EQ(Lookaside.L.Depth, 4);
    KT_EXPECT_EQ(Lookaside.L.Allocate, LaAllocate);
    KT_EXPECT_EQ(Lookaside.L.Free, LaFree);
    /* An 8-byte block still holds the cache link: allocate, free (cached), allocate it again. */
    PVOID Block = ExAllocateFromNPagedLookasideList(&Lookaside);
    KT_EXPECT(Block != NULL);
    if (Block != NULL)
    {
        ExFreeToNPagedLookasideList(&Lookaside, Block);
        KT_EXPECT_EQ(QueryDepthSList(&Lookaside.L.ListHead), 1);
        KT_EXPECT_EQ(ExAllocateFromNPagedLookasideList(&Lookaside), Block);
        ExFreeToNPagedLookasideList(&Lookaside, Block);
    }
    ExDeleteNPagedLookasideList(&Lookaside);
}

KTEST(ExLookaside, freed_block_is_cached_and_handed_out_again)
{
    static NPAGED_LOOKASIDE_LIST Lookaside; // static: a failed check never leaves a stale list
    LONG64 Before = LaPoolAllocations(LA_TAG);
    LONG64 CachedBefore = LaPoolCached(LA_TAG);
    PVOID First, Again;

    ExInitializeNPagedLookasideList(&Lookaside, NULL, NULL, 0, 100, LA_TAG, 0);
    First = ExAllocateFromNPagedLookasideList(&Lookaside);
    KT_EXPECT(First != NULL);
    if (First == NULL)
    {
        ExDeleteNPagedLookasideList(&Lookaside);
        return;
    }
    KT_EXPECT_EQ((ULONG_PTR)First % MEMORY_ALLOCATION_ALIGNMENT, 0);
    KT_EXPECT_EQ(Lookaside.L.TotalAllocates, 1);
    KT_EXPECT_EQ(Lookaside.L.AllocateMisses, 1); // the list was empty: a pool allocation
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before + 1);
    memset(First, 0xab, 100);
    ExFreeToNPagedLookasideList(&Lookaside, First);
    KT_EXPECT_EQ(Lookaside.L.TotalFrees, 1);
    KT_EXPECT_EQ(Lookaside.L.FreeMisses, 0);
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.L.ListHead), 1);
    /* Cached, not freed: still a pool block, but the pool reports it as the list's. */
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before);
    KT_EXPECT_EQ(LaPoolCached(LA_TAG), CachedBefore + 1);
    Again = ExAllocateFromNPagedLookasideList(&Lookaside);
    KT_EXPECT_EQ(Again, First);
    KT_EXPECT_EQ(Lookaside.L.TotalAllocates, 2);
    KT_EXPECT_EQ(Lookaside.L.AllocateMisses, 1); // a hit
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before + 1);
    KT_EXPECT_EQ(LaPoolCached(LA_TAG), CachedBefore);
    ExFreeToNPagedLookasideList(&Lookaside, Again);
    ExDeleteNPagedLookasideList(&Lookaside);
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before); // delete gave it back
    KT_EXPECT_EQ(LaPoolCached(LA_TAG), CachedBefore);
}

KTEST(ExLookaside, frees_beyond_depth_go_to_the_free_routine)
{
    static NPAGED_LOOKASIDE_LIST Lookaside;
    PVOID Blocks[7];
    ULONG Got = 0;

    LaAllocateCalls = 0;
    LaFreeCalls = 0;
    /* Asks for depth 2, gets Windows' 4; the tuner keeps a list this idle at 4. */
    ExInitializeNPagedLookasideList(&Lookaside, LaAllocate, LaFree, 0, 32, LA_TAG, 2);
    while (Got < 7 && (Blocks[Got] = ExAllocateFromNPagedLookasideList(&Lookaside)) != NULL)
    {
        Got++;
    }
    KT_EXPECT_EQ(Got, 7);
    KT_EXPECT_EQ(LaAllocateCalls, 7);
    KT_EXPECT_EQ(Lookaside.L.AllocateMisses, 7);
    for (ULONG i = 0; i < Got; i++)
    {
        ExFreeToNPagedLookasideList(&Lookaside, Blocks[i]);
    }
    KT_EXPECT_EQ(Lookaside.L.Depth, 4);
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.L.ListHead), 4); // Depth blocks kept
    KT_EXPECT_EQ(LaFreeCalls, 3);
    KT_EXPECT_EQ(Lookaside.L.TotalFrees, 7);
    KT_EXPECT_EQ(Lookaside.L.FreeMisses, 3);
    /* The cached four come back (last freed first) without calling Allocate. */
    for (ULONG i = 4; i-- > 0;)
    {
        KT_EXPECT_EQ(ExAllocateFromNPagedLookasideList(&Lookaside), Blocks[i]);
    }
    KT_EXPECT_EQ(LaAllocateCalls, 7);
    for (ULONG i = 0; i < 4; i++)
    {
        ExFreeToNPagedLookasideList(&Lookaside, Blocks[i]);
    }
    ExDeleteNPagedLookasideList(&Lookaside);
    KT_EXPECT_EQ(LaFreeCalls, 7); // delete freed the four cached blocks
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.L.ListHead), 0);
}

static PVOID
LaFailingAllocate(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag)
{
    __atomic_add_fetch(&LaAllocateCalls, 1, __ATOMIC_RELAXED);
    return NULL;
}

KTEST(ExLookaside, allocate_returns_null_when_the_allocator_fails)
{
    static NPAGED_LOOKASIDE_LIST Lookaside;

    LaAllocateCalls = 0;
    ExInitializeNPagedLookasideList(&Lookaside, LaFailingAllocate, LaFree, 0, 64, LA_TAG, 0);
    KT_EXPECT_EQ(ExAllocateFromNPagedLookasideList(&Lookaside), NULL);
    KT_EXPECT_EQ(LaAllocateCalls, 1);
    KT_EXPECT_EQ(Lookaside.L.TotalAllocates, 1);
    KT_EXPECT_EQ(Lookaside.L.AllocateMisses, 1);
    ExDeleteNPagedLookasideList(&Lookaside);
}

/* ---------------------------------------------------------------- contention */

typedef struct _LA_STRESS
{
    NPAGED_LOOKASIDE_LIST Lookaside;
    volatile LONG Corrupted; // a block changed while its holder owned it
    volatile LONG Failed;
} LA_STRESS;

static VOID
LaStressRoutine(ULONG Index, PVOID Context)
{
    LA_STRESS *Test = Context;
    PULONG64 Held[LA_HELD];

    for (ULONG i = 0; i < LA_ITERATIONS; i++)
    {
        ULONG Slot = i % LA_HELD;
        ULONG64 Stamp = ((ULONG64)Index << 32) | i;

        if (i >= LA_HELD)
        {
            ULONG64 Expected = ((ULONG64)Index << 32) | (i - LA_HELD);
            for (ULONG w = 0; w < 8; w++)
            {
                if (Held[Slot][w] != Expected)
                {
                    __atomic_add_fetch(&Test->Corrupted, 1, __ATOMIC_RELAXED);
                    break;
                }
            }
            ExFreeToNPagedLookasideList(&Test->Lookaside, Held[Slot]);
        }
        Held[Slot] = ExAllocateFromNPagedLookasideList(&Test->Lookaside);
        if (Held[Slot] == NULL)
        {
            __atomic_add_fetch(&Test->Failed, 1, __ATOMIC_RELAXED);
            return;
        }
        for (ULONG w = 0; w < 8; w++)
        {
            Held[Slot][w] = Stamp; // the whole block: overwrites any cache link too
        }
    }
    for (ULONG Slot = 0; Slot < LA_HELD; Slot++)
    {
        ExFreeToNPagedLookasideList(&Test->Lookaside, Held[Slot]);
    }
}

KTEST(ExLookaside, blocks_are_never_shared_under_contention)
{
    static LA_STRESS Test;
    ULONG64 Total = (ULONG64)LA_ITERATIONS * KiActiveProcessorCount;
    LONG64 Before = LaPoolAllocations(LA_TAG);
    LONG64 CachedBefore = LaPoolCached(LA_TAG);

    memset(&Test, 0, sizeof(Test));
    ExInitializeNPagedLookasideList(&Test.Lookaside, NULL, NULL, 0, 8 * sizeof(ULONG64), LA_TAG, 8);
    KtRunOnProcessors(0, LaStressRoutine, &Test);
    KtLog("%u allocations, %u misses, %u free misses", Test.Lookaside.L.TotalAllocates,
          Test.Lookaside.L.AllocateMisses, Test.Lookaside.L.FreeMisses);
    KT_EXPECT_EQ(Test.Corrupted, 0);
    KT_EXPECT_EQ(Test.Failed, 0);
    KT_EXPECT_EQ(Test.Lookaside.L.TotalAllocates, Total);
    KT_EXPECT_EQ(Test.Lookaside.L.TotalFrees, Total);
    /* Nothing is held; the pool blocks left are the cached ones (misses minus free misses). */
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before);
    KT_EXPECT_EQ(LaPoolCached(LA_TAG) - CachedBefore,
                 (LONG64)Test.Lookaside.L.AllocateMisses - (LONG64)Test.Lookaside.L.FreeMisses);
    KT_EXPECT_EQ(LaPoolCached(LA_TAG) - CachedBefore,
                 (LONG64)QueryDepthSList(&Test.Lookaside.L.ListHead));
    ExDeleteNPagedLookasideList(&Test.Lookaside);
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before);
    KT_EXPECT_EQ(LaPoolCached(LA_TAG), CachedBefore);
}

/* ---------------------------------------------------------------- the depth tuner */

KTEST(ExLookaside, tuner_rule_raises_on_misses_and_lowers_slowly)
{
    static const struct
    {
        USHORT Depth, MaximumDepth;
        ULONG Allocates, Misses;
        USHORT Expected;
    } Rows[] = {
        {4, 256, 0, 0, 4},           // idle at the floor stays there
        {100, 256, 10, 10, 90},      // idle (fewer than 75 allocations): gives back 10
        {10, 256, 74, 74, 4},        // ... but never below the floor
        {100, 256, 1000, 4, 99},     // busy, misses below 0.5 %: one less
        {4, 256, 1000, 0, 4},        // ... but never below the floor
        {4, 256, 1000, 5, 9},        // 0.5 % misses: the smallest raise, 5
        {4, 256, 1000, 1000, 135},   // all misses: half the room left plus 5
        {4, 256, 1000, 500, 72},     // half misses: a quarter of the room plus 5
        {250, 256, 1000, 1000, 256}, // never above MaximumDepth
        {256, 256, 1000, 1000, 256},
        {2, 256, 0, 0, 4}, // a depth below the floor is read as the floor
    };

    for (ULONG i = 0; i < sizeof(Rows) / sizeof(Rows[0]); i++)
    {
        USHORT Depth = ExpComputeLookasideDepth(Rows[i].Depth, Rows[i].MaximumDepth,
                                                Rows[i].Allocates, Rows[i].Misses);
        if (Depth != Rows[i].Expected)
        {
            KtLog("row %u", i);
        }
        KT_EXPECT_EQ(Depth, Rows[i].Expected);
    }
}

#define LA_TUNER_LIMIT_TICKS 3000 // 30 s of clock ticks: generous, the tuner runs every second
#define LA_TUNER_BATCH       16 // blocks held at once by the workload: 12 misses a batch at depth 4

/* Allocates and frees LA_TUNER_BATCH blocks; FALSE if the pool failed. */
static BOOLEAN
LaMissingBatch(PNPAGED_LOOKASIDE_LIST Lookaside)
{
    PVOID Blocks[LA_TUNER_BATCH];
    ULONG Got = 0;

    while (Got < LA_TUNER_BATCH &&
           (Blocks[Got] = ExAllocateFromNPagedLookasideList(Lookaside)) != NULL)
    {
        Got++;
    }
    for (ULONG i = 0; i < Got; i++)
    {
        ExFreeToNPagedLookasideList(Lookaside, Blocks[i]);
    }
    return Got == LA_TUNER_BATCH;
}

KTEST_EX(ExLookaside, tuner_raises_depth_under_misses_and_lowers_it_when_idle, KTEST_SLOW, 0)
{
    static NPAGED_LOOKASIDE_LIST Lookaside;
    ULONG64 TestStart = KiTickCount, Scans = ExpLookasideScans, Start = TestStart;
    ULONG64 PeriodTicks = EXP_LOOKASIDE_SCAN_MS * 1000ull / KI_CLOCK_PERIOD_US;
    USHORT Peak;
    BOOLEAN PoolOk = TRUE;

    ExInitializeNPagedLookasideList(&Lookaside, NULL, NULL, 0, 64, LA_TAG, 0);
    while (PoolOk && Lookaside.L.Depth == EXP_LOOKASIDE_MINIMUM_DEPTH &&
           KiTickCount - Start < LA_TUNER_LIMIT_TICKS)
    {
        PoolOk = LaMissingBatch(&Lookaside);
    }
    KT_EXPECT(PoolOk);
    Peak = Lookaside.L.Depth;
    KtLog("depth %u after %llu ticks, %u allocations, %u misses", Peak, KiTickCount - Start,
          Lookaside.L.TotalAllocates, Lookaside.L.AllocateMisses);
    KT_EXPECT_GT(Peak, EXP_LOOKASIDE_MINIMUM_DEPTH);
    KT_EXPECT_LE(Peak, Lookaside.L.MaximumDepth);

    /* Idle now: the next pass gives depth back. */
    Start = KiTickCount;
    while (Lookaside.L.Depth >= Peak && KiTickCount - Start < LA_TUNER_LIMIT_TICKS)
    {
        x86_pause();
    }
    KtLog("depth %u after %llu idle ticks", Lookaside.L.Depth, KiTickCount - Start);
    KT_EXPECT_LT(Lookaside.L.Depth, Peak);
    KT_EXPECT_GE(Lookaside.L.Depth, EXP_LOOKASIDE_MINIMUM_DEPTH);
    ExDeleteNPagedLookasideList(&Lookaside);

    /*
     * A bounded rate: the timer expires at most once per period in the window,
     * plus the pass of an expiry just before it whose DPC had not run yet.
     */
    KT_EXPECT_LE(ExpLookasideScans - Scans, (KiTickCount - TestStart) / PeriodTicks + 2);
}
