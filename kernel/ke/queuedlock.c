/* SPDX-License-Identifier: MIT */
/*
 * In-stack queued spin locks, API.md §4: the MCS list-based queue lock
 * (J. M. Mellor-Crummey and M. L. Scott, "Algorithms for Scalable
 * Synchronization on Shared-Memory Multiprocessors", ACM TOCS 9(1), 1991).
 * Waiters form a FIFO queue of KSPIN_LOCK_QUEUE entries, one per acquisition,
 * living in the caller's KLOCK_QUEUE_HANDLE; each waiter spins only on its
 * own entry, and the owner hands the lock to its successor directly.
 *
 * The lock word is 0 when free, else the address of the LAST entry queued
 * (the tail; equal to the owner's entry when nobody waits). An entry's Lock
 * field is the lock's address L with flag bits LOCK_QUEUE_WAIT (1) and
 * LOCK_QUEUE_OWNER (2). States of one entry h:
 *
 *   idle      Next = NULL, Lock = L          before the exchange, and after release
 *   owner     Lock = L|OWNER                 the exchange returned 0 (lock was free)
 *   waiting   Lock = L|WAIT                  the exchange returned predecessor P; WAIT
 *                                            is set BEFORE P->Next = h publishes h
 *   handed    Lock = L|OWNER                 P, releasing, found Next = h and wrote
 *                                            L|OWNER with one exchange
 *   last out  owner with Next = NULL         cmpxchg(word: h -> 0); if it fails, a
 *                                            successor S has exchanged itself in but
 *                                            not yet stored h->Next = S: wait for
 *                                            Next, then hand off to it
 *
 * Waiting (ke/wait.c): a waiter waits for its own Lock field to change from
 * L|WAIT with KiWaitForChange (spin, then halt); the hand-off is the waker's
 * K1 and, being an exchange (a locked instruction), its K2 barrier too; the
 * mask read and the IPI (K3) follow. So the table gains:
 *
 *   halted    Lock = L|WAIT, waiter published   releaser exchanges L|OWNER in, reads
 *             in KiWaitHaltedMask               the mask, IPIs the waiter (wait.c K1-K3)
 *   halting   the predecessor's Lock had WAIT   the waiter halts without spinning first
 *   first     when we linked ourselves          (KI_WAIT_HALT_FIRST): two hand-offs or more
 *                                               away, spinning only takes a host core the
 *                                               owner may need; later rounds spin as usual
 *   woken     the releaser read Next of its     after the hand-off, if the successor needed
 *   early     successor before the hand-off     no wake, it wakes that one too if halted (a
 *             (the successor's entry is alive)  hint, no barrier), so it is on a host core
 *                                               when its own turn comes
 *
 * Nothing else changes: the word, the entries and the FIFO order are as above.
 * Spinning or halting is only how long a waiter keeps its host core; which
 * waiter gets the lock next is decided by the queue alone.
 *
 * Never mix queued and ordinary acquisition of one KSPIN_LOCK.
 * Checked build: a processor that already holds (or waits for) the lock gets
 * 0xF; releasing a handle whose Lock lacks OWNER, whose lock is free, or whose
 * lock this processor never took gets 0x10. Long waits fall
 * to the deadlock watch of verifier.c.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

#define KI_QUEUE_FLAGS ((ULONG_PTR)(LOCK_QUEUE_WAIT | LOCK_QUEUE_OWNER))

/*
 * The contended half of KxAcquireQueuedSpinLock, out of line so that the
 * uncontended acquire stays a leaf with no frame: links Queue behind
 * Predecessor and waits (ke/wait.c) until the hand-off.
 */
static __attribute__((noinline)) VOID
KxWaitForQueuedSpinLock(PKSPIN_LOCK SpinLock, PKSPIN_LOCK_QUEUE Queue,
                        PKSPIN_LOCK_QUEUE Predecessor, ULONG_PTR Rip)
{
    KI_SPIN_WAIT Wait = KI_SPIN_WAIT_INIT;
    ULONG Flags = 0;

    Queue->Lock = (PKSPIN_LOCK)((ULONG_PTR)SpinLock | LOCK_QUEUE_WAIT);
    /*
     * A predecessor that waits itself puts us two hand-offs or more away:
     * halt at once instead of spinning (the hand-off to our predecessor wakes
     * us early, see KxReleaseQueuedSpinLock). Read before we link ourselves:
     * until then the predecessor cannot hand off, so its entry is alive. Only
     * when some waiter is halted already: where waits end within the spin
     * bound, halting first would not pay, and the read costs the hand-off a
     * cache-line transfer.
     */
    if (__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0 &&
        ((ULONG_PTR)__atomic_load_n(&Predecessor->Lock, __ATOMIC_RELAXED) & LOCK_QUEUE_WAIT))
    {
        Flags = KI_WAIT_HALT_FIRST;
    }
    KiInject(KiInjectQueuedLockLink); // the predecessor's release may wait for our link
    /*
     * Release: WAIT is in our entry before the predecessor can see us and
     * overwrite it with OWNER; pairs with its acquire load of Next.
     */
    __atomic_store_n(&Predecessor->Next, Queue, __ATOMIC_RELEASE);
    /*
     * Acquire (KiWaitForChange's loads): the previous owner's critical section
     * happens before ours; pairs with the hand-off exchange in KxReleaseQueuedSpinLock.
     */
    KiWaitForChange((volatile ULONG_PTR *)&Queue->Lock, (ULONG_PTR)SpinLock | LOCK_QUEUE_WAIT,
                    Flags, KiSpinWaitWatch(&Wait, SpinLock, Rip));
}

/* Queues LockHandle on SpinLock and waits until it owns the lock. No IRQL change. */
static inline VOID
KxAcquireQueuedSpinLock(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle, ULONG_PTR Rip)
{
    PKSPIN_LOCK_QUEUE Queue = &LockHandle->LockQueue;
    PKSPIN_LOCK_QUEUE Predecessor;

#if DBG
    if (KiLockTrackIsHeld(SpinLock))
    {
        KeBugCheckEx(SPIN_LOCK_ALREADY_OWNED, (ULONG_PTR)SpinLock, (ULONG_PTR)LockHandle, 0, Rip);
    }
    KiVerifierAcquire(SpinLock, Rip);
    KiLockTrackInsert(SpinLock, Rip, FALSE);
#endif
    Queue->Next = NULL;
    Queue->Lock = SpinLock;

    /*
     * xchg is a full barrier: our idle Next/Lock are visible before a successor
     * can find this entry through the word, and, when the lock was free, the
     * critical section starts after we own it (pairs with the releaser's
     * cmpxchg back to 0 in KxReleaseQueuedSpinLock).
     */
    Predecessor =
        (PKSPIN_LOCK_QUEUE)__atomic_exchange_n(SpinLock, (ULONG_PTR)Queue, __ATOMIC_SEQ_CST);
    if (__builtin_expect(Predecessor == NULL, 1))
    {
        Queue->Lock = (PKSPIN_LOCK)((ULONG_PTR)SpinLock | LOCK_QUEUE_OWNER);
    }
    else
    {
        KxWaitForQueuedSpinLock(SpinLock, Queue, Predecessor, Rip);
    }
#if DBG
    KiLockTrackSetOwner(SpinLock);
#endif
}

/*
 * KxReleaseQueuedSpinLock's hand-off when some processor is published as
 * halted (KiWaitHaltedMask != 0 when the releaser looked): hands the lock to
 * Successor and wakes it if it halted, and if it did not need the wake, wakes
 * the next-but-one ahead of its own hand-off. Out of line: only waits long
 * enough to halt come here.
 */
static __attribute__((noinline)) VOID
KxHandOffWakingAhead(PKSPIN_LOCK_QUEUE Queue, PKSPIN_LOCK_QUEUE Successor, PKSPIN_LOCK SpinLock)
{
    PKSPIN_LOCK_QUEUE NextButOne;
    ULONG SuccessorHalted;

    /*
     * The successor waits for us, so its entry is alive until the hand-off:
     * read who waits behind it now, to wake that one early (below). A hint;
     * no barrier.
     */
    NextButOne = __atomic_load_n(&Successor->Next, __ATOMIC_ACQUIRE);
    Queue->Next = NULL;
    /*
     * The hand-off (K1 and K2 of ke/wait.c): clears the successor's WAIT and
     * sets its OWNER in one exchange, after our critical section; pairs with
     * the waiter's acquire load of its Lock. A locked instruction, so it is
     * also the full barrier before the mask is read (pairs with W3). The
     * successor may run (and its entry vanish) at once.
     */
    (void)__atomic_exchange_n(
        &Successor->Lock, (PKSPIN_LOCK)((ULONG_PTR)SpinLock | LOCK_QUEUE_OWNER), __ATOMIC_SEQ_CST);
    /*
     * K3: if the successor halted, IPI it (unless an early wake has claimed
     * its halt already). The successor's entry may be gone already (it owns
     * the lock and may have released it and returned); KiWaitWakeHalted only
     * compares its address with the published WaitAddress values and never
     * dereferences it.
     */
    SuccessorHalted = KiWaitWakeHalted((volatile ULONG_PTR *)&Successor->Lock, KI_WAIT_UNFENCED);
    /*
     * The successor was running: wake the next-but-one ahead of its hand-off,
     * if it halted, so that it is back on a host core when its turn comes
     * (we usually halt next, behind it, and give it our core). A hint: no
     * barrier, and the entry may be gone (only its address is compared).
     * When the successor itself needed the wake, a second wake in flight only
     * gives the host more runnable processors than the hand-offs can use:
     * under overcommit every hand-off then waits for a host wake-up anyway
     * (README.md, "Waiting", has the measurements).
     */
    if (NextButOne != NULL && SuccessorHalted == 0 &&
        __atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0)
    {
        KiWaitWakeHalted((volatile ULONG_PTR *)&NextButOne->Lock, KI_WAIT_UNFENCED);
    }
}

/* Releases the queued lock held through LockHandle: frees it or hands it on. No IRQL change. */
static inline VOID
KxReleaseQueuedSpinLock(PKLOCK_QUEUE_HANDLE LockHandle, ULONG_PTR Rip)
{
    PKSPIN_LOCK_QUEUE Queue = &LockHandle->LockQueue;
    ULONG_PTR LockBits = (ULONG_PTR)Queue->Lock;
    PKSPIN_LOCK SpinLock = (PKSPIN_LOCK)(LockBits & ~KI_QUEUE_FLAGS);
    PKSPIN_LOCK_QUEUE Successor;

#if DBG
    /*
     * Not owned through this handle: no OWNER bit, a free lock word (a forged
     * or copied handle of a lock already released), or a lock this processor
     * never recorded taking. Caught here, not as a hand-off wait that never
     * ends.
     */
    if ((LockBits & KI_QUEUE_FLAGS) != LOCK_QUEUE_OWNER ||
        __atomic_load_n(SpinLock, __ATOMIC_RELAXED) == 0 || !KiLockTrackRemove(SpinLock))
    {
        KeBugCheckEx(SPIN_LOCK_NOT_OWNED, (ULONG_PTR)SpinLock, (ULONG_PTR)LockHandle, LockBits,
                     Rip);
    }
#endif
    Queue->Lock = SpinLock;

    /* Acquire: pairs with the successor's release store of Next (its WAIT is set by then). */
    Successor = __atomic_load_n(&Queue->Next, __ATOMIC_ACQUIRE);
    if (Successor == NULL)
    {
        ULONG_PTR Expected = (ULONG_PTR)Queue;
        KI_SPIN_WAIT Wait = KI_SPIN_WAIT_INIT;

        /*
         * Release: the critical section is visible before the word reads free;
         * pairs with the next acquirer's xchg.
         */
        if (__atomic_compare_exchange_n(SpinLock, &Expected, 0, FALSE, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
        {
            return;
        }
        /* A successor is between its xchg and linking itself to us: a few instructions. */
        while ((Successor = __atomic_load_n(&Queue->Next, __ATOMIC_ACQUIRE)) == NULL)
        {
            KiSpinWaitPause(&Wait, SpinLock, Rip);
        }
    }
    if (__builtin_expect(__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0, 0))
    {
        KxHandOffWakingAhead(Queue, Successor, SpinLock);
        return;
    }
    Queue->Next = NULL;
    /*
     * The hand-off, as in KxHandOffWakingAhead: one exchange is both K1 and
     * K2 (ke/wait.c). As a locked instruction it is a full barrier, so the
     * new Lock is visible before the mask is read below; pairs with the
     * waiter's locked OR into the mask (W3), so either it re-reads its Lock
     * and sees OWNER (W4) or we see its bit here. A store followed by a fence
     * would cost a second locked instruction (README.md, "Waiting"). The mask
     * read before the hand-off above was only a hint choosing the path. Only
     * a processor published in the mask costs a call, so the common hand-off
     * has no frame and no call (under TCG every return is an indirect-branch
     * lookup).
     */
    (void)__atomic_exchange_n(
        &Successor->Lock, (PKSPIN_LOCK)((ULONG_PTR)SpinLock | LOCK_QUEUE_OWNER), __ATOMIC_SEQ_CST);
    if (__builtin_expect(__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0, 0))
    {
        KiWaitWakeHalted((volatile ULONG_PTR *)&Successor->Lock, KI_WAIT_UNFENCED);
    }
}

static inline PKSPIN_LOCK
KiQueuedLockOf(PKLOCK_QUEUE_HANDLE LockHandle)
{
    return (PKSPIN_LOCK)((ULONG_PTR)LockHandle->LockQueue.Lock & ~KI_QUEUE_FLAGS);
}

/*
 * Raises to DISPATCH_LEVEL and takes SpinLock through LockHandle; the entry
 * IRQL goes to LockHandle->OldIrql. IRQL in <= DISPATCH_LEVEL (checked: 0xA),
 * out DISPATCH_LEVEL. Release with KeReleaseInStackQueuedSpinLock.
 */
VOID
KeAcquireInStackQueuedSpinLock(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle)
{
    ULONG_PTR Rip = (ULONG_PTR)__builtin_return_address(0);

    KiCheckRaiseTo(SpinLock, DISPATCH_LEVEL, Rip);
    LockHandle->OldIrql = KeRaiseIrqlToDpcLevel();
    KxAcquireQueuedSpinLock(SpinLock, LockHandle, Rip);
}

/*
 * As KeAcquireInStackQueuedSpinLock but raises to SYNCH_LEVEL. IRQL in <=
 * SYNCH_LEVEL (checked: 0xA), out SYNCH_LEVEL.
 */
VOID
KeAcquireInStackQueuedSpinLockRaiseToSynch(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle)
{
    ULONG_PTR Rip = (ULONG_PTR)__builtin_return_address(0);

    KiCheckRaiseTo(SpinLock, SYNCH_LEVEL, Rip);
    LockHandle->OldIrql = KeRaiseIrqlToSynchLevel();
    KxAcquireQueuedSpinLock(SpinLock, LockHandle, Rip);
}

/*
 * Releases the lock held through LockHandle, then lowers IRQL to
 * LockHandle->OldIrql. IRQL in DISPATCH_LEVEL (SYNCH_LEVEL after RaiseToSynch).
 * Checked build: below DISPATCH_LEVEL, Verifier-style 0xC4/0x36 (P2 = IRQL,
 * P3 = handle); a handle that does not own its lock, 0x10.
 */
VOID
KeReleaseInStackQueuedSpinLock(PKLOCK_QUEUE_HANDLE LockHandle)
{
#if DBG
    KIRQL Irql = KeGetCurrentIrql();
    if (Irql < DISPATCH_LEVEL)
    {
        KeBugCheckEx(DRIVER_VERIFIER_DETECTED_VIOLATION, 0x36, Irql, (ULONG_PTR)LockHandle, 0);
    }
#endif
    KxReleaseQueuedSpinLock(LockHandle, (ULONG_PTR)__builtin_return_address(0));
    KeLowerIrql(LockHandle->OldIrql);
}

/*
 * Takes SpinLock through LockHandle with no IRQL change; OldIrql is not
 * written. IRQL >= DISPATCH_LEVEL (checked: 0x9).
 */
VOID
KeAcquireInStackQueuedSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle)
{
    KiCheckAtDpcLevel(SpinLock);
    KxAcquireQueuedSpinLock(SpinLock, LockHandle, (ULONG_PTR)__builtin_return_address(0));
}

/*
 * Releases the lock held through LockHandle; no IRQL change. IRQL >= DISPATCH_LEVEL
 * (checked: 0x9). Checked build: a handle that does not own its lock, 0x10.
 */
VOID
KeReleaseInStackQueuedSpinLockFromDpcLevel(PKLOCK_QUEUE_HANDLE LockHandle)
{
    KiCheckAtDpcLevel(KiQueuedLockOf(LockHandle));
    KxReleaseQueuedSpinLock(LockHandle, (ULONG_PTR)__builtin_return_address(0));
}

/*
 * The threaded-DPC form, as KeAcquireSpinLockForDpc: no Spindle caller is a
 * threaded DPC below DISPATCH_LEVEL, so the lock is taken with no IRQL change
 * at any IRQL (API.md §4; kmtest: no change at PASSIVE or APC). The entry IRQL
 * goes to LockHandle->OldIrql.
 */
VOID
KeAcquireInStackQueuedSpinLockForDpc(PKSPIN_LOCK SpinLock, PKLOCK_QUEUE_HANDLE LockHandle)
{
    LockHandle->OldIrql = KeGetCurrentIrql();
    KxAcquireQueuedSpinLock(SpinLock, LockHandle, (ULONG_PTR)__builtin_return_address(0));
}

/*
 * Releases the lock held through LockHandle. Outside a threaded DPC (every
 * Spindle caller) it is KeReleaseInStackQueuedSpinLockFromDpcLevel without
 * the IRQL check: IRQL is left alone, whatever LockHandle->OldIrql says, so
 * a lock taken with KeAcquireInStackQueuedSpinLock and released here leaves
 * the caller at DISPATCH_LEVEL (API.md §4). Any IRQL the acquire allowed.
 */
VOID
KeReleaseInStackQueuedSpinLockForDpc(PKLOCK_QUEUE_HANDLE LockHandle)
{
    KxReleaseQueuedSpinLock(LockHandle, (ULONG_PTR)__builtin_return_address(0));
}
