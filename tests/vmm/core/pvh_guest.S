/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tiny PVH test guest for the qtvmm core tests and benchmarks. Its very first
 * instruction writes 'Q' to COM1 (the start-up benchmark's "first
 * instruction" marker). It checks the hvm_start_info magic, echoes the
 * command line, prints "ready" and then acts on the first command-line
 * character:
 *   p (or anything else)  ACPI S5 power-off through PM1a_CNT -> status 0
 *   e                     write 0x42 to the debug-exit port   -> status 66
 *   r                     i8042 reset (0xFE to port 0x64)      -> status 3
 *   t                     triple fault                         -> status 4
 *   h                     halt forever (API / signal tests)
 *   c                     echo COM1 input until '.', then power off
 * A bad start_info magic exits with status 0x21 through the debug-exit port.
 * (Not run through clang-format: it is assembly.)
 */
#define COM1       0x3f8
#define DEBUG_EXIT 0x501
#define PM1A_CNT   0x604
#define S5_SLP_EN  ((5 << 10) | (1 << 13))

    .section .note.pvh, "a"
    .balign 4
    .long 4             /* namesz */
    .long 4             /* descsz */
    .long 18            /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long _start

    .text
    .code32
    .globl _start
_start:
    mov $COM1, %dx
    mov $'Q', %al
    out %al, %dx
    mov $stack_top, %esp
    cmpl $0x336ec578, (%ebx)
    jne bad_magic
    mov %ebx, %ebp              /* keep start_info */
    mov $msg_hello, %esi
    call puts
    mov 24(%ebp), %esi          /* cmdline_paddr (low 32 bits) */
    test %esi, %esi
    jz 1f
    call puts
1:  mov $msg_ready, %esi
    call puts
    mov 24(%ebp), %esi
    xor %eax, %eax
    test %esi, %esi
    jz poweroff
    movb (%esi), %al
    cmp $'e', %al
    je debug_exit
    cmp $'r', %al
    je reset
    cmp $'t', %al
    je triple
    cmp $'h', %al
    je hang
    cmp $'c', %al
    je echo
poweroff:
    mov $PM1A_CNT, %dx
    mov $S5_SLP_EN, %ax
    out %ax, %dx
    mov $0x22, %al              /* still running: report failure */
    jmp exit_code
debug_exit:
    mov $0x42, %al
exit_code:
    mov $DEBUG_EXIT, %dx
    out %al, %dx
hang:
    cli
    hlt
    jmp hang
reset:
    mov $0x64, %dx
    mov $0xfe, %al
    out %al, %dx
    jmp hang
triple:                         /* qtvmm starts PVH guests with an empty IDT */
    ud2
    jmp hang
bad_magic:
    mov $0x21, %al
    jmp exit_code

/* Echo COM1 input until a '.' arrives, then power off. */
echo:
    mov $COM1 + 5, %dx          /* LSR */
    in %dx, %al
    test $1, %al
    jz echo
    mov $COM1, %dx
    in %dx, %al
    out %al, %dx
    cmp $'.', %al
    jne echo
    jmp poweroff

/* Print the NUL-terminated string at %esi. */
puts:
    mov $COM1, %dx
2:  lodsb
    test %al, %al
    jz 3f
    out %al, %dx
    jmp 2b
3:  ret

    .section .rodata
msg_hello:
    .asciz "\nhello from the qtvmm test guest, cmdline: "
msg_ready:
    .asciz "\nready\n"

    .bss
    .balign 16
    .skip 4096
stack_top:
