/* SPDX-License-Identifier: MIT */
/*
 * GdbTarget: the tests `make test-gdb` (scripts/test-gdb.sh) breaks in. Each
 * is an ordinary test of a behaviour gdb then shows: a DPC targeted at the
 * last processor, a DPC held in the queue at DISPATCH_LEVEL, an ordinary lock
 * held on another processor, an uncontended in-stack queued acquire (stepped
 * through with stepi), a queued lock with a waiter, and a device queue holding
 * cancelable IRPs. They pass without gdb.
 * The routines marked GDB_BREAK_SITE are where the session stops; keep their
 * names (scripts/gdb/test_session.py uses them).
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "kernel/ke/ke.h"

/* A real call the session can break on: never inlined or cloned away. */
#if defined(__clang__)
#define GDB_BREAK_SITE __attribute__((noinline))
#else
#define GDB_BREAK_SITE __attribute__((noinline, noipa))
#endif

#define GDB_TARGET_WAIT_MS 30000 // cross-processor waits; generous for TCG on few host cores

typedef struct _GDB_TARGET_RECORD
{
    volatile LONG Runs;
    volatile ULONG Processor;
    volatile KIRQL Irql;
    PVOID Argument1;
    volatile ULONG_PTR LockWord;  // the lock word seen while holding the lock
    volatile BOOLEAN TestedFree;  // KeTestSpinLock while holding it
    volatile ULONG_PTR QueueLock; // the waiter's handle Lock field once it owned the lock
} GDB_TARGET_RECORD;

/* The locks the session inspects with spindle-lock; globals so it can name them. */
static KSPIN_LOCK GdbTargetSpinLock;
static KSPIN_LOCK GdbTargetQueuedLock;

static ULONG
GdbTargetLastProcessor(VOID)
{
    return KeQueryActiveProcessorCount(NULL) - 1;
}

/* Runs Routine as a DPC on the last processor and waits (bounded) until it has run. */
static BOOLEAN
GdbTargetRunDpcOnLast(PKDEFERRED_ROUTINE Routine, GDB_TARGET_RECORD *Record, PKDPC Dpc)
{
    KeInitializeDpc(Dpc, Routine, Record);
    KeSetTargetProcessorDpc(Dpc, (CCHAR)GdbTargetLastProcessor());
    if (!KeInsertQueueDpc(Dpc, (PVOID)0x6db, NULL))
    {
        return FALSE;
    }
    return KtWaitForLongAtLeast(&Record->Runs, 1, GDB_TARGET_WAIT_MS);
}

/* Records where and how it ran; the session's breakpoint for "a DPC on the last processor". */
static VOID
GdbTargetDpcRoutine(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    GDB_TARGET_RECORD *Record = Context;

    Record->Processor = KeGetCurrentProcessorNumber();
    Record->Irql = KeGetCurrentIrql();
    Record->Argument1 = Argument1;
    /* Release: the fields above are written before the waiter sees Runs. */
    __atomic_add_fetch(&Record->Runs, 1, __ATOMIC_RELEASE);
}

KTEST(GdbTarget, dpc_runs_on_last_processor)
{
    GDB_TARGET_RECORD Record = {0};
    KDPC Dpc;

    KT_ASSERT(GdbTargetRunDpcOnLast(GdbTargetDpcRoutine, &Record, &Dpc));
    KT_EXPECT_EQ(Record.Processor, GdbTargetLastProcessor());
    KT_EXPECT_EQ(Record.Irql, DISPATCH_LEVEL);
    KT_EXPECT_EQ((ULONG_PTR)Record.Argument1, 0x6db);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
}

/* Counts its runs; queued on the current processor below. */
static VOID
GdbTargetCountDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    GDB_TARGET_RECORD *Record = Context;

    __atomic_add_fetch(&Record->Runs, 1, __ATOMIC_RELEASE);
}

/* Break site: Dpc waits in this processor's queue (spindle-dpcs shows it). */
GDB_BREAK_SITE static VOID
GdbTargetDpcQueued(PKDPC Dpc, GDB_TARGET_RECORD *Record)
{
    KT_EXPECT_EQ(Record->Runs, 0);
    KT_EXPECT_EQ((ULONG_PTR)Dpc->DpcData, (ULONG_PTR)&KeGetCurrentPrcb()->DpcData[DPC_NORMAL]);
}

KTEST(GdbTarget, dpc_stays_queued_at_dispatch_level)
{
    GDB_TARGET_RECORD Record = {0};
    KDPC Dpc;
    KIRQL Old;

    KeInitializeDpc(&Dpc, GdbTargetCountDpc, &Record);
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    GdbTargetDpcQueued(&Dpc, &Record);
    KeLowerIrql(Old);
    KT_EXPECT_EQ(Record.Runs, 1);
    KT_EXPECT_EQ((ULONG_PTR)Dpc.DpcData, 0);
}

/* Break site: the caller holds Lock (spindle-lock reports it held, and by whom). */
GDB_BREAK_SITE static VOID
GdbTargetHoldingSpinLock(PKSPIN_LOCK Lock, GDB_TARGET_RECORD *Record)
{
    Record->LockWord = __atomic_load_n(Lock, __ATOMIC_RELAXED);
    Record->TestedFree = KeTestSpinLock(Lock);
}

static VOID
GdbTargetSpinLockDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    GDB_TARGET_RECORD *Record = Context;

    KeAcquireSpinLockAtDpcLevel(&GdbTargetSpinLock);
    GdbTargetHoldingSpinLock(&GdbTargetSpinLock, Record);
    KeReleaseSpinLockFromDpcLevel(&GdbTargetSpinLock);
    Record->Processor = KeGetCurrentProcessorNumber();
    /* Release: the record is complete before the waiter sees Runs. */
    __atomic_add_fetch(&Record->Runs, 1, __ATOMIC_RELEASE);
}

KTEST(GdbTarget, spin_lock_held_on_last_processor)
{
    GDB_TARGET_RECORD Record = {0};
    KDPC Dpc;

    KeInitializeSpinLock(&GdbTargetSpinLock);
    KT_ASSERT(GdbTargetRunDpcOnLast(GdbTargetSpinLockDpc, &Record, &Dpc));
    KT_EXPECT_EQ(Record.Processor, GdbTargetLastProcessor());
    KT_EXPECT_EQ(Record.TestedFree, FALSE);
#if DBG
    /* The checked build's word names the owner: its KPRCB address | 1. */
    KT_EXPECT_EQ(Record.LockWord, (ULONG_PTR)KiGetPrcb(GdbTargetLastProcessor()) | 1);
#else
    KT_EXPECT_EQ(Record.LockWord, 1);
#endif
    KT_EXPECT_EQ(KeTestSpinLock(&GdbTargetSpinLock), TRUE);
}

/* Break site: Handle owns the queued lock (spindle-lock shows the tail = the owner). */
GDB_BREAK_SITE static VOID
GdbTargetHoldingQueuedLock(PKSPIN_LOCK Lock, PKLOCK_QUEUE_HANDLE Handle, GDB_TARGET_RECORD *Record)
{
    Record->LockWord = __atomic_load_n(Lock, __ATOMIC_RELAXED);
    Record->QueueLock = (ULONG_PTR)Handle->LockQueue.Lock;
    Record->Irql = KeGetCurrentIrql();
}

KTEST(GdbTarget, in_stack_queued_acquire_makes_handle_the_tail)
{
    GDB_TARGET_RECORD Record = {0};
    KLOCK_QUEUE_HANDLE Handle;

    KeInitializeSpinLock(&GdbTargetQueuedLock);
    KeAcquireInStackQueuedSpinLock(&GdbTargetQueuedLock, &Handle); // the session stepi's here
    GdbTargetHoldingQueuedLock(&GdbTargetQueuedLock, &Handle, &Record);
    KT_EXPECT_EQ((ULONG_PTR)Handle.LockQueue.Next, 0);
    KeReleaseInStackQueuedSpinLock(&Handle);

    KT_EXPECT_EQ(Record.LockWord, (ULONG_PTR)&Handle.LockQueue);
    KT_EXPECT_EQ(Record.QueueLock, (ULONG_PTR)&GdbTargetQueuedLock | LOCK_QUEUE_OWNER);
    KT_EXPECT_EQ(Record.Irql, DISPATCH_LEVEL);
    KT_EXPECT_EQ(Handle.OldIrql, PASSIVE_LEVEL);
    KT_EXPECT_EQ(GdbTargetQueuedLock, 0);
    KT_EXPECT_EQ((ULONG_PTR)Handle.LockQueue.Lock, (ULONG_PTR)&GdbTargetQueuedLock);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

/* Queues behind processor 0's handle, then records what it owned once handed the lock. */
static VOID
GdbTargetQueuedWaiterDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    GDB_TARGET_RECORD *Record = Context;
    KLOCK_QUEUE_HANDLE Handle;

    KeAcquireInStackQueuedSpinLockAtDpcLevel(&GdbTargetQueuedLock, &Handle);
    Record->QueueLock = (ULONG_PTR)Handle.LockQueue.Lock;
    Record->Processor = KeGetCurrentProcessorNumber();
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
    /* Release: the record is complete before the waiter sees Runs. */
    __atomic_add_fetch(&Record->Runs, 1, __ATOMIC_RELEASE);
}

/* Break site: Owner holds the lock and the last processor waits behind it. */
GDB_BREAK_SITE static VOID
GdbTargetQueuedLockContended(PKSPIN_LOCK Lock, PKLOCK_QUEUE_HANDLE Owner, GDB_TARGET_RECORD *Record)
{
    Record->LockWord = __atomic_load_n(Lock, __ATOMIC_RELAXED);
}

/* Bounded wait until a waiter has linked itself behind Handle; FALSE on timeout. */
static BOOLEAN
GdbTargetWaitForSuccessor(PKLOCK_QUEUE_HANDLE Handle)
{
    LARGE_INTEGER Frequency;
    ULONG64 Start = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    ULONG64 Budget = (ULONG64)Frequency.QuadPart / 1000 * GDB_TARGET_WAIT_MS;

    /* Acquire: pairs with the waiter's release store of our Next. */
    while (__atomic_load_n(&Handle->LockQueue.Next, __ATOMIC_ACQUIRE) == NULL)
    {
        if ((ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Start > Budget)
        {
            return FALSE;
        }
        x86_pause();
    }
    return TRUE;
}

KTEST_EX(GdbTarget, queued_lock_hands_off_to_waiter, KTEST_SMP_ONLY, 0)
{
    GDB_TARGET_RECORD Record = {0};
    KLOCK_QUEUE_HANDLE Handle;
    PKSPIN_LOCK_QUEUE Successor;
    BOOLEAN Linked;
    KDPC Dpc;

    KeInitializeSpinLock(&GdbTargetQueuedLock);
    KeAcquireInStackQueuedSpinLock(&GdbTargetQueuedLock, &Handle);
    KeInitializeDpc(&Dpc, GdbTargetQueuedWaiterDpc, &Record);
    KeSetTargetProcessorDpc(&Dpc, (CCHAR)GdbTargetLastProcessor());
    KT_EXPECT_EQ(KeInsertQueueDpc(&Dpc, NULL, NULL), TRUE);
    Linked = GdbTargetWaitForSuccessor(&Handle);
    Successor = Handle.LockQueue.Next;
    if (Linked)
    {
        GdbTargetQueuedLockContended(&GdbTargetQueuedLock, &Handle, &Record);
        /* The waiter is the tail and waits with WAIT set; it cannot own the lock yet. */
        KT_EXPECT_EQ(Record.LockWord, (ULONG_PTR)Successor);
        KT_EXPECT_EQ((ULONG_PTR)Successor->Lock, (ULONG_PTR)&GdbTargetQueuedLock | LOCK_QUEUE_WAIT);
        KT_EXPECT_EQ(Record.Runs, 0);
    }
    KeReleaseInStackQueuedSpinLock(&Handle); // hands the lock to the waiter (or frees it)
    KT_EXPECT(Linked);
    KT_ASSERT(KtWaitForLongAtLeast(&Record.Runs, 1, GDB_TARGET_WAIT_MS));
    KT_EXPECT_EQ(Record.Processor, GdbTargetLastProcessor());
    KT_EXPECT_EQ(Record.QueueLock, (ULONG_PTR)&GdbTargetQueuedLock | LOCK_QUEUE_OWNER);
    KT_EXPECT_EQ(GdbTargetQueuedLock, 0);
}

/* The cancel routine the queued IRPs carry (spindle-irp names it); never called here. */
static VOID
GdbTargetCancelRoutine(PDEVICE_OBJECT DeviceObject, PIRP Irp)
{
    IoReleaseCancelSpinLock(Irp->CancelIrql);
}

/* Break site: Queue is busy with two IRPs waiting; Irp is the first of them. */
GDB_BREAK_SITE static VOID
GdbTargetDeviceQueueLoaded(PKDEVICE_QUEUE Queue, PIRP Irp)
{
    KT_EXPECT_EQ(Queue->Busy, TRUE);
    KT_EXPECT_EQ(Irp->Tail.Overlay.DeviceQueueEntry.Inserted, TRUE);
}

KTEST(GdbTarget, device_queue_holds_cancelable_irps)
{
    KDEVICE_QUEUE Queue;
    PIRP Irps[3];
    ULONG Allocated = 0;
    KIRQL Old;

    while (Allocated < RTL_NUMBER_OF(Irps) && (Irps[Allocated] = IoAllocateIrp(2, FALSE)) != NULL)
    {
        PIRP Irp = Irps[Allocated++];
        IoSetNextIrpStackLocation(Irp); // location 2 of 2 becomes current, as a driver sees it
        IoGetCurrentIrpStackLocation(Irp)->MajorFunction = IRP_MJ_READ;
        Irp->IoStatus.Status = STATUS_PENDING;
        KT_EXPECT_EQ((ULONG_PTR)IoSetCancelRoutine(Irp, GdbTargetCancelRoutine), 0);
    }
    if (Allocated == RTL_NUMBER_OF(Irps))
    {
        KeInitializeDeviceQueue(&Queue);
        Old = KeRaiseIrqlToDpcLevel();
        KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &Irps[0]->Tail.Overlay.DeviceQueueEntry), FALSE);
        KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &Irps[1]->Tail.Overlay.DeviceQueueEntry), TRUE);
        KT_EXPECT_EQ(KeInsertDeviceQueue(&Queue, &Irps[2]->Tail.Overlay.DeviceQueueEntry), TRUE);
        GdbTargetDeviceQueueLoaded(&Queue, Irps[1]);
        KT_EXPECT(KeRemoveDeviceQueue(&Queue) == &Irps[1]->Tail.Overlay.DeviceQueueEntry);
        KT_EXPECT(KeRemoveDeviceQueue(&Queue) == &Irps[2]->Tail.Overlay.DeviceQueueEntry);
        KT_EXPECT(KeRemoveDeviceQueue(&Queue) == NULL);
        KT_EXPECT_EQ(Queue.Busy, FALSE);
        KeLowerIrql(Old);
    }
    KT_EXPECT_EQ(Allocated, RTL_NUMBER_OF(Irps));
    while (Allocated > 0)
    {
        PIRP Irp = Irps[--Allocated];
        KT_EXPECT_EQ((ULONG_PTR)IoSetCancelRoutine(Irp, NULL), (ULONG_PTR)GdbTargetCancelRoutine);
        IoFreeIrp(Irp);
    }
}

/* ---------------------------------------------------------------- objects for spindle-* views */

#define GDB_TARGET_POOL_TAG    'TbdG' // shows as "GdbT" (spindle-pool)
#define GDB_TARGET_POOL_BLOCKS 3

static NTSTATUS
GdbTargetDriverEntry(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    DriverObject->DriverStartIo = NULL;
    return STATUS_SUCCESS;
}

static PDRIVER_OBJECT GdbTargetDriver;

static NTSTATUS
GdbTargetKeepDriver(PDRIVER_OBJECT DriverObject, PUNICODE_STRING RegistryPath)
{
    GdbTargetDriver = DriverObject;
    return GdbTargetDriverEntry(DriverObject, RegistryPath);
}

/*
 * Break site: a timer is set (due in an hour, with a DPC), GDB_TARGET_POOL_BLOCKS
 * blocks of tag 'GdbT' are allocated and a driver has one device.
 */
GDB_BREAK_SITE static VOID
GdbTargetObjectsReady(PKTIMER Timer, PKDPC Dpc, PDRIVER_OBJECT Driver, PDEVICE_OBJECT Device,
                      PVOID *Blocks)
{
    KT_EXPECT_EQ(Timer->Dpc, Dpc);
    KT_EXPECT_EQ(Driver->DeviceObject, Device);
    KT_EXPECT(Blocks[0] != NULL);
}

KTEST(GdbTarget, timer_pool_driver_and_device_to_inspect)
{
    KTIMER Timer;
    KDPC Dpc;
    GDB_TARGET_RECORD Record = {0};
    PDEVICE_OBJECT Device = NULL;
    PVOID Blocks[GDB_TARGET_POOL_BLOCKS];
    LARGE_INTEGER DueTime;

    KeInitializeTimer(&Timer);
    KeInitializeDpc(&Dpc, GdbTargetCountDpc, &Record);
    DueTime.QuadPart = -36000000000ll; // an hour from now: never expires during the run
    KT_EXPECT_EQ(KeSetTimer(&Timer, DueTime, &Dpc), FALSE);
    for (ULONG i = 0; i < GDB_TARGET_POOL_BLOCKS; i++)
    {
        Blocks[i] = ExAllocatePoolWithTag(NonPagedPool, 100 + 100 * i, GDB_TARGET_POOL_TAG);
    }
    KT_ASSERT_EQ(IoCreateDriver(NULL, GdbTargetKeepDriver), STATUS_SUCCESS);
    KT_EXPECT_EQ(IoCreateDevice(GdbTargetDriver, 64, NULL, FILE_DEVICE_UNKNOWN, 0, FALSE, &Device),
                 STATUS_SUCCESS);
    if (Device != NULL && Blocks[0] != NULL)
    {
        GdbTargetObjectsReady(&Timer, &Dpc, GdbTargetDriver, Device, Blocks);
    }
    KT_EXPECT_EQ(KeCancelTimer(&Timer), TRUE);
    if (Device != NULL)
    {
        IoDeleteDevice(Device);
    }
    IoDeleteDriver(GdbTargetDriver);
    for (ULONG i = 0; i < GDB_TARGET_POOL_BLOCKS; i++)
    {
        if (Blocks[i] != NULL)
        {
            ExFreePoolWithTag(Blocks[i], GDB_TARGET_POOL_TAG);
        }
    }
    KT_EXPECT_EQ(Record.Runs, 0);
}

/* A bug check raised and caught: the session stops in the catcher and reads spindle-stop. */
KTEST(GdbTarget, caught_bug_check_for_spindle_stop)
{
    KT_EXPECT_BUGCHECK(MANUALLY_INITIATED_CRASH,
                       KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x5b1, 0x5b2, 0x5b3, 0x5b4));
}

/* Reads Address: the session's page fault, whose trap frame bt and spindle-stop go through. */
GDB_BREAK_SITE static VOID
GdbTargetTouch(volatile ULONG64 *Address)
{
    (void)*Address;
}

/* A page fault caught as a bug check: the session stops in the catcher, inside the exception. */
KTEST(GdbTarget, page_fault_caught_for_bt_and_spindle_stop)
{
    KT_EXPECT_BUGCHECK(PAGE_FAULT_IN_NONPAGED_AREA,
                       GdbTargetTouch((volatile ULONG64 *)0x00007fff00000000ull));
}

static KSPIN_LOCK GdbTargetOuterLock;
static KSPIN_LOCK GdbTargetInnerLock;

/* Break site: the verifier has recorded the order outer -> inner (checked build). */
GDB_BREAK_SITE static VOID
GdbTargetLockOrderRecorded(PKSPIN_LOCK Outer, PKSPIN_LOCK Inner, GDB_TARGET_RECORD *Record)
{
    Record->LockWord = __atomic_load_n(Outer, __ATOMIC_RELAXED);
    Record->QueueLock = __atomic_load_n(Inner, __ATOMIC_RELAXED);
}

KTEST(GdbTarget, lock_order_graph_holds_outer_then_inner)
{
    GDB_TARGET_RECORD Record = {0};
    KLOCK_QUEUE_HANDLE Handle;
    KIRQL OldIrql;

    KeInitializeSpinLock(&GdbTargetOuterLock);
    KeInitializeSpinLock(&GdbTargetInnerLock);
    KeAcquireSpinLock(&GdbTargetOuterLock, &OldIrql);
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&GdbTargetInnerLock, &Handle);
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
    KeReleaseSpinLock(&GdbTargetOuterLock, OldIrql);
#if DBG
    KT_EXPECT(!KiVerifierEnabled ||
              KiVerifierOrderRecorded(&GdbTargetOuterLock, &GdbTargetInnerLock));
#endif
    GdbTargetLockOrderRecorded(&GdbTargetOuterLock, &GdbTargetInnerLock, &Record);
    KT_EXPECT_EQ(Record.LockWord, 0);
    KT_EXPECT_EQ(Record.QueueLock, 0);
}
