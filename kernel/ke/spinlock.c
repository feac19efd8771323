/* SPDX-License-Identifier: MIT */
/*
 * Ordinary (executive) spin locks, API.md §3, and the checked-build lock
 * bookkeeping that queued locks (queuedlock.c) share.
 *
 * Lock word: free build 0 = free, 1 = held. Checked build (DBG=1): the
 * owner's PRCB address | 1 (PRCBs are 64-byte aligned), so a recursive
 * acquire (0xF) and a release by anyone but the owner (0x10) are caught.
 * Waiters wait on plain reads until the word reads 0, then retry the atomic
 * (test-and-test-and-set); a long wait halts (KiWaitForChange, ke/wait.c) and
 * the release wakes one halted waiter. A waiter's retry follows its read of
 * 0 within a few instructions (KiWaitForChange's first stretch is inline):
 * with two processors and a short critical section the word reads 0 only
 * briefly, and with a slower retry the split between them was uneven in
 * more boots (ke.h, KiWaitForChange, has the numbers). Most of the uneven
 * boots that remained came from idle processors' clock ticks taking host
 * time under overcommit (ke/clock.c, the idle tick).
 * No waiter state is kept in the word, so its values are exactly the ones
 * above. Acquiring raises IRQL first; releasing stores 0 before IRQL is
 * lowered.
 *
 * Checked build: the lock bookkeeping, the deadlock watch of a long wait and
 * the lock-order verifier live in verifier.c; every blocking acquire asks the
 * verifier (KiVerifierAcquire) before it waits.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

/* ---------------------------------------------------------------- the lock word */

/*
 * The contended half of KxAcquireSpinLock, out of line so that the
 * uncontended acquire stays a leaf with no frame. The word was last read as
 * Held: waits (spin, then halt: ke/wait.c) until it reads 0, then retries.
 * The wake comes from KxReleaseSpinLock's unfenced check, so the wait is
 * KI_WAIT_UNFENCED (halts only below CLOCK_LEVEL).
 */
static __attribute__((noinline)) VOID
KxWaitForSpinLock(PKSPIN_LOCK SpinLock, ULONG_PTR Held, ULONG_PTR Rip)
{
    KI_SPIN_WAIT Wait = KI_SPIN_WAIT_INIT;
    KI_WAIT_WATCH *Watch = KiSpinWaitWatch(&Wait, SpinLock, Rip);
#if DBG
    ULONG_PTR Tag = (ULONG_PTR)KeGetCurrentPrcb() | 1;
#else
    ULONG_PTR Tag = 1;
#endif

    for (;;)
    {
        ULONG_PTR Expected = 0;

        while (Held != 0)
        {
            Held = KiWaitForChange(SpinLock, Held, KI_WAIT_UNFENCED, Watch);
        }
        if (__atomic_compare_exchange_n(SpinLock, &Expected, Tag, FALSE, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED))
        {
            return;
        }
        Held = Expected;
    }
}

/*
 * Takes the lock word, no IRQL change. The locked instruction is a full
 * barrier, so the critical section cannot start before the lock is owned; it
 * pairs with the release store in KxReleaseSpinLock. Rip names the acquirer.
 */
static inline VOID
KxAcquireSpinLock(PKSPIN_LOCK SpinLock, ULONG_PTR Rip)
{
#if DBG
    ULONG_PTR Tag = (ULONG_PTR)KeGetCurrentPrcb() | 1;
    ULONG_PTR Expected = 0;

    KiVerifierAcquire(SpinLock, Rip); // before any wait: a cycle is reported, not entered
    if (!__atomic_compare_exchange_n(SpinLock, &Expected, Tag, FALSE, __ATOMIC_ACQUIRE,
                                     __ATOMIC_RELAXED))
    {
        if (Expected == Tag)
        {
            KeBugCheckEx(SPIN_LOCK_ALREADY_OWNED, (ULONG_PTR)SpinLock, 0, 0, Rip);
        }
        KxWaitForSpinLock(SpinLock, Expected, Rip);
    }
    KiLockTrackInsert(SpinLock, Rip, TRUE);
#else
    ULONG_PTR Held = __atomic_exchange_n(SpinLock, 1, __ATOMIC_ACQUIRE);

    if (__builtin_expect(Held != 0, 0))
    {
        KxWaitForSpinLock(SpinLock, Held, Rip);
    }
#endif
}

/*
 * Takes the lock word only if it is free: TRUE if it did. Never spins.
 * Checked build: 0xF if this processor already owns it.
 */
static inline BOOLEAN
KxTryToAcquireSpinLock(PKSPIN_LOCK SpinLock, ULONG_PTR Rip)
{
    ULONG_PTR Expected = 0;
#if DBG
    ULONG_PTR Tag = (ULONG_PTR)KeGetCurrentPrcb() | 1;
#else
    ULONG_PTR Tag = 1;
#endif

    /* Acquire, as KxAcquireSpinLock; the relaxed pre-read keeps a busy line shared. */
    if (__atomic_load_n(SpinLock, __ATOMIC_RELAXED) == 0 &&
        __atomic_compare_exchange_n(SpinLock, &Expected, Tag, FALSE, __ATOMIC_ACQUIRE,
                                    __ATOMIC_RELAXED))
    {
#if DBG
        KiLockTrackInsert(SpinLock, Rip, TRUE);
#endif
        return TRUE;
    }
#if DBG
    if (__atomic_load_n(SpinLock, __ATOMIC_RELAXED) == Tag)
    {
        KeBugCheckEx(SPIN_LOCK_ALREADY_OWNED, (ULONG_PTR)SpinLock, 0, 0, Rip);
    }
#endif
    (void)Rip;
    return FALSE;
}

/*
 * Frees the lock word. A release store suffices on x86 (TSO): every access in
 * the critical section is ordered before it. Pairs with KxAcquireSpinLock.
 * Then, only if some processor is halted in a wait at all, and one is halted
 * on a word in this lock's slot, wakes one halted on this lock: plain reads
 * of KiWaitHaltedMask and then of the slot, with no barrier, so an
 * uncontended pair pays one read, and a processor halted on an unrelated word
 * costs a second one, not a call (ke/wait.c, "the one window", says why a
 * waiter these reads miss is woken by its next clock tick).
 * Checked build: 0x10 unless this processor owns it.
 */
static inline VOID
KxReleaseSpinLock(PKSPIN_LOCK SpinLock)
{
#if DBG
    ULONG_PTR Word = __atomic_load_n(SpinLock, __ATOMIC_RELAXED);

    if (Word != ((ULONG_PTR)KeGetCurrentPrcb() | 1))
    {
        KeBugCheckEx(SPIN_LOCK_NOT_OWNED, (ULONG_PTR)SpinLock, Word, 0,
                     (ULONG_PTR)__builtin_return_address(0));
    }
    KiLockTrackRemove(SpinLock);
#endif
    __atomic_store_n(SpinLock, 0, __ATOMIC_RELEASE);
    if (__builtin_expect(__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0, 0) &&
        __atomic_load_n(&KiWaitHaltedSlots[KiWaitSlot(SpinLock)], __ATOMIC_RELAXED) != 0)
    {
        KiWaitWakeHalted(SpinLock, KI_WAIT_UNFENCED | KI_WAIT_WAKE_ONE);
    }
}

/* ---------------------------------------------------------------- kernel-internal */

/* Takes SpinLock with no IRQL change or check. Interrupts off or IRQL >= DISPATCH_LEVEL. */
VOID
KiAcquireSpinLock(PKSPIN_LOCK SpinLock)
{
    KxAcquireSpinLock(SpinLock, (ULONG_PTR)__builtin_return_address(0));
}

/* Frees SpinLock with no IRQL change or check. */
VOID
KiReleaseSpinLock(PKSPIN_LOCK SpinLock)
{
    KxReleaseSpinLock(SpinLock);
}

/* ---------------------------------------------------------------- public */

/* Sets the lock free. Any IRQL; the lock must be resident. */
VOID
KeInitializeSpinLock(PKSPIN_LOCK SpinLock)
{
#if DBG
    KiVerifierForgetLock(SpinLock); // a new identity: the old one's orders are forgotten
#endif
    *SpinLock = 0;
}

/*
 * Raises to DISPATCH_LEVEL, then spins until the lock is owned. IRQL in <=
 * DISPATCH_LEVEL (checked: above it 0xA), out DISPATCH_LEVEL. *OldIrql is
 * written once the lock is held.
 */
VOID
KeAcquireSpinLock(PKSPIN_LOCK SpinLock, PKIRQL OldIrql)
{
    ULONG_PTR Rip = (ULONG_PTR)__builtin_return_address(0);
    KIRQL Previous;

    KiCheckRaiseTo(SpinLock, DISPATCH_LEVEL, Rip);
    Previous = KeRaiseIrqlToDpcLevel();
    KxAcquireSpinLock(SpinLock, Rip);
    *OldIrql = Previous;
}

/*
 * As KeAcquireSpinLock; returns the previous IRQL. IRQL in <= DISPATCH_LEVEL
 * (checked: above it 0xA), out DISPATCH_LEVEL.
 */
KIRQL
KeAcquireSpinLockRaiseToDpc(PKSPIN_LOCK SpinLock)
{
    ULONG_PTR Rip = (ULONG_PTR)__builtin_return_address(0);
    KIRQL Previous;

    KiCheckRaiseTo(SpinLock, DISPATCH_LEVEL, Rip);
    Previous = KeRaiseIrqlToDpcLevel();
    KxAcquireSpinLock(SpinLock, Rip);
    return Previous;
}

/*
 * Raises to SYNCH_LEVEL, then takes the lock; returns the previous IRQL.
 * IRQL in <= SYNCH_LEVEL (checked: above it 0xA), out SYNCH_LEVEL.
 */
KIRQL
KeAcquireSpinLockRaiseToSynch(PKSPIN_LOCK SpinLock)
{
    ULONG_PTR Rip = (ULONG_PTR)__builtin_return_address(0);
    KIRQL Previous;

    KiCheckRaiseTo(SpinLock, SYNCH_LEVEL, Rip);
    Previous = KeRaiseIrqlToSynchLevel();
    KxAcquireSpinLock(SpinLock, Rip);
    return Previous;
}

/*
 * Releases the lock, then lowers IRQL to NewIrql. IRQL in DISPATCH_LEVEL (or
 * the SYNCH_LEVEL of RaiseToSynch, or higher after an AtDpcLevel acquire).
 * Checked build: below DISPATCH_LEVEL the lock cannot have been taken
 * properly: Verifier-style 0xC4/0x32 (P2 = IRQL, P3 = lock).
 */
VOID
KeReleaseSpinLock(PKSPIN_LOCK SpinLock, KIRQL NewIrql)
{
#if DBG
    KIRQL Irql = KeGetCurrentIrql();
    if (Irql < DISPATCH_LEVEL)
    {
        KeBugCheckEx(DRIVER_VERIFIER_DETECTED_VIOLATION, 0x32, Irql, (ULONG_PTR)SpinLock, 0);
    }
#endif
    KxReleaseSpinLock(SpinLock);
    KeLowerIrql(NewIrql);
}

/* Takes the lock without changing IRQL. IRQL in >= DISPATCH_LEVEL (checked: 0x9). */
VOID
KeAcquireSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock)
{
    KiCheckAtDpcLevel(SpinLock);
    KxAcquireSpinLock(SpinLock, (ULONG_PTR)__builtin_return_address(0));
}

/* Releases the lock without changing IRQL. IRQL in >= DISPATCH_LEVEL (checked: 0x9). */
VOID
KeReleaseSpinLockFromDpcLevel(PKSPIN_LOCK SpinLock)
{
    KiCheckAtDpcLevel(SpinLock);
    KxReleaseSpinLock(SpinLock);
}

/*
 * Takes the lock if it is free, without spinning: TRUE if the caller now
 * holds it, FALSE if it was held (free build: also when the caller holds it).
 * IRQL DISPATCH_LEVEL, unchanged: the DDK documents exactly DISPATCH_LEVEL;
 * higher levels are accepted, as by the other AtDpcLevel forms, and below
 * DISPATCH_LEVEL the checked build bug-checks 0x9. Checked build: 0xF if the
 * caller already holds it (API.md §3).
 */
BOOLEAN
KeTryToAcquireSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock)
{
    KiCheckAtDpcLevel(SpinLock);
    return KxTryToAcquireSpinLock(SpinLock, (ULONG_PTR)__builtin_return_address(0));
}

/* TRUE iff the word is 0 (any other value counts as held). Any IRQL; never acquires. */
BOOLEAN
KeTestSpinLock(PKSPIN_LOCK SpinLock)
{
    return __atomic_load_n(SpinLock, __ATOMIC_RELAXED) == 0;
}

/*
 * The threaded-DPC form: raises to DISPATCH_LEVEL only for a threaded DPC
 * running below it. Spindle runs every DPC, threaded ones included, at
 * DISPATCH_LEVEL, so no caller is one: the lock is taken with no IRQL change,
 * as the AtDpcLevel form but at any IRQL (API.md §3-§4, kmtest: no change at
 * PASSIVE or APC). Returns the entry IRQL for KeReleaseSpinLockForDpc.
 */
KIRQL
KeAcquireSpinLockForDpc(PKSPIN_LOCK SpinLock)
{
    KIRQL Previous = KeGetCurrentIrql();

    KxAcquireSpinLock(SpinLock, (ULONG_PTR)__builtin_return_address(0));
    return Previous;
}

/*
 * Releases the lock. Outside a threaded DPC (every Spindle caller) it is
 * KeReleaseSpinLockFromDpcLevel without the IRQL check: IRQL is left alone
 * and OldIrql is not used, so a lock taken with KeAcquireSpinLock and
 * released here leaves the caller at DISPATCH_LEVEL (API.md §3). Checked
 * build: 0x10 unless this processor owns the lock.
 */
VOID
KeReleaseSpinLockForDpc(PKSPIN_LOCK SpinLock, KIRQL OldIrql)
{
    (void)OldIrql;
    KxReleaseSpinLock(SpinLock);
}
