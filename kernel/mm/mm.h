/* SPDX-License-Identifier: MIT */
/*
 * The memory manager's declarations (kernel/mm/): physical pages, identity-
 * mapped (physical.c), and the kernel address space (virtual.c). Each
 * routine's contract is above its definition.
 */
#pragma once

#include <wdm.h>

VOID MmInitializePhysicalMemory(VOID);
PVOID MmAllocatePages(ULONG Count); // zeroed, identity-mapped; NULL when exhausted
VOID MmFreePages(PVOID Base, ULONG Count);
ULONG64 MmQueryFreePages(VOID);         // including pages waiting for a TLB flush to be reused
PVOID MmAllocateLowPage(ULONG64 Below); // a page below the given physical address

/*
 * The kernel address space (virtual.c over arch/x86_64/paging.c):
 *   0 .. 4 GiB            identity map of physical memory, no-execute, page 0
 *                         unmapped (pages handed to executable pool are made
 *                         executable one by one);
 *   0xFFFFFFFF40000000    the system region (256 MiB): stacks and special pool,
 *                         mapped page by page, with unmapped guard pages;
 *   0xFFFFFFFF80000000    the kernel image: .text read-execute, .rodata (with
 *                         the test table and symbols) read-only, .data/.bss
 *                         read-write, all but .text no-execute.
 */
#define MM_READ    0x1
#define MM_WRITE   0x2
#define MM_EXECUTE 0x4

#define MM_SYSTEM_BASE 0xFFFFFFFF40000000ull
#define MM_SYSTEM_SIZE (256ull << 20)

/* What a page of the system region is (MmQuerySystemPage). */
#define MM_SYSTEM_FREE          0
#define MM_SYSTEM_STACK         1
#define MM_SYSTEM_STACK_GUARD   2
#define MM_SYSTEM_SPECIAL       3
#define MM_SYSTEM_SPECIAL_GUARD 4

VOID MmInitializeAddressSpace(VOID);
BOOLEAN MmProtectRange(PVOID Base, SIZE_T Size, ULONG Protection);
PVOID MmAllocateSystemPages(ULONG Pages, ULONG GuardBelow, ULONG GuardAbove, ULONG Protection,
                            ULONG Kind);
VOID MmFreeSystemPages(PVOID Base, ULONG Pages, ULONG GuardBelow, ULONG GuardAbove);
VOID MmFreeExecutablePages(PVOID Base, ULONG Count);
ULONG64 MiQueryDeferredPages(VOID);
ULONG MmQuerySystemPage(ULONG64 Address);
BOOLEAN MmIsAddressValid(ULONG64 Address);
BOOLEAN MmHandlePageFault(ULONG64 Address, ULONG64 ErrorCode, ULONG64 Rip, ULONG_PTR Stop[5]);
VOID MmReportProtection(VOID);
