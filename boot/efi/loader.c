/* SPDX-License-Identifier: MIT */
/*
 * Spindle EFI loader (BOOTX64.EFI, GNU-EFI): loads Spindle's kernel ELF from the
 * partition it was started from, exits boot services and enters the kernel's
 * 32-bit multiboot2 entry exactly as GRUB does, with a multiboot2 information
 * block, so the kernel has one boot protocol (DESIGN.md §2).
 *
 * Files on the partition:
 *   \EFI\BOOT\BOOTX64.EFI     this loader (the removable-media default path)
 *   \spindle\kernel.elf       the kernel (ELF64, x86-64, EXEC, multiboot2 header)
 *   \spindle\cmdline.txt      the kernel command line (optional; newlines become spaces)
 *   \spindle\test-stale-map-key   test only: when present, the first ExitBootServices
 *                             call gets a stale map key, to exercise the retry path
 *
 * Handover (what the kernel gets; see boot/multiboot2.asm for its entry contract):
 *   - every PT_LOAD segment at its physical address (p_paddr, below 4 GiB), file
 *     bytes copied, the rest zeroed, in EfiLoaderData pages allocated at exactly
 *     that address;
 *   - the information block, in EfiLoaderData pages below 4 GiB: command line (1),
 *     boot loader name "Spindle EFI loader" (2), memory map (6), ACPI RSDP copy
 *     (15 for ACPI 2.0+, else 14), the EFI memory map (17), end (0);
 *   - the memory map is the final EFI map (taken right before the successful
 *     ExitBootServices): conventional, boot-services and loader memory is
 *     available (1), except the kernel's segments, the information block and
 *     the trampoline page, which are reported reserved (2); ACPI reclaim (3),
 *     ACPI NVS (4), unusable (5), everything else reserved (2); sorted, adjacent
 *     ranges of one type merged;
 *   - the entry: boot/efi/enter32.asm, copied to an EfiLoaderCode page below
 *     4 GiB, leaves long mode and jumps to e_entry in 32-bit protected mode,
 *     paging off, EAX = 0x36d76289, EBX = the information block.
 *
 * Errors (missing or malformed files, allocation failures) are printed on the
 * firmware console and the serial port, everything the loader allocated is
 * freed, and EFI_LOAD_ERROR goes back to the firmware, which carries on with
 * its next boot option.
 */
#include <efi.h>
#include <efilib.h>

#define LDR_NAME            "Spindle EFI loader" // kernel/bootinfo.c recognises this name
#define LDR_PAGE_SIZE       4096ull
#define LDR_BELOW_4G        0xffffffffull // highest address the 32-bit entry reaches
#define LDR_MAX_KERNEL_SIZE (64ull << 20)
#define LDR_MAX_CMDLINE     4096 // bytes including the NUL
#define LDR_MAX_SEGMENTS    32
#define LDR_MAX_PROTECTED   (LDR_MAX_SEGMENTS + 2) // segments, information block, trampoline
#define LDR_EBS_ATTEMPTS    8                      // ExitBootServices tries (map changed)
#define LDR_MAP_SLACK       32                     // spare descriptors for a map that grows
#define LDR_PRINT_CHARS     512

#define LDR_ALIGN8(x)    (((x) + 7) & ~(UINTN)7)
#define LDR_PAGES(bytes) (((bytes) + LDR_PAGE_SIZE - 1) / LDR_PAGE_SIZE)

/* ---- ELF64 (System V gABI), just what the loader reads ---------------------------------- */

#define ELF_MAGIC       "\177ELF"
#define ELF_CLASS64     2
#define ELF_DATA_LSB    1
#define ELF_VERSION     1
#define ELF_TYPE_EXEC   2
#define ELF_MACHINE_X64 62
#define ELF_PT_LOAD     1

typedef struct _LDR_ELF64_HEADER
{
    UINT8 Ident[16];
    UINT16 Type;
    UINT16 Machine;
    UINT32 Version;
    UINT64 Entry;
    UINT64 ProgramHeaderOffset;
    UINT64 SectionHeaderOffset;
    UINT32 Flags;
    UINT16 HeaderSize;
    UINT16 ProgramHeaderSize;
    UINT16 ProgramHeaderCount;
    UINT16 SectionHeaderSize;
    UINT16 SectionHeaderCount;
    UINT16 SectionNameIndex;
} LDR_ELF64_HEADER;

typedef struct _LDR_ELF64_PROGRAM_HEADER
{
    UINT32 Type;
    UINT32 Flags;
    UINT64 Offset;
    UINT64 VirtualAddress;
    UINT64 PhysicalAddress;
    UINT64 FileSize;
    UINT64 MemorySize;
    UINT64 Align;
} LDR_ELF64_PROGRAM_HEADER;

_Static_assert(sizeof(LDR_ELF64_HEADER) == 64, "ELF64 header layout");
_Static_assert(sizeof(LDR_ELF64_PROGRAM_HEADER) == 56, "ELF64 program header layout");

/* ---- multiboot2 (the information format the kernel reads) ------------------------------- */

#define MB2_HEADER_MAGIC     0xe85250d6u
#define MB2_HEADER_SEARCH    32768 // the header lies 8-byte aligned in the file's first 32 KiB
#define MB2_BOOT_MAGIC       0x36d76289u
#define MB2_TAG_END          0
#define MB2_TAG_CMDLINE      1
#define MB2_TAG_LOADER       2
#define MB2_TAG_MMAP         6
#define MB2_TAG_ACPI_OLD     14
#define MB2_TAG_ACPI_NEW     15
#define MB2_TAG_EFI_MMAP     17
#define MB2_MEMORY_AVAILABLE 1
#define MB2_MEMORY_RESERVED  2
#define MB2_MEMORY_ACPI      3
#define MB2_MEMORY_NVS       4
#define MB2_MEMORY_BAD       5

typedef struct _MB2_TAG
{
    UINT32 Type;
    UINT32 Size;
} MB2_TAG;

typedef struct _MB2_MMAP_ENTRY
{
    UINT64 Base;
    UINT64 Length;
    UINT32 Type;
    UINT32 Reserved;
} MB2_MMAP_ENTRY;

_Static_assert(sizeof(MB2_MMAP_ENTRY) == 24, "multiboot2 memory map entry layout");

/* ---- ACPI ------------------------------------------------------------------------------ */

#define ACPI_RSDP_V1_LENGTH 20
#define ACPI_RSDP_V2_LENGTH 36

typedef struct _LDR_RANGE
{
    UINT64 Base; // [Base, End), page-aligned
    UINT64 End;
} LDR_RANGE;

/* Defined in boot/efi/enter32.asm. */
extern const UINT8 LdrEnterKernel32Start[];
extern const UINT8 LdrEnterKernel32End[];
void LdrOutByte(UINT16 Port, UINT8 Value);
UINT8 LdrInByte(UINT16 Port);
typedef void (*LDR_ENTER_KERNEL32)(UINT32 InfoPhysical, UINT32 EntryPhysical);

EFI_STATUS efi_main(EFI_HANDLE ImageHandle, EFI_SYSTEM_TABLE *SystemTable);

/* Paths are CHAR16 arrays, not literals: the file protocol takes non-const strings. */
static CHAR16 LdrpKernelPath[] = L"\\spindle\\kernel.elf";
static CHAR16 LdrpCmdlinePath[] = L"\\spindle\\cmdline.txt";
static CHAR16 LdrpStaleKeyPath[] = L"\\spindle\\test-stale-map-key";
static CHAR16 LdrpConOutVariable[] = L"ConOut";
static EFI_GUID LdrpAcpi20Guid = ACPI_20_TABLE_GUID;
static EFI_GUID LdrpAcpi10Guid = ACPI_TABLE_GUID;

/* Output: ConOut, plus the serial port when ConOut does not already reach it. */
static BOOLEAN LdrpConOutReachesUart;
static EFI_SERIAL_IO_PROTOCOL *LdrpSerialIo;
static BOOLEAN LdrpCom1Present;

/* What the kernel gets. */
static LDR_RANGE LdrpProtected[LDR_MAX_PROTECTED]; // sorted before the map is converted
static UINTN LdrpProtectedCount;
static LDR_RANGE LdrpSegmentPages[LDR_MAX_SEGMENTS]; // allocated for the kernel, for cleanup
static UINTN LdrpSegmentPageCount;
static CHAR8 LdrpCommandLine[LDR_MAX_CMDLINE];
static UINT8 LdrpRsdp[ACPI_RSDP_V2_LENGTH];
static UINTN LdrpRsdpLength; // 0: none, 20: ACPI 1.0, 36: ACPI 2.0+
static UINT64 LdrpEntryPhysical;

/* ---- output ----------------------------------------------------------------------------- */

#define COM1_BASE     0x3f8
#define COM1_LSR      (COM1_BASE + 5)
#define COM1_SCRATCH  (COM1_BASE + 7)
#define COM1_LSR_THRE 0x20
#define COM1_SPIN     100000 // bounded: a stuck UART never hangs the loader

static BOOLEAN
LdrpProbeCom1(VOID)
{
    /* A 16550 keeps what is written to its scratch register; an empty port floats to 0xff. */
    LdrOutByte(COM1_SCRATCH, 0xa5);
    if (LdrInByte(COM1_SCRATCH) != 0xa5)
    {
        return FALSE;
    }
    LdrOutByte(COM1_SCRATCH, 0x5a);
    return LdrInByte(COM1_SCRATCH) == 0x5a;
}

static VOID
LdrpCom1Write(const CHAR8 *Text, UINTN Length)
{
    for (UINTN i = 0; i < Length; i++)
    {
        for (UINTN Spin = 0; Spin < COM1_SPIN; Spin++)
        {
            if (LdrInByte(COM1_LSR) & COM1_LSR_THRE)
            {
                break;
            }
        }
        LdrOutByte(COM1_BASE, (UINT8)Text[i]);
    }
}

/* Writes ASCII to the serial port through the firmware's Serial I/O protocol or COM1. */
static VOID
LdrpSerialWrite(const CHAR8 *Text, UINTN Length)
{
    if (LdrpSerialIo != NULL)
    {
        UINTN Size = Length;
        LdrpSerialIo->Write(LdrpSerialIo, &Size, (VOID *)Text);
    }
    else if (LdrpCom1Present)
    {
        LdrpCom1Write(Text, Length);
    }
}

/*
 * Whether ConOut already includes a serial terminal: the ConOut variable lists the
 * device paths of the console output devices; a UART node (messaging, subtype 14)
 * in any of them means text on ConOut reaches the serial port (OVMF does this).
 */
static BOOLEAN
LdrpConOutIncludesUart(VOID)
{
    UINT8 Paths[2048];
    UINTN Size = sizeof(Paths);
    UINT32 Attributes;
    EFI_STATUS Status =
        RT->GetVariable(LdrpConOutVariable, &gEfiGlobalVariableGuid, &Attributes, &Size, Paths);
    if (EFI_ERROR(Status))
    {
        return FALSE;
    }
    for (UINTN i = 0; i + 4 <= Size;)
    {
        UINT8 Type = Paths[i];
        UINT8 SubType = Paths[i + 1];
        UINTN Length = Paths[i + 2] | ((UINTN)Paths[i + 3] << 8);
        if (Type == MESSAGING_DEVICE_PATH && SubType == MSG_UART_DP)
        {
            return TRUE;
        }
        if (Length < 4 ||
            (Type == END_DEVICE_PATH_TYPE && SubType == END_ENTIRE_DEVICE_PATH_SUBTYPE))
        {
            break;
        }
        i += Length;
    }
    return FALSE;
}

static VOID
LdrpInitializeOutput(VOID)
{
    LdrpCom1Present = LdrpProbeCom1();
    LdrpConOutReachesUart = LdrpConOutIncludesUart();
    if (!LdrpConOutReachesUart)
    {
        VOID *Interface = NULL;
        if (!EFI_ERROR(BS->LocateProtocol(&gEfiSerialIoProtocolGuid, NULL, &Interface)))
        {
            LdrpSerialIo = Interface;
        }
    }
}

/*
 * Prints a formatted line (gnu-efi format: %a ASCII, %s CHAR16, %lx/%ld 64-bit,
 * %r EFI_STATUS) on ConOut and, unless ConOut reaches it already, on the serial
 * port. "\n" becomes "\r\n". Boot services only.
 */
static VOID
LdrpPrint(const CHAR16 *Format, ...)
{
    CHAR16 Text[LDR_PRINT_CHARS];
    CHAR16 Wide[2 * LDR_PRINT_CHARS];
    CHAR8 Ascii[2 * LDR_PRINT_CHARS];
    UINTN Length = 0;
    va_list Arguments;

    va_start(Arguments, Format);
    UnicodeVSPrint(Text, sizeof(Text), Format, Arguments);
    va_end(Arguments);

    for (UINTN i = 0; i < LDR_PRINT_CHARS && Text[i] != 0; i++)
    {
        if (Text[i] == L'\n')
        {
            Wide[Length] = L'\r';
            Ascii[Length++] = '\r';
        }
        Wide[Length] = Text[i];
        Ascii[Length++] = Text[i] < 0x80 ? (CHAR8)Text[i] : '?';
    }
    Wide[Length] = 0;
    ST->ConOut->OutputString(ST->ConOut, Wide);
    if (!LdrpConOutReachesUart)
    {
        LdrpSerialWrite(Ascii, Length);
    }
}

#define LDR_ERROR_PREFIX L"Spindle EFI loader: error: "

/* After ExitBootServices: COM1 only (no firmware left), a NUL-terminated string. */
static VOID
LdrpLatePrint(const char *Text)
{
    UINTN Length = 0;
    while (Text[Length] != 0)
    {
        Length++;
    }
    if (LdrpCom1Present)
    {
        LdrpCom1Write((const CHAR8 *)Text, Length);
    }
}

/* After ExitBootServices: Value in base 10 or 16 (with "0x"). */
static VOID
LdrpLatePrintNumber(UINT64 Value, UINTN Base)
{
    char Digits[24];
    UINTN Next = sizeof(Digits) - 1;
    Digits[Next] = 0;
    do
    {
        UINTN Digit = Value % Base;
        Digits[--Next] = (char)(Digit < 10 ? '0' + Digit : 'a' + Digit - 10);
        Value /= Base;
    } while (Value != 0);
    if (Base == 16)
    {
        Digits[--Next] = 'x';
        Digits[--Next] = '0';
    }
    LdrpLatePrint(&Digits[Next]);
}

/* ---- files ------------------------------------------------------------------------------ */

/*
 * Reads the whole of Path into a new pool buffer (*Data, *Size; free with FreePool).
 * Prints nothing when the file does not exist (returns EFI_NOT_FOUND): the caller
 * decides whether that is an error. Other failures are printed.
 */
static EFI_STATUS
LdrpReadFile(EFI_FILE_HANDLE Root, CHAR16 *Path, UINT64 Limit, UINT8 **Data, UINTN *Size)
{
    EFI_FILE_HANDLE File;
    union
    {
        EFI_FILE_INFO Info;
        UINT8 Bytes[sizeof(EFI_FILE_INFO) + 512];
    } Info;
    UINTN InfoSize = sizeof(Info);
    UINT8 *Buffer = NULL;
    UINTN Done = 0;
    EFI_STATUS Status;

    *Data = NULL;
    *Size = 0;
    Status = Root->Open(Root, &File, Path, EFI_FILE_MODE_READ, 0);
    if (Status == EFI_NOT_FOUND)
    {
        return Status;
    }
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: cannot open: %r\n", Path, Status);
        return Status;
    }
    Status = File->GetInfo(File, &gEfiFileInfoGuid, &InfoSize, &Info);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: cannot read its size: %r\n", Path, Status);
        goto Out;
    }
    if (Info.Info.Attribute & EFI_FILE_DIRECTORY)
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: is a directory\n", Path);
        Status = EFI_LOAD_ERROR;
        goto Out;
    }
    if (Info.Info.FileSize > Limit)
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: %ld bytes, more than the limit of %ld\n", Path,
                  Info.Info.FileSize, Limit);
        Status = EFI_LOAD_ERROR;
        goto Out;
    }
    Status = BS->AllocatePool(EfiLoaderData, Info.Info.FileSize + 1, (VOID **)&Buffer);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: no memory for %ld bytes: %r\n", Path, Info.Info.FileSize,
                  Status);
        Buffer = NULL;
        goto Out;
    }
    while (Done < Info.Info.FileSize)
    {
        UINTN Chunk = Info.Info.FileSize - Done;
        Status = File->Read(File, &Chunk, Buffer + Done);
        if (EFI_ERROR(Status) || Chunk == 0)
        {
            LdrpPrint(LDR_ERROR_PREFIX L"%s: read failed after %ld of %ld bytes: %r\n", Path,
                      (UINT64)Done, Info.Info.FileSize,
                      EFI_ERROR(Status) ? Status : EFI_END_OF_FILE);
            Status = EFI_ERROR(Status) ? Status : EFI_END_OF_FILE;
            goto Out;
        }
        Done += Chunk;
    }
    *Data = Buffer;
    *Size = Done;
    Buffer = NULL;
    Status = EFI_SUCCESS;
Out:
    if (Buffer != NULL)
    {
        BS->FreePool(Buffer);
    }
    File->Close(File);
    return Status;
}

static BOOLEAN
LdrpFileExists(EFI_FILE_HANDLE Root, CHAR16 *Path)
{
    EFI_FILE_HANDLE File;
    if (EFI_ERROR(Root->Open(Root, &File, Path, EFI_FILE_MODE_READ, 0)))
    {
        return FALSE;
    }
    File->Close(File);
    return TRUE;
}

/* Reads \spindle\cmdline.txt into LdrpCommandLine: CR, LF and TAB become spaces. */
static EFI_STATUS
LdrpReadCommandLine(EFI_FILE_HANDLE Root)
{
    UINT8 *Data;
    UINTN Size;
    UINTN Length = 0;
    EFI_STATUS Status = LdrpReadFile(Root, LdrpCmdlinePath, LDR_MAX_CMDLINE - 1, &Data, &Size);

    LdrpCommandLine[0] = 0;
    if (Status == EFI_NOT_FOUND)
    {
        LdrpPrint(L"Spindle EFI loader: no %s; the kernel gets an empty command line\n",
                  LdrpCmdlinePath);
        return EFI_SUCCESS;
    }
    if (EFI_ERROR(Status))
    {
        return Status;
    }
    for (UINTN i = 0; i < Size; i++)
    {
        CHAR8 c = (CHAR8)Data[i];
        if (c == 0)
        {
            LdrpPrint(LDR_ERROR_PREFIX L"%s: a NUL byte at offset %ld\n", LdrpCmdlinePath,
                      (UINT64)i);
            BS->FreePool(Data);
            return EFI_LOAD_ERROR;
        }
        LdrpCommandLine[Length++] = (c == '\r' || c == '\n' || c == '\t') ? ' ' : c;
    }
    while (Length > 0 && LdrpCommandLine[Length - 1] == ' ')
    {
        Length--;
    }
    LdrpCommandLine[Length] = 0;
    BS->FreePool(Data);
    return EFI_SUCCESS;
}

/* ---- the kernel ELF --------------------------------------------------------------------- */

static BOOLEAN
LdrpAddOverflows(UINT64 a, UINT64 b, UINT64 Limit)
{
    return a > Limit || b > Limit - a;
}

/* Returns NULL when Image is a loadable Spindle kernel, else what is wrong with it. */
static const CHAR16 *
LdrpCheckElf(const UINT8 *Image, UINTN Size)
{
    const LDR_ELF64_HEADER *Header = (const LDR_ELF64_HEADER *)Image;
    const LDR_ELF64_PROGRAM_HEADER *Program;
    UINTN Loadable = 0;
    BOOLEAN EntryFound = FALSE;
    BOOLEAN Multiboot2 = FALSE;

    if (Size < sizeof(*Header))
    {
        return L"shorter than an ELF header (truncated?)";
    }
    if (CompareMem(Header->Ident, ELF_MAGIC, 4) != 0)
    {
        return L"not an ELF file (bad magic)";
    }
    if (Header->Ident[4] != ELF_CLASS64)
    {
        return L"not a 64-bit ELF file (EI_CLASS)";
    }
    if (Header->Ident[5] != ELF_DATA_LSB || Header->Ident[6] != ELF_VERSION ||
        Header->Version != ELF_VERSION)
    {
        return L"not a little-endian ELF version 1 file";
    }
    if (Header->Machine != ELF_MACHINE_X64)
    {
        return L"not an x86-64 ELF file (e_machine)";
    }
    if (Header->Type != ELF_TYPE_EXEC)
    {
        return L"not an executable (e_type is not ET_EXEC)";
    }
    if (Header->ProgramHeaderSize != sizeof(LDR_ELF64_PROGRAM_HEADER) ||
        Header->ProgramHeaderCount == 0)
    {
        return L"no program headers, or of the wrong size";
    }
    if (LdrpAddOverflows(Header->ProgramHeaderOffset,
                         (UINT64)Header->ProgramHeaderCount * sizeof(*Program), Size) ||
        (Header->ProgramHeaderOffset & 7) != 0)
    {
        return L"program headers out of the file's bounds or misaligned (truncated?)";
    }

    Program = (const LDR_ELF64_PROGRAM_HEADER *)(Image + Header->ProgramHeaderOffset);
    for (UINTN i = 0; i < Header->ProgramHeaderCount; i++)
    {
        const LDR_ELF64_PROGRAM_HEADER *Segment = &Program[i];
        if (Segment->Type != ELF_PT_LOAD || Segment->MemorySize == 0)
        {
            continue;
        }
        if (++Loadable > LDR_MAX_SEGMENTS)
        {
            return L"too many PT_LOAD segments";
        }
        if (Segment->FileSize > Segment->MemorySize)
        {
            return L"a PT_LOAD segment has p_filesz > p_memsz";
        }
        if (LdrpAddOverflows(Segment->Offset, Segment->FileSize, Size))
        {
            return L"a PT_LOAD segment lies beyond the end of the file (truncated?)";
        }
        if (LdrpAddOverflows(Segment->PhysicalAddress, Segment->MemorySize, LDR_BELOW_4G + 1))
        {
            return L"a PT_LOAD segment lies above 4 GiB (p_paddr + p_memsz)";
        }
        for (UINTN j = 0; j < i; j++)
        {
            const LDR_ELF64_PROGRAM_HEADER *Other = &Program[j];
            if (Other->Type == ELF_PT_LOAD && Other->MemorySize != 0 &&
                Segment->PhysicalAddress < Other->PhysicalAddress + Other->MemorySize &&
                Other->PhysicalAddress < Segment->PhysicalAddress + Segment->MemorySize)
            {
                return L"two PT_LOAD segments overlap in physical memory";
            }
        }
        /* The entry runs with paging off: translate e_entry through its segment. */
        if (Header->Entry >= Segment->VirtualAddress &&
            Header->Entry - Segment->VirtualAddress < Segment->FileSize)
        {
            LdrpEntryPhysical = Header->Entry - Segment->VirtualAddress + Segment->PhysicalAddress;
            EntryFound = TRUE;
        }
    }
    if (Loadable == 0)
    {
        return L"no PT_LOAD segment";
    }
    if (!EntryFound)
    {
        return L"the entry point (e_entry) is not inside a loaded segment's file bytes";
    }

    /* GRUB boots only multiboot2 kernels: so does this loader (same entry contract). */
    for (UINTN Offset = 0; Offset + 16 <= Size && Offset + 16 <= MB2_HEADER_SEARCH; Offset += 8)
    {
        const UINT32 *Words = (const UINT32 *)(Image + Offset);
        if (Words[0] == MB2_HEADER_MAGIC && Words[1] == 0 && Words[2] >= 16 &&
            (UINT32)(Words[0] + Words[1] + Words[2] + Words[3]) == 0)
        {
            Multiboot2 = TRUE;
            break;
        }
    }
    if (!Multiboot2)
    {
        return L"no multiboot2 header (i386) in the first 32 KiB: not a Spindle kernel";
    }
    return NULL;
}

static const CHAR16 *
LdrpMemoryTypeName(UINT32 Type)
{
    static const CHAR16 *const Names[] = {
        L"reserved",           L"loader code",  L"loader data",  L"boot services code",
        L"boot services data", L"runtime code", L"runtime data", L"conventional",
        L"unusable",           L"ACPI reclaim", L"ACPI NVS",     L"MMIO",
        L"MMIO port space",    L"PAL code",     L"persistent",
    };
    return Type < sizeof(Names) / sizeof(Names[0]) ? Names[Type] : L"other";
}

/* After a failed AllocateAddress: says which firmware memory sits in [Base, End). */
static VOID
LdrpDescribeRange(UINT64 Base, UINT64 End)
{
    UINTN Entries;
    UINTN Key;
    UINTN DescriptorSize;
    UINT32 Version;
    EFI_MEMORY_DESCRIPTOR *Map = LibMemoryMap(&Entries, &Key, &DescriptorSize, &Version);

    if (Map == NULL)
    {
        return;
    }
    for (UINTN i = 0; i < Entries; i++)
    {
        const EFI_MEMORY_DESCRIPTOR *d =
            (const EFI_MEMORY_DESCRIPTOR *)((UINT8 *)Map + i * DescriptorSize);
        UINT64 dEnd = d->PhysicalStart + d->NumberOfPages * LDR_PAGE_SIZE;
        if (d->PhysicalStart < End && Base < dEnd && d->Type != EfiConventionalMemory)
        {
            LdrpPrint(L"Spindle EFI loader:   [%lx, %lx) is %s memory\n", d->PhysicalStart, dEnd,
                      LdrpMemoryTypeName(d->Type));
        }
    }
    BS->FreePool(Map);
}

static VOID
LdrpAddProtected(UINT64 Base, UINT64 End)
{
    /* Capacity: LDR_MAX_SEGMENTS segments (checked by LdrpCheckElf) + 2. */
    LdrpProtected[LdrpProtectedCount].Base = Base;
    LdrpProtected[LdrpProtectedCount].End = End;
    LdrpProtectedCount++;
}

static VOID
LdrpFreeSegments(VOID)
{
    for (UINTN i = 0; i < LdrpSegmentPageCount; i++)
    {
        BS->FreePages(LdrpSegmentPages[i].Base,
                      (LdrpSegmentPages[i].End - LdrpSegmentPages[i].Base) / LDR_PAGE_SIZE);
    }
    LdrpSegmentPageCount = 0;
    LdrpProtectedCount = 0;
}

/*
 * Allocates every PT_LOAD segment's pages at exactly p_paddr and loads it: file
 * bytes copied, the rest zeroed. Segments may share a page; each page is allocated
 * once. Image was checked by LdrpCheckElf. On failure frees what it allocated.
 */
static EFI_STATUS
LdrpLoadSegments(const UINT8 *Image)
{
    const LDR_ELF64_HEADER *Header = (const LDR_ELF64_HEADER *)Image;
    const LDR_ELF64_PROGRAM_HEADER *Program =
        (const LDR_ELF64_PROGRAM_HEADER *)(Image + Header->ProgramHeaderOffset);
    const LDR_ELF64_PROGRAM_HEADER *Sorted[LDR_MAX_SEGMENTS];
    UINTN Count = 0;
    UINT64 AllocatedEnd = 0;

    for (UINTN i = 0; i < Header->ProgramHeaderCount; i++)
    {
        const LDR_ELF64_PROGRAM_HEADER *Segment = &Program[i];
        UINTN j;
        if (Segment->Type != ELF_PT_LOAD || Segment->MemorySize == 0)
        {
            continue;
        }
        for (j = Count; j > 0 && Sorted[j - 1]->PhysicalAddress > Segment->PhysicalAddress; j--)
        {
            Sorted[j] = Sorted[j - 1];
        }
        Sorted[j] = Segment;
        Count++;
    }

    for (UINTN i = 0; i < Count; i++)
    {
        const LDR_ELF64_PROGRAM_HEADER *Segment = Sorted[i];
        UINT64 First = Segment->PhysicalAddress & ~(LDR_PAGE_SIZE - 1);
        UINT64 Last = (Segment->PhysicalAddress + Segment->MemorySize + LDR_PAGE_SIZE - 1) &
                      ~(LDR_PAGE_SIZE - 1);
        if (First < AllocatedEnd)
        {
            First = AllocatedEnd; // the page it shares with the previous segment
        }
        if (First < Last)
        {
            EFI_PHYSICAL_ADDRESS Address = First;
            EFI_STATUS Status = BS->AllocatePages(AllocateAddress, EfiLoaderData,
                                                  (Last - First) / LDR_PAGE_SIZE, &Address);
            if (EFI_ERROR(Status))
            {
                LdrpPrint(LDR_ERROR_PREFIX L"%s: cannot allocate [%lx, %lx) for the segment at "
                                           L"p_paddr %lx: %r\n",
                          LdrpKernelPath, First, Last, Segment->PhysicalAddress, Status);
                LdrpDescribeRange(First, Last);
                LdrpFreeSegments();
                return EFI_LOAD_ERROR;
            }
            LdrpSegmentPages[LdrpSegmentPageCount].Base = First;
            LdrpSegmentPages[LdrpSegmentPageCount].End = Last;
            LdrpSegmentPageCount++;
            LdrpAddProtected(First, Last);
            AllocatedEnd = Last;
        }
        CopyMem((VOID *)(UINTN)Segment->PhysicalAddress, (VOID *)(Image + Segment->Offset),
                Segment->FileSize);
        SetMem((VOID *)(UINTN)(Segment->PhysicalAddress + Segment->FileSize),
               Segment->MemorySize - Segment->FileSize, 0);
        LdrpPrint(L"Spindle EFI loader: segment [%lx, %lx) loaded (%ld file bytes)\n",
                  Segment->PhysicalAddress, Segment->PhysicalAddress + Segment->MemorySize,
                  Segment->FileSize);
    }
    return EFI_SUCCESS;
}

/* ---- ACPI ------------------------------------------------------------------------------- */

static BOOLEAN
LdrpChecksumIsZero(const UINT8 *Bytes, UINTN Length)
{
    UINT8 Sum = 0;
    for (UINTN i = 0; i < Length; i++)
    {
        Sum = (UINT8)(Sum + Bytes[i]);
    }
    return Sum == 0;
}

/* Finds the RSDP in the configuration table: the ACPI 2.0 one if valid, else ACPI 1.0. */
static VOID
LdrpFindRsdp(VOID)
{
    const UINT8 *Old = NULL;

    for (UINTN i = 0; i < ST->NumberOfTableEntries; i++)
    {
        EFI_CONFIGURATION_TABLE *Table = &ST->ConfigurationTable[i];
        const UINT8 *Rsdp = Table->VendorTable;
        BOOLEAN New = CompareGuid(&Table->VendorGuid, &LdrpAcpi20Guid) == 0;
        if (!New && CompareGuid(&Table->VendorGuid, &LdrpAcpi10Guid) != 0)
        {
            continue;
        }
        if (Rsdp == NULL || CompareMem(Rsdp, "RSD PTR ", 8) != 0 ||
            !LdrpChecksumIsZero(Rsdp, ACPI_RSDP_V1_LENGTH))
        {
            LdrpPrint(L"Spindle EFI loader: ignoring an invalid ACPI %a RSDP at %lx\n",
                      New ? "2.0" : "1.0", (UINT64)(UINTN)Rsdp);
            continue;
        }
        if (New)
        {
            UINT32 Length = *(const UINT32 *)(Rsdp + 20);
            if (Rsdp[15] >= 2 && Length >= ACPI_RSDP_V2_LENGTH && LdrpChecksumIsZero(Rsdp, Length))
            {
                CopyMem(LdrpRsdp, (VOID *)Rsdp, ACPI_RSDP_V2_LENGTH);
                LdrpRsdpLength = ACPI_RSDP_V2_LENGTH;
                LdrpPrint(L"Spindle EFI loader: ACPI 2.0 RSDP at %lx\n", (UINT64)(UINTN)Rsdp);
                return;
            }
            LdrpPrint(L"Spindle EFI loader: ignoring an invalid ACPI 2.0 RSDP at %lx\n",
                      (UINT64)(UINTN)Rsdp);
        }
        else if (Old == NULL)
        {
            Old = Rsdp;
        }
    }
    if (Old != NULL)
    {
        CopyMem(LdrpRsdp, (VOID *)Old, ACPI_RSDP_V1_LENGTH);
        LdrpRsdpLength = ACPI_RSDP_V1_LENGTH;
        LdrpPrint(L"Spindle EFI loader: ACPI 1.0 RSDP at %lx\n", (UINT64)(UINTN)Old);
        return;
    }
    LdrpPrint(L"Spindle EFI loader: warning: the firmware gives no ACPI RSDP\n");
}

/* ---- the information block -------------------------------------------------------------- */

typedef struct _LDR_HANDOVER
{
    EFI_MEMORY_DESCRIPTOR *Map; // pool buffer for GetMemoryMap
    UINTN MapCapacity;          // bytes
    UINTN MapSize;              // bytes, of the final map
    UINTN DescriptorSize;
    UINT32 DescriptorVersion;
    UINT8 *Info; // pages below 4 GiB
    UINTN InfoPages;
    UINTN MmapCapacity; // multiboot2 memory map entries the block has room for
} LDR_HANDOVER;

static UINTN
LdrpInfoSize(UINTN MapCapacity, UINTN MmapCapacity)
{
    UINTN Length = 0;
    while (LdrpCommandLine[Length] != 0)
    {
        Length++;
    }
    return 8 +                                              // total_size, reserved
           LDR_ALIGN8(sizeof(MB2_TAG) + Length + 1) +       // command line
           LDR_ALIGN8(sizeof(MB2_TAG) + sizeof(LDR_NAME)) + // boot loader name
           LDR_ALIGN8(sizeof(MB2_TAG) + 8 + MmapCapacity * sizeof(MB2_MMAP_ENTRY)) +
           LDR_ALIGN8(sizeof(MB2_TAG) + ACPI_RSDP_V2_LENGTH) + // RSDP copy
           LDR_ALIGN8(sizeof(MB2_TAG) + 8 + MapCapacity) +     // EFI memory map
           sizeof(MB2_TAG);                                    // end
}

static VOID
LdrpFreeHandover(LDR_HANDOVER *Handover)
{
    if (Handover->Map != NULL)
    {
        BS->FreePool(Handover->Map);
        Handover->Map = NULL;
    }
    if (Handover->Info != NULL)
    {
        BS->FreePages((EFI_PHYSICAL_ADDRESS)(UINTN)Handover->Info, Handover->InfoPages);
        Handover->Info = NULL;
        LdrpProtectedCount--; // the information block is always the last protected range
    }
}

/*
 * Reserves, before the final GetMemoryMap, everything the handover writes into:
 * the map buffer (the current map plus LDR_MAP_SLACK descriptors) and the
 * information block sized for it (below 4 GiB, protected). Memory allocation
 * services only, so it may run between ExitBootServices attempts.
 */
static EFI_STATUS
LdrpAllocateHandover(LDR_HANDOVER *Handover, UINTN AtLeast)
{
    UINTN Size = 0;
    UINTN Key;
    UINT32 Version;
    EFI_PHYSICAL_ADDRESS Address = LDR_BELOW_4G;
    EFI_STATUS Status = BS->GetMemoryMap(&Size, NULL, &Key, &Handover->DescriptorSize, &Version);

    if (Status != EFI_BUFFER_TOO_SMALL || Handover->DescriptorSize < sizeof(EFI_MEMORY_DESCRIPTOR))
    {
        return EFI_ERROR(Status) ? Status : EFI_DEVICE_ERROR;
    }
    if (Size < AtLeast)
    {
        Size = AtLeast;
    }
    /* Room for the descriptors these two allocations and later changes add. */
    Handover->MapCapacity = Size + LDR_MAP_SLACK * Handover->DescriptorSize;
    Status = BS->AllocatePool(EfiLoaderData, Handover->MapCapacity, (VOID **)&Handover->Map);
    if (EFI_ERROR(Status))
    {
        Handover->Map = NULL;
        return Status;
    }
    /* A protected range splits at most one descriptor into three pieces at each end. */
    Handover->MmapCapacity =
        Handover->MapCapacity / Handover->DescriptorSize + (UINTN)2 * LDR_MAX_PROTECTED;
    Handover->InfoPages = LDR_PAGES(LdrpInfoSize(Handover->MapCapacity, Handover->MmapCapacity));
    Status = BS->AllocatePages(AllocateMaxAddress, EfiLoaderData, Handover->InfoPages, &Address);
    if (EFI_ERROR(Status))
    {
        BS->FreePool(Handover->Map);
        Handover->Map = NULL;
        return Status;
    }
    Handover->Info = (UINT8 *)(UINTN)Address;
    LdrpAddProtected(Address, Address + Handover->InfoPages * LDR_PAGE_SIZE);
    return EFI_SUCCESS;
}

static UINT32
LdrpMultiboot2Type(UINT32 EfiType)
{
    switch (EfiType)
    {
        case EfiLoaderCode:
        case EfiLoaderData:
        case EfiBootServicesCode:
        case EfiBootServicesData:
        case EfiConventionalMemory:
            return MB2_MEMORY_AVAILABLE;
        case EfiACPIReclaimMemory:
            return MB2_MEMORY_ACPI;
        case EfiACPIMemoryNVS:
            return MB2_MEMORY_NVS;
        case EfiUnusableMemory:
            return MB2_MEMORY_BAD;
        default:
            return MB2_MEMORY_RESERVED;
    }
}

static UINTN
LdrpEmit(MB2_MMAP_ENTRY *Entries, UINTN Count, UINT64 Base, UINT64 End, UINT32 Type)
{
    if (End > Base)
    {
        Entries[Count].Base = Base;
        Entries[Count].Length = End - Base;
        Entries[Count].Type = Type;
        Entries[Count].Reserved = 0;
        Count++;
    }
    return Count;
}

/*
 * Converts the final EFI map into multiboot2 entries: available memory minus the
 * protected ranges (reported reserved), sorted by address, neighbours of one
 * type merged. Writes no more than Handover->MmapCapacity entries (see
 * LdrpAllocateHandover). Runs after ExitBootServices: no firmware calls.
 */
static UINTN
LdrpConvertMemoryMap(const LDR_HANDOVER *Handover, MB2_MMAP_ENTRY *Entries)
{
    UINTN Count = 0;
    UINTN Merged = 0;

    for (UINTN Offset = 0; Offset + Handover->DescriptorSize <= Handover->MapSize;
         Offset += Handover->DescriptorSize)
    {
        const EFI_MEMORY_DESCRIPTOR *d =
            (const EFI_MEMORY_DESCRIPTOR *)((const UINT8 *)Handover->Map + Offset);
        UINT64 Base = d->PhysicalStart;
        UINT64 End = Base + d->NumberOfPages * LDR_PAGE_SIZE;
        UINT32 Type = LdrpMultiboot2Type(d->Type);
        UINT64 Cursor = Base;

        if (Type != MB2_MEMORY_AVAILABLE)
        {
            Count = LdrpEmit(Entries, Count, Base, End, Type);
            continue;
        }
        for (UINTN i = 0; i < LdrpProtectedCount; i++) // sorted by Base, disjoint
        {
            UINT64 HoleStart = LdrpProtected[i].Base;
            UINT64 HoleEnd = LdrpProtected[i].End;
            if (HoleEnd <= Cursor || HoleStart >= End)
            {
                continue;
            }
            Count = LdrpEmit(Entries, Count, Cursor, HoleStart, MB2_MEMORY_AVAILABLE);
            Cursor = HoleStart > Cursor ? HoleStart : Cursor;
            Count = LdrpEmit(Entries, Count, Cursor, HoleEnd < End ? HoleEnd : End,
                             MB2_MEMORY_RESERVED);
            Cursor = HoleEnd < End ? HoleEnd : End;
        }
        Count = LdrpEmit(Entries, Count, Cursor, End, MB2_MEMORY_AVAILABLE);
    }

    for (UINTN i = 1; i < Count; i++) // insertion sort: a few hundred entries at most
    {
        MB2_MMAP_ENTRY Entry = Entries[i];
        UINTN j;
        for (j = i; j > 0 && Entries[j - 1].Base > Entry.Base; j--)
        {
            Entries[j] = Entries[j - 1];
        }
        Entries[j] = Entry;
    }
    for (UINTN i = 0; i < Count; i++)
    {
        if (Merged > 0 && Entries[Merged - 1].Type == Entries[i].Type &&
            Entries[Merged - 1].Base + Entries[Merged - 1].Length == Entries[i].Base)
        {
            Entries[Merged - 1].Length += Entries[i].Length;
        }
        else
        {
            Entries[Merged++] = Entries[i];
        }
    }
    return Merged;
}

static UINT8 *
LdrpTag(UINT8 *Cursor, UINT32 Type, const VOID *Data, UINTN Length)
{
    MB2_TAG *Tag = (MB2_TAG *)Cursor;
    Tag->Type = Type;
    Tag->Size = (UINT32)(sizeof(*Tag) + Length);
    CopyMem(Tag + 1, (VOID *)Data, Length);
    return Cursor + LDR_ALIGN8(Tag->Size);
}

/* Writes the multiboot2 information block; returns its size. After ExitBootServices. */
static UINTN
LdrpBuildInfo(const LDR_HANDOVER *Handover, UINTN *RangeCount)
{
    UINT8 *Info = Handover->Info;
    UINT8 *Cursor = Info + 8;
    UINTN Length = 0;
    MB2_TAG *Tag;
    UINT32 *Header;

    while (LdrpCommandLine[Length] != 0)
    {
        Length++;
    }
    Cursor = LdrpTag(Cursor, MB2_TAG_CMDLINE, LdrpCommandLine, Length + 1);
    Cursor = LdrpTag(Cursor, MB2_TAG_LOADER, LDR_NAME, sizeof(LDR_NAME));

    /* Type 6: entry_size, entry_version, then the entries. */
    Tag = (MB2_TAG *)Cursor;
    Header = (UINT32 *)(Tag + 1);
    Header[0] = sizeof(MB2_MMAP_ENTRY);
    Header[1] = 0;
    *RangeCount = LdrpConvertMemoryMap(Handover, (MB2_MMAP_ENTRY *)(Header + 2));
    Tag->Type = MB2_TAG_MMAP;
    Tag->Size = (UINT32)(sizeof(*Tag) + 8 + *RangeCount * sizeof(MB2_MMAP_ENTRY));
    Cursor += LDR_ALIGN8(Tag->Size);

    if (LdrpRsdpLength != 0)
    {
        Cursor = LdrpTag(
            Cursor, LdrpRsdpLength == ACPI_RSDP_V2_LENGTH ? MB2_TAG_ACPI_NEW : MB2_TAG_ACPI_OLD,
            LdrpRsdp, LdrpRsdpLength);
    }

    /* Type 17: descr_size, descr_vers, then the EFI map as the firmware gave it. */
    Tag = (MB2_TAG *)Cursor;
    Header = (UINT32 *)(Tag + 1);
    Header[0] = (UINT32)Handover->DescriptorSize;
    Header[1] = Handover->DescriptorVersion;
    CopyMem(Header + 2, Handover->Map, Handover->MapSize);
    Tag->Type = MB2_TAG_EFI_MMAP;
    Tag->Size = (UINT32)(sizeof(*Tag) + 8 + Handover->MapSize);
    Cursor += LDR_ALIGN8(Tag->Size);

    Cursor = LdrpTag(Cursor, MB2_TAG_END, NULL, 0);
    ((UINT32 *)Info)[0] = (UINT32)(Cursor - Info);
    ((UINT32 *)Info)[1] = 0;
    return (UINTN)(Cursor - Info);
}

/*
 * GetMemoryMap + ExitBootServices, again while the firmware says the map changed
 * (EFI_INVALID_PARAMETER: the key is stale). Nothing is allocated between the
 * final GetMemoryMap and ExitBootServices. After the first failed attempt only
 * memory allocation services may be used (UEFI 2.10 §7.4), so nothing is printed.
 * Returns the number of the attempt that succeeded, or 0.
 */
static UINTN
LdrpExitBootServices(EFI_HANDLE ImageHandle, LDR_HANDOVER *Handover, BOOLEAN StaleKeyTest,
                     EFI_STATUS *Failure)
{
    for (UINTN Attempt = 1; Attempt <= LDR_EBS_ATTEMPTS; Attempt++)
    {
        UINTN Key;
        EFI_STATUS Status;

        Handover->MapSize = Handover->MapCapacity;
        Status = BS->GetMemoryMap(&Handover->MapSize, Handover->Map, &Key,
                                  &Handover->DescriptorSize, &Handover->DescriptorVersion);
        if (Status == EFI_BUFFER_TOO_SMALL)
        {
            /* The map outgrew the slack: size both buffers again and retry. */
            UINTN Needed = Handover->MapSize;
            LdrpFreeHandover(Handover);
            Status = LdrpAllocateHandover(Handover, Needed);
            if (EFI_ERROR(Status))
            {
                *Failure = Status;
                return 0;
            }
            continue;
        }
        if (EFI_ERROR(Status))
        {
            *Failure = Status;
            return 0;
        }
        if (StaleKeyTest && Attempt == 1)
        {
            /* Test only: change the map after GetMemoryMap, so that Key is stale. */
            EFI_PHYSICAL_ADDRESS Page;
            BS->AllocatePages(AllocateAnyPages, EfiLoaderData, 1, &Page);
        }
        Status = BS->ExitBootServices(ImageHandle, Key);
        if (!EFI_ERROR(Status))
        {
            return Attempt;
        }
        if (Status != EFI_INVALID_PARAMETER)
        {
            *Failure = Status;
            return 0;
        }
    }
    *Failure = EFI_INVALID_PARAMETER;
    return 0;
}

/* ---- entry ------------------------------------------------------------------------------ */

static EFI_STATUS
LdrpOpenVolume(EFI_HANDLE ImageHandle, EFI_FILE_HANDLE *Root)
{
    EFI_LOADED_IMAGE_PROTOCOL *Image;
    EFI_SIMPLE_FILE_SYSTEM_PROTOCOL *FileSystem;
    EFI_STATUS Status =
        BS->HandleProtocol(ImageHandle, &gEfiLoadedImageProtocolGuid, (VOID **)&Image);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"no loaded image protocol: %r\n", Status);
        return Status;
    }
    Status = BS->HandleProtocol(Image->DeviceHandle, &gEfiSimpleFileSystemProtocolGuid,
                                (VOID **)&FileSystem);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"the device this loader was started from has no file "
                                   L"system: %r\n",
                  Status);
        return Status;
    }
    Status = FileSystem->OpenVolume(FileSystem, Root);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"cannot open the boot volume: %r\n", Status);
    }
    return Status;
}

/* Loads the kernel file's segments; prints and returns an error for a missing or bad file. */
static EFI_STATUS
LdrpLoadKernel(EFI_FILE_HANDLE Root)
{
    UINT8 *Image;
    UINTN Size;
    const CHAR16 *Problem;
    EFI_STATUS Status = LdrpReadFile(Root, LdrpKernelPath, LDR_MAX_KERNEL_SIZE, &Image, &Size);

    if (Status == EFI_NOT_FOUND)
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: not found on the boot volume\n", LdrpKernelPath);
        return Status;
    }
    if (EFI_ERROR(Status))
    {
        return Status;
    }
    Problem = LdrpCheckElf(Image, Size);
    if (Problem != NULL)
    {
        LdrpPrint(LDR_ERROR_PREFIX L"%s: malformed kernel (%ld bytes): %s\n", LdrpKernelPath,
                  (UINT64)Size, Problem);
        BS->FreePool(Image);
        return EFI_LOAD_ERROR;
    }
    LdrpPrint(L"Spindle EFI loader: %s: %ld bytes, entry %lx\n", LdrpKernelPath, (UINT64)Size,
              LdrpEntryPhysical);
    Status = LdrpLoadSegments(Image);
    BS->FreePool(Image);
    return Status;
}

static VOID
LdrpSortProtected(VOID)
{
    for (UINTN i = 1; i < LdrpProtectedCount; i++)
    {
        LDR_RANGE Range = LdrpProtected[i];
        UINTN j;
        for (j = i; j > 0 && LdrpProtected[j - 1].Base > Range.Base; j--)
        {
            LdrpProtected[j] = LdrpProtected[j - 1];
        }
        LdrpProtected[j] = Range;
    }
}

/*
 * The UEFI entry (through gnu-efi's crt0, which relocates the image and calls this
 * with the System V ABI). Returns only on failure, with EFI_LOAD_ERROR (or the
 * firmware's own error) after printing why; on success enters the kernel.
 */
EFI_STATUS
efi_main(EFI_HANDLE ImageHandle, EFI_SYSTEM_TABLE *SystemTable)
{
    EFI_FILE_HANDLE Root;
    EFI_PHYSICAL_ADDRESS Trampoline = LDR_BELOW_4G;
    UINTN TrampolineSize = (UINTN)(LdrEnterKernel32End - LdrEnterKernel32Start);
    LDR_HANDOVER Handover = {0};
    BOOLEAN StaleKeyTest;
    EFI_STATUS Status;
    EFI_STATUS Failure = EFI_SUCCESS;
    UINTN Attempt;
    UINTN InfoSize;
    UINTN RangeCount;

    InitializeLib(ImageHandle, SystemTable);
    LdrpInitializeOutput();
    LdrpPrint(L"\nSpindle EFI loader: firmware %s rev %x, UEFI %d.%d; console %a\n",
              ST->FirmwareVendor, ST->FirmwareRevision, ST->Hdr.Revision >> 16,
              (ST->Hdr.Revision & 0xffff) / 10,
              LdrpConOutReachesUart  ? "includes the serial port"
              : LdrpSerialIo != NULL ? "+ Serial I/O protocol"
              : LdrpCom1Present      ? "+ COM1"
                                     : "only (no serial port found)");

    Status = LdrpOpenVolume(ImageHandle, &Root);
    if (EFI_ERROR(Status))
    {
        return EFI_LOAD_ERROR;
    }
    Status = LdrpLoadKernel(Root);
    if (!EFI_ERROR(Status))
    {
        Status = LdrpReadCommandLine(Root);
    }
    StaleKeyTest = LdrpFileExists(Root, LdrpStaleKeyPath);
    Root->Close(Root);
    if (EFI_ERROR(Status))
    {
        LdrpFreeSegments();
        return EFI_LOAD_ERROR;
    }
    LdrpPrint(L"Spindle EFI loader: command line \"%a\"\n", LdrpCommandLine);
    LdrpFindRsdp();

    Status = BS->AllocatePages(AllocateMaxAddress, EfiLoaderCode, LDR_PAGES(TrampolineSize),
                               &Trampoline);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"no page below 4 GiB for the mode switch: %r\n", Status);
        LdrpFreeSegments();
        return EFI_LOAD_ERROR;
    }
    CopyMem((VOID *)(UINTN)Trampoline, (VOID *)LdrEnterKernel32Start, TrampolineSize);
    LdrpAddProtected(Trampoline, Trampoline + LDR_PAGES(TrampolineSize) * LDR_PAGE_SIZE);

    Status = LdrpAllocateHandover(&Handover, 0);
    if (EFI_ERROR(Status))
    {
        LdrpPrint(LDR_ERROR_PREFIX L"no memory below 4 GiB for the boot information: %r\n", Status);
        BS->FreePages(Trampoline, LDR_PAGES(TrampolineSize));
        LdrpFreeSegments();
        return EFI_LOAD_ERROR;
    }
    LdrpPrint(L"Spindle EFI loader: information block at %lx (%ld pages), mode switch at %lx%a\n",
              (UINT64)(UINTN)Handover.Info, (UINT64)Handover.InfoPages, Trampoline,
              StaleKeyTest ? "; test: the first ExitBootServices gets a stale key" : "");
    LdrpPrint(L"Spindle EFI loader: exiting boot services\n");

    Attempt = LdrpExitBootServices(ImageHandle, &Handover, StaleKeyTest, &Failure);
    if (Attempt == 0)
    {
        /*
         * Boot services may be partly shut down: only COM1 can still say why. The
         * allocations are not returned (the firmware may no longer take them).
         */
        LdrpLatePrint("Spindle EFI loader: error: ExitBootServices failed, status ");
        LdrpLatePrintNumber(Failure, 16);
        LdrpLatePrint("\r\n");
        return EFI_LOAD_ERROR;
    }

    /* No firmware from here on: the block is built from the final map. */
    LdrpSortProtected();
    InfoSize = LdrpBuildInfo(&Handover, &RangeCount);
    LdrpLatePrint("Spindle EFI loader: boot services exited on attempt ");
    LdrpLatePrintNumber(Attempt, 10);
    LdrpLatePrint("; information ");
    LdrpLatePrintNumber(InfoSize, 10);
    LdrpLatePrint(" bytes, ");
    LdrpLatePrintNumber(RangeCount, 10);
    LdrpLatePrint(" memory ranges; entering the kernel at ");
    LdrpLatePrintNumber(LdrpEntryPhysical, 16);
    LdrpLatePrint(" in 32-bit protected mode\r\n");

    ((LDR_ENTER_KERNEL32)(UINTN)Trampoline)((UINT32)(UINTN)Handover.Info,
                                            (UINT32)LdrpEntryPhysical);
    return EFI_LOAD_ERROR; // not reached: the trampoline never returns
}
