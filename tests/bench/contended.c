/* SPDX-License-Identifier: MIT */
/*
 * Bench: contended locks, with exactly the loop of the Linux peer module.
 *
 * For N = 1, 2, 4, ... and all processors, N processors (0..N-1) arrive at a
 * gate; the last to arrive stamps t0 (TSC), arms the stop deadline and opens
 * the gate. Each processor then runs
 *
 *     while (stop != this window) {
 *         acquire;
 *         counter = counter + 1;      plain volatile read and write, not atomic
 *         busy(cs_work);              bench_cs=, default 0
 *         release;
 *         busy(ncs_work);             bench_ncs=, default 0: re-acquire at once
 *         n++;                        private, in a register
 *     }
 *
 * and stamps its own end. The stop flag is wall-clock driven, as the module's
 * hrtimer: the clock interrupt (every 10 ms on every processor, above
 * DISPATCH_LEVEL) sets it once the deadline has passed, so no processor reads
 * the TSC in its loop. Reported: total = sum of n, ops_per_s = total / (last
 * end - t0), cycles_per_op = (last end - t0) / total, min and max of the n
 * (fairness), and mutex_ok = (counter == total). Each row is the median (by
 * throughput) of bench_windows (>= 3) windows of bench_ms; every window is
 * printed too (`# bench window`).
 *
 * The locks: the ordinary spin lock at DISPATCH_LEVEL (AtDpcLevel, the shape
 * of Linux's spin_lock), the raising KeAcquireSpinLock (the shape of
 * spin_lock_irqsave), both in-stack queued forms, and three references
 * written here: virt_tas, Linux's virt_spin_lock test-and-set (the lock Linux
 * uses in a VM without paravirtual spin locks), the module's own raw_xchg
 * lock, raw_mcs, the queued lock's MCS algorithm alone (inline, no halting):
 * the most any implementation of API.md §4's queue can give here,
 * virt_tas_called, virt_tas behind two noinline functions on a page of
 * their own, as a lock API is called (bench.h, BENCH_CALLED): the rate of a
 * called test-and-set lock here, and raw_mcs_called, raw_mcs called the same
 * way: the rate of a called MCS lock that never halts.
 * The AtDpcLevel and reference loops raise to DISPATCH_LEVEL once around the
 * whole loop, as a DPC routine would run them.
 */
#include "tests/bench/bench.h"

#include "kernel/ke/ke.h"
#include "lib/lib.h"

typedef struct _BENCH_SLOT
{
    ULONG64 Acquisitions;
    ULONG64 End;
    ULONG64 Halts; // this processor's KiWaitForChange halts during the loop
    ULONG64 Wakes; // wake IPIs it took during the loop
} __attribute__((aligned(BENCH_ALIGN))) BENCH_SLOT;

typedef struct _BENCH_CONTENDED
{
    KSPIN_LOCK Lock __attribute__((aligned(BENCH_ALIGN))); // the NT lock under test
    ULONG TasWord __attribute__((aligned(BENCH_ALIGN)));   // virt_tas reference lock
    ULONG64 XWord __attribute__((aligned(BENCH_ALIGN)));   // raw_xchg reference lock
    struct _BENCH_MCS_NODE *McsTail __attribute__((aligned(BENCH_ALIGN))); // raw_mcs reference
    ULONG64 volatile Counter __attribute__((aligned(BENCH_ALIGN)));
    LONG volatile Ready __attribute__((aligned(BENCH_ALIGN))); // the gate
    LONG volatile Go;
    ULONG Threads;
    ULONG Window; // this window's number: Stop == Window ends it
    ULONG64 T0;
    ULONG CsWork;
    ULONG NcsWork;
    ULONG volatile Stop __attribute__((aligned(BENCH_ALIGN))); // read by every processor
    BENCH_SLOT Slot[BENCH_MAX_CPUS];
} BENCH_CONTENDED;

static BENCH_CONTENDED BenchC __attribute__((aligned(BENCH_ALIGN)));

/*
 * The stop deadline, read by the clock hook on every processor. The opener
 * writes the deadline, then the window number (release); the hook reads the
 * number (acquire), then the deadline, so a number it sees comes with its
 * deadline. A hook that read a previous window's number can only store that
 * number into Stop, which no later window waits for.
 */
static ULONG64 volatile BenchStopDeadline;
static ULONG volatile BenchStopWindow; // 0: not armed

static VOID
BenchClockHook(VOID)
{
    ULONG Window;

    Window = __atomic_load_n(&BenchStopWindow, __ATOMIC_ACQUIRE);
    if (Window != 0 && x86_rdtsc() >= __atomic_load_n(&BenchStopDeadline, __ATOMIC_RELAXED))
    {
        /* Relaxed: the loops only poll it; their results are published by KtRunOnProcessors. */
        __atomic_store_n(&BenchC.Stop, Window, __ATOMIC_RELAXED);
    }
}

/* ---------------------------------------------------------------- the loops */

static inline BOOLEAN
BenchRunning(BENCH_CONTENDED *C, ULONG Window)
{
    return __atomic_load_n(&C->Stop, __ATOMIC_RELAXED) != Window;
}

/* The critical section and the rest of one iteration, shared by every loop. */
#define BENCH_CRITICAL(C, Cs) ((C)->Counter = (C)->Counter + 1, BenchBusy(Cs))

/*
 * Defines Name, one lock's loop: `Acquire; critical section; Release` until
 * the window's stop, returning the acquisitions. AtDpcLevel: the loop runs
 * raised to DISPATCH_LEVEL once around it, as a DPC routine would run it.
 * Local declares what Acquire and Release share (a queue handle, a node).
 */
#define BENCH_LOOP(Name, AtDpcLevel, Local, Acquire, Release)                                      \
    static BENCH_TIMED ULONG64 Name(BENCH_CONTENDED *C)                                            \
    {                                                                                              \
        ULONG Window = C->Window, Cs = C->CsWork, Ncs = C->NcsWork;                                \
        ULONG64 N = 0;                                                                             \
        KIRQL Old = PASSIVE_LEVEL;                                                                 \
        Local;                                                                                     \
                                                                                                   \
        if (AtDpcLevel)                                                                            \
        {                                                                                          \
            KeRaiseIrql(DISPATCH_LEVEL, &Old);                                                     \
        }                                                                                          \
        while (BenchRunning(C, Window))                                                            \
        {                                                                                          \
            Acquire;                                                                               \
            BENCH_CRITICAL(C, Cs);                                                                 \
            Release;                                                                               \
            BenchBusy(Ncs);                                                                        \
            N++;                                                                                   \
        }                                                                                          \
        if (AtDpcLevel)                                                                            \
        {                                                                                          \
            KeLowerIrql(Old);                                                                      \
        }                                                                                          \
        return N;                                                                                  \
    }

BENCH_LOOP(BenchLoopAtDpcLevel, TRUE, (void)0, KeAcquireSpinLockAtDpcLevel(&C->Lock),
           KeReleaseSpinLockFromDpcLevel(&C->Lock))
BENCH_LOOP(BenchLoopRaising, FALSE, KIRQL Irql, KeAcquireSpinLock(&C->Lock, &Irql),
           KeReleaseSpinLock(&C->Lock, Irql))
BENCH_LOOP(BenchLoopQueuedAtDpcLevel, TRUE, KLOCK_QUEUE_HANDLE Handle,
           KeAcquireInStackQueuedSpinLockAtDpcLevel(&C->Lock, &Handle),
           KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle))
BENCH_LOOP(BenchLoopQueuedRaising, FALSE, KLOCK_QUEUE_HANDLE Handle,
           KeAcquireInStackQueuedSpinLock(&C->Lock, &Handle),
           KeReleaseInStackQueuedSpinLock(&Handle))

/*
 * Linux 6.1's spin_lock() in a VM without paravirtual spin locks: the
 * qspinlock fast path (cmpxchg 0 -> 1), then virt_spin_lock()'s
 * test-and-test-and-set loop; unlock is a release store of the locked byte.
 */
static inline VOID
BenchTasAcquire(ULONG *Word)
{
    ULONG Expected = 0;

    /* Acquire: pairs with the release store in BenchTasRelease. */
    if (__atomic_compare_exchange_n(Word, &Expected, 1, FALSE, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
    {
        return;
    }
    do
    {
        while (__atomic_load_n(Word, __ATOMIC_RELAXED) != 0)
        {
            x86_pause();
        }
        Expected = 0;
    } while (!__atomic_compare_exchange_n(Word, &Expected, 1, FALSE, __ATOMIC_ACQUIRE,
                                          __ATOMIC_RELAXED));
}

static inline VOID
BenchTasRelease(ULONG *Word)
{
    /* Release: pairs with the acquiring compare-exchange in BenchTasAcquire. */
    __atomic_store_n(Word, 0, __ATOMIC_RELEASE);
}

/* The module's raw_xchg lock: xchg, spin reading while held, release store. */
static inline VOID
BenchXchgAcquire(ULONG64 *Word)
{
    /* Acquire: pairs with the release store in BenchXchgRelease on another processor. */
    while (__atomic_exchange_n(Word, 1, __ATOMIC_ACQUIRE) != 0)
    {
        do
        {
            x86_pause();
        } while (__atomic_load_n(Word, __ATOMIC_RELAXED) != 0);
    }
}

static inline VOID
BenchXchgRelease(ULONG64 *Word)
{
    /* Release: pairs with the acquiring exchange in BenchXchgAcquire. */
    __atomic_store_n(Word, 0, __ATOMIC_RELEASE);
}

/*
 * A bare MCS queue lock, the in-stack queued lock's algorithm (API.md §4)
 * and nothing else: a node per acquisition, xchg on the tail, the waiter
 * spins (with pause) on its own node, the releaser hands off with one store.
 * No halting, no wake, no barrier beyond the algorithm's own, no call: what
 * that algorithm costs on this machine before anything Spindle adds to it.
 */
typedef struct _BENCH_MCS_NODE
{
    struct _BENCH_MCS_NODE *volatile Next;
    ULONG volatile Wait;
} BENCH_MCS_NODE;

static inline VOID
BenchMcsAcquire(BENCH_MCS_NODE **Tail, BENCH_MCS_NODE *Node)
{
    BENCH_MCS_NODE *Prev;

    Node->Next = NULL;
    Node->Wait = 1;
    /* Full barrier: the node is initialised before a successor can find it. */
    Prev = __atomic_exchange_n(Tail, Node, __ATOMIC_SEQ_CST);
    if (Prev != NULL)
    {
        /* Release: Wait is set before the predecessor sees us. */
        __atomic_store_n(&Prev->Next, Node, __ATOMIC_RELEASE);
        /* Acquire: pairs with the hand-off store in BenchMcsRelease. */
        while (__atomic_load_n(&Node->Wait, __ATOMIC_ACQUIRE) != 0)
        {
            x86_pause();
        }
    }
}

static inline VOID
BenchMcsRelease(BENCH_MCS_NODE **Tail, BENCH_MCS_NODE *Node)
{
    BENCH_MCS_NODE *Next = __atomic_load_n(&Node->Next, __ATOMIC_ACQUIRE);

    if (Next == NULL)
    {
        BENCH_MCS_NODE *Expected = Node;

        /* Release: the critical section is visible before the tail reads free. */
        if (__atomic_compare_exchange_n(Tail, &Expected, NULL, FALSE, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED))
        {
            return;
        }
        /* A successor is between its exchange and its link. */
        while ((Next = __atomic_load_n(&Node->Next, __ATOMIC_ACQUIRE)) == NULL)
        {
            x86_pause();
        }
    }
    /* Release: the hand-off, after our critical section. */
    __atomic_store_n(&Next->Wait, 0, __ATOMIC_RELEASE);
}

BENCH_LOOP(BenchLoopVirtTas, TRUE, (void)0, BenchTasAcquire(&C->TasWord),
           BenchTasRelease(&C->TasWord))
/* virt_tas as an API: the same code, but a call and a return for each half. */
static BENCH_CALLED VOID
BenchTasAcquireCalled(ULONG *Word)
{
    BenchTasAcquire(Word);
}

static BENCH_CALLED VOID
BenchTasReleaseCalled(ULONG *Word)
{
    BenchTasRelease(Word);
}

BENCH_LOOP(BenchLoopVirtTasCalled, TRUE, (void)0, BenchTasAcquireCalled(&C->TasWord),
           BenchTasReleaseCalled(&C->TasWord))
BENCH_LOOP(BenchLoopRawXchg, TRUE, (void)0, BenchXchgAcquire(&C->XWord),
           BenchXchgRelease(&C->XWord))
BENCH_LOOP(BenchLoopRawMcs, TRUE, BENCH_MCS_NODE Node, BenchMcsAcquire(&C->McsTail, &Node),
           BenchMcsRelease(&C->McsTail, &Node))
/* raw_mcs as an API: the same code, but a call and a return for each half. */
static BENCH_CALLED VOID
BenchMcsAcquireCalled(BENCH_MCS_NODE **Tail, BENCH_MCS_NODE *Node)
{
    BenchMcsAcquire(Tail, Node);
}

static BENCH_CALLED VOID
BenchMcsReleaseCalled(BENCH_MCS_NODE **Tail, BENCH_MCS_NODE *Node)
{
    BenchMcsRelease(Tail, Node);
}

BENCH_LOOP(BenchLoopRawMcsCalled, TRUE, BENCH_MCS_NODE Node,
           BenchMcsAcquireCalled(&C->McsTail, &Node), BenchMcsReleaseCalled(&C->McsTail, &Node))

/* ---------------------------------------------------------------- one window */

typedef ULONG64 BENCH_CONTENDED_LOOP(BENCH_CONTENDED *C);

typedef struct _BENCH_WINDOW
{
    ULONG64 Elapsed; // TSC cycles from t0 to the last end
    ULONG64 Total;
    ULONG64 Min;
    ULONG64 Max;
    ULONG64 Counter;
    ULONG64 OpsPerSecond;
} BENCH_WINDOW;

static VOID
BenchContendWorker(ULONG Index, PVOID Context)
{
    BENCH_CONTENDED_LOOP *Loop = (BENCH_CONTENDED_LOOP *)Context;
    BENCH_CONTENDED *C = &BenchC;
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG64 Halts, Wakes;

    /* The gate: the last to arrive stamps t0, arms the stop and opens it. */
    if (__atomic_add_fetch(&C->Ready, 1, __ATOMIC_ACQ_REL) == (LONG)C->Threads)
    {
        C->T0 = x86_rdtsc();
        __atomic_store_n(&BenchStopDeadline, C->T0 + BenchConfig.WindowMs * BenchConfig.KHz,
                         __ATOMIC_RELAXED);
        /* Release: pairs with the acquire load in BenchClockHook (deadline before number). */
        __atomic_store_n(&BenchStopWindow, C->Window, __ATOMIC_RELEASE);
        /* Release: pairs with the acquire load below; T0 is written before the gate opens. */
        __atomic_store_n(&C->Go, 1, __ATOMIC_RELEASE);
    }
    else
    {
        /*
         * A plain spin, not KiWaitForChange: a processor halted here would
         * start its window a host wake-up after t0. The wait lasts until the
         * last processor is dispatched (under overcommit, a host wake-up or
         * time slice) and is outside the timed window; a processor that never
         * arrives is the test watchdog's to report.
         */
        while (!__atomic_load_n(&C->Go, __ATOMIC_ACQUIRE))
        {
            x86_pause();
        }
    }
    Halts = Prcb->WaitHalts;
    Wakes = Prcb->WaitWakes;
    C->Slot[Index].Acquisitions = Loop(C);
    C->Slot[Index].End = x86_rdtsc();
    C->Slot[Index].Halts = Prcb->WaitHalts - Halts;
    C->Slot[Index].Wakes = Prcb->WaitWakes - Wakes;
}

static VOID
BenchWindow(BENCH_CONTENDED_LOOP *Loop, ULONG Threads, BENCH_WINDOW *Result)
{
    static ULONG Windows;
    BENCH_CONTENDED *C = &BenchC;
    ULONG64 Last = 0;

    memset(C, 0, sizeof(*C));
    KeInitializeSpinLock(&C->Lock);
    C->Threads = Threads;
    C->Window = ++Windows;
    C->CsWork = BenchConfig.CsWork;
    C->NcsWork = BenchConfig.NcsWork;

    /* KtRunOnProcessors publishes C to the others and their results back to us. */
    KtRunOnProcessors(Threads, BenchContendWorker, (PVOID)Loop);
    __atomic_store_n(&BenchStopWindow, 0, __ATOMIC_RELEASE);

    memset(Result, 0, sizeof(*Result));
    Result->Min = ~0ull;
    for (ULONG I = 0; I < Threads; I++)
    {
        ULONG64 N = C->Slot[I].Acquisitions;

        Result->Total += N;
        Result->Min = N < Result->Min ? N : Result->Min;
        Result->Max = N > Result->Max ? N : Result->Max;
        Last = C->Slot[I].End > Last ? C->Slot[I].End : Last;
    }
    Result->Elapsed = Last > C->T0 ? Last - C->T0 : 1;
    Result->Counter = C->Counter;
    Result->OpsPerSecond = Result->Total * BenchConfig.Frequency / Result->Elapsed;
}

/* ---------------------------------------------------------------- one lock, every N */

static VOID
BenchPrintWindow(const char *Prefix, const char *Name, ULONG Threads, ULONG Window,
                 const BENCH_WINDOW *W, BOOLEAN MutexOk)
{
    char Text[2][32];

    /* elapsed_ms x100 = cycles * 100 / kHz; cycles_per_op x100 = cycles * 100 / total */
    DbgPrint("%sname=%s mode=contended cpus=%u dur_ms=%llu elapsed_ms=%s total=%llu ops_per_s=%llu "
             "cycles_per_op=%s min=%llu max=%llu counter=%llu mutex_ok=%u cs_work=%u ncs_work=%u "
             "windows=%u window=%u tag=%s\n",
             Prefix, Name, Threads, BenchConfig.WindowMs,
             BenchFixed(Text[0], sizeof(Text[0]), W->Elapsed * 100 / BenchConfig.KHz), W->Total,
             W->OpsPerSecond,
             BenchFixed(Text[1], sizeof(Text[1]), W->Total == 0 ? 0 : W->Elapsed * 100 / W->Total),
             W->Min, W->Max, W->Counter, MutexOk, BenchConfig.CsWork, BenchConfig.NcsWork,
             BenchConfig.Windows, Window, BenchTag());
}

/*
 * One comment line per window with each processor's acquisitions, halts and
 * wake IPIs taken in its loop, and its end (ms after t0): where max/min
 * comes from.
 */
static VOID
BenchPrintSlots(const char *Name, ULONG Threads, ULONG Window)
{
    static char Line[BENCH_MAX_CPUS * 48 + 128];
    SIZE_T Used;

    Used = (SIZE_T)snprintf(Line, sizeof(Line), "# bench processors name=%s cpus=%u window=%u",
                            Name, Threads, Window);
    for (ULONG I = 0; I < Threads && Used < sizeof(Line); I++)
    {
        const BENCH_SLOT *Slot = &BenchC.Slot[I];
        ULONG64 EndMs = Slot->End > BenchC.T0 ? (Slot->End - BenchC.T0) / BenchConfig.KHz : 0;

        Used += (SIZE_T)snprintf(Line + Used, sizeof(Line) - Used, " %u:%llu/%llu/%llu/%llu", I,
                                 Slot->Acquisitions, Slot->Halts, Slot->Wakes, EndMs);
    }
    DbgPrint("%s (cpu:acquisitions/halts/wakes/end_ms)\n", Line);
}

static VOID
BenchContendedLock(const char *Name, BENCH_CONTENDED_LOOP *Loop)
{
    ULONG Active;

    BenchEnter();
    Active = BenchConfig.Processors;
    KtSetTickHook(BenchClockHook);

    /* N = 1, 2, 4, ... and finally every processor. */
    for (ULONG Threads = 1;; Threads = Threads * 2 < Active ? Threads * 2 : Active)
    {
        BENCH_WINDOW Windows[BENCH_MAX_WINDOWS];
        ULONG64 Rates[BENCH_MAX_WINDOWS];
        ULONG Median = 0;
        BOOLEAN MutexOk = TRUE;

        for (ULONG W = 0; W < BenchConfig.Windows; W++)
        {
            BenchWindow(Loop, Threads, &Windows[W]);
            Rates[W] = Windows[W].OpsPerSecond;
            MutexOk = MutexOk && Windows[W].Counter == Windows[W].Total;
            /* Mutual exclusion held: every increment under the lock is there. */
            KT_EXPECT_EQ(Windows[W].Counter, Windows[W].Total);
            KT_EXPECT(Windows[W].Total > 0);
            BenchPrintWindow("# bench window ", Name, Threads, W + 1, &Windows[W],
                             Windows[W].Counter == Windows[W].Total);
            BenchPrintSlots(Name, Threads, W + 1);
        }
        /* The median window by throughput is the row. */
        BenchSortU64(Rates, BenchConfig.Windows);
        for (ULONG W = 0; W < BenchConfig.Windows; W++)
        {
            if (Windows[W].OpsPerSecond == Rates[BenchConfig.Windows / 2])
            {
                Median = W;
                break;
            }
        }
        BenchPrintWindow("lockbench: ", Name, Threads, Median + 1, &Windows[Median], MutexOk);
        KT_EXPECT_EQ(BenchC.Lock, 0);
        KT_EXPECT(BenchC.McsTail == NULL);
        KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
        if (Threads == Active)
        {
            break;
        }
    }
    KtSetTickHook(NULL);
}

KTEST_EX(Bench, contended_1_spin_lock_at_dpc_level, KTEST_SLOW, 0)
{
    BenchContendedLock("KeAcquireSpinLockAtDpcLevel", BenchLoopAtDpcLevel);
}

KTEST_EX(Bench, contended_2_spin_lock_raising, KTEST_SLOW, 0)
{
    BenchContendedLock("KeAcquireSpinLock", BenchLoopRaising);
}

KTEST_EX(Bench, contended_3_queued_at_dpc_level, KTEST_SLOW, 0)
{
    BenchContendedLock("KeAcquireInStackQueuedSpinLockAtDpcLevel", BenchLoopQueuedAtDpcLevel);
}

KTEST_EX(Bench, contended_4_queued_raising, KTEST_SLOW, 0)
{
    BenchContendedLock("KeAcquireInStackQueuedSpinLock", BenchLoopQueuedRaising);
}

KTEST_EX(Bench, contended_5_virt_tas, KTEST_SLOW, 0)
{
    BenchContendedLock("virt_tas", BenchLoopVirtTas);
}

KTEST_EX(Bench, contended_6_raw_xchg, KTEST_SLOW, 0)
{
    BenchContendedLock("raw_xchg", BenchLoopRawXchg);
}

KTEST_EX(Bench, contended_7_raw_mcs, KTEST_SLOW, 0)
{
    BenchContendedLock("raw_mcs", BenchLoopRawMcs);
}

KTEST_EX(Bench, contended_8_virt_tas_called, KTEST_SLOW, 0)
{
    BenchContendedLock("virt_tas_called", BenchLoopVirtTasCalled);
}

KTEST_EX(Bench, contended_9_raw_mcs_called, KTEST_SLOW, 0)
{
    BenchContendedLock("raw_mcs_called", BenchLoopRawMcsCalled);
}
