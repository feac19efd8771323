/* SPDX-License-Identifier: MIT */
/*
 * Reads the multiboot2 information the loader handed over (GRUB, or Spindle's
 * own EFI loader, which writes the same format) into KiBootInfo, before
 * anything reuses the low memory it sits in.
 */
#include "kernel/ke/ke.h"

#include "lib/lib.h"

#define MB2_TAG_END      0
#define MB2_TAG_CMDLINE  1
#define MB2_TAG_LOADER   2
#define MB2_TAG_MMAP     6
#define MB2_TAG_EFI64    12
#define MB2_TAG_ACPI_OLD 14
#define MB2_TAG_ACPI_NEW 15
#define MB2_TAG_EFI_MMAP 17
#define MB2_TAG_EFI64_IH 20

#define MB2_MEMORY_AVAILABLE 1

/* Marks a loader name that Spindle's EFI loader writes (tag 2, boot loader name). */
#define SPINDLE_EFI_LOADER_NAME "Spindle EFI loader"

struct mb2_tag
{
    uint32_t type;
    uint32_t size;
};

struct mb2_mmap_entry
{
    uint64_t base;
    uint64_t length;
    uint32_t type;
    uint32_t reserved;
};

KI_BOOT_INFO KiBootInfo;

static VOID
KiAddMemoryRange(ULONG64 Base, ULONG64 Length)
{
    if (KiBootInfo.MemoryRangeCount == KI_MAX_MEMORY_RANGES)
    {
        DbgPrint("Spindle: more than %d usable memory ranges; ignoring [%#llx, +%#llx)\n",
                 KI_MAX_MEMORY_RANGES, Base, Length);
        return;
    }
    KiBootInfo.MemoryRanges[KiBootInfo.MemoryRangeCount].Base = Base;
    KiBootInfo.MemoryRanges[KiBootInfo.MemoryRangeCount].Length = Length;
    KiBootInfo.MemoryRangeCount++;
}

static VOID
KiParseMemoryMap(const struct mb2_tag *Tag)
{
    const uint8_t *Cursor = (const uint8_t *)(Tag + 1);
    uint32_t EntrySize = *(const uint32_t *)Cursor;
    const uint8_t *End = (const uint8_t *)Tag + Tag->size;

    if (EntrySize < sizeof(struct mb2_mmap_entry))
    {
        DbgPrint("Spindle: malformed memory map (entry size %u)\n", EntrySize);
        return;
    }
    for (Cursor += 8; Cursor + EntrySize <= End; Cursor += EntrySize)
    {
        const struct mb2_mmap_entry *Entry = (const struct mb2_mmap_entry *)Cursor;
        if (Entry->type == MB2_MEMORY_AVAILABLE && Entry->length != 0)
        {
            KiAddMemoryRange(Entry->base, Entry->length);
        }
    }
}

INIT_CODE VOID
KiParseBootInfo(ULONG64 InfoPhysical)
{
    const uint8_t *Info = (const uint8_t *)InfoPhysical; // identity-mapped
    uint32_t TotalSize = *(const uint32_t *)Info;
    const uint8_t *End = Info + TotalSize;
    const uint8_t *Cursor = Info + 8;
    BOOLEAN Efi = FALSE;
    BOOLEAN OwnLoader = FALSE;

    while (Cursor + sizeof(struct mb2_tag) <= End)
    {
        const struct mb2_tag *Tag = (const struct mb2_tag *)Cursor;
        if (Tag->type == MB2_TAG_END || Tag->size < sizeof(*Tag))
        {
            break;
        }
        switch (Tag->type)
        {
            case MB2_TAG_CMDLINE:
                strlcpy(KiBootInfo.CommandLine, (const char *)(Tag + 1),
                        sizeof(KiBootInfo.CommandLine));
                break;
            case MB2_TAG_LOADER:
                OwnLoader = strcmp((const char *)(Tag + 1), SPINDLE_EFI_LOADER_NAME) == 0;
                break;
            case MB2_TAG_MMAP:
                KiParseMemoryMap(Tag);
                break;
            case MB2_TAG_ACPI_OLD:
            case MB2_TAG_ACPI_NEW:
                /* Prefer the ACPI 2.0 RSDP (XSDT) when both are given. */
                if (Tag->type == MB2_TAG_ACPI_NEW || !KiBootInfo.RsdpIsXsdt)
                {
                    SIZE_T Length = Tag->size - sizeof(*Tag);
                    if (Length > sizeof(KiBootInfo.Rsdp))
                    {
                        Length = sizeof(KiBootInfo.Rsdp);
                    }
                    memcpy(KiBootInfo.Rsdp, Tag + 1, Length);
                    KiBootInfo.RsdpPhysical = 1; // present; the copy is what we use
                    KiBootInfo.RsdpIsXsdt = Tag->type == MB2_TAG_ACPI_NEW;
                }
                break;
            case MB2_TAG_EFI64:
            case MB2_TAG_EFI_MMAP:
            case MB2_TAG_EFI64_IH:
                Efi = TRUE;
                break;
            default:
                break;
        }
        Cursor += (Tag->size + 7) & ~7U;
    }

    if (OwnLoader)
    {
        KiBootInfo.Loader = "Spindle EFI loader (UEFI)";
    }
    else
    {
        KiBootInfo.Loader = Efi ? "GRUB multiboot2 (UEFI)" : "GRUB multiboot2 (BIOS)";
    }
}
