/* SPDX-License-Identifier: MIT */
/*
 * The checked-build lock verifier and fault injection (kernel/ke/verifier.c).
 *
 * Lock bookkeeping: each processor's table of the spin locks it holds (and
 * the queued locks it waits for), for recursion checks, deadlock reports and
 * the order graph. The deadlock watch (KiSpinWaitCheck) names the owner of a
 * lock a waiter has waited for too long.
 *
 * Lock-order verifier: a global graph of lock orders. Every acquisition of an
 * ordinary, queued, interrupt, cancel or device-queue spin lock (they all go
 * through spinlock.c or queuedlock.c) adds an edge A->B for each lock A the
 * processor holds while it takes B. A lock's identity is its address, not a
 * class: an NT lock is a field of the object it guards (a device queue, a
 * driver's extension, an interrupt object), created in loops and in pool, so
 * there is no declaration site to name a class by, and two objects of one
 * type legitimately nest (parent and child). An identity begins at the first
 * recorded acquisition and ends when the lock is initialised again
 * (KeInitializeSpinLock, which KeInitializeDeviceQueue and the interrupt
 * objects call) or the pool block holding it is freed (ExFreePool): a stack
 * lock or reused pool never inherits the edges of the lock it replaces.
 * The acquisition that would close a cycle bug-checks before it waits:
 *   0xC4 DRIVER_VERIFIER_DETECTED_VIOLATION, P1 0x1001 (lock hierarchy
 *   violation), P2 the lock being taken, P3 the lock held that closes the
 *   cycle, P4 the processor that recorded the opposite order.
 * IRQL safety: a lock taken inside an interrupt above DISPATCH_LEVEL in one
 * place, and with interrupts enabled below that level in another, can
 * deadlock its processor against its own interrupt:
 *   0xC4, P1 0x1002 (Spindle: lock shared with an interrupt taken with it
 *   deliverable), P2 the lock, P3 the IRQL of the interrupt acquisition,
 *   P4 the IRQL of the exposed acquisition.
 * Releasing in any order is legal. `verifier=0` on the command line turns the
 * graph and the IRQL rule off (the bookkeeping stays: the 0xF/0x10 checks and
 * the deadlock watch need it).
 *
 * Fault injection: `inject=1` (checked build) makes each KI_INJECT_* point in
 * the primitives' race windows sometimes spin a random while or send an IPI to
 * another processor; `seed=` seeds it. Off by default.
 */
#pragma once

#include <wdm.h>

/* Spin locks a processor can record (deeper nests are counted, not named). */
#define KI_LOCK_TRACK_SLOTS 16

/* 0xC4 first parameters (DRIVER_VERIFIER_DETECTED_VIOLATION) the verifier raises. */
#define KI_VERIFIER_LOCK_ORDER 0x1001 // P2 lock taken, P3 lock held, P4 opposite edge's CPU
#define KI_VERIFIER_LOCK_IRQL  0x1002 // P2 lock, P3 interrupt IRQL, P4 exposed IRQL

/* The fault-injection points, in the windows the names say. */
typedef enum _KI_INJECT_POINT
{
    KiInjectQueuedLockLink,      // queued lock: after the tail exchange, before the link store
    KiInjectDeviceQueueBusy,     // device queue: after the Busy check, before the insert
    KiInjectCancelBeforeClear,   // IoCancelIrp: Cancel set, cancel routine not yet taken
    KiInjectCancelAfterClear,    // IoCancelIrp: cancel routine taken, not yet called
    KiInjectStartIoBeforeSet,    // IoStartPacket: before it sets the cancel routine
    KiInjectStartIoAfterSet,     // IoStartPacket: cancel routine set, packet not yet queued
    KiInjectCsqBeforeSet,        // IoCsqInsertIrp: queued, cancel routine not yet set
    KiInjectCsqAfterSet,         // IoCsqInsertIrp: cancel routine set, Cancel not yet re-read
    KiInjectCompleteBeforeClaim, // CSQ removal for completion: before clearing the routine
    KiInjectCompleteAfterClaim,  // CSQ removal for completion: routine cleared, IRP not yet out
    KiInjectWaitRecheck, // KiWaitForChange: halted bit published (W3), word not re-read (W4)
    KiInjectPointCount
} KI_INJECT_POINT;

#if DBG
/*
 * Reads verifier=, inject= and seed= and allocates the verifier's tables from
 * pool. Boot processor, once, after ExpInitializePool and before any other
 * processor runs. Without it (or with verifier=0) nothing is recorded.
 */
VOID KiInitializeVerifier(PCSTR CommandLine);

/*
 * Called by every blocking acquire before it waits for SpinLock (acquired
 * from Rip): checks the IRQL rule and the order against each lock this
 * processor holds, records new edges. Bug-checks 0xC4/0x1001 or 0x1002.
 * Any IRQL, any processor.
 */
VOID KiVerifierAcquire(PKSPIN_LOCK SpinLock, ULONG_PTR Rip);

/* The identity at SpinLock ends (it is being initialised). Any IRQL. */
VOID KiVerifierForgetLock(PKSPIN_LOCK SpinLock);

/* Every identity inside [Base, Base + Length) ends (pool freed). IRQL <= DISPATCH_LEVEL. */
VOID KiVerifierForgetRange(PVOID Base, SIZE_T Length);

/* TRUE if the order From->To (To taken while From was held) is recorded. Any IRQL. */
BOOLEAN KiVerifierOrderRecorded(PKSPIN_LOCK From, PKSPIN_LOCK To);

/* TRUE when the order graph is recorded (checked build, verifier=1, tables allocated). */
extern BOOLEAN KiVerifierEnabled;

/*
 * Bookkeeping of the locks each processor holds. Each insert counts in
 * Prcb->SpinLocksHeld and each remove uncounts. Any IRQL.
 */
BOOLEAN KiLockTrackIsHeld(PKSPIN_LOCK SpinLock);
VOID KiLockTrackInsert(PKSPIN_LOCK SpinLock, ULONG_PTR Rip, BOOLEAN Owner);
VOID KiLockTrackSetOwner(PKSPIN_LOCK SpinLock);
BOOLEAN KiLockTrackRemove(PKSPIN_LOCK SpinLock); // FALSE: not recorded, nothing changed

/* Fault injection: fired counts per point, and whether injection is on. */
extern volatile ULONG64 KiInjectFired[KiInjectPointCount];
extern BOOLEAN KiInjectEnabled;
const char *KiInjectPointName(KI_INJECT_POINT Point);
VOID KiInjectFire(KI_INJECT_POINT Point);
#endif

/* A fault-injection point: free build nothing; checked build a delay or IPI when inject= is on. */
static inline VOID
KiInject(KI_INJECT_POINT Point)
{
#if DBG
    if (__builtin_expect(KiInjectEnabled, 0))
    {
        KiInjectFire(Point);
    }
#else
    (void)Point;
#endif
}
