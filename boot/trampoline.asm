; SPDX-License-Identifier: MIT
; AP trampoline: the first code an application processor runs after the
; boot processor's INIT-SIPI-SIPI, from real mode to the kernel's 64-bit entry.
;
; Where it runs: hal/apsmp.c copies the bytes HalpTrampolineStart ..
; HalpTrampolineEnd to the start of a 4 KiB page below 1 MiB (the SIPI vector
; is the page number, SDM vol. 3A §10.6.1) and fills the mailbox at
; AP_MAILBOX_OFFSET in the same page (boot/mailbox.inc; C: HAL_AP_MAILBOX in
; hal/halp.h). The page address is chosen at run time, so the code is position
; independent: in real mode CS:IP = page>>4 : 0 gives the base, and every
; linear address the descriptors and far jumps need (GDT base, the 32- and
; 64-bit entry points) is computed from it and stored in the page before use.
; The copy in .rodata is never executed.
;
; Entry contract (SDM vol. 3A §9.1.1, state after INIT; §8.4.4.2 SIPI):
;   16-bit real mode, CS = page >> 4, IP = 0, interrupts disabled by INIT
;   (IF = 0; cleared again here), CR0 = 0x60000010 (caching disabled), CR4 = 0,
;   EFER = 0, no usable stack, every other register undefined.
;   The mailbox holds CR3 (below 4 GiB), the 64-bit stack top, the PRCB and
;   the entry address; STARTED is AP_STAGE_NONE.
; Exit contract (the mailbox's ENTRY, e.g. KiSecondaryStartup(PKPRCB)):
;   64-bit long mode, CS = 0x08, DS/ES/SS = 0x10, FS = GS = null selector with
;   base 0 (the entry loads its own GDT, TSS, IDT and GS base), GDTR = the
;   temporary GDT in this page (valid until the page is freed, which the
;   kernel does only after every AP has loaded its own GDT), no IDT (any
;   exception before the entry loads one triple-faults the AP), interrupts
;   disabled, CR0 = 0x80010033, CR4 = PAE|PGE|OSFXSR|OSXMMEXCPT, EFER = LME
;   (+ NXE where CPUID 0x80000001 EDX.NX says so), the same values as
;   boot/multiboot2.asm, CR3 = the mailbox CR3, RSP = the mailbox stack top
;   (16-byte aligned before the call), RDI = the mailbox PRCB, RBP = 0 (ends
;   backtraces). STARTED = AP_STAGE_LONG_MODE, stored after every mailbox read
;   so the BSP may reuse the mailbox once it sees it. The entry never returns;
;   if it did the AP halts here with interrupts off.
; Stages written to STARTED on the way (AP_STAGE_*): real mode, protected
; mode, long mode, so a start that fails can say where it stopped.

%include "mailbox.inc"
%include "cpu.inc"

CPUID_EXT_FEATURES  equ 0x80000001
CPUID_EDX_NX        equ 1 << 20

SEL_CODE64          equ 0x08          ; the kernel's selectors (arch/x86_64/x86.h)
SEL_DATA            equ 0x10
SEL_CODE32          equ 0x18          ; only here: the step through protected mode

; Offset of a label from the start of the page.
%define PAGE_OFFSET(label) ((label) - HalpTrampolineStart)
; The mailbox, addressed from a register holding the page base (or DS base).
%define MAILBOX(field) (AP_MAILBOX_OFFSET + (field))

section .rodata
align 16
global HalpTrampolineStart
global HalpTrampolineEnd

bits 16
HalpTrampolineStart:
    cli
    cld
    mov     ax, cs
    mov     ds, ax                      ; DS:offset = page + offset
    mov     dword [MAILBOX(AP_MAILBOX_STARTED)], AP_STAGE_REAL_MODE

    ; ESI = physical (= linear) base of the page, kept in ESI/RSI to the end
    ; (CPUID below clobbers EBX).
    xor     esi, esi
    mov     si, ax
    shl     esi, 4

    ; Patch the linear addresses that depend on where the page is.
    lea     eax, [esi + PAGE_OFFSET(temporary_gdt)]
    mov     [PAGE_OFFSET(gdt_pointer.base)], eax
    lea     eax, [esi + PAGE_OFFSET(protected_mode)]
    mov     [PAGE_OFFSET(protected_mode_pointer)], eax
    lea     eax, [esi + PAGE_OFFSET(long_mode)]
    mov     [PAGE_OFFSET(long_mode_pointer)], eax

    o32 lgdt [PAGE_OFFSET(gdt_pointer)] ; o32: load all 32 bits of the base
    mov     eax, cr0
    or      eax, CR0_PE
    mov     cr0, eax
    ; The far jump right after setting PE loads CS from the new GDT (SDM vol. 3A §9.9.1).
    jmp     dword far [PAGE_OFFSET(protected_mode_pointer)]

bits 32
protected_mode:
    mov     ax, SEL_DATA
    mov     ds, ax
    mov     es, ax
    mov     ss, ax
    mov     dword [esi + MAILBOX(AP_MAILBOX_STARTED)], AP_STAGE_PROTECTED_MODE

    ; Long mode: PAE, CR3, EFER.LME, then paging (SDM vol. 3A §9.8.5). Every
    ; CR4 and EFER bit is set here: INIT cleared them.
    mov     eax, CR4_VALUE
    mov     cr4, eax
    mov     eax, [esi + MAILBOX(AP_MAILBOX_CR3)]
    mov     cr3, eax
    mov     eax, CPUID_EXT_FEATURES
    cpuid
    mov     edi, edx
    mov     ecx, EFER_MSR
    rdmsr
    or      eax, EFER_LME
    test    edi, CPUID_EDX_NX
    jz      .no_nx
    or      eax, EFER_NXE
.no_nx:
    wrmsr
    mov     eax, CR0_VALUE              ; paging on activates long mode (compatibility mode)
    mov     cr0, eax
    jmp     far [esi + PAGE_OFFSET(long_mode_pointer)]

bits 64
long_mode:
    mov     ax, SEL_DATA
    mov     ds, ax
    mov     es, ax
    mov     ss, ax
    xor     eax, eax
    mov     fs, ax
    mov     gs, ax
    ; The upper halves of the registers are undefined after the switch from a
    ; 32-bit mode (SDM vol. 1 §3.4.1.1); this zero-extends ESI.
    mov     esi, esi
    mov     rsp, [rsi + MAILBOX(AP_MAILBOX_STACK_TOP)]
    mov     rdi, [rsi + MAILBOX(AP_MAILBOX_PRCB)]
    mov     rax, [rsi + MAILBOX(AP_MAILBOX_ENTRY)]
    ; Release: x86 makes these loads complete before the store below becomes
    ; visible (loads are not reordered with later stores, SDM vol. 3A
    ; §8.2.2), so the BSP, which polls STARTED, may reuse the mailbox once it
    ; reads AP_STAGE_LONG_MODE (pairs with the acquire load in hal/apsmp.c).
    mov     dword [rsi + MAILBOX(AP_MAILBOX_STARTED)], AP_STAGE_LONG_MODE
    xor     ebp, ebp
    call    rax
.hang:
    cli
    hlt
    jmp     .hang

; The temporary GDT: the kernel's code and data selectors, plus a 32-bit code
; segment for the step through protected mode. All flat.
align 8
temporary_gdt:
    dq 0                                ; null
    dq 0x00af9a000000ffff               ; 0x08: 64-bit code, DPL 0
    dq 0x00cf92000000ffff               ; 0x10: data, DPL 0, 4 GiB
    dq 0x00cf9a000000ffff               ; 0x18: 32-bit code, DPL 0, 4 GiB
temporary_gdt_end:

align 4
gdt_pointer:
    dw temporary_gdt_end - temporary_gdt - 1
.base:
    dd 0                                ; patched: linear address of temporary_gdt
protected_mode_pointer:                 ; m16:32 for the far jump into protected mode
    dd 0                                ; patched: linear address of protected_mode
    dw SEL_CODE32
long_mode_pointer:                      ; m16:32 for the far jump into 64-bit mode
    dd 0                                ; patched: linear address of long_mode
    dw SEL_CODE64
HalpTrampolineEnd:

; Assemble-time check: the code and its data end below the mailbox (a
; negative TIMES count is an error).
    times -((AP_MAILBOX_OFFSET - (HalpTrampolineEnd - HalpTrampolineStart)) < 0) db 0
