/* SPDX-License-Identifier: MIT */
/*
 * DPCs (API.md §5): initialisation, insert/remove return values, the
 * observable timing rules (kmtest KeDpc), queue order, targeting each
 * processor, and concurrent inserts from every processor.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define MAX_RECORDS 16

typedef struct _DPC_RECORD
{
    volatile LONG Runs;
    volatile LONG Order[MAX_RECORDS];
    volatile KIRQL Irql;
    volatile ULONG Processor;
    volatile BOOLEAN InterruptsOn;
    volatile BOOLEAN RoutineActive;
    PVOID Argument1;
    PVOID Argument2;
    PKDPC Dpc;
    volatile LONG Requeue; // how many more times the routine queues itself
} DPC_RECORD;

static VOID
RecordDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    DPC_RECORD *Record = Context;
    LONG Run;

    Record->Irql = KeGetCurrentIrql();
    Record->Processor = KeGetCurrentProcessorNumber();
    Record->InterruptsOn = x86_interrupts_enabled();
    Record->RoutineActive = KeGetCurrentPrcb()->DpcRoutineActive;
    Record->Argument1 = Argument1;
    Record->Argument2 = Argument2;
    Record->Dpc = Dpc;
    /* Publish last: a waiter on another processor reads the fields once Runs moves
     * (the locked increment orders the stores above before it). */
    Run = InterlockedIncrement(&Record->Runs);
    if (Record->Requeue > 0)
    {
        Record->Requeue--;
        Record->Order[Run % MAX_RECORDS] = KeInsertQueueDpc(Dpc, Argument1, Argument2);
    }
}

/* Appends the DPC's tag (its context) to a shared order log. */
typedef struct _ORDER_LOG
{
    volatile LONG Count;
    ULONG_PTR Tags[MAX_RECORDS];
} ORDER_LOG;

static ORDER_LOG OrderLog;

static VOID
LogOrderDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    LONG Slot = InterlockedIncrement(&OrderLog.Count) - 1;
    if (Slot < MAX_RECORDS)
    {
        OrderLog.Tags[Slot] = (ULONG_PTR)Context;
    }
}

KTEST(KeDpc, initialize_sets_fields_and_keeps_list_entry_and_arguments)
{
    KDPC Dpc;
    DPC_RECORD Record;

    memset(&Dpc, 0x55, sizeof(Dpc));
    KeInitializeDpc(&Dpc, RecordDpc, &Record);
    KT_EXPECT_EQ(Dpc.Type, DpcObject);
    KT_EXPECT_EQ(Dpc.Type, 19);
    KT_EXPECT_EQ(Dpc.Importance, MediumImportance);
    KT_EXPECT_EQ(Dpc.Number, 0);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DeferredRoutine, (ULONG_PTR)RecordDpc);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DeferredContext, (ULONG_PTR)&Record);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcListEntry.Flink, 0x5555555555555555ull);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.SystemArgument1, 0x5555555555555555ull);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.SystemArgument2, 0x5555555555555555ull);

    KeInitializeDpc(&Dpc, NULL, NULL); // NULL routine and context are accepted
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DeferredRoutine, 0);
    KeInitializeThreadedDpc(&Dpc, RecordDpc, NULL);
    KT_EXPECT_EQ(Dpc.Type, ThreadedDpcObject);
}

KTEST(KeDpc, insert_at_passive_runs_before_insert_returns)
{
    KDPC Dpc;
    DPC_RECORD Record = {0};

    KeInitializeDpc(&Dpc, RecordDpc, &Record);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, (PVOID)1, (PVOID)2), TRUE);
    KT_EXPECT_EQ(Record.Runs, 1);
    KT_EXPECT_EQ(Record.Irql, DISPATCH_LEVEL);
    KT_EXPECT(Record.InterruptsOn);
    KT_EXPECT(Record.RoutineActive);
    KT_EXPECT_EQ(Record.Processor, KeGetCurrentProcessorNumber());
    KT_EXPECT_EQ((ULONG_PTR)Record.Argument1, 1);
    KT_EXPECT_EQ((ULONG_PTR)Record.Argument2, 2);
    KT_EXPECT_EQ((ULONG_PTR)Record.Dpc, (ULONG_PTR)&Dpc);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeDpc, insert_at_dispatch_waits_until_irql_drops)
{
    KDPC Dpc;
    DPC_RECORD Record = {0};
    KIRQL Old;

    KeInitializeDpc(&Dpc, RecordDpc, &Record);
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    KT_EXPECT_EQ(Record.Runs, 0);
    KT_EXPECT_NE((ULONG_PTR)Dpc.DpcData, 0); // non-NULL exactly while queued

    KeRaiseIrql(HIGH_LEVEL, &Old); // raising to HIGH and back to DISPATCH runs nothing
    KeLowerIrql(DISPATCH_LEVEL);
    KT_EXPECT_EQ(Record.Runs, 0);

    KeLowerIrql(APC_LEVEL); // dropping below DISPATCH lets the APIC deliver it
    KT_EXPECT_EQ(Record.Runs, 1);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
    KeLowerIrql(PASSIVE_LEVEL);
}

KTEST(KeDpc, insert_while_queued_returns_false_and_keeps_first_arguments)
{
    KDPC Dpc;
    DPC_RECORD Record = {0};
    KIRQL Old;

    KeInitializeDpc(&Dpc, RecordDpc, &Record);
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, (PVOID)0xa1, (PVOID)0xa2), TRUE);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, (PVOID)0xb1, (PVOID)0xb2), FALSE);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.SystemArgument1, 0xa1);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.SystemArgument2, 0xa2);
    KeLowerIrql(Old);
    KT_EXPECT_EQ(Record.Runs, 1);
    KT_EXPECT_EQ((ULONG_PTR)Record.Argument1, 0xa1);
    KT_EXPECT_EQ((ULONG_PTR)Record.Argument2, 0xa2);
}

KTEST(KeDpc, remove_unqueues_so_it_never_runs)
{
    KDPC Dpc;
    DPC_RECORD Record = {0};
    KIRQL Old;

    KeInitializeDpc(&Dpc, RecordDpc, &Record);
    KT_EXPECT_EQ(KeRemoveQueueDpc(&Dpc), FALSE); // not queued
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    KT_EXPECT_EQ(KeRemoveQueueDpc(&Dpc), TRUE);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
    KT_EXPECT_EQ(KeRemoveQueueDpc(&Dpc), FALSE);
    KT_EXPECT_EQ(KeGetCurrentPrcb()->DpcData[DPC_NORMAL].DpcQueueDepth, 0);
    KeLowerIrql(Old);
    KT_EXPECT_EQ(Record.Runs, 0);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE); // usable again
    KT_EXPECT_EQ(Record.Runs, 1);
}

KTEST(KeDpc, high_importance_goes_to_the_head_others_in_order)
{
    KDPC Dpc[4];
    KIRQL Old;

    OrderLog.Count = 0;
    for (ULONG_PTR i = 0; i < 4; i++)
    {
        KeInitializeDpc(&Dpc[i], LogOrderDpc, (PVOID)i);
    }
    KeSetImportanceDpc(&Dpc[2], HighImportance);
    KeSetImportanceDpc(&Dpc[3], LowImportance);
    KT_EXPECT_EQ(Dpc[2].Importance, HighImportance);

    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    for (ULONG i = 0; i < 4; i++)
    {
        KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc[i], NULL, NULL), TRUE);
    }
    KeLowerIrql(Old);
    KT_ASSERT_EQ(OrderLog.Count, 4);
    KT_EXPECT_EQ(OrderLog.Tags[0], 2); // High: at the head
    KT_EXPECT_EQ(OrderLog.Tags[1], 0);
    KT_EXPECT_EQ(OrderLog.Tags[2], 1);
    KT_EXPECT_EQ(OrderLog.Tags[3], 3); // Low and Medium: FIFO at the tail
}

KTEST(KeDpc, routine_may_queue_itself_again)
{
    KDPC Dpc;
    DPC_RECORD Record = {0};

    Record.Requeue = 5;
    KeInitializeDpc(&Dpc, RecordDpc, &Record);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    KT_EXPECT_EQ(Record.Runs, 6);
    for (LONG Run = 1; Run <= 5; Run++)
    {
        KT_EXPECT_EQ(Record.Order[Run], TRUE); // the insert inside the routine succeeded
    }
}

KTEST(KeDpc, set_target_beyond_active_processors_is_ignored)
{
    KDPC Dpc;
    KeInitializeDpc(&Dpc, RecordDpc, NULL);
    KeSetTargetProcessorDpc(&Dpc, (CCHAR)KeQueryActiveProcessorCount(NULL));
    KT_EXPECT_EQ(Dpc.Number, 0);
    KeSetTargetProcessorDpc(&Dpc, 0);
    KT_EXPECT_NE(Dpc.Number, 0);
}

KTEST(KeDpc, targeted_dpc_runs_on_each_processor_at_dispatch)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    for (ULONG Target = 0; Target < Count; Target++)
    {
        KDPC Dpc;
        DPC_RECORD Record = {0};

        KeInitializeDpc(&Dpc, RecordDpc, &Record);
        KeSetTargetProcessorDpc(&Dpc, (CCHAR)Target);
        KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, (PVOID)(ULONG_PTR)Target, NULL), TRUE);
        KT_ASSERT(KtWaitForLongAtLeast(&Record.Runs, 1, KT_WAIT_MS));
        KT_EXPECT_EQ(Record.Processor, Target);
        KT_EXPECT_EQ(Record.Irql, DISPATCH_LEVEL);
        KT_EXPECT(Record.InterruptsOn);
        KT_EXPECT_EQ((ULONG_PTR)Record.Argument1, Target);
        KeFlushQueuedDpcs(); // the record is on this stack
    }
}

static volatile LONG SlowDpcDone;

static VOID
SlowDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    for (ULONG i = 0; i < 200000; i++)
    {
        x86_pause();
    }
    SlowDpcDone = 1;
}

KTEST(KeDpc, flush_waits_for_a_dpc_on_another_processor)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    KDPC Dpc;

    if (Count < 2)
    {
        KT_SKIP("needs two or more processors");
    }
    SlowDpcDone = 0;
    KeInitializeDpc(&Dpc, SlowDpc, NULL);
    KeSetTargetProcessorDpc(&Dpc, (CCHAR)(Count - 1));
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    KeFlushQueuedDpcs();
    KT_EXPECT_EQ(SlowDpcDone, 1);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
}

/* Every processor inserts the same DPC, aimed at processor 0, as fast as it can. */
typedef struct _SHARED_INSERT
{
    KDPC Dpc;
    volatile LONG Inserted;
    volatile LONG Runs;
} SHARED_INSERT;

static VOID
CountRunsDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    SHARED_INSERT *Shared = Context;
    InterlockedIncrement(&Shared->Runs);
}

static VOID
InsertFromEveryProcessor(ULONG Index, PVOID Context)
{
    SHARED_INSERT *Shared = Context;
    for (ULONG i = 0; i < 2000; i++)
    {
        KIRQL Old;
        KeRaiseIrql((KIRQL)(i % 3), &Old); // PASSIVE, APC and DISPATCH callers
        if (KeInsertQueueDpc(&Shared->Dpc, NULL, NULL))
        {
            InterlockedIncrement(&Shared->Inserted);
        }
        KeLowerIrql(Old);
    }
}

KTEST_EX(KeDpc, concurrent_inserts_run_once_per_successful_insert, KTEST_SMP_ONLY, 0)
{
    SHARED_INSERT Shared = {0};

    KeInitializeDpc(&Shared.Dpc, CountRunsDpc, &Shared);
    KeSetTargetProcessorDpc(&Shared.Dpc, 0);
    KtRunOnProcessors(0, InsertFromEveryProcessor, &Shared);
    KeFlushQueuedDpcs();
    KT_EXPECT_GT(Shared.Inserted, 0);
    KT_EXPECT_EQ(Shared.Runs, Shared.Inserted);
    KT_EXPECT_EQ((ULONG_PTR)Shared.Dpc.DpcData, 0);
}
