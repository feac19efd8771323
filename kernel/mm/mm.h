/* SPDX-License-Identifier: MIT */
/*
 * The memory manager's declarations (kernel/mm/): physical pages, identity-
 * mapped. Boot processor initialises once; the rest any IRQL <= DISPATCH_LEVEL.
 */
#pragma once

#include <wdm.h>

VOID MmInitializePhysicalMemory(VOID);
PVOID MmAllocatePages(ULONG Count); // zeroed, identity-mapped; NULL when exhausted
VOID MmFreePages(PVOID Base, ULONG Count);
ULONG64 MmQueryFreePages(VOID);
PVOID MmAllocateLowPage(ULONG64 Below); // a page below the given physical address
