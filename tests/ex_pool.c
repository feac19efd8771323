/* SPDX-License-Identifier: MIT */
/*
 * Nonpaged pool: alignment, reuse, per-tag accounting, many sizes, bad frees,
 * and allocation from every processor at once.
 */
#include <ktest.h>
#include <wdm.h>

#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"
#include "lib/lib.h"

#define TAG_A 'AlpT'
#define TAG_B 'BlpT'

static LONG64
OutstandingForTag(ULONG Tag, LONG64 *Bytes)
{
    static EXP_POOL_TAG_USAGE Usage[256];
    ULONG Count = ExpQueryPoolTags(Usage, 256);

    for (ULONG i = 0; i < Count; i++)
    {
        if (Usage[i].Tag == Tag)
        {
            if (Bytes != NULL)
            {
                *Bytes = Usage[i].Bytes;
            }
            return Usage[i].Allocations;
        }
    }
    if (Bytes != NULL)
    {
        *Bytes = 0;
    }
    return 0;
}

KTEST(ExPool, blocks_are_16_byte_aligned_and_large_ones_page_aligned)
{
    static const SIZE_T Sizes[] = {1, 15, 16, 17, 100, 1000, 4000, 4064, 4065, 8192, 70000};

    for (ULONG i = 0; i < sizeof(Sizes) / sizeof(Sizes[0]); i++)
    {
        PUCHAR P = ExAllocatePoolWithTag(NonPagedPool, Sizes[i], TAG_A);
        KT_ASSERT(P != NULL);
        KT_EXPECT_EQ((ULONG_PTR)P % 16, 0);
        if (Sizes[i] >= 4096)
        {
            KT_EXPECT_EQ((ULONG_PTR)P % 4096, 0);
        }
        ExFreePoolWithTag(P, TAG_A);
    }
}

KTEST(ExPool, accounting_follows_allocations_per_tag)
{
    LONG64 BytesBefore, BytesDuring, BytesAfter;
    LONG64 Before = OutstandingForTag(TAG_B, &BytesBefore);
    PVOID A = ExAllocatePoolWithTag(NonPagedPool, 100, TAG_B);
    PVOID B = ExAllocatePoolWithTag(NonPagedPool, 9000, TAG_B);

    KT_ASSERT(A != NULL && B != NULL);
    KT_EXPECT_EQ(OutstandingForTag(TAG_B, &BytesDuring), Before + 2);
    KT_EXPECT_EQ(BytesDuring, BytesBefore + 9100);
    ExFreePoolWithTag(A, TAG_B);
    KT_EXPECT_EQ(OutstandingForTag(TAG_B, NULL), Before + 1);
    ExFreePool(B); // a zero tag skips the tag check
    KT_EXPECT_EQ(OutstandingForTag(TAG_B, &BytesAfter), Before);
    KT_EXPECT_EQ(BytesAfter, BytesBefore);
}

KTEST(ExPool, many_sizes_hold_their_contents_independently)
{
    PUCHAR Blocks[64];
    SIZE_T Sizes[64];

    for (ULONG i = 0; i < 64; i++)
    {
        Sizes[i] = 1 + (SIZE_T)(KtRandom() % 12000);
        Blocks[i] = ExAllocatePoolWithTag(NonPagedPool, Sizes[i], TAG_A);
        KT_ASSERT(Blocks[i] != NULL);
        memset(Blocks[i], (int)i, Sizes[i]);
    }
    for (ULONG i = 0; i < 64; i++)
    {
        SIZE_T Wrong = 0;
        for (SIZE_T j = 0; j < Sizes[i]; j++)
        {
            Wrong += Blocks[i][j] != (UCHAR)i; // nothing else wrote into this block
        }
        KT_EXPECT_EQ(Wrong, 0);
        ExFreePoolWithTag(Blocks[i], TAG_A);
    }
}

KTEST(ExPool, freed_memory_is_reused)
{
    ULONG64 FreeBefore = MmQueryFreePages();

    for (ULONG i = 0; i < 2000; i++)
    {
        PVOID Small = ExAllocatePoolWithTag(NonPagedPool, 200, TAG_A);
        PVOID Large = ExAllocatePoolWithTag(NonPagedPool, 20000, TAG_A);
        KT_ASSERT(Small != NULL && Large != NULL);
        ExFreePoolWithTag(Large, TAG_A);
        ExFreePoolWithTag(Small, TAG_A);
    }
    /* 2000 rounds of 6 pages each would need 12000 pages without reuse. */
    KT_EXPECT_LE(FreeBefore - MmQueryFreePages(), 2);
}

KTEST(ExPool, zero_byte_allocations_are_distinct)
{
    PVOID A = ExAllocatePoolWithTag(NonPagedPool, 0, TAG_A);
    PVOID B = ExAllocatePoolWithTag(NonPagedPool, 0, TAG_A);
    KT_EXPECT(A != NULL && B != NULL && A != B);
    ExFreePoolWithTag(A, TAG_A);
    ExFreePoolWithTag(B, TAG_A);
}

KTEST(ExPool, allocation_at_dispatch_level_works)
{
    KIRQL Old;
    PVOID P;
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    P = ExAllocatePoolWithTag(NonPagedPool, 64, TAG_A);
    KT_EXPECT(P != NULL);
    ExFreePoolWithTag(P, TAG_A);
    KeLowerIrql(Old);
}

KTEST(ExPool, bad_frees_bugcheck_bad_pool_caller)
{
    PUCHAR P = ExAllocatePoolWithTag(NonPagedPool, 64, TAG_A);
    static UCHAR NotPool[64] __attribute__((aligned(16)));
    KIRQL Old;

    KT_ASSERT(P != NULL);
    KT_EXPECT_BUGCHECK(BAD_POOL_CALLER, ExFreePoolWithTag(P, TAG_B));      // wrong tag
    KT_EXPECT_BUGCHECK(BAD_POOL_CALLER, ExFreePoolWithTag(P + 16, TAG_A)); // not a block start
    ExFreePoolWithTag(P, TAG_A);
    KT_EXPECT_BUGCHECK(BAD_POOL_CALLER, ExFreePoolWithTag(P, TAG_A)); // double free
    KT_EXPECT_BUGCHECK(BAD_POOL_CALLER, ExFreePool(NotPool));         // foreign pointer
    KT_EXPECT_BUGCHECK(BAD_POOL_CALLER, ExFreePool(NULL));
    KeRaiseIrql(CLOCK_LEVEL, &Old);
    KT_EXPECT_BUGCHECK(BAD_POOL_CALLER, ExAllocatePoolWithTag(NonPagedPool, 8, TAG_A)); // IRQL
    KeLowerIrql(Old);
}

static VOID
AllocateAndCheck(ULONG Index, PVOID Context)
{
    volatile LONG *Errors = Context;
    PUCHAR Live[16] = {0};
    SIZE_T Sizes[16] = {0};

    for (ULONG Round = 0; Round < 400; Round++)
    {
        ULONG Slot = (ULONG)(KtRandom() % 16);
        if (Live[Slot] != NULL)
        {
            for (SIZE_T j = 0; j < Sizes[Slot]; j++)
            {
                if (Live[Slot][j] != (UCHAR)(Index + 1))
                {
                    InterlockedIncrement(Errors);
                    break;
                }
            }
            ExFreePoolWithTag(Live[Slot], TAG_A);
        }
        Sizes[Slot] = 1 + (SIZE_T)(KtRandom() % 6000);
        Live[Slot] = ExAllocatePoolWithTag(NonPagedPool, Sizes[Slot], TAG_A);
        if (Live[Slot] == NULL)
        {
            InterlockedIncrement(Errors);
            continue;
        }
        memset(Live[Slot], (int)(Index + 1), Sizes[Slot]);
    }
    for (ULONG Slot = 0; Slot < 16; Slot++)
    {
        if (Live[Slot] != NULL)
        {
            ExFreePoolWithTag(Live[Slot], TAG_A);
        }
    }
}

KTEST_EX(ExPool, every_processor_allocates_at_once, KTEST_SMP_ONLY, 0)
{
    volatile LONG Errors = 0;
    KtRunOnProcessors(0, AllocateAndCheck, (PVOID)&Errors);
    KT_EXPECT_EQ(Errors, 0);
}

/* ---------------------------------------------------------------- header, trailer, poison */

#define EX_POOL_SIZE  1500 // a 2048-byte block: two per page
#define EX_POOL_BLOCK 2048

/* KT_EXPECT_BUGCHECK that also hands back the four parameters. */
#define EX_POOL_EXPECT_BUGCHECK(Code, Params, Statement)                                           \
    do                                                                                             \
    {                                                                                              \
        KT_BUGCHECK_CATCH ExCatch_;                                                                \
        ExCatch_.Expected = (Code);                                                                \
        memset(ExCatch_.Parameter, 0, sizeof(ExCatch_.Parameter));                                 \
        KtArmBugCheck(&ExCatch_);                                                                  \
        if (x86_setjmp(&ExCatch_.Jump) == 0)                                                       \
        {                                                                                          \
            Statement;                                                                             \
            KtDisarmBugCheck(&ExCatch_);                                                           \
            KtCheckBugCheck(&ExCatch_, (Code), FALSE, #Statement, __FILE__, __LINE__);             \
        }                                                                                          \
        else                                                                                       \
        {                                                                                          \
            KtCheckBugCheck(&ExCatch_, (Code), TRUE, #Statement, __FILE__, __LINE__);              \
        }                                                                                          \
        memcpy((Params), ExCatch_.Parameter, sizeof(ExCatch_.Parameter));                          \
    } while (0)

/* Two live blocks of EX_POOL_SIZE, adjacent: *Low just below *High; the rest are freed. */
static VOID
ExPoolAdjacentBlocks(PUCHAR *Low, PUCHAR *High)
{
    PUCHAR Blocks[16];
    ULONG Count = 0;

    *Low = *High = NULL;
    while (Count < 16 && *Low == NULL)
    {
        Blocks[Count] = ExAllocatePoolWithTag(NonPagedPool, EX_POOL_SIZE, TAG_A);
        KT_ASSERT(Blocks[Count] != NULL);
        for (ULONG i = 0; i < Count; i++)
        {
            if (Blocks[i] + EX_POOL_BLOCK == Blocks[Count] ||
                Blocks[Count] + EX_POOL_BLOCK == Blocks[i])
            {
                *Low = Blocks[i] < Blocks[Count] ? Blocks[i] : Blocks[Count];
                *High = Blocks[i] < Blocks[Count] ? Blocks[Count] : Blocks[i];
            }
        }
        Count++;
    }
    KT_ASSERT(*Low != NULL);
    for (ULONG i = 0; i < Count; i++)
    {
        if (Blocks[i] != *Low && Blocks[i] != *High)
        {
            ExFreePoolWithTag(Blocks[i], TAG_A);
        }
    }
}

/*
 * The checked-pool tests below damage the ordinary pool's blocks on purpose;
 * under pool=special those allocations come from special pool instead, where
 * the same overrun is a page fault (0xD6, covered by make test-faults).
 */
static VOID
ExPoolRequireOrdinaryPool(VOID)
{
    if (ExpSpecialPoolEnabled)
    {
        KT_SKIP("pool=special serves these blocks; this checks the ordinary pool");
    }
}

/*
 * An overrun that reaches a free block's header: the next allocation of that
 * size bug-checks 0x19 (P1 0x20, P2 the damaged block) instead of handing the
 * block out, in every build, and the pool keeps working afterwards.
 */
KTEST(ExPool, overrun_into_a_free_block_is_never_handed_out)
{
    PUCHAR Low, High;
    PUCHAR Again;
    ULONG_PTR Params[4];

    ExPoolRequireOrdinaryPool();

    ExPoolAdjacentBlocks(&Low, &High);
    ExFreePoolWithTag(High, TAG_A);
    memset(Low, 0x41, EX_POOL_BLOCK); // over Low's trailer and High's header
    EX_POOL_EXPECT_BUGCHECK(BAD_POOL_HEADER, Params,
                            Again = ExAllocatePoolWithTag(NonPagedPool, EX_POOL_SIZE, TAG_A));
    KT_EXPECT_EQ(Params[0], 0x20);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)High - 32);
    /* The damaged list is abandoned: the next block is a fresh one, not High. */
    Again = ExAllocatePoolWithTag(NonPagedPool, EX_POOL_SIZE, TAG_A);
    KT_ASSERT(Again != NULL);
    KT_EXPECT(Again != High);
    ExFreePoolWithTag(Again, TAG_A);
#if DBG
    memset(Low + EX_POOL_SIZE, 0xbd, EX_POOL_BLOCK - 32 - EX_POOL_SIZE); // repair the trailer
#endif
    ExFreePoolWithTag(Low, TAG_A);
}

#if DBG
/*
 * Checked build: a write just past the end of a live block (into its own
 * trailer, then a live neighbour) is found when it is freed: 0xC1 with P4 =
 * 0x24, P1 the block, P2 the first changed byte, P3 the size requested.
 */
KTEST(ExPool, overrun_past_the_end_bugchecks_0xc1_at_free)
{
    PUCHAR Low, High;
    ULONG_PTR Params[4];

    ExPoolRequireOrdinaryPool();

    ExPoolAdjacentBlocks(&Low, &High);
    Low[EX_POOL_SIZE + 3] = 0; // one byte inside the trailer
    EX_POOL_EXPECT_BUGCHECK(SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION, Params,
                            ExFreePoolWithTag(Low, TAG_A));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)Low);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)Low + EX_POOL_SIZE + 3);
    KT_EXPECT_EQ(Params[2], EX_POOL_SIZE);
    KT_EXPECT_EQ(Params[3], 0x24);
    Low[EX_POOL_SIZE + 3] = 0xbd;
    ExFreePoolWithTag(Low, TAG_A); // repaired: frees
    ExFreePoolWithTag(High, TAG_A);

    /* Into the live neighbour: its header is damaged too, and its own free says 0x19. */
    ExPoolAdjacentBlocks(&Low, &High);
    memset(Low, 0x41, EX_POOL_BLOCK + 8);
    EX_POOL_EXPECT_BUGCHECK(SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION, Params,
                            ExFreePoolWithTag(Low, TAG_A));
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)Low + EX_POOL_SIZE);
    EX_POOL_EXPECT_BUGCHECK(BAD_POOL_HEADER, Params, ExFreePoolWithTag(High, TAG_A));
    KT_EXPECT_EQ(Params[0], 0x20);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)High - 32);
    /* Repair both so the test leaves the pool as it found it. */
    memset(Low + EX_POOL_SIZE, 0xbd, EX_POOL_BLOCK - 32 - EX_POOL_SIZE);
    memcpy(High - 32, Low - 32, 32);
    ExFreePoolWithTag(Low, TAG_A);
    ExFreePoolWithTag(High, TAG_A);
}

/*
 * Checked build: a freed block is poisoned, and a write through a stale
 * pointer is found when the block would be handed out again: 0x19 with P1 =
 * 0x22, P2 the block, P3 the first changed byte. The block is not handed out.
 */
KTEST(ExPool, write_after_free_is_found_before_the_block_is_reused)
{
    PUCHAR Block;
    PUCHAR Again = NULL;
    ULONG_PTR Params[4];

    ExPoolRequireOrdinaryPool();
    Block = ExAllocatePoolWithTag(NonPagedPool, EX_POOL_SIZE, TAG_A);

    KT_ASSERT(Block != NULL);
    ExFreePoolWithTag(Block, TAG_A);
    Block[100] = 1; // use after free
    EX_POOL_EXPECT_BUGCHECK(BAD_POOL_HEADER, Params,
                            Again = ExAllocatePoolWithTag(NonPagedPool, EX_POOL_SIZE, TAG_A));
    KT_EXPECT_EQ(Params[0], 0x22);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)Block - 32);
    KT_EXPECT_EQ(Params[2], (ULONG_PTR)Block + 100);
    Again = ExAllocatePoolWithTag(NonPagedPool, EX_POOL_SIZE, TAG_A);
    KT_ASSERT(Again != NULL);
    KT_EXPECT(Again != Block);
    ExFreePoolWithTag(Again, TAG_A);
}
#endif
