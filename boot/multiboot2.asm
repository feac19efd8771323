; SPDX-License-Identifier: MIT
; Multiboot2 header and the bootstrap processor's path from GRUB to 64-bit C.
;
; Entry contract (multiboot2 spec §3.3, i386 machine state):
;   32-bit protected mode, paging off, flat CS/DS, interrupts disabled,
;   EAX = 0x36d76289, EBX = physical address of the multiboot2 information.
;   Nothing else may be assumed: under BIOS CR4 is 0, under UEFI SSE may be on,
;   the stack pointer is undefined.
; Exit contract (KiSystemStartup):
;   64-bit long mode, CS = 0x08, data segments 0x10, CR3 = KiBootPml4 (identity
;   map of 0..4 GiB, the kernel at 0xFFFFFFFF80000000 -> 0..2 GiB, 4th GiB
;   uncached for the local and I/O APICs), interrupts off, .bss zeroed,
;   RSP = top of the BSP's boot stack, RDI = physical address of the info.
;   Never returns.

bits 32

%include "cpu.inc"

MB2_HEADER_MAGIC    equ 0xe85250d6
MB2_ARCH_I386       equ 0
MB2_BOOT_MAGIC      equ 0x36d76289
MB2_TAG_END         equ 0
MB2_TAG_INFO_REQ    equ 1
MB2_TAG_OPTIONAL    equ 1
MB2_INFO_CMDLINE    equ 1
MB2_INFO_MMAP       equ 6
MB2_INFO_ACPI_OLD   equ 14
MB2_INFO_ACPI_NEW   equ 15
MB2_INFO_EFI_MMAP   equ 17

KERNEL_VMA          equ 0xFFFFFFFF80000000
COM1                equ 0x3f8
QEMU_EXIT_PORT      equ 0xf4
QEMU_EXIT_BUGCHECK  equ 0x12

PTE_P               equ 1 << 0
PTE_RW              equ 1 << 1
PTE_PWT             equ 1 << 3
PTE_PCD             equ 1 << 4
PTE_PS              equ 1 << 7        ; 2 MiB page in a page-directory entry


BOOT_STACK_SIZE     equ 32768

section .multiboot
align 8
mb2_header:
    dd MB2_HEADER_MAGIC
    dd MB2_ARCH_I386
    dd mb2_header_end - mb2_header
    dd -(MB2_HEADER_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))
align 8
.info_request:
    dw MB2_TAG_INFO_REQ
    dw MB2_TAG_OPTIONAL
    dd .info_request_end - .info_request
    dd MB2_INFO_CMDLINE
    dd MB2_INFO_MMAP
    dd MB2_INFO_EFI_MMAP
    dd MB2_INFO_ACPI_OLD
    dd MB2_INFO_ACPI_NEW
.info_request_end:
align 8
    dw MB2_TAG_END
    dw 0
    dd 8
mb2_header_end:

section .boot.text
global KiStart32
KiStart32:
    cli
    cld
    mov     esp, boot_stack_top
    cmp     eax, MB2_BOOT_MAGIC
    jne     .bad_magic
    mov     [boot_info_pa], ebx

    ; Long mode needs CPUID leaf 0x80000001 EDX.LM (SDM vol. 3A §9.8.5).
    mov     eax, 0x80000000
    cpuid
    cmp     eax, 0x80000001
    jb      .no_long_mode
    mov     eax, 0x80000001
    cpuid
    mov     edi, edx                    ; EDX bit 20 = NX, bit 29 = LM
    test    edx, 1 << 29
    jz      .no_long_mode

    call    build_page_tables

    mov     eax, CR4_VALUE              ; every CR4 bit set explicitly
    mov     cr4, eax
    mov     eax, KiBootPml4
    mov     cr3, eax
    mov     ecx, EFER_MSR
    rdmsr
    or      eax, EFER_LME
    test    edi, 1 << 20
    jz      .no_nx
    or      eax, EFER_NXE
.no_nx:
    wrmsr
    mov     eax, CR0_VALUE              ; paging on activates long mode (LMA)
    mov     cr0, eax
    lgdt    [boot_gdt_pointer]
    jmp     0x08:long_mode_entry

.bad_magic:
    mov     esi, msg_bad_magic
    jmp     boot_fail
.no_long_mode:
    mov     esi, msg_no_long_mode
    jmp     boot_fail

; Identity-maps 0..4 GiB with 2 MiB pages and maps 0xFFFFFFFF80000000 onto
; 0..2 GiB. The fourth GiB holds the APICs and PCI holes: map it uncached.
build_page_tables:
    mov     edi, KiBootPml4
    mov     ecx, (boot_tables_end - KiBootPml4) / 4
    xor     eax, eax
    rep stosd

    mov     dword [KiBootPml4 + 0 * 8], boot_pdpt_low + PTE_P + PTE_RW
    mov     dword [KiBootPml4 + 511 * 8], boot_pdpt_high + PTE_P + PTE_RW
    xor     ecx, ecx
.pdpt:
    mov     eax, ecx
    shl     eax, 12
    add     eax, boot_pd + PTE_P + PTE_RW
    mov     [boot_pdpt_low + ecx * 8], eax
    inc     ecx
    cmp     ecx, 4
    jne     .pdpt
    mov     dword [boot_pdpt_high + 510 * 8], boot_pd + 0 * 4096 + PTE_P + PTE_RW
    mov     dword [boot_pdpt_high + 511 * 8], boot_pd + 1 * 4096 + PTE_P + PTE_RW

    xor     ecx, ecx                    ; 2048 entries cover 4 GiB
.pd:
    mov     eax, ecx
    shl     eax, 21                     ; ecx * 2 MiB
    or      eax, PTE_P + PTE_RW + PTE_PS
    cmp     ecx, 3 * 512
    jb      .cached
    or      eax, PTE_PCD + PTE_PWT
.cached:
    mov     [boot_pd + ecx * 8], eax
    inc     ecx
    cmp     ecx, 4 * 512
    jne     .pd
    ret

; Prints the NUL-terminated string at ESI on COM1, then asks QEMU to exit
; with the bug-check code so that a failed boot never looks like a pass.
boot_fail:
.next:
    mov     dx, COM1 + 5
.wait:
    in      al, dx
    test    al, 0x20                    ; LSR.THRE
    jz      .wait
    lodsb
    test    al, al
    jz      .done
    mov     dx, COM1
    out     dx, al
    jmp     .next
.done:
    mov     al, QEMU_EXIT_BUGCHECK
    out     QEMU_EXIT_PORT, al
.halt:
    hlt
    jmp     .halt

bits 64
long_mode_entry:
    mov     ax, 0x10
    mov     ds, ax
    mov     es, ax
    mov     ss, ax
    xor     eax, eax
    mov     fs, ax
    mov     gs, ax
    mov     rax, KiStart64
    jmp     rax

section .boot.data
align 8
boot_gdt:
    dq 0                                ; null
    dq 0x00af9a000000ffff               ; 0x08: 64-bit code, DPL 0
    dq 0x00cf92000000ffff               ; 0x10: data, DPL 0
boot_gdt_end:
boot_gdt_pointer:
    dw boot_gdt_end - boot_gdt - 1
    dd boot_gdt
global KiBootInfoPhysical
KiBootInfoPhysical:
boot_info_pa:
    dd 0
msg_bad_magic:
    db "Spindle: not loaded by a multiboot2 loader (bad magic in EAX)", 13, 10, 0
msg_no_long_mode:
    db "Spindle: this processor does not support 64-bit long mode", 13, 10, 0

section .boot.bss nobits
align 4096
global KiBootPml4
KiBootPml4:
    resb 4096
boot_pdpt_low:
    resb 4096
boot_pdpt_high:
    resb 4096
boot_pd:
    resb 4 * 4096
boot_tables_end:
    resb BOOT_STACK_SIZE
boot_stack_top:

section .text
; Now in the higher half: zero .bss and enter C, still on the boot stack
; (.boot.bss, identity-mapped), which KiSystemStartup leaves for a kernel
; stack with a guard page once the kernel's page tables exist. The boot page
; tables stay in use until then.
extern KiSystemStartup
extern __bss_start
extern __bss_end
global KiStart64
KiStart64:
    mov     rdi, __bss_start
    mov     rcx, __bss_end
    sub     rcx, rdi
    xor     eax, eax
    rep stosb
    xor     ebp, ebp                    ; terminates frame-pointer backtraces
    mov     edi, [boot_info_pa]
    call    KiSystemStartup
.hang:
    cli
    hlt
    jmp     .hang
