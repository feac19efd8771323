/* SPDX-License-Identifier: MIT */
/*
 * Inter-processor requests at IPI_LEVEL (vector 0xE1) and the APC software
 * interrupt. KeIpiGenericCall runs a routine on every processor at once:
 *   1. the caller takes KiIpiLock (one broadcast at a time) at DISPATCH_LEVEL,
 *      fills the packet and sets each target's request bit, then IPIs them;
 *   2. every processor, the caller included, raises to IPI_LEVEL and waits at
 *      a barrier until all have arrived, runs the routine, and counts itself done;
 *   3. the caller waits for the count, releases the lock and lowers IRQL.
 * Processors waiting for the lock keep interrupts on, so they still answer
 * another processor's broadcast and two callers cannot deadlock. Both waits
 * are bounded (SPINDLE_IPI_TIMEOUT).
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

#define KI_IPI_GENERIC_CALL 0x1

/*
 * How long a broadcast waits for the other processors (generous: under TCG a
 * call takes tens of milliseconds). A processor that never answers is a bug
 * check whose freeze report shows where it is, not a silent hang.
 */
#define KI_IPI_TIMEOUT_MS     30000
#define KI_IPI_CLOCK_INTERVAL 64 // spins between two looks at the clock

typedef struct _KI_IPI_PACKET
{
    PKIPI_BROADCAST_WORKER Routine;
    ULONG_PTR Argument;
    volatile LONG Arrived; // barrier: processors at IPI_LEVEL ready to run the routine
    volatile LONG Done;    // processors that have returned from the routine
    LONG Count;            // processors taking part
} KI_IPI_PACKET;

static KSPIN_LOCK KiIpiLock;
static KI_IPI_PACKET KiIpiPacket; // guarded by KiIpiLock
static volatile LONG KiIpiRequests[MAXIMUM_PROCESSORS];
volatile ULONG64 KiApcInterruptCount[MAXIMUM_PROCESSORS];

/*
 * Spins until *Counter reaches Packet->Count, for at most KI_IPI_TIMEOUT_MS.
 * The acquire load pairs with the other processors' increments of *Counter.
 */
static VOID
KiIpiWaitForAll(KI_IPI_PACKET *Packet, volatile LONG *Counter)
{
    LARGE_INTEGER Frequency;
    ULONG64 Start = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    ULONG64 Limit = (ULONG64)Frequency.QuadPart / 1000 * KI_IPI_TIMEOUT_MS;

    for (ULONG Spins = 1; __atomic_load_n(Counter, __ATOMIC_ACQUIRE) < Packet->Count; Spins++)
    {
        x86_pause();
        if (Spins % KI_IPI_CLOCK_INTERVAL == 0 &&
            (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Start > Limit)
        {
            KeBugCheckEx(SPINDLE_IPI_TIMEOUT, (ULONG_PTR)*Counter, (ULONG_PTR)Packet->Count,
                         (ULONG_PTR)Packet->Routine, 0);
        }
    }
}

/* Runs this processor's part of the broadcast in KiIpiPacket; returns the routine's value. */
static ULONG_PTR
KiIpiRunPacket(VOID)
{
    KI_IPI_PACKET *Packet = &KiIpiPacket;
    ULONG_PTR Result;

    /* The barrier: every processor counts itself in (release, so its arrival is
     * ordered after its IPI-request read), then waits for all the others. */
    __atomic_add_fetch(&Packet->Arrived, 1, __ATOMIC_ACQ_REL);
    KiIpiWaitForAll(Packet, &Packet->Arrived);
    Result = Packet->Routine(Packet->Argument);
    /* Release: the routine's effects are visible before the caller sees Done. */
    __atomic_add_fetch(&Packet->Done, 1, __ATOMIC_RELEASE);
    return Result;
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
    KiIpiPacket.Count = (LONG)KiActiveProcessorCount;
    KiIpiPacket.Arrived = 0;
    KiIpiPacket.Done = 0;
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        if (Number != Self)
        {
            /* Release: the packet is filled before the target can see its request. */
            __atomic_or_fetch(&KiIpiRequests[Number], KI_IPI_GENERIC_CALL, __ATOMIC_RELEASE);
            HalSendIpi(KiGetPrcb(Number)->ApicId, KI_VECTOR_IPI);
        }
    }

    LockIrql = KfRaiseIrql(IPI_LEVEL);
    Result = KiIpiRunPacket();
    KiIpiWaitForAll(&KiIpiPacket, &KiIpiPacket.Done); // pairs with each routine's release of Done
    KeLowerIrql(LockIrql);
    KeReleaseSpinLock(&KiIpiLock, OldIrql);
    return Result;
}
