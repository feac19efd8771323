/* SPDX-License-Identifier: MIT */
/*
 * Interrupt dispatch: every vector from 32 up runs at the IRQL its priority
 * class gives (vector >> 4, DESIGN.md §4) with interrupts enabled, so higher
 * classes can nest, then ends with EOI and returns to the interrupted IRQL.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

typedef struct _KI_VECTOR
{
    KI_INTERRUPT_ROUTINE *Routine;
    PVOID Context;
} KI_VECTOR;

static KI_VECTOR KiInterruptTable[256];

/* Installs the routine for Vector; all processors share the table. */
VOID
KiConnectVector(ULONG Vector, KI_INTERRUPT_ROUTINE *Routine, PVOID Context)
{
    KiInterruptTable[Vector].Context = Context;
    /* Release: the context is visible before a processor can see the routine. */
    __atomic_store_n(&KiInterruptTable[Vector].Routine, Routine, __ATOMIC_RELEASE);
}

/*
 * Runs the routine connected to an interrupt vector (32-255): raises IRQL to
 * the vector's class (vector >> 4), enables interrupts so higher classes nest,
 * calls the routine, then EOI and back to the interrupted IRQL. Called by
 * KiTrapDispatch with interrupts off; a spurious vector returns at once.
 */
VOID
KiDispatchVector(struct x86_trap_frame *Frame)
{
    ULONG Vector = (ULONG)Frame->vector;
    PKPRCB Prcb = KeGetCurrentPrcb();
    KI_INTERRUPT_ROUTINE *Routine;
    KIRQL OldIrql;

    if (Vector == HAL_SPURIOUS_VECTOR)
    {
        return; // no EOI for a spurious interrupt (SDM vol. 3A §10.9)
    }

    /*
     * The APIC delivered this vector because its class was above CR8, so this
     * raise can only go up. Interrupts stay on at the new level: only higher
     * classes get through, as in NT.
     */
    OldIrql = HalGetCurrentIrql();
    HalSetCurrentIrql((KIRQL)(Vector >> 4));
    Prcb->InterruptNesting++;
    Prcb->InterruptCount++;
    x86_sti();

    Routine = __atomic_load_n(&KiInterruptTable[Vector].Routine, __ATOMIC_ACQUIRE);
    if (Routine != NULL)
    {
        Routine(Frame, KiInterruptTable[Vector].Context);
    }
    else
    {
        DbgPrint("Spindle: unexpected interrupt vector %#x on processor %u\n", Vector,
                 Prcb->Number);
    }

    x86_cli();
    Prcb->InterruptNesting--;
    HalEndOfInterrupt();
    HalSetCurrentIrql(OldIrql);
}
