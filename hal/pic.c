/* SPDX-License-Identifier: MIT */
/*
 * The legacy 8259 PICs are not used: remap them out of the exception range
 * (their spurious IRQ 7/15 must not look like a fault) and mask every line.
 */
#include "hal/halp.h"

#define PIC1_COMMAND 0x20
#define PIC1_DATA    0x21
#define PIC2_COMMAND 0xa0
#define PIC2_DATA    0xa1

#define PIC_ICW1_INIT_ICW4 0x11 // edge, cascade, ICW4 follows
#define PIC_ICW4_8086      0x01
#define PIC_VECTOR_BASE    0xf0 // IRQ 0-15 -> 0xf0-0xff, HIGH_LEVEL, never unmasked

VOID
HalDisableLegacyPic(VOID)
{
    x86_outb(PIC1_COMMAND, PIC_ICW1_INIT_ICW4);
    x86_outb(PIC2_COMMAND, PIC_ICW1_INIT_ICW4);
    x86_outb(PIC1_DATA, PIC_VECTOR_BASE);     // ICW2: master base
    x86_outb(PIC2_DATA, PIC_VECTOR_BASE + 8); // ICW2: slave base
    x86_outb(PIC1_DATA, 4);                   // ICW3: slave on IRQ 2
    x86_outb(PIC2_DATA, 2);                   // ICW3: cascade identity
    x86_outb(PIC1_DATA, PIC_ICW4_8086);
    x86_outb(PIC2_DATA, PIC_ICW4_8086);
    x86_outb(PIC1_DATA, 0xff); // mask all
    x86_outb(PIC2_DATA, 0xff);
}
