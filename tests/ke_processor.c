/* SPDX-License-Identifier: MIT */
/*
 * Processor identity (API.md §6) and start-up: every processor QEMU was given
 * (-smp, passed as smp= on the command line) is online with a dense, unique
 * number; on each one GS points at its own PRCB, whose APIC ID is the one its
 * local APIC reports, and it runs on its own stacks.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "hal/hal.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

/* What one processor saw of itself, sampled at DISPATCH_LEVEL so that it cannot move. */
typedef struct _KT_PROCESSOR_SAMPLE
{
    ULONG Number;
    ULONG NumberEx;
    PROCESSOR_NUMBER ProcessorNumber;
    ULONG64 GsBase;    // IA32_GS_BASE
    ULONG64 Self;      // gs:0
    PKPRCB Prcb;       // KeGetCurrentPrcb()
    ULONG LocalApicId; // what the local APIC reports
    ULONG64 Rsp;
    ULONG64 TssIst[X86_IST_COUNT];
} KT_PROCESSOR_SAMPLE;

static KT_PROCESSOR_SAMPLE KtSamples[MAXIMUM_PROCESSORS];

static KAFFINITY
KtAffinityOf(ULONG Count)
{
    return Count >= 64 ? ~(KAFFINITY)0 : ((KAFFINITY)1 << Count) - 1;
}

static ULONG
KtBitCount(KAFFINITY Bits)
{
    ULONG Count = 0;

    for (; Bits != 0; Bits &= Bits - 1)
    {
        Count++;
    }
    return Count;
}

static VOID
KtSampleProcessor(KT_PROCESSOR_SAMPLE *Sample)
{
    KIRQL Old;
    PKPRCB Prcb;

    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    memset(&Sample->ProcessorNumber, 0xa5, sizeof(Sample->ProcessorNumber));
    Sample->Number = KeGetCurrentProcessorNumber();
    Sample->NumberEx = KeGetCurrentProcessorNumberEx(&Sample->ProcessorNumber);
    Sample->GsBase = x86_rdmsr(X86_MSR_GS_BASE);
    Sample->Self = x86_read_gs_qword(0);
    Prcb = KeGetCurrentPrcb();
    Sample->Prcb = Prcb;
    Sample->LocalApicId = HalGetCurrentApicId();
    Sample->Rsp = x86_read_rsp();
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        Sample->TssIst[i] = Prcb->Tables.tss.ist[i];
    }
    KeLowerIrql(Old);
}

static VOID
KtSampleRoutine(ULONG Index, PVOID Context)
{
    KT_PROCESSOR_SAMPLE *Samples = (KT_PROCESSOR_SAMPLE *)Context;
    KtSampleProcessor(&Samples[Index]);
}

/* Checks one processor's view of itself against its PRCB. */
static VOID
KtCheckSample(const KT_PROCESSOR_SAMPLE *Sample, ULONG Count)
{
    PKPRCB Prcb;

    KT_ASSERT(Sample->Number < Count);
    Prcb = KiGetPrcb(Sample->Number);
    KT_EXPECT_EQ(Sample->Prcb, Prcb);
    KT_EXPECT_EQ(Sample->GsBase, (ULONG64)Prcb);
    KT_EXPECT_EQ(Sample->Self, (ULONG64)Prcb);
    KT_EXPECT_EQ(Prcb->Self, Prcb);
    KT_EXPECT_EQ(Prcb->Number, Sample->Number);
    KT_EXPECT_EQ(Prcb->ApicId, Sample->LocalApicId);
    KT_EXPECT(Prcb->Online);
    KT_EXPECT_EQ(Sample->NumberEx, Sample->Number);
    KT_EXPECT_EQ(Sample->ProcessorNumber.Group, 0);
    KT_EXPECT_EQ(Sample->ProcessorNumber.Number, Sample->Number);
    KT_EXPECT_EQ(Sample->ProcessorNumber.Reserved, 0);
    /* It runs on its own kernel stack, and its TSS holds its own IST stacks. */
    KT_EXPECT_GE(Sample->Rsp, Prcb->KernelStackBase);
    KT_EXPECT_LT(Sample->Rsp, Prcb->KernelStackTop);
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        KT_EXPECT_EQ(Sample->TssIst[i], Prcb->IstTop[i]);
    }
}

KTEST(KeProcessor, active_count_matches_smp)
{
    ULONG Expected = KtExpectedProcessorCount();

    KT_EXPECT_EQ(KeQueryActiveProcessorCount(NULL), Expected);
    KT_EXPECT_EQ(KeNumberProcessors, (CCHAR)Expected);
    KT_EXPECT_EQ(KiActiveProcessorCount, Expected);
}

KTEST(KeProcessor, active_processors_bitmap_is_dense)
{
    ULONG Count = KtExpectedProcessorCount();
    KAFFINITY Stored = 0x5a5a5a5a5a5a5a5aull;

    KT_EXPECT_EQ(KeQueryActiveProcessors(), KtAffinityOf(Count));
    KT_EXPECT_EQ(KeQueryActiveProcessorCount(&Stored), Count);
    KT_EXPECT_EQ(Stored, KtAffinityOf(Count));
    KT_EXPECT_EQ(KtBitCount(KeQueryActiveProcessors()), Count);
}

KTEST(KeProcessor, number_ex_agrees_with_number)
{
    PROCESSOR_NUMBER Number;
    KIRQL Old;

    memset(&Number, 0xa5, sizeof(Number));
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_EQ(KeGetCurrentProcessorNumberEx(&Number), KeGetCurrentProcessorNumber());
    KT_EXPECT_EQ(KeGetCurrentProcessorNumberEx(NULL), KeGetCurrentProcessorNumber());
    KT_EXPECT_EQ(Number.Group, 0);
    KT_EXPECT_EQ(Number.Number, KeGetCurrentProcessorNumber());
    KT_EXPECT_EQ(Number.Reserved, 0);
    KeLowerIrql(Old);
}

/* Tests run on processor 0, the boot processor. */
KTEST(KeProcessor, boot_processor_is_number_zero)
{
    KT_PROCESSOR_SAMPLE Sample;

    KtSampleProcessor(&Sample);
    KT_EXPECT_EQ(Sample.Number, 0);
    KtCheckSample(&Sample, KeQueryActiveProcessorCount(NULL));
}

KTEST(KeProcessor, every_processor_has_its_own_identity)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);
    KAFFINITY Seen = 0;

    KT_ASSERT(Count >= 1 && Count <= MAXIMUM_PROCESSORS);
    memset(KtSamples, 0, sizeof(KtSamples));
    KtRunOnProcessors(0, KtSampleRoutine, KtSamples);

    for (ULONG Index = 0; Index < Count; Index++)
    {
        const KT_PROCESSOR_SAMPLE *Sample = &KtSamples[Index];
        KAFFINITY Bit;

        KtCheckSample(Sample, Count);
        Bit = (KAFFINITY)1 << (Sample->Number % 64);
        if (Seen & Bit)
        {
            KtLog("processor number %u seen twice", Sample->Number);
        }
        KT_EXPECT_EQ(Seen & Bit, 0);
        Seen |= Bit;
    }
    /* Unique and each below Count, so together exactly 0..Count-1. */
    KT_EXPECT_EQ(Seen, KtAffinityOf(Count));
    KT_EXPECT_EQ(Seen, KeQueryActiveProcessors());
}

KTEST(KeProcessor, apic_ids_are_unique_and_listed_by_acpi)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    /* With every listed processor started, the sets agree (numbers follow MADT order). */
    KT_EXPECT_EQ(HalQueryProcessorCount(), Count);
    for (ULONG i = 0; i < Count; i++)
    {
        ULONG ApicId = KiGetPrcb(i)->ApicId;
        BOOLEAN Listed = FALSE;

        for (ULONG j = 0; j < i; j++)
        {
            KT_EXPECT_NE(KiGetPrcb(j)->ApicId, ApicId);
        }
        for (ULONG k = 0; k < HalQueryProcessorCount(); k++)
        {
            Listed |= HalQueryProcessorApicId(k) == ApicId;
        }
        KT_EXPECT(Listed);
    }
}

KTEST(KeProcessor, stacks_do_not_overlap)
{
    ULONG Count = KeQueryActiveProcessorCount(NULL);

    for (ULONG i = 0; i < Count; i++)
    {
        PKPRCB A = KiGetPrcb(i);

        KT_EXPECT_EQ(A->KernelStackTop - A->KernelStackBase, KI_KERNEL_STACK_SIZE);
        KT_EXPECT_EQ(A->KernelStackTop % 16, 0);
        for (ULONG j = i + 1; j < Count; j++)
        {
            PKPRCB B = KiGetPrcb(j);
            KT_EXPECT(A->KernelStackTop <= B->KernelStackBase ||
                      B->KernelStackTop <= A->KernelStackBase);
            for (int s = 0; s < X86_IST_COUNT; s++)
            {
                KT_EXPECT_NE(A->IstTop[s], B->IstTop[s]);
            }
        }
    }
}
