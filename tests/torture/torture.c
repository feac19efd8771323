/* SPDX-License-Identifier: MIT */
/*
 * Torture: the stress mode of `make torture DURATION=s` (DESIGN.md §7). The
 * suite skips unless the kernel command line holds `torture=1`, so `make test`
 * reports it as skipped; `duration=S` (default 60, clamped to 5..3000) is how
 * long it runs.
 *
 * Every processor loops until the deadline, choosing at random among the
 * primitives, each at PASSIVE_LEVEL or raised to DISPATCH_LEVEL: an ordinary
 * spin lock (KeAcquireSpinLock, AtDpcLevel, TryTo) and an in-stack queued lock,
 * each over a counter updated non-atomically with a random delay inside the
 * critical section; Interlocked* and ExInterlockedAddUlong sums; a fixed pool
 * of entries moved between an ExInterlocked doubly linked list, an
 * ExInterlocked singly linked list, an SLIST and the processors' hands; DPCs
 * targeted at every processor, inserted and removed; timers with DPCs, set and
 * cancelled; and an interrupt storm: an ISR connected on TT_VECTOR, requested
 * on random processors, updating a counter under its interrupt lock that
 * KeSynchronizeExecution updates as well, and moving list entries itself.
 *
 * At the end every count must add up: each lock's counter equals its
 * acquisitions, the sums equal the additions, every pool entry is in exactly
 * one place, DPC runs equal successful inserts minus successful removes, timer
 * DPC runs equal sets minus successful cancels, and the interrupt counter
 * equals ISR runs plus synchronised calls. One summary line per category says
 * what was exercised. With fault injection on (`make torture INJECT=1`, the
 * checked build's inject=1) one more line per injection point says how often
 * it fired. broken=1 swaps the queued lock for a deliberately racy test-only
 * lock: the run then passes only if it catches the lost updates.
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define TT_DEFAULT_S  60
#define TT_MIN_S      5
#define TT_MAX_S      3000
#define TT_MAX_CPUS   64
#define TT_ENTRIES    96 // the pool moved between the lists and the hands
#define TT_HAND       4  // entries one processor may hold at once
#define TT_DPCS       16
#define TT_TIMERS     8
#define TT_VECTOR     0x8A // the storm's device vector (IRQL 8)
#define TT_IRQL       8
#define TT_MAX_STALL  20    // µs inside a critical section
#define TT_SETTLE_MS  10000 // bound on waiting for the last timers to expire
#define TT_TIMEOUT_MS 3600000

/* Where a pool entry is; each entry is in exactly one place at a time. */
enum
{
    TT_IN_LIST = 1, // the ExInterlocked doubly linked list
    TT_IN_SINGLE,   // the ExInterlocked singly linked list
    TT_IN_SLIST,    // the SLIST
    TT_HELD         // a processor's hand, or the ISR
};

/* The operations a processor chooses among. */
enum
{
    TT_OP_SPINLOCK,
    TT_OP_QUEUED,
    TT_OP_INTERLOCKED,
    TT_OP_LIST,
    TT_OP_DPC,
    TT_OP_TIMER,
    TT_OP_INTERRUPT,
    TT_OP_SYNC,
    TT_OP_COUNT
};

typedef struct DECLSPEC_ALIGN(16) _TT_ENTRY
{
    SLIST_ENTRY SListEntry;
    SINGLE_LIST_ENTRY SingleEntry;
    LIST_ENTRY ListEntry;
    LONG volatile Place;
    LONG Seen; // final count only
} TT_ENTRY;

typedef struct _TT_DPC
{
    KDPC Dpc;
    ULONG Target; // the processor it must run on
} TT_DPC;

typedef struct _TT_TIMER
{
    KTIMER Timer;
    KDPC Dpc;
    LONG volatile Armed; // 1 from a claimed KeSetTimer until its DPC or a successful cancel
} TT_TIMER;

/* One processor's counts; only that processor writes them. */
typedef struct __attribute__((aligned(64))) _TT_CPU
{
    prng_t Random;
    TT_ENTRY *Hand[TT_HAND];
    ULONG HandCount;
    ULONG64 Ops[TT_OP_COUNT];
    ULONG64 RaisedOps;
    ULONG64 SpinAcquired, SpinTryFailed, QueuedAcquired;
    ULONG64 InterlockedSum, AddUlongSum;
    ULONG64 ListMoves;
    ULONG64 DpcInserted, DpcRemoved, TimerSets, TimerCancelled;
    ULONG64 Requests, SyncCalls;
} TT_CPU;

typedef struct _TT_STATE
{
    ULONG64 Deadline; // performance counter
    ULONG Processors;

    KSPIN_LOCK SpinLock;
    ULONG64 volatile SpinCounter; // guarded by SpinLock
    KSPIN_LOCK QueuedLock;
    ULONG64 volatile QueuedCounter; // guarded by QueuedLock (in-stack queued only)

    LONG volatile Interlocked;
    KSPIN_LOCK AddLock;
    ULONG AddUlong; // ExInterlockedAddUlong only

    TT_ENTRY Entries[TT_ENTRIES];
    LIST_ENTRY List;
    KSPIN_LOCK ListLock;
    SINGLE_LIST_ENTRY Single;
    KSPIN_LOCK SingleLock;
    SLIST_HEADER SList;

    TT_DPC Dpcs[TT_DPCS];
    LONG64 volatile DpcRuns;
    TT_TIMER Timers[TT_TIMERS];
    LONG64 volatile TimerRuns;

    PKINTERRUPT Interrupt;
    ULONG64 volatile InterruptCounter; // guarded by the interrupt lock
    LONG64 volatile IsrRuns, SyncRuns, IsrListMoves;

    BOOLEAN Broken;                    // broken=1: the queued-lock operation uses TtBrokenAcquire
    LONG volatile BrokenLock;          // its lock word
    LONG volatile Errors[TT_OP_COUNT]; // invariant violations seen while running
    TT_CPU Cpu[TT_MAX_CPUS];
} TT_STATE;

static TT_STATE Tt;

static const char *const TtOpNames[TT_OP_COUNT] = {
    "spinlock", "queuedlock", "interlocked", "lists", "dpc", "timer", "interrupt", "synchronize",
};

static ULONG64
TtNow(ULONG64 *Frequency)
{
    LARGE_INTEGER Hz;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Hz).QuadPart;

    if (Frequency != NULL)
    {
        *Frequency = (ULONG64)Hz.QuadPart;
    }
    return Now;
}

static VOID
TtError(ULONG Op)
{
    InterlockedIncrement(&Tt.Errors[Op]);
}

/* ---------------------------------------------------------------- pool entries */

/* Moves Entry from Place to the caller; a violation if it was not there. */
static VOID
TtClaim(TT_ENTRY *Entry, LONG Place)
{
    if (InterlockedCompareExchange(&Entry->Place, TT_HELD, Place) != Place)
    {
        TtError(TT_OP_LIST);
    }
}

/* Records where Entry goes, then puts it there (a taker checks Place after its pop). */
static VOID
TtPut(TT_ENTRY *Entry, LONG Place)
{
    if (InterlockedCompareExchange(&Entry->Place, Place, TT_HELD) != TT_HELD)
    {
        TtError(TT_OP_LIST);
    }
    switch (Place)
    {
        case TT_IN_LIST:
            if (((Entry - Tt.Entries) & 1) != 0) // odd entries at the head, even at the tail
            {
                ExInterlockedInsertHeadList(&Tt.List, &Entry->ListEntry, &Tt.ListLock);
            }
            else
            {
                ExInterlockedInsertTailList(&Tt.List, &Entry->ListEntry, &Tt.ListLock);
            }
            break;
        case TT_IN_SINGLE:
            ExInterlockedPushEntryList(&Tt.Single, &Entry->SingleEntry, &Tt.SingleLock);
            break;
        default:
            InterlockedPushEntrySList(&Tt.SList, &Entry->SListEntry);
            break;
    }
}

/* Takes an entry from Place, or NULL if that place is empty. */
static TT_ENTRY *
TtTake(LONG Place)
{
    TT_ENTRY *Entry = NULL;

    switch (Place)
    {
        case TT_IN_LIST:
        {
            PLIST_ENTRY Link = ExInterlockedRemoveHeadList(&Tt.List, &Tt.ListLock);
            Entry = Link == NULL ? NULL : CONTAINING_RECORD(Link, TT_ENTRY, ListEntry);
            break;
        }
        case TT_IN_SINGLE:
        {
            PSINGLE_LIST_ENTRY Link = ExInterlockedPopEntryList(&Tt.Single, &Tt.SingleLock);
            Entry = Link == NULL ? NULL : CONTAINING_RECORD(Link, TT_ENTRY, SingleEntry);
            break;
        }
        default:
        {
            PSLIST_ENTRY Link = InterlockedPopEntrySList(&Tt.SList);
            Entry = Link == NULL ? NULL : CONTAINING_RECORD(Link, TT_ENTRY, SListEntry);
            break;
        }
    }
    if (Entry != NULL)
    {
        TtClaim(Entry, Place);
    }
    return Entry;
}

/* ---------------------------------------------------------------- callbacks */

static VOID
TtDpcRoutine(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    TT_DPC *Object = Context;

    if (KeGetCurrentIrql() != DISPATCH_LEVEL || KeGetCurrentProcessorNumber() != Object->Target)
    {
        TtError(TT_OP_DPC);
    }
    InterlockedIncrement64(&Tt.DpcRuns);
}

static VOID
TtTimerDpcRoutine(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    TT_TIMER *Timer = Context;

    InterlockedIncrement64(&Tt.TimerRuns);
    /* Ends this expiry's ownership: only now may the timer be set again. */
    if (InterlockedCompareExchange(&Timer->Armed, 0, 1) != 1 ||
        KeGetCurrentIrql() != DISPATCH_LEVEL)
    {
        TtError(TT_OP_TIMER);
    }
}

/* The storm's ISR: at TT_IRQL holding the interrupt lock. */
static BOOLEAN
TtIsr(PKINTERRUPT Interrupt, PVOID Context)
{
    ULONG64 Value = Tt.InterruptCounter;
    TT_ENTRY *Entry;

    if (KeGetCurrentIrql() != TT_IRQL)
    {
        TtError(TT_OP_INTERRUPT);
    }
    InterlockedIncrement64(&Tt.IsrRuns);
    /* An entry passes through the ISR: popped, then put back at the other end. */
    Entry = TtTake(TT_IN_LIST);
    if (Entry != NULL)
    {
        InterlockedIncrement64(&Tt.IsrListMoves);
        TtPut(Entry, TT_IN_LIST);
    }
    KeStallExecutionProcessor(1);
    Tt.InterruptCounter = Value + 1; // a lost update if the lock did not exclude
    return TRUE;
}

static BOOLEAN
TtSynchronizeRoutine(PVOID Context)
{
    ULONG64 Value = Tt.InterruptCounter;
    ULONG Stall = (ULONG)(ULONG_PTR)Context;

    if (KeGetCurrentIrql() != TT_IRQL)
    {
        TtError(TT_OP_SYNC);
    }
    InterlockedIncrement64(&Tt.SyncRuns);
    KeStallExecutionProcessor(Stall);
    Tt.InterruptCounter = Value + 1;
    return TRUE;
}

/* ---------------------------------------------------------------- operations */

static ULONG
TtBelow(TT_CPU *Cpu, ULONG Bound)
{
    return (ULONG)prng_below(&Cpu->Random, Bound);
}

static VOID
TtSpinLock(TT_CPU *Cpu, BOOLEAN Raised)
{
    KIRQL OldIrql = PASSIVE_LEVEL;
    ULONG64 Value;

    if (!Raised)
    {
        KeAcquireSpinLock(&Tt.SpinLock, &OldIrql);
    }
    else if (TtBelow(Cpu, 2) == 0)
    {
        KeAcquireSpinLockAtDpcLevel(&Tt.SpinLock);
    }
    else if (!KeTryToAcquireSpinLockAtDpcLevel(&Tt.SpinLock))
    {
        Cpu->SpinTryFailed++;
        return;
    }
    if (KeGetCurrentIrql() != DISPATCH_LEVEL)
    {
        TtError(TT_OP_SPINLOCK);
    }
    Value = Tt.SpinCounter;
    KeStallExecutionProcessor(TtBelow(Cpu, TT_MAX_STALL + 1));
    Tt.SpinCounter = Value + 1;
    Cpu->SpinAcquired++;
    if (Raised)
    {
        KeReleaseSpinLockFromDpcLevel(&Tt.SpinLock);
    }
    else
    {
        KeReleaseSpinLock(&Tt.SpinLock, OldIrql);
    }
}

/*
 * The deliberately broken lock of broken=1: a test, then a plain store, with
 * no atomic between them, so two processors can both see it free and both
 * enter. Test-only: torture must notice (QueuedCounter falls short).
 */
static VOID
TtBrokenAcquire(volatile LONG *Word)
{
    while (__atomic_load_n(Word, __ATOMIC_RELAXED) != 0)
    {
        KeStallExecutionProcessor(0);
    }
    KiInject(KiInjectQueuedLockLink); // widens the window between the test and the store
    __atomic_store_n(Word, 1, __ATOMIC_RELAXED);
}

static VOID
TtBrokenRelease(volatile LONG *Word)
{
    __atomic_store_n(Word, 0, __ATOMIC_RELEASE);
}

static VOID
TtQueuedLock(TT_CPU *Cpu, BOOLEAN Raised)
{
    KLOCK_QUEUE_HANDLE Handle;
    ULONG64 Value;

    if (Tt.Broken)
    {
        KIRQL OldIrql;
        KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
        TtBrokenAcquire(&Tt.BrokenLock);
        Value = Tt.QueuedCounter;
        KeStallExecutionProcessor(TtBelow(Cpu, TT_MAX_STALL + 1));
        Tt.QueuedCounter = Value + 1;
        Cpu->QueuedAcquired++;
        TtBrokenRelease(&Tt.BrokenLock);
        KeLowerIrql(OldIrql);
        return;
    }
    if (Raised)
    {
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&Tt.QueuedLock, &Handle);
    }
    else
    {
        KeAcquireInStackQueuedSpinLock(&Tt.QueuedLock, &Handle);
    }
    if (KeGetCurrentIrql() != DISPATCH_LEVEL)
    {
        TtError(TT_OP_QUEUED);
    }
    Value = Tt.QueuedCounter;
    KeStallExecutionProcessor(TtBelow(Cpu, TT_MAX_STALL + 1));
    Tt.QueuedCounter = Value + 1;
    Cpu->QueuedAcquired++;
    if (Raised)
    {
        KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
    }
    else
    {
        KeReleaseInStackQueuedSpinLock(&Handle);
    }
}

static VOID
TtInterlocked(TT_CPU *Cpu)
{
    LONG Add = (LONG)TtBelow(Cpu, 16) + 1;
    LONG Old;

    switch (TtBelow(Cpu, 4))
    {
        case 0:
            InterlockedIncrement(&Tt.Interlocked);
            Cpu->InterlockedSum += 1;
            break;
        case 1:
            InterlockedExchangeAdd(&Tt.Interlocked, Add);
            Cpu->InterlockedSum += (ULONG64)Add;
            break;
        case 2:
            do
            {
                Old = Tt.Interlocked;
            } while (InterlockedCompareExchange(&Tt.Interlocked, (LONG)((ULONG)Old + (ULONG)Add),
                                                Old) != Old);
            Cpu->InterlockedSum += (ULONG64)Add;
            break;
        default:
            ExInterlockedAddUlong(&Tt.AddUlong, (ULONG)Add, &Tt.AddLock);
            Cpu->AddUlongSum += (ULONG64)Add;
            break;
    }
}

static VOID
TtList(TT_CPU *Cpu)
{
    LONG Place = (LONG)TtBelow(Cpu, 3) + TT_IN_LIST;

    if (Cpu->HandCount == TT_HAND || (Cpu->HandCount > 0 && TtBelow(Cpu, 2) == 0))
    {
        ULONG Slot = TtBelow(Cpu, Cpu->HandCount);
        TT_ENTRY *Entry = Cpu->Hand[Slot];

        Cpu->Hand[Slot] = Cpu->Hand[--Cpu->HandCount];
        TtPut(Entry, Place);
    }
    else
    {
        TT_ENTRY *Entry = TtTake(Place);

        if (Entry == NULL)
        {
            return;
        }
        Cpu->Hand[Cpu->HandCount++] = Entry;
    }
    Cpu->ListMoves++;
}

static VOID
TtDpc(TT_CPU *Cpu)
{
    TT_DPC *Object = &Tt.Dpcs[TtBelow(Cpu, TT_DPCS)];

    if (TtBelow(Cpu, 3) != 0)
    {
        Cpu->DpcInserted += KeInsertQueueDpc(&Object->Dpc, NULL, NULL) ? 1 : 0;
    }
    else
    {
        Cpu->DpcRemoved += KeRemoveQueueDpc(&Object->Dpc) ? 1 : 0;
    }
}

static VOID
TtTimer(TT_CPU *Cpu)
{
    TT_TIMER *Timer = &Tt.Timers[TtBelow(Cpu, TT_TIMERS)];

    if (TtBelow(Cpu, 2) == 0)
    {
        LARGE_INTEGER DueTime;

        /* Only the processor that claims an idle timer sets it: one expiry at a time. */
        if (InterlockedCompareExchange(&Timer->Armed, 1, 0) != 0)
        {
            return;
        }
        DueTime.QuadPart = -(LONG64)(10000 * (1 + TtBelow(Cpu, 5))); // 1..5 ms
        if (KeSetTimer(&Timer->Timer, DueTime, &Timer->Dpc))
        {
            TtError(TT_OP_TIMER); // it was idle, so it cannot have been set
        }
        Cpu->TimerSets++;
    }
    else if (KeCancelTimer(&Timer->Timer))
    {
        /* No expiry will come: this cancel ends the set's ownership. */
        if (InterlockedCompareExchange(&Timer->Armed, 0, 1) != 1)
        {
            TtError(TT_OP_TIMER);
        }
        Cpu->TimerCancelled++;
    }
}

static VOID
TtInterrupt(TT_CPU *Cpu)
{
    ULONG Burst = 1 + TtBelow(Cpu, 4);

    for (ULONG i = 0; i < Burst; i++)
    {
        KiRequestInterrupt(TtBelow(Cpu, Tt.Processors), TT_VECTOR);
        Cpu->Requests++;
    }
}

static VOID
TtSynchronize(TT_CPU *Cpu)
{
    PVOID Stall = (PVOID)(ULONG_PTR)TtBelow(Cpu, TT_MAX_STALL / 4 + 1);

    if (KeSynchronizeExecution(Tt.Interrupt, TtSynchronizeRoutine, Stall) != TRUE)
    {
        TtError(TT_OP_SYNC);
    }
    Cpu->SyncCalls++;
}

/* ---------------------------------------------------------------- the run */

static VOID
TtWorker(ULONG Index, PVOID Context)
{
    TT_CPU *Cpu = &Tt.Cpu[KeGetCurrentProcessorNumber()];

    while (TtNow(NULL) < Tt.Deadline)
    {
        ULONG Op = TtBelow(Cpu, TT_OP_COUNT);
        BOOLEAN Raised = TtBelow(Cpu, 2) == 0;
        KIRQL OldIrql = PASSIVE_LEVEL;

        if (Raised)
        {
            KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
            Cpu->RaisedOps++;
        }
        switch (Op)
        {
            case TT_OP_SPINLOCK:
                TtSpinLock(Cpu, Raised);
                break;
            case TT_OP_QUEUED:
                TtQueuedLock(Cpu, Raised);
                break;
            case TT_OP_INTERLOCKED:
                TtInterlocked(Cpu);
                break;
            case TT_OP_LIST:
                TtList(Cpu);
                break;
            case TT_OP_DPC:
                TtDpc(Cpu);
                break;
            case TT_OP_TIMER:
                TtTimer(Cpu);
                break;
            case TT_OP_INTERRUPT:
                TtInterrupt(Cpu);
                break;
            default:
                TtSynchronize(Cpu);
                break;
        }
        Cpu->Ops[Op]++;
        if (Raised)
        {
            KeLowerIrql(OldIrql);
        }
        if (KeGetCurrentIrql() != PASSIVE_LEVEL)
        {
            TtError(Op);
        }
    }
    /* The hand goes back, so the final count finds every entry in a list. */
    while (Cpu->HandCount > 0)
    {
        TtPut(Cpu->Hand[--Cpu->HandCount], TT_IN_SLIST);
    }
}

/* At PASSIVE_LEVEL for a moment: the last requested interrupts and DPCs land here. */
static VOID
TtDrain(ULONG Index, PVOID Context)
{
    KeStallExecutionProcessor(2000);
}

static VOID
TtInitialize(VOID)
{
    ULONG Seed = (ULONG)KtRandom();

    memset(&Tt, 0, sizeof(Tt));
    Tt.Processors = KiActiveProcessorCount < TT_MAX_CPUS ? KiActiveProcessorCount : TT_MAX_CPUS;
    KeInitializeSpinLock(&Tt.SpinLock);
    KeInitializeSpinLock(&Tt.QueuedLock);
    KeInitializeSpinLock(&Tt.AddLock);
    KeInitializeSpinLock(&Tt.ListLock);
    KeInitializeSpinLock(&Tt.SingleLock);
    InitializeListHead(&Tt.List);
    Tt.Single.Next = NULL;
    InitializeSListHead(&Tt.SList);
    for (ULONG i = 0; i < TT_ENTRIES; i++)
    {
        Tt.Entries[i].Place = TT_HELD;
        TtPut(&Tt.Entries[i], (LONG)(TT_IN_LIST + i % 3));
    }
    for (ULONG i = 0; i < TT_DPCS; i++)
    {
        Tt.Dpcs[i].Target = i % Tt.Processors;
        KeInitializeDpc(&Tt.Dpcs[i].Dpc, TtDpcRoutine, &Tt.Dpcs[i]);
        KeSetTargetProcessorDpc(&Tt.Dpcs[i].Dpc, (CCHAR)Tt.Dpcs[i].Target);
    }
    for (ULONG i = 0; i < TT_TIMERS; i++)
    {
        KeInitializeTimer(&Tt.Timers[i].Timer);
        KeInitializeDpc(&Tt.Timers[i].Dpc, TtTimerDpcRoutine, &Tt.Timers[i]);
    }
    for (ULONG i = 0; i < Tt.Processors; i++)
    {
        prng_seed(&Tt.Cpu[i].Random, (ULONG64)Seed * 0x9E3779B97F4A7C15ull + i);
    }
}

/* Every pool entry is in exactly one list, and where its Place says. */
static VOID
TtCountEntries(VOID)
{
    ULONG Found = 0;
    ULONG Depth = QueryDepthSList(&Tt.SList);
    ULONG InSList = 0;
    TT_ENTRY *Entry;

    for (LONG Place = TT_IN_LIST; Place <= TT_IN_SLIST; Place++)
    {
        while ((Entry = TtTake(Place)) != NULL)
        {
            KT_EXPECT(Entry >= &Tt.Entries[0] && Entry < &Tt.Entries[TT_ENTRIES]);
            KT_EXPECT_EQ(Entry->Seen, 0);
            Entry->Seen = 1;
            Found++;
            InSList += Place == TT_IN_SLIST ? 1 : 0;
            KT_ASSERT(Found <= TT_ENTRIES); // a cycle, or an entry twice
        }
    }
    KT_EXPECT_EQ(InSList, Depth);
    KT_EXPECT_EQ(Found, TT_ENTRIES);
}

KTEST_EX(Torture, every_primitive_on_every_processor, 0, TT_TIMEOUT_MS)
{
    ULONG64 Seconds = KtCommandLineValue("duration", TT_DEFAULT_S);
    ULONG64 Frequency, Start, Settle;
    TT_CPU Total = {0};
    ULONG ServiceCount;

    if (KtCommandLineValue("torture", 0) != 1)
    {
        KT_SKIP("the stress mode runs with make torture");
    }
    Seconds = Seconds < TT_MIN_S ? TT_MIN_S : Seconds > TT_MAX_S ? TT_MAX_S : Seconds;
    TtInitialize();
    Tt.Broken = KtCommandLineValue("broken", 0) == 1;
    if (Tt.Broken)
    {
        KtLog("torture: broken=1: the queued-lock operation uses a racy test-only lock");
    }
    KT_ASSERT_EQ(IoConnectInterrupt(&Tt.Interrupt, TtIsr, &Tt, NULL, TT_VECTOR, TT_IRQL, TT_IRQL,
                                    Latched, FALSE, ~(KAFFINITY)0, FALSE),
                 STATUS_SUCCESS);
    KtLog("torture: %u processors for %llu s", Tt.Processors, Seconds);

    Start = TtNow(&Frequency);
    Tt.Deadline = Start + Seconds * Frequency;
    KtRunOnProcessors(0, TtWorker, NULL);
    KtRunOnProcessors(0, TtDrain, NULL);
    ServiceCount = Tt.Interrupt->ServiceCount;
    IoDisconnectInterrupt(Tt.Interrupt);

    /* The last timers expire (each was due within 5 ms), then every DPC has run. */
    Settle = TtNow(NULL) + TT_SETTLE_MS * (Frequency / 1000);
    for (ULONG i = 0; i < TT_TIMERS; i++)
    {
        while (Tt.Timers[i].Armed != 0 && TtNow(NULL) < Settle)
        {
            KeStallExecutionProcessor(100);
        }
        KT_EXPECT_EQ(Tt.Timers[i].Armed, 0);
    }
    KeFlushQueuedDpcs();

    for (ULONG c = 0; c < Tt.Processors; c++)
    {
        TT_CPU *Cpu = &Tt.Cpu[c];

        for (ULONG Op = 0; Op < TT_OP_COUNT; Op++)
        {
            Total.Ops[Op] += Cpu->Ops[Op];
        }
        Total.RaisedOps += Cpu->RaisedOps;
        Total.SpinAcquired += Cpu->SpinAcquired;
        Total.SpinTryFailed += Cpu->SpinTryFailed;
        Total.QueuedAcquired += Cpu->QueuedAcquired;
        Total.InterlockedSum += Cpu->InterlockedSum;
        Total.AddUlongSum += Cpu->AddUlongSum;
        Total.ListMoves += Cpu->ListMoves;
        Total.DpcInserted += Cpu->DpcInserted;
        Total.DpcRemoved += Cpu->DpcRemoved;
        Total.TimerSets += Cpu->TimerSets;
        Total.TimerCancelled += Cpu->TimerCancelled;
        Total.Requests += Cpu->Requests;
        Total.SyncCalls += Cpu->SyncCalls;
    }

    KtLog("torture: spinlock    ops=%llu acquired=%llu try_failed=%llu counter=%llu",
          Total.Ops[TT_OP_SPINLOCK], Total.SpinAcquired, Total.SpinTryFailed, Tt.SpinCounter);
    KtLog("torture: queuedlock  ops=%llu acquired=%llu counter=%llu", Total.Ops[TT_OP_QUEUED],
          Total.QueuedAcquired, Tt.QueuedCounter);
    KtLog("torture: interlocked ops=%llu sum=%llu add_ulong=%llu", Total.Ops[TT_OP_INTERLOCKED],
          Total.InterlockedSum, Total.AddUlongSum);
    KtLog("torture: lists       ops=%llu moves=%llu isr_moves=%lld entries=%u",
          Total.Ops[TT_OP_LIST], Total.ListMoves, Tt.IsrListMoves, TT_ENTRIES);
    KtLog("torture: dpc         ops=%llu inserted=%llu removed=%llu runs=%lld",
          Total.Ops[TT_OP_DPC], Total.DpcInserted, Total.DpcRemoved, Tt.DpcRuns);
    KtLog("torture: timer       ops=%llu sets=%llu cancelled=%llu dpc_runs=%lld",
          Total.Ops[TT_OP_TIMER], Total.TimerSets, Total.TimerCancelled, Tt.TimerRuns);
    KtLog("torture: interrupt   ops=%llu requests=%llu isr_runs=%lld service_count=%u",
          Total.Ops[TT_OP_INTERRUPT], Total.Requests, Tt.IsrRuns, ServiceCount);
    KtLog("torture: synchronize ops=%llu calls=%lld counter=%llu", Total.Ops[TT_OP_SYNC],
          Tt.SyncRuns, Tt.InterruptCounter);
    KtLog("torture: raised to DISPATCH_LEVEL around %llu of the operations", Total.RaisedOps);
#if DBG
    if (KiInjectEnabled)
    {
        for (ULONG Point = 0; Point < KiInjectPointCount; Point++)
        {
            KtLog("torture: inject %-22s fired=%llu", KiInjectPointName(Point),
                  KiInjectFired[Point]);
        }
    }
#endif

    for (ULONG Op = 0; Op < TT_OP_COUNT; Op++)
    {
        if (Tt.Errors[Op] != 0)
        {
            KtLog("torture: %d violations in %s", Tt.Errors[Op], TtOpNames[Op]);
        }
        KT_EXPECT_EQ(Tt.Errors[Op], 0);
        KT_EXPECT_GT(Total.Ops[Op], 0); // every category was exercised
    }
    KT_EXPECT_EQ(Tt.SpinCounter, Total.SpinAcquired);
    if (Tt.Broken)
    {
        /* The run must catch the broken lock: updates lost under it. */
        KtLog("torture: broken lock %s: counter=%llu acquisitions=%llu",
              Tt.QueuedCounter != Total.QueuedAcquired ? "caught" : "NOT caught", Tt.QueuedCounter,
              Total.QueuedAcquired);
        KT_EXPECT_NE(Tt.QueuedCounter, Total.QueuedAcquired);
    }
    else
    {
        KT_EXPECT_EQ(Tt.QueuedCounter, Total.QueuedAcquired);
    }
    KT_EXPECT_EQ((ULONG)Tt.Interlocked, (ULONG)Total.InterlockedSum);
    KT_EXPECT_EQ(Tt.AddUlong, (ULONG)Total.AddUlongSum);
    TtCountEntries();
    KT_EXPECT_EQ(Tt.DpcRuns, (LONG64)(Total.DpcInserted - Total.DpcRemoved));
    KT_EXPECT_EQ(Tt.TimerRuns, (LONG64)(Total.TimerSets - Total.TimerCancelled));
    KT_EXPECT_EQ(Tt.InterruptCounter, (ULONG64)(Tt.IsrRuns + Tt.SyncRuns));
    KT_EXPECT_EQ(Tt.SyncRuns, (LONG64)Total.SyncCalls);
    KT_EXPECT_EQ(ServiceCount, (ULONG)Tt.IsrRuns);
    KT_EXPECT_LE(Tt.IsrRuns, (LONG64)Total.Requests); // requests to a busy vector coalesce
    KT_EXPECT_GT(Tt.IsrRuns, 0);
}
