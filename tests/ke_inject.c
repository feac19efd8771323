/* SPDX-License-Identifier: MIT */
/*
 * Fault injection (kernel/ke/verifier.c, checked build): every KI_INJECT_*
 * point sits on a path the primitives really take, and fires. The test turns
 * injection on for its own run (as inject=1 would) and drives each window: a
 * contended queued lock, an insert into a busy device queue (both forms),
 * IoCancelIrp, IoStartPacket with a cancel routine, a cancel-safe queue's
 * insert and its removals for completion, and a wait that halts (the
 * spin-then-halt handshake of kernel/ke/wait.c).
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"

#define TI_ROUNDS     64   // visits per point (each fires with probability 1/4)
#define TI_CONTEND_S  10   // bound on the queued-lock contention, seconds
#define TI_PUBLISH_MS 2000 // bound on the wait for the waiter to publish itself

#if DBG
static KSPIN_LOCK TiQueuedLock;
static volatile LONG TiQueuedCounter;

static VOID
TiContend(ULONG Index, PVOID Context)
{
    ULONG64 Start = KiInjectFired[KiInjectQueuedLockLink];
    LARGE_INTEGER Frequency;
    ULONG64 Begin = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;

    (void)Index;
    (void)Context;
    /* Until the point has fired a few times (a successor caught mid-enqueue), time-boxed. */
    while (KiInjectFired[KiInjectQueuedLockLink] < Start + 8 &&
           (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Begin <
               (ULONG64)Frequency.QuadPart * TI_CONTEND_S)
    {
        KLOCK_QUEUE_HANDLE Handle;
        KeAcquireInStackQueuedSpinLock(&TiQueuedLock, &Handle);
        TiQueuedCounter++;
        KeReleaseInStackQueuedSpinLock(&Handle);
    }
}

/* A word one processor waits on (KiWaitForChange halts) and another changes. */
static volatile ULONG_PTR TiWaitWord;
static volatile ULONG_PTR TiWaitAck; // the last round the waiter has seen
static volatile ULONG64 TiWaiterBit; // the waiting processor's bit in KiWaitHaltedMask

static VOID
TiWaitAndWake(ULONG Index, PVOID Context)
{
    (void)Context;
    if (Index == 0)
    {
        /* Release: published before the waker reads it (it first waits for TiWaitAck). */
        __atomic_store_n(&TiWaiterBit, 1ull << KeGetCurrentProcessorNumber(), __ATOMIC_RELEASE);
    }
    for (ULONG Round = 1; Round <= TI_ROUNDS; Round++)
    {
        if (Index == 0)
        {
            /* Acquire (in KiWaitForChange): pairs with the release in KiWaitSetAndWake. */
            KiWaitForChange(&TiWaitWord, Round - 1, 0, NULL);
            __atomic_store_n(&TiWaitAck, Round, __ATOMIC_RELEASE);
        }
        else
        {
            /* Acquire: pairs with the waiter's release; it waits on the previous round. */
            while (__atomic_load_n(&TiWaitAck, __ATOMIC_ACQUIRE) != Round - 1)
            {
                x86_pause();
            }
            /*
             * Change the word only once the waiter has published itself (W3, just
             * before the injection point), so every round visits the point rather
             * than relying on how long a spin bound takes. Bounded: a waiter that
             * does not publish within TI_PUBLISH_MS is woken anyway.
             */
            for (ULONG64 Start = KtNowMs();
                 (__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_ACQUIRE) &
                  __atomic_load_n(&TiWaiterBit, __ATOMIC_ACQUIRE)) == 0 &&
                 KtNowMs() - Start < TI_PUBLISH_MS;)
            {
                x86_pause();
            }
            KiWaitSetAndWake(&TiWaitWord, Round);
        }
    }
}

typedef struct _TI_CSQ
{
    IO_CSQ Csq;
    KSPIN_LOCK Lock;
    LIST_ENTRY List;
} TI_CSQ;

static TI_CSQ TiCsq;

static VOID
TiCsqInsert(PIO_CSQ Csq, PIRP Irp)
{
    InsertTailList(&CONTAINING_RECORD(Csq, TI_CSQ, Csq)->List, &Irp->Tail.Overlay.ListEntry);
}

static VOID
TiCsqRemove(PIO_CSQ Csq, PIRP Irp)
{
    (void)Csq;
    RemoveEntryList(&Irp->Tail.Overlay.ListEntry);
}

static PIRP
TiCsqPeekNext(PIO_CSQ Csq, PIRP Irp, PVOID PeekContext)
{
    PLIST_ENTRY Head = &CONTAINING_RECORD(Csq, TI_CSQ, Csq)->List;
    PLIST_ENTRY Link = Irp == NULL ? Head->Flink : Irp->Tail.Overlay.ListEntry.Flink;

    (void)PeekContext;
    return Link == Head ? NULL : CONTAINING_RECORD(Link, IRP, Tail.Overlay.ListEntry);
}

static VOID
TiCsqAcquire(PIO_CSQ Csq, PKIRQL Irql)
{
    KeAcquireSpinLock(&CONTAINING_RECORD(Csq, TI_CSQ, Csq)->Lock, Irql);
}

static VOID
TiCsqRelease(PIO_CSQ Csq, KIRQL Irql)
{
    KeReleaseSpinLock(&CONTAINING_RECORD(Csq, TI_CSQ, Csq)->Lock, Irql);
}

static VOID
TiCsqCompleteCanceled(PIO_CSQ Csq, PIRP Irp)
{
    (void)Csq;
    Irp->IoStatus.Status = STATUS_CANCELLED;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
}

static NTSTATUS
TiKeep(PDEVICE_OBJECT DeviceObject, PIRP Irp, PVOID Context)
{
    (void)DeviceObject;
    (void)Irp;
    (void)Context;
    return STATUS_MORE_PROCESSING_REQUIRED;
}

static PDEVICE_OBJECT TiDevice;
static PDRIVER_OBJECT TiDriver;

static VOID
TiStartIo(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    (void)DeviceObject;
    (void)Irp;
}

static VOID
TiCancel(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    (void)DeviceObject;
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}

static NTSTATUS
TiEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    NTSTATUS Status;

    (void)RegistryPath;
    DriverObject->DriverStartIo = TiStartIo;
    Status = IoCreateDevice(DriverObject, 0, NULL, FILE_DEVICE_UNKNOWN, 0, FALSE, &TiDevice);
    if (NT_SUCCESS(Status))
    {
        TiDevice->Flags &= ~DO_DEVICE_INITIALIZING;
        TiDriver = DriverObject;
    }
    return Status;
}

/* An IRP at a driver's stack location of TiDevice, kept by its completion routine. */
static PIRP
TiIrp(VOID)
{
    PIRP Irp = IoAllocateIrp(1, FALSE);

    KT_ASSERT(Irp != NULL);
    IoSetCompletionRoutine(Irp, TiKeep, NULL, TRUE, TRUE, TRUE);
    IoSetNextIrpStackLocation(Irp);
    IoGetCurrentIrpStackLocation(Irp)->DeviceObject = TiDevice;
    return Irp;
}

static VOID
TiDriveEveryPoint(VOID)
{
    KDEVICE_QUEUE Queue;
    KDEVICE_QUEUE_ENTRY Entries[TI_ROUNDS + 1] = {0}; // Inserted FALSE
    KIRQL OldIrql;

    /* Queued lock: a successor between its exchange and its link (SMP only). */
    if (KeNumberProcessors > 1)
    {
        KeInitializeSpinLock(&TiQueuedLock);
        KtRunOnProcessors(2, TiContend, NULL);
        TiWaitWord = 0;
        TiWaitAck = 0;
        TiWaiterBit = 0;
        KtRunOnProcessors(2, TiWaitAndWake, NULL);
    }

    /* Device queue: inserts into a busy queue, in order and by key. */
    KeInitializeDeviceQueue(&Queue);
    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    KT_EXPECT(!KeInsertDeviceQueue(&Queue, &Entries[0])); // granted: the queue is busy now
    for (ULONG i = 1; i <= TI_ROUNDS; i++)
    {
        KT_EXPECT((i & 1) != 0 ? KeInsertDeviceQueue(&Queue, &Entries[i])
                               : KeInsertByKeyDeviceQueue(&Queue, &Entries[i], i));
    }
    while (KeRemoveDeviceQueue(&Queue) != NULL)
    {
    }
    KeLowerIrql(OldIrql);

    /* IoCancelIrp with and without a cancel routine; IoStartPacket with one. */
    KT_ASSERT_EQ(IoCreateDriver(NULL, TiEntry), STATUS_SUCCESS);
    for (ULONG i = 0; i < TI_ROUNDS; i++)
    {
        PIRP Irp = TiIrp();
        IoMarkIrpPending(Irp);
        if ((i & 1) != 0)
        {
            IoSetCancelRoutine(Irp, TiCancel);
        }
        KT_EXPECT_EQ(IoCancelIrp(Irp), (i & 1) != 0);
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        IoFreeIrp(Irp);
    }
    for (ULONG i = 0; i < TI_ROUNDS; i++)
    {
        PIRP Irp = TiIrp();
        IoMarkIrpPending(Irp);
        IoStartPacket(TiDevice, Irp, NULL, TiCancel); // idle: StartIo gets it at once
        KT_EXPECT(TiDevice->CurrentIrp == Irp);
        KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
        IoStartNextPacket(TiDevice, TRUE);
        KeLowerIrql(OldIrql);
        IoSetCancelRoutine(Irp, NULL);
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        IoFreeIrp(Irp);
    }

    /* Cancel-safe queue: insert, then remove for completion. */
    KeInitializeSpinLock(&TiCsq.Lock);
    InitializeListHead(&TiCsq.List);
    KT_ASSERT_EQ(IoCsqInitialize(&TiCsq.Csq, TiCsqInsert, TiCsqRemove, TiCsqPeekNext, TiCsqAcquire,
                                 TiCsqRelease, TiCsqCompleteCanceled),
                 STATUS_SUCCESS);
    for (ULONG i = 0; i < TI_ROUNDS; i++)
    {
        PIRP Irp = TiIrp();
        PIRP Removed;
        IoCsqInsertIrp(&TiCsq.Csq, Irp, NULL);
        Removed = IoCsqRemoveNextIrp(&TiCsq.Csq, NULL);
        KT_EXPECT(Removed == Irp);
        IoCompleteRequest(Irp, IO_NO_INCREMENT);
        IoFreeIrp(Irp);
    }
    IoDeleteDevice(TiDevice);
    IoDeleteDriver(TiDriver);
}
#endif

KTEST(KeInject, every_injection_point_fires)
{
#if DBG
    BOOLEAN Saved = KiInjectEnabled;
    ULONG64 Before[KiInjectPointCount];

    for (ULONG Point = 0; Point < KiInjectPointCount; Point++)
    {
        Before[Point] = KiInjectFired[Point];
    }
    KiInjectEnabled = TRUE;
    TiDriveEveryPoint();
    KiInjectEnabled = Saved;
    for (ULONG Point = 0; Point < KiInjectPointCount; Point++)
    {
        ULONG64 Fired = KiInjectFired[Point] - Before[Point];
        KtLog("%-22s fired %llu times", KiInjectPointName(Point), Fired);
        if ((Point == KiInjectQueuedLockLink || Point == KiInjectWaitRecheck) &&
            KeNumberProcessors == 1)
        {
            continue; // no successor, no waker without a second processor
        }
        KT_EXPECT_GT(Fired, 0);
    }
#else
    KT_SKIP("checked build only");
#endif
}
