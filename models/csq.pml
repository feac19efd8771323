/*
 * models/csq.pml - a cancel-safe IRP queue (kernel/io/csq.c) against
 * IoCancelIrp (kernel/io/cancel.c), for spin (make verify).
 *
 * One processor inserts IRPs 1..NIRP with IoCsqInsertIrp (each with its own
 * IO_CSQ_IRP_CONTEXT), one cancels each of them (or not: every subset), one
 * dequeues with IoCsqRemoveNextIrp NEXT times, one removes IRP NIRP by its
 * context with IoCsqRemoveIrp, all in every interleaving. Whatever an IRP
 * is taken out by, its taker completes it. The driver's queue callbacks run
 * under the CSQ lock and are single steps.
 *
 * Checked:
 *   every IRP is completed at most once (0x44), a cancel routine never runs
 *     on a completed IRP (0x48), the cancel routine only removes a queued IRP;
 *   completion holds no spin lock;
 *   FIFO: IoCsqRemoveNextIrp returns the oldest queued IRP not being cancelled;
 *   at the end: every cancelled IRP is completed exactly once (a cancelled IRP
 *     never stays queued: no lost cancel), every IRP is either completed or
 *     still queued and cancelable (none lost), a completed IRP is not queued
 *     and has no cancel routine; no process is stuck (no deadlock).
 *
 * Mutants (make verify builds each with spin -D<name> and expects a failure):
 *   MUTANT_COMPLETE_WITH_ROUTINE  the insert's cancelled path completes without
 *                                 claiming the IRP back (csq.c:158 without the exchange)
 *   MUTANT_NO_INSERT_RECHECK      the insert does not re-check Irp->Cancel (csq.c:158)
 *   MUTANT_REMOVE_NO_CLAIM        IoCsqRemoveNextIrp takes the head without
 *                                 IoSetCancelRoutine(Irp, NULL) (csq.c:231)
 */

#ifndef NIRP
#define NIRP 3
#endif
#ifndef NEXT
#define NEXT 3
#endif

byte CsqLock;                 /* the driver's queue lock (CsqAcquireLock / CsqReleaseLock) */
byte queue[NIRP];             /* the driver's FIFO queue: queue[0] is the head */
byte qlen;
bool queued[NIRP + 1];        /* IRP is in the driver's queue */
bool context[NIRP + 1];       /* Context->Irp is set (DriverContext[3] names the CSQ) */

#define HOLDS_NO_OTHER_LOCK (CsqLock != ME)
#include "iomgr.inc"

inline CsqAcquireLock()
{
    atomic { CsqLock == 0 -> CsqLock = ME }
}

inline CsqReleaseLock()
{
    assert(CsqLock == ME);
    CsqLock = 0
}

/* The driver's CsqInsertIrp: append (CSQ lock held). */
inline CsqInsertIrp(irp)
{
    d_step {
        assert(!queued[irp]);
        queue[qlen] = irp;
        qlen++;
        queued[irp] = true
    }
}

/* The driver's CsqRemoveIrp: unlink (CSQ lock held); the IRP must be queued. */
inline CsqRemoveIrp(irp)
{
    d_step {
        assert(queued[irp]);    /* else RemoveEntryList on an unlinked entry */
        j = 0;
        do
        :: queue[j] == irp -> break
        :: else -> j++
        od;
        do
        :: j + 1 < qlen -> queue[j] = queue[j + 1]; j++
        :: else -> break
        od;
        qlen--;
        queue[qlen] = NIL;
        queued[irp] = false;
        j = 0
    }
}

/* csq.c:38-42  IopCsqDetach: Context->Irp = NULL, DriverContext[3] = NULL */
inline IopCsqDetach(irp)
{
    context[irp] = false
}

/* csq.c:50  IopCsqCancelRoutine, entered holding the cancel lock */
inline CancelRoutineCall(irp)
{
    IoReleaseCancelSpinLock();     /* csq.c:55  release the cancel lock first */
    CsqAcquireLock();              /* csq.c:59 */
    CsqRemoveIrp(irp);             /* csq.c:60 */
    IopCsqDetach(irp);             /* csq.c:61 */
    CsqReleaseLock();              /* csq.c:62 */
    IoCompleteRequest(irp)         /* csq.c:64  CsqCompleteCanceledIrp, holding no lock */
}


/* csq.c:114  IoCsqInsertIrpEx (plain IO_TYPE_CSQ: the insert cannot fail) */
inline IoCsqInsertIrp(irp)
{
    CsqAcquireLock();                       /* csq.c:124 */
    context[irp] = true;                    /* csq.c:126-131  Context->Irp = Irp; DriverContext[3] = Context */
    CsqInsertIrp(irp);                      /* csq.c:145 */
    IoSetCancelRoutine(irp, ROUTINE, r);    /* csq.c:155  queued first, cancelable second */
    assert(r == NIL);                       /* csq.c:156 */
#ifndef MUTANT_NO_INSERT_RECHECK
    if
    :: Cancel[irp] ->                       /* csq.c:158  re-check Irp->Cancel */
#ifndef MUTANT_COMPLETE_WITH_ROUTINE
        IoSetCancelRoutine(irp, NIL, r);    /* csq.c:158  ... && IoSetCancelRoutine(Irp, NULL) != NULL */
#else
        r = ROUTINE;
#endif
        if
        :: r != NIL ->
            CsqRemoveIrp(irp);              /* csq.c:161 */
            IopCsqDetach(irp);              /* csq.c:162 */
            claimed = true                  /* csq.c:163 */
        :: else -> skip                     /* csq.c:165  the CSQ cancel routine owns it */
        fi
    :: else -> skip
    fi;
#endif
    r = NIL;
    CsqReleaseLock();                       /* csq.c:166 */
    if
    :: claimed ->
        claimed = false;
        IoCompleteRequest(irp)              /* csq.c:168-171  CsqCompleteCanceledIrp, no lock held */
    :: else -> skip
    fi
}

/* csq.c:188  IoCsqRemoveIrp(Csq, Context); got = the IRP or NIL */
inline IoCsqRemoveIrp(irp)
{
    CsqAcquireLock();                       /* csq.c:195 */
    got = NIL;
    if
    :: context[irp] ->                      /* csq.c:196-197  Irp = Context->Irp */
        IoSetCancelRoutine(irp, NIL, r);    /* csq.c:199 */
        if
        :: r != NIL ->
            CsqRemoveIrp(irp);              /* csq.c:201 */
            IopCsqDetach(irp);              /* csq.c:202 */
            got = irp
        :: else -> skip                     /* csq.c:204-207  cancel in progress: NULL */
        fi;
        r = NIL
    :: else -> skip
    fi;
    CsqReleaseLock()                        /* csq.c:209 */
}

/* csq.c:220  IoCsqRemoveNextIrp(Csq, NULL); got = the IRP or NIL */
inline IoCsqRemoveNextIrp()
{
    CsqAcquireLock();                       /* csq.c:227 */
    got = NIL;
    k = 0;
    do                                      /* csq.c:228-229  PeekNextIrp walk from the head */
    :: k < qlen ->
#ifndef MUTANT_REMOVE_NO_CLAIM
        IoSetCancelRoutine(queue[k], NIL, r);   /* csq.c:231  claim */
#else
        r = ROUTINE;
#endif
        if
        :: r != NIL ->
            got = queue[k];
            /* FIFO: every IRP ahead of it is being cancelled */
            d_step {
                j = 0;
                do
                :: j < k -> assert(CancelRoutine[queue[j]] == NIL); j++
                :: else -> break
                od;
                j = 0
            };
            CsqRemoveIrp(got);              /* csq.c:233 */
            IopCsqDetach(got);              /* csq.c:234 */
            r = NIL;
            break                           /* csq.c:235 */
        :: else -> k++                      /* skip: its cancel routine removes it */
        fi
    :: else -> break
    od;
    k = 0;
    CsqReleaseLock()                        /* csq.c:238 */
}

proctype Inserter()
{
    byte r, irp = 1, j;
    bool claimed;
    do
    :: irp <= NIRP -> IoCsqInsertIrp(irp); irp++
    :: else -> break
    od
}

proctype Canceller()
{
    byte r, irp = 1, j;
    do
    :: irp <= NIRP ->
        if
        :: IoCancelIrp(irp)
        :: skip
        fi;
        irp++
    :: else -> break
    od
}

/* A driver's dispatch or DPC taking the next IRP to process. */
proctype Dequeuer()
{
    byte r, got, j, k, n;
    do
    :: n < NEXT ->
        IoCsqRemoveNextIrp();
        if
        :: got != NIL -> IoCompleteRequest(got); got = NIL
        :: else -> skip
        fi;
        n++
    :: else -> break
    od
}

/* A driver removing one particular IRP (e.g. on a timeout) through its context. */
proctype ContextRemover()
{
    byte r, got, j;
    IoCsqRemoveIrp(NIRP);
    if
    :: got != NIL -> IoCompleteRequest(got)
    :: else -> skip
    fi
}

init
{
    byte i;
    atomic {
        run Inserter();
        run Canceller();
        run Dequeuer();
        run ContextRemover()
    }
    (_nr_pr == 1);
    /* the end: nothing lost, nothing twice */
    i = 1;
    do
    :: i <= NIRP ->
        assert(completed[i] <= 1);
        assert(!Cancel[i] || completed[i] == 1);                /* a cancelled IRP never stays queued */
        assert(completed[i] == 1 || (queued[i] && CancelRoutine[i] == ROUTINE)); /* none lost */
        assert(completed[i] == 0 || (!queued[i] && CancelRoutine[i] == NIL));
        i++
    :: else -> break
    od;
    assert(CancelLock == 0 && CsqLock == 0)
}
