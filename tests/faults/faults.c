/* SPDX-License-Identifier: MIT */
/*
 * Fault: cases that end the run on purpose, each with the report a person
 * would need (scripts/test-faults.sh boots each one alone and checks the exit
 * code, the STOP line and the key lines of the report). `make test` skips
 * them: they run only with faults=1 on the kernel command line.
 *
 * Each case does its damage in a function of its own (noinline, named after
 * what it does), so the script can check that the report's backtrace, of the
 * right processor, names it.
 */
#include <wdm.h>

#include <ktest.h>

#include "arch/x86_64/x86.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define FAULT_TAG        'tlaF'
#define FAULT_BLOCK_SIZE 1500 // a 2048-byte pool block: two per page
#define FAULT_CLASS_SIZE 2048
#define FAULT_WAIT_SPINS (1ull << 32)

/* After a call: keeps it from being a tail call, so the caller's frame is in the backtrace. */
#define FAULT_NO_TAIL_CALL() __asm__ volatile("" ::: "memory")

/* Skips the calling case unless the command line asks for fault cases. */
static VOID
FaultEnter(VOID)
{
    if (KtCommandLineValue("faults", 0) != 1)
    {
        KT_SKIP("fault cases end the run: make test-faults runs them one by one");
    }
}

/*
 * Two live pool blocks of FAULT_BLOCK_SIZE, adjacent in one page: *Low just
 * below *High. The others allocated on the way are freed.
 */
static VOID
FaultAdjacentBlocks(PUCHAR *Low, PUCHAR *High)
{
    PUCHAR Blocks[16];
    ULONG Count = 0;

    *Low = *High = NULL;
    while (Count < 16 && *Low == NULL)
    {
        Blocks[Count] = ExAllocatePoolWithTag(NonPagedPool, FAULT_BLOCK_SIZE, FAULT_TAG);
        KT_ASSERT(Blocks[Count] != NULL);
        for (ULONG i = 0; i < Count; i++)
        {
            if (Blocks[i] + FAULT_CLASS_SIZE == Blocks[Count] ||
                Blocks[Count] + FAULT_CLASS_SIZE == Blocks[i])
            {
                *Low = Blocks[i] < Blocks[Count] ? Blocks[i] : Blocks[Count];
                *High = Blocks[i] < Blocks[Count] ? Blocks[Count] : Blocks[i];
            }
        }
        Count++;
    }
    KT_ASSERT(*Low != NULL);
    for (ULONG i = 0; i < Count; i++)
    {
        if (Blocks[i] != *Low && Blocks[i] != *High)
        {
            ExFreePoolWithTag(Blocks[i], FAULT_TAG);
        }
    }
}

/* Writes Length bytes from Block on: past its end when Length > FAULT_BLOCK_SIZE. */
static __attribute__((noinline)) VOID
FaultOverrunBlock(PUCHAR Block, SIZE_T Length)
{
    memset(Block, 0x41, Length);
    __asm__ volatile("" ::: "memory");
}

static __attribute__((noinline)) VOID
FaultAllocateAfterOverrun(VOID)
{
    PVOID Block = ExAllocatePoolWithTag(NonPagedPool, FAULT_BLOCK_SIZE, FAULT_TAG);
    KtLog("fault: the allocator handed out %p after an overrun into a free block", Block);
    FAULT_NO_TAIL_CALL();
}

static __attribute__((noinline)) VOID
FaultFreeOverrunBlock(PUCHAR Block)
{
    ExFreePoolWithTag(Block, FAULT_TAG);
    FAULT_NO_TAIL_CALL();
}

/* Overrun into a free block: the next allocation of its size stops with 0x19, never hands it out.
 */
KTEST(Fault, pool_overrun_into_a_free_block)
{
    PUCHAR Low, High;

    FaultEnter();
    FaultAdjacentBlocks(&Low, &High);
    ExFreePoolWithTag(High, FAULT_TAG);
    KtLog("fault: overrunning %p into the free block at %p", Low, High);
    FaultOverrunBlock(Low, FAULT_CLASS_SIZE); // to the end of Low's block and over High's header
    FaultAllocateAfterOverrun();
    FAULT_NO_TAIL_CALL();
}

/* Overrun into a live neighbour: freeing the overrunning block finds its trailer broken. */
KTEST(Fault, pool_overrun_into_a_live_neighbour)
{
    PUCHAR Low, High;

    FaultEnter();
    FaultAdjacentBlocks(&Low, &High);
    KtLog("fault: overrunning %p into the live block at %p", Low, High);
    FaultOverrunBlock(Low, FAULT_CLASS_SIZE);
    FaultFreeOverrunBlock(Low);
    FAULT_NO_TAIL_CALL();
}

static __attribute__((noinline)) VOID
FaultReleaseForgedHandle(PKLOCK_QUEUE_HANDLE Handle)
{
    KeReleaseInStackQueuedSpinLock(Handle);
    FAULT_NO_TAIL_CALL();
}

/* A copied handle released once the lock is free: 0x10 at once, not a 20 s deadlock report. */
KTEST(Fault, queued_lock_forged_release)
{
    KSPIN_LOCK Lock;
    KLOCK_QUEUE_HANDLE Handle;
    KLOCK_QUEUE_HANDLE Copy;

    FaultEnter();
    KeInitializeSpinLock(&Lock);
    KeAcquireInStackQueuedSpinLock(&Lock, &Handle);
    Copy = Handle;
    KeReleaseInStackQueuedSpinLock(&Handle);
    KeRaiseIrqlToDpcLevel();
    FaultReleaseForgedHandle(&Copy);
    FAULT_NO_TAIL_CALL();
}

static volatile LONG FaultSpinning;

/*
 * Spins with interrupts off until the end of the run. The processor that
 * makes the count of spinning processors reach Announce (0: none) says so.
 */
static __attribute__((noinline)) VOID
FaultSpinWithInterruptsOff(ULONG Announce)
{
    x86_cli();
    if ((ULONG)__atomic_add_fetch(&FaultSpinning, 1, __ATOMIC_ACQ_REL) == Announce)
    {
        KtLog("fault: all %u processors spin with interrupts off; send nmi on the monitor",
              Announce);
    }
    for (;;)
    {
        x86_pause();
    }
}

static VOID
FaultSpinOnProcessor(ULONG Index, PVOID Context)
{
    FaultSpinWithInterruptsOff(KiActiveProcessorCount);
}

/*
 * Every processor spins with interrupts off; only an NMI from outside can stop
 * them (the script sends `nmi` on QEMU's monitor once the line below appears).
 */
KTEST_EX(Fault, external_nmi_while_every_processor_spins, 0, 600000)
{
    FaultEnter();
    FaultSpinning = 0;
    KtRunOnProcessors(0, FaultSpinOnProcessor, NULL);
}

static VOID
FaultIdleSpin(PVOID Context)
{
    FaultSpinWithInterruptsOff(0);
}

/* Makes the last processor spin with interrupts off (it runs FaultSpinWithInterruptsOff). */
static ULONG
FaultStickLastProcessor(VOID)
{
    ULONG Stuck = KiActiveProcessorCount - 1;

    FaultSpinning = 0;
    for (ULONG64 Spin = 0; !KiQueueIdleWork(Stuck, FaultIdleSpin, NULL); Spin++)
    {
        KT_ASSERT(Spin < FAULT_WAIT_SPINS);
        x86_pause();
    }
    for (ULONG64 Spin = 0; __atomic_load_n(&FaultSpinning, __ATOMIC_ACQUIRE) == 0; Spin++)
    {
        KT_ASSERT(Spin < FAULT_WAIT_SPINS);
        x86_pause();
    }
    KtLog("fault: processor %u spins with interrupts off", Stuck);
    return Stuck;
}

static __attribute__((noinline)) VOID
FaultWaitForever(VOID)
{
    for (;;)
    {
        KeStallExecutionProcessor(1000);
    }
}

/* The watchdog (a 5 s budget) reports the stuck processor's backtrace, not only its own. */
KTEST_EX(Fault, watchdog_names_the_stuck_processor, KTEST_SMP_ONLY, 5000)
{
    FaultEnter();
    FaultStickLastProcessor();
    FaultWaitForever();
    FAULT_NO_TAIL_CALL();
}

static ULONG_PTR
FaultIpiRoutine(ULONG_PTR Context)
{
    return Context;
}

static __attribute__((noinline)) VOID
FaultBroadcast(VOID)
{
    KeIpiGenericCall(FaultIpiRoutine, 0);
    FAULT_NO_TAIL_CALL();
}

/* KeIpiGenericCall with one processor deaf: the timeout names it and shows its backtrace. */
KTEST_EX(Fault, ipi_timeout_names_the_culprit, KTEST_SMP_ONLY, 120000)
{
    FaultEnter();
    FaultStickLastProcessor();
    KiIpiTimeoutMs = 3000;
    FaultBroadcast();
    FAULT_NO_TAIL_CALL();
}

static VOID
FaultGenericCallRoutine(PKDPC Dpc, PVOID Context, PVOID SystemArgument1, PVOID SystemArgument2)
{
    KeSignalCallDpcDone(SystemArgument1);
}

static __attribute__((noinline)) VOID
FaultGenericCall(VOID)
{
    KeGenericCallDpc(FaultGenericCallRoutine, NULL);
    FAULT_NO_TAIL_CALL();
}

/*
 * KeGenericCallDpc with one processor that never runs its DPC: the caller's
 * wait for the last KeSignalCallDpcDone ends in SPINDLE_DPC_CALL_TIMEOUT
 * (P2 = 1 processor still to finish, P3 = DISPATCH_LEVEL, P4 = 3, the done
 * wait), with the stuck processor's backtrace.
 */
KTEST_EX(Fault, generic_call_timeout_names_the_wait, KTEST_SMP_ONLY, 120000)
{
    FaultEnter();
    FaultStickLastProcessor();
    KiGenericCallTimeoutMs = 3000;
    FaultGenericCall();
    FAULT_NO_TAIL_CALL();
}

static volatile ULONG *volatile FaultNull; // NULL, but the compiler may not assume so

static __attribute__((noinline)) VOID
FaultWriteThroughNull(volatile ULONG *Pointer)
{
    *Pointer = 0x5a5a5a5a;
    FAULT_NO_TAIL_CALL();
}

/*
 * A page fault in the test thread, not expected by the test: the report
 * starts at the faulting instruction (the trap frame is kept for it), so the
 * backtrace names the faulting function and its caller.
 */
KTEST(Fault, page_fault_names_the_faulting_function)
{
    FaultEnter();
    FaultWriteThroughNull(FaultNull);
    FAULT_NO_TAIL_CALL();
}
