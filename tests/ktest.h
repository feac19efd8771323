/* SPDX-License-Identifier: MIT */
/*
 * The test writer's API. A test file needs only <wdm.h> and <ktest.h>:
 *
 *     KTEST(KeSpinLock, acquire_raises_to_dispatch)
 *     {
 *         KIRQL Old;
 *         KSPIN_LOCK Lock;
 *         KeInitializeSpinLock(&Lock);
 *         KeAcquireSpinLock(&Lock, &Old);
 *         KT_EXPECT_EQ(KeGetCurrentIrql(), DISPATCH_LEVEL);
 *         KeReleaseSpinLock(&Lock, Old);
 *     }
 *
 * Values are compared and printed as 64-bit integers. EXPECT records a failure
 * and goes on; ASSERT and SKIP end the test (on another processor inside
 * KtRunOnProcessors they end that processor's routine).
 */
#pragma once

#include <wdm.h>

/* Descriptor flags. */
#define KTEST_SMP_ONLY 0x1 // needs two or more processors; skipped on -smp 1
#define KTEST_SLOW     0x2 // long-running; the watchdog budget is multiplied

typedef struct _KTEST_CASE
{
    const char *Suite;
    const char *Name;
    VOID (*Routine)(VOID);
    ULONG Flags;
    ULONG TimeoutMs; // watchdog budget; 0 = the harness default
} KTEST_CASE;

/* Callee-saved register context for the harness's non-local exits. */
typedef struct _KT_JMP_BUF
{
    ULONG64 Rbx, Rbp, R12, R13, R14, R15, Rsp, Rip;
} KT_JMP_BUF;

int x86_setjmp(KT_JMP_BUF *Buffer) __attribute__((returns_twice));
__attribute__((noreturn)) void x86_longjmp(KT_JMP_BUF *Buffer, int Value);

/* A bug check expected by KT_EXPECT_BUGCHECK; filled in when it is caught. */
typedef struct _KT_BUGCHECK_CATCH
{
    KT_JMP_BUF Jump;
    KIRQL Irql;           // IRQL at arming; restored when the bug check is caught
    BOOLEAN InterruptsOn; // RFLAGS.IF at arming; restored likewise
    ULONG Expected;       // the only code this catcher takes
    ULONG Nesting;        // interrupt nesting at arming
    ULONG Code;           // the bug check that was caught
    ULONG_PTR Parameter[4];
    struct _KT_BUGCHECK_CATCH *Previous;
} KT_BUGCHECK_CATCH;

/* ---- registration */

#define KTEST_EX(SuiteName, CaseName, CaseFlags, CaseTimeoutMs)                                    \
    static VOID KtTest_##SuiteName##_##CaseName(VOID);                                             \
    static const KTEST_CASE KtCase_##SuiteName##_##CaseName                                        \
        __attribute__((used, section(".ktests"), aligned(8))) = {                                  \
            #SuiteName, #CaseName, KtTest_##SuiteName##_##CaseName, (CaseFlags), (CaseTimeoutMs)}; \
    static VOID KtTest_##SuiteName##_##CaseName(VOID)

#define KTEST(SuiteName, CaseName) KTEST_EX(SuiteName, CaseName, 0, 0)

/* ---- reporting (implemented by tests/harness) */

VOID KtFail(const char *Expression, const char *File, int Line);
VOID KtFailCompare(const char *Left, const char *Op, const char *Right, LONG64 LeftValue,
                   LONG64 RightValue, const char *File, int Line);
__attribute__((noreturn)) VOID KtAbort(VOID);
__attribute__((noreturn)) VOID KtSkip(const char *Why);
VOID KtLog(const char *Format, ...) __attribute__((format(printf, 1, 2)));
ULONG64 KtRandom(VOID);

VOID KtArmBugCheck(KT_BUGCHECK_CATCH *Catch);
VOID KtDisarmBugCheck(KT_BUGCHECK_CATCH *Catch);
VOID KtCheckBugCheck(KT_BUGCHECK_CATCH *Catch, ULONG Expected, BOOLEAN Raised,
                     const char *Statement, const char *File, int Line);

/*
 * Runs Routine(Index, Context) on Count distinct processors at once (0 = all),
 * Index 0..Count-1, each starting at PASSIVE_LEVEL. Returns when every one has
 * returned; a processor that does not return is reported by the watchdog.
 */
typedef VOID KT_PROCESSOR_ROUTINE(ULONG Index, PVOID Context);
VOID KtRunOnProcessors(ULONG Count, KT_PROCESSOR_ROUTINE *Routine, PVOID Context);

/*
 * Calls Hook on every clock tick of every processor, at CLOCK_LEVEL with
 * interrupts off, until KtSetTickHook(NULL) or the end of the test (the
 * watchdog's tick calls it). Processor 0 and every processor running a
 * routine tick every 10 ms, an idle one once per idle period. For tests
 * whose processors all spin at raised IRQL and need a deadline noticed by
 * someone (the bench's stop flag).
 */
typedef VOID KT_TICK_HOOK(VOID);
VOID KtSetTickHook(KT_TICK_HOOK *Hook);

/* ---- helpers shared by the test files (tests/harness/helpers.c) */

/* Milliseconds on the performance counter. Any IRQL. */
ULONG64 KtNowMs(VOID);

/*
 * Bounded waits for another processor's store: poll until the condition holds
 * or TimeoutMs have passed on the performance counter (KT_WAIT_MS is the usual
 * bound). TRUE if it held; FALSE when the bound is spent, so a test fails
 * (KT_ASSERT(KtWaitForLong(...))) or takes its other path instead of hanging.
 * Any IRQL, interrupts on or off; each look is an acquire load.
 */
#define KT_WAIT_MS 10000
BOOLEAN KtWaitForLong(volatile LONG *Value, LONG Expected, ULONG TimeoutMs); // *Value == Expected
BOOLEAN KtWaitForLongAtLeast(volatile LONG *Value, LONG Minimum, ULONG TimeoutMs); // >= Minimum
BOOLEAN KtWaitForWord(volatile ULONG_PTR *Value, ULONG_PTR Expected, ULONG TimeoutMs);
BOOLEAN KtWaitForWordChange(volatile ULONG64 *Value, ULONG64 Old, ULONG TimeoutMs); // != Old

/*
 * The IRQL matrix of an acquire/release pair: KtRunIrqlMatrix raises to each
 * of PASSIVE, APC, DISPATCH and HIGH_LEVEL in turn (logging "Name at IRQL n")
 * and there calls CheckPair(Context, Entry, Held) when Entry is legal
 * (MinIrql..MaxIrql; Held is HeldIrql, or Entry for KT_IRQL_UNCHANGED). At an
 * illegal Entry the checked build calls CheckMisuse(Context, Entry, Code)
 * with LowCode below MinIrql or HighCode above MaxIrql; the free build checks
 * a plain pair, held at Entry below MinIrql and at FreeHighHeld above. Each
 * check returns at the IRQL it was called at. PASSIVE_LEVEL caller.
 */
#define KT_IRQL_UNCHANGED 0xff
typedef struct _KT_IRQL_MATRIX
{
    const char *Name;
    KIRQL MinIrql;
    KIRQL MaxIrql;
    KIRQL HeldIrql;
    ULONG LowCode;
    ULONG HighCode;
    KIRQL FreeHighHeld;
} KT_IRQL_MATRIX;
typedef VOID KT_IRQL_PAIR_CHECK(const void *Context, KIRQL Entry, KIRQL Held);
typedef VOID KT_IRQL_MISUSE_CHECK(const void *Context, KIRQL Entry, ULONG Code);
VOID KtRunIrqlMatrix(const KT_IRQL_MATRIX *Matrix, KT_IRQL_PAIR_CHECK *CheckPair,
                     KT_IRQL_MISUSE_CHECK *CheckMisuse, const void *Context);

/* ---- expectations */

#define KT_EXPECT(Cond)                                                                            \
    do                                                                                             \
    {                                                                                              \
        if (!(Cond))                                                                               \
        {                                                                                          \
            KtFail(#Cond, __FILE__, __LINE__);                                                     \
        }                                                                                          \
    } while (0)

#define KT_COMPARE_(A, Op, B, OnFail)                                                              \
    do                                                                                             \
    {                                                                                              \
        LONG64 KtLeft_ = (LONG64)(A);                                                              \
        LONG64 KtRight_ = (LONG64)(B);                                                             \
        if (!(KtLeft_ Op KtRight_))                                                                \
        {                                                                                          \
            KtFailCompare(#A, #Op, #B, KtLeft_, KtRight_, __FILE__, __LINE__);                     \
            OnFail;                                                                                \
        }                                                                                          \
    } while (0)

#define KT_EXPECT_EQ(A, B) KT_COMPARE_(A, ==, B, (void)0)
#define KT_EXPECT_NE(A, B) KT_COMPARE_(A, !=, B, (void)0)
#define KT_EXPECT_LT(A, B) KT_COMPARE_(A, <, B, (void)0)
#define KT_EXPECT_LE(A, B) KT_COMPARE_(A, <=, B, (void)0)
#define KT_EXPECT_GT(A, B) KT_COMPARE_(A, >, B, (void)0)
#define KT_EXPECT_GE(A, B) KT_COMPARE_(A, >=, B, (void)0)

#define KT_ASSERT(Cond)                                                                            \
    do                                                                                             \
    {                                                                                              \
        if (!(Cond))                                                                               \
        {                                                                                          \
            KtFail(#Cond, __FILE__, __LINE__);                                                     \
            KtAbort();                                                                             \
        }                                                                                          \
    } while (0)

#define KT_ASSERT_EQ(A, B) KT_COMPARE_(A, ==, B, KtAbort())
#define KT_ASSERT_NE(A, B) KT_COMPARE_(A, !=, B, KtAbort())

#define KT_SKIP(Why) KtSkip(Why)

/*
 * Runs Statement and expects it to raise bug check Code on this processor. The
 * harness catches it, restores the IRQL and interrupt flag that held here and
 * continues after the macro. Any other bug check still stops the system.
 */
#define KT_EXPECT_BUGCHECK(Code, Statement)                                                        \
    do                                                                                             \
    {                                                                                              \
        ULONG_PTR KtIgnored_[4] __attribute__((unused));                                           \
        KT_EXPECT_BUGCHECK_PARAMS(Code, KtIgnored_, Statement);                                    \
    } while (0)

/*
 * KT_EXPECT_BUGCHECK that also copies the caught bug check's four parameters
 * into Params (ULONG_PTR[4]); all zero when none was caught.
 */
#define KT_EXPECT_BUGCHECK_PARAMS(Code, Params, Statement)                                         \
    do                                                                                             \
    {                                                                                              \
        KT_BUGCHECK_CATCH KtCatch_;                                                                \
        KtCatch_.Expected = (Code);                                                                \
        for (int KtI_ = 0; KtI_ < 4; KtI_++)                                                       \
        {                                                                                          \
            KtCatch_.Parameter[KtI_] = 0;                                                          \
        }                                                                                          \
        KtArmBugCheck(&KtCatch_);                                                                  \
        if (x86_setjmp(&KtCatch_.Jump) == 0)                                                       \
        {                                                                                          \
            Statement;                                                                             \
            KtDisarmBugCheck(&KtCatch_);                                                           \
            KtCheckBugCheck(&KtCatch_, (Code), FALSE, #Statement, __FILE__, __LINE__);             \
        }                                                                                          \
        else                                                                                       \
        {                                                                                          \
            KtCheckBugCheck(&KtCatch_, (Code), TRUE, #Statement, __FILE__, __LINE__);              \
        }                                                                                          \
        for (int KtI_ = 0; KtI_ < 4; KtI_++)                                                       \
        {                                                                                          \
            (Params)[KtI_] = KtCatch_.Parameter[KtI_];                                             \
        }                                                                                          \
    } while (0)
