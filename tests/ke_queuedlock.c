/* SPDX-License-Identifier: MIT */
/*
 * KeQueuedSpinLock: in-stack queued (MCS) spin locks, API.md §4. Every
 * acquire/release pair at PASSIVE, APC, DISPATCH and HIGH with the lock word
 * and handle contents while held and after release (the kmtest checks), the
 * WAIT/OWNER hand-off seen from outside, FIFO grants in a controlled arrival
 * order, mutual exclusion on every processor at once, the checked build's
 * misuse bug checks and the deadlock watch on a queued waiter.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

/*
 * Each contention test runs for a fixed time rather than a fixed count: MCS
 * hands the lock to the next waiter even when QEMU's host has descheduled
 * that virtual processor, so under TCG a hand-off can cost a host time slice
 * and the rate varies a hundredfold with the processor count and host load.
 */
#define QL_CONTENTION_MS  1500
#define QL_MAX_ITERATIONS 20000 // per processor
#define QL_ROUNDS         8     // FIFO rounds, each a fresh random arrival order
#define QL_WAIT_MS        10000 // bound on every cross-processor wait

#define QL_LOCK_BITS(Handle) ((ULONG_PTR)(Handle)->LockQueue.Lock)

static ULONG
QlLocksHeld(VOID)
{
    return KeGetCurrentPrcb()->SpinLocksHeld;
}

/* ---------------------------------------------------------------- the IRQL matrix */

typedef VOID QL_ACQUIRE(PKSPIN_LOCK Lock, PKLOCK_QUEUE_HANDLE Handle);
typedef VOID QL_RELEASE(PKLOCK_QUEUE_HANDLE Handle);

/*
 * One acquire/release pair, as in ke_spinlock.c: legal entry IRQLs
 * MinIrql..MaxIrql, held at HeldIrql (KT_IRQL_UNCHANGED: the entry IRQL);
 * WritesOldIrql: the acquire stores the entry IRQL in the handle.
 */
typedef struct _QL_VARIANT
{
    const char *Name;
    QL_ACQUIRE *Acquire;
    QL_RELEASE *Release;
    KIRQL MinIrql;
    KIRQL MaxIrql;
    KIRQL HeldIrql;
    BOOLEAN WritesOldIrql;
    ULONG LowCode;
    ULONG HighCode;
    KIRQL FreeHighHeld;
} QL_VARIANT;

static const QL_VARIANT QlVariants[] = {
    {"KeAcquireInStackQueuedSpinLock", KeAcquireInStackQueuedSpinLock,
     KeReleaseInStackQueuedSpinLock, PASSIVE_LEVEL, DISPATCH_LEVEL, DISPATCH_LEVEL, TRUE, 0,
     IRQL_NOT_LESS_OR_EQUAL, DISPATCH_LEVEL},
    {"RaiseToSynch", KeAcquireInStackQueuedSpinLockRaiseToSynch, KeReleaseInStackQueuedSpinLock,
     PASSIVE_LEVEL, SYNCH_LEVEL, SYNCH_LEVEL, TRUE, 0, IRQL_NOT_LESS_OR_EQUAL, SYNCH_LEVEL},
    {"AtDpcLevel", KeAcquireInStackQueuedSpinLockAtDpcLevel,
     KeReleaseInStackQueuedSpinLockFromDpcLevel, DISPATCH_LEVEL, HIGH_LEVEL, KT_IRQL_UNCHANGED,
     FALSE, IRQL_NOT_GREATER_OR_EQUAL, 0, 0},
    {"ForDpc", KeAcquireInStackQueuedSpinLockForDpc, KeReleaseInStackQueuedSpinLockForDpc,
     PASSIVE_LEVEL, HIGH_LEVEL, KT_IRQL_UNCHANGED, TRUE, 0, 0, 0},
};

static VOID
QlCheckPair(const void *Context, KIRQL Entry, KIRQL Held)
{
    const QL_VARIANT *Variant = Context;
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Handle;
    ULONG HeldBefore = QlLocksHeld();

    memset(&Lock, 0x55, sizeof(Lock));
    KeInitializeSpinLock(&Lock);
    memset(&Handle, 0x55, sizeof(Handle));

    Variant->Acquire(&Lock, &Handle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), Held);
    KT_EXPECT_EQ(Lock, (ULONG_PTR)&Handle.LockQueue); // uncontended: the owner is the tail
    KT_EXPECT_EQ(QL_LOCK_BITS(&Handle), (ULONG_PTR)&Lock | LOCK_QUEUE_OWNER);
    KT_EXPECT_EQ(Handle.LockQueue.Next, NULL);
    KT_EXPECT_EQ(Handle.OldIrql, Variant->WritesOldIrql ? Entry : 0x55);
    KT_EXPECT_EQ(KeTestSpinLock(&Lock), FALSE);
    KT_EXPECT(x86_interrupts_enabled());
#if DBG
    KT_EXPECT_EQ(QlLocksHeld(), HeldBefore + 1);
#endif
    Variant->Release(&Handle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), Entry);
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(QL_LOCK_BITS(&Handle), (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Handle.LockQueue.Next, NULL);
    KT_EXPECT_EQ(KeTestSpinLock(&Lock), TRUE);
    KT_EXPECT_EQ(QlLocksHeld(), HeldBefore);
}

/* Checked build: Variant at the illegal level Entry bug-checks Code before touching the lock. */
static VOID
QlCheckMisuse(const void *Context, KIRQL Entry, ULONG Code)
{
    const QL_VARIANT *Variant = Context;
    KSPIN_LOCK Lock = 0;
    KLOCK_QUEUE_HANDLE Handle;
    ULONG_PTR Params[4];

    KT_EXPECT_BUGCHECK_PARAMS(Code, Params, Variant->Acquire(&Lock, &Handle));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Params[1], Entry);
    if (Code == IRQL_NOT_GREATER_OR_EQUAL)
    {
        KT_EXPECT_EQ(Params[2], DISPATCH_LEVEL);
    }
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), Entry);
}

static VOID
QlRunMatrix(const QL_VARIANT *Variant)
{
    const KT_IRQL_MATRIX Matrix = {
        .Name = Variant->Name,
        .MinIrql = Variant->MinIrql,
        .MaxIrql = Variant->MaxIrql,
        .HeldIrql = Variant->HeldIrql,
        .LowCode = Variant->LowCode,
        .HighCode = Variant->HighCode,
        .FreeHighHeld = Variant->FreeHighHeld,
    };

    KtRunIrqlMatrix(&Matrix, QlCheckPair, QlCheckMisuse, Variant);
}

KTEST(KeQueuedSpinLock, in_stack_irql_matrix)
{
    QlRunMatrix(&QlVariants[0]);
}

KTEST(KeQueuedSpinLock, raise_to_synch_irql_matrix)
{
    QlRunMatrix(&QlVariants[1]);
}

KTEST(KeQueuedSpinLock, at_dpc_level_irql_matrix)
{
    QlRunMatrix(&QlVariants[2]);
}

KTEST(KeQueuedSpinLock, for_dpc_irql_matrix)
{
    QlRunMatrix(&QlVariants[3]);
}

/* ---------------------------------------------------------------- single-processor behaviour */

KTEST(KeQueuedSpinLock, at_dpc_acquire_with_normal_release_lowers_to_handle_old_irql)
{
    KSPIN_LOCK Lock = 0;
    KLOCK_QUEUE_HANDLE Handle;

    KeRaiseIrqlToDpcLevel();
    Handle.OldIrql = PASSIVE_LEVEL; // the caller's job: AtDpcLevel does not write it
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&Lock, &Handle);
    KT_EXPECT_EQ(Handle.OldIrql, PASSIVE_LEVEL);
    KeReleaseInStackQueuedSpinLock(&Handle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(KeQueuedSpinLock, normal_acquire_with_from_dpc_release_stays_at_dispatch)
{
    KSPIN_LOCK Lock = 0;
    KLOCK_QUEUE_HANDLE Handle;

    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
    KeLowerIrql(Handle.OldIrql);
}

KTEST(KeQueuedSpinLock, nested_locks_release_in_reverse_order)
{
    KSPIN_LOCK Outer = 0, Inner = 0;
    KLOCK_QUEUE_HANDLE OuterHandle, InnerHandle;
    ULONG HeldBefore = QlLocksHeld();

    KeAcquireInStackQueuedSpinLock(&Outer, &OuterHandle);
    KeAcquireInStackQueuedSpinLock(&Inner, &InnerHandle);
    KT_EXPECT_EQ(OuterHandle.OldIrql, PASSIVE_LEVEL);
    KT_EXPECT_EQ(InnerHandle.OldIrql, DISPATCH_LEVEL);
    KT_EXPECT_EQ(Outer, (ULONG_PTR)&OuterHandle.LockQueue);
    KT_EXPECT_EQ(Inner, (ULONG_PTR)&InnerHandle.LockQueue);
#if DBG
    KT_EXPECT_EQ(QlLocksHeld(), HeldBefore + 2);
#endif
    KeReleaseInStackQueuedSpinLock(&InnerHandle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeReleaseInStackQueuedSpinLock(&OuterHandle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT_EQ(Outer, 0);
    KT_EXPECT_EQ(Inner, 0);
    KT_EXPECT_EQ(QlLocksHeld(), HeldBefore);
}

/* ---------------------------------------------------------------- checked-build misuse */

KTEST(KeQueuedSpinLock, recursive_acquire_bugchecks_already_owned)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    KLOCK_QUEUE_HANDLE Handle, Second;
    ULONG_PTR Params[4];

    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_ALREADY_OWNED, Params,
                              KeAcquireInStackQueuedSpinLockAtDpcLevel(&Lock, &Second));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)&Second);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_ALREADY_OWNED, Params,
                              KeAcquireInStackQueuedSpinLock(&Lock, &Second));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    /* Nothing was queued: the word and our handle are as before. */
    KT_EXPECT_EQ(Lock, (ULONG_PTR)&Handle.LockQueue);
    KT_EXPECT_EQ(Handle.LockQueue.Next, NULL);
    KT_EXPECT_EQ(QlLocksHeld(), 1);
    KeReleaseInStackQueuedSpinLock(&Handle);
    KT_EXPECT_EQ(Lock, 0);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeQueuedSpinLock, release_of_a_handle_that_does_not_own_bugchecks_not_owned)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    KLOCK_QUEUE_HANDLE Handle;
    ULONG_PTR Params[4];

    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    KeReleaseInStackQueuedSpinLock(&Handle);
    KeRaiseIrqlToDpcLevel();
    /* A second release of the same handle: its Lock has lost OWNER. */
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_NOT_OWNED, Params,
                              KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Params[1], (ULONG_PTR)&Handle);
    /* A handle that is waiting, not owning. */
    Handle.LockQueue.Lock = (PKSPIN_LOCK)((ULONG_PTR)&Lock | LOCK_QUEUE_WAIT);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_NOT_OWNED, Params, KeReleaseInStackQueuedSpinLock(&Handle));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(QlLocksHeld(), 0);
    KeLowerIrql(PASSIVE_LEVEL);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeQueuedSpinLock, release_below_dispatch_bugchecks_verifier_0x36)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    KLOCK_QUEUE_HANDLE Handle;
    ULONG_PTR Params[4];

    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    KeLowerIrql(PASSIVE_LEVEL); // a held queued lock at PASSIVE_LEVEL: the misuse
    KT_EXPECT_BUGCHECK_PARAMS(DRIVER_VERIFIER_DETECTED_VIOLATION, Params,
                              KeReleaseInStackQueuedSpinLock(&Handle));
    KT_EXPECT_EQ(Params[0], 0x36);
    KT_EXPECT_EQ(Params[1], PASSIVE_LEVEL);
    KT_EXPECT_EQ(Params[2], (ULONG_PTR)&Handle);
    KT_EXPECT_EQ(Lock, (ULONG_PTR)&Handle.LockQueue); // still held
    KeRaiseIrqlToDpcLevel();
    KeReleaseInStackQueuedSpinLock(&Handle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
#else
    KT_SKIP("checked build only");
#endif
}

/* ---------------------------------------------------------------- the hand-off, seen from outside
 */

typedef struct _QL_HANDOFF
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Owner;  // index 0's
    KLOCK_QUEUE_HANDLE Waiter; // index 1's
    volatile LONG OwnerHolds;
    volatile LONG WaiterGo;
    volatile LONG Released;
    ULONG_PTR WaiterLockInside; // Waiter.LockQueue.Lock once granted
    ULONG_PTR WordInside;       // the lock word once granted
} QL_HANDOFF;

static VOID
QlHandoffRoutine(ULONG Index, PVOID Context)
{
    QL_HANDOFF *Test = Context;

    if (Index == 1)
    {
        if (!KtWaitForLong(&Test->OwnerHolds, 1, QL_WAIT_MS))
        {
            return;
        }
        KeAcquireInStackQueuedSpinLock(&Test->Lock, &Test->Waiter);
        KT_EXPECT_EQ(Test->Released, 1); // granted only after the owner let go
        Test->WaiterLockInside = QL_LOCK_BITS(&Test->Waiter);
        Test->WordInside = Test->Lock;
        KeReleaseInStackQueuedSpinLock(&Test->Waiter);
        return;
    }

    KeAcquireInStackQueuedSpinLock(&Test->Lock, &Test->Owner);
    __atomic_store_n(&Test->OwnerHolds, 1, __ATOMIC_RELEASE);
    /* The waiter is queued once it is the tail and linked behind us. */
    if (KtWaitForWord(&Test->Lock, (ULONG_PTR)&Test->Waiter.LockQueue, QL_WAIT_MS) &&
        KtWaitForWord((volatile ULONG_PTR *)&Test->Owner.LockQueue.Next,
                      (ULONG_PTR)&Test->Waiter.LockQueue, QL_WAIT_MS))
    {
        KT_EXPECT_EQ(QL_LOCK_BITS(&Test->Waiter), (ULONG_PTR)&Test->Lock | LOCK_QUEUE_WAIT);
        KT_EXPECT_EQ(QL_LOCK_BITS(&Test->Owner), (ULONG_PTR)&Test->Lock | LOCK_QUEUE_OWNER);
    }
    else
    {
        KtFail("processor 1 queued behind the owner", __FILE__, __LINE__);
    }
    __atomic_store_n(&Test->Released, 1, __ATOMIC_RELEASE);
    KeReleaseInStackQueuedSpinLock(&Test->Owner);
    KT_EXPECT_EQ(Test->Owner.LockQueue.Next, NULL);
    KT_EXPECT_EQ(QL_LOCK_BITS(&Test->Owner), (ULONG_PTR)&Test->Lock);
}

KTEST_EX(KeQueuedSpinLock, waiter_waits_on_its_own_entry_and_is_handed_the_lock, KTEST_SMP_ONLY, 0)
{
    static QL_HANDOFF Test;

    memset(&Test, 0, sizeof(Test));
    KtRunOnProcessors(2, QlHandoffRoutine, &Test);
    KT_EXPECT_EQ(Test.WaiterLockInside, (ULONG_PTR)&Test.Lock | LOCK_QUEUE_OWNER);
    KT_EXPECT_EQ(Test.WordInside, (ULONG_PTR)&Test.Waiter.LockQueue);
    KT_EXPECT_EQ(Test.Lock, 0);
    KT_EXPECT_EQ(QL_LOCK_BITS(&Test.Waiter), (ULONG_PTR)&Test.Lock);
    KT_EXPECT_EQ(Test.Waiter.LockQueue.Next, NULL);
}

/* ---------------------------------------------------------------- FIFO */

/*
 * Index 0 holds the lock and lets the others queue one at a time in a random
 * order: it waits until the lock word (the tail) names the one it let go
 * before letting the next. Then it releases; each waiter notes its grant
 * position under the lock. Grants must follow the arrival order exactly.
 */
typedef struct _QL_FIFO
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Handles[MAXIMUM_PROCESSORS];
    volatile LONG Go[MAXIMUM_PROCESSORS];       // round number index i may queue in
    volatile LONG Position[MAXIMUM_PROCESSORS]; // grant position in this round
    ULONG Arrival[MAXIMUM_PROCESSORS];          // index queued k-th
    volatile LONG Grants;                       // under Lock
    volatile LONG Finished;                     // waiters done this round
    volatile LONG Abandon;
    ULONG Count;
    ULONG OutOfOrder;
} QL_FIFO;

static VOID
QlFifoWaiter(QL_FIFO *Test, ULONG Index)
{
    for (LONG Round = 1; Round <= QL_ROUNDS; Round++)
    {
        KIRQL OldIrql;

        if (!KtWaitForLong(&Test->Go[Index], Round, QL_WAIT_MS) || Test->Abandon)
        {
            return;
        }
        OldIrql = KeRaiseIrqlToDpcLevel();
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&Test->Lock, &Test->Handles[Index]);
        Test->Position[Index] = Test->Grants++;
        KeReleaseInStackQueuedSpinLockFromDpcLevel(&Test->Handles[Index]);
        KeLowerIrql(OldIrql);
        __atomic_add_fetch(&Test->Finished, 1, __ATOMIC_RELEASE);
    }
}

static BOOLEAN
QlFifoRound(QL_FIFO *Test, LONG Round)
{
    ULONG Waiters = Test->Count - 1;
    KIRQL OldIrql;

    for (ULONG k = 0; k < Waiters; k++) // a random arrival order of 1..Count-1
    {
        ULONG j = (ULONG)(KtRandom() % (k + 1));
        Test->Arrival[k] = Test->Arrival[j];
        Test->Arrival[j] = k + 1;
    }
    Test->Grants = 0;
    Test->Finished = 0;
    OldIrql = KeRaiseIrqlToDpcLevel();
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&Test->Lock, &Test->Handles[0]);
    for (ULONG k = 0; k < Waiters; k++)
    {
        ULONG Index = Test->Arrival[k];
        __atomic_store_n(&Test->Go[Index], Round, __ATOMIC_RELEASE);
        if (!KtWaitForWord(&Test->Lock, (ULONG_PTR)&Test->Handles[Index].LockQueue, QL_WAIT_MS))
        {
            KtFail("the waiter queued", __FILE__, __LINE__);
            Test->Abandon = 1;
            break;
        }
    }
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&Test->Handles[0]);
    KeLowerIrql(OldIrql);
    if (Test->Abandon || !KtWaitForLong(&Test->Finished, (LONG)Waiters, QL_WAIT_MS))
    {
        Test->Abandon = 1;
        return FALSE;
    }
    for (ULONG k = 0; k < Waiters; k++)
    {
        if (Test->Position[Test->Arrival[k]] != (LONG)k)
        {
            Test->OutOfOrder++;
        }
    }
    return TRUE;
}

static VOID
QlFifoRoutine(ULONG Index, PVOID Context)
{
    QL_FIFO *Test = Context;

    if (Index != 0)
    {
        QlFifoWaiter(Test, Index);
        return;
    }
    for (LONG Round = 1; Round <= QL_ROUNDS; Round++)
    {
        if (!QlFifoRound(Test, Round))
        {
            KtFail("every waiter was granted the lock", __FILE__, __LINE__);
            return;
        }
    }
}

KTEST_EX(KeQueuedSpinLock, lock_is_granted_in_arrival_order, KTEST_SMP_ONLY, 0)
{
    static QL_FIFO Test;
    ULONG64 Start = KtNowMs();

    if (KiActiveProcessorCount < 3)
    {
        KT_SKIP("needs three processors: two waiters queued at once");
    }
    memset(&Test, 0, sizeof(Test));
    Test.Count = KiActiveProcessorCount;
    KtRunOnProcessors(0, QlFifoRoutine, &Test);
    KtLog("%d rounds of %u waiters in %llu ms", QL_ROUNDS, Test.Count - 1, KtNowMs() - Start);
    KT_EXPECT_EQ(Test.OutOfOrder, 0);
    KT_EXPECT_EQ(Test.Abandon, 0);
    KT_EXPECT_EQ(Test.Lock, 0);
}

/* ---------------------------------------------------------------- contention */

typedef enum _QL_FLAVOUR
{
    QlFlavourInStack,
    QlFlavourRaiseToSynch,
    QlFlavourAtDpcLevel,
    QlFlavourForDpc,
} QL_FLAVOUR;

typedef struct _QL_CONTENTION
{
    QL_FLAVOUR Flavour;
    ULONG64 Deadline;                                // KtNowMs() at which to stop
    volatile ULONG Acquisitions[MAXIMUM_PROCESSORS]; // per processor
    KSPIN_LOCK Lock;
    volatile ULONG64 Counter; // changed only under Lock, non-atomically
    volatile ULONG Owner;
    volatile LONG Violations;
    volatile LONG Contended; // acquisitions that found the lock busy (logged)
    volatile LONG BadIrql;
} QL_CONTENTION;

static VOID
QlContentionRoutine(ULONG Index, PVOID Context)
{
    QL_CONTENTION *Test = Context;

    for (ULONG i = 0; i < QL_MAX_ITERATIONS && KtNowMs() < Test->Deadline; i++)
    {
        KLOCK_QUEUE_HANDLE Handle; // on this processor's stack, as intended
        KIRQL Expected = DISPATCH_LEVEL;
        KIRQL OldIrql = PASSIVE_LEVEL;
        ULONG64 Value;

        if (!KeTestSpinLock(&Test->Lock))
        {
            __atomic_add_fetch(&Test->Contended, 1, __ATOMIC_RELAXED);
        }
        switch (Test->Flavour)
        {
            case QlFlavourInStack:
                KeAcquireInStackQueuedSpinLock(&Test->Lock, &Handle);
                break;
            case QlFlavourRaiseToSynch:
                KeAcquireInStackQueuedSpinLockRaiseToSynch(&Test->Lock, &Handle);
                Expected = SYNCH_LEVEL;
                break;
            case QlFlavourAtDpcLevel:
                OldIrql = KeRaiseIrqlToDpcLevel();
                KeAcquireInStackQueuedSpinLockAtDpcLevel(&Test->Lock, &Handle);
                break;
            case QlFlavourForDpc:
            default:
                KeAcquireInStackQueuedSpinLockForDpc(&Test->Lock, &Handle);
                Expected = PASSIVE_LEVEL; // not a threaded DPC: no IRQL change
                break;
        }
        if (KeGetCurrentIrql() != Expected)
        {
            __atomic_add_fetch(&Test->BadIrql, 1, __ATOMIC_RELAXED);
        }
        Value = Test->Counter;
        Test->Owner = Index + 1;
        YieldProcessor();
        if (Test->Owner != Index + 1)
        {
            __atomic_add_fetch(&Test->Violations, 1, __ATOMIC_RELAXED);
        }
        Test->Counter = Value + 1;
        Test->Acquisitions[Index]++;
        switch (Test->Flavour)
        {
            case QlFlavourAtDpcLevel:
                KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
                KeLowerIrql(OldIrql);
                break;
            case QlFlavourForDpc:
                KeReleaseInStackQueuedSpinLockForDpc(&Handle);
                break;
            default:
                KeReleaseInStackQueuedSpinLock(&Handle);
                break;
        }
    }
}

static VOID
QlRunContention(QL_FLAVOUR Flavour)
{
    static QL_CONTENTION Test;
    ULONG64 Start = KtNowMs();
    ULONG64 Total = 0;

    memset(&Test, 0, sizeof(Test));
    Test.Flavour = Flavour;
    Test.Deadline = Start + QL_CONTENTION_MS;
    KtRunOnProcessors(0, QlContentionRoutine, &Test);
    for (ULONG i = 0; i < KiActiveProcessorCount; i++)
    {
        Total += Test.Acquisitions[i];
    }
    KtLog("%u processors: %llu acquisitions in %llu ms, %d found the lock busy",
          KiActiveProcessorCount, Total, KtNowMs() - Start, Test.Contended);
    KT_EXPECT_EQ(Test.Counter, Total);
    KT_EXPECT_EQ(Test.Violations, 0);
    KT_EXPECT_EQ(Test.BadIrql, 0);
    KT_EXPECT_EQ(Test.Lock, 0);
}

KTEST(KeQueuedSpinLock, in_stack_excludes_all_processors)
{
    QlRunContention(QlFlavourInStack);
}

KTEST(KeQueuedSpinLock, raise_to_synch_excludes_all_processors)
{
    QlRunContention(QlFlavourRaiseToSynch);
}

KTEST(KeQueuedSpinLock, at_dpc_level_excludes_all_processors)
{
    QlRunContention(QlFlavourAtDpcLevel);
}

KTEST(KeQueuedSpinLock, for_dpc_excludes_all_processors)
{
    QlRunContention(QlFlavourForDpc);
}

/* ---------------------------------------------------------------- deadlock watch */

#if DBG
#define QL_DEADLOCK_TIMEOUT_MS 300

typedef struct _QL_STUCK
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Holder; // index 1's
    KLOCK_QUEUE_HANDLE Waiter; // index 0's: stays queued after the bug check is caught
    volatile LONG Holds;
    volatile LONG Caught;
    ULONG_PTR Params[4];
} QL_STUCK;

/* Index 1: holds the lock until index 0 has caught its deadlock bug check. */
static __attribute__((noinline)) VOID
QlStuckHolder(QL_STUCK *Test)
{
    KeAcquireInStackQueuedSpinLock(&Test->Lock, &Test->Holder);
    __atomic_store_n(&Test->Holds, 1, __ATOMIC_RELEASE);
    KT_EXPECT(KtWaitForLong(&Test->Caught, 1, QL_WAIT_MS));
    KeReleaseInStackQueuedSpinLock(&Test->Holder); // hands off to the abandoned waiter
}

/* Index 0: queues behind the holder with the deadlock watch on. */
static __attribute__((noinline)) VOID
QlStuckWaiter(QL_STUCK *Test)
{
    ULONG Saved = KiSpinLockTimeoutMs;
    KIRQL OldIrql;

    if (!KtWaitForLong(&Test->Holds, 1, QL_WAIT_MS))
    {
        KtFail("processor 1 took the lock", __FILE__, __LINE__);
        __atomic_store_n(&Test->Caught, 1, __ATOMIC_RELEASE);
        return;
    }
    OldIrql = KeRaiseIrqlToDpcLevel();
    KiSpinLockTimeoutMs = QL_DEADLOCK_TIMEOUT_MS;
    KT_EXPECT_BUGCHECK_PARAMS(SPINDLE_SPIN_LOCK_DEADLOCK, Test->Params,
                              KeAcquireInStackQueuedSpinLockAtDpcLevel(&Test->Lock, &Test->Waiter));
    KiSpinLockTimeoutMs = Saved;
    /* Still queued: the holder's release hands the lock to this handle. */
    KT_EXPECT_EQ(QL_LOCK_BITS(&Test->Waiter), (ULONG_PTR)&Test->Lock | LOCK_QUEUE_WAIT);
    __atomic_store_n(&Test->Caught, 1, __ATOMIC_RELEASE);
    if (KtWaitForWord((volatile ULONG_PTR *)&Test->Waiter.LockQueue.Lock,
                      (ULONG_PTR)&Test->Lock | LOCK_QUEUE_OWNER, QL_WAIT_MS))
    {
        KeReleaseInStackQueuedSpinLockFromDpcLevel(&Test->Waiter);
    }
    else
    {
        KtFail("the abandoned waiter was handed the lock", __FILE__, __LINE__);
    }
    KeLowerIrql(OldIrql);
}

static VOID
QlStuckRoutine(ULONG Index, PVOID Context)
{
    if (Index == 0)
    {
        QlStuckWaiter(Context);
    }
    else
    {
        QlStuckHolder(Context);
    }
}

static BOOLEAN
QlSymbolStartsWith(ULONG_PTR Address, const char *Prefix)
{
    ULONG64 Offset;
    const char *Name = KiLookupSymbol(Address, &Offset);

    return Name != NULL && strncmp(Name, Prefix, strlen(Prefix)) == 0;
}

#endif /* DBG */

KTEST_EX(KeQueuedSpinLock, endless_wait_ends_in_the_deadlock_bugcheck, KTEST_SMP_ONLY, 0)
{
#if DBG
    static QL_STUCK Test;

    memset(&Test, 0, sizeof(Test));
    KtRunOnProcessors(2, QlStuckRoutine, &Test);
    KT_EXPECT_EQ(Test.Params[0], (ULONG_PTR)&Test.Lock);
    KT_EXPECT_EQ(Test.Params[1], 1); // the owner: processor 1
    KT_EXPECT(QlSymbolStartsWith(Test.Params[2], "QlStuckHolder"));
    KT_EXPECT(QlSymbolStartsWith(Test.Params[3], "QlStuckWaiter"));
    KT_EXPECT_EQ(Test.Lock, 0);
#else
    KT_SKIP("checked build only");
#endif
}

/*
 * Outside a threaded DPC, KeReleaseInStackQueuedSpinLockForDpc is the
 * FromDpcLevel form: it leaves IRQL alone whatever the handle's OldIrql
 * (API.md §4; kmtest KeSpinLock: acquire raising, release ForDpc, IRQL stays
 * DISPATCH_LEVEL).
 */
KTEST(KeQueuedSpinLock, release_for_dpc_leaves_irql_alone_outside_a_threaded_dpc)
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Handle;

    KeInitializeSpinLock(&Lock);
    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    KT_EXPECT_EQ(Handle.OldIrql, PASSIVE_LEVEL);
    KeReleaseInStackQueuedSpinLockForDpc(&Handle);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
    KeLowerIrql(PASSIVE_LEVEL);
}

#if DBG
/*
 * A copied handle released after the real one (the lock is free again), and
 * one that never took the lock but claims ownership: 0x10 at once, not a
 * hand-off wait that ends in a deadlock report; SpinLocksHeld is untouched.
 */
KTEST(KeQueuedSpinLock, releasing_a_copied_or_forged_handle_bugchecks_not_owned)
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Handle;
    KLOCK_QUEUE_HANDLE Copy;
    KLOCK_QUEUE_HANDLE Forged;
    KIRQL OldIrql;
    ULONG HeldBefore = KeGetCurrentPrcb()->SpinLocksHeld;

    KeInitializeSpinLock(&Lock);
    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    Copy = Handle;
    KeReleaseInStackQueuedSpinLock(&Handle);
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_BUGCHECK(SPIN_LOCK_NOT_OWNED, KeReleaseInStackQueuedSpinLockFromDpcLevel(&Copy));
    KT_EXPECT_EQ(KeGetCurrentPrcb()->SpinLocksHeld, HeldBefore);
    KT_EXPECT_EQ(Lock, 0);

    /* Forged: never queued, claims ownership of a lock that is free again. */
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&Lock, &Handle);
    Forged.LockQueue.Next = NULL;
    Forged.LockQueue.Lock = (PKSPIN_LOCK)((ULONG_PTR)&Lock | LOCK_QUEUE_OWNER);
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle); // the real owner releases
    KT_EXPECT_BUGCHECK(SPIN_LOCK_NOT_OWNED, KeReleaseInStackQueuedSpinLockFromDpcLevel(&Forged));
    KT_EXPECT_EQ(KeGetCurrentPrcb()->SpinLocksHeld, HeldBefore);
    KeLowerIrql(OldIrql);
}
#endif
