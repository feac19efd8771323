/* SPDX-License-Identifier: MIT */
/*
 * The checked-build checks (kernel/ke/kicheck.h), white-box: a failed check
 * raises the bug check it names with its parameters in the checked build, and
 * the free build evaluates neither the condition nor the parameters.
 */
#include <ktest.h>
#include <wdm.h>

#include "kernel/ke/ke.h"

/* Runs Routine(Context) expecting bug check Code; stores the caught parameters in Parameters. */
static VOID
KcCatch(ULONG Code, VOID (*Routine)(PVOID), PVOID Context, ULONG_PTR Parameters[4])
{
    KT_BUGCHECK_CATCH Catch;

    Catch.Expected = Code;
    for (int i = 0; i < 4; i++)
    {
        Catch.Parameter[i] = 0;
    }
    KtArmBugCheck(&Catch);
    if (x86_setjmp(&Catch.Jump) == 0)
    {
        Routine(Context);
        KtDisarmBugCheck(&Catch);
        KtCheckBugCheck(&Catch, Code, FALSE, "Routine(Context)", __FILE__, __LINE__);
    }
    else
    {
        KtCheckBugCheck(&Catch, Code, TRUE, "Routine(Context)", __FILE__, __LINE__);
    }
    for (int i = 0; i < 4; i++)
    {
        Parameters[i] = Catch.Parameter[i];
    }
}

static VOID
KcSetEventAtHighLevel(PVOID Context)
{
    KIRQL OldIrql;

    KeRaiseIrql(HIGH_LEVEL, &OldIrql);
    KeSetEvent((PRKEVENT)Context, 0, FALSE);
    KeLowerIrql(OldIrql);
}

/* A routine for IRQL <= DISPATCH_LEVEL called above it: 0xA (object, IRQL, 0, caller IP). */
KTEST(KeCheck, irql_too_high_is_0xA_with_the_object_and_the_irql)
{
    KEVENT Event;
    ULONG_PTR Parameters[4];

    if (!DBG)
    {
        KT_SKIP("checked build only");
    }
    KeInitializeEvent(&Event, NotificationEvent, FALSE);
    KcCatch(IRQL_NOT_LESS_OR_EQUAL, KcSetEventAtHighLevel, &Event, Parameters);
    KT_EXPECT_EQ(Parameters[0], (ULONG_PTR)&Event);
    KT_EXPECT_EQ(Parameters[1], HIGH_LEVEL);
    KT_EXPECT_EQ(Parameters[2], 0);
    KT_EXPECT_NE(Parameters[3], 0); // the caller's IP
    KT_EXPECT_EQ(KeReadStateEvent(&Event), 0);
}

/* The free build drops a check whole: neither the condition nor a parameter is evaluated. */
KTEST(KeCheck, free_build_evaluates_nothing)
{
    volatile LONG Evaluated = 0;

    KiCheck((Evaluated++, TRUE), MANUALLY_INITIATED_CRASH, Evaluated++, 0, 0, 0);
    KT_EXPECT_EQ(Evaluated, DBG ? 1 : 0);
}
