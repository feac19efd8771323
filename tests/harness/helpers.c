/* SPDX-License-Identifier: MIT */
/*
 * Helpers the test files share (declared in ktest.h): the performance-counter
 * clock in milliseconds, bounded waits for another processor's store, and the
 * IRQL-matrix runner of the lock tests.
 */
#include <ktest.h>

#include "kernel/ke/ke.h"

ULONG64
KtNowMs(VOID)
{
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;

    return Now / ((ULONG64)Frequency.QuadPart / 1000);
}

/* What a bounded wait waits for. */
typedef enum _KT_WAIT_UNTIL
{
    KtUntilEqual,
    KtUntilAtLeast,
    KtUntilChanged,
} KT_WAIT_UNTIL;

static BOOLEAN
KtWaitDone(KT_WAIT_UNTIL Until, LONG64 Now, LONG64 Target)
{
    switch (Until)
    {
        case KtUntilEqual:
            return Now == Target;
        case KtUntilAtLeast:
            return Now >= Target;
        case KtUntilChanged:
            return Now != Target;
    }
    return FALSE;
}

/* The acquire loads pair with the other processor's release or locked store. */
static LONG64
KtWaitLoad(volatile void *Value, BOOLEAN Wide)
{
    if (Wide)
    {
        return (LONG64)__atomic_load_n((volatile ULONG64 *)Value, __ATOMIC_ACQUIRE);
    }
    return __atomic_load_n((volatile LONG *)Value, __ATOMIC_ACQUIRE);
}

/* A wait's deadline, checked by KiWaitForChange while it spins and after each halt. */
typedef struct _KT_WAIT_WATCH
{
    KI_WAIT_WATCH Watch;
    ULONG64 DeadlineMs; // KtNowMs
    KT_JMP_BUF Expired; // where the check leaves the wait once the deadline has passed
} KT_WAIT_WATCH;

static VOID
KtWaitWatchCheck(KI_WAIT_WATCH *Watch)
{
    KT_WAIT_WATCH *Wait = CONTAINING_RECORD(Watch, KT_WAIT_WATCH, Watch);

    /*
     * KiWaitForChange calls a watch with nothing published and the interrupt
     * flag as its caller had it, so leaving from here abandons nothing.
     */
    if (KtNowMs() > Wait->DeadlineMs)
    {
        x86_longjmp(&Wait->Expired, 1);
    }
}

/*
 * Waits until Until holds for *Value (a LONG, or a 64-bit word when Wide)
 * against Target, or TimeoutMs have passed on the performance counter; one
 * last look after the bound. The wait is the kernel's (KiWaitForChange: spin,
 * then halt), on the aligned word that holds *Value: a waiting processor gives
 * its host time back to the one it waits for. Test code stores without waking
 * anyone, so the wait is KI_WAIT_UNFENCED and has a watch: a halted waiter
 * looks again at each of its clock ticks. A change of the word's other half
 * only makes it look again.
 */
static BOOLEAN
KtWait(volatile void *Value, BOOLEAN Wide, KT_WAIT_UNTIL Until, LONG64 Target, ULONG TimeoutMs)
{
    volatile ULONG_PTR *Word =
        (volatile ULONG_PTR *)((ULONG_PTR)Value & ~(ULONG_PTR)(sizeof(ULONG_PTR) - 1));
    KT_WAIT_WATCH Wait;

    Wait.Watch.Check = KtWaitWatchCheck;
    Wait.DeadlineMs = KtNowMs() + TimeoutMs;
    if (x86_setjmp(&Wait.Expired) != 0)
    {
        return KtWaitDone(Until, KtWaitLoad(Value, Wide), Target);
    }
    for (;;)
    {
        /* The word first: a store after this read makes KiWaitForChange return at once. */
        ULONG_PTR Seen = __atomic_load_n(Word, __ATOMIC_ACQUIRE);

        if (KtWaitDone(Until, KtWaitLoad(Value, Wide), Target))
        {
            return TRUE;
        }
        KiWaitForChange(Word, Seen, KI_WAIT_UNFENCED, &Wait.Watch);
    }
}

BOOLEAN
KtWaitForLong(volatile LONG *Value, LONG Expected, ULONG TimeoutMs)
{
    return KtWait(Value, FALSE, KtUntilEqual, Expected, TimeoutMs);
}

BOOLEAN
KtWaitForLongAtLeast(volatile LONG *Value, LONG Minimum, ULONG TimeoutMs)
{
    return KtWait(Value, FALSE, KtUntilAtLeast, Minimum, TimeoutMs);
}

BOOLEAN
KtWaitForWord(volatile ULONG_PTR *Value, ULONG_PTR Expected, ULONG TimeoutMs)
{
    _Static_assert(sizeof(ULONG_PTR) == sizeof(ULONG64), "a word is 64 bits");
    return KtWait(Value, TRUE, KtUntilEqual, (LONG64)Expected, TimeoutMs);
}

BOOLEAN
KtWaitForWordChange(volatile ULONG64 *Value, ULONG64 Old, ULONG TimeoutMs)
{
    return KtWait(Value, TRUE, KtUntilChanged, (LONG64)Old, TimeoutMs);
}

/* The entry IRQLs of the matrix, in order. */
static const KIRQL KtMatrixIrqls[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL, HIGH_LEVEL};

VOID
KtRunIrqlMatrix(const KT_IRQL_MATRIX *Matrix, KT_IRQL_PAIR_CHECK *CheckPair,
                KT_IRQL_MISUSE_CHECK *CheckMisuse, const void *Context)
{
    for (ULONG i = 0; i < sizeof(KtMatrixIrqls) / sizeof(KtMatrixIrqls[0]); i++)
    {
        KIRQL Entry = KtMatrixIrqls[i];
        KIRQL Saved;

        KtLog("%s at IRQL %u", Matrix->Name, Entry);
        KeRaiseIrql(Entry, &Saved);
        if (Entry >= Matrix->MinIrql && Entry <= Matrix->MaxIrql)
        {
            KIRQL Held = Matrix->HeldIrql == KT_IRQL_UNCHANGED ? Entry : Matrix->HeldIrql;
            CheckPair(Context, Entry, Held);
        }
        else if (DBG)
        {
            CheckMisuse(Context, Entry,
                        Entry < Matrix->MinIrql ? Matrix->LowCode : Matrix->HighCode);
        }
        else
        {
            /* Free build: no check; a raise from above lowers, AtDpcLevel just takes it. */
            CheckPair(Context, Entry, Entry < Matrix->MinIrql ? Entry : Matrix->FreeHighHeld);
        }
        KeLowerIrql(Saved);
    }
}
