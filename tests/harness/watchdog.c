/* SPDX-License-Identifier: MIT */
/*
 * The test watchdog: each test runs against a budget (KTEST_EX's TimeoutMs, or
 * KT_DEFAULT_BUDGET_MS, times KT_SLOW_FACTOR for KTEST_SLOW). Every
 * processor's clock interrupt checks the deadline on the performance counter,
 * so a test that hangs on one processor, even with interrupts off there, is
 * caught by another's clock (an idle processor's comes once per idle period,
 * 1 s by default: ke/clock.c). The first to see it expire freezes the others,
 * reports every processor's RIP, marks the test "not ok", prints the summary
 * and leaves QEMU with the watchdog code. On -smp 1 a hang with interrupts
 * off is left to the host timeout.
 */
#include <ktest.h>

#include "hal/hal.h"
#include "kernel/ke/ke.h"
#include "tests/harness/harness.h"

#define KT_DEFAULT_BUDGET_MS 120000 // generous: TCG runs 8 vCPUs on 2 host cores
#define KT_SLOW_FACTOR       5

static volatile ULONG64 KtDeadline; // performance-counter value; 0 = disarmed
static volatile ULONG KtBudgetMs;
static volatile LONG KtFired;
static KT_TICK_HOOK *volatile KtTickHook; // the running test's, or NULL

static VOID
KtWatchdogTick(struct x86_trap_frame *Frame)
{
    ULONG64 Deadline = __atomic_load_n(&KtDeadline, __ATOMIC_ACQUIRE);
    const KTEST_CASE *Test = KtCurrentTest();
    LONG Expected = 0;
    /* Acquire: pairs with the release in KtSetTickHook (the hook's data first). */
    KT_TICK_HOOK *Hook = __atomic_load_n(&KtTickHook, __ATOMIC_ACQUIRE);

    if (Hook != NULL)
    {
        Hook();
    }
    if (Deadline == 0 || (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart < Deadline ||
        Test == NULL)
    {
        return;
    }
    if (!__atomic_compare_exchange_n(&KtFired, &Expected, 1, FALSE, __ATOMIC_ACQ_REL,
                                     __ATOMIC_RELAXED))
    {
        return;
    }
    DbgPrint("# watchdog: %s:%s did not finish within its budget of %u ms\n", Test->Suite,
             Test->Name, KtBudgetMs);
    if (!KiFreezeAndReport(Frame))
    {
        return; // a bug check is already stopping the system
    }
    KtReportWatchdog();
    HalExitEmulator(HAL_EXIT_WATCHDOG);
}

VOID
KtWatchdogStart(const KTEST_CASE *Test)
{
    LARGE_INTEGER Frequency;
    LARGE_INTEGER Now = KeQueryPerformanceCounter(&Frequency);
    ULONG64 Budget = Test->TimeoutMs != 0 ? Test->TimeoutMs : KT_DEFAULT_BUDGET_MS;

    if (Test->Flags & KTEST_SLOW)
    {
        Budget *= KT_SLOW_FACTOR;
    }
    KtBudgetMs = (ULONG)Budget;
    KiRegisterClockCallback(KtWatchdogTick);
    /* Release: the budget is written before a clock interrupt can see the deadline. */
    __atomic_store_n(&KtDeadline,
                     (ULONG64)Now.QuadPart + Budget * (ULONG64)Frequency.QuadPart / 1000,
                     __ATOMIC_RELEASE);
}

VOID
KtSetTickHook(KT_TICK_HOOK *Hook)
{
    /* Release: whatever Hook reads is written before a tick can call it. */
    __atomic_store_n(&KtTickHook, Hook, __ATOMIC_RELEASE);
}

VOID
KtWatchdogStop(VOID)
{
    KtSetTickHook(NULL);
    __atomic_store_n(&KtDeadline, 0, __ATOMIC_RELEASE);
}
