/* SPDX-License-Identifier: MIT */
/*
 * KeGenericCallDpc: the routine runs once on every processor at
 * DISPATCH_LEVEL; on entry the done counter reads N and the reverse barrier
 * {N, N}; the barrier reads 0x80000000 | N after an odd number of
 * synchronisations and N after an even one; each synchronisation lets no
 * processor through before all have arrived and returns TRUE on exactly one;
 * callers at PASSIVE_LEVEL and APC_LEVEL on several processors at once are
 * served one call at a time; the checked build rejects DISPATCH_LEVEL.
 */
#include <ktest.h>
#include <wdm.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define GC_SENSE     0x80000000u
#define GC_MAX_SYNCS 16 // synchronisations one routine may do
#define GC_REPEAT    3  // calls each processor makes in the concurrent test

typedef struct _GC_RECORD
{
    ULONG Syncs; // synchronisations each routine does before KeSignalCallDpcDone
    volatile LONG Calls[MAXIMUM_PROCESSORS];
    volatile LONG WrongIrql;
    volatile LONG WrongDpc;   // the Dpc argument does not carry this call's routine/context
    volatile LONG WrongEntry; // done counter or barrier not N / {N, N} on entry
    volatile LONG EarlyExits; // left a synchronisation before every processor arrived
    volatile LONG Trues[GC_MAX_SYNCS];
    volatile LONG Arrived[GC_MAX_SYNCS];
    volatile ULONG BarrierAfter[MAXIMUM_PROCESSORS]; // Barrier once this routine's syncs are done
    volatile ULONG TotalAfter[MAXIMUM_PROCESSORS];
} GC_RECORD;

static KDEFERRED_ROUTINE GcRoutine;

static VOID
GcRoutine(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    GC_RECORD *Record = Context;
    PDEFERRED_REVERSE_BARRIER Barrier = SystemArgument2;
    ULONG Number = KeGetCurrentProcessorNumber();
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    InterlockedIncrement(&Record->Calls[Number]);
    if (KeGetCurrentIrql() != DISPATCH_LEVEL)
    {
        InterlockedIncrement(&Record->WrongIrql);
    }
    if (Dpc == NULL || Dpc->DeferredRoutine != GcRoutine || Dpc->DeferredContext != Context)
    {
        InterlockedIncrement(&Record->WrongDpc);
    }
    /*
     * On entry the barrier reads N with the sense bit clear, less the processors
     * that have already arrived at the first synchronisation (exactly N when the
     * routine does none). Nobody is done before that synchronisation, which
     * needs everyone, so then the done counter still reads N.
     */
    ULONG Entry = *(volatile ULONG *)&Barrier->Barrier;
    if (Barrier->TotalProcessors != Count || (Record->Syncs == 0 && Entry != Count) ||
        (Entry & GC_SENSE) != 0 || Entry == 0 || Entry > Count ||
        (Record->Syncs > 0 && *(volatile ULONG *)SystemArgument1 != Count))
    {
        InterlockedIncrement(&Record->WrongEntry);
    }
    for (ULONG Sync = 0; Sync < Record->Syncs; Sync++)
    {
        InterlockedIncrement(&Record->Arrived[Sync]);
        if (KeSignalCallDpcSynchronize(SystemArgument2))
        {
            InterlockedIncrement(&Record->Trues[Sync]);
        }
        if ((ULONG)Record->Arrived[Sync] != Count)
        {
            InterlockedIncrement(&Record->EarlyExits);
        }
    }
    /* No further synchronisation in this call: the word is stable now. */
    Record->BarrierAfter[Number] = *(volatile ULONG *)&Barrier->Barrier;
    Record->TotalAfter[Number] = Barrier->TotalProcessors;
    KeSignalCallDpcDone(SystemArgument1);
}

/* Checks one finished call of GcRoutine with Record->Syncs synchronisations. */
static VOID
GcCheckCall(GC_RECORD *Record)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    ULONG Expected = (Record->Syncs % 2 != 0 ? GC_SENSE : 0) | Count;

    for (ULONG i = 0; i < MAXIMUM_PROCESSORS; i++)
    {
        KT_EXPECT_EQ(Record->Calls[i], i < Count ? 1 : 0);
    }
    for (ULONG i = 0; i < Count; i++)
    {
        KT_EXPECT_EQ(Record->BarrierAfter[i], Expected);
        KT_EXPECT_EQ(Record->TotalAfter[i], Count);
    }
    for (ULONG Sync = 0; Sync < Record->Syncs; Sync++)
    {
        KT_EXPECT_EQ(Record->Trues[Sync], 1);
        KT_EXPECT_EQ(Record->Arrived[Sync], Count);
    }
    KT_EXPECT_EQ(Record->WrongIrql, 0);
    KT_EXPECT_EQ(Record->WrongDpc, 0);
    KT_EXPECT_EQ(Record->WrongEntry, 0);
    KT_EXPECT_EQ(Record->EarlyExits, 0);
}

static GC_RECORD GcRecord;

static VOID
GcCall(ULONG Syncs)
{
    memset((PVOID)&GcRecord, 0, sizeof(GcRecord));
    GcRecord.Syncs = Syncs;
    KeGenericCallDpc(GcRoutine, &GcRecord);
    GcCheckCall(&GcRecord);
}

KTEST(KeGenericCallDpc, runs_once_on_every_processor_at_dispatch_level)
{
    GcCall(1);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeGenericCallDpc, barrier_reads_n_then_sense_or_n_alternating)
{
    /* After 1, 2, 3 and 4 synchronisations: 0x80000000 | N, N, 0x80000000 | N, N. */
    for (ULONG Syncs = 0; Syncs <= 4; Syncs++)
    {
        KtLog("%u synchronisation(s)", Syncs);
        GcCall(Syncs);
    }
}

KTEST(KeGenericCallDpc, each_synchronisation_holds_everyone_and_elects_one)
{
    GcCall(GC_MAX_SYNCS);
}

KTEST(KeGenericCallDpc, callable_at_apc_level_and_returns_there)
{
    KIRQL Old;

    KeRaiseIrql(APC_LEVEL, &Old);
    GcCall(2);
    KT_EXPECT_EQ(KeGetCurrentIrql(), APC_LEVEL);
    KeLowerIrql(Old);
}

KTEST(KeGenericCallDpc, dispatch_level_bugchecks_in_the_checked_build)
{
#if DBG
    KIRQL Old;

    memset((PVOID)&GcRecord, 0, sizeof(GcRecord));
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_BUGCHECK(IRQL_NOT_LESS_OR_EQUAL, KeGenericCallDpc(GcRoutine, &GcRecord));
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(Old);
    for (ULONG i = 0; i < MAXIMUM_PROCESSORS; i++)
    {
        KT_EXPECT_EQ(GcRecord.Calls[i], 0); // rejected before anything was queued
    }
    GcCall(1); // and the next call is served
#else
    KT_SKIP("the free build does not check the IRQL");
#endif
}

/* ---------------------------------------------------------------- concurrent callers */

typedef struct _GC_CONCURRENT
{
    GC_RECORD Records[MAXIMUM_PROCESSORS][GC_REPEAT];
    PVOID volatile Current; // the record of the call whose routines are running
    volatile LONG Overlaps; // a routine saw another call's record as current
} GC_CONCURRENT;

static GC_CONCURRENT GcConcurrent;

/*
 * Three synchronisations: the elected processor of the first claims Current
 * for this call, everyone checks it between the first and the second, and the
 * elected one of the third releases it. Overlapping calls would disagree.
 */
static VOID
GcSerialRoutine(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    GC_RECORD *Record = Context;
    PVOID Expected = NULL;

    InterlockedIncrement(&Record->Calls[KeGetCurrentProcessorNumber()]);
    if (KeGetCurrentIrql() != DISPATCH_LEVEL)
    {
        InterlockedIncrement(&Record->WrongIrql);
    }
    if (KeSignalCallDpcSynchronize(SystemArgument2) &&
        !__atomic_compare_exchange_n(&GcConcurrent.Current, &Expected, Record, FALSE,
                                     __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    {
        InterlockedIncrement(&GcConcurrent.Overlaps);
    }
    KeSignalCallDpcSynchronize(SystemArgument2);
    if (__atomic_load_n(&GcConcurrent.Current, __ATOMIC_SEQ_CST) != Record)
    {
        InterlockedIncrement(&GcConcurrent.Overlaps);
    }
    if (KeSignalCallDpcSynchronize(SystemArgument2))
    {
        __atomic_store_n(&GcConcurrent.Current, NULL, __ATOMIC_SEQ_CST);
    }
    KeSignalCallDpcDone(SystemArgument1);
}

static VOID
GcConcurrentCaller(ULONG Index, PVOID Context)
{
    KIRQL Old = PASSIVE_LEVEL;

    if (Index % 2 != 0)
    {
        KeRaiseIrql(APC_LEVEL, &Old); // odd callers wait for their turn at APC_LEVEL
    }
    for (ULONG i = 0; i < GC_REPEAT; i++)
    {
        KeGenericCallDpc(GcSerialRoutine, &GcConcurrent.Records[Index][i]);
    }
    if (Index % 2 != 0)
    {
        KeLowerIrql(Old);
    }
}

KTEST_EX(KeGenericCallDpc, concurrent_callers_are_served_one_call_at_a_time, KTEST_SLOW, 0)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    memset((PVOID)&GcConcurrent, 0, sizeof(GcConcurrent));
    KtRunOnProcessors(0, GcConcurrentCaller, NULL);
    KT_EXPECT_EQ(GcConcurrent.Overlaps, 0);
    KT_EXPECT(GcConcurrent.Current == NULL);
    for (ULONG Caller = 0; Caller < Count; Caller++)
    {
        for (ULONG i = 0; i < GC_REPEAT; i++)
        {
            GC_RECORD *Record = &GcConcurrent.Records[Caller][i];
            for (ULONG Number = 0; Number < Count; Number++)
            {
                KT_EXPECT_EQ(Record->Calls[Number], 1);
            }
            KT_EXPECT_EQ(Record->WrongIrql, 0);
        }
    }
}
