/* SPDX-License-Identifier: MIT */
/*
 * KeIpiGenericCall: every processor runs the routine exactly once, at
 * IPI_LEVEL, all at the same time; broadcasts from several processors at once
 * neither deadlock nor lose a call.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "lib/lib.h"

typedef struct _IPI_RECORD
{
    volatile LONG Calls[MAXIMUM_PROCESSORS];
    volatile LONG WrongIrql;
    volatile LONG Arrived;
    volatile LONG BarrierTimeouts;
} IPI_RECORD;

static IPI_RECORD IpiRecord;

static ULONG_PTR
RecordCall(ULONG_PTR Argument)
{
    IPI_RECORD *Record = (IPI_RECORD *)Argument;
    ULONG Number = KeGetCurrentProcessorNumber();

    InterlockedIncrement(&Record->Calls[Number]);
    if (KeGetCurrentIrql() != IPI_LEVEL)
    {
        InterlockedIncrement(&Record->WrongIrql);
    }
    return 100 + Number;
}

KTEST(KeIpi, generic_call_reaches_every_processor_once_at_ipi_level)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    memset((PVOID)&IpiRecord, 0, sizeof(IpiRecord));
    KT_EXPECT_EQ(KeIpiGenericCall(RecordCall, (ULONG_PTR)&IpiRecord),
                 100 + KeGetCurrentProcessorNumber());
    for (ULONG i = 0; i < MAXIMUM_PROCESSORS; i++)
    {
        KT_EXPECT_EQ(IpiRecord.Calls[i], i < Count ? 1 : 0);
    }
    KT_EXPECT_EQ(IpiRecord.WrongIrql, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeIpi, generic_call_from_dispatch_level_returns_there)
{
    KIRQL Old;

    memset((PVOID)&IpiRecord, 0, sizeof(IpiRecord));
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KeIpiGenericCall(RecordCall, (ULONG_PTR)&IpiRecord);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(Old);
    for (ULONG i = 0; i < KeQueryActiveProcessorCount(NULL); i++)
    {
        KT_EXPECT_EQ(IpiRecord.Calls[i], 1);
    }
}

/* Only returns when every processor is inside the routine at once (or the bound is hit). */
static ULONG_PTR
Rendezvous(ULONG_PTR Argument)
{
    IPI_RECORD *Record = (IPI_RECORD *)Argument;
    LONG Count = (LONG)KeQueryActiveProcessorCount(NULL);

    InterlockedIncrement(&Record->Arrived);
    for (ULONG64 Spin = 0; Record->Arrived < Count; Spin++)
    {
        if (Spin == (1ull << 30))
        {
            InterlockedIncrement(&Record->BarrierTimeouts);
            break;
        }
        x86_pause();
    }
    return 0;
}

KTEST(KeIpi, all_processors_run_the_routine_concurrently)
{
    memset((PVOID)&IpiRecord, 0, sizeof(IpiRecord));
    KeIpiGenericCall(Rendezvous, (ULONG_PTR)&IpiRecord);
    KT_EXPECT_EQ(IpiRecord.Arrived, (LONG)KeQueryActiveProcessorCount(NULL));
    KT_EXPECT_EQ(IpiRecord.BarrierTimeouts, 0);
}

static VOID
BroadcastRepeatedly(ULONG Index, PVOID Context)
{
    for (ULONG i = 0; i < 20; i++)
    {
        KeIpiGenericCall(RecordCall, (ULONG_PTR)Context);
    }
}

KTEST_EX(KeIpi, concurrent_broadcasts_from_every_processor, KTEST_SMP_ONLY, 0)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    memset((PVOID)&IpiRecord, 0, sizeof(IpiRecord));
    KtRunOnProcessors(0, BroadcastRepeatedly, &IpiRecord);
    for (ULONG i = 0; i < Count; i++)
    {
        KT_EXPECT_EQ(IpiRecord.Calls[i], (LONG)(20 * Count)); // every broadcast reached everyone
    }
    KT_EXPECT_EQ(IpiRecord.WrongIrql, 0);
}
