/* SPDX-License-Identifier: MIT */
/*
 * ExInterlockedList: the ExInterlocked doubly and singly linked list routines
 * and the plain LIST_ENTRY / SINGLE_LIST_ENTRY helpers, API.md §8. Return
 * values (NULL for an empty list, never the head), order, the removed
 * entry's links (poisoned in the checked build), IRQL and the interrupt flag
 * unchanged at every level, misaligned singly linked heads at HIGH_LEVEL (as
 * kmtest does), the 0x139/3 bug check on a corrupt list, and no entry lost or
 * duplicated while every processor and an ISR insert and remove at once.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define EL_ENTRIES_PER_CPU 16
#define EL_ITERATIONS      4000 // operations per processor in the contention tests
#define EL_VECTOR          0x73 // the ISR's vector (IRQL 7)

#define EL_POISON ((PLIST_ENTRY)0xBADDD0FFBADDD0FFull)

typedef struct _EL_ITEM
{
    LIST_ENTRY Link;
    SINGLE_LIST_ENTRY Single;
    ULONG Id;
    volatile LONG Taken; // 1 while some processor or ISR has it off the list
} EL_ITEM;

/* ---------------------------------------------------------------- doubly linked */

KTEST(ExInterlockedList, insert_head_returns_the_previous_first_entry_or_null)
{
    LIST_ENTRY Head, A, B;
    KSPIN_LOCK Lock = 0;

    InitializeListHead(&Head);
    KT_EXPECT_EQ(ExInterlockedInsertHeadList(&Head, &A, &Lock), NULL);
    KT_EXPECT_EQ(ExInterlockedInsertHeadList(&Head, &B, &Lock), &A);
    KT_EXPECT_EQ(Head.Flink, &B);
    KT_EXPECT_EQ(B.Flink, &A);
    KT_EXPECT_EQ(A.Flink, &Head);
    KT_EXPECT_EQ(Head.Blink, &A);
    KT_EXPECT_EQ(A.Blink, &B);
    KT_EXPECT_EQ(B.Blink, &Head);
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(ExInterlockedList, insert_tail_returns_the_previous_last_entry_or_null)
{
    LIST_ENTRY Head, A, B, C, D;
    KSPIN_LOCK Lock = 0;

    InitializeListHead(&Head);
    KT_EXPECT_EQ(ExInterlockedInsertTailList(&Head, &A, &Lock), NULL);
    KT_EXPECT_EQ(ExInterlockedInsertTailList(&Head, &B, &Lock), &A);
    KT_EXPECT_EQ(ExInterlockedInsertTailList(&Head, &C, &Lock), &B);
    KT_EXPECT_EQ(ExInterlockedInsertHeadList(&Head, &D, &Lock), &A); // D, A, B, C
    KT_EXPECT_EQ(Head.Flink, &D);
    KT_EXPECT_EQ(D.Flink, &A);
    KT_EXPECT_EQ(C.Flink, &Head);
    KT_EXPECT_EQ(Head.Blink, &C);
    KT_EXPECT_EQ(C.Blink, &B);
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(ExInterlockedList, remove_head_returns_entries_in_order_then_null)
{
    LIST_ENTRY Head, A, B;
    KSPIN_LOCK Lock = 0;
    PLIST_ENTRY Removed;

    InitializeListHead(&Head);
    KT_EXPECT_EQ(ExInterlockedRemoveHeadList(&Head, &Lock), NULL); // not the head
    KT_EXPECT_EQ(Head.Flink, &Head);
    ExInterlockedInsertTailList(&Head, &A, &Lock);
    ExInterlockedInsertTailList(&Head, &B, &Lock);
    Removed = ExInterlockedRemoveHeadList(&Head, &Lock);
    KT_EXPECT_EQ(Removed, &A);
#if DBG
    KT_EXPECT_EQ(A.Flink, EL_POISON); // the checked build poisons the removed links
    KT_EXPECT_EQ(A.Blink, EL_POISON);
#else
    KT_EXPECT_EQ(A.Flink, &B); // the free build leaves them as they were
    KT_EXPECT_EQ(A.Blink, &Head);
#endif
    KT_EXPECT_EQ(Head.Flink, &B);
    KT_EXPECT_EQ(B.Blink, &Head);
    KT_EXPECT_EQ(ExInterlockedRemoveHeadList(&Head, &Lock), &B);
    KT_EXPECT_EQ(ExInterlockedRemoveHeadList(&Head, &Lock), NULL);
    KT_EXPECT(IsListEmpty(&Head));
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(ExInterlockedList, irql_and_interrupt_flag_are_unchanged_at_every_level)
{
    static const KIRQL Levels[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL, 7, HIGH_LEVEL};

    for (ULONG i = 0; i < sizeof(Levels) / sizeof(Levels[0]); i++)
    {
        for (int InterruptsOn = 0; InterruptsOn <= 1; InterruptsOn++)
        {
            LIST_ENTRY Head, A;
            SINGLE_LIST_ENTRY SingleHead = {NULL}, S;
            KSPIN_LOCK Lock = 0;
            ULONG64 Flags;
            KIRQL Saved;

            KeRaiseIrql(Levels[i], &Saved);
            Flags = x86_save_disable();
            if (InterruptsOn)
            {
                x86_sti();
            }
            InitializeListHead(&Head);
            ExInterlockedInsertHeadList(&Head, &A, &Lock);
            ExInterlockedRemoveHeadList(&Head, &Lock);
            ExInterlockedInsertTailList(&Head, &A, &Lock);
            ExInterlockedRemoveHeadList(&Head, &Lock);
            ExInterlockedPushEntryList(&SingleHead, &S, &Lock);
            ExInterlockedPopEntryList(&SingleHead, &Lock);
            KT_EXPECT_EQ(KeGetCurrentIrql(), Levels[i]);
            KT_EXPECT_EQ(x86_interrupts_enabled(), (BOOLEAN)InterruptsOn);
            KT_EXPECT_EQ(Lock, 0);
            KT_EXPECT(IsListEmpty(&Head));
            x86_restore_flags(Flags);
            KeLowerIrql(Saved);
        }
    }
}

/* ---------------------------------------------------------------- singly linked */

KTEST(ExInterlockedList, push_and_pop_return_the_previous_first_entry)
{
    SINGLE_LIST_ENTRY Head = {NULL}, A, B;
    KSPIN_LOCK Lock = 0;

    KT_EXPECT_EQ(ExInterlockedPopEntryList(&Head, &Lock), NULL);
    KT_EXPECT_EQ(ExInterlockedPushEntryList(&Head, &A, &Lock), NULL);
    KT_EXPECT_EQ(ExInterlockedPushEntryList(&Head, &B, &Lock), &A);
    KT_EXPECT_EQ(Head.Next, &B);
    KT_EXPECT_EQ(ExInterlockedPopEntryList(&Head, &Lock), &B);
    KT_EXPECT_EQ(B.Next, &A); // left as it was
    KT_EXPECT_EQ(ExInterlockedPopEntryList(&Head, &Lock), &A);
    KT_EXPECT_EQ(ExInterlockedPopEntryList(&Head, &Lock), NULL);
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(ExInterlockedList, misaligned_singly_linked_entries_work_at_high_level)
{
    static UCHAR Buffer[64] __attribute__((aligned(16)));
    PSINGLE_LIST_ENTRY Head = (PSINGLE_LIST_ENTRY)(Buffer + 1);
    PSINGLE_LIST_ENTRY A = (PSINGLE_LIST_ENTRY)(Buffer + 19);
    PSINGLE_LIST_ENTRY B = (PSINGLE_LIST_ENTRY)(Buffer + 37);
    KSPIN_LOCK Lock = 0;
    KIRQL Saved;

    KeRaiseIrql(HIGH_LEVEL, &Saved);
    Head->Next = NULL;
    KT_EXPECT_EQ(ExInterlockedPushEntryList(Head, A, &Lock), NULL);
    KT_EXPECT_EQ(ExInterlockedPushEntryList(Head, B, &Lock), A);
    KT_EXPECT_EQ(ExInterlockedPopEntryList(Head, &Lock), B);
    KT_EXPECT_EQ(ExInterlockedPopEntryList(Head, &Lock), A);
    KT_EXPECT_EQ(ExInterlockedPopEntryList(Head, &Lock), NULL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), HIGH_LEVEL);
    KeLowerIrql(Saved);
}

/* ---------------------------------------------------------------- plain helpers */

KTEST(ExInterlockedList, plain_helpers_differ_on_empty_lists)
{
    LIST_ENTRY Head, A;
    SINGLE_LIST_ENTRY Single = {NULL}, S;

    InitializeListHead(&Head);
    KT_EXPECT_EQ(RemoveHeadList(&Head), &Head); // the head itself, not NULL
    KT_EXPECT_EQ(RemoveTailList(&Head), &Head);
    InsertTailList(&Head, &A);
    KT_EXPECT_EQ(RemoveEntryList(&A), TRUE); // the list is now empty
    KT_EXPECT(IsListEmpty(&Head));
    KT_EXPECT_EQ(PopEntryList(&Single), NULL);
    PushEntryList(&Single, &S);
    KT_EXPECT_EQ(PopEntryList(&Single), &S);
}

KTEST(ExInterlockedList, corrupt_list_bugchecks_security_check_failure)
{
    LIST_ENTRY Head, A, B, Stray = {NULL, NULL};
    KSPIN_LOCK Lock = 0;

    InitializeListHead(&Head);
    InsertTailList(&Head, &A);
    InsertTailList(&Head, &B);
    A.Blink = &Stray; // A's back link no longer points at the head
    KT_EXPECT_BUGCHECK(KERNEL_SECURITY_CHECK_FAILURE, RemoveHeadList(&Head));
    KT_EXPECT_BUGCHECK(KERNEL_SECURITY_CHECK_FAILURE, RemoveEntryList(&A));
    KT_EXPECT_BUGCHECK(KERNEL_SECURITY_CHECK_FAILURE, ExInterlockedRemoveHeadList(&Head, &Lock));
#if DBG
    /* The bug check left the lock held by this processor: release it by hand. */
    KT_EXPECT_EQ(Lock, (ULONG_PTR)KeGetCurrentPrcb() | 1);
    KeRaiseIrqlToDpcLevel();
    KeReleaseSpinLock(&Lock, PASSIVE_LEVEL);
#endif
    Lock = 0;
    A.Blink = &Head;
    B.Flink = &Stray; // the tail's forward link is broken
    KT_EXPECT_BUGCHECK(KERNEL_SECURITY_CHECK_FAILURE, InsertTailList(&Head, &Stray));
}

/* ---------------------------------------------------------------- contention */

typedef struct _EL_STRESS
{
    LIST_ENTRY Head;
    KSPIN_LOCK Lock;
    SINGLE_LIST_ENTRY SingleHead;
    KSPIN_LOCK SingleLock;
    BOOLEAN Single; // the singly linked list is under test
    EL_ITEM *Items;
    ULONG Count;
    volatile LONG Duplicates; // an item was handed out while already off the list
    volatile LONG IsrMoves;
    volatile LONG Moves;
} EL_STRESS;

/* Takes one item off the list and puts it back (head or tail); FALSE if the list was empty. */
static BOOLEAN
ElMoveOne(EL_STRESS *Test, BOOLEAN ToHead)
{
    EL_ITEM *Item;

    if (Test->Single)
    {
        PSINGLE_LIST_ENTRY Entry = ExInterlockedPopEntryList(&Test->SingleHead, &Test->SingleLock);
        if (Entry == NULL)
        {
            return FALSE;
        }
        Item = CONTAINING_RECORD(Entry, EL_ITEM, Single);
    }
    else
    {
        PLIST_ENTRY Entry = ExInterlockedRemoveHeadList(&Test->Head, &Test->Lock);
        if (Entry == NULL)
        {
            return FALSE;
        }
        Item = CONTAINING_RECORD(Entry, EL_ITEM, Link);
    }
    if (__atomic_exchange_n(&Item->Taken, 1, __ATOMIC_ACQ_REL) != 0)
    {
        __atomic_add_fetch(&Test->Duplicates, 1, __ATOMIC_RELAXED);
    }
    YieldProcessor();
    __atomic_store_n(&Item->Taken, 0, __ATOMIC_RELEASE);
    if (Test->Single)
    {
        ExInterlockedPushEntryList(&Test->SingleHead, &Item->Single, &Test->SingleLock);
    }
    else if (ToHead)
    {
        ExInterlockedInsertHeadList(&Test->Head, &Item->Link, &Test->Lock);
    }
    else
    {
        ExInterlockedInsertTailList(&Test->Head, &Item->Link, &Test->Lock);
    }
    return TRUE;
}

static BOOLEAN
ElStressIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    EL_STRESS *Test = Context;

    if (ElMoveOne(Test, TRUE))
    {
        __atomic_add_fetch(&Test->IsrMoves, 1, __ATOMIC_RELAXED);
    }
    return TRUE;
}

static VOID
ElStressRoutine(ULONG Index, PVOID Context)
{
    EL_STRESS *Test = Context;
    ULONG Neighbour = (Index + 1) % KiActiveProcessorCount;

    for (ULONG i = 0; i < EL_ITERATIONS; i++)
    {
        if (i % 4 == 0)
        {
            KiRequestInterrupt(Neighbour, EL_VECTOR);
        }
        if (ElMoveOne(Test, (i & 1) != 0))
        {
            __atomic_add_fetch(&Test->Moves, 1, __ATOMIC_RELAXED);
        }
    }
}

/* Walks the list after the run: every item exactly once, links consistent. */
static VOID
ElCheckFinalList(EL_STRESS *Test)
{
    UCHAR *Seen = ExAllocatePoolWithTag(NonPagedPool, Test->Count, 'tsLE');
    ULONG Found = 0;

    KT_ASSERT(Seen != NULL);
    memset(Seen, 0, Test->Count);
    if (Test->Single)
    {
        for (PSINGLE_LIST_ENTRY Entry = Test->SingleHead.Next;
             Entry != NULL && Found <= Test->Count; Entry = Entry->Next, Found++)
        {
            Seen[CONTAINING_RECORD(Entry, EL_ITEM, Single)->Id]++;
        }
    }
    else
    {
        for (PLIST_ENTRY Entry = Test->Head.Flink; Entry != &Test->Head && Found <= Test->Count;
             Entry = Entry->Flink, Found++)
        {
            KT_EXPECT_EQ(Entry->Flink->Blink, Entry);
            Seen[CONTAINING_RECORD(Entry, EL_ITEM, Link)->Id]++;
        }
    }
    KT_EXPECT_EQ(Found, Test->Count);
    for (ULONG i = 0; i < Test->Count; i++)
    {
        if (Seen[i] != 1)
        {
            KtLog("item %u is on the list %u times", i, Seen[i]);
            KtFail("every item is on the list once", __FILE__, __LINE__);
            break;
        }
    }
    ExFreePoolWithTag(Seen, 'tsLE');
}

static VOID
ElRunStress(BOOLEAN Single)
{
    static EL_STRESS Test;
    PKINTERRUPT Interrupt;

    memset(&Test, 0, sizeof(Test));
    Test.Single = Single;
    Test.Count = EL_ENTRIES_PER_CPU * KiActiveProcessorCount;
    Test.Items = ExAllocatePoolWithTag(NonPagedPool, Test.Count * sizeof(EL_ITEM), 'tsLE');
    KT_ASSERT(Test.Items != NULL);
    InitializeListHead(&Test.Head);
    for (ULONG i = 0; i < Test.Count; i++)
    {
        Test.Items[i].Id = i;
        Test.Items[i].Taken = 0;
        InsertTailList(&Test.Head, &Test.Items[i].Link);
        PushEntryList(&Test.SingleHead, &Test.Items[i].Single);
    }
    if (IoConnectInterrupt(&Interrupt, ElStressIsr, &Test, NULL, EL_VECTOR, EL_VECTOR >> 4,
                           EL_VECTOR >> 4, Latched, FALSE, KeQueryActiveProcessors(),
                           FALSE) != STATUS_SUCCESS)
    {
        ExFreePoolWithTag(Test.Items, 'tsLE');
        KT_ASSERT(FALSE);
    }
    KtRunOnProcessors(0, ElStressRoutine, &Test);
    IoDisconnectInterrupt(Interrupt);
    KtLog("%d moves by processors, %d by the ISR", Test.Moves, Test.IsrMoves);
    KT_EXPECT_EQ(Test.Duplicates, 0);
    KT_EXPECT_GT(Test.IsrMoves, 0);
    KT_EXPECT_EQ(Test.Lock, 0);
    KT_EXPECT_EQ(Test.SingleLock, 0);
    ElCheckFinalList(&Test);
    ExFreePoolWithTag(Test.Items, 'tsLE');
}

KTEST(ExInterlockedList, doubly_linked_list_loses_no_entry_under_contention)
{
    ElRunStress(FALSE);
}

KTEST(ExInterlockedList, singly_linked_list_loses_no_entry_under_contention)
{
    ElRunStress(TRUE);
}
