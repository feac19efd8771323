/* SPDX-License-Identifier: MIT */
/*
 * Upcalls: exactly the kernel entry points that code below the kernel calls
 * (STYLE.md section 1). NASM in boot/ and arch/ may `extern` only what is
 * declared here (and linker-script symbols); the HAL's C code may include
 * nothing else from kernel/. scripts/check-layering.sh checks both.
 */
#pragma once

#include <wdm.h>

#include "arch/x86_64/x86.h"

struct _KPRCB;

/*
 * The boot processor's first C code: boot/multiboot2.asm jumps here in 64-bit
 * mode, interrupts off, on the boot stack (.boot.bss), with RDI = the physical
 * address of the multiboot2 information. Never returns.
 */
__attribute__((noreturn)) VOID KiSystemStartup(ULONG64 BootInfoPhysical);

/*
 * An application processor's first kernel code (boot/trampoline.asm calls it
 * with RDI = its PRCB, on its kernel stack, interrupts off): loads its tables,
 * enables its local APIC, goes online and enters KiIdleLoop. Never returns.
 */
__attribute__((noreturn)) VOID KiSecondaryStartup(struct _KPRCB *Prcb);

/*
 * Every exception and interrupt vector: arch/x86_64/isr.asm's common stub
 * calls it with the saved frame, interrupts off (kernel/ke/trap.c routes
 * exceptions to the bug-check path and vectors 32-255 to KiDispatchVector).
 */
VOID KiTrapDispatch(struct x86_trap_frame *Frame);
