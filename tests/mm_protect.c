/* SPDX-License-Identifier: MIT */
/*
 * MmProtect: the kernel address space's protections. Writes to code and
 * constant data stop with 0xBE, instruction fetches from data, stacks,
 * no-execute pool and the identity map with 0xFC, NonPagedPool runs code, a
 * protection change on one processor holds on every other, and guard pages
 * report what they guard. Every write stores back the byte already there, so
 * a kernel without the protection survives the test and only fails it.
 */
#include <ktest.h>
#include <wdm.h>

#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define MP_KERNEL_BASE 0xFFFFFFFF80000000ull
#define MP_WAIT_MS     20000 // bound on every cross-processor wait
#define MP_RET         0xc3

/* KT_EXPECT_BUGCHECK that also hands back the bug check's four parameters. */
#define MP_EXPECT_BUGCHECK(Code, Params, Statement)                                                \
    do                                                                                             \
    {                                                                                              \
        KT_BUGCHECK_CATCH MpCatch_;                                                                \
        MpCatch_.Expected = (Code);                                                                \
        for (int MpI_ = 0; MpI_ < 4; MpI_++)                                                       \
        {                                                                                          \
            MpCatch_.Parameter[MpI_] = 0;                                                          \
        }                                                                                          \
        KtArmBugCheck(&MpCatch_);                                                                  \
        if (x86_setjmp(&MpCatch_.Jump) == 0)                                                       \
        {                                                                                          \
            Statement;                                                                             \
            KtDisarmBugCheck(&MpCatch_);                                                           \
            KtCheckBugCheck(&MpCatch_, (Code), FALSE, #Statement, __FILE__, __LINE__);             \
        }                                                                                          \
        else                                                                                       \
        {                                                                                          \
            KtCheckBugCheck(&MpCatch_, (Code), TRUE, #Statement, __FILE__, __LINE__);              \
        }                                                                                          \
        for (int MpI_ = 0; MpI_ < 4; MpI_++)                                                       \
        {                                                                                          \
            (Params)[MpI_] = MpCatch_.Parameter[MpI_];                                             \
        }                                                                                          \
    } while (0)

typedef ULONG MP_CODE(VOID);

/* mov eax, 0x2a; ret */
static const UCHAR MpReturn42[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, MP_RET};

static const UCHAR MpConstant[64] = {0x5a};
static UCHAR MpDataCode[64] = {MP_RET};
static UCHAR MpSharedPage[KI_PAGE_SIZE] __attribute__((aligned(KI_PAGE_SIZE))) = {1};

/* Stores back the byte at Address (a write the protection must stop). */
static VOID
MpWriteBack(ULONG_PTR Address)
{
    volatile UCHAR *Byte = (volatile UCHAR *)Address;
    *Byte = *Byte;
}

static ULONG
MpCall(PVOID Code)
{
    return ((MP_CODE *)Code)();
}

KTEST(MmProtect, writing_kernel_code_bugchecks_0xbe)
{
    ULONG_PTR Address = (ULONG_PTR)&KeGetCurrentIrql;
    ULONG_PTR P[4];

    MP_EXPECT_BUGCHECK(ATTEMPTED_WRITE_TO_READONLY_MEMORY, P, MpWriteBack(Address));
    KT_EXPECT_EQ(P[0], Address);
    KT_EXPECT_EQ(P[1] & X86_PTE_WRITE, 0);
    KT_EXPECT_NE(P[2], 0); // the faulting RIP: in MpWriteBack
}

KTEST(MmProtect, writing_rodata_bugchecks_0xbe)
{
    ULONG_PTR Address = (ULONG_PTR)&MpConstant[7];
    ULONG_PTR P[4];

    MP_EXPECT_BUGCHECK(ATTEMPTED_WRITE_TO_READONLY_MEMORY, P, MpWriteBack(Address));
    KT_EXPECT_EQ(P[0], Address);
    KT_EXPECT_EQ(MpConstant[0], 0x5a);
}

KTEST(MmProtect, data_and_bss_stay_writable)
{
    static ULONG Bss;
    MpDataCode[63] = 7;
    Bss = 9;
    KT_EXPECT_EQ(MpDataCode[63] + Bss, 16);
    MpDataCode[63] = 0;
}

KTEST(MmProtect, executing_data_bugchecks_0xfc)
{
    ULONG_PTR P[4];

    MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall(MpDataCode));
    KT_EXPECT_EQ(P[0], (ULONG_PTR)MpDataCode);
    KT_EXPECT_EQ(P[2], (ULONG_PTR)MpDataCode); // the RIP is the fetch address
    KT_EXPECT_NE(P[1] & X86_PTE_NX, 0);
}

KTEST(MmProtect, executing_rodata_bugchecks_0xfc)
{
    ULONG_PTR P[4];

    MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall((PVOID)MpReturn42));
    KT_EXPECT_EQ(P[0], (ULONG_PTR)MpReturn42);
}

KTEST(MmProtect, executing_the_stack_bugchecks_0xfc)
{
    UCHAR Code[16];
    ULONG_PTR P[4];

    memcpy(Code, MpReturn42, sizeof(MpReturn42));
    MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall(Code));
    KT_EXPECT_EQ(P[0], (ULONG_PTR)Code);
}

KTEST(MmProtect, executing_the_identity_map_of_kernel_code_bugchecks_0xfc)
{
    ULONG_PTR Alias = (ULONG_PTR)&KeGetCurrentIrql - MP_KERNEL_BASE;
    ULONG_PTR P[4];

    KT_ASSERT(MmIsAddressValid(Alias));
    MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall((PVOID)Alias));
    KT_EXPECT_EQ(P[0], Alias);
}

KTEST(MmProtect, executing_nonpagedpoolnx_bugchecks_0xfc)
{
    static const SIZE_T Sizes[] = {16, 3000, 3 * KI_PAGE_SIZE};

    for (ULONG i = 0; i < sizeof(Sizes) / sizeof(Sizes[0]); i++)
    {
        PUCHAR Block = ExAllocatePoolWithTag(NonPagedPoolNx, Sizes[i], 'xNpM');
        PUCHAR Also = ExAllocatePoolWithTag(NonPagedPool | POOL_NX_ALLOCATION, Sizes[i], 'xNpM');
        ULONG_PTR P[4];

        KT_ASSERT(Block != NULL && Also != NULL);
        memcpy(Block, MpReturn42, sizeof(MpReturn42));
        memcpy(Also, MpReturn42, sizeof(MpReturn42));
        MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall(Block));
        KT_EXPECT_EQ(P[0], (ULONG_PTR)Block);
        MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall(Also));
        ExFreePoolWithTag(Block, 'xNpM');
        ExFreePoolWithTag(Also, 'xNpM');
    }
}

KTEST(MmProtect, nonpagedpool_runs_code)
{
    static const SIZE_T Sizes[] = {16, 3000, 3 * KI_PAGE_SIZE};

    for (ULONG i = 0; i < sizeof(Sizes) / sizeof(Sizes[0]); i++)
    {
        PUCHAR Block = ExAllocatePoolWithTag(NonPagedPool, Sizes[i], 'xEpM');
        KT_ASSERT(Block != NULL);
        memcpy(Block + Sizes[i] - sizeof(MpReturn42), MpReturn42, sizeof(MpReturn42));
        KT_EXPECT_EQ(MpCall(Block + Sizes[i] - sizeof(MpReturn42)), 42);
        ExFreePoolWithTag(Block, 'xEpM');
    }
}

KTEST(MmProtect, freed_executable_pool_pages_are_no_execute_again)
{
    PUCHAR Block = ExAllocatePoolWithTag(NonPagedPool, 2 * KI_PAGE_SIZE, 'xEpM');
    ULONG_PTR P[4];

    KT_ASSERT(Block != NULL);
    memcpy(Block, MpReturn42, sizeof(MpReturn42));
    KT_EXPECT_EQ(MpCall(Block), 42);
    ExFreePoolWithTag(Block, 'xEpM');
    /* The identity map still maps the page; it is free memory now, and not executable. */
    MP_EXPECT_BUGCHECK(ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, P, MpCall(Block));
    KT_EXPECT_EQ(P[0], (ULONG_PTR)Block);
}

KTEST(MmProtect, reading_a_stack_guard_page_bugchecks_0x7f_double_fault)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    ULONG_PTR Guard = Prcb->KernelStackBase - 8;
    ULONG_PTR P[4];

    KT_EXPECT(!MmIsAddressValid(Guard));
    KT_EXPECT_EQ(MmQuerySystemPage(Guard), MM_SYSTEM_STACK_GUARD);
    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        KT_EXPECT(!MmIsAddressValid(Prcb->IstTop[i] - KI_IST_STACK_SIZE - 8));
        KT_EXPECT(MmIsAddressValid(Prcb->IstTop[i] - 8));
    }
    MP_EXPECT_BUGCHECK(UNEXPECTED_KERNEL_MODE_TRAP, P, (void)*(volatile UCHAR *)Guard);
    KT_EXPECT_EQ(P[0], 8);
}

KTEST(MmProtect, every_processor_has_guarded_stacks)
{
    for (ULONG i = 0; i < KeQueryActiveProcessorCount(NULL); i++)
    {
        PKPRCB Prcb = KiGetPrcb(i);
        KT_EXPECT_GE(Prcb->KernelStackBase, MM_SYSTEM_BASE);
        KT_EXPECT_EQ(MmQuerySystemPage(Prcb->KernelStackBase), MM_SYSTEM_STACK);
        KT_EXPECT_EQ(MmQuerySystemPage(Prcb->KernelStackBase - 1), MM_SYSTEM_STACK_GUARD);
        for (int s = 0; s < X86_IST_COUNT; s++)
        {
            KT_EXPECT_EQ(MmQuerySystemPage(Prcb->IstTop[s] - KI_IST_STACK_SIZE - 1),
                         MM_SYSTEM_STACK_GUARD);
        }
    }
}

KTEST(MmProtect, reading_past_a_guarded_allocation_bugchecks_0xd6)
{
    PUCHAR Base = MmAllocateSystemPages(2, 0, 1, MM_READ | MM_WRITE, MM_SYSTEM_SPECIAL);
    ULONG_PTR P[4];

    KT_ASSERT(Base != NULL);
    Base[2 * KI_PAGE_SIZE - 1] = 1;
    MP_EXPECT_BUGCHECK(DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION, P,
                       (void)*(volatile UCHAR *)(Base + 2 * KI_PAGE_SIZE));
    KT_EXPECT_EQ(P[0], (ULONG_PTR)Base + 2 * KI_PAGE_SIZE);
    KT_EXPECT_EQ(P[1], 0); // a read
    MP_EXPECT_BUGCHECK(DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION, P,
                       *(volatile UCHAR *)(Base + 2 * KI_PAGE_SIZE + 17) = 1);
    KT_EXPECT_EQ(P[1], 1); // a write
    MmFreeSystemPages(Base, 2, 0, 1);
    KT_EXPECT(!MmIsAddressValid((ULONG64)Base));
}

KTEST(MmProtect, protection_changes_are_refused_on_unmapped_pages)
{
    KT_EXPECT(!MmProtectRange(NULL, KI_PAGE_SIZE, MM_READ));
    KT_EXPECT(!MmProtectRange(MpSharedPage + 1, KI_PAGE_SIZE, MM_READ));
    KT_EXPECT(!MmProtectRange(MpSharedPage, KI_PAGE_SIZE, 0));
}

/* ---- a change on one processor, seen on another */

typedef struct _MP_SHARED
{
    volatile LONG Stage;
    ULONG_PTR Parameters[4];
    LONG Caught;
    ULONG Writer;
} MP_SHARED;

static ULONG64
MpNowMs(VOID)
{
    LARGE_INTEGER Frequency;
    LARGE_INTEGER Now = KeQueryPerformanceCounter(&Frequency);
    return (ULONG64)Now.QuadPart / ((ULONG64)Frequency.QuadPart / 1000);
}

static BOOLEAN
MpWaitStage(MP_SHARED *Shared, LONG Stage)
{
    ULONG64 Start = MpNowMs();

    while (__atomic_load_n(&Shared->Stage, __ATOMIC_ACQUIRE) < Stage)
    {
        if (MpNowMs() - Start > MP_WAIT_MS)
        {
            return FALSE;
        }
        YieldProcessor();
    }
    return TRUE;
}

static VOID
MpSetStage(MP_SHARED *Shared, LONG Stage)
{
    /* Release: pairs with the acquire in MpWaitStage. */
    __atomic_store_n(&Shared->Stage, Stage, __ATOMIC_RELEASE);
}

static VOID
MpChangeAndWrite(ULONG Index, PVOID Context)
{
    MP_SHARED *Shared = Context;

    if (Index == 0)
    {
        KT_ASSERT(MpWaitStage(Shared, 1));
        /* The other processor holds a writable translation now. */
        KT_EXPECT(MmProtectRange(MpSharedPage, KI_PAGE_SIZE, MM_READ));
        MpSetStage(Shared, 2);
        KT_ASSERT(MpWaitStage(Shared, 3));
        /* Widening flushes only here: the other one's read-only entry must retry. */
        KT_EXPECT(MmProtectRange(MpSharedPage, KI_PAGE_SIZE, MM_READ | MM_WRITE));
        MpSetStage(Shared, 4);
        KT_ASSERT(MpWaitStage(Shared, 5));
        return;
    }
    Shared->Writer = KeGetCurrentProcessorNumber();
    MpSharedPage[100]++;
    MpSetStage(Shared, 1);
    KT_ASSERT(MpWaitStage(Shared, 2));
    MP_EXPECT_BUGCHECK(ATTEMPTED_WRITE_TO_READONLY_MEMORY, Shared->Parameters,
                       MpWriteBack((ULONG_PTR)&MpSharedPage[200]));
    Shared->Caught = (LONG)(Shared->Parameters[0] == (ULONG_PTR)&MpSharedPage[200]);
    (void)*(volatile UCHAR *)&MpSharedPage[300]; // caches the read-only translation
    MpSetStage(Shared, 3);
    KT_ASSERT(MpWaitStage(Shared, 4));
    MpSharedPage[400] = 4; // a stale read-only entry faults, and the fault is retried
    MpSetStage(Shared, 5);
}

KTEST_EX(MmProtect, protection_change_on_one_processor_holds_on_another, KTEST_SMP_ONLY, 0)
{
    MP_SHARED Shared = {0};

    KtRunOnProcessors(2, MpChangeAndWrite, &Shared);
    KT_EXPECT_EQ(Shared.Stage, 5);
    KT_EXPECT_EQ(Shared.Caught, 1);
    KT_EXPECT_EQ(MpSharedPage[400], 4);
    KT_EXPECT(MmProtectRange(MpSharedPage, KI_PAGE_SIZE, MM_READ | MM_WRITE));
    MpSharedPage[100] = 0;
    MpSharedPage[400] = 0;
}
