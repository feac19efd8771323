/* SPDX-License-Identifier: MIT */
/*
 * Nonpaged pool: ExAllocatePoolWithTag / ExFreePoolWithTag with per-tag
 * accounting. Small requests come from power-of-two blocks carved out of
 * pages; a request that does not fit in a 4 KiB block gets whole pages and
 * is page-aligned, as in Windows. Every block starts with a POOL_HEADER that
 * ExFreePool checks, so a double free, a foreign pointer or a wrong tag
 * bug-checks (BAD_POOL_CALLER) instead of corrupting memory.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "lib/lib.h"

#define POOL_MAGIC_ALLOCATED 0x6c6f6f50u // "Pool"
#define POOL_MAGIC_FREE      0x65657246u // "Free"
#define POOL_SMALL_CLASSES   7           // blocks of 64 .. 4096 bytes
#define POOL_SMALLEST_SHIFT  6
#define POOL_CLASS_LARGE     0xffff
#define POOL_MAX_TAGS        256

/* BAD_POOL_CALLER first parameters (Windows' meanings). */
#define BAD_POOL_DOUBLE_FREE  0x07
#define BAD_POOL_ALLOC_IRQL   0x08
#define BAD_POOL_FREE_IRQL    0x09
#define BAD_POOL_WRONG_TAG    0x0a
#define BAD_POOL_INVALID_FREE 0x46

/* What a physical page is to the pool (MmpPageKind). */
#define POOL_PAGE_NONE  0
#define POOL_PAGE_LARGE 1
#define POOL_PAGE_SMALL 2 // + class index

typedef struct _POOL_HEADER
{
    ULONG Magic;
    ULONG Tag;
    ULONG64 Size; // bytes requested
    USHORT Class;
    USHORT Nx;   // 1: from no-execute pages (NonPagedPoolNx), 0: executable (NonPagedPool)
    ULONG Pages; // large allocations: pages including the header page
    struct _POOL_HEADER *Next; // free list link while free
} POOL_HEADER;
_Static_assert(sizeof(POOL_HEADER) == 32, "keeps every block 16-byte aligned");

static KSPIN_LOCK ExpPoolLock;
static POOL_HEADER *ExpFreeBlocks[2][POOL_SMALL_CLASSES]; // [Nx]; guarded by ExpPoolLock
static EXP_POOL_TAG_USAGE ExpTags[POOL_MAX_TAGS];         // guarded by ExpPoolLock
static BOOLEAN ExpTagUsed[POOL_MAX_TAGS];                 // guarded by ExpPoolLock
static UCHAR ExpPageKind[(4ull << 30) / KI_PAGE_SIZE];    // guarded by ExpPoolLock

VOID
ExpInitializePool(VOID)
{
    KeInitializeSpinLock(&ExpPoolLock);
    ExpInitializeSpecialPool(); // pool=special (kernel/ex/specialpool.c)
}

static ULONG
ExpBlockSize(ULONG Class)
{
    return 1u << (Class + POOL_SMALLEST_SHIFT);
}

static EXP_POOL_TAG_USAGE *
ExpFindTag(ULONG Tag)
{
    static BOOLEAN Warned;
    for (ULONG i = 0; i < POOL_MAX_TAGS; i++)
    {
        if (ExpTagUsed[i] && ExpTags[i].Tag == Tag)
        {
            return &ExpTags[i];
        }
    }
    for (ULONG i = 0; i < POOL_MAX_TAGS; i++)
    {
        if (!ExpTagUsed[i])
        {
            ExpTagUsed[i] = TRUE;
            ExpTags[i].Tag = Tag;
            return &ExpTags[i];
        }
    }
    if (!Warned)
    {
        Warned = TRUE;
        DbgPrint("Spindle: more than %d pool tags; per-tag accounting is incomplete\n",
                 POOL_MAX_TAGS);
    }
    return NULL;
}

static VOID
ExpAccount(ULONG Tag, LONG64 Allocations, LONG64 Bytes)
{
    EXP_POOL_TAG_USAGE *Usage = ExpFindTag(Tag);
    if (Usage != NULL)
    {
        Usage->Allocations += Allocations;
        Usage->Bytes += Bytes;
    }
}

/* Adds to Tag's counts in the pool's accounting (special pool's blocks). IRQL <= DISPATCH_LEVEL. */
VOID
ExpChargePoolTag(ULONG Tag, LONG64 Allocations, LONG64 Bytes)
{
    KIRQL OldIrql;

    KeAcquireSpinLock(&ExpPoolLock, &OldIrql);
    ExpAccount(Tag, Allocations, Bytes);
    KeReleaseSpinLock(&ExpPoolLock, OldIrql);
}

/*
 * Refills a class's free list with one page of blocks, no-execute (Nx) or
 * executable; the page keeps that for good. Called with the lock held.
 */
static BOOLEAN
ExpRefill(ULONG Class, USHORT Nx)
{
    ULONG BlockSize = ExpBlockSize(Class);
    PUCHAR Page = MmAllocatePages(1);

    if (Page == NULL)
    {
        return FALSE;
    }
    if (!Nx && !MmProtectRange(Page, KI_PAGE_SIZE, MM_READ | MM_WRITE | MM_EXECUTE))
    {
        MmFreePages(Page, 1);
        return FALSE;
    }
    ExpPageKind[(ULONG64)Page / KI_PAGE_SIZE] = POOL_PAGE_SMALL + Class;
    for (ULONG Offset = 0; Offset + BlockSize <= KI_PAGE_SIZE; Offset += BlockSize)
    {
        POOL_HEADER *Block = (POOL_HEADER *)(Page + Offset);
        Block->Magic = POOL_MAGIC_FREE;
        Block->Class = (USHORT)Class;
        Block->Nx = Nx;
        Block->Next = ExpFreeBlocks[Nx][Class];
        ExpFreeBlocks[Nx][Class] = Block;
    }
    return TRUE;
}

static POOL_HEADER *
ExpAllocateSmall(SIZE_T Total, USHORT Nx)
{
    ULONG Class = 0;
    POOL_HEADER *Block;

    while (ExpBlockSize(Class) < Total)
    {
        Class++;
    }
    if (ExpFreeBlocks[Nx][Class] == NULL && !ExpRefill(Class, Nx))
    {
        return NULL;
    }
    Block = ExpFreeBlocks[Nx][Class];
    ExpFreeBlocks[Nx][Class] = Block->Next;
    return Block;
}

/*
 * Allocates NumberOfBytes of nonpaged pool charged to Tag.
 * IRQL <= DISPATCH_LEVEL, unchanged. Returns NULL when memory is exhausted.
 * Blocks are 16-byte aligned; blocks of a page or more are page-aligned.
 * NonPagedPool is executable (drivers copy code into it, as on Windows);
 * NonPagedPoolNx, or any type with POOL_NX_ALLOCATION, is not.
 */
PVOID
ExAllocatePoolWithTag(POOL_TYPE PoolType, SIZE_T NumberOfBytes, ULONG Tag)
{
    KIRQL OldIrql;
    POOL_HEADER *Header = NULL;
    PUCHAR Data = NULL;
    SIZE_T Total = NumberOfBytes + sizeof(POOL_HEADER);
    USHORT Nx = (PoolType & POOL_NX_ALLOCATION) != 0;

    if (KeGetCurrentIrql() > DISPATCH_LEVEL)
    {
        KeBugCheckEx(BAD_POOL_CALLER, BAD_POOL_ALLOC_IRQL, KeGetCurrentIrql(), PoolType,
                     NumberOfBytes);
    }
    if (NumberOfBytes == 0)
    {
        Total = sizeof(POOL_HEADER) + 1;
    }
    if (ExpSpecialPoolEnabled)
    {
        Data = ExpAllocateSpecialPool(Nx, NumberOfBytes, Tag);
        if (Data != NULL)
        {
            return Data;
        }
    }

    if (Total <= ExpBlockSize(POOL_SMALL_CLASSES - 1))
    {
        KeAcquireSpinLock(&ExpPoolLock, &OldIrql);
        Header = ExpAllocateSmall(Total, Nx);
        if (Header != NULL)
        {
            Data = (PUCHAR)(Header + 1);
            ExpAccount(Tag, 1, (LONG64)NumberOfBytes);
        }
        KeReleaseSpinLock(&ExpPoolLock, OldIrql);
    }
    else if (NumberOfBytes < (1ull << 31))
    {
        ULONG Pages = (ULONG)((NumberOfBytes + KI_PAGE_SIZE - 1) / KI_PAGE_SIZE) + 1;
        PUCHAR Base = MmAllocatePages(Pages);
        if (Base != NULL && !Nx &&
            !MmProtectRange(Base, Pages * KI_PAGE_SIZE, MM_READ | MM_WRITE | MM_EXECUTE))
        {
            MmProtectRange(Base, Pages * KI_PAGE_SIZE, MM_READ | MM_WRITE);
            MmFreePages(Base, Pages);
            Base = NULL;
        }
        if (Base != NULL)
        {
            Data = Base + KI_PAGE_SIZE;
            Header = (POOL_HEADER *)Data - 1;
            Header->Class = POOL_CLASS_LARGE;
            Header->Nx = Nx;
            Header->Pages = Pages;
            KeAcquireSpinLock(&ExpPoolLock, &OldIrql);
            ExpPageKind[(ULONG64)Data / KI_PAGE_SIZE] = POOL_PAGE_LARGE;
            ExpAccount(Tag, 1, (LONG64)NumberOfBytes);
            KeReleaseSpinLock(&ExpPoolLock, OldIrql);
        }
    }
    if (Header == NULL)
    {
        return NULL;
    }
    Header->Magic = POOL_MAGIC_ALLOCATED;
    Header->Tag = Tag;
    Header->Size = NumberOfBytes;
    Header->Next = NULL;
    return Data;
}

/*
 * Finds and checks the header of a block being freed. Returns NULL, with the
 * BAD_POOL_CALLER / BAD_POOL_HEADER code and parameters, on misuse; the caller
 * drops the pool lock before it bug-checks (so a test that catches the bug
 * check leaves the pool usable).
 */
static POOL_HEADER *
ExpCheckFree(PVOID P, ULONG Tag, ULONG_PTR Stop[5])
{
    ULONG64 Address = (ULONG64)P;
    UCHAR Kind;
    POOL_HEADER *Header;

    Stop[0] = BAD_POOL_CALLER;
    if (Address == 0 || Address >= (4ull << 30) || Address % 16 != 0)
    {
        Stop[1] = BAD_POOL_INVALID_FREE, Stop[2] = Address, Stop[3] = 0, Stop[4] = 0;
        return NULL;
    }
    Kind = ExpPageKind[Address / KI_PAGE_SIZE];
    if (Kind == POOL_PAGE_NONE || (Kind == POOL_PAGE_LARGE && Address % KI_PAGE_SIZE != 0) ||
        (Kind >= POOL_PAGE_SMALL &&
         (Address - sizeof(POOL_HEADER)) % ExpBlockSize(Kind - POOL_PAGE_SMALL) != 0))
    {
        Stop[1] = BAD_POOL_INVALID_FREE, Stop[2] = Address, Stop[3] = Kind, Stop[4] = 0;
        return NULL;
    }
    Header = (POOL_HEADER *)P - 1;
    if (Header->Magic == POOL_MAGIC_FREE)
    {
        Stop[1] = BAD_POOL_DOUBLE_FREE, Stop[2] = 0, Stop[3] = Header->Tag, Stop[4] = Address;
        return NULL;
    }
    if (Header->Magic != POOL_MAGIC_ALLOCATED)
    {
        Stop[0] = BAD_POOL_HEADER;
        Stop[1] = 0x3, Stop[2] = (ULONG_PTR)Header, Stop[3] = Header->Magic, Stop[4] = Address;
        return NULL;
    }
    if (Tag != 0 && Header->Tag != Tag)
    {
        Stop[1] = BAD_POOL_WRONG_TAG, Stop[2] = Address, Stop[3] = Header->Tag, Stop[4] = Tag;
        return NULL;
    }
    return Header;
}

/*
 * Frees a block from ExAllocatePoolWithTag; Tag must match unless it is 0.
 * IRQL <= DISPATCH_LEVEL, unchanged.
 */
VOID
ExFreePoolWithTag(PVOID P, ULONG Tag)
{
    KIRQL OldIrql;
    POOL_HEADER *Header;
    ULONG_PTR Stop[5];

    if (KeGetCurrentIrql() > DISPATCH_LEVEL)
    {
        KeBugCheckEx(BAD_POOL_CALLER, BAD_POOL_FREE_IRQL, KeGetCurrentIrql(), 0, (ULONG_PTR)P);
    }
    if (MmQuerySystemPage((ULONG64)P) == MM_SYSTEM_SPECIAL)
    {
        ExpFreeSpecialPool(P, Tag);
        return;
    }
    KeAcquireSpinLock(&ExpPoolLock, &OldIrql);
    Header = ExpCheckFree(P, Tag, Stop);
    if (Header == NULL)
    {
        KeReleaseSpinLock(&ExpPoolLock, OldIrql);
        KeBugCheckEx((ULONG)Stop[0], Stop[1], Stop[2], Stop[3], Stop[4]);
    }
    Header->Magic = POOL_MAGIC_FREE;
    ExpAccount(Header->Tag, -1, -(LONG64)Header->Size);
    if (Header->Class == POOL_CLASS_LARGE)
    {
        ULONG Pages = Header->Pages;
        BOOLEAN Executable = !Header->Nx;
        ExpPageKind[(ULONG64)P / KI_PAGE_SIZE] = POOL_PAGE_NONE;
        KeReleaseSpinLock(&ExpPoolLock, OldIrql);
        if (Executable)
        {
            /* Back to no-execute on every processor before the pages are reused. */
            MmFreeExecutablePages((PUCHAR)P - KI_PAGE_SIZE, Pages);
            return;
        }
        MmFreePages((PUCHAR)P - KI_PAGE_SIZE, Pages);
        return;
    }
    Header->Next = ExpFreeBlocks[Header->Nx][Header->Class];
    ExpFreeBlocks[Header->Nx][Header->Class] = Header;
    KeReleaseSpinLock(&ExpPoolLock, OldIrql);
}

/* Frees a pool block, whatever its tag. IRQL <= DISPATCH_LEVEL, unchanged. */
VOID
ExFreePool(PVOID P)
{
    ExFreePoolWithTag(P, 0);
}

/* As ExAllocatePoolWithTag with the tag 'None'. IRQL <= DISPATCH_LEVEL, unchanged. */
PVOID
ExAllocatePool(POOL_TYPE PoolType, SIZE_T NumberOfBytes)
{
    return ExAllocatePoolWithTag(PoolType, NumberOfBytes, 0x656e6f4e /* 'None' */);
}

/*
 * Copies the per-tag usage (tags with any history) into Usage; returns how
 * many. Blocks that pool-backed lookaside lists keep for reuse are reported
 * as Cached, not as Allocations. IRQL <= DISPATCH_LEVEL.
 */
ULONG
ExpQueryPoolTags(EXP_POOL_TAG_USAGE *Usage, ULONG MaximumCount)
{
    KIRQL OldIrql;
    ULONG Count = 0;

    KeAcquireSpinLock(&ExpPoolLock, &OldIrql);
    for (ULONG i = 0; i < POOL_MAX_TAGS && Count < MaximumCount; i++)
    {
        if (ExpTagUsed[i])
        {
            Usage[Count] = ExpTags[i];
            Usage[Count++].Cached = 0;
        }
    }
    KeReleaseSpinLock(&ExpPoolLock, OldIrql);
    ExpAccountLookasideCache(Usage, Count);
    return Count;
}
