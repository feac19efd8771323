/* SPDX-License-Identifier: MIT */
/*
 * ACPI tables: the RSDP the loader copied into the boot information, the RSDT
 * (ACPI 1.0) or XSDT (2.0 and later) it points to, and the MADT, which lists
 * the processors' local APICs, the I/O APICs and the ISA interrupt overrides
 * (ACPI 6.5 §5.2.5 - §5.2.12). Every table is checked (signature, length,
 * checksum) before anything in it is used. The tables are reached through the
 * boot identity map, so only tables wholly below 4 GiB are usable.
 *
 * HalInitializeAcpi runs once on the boot processor and copies what the MADT
 * says into HalpMadt; afterwards the tables and HalpMadt are only read, from
 * any processor, without a lock.
 */
#include "hal/halp.h"

#include "lib/lib.h"

#define ACPI_IDENTITY_LIMIT   (4ull << 30) // the boot page tables map 0..4 GiB
#define ACPI_LOWEST_ADDRESS   0x1000ull    // ... except page 0 (arch/x86_64/paging.c)
#define ACPI_MAX_TABLE_LENGTH (1u << 24)   // sanity cap on an SDT's Length field
#define ACPI_RSDP_V1_LENGTH   20           // the part the ACPI 1.0 checksum covers

#define MADT_TYPE_LOCAL_APIC          0 // processor local APIC
#define MADT_TYPE_IO_APIC             1
#define MADT_TYPE_INTERRUPT_OVERRIDE  2 // interrupt source override
#define MADT_TYPE_LOCAL_APIC_NMI      4 // a local APIC LINT pin wired to NMI
#define MADT_TYPE_LOCAL_APIC_OVERRIDE 5 // 64-bit local APIC address
#define MADT_TYPE_LOCAL_X2APIC        9 // processor local x2APIC
#define MADT_TYPE_LOCAL_X2APIC_NMI    10

#define MADT_PROCESSOR_ENABLED        0x1 // usable now
#define MADT_PROCESSOR_ONLINE_CAPABLE 0x2 // may be enabled later (ACPI 6.3+); not started

/* Root System Description Pointer (ACPI 6.5 §5.2.5.3). */
typedef struct __attribute__((packed)) _ACPI_RSDP
{
    char Signature[8]; // "RSD PTR "
    UCHAR Checksum;    // the first 20 bytes sum to 0
    char OemId[6];
    UCHAR Revision;         // 0: ACPI 1.0 (20 bytes); 2: ACPI 2.0 and later
    ULONG RsdtAddress;      // physical, 32 bits
    ULONG Length;           // revision >= 2: length of the whole structure (36)
    ULONG64 XsdtAddress;    // revision >= 2: physical, 64 bits
    UCHAR ExtendedChecksum; // revision >= 2: all Length bytes sum to 0
    UCHAR Reserved[3];
} ACPI_RSDP;

_Static_assert(sizeof(ACPI_RSDP) == 36, "ACPI 6.5 table 5.3");

/* Header of every System Description Table (ACPI 6.5 §5.2.6). */
typedef struct __attribute__((packed)) _ACPI_TABLE_HEADER
{
    char Signature[4];
    ULONG Length; // of the whole table, header included
    UCHAR Revision;
    UCHAR Checksum; // the whole table sums to 0
    char OemId[6];
    char OemTableId[8];
    ULONG OemRevision;
    ULONG CreatorId;
    ULONG CreatorRevision;
} ACPI_TABLE_HEADER;

_Static_assert(sizeof(ACPI_TABLE_HEADER) == 36, "ACPI 6.5 table 5.4");

/* Multiple APIC Description Table (ACPI 6.5 §5.2.12), followed by its entries. */
typedef struct __attribute__((packed)) _ACPI_MADT
{
    ACPI_TABLE_HEADER Header; // "APIC"
    ULONG LocalApicAddress;
    ULONG Flags; // bit 0: the system also has 8259 PICs
} ACPI_MADT;

_Static_assert(sizeof(ACPI_MADT) == 44, "ACPI 6.5 table 5.43");

typedef struct __attribute__((packed)) _MADT_LOCAL_APIC
{
    UCHAR Type;   // 0
    UCHAR Length; // 8
    UCHAR ProcessorUid;
    UCHAR ApicId;
    ULONG Flags; // MADT_PROCESSOR_*
} MADT_LOCAL_APIC;

typedef struct __attribute__((packed)) _MADT_IO_APIC
{
    UCHAR Type;   // 1
    UCHAR Length; // 12
    UCHAR IoApicId;
    UCHAR Reserved;
    ULONG Address;
    ULONG GsiBase;
} MADT_IO_APIC;

typedef struct __attribute__((packed)) _MADT_INTERRUPT_OVERRIDE
{
    UCHAR Type;   // 2
    UCHAR Length; // 10
    UCHAR Bus;    // 0 = ISA
    UCHAR Source; // bus-relative IRQ
    ULONG Gsi;
    USHORT Flags; // MPS INTI flags
} MADT_INTERRUPT_OVERRIDE;

typedef struct __attribute__((packed)) _MADT_LOCAL_APIC_OVERRIDE
{
    UCHAR Type;   // 5
    UCHAR Length; // 12
    USHORT Reserved;
    ULONG64 Address;
} MADT_LOCAL_APIC_OVERRIDE;

typedef struct __attribute__((packed)) _MADT_LOCAL_X2APIC
{
    UCHAR Type;   // 9
    UCHAR Length; // 16
    USHORT Reserved;
    ULONG X2ApicId;
    ULONG Flags; // MADT_PROCESSOR_*
    ULONG ProcessorUid;
} MADT_LOCAL_X2APIC;

typedef struct __attribute__((packed)) _MADT_LOCAL_APIC_NMI
{
    UCHAR Type;         // 4
    UCHAR Length;       // 6
    UCHAR ProcessorUid; // 0xff: every processor
    USHORT Flags;       // MPS INTI flags
    UCHAR Lint;
} MADT_LOCAL_APIC_NMI;

typedef struct __attribute__((packed)) _MADT_LOCAL_X2APIC_NMI
{
    UCHAR Type;         // 10
    UCHAR Length;       // 12
    USHORT Flags;       // MPS INTI flags
    ULONG ProcessorUid; // 0xffffffff: every processor
    UCHAR Lint;
    UCHAR Reserved[3];
} MADT_LOCAL_X2APIC_NMI;

_Static_assert(sizeof(MADT_LOCAL_APIC_NMI) == 6, "ACPI 6.5 table 5.52");
_Static_assert(sizeof(MADT_LOCAL_X2APIC_NMI) == 12, "ACPI 6.5 table 5.57");
_Static_assert(sizeof(MADT_LOCAL_APIC) == 8, "ACPI 6.5 table 5.46");
_Static_assert(sizeof(MADT_IO_APIC) == 12, "ACPI 6.5 table 5.48");
_Static_assert(sizeof(MADT_INTERRUPT_OVERRIDE) == 10, "ACPI 6.5 table 5.49");
_Static_assert(sizeof(MADT_LOCAL_APIC_OVERRIDE) == 12, "ACPI 6.5 table 5.53");
_Static_assert(sizeof(MADT_LOCAL_X2APIC) == 16, "ACPI 6.5 table 5.56");

/* Written only by HalInitializeAcpi on the boot processor before any AP starts. */
static HAL_MADT_INFO HalpMadt;
static const ACPI_TABLE_HEADER *HalpRootTable; // the RSDT or XSDT in use; NULL without ACPI
static BOOLEAN HalpRootIsXsdt;

BOOLEAN
HalpAcpiChecksumOk(const VOID *Table, ULONG Length)
{
    const UCHAR *Bytes = (const UCHAR *)Table;
    UCHAR Sum = 0;

    for (ULONG i = 0; i < Length; i++)
    {
        Sum = (UCHAR)(Sum + Bytes[i]);
    }
    return Sum == 0;
}

/*
 * The table at physical address Physical, after checking that it lies below
 * 4 GiB and that its length and checksum are right; NULL with *Problem set
 * otherwise. Signature, if not NULL, must match too.
 */
static const ACPI_TABLE_HEADER *
HalpAcpiMapTable(ULONG64 Physical, const char *Signature, PCSTR *Problem)
{
    const ACPI_TABLE_HEADER *Table;
    ULONG Length;

    if (Physical < ACPI_LOWEST_ADDRESS)
    {
        *Problem = "lies in page 0 (not mapped)";
        return NULL;
    }
    if (Physical >= ACPI_IDENTITY_LIMIT ||
        ACPI_IDENTITY_LIMIT - Physical < sizeof(ACPI_TABLE_HEADER))
    {
        *Problem = "lies above 4 GiB (not mapped)";
        return NULL;
    }
    Table = (const ACPI_TABLE_HEADER *)(ULONG_PTR)Physical; // identity-mapped
    if (Signature != NULL && memcmp(Table->Signature, Signature, 4) != 0)
    {
        *Problem = "signature mismatch";
        return NULL;
    }
    Length = Table->Length;
    if (Length < sizeof(ACPI_TABLE_HEADER) || Length > ACPI_MAX_TABLE_LENGTH)
    {
        *Problem = "length out of range";
        return NULL;
    }
    if (ACPI_IDENTITY_LIMIT - Physical < Length)
    {
        *Problem = "lies above 4 GiB (not mapped)";
        return NULL;
    }
    if (!HalpAcpiChecksumOk(Table, Length))
    {
        *Problem = "checksum mismatch";
        return NULL;
    }
    return Table;
}

/* The root table's entry Index: a 32-bit (RSDT) or 64-bit (XSDT) physical address. */
static ULONG64
HalpAcpiRootEntry(ULONG Index)
{
    const UCHAR *Entries = (const UCHAR *)(HalpRootTable + 1);

    if (HalpRootIsXsdt)
    {
        ULONG64 Address;
        memcpy(&Address, Entries + (SIZE_T)Index * 8, sizeof(Address)); // only 4-byte aligned
        return Address;
    }
    ULONG Address;
    memcpy(&Address, Entries + (SIZE_T)Index * 4, sizeof(Address));
    return Address;
}

static ULONG
HalpAcpiRootEntryCount(VOID)
{
    if (HalpRootTable == NULL)
    {
        return 0;
    }
    return (HalpRootTable->Length - sizeof(ACPI_TABLE_HEADER)) / (HalpRootIsXsdt ? 8 : 4);
}

/*
 * The first well-formed table with Signature in the root table. NULL with
 * *Problem = why the last candidate was rejected, or "not found".
 */
static const ACPI_TABLE_HEADER *
HalpAcpiFindTable(const char Signature[4], PCSTR *Problem)
{
    ULONG Count = HalpAcpiRootEntryCount();

    *Problem = "not found";
    for (ULONG i = 0; i < Count; i++)
    {
        ULONG64 Physical = HalpAcpiRootEntry(i);
        PCSTR Why;
        const ACPI_TABLE_HEADER *Table;

        /* Not even its signature can be read outside the identity map. */
        if (Physical < ACPI_LOWEST_ADDRESS ||
            Physical >= ACPI_IDENTITY_LIMIT - sizeof(ACPI_TABLE_HEADER))
        {
            if (Physical >= ACPI_IDENTITY_LIMIT - sizeof(ACPI_TABLE_HEADER) &&
                strcmp(*Problem, "not found") == 0)
            {
                *Problem = "not found below 4 GiB (tables above 4 GiB are not mapped)";
            }
            continue;
        }
        if (memcmp(((const ACPI_TABLE_HEADER *)(ULONG_PTR)Physical)->Signature, Signature, 4) != 0)
        {
            continue;
        }
        Table = HalpAcpiMapTable(Physical, Signature, &Why);
        if (Table != NULL)
        {
            return Table;
        }
        *Problem = Why;
    }
    return NULL;
}

const VOID *
HalQueryAcpiTable(const char Signature[4])
{
    PCSTR Problem;
    return HalpAcpiFindTable(Signature, &Problem);
}

/* Records an enabled processor once, in MADT order. */
static VOID
HalpMadtAddProcessor(HAL_MADT_INFO *Info, ULONG ApicId, ULONG Uid, ULONG Flags)
{
    if (!(Flags & MADT_PROCESSOR_ENABLED))
    {
        /* Absent, or online-capable only (hot-add): not started (ACPI 6.5 table 5.47). */
        Info->ProcessorsDisabled++;
        return;
    }
    /* A processor may be listed twice (local APIC and x2APIC entries): count it once. */
    for (ULONG i = 0; i < Info->ProcessorCount; i++)
    {
        if (Info->ApicIds[i] == ApicId)
        {
            return;
        }
    }
    if (Info->ProcessorCount == HAL_MAX_ACPI_PROCESSORS)
    {
        Info->ProcessorsDropped++;
        return;
    }
    Info->ProcessorUids[Info->ProcessorCount] = Uid;
    Info->ApicIds[Info->ProcessorCount++] = ApicId;
}

static VOID
HalpMadtLocalApic(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_LOCAL_APIC *Processor = (const MADT_LOCAL_APIC *)Entry;
    HalpMadtAddProcessor(Info, Processor->ApicId, Processor->ProcessorUid, Processor->Flags);
}

static VOID
HalpMadtLocalX2Apic(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_LOCAL_X2APIC *Processor = (const MADT_LOCAL_X2APIC *)Entry;
    HalpMadtAddProcessor(Info, Processor->X2ApicId, Processor->ProcessorUid, Processor->Flags);
}

static VOID
HalpMadtIoApic(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_IO_APIC *IoApic = (const MADT_IO_APIC *)Entry;
    if (Info->IoApicCount < HAL_MAX_IO_APICS)
    {
        HAL_IO_APIC *Record = &Info->IoApics[Info->IoApicCount++];
        Record->Id = IoApic->IoApicId;
        Record->Address = IoApic->Address;
        Record->GsiBase = IoApic->GsiBase;
    }
}

static VOID
HalpMadtInterruptOverride(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_INTERRUPT_OVERRIDE *Override = (const MADT_INTERRUPT_OVERRIDE *)Entry;
    if (Info->OverrideCount < HAL_MAX_INTERRUPT_OVERRIDES)
    {
        HAL_INTERRUPT_OVERRIDE *Record = &Info->Overrides[Info->OverrideCount++];
        Record->Bus = Override->Bus;
        Record->SourceIrq = Override->Source;
        Record->Flags = Override->Flags;
        Record->Gsi = Override->Gsi;
    }
}

static VOID
HalpMadtLocalApicOverride(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_LOCAL_APIC_OVERRIDE *Override = (const MADT_LOCAL_APIC_OVERRIDE *)Entry;
    Info->LocalApicAddress = Override->Address;
}

/* Records a local APIC NMI entry (dropped beyond HAL_MAX_LOCAL_NMIS, or for LINT > 1). */
static VOID
HalpMadtAddLocalNmi(HAL_MADT_INFO *Info, ULONG Uid, USHORT Flags, UCHAR Lint)
{
    if (Info->LocalNmiCount < HAL_MAX_LOCAL_NMIS && Lint <= 1)
    {
        HAL_LOCAL_NMI *Record = &Info->LocalNmis[Info->LocalNmiCount++];
        Record->ProcessorUid = Uid;
        Record->Flags = Flags;
        Record->Lint = Lint;
    }
}

static VOID
HalpMadtLocalApicNmi(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_LOCAL_APIC_NMI *Nmi = (const MADT_LOCAL_APIC_NMI *)Entry;
    HalpMadtAddLocalNmi(Info,
                        Nmi->ProcessorUid == 0xff ? HAL_ALL_PROCESSORS_UID : Nmi->ProcessorUid,
                        Nmi->Flags, Nmi->Lint);
}

static VOID
HalpMadtLocalX2ApicNmi(HAL_MADT_INFO *Info, const UCHAR *Entry)
{
    const MADT_LOCAL_X2APIC_NMI *Nmi = (const MADT_LOCAL_X2APIC_NMI *)Entry;
    HalpMadtAddLocalNmi(Info, Nmi->ProcessorUid, Nmi->Flags, Nmi->Lint);
}

/*
 * The MADT entries Spindle reads: each type's minimum length (a shorter entry
 * makes the table malformed) and the routine that records it. Other types are
 * skipped by their length.
 */
typedef struct _HALP_MADT_HANDLER
{
    UCHAR Type;
    UCHAR MinimumLength;
    VOID (*Parse)(HAL_MADT_INFO *Info, const UCHAR *Entry);
} HALP_MADT_HANDLER;

static const HALP_MADT_HANDLER HalpMadtHandlers[] = {
    {MADT_TYPE_LOCAL_APIC, sizeof(MADT_LOCAL_APIC), HalpMadtLocalApic},
    {MADT_TYPE_IO_APIC, sizeof(MADT_IO_APIC), HalpMadtIoApic},
    {MADT_TYPE_INTERRUPT_OVERRIDE, sizeof(MADT_INTERRUPT_OVERRIDE), HalpMadtInterruptOverride},
    {MADT_TYPE_LOCAL_APIC_OVERRIDE, sizeof(MADT_LOCAL_APIC_OVERRIDE), HalpMadtLocalApicOverride},
    {MADT_TYPE_LOCAL_X2APIC, sizeof(MADT_LOCAL_X2APIC), HalpMadtLocalX2Apic},
    {MADT_TYPE_LOCAL_APIC_NMI, sizeof(MADT_LOCAL_APIC_NMI), HalpMadtLocalApicNmi},
    {MADT_TYPE_LOCAL_X2APIC_NMI, sizeof(MADT_LOCAL_X2APIC_NMI), HalpMadtLocalX2ApicNmi},
};

static const HALP_MADT_HANDLER *
HalpMadtFindHandler(UCHAR Type)
{
    for (SIZE_T i = 0; i < sizeof(HalpMadtHandlers) / sizeof(HalpMadtHandlers[0]); i++)
    {
        if (HalpMadtHandlers[i].Type == Type)
        {
            return &HalpMadtHandlers[i];
        }
    }
    return NULL;
}

BOOLEAN
HalpAcpiParseMadt(const VOID *Madt, ULONG Length, HAL_MADT_INFO *Info, PCSTR *Problem)
{
    const UCHAR *Bytes = (const UCHAR *)Madt;
    const ACPI_MADT *Header = (const ACPI_MADT *)Madt;
    ULONG TableLength;
    ULONG EntryLength;

    memset(Info, 0, sizeof(*Info));
    if (Length < sizeof(ACPI_MADT))
    {
        *Problem = "too short";
        return FALSE;
    }
    if (memcmp(Header->Header.Signature, "APIC", 4) != 0)
    {
        *Problem = "signature mismatch";
        return FALSE;
    }
    TableLength = Header->Header.Length;
    if (TableLength < sizeof(ACPI_MADT) || TableLength > Length)
    {
        *Problem = "length out of range";
        return FALSE;
    }
    if (!HalpAcpiChecksumOk(Madt, TableLength))
    {
        *Problem = "checksum mismatch";
        return FALSE;
    }

    Info->LocalApicAddress = Header->LocalApicAddress;
    for (ULONG Offset = sizeof(ACPI_MADT); Offset < TableLength; Offset += EntryLength)
    {
        const UCHAR *Entry = Bytes + Offset;
        const HALP_MADT_HANDLER *Handler;

        /* Every entry starts with Type and Length; a Length below 2 would never advance. */
        if (TableLength - Offset < 2 || Entry[1] < 2 || Entry[1] > TableLength - Offset)
        {
            *Problem = "entry malformed (length)";
            return FALSE;
        }
        EntryLength = Entry[1];
        Handler = HalpMadtFindHandler(Entry[0]);
        if (Handler == NULL)
        {
            continue; // a type Spindle does not use
        }
        if (EntryLength < Handler->MinimumLength)
        {
            *Problem = "entry malformed (too short for its type)";
            return FALSE;
        }
        Handler->Parse(Info, Entry);
    }

    if (Info->ProcessorCount == 0)
    {
        *Problem = "lists no enabled processor";
        return FALSE;
    }
    return TRUE;
}

/* Without a usable MADT: one processor, the one running this. */
static VOID
HalpAcpiAssumeOneProcessor(VOID)
{
    memset(&HalpMadt, 0, sizeof(HalpMadt));
    HalpMadt.ProcessorCount = 1;
    HalpMadt.ApicIds[0] = HalGetCurrentApicId();
}

/*
 * Picks the root table from the RSDP: the XSDT when the revision is 2 or more,
 * the extended checksum holds and XsdtAddress is set, else the RSDT. Sets
 * HalpRootTable (NULL with a printed reason if neither is usable).
 */
static VOID
HalpAcpiFindRootTable(const ACPI_RSDP *Rsdp, ULONG RsdpLength)
{
    PCSTR Problem = NULL;

    HalpRootTable = NULL;
    HalpRootIsXsdt = FALSE;
    if (Rsdp->Revision >= 2)
    {
        if (RsdpLength < sizeof(ACPI_RSDP) || Rsdp->Length < sizeof(ACPI_RSDP) ||
            Rsdp->Length > RsdpLength)
        {
            DbgPrint("Spindle: ACPI: RSDP revision %u without its 2.0 part; using the RSDT\n",
                     Rsdp->Revision);
        }
        else if (!HalpAcpiChecksumOk(Rsdp, Rsdp->Length))
        {
            DbgPrint("Spindle: ACPI: RSDP extended checksum mismatch; using the RSDT\n");
        }
        else if (Rsdp->XsdtAddress != 0)
        {
            HalpRootTable = HalpAcpiMapTable(Rsdp->XsdtAddress, "XSDT", &Problem);
            if (HalpRootTable != NULL)
            {
                HalpRootIsXsdt = TRUE;
                return;
            }
            DbgPrint("Spindle: ACPI: XSDT at %#llx %s; using the RSDT\n", Rsdp->XsdtAddress,
                     Problem);
        }
    }
    HalpRootTable = HalpAcpiMapTable(Rsdp->RsdtAddress, "RSDT", &Problem);
    if (HalpRootTable == NULL)
    {
        DbgPrint("Spindle: ACPI: RSDT at %#x %s; assuming one processor\n", Rsdp->RsdtAddress,
                 Problem);
    }
}

VOID
HalInitializeAcpi(const VOID *RsdpCopy, ULONG RsdpLength)
{
    const ACPI_RSDP *Rsdp = (const ACPI_RSDP *)RsdpCopy;
    const ACPI_TABLE_HEADER *Madt;
    PCSTR Problem;
    ULONG BootApicId = HalGetCurrentApicId();
    BOOLEAN BootListed = FALSE;

    HalpAcpiAssumeOneProcessor();
    HalpRootTable = NULL;
    if (Rsdp == NULL)
    {
        DbgPrint("Spindle: ACPI: the loader gave no RSDP; assuming one processor\n");
        return;
    }
    if (RsdpLength < ACPI_RSDP_V1_LENGTH || memcmp(Rsdp->Signature, "RSD PTR ", 8) != 0)
    {
        DbgPrint("Spindle: ACPI: RSDP signature mismatch; assuming one processor\n");
        return;
    }
    if (!HalpAcpiChecksumOk(Rsdp, ACPI_RSDP_V1_LENGTH))
    {
        DbgPrint("Spindle: ACPI: RSDP checksum mismatch; assuming one processor\n");
        return;
    }
    HalpAcpiFindRootTable(Rsdp, RsdpLength);
    if (HalpRootTable == NULL)
    {
        return;
    }

    Madt = HalpAcpiFindTable("APIC", &Problem);
    if (Madt == NULL || !HalpAcpiParseMadt(Madt, Madt->Length, &HalpMadt, &Problem))
    {
        DbgPrint("Spindle: ACPI: MADT %s; assuming one processor\n", Problem);
        HalpAcpiAssumeOneProcessor();
        return;
    }

    for (ULONG i = 0; i < HalpMadt.ProcessorCount; i++)
    {
        BootListed |= HalpMadt.ApicIds[i] == BootApicId;
    }
    DbgPrint("Spindle: ACPI: %u processor(s), %u I/O APIC(s), %u interrupt override(s), "
             "local APIC at %#llx; MADT from the %s (RSDP revision %u, OEM \"%.6s\")\n",
             HalpMadt.ProcessorCount, HalpMadt.IoApicCount, HalpMadt.OverrideCount,
             HalpMadt.LocalApicAddress, HalpRootIsXsdt ? "XSDT" : "RSDT", Rsdp->Revision,
             Rsdp->OemId);
    if (HalpMadt.ProcessorsDisabled != 0 || HalpMadt.ProcessorsDropped != 0)
    {
        DbgPrint("Spindle: ACPI: %u processor(s) listed but not enabled, %u beyond the %d "
                 "recorded\n",
                 HalpMadt.ProcessorsDisabled, HalpMadt.ProcessorsDropped, HAL_MAX_ACPI_PROCESSORS);
    }
    if (!BootListed)
    {
        DbgPrint("Spindle: ACPI: the MADT does not list the boot processor (APIC ID %u)\n",
                 BootApicId);
    }
    /* The boot processor's APIC was set up before the MADT was read: wire its NMI pins now. */
    HalpConfigureLocalNmi();
}

BOOLEAN
HalQueryLocalNmi(ULONG ApicId, ULONG Lint, PUSHORT Flags)
{
    ULONG Uid = HAL_ALL_PROCESSORS_UID;

    for (ULONG i = 0; i < HalpMadt.ProcessorCount; i++)
    {
        if (HalpMadt.ApicIds[i] == ApicId)
        {
            Uid = HalpMadt.ProcessorUids[i];
        }
    }
    for (ULONG i = 0; i < HalpMadt.LocalNmiCount; i++)
    {
        const HAL_LOCAL_NMI *Nmi = &HalpMadt.LocalNmis[i];
        if (Nmi->Lint == Lint &&
            (Nmi->ProcessorUid == HAL_ALL_PROCESSORS_UID || Nmi->ProcessorUid == Uid))
        {
            *Flags = Nmi->Flags;
            return TRUE;
        }
    }
    return FALSE;
}

ULONG
HalQueryProcessorCount(VOID)
{
    return HalpMadt.ProcessorCount;
}

ULONG
HalQueryProcessorApicId(ULONG Index)
{
    return Index < HalpMadt.ProcessorCount ? HalpMadt.ApicIds[Index] : ~0U;
}

ULONG
HalQueryIoApicCount(VOID)
{
    return HalpMadt.IoApicCount;
}

BOOLEAN
HalQueryIoApic(ULONG Index, HAL_IO_APIC *IoApic)
{
    if (Index >= HalpMadt.IoApicCount)
    {
        return FALSE;
    }
    *IoApic = HalpMadt.IoApics[Index];
    return TRUE;
}

ULONG
HalQueryIsaInterruptGsi(ULONG Irq, PUSHORT Flags)
{
    for (ULONG i = 0; i < HalpMadt.OverrideCount; i++)
    {
        const HAL_INTERRUPT_OVERRIDE *Override = &HalpMadt.Overrides[i];
        if (Override->Bus == 0 && Override->SourceIrq == Irq)
        {
            if (Flags != NULL)
            {
                *Flags = Override->Flags;
            }
            return Override->Gsi;
        }
    }
    if (Flags != NULL)
    {
        *Flags = 0; // conforms to the ISA bus: edge-triggered, active high
    }
    return Irq; // identity-mapped onto the GSIs (ACPI 6.5 §5.2.12.5)
}

ULONG64
HalQueryLocalApicAddress(VOID)
{
    return HalpMadt.LocalApicAddress;
}
