/* SPDX-License-Identifier: MIT */
/*
 * The Ke subsystem's internal declarations (kernel/ke/, kernel/init.c,
 * kernel/bootinfo.c), shared across kernel/ and with white-box tests: the
 * processor control block, boot information, bug checks and the workload
 * hooks, interrupts, DPCs and IPIs, the clock, spin-lock internals. The entry
 * points that boot/, arch/ and the HAL call upward are in kernel/kihal.h.
 */
#pragma once

#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "kernel/ke/kicheck.h"
#include "kernel/ke/verifier.h"
#include "kernel/kihal.h"

#define KI_CACHE_LINE 64
#define KI_PAGE_SIZE  4096ull

#define KI_KERNEL_STACK_SIZE (32ULL * 1024)
#define KI_IST_STACK_SIZE    (8ULL * 1024)

/* Code that runs only while the system starts (seL4 BOOT_CODE). */
#define INIT_CODE __attribute__((section(".text.init")))

/* ---- processors */

/* Vectors the kernel owns (DESIGN.md §4: IRQL = vector >> 4). */
#define KI_VECTOR_APC   0x1f // APC_LEVEL software interrupt
#define KI_VECTOR_DPC   0x2f // DISPATCH_LEVEL software interrupt
#define KI_VECTOR_CLOCK 0xd1 // CLOCK_LEVEL: local APIC timer
#define KI_VECTOR_IPI   0xe1 // IPI_LEVEL: inter-processor requests and wake-ups
#define KI_VECTOR_WAKE  0xf1 // class 15: wakes a processor halted in KiWaitForChange (ke/wait.c)

typedef VOID KI_IDLE_WORK_ROUTINE(PVOID Context);

typedef struct _KDPC_DATA
{
    LIST_ENTRY DpcListHead;
    KSPIN_LOCK DpcLock;
    volatile ULONG DpcQueueDepth;
    ULONG DpcCount;
} KDPC_DATA, *PKDPC_DATA;

#define DPC_NORMAL   0
#define DPC_THREADED 1

/*
 * One per processor, reached through the GS base (Self at gs:0). Fields other
 * than Self are read by the processor itself, or by others under the lock
 * named beside them.
 */
typedef struct _KPRCB
{
    struct _KPRCB *Self; // gs:0
    ULONG Number;
    ULONG ApicId;
    volatile ULONG InterruptNesting; // APIC interrupts being handled on this CPU
    volatile BOOLEAN DpcRoutineActive;
    volatile BOOLEAN Online;
    KDPC_DATA DpcData[2];        // each guarded by its DpcLock
    volatile ULONG64 ClockTicks; // clock interrupts taken by this processor
    volatile BOOLEAN ClockIdle;  // its tick is the idle one (KiSetClockIdle; written by itself)
    volatile ULONG64 InterruptCount;
    ULONG SpinLocksHeld;                            // checked build: ordinary and queued locks held
    KI_IDLE_WORK_ROUTINE *volatile IdleWorkRoutine; // set last by KiQueueIdleWork
    PVOID IdleWorkContext;
    volatile LONG IdleWorkBusy; // claimed by KiQueueIdleWork until the routine returns
    volatile ULONG64 FrozenRip; // where an NMI freeze found this processor
    volatile ULONG64 FrozenRbp;
    volatile ULONG_PTR *volatile WaitAddress; // ke/wait.c: the word it halts on (| 1: claimed)
    volatile ULONG64 WaitHalts;               // hlt entered by KiWaitForChange
    volatile ULONG64 WaitWakes;               // KI_VECTOR_WAKE interrupts taken
    volatile ULONG64 WaitWakesSent;           // wake IPIs this processor sent
    volatile ULONG64 WaitWakeScans;           // K3 scans it ran (KiWaitWakeHalted, mask not 0)
    volatile ULONG64 WaitSpinOnly;       // waits that could not halt once the spin bound ran out
    volatile ULONG64 WaitSpinBounds;     // spin bounds KiWaitForChange spent without a change
    volatile ULONG_PTR DpcDrainSequence; // DPC drain passes ended (KeFlushQueuedDpcs waits on it)
    volatile ULONG64 FrozenRsp;
    ULONG_PTR KernelStackBase;
    ULONG_PTR KernelStackTop;
    uint64_t IstTop[X86_IST_COUNT];
    struct x86_cpu_tables Tables;
} __attribute__((aligned(KI_CACHE_LINE))) KPRCB, *PKPRCB;

_Static_assert(offsetof(KPRCB, Self) == 0, "the GS base points at Self");

extern KPRCB KiProcessorBlock[MAXIMUM_PROCESSORS];
extern volatile ULONG KiActiveProcessorCount;

/*
 * The current processor's PRCB. Stable only with interrupts off or at IRQL >=
 * DISPATCH_LEVEL; below that the caller may move processors (in principle:
 * Spindle has no scheduler, so a test's code never migrates).
 */
static inline PKPRCB
KeGetCurrentPrcb(VOID)
{
    return (PKPRCB)x86_read_gs_qword(offsetof(KPRCB, Self));
}

static inline PKPRCB
KiGetPrcb(ULONG Number)
{
    return &KiProcessorBlock[Number];
}

VOID KiInitializeProcessorTables(PKPRCB Prcb);
VOID KiInitializeBootProcessor(VOID);
/* TSC at KiSystemStartup's entry and once every processor is online (init.c; make bench). */
extern ULONG64 KiStartupTsc;
extern ULONG64 KiProcessorsOnlineTsc;

/* ---- boot information */

typedef struct _KI_MEMORY_RANGE
{
    ULONG64 Base;
    ULONG64 Length;
} KI_MEMORY_RANGE;

#define KI_MAX_MEMORY_RANGES 64

typedef struct _KI_BOOT_INFO
{
    const char *Loader; // "GRUB (BIOS)", "GRUB (UEFI)", "Spindle EFI loader"
    char CommandLine[512];
    ULONG64 RsdpPhysical; // 0 when the loader gave none
    BOOLEAN RsdpIsXsdt;   // ACPI 2.0+ RSDP (new tag)
    UCHAR Rsdp[36];       // copy of the RSDP from the tag
    ULONG MemoryRangeCount;
    KI_MEMORY_RANGE MemoryRanges[KI_MAX_MEMORY_RANGES]; // usable RAM
} KI_BOOT_INFO;

extern KI_BOOT_INFO KiBootInfo;

VOID KiParseBootInfo(ULONG64 InfoPhysical);
/*
 * The number after Key= on CommandLine, or Default when it is absent; one that
 * is malformed or outside Min..Max is reported and Default used (kernel/init.c).
 * Start-up only.
 */
ULONG KiCommandLineValue(PCSTR CommandLine, const char *Key, ULONG Default, ULONG Min, ULONG Max);

/* ---- bug checks and traps */

const char *KiBugCheckName(ULONG Code);
VOID KiPrintBacktrace(ULONG64 Rip, ULONG64 Rbp);
/*
 * As KiPrintBacktrace for an interrupted context: when the function at Rip
 * has no frame of its own (a leaf, or its first instruction), the return
 * address at Rsp is printed as its caller. Rsp must be readable.
 */
VOID KiPrintTrapBacktrace(ULONG64 Rip, ULONG64 Rsp, ULONG64 Rbp);
const char *KiLookupSymbol(ULONG64 Address, ULONG64 *Offset);
VOID KiPrintAddress(const char *Prefix, ULONG64 Address);

/*
 * The bug-check catcher: the one hook through which the workload an image was
 * linked with (the test harness) takes bug checks it expects. Registered once
 * by KiRegisterBugCheckCatcher (kernel/ke/bugcheck.c documents the protocol).
 */
typedef struct _KI_BUGCHECK_CATCHER
{
    /*
     * TRUE when the current processor expects a bug check now; the kernel then
     * keeps its reports before the bug check to one line. Any IRQL.
     */
    BOOLEAN (*IsArmed)(VOID);
    /*
     * Called first by every KeBugCheckEx (not during one already stopping the
     * system), interrupts in any state. Does not return when it takes the bug
     * check; returns to let the system stop.
     */
    VOID (*Catch)(ULONG Code, const ULONG_PTR Parameters[4]);
} KI_BUGCHECK_CATCHER;

VOID KiRegisterBugCheckCatcher(const KI_BUGCHECK_CATCHER *Catcher);
BOOLEAN KiBugCheckIsExpected(VOID);

/* Console output lock for DbgPrint; broken open during a bug check. */
extern volatile BOOLEAN KiDebugConsoleBusted;

/*
 * The workload: what the system runs once started, on the boot processor at
 * PASSIVE_LEVEL with interrupts on, given the kernel command line. An image
 * links in at most one, registered with KI_STARTUP_WORKLOAD in the section
 * .kworkload (linker.ld); KiSystemStartup runs it, or says there is nothing to
 * run. A workload ends the run itself (HalExitEmulator).
 */
typedef VOID KI_WORKLOAD_ROUTINE(PCSTR CommandLine);

typedef struct _KI_WORKLOAD
{
    PCSTR Name;
    KI_WORKLOAD_ROUTINE *Routine;
} KI_WORKLOAD;

#define KI_STARTUP_WORKLOAD(Name, Routine)                                                         \
    static const KI_WORKLOAD KiWorkload_##Routine                                                  \
        __attribute__((used, section(".kworkload"), aligned(8))) = {Name, Routine}

/* Spindle's own stop codes (outside Windows' range of documented codes). */
#define SPINDLE_SPIN_LOCK_DEADLOCK 0x5D000001 // P1 lock, P2 owner CPU, P3 owner RIP, P4 waiter RIP
#define SPINDLE_TEST_WATCHDOG      0x5D000002 // P1 test index, P2 budget ms
#define SPINDLE_IPI_TIMEOUT        0x5D000003 // P1 counted, P2 expected, P3 routine, P4 culprit CPU
#define SPINDLE_DPC_CALL_TIMEOUT   0x5D000016 // P1 word, P2 its value, P3 IRQL, P4 which wait

/* How long KeIpiGenericCall waits for every processor (default 30000 ms; a test may lower it). */
extern volatile ULONG KiIpiTimeoutMs;
/* How long a KeGenericCallDpc wait may see no change (default 30000 ms; a test may lower it). */
extern volatile ULONG KiGenericCallTimeoutMs;

BOOLEAN KiBugCheckInProgress(VOID);
VOID KiSetBugCheckTrapFrame(const struct x86_trap_frame *Frame);
__attribute__((noreturn)) VOID KiFreezeProcessor(const struct x86_trap_frame *Frame);
/*
 * An NMI that no bug check sent (LINT1 from outside, e.g. QEMU's monitor
 * `nmi`, which reaches every processor): each records where it was; the first
 * stops the system with NMI_HARDWARE_FAILURE, the others wait to be reported.
 */
__attribute__((noreturn)) VOID KiExternalNmi(const struct x86_trap_frame *Frame);
BOOLEAN KiFreezeAndReport(const struct x86_trap_frame *Frame);

/* ---- interrupts */

typedef VOID KI_INTERRUPT_ROUTINE(struct x86_trap_frame *Frame, PVOID Context);

VOID KiConnectVector(ULONG Vector, KI_INTERRUPT_ROUTINE *Routine, PVOID Context);
VOID KiDispatchVector(struct x86_trap_frame *Frame);

/* ---- idle and processor start */

/*
 * What a processor does when it has nothing to do: wait with interrupts on at
 * PASSIVE_LEVEL and run the work KiQueueIdleWork hands it. Never returns.
 */
__attribute__((noreturn)) VOID KiIdleLoop(VOID);

/* Hands Routine(Context) to processor Number's idle loop; FALSE if it is busy or offline. */
BOOLEAN KiQueueIdleWork(ULONG Number, KI_IDLE_WORK_ROUTINE *Routine, PVOID Context);

/* ---- DPCs, IPIs, software interrupts */

VOID KiInitializeDpc(VOID);
VOID KiInitializeIpi(VOID);
VOID KiRequestSoftwareInterrupt(KIRQL Level);
extern volatile ULONG64 KiApcInterruptCount[MAXIMUM_PROCESSORS];

/*
 * A per-tick callback: called by the clock interrupt on every processor, at
 * CLOCK_LEVEL, with the interrupted context. One may be registered
 * (KiRegisterClockCallback, kernel/ke/clock.c); the test harness's watchdog is
 * one.
 */
typedef VOID KI_CLOCK_CALLBACK(struct x86_trap_frame *Frame);

VOID KiRegisterClockCallback(KI_CLOCK_CALLBACK *Callback);

/* ---- clock and timers */

#define KI_CLOCK_PERIOD_US 10000  // the clock tick: 10 ms
#define KI_CLOCK_INCREMENT 100000 // the same in 100 ns units (KeQueryTimeIncrement)
#define KI_IDLE_CLOCK_MS   1000   // idle_tick_ms= default: an idle secondary processor's tick

/* Ticks since the clock started; advanced by processor 0 only (kernel/ke/clock.c). */
extern volatile ULONG64 KiTickCount;

/* An idle secondary processor's tick period in microseconds (idle_tick_ms=; clock.c). */
extern ULONG KiIdleClockPeriodUs;

/*
 * Calibrates the clock, reads idle_tick_ms= and starts the tick on the boot
 * processor; once, before APs start.
 */
VOID KiInitializeClock(PCSTR CommandLine);
/*
 * Idle: this processor runs nothing (its idle loop is about to halt), so its
 * tick slows to KiIdleClockPeriodUs; !Idle: back to KI_CLOCK_PERIOD_US.
 * Processor 0 keeps the system tick and is never slowed. Interrupts off.
 */
VOID KiSetClockIdle(BOOLEAN Idle);
/* Starts the tick on the calling processor; each AP calls it from KiSecondaryStartup. */
VOID KiInitializeClockProcessor(VOID);
/* Expires the timers due at or before Tick; processor 0's clock interrupt, CLOCK_LEVEL. */
VOID KiExpireTimers(ULONG64 Tick);

/* ---- processor start-up */

/*
 * Starts every other processor the HAL (ACPI MADT) lists, one at a time, with
 * dense numbers; sets KeNumberProcessors. Boot processor, once, after
 * HalInitializeAcpi. A processor that does not start is reported and skipped.
 */
VOID KiStartSecondaryProcessors(VOID);

/* Kernel and IST stacks for Prcb, above guard pages; FALSE when memory runs out. */
BOOLEAN KiAllocateProcessorStacks(PKPRCB Prcb);

/* ---- spin-lock internals (ke/spinlock.c; bookkeeping and deadlock watch in ke/verifier.c) */

/*
 * Checked build: a spin wait during which the lock does not change hands for
 * this many milliseconds bug-checks SPINDLE_SPIN_LOCK_DEADLOCK instead of
 * hanging. Default 20000; a test may lower it for a moment.
 */
extern volatile ULONG KiSpinLockTimeoutMs;

/*
 * Takes / frees an ordinary spin lock word with no IRQL change and no IRQL
 * check (checked build: the ownership checks of KeAcquireSpinLockAtDpcLevel
 * and KeReleaseSpinLockFromDpcLevel still apply). The caller has interrupts
 * off or runs at IRQL >= DISPATCH_LEVEL.
 */
VOID KiAcquireSpinLock(PKSPIN_LOCK SpinLock);
VOID KiReleaseSpinLock(PKSPIN_LOCK SpinLock);

/*
 * Takes SpinLock with interrupts off and no IRQL change, at any IRQL, for
 * locks that ISRs take too (the ExInterlocked routines); returns the RFLAGS
 * that KiReleaseSpinLockRestoreInterrupts puts back.
 */
static inline ULONG64
KiAcquireSpinLockDisableInterrupts(PKSPIN_LOCK SpinLock)
{
    ULONG64 Flags = x86_save_disable();

    KiAcquireSpinLock(SpinLock);
    return Flags;
}

static inline VOID
KiReleaseSpinLockRestoreInterrupts(PKSPIN_LOCK SpinLock, ULONG64 Flags)
{
    KiReleaseSpinLock(SpinLock);
    x86_restore_flags(Flags);
}

/* ---------------------------------------------------------------- waiting (ke/wait.c) */

/* Something a long wait checks now and then (a deadlock watch, a timeout); it may bug-check. */
typedef struct _KI_WAIT_WATCH KI_WAIT_WATCH;
typedef VOID KI_WAIT_WATCH_ROUTINE(KI_WAIT_WATCH *Watch);
struct _KI_WAIT_WATCH
{
    KI_WAIT_WATCH_ROUTINE *Check;
};

/* A watch's deadline: Milliseconds on the performance counter from KiStartDeadline. */
typedef struct _KI_DEADLINE
{
    ULONG64 Start;
    ULONG64 Limit;
} KI_DEADLINE;

static inline VOID
KiStartDeadline(KI_DEADLINE *Deadline, ULONG Milliseconds)
{
    LARGE_INTEGER Frequency;

    Deadline->Start = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    Deadline->Limit = (ULONG64)Frequency.QuadPart / 1000 * Milliseconds;
}

static inline BOOLEAN
KiDeadlinePassed(const KI_DEADLINE *Deadline)
{
    return (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Deadline->Start > Deadline->Limit;
}

/*
 * KiWaitForChange / KiWaitWakeHalted flags. KI_WAIT_UNFENCED: to a wait, the
 * waker's change may be a plain store with no barrier after it; to a wake,
 * add no barrier (the change was locked, or its waiters accept the window).
 */
#define KI_WAIT_UNFENCED   0x1
#define KI_WAIT_WAKE_ONE   0x2 // (wake) at most one halted waiter
#define KI_WAIT_HALT_FIRST 0x4 // (wait) a hint: the change is far off; halt before spinning
/* Pauses between two looks at a watch, a power of 2 (under TCG one pause can cost a ms). */
#define KI_SPIN_CHECK_INTERVAL 64

extern volatile ULONG KiWaitSpinLimit;     // spin=: pauses before a waiter halts
extern volatile ULONG KiWaitReadsPerPause; // spin_reads=: plain reads between two pauses
extern volatile ULONG64 KiWaitHaltedMask;  // processors published as (about to be) halted

/*
 * The unfenced waits' second mask, one per address slot (ke/wait.c): an
 * unfenced waiter on A also sets its bit in KiWaitHaltedSlots[KiWaitSlot(A)],
 * so that the ordinary lock's release, once KiWaitHaltedMask says someone is
 * halted somewhere, wakes only when someone may be halted on its own lock.
 */
#define KI_WAIT_SLOTS 64
extern volatile ULONG64 KiWaitHaltedSlots[KI_WAIT_SLOTS];

static inline ULONG
KiWaitSlot(volatile ULONG_PTR *Address)
{
    return (ULONG)((ULONG_PTR)Address >> 3) & (KI_WAIT_SLOTS - 1);
}

VOID KiInitializeWait(PCSTR CommandLine);

/*
 * One stretch of KiWaitForChange's spin: up to Pauses pauses, reading *Address
 * KiWaitReadsPerPause times before each. TRUE, with the value in *Value, as
 * soon as it differs from OldValue. The loads are acquires: what the changer
 * wrote before its change (a release store or a locked RMW) is visible once
 * the change is. Bounded by Pauses; no watch.
 */
static inline BOOLEAN
KiWaitSpin(volatile ULONG_PTR *Address, ULONG_PTR OldValue, ULONG Pauses, ULONG_PTR *Value)
{
    ULONG Reads = __atomic_load_n(&KiWaitReadsPerPause, __ATOMIC_RELAXED);

    for (ULONG Spin = 0; Spin < Pauses; Spin++)
    {
        for (ULONG Read = 0; Read < Reads; Read++)
        {
            *Value = __atomic_load_n(Address, __ATOMIC_ACQUIRE);
            if (*Value != OldValue)
            {
                return TRUE;
            }
        }
        x86_pause();
    }
    return FALSE;
}

ULONG_PTR KiWaitForChangeTail(volatile ULONG_PTR *Address, ULONG_PTR OldValue, ULONG Flags,
                              KI_WAIT_WATCH *Watch, ULONG Spun);

/*
 * Waits until *Address != OldValue and returns the new value (acquire, as in
 * KiWaitSpin): spins KiWaitSpinLimit pauses, then (interrupts on, IRQL low
 * enough) halts until woken by KiWaitWakeHalted, and loops.
 * KI_WAIT_HALT_FIRST (the caller knows the change is far off): halts before
 * spinning; a waiter that may not halt spins as usual. Watch, if not NULL, is
 * called every KI_SPIN_CHECK_INTERVAL pauses and after every halt. Any IRQL;
 * IRQL and the interrupt flag are left as found. The handshake is in
 * ke/wait.c's header.
 *
 * The first stretch of the spin (at most KI_SPIN_CHECK_INTERVAL pauses, so
 * the watch's first look still comes on time) is inline, so that a caller
 * racing for the word once it changes (the ordinary lock's compare-exchange)
 * acts a few instructions after seeing the change rather than after a
 * function return. Measured under TCG at -smp 8, two processors on one
 * ordinary lock: with the whole wait out of line, 4 of 10 boots gave one of
 * them 2.2-3.4 times the other's acquisitions; with this stretch inline, 3 of
 * 20 boots did (2.0, 2.1 and 4.1). Fewer, but not gone: most of the rest
 * came from idle processors' clock ticks (ke/clock.c; README, "Waiting").
 */
static inline ULONG_PTR
KiWaitForChange(volatile ULONG_PTR *Address, ULONG_PTR OldValue, ULONG Flags, KI_WAIT_WATCH *Watch)
{
    ULONG Spun = 0;
    ULONG_PTR Value;

    if ((Flags & KI_WAIT_HALT_FIRST) == 0)
    {
        Spun = __atomic_load_n(&KiWaitSpinLimit, __ATOMIC_RELAXED);
        if (Spun > KI_SPIN_CHECK_INTERVAL)
        {
            Spun = KI_SPIN_CHECK_INTERVAL; // the rest, with the watch, is the tail's
        }
        if (KiWaitSpin(Address, OldValue, Spun, &Value))
        {
            return Value;
        }
    }
    return KiWaitForChangeTail(Address, OldValue, Flags, Watch, Spun);
}

/*
 * After changing *Address: wakes the processors halted on it, one IPI per halt
 * however many wakers see it; returns how many it found halted there. Any IRQL.
 */
ULONG KiWaitWakeHalted(volatile ULONG_PTR *Address, ULONG Flags);

/* Stores Value into *Address with release semantics and wakes whoever halted on it. */
static inline VOID
KiWaitSetAndWake(volatile ULONG_PTR *Address, ULONG_PTR Value)
{
    __atomic_store_n(Address, Value, __ATOMIC_RELEASE);
    KiWaitWakeHalted(Address, 0);
}

/* Adds 1 to *Address (a locked RMW: K1 and K2 in one) and wakes; returns the new value. */
static inline ULONG_PTR
KiWaitIncrementAndWake(volatile ULONG_PTR *Address)
{
    ULONG_PTR Value = __atomic_add_fetch(Address, 1, __ATOMIC_ACQ_REL);

    if (__atomic_load_n(&KiWaitHaltedMask, __ATOMIC_RELAXED) != 0)
    {
        KiWaitWakeHalted(Address, KI_WAIT_UNFENCED); // the locked add was the barrier
    }
    return Value;
}

/*
 * One spin wait's deadlock watch: initialise with KI_SPIN_WAIT_INIT, pause with
 * KiSpinWaitPause, or hand KiSpinWaitWatch's result to KiWaitForChange.
 */
typedef struct _KI_SPIN_WAIT
{
    KI_WAIT_WATCH Watch;
    PKSPIN_LOCK SpinLock; // for the KiWaitForChange form
    ULONG_PTR WaiterRip;
    ULONG Spins;
    ULONG64 Start;    // performance counter when the current window began; 0 before it
    ULONG64 Progress; // who owned the lock when the window began (see KiSpinWaitCheck)
} KI_SPIN_WAIT;

KI_WAIT_WATCH_ROUTINE KiSpinWaitWatchRoutine;

#define KI_SPIN_WAIT_INIT                                                                          \
    {                                                                                              \
        {KiSpinWaitWatchRoutine}, NULL, 0, 0, 0, 0                                                 \
    }

/* Checked build: SPINDLE_SPIN_LOCK_DEADLOCK once the lock has not changed hands for too long. */
VOID KiSpinWaitCheck(KI_SPIN_WAIT *Wait, PKSPIN_LOCK SpinLock, ULONG_PTR WaiterRip);

/* One pause of a wait for SpinLock (or for a hand-off on it), with the deadlock watch. */
static inline VOID
KiSpinWaitPause(KI_SPIN_WAIT *Wait, PKSPIN_LOCK SpinLock, ULONG_PTR WaiterRip)
{
    x86_pause();
#if DBG
    if ((++Wait->Spins & (KI_SPIN_CHECK_INTERVAL - 1)) == 0)
    {
        KiSpinWaitCheck(Wait, SpinLock, WaiterRip);
    }
#else
    (void)Wait;
    (void)SpinLock;
    (void)WaiterRip;
#endif
}

/* The watch to pass to KiWaitForChange for a wait on SpinLock (NULL in the free build). */
static inline KI_WAIT_WATCH *
KiSpinWaitWatch(KI_SPIN_WAIT *Wait, PKSPIN_LOCK SpinLock, ULONG_PTR WaiterRip)
{
#if DBG
    Wait->SpinLock = SpinLock;
    Wait->WaiterRip = WaiterRip;
    return &Wait->Watch;
#else
    (void)Wait;
    (void)SpinLock;
    (void)WaiterRip;
    return NULL;
#endif
}

/* ---- interrupt objects (ke/intobj.c) */

/*
 * Raises Vector on processor Processor as a fixed interrupt (a self-IPI when
 * it is the current one): how tests make a connected KINTERRUPT's ISR run.
 * Any IRQL; the interrupt arrives once that processor's IRQL is below Vector >> 4.
 */
VOID KiRequestInterrupt(ULONG Processor, ULONG Vector);
