/* SPDX-License-Identifier: MIT */
/*
 * KeSpinLock: ordinary spin locks, API.md §3. Every acquire/release pair at
 * PASSIVE, APC, DISPATCH and HIGH (IRQL before, while held and after; the lock
 * word; the checked build's held-lock count), the kmtest pairings, the
 * checked build's misuse bug checks with their parameters, mutual exclusion
 * on every processor at once, and the deadlock watch ending an ABBA deadlock.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define SL_CONTENTION_MS  1000   // each contention test runs this long...
#define SL_MAX_ITERATIONS 100000 // ... or this many acquisitions per processor
#define SL_WAIT_MS        10000  // bound on every cross-processor wait

/* The word of a lock this processor holds. */
static ULONG_PTR
SlHeldWord(VOID)
{
#if DBG
    return (ULONG_PTR)KeGetCurrentPrcb() | 1;
#else
    return 1;
#endif
}

static ULONG
SlLocksHeld(VOID)
{
    return KeGetCurrentPrcb()->SpinLocksHeld;
}

/* ---------------------------------------------------------------- the IRQL matrix */

typedef KIRQL SL_ACQUIRE(PKSPIN_LOCK Lock);
typedef VOID SL_RELEASE(PKSPIN_LOCK Lock, KIRQL OldIrql);

/*
 * One acquire/release pair. Legal entry IRQLs are MinIrql..MaxIrql; the lock
 * is held at HeldIrql (KT_IRQL_UNCHANGED: the entry IRQL) and Acquire returns the
 * entry IRQL. Below MinIrql the checked build raises LowCode, above MaxIrql
 * HighCode; the free build then holds at FreeLowHeld / FreeHighHeld.
 */
typedef struct _SL_VARIANT
{
    const char *Name;
    SL_ACQUIRE *Acquire;
    SL_RELEASE *Release;
    KIRQL MinIrql;
    KIRQL MaxIrql;
    KIRQL HeldIrql;
    ULONG LowCode;
    ULONG HighCode;
    KIRQL FreeHighHeld;
} SL_VARIANT;

static KIRQL
SlAcquireNormal(PKSPIN_LOCK Lock)
{
    KIRQL OldIrql;
    KeAcquireSpinLock(Lock, &OldIrql);
    return OldIrql;
}

static VOID
SlReleaseNormal(PKSPIN_LOCK Lock, KIRQL OldIrql)
{
    KeReleaseSpinLock(Lock, OldIrql);
}

static KIRQL
SlAcquireAtDpcLevel(PKSPIN_LOCK Lock)
{
    KeAcquireSpinLockAtDpcLevel(Lock);
    return KeGetCurrentIrql();
}

static VOID
SlReleaseFromDpcLevel(PKSPIN_LOCK Lock, KIRQL OldIrql)
{
    (void)OldIrql;
    KeReleaseSpinLockFromDpcLevel(Lock);
}

static KIRQL
SlTryToAcquire(PKSPIN_LOCK Lock)
{
    KT_EXPECT_EQ(KeTryToAcquireSpinLockAtDpcLevel(Lock), TRUE);
    return KeGetCurrentIrql();
}

static const SL_VARIANT SlVariants[] = {
    {"KeAcquireSpinLock", SlAcquireNormal, SlReleaseNormal, PASSIVE_LEVEL, DISPATCH_LEVEL,
     DISPATCH_LEVEL, 0, IRQL_NOT_LESS_OR_EQUAL, DISPATCH_LEVEL},
    {"RaiseToDpc", KeAcquireSpinLockRaiseToDpc, SlReleaseNormal, PASSIVE_LEVEL, DISPATCH_LEVEL,
     DISPATCH_LEVEL, 0, IRQL_NOT_LESS_OR_EQUAL, DISPATCH_LEVEL},
    {"RaiseToSynch", KeAcquireSpinLockRaiseToSynch, SlReleaseNormal, PASSIVE_LEVEL, SYNCH_LEVEL,
     SYNCH_LEVEL, 0, IRQL_NOT_LESS_OR_EQUAL, SYNCH_LEVEL},
    {"AtDpcLevel", SlAcquireAtDpcLevel, SlReleaseFromDpcLevel, DISPATCH_LEVEL, HIGH_LEVEL,
     KT_IRQL_UNCHANGED, IRQL_NOT_GREATER_OR_EQUAL, 0, 0},
    {"TryToAcquire", SlTryToAcquire, SlReleaseFromDpcLevel, DISPATCH_LEVEL, HIGH_LEVEL,
     KT_IRQL_UNCHANGED, IRQL_NOT_GREATER_OR_EQUAL, 0, 0},
    {"ForDpc", KeAcquireSpinLockForDpc, KeReleaseSpinLockForDpc, PASSIVE_LEVEL, HIGH_LEVEL,
     KT_IRQL_UNCHANGED, 0, 0, 0},
};

/* Takes and releases a fresh lock with Variant at Entry (a legal level, or the free build). */
static VOID
SlCheckPair(const void *Context, KIRQL Entry, KIRQL Held)
{
    const SL_VARIANT *Variant = Context;
    KSPIN_LOCK Lock;
    ULONG HeldBefore = SlLocksHeld();
    KIRQL Returned;

    memset(&Lock, 0x55, sizeof(Lock));
    KeInitializeSpinLock(&Lock);
    KT_EXPECT_EQ(Lock, 0);

    Returned = Variant->Acquire(&Lock);
    KT_EXPECT_EQ(KeGetCurrentIrql(), Held);
    KT_EXPECT_EQ(Returned, Entry); // the old IRQL, or (no-raise forms) the unchanged one
    KT_EXPECT_EQ(Lock, SlHeldWord());
    KT_EXPECT_EQ(KeTestSpinLock(&Lock), FALSE);
    KT_EXPECT(x86_interrupts_enabled());
#if DBG
    KT_EXPECT_EQ(SlLocksHeld(), HeldBefore + 1);
#endif
    Variant->Release(&Lock, Returned);
    KT_EXPECT_EQ(KeGetCurrentIrql(), Entry);
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(KeTestSpinLock(&Lock), TRUE);
    KT_EXPECT_EQ(SlLocksHeld(), HeldBefore);
}

/* Checked build: Variant at the illegal level Entry bug-checks Code before touching the lock. */
static VOID
SlCheckMisuse(const void *Context, KIRQL Entry, ULONG Code)
{
    const SL_VARIANT *Variant = Context;
    KSPIN_LOCK Lock = 0;
    ULONG_PTR Params[4];

    KT_EXPECT_BUGCHECK_PARAMS(Code, Params, Variant->Acquire(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Params[1], Entry);
    if (Code == IRQL_NOT_GREATER_OR_EQUAL)
    {
        KT_EXPECT_EQ(Params[2], DISPATCH_LEVEL);
    }
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), Entry);
}

/* Runs Variant at every entry IRQL (KtRunIrqlMatrix): legal ones, and the misuse ones. */
static VOID
SlRunMatrix(const SL_VARIANT *Variant)
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

    KtRunIrqlMatrix(&Matrix, SlCheckPair, SlCheckMisuse, Variant);
}

KTEST(KeSpinLock, acquire_spin_lock_irql_matrix)
{
    SlRunMatrix(&SlVariants[0]);
}

KTEST(KeSpinLock, raise_to_dpc_irql_matrix)
{
    SlRunMatrix(&SlVariants[1]);
}

KTEST(KeSpinLock, raise_to_synch_irql_matrix)
{
    SlRunMatrix(&SlVariants[2]);
}

KTEST(KeSpinLock, at_dpc_level_irql_matrix)
{
    SlRunMatrix(&SlVariants[3]);
}

KTEST(KeSpinLock, try_to_acquire_irql_matrix)
{
    SlRunMatrix(&SlVariants[4]);
}

KTEST(KeSpinLock, for_dpc_irql_matrix)
{
    SlRunMatrix(&SlVariants[5]);
}

/* ---------------------------------------------------------------- single-processor behaviour */

KTEST(KeSpinLock, initialize_writes_zero)
{
    KSPIN_LOCK Lock = (KSPIN_LOCK)0x5555555555555555ull;

    KeInitializeSpinLock(&Lock);
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(KeSpinLock, test_spin_lock_counts_any_nonzero_word_as_held)
{
    static const ULONG_PTR Held[] = {1, 2, ~(ULONG_PTR)0, (ULONG_PTR)1 << 63};
    KSPIN_LOCK Lock = 0;

    KT_EXPECT_EQ(KeTestSpinLock(&Lock), TRUE);
    for (ULONG i = 0; i < sizeof(Held) / sizeof(Held[0]); i++)
    {
        Lock = Held[i];
        KT_EXPECT_EQ(KeTestSpinLock(&Lock), FALSE);
        KT_EXPECT_EQ(Lock, Held[i]); // never acquires or changes it
    }
    Lock = 0;
    KT_EXPECT_EQ(KeTestSpinLock(&Lock), TRUE);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeSpinLock, old_irql_is_written_after_the_lock_is_held)
{
    KSPIN_LOCK Lock = 0;
    KIRQL OldIrql = 0x77;
    KIRQL Saved;

    KeRaiseIrql(APC_LEVEL, &Saved);
    KeAcquireSpinLock(&Lock, &OldIrql);
    KT_EXPECT_EQ(OldIrql, APC_LEVEL);
    KT_EXPECT_EQ(Lock, SlHeldWord());
    KeReleaseSpinLock(&Lock, OldIrql);
    KT_EXPECT_EQ(KeGetCurrentIrql(), APC_LEVEL);
    KeLowerIrql(Saved);
}

KTEST(KeSpinLock, at_dpc_acquire_with_normal_release_lowers_to_given_irql)
{
    KSPIN_LOCK Lock = 0;

    KeRaiseIrqlToDpcLevel();
    KeAcquireSpinLockAtDpcLevel(&Lock);
    KT_EXPECT_EQ(Lock, SlHeldWord());
    KeReleaseSpinLock(&Lock, PASSIVE_LEVEL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
}

KTEST(KeSpinLock, normal_acquire_with_from_dpc_release_stays_at_dispatch)
{
    KSPIN_LOCK Lock = 0;
    KIRQL OldIrql;

    KeAcquireSpinLock(&Lock, &OldIrql);
    KeReleaseSpinLockFromDpcLevel(&Lock);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
    KeLowerIrql(OldIrql);
}

KTEST(KeSpinLock, try_on_a_held_lock_fails_at_once_and_changes_nothing)
{
    /* Another processor's ownership as the checked build writes it (no such processor needed). */
#if DBG
    ULONG_PTR Foreign = (ULONG_PTR)KiGetPrcb(MAXIMUM_PROCESSORS - 1) | 1;
#else
    ULONG_PTR Foreign = 1;
#endif
    KSPIN_LOCK Lock = Foreign;
    ULONG HeldBefore = SlLocksHeld();
    KIRQL OldIrql = KeRaiseIrqlToDpcLevel();

    KT_EXPECT_EQ(KeTryToAcquireSpinLockAtDpcLevel(&Lock), FALSE);
    KT_EXPECT_EQ(Lock, Foreign);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(SlLocksHeld(), HeldBefore);
    Lock = 0;
    KT_EXPECT_EQ(KeTryToAcquireSpinLockAtDpcLevel(&Lock), TRUE);
    KT_EXPECT_EQ(Lock, SlHeldWord());
    /* The docs allow a KeReleaseSpinLock on a lock taken by the try. */
    KeReleaseSpinLock(&Lock, OldIrql);
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeSpinLock, nested_locks_are_counted_and_independent)
{
    KSPIN_LOCK First = 0, Second = 0;
    ULONG HeldBefore = SlLocksHeld();
    KIRQL OldIrql;

    KeAcquireSpinLock(&First, &OldIrql);
    KeAcquireSpinLockAtDpcLevel(&Second);
    KT_EXPECT_EQ(First, SlHeldWord());
    KT_EXPECT_EQ(Second, SlHeldWord());
#if DBG
    KT_EXPECT_EQ(SlLocksHeld(), HeldBefore + 2);
#endif
    KeReleaseSpinLockFromDpcLevel(&First); // any order: ordinary locks are independent
    KT_EXPECT_EQ(First, 0);
    KT_EXPECT_EQ(Second, SlHeldWord());
    KeReleaseSpinLock(&Second, OldIrql);
    KT_EXPECT_EQ(SlLocksHeld(), HeldBefore);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

/* ---------------------------------------------------------------- checked-build misuse */

KTEST(KeSpinLock, recursive_acquire_bugchecks_already_owned)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    ULONG_PTR Params[4];
    KIRQL OldIrql, Ignored;

    KeAcquireSpinLock(&Lock, &OldIrql);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_ALREADY_OWNED, Params, KeAcquireSpinLock(&Lock, &Ignored));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_ALREADY_OWNED, Params, KeAcquireSpinLockAtDpcLevel(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_ALREADY_OWNED, Params,
                              KeAcquireSpinLockRaiseToSynch(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL); // the catcher restores the armed level
    /* API.md §3: a try on a lock the caller holds is 0xF in the checked build. */
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_ALREADY_OWNED, Params,
                              KeTryToAcquireSpinLockAtDpcLevel(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Lock, SlHeldWord());
    KT_EXPECT_EQ(SlLocksHeld(), 1);
    KeReleaseSpinLock(&Lock, OldIrql);
    KT_EXPECT_EQ(Lock, 0);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeSpinLock, try_on_a_lock_the_caller_holds_returns_false_in_free_build)
{
#if DBG
    KT_SKIP("free build only (the checked build bug-checks 0xF)");
#else
    KSPIN_LOCK Lock = 0;
    KIRQL OldIrql;

    KeAcquireSpinLock(&Lock, &OldIrql);
    KT_EXPECT_EQ(KeTryToAcquireSpinLockAtDpcLevel(&Lock), FALSE); // MP: it fails ([K])
    KT_EXPECT_EQ(Lock, 1);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeReleaseSpinLock(&Lock, OldIrql);
    KT_EXPECT_EQ(Lock, 0);
#endif
}

KTEST(KeSpinLock, release_of_a_free_lock_bugchecks_not_owned)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    ULONG_PTR Params[4];
    KIRQL OldIrql = KeRaiseIrqlToDpcLevel();

    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_NOT_OWNED, Params, KeReleaseSpinLockFromDpcLevel(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_NOT_OWNED, Params,
                              KeReleaseSpinLock(&Lock, DISPATCH_LEVEL));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Lock, 0);
    KT_EXPECT_EQ(SlLocksHeld(), 0);
    KeLowerIrql(OldIrql);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeSpinLock, release_of_a_lock_another_processor_owns_bugchecks_not_owned)
{
#if DBG
    ULONG_PTR Foreign = (ULONG_PTR)KiGetPrcb(MAXIMUM_PROCESSORS - 1) | 1;
    KSPIN_LOCK Lock = Foreign;
    ULONG_PTR Params[4];
    KIRQL OldIrql = KeRaiseIrqlToDpcLevel();

    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_NOT_OWNED, Params, KeReleaseSpinLockFromDpcLevel(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Params[1], Foreign);
    KT_EXPECT_EQ(Lock, Foreign); // left alone
    KeLowerIrql(OldIrql);
#else
    KT_SKIP("checked build only");
#endif
}

#if DBG
typedef struct _SL_CROSS_RELEASE
{
    KSPIN_LOCK Lock;
    volatile LONG Held;  // index 1 holds the lock
    volatile LONG Tried; // index 0 tried to release it
    ULONG_PTR Params[4];
} SL_CROSS_RELEASE;

static VOID
SlCrossReleaseRoutine(ULONG Index, PVOID Context)
{
    SL_CROSS_RELEASE *Test = Context;
    KIRQL OldIrql;

    if (Index == 1)
    {
        KeAcquireSpinLock(&Test->Lock, &OldIrql);
        __atomic_store_n(&Test->Held, 1, __ATOMIC_RELEASE);
        KT_EXPECT(KtWaitForLong(&Test->Tried, 1, SL_WAIT_MS));
        KT_EXPECT_EQ(Test->Lock, SlHeldWord()); // still ours
        KeReleaseSpinLock(&Test->Lock, OldIrql);
        return;
    }
    if (!KtWaitForLong(&Test->Held, 1, SL_WAIT_MS))
    {
        KtFail("processor 1 took the lock", __FILE__, __LINE__);
        __atomic_store_n(&Test->Tried, 1, __ATOMIC_RELEASE);
        return;
    }
    OldIrql = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_BUGCHECK_PARAMS(SPIN_LOCK_NOT_OWNED, Test->Params,
                              KeReleaseSpinLockFromDpcLevel(&Test->Lock));
    KeLowerIrql(OldIrql);
    __atomic_store_n(&Test->Tried, 1, __ATOMIC_RELEASE);
}

#endif

KTEST_EX(KeSpinLock, release_by_a_non_owner_processor_bugchecks_not_owned, KTEST_SMP_ONLY, 0)
{
#if DBG
    static SL_CROSS_RELEASE Test;

    memset(&Test, 0, sizeof(Test));
    KtRunOnProcessors(2, SlCrossReleaseRoutine, &Test);
    KT_EXPECT_EQ(Test.Params[0], (ULONG_PTR)&Test.Lock);
    KT_EXPECT_EQ(Test.Params[1], (ULONG_PTR)KiGetPrcb(1) | 1);
    KT_EXPECT_EQ(Test.Lock, 0);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeSpinLock, release_below_dispatch_bugchecks_verifier_0x32)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    ULONG_PTR Params[4];

    KeRaiseIrqlToDpcLevel();
    KeAcquireSpinLockAtDpcLevel(&Lock);
    KeLowerIrql(PASSIVE_LEVEL); // now a held lock at PASSIVE_LEVEL: the misuse
    KT_EXPECT_BUGCHECK_PARAMS(DRIVER_VERIFIER_DETECTED_VIOLATION, Params,
                              KeReleaseSpinLock(&Lock, PASSIVE_LEVEL));
    KT_EXPECT_EQ(Params[0], 0x32);
    KT_EXPECT_EQ(Params[1], PASSIVE_LEVEL);
    KT_EXPECT_EQ(Params[2], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Lock, SlHeldWord()); // the check comes first: still held
    KeRaiseIrqlToDpcLevel();
    KeReleaseSpinLock(&Lock, PASSIVE_LEVEL);
    KT_EXPECT_EQ(Lock, 0);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeSpinLock, from_dpc_level_release_below_dispatch_bugchecks_0x9)
{
#if DBG
    KSPIN_LOCK Lock = 0;
    ULONG_PTR Params[4];

    KeRaiseIrqlToDpcLevel();
    KeAcquireSpinLockAtDpcLevel(&Lock);
    KeLowerIrql(APC_LEVEL);
    KT_EXPECT_BUGCHECK_PARAMS(IRQL_NOT_GREATER_OR_EQUAL, Params,
                              KeReleaseSpinLockFromDpcLevel(&Lock));
    KT_EXPECT_EQ(Params[0], (ULONG_PTR)&Lock);
    KT_EXPECT_EQ(Params[1], APC_LEVEL);
    KT_EXPECT_EQ(Params[2], DISPATCH_LEVEL);
    KT_EXPECT_EQ(Lock, SlHeldWord());
    KeRaiseIrqlToDpcLevel();
    KeReleaseSpinLock(&Lock, PASSIVE_LEVEL);
#else
    KT_SKIP("checked build only");
#endif
}

/* ---------------------------------------------------------------- contention */

typedef enum _SL_FLAVOUR
{
    SlFlavourAcquire,
    SlFlavourRaiseToSynch,
    SlFlavourAtDpcLevel,
    SlFlavourTryToAcquire,
    SlFlavourForDpc,
} SL_FLAVOUR;

typedef struct _SL_CONTENTION
{
    SL_FLAVOUR Flavour;
    ULONG64 Deadline;                                // KtNowMs() at which to stop
    volatile ULONG Acquisitions[MAXIMUM_PROCESSORS]; // per processor
    KSPIN_LOCK Lock;
    volatile ULONG64 Counter; // changed only under Lock, non-atomically
    volatile ULONG Owner;     // Index + 1 of the processor inside
    volatile LONG Violations; // a processor found someone else inside
    volatile LONG Contended;  // acquisitions that found the lock busy (logged)
    volatile LONG BadIrql;
} SL_CONTENTION;

/* The critical section: a read-modify-write that loses updates unless excluded. */
static VOID
SlCriticalSection(SL_CONTENTION *Test, ULONG Index)
{
    ULONG64 Value = Test->Counter;

    Test->Owner = Index + 1;
    YieldProcessor();
    if (Test->Owner != Index + 1)
    {
        __atomic_add_fetch(&Test->Violations, 1, __ATOMIC_RELAXED);
    }
    Test->Counter = Value + 1;
}

static VOID
SlContentionRoutine(ULONG Index, PVOID Context)
{
    SL_CONTENTION *Test = Context;

    for (ULONG i = 0; i < SL_MAX_ITERATIONS && KtNowMs() < Test->Deadline; i++)
    {
        KIRQL OldIrql;
        KIRQL Expected = DISPATCH_LEVEL;

        if (!KeTestSpinLock(&Test->Lock))
        {
            __atomic_add_fetch(&Test->Contended, 1, __ATOMIC_RELAXED);
        }
        switch (Test->Flavour)
        {
            case SlFlavourAcquire:
                KeAcquireSpinLock(&Test->Lock, &OldIrql);
                break;
            case SlFlavourRaiseToSynch:
                OldIrql = KeAcquireSpinLockRaiseToSynch(&Test->Lock);
                Expected = SYNCH_LEVEL;
                break;
            case SlFlavourAtDpcLevel:
                OldIrql = KeRaiseIrqlToDpcLevel();
                KeAcquireSpinLockAtDpcLevel(&Test->Lock);
                break;
            case SlFlavourTryToAcquire:
                OldIrql = KeRaiseIrqlToDpcLevel();
                while (!KeTryToAcquireSpinLockAtDpcLevel(&Test->Lock))
                {
                    YieldProcessor();
                }
                break;
            case SlFlavourForDpc:
            default:
                OldIrql = KeAcquireSpinLockForDpc(&Test->Lock);
                Expected = PASSIVE_LEVEL; // not a threaded DPC: no IRQL change
                break;
        }
        if (KeGetCurrentIrql() != Expected || OldIrql != PASSIVE_LEVEL)
        {
            __atomic_add_fetch(&Test->BadIrql, 1, __ATOMIC_RELAXED);
        }
        SlCriticalSection(Test, Index);
        Test->Acquisitions[Index]++;
        if (Test->Flavour == SlFlavourForDpc)
        {
            KeReleaseSpinLockForDpc(&Test->Lock, OldIrql);
        }
        else
        {
            KeReleaseSpinLock(&Test->Lock, OldIrql);
        }
    }
}

static VOID
SlRunContention(SL_FLAVOUR Flavour)
{
    static SL_CONTENTION Test;
    ULONG64 Start = KtNowMs();
    ULONG64 Total = 0;

    memset(&Test, 0, sizeof(Test));
    Test.Flavour = Flavour;
    Test.Deadline = Start + SL_CONTENTION_MS;
    KeInitializeSpinLock(&Test.Lock);
    KtRunOnProcessors(0, SlContentionRoutine, &Test);
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

KTEST(KeSpinLock, acquire_spin_lock_excludes_all_processors)
{
    SlRunContention(SlFlavourAcquire);
}

KTEST(KeSpinLock, raise_to_synch_excludes_all_processors)
{
    SlRunContention(SlFlavourRaiseToSynch);
}

KTEST(KeSpinLock, at_dpc_level_excludes_all_processors)
{
    SlRunContention(SlFlavourAtDpcLevel);
}

KTEST(KeSpinLock, try_to_acquire_excludes_all_processors)
{
    SlRunContention(SlFlavourTryToAcquire);
}

KTEST(KeSpinLock, for_dpc_excludes_all_processors)
{
    SlRunContention(SlFlavourForDpc);
}

/* ---------------------------------------------------------------- deadlock watch */

#if DBG
#define SL_DEADLOCK_TIMEOUT_MS 300

typedef struct _SL_ABBA
{
    KSPIN_LOCK A;
    KSPIN_LOCK B;
    volatile LONG HoldsA;  // index 0 holds A
    volatile LONG HoldsB;  // index 1 holds B
    volatile LONG Caught;  // index 0 caught the deadlock bug check
    volatile LONG Stopped; // index 1 stopped trying for A
    volatile LONG GotA;    // index 1 obtained A while index 0 still held it (a failure)
    ULONG_PTR Params[4];
} SL_ABBA;

/* Index 0: holds A, then waits for B with the deadlock watch on. */
static __attribute__((noinline)) VOID
SlAbbaWatchingSide(SL_ABBA *Test)
{
    KIRQL OldIrql;
    ULONG Saved = KiSpinLockTimeoutMs;

    KeAcquireSpinLock(&Test->A, &OldIrql);
    __atomic_store_n(&Test->HoldsA, 1, __ATOMIC_RELEASE);
    if (KtWaitForLong(&Test->HoldsB, 1, SL_WAIT_MS))
    {
        KiSpinLockTimeoutMs = SL_DEADLOCK_TIMEOUT_MS;
        KT_EXPECT_BUGCHECK_PARAMS(SPINDLE_SPIN_LOCK_DEADLOCK, Test->Params,
                                  KeAcquireSpinLockAtDpcLevel(&Test->B));
        KiSpinLockTimeoutMs = Saved;
    }
    else
    {
        KtFail("processor 1 took lock B", __FILE__, __LINE__);
    }
    __atomic_store_n(&Test->Caught, 1, __ATOMIC_RELEASE);
    KT_EXPECT(KtWaitForLong(&Test->Stopped, 1,
                            SL_WAIT_MS)); // A stays held until the other side stops trying
    KT_EXPECT_EQ(Test->A, SlHeldWord());
    KeReleaseSpinLock(&Test->A, OldIrql);
}

/* Index 1: holds B, then wants A, but only tries (bounded), so it cannot bug-check. */
static __attribute__((noinline)) VOID
SlAbbaTryingSide(SL_ABBA *Test)
{
    KIRQL OldIrql;
    ULONG64 Start;

    KeAcquireSpinLock(&Test->B, &OldIrql);
    __atomic_store_n(&Test->HoldsB, 1, __ATOMIC_RELEASE);
    if (!KtWaitForLong(&Test->HoldsA, 1, SL_WAIT_MS))
    {
        KtFail("processor 0 took lock A", __FILE__, __LINE__);
    }
    Start = KtNowMs();
    while (__atomic_load_n(&Test->Caught, __ATOMIC_ACQUIRE) == 0 && KtNowMs() - Start < SL_WAIT_MS)
    {
        if (KeTryToAcquireSpinLockAtDpcLevel(&Test->A))
        {
            Test->GotA = 1;
            KeReleaseSpinLockFromDpcLevel(&Test->A);
        }
        YieldProcessor();
    }
    __atomic_store_n(&Test->Stopped, 1, __ATOMIC_RELEASE);
    KeReleaseSpinLock(&Test->B, OldIrql);
}

static VOID
SlAbbaRoutine(ULONG Index, PVOID Context)
{
    if (Index == 0)
    {
        SlAbbaWatchingSide(Context);
    }
    else
    {
        SlAbbaTryingSide(Context);
    }
}

static BOOLEAN
SlSymbolStartsWith(ULONG_PTR Address, const char *Prefix)
{
    ULONG64 Offset;
    const char *Name = KiLookupSymbol(Address, &Offset);

    return Name != NULL && strncmp(Name, Prefix, strlen(Prefix)) == 0;
}

#endif /* DBG */

KTEST_EX(KeSpinLock, abba_deadlock_ends_in_the_deadlock_bugcheck, KTEST_SMP_ONLY, 0)
{
#if DBG
    static SL_ABBA Test;

    memset(&Test, 0, sizeof(Test));
    KtRunOnProcessors(2, SlAbbaRoutine, &Test);
    KT_EXPECT_EQ(Test.Params[0], (ULONG_PTR)&Test.B);
    KT_EXPECT_EQ(Test.Params[1], 1); // B's owner: processor 1
    KT_EXPECT(SlSymbolStartsWith(Test.Params[2], "SlAbbaTryingSide"));
    KT_EXPECT(SlSymbolStartsWith(Test.Params[3], "SlAbbaWatchingSide"));
    KT_EXPECT_EQ(Test.GotA, 0);
    KT_EXPECT_EQ(Test.A, 0);
    KT_EXPECT_EQ(Test.B, 0);
    KT_EXPECT_EQ(KiSpinLockTimeoutMs, 20000);
#else
    KT_SKIP("checked build only");
#endif
}

/*
 * Outside a threaded DPC, KeReleaseSpinLockForDpc is the FromDpcLevel form:
 * it ignores its OldIrql and leaves IRQL alone (API.md §3), even after a
 * raising acquire (kmtest KeSpinLock: IRQL stays DISPATCH_LEVEL).
 */
KTEST(KeSpinLock, release_for_dpc_leaves_irql_alone_outside_a_threaded_dpc)
{
    KSPIN_LOCK Lock;
    KIRQL OldIrql;

    KeInitializeSpinLock(&Lock);
    KeAcquireSpinLock(&Lock, &OldIrql);
    KT_EXPECT_EQ(OldIrql, PASSIVE_LEVEL);
    KeReleaseSpinLockForDpc(&Lock, OldIrql);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(KeTestSpinLock(&Lock), TRUE);
    KeLowerIrql(PASSIVE_LEVEL);

    OldIrql = KeRaiseIrqlToDpcLevel();
    KeAcquireSpinLockAtDpcLevel(&Lock);
    KeReleaseSpinLockForDpc(&Lock, PASSIVE_LEVEL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(OldIrql);
}
