/* SPDX-License-Identifier: MIT */
/*
 * KeGenericCallDpc: one routine run as a DPC on every active processor at
 * once, with a reverse barrier the routines synchronise on (API.md §5.1).
 *   1. a caller takes a ticket and waits for its turn at its own IRQL (below
 *      DISPATCH_LEVEL, interrupts on), so meanwhile it still runs the DPCs of
 *      the call being served: two callers cannot deadlock, and turns are FIFO;
 *   2. at its turn it raises to DISPATCH_LEVEL, queues the routine on every
 *      other processor with SystemArgument1 = &Done (N) and SystemArgument2 =
 *      &Barrier {N, N}, runs the routine itself, and waits for Done to reach 0;
 *   3. it lowers IRQL and passes the turn on.
 * The barrier word is a sense bit (0x80000000) | the processors still to
 * arrive. Each arrival decrements it; the last (count 0) stores the flipped
 * sense | N in one release store and gets TRUE; the others wait for the sense
 * bit to change and get FALSE. Flip and refill are one store, so a processor
 * that leaves early and arrives at the next synchronisation counts against
 * the new round, never the old one.
 * Every wait is the kernel's KiWaitForChange (spin, then halt until the
 * processor that changes the word wakes it) and is bounded: a waited-on word
 * that does not change for KiGenericCallTimeoutMs bug-checks
 * SPINDLE_DPC_CALL_TIMEOUT.
 */
#include "kernel/ke/ke.h"

#define KI_REVERSE_BARRIER_SENSE 0x80000000u

/*
 * How long a waited-on word may stay unchanged, in ms (generous: under TCG a
 * vCPU may be off its host core for a long time; the Fault suite shortens
 * it). Each change restarts the bound, so a long queue of callers is not a
 * timeout; a processor that never arrives is.
 */
volatile ULONG KiGenericCallTimeoutMs = 30000;

/* SPINDLE_DPC_CALL_TIMEOUT's P4: which wait ran out. */
#define KI_GENERIC_CALL_WAIT_TURN    1 // a caller for its turn
#define KI_GENERIC_CALL_WAIT_BARRIER 2 // KeSignalCallDpcSynchronize for the other processors
#define KI_GENERIC_CALL_WAIT_DONE    3 // the caller for every KeSignalCallDpcDone

/*
 * The waits use the kernel's one waiting primitive (KiWaitForChange), which
 * waits on pointer-sized words: the turn and the done counter are ULONG_PTR,
 * and the barrier is waited on as the 8-byte word {Barrier, TotalProcessors}
 * (TotalProcessors does not change during a call), so the call's barrier is
 * 8-byte aligned.
 */
_Static_assert(sizeof(DEFERRED_REVERSE_BARRIER) == sizeof(ULONG_PTR),
               "the barrier is waited on as one pointer-sized word");

static volatile ULONG_PTR KiGenericCallNextTicket; // the next caller's ticket
static volatile ULONG_PTR KiGenericCallNowServing; // the ticket whose call runs
static KDPC KiGenericCallDpc[MAXIMUM_PROCESSORS];  // owned by the call being served

/* A wait's bound: no change of the word for KiGenericCallTimeoutMs. */
typedef struct _KI_GENERIC_CALL_WATCH
{
    KI_WAIT_WATCH Watch;
    KI_DEADLINE Deadline;
    volatile ULONG_PTR *Word;
    ULONG_PTR Value;
    ULONG_PTR Which;
} KI_GENERIC_CALL_WATCH;

static VOID
KiGenericCallWatchCheck(KI_WAIT_WATCH *Watch)
{
    KI_GENERIC_CALL_WATCH *Call = CONTAINING_RECORD(Watch, KI_GENERIC_CALL_WATCH, Watch);

    if (KiDeadlinePassed(&Call->Deadline))
    {
        KeBugCheckEx(SPINDLE_DPC_CALL_TIMEOUT, (ULONG_PTR)Call->Word, Call->Value,
                     KeGetCurrentIrql(), Call->Which);
    }
}

/*
 * Waits until *Word differs from Value and returns the new value (acquire:
 * pairs with the release that changed it); spins, then halts (KiWaitForChange).
 * No change for KiGenericCallTimeoutMs bug-checks SPINDLE_DPC_CALL_TIMEOUT
 * (P1 = Word, P2 = Value, P3 = current IRQL, P4 = which wait).
 */
static ULONG_PTR
KiGenericCallWaitForChange(volatile ULONG_PTR *Word, ULONG_PTR Value, ULONG_PTR Which)
{
    KI_GENERIC_CALL_WATCH Watch;

    Watch.Watch.Check = KiGenericCallWatchCheck;
    KiStartDeadline(&Watch.Deadline, KiGenericCallTimeoutMs);
    Watch.Word = Word;
    Watch.Value = Value;
    Watch.Which = Which;
    return KiWaitForChange(Word, Value, 0, &Watch.Watch);
}

/* Runs this processor's share of the call directly, as the DPC drain would run it. */
static VOID
KiGenericCallRunLocal(PKDPC Dpc, ULONG_PTR *Done, PDEFERRED_REVERSE_BARRIER Barrier)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    BOOLEAN WasActive = Prcb->DpcRoutineActive;

    Prcb->DpcRoutineActive = TRUE;
    Dpc->DeferredRoutine(Dpc, Dpc->DeferredContext, Done, Barrier);
    /* As after any DPC: back at DISPATCH_LEVEL; P1 packs (current << 8) | expected. */
    KiCheck(KeGetCurrentIrql() == DISPATCH_LEVEL, IRQL_UNEXPECTED_VALUE,
            ((ULONG_PTR)KeGetCurrentIrql() << 8) | DISPATCH_LEVEL, Dpc->DeferredRoutine, Dpc, 0);
    Prcb->DpcRoutineActive = WasActive;
}

/*
 * Runs Routine(Dpc, Context, &Done, &Barrier) once on every active processor
 * at DISPATCH_LEVEL (see the top) and returns when each has called
 * KeSignalCallDpcDone. IRQL <= APC_LEVEL, unchanged; the checked build
 * bug-checks IRQL_NOT_LESS_OR_EQUAL (0xA: P1 = Routine, P2 = IRQL, P3 = 0,
 * P4 = caller) at DISPATCH_LEVEL or above. Holds no lock while it waits.
 */
VOID
KeGenericCallDpc(PKDEFERRED_ROUTINE Routine, PVOID Context)
{
    DEFERRED_REVERSE_BARRIER Barrier __attribute__((aligned(sizeof(ULONG_PTR))));
    ULONG_PTR Done;
    ULONG_PTR Ticket;
    ULONG_PTR Serving;
    ULONG Count;
    ULONG Self;
    KIRQL OldIrql;

    /* It waits for DPCs, so it must run below DISPATCH_LEVEL. */
    KiCheckIrqlAtMost(APC_LEVEL, Routine);

    /* Relaxed: the ticket only orders callers; the turn wait below does the acquiring. */
    Ticket = __atomic_fetch_add(&KiGenericCallNextTicket, 1, __ATOMIC_RELAXED);
    Serving = __atomic_load_n(&KiGenericCallNowServing, __ATOMIC_ACQUIRE);
    while (Serving != Ticket)
    {
        /* Acquire pairs with the previous caller's release of the turn: its DPCs are done. */
        Serving = KiGenericCallWaitForChange(&KiGenericCallNowServing, Serving,
                                             KI_GENERIC_CALL_WAIT_TURN);
    }

    Count = KiActiveProcessorCount;
    Done = Count;
    Barrier.Barrier = Count;
    Barrier.TotalProcessors = Count;
    KeRaiseIrql(DISPATCH_LEVEL, &OldIrql);
    Self = KeGetCurrentPrcb()->Number;
    for (ULONG Number = 0; Number < Count; Number++)
    {
        PKDPC Dpc = &KiGenericCallDpc[Number];

        KeInitializeDpc(Dpc, Routine, Context);
        KeSetTargetProcessorDpc(Dpc, (CCHAR)Number);
        KeSetImportanceDpc(Dpc, HighImportance);
        if (Number != Self)
        {
            /* The insert's DPC lock orders Done and Barrier before the target reads them. */
            BOOLEAN Queued = KeInsertQueueDpc(Dpc, &Done, &Barrier);
            ASSERT(Queued); // the previous call's DPCs ran before its turn ended
            (void)Queued;
        }
    }
    KiGenericCallRunLocal(&KiGenericCallDpc[Self], &Done, &Barrier);

    /* Acquire pairs with each KeSignalCallDpcDone's release: the routines' effects are visible. */
    for (ULONG_PTR Left = __atomic_load_n(&Done, __ATOMIC_ACQUIRE); Left != 0;)
    {
        Left = KiGenericCallWaitForChange(&Done, Left, KI_GENERIC_CALL_WAIT_DONE);
    }
    KeLowerIrql(OldIrql);

    /* Release: this call's use of the DPC objects ends before the next caller's turn. */
    KiWaitSetAndWake(&KiGenericCallNowServing, Ticket + 1);
}

/*
 * Waits until all TotalProcessors processors of the call have called it with
 * this barrier; returns TRUE on the last to arrive, FALSE on the others.
 * DISPATCH_LEVEL, inside a KeGenericCallDpc routine.
 */
LOGICAL
KeSignalCallDpcSynchronize(PVOID SystemArgument2)
{
    PDEFERRED_REVERSE_BARRIER Barrier = SystemArgument2;
    volatile ULONG *Word = &Barrier->Barrier;
    volatile ULONG_PTR *WaitWord = (volatile ULONG_PTR *)Barrier; // {Barrier, TotalProcessors}
    ULONG Value;
    ULONG Sense;

    ASSERT(KeGetCurrentIrql() == DISPATCH_LEVEL);

    /* Acquire-release: the last arrival sees every earlier arrival's writes. */
    Value = __atomic_sub_fetch(Word, 1, __ATOMIC_ACQ_REL);
    Sense = Value & KI_REVERSE_BARRIER_SENSE;
    if ((Value & ~KI_REVERSE_BARRIER_SENSE) == 0)
    {
        /* Release: pairs with the waiters' acquire of the flipped word below. */
        __atomic_store_n(Word, (Sense ^ KI_REVERSE_BARRIER_SENSE) | Barrier->TotalProcessors,
                         __ATOMIC_RELEASE);
        KiWaitWakeHalted(WaitWord, 0); // K2-K3 of ke/wait.c's handshake
        return TRUE;
    }
    while ((Value & KI_REVERSE_BARRIER_SENSE) == Sense)
    {
        ULONG_PTR Pair = (ULONG_PTR)Value | ((ULONG_PTR)Barrier->TotalProcessors << 32);

        Value = (ULONG)KiGenericCallWaitForChange(WaitWord, Pair, KI_GENERIC_CALL_WAIT_BARRIER);
    }
    return FALSE;
}

/*
 * Counts this processor's routine as done; after it the routine must not
 * touch either system argument. DISPATCH_LEVEL, inside a KeGenericCallDpc routine.
 */
VOID
KeSignalCallDpcDone(PVOID SystemArgument1)
{
    ASSERT(KeGetCurrentIrql() == DISPATCH_LEVEL);

    volatile ULONG_PTR *Done = SystemArgument1;

    /* Release: pairs with KeGenericCallDpc's acquire of Done; the locked RMW is K1 and K2. */
    if (__atomic_sub_fetch(Done, 1, __ATOMIC_ACQ_REL) == 0)
    {
        KiWaitWakeHalted(Done, KI_WAIT_UNFENCED);
    }
}
