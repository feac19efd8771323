/* SPDX-License-Identifier: MIT */
/*
 * Checked-build checks: the one family kernel code uses to bug-check misuse
 * (wrong IRQL above all) in the checked build (DBG=1). Each is a statement
 * that names the bug check it raises and its four parameters; in the free
 * build (DBG=0) the condition and the parameters are never evaluated and the
 * compiler drops the check. They are macros so that the caller IP they record
 * (__builtin_return_address(0)) is that of the public routine using them.
 * Conditions that a free build must also honour are not checks: code them.
 */
#pragma once

#include <wdm.h>

/* Checked build: unless Condition holds, bug check Code with the four parameters. */
#define KiCheck(Condition, Code, P1, P2, P3, P4)                                                   \
    do                                                                                             \
    {                                                                                              \
        if (DBG && !(Condition))                                                                   \
        {                                                                                          \
            KeBugCheckEx((Code), (ULONG_PTR)(P1), (ULONG_PTR)(P2), (ULONG_PTR)(P3),                \
                         (ULONG_PTR)(P4));                                                         \
        }                                                                                          \
    } while (0)

/*
 * IRQL <= Maximum, else 0xA IRQL_NOT_LESS_OR_EQUAL (P1 Object, P2 IRQL, P3 0, P4 caller IP).
 * Written as !(IRQL > Maximum): with Maximum PASSIVE_LEVEL, "unsigned <= 0" reads as a
 * mistake to cppcheck (unsignedLessThanZero).
 */
#define KiCheckIrqlAtMost(Maximum, Object)                                                         \
    KiCheck(!(KeGetCurrentIrql() > (Maximum)), IRQL_NOT_LESS_OR_EQUAL, (Object),                   \
            KeGetCurrentIrql(), 0, __builtin_return_address(0))

/* IRQL >= Minimum, else 0x9 IRQL_NOT_GREATER_OR_EQUAL (P1 Object, P2 IRQL, P3 Minimum, P4 0). */
#define KiCheckIrqlAtLeast(Minimum, Object)                                                        \
    KiCheck(KeGetCurrentIrql() >= (Minimum), IRQL_NOT_GREATER_OR_EQUAL, (Object),                  \
            KeGetCurrentIrql(), (Minimum), 0)

/* IRQL == DISPATCH_LEVEL, else 0x8 IRQL_NOT_DISPATCH_LEVEL (P1 Object, P2 IRQL, P3 0, P4 0). */
#define KiCheckIrqlIsDispatch(Object)                                                              \
    KiCheck(KeGetCurrentIrql() == DISPATCH_LEVEL, IRQL_NOT_DISPATCH_LEVEL, (Object),               \
            KeGetCurrentIrql(), 0, 0)

/* The AtDpcLevel spin-lock forms (ordinary and queued): IRQL >= DISPATCH_LEVEL, else 0x9. */
#define KiCheckAtDpcLevel(SpinLock) KiCheckIrqlAtLeast(DISPATCH_LEVEL, (SpinLock))

/*
 * A raising acquire must not be called above the level it raises to (Target),
 * else 0xA IRQL_NOT_LESS_OR_EQUAL (P1 SpinLock, P2 IRQL, P3 1, P4 Rip, the
 * acquirer's caller).
 */
#define KiCheckRaiseTo(SpinLock, Target, Rip)                                                      \
    KiCheck(KeGetCurrentIrql() <= (Target), IRQL_NOT_LESS_OR_EQUAL, (SpinLock),                    \
            KeGetCurrentIrql(), 1, (Rip))
