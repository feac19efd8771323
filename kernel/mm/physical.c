/* SPDX-License-Identifier: MIT */
/*
 * Physical page allocator: a bitmap over the usable RAM below 4 GiB, which the
 * boot page tables identity-map, so a page's physical address is also its
 * virtual address. Safe from any processor at any IRQL (interrupts are held
 * off around the short critical section).
 */
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "lib/lib.h"

#define MM_MAX_PHYSICAL  (4ull << 30)
#define MM_PAGES         (MM_MAX_PHYSICAL / KI_PAGE_SIZE)
#define MM_LOW_LIMIT     0x100000ull // pages below 1 MiB are handed out only on request
#define MM_BITS_PER_WORD 64

extern char __image_start[];
extern char __image_end[];

/* Bit set = page free. Guarded by MmpLock. */
static ULONG64 MmpFreeBitmap[MM_PAGES / MM_BITS_PER_WORD];
static KSPIN_LOCK MmpLock; // taken with interrupts off, at any IRQL
static ULONG64 MmpFreePages;
static ULONG64 MmpHighestPage;
static ULONG64 MmpSearchHint;

static ULONG64
MmpLockAcquire(VOID)
{
    return KiAcquireSpinLockDisableInterrupts(&MmpLock);
}

static VOID
MmpLockRelease(ULONG64 Flags)
{
    KiReleaseSpinLockRestoreInterrupts(&MmpLock, Flags);
}

static BOOLEAN
MmpIsFree(ULONG64 Page)
{
    return (MmpFreeBitmap[Page / MM_BITS_PER_WORD] >> (Page % MM_BITS_PER_WORD)) & 1;
}

static VOID
MmpSetFree(ULONG64 Page, BOOLEAN Free)
{
    ULONG64 Bit = 1ULL << (Page % MM_BITS_PER_WORD);
    if (Free)
    {
        MmpFreeBitmap[Page / MM_BITS_PER_WORD] |= Bit;
    }
    else
    {
        MmpFreeBitmap[Page / MM_BITS_PER_WORD] &= ~Bit;
    }
}

INIT_CODE VOID
MmInitializePhysicalMemory(VOID)
{
    ULONG64 ImageFirst = (ULONG64)__image_start / KI_PAGE_SIZE;
    ULONG64 ImageLast = ((ULONG64)__image_end + KI_PAGE_SIZE - 1) / KI_PAGE_SIZE;

    for (ULONG i = 0; i < KiBootInfo.MemoryRangeCount; i++)
    {
        ULONG64 First = (KiBootInfo.MemoryRanges[i].Base + KI_PAGE_SIZE - 1) / KI_PAGE_SIZE;
        ULONG64 Last =
            (KiBootInfo.MemoryRanges[i].Base + KiBootInfo.MemoryRanges[i].Length) / KI_PAGE_SIZE;
        if (Last > MM_PAGES)
        {
            Last = MM_PAGES;
        }
        for (ULONG64 Page = First; Page < Last; Page++)
        {
            /* Page 0 stays unused so that NULL is never a valid allocation. */
            if (Page == 0 || (Page >= ImageFirst && Page < ImageLast))
            {
                continue;
            }
            MmpSetFree(Page, TRUE);
            MmpFreePages++;
            if (Page > MmpHighestPage)
            {
                MmpHighestPage = Page;
            }
        }
    }
    MmpSearchHint = MM_LOW_LIMIT / KI_PAGE_SIZE;
    DbgPrint("Spindle: %llu KiB of usable memory in %u ranges\n",
             MmpFreePages * KI_PAGE_SIZE / 1024, KiBootInfo.MemoryRangeCount);
}

/* First fit of Count free pages in [First, Limit); returns the first page or 0. */
static ULONG64
MmpFindRun(ULONG64 First, ULONG64 Limit, ULONG Count)
{
    ULONG64 Run = 0;
    for (ULONG64 Page = First; Page < Limit; Page++)
    {
        Run = MmpIsFree(Page) ? Run + 1 : 0;
        if (Run == Count)
        {
            return Page + 1 - Count;
        }
    }
    return 0;
}

static PVOID
MmpAllocate(ULONG64 First, ULONG64 Limit, ULONG Count)
{
    ULONG64 Flags = MmpLockAcquire();
    ULONG64 Found = MmpFindRun(First, Limit, Count);

    if (Found == 0 && First != MM_LOW_LIMIT / KI_PAGE_SIZE && First > 1)
    {
        Found = MmpFindRun(MM_LOW_LIMIT / KI_PAGE_SIZE, Limit, Count);
    }
    if (Found != 0)
    {
        for (ULONG i = 0; i < Count; i++)
        {
            MmpSetFree(Found + i, FALSE);
        }
        MmpFreePages -= Count;
        if (First >= MM_LOW_LIMIT / KI_PAGE_SIZE)
        {
            MmpSearchHint = Found + Count;
        }
    }
    MmpLockRelease(Flags);

    if (Found == 0)
    {
        return NULL;
    }
    memset((PVOID)(Found * KI_PAGE_SIZE), 0, Count * KI_PAGE_SIZE);
    return (PVOID)(Found * KI_PAGE_SIZE);
}

PVOID
MmAllocatePages(ULONG Count)
{
    if (Count == 0)
    {
        return NULL;
    }
    return MmpAllocate(MmpSearchHint, MmpHighestPage + 1, Count);
}

PVOID
MmAllocateLowPage(ULONG64 Below)
{
    return MmpAllocate(1, Below / KI_PAGE_SIZE, 1);
}

VOID
MmFreePages(PVOID Base, ULONG Count)
{
    ULONG64 First = (ULONG64)Base / KI_PAGE_SIZE;
    ULONG64 Flags;

    if ((ULONG64)Base % KI_PAGE_SIZE != 0 || First + Count > MM_PAGES)
    {
        KeBugCheckEx(BAD_POOL_CALLER, 0x46, (ULONG_PTR)Base, Count, 0);
    }
    Flags = MmpLockAcquire();
    for (ULONG i = 0; i < Count; i++)
    {
        if (MmpIsFree(First + i))
        {
            MmpLockRelease(Flags);
            KeBugCheckEx(BAD_POOL_CALLER, 0x7, (ULONG_PTR)Base, Count, i);
        }
        MmpSetFree(First + i, TRUE);
    }
    MmpFreePages += Count;
    if (First < MmpSearchHint && First >= MM_LOW_LIMIT / KI_PAGE_SIZE)
    {
        MmpSearchHint = First;
    }
    MmpLockRelease(Flags);
}

ULONG64
MmQueryFreePages(VOID)
{
    return MmpFreePages + MiQueryDeferredPages();
}
