/* SPDX-License-Identifier: MIT */
/*
 * KeInterrupt: interrupt objects and interrupt spin locks, API.md §3.
 * IoConnectInterrupt's validation and the object it builds; the ISR running
 * at SynchronizeIrql holding ActualLock, on the processor the interrupt was
 * raised on (KiRequestInterrupt), only when that processor's IRQL allows it
 * and only on processors in the affinity; chained vectors (latched: every
 * ISR; level-sensitive: up to the first that claims it); disconnect waiting
 * for a running ISR; KeAcquire/ReleaseInterruptSpinLock and
 * KeSynchronizeExecution, including exclusion against the ISR on every
 * processor at once.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define IT_VECTOR        0x51 // IRQL 5
#define IT_SHARED_VECTOR 0x62 // IRQL 6
#define IT_SYNCH_IRQL    7
#define IT_WAIT_MS       10000
#define IT_SYNC_CALLS    2000 // KeSynchronizeExecution calls per processor

/* The word of an ordinary lock the current processor holds. */
static ULONG_PTR
ItHeldWord(VOID)
{
#if DBG
    return (ULONG_PTR)KeGetCurrentPrcb() | 1;
#else
    return 1;
#endif
}

/* What an ISR saw, for the test to check afterwards. */
typedef struct _IT_RECORD
{
    volatile LONG Calls;
    KIRQL Irql;
    ULONG Processor;
    ULONG_PTR LockWord;
    ULONG_PTR ExpectedWord;
    BOOLEAN InterruptsOn;
    PKINTERRUPT Interrupt;
    BOOLEAN Claim;        // what the ISR returns
    volatile LONG *Order; // shared call counter: the ISR stores its position here
    LONG Position;
    ULONG StallMs;          // the ISR stalls this long (disconnect test)
    volatile LONG Finished; // the ISR returned
} IT_RECORD;

static BOOLEAN
ItRecordingIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    IT_RECORD *Record = Context;

    Record->Irql = KeGetCurrentIrql();
    Record->Processor = KeGetCurrentProcessorNumber();
    Record->LockWord = *Interrupt->ActualLock;
    Record->ExpectedWord = ItHeldWord();
    Record->InterruptsOn = x86_interrupts_enabled();
    Record->Interrupt = Interrupt;
    if (Record->Order != NULL)
    {
        Record->Position = __atomic_add_fetch(Record->Order, 1, __ATOMIC_RELAXED);
    }
    if (Record->StallMs != 0)
    {
        KeStallExecutionProcessor(Record->StallMs * 1000);
    }
    __atomic_add_fetch(&Record->Calls, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&Record->Finished, 1, __ATOMIC_RELEASE);
    return Record->Claim;
}

static NTSTATUS
ItConnect(PKINTERRUPT *Interrupt, IT_RECORD *Record, PKSPIN_LOCK SpinLock, ULONG Vector,
          KINTERRUPT_MODE Mode, BOOLEAN Share, KAFFINITY Mask)
{
    return IoConnectInterrupt(Interrupt, ItRecordingIsr, Record, SpinLock, Vector,
                              (KIRQL)(Vector >> 4), IT_SYNCH_IRQL, Mode, Share, Mask, FALSE);
}

/* ---------------------------------------------------------------- connect */

KTEST(KeInterrupt, connect_rejects_bad_parameters)
{
    static const struct
    {
        ULONG Vector;
        KIRQL Irql;
        KIRQL SynchronizeIrql;
        KINTERRUPT_MODE Mode;
        KAFFINITY Mask;
    } Bad[] = {
        {0x2f, 2, 2, Latched, 1}, // the DPC vector: not a device vector
        {0x20, 2, 2, Latched, 1},
        {0xc0, 12, 12, Latched, 1}, // above the device range
        {0xd1, 13, 13, Latched, 1}, // the clock
        {0x51, 4, 7, Latched, 1},   // Irql != Vector >> 4
        {0x51, 6, 7, Latched, 1},
        {0x51, 5, 4, Latched, 1},            // SynchronizeIrql < Irql
        {0x51, 5, 16, Latched, 1},           // SynchronizeIrql above HIGH_LEVEL
        {0x51, 5, 7, (KINTERRUPT_MODE)7, 1}, // no such mode
        {0x51, 5, 7, Latched, 0},            // no processor
    };
    IT_RECORD Record = {0};

    for (ULONG i = 0; i < sizeof(Bad) / sizeof(Bad[0]); i++)
    {
        PKINTERRUPT Interrupt = (PKINTERRUPT)0x1234;
        NTSTATUS Status = IoConnectInterrupt(&Interrupt, ItRecordingIsr, &Record, NULL,
                                             Bad[i].Vector, Bad[i].Irql, Bad[i].SynchronizeIrql,
                                             Bad[i].Mode, FALSE, Bad[i].Mask, FALSE);
        KT_EXPECT_EQ(Status, STATUS_INVALID_PARAMETER);
        KT_EXPECT_EQ(Interrupt, (PKINTERRUPT)0x1234);
    }
    if (KiActiveProcessorCount < MAXIMUM_PROCESSORS)
    {
        PKINTERRUPT Interrupt = NULL;
        KT_EXPECT_EQ(ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE,
                               (KAFFINITY)1 << (MAXIMUM_PROCESSORS - 1)),
                     STATUS_INVALID_PARAMETER); // only processors that are not there
    }
    {
        PKINTERRUPT Interrupt = NULL;
        KT_EXPECT_EQ(IoConnectInterrupt(&Interrupt, NULL, &Record, NULL, IT_VECTOR, 5,
                                        IT_SYNCH_IRQL, Latched, FALSE, 1, FALSE),
                     STATUS_INVALID_PARAMETER);
    }
}

KTEST(KeInterrupt, connect_builds_the_object)
{
    IT_RECORD Record = {0};
    KSPIN_LOCK Shared = 0;
    PKINTERRUPT Own = NULL, Given = NULL;

    KT_ASSERT_EQ(IoConnectInterrupt(&Own, ItRecordingIsr, &Record, NULL, IT_VECTOR, 5, 9,
                                    LevelSensitive, TRUE, ~(KAFFINITY)0, TRUE),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(Own->Type, InterruptObject);
    KT_EXPECT_EQ(Own->Size, sizeof(KINTERRUPT));
    KT_EXPECT_EQ(Own->ServiceRoutine, ItRecordingIsr);
    KT_EXPECT_EQ(Own->ServiceContext, &Record);
    KT_EXPECT_EQ(Own->ActualLock, &Own->SpinLock);
    KT_EXPECT_EQ(Own->SpinLock, 0);
    KT_EXPECT_EQ(Own->Vector, IT_VECTOR);
    KT_EXPECT_EQ(Own->Irql, 5);
    KT_EXPECT_EQ(Own->SynchronizeIrql, 9);
    KT_EXPECT_EQ(Own->Mode, LevelSensitive);
    KT_EXPECT_EQ(Own->ShareVector, TRUE);
    KT_EXPECT_EQ(Own->FloatingSave, TRUE);
    KT_EXPECT_EQ(Own->Affinity, KeQueryActiveProcessors());
    KT_EXPECT_EQ(Own->ProcessorNumber, 0);
    KT_EXPECT_EQ(Own->Connected, TRUE);
    KT_EXPECT_EQ(Own->ServiceCount, 0);

    KT_ASSERT_EQ(ItConnect(&Given, &Record, &Shared, IT_VECTOR, LevelSensitive, TRUE,
                           KeQueryActiveProcessors() & ~(KAFFINITY)1),
                 KiActiveProcessorCount > 1 ? STATUS_SUCCESS : STATUS_INVALID_PARAMETER);
    if (Given != NULL)
    {
        KT_EXPECT_EQ(Given->ActualLock, &Shared);
        KT_EXPECT_EQ(Given->ProcessorNumber, 1); // the lowest enabled processor
        IoDisconnectInterrupt(Given);
    }
    IoDisconnectInterrupt(Own);
}

/* ---------------------------------------------------------------- the ISR */

KTEST(KeInterrupt, isr_runs_at_synchronize_irql_holding_its_lock)
{
    IT_RECORD Record = {0};
    KSPIN_LOCK Shared = 0;
    PKINTERRUPT Interrupt;

    Record.Claim = TRUE;
    KT_ASSERT_EQ(ItConnect(&Interrupt, &Record, &Shared, IT_VECTOR, Latched, FALSE, 1),
                 STATUS_SUCCESS);
    KiRequestInterrupt(0, IT_VECTOR); // at PASSIVE_LEVEL: delivered at once
    KT_EXPECT(KtWaitForLongAtLeast(&Record.Calls, 1, IT_WAIT_MS));
    KT_EXPECT_EQ(Record.Calls, 1);
    KT_EXPECT_EQ(Record.Irql, IT_SYNCH_IRQL);
    KT_EXPECT_EQ(Record.Processor, 0);
    KT_EXPECT_EQ(Record.LockWord, Record.ExpectedWord);
    KT_EXPECT_EQ(Record.InterruptsOn, TRUE);
    KT_EXPECT_EQ(Record.Interrupt, Interrupt);
    KT_EXPECT_EQ(Interrupt->ServiceCount, 1);
    KT_EXPECT_EQ(Shared, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    IoDisconnectInterrupt(Interrupt);
}

KTEST(KeInterrupt, isr_waits_while_irql_masks_its_vector)
{
    IT_RECORD Record = {0};
    PKINTERRUPT Interrupt;
    KIRQL OldIrql;

    KT_ASSERT_EQ(ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE, 1),
                 STATUS_SUCCESS);
    KeRaiseIrql(5, &OldIrql); // the vector's own level masks it
    KiRequestInterrupt(0, IT_VECTOR);
    KeStallExecutionProcessor(2000);
    KT_EXPECT_EQ(Record.Calls, 0);
    KeLowerIrql(4); // below its level: it is delivered on the way down
    KT_EXPECT_EQ(Record.Calls, 1);
    KeLowerIrql(OldIrql);

    /* Holding the interrupt spin lock (at SynchronizeIrql) masks it as well. */
    OldIrql = KeAcquireInterruptSpinLock(Interrupt);
    KiRequestInterrupt(0, IT_VECTOR);
    KeStallExecutionProcessor(2000);
    KT_EXPECT_EQ(Record.Calls, 1);
    KeReleaseInterruptSpinLock(Interrupt, OldIrql);
    KT_EXPECT_EQ(Record.Calls, 2);
    KT_EXPECT_EQ(Interrupt->ServiceCount, 0); // the ISR never claimed it
    IoDisconnectInterrupt(Interrupt);
}

KTEST_EX(KeInterrupt, isr_runs_on_the_processor_the_interrupt_is_raised_on, KTEST_SMP_ONLY, 0)
{
    IT_RECORD Record = {0};
    PKINTERRUPT Interrupt;

    KT_ASSERT_EQ(
        ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE, KeQueryActiveProcessors()),
        STATUS_SUCCESS);
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        KiRequestInterrupt(Number, IT_VECTOR);
        if (!KtWaitForLongAtLeast(&Record.Calls, (LONG)Number + 1, IT_WAIT_MS))
        {
            KtLog("no ISR call on processor %u", Number);
            KtFail("the ISR ran", __FILE__, __LINE__);
            break;
        }
        KT_EXPECT_EQ(Record.Processor, Number);
        KT_EXPECT_EQ(Record.Irql, IT_SYNCH_IRQL);
    }
    IoDisconnectInterrupt(Interrupt);
}

KTEST_EX(KeInterrupt, isr_runs_only_on_processors_in_its_affinity, KTEST_SMP_ONLY, 0)
{
    IT_RECORD Record = {0};
    PKINTERRUPT Interrupt;

    KT_ASSERT_EQ(ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE, 2),
                 STATUS_SUCCESS);
    KT_EXPECT_EQ(Interrupt->ProcessorNumber, 1);
    KiRequestInterrupt(0, IT_VECTOR);
    KeStallExecutionProcessor(2000);
    KT_EXPECT_EQ(Record.Calls, 0);
    KiRequestInterrupt(1, IT_VECTOR);
    KT_EXPECT(KtWaitForLongAtLeast(&Record.Calls, 1, IT_WAIT_MS));
    KT_EXPECT_EQ(Record.Processor, 1);
    IoDisconnectInterrupt(Interrupt);
}

/* ---------------------------------------------------------------- shared vectors */

/* Connects two objects on IT_SHARED_VECTOR in Mode, raises it once, returns the two records. */
static VOID
ItRaiseShared(KINTERRUPT_MODE Mode, BOOLEAN FirstClaims, IT_RECORD *First, IT_RECORD *Second)
{
    volatile LONG Order = 0;
    PKINTERRUPT A, B;

    First->Claim = FirstClaims;
    First->Order = &Order;
    Second->Claim = TRUE;
    Second->Order = &Order;
    KT_ASSERT_EQ(ItConnect(&A, First, NULL, IT_SHARED_VECTOR, Mode, TRUE, 1), STATUS_SUCCESS);
    if (ItConnect(&B, Second, NULL, IT_SHARED_VECTOR, Mode, TRUE, 1) != STATUS_SUCCESS)
    {
        KtFail("the second object joined the shared vector", __FILE__, __LINE__);
        IoDisconnectInterrupt(A);
        return;
    }
    KiRequestInterrupt(0, IT_SHARED_VECTOR);
    KT_EXPECT(KtWaitForLongAtLeast(&First->Calls, 1, IT_WAIT_MS));
    KT_EXPECT_EQ(A->ServiceCount, FirstClaims ? 1 : 0);
    KT_EXPECT_EQ(B->ServiceCount, (ULONG)Second->Calls);
    IoDisconnectInterrupt(B);
    IoDisconnectInterrupt(A);
}

KTEST(KeInterrupt, latched_shared_vector_calls_every_isr_in_connect_order)
{
    IT_RECORD First = {0}, Second = {0};

    ItRaiseShared(Latched, TRUE, &First, &Second);
    KT_EXPECT_EQ(First.Calls, 1);
    KT_EXPECT_EQ(Second.Calls, 1);
    KT_EXPECT_EQ(First.Position, 1);
    KT_EXPECT_EQ(Second.Position, 2);
}

KTEST(KeInterrupt, level_sensitive_shared_vector_stops_at_the_first_claim)
{
    IT_RECORD First = {0}, Second = {0};

    ItRaiseShared(LevelSensitive, TRUE, &First, &Second);
    KT_EXPECT_EQ(First.Calls, 1);
    KT_EXPECT_EQ(Second.Calls, 0);

    memset(&First, 0, sizeof(First));
    memset(&Second, 0, sizeof(Second));
    ItRaiseShared(LevelSensitive, FALSE, &First, &Second); // not ours: the next ISR is asked
    KT_EXPECT_EQ(First.Calls, 1);
    KT_EXPECT_EQ(Second.Calls, 1);
    KT_EXPECT_EQ(Second.Position, 2);
}

KTEST(KeInterrupt, vector_is_shared_only_when_every_object_agrees)
{
    IT_RECORD Record = {0};
    PKINTERRUPT A, B = NULL;

    KT_ASSERT_EQ(ItConnect(&A, &Record, NULL, IT_SHARED_VECTOR, Latched, FALSE, 1), STATUS_SUCCESS);
    KT_EXPECT_EQ(ItConnect(&B, &Record, NULL, IT_SHARED_VECTOR, Latched, TRUE, 1),
                 STATUS_INVALID_PARAMETER);
    IoDisconnectInterrupt(A);

    KT_ASSERT_EQ(ItConnect(&A, &Record, NULL, IT_SHARED_VECTOR, Latched, TRUE, 1), STATUS_SUCCESS);
    KT_EXPECT_EQ(ItConnect(&B, &Record, NULL, IT_SHARED_VECTOR, Latched, FALSE, 1),
                 STATUS_INVALID_PARAMETER);
    KT_EXPECT_EQ(ItConnect(&B, &Record, NULL, IT_SHARED_VECTOR, LevelSensitive, TRUE, 1),
                 STATUS_INVALID_PARAMETER); // modes differ
    KT_EXPECT_EQ(B, NULL);
    IoDisconnectInterrupt(A);

    /* Once the vector is free again, anyone may have it. */
    KT_ASSERT_EQ(ItConnect(&B, &Record, NULL, IT_SHARED_VECTOR, LevelSensitive, FALSE, 1),
                 STATUS_SUCCESS);
    IoDisconnectInterrupt(B);
}

/* ---------------------------------------------------------------- disconnect */

KTEST(KeInterrupt, disconnected_isr_is_never_called)
{
    IT_RECORD Record = {0};
    PKINTERRUPT Interrupt;

    KT_ASSERT_EQ(ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE, 1),
                 STATUS_SUCCESS);
    IoDisconnectInterrupt(Interrupt);
    KiRequestInterrupt(0, IT_VECTOR);
    KeStallExecutionProcessor(2000);
    KT_EXPECT_EQ(Record.Calls, 0);
}

KTEST_EX(KeInterrupt, disconnect_waits_for_a_running_isr, KTEST_SMP_ONLY, 0)
{
    IT_RECORD Record = {0};
    PKINTERRUPT Interrupt;
    volatile LONG Entered;

    KT_ASSERT_EQ(ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE, 2),
                 STATUS_SUCCESS);
    Record.StallMs = 100;
    Record.Order = &Entered;
    Entered = 0;
    KiRequestInterrupt(1, IT_VECTOR);
    KT_ASSERT(KtWaitForLongAtLeast(&Entered, 1, IT_WAIT_MS)); // the ISR is running on processor 1
    IoDisconnectInterrupt(Interrupt);
    KT_EXPECT_EQ(Record.Finished, 1); // ... and had returned before the disconnect did
}

/* ---------------------------------------------------------------- interrupt spin locks */

KTEST(KeInterrupt, interrupt_spin_lock_irql_matrix)
{
    static const KIRQL Entries[] = {PASSIVE_LEVEL, APC_LEVEL, DISPATCH_LEVEL, 5, IT_SYNCH_IRQL};
    IT_RECORD Record = {0};
    PKINTERRUPT Interrupt;

    KT_ASSERT_EQ(ItConnect(&Interrupt, &Record, NULL, IT_VECTOR, Latched, FALSE, 1),
                 STATUS_SUCCESS);
    for (ULONG i = 0; i < sizeof(Entries) / sizeof(Entries[0]); i++)
    {
        KIRQL Saved, Old;

        KeRaiseIrql(Entries[i], &Saved);
        Old = KeAcquireInterruptSpinLock(Interrupt);
        KT_EXPECT_EQ(Old, Entries[i]);
        KT_EXPECT_EQ(KeGetCurrentIrql(), IT_SYNCH_IRQL);
        KT_EXPECT_EQ(Interrupt->SpinLock, ItHeldWord());
        KeReleaseInterruptSpinLock(Interrupt, Old);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Entries[i]);
        KT_EXPECT_EQ(Interrupt->SpinLock, 0);
        KeLowerIrql(Saved);
    }
#if DBG
    {
        ULONG_PTR Params[4];
        KIRQL Saved;

        KeRaiseIrql(HIGH_LEVEL, &Saved); // above SynchronizeIrql: a raise to a lower level
        KT_EXPECT_BUGCHECK_PARAMS(IRQL_NOT_GREATER_OR_EQUAL, Params,
                                  KeAcquireInterruptSpinLock(Interrupt));
        KT_EXPECT_EQ(Params[0], HIGH_LEVEL);
        KT_EXPECT_EQ(Params[1], IT_SYNCH_IRQL);
        KT_EXPECT_EQ(Interrupt->SpinLock, 0);
        KeLowerIrql(Saved);
    }
#endif
    IoDisconnectInterrupt(Interrupt);
}

typedef struct _IT_SYNC
{
    PKSPIN_LOCK Lock;
    BOOLEAN Result;
    KIRQL Irql;
    ULONG_PTR LockWord;
    ULONG_PTR ExpectedWord;
} IT_SYNC;

static BOOLEAN
ItSynchronizeRoutine(PVOID Context)
{
    IT_SYNC *Sync = Context;

    Sync->Irql = KeGetCurrentIrql();
    Sync->LockWord = *Sync->Lock;
    Sync->ExpectedWord = ItHeldWord();
    return Sync->Result;
}

KTEST(KeInterrupt, synchronize_execution_returns_the_routine_result_unchanged)
{
    static const BOOLEAN Results[] = {FALSE, TRUE, 2, 0xff};
    static const KIRQL Entries[] = {PASSIVE_LEVEL, DISPATCH_LEVEL, 9};
    KSPIN_LOCK Lock = 0;
    KINTERRUPT Interrupt;
    IT_SYNC Sync = {&Lock, 0, 0, 0, 0};

    /* Built by hand: only SynchronizeIrql and ActualLock may be read. */
    memset(&Interrupt, 0x55, sizeof(Interrupt));
    Interrupt.SynchronizeIrql = 9;
    Interrupt.ActualLock = &Lock;
    for (ULONG e = 0; e < sizeof(Entries) / sizeof(Entries[0]); e++)
    {
        for (ULONG r = 0; r < sizeof(Results) / sizeof(Results[0]); r++)
        {
            KIRQL Saved;

            KeRaiseIrql(Entries[e], &Saved);
            Sync.Result = Results[r];
            KT_EXPECT_EQ(KeSynchronizeExecution(&Interrupt, ItSynchronizeRoutine, &Sync),
                         Results[r]);
            KT_EXPECT_EQ(Sync.Irql, 9);
            KT_EXPECT_EQ(Sync.LockWord, Sync.ExpectedWord);
            KT_EXPECT_EQ(KeGetCurrentIrql(), Entries[e]);
            KT_EXPECT_EQ(Lock, 0);
            KeLowerIrql(Saved);
        }
    }
}

/* Every processor increments one counter through KeSynchronizeExecution while raising the
 * vector on its neighbour, whose ISR increments it too: no update may be lost. */
typedef struct _IT_CONTENTION
{
    PKINTERRUPT Interrupt;
    volatile ULONG64 Counter; // under the interrupt's lock, non-atomically
    volatile LONG IsrCalls;   // under the interrupt's lock
    volatile LONG SyncCalls;
    volatile LONG BadIrql;
} IT_CONTENTION;

static BOOLEAN
ItContentionIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    IT_CONTENTION *Test = Context;
    ULONG64 Value = Test->Counter;

    if (KeGetCurrentIrql() != IT_SYNCH_IRQL)
    {
        __atomic_add_fetch(&Test->BadIrql, 1, __ATOMIC_RELAXED);
    }
    YieldProcessor();
    Test->Counter = Value + 1;
    Test->IsrCalls++;
    return TRUE;
}

static BOOLEAN
ItContentionIncrement(PVOID Context)
{
    IT_CONTENTION *Test = Context;
    ULONG64 Value = Test->Counter;

    YieldProcessor();
    Test->Counter = Value + 1;
    return TRUE;
}

static VOID
ItContentionRoutine(ULONG Index, PVOID Context)
{
    IT_CONTENTION *Test = Context;
    ULONG Neighbour = (Index + 1) % KiActiveProcessorCount;

    for (ULONG i = 0; i < IT_SYNC_CALLS; i++)
    {
        KiRequestInterrupt(Neighbour, IT_VECTOR);
        if (KeSynchronizeExecution(Test->Interrupt, ItContentionIncrement, Test) == TRUE)
        {
            __atomic_add_fetch(&Test->SyncCalls, 1, __ATOMIC_RELAXED);
        }
    }
}

KTEST_EX(KeInterrupt, synchronize_execution_excludes_the_isr_on_every_processor, KTEST_SMP_ONLY, 0)
{
    static IT_CONTENTION Test;
    ULONG64 Counter;
    LONG IsrCalls;
    KIRQL OldIrql;

    memset(&Test, 0, sizeof(Test));
    KT_ASSERT_EQ(IoConnectInterrupt(&Test.Interrupt, ItContentionIsr, &Test, NULL, IT_VECTOR, 5,
                                    IT_SYNCH_IRQL, Latched, FALSE, KeQueryActiveProcessors(),
                                    FALSE),
                 STATUS_SUCCESS);
    KtRunOnProcessors(0, ItContentionRoutine, &Test);
    KeStallExecutionProcessor(5000); // let requests still pending on other processors land
    OldIrql = KeAcquireInterruptSpinLock(Test.Interrupt); // a consistent snapshot
    Counter = Test.Counter;
    IsrCalls = Test.IsrCalls;
    KeReleaseInterruptSpinLock(Test.Interrupt, OldIrql);
    KtLog("%d synchronized calls, %d ISR calls", Test.SyncCalls, IsrCalls);
    KT_EXPECT_EQ(Test.SyncCalls, IT_SYNC_CALLS * KiActiveProcessorCount);
    KT_EXPECT_GT(IsrCalls, 0);
    KT_EXPECT_EQ(Counter, (ULONG64)Test.SyncCalls + (ULONG64)IsrCalls);
    KT_EXPECT_EQ(Test.BadIrql, 0);
    IoDisconnectInterrupt(Test.Interrupt);
}
