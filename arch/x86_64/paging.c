/* SPDX-License-Identifier: MIT */
/*
 * Changes to the boot page tables (boot/multiboot2.asm builds them: 2 MiB pages
 * identity-mapping 0..4 GiB, the same page directory aliased at the kernel base).
 */
#include "arch/x86_64/x86.h"

#define PTE_PRESENT 0x1ull
#define PTE_WRITE   0x2ull
#define PTE_LARGE   0x80ull
#define PTE_ADDRESS 0x000ffffffffff000ull
#define PAGE_4K     4096ull

/*
 * Splits the first 2 MiB page into 4 KiB pages and leaves page 0 unmapped, so
 * that a NULL pointer dereference faults. PageTable is a zeroed, identity-
 * mapped 4 KiB page that becomes the new page table; the caller never frees it.
 */
void
x86_unmap_null_page(uint64_t *PageTable)
{
    uint64_t *Pml4 = (uint64_t *)(x86_read_cr3() & PTE_ADDRESS);
    uint64_t *PdptLow = (uint64_t *)(Pml4[0] & PTE_ADDRESS);
    uint64_t *Pd = (uint64_t *)(PdptLow[0] & PTE_ADDRESS);

    for (uint64_t i = 1; i < 512; i++)
    {
        PageTable[i] = (i * PAGE_4K) | PTE_PRESENT | PTE_WRITE;
    }
    PageTable[0] = 0;
    /* The directory entry changes from a 2 MiB page to a table; reloading CR3
     * flushes the old translation on this processor (SDM vol. 3A §4.10.4.1).
     * Other processors start later and load this CR3. */
    Pd[0] = (uint64_t)PageTable | PTE_PRESENT | PTE_WRITE;
    x86_write_cr3(x86_read_cr3());
}
