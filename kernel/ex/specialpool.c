/* SPDX-License-Identifier: MIT */
/*
 * Special pool, after Driver Verifier's: with `pool=special` on the kernel
 * command line every ExAllocatePoolWithTag gets pages of its own in the
 * system region, the block placed at the end of the last page (as far as its
 * 16-byte alignment allows) and an unmapped guard page right after it. A read
 * or write past the end faults on the spot, and the page-fault handler
 * reports DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION (0xD6) with the address
 * and the faulting instruction. A header just below the block is checked at
 * free (BAD_POOL_HEADER when an underrun overwrote it). As in Windows, only
 * blocks that fit in one page with their header come from special pool
 * (larger ones keep the ordinary pool's page alignment), and when the system
 * region runs out, allocations fall back to the ordinary pool.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "lib/lib.h"

#define SPECIAL_POOL_MAGIC 0x6c637053u // "Spcl"
#define SPECIAL_PAGE_MAGIC 0x65676150u // "Page"
#define SPECIAL_ALIGNMENT  16

/* At the start of a special-pool page: where its block starts. */
typedef struct _SPECIAL_POOL_PAGE
{
    ULONG Magic;
    ULONG DataOffset;
    ULONG64 Reserved;
} SPECIAL_POOL_PAGE;

typedef struct _SPECIAL_POOL_HEADER
{
    ULONG Magic;
    ULONG Tag;
    ULONG64 Size; // bytes requested
    ULONG Pages;  // mapped pages, the guard page not included
    ULONG Nx;
    ULONG64 Reserved;
} SPECIAL_POOL_HEADER;
_Static_assert(sizeof(SPECIAL_POOL_HEADER) % SPECIAL_ALIGNMENT == 0, "keeps the block aligned");

/* TRUE with pool=special; set once at start-up, read by ExAllocatePoolWithTag. */
BOOLEAN ExpSpecialPoolEnabled;

/* Reads pool= on the command line. From ExpInitializePool, boot processor, once. */
VOID
ExpInitializeSpecialPool(VOID)
{
    size_t Length;
    const char *Value = cmdline_get(KiBootInfo.CommandLine, "pool", &Length);

    if (Value == NULL)
    {
        return;
    }
    if (Length == 7 && strncmp(Value, "special", 7) == 0)
    {
        ExpSpecialPoolEnabled = TRUE;
        DbgPrint("Spindle: special pool: every allocation ends at an unmapped page\n");
        return;
    }
    DbgPrint("Spindle: pool=%.*s is not a pool mode (pool=special is); ordinary pool\n",
             (int)Length, Value);
}

static SIZE_T
ExpSpecialRounded(SIZE_T NumberOfBytes)
{
    SIZE_T Size = NumberOfBytes == 0 ? 1 : NumberOfBytes;
    return (Size + SPECIAL_ALIGNMENT - 1) & ~(SIZE_T)(SPECIAL_ALIGNMENT - 1);
}

/*
 * A special-pool block of NumberOfBytes (no-execute when Nx) charged to Tag;
 * NULL when it is too large for special pool or memory or addresses run out
 * (the caller then uses the ordinary pool). IRQL <= DISPATCH_LEVEL.
 */
PVOID
ExpAllocateSpecialPool(BOOLEAN Nx, SIZE_T NumberOfBytes, ULONG Tag)
{
    SIZE_T Rounded;
    ULONG Pages;
    PUCHAR Base;
    PUCHAR Data;
    SPECIAL_POOL_HEADER *Header;

    if (NumberOfBytes > KI_PAGE_SIZE - sizeof(SPECIAL_POOL_HEADER) - sizeof(SPECIAL_POOL_PAGE))
    {
        return NULL;
    }
    Rounded = ExpSpecialRounded(NumberOfBytes);
    Pages = 1;
    Base = MmAllocateSystemPages(
        Pages, 0, 1, Nx ? MM_READ | MM_WRITE : MM_READ | MM_WRITE | MM_EXECUTE, MM_SYSTEM_SPECIAL);
    if (Base == NULL)
    {
        return NULL;
    }
    Data = Base + (SIZE_T)Pages * KI_PAGE_SIZE - Rounded;
    ((SPECIAL_POOL_PAGE *)Base)->Magic = SPECIAL_PAGE_MAGIC;
    ((SPECIAL_POOL_PAGE *)Base)->DataOffset = (ULONG)(Data - Base);
    Header = (SPECIAL_POOL_HEADER *)Data - 1;
    Header->Magic = SPECIAL_POOL_MAGIC;
    Header->Tag = Tag;
    Header->Size = NumberOfBytes;
    Header->Pages = Pages;
    Header->Nx = Nx;
    ExpChargePoolTag(Tag, 1, (LONG64)NumberOfBytes);
    return Data;
}

/*
 * Frees a block ExpAllocateSpecialPool returned (the caller saw
 * MmQuerySystemPage say MM_SYSTEM_SPECIAL); Tag must match unless 0.
 * IRQL <= DISPATCH_LEVEL, interrupts on.
 */
VOID
ExpFreeSpecialPool(PVOID P, ULONG Tag)
{
    SPECIAL_POOL_HEADER *Header = (SPECIAL_POOL_HEADER *)P - 1;
    SPECIAL_POOL_PAGE *Page = (SPECIAL_POOL_PAGE *)((ULONG_PTR)P & ~(KI_PAGE_SIZE - 1));
    SIZE_T Rounded;
    PUCHAR Base;

    /* Not the start of a block (BAD_POOL_CALLER 0x46, as the ordinary pool says). */
    if (Page->Magic != SPECIAL_PAGE_MAGIC || (ULONG_PTR)P != (ULONG_PTR)Page + Page->DataOffset)
    {
        KeBugCheckEx(BAD_POOL_CALLER, 0x46, (ULONG_PTR)P, 0, 0);
    }
    if (Header->Magic != SPECIAL_POOL_MAGIC)
    {
        /* An underrun (or a pointer into the middle of a block) overwrote it. */
        KeBugCheckEx(BAD_POOL_HEADER, 0x3, (ULONG_PTR)Header, Header->Magic, (ULONG_PTR)P);
    }
    if (Tag != 0 && Header->Tag != Tag)
    {
        KeBugCheckEx(BAD_POOL_CALLER, 0x0a, (ULONG_PTR)P, Header->Tag, Tag);
    }
    Rounded = ExpSpecialRounded(Header->Size);
    Base = (PUCHAR)P + Rounded - (SIZE_T)Header->Pages * KI_PAGE_SIZE;
    if ((ULONG64)Base % KI_PAGE_SIZE != 0)
    {
        KeBugCheckEx(BAD_POOL_HEADER, 0x3, (ULONG_PTR)Header, Header->Magic, (ULONG_PTR)P);
    }
#if DBG
    KiVerifierForgetRange(P, Header->Size); // a lock inside the block ends its identity
#endif
    ExpChargePoolTag(Header->Tag, -1, -(LONG64)Header->Size);
    Header->Magic = 0;
    MmFreeSystemPages(Base, Header->Pages, 0, 1);
}
