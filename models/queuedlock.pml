/*
 * models/queuedlock.pml - the in-stack queued spin lock (kernel/ke/queuedlock.c)
 * with the spin-then-halt/wake handshake, for spin (make verify).
 *
 * NPROC processors each take the lock NACQ times through their own
 * KLOCK_QUEUE_HANDLE (entry e = processor + 1, reused by every acquisition,
 * as a stack slot is). Every step names the C line it stands for.
 *
 * Checked:
 *   mutual exclusion   at most one processor between acquire and release;
 *   FIFO hand-off      the lock is entered in the order of the exchanges on
 *                      the lock word (a waiter's place in the queue);
 *   no NULL hand-off   release never stores through a NULL successor;
 *   no lost wake-up /  every processor finishes: a halted waiter nobody wakes,
 *   no deadlock        or a waiter whose WAIT nobody clears, is a state with no
 *                      move left that is not at the end (spin: invalid end state).
 * The model has no unbounded loop (every loop is bounded by NACQ, the number
 * of IPIs sent, or blocks), so "eventually" is the same as "no invalid end
 * state": there is no infinite run in which a processor could starve.
 *
 * Spin waits are modelled as blocking guards ((cond)): a spin loop that reads
 * a word until it changes has the same observable behaviour as waiting for
 * the change, and a spin that never ends becomes a blocked state.
 *
 * The halt/wake handshake (issue 13, spin then halt: KiWaitForChange and
 * KiWaitWakeHalted in kernel/ke/wait.c, whose header has the same table; the
 * queued lock waits in KxWaitForQueuedSpinLock and wakes in KxReleaseQueuedSpinLock
 * or KxHandOffWakingAhead, all in kernel/ke/queuedlock.c):
 *   waiter  W1 spin a bounded number of reads of its word;
 *           W2 interrupts off; Prcb->WaitAddress = &Queue->Lock;
 *           W3 lock or HaltedMask, bit   (full barrier);
 *           W4 re-read the word: changed -> unpublish, interrupts on, done;
 *           W5 sti; hlt   (an IPI pending from before the sti is taken at the
 *              hlt: hlt = "block until a wake IPI is pending, consume it");
 *           W6 woken: unpublish (clear bit, WaitAddress = 0), back to W1.
 *   A wake IPI that arrives while the processor's interrupts are on (outside
 *   W2-W5) is taken at once and only counted (the Interrupts process), so a
 *   stale IPI from an earlier wait may or may not still be pending at a hlt.
 *   No other interrupt ends a hlt: a wake-up the protocol loses is not hidden
 *   by a clock tick.
 *   waker   K1 the hand-off (Successor->Lock = SpinLock | OWNER), an exchange;
 *           K2 full barrier: the exchange itself (a locked instruction);
 *           K3 read HaltedMask; for each set bit, compare-exchange its
 *              Prcb->WaitAddress from the word just stored to that word
 *              marked claimed, and send the wake IPI only if that succeeded:
 *              one IPI per publication, whoever else finds it.
 *   hint    the release that found a halted processor anywhere may also wake
 *           the next-but-one waiter early (KxHandOffWakingAhead): an
 *           unfenced K3 on an entry read before the hand-off, which may be
 *           stale. Modelled as a K3, claim included, that any release may
 *           run on the entry its successor linked to it, or on none.
 *
 * Memory model: x86-TSO. Every locked instruction (xchg, cmpxchg, lock or/and)
 * is a full barrier, and TSO keeps stores in order and loads in order, so the
 * only reordering x86 can show is a load overtaking an earlier store of the
 * same processor. In this protocol exactly one such pair could matter, K1 ->
 * K3, and the code rules it out by making K1 an exchange (the waiter's W3 ->
 * W4 is a locked RMW too): so K1 is one step that writes memory. The mutant
 * MUTANT_NO_WAKER_FENCE makes K1 a plain store with no K2: it goes into a
 * per-processor store buffer (sbuf) that drains at any moment (the Drain
 * process) and that any later store of the same processor must wait for,
 * so that the model shows what the exchange prevents. The other plain stores (the entry's
 * Next/Lock, the successor link) are followed only by stores, locked
 * instructions or loads of locations no other processor writes at that time,
 * so executing them at once loses no TSO behaviour.
 *
 * Exact simplifications: W2+W3 and the two unpublishing stores are single
 * steps (the waker reads WaitAddress only for a bit it saw set, and the
 * waiter stores WaitAddress before setting the bit and after clearing it, so
 * the states in between are not observable); K3 checks only the successor's
 * processor (each entry belongs to one processor, so no other WaitAddress can
 * match). A waker's claim and its IPI are one step: in the code the IPI
 * leaves after the compare-exchange, and since it always follows a
 * successful claim, a later arrival only delays that wake or makes a later
 * halt re-check once more. Locals are cleared once dead so that they do not
 * split states.
 * The release's two paths (inline, or KxHandOffWakingAhead when a read of
 * HaltedMask before K1 is non-zero) run the same K1-K3; the second may also
 * IPI the next-but-one waiter, a hint. Its IPI only makes that waiter
 * re-check its word and loop, but its claim makes the hand-off that follows
 * find the waiter claimed and send nothing: the model runs the hint, so
 * that this pair is checked (a waiter woken early must re-read its word
 * before it halts again, and a new publication must not keep the claim).
 *
 * Mutants (make verify builds each with spin -D<name> and expects a failure):
 *   MUTANT_NO_LINK_WAIT      release does not wait for a half-enqueued successor's link
 *   MUTANT_NO_HALT_RECHECK   the waiter halts without re-reading its word (W4)
 *   MUTANT_NO_WAKER_FENCE    the hand-off is a plain store (no K2): the waker reads HaltedMask
 *                            with it still buffered
 *   MUTANT_WAIT_AFTER_LINK   WAIT is set after publishing Predecessor->Next, not before
 *   MUTANT_STALE_CLAIM       a claim outlives its halt: unpublishing and publishing again
 *                            keep a claimed WaitAddress
 */

#ifndef NPROC
#define NPROC 3
#endif
#ifndef NACQ
#define NACQ 2
#endif

#define NIL   0
#define WAIT  1 /* LOCK_QUEUE_WAIT */
#define OWNER 2 /* LOCK_QUEUE_OWNER */
#define CLAIM 16 /* WaitAddress | 1 (KI_WAIT_CLAIMED): a waker sent this publication its IPI */

byte tail;               /* *SpinLock: NIL when free, else the last queued entry */
byte next[NPROC + 1];    /* Queue->Next of entry e (entry 0 unused) */
byte lockbits[NPROC + 1];/* the flag bits of Queue->Lock of entry e (the address part never changes) */

byte waitaddr[NPROC];    /* Prcb->WaitAddress: the entry whose Lock word the processor halts on
                            (| CLAIM once a waker claimed it), NIL if none */
byte halted;             /* the global halted mask, bit p = processor p */
bool ipi[NPROC];         /* a wake IPI is pending at processor p */
bool cli[NPROC];         /* processor p is in its interrupts-off window W2-W5 */

byte sbuf[NPROC];        /* processor p's buffered hand-off store: entry whose Lock becomes OWNER, NIL if none */

byte incs;               /* processors inside the critical section */
byte lastin;             /* the entry that entered the critical section last */

/* Processor p's TSO store buffer drains in its own time. */
proctype Drain(byte p)
{
end:
    do
    :: atomic {
           sbuf[p] != NIL ->
           lockbits[sbuf[p]] = OWNER; /* the hand-off store (K1) reaches memory */
           sbuf[p] = NIL
       }
    od
}

/*
 * Processor p takes a pending wake IPI whenever its interrupts are on (its
 * handler only counts). Without this, a stale IPI from an earlier wait would
 * always survive to the next hlt and could hide a lost wake-up.
 */
proctype Interrupts(byte p)
{
end:
    do
    :: atomic { ipi[p] && !cli[p] -> ipi[p] = false }
    od
}

proctype Processor(byte me)
{
    byte e = me + 1;
    byte pred, succ, nb, mask, n;
    bool ok;

    do
    :: n < NACQ ->
        /* ---- KxAcquireQueuedSpinLock */
        (sbuf[me] == NIL);        /* TSO: our earlier buffered store is before the stores below */
        next[e] = NIL;            /* Queue->Next = NULL */
        lockbits[e] = 0;          /* Queue->Lock = SpinLock */
        atomic {                  /* Predecessor = xchg(*SpinLock, Queue) */
            pred = tail;
            tail = e
        }
        if
        :: pred == NIL ->
            lockbits[e] = OWNER   /* Lock = SpinLock | OWNER */
        :: else ->
#ifndef MUTANT_WAIT_AFTER_LINK
            lockbits[e] = WAIT;   /* KxWaitForQueuedSpinLock: Lock = SpinLock | WAIT, before the link */
            next[pred] = e;       /* Predecessor->Next = Queue (release) */
#else
            next[pred] = e;
            lockbits[e] = WAIT;
#endif
            /* KiWaitForChange while WAIT is set: spin, then halt (W1-W6) */
            do
            :: (lockbits[e] & WAIT) == 0 -> break           /* W1: a spin read sees the hand-off */
            :: (lockbits[e] & WAIT) != 0 ->                 /* W1: the spin bound is spent */
                atomic {
                    cli[me] = true;                         /* W2: interrupts off */
#ifndef MUTANT_STALE_CLAIM
                    waitaddr[me] = e;                       /* W2: publish WaitAddress */
#else
                    if
                    :: waitaddr[me] != (e | CLAIM) -> waitaddr[me] = e
                    :: else -> skip
                    fi;
#endif
                    halted = halted | (1 << me)             /* W3: lock or, full barrier */
                };
#ifndef MUTANT_NO_HALT_RECHECK
                if
                :: (lockbits[e] & WAIT) == 0 ->             /* W4: re-check: changed */
                    atomic {                                /* W4: unpublish, interrupts on */
                        halted = halted & ~(1 << me);
#ifndef MUTANT_STALE_CLAIM
                        waitaddr[me] = NIL;
#endif
                        cli[me] = false
                    };
                    break                                   /* interrupts on, owner */
                :: else -> skip
                fi;
#endif
                atomic { ipi[me] -> ipi[me] = false; cli[me] = false }; /* W5: sti; hlt until a wake IPI */
                atomic {                                    /* W6: unpublish, loop */
                    halted = halted & ~(1 << me);
#ifndef MUTANT_STALE_CLAIM
                    waitaddr[me] = NIL
#else
                    skip
#endif
                }
            od
        fi;

        /* ---- the critical section */
        atomic {
            incs++;
            assert(incs == 1);          /* mutual exclusion */
            assert(pred == NIL || lastin == pred); /* FIFO: right after the entry we queued behind */
            lastin = e;
            pred = NIL
        };
        incs--;

        /* ---- KxReleaseQueuedSpinLock */
        lockbits[e] = 0;                /* Queue->Lock = SpinLock (OWNER cleared) */
        succ = next[e];                 /* Successor = Queue->Next (acquire) */
        if
        :: succ == NIL ->
            atomic {                    /* cmpxchg(*SpinLock, Queue -> 0) */
                if
                :: tail == e -> tail = NIL; ok = true
                :: else -> ok = false
                fi
            };
            if
            :: ok -> goto released      /* lock free, nobody waits */
            :: else -> skip
            fi;
#ifndef MUTANT_NO_LINK_WAIT
            (next[e] != NIL);           /* wait for the successor's link */
#endif
            succ = next[e]              /* Successor = Queue->Next */
        :: else -> skip
        fi;
        assert(succ != NIL);            /* the hand-off below would store through NULL */
        nb = next[succ];                /* KxHandOffWakingAhead: NextButOne, a hint (may go stale) */
        next[e] = NIL;                  /* Queue->Next = NULL */
#ifndef MUTANT_NO_WAKER_FENCE
        lockbits[succ] = OWNER;         /* K1+K2: xchg(Successor->Lock, SpinLock | OWNER), a full barrier; pairs with W3 */
#else
        sbuf[me] = succ;                /* K1 as a plain store, still buffered when K3 reads the mask */
#endif
        mask = halted;                  /* K3: read the halted mask */
        atomic {                        /* K3: claim (compare-exchange), then IPI; only succ's processor can match */
            if
            :: (mask & (1 << (succ - 1))) != 0 && waitaddr[succ - 1] == succ ->
                waitaddr[succ - 1] = succ | CLAIM;
                ipi[succ - 1] = true
            :: else -> skip
            fi
        };
        if                              /* the early wake of the next-but-one, or not */
        :: nb != NIL ->
            mask = halted;              /* unfenced K3 on nb's entry */
            atomic {
                if
                :: (mask & (1 << (nb - 1))) != 0 && waitaddr[nb - 1] == nb ->
                    waitaddr[nb - 1] = nb | CLAIM;
                    ipi[nb - 1] = true
                :: else -> skip
                fi
            }
        :: true -> skip
        fi;
        mask = 0;
        succ = NIL;
        nb = NIL;
released:
        ok = false;
        n++
    :: else -> break
    od
}

init
{
    byte p;
    atomic {
        p = 0;
        do
        :: p < NPROC -> run Drain(p); run Interrupts(p); run Processor(p); p++
        :: else -> break
        od
    }
}
