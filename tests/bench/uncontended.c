/* SPDX-License-Identifier: MIT */
/*
 * Bench: uncontended costs, one processor, in TSC cycles per iteration.
 *
 * As the peer module measures them: each row is a noinline function with the
 * loop inside it, timed with serialising TSC reads (lfence; rdtsc; lfence ...
 * rdtscp; lfence). A row is calibrated so that one batch lasts about
 * bench_ms / 800 (250 us by default: short enough that most batches see
 * neither a clock tick nor the host descheduling the vCPU), warmed up with a
 * sixteenth of a batch, then timed over bench_reps (>= 5, default 15)
 * batches; the line reports the median, minimum and maximum cycles per
 * iteration. The loops run at PASSIVE_LEVEL with interrupts on (rows that
 * need DISPATCH_LEVEL raise once around the timed loop); the median hides
 * the batches a tick or the host disturbed.
 *
 * The floors of the same run come first: the empty loop, a bare xchg acquire
 * with a store release (raw_xchg, the module's name), the same pair behind
 * two noinline functions on a page of their own (raw_xchg_called: what a
 * call and a return add to each half of a lock API; bench.h, BENCH_CALLED),
 * lock cmpxchg, lock xadd and a pair of CR8 writes
 * (the cheapest IRQL raise and lower). The host side divides every row by
 * them, except for the ratio to raw_xchg, which each row measures itself
 * against raw_xchg batches run between its own (BenchRow, x_raw_xchg).
 */
#include "tests/bench/bench.h"

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define BENCH_MAX_ITERATIONS 1000000 // the module's iters
#define BENCH_WAIT_MS        10000   // bound on waiting for one DPC or interrupt
#define BENCH_VECTOR         0x8A    // device vector of the IPI round trip (IRQL 8)
#define BENCH_VECTOR_IRQL    8
#define BENCH_ZONE_BLOCKS    8
#define BENCH_ZONE_BLOCK     64

typedef struct _BENCH_UNC
{
    KSPIN_LOCK Lock __attribute__((aligned(BENCH_ALIGN)));
    ULONG64 XWord __attribute__((aligned(BENCH_ALIGN)));
    ULONG CWord __attribute__((aligned(BENCH_ALIGN)));
    LONG Atom __attribute__((aligned(BENCH_ALIGN)));
    LONG64 Atom64;
    PVOID Pointer;
    LONG64 Pair[2] __attribute__((aligned(16)));
    ULONG Ulong;
    LONG Long;
    LARGE_INTEGER Large;
    LIST_ENTRY ListHead __attribute__((aligned(BENCH_ALIGN)));
    LIST_ENTRY Entry;
    SINGLE_LIST_ENTRY SingleHead;
    SINGLE_LIST_ENTRY SingleEntry;
    SLIST_HEADER SListHead;
    SLIST_ENTRY SListEntry __attribute__((aligned(16)));
    ZONE_HEADER Zone;
    UCHAR ZoneSegment[sizeof(ZONE_SEGMENT_HEADER) + BENCH_ZONE_BLOCKS * BENCH_ZONE_BLOCK]
        __attribute__((aligned(16)));
    NPAGED_LOOKASIDE_LIST Lookaside;
    KDEVICE_QUEUE DeviceQueue;
    KDEVICE_QUEUE_ENTRY QueueEntry[2];
    KDPC Dpc;
    LONG volatile DpcRuns;
    PKINTERRUPT Interrupt;
    LONG volatile IsrRuns;
    LONG volatile IpiRuns;
    LONG volatile GenericDpcRuns;
    ULONG64 Iterations; // all iterations of the current row: calibration, warm-up and batches
    LONG64 Errors;      // a primitive that did not do its work
} BENCH_UNC;

static BENCH_UNC BenchU __attribute__((aligned(BENCH_ALIGN)));

typedef ULONG64 BENCH_LOOP(BENCH_UNC *U, ULONG64 Iterations);

/* Waits until *Counter differs from Before; counts an error after BENCH_WAIT_MS. */
static VOID
BenchWaitChange(BENCH_UNC *U, LONG volatile *Counter, LONG Before)
{
    ULONG64 Start = x86_rdtsc();

    /* Acquire: pairs with the release increment in the DPC or ISR. */
    while (__atomic_load_n(Counter, __ATOMIC_ACQUIRE) == Before)
    {
        if (x86_rdtsc() - Start > BENCH_WAIT_MS * BenchConfig.KHz)
        {
            U->Errors++;
            return;
        }
        x86_pause();
    }
}

/*
 * One row: a noinline function timing Iterations passes of the body. The _DPC
 * form raises to DISPATCH_LEVEL outside the timed loop.
 */
#define BENCH_ROW(Name, ...)                                                                       \
    static BENCH_TIMED ULONG64 Name(BENCH_UNC *U, ULONG64 Iterations)                              \
    {                                                                                              \
        ULONG64 Start = BenchTscBegin();                                                           \
        for (ULONG64 I = 0; I < Iterations; I++)                                                   \
        {                                                                                          \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
        return BenchTscEnd() - Start;                                                              \
    }

#define BENCH_ROW_DPC(Name, ...)                                                                   \
    static BENCH_TIMED ULONG64 Name(BENCH_UNC *U, ULONG64 Iterations)                              \
    {                                                                                              \
        KIRQL Raised;                                                                              \
        ULONG64 Start, End;                                                                        \
        KeRaiseIrql(DISPATCH_LEVEL, &Raised);                                                      \
        Start = BenchTscBegin();                                                                   \
        for (ULONG64 I = 0; I < Iterations; I++)                                                   \
        {                                                                                          \
            __VA_ARGS__;                                                                           \
        }                                                                                          \
        End = BenchTscEnd();                                                                       \
        KeLowerIrql(Raised);                                                                       \
        return End - Start;                                                                        \
    }

/* ---------------------------------------------------------------- floors */

BENCH_ROW(BenchEmptyLoop, x86_compiler_barrier())
BENCH_ROW(
    BenchRawXchg, while (__atomic_exchange_n(&U->XWord, 1, __ATOMIC_ACQUIRE) != 0) {
        do
        {
            x86_pause();
        } while (__atomic_load_n(&U->XWord, __ATOMIC_RELAXED) != 0);
    } __atomic_store_n(&U->XWord, 0, __ATOMIC_RELEASE))
/* raw_xchg's two halves as functions: the floor of any called lock API. */
static BENCH_CALLED VOID
BenchXchgAcquireCalled(ULONG64 *Word)
{
    /*
     * Acquire: pairs with the release store in BenchXchgReleaseCalled. One
     * processor runs this row, so the loop never turns. The exchange comes
     * first and the loop after it, as in KeAcquireSpinLockAtDpcLevel: written
     * as a plain while loop, the compiler entered it with a jump, and under
     * TCG that jump is one more translation block on every call, so the
     * floor could read above the API's acquire (medians over many boots:
     * 0.04 x raw_xchg lower this way at -smp 8, no change at -smp 2;
     * README.md, "Waiting").
     */
    if (__atomic_exchange_n(Word, 1, __ATOMIC_ACQUIRE) == 0)
    {
        return;
    }
    do
    {
        x86_pause();
    } while (__atomic_exchange_n(Word, 1, __ATOMIC_ACQUIRE) != 0);
}

static BENCH_CALLED VOID
BenchXchgReleaseCalled(ULONG64 *Word)
{
    /* Release: pairs with the acquiring exchange in BenchXchgAcquireCalled. */
    __atomic_store_n(Word, 0, __ATOMIC_RELEASE);
}

BENCH_ROW(BenchRawXchgCalled, BenchXchgAcquireCalled(&U->XWord); BenchXchgReleaseCalled(&U->XWord))
BENCH_ROW(
    BenchRawCmpxchg, ULONG Expected = 0;
    while (!__atomic_compare_exchange_n(&U->CWord, &Expected, 1, FALSE, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
        Expected = 0;
        x86_pause();
    } __atomic_store_n(&U->CWord, 0, __ATOMIC_RELEASE))
BENCH_ROW(BenchAtomicXadd, if (__atomic_add_fetch(&U->Atom, 1, __ATOMIC_SEQ_CST) == 0) U->Errors++)
/* A raise to DISPATCH_LEVEL and back as two bare CR8 writes (IRQL is CR8). */
BENCH_ROW(BenchCr8Pair, x86_write_cr8(DISPATCH_LEVEL); x86_write_cr8(PASSIVE_LEVEL))

/* ---------------------------------------------------------------- IRQL and ordinary spin locks */

BENCH_ROW(BenchRaiseLower, KIRQL Old; KeRaiseIrql(DISPATCH_LEVEL, &Old); KeLowerIrql(Old))
BENCH_ROW(BenchRaiseToDpcLevel, KIRQL Old = KeRaiseIrqlToDpcLevel(); KeLowerIrql(Old))
BENCH_ROW(BenchRaiseToSynchLevel, KIRQL Old = KeRaiseIrqlToSynchLevel(); KeLowerIrql(Old))
BENCH_ROW(BenchSpinLock, KIRQL Old; KeAcquireSpinLock(&U->Lock, &Old);
          KeReleaseSpinLock(&U->Lock, Old))
BENCH_ROW(BenchSpinLockRaiseToDpc, KIRQL Old = KeAcquireSpinLockRaiseToDpc(&U->Lock);
          KeReleaseSpinLock(&U->Lock, Old))
BENCH_ROW(BenchSpinLockRaiseToSynch, KIRQL Old = KeAcquireSpinLockRaiseToSynch(&U->Lock);
          KeReleaseSpinLock(&U->Lock, Old))
BENCH_ROW(BenchSpinLockForDpc, KIRQL Old = KeAcquireSpinLockForDpc(&U->Lock);
          KeReleaseSpinLockForDpc(&U->Lock, Old))
BENCH_ROW_DPC(BenchSpinLockAtDpcLevel, KeAcquireSpinLockAtDpcLevel(&U->Lock);
              KeReleaseSpinLockFromDpcLevel(&U->Lock))
BENCH_ROW_DPC(
    BenchTryToAcquireSpinLock,
    if (KeTryToAcquireSpinLockAtDpcLevel(&U->Lock)) {
        KeReleaseSpinLockFromDpcLevel(&U->Lock);
    } else { U->Errors++; })

/* ---------------------------------------------------------------- in-stack queued spin locks */

BENCH_ROW(BenchQueued, KLOCK_QUEUE_HANDLE Handle; KeAcquireInStackQueuedSpinLock(&U->Lock, &Handle);
          KeReleaseInStackQueuedSpinLock(&Handle))
BENCH_ROW(BenchQueuedRaiseToSynch, KLOCK_QUEUE_HANDLE Handle;
          KeAcquireInStackQueuedSpinLockRaiseToSynch(&U->Lock, &Handle);
          KeReleaseInStackQueuedSpinLock(&Handle))
BENCH_ROW(BenchQueuedForDpc, KLOCK_QUEUE_HANDLE Handle;
          KeAcquireInStackQueuedSpinLockForDpc(&U->Lock, &Handle);
          KeReleaseInStackQueuedSpinLockForDpc(&Handle))
BENCH_ROW_DPC(BenchQueuedAtDpcLevel, KLOCK_QUEUE_HANDLE Handle;
              KeAcquireInStackQueuedSpinLockAtDpcLevel(&U->Lock, &Handle);
              KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle))

/* ---------------------------------------------------------------- Interlocked* */

BENCH_ROW(BenchIncrement, InterlockedIncrement(&U->Atom))
BENCH_ROW(BenchDecrement, InterlockedDecrement(&U->Atom))
BENCH_ROW(BenchExchange, InterlockedExchange(&U->Atom, (LONG)I))
BENCH_ROW(BenchCompareExchange, InterlockedCompareExchange(&U->Atom, (LONG)I, U->Atom))
BENCH_ROW(BenchExchangeAdd, InterlockedExchangeAdd(&U->Atom, 3))
BENCH_ROW(BenchAdd, InterlockedAdd(&U->Atom, 3))
BENCH_ROW(BenchAnd, InterlockedAnd(&U->Atom, 0x7fffffff))
BENCH_ROW(BenchOr, InterlockedOr(&U->Atom, 1))
BENCH_ROW(BenchXor, InterlockedXor(&U->Atom, 1))
BENCH_ROW(BenchBitTestAndSet, InterlockedBitTestAndSet(&U->Atom, 5))
BENCH_ROW(BenchBitTestAndReset, InterlockedBitTestAndReset(&U->Atom, 5))
BENCH_ROW(BenchIncrement64, InterlockedIncrement64(&U->Atom64))
BENCH_ROW(BenchDecrement64, InterlockedDecrement64(&U->Atom64))
BENCH_ROW(BenchExchange64, InterlockedExchange64(&U->Atom64, (LONG64)I))
BENCH_ROW(BenchCompareExchange64, InterlockedCompareExchange64(&U->Atom64, (LONG64)I, U->Atom64))
BENCH_ROW(BenchExchangeAdd64, InterlockedExchangeAdd64(&U->Atom64, 3))
BENCH_ROW(BenchAdd64, InterlockedAdd64(&U->Atom64, 3))
BENCH_ROW(BenchAnd64, InterlockedAnd64(&U->Atom64, 0x7fffffffffffffffll))
BENCH_ROW(BenchOr64, InterlockedOr64(&U->Atom64, 1))
BENCH_ROW(BenchXor64, InterlockedXor64(&U->Atom64, 1))
BENCH_ROW(BenchExchangePointer, InterlockedExchangePointer(&U->Pointer, (PVOID)I))
BENCH_ROW(BenchCompareExchangePointer,
          InterlockedCompareExchangePointer(&U->Pointer, (PVOID)I, U->Pointer))
BENCH_ROW(BenchCompareExchange128, LONG64 Comparand[2] = {U->Pair[0], U->Pair[1]};
          if (!InterlockedCompareExchange128(U->Pair, (LONG64)I, (LONG64)I, Comparand)) U->Errors++)

/* ---------------------------------------------------------------- ExInterlocked* */

BENCH_ROW(BenchExAddUlong, ExInterlockedAddUlong(&U->Ulong, 1, &U->Lock))
BENCH_ROW(BenchExAddLargeInteger, LARGE_INTEGER One; One.QuadPart = 1;
          ExInterlockedAddLargeInteger(&U->Large, One, &U->Lock))
BENCH_ROW(BenchExAddLargeStatistic, ExInterlockedAddLargeStatistic(&U->Large, 1))
BENCH_ROW(BenchExIncrementLong, ExInterlockedIncrementLong(&U->Long, &U->Lock))
BENCH_ROW(BenchExDecrementLong, ExInterlockedDecrementLong(&U->Long, &U->Lock))
BENCH_ROW(BenchExExchangeUlong, ExInterlockedExchangeUlong(&U->Ulong, (ULONG)I, &U->Lock))
BENCH_ROW(BenchExCompareExchange64, LONGLONG Exchange = (LONGLONG)I; LONGLONG Comparand = U->Atom64;
          ExInterlockedCompareExchange64(&U->Atom64, &Exchange, &Comparand, &U->Lock))
BENCH_ROW(BenchExInsertHeadList, ExInterlockedInsertHeadList(&U->ListHead, &U->Entry, &U->Lock);
          if (ExInterlockedRemoveHeadList(&U->ListHead, &U->Lock) != &U->Entry) U->Errors++)
BENCH_ROW(BenchExInsertTailList, ExInterlockedInsertTailList(&U->ListHead, &U->Entry, &U->Lock);
          if (ExInterlockedRemoveHeadList(&U->ListHead, &U->Lock) != &U->Entry) U->Errors++)
BENCH_ROW(BenchExPushEntryList,
          ExInterlockedPushEntryList(&U->SingleHead, &U->SingleEntry, &U->Lock);
          if (ExInterlockedPopEntryList(&U->SingleHead, &U->Lock) != &U->SingleEntry) U->Errors++)
BENCH_ROW(BenchExPushEntrySList,
          ExInterlockedPushEntrySList(&U->SListHead, &U->SListEntry, &U->Lock);
          if (ExInterlockedPopEntrySList(&U->SListHead, &U->Lock) != &U->SListEntry) U->Errors++)
BENCH_ROW(BenchPushEntrySList, InterlockedPushEntrySList(&U->SListHead, &U->SListEntry);
          if (InterlockedPopEntrySList(&U->SListHead) != &U->SListEntry) U->Errors++)

/* ---------------------------------------------------------------- allocators */

BENCH_ROW(BenchZone, PVOID Block = ExAllocateFromZone(&U->Zone); if (Block == NULL) U->Errors++;
          else ExFreeToZone(&U->Zone, Block))
BENCH_ROW(BenchInterlockedZone, PVOID Block = ExInterlockedAllocateFromZone(&U->Zone, &U->Lock);
          if (Block == NULL) U->Errors++; else ExInterlockedFreeToZone(&U->Zone, Block, &U->Lock))
BENCH_ROW(BenchLookaside, PVOID Block = ExAllocateFromNPagedLookasideList(&U->Lookaside);
          if (Block == NULL) U->Errors++; else ExFreeToNPagedLookasideList(&U->Lookaside, Block))
BENCH_ROW(BenchPool, PVOID Block = ExAllocatePoolWithTag(NonPagedPool, 64, 'hcnB');
          if (Block == NULL) U->Errors++; else ExFreePoolWithTag(Block, 'hcnB'))

/* ---------------------------------------------------------------- device queue, IRP */

/* The queue is busy (Prepare inserted a first entry), so each insert queues and each remove
 * dequeues. */
BENCH_ROW_DPC(
    BenchDeviceQueue, if (!KeInsertDeviceQueue(&U->DeviceQueue, &U->QueueEntry[1])) {
        U->Errors++;
    } if (KeRemoveDeviceQueue(&U->DeviceQueue) != &U->QueueEntry[1]) U->Errors++)

/* The originator allocates, the driver (one stack location) completes, the originator frees. */
BENCH_ROW(
    BenchIrp, PIRP Irp = IoAllocateIrp(1, FALSE); if (Irp == NULL) {
        U->Errors++;
        continue;
    } IoSetNextIrpStackLocation(Irp);
    Irp->IoStatus.Status = STATUS_SUCCESS; IoCompleteRequest(Irp, IO_NO_INCREMENT); IoFreeIrp(Irp))

/* ---------------------------------------------------------------- DPCs and IPIs */

static VOID
BenchDpcRoutine(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    BENCH_UNC *U = Context;

    /* Release: pairs with the acquire load in BenchWaitChange. */
    __atomic_add_fetch(&U->DpcRuns, 1, __ATOMIC_RELEASE);
}

/* Insert at PASSIVE_LEVEL until the DPC has run (on this processor or the target set). */
BENCH_ROW(BenchDpc, LONG Before = __atomic_load_n(&U->DpcRuns, __ATOMIC_ACQUIRE);
          if (!KeInsertQueueDpc(&U->Dpc, NULL, NULL)) U->Errors++;
          else BenchWaitChange(U, &U->DpcRuns, Before))

static BOOLEAN
BenchIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    BENCH_UNC *U = Context;

    /* Release: pairs with the acquire load in BenchWaitChange. */
    __atomic_add_fetch(&U->IsrRuns, 1, __ATOMIC_RELEASE);
    return TRUE;
}

/* A fixed interrupt sent to processor 1 and the wait until its ISR has run. */
BENCH_ROW(BenchIpiRoundTrip, LONG Before = __atomic_load_n(&U->IsrRuns, __ATOMIC_ACQUIRE);
          KiRequestInterrupt(1, BENCH_VECTOR); BenchWaitChange(U, &U->IsrRuns, Before))

static ULONG_PTR
BenchIpiWorker(ULONG_PTR Argument)
{
    /* Relaxed: read after KeIpiGenericCall has returned on every processor. */
    __atomic_add_fetch((LONG volatile *)Argument, 1, __ATOMIC_RELAXED);
    return 0;
}

BENCH_ROW(BenchIpiGenericCall, KeIpiGenericCall(BenchIpiWorker, (ULONG_PTR)&U->IpiRuns))

/* One synchronisation, the shape of most KeGenericCallDpc routines. */
static VOID
BenchGenericDpcWorker(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    /* Relaxed: read after KeGenericCallDpc has returned. */
    __atomic_add_fetch((LONG volatile *)Context, 1, __ATOMIC_RELAXED);
    KeSignalCallDpcSynchronize(SystemArgument2);
    KeSignalCallDpcDone(SystemArgument1);
}

BENCH_ROW(BenchGenericCallDpc, KeGenericCallDpc(BenchGenericDpcWorker, (PVOID)&U->GenericDpcRuns))

/* ---------------------------------------------------------------- the table */

typedef VOID BENCH_HOOK(BENCH_UNC *U);

static VOID
BenchPrepareZone(BENCH_UNC *U)
{
    if (!NT_SUCCESS(
            ExInitializeZone(&U->Zone, BENCH_ZONE_BLOCK, U->ZoneSegment, sizeof(U->ZoneSegment))))
    {
        U->Errors++;
    }
}

static VOID
BenchPrepareLookaside(BENCH_UNC *U)
{
    ExInitializeNPagedLookasideList(&U->Lookaside, NULL, NULL, 0, 64, 'hcnB', 0);
}

static VOID
BenchFinishLookaside(BENCH_UNC *U)
{
    ExDeleteNPagedLookasideList(&U->Lookaside);
}

static VOID
BenchPrepareDeviceQueue(BENCH_UNC *U)
{
    KIRQL Old;

    KeInitializeDeviceQueue(&U->DeviceQueue);
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    if (KeInsertDeviceQueue(&U->DeviceQueue, &U->QueueEntry[0])) // idle: becomes busy, not queued
    {
        U->Errors++;
    }
    KeLowerIrql(Old);
}

static VOID
BenchFinishDeviceQueue(BENCH_UNC *U)
{
    KIRQL Old;

    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    if (KeRemoveDeviceQueue(&U->DeviceQueue) != NULL) // empty: becomes idle
    {
        U->Errors++;
    }
    KeLowerIrql(Old);
}

static VOID
BenchPrepareLocalDpc(BENCH_UNC *U)
{
    KeInitializeDpc(&U->Dpc, BenchDpcRoutine, U);
}

static VOID
BenchPrepareRemoteDpc(BENCH_UNC *U)
{
    KeInitializeDpc(&U->Dpc, BenchDpcRoutine, U);
    KeSetTargetProcessorDpc(&U->Dpc, 1);
}

static VOID
BenchFinishDpc(BENCH_UNC *U)
{
    if ((ULONG64)U->DpcRuns != U->Iterations)
    {
        U->Errors++;
    }
}

static VOID
BenchPrepareInterrupt(BENCH_UNC *U)
{
    if (!NT_SUCCESS(IoConnectInterrupt(&U->Interrupt, BenchIsr, U, NULL, BENCH_VECTOR,
                                       BENCH_VECTOR_IRQL, BENCH_VECTOR_IRQL, Latched, FALSE,
                                       ~(KAFFINITY)0, FALSE)))
    {
        U->Interrupt = NULL;
        U->Errors++;
    }
}

static VOID
BenchFinishInterrupt(BENCH_UNC *U)
{
    if (U->Interrupt != NULL)
    {
        IoDisconnectInterrupt(U->Interrupt);
    }
    if ((ULONG64)U->IsrRuns != U->Iterations)
    {
        U->Errors++;
    }
}

static VOID
BenchFinishIpiGenericCall(BENCH_UNC *U)
{
    if ((ULONG64)U->IpiRuns != U->Iterations * KeQueryActiveProcessorCount(NULL))
    {
        U->Errors++;
    }
}

static VOID
BenchFinishGenericCallDpc(BENCH_UNC *U)
{
    if ((ULONG64)U->GenericDpcRuns != U->Iterations * KeQueryActiveProcessorCount(NULL))
    {
        U->Errors++;
    }
}

#define BENCH_ONE 1 // processors a row involves: this one
#define BENCH_TWO 2 // this one and processor 1
#define BENCH_ALL 0 // every processor

typedef struct _BENCH_UOP
{
    const char *Name;
    BENCH_LOOP *Loop;
    ULONG Cpus; // BENCH_ONE, BENCH_TWO or BENCH_ALL
    BENCH_HOOK *Prepare;
    BENCH_HOOK *Finish;
} BENCH_UOP;

/* The floors first: the host side divides every row by them. */
static const BENCH_UOP BenchRows[] = {
    {"empty_loop", BenchEmptyLoop, BENCH_ONE, NULL, NULL},
    {"raw_xchg", BenchRawXchg, BENCH_ONE, NULL, NULL},
    {"raw_xchg_called", BenchRawXchgCalled, BENCH_ONE, NULL, NULL},
    {"raw_cmpxchg", BenchRawCmpxchg, BENCH_ONE, NULL, NULL},
    {"atomic_xadd", BenchAtomicXadd, BENCH_ONE, NULL, NULL},
    {"cr8_pair", BenchCr8Pair, BENCH_ONE, NULL, NULL},
    {"KeRaiseIrql+KeLowerIrql", BenchRaiseLower, BENCH_ONE, NULL, NULL},
    {"KeRaiseIrqlToDpcLevel+KeLowerIrql", BenchRaiseToDpcLevel, BENCH_ONE, NULL, NULL},
    {"KeRaiseIrqlToSynchLevel+KeLowerIrql", BenchRaiseToSynchLevel, BENCH_ONE, NULL, NULL},
    {"KeAcquireSpinLock", BenchSpinLock, BENCH_ONE, NULL, NULL},
    {"KeAcquireSpinLockRaiseToDpc", BenchSpinLockRaiseToDpc, BENCH_ONE, NULL, NULL},
    {"KeAcquireSpinLockAtDpcLevel", BenchSpinLockAtDpcLevel, BENCH_ONE, NULL, NULL},
    {"KeTryToAcquireSpinLockAtDpcLevel", BenchTryToAcquireSpinLock, BENCH_ONE, NULL, NULL},
    {"KeAcquireSpinLockRaiseToSynch", BenchSpinLockRaiseToSynch, BENCH_ONE, NULL, NULL},
    {"KeAcquireSpinLockForDpc", BenchSpinLockForDpc, BENCH_ONE, NULL, NULL},
    {"KeAcquireInStackQueuedSpinLock", BenchQueued, BENCH_ONE, NULL, NULL},
    {"KeAcquireInStackQueuedSpinLockAtDpcLevel", BenchQueuedAtDpcLevel, BENCH_ONE, NULL, NULL},
    {"KeAcquireInStackQueuedSpinLockRaiseToSynch", BenchQueuedRaiseToSynch, BENCH_ONE, NULL, NULL},
    {"KeAcquireInStackQueuedSpinLockForDpc", BenchQueuedForDpc, BENCH_ONE, NULL, NULL},
    {"InterlockedIncrement", BenchIncrement, BENCH_ONE, NULL, NULL},
    {"InterlockedDecrement", BenchDecrement, BENCH_ONE, NULL, NULL},
    {"InterlockedExchange", BenchExchange, BENCH_ONE, NULL, NULL},
    {"InterlockedCompareExchange", BenchCompareExchange, BENCH_ONE, NULL, NULL},
    {"InterlockedExchangeAdd", BenchExchangeAdd, BENCH_ONE, NULL, NULL},
    {"InterlockedAdd", BenchAdd, BENCH_ONE, NULL, NULL},
    {"InterlockedAnd", BenchAnd, BENCH_ONE, NULL, NULL},
    {"InterlockedOr", BenchOr, BENCH_ONE, NULL, NULL},
    {"InterlockedXor", BenchXor, BENCH_ONE, NULL, NULL},
    {"InterlockedBitTestAndSet", BenchBitTestAndSet, BENCH_ONE, NULL, NULL},
    {"InterlockedBitTestAndReset", BenchBitTestAndReset, BENCH_ONE, NULL, NULL},
    {"InterlockedIncrement64", BenchIncrement64, BENCH_ONE, NULL, NULL},
    {"InterlockedDecrement64", BenchDecrement64, BENCH_ONE, NULL, NULL},
    {"InterlockedExchange64", BenchExchange64, BENCH_ONE, NULL, NULL},
    {"InterlockedCompareExchange64", BenchCompareExchange64, BENCH_ONE, NULL, NULL},
    {"InterlockedExchangeAdd64", BenchExchangeAdd64, BENCH_ONE, NULL, NULL},
    {"InterlockedAdd64", BenchAdd64, BENCH_ONE, NULL, NULL},
    {"InterlockedAnd64", BenchAnd64, BENCH_ONE, NULL, NULL},
    {"InterlockedOr64", BenchOr64, BENCH_ONE, NULL, NULL},
    {"InterlockedXor64", BenchXor64, BENCH_ONE, NULL, NULL},
    {"InterlockedExchangePointer", BenchExchangePointer, BENCH_ONE, NULL, NULL},
    {"InterlockedCompareExchangePointer", BenchCompareExchangePointer, BENCH_ONE, NULL, NULL},
    {"InterlockedCompareExchange128", BenchCompareExchange128, BENCH_ONE, NULL, NULL},
    {"ExInterlockedAddUlong", BenchExAddUlong, BENCH_ONE, NULL, NULL},
    {"ExInterlockedAddLargeInteger", BenchExAddLargeInteger, BENCH_ONE, NULL, NULL},
    {"ExInterlockedAddLargeStatistic", BenchExAddLargeStatistic, BENCH_ONE, NULL, NULL},
    {"ExInterlockedIncrementLong", BenchExIncrementLong, BENCH_ONE, NULL, NULL},
    {"ExInterlockedDecrementLong", BenchExDecrementLong, BENCH_ONE, NULL, NULL},
    {"ExInterlockedExchangeUlong", BenchExExchangeUlong, BENCH_ONE, NULL, NULL},
    {"ExInterlockedCompareExchange64", BenchExCompareExchange64, BENCH_ONE, NULL, NULL},
    {"ExInterlockedInsertHeadList+RemoveHeadList", BenchExInsertHeadList, BENCH_ONE, NULL, NULL},
    {"ExInterlockedInsertTailList+RemoveHeadList", BenchExInsertTailList, BENCH_ONE, NULL, NULL},
    {"ExInterlockedPushEntryList+PopEntryList", BenchExPushEntryList, BENCH_ONE, NULL, NULL},
    {"ExInterlockedPushEntrySList+PopEntrySList", BenchExPushEntrySList, BENCH_ONE, NULL, NULL},
    {"InterlockedPushEntrySList+PopEntrySList", BenchPushEntrySList, BENCH_ONE, NULL, NULL},
    {"ExAllocateFromZone+ExFreeToZone", BenchZone, BENCH_ONE, BenchPrepareZone, NULL},
    {"ExInterlockedAllocateFromZone+FreeToZone", BenchInterlockedZone, BENCH_ONE, BenchPrepareZone,
     NULL},
    {"ExAllocateFromNPagedLookasideList+Free", BenchLookaside, BENCH_ONE, BenchPrepareLookaside,
     BenchFinishLookaside},
    {"ExAllocatePoolWithTag+ExFreePoolWithTag", BenchPool, BENCH_ONE, NULL, NULL},
    {"KeInsertDeviceQueue+KeRemoveDeviceQueue", BenchDeviceQueue, BENCH_ONE,
     BenchPrepareDeviceQueue, BenchFinishDeviceQueue},
    {"IoAllocateIrp+IoCompleteRequest+IoFreeIrp", BenchIrp, BENCH_ONE, NULL, NULL},
    {"KeInsertQueueDpc_local", BenchDpc, BENCH_ONE, BenchPrepareLocalDpc, BenchFinishDpc},
    {"KeInsertQueueDpc_remote", BenchDpc, BENCH_TWO, BenchPrepareRemoteDpc, BenchFinishDpc},
    {"ipi_round_trip", BenchIpiRoundTrip, BENCH_TWO, BenchPrepareInterrupt, BenchFinishInterrupt},
    {"KeIpiGenericCall", BenchIpiGenericCall, BENCH_ALL, NULL, BenchFinishIpiGenericCall},
    {"KeGenericCallDpc", BenchGenericCallDpc, BENCH_ALL, NULL, BenchFinishGenericCallDpc},
};

/*
 * raw_xchg's batch size once its row has calibrated it (0 before): from then
 * on every row runs a raw_xchg batch just before each of its own batches.
 */
static ULONG64 BenchFloorIterations;

static ULONG64
BenchRun(const BENCH_UOP *Op, BENCH_UNC *U, ULONG64 Iterations)
{
    U->Iterations += Iterations;
    return Op->Loop(U, Iterations);
}

static VOID
BenchRow(const BENCH_UOP *Op)
{
    BENCH_UNC *U = &BenchU;
    ULONG64 Target = BenchConfig.WindowMs * BenchConfig.KHz / 800; // cycles of one batch
    ULONG64 Iterations = 1, Cycles, Batch[BENCH_MAX_REPS], Ratio[BENCH_MAX_REPS];
    ULONG Reps = BenchConfig.Reps, Cpus;
    char Text[5][32];

    memset(U, 0, sizeof(*U));
    KeInitializeSpinLock(&U->Lock);
    InitializeListHead(&U->ListHead);
    InitializeSListHead(&U->SListHead);
    if (Op->Prepare != NULL)
    {
        Op->Prepare(U);
    }

    /*
     * Calibrate: double until a pass takes a quarter of a batch, then scale to
     * a batch. Each step keeps the faster of two passes, so a clock tick or the
     * host descheduling this vCPU does not shrink the batch.
     */
    for (;;)
    {
        ULONG64 Again;

        Cycles = BenchRun(Op, U, Iterations);
        Again = BenchRun(Op, U, Iterations);
        Cycles = Again < Cycles ? Again : Cycles;
        if (Cycles >= Target / 4 || Iterations >= BENCH_MAX_ITERATIONS)
        {
            break;
        }
        Iterations *= 2;
    }
    Iterations = Cycles == 0 ? BENCH_MAX_ITERATIONS : Iterations * Target / Cycles;
    Iterations = Iterations < 1                      ? 1
                 : Iterations > BENCH_MAX_ITERATIONS ? BENCH_MAX_ITERATIONS
                                                     : Iterations;

    if (Op->Loop == BenchRawXchg)
    {
        BenchFloorIterations = Iterations;
    }

    /*
     * The batches. Each one follows a raw_xchg batch, and the row's ratio to
     * the floor (x_raw_xchg, in hundredths) is the median over the pairs of
     * batch over floor batch: a stretch in which the host slows this vCPU
     * (it can last longer than a whole row) slows both halves of a pair
     * alike, where a row divided by a floor measured earlier in the run
     * would read it as the row's own cost. The floor batch does not count in
     * U->Iterations.
     */
    BenchRun(Op, U, Iterations / 16 + 1); // warm-up: caches, branch predictors, translations
    for (ULONG R = 0; R < Reps; R++)
    {
        ULONG64 Floor = BenchFloorIterations != 0 ? BenchRawXchg(U, BenchFloorIterations) : 0;

        Batch[R] = BenchRun(Op, U, Iterations);
        Ratio[R] = Floor == 0 ? 0 : Batch[R] * BenchFloorIterations * 100 / (Floor * Iterations);
    }
    if (Op->Finish != NULL)
    {
        Op->Finish(U);
    }
    BenchSortU64(Batch, Reps);
    BenchSortU64(Ratio, Reps);
    if (BenchFloorIterations != 0)
    {
        snprintf(Text[4], sizeof(Text[4]), " x_raw_xchg=%s",
                 BenchFixed(Text[3], sizeof(Text[3]), Ratio[Reps / 2]));
    }
    else
    {
        Text[4][0] = '\0';
    }

    Cpus = Op->Cpus == BENCH_ALL ? KeQueryActiveProcessorCount(NULL) : Op->Cpus;
    DbgPrint("lockbench: name=%s mode=uncontended cpus=%u cpu=%u iters=%llu reps=%u "
             "cycles_per_op=%s min_cycles_per_op=%s max_cycles_per_op=%s ns_per_op=%s%s tag=%s\n",
             Op->Name, Cpus, KeGetCurrentProcessorNumber(), Iterations, Reps,
             BenchFixed(Text[0], sizeof(Text[0]), Batch[Reps / 2] * 100 / Iterations),
             BenchFixed(Text[1], sizeof(Text[1]), Batch[0] * 100 / Iterations),
             BenchFixed(Text[2], sizeof(Text[2]), Batch[Reps - 1] * 100 / Iterations),
             BenchFixed(Text[3], sizeof(Text[3]),
                        Batch[Reps / 2] * 100 * 1000000 / BenchConfig.KHz / Iterations),
             Text[4], BenchTag());

    /* Each primitive did its work every time, and left its objects as it found them. */
    KT_EXPECT_EQ(U->Errors, 0);
    KT_EXPECT_EQ(U->Lock, 0);
    KT_EXPECT_EQ(U->XWord, 0);
    KT_EXPECT_EQ(U->CWord, 0);
    KT_EXPECT(IsListEmpty(&U->ListHead));
    KT_EXPECT(U->SingleHead.Next == NULL);
    KT_EXPECT_EQ(QueryDepthSList(&U->SListHead), 0);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    if (U->Errors != 0)
    {
        KtLog("bench: %s: %lld failed operations", Op->Name, U->Errors);
    }
}

/*
 * Sorted last in the suite, so its final line ends the run as the module's
 * does.
 */
KTEST_EX(Bench, uncontended, KTEST_SLOW, 0)
{
    BenchEnter();
    BenchFloorIterations = 0; // set again by the raw_xchg row (a repeated run starts afresh)
    for (ULONG Op = 0; Op < sizeof(BenchRows) / sizeof(BenchRows[0]); Op++)
    {
        if (BenchRows[Op].Cpus == BENCH_TWO && KeQueryActiveProcessorCount(NULL) < 2)
        {
            KtLog("bench: %s needs 2 processors; skipped", BenchRows[Op].Name);
            continue;
        }
        BenchRow(&BenchRows[Op]);
    }
    DbgPrint("lockbench: name=done tag=%s\n", BenchTag());
}
