/* SPDX-License-Identifier: MIT */
/*
 * ExSList: sequenced singly linked lists, API.md §8. The 16-byte header's
 * encoding (Depth, Sequence, NextEntry = address >> 4), what push, pop and
 * flush do to each field, return values, the Ex forms ignoring their lock,
 * any IRQL, the checked build's alignment ASSERT, the ABA interleaving
 * defeated by the sequence number, and no entry lost or duplicated while
 * every processor and an ISR push and pop one small pool at once.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define SX_ENTRIES_PER_CPU 3 // few entries: the same ones come back often (ABA bait)
#define SX_ITERATIONS      5000
#define SX_VECTOR          0x84 // the ISR's vector (IRQL 8)

typedef struct DECLSPEC_ALIGN(16) _SX_ITEM
{
    SLIST_ENTRY Entry;
    ULONG Id;
    volatile LONG Taken; // 1 while popped
} SX_ITEM;

static ULONG64
SxDepth(PSLIST_HEADER Header)
{
    return Header->Alignment & 0xffff;
}

static ULONG64
SxSequence(PSLIST_HEADER Header)
{
    return Header->Alignment >> 16;
}

static PVOID
SxFirst(PSLIST_HEADER Header)
{
    return (PVOID)(Header->Region & ~0xfull);
}

KTEST(ExSList, initialize_zeroes_the_header)
{
    SLIST_HEADER Header;

    memset(&Header, 0xaa, sizeof(Header));
    InitializeSListHead(&Header);
    KT_EXPECT_EQ(Header.Alignment, 0);
    KT_EXPECT_EQ(Header.Region, 0);
    KT_EXPECT_EQ(QueryDepthSList(&Header), 0);
    KT_EXPECT_EQ(InterlockedPopEntrySList(&Header), NULL);
    KT_EXPECT_EQ(InterlockedFlushSList(&Header), NULL);
    KT_EXPECT_EQ(Header.Alignment, 0); // popping or flushing nothing changes nothing
    KT_EXPECT_EQ(Header.Region, 0);
}

KTEST(ExSList, push_returns_the_previous_first_entry_and_bumps_depth_and_sequence)
{
    SLIST_HEADER Header;
    SLIST_ENTRY A, B;

    InitializeSListHead(&Header);
    KT_EXPECT_EQ(InterlockedPushEntrySList(&Header, &A), NULL);
    KT_EXPECT_EQ(SxDepth(&Header), 1);
    KT_EXPECT_EQ(SxSequence(&Header), 1);
    KT_EXPECT_EQ(Header.HeaderX64.NextEntry, (ULONG64)(ULONG_PTR)&A >> 4);
    KT_EXPECT_EQ(Header.HeaderX64.Reserved, 0);
    KT_EXPECT_EQ(A.Next, NULL);
    KT_EXPECT_EQ(InterlockedPushEntrySList(&Header, &B), &A);
    KT_EXPECT_EQ(SxDepth(&Header), 2);
    KT_EXPECT_EQ(SxSequence(&Header), 2);
    KT_EXPECT_EQ(SxFirst(&Header), &B);
    KT_EXPECT_EQ(B.Next, &A);
    KT_EXPECT_EQ(QueryDepthSList(&Header), 2);
}

KTEST(ExSList, pop_decrements_depth_and_keeps_the_sequence)
{
    SLIST_HEADER Header;
    SLIST_ENTRY A, B;

    InitializeSListHead(&Header);
    InterlockedPushEntrySList(&Header, &A);
    InterlockedPushEntrySList(&Header, &B);
    KT_EXPECT_EQ(InterlockedPopEntrySList(&Header), &B);
    KT_EXPECT_EQ(SxDepth(&Header), 1);
    KT_EXPECT_EQ(SxSequence(&Header), 2);
    KT_EXPECT_EQ(SxFirst(&Header), &A);
    KT_EXPECT_EQ(InterlockedPopEntrySList(&Header), &A);
    KT_EXPECT_EQ(SxDepth(&Header), 0);
    KT_EXPECT_EQ(SxSequence(&Header), 2);
    KT_EXPECT_EQ(SxFirst(&Header), NULL);
    KT_EXPECT_EQ(InterlockedPopEntrySList(&Header), NULL);
    KT_EXPECT_EQ(SxSequence(&Header), 2);
}

KTEST(ExSList, flush_returns_the_whole_chain_and_empties_the_list)
{
    SLIST_HEADER Header;
    SLIST_ENTRY A, B, C;
    PSLIST_ENTRY Chain;

    InitializeSListHead(&Header);
    InterlockedPushEntrySList(&Header, &A);
    InterlockedPushEntrySList(&Header, &B);
    InterlockedPushEntrySList(&Header, &C);
    Chain = InterlockedFlushSList(&Header);
    KT_EXPECT_EQ(Chain, &C);
    KT_EXPECT_EQ(C.Next, &B);
    KT_EXPECT_EQ(B.Next, &A);
    KT_EXPECT_EQ(A.Next, NULL);
    KT_EXPECT_EQ(SxDepth(&Header), 0);
    KT_EXPECT_EQ(SxFirst(&Header), NULL);
    KT_EXPECT_EQ(SxSequence(&Header), 3); // kept
    KT_EXPECT_EQ(ExInterlockedFlushSList(&Header), NULL);
    KT_EXPECT_EQ(ExQueryDepthSList(&Header), 0);
}

KTEST(ExSList, ex_forms_ignore_their_lock_and_work_at_any_irql)
{
    SLIST_HEADER Header;
    SLIST_ENTRY A, B;
    KSPIN_LOCK Lock = 0x1234; // "held": the routines must not touch it
    ULONG64 Flags;
    KIRQL Saved;

    KeRaiseIrql(HIGH_LEVEL, &Saved);
    Flags = x86_save_disable();
    InitializeSListHead(&Header);
    KT_EXPECT_EQ(ExInterlockedPushEntrySList(&Header, &A, &Lock), NULL);
    KT_EXPECT_EQ(ExInterlockedPushEntrySList(&Header, &B, &Lock), &A);
    KT_EXPECT_EQ(ExInterlockedPopEntrySList(&Header, &Lock), &B);
    KT_EXPECT_EQ(ExInterlockedPopEntrySList(&Header, &Lock), &A);
    KT_EXPECT_EQ(ExInterlockedPopEntrySList(&Header, &Lock), NULL);
    KT_EXPECT_EQ(Lock, 0x1234);
    KT_EXPECT_EQ(KeGetCurrentIrql(), HIGH_LEVEL);
    KT_EXPECT(!x86_interrupts_enabled());
    x86_restore_flags(Flags);
    KeLowerIrql(Saved);
}

KTEST(ExSList, misaligned_entry_asserts_in_the_checked_build)
{
#if DBG
    static UCHAR Buffer[64] __attribute__((aligned(16)));
    SLIST_HEADER Header;

    InitializeSListHead(&Header);
    KT_EXPECT_BUGCHECK(MANUALLY_INITIATED_CRASH,
                       InterlockedPushEntrySList(&Header, (PSLIST_ENTRY)(Buffer + 8)));
    KT_EXPECT_EQ(Header.Alignment, 0); // nothing was pushed
    KT_EXPECT_EQ(Header.Region, 0);
#else
    KT_SKIP("checked build only");
#endif
}

/*
 * The ABA interleaving, step by step: a pop reads the header (first A, A->Next
 * = B) and is delayed; meanwhile A and B are popped and A is pushed back, so
 * the first entry is A again. The delayed pop's compare-exchange must fail:
 * the push changed Sequence, though NextEntry looks the same.
 */
KTEST(ExSList, delayed_pop_fails_after_the_first_entry_was_popped_and_pushed_back)
{
    SLIST_HEADER Header;
    SLIST_ENTRY A, B, C;
    LONG64 Snapshot[2];
    LONG64 StaleLow, StaleHigh;

    InitializeSListHead(&Header);
    InterlockedPushEntrySList(&Header, &C);
    InterlockedPushEntrySList(&Header, &B);
    InterlockedPushEntrySList(&Header, &A); // A -> B -> C
    Snapshot[0] = (LONG64)Header.Alignment;
    Snapshot[1] = (LONG64)Header.Region;
    StaleLow = (LONG64)((Header.Alignment & ~0xffffull) | (SxDepth(&Header) - 1));
    StaleHigh = (LONG64)(ULONG_PTR)A.Next; // B, as the delayed pop read it

    KT_EXPECT_EQ(InterlockedPopEntrySList(&Header), &A);
    KT_EXPECT_EQ(InterlockedPopEntrySList(&Header), &B);
    KT_EXPECT_EQ(InterlockedPushEntrySList(&Header, &A), &C); // A -> C now
    KT_EXPECT_EQ(SxFirst(&Header), &A);

    KT_EXPECT_EQ(
        InterlockedCompareExchange128((LONG64 volatile *)&Header, StaleHigh, StaleLow, Snapshot),
        FALSE);
    KT_EXPECT_EQ(SxFirst(&Header), &A); // B (off the list) was not made the head
    KT_EXPECT_EQ(A.Next, &C);
    KT_EXPECT_EQ(SxDepth(&Header), 2);
}

/* ---------------------------------------------------------------- contention */

typedef struct _SX_STRESS
{
    SLIST_HEADER Header;
    SX_ITEM *Items;
    ULONG Count;
    volatile LONG Duplicates;
    volatile LONG Moves;
    volatile LONG IsrMoves;
} SX_STRESS;

static BOOLEAN
SxMoveOne(SX_STRESS *Test)
{
    PSLIST_ENTRY Entry = InterlockedPopEntrySList(&Test->Header);
    SX_ITEM *Item;

    if (Entry == NULL)
    {
        return FALSE;
    }
    Item = CONTAINING_RECORD(Entry, SX_ITEM, Entry);
    if (__atomic_exchange_n(&Item->Taken, 1, __ATOMIC_ACQ_REL) != 0)
    {
        __atomic_add_fetch(&Test->Duplicates, 1, __ATOMIC_RELAXED);
    }
    Item->Entry.Next = (PSLIST_ENTRY)0xdead0; // scribble: a stale reader must not use it
    YieldProcessor();
    __atomic_store_n(&Item->Taken, 0, __ATOMIC_RELEASE);
    InterlockedPushEntrySList(&Test->Header, &Item->Entry);
    return TRUE;
}

static BOOLEAN
SxStressIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    SX_STRESS *Test = Context;

    if (SxMoveOne(Test))
    {
        __atomic_add_fetch(&Test->IsrMoves, 1, __ATOMIC_RELAXED);
    }
    return TRUE;
}

static VOID
SxStressRoutine(ULONG Index, PVOID Context)
{
    SX_STRESS *Test = Context;
    ULONG Neighbour = (Index + 1) % KiActiveProcessorCount;

    for (ULONG i = 0; i < SX_ITERATIONS; i++)
    {
        if (i % 4 == 0)
        {
            KiRequestInterrupt(Neighbour, SX_VECTOR);
        }
        if (SxMoveOne(Test))
        {
            __atomic_add_fetch(&Test->Moves, 1, __ATOMIC_RELAXED);
        }
    }
}

KTEST(ExSList, no_entry_is_lost_or_duplicated_under_contention)
{
    static SX_STRESS Test;
    PKINTERRUPT Interrupt;
    ULONG Found = 0;
    UCHAR Seen[SX_ENTRIES_PER_CPU * MAXIMUM_PROCESSORS];

    memset(&Test, 0, sizeof(Test));
    Test.Count = SX_ENTRIES_PER_CPU * KiActiveProcessorCount;
    Test.Items = ExAllocatePoolWithTag(NonPagedPool, Test.Count * sizeof(SX_ITEM), 'tsLS');
    KT_ASSERT(Test.Items != NULL);
    InitializeSListHead(&Test.Header);
    for (ULONG i = 0; i < Test.Count; i++)
    {
        Test.Items[i].Id = i;
        Test.Items[i].Taken = 0;
        InterlockedPushEntrySList(&Test.Header, &Test.Items[i].Entry);
    }
    if (IoConnectInterrupt(&Interrupt, SxStressIsr, &Test, NULL, SX_VECTOR, SX_VECTOR >> 4,
                           SX_VECTOR >> 4, Latched, FALSE, KeQueryActiveProcessors(),
                           FALSE) != STATUS_SUCCESS)
    {
        ExFreePoolWithTag(Test.Items, 'tsLS');
        KT_ASSERT(FALSE);
    }
    KtRunOnProcessors(0, SxStressRoutine, &Test);
    IoDisconnectInterrupt(Interrupt);

    KtLog("%d moves by processors, %d by the ISR", Test.Moves, Test.IsrMoves);
    KT_EXPECT_EQ(Test.Duplicates, 0);
    KT_EXPECT_GT(Test.IsrMoves, 0);
    KT_EXPECT_EQ(QueryDepthSList(&Test.Header), Test.Count);
    KT_EXPECT_EQ(SxSequence(&Test.Header),
                 (ULONG64)Test.Count + (ULONG64)Test.Moves + (ULONG64)Test.IsrMoves);
    memset(Seen, 0, sizeof(Seen));
    for (PSLIST_ENTRY Entry = SxFirst(&Test.Header); Entry != NULL && Found <= Test.Count;
         Entry = Entry->Next, Found++)
    {
        Seen[CONTAINING_RECORD(Entry, SX_ITEM, Entry)->Id]++;
    }
    KT_EXPECT_EQ(Found, Test.Count);
    for (ULONG i = 0; i < Test.Count; i++)
    {
        KT_EXPECT_EQ(Seen[i], 1);
    }
    ExFreePoolWithTag(Test.Items, 'tsLS');
}
