/* SPDX-License-Identifier: MIT */
/*
 * IRQL (API.md §2): KeRaiseIrql/KeLowerIrql on CR8, the level/vector map,
 * masking enforced by the APIC, and the checked build's misuse bug checks.
 */
#include <ktest.h>
#include <wdm.h>

#include "hal/hal.h"
#include "kernel/ke/ke.h"

/* A vector of class 9 (DIRQL 9) that only this file connects. */
#define TEST_VECTOR 0x9e

static volatile KIRQL SeenIrql;
static volatile BOOLEAN SeenInterruptsOn;
static volatile LONG TestVectorCount;

static VOID
TestVectorHandler(struct x86_trap_frame *Frame, PVOID Context)
{
    SeenIrql = KeGetCurrentIrql();
    SeenInterruptsOn = x86_interrupts_enabled();
    InterlockedIncrement(&TestVectorCount);
}

KTEST(KeIrql, raise_and_lower_round_trip_at_every_level)
{
    for (KIRQL Level = PASSIVE_LEVEL; Level <= HIGH_LEVEL; Level++)
    {
        KIRQL Old = 0xff;
        KeRaiseIrql(Level, &Old);
        KT_EXPECT_EQ(Old, PASSIVE_LEVEL);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Level);
        KeLowerIrql(Old);
        KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    }
}

KTEST(KeIrql, raise_returns_each_previous_level)
{
    static const KIRQL Chain[] = {APC_LEVEL,   DISPATCH_LEVEL, 7,         SYNCH_LEVEL,
                                  CLOCK_LEVEL, IPI_LEVEL,      HIGH_LEVEL};
    KIRQL Old[sizeof(Chain)];
    KIRQL Expected = PASSIVE_LEVEL;

    for (ULONG i = 0; i < sizeof(Chain); i++)
    {
        KeRaiseIrql(Chain[i], &Old[i]);
        KT_EXPECT_EQ(Old[i], Expected);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Chain[i]);
        Expected = Chain[i];
    }
    for (ULONG i = sizeof(Chain); i-- > 0;)
    {
        KeLowerIrql(Old[i]);
        KT_EXPECT_EQ(KeGetCurrentIrql(), Old[i]);
    }
}

KTEST(KeIrql, raise_to_current_level_is_a_no_op)
{
    KIRQL Old, Again;
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KeRaiseIrql(DISPATCH_LEVEL, &Again);
    KT_EXPECT_EQ(Again, DISPATCH_LEVEL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(Old);
}

KTEST(KeIrql, raise_to_dpc_and_synch_level_return_previous)
{
    KIRQL Old = KeRaiseIrqlToDpcLevel();
    KT_EXPECT_EQ(Old, PASSIVE_LEVEL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(KeRaiseIrqlToDpcLevel(), DISPATCH_LEVEL); // a second call at DL returns DL
    KT_EXPECT_EQ(KeRaiseIrqlToSynchLevel(), DISPATCH_LEVEL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), SYNCH_LEVEL);
    KT_EXPECT_EQ(SYNCH_LEVEL, 12);
    KeLowerIrql(Old);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeIrql, irql_is_cr8_and_the_apic_task_priority)
{
    KIRQL Old;
    KeRaiseIrql(CLOCK_LEVEL, &Old);
    KT_EXPECT_EQ(x86_read_cr8(), CLOCK_LEVEL);
    KeLowerIrql(Old);
    KT_EXPECT_EQ(x86_read_cr8(), PASSIVE_LEVEL);
}

KTEST(KeIrql, raising_keeps_interrupts_enabled)
{
    KIRQL Old;
    KeRaiseIrql(HIGH_LEVEL, &Old);
    KT_EXPECT(x86_interrupts_enabled());
    KeLowerIrql(Old);
    KT_EXPECT(x86_interrupts_enabled());
}

KTEST(KeIrql, interrupt_runs_at_its_vector_level_and_returns)
{
    KiConnectVector(TEST_VECTOR, TestVectorHandler, NULL);
    TestVectorCount = 0;
    HalRequestSelfInterrupt(TEST_VECTOR);
    KT_EXPECT_EQ(TestVectorCount, 1);
    KT_EXPECT_EQ(SeenIrql, TEST_VECTOR >> 4);
    KT_EXPECT(SeenInterruptsOn);
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
    KiConnectVector(TEST_VECTOR, NULL, NULL);
}

KTEST(KeIrql, device_interrupt_is_held_until_irql_drops_below_it)
{
    KIRQL Old;

    KiConnectVector(TEST_VECTOR, TestVectorHandler, NULL);
    TestVectorCount = 0;
    KeRaiseIrql(TEST_VECTOR >> 4, &Old);
    HalRequestSelfInterrupt(TEST_VECTOR);
    KT_EXPECT_EQ(TestVectorCount, 0); // masked at its own level
    KeLowerIrql((TEST_VECTOR >> 4) - 1);
    KT_EXPECT_EQ(TestVectorCount, 1); // delivered by the CR8 write alone
    KeLowerIrql(Old);
    KiConnectVector(TEST_VECTOR, NULL, NULL);
}

KTEST(KeIrql, apc_interrupt_is_held_at_apc_level)
{
    ULONG Cpu = KeGetCurrentProcessorNumber();
    ULONG64 Before = KiApcInterruptCount[Cpu];
    KIRQL Old;

    KeRaiseIrql(APC_LEVEL, &Old);
    KiRequestSoftwareInterrupt(APC_LEVEL);
    KT_EXPECT_EQ(KiApcInterruptCount[Cpu], Before);
    KeLowerIrql(PASSIVE_LEVEL);
    KT_EXPECT_EQ(KiApcInterruptCount[Cpu], Before + 1);
}

KTEST(KeIrql, software_interrupt_of_other_level_bugchecks)
{
    KT_EXPECT_BUGCHECK(INVALID_SOFTWARE_INTERRUPT, KiRequestSoftwareInterrupt(CLOCK_LEVEL));
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
}

KTEST(KeIrql, raise_to_lower_or_invalid_level_bugchecks_in_checked_build)
{
#if DBG
    KIRQL Old, Ignored;
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KT_EXPECT_BUGCHECK(IRQL_NOT_GREATER_OR_EQUAL, KeRaiseIrql(APC_LEVEL, &Ignored));
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL); // restored to the armed level
    KT_EXPECT_BUGCHECK(DRIVER_VERIFIER_DETECTED_VIOLATION, KeRaiseIrql(HIGH_LEVEL + 1, &Ignored));
    KeLowerIrql(PASSIVE_LEVEL);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeIrql, lower_to_higher_level_bugchecks_in_checked_build)
{
#if DBG
    KT_EXPECT_BUGCHECK(IRQL_NOT_LESS_OR_EQUAL, KeLowerIrql(DISPATCH_LEVEL));
    KT_EXPECT_EQ(KeGetCurrentIrql(), PASSIVE_LEVEL);
#else
    KT_SKIP("checked build only");
#endif
}

KTEST(KeIrql, misuse_just_sets_the_level_in_free_build)
{
#if DBG
    KT_SKIP("free build only");
#else
    KIRQL Old, Previous;
    KeRaiseIrql(DISPATCH_LEVEL, &Old);
    KeRaiseIrql(APC_LEVEL, &Previous); // Windows free x64: just sets the lower level
    KT_EXPECT_EQ(Previous, DISPATCH_LEVEL);
    KT_EXPECT_EQ(KeGetCurrentIrql(), APC_LEVEL);
    KeLowerIrql(DISPATCH_LEVEL); // and lowering "up" sets it too
    KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
    KeLowerIrql(PASSIVE_LEVEL);
#endif
}

/* Each processor round-trips every level and checks it is its own CR8 that changes. */
static VOID
RoundTripOnEachProcessor(ULONG Index, PVOID Context)
{
    volatile LONG *Errors = Context;
    for (KIRQL Level = PASSIVE_LEVEL; Level <= HIGH_LEVEL; Level++)
    {
        KIRQL Old;
        KeRaiseIrql(Level, &Old);
        if (KeGetCurrentIrql() != Level || Old != PASSIVE_LEVEL || !x86_interrupts_enabled())
        {
            InterlockedIncrement(Errors);
        }
        KeLowerIrql(Old);
    }
}

KTEST(KeIrql, every_processor_has_its_own_irql)
{
    volatile LONG Errors = 0;
    KtRunOnProcessors(0, RoundTripOnEachProcessor, (PVOID)&Errors);
    KT_EXPECT_EQ(Errors, 0);
}
