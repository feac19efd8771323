; SPDX-License-Identifier: MIT
; Interrupt and exception entry stubs for all 256 vectors.
;
; Entry contract: 64-bit mode, ring 0 only (Spindle has no user mode, so there is
; no swapgs), the CPU has pushed SS, RSP, RFLAGS, CS, RIP and, for vectors 8,
; 10-14, 17, 21, 29 and 30, an error code (SDM vol. 3A §6.13). Interrupts are
; off (every IDT entry is an interrupt gate).
; Each stub pushes a zero error code where the CPU pushes none, then the vector,
; and joins the common path, which saves every general register so that the
; stack holds a struct x86_trap_frame (arch/x86_64/x86.h), calls
; KiTrapDispatch(frame) and returns with iretq, restoring whatever the C code
; left in the frame.

bits 64
section .text

extern KiTrapDispatch

%macro ISR_NOERR 1
x86_isr_%1:
    push    qword 0
    push    qword %1
    jmp     isr_common
%endmacro

%macro ISR_ERR 1
x86_isr_%1:
    push    qword %1
    jmp     isr_common
%endmacro

%assign v 0
%rep 256
%if v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30
    ISR_ERR v
%else
    ISR_NOERR v
%endif
%assign v v + 1
%endrep

isr_common:
    push    rax
    push    rbx
    push    rcx
    push    rdx
    push    rsi
    push    rdi
    push    rbp
    push    r8
    push    r9
    push    r10
    push    r11
    push    r12
    push    r13
    push    r14
    push    r15
    cld
    mov     rdi, rsp                    ; struct x86_trap_frame *
    call    KiTrapDispatch              ; stack is 16-byte aligned here (176-byte frame)
    pop     r15
    pop     r14
    pop     r13
    pop     r12
    pop     r11
    pop     r10
    pop     r9
    pop     r8
    pop     rbp
    pop     rdi
    pop     rsi
    pop     rdx
    pop     rcx
    pop     rbx
    pop     rax
    add     rsp, 16                     ; vector and error code
    iretq

section .rodata
align 8
global x86_isr_table
x86_isr_table:
%assign v 0
%rep 256
    dq x86_isr_ %+ v
%assign v v + 1
%endrep
