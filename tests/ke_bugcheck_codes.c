/* SPDX-License-Identifier: MIT */
/*
 * A bug check of the catalogue that no other suite provokes: a DPC routine
 * that returns above DISPATCH_LEVEL (0xC8 IRQL_UNEXPECTED_VALUE, checked
 * build). The other codes Spindle raises have their tests beside the code
 * they check (0xC4/0x1001 and 0x1002: KeVerifier).
 */
#include <wdm.h>

#include <ktest.h>

#include "kernel/ke/ke.h"
#include "lib/lib.h"

#define BC_DPC_IRQL 5

#if DBG
typedef struct _BC_DPC
{
    KDPC Dpc;
    volatile LONG Ran;
} BC_DPC;

/* Returns at BC_DPC_IRQL instead of DISPATCH_LEVEL. */
static VOID
BcRaisingDpc(PKDPC Dpc, PVOID Context, PVOID Argument1, PVOID Argument2)
{
    BC_DPC *Record = Context;
    KIRQL Ignored;

    __atomic_store_n(&Record->Ran, 1, __ATOMIC_RELEASE);
    KeRaiseIrql(BC_DPC_IRQL, &Ignored);
}
#endif

KTEST(KeBugCheckCodes, dpc_returning_above_dispatch_level_is_irql_unexpected_value)
{
#if DBG
    BC_DPC Record;
    KT_BUGCHECK_CATCH Catch;

    memset(&Record, 0, sizeof(Record));
    KeInitializeDpc(&Record.Dpc, BcRaisingDpc, &Record);
    Catch.Expected = IRQL_UNEXPECTED_VALUE;
    KtArmBugCheck(&Catch);
    if (x86_setjmp(&Catch.Jump) == 0)
    {
        KeInsertQueueDpc(&Record.Dpc, NULL, NULL); // at PASSIVE_LEVEL: runs at once
        KtDisarmBugCheck(&Catch);
        KtCheckBugCheck(&Catch, IRQL_UNEXPECTED_VALUE, FALSE, "DPC returned raised", __FILE__,
                        __LINE__);
    }
    else
    {
        KtCheckBugCheck(&Catch, IRQL_UNEXPECTED_VALUE, TRUE, "DPC returned raised", __FILE__,
                        __LINE__);
        /* P1 packs (current IRQL << 8) | expected; P2 the routine, P3 the DPC. */
        KT_EXPECT_EQ(Catch.Parameter[0], (BC_DPC_IRQL << 8) | DISPATCH_LEVEL);
        KT_EXPECT_EQ(Catch.Parameter[1], (ULONG_PTR)BcRaisingDpc);
        KT_EXPECT_EQ(Catch.Parameter[2], (ULONG_PTR)&Record.Dpc);
    }
    KT_EXPECT_EQ(Record.Ran, 1);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    /* The catch unwound the DPC drain; repair what it would have reset on the way out. */
    KeGetCurrentPrcb()->DpcRoutineActive = FALSE;
#else
    KT_SKIP("checked build only");
#endif
}
