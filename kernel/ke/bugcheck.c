/* SPDX-License-Identifier: MIT */
/*
 * KeBugCheckEx: stop the system with a STOP line, the backtrace and every other
 * processor's position, then leave QEMU with the bug-check exit code. A
 * registered bug-check catcher (the test harness's) may take it instead.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"
#include "lib/lib.h"

typedef struct _KI_BUGCHECK_NAME
{
    ULONG Code;
    const char *Name;
} KI_BUGCHECK_NAME;

static const KI_BUGCHECK_NAME KiBugCheckNames[] = {
    {DEVICE_QUEUE_NOT_BUSY, "DEVICE_QUEUE_NOT_BUSY"},
    {INVALID_SOFTWARE_INTERRUPT, "INVALID_SOFTWARE_INTERRUPT"},
    {IRQL_NOT_DISPATCH_LEVEL, "IRQL_NOT_DISPATCH_LEVEL"},
    {IRQL_NOT_GREATER_OR_EQUAL, "IRQL_NOT_GREATER_OR_EQUAL"},
    {IRQL_NOT_LESS_OR_EQUAL, "IRQL_NOT_LESS_OR_EQUAL"},
    {SPIN_LOCK_ALREADY_OWNED, "SPIN_LOCK_ALREADY_OWNED"},
    {SPIN_LOCK_NOT_OWNED, "SPIN_LOCK_NOT_OWNED"},
    {BAD_POOL_HEADER, "BAD_POOL_HEADER"},
    {KMODE_EXCEPTION_NOT_HANDLED, "KMODE_EXCEPTION_NOT_HANDLED"},
    {MULTIPLE_IRP_COMPLETE_REQUESTS, "MULTIPLE_IRP_COMPLETE_REQUESTS"},
    {CANCEL_STATE_IN_COMPLETED_IRP, "CANCEL_STATE_IN_COMPLETED_IRP"},
    {PAGE_FAULT_IN_NONPAGED_AREA, "PAGE_FAULT_IN_NONPAGED_AREA"},
    {UNEXPECTED_KERNEL_MODE_TRAP, "UNEXPECTED_KERNEL_MODE_TRAP"},
    {ATTEMPTED_SWITCH_FROM_DPC, "ATTEMPTED_SWITCH_FROM_DPC"},
    {BAD_POOL_CALLER, "BAD_POOL_CALLER"},
    {SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION, "SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION"},
    {NMI_HARDWARE_FAILURE, "NMI_HARDWARE_FAILURE"},
    {DRIVER_VERIFIER_DETECTED_VIOLATION, "DRIVER_VERIFIER_DETECTED_VIOLATION"},
    {IRQL_UNEXPECTED_VALUE, "IRQL_UNEXPECTED_VALUE"},
    {DRIVER_VERIFIER_IOMANAGER_VIOLATION, "DRIVER_VERIFIER_IOMANAGER_VIOLATION"},
    {DRIVER_IRQL_NOT_LESS_OR_EQUAL, "DRIVER_IRQL_NOT_LESS_OR_EQUAL"},
    {MANUALLY_INITIATED_CRASH, "MANUALLY_INITIATED_CRASH"},
    {ATTEMPTED_WRITE_TO_READONLY_MEMORY, "ATTEMPTED_WRITE_TO_READONLY_MEMORY"},
    {ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, "ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY"},
    {DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION, "DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION"},
    {DRIVER_RETURNED_HOLDING_CANCEL_LOCK, "DRIVER_RETURNED_HOLDING_CANCEL_LOCK"},
    {DPC_WATCHDOG_VIOLATION, "DPC_WATCHDOG_VIOLATION"},
    {KERNEL_SECURITY_CHECK_FAILURE, "KERNEL_SECURITY_CHECK_FAILURE"},
    {SPINDLE_SPIN_LOCK_DEADLOCK, "SPINDLE_SPIN_LOCK_DEADLOCK"},
    {SPINDLE_TEST_WATCHDOG, "SPINDLE_TEST_WATCHDOG"},
    {SPINDLE_IPI_TIMEOUT, "SPINDLE_IPI_TIMEOUT"},
    {SPINDLE_DPC_CALL_TIMEOUT, "SPINDLE_DPC_CALL_TIMEOUT"},
};

#define X86_VECTOR_DOUBLE_FAULT 8
#define X86_VECTOR_PAGE_FAULT   14

/* The registered catcher, or NULL; set once, before anything it expects can happen. */
static const KI_BUGCHECK_CATCHER *volatile KiBugCheckCatcher;

/* 0 until a processor starts stopping the system; then that processor's number + 1. */
static volatile ULONG KiBugCheckOwner;

/* Where the trap that led to the bug check happened, per processor (trap.c). */
static const struct x86_trap_frame *KiBugCheckFrame[MAXIMUM_PROCESSORS];

/*
 * The last bug check raised, caught by a KT_EXPECT_BUGCHECK or not, for a
 * debugger (scripts/gdb's spindle-stop); nothing in the kernel reads it.
 * Written by the raising processor first thing in KeBugCheckEx; Stopping is
 * set once the bug check stops the system.
 */
typedef struct _KI_BUGCHECK_DATA
{
    ULONG Code;
    ULONG Processor;
    ULONG_PTR Parameter[4];
    BOOLEAN HasTrapFrame;            // it came from a trap (an exception): TrapFrame is set
    volatile BOOLEAN Stopping;       // TRUE once it stops the system; FALSE if caught
    struct x86_trap_frame TrapFrame; // a copy: the trap's stack may be reused since
} KI_BUGCHECK_DATA;
__attribute__((used)) static KI_BUGCHECK_DATA KiBugCheckData;

const char *
KiBugCheckName(ULONG Code)
{
    for (SIZE_T i = 0; i < sizeof(KiBugCheckNames) / sizeof(KiBugCheckNames[0]); i++)
    {
        if (KiBugCheckNames[i].Code == Code)
        {
            return KiBugCheckNames[i].Name;
        }
    }
    return "UNKNOWN_BUGCHECK_CODE";
}

BOOLEAN
KiBugCheckInProgress(VOID)
{
    return KiBugCheckOwner != 0;
}

VOID
KiSetBugCheckTrapFrame(const struct x86_trap_frame *Frame)
{
    KiBugCheckFrame[KeGetCurrentPrcb()->Number] = Frame;
}

/*
 * Prints where each other processor was when the freeze NMI reached it: one
 * "processor N: RIP symbol" line each, then, for each one that answered, a
 * backtrace from the frame its NMI handler saved ("processor N was at:"), so
 * a report shows the code a stuck processor is running, not only the
 * reporter's. A processor that did not answer is named with no backtrace.
 */
static VOID
KiReportOtherProcessors(ULONG Self, const char *LinePrefix)
{
    for (ULONG i = 0; i < KiActiveProcessorCount; i++)
    {
        PKPRCB Prcb = KiGetPrcb(i);
        ULONG64 Rip = 0;
        char Prefix[48];

        if (i == Self || !Prcb->Online)
        {
            continue;
        }
        /* Bounded wait for the NMI handler's store (KiFreezeProcessor). */
        for (ULONG Spin = 0; Spin < (1U << 24) && Rip == 0; Spin++)
        {
            Rip = __atomic_load_n(&Prcb->FrozenRip, __ATOMIC_ACQUIRE);
            x86_pause();
        }
        (void)snprintf(Prefix, sizeof(Prefix), "%sprocessor %u: ", LinePrefix, i); // fits or is cut
        if (Rip == 0)
        {
            DbgPrint("%sdid not answer the freeze NMI\n", Prefix);
        }
        else
        {
            KiPrintAddress(Prefix, Rip);
        }
    }
    for (ULONG i = 0; i < KiActiveProcessorCount; i++)
    {
        PKPRCB Prcb = KiGetPrcb(i);
        /* Acquire: pairs with the release store of FrozenRip after FrozenRbp. */
        ULONG64 Rip = __atomic_load_n(&Prcb->FrozenRip, __ATOMIC_ACQUIRE);

        if (i == Self || !Prcb->Online || Rip == 0)
        {
            continue;
        }
        DbgPrint("%sprocessor %u was at:\n", LinePrefix, i);
        KiPrintTrapBacktrace(Rip, Prcb->FrozenRsp, Prcb->FrozenRbp);
    }
}

/*
 * Registers the bug-check catcher, the one hook through which a workload takes
 * the bug checks it expects (the test harness's KT_EXPECT_BUGCHECK). From then
 * on every KeBugCheckEx first calls Catcher->Catch with the code and the four
 * parameters, unless a bug check is already stopping the system; Catch does
 * not return when it takes the bug check (it unwinds to where the workload
 * armed it) and returns to let the system stop. Catcher->IsArmed tells the
 * kernel whether the current processor expects a bug check, so that the
 * reports it prints before one (an exception, a spin-lock deadlock) stay short.
 * One catcher per system; a second registration replaces the first. Boot
 * processor, PASSIVE_LEVEL; Catcher must stay valid for the rest of the run.
 */
VOID
KiRegisterBugCheckCatcher(const KI_BUGCHECK_CATCHER *Catcher)
{
    /* Release: pairs with the acquire loads below; Catcher's fields are written first. */
    __atomic_store_n(&KiBugCheckCatcher, Catcher, __ATOMIC_RELEASE);
}

/*
 * TRUE when the registered catcher expects a bug check on the current
 * processor (FALSE without a catcher). Any IRQL.
 */
BOOLEAN
KiBugCheckIsExpected(VOID)
{
    /* Acquire: pairs with the release in KiRegisterBugCheckCatcher. */
    const KI_BUGCHECK_CATCHER *Catcher = __atomic_load_n(&KiBugCheckCatcher, __ATOMIC_ACQUIRE);

    return Catcher != NULL && Catcher->IsArmed();
}

__attribute__((noreturn)) static VOID
KiStopProcessor(VOID)
{
    for (;;)
    {
        x86_cli();
        x86_hlt();
    }
}

/*
 * Stops the system with the given code and parameters. Any IRQL. Never returns
 * (unless the registered bug-check catcher takes it: KiRegisterBugCheckCatcher).
 */
VOID
KeBugCheckEx(ULONG BugCheckCode, ULONG_PTR BugCheckParameter1, ULONG_PTR BugCheckParameter2,
             ULONG_PTR BugCheckParameter3, ULONG_PTR BugCheckParameter4)
{
    const ULONG_PTR Parameters[4] = {BugCheckParameter1, BugCheckParameter2, BugCheckParameter3,
                                     BugCheckParameter4};
    PKPRCB Prcb = KeGetCurrentPrcb();
    const struct x86_trap_frame *Frame;
    /* Acquire: pairs with the release in KiRegisterBugCheckCatcher. */
    const KI_BUGCHECK_CATCHER *Catcher = __atomic_load_n(&KiBugCheckCatcher, __ATOMIC_ACQUIRE);
    ULONG Expected = 0;

    /*
     * The trap frame the exception path stored for this bug check (NULL when
     * it did not come from a trap). Taken before the catcher runs, so that an
     * uncaught exception under the harness is still reported from the
     * faulting instruction; cleared so that a later bug check does not reuse
     * it.
     */
    Frame = KiBugCheckFrame[Prcb->Number];
    KiBugCheckFrame[Prcb->Number] = NULL;
    if (!KiBugCheckInProgress())
    {
        KiBugCheckData.Code = BugCheckCode;
        KiBugCheckData.Processor = Prcb->Number;
        for (int i = 0; i < 4; i++)
        {
            KiBugCheckData.Parameter[i] = Parameters[i];
        }
        KiBugCheckData.HasTrapFrame = Frame != NULL;
        if (KiBugCheckData.HasTrapFrame)
        {
            KiBugCheckData.TrapFrame = *Frame;
        }
    }
    if (Catcher != NULL && !KiBugCheckInProgress())
    {
        Catcher->Catch(BugCheckCode, Parameters);
    }

    x86_cli();
    if (!__atomic_compare_exchange_n(&KiBugCheckOwner, &Expected, Prcb->Number + 1, FALSE,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        if (Expected == Prcb->Number + 1)
        {
            KiDebugConsoleBusted = TRUE;
            DbgPrint("\n*** STOP: 0x%08X during a bug check on this processor\n", BugCheckCode);
            HalExitEmulator(HAL_EXIT_BUGCHECK);
        }
        KiStopProcessor(); // another processor is stopping the system and will freeze us
    }

    KiDebugConsoleBusted = TRUE;
    KiBugCheckData.Stopping = TRUE;
    HalFreezeOtherProcessors();
    DbgPrint("\n*** STOP: 0x%08X (0x%016llX, 0x%016llX, 0x%016llX, 0x%016llX) %s\n", BugCheckCode,
             (ULONG64)Parameters[0], (ULONG64)Parameters[1], (ULONG64)Parameters[2],
             (ULONG64)Parameters[3], KiBugCheckName(BugCheckCode));
    DbgPrint("*** on processor %u at IRQL %u\n", Prcb->Number, HalGetCurrentIrql());
    if (Frame != NULL && Frame->vector != X86_VECTOR_DOUBLE_FAULT &&
        !(Frame->vector == X86_VECTOR_PAGE_FAULT &&
          x86_read_cr2() / KI_PAGE_SIZE == Frame->rsp / KI_PAGE_SIZE))
    {
        KiPrintTrapBacktrace(Frame->rip, Frame->rsp, Frame->rbp);
    }
    else if (Frame != NULL)
    {
        KiPrintBacktrace(Frame->rip, Frame->rbp); // RSP may be in the page that faulted
    }
    else
    {
        KiPrintBacktrace((ULONG64)__builtin_return_address(0), *(const ULONG64 *)x86_read_rbp());
    }
    KiReportOtherProcessors(Prcb->Number, "  ");
    HalExitEmulator(HAL_EXIT_BUGCHECK);
}

/* KeBugCheckEx(BugCheckCode, 0, 0, 0, 0). Any IRQL; never returns (see KeBugCheckEx). */
VOID
KeBugCheck(ULONG BugCheckCode)
{
    KeBugCheckEx(BugCheckCode, 0, 0, 0, 0);
}

/*
 * Stops every other processor and reports where each one was, this one at
 * Frame (an interrupted context), as "# processor N: RIP symbol" lines with a
 * backtrace for this one. For the test watchdog: the caller then ends the run.
 * Returns FALSE, reporting nothing, if a bug check or another report is
 * already stopping the system.
 */
BOOLEAN
KiFreezeAndReport(const struct x86_trap_frame *Frame)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG Expected = 0;
    char Prefix[48];

    x86_cli();
    if (!__atomic_compare_exchange_n(&KiBugCheckOwner, &Expected, Prcb->Number + 1, FALSE,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        return FALSE;
    }
    KiDebugConsoleBusted = TRUE;
    HalFreezeOtherProcessors();
    (void)snprintf(Prefix, sizeof(Prefix), "# processor %u: ", Prcb->Number); // fits
    KiPrintAddress(Prefix, Frame->rip);
    KiReportOtherProcessors(Prcb->Number, "# ");
    DbgPrint("# backtrace of processor %u:\n", Prcb->Number);
    KiPrintTrapBacktrace(Frame->rip, Frame->rsp, Frame->rbp);
    return TRUE;
}

VOID
KiExternalNmi(const struct x86_trap_frame *Frame)
{
    static volatile ULONG Reporter; // number + 1 of the processor that reports it
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG Expected = 0;

    Prcb->FrozenRbp = Frame->rbp;
    Prcb->FrozenRsp = Frame->rsp;
    /* Release: FrozenRbp first; pairs with KiReportOtherProcessors' acquire of FrozenRip. */
    __atomic_store_n(&Prcb->FrozenRip, Frame->rip, __ATOMIC_RELEASE);
    if (!__atomic_compare_exchange_n(&Reporter, &Expected, Prcb->Number + 1, FALSE,
                                     __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
    {
        KiStopProcessor(); // recorded; the reporter's freeze finds us here (NMIs stay blocked)
    }
    /* This processor may have been interrupted inside DbgPrint: never wait for the console. */
    KiDebugConsoleBusted = TRUE;
    DbgPrint("\n*** NMI from outside (LINT1) on processor %u: stopping every processor\n",
             Prcb->Number);
    KiSetBugCheckTrapFrame(Frame);
    /* P1 the reporting processor, P2 where it was (Windows leaves 0x80's parameters to the HAL). */
    KeBugCheckEx(NMI_HARDWARE_FAILURE, Prcb->Number, Frame->rip, 0, 0); // does not return
}

/* NMI handler's part of a freeze: record where this processor was, then stop. */
VOID
KiFreezeProcessor(const struct x86_trap_frame *Frame)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    Prcb->FrozenRbp = Frame->rbp;
    Prcb->FrozenRsp = Frame->rsp;
    /* Release: the RBP store is visible before the RIP that KiReportOtherProcessors polls. */
    __atomic_store_n(&Prcb->FrozenRip, Frame->rip, __ATOMIC_RELEASE);
    KiStopProcessor();
}
