/* SPDX-License-Identifier: MIT */
/*
 * Fault: cases that end the run with a report, one per boot. `make test`
 * skips them unless the kernel command line holds `faults=1`; each is run on
 * its own, e.g. make test TESTS='Fault:stack_overflow_in_test_thread' CMDLINE='faults=1',
 * and must end with QEMU exit 37 and the STOP line named in its comment.
 */
#include <ktest.h>
#include <wdm.h>

#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"
#include "tests/harness/harness.h"

#define FT_WAIT_MS 30000 // how long a case waits for the fault it provokes

static volatile ULONG FtStop; // never set: keeps the compiler from seeing an endless recursion
static volatile ULONG FtOverrunBytes = 112 + 1; // read at run time: FtWriteBytes stays one function

static VOID
FtRequireFaultMode(VOID)
{
    if (KtCommandLineValue("faults", 0) != 1)
    {
        KT_SKIP("a fault case ends the run: it runs alone, with faults=1");
    }
}

/* Recurses until the stack's guard page stops it. */
static __attribute__((noinline)) ULONG
FtRecurse(ULONG Depth)
{
    volatile UCHAR Frame[128];

    Frame[Depth % sizeof(Frame)] = (UCHAR)Depth;
    if (FtStop)
    {
        return Frame[0];
    }
    return FtRecurse(Depth + 1) + Frame[Depth % sizeof(Frame)];
}

static VOID
FtWaitForTheEnd(VOID)
{
    LARGE_INTEGER Frequency;
    LARGE_INTEGER Start = KeQueryPerformanceCounter(&Frequency);

    for (;;)
    {
        LARGE_INTEGER Now = KeQueryPerformanceCounter(NULL);
        if ((ULONG64)(Now.QuadPart - Start.QuadPart) / ((ULONG64)Frequency.QuadPart / 1000) >
            FT_WAIT_MS)
        {
            break;
        }
        YieldProcessor();
    }
    KtFail("the fault did not stop the system", __FILE__, __LINE__);
}

/* STOP 0x7F (UNEXPECTED_KERNEL_MODE_TRAP, P1 8) on the test's processor, backtrace in FtRecurse. */
KTEST(Fault, stack_overflow_in_test_thread)
{
    FtRequireFaultMode();
    KtLog("result %u", FtRecurse(0)); // never returns
}

static VOID
FtOverflowDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    (void)Dpc;
    (void)Argument1;
    (void)Argument2;
    *(volatile ULONG *)Context = FtRecurse(0);
}

/* STOP 0x7F (P1 8) on processor 1, in a DPC: the report names processor 1 and FtRecurse. */
KTEST_EX(Fault, stack_overflow_in_dpc_on_another_processor, KTEST_SMP_ONLY, 0)
{
    static KDPC Dpc;
    static volatile ULONG Result;

    FtRequireFaultMode();
    KeInitializeDpc(&Dpc, FtOverflowDpc, (PVOID)&Result);
    KeSetTargetProcessorDpc(&Dpc, 1);
    KT_ASSERT(KeInsertQueueDpc(&Dpc, NULL, NULL));
    FtWaitForTheEnd();
}

/* Writes Count bytes from Block on: past the end of a special-pool block, the report names it. */
static __attribute__((noinline)) VOID
FtWriteBytes(PUCHAR Block, ULONG Count)
{
    for (ULONG i = 0; i < Count; i++)
    {
        ((volatile UCHAR *)Block)[i] = (UCHAR)i;
    }
    __asm__ volatile("" ::: "memory"); // not a tail call: the caller stays in the backtrace
}

/*
 * With pool=special: STOP 0xD6 (DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION)
 * at the first byte past a 112-byte block, which ends against the guard page.
 */
KTEST(Fault, special_pool_overrun)
{
    PUCHAR Block;

    FtRequireFaultMode();
    if (!ExpSpecialPoolEnabled)
    {
        KT_SKIP("needs pool=special on the command line");
    }
    Block = ExAllocatePoolWithTag(NonPagedPoolNx, 112, 'tlFT');
    KT_ASSERT(Block != NULL);
    FtWriteBytes(Block, FtOverrunBytes); // the write at 112 faults
    KtFail("the overrun did not fault", __FILE__, __LINE__);
}
