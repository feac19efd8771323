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
#define BENCH_DEFAULT_WINDOWS 5
#define BENCH_DEFAULT_REPS    15
#define BENCH_MAX_WORK        1000000

BENCH_CONFIG BenchConfig;

static ULONG64 BenchMeasureTsc(ULONG64 KernelRate);

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
    BenchConfig.KernelFrequency = (ULONG64)Frequency.QuadPart;
    if (BenchConfig.Frequency == 0)
    {
        BenchConfig.Frequency = BenchMeasureTsc(BenchConfig.KernelFrequency);
    }
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

/*
 * The TSC rate, measured by the bench itself over long PIT windows. The
 * kernel's own calibration (10 ms windows, end detected by polling the PIT's
 * output) runs 20 % high when the host is loaded; every rate the bench prints
 * (acquisitions per second, the window length) would inherit that. Here each
 * sample reads the PIT's count between two TSC reads and keeps only tight
 * pairs, so a delayed port access cannot bias it: the rate is the TSC cycles
 * between the midpoints of the tightest sample at the start and at the end of
 * a ~50 ms countdown of channel 2, divided by the PIT counts between them.
 */
#define BENCH_PIT_HZ       1193182
#define BENCH_PIT_COMMAND  0x43
#define BENCH_PIT_CHANNEL2 0x42
#define BENCH_PORTB        0x61
#define BENCH_PORTB_GATE2  0x01
#define BENCH_PORTB_SPKR   0x02
#define BENCH_PIT_START    0xF000 // counts of one window (51.5 ms)
#define BENCH_PIT_STOP     0x1000 // stop sampling below this count (before the wrap)
#define BENCH_PIT_SAMPLES  64     // samples searched for the tightest at each end
#define BENCH_PIT_RUNS     3

typedef struct _BENCH_PIT_SAMPLE
{
    ULONG64 Tsc;   // midpoint of the two TSC reads
    ULONG64 Width; // TSC cycles between them
    ULONG Count;
} BENCH_PIT_SAMPLE;

static VOID
BenchPitSample(BENCH_PIT_SAMPLE *Sample)
{
    ULONG64 Before = x86_rdtsc_begin(), After;
    UCHAR Low, High;

    x86_outb(BENCH_PIT_COMMAND, 0x80); // latch channel 2's count
    Low = x86_inb(BENCH_PIT_CHANNEL2);
    High = x86_inb(BENCH_PIT_CHANNEL2);
    After = x86_rdtsc_begin();
    Sample->Tsc = Before + (After - Before) / 2;
    Sample->Width = After - Before;
    Sample->Count = (ULONG)Low | ((ULONG)High << 8);
}

/* One window; returns the TSC rate in Hz, or 0 when the samples make no sense. */
static ULONG64
BenchMeasureTscOnce(VOID)
{
    BENCH_PIT_SAMPLE First = {0, ~0ull, 0}, Last = {0, ~0ull, 0}, Sample;
    BENCH_PIT_SAMPLE Recent[BENCH_PIT_SAMPLES];
    ULONG Taken = 0, Previous = BENCH_PIT_START + 1;
    UCHAR PortB = x86_inb(BENCH_PORTB);

    x86_outb(BENCH_PORTB, (UCHAR)((PortB & ~BENCH_PORTB_SPKR) & ~BENCH_PORTB_GATE2));
    x86_outb(BENCH_PIT_COMMAND, 0xB0); // channel 2, low then high byte, mode 0, binary
    x86_outb(BENCH_PIT_CHANNEL2, BENCH_PIT_START & 0xff);
    x86_outb(BENCH_PIT_CHANNEL2, BENCH_PIT_START >> 8);
    x86_outb(BENCH_PORTB, (UCHAR)((PortB & ~BENCH_PORTB_SPKR) | BENCH_PORTB_GATE2)); // go
    for (;;)
    {
        BenchPitSample(&Sample);
        if (Sample.Count > Previous || Sample.Count < BENCH_PIT_STOP)
        {
            break; // wrapped (the host held us past the end) or near the end
        }
        Previous = Sample.Count;
        if (Taken < BENCH_PIT_SAMPLES && Sample.Width < First.Width)
        {
            First = Sample;
        }
        Recent[Taken++ % BENCH_PIT_SAMPLES] = Sample;
    }
    x86_outb(BENCH_PORTB, PortB);
    if (Taken < 2 * BENCH_PIT_SAMPLES)
    {
        return 0;
    }
    for (ULONG I = 0; I < BENCH_PIT_SAMPLES; I++)
    {
        if (Recent[I].Width < Last.Width)
        {
            Last = Recent[I];
        }
    }
    if (Last.Tsc <= First.Tsc || First.Count <= Last.Count)
    {
        return 0;
    }
    return (Last.Tsc - First.Tsc) * BENCH_PIT_HZ / (First.Count - Last.Count);
}

/* The median of BENCH_PIT_RUNS windows; the kernel's rate when they all fail. */
static ULONG64
BenchMeasureTsc(ULONG64 KernelRate)
{
    ULONG64 Rates[BENCH_PIT_RUNS];
    ULONG Good = 0;

    for (ULONG Run = 0; Run < BENCH_PIT_RUNS; Run++)
    {
        ULONG64 Rate = BenchMeasureTscOnce();

        if (Rate > 100000000ull && Rate < 20000000000ull) // 0.1 to 20 GHz
        {
            Rates[Good++] = Rate;
        }
    }
    if (Good == 0)
    {
        return KernelRate;
    }
    BenchSortU64(Rates, Good);
    return Rates[Good / 2];
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
          "tsc_hz=%llu tsc_hz_kernel=%llu rdtscp=%u",
          DBG ? "checked" : "free", BenchConfig.Processors, BenchConfig.WindowMs,
          BenchConfig.Windows, BenchConfig.Reps, BenchConfig.CsWork, BenchConfig.NcsWork,
          BenchConfig.Frequency, BenchConfig.KernelFrequency, BenchConfig.HaveRdtscp);
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
