/* SPDX-License-Identifier: MIT */
/*
 * Processors: the processor control blocks (KiProcessorBlock) and the count
 * online, the boot processor's own set-up (KiInitializeBootProcessor, called
 * by KiSystemStartup), bringing the application processors online, and the
 * processor-identity API (API.md §6).
 *
 * Start-up (DESIGN.md §3, STYLE.md §7): the HAL lists the enabled processors
 * (ACPI MADT); the boot processor starts every other one, one at a time:
 * PRCB and stacks, then HalStartProcessor (INIT-SIPI-SIPI, bounded wait),
 * then the count. Each AP enters KiSecondaryStartup on its own kernel stack.
 *
 * Numbering: processor numbers are dense, 0..KiActiveProcessorCount-1. The
 * boot processor is 0; each AP that comes online takes the next number, in
 * MADT order. An AP that fails to start consumes no number: the HAL has put
 * it back into wait-for-SIPI, so its stacks are freed and its PRCB slot is
 * reset (KiResetProcessorBlock) and given to the next AP. At most
 * MAXIMUM_PROCESSORS run; further processors are reported and left in
 * wait-for-SIPI.
 */
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "hal/hal.h"
#include "lib/lib.h"

#define KI_LOW_MEMORY_LIMIT 0x100000ull // the trampoline page: a SIPI vector addresses 1 MiB

/* Processors online once start-up is over; obsolete, KeQueryActiveProcessorCount is current. */
CCHAR KeNumberProcessors = 1;

/* KeGetCurrentProcessorNumber reads Number with one GS-relative 8-byte load. */
_Static_assert(offsetof(KPRCB, Number) % 8 == 0 && sizeof(((KPRCB *)0)->Number) == 4,
               "Number is the low half of an aligned quadword");

/*
 * The boot processor's IST stacks until the kernel's address space exists
 * (KiSystemStartup then moves them, and the kernel stack, into the system
 * region with guard pages: KiAllocateProcessorStacks). Only a fault in the
 * first steps of start-up runs on these.
 */
static UCHAR KiBootIstStacks[X86_IST_COUNT][4096] __attribute__((aligned(16)));

/* Every processor's control block, indexed by processor number. */
KPRCB KiProcessorBlock[MAXIMUM_PROCESSORS];

/* Processors online; the boot processor alone raises it, with release (KiStartSecondaryProcessors).
 */
volatile ULONG KiActiveProcessorCount = 1;

/*
 * Loads this processor's GDT, TSS (with its IST stacks), the IDT and GS base.
 * Each processor once, at start-up, interrupts off.
 */
VOID
KiInitializeProcessorTables(PKPRCB Prcb)
{
    Prcb->Self = Prcb;
    x86_cpu_tables_load(&Prcb->Tables, Prcb->IstTop);
    x86_idt_load();
    /* After the segment reload: loading a null GS selector clears the GS base. */
    x86_set_gs_base((ULONG64)Prcb);
}

/*
 * Makes the boot processor processor 0: its PRCB, stacks, GDT, TSS, IDT and
 * GS base. KiSystemStartup's first step, interrupts off, before anything reads
 * the GS base (DbgPrint, KeBugCheckEx).
 */
INIT_CODE VOID
KiInitializeBootProcessor(VOID)
{
    PKPRCB Prcb = KiGetPrcb(0);

    Prcb->Number = 0;
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        Prcb->IstTop[i] = (ULONG64)KiBootIstStacks[i] + sizeof(KiBootIstStacks[i]);
    }
    x86_idt_build();
    KiInitializeProcessorTables(Prcb);
    Prcb->Online = TRUE;
}

/* Bit n set for each of processors 0..Count-1. */
static KAFFINITY
KiAffinityOfCount(ULONG Count)
{
    if (Count >= sizeof(KAFFINITY) * 8)
    {
        return ~(KAFFINITY)0;
    }
    return ((KAFFINITY)1 << Count) - 1;
}

/*
 * Returns the current processor's number, 0..active-1. Any IRQL; stable only
 * at >= DISPATCH_LEVEL (below it the caller may in principle migrate).
 */
ULONG
KeGetCurrentProcessorNumber(VOID)
{
    /* One load through GS: there is no moment between finding the PRCB and reading it. */
    return (ULONG)x86_read_gs_qword(offsetof(KPRCB, Number));
}

/*
 * As KeGetCurrentProcessorNumber; also fills *ProcNumber (group 0, Number,
 * Reserved 0) when given. Any IRQL.
 */
ULONG
KeGetCurrentProcessorNumberEx(PPROCESSOR_NUMBER ProcNumber)
{
    ULONG Number = KeGetCurrentProcessorNumber();

    if (ProcNumber != NULL)
    {
        ProcNumber->Group = 0; // one group: processors 0..63
        ProcNumber->Number = (UCHAR)Number;
        ProcNumber->Reserved = 0;
    }
    return Number;
}

/*
 * Returns the number of active processors and stores their bitmap (bits
 * 0..count-1) in *ActiveProcessors when given. Any IRQL.
 */
ULONG
KeQueryActiveProcessorCount(PKAFFINITY ActiveProcessors)
{
    /* Acquire: pairs with the release store in KiStartSecondaryProcessors. */
    ULONG Count = __atomic_load_n(&KiActiveProcessorCount, __ATOMIC_ACQUIRE);

    if (ActiveProcessors != NULL)
    {
        *ActiveProcessors = KiAffinityOfCount(Count);
    }
    return Count;
}

/* Returns the bitmap of active processors (bits 0..count-1). Any IRQL. */
KAFFINITY
KeQueryActiveProcessors(VOID)
{
    return KiAffinityOfCount(__atomic_load_n(&KiActiveProcessorCount, __ATOMIC_ACQUIRE));
}

/*
 * An application processor's first kernel code, from boot/trampoline.asm:
 * 64-bit mode, interrupts off, on Prcb's kernel stack, the trampoline's
 * temporary GDT, no IDT, GS base 0. Never returns.
 */
VOID
KiSecondaryStartup(PKPRCB Prcb)
{
    ULONG ApicId;

    KiInitializeProcessorTables(Prcb); // GDT, TSS with the IST stacks, IDT, GS base
    x86_paging_init(); // EFER.NXE where the processor has NX (the trampoline sets it too)
    HalInitializeLocalApic();
    ApicId = HalGetCurrentApicId();
    if (ApicId != Prcb->ApicId)
    {
        /* The boot processor times out, reports it and parks it with INIT. */
        DbgPrint("Spindle: processor %u reports APIC ID %u, not %u; not bringing it online\n",
                 Prcb->Number, ApicId, Prcb->ApicId);
        for (;;)
        {
            x86_cli();
            x86_hlt();
        }
    }

    KiInitializeClockProcessor(); // this processor's periodic tick; taken once interrupts are on

    /* Printed before Online so that each processor's line precedes the next one's start. */
    DbgPrint("Spindle: processor %u online (APIC ID %u)\n", Prcb->Number, ApicId);
    /* Release: the PRCB and tables set up above are visible before Online (pairs with the
       acquire poll in HalStartProcessor and KiQueueIdleWork's read). */
    __atomic_store_n(&Prcb->Online, TRUE, __ATOMIC_RELEASE);
    x86_sti();
    KiIdleLoop();
}

#define KI_STACK_PAGES (KI_KERNEL_STACK_SIZE / KI_PAGE_SIZE)
#define KI_IST_PAGES   (KI_IST_STACK_SIZE / KI_PAGE_SIZE)

/*
 * Kernel stack and IST stacks for Prcb, each in the system region above an
 * unmapped guard page, so that an overflow faults (and, with no stack left
 * to push on, double-faults onto the IST stack) instead of running into the
 * memory below. FALSE (nothing kept) when memory runs out. Boot processor,
 * PASSIVE_LEVEL or with interrupts off before the APs start.
 */
BOOLEAN
KiAllocateProcessorStacks(PKPRCB Prcb)
{
    PVOID Stack = MmAllocateSystemPages(KI_STACK_PAGES, 1, 0, MM_READ | MM_WRITE, MM_SYSTEM_STACK);

    if (Stack == NULL)
    {
        return FALSE;
    }
    Prcb->KernelStackBase = (ULONG_PTR)Stack;
    Prcb->KernelStackTop = (ULONG_PTR)Stack + KI_KERNEL_STACK_SIZE;
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        PVOID Ist = MmAllocateSystemPages(KI_IST_PAGES, 1, 0, MM_READ | MM_WRITE, MM_SYSTEM_STACK);
        if (Ist == NULL)
        {
            for (int j = 0; j < i; j++)
            {
                MmFreeSystemPages((PVOID)(Prcb->IstTop[j] - KI_IST_STACK_SIZE), KI_IST_PAGES, 1, 0);
            }
            MmFreeSystemPages(Stack, KI_STACK_PAGES, 1, 0);
            return FALSE;
        }
        Prcb->IstTop[i] = (ULONG64)Ist + KI_IST_STACK_SIZE;
    }
    return TRUE;
}

static VOID
KiFreeProcessorStacks(PKPRCB Prcb)
{
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        MmFreeSystemPages((PVOID)(Prcb->IstTop[i] - KI_IST_STACK_SIZE), KI_IST_PAGES, 1, 0);
    }
    MmFreeSystemPages((PVOID)Prcb->KernelStackBase, KI_STACK_PAGES, 1, 0);
}

/*
 * Gives back a PRCB slot after a failed start, for the next AP. Only what
 * start-up and KiSecondaryStartup set before Online is cleared: an AP that
 * never came online ran with interrupts off, so it queued no DPC and took no
 * interrupt, and the rest of the slot (the DPC queues KiInitializeDpc set up
 * for every slot) is as it was.
 */
static VOID
KiResetProcessorBlock(PKPRCB Prcb)
{
    Prcb->Self = NULL;
    Prcb->Number = 0;
    Prcb->ApicId = 0;
    Prcb->Online = FALSE;
    Prcb->KernelStackBase = 0;
    Prcb->KernelStackTop = 0;
    memset(Prcb->IstTop, 0, sizeof(Prcb->IstTop));
    memset(&Prcb->Tables, 0, sizeof(Prcb->Tables));
}

/*
 * Starts every processor the HAL lists other than the boot processor, one at
 * a time, and sets KeNumberProcessors. Boot processor, once, at PASSIVE_LEVEL
 * after HalInitializeAcpi; interrupts may be on. Processors that do not start
 * are reported (by the HAL) and skipped.
 */
INIT_CODE VOID
KiStartSecondaryProcessors(VOID)
{
    PKPRCB Boot = KiGetPrcb(0);
    ULONG Listed = HalQueryProcessorCount();
    ULONG BeyondMaximum = 0;
    BOOLEAN BootListed = FALSE;
    PVOID LowPage = NULL;

    DbgPrint("Spindle: processor 0 online (APIC ID %u), boot processor\n", Boot->ApicId);

    for (ULONG Index = 0; Index < Listed; Index++)
    {
        ULONG ApicId = HalQueryProcessorApicId(Index);
        ULONG Number = KiActiveProcessorCount;
        PKPRCB Prcb;
        HAL_PROCESSOR_START Start;

        if (ApicId == Boot->ApicId)
        {
            BootListed = TRUE;
            continue;
        }
        if (Number == MAXIMUM_PROCESSORS)
        {
            BeyondMaximum++;
            continue;
        }
        if (LowPage == NULL)
        {
            LowPage = MmAllocateLowPage(KI_LOW_MEMORY_LIMIT);
            /* The identity map is no-execute; the trampoline runs from this page. */
            if (LowPage == NULL ||
                !MmProtectRange(LowPage, KI_PAGE_SIZE, MM_READ | MM_WRITE | MM_EXECUTE) ||
                !HalPrepareProcessorStart(LowPage))
            {
                DbgPrint("Spindle: no usable page below 1 MiB for the processor trampoline; "
                         "running on one processor\n");
                if (LowPage != NULL)
                {
                    MmProtectRange(LowPage, KI_PAGE_SIZE, MM_READ | MM_WRITE);
                    MmFreePages(LowPage, 1);
                }
                return;
            }
        }

        Prcb = KiGetPrcb(Number);
        Prcb->Number = Number;
        Prcb->ApicId = ApicId;
        if (!KiAllocateProcessorStacks(Prcb))
        {
            DbgPrint("Spindle: no memory for the stacks of processor %u (APIC ID %u)\n", Number,
                     ApicId);
            KiResetProcessorBlock(Prcb);
            continue;
        }

        Start.Entry = (ULONG_PTR)KiSecondaryStartup;
        Start.Context = Prcb;
        Start.StackTop = Prcb->KernelStackTop;
        Start.Online = &Prcb->Online;
        if (!HalStartProcessor(ApicId, &Start))
        {
            /* Parked in wait-for-SIPI by the HAL: the slot and the stacks are free again. */
            KiFreeProcessorStacks(Prcb);
            KiResetProcessorBlock(Prcb);
            continue;
        }
        /*
         * Release: Prcb (written by the AP before its release store of Online,
         * which HalStartProcessor acquired) is visible before the count that
         * makes it reachable (pairs with the acquire loads of the count in
         * KeQueryActiveProcessorCount and its other readers).
         */
        __atomic_store_n(&KiActiveProcessorCount, Number + 1, __ATOMIC_RELEASE);
    }

    if (LowPage != NULL)
    {
        /*
         * Every started AP has left the trampoline and its GDT (Online comes
         * after its lgdt); the page loses execute on every processor first.
         */
        MmProtectRange(LowPage, KI_PAGE_SIZE, MM_READ | MM_WRITE);
        MmFreePages(LowPage, 1);
    }
    if (BeyondMaximum != 0)
    {
        DbgPrint("Spindle: %u processor(s) beyond MAXIMUM_PROCESSORS (%d) left stopped\n",
                 BeyondMaximum, MAXIMUM_PROCESSORS);
    }
    KeNumberProcessors = (CCHAR)KiActiveProcessorCount;
    DbgPrint("Spindle: %u of %u processor(s) online\n", KiActiveProcessorCount,
             Listed + (BootListed ? 0 : 1));
}
