/* SPDX-License-Identifier: MIT */
/*
 * Inter-processor requests at IPI_LEVEL (vector 0xE1) and the APC software
 * interrupt. KeIpiGenericCall runs a routine on every processor at once:
 *   1. the caller takes KiIpiLock (one broadcast at a time) at DISPATCH_LEVEL,
 *      fills the packet and sets each target's request bit, then IPIs them;
 *   2. each target, at IPI_LEVEL in the IPI handler, counts itself in Arrived
 *      and waits for Go; the one that completes the count sets AllArrived;
 *   3. the caller waits for AllArrived at DISPATCH_LEVEL, raises to IPI_LEVEL,
 *      sets Go (now every processor is at IPI_LEVEL: the routine runs on all
 *      at once), runs the routine itself, lowers to DISPATCH_LEVEL and waits
 *      for AllDone, which the last target to return from the routine sets;
 *   4. it releases the lock and lowers IRQL.
 * Every wait is KiWaitForChange on a word that changes once per broadcast
 * (ke/wait.c: spin, then halt; the changer wakes the halted), so no waiter is
 * woken by each arrival. Targets may halt at IPI_LEVEL (the wake vector is
 * above it); the caller waits below CLOCK_LEVEL, so its clock still ticks and
 * its waits stay bounded (SPINDLE_IPI_TIMEOUT): a processor that never
 * answers is a bug check whose freeze report shows where it is, not a hang.
 * Processors waiting for the lock keep interrupts on, so they still answer
 * another processor's broadcast and two callers cannot deadlock.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"
#include "lib/lib.h"

#define KI_IPI_GENERIC_CALL 0x1

/*
 * How long the caller waits for the other processors (generous: TCG on a
 * loaded host). A processor that never answers is a bug check naming it, and
 * the freeze report shows where it is. A fault test lowers it.
 */
volatile ULONG KiIpiTimeoutMs = 30000;

typedef struct _KI_IPI_PACKET
{
    PKIPI_BROADCAST_WORKER Routine;
    ULONG_PTR Argument;
    volatile ULONG_PTR Arrived;    // targets at IPI_LEVEL, ready to run the routine
    volatile ULONG_PTR AllArrived; // 0 -> 1 by the last target to arrive
    volatile ULONG_PTR Go;         // 0 -> 1 by the caller: run the routine
    volatile ULONG_PTR Done;       // targets that have returned from the routine
    volatile ULONG_PTR AllDone;    // 0 -> 1 by the last target to return
    ULONG_PTR Targets;             // processors taking part, the caller not counted
    ULONG Caller;                  // the caller's processor number
    /* Per processor: 1 once it has arrived / returned (to name the one that never did). */
    volatile UCHAR HasArrived[MAXIMUM_PROCESSORS];
    volatile UCHAR IsDone[MAXIMUM_PROCESSORS];
} KI_IPI_PACKET;

static KSPIN_LOCK KiIpiLock;
static KI_IPI_PACKET KiIpiPacket; // guarded by KiIpiLock
static volatile LONG KiIpiRequests[MAXIMUM_PROCESSORS];
volatile ULONG64 KiApcInterruptCount[MAXIMUM_PROCESSORS];

/* The caller's wait: a deadline on the performance counter. */
typedef struct _KI_IPI_WATCH
{
    KI_WAIT_WATCH Watch;
    KI_DEADLINE Deadline;
    volatile ULONG_PTR *Counter;
    volatile UCHAR *Marks; // HasArrived or IsDone: who has not yet
} KI_IPI_WATCH;

static VOID
KiIpiWatchCheck(KI_WAIT_WATCH *Watch)
{
    KI_IPI_WATCH *IpiWatch = CONTAINING_RECORD(Watch, KI_IPI_WATCH, Watch);

    if (KiDeadlinePassed(&IpiWatch->Deadline))
    {
        ULONG Culprit = 0;

        /* The first target whose mark is still clear is the one the report names. */
        while (Culprit < KiActiveProcessorCount &&
               (Culprit == KiIpiPacket.Caller ||
                __atomic_load_n(&IpiWatch->Marks[Culprit], __ATOMIC_RELAXED)))
        {
            Culprit++;
        }
        if (!KiBugCheckIsExpected())
        {
            DbgPrint("\n*** KeIpiGenericCall: processor %u has not %s after %u ms\n", Culprit,
                     IpiWatch->Marks == KiIpiPacket.HasArrived ? "taken the IPI"
                                                               : "returned from the routine",
                     KiIpiTimeoutMs);
        }
        KeBugCheckEx(SPINDLE_IPI_TIMEOUT, *IpiWatch->Counter + 1, KiIpiPacket.Targets + 1,
                     (ULONG_PTR)KiIpiPacket.Routine, Culprit);
    }
}

/*
 * The caller waits until *Flag (AllArrived or AllDone) is set, for at most
 * KiIpiTimeoutMs; *Counter and the first processor whose Marks entry is still
 * clear (the culprit) are reported if it times out. Below CLOCK_LEVEL.
 */
static VOID
KiIpiWaitForTargets(volatile ULONG_PTR *Flag, volatile ULONG_PTR *Counter, volatile UCHAR *Marks)
{
    KI_IPI_WATCH Watch;

    Watch.Watch.Check = KiIpiWatchCheck;
    KiStartDeadline(&Watch.Deadline, KiIpiTimeoutMs);
    Watch.Counter = Counter;
    Watch.Marks = Marks;
    /* Acquire (in KiWaitForChange): pairs with the last target's release of *Flag. */
    while (__atomic_load_n(Flag, __ATOMIC_ACQUIRE) == 0)
    {
        KiWaitForChange(Flag, 0, 0, &Watch.Watch);
    }
}

/* A target's part of the broadcast in KiIpiPacket, at IPI_LEVEL. */
static VOID
KiIpiRunPacket(VOID)
{
    KI_IPI_PACKET *Packet = &KiIpiPacket;

    Packet->HasArrived[KeGetCurrentPrcb()->Number] = 1; // for a timeout report only
    /* Acquire-release: arrival ordered after the request read; the last one tells the caller. */
    if (__atomic_add_fetch(&Packet->Arrived, 1, __ATOMIC_ACQ_REL) == Packet->Targets)
    {
        KiWaitSetAndWake(&Packet->AllArrived, 1);
    }
    /* Wait for Go: acquire, pairs with the caller's release (it is at IPI_LEVEL by then). */
    KiWaitForChange(&Packet->Go, 0, 0, NULL);
    Packet->Routine(Packet->Argument);
    Packet->IsDone[KeGetCurrentPrcb()->Number] = 1; // for a timeout report only
    /* Release: the routine's effects are visible before the caller sees AllDone. */
    if (__atomic_add_fetch(&Packet->Done, 1, __ATOMIC_ACQ_REL) == Packet->Targets)
    {
        KiWaitSetAndWake(&Packet->AllDone, 1);
    }
}

/* The IPI vector's handler, at IPI_LEVEL. Also wakes idle processors (no request set). */
static VOID
KiIpiInterrupt(struct x86_trap_frame *Frame, PVOID Context)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    LONG Requests = __atomic_exchange_n(&KiIpiRequests[Prcb->Number], 0, __ATOMIC_ACQUIRE);

    if (Requests & KI_IPI_GENERIC_CALL)
    {
        KiIpiRunPacket();
    }
}

/* The APC software interrupt, at APC_LEVEL. Spindle has no APC objects: it is counted. */
static VOID
KiApcInterrupt(struct x86_trap_frame *Frame, PVOID Context)
{
    KiApcInterruptCount[KeGetCurrentPrcb()->Number]++;
}

VOID
KiInitializeIpi(VOID)
{
    KeInitializeSpinLock(&KiIpiLock);
    KiConnectVector(KI_VECTOR_IPI, KiIpiInterrupt, NULL);
    KiConnectVector(KI_VECTOR_APC, KiApcInterrupt, NULL);
}

/*
 * Requests a software interrupt at Level (APC_LEVEL or DISPATCH_LEVEL) on this
 * processor; it is delivered once IRQL drops below Level. Any IRQL. Other
 * levels bug-check INVALID_SOFTWARE_INTERRUPT.
 */
VOID
KiRequestSoftwareInterrupt(KIRQL Level)
{
    if (Level != APC_LEVEL && Level != DISPATCH_LEVEL)
    {
        KeBugCheckEx(INVALID_SOFTWARE_INTERRUPT, Level, 0, 0, 0);
    }
    HalRequestSelfInterrupt(Level == APC_LEVEL ? KI_VECTOR_APC : KI_VECTOR_DPC);
}

/*
 * Runs WorkerRoutine(Argument) on every active processor at IPI_LEVEL, all at
 * the same time, and returns when every one has returned. IRQL <=
 * DISPATCH_LEVEL, unchanged. Returns the value of this processor's call.
 */
ULONG_PTR
KeIpiGenericCall(PKIPI_BROADCAST_WORKER BroadcastFunction, ULONG_PTR Context)
{
    KIRQL OldIrql;
    ULONG Self;
    ULONG_PTR Result;
    KIRQL LockIrql;

    KiCheckIrqlAtMost(DISPATCH_LEVEL, BroadcastFunction);
    KeAcquireSpinLock(&KiIpiLock, &OldIrql);
    Self = KeGetCurrentPrcb()->Number;
    KiIpiPacket.Routine = BroadcastFunction;
    KiIpiPacket.Argument = Context;
    KiIpiPacket.Targets = KiActiveProcessorCount - 1;
    KiIpiPacket.Arrived = 0;
    KiIpiPacket.AllArrived = KiIpiPacket.Targets == 0;
    KiIpiPacket.Go = 0;
    KiIpiPacket.Done = 0;
    KiIpiPacket.AllDone = KiIpiPacket.Targets == 0;
    KiIpiPacket.Caller = Self;
    memset((PVOID)KiIpiPacket.HasArrived, 0, sizeof(KiIpiPacket.HasArrived));
    memset((PVOID)KiIpiPacket.IsDone, 0, sizeof(KiIpiPacket.IsDone));
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        if (Number != Self)
        {
            /* Release: the packet is filled before the target can see its request. */
            __atomic_or_fetch(&KiIpiRequests[Number], KI_IPI_GENERIC_CALL, __ATOMIC_RELEASE);
            HalSendIpi(KiGetPrcb(Number)->ApicId, KI_VECTOR_IPI);
        }
    }

    KiIpiWaitForTargets(&KiIpiPacket.AllArrived, &KiIpiPacket.Arrived, KiIpiPacket.HasArrived);
    LockIrql = KfRaiseIrql(IPI_LEVEL);
    KiWaitSetAndWake(&KiIpiPacket.Go, 1); // every processor is at IPI_LEVEL: start them all
    Result = BroadcastFunction(Context);
    KeLowerIrql(LockIrql);
    KiIpiWaitForTargets(&KiIpiPacket.AllDone, &KiIpiPacket.Done, KiIpiPacket.IsDone);
    KeReleaseSpinLock(&KiIpiLock, OldIrql);
    return Result;
}
