/* SPDX-License-Identifier: MIT */
/*
 * The out-of-line interlocked operations, API.md §7: the 128-bit
 * compare-exchange and the ExInterlocked arithmetic family. The inline
 * Interlocked* forms live in wdm.h.
 *
 * Routines that take a spin lock disable interrupts (saving RFLAGS) and take
 * it without changing IRQL, so they work at any IRQL, ISRs included; the lock
 * must guard nothing but ExInterlocked calls. Where x64 Windows ignores the
 * lock (one locked instruction does the job), so do we.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"

static inline INTERLOCKED_RESULT
ExpSignOf(LONG Value)
{
    if (Value < 0)
    {
        return ResultNegative;
    }
    return Value == 0 ? ResultZero : ResultPositive;
}

/*
 * cmpxchg16b on the 16-byte-aligned Destination: stores ExchangeHigh:ExchangeLow
 * and returns TRUE if Destination equals ComparandResult[1]:ComparandResult[0];
 * otherwise writes the current value to ComparandResult and returns FALSE.
 * Any IRQL. A full barrier either way.
 */
BOOLEAN
InterlockedCompareExchange128(LONG64 volatile *Destination, LONG64 ExchangeHigh, LONG64 ExchangeLow,
                              LONG64 *ComparandResult)
{
    uint64_t Low = (uint64_t)ComparandResult[0];
    uint64_t High = (uint64_t)ComparandResult[1];

    if (x86_cmpxchg16b((volatile uint64_t *)Destination, &Low, &High, (ULONG64)ExchangeLow,
                       (ULONG64)ExchangeHigh))
    {
        return TRUE;
    }
    ComparandResult[0] = (LONG64)Low;
    ComparandResult[1] = (LONG64)High;
    return FALSE;
}

/*
 * Adds Increment to *Addend under Lock (interrupts off); returns the original
 * value. Any IRQL. Lock must be used only by ExInterlocked routines (they take
 * it with interrupts off, at any IRQL).
 */
ULONG
ExInterlockedAddUlong(PULONG Addend, ULONG Increment, PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    ULONG Original = *Addend;

    *Addend = Original + Increment;
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return Original;
}

/*
 * Adds Increment to the 64-bit *Addend under Lock (interrupts off), carrying
 * from the low into the high half; returns the original value. Any IRQL.
 */
LARGE_INTEGER
ExInterlockedAddLargeInteger(PLARGE_INTEGER Addend, LARGE_INTEGER Increment, PKSPIN_LOCK Lock)
{
    ULONG64 Flags = KiAcquireSpinLockDisableInterrupts(Lock);
    LARGE_INTEGER Original = *Addend;

    Addend->QuadPart = (LONGLONG)((ULONGLONG)Original.QuadPart + (ULONGLONG)Increment.QuadPart);
    KiReleaseSpinLockRestoreInterrupts(Lock, Flags);
    return Original;
}

/* Atomically adds Increment to the 64-bit *Addend (lock add; no lock needed). Any IRQL. */
VOID
ExInterlockedAddLargeStatistic(PLARGE_INTEGER Addend, ULONG Increment)
{
    __atomic_add_fetch((ULONGLONG volatile *)&Addend->QuadPart, (ULONGLONG)Increment,
                       __ATOMIC_SEQ_CST);
}

/* Atomically adds 1 to *Addend; returns the sign of the new (wrapped) value. Lock ignored.
 * Any IRQL. */
INTERLOCKED_RESULT
ExInterlockedIncrementLong(PLONG Addend, PKSPIN_LOCK Lock)
{
    (void)Lock;
    return ExpSignOf(InterlockedIncrement(Addend));
}

/* Atomically subtracts 1 from *Addend; returns the sign of the new (wrapped) value. Lock
 * ignored. Any IRQL. */
INTERLOCKED_RESULT
ExInterlockedDecrementLong(PLONG Addend, PKSPIN_LOCK Lock)
{
    (void)Lock;
    return ExpSignOf(InterlockedDecrement(Addend));
}

/* Atomically stores Value in *Target; returns the old value. Lock ignored. Any IRQL. */
ULONG
ExInterlockedExchangeUlong(PULONG Target, ULONG Value, PKSPIN_LOCK Lock)
{
    (void)Lock;
    return __atomic_exchange_n(Target, Value, __ATOMIC_SEQ_CST);
}

/*
 * Stores *Exchange in *Destination if it equals *Comparand; returns the old
 * *Destination. Exchange and Comparand are only read; Lock is ignored (may
 * be NULL). Any IRQL.
 */
LONGLONG
ExInterlockedCompareExchange64(PLONGLONG Destination, PLONGLONG Exchange, PLONGLONG Comparand,
                               PKSPIN_LOCK Lock)
{
    (void)Lock;
    return InterlockedCompareExchange64(Destination, *Exchange, *Comparand);
}
