/* SPDX-License-Identifier: MIT */
/*
 * The in-kernel test runner: finds every KTEST in the .ktests section, sorts
 * them by "Suite:case", runs those the command line selects, checks the
 * system's hygiene after each one and reports KTAP on the debug port, ending
 * with "N passed, N failed, N skipped" and the isa-debug-exit code.
 */
#include <ktest.h>

#include "hal/hal.h"
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define KT_MAX_TESTS    4096
#define KT_MAX_PATTERNS 32
#define KT_MAX_TAGS     256
#define KT_NAME_LENGTH  128

extern const KTEST_CASE __ktests_start[];
extern const KTEST_CASE __ktests_end[];

typedef struct _KT_STATE
{
    const KTEST_CASE *Current;
    volatile LONG Failures; // expectation failures in the current test, any processor
    volatile BOOLEAN Skipped;
    const char *SkipReason;
    ULONG64 Seed;
    ULONG Verbose;
    prng_t Random; // guarded by RandomLock
    volatile LONG RandomLock;
} KT_STATE;

typedef enum _KT_RESULT
{
    KtPassed,
    KtFailed,
    KtSkipped
} KT_RESULT;

static KT_STATE KtState;
static ULONG KtCounts[3]; // passed, failed, skipped so far
static ULONG KtNumber;    // KTAP number of the running test

/* Per processor: the innermost armed KT_EXPECT_BUGCHECK, and where KtAbort goes (harness.h). */
static KT_BUGCHECK_CATCH *KtCatchers[MAXIMUM_PROCESSORS];
KT_JMP_BUF *KtAbortJump[MAXIMUM_PROCESSORS];
static const KTEST_CASE *KtTests[KT_MAX_TESTS];
static EXP_POOL_TAG_USAGE KtPoolBefore[KT_MAX_TAGS];
static EXP_POOL_TAG_USAGE KtPoolAfter[KT_MAX_TAGS];

const KTEST_CASE *
KtCurrentTest(VOID)
{
    return KtState.Current;
}

/* ---------------------------------------------------------------- reporting */

VOID
KtLog(const char *Format, ...)
{
    char Line[256];
    va_list Arguments;

    va_start(Arguments, Format);
    vsnprintf(Line, sizeof(Line), Format, Arguments);
    va_end(Arguments);
    DbgPrint("# %s\n", Line);
}

VOID
KtFail(const char *Expression, const char *File, int Line)
{
    __atomic_add_fetch(&KtState.Failures, 1, __ATOMIC_RELAXED);
    DbgPrint("# %s:%d: expected %s\n", File, Line, Expression);
}

VOID
KtFailCompare(const char *Left, const char *Op, const char *Right, LONG64 LeftValue,
              LONG64 RightValue, const char *File, int Line)
{
    __atomic_add_fetch(&KtState.Failures, 1, __ATOMIC_RELAXED);
    DbgPrint("# %s:%d: expected %s %s %s, got %lld (%#llx) vs %lld (%#llx)\n", File, Line, Left, Op,
             Right, LeftValue, (ULONG64)LeftValue, RightValue, (ULONG64)RightValue);
}

LONG
KtExchangeFailures(LONG Count)
{
    return __atomic_exchange_n(&KtState.Failures, Count, __ATOMIC_RELAXED);
}

VOID
KtAbort(VOID)
{
    KT_JMP_BUF *Jump = KtAbortJump[KeGetCurrentPrcb()->Number];

    if (Jump == NULL)
    {
        KeBugCheckEx(MANUALLY_INITIATED_CRASH, (ULONG_PTR)__builtin_return_address(0), 0, 0, 0);
    }
    x86_longjmp(Jump, 1);
}

VOID
KtSkip(const char *Why)
{
    KtState.SkipReason = Why;
    KtState.Skipped = TRUE;
    KtAbort();
}

ULONG64
KtRandom(VOID)
{
    ULONG64 Flags = x86_save_disable();
    ULONG64 Value;

    /* A raw lock: tests call this from any processor and IRQL. Acquire pairs with the release. */
    while (__atomic_exchange_n(&KtState.RandomLock, 1, __ATOMIC_ACQUIRE) != 0)
    {
        x86_pause();
    }
    Value = prng_next(&KtState.Random);
    __atomic_store_n(&KtState.RandomLock, 0, __ATOMIC_RELEASE);
    x86_restore_flags(Flags);
    return Value;
}

/* ---------------------------------------------------------------- bug-check catching */

VOID
KtArmBugCheck(KT_BUGCHECK_CATCH *Catch)
{
    PKPRCB Prcb;
    ULONG64 Flags = x86_save_disable();

    Prcb = KeGetCurrentPrcb();
    Catch->Irql = KeGetCurrentIrql();
    Catch->InterruptsOn = (Flags & X86_RFLAGS_IF) != 0;
    Catch->Nesting = Prcb->InterruptNesting;
    Catch->Code = 0;
    Catch->Previous = KtCatchers[Prcb->Number];
    KtCatchers[Prcb->Number] = Catch;
    x86_restore_flags(Flags);
}

VOID
KtDisarmBugCheck(KT_BUGCHECK_CATCH *Catch)
{
    ULONG64 Flags = x86_save_disable();
    KtCatchers[KeGetCurrentPrcb()->Number] = Catch->Previous;
    x86_restore_flags(Flags);
}

/* TRUE when a KT_EXPECT_BUGCHECK is armed on the current processor. Any IRQL. */
static BOOLEAN
KtIsBugCheckArmed(VOID)
{
    ULONG64 Flags = x86_save_disable();
    BOOLEAN Armed = KtCatchers[KeGetCurrentPrcb()->Number] != NULL;

    x86_restore_flags(Flags);
    return Armed;
}

/*
 * KeBugCheckEx's hook. Takes the bug check if the innermost catcher on this
 * processor expects this code: unwinds any interrupt the bug check came from,
 * restores the armed IRQL and interrupt flag and jumps back into the macro.
 * Otherwise returns, and the system stops.
 */
static VOID
KtCatchBugCheck(ULONG Code, const ULONG_PTR Parameters[4])
{
    PKPRCB Prcb;
    KT_BUGCHECK_CATCH *Catch;

    x86_cli();
    Prcb = KeGetCurrentPrcb();
    Catch = KtCatchers[Prcb->Number];
    if (Catch == NULL || Catch->Expected != Code)
    {
        if (Catch != NULL)
        {
            DbgPrint("# KT_EXPECT_BUGCHECK expected 0x%X (%s) but 0x%X (%s) was raised\n",
                     Catch->Expected, KiBugCheckName(Catch->Expected), Code, KiBugCheckName(Code));
        }
        if (KtState.Current != NULL)
        {
            DbgPrint("not ok %u %s:%s # bug check 0x%X on processor %u stopped the system\n",
                     KtNumber, KtState.Current->Suite, KtState.Current->Name, Code, Prcb->Number);
        }
        return;
    }
    Catch->Code = Code;
    for (int i = 0; i < 4; i++)
    {
        Catch->Parameter[i] = Parameters[i];
    }
    KtCatchers[Prcb->Number] = Catch->Previous;
    while (Prcb->InterruptNesting > Catch->Nesting)
    {
        HalEndOfInterrupt();
        Prcb->InterruptNesting--;
    }
    HalSetCurrentIrql(Catch->Irql);
    if (Catch->InterruptsOn)
    {
        x86_sti();
    }
    x86_longjmp(&Catch->Jump, 1);
}

VOID
KtCheckBugCheck(KT_BUGCHECK_CATCH *Catch, ULONG Expected, BOOLEAN Raised, const char *Statement,
                const char *File, int Line)
{
    if (!Raised)
    {
        __atomic_add_fetch(&KtState.Failures, 1, __ATOMIC_RELAXED);
        DbgPrint("# %s:%d: expected bug check 0x%X (%s) from `%s`, but it returned\n", File, Line,
                 Expected, KiBugCheckName(Expected), Statement);
        return;
    }
    if (KtState.Verbose)
    {
        DbgPrint("# caught bug check 0x%X (%s) (%#llx, %#llx, %#llx, %#llx) from `%s`\n",
                 Catch->Code, KiBugCheckName(Catch->Code), (ULONG64)Catch->Parameter[0],
                 (ULONG64)Catch->Parameter[1], (ULONG64)Catch->Parameter[2],
                 (ULONG64)Catch->Parameter[3], Statement);
    }
}

/* ---------------------------------------------------------------- selection */

static int
KtCompareNames(const KTEST_CASE *A, const KTEST_CASE *B)
{
    int Order = strcmp(A->Suite, B->Suite);
    return Order != 0 ? Order : strcmp(A->Name, B->Name);
}

static VOID
KtSortTests(ULONG Count)
{
    for (ULONG i = 1; i < Count; i++) // insertion sort: a few hundred entries, once
    {
        const KTEST_CASE *Item = KtTests[i];
        ULONG j = i;
        while (j > 0 && KtCompareNames(KtTests[j - 1], Item) > 0)
        {
            KtTests[j] = KtTests[j - 1];
            j--;
        }
        KtTests[j] = Item;
    }
}

/* TRUE if "Suite:Name" matches one of the comma-separated globs (or there are none). */
static BOOLEAN
KtIsSelected(const KTEST_CASE *Test, const char *Patterns, SIZE_T PatternsLength)
{
    char FullName[KT_NAME_LENGTH];
    SIZE_T Start = 0;

    if (PatternsLength == 0)
    {
        return TRUE;
    }
    snprintf(FullName, sizeof(FullName), "%s:%s", Test->Suite, Test->Name);
    while (Start < PatternsLength)
    {
        char Pattern[KT_NAME_LENGTH];
        SIZE_T End = Start;
        while (End < PatternsLength && Patterns[End] != ',')
        {
            End++;
        }
        if (End - Start < sizeof(Pattern) && End > Start)
        {
            memcpy(Pattern, Patterns + Start, End - Start);
            Pattern[End - Start] = 0;
            if (glob_match(Pattern, FullName))
            {
                return TRUE;
            }
        }
        Start = End + 1;
    }
    return FALSE;
}

/*
 * Every numeric option the harness and its suites read, with its range. The
 * whole command line is checked against this table before any test runs: a
 * value that is empty, not a number or out of range fails the run with a line
 * naming it, never a silent default.
 */
typedef struct _KT_OPTION
{
    const char *Key;
    ULONG64 Minimum;
    ULONG64 Maximum;
} KT_OPTION;

static const KT_OPTION KtOptions[] = {
    {"seed", 0, ~0ull},             // KtRandom's seed
    {"repeat", 1, 1000000},         // runs of the selection
    {"verbose", 0, 1},              // "# running" lines and caught bug checks
    {"smp", 1, MAXIMUM_PROCESSORS}, // processors QEMU was given
    {"bench", 0, 1},                // run the Bench suite
    {"bench_ms", 10, 5000},         // one contended window
    {"bench_windows", 3, 9},        // contended windows per point
    {"bench_reps", 5, 31},          // uncontended batches
    {"bench_cs", 0, 1000000},       // work inside a critical section
    {"bench_ncs", 0, 1000000},      // work outside it
    {"torture", 0, 1},              // run the Torture suite
    {"duration", 5, 3000},          // its seconds
    {"faults", 0, 1},               // run the Fault suite
    {"spin", 0, 1u << 24},          // kernel: pauses before a waiter halts (ke/wait.c)
    {"spin_reads", 1, 1024},        // kernel: plain reads between two pauses
    {"verifier", 0, 1},             // kernel: the lock-order verifier (checked build)
    {"inject", 0, 1},               // kernel: fault injection (checked build)
};

static const KT_OPTION *
KtFindOption(const char *Key)
{
    for (SIZE_T i = 0; i < sizeof(KtOptions) / sizeof(KtOptions[0]); i++)
    {
        if (strcmp(KtOptions[i].Key, Key) == 0)
        {
            return &KtOptions[i];
        }
    }
    return NULL;
}

/*
 * Parses Key= from CommandLine into *Number (Default when absent). Returns
 * FALSE, with a "# command line:" line saying why, when the value is empty,
 * malformed or outside the option's range.
 */
static BOOLEAN
KtParseOption(PCSTR CommandLine, const char *Key, ULONG64 Default, ULONG64 *Number)
{
    const KT_OPTION *Option = KtFindOption(Key);
    SIZE_T Length = 0;
    const char *Value = cmdline_get(CommandLine, Key, &Length);
    uint64_t Parsed;

    *Number = Default;
    if (Value == NULL)
    {
        return TRUE;
    }
    if (!parse_u64(Value, Length, &Parsed))
    {
        DbgPrint("# command line: %s=%.*s is not a number (decimal, or hex after 0x)\n", Key,
                 (int)Length, Value);
        return FALSE;
    }
    if (Option != NULL && (Parsed < Option->Minimum || Parsed > Option->Maximum))
    {
        DbgPrint("# command line: %s=%.*s is out of range (%llu to %llu)\n", Key, (int)Length,
                 Value, Option->Minimum, Option->Maximum);
        return FALSE;
    }
    *Number = Parsed;
    return TRUE;
}

/*
 * Checks tests=: comma-separated non-empty globs, each shorter than
 * KT_NAME_LENGTH. Returns FALSE, with a line saying why, otherwise.
 */
static BOOLEAN
KtCheckPatterns(const char *Patterns, SIZE_T PatternsLength)
{
    SIZE_T Start = 0;

    while (Start < PatternsLength)
    {
        SIZE_T End = Start;
        while (End < PatternsLength && Patterns[End] != ',')
        {
            End++;
        }
        if (End == Start || End - Start >= KT_NAME_LENGTH)
        {
            DbgPrint("# command line: tests=%.*s has %s pattern at offset %llu\n",
                     (int)PatternsLength, Patterns, End == Start ? "an empty" : "a too long",
                     (ULONG64)Start);
            return FALSE;
        }
        Start = End + 1;
        if (Start == PatternsLength && Patterns[End] == ',')
        {
            DbgPrint("# command line: tests=%.*s ends with a comma\n", (int)PatternsLength,
                     Patterns);
            return FALSE;
        }
    }
    return TRUE;
}

/* Checks every option of the table and tests=; FALSE if any is bad (each is named). */
BOOLEAN
KtCheckCommandLine(PCSTR CommandLine)
{
    BOOLEAN Good = TRUE;
    SIZE_T PatternsLength = 0;
    const char *Patterns = cmdline_get(CommandLine, "tests", &PatternsLength);
    ULONG64 Ignored;

    for (SIZE_T i = 0; i < sizeof(KtOptions) / sizeof(KtOptions[0]); i++)
    {
        Good &= KtParseOption(CommandLine, KtOptions[i].Key, 0, &Ignored);
    }
    if (Patterns != NULL)
    {
        Good &= KtCheckPatterns(Patterns, PatternsLength);
    }
    return Good;
}

/*
 * The value of Key= (checked against its range before the run started), or
 * Default when absent. A key outside the table that does not parse fails the
 * calling test.
 */
ULONG64
KtCommandLineValue(const char *Key, ULONG64 Default)
{
    ULONG64 Number;

    if (!KtParseOption(KiBootInfo.CommandLine, Key, Default, &Number))
    {
        __atomic_add_fetch(&KtState.Failures, 1, __ATOMIC_RELAXED);
    }
    return Number;
}

ULONG
KtExpectedProcessorCount(VOID)
{
    ULONG64 Count = KtCommandLineValue("smp", 0);

    if (Count == 0)
    {
        KT_SKIP("no smp=N on the kernel command line");
    }
    return (ULONG)Count;
}

/* ---------------------------------------------------------------- running */

VOID
KtReportWatchdog(VOID)
{
    const KTEST_CASE *Test = KtState.Current;

    if (Test != NULL)
    {
        DbgPrint("not ok %u %s:%s # watchdog\n", KtNumber, Test->Suite, Test->Name);
    }
    KtCounts[KtFailed]++;
    DbgPrint("%u passed, %u failed, %u skipped\n", KtCounts[KtPassed], KtCounts[KtFailed],
             KtCounts[KtSkipped]);
}

static ULONG64
KtSeedFor(const KTEST_CASE *Test, ULONG Repetition)
{
    ULONG64 Hash = 1469598103934665603ull; // FNV-1a over "Suite:Name"
    for (const char *p = Test->Suite; *p; p++)
    {
        Hash = (Hash ^ (UCHAR)*p) * 1099511628211ull;
    }
    Hash = (Hash ^ ':') * 1099511628211ull;
    for (const char *p = Test->Name; *p; p++)
    {
        Hash = (Hash ^ (UCHAR)*p) * 1099511628211ull;
    }
    return Hash ^ KtState.Seed ^ ((ULONG64)Repetition << 32);
}

/* Checks what every test must leave as it found it; repairs it so the next test runs. */
static VOID
KtCheckHygiene(const KTEST_CASE *Test, ULONG PoolTagsBefore)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    KIRQL Irql = KeGetCurrentIrql();
    ULONG PoolTagsAfter;

    if (Irql != PASSIVE_LEVEL)
    {
        KtLog("%s:%s returned at IRQL %u, not PASSIVE_LEVEL", Test->Suite, Test->Name, Irql);
        KtState.Failures++;
        HalSetCurrentIrql(PASSIVE_LEVEL);
    }
    if (!x86_interrupts_enabled())
    {
        KtLog("%s:%s returned with interrupts disabled", Test->Suite, Test->Name);
        KtState.Failures++;
        x86_sti();
    }
    if (Prcb->SpinLocksHeld != 0)
    {
        KtLog("%s:%s returned holding %u spin lock(s)", Test->Suite, Test->Name,
              Prcb->SpinLocksHeld);
        KtState.Failures++;
        Prcb->SpinLocksHeld = 0;
    }
    if (KtCatchers[Prcb->Number] != NULL)
    {
        KtLog("%s:%s left a KT_EXPECT_BUGCHECK armed", Test->Suite, Test->Name);
        KtState.Failures++;
        KtCatchers[Prcb->Number] = NULL;
    }

    PoolTagsAfter = ExpQueryPoolTags(KtPoolAfter, KT_MAX_TAGS);
    for (ULONG i = 0; i < PoolTagsAfter; i++)
    {
        LONG64 Before = 0;
        for (ULONG j = 0; j < PoolTagsBefore; j++)
        {
            if (KtPoolBefore[j].Tag == KtPoolAfter[i].Tag)
            {
                Before = KtPoolBefore[j].Allocations;
            }
        }
        if (KtPoolAfter[i].Allocations > Before)
        {
            ULONG Tag = KtPoolAfter[i].Tag;
            KtLog("%s:%s leaked %lld pool allocation(s) of tag '%c%c%c%c'", Test->Suite, Test->Name,
                  KtPoolAfter[i].Allocations - Before, (char)Tag, (char)(Tag >> 8),
                  (char)(Tag >> 16), (char)(Tag >> 24));
            KtState.Failures++;
        }
    }
}

static KT_RESULT
KtRunOne(const KTEST_CASE *Test, ULONG Number, ULONG Repetition)
{
    PKPRCB Prcb = KeGetCurrentPrcb();
    KT_JMP_BUF Abort;
    ULONG PoolTagsBefore;
    LARGE_INTEGER Frequency;
    ULONG64 Start, Elapsed;

    KtState.Failures = 0;
    KtState.Skipped = FALSE;
    KtState.SkipReason = NULL;
    prng_seed(&KtState.Random, KtSeedFor(Test, Repetition));
    if (KtState.Verbose)
    {
        DbgPrint("# running %s:%s\n", Test->Suite, Test->Name);
    }
    if ((Test->Flags & KTEST_SMP_ONLY) && KiActiveProcessorCount < 2)
    {
        DbgPrint("ok %u %s:%s # SKIP needs two or more processors\n", Number, Test->Suite,
                 Test->Name);
        return KtSkipped;
    }

    PoolTagsBefore = ExpQueryPoolTags(KtPoolBefore, KT_MAX_TAGS);
    Start = (ULONG64)KeQueryPerformanceCounter(&Frequency).QuadPart;
    KtState.Current = Test;
    KtWatchdogStart(Test);
    KtAbortJump[Prcb->Number] = &Abort;
    if (x86_setjmp(&Abort) == 0)
    {
        Test->Routine();
    }
    KtAbortJump[Prcb->Number] = NULL;
    KtWatchdogStop();
    KtCheckHygiene(Test, PoolTagsBefore);
    KtState.Current = NULL;

    /* A KTAP diagnostic the host's results (scripts/ktap-results.py) give each test. */
    Elapsed = (ULONG64)KeQueryPerformanceCounter(NULL).QuadPart - Start;
    DbgPrint("# duration_ms %llu\n", Elapsed * 1000 / (ULONG64)Frequency.QuadPart);

    if (KtState.Failures != 0)
    {
        DbgPrint("not ok %u %s:%s\n", Number, Test->Suite, Test->Name);
        return KtFailed;
    }
    if (KtState.Skipped)
    {
        DbgPrint("ok %u %s:%s # SKIP %s\n", Number, Test->Suite, Test->Name,
                 KtState.SkipReason ? KtState.SkipReason : "");
        return KtSkipped;
    }
    DbgPrint("ok %u %s:%s\n", Number, Test->Suite, Test->Name);
    return KtPassed;
}

static const KI_BUGCHECK_CATCHER KtBugCheckCatcher = {KtIsBugCheckArmed, KtCatchBugCheck};

/*
 * Runs the selected tests and ends the run: prints the summary line and leaves
 * QEMU with the pass or fail code. Called once on the boot processor at
 * PASSIVE_LEVEL with interrupts on.
 */
VOID
KtRunTestSuite(PCSTR CommandLine)
{
    SIZE_T PatternsLength = 0;
    const char *Patterns = cmdline_get(CommandLine, "tests", &PatternsLength);
    ULONG64 Repeat;
    ULONG64 Verbose;
    ULONG Total = 0;
    ULONG Selected = 0;

    DbgPrint("KTAP version 1\n");
    if (!KtCheckCommandLine(CommandLine))
    {
        DbgPrint("Bail out! bad value on the kernel command line (see the line above)\n");
        DbgPrint("0 passed, 1 failed, 0 skipped\n");
        HalExitEmulator(HAL_EXIT_FAILED);
    }
    KtParseOption(CommandLine, "repeat", 1, &Repeat);
    KtParseOption(CommandLine, "seed", 1, &KtState.Seed);
    KtParseOption(CommandLine, "verbose", 0, &Verbose);
    KtState.Verbose = (ULONG)Verbose;
    KiRegisterBugCheckCatcher(&KtBugCheckCatcher);
    if (Patterns == NULL)
    {
        PatternsLength = 0;
    }

    for (const KTEST_CASE *Test = __ktests_start; Test < __ktests_end; Test++)
    {
        if (Total == KT_MAX_TESTS)
        {
            DbgPrint("# more than %d tests; the rest are not run\n", KT_MAX_TESTS);
            break;
        }
        if (KtIsSelected(Test, Patterns, PatternsLength))
        {
            KtTests[Selected++] = Test;
        }
        Total++;
    }
    KtSortTests(Selected);

    DbgPrint("# Spindle test suite: %u of %u tests selected, seed %llu, repeat %llu, %u "
             "processor(s)\n",
             Selected, Total, KtState.Seed, Repeat, KiActiveProcessorCount);
    DbgPrint("1..%llu\n", (ULONG64)Selected * Repeat);

    for (ULONG i = 1; i < Selected; i++)
    {
        if (KtCompareNames(KtTests[i - 1], KtTests[i]) == 0)
        {
            DbgPrint("# duplicate test name %s:%s\n", KtTests[i]->Suite, KtTests[i]->Name);
            KtCounts[KtFailed]++;
        }
    }
    for (ULONG64 Repetition = 0; Repetition < Repeat; Repetition++)
    {
        for (ULONG i = 0; i < Selected; i++)
        {
            KtCounts[KtRunOne(KtTests[i], ++KtNumber, (ULONG)Repetition)]++;
        }
    }

    if (Selected == 0)
    {
        DbgPrint("# no test matches tests=%.*s\n", (int)PatternsLength, Patterns ? Patterns : "");
        KtCounts[KtFailed]++;
    }
    DbgPrint("%u passed, %u failed, %u skipped\n", KtCounts[KtPassed], KtCounts[KtFailed],
             KtCounts[KtSkipped]);
    HalExitEmulator(KtCounts[KtFailed] == 0 ? HAL_EXIT_PASSED : HAL_EXIT_FAILED);
}

KI_STARTUP_WORKLOAD("the Spindle test suite", KtRunTestSuite);
