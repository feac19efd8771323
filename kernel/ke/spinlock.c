/* SPDX-License-Identifier: MIT */
/*
 * Ordinary (executive) spin locks, API.md §3. The lock word is 0 when free
 * and 1 when held; waiters spin on plain reads with pause until it reads 0,
 * then retry the atomic (test-and-test-and-set). Acquiring raises IRQL first;
 * releasing stores 0 before IRQL is lowered.
 */
#include "kernel/ki.h"

#include "hal/hal.h"

/*
 * Takes the lock word. The locked exchange is a full barrier, so the critical
 * section cannot start before the lock is owned; it pairs with the release
 * store in KxReleaseSpinLock.
 */
static inline VOID
KxAcquireSpinLock(PKSPIN_LOCK SpinLock)
{
    for (;;)
    {
        if (__atomic_exchange_n(SpinLock, 1, __ATOMIC_ACQUIRE) == 0)
        {
            return;
        }
        while (__atomic_load_n(SpinLock, __ATOMIC_RELAXED) != 0)
        {
            x86_pause();
        }
    }
}

/*
 * Frees the lock word. A release store suffices on x86 (TSO): every access in
 * the critical section is ordered before it. Pairs with KxAcquireSpinLock.
 */
static inline VOID
KxReleaseSpinLock(PKSPIN_LOCK SpinLock)
{
    __atomic_store_n(SpinLock, 0, __ATOMIC_RELEASE);
}

/* Sets the lock free. Any IRQL; the lock must be resident. */
VOID
KeInitializeSpinLock(PKSPIN_LOCK SpinLock)
{
    *SpinLock = 0;
}

/*
 * Raises to DISPATCH_LEVEL, then spins until the lock is owned. IRQL in <=
 * DISPATCH_LEVEL, out DISPATCH_LEVEL. *OldIrql is written once the lock is held.
 */
VOID
KeAcquireSpinLock(PKSPIN_LOCK SpinLock, PKIRQL OldIrql)
{
    KIRQL Previous = KeRaiseIrqlToDpcLevel();
    KxAcquireSpinLock(SpinLock);
    *OldIrql = Previous;
}

/* As KeAcquireSpinLock; returns the previous IRQL. */
KIRQL
KeAcquireSpinLockRaiseToDpc(PKSPIN_LOCK SpinLock)
{
    KIRQL Previous = KeRaiseIrqlToDpcLevel();
    KxAcquireSpinLock(SpinLock);
    return Previous;
}

/* Releases the lock, then lowers IRQL to NewIrql. IRQL in DISPATCH_LEVEL. */
VOID
KeReleaseSpinLock(PKSPIN_LOCK SpinLock, KIRQL NewIrql)
{
    KxReleaseSpinLock(SpinLock);
    KeLowerIrql(NewIrql);
}

/* Takes the lock without changing IRQL. IRQL in >= DISPATCH_LEVEL. */
VOID
KeAcquireSpinLockAtDpcLevel(PKSPIN_LOCK SpinLock)
{
    KxAcquireSpinLock(SpinLock);
}

/* Releases the lock without changing IRQL. IRQL in >= DISPATCH_LEVEL. */
VOID
KeReleaseSpinLockFromDpcLevel(PKSPIN_LOCK SpinLock)
{
    KxReleaseSpinLock(SpinLock);
}
