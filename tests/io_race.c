/* SPDX-License-Identifier: MIT */
/*
 * IoRace: the sample drivers of tests/drivers/ raced from every processor
 * (API.md §11.4). In each round every processor submits its share of IRPs to
 * random devices and cancels the IRPs the round's plan gives it, at planned
 * times, while the drivers complete requests from their timer and DPCs:
 *   never        the IRP must complete with STATUS_SUCCESS
 *   before       the submitter cancels it before IoCallDriver (IoCancelIrp
 *                returns FALSE); the driver must still complete it as cancelled
 *   after delay  a random processor cancels it 0-40 ms after submission: while
 *                it is being submitted, queued, on the hardware or completed
 * The plan comes from KtRandom(), so a seed repeats it (the interleaving is
 * the machine's). After each round, with every DPC flushed, the invariants:
 * every IRP completed exactly once, with SUCCESS or CANCELLED, as its plan
 * allows; an IoCancelIrp that returned TRUE means CANCELLED (neither sample
 * driver claims an IRP once its cancel routine has run); no IRP left in a
 * queue, every device idle, no cancel routine off DISPATCH_LEVEL or without
 * the cancel lock, no protocol anomaly; at the end, the drivers' counters
 * agree with the completions and the pool is back where it started.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ex/ex.h"
#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/drivers/samples.h"

#define IRC_TARGET_IRPS    3000        // per test, over all rounds
#define IRC_PER_PROCESSOR  16          // IRPs each processor submits per round
#define IRC_MAX_DELAY_US   40000       // latest planned cancel, after submission
#define IRC_ROUND_LIMIT_US 20000000ull // a round that takes longer has lost an IRP
#define IRC_POOL_TAG       'cRtK'
#define IRC_MAX_TAGS       256
#define IRC_MAX_DEVICES    (SIO_DEVICE_COUNT + CSD_DEVICE_COUNT)

typedef enum _IRC_PLAN
{
    IrcNever,
    IrcBeforeSubmit,
    IrcAfterDelay,
} IRC_PLAN;

typedef struct _IRC_SLOT
{
    PIRP Irp;
    PDEVICE_OBJECT Device;
    BOOLEAN IsSio;
    IRC_PLAN Plan;
    ULONG Canceller;             // IrcAfterDelay: the index that cancels it
    ULONG64 Delay;               // ... this many performance-counter counts after submission
    volatile ULONG64 SubmitTime; // valid once Submitted
    volatile LONG Submitted;     // the submitter is about to call IoCallDriver
    volatile LONG CancelDone;    // the planned cancel was made
    volatile LONG CancelTrue;    // IoCancelIrp calls that returned TRUE
    volatile LONG Completions;
    KIRQL CompletionIrql;
    BOOLEAN PendingReturned;
} IRC_SLOT;

typedef struct _IRC_RUN
{
    PDEVICE_OBJECT Devices[IRC_MAX_DEVICES];
    BOOLEAN DeviceIsSio[IRC_MAX_DEVICES];
    ULONG DeviceCount;
    ULONG Processors;
    ULONG SlotCount; // Processors * IRC_PER_PROCESSOR
    IRC_SLOT *Slots;
    ULONG64 Frequency;
    volatile LONG TimedOut;
    /* Totals over the rounds. */
    ULONG Submitted, Succeeded[2], Cancelled[2]; // [0] CSQ sample, [1] StartIo sample
    ULONG CancelTrue, CancelFalse;
} IRC_RUN;

static EXP_POOL_TAG_USAGE IrcTags[IRC_MAX_TAGS];

static LONG64
IrcPoolCount(ULONG Tag)
{
    ULONG Count = ExpQueryPoolTags(IrcTags, IRC_MAX_TAGS);

    for (ULONG i = 0; i < Count; i++)
    {
        if (IrcTags[i].Tag == Tag)
        {
            return IrcTags[i].Allocations;
        }
    }
    return 0;
}

static ULONG64
IrcNow(VOID)
{
    return (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart;
}

static NTSTATUS
IrcCompletion(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    IRC_SLOT *Slot = Context;

    Slot->CompletionIrql = KeGetCurrentIrql();
    Slot->PendingReturned = Irp->PendingReturned;
    InterlockedIncrement(&Slot->Completions); // last: the IRP is the test's again
    return STATUS_MORE_PROCESSING_REQUIRED;
}

/* Makes the planned cancels that are due for processor Index. */
static VOID
IrcRunDueCancels(IRC_RUN *Run, ULONG Index)
{
    ULONG64 Now = IrcNow();

    for (ULONG i = 0; i < Run->SlotCount; i++)
    {
        IRC_SLOT *Slot = &Run->Slots[i];

        if (Slot->Plan != IrcAfterDelay || Slot->Canceller != Index || Slot->CancelDone ||
            !__atomic_load_n(&Slot->Submitted, __ATOMIC_ACQUIRE) ||
            Now - Slot->SubmitTime < Slot->Delay)
        {
            continue;
        }
        if (IoCancelIrp(Slot->Irp))
        {
            InterlockedIncrement(&Slot->CancelTrue);
        }
        Slot->CancelDone = TRUE;
    }
}

/* TRUE once everything processor Index owes this round is done. */
static BOOLEAN
IrcIndexDone(IRC_RUN *Run, ULONG Index)
{
    for (ULONG i = 0; i < Run->SlotCount; i++)
    {
        IRC_SLOT *Slot = &Run->Slots[i];

        if (i / IRC_PER_PROCESSOR == Index &&
            __atomic_load_n(&Slot->Completions, __ATOMIC_ACQUIRE) == 0)
        {
            return FALSE;
        }
        if (Slot->Plan == IrcAfterDelay && Slot->Canceller == Index && !Slot->CancelDone)
        {
            return FALSE;
        }
    }
    return TRUE;
}

static VOID
IrcRoundRoutine(ULONG Index, PVOID Context)
{
    IRC_RUN *Run = Context;
    IRC_SLOT *Mine = &Run->Slots[Index * IRC_PER_PROCESSOR];
    ULONG64 Start = IrcNow();
    ULONG64 Limit = IRC_ROUND_LIMIT_US * Run->Frequency / 1000000;

    for (ULONG k = 0; k < IRC_PER_PROCESSOR; k++)
    {
        IRC_SLOT *Slot = &Mine[k];

        if (Slot->Plan == IrcBeforeSubmit)
        {
            KT_EXPECT_EQ(IoCancelIrp(Slot->Irp), FALSE);
            Slot->CancelDone = TRUE;
        }
        Slot->SubmitTime = IrcNow();
        /* Release: SubmitTime is visible to a canceller that sees Submitted. */
        __atomic_store_n(&Slot->Submitted, 1, __ATOMIC_RELEASE);
        KT_EXPECT_EQ(IoCallDriver(Slot->Device, Slot->Irp), STATUS_PENDING);
        IrcRunDueCancels(Run, Index);
        KeStallExecutionProcessor((ULONG)KtRandom() % 500);
    }
    while (!IrcIndexDone(Run, Index))
    {
        if (IrcNow() - Start > Limit)
        {
            KtLog("processor %u: round not finished after %llu s", Index,
                  IRC_ROUND_LIMIT_US / 1000000);
            InterlockedIncrement(&Run->TimedOut);
            return;
        }
        IrcRunDueCancels(Run, Index);
        KeStallExecutionProcessor(20);
    }
}

/* Plans one round: devices, cancel plans, IRPs. */
static VOID
IrcPlanRound(IRC_RUN *Run)
{
    memset(Run->Slots, 0, Run->SlotCount * sizeof(IRC_SLOT));
    for (ULONG i = 0; i < Run->SlotCount; i++)
    {
        IRC_SLOT *Slot = &Run->Slots[i];
        ULONG Device = (ULONG)(KtRandom() % Run->DeviceCount);
        ULONG Dice = (ULONG)(KtRandom() % 20);
        PIO_STACK_LOCATION Next;

        Slot->Device = Run->Devices[Device];
        Slot->IsSio = Run->DeviceIsSio[Device];
        if (Dice < 7)
        {
            Slot->Plan = IrcNever;
        }
        else if (Dice < 9)
        {
            Slot->Plan = IrcBeforeSubmit;
        }
        else
        {
            Slot->Plan = IrcAfterDelay;
            Slot->Canceller = (ULONG)(KtRandom() % Run->Processors);
            Slot->Delay =
                Dice < 12 ? 0 : (KtRandom() % IRC_MAX_DELAY_US) * Run->Frequency / 1000000;
        }
        Slot->Irp = IoAllocateIrp(Slot->Device->StackSize, FALSE);
        KT_ASSERT(Slot->Irp != NULL);
        Next = IoGetNextIrpStackLocation(Slot->Irp);
        Next->MajorFunction = (KtRandom() & 1) ? IRP_MJ_READ : IRP_MJ_WRITE;
        Next->Parameters.Read.Length = 512;
        IoSetCompletionRoutine(Slot->Irp, IrcCompletion, Slot, TRUE, TRUE, TRUE);
    }
}

/* Checks one round's invariants (every DPC flushed) and frees its IRPs. */
static VOID
IrcCheckRound(IRC_RUN *Run)
{
    for (ULONG i = 0; i < Run->SlotCount; i++)
    {
        IRC_SLOT *Slot = &Run->Slots[i];
        NTSTATUS Status = Slot->Irp->IoStatus.Status;
        BOOLEAN Cancelled = Status == STATUS_CANCELLED;

        KT_EXPECT_EQ(Slot->Completions, 1);
        KT_EXPECT(Status == STATUS_SUCCESS || Status == STATUS_CANCELLED);
        KT_EXPECT_LE(Slot->CancelTrue, 1);
        if (Slot->CancelTrue)
        {
            KT_EXPECT_EQ(Status, STATUS_CANCELLED);
        }
        if (Slot->Plan == IrcNever)
        {
            KT_EXPECT_EQ(Status, STATUS_SUCCESS);
        }
        if (Slot->Plan == IrcBeforeSubmit)
        {
            KT_EXPECT_EQ(Status, STATUS_CANCELLED);
        }
        if (Cancelled)
        {
            KT_EXPECT_EQ(Slot->Irp->Cancel, TRUE);
            KT_EXPECT_EQ(Slot->Irp->IoStatus.Information, 0);
        }
        else
        {
            KT_EXPECT_EQ(Slot->Irp->IoStatus.Information, 512);
        }
        KT_EXPECT(Slot->Irp->CancelRoutine == NULL);
        KT_EXPECT_LE(Slot->CompletionIrql, DISPATCH_LEVEL);
        KT_EXPECT_EQ(Slot->PendingReturned, TRUE);

        Run->Submitted++;
        Run->Succeeded[Slot->IsSio] += !Cancelled;
        Run->Cancelled[Slot->IsSio] += Cancelled;
        if (Slot->Plan == IrcAfterDelay)
        {
            Run->CancelTrue += Slot->CancelTrue != 0;
            Run->CancelFalse += Slot->CancelTrue == 0;
        }
        if (Slot->Completions == 1)
        {
            IoCompleteRequest(Slot->Irp, IO_NO_INCREMENT); // the final step; the IRP is ours
            IoFreeIrp(Slot->Irp);
        }
    }

    for (ULONG d = 0; d < Run->DeviceCount; d++)
    {
        PDEVICE_OBJECT Device = Run->Devices[d];

        if (Run->DeviceIsSio[d])
        {
            PSIO_EXTENSION Extension = Device->DeviceExtension;
            KT_EXPECT(IsListEmpty(&Device->DeviceQueue.DeviceListHead));
            KT_EXPECT_EQ(Device->DeviceQueue.Busy, FALSE);
            KT_EXPECT(Device->CurrentIrp == NULL);
            KT_EXPECT(Extension->HwIrp == NULL);
            KT_EXPECT_EQ(Extension->Violations, 0);
            KT_EXPECT_EQ(Extension->Anomalies, 0);
            KT_EXPECT_EQ(Device->DeviceObjectExtension->StartIoCount, 0);
        }
        else
        {
            PCSD_EXTENSION Extension = Device->DeviceExtension;
            KT_EXPECT(IsListEmpty(&Extension->PendingList));
        }
    }
    KT_EXPECT(KeTestSpinLock(&IopCancelSpinLock));
}

/* Checks the drivers' own counters against the completions seen, over the whole run. */
static VOID
IrcCheckTotals(IRC_RUN *Run)
{
    LONG SioSucceeded = 0, SioCancelled = 0, CsdSucceeded = 0, CsdCancelled = 0;
    LONG InProgress = 0, Queued = 0, AtStart = 0, Spurious = 0;

    for (ULONG d = 0; d < Run->DeviceCount; d++)
    {
        if (Run->DeviceIsSio[d])
        {
            PSIO_EXTENSION Extension = Run->Devices[d]->DeviceExtension;
            SioSucceeded += Extension->HardwareCompletions;
            InProgress += Extension->CancelledInProgress;
            Queued += Extension->CancelledQueued;
            AtStart += Extension->CancelledAtStart;
            Spurious += Extension->SpuriousDpcs;
        }
        else
        {
            PCSD_EXTENSION Extension = Run->Devices[d]->DeviceExtension;
            CsdSucceeded += Extension->Completed;
            CsdCancelled += Extension->Cancelled;
        }
    }
    SioCancelled = InProgress + Queued + AtStart;
    KT_EXPECT_EQ(SioSucceeded, (LONG)Run->Succeeded[1]);
    KT_EXPECT_EQ(SioCancelled, (LONG)Run->Cancelled[1]);
    KT_EXPECT_EQ(CsdSucceeded, (LONG)Run->Succeeded[0]);
    KT_EXPECT_EQ(CsdCancelled, (LONG)Run->Cancelled[0]);
    if (Run->Succeeded[1] + Run->Cancelled[1] != 0)
    {
        KtLog("StartIo sample: %u succeeded; cancelled %ld queued, %ld on the hardware, %ld at "
              "StartIo; %ld stale DPCs",
              Run->Succeeded[1], (long)Queued, (long)InProgress, (long)AtStart, (long)Spurious);
        KT_EXPECT_GT(Queued, 0);
        KT_EXPECT_GT(InProgress, 0);
    }
    if (Run->Succeeded[0] + Run->Cancelled[0] != 0)
    {
        KtLog("CSQ sample: %u succeeded, %u cancelled", Run->Succeeded[0], Run->Cancelled[0]);
        KT_EXPECT_GT(CsdCancelled, 0);
    }
    KtLog("%u IRPs; timed cancels: %u returned TRUE, %u FALSE", Run->Submitted, Run->CancelTrue,
          Run->CancelFalse);
    KT_EXPECT_GT(Run->CancelTrue, 0);
    KT_EXPECT_GT(Run->CancelFalse, 0);
    KT_EXPECT_GE(Run->Submitted, IRC_TARGET_IRPS);
}

static VOID
IrcAddDevices(IRC_RUN *Run, PDRIVER_OBJECT Driver, BOOLEAN IsSio)
{
    for (PDEVICE_OBJECT Device = Driver->DeviceObject; Device != NULL; Device = Device->NextDevice)
    {
        KT_ASSERT(Run->DeviceCount < IRC_MAX_DEVICES);
        if (IsSio)
        {
            ((PSIO_EXTENSION)Device->DeviceExtension)->Seed = (ULONG)KtRandom();
        }
        else
        {
            ((PCSD_EXTENSION)Device->DeviceExtension)->Seed = (ULONG)KtRandom();
        }
        Run->DeviceIsSio[Run->DeviceCount] = IsSio;
        Run->Devices[Run->DeviceCount++] = Device;
    }
}

static VOID
IrcRace(BOOLEAN UseSio, BOOLEAN UseCsd)
{
    static UNICODE_STRING SioName = RTL_CONSTANT_STRING(L"\\Driver\\SampleStartIo");
    static UNICODE_STRING CsdName = RTL_CONSTANT_STRING(L"\\Driver\\SampleCsq");
    LONG64 Irps = IrcPoolCount(IOP_TAG_IRP);
    LONG64 Devices = IrcPoolCount(IOP_TAG_DEVICE);
    LONG64 Drivers = IrcPoolCount(IOP_TAG_DRIVER);
    LONG64 Names = IrcPoolCount(IOP_TAG_NAME);
    LARGE_INTEGER Frequency;
    ULONG64 Start = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    ULONG Rounds;
    IRC_RUN *Run = ExAllocatePoolWithTag(NonPagedPool, sizeof(IRC_RUN), IRC_POOL_TAG);

    KT_ASSERT(Run != NULL);
    memset(Run, 0, sizeof(*Run));
    Run->Frequency = (ULONG64)Frequency.QuadPart;
    Run->Processors = KeQueryActiveProcessorCount(NULL);
    Run->SlotCount = Run->Processors * IRC_PER_PROCESSOR;
    Run->Slots =
        ExAllocatePoolWithTag(NonPagedPool, Run->SlotCount * sizeof(IRC_SLOT), IRC_POOL_TAG);
    KT_ASSERT(Run->Slots != NULL);
    if (UseSio)
    {
        KT_ASSERT_EQ(IoCreateDriver(&SioName, SioDriverEntry), STATUS_SUCCESS);
        IrcAddDevices(Run, SioDriverObject, TRUE);
    }
    if (UseCsd)
    {
        KT_ASSERT_EQ(IoCreateDriver(&CsdName, CsdDriverEntry), STATUS_SUCCESS);
        IrcAddDevices(Run, CsdDriverObject, FALSE);
    }

    Rounds = (IRC_TARGET_IRPS + Run->SlotCount - 1) / Run->SlotCount;
    for (ULONG Round = 0; Round < Rounds; Round++)
    {
        IrcPlanRound(Run);
        KtRunOnProcessors(0, IrcRoundRoutine, Run);
        KeFlushQueuedDpcs();
        KT_ASSERT_EQ(Run->TimedOut, 0); // IRPs still in a driver: nothing more can be checked
        IrcCheckRound(Run);
    }
    IrcCheckTotals(Run);

    if (UseSio)
    {
        IoDeleteDriver(SioDriverObject);
    }
    if (UseCsd)
    {
        IoDeleteDriver(CsdDriverObject);
    }
    KT_EXPECT_EQ(IrcPoolCount(IOP_TAG_IRP), Irps);
    KT_EXPECT_EQ(IrcPoolCount(IOP_TAG_DEVICE), Devices);
    KT_EXPECT_EQ(IrcPoolCount(IOP_TAG_DRIVER), Drivers);
    KT_EXPECT_EQ(IrcPoolCount(IOP_TAG_NAME), Names);
    KtLog("%u rounds of %u IRPs on %u processors in %llu ms", Rounds, Run->SlotCount,
          Run->Processors,
          ((ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Start) * 1000 / Run->Frequency);
    ExFreePoolWithTag(Run->Slots, IRC_POOL_TAG);
    ExFreePoolWithTag(Run, IRC_POOL_TAG);
}

KTEST(IoRace, startio_sample_driver_submit_cancel_complete_from_all_processors)
{
    IrcRace(TRUE, FALSE);
}

/* On one processor the DPC runs inside IoCallDriver, so no timed cancel could find a queued IRP. */
KTEST_EX(IoRace, csq_sample_driver_submit_cancel_complete_from_all_processors, KTEST_SMP_ONLY, 0)
{
    IrcRace(FALSE, TRUE);
}

KTEST(IoRace, both_sample_drivers_at_once_from_all_processors)
{
    IrcRace(TRUE, TRUE);
}
