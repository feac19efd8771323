/* SPDX-License-Identifier: MIT */
/*
 * x86-64 instruction wrappers. The only file with inline assembly (STYLE.md §6);
 * each wrapper is named after its instruction and has the clobbers it needs.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define X86_RFLAGS_IF (1ull << 9)

#define X86_CR0_PE (1ull << 0)
#define X86_CR0_MP (1ull << 1)
#define X86_CR0_ET (1ull << 4)
#define X86_CR0_NE (1ull << 5)
#define X86_CR0_WP (1ull << 16)
#define X86_CR0_PG (1ull << 31)

#define X86_MSR_APIC_BASE      0x0000001b // IA32_APIC_BASE
#define X86_MSR_EFER           0xc0000080 // IA32_EFER
#define X86_MSR_FS_BASE        0xc0000100 // IA32_FS_BASE
#define X86_MSR_GS_BASE        0xc0000101 // IA32_GS_BASE
#define X86_MSR_KERNEL_GS_BASE 0xc0000102 // IA32_KERNEL_GS_BASE

static inline void
x86_pause(void)
{
    __asm__ volatile("pause" ::: "memory");
}

static inline void
x86_cli(void)
{
    __asm__ volatile("cli" ::: "memory");
}

static inline void
x86_sti(void)
{
    __asm__ volatile("sti" ::: "memory");
}

static inline void
x86_hlt(void)
{
    __asm__ volatile("hlt" ::: "memory");
}

/* sti; hlt — the one-instruction shadow of sti makes "enable and wait" atomic. */
static inline void
x86_sti_hlt(void)
{
    __asm__ volatile("sti; hlt" ::: "memory");
}

static inline uint64_t
x86_read_rflags(void)
{
    uint64_t Flags;
    __asm__ volatile("pushfq; popq %0" : "=r"(Flags)::"memory");
    return Flags;
}

static inline void
x86_write_rflags(uint64_t Flags)
{
    __asm__ volatile("pushq %0; popfq" ::"r"(Flags) : "memory", "cc");
}

static inline bool
x86_interrupts_enabled(void)
{
    return (x86_read_rflags() & X86_RFLAGS_IF) != 0;
}

/* Disables interrupts and returns the previous RFLAGS for x86_restore_flags. */
static inline uint64_t
x86_save_disable(void)
{
    uint64_t Flags = x86_read_rflags();
    x86_cli();
    return Flags;
}

static inline void
x86_restore_flags(uint64_t Flags)
{
    if (Flags & X86_RFLAGS_IF)
    {
        x86_sti();
    }
}

static inline uint8_t
x86_inb(uint16_t Port)
{
    uint8_t Value;
    __asm__ volatile("inb %1, %0" : "=a"(Value) : "Nd"(Port) : "memory");
    return Value;
}

static inline void
x86_outb(uint16_t Port, uint8_t Value)
{
    __asm__ volatile("outb %0, %1" ::"a"(Value), "Nd"(Port) : "memory");
}

static inline uint32_t
x86_inl(uint16_t Port)
{
    uint32_t Value;
    __asm__ volatile("inl %1, %0" : "=a"(Value) : "Nd"(Port) : "memory");
    return Value;
}

static inline void
x86_outl(uint16_t Port, uint32_t Value)
{
    __asm__ volatile("outl %0, %1" ::"a"(Value), "Nd"(Port) : "memory");
}

static inline uint64_t
x86_rdmsr(uint32_t Msr)
{
    uint32_t Lo;
    uint32_t Hi;
    __asm__ volatile("rdmsr" : "=a"(Lo), "=d"(Hi) : "c"(Msr) : "memory");
    return ((uint64_t)Hi << 32) | Lo;
}

static inline void
x86_wrmsr(uint32_t Msr, uint64_t Value)
{
    __asm__ volatile("wrmsr" ::"c"(Msr), "a"((uint32_t)Value), "d"((uint32_t)(Value >> 32))
                     : "memory");
}

static inline uint64_t
x86_rdtsc(void)
{
    uint32_t Lo;
    uint32_t Hi;
    __asm__ volatile("rdtsc" : "=a"(Lo), "=d"(Hi)::"memory");
    return ((uint64_t)Hi << 32) | Lo;
}

/*
 * Serialising TSC reads for timing a region of code (Intel's and Linux's
 * recipe): lfence; rdtsc; lfence at the start keeps earlier instructions from
 * finishing after the read and later ones from starting before it; rdtscp;
 * lfence at the end waits for everything before it and keeps later
 * instructions from starting early. rdtscp needs CPUID 0x80000001 EDX bit 27;
 * x86_rdtsc_begin serves as the end read where it is missing.
 */
static inline uint64_t
x86_rdtsc_begin(void)
{
    uint32_t Lo;
    uint32_t Hi;
    __asm__ volatile("lfence; rdtsc; lfence" : "=a"(Lo), "=d"(Hi)::"memory");
    return ((uint64_t)Hi << 32) | Lo;
}

static inline uint64_t
x86_rdtscp_end(void)
{
    uint32_t Lo;
    uint32_t Hi;
    uint32_t Aux;
    __asm__ volatile("rdtscp; lfence" : "=a"(Lo), "=d"(Hi), "=c"(Aux)::"memory");
    return ((uint64_t)Hi << 32) | Lo;
}

static inline void
x86_cpuid(uint32_t Leaf, uint32_t Subleaf, uint32_t Regs[4])
{
    __asm__ volatile("cpuid"
                     : "=a"(Regs[0]), "=b"(Regs[1]), "=c"(Regs[2]), "=d"(Regs[3])
                     : "a"(Leaf), "c"(Subleaf));
}

static inline uint64_t
x86_read_cr2(void)
{
    uint64_t Value;
    __asm__ volatile("mov %%cr2, %0" : "=r"(Value));
    return Value;
}

static inline uint64_t
x86_read_cr3(void)
{
    uint64_t Value;
    __asm__ volatile("mov %%cr3, %0" : "=r"(Value)::"memory");
    return Value;
}

static inline void
x86_write_cr3(uint64_t Value)
{
    __asm__ volatile("mov %0, %%cr3" ::"r"(Value) : "memory");
}

/* Drops this processor's translation of the 4 KiB page holding Address (any page size). */
static inline void
x86_invlpg(uint64_t Address)
{
    __asm__ volatile("invlpg (%0)" ::"r"(Address) : "memory");
}

/*
 * CR8 is the local APIC TPR bits 7:4 (SDM vol. 3A §10.8.6.1). The memory
 * clobber keeps the compiler from moving accesses across an IRQL change.
 */
static inline uint64_t
x86_read_cr8(void)
{
    uint64_t Value;
    __asm__ volatile("mov %%cr8, %0" : "=r"(Value)::"memory");
    return Value;
}

static inline void
x86_write_cr8(uint64_t Value)
{
    __asm__ volatile("mov %0, %%cr8" ::"r"(Value) : "memory");
}

static inline uint64_t
x86_read_rbp(void)
{
    uint64_t Value;
    __asm__ volatile("mov %%rbp, %0" : "=r"(Value));
    return Value;
}

static inline uint64_t
x86_read_rsp(void)
{
    uint64_t Value;
    __asm__ volatile("mov %%rsp, %0" : "=r"(Value));
    return Value;
}

static inline void
x86_lgdt(const void *Pointer)
{
    __asm__ volatile("lgdt (%0)" ::"r"(Pointer) : "memory");
}

static inline void
x86_lidt(const void *Pointer)
{
    __asm__ volatile("lidt (%0)" ::"r"(Pointer) : "memory");
}

static inline void
x86_ltr(uint16_t Selector)
{
    __asm__ volatile("ltr %0" ::"r"(Selector) : "memory");
}

static inline void
x86_set_gs_base(uint64_t Base)
{
    x86_wrmsr(X86_MSR_GS_BASE, Base);
}

static inline uint64_t
x86_read_gs_qword(size_t Offset)
{
    uint64_t Value;
    __asm__ volatile("movq %%gs:(%1), %0" : "=r"(Value) : "r"(Offset) : "memory");
    return Value;
}

static inline void
x86_ud2(void)
{
    __asm__ volatile("ud2");
}

static inline void
x86_int3(void)
{
    __asm__ volatile("int3");
}

/* 16-byte compare-and-exchange; Target must be 16-byte aligned. */
static inline bool
x86_cmpxchg16b(volatile uint64_t *Target, uint64_t *ExpectLo, uint64_t *ExpectHi, uint64_t NewLo,
               uint64_t NewHi)
{
    bool Ok;
    __asm__ volatile("lock cmpxchg16b %1"
                     : "=@ccz"(Ok), "+m"(*(volatile __int128 *)Target), "+a"(*ExpectLo),
                       "+d"(*ExpectHi)
                     : "b"(NewLo), "c"(NewHi)
                     : "memory");
    return Ok;
}

/* Full compiler barrier; x86 keeps stores ordered with other stores (TSO). */
static inline void
x86_compiler_barrier(void)
{
    __asm__ volatile("" ::: "memory");
}

static inline void
x86_mfence(void)
{
    __asm__ volatile("mfence" ::: "memory");
}

/* ---------------------------------------------------------------- descriptor tables */

#define X86_SEL_KERNEL_CODE 0x08
#define X86_SEL_KERNEL_DATA 0x10
#define X86_SEL_TSS         0x18

/* IST slots (1-based in the IDT) for the exceptions that need a known-good stack. */
#define X86_IST_DOUBLE_FAULT  1
#define X86_IST_NMI           2
#define X86_IST_MACHINE_CHECK 3
#define X86_IST_COUNT         3

/* The stack as isr.asm leaves it: general registers, vector, error code, CPU frame. */
/* unsigned long long, as the NT kernel's ULONG64, so it prints with %llx. */
struct x86_trap_frame
{
    unsigned long long r15, r14, r13, r12, r11, r10, r9, r8;
    unsigned long long rbp, rdi, rsi, rdx, rcx, rbx, rax;
    unsigned long long vector, error_code;
    unsigned long long rip, cs, rflags, rsp, ss;
};
_Static_assert(sizeof(struct x86_trap_frame) == 22 * sizeof(unsigned long long),
               "isr.asm pushes 22 quadwords");

struct __attribute__((packed)) x86_tss
{
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};
_Static_assert(sizeof(struct x86_tss) == 104, "SDM vol. 3A figure 8-11");

/* One processor's GDT and TSS. */
struct x86_cpu_tables
{
    uint64_t gdt[5]; // null, code, data, TSS (two slots)
    struct x86_tss tss;
} __attribute__((aligned(16)));

void x86_cpu_tables_load(struct x86_cpu_tables *Tables, const uint64_t IstTop[X86_IST_COUNT]);
void x86_idt_build(void);
void x86_idt_load(void);
void x86_reload_segments(uint16_t CodeSelector, uint16_t DataSelector);
/* Calls Routine on the stack ending at StackTop (16-byte aligned); Routine never returns. */
__attribute__((noreturn)) void x86_switch_stack(uint64_t StackTop, void (*Routine)(void));

/* ---------------------------------------------------------------- page tables (paging.c) */

#define X86_PTE_PRESENT  (1ull << 0)
#define X86_PTE_WRITE    (1ull << 1)
#define X86_PTE_PWT      (1ull << 3)
#define X86_PTE_PCD      (1ull << 4)
#define X86_PTE_LARGE    (1ull << 7) // a 2 MiB (PD) or 1 GiB (PDPT) page
#define X86_PTE_NX       (1ull << 63)
#define X86_PTE_ADDRESS  0x000ffffffffff000ull
#define X86_PAGE_4K      0x1000ull
#define X86_PAGE_2M      0x200000ull
#define X86_PF_PRESENT   (1ull << 0) // #PF error code: a protection violation
#define X86_PF_WRITE     (1ull << 1)
#define X86_PF_RESERVED  (1ull << 3) // a reserved bit set in an entry
#define X86_PF_FETCH     (1ull << 4)
#define X86_EFER_NXE     (1ull << 11)
#define X86_CPUID_EXT_NX (1u << 20) // CPUID 0x80000001 EDX

/*
 * Page tables are reached through the identity map of the first 4 GiB, so a
 * table's physical address is its virtual address. A walk names its levels
 * 4 (PML4) down to 1 (page table).
 */

/* The NX bit where CPUID says the processor has it, else 0; set by x86_paging_init. */
extern uint64_t x86_pte_nx;

/* Reads CPUID for NX and sets EFER.NXE on the calling processor when it exists. */
void x86_paging_init(void);

/*
 * The entry that maps Va: its address in its table, and through *Level the
 * level it sits at (1 for a 4 KiB page, 2 for a 2 MiB page, 3 for 1 GiB). When
 * a level is not present, that level's (non-present) entry is returned.
 */
uint64_t *x86_pte_find(uint64_t *Pml4, uint64_t Va, int *Level);

/*
 * The level-1 entry for Va, creating the tables on the way with Allocate
 * (which returns a zeroed 4 KiB page below 4 GiB, or NULL) and splitting a
 * 2 MiB page into 512 entries with the same attributes. NULL when Allocate
 * fails. The caller serialises changes to the tables and flushes TLBs.
 */
uint64_t *x86_pte_ensure(uint64_t *Pml4, uint64_t Va, uint64_t *(*Allocate)(void));

/* Whether Entry (a leaf at Level) permits an access with #PF error code bits ErrorCode. */
int x86_pte_allows(uint64_t Entry, uint64_t ErrorCode);
