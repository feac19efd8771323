/* SPDX-License-Identifier: MIT */
/*
 * KiSystemStartup: the boot processor's first C code. Brings the system up
 * layer by layer, then runs the workload the image was linked with (the
 * in-kernel test suite, which ends the run), or says there is none.
 */
#include "kernel/ex/ex.h"
#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "hal/hal.h"
#include "lib/lib.h"

/* The workloads linked in (KI_STARTUP_WORKLOAD; linker.ld). */
extern const KI_WORKLOAD __kworkload_start[];
extern const KI_WORKLOAD __kworkload_end[];

/*
 * Runs the workload the image was linked with; one without a workload says so
 * and ends the run with HAL_EXIT_IDLE. Boot processor, PASSIVE_LEVEL,
 * interrupts on, every processor started. Never returns.
 */
__attribute__((noreturn)) static VOID
KiRunWorkload(PCSTR CommandLine)
{
    SIZE_T Count = (SIZE_T)(__kworkload_end - __kworkload_start);

    if (Count == 0)
    {
        DbgPrint("Spindle: no workload linked in; nothing to run\n");
        HalExitEmulator(HAL_EXIT_IDLE);
    }
    if (Count > 1)
    {
        DbgPrint("Spindle: %llu workloads linked in; running the first, \"%s\"\n", (ULONG64)Count,
                 __kworkload_start[0].Name);
    }
    __kworkload_start[0].Routine(CommandLine);
    KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0, 0, 0, 0); // a workload ends the run itself
}

INIT_CODE ULONG
KiCommandLineValue(PCSTR CommandLine, const char *Key, ULONG Default, ULONG Min, ULONG Max)
{
    size_t Length;
    const char *Text = cmdline_get(CommandLine, Key, &Length);
    uint64_t Value;

    if (Text == NULL || Length == 0)
    {
        return Default;
    }
    if (!parse_u64(Text, Length, &Value) || Value < Min || Value > Max)
    {
        DbgPrint("Spindle: %s= must be a number from %u to %u; using %u\n", Key, Min, Max, Default);
        return Default;
    }
    return (ULONG)Value;
}

INIT_CODE __attribute__((noreturn)) static VOID KiSystemStartupPhase1(VOID);

/*
 * Entry from boot/multiboot2.asm (and from the EFI loader through it):
 * 64-bit mode, interrupts off, on the boot stack (.boot.bss), RDI = physical
 * address of the multiboot2 information. Builds the kernel's address space,
 * then continues on the boot processor's guarded kernel stack. Never returns.
 */
/*
 * The TSC when the boot processor entered KiSystemStartup and when every
 * processor was online: the boot time `make bench` reports. Written once by
 * the boot processor before the test suite starts; read-only afterwards.
 */
ULONG64 KiStartupTsc;
ULONG64 KiProcessorsOnlineTsc;

INIT_CODE VOID
KiSystemStartup(ULONG64 BootInfoPhysical)
{
    KiStartupTsc = x86_rdtsc();
    HalInitializeDebugPort();
    /* GS must point at a PRCB before anything (DbgPrint, KeBugCheckEx) reads it. */
    KiInitializeBootProcessor();
    KiParseBootInfo(BootInfoPhysical);

    DbgPrint("\nSpindle: booted by %s\n", KiBootInfo.Loader);
    DbgPrint("Spindle: command line \"%s\"\n", KiBootInfo.CommandLine);

    MmInitializePhysicalMemory();
    MmInitializeAddressSpace(); // W^X image, NX identity map, NULL unmapped from here on
    if (!KiAllocateProcessorStacks(KiGetPrcb(0)))
    {
        KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x4d4d, 1, 0, 0);
    }
    /* The TSS is read at each IST switch: the new stacks take effect now. */
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        KiGetPrcb(0)->Tables.tss.ist[i] = KiGetPrcb(0)->IstTop[i];
    }
    x86_switch_stack(KiGetPrcb(0)->KernelStackTop, KiSystemStartupPhase1);
}

/* The rest of start-up, on the boot processor's guarded kernel stack. Never returns. */
INIT_CODE static VOID
KiSystemStartupPhase1(VOID)
{
    ExpInitializePool();
#if DBG
    KiInitializeVerifier(KiBootInfo.CommandLine);
#endif
    HalDisableLegacyPic();
    HalInitializeLocalApic();
    HalInitializeAcpi(KiBootInfo.RsdpPhysical != 0 ? KiBootInfo.Rsdp : NULL,
                      sizeof(KiBootInfo.Rsdp));
    KiGetPrcb(0)->ApicId = HalGetCurrentApicId();
    KiInitializeDpc();
    KiInitializeWait(KiBootInfo.CommandLine);
    KiInitializeIpi();
    KiInitializeClock(KiBootInfo.CommandLine);
    x86_sti();
    KiStartSecondaryProcessors();
    KiProcessorsOnlineTsc = x86_rdtsc();
    ExpInitializeLookaside();
    IopInitializeIrpLookaside();
    MmReportProtection();

    KiRunWorkload(KiBootInfo.CommandLine);
}
