/* SPDX-License-Identifier: MIT */
/*
 * The page-table walk under the kernel's memory manager (kernel/mm/): find
 * the entry that maps an address, create the missing tables and split 2 MiB
 * pages where a 4 KiB page must differ from its neighbours. Policy (what is
 * mapped how), locking and TLB shootdown are the caller's.
 *
 * Convention: the entries above a leaf are always present-writable-executable;
 * the leaf alone says what an access may do (SDM vol. 3A §4.6: the rights
 * are the intersection of every level's), so one entry decides.
 */
#include "arch/x86_64/x86.h"

#define X86_TABLE_ENTRIES 512
#define X86_UPPER_ENTRY   (X86_PTE_PRESENT | X86_PTE_WRITE)

uint64_t x86_pte_nx;

void
x86_paging_init(void)
{
    uint32_t Regs[4];

    x86_cpuid(0x80000000, 0, Regs);
    if (Regs[0] < 0x80000001)
    {
        return;
    }
    x86_cpuid(0x80000001, 0, Regs);
    if ((Regs[3] & X86_CPUID_EXT_NX) == 0)
    {
        return;
    }
    x86_pte_nx = X86_PTE_NX;
    if ((x86_rdmsr(X86_MSR_EFER) & X86_EFER_NXE) == 0)
    {
        x86_wrmsr(X86_MSR_EFER, x86_rdmsr(X86_MSR_EFER) | X86_EFER_NXE);
    }
}

static unsigned
x86_pt_index(uint64_t Va, int Level)
{
    return (unsigned)(Va >> (12 + 9 * (Level - 1))) & (X86_TABLE_ENTRIES - 1);
}

uint64_t *
x86_pte_find(uint64_t *Pml4, uint64_t Va, int *Level)
{
    uint64_t *Table = Pml4;

    for (int L = 4;; L--)
    {
        uint64_t *Entry = &Table[x86_pt_index(Va, L)];
        if (L == 1 || (*Entry & X86_PTE_PRESENT) == 0 || (L <= 3 && (*Entry & X86_PTE_LARGE)))
        {
            *Level = L;
            return Entry;
        }
        Table = (uint64_t *)(*Entry & X86_PTE_ADDRESS);
    }
}

uint64_t *
x86_pte_ensure(uint64_t *Pml4, uint64_t Va, uint64_t *(*Allocate)(void))
{
    uint64_t *Table = Pml4;

    for (int L = 4; L > 1; L--)
    {
        uint64_t *Entry = &Table[x86_pt_index(Va, L)];
        uint64_t *Next;

        if ((*Entry & X86_PTE_PRESENT) == 0)
        {
            Next = Allocate();
            if (Next == 0)
            {
                return 0;
            }
            *Entry = (uint64_t)Next | X86_UPPER_ENTRY;
        }
        else if (*Entry & X86_PTE_LARGE)
        {
            /* Only 2 MiB pages are ever built (level 2); PAT bit 12 is never set. */
            uint64_t Attributes = *Entry & ~X86_PTE_ADDRESS & ~X86_PTE_LARGE;
            uint64_t Base = *Entry & X86_PTE_ADDRESS;

            Next = Allocate();
            if (Next == 0)
            {
                return 0;
            }
            for (unsigned i = 0; i < X86_TABLE_ENTRIES; i++)
            {
                Next[i] = (Base + i * X86_PAGE_4K) | Attributes;
            }
            /* Same translation for every 4 KiB page, so no flush is needed for
             * the split itself (SDM vol. 3A §4.10.2.3 allows either size cached). */
            *Entry = (uint64_t)Next | X86_UPPER_ENTRY;
        }
        Table = (uint64_t *)(*Entry & X86_PTE_ADDRESS);
    }
    return &Table[x86_pt_index(Va, 1)];
}

int
x86_pte_allows(uint64_t Entry, uint64_t ErrorCode)
{
    if ((Entry & X86_PTE_PRESENT) == 0)
    {
        return 0;
    }
    if ((ErrorCode & X86_PF_WRITE) && (Entry & X86_PTE_WRITE) == 0)
    {
        return 0;
    }
    if ((ErrorCode & X86_PF_FETCH) && (Entry & X86_PTE_NX))
    {
        return 0;
    }
    return 1;
}
