/* SPDX-License-Identifier: MIT */
/*
 * ACPI (hal/acpi.c): the MADT QEMU generates lists exactly the -smp
 * processors, its local APIC address and its I/O APIC; checksums are
 * verified, and the MADT parser rejects corrupt or malformed tables with a
 * reason instead of reading past them. The values asserted for the I/O APIC
 * and the ISA overrides are the ones QEMU's q35 and pc machines build.
 */
#include <ktest.h>
#include <wdm.h>

#include "arch/x86_64/x86.h"
#include "hal/hal.h"
#include "hal/halp.h" // white-box: the MADT parser
#include "kernel/ke/ke.h"
#include "lib/lib.h"
#include "tests/harness/harness.h"

#define KT_ACPI_TAG 'ipcA'

/* ---- a synthetic MADT, built byte by byte (ACPI 6.5 §5.2.12) */

#define KT_MADT_HEADER_LENGTH 44

typedef struct _KT_MADT
{
    UCHAR Bytes[512];
    ULONG Length;
} KT_MADT;

static VOID
KtPut32(UCHAR *At, ULONG Value)
{
    memcpy(At, &Value, sizeof(Value));
}

static VOID
KtMadtBegin(KT_MADT *Madt, ULONG LocalApicAddress)
{
    memset(Madt, 0, sizeof(*Madt));
    memcpy(Madt->Bytes, "APIC", 4);
    Madt->Bytes[8] = 5;                    // revision
    memcpy(Madt->Bytes + 10, "SPNDLE", 6); // OEM ID
    KtPut32(Madt->Bytes + 36, LocalApicAddress);
    KtPut32(Madt->Bytes + 40, 1); // PCAT_COMPAT
    Madt->Length = KT_MADT_HEADER_LENGTH;
}

static VOID
KtMadtAdd(KT_MADT *Madt, const UCHAR *Entry, ULONG Length)
{
    memcpy(Madt->Bytes + Madt->Length, Entry, Length);
    Madt->Length += Length;
}

/* Stores the length and makes the checksum right. */
static VOID
KtMadtFinish(KT_MADT *Madt)
{
    UCHAR Sum = 0;

    KtPut32(Madt->Bytes + 4, Madt->Length);
    Madt->Bytes[9] = 0;
    for (ULONG i = 0; i < Madt->Length; i++)
    {
        Sum = (UCHAR)(Sum + Madt->Bytes[i]);
    }
    Madt->Bytes[9] = (UCHAR)(0x100 - Sum);
}

/* Entries, little-endian, as firmware lays them out. */
static const UCHAR KtLocalApic0Enabled[8] = {0, 8, 0, 0, 1, 0, 0, 0};       // UID 0, APIC 0
static const UCHAR KtLocalApic1Disabled[8] = {0, 8, 1, 1, 0, 0, 0, 0};      // APIC 1, absent
static const UCHAR KtLocalApic2OnlineCapable[8] = {0, 8, 2, 2, 2, 0, 0, 0}; // APIC 2, hot-add
static const UCHAR KtX2Apic300Enabled[16] = {9, 16, 0, 0, 0x2c, 1, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0};
static const UCHAR KtX2Apic0Enabled[16] = {9, 16, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0};
static const UCHAR KtIoApic5[12] = {1, 12, 5, 0, 0x00, 0x10, 0xc0, 0xfe, 24, 0, 0, 0};
static const UCHAR KtOverrideIrq0[10] = {2, 10, 0, 0, 2, 0, 0, 0, 0, 0};    // ISA 0 -> GSI 2
static const UCHAR KtOverrideIrq9[10] = {2, 10, 0, 9, 9, 0, 0, 0, 0x0d, 0}; // level, high
static const UCHAR KtLocalApicOverride[12] = {5, 12, 0, 0, 0, 0, 0xe0, 0xfe, 1, 0, 0, 0};
static const UCHAR KtUnknownType[4] = {0x7f, 4, 0xaa, 0xbb}; // skipped

/* ---- the firmware's tables */

KTEST(HalAcpi, madt_processor_count_matches_smp)
{
    KT_EXPECT_EQ(HalQueryProcessorCount(), KtExpectedProcessorCount());
}

KTEST(HalAcpi, madt_lists_each_processor_once_with_the_boot_processor)
{
    ULONG Count = HalQueryProcessorCount();
    ULONG BootApicId = KiGetPrcb(0)->ApicId;
    ULONG BootSeen = 0;

    KT_ASSERT(Count >= 1);
    for (ULONG i = 0; i < Count; i++)
    {
        ULONG ApicId = HalQueryProcessorApicId(i);
        BootSeen += ApicId == BootApicId;
        for (ULONG j = 0; j < i; j++)
        {
            KT_EXPECT_NE(HalQueryProcessorApicId(j), ApicId);
        }
    }
    KT_EXPECT_EQ(BootSeen, 1);
    KT_EXPECT_EQ(HalQueryProcessorApicId(Count), ~0u);
}

KTEST(HalAcpi, local_apic_address_matches_the_msr)
{
    ULONG64 Msr = x86_rdmsr(X86_MSR_APIC_BASE) & 0xfffff000ull;

    KT_EXPECT_EQ(HalQueryLocalApicAddress(), Msr);
    KT_EXPECT_EQ(HalQueryLocalApicAddress(), 0xfee00000ull); // the architectural default
}

KTEST(HalAcpi, io_apic_recorded)
{
    HAL_IO_APIC IoApic;
    ULONG Count = HalQueryIoApicCount();

    KT_ASSERT_EQ(Count, 1); // QEMU builds one I/O APIC
    KT_ASSERT(HalQueryIoApic(0, &IoApic));
    KT_EXPECT_EQ(IoApic.Address, 0xfec00000u);
    KT_EXPECT_EQ(IoApic.GsiBase, 0);
    KT_EXPECT(!HalQueryIoApic(Count, &IoApic));
}

KTEST(HalAcpi, isa_interrupt_overrides_recorded)
{
    USHORT Flags = 0xffff;

    /* QEMU wires the PIT's IRQ 0 to GSI 2 (bus-default polarity and trigger). */
    KT_EXPECT_EQ(HalQueryIsaInterruptGsi(0, &Flags), 2);
    KT_EXPECT_EQ(Flags, 0);
    /* IRQ 1 (keyboard) has no override: identity, bus defaults. */
    Flags = 0xffff;
    KT_EXPECT_EQ(HalQueryIsaInterruptGsi(1, &Flags), 1);
    KT_EXPECT_EQ(Flags, 0);
    KT_EXPECT_EQ(HalQueryIsaInterruptGsi(1, NULL), 1);
}

KTEST(HalAcpi, rsdp_checksum_rejects_a_corrupted_copy)
{
    UCHAR Copy[sizeof(KiBootInfo.Rsdp)];
    ULONG Length = 20; // ACPI 1.0 part

    if (KiBootInfo.RsdpPhysical == 0)
    {
        KT_SKIP("the loader gave no RSDP");
    }
    memcpy(Copy, KiBootInfo.Rsdp, sizeof(Copy));
    KT_EXPECT_EQ(memcmp(Copy, "RSD PTR ", 8), 0);
    KT_EXPECT(HalpAcpiChecksumOk(Copy, Length));
    if (Copy[15] >= 2)
    {
        KT_EXPECT(HalpAcpiChecksumOk(Copy, sizeof(Copy))); // the 2.0 extended checksum
    }
    Copy[16] ^= 0x01; // a bit of the RSDT address
    KT_EXPECT(!HalpAcpiChecksumOk(Copy, Length));
}

KTEST(HalAcpi, madt_checksum_rejects_a_corrupted_copy)
{
    const UCHAR *Madt = (const UCHAR *)HalQueryAcpiTable("APIC");
    HAL_MADT_INFO *Info;
    UCHAR *Copy;
    ULONG Length;
    PCSTR Problem = NULL;

    KT_ASSERT(Madt != NULL);
    memcpy(&Length, Madt + 4, sizeof(Length));
    KT_ASSERT(Length >= KT_MADT_HEADER_LENGTH);
    Copy = ExAllocatePoolWithTag(NonPagedPool, Length, KT_ACPI_TAG);
    Info = ExAllocatePoolWithTag(NonPagedPool, sizeof(*Info), KT_ACPI_TAG);
    KT_ASSERT(Copy != NULL && Info != NULL);
    memcpy(Copy, Madt, Length);

    KT_EXPECT(HalpAcpiChecksumOk(Copy, Length));
    KT_EXPECT(HalpAcpiParseMadt(Copy, Length, Info, &Problem));
    KT_EXPECT_EQ(Info->ProcessorCount, HalQueryProcessorCount());

    Copy[KT_MADT_HEADER_LENGTH + 3] ^= 0x40; // first entry's third byte (an APIC ID or similar)
    KT_EXPECT(!HalpAcpiChecksumOk(Copy, Length));
    KT_EXPECT(!HalpAcpiParseMadt(Copy, Length, Info, &Problem));
    KT_EXPECT(Problem != NULL && strcmp(Problem, "checksum mismatch") == 0);

    ExFreePoolWithTag(Info, KT_ACPI_TAG);
    ExFreePoolWithTag(Copy, KT_ACPI_TAG);
}

/* ---- the parser on synthetic tables */

static HAL_MADT_INFO KtInfo;

KTEST(HalAcpi, parser_reads_every_entry_type)
{
    KT_MADT Madt;
    PCSTR Problem = NULL;

    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic0Enabled, sizeof(KtLocalApic0Enabled));
    KtMadtAdd(&Madt, KtLocalApic1Disabled, sizeof(KtLocalApic1Disabled));
    KtMadtAdd(&Madt, KtLocalApic2OnlineCapable, sizeof(KtLocalApic2OnlineCapable));
    KtMadtAdd(&Madt, KtUnknownType, sizeof(KtUnknownType));
    KtMadtAdd(&Madt, KtX2Apic300Enabled, sizeof(KtX2Apic300Enabled));
    KtMadtAdd(&Madt, KtX2Apic0Enabled, sizeof(KtX2Apic0Enabled)); // APIC 0 again
    KtMadtAdd(&Madt, KtIoApic5, sizeof(KtIoApic5));
    KtMadtAdd(&Madt, KtOverrideIrq0, sizeof(KtOverrideIrq0));
    KtMadtAdd(&Madt, KtOverrideIrq9, sizeof(KtOverrideIrq9));
    KtMadtAdd(&Madt, KtLocalApicOverride, sizeof(KtLocalApicOverride));
    KtMadtFinish(&Madt);

    KT_ASSERT(HalpAcpiParseMadt(Madt.Bytes, Madt.Length, &KtInfo, &Problem));
    KT_EXPECT_EQ(KtInfo.ProcessorCount, 2);
    KT_EXPECT_EQ(KtInfo.ApicIds[0], 0);
    KT_EXPECT_EQ(KtInfo.ApicIds[1], 300);
    KT_EXPECT_EQ(KtInfo.ProcessorsDisabled, 2);
    KT_EXPECT_EQ(KtInfo.ProcessorsDropped, 0);
    KT_EXPECT_EQ(KtInfo.LocalApicAddress, 0x1fee00000ull); // the 64-bit override wins
    KT_EXPECT_EQ(KtInfo.IoApicCount, 1);
    KT_EXPECT_EQ(KtInfo.IoApics[0].Id, 5);
    KT_EXPECT_EQ(KtInfo.IoApics[0].Address, 0xfec01000u);
    KT_EXPECT_EQ(KtInfo.IoApics[0].GsiBase, 24);
    KT_EXPECT_EQ(KtInfo.OverrideCount, 2);
    KT_EXPECT_EQ(KtInfo.Overrides[0].Bus, 0);
    KT_EXPECT_EQ(KtInfo.Overrides[0].SourceIrq, 0);
    KT_EXPECT_EQ(KtInfo.Overrides[0].Gsi, 2);
    KT_EXPECT_EQ(KtInfo.Overrides[0].Flags, 0);
    KT_EXPECT_EQ(KtInfo.Overrides[1].SourceIrq, 9);
    KT_EXPECT_EQ(KtInfo.Overrides[1].Gsi, 9);
    KT_EXPECT_EQ(KtInfo.Overrides[1].Flags, 0x0d);
}

/* Parses Madt, expecting rejection with Expected as the reason. */
static VOID
KtExpectRejected(const KT_MADT *Madt, ULONG Readable, PCSTR Expected)
{
    PCSTR Problem = NULL;

    KT_EXPECT(!HalpAcpiParseMadt(Madt->Bytes, Readable, &KtInfo, &Problem));
    KT_EXPECT(Problem != NULL);
    if (Problem != NULL && strcmp(Problem, Expected) != 0)
    {
        KtLog("rejected for \"%s\", expected \"%s\"", Problem, Expected);
        KT_EXPECT(strcmp(Problem, Expected) == 0);
    }
}

KTEST(HalAcpi, parser_rejects_malformed_tables)
{
    static const UCHAR ZeroLength[8] = {0, 0, 0, 0, 1, 0, 0, 0};
    static const UCHAR ShortLocalApic[6] = {0, 6, 0, 0, 1, 0};
    static const UCHAR Overrun[8] = {1, 40, 0, 0, 0, 0, 0, 0}; // claims 40 bytes, table ends
    KT_MADT Madt;

    /* A zero entry length would loop forever. */
    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic0Enabled, sizeof(KtLocalApic0Enabled));
    KtMadtAdd(&Madt, ZeroLength, sizeof(ZeroLength));
    KtMadtFinish(&Madt);
    KtExpectRejected(&Madt, Madt.Length, "entry malformed (length)");

    /* An entry that runs past the end of the table. */
    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic0Enabled, sizeof(KtLocalApic0Enabled));
    KtMadtAdd(&Madt, Overrun, sizeof(Overrun));
    KtMadtFinish(&Madt);
    KtExpectRejected(&Madt, Madt.Length, "entry malformed (length)");

    /* An entry too short for its type. */
    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, ShortLocalApic, sizeof(ShortLocalApic));
    KtMadtFinish(&Madt);
    KtExpectRejected(&Madt, Madt.Length, "entry malformed (too short for its type)");

    /* A Length field beyond what may be read. */
    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic0Enabled, sizeof(KtLocalApic0Enabled));
    KtMadtFinish(&Madt);
    KtExpectRejected(&Madt, Madt.Length - 1, "length out of range");
    KtExpectRejected(&Madt, KT_MADT_HEADER_LENGTH - 1, "too short");

    /* Wrong signature (checksum made right again). */
    Madt.Bytes[0] = 'X';
    KtMadtFinish(&Madt);
    KtExpectRejected(&Madt, Madt.Length, "signature mismatch");

    /* No enabled processor. */
    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic1Disabled, sizeof(KtLocalApic1Disabled));
    KtMadtAdd(&Madt, KtIoApic5, sizeof(KtIoApic5));
    KtMadtFinish(&Madt);
    KtExpectRejected(&Madt, Madt.Length, "lists no enabled processor");

    /* The well-formed table passes, and fails once one byte changes. */
    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic0Enabled, sizeof(KtLocalApic0Enabled));
    KtMadtFinish(&Madt);
    {
        PCSTR Problem = NULL;
        KT_EXPECT(HalpAcpiParseMadt(Madt.Bytes, Madt.Length, &KtInfo, &Problem));
    }
    Madt.Bytes[KT_MADT_HEADER_LENGTH + 3] = 7; // APIC ID 0 -> 7 without fixing the checksum
    KtExpectRejected(&Madt, Madt.Length, "checksum mismatch");
}

KTEST(HalAcpi, checksum_helper)
{
    UCHAR Bytes[4] = {0x10, 0x20, 0x30, 0xa0}; // sums to 0x100

    KT_EXPECT(HalpAcpiChecksumOk(Bytes, sizeof(Bytes)));
    KT_EXPECT(HalpAcpiChecksumOk(Bytes, 0)); // nothing sums to 0
    KT_EXPECT(!HalpAcpiChecksumOk(Bytes, 3));
    Bytes[2] ^= 0x80;
    KT_EXPECT(!HalpAcpiChecksumOk(Bytes, sizeof(Bytes)));
}

/* Local APIC NMI entries: type 4 (UID 0xff = every processor) and type 0xA (x2APIC). */
KTEST(HalAcpi, parser_records_local_apic_nmi_entries)
{
    static const UCHAR NmiAll[6] = {4, 6, 0xff, 0x05, 0x00, 1};      // all, active high, LINT1
    static const UCHAR NmiUid3[6] = {4, 6, 3, 0x0f, 0x00, 0};        // UID 3, LINT0, low, level
    static const UCHAR X2Nmi[12] = {10, 12, 0x0d, 0, 3, 0, 0, 0, 1}; // UID 3, LINT1
    static const UCHAR NmiLint7[6] = {4, 6, 0xff, 0, 0, 7};          // no such pin: dropped
    KT_MADT Madt;
    PCSTR Problem = NULL;

    KtMadtBegin(&Madt, 0xfee00000);
    KtMadtAdd(&Madt, KtLocalApic0Enabled, sizeof(KtLocalApic0Enabled));
    KtMadtAdd(&Madt, KtX2Apic300Enabled, sizeof(KtX2Apic300Enabled));
    KtMadtAdd(&Madt, NmiAll, sizeof(NmiAll));
    KtMadtAdd(&Madt, NmiUid3, sizeof(NmiUid3));
    KtMadtAdd(&Madt, X2Nmi, sizeof(X2Nmi));
    KtMadtAdd(&Madt, NmiLint7, sizeof(NmiLint7));
    KtMadtFinish(&Madt);

    KT_ASSERT(HalpAcpiParseMadt(Madt.Bytes, Madt.Length, &KtInfo, &Problem));
    KT_EXPECT_EQ(KtInfo.ProcessorUids[0], 0);
    KT_EXPECT_EQ(KtInfo.ProcessorUids[1], 3); // the x2APIC entry's UID
    KT_ASSERT_EQ(KtInfo.LocalNmiCount, 3);
    KT_EXPECT_EQ(KtInfo.LocalNmis[0].ProcessorUid, HAL_ALL_PROCESSORS_UID);
    KT_EXPECT_EQ(KtInfo.LocalNmis[0].Lint, 1);
    KT_EXPECT_EQ(KtInfo.LocalNmis[0].Flags, 5);
    KT_EXPECT_EQ(KtInfo.LocalNmis[1].ProcessorUid, 3);
    KT_EXPECT_EQ(KtInfo.LocalNmis[1].Lint, 0);
    KT_EXPECT_EQ(KtInfo.LocalNmis[1].Flags, 0x0f);
    KT_EXPECT_EQ(KtInfo.LocalNmis[2].ProcessorUid, 3);
    KT_EXPECT_EQ(KtInfo.LocalNmis[2].Lint, 1);
    KT_EXPECT_EQ(KtInfo.LocalNmis[2].Flags, 0x0d);
}

/*
 * QEMU's MADT wires LINT1 of every processor to NMI (one entry, UID 0xff), so
 * every online processor has LINT1 as an NMI input (the monitor's `nmi` arrives
 * there) and LINT0 masked.
 */
KTEST(HalAcpi, lint1_of_every_processor_is_an_nmi_input)
{
    for (ULONG i = 0; i < KiActiveProcessorCount; i++)
    {
        USHORT Flags = 0xffff;
        KT_EXPECT(HalQueryLocalNmi(KiGetPrcb(i)->ApicId, 1, &Flags));
        KT_EXPECT(!HalQueryLocalNmi(KiGetPrcb(i)->ApicId, 0, &Flags));
    }
}
