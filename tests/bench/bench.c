/* SPDX-License-Identifier: MIT */
/*
 * Bench: the microbenchmarks of `make bench` (DESIGN.md §7). They are ordinary
 * tests in the suite Bench that skip unless the kernel command line holds
 * `bench=1`, so `make test` reports them as skipped and never spends time on
 * them. Each data point runs for a fixed window of time (`bench_ms=`, default
 * 200) rather than a fixed count, because under TCG the rate of one primitive
 * varies a hundredfold with the processor count and the host's load.
 *
 * Every result is one machine-readable line that scripts/bench-report.sh
 * turns into a table, a CSV file and bar charts:
 *
 *     # bench config build=free cpus=8 window_ms=200 tsc_hz=2000099227
 *     # bench uncontended op=KeAcquireSpinLock cpus=1 ops=N ns=N ns_per_op=X.Y
 *     (cpus=all active processors for KeIpiGenericCall)
 *     # bench contended lock=KeAcquireSpinLock cpus=4 ops=N ns=N ns_per_op=X.Y
 *           ops_per_s=N min=N max=N fairness_pct=N
 *
 * (the contended line is one line). ns_per_op of a contended point is the
 * window divided by all acquisitions of all processors; fairness_pct is the
 * fewest acquisitions of one processor as a percentage of the most. The tests
 * check only that each primitive did its work (the counts add up); speed
 * never fails a test.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define BENCH_DEFAULT_MS 200
#define BENCH_MIN_MS     10
#define BENCH_MAX_MS     5000
#define BENCH_MAX_CPUS   64
#define BENCH_CS_WORDS   4     // words the contended critical section updates
#define BENCH_DPC_WAIT   10000 // ms: bound on waiting for one local DPC to run

/* ---------------------------------------------------------------- common */

static ULONG64 BenchFrequency; // TSC counts per second

static ULONG64
BenchNow(VOID)
{
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;

    BenchFrequency = (ULONG64)Frequency.QuadPart;
    return Now;
}

/* Converts a TSC interval to nanoseconds (exact for intervals below ~5 hours at 2 GHz). */
static ULONG64
BenchTicksToNs(ULONG64 Ticks)
{
    ULONG64 PerMs = BenchFrequency / 1000;

    return PerMs == 0 ? 0 : Ticks * 1000000 / PerMs;
}

/* Skips the calling test unless the command line asks for benchmarks; returns the window. */
static ULONG64
BenchEnter(VOID)
{
    ULONG64 WindowMs;

    if (KtCommandLineValue("bench", 0) != 1)
    {
        KT_SKIP("benchmarks run with make bench");
    }
    WindowMs = KtCommandLineValue("bench_ms", BENCH_DEFAULT_MS);
    if (WindowMs < BENCH_MIN_MS)
    {
        WindowMs = BENCH_MIN_MS;
    }
    if (WindowMs > BENCH_MAX_MS)
    {
        WindowMs = BENCH_MAX_MS;
    }
    BenchNow();
    return WindowMs;
}

/* Formats Numerator/Denominator with one decimal into Buffer. */
static const char *
BenchDecimal(char *Buffer, size_t Size, ULONG64 Numerator, ULONG64 Denominator)
{
    ULONG64 Tenths = Denominator == 0 ? 0 : (Numerator * 10 + Denominator / 2) / Denominator;

    snprintf(Buffer, Size, "%llu.%llu", Tenths / 10, Tenths % 10);
    return Buffer;
}

/* ---------------------------------------------------------------- uncontended pairs */

typedef struct _BENCH_STATE
{
    KSPIN_LOCK Lock;
    LONG volatile Counter;
    LIST_ENTRY ListHead;
    LIST_ENTRY Entry;
    KDPC Dpc;
    LONG volatile DpcRuns;
    LONG64 Errors;
} BENCH_STATE;

typedef VOID BENCH_ROUTINE(BENCH_STATE *State, ULONG Count);

static VOID
BenchSpinLock(BENCH_STATE *State, ULONG Count)
{
    KIRQL OldIrql;

    for (ULONG I = 0; I < Count; I++)
    {
        KeAcquireSpinLock(&State->Lock, &OldIrql);
        KeReleaseSpinLock(&State->Lock, OldIrql);
    }
}

static VOID
BenchSpinLockAtDpcLevel(BENCH_STATE *State, ULONG Count)
{
    KIRQL OldIrql;

    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    for (ULONG I = 0; I < Count; I++)
    {
        KeAcquireSpinLockAtDpcLevel(&State->Lock);
        KeReleaseSpinLockFromDpcLevel(&State->Lock);
    }
    KeLowerIrql(OldIrql);
}

static VOID
BenchQueuedLock(BENCH_STATE *State, ULONG Count)
{
    KLOCK_QUEUE_HANDLE Handle;

    for (ULONG I = 0; I < Count; I++)
    {
        KeAcquireInStackQueuedSpinLock(&State->Lock, &Handle);
        KeReleaseInStackQueuedSpinLock(&Handle);
    }
}

static VOID
BenchInterlockedIncrement(BENCH_STATE *State, ULONG Count)
{
    for (ULONG I = 0; I < Count; I++)
    {
        InterlockedIncrement(&State->Counter);
    }
}

static VOID
BenchExInterlockedList(BENCH_STATE *State, ULONG Count)
{
    for (ULONG I = 0; I < Count; I++)
    {
        ExInterlockedInsertTailList(&State->ListHead, &State->Entry, &State->Lock);
        if (ExInterlockedRemoveHeadList(&State->ListHead, &State->Lock) != &State->Entry)
        {
            State->Errors++;
        }
    }
}

static VOID
BenchRaiseLower(BENCH_STATE *State, ULONG Count)
{
    KIRQL OldIrql;

    for (ULONG I = 0; I < Count; I++)
    {
        KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
        KeLowerIrql(OldIrql);
    }
}

static VOID
BenchDpcRoutine(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    BENCH_STATE *State = Context;

    /* Release: pairs with the acquire load in BenchLocalDpc. */
    __atomic_add_fetch(&State->DpcRuns, 1, __ATOMIC_RELEASE);
}

/* Inserts the DPC on this processor at PASSIVE_LEVEL and waits until it has run. */
static VOID
BenchLocalDpc(BENCH_STATE *State, ULONG Count)
{
    for (ULONG I = 0; I < Count; I++)
    {
        LONG Before = __atomic_load_n(&State->DpcRuns, __ATOMIC_ACQUIRE);
        ULONG64 Start;

        if (!KeInsertQueueDpc(&State->Dpc, NULL, NULL))
        {
            State->Errors++;
            continue;
        }
        /* A local DPC normally runs before the insert returns; bounded in case it does not. */
        Start = BenchNow();
        while (__atomic_load_n(&State->DpcRuns, __ATOMIC_ACQUIRE) == Before)
        {
            if (BenchTicksToNs(BenchNow() - Start) > (ULONG64)BENCH_DPC_WAIT * 1000000)
            {
                State->Errors++;
                return;
            }
            x86_pause();
        }
    }
}

static ULONG_PTR
BenchIpiWorker(ULONG_PTR Argument)
{
    /* Relaxed: the count is read after KeIpiGenericCall has returned on every processor. */
    __atomic_add_fetch((LONG volatile *)Argument, 1, __ATOMIC_RELAXED);
    return 0;
}

static VOID
BenchIpiGenericCall(BENCH_STATE *State, ULONG Count)
{
    for (ULONG I = 0; I < Count; I++)
    {
        KeIpiGenericCall(BenchIpiWorker, (ULONG_PTR)&State->Counter);
    }
}

typedef struct _BENCH_OP
{
    const char *Name;
    BENCH_ROUTINE *Routine;
    ULONG Batch; // calls between two looks at the clock
} BENCH_OP;

static const BENCH_OP BenchOps[] = {
    {"KeAcquireSpinLock", BenchSpinLock, 64},
    {"KeAcquireSpinLockAtDpcLevel", BenchSpinLockAtDpcLevel, 64},
    {"KeAcquireInStackQueuedSpinLock", BenchQueuedLock, 64},
    {"InterlockedIncrement", BenchInterlockedIncrement, 64},
    {"ExInterlockedInsertTailList+RemoveHeadList", BenchExInterlockedList, 64},
    {"KeRaiseIrql+KeLowerIrql", BenchRaiseLower, 64},
    {"KeInsertQueueDpc_local", BenchLocalDpc, 4},
    {"KeIpiGenericCall", BenchIpiGenericCall, 1},
};

static VOID
BenchPrintConfig(ULONG64 WindowMs)
{
    KtLog("bench config build=%s cpus=%u window_ms=%llu tsc_hz=%llu", DBG ? "checked" : "free",
          KeQueryActiveProcessorCount(NULL), WindowMs, BenchFrequency);
}

KTEST(Bench, uncontended_pairs)
{
    ULONG64 WindowMs = BenchEnter();
    BENCH_STATE State;
    char Text[32];

    BenchPrintConfig(WindowMs);
    for (ULONG Op = 0; Op < sizeof(BenchOps) / sizeof(BenchOps[0]); Op++)
    {
        ULONG64 Operations = 0;
        ULONG64 Start, Now, Ns;

        memset(&State, 0, sizeof(State));
        KeInitializeSpinLock(&State.Lock);
        InitializeListHead(&State.ListHead);
        KeInitializeDpc(&State.Dpc, BenchDpcRoutine, &State);

        Start = BenchNow();
        do
        {
            BenchOps[Op].Routine(&State, BenchOps[Op].Batch);
            Operations += BenchOps[Op].Batch;
            Now = BenchNow();
        } while (BenchTicksToNs(Now - Start) < WindowMs * 1000000);
        Ns = BenchTicksToNs(Now - Start);

        /* cpus= is how many processors one operation involves: all of them for the IPI. */
        KtLog("bench uncontended op=%s cpus=%u ops=%llu ns=%llu ns_per_op=%s", BenchOps[Op].Name,
              BenchOps[Op].Routine == BenchIpiGenericCall ? KeQueryActiveProcessorCount(NULL) : 1,
              Operations, Ns, BenchDecimal(Text, sizeof(Text), Ns, Operations));

        /* Each primitive did its work every time. */
        KT_EXPECT_EQ(State.Errors, 0);
        if (BenchOps[Op].Routine == BenchInterlockedIncrement)
        {
            KT_EXPECT_EQ((ULONG)State.Counter, (ULONG)Operations);
        }
        if (BenchOps[Op].Routine == BenchLocalDpc)
        {
            KT_EXPECT_EQ((ULONG64)State.DpcRuns, Operations);
        }
        if (BenchOps[Op].Routine == BenchIpiGenericCall)
        {
            KT_EXPECT_EQ((ULONG64)State.Counter, Operations * KeQueryActiveProcessorCount(NULL));
        }
        KT_EXPECT(IsListEmpty(&State.ListHead));
        KT_EXPECT_EQ(State.Lock, 0);
    }
}

/* ---------------------------------------------------------------- contended throughput */

typedef struct _BENCH_CPU
{
    ULONG64 Acquisitions;
    ULONG64 Start;
    ULONG64 End;
} __attribute__((aligned(64))) BENCH_CPU;

typedef struct _BENCH_CONTENTION
{
    KSPIN_LOCK Lock __attribute__((aligned(64)));
    BOOLEAN Queued;
    ULONG64 WindowTicks;
    ULONG64 Protected[BENCH_CS_WORDS] __attribute__((aligned(64))); // written under the lock
    BENCH_CPU Cpu[BENCH_MAX_CPUS];
} BENCH_CONTENTION;

/* The critical section: a small fixed amount of work on data the lock protects. */
static inline VOID
BenchCriticalSection(BENCH_CONTENTION *Test)
{
    for (ULONG I = 0; I < BENCH_CS_WORDS; I++)
    {
        ((ULONG64 volatile *)Test->Protected)[I]++;
    }
}

/* Each processor acquires, works and releases until its own window has passed. */
static VOID
BenchContendRoutine(ULONG Index, PVOID Context)
{
    BENCH_CONTENTION *Test = Context;
    BENCH_CPU *Cpu = &Test->Cpu[Index];
    ULONG64 Count = 0;
    ULONG64 Start = BenchNow();
    ULONG64 Now;

    do
    {
        if (Test->Queued)
        {
            KLOCK_QUEUE_HANDLE Handle;

            KeAcquireInStackQueuedSpinLock(&Test->Lock, &Handle);
            BenchCriticalSection(Test);
            KeReleaseInStackQueuedSpinLock(&Handle);
        }
        else
        {
            KIRQL OldIrql;

            KeAcquireSpinLock(&Test->Lock, &OldIrql);
            BenchCriticalSection(Test);
            KeReleaseSpinLock(&Test->Lock, OldIrql);
        }
        Count++;
        Now = BenchNow();
    } while (Now - Start < Test->WindowTicks);

    /* Read by the caller after KtRunOnProcessors, which orders them (its Finished count). */
    Cpu->Acquisitions = Count;
    Cpu->Start = Start;
    Cpu->End = Now;
}

static VOID
BenchContention(BOOLEAN Queued)
{
    ULONG64 WindowMs = BenchEnter();
    ULONG Active = KeQueryActiveProcessorCount(NULL);
    const char *Name = Queued ? "KeAcquireInStackQueuedSpinLock" : "KeAcquireSpinLock";
    BENCH_CONTENTION *Test;
    char Text[32];

    if (Active > BENCH_MAX_CPUS)
    {
        Active = BENCH_MAX_CPUS;
    }
    Test = ExAllocatePoolWithTag(NonPagedPool, sizeof(*Test), 'hcnB');
    KT_ASSERT(Test != NULL);

    BenchPrintConfig(WindowMs);
    /* 1, 2, 4, ... processors, and finally all of them. */
    for (ULONG Cpus = 1;; Cpus = Cpus * 2 < Active ? Cpus * 2 : Active)
    {
        ULONG64 Total = 0, Min = ~0ull, Max = 0, First = ~0ull, Last = 0, Ns;

        memset(Test, 0, sizeof(*Test));
        KeInitializeSpinLock(&Test->Lock);
        Test->Queued = Queued;
        Test->WindowTicks = WindowMs * (BenchFrequency / 1000);

        KtRunOnProcessors(Cpus, BenchContendRoutine, Test);

        for (ULONG I = 0; I < Cpus; I++)
        {
            BENCH_CPU *Cpu = &Test->Cpu[I];

            Total += Cpu->Acquisitions;
            Min = Cpu->Acquisitions < Min ? Cpu->Acquisitions : Min;
            Max = Cpu->Acquisitions > Max ? Cpu->Acquisitions : Max;
            First = Cpu->Start < First ? Cpu->Start : First;
            Last = Cpu->End > Last ? Cpu->End : Last;
        }
        Ns = BenchTicksToNs(Last - First);
        KtLog("bench contended lock=%s cpus=%u ops=%llu ns=%llu ns_per_op=%s ops_per_s=%llu "
              "min=%llu max=%llu fairness_pct=%llu",
              Name, Cpus, Total, Ns, BenchDecimal(Text, sizeof(Text), Ns, Total),
              Ns == 0 ? 0 : Total * 1000000000 / Ns, Min, Max, Max == 0 ? 0 : Min * 100 / Max);

        /* Mutual exclusion held: every critical section's increments are all there. */
        for (ULONG I = 0; I < BENCH_CS_WORDS; I++)
        {
            KT_EXPECT_EQ(Test->Protected[I], Total);
        }
        KT_EXPECT_EQ(Test->Lock, 0);
        if (Cpus == Active)
        {
            break;
        }
    }
    ExFreePoolWithTag(Test, 'hcnB');
}

KTEST(Bench, contended_spin_lock)
{
    BenchContention(FALSE);
}

KTEST(Bench, contended_queued_spin_lock)
{
    BenchContention(TRUE);
}
