/* SPDX-License-Identifier: MIT */
/*
 * ExLookaside: nonpaged lookaside lists. Initialisation (defaults for Depth
 * and the allocator), a freed block coming back first, the Depth limit
 * sending extra frees to Free, the counters, delete giving every cached
 * block back, and every processor allocating and freeing at once without a
 * block being handed out twice or leaking (the harness checks the pool tag).
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

static LONG64
LaPoolAllocations(ULONG Tag)
{
    static EXP_POOL_TAG_USAGE Usage[256];
    ULONG Count = ExpQueryPoolTags(Usage, 256);

    for (ULONG i = 0; i < Count; i++)
    {
        if (Usage[i].Tag == Tag)
        {
            return Usage[i].Allocations;
        }
    }
    return 0;
}

KTEST(ExLookaside, initialize_sets_defaults)
{
    NPAGED_LOOKASIDE_LIST Lookaside;

    memset(&Lookaside, 0x55, sizeof(Lookaside));
    ExInitializeNPagedLookasideList(&Lookaside, NULL, NULL, 0, 48, LA_TAG, 0);
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.ListHead), 0);
    KT_EXPECT_EQ(Lookaside.ListHead.Region, 0);
    KT_EXPECT_EQ(Lookaside.Depth, 256);
    KT_EXPECT_GE(Lookaside.MaximumDepth, Lookaside.Depth);
    KT_EXPECT_EQ(Lookaside.Size, 48);
    KT_EXPECT_EQ(Lookaside.Tag, LA_TAG);
    KT_EXPECT_EQ(Lookaside.Type, NonPagedPool);
    KT_EXPECT_EQ(Lookaside.Allocate, ExAllocatePoolWithTag);
    KT_EXPECT(Lookaside.Free != NULL);
    KT_EXPECT_EQ(Lookaside.TotalAllocates, 0);
    KT_EXPECT_EQ(Lookaside.AllocateMisses, 0);
    KT_EXPECT_EQ(Lookaside.TotalFrees, 0);
    KT_EXPECT_EQ(Lookaside.FreeMisses, 0);
    ExDeleteNPagedLookasideList(&Lookaside);

    ExInitializeNPagedLookasideList(&Lookaside, LaAllocate, LaFree, 0, 4, LA_TAG, 7);
    KT_EXPECT_EQ(Lookaside.Depth, 7);
    KT_EXPECT_EQ(Lookaside.Allocate, LaAllocate);
    KT_EXPECT_EQ(Lookaside.Free, LaFree);
    KT_EXPECT_GE(Lookaside.Size, sizeof(SLIST_ENTRY)); // room for the cache link
    ExDeleteNPagedLookasideList(&Lookaside);
}

KTEST(ExLookaside, freed_block_is_cached_and_handed_out_again)
{
    NPAGED_LOOKASIDE_LIST Lookaside;
    LONG64 Before = LaPoolAllocations(LA_TAG);
    PVOID First, Again;

    ExInitializeNPagedLookasideList(&Lookaside, NULL, NULL, 0, 100, LA_TAG, 0);
    First = ExAllocateFromNPagedLookasideList(&Lookaside);
    KT_ASSERT(First != NULL);
    KT_EXPECT_EQ((ULONG_PTR)First % MEMORY_ALLOCATION_ALIGNMENT, 0);
    KT_EXPECT_EQ(Lookaside.TotalAllocates, 1);
    KT_EXPECT_EQ(Lookaside.AllocateMisses, 1); // the list was empty: a pool allocation
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before + 1);
    memset(First, 0xab, 100);
    ExFreeToNPagedLookasideList(&Lookaside, First);
    KT_EXPECT_EQ(Lookaside.TotalFrees, 1);
    KT_EXPECT_EQ(Lookaside.FreeMisses, 0);
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.ListHead), 1);
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before + 1); // cached, not freed
    Again = ExAllocateFromNPagedLookasideList(&Lookaside);
    KT_EXPECT_EQ(Again, First);
    KT_EXPECT_EQ(Lookaside.TotalAllocates, 2);
    KT_EXPECT_EQ(Lookaside.AllocateMisses, 1); // a hit
    ExFreeToNPagedLookasideList(&Lookaside, Again);
    ExDeleteNPagedLookasideList(&Lookaside);
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before); // delete gave it back
}

KTEST(ExLookaside, frees_beyond_depth_go_to_the_free_routine)
{
    NPAGED_LOOKASIDE_LIST Lookaside;
    PVOID Blocks[5];

    LaAllocateCalls = 0;
    LaFreeCalls = 0;
    ExInitializeNPagedLookasideList(&Lookaside, LaAllocate, LaFree, 0, 32, LA_TAG, 2);
    for (ULONG i = 0; i < 5; i++)
    {
        Blocks[i] = ExAllocateFromNPagedLookasideList(&Lookaside);
        KT_ASSERT(Blocks[i] != NULL);
    }
    KT_EXPECT_EQ(LaAllocateCalls, 5);
    KT_EXPECT_EQ(Lookaside.AllocateMisses, 5);
    for (ULONG i = 0; i < 5; i++)
    {
        ExFreeToNPagedLookasideList(&Lookaside, Blocks[i]);
    }
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.ListHead), 2); // Depth blocks kept
    KT_EXPECT_EQ(LaFreeCalls, 3);
    KT_EXPECT_EQ(Lookaside.TotalFrees, 5);
    KT_EXPECT_EQ(Lookaside.FreeMisses, 3);
    /* The cached two come back (last freed first) without calling Allocate. */
    KT_EXPECT_EQ(ExAllocateFromNPagedLookasideList(&Lookaside), Blocks[1]);
    KT_EXPECT_EQ(ExAllocateFromNPagedLookasideList(&Lookaside), Blocks[0]);
    KT_EXPECT_EQ(LaAllocateCalls, 5);
    ExFreeToNPagedLookasideList(&Lookaside, Blocks[0]);
    ExFreeToNPagedLookasideList(&Lookaside, Blocks[1]);
    ExDeleteNPagedLookasideList(&Lookaside);
    KT_EXPECT_EQ(LaFreeCalls, 5); // delete freed the two cached blocks
    KT_EXPECT_EQ(QueryDepthSList(&Lookaside.ListHead), 0);
}

static PVOID
LaFailingAllocate(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag)
{
    __atomic_add_fetch(&LaAllocateCalls, 1, __ATOMIC_RELAXED);
    return NULL;
}

KTEST(ExLookaside, allocate_returns_null_when_the_allocator_fails)
{
    NPAGED_LOOKASIDE_LIST Lookaside;

    LaAllocateCalls = 0;
    ExInitializeNPagedLookasideList(&Lookaside, LaFailingAllocate, LaFree, 0, 64, LA_TAG, 0);
    KT_EXPECT_EQ(ExAllocateFromNPagedLookasideList(&Lookaside), NULL);
    KT_EXPECT_EQ(LaAllocateCalls, 1);
    KT_EXPECT_EQ(Lookaside.TotalAllocates, 1);
    KT_EXPECT_EQ(Lookaside.AllocateMisses, 1);
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

    memset(&Test, 0, sizeof(Test));
    ExInitializeNPagedLookasideList(&Test.Lookaside, NULL, NULL, 0, 8 * sizeof(ULONG64), LA_TAG, 8);
    KtRunOnProcessors(0, LaStressRoutine, &Test);
    KtLog("%u allocations, %u misses, %u free misses", Test.Lookaside.TotalAllocates,
          Test.Lookaside.AllocateMisses, Test.Lookaside.FreeMisses);
    KT_EXPECT_EQ(Test.Corrupted, 0);
    KT_EXPECT_EQ(Test.Failed, 0);
    KT_EXPECT_EQ(Test.Lookaside.TotalAllocates, Total);
    KT_EXPECT_EQ(Test.Lookaside.TotalFrees, Total);
    /* Outstanding pool blocks = cached ones (misses minus free misses). */
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG) - Before,
                 (LONG64)Test.Lookaside.AllocateMisses - (LONG64)Test.Lookaside.FreeMisses);
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG) - Before,
                 (LONG64)QueryDepthSList(&Test.Lookaside.ListHead));
    ExDeleteNPagedLookasideList(&Test.Lookaside);
    KT_EXPECT_EQ(LaPoolAllocations(LA_TAG), Before);
}
