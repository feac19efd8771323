/* SPDX-License-Identifier: MIT */
/*
 * KeWait: the kernel's one waiting primitive (kernel/ke/wait.c) seen through
 * the locks that use it. A queued-lock waiter that outlasts its spin bound
 * halts and the hand-off wakes it with an IPI (counted per processor in
 * WaitHalts, WaitWakes and WaitWakesSent); on every processor at once, a
 * contended queued lock halts and wakes and stays exclusive; a waiter at
 * HIGH_LEVEL or with interrupts off never halts, it only spins (WaitSpinOnly).
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define KW_WAIT_MS       20000 // bound on every cross-processor wait (a loaded host is slow)
#define KW_CONTENTION_MS 1000  // the all-processor run
#define KW_HOLD_US       300   // critical section of the all-processor run

static ULONG64
KwNowMs(VOID)
{
    LARGE_INTEGER Frequency;
    ULONG64 Now = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;

    return Now / ((ULONG64)Frequency.QuadPart / 1000);
}

/* Waits until *Counter exceeds Base, at most KW_WAIT_MS; TRUE if it did. Any IRQL. */
static BOOLEAN
KwWaitAbove(volatile ULONG64 *Counter, ULONG64 Base)
{
    ULONG64 Start = KwNowMs();

    while (__atomic_load_n(Counter, __ATOMIC_ACQUIRE) <= Base)
    {
        if (KwNowMs() - Start > KW_WAIT_MS)
        {
            return FALSE;
        }
        x86_pause();
    }
    return TRUE;
}

/* Two processors: 0 holds the lock, 1 waits for it in the way Mode says. */
typedef enum _KW_MODE
{
    KwQueuedDispatch,      // queued lock at DISPATCH_LEVEL: halts
    KwQueuedHigh,          // queued lock at HIGH_LEVEL: spins only
    KwQueuedNoInterrupt,   // queued lock at DISPATCH_LEVEL, interrupts off: spins only
    KwOrdinaryNoInterrupt, // ordinary lock, interrupts off: spins only
    KwOrdinaryDispatch,    // ordinary lock at DISPATCH_LEVEL: halts
} KW_MODE;

typedef struct _KW_PAIR
{
    KW_MODE Mode;
    KSPIN_LOCK Lock;
    volatile LONG WaiterStarted;
    BOOLEAN SawHalt;     // processor 0: the waiter's WaitHalts moved while it held the lock
    BOOLEAN SawSpinOnly; // processor 0: the waiter's WaitSpinOnly moved
    ULONG64 Halts, Wakes, SpinOnly, Sent; // deltas over the wait
} KW_PAIR;

static BOOLEAN
KwModeHalts(KW_MODE Mode)
{
    return Mode == KwQueuedDispatch || Mode == KwOrdinaryDispatch;
}

static BOOLEAN
KwModeQueued(KW_MODE Mode)
{
    return Mode == KwQueuedDispatch || Mode == KwQueuedHigh || Mode == KwQueuedNoInterrupt;
}

static VOID
KwHold(KW_PAIR *Pair)
{
    PKPRCB Waiter = KiGetPrcb(1);
    ULONG64 Halts = Waiter->WaitHalts;
    ULONG64 SpinOnly = Waiter->WaitSpinOnly;
    ULONG64 Sent = KeGetCurrentPrcb()->WaitWakesSent;
    KLOCK_QUEUE_HANDLE Handle;
    KIRQL OldIrql = PASSIVE_LEVEL;

    if (KwModeQueued(Pair->Mode))
    {
        KeAcquireInStackQueuedSpinLock(&Pair->Lock, &Handle);
    }
    else
    {
        KeAcquireSpinLock(&Pair->Lock, &OldIrql);
    }
    __atomic_store_n(&Pair->WaiterStarted, 1, __ATOMIC_RELEASE);
    /* Hold the lock until the waiter has halted, or spent a spin bound without halting. */
    if (KwModeHalts(Pair->Mode))
    {
        Pair->SawHalt = KwWaitAbove(&Waiter->WaitHalts, Halts);
    }
    else
    {
        Pair->SawSpinOnly = KwWaitAbove(&Waiter->WaitSpinOnly, SpinOnly);
        KeStallExecutionProcessor(20000); // several more spin bounds: still no halt
    }
    if (KwModeQueued(Pair->Mode))
    {
        KeReleaseInStackQueuedSpinLock(&Handle);
    }
    else
    {
        KeReleaseSpinLock(&Pair->Lock, OldIrql);
    }
    Pair->Sent = KeGetCurrentPrcb()->WaitWakesSent - Sent;
}

static VOID
KwWait(KW_PAIR *Pair)
{
    PKPRCB Waiter = KeGetCurrentPrcb();
    BOOLEAN NoInterrupts = Pair->Mode == KwQueuedNoInterrupt || Pair->Mode == KwOrdinaryNoInterrupt;
    ULONG64 Halts, Wakes, SpinOnly;
    ULONG64 Flags = 0;
    ULONG64 Start = KwNowMs();
    KLOCK_QUEUE_HANDLE Handle;
    KIRQL OldIrql;

    while (__atomic_load_n(&Pair->WaiterStarted, __ATOMIC_ACQUIRE) == 0)
    {
        if (KwNowMs() - Start > KW_WAIT_MS)
        {
            KtFail("processor 0 took the lock in time", __FILE__, __LINE__);
            return;
        }
        x86_pause();
    }
    KeRaiseIrql(Pair->Mode == KwQueuedHigh ? HIGH_LEVEL : DISPATCH_LEVEL, &OldIrql);
    if (NoInterrupts)
    {
        Flags = x86_save_disable();
    }
    Halts = Waiter->WaitHalts;
    Wakes = Waiter->WaitWakes;
    SpinOnly = Waiter->WaitSpinOnly;
    if (KwModeQueued(Pair->Mode))
    {
        KeAcquireInStackQueuedSpinLockAtDpcLevel(&Pair->Lock, &Handle);
    }
    else
    {
        KeAcquireSpinLockAtDpcLevel(&Pair->Lock);
    }
    Pair->Halts = Waiter->WaitHalts - Halts;
    Pair->Wakes = Waiter->WaitWakes - Wakes;
    Pair->SpinOnly = Waiter->WaitSpinOnly - SpinOnly;
    if (KwModeQueued(Pair->Mode))
    {
        KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
    }
    else
    {
        KeReleaseSpinLockFromDpcLevel(&Pair->Lock);
    }
    if (NoInterrupts)
    {
        x86_restore_flags(Flags);
    }
    KeLowerIrql(OldIrql);
}

static VOID
KwPairRoutine(ULONG Index, PVOID Context)
{
    if (Index == 0)
    {
        KwHold(Context);
    }
    else
    {
        KwWait(Context);
    }
}

static VOID
KwRunPair(KW_PAIR *Pair, KW_MODE Mode)
{
    memset(Pair, 0, sizeof(*Pair));
    Pair->Mode = Mode;
    KeInitializeSpinLock(&Pair->Lock);
    KtRunOnProcessors(2, KwPairRoutine, Pair);
    KT_EXPECT_EQ(Pair->Lock, 0);
    KtLog("waiter: %llu halt(s), %llu wake IPI(s) taken, %llu spin-only bound(s); holder sent %llu",
          (unsigned long long)Pair->Halts, (unsigned long long)Pair->Wakes,
          (unsigned long long)Pair->SpinOnly, (unsigned long long)Pair->Sent);
}

/*
 * A queued waiter at DISPATCH_LEVEL halts; the hand-off's IPI wakes it. A
 * clock tick can end the halt just before the hand-off: the waiter then
 * unpublishes itself and the releaser rightly sends nothing (wait.c, W6). So
 * the pair runs until a round shows the IPI, at most KW_WAKE_ROUNDS rounds;
 * every round must halt.
 */
#define KW_WAKE_ROUNDS 20

KTEST_EX(KeWait, halted_queued_waiter_is_woken_by_the_hand_off, KTEST_SMP_ONLY, 0)
{
    KW_PAIR Pair;
    ULONG Round;

    for (Round = 0; Round < KW_WAKE_ROUNDS; Round++)
    {
        KwRunPair(&Pair, KwQueuedDispatch);
        KT_EXPECT(Pair.SawHalt);
        KT_EXPECT_GE(Pair.Halts, 1);
        if (Pair.Wakes >= 1 && Pair.Sent >= 1)
        {
            break;
        }
    }
    KT_EXPECT_LT(Round, KW_WAKE_ROUNDS); // some hand-off woke the halted waiter by IPI
}

/* The ordinary lock's waiter halts too, and gets the lock once it is released. */
KTEST_EX(KeWait, halted_spin_lock_waiter_is_woken_by_the_release, KTEST_SMP_ONLY, 0)
{
    KW_PAIR Pair;

    KwRunPair(&Pair, KwOrdinaryDispatch);
    KT_EXPECT(Pair.SawHalt);
    KT_EXPECT_GE(Pair.Halts,
                 1); // the wake may be the IPI or a clock tick (wait.c, "the one window")
}

/*
 * A processor halted on some other word (a fenced wait: an IPI barrier, a
 * gate) puts its bit in KiWaitHaltedMask but not in any lock's slot, so the
 * ordinary lock's releases elsewhere run no K3 scan (ke/wait.c, "the one
 * window"). Index 0 halts on Word; index 1 releases a lock of its own
 * KW_RELEASES times while the other is published, and counts its scans.
 */
#define KW_RELEASES 1000
#define KW_ROUNDS   20

typedef struct _KW_ELSEWHERE
{
    volatile ULONG_PTR Word;    // index 0 waits for it to change
    volatile ULONG64 WaiterBit; // index 0's bit, published before it waits
    KSPIN_LOCK Lock;            // index 1's own lock
    volatile ULONG Rounds;      // rounds with the waiter published throughout
    volatile ULONG64 Scans;     // index 1's K3 scans in those rounds
} KW_ELSEWHERE;

static VOID
KwHaltElsewhere(ULONG Index, PVOID Context)
{
    KW_ELSEWHERE *E = Context;
    PKPRCB Prcb = KeGetCurrentPrcb();

    if (Index == 0)
    {
        /* Release: the bit is published before index 1 looks for it in the mask. */
        __atomic_store_n(&E->WaiterBit, 1ull << Prcb->Number, __ATOMIC_RELEASE);
        KiWaitForChange(&E->Word, 0, 0, NULL); // fenced, no watch: halts until woken
        return;
    }
    for (ULONG64 Start = KwNowMs();
         __atomic_load_n(&E->WaiterBit, __ATOMIC_ACQUIRE) == 0 && KwNowMs() - Start < KW_WAIT_MS;)
    {
        x86_pause();
    }
    for (ULONG Round = 0; Round < KW_ROUNDS && E->Rounds < 3 && E->WaiterBit != 0; Round++)
    {
        volatile ULONG64 *Slot = &KiWaitHaltedSlots[KiWaitSlot(&E->Lock)];
        BOOLEAN SlotEmpty;
        ULONG64 Scans;
        KIRQL OldIrql;
        ULONG64 Start = KwNowMs();

        /* Wait (bounded) until the other is published, halted or about to. */
        while ((__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_ACQUIRE) & E->WaiterBit) == 0 &&
               KwNowMs() - Start < KW_WAIT_MS)
        {
            x86_pause();
        }
        /* An unfenced waiter whose word shares our lock's slot would rightly cost scans. */
        SlotEmpty = __atomic_load_n(Slot, __ATOMIC_ACQUIRE) == 0;
        KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
        Scans = Prcb->WaitWakeScans;
        for (ULONG i = 0; i < KW_RELEASES; i++)
        {
            KeAcquireSpinLockAtDpcLevel(&E->Lock);
            KeReleaseSpinLockFromDpcLevel(&E->Lock);
        }
        Scans = Prcb->WaitWakeScans - Scans;
        KeLowerIrql(OldIrql);
        /*
         * Count the round only if the other stayed published throughout (a
         * tick may end its halt) and nobody used our lock's slot.
         */
        if ((__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_ACQUIRE) & E->WaiterBit) != 0 &&
            SlotEmpty && __atomic_load_n(Slot, __ATOMIC_ACQUIRE) == 0)
        {
            E->Rounds++;
            E->Scans += Scans;
        }
    }
    KiWaitSetAndWake(&E->Word, 1);
}

KTEST_EX(KeWait, ordinary_release_ignores_a_processor_halted_elsewhere, KTEST_SMP_ONLY, 0)
{
    KW_ELSEWHERE E;

    memset(&E, 0, sizeof(E));
    KeInitializeSpinLock(&E.Lock);
    KtRunOnProcessors(2, KwHaltElsewhere, &E);
    KtLog("%u rounds of %u releases with the other processor published: %llu K3 scans", E.Rounds,
          KW_RELEASES, (unsigned long long)E.Scans);
    KT_EXPECT_GE(E.Rounds, 1); // the other processor did halt and stay published
    KT_EXPECT_EQ(E.Scans, 0);
}

/*
 * One wake IPI per halt (ke/wait.c, "the claim"): index 0 waits on Word,
 * which nobody changes until the end; once it has halted, index 1 runs
 * KW_WAKE_BURST wakes on Word in a row. Every IPI claims one publication of
 * index 0, and each publication but the last ends in a halt (the word stays
 * unchanged), so the IPIs sent are at most the halts index 0 made after the
 * burst began plus two (the halt it was in, and a last publication whose
 * re-check may see the final change). Without the claim every wake in the
 * burst finds index 0 still published while its virtual processor wakes up,
 * and sends another IPI. Run for a fenced wait and for the ordinary lock's
 * kind (unfenced, wake one).
 *
 * A burst may send nothing: if a clock tick woke index 0 just before it, the
 * whole burst can fall in the spin that precedes index 0's next halt. So only
 * the upper bound is per round; that some wake found index 0 halted is
 * checked over all rounds (without it, the bound would hold vacuously).
 */
#define KW_WAKE_BURST   200
#define KW_BURST_ROUNDS 8

typedef struct _KW_BURST
{
    volatile ULONG_PTR Word;  // index 0 waits for it to change
    ULONG Flags;              // the wait's and the wakes' kind
    volatile ULONG64 Waiter;  // index 0's processor number + 1, once it is about to wait
    volatile ULONG64 Halts;   // index 0's WaitHalts before it waited
    BOOLEAN Halted;           // index 1 saw index 0 halt before the burst
    ULONG64 HaltsBeforeBurst; // index 0's WaitHalts when the burst began
    ULONG64 HaltsAfter;       // index 0's WaitHalts once it stopped waiting
    ULONG64 Sent;             // wake IPIs index 1 sent in the burst
} KW_BURST;

static VOID
KwWakeBurst(ULONG Index, PVOID Context)
{
    KW_BURST *B = Context;
    PKPRCB Prcb = KeGetCurrentPrcb();
    PKPRCB Waiter;
    ULONG64 Sent;

    if (Index == 0)
    {
        B->Halts = Prcb->WaitHalts;
        /* Release: Halts is written before index 1 reads it (its acquire in KwWaitAbove). */
        __atomic_store_n(&B->Waiter, Prcb->Number + 1, __ATOMIC_RELEASE);
        KiWaitForChange(&B->Word, 0, B->Flags, NULL);
        B->HaltsAfter = Prcb->WaitHalts;
        return;
    }
    if (KwWaitAbove(&B->Waiter, 0))
    {
        Waiter = KiGetPrcb((ULONG)B->Waiter - 1);
        B->Halted = KwWaitAbove(&Waiter->WaitHalts, B->Halts);
        B->HaltsBeforeBurst = Waiter->WaitHalts;
        Sent = Prcb->WaitWakesSent;
        for (ULONG i = 0; B->Halted && i < KW_WAKE_BURST; i++)
        {
            KiWaitWakeHalted(&B->Word, B->Flags); // the word is unchanged: every wake is extra
        }
        B->Sent = Prcb->WaitWakesSent - Sent;
    }
    KiWaitSetAndWake(&B->Word, 1);
}

/*
 * KW_BURST_ROUNDS bursts of one kind. How many IPIs a burst would send
 * without the claim depends on how long the waiter's virtual processor takes
 * to wake, so every round counts; each must stay within its bound.
 */
static VOID
KwRunWakeBursts(ULONG Flags)
{
    ULONG64 Sent = 0, Halts = 0;

    for (ULONG Round = 0; Round < KW_BURST_ROUNDS; Round++)
    {
        KW_BURST B;

        memset(&B, 0, sizeof(B));
        B.Flags = Flags;
        KtRunOnProcessors(2, KwWakeBurst, &B);
        KT_EXPECT(B.Halted);
        KT_EXPECT_LE(B.Sent, B.HaltsAfter - B.HaltsBeforeBurst + 2);
        Sent += B.Sent;
        Halts += B.HaltsAfter - B.HaltsBeforeBurst;
    }
    KtLog("flags %#x: %u rounds of %u wakes: the waiter halted %llu times, %llu IPIs sent", Flags,
          KW_BURST_ROUNDS, KW_WAKE_BURST, (unsigned long long)Halts, (unsigned long long)Sent);
    KT_EXPECT_GE(Sent, 1);
}

KTEST_EX(KeWait, a_halted_waiter_takes_one_wake_ipi_per_halt, KTEST_SMP_ONLY, 0)
{
    KwRunWakeBursts(0);
    KwRunWakeBursts(KI_WAIT_UNFENCED | KI_WAIT_WAKE_ONE);
}

/* At HIGH_LEVEL no interrupt gets through: the waiter only spins. */
KTEST_EX(KeWait, queued_waiter_at_high_level_never_halts, KTEST_SMP_ONLY, 0)
{
    KW_PAIR Pair;

    KwRunPair(&Pair, KwQueuedHigh);
    KT_EXPECT(Pair.SawSpinOnly);
    KT_EXPECT_GE(Pair.SpinOnly, 1);
    KT_EXPECT_EQ(Pair.Halts, 0);
}

/* With interrupts off nothing could wake it: the waiter only spins. */
KTEST_EX(KeWait, waiters_with_interrupts_off_never_halt, KTEST_SMP_ONLY, 0)
{
    KW_PAIR Pair;

    KwRunPair(&Pair, KwQueuedNoInterrupt);
    KT_EXPECT(Pair.SawSpinOnly);
    KT_EXPECT_EQ(Pair.Halts, 0);
    KwRunPair(&Pair, KwOrdinaryNoInterrupt);
    KT_EXPECT(Pair.SawSpinOnly);
    KT_EXPECT_EQ(Pair.Halts, 0);
}

typedef struct _KW_CONTENTION
{
    KSPIN_LOCK Lock;
    volatile LONG Inside;   // processors in the critical section: never above 1
    volatile LONG Overlaps; // times Inside was found above 1
    ULONG64 Counter;        // updated only under the lock
    ULONG64 Acquisitions[MAXIMUM_PROCESSORS];
    ULONG64 Halts[MAXIMUM_PROCESSORS], Wakes[MAXIMUM_PROCESSORS], Sent[MAXIMUM_PROCESSORS];
    ULONG64 Deadline;
} KW_CONTENTION;

static VOID
KwContend(ULONG Index, PVOID Context)
{
    KW_CONTENTION *Run = Context;
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG64 Halts = Prcb->WaitHalts, Wakes = Prcb->WaitWakes, Sent = Prcb->WaitWakesSent;
    BOOLEAN Stop = FALSE;

    while (!Stop)
    {
        KLOCK_QUEUE_HANDLE Handle;

        KeAcquireInStackQueuedSpinLock(&Run->Lock, &Handle);
        if (__atomic_add_fetch(&Run->Inside, 1, __ATOMIC_RELAXED) != 1)
        {
            __atomic_add_fetch(&Run->Overlaps, 1, __ATOMIC_RELAXED);
        }
        Run->Counter++;
        Run->Acquisitions[Index]++;
        KeStallExecutionProcessor(KW_HOLD_US);
        Stop = KwNowMs() >= Run->Deadline;
        __atomic_sub_fetch(&Run->Inside, 1, __ATOMIC_RELAXED);
        KeReleaseInStackQueuedSpinLock(&Handle);
    }
    Run->Halts[Index] = Prcb->WaitHalts - Halts;
    Run->Wakes[Index] = Prcb->WaitWakes - Wakes;
    Run->Sent[Index] = Prcb->WaitWakesSent - Sent;
}

/*
 * Halt first (queuedlock.c): once some waiter is halted, a queued waiter
 * whose predecessor waits too halts without spinning, and a release to its
 * running predecessor wakes it early. Processor 0 holds the lock; 1 queues
 * behind 0 and halts; then 2 queues behind 1 and must halt before it has
 * spent a spin bound (WaitSpinBounds; without the hint it spends one first).
 * 0 releases once 1 is running again (a clock tick ended its halt), so a wake
 * IPI from 0's release goes to 2, ahead of 2's own hand-off.
 */
typedef struct _KW_TRIO
{
    KSPIN_LOCK Lock;
    volatile ULONG_PTR Holder; // processor 0's queue entry once it owns the lock
    volatile LONG TwoGo;       // processor 0: 1 has halted; 2 may queue
    BOOLEAN OneHalted;         // processor 0: 1 halted behind it
    BOOLEAN TwoHalted;         // processor 0: 2 halted behind 1
    BOOLEAN OneRunning;        // processor 0: 1 left its halt before the release
    ULONG64 TwoSpinBounds;     // spin bounds 2 had spent when it halted
    ULONG64 Sent;              // wake IPIs sent by 0's release
    ULONG64 TwoWakes;          // wake IPIs 2 took while it waited
} KW_TRIO;

/* Waits until *Flag is non-zero, at most KW_WAIT_MS; TRUE if it was. */
static BOOLEAN
KwWaitForFlag(volatile ULONG_PTR *Flag, const char *What)
{
    ULONG64 Start = KwNowMs();

    while (__atomic_load_n(Flag, __ATOMIC_ACQUIRE) == 0)
    {
        if (KwNowMs() - Start > KW_WAIT_MS)
        {
            KtFail(What, __FILE__, __LINE__);
            return FALSE;
        }
        x86_pause();
    }
    return TRUE;
}

/* Waits until processor Number has left its halt (it published no wait address). */
static BOOLEAN
KwWaitUntilRunning(ULONG Number)
{
    ULONG64 Start = KwNowMs();

    while (__atomic_load_n(&KiGetPrcb(Number)->WaitAddress, __ATOMIC_ACQUIRE) != NULL)
    {
        if (KwNowMs() - Start > KW_WAIT_MS)
        {
            return FALSE;
        }
        x86_pause();
    }
    return TRUE;
}

static VOID
KwTrioHold(KW_TRIO *Trio)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    PKPRCB One = KiGetPrcb(1), Two = KiGetPrcb(2);
    ULONG64 OneHalts = One->WaitHalts, TwoHalts = Two->WaitHalts;
    ULONG64 TwoSpinBounds = Two->WaitSpinBounds;
    ULONG64 Sent;
    KLOCK_QUEUE_HANDLE Handle;

    KeAcquireInStackQueuedSpinLock(&Trio->Lock, &Handle);
    __atomic_store_n(&Trio->Holder, (ULONG_PTR)&Handle.LockQueue, __ATOMIC_RELEASE);
    Trio->OneHalted = KwWaitAbove(&One->WaitHalts, OneHalts);
    __atomic_store_n(&Trio->TwoGo, 1, __ATOMIC_RELEASE);
    Trio->TwoHalted = Trio->OneHalted && KwWaitAbove(&Two->WaitHalts, TwoHalts);
    Trio->TwoSpinBounds = Two->WaitSpinBounds - TwoSpinBounds;
    Trio->OneRunning = Trio->TwoHalted && KwWaitUntilRunning(1);
    Sent = Prcb->WaitWakesSent;
    KeReleaseInStackQueuedSpinLock(&Handle);
    Trio->Sent = Prcb->WaitWakesSent - Sent;
}

static VOID
KwTrioRoutine(ULONG Index, PVOID Context)
{
    KW_TRIO *Trio = Context;
    PKPRCB Prcb = KeGetCurrentPrcb();
    KLOCK_QUEUE_HANDLE Handle;
    KIRQL OldIrql;
    ULONG64 Wakes;

    if (Index == 0)
    {
        KwTrioHold(Trio);
        return;
    }
    if (Index > 2 || !KwWaitForFlag(&Trio->Holder, "processor 0 took the lock in time") ||
        (Index == 2 &&
         !KwWaitForFlag((volatile ULONG_PTR *)&Trio->TwoGo, "processor 1 halted in time")))
    {
        return;
    }
    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    Wakes = Prcb->WaitWakes;
    KeAcquireInStackQueuedSpinLockAtDpcLevel(&Trio->Lock, &Handle);
    if (Index == 2)
    {
        Trio->TwoWakes = Prcb->WaitWakes - Wakes;
    }
    KeReleaseInStackQueuedSpinLockFromDpcLevel(&Handle);
    KeLowerIrql(OldIrql);
}

KTEST_EX(KeWait, queued_waiter_behind_a_waiter_halts_first_and_is_woken_early, KTEST_SMP_ONLY, 0)
{
    KW_TRIO Trio;
    ULONG Round;
    BOOLEAN HaltedFirst = FALSE, WokenEarly = FALSE;

    if (KeQueryActiveProcessorCount(NULL) < 3)
    {
        KT_SKIP("needs three processors");
    }
    /*
     * Clock ticks decide the details of one round: 1's tick may end its halt
     * just as 2 queues (nobody halted: 2 rightly spins first), 1 may halt
     * again or 2 may be woken by its own tick before 0 releases (no IPI is
     * needed). Run until some round has shown each, at most KW_WAKE_ROUNDS.
     */
    for (Round = 0; Round < KW_WAKE_ROUNDS && !(HaltedFirst && WokenEarly); Round++)
    {
        memset(&Trio, 0, sizeof(Trio));
        KeInitializeSpinLock(&Trio.Lock);
        KtRunOnProcessors(3, KwTrioRoutine, &Trio);
        KT_EXPECT_EQ(Trio.Lock, 0);
        KT_ASSERT(Trio.OneHalted); // halts came within KW_WAIT_MS
        KT_ASSERT(Trio.TwoHalted);
        HaltedFirst = HaltedFirst || Trio.TwoSpinBounds == 0;
        WokenEarly = WokenEarly || (Trio.OneRunning && Trio.Sent >= 1 && Trio.TwoWakes >= 1);
    }
    KtLog("%u round(s): halted first %u, woken early %u", Round, HaltedFirst, WokenEarly);
    KT_EXPECT(HaltedFirst); // 2 halted before spending any spin bound
    KT_EXPECT(WokenEarly);  // a release woke 2 ahead of its hand-off
}

/*
 * Every processor takes one queued lock around a critical section longer
 * than the spin bound, for KW_CONTENTION_MS: the waiters halt, the hand-offs
 * wake them, the lock stays exclusive and FIFO keeps the shares close.
 */
KTEST_EX(KeWait, contended_queued_lock_halts_and_wakes_on_every_processor, KTEST_SMP_ONLY, 0)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    KW_CONTENTION *Run = ExAllocatePoolWithTag(NonPagedPool, sizeof(*Run), 'tWwK');
    ULONG64 Total = 0, Halts = 0, Wakes = 0, Sent = 0, Min = ~0ull, Max = 0;

    KT_ASSERT(Run != NULL);
    memset(Run, 0, sizeof(*Run));
    KeInitializeSpinLock(&Run->Lock);
    Run->Deadline = KwNowMs() + KW_CONTENTION_MS;
    KtRunOnProcessors(0, KwContend, Run);

    for (ULONG p = 0; p < Count; p++)
    {
        Total += Run->Acquisitions[p];
        Halts += Run->Halts[p];
        Wakes += Run->Wakes[p];
        Sent += Run->Sent[p];
        Min = Run->Acquisitions[p] < Min ? Run->Acquisitions[p] : Min;
        Max = Run->Acquisitions[p] > Max ? Run->Acquisitions[p] : Max;
    }
    KtLog("%u processors: %llu acquisitions (min %llu, max %llu), %llu halts, %llu wake IPIs "
          "taken, %llu sent",
          Count, (unsigned long long)Total, (unsigned long long)Min, (unsigned long long)Max,
          (unsigned long long)Halts, (unsigned long long)Wakes, (unsigned long long)Sent);
    KT_EXPECT_EQ(Run->Overlaps, 0);
    KT_EXPECT_EQ(Run->Counter, Total);
    KT_EXPECT_EQ(Run->Lock, 0);
    KT_EXPECT_GE(Min, 1);
    KT_EXPECT_GE(Halts, 1);
    KT_EXPECT_GE(Wakes, 1);
    KT_EXPECT_GE(Sent, 1);
    ExFreePoolWithTag(Run, 'tWwK');
}

#define KW_PING_PONG_MS 500
#define KW_STOP         2

typedef struct _KW_PING_PONG
{
    volatile ULONG_PTR Turn; // 0 or 1: whose turn; KW_STOP: both leave
    ULONG64 Rounds;
    ULONG64 Ms;
    ULONG64 Halts[2];
} KW_PING_PONG;

static VOID
KwPingPong(ULONG Index, PVOID Context)
{
    KW_PING_PONG *Run = Context;
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG64 Halts = Prcb->WaitHalts;
    ULONG64 Start = KwNowMs();
    KIRQL OldIrql;

    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    for (;;)
    {
        ULONG_PTR Turn = __atomic_load_n(&Run->Turn, __ATOMIC_ACQUIRE);

        while (Turn != Index && Turn != KW_STOP)
        {
            Turn = KiWaitForChange(&Run->Turn, Turn, 0, NULL);
        }
        if (Turn == KW_STOP)
        {
            break;
        }
        if (Index == 0)
        {
            Run->Rounds++;
            if (KwNowMs() - Start >= KW_PING_PONG_MS)
            {
                Run->Ms = KwNowMs() - Start;
                KiWaitSetAndWake(&Run->Turn, KW_STOP);
                break;
            }
        }
        KiWaitSetAndWake(&Run->Turn, 1 - Index);
    }
    KeLowerIrql(OldIrql);
    Run->Halts[Index] = Prcb->WaitHalts - Halts;
}

/*
 * The bound on a strict FIFO hand-off to a halted processor: two processors
 * pass a turn back and forth and halt at once for every wait (spin bound 0
 * for the duration), so each pass costs one wake-up of a halted virtual
 * processor. Logs the rate; under an emulator on an overcommitted host this
 * is how fast a queued lock can go when every waiter halts.
 */
KTEST_EX(KeWait, halted_ping_pong_measures_the_wake_up_rate, KTEST_SMP_ONLY, 0)
{
    KW_PING_PONG Run;
    ULONG SpinLimit = KiWaitSpinLimit;

    memset(&Run, 0, sizeof(Run));
    KiWaitSpinLimit = 0;
    KtRunOnProcessors(2, KwPingPong, &Run);
    KiWaitSpinLimit = SpinLimit;
    KtLog("%llu round trips in %llu ms: %llu wake-ups of a halted processor per second; "
          "halts %llu + %llu",
          (unsigned long long)Run.Rounds, (unsigned long long)Run.Ms,
          (unsigned long long)(Run.Ms == 0 ? 0 : Run.Rounds * 2 * 1000 / Run.Ms),
          (unsigned long long)Run.Halts[0], (unsigned long long)Run.Halts[1]);
    KT_EXPECT_GE(Run.Rounds, 1);
    KT_EXPECT_GE(Run.Halts[0] + Run.Halts[1], 1);
}

#if DBG
#define KW_WATCH_TIMEOUT_MS 400 // the deadlock watch's limit during the test
#define KW_WATCH_HOLD_MS    300 // each of two owners holds the lock this long

typedef struct _KW_WATCH
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Handles[3];
    volatile LONG Owners; // owners that have taken the lock so far
} KW_WATCH;

/* Busy-waits (no pause needed: plain reads) until the lock word names Handle, at most KW_WAIT_MS.
 */
static BOOLEAN
KwWaitForTail(KW_WATCH *Run, KLOCK_QUEUE_HANDLE *Handle)
{
    ULONG64 Start = KwNowMs();

    while (__atomic_load_n(&Run->Lock, __ATOMIC_ACQUIRE) != (ULONG_PTR)&Handle->LockQueue)
    {
        if (KwNowMs() - Start > KW_WAIT_MS)
        {
            return FALSE;
        }
        x86_pause();
    }
    return TRUE;
}

/*
 * Index 0 takes the lock, then index 1 queues, then index 2: 0 and 1 each hold
 * it KW_WATCH_HOLD_MS, so index 2 waits about twice that, longer than the
 * watch's limit, while the lock changes hands once.
 */
static VOID
KwWatchRoutine(ULONG Index, PVOID Context)
{
    KW_WATCH *Run = Context;
    KLOCK_QUEUE_HANDLE *Handle = &Run->Handles[Index];

    if (Index != 0)
    {
        /* Queue behind the previous index, in order. */
        KT_ASSERT(KwWaitForTail(Run, &Run->Handles[Index - 1]));
    }
    KeAcquireInStackQueuedSpinLock(&Run->Lock, Handle);
    InterlockedIncrement(&Run->Owners);
    if (Index == 0)
    {
        KT_EXPECT(KwWaitForTail(Run, &Run->Handles[2])); // everyone is queued
    }
    if (Index != 2)
    {
        KeStallExecutionProcessor(KW_WATCH_HOLD_MS * 1000);
    }
    KeReleaseInStackQueuedSpinLock(Handle);
}

#endif

/*
 * The checked build's deadlock watch measures progress, not wall time alone:
 * a waiter that waits longer than the limit while the lock changes hands is
 * not reported (the watch starts a new window when it finds a new owner).
 */
KTEST_EX(KeWait, deadlock_watch_restarts_when_the_lock_changes_hands, KTEST_SMP_ONLY, 0)
{
#if DBG
    KW_WATCH Run;
    ULONG Timeout = KiSpinLockTimeoutMs;

    if (KeQueryActiveProcessorCount(NULL) < 3)
    {
        KT_SKIP("needs 3 processors");
    }
    memset(&Run, 0, sizeof(Run));
    KeInitializeSpinLock(&Run.Lock);
    KiSpinLockTimeoutMs = KW_WATCH_TIMEOUT_MS;
    KtRunOnProcessors(3, KwWatchRoutine, &Run);
    KiSpinLockTimeoutMs = Timeout;
    KT_EXPECT_EQ(Run.Owners, 3);
    KT_EXPECT_EQ(Run.Lock, 0);
#else
    KT_SKIP("the deadlock watch is a checked-build feature");
#endif
}
