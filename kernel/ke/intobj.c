/* SPDX-License-Identifier: MIT */
/*
 * Interrupt objects (KINTERRUPT), interrupt spin locks and
 * KeSynchronizeExecution, API.md §3. IoConnectInterrupt chains an object on
 * a device vector (0x30-0xBF, IRQL = vector >> 4); the vector's dispatcher,
 * run by the generic interrupt path at that IRQL, walks the chain and for
 * each object enabled on this processor raises to SynchronizeIrql, takes
 * *ActualLock and calls the ISR. A level-sensitive vector stops at the first
 * ISR that claims the interrupt; a latched one calls them all.
 *
 * The chain is read without a lock. Writers (connect, disconnect) serialise
 * on the vector's ChainLock and publish a linked object with a release store,
 * so a dispatcher sees it whole or not at all; an unlinked object keeps its
 * Flink, so a dispatcher standing on it walks on. Before freeing an unlinked
 * object, IoDisconnectInterrupt waits until every processor that was inside
 * this vector's dispatcher at the unlink has left it: Entered[n] counts
 * processor n's entries and exits, odd while inside.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

#define KI_FIRST_DEVICE_VECTOR 0x30
#define KI_LAST_DEVICE_VECTOR  0xbf
#define KI_INTERRUPT_TAG       'tnIK'

typedef struct _KI_VECTOR_CHAIN
{
    LIST_ENTRY ObjectList;                      // KINTERRUPTs; written under ChainLock
    KSPIN_LOCK ChainLock;                       // serialises connect and disconnect
    volatile ULONG Entered[MAXIMUM_PROCESSORS]; // per processor: odd while dispatching
} KI_VECTOR_CHAIN;

static KI_VECTOR_CHAIN KiVectorChains[KI_LAST_DEVICE_VECTOR - KI_FIRST_DEVICE_VECTOR + 1];

static KI_VECTOR_CHAIN *
KiChainOf(ULONG Vector)
{
    KI_VECTOR_CHAIN *Chain = &KiVectorChains[Vector - KI_FIRST_DEVICE_VECTOR];

    if (Chain->ObjectList.Flink == NULL) // zeroed storage: first use (under ChainLock)
    {
        InitializeListHead(&Chain->ObjectList);
    }
    return Chain;
}

/* Calls one object's ISR at its SynchronizeIrql holding its ActualLock; returns its answer. */
static BOOLEAN
KiCallServiceRoutine(PKINTERRUPT Interrupt)
{
    KIRQL OldIrql = KfRaiseIrql(Interrupt->SynchronizeIrql);
    BOOLEAN Handled;

    KiAcquireSpinLock(Interrupt->ActualLock);
    Handled = Interrupt->ServiceRoutine(Interrupt, Interrupt->ServiceContext);
    KiReleaseSpinLock(Interrupt->ActualLock);
    KeLowerIrql(OldIrql);
    if (Handled)
    {
        __atomic_add_fetch(&Interrupt->ServiceCount, 1, __ATOMIC_RELAXED);
    }
    return Handled;
}

/* The dispatcher installed on each connected device vector: runs at IRQL = vector >> 4. */
static VOID
KiInterruptDispatch(struct x86_trap_frame *Frame, PVOID Context)
{
    KI_VECTOR_CHAIN *Chain = Context;
    ULONG Number = KeGetCurrentPrcb()->Number;
    PLIST_ENTRY Entry;

    (void)Frame;
    /*
     * A full barrier (locked add): Entered turns odd before the chain is read.
     * Pairs with IoDisconnectInterrupt's fence between its unlink and its read
     * of Entered: either it sees us inside, or we do not see the object.
     */
    __atomic_add_fetch(&Chain->Entered[Number], 1, __ATOMIC_SEQ_CST);
    /* Acquire loads: pair with the release store that linked each object. */
    for (Entry = __atomic_load_n(&Chain->ObjectList.Flink, __ATOMIC_ACQUIRE);
         Entry != &Chain->ObjectList; Entry = __atomic_load_n(&Entry->Flink, __ATOMIC_ACQUIRE))
    {
        PKINTERRUPT Interrupt = CONTAINING_RECORD(Entry, KINTERRUPT, InterruptListEntry);

        if ((Interrupt->Affinity & ((KAFFINITY)1 << Number)) == 0)
        {
            continue;
        }
        if (KiCallServiceRoutine(Interrupt) && Interrupt->Mode == LevelSensitive)
        {
            break;
        }
    }
    /* Release: this dispatch's reads of the chain are done before Entered turns even. */
    __atomic_add_fetch(&Chain->Entered[Number], 1, __ATOMIC_RELEASE);
}

/* Takes a chain's ChainLock at DISPATCH_LEVEL; returns the IRQL to restore. */
static KIRQL
KiLockChain(KI_VECTOR_CHAIN *Chain)
{
    KIRQL OldIrql = KeRaiseIrqlToDpcLevel();

    KiAcquireSpinLock(&Chain->ChainLock);
    return OldIrql;
}

static VOID
KiUnlockChain(KI_VECTOR_CHAIN *Chain, KIRQL OldIrql)
{
    KiReleaseSpinLock(&Chain->ChainLock);
    KeLowerIrql(OldIrql);
}

/* TRUE if Interrupt may join the vector's chain: empty, or all shareable in the same mode. */
static BOOLEAN
KiCanShareVector(KI_VECTOR_CHAIN *Chain, PKINTERRUPT Interrupt)
{
    PLIST_ENTRY Entry = Chain->ObjectList.Flink;

    if (Entry == &Chain->ObjectList)
    {
        return TRUE;
    }
    for (; Entry != &Chain->ObjectList; Entry = Entry->Flink)
    {
        PKINTERRUPT Other = CONTAINING_RECORD(Entry, KINTERRUPT, InterruptListEntry);
        if (!Other->ShareVector || !Interrupt->ShareVector || Other->Mode != Interrupt->Mode)
        {
            return FALSE;
        }
    }
    return TRUE;
}

/*
 * Waits until every processor that was inside the chain's dispatcher has left
 * it once. Bounded: an ISR that never returns ends in the deadlock watch,
 * named by the lock that ISR holds.
 */
static VOID
KiWaitForDispatchers(KI_VECTOR_CHAIN *Chain, PKINTERRUPT Interrupt)
{
    for (ULONG Number = 0; Number < KiActiveProcessorCount; Number++)
    {
        ULONG Seen = __atomic_load_n(&Chain->Entered[Number], __ATOMIC_ACQUIRE);
        KI_SPIN_WAIT Wait = KI_SPIN_WAIT_INIT;

        if ((Seen & 1) == 0)
        {
            continue;
        }
        /* Acquire: pairs with the dispatcher's release increment on exit. */
        while (__atomic_load_n(&Chain->Entered[Number], __ATOMIC_ACQUIRE) == Seen)
        {
            KiSpinWaitPause(&Wait, Interrupt->ActualLock, (ULONG_PTR)__builtin_return_address(0));
        }
    }
}

/* ---------------------------------------------------------------- interrupt spin locks */

/*
 * Raises to Interrupt->SynchronizeIrql and takes *Interrupt->ActualLock;
 * returns the entry IRQL. IRQL in <= SynchronizeIrql, out SynchronizeIrql.
 */
KIRQL
KeAcquireInterruptSpinLock(PKINTERRUPT Interrupt)
{
    KIRQL OldIrql = KfRaiseIrql(Interrupt->SynchronizeIrql);

    KiAcquireSpinLock(Interrupt->ActualLock);
    return OldIrql;
}

/* Releases *Interrupt->ActualLock and lowers IRQL to OldIrql. IRQL in SynchronizeIrql. */
VOID
KeReleaseInterruptSpinLock(PKINTERRUPT Interrupt, KIRQL OldIrql)
{
    KiReleaseSpinLock(Interrupt->ActualLock);
    KeLowerIrql(OldIrql);
}

/*
 * Calls SynchronizeRoutine(SynchronizeContext) at SynchronizeIrql holding
 * ActualLock (the only fields it reads); returns the routine's BOOLEAN
 * unchanged. IRQL in <= SynchronizeIrql, unchanged on return.
 */
BOOLEAN
KeSynchronizeExecution(PKINTERRUPT Interrupt, PKSYNCHRONIZE_ROUTINE SynchronizeRoutine,
                       PVOID SynchronizeContext)
{
    KIRQL OldIrql = KfRaiseIrql(Interrupt->SynchronizeIrql);
    BOOLEAN Result;

    KiAcquireSpinLock(Interrupt->ActualLock);
    Result = SynchronizeRoutine(SynchronizeContext);
    KiReleaseSpinLock(Interrupt->ActualLock);
    KeLowerIrql(OldIrql);
    return Result;
}

/* ---------------------------------------------------------------- connect, disconnect */

/*
 * Connects ServiceRoutine(Interrupt, ServiceContext) to device vector Vector
 * (0x30-0xBF) on the processors in ProcessorEnableMask. Irql must be
 * Vector >> 4 and SynchronizeIrql in Irql..HIGH_LEVEL; SpinLock NULL means the
 * object's own lock. A vector is shared only if every object on it says
 * ShareVector and all have the same Mode. PASSIVE_LEVEL. Returns
 * STATUS_SUCCESS with *InterruptObjectOut set, STATUS_INVALID_PARAMETER, or
 * STATUS_INSUFFICIENT_RESOURCES.
 */
NTSTATUS
IoConnectInterrupt(PKINTERRUPT *InterruptObjectOut, PKSERVICE_ROUTINE ServiceRoutine,
                   PVOID ServiceContext, PKSPIN_LOCK SpinLock, ULONG Vector, KIRQL Irql,
                   KIRQL SynchronizeIrql, KINTERRUPT_MODE InterruptMode, BOOLEAN ShareVector,
                   KAFFINITY ProcessorEnableMask, BOOLEAN FloatingSave)
{
    KAFFINITY Active = KeQueryActiveProcessors();
    KI_VECTOR_CHAIN *Chain;
    PKINTERRUPT Interrupt;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(PASSIVE_LEVEL, InterruptObjectOut);
    if (InterruptObjectOut == NULL || ServiceRoutine == NULL || Vector < KI_FIRST_DEVICE_VECTOR ||
        Vector > KI_LAST_DEVICE_VECTOR || Irql != (KIRQL)(Vector >> 4) || SynchronizeIrql < Irql ||
        SynchronizeIrql > HIGH_LEVEL ||
        (InterruptMode != LevelSensitive && InterruptMode != Latched) ||
        (ProcessorEnableMask & Active) == 0)
    {
        return STATUS_INVALID_PARAMETER;
    }

    Interrupt = ExAllocatePoolWithTag(NonPagedPool, sizeof(KINTERRUPT), KI_INTERRUPT_TAG);
    if (Interrupt == NULL)
    {
        return STATUS_INSUFFICIENT_RESOURCES;
    }
    RtlZeroMemory(Interrupt, sizeof(*Interrupt));
    Interrupt->Type = InterruptObject;
    Interrupt->Size = sizeof(KINTERRUPT);
    Interrupt->ServiceRoutine = ServiceRoutine;
    Interrupt->ServiceContext = ServiceContext;
    KeInitializeSpinLock(&Interrupt->SpinLock);
    Interrupt->ActualLock = SpinLock != NULL ? SpinLock : &Interrupt->SpinLock;
    Interrupt->Vector = Vector;
    Interrupt->Irql = Irql;
    Interrupt->SynchronizeIrql = SynchronizeIrql;
    Interrupt->ShareVector = ShareVector;
    Interrupt->FloatingSave = FloatingSave;
    Interrupt->Mode = InterruptMode;
    Interrupt->Affinity = ProcessorEnableMask & Active;
    Interrupt->ProcessorNumber = (ULONG)__builtin_ctzll(Interrupt->Affinity);

    Chain = &KiVectorChains[Vector - KI_FIRST_DEVICE_VECTOR];
    OldIrql = KiLockChain(Chain);
    Chain = KiChainOf(Vector);
    if (!KiCanShareVector(Chain, Interrupt))
    {
        KiUnlockChain(Chain, OldIrql);
        ExFreePoolWithTag(Interrupt, KI_INTERRUPT_TAG);
        return STATUS_INVALID_PARAMETER;
    }
    Interrupt->Connected = TRUE;
    Interrupt->InterruptListEntry.Flink = &Chain->ObjectList;
    Interrupt->InterruptListEntry.Blink = Chain->ObjectList.Blink;
    /* Release: the object is complete before a dispatcher can reach it. */
    __atomic_store_n(&Chain->ObjectList.Blink->Flink, &Interrupt->InterruptListEntry,
                     __ATOMIC_RELEASE);
    Chain->ObjectList.Blink = &Interrupt->InterruptListEntry;
    KiConnectVector(Vector, KiInterruptDispatch, Chain);
    KiUnlockChain(Chain, OldIrql);

    *InterruptObjectOut = Interrupt;
    return STATUS_SUCCESS;
}

/*
 * Unlinks Interrupt from its vector, waits until no processor can be
 * running its ISR, and frees it. PASSIVE_LEVEL.
 */
VOID
IoDisconnectInterrupt(PKINTERRUPT Interrupt)
{
    KI_VECTOR_CHAIN *Chain = &KiVectorChains[Interrupt->Vector - KI_FIRST_DEVICE_VECTOR];
    PLIST_ENTRY Entry = &Interrupt->InterruptListEntry;
    KIRQL OldIrql;

    KiCheckIrqlAtMost(PASSIVE_LEVEL, Interrupt);
    ASSERT(Interrupt->Connected);
    OldIrql = KiLockChain(Chain);
    RtlpCheckListEntry(Entry);
    /* The unlinked entry keeps its Flink, so a dispatcher standing on it walks on. */
    __atomic_store_n(&Entry->Blink->Flink, Entry->Flink, __ATOMIC_RELAXED);
    Entry->Flink->Blink = Entry->Blink;
    Interrupt->Connected = FALSE;
    KiUnlockChain(Chain, OldIrql);

    /* Full fence: the unlink is visible before Entered is read; pairs with the dispatcher's. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    KiWaitForDispatchers(Chain, Interrupt);
    ExFreePoolWithTag(Interrupt, KI_INTERRUPT_TAG);
}

/*
 * Raises Vector on processor Processor as a fixed interrupt, a self-IPI when
 * Processor is the caller's. Any IRQL (test hook).
 */
VOID
KiRequestInterrupt(ULONG Processor, ULONG Vector)
{
    ULONG64 Flags = x86_save_disable();

    if (Processor == KeGetCurrentPrcb()->Number)
    {
        HalRequestSelfInterrupt(Vector);
    }
    else
    {
        HalSendIpi(KiGetPrcb(Processor)->ApicId, Vector);
    }
    x86_restore_flags(Flags);
}
