/* SPDX-License-Identifier: MIT */
/*
 * The kernel address space: page tables built at boot with the protection of
 * each part (the layout is in kernel/mm/mm.h), protection changes with their TLB
 * shootdown, the system region's pages with guard pages (stacks, special
 * pool), and the page-fault policy that names what a fault hit.
 *
 * Locking: MiPageLock (interrupts off, any IRQL) guards every page-table
 * entry and the system region's maps. A change that narrows what a page
 * allows is followed, after the lock is dropped, by a flush on every
 * processor through KeIpiGenericCall; a widening change flushes only the
 * local TLB, and a processor that still holds the old, narrower entry takes
 * a page fault that MmHandlePageFault recognises as spurious and retries.
 */
#include "kernel/ex/ex.h"
#include "kernel/ke/ke.h"
#include "kernel/mm/mm.h"

#include "lib/lib.h"

#define MI_IDENTITY_LIMIT (4ull << 30)
#define MI_UNCACHED_BASE  (3ull << 30) // the 4th GiB: APICs and PCI holes
#define MI_KERNEL_BASE    0xFFFFFFFF80000000ull
#define MI_SYSTEM_PAGES   (MM_SYSTEM_SIZE / KI_PAGE_SIZE)
#define MI_FLUSH_ALL_OVER 16   // pages: above this a flush reloads CR3 instead of INVLPG per page
#define MI_DEFERRED_MAX   128  // frees waiting for one shared TLB flush...
#define MI_DEFERRED_PAGES 1024 // ... or this many of their pages (4 MiB), whichever comes first
#define MI_SYSTEM_PENDING 0xff // a system page freed, its address not reusable before the flush

extern char __text_start[], __text_end[];
extern char __rodata_start[], __rodata_end[];
extern char __data_start[], __bss_end[];

static uint64_t *MiPml4;
static KSPIN_LOCK MiPageLock;               // interrupts off, any IRQL
static UCHAR MiSystemKind[MI_SYSTEM_PAGES]; // guarded by MiPageLock
static ULONG MiSystemHint;                  // guarded by MiPageLock
static volatile LONG MiGuardPages;          // guard pages in place now
static ULONG64 MiTextBytes, MiRodataBytes, MiDataBytes;

/*
 * Frees whose pages other processors may still translate: they are given
 * back (physical pages to the allocator, addresses to the system region) only
 * after one flush on every processor covers the whole batch, so that a
 * KeIpiGenericCall is paid per batch, not per free. Guarded by MiPageLock.
 */
typedef struct _MI_DEFERRED
{
    ULONG64 Base;
    ULONG Pages;
    ULONG GuardBelow; // system region only
    ULONG GuardAbove;
    BOOLEAN System; // FALSE: identity-mapped pages for MmFreePages
} MI_DEFERRED;

static MI_DEFERRED MiDeferred[MI_DEFERRED_MAX];
static ULONG MiDeferredCount;
static ULONG64 MiDeferredPages;

static ULONG64
MiLock(VOID)
{
    return KiAcquireSpinLockDisableInterrupts(&MiPageLock);
}

static VOID
MiUnlock(ULONG64 Flags)
{
    KiReleaseSpinLockRestoreInterrupts(&MiPageLock, Flags);
}

/* A zeroed page for a page table (identity-mapped, below 4 GiB). */
static uint64_t *
MiAllocateTable(VOID)
{
    return (uint64_t *)MmAllocatePages(1);
}

static ULONG64
MiProtectionBits(ULONG Protection)
{
    ULONG64 Bits = X86_PTE_PRESENT;

    if (Protection & MM_WRITE)
    {
        Bits |= X86_PTE_WRITE;
    }
    if ((Protection & MM_EXECUTE) == 0)
    {
        Bits |= x86_pte_nx;
    }
    return Bits;
}

/* ---------------------------------------------------------------- TLB shootdown */

typedef struct _MI_FLUSH
{
    ULONG64 Base;
    ULONG64 Pages;
} MI_FLUSH;

static VOID
MiFlushLocal(ULONG64 Base, ULONG64 Pages)
{
    if (Pages > MI_FLUSH_ALL_OVER)
    {
        x86_write_cr3(x86_read_cr3()); // no global pages: this drops every translation
        return;
    }
    for (ULONG64 i = 0; i < Pages; i++)
    {
        x86_invlpg(Base + i * KI_PAGE_SIZE);
    }
}

static ULONG_PTR
MiFlushWorker(ULONG_PTR Argument)
{
    const MI_FLUSH *Flush = (const MI_FLUSH *)Argument;

    MiFlushLocal(Flush->Base, Flush->Pages);
    return 0;
}

/*
 * Drops every processor's translations of [Base, Base + Pages pages). The
 * table writes before it are ordered before the IPI by KeIpiGenericCall's
 * lock and packet handshake (its release pairs with the receivers' acquire).
 */
static VOID
MiFlushEverywhere(ULONG64 Base, ULONG64 Pages)
{
    MI_FLUSH Flush = {Base, Pages};

    if (__atomic_load_n(&KiActiveProcessorCount, __ATOMIC_ACQUIRE) <= 1)
    {
        MiFlushLocal(Base, Pages);
        return;
    }
    KeIpiGenericCall(MiFlushWorker, (ULONG_PTR)&Flush);
}

/* ---------------------------------------------------------------- building the tables */

/* Maps [Va, Va + Size) onto Physical with 4 KiB pages; boot only. */
INIT_CODE static VOID
MiMapBootRange(ULONG64 Va, ULONG64 Physical, ULONG64 Size, ULONG Protection)
{
    for (ULONG64 Offset = 0; Offset < Size; Offset += KI_PAGE_SIZE)
    {
        uint64_t *Pte = x86_pte_ensure(MiPml4, Va + Offset, MiAllocateTable);
        if (Pte == NULL)
        {
            KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x4d4d, Va + Offset, 0, 0);
        }
        *Pte = (Physical + Offset) | MiProtectionBits(Protection);
    }
}

/*
 * Builds the kernel's page tables (the layout is in mm.h) and switches the
 * boot processor to them; the APs load the same CR3 when they start. Boot
 * processor, once, after MmInitializePhysicalMemory, interrupts off.
 */
INIT_CODE VOID
MmInitializeAddressSpace(VOID)
{
    ULONG64 TextStart = (ULONG64)__text_start & ~(KI_PAGE_SIZE - 1);
    uint64_t *Pdpt;
    uint64_t *Pte;

    KeInitializeSpinLock(&MiPageLock);
    x86_paging_init();
    MiPml4 = MiAllocateTable();
    Pdpt = MiAllocateTable();
    if (MiPml4 == NULL || Pdpt == NULL)
    {
        KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x4d4d, 0, 0, 0);
    }

    /* The identity map: 2 MiB pages, read-write, no-execute; the 4th GiB uncached. */
    MiPml4[0] = (ULONG64)Pdpt | X86_PTE_PRESENT | X86_PTE_WRITE;
    for (ULONG Gib = 0; Gib < 4; Gib++)
    {
        uint64_t *Pd = MiAllocateTable();
        if (Pd == NULL)
        {
            KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x4d4d, Gib, 0, 0);
        }
        Pdpt[Gib] = (ULONG64)Pd | X86_PTE_PRESENT | X86_PTE_WRITE;
        for (ULONG i = 0; i < 512; i++)
        {
            ULONG64 Physical = ((ULONG64)Gib << 30) + i * X86_PAGE_2M;
            Pd[i] = Physical | X86_PTE_PRESENT | X86_PTE_WRITE | X86_PTE_LARGE | x86_pte_nx;
            if (Physical >= MI_UNCACHED_BASE)
            {
                Pd[i] |= X86_PTE_PCD | X86_PTE_PWT;
            }
        }
    }
    /*
     * Usable RAM is mapped with 4 KiB pages from the start: any of its pages
     * may become executable pool, and that change (at DISPATCH_LEVEL, under
     * the pool's lock) must need no page-table allocation. Device memory and
     * holes keep their 2 MiB pages.
     */
    for (ULONG r = 0; r < KiBootInfo.MemoryRangeCount; r++)
    {
        ULONG64 First = KiBootInfo.MemoryRanges[r].Base & ~(X86_PAGE_2M - 1);
        ULONG64 End = KiBootInfo.MemoryRanges[r].Base + KiBootInfo.MemoryRanges[r].Length;

        for (ULONG64 Region = First; Region < End && Region < MI_IDENTITY_LIMIT;
             Region += X86_PAGE_2M)
        {
            if (x86_pte_ensure(MiPml4, Region, MiAllocateTable) == NULL)
            {
                KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x4d4d, Region, 0, 0);
            }
        }
    }
    /* Page 0 stays unmapped so that a NULL dereference faults. */
    Pte = x86_pte_ensure(MiPml4, 0, MiAllocateTable);
    if (Pte == NULL)
    {
        KeBugCheckEx(MANUALLY_INITIATED_CRASH, 0x4d4d, 0, 0, 0);
    }
    *Pte = 0;

    /* The kernel image by section. */
    MiTextBytes = (ULONG64)__text_end - TextStart;
    MiRodataBytes = (ULONG64)__rodata_end - (ULONG64)__rodata_start;
    MiDataBytes = (ULONG64)__bss_end - (ULONG64)__data_start;
    MiMapBootRange(TextStart, TextStart - MI_KERNEL_BASE, (ULONG64)__rodata_start - TextStart,
                   MM_READ | MM_EXECUTE);
    MiMapBootRange((ULONG64)__rodata_start, (ULONG64)__rodata_start - MI_KERNEL_BASE,
                   (ULONG64)__data_start - (ULONG64)__rodata_start, MM_READ);
    MiMapBootRange((ULONG64)__data_start, (ULONG64)__data_start - MI_KERNEL_BASE, MiDataBytes,
                   MM_READ | MM_WRITE);

    /* The boot stack (.boot.bss, identity-mapped) stays valid across the switch. */
    x86_write_cr3((ULONG64)MiPml4);
}

/* ---------------------------------------------------------------- protection changes */

/*
 * Sets the protection (MM_READ plus MM_WRITE and/or MM_EXECUTE) of the mapped
 * pages [Base, Base + Size); Base and Size page-aligned. Narrowing a
 * protection flushes every processor's TLB (IRQL <= DISPATCH_LEVEL,
 * interrupts on); widening only flushes this one's (any IRQL: another
 * processor's stale entry faults, and MmHandlePageFault retries it). FALSE
 * when a page is not mapped or a page table could not be allocated.
 */
BOOLEAN
MmProtectRange(PVOID Base, SIZE_T Size, ULONG Protection)
{
    ULONG64 Va = (ULONG64)Base;
    ULONG64 Pages = Size / KI_PAGE_SIZE;
    ULONG64 New = MiProtectionBits(Protection);
    BOOLEAN Narrowed = FALSE;
    BOOLEAN Ok = TRUE;
    ULONG64 Flags;

    if (Va % KI_PAGE_SIZE != 0 || Size % KI_PAGE_SIZE != 0 || (Protection & MM_READ) == 0)
    {
        return FALSE;
    }
    Flags = MiLock();
    for (ULONG64 i = 0; i < Pages; i++)
    {
        ULONG64 Page = Va + i * KI_PAGE_SIZE;
        int Level;
        uint64_t *Pte = x86_pte_find(MiPml4, Page, &Level);
        ULONG64 Old;

        if ((*Pte & X86_PTE_PRESENT) == 0)
        {
            Ok = FALSE;
            break;
        }
        if (Level != 1)
        {
            Pte = x86_pte_ensure(MiPml4, Page, MiAllocateTable);
            if (Pte == NULL)
            {
                Ok = FALSE;
                break;
            }
        }
        Old = *Pte;
        *Pte = (Old & (X86_PTE_ADDRESS | X86_PTE_PCD | X86_PTE_PWT)) | New;
        if (((Old & X86_PTE_WRITE) && !(New & X86_PTE_WRITE)) ||
            (!(Old & X86_PTE_NX) && (New & X86_PTE_NX)))
        {
            Narrowed = TRUE;
        }
    }
    MiUnlock(Flags);
    if (Narrowed)
    {
        MiFlushEverywhere(Va, Pages);
    }
    else
    {
        MiFlushLocal(Va, Pages);
    }
    return Ok;
}

/* ---------------------------------------------------------------- the system region */

static ULONG
MiGuardKind(ULONG Kind)
{
    return Kind == MM_SYSTEM_SPECIAL ? MM_SYSTEM_SPECIAL_GUARD : MM_SYSTEM_STACK_GUARD;
}

/* First fit of Count free pages from the hint, wrapping once; MI_SYSTEM_PAGES if none. Locked. */
static ULONG
MiFindSystemRun(ULONG Count)
{
    for (int Pass = 0; Pass < 2; Pass++)
    {
        ULONG First = Pass == 0 ? MiSystemHint : 0;
        ULONG Limit = Pass == 0 ? (ULONG)MI_SYSTEM_PAGES : MiSystemHint + Count;
        ULONG Run = 0;

        if (Limit > MI_SYSTEM_PAGES)
        {
            Limit = MI_SYSTEM_PAGES;
        }
        for (ULONG Page = First; Page < Limit; Page++)
        {
            Run = MiSystemKind[Page] == MM_SYSTEM_FREE ? Run + 1 : 0;
            if (Run == Count)
            {
                return Page + 1 - Count;
            }
        }
    }
    return MI_SYSTEM_PAGES;
}

/*
 * Allocates Pages pages of fresh zeroed memory mapped in the system region
 * with Protection, with GuardBelow and GuardAbove unmapped pages around them,
 * recorded as Kind (MM_SYSTEM_STACK or MM_SYSTEM_SPECIAL; the guards get the
 * matching _GUARD kind). Returns the first data page, NULL when memory or
 * address space runs out. Any IRQL <= DISPATCH_LEVEL (no flush: only new
 * translations are made).
 */
PVOID
MmAllocateSystemPages(ULONG Pages, ULONG GuardBelow, ULONG GuardAbove, ULONG Protection, ULONG Kind)
{
    ULONG Total = GuardBelow + Pages + GuardAbove;
    ULONG64 Flags;
    ULONG First;
    ULONG Mapped = 0;
    ULONG64 Base;

    if (Pages == 0 || Total > MI_SYSTEM_PAGES)
    {
        return NULL;
    }
    Flags = MiLock();
    First = MiFindSystemRun(Total);
    if (First == MI_SYSTEM_PAGES)
    {
        MiUnlock(Flags);
        return NULL;
    }
    for (ULONG i = 0; i < Total; i++)
    {
        MiSystemKind[First + i] =
            (UCHAR)(i < GuardBelow || i >= GuardBelow + Pages ? MiGuardKind(Kind) : Kind);
    }
    MiSystemHint = First + Total;
    Base = MM_SYSTEM_BASE + (ULONG64)(First + GuardBelow) * KI_PAGE_SIZE;
    for (; Mapped < Pages; Mapped++)
    {
        PVOID Page = MmAllocatePages(1);
        uint64_t *Pte = x86_pte_ensure(MiPml4, Base + Mapped * KI_PAGE_SIZE, MiAllocateTable);
        if (Page == NULL || Pte == NULL)
        {
            if (Page != NULL)
            {
                MmFreePages(Page, 1);
            }
            break;
        }
        *Pte = (ULONG64)Page | MiProtectionBits(Protection);
    }
    MiUnlock(Flags);
    if (Mapped < Pages)
    {
        /* Never handed out: nobody can hold a translation, but the local walk may. */
        Flags = MiLock();
        for (ULONG i = 0; i < Mapped; i++)
        {
            uint64_t *Pte = x86_pte_ensure(MiPml4, Base + i * KI_PAGE_SIZE, MiAllocateTable);
            MmFreePages((PVOID)(*Pte & X86_PTE_ADDRESS), 1);
            *Pte = 0;
        }
        for (ULONG i = 0; i < Total; i++)
        {
            MiSystemKind[First + i] = MM_SYSTEM_FREE;
        }
        MiUnlock(Flags);
        MiFlushLocal(Base, Mapped);
        return NULL;
    }
    __atomic_fetch_add(&MiGuardPages, (LONG)(GuardBelow + GuardAbove), __ATOMIC_RELAXED);
    return (PVOID)Base;
}

/* Gives back a flushed batch's pages and addresses. Not locked; takes the lock. */
static VOID
MiReleaseDeferred(const MI_DEFERRED *Batch, ULONG Count)
{
    for (ULONG b = 0; b < Count; b++)
    {
        const MI_DEFERRED *Free = &Batch[b];
        ULONG64 Flags;
        ULONG First;

        if (!Free->System)
        {
            MmFreePages((PVOID)Free->Base, Free->Pages);
            continue;
        }
        First = (ULONG)((Free->Base - MM_SYSTEM_BASE) / KI_PAGE_SIZE) - Free->GuardBelow;
        Flags = MiLock();
        for (ULONG i = 0; i < Free->Pages; i++)
        {
            int Level;
            uint64_t *Pte = x86_pte_find(MiPml4, Free->Base + i * KI_PAGE_SIZE, &Level);
            MmFreePages((PVOID)(*Pte & X86_PTE_ADDRESS), 1);
            *Pte = 0;
        }
        for (ULONG i = 0; i < Free->GuardBelow + Free->Pages + Free->GuardAbove; i++)
        {
            MiSystemKind[First + i] = MM_SYSTEM_FREE;
        }
        if (First < MiSystemHint)
        {
            MiSystemHint = First;
        }
        MiUnlock(Flags);
    }
}

/*
 * Queues Free (whose pages are already unmapped or no-execute here); when the
 * queue is full, flushes every processor once and gives the batch back.
 */
static VOID
MiDeferFree(const MI_DEFERRED *Free)
{
    MI_DEFERRED Batch[MI_DEFERRED_MAX];
    ULONG Count = 0;
    ULONG64 Flags = MiLock();

    MiDeferred[MiDeferredCount++] = *Free;
    MiDeferredPages += Free->Pages;
    if (MiDeferredCount == MI_DEFERRED_MAX || MiDeferredPages >= MI_DEFERRED_PAGES)
    {
        Count = MiDeferredCount;
        memcpy(Batch, MiDeferred, Count * sizeof(Batch[0]));
        MiDeferredCount = 0;
        MiDeferredPages = 0;
    }
    MiUnlock(Flags);
    if (Count != 0)
    {
        MiFlushEverywhere(0, MI_FLUSH_ALL_OVER + 1); // a full flush
        MiReleaseDeferred(Batch, Count);
    }
}

/*
 * Unmaps and frees what MmAllocateSystemPages returned (same counts). The
 * pages and addresses are reused only after a TLB flush on every processor,
 * one for a batch of frees. IRQL <= DISPATCH_LEVEL, interrupts on.
 */
VOID
MmFreeSystemPages(PVOID Base, ULONG Pages, ULONG GuardBelow, ULONG GuardAbove)
{
    ULONG64 Va = (ULONG64)Base;
    ULONG First = (ULONG)((Va - MM_SYSTEM_BASE) / KI_PAGE_SIZE) - GuardBelow;
    MI_DEFERRED Free = {Va, Pages, GuardBelow, GuardAbove, TRUE};
    ULONG64 Flags;

    if (Va < MM_SYSTEM_BASE || Va >= MM_SYSTEM_BASE + MM_SYSTEM_SIZE || Va % KI_PAGE_SIZE != 0)
    {
        KeBugCheckEx(BAD_POOL_CALLER, 0x46, Va, Pages, 0);
    }
    /* Unmapped here now; the frames and addresses wait for the batch's flush. */
    Flags = MiLock();
    for (ULONG i = 0; i < Pages; i++)
    {
        int Level;
        uint64_t *Pte = x86_pte_find(MiPml4, Va + i * KI_PAGE_SIZE, &Level);
        *Pte &= ~X86_PTE_PRESENT; // the frame address stays for MiReleaseDeferred
    }
    for (ULONG i = 0; i < GuardBelow + Pages + GuardAbove; i++)
    {
        MiSystemKind[First + i] = MI_SYSTEM_PENDING;
    }
    MiUnlock(Flags);
    MiFlushLocal(Va, Pages);
    __atomic_fetch_sub(&MiGuardPages, (LONG)(GuardBelow + GuardAbove), __ATOMIC_RELAXED);
    MiDeferFree(&Free);
}

/*
 * Frees identity-mapped pages that MmProtectRange made executable: no-execute
 * again at once here, given back to MmFreePages after a TLB flush on every
 * processor, one for a batch of frees. IRQL <= DISPATCH_LEVEL, interrupts on.
 */
VOID
MmFreeExecutablePages(PVOID Base, ULONG Count)
{
    MI_DEFERRED Free = {(ULONG64)Base, Count, 0, 0, FALSE};
    ULONG64 Flags = MiLock();

    for (ULONG i = 0; i < Count; i++)
    {
        int Level;
        uint64_t *Pte = x86_pte_find(MiPml4, (ULONG64)Base + i * KI_PAGE_SIZE, &Level);
        *Pte |=
            x86_pte_nx; // level 1: MmProtectRange split the 2 MiB page when it made it executable
    }
    MiUnlock(Flags);
    MiFlushLocal((ULONG64)Base, Count);
    MiDeferFree(&Free);
}

/* Pages freed but waiting for their batch's TLB flush (MmQueryFreePages counts them). Any IRQL. */
ULONG64
MiQueryDeferredPages(VOID)
{
    return __atomic_load_n(&MiDeferredPages, __ATOMIC_RELAXED);
}

/* The MM_SYSTEM_ kind of the system-region page holding Address (MM_SYSTEM_FREE outside it). Any
 * IRQL. */
ULONG
MmQuerySystemPage(ULONG64 Address)
{
    ULONG Kind;

    if (Address < MM_SYSTEM_BASE || Address >= MM_SYSTEM_BASE + MM_SYSTEM_SIZE)
    {
        return MM_SYSTEM_FREE;
    }
    /* A byte read: a racing change gives the old or the new kind, either a true answer once. */
    Kind =
        __atomic_load_n(&MiSystemKind[(Address - MM_SYSTEM_BASE) / KI_PAGE_SIZE], __ATOMIC_RELAXED);
    return Kind == MI_SYSTEM_PENDING ? MM_SYSTEM_FREE : Kind;
}

/* ---------------------------------------------------------------- faults and queries */

static ULONG64
MiCurrentEntry(ULONG64 Address)
{
    int Level;
    uint64_t *Pml4 = (uint64_t *)(x86_read_cr3() & X86_PTE_ADDRESS);

    return *x86_pte_find(Pml4, Address, &Level);
}

/* Whether Address is mapped now (a walk of the current page tables). Any IRQL. */
BOOLEAN
MmIsAddressValid(ULONG64 Address)
{
    ULONG64 Top = Address >> 47;

    if (Top != 0 && Top != 0x1ffff) // not canonical
    {
        return FALSE;
    }
    return (MiCurrentEntry(Address) & X86_PTE_PRESENT) != 0;
}

/*
 * Page-fault policy, called first by the #PF handler (kernel/ke/trap.c):
 * TRUE when the fault was spurious (the tables allow the access: a stale TLB
 * entry on this processor after a widening change), flushed, and the
 * instruction may be retried. Otherwise fills Stop[0..4] with the bug check
 * Windows would raise: 0xBE for a write to read-only memory, 0xFC for a fetch
 * from no-execute memory, 0x7F (P1 8) for a stack guard page, 0xD6 for a
 * special-pool guard page, else 0x50. Any IRQL.
 */
BOOLEAN
MmHandlePageFault(ULONG64 Address, ULONG64 ErrorCode, ULONG64 Rip, ULONG_PTR Stop[5])
{
    ULONG64 Entry = MmIsAddressValid(Address) ? MiCurrentEntry(Address) : 0;
    ULONG Kind = MmQuerySystemPage(Address);

    if ((ErrorCode & X86_PF_RESERVED) == 0 && x86_pte_allows(Entry, ErrorCode))
    {
        x86_invlpg(Address);
        return TRUE;
    }
    Stop[1] = Address;
    if ((ErrorCode & X86_PF_PRESENT) && (ErrorCode & X86_PF_FETCH))
    {
        /* P1 address, P2 the entry, P3 faulting RIP, P4 error code. */
        Stop[0] = ATTEMPTED_EXECUTE_OF_NOEXECUTE_MEMORY, Stop[2] = Entry, Stop[3] = Rip;
        Stop[4] = ErrorCode;
    }
    else if ((ErrorCode & X86_PF_PRESENT) && (ErrorCode & X86_PF_WRITE))
    {
        Stop[0] = ATTEMPTED_WRITE_TO_READONLY_MEMORY, Stop[2] = Entry, Stop[3] = Rip;
        Stop[4] = ErrorCode;
    }
    else if (Kind == MM_SYSTEM_STACK_GUARD)
    {
        /* A kernel stack overflow, reported as Windows does: P1 8 (double fault). */
        Stop[0] = UNEXPECTED_KERNEL_MODE_TRAP, Stop[1] = 8, Stop[2] = ErrorCode, Stop[3] = Rip;
        Stop[4] = Address;
    }
    else if (Kind == MM_SYSTEM_SPECIAL_GUARD)
    {
        /* P1 address, P2 1 if a write, P3 faulting RIP, P4 0. */
        Stop[0] = DRIVER_PAGE_FAULT_BEYOND_END_OF_ALLOCATION, Stop[2] = (ErrorCode >> 1) & 1;
        Stop[3] = Rip, Stop[4] = 0;
    }
    else
    {
        /* P1 address, P2 1 if a write, P3 faulting RIP, P4 error code. */
        Stop[0] = PAGE_FAULT_IN_NONPAGED_AREA, Stop[2] = (ErrorCode >> 1) & 1, Stop[3] = Rip;
        Stop[4] = ErrorCode;
    }
    return FALSE;
}

/* Prints the one start-up line with the protections applied. Boot processor, after the APs start.
 */
VOID
MmReportProtection(VOID)
{
    DbgPrint("Spindle: memory protection: text %llu bytes read-execute, rodata %llu bytes "
             "read-only, data %llu bytes read-write, identity map no-execute%s, %d guard pages\n",
             MiTextBytes, MiRodataBytes, MiDataBytes,
             x86_pte_nx != 0 ? "" : " (no NX on this processor: nothing is no-execute)",
             (int)__atomic_load_n(&MiGuardPages, __ATOMIC_RELAXED));
}
