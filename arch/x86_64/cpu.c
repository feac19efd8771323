/* SPDX-License-Identifier: MIT */
/*
 * Per-processor GDT and TSS, and the IDT that all processors share.
 */
#include "arch/x86_64/x86.h"

struct __attribute__((packed)) x86_table_pointer
{
    uint16_t limit;
    uint64_t base;
};

struct x86_idt_gate
{
    uint16_t offset_low;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_high;
    uint32_t reserved;
};
_Static_assert(sizeof(struct x86_idt_gate) == 16, "SDM vol. 3A figure 6-8");

#define GATE_INTERRUPT 0x8e // present, DPL 0, 64-bit interrupt gate (IF cleared on entry)

extern const uint64_t x86_isr_table[256];

static struct x86_idt_gate x86_idt[256] __attribute__((aligned(16)));

void
x86_cpu_tables_load(struct x86_cpu_tables *Tables, const uint64_t IstTop[X86_IST_COUNT])
{
    uint64_t Base = (uint64_t)&Tables->tss;
    uint64_t Limit = sizeof(Tables->tss) - 1;
    struct x86_table_pointer Pointer;

    for (int i = 0; i < X86_IST_COUNT; i++)
    {
        Tables->tss.ist[i] = IstTop[i];
    }
    Tables->tss.iomap_base = sizeof(Tables->tss); // no I/O permission bitmap

    Tables->gdt[0] = 0;
    Tables->gdt[1] = 0x00af9a000000ffffULL; // 64-bit code, DPL 0
    Tables->gdt[2] = 0x00cf92000000ffffULL; // data, DPL 0
    /* 64-bit available TSS descriptor, 16 bytes (SDM vol. 3A §8.2.3). */
    Tables->gdt[3] = (Limit & 0xffff) | ((Base & 0xffffff) << 16) | (0x89ULL << 40) |
                     ((Limit & 0xf0000) << 32) | ((Base & 0xff000000) << 32);
    Tables->gdt[4] = Base >> 32;

    Pointer.limit = sizeof(Tables->gdt) - 1;
    Pointer.base = (uint64_t)Tables->gdt;
    x86_lgdt(&Pointer);
    x86_reload_segments(X86_SEL_KERNEL_CODE, X86_SEL_KERNEL_DATA);
    x86_ltr(X86_SEL_TSS);
}

void
x86_idt_build(void)
{
    for (int v = 0; v < 256; v++)
    {
        uint64_t Handler = x86_isr_table[v];
        struct x86_idt_gate *Gate = &x86_idt[v];

        Gate->offset_low = Handler & 0xffff;
        Gate->selector = X86_SEL_KERNEL_CODE;
        Gate->ist = 0;
        Gate->type_attr = GATE_INTERRUPT;
        Gate->offset_mid = (Handler >> 16) & 0xffff;
        Gate->offset_high = Handler >> 32;
        Gate->reserved = 0;
    }
    x86_idt[8].ist = X86_IST_DOUBLE_FAULT;
    x86_idt[2].ist = X86_IST_NMI;
    x86_idt[18].ist = X86_IST_MACHINE_CHECK;
}

void
x86_idt_load(void)
{
    struct x86_table_pointer Pointer = {sizeof(x86_idt) - 1, (uint64_t)x86_idt};
    x86_lidt(&Pointer);
}
