/* SPDX-License-Identifier: MIT */
/*
 * The one place a processor waits for another: "wait until this word
 * changes" (KiWaitForChange) and its other half, "I changed it: wake whoever
 * sleeps on it" (KiWaitWake). Every cross-processor wait uses it: the queued
 * lock's WAIT bit, the ordinary lock's waiters, KeIpiGenericCall's barriers,
 * KeFlushQueuedDpcs and the test harness's start and finish gates. Its first
 * pauses are inline (ke.h); the rest, halting included, is here.
 *
 * Spin, then halt. A waiter first spins on plain reads of the word, with one
 * `pause` every KiWaitReadsPerPause reads, for KiWaitSpinLimit pauses (the
 * `spin=` and `spin_reads=` command-line values). Under an emulator or a
 * hypervisor that runs more virtual processors than it has real ones, a
 * spinning virtual processor steals the host time the owner needs; `hlt`
 * gives it back until an interrupt arrives. So, when the bound is spent, a
 * waiter that can be woken halts: it publishes the address it waits on and
 * its bit in KiWaitHaltedMask, re-checks the word and runs `sti; hlt`. The
 * processor that changes the word sends a halted waiter an IPI on
 * KI_VECTOR_WAKE (class 15, above every IRQL a waiter halts at); the vector's
 * handler only counts. No hypervisor interface is used, only the local APIC.
 *
 * Who may halt: interrupts on and IRQL below the wake vector's class (below
 * HIGH_LEVEL). A waiter with interrupts off or at HIGH_LEVEL only spins. For
 * waits whose waker does not fence (KI_WAIT_UNFENCED, the ordinary spin
 * lock, whose release must stay a plain store), a waiter halts only below
 * CLOCK_LEVEL, and only once this processor's clock ticks: see "the one
 * window" below. A waiter with a watch (the checked build's deadlock watch,
 * a timeout) also halts only below CLOCK_LEVEL, so that its clock tick keeps
 * waking it to look at the watch: a deadlock is still reported, not slept
 * through.
 *
 * The handshake. W = waiter (processor w), K = waker, A = the word, V = the
 * value W waits to see change. Each row is one step, in program order;
 * "locked" is a locked read-modify-write (a full barrier on x86).
 *
 *   W1  spin: read A (plain); A != V -> return          bounded by the spin limit
 *   W2  cli                                             no interrupt from here to W5
 *   W3  Prcb[w].WaitAddress = &A; locked OR bit w       publish (full barrier)
 *       into KiWaitHaltedMask
 *   W4  read A; A != V -> go to W6                      the re-check
 *   W5  sti; hlt                                        sti's one-instruction shadow: an
 *                                                       IPI already pending is taken only
 *                                                       once hlt has started, and wakes it
 *   W6  locked AND ~bit w out of KiWaitHaltedMask;      unpublish
 *       WaitAddress = NULL; sti; go to W1
 *
 *   K1  A = new value (a store or a locked RMW)
 *   K2  full barrier (mfence, or K1 itself if locked)   pairs with W3's locked OR
 *   K3  read KiWaitHaltedMask; for each bit p set:      claim, then wake: one IPI
 *       compare-exchange Prcb[p].WaitAddress from &A    per publication, however
 *       to &A|1 (claimed); if that succeeded, IPI p     many wakers see it
 *       on KI_VECTOR_WAKE
 *
 * Why no wake-up is lost: W3 and K1 are both ordered before the reads that
 * follow them (W4, K3) by full barriers, so at least one of the two sees the
 * other's write: either W4 reads the new A (W does not halt), or K3 sees bit w
 * and WaitAddress = &A (K sends the IPI). If the IPI arrives before W5 it
 * stays pending in the IRR (interrupts are off) and is taken at W5's hlt,
 * which then returns at once. A stale or extra IPI (W already gone, or
 * halted later on another word) only makes that waiter re-check and loop.
 *
 * The claim. A waker that finds WaitAddress == &A|1 sends nothing: another
 * waker has claimed this publication and sent its IPI. K3 saw W's bit in
 * the mask, so W's W6 (its locked AND) comes after K3's read of the mask,
 * which comes after K1; W reads A again after W6 (W1, or W4 of its next
 * publication) and sees the change. A new publication stores a plain &A, so
 * a claim ends with the halt it ended. So no wake-up is lost, and a
 * processor halted on a word that many changes hit in a row (an ordinary
 * lock released over and over while its waiter wakes up) takes one IPI
 * instead of one per change: under overcommit a halted virtual processor
 * needs microseconds to run again, and every IPI sent meanwhile cost its
 * sender an interrupt-command write (a VM exit, or QEMU's global lock) and
 * the waiter one more interrupt. The queued lock's early wake of the
 * next-but-one claims too, so the hand-off that follows may find that
 * waiter claimed and send nothing; models/queuedlock.pml checks that pair.
 * KI_WAIT_WAKE_ONE (the ordinary lock) wakes one waiter per release, as
 * before the claim: when the first halted waiter in turn is claimed, nobody
 * else is woken. Nobody is left asleep by it: that waiter takes the lock or
 * halts again, published afresh, and the release that ends the next hold
 * wakes the next one (and an unfenced waiter's clock tick wakes it anyway).
 *
 * The one window (KI_WAIT_UNFENCED only): the ordinary lock's release is a
 * plain store followed by a plain read of the mask, with no K2, so that an
 * uncontended acquire/release pair costs no more than before. Then K3 may read
 * the mask before K1 is visible (x86 lets a load pass an older store) while
 * W4 still reads the old A, and W halts with nobody to wake it. Such a waiter
 * halts only below CLOCK_LEVEL with a running clock, so the next clock tick
 * (KI_CLOCK_PERIOD_US) wakes it and it re-checks: the window costs at most
 * one tick, never a hang. On an idle processor (a DPC waiting there) the
 * waiter first takes the 10 ms tick back from the slow idle one (ke/clock.c).
 * Fenced waits (every other caller) have no window.
 *
 * The slots (unfenced waits only). When the mask is not 0, the ordinary
 * lock's release also reads the mask of its lock's address slot
 * (KiWaitHaltedSlots[KiWaitSlot(A)]), and goes on to K3 only if that is not
 * 0 either, so a processor halted on some other word (an IPI barrier, a
 * test's gate) does not send every release in the system into K3's scan. An
 * unfenced waiter sets its slot bit at W3 before its mask bit, and clears it
 * at W6: a release that sees the mask bit (its loads stay in order) sees the
 * slot bit too, and one that misses either is in the window above.
 *
 * Counters (per PRCB, for tests and the bench): WaitHalts (hlt entered),
 * WaitWakes (wake IPIs taken), WaitWakesSent, WaitWakeScans (K3 scans run),
 * WaitSpinBounds (spin bounds spent without a change), WaitSpinOnly (spin
 * bounds spent by a waiter that was not allowed to halt).
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"
#include "lib/lib.h"

#define KI_WAIT_CLOCK   0x80 // KiWaitHalt: the waiter needs its clock tick (it has a watch)
#define KI_WAIT_CLAIMED 1    // WaitAddress bit 0: a waker sent this publication its IPI

_Static_assert(MAXIMUM_PROCESSORS <= 64, "KiWaitHaltedMask has one bit per processor");
_Static_assert((KI_VECTOR_WAKE >> 4) > IPI_LEVEL, "a waiter at IPI_LEVEL must be wakeable");

/* Defaults, chosen from measurements under TCG (README.md, "Waiting"). */
#define KI_WAIT_DEFAULT_SPIN  64
#define KI_WAIT_DEFAULT_READS 1
#define KI_WAIT_MAX_SPIN      (1u << 24)
#define KI_WAIT_MAX_READS     1024

volatile ULONG KiWaitSpinLimit = KI_WAIT_DEFAULT_SPIN;
volatile ULONG KiWaitReadsPerPause = KI_WAIT_DEFAULT_READS;

/* Bit n set: processor n is between W3 and W6 (published, maybe halted). */
volatile ULONG64 KiWaitHaltedMask;

/* The same for unfenced waits only, per slot of the address waited on (KiWaitSlot). */
volatile ULONG64 KiWaitHaltedSlots[KI_WAIT_SLOTS];

/* KI_VECTOR_WAKE's handler, at HIGH_LEVEL: the interrupt itself ended the hlt. */
static VOID
KiWaitWakeInterrupt(struct x86_trap_frame *Frame, PVOID Context)
{
    KeGetCurrentPrcb()->WaitWakes++; // only this processor writes it, at HIGH_LEVEL
}

/*
 * Reads spin= (pauses before halting; 0 = halt at once) and spin_reads=
 * (plain reads per pause) and connects the wake vector. Boot processor,
 * before the others start.
 */
INIT_CODE VOID
KiInitializeWait(PCSTR CommandLine)
{
    KiWaitSpinLimit =
        KiCommandLineValue(CommandLine, "spin", KI_WAIT_DEFAULT_SPIN, 0, KI_WAIT_MAX_SPIN);
    KiWaitReadsPerPause =
        KiCommandLineValue(CommandLine, "spin_reads", KI_WAIT_DEFAULT_READS, 1, KI_WAIT_MAX_READS);
    KiConnectVector(KI_VECTOR_WAKE, KiWaitWakeInterrupt, NULL);
}

/*
 * W2-W6: halts until an interrupt if the word still holds OldValue and this
 * processor may halt. Returns FALSE without halting when it may not
 * (interrupts off, IRQL too high, no clock for an unfenced wait).
 * KI_WAIT_CLOCK (internal): halt only where the clock tick gets through.
 */
static BOOLEAN
KiWaitHalt(volatile ULONG_PTR *Address, ULONG_PTR OldValue, ULONG Flags)
{
    PKPRCB Prcb;
    ULONG64 Bit;
    KIRQL Limit =
        (Flags & (KI_WAIT_UNFENCED | KI_WAIT_CLOCK)) ? CLOCK_LEVEL : (KIRQL)(KI_VECTOR_WAKE >> 4);

    if (!x86_interrupts_enabled() || HalGetCurrentIrql() >= Limit)
    {
        return FALSE;
    }
    x86_cli(); // W2
    Prcb = KeGetCurrentPrcb();
    if (Flags & (KI_WAIT_UNFENCED | KI_WAIT_CLOCK))
    {
        /*
         * This wait needs the 10 ms tick. On an idle processor (a DPC waiting
         * there) the tick is the slow idle one (ke/clock.c): take it back;
         * the idle loop slows it again once the DPC is done.
         */
        KiSetClockIdle(FALSE);
        if (Prcb->ClockTicks == 0)
        {
            x86_sti(); // no tick yet to close the unfenced window
            return FALSE;
        }
    }
    Bit = 1ULL << Prcb->Number;
    /* W3: the locked OR is a full barrier; pairs with the waker's K2. */
    __atomic_store_n(&Prcb->WaitAddress, Address, __ATOMIC_RELAXED);
    if (Flags & KI_WAIT_UNFENCED)
    {
        /*
         * The slot first: a waker that reads the mask and then the slot (the
         * ordinary lock's release) and sees our mask bit sees this one too.
         */
        __atomic_or_fetch(&KiWaitHaltedSlots[KiWaitSlot(Address)], Bit, __ATOMIC_SEQ_CST);
    }
    __atomic_or_fetch(&KiWaitHaltedMask, Bit, __ATOMIC_SEQ_CST);
    KiInject(KiInjectWaitRecheck); // widen W3..W4: the waker's K1-K3 may land in between
    if (__atomic_load_n(Address, __ATOMIC_RELAXED) == OldValue) // W4
    {
        Prcb->WaitHalts++;
        x86_sti_hlt(); // W5: the wake IPI (or any interrupt) ends it
        x86_cli();
    }
    /* W6 */
    __atomic_and_fetch(&KiWaitHaltedMask, ~Bit, __ATOMIC_SEQ_CST);
    if (Flags & KI_WAIT_UNFENCED)
    {
        __atomic_and_fetch(&KiWaitHaltedSlots[KiWaitSlot(Address)], ~Bit, __ATOMIC_SEQ_CST);
    }
    __atomic_store_n(&Prcb->WaitAddress, NULL, __ATOMIC_RELAXED);
    x86_sti();
    return TRUE;
}

/*
 * The rest of KiWaitForChange (ke.h), after its inline first pauses: Spun of
 * them (0 with KI_WAIT_HALT_FIRST), at most KI_SPIN_CHECK_INTERVAL, without a
 * change. Finishes the first round of KiWaitSpinLimit pauses, then halts if it
 * may (see the header), and loops. Watch, if not NULL, is called every
 * KI_SPIN_CHECK_INTERVAL pauses (counted from the first inline one) and after
 * every halt (deadlock watches, timeouts; it may bug-check). Returns the new
 * value, read with acquire. Any IRQL; never changes IRQL, and leaves the
 * interrupt flag as it found it.
 */
ULONG_PTR
// NOLINTNEXTLINE(readability-function-cognitive-complexity): W1..W6 of the header, one loop
KiWaitForChangeTail(volatile ULONG_PTR *Address, ULONG_PTR OldValue, ULONG Flags,
                    KI_WAIT_WATCH *Watch, ULONG Spun)
{
    ULONG Checks = Spun; // pauses since the wait began, for the watch's period
    BOOLEAN CountedSpinOnly = FALSE;
    BOOLEAN HaltFirst = (Flags & KI_WAIT_HALT_FIRST) != 0;
    ULONG Start = Spun;
    ULONG_PTR Value;

    if (Watch != NULL && Spun == KI_SPIN_CHECK_INTERVAL)
    {
        Watch->Check(Watch); // the look the inline stretch owed
    }
    for (;;)
    {
        /* KI_WAIT_HALT_FIRST: no spin before the first halt; every later round spins. */
        ULONG Limit = HaltFirst ? 0 : KiWaitSpinLimit;

        HaltFirst = FALSE;

        /* The round in stretches that end where the watch is due. */
        for (ULONG Spin = Start; Spin < Limit;)
        {
            ULONG Stretch = KI_SPIN_CHECK_INTERVAL - (Checks & (KI_SPIN_CHECK_INTERVAL - 1));

            if (Stretch > Limit - Spin)
            {
                Stretch = Limit - Spin;
            }
            if (KiWaitSpin(Address, OldValue, Stretch, &Value))
            {
                return Value;
            }
            Spin += Stretch;
            Checks += Stretch;
            if (Watch != NULL && (Checks & (KI_SPIN_CHECK_INTERVAL - 1)) == 0)
            {
                Watch->Check(Watch);
            }
        }
        Value = __atomic_load_n(Address, __ATOMIC_ACQUIRE); // acquire, as in KiWaitSpin
        if (Value != OldValue)
        {
            return Value;
        }
        Start = 0;
        if (Limit != 0)
        {
            /* One instruction (lock add): an interrupt on this processor cannot split it. */
            __atomic_fetch_add(&KeGetCurrentPrcb()->WaitSpinBounds, 1, __ATOMIC_RELAXED);
        }
        if (KiWaitHalt(Address, OldValue, Watch != NULL ? Flags | KI_WAIT_CLOCK : Flags))
        {
            if (Watch != NULL)
            {
                Watch->Check(Watch);
            }
        }
        else
        {
            if (!CountedSpinOnly)
            {
                ULONG64 Flags64 = x86_save_disable();
                KeGetCurrentPrcb()->WaitSpinOnly++;
                x86_restore_flags(Flags64);
                CountedSpinOnly = TRUE;
            }
            if (Limit == 0)
            {
                /* spin=0 and not allowed to halt: still pause between reads. */
                x86_pause();
                if (Watch != NULL && (++Checks & (KI_SPIN_CHECK_INTERVAL - 1)) == 0)
                {
                    Watch->Check(Watch);
                }
            }
        }
    }
}

/*
 * K2-K3 after the caller changed *Address (K1): IPIs every processor halted
 * (or about to halt) on Address whose publication nobody has claimed yet,
 * claiming it (see "the claim"). KI_WAIT_UNFENCED: no barrier is added,
 * because the caller's K1 was a locked instruction and so K2 already, or a
 * plain store whose waiters accept "the one window"; otherwise a full barrier
 * first. KI_WAIT_WAKE_ONE: at most one processor, the first
 * halted on Address in turn from the caller's successor, for words many wait
 * on but one can take (the ordinary lock); if that one is claimed already,
 * nobody. Returns how many processors it found halted on Address, woken by
 * this call or claimed by an earlier one. Any IRQL.
 */
ULONG
// cppcheck-suppress constParameter ; Address names the word the caller changed (never dereferenced)
KiWaitWakeHalted(volatile ULONG_PTR *Address, ULONG Flags)
{
    volatile ULONG_PTR *Claimed = (volatile ULONG_PTR *)((ULONG_PTR)Address | KI_WAIT_CLAIMED);
    ULONG64 Mask;
    ULONG Self;
    ULONG Shift;
    ULONG Sent = 0;
    ULONG Found = 0;

    if ((Flags & KI_WAIT_UNFENCED) == 0)
    {
        /* K2: mfence; K1's store is visible before the mask is read. Pairs with W3. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
    }
    Mask = __atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED);
    if (Mask == 0)
    {
        return 0;
    }
    /* Atomic: an interrupt handler on this processor may wake too. */
    __atomic_add_fetch(&KeGetCurrentPrcb()->WaitWakeScans, 1, __ATOMIC_RELAXED);
    Self = KeGetCurrentPrcb()->Number;
    /* Rotate so the search starts after this processor: wake-one stays fair-ish. */
    Shift = (Self + 1) & 63;
    if (Shift != 0)
    {
        Mask = (Mask >> Shift) | (Mask << (64 - Shift));
    }
    while (Mask != 0)
    {
        ULONG Number = (Shift + (ULONG)__builtin_ctzll(Mask)) & 63;
        PKPRCB Prcb = KiGetPrcb(Number);
        volatile ULONG_PTR *Published = __atomic_load_n(&Prcb->WaitAddress, __ATOMIC_RELAXED);

        Mask &= Mask - 1;
        /*
         * Claim this publication (one IPI per halt); a failure reloads
         * Published. Relaxed is enough: what orders K1 before the waiter's
         * re-read is K2 and W3 (above); the compare-exchange only decides
         * which waker sends the IPI, and pairs with W3's store of &A (a new
         * publication, unclaimed) and W6's store of NULL (none to claim).
         */
        if (Published == Address &&
            __atomic_compare_exchange_n(&Prcb->WaitAddress, &Published, Claimed, FALSE,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
        {
            HalSendIpi(Prcb->ApicId, KI_VECTOR_WAKE);
            Sent++;
        }
        else if (Published != Claimed)
        {
            continue; // halted on another word, or gone
        }
        Found++;
        if (Flags & KI_WAIT_WAKE_ONE)
        {
            break; // the first halted on Address in turn is (being) woken
        }
    }
    if (Sent != 0)
    {
        __atomic_add_fetch(&KeGetCurrentPrcb()->WaitWakesSent, Sent, __ATOMIC_RELAXED);
    }
    return Found;
}
