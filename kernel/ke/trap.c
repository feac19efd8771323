/* SPDX-License-Identifier: MIT */
/*
 * The C side of every interrupt and exception: arch/x86_64/isr.asm's common
 * stub calls KiTrapDispatch with the saved frame. Exceptions (vectors 0-31,
 * except 0x1F, the APC software interrupt) are reported with registers and a
 * backtrace here, then bug-check (or go to the registered bug-check catcher).
 * Every other vector goes to KiDispatchVector (kernel/ke/interrupt.c), which
 * raises IRQL to the vector's class and runs the routine connected to it with
 * KiConnectVector: the clock (ke/clock.c), IPIs and the APC interrupt
 * (ke/ipi.c), the DPC interrupt (KiDispatchInterrupt, ke/dpc.c) and the
 * KINTERRUPT objects of drivers (ke/intobj.c). The HAL only acknowledges (EOI).
 */
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "hal/hal.h"
#include "lib/lib.h"

#define X86_VECTOR_NMI          2
#define X86_VECTOR_BREAKPOINT   3
#define X86_VECTOR_DOUBLE_FAULT 8
#define X86_VECTOR_PAGE_FAULT   14
#define X86_EXCEPTION_COUNT     32

/* NTSTATUS exception codes for KMODE_EXCEPTION_NOT_HANDLED. */
#define STATUS_ACCESS_VIOLATION       0xC0000005
#define STATUS_ILLEGAL_INSTRUCTION    0xC000001D
#define STATUS_INTEGER_DIVIDE_BY_ZERO 0xC0000094
#define STATUS_BREAKPOINT             0x80000003
#define STATUS_INTEGER_OVERFLOW       0xC0000095
#define STATUS_ARRAY_BOUNDS_EXCEEDED  0xC000008C
#define STATUS_DATATYPE_MISALIGNMENT  0x80000002

static const char *const KiExceptionNames[X86_EXCEPTION_COUNT] = {
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range exceeded",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack-segment fault",
    "#GP general protection",
    "#PF page fault",
    "reserved (15)",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
    "#CP control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "#HV hypervisor injection",
    "#VC VMM communication",
    "#SX security",
    "reserved (31)",
};

static VOID
KiPrintTrapFrame(const struct x86_trap_frame *Frame)
{
    DbgPrint("  RAX %016llx RBX %016llx RCX %016llx RDX %016llx\n", Frame->rax, Frame->rbx,
             Frame->rcx, Frame->rdx);
    DbgPrint("  RSI %016llx RDI %016llx RBP %016llx RSP %016llx\n", Frame->rsi, Frame->rdi,
             Frame->rbp, Frame->rsp);
    DbgPrint("  R8  %016llx R9  %016llx R10 %016llx R11 %016llx\n", Frame->r8, Frame->r9,
             Frame->r10, Frame->r11);
    DbgPrint("  R12 %016llx R13 %016llx R14 %016llx R15 %016llx\n", Frame->r12, Frame->r13,
             Frame->r14, Frame->r15);
    DbgPrint("  RFLAGS %016llx CS %04llx SS %04llx CR3 %016llx\n", Frame->rflags, Frame->cs,
             Frame->ss, (ULONG64)x86_read_cr3());
}

/*
 * Maps an exception to the stop code and parameters Windows would use; a page
 * fault's were chosen by MmHandlePageFault (Stop).
 */
static VOID
KiExceptionBugCheck(const struct x86_trap_frame *Frame, const ULONG_PTR Stop[5])
{
    ULONG_PTR Status;

    switch (Frame->vector)
    {
        case X86_VECTOR_PAGE_FAULT:
            KeBugCheckEx((ULONG)Stop[0], Stop[1], Stop[2], Stop[3], Stop[4]);
        case 0:
            Status = STATUS_INTEGER_DIVIDE_BY_ZERO;
            break;
        case X86_VECTOR_BREAKPOINT:
            Status = STATUS_BREAKPOINT;
            break;
        case 4:
            Status = STATUS_INTEGER_OVERFLOW;
            break;
        case 5:
            Status = STATUS_ARRAY_BOUNDS_EXCEEDED;
            break;
        case 6:
            Status = STATUS_ILLEGAL_INSTRUCTION;
            break;
        case 13:
            Status = STATUS_ACCESS_VIOLATION;
            break;
        case 17:
            Status = STATUS_DATATYPE_MISALIGNMENT;
            break;
        default:
            /* Double fault, TSS, segment, machine check...: P1 = the vector. */
            KeBugCheckEx(UNEXPECTED_KERNEL_MODE_TRAP, Frame->vector, Frame->error_code, Frame->rip,
                         0);
    }
    /* P1 exception code, P2 faulting RIP, P3 error code, P4 0. */
    KeBugCheckEx(KMODE_EXCEPTION_NOT_HANDLED, Status, Frame->rip, Frame->error_code, 0);
}

static VOID
KiDispatchException(struct x86_trap_frame *Frame)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG64 Cr2 = Frame->vector == X86_VECTOR_PAGE_FAULT ? x86_read_cr2() : 0;
    ULONG64 Offset;
    const char *Symbol = KiLookupSymbol(Frame->rip, &Offset);
    ULONG_PTR Stop[5] = {0};

    if (Frame->vector == X86_VECTOR_NMI)
    {
        /* The freeze of a bug check or report in progress, else an NMI from outside. */
        if (KiBugCheckInProgress())
        {
            KiFreezeProcessor(Frame);
        }
        KiExternalNmi(Frame);
    }
    if (Frame->vector == X86_VECTOR_PAGE_FAULT &&
        MmHandlePageFault(Cr2, Frame->error_code, Frame->rip, Stop))
    {
        return; // a stale TLB entry after a widening change: retry the access
    }
    KiSetBugCheckTrapFrame(Frame);
    if (KiBugCheckIsExpected())
    {
        /* The workload expects this; one line is enough. */
        DbgPrint("# exception %s at %s+%#llx (cr2 %#llx)\n", KiExceptionNames[Frame->vector],
                 Symbol ? Symbol : "?", Offset, Cr2);
        KiExceptionBugCheck(Frame, Stop);
    }

    KiDebugConsoleBusted = TRUE;
    DbgPrint("\n*** EXCEPTION %llu: %s, error code %#llx, on processor %u at IRQL %u\n",
             Frame->vector, KiExceptionNames[Frame->vector], Frame->error_code, Prcb->Number,
             HalGetCurrentIrql());
    KiPrintAddress("  RIP ", Frame->rip);
    if (Frame->vector == X86_VECTOR_PAGE_FAULT)
    {
        DbgPrint("  CR2 %016llx (%s %s)\n", Cr2,
                 (Frame->error_code & X86_PF_FETCH)   ? "instruction fetch"
                 : (Frame->error_code & X86_PF_WRITE) ? "write"
                                                      : "read",
                 (Frame->error_code & 1) ? "protection violation" : "of a page not present");
    }
    KiPrintTrapFrame(Frame);
    KiExceptionBugCheck(Frame, Stop);
}

VOID
KiTrapDispatch(struct x86_trap_frame *Frame)
{
    /*
     * Vector 0x1F is reserved for exceptions, but the processor never raises
     * it (SDM vol. 3A table 6-1); NT uses it for the APC software interrupt,
     * which the APIC delivers like any other vector.
     */
    if (Frame->vector < X86_EXCEPTION_COUNT && Frame->vector != KI_VECTOR_APC)
    {
        KiDispatchException(Frame);
        return;
    }
    KiDispatchVector(Frame);
}
