/* SPDX-License-Identifier: MIT */
/*
 * Interlocked / ExInterlocked: API.md §7. Return values of every operation
 * (new vs old value), wrap-around at MAXLONG/MINLONG and 2^64, the 128-bit
 * compare-exchange writing back on failure, the ExInterlocked arithmetic
 * (original values, the 64-bit carry, INTERLOCKED_RESULT signs across the
 * wrap), IRQL and interrupt flag untouched at PASSIVE and HIGH, and exact
 * sums when every processor adds at once.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define IL_ITERATIONS 20000 // operations per processor in the contention tests

/* ---------------------------------------------------------------- 32-bit */

KTEST(Interlocked, increment_and_decrement_return_the_new_value_and_wrap)
{
    LONG volatile Value = 5;

    KT_EXPECT_EQ(InterlockedIncrement(&Value), 6);
    KT_EXPECT_EQ(InterlockedDecrement(&Value), 5);
    Value = MAXLONG;
    KT_EXPECT_EQ(InterlockedIncrement(&Value), MINLONG);
    KT_EXPECT_EQ(Value, MINLONG);
    KT_EXPECT_EQ(InterlockedDecrement(&Value), MAXLONG);
    Value = 0;
    KT_EXPECT_EQ(InterlockedDecrement(&Value), -1);
    KT_EXPECT_EQ(InterlockedIncrement(&Value), 0);
}

KTEST(Interlocked, exchange_family_returns_the_old_value)
{
    LONG volatile Value = 10;

    KT_EXPECT_EQ(InterlockedExchange(&Value, 20), 10);
    KT_EXPECT_EQ(Value, 20);
    KT_EXPECT_EQ(InterlockedCompareExchange(&Value, 30, 99), 20); // no match: unchanged
    KT_EXPECT_EQ(Value, 20);
    KT_EXPECT_EQ(InterlockedCompareExchange(&Value, 30, 20), 20); // match: stored
    KT_EXPECT_EQ(Value, 30);
    KT_EXPECT_EQ(InterlockedExchangeAdd(&Value, -40), 30);
    KT_EXPECT_EQ(Value, -10);
    Value = MAXLONG;
    KT_EXPECT_EQ(InterlockedExchangeAdd(&Value, 2), MAXLONG);
    KT_EXPECT_EQ(Value, MINLONG + 1);
    Value = 0x0ff0;
    KT_EXPECT_EQ(InterlockedAnd(&Value, 0x00ff), 0x0ff0);
    KT_EXPECT_EQ(Value, 0x00f0);
    KT_EXPECT_EQ(InterlockedOr(&Value, 0x0f00), 0x00f0);
    KT_EXPECT_EQ(Value, 0x0ff0);
    KT_EXPECT_EQ(InterlockedXor(&Value, 0x0ffff), 0x0ff0);
    KT_EXPECT_EQ(Value, 0xf00f);
}

/* ---------------------------------------------------------------- 64-bit and pointers */

KTEST(Interlocked, sixty_four_bit_forms_follow_the_same_rules)
{
    LONG64 volatile Value = MAXLONG64;

    KT_EXPECT_EQ(InterlockedIncrement64(&Value), MINLONG64);
    KT_EXPECT_EQ(InterlockedDecrement64(&Value), MAXLONG64);
    KT_EXPECT_EQ(InterlockedExchange64(&Value, 0x100000000ll), MAXLONG64);
    KT_EXPECT_EQ(InterlockedCompareExchange64(&Value, 7, 0x100000001ll), 0x100000000ll);
    KT_EXPECT_EQ(Value, 0x100000000ll);
    KT_EXPECT_EQ(InterlockedCompareExchange64(&Value, 7, 0x100000000ll), 0x100000000ll);
    KT_EXPECT_EQ(Value, 7);
    KT_EXPECT_EQ(InterlockedExchangeAdd64(&Value, 0xffffffffll), 7);
    KT_EXPECT_EQ(Value, 0x100000006ll);
    KT_EXPECT_EQ(InterlockedAnd64(&Value, 0x1000000ffll), 0x100000006ll);
    KT_EXPECT_EQ(Value, 0x100000006ll);
    KT_EXPECT_EQ(InterlockedOr64(&Value, 0x8000000000000000ll), 0x100000006ll);
    KT_EXPECT_EQ(InterlockedXor64(&Value, 0x8000000100000000ll), (LONG64)0x8000000100000006ull);
    KT_EXPECT_EQ(Value, 6);
}

KTEST(Interlocked, pointer_forms_return_the_old_pointer)
{
    int A, B;
    PVOID volatile Pointer = &A;

    KT_EXPECT_EQ(InterlockedExchangePointer(&Pointer, &B), &A);
    KT_EXPECT_EQ(Pointer, &B);
    KT_EXPECT_EQ(InterlockedCompareExchangePointer(&Pointer, NULL, &A), &B); // no match
    KT_EXPECT_EQ(Pointer, &B);
    KT_EXPECT_EQ(InterlockedCompareExchangePointer(&Pointer, NULL, &B), &B);
    KT_EXPECT_EQ(Pointer, NULL);
}

KTEST(Interlocked, compare_exchange_128_swaps_or_returns_the_current_value)
{
    static LONG64 volatile Target[2] __attribute__((aligned(16)));
    LONG64 Comparand[2];

    Target[0] = 0x1111; // low
    Target[1] = 0x2222; // high
    Comparand[0] = 0x1111;
    Comparand[1] = 0x9999; // high half differs
    KT_EXPECT_EQ(InterlockedCompareExchange128(Target, 0x4444, 0x3333, Comparand), FALSE);
    KT_EXPECT_EQ(Comparand[0], 0x1111); // the current value, written back
    KT_EXPECT_EQ(Comparand[1], 0x2222);
    KT_EXPECT_EQ(Target[0], 0x1111);
    KT_EXPECT_EQ(Target[1], 0x2222);
    KT_EXPECT_EQ(InterlockedCompareExchange128(Target, 0x4444, 0x3333, Comparand), TRUE);
    KT_EXPECT_EQ(Target[0], 0x3333);
    KT_EXPECT_EQ(Target[1], 0x4444);
    KT_EXPECT_EQ(Comparand[0], 0x1111); // left alone on success
    KT_EXPECT_EQ(Comparand[1], 0x2222);
}

/* ---------------------------------------------------------------- ExInterlocked arithmetic */

/* Runs at PASSIVE and HIGH with interrupts on: IRQL and IF must come back unchanged. */
static const KIRQL IlLevels[] = {PASSIVE_LEVEL, HIGH_LEVEL};

KTEST(ExInterlocked, add_ulong_returns_the_original_value_and_wraps)
{
    for (ULONG i = 0; i < sizeof(IlLevels) / sizeof(IlLevels[0]); i++)
    {
        KSPIN_LOCK Lock = 0;
        ULONG Value = 0xfffffffe;
        KIRQL Saved;

        KeRaiseIrql(IlLevels[i], &Saved);
        KT_EXPECT_EQ(ExInterlockedAddUlong(&Value, 1, &Lock), 0xfffffffe);
        KT_EXPECT_EQ(ExInterlockedAddUlong(&Value, 3, &Lock), 0xffffffff);
        KT_EXPECT_EQ(Value, 2); // wrapped
        KT_EXPECT_EQ(ExInterlockedAddUlong(&Value, 0, &Lock), 2);
        KT_EXPECT_EQ(Lock, 0);
        KT_EXPECT_EQ(KeGetCurrentIrql(), IlLevels[i]);
        KT_EXPECT(x86_interrupts_enabled());
        KeLowerIrql(Saved);
    }
}

KTEST(ExInterlocked, add_large_integer_carries_into_the_high_half)
{
    for (ULONG i = 0; i < sizeof(IlLevels) / sizeof(IlLevels[0]); i++)
    {
        KSPIN_LOCK Lock = 0;
        LARGE_INTEGER Value, Increment, Old;
        KIRQL Saved;

        KeRaiseIrql(IlLevels[i], &Saved);
        Value.QuadPart = 0xffffffffll;
        Increment.QuadPart = 1;
        Old = ExInterlockedAddLargeInteger(&Value, Increment, &Lock);
        KT_EXPECT_EQ(Old.QuadPart, 0xffffffffll);
        KT_EXPECT_EQ(Value.u.LowPart, 0);
        KT_EXPECT_EQ(Value.u.HighPart, 1);
        Increment.QuadPart = -2;
        Old = ExInterlockedAddLargeInteger(&Value, Increment, &Lock);
        KT_EXPECT_EQ(Old.QuadPart, 0x100000000ll);
        KT_EXPECT_EQ(Value.QuadPart, 0xfffffffell); // borrow from the high half
        Value.QuadPart = -1;
        Increment.QuadPart = 1;
        Old = ExInterlockedAddLargeInteger(&Value, Increment, &Lock);
        KT_EXPECT_EQ(Old.QuadPart, -1);
        KT_EXPECT_EQ(Value.QuadPart, 0);
        KT_EXPECT_EQ(Lock, 0);
        KT_EXPECT_EQ(KeGetCurrentIrql(), IlLevels[i]);
        KT_EXPECT(x86_interrupts_enabled());
        KeLowerIrql(Saved);
    }
}

KTEST(ExInterlocked, add_large_statistic_carries_into_the_high_half)
{
    LARGE_INTEGER Value;

    Value.QuadPart = 0xfffffff0ll;
    ExInterlockedAddLargeStatistic(&Value, 0x20);
    KT_EXPECT_EQ(Value.u.LowPart, 0x10);
    KT_EXPECT_EQ(Value.u.HighPart, 1);
    ExInterlockedAddLargeStatistic(&Value, 0xffffffff);
    KT_EXPECT_EQ(Value.QuadPart, 0x20000000fll);
}

KTEST(ExInterlocked, increment_and_decrement_long_return_the_sign_of_the_new_value)
{
    static const struct
    {
        LONG Start;
        INTERLOCKED_RESULT AfterIncrement;
        INTERLOCKED_RESULT AfterDecrement;
    } Cases[] = {
        {0, ResultPositive, ResultNegative},
        {-1, ResultZero, ResultNegative},
        {1, ResultPositive, ResultZero},
        {-2, ResultNegative, ResultNegative},
        {MAXLONG - 1, ResultPositive, ResultPositive},
        {MAXLONG, ResultNegative, ResultPositive}, // wraps to MINLONG
        {MINLONG, ResultNegative, ResultPositive}, // MINLONG - 1 wraps to MAXLONG
    };
    KSPIN_LOCK Lock = 0;

    for (ULONG i = 0; i < sizeof(Cases) / sizeof(Cases[0]); i++)
    {
        LONG Value = Cases[i].Start;
        KT_EXPECT_EQ(ExInterlockedIncrementLong(&Value, &Lock), Cases[i].AfterIncrement);
        KT_EXPECT_EQ(Value, (LONG)((ULONG)Cases[i].Start + 1));
        Value = Cases[i].Start;
        KT_EXPECT_EQ(ExInterlockedDecrementLong(&Value, &Lock), Cases[i].AfterDecrement);
        KT_EXPECT_EQ(Value, (LONG)((ULONG)Cases[i].Start - 1));
    }
    KT_EXPECT_EQ(Lock, 0); // ignored on x64
    KT_EXPECT_EQ(ResultNegative, 1);
    KT_EXPECT_EQ(ResultZero, 0);
    KT_EXPECT_EQ(ResultPositive, 2);
}

KTEST(ExInterlocked, exchange_ulong_and_compare_exchange_64_return_the_old_value)
{
    ULONG Value = 0xdeadbeef;
    LONGLONG Target = 0x123456789ll;
    LONGLONG Exchange = -5, Comparand = 0x123456789ll;
    KIRQL Saved;

    KeRaiseIrql(HIGH_LEVEL, &Saved);
    KT_EXPECT_EQ(ExInterlockedExchangeUlong(&Value, 7, NULL), 0xdeadbeef);
    KT_EXPECT_EQ(Value, 7);
    KT_EXPECT_EQ(ExInterlockedCompareExchange64(&Target, &Exchange, &Comparand, NULL),
                 0x123456789ll);
    KT_EXPECT_EQ(Target, -5);
    KT_EXPECT_EQ(Exchange, -5); // arguments are read, never written
    KT_EXPECT_EQ(Comparand, 0x123456789ll);
    KT_EXPECT_EQ(ExInterlockedCompareExchange64(&Target, &Exchange, &Comparand, NULL), -5);
    KT_EXPECT_EQ(Target, -5); // no match: unchanged
    KT_EXPECT_EQ(KeGetCurrentIrql(), HIGH_LEVEL);
    KeLowerIrql(Saved);
}

KTEST(ExInterlocked, lock_taking_forms_keep_interrupts_off_if_they_were)
{
    KSPIN_LOCK Lock = 0;
    ULONG Value = 1;
    ULONG64 Flags = x86_save_disable();

    KT_EXPECT_EQ(ExInterlockedAddUlong(&Value, 1, &Lock), 1);
    KT_EXPECT(!x86_interrupts_enabled());
    x86_restore_flags(Flags);
    KT_EXPECT(x86_interrupts_enabled());
}

/* ---------------------------------------------------------------- contention */

typedef struct _IL_SUMS
{
    LONG volatile Increments;
    LONG64 volatile Adds64;
    ULONG LockedUlong; // through ExInterlockedAddUlong
    KSPIN_LOCK UlongLock;
    LARGE_INTEGER LockedLarge; // through ExInterlockedAddLargeInteger
    KSPIN_LOCK LargeLock;
    LARGE_INTEGER Statistic; // through ExInterlockedAddLargeStatistic
    LONG volatile CasLoop;   // through an InterlockedCompareExchange loop
    LONG64 volatile Wide[2] __attribute__((aligned(16))); // both halves via cmpxchg16b
} IL_SUMS;

static VOID
IlSumRoutine(ULONG Index, PVOID Context)
{
    IL_SUMS *Sums = Context;

    for (ULONG i = 0; i < IL_ITERATIONS; i++)
    {
        LARGE_INTEGER One;
        LONG Old;
        LONG64 Comparand[2];

        InterlockedIncrement(&Sums->Increments);
        InterlockedExchangeAdd64(&Sums->Adds64, 0x100000001ll);
        ExInterlockedAddUlong(&Sums->LockedUlong, 3, &Sums->UlongLock);
        One.QuadPart = 0x100000001ll;
        ExInterlockedAddLargeInteger(&Sums->LockedLarge, One, &Sums->LargeLock);
        ExInterlockedAddLargeStatistic(&Sums->Statistic, 0xffffffffu);
        do
        {
            Old = Sums->CasLoop;
        } while (InterlockedCompareExchange(&Sums->CasLoop, Old + 2, Old) != Old);
        Comparand[0] = Sums->Wide[0];
        Comparand[1] = Sums->Wide[1];
        while (!InterlockedCompareExchange128(Sums->Wide, Comparand[1] + 1, Comparand[0] + 1,
                                              Comparand))
        {
            YieldProcessor();
        }
    }
    (void)Index;
}

KTEST(Interlocked, sums_are_exact_when_every_processor_adds)
{
    static IL_SUMS Sums;
    ULONG64 Total = (ULONG64)IL_ITERATIONS * KiActiveProcessorCount;

    memset(&Sums, 0, sizeof(Sums));
    KtRunOnProcessors(0, IlSumRoutine, &Sums);
    KT_EXPECT_EQ(Sums.Increments, (LONG)Total);
    KT_EXPECT_EQ(Sums.Adds64, (LONG64)(Total * 0x100000001ull));
    KT_EXPECT_EQ(Sums.LockedUlong, (ULONG)(Total * 3));
    KT_EXPECT_EQ(Sums.LockedLarge.QuadPart, (LONG64)(Total * 0x100000001ull));
    KT_EXPECT_EQ(Sums.Statistic.QuadPart, (LONG64)(Total * 0xffffffffull));
    KT_EXPECT_EQ(Sums.CasLoop, (LONG)(Total * 2));
    KT_EXPECT_EQ(Sums.Wide[0], (LONG64)Total);
    KT_EXPECT_EQ(Sums.Wide[1], (LONG64)Total);
    KT_EXPECT_EQ(Sums.UlongLock, 0);
    KT_EXPECT_EQ(Sums.LargeLock, 0);
}
