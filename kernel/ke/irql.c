/* SPDX-License-Identifier: MIT */
/*
 * IRQL is CR8 (the local APIC task priority, DESIGN.md §4). Raising masks
 * every interrupt of that class and below at once; lowering lets the APIC
 * deliver whatever became pending, DPC and APC self-IPIs included, so there is
 * no software check on the way down. Neither changes RFLAGS.IF.
 * Checked builds (DBG=1) bug-check on a raise to a lower level (0x9) and a
 * lower to a higher level (0xA), API.md §2.3; free builds just set the level.
 */
#include "kernel/ke/ke.h"

#include "hal/hal.h"

/* Returns the current processor's IRQL. Any IRQL. */
KIRQL
KeGetCurrentIrql(VOID)
{
    return HalGetCurrentIrql();
}

/*
 * Raises IRQL to NewIrql and returns the previous level. IRQL in <= NewIrql
 * (equal is a no-op), out NewIrql. Checked build: a NewIrql below the current
 * IRQL is 0x9 (P1 current, P2 NewIrql); one above HIGH_LEVEL is 0xC4/0x30.
 */
KIRQL
KfRaiseIrql(KIRQL NewIrql)
{
    KIRQL OldIrql = HalGetCurrentIrql();

    KiCheck(NewIrql >= OldIrql, IRQL_NOT_GREATER_OR_EQUAL, OldIrql, NewIrql, 0, 0);
    KiCheck(NewIrql <= HIGH_LEVEL, DRIVER_VERIFIER_DETECTED_VIOLATION, 0x30, OldIrql, NewIrql, 0);
    HalSetCurrentIrql(NewIrql);
    return OldIrql;
}

/* As KfRaiseIrql, storing the previous level in *OldIrql. */
VOID
KeRaiseIrql(KIRQL NewIrql, PKIRQL OldIrql)
{
    *OldIrql = KfRaiseIrql(NewIrql);
}

/*
 * Lowers IRQL to NewIrql (<= current), the value the matching raise returned.
 * Pending software and device interrupts above NewIrql are delivered on the
 * way. IRQL out: NewIrql. Checked build: a NewIrql above the current IRQL is
 * 0xA (P1 0, P2 current, P4 caller IP).
 */
VOID
KeLowerIrql(KIRQL NewIrql)
{
    KiCheck(NewIrql <= HalGetCurrentIrql(), IRQL_NOT_LESS_OR_EQUAL, 0, HalGetCurrentIrql(), 0,
            __builtin_return_address(0));
    HalSetCurrentIrql(NewIrql);
}

/* IRQL in <= DISPATCH_LEVEL, out DISPATCH_LEVEL; returns the previous level. */
KIRQL
KeRaiseIrqlToDpcLevel(VOID)
{
    return KfRaiseIrql(DISPATCH_LEVEL);
}

/* IRQL in <= SYNCH_LEVEL, out SYNCH_LEVEL; returns the previous level. */
KIRQL
KeRaiseIrqlToSynchLevel(VOID)
{
    return KfRaiseIrql(SYNCH_LEVEL);
}
