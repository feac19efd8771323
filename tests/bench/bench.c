/* SPDX-License-Identifier: MIT */
/*
 * Bench: the common part of `make bench` (DESIGN.md §7) and the boot-time row.
 *
 * Every figure is one serial line in the format of the Linux peer module
 * `lockbench`, so the peer kit's report.awk tabulates Spindle and Linux side
 * by side (key=value pairs; fractions are x100 fixed point with two decimals):
 *
 *   lockbench: name=info cpus_online=8 ... tsc_khz=... lock_impl=nt_spinlock ...
 *   lockbench: name=<row> mode=uncontended cpus=1 cpu=0 iters=.. reps=..
 *              cycles_per_op=<median> min_cycles_per_op=.. max_cycles_per_op=.. ns_per_op=..
 *   lockbench: name=<lock> mode=contended cpus=<N> dur_ms=.. elapsed_ms=.. total=..
 *              ops_per_s=.. cycles_per_op=.. min=.. max=.. counter=.. mutex_ok=0|1
 *              cs_work=.. ncs_work=.. windows=..
 *   lockbench: name=done
 *
 * (each one line). Spindle-only detail goes in `# bench ...` lines: the
 * configuration, every contended window, the boot time. Uncontended rows are
 * in uncontended.c, contended rows in contended.c. Speed never fails a test:
 * the tests check only that each primitive did its work (counts add up,
 * mutual exclusion held).
 */
#include "tests/bench/bench.h"

#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define BENCH_DEFAULT_MS      200
#define BENCH_MIN_MS          10
#define BENCH_MAX_MS          5000
#define BENCH_DEFAULT_WINDOWS 3
#define BENCH_DEFAULT_REPS    15
#define BENCH_MAX_WORK        1000000

BENCH_CONFIG BenchConfig;

static ULONG64
BenchClamp(ULONG64 Value, ULONG64 Low, ULONG64 High)
{
    return Value < Low ? Low : Value > High ? High : Value;
}

VOID
BenchEnter(VOID)
{
    LARGE_INTEGER Frequency;
    uint32_t Regs[4];

    if (KtCommandLineValue("bench", 0) != 1)
    {
        KT_SKIP("benchmarks run with make bench");
    }
    BenchConfig.WindowMs =
        BenchClamp(KtCommandLineValue("bench_ms", BENCH_DEFAULT_MS), BENCH_MIN_MS, BENCH_MAX_MS);
    /* At least 3 windows and 5 batches: a median needs them. */
    BenchConfig.Windows = (ULONG)BenchClamp(
        KtCommandLineValue("bench_windows", BENCH_DEFAULT_WINDOWS), 3, BENCH_MAX_WINDOWS);
    BenchConfig.Reps =
        (ULONG)BenchClamp(KtCommandLineValue("bench_reps", BENCH_DEFAULT_REPS), 5, BENCH_MAX_REPS);
    BenchConfig.CsWork = (ULONG)BenchClamp(KtCommandLineValue("bench_cs", 0), 0, BENCH_MAX_WORK);
    BenchConfig.NcsWork = (ULONG)BenchClamp(KtCommandLineValue("bench_ncs", 0), 0, BENCH_MAX_WORK);
    KeQueryPerformanceCounter(&Frequency);
    BenchConfig.Frequency = (ULONG64)Frequency.QuadPart;
    BenchConfig.KHz = BenchConfig.Frequency / 1000;
    x86_cpuid(0x80000000, 0, Regs);
    BenchConfig.HaveRdtscp = FALSE;
    if (Regs[0] >= 0x80000001)
    {
        x86_cpuid(0x80000001, 0, Regs);
        BenchConfig.HaveRdtscp = (Regs[3] & (1u << 27)) != 0;
    }
    BenchConfig.Processors =
        (ULONG)BenchClamp(KeQueryActiveProcessorCount(NULL), 1, BENCH_MAX_CPUS);
}

ULONG64
BenchTscBegin(VOID)
{
    return x86_rdtsc_begin();
}

ULONG64
BenchTscEnd(VOID)
{
    return BenchConfig.HaveRdtscp ? x86_rdtscp_end() : x86_rdtsc_begin();
}

const char *
BenchFixed(char *Buffer, size_t Size, ULONG64 Hundredths)
{
    snprintf(Buffer, Size, "%llu.%02llu", Hundredths / 100, Hundredths % 100);
    return Buffer;
}

VOID
BenchSortU64(ULONG64 *Values, ULONG Count)
{
    for (ULONG I = 1; I < Count; I++)
    {
        ULONG64 Value = Values[I];
        ULONG J = I;

        for (; J > 0 && Values[J - 1] > Value; J--)
        {
            Values[J] = Values[J - 1];
        }
        Values[J] = Value;
    }
}

const char *
BenchTag(VOID)
{
    static char Tag[32];

    snprintf(Tag, sizeof(Tag), "spindle-smp%u", KeQueryActiveProcessorCount(NULL));
    return Tag;
}

/* The processor's brand string with spaces and '=' replaced, as the module prints it. */
static VOID
BenchCpuModel(char *Model, size_t Size)
{
    uint32_t Regs[4];
    char Brand[49];

    x86_cpuid(0x80000000, 0, Regs);
    if (Regs[0] < 0x80000004 || Size == 0)
    {
        snprintf(Model, Size, "unknown");
        return;
    }
    for (uint32_t Leaf = 0; Leaf < 3; Leaf++)
    {
        x86_cpuid(0x80000002 + Leaf, 0, Regs);
        memcpy(&Brand[Leaf * 16], Regs, 16);
    }
    Brand[48] = '\0';
    size_t Out = 0;
    for (size_t In = 0; Brand[In] != '\0' && Out + 1 < Size; In++)
    {
        if (Out == 0 && Brand[In] == ' ')
        {
            continue;
        }
        Model[Out++] = (Brand[In] == ' ' || Brand[In] == '=') ? '_' : Brand[In];
    }
    Model[Out] = '\0';
}

/*
 * The configuration lines; boot.c's test is the first of the suite (tests run
 * sorted by name), so they open the run.
 */
static VOID
BenchPrintInfo(VOID)
{
    uint32_t Regs[4];
    char Model[64];

    x86_cpuid(1, 0, Regs);
    BenchCpuModel(Model, sizeof(Model));
    KtLog("bench config build=%s cpus=%u window_ms=%llu windows=%u reps=%u cs_work=%u ncs_work=%u "
          "tsc_hz=%llu rdtscp=%u",
          DBG ? "checked" : "free", BenchConfig.Processors, BenchConfig.WindowMs,
          BenchConfig.Windows, BenchConfig.Reps, BenchConfig.CsWork, BenchConfig.NcsWork,
          BenchConfig.Frequency, BenchConfig.HaveRdtscp);
    DbgPrint("lockbench: name=info cpus_online=%u cpus_possible=%u tsc_khz=%llu rdtscp=%u "
             "hypervisor=%u kvm=0 kvm_pv_unhalt=0 kvm_hint_realtime=0 lock_impl=nt_spinlock "
             "lock_impl_src=spindle model=%s family=%u model_nr=%u stepping=%u kernel=spindle "
             "tag=%s\n",
             KeQueryActiveProcessorCount(NULL), KeQueryActiveProcessorCount(NULL), BenchConfig.KHz,
             BenchConfig.HaveRdtscp, (Regs[2] >> 31) & 1, Model, (Regs[0] >> 8) & 0xf,
             (Regs[0] >> 4) & 0xf, Regs[0] & 0xf, BenchTag());
}

/*
 * Boot: the TSC when the kernel was entered (the firmware's and the loader's
 * time since reset, as QEMU starts the TSC at 0) and the time from there until
 * every processor was online. The kernel records both (kernel/init.c).
 */
KTEST(Bench, boot)
{
    char Text[2][32];

    BenchEnter();
    BenchPrintInfo();
    KT_ASSERT(KiProcessorsOnlineTsc > KiStartupTsc);
    KtLog("bench boot cpus=%u entry_tsc=%llu online_tsc=%llu entry_ms=%s entry_to_online_ms=%s",
          KeQueryActiveProcessorCount(NULL), KiStartupTsc, KiProcessorsOnlineTsc,
          BenchFixed(Text[0], sizeof(Text[0]), KiStartupTsc * 100 / BenchConfig.KHz),
          BenchFixed(Text[1], sizeof(Text[1]),
                     (KiProcessorsOnlineTsc - KiStartupTsc) * 100 / BenchConfig.KHz));
}
