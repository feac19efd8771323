/*
 * models/startio.pml - IoStartPacket / IoStartNextPacket over the device
 * queue (kernel/io/startio.c, kernel/ke/devqueue.c) against IoCancelIrp
 * (kernel/io/cancel.c), with a cancelable StartIo driver, for spin (make verify).
 *
 * The driver is the one of tests/io_startio.c, which follows API.md §11.2:
 *   cancel routine  (io_startio.c:63-79) the current IRP is left to StartIo;
 *                   a queued one is taken out with KeRemoveEntryDeviceQueue
 *                   and completed as cancelled;
 *   StartIo         under the cancel lock, claim the IRP with
 *                   IoSetCancelRoutine(Irp, NULL) and read Irp->Cancel; if it
 *                   was cancelled, complete it and call IoStartNextPacket
 *                   (from inside StartIo, not deferred: a tail call, modelled
 *                   as a loop); else start the hardware;
 *   the DPC         when the hardware is done: complete the IRP, then
 *                   IoStartNextPacket(Device, TRUE) (io_startio.c:167-).
 * Processors 1..NSUB each IoStartPacket one IRP (IRP p) with that cancel
 * routine; a canceller cancels every subset of the IRPs; the DPC runs until
 * every IRP is completed. With -DDEFERRED the device has deferred StartIo
 * (IoSetStartIoAttributes(Device, TRUE, FALSE)): a start-next request made
 * while some StartIo runs is recorded in StartIoFlags and run by whoever
 * brings StartIoCount back to 0 (startio.c:12-21, 82-146). Start-by-key and
 * NonCancelable are not modelled.
 *
 * Checked:
 *   mutual exclusion   one IRP on the hardware at a time; StartIo runs on the current IRP;
 *                      deferred: StartIo never re-entered from inside itself;
 *   FIFO hand-off      IRPs reach the hardware in the order the device queue granted them;
 *   exactly once       no second completion (0x44), no cancel routine on a completed
 *                      IRP (0x48), completion holds no spin lock;
 *   nothing lost /     the DPC waits until every IRP is completed, so an IRP
 *   no deadlock        nobody completes, or a device left busy with IRPs
 *                      queued, leaves it stuck (invalid end state); at the end
 *                      the device is idle, its queue empty, CurrentIrp NULL.
 *
 * Mutants (make verify builds each with spin -D<name> and expects a failure):
 *   MUTANT_STARTIO_KEEPS_ROUTINE  StartIo starts the IRP without clearing its
 *                                 cancel routine: the DPC completes it with the routine set
 *   MUTANT_STARTIO_CANCELLED_RETURNS  StartIo returns on a cancelled IRP without
 *                                 completing it or starting the next
 *   MUTANT_EMPTY_QUEUE_STAYS_BUSY KeRemoveDeviceQueue on an empty queue leaves it busy
 *                                 (devqueue.c:185-188)
 *   MUTANT_LEAVE_READS_FIRST      (DEFERRED) IopLeaveStartIo reads the recorded request
 *                                 before its decrement instead of after (startio.c:86-89)
 *   MUTANT_LEAVE_STALE_REQUEST    (DEFERRED) IopLeaveStartIo runs the request it read before
 *                                 its increment without claiming it (startio.c:105-111): the
 *                                 code before this model found that a request can run twice
 */

#ifndef NSUB
#define NSUB 3
#endif
#define NIRP NSUB

byte Busy;                /* DeviceQueue.Busy */
byte dq[NIRP];            /* DeviceQueue.DeviceListHead, FIFO: dq[0] is the head */
byte dqlen;
bool inserted[NIRP + 1];  /* Tail.Overlay.DeviceQueueEntry.Inserted */
byte CurrentIrp;          /* DeviceObject->CurrentIrp */
byte grant[NIRP + 1];     /* order in which the device queue granted or queued the IRP */
byte ngrant;
byte hw;                  /* the IRP the hardware is working on */
byte lastgrant;           /* grant number of the IRP the hardware started last */
#ifdef DEFERRED
byte StartIoCount;        /* DeviceObjectExtension->StartIoCount */
bool SioRequest;          /* a start-next request recorded in StartIoFlags */
#endif

#define HOLDS_NO_OTHER_LOCK true /* the device queue lock is taken and released inside one step */
#include "iomgr.inc"

/*
 * devqueue.c:120  KeInsertDeviceQueue: one step under the queue's queued lock
 * (models/queuedlock.pml checks that lock). queued = FALSE: granted, not queued.
 */
inline KeInsertDeviceQueue(irp, queuedres)
{
    d_step {
        ngrant++;
        grant[irp] = ngrant;
        if
        :: !Busy -> Busy = 1; inserted[irp] = false; queuedres = false  /* devqueue.c:128 KiGrantOrQueue */
        :: else ->
            dq[dqlen] = irp; dqlen++;                                   /* devqueue.c:131 InsertTailList */
            inserted[irp] = true;
            queuedres = true
        fi
    }
}

/* devqueue.c:177  KeRemoveDeviceQueue; entry = the head IRP or NIL */
inline KeRemoveDeviceQueue(entry)
{
    d_step {
        assert(Busy);                          /* devqueue.c:184  0x2 DEVICE_QUEUE_NOT_BUSY */
        if
        :: dqlen == 0 ->
#ifndef MUTANT_EMPTY_QUEUE_STAYS_BUSY
            Busy = 0;                          /* devqueue.c:185-187 */
#endif
            entry = NIL
        :: else ->
            entry = dq[0];                     /* devqueue.c:191-193 RemoveHeadList */
            j = 0;
            do
            :: j + 1 < dqlen -> dq[j] = dq[j + 1]; j++
            :: else -> break
            od;
            dqlen--;
            dq[dqlen] = NIL;
            inserted[entry] = false;
            j = 0
        fi
    }
}

/* devqueue.c:243  KeRemoveEntryDeviceQueue (under the queue lock: one step); removed = whether the entry was queued */
inline KeRemoveEntryDeviceQueue(irp, removed)
{
    d_step {
        removed = inserted[irp];
        if
        :: inserted[irp] ->
            j = 0;
            do
            :: dq[j] == irp -> break
            :: else -> j++
            od;
            do
            :: j + 1 < dqlen -> dq[j] = dq[j + 1]; j++
            :: else -> break
            od;
            dqlen--;
            dq[dqlen] = NIL;
            inserted[irp] = false;
            j = 0
        :: else -> skip
        fi
    }
}

/* tests/io_startio.c:63-79  the driver's cancel routine, entered holding the cancel lock */
inline CancelRoutineCall(irp)
{
    if
    :: irp == CurrentIrp ->
        IoReleaseCancelSpinLock()          /* io_startio.c:67-71  StartIo's (or the DPC's) to finish */
    :: else ->
        KeRemoveEntryDeviceQueue(irp, ok); /* io_startio.c:72 */
        IoReleaseCancelSpinLock();         /* io_startio.c:74 / :78 */
        if
        :: ok -> ok = false; IoCompleteRequest(irp)  /* io_startio.c:75  STATUS_CANCELLED */
        :: else -> skip
        fi
    fi
}

/*
 * The driver's StartIo, at DISPATCH_LEVEL: claim under the cancel lock, then
 * start the hardware, or complete a cancelled IRP and call IoStartNextPacket
 * from inside StartIo. Not deferred, that call recurses into StartIo: a tail
 * call, which the caller's loop runs (chain = TRUE). Deferred, it is recorded
 * (IopRequestNextPacketInStartIo) and run when StartIo returns.
 */
inline StartIo(irp)
{
    IoAcquireCancelSpinLock();
    assert(irp == CurrentIrp);             /* StartIo runs on the current IRP */
#ifndef MUTANT_STARTIO_KEEPS_ROUTINE
    IoSetCancelRoutine(irp, NIL, r);       /* claim: from now on no cancel routine runs */
    r = NIL;
#endif
    c = Cancel[irp];
    IoReleaseCancelSpinLock();
    if
    :: c ->
        c = false;
#ifndef MUTANT_STARTIO_CANCELLED_RETURNS
        IoCompleteRequest(irp);            /* STATUS_CANCELLED */
#ifdef DEFERRED
        IopRequestNextPacketInStartIo()    /* IoStartNextPacket(DeviceObject, TRUE) */
#else
        chain = true                       /* IoStartNextPacket(DeviceObject, TRUE) */
#endif
#endif
    :: else ->
        d_step {
            assert(hw == NIL);             /* one IRP on the hardware */
            assert(grant[irp] > lastgrant);/* FIFO */
            lastgrant = grant[irp];
            hw = irp
        }
    fi
}

/* startio.c:44  IopStartNextPacket(Device, Cancelable = TRUE, no key) */
inline IopStartNextPacket()
{
    IoAcquireCancelSpinLock();             /* startio.c:50-52 */
    CurrentIrp = NIL;                      /* startio.c:54 */
    KeRemoveDeviceQueue(e);                /* startio.c:55-56 */
    if
    :: e != NIL -> CurrentIrp = e          /* startio.c:57-60 (no DOE_SIO_NO_CANCEL: :61-64) */
    :: else -> skip
    fi;
    IoReleaseCancelSpinLock();             /* startio.c:66-69 */
    if
    :: e != NIL ->
        StartIo(e);                        /* startio.c:70-73  DriverStartIo */
        e = NIL
    :: else -> skip
    fi
}

#ifdef DEFERRED
/* startio.c:82  IopLeaveStartIo: whoever brings StartIoCount to 0 runs the recorded request. */
inline IopLeaveStartIo()
{
    do
    :: true ->
#ifdef MUTANT_LEAVE_READS_FIRST
        rq = SioRequest;                   /* the request read before the decrement */
#endif
        atomic { StartIoCount--; t = StartIoCount };  /* startio.c:86  InterlockedDecrement */
        if
        :: t != 0 -> break
        :: else -> skip
        fi;
#ifndef MUTANT_LEAVE_READS_FIRST
        rq = SioRequest;                   /* startio.c:88-89  read the recorded request */
#endif
        if
        :: !rq -> break                    /* startio.c:91-94  none */
        :: else -> skip
        fi;
        atomic { StartIoCount++; t = StartIoCount };  /* startio.c:95  InterlockedIncrement */
        if
        :: t == 1 ->
#ifndef MUTANT_LEAVE_STALE_REQUEST
            atomic {                       /* startio.c:105-107  claim: InterlockedAnd returns the old bits */
                rq = SioRequest;
                SioRequest = false
            };
            if
            :: rq -> IopStartNextPacket()  /* startio.c:108-111 */
            :: else -> skip                /* run by another processor since our read */
            fi
#else
            SioRequest = false;            /* the code before the fix: clear, then run what */
            IopStartNextPacket()           /* was read before the increment, even if stale */
#endif
        :: else -> skip                    /* startio.c:114  another StartIo began: it runs it */
        fi
    od;
    t = 0;
    rq = false
}

/*
 * startio.c:120  IopRequestNextPacket, deferred, from inside StartIo: this
 * processor's own count is held, so the increment finds another (:131) and
 * the request is recorded (:136-138); the leave (:145) cannot reach 0.
 */
inline IopRequestNextPacketInStartIo()
{
    atomic { StartIoCount++; t = StartIoCount };      /* startio.c:131 */
    assert(t > 1);
    SioRequest = true;                                /* startio.c:136-138  InterlockedOr */
    atomic { StartIoCount--; t = StartIoCount };      /* startio.c:145 -> :86 */
    assert(t != 0);
    t = 0
}

/* startio.c:223 IoStartNextPacket(Device, TRUE) -> :120 IopRequestNextPacket (deferred) */
inline IoStartNextPacket()
{
    atomic { StartIoCount++; t = StartIoCount };      /* startio.c:131  InterlockedIncrement */
    if
    :: t > 1 -> SioRequest = true                     /* startio.c:136-138  record it */
    :: else ->
        SioRequest = false;                           /* startio.c:142  InterlockedAnd */
        IopStartNextPacket()                          /* startio.c:143 */
    fi;
    IopLeaveStartIo()                                 /* startio.c:145 */
}
#else
/*
 * startio.c:223 IoStartNextPacket(Device, TRUE) -> :120 IopRequestNextPacket
 * (not deferred: :126-129) -> :44 IopStartNextPacket, then StartIo; repeated
 * while StartIo asks for the next packet itself.
 */
inline IoStartNextPacket()
{
    do
    :: true ->
        chain = false;
        IopStartNextPacket();
        if
        :: chain -> skip
        :: else -> break
        fi
    od;
    chain = false
}
#endif

/* startio.c:156  IoStartPacket(Device, Irp, NULL, CancelFunction) at DISPATCH_LEVEL */
inline IoStartPacket(irp)
{
    IoAcquireCancelSpinLock();             /* startio.c:166-168 */
    IoSetCancelRoutine(irp, ROUTINE, r);   /* startio.c:169 */
    r = NIL;
    KeInsertDeviceQueue(irp, q);           /* startio.c:171-172 */
    if
    :: !q ->
        CurrentIrp = irp;                  /* startio.c:175 */
        IoReleaseCancelSpinLock();         /* startio.c:182  (no DOE_SIO_NO_CANCEL: :178-181) */
#ifdef DEFERRED
        atomic { StartIoCount++ };         /* startio.c:186 */
        StartIo(irp);                      /* startio.c:187 */
        IopLeaveStartIo()                  /* startio.c:188 */
#else
        StartIo(irp);                      /* startio.c:192 */
        if
        :: chain -> IoStartNextPacket()    /* StartIo's own IoStartNextPacket */
        :: else -> skip
        fi
#endif
    :: else ->
        if
        :: Cancel[irp] ->                  /* startio.c:201  cancelled before it was cancelable */
            IoSetCancelRoutine(irp, NIL, r);   /* startio.c:203-204 */
            r = NIL;
            CancelRoutineCall(irp)         /* startio.c:205  releases the cancel lock */
        :: else ->
            IoReleaseCancelSpinLock()      /* startio.c:209 */
        fi
    fi;
    q = false
}

proctype Submitter(byte irp)
{
    byte r, e, j, t;
    bool q, c, ok, chain, rq;
    IoStartPacket(irp)
}

proctype Canceller()
{
    byte r, e, j, t, irp = 1;
    bool c, ok, chain, rq;
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

/* The device's DPC: the hardware finished its IRP (tests/io_startio.c:167-). */
proctype Dpc()
{
    byte r, e, j, t, irp;
    bool c, ok, chain, rq;
    do
    :: hw != NIL ->
        d_step {
            irp = hw;
            assert(CurrentIrp == irp);     /* a started IRP stays current until completed */
            hw = NIL
        };
        IoCompleteRequest(irp);
        irp = NIL;
        IoStartNextPacket()
    :: ndone == NIRP -> break
    od
}

init
{
    byte i;
    atomic {
        i = 1;
        do
        :: i <= NSUB -> run Submitter(i); i++
        :: else -> break
        od;
        run Canceller();
        run Dpc()
    }
    (_nr_pr == 1);
    i = 1;
    do
    :: i <= NIRP -> assert(completed[i] == 1 && CancelRoutine[i] == NIL); i++
    :: else -> break
    od;
    assert(!Busy && dqlen == 0 && CurrentIrp == NIL && hw == NIL && CancelLock == 0);
#ifdef DEFERRED
    assert(StartIoCount == 0 && !SioRequest)
#endif
}
