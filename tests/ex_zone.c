/* SPDX-License-Identifier: MIT */
/*
 * ExZone: zones, API.md §9. The layout ExInitializeZone builds (segment
 * header, blocks from offset 16, highest block first, TotalSegmentSize as
 * the offset reached), LIFO allocate and free with their return values,
 * extension at the head of the segment list, the first-segment quirk kept
 * as the DDK has it, rejected parameters leaving everything untouched, and
 * interlocked allocation on every processor never handing a block out twice.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define ZN_ITERATIONS 4000 // allocate/free pairs per processor in the contention test

static ULONG64 ZnArena[128]; // 1 KiB, 8-aligned

KTEST(ExZone, initialize_carves_the_segment_highest_block_first)
{
    ZONE_HEADER Zone;
    PUCHAR Segment = (PUCHAR)ZnArena;
    PZONE_SEGMENT_HEADER Header = (PZONE_SEGMENT_HEADER)Segment;

    memset(ZnArena, 0xcc, sizeof(ZnArena));
    memset(&Zone, 0xcc, sizeof(Zone));
    /* 16 + 4 * 32 = 144 <= 160 - 32: four blocks, at 16, 48, 80 and 112. */
    KT_ASSERT_EQ(ExInitializeZone(&Zone, 32, Segment, 160), STATUS_SUCCESS);
    KT_EXPECT_EQ(Zone.BlockSize, 32);
    KT_EXPECT_EQ(Zone.TotalSegmentSize, 144); // the offset reached, not 160
    KT_EXPECT_EQ(Zone.SegmentList.Next, &Header->SegmentList);
    KT_EXPECT_EQ(Header->SegmentList.Next, NULL);
    KT_EXPECT_EQ(Header->Reserved, NULL);
    KT_EXPECT_EQ(Zone.FreeList.Next, (PSINGLE_LIST_ENTRY)(Segment + 112));
    KT_EXPECT_EQ(((PSINGLE_LIST_ENTRY)(Segment + 112))->Next, (PSINGLE_LIST_ENTRY)(Segment + 80));
    KT_EXPECT_EQ(((PSINGLE_LIST_ENTRY)(Segment + 80))->Next, (PSINGLE_LIST_ENTRY)(Segment + 48));
    KT_EXPECT_EQ(((PSINGLE_LIST_ENTRY)(Segment + 48))->Next, (PSINGLE_LIST_ENTRY)(Segment + 16));
    KT_EXPECT_EQ(((PSINGLE_LIST_ENTRY)(Segment + 16))->Next, NULL);
    KT_EXPECT_EQ(Segment[144], 0xcc); // nothing written past the last block
    KT_EXPECT_EQ(ExIsFullZone(&Zone), FALSE);
}

KTEST(ExZone, allocate_and_free_are_lifo_with_the_ddk_return_values)
{
    ZONE_HEADER Zone;
    PUCHAR Segment = (PUCHAR)ZnArena;
    PVOID Blocks[3];

    KT_ASSERT_EQ(ExInitializeZone(&Zone, 24, Segment, 16 + 3 * 24), STATUS_SUCCESS);
    KT_EXPECT_EQ(Zone.TotalSegmentSize, 16 + 3 * 24);
    Blocks[0] = ExAllocateFromZone(&Zone);
    Blocks[1] = ExAllocateFromZone(&Zone);
    Blocks[2] = ExAllocateFromZone(&Zone);
    KT_EXPECT_EQ(Blocks[0], Segment + 16 + 2 * 24);
    KT_EXPECT_EQ(Blocks[1], Segment + 16 + 24);
    KT_EXPECT_EQ(Blocks[2], Segment + 16);
    KT_EXPECT_EQ(ExIsFullZone(&Zone), TRUE);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), NULL);
    KT_EXPECT_EQ(ExFreeToZone(&Zone, Blocks[1]), NULL); // the zone had been full
    KT_EXPECT_EQ(ExIsFullZone(&Zone), FALSE);
    KT_EXPECT_EQ(ExFreeToZone(&Zone, Blocks[0]), Blocks[1]); // the previous first free block
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), Blocks[0]);      // last in, first out
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), Blocks[1]);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), NULL);
}

KTEST(ExZone, segment_too_small_for_one_block_gives_an_empty_zone)
{
    ZONE_HEADER Zone;

    /* 40 bytes, 32-byte blocks: 16 + 32 > 40, so no block fits after the header. */
    KT_ASSERT_EQ(ExInitializeZone(&Zone, 32, ZnArena, 40), STATUS_SUCCESS);
    KT_EXPECT_EQ(Zone.TotalSegmentSize, 16);
    KT_EXPECT_EQ(ExIsFullZone(&Zone), TRUE);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), NULL);
}

KTEST(ExZone, extend_links_the_new_segment_first_and_keeps_the_first_segment_quirk)
{
    ZONE_HEADER Zone;
    PUCHAR First = (PUCHAR)ZnArena;        // 16 + 2 * 32 = 80 bytes used
    PUCHAR Second = (PUCHAR)ZnArena + 512; // 16 + 3 * 32 = 112 bytes used
    KSPIN_LOCK Lock = 0;

    KT_ASSERT_EQ(ExInitializeZone(&Zone, 32, First, 80), STATUS_SUCCESS);
    KT_ASSERT_EQ(ExInterlockedExtendZone(&Zone, Second, 120, &Lock), STATUS_SUCCESS);
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT_EQ(Zone.SegmentList.Next, (PSINGLE_LIST_ENTRY)Second); // newest first
    KT_EXPECT_EQ(((PZONE_SEGMENT_HEADER)Second)->SegmentList.Next, (PSINGLE_LIST_ENTRY)First);
    KT_EXPECT_EQ(((PZONE_SEGMENT_HEADER)Second)->Reserved, NULL);
    KT_EXPECT_EQ(Zone.TotalSegmentSize, 80 + 112);
    /* The new segment's blocks are pushed on top of the old ones: highest first. */
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), Second + 80);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), Second + 48);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), Second + 16);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), First + 48);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), First + 16);
    KT_EXPECT_EQ(ExAllocateFromZone(&Zone), NULL);
    /*
     * The DDK formula, on purpose: the range starts at the NEWEST segment and
     * spans the total of all segments, so a block of the real first segment
     * (lower here) is "not in it", and memory past the newest segment is.
     */
    KT_EXPECT_EQ(ExIsObjectInFirstZoneSegment(&Zone, First + 16), FALSE);
    KT_EXPECT_EQ(ExIsObjectInFirstZoneSegment(&Zone, Second + 16), TRUE);
    KT_EXPECT_EQ(ExIsObjectInFirstZoneSegment(&Zone, Second + 112 + 40), TRUE);
    KT_EXPECT_EQ(ExIsObjectInFirstZoneSegment(&Zone, Second + 80 + 112), FALSE);
}

KTEST(ExZone, bad_parameters_fail_and_touch_nothing)
{
    static const struct
    {
        ULONG Offset; // of the segment in the arena
        ULONG BlockSize;
        ULONG Size;
    } Bad[] = {
        {4, 32, 160},                // segment not 8-aligned
        {0, 0, 160},                 // no block size
        {0, 4, 160},                 // too small for the free-list link
        {0, 12, 160},                // not a multiple of 8
        {0, 33, 160},  {0, 32, 164}, // size not a multiple of 8
        {0, 168, 160},               // block larger than the segment
        {0, 8, 8},                   // cannot hold the segment header
    };
    ZONE_HEADER Zone, Before;

    memset(&Zone, 0x5a, sizeof(Zone));
    Before = Zone;
    for (ULONG i = 0; i < sizeof(Bad) / sizeof(Bad[0]); i++)
    {
        NTSTATUS Status;

        memset(ZnArena, 0xcc, sizeof(ZnArena));
        Status =
            ExInitializeZone(&Zone, Bad[i].BlockSize, (PUCHAR)ZnArena + Bad[i].Offset, Bad[i].Size);
        KT_EXPECT(!NT_SUCCESS(Status));
        KT_EXPECT(RtlEqualMemory(&Zone, &Before, sizeof(Zone)));
        KT_EXPECT_EQ(((PUCHAR)ZnArena)[Bad[i].Offset], 0xcc);
        KT_EXPECT_EQ(((PUCHAR)ZnArena)[Bad[i].Offset + 16], 0xcc);
    }
    KT_EXPECT(!NT_SUCCESS(ExInitializeZone(&Zone, 32, NULL, 160)));

    /* Extending a good zone with a bad segment changes neither. */
    KT_ASSERT_EQ(ExInitializeZone(&Zone, 32, ZnArena, 160), STATUS_SUCCESS);
    Before = Zone;
    memset((PUCHAR)ZnArena + 512, 0xcc, 256);
    KT_EXPECT(!NT_SUCCESS(ExExtendZone(&Zone, (PUCHAR)ZnArena + 516, 160))); // misaligned
    KT_EXPECT(!NT_SUCCESS(ExExtendZone(&Zone, (PUCHAR)ZnArena + 512, 164))); // size % 8
    KT_EXPECT(!NT_SUCCESS(ExExtendZone(&Zone, (PUCHAR)ZnArena + 512, 24)));  // < BlockSize
    KT_EXPECT(RtlEqualMemory(&Zone, &Before, sizeof(Zone)));
    KT_EXPECT_EQ(((PUCHAR)ZnArena)[512], 0xcc);
    KT_EXPECT_EQ(((PUCHAR)ZnArena)[516], 0xcc);
}

/* ---------------------------------------------------------------- contention */

typedef struct _ZN_STRESS
{
    ZONE_HEADER Zone;
    KSPIN_LOCK Lock;
    PUCHAR Segments[2];
    ULONG Blocks;               // in all segments
    volatile LONG *Owner;       // per block: 1 + the processor holding it, 0 when free
    volatile LONG DoubleGrants; // a block was handed out while already handed out
    volatile LONG Extended;
    volatile LONG Allocations;
} ZN_STRESS;

#define ZN_BLOCK_SIZE 64

static LONG
ZnBlockIndex(ZN_STRESS *Test, PVOID Block)
{
    for (ULONG s = 0; s < 2; s++)
    {
        PUCHAR Base = Test->Segments[s] + sizeof(ZONE_SEGMENT_HEADER);
        ULONG PerSegment = (Test->Blocks / 2);
        if ((PUCHAR)Block >= Base && (PUCHAR)Block < Base + PerSegment * ZN_BLOCK_SIZE)
        {
            return (LONG)(s * PerSegment + (ULONG)((PUCHAR)Block - Base) / ZN_BLOCK_SIZE);
        }
    }
    return -1;
}

static VOID
ZnStressRoutine(ULONG Index, PVOID Context)
{
    ZN_STRESS *Test = Context;

    for (ULONG i = 0; i < ZN_ITERATIONS; i++)
    {
        PVOID Block;
        LONG Slot;

        if (Index == 0 && i == ZN_ITERATIONS / 4)
        {
            ExInterlockedExtendZone(&Test->Zone, Test->Segments[1],
                                    (ULONG)(16 + (Test->Blocks / 2) * ZN_BLOCK_SIZE), &Test->Lock);
            __atomic_store_n(&Test->Extended, 1, __ATOMIC_RELEASE);
        }
        Block = ExInterlockedAllocateFromZone(&Test->Zone, &Test->Lock);
        if (Block == NULL)
        {
            YieldProcessor();
            continue;
        }
        __atomic_add_fetch(&Test->Allocations, 1, __ATOMIC_RELAXED);
        Slot = ZnBlockIndex(Test, Block);
        if (Slot < 0 ||
            __atomic_exchange_n(&Test->Owner[Slot], (LONG)Index + 1, __ATOMIC_ACQ_REL) != 0)
        {
            __atomic_add_fetch(&Test->DoubleGrants, 1, __ATOMIC_RELAXED);
        }
        memset((PUCHAR)Block + sizeof(PVOID), (int)Index, ZN_BLOCK_SIZE - sizeof(PVOID));
        YieldProcessor();
        if (Slot >= 0)
        {
            __atomic_store_n(&Test->Owner[Slot], 0, __ATOMIC_RELEASE);
        }
        ExInterlockedFreeToZone(&Test->Zone, Block, &Test->Lock);
    }
}

KTEST(ExZone, interlocked_allocation_never_hands_out_a_block_twice)
{
    static ZN_STRESS Test;
    ULONG PerSegment = (KiActiveProcessorCount + 1) / 2; // fewer blocks than takers at first
    ULONG SegmentSize = 16 + PerSegment * ZN_BLOCK_SIZE;
    ULONG Free = 0;

    memset(&Test, 0, sizeof(Test));
    Test.Blocks = 2 * PerSegment;
    Test.Segments[0] = ExAllocatePoolWithTag(NonPagedPool, SegmentSize, 'nZtK');
    Test.Segments[1] = ExAllocatePoolWithTag(NonPagedPool, SegmentSize, 'nZtK');
    Test.Owner = ExAllocatePoolWithTag(NonPagedPool, Test.Blocks * sizeof(LONG), 'nZtK');
    if (Test.Segments[0] != NULL && Test.Segments[1] != NULL && Test.Owner != NULL)
    {
        memset((PVOID)Test.Owner, 0, Test.Blocks * sizeof(LONG));
        KT_EXPECT_EQ(ExInitializeZone(&Test.Zone, ZN_BLOCK_SIZE, Test.Segments[0], SegmentSize),
                     STATUS_SUCCESS);
        KtRunOnProcessors(0, ZnStressRoutine, &Test);
        KtLog("%d allocations", Test.Allocations);
        KT_EXPECT_EQ(Test.DoubleGrants, 0);
        KT_EXPECT_EQ(Test.Extended, 1);
        KT_EXPECT_EQ(Test.Lock, 0);
        KT_EXPECT_EQ(Test.Zone.TotalSegmentSize, 2 * SegmentSize);
        while (ExAllocateFromZone(&Test.Zone) != NULL && Free <= Test.Blocks)
        {
            Free++;
        }
        KT_EXPECT_EQ(Free, Test.Blocks); // every block came back
    }
    else
    {
        KtFail("pool for the test", __FILE__, __LINE__);
    }
    if (Test.Segments[0] != NULL)
    {
        ExFreePoolWithTag(Test.Segments[0], 'nZtK');
    }
    if (Test.Segments[1] != NULL)
    {
        ExFreePoolWithTag(Test.Segments[1], 'nZtK');
    }
    if (Test.Owner != NULL)
    {
        ExFreePoolWithTag((PVOID)Test.Owner, 'nZtK');
    }
}
