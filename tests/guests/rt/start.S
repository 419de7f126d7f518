/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PVH entry of the test guests. The VMM enters pvh_start in 32-bit flat
 * protected mode, paging off, with EBX = physical address of hvm_start_info.
 * We build identity page tables ONCE (2 MiB pages for the first 4 GiB,
 * 1 GiB pages up to 512 GiB when the CPU has them), switch to long mode and
 * call rt_main. The AP trampoline at the end brings application processors
 * from real mode to the same long-mode page tables.
 */
#define COM1             0x3f8
#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define AP_TRAMPOLINE_BASE 0x8000
#define AP_STACK_SIZE    8192
#define AP_MAX           64

#define PDPT_1G_END 64 /* 1 GiB pages map 4 GiB up to here (64-bit BARs) */

#define SEL_CODE64 0x08
#define SEL_DATA   0x10
#define SEL_CODE32 0x18

/* PVH entry note: name "Xen", desc = 32-bit physical entry (as a 64-bit value). */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .quad pvh_start

    .section .text.entry, "ax"
    .code32
    .globl pvh_start
pvh_start:
    /* First guest instruction: one byte (a newline) on COM1 marks "guest running". */
    movw $COM1, %dx
    movb $0x0a, %al
    outb %al, %dx

    cli
    cld
    movl %ebx, %ebp                /* hvm_start_info, kept across the setup */
    rdtsc
    movl %eax, rt_entry_tsc
    movl %edx, rt_entry_tsc + 4

    /* Zero .bss (stacks and large buffers live in .noinit instead). */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    movl $boot_stack_top, %esp
    movl %ebp, rt_start_info_pa

    /*
     * The page tables are static data (below). Only when the CPU has no 1 GiB
     * pages are the 4-64 GiB entries removed.
     */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb 4f
    movl $0x80000001, %eax
    cpuid
    btl $26, %edx
    jc 5f
4:  movl $4, %ecx
6:  movl $0, pdpt(, %ecx, 8)
    movl $0, pdpt + 4(, %ecx, 8)
    incl %ecx
    cmpl $PDPT_1G_END, %ecx
    jb 6b
5:
    lgdt gdt_desc
    call enter_long_mode
    ljmp $SEL_CODE64, $long_entry

/* Shared by the BSP and the APs: PAE, CR3, EFER.LME, paging. */
enter_long_mode:
    movl %cr4, %eax
    orl $0x20, %eax                /* PAE */
    movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx         /* EFER */
    rdmsr
    orl $0x100, %eax               /* LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax          /* PG | PE */
    andl $0x9fffffff, %eax         /* caches on: clear CD, NW */
    movl %eax, %cr0
    ret

    .code64
long_entry:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorq %rbp, %rbp
    call rt_main
6:  cli
    hlt
    jmp 6b

/* AP long-mode entry: take the next stack and run ap_main. */
ap_long_entry:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorw %ax, %ax
    movw %ax, %fs
    movw %ax, %gs
    movl $1, %eax
    lock xaddl %eax, ap_next_stack
    cmpl $AP_MAX, %eax
    jae 7f
    incl %eax
    imull $AP_STACK_SIZE, %eax
    leaq ap_stacks(%rax), %rsp
    xorq %rbp, %rbp
    call ap_main
7:  cli
    hlt
    jmp 7b

/*
 * Real-mode AP trampoline, copied to AP_TRAMPOLINE_BASE (SIPI vector 0x08):
 * CS = 0x0800, IP = 0. Only relative offsets are used until the far jump.
 */
    .section .data.trampoline, "aw"
    .code16
    .globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
    cli
    cld
    movw %cs, %ax
    movw %ax, %ds
    lgdtl (tramp_gdt_desc - ap_tramp_start)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $(AP_TRAMPOLINE_BASE + ap_tramp32 - ap_tramp_start)
    .code32
ap_tramp32:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $(AP_TRAMPOLINE_BASE + tramp_stack_top - ap_tramp_start), %esp
    movl $enter_long_mode, %eax
    call *%eax
    ljmp $SEL_CODE64, $ap_long_entry
    .balign 8
tramp_gdt_desc:
    .word gdt_end - gdt - 1
    .long gdt
    .balign 16
    .fill 64, 1, 0
tramp_stack_top:
ap_tramp_end:

    .section .rodata
    .balign 16
gdt:
    .quad 0
    .quad 0x00af9a000000ffff       /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff       /* 0x10: data */
    .quad 0x00cf9a000000ffff       /* 0x18: 32-bit code */
gdt_end:
gdt_desc:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .data
    .balign 4
    .globl rt_start_info_pa
rt_start_info_pa:
    .long 0
    .globl rt_entry_tsc
rt_entry_tsc:
    .quad 0
ap_next_stack:
    .long 0

/*
 * Identity map built at assembly time, so that start-up costs nothing even
 * where the guest's kernel-mode instructions are emulated: 2 MiB pages for
 * 0-4 GiB (cache-disabled from 3 GiB: MMIO), 1 GiB pages for 4-64 GiB.
 */
    .section .data.pagetables, "aw"
    .balign 4096
pml4:
    .quad pdpt + 0x3
    .fill 511, 8, 0
pdpt:
    .quad pd + 0x3
    .quad pd + 0x1000 + 0x3
    .quad pd + 0x2000 + 0x3
    .quad pd + 0x3000 + 0x3
    .set gib, 4
    .rept PDPT_1G_END - 4
    .quad (gib << 30) | 0x93       /* present | rw | pcd | ps */
    .set gib, gib + 1
    .endr
    .fill 512 - PDPT_1G_END, 8, 0
pd:
    .set mib2, 0
    .rept 0x600
    .quad (mib2 << 21) | 0x83      /* present | rw | ps */
    .set mib2, mib2 + 1
    .endr
    .rept 0x200
    .quad (mib2 << 21) | 0x93      /* present | rw | pcd | ps */
    .set mib2, mib2 + 1
    .endr

    /* Not zeroed at start-up: zeroing costs time on emulating hypervisors. */
    .section .noinit, "aw", @nobits
    .balign 16
boot_stack:
    .skip 32768
boot_stack_top:
    .balign 16
ap_stacks:
    .skip (AP_MAX + 1) * AP_STACK_SIZE

    .section .note.GNU-stack, "", @progbits
