/* SPDX-License-Identifier: MIT */
/*
 * IoIrpLookaside: IRPs of up to 8 stack locations come from per-processor
 * lookaside lists, as on Windows: IoAllocateIrp(n, FALSE) gives a fixed-size
 * IRP (IRP_ALLOCATED_FIXED_SIZE, the list's Size) without
 * IRP_LOOKASIDE_ALLOCATION, IoAllocateIrp(n, TRUE) one with both (ReactOS's
 * kmtest IoIrp, run on Windows); IoReuseIrp keeps the flags, IoInitializeIrp
 * clears them; IoFreeIrp puts the IRP back on the current processor's list
 * and gives a quota caller's float back; with the float spent, or above 8
 * locations, the IRP is a plain pool one. Every processor allocating and
 * freeing at once never shares an IRP (and the harness sees no pool leak).
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ex/ex.h"
#include "kernel/io/iop.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define ILA_HELD       (EXP_LOOKASIDE_MAXIMUM_DEPTH + 1) // enough to empty a processor's list
#define ILA_ITERATIONS 2000

static PNPAGED_LOOKASIDE_LIST
IlaList(ULONG List)
{
    return &IopIrpLookasideP[KeGetCurrentPrcb()->Number][List];
}

static VOID
IlaCheckFresh(PIRP Irp, CCHAR StackSize)
{
    KT_EXPECT_EQ(Irp->Type, IO_TYPE_IRP);
    KT_EXPECT_EQ(Irp->StackCount, StackSize);
    KT_EXPECT_EQ(Irp->CurrentLocation, StackSize + 1);
    KT_EXPECT(IsListEmpty(&Irp->ThreadListEntry));
    KT_EXPECT(Irp->Tail.Overlay.CurrentStackLocation == (PIO_STACK_LOCATION)(Irp + 1) + StackSize);
    KT_EXPECT_GE(Irp->Size, IoSizeOfIrp(StackSize));
}

KTEST(IoIrpLookaside, quota_callers_get_the_lookaside_flag_others_only_fixed_size)
{
    PIRP Irp;

    /* kmtest IoIrp's second and third cases, then the same for the one-location list. */
    Irp = IoAllocateIrp(2, FALSE);
    KT_ASSERT(Irp != NULL);
    IlaCheckFresh(Irp, 2);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(IOP_LARGE_IRP_STACK_LOCATIONS));
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE);
    IoFreeIrp(Irp); // cached: the next request finds a list that is not empty

    Irp = IoAllocateIrp(2, TRUE);
    KT_ASSERT(Irp != NULL);
    IlaCheckFresh(Irp, 2);
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE | IRP_LOOKASIDE_ALLOCATION);
    IoFreeIrp(Irp);

    Irp = IoAllocateIrp(1, FALSE);
    KT_ASSERT(Irp != NULL);
    IlaCheckFresh(Irp, 1);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(1));
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE);
    IoFreeIrp(Irp);
    Irp = IoAllocateIrp(1, TRUE);
    KT_ASSERT(Irp != NULL);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(1));
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE | IRP_LOOKASIDE_ALLOCATION);
    IoFreeIrp(Irp);

    /* Stack counts 0 and 8 share the large list. */
    Irp = IoAllocateIrp(0, FALSE);
    KT_ASSERT(Irp != NULL);
    IlaCheckFresh(Irp, 0);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(IOP_LARGE_IRP_STACK_LOCATIONS));
    IoFreeIrp(Irp);
    Irp = IoAllocateIrp(IOP_LARGE_IRP_STACK_LOCATIONS, FALSE);
    KT_ASSERT(Irp != NULL);
    IlaCheckFresh(Irp, IOP_LARGE_IRP_STACK_LOCATIONS);
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE);
    IoFreeIrp(Irp);
}

KTEST(IoIrpLookaside, reuse_keeps_the_flags_and_initialize_clears_them)
{
    PIRP Irp = IoAllocateIrp(3, TRUE);

    KT_ASSERT(Irp != NULL);
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE | IRP_LOOKASIDE_ALLOCATION);
    Irp->IoStatus.Information = 99;
    IoReuseIrp(Irp, STATUS_CANCELLED);
    KT_EXPECT_EQ(Irp->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE | IRP_LOOKASIDE_ALLOCATION);
    KT_EXPECT_EQ(Irp->Size, IoSizeOfIrp(IOP_LARGE_IRP_STACK_LOCATIONS));
    KT_EXPECT_EQ(Irp->StackCount, 3);
    KT_EXPECT_EQ(Irp->IoStatus.Status, STATUS_CANCELLED);
    KT_EXPECT_EQ(Irp->IoStatus.Information, 0);
    IoFreeIrp(Irp);

    /* IoInitializeIrp zeroes the whole packet, the flags included (then IoFreeIrp frees to pool).
     */
    Irp = IoAllocateIrp(3, FALSE);
    KT_ASSERT(Irp != NULL);
    IoInitializeIrp(Irp, Irp->Size, 3);
    KT_EXPECT_EQ(Irp->AllocationFlags, 0);
    IoFreeIrp(Irp);
}

KTEST(IoIrpLookaside, free_puts_the_irp_back_on_this_processors_list)
{
    static PIRP Held[ILA_HELD];
    ULONG Count = 0;
    PIRP Irp, Again;
    KIRQL Old;

    /* At DISPATCH_LEVEL this processor's list is ours alone. Empty it first. */
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    while (Count < ILA_HELD && QueryDepthSList(&IlaList(IOP_LARGE_IRP_LIST)->L.ListHead) != 0)
    {
        Held[Count] = IoAllocateIrp(4, FALSE);
        if (Held[Count] == NULL)
        {
            break;
        }
        Count++;
    }
    KT_EXPECT_EQ(QueryDepthSList(&IlaList(IOP_LARGE_IRP_LIST)->L.ListHead), 0);

    Irp = IoAllocateIrp(4, FALSE); // from the shared list or pool
    if (Irp != NULL)
    {
        ULONG Frees = IlaList(IOP_LARGE_IRP_LIST)->L.TotalFrees;
        ULONG Allocates = IlaList(IOP_LARGE_IRP_LIST)->L.TotalAllocates;

        IoFreeIrp(Irp);
        KT_EXPECT_EQ(IlaList(IOP_LARGE_IRP_LIST)->L.TotalFrees, Frees + 1);
        KT_EXPECT_EQ(QueryDepthSList(&IlaList(IOP_LARGE_IRP_LIST)->L.ListHead), 1);
        Again = IoAllocateIrp(6, FALSE);
        KT_EXPECT(Again == Irp); // the same packet, from this processor's list
        KT_EXPECT_EQ(IlaList(IOP_LARGE_IRP_LIST)->L.TotalAllocates, Allocates + 1);
        if (Again != NULL)
        {
            IlaCheckFresh(Again, 6);
            KT_EXPECT_EQ(Again->AllocationFlags, IRP_ALLOCATED_FIXED_SIZE);
            IoFreeIrp(Again);
        }
    }
    KT_EXPECT(Irp != NULL);
    while (Count > 0)
    {
        IoFreeIrp(Held[--Count]);
    }
    KeLowerIrql(Old);
}

KTEST(IoIrpLookaside, spent_float_and_large_stacks_give_plain_pool_irps)
{
    ULONG Number;
    LONG Saved;
    PIRP Cached, Plain, Large;
    KIRQL Old;

    KeRaiseIrql(DISPATCH_LEVEL, &Old); // this processor's float is ours alone
    Number = KeGetCurrentPrcb()->Number;
    Saved = IopLookasideIrpFloat[Number];
    KT_EXPECT_GT(Saved, 0);
    IoFreeIrp(IoAllocateIrp(2, FALSE)); // a list has one now
    IopLookasideIrpFloat[Number] = 1;

    Cached = IoAllocateIrp(2, TRUE);
    KT_EXPECT(Cached != NULL &&
              Cached->AllocationFlags == (IRP_ALLOCATED_FIXED_SIZE | IRP_LOOKASIDE_ALLOCATION));
    KT_EXPECT_EQ(IopLookasideIrpFloat[Number], 0);
    Plain = IoAllocateIrp(2, TRUE); // the float is spent: a pool IRP of its own size
    KT_EXPECT(Plain != NULL && Plain->AllocationFlags == 0 && Plain->Size == IoSizeOfIrp(2));
    KT_EXPECT_EQ(IopLookasideIrpFloat[Number], 0);
    if (Cached != NULL)
    {
        IoFreeIrp(Cached);
    }
    KT_EXPECT_EQ(IopLookasideIrpFloat[Number], 1); // given back
    if (Plain != NULL)
    {
        IoFreeIrp(Plain);
    }
    KT_EXPECT_EQ(IopLookasideIrpFloat[Number], 1);
    IopLookasideIrpFloat[Number] = Saved;

    /* More than 8 locations: always pool, never flagged, exactly its size. */
    Large = IoAllocateIrp(IOP_LARGE_IRP_STACK_LOCATIONS + 1, TRUE);
    KT_ASSERT(Large != NULL);
    IlaCheckFresh(Large, IOP_LARGE_IRP_STACK_LOCATIONS + 1);
    KT_EXPECT_EQ(Large->Size, IoSizeOfIrp(IOP_LARGE_IRP_STACK_LOCATIONS + 1));
    KT_EXPECT_EQ(Large->AllocationFlags, 0);
    IoFreeIrp(Large);
    KT_EXPECT_EQ(IopLookasideIrpFloat[Number], Saved);
    KeLowerIrql(Old);
}

/* ---------------------------------------------------------------- contention */

typedef struct _ILA_STRESS
{
    volatile LONG Corrupted; // an IRP changed while its holder owned it
    volatile LONG Failed;
    volatile LONG WrongFlags;
} ILA_STRESS;

static ILA_STRESS IlaStress;

/*
 * Without quota: fixed size exactly up to 8 locations, never the lookaside
 * flag. With quota: the same, or (float spent) a plain pool IRP; the lookaside
 * flag only on a fixed-size one.
 */
static BOOLEAN
IlaFlagsAllowed(UCHAR Flags, CCHAR StackSize, BOOLEAN Quota)
{
    BOOLEAN Small = StackSize <= IOP_LARGE_IRP_STACK_LOCATIONS;

    if (!Quota)
    {
        return Flags == (Small ? IRP_ALLOCATED_FIXED_SIZE : 0);
    }
    return Flags == 0 ||
           (Small && (Flags == IRP_ALLOCATED_FIXED_SIZE ||
                      Flags == (IRP_ALLOCATED_FIXED_SIZE | IRP_LOOKASIDE_ALLOCATION)));
}

static VOID
IlaStressRoutine(ULONG Index, PVOID Context)
{
    PIRP Held[4] = {NULL, NULL, NULL, NULL};

    for (ULONG i = 0; i < ILA_ITERATIONS; i++)
    {
        ULONG Slot = i % 4;
        ULONG_PTR Stamp = ((ULONG_PTR)Index << 32) | i;
        CCHAR StackSize = (CCHAR)(i % 11); // 0..10: both lists and pool
        BOOLEAN Quota = (i / 11) % 2 != 0;

        if (Held[Slot] != NULL)
        {
            if (Held[Slot]->Tail.Overlay.DriverContext[0] != (PVOID)(Stamp - 4) ||
                Held[Slot]->Type != IO_TYPE_IRP)
            {
                InterlockedIncrement(&IlaStress.Corrupted);
            }
            IoFreeIrp(Held[Slot]);
        }
        Held[Slot] = IoAllocateIrp(StackSize, Quota);
        if (Held[Slot] == NULL)
        {
            InterlockedIncrement(&IlaStress.Failed);
            break;
        }
        if (!IlaFlagsAllowed(Held[Slot]->AllocationFlags, StackSize, Quota))
        {
            InterlockedIncrement(&IlaStress.WrongFlags);
        }
        Held[Slot]->Tail.Overlay.DriverContext[0] = (PVOID)Stamp;
    }
    for (ULONG Slot = 0; Slot < 4; Slot++)
    {
        if (Held[Slot] != NULL)
        {
            IoFreeIrp(Held[Slot]);
        }
    }
}

KTEST(IoIrpLookaside, irps_are_never_shared_when_every_processor_allocates)
{
    ULONG64 Allocates = 0;

    memset((PVOID)&IlaStress, 0, sizeof(IlaStress));
    for (ULONG i = 0; i < KiActiveProcessorCount; i++)
    {
        Allocates += IopIrpLookasideP[i][IOP_LARGE_IRP_LIST].L.TotalAllocates;
    }
    KtRunOnProcessors(0, IlaStressRoutine, NULL);
    for (ULONG i = 0; i < KiActiveProcessorCount; i++)
    {
        Allocates -= IopIrpLookasideP[i][IOP_LARGE_IRP_LIST].L.TotalAllocates;
    }
    KT_EXPECT_EQ(IlaStress.Corrupted, 0);
    KT_EXPECT_EQ(IlaStress.Failed, 0);
    KT_EXPECT_EQ(IlaStress.WrongFlags, 0);
    KT_EXPECT_NE(Allocates, 0); // the per-processor lists were used
}
