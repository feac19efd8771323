; SPDX-License-Identifier: MIT
; Spindle EFI loader: the way out of UEFI's long mode into the kernel's 32-bit
; multiboot2 entry, and the loader's port I/O (no inline assembly in C).
;
; Linked into BOOTX64.EFI (a position-independent PE32+ image, relocated by
; the firmware): every address below is RIP-relative.
;
; ---- LdrEnterKernel32Start .. LdrEnterKernel32End: the trampoline ----------
; A blob of position-independent code that boot/efi/loader.c copies to a page
; it allocated (EfiLoaderCode, below 4 GiB, not overlapping the kernel) and
; calls there. It may not run in place: BOOTX64.EFI itself may sit above 4 GiB.
;
; Entry contract (called from C, System V AMD64 ABI, after ExitBootServices):
;   64-bit long mode on the firmware's page tables, which identity-map the
;   trampoline page; the copy starts at a 16-byte aligned address below 4 GiB.
;   EDI = physical address of the multiboot2 information (below 4 GiB),
;   ESI = physical address of the kernel's 32-bit entry (ELF e_entry, KiStart32).
;   The stack is not used after the far return (it may be above 4 GiB).
; Exit contract (the multiboot2 i386 machine state, what GRUB hands over):
;   32-bit protected mode, paging off (CR0.PG = 0), EFER.LME = 0, CR4.PCIDE = 0,
;   interrupts disabled, CS = 0x08 (flat 32-bit code, base 0, limit 4 GiB),
;   DS = ES = FS = GS = SS = 0x10 (flat 32-bit data), GDTR = the 3-entry GDT
;   inside the trampoline copy (so the copy must stay intact until the kernel
;   loads its own GDT, which KiStart32 does before touching other memory),
;   EAX = 0x36d76289, EBX = the information address, ESP undefined, jumps to
;   ESI. Never returns.
;
; ---- LdrOutByte / LdrInByte --------------------------------------------------
; void LdrOutByte(UINT16 port /* DI */, UINT8 value /* SIL */);
; UINT8 LdrInByte(UINT16 port /* DI */);
; System V AMD64 ABI, any mode the loader runs in (before and after
; ExitBootServices). Clobber only RAX and RDX.

bits 64
default rel

MB2_BOOT_MAGIC  equ 0x36d76289
CR0_PG          equ 1 << 31
CR4_PCIDE       equ 1 << 17
EFER_MSR        equ 0xc0000080
EFER_LME        equ 1 << 8
SEL_CODE32      equ 0x08
SEL_DATA32      equ 0x10

section .text

align 16
global LdrEnterKernel32Start
LdrEnterKernel32Start:
    cli
    cld
    mov     ebx, edi                    ; the information address, in EBX from here on
    ; Leaving long mode with CR4.PCIDE = 1 is a #GP (SDM vol. 3A §4.10.1).
    ; Clearing PCIDE is allowed at any time (it flushes the TLB).
    mov     rax, cr4
    and     rax, ~CR4_PCIDE
    mov     cr4, rax
    ; GDTR (limit, 64-bit base) built on the stack: nothing in the copy is written.
    lea     rax, [ldr_gdt]
    sub     rsp, 16
    mov     word [rsp + 6], ldr_gdt_end - ldr_gdt - 1
    mov     [rsp + 8], rax
    lgdt    [rsp + 6]
    add     rsp, 16
    ; Far return into compatibility mode: CS = the 32-bit code segment.
    lea     rax, [.compat]
    push    SEL_CODE32
    push    rax
    o64 retf

bits 32
.compat:
    mov     ax, SEL_DATA32
    mov     ds, ax
    mov     es, ax
    mov     fs, ax
    mov     gs, ax
    mov     ss, ax
    ; Paging off: IA32_EFER.LMA clears, the processor is in protected mode.
    ; The trampoline page is identity-mapped, so the next fetch is the same byte.
    mov     eax, cr0
    and     eax, ~CR0_PG
    mov     cr0, eax
    ; Long mode off, so that the kernel's own switch starts from scratch.
    mov     ecx, EFER_MSR
    rdmsr
    and     eax, ~EFER_LME
    wrmsr
    mov     eax, MB2_BOOT_MAGIC
    jmp     esi

align 8
ldr_gdt:
    dq 0                                ; null
    dq 0x00cf9a000000ffff               ; 0x08: 32-bit code, base 0, limit 4 GiB, DPL 0
    dq 0x00cf92000000ffff               ; 0x10: 32-bit data, base 0, limit 4 GiB, DPL 0
ldr_gdt_end:

global LdrEnterKernel32End
LdrEnterKernel32End:

bits 64
global LdrOutByte
LdrOutByte:
    mov     edx, edi
    mov     eax, esi
    out     dx, al
    ret

global LdrInByte
LdrInByte:
    mov     edx, edi
    xor     eax, eax
    in      al, dx
    ret

section .note.GNU-stack noalloc noexec nowrite progbits
