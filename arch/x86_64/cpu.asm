; SPDX-License-Identifier: MIT
; Small routines that C cannot express: reloading segment registers and a
; setjmp/longjmp pair for the test harness's non-local exits.
;
; All follow the System V AMD64 calling convention and run in 64-bit mode at
; any IRQL; none changes the interrupt flag.

bits 64
section .text

; void x86_reload_segments(uint16_t code_selector /* di */, uint16_t data_selector /* si */)
; Reloads CS with a far return and DS/ES/SS with the data selector; FS and GS
; are set to the null selector (their bases come from MSRs).
global x86_reload_segments
x86_reload_segments:
    mov     ds, si
    mov     es, si
    mov     ss, si
    xor     eax, eax
    mov     fs, ax
    mov     gs, ax
    pop     rax                         ; return address
    movzx   rdi, di
    push    rdi
    push    rax
    retfq

; int x86_setjmp(KT_JMP_BUF *buf /* rdi */)
; Saves the callee-saved registers, the stack pointer after return and the
; return address. Returns 0; x86_longjmp makes it return again with a nonzero value.
global x86_setjmp
x86_setjmp:
    mov     [rdi + 0], rbx
    mov     [rdi + 8], rbp
    mov     [rdi + 16], r12
    mov     [rdi + 24], r13
    mov     [rdi + 32], r14
    mov     [rdi + 40], r15
    lea     rdx, [rsp + 8]
    mov     [rdi + 48], rdx
    mov     rdx, [rsp]
    mov     [rdi + 56], rdx
    xor     eax, eax
    ret

; void x86_longjmp(KT_JMP_BUF *buf /* rdi */, int value /* esi */)
; The frame that called x86_setjmp must still be live.
global x86_longjmp
x86_longjmp:
    mov     eax, esi
    test    eax, eax
    jnz     .nonzero
    inc     eax
.nonzero:
    mov     rbx, [rdi + 0]
    mov     rbp, [rdi + 8]
    mov     r12, [rdi + 16]
    mov     r13, [rdi + 24]
    mov     r14, [rdi + 32]
    mov     r15, [rdi + 40]
    mov     rsp, [rdi + 48]
    jmp     [rdi + 56]

; void x86_switch_stack(uint64_t stack_top /* rdi */, void (*routine)(void) /* rsi */)
; Continues on a new stack: RSP = stack_top (16-byte aligned), RBP = 0 (ends
; backtraces), then calls routine, which must not return (if it does, ud2).
global x86_switch_stack
x86_switch_stack:
    mov     rsp, rdi
    xor     ebp, ebp
    call    rsi
    ud2
