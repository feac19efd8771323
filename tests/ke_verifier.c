/* SPDX-License-Identifier: MIT */
/*
 * The checked-build lock-order verifier (kernel/ke/verifier.c): an inversion
 * is reported with 0xC4/0x1001 before anything deadlocks, a longer cycle too,
 * a consistent order never; a lock shared with an interrupt and taken with it
 * deliverable is 0xC4/0x1002; an identity ends when its lock is initialised
 * again or its pool is freed. The inversions here never deadlock: the two
 * orders are taken one after the other, each processor releasing first.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"

#define VF_VECTOR 0x9B // the IRQL test's device vector (IRQL 9)
#define VF_IRQL   9

/* Runs Statement expecting bug check Code; copies the four parameters to Params. */
#define VF_EXPECT_BUGCHECK(Code, Params, Statement)                                                \
    do                                                                                             \
    {                                                                                              \
        KT_BUGCHECK_CATCH VfCatch_;                                                                \
        VfCatch_.Expected = (Code);                                                                \
        for (int VfI_ = 0; VfI_ < 4; VfI_++)                                                       \
        {                                                                                          \
            VfCatch_.Parameter[VfI_] = 0;                                                          \
        }                                                                                          \
        KtArmBugCheck(&VfCatch_);                                                                  \
        if (x86_setjmp(&VfCatch_.Jump) == 0)                                                       \
        {                                                                                          \
            Statement;                                                                             \
            KtDisarmBugCheck(&VfCatch_);                                                           \
            KtCheckBugCheck(&VfCatch_, (Code), FALSE, #Statement, __FILE__, __LINE__);             \
        }                                                                                          \
        else                                                                                       \
        {                                                                                          \
            KtCheckBugCheck(&VfCatch_, (Code), TRUE, #Statement, __FILE__, __LINE__);              \
        }                                                                                          \
        for (int VfI_ = 0; VfI_ < 4; VfI_++)                                                       \
        {                                                                                          \
            (Params)[VfI_] = VfCatch_.Parameter[VfI_];                                             \
        }                                                                                          \
    } while (0)

#if DBG
static VOID
VfRequireVerifier(VOID)
{
    if (!KiVerifierEnabled)
    {
        KT_SKIP("the verifier is off (verifier=0)");
    }
}

/* Takes First then Second (ordinary locks), releases in the opposite order. */
static VOID
VfTakeInOrder(PKSPIN_LOCK First, PKSPIN_LOCK Second)
{
    KIRQL OldIrql;

    KeAcquireSpinLock(First, &OldIrql);
    KeAcquireSpinLockAtDpcLevel(Second);
    KeReleaseSpinLockFromDpcLevel(Second);
    KeReleaseSpinLock(First, OldIrql);
}

typedef struct _VF_PAIR
{
    PKSPIN_LOCK First, Second;
    volatile ULONG Processor;
} VF_PAIR;

/* Index 1 (processor 1) takes the pair in order; index 0 does nothing. */
static VOID
VfTakeOnProcessorOne(ULONG Index, PVOID Context)
{
    VF_PAIR *Pair = Context;

    if (Index == 1)
    {
        VfTakeInOrder(Pair->First, Pair->Second);
        Pair->Processor = KeGetCurrentProcessorNumber();
    }
}
#endif

KTEST_EX(KeVerifier, abba_on_two_processors_is_reported_before_it_deadlocks, KTEST_SMP_ONLY, 0)
{
#if DBG
    KSPIN_LOCK A, B;
    VF_PAIR Pair = {&A, &B, ~0u};
    ULONG_PTR Params[4];
    KIRQL OldIrql;

    VfRequireVerifier();
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
    KtRunOnProcessors(2, VfTakeOnProcessorOne, &Pair); // processor 1: A then B
    KT_ASSERT_EQ(Pair.Processor, 1);
    KT_EXPECT(KiVerifierOrderRecorded(&A, &B));

    KeAcquireSpinLock(&B, &OldIrql); // processor 0: B, then A closes the cycle
    VF_EXPECT_BUGCHECK(DRIVER_VERIFIER_DETECTED_VIOLATION, Params, KeAcquireSpinLockAtDpcLevel(&A));
    KT_EXPECT_EQ(Params[0], KI_VERIFIER_LOCK_ORDER);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)&A); // the lock being taken
    KT_EXPECT_EQ(Params[2], (ULONG_PTR)&B); // the lock held
    KT_EXPECT_EQ(Params[3], 1);             // who recorded A then B
    KT_EXPECT_EQ(A, 0);                     // reported before A was touched
    KT_EXPECT(!KiVerifierOrderRecorded(&B, &A));
    KeReleaseSpinLock(&B, OldIrql);

    /* The same inversion through in-stack queued locks. */
    {
        KLOCK_QUEUE_HANDLE HandleB, HandleA;
        KeAcquireInStackQueuedSpinLock(&B, &HandleB);
        VF_EXPECT_BUGCHECK(DRIVER_VERIFIER_DETECTED_VIOLATION, Params,
                           KeAcquireInStackQueuedSpinLockAtDpcLevel(&A, &HandleA));
        KT_EXPECT_EQ(Params[0], KI_VERIFIER_LOCK_ORDER);
        KT_EXPECT_EQ(Params[1], (ULONG_PTR)&A);
        KeReleaseInStackQueuedSpinLock(&HandleB);
    }
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeVerifier, three_lock_cycle_is_reported)
{
#if DBG
    KSPIN_LOCK A, B, C;
    ULONG_PTR Params[4];
    KIRQL OldIrql;

    VfRequireVerifier();
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
    KeInitializeSpinLock(&C);
    VfTakeInOrder(&A, &B);
    VfTakeInOrder(&B, &C);
    VfTakeInOrder(&A, &C); // consistent with A -> B -> C: no report

    KeAcquireSpinLock(&C, &OldIrql);
    VF_EXPECT_BUGCHECK(DRIVER_VERIFIER_DETECTED_VIOLATION, Params, KeAcquireSpinLockAtDpcLevel(&A));
    KT_EXPECT_EQ(Params[0], KI_VERIFIER_LOCK_ORDER);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)&A);
    KT_EXPECT_EQ(Params[2], (ULONG_PTR)&C);
    KT_EXPECT_EQ(A, 0);
    KeReleaseSpinLock(&C, OldIrql);
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
    KeInitializeSpinLock(&C);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST_EX(KeVerifier, consistent_order_taken_many_times_is_never_reported, KTEST_SLOW, 0)
{
#if DBG
    KSPIN_LOCK A, B, C;
    LARGE_INTEGER Frequency;
    ULONG64 Start = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    ULONG64 Budget = (ULONG64)Frequency.QuadPart * 5; // 5 s or 1,000,000 rounds
    ULONG Rounds;

    VfRequireVerifier();
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
    KeInitializeSpinLock(&C);
    for (Rounds = 0; Rounds < 1000000; Rounds++)
    {
        KLOCK_QUEUE_HANDLE Handle;
        KIRQL OldIrql;

        KeAcquireSpinLock(&A, &OldIrql);
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&B, &Handle);
        KeAcquireSpinLockAtDpcLevel(&C);
        /* Out-of-order release is legal. */
        KeReleaseSpinLockFromDpcLevel(&A);
        KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
        KeReleaseSpinLockFromDpcLevel(&C);
        KeLowerIrql(OldIrql);
        if ((Rounds & 1023) == 0 &&
            (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Start > Budget)
        {
            break;
        }
    }
    KtLog("%u rounds of A, B, C in order", Rounds);
    KT_EXPECT_GT(Rounds, 1000);
    KT_EXPECT(KiVerifierOrderRecorded(&A, &B));
    KT_EXPECT(KiVerifierOrderRecorded(&B, &C));
    KT_EXPECT(KiVerifierOrderRecorded(&A, &C));
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
    KeInitializeSpinLock(&C);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeVerifier, reinitialised_lock_forgets_its_orders)
{
#if DBG
    KSPIN_LOCK A, B;

    VfRequireVerifier();
    KeInitializeSpinLock(&A);
    KeInitializeSpinLock(&B);
    VfTakeInOrder(&A, &B);
    KT_EXPECT(KiVerifierOrderRecorded(&A, &B));
    KeInitializeSpinLock(&A); // a new lock at A's address
    KT_EXPECT(!KiVerifierOrderRecorded(&A, &B));
    VfTakeInOrder(&B, &A); // no report: the old A's order is gone
    KT_EXPECT(KiVerifierOrderRecorded(&B, &A));
    KeInitializeSpinLock(&B); // the other end works too
    KT_EXPECT(!KiVerifierOrderRecorded(&B, &A));
    KeInitializeSpinLock(&A);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeVerifier, freed_pool_forgets_the_orders_of_its_locks)
{
#if DBG
    PKSPIN_LOCK Block;
    KSPIN_LOCK Outside;

    VfRequireVerifier();
    Block = ExAllocatePoolWithTag(NonPagedPool, 4 * sizeof(KSPIN_LOCK), 'fVtK');
    KT_ASSERT(Block != NULL);
    KeInitializeSpinLock(&Outside);
    Block[0] = 0; // not initialised through KeInitializeSpinLock: pool ends it all the same
    Block[3] = 0;
    VfTakeInOrder(&Block[0], &Block[3]);
    VfTakeInOrder(&Outside, &Block[3]);
    VfTakeInOrder(&Block[0], &Outside);
    KT_EXPECT(KiVerifierOrderRecorded(&Block[0], &Block[3]));
    KT_EXPECT(KiVerifierOrderRecorded(&Outside, &Block[3]));
    ExFreePool(Block);
    KT_EXPECT(!KiVerifierOrderRecorded(&Block[0], &Block[3]));
    KT_EXPECT(!KiVerifierOrderRecorded(&Outside, &Block[3]));
    KT_EXPECT(!KiVerifierOrderRecorded(&Block[0], &Outside));
    KeInitializeSpinLock(&Outside);
#else
    KT_SKIP("checked build only");
#endif
}

#if DBG
typedef struct _VF_ISR
{
    KSPIN_LOCK Shared; // taken by the ISR at VF_IRQL
    volatile LONG Calls;
} VF_ISR;

static BOOLEAN
VfIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    VF_ISR *Isr = Context;

    (void)Interrupt;
    KeAcquireSpinLockAtDpcLevel(&Isr->Shared);
    KeReleaseSpinLockFromDpcLevel(&Isr->Shared);
    __atomic_add_fetch(&Isr->Calls, 1, __ATOMIC_RELEASE);
    return TRUE;
}
#endif

KTEST(KeVerifier, lock_shared_with_an_isr_taken_with_interrupts_on_is_reported)
{
#if DBG
    static VF_ISR Isr;
    PKINTERRUPT Interrupt;
    ULONG_PTR Params[4];
    KIRQL OldIrql;

    VfRequireVerifier();
    KeInitializeSpinLock(&Isr.Shared);
    Isr.Calls = 0;
    KT_ASSERT_EQ(IoConnectInterrupt(&Interrupt, VfIsr, &Isr, NULL, VF_VECTOR, VF_IRQL, VF_IRQL,
                                    Latched, FALSE, 1, FALSE),
                 STATUS_SUCCESS);
    KiRequestInterrupt(0, VF_VECTOR); // at PASSIVE_LEVEL: delivered at once
    for (ULONG i = 0; i < 1000000 && __atomic_load_n(&Isr.Calls, __ATOMIC_ACQUIRE) == 0; i++)
    {
        KeStallExecutionProcessor(10);
    }
    KT_ASSERT_EQ(Isr.Calls, 1);

    /* With interrupts off the ISR cannot interrupt the holder: legal. */
    {
        ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(&Isr.Shared);
        KiReleaseSpinLockRestoreInterrupts(&Isr.Shared, Flags);
    }
    /* At DISPATCH_LEVEL with interrupts on, VF_IRQL is deliverable: reported. */
    VF_EXPECT_BUGCHECK(DRIVER_VERIFIER_DETECTED_VIOLATION, Params,
                       KeAcquireSpinLock(&Isr.Shared, &OldIrql));
    KT_EXPECT_EQ(Params[0], KI_VERIFIER_LOCK_IRQL);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)&Isr.Shared);
    KT_EXPECT_EQ(Params[2], VF_IRQL);
    KT_EXPECT_EQ(Params[3], DISPATCH_LEVEL);
    KT_EXPECT_EQ(Isr.Shared, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    IoDisconnectInterrupt(Interrupt);
    KeInitializeSpinLock(&Isr.Shared);
#else
    KT_SKIP("checked build only");
#endif
}
