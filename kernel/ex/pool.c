/* SPDX-License-Identifier: MIT */
/*
 * Nonpaged pool: ExAllocatePoolWithTag / ExFreePoolWithTag with per-tag
 * accounting. Small requests come from power-of-two blocks carved out of
 * pages; a request that does not fit in a 4 KiB block gets whole pages and
 * is page-aligned, as in Windows. Every block starts with a POOL_HEADER.
 *
 * Every build checks headers, so a corrupted block is never handed out and
 * the allocator never follows a wild link with its lock held:
 *   - on free: BAD_POOL_CALLER (0xC2) for a double free, a foreign pointer or
 *     a wrong tag; BAD_POOL_HEADER (0x19) when the header itself is damaged;
 *   - on allocate: the free block about to be handed out must carry the free
 *     magic and its own class, and its free-list link must be 0 or another
 *     free block of the class, else 0x19 (the class's free list is then
 *     abandoned, leaking its blocks, so no later allocation can reach the
 *     damage).
 * 0x19's first parameter is the reason: 0x3 a free block's link is not a
 * block of its class (Windows' "free list corrupt"; P2 block, P3 link, P4
 * class), 0x20 a header's magic, class or size is damaged (P2 block, P3 the
 * magic, P4 the address freed or 0), 0x22 a free block's poison was
 * overwritten (checked build; P2 block, P3 first changed byte, P4 class).
 *
 * Checked build (DBG=1) in addition, as Windows' pool tail checking and
 * Driver Verifier do:
 *   - a trailer: every byte from the end of the request to the end of the
 *     block (at least POOL_TRAILER_MINIMUM) holds POOL_TRAILER_BYTE, checked
 *     at free; a write past the end gives 0xC1
 *     SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION with P4 = 0x24, Windows' code
 *     for "bytes after the end of the allocation were overwritten" (P1 the
 *     address freed, P2 the first changed byte, P3 the bytes requested);
 *   - freed blocks are filled with POOL_POISON_BYTE and the fill is checked
 *     when the block is handed out again (0x19/0x22), catching a write
 *     through a stale pointer or an overrun that reached past a free header.
 * Every bug check is raised after the pool lock is dropped.
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

/* BAD_POOL_HEADER first parameters (see above). */
#define BAD_POOL_FREE_LIST_CORRUPT 0x03
#define BAD_POOL_HEADER_CORRUPT    0x20
#define BAD_POOL_POISON_CHANGED    0x22

/* SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION fourth parameter: past the end overwritten. */
#define SPECIAL_POOL_TRAILER_CHANGED 0x24

#if DBG
#define POOL_TRAILER_MINIMUM 16   // bytes of trailer every allocation gets at least
#define POOL_TRAILER_BYTE    0xbd // after each allocation
#define POOL_POISON_BYTE     0xdf // the body of every free block
#else
#define POOL_TRAILER_MINIMUM 0
#endif

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
static UCHAR ExpPageKind[(4ULL << 30) / KI_PAGE_SIZE];    // guarded by ExpPoolLock

VOID
ExpInitializePool(VOID)
{
    KeInitializeSpinLock(&ExpPoolLock);
    ExpInitializeSpecialPool(); // pool=special (kernel/ex/specialpool.c)
}

static ULONG
ExpBlockSize(ULONG Class)
{
    return 1U << (Class + POOL_SMALLEST_SHIFT);
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
        Block->Tag = 0;
        Block->Size = 0;
        Block->Class = (USHORT)Class;
        Block->Nx = Nx;
        Block->Pages = 0;
        Block->Next = ExpFreeBlocks[Nx][Class];
#if DBG
        memset(Block + 1, POOL_POISON_BYTE, BlockSize - sizeof(POOL_HEADER));
#endif
        ExpFreeBlocks[Nx][Class] = Block;
    }
    return TRUE;
}

/* TRUE if Address is the header of a block of Class (a small-pool page of that class). */
static BOOLEAN
ExpIsBlockOfClass(ULONG64 Address, ULONG Class)
{
    return Address < (4ULL << 30) &&
           ExpPageKind[Address / KI_PAGE_SIZE] == POOL_PAGE_SMALL + Class &&
           Address % ExpBlockSize(Class) == 0;
}

/*
 * Checks the free block at the head of Class's list before it is handed out:
 * magic, class, link and (checked build) poison. Returns TRUE if it is sound;
 * else fills Stop with the 0x19 code and parameters. Called with the lock held;
 * reads only the block, whose page is known to be pool.
 */
static BOOLEAN
ExpCheckFreeBlock(POOL_HEADER *Block, ULONG Class, USHORT Nx, ULONG_PTR Stop[5])
{
    Stop[0] = BAD_POOL_HEADER;
    if (Block->Magic != POOL_MAGIC_FREE || Block->Class != Class || Block->Nx != Nx)
    {
        Stop[1] = BAD_POOL_HEADER_CORRUPT, Stop[2] = (ULONG_PTR)Block, Stop[3] = Block->Magic;
        Stop[4] = 0;
        return FALSE;
    }
    if (Block->Next != NULL && !ExpIsBlockOfClass((ULONG64)Block->Next, Class))
    {
        Stop[1] = BAD_POOL_FREE_LIST_CORRUPT, Stop[2] = (ULONG_PTR)Block;
        Stop[3] = (ULONG_PTR)Block->Next, Stop[4] = Class;
        return FALSE;
    }
#if DBG
    {
        const UCHAR *Body = (const UCHAR *)(Block + 1);
        for (ULONG i = 0; i < ExpBlockSize(Class) - sizeof(POOL_HEADER); i++)
        {
            if (Body[i] != POOL_POISON_BYTE)
            {
                Stop[1] = BAD_POOL_POISON_CHANGED, Stop[2] = (ULONG_PTR)Block;
                Stop[3] = (ULONG_PTR)&Body[i], Stop[4] = Class;
                return FALSE;
            }
        }
    }
#endif
    return TRUE;
}

/*
 * Takes a block of the smallest class that holds Total bytes, or NULL with
 * Stop[0] = 0 when memory is exhausted, or NULL with Stop filled when the
 * block at the head of the free list is damaged (the list is then abandoned).
 * Called with the lock held.
 */
static POOL_HEADER *
ExpAllocateSmall(SIZE_T Total, USHORT Nx, ULONG_PTR Stop[5])
{
    ULONG Class = 0;
    POOL_HEADER *Block;

    Stop[0] = 0;
    while (ExpBlockSize(Class) < Total)
    {
        Class++;
    }
    if (ExpFreeBlocks[Nx][Class] == NULL && !ExpRefill(Class, Nx))
    {
        return NULL;
    }
    Block = ExpFreeBlocks[Nx][Class];
    if (!ExpCheckFreeBlock(Block, Class, Nx, Stop))
    {
        ExpFreeBlocks[Nx][Class] = NULL; // never reach the damaged block (or past it) again
        return NULL;
    }
    ExpFreeBlocks[Nx][Class] = Block->Next;
    return Block;
}

#if DBG
/* The bytes from Data + Size to the end of Header's block: the trailer. */
static SIZE_T
ExpTrailerLength(POOL_HEADER *Header)
{
    SIZE_T End = Header->Class == POOL_CLASS_LARGE
                     ? (SIZE_T)(Header->Pages - 1) * KI_PAGE_SIZE
                     : ExpBlockSize(Header->Class) - sizeof(POOL_HEADER);
    return End - Header->Size;
}
#endif

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
    /* A request of 2 GiB or more goes to the large path, which refuses it (no overflow). */
    SIZE_T Total = NumberOfBytes < (1ULL << 31)
                       ? NumberOfBytes + sizeof(POOL_HEADER) + POOL_TRAILER_MINIMUM
                       : ~(SIZE_T)0;
    USHORT Nx = (PoolType & POOL_NX_ALLOCATION) != 0;
    ULONG_PTR Stop[5];

    if (KeGetCurrentIrql() > DISPATCH_LEVEL)
    {
        KeBugCheckEx(BAD_POOL_CALLER, BAD_POOL_ALLOC_IRQL, KeGetCurrentIrql(), PoolType,
                     NumberOfBytes);
    }
    if (NumberOfBytes == 0)
    {
        Total = sizeof(POOL_HEADER) + POOL_TRAILER_MINIMUM + 1;
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
        Header = ExpAllocateSmall(Total, Nx, Stop);
        if (Header != NULL)
        {
            Data = (PUCHAR)(Header + 1);
            ExpAccount(Tag, 1, (LONG64)NumberOfBytes);
        }
        KeReleaseSpinLock(&ExpPoolLock, OldIrql);
        if (Header == NULL && Stop[0] != 0)
        {
            KeBugCheckEx((ULONG)Stop[0], Stop[1], Stop[2], Stop[3], Stop[4]);
        }
    }
    else if (NumberOfBytes < (1ULL << 31))
    {
        ULONG Pages =
            (ULONG)((NumberOfBytes + POOL_TRAILER_MINIMUM + KI_PAGE_SIZE - 1) / KI_PAGE_SIZE) + 1;
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
#if DBG
    memset(Data + NumberOfBytes, POOL_TRAILER_BYTE, ExpTrailerLength(Header));
#endif
    return Data;
}

/*
 * Finds and checks the header (and, checked build, the trailer) of a block
 * being freed. Returns NULL, with the BAD_POOL_CALLER / BAD_POOL_HEADER /
 * SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION code and parameters, on misuse; the caller
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
    if (Address == 0 || Address >= (4ULL << 30) || Address % 16 != 0)
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
    if (Header->Magic != POOL_MAGIC_ALLOCATED ||
        (Kind == POOL_PAGE_LARGE
             ? Header->Class != POOL_CLASS_LARGE || Header->Pages < 2 ||
                   Header->Size + POOL_TRAILER_MINIMUM > (ULONG64)(Header->Pages - 1) * KI_PAGE_SIZE
             : Header->Class != Kind - POOL_PAGE_SMALL ||
                   Header->Size + POOL_TRAILER_MINIMUM >
                       ExpBlockSize(Header->Class) - sizeof(POOL_HEADER)))
    {
        Stop[0] = BAD_POOL_HEADER;
        Stop[1] = BAD_POOL_HEADER_CORRUPT, Stop[2] = (ULONG_PTR)Header, Stop[3] = Header->Magic;
        Stop[4] = Address;
        return NULL;
    }
    if (Tag != 0 && Header->Tag != Tag)
    {
        Stop[1] = BAD_POOL_WRONG_TAG, Stop[2] = Address, Stop[3] = Header->Tag, Stop[4] = Tag;
        return NULL;
    }
#if DBG
    {
        const UCHAR *Trailer = (const UCHAR *)P + Header->Size;
        SIZE_T Length = ExpTrailerLength(Header);
        for (SIZE_T i = 0; i < Length; i++)
        {
            if (Trailer[i] != POOL_TRAILER_BYTE)
            {
                Stop[0] = SPECIAL_POOL_DETECTED_MEMORY_CORRUPTION;
                Stop[1] = Address, Stop[2] = (ULONG_PTR)&Trailer[i], Stop[3] = Header->Size;
                Stop[4] = SPECIAL_POOL_TRAILER_CHANGED;
                return NULL;
            }
        }
    }
#endif
    return Header;
}

/*
 * Frees a block from ExAllocatePoolWithTag; Tag must match unless it is 0.
 * IRQL <= DISPATCH_LEVEL, unchanged. Misuse bug-checks in both builds, never
 * holding the pool lock: above DISPATCH_LEVEL 0xC2/0x09 (P2 IRQL, P4 P);
 * P not the start of a pool block (NULL, misaligned, foreign) 0xC2/0x46
 * (P2 P); a block already freed 0xC2/0x07 (P3 its tag, P4 P); a corrupt
 * header 0x19/0x3 (P2 header, P3 its magic, P4 P); a wrong Tag 0xC2/0x0A
 * (P2 P, P3 the block's tag, P4 Tag). 0xC2 is BAD_POOL_CALLER, 0x19
 * BAD_POOL_HEADER; the first parameter follows the slash.
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
#if DBG
    KiVerifierForgetRange(P, Header->Size); // a lock inside the block ends its identity
#endif
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
#if DBG
    memset(P, POOL_POISON_BYTE, ExpBlockSize(Header->Class) - sizeof(POOL_HEADER));
#endif
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
