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
 * the release wakes one halted waiter. No waiter state is kept in the word, so
 * its values are exactly the ones above. Acquiring raises IRQL first;
 * releasing stores 0 before IRQL is lowered.
 *
 * Checked-build deadlock watch: a waiter looks at the performance counter
 * every KI_SPIN_CHECK_INTERVAL spins; a wait longer than KiSpinLockTimeoutMs
 * bug-checks SPINDLE_SPIN_LOCK_DEADLOCK (lock, owner processor, owner's
 * acquire RIP, waiter's RIP). Owners are found in a small per-processor table
 * of the locks each one holds (KI_LOCK_TRACK_SLOTS deep; deeper nests are
 * still counted in SpinLocksHeld, only not named in reports).
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

#define KI_LOCK_TRACK_SLOTS 16

#if DBG
/*
 * One lock a processor holds or (queued) waits for. Written only by that
 * processor with interrupts off; other processors read it for reports only.
 */
typedef struct _KI_LOCK_TRACK
{
    PKSPIN_LOCK volatile Lock; // NULL: a free slot
    volatile ULONG_PTR Rip;    // where the acquire was called from
    volatile BOOLEAN Owner;    // FALSE while a queued acquirer still waits
    volatile ULONG64 Sequence; // names this acquisition: (processor + 1) << 48 | its count
} KI_LOCK_TRACK;

static KI_LOCK_TRACK KiLockTrack[MAXIMUM_PROCESSORS][KI_LOCK_TRACK_SLOTS];
static ULONG64 KiLockTrackCount[MAXIMUM_PROCESSORS]; // acquisitions recorded per processor
/* Locks counted but not named because the processor's table was full; its own. */
static ULONG KiLockTrackOverflow[MAXIMUM_PROCESSORS];
#endif

volatile ULONG KiSpinLockTimeoutMs = 20000;

/* ---------------------------------------------------------------- checked-build bookkeeping */

#if DBG
static KI_LOCK_TRACK *
KiLockTrackFind(KI_LOCK_TRACK *Slots, PKSPIN_LOCK SpinLock)
{
    for (ULONG i = 0; i < KI_LOCK_TRACK_SLOTS; i++)
    {
        if (Slots[i].Lock == SpinLock)
        {
            return &Slots[i];
        }
    }
    return NULL;
}

/* TRUE if this processor holds SpinLock or waits for it as a queued lock. */
BOOLEAN
KiLockTrackIsHeld(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();
    BOOLEAN Held = KiLockTrackFind(KiLockTrack[KeGetCurrentPrcb()->Number], SpinLock) != NULL;

    x86_restore_flags(Flags);
    return Held;
}

/* Records SpinLock as held (Owner) or waited for, acquired from Rip; counts it. */
VOID
KiLockTrackInsert(PKSPIN_LOCK SpinLock, ULONG_PTR Rip, BOOLEAN Owner)
{
    ULONG64 Flags = x86_save_disable();
    PKPRCB Prcb = KeGetCurrentPrcb();
    KI_LOCK_TRACK *Slot = KiLockTrackFind(KiLockTrack[Prcb->Number], NULL);

    if (Slot != NULL)
    {
        Slot->Rip = Rip;
        Slot->Owner = Owner;
        Slot->Sequence = ((ULONG64)(Prcb->Number + 1) << 48) | ++KiLockTrackCount[Prcb->Number];
        /* Release: a reporting processor that finds the lock sees its RIP too. */
        __atomic_store_n(&Slot->Lock, SpinLock, __ATOMIC_RELEASE);
    }
    else
    {
        KiLockTrackOverflow[Prcb->Number]++;
    }
    Prcb->SpinLocksHeld++;
    x86_restore_flags(Flags);
}

/* A queued acquirer's wait is over: it owns SpinLock now. */
VOID
KiLockTrackSetOwner(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();
    KI_LOCK_TRACK *Slot = KiLockTrackFind(KiLockTrack[KeGetCurrentPrcb()->Number], SpinLock);

    if (Slot != NULL)
    {
        Slot->Owner = TRUE;
    }
    x86_restore_flags(Flags);
}

/*
 * Forgets SpinLock (released) and uncounts it. Returns FALSE, changing
 * nothing, when this processor never recorded it (a forged or copied queued
 * handle): the caller bug-checks 0x10. A lock that found the table full is
 * taken on trust while any such lock is outstanding.
 */
BOOLEAN
KiLockTrackRemove(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();
    PKPRCB Prcb = KeGetCurrentPrcb();
    KI_LOCK_TRACK *Slot = KiLockTrackFind(KiLockTrack[Prcb->Number], SpinLock);
    BOOLEAN Tracked = TRUE;

    if (Slot != NULL)
    {
        __atomic_store_n(&Slot->Lock, NULL, __ATOMIC_RELAXED);
    }
    else if (KiLockTrackOverflow[Prcb->Number] != 0)
    {
        KiLockTrackOverflow[Prcb->Number]--;
    }
    else
    {
        Tracked = FALSE;
    }
    if (Tracked)
    {
        Prcb->SpinLocksHeld--;
    }
    x86_restore_flags(Flags);
    return Tracked;
}

/*
 * The processor that owns SpinLock and where it acquired it, for a deadlock
 * report: the tables first, then (ordinary locks) the owner in the lock word.
 * ~0 when nobody can be named. Reads other processors' tables without a lock.
 */
static ULONG
KiFindLockOwner(PKSPIN_LOCK SpinLock, ULONG_PTR *OwnerRip, ULONG64 *Sequence)
{
    ULONG_PTR Word = __atomic_load_n(SpinLock, __ATOMIC_RELAXED);
    ULONG_PTR First = (ULONG_PTR)&KiProcessorBlock[0];
    ULONG_PTR Last = (ULONG_PTR)&KiProcessorBlock[MAXIMUM_PROCESSORS - 1];

    *OwnerRip = 0;
    *Sequence = Word; // no table names an owner: the word itself stands for the state
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        for (ULONG i = 0; i < KI_LOCK_TRACK_SLOTS; i++)
        {
            KI_LOCK_TRACK *Slot = &KiLockTrack[Number][i];
            if (__atomic_load_n(&Slot->Lock, __ATOMIC_ACQUIRE) == SpinLock && Slot->Owner)
            {
                *OwnerRip = Slot->Rip;
                *Sequence = Slot->Sequence;
                return Number;
            }
        }
    }
    if ((Word & 1) != 0 && (Word & ~(ULONG_PTR)1) >= First && (Word & ~(ULONG_PTR)1) <= Last)
    {
        return ((PKPRCB)(Word & ~(ULONG_PTR)1))->Number;
    }
    return ~0u;
}
#endif /* DBG */

/*
 * Checked build: bug-checks SPINDLE_SPIN_LOCK_DEADLOCK once the lock Wait
 * waits for has made no progress for KiSpinLockTimeoutMs. Progress is an
 * acquisition changing hands: each window records which acquisition owns
 * the lock (the owner's lock-table sequence number, else the lock word); when
 * the window ends with another owner, a new window starts instead of a bug
 * check, so a slow but moving system (a loaded host, a long queue) never
 * trips it, and a holder that never lets go does. Called every
 * KI_SPIN_CHECK_INTERVAL spins by KiSpinWaitPause and by KiWaitForChange's
 * watch (also after each halt). Any IRQL.
 */
VOID
KiSpinWaitCheck(KI_SPIN_WAIT *Wait, PKSPIN_LOCK SpinLock, ULONG_PTR WaiterRip)
{
#if DBG
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    ULONG_PTR OwnerRip;
    ULONG64 Progress;
    ULONG Owner;

    if (Frequency.QuadPart <= 0)
    {
        return; // the clock is not calibrated yet (early boot)
    }
    if (Wait->Start == 0)
    {
        Wait->Start = Now;
        (void)KiFindLockOwner(SpinLock, &OwnerRip, &Wait->Progress);
        return;
    }
    if (Now - Wait->Start < (ULONG64)Frequency.QuadPart / 1000 * KiSpinLockTimeoutMs)
    {
        return;
    }
    Owner = KiFindLockOwner(SpinLock, &OwnerRip, &Progress);
    if (Progress != Wait->Progress)
    {
        Wait->Progress = Progress; // the lock changed hands: a new window
        Wait->Start = Now;
        return;
    }
    if (!KiBugCheckIsExpected())
    {
        DbgPrint("\n*** spin lock %p: processor %u waited %u ms; owner: processor %d\n",
                 (PVOID)SpinLock, KeGetCurrentPrcb()->Number, KiSpinLockTimeoutMs, (int)Owner);
        KiPrintAddress("***   owner acquired it at ", OwnerRip);
        KiPrintAddress("***   waiter called from   ", WaiterRip);
    }
    KeBugCheckEx(SPINDLE_SPIN_LOCK_DEADLOCK, (ULONG_PTR)SpinLock, Owner, OwnerRip, WaiterRip);
#else
    (void)Wait;
    (void)SpinLock;
    (void)WaiterRip;
#endif
}

/* KiWaitForChange's watch for a lock wait: the deadlock watch above. */
VOID
KiSpinWaitWatchRoutine(KI_WAIT_WATCH *Watch)
{
    KI_SPIN_WAIT *Wait = CONTAINING_RECORD(Watch, KI_SPIN_WAIT, Watch);

    KiSpinWaitCheck(Wait, Wait->SpinLock, Wait->WaiterRip);
}

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
 * Then, only if some processor is halted in a wait at all, wakes one halted on
 * this lock: a plain read of KiWaitHaltedMask with no barrier, so an
 * uncontended pair pays one read (ke/wait.c, "the one window", says why a
 * waiter this read misses is woken by its next clock tick).
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
    if (__builtin_expect(__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0, 0))
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
